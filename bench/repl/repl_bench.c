/*
 * repl_bench: the replication figures of the README, measured in one process with the
 * engine, real file databases and the built-in memory transport (the transport under test
 * for issue 5; network transports have their own figures).
 *
 *   repl_bench [--seconds S] [--rows N] [--dir D] [what...]
 *     single     inserts/s on one database, no replication (the baseline)
 *     capture    inserts/s on one database running as a primary with no replica connected:
 *                what change capture alone costs (triggers, the change log and its indexes,
 *                write stamps), the ceiling of any replicated figure
 *     majority   inserts/s on a 3-node cluster, every write waiting for majority concern
 *     lag        replica lag (commit on the primary -> applied on a replica) at an open-loop
 *                2,000 writes/s: p50/p99/max
 *     sync       first sync of N rows (default 1,000,000) to a new replica, to ready
 *   (no what: all five)
 *
 * Writes are single-row INSERTs submitted the way the api layer submits them
 * (gs_api_repl_submit), --window in flight (64 by default). Output: one line per figure.
 */
#include "api/api_internal.h"
#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"
#include "config/config.h"
#include "db/database.h"
#include "plugin/host_standalone.h"
#include "plugin/loader.h"
#include "repl/engine.h"

#include <gatestream/host.h>
#include <gatestream/repl_transport.h>
#include <gatestream/resolver.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const gs_error *err)
{
    fprintf(stderr, "repl_bench: %s: %s %s\n", what, err ? err->code : "", err ? err->message : "");
    exit(1);
}

static gs_host host;

typedef struct node {
    char id[32];
    char path[PATH_MAX];
    gs_database *db;
    gs_plugin *tp, *rp;
    gs_cfg_doc *doc;
    gs_cfg_arena arena;
    void *tcfg, *rcfg, *tinst, *rinst;
    gs_repl_engine *e;
} node;

static void node_open(node *n, const char *dir, const char *id)
{
    memset(n, 0, sizeof *n);
    snprintf(n->id, sizeof n->id, "%s", id);
    snprintf(n->path, sizeof n->path, "%s/%s.db", dir, id);
    gs_db_options o;
    gs_db_options_default(&o);
    o.node_id = n->id;
    o.max_pending_writes = 100000;
    gs_error err;
    gs_error_init(&err);
    if (gs_db_open(id, n->path, &o, &n->db, &err) != GS_OK)
        die("open", &err);
}

static void node_start(node *n, const char *role, const gs_repl_peer_cfg *peers, size_t np,
                       const char *yaml)
{
    gs_error err;
    gs_error_init(&err);
    if (gs_plugin_load_builtin("memory", "memory", GS_KIND_REPL_TRANSPORT, &n->tp, &err) || !n->tp)
        die("memory transport", &err);
    const gs_plugin_descriptor *d = n->tp->desc;
    if (gs_cfg_load_string(yaml, strlen(yaml), "memory", &n->doc, &err))
        die("transport config", &err);
    n->tcfg = gs_calloc(1, d->config_struct_size);
    if (gs_cfg_fill(n->doc, n->doc->root, "memory", d->config_keys, d->config_key_count,
                    d->config_key_size, n->tcfg, &n->arena, &err))
        die("transport config", &err);
    const gs_repl_transport_vtable *tv = d->vtable;
    if (tv->create(&host, n->tcfg, n->id, &n->tinst, &err))
        die("transport", &err);
    if (gs_plugin_load_builtin("lww", "lww", GS_KIND_RESOLVER, &n->rp, &err) || !n->rp)
        die("lww", &err);
    n->rcfg = gs_calloc(1, n->rp->desc->config_struct_size + 1);
    const gs_resolver_vtable *rv = n->rp->desc->vtable;
    if (rv->create(&host, n->rcfg, &n->rinst, &err))
        die("lww", &err);
    gs_repl_options o;
    gs_repl_options_default(&o);
    o.node_id = n->id;
    o.role = role;
    o.peers = peers;
    o.npeers = np;
    o.transport = tv;
    o.transport_instance = n->tinst;
    o.default_resolver.vt = rv;
    o.default_resolver.instance = n->rinst;
    o.write_concern_timeout_ms = 30000;
    if (gs_repl_engine_start(n->db, &o, &n->e, &err))
        die("engine", &err);
}

