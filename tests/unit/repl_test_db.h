/*
 * Scaffolding shared by the replication storage tests (test_repl_log.c, test_repl_apply.c):
 * real file databases opened with gs_db_open, writes submitted like a client's, callbacks run
 * on a database's writer thread, "capture every table" switched on as the engine does, and
 * plain reads of the file through a private read-only SQLite connection.
 *
 * Header-only (static inline), included by one test file each. Every wait is bounded
 * (RT_WAIT_MS). Helpers assert with Criterion on the test's thread.
 */
#ifndef GS_TESTS_UNIT_REPL_TEST_DB_H
#define GS_TESTS_UNIT_REPL_TEST_DB_H

#include "base/alloc.h"
#include "base/error.h"
#include "db/cdc_internal.h"
#include "db/database.h"
#include "db/database_internal.h"
#include "repl/log.h"
#include "repl/msg.h"
#include "test_support.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RT_WAIT_MS 30000

typedef struct rt_waiter {
    pthread_mutex_t m;
    pthread_cond_t c;
    int calls;
    gs_status status;
    char code[64];
    char message[512];
    char *json;
} rt_waiter;

static inline void rt_waiter_init(rt_waiter *w)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->m, NULL);
    pthread_cond_init(&w->c, NULL);
}

static inline void rt_waiter_free(rt_waiter *w)
{
    free(w->json);
    pthread_mutex_destroy(&w->m);
    pthread_cond_destroy(&w->c);
}

static inline void rt_on_done(void *user, const gs_db_reply *r)
{
    rt_waiter *w = user;
    pthread_mutex_lock(&w->m);
    w->calls++;
    w->status = r->status;
    if (r->status != GS_OK) {
        snprintf(w->code, sizeof w->code, "%s", r->err.code);
        snprintf(w->message, sizeof w->message, "%s", r->err.message);
    } else if (r->json) {
        free(w->json);
        w->json = strndup(r->json, r->json_len);
    }
    pthread_cond_broadcast(&w->c);
    pthread_mutex_unlock(&w->m);
}

static inline void rt_wait(rt_waiter *w)
{
    int64_t deadline = gs_test_now_ms() + RT_WAIT_MS;
    pthread_mutex_lock(&w->m);
    while (w->calls < 1 && gs_test_now_ms() < deadline) {
        struct timespec ts = gs_test_realtime_in(50);
        pthread_cond_timedwait(&w->c, &w->m, &ts);
    }
    int got = w->calls;
    pthread_mutex_unlock(&w->m);
    cr_assert_geq(got, 1, "no answer within %d ms", RT_WAIT_MS);
}

/* Run one request of `kind` (n statements; batch: a params_batch JSON text or NULL) and wait
 * for its answer. Returns the status; *w holds the code and message. */
static inline gs_status rt_run(gs_database *db, gs_db_job_kind kind, const char *const *sqls,
                               size_t n, const char *batch, rt_waiter *w)
{
    gs_db_stmt stmts[16];
    cr_assert_leq(n, 16);
    for (size_t i = 0; i < n; i++) {
        stmts[i].sql = sqls[i];
        stmts[i].params = NULL;
    }
    gs_db_request req = {.kind = kind,
                         .stmts = stmts,
                         .stmt_count = n,
                         .params_batch = gs_test_parse_json(batch),
                         .checkpoint = 1,
                         .done = rt_on_done,
                         .user = w};
    gs_error err;
    gs_error_init(&err);
    gs_status st = gs_db_submit(db, &req, &err);
    json_decref(req.params_batch);
    if (st != GS_OK) {
        w->status = GS_ERROR;
        snprintf(w->code, sizeof w->code, "%s", err.code);
        snprintf(w->message, sizeof w->message, "%s", err.message);
        return GS_ERROR;
    }
    rt_wait(w);
    return w->status;
}

static inline void rt_exec(gs_database *db, const char *sql)
{
    rt_waiter w;
    rt_waiter_init(&w);
    cr_assert_eq(rt_run(db, GS_DB_EXECUTE, &sql, 1, NULL, &w), GS_OK, "%s: %s: %s", sql, w.code,
                 w.message);
    rt_waiter_free(&w);
}

static inline void rt_tx(gs_database *db, const char *const *sqls, size_t n)
{
    rt_waiter w;
    rt_waiter_init(&w);
    cr_assert_eq(rt_run(db, GS_DB_TRANSACTION, sqls, n, NULL, &w), GS_OK, "%s: %s: %s", sqls[0],
                 w.code, w.message);
    rt_waiter_free(&w);
}

