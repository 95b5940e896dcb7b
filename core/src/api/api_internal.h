/*
 * The inside of the api layer, shared by its two front ends: api.c (HTTP routes) and ws.c
 * (WebSocket sessions). Both authenticate through the same hook chain and run statement
 * operations through one runner, gs_api_run_statement, so a query behaves the same whichever
 * transport carried it; only the envelope of the answer differs ({"rows":..} as an HTTP body,
 * {"type":"result","id":..,"data":{"rows":..}} as a WebSocket frame).
 *
 * Locks: `mu` guards inflight, the WebSocket session list and the WebSocket worker's
 * creation. A thread holding `mu` may take a session's lock; never the other way round.
 *
 * Threads: the runner is called on a transport's I/O thread and runs no SQL; its completion
 * runs on a database thread.
 */
#ifndef GS_API_API_INTERNAL_H
#define GS_API_API_INTERNAL_H

#include "../base/buf.h"
#include "api.h"
#include "route.h"

#include <pthread.h>
#include <stdatomic.h>

struct gs_ws_session;
struct gs_ws_worker;
typedef struct gs_api_backup gs_api_backup;

struct gs_api {
    gs_registry *reg;
    gs_operations *ops;
    int accept_sql;
    int accept_backup_restore;
    int cluster_status;
    uint64_t max_body_bytes;
    gs_api_cors cors;
    gs_api_hook *hooks;
    size_t hook_count;
    atomic_int shutting_down;
    pthread_mutex_t mu;
    pthread_cond_t idle;
    int64_t inflight;               /* HTTP requests in flight + WebSocket sessions alive */
    struct gs_ws_session *ws_head;  /* open sessions (ws.c), under mu */
    struct gs_ws_worker *ws_worker; /* blocking WebSocket work (ws.c), created on first use */
    /* Set by ws.c with the first session, so a binary without WebSocket carries none of it:
     * close every session with 1013 (begin_shutdown); stop the worker (free). Under mu. */
    void (*ws_shutdown)(gs_api *api);
    void (*ws_free)(gs_api *api);
    struct gs_metrics *metrics; /* request counters; NULL when server.metrics and
                                   server.status_page are both off */
    int metrics_route;          /* serve GET /metrics (server.metrics.enabled) */
    int status_page;            /* serve GET /status and /status.json */
    void (*sources_json)(void *user, const char *db_id, gs_buf *out); /* gs_api_options */
    void *sources_user;
    char *node_id;           /* for the status page */
    int64_t started_unix_ms; /* when the api started, for the status page */
    gs_api_backup *backup;   /* the backup routes' worker and restore records (api_backup.c) */
};

/** Count one unit of work in flight (gs_api_wait_idle waits for it). */
void gs_api_inflight_add(gs_api *api);
/** End one unit of work in flight. */
void gs_api_inflight_done(gs_api *api);

/** How the database's result JSON sits in the answer. */
typedef enum gs_api_wrap {
    GS_API_WRAP_RAW = 0, /* {changes,lastInsertRowId} / {rowsLoaded,changes}: as is */
    GS_API_WRAP_ROWS,    /* [rows] -> {"rows":[...]} */
    GS_API_WRAP_RESULTS, /* [results] -> {"results":[...]} */
} gs_api_wrap;

/** Append the answer body ({"rows":..}, {"results":..} or the raw object) to b. */
void gs_api_append_result(gs_buf *b, gs_api_wrap wrap, const char *json, size_t len);

/**
 * The answer of one statement operation, called exactly once on a database thread: st GS_OK
 * with the database's result (json, len; wrap it with gs_api_append_result), or GS_ERROR with
 * err (retry_after_s > 0 with WRITE_OVERLOADED). Everything is valid for the call only.
 */
typedef void (*gs_api_result_fn)(void *user, gs_status st, const gs_error *err, gs_api_wrap wrap,
                                 const char *json, size_t len, int retry_after_s);

typedef struct gs_api_stmt_call {
    gs_route_action action; /* QUERY, EXECUTE, TRANSACTION, BATCH, LOAD, QUERY_NAMED,
                               EXECUTE_NAMED */
    const char *database_id;
    gs_database *db;        /* borrowed and kept alive by the caller; NULL = acquire by id */
    const gs_operation *op; /* named actions: the operation, or NULL to look it up here */
    json_t *body;           /* the request object (HTTP body or WebSocket message); borrowed */
    json_t *identity;       /* the authenticated identity or NULL; borrowed */
    int ws;                 /* WebSocket: a malformed field is INVALID_MESSAGE (HTTP:
                               INVALID_REQUEST / INVALID_DURABILITY) */
    gs_api_result_fn done;
    void *user;
} gs_api_stmt_call;