static void node_close(node *n)
{
    if (n->e)
        gs_repl_engine_free(n->e);
    if (n->tinst)
        ((const gs_repl_transport_vtable *)n->tp->desc->vtable)->destroy(n->tinst);
    if (n->rinst)
        ((const gs_resolver_vtable *)n->rp->desc->vtable)->destroy(n->rinst);
    gs_cfg_arena_free(&n->arena);
    gs_cfg_free(n->doc);
    gs_free(n->tcfg);
    gs_free(n->rcfg);
    gs_plugin_unload(n->tp);
    gs_plugin_unload(n->rp);
    if (n->db) {
        gs_db_close(n->db);
        gs_db_free(n->db);
    }
}

/* ---- a window of asynchronous writes ---- */

typedef struct window {
    pthread_mutex_t m;
    pthread_cond_t c;
    int inflight;
    long done, failed;
    gs_error first;
} window;

static void w_done(void *user, const gs_db_reply *r)
{
    window *w = user;
    pthread_mutex_lock(&w->m);
    if (r->status != GS_OK && !w->failed++)
        gs_error_copy(&w->first, &r->err);
    w->done++;
    w->inflight--;
    pthread_cond_signal(&w->c);
    pthread_mutex_unlock(&w->m);
}

static void submit_insert(gs_database *db, window *w, long i, json_t *concern)
{
    char name[32];
    snprintf(name, sizeof name, "row %ld", i);
    json_t *params = json_pack("[I,s,I]", (json_int_t)i, name, (json_int_t)(i * 3));
    gs_db_stmt st = {"INSERT INTO t (id, name, v) VALUES (?, ?, ?)", params};
    gs_db_request req;
    memset(&req, 0, sizeof req);
    req.kind = GS_DB_EXECUTE;
    req.stmts = &st;
    req.stmt_count = 1;
    req.done = w_done;
    req.user = w;
    pthread_mutex_lock(&w->m);
    w->inflight++;
    pthread_mutex_unlock(&w->m);
    gs_error err;
    gs_error_init(&err);
    if (gs_api_repl_submit(db, &req, concern, &err) != GS_OK)
        die("submit", &err);
    json_decref(params);
}

static void wait_below(window *w, int n)
{
    pthread_mutex_lock(&w->m);
    while (w->inflight >= n)
        pthread_cond_wait(&w->c, &w->m);
    pthread_mutex_unlock(&w->m);
}

static void exec_sql(gs_database *db, const char *sql)
{
    window w;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.m, NULL);
    pthread_cond_init(&w.c, NULL);
    gs_db_stmt st = {sql, NULL};
    gs_db_request req;
    memset(&req, 0, sizeof req);
    req.kind = GS_DB_EXECUTE;
    req.stmts = &st;
    req.stmt_count = 1;
    req.done = w_done;
    req.user = &w;
    w.inflight = 1;
    gs_error err;
    gs_error_init(&err);
    if (gs_db_submit(db, &req, &err) != GS_OK)
        die(sql, &err);
    wait_below(&w, 1);
    if (w.failed)
        die(sql, &w.first);
}

/* Closed loop with 64 in flight for `seconds`: inserts per second. */
static int window_size = 64;

static double insert_rate(gs_database *db, double seconds, json_t *concern)
{
    window w;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.m, NULL);
    pthread_cond_init(&w.c, NULL);
    double t0 = now_s(), end = t0 + seconds;
    long i = 1;
    while (now_s() < end) {
        wait_below(&w, window_size);
        submit_insert(db, &w, i++, concern);
    }
    wait_below(&w, 1);
    double el = now_s() - t0;
    if (w.failed)
        die("a write failed", &w.first);
    return (double)w.done / el;
}

static const gs_repl_peer_cfg A_PEERS[] = {{"node-b", "replica"}, {"node-c", "replica"}};
static const gs_repl_peer_cfg TO_A[] = {{"node-a", "primary"}};

