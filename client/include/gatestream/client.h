/*
 * libgatestream-client: the C client of a gatestream (or any Sirannon) server, spec 06.
 *
 * Promise: every call of spec 06's RemoteDatabase (query, execute, transaction, batch, load,
 * loadAll, registered reads and writes, subscriptions with filters, live queries) over HTTP
 * (libcurl, keep-alive) or WebSocket (one multiplexed connection per endpoint, requests
 * correlated by id), synchronous or asynchronous, with per-call timeouts, automatic
 * reconnection with exponential backoff while subscriptions exist, subscription resume from
 * the last seq and epoch (a lost cursor is reported to the caller as a RESYNC event), and
 * topology-aware routing (a static primary + replicas list, or coordinator discovery through
 * GET /db/{id}/cluster; read preference primary / replica / nearest). In coordinator mode
 * subscriptions and live queries follow routing changes: when the metadata no longer lists
 * the endpoint one runs on, it moves to the endpoint routing names now and restarts live
 * there (a RESYNC event with `migrated` set), or ends with an ERROR event when none can
 * serve it.
 *
 * Values are the tagged union of <gatestream/value.h>: integers beyond +/-(2^53-1) and blobs
 * travel as the spec's envelopes and come back as GS_VALUE_INT / GS_VALUE_BLOB.
 * Errors fill a gs_error (<gatestream/abi.h>): `code` is the server's code string (07-errors)
 * or one of the client's own (CONNECTION_ERROR, TIMEOUT, TRANSPORT_ERROR, INVALID_RESPONSE,
 * ROUTING_ERROR, NO_SAFE_PRIMARY, INVALID_ARGUMENT, UNAUTHORIZED, FORBIDDEN, SQL_NOT_ACCEPTED),
 * `message` is for a person, `status` is the HTTP status the server answered with (0 when the
 * error came over WebSocket or never reached a server), `details` is the server's details
 * object as JSON text ("" when none; {"closeCode":N} for a WebSocket closed by the server).
 *
 * Ownership: the caller owns what it passes (SQL, params, configs: copied when kept); results
 * returned through an out-pointer belong to the caller and are freed with their *_free
 * function; anything handed to a callback is valid for that call only.
 *
 * Threads: every function may be called from any thread, concurrently, on the same client
 * and the same database handle, except gs_client_close (call it once, after every other
 * call on that client has returned, never from a callback). Callbacks (async completions,
 * subscription events, live updates) run on a thread the library owns (one I/O thread per
 * WebSocket endpoint, one for asynchronous HTTP); they must not block. A callback may submit
 * further asynchronous calls and may call gs_client_unsubscribe / gs_client_live_close, but a
 * synchronous call from a callback fails with INVALID_ARGUMENT instead of deadlocking.
 * The library keeps no global state except libcurl's curl_global_init, run once.
 *
 * Example (synchronous):
 *
 *     gs_client_config cfg;
 *     gs_client_config_init(&cfg);
 *     cfg.transport = GS_CLIENT_TRANSPORT_HTTP;
 *     const char *urls[] = {"http://127.0.0.1:9876"};
 *     gs_client *c;
 *     gs_error err;
 *     if (gs_client_open(urls, 1, &cfg, &c, &err) != GS_OK) { fprintf(stderr, "%s: %s\n",
 *         err.code, err.message); return 1; }
 *     gs_client_db *db = gs_client_database(c, "main", &err);
 *     gs_value p[] = {gs_client_val_text("alice"), gs_client_val_int(42)};
 *     gs_client_params params = gs_client_positional(p, 2);
 *     gs_client_exec ex;
 *     gs_client_execute(db, "INSERT INTO users (name, age) VALUES (?, ?)", &params, NULL,
 *                       &ex, &err);
 *     gs_client_rows *rows;
 *     if (gs_client_query(db, "SELECT name, age FROM users", NULL, NULL, &rows, &err) == GS_OK) {
 *         for (size_t r = 0; r < gs_client_rows_count(rows); r++) {
 *             const gs_value *name = gs_client_rows_get(rows, r, 0);
 *             printf("%.*s\n", (int)name->u.text.len, name->u.text.ptr);
 *         }
 *         gs_client_rows_free(rows);
 *     }
 *     gs_client_close(c);
 *
 * Example (asynchronous, many in flight on one WebSocket):
 *
 *     static void done(void *user, gs_status st, gs_client_response *resp, const gs_error *err)
 *     {   // runs once per submitted call, on the connection's I/O thread
 *         if (st != GS_OK) fprintf(stderr, "%s: %s\n", err->code, err->message);
 *         atomic_fetch_add((atomic_int *)user, 1);
 *     }
 *     ...
 *     gs_client_request req;
 *     gs_client_request_init(&req, GS_CLIENT_OP_QUERY);
 *     req.sql = "SELECT v FROM kv WHERE k = ?";
 *     req.params = gs_client_positional(&key, 1);
 *     for (int i = 0; i < 1000; i++)
 *         if (gs_client_submit(db, &req, done, &counter, &err) != GS_OK) ...; // no callback then
 *
 * Example (subscription):
 *
 *     static void on_event(void *user, const gs_client_event *ev)
 *     {
 *         if (ev->kind == GS_CLIENT_EVENT_CHANGE) printf("%s on %s seq %s\n", ev->type,
 *             ev->table, ev->seq);
 *         else if (ev->kind == GS_CLIENT_EVENT_RESYNC) reload_the_table();
 *     }
 *     gs_value owner = gs_client_val_text("alice");
 *     const char *col[] = {"owner"};
 *     gs_client_params filter = gs_client_named(col, &owner, 1);
 *     gs_client_sub *sub;
 *     gs_client_subscribe(db, "orders", &filter, NULL, on_event, NULL, &sub, &err);
 *     ...
 *     gs_client_unsubscribe(sub);   // after it returns, on_event is not called again
 */
