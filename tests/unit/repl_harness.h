/*
 * A replication cluster in one process for the engine tests: each node is a real file
 * database (gs_db_open), the built-in memory transport on a shared bus, the built-in lww
 * resolver and a replication engine. Writes go through gs_db_submit / gs_api_repl_submit as
 * the api layer sends them. Every wait is bounded.
 */
#ifndef GS_TESTS_UNIT_REPL_HARNESS_H
#define GS_TESTS_UNIT_REPL_HARNESS_H

#include "test_support.h"

#include "api/api_internal.h"
#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/log.h"
#include "config/config.h"
#include "db/database.h"
#include "plugin/host_standalone.h"
#include "plugin/loader.h"
#include "repl/engine.h"

#include <criterion/criterion.h>
#include <gatestream/host.h>
#include <gatestream/repl_transport.h>
#include <gatestream/resolver.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static gs_host h_host;

static void h_host_init(void)
{
    gs_host_init_standalone(&h_host);
}

typedef struct tnode {
    char id[32];
    char path[PATH_MAX];
    gs_database *db;
    gs_plugin *tp; /* memory transport */
    gs_cfg_doc *tdoc;
    gs_cfg_arena tarena;
    void *tcfg;
    void *tinst;
    gs_plugin *rp; /* lww */
    void *rcfg;
    void *rinst;
    gs_repl_engine *e;
} tnode;

static int64_t h_retention_ms; /* > 0: cdc_retention_ms of the databases tnode_open opens */

static void tnode_open(tnode *n, const char *dir, const char *id)
{
    memset(n, 0, sizeof *n);
    snprintf(n->id, sizeof n->id, "%s", id);
    snprintf(n->path, sizeof n->path, "%s/%s.db", dir, id);
    gs_db_options o;
    gs_db_options_default(&o);
    o.node_id = n->id;
    o.read_pool_size = 2;
    if (h_retention_ms > 0)
        o.cdc_retention_ms = h_retention_ms;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_open(id, n->path, &o, &n->db, &err), GS_OK, "open %s: %s", id, err.message);
}

/* Start replication. `transport_yaml` is the memory transport's config (bus, peers...). */
static void tnode_start(tnode *n, const char *role, const gs_repl_peer_cfg *peers, size_t npeers,
                        const char *transport_yaml, const gs_repl_options *tweak)
{
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_plugin_load_builtin("memory", "memory", GS_KIND_REPL_TRANSPORT, &n->tp, &err),
                 GS_OK, "%s", err.message);
    cr_assert(n->tp, "the memory transport is built in");
    const gs_plugin_descriptor *d = n->tp->desc;
    cr_assert_eq(
        gs_cfg_load_string(transport_yaml, strlen(transport_yaml), "memory.yaml", &n->tdoc, &err),
        GS_OK, "%s", err.message);
    n->tcfg = gs_calloc(1, d->config_struct_size ? d->config_struct_size : 1);
    cr_assert_eq(gs_cfg_fill(n->tdoc, n->tdoc->root, "memory", d->config_keys, d->config_key_count,
                             d->config_key_size, n->tcfg, &n->tarena, &err),
                 GS_OK, "%s", err.message);
    const gs_repl_transport_vtable *tv = d->vtable;
    cr_assert_eq(tv->create(&h_host, n->tcfg, n->id, &n->tinst, &err), GS_OK, "%s", err.message);

    cr_assert_eq(gs_plugin_load_builtin("lww", "lww", GS_KIND_RESOLVER, &n->rp, &err), GS_OK, "%s",
                 err.message);
    cr_assert(n->rp, "lww is built in");
    n->rcfg = gs_calloc(1, n->rp->desc->config_struct_size ? n->rp->desc->config_struct_size : 1);
    const gs_resolver_vtable *rv = n->rp->desc->vtable;
    cr_assert_eq(rv->create(&h_host, n->rcfg, &n->rinst, &err), GS_OK, "%s", err.message);

    gs_repl_options o;
    if (tweak)
        o = *tweak;
    else
        gs_repl_options_default(&o);
    o.node_id = n->id;
    o.role = role;
    o.peers = peers;
    o.npeers = npeers;
    o.transport = tv;
    o.transport_instance = n->tinst;
    o.default_resolver.vt = rv;
    o.default_resolver.instance = n->rinst;
    cr_assert_eq(gs_repl_engine_start(n->db, &o, &n->e, &err), GS_OK, "start %s: %s", n->id,
                 err.message);
}

