/* The database: submission, readers, the writer with group commit, deadlines, LOAD, close.
 * Every wait is bounded. */
#include "base/alloc.h"
#include "base/error.h"
#include "db/database.h"
#include "db/database_internal.h"
#include "test_support.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 20000 /* upper bound for any single wait */

static char tmpdir[64];
static char dbpath[128];

static void setup(void)
{
    gs_test_mkdtemp(tmpdir, sizeof tmpdir, "db");
    snprintf(dbpath, sizeof dbpath, "%s/d.db", tmpdir);
}

static void teardown(void)
{
    gs_test_rmtree(tmpdir);
}

TestSuite(database, .init = setup, .fini = teardown);

/* ---- helpers ---- */

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

typedef struct waiter {
    pthread_mutex_t m;
    pthread_cond_t c;
    int calls;
    gs_status status;
    int retry_after;
    char code[64];
    char message[512];
    char details[512];
    char *json;
} waiter;

static void waiter_init(waiter *w)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->m, NULL);
    pthread_cond_init(&w->c, NULL);
}

static void waiter_free(waiter *w)
{
    free(w->json);
    pthread_mutex_destroy(&w->m);
    pthread_cond_destroy(&w->c);
}

static void on_done(void *user, const gs_db_reply *r)
{
    waiter *w = user;
    pthread_mutex_lock(&w->m);
    w->calls++;
    w->status = r->status;
    w->retry_after = r->retry_after_s;
    if (r->status == GS_OK) {
        free(w->json);
        w->json = strndup(r->json, r->json_len);
        w->code[0] = '\0';
    } else {
        snprintf(w->code, sizeof w->code, "%s", r->err.code);
        snprintf(w->message, sizeof w->message, "%s", r->err.message);
        snprintf(w->details, sizeof w->details, "%s", r->err.details);
    }
    pthread_cond_broadcast(&w->c);
    pthread_mutex_unlock(&w->m);
}

/* Wait until w has been answered; fails the test after WAIT_MS. */
static void wait_done(waiter *w)
{
    int64_t deadline = gs_test_now_ms() + WAIT_MS;
    pthread_mutex_lock(&w->m);
    while (w->calls == 0 && gs_test_now_ms() < deadline) {
        struct timespec ts = gs_test_realtime_in(50);
        pthread_cond_timedwait(&w->c, &w->m, &ts);
    }
    int calls = w->calls;
    pthread_mutex_unlock(&w->m);
    cr_assert_gt(calls, 0, "no answer within %d ms", WAIT_MS);
}

/* Submit one request; the statements are given as sql/params pairs. */
static gs_status submit_req(gs_database *db, gs_db_job_kind kind, const char *const *sqls,
                            const char *const *params, size_t n, const char *batch,
                            const char *durability, waiter *w, gs_error *err)
{
    gs_db_stmt stmts[16];
    cr_assert_leq(n, 16);
    for (size_t i = 0; i < n; i++) {
        stmts[i].sql = sqls[i];
        stmts[i].params = params ? gs_test_parse_json(params[i]) : NULL;
    }
    gs_db_request req = {.kind = kind,
                         .stmts = stmts,
                         .stmt_count = n,
                         .params_batch = gs_test_parse_json(batch),
                         .durability = durability,
                         .checkpoint = 1,
                         .done = on_done,
                         .user = w};
    gs_error_init(err);
    gs_status st = gs_db_submit(db, &req, err);
    /* the database copied what it keeps */
    for (size_t i = 0; i < n; i++)
        json_decref(stmts[i].params);
    json_decref(req.params_batch);
    return st;
}

static gs_status submit1(gs_database *db, gs_db_job_kind kind, const char *sql, const char *params,
                         waiter *w, gs_error *err)
{
    const char *p[1] = {params};
    return submit_req(db, kind, &sql, p, 1, NULL, NULL, w, err);
}

/* Run one statement and wait; returns the JSON (static copy per call site is the caller's)
 * or asserts the expected error code. */
static char *ok1(gs_database *db, gs_db_job_kind kind, const char *sql, const char *params)
{
    waiter w;
    waiter_init(&w);
    gs_error err;
    cr_assert_eq(submit1(db, kind, sql, params, &w, &err), GS_OK, "%s: %s: %s", sql, err.code,
                 err.message);
    wait_done(&w);
    cr_assert_eq(w.status, GS_OK, "%s: %s: %s", sql, w.code, w.message);
    cr_assert_eq(w.calls, 1);
    char *json = w.json;
    w.json = NULL;
    waiter_free(&w);
    return json;
}

static void run_ok(gs_database *db, gs_db_job_kind kind, const char *sql, const char *params)
{
    free(ok1(db, kind, sql, params));
}

static void expect_json(gs_database *db, gs_db_job_kind kind, const char *sql, const char *params,
                        const char *expected)
{
    char *json = ok1(db, kind, sql, params);
    cr_assert_str_eq(json, expected, "%s", sql);
    free(json);
}

/* Submit and expect an asynchronous error with this code. */
static void expect_async_error(gs_database *db, gs_db_job_kind kind, const char *sql,
                               const char *params, const char *code, const char *fragment)
{
    waiter w;
    waiter_init(&w);
    gs_error err;
    cr_assert_eq(submit1(db, kind, sql, params, &w, &err), GS_OK, "%s: %s", err.code, err.message);
    wait_done(&w);
    cr_assert_eq(w.status, GS_ERROR, "%s succeeded", sql);
    cr_assert_str_eq(w.code, code, "%s: %s", sql, w.message);
    if (fragment)
        cr_assert(strstr(w.message, fragment), "'%s' not in '%s'", fragment, w.message);
    waiter_free(&w);
}