static void cluster_start(node n[3], const char *dir, const char *bus)
{
    const char *ids[] = {"node-a", "node-b", "node-c"};
    char y[256];
    /* each cluster in a folder of its own: one run measures several of them */
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%.*s/%s", PATH_MAX - 64, dir, bus);
    if (mkdir(sub, 0700) != 0 && errno != EEXIST) {
        perror(sub);
        exit(1);
    }
    for (int i = 0; i < 3; i++)
        node_open(&n[i], sub, ids[i]);
    exec_sql(n[0].db, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, v INTEGER)");
    snprintf(y, sizeof y, "bus: %s\npeers: [node-b, node-c]\n", bus);
    node_start(&n[0], "primary", A_PEERS, 2, y);
    for (int i = 1; i < 3; i++) {
        snprintf(y, sizeof y, "bus: %s\npeers: [node-a]\n", bus);
        node_start(&n[i], "replica", TO_A, 1, y);
    }
    double deadline = now_s() + 60;
    while (now_s() < deadline && (strcmp(gs_repl_sync_phase(n[1].e), "ready") ||
                                  strcmp(gs_repl_sync_phase(n[2].e), "ready")))
        usleep(1000);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- the figures ---- */

static double bench_single(const char *dir, double seconds)
{
    node n;
    node_open(&n, dir, "single");
    exec_sql(n.db, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, v INTEGER)");
    double r = insert_rate(n.db, seconds, NULL);
    printf("single-node inserts: %.0f/s (%d in flight, %.0f s)\n", r, window_size, seconds);
    node_close(&n);
    return r;
}

static double bench_capture(const char *dir, double seconds)
{
    node n;
    node_open(&n, dir, "capture");
    exec_sql(n.db, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, v INTEGER)");
    static const gs_repl_peer_cfg peers[] = {{"capture-b", "replica"}};
    node_start(&n, "primary", peers, 1, "bus: bench-capture\npeers: [capture-b]\n");
    double r = insert_rate(n.db, seconds, NULL);
    printf("single-node inserts with change capture (a primary, no replica): %.0f/s\n", r);
    node_close(&n);
    return r;
}

static double bench_majority(const char *dir, double seconds)
{
    node n[3];
    cluster_start(n, dir, "bench-majority");
    json_t *maj = json_pack("{s:s}", "level", "majority");
    double r = insert_rate(n[0].db, seconds, maj);
    json_decref(maj);
    printf("replicated inserts, majority concern, 3 in-process nodes: %.0f/s\n", r);
    gs_repl_counters ca, cb;
    gs_repl_get_counters(n[0].e, &ca);
    gs_repl_get_counters(n[1].e, &cb);
    fprintf(stderr,
            "  (primary sent %llu batches, %llu retransmits; a replica applied %llu batches, "
            "%llu changes)\n",
            (unsigned long long)ca.batches_sent, (unsigned long long)ca.retransmits,
            (unsigned long long)cb.batches_applied, (unsigned long long)cb.changes_applied);
    for (int i = 2; i >= 0; i--)
        node_close(&n[i]);
    return r;
}

static void bench_lag(const char *dir, double seconds)
{
    node n[3];
    cluster_start(n, dir, "bench-lag");
    size_t cap = (size_t)(seconds * 2000) + 16;
    double *commit_at = calloc(cap + 1, sizeof *commit_at); /* by seq */
    double *lag = calloc(2 * cap + 2, sizeof *lag);         /* two replicas */
    window w;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.m, NULL);
    pthread_cond_init(&w.c, NULL);
    int64_t base = gs_db_committed_seq(n[0].db);
    double t0 = now_s();
    long sent = 0;
    int64_t seen_b = base, seen_c = base;
    size_t nlag = 0;
    /* open loop: write i is due at t0 + i / 2000; between writes, watch the replicas */
    while ((size_t)sent < cap - 16 || seen_b < base + sent || seen_c < base + sent) {
        double t = now_s();
        if ((size_t)sent < cap - 16 && t >= t0 + (double)sent / 2000.0) {
            submit_insert(n[0].db, &w, ++sent, NULL);
            continue;
        }
        int64_t head = gs_db_committed_seq(n[0].db);
        for (int64_t s = base + 1; s <= head && s - base <= (int64_t)cap; s++)
            if (commit_at[s - base] == 0)
                commit_at[s - base] = t;
        int64_t pb = gs_repl_position(n[1].e), pc = gs_repl_position(n[2].e);
        for (; seen_b < pb && seen_b - base < (int64_t)cap; seen_b++)
            if (commit_at[seen_b + 1 - base] > 0)
                lag[nlag++] = t - commit_at[seen_b + 1 - base];
        for (; seen_c < pc && seen_c - base < (int64_t)cap; seen_c++)
            if (commit_at[seen_c + 1 - base] > 0)
                lag[nlag++] = t - commit_at[seen_c + 1 - base];
        if (t - t0 > seconds + 30)
            break;
        usleep(100);
    }
    wait_below(&w, 1);
    qsort(lag, nlag, sizeof *lag, cmp_double);
    if (nlag)
        printf("replica lag at 2000 writes/s (%zu samples over 2 replicas): p50 %.1f ms, "
               "p99 %.1f ms, max %.1f ms\n",
               nlag, lag[nlag / 2] * 1000, lag[(size_t)(nlag * 0.99)] * 1000, lag[nlag - 1] * 1000);
    free(commit_at);
    free(lag);
    for (int i = 2; i >= 0; i--)
        node_close(&n[i]);
}