/* Stop replication (the database stays open). */
static void tnode_stop(tnode *n)
{
    if (n->e) {
        gs_repl_engine_free(n->e);
        n->e = NULL;
    }
    if (n->tinst) {
        ((const gs_repl_transport_vtable *)n->tp->desc->vtable)->destroy(n->tinst);
        n->tinst = NULL;
    }
    if (n->rinst) {
        ((const gs_resolver_vtable *)n->rp->desc->vtable)->destroy(n->rinst);
        n->rinst = NULL;
    }
    gs_cfg_arena_free(&n->tarena);
    gs_cfg_free(n->tdoc);
    n->tdoc = NULL;
    gs_free(n->tcfg);
    gs_free(n->rcfg);
    n->tcfg = n->rcfg = NULL;
    gs_plugin_unload(n->tp);
    gs_plugin_unload(n->rp);
    n->tp = n->rp = NULL;
}

static void tnode_close(tnode *n)
{
    tnode_stop(n);
    if (n->db) {
        gs_db_close(n->db);
        gs_db_free(n->db);
        n->db = NULL;
    }
}

/* Open node-a, node-b and node-c (no engines yet) under dir. */
static inline void open_cluster(tnode n[3], const char *dir)
{
    tnode_open(&n[0], dir, "node-a");
    tnode_open(&n[1], dir, "node-b");
    tnode_open(&n[2], dir, "node-c");
}

static inline void close_cluster(tnode n[3])
{
    for (int i = 0; i < 3; i++)
        tnode_close(&n[i]);
}

/* Send a fault-control command to the memory transport of n (see transports/memory). */
static inline void tnode_control(tnode *n, const char *cmd)
{
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(((const gs_repl_transport_vtable *)n->tp->desc->vtable)
                     ->send(n->tinst, "$control", 0, 0, (const uint8_t *)cmd, strlen(cmd), &err),
                 GS_OK, "control '%s': %s", cmd, err.message);
}

/* ---- synchronous submission ---- */

typedef struct waiter {
    pthread_mutex_t m;
    pthread_cond_t c;
    int done;
    gs_status st;
    gs_error err;
    char *json;
} waiter;

static void waiter_done(void *user, const gs_db_reply *r)
{
    waiter *w = user;
    pthread_mutex_lock(&w->m);
    w->st = r->status;
    if (r->status == GS_OK)
        w->json = strndup(r->json ? r->json : "", r->json_len);
    else
        gs_error_copy(&w->err, &r->err);
    w->done = 1;
    pthread_cond_signal(&w->c);
    pthread_mutex_unlock(&w->m);
}

/* Run req (its done/user are replaced) through the replication-aware path and wait for the
 * answer (bounded: 60 s); returns the status, fills err/json (free it; NULL: not wanted). */
static inline gs_status submit_request_wait(gs_database *db, gs_db_request req,
                                            json_t *write_concern, gs_error *err, char **json)
{
    waiter w;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.m, NULL);
    pthread_cond_init(&w.c, NULL);
    gs_error_init(&w.err);
    req.done = waiter_done;
    req.user = &w;
    gs_status rc = gs_api_repl_submit(db, &req, write_concern, err);
    if (rc == GS_OK) {
        struct timespec ts = gs_test_realtime_in(60000);
        pthread_mutex_lock(&w.m);
        while (!w.done)
            if (pthread_cond_timedwait(&w.c, &w.m, &ts) != 0)
                break;
        int done = w.done;
        pthread_mutex_unlock(&w.m);
        cr_assert(done, "a request did not complete within 60 s");
        rc = w.st;
        if (rc != GS_OK)
            gs_error_copy(err, &w.err);
    }
    if (json)
        *json = w.json;
    else
        free(w.json);
    pthread_mutex_destroy(&w.m);
    pthread_cond_destroy(&w.c);
    return rc;
}

/* Run one statement through the replication-aware path; returns the status, fills err/json. */
static inline gs_status submit_wait(gs_database *db, gs_db_job_kind kind, const char *sql,
                                    json_t *params, json_t *params_batch, json_t *write_concern,
                                    gs_error *err, char **json)
{
    gs_db_stmt st = {sql, params};
    gs_db_request req;
    memset(&req, 0, sizeof req);
    req.kind = kind;
    req.stmts = &st;
    req.stmt_count = 1;
    req.params_batch = params_batch;
    return submit_request_wait(db, req, write_concern, err, json);
}

static inline void exec_ok(gs_database *db, const char *sql)
{
    gs_error err;
    gs_error_init(&err);
    gs_status st = submit_wait(db, GS_DB_EXECUTE, sql, NULL, NULL, NULL, &err, NULL);
    cr_assert_eq(st, GS_OK, "%s: %s %s", sql, err.code, err.message);
}

/* ---- convergence ---- */

/* Wait until every replica has applied everything the primary committed. */
static inline int wait_converged(tnode *primary, tnode **replicas, size_t n, int64_t timeout_ms)
{
    int64_t deadline = gs_test_now_ms() + timeout_ms;
    while (gs_test_now_ms() < deadline) {
        int64_t head = gs_db_committed_seq(primary->db);
        int ok = 1;
        for (size_t i = 0; i < n; i++)
            ok &= strcmp(gs_repl_sync_phase(replicas[i]->e), "ready") == 0 &&
                  gs_repl_position(replicas[i]->e) >= head;
        if (ok)
            return 1;
        usleep(5000); /* polling a condition, bounded by the deadline */
    }
    return 0;
}

