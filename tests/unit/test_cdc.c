/* Change data capture: triggers and the tagged encoding in the log, watch/unwatch, the epoch,
 * the feed (order, exactly once, txEnd), filters, resume and resync, unsubscribe and close
 * while delivering, write stamping. Every wait is bounded. */
#include "base/alloc.h"
#include "base/error.h"
#include "db/cdc.h"
#include "db/cdc_internal.h"
#include "db/database.h"
#include "db/database_internal.h"
#include "test_support.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 30000 /* upper bound for any single wait */

static char tmpdir[64];
static char dbpath[128];

static void setup(void)
{
    gs_test_mkdtemp(tmpdir, sizeof tmpdir, "cdc");
    snprintf(dbpath, sizeof dbpath, "%s/d.db", tmpdir);
}

static void teardown(void)
{
    gs_test_rmtree(tmpdir);
}

TestSuite(cdc, .init = setup, .fini = teardown);

/* ---- helpers ---- */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void nap_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000L};
    nanosleep(&ts, NULL);
}

typedef struct waiter {
    pthread_mutex_t m;
    pthread_cond_t c;
    int calls;
    gs_status status;
    char code[64];
    char message[512];
} waiter;

static void waiter_init(waiter *w)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->m, NULL);
    pthread_cond_init(&w->c, NULL);
}

static void waiter_free(waiter *w)
{
    pthread_mutex_destroy(&w->m);
    pthread_cond_destroy(&w->c);
}

static void on_done(void *user, const gs_db_reply *r)
{
    waiter *w = user;
    pthread_mutex_lock(&w->m);
    w->calls++;
    w->status = r->status;
    if (r->status != GS_OK) {
        snprintf(w->code, sizeof w->code, "%s", r->err.code);
        snprintf(w->message, sizeof w->message, "%s", r->err.message);
    }
    pthread_cond_broadcast(&w->c);
    pthread_mutex_unlock(&w->m);
}

static void wait_calls(waiter *w, int calls)
{
    int64_t deadline = gs_test_now_ms() + WAIT_MS;
    pthread_mutex_lock(&w->m);
    while (w->calls < calls && gs_test_now_ms() < deadline) {
        struct timespec ts = gs_test_realtime_in(50);
        pthread_cond_timedwait(&w->c, &w->m, &ts);
    }
    int got = w->calls;
    pthread_mutex_unlock(&w->m);
    cr_assert_geq(got, calls, "only %d of %d answers within %d ms", got, calls, WAIT_MS);
}

/* Submit n statements (one request of `kind`); params are JSON texts or NULL. */
static gs_status submit(gs_database *db, gs_db_job_kind kind, const char *const *sqls,
                        const char *const *params, size_t n, const char *batch, waiter *w,
                        gs_error *err)
{
    gs_db_stmt stmts[32];
    cr_assert_leq(n, 32);
    for (size_t i = 0; i < n; i++) {
        stmts[i].sql = sqls[i];
        stmts[i].params = params && params[i] ? gs_test_parse_json(params[i]) : NULL;
    }
    gs_db_request req = {.kind = kind,
                         .stmts = stmts,
                         .stmt_count = n,
                         .params_batch = gs_test_parse_json(batch),
                         .checkpoint = 1,
                         .done = on_done,
                         .user = w};
    gs_error_init(err);
    gs_status st = gs_db_submit(db, &req, err);
    for (size_t i = 0; i < n; i++)
        json_decref(stmts[i].params);
    json_decref(req.params_batch);
    return st;
}

static void run_req(gs_database *db, gs_db_job_kind kind, const char *const *sqls,
                    const char *const *params, size_t n, const char *batch)
{
    waiter w;
    waiter_init(&w);
    gs_error err;
    cr_assert_eq(submit(db, kind, sqls, params, n, batch, &w, &err), GS_OK, "%s: %s: %s", sqls[0],
                 err.code, err.message);
    wait_calls(&w, 1);
    cr_assert_eq(w.status, GS_OK, "%s: %s: %s", sqls[0], w.code, w.message);
    waiter_free(&w);
}

static void exec1(gs_database *db, const char *sql, const char *params)
{
    const char *p[1] = {params};
    run_req(db, GS_DB_EXECUTE, &sql, p, 1, NULL);
}

/* Run and expect an error code; returns the message (static). */
static const char *exec_fail(gs_database *db, const char *sql, const char *params, const char *code)
{
    static char msg[512];
    const char *p[1] = {params};
    waiter w;
    waiter_init(&w);
    gs_error err;
    if (submit(db, GS_DB_EXECUTE, &sql, p, 1, NULL, &w, &err) != GS_OK) {
        /* refused at submission */
        cr_assert_str_eq(err.code, code, "%s: %s", err.code, err.message);
        snprintf(msg, sizeof msg, "%s", err.message);
        waiter_free(&w);
        return msg;
    }
    wait_calls(&w, 1);
    cr_assert_eq(w.status, GS_ERROR, "%s should fail", sql);
    cr_assert_str_eq(w.code, code, "%s: %s", w.code, w.message);
    snprintf(msg, sizeof msg, "%s", w.message);
    waiter_free(&w);
    return msg;
}

static gs_database *open_db_with(gs_db_options *o)
{
    gs_database *db;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_open("t", dbpath, o, &db, &err), GS_OK, "%s: %s", err.code, err.message);
    return db;
}

static gs_database *open_db(void)
{
    gs_db_options o;
    gs_db_options_default(&o);
    o.read_pool_size = 2;
    o.node_id = "node-x";
    return open_db_with(&o);
}

/* Direct read of the file with a private connection. Returns a malloc'd text or NULL. */
static char *sql_text(const char *sql)
{
    sqlite3 *s;
    cr_assert_eq(sqlite3_open_v2(dbpath, &s, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
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

static int64_t sql_int(const char *sql)
{
    char *t = sql_text(sql);
    int64_t v = t ? strtoll(t, NULL, 10) : -1;
    free(t);
    return v;
}

static void watch(gs_database *db, const char *table)
{
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_cdc_watch(db, table, &err), GS_OK, "%s: %s", err.code, err.message);
}

/* ---- the event collector ---- */

typedef struct ev {
    char *json;
    uint64_t seq;
    int64_t at_us;
} ev;

typedef struct collector {
    pthread_mutex_t m;
    pthread_cond_t c;
    ev *evs;
    size_t n, cap;
    long delay_us;    /* a slow consumer */
    int unsubscribed; /* set after unsubscribe returned */
    int violations;   /* callbacks after unsubscribe returned */
    gs_database *db;  /* unsubscribe_self: unsubscribe on the first event */
    gs_cdc_sub *self;
    int unsubscribe_self;
} collector;

static void collector_init(collector *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->m, NULL);
    pthread_cond_init(&c->c, NULL);
}

static void collector_free(collector *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->evs[i].json);
    free(c->evs);
    pthread_mutex_destroy(&c->m);
    pthread_cond_destroy(&c->c);
}

static void collect(void *user, const char *json, size_t len, uint64_t seq)
{
    collector *c = user;
    pthread_mutex_lock(&c->m);
    if (c->unsubscribed)
        c->violations++;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->evs = realloc(c->evs, c->cap * sizeof *c->evs);
    }
    c->evs[c->n].json = strndup(json, len);
    c->evs[c->n].seq = seq;
    c->evs[c->n].at_us = now_us();
    c->n++;
    pthread_cond_broadcast(&c->c);
    int self = c->unsubscribe_self && c->self;
    gs_cdc_sub *sub = c->self;
    if (self)
        c->self = NULL;
    pthread_mutex_unlock(&c->m);
    if (self)
        gs_db_cdc_unsubscribe(c->db, sub);
    if (c->delay_us)
        nap_us(c->delay_us);
}

static size_t wait_events(collector *c, size_t n, int ms)
{
    int64_t deadline = gs_test_now_ms() + ms;
    pthread_mutex_lock(&c->m);
    while (c->n < n && gs_test_now_ms() < deadline) {
        struct timespec ts = gs_test_realtime_in(20);
        pthread_cond_timedwait(&c->c, &c->m, &ts);
    }
    size_t got = c->n;
    pthread_mutex_unlock(&c->m);
    return got;
}

static void expect_events(collector *c, size_t n)
{
    size_t got = wait_events(c, n, WAIT_MS);
    cr_assert_geq(got, n, "only %zu of %zu events within %d ms", got, n, WAIT_MS);
}

static json_t *event(collector *c, size_t i)
{
    pthread_mutex_lock(&c->m);
    cr_assert_lt(i, c->n);
    json_t *j = gs_test_parse_json(c->evs[i].json);
    pthread_mutex_unlock(&c->m);
    return j;
}