#ifndef GATESTREAM_CLIENT_H
#define GATESTREAM_CLIENT_H

#include <gatestream/abi.h>
#include <gatestream/value.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(GS_CLIENT_BUILD)
#define GS_CLIENT_API __attribute__((visibility("default")))
#else
#define GS_CLIENT_API
#endif

/** Library version. */
#define GS_CLIENT_VERSION_MAJOR 0
#define GS_CLIENT_VERSION_MINOR 1
GS_CLIENT_API const char *gs_client_version(void);

/* ----------------------------------------------------------------------------------------
 * Values and parameters
 * -------------------------------------------------------------------------------------- */

/** Value constructors. Text and blob values borrow the pointer (no copy). */
static inline gs_value gs_client_val_null(void)
{
    gs_value v;
    memset(&v, 0, sizeof v);
    v.type = GS_VALUE_NULL;
    return v;
}
static inline gs_value gs_client_val_int(int64_t i)
{
    gs_value v = gs_client_val_null();
    v.type = GS_VALUE_INT;
    v.u.i = i;
    return v;
}
static inline gs_value gs_client_val_double(double d)
{
    gs_value v = gs_client_val_null();
    v.type = GS_VALUE_DOUBLE;
    v.u.d = d;
    return v;
}
/** Text of len bytes (may hold U+0000). */
static inline gs_value gs_client_val_textn(const char *s, size_t len)
{
    gs_value v = gs_client_val_null();
    v.type = GS_VALUE_TEXT;
    v.u.text.ptr = s;
    v.u.text.len = len;
    return v;
}
static inline gs_value gs_client_val_text(const char *s)
{
    return gs_client_val_textn(s, s ? strlen(s) : 0);
}
static inline gs_value gs_client_val_blob(const void *p, size_t len)
{
    gs_value v = gs_client_val_null();
    v.type = GS_VALUE_BLOB;
    v.u.blob.ptr = (const uint8_t *)p;
    v.u.blob.len = len;
    return v;
}

