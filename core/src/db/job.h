/*
 * A database job: one request, checked and copied into a single allocation when it is
 * submitted, so bad input fails synchronously and the database threads never touch the
 * caller's JSON.
 *
 * Promise: gs_job_build refuses, with the spec's code, a request that is malformed
 * (INVALID_REQUEST: missing SQL, wrong statement count, a params value or envelope that is not
 * a bind value, an empty or non-array params_batch), a statement the lexical guard forbids
 * (FORBIDDEN_SQL), empty SQL (QUERY_ERROR) and an unknown LOAD durability
 * (INVALID_DURABILITY). It computes whether the job may join a group commit (every statement
 * INSERT/UPDATE/DELETE/REPLACE) and its weight (statements it runs).
 *
 * Answering: a job is answered exactly once. gs_job_claim decides who answers (the writer
 * with a result, or the deadline reaper with a timeout); the loser's answer is discarded.
 *
 * Ownership: the job owns every byte it points to; gs_job_free releases it. Threads: built on
 * the submitting thread, then handed to exactly one queue; the claim is atomic.
 */
#ifndef GS_DB_JOB_H
#define GS_DB_JOB_H

#include "database.h"
#include "sqlite/connection.h"
#include "sqlite/guard.h"
#include "sqlite/value.h"

#include <stdatomic.h>

/** Internal job kinds, beyond gs_db_job_kind. */
enum {
    GS_DB_INTERNAL = 100, /**< run a core callback on the writer connection */
};

/** A callback run on the writer thread with the writer connection (internal statements:
 * no guard). Append a JSON result to `out` and return GS_OK, or fill err. */
typedef gs_status (*gs_db_writer_fn)(void *user, gs_conn *conn, gs_buf *out, gs_error *err);

typedef struct gs_job_stmt {
    const char *sql; /**< NUL-terminated copy */
    size_t len;
    gs_sql_verb verb;
    gs_bind_set params; /**< QUERY, EXECUTE, TRANSACTION */
} gs_job_stmt;

typedef struct gs_job {
    struct gs_job *next; /**< queue link, then the writer's running list */
    int kind;            /**< gs_db_job_kind or GS_DB_INTERNAL */
    int is_write;        /**< counts toward max_pending_writes and the write deadline */
    int groupable;
    size_t weight; /**< statements run: EXECUTE 1, TRANSACTION n, BATCH sets */
    gs_job_stmt *stmts;
    size_t nstmts;
    gs_bind_set *sets; /**< BATCH, LOAD */
    size_t nsets;
    int sync_level;     /**< LOAD: 0 off, 1 normal */
    int checkpoint;     /**< LOAD */
    gs_db_writer_fn fn; /**< INTERNAL */
    void *fn_user;
    void (*done)(void *user, const gs_db_reply *reply);
    void *user;
    int64_t soft_deadline; /**< CLOCK_MONOTONIC ns: not started by then -> WRITE_OVERLOADED */
    int64_t hard_deadline; /**< no result by then -> WRITER_WORKER_TIMEOUT; 0 = none */
    atomic_int answered;
} gs_job;

/** Check and copy a request. */
gs_status gs_job_build(const gs_db_request *req, gs_job **out, gs_error *err);
/** A writer-callback job (never groupable). */
gs_job *gs_job_new_internal(gs_db_writer_fn fn, void *fn_user,
                            void (*done)(void *user, const gs_db_reply *reply), void *user);
void gs_job_free(gs_job *job);

/** Take the right to answer: 1 for the first caller, 0 afterwards. */
int gs_job_claim(gs_job *job);
/** Claim and answer with a result / an error. Return 1 when delivered. */
int gs_job_answer_ok(gs_job *job, const char *json, size_t len);
int gs_job_answer_error(gs_job *job, const gs_error *err, int retry_after_s);
/** Deliver an error to a done callback directly (after a claim). */
void gs_job_deliver_error(void (*done)(void *, const gs_db_reply *), void *user,
                          const gs_error *err, int retry_after_s);

/** CLOCK_MONOTONIC in nanoseconds. */
int64_t gs_db_now_ns(void);

#endif