static void bench_sync(const char *dir, long rows)
{
    node a, b;
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/sync-a.db", dir);
    sqlite3 *db = NULL;
    char sql[512];
    snprintf(sql, sizeof sql,
             "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score "
             "REAL, tag BLOB); WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
             "WHERE x < %ld) INSERT INTO t SELECT x, 'name ' || x, x * 1.5, randomblob(12) FROM "
             "c;",
             rows);
    if (sqlite3_open(path, &db) != SQLITE_OK || sqlite3_exec(db, sql, NULL, NULL, NULL))
        die("filling the primary", NULL);
    sqlite3_close(db);
    static const gs_repl_peer_cfg AP[] = {{"sync-b", "replica"}};
    static const gs_repl_peer_cfg BP[] = {{"sync-a", "primary"}};
    node_open(&a, dir, "sync-a");
    node_start(&a, "primary", AP, 1, "bus: bench-sync\npeers: [sync-b]\n");
    node_open(&b, dir, "sync-b");
    double t0 = now_s();
    node_start(&b, "replica", BP, 1, "bus: bench-sync\npeers: [sync-a]\n");
    while (strcmp(gs_repl_sync_phase(b.e), "ready") && now_s() - t0 < 600)
        usleep(2000);
    printf("first sync of %ld rows to ready: %.1f s\n", rows, now_s() - t0);
    node_close(&b);
    node_close(&a);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

int main(int argc, char **argv)
{
    double seconds = 10;
    long rows = 1000000;
    char dir[PATH_MAX] = "";
    const char *what[8];
    int nwhat = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--rows") && i + 1 < argc)
            rows = atol(argv[++i]);
        else if (!strcmp(argv[i], "--window") && i + 1 < argc)
            window_size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            snprintf(dir, sizeof dir, "%s", argv[++i]);
        else if (argv[i][0] != '-' && nwhat < 8)
            what[nwhat++] = argv[i];
        else {
            fprintf(stderr, "usage: repl_bench [--seconds S] [--rows N] [--window W] [--dir D] "
                            "[single|capture|majority|lag|sync]...\n");
            return 2;
        }
    }
    int own_dir = !dir[0];
    if (own_dir) {
        snprintf(dir, sizeof dir, "/tmp/repl-bench-XXXXXX");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return 1;
        }
    }
    gs_log_set_level(GS_LOG_WARN);
    gs_host_init_standalone(&host);
    int all = nwhat == 0;
    double single = 0, maj = 0, capture = 0;
    for (int k = 0; k < (all ? 1 : nwhat); k++) {
        if (all || !strcmp(what[k], "single"))
            single = bench_single(dir, seconds);
        if (all || !strcmp(what[k], "capture"))
            capture = bench_capture(dir, seconds);
        if (all || !strcmp(what[k], "majority"))
            maj = bench_majority(dir, seconds);
        if (all || !strcmp(what[k], "lag"))
            bench_lag(dir, seconds);
        if (all || !strcmp(what[k], "sync"))
            bench_sync(dir, rows);
    }
    if (single > 0 && maj > 0)
        printf("majority-concern inserts as a fraction of single-node: %.0f%%\n",
               100.0 * maj / single);
    if (capture > 0 && maj > 0)
        printf(
            "majority-concern inserts as a fraction of single-node with change capture: %.0f%%\n",
            100.0 * maj / capture);
    if (own_dir)
        nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
