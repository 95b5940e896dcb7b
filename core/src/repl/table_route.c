/*
 * Per-table modes inside the engine: which changes a node sends and takes (the filters the
 * sender and the applier call), and the routing of a client write by the tables it writes
 * (gs_repl_route_request, engine.h).
 *
 * The tables a request writes are what SQLite's authorizer reports while the statements are
 * prepared (SQLITE_INSERT / UPDATE / DELETE with the table in arg1, outside triggers) on a
 * connection of its own, opened read-only: preparing never runs anything and never takes a
 * write lock, so the writer is not touched and only nodes with table modes pay for it (one
 * prepare per statement). The tables a statement writes depend on its text alone (names
 * resolve in `main`; trigger bodies are not counted), so the answer for each statement text
 * under CACHE_MAX_SQL bytes is remembered in a direct-mapped cache of CACHE_SLOTS entries: a
 * node that sees the same statements again (parameters apart) parses each once. The
 * connection and the cache are serialised by a mutex; any thread may route.
 */
#include "engine_internal.h"

#include "base/alloc.h"
#include "base/log.h"
#include "base/text.h"
#include "repl/log.h"

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define CACHE_SLOTS 256
#define CACHE_MAX_SQL 4096

/* Table names without duplicates (case-insensitive, as SQLite compares them). */
typedef struct name_list {
    char **v;
    size_t n, cap;
    int oom; /* a name could not be stored: the list is incomplete */
} name_list;

typedef struct cached {
    uint64_t hash;
    char *sql; /* NULL: an empty slot */
    name_list names;
} cached;

struct gs_table_route {
    pthread_mutex_t mu;
    sqlite3 *db;
    name_list stmt;    /* filled by the authorizer during one prepare (under mu) */
    name_list targets; /* the tables of the request being routed (under mu) */
    cached cache[CACHE_SLOTS];
};

static void names_add(name_list *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcasecmp(l->v[i], name) == 0)
            return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        char **v = gs_realloc(l->v, cap * sizeof *v);
        if (!v) {
            l->oom = 1;
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = gs_strdup(name))) {
        l->oom = 1;
        return;
    }
    l->n++;
}

static void names_clear(name_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        gs_free(l->v[i]);
    l->n = 0;
    l->oom = 0;
}

static void names_free(name_list *l)
{
    names_clear(l);
    gs_free(l->v);
    memset(l, 0, sizeof *l);
}

static int capture(void *ctx, int action, const char *arg1, const char *arg2, const char *dbname,
                   const char *trigger)
{
    (void)arg2;
    struct gs_table_route *r = ctx;
    if (action != SQLITE_INSERT && action != SQLITE_UPDATE && action != SQLITE_DELETE)
        return SQLITE_OK;
    /* a trigger's own writes follow their statement; temp tables never replicate */
    if (trigger || !arg1 || (dbname && strcmp(dbname, "main") != 0))
        return SQLITE_OK;
    if (strncasecmp(arg1, "sqlite_", 7) == 0)
        return SQLITE_OK;
    names_add(&r->stmt, arg1);
    return SQLITE_OK;
}

gs_status gs_repl_table_route_open(gs_repl_engine *e, gs_error *err)
{
    struct gs_table_route *r = gs_calloc(1, sizeof *r);
    if (!r)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    pthread_mutex_init(&r->mu, NULL);
    int rc = sqlite3_open_v2(gs_db_path(e->db), &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        gs_error_set(err, 0, "REPLICATION_ERROR", "opening '%s' to route writes by table: %s",
                     gs_db_path(e->db), r->db ? sqlite3_errmsg(r->db) : sqlite3_errstr(rc));
        sqlite3_close(r->db);
        pthread_mutex_destroy(&r->mu);
        gs_free(r);
        return GS_ERROR;
    }
    sqlite3_busy_timeout(r->db, 5000);
    sqlite3_set_authorizer(r->db, capture, r);
    e->troute = r;
    return GS_OK;
}