static void expect_sync_error(gs_database *db, gs_db_job_kind kind, const char *sql,
                              const char *params, const char *code)
{
    waiter w;
    waiter_init(&w);
    gs_error err;
    cr_assert_eq(submit1(db, kind, sql, params, &w, &err), GS_ERROR, "%s accepted", sql);
    cr_assert_str_eq(err.code, code, "%s: %s", sql, err.message);
    cr_assert_eq(w.calls, 0, "done must not run when submit fails");
    waiter_free(&w);
}

static gs_database *open_db(const gs_db_options *o)
{
    gs_database *db = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_open("test", dbpath, o, &db, &err), GS_OK, "%s: %s", err.code, err.message);
    return db;
}

static gs_database *open_default(void)
{
    gs_db_options o;
    gs_db_options_default(&o);
    return open_db(&o);
}

static long long count_rows(gs_database *db, const char *table)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) AS n FROM %s", table);
    char *json = ok1(db, GS_DB_QUERY, sql, NULL);
    json_t *j = gs_test_parse_json(json);
    long long n = json_integer_value(json_object_get(json_array_get(j, 0), "n"));
    json_decref(j);
    free(json);
    return n;
}

/* A second process-local connection that holds the write lock, to make the writer slow. */
static sqlite3 *hold_write_lock(void)
{
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(dbpath, &h), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(h));
    return h;
}

