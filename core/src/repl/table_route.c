/*
 * Per-table modes inside the engine: which changes a node sends and takes (the filters the
 * sender and the applier call), and the routing of a client write by the tables it writes
 * (gs_repl_route_request, engine.h).
 *
 * The tables a request writes are what SQLite's authorizer reports while the statements are
 * prepared (SQLITE_INSERT / UPDATE / DELETE with the table in arg1, outside triggers) on a
 * connection of its own, opened read-only: preparing never runs anything and never takes a
 * write lock, so the writer is not touched and only nodes with table modes pay for it (one
 * prepare per statement). The connection is serialised by a mutex; any thread may route.
 */
#include "engine_internal.h"

#include "base/alloc.h"
#include "base/log.h"
#include "repl/log.h"

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MAX_TARGETS 16

struct gs_table_route {
    pthread_mutex_t mu;
    sqlite3 *db;
    /* filled by the authorizer during one prepare (under mu) */
    char targets[MAX_TARGETS][128];
    size_t ntargets;
    int overflow;
};

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
    for (size_t i = 0; i < r->ntargets; i++)
        if (strcasecmp(r->targets[i], arg1) == 0)
            return SQLITE_OK;
    if (r->ntargets == MAX_TARGETS || strlen(arg1) >= sizeof r->targets[0]) {
        r->overflow = 1;
        return SQLITE_OK;
    }
    snprintf(r->targets[r->ntargets++], sizeof r->targets[0], "%s", arg1);
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

/* The tables one request writes, into r->targets (under r->mu). GS_ERROR: a statement SQLite
 * cannot prepare (the caller lets the normal path report it). */
static gs_status find_targets(struct gs_table_route *r, const gs_db_request *req)
{
    r->ntargets = 0;
    r->overflow = 0;
    for (size_t i = 0; i < req->stmt_count; i++) {
        const char *sql = req->stmts[i].sql;
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
    }
    return GS_OK;
}

gs_status gs_repl_route_request(gs_repl_engine *e, const gs_db_request *req,
                                gs_repl_write_route *route, gs_error *err)
{
    *route = GS_REPL_WRITE_LOCAL;
    if (!e->tmodes || !e->troute)
        return gs_repl_route_write(e, req->kind, req->stmt_count, route, err);
    struct gs_table_route *r = e->troute;
    pthread_mutex_lock(&r->mu);
    gs_status found = find_targets(r, req);
    const char *local = NULL, *remote = NULL;
    char lname[128] = "", rname[128] = "", refused[128] = "";
    gs_table_mode rmode = GS_TABLE_PRIMARY, lmode = GS_TABLE_PRIMARY;
    for (size_t i = 0; found == GS_OK && i < r->ntargets; i++) {
        gs_table_mode m = gs_table_modes_resolve(e->tmodes, r->targets[i]);
        switch (gs_table_mode_local_write(m)) {
        case GS_TABLE_WRITE_REFUSE:
            if (!refused[0])
                snprintf(refused, sizeof refused, "%s", r->targets[i]);
            break;
        case GS_TABLE_WRITE_FORWARD:
            if (!remote) {
                snprintf(rname, sizeof rname, "%s", r->targets[i]);
                remote = rname;
                rmode = m;
            }
            break;
        default:
            if (!local) {
                snprintf(lname, sizeof lname, "%s", r->targets[i]);
                local = lname;
                lmode = m;
            }
        }
    }
    size_t n = found == GS_OK ? r->ntargets : 0;
    pthread_mutex_unlock(&r->mu);
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