void gs_repl_table_route_close(gs_repl_engine *e)
{
    struct gs_table_route *r = e->troute;
    if (!r)
        return;
    sqlite3_close(r->db);
    pthread_mutex_destroy(&r->mu);
    names_free(&r->stmt);
    names_free(&r->targets);
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        gs_free(r->cache[i].sql);
        names_free(&r->cache[i].names);
    }
    gs_free(r);
    e->troute = NULL;
}

int gs_repl_table_emits(gs_repl_engine *e, const char *table)
{
    if (table && strcmp(table, GS_REPL_DDL_TABLE) == 0)
        return e->is_primary; /* schema changes start on the primary only */
    return gs_table_modes_emits(e->tmodes, table);
}

int gs_repl_table_pulls(gs_repl_engine *e, const gs_peer *from, const char *table)
{
    if (table && strcmp(table, GS_REPL_DDL_TABLE) == 0)
        return from && from->is_primary;
    return gs_table_modes_pulls(e->tmodes, table);
}

/* The tables one statement text writes, into r->stmt (under r->mu). GS_ERROR: SQLite
 * cannot prepare it. */
static gs_status parse_targets(struct gs_table_route *r, const char *sql)
{
    names_clear(&r->stmt);
    while (sql && *sql) {
        sqlite3_stmt *st = NULL;
        const char *tail = NULL;
        if (sqlite3_prepare_v2(r->db, sql, -1, &st, &tail) != SQLITE_OK) {
            sqlite3_finalize(st);
            return GS_ERROR;
        }
        sqlite3_finalize(st);
        if (!tail || tail == sql)
            break;
        sql = tail;
    }
    return GS_OK;
}

/* The tables one statement text writes: the cached answer, or a parse whose answer is cached
 * (NULL: SQLite cannot prepare it). Under r->mu. */
static const name_list *statement_targets(struct gs_table_route *r, const char *sql)
{
    size_t len = strlen(sql);
    uint64_t h = gs_hash_bytes(sql, len);
    cached *c = &r->cache[h % CACHE_SLOTS];
    if (c->sql && c->hash == h && strcmp(c->sql, sql) == 0)
        return &c->names;
    if (parse_targets(r, sql) != GS_OK)
        return NULL;
    if (len >= CACHE_MAX_SQL || r->stmt.oom)
        return &r->stmt;
    /* the slot takes the answer; its old list becomes the scratch list */
    name_list old = c->names;
    c->names = r->stmt;
    r->stmt = old;
    gs_free(c->sql);
    c->sql = gs_strdup(sql);
    c->hash = h;
    return &c->names;
}

/* The tables one request writes, into r->targets (under r->mu). 1: a statement SQLite cannot
 * prepare (the caller lets the normal path report it); -1: out of memory; 0: done. */
static int find_targets(struct gs_table_route *r, const gs_db_request *req)
{
    names_clear(&r->targets);
    for (size_t i = 0; i < req->stmt_count; i++) {
        if (!req->stmts[i].sql)
            continue;
        const name_list *l = statement_targets(r, req->stmts[i].sql);
        if (!l)
            return 1;
        if (l->oom)
            return -1;
        for (size_t k = 0; k < l->n; k++)
            names_add(&r->targets, l->v[k]);
    }
    return r->targets.oom ? -1 : 0;
}