static inline void rt_batch(gs_database *db, const char *sql, const char *params_batch)
{
    rt_waiter w;
    rt_waiter_init(&w);
    cr_assert_eq(rt_run(db, GS_DB_BATCH, &sql, 1, params_batch, &w), GS_OK, "%s: %s: %s", sql,
                 w.code, w.message);
    rt_waiter_free(&w);
}

/* Run and expect failure with code; the message is copied to msg (cap bytes). */
static inline void rt_fail(gs_database *db, gs_db_job_kind kind, const char *const *sqls, size_t n,
                           const char *code, char *msg, size_t cap)
{
    rt_waiter w;
    rt_waiter_init(&w);
    cr_assert_eq(rt_run(db, kind, sqls, n, NULL, &w), GS_ERROR, "%s should fail", sqls[0]);
    cr_assert_str_eq(w.code, code, "%s: %s: %s", sqls[0], w.code, w.message);
    if (msg)
        snprintf(msg, cap, "%s", w.message);
    rt_waiter_free(&w);
}

static inline gs_database *rt_open(const char *dir, const char *name, const char *node_id)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    gs_db_options o;
    gs_db_options_default(&o);
    o.read_pool_size = 1;
    o.node_id = node_id;
    gs_database *db = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_open(name, path, &o, &db, &err), GS_OK, "%s: %s", err.code, err.message);
    return db;
}

static inline void rt_close(gs_database *db)
{
    gs_db_close(db);
    gs_db_free(db);
}

/* Run fn on the writer thread and return its status (err filled). */
static inline gs_status rt_call(gs_database *db, gs_db_writer_fn fn, void *user, gs_error *err)
{
    gs_error_init(err);
    return gs_cdc_writer_call_sync(db, fn, user, err);
}

static inline gs_status rt_capture_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    gs_database *db = user;
    if (gs_conn_exec(conn, "BEGIN IMMEDIATE", err) != GS_OK)
        return GS_ERROR;
    if (gs_cdc_capture_all_refresh(db->cdc, conn, err) != GS_OK ||
        gs_repl_tables_ensure(conn, err) != GS_OK || gs_conn_exec(conn, "COMMIT", err) != GS_OK)
        return GS_ERROR; /* the writer rolls back after an internal call */
    return GS_OK;
}

/* Turn on replication's "capture every table" mode, as the engine does at start. */
static inline void rt_capture_all(gs_database *db)
{
    gs_error err;
    cr_assert_eq(rt_call(db, rt_capture_fn, db, &err), GS_OK, "%s: %s", err.code, err.message);
}

/* ---- direct reads of the file ---- */

static inline char *rt_sql_text(gs_database *db, const char *sql)
{
    sqlite3 *s;
    cr_assert_eq(sqlite3_open_v2(gs_db_path(db), &s, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(s, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(s));
    char *out = NULL;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        out = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(s);
    return out;
}

static inline int64_t rt_sql_int(gs_database *db, const char *sql)
{
    char *t = rt_sql_text(db, sql);
    int64_t v = t ? strtoll(t, NULL, 10) : -1;
    free(t);
    return v;
}

/* Every row of a query as one text: rows joined by '\n', values by '|' (quote() form). */
static inline char *rt_sql_dump(gs_database *db, const char *sql)
{
    sqlite3 *s;
    cr_assert_eq(sqlite3_open_v2(gs_db_path(db), &s, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(s, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(s));
    gs_buf b;
    gs_buf_init(&b);
    int rows = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (rows++)
            gs_buf_putc(&b, '\n');
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            if (i)
                gs_buf_putc(&b, '|');
            const unsigned char *v = sqlite3_column_text(st, i);
            gs_buf_puts(&b, v ? (const char *)v : "NULL");
        }
    }
    sqlite3_finalize(st);
    sqlite3_close(s);
    char *out = strdup(b.data ? b.data : "");
    gs_buf_free(&b);
    return out;
}

/* ---- reading batches on the writer thread ---- */

typedef struct rt_read {
    const char *node;
    int64_t after;
    size_t max;
    gs_repl_batch batch;
    int empty;
} rt_read;

static inline gs_status rt_read_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    rt_read *r = user;
    return gs_repl_read_batch(conn, r->node, r->after, r->max, &r->batch, &r->empty, err);
}

/* Read a batch of node's changes after `after`; *empty set. The caller frees the batch. */
static inline void rt_read_batch(gs_database *db, const char *node, int64_t after, size_t max,
                                 gs_repl_batch *out, int *empty)
{
    rt_read r = {.node = node, .after = after, .max = max};
    gs_error err;
    cr_assert_eq(rt_call(db, rt_read_fn, &r, &err), GS_OK, "%s: %s", err.code, err.message);
    *out = r.batch;
    *empty = r.empty;
}

#endif