static void release_write_lock(sqlite3 *h)
{
    cr_assert_eq(sqlite3_exec(h, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
}

static void wait_pending(gs_database *db, int64_t n)
{
    int64_t deadline = gs_test_now_ms() + WAIT_MS;
    while (gs_db_pending_writes(db) != n && gs_test_now_ms() < deadline)
        nap_ms(2);
    cr_assert_eq(gs_db_pending_writes(db), n);
}

/* Wait until the writer runs a group while `pending` writes are in flight (so an earlier,
 * already answered job still being cleaned up is not mistaken for the new one). */
static void wait_running(gs_database *db, int64_t pending)
{
    int64_t deadline = gs_test_now_ms() + WAIT_MS;
    for (;;) {
        pthread_mutex_lock(&db->lock);
        int running = db->running != NULL && atomic_load(&db->pending) == pending;
        pthread_mutex_unlock(&db->lock);
        if (running)
            return;
        cr_assert_lt(gs_test_now_ms(), deadline, "the writer never started the job");
        nap_ms(2);
    }
}

/* ---- tests ---- */

Test(database, execute_and_query_round_trip)
{
    gs_database *db = open_default();
    cr_assert_str_eq(gs_db_id(db), "test");
    cr_assert_str_eq(gs_db_path(db), dbpath);
    cr_assert_not(gs_db_is_read_only(db));
    expect_json(db, GS_DB_EXECUTE,
                "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, big INTEGER, data BLOB, r REAL)",
                NULL, "{\"changes\":0,\"lastInsertRowId\":0}");
    expect_json(db, GS_DB_EXECUTE, "INSERT INTO t(name, big, data, r) VALUES (?, ?, ?, ?)",
                "[\"ann\", {\"__sirannon_int\":\"9223372036854775807\"}, "
                "{\"__sirannon_blob\":\"c0ffee\"}, 0.5]",
                "{\"changes\":1,\"lastInsertRowId\":1}");
    expect_json(db, GS_DB_EXECUTE, "INSERT INTO t(name, big) VALUES (:name, @big)",
                "{\"name\":\"bob\",\"big\":9007199254740991}",
                "{\"changes\":1,\"lastInsertRowId\":2}");
    expect_json(db, GS_DB_QUERY, "SELECT * FROM t ORDER BY id", NULL,
                "[{\"id\":1,\"name\":\"ann\",\"big\":{\"__sirannon_int\":\"9223372036854775807\"},"
                "\"data\":{\"__sirannon_blob\":\"C0FFEE\"},\"r\":0.5},"
                "{\"id\":2,\"name\":\"bob\",\"big\":9007199254740991,\"data\":null,\"r\":null}]");
    expect_json(db, GS_DB_QUERY, "SELECT name FROM t WHERE id = $id", "{\"id\":2}",
                "[{\"name\":\"bob\"}]");
    expect_json(db, GS_DB_QUERY, "SELECT name FROM t WHERE id = 99", NULL, "[]");
    expect_json(db, GS_DB_EXECUTE, "UPDATE t SET r = 1", NULL,
                "{\"changes\":2,\"lastInsertRowId\":2}");
    /* DDL after DML reports no changes, not the previous statement's count */
    expect_json(db, GS_DB_EXECUTE, "CREATE INDEX t_name ON t(name)", NULL,
                "{\"changes\":0,\"lastInsertRowId\":2}");
    expect_json(db, GS_DB_EXECUTE, "INSERT INTO t(id) VALUES (9007199254740993)", NULL,
                "{\"changes\":1,\"lastInsertRowId\":\"9007199254740993\"}");
    gs_db_close(db);
    gs_db_free(db);
}

Test(database, bad_input_fails_synchronously)
{
    gs_database *db = open_default();
    expect_sync_error(db, GS_DB_QUERY, "SELECT ?", "[{\"__sirannon_int\":\"1x\"}]",
                      "INVALID_REQUEST");
    expect_sync_error(db, GS_DB_EXECUTE, "SELECT ?", "[[1]]", "INVALID_REQUEST");
    expect_sync_error(db, GS_DB_QUERY, "SELECT ?", "\"scalar\"", "INVALID_REQUEST");
    expect_sync_error(db, GS_DB_QUERY, "SELECT * FROM _sirannon_changes", NULL, "FORBIDDEN_SQL");
    expect_sync_error(db, GS_DB_EXECUTE, "ATTACH 'x' AS y", NULL, "FORBIDDEN_SQL");
    expect_sync_error(db, GS_DB_QUERY, "   ", NULL, "QUERY_ERROR");
    expect_sync_error(db, GS_DB_QUERY, NULL, NULL, "INVALID_REQUEST");
    gs_error err;
    gs_db_request req = {.kind = GS_DB_QUERY, .stmts = NULL, .done = on_done};
    cr_assert_eq(gs_db_submit(db, &req, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_REQUEST");
    /* errors found by SQLite arrive through done() */
    expect_async_error(db, GS_DB_QUERY, "SELECT * FROM missing", NULL, "QUERY_ERROR",
                       "no such table");
    expect_async_error(db, GS_DB_QUERY, "SELECT 1; SELECT 2", NULL, "QUERY_ERROR",
                       "one statement per request");
    expect_async_error(db, GS_DB_QUERY, "SELECT ?, ?", "[1]", "QUERY_ERROR", "too few");
    expect_async_error(db, GS_DB_QUERY, "SELECT :a", "{\"b\":1}", "QUERY_ERROR", ":a");
    expect_async_error(db, GS_DB_EXECUTE, "PRAGMA writable_schema = 1", NULL, "FORBIDDEN_SQL",
                       NULL);
    expect_async_error(db, GS_DB_EXECUTE, "BEGIN", NULL, "QUERY_ERROR", "transaction");
    expect_async_error(db, GS_DB_QUERY, "BEGIN", NULL, "QUERY_ERROR", "transaction");
    expect_async_error(db, GS_DB_QUERY, "CREATE TABLE x(y)", NULL, "QUERY_ERROR", "readonly");
    gs_db_free(db);
}

Test(database, transaction_is_atomic)
{
    gs_database *db = open_default();
    run_ok(db, GS_DB_EXECUTE, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", NULL);
    const char *sqls[] = {"INSERT INTO t VALUES (1, 'a')", "INSERT INTO t VALUES (1, 'dup')",
                          "INSERT INTO t VALUES (2, 'b')"};
    waiter w;
    waiter_init(&w);
    gs_error err;
    cr_assert_eq(submit_req(db, GS_DB_TRANSACTION, sqls, NULL, 3, NULL, NULL, &w, &err), GS_OK);
    wait_done(&w);
    cr_assert_eq(w.status, GS_ERROR);
    cr_assert_str_eq(w.code, "QUERY_ERROR");
    cr_assert(strstr(w.message, "statement 2 of 3"), "%s", w.message);
    cr_assert(strstr(w.message, "UNIQUE"), "%s", w.message);
    cr_assert_eq(count_rows(db, "t"), 0);
    waiter_free(&w);

    const char *good[] = {"INSERT INTO t VALUES (?, 'a')", "UPDATE t SET v = ? WHERE id = 1",
                          "CREATE TABLE u(x)"};
    const char *params[] = {"[1]", "[\"z\"]", NULL};
    waiter_init(&w);
    cr_assert_eq(submit_req(db, GS_DB_TRANSACTION, good, params, 3, NULL, NULL, &w, &err), GS_OK,
                 "%s", err.message);
    wait_done(&w);
    cr_assert_eq(w.status, GS_OK, "%s", w.message);
    cr_assert_str_eq(w.json, "[{\"changes\":1,\"lastInsertRowId\":1},"
                             "{\"changes\":1,\"lastInsertRowId\":1},"
                             "{\"changes\":0,\"lastInsertRowId\":1}]");
    waiter_free(&w);
    expect_json(db, GS_DB_QUERY, "SELECT v FROM t", NULL, "[{\"v\":\"z\"}]");
    gs_db_free(db);
}

Test(database, batch_is_atomic)
{
    gs_database *db = open_default();
    run_ok(db, GS_DB_EXECUTE, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)", NULL);
    const char *sql = "INSERT INTO t(id, v) VALUES (?, ?)";
    waiter w;
    waiter_init(&w);
    gs_error err;
    cr_assert_eq(submit_req(db, GS_DB_BATCH, &sql, NULL, 1, "[[1,\"a\"],[2,\"b\"],[3,null]]", NULL,
                            &w, &err),
                 GS_OK);
    wait_done(&w);
    cr_assert_eq(w.status, GS_ERROR);
    cr_assert_str_eq(w.code, "QUERY_ERROR");
    cr_assert(strstr(w.message, "parameter set 3 of 3"), "%s", w.message);
    cr_assert_eq(count_rows(db, "t"), 0);
    waiter_free(&w);

    waiter_init(&w);
    const char *named = "INSERT INTO t(id, v) VALUES (:id, :v)";
    cr_assert_eq(submit_req(db, GS_DB_BATCH, &named, NULL, 1,
                            "[{\"id\":1,\"v\":\"a\"},{\":id\":2,\"v\":\"b\"}]", NULL, &w, &err),
                 GS_OK, "%s", err.message);
    wait_done(&w);
    cr_assert_eq(w.status, GS_OK, "%s", w.message);
    cr_assert_str_eq(w.json, "[{\"changes\":1,\"lastInsertRowId\":1},"
                             "{\"changes\":1,\"lastInsertRowId\":2}]");
    waiter_free(&w);
    /* a batch needs at least one set */
    waiter_init(&w);
    cr_assert_eq(submit_req(db, GS_DB_BATCH, &sql, NULL, 1, "[]", NULL, &w, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_REQUEST");
    cr_assert_eq(submit_req(db, GS_DB_BATCH, &sql, NULL, 1, "[[1, [2]]]", NULL, &w, &err),
                 GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_REQUEST");
    cr_assert(strstr(err.message, "paramsBatch[0][1]"), "%s", err.message);
    waiter_free(&w);
    gs_db_free(db);
}

Test(database, begin_failure_is_a_transaction_error)
{
    gs_db_options o;
    gs_db_options_default(&o);
    o.busy_timeout_ms = 50;
    gs_database *db = open_db(&o);
    run_ok(db, GS_DB_EXECUTE, "CREATE TABLE t(id INTEGER PRIMARY KEY)", NULL);
    sqlite3 *h = hold_write_lock();
    const char *sqls[] = {"INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)"};
    waiter w;
    waiter_init(&w);
    gs_error err;
    cr_assert_eq(submit_req(db, GS_DB_TRANSACTION, sqls, NULL, 2, NULL, NULL, &w, &err), GS_OK);
    wait_done(&w);
    cr_assert_eq(w.status, GS_ERROR);
    cr_assert_str_eq(w.code, "TRANSACTION_ERROR");
    cr_assert(strstr(w.message, "locked"), "%s", w.message);
    waiter_free(&w);
    /* a lone statement that cannot get the lock is a query error */
    expect_async_error(db, GS_DB_EXECUTE, "INSERT INTO t VALUES (3)", NULL, "QUERY_ERROR",
                       "locked");
    release_write_lock(h);
    cr_assert_eq(count_rows(db, "t"), 0);
    run_ok(db, GS_DB_TRANSACTION, "INSERT INTO t VALUES (4)", NULL);
    cr_assert_eq(count_rows(db, "t"), 1);
    gs_db_free(db);
}

/* ---- group commit ---- */

typedef struct sub_thread {
    gs_database *db;
    int first_id;
    int count;
    waiter *w; /* count waiters */
} sub_thread;

static void *submit_inserts(void *arg)
{
    sub_thread *t = arg;
    for (int i = 0; i < t->count; i++) {
        char params[32];
        snprintf(params, sizeof params, "[%d]", t->first_id + i);
        gs_error err;
        gs_status st =
            submit1(t->db, GS_DB_EXECUTE, "INSERT INTO t(id) VALUES (?)", params, &t->w[i], &err);
        cr_assert_eq(st, GS_OK, "%s", err.message);
    }
    return NULL;
}

Test(database, concurrent_writes_form_groups_and_failures_are_isolated)
{
    gs_db_options o;
    gs_db_options_default(&o);
    o.busy_timeout_ms = 15000;
    o.write_timeout_ms = 0;
    gs_database *db = open_db(&o);
    run_ok(db, GS_DB_EXECUTE, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)", NULL);

    /* hold the write lock so the first write blocks and the others queue behind it */
    sqlite3 *h = hold_write_lock();
    waiter first;
    waiter_init(&first);
    gs_error err;
    cr_assert_eq(submit1(db, GS_DB_EXECUTE, "INSERT INTO t(id) VALUES (1000)", NULL, &first, &err),
                 GS_OK);
    wait_running(db, 1);

    enum { THREADS = 4, PER = 10 };
    waiter ws[THREADS][PER];
    sub_thread ts[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        for (int k = 0; k < PER; k++)
            waiter_init(&ws[i][k]);
        ts[i] = (sub_thread){.db = db, .first_id = i * 100, .count = PER, .w = ws[i]};
        pthread_create(&th[i], NULL, submit_inserts, &ts[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    /* failing units among the good ones: a duplicate key, a failing transaction, and a
     * statement that rolls back the whole transaction it runs in */
    waiter dup, txn, rb, good_txn, good_batch;
    waiter_init(&dup);
    waiter_init(&txn);
    waiter_init(&rb);
    waiter_init(&good_txn);
    waiter_init(&good_batch);
    cr_assert_eq(submit1(db, GS_DB_EXECUTE, "INSERT INTO t(id) VALUES (0)", NULL, &dup, &err),
                 GS_OK);
    const char *tsql[] = {"INSERT INTO t(id) VALUES (5000)", "INSERT INTO t(id) VALUES (5000)"};
    cr_assert_eq(submit_req(db, GS_DB_TRANSACTION, tsql, NULL, 2, NULL, NULL, &txn, &err), GS_OK);
    cr_assert_eq(
        submit1(db, GS_DB_EXECUTE, "INSERT OR ROLLBACK INTO t(id) VALUES (1)", NULL, &rb, &err),
        GS_OK);
    const char *gsql[] = {"INSERT INTO t(id) VALUES (6000)",
                          "UPDATE t SET v = 'x' WHERE id = 6000"};
    cr_assert_eq(submit_req(db, GS_DB_TRANSACTION, gsql, NULL, 2, NULL, NULL, &good_txn, &err),
                 GS_OK);
    const char *bsql = "INSERT INTO t(id) VALUES (?)";
    cr_assert_eq(
        submit_req(db, GS_DB_BATCH, &bsql, NULL, 1, "[[7000],[7001]]", NULL, &good_batch, &err),
        GS_OK);
    wait_pending(db, 1 + THREADS * PER + 5);
    release_write_lock(h);

    wait_done(&first);
    cr_assert_eq(first.status, GS_OK, "%s", first.message);
    for (int i = 0; i < THREADS; i++)
        for (int k = 0; k < PER; k++) {
            wait_done(&ws[i][k]);
            cr_assert_eq(ws[i][k].calls, 1);
            if (i == 0 && k == 0)
                continue; /* id 0 collides with `dup`, whichever ran second fails */
            cr_assert_eq(ws[i][k].status, GS_OK, "%d/%d: %s", i, k, ws[i][k].message);
        }
    wait_done(&dup);
    cr_assert_neq(dup.status == GS_OK, ws[0][0].status == GS_OK, "exactly one id 0 insert wins");
    waiter *loser = dup.status == GS_OK ? &ws[0][0] : &dup;
    cr_assert_str_eq(loser->code, "QUERY_ERROR");
    wait_done(&txn);
    cr_assert_eq(txn.status, GS_ERROR);
    cr_assert(strstr(txn.message, "statement 2 of 2"), "%s", txn.message);
    wait_done(&rb);
    cr_assert_eq(rb.status, GS_ERROR);
    cr_assert_str_eq(rb.code, "QUERY_ERROR");
    wait_done(&good_txn);
    cr_assert_eq(good_txn.status, GS_OK, "%s", good_txn.message);
    wait_done(&good_batch);
    cr_assert_eq(good_batch.status, GS_OK, "%s", good_batch.message);

    /* 1 + 40 + the winner of id 0 counted among the 40 + 6000 + 7000/7001 */
    cr_assert_eq(count_rows(db, "t"), 1 + THREADS * PER + 1 + 2);
    expect_json(db, GS_DB_QUERY, "SELECT count(*) AS n FROM t WHERE id = 5000", NULL,
                "[{\"n\":0}]");
    expect_json(db, GS_DB_QUERY, "SELECT v FROM t WHERE id = 6000", NULL, "[{\"v\":\"x\"}]");
    gs_db_stats s;
    gs_db_get_stats(db, &s);
    cr_assert_gt(s.max_group_units, 1, "queued writes must share a commit");
    cr_assert_geq(s.groups, 1);
    cr_log_info("groups=%llu grouped_units=%llu max=%llu alone=%llu", (unsigned long long)s.groups,
                (unsigned long long)s.grouped_units, (unsigned long long)s.max_group_units,
                (unsigned long long)s.alone);

    for (int i = 0; i < THREADS; i++)
        for (int k = 0; k < PER; k++)
            waiter_free(&ws[i][k]);
    waiter_free(&first);
    waiter_free(&dup);
    waiter_free(&txn);
    waiter_free(&rb);
    waiter_free(&good_txn);
    waiter_free(&good_batch);
    gs_db_free(db);
}

Test(database, ddl_runs_alone_between_groups)
{
    gs_db_options o;
    gs_db_options_default(&o);
    o.busy_timeout_ms = 15000;
    gs_database *db = open_db(&o);
    run_ok(db, GS_DB_EXECUTE, "CREATE TABLE t(id INTEGER PRIMARY KEY)", NULL);
    sqlite3 *h = hold_write_lock();
    waiter w[4];
    for (int i = 0; i < 4; i++)
        waiter_init(&w[i]);
    gs_error err;
    cr_assert_eq(submit1(db, GS_DB_EXECUTE, "INSERT INTO t VALUES (1)", NULL, &w[0], &err), GS_OK);
    wait_running(db, 1);
    cr_assert_eq(submit1(db, GS_DB_EXECUTE, "INSERT INTO t VALUES (2)", NULL, &w[1], &err), GS_OK);
    cr_assert_eq(submit1(db, GS_DB_EXECUTE, "CREATE TABLE u(x)", NULL, &w[2], &err), GS_OK);
    cr_assert_eq(submit1(db, GS_DB_EXECUTE, "INSERT INTO u VALUES (3)", NULL, &w[3], &err), GS_OK);
    wait_pending(db, 4);
    release_write_lock(h);
    for (int i = 0; i < 4; i++) {
        wait_done(&w[i]);
        cr_assert_eq(w[i].status, GS_OK, "%d: %s", i, w[i].message);
        waiter_free(&w[i]);
    }
    gs_db_stats s;
    gs_db_get_stats(db, &s);
    /* lone insert, lone insert (the DDL stops the group), the DDL, the last insert */
    cr_assert_eq(s.alone, 1 + 4, "alone=%llu", (unsigned long long)s.alone);
    gs_db_free(db);
}

typedef struct load_thread {
    gs_database *db;
    int base;
    int n;
    waiter *w;
} load_thread;

static void *many_inserts(void *arg)
{
    load_thread *t = arg;
    for (int i = 0; i < t->n; i++) {
        char params[48];
        snprintf(params, sizeof params, "[%d, \"v%d\"]", t->base + i, i);
        gs_error err;
        cr_assert_eq(submit1(t->db, GS_DB_EXECUTE, "INSERT INTO t(id, v) VALUES (?, ?)", params,
                             &t->w[i], &err),
                     GS_OK, "%s", err.message);
    }
    for (int i = 0; i < t->n; i++) {
        wait_done(&t->w[i]);
        cr_assert_eq(t->w[i].status, GS_OK, "%s", t->w[i].message);
    }
    return NULL;
}

Test(database, many_threads_many_writes)
{
    gs_database *db = open_default();
    run_ok(db, GS_DB_EXECUTE, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", NULL);
    enum { THREADS = 4, PER = 250 };
    waiter *ws = calloc(THREADS * PER, sizeof *ws);
    load_thread lt[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS * PER; i++)
        waiter_init(&ws[i]);
    for (int i = 0; i < THREADS; i++) {
        lt[i] = (load_thread){.db = db, .base = i * PER, .n = PER, .w = ws + i * PER};
        pthread_create(&th[i], NULL, many_inserts, &lt[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(count_rows(db, "t"), THREADS * PER);
    for (int i = 0; i < THREADS * PER; i++) {
        cr_assert_eq(ws[i].calls, 1);
        waiter_free(&ws[i]);
    }
    free(ws);
    gs_db_stats s;
    gs_db_get_stats(db, &s);
    cr_log_info("1000 inserts from 4 threads: groups=%llu units=%llu max=%llu alone=%llu",
                (unsigned long long)s.groups, (unsigned long long)s.grouped_units,
                (unsigned long long)s.max_group_units, (unsigned long long)s.alone);
    gs_db_free(db);
}

/* ---- queue bound and deadlines ---- */

Test(database, full_queue_is_write_overloaded)
{
    gs_db_options o;
    gs_db_options_default(&o);
    o.max_pending_writes = 1;
    o.busy_timeout_ms = 15000;
    o.write_timeout_ms = 0;
    gs_database *db = open_db(&o);
    run_ok(db, GS_DB_EXECUTE, "CREATE TABLE t(id INTEGER PRIMARY KEY)", NULL);
    sqlite3 *h = hold_write_lock();
    waiter a, b;
    waiter_init(&a);
    waiter_init(&b);
    gs_error err;
    cr_assert_eq(submit1(db, GS_DB_EXECUTE, "INSERT INTO t VALUES (1)", NULL, &a, &err), GS_OK);
    wait_pending(db, 1);
    cr_assert_eq(submit1(db, GS_DB_EXECUTE, "INSERT INTO t VALUES (2)", NULL, &b, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "WRITE_OVERLOADED");
    cr_assert(strstr(err.details, "\"limit\":1"), "%s", err.details);
    cr_assert(strstr(err.details, "\"retryAfterMs\":1000"), "%s", err.details);
    cr_assert_eq(gs_error_status(&err), 503);
    /* reads are not bounded by the write queue */
    expect_json(db, GS_DB_QUERY, "SELECT 1 AS one", NULL, "[{\"one\":1}]");
    release_write_lock(h);
    wait_done(&a);
    cr_assert_eq(a.status, GS_OK, "%s", a.message);
    cr_assert_eq(b.calls, 0);
    wait_pending(db, 0);
    run_ok(db, GS_DB_EXECUTE, "INSERT INTO t VALUES (3)", NULL);
    gs_db_stats s;
    gs_db_get_stats(db, &s);
    cr_assert_eq(s.overloaded, 1);
    waiter_free(&a);
    waiter_free(&b);
    gs_db_free(db);
}

Test(database, write_deadlines_shed_and_time_out)
{
    gs_db_options o;
    gs_db_options_default(&o);
    o.busy_timeout_ms = 15000;
    o.write_timeout_ms = 300;
    gs_database *db = open_db(&o);
    run_ok(db, GS_DB_EXECUTE, "CREATE TABLE t(id INTEGER PRIMARY KEY)", NULL);
    sqlite3 *h = hold_write_lock();
    waiter a, b;
    waiter_init(&a);
    waiter_init(&b);
    gs_error err;
    int64_t t0 = gs_test_now_ms();
    cr_assert_eq(submit1(db, GS_DB_EXECUTE, "INSERT INTO t VALUES (1)", NULL, &a, &err), GS_OK);
    wait_running(db, 1); /* a started: it is stuck waiting for the lock */
    cr_assert_eq(submit1(db, GS_DB_EXECUTE, "INSERT INTO t VALUES (2)", NULL, &b, &err), GS_OK);
    /* b never started: shed at its deadline, definite and retryable */
    wait_done(&b);
    cr_assert_eq(b.status, GS_ERROR);
    cr_assert_str_eq(b.code, "WRITE_OVERLOADED");
    cr_assert_eq(b.retry_after, 1);
    cr_assert_geq(gs_test_now_ms() - t0, 250);
    /* a started but gave no outcome within twice the deadline: indeterminate */
    wait_done(&a);
    cr_assert_eq(a.status, GS_ERROR);
    cr_assert_str_eq(a.code, "WRITER_WORKER_TIMEOUT");
    cr_assert_geq(gs_test_now_ms() - t0, 550);
    /* the late real result is discarded: done() ran once */
    release_write_lock(h);
    wait_pending(db, 0);
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(b.calls, 1);
    /* a's write went through; b's did not */
    expect_json(db, GS_DB_QUERY, "SELECT id FROM t ORDER BY id", NULL, "[{\"id\":1}]");
    gs_db_stats s;
    gs_db_get_stats(db, &s);
    cr_assert_eq(s.shed, 1);
    cr_assert_eq(s.timed_out, 1);
    /* with the writer free again, writes complete normally */
    run_ok(db, GS_DB_EXECUTE, "INSERT INTO t VALUES (3)", NULL);
    waiter_free(&a);
    waiter_free(&b);
    gs_db_free(db);
}

/* ---- read-only, LOAD, close ---- */

static gs_status read_sync(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)user;
    (void)err;
    gs_buf_printf(out, "%d", gs_conn_get_sync(conn));
    return GS_OK;
}

static int writer_sync_level(gs_database *db)
{
    waiter w;
    waiter_init(&w);
    gs_error err;
    cr_assert_eq(gs_db_writer_call(db, read_sync, NULL, on_done, &w, &err), GS_OK, "%s",
                 err.message);
    wait_done(&w);
    cr_assert_eq(w.status, GS_OK);
    int level = atoi(w.json);
    waiter_free(&w);
    return level;
}

Test(database, read_only_database_refuses_writes)
{
    gs_database *db = open_default();
    run_ok(db, GS_DB_EXECUTE, "CREATE TABLE t(id INTEGER PRIMARY KEY)", NULL);
    run_ok(db, GS_DB_EXECUTE, "INSERT INTO t VALUES (7)", NULL);
    gs_db_free(db);

    gs_db_options o;
    gs_db_options_default(&o);
    o.read_only = 1;
    o.read_pool_size = 2;
    db = open_db(&o);
    cr_assert(gs_db_is_read_only(db));
    expect_json(db, GS_DB_QUERY, "SELECT id FROM t", NULL, "[{\"id\":7}]");
    expect_sync_error(db, GS_DB_EXECUTE, "INSERT INTO t VALUES (8)", NULL, "READ_ONLY");
    expect_sync_error(db, GS_DB_TRANSACTION, "INSERT INTO t VALUES (8)", NULL, "READ_ONLY");
    waiter w;
    waiter_init(&w);
    gs_error err;
    const char *sql = "INSERT INTO t VALUES (?)";
    cr_assert_eq(submit_req(db, GS_DB_LOAD, &sql, NULL, 1, "[[9]]", "off", &w, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "READ_ONLY");
    cr_assert_eq(gs_error_status(&err), 403);
    cr_assert_eq(gs_db_writer_call(db, read_sync, NULL, on_done, &w, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "READ_ONLY");
    waiter_free(&w);
    gs_db_free(db);
}

Test(database, load_relaxes_then_restores_synchronous)
{
    gs_db_options o;
    gs_db_options_default(&o);
    o.synchronous = "full";
    gs_database *db = open_db(&o);
    run_ok(db, GS_DB_EXECUTE, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", NULL);
    cr_assert_eq(writer_sync_level(db), 2);

    char batch[8192];
    size_t off = 0;
    off += (size_t)snprintf(batch + off, sizeof batch - off, "[");
    for (int i = 0; i < 100; i++)
        off += (size_t)snprintf(batch + off, sizeof batch - off, "%s[%d,\"r%d\"]", i ? "," : "",
                                i + 1, i);
    snprintf(batch + off, sizeof batch - off, "]");
    const char *sql = "INSERT INTO t(id, v) VALUES (?, ?)";
    waiter w;
    waiter_init(&w);
    gs_error err;
    cr_assert_eq(submit_req(db, GS_DB_LOAD, &sql, NULL, 1, batch, NULL, &w, &err), GS_OK, "%s",
                 err.message);
    wait_done(&w);
    cr_assert_eq(w.status, GS_OK, "%s", w.message);
    cr_assert_str_eq(w.json, "{\"rowsLoaded\":100,\"changes\":100}");
    waiter_free(&w);
    cr_assert_eq(writer_sync_level(db), 2);
    cr_assert_eq(count_rows(db, "t"), 100);

    /* a failing load rolls back every row and still restores durability */
    waiter_init(&w);
    cr_assert_eq(
        submit_req(db, GS_DB_LOAD, &sql, NULL, 1, "[[500,\"a\"],[1,\"dup\"]]", "normal", &w, &err),
        GS_OK);
    wait_done(&w);
    cr_assert_eq(w.status, GS_ERROR);
    cr_assert_str_eq(w.code, "QUERY_ERROR");
    cr_assert(strstr(w.message, "parameter set 2 of 2"), "%s", w.message);
    waiter_free(&w);
    cr_assert_eq(count_rows(db, "t"), 100);
    cr_assert_eq(writer_sync_level(db), 2);

    /* an unknown durability fails at submit */
    waiter_init(&w);
    cr_assert_eq(submit_req(db, GS_DB_LOAD, &sql, NULL, 1, "[[600,\"a\"]]", "full", &w, &err),
                 GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_DURABILITY");
    cr_assert_eq(submit_req(db, GS_DB_LOAD, &sql, NULL, 1, "[]", "off", &w, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_REQUEST");
    cr_assert_eq(submit_req(db, GS_DB_LOAD, &sql, NULL, 1, "[[600,\"a\"]]", "normal", &w, &err),
                 GS_OK);
    wait_done(&w);
    cr_assert_str_eq(w.json, "{\"rowsLoaded\":1,\"changes\":1}");
    waiter_free(&w);
    cr_assert_eq(writer_sync_level(db), 2);
    gs_db_free(db);
}

typedef struct closer {
    gs_database *db;
} closer;

static void *close_thread(void *arg)
{
    gs_db_close(((closer *)arg)->db);
    return NULL;
}

Test(database, close_drains_queued_writes_and_data_survives)
{
    gs_db_options o;
    gs_db_options_default(&o);
    o.busy_timeout_ms = 15000;
    gs_database *db = open_db(&o);
    run_ok(db, GS_DB_EXECUTE, "CREATE TABLE t(id INTEGER PRIMARY KEY)", NULL);
    sqlite3 *h = hold_write_lock();
    waiter w[5];
    gs_error err;
    for (int i = 0; i < 5; i++) {
        waiter_init(&w[i]);
        char p[16];
        snprintf(p, sizeof p, "[%d]", i + 1);
        cr_assert_eq(submit1(db, GS_DB_EXECUTE, "INSERT INTO t VALUES (?)", p, &w[i], &err), GS_OK);
    }
    waiter q;
    waiter_init(&q);
    cr_assert_eq(submit1(db, GS_DB_QUERY, "SELECT 1 AS one", NULL, &q, &err), GS_OK);
    closer c = {db};
    pthread_t th;
    pthread_create(&th, NULL, close_thread, &c);
    int64_t deadline = gs_test_now_ms() + WAIT_MS;
    while (!gs_db_is_closed(db) && gs_test_now_ms() < deadline)
        nap_ms(2);
    cr_assert(gs_db_is_closed(db));
    waiter late;
    waiter_init(&late);
    cr_assert_eq(submit1(db, GS_DB_EXECUTE, "INSERT INTO t VALUES (99)", NULL, &late, &err),
                 GS_ERROR);
    cr_assert_str_eq(err.code, "DATABASE_CLOSED");
    cr_assert_eq(submit1(db, GS_DB_QUERY, "SELECT 1", NULL, &late, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "DATABASE_CLOSED");
    release_write_lock(h);
    pthread_join(th, NULL);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(w[i].calls, 1, "queued write %d was not answered", i);
        cr_assert_eq(w[i].status, GS_OK, "%s", w[i].message);
        waiter_free(&w[i]);
    }
    cr_assert_eq(q.calls, 1);
    waiter_free(&q);
    waiter_free(&late);
    gs_db_close(db); /* idempotent */
    gs_db_free(db);

    /* the log was checkpointed and truncated at close */
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", dbpath);
    struct stat sb;
    cr_assert(stat(wal, &sb) != 0 || sb.st_size == 0, "WAL holds %lld bytes after close",
              (long long)sb.st_size);

    db = open_default();
    expect_json(db, GS_DB_QUERY, "SELECT group_concat(id) AS ids FROM t", NULL,
                "[{\"ids\":\"1,2,3,4,5\"}]");
    gs_db_free(db);
}

Test(database, open_failures)
{
    gs_db_options o;
    gs_db_options_default(&o);
    gs_database *db;
    gs_error err;
    o.synchronous = "sometimes";
    cr_assert_eq(gs_db_open("x", dbpath, &o, &db, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_SYNCHRONOUS");
    gs_db_options_default(&o);
    o.max_pending_writes = 0;
    cr_assert_eq(gs_db_open("x", dbpath, &o, &db, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_WRITER_WORKER");
    gs_db_options_default(&o);
    o.create = 0;
    cr_assert_eq(gs_db_open("x", dbpath, &o, &db, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "DATABASE_OPEN_FAILED");
    cr_assert(strstr(err.details, "missing"), "%s", err.details);
    gs_db_options_default(&o);
    o.read_only = 1;
    cr_assert_eq(gs_db_open("x", dbpath, &o, &db, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "DATABASE_OPEN_FAILED");
}

Test(database, in_memory_database_serves_reads_on_the_writer)
{
    snprintf(dbpath, sizeof dbpath, ":memory:");
    gs_database *db = open_default();
    run_ok(db, GS_DB_EXECUTE, "CREATE TABLE t(x)", NULL);
    run_ok(db, GS_DB_EXECUTE, "INSERT INTO t VALUES (42)", NULL);
    expect_json(db, GS_DB_QUERY, "SELECT x FROM t", NULL, "[{\"x\":42}]");
    expect_async_error(db, GS_DB_QUERY, "DELETE FROM t", NULL, "QUERY_ERROR", "execute");
    expect_json(db, GS_DB_QUERY, "SELECT count(*) AS n FROM t", NULL, "[{\"n\":1}]");
    gs_db_free(db);
    snprintf(dbpath, sizeof dbpath, "%s/d.db", tmpdir);
}

Test(database, queued_reads_are_answered_at_close)
{
    gs_db_options o;
    gs_db_options_default(&o);
    o.read_pool_size = 1;
    gs_database *db = open_db(&o);
    enum { N = 50 };
    waiter w[N];
    gs_error err;
    for (int i = 0; i < N; i++) {
        waiter_init(&w[i]);
        cr_assert_eq(submit1(db, GS_DB_QUERY, "SELECT 1 AS one", NULL, &w[i], &err), GS_OK);
    }
    gs_db_close(db);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(w[i].calls, 1);
        cr_assert_str_eq(w[i].json, "[{\"one\":1}]");
        waiter_free(&w[i]);
    }
    gs_db_free(db);
}

/* Informational only: the speed of the submit -> done round trip. Never asserted. */
Test(database, timing_informational)
{
    gs_database *db = open_default();
    run_ok(db, GS_DB_EXECUTE, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)", NULL);
    int64_t t0 = gs_test_now_ms();
    enum { INSERTS = 2000, SELECTS = 5000 };
    for (int i = 0; i < INSERTS; i++) {
        char p[48];
        snprintf(p, sizeof p, "[%d, \"value %d\"]", i, i);
        free(ok1(db, GS_DB_EXECUTE, "INSERT INTO kv VALUES (?, ?)", p));
    }
    int64_t t1 = gs_test_now_ms();
    for (int i = 0; i < SELECTS; i++) {
        char p[16];
        snprintf(p, sizeof p, "[%d]", i % INSERTS);
        free(ok1(db, GS_DB_QUERY, "SELECT * FROM kv WHERE k = ?", p));
    }
    int64_t t2 = gs_test_now_ms();
    cr_log_info("sequential round trips: %.0f inserts/s, %.0f point selects/s (one caller)",
                INSERTS * 1000.0 / (double)(t1 - t0 + 1), SELECTS * 1000.0 / (double)(t2 - t1 + 1));
    fprintf(stderr, "[info] sequential: %.0f inserts/s, %.0f point selects/s\n",
            INSERTS * 1000.0 / (double)(t1 - t0 + 1), SELECTS * 1000.0 / (double)(t2 - t1 + 1));
    gs_db_free(db);
}