/**
 * Bind parameters: positional (names == NULL: a JSON array, bound to ?, ?1 ...) or named
 * (names[i] without its sigil: a JSON object, bound to :name / @name / $name). Also used for
 * a registered operation's args (named) and a subscription filter (named: column = value).
 * Borrowed: the arrays must live for the duration of the call (an async call copies them
 * into its request before gs_client_submit returns).
 */
typedef struct gs_client_params {
    const gs_value *values;
    const char *const *names; /**< NULL = positional */
    size_t count;
} gs_client_params;

static inline gs_client_params gs_client_positional(const gs_value *values, size_t count)
{
    gs_client_params p = {values, NULL, count};
    return p;
}
static inline gs_client_params gs_client_named(const char *const *names, const gs_value *values,
                                               size_t count)
{
    gs_client_params p = {values, names, count};
    return p;
}

/** One statement of a transaction. */
typedef struct gs_client_stmt {
    const char *sql;
    gs_client_params params; /**< count 0 = none */
} gs_client_stmt;

/* ----------------------------------------------------------------------------------------
 * Results
 * -------------------------------------------------------------------------------------- */

/** Rows of a query: a column list (from the first row; later keys are appended) and a
 * row-major value grid; a column absent from a row reads as NULL. Owned by the caller. */
typedef struct gs_client_rows gs_client_rows;

/** One row as a view: columns[i] names values[i]. Valid while its owner lives. */
typedef struct gs_client_row {
    size_t count;
    const char *const *columns;
    const gs_value *values;
} gs_client_row;

GS_CLIENT_API size_t gs_client_rows_count(const gs_client_rows *rows);
GS_CLIENT_API size_t gs_client_rows_columns(const gs_client_rows *rows);
GS_CLIENT_API const char *gs_client_rows_column_name(const gs_client_rows *rows, size_t col);
/** Index of a column by name, or -1. */
GS_CLIENT_API long gs_client_rows_column_index(const gs_client_rows *rows, const char *name);
/** The value at (row, col); a NULL value when out of range. Never returns NULL. */
GS_CLIENT_API const gs_value *gs_client_rows_get(const gs_client_rows *rows, size_t row,
                                                 size_t col);
GS_CLIENT_API gs_client_row gs_client_rows_row(const gs_client_rows *rows, size_t row);
/** The rows as the server's JSON text ({"rows":[...]} shape is not kept: a JSON array of
 * objects with tagged envelopes), for printing; gs_client_free the result. NULL on OOM. */
GS_CLIENT_API char *gs_client_rows_to_json(const gs_client_rows *rows);
/** One row as a JSON object in the wire encoding; gs_client_free the result. NULL on OOM. */
GS_CLIENT_API char *gs_client_row_to_json(gs_client_row row);
GS_CLIENT_API void gs_client_rows_free(gs_client_rows *rows);

/** The result of one write statement. */
typedef struct gs_client_exec {
    int64_t changes;
    int64_t last_insert_rowid;
    /** lastInsertRowId exactly as the server sent it, undecoded (spec 06): a JSON number's
     * text or the decimal string. */
    char last_insert_rowid_text[24];
} gs_client_exec;

/** Results of transaction, batch and registered writes: one per statement / param set. */
typedef struct gs_client_results {
    size_t count;
    gs_client_exec *items;
} gs_client_results;
GS_CLIENT_API void gs_client_results_free(gs_client_results *r); /**< frees items, count = 0 */

/** The result of a bulk load. */
typedef struct gs_client_load_result {
    int64_t rows_loaded;
    int64_t changes;
} gs_client_load_result;

/** Free memory the library handed over (gs_client_rows_to_json, ...). */
GS_CLIENT_API void gs_client_free(void *p);

/* ----------------------------------------------------------------------------------------
 * Client configuration
 * -------------------------------------------------------------------------------------- */

