/*
 * The gatestream targets, through libgatestream-client's asynchronous calls:
 *   gatestream-ws    `connections` clients (default 1), each one multiplexed WebSocket with
 *                    every request of its share in flight at once (requests round-robin);
 *   gatestream-http  one client whose asynchronous HTTP pool keeps `connections` keep-alive
 *                    connections (default 32).
 * A read is a query, a write an execute, a read-modify-write a query and then (from its
 * completion) an execute, a new-order one transaction request. The node's durability is its
 * database's `synchronous` setting, chosen by whoever started it (bench/gsbench/run.sh maps
 * full -> synchronous: full, relaxed -> normal). Seeding goes through the load route
 * (durability off, a checkpoint at the end), the node's fastest documented path.
 *
 * Threads: submit runs on the scheduler thread; completions on the library's I/O threads.
 */
#include "target.h"

#include "base/alloc.h"
#include "base/error.h"

#include <gatestream/client.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_WS_CLIENTS 1
#define DEFAULT_HTTP_CONNECTIONS 32
#define SEED_BATCH_BYTES (256 * 1024)

typedef struct gst {
    gs_bench_target_cfg cfg;
    char node_settings[96]; /* what the node reported at open */
    int http;
    int nclients;
    gs_client **clients;
    gs_client_db **dbs;
    atomic_uint next;
    atomic_int outstanding;
    const gs_bench_workload *w;
    gs_bench_done_fn done;
    void *ctx;
} gst;

static gs_status open_client(gst *g, int http, int connections, gs_client **out, gs_client_db **db,
                             gs_error *err)
{
    gs_client_config cc;
    gs_client_config_init(&cc);
    cc.transport = http ? GS_CLIENT_TRANSPORT_HTTP : GS_CLIENT_TRANSPORT_WEBSOCKET;
    cc.mode = GS_CLIENT_MODE_SINGLE;
    cc.auto_reconnect = 0;
    cc.request_timeout_ms = g->cfg.timeout_ms > 0 ? g->cfg.timeout_ms : 10000;
    if (http)
        cc.http_max_connections = connections;
    const char *urls[] = {g->cfg.url};
    if (gs_client_open(urls, 1, &cc, out, err) != GS_OK)
        return GS_ERROR;
    *db = gs_client_database(*out, g->cfg.db && g->cfg.db[0] ? g->cfg.db : "main", err);
    if (!*db) {
        gs_client_close(*out);
        *out = NULL;
        return GS_ERROR;
    }
    return GS_OK;
}

/* One integer or text column of a one-row query, as text. */
static gs_status query_one(gs_client_db *db, const char *sql, char *out, size_t size, gs_error *err)
{
    gs_client_rows *rows = NULL;
    if (gs_client_query(db, sql, NULL, NULL, &rows, err) != GS_OK)
        return GS_ERROR;
    const gs_value *v = gs_client_rows_get(rows, 0, 0);
    if (v->type == GS_VALUE_INT)
        snprintf(out, size, "%lld", (long long)v->u.i);
    else if (v->type == GS_VALUE_TEXT)
        snprintf(out, size, "%.*s", (int)v->u.text.len, v->u.text.ptr);
    else
        snprintf(out, size, "?");
    gs_client_rows_free(rows);
    return GS_OK;
}

/* The node must run the durability asked for: its database's synchronous setting (readers
 * share the writer's) and WAL. A mismatch would compare unlike with unlike. */