/**
 * The checks that come before a body is read: SQL_NOT_ACCEPTED for the SQL actions when
 * accept_sql is off, UNKNOWN_QUERY for a name registered as no operation of the action's kind.
 * *op is the operation for the named actions.
 */
gs_status gs_api_check_statement(gs_api *api, gs_route_action action, const char *database_id,
                                 const char *name, const gs_operation **op, gs_error *err);

/**
 * Validate one statement operation, resolve a registered operation's arguments against the
 * identity, run the beforeQuery hooks and submit the work to the database. GS_OK: call->done
 * will be called exactly once. GS_ERROR: err says why and done is never called. The caller
 * may release body and identity as soon as this returns (the database copies what it keeps).
 */
gs_status gs_api_run_statement(gs_api *api, const gs_api_stmt_call *call, gs_error *err);

/**
 * Run the authenticate hook chain (spec 05 Authentication). GS_OK with *identity (a new
 * reference) or NULL for an anonymous request; GS_ERROR with the refusal in err (its status
 * is the hook's, or 500 HOOK_ERROR).
 */
gs_status gs_api_authenticate(gs_api *api, const gs_auth_context *ctx, json_t **identity,
                              gs_error *err);

/** Run the beforeQuery hooks over one statement; GS_ERROR (HOOK_DENIED by default) denies it. */
gs_status gs_api_before_query(gs_api *api, const char *database_id, const char *sql, json_t *params,
                              json_t *identity, int is_write, gs_error *err);
/** The same for a statement of the registered operation named `operation` (NULL: SQL sent in
 * the request); hooks see the name in gs_query_context.operation. */
gs_status gs_api_before_query_op(gs_api *api, const char *database_id, const char *operation,
                                 const char *sql, json_t *params, json_t *identity, int is_write,
                                 gs_error *err);

/**
 * Submit a statement operation to db, under replication when the database replicates
 * (repl_route.c): a replica forwards or refuses writes (TOPOLOGY_ERROR), a primary answers a
 * write once `write_concern` ({level, timeoutMs}, or NULL for the configured default) is met.
 * Same contract as gs_db_submit.
 */
/** Coordinator mode: READ_CONCERN_ERROR when a query's readConcern cannot be met here. */
gs_status gs_api_repl_check_read(gs_database *db, json_t *read_concern, gs_error *err);
gs_status gs_api_repl_submit(gs_database *db, const gs_db_request *req, json_t *write_concern,
                             gs_error *err);

/* ---- the backup routes (api_backup.c) ---- */

/** How a backup route answers: status and JSON body, valid during the call; called exactly
 * once, on the I/O thread, the backup worker or a restore thread. */
typedef void (*gs_api_answer_fn)(void *user, int status, const char *body, size_t len);
/** Set up api->backup (gs_api_new). */
gs_status gs_api_backup_new(gs_api *api, const gs_api_options *opts, gs_error *err);
/** Serve one backup route of an authenticated request (spec 05 Backup Endpoints). */
void gs_api_backup_serve(gs_api *api, gs_route_action action, const char *database_id,
                         const uint8_t *body, size_t body_len, gs_api_answer_fn answer, void *user);
/** Stop taking backup work: drain the worker and wait for restores (begin_shutdown). */
void gs_api_backup_shutdown(gs_api *api);
/** Release api->backup (gs_api_free). */
void gs_api_backup_free(gs_api *api);

/* afterQuery (after_query.c): what an operation was, captured at submission. */
typedef struct gs_api_after gs_api_after;

/** Capture the operation for the after_query hooks; NULL when no hook has after_query (or out
 * of memory: the observation is lost, never the statement). The caller owns the record. */
gs_api_after *gs_api_after_begin(gs_api *api, const char *database_id, const char *operation,
                                 const gs_db_stmt *stmts, size_t stmt_count, json_t *identity,
                                 int is_write);
/** Call every after_query hook in config order with the elapsed time, then free a. NULL: no-op. */
void gs_api_after_end(gs_api *api, gs_api_after *a, int failed);
/** Free a record whose operation never ran. NULL: no-op. */
void gs_api_after_drop(gs_api_after *a);

#endif