typedef enum gs_client_transport {
    /** ws:// and wss:// URLs use WebSocket, http(s):// URLs use WebSocket too (spec 06's
     * default); set HTTP to use plain HTTP requests. */
    GS_CLIENT_TRANSPORT_DEFAULT = 0,
    GS_CLIENT_TRANSPORT_WEBSOCKET = 1,
    GS_CLIENT_TRANSPORT_HTTP = 2,
} gs_client_transport;

typedef enum gs_client_mode {
    /** One URL and no routing option: a single-node client (SirannonClient). Several URLs,
     * or a primary / replicas / read preference: static routing. */
    GS_CLIENT_MODE_AUTO = 0,
    GS_CLIENT_MODE_SINGLE = 1,      /**< SirannonClient: routing options are INVALID_ARGUMENT */
    GS_CLIENT_MODE_STATIC = 2,      /**< urls[0] (or .primary) is the primary, the rest replicas */
    GS_CLIENT_MODE_COORDINATOR = 3, /**< urls are starters; routing from GET /db/{id}/cluster */
} gs_client_mode;

typedef enum gs_client_read_pref {
    GS_CLIENT_READ_PRIMARY = 0,
    GS_CLIENT_READ_REPLICA = 1,
    GS_CLIENT_READ_NEAREST = 2,
} gs_client_read_pref;

typedef struct gs_client_config {
    uint32_t struct_size; /**< sizeof(gs_client_config); set by gs_client_config_init */
    gs_client_transport transport;
    /** Extra headers "Name: value" for HTTP requests, discovery, and the WebSocket upgrade. */
    const char *const *headers;
    size_t header_count;
    /** A token sent as "Authorization: Bearer <token>" (NULL = none). */
    const char *bearer_token;
    /** WebSocket subprotocols offered after "sirannon.v1" (which is then offered first);
     * none configured = no subprotocol offered. Each must be a header token, no duplicates. */
    const char *const *ws_protocols;
    size_t ws_protocol_count;
    int auto_reconnect;            /**< default 1: reconnect while subscriptions exist */
    int64_t reconnect_interval_ms; /**< default 1000: first backoff step */
    int64_t reconnect_max_ms;      /**< default 30000: backoff doubles up to this */
    int64_t request_timeout_ms;    /**< default 30000; 0 waits indefinitely */
    int64_t connect_timeout_ms;    /**< default 10000: TCP + TLS + upgrade */
    /** Read GET /capabilities once per server and refuse SQL locally with SQL_NOT_ACCEPTED
     * when the server does not announce query.sql (spec 06). Default 1. */
    int check_capabilities;
    /** TLS (https, wss): a CA bundle file (NULL = system default) and, for tests only,
     * whether to skip certificate verification. */
    const char *ca_file;
    int tls_insecure;
    /* routing (topology-aware client) */
    gs_client_mode mode;
    const char *primary;         /**< static mode: the primary URL (default urls[0]) */
    const char *const *replicas; /**< static mode: replica URLs (default urls[1..]) */
    size_t replica_count;
    gs_client_read_pref read_preference;
    /** Client-level read concern "local" | "majority" | "linearizable" (NULL = none; in
     * coordinator mode the effective default is "majority"). */
    const char *read_concern;
    int64_t health_timeout_ms;    /**< nearest: GET /health timeout, default 5000 */
    int64_t health_cache_ms;      /**< nearest: latency cache, default 60000 */
    int64_t discovery_timeout_ms; /**< coordinator: GET /db/{id}/cluster timeout, 2000 */
    /** HTTP transport: at most this many connections per host for asynchronous calls
     * (default 16); more calls queue. */
    int http_max_connections;
} gs_client_config;

/** Fill cfg with the defaults above. */
GS_CLIENT_API void gs_client_config_init(gs_client_config *cfg);

typedef struct gs_client gs_client;
typedef struct gs_client_db gs_client_db;