static gs_status check_node(gst *g, gs_client_db *db, gs_error *err)
{
    char sync[32], journal[32], version[32];
    if (query_one(db, "PRAGMA synchronous", sync, sizeof sync, err) != GS_OK ||
        query_one(db, "PRAGMA journal_mode", journal, sizeof journal, err) != GS_OK ||
        query_one(db, "SELECT sqlite_version()", version, sizeof version, err) != GS_OK)
        return GS_ERROR;
    const char *want = g->cfg.durability == GS_BENCH_FULL ? "2" : "1";
    if (strcmp(sync, want) != 0 || strcmp(journal, "wal") != 0)
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "the node's database runs synchronous=%s, journal_mode=%s, but "
                            "--durability %s needs synchronous=%s (%s) in WAL mode: start the "
                            "node with `synchronous: %s` (bench/gsbench/run.sh does)",
                            sync, journal, g->cfg.durability == GS_BENCH_FULL ? "full" : "relaxed",
                            want, g->cfg.durability == GS_BENCH_FULL ? "FULL" : "NORMAL",
                            g->cfg.durability == GS_BENCH_FULL ? "full" : "normal");
    snprintf(g->node_settings, sizeof g->node_settings, "SQLite %s, WAL, synchronous=%s", version,
             g->cfg.durability == GS_BENCH_FULL ? "FULL" : "NORMAL");
    return GS_OK;
}

static gs_status gst_open(const gs_bench_target_cfg *cfg, int http, void **self, gs_error *err)
{
    if (!cfg->url || !cfg->url[0])
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "the gatestream targets need --url http://HOST:PORT of a running "
                            "node (bench/gsbench/run.sh starts one)");
    gst *g = gs_calloc(1, sizeof *g);
    if (!g)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    g->cfg = *cfg;
    g->http = http;
    /* Check the node now: a wrong URL fails before any loading. */
    gs_client *c;
    gs_client_db *db;
    if (open_client(g, 1, 1, &c, &db, err) != GS_OK) {
        gs_free(g);
        return GS_ERROR;
    }
    gs_status st = check_node(g, db, err);
    gs_client_close(c);
    if (st != GS_OK) {
        gs_error_prefix(err, "gatestream at %s", cfg->url);
        gs_free(g);
        return GS_ERROR;
    }
    *self = g;
    return GS_OK;
}

static gs_status gst_open_ws(const gs_bench_target_cfg *cfg, void **self, gs_error *err)
{
    return gst_open(cfg, 0, self, err);
}

static gs_status gst_open_http(const gs_bench_target_cfg *cfg, void **self, gs_error *err)
{
    return gst_open(cfg, 1, self, err);
}

static gs_value to_value(const gs_bench_val *v)
{
    switch (v->type) {
    case GS_BV_INT: return gs_client_val_int(v->i);
    case GS_BV_REAL: return gs_client_val_double(v->r);
    case GS_BV_TEXT: return gs_client_val_textn(v->s, v->len);
    default: return gs_client_val_null();
    }
}

static gs_status seed_table(gs_client_db *db, const gs_bench_table *t, int64_t rows, uint64_t seed,
                            gs_error *err)
{
    int64_t n = t->rows(rows);
    if (n == 0)
        return GS_OK;
    char sql[1024];
    gs_bench_insert_sql(t, 0, sql, sizeof sql);
    /* Rows per request: about SEED_BATCH_BYTES of JSON. */
    gs_bench_row *probe = gs_malloc(sizeof *probe);
    if (!probe)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    t->row(seed, 0, probe);
    size_t row_bytes = probe->text_used + 16u * probe->ncols + 8;
    gs_free(probe);
    size_t batch = SEED_BATCH_BYTES / row_bytes;
    if (batch < 1)
        batch = 1;
    gs_bench_row *buf = gs_calloc(batch, sizeof *buf);
    gs_value *vals = gs_calloc(batch * t->ncols, sizeof *vals);
    gs_client_params *params = gs_calloc(batch, sizeof *params);
    gs_status st = GS_OK;
    if (!buf || !vals || !params)
        st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    for (int64_t i = 0; i < n && st == GS_OK;) {
        size_t k = 0;
        for (; k < batch && i < n; k++, i++) {
            t->row(seed, i, &buf[k]);
            for (uint8_t c = 0; c < t->ncols; c++)
                vals[k * t->ncols + c] = to_value(&buf[k].v[c]);
            params[k] = gs_client_positional(&vals[k * t->ncols], t->ncols);
        }
        gs_client_call_opts o;
        gs_client_call_opts_init(&o);
        o.durability = "off";
        o.checkpoint = i == n;
        o.timeout_ms = 120000;
        gs_client_load_result lr;
        st = gs_client_load(db, sql, params, k, &o, &lr, err);
        if (st != GS_OK)
            gs_error_prefix(err, "seeding %s", t->name);
    }
    gs_free(buf);
    gs_free(vals);
    gs_free(params);
    return st;
}