static gs_cdc_sub *subscribe_full(gs_database *db, const char *table, const char *filter,
                                  int has_since, uint64_t since, const char *epoch, int mark,
                                  collector *c, gs_cdc_subscribed *info)
{
    gs_cdc_subscribe_request req = {.table = table,
                                    .filter = gs_test_parse_json(filter),
                                    .has_since = has_since,
                                    .since_seq = since,
                                    .epoch = epoch,
                                    .mark_tx_end = mark,
                                    .on_event = collect,
                                    .user = c};
    gs_cdc_sub *sub = NULL;
    gs_cdc_subscribed local;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_cdc_subscribe(db, &req, &sub, info ? info : &local, &err), GS_OK,
                 "subscribe %s: %s: %s", table, err.code, err.message);
    json_decref(req.filter);
    cr_assert_not_null(sub);
    return sub;
}

static gs_cdc_sub *subscribe(gs_database *db, const char *table, const char *filter, int mark,
                             collector *c)
{
    return subscribe_full(db, table, filter, 0, 0, NULL, mark, c, NULL);
}

static void expect_json_eq(json_t *got, const char *expected_text, const char *what)
{
    json_t *want = gs_test_parse_json(expected_text);
    char *g = json_dumps(got, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
    char *e = json_dumps(want, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
    cr_assert(json_equal(got, want), "%s: got %s, want %s", what, g, e);
    free(g);
    free(e);
    json_decref(want);
}

static const char *sget(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* ---- triggers and encoding ---- */

Test(cdc, trigger_encodes_every_value_type)
{
    gs_database *db = open_db();
    exec1(db,
          "CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, big INTEGER, neg INTEGER, "
          "r REAL, tenth REAL, s TEXT, b BLOB, n TEXT, e BLOB)",
          NULL);
    collector c;
    collector_init(&c);
    gs_cdc_sub *sub = subscribe(db, "t", NULL, 0, &c);
    exec1(
        db, "INSERT INTO t VALUES (1, 42, ?, ?, 1.5, 0.1, ?, ?, NULL, ?)",
        "[{\"__sirannon_int\":\"9007199254740992\"},{\"__sirannon_int\":\"-9223372036854775808\"},"
        "\"h\\u00e9 \\\"q\\\" "
        "{\\\"__sirannon_int\\\":\\\"1\\\"}\",{\"__sirannon_blob\":\"00ff10\"},"
        "{\"__sirannon_blob\":\"\"}]");
    exec1(db, "UPDATE t SET i = 9007199254740991, r = ? WHERE id = 1", "[-2.5e-7]");
    exec1(db, "DELETE FROM t WHERE id = 1", NULL);
    expect_events(&c, 3);

    const char *row1 =
        "{\"id\":1,\"i\":42,\"big\":{\"__sirannon_int\":\"9007199254740992\"},"
        "\"neg\":{\"__sirannon_int\":\"-9223372036854775808\"},\"r\":1.5,"
        "\"tenth\":0.1,\"s\":\"h\\u00e9 \\\"q\\\" {\\\"__sirannon_int\\\":\\\"1\\\"}\","
        "\"b\":{\"__sirannon_blob\":\"00FF10\"},\"n\":null,"
        "\"e\":{\"__sirannon_blob\":\"\"}}";
    const char *row2 =
        "{\"id\":1,\"i\":9007199254740991,\"big\":{\"__sirannon_int\":"
        "\"9007199254740992\"},\"neg\":{\"__sirannon_int\":\"-9223372036854775808\"},"
        "\"r\":-2.5e-7,\"tenth\":0.1,\"s\":\"h\\u00e9 \\\"q\\\" "
        "{\\\"__sirannon_int\\\":\\\"1\\\"}\",\"b\":{\"__sirannon_blob\":\"00FF10\"},"
        "\"n\":null,\"e\":{\"__sirannon_blob\":\"\"}}";
    json_t *e0 = event(&c, 0);
    cr_assert_str_eq(sget(e0, "type"), "insert");
    cr_assert_str_eq(sget(e0, "table"), "t");
    expect_json_eq(json_object_get(e0, "row"), row1, "insert row");
    cr_assert_null(json_object_get(e0, "oldRow"));
    cr_assert_str_eq(sget(e0, "rowId"), "1");
    cr_assert(json_is_string(json_object_get(e0, "seq")), "seq is a decimal string");
    cr_assert(json_is_number(json_object_get(e0, "timestamp")), "timestamp is a number");
    double ts = json_number_value(json_object_get(e0, "timestamp"));
    double wall = (double)time(NULL);
    cr_assert(ts > wall - 60 && ts < wall + 60, "timestamp %f is seconds since the epoch", ts);
    cr_assert_null(json_object_get(e0, "txEnd"));
    /* the stored row keeps column order and the text that looks like an envelope stays text */
    pthread_mutex_lock(&c.m);
    cr_assert(strstr(c.evs[0].json, "\"row\":{\"id\":1,\"i\":42,\"big\":") != NULL, "%s",
              c.evs[0].json);
    cr_assert(strstr(c.evs[0].json, "\"tenth\":0.1,") != NULL, "%s", c.evs[0].json);
    pthread_mutex_unlock(&c.m);

    json_t *e1 = event(&c, 1);
    cr_assert_str_eq(sget(e1, "type"), "update");
    expect_json_eq(json_object_get(e1, "oldRow"), row1, "update oldRow");
    expect_json_eq(json_object_get(e1, "row"), row2, "update row");

    json_t *e2 = event(&c, 2);
    cr_assert_str_eq(sget(e2, "type"), "delete");
    expect_json_eq(json_object_get(e2, "row"), "{}", "delete row");
    expect_json_eq(json_object_get(e2, "oldRow"), row2, "delete oldRow");
    cr_assert_str_eq(sget(e2, "rowId"), "1");

    /* the log itself: upper-case operation, tagged JSON text, empty stamps before stamping */
    char *op = sql_text("SELECT operation FROM _sirannon_changes ORDER BY seq LIMIT 1");
    cr_assert_str_eq(op, "INSERT");
    free(op);
    char *nd = sql_text("SELECT json_extract(new_data, '$.b.__sirannon_blob') FROM "
                        "_sirannon_changes ORDER BY seq LIMIT 1");
    cr_assert_str_eq(nd, "00FF10");
    free(nd);
    json_decref(e0);
    json_decref(e1);
    json_decref(e2);
    gs_db_cdc_unsubscribe(db, sub);
    gs_db_free(db);
    collector_free(&c);
}

Test(cdc, infinity_is_null_and_wide_tables_work)
{
    gs_database *db = open_db();
    /* 130 columns: more than one json_object() call can take */
    char sql[8192];
    size_t off = (size_t)snprintf(sql, sizeof sql, "CREATE TABLE w (id INTEGER PRIMARY KEY");
    for (int i = 0; i < 130; i++)
        off += (size_t)snprintf(sql + off, sizeof sql - off, ", c%d INTEGER DEFAULT %d", i, i);
    snprintf(sql + off, sizeof sql - off, ", f REAL)");
    exec1(db, sql, NULL);
    collector c;
    collector_init(&c);
    gs_cdc_sub *sub = subscribe(db, "w", NULL, 0, &c);
    exec1(db, "INSERT INTO w (id, f) VALUES (1, 9e999)", NULL);
    expect_events(&c, 1);
    json_t *e = event(&c, 0);
    json_t *row = json_object_get(e, "row");
    cr_assert_eq(json_object_size(row), 132);
    cr_assert(json_is_null(json_object_get(row, "f")), "Inf is stored as null");
    cr_assert_eq(json_integer_value(json_object_get(row, "c129")), 129);
    pthread_mutex_lock(&c.m);
    cr_assert(strstr(c.evs[0].json, "\"c128\":128,\"c129\":129,\"f\":null}") != NULL, "%s",
              c.evs[0].json);
    pthread_mutex_unlock(&c.m);
    json_decref(e);
    gs_db_cdc_unsubscribe(db, sub);
    gs_db_free(db);
    collector_free(&c);
}

Test(cdc, row_id_for_every_key_shape)
{
    gs_database *db = open_db();
    exec1(db, "CREATE TABLE single (id INTEGER PRIMARY KEY, v TEXT)", NULL);
    exec1(db, "CREATE TABLE textpk (code TEXT PRIMARY KEY, v TEXT)", NULL);
    exec1(db, "CREATE TABLE comp (b TEXT, a INTEGER, v TEXT, PRIMARY KEY (a, b))", NULL);
    exec1(db, "CREATE TABLE nopk (v TEXT)", NULL);
    exec1(db, "CREATE TABLE wr (k1 TEXT, k2 INTEGER, v TEXT, PRIMARY KEY (k1, k2)) WITHOUT ROWID",
          NULL);
    exec1(db, "CREATE TABLE blobpk (k BLOB PRIMARY KEY)", NULL);
    const char *tables[] = {"single", "textpk", "comp", "nopk", "wr", "blobpk"};
    collector c[6];
    gs_cdc_sub *subs[6];
    for (int i = 0; i < 6; i++) {
        collector_init(&c[i]);
        subs[i] = subscribe(db, tables[i], NULL, 0, &c[i]);
    }
    exec1(db, "INSERT INTO single VALUES (7, 'x')", NULL);
    exec1(db, "INSERT INTO textpk VALUES ('abc', 'x')", NULL);
    exec1(db, "INSERT INTO comp VALUES ('x', 1, 'v')", NULL);
    exec1(db, "INSERT INTO nopk VALUES ('a')", NULL);
    exec1(db, "INSERT INTO nopk VALUES ('b')", NULL);
    exec1(db, "INSERT INTO wr VALUES ('k', 2, 'v')", NULL);
    exec1(db, "INSERT INTO blobpk VALUES (x'0aff')", NULL);
    exec1(db, "UPDATE comp SET v = 'w' WHERE a = 1", NULL);
    exec1(db, "DELETE FROM wr", NULL);
    const char *want[6][3] = {{"7"}, {"abc"}, {"1-x", "1-x"}, {"1", "2"}, {"k-2", "k-2"}, {"0AFF"}};
    size_t counts[6] = {1, 1, 2, 2, 2, 1};
    for (int i = 0; i < 6; i++) {
        expect_events(&c[i], counts[i]);
        for (size_t k = 0; k < counts[i]; k++) {
            json_t *e = event(&c[i], k);
            cr_assert_str_eq(sget(e, "rowId"), want[i][k], "%s event %zu", tables[i], k);
            json_decref(e);
        }
        gs_db_cdc_unsubscribe(db, subs[i]);
        collector_free(&c[i]);
    }
    gs_db_free(db);
}

Test(cdc, add_column_reinstalls_triggers)
{
    gs_database *db = open_db();
    exec1(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT)", NULL);
    watch(db, "t");
    collector c;
    collector_init(&c);
    gs_cdc_sub *sub = subscribe(db, "t", NULL, 0, &c);
    exec1(db, "INSERT INTO t VALUES (1, 'x')", NULL);
    /* DDL through the writer: the triggers follow the new column at once, even inside one
     * transaction request */
    const char *sqls[] = {"ALTER TABLE t ADD COLUMN b INTEGER", "INSERT INTO t VALUES (2, 'y', 5)"};
    run_req(db, GS_DB_TRANSACTION, sqls, NULL, 2, NULL);
    expect_events(&c, 2);
    json_t *e = event(&c, 1);
    expect_json_eq(json_object_get(e, "row"), "{\"id\":2,\"a\":\"y\",\"b\":5}", "after ADD COLUMN");
    json_decref(e);

    /* a column added behind the core's back (another process): watch reinstalls */
    sqlite3 *s;
    cr_assert_eq(sqlite3_open(dbpath, &s), SQLITE_OK);
    sqlite3_busy_timeout(s, 5000);
    cr_assert_eq(sqlite3_exec(s, "ALTER TABLE t ADD COLUMN c TEXT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(s);
    char *trig = sql_text("SELECT sql FROM sqlite_master WHERE name = '_sirannon_trg_t_insert'");
    cr_assert(strstr(trig, "NEW.\"c\"") == NULL, "not yet reinstalled");
    free(trig);
    watch(db, "t");
    trig = sql_text("SELECT sql FROM sqlite_master WHERE name = '_sirannon_trg_t_insert'");
    cr_assert(strstr(trig, "NEW.\"c\"") != NULL, "reinstalled with the new column");
    free(trig);
    exec1(db, "INSERT INTO t VALUES (3, 'z', 6, 'cc')", NULL);
    expect_events(&c, 3);
    e = event(&c, 2);
    expect_json_eq(json_object_get(e, "row"), "{\"id\":3,\"a\":\"z\",\"b\":6,\"c\":\"cc\"}",
                   "after watch");
    json_decref(e);

    /* a column can be dropped or renamed although the triggers name it; the triggers follow */
    exec1(db, "ALTER TABLE t DROP COLUMN b", NULL);
    exec1(db, "ALTER TABLE t RENAME COLUMN c TO d", NULL);
    exec1(db, "INSERT INTO t VALUES (4, 'w', 'dd')", NULL);
    expect_events(&c, 4);
    e = event(&c, 3);
    expect_json_eq(json_object_get(e, "row"), "{\"id\":4,\"a\":\"w\",\"d\":\"dd\"}",
                   "after DROP and RENAME COLUMN");
    json_decref(e);
    /* a failing ALTER leaves the triggers as they were */
    exec_fail(db, "ALTER TABLE t DROP COLUMN nope", NULL, "QUERY_ERROR");
    exec1(db, "INSERT INTO t VALUES (5, 'v', 'ee')", NULL);
    expect_events(&c, 5);
    cr_assert_eq(sql_int("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"), 3);

    /* dropping a watched table forgets it; a new table of that name is not watched */
    exec1(db, "DROP TABLE t", NULL);
    exec1(db, "CREATE TABLE t (id INTEGER PRIMARY KEY)", NULL);
    cr_assert_eq(sql_int("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"), 0);
    gs_db_cdc_unsubscribe(db, sub);
    gs_db_free(db);
    collector_free(&c);
}

Test(cdc, unwatch_drops_the_triggers)
{
    gs_database *db = open_db();
    exec1(db, "CREATE TABLE t (id INTEGER PRIMARY KEY)", NULL);
    watch(db, "T"); /* names are matched without case; the declared one is kept */
    cr_assert_eq(sql_int("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN "
                         "('_sirannon_trg_t_insert', '_sirannon_trg_t_update', "
                         "'_sirannon_trg_t_delete')"),
                 3);
    exec1(db, "INSERT INTO t VALUES (1)", NULL);
    cr_assert_eq(sql_int("SELECT count(*) FROM _sirannon_changes WHERE table_name = 't'"), 1);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_cdc_unwatch(db, "t", &err), GS_OK, "%s", err.message);
    cr_assert_eq(sql_int("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"), 0);
    exec1(db, "INSERT INTO t VALUES (2)", NULL);
    cr_assert_eq(sql_int("SELECT count(*) FROM _sirannon_changes"), 1);
    cr_assert_eq(gs_db_cdc_unwatch(db, "t", &err), GS_OK, "unwatching twice is fine");
    /* subscribing watches it again */
    collector c;
    collector_init(&c);
    gs_cdc_sub *sub = subscribe(db, "t", NULL, 0, &c);
    cr_assert_eq(gs_db_cdc_subscriber_count(db), 1);
    exec1(db, "INSERT INTO t VALUES (3)", NULL);
    expect_events(&c, 1);
    json_t *e = event(&c, 0);
    cr_assert_str_eq(sget(e, "table"), "t");
    cr_assert_str_eq(sget(e, "rowId"), "3");
    json_decref(e);
    gs_db_cdc_unsubscribe(db, sub);
    cr_assert_eq(gs_db_cdc_subscriber_count(db), 0);
    gs_db_free(db);
    collector_free(&c);
}

Test(cdc, bad_identifiers_and_targets_are_refused)
{
    gs_database *db = open_db();
    exec1(db, "CREATE TABLE \"my-table\" (id INTEGER PRIMARY KEY)", NULL);
    exec1(db, "CREATE TABLE spaced (id INTEGER PRIMARY KEY, \"my col\" TEXT)", NULL);
    exec1(db, "CREATE VIEW v AS SELECT 1 AS x", NULL);
    gs_error err;
    const char *bad[] = {"my-table",          "x;drop",       "1abc", "", "spaced", "missing", "v",
                         "_sirannon_changes", "sqlite_master"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gs_error_init(&err);
        cr_assert_eq(gs_db_cdc_watch(db, bad[i], &err), GS_ERROR, "%s", bad[i]);
        cr_assert_str_eq(err.code, "CDC_ERROR", "%s: %s", bad[i], err.code);
    }
    collector c;
    collector_init(&c);
    gs_cdc_subscribe_request req = {.table = "x;drop", .on_event = collect, .user = &c};
    gs_cdc_sub *sub;
    gs_cdc_subscribed info;
    gs_error_init(&err);
    cr_assert_eq(gs_db_cdc_subscribe(db, &req, &sub, &info, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "CDC_ERROR");
    req.table = "missing";
    cr_assert_eq(gs_db_cdc_subscribe(db, &req, &sub, &info, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "CDC_ERROR");
    /* a malformed filter */
    exec1(db, "CREATE TABLE ok (id INTEGER PRIMARY KEY)", NULL);
    req.table = "ok";
    req.filter = gs_test_parse_json("[1]");
    cr_assert_eq(gs_db_cdc_subscribe(db, &req, &sub, &info, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_REQUEST");
    json_decref(req.filter);
    req.filter = gs_test_parse_json("{\"id\":{\"__sirannon_int\":\"x\"}}");
    cr_assert_eq(gs_db_cdc_subscribe(db, &req, &sub, &info, &err), GS_ERROR);
    json_decref(req.filter);
    cr_assert_eq(gs_db_cdc_subscriber_count(db), 0);
    /* user SQL still may not touch the log */
    exec_fail(db, "SELECT * FROM _sirannon_changes", NULL, "FORBIDDEN_SQL");
    exec_fail(db, "DELETE FROM _sirannon_meta", NULL, "FORBIDDEN_SQL");
    gs_db_free(db);

    /* in memory: CDC_UNSUPPORTED */
    gs_db_options o;
    gs_db_options_default(&o);
    gs_database *mem;
    gs_error_init(&err);
    cr_assert_eq(gs_db_open("m", ":memory:", &o, &mem, &err), GS_OK);
    req.table = "ok";
    req.filter = NULL;
    cr_assert_eq(gs_db_cdc_subscribe(mem, &req, &sub, &info, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "CDC_UNSUPPORTED");
    cr_assert_eq(gs_db_cdc_watch(mem, "ok", &err), GS_ERROR);
    cr_assert_str_eq(err.code, "CDC_UNSUPPORTED");
    gs_db_free(mem);

    /* read-only: READ_ONLY */
    o.read_only = 1;
    gs_database *ro = open_db_with(&o);
    cr_assert_eq(gs_db_cdc_subscribe(ro, &req, &sub, &info, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "READ_ONLY");
    cr_assert_eq(gs_db_cdc_watch(ro, "ok", &err), GS_ERROR);
    cr_assert_str_eq(err.code, "READ_ONLY");
    gs_db_free(ro);

    /* watch_on_subscribe off: an unwatched table is refused, a configured one is not */
    gs_db_options_default(&o);
    o.cdc_watch_on_subscribe = 0;
    const char *tables[] = {"later"};
    o.cdc_tables = tables;
    o.cdc_table_count = 1;
    gs_database *db2 = open_db_with(&o);
    cr_assert_eq(gs_db_cdc_subscribe(db2, &req, &sub, &info, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "CDC_ERROR");
    cr_assert_str_eq(err.message, "table ok is not tracked; add it to databases[].cdc.tables");
    exec1(db2, "CREATE TABLE later (id INTEGER PRIMARY KEY)", NULL);
    req.table = "later";
    cr_assert_eq(gs_db_cdc_subscribe(db2, &req, &sub, &info, &err), GS_OK, "%s", err.message);
    gs_db_cdc_unsubscribe(db2, sub);
    gs_db_free(db2);

    /* a configured table with a bad name fails the open */
    const char *badcfg[] = {"no-good"};
    o.cdc_tables = badcfg;
    gs_database *db3;
    gs_error_init(&err);
    cr_assert_eq(gs_db_open("t3", dbpath, &o, &db3, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "CDC_ERROR");
    collector_free(&c);
}

Test(cdc, epoch_is_minted_once_per_file)
{
    gs_db_options o;
    gs_db_options_default(&o);
    gs_database *db = open_db_with(&o);
    char e0[64];
    uint64_t max;
    gs_db_cdc_position(db, e0, &max);
    cr_assert_str_eq(e0, "", "no epoch before CDC is used");
    exec1(db, "CREATE TABLE t (id INTEGER PRIMARY KEY)", NULL);
    watch(db, "t");
    char e1[64];
    gs_db_cdc_position(db, e1, &max);
    cr_assert_eq(strlen(e1), 32, "%s", e1);
    cr_assert_eq(strspn(e1, "0123456789abcdef"), 32);
    cr_assert_eq(max, 0);
    exec1(db, "INSERT INTO t VALUES (1)", NULL);
    exec1(db, "INSERT INTO t VALUES (2)", NULL);
    gs_db_cdc_position(db, e1, &max);
    cr_assert_eq(max, 2);
    gs_db_free(db);

    /* reopened without configuration: the log exists, so CDC comes back with the same epoch
     * and the table still watched */
    db = open_db_with(&o);
    char e2[64];
    gs_db_cdc_position(db, e2, &max);
    cr_assert_str_eq(e2, e1);
    cr_assert_eq(max, 2);
    exec1(db, "INSERT INTO t VALUES (3)", NULL);
    gs_db_cdc_position(db, e2, &max);
    cr_assert_eq(max, 3);
    gs_db_free(db);

    /* another file has another epoch; cdc_tables creates the log at open */
    snprintf(dbpath, sizeof dbpath, "%s/other.db", tmpdir);
    sqlite3 *s;
    cr_assert_eq(sqlite3_open(dbpath, &s), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(s, "CREATE TABLE t (id INTEGER PRIMARY KEY)", NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(s);
    const char *tables[] = {"t"};
    o.cdc_tables = tables;
    o.cdc_table_count = 1;
    db = open_db_with(&o);
    char e3[64];
    gs_db_cdc_position(db, e3, &max);
    cr_assert_eq(strlen(e3), 32);
    cr_assert_str_neq(e3, e1);
    cr_assert_eq(sql_int("SELECT count(*) FROM sqlite_master WHERE name LIKE "
                         "'idx__sirannon_changes_%'"),
                 3);
    cr_assert_eq(sql_int("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND "
                         "tbl_name = 't'"),
                 3);
    gs_db_free(db);
}

/* ---- delivery: order, exactly once, txEnd ---- */

#define THREADS 4
#define ROWS_PER_THREAD 2500

typedef struct writer_arg {
    gs_database *db;
    int thread;
    int *req_of; /* row id -> request number */
    atomic_int *next_req;
    int failures;
} writer_arg;

static void *writer_thread(void *p)
{
    writer_arg *a = p;
    unsigned seed = (unsigned)a->thread * 7919u + 17u;
    int i = 0;
    static const char *const sql = "INSERT INTO t (id, th) VALUES (?, ?)";
    const char *sqls[8];
    char pbuf[8][64];
    const char *params[8];
    while (i < ROWS_PER_THREAD) {
        int k = 1 + (int)(rand_r(&seed) % 8);
        if (k > ROWS_PER_THREAD - i)
            k = ROWS_PER_THREAD - i;
        int req = atomic_fetch_add(a->next_req, 1);
        for (int j = 0; j < k; j++) {
            int id = a->thread * ROWS_PER_THREAD + i + j;
            sqls[j] = sql;
            snprintf(pbuf[j], sizeof pbuf[j], "[%d, %d]", id, a->thread);
            params[j] = pbuf[j];
            a->req_of[id] = req;
        }
        waiter w;
        waiter_init(&w);
        gs_error err;
        gs_db_job_kind kind = k == 1 && (rand_r(&seed) & 1) ? GS_DB_EXECUTE : GS_DB_TRANSACTION;
        if (submit(a->db, kind, sqls, params, (size_t)k, NULL, &w, &err) != GS_OK) {
            a->failures++;
        } else {
            wait_calls(&w, 1);
            if (w.status != GS_OK)
                a->failures++;
        }
        waiter_free(&w);
        i += k;
    }
    return NULL;
}

Test(cdc, concurrent_writers_exactly_once_in_order_with_tx_end)
{
    gs_database *db = open_db();
    exec1(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, th INTEGER)", NULL);
    collector c;
    collector_init(&c);
    gs_cdc_sub *sub = subscribe(db, "t", NULL, 1, &c);
    /* a second subscriber without marking sees the same stream */
    collector plain;
    collector_init(&plain);
    gs_cdc_sub *sub2 = subscribe(db, "t", NULL, 0, &plain);

    int total = THREADS * ROWS_PER_THREAD;
    int *req_of = calloc((size_t)total, sizeof *req_of);
    atomic_int next_req;
    atomic_init(&next_req, 0);
    pthread_t th[THREADS];
    writer_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (writer_arg){.db = db, .thread = i, .req_of = req_of, .next_req = &next_req};
        pthread_create(&th[i], NULL, writer_thread, &args[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(args[i].failures, 0);
    }
    expect_events(&c, (size_t)total);
    expect_events(&plain, (size_t)total);
    /* nothing more arrives */
    cr_assert_eq(wait_events(&c, (size_t)total + 1, 200), (size_t)total);

    int nreq = atomic_load(&next_req);
    int *seen = calloc((size_t)total, sizeof *seen);
    char(*tx_of_req)[40] = calloc((size_t)nreq, sizeof *tx_of_req);
    int *last_idx_of_req = malloc((size_t)nreq * sizeof(int));
    for (int i = 0; i < nreq; i++)
        last_idx_of_req[i] = -1;
    int *req_at = malloc((size_t)total * sizeof(int));
    int *end_at = malloc((size_t)total * sizeof(int));
    uint64_t prev = 0;
    for (int i = 0; i < total; i++) {
        json_t *e = event(&c, (size_t)i);
        uint64_t seq = strtoull(sget(e, "seq"), NULL, 10);
        cr_assert_eq(seq, c.evs[i].seq);
        cr_assert_gt(seq, prev, "events in seq order");
        prev = seq;
        int id = (int)json_integer_value(json_object_get(json_object_get(e, "row"), "id"));
        cr_assert(id >= 0 && id < total);
        cr_assert_eq(seen[id], 0, "row %d delivered twice", id);
        seen[id] = 1;
        int req = req_of[id];
        const char *tx = sget(e, "txId");
        cr_assert_not_null(tx, "stamped: %s", c.evs[i].json);
        cr_assert_eq(strlen(tx), 32);
        if (!tx_of_req[req][0])
            snprintf(tx_of_req[req], sizeof tx_of_req[req], "%s", tx);
        cr_assert_str_eq(tx, tx_of_req[req], "one request, one transaction id");
        cr_assert_str_eq(sget(e, "origin"), "node-x");
        req_at[i] = req;
        end_at[i] = json_is_true(json_object_get(e, "txEnd"));
        last_idx_of_req[req] = i;
        /* the plain subscription: same change, no marker */
        json_t *p = event(&plain, (size_t)i);
        cr_assert_str_eq(sget(p, "seq"), sget(e, "seq"));
        cr_assert_null(json_object_get(p, "txEnd"));
        json_decref(p);
        json_decref(e);
    }
    for (int i = 0; i < total; i++) {
        cr_assert_eq(seen[i], 1, "row %d never delivered", i);
        cr_assert_eq(end_at[i], last_idx_of_req[req_at[i]] == i,
                     "txEnd exactly on the last change of each transaction (event %d)", i);
    }
    /* distinct requests, distinct transaction ids */
    for (int a = 0; a < nreq; a++)
        for (int b = a + 1; b < nreq && b < a + 50; b++)
            cr_assert_str_neq(tx_of_req[a], tx_of_req[b]);
    gs_db_stats st;
    gs_db_get_stats(db, &st);
    printf("cdc concurrency: %d requests, %llu groups, largest group %llu units\n", nreq,
           (unsigned long long)st.groups, (unsigned long long)st.max_group_units);
    free(seen);
    free(tx_of_req);
    free(last_idx_of_req);
    free(req_at);
    free(end_at);
    free(req_of);
    gs_db_cdc_unsubscribe(db, sub);
    gs_db_cdc_unsubscribe(db, sub2);
    gs_db_free(db);
    collector_free(&c);
    collector_free(&plain);
}

Test(cdc, a_transaction_larger_than_one_read_keeps_one_marker)
{
    gs_database *db = open_db();
    exec1(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", NULL);
    exec1(db, "CREATE TABLE other (id INTEGER PRIMARY KEY)", NULL);
    collector c;
    collector_init(&c);
    gs_cdc_sub *sub = subscribe(db, "t", NULL, 1, &c);
    gs_cdc_sub *osub;
    collector oc;
    collector_init(&oc);
    osub = subscribe(db, "other", NULL, 1, &oc);
    /* 2500 rows in one transaction: three feed reads */
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_putc(&b, '[');
    for (int i = 0; i < 2500; i++)
        gs_buf_printf(&b, "%s[%d]", i ? "," : "", i);
    gs_buf_putc(&b, ']');
    const char *sql = "INSERT INTO t (id) VALUES (?)";
    run_req(db, GS_DB_BATCH, &sql, NULL, 1, b.data);
    gs_buf_free(&b);
    /* a transaction whose last rows belong to another table: t's marker comes from the
     * boundary, not from a later t change */
    const char *sqls[] = {"INSERT INTO t (id) VALUES (5000)", "INSERT INTO t (id) VALUES (5001)",
                          "INSERT INTO other (id) VALUES (1)"};
    run_req(db, GS_DB_TRANSACTION, sqls, NULL, 3, NULL);
    expect_events(&c, 2502);
    expect_events(&oc, 1);
    for (int i = 0; i < 2502; i++) {
        json_t *e = event(&c, (size_t)i);
        int end = json_is_true(json_object_get(e, "txEnd"));
        cr_assert_eq(end, i == 2499 || i == 2501, "event %d txEnd=%d", i, end);
        json_decref(e);
    }
    json_t *e = event(&oc, 0);
    cr_assert(json_is_true(json_object_get(e, "txEnd")));
    json_decref(e);
    gs_db_cdc_unsubscribe(db, sub);
    gs_db_cdc_unsubscribe(db, osub);
    gs_db_free(db);
    collector_free(&c);
    collector_free(&oc);
}

/* ---- filters ---- */

Test(cdc, filter_table_semantics)
{
    gs_database *db = open_db();
    exec1(db,
          "CREATE TABLE t (id INTEGER PRIMARY KEY, status TEXT, n INTEGER, big INTEGER, "
          "b BLOB)",
          NULL);
    collector f, all;
    collector_init(&f);
    collector_init(&all);
    gs_cdc_sub *sf = subscribe(db, "t", "{\"status\":\"open\"}", 0, &f);
    gs_cdc_sub *sa = subscribe(db, "t", NULL, 0, &all);
    exec1(db, "INSERT INTO t VALUES (1, 'open', 1, 1, NULL)", NULL);   /* insert, passes */
    exec1(db, "INSERT INTO t VALUES (2, 'closed', 1, 1, NULL)", NULL); /* insert, dropped */
    exec1(db, "UPDATE t SET n = 2 WHERE id = 1", NULL);                /* match -> match */
    exec1(db, "UPDATE t SET status = 'closed' WHERE id = 1", NULL);    /* match -> no */
    exec1(db, "UPDATE t SET status = 'open' WHERE id = 2", NULL);      /* no -> match */
    exec1(db, "UPDATE t SET n = 3 WHERE id = 1", NULL);                /* no -> no */
    exec1(db, "DELETE FROM t WHERE id = 1", NULL);                     /* delete, dropped */
    exec1(db, "DELETE FROM t WHERE id = 2", NULL);                     /* delete, passes */
    expect_events(&all, 8);
    expect_events(&f, 5);
    cr_assert_eq(wait_events(&f, 6, 200), 5);

    const char *types[] = {"insert", "update", "delete", "insert", "delete"};
    const char *ids[] = {"1", "1", "1", "2", "2"};
    for (int i = 0; i < 5; i++) {
        json_t *e = event(&f, (size_t)i);
        cr_assert_str_eq(sget(e, "type"), types[i], "event %d", i);
        cr_assert_str_eq(sget(e, "rowId"), ids[i], "event %d", i);
        switch (i) {
        case 0: cr_assert_null(json_object_get(e, "oldRow")); break;
        case 1:
            expect_json_eq(json_object_get(e, "row"),
                           "{\"id\":1,\"status\":\"open\",\"n\":2,\"big\":1,\"b\":null}", "m->m");
            cr_assert_not_null(json_object_get(e, "oldRow"));
            break;
        case 2: /* an update leaving the filter: a delete with {} and the old row */
            expect_json_eq(json_object_get(e, "row"), "{}", "m->no row");
            expect_json_eq(json_object_get(e, "oldRow"),
                           "{\"id\":1,\"status\":\"open\",\"n\":2,\"big\":1,\"b\":null}",
                           "m->no oldRow");
            break;
        case 3: /* an update entering it: an insert without oldRow */
            expect_json_eq(json_object_get(e, "row"),
                           "{\"id\":2,\"status\":\"open\",\"n\":1,\"big\":1,\"b\":null}", "no->m");
            cr_assert_null(json_object_get(e, "oldRow"));
            break;
        case 4: cr_assert_not_null(json_object_get(e, "oldRow")); break;
        }
        json_decref(e);
    }
    /* the unfiltered subscriber received the changes unchanged */
    json_t *e = event(&all, 3);
    cr_assert_str_eq(sget(e, "type"), "update");
    cr_assert_not_null(json_object_get(e, "oldRow"));
    json_decref(e);
    e = event(&all, 4);
    cr_assert_str_eq(sget(e, "type"), "update");
    json_decref(e);
    gs_db_cdc_unsubscribe(db, sf);
    gs_db_cdc_unsubscribe(db, sa);
    collector_free(&f);
    collector_free(&all);

    /* values under the tagged encoding */
    const char *filters[] = {"{\"n\":1.0}",
                             "{\"big\":{\"__sirannon_int\":\"9223372036854775807\"}}",
                             "{\"b\":{\"__sirannon_blob\":\"0aff\"}}",
                             "{\"status\":null}",
                             "{\"n\":1,\"status\":\"s\"}",
                             "{\"missing\":1}",
                             "{\"big\":9223372036854775807}"};
    size_t expect[] = {2, 1, 1, 1, 1, 0, 1};
    collector cs[7];
    gs_cdc_sub *subs[7];
    for (int i = 0; i < 7; i++) {
        collector_init(&cs[i]);
        subs[i] = subscribe(db, "t", filters[i], 0, &cs[i]);
    }
    collector done;
    collector_init(&done);
    gs_cdc_sub *sd = subscribe(db, "t", NULL, 0, &done);
    exec1(db, "INSERT INTO t VALUES (10, 's', 1, 9223372036854775807, x'0AFF')", NULL);
    exec1(db, "INSERT INTO t VALUES (11, NULL, 1, 9223372036854775806, x'0AFE')", NULL);
    expect_events(&done, 2);
    for (int i = 0; i < 7; i++) {
        size_t got = wait_events(&cs[i], expect[i], 2000);
        cr_assert_eq(got, expect[i], "filter %s: %zu events", filters[i], got);
        gs_db_cdc_unsubscribe(db, subs[i]);
        collector_free(&cs[i]);
    }
    gs_db_cdc_unsubscribe(db, sd);
    collector_free(&done);
    gs_db_free(db);
}

/* ---- resume and resync ---- */

Test(cdc, resume_replays_exactly_the_missed_changes)
{
    gs_database *db = open_db();
    exec1(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", NULL);
    exec1(db, "CREATE TABLE noise (id INTEGER PRIMARY KEY)", NULL);
    watch(db, "noise");
    collector c;
    collector_init(&c);
    gs_cdc_subscribed info;
    gs_cdc_sub *sub = subscribe_full(db, "t", NULL, 0, 0, NULL, 1, &c, &info);
    cr_assert_eq(info.live_seq, 0);
    cr_assert_eq(info.resync, 0);
    char epoch[64];
    snprintf(epoch, sizeof epoch, "%s", info.epoch);
    cr_assert_eq(strlen(epoch), 32);
    for (int i = 0; i < 3; i++) {
        char p[32];
        snprintf(p, sizeof p, "[%d]", i);
        exec1(db, "INSERT INTO t (id) VALUES (?)", p);
    }
    expect_events(&c, 3);
    json_t *e = event(&c, 2);
    uint64_t cursor = strtoull(sget(e, "seq"), NULL, 10);
    json_decref(e);
    gs_db_cdc_unsubscribe(db, sub);

    /* missed while away: two transactions, noise in between */
    const char *sqls[] = {"INSERT INTO t (id) VALUES (10)", "INSERT INTO noise VALUES (1)",
                          "INSERT INTO t (id) VALUES (11)"};
    run_req(db, GS_DB_TRANSACTION, sqls, NULL, 3, NULL);
    exec1(db, "UPDATE t SET v = 'x' WHERE id = 0", NULL);
    uint64_t max;
    gs_db_cdc_position(db, NULL, &max);

    collector r;
    collector_init(&r);
    sub = subscribe_full(db, "t", NULL, 1, cursor, epoch, 1, &r, &info);
    cr_assert_eq(info.resync, 0);
    cr_assert_eq(info.live_seq, max);
    cr_assert_str_eq(info.epoch, epoch);
    exec1(db, "INSERT INTO t (id) VALUES (20)", NULL); /* live, after the replay */
    expect_events(&r, 4);
    cr_assert_eq(wait_events(&r, 5, 200), 4, "no duplicate");
    const char *rows[] = {"10", "11", "0", "20"};
    const int ends[] = {0, 1, 1, 1};
    uint64_t prev = cursor;
    for (int i = 0; i < 4; i++) {
        e = event(&r, (size_t)i);
        cr_assert_str_eq(sget(e, "rowId"), rows[i], "event %d", i);
        cr_assert_eq(json_is_true(json_object_get(e, "txEnd")), ends[i], "event %d txEnd", i);
        uint64_t seq = strtoull(sget(e, "seq"), NULL, 10);
        cr_assert_gt(seq, prev);
        prev = seq;
        json_decref(e);
    }
    gs_db_cdc_unsubscribe(db, sub);

    /* a cursor at the end replays nothing; one beyond it is taken as the end */
    collector z;
    collector_init(&z);
    gs_db_cdc_position(db, NULL, &max);
    sub = subscribe_full(db, "t", NULL, 1, max + 100, NULL, 0, &z, &info);
    cr_assert_eq(info.resync, 0);
    cr_assert_eq(info.live_seq, max);
    exec1(db, "INSERT INTO t (id) VALUES (30)", NULL);
    expect_events(&z, 1);
    e = event(&z, 0);
    cr_assert_str_eq(sget(e, "rowId"), "30");
    json_decref(e);
    gs_db_cdc_unsubscribe(db, sub);
    gs_db_free(db);
    collector_free(&c);
    collector_free(&r);
    collector_free(&z);
}

Test(cdc, foreign_epoch_and_pruned_cursor_resync)
{
    gs_db_options o;
    gs_db_options_default(&o);
    o.cdc_retention_ms = 1;
    gs_database *db = open_db_with(&o);
    exec1(db, "CREATE TABLE t (id INTEGER PRIMARY KEY)", NULL);
    watch(db, "t");
    for (int i = 0; i < 5; i++) {
        char p[32];
        snprintf(p, sizeof p, "[%d]", i);
        exec1(db, "INSERT INTO t (id) VALUES (?)", p);
    }
    collector c;
    collector_init(&c);
    gs_cdc_subscribed info;
    /* foreign epoch: no replay, live from the end */
    gs_cdc_sub *sub =
        subscribe_full(db, "t", NULL, 1, 1, "0123456789abcdef0123456789abcdef", 1, &c, &info);
    cr_assert_eq(info.resync, 1);
    cr_assert_eq(info.live_seq, 5);
    exec1(db, "INSERT INTO t (id) VALUES (100)", NULL);
    expect_events(&c, 1);
    json_t *e = event(&c, 0);
    cr_assert_str_eq(sget(e, "rowId"), "100", "no foreign replay");
    json_decref(e);
    gs_db_cdc_unsubscribe(db, sub);

    /* prune: rows older than 1 ms go once nobody holds them */
    gs_error err;
    int64_t deadline = gs_test_now_ms() + WAIT_MS;
    while (sql_int("SELECT count(*) FROM _sirannon_changes") > 0 && gs_test_now_ms() < deadline) {
        gs_error_init(&err);
        cr_assert_eq(gs_cdc_prune_now(db, &err), GS_OK, "%s", err.message);
        if (sql_int("SELECT count(*) FROM _sirannon_changes") > 0)
            nap_us(2000); /* the rows must age past the 1 ms window */
    }
    cr_assert_eq(sql_int("SELECT count(*) FROM _sirannon_changes"), 0);
    cr_assert_eq(sql_int("SELECT value FROM _sirannon_meta WHERE key = 'cdc_pruned_seq'"), 6);
    exec1(db, "INSERT INTO t (id) VALUES (101)", NULL);

    char epoch[64];
    uint64_t max;
    gs_db_cdc_position(db, epoch, &max);
    cr_assert_eq(max, 7);
    collector r;
    collector_init(&r);
    sub = subscribe_full(db, "t", NULL, 1, 2, epoch, 1, &r, &info);
    cr_assert_eq(info.resync, 1, "cursor below the retained history");
    cr_assert_eq(info.live_seq, 7);
    gs_db_cdc_unsubscribe(db, sub);
    /* a cursor at the pruned boundary is still whole */
    collector ok;
    collector_init(&ok);
    sub = subscribe_full(db, "t", NULL, 1, 6, epoch, 1, &ok, &info);
    cr_assert_eq(info.resync, 0);
    expect_events(&ok, 1);
    e = event(&ok, 0);
    cr_assert_str_eq(sget(e, "rowId"), "101");
    json_decref(e);
    gs_db_cdc_unsubscribe(db, sub);
    gs_db_free(db);

    /* the prune boundary survives a restart */
    db = open_db_with(&o);
    collector r2;
    collector_init(&r2);
    sub = subscribe_full(db, "t", NULL, 1, 3, epoch, 0, &r2, &info);
    cr_assert_eq(info.resync, 1);
    gs_db_cdc_unsubscribe(db, sub);
    gs_db_free(db);
    collector_free(&c);
    collector_free(&r);
    collector_free(&ok);
    collector_free(&r2);
}

Test(cdc, retention_keeps_what_a_resuming_subscriber_needs)
{
    gs_db_options o;
    gs_db_options_default(&o);
    o.cdc_retention_ms = 1;
    gs_database *db = open_db_with(&o);
    exec1(db, "CREATE TABLE t (id INTEGER PRIMARY KEY)", NULL);
    watch(db, "t");
    for (int i = 0; i < 3; i++) {
        char p[32];
        snprintf(p, sizeof p, "[%d]", i);
        exec1(db, "INSERT INTO t (id) VALUES (?)", p);
    }
    /* a slow subscriber resuming from 0 holds retention below its cursor */
    collector c;
    collector_init(&c);
    c.delay_us = 20000;
    gs_cdc_subscribed info;
    gs_cdc_sub *sub = subscribe_full(db, "t", NULL, 1, 0, NULL, 0, &c, &info);
    cr_assert_eq(info.resync, 0);
    nap_us(3000); /* the rows age past the window */
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_cdc_prune_now(db, &err), GS_OK);
    expect_events(&c, 3);
    gs_db_cdc_unsubscribe(db, sub);
    gs_db_free(db);
    collector_free(&c);
}

/* ---- unsubscribe and close while delivering ---- */

typedef struct unsub_arg {
    gs_database *db;
    gs_cdc_sub *sub;
    collector *c;
} unsub_arg;

Test(cdc, unsubscribe_during_delivery)
{
    gs_database *db = open_db();
    exec1(db, "CREATE TABLE t (id INTEGER PRIMARY KEY)", NULL);
    collector slow, self, probe;
    collector_init(&slow);
    collector_init(&self);
    collector_init(&probe);
    slow.delay_us = 2000;
    gs_cdc_sub *s1 = subscribe(db, "t", NULL, 0, &slow);
    /* self unsubscribes from its own first callback */
    self.db = db;
    self.unsubscribe_self = 1;
    pthread_mutex_lock(&self.m);
    self.self = subscribe(db, "t", NULL, 1, &self);
    pthread_mutex_unlock(&self.m);
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_putc(&b, '[');
    for (int i = 0; i < 300; i++)
        gs_buf_printf(&b, "%s[%d]", i ? "," : "", i);
    gs_buf_putc(&b, ']');
    const char *sql = "INSERT INTO t (id) VALUES (?)";
    run_req(db, GS_DB_BATCH, &sql, NULL, 1, b.data);
    gs_buf_free(&b);
    expect_events(&slow, 5);
    gs_db_cdc_unsubscribe(db, s1); /* from this thread, mid-delivery */
    pthread_mutex_lock(&slow.m);
    slow.unsubscribed = 1;
    size_t at_unsub = slow.n;
    pthread_mutex_unlock(&slow.m);
    cr_assert_lt(at_unsub, 300, "unsubscribed while the read was still being delivered");
    /* the feed goes on: a later change reaches a new subscriber, and nothing more reaches the
     * unsubscribed ones */
    gs_cdc_sub *s3 = subscribe(db, "t", NULL, 0, &probe);
    exec1(db, "INSERT INTO t (id) VALUES (1000)", NULL);
    expect_events(&probe, 1);
    pthread_mutex_lock(&slow.m);
    cr_assert_eq(slow.violations, 0, "a callback ran after unsubscribe returned");
    pthread_mutex_unlock(&slow.m);
    cr_assert_eq(wait_events(&self, 2, 100), 1, "self-unsubscribe stops delivery at once");
    cr_assert_eq(gs_db_cdc_subscriber_count(db), 1);
    gs_db_cdc_unsubscribe(db, s3);
    cr_assert_eq(gs_db_cdc_subscriber_count(db), 0);
    gs_db_free(db);
    collector_free(&slow);
    collector_free(&self);
    collector_free(&probe);
}

Test(cdc, close_with_subscribers)
{
    gs_database *db = open_db();
    exec1(db, "CREATE TABLE t (id INTEGER PRIMARY KEY)", NULL);
    collector a, b2;
    collector_init(&a);
    collector_init(&b2);
    a.delay_us = 1000;
    gs_cdc_sub *sa = subscribe(db, "t", NULL, 1, &a);
    gs_cdc_sub *sb = subscribe(db, "t", "{\"id\":5}", 0, &b2);
    (void)sb;
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_putc(&b, '[');
    for (int i = 0; i < 500; i++)
        gs_buf_printf(&b, "%s[%d]", i ? "," : "", i);
    gs_buf_putc(&b, ']');
    const char *sql = "INSERT INTO t (id) VALUES (?)";
    run_req(db, GS_DB_BATCH, &sql, NULL, 1, b.data);
    gs_buf_free(&b);
    expect_events(&a, 3);
    gs_db_close(db); /* while delivering */
    pthread_mutex_lock(&a.m);
    a.unsubscribed = 1; /* no callback after close returned */
    pthread_mutex_unlock(&a.m);
    /* after close: subscribe is refused, unsubscribe is safe */
    gs_cdc_subscribe_request req = {.table = "t", .on_event = collect, .user = &a};
    gs_cdc_sub *x;
    gs_cdc_subscribed info;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_cdc_subscribe(db, &req, &x, &info, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "DATABASE_CLOSED");
    gs_db_cdc_unsubscribe(db, sa);
    cr_assert_eq(a.violations, 0);
    gs_db_free(db); /* frees sb, still subscribed */
    collector_free(&a);
    collector_free(&b2);
}

/* ---- write stamping ---- */

typedef struct gate {
    pthread_mutex_t m;
    pthread_cond_t c;
    int entered, open;
} gate;

static gs_status gate_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)conn;
    (void)err;
    gate *g = user;
    int64_t deadline = gs_test_now_ms() + WAIT_MS;
    pthread_mutex_lock(&g->m);
    g->entered = 1;
    pthread_cond_broadcast(&g->c);
    while (!g->open && gs_test_now_ms() < deadline) {
        struct timespec ts = gs_test_realtime_in(20);
        pthread_cond_timedwait(&g->c, &g->m, &ts);
    }
    pthread_mutex_unlock(&g->m);
    gs_buf_puts(out, "null");
    return GS_OK;
}

Test(cdc, stamping_one_tx_per_unit_in_a_group)
{
    gs_database *db = open_db();
    exec1(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)", NULL);
    exec1(db, "INSERT INTO t VALUES (1000, 0)", NULL); /* before anyone subscribes */
    watch(db, "t");
    exec1(db, "INSERT INTO t VALUES (1001, 0)", NULL); /* watched, not yet stamped */
    char *unstamped = sql_text("SELECT node_id || tx_id || hlc FROM _sirannon_changes");
    cr_assert_str_eq(unstamped, "");
    free(unstamped);
    collector c;
    collector_init(&c);
    gs_cdc_sub *sub = subscribe(db, "t", NULL, 1, &c);

    /* hold the writer so the next units queue up and run as one group */
    gate g = {.entered = 0, .open = 0};
    pthread_mutex_init(&g.m, NULL);
    pthread_cond_init(&g.c, NULL);
    waiter gw;
    waiter_init(&gw);
    gs_error err;
    cr_assert_eq(gs_db_writer_call(db, gate_fn, &g, on_done, &gw, &err), GS_OK);
    pthread_mutex_lock(&g.m);
    int64_t deadline = gs_test_now_ms() + WAIT_MS;
    while (!g.entered && gs_test_now_ms() < deadline) {
        struct timespec ts = gs_test_realtime_in(20);
        pthread_cond_timedwait(&g.c, &g.m, &ts);
    }
    pthread_mutex_unlock(&g.m);
    cr_assert(g.entered);
    gs_db_stats before;
    gs_db_get_stats(db, &before);

    waiter w;
    waiter_init(&w);
    const char *t3[] = {"INSERT INTO t VALUES (1, 1)", "INSERT INTO t VALUES (2, 1)",
                        "UPDATE t SET v = 2 WHERE id = 1"};
    cr_assert_eq(submit(db, GS_DB_TRANSACTION, t3, NULL, 3, NULL, &w, &err), GS_OK);
    const char *one = "INSERT INTO t VALUES (3, 1)";
    cr_assert_eq(submit(db, GS_DB_EXECUTE, &one, NULL, 1, NULL, &w, &err), GS_OK);
    const char *bad = "INSERT INTO t VALUES (1, 9)"; /* fails: rolled back alone, no stamp */
    cr_assert_eq(submit(db, GS_DB_EXECUTE, &bad, NULL, 1, NULL, &w, &err), GS_OK);
    const char *bsql = "INSERT INTO t VALUES (?, 5)";
    cr_assert_eq(submit(db, GS_DB_BATCH, &bsql, NULL, 1, "[[4],[5]]", &w, &err), GS_OK);
    pthread_mutex_lock(&g.m);
    g.open = 1;
    pthread_cond_broadcast(&g.c);
    pthread_mutex_unlock(&g.m);
    wait_calls(&w, 4);
    wait_calls(&gw, 1);
    gs_db_stats after;
    gs_db_get_stats(db, &after);
    cr_assert_geq(after.max_group_units, 4, "the four units ran as one group");
    cr_assert_eq(after.groups, before.groups + 1);

    expect_events(&c, 6);
    cr_assert_eq(wait_events(&c, 7, 200), 6);
    json_t *e[6];
    for (int i = 0; i < 6; i++)
        e[i] = event(&c, (size_t)i);
    /* units: {0,1,2} {3} {4,5} */
    const int unit[] = {0, 0, 0, 1, 2, 2};
    for (int i = 0; i < 6; i++) {
        cr_assert_str_eq(sget(e[i], "origin"), "node-x");
        const char *tx = sget(e[i], "txId");
        cr_assert_eq(strlen(tx), 32);
        cr_assert_eq(strspn(tx, "0123456789abcdef"), 32);
        const char *hlc = sget(e[i], "hlc");
        cr_assert_not_null(strstr(hlc, "-node-x"), "%s", hlc);
        for (int k = 0; k < i; k++) {
            int same = unit[k] == unit[i];
            cr_assert_eq(strcmp(sget(e[k], "txId"), tx) == 0, same, "txId %d vs %d", k, i);
            cr_assert_eq(strcmp(sget(e[k], "hlc"), hlc) == 0, same, "hlc %d vs %d", k, i);
            cr_assert_leq(strcmp(sget(e[k], "hlc"), hlc), 0, "hlc monotonic");
        }
        cr_assert_eq(json_is_true(json_object_get(e[i], "txEnd")), i == 2 || i == 3 || i == 5);
    }
    /* the clock is persisted with the last stamp */
    char *persisted = sql_text("SELECT value FROM _sirannon_meta WHERE key = 'hlc_clock'");
    cr_assert_str_eq(persisted, sget(e[5], "hlc"));
    free(persisted);
    char last_hlc[GS_HLC_MAX_LEN];
    snprintf(last_hlc, sizeof last_hlc, "%s", sget(e[5], "hlc"));
    for (int i = 0; i < 6; i++)
        json_decref(e[i]);
    /* rows written before the subscription stay unstamped */
    cr_assert_eq(sql_int("SELECT count(*) FROM _sirannon_changes WHERE tx_id = ''"), 1);

    /* a lone write and a bulk load are stamped too */
    exec1(db, "UPDATE t SET v = 7 WHERE id = 3", NULL);
    const char *lsql = "INSERT INTO t VALUES (?, 8)";
    waiter lw;
    waiter_init(&lw);
    gs_db_stmt ls = {.sql = lsql, .params = NULL};
    json_t *lb = gs_test_parse_json("[[50],[51]]");
    gs_db_request lr = {.kind = GS_DB_LOAD,
                        .stmts = &ls,
                        .stmt_count = 1,
                        .params_batch = lb,
                        .durability = "normal",
                        .checkpoint = 0,
                        .done = on_done,
                        .user = &lw};
    cr_assert_eq(gs_db_submit(db, &lr, &err), GS_OK);
    json_decref(lb);
    wait_calls(&lw, 1);
    cr_assert_eq(lw.status, GS_OK, "%s", lw.message);
    expect_events(&c, 9);
    json_t *u = event(&c, 6), *l1 = event(&c, 7), *l2 = event(&c, 8);
    cr_assert_not_null(sget(u, "txId"));
    cr_assert(json_is_true(json_object_get(u, "txEnd")));
    cr_assert_str_eq(sget(l1, "txId"), sget(l2, "txId"));
    cr_assert_str_neq(sget(l1, "txId"), sget(u, "txId"));
    cr_assert_gt(strcmp(sget(u, "hlc"), last_hlc), 0);
    cr_assert_gt(strcmp(sget(l1, "hlc"), sget(u, "hlc")), 0);
    cr_assert_null(json_object_get(l1, "txEnd"));
    cr_assert(json_is_true(json_object_get(l2, "txEnd")));
    char final_hlc[GS_HLC_MAX_LEN];
    snprintf(final_hlc, sizeof final_hlc, "%s", sget(l2, "hlc"));
    json_decref(u);
    json_decref(l1);
    json_decref(l2);
    gs_db_cdc_unsubscribe(db, sub);
    /* stamping stays on with nobody subscribed */
    exec1(db, "INSERT INTO t VALUES (60, 0)", NULL);
    cr_assert_eq(sql_int("SELECT count(*) FROM _sirannon_changes WHERE tx_id = ''"), 1);
    gs_db_free(db);

    /* a restart never moves the clock backwards */
    db = open_db();
    collector c2;
    collector_init(&c2);
    sub = subscribe(db, "t", NULL, 0, &c2);
    exec1(db, "INSERT INTO t VALUES (70, 0)", NULL);
    expect_events(&c2, 1);
    json_t *r = event(&c2, 0);
    cr_assert_gt(strcmp(sget(r, "hlc"), final_hlc), 0);
    json_decref(r);
    gs_db_cdc_unsubscribe(db, sub);
    gs_db_free(db);
    waiter_free(&w);
    waiter_free(&gw);
    waiter_free(&lw);
    pthread_mutex_destroy(&g.m);
    pthread_cond_destroy(&g.c);
    collector_free(&c);
    collector_free(&c2);
}

Test(cdc, changes_from_another_process_arrive_by_the_fallback_poll)
{
    gs_db_options o;
    gs_db_options_default(&o);
    o.cdc_fallback_poll_ms = 50;
    gs_database *db = open_db_with(&o);
    exec1(db, "CREATE TABLE t (id INTEGER PRIMARY KEY)", NULL);
    collector c;
    collector_init(&c);
    gs_cdc_sub *sub = subscribe(db, "t", NULL, 1, &c);
    sqlite3 *s;
    cr_assert_eq(sqlite3_open(dbpath, &s), SQLITE_OK);
    sqlite3_busy_timeout(s, 5000);
    cr_assert_eq(sqlite3_exec(s, "INSERT INTO t VALUES (1)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(s);
    expect_events(&c, 1);
    json_t *e = event(&c, 0);
    cr_assert_str_eq(sget(e, "rowId"), "1");
    cr_assert_null(json_object_get(e, "txId"), "unstamped: another process wrote it");
    cr_assert(json_is_true(json_object_get(e, "txEnd")), "its own transaction, marked");
    json_decref(e);
    gs_db_cdc_unsubscribe(db, sub);
    gs_db_free(db);
    collector_free(&c);
}

/* ---- latency (informational) ---- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t *g_committed; /* row id -> when its write was answered (us) */

static void commit_done(void *user, const gs_db_reply *r)
{
    (void)r;
    g_committed[(intptr_t)user] = now_us();
}

Test(cdc, delivery_latency_is_reported)
{
    gs_database *db = open_db();
    exec1(db, "CREATE TABLE t (id INTEGER PRIMARY KEY)", NULL);
    collector c;
    collector_init(&c);
    gs_cdc_sub *sub = subscribe(db, "t", NULL, 1, &c);
    enum { N = 1000 };
    int64_t *sent = calloc(N, sizeof *sent);
    g_committed = calloc(N, sizeof *g_committed);
    const char *sql = "INSERT INTO t (id) VALUES (?)";
    for (int i = 0; i < N; i++) {
        char p[32];
        snprintf(p, sizeof p, "[%d]", i);
        gs_db_stmt st = {.sql = sql, .params = gs_test_parse_json(p)};
        gs_db_request req = {.kind = GS_DB_EXECUTE,
                             .stmts = &st,
                             .stmt_count = 1,
                             .done = commit_done,
                             .user = (void *)(intptr_t)i};
        gs_error err;
        sent[i] = now_us();
        cr_assert_eq(gs_db_submit(db, &req, &err), GS_OK);
        json_decref(st.params);
        nap_us(1000); /* pace: about 1,000 writes a second */
    }
    expect_events(&c, N);
    int64_t *lat = calloc(N, sizeof *lat), *feed = calloc(N, sizeof *feed);
    for (int i = 0; i < N; i++) {
        json_t *e = event(&c, (size_t)i);
        int id = atoi(sget(e, "rowId"));
        lat[i] = c.evs[i].at_us - sent[id];
        feed[i] = c.evs[i].at_us - g_committed[id];
        json_decref(e);
    }
    qsort(lat, N, sizeof *lat, cmp_i64);
    qsort(feed, N, sizeof *feed, cmp_i64);
    printf("cdc delivery latency, %d writes at ~1000/s: submit -> event p50 %.2f ms, p99 %.2f "
           "ms, max %.2f ms; commit answered -> event p50 %.2f ms, p99 %.2f ms\n",
           N, lat[N / 2] / 1000.0, lat[N * 99 / 100] / 1000.0, lat[N - 1] / 1000.0,
           feed[N / 2] / 1000.0, feed[N * 99 / 100] / 1000.0);
    free(sent);
    free(lat);
    free(feed);
    free(g_committed);
    gs_db_cdc_unsubscribe(db, sub);
    gs_db_free(db);
    collector_free(&c);
}