/**
 * Open a client over n URLs ("http://host:port", "https://...", "ws://...", "wss://...";
 * trailing slashes are removed). Nothing connects yet: the WebSocket connects on first use.
 * cfg may be NULL (defaults). Fails with INVALID_ARGUMENT on a bad URL or option.
 */
GS_CLIENT_API gs_status gs_client_open(const char *const *urls, size_t n,
                                       const gs_client_config *cfg, gs_client **out, gs_error *err);
/** Close every connection, cancel subscriptions and live queries (their callbacks are not
 * called again), fail pending requests with CONNECTION_ERROR (their callbacks run before
 * this returns), free everything. Every gs_client_db, gs_client_sub and gs_client_live of
 * this client is freed too: do not use those handles afterwards. NULL is a no-op. */
GS_CLIENT_API void gs_client_close(gs_client *c);

/** The cached handle of database `id` (URL-encoded on the wire). Owned by the client. */
GS_CLIENT_API gs_client_db *gs_client_database(gs_client *c, const char *id, gs_error *err);

/* ----------------------------------------------------------------------------------------
 * Calls
 * -------------------------------------------------------------------------------------- */

/** Per-call options. Pass NULL for all defaults, or init with gs_client_call_opts_init. */
typedef struct gs_client_call_opts {
    uint32_t struct_size;
    int64_t timeout_ms;               /**< -1 = the client's request_timeout_ms; 0 = no timeout */
    const char *read_concern;         /**< query: "local" | "majority" | "linearizable" */
    const char *write_concern;        /**< writes: the level ("majority", "local", ...) */
    int64_t write_concern_timeout_ms; /**< writeConcern.timeoutMs; 0 = absent */
    const char *durability; /**< load: "off" | "normal" | "full" (NULL = server default) */
    int checkpoint;         /**< load: 1 = checkpoint: true */
} gs_client_call_opts;
GS_CLIENT_API void gs_client_call_opts_init(gs_client_call_opts *o);

/** Read rows. */
GS_CLIENT_API gs_status gs_client_query(gs_client_db *db, const char *sql,
                                        const gs_client_params *params,
                                        const gs_client_call_opts *opts, gs_client_rows **out,
                                        gs_error *err);
/** Run one write statement. */
GS_CLIENT_API gs_status gs_client_execute(gs_client_db *db, const char *sql,
                                          const gs_client_params *params,
                                          const gs_client_call_opts *opts, gs_client_exec *out,
                                          gs_error *err);
/** Run statements atomically; one result per statement. */
GS_CLIENT_API gs_status gs_client_transaction(gs_client_db *db, const gs_client_stmt *stmts,
                                              size_t n, const gs_client_call_opts *opts,
                                              gs_client_results *out, gs_error *err);
/** One statement over n parameter sets, atomically. */
GS_CLIENT_API gs_status gs_client_batch(gs_client_db *db, const char *sql,
                                        const gs_client_params *params_batch, size_t n,
                                        const gs_client_call_opts *opts, gs_client_results *out,
                                        gs_error *err);
/** Bulk load (opts: durability, checkpoint). */
GS_CLIENT_API gs_status gs_client_load(gs_client_db *db, const char *sql,
                                       const gs_client_params *params_batch, size_t n,
                                       const gs_client_call_opts *opts, gs_client_load_result *out,
                                       gs_error *err);
/** Load n rows in batches of batch_size (0 = 1000; spec 06 loadAll): only the last batch
 * carries checkpoint: true; durability from opts (default "off"). Results are summed. */
GS_CLIENT_API gs_status gs_client_load_all(gs_client_db *db, const char *sql,
                                           const gs_client_params *rows, size_t n, long batch_size,
                                           const gs_client_call_opts *opts,
                                           gs_client_load_result *out, gs_error *err);
/** Run a registered read by name (args named; NULL = none). Never refused for SQL. */
GS_CLIENT_API gs_status gs_client_query_named(gs_client_db *db, const char *name,
                                              const gs_client_params *args,
                                              const gs_client_call_opts *opts, gs_client_rows **out,
                                              gs_error *err);