static gs_status gst_load(void *self, const gs_bench_workload *w, int64_t rows, uint64_t seed,
                          gs_error *err)
{
    gst *g = self;
    gs_client *c;
    gs_client_db *db;
    if (open_client(g, 1, 1, &c, &db, err) != GS_OK)
        return GS_ERROR;
    gs_client_call_opts o;
    gs_client_call_opts_init(&o);
    o.timeout_ms = 600000; /* dropping a large table can take a while */
    gs_status st = GS_OK;
    char sql[512];
    gs_client_exec ex;
    for (const char *const *t = w->drop; *t && st == GS_OK; t++) {
        snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", *t);
        st = gs_client_execute(db, sql, NULL, &o, &ex, err);
    }
    for (const char *const *d = w->ddl_sqlite; *d && st == GS_OK; d++)
        st = gs_client_execute(db, *d, NULL, &o, &ex, err);
    for (size_t t = 0; t < w->ntables && st == GS_OK; t++)
        st = seed_table(db, &w->tables[t], rows, seed, err);
    gs_client_close(c);
    return st;
}

static void gst_stop(void *self);

static gs_status gst_start(void *self, const gs_bench_workload *w, gs_bench_done_fn done, void *ctx,
                           gs_error *err)
{
    gst *g = self;
    g->w = w;
    g->done = done;
    g->ctx = ctx;
    atomic_store(&g->next, 0);
    atomic_store(&g->outstanding, 0);
    int conns = g->cfg.connections;
    if (g->http) {
        g->nclients = 1;
        if (conns <= 0)
            conns = DEFAULT_HTTP_CONNECTIONS;
    } else {
        g->nclients = conns > 0 ? conns : DEFAULT_WS_CLIENTS;
    }
    g->clients = gs_calloc((size_t)g->nclients, sizeof *g->clients);
    g->dbs = gs_calloc((size_t)g->nclients, sizeof *g->dbs);
    if (!g->clients || !g->dbs) {
        gst_stop(g);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    for (int i = 0; i < g->nclients; i++) {
        if (open_client(g, g->http, conns, &g->clients[i], &g->dbs[i], err) != GS_OK) {
            gst_stop(g);
            return GS_ERROR;
        }
        /* Connect now (a WebSocket connects on first use), so no measured request pays it. */
        gs_client_rows *rows = NULL;
        if (gs_client_query(g->dbs[i], "SELECT 1", NULL, NULL, &rows, err) != GS_OK) {
            gst_stop(g);
            return GS_ERROR;
        }
        gs_client_rows_free(rows);
    }
    return GS_OK;
}

static void on_answer(void *user, gs_status st, gs_client_response *resp, const gs_error *err);

/* Send the current stage of op; 0 with err filled when the client refused it. */
static int send_stage(gst *g, gs_client_db *db, gs_bench_op *op, gs_error *err)
{
    gs_client_request req;
    gs_value vals[GS_BENCH_MAX_STMTS][GS_BENCH_MAX_PARAMS];
    gs_client_stmt stmts[GS_BENCH_MAX_STMTS];
    if (op->kind == GS_BENCH_TXN) {
        gs_client_request_init(&req, GS_CLIENT_OP_TRANSACTION);
        for (int s = 0; s < op->nstmts; s++) {
            for (int k = 0; k < op->st[s].nparams; k++)
                vals[s][k] = to_value(&op->st[s].p[k]);
            stmts[s].sql = g->w->sql[op->st[s].sql].sqlite;
            stmts[s].params = gs_client_positional(vals[s], op->st[s].nparams);
        }
        req.statements = stmts;
        req.statement_count = op->nstmts;
    } else {
        const gs_bench_stmt *bs = &op->st[op->stage];
        int write = g->w->sql[bs->sql].write;
        gs_client_request_init(&req, write ? GS_CLIENT_OP_EXECUTE : GS_CLIENT_OP_QUERY);
        for (int k = 0; k < bs->nparams; k++)
            vals[0][k] = to_value(&bs->p[k]);
        req.sql = g->w->sql[bs->sql].sqlite;
        req.params = gs_client_positional(vals[0], bs->nparams);
    }
    return gs_client_submit(db, &req, on_answer, op, err) == GS_OK;
}

static void finish(gst *g, gs_bench_op *op, gs_status st, const gs_error *err)
{
    gs_bench_done_fn done = g->done;
    void *ctx = g->ctx;
    atomic_fetch_sub(&g->outstanding, 1);
    done(ctx, op, st, err);
}

static void on_answer(void *user, gs_status st, gs_client_response *resp, const gs_error *err)
{
    (void)resp; /* the library parsed the rows; they are freed when this returns */
    gs_bench_op *op = user;
    gst *g = op->target_data;
    gs_client_db *db = op->target_aux;
    if (st == GS_OK && op->kind == GS_BENCH_RMW && op->stage == 0) {
        op->stage = 1;
        gs_error e;
        gs_error_init(&e);
        if (send_stage(g, db, op, &e))
            return;
        finish(g, op, GS_ERROR, &e);
        return;
    }
    finish(g, op, st, err);
}

static void gst_submit(void *self, gs_bench_op *op)
{
    gst *g = self;
    unsigned i = atomic_fetch_add(&g->next, 1) % (unsigned)g->nclients;
    /* The op remembers the target and the client database it went to, for its answer. */
    op->target_data = g;
    op->target_aux = g->dbs[i];
    op->stage = 0;
    atomic_fetch_add(&g->outstanding, 1);
    gs_error e;
    gs_error_init(&e);
    if (!send_stage(g, g->dbs[i], op, &e))
        finish(g, op, GS_ERROR, &e);
}

static void gst_stop(void *self)
{
    gst *g = self;
    /* Closing fails whatever is still pending; its callbacks run before close returns. */
    if (g->clients)
        for (int i = 0; i < g->nclients; i++)
            gs_client_close(g->clients[i]);
    gs_free(g->clients);
    gs_free(g->dbs);
    g->clients = NULL;
    g->dbs = NULL;
    g->nclients = 0;
}

static void gst_describe(void *self, char *buf, size_t size)
{
    gst *g = self;
    int conns = g->cfg.connections;
    if (g->http)
        snprintf(buf, size,
                 "gatestream (node: %s) over HTTP through libgatestream-client %s (asynchronous "
                 "calls on %d keep-alive connections)",
                 g->node_settings, gs_client_version(),
                 conns > 0 ? conns : DEFAULT_HTTP_CONNECTIONS);
    else
        snprintf(buf, size,
                 "gatestream (node: %s) over WebSocket through libgatestream-client %s (%d "
                 "multiplexed connection%s, every request in flight at once)",
                 g->node_settings, gs_client_version(), conns > 0 ? conns : DEFAULT_WS_CLIENTS,
                 conns > 1 ? "s" : "");
}

static void gst_close(void *self)
{
    gst *g = self;
    if (!g)
        return;
    gst_stop(g);
    gs_free(g);
}

const gs_bench_target_vt gs_bench_target_gs_ws = {
    .name = "gatestream-ws",
    .open = gst_open_ws,
    .load = gst_load,
    .start = gst_start,
    .submit = gst_submit,
    .stop = gst_stop,
    .describe = gst_describe,
    .close = gst_close,
};

const gs_bench_target_vt gs_bench_target_gs_http = {
    .name = "gatestream-http",
    .open = gst_open_http,
    .load = gst_load,
    .start = gst_start,
    .submit = gst_submit,
    .stop = gst_stop,
    .describe = gst_describe,
    .close = gst_close,
};