/* A dump of every user table of the file at path: rows in rowid order, values with types. */
static inline char *dump_db(const char *path)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    gs_buf b;
    gs_buf_init(&b);
    sqlite3_stmt *tables = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND "
                                    "name NOT LIKE '\\_sirannon%' ESCAPE '\\' AND name NOT LIKE "
                                    "'sqlite\\_%' ESCAPE '\\' ORDER BY name",
                                    -1, &tables, NULL),
                 SQLITE_OK);
    while (sqlite3_step(tables) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(tables, 0);
        gs_buf_printf(&b, "TABLE %s\n", name);
        char q[512];
        snprintf(q, sizeof q, "SELECT * FROM \"%s\" ORDER BY rowid", name);
        sqlite3_stmt *rows = NULL;
        cr_assert_eq(sqlite3_prepare_v2(db, q, -1, &rows, NULL), SQLITE_OK, "%s",
                     sqlite3_errmsg(db));
        while (sqlite3_step(rows) == SQLITE_ROW) {
            for (int c = 0; c < sqlite3_column_count(rows); c++) {
                switch (sqlite3_column_type(rows, c)) {
                case SQLITE_INTEGER:
                    gs_buf_printf(&b, "i%lld|", (long long)sqlite3_column_int64(rows, c));
                    break;
                case SQLITE_FLOAT:
                    gs_buf_printf(&b, "f%.17g|", sqlite3_column_double(rows, c));
                    break;
                case SQLITE_TEXT: gs_buf_printf(&b, "t%s|", sqlite3_column_text(rows, c)); break;
                case SQLITE_BLOB:
                    gs_buf_puts(&b, "b");
                    gs_buf_hex_upper(&b, sqlite3_column_blob(rows, c),
                                     (size_t)sqlite3_column_bytes(rows, c));
                    gs_buf_puts(&b, "|");
                    break;
                default: gs_buf_puts(&b, "n|"); break;
                }
            }
            gs_buf_putc(&b, '\n');
        }
        sqlite3_finalize(rows);
    }
    sqlite3_finalize(tables);
    sqlite3_close(db);
    size_t len;
    return gs_buf_take(&b, &len);
}

/* Wait until n's engine sees peer `id` connected. */
static inline void wait_connected(tnode *n, const char *id)
{
    int64_t deadline = gs_test_now_ms() + 10000;
    while (gs_test_now_ms() < deadline) {
        gs_repl_peer_info p[8];
        size_t k = gs_repl_peers(n->e, p, 8);
        for (size_t i = 0; i < k && i < 8; i++)
            if (strcmp(p[i].id, id) == 0 && p[i].connected)
                return;
        usleep(2000); /* polling a condition, bounded by the deadline */
    }
    cr_assert_fail("%s never saw %s connected", n->id, id);
}

static inline void assert_same(tnode *a, tnode *b)
{
    char *da = dump_db(a->path), *db = dump_db(b->path);
    cr_assert(da && db);
    size_t la = strlen(da), lb = strlen(db);
    if (la != lb || memcmp(da, db, la) != 0) {
        /* leave both dumps next to the databases for a person to diff */
        char p[PATH_MAX + 16];
        snprintf(p, sizeof p, "%s.dump", a->path);
        FILE *f = fopen(p, "w");
        if (f) {
            fputs(da, f);
            fclose(f);
        }
        snprintf(p, sizeof p, "%s.dump", b->path);
        f = fopen(p, "w");
        if (f) {
            fputs(db, f);
            fclose(f);
        }
    }
    cr_assert(la == lb && memcmp(da, db, la) == 0, "%s and %s differ (%zu vs %zu bytes of dump)",
              a->id, b->id, la, lb);
    gs_free(da);
    gs_free(db);
}

/* The suite set-up every replication test file shares: `dir`, a fresh temporary directory
 * per test (kept when GS_TEST_KEEP is set), the harness host, and the log level (debug when
 * GS_TEST_LOG is set, else `level`). */
#define H_REPL_SUITE(suite, timeout_s, level)                                                      \
    static char dir[PATH_MAX];                                                                     \
    static void setup(void)                                                                        \
    {                                                                                              \
        h_host_init();                                                                             \
        gs_log_set_level(getenv("GS_TEST_LOG") ? GS_LOG_DEBUG : level);                            \
        gs_test_mkdtemp(dir, sizeof dir, #suite);                                                  \
    }                                                                                              \
    static void teardown(void)                                                                     \
    {                                                                                              \
        if (!getenv("GS_TEST_KEEP"))                                                               \
            gs_test_rmtree(dir);                                                                   \
    }                                                                                              \
    TestSuite(suite, .init = setup, .fini = teardown, .timeout = timeout_s);

#endif