/** Run a registered write by name; one result per statement of the write. */
GS_CLIENT_API gs_status gs_client_execute_named(gs_client_db *db, const char *name,
                                                const gs_client_params *args,
                                                const gs_client_call_opts *opts,
                                                gs_client_results *out, gs_error *err);

/* ----------------------------------------------------------------------------------------
 * Asynchronous calls
 * -------------------------------------------------------------------------------------- */

typedef enum gs_client_op {
    GS_CLIENT_OP_QUERY = 1,
    GS_CLIENT_OP_EXECUTE = 2,
    GS_CLIENT_OP_TRANSACTION = 3,
    GS_CLIENT_OP_BATCH = 4,
    GS_CLIENT_OP_LOAD = 5,
    GS_CLIENT_OP_QUERY_NAMED = 6,
    GS_CLIENT_OP_EXECUTE_NAMED = 7,
} gs_client_op;

/** One request of any kind. Init with gs_client_request_init; borrowed by the call. */
typedef struct gs_client_request {
    uint32_t struct_size;
    gs_client_op op;
    const char *sql;                  /**< QUERY, EXECUTE, BATCH, LOAD */
    const char *name;                 /**< QUERY_NAMED, EXECUTE_NAMED */
    gs_client_params params;          /**< QUERY, EXECUTE params; *_NAMED args (named) */
    const gs_client_stmt *statements; /**< TRANSACTION */
    size_t statement_count;
    const gs_client_params *params_batch; /**< BATCH, LOAD */
    size_t batch_count;
    const gs_client_call_opts *opts; /**< NULL = defaults */
} gs_client_request;
GS_CLIENT_API void gs_client_request_init(gs_client_request *r, gs_client_op op);

/** What a call returned; which member is filled depends on op. */
typedef struct gs_client_response {
    gs_client_op op;
    gs_client_rows *rows;       /**< QUERY, QUERY_NAMED (take with gs_client_response_take_rows) */
    gs_client_exec exec;        /**< EXECUTE */
    gs_client_results results;  /**< TRANSACTION, BATCH, EXECUTE_NAMED */
    gs_client_load_result load; /**< LOAD */
} gs_client_response;

/** Take ownership of the rows of a response (NULL when none); the response keeps none. */
GS_CLIENT_API gs_client_rows *gs_client_response_take_rows(gs_client_response *resp);
/** Free what a response holds (rows, results); the struct itself is the caller's. */
GS_CLIENT_API void gs_client_response_clear(gs_client_response *resp);

/**
 * Completion: called exactly once per call that gs_client_submit accepted, on a library
 * thread, with st == GS_OK and resp filled, or st < 0, resp NULL and err filled. resp and err
 * are valid for the call only (take the rows to keep them). Must not block.
 */
typedef void (*gs_client_done_fn)(void *user, gs_status st, gs_client_response *resp,
                                  const gs_error *err);

/**
 * Submit a call without waiting. On GS_OK the callback will run exactly once (also on
 * timeout, on connection loss and on gs_client_close). On an error return (a bad request,
 * SQL refused by the capability check, the client closing) the callback is never called.
 * The first call to a server reads its GET /capabilities on the submitting thread (once per
 * server). A call that fails before it reaches a transport (its routed endpoint unreachable
 * in a topology-aware client) completes on the submitting thread, before this returns.
 * Over WebSocket many calls share one connection, correlated by message id; over HTTP they
 * run on a pool of keep-alive connections (http_max_connections).
 */
GS_CLIENT_API gs_status gs_client_submit(gs_client_db *db, const gs_client_request *req,
                                         gs_client_done_fn done, void *user, gs_error *err);
/** The same call, waiting for it: resp is filled on GS_OK (clear it after use). */
GS_CLIENT_API gs_status gs_client_call(gs_client_db *db, const gs_client_request *req,
                                       gs_client_response *resp, gs_error *err);