gs_status gs_repl_route_request(gs_repl_engine *e, const gs_db_request *req,
                                gs_repl_write_route *route, gs_error *err)
{
    *route = GS_REPL_WRITE_LOCAL;
    if (!e->tmodes || !e->troute)
        return gs_repl_route_write(e, req->kind, req->stmt_count, route, err);
    struct gs_table_route *r = e->troute;
    pthread_mutex_lock(&r->mu);
    int found = find_targets(r, req);
    const char *local = NULL, *remote = NULL;
    char lname[128] = "", rname[128] = "", refused[128] = "";
    gs_table_mode rmode = GS_TABLE_PRIMARY, lmode = GS_TABLE_PRIMARY;
    for (size_t i = 0; found == 0 && i < r->targets.n; i++) {
        const char *t = r->targets.v[i];
        gs_table_mode m = gs_table_modes_resolve(e->tmodes, t);
        switch (gs_table_mode_local_write(m)) {
        case GS_TABLE_WRITE_REFUSE:
            if (!refused[0])
                snprintf(refused, sizeof refused, "%s", t);
            break;
        case GS_TABLE_WRITE_FORWARD:
            if (!remote) {
                snprintf(rname, sizeof rname, "%s", t);
                remote = rname;
                rmode = m;
            }
            break;
        default:
            if (!local) {
                snprintf(lname, sizeof lname, "%s", t);
                local = lname;
                lmode = m;
            }
        }
    }
    size_t n = found == 0 ? r->targets.n : 0;
    pthread_mutex_unlock(&r->mu);
    if (found < 0)
        return gs_error_set(err, 0, "INTERNAL_ERROR",
                            "out of memory while finding the tables the write touches (node %s); "
                            "nothing was written",
                            e->node_id);
    if (n == 0) /* DDL, or a statement only the normal path can report on */
        return gs_repl_route_write(e, req->kind, req->stmt_count, route, err);
    if (refused[0])
        return gs_error_set(err, 0, "TOPOLOGY_ERROR",
                            "table '%s' is readonly on node %s (databases[].tables): it takes "
                            "changes from its peers only; write it on the node that owns it",
                            refused, e->node_id);
    if (local && remote)
        return gs_error_set(err, 0, "TOPOLOGY_ERROR",
                            "the write touches table '%s' (%s: written here) and table '%s' (%s: "
                            "owned by the primary); split it into writes that each touch tables "
                            "of one owner",
                            local, gs_table_mode_name(lmode), remote, gs_table_mode_name(rmode));
    if (local)
        return GS_OK;
    if (e->o.write_proxy_reject)
        return gs_error_set(err, 0, "TOPOLOGY_ERROR",
                            "table '%s' is a replica table on node %s and write_proxy is reject: "
                            "write it on the primary",
                            remote, e->node_id);
    if (!(req->kind == GS_DB_BATCH || (req->kind == GS_DB_EXECUTE && req->stmt_count == 1)))
        return gs_error_set(err, 0, "TOPOLOGY_ERROR",
                            "table '%s' is owned by the primary: transactions and loads are "
                            "never forwarded; send them to the primary",
                            remote);
    *route = GS_REPL_WRITE_FORWARD;
    return GS_OK;
}

typedef struct skips_call {
    gs_repl_engine *e;
    char ***names;
    size_t *n;
} skips_call;

static void push_name(skips_call *sc, const char *name)
{
    for (size_t i = 0; i < *sc->n; i++)
        if (strcasecmp((*sc->names)[i], name) == 0)
            return;
    char **nn = gs_realloc(*sc->names, (*sc->n + 1) * sizeof *nn);
    if (!nn)
        return;
    *sc->names = nn;
    if ((nn[*sc->n] = gs_strdup(name)))
        (*sc->n)++;
}

static gs_status skips_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    skips_call *sc = user;
    sqlite3 *db = gs_conn_db(conn);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT "
                           "LIKE 'sqlite\\_%' ESCAPE '\\'",
                           -1, &st, NULL) != SQLITE_OK)
        return gs_error_set(err, 0, "SYNC_ERROR", "listing the local tables: %s",
                            sqlite3_errmsg(db));
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        if (name && strncasecmp(name, "_sirannon", 9) != 0 &&
            !gs_table_mode_bootstraps(gs_table_modes_resolve(sc->e->tmodes, name)))
            push_name(sc, name);
    }
    sqlite3_finalize(st);
    return GS_OK;
}

void gs_repl_table_sync_skips(gs_repl_engine *e, char ***names, size_t *n)
{
    if (!e->tmodes)
        return;
    skips_call sc = {e, names, n};
    for (size_t i = 0; i < gs_table_modes_count(e->tmodes); i++) {
        int prefix = 0;
        gs_table_mode m = GS_TABLE_PRIMARY;
        const char *p = gs_table_modes_rule(e->tmodes, i, &prefix, &m);
        if (p && !prefix && !gs_table_mode_bootstraps(m))
            push_name(&sc, p);
    }
    gs_error err;
    gs_error_init(&err);
    if (gs_repl_on_writer(e, skips_fn, &sc, &err) != GS_OK)
        gs_repl_note_error(e, &err, "listing the tables the first sync skips", NULL);
}