/** Shorthands of gs_client_submit for the two calls a load generator needs. */
GS_CLIENT_API gs_status gs_client_query_async(gs_client_db *db, const char *sql,
                                              const gs_client_params *params,
                                              const gs_client_call_opts *opts,
                                              gs_client_done_fn done, void *user, gs_error *err);
GS_CLIENT_API gs_status gs_client_execute_async(gs_client_db *db, const char *sql,
                                                const gs_client_params *params,
                                                const gs_client_call_opts *opts,
                                                gs_client_done_fn done, void *user, gs_error *err);

/* ----------------------------------------------------------------------------------------
 * Subscriptions (WebSocket only; over HTTP they fail with TRANSPORT_ERROR)
 * -------------------------------------------------------------------------------------- */

typedef enum gs_client_event_kind {
    GS_CLIENT_EVENT_CHANGE = 1, /**< a change event */
    /** The server could not resume from the cursor (its history no longer holds it, or the
     * epoch changed: the database was replaced), or (`migrated` set) a routing change moved
     * the subscription to another node, where it restarted live: the subscription
     * continues live, and the caller must treat what it held as stale and re-read the
     * table. */
    GS_CLIENT_EVENT_RESYNC = 2,
    /** The connection dropped; the library is reconnecting (events resume after). */
    GS_CLIENT_EVENT_DISCONNECTED = 3,
    /** Resubscribed after a reconnect from the last seq without a gap. */
    GS_CLIENT_EVENT_RESUMED = 4,
    /** The subscription ended for good (refused on restore, 4401/4403, client closing,
     * routing that names no endpoint able to serve it): `error` says why; no further
     * events follow. */
    GS_CLIENT_EVENT_ERROR = 5,
} gs_client_event_kind;

/** One subscription event; every pointer is valid for the callback only. */
typedef struct gs_client_event {
    gs_client_event_kind kind;
    const char *subscription_id;
    /* GS_CLIENT_EVENT_CHANGE */
    const char *type; /**< "insert" | "update" | "delete" */
    const char *table;
    gs_client_row row;     /**< new row (the old one for a delete, as the server sends it) */
    gs_client_row old_row; /**< count 0 when absent */
    const char *seq;       /**< decimal string */
    uint64_t seq_num;
    double timestamp;
    const char *hlc;    /**< NULL when absent */
    const char *origin; /**< NULL when absent */
    const char *tx_id;  /**< NULL when absent */
    int tx_end;         /**< 1 on the last change of a transaction */
    int has_row_id;
    int64_t row_id;
    /* every kind */
    const char *epoch;     /**< the subscription's epoch (NULL before the first subscribed) */
    const gs_error *error; /**< GS_CLIENT_EVENT_ERROR, DISCONNECTED: why */
    /* GS_CLIENT_EVENT_RESYNC */
    /** 1 when the resync is a migration (coordinator mode): routing no longer listed the
     * endpoint the subscription ran on, so it was re-established, with the same id and
     * filter and the same gs_client_sub handle, live on `endpoint`; changes made while it
     * moved may be missing, and seq / epoch are the new node's. */
    int migrated;
    const char *endpoint; /**< migrated: the base URL the subscription runs on now */
} gs_client_event;

typedef void (*gs_client_event_fn)(void *user, const gs_client_event *ev);

typedef struct gs_client_sub_opts {
    uint32_t struct_size;
    const char *since_seq; /**< start from a cursor (decimal string; NULL = live) */
    const char *epoch;     /**< the cursor's epoch */
    const char *id;        /**< subscription id (NULL = generated) */
    int64_t timeout_ms;    /**< wait for `subscribed`: -1 = request_timeout_ms */
} gs_client_sub_opts;
GS_CLIENT_API void gs_client_sub_opts_init(gs_client_sub_opts *o);

typedef struct gs_client_sub gs_client_sub;

/**
 * Subscribe to changes of `table`, filtered by column = value pairs (filter named, NULL =
 * all rows). Waits for the server's `subscribed`; then `fn` runs on the connection's I/O
 * thread for every event, in seq order. Across reconnects the library resubscribes with
 * the same id and filter from the highest seq delivered and the epoch.
 *
 * Coordinator mode (06-client "when routing changes, active subscriptions migrate"): the
 * subscription is routed like a read. Whenever discovery installs routing with another
 * fingerprint, and before reconnecting after its connection closed (not refused), the
 * library checks whether routing still lists its endpoint as the primary or a readable
 * endpoint. If not, it unsubscribes there and subscribes again, same id and filter, live (no
 * sinceSeq / epoch: the new node's sequence space is another one) on the endpoint a read
 * would go to now; the handle stays valid, and once the new node confirms, `fn` gets a
 * RESYNC event with `migrated` = 1. If routing names no endpoint that can serve it, `fn`
 * gets an ERROR event (ROUTING_ERROR, or the routing error met) and nothing more. When no
 * endpoint answers discovery, routing is kept and the reconnect goes on with backoff.
 * Events then run on the new connection's I/O thread. A live query moves the same way (an
 * update with `revalidating` set, then the rows read afresh on the new endpoint).
 */
GS_CLIENT_API gs_status gs_client_subscribe(gs_client_db *db, const char *table,
                                            const gs_client_params *filter,
                                            const gs_client_sub_opts *opts, gs_client_event_fn fn,
                                            void *user, gs_client_sub **out, gs_error *err);
/** The highest seq delivered (decimal, "" before any) and the epoch, for the caller to store
 * a cursor. Copies into the buffers (NUL-terminated, truncated to their size). */
GS_CLIENT_API void gs_client_sub_cursor(gs_client_sub *sub, char *seq, size_t seq_size, char *epoch,
                                        size_t epoch_size);
/** Stop and free the subscription. When it returns, fn is not running and will not run
 * again (from the subscription's own callback: not again after the callback returns).
 * NULL is a no-op. */
GS_CLIENT_API void gs_client_unsubscribe(gs_client_sub *sub);

/* ----------------------------------------------------------------------------------------
 * Live queries (WebSocket only; a registered read kept up to date by the server)
 * -------------------------------------------------------------------------------------- */

typedef struct gs_client_live gs_client_live;

/** A live-query update: the rows the client now holds (after applying the server's ops),
 * `revalidating` while the server re-reads, or `error` when the query failed for good. */
typedef struct gs_client_live_update {
    const gs_client_rows *rows; /**< valid for the callback only */
    int revalidating;
    const gs_error *error; /**< non-NULL: the live query ended */
} gs_client_live_update;

typedef void (*gs_client_live_fn)(void *user, const gs_client_live_update *u);

/** Open a live query over registered read `name` (args named). Waits for `subscribed`
 * (its rows are the first update, delivered before this returns). The registry digest of
 * GET /capabilities is echoed; after REGISTRY_MISMATCH it is re-read once and retried. */
GS_CLIENT_API gs_status gs_client_live_open(gs_client_db *db, const char *name,
                                            const gs_client_params *args, gs_client_live_fn fn,
                                            void *user, gs_client_live **out, gs_error *err);
/** A copy of the rows held now (gs_client_rows_free it); NULL on OOM. */
GS_CLIENT_API gs_client_rows *gs_client_live_rows(gs_client_live *lq);
/** Close and free; like gs_client_unsubscribe. NULL is a no-op. */
GS_CLIENT_API void gs_client_live_close(gs_client_live *lq);

/* ----------------------------------------------------------------------------------------
 * Routing introspection (topology-aware clients)
 * -------------------------------------------------------------------------------------- */

/** Copy the URL a read (is_write 0) or write (1) of db would go to now into buf; runs
 * discovery or latency probes if needed. */
GS_CLIENT_API gs_status gs_client_route(gs_client_db *db, int is_write, char *buf, size_t size,
                                        gs_error *err);

#ifdef __cplusplus
}
#endif
#endif
