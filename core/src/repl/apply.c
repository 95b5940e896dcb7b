/*
 * The batch applier: position checks, then every change of a batch written in one
 * transaction on the writer connection, with conflicts handed to the table's resolver. See
 * apply.h for the contract.
 */
#include "apply.h"

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "db/cdc_internal.h"
#include "repl/checksum.h"
#include "repl/ddl.h"
#include "repl/rowsql.h"
#include "repl/log.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SAVEPOINT_NAME "gs_repl_apply"

/* ---- errors ---- */

static gs_status invalid(gs_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static gs_status invalid(gs_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gs_error_setv(err, 0, "BATCH_VALIDATION_ERROR", fmt, ap);
    va_end(ap);
    return GS_ERROR;
}

static gs_status oom(gs_error *err)
{
    return gs_error_set(err, 0, "REPLICATION_ERROR", "out of memory applying a batch");
}

/* CONFLICT_ERROR with details {"table","rowId"} (spec 07). */
static gs_status conflict_error(gs_error *err, const char *table, const char *row_id,
                                const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static gs_status conflict_error(gs_error *err, const char *table, const char *row_id,
                                const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gs_error_setv(err, 0, "CONFLICT_ERROR", fmt, ap);
    va_end(ap);
    gs_buf d;
    gs_buf_init(&d);
    gs_buf_puts(&d, "{\"table\":");
    gs_buf_json_string(&d, table, strlen(table));
    gs_buf_puts(&d, ",\"rowId\":");
    gs_buf_json_string(&d, row_id, strlen(row_id));
    gs_buf_putc(&d, '}');
    if (!d.oom && d.len < sizeof err->details)
        memcpy(err->details, d.data, d.len + 1);
    gs_buf_free(&d);
    return GS_ERROR;
}

static int plain_identifier(const char *s)
{
    if (!s || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_'))
        return 0;
    for (const char *p = s + 1; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            return 0;
    return 1;
}

/* ---- local table shapes (per call; emptied after DDL) ---- */

typedef struct tinfo {
    char *table;
    char **cols;
    size_t ncols;
    char **pk; /* borrowed from cols, in pk order */
    size_t npk;
} tinfo;

typedef struct applier {
    gs_conn *conn;
    const gs_repl_apply_ctx *ctx;
    const gs_repl_batch *b;
    gs_repl_apply_result *res;
    tinfo *tables;
    size_t ntables, cap_tables;
    int has_log;
    /* the write stamp set for the triggers (cdc_internal.h): borrowed from the batch */
    int stamped;
    const char *stamp_node, *stamp_tx, *stamp_hlc;
    gs_buf sql;
} applier;

static void tinfo_clear(tinfo *t)
{
    gs_free(t->table);
    for (size_t i = 0; i < t->ncols; i++)
        gs_free(t->cols[i]);
    gs_free(t->cols);
    gs_free(t->pk);
    memset(t, 0, sizeof *t);
}

static void tables_clear(applier *a)
{
    for (size_t i = 0; i < a->ntables; i++)
        tinfo_clear(&a->tables[i]);
    a->ntables = 0;
}

static gs_status prep(gs_conn *conn, const char *sql, size_t len, gs_stmt **st, gs_error *err)
{
    return gs_conn_prepare(conn, sql, len, GS_PREP_TRUSTED, st, err);
}

static gs_status load_tinfo(applier *a, const char *table, tinfo *t, gs_error *err)
{
    static const char SQL[] = "SELECT name, pk FROM pragma_table_info(?1) ORDER BY cid";
    memset(t, 0, sizeof *t);
    if (!(t->table = gs_strdup(table)))
        return oom(err);
    gs_stmt *st;
    if (prep(a->conn, SQL, sizeof SQL - 1, &st, err) != GS_OK)
        return GS_ERROR;
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    sqlite3_bind_text(ss, 1, table, -1, SQLITE_STATIC);
    size_t cap = 0;
    int *pkpos = NULL;
    int rc;
    gs_status status = GS_OK;
    while ((rc = gs_conn_step(a->conn, st, err)) == SQLITE_ROW) {
        if (t->ncols == cap) {
            cap = cap ? cap * 2 : 16;
            char **c = gs_realloc(t->cols, cap * sizeof *c);
            if (c)
                t->cols = c;
            int *p = c ? gs_realloc(pkpos, cap * sizeof *p) : NULL;
            if (p)
                pkpos = p;
            if (!c || !p) {
                status = oom(err);
                break;
            }
        }
        const char *name = (const char *)sqlite3_column_text(ss, 0);
        if (!(t->cols[t->ncols] = gs_strdup(name ? name : ""))) {
            status = oom(err);
            break;
        }
        pkpos[t->ncols] = sqlite3_column_int(ss, 1);
        if (pkpos[t->ncols] > 0)
            t->npk++;
        t->ncols++;
    }
    if (status == GS_OK && rc < 0)
        status = GS_ERROR;
    gs_conn_release(a->conn, st);
    if (status == GS_OK && t->npk > 0) {
        if (!(t->pk = gs_calloc(t->npk, sizeof *t->pk)))
            status = oom(err);
        for (size_t i = 0; status == GS_OK && i < t->ncols; i++)
            if (pkpos[i] > 0 && (size_t)pkpos[i] <= t->npk)
                t->pk[pkpos[i] - 1] = t->cols[i];
    }
    gs_free(pkpos);
    if (status == GS_OK && t->ncols == 0)
        status = invalid(err, "schema violation: table '%s' does not exist on this node", table);
    return status;
}

static gs_status tinfo_get(applier *a, const char *table, const tinfo **out, gs_error *err)
{
    for (size_t i = 0; i < a->ntables; i++)
        if (strcasecmp(a->tables[i].table, table) == 0) {
            *out = &a->tables[i];
            return GS_OK;
        }
    if (a->ntables == a->cap_tables) {
        size_t cap = a->cap_tables ? a->cap_tables * 2 : 8;
        tinfo *n = gs_realloc(a->tables, cap * sizeof *n);
        if (!n)
            return oom(err);
        a->tables = n;
        a->cap_tables = cap;
    }
    tinfo *t = &a->tables[a->ntables];
    if (load_tinfo(a, table, t, err) != GS_OK) {
        tinfo_clear(t);
        return GS_ERROR;
    }
    a->ntables++;
    *out = t;
    return GS_OK;
}

static int tinfo_has(const tinfo *t, const char *col)
{
    for (size_t i = 0; i < t->ncols; i++)
        if (strcasecmp(t->cols[i], col) == 0)
            return 1;
    return 0;
}

/* Every column of a row image must exist locally. */
static gs_status check_image(const tinfo *t, const gs_rrow *img, const char *what, gs_error *err)
{
    for (size_t i = 0; img && i < img->n; i++)
        if (!tinfo_has(t, img->names[i]))
            return invalid(err,
                           "schema violation: %s names column '%s', which table '%s' does "
                           "not have on this node",
                           what, img->names[i], t->table);
    return GS_OK;
}

/* ---- keys ---- */

typedef struct key {
    size_t n;
    const char **cols;
    const gs_rval **vals;
    int rowid;   /* the key is the rowid: vals[0] */
    gs_rval own; /* a rowid parsed from row_id */
} key;

static void key_free(key *k)
{
    gs_free(k->cols);
    gs_free(k->vals);
    memset(k, 0, sizeof *k);
}

static gs_status key_alloc(key *k, size_t n, gs_error *err)
{
    memset(k, 0, sizeof *k);
    k->cols = gs_calloc(n ? n : 1, sizeof *k->cols);
    k->vals = gs_calloc(n ? n : 1, sizeof *k->vals);
    if (!k->cols || !k->vals) {
        key_free(k);
        return oom(err);
    }
    return GS_OK;
}

static gs_status rowid_key(key *k, const char *row_id, const char *table, gs_error *err)
{
    errno = 0;
    char *end;
    long long v = row_id && *row_id ? strtoll(row_id, &end, 10) : 0;
    if (!row_id || !*row_id || errno || *end)
        return invalid(err,
                       "table '%s' has no declared primary key and the change's rowId '%s' "
                       "is not a rowid",
                       table, row_id ? row_id : "");
    if (key_alloc(k, 1, err) != GS_OK)
        return GS_ERROR;
    k->own.type = GS_RVAL_INT;
    k->own.i = v;
    k->n = 1;
    k->rowid = 1;
    k->cols[0] = "rowid";
    k->vals[0] = &k->own;
    return GS_OK;
}

/* The key of a data change: its primaryKey, or (empty) the local key columns' values in the
 * image, or the rowid. */
static gs_status change_key(const tinfo *t, const gs_repl_change *c, key *k, gs_error *err)
{
    const gs_rrow *pk = c->primary_key;
    memset(k, 0, sizeof *k);
    if (pk && pk->n > 0) {
        if (key_alloc(k, pk->n, err) != GS_OK)
            return GS_ERROR;
        for (size_t i = 0; i < pk->n; i++) {
            k->cols[i] = pk->names[i];
            k->vals[i] = &pk->vals[i];
            if (!tinfo_has(t, pk->names[i])) {
                if (pk->n == 1 && strcasecmp(pk->names[i], "rowid") == 0) {
                    k->rowid = 1;
                } else {
                    key_free(k);
                    return invalid(err,
                                   "schema violation: the primary key of a change names "
                                   "column '%s', which table '%s' does not have on this "
                                   "node",
                                   pk->names[i], t->table);
                }
            }
        }
        k->n = pk->n;
        return GS_OK;
    }
    if (t->npk == 0)
        return rowid_key(k, c->row_id, t->table, err);
    const gs_rrow *img = c->new_data ? c->new_data : c->old_data;
    if (key_alloc(k, t->npk, err) != GS_OK)
        return GS_ERROR;
    for (size_t i = 0; i < t->npk; i++) {
        int idx = img ? gs_rrow_find(img, t->pk[i]) : -1;
        if (idx < 0) {
            key_free(k);
            return invalid(err,
                           "a change to table '%s' (row '%s') carries neither a primary key "
                           "nor key column '%s' in its row image",
                           t->table, c->row_id, t->pk[i]);
        }
        k->cols[i] = t->pk[i];
        k->vals[i] = &img->vals[idx];
    }
    k->n = t->npk;
    return GS_OK;
}

/* The same key columns with their values in img (an update's old image). 0 when img lacks one
 * or the values are the same as k's. */
static int key_in_image(const key *k, const gs_rrow *img, key *out, gs_error *err)
{
    if (!img || k->rowid)
        return 0;
    if (key_alloc(out, k->n, err) != GS_OK)
        return -1;
    int differs = 0;
    for (size_t i = 0; i < k->n; i++) {
        int idx = gs_rrow_find(img, k->cols[i]);
        if (idx < 0) {
            key_free(out);
            return 0;
        }
        out->cols[i] = k->cols[i];
        out->vals[i] = &img->vals[idx];
        differs |= !gs_rval_equal(out->vals[i], k->vals[i]);
    }
    out->n = k->n;
    if (!differs) {
        key_free(out);
        return 0;
    }
    return 1;
}

/* ---- SQL ---- */

/* " WHERE k1 = ?p AND ..." with parameters from first. */
static void where_key(gs_buf *b, const key *k, int first)
{
    gs_buf_puts(b, " WHERE ");
    for (size_t i = 0; i < k->n; i++) {
        if (i)
            gs_buf_puts(b, " AND ");
        if (k->rowid)
            gs_buf_puts(b, "rowid");
        else
            gs_repl_quote_ident(b, k->cols[i]);
        gs_buf_printf(b, " = ?%d", first + (int)i);
    }
}

static void bind_key(sqlite3_stmt *ss, const key *k, int first)
{
    for (size_t i = 0; i < k->n; i++)
        gs_repl_bind_rval(ss, first + (int)i, k->vals[i]);
}

/* Prepare a->sql. */
static gs_status prep_sql(applier *a, gs_stmt **st, gs_error *err)
{
    if (a->sql.oom)
        return oom(err);
    return prep(a->conn, a->sql.data, a->sql.len, st, err);
}

/* Step a write to its end. */
static gs_status step_done(applier *a, gs_stmt *st, const char *what, const char *table,
                           gs_error *err)
{
    int rc = gs_conn_step(a->conn, st, err);
    gs_conn_release(a->conn, st);
    if (rc != SQLITE_DONE) {
        gs_error_prefix(err, "%s table '%s'", what, table);
        return GS_ERROR;
    }
    return GS_OK;
}

/* The local row at k, or *out = NULL. */
static gs_status find_row(applier *a, const char *table, const key *k, gs_rrow **out, gs_error *err)
{
    *out = NULL;
    gs_buf_reset(&a->sql);
    gs_buf_puts(&a->sql, "SELECT * FROM ");
    gs_repl_quote_ident(&a->sql, table);
    where_key(&a->sql, k, 1);
    gs_stmt *st;
    if (prep_sql(a, &st, err) != GS_OK)
        return GS_ERROR;
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    bind_key(ss, k, 1);
    int rc = gs_conn_step(a->conn, st, err);
    gs_status status = rc < 0 ? GS_ERROR : GS_OK;
    if (rc == SQLITE_ROW) {
        gs_rrow *row = gs_rrow_new();
        if (!row)
            status = oom(err);
        int n = sqlite3_column_count(ss);
        for (int i = 0; status == GS_OK && i < n; i++) {
            gs_rval v;
            if (gs_repl_column_rval(ss, i, &v, err) != GS_OK ||
                gs_rrow_add_take(row, sqlite3_column_name(ss, i), &v, err) != GS_OK) {
                gs_rval_free(&v);
                status = GS_ERROR;
            }
        }
        if (status == GS_OK)
            *out = row;
        else
            gs_rrow_free(row);
    }
    gs_conn_release(a->conn, st);
    if (status != GS_OK)
        gs_error_prefix(err, "reading the local row of table '%s'", table);
    return status;
}

/* INSERT the image; a rowid key places the row at the sender's rowid. */
static gs_status insert_row(applier *a, const char *table, const gs_rrow *img, const key *k,
                            gs_error *err)
{
    int with_rowid = k->rowid;
    gs_buf_reset(&a->sql);
    gs_buf_puts(&a->sql, "INSERT INTO ");
    gs_repl_quote_ident(&a->sql, table);
    if (img->n == 0 && !with_rowid) {
        gs_buf_puts(&a->sql, " DEFAULT VALUES");
    } else {
        gs_buf_puts(&a->sql, " (");
        if (with_rowid)
            gs_buf_puts(&a->sql, img->n ? "rowid, " : "rowid");
        for (size_t i = 0; i < img->n; i++) {
            if (i)
                gs_buf_puts(&a->sql, ", ");
            gs_repl_quote_ident(&a->sql, img->names[i]);
        }
        gs_buf_puts(&a->sql, ") VALUES (");
        size_t total = img->n + (with_rowid ? 1 : 0);
        for (size_t i = 0; i < total; i++)
            gs_buf_printf(&a->sql, i ? ", ?%zu" : "?%zu", i + 1);
        gs_buf_putc(&a->sql, ')');
    }
    gs_stmt *st;
    if (prep_sql(a, &st, err) != GS_OK)
        return GS_ERROR;
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    int p = 1;
    if (with_rowid)
        gs_repl_bind_rval(ss, p++, k->vals[0]);
    for (size_t i = 0; i < img->n; i++)
        gs_repl_bind_rval(ss, p++, &img->vals[i]);
    return step_done(a, st, "inserting into", table, err);
}

/* UPDATE the columns of img at the row k (no columns: nothing to do). */
static gs_status update_row(applier *a, const char *table, const gs_rrow *img, const key *k,
                            gs_error *err)
{
    if (img->n == 0)
        return GS_OK;
    gs_buf_reset(&a->sql);
    gs_buf_puts(&a->sql, "UPDATE ");
    gs_repl_quote_ident(&a->sql, table);
    gs_buf_puts(&a->sql, " SET ");
    for (size_t i = 0; i < img->n; i++) {
        if (i)
            gs_buf_puts(&a->sql, ", ");
        gs_repl_quote_ident(&a->sql, img->names[i]);
        gs_buf_printf(&a->sql, " = ?%zu", i + 1);
    }
    where_key(&a->sql, k, (int)img->n + 1);
    gs_stmt *st;
    if (prep_sql(a, &st, err) != GS_OK)
        return GS_ERROR;
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    for (size_t i = 0; i < img->n; i++)
        gs_repl_bind_rval(ss, (int)i + 1, &img->vals[i]);
    bind_key(ss, k, (int)img->n + 1);
    return step_done(a, st, "updating", table, err);
}

static gs_status delete_row(applier *a, const char *table, const key *k, gs_error *err)
{
    gs_buf_reset(&a->sql);
    gs_buf_puts(&a->sql, "DELETE FROM ");
    gs_repl_quote_ident(&a->sql, table);
    where_key(&a->sql, k, 1);
    gs_stmt *st;
    if (prep_sql(a, &st, err) != GS_OK)
        return GS_ERROR;
    bind_key(gs_stmt_sqlite(st), k, 1);
    return step_done(a, st, "deleting from", table, err);
}

/* ---- bookkeeping tables ---- */

static gs_status exec_bound(applier *a, const char *sql, const char *const *texts, size_t ntexts,
                            gs_error *err)
{
    gs_stmt *st;
    if (prep(a->conn, sql, strlen(sql), &st, err) != GS_OK)
        return GS_ERROR;
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    for (size_t i = 0; i < ntexts; i++)
        sqlite3_bind_text(ss, (int)i + 1, texts[i], -1, SQLITE_STATIC);
    int rc = gs_conn_step(a->conn, st, err);
    gs_conn_release(a->conn, st);
    return rc == SQLITE_DONE ? GS_OK : GS_ERROR;
}

static gs_status versions_delete_row(applier *a, const char *table, const char *row_id,
                                     gs_error *err)
{
    const char *args[2] = {table, row_id};
    return exec_bound(a,
                      "DELETE FROM _sirannon_column_versions WHERE table_name = ?1 AND row_id = ?2",
                      args, 2, err);
}

static gs_status versions_record(applier *a, const gs_repl_change *c, const gs_rrow *written,
                                 gs_error *err)
{
    if (!a->ctx->keep_column_versions || !written)
        return GS_OK;
    const char *node = c->node_id && c->node_id[0] ? c->node_id : a->b->source_node_id;
    for (size_t i = 0; i < written->n; i++) {
        const char *args[5] = {c->table, c->row_id, written->names[i], c->hlc, node};
        if (exec_bound(a,
                       "INSERT INTO _sirannon_column_versions (table_name, row_id, column_name, "
                       "hlc, node_id) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(table_name, row_id, "
                       "column_name) DO UPDATE SET hlc = excluded.hlc, node_id = excluded.node_id",
                       args, 5, err) != GS_OK)
            return GS_ERROR;
    }
    return GS_OK;
}

static gs_status log_exists(applier *a, gs_error *err)
{
    gs_stmt *st;
    static const char SQL[] =
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sirannon_changes'";
    if (prep(a->conn, SQL, sizeof SQL - 1, &st, err) != GS_OK)
        return GS_ERROR;
    int rc = gs_conn_step(a->conn, st, err);
    gs_conn_release(a->conn, st);
    if (rc < 0)
        return GS_ERROR;
    a->has_log = rc == SQLITE_ROW;
    return GS_OK;
}

/* The rows the triggers write for a change carry its origin's stamps: set them as the
 * writer's stamp before the change runs (consecutive changes of one transaction share it). */
static gs_status stamp_origin(applier *a, const gs_repl_change *c, gs_error *err)
{
    if (!a->has_log)
        return GS_OK;
    const char *node = c->node_id && c->node_id[0] ? c->node_id : a->b->source_node_id;
    const char *tx = c->tx_id ? c->tx_id : "";
    if (a->stamped && strcmp(a->stamp_node, node) == 0 && strcmp(a->stamp_tx, tx) == 0 &&
        strcmp(a->stamp_hlc, c->hlc) == 0)
        return GS_OK;
    if (gs_cdc_stamp_set(a->conn, node, tx, c->hlc, err) != GS_OK) {
        gs_error_prefix(err, "stamping the applied change rows");
        return GS_ERROR;
    }
    a->stamped = 1;
    a->stamp_node = node;
    a->stamp_tx = tx;
    a->stamp_hlc = c->hlc;
    return GS_OK;
}

/* The spec's local HLC of a row and the node that wrote it. */
static gs_status local_stamp(applier *a, const char *table, const char *row_id, char **hlc,
                             char **node, gs_error *err)
{
    static const char *const SQLS[] = {
        "SELECT hlc, node_id FROM _sirannon_column_versions WHERE table_name = ?1 AND row_id = "
        "?2 ORDER BY hlc DESC LIMIT 1",
        "SELECT hlc, node_id FROM _sirannon_changes WHERE table_name = ?1 AND row_id = ?2 AND "
        "hlc != '' ORDER BY hlc DESC LIMIT 1",
    };
    *hlc = *node = NULL;
    for (int i = 0; i < 2 && !*hlc; i++) {
        if (i == 1 && !a->has_log)
            break;
        gs_stmt *st;
        if (prep(a->conn, SQLS[i], strlen(SQLS[i]), &st, err) != GS_OK)
            return GS_ERROR;
        sqlite3_stmt *ss = gs_stmt_sqlite(st);
        sqlite3_bind_text(ss, 1, table, -1, SQLITE_STATIC);
        sqlite3_bind_text(ss, 2, row_id, -1, SQLITE_STATIC);
        int rc = gs_conn_step(a->conn, st, err);
        if (rc == SQLITE_ROW) {
            const char *h = (const char *)sqlite3_column_text(ss, 0);
            const char *n = (const char *)sqlite3_column_text(ss, 1);
            *hlc = gs_strdup(h ? h : "");
            *node = gs_strdup(n ? n : "");
        }
        gs_conn_release(a->conn, st);
        if (rc < 0)
            return GS_ERROR;
        if (rc == SQLITE_ROW && (!*hlc || !*node)) {
            gs_free(*hlc);
            gs_free(*node);
            *hlc = *node = NULL;
            return oom(err);
        }
    }
    return GS_OK;
}

/* The origin of the newest change-log entry of a row (by seq: the order writes happened
 * here), or NULL when the log has none. */
static gs_status last_writer(applier *a, const char *table, const char *row_id, char **node,
                             gs_error *err)
{
    static const char SQL[] = "SELECT node_id FROM _sirannon_changes WHERE table_name = ?1 AND "
                              "row_id = ?2 ORDER BY seq DESC LIMIT 1";
    *node = NULL;
    if (!a->has_log)
        return GS_OK;
    gs_stmt *st;
    if (prep(a->conn, SQL, sizeof SQL - 1, &st, err) != GS_OK)
        return GS_ERROR;
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    sqlite3_bind_text(ss, 1, table, -1, SQLITE_STATIC);
    sqlite3_bind_text(ss, 2, row_id, -1, SQLITE_STATIC);
    int rc = gs_conn_step(a->conn, st, err);
    if (rc == SQLITE_ROW) {
        const char *n = (const char *)sqlite3_column_text(ss, 0);
        if (!(*node = gs_strdup(n ? n : "")))
            rc = -1, oom(err);
    }
    gs_conn_release(a->conn, st);
    return rc < 0 ? GS_ERROR : GS_OK;
}

/* {"col": {"hlc": .., "nodeId": ..}} of a row, or NULL when it has none. */
static gs_status column_versions_json(applier *a, const char *table, const char *row_id, char **out,
                                      gs_error *err)
{
    static const char SQL[] = "SELECT column_name, hlc, node_id FROM _sirannon_column_versions "
                              "WHERE table_name = ?1 AND row_id = ?2 ORDER BY column_name";
    *out = NULL;
    gs_stmt *st;
    if (prep(a->conn, SQL, sizeof SQL - 1, &st, err) != GS_OK)
        return GS_ERROR;
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    sqlite3_bind_text(ss, 1, table, -1, SQLITE_STATIC);
    sqlite3_bind_text(ss, 2, row_id, -1, SQLITE_STATIC);
    gs_buf b;
    gs_buf_init(&b);
    int rc, n = 0;
    while ((rc = gs_conn_step(a->conn, st, err)) == SQLITE_ROW) {
        const char *col = (const char *)sqlite3_column_text(ss, 0);
        const char *h = (const char *)sqlite3_column_text(ss, 1);
        const char *node = (const char *)sqlite3_column_text(ss, 2);
        col = col ? col : "";
        h = h ? h : "";
        node = node ? node : "";
        gs_buf_putc(&b, n++ ? ',' : '{');
        gs_buf_json_string(&b, col, strlen(col));
        gs_buf_puts(&b, ":{\"hlc\":");
        gs_buf_json_string(&b, h, strlen(h));
        gs_buf_puts(&b, ",\"nodeId\":");
        gs_buf_json_string(&b, node, strlen(node));
        gs_buf_putc(&b, '}');
    }
    gs_conn_release(a->conn, st);
    if (rc < 0) {
        gs_buf_free(&b);
        return GS_ERROR;
    }
    if (n == 0) {
        gs_buf_free(&b);
        return GS_OK;
    }
    gs_buf_putc(&b, '}');
    if (b.oom) {
        gs_buf_free(&b);
        return oom(err);
    }
    *out = gs_buf_take(&b, NULL);
    return GS_OK;
}

/* A row as JSON text (json_dumps: free() it); *out = NULL for a NULL row. */
static gs_status row_text(const gs_rrow *r, char **out, gs_error *err)
{
    *out = NULL;
    if (!r)
        return GS_OK;
    json_t *j = gs_rrow_to_json(r);
    *out = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return *out ? GS_OK : oom(err);
}

/* ---- conflicts ---- */

typedef struct decision {
    gs_resolution_kind kind;
    gs_rrow *merged; /* MERGED */
    int in_order;    /* not a conflict: the row's last writer is the change's own origin */
} decision;

static gs_status resolve(applier *a, const gs_repl_change *c, const gs_rrow *local, decision *d,
                         gs_error *err)
{
    const gs_repl_apply_ctx *ctx = a->ctx;
    memset(d, 0, sizeof *d);
    gs_repl_resolver_ref ref = {NULL, NULL};
    if (ctx->resolver)
        ref = ctx->resolver(ctx->resolver_user, c->table);
    if (!ref.vt || !ref.vt->resolve)
        return conflict_error(err, c->table, c->row_id,
                              "no conflict resolver is configured for table '%s' (row '%s')",
                              c->table, c->row_id);
    char *local_hlc = NULL, *local_node = NULL, *versions = NULL;
    char *pk_text = NULL, *local_text = NULL, *new_text = NULL, *old_text = NULL;
    /* Changes of one origin arrive in that origin's commit order, so when the row's last
     * write here (by log order) came from the change's own origin, nothing else touched the
     * row since: the change follows that write and is applied as is. Two changes of one
     * transaction share a stamp; without this an insert and an update of the same row in one
     * transaction would tie and the update would be lost. Only writes of different origins
     * are conflicts for a resolver. */
    char *writer = NULL;
    if (last_writer(a, c->table, c->row_id, &writer, err) != GS_OK)
        return GS_ERROR;
    int in_order = writer && c->node_id && c->node_id[0] && strcmp(writer, c->node_id) == 0;
    gs_free(writer);
    if (in_order) {
        d->kind = GS_RESOLVE_TAKE_INCOMING;
        d->in_order = 1;
        return GS_OK;
    }
    gs_status status = local_stamp(a, c->table, c->row_id, &local_hlc, &local_node, err);
    if (status == GS_OK)
        status = column_versions_json(a, c->table, c->row_id, &versions, err);
    if (status == GS_OK)
        status = row_text(c->primary_key, &pk_text, err);
    if (status == GS_OK)
        status = row_text(local, &local_text, err);
    if (status == GS_OK)
        status = row_text(c->new_data, &new_text, err);
    if (status == GS_OK)
        status = row_text(c->old_data, &old_text, err);
    gs_resolution r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    if (status == GS_OK) {
        gs_conflict cf;
        memset(&cf, 0, sizeof cf);
        cf.struct_size = sizeof cf;
        cf.table = c->table;
        cf.row_id = c->row_id;
        cf.primary_key_json = pk_text;
        cf.local_row_json = local_text;
        cf.local_hlc = local_hlc;
        cf.local_node_id = local_node;
        cf.incoming_operation = c->operation;
        cf.incoming_new_json = new_text;
        cf.incoming_old_json = old_text;
        cf.incoming_hlc = c->hlc;
        cf.incoming_node_id = c->node_id;
        cf.column_versions_json = versions;
        cf.primary_node_id = ctx->primary_node_id;
        gs_error rerr;
        gs_error_init(&rerr);
        if (ref.vt->resolve(ref.instance, &cf, &r, &rerr) != GS_OK)
            status = conflict_error(err, c->table, c->row_id,
                                    "resolving the conflict on table '%s' row '%s' failed: %s",
                                    c->table, c->row_id, rerr.message);
    }
    if (status == GS_OK) {
        d->kind = r.kind;
        if (r.kind == GS_RESOLVE_MERGED) {
            json_error_t je;
            json_t *j = r.merged_row_json ? json_loads(r.merged_row_json, 0, &je) : NULL;
            gs_error perr;
            if (!j || !json_is_object(j) || gs_rrow_from_json(j, &d->merged, &perr) != GS_OK ||
                !d->merged)
                status = conflict_error(err, c->table, c->row_id,
                                        "the resolver for table '%s' merged row '%s' into "
                                        "something that is not a row object",
                                        c->table, c->row_id);
            json_decref(j);
        } else if (r.kind != GS_RESOLVE_KEEP_LOCAL && r.kind != GS_RESOLVE_TAKE_INCOMING) {
            status = conflict_error(err, c->table, c->row_id,
                                    "the resolver for table '%s' answered an unknown decision "
                                    "(%d) for row '%s'",
                                    c->table, (int)r.kind, c->row_id);
        }
    }
    gs_free(r.merged_row_json); /* host->alloc is gs_malloc */
    gs_free(local_hlc);
    gs_free(local_node);
    gs_free(versions);
    free(pk_text);
    free(local_text);
    free(new_text);
    free(old_text);
    if (status != GS_OK) {
        gs_rrow_free(d->merged);
        d->merged = NULL;
    }
    return status;
}

/* ---- one change ---- */

static gs_status apply_ddl(applier *a, const gs_repl_change *c, gs_error *err)
{
    if (!c->ddl_statement)
        return invalid(err, "a ddl change carries no ddlStatement");
    if (gs_repl_ddl_check(c->ddl_statement, err) != GS_OK)
        return GS_ERROR;
    gs_error e;
    if (gs_conn_exec(a->conn, c->ddl_statement, &e) != GS_OK)
        return gs_error_set(err, 0, "REPLICATION_ERROR", "applying the DDL statement '%.200s': %s",
                            c->ddl_statement, e.message);
    char *dropped = gs_repl_ddl_dropped_table(c->ddl_statement);
    if (dropped) {
        const char *args[1] = {dropped};
        char **n = gs_realloc(a->res->dropped_tables, (a->res->ndropped + 1) * sizeof *n);
        if (!n) {
            gs_free(dropped);
            return oom(err);
        }
        a->res->dropped_tables = n;
        n[a->res->ndropped++] = dropped;
        if (exec_bound(a, "DELETE FROM _sirannon_column_versions WHERE table_name = ?1", args, 1,
                       err) != GS_OK)
            return GS_ERROR;
    }
    tables_clear(a);
    if (a->ctx->cdc) {
        if (gs_cdc_capture_all_refresh(a->ctx->cdc, a->conn, err) != GS_OK) {
            gs_error_prefix(err, "refreshing change capture after '%.200s'", c->ddl_statement);
            return GS_ERROR;
        }
        if (log_exists(a, err) != GS_OK)
            return GS_ERROR;
    }
    a->res->ddl++;
    a->res->applied++;
    return GS_OK;
}

static gs_status apply_data(applier *a, const gs_repl_change *c, gs_error *err)
{
    const char *op = c->operation;
    int is_insert = strcmp(op, "insert") == 0, is_update = strcmp(op, "update") == 0;
    int is_delete = strcmp(op, "delete") == 0;
    if (!plain_identifier(c->table) || strncasecmp(c->table, "_sirannon", 9) == 0 ||
        strncasecmp(c->table, "sqlite_", 7) == 0)
        return invalid(err, "a change targets table '%.100s', which cannot be replicated",
                       c->table);
    if ((is_insert || is_update) && !c->new_data)
        return invalid(err, "an %s of table '%s' carries no newData", op, c->table);
    const tinfo *t = NULL;
    if (tinfo_get(a, c->table, &t, err) != GS_OK)
        return GS_ERROR;
    if (check_image(t, c->new_data, "newData", err) != GS_OK ||
        check_image(t, c->old_data, "oldData", err) != GS_OK)
        return GS_ERROR;
    key k, old;
    memset(&old, 0, sizeof old);
    if (change_key(t, c, &k, err) != GS_OK)
        return GS_ERROR;
    const key *target = &k;
    gs_rrow *local = NULL;
    gs_status status = find_row(a, c->table, &k, &local, err);
    if (status == GS_OK && !local && is_update) {
        /* an update that changed the key: the row is still under its old key */
        int r = key_in_image(&k, c->old_data, &old, err);
        if (r < 0)
            status = GS_ERROR;
        else if (r > 0) {
            status = find_row(a, c->table, &old, &local, err);
            target = &old;
        }
    }
    const gs_rrow *written = NULL;
    if (status == GS_OK && !local) {
        if (is_insert) {
            status = insert_row(a, c->table, c->new_data, &k, err);
            written = c->new_data;
            a->res->applied++;
        } else {
            a->res->skipped++; /* spec: a remote update of a row absent here is skipped */
        }
    } else if (status == GS_OK) {
        decision d;
        status = resolve(a, c, local, &d, err);
        if (!d.in_order)
            a->res->conflicts++;
        if (status == GS_OK && d.kind == GS_RESOLVE_KEEP_LOCAL) {
            a->res->skipped++;
        } else if (status == GS_OK && d.kind == GS_RESOLVE_MERGED) {
            gs_error e;
            if (check_image(t, d.merged, "the merged row", &e) != GS_OK)
                status = conflict_error(err, c->table, c->row_id,
                                        "the resolver's merged row for table '%s' row '%s' "
                                        "does not fit the table: %s",
                                        c->table, c->row_id, e.message);
            if (status == GS_OK)
                status = update_row(a, c->table, d.merged, target, err);
            if (status == GS_OK && a->ctx->keep_column_versions)
                status = versions_record(a, c, d.merged, err);
            a->res->applied++;
        } else if (status == GS_OK && is_delete) {
            status = delete_row(a, c->table, target, err);
            a->res->applied++;
        } else if (status == GS_OK) {
            status = update_row(a, c->table, c->new_data, target, err);
            written = c->new_data;
            a->res->applied++;
        }
        gs_rrow_free(d.merged);
        if (status == GS_OK && is_delete && d.kind == GS_RESOLVE_TAKE_INCOMING)
            status = versions_delete_row(a, c->table, c->row_id, err);
    }
    if (status == GS_OK && written)
        status = versions_record(a, c, written, err);
    gs_rrow_free(local);
    key_free(&k);
    key_free(&old);
    return status;
}

/* Check a change's stamp and merge it into the clock. */
static gs_status merge_clock(applier *a, const gs_repl_change *c, size_t i, gs_error *err)
{
    gs_hlc *clock = a->ctx->clock;
    gs_hlc_ts ts;
    gs_error e;
    if (!c->hlc || gs_hlc_decode(c->hlc, &ts, &e) != GS_OK)
        return invalid(err, "change %zu of the batch has a malformed hlc '%.80s'", i,
                       c->hlc ? c->hlc : "");
    if (a->ctx->max_clock_drift_ms > 0) {
        pthread_mutex_lock(&clock->mu);
        int64_t physical = clock->time_fn(clock->time_user);
        pthread_mutex_unlock(&clock->mu);
        if (ts.wall_ms > physical && ts.wall_ms - physical > a->ctx->max_clock_drift_ms)
            return invalid(err,
                           "clock drift too high: change %zu's HLC is %lld ms ahead of this "
                           "node's clock (max %lld ms); check the clocks of both nodes",
                           i, (long long)(ts.wall_ms - physical),
                           (long long)a->ctx->max_clock_drift_ms);
    }
    char out[GS_HLC_MAX_LEN];
    return gs_hlc_receive(clock, c->hlc, out, err);
}

static gs_status apply_change(applier *a, const gs_repl_change *c, size_t i, gs_error *err)
{
    if (merge_clock(a, c, i, err) != GS_OK)
        return GS_ERROR;
    if (strcmp(c->operation, "ddl") == 0)
        return apply_ddl(a, c, err); /* writes no change row here */
    if (stamp_origin(a, c, err) != GS_OK)
        return GS_ERROR;
    return apply_data(a, c, err);
}

/* ---- validation and position ---- */

static gs_status validate(const gs_repl_batch *b, gs_error *err)
{
    if (!b->source_node_id || !b->source_node_id[0])
        return invalid(err, "the batch names no sourceNodeId");
    if (b->nchanges > GS_REPL_MAX_BATCH_CHANGES)
        return invalid(err, "the batch holds %zu changes; at most %d are allowed", b->nchanges,
                       GS_REPL_MAX_BATCH_CHANGES);
    if (b->from_seq < 1 || b->from_seq > b->to_seq)
        return invalid(err, "the batch covers seq %lld to %lld, which is not a range",
                       (long long)b->from_seq, (long long)b->to_seq);
    for (size_t i = 0; i < b->nchanges; i++) {
        const gs_repl_change *c = &b->changes[i];
        const char *op = c->operation ? c->operation : "";
        if (strcmp(op, "insert") && strcmp(op, "update") && strcmp(op, "delete") &&
            strcmp(op, "ddl"))
            return invalid(err,
                           "change %zu has operation '%.40s'; expected insert, update, "
                           "delete or ddl",
                           i, op);
        if (!c->hlc)
            return invalid(err, "change %zu has no hlc", i);
        if (strcmp(op, "ddl") != 0 && (!c->table || !c->row_id))
            return invalid(err, "change %zu (%s) lacks its table or rowId", i, op);
    }
    char sum[65];
    if (gs_repl_changes_checksum(b->changes, b->nchanges, sum, err) != GS_OK)
        return GS_ERROR;
    if (!b->checksum || strcmp(sum, b->checksum) != 0)
        return invalid(err, "checksum mismatch: the changes hash to %s but the batch says %.80s",
                       sum, b->checksum ? b->checksum : "(none)");
    return GS_OK;
}

/* How a call holds its writes: its own transaction, a savepoint in the caller's, or (the
 * caller asked with ctx->in_caller_tx) nothing at all, the caller undoing everything on a
 * failure. A savepoint costs a copy of every page the batch touches (SQLite's sub-journal),
 * which is why a caller applying many batches in one transaction does without. */
enum { TX_OWN = 1, TX_SAVEPOINT = 0, TX_NONE = 2 };

static gs_status tx_begin(gs_conn *conn, int caller_tx, int *own, gs_error *err)
{
    gs_error e;
    int autocommit = sqlite3_get_autocommit(gs_conn_db(conn));
    if (caller_tx && !autocommit) {
        *own = TX_NONE;
        return GS_OK;
    }
    *own = autocommit ? TX_OWN : TX_SAVEPOINT;
    if (gs_conn_exec(conn, *own == TX_OWN ? "BEGIN IMMEDIATE" : "SAVEPOINT " SAVEPOINT_NAME, &e) !=
        GS_OK)
        return gs_error_set(err, 0, "TRANSACTION_ERROR", "cannot begin the apply transaction: %s",
                            e.message);
    return GS_OK;
}

static gs_status tx_commit(gs_conn *conn, int own, gs_error *err)
{
    gs_error e;
    if (own == TX_NONE)
        return GS_OK;
    if (gs_conn_exec(conn, own == TX_OWN ? "COMMIT" : "RELEASE " SAVEPOINT_NAME, &e) != GS_OK)
        return gs_error_set(err, 0, "TRANSACTION_ERROR", "cannot commit the applied batch: %s",
                            e.message);
    return GS_OK;
}

static void tx_rollback(gs_conn *conn, int own)
{
    gs_error e;
    if (own == TX_NONE)
        return; /* the caller rolls its transaction back */
    if (own == TX_OWN) {
        if (!sqlite3_get_autocommit(gs_conn_db(conn)))
            gs_conn_exec(conn, "ROLLBACK", &e);
        return;
    }
    gs_conn_exec(conn, "ROLLBACK TO " SAVEPOINT_NAME, &e);
    gs_conn_exec(conn, "RELEASE " SAVEPOINT_NAME, &e);
}

static gs_status set_position(gs_conn *conn, const char *source, int64_t seq, gs_error *err)
{
    static const char INS[] =
        "INSERT INTO _sirannon_applied_changes (source_node_id, source_seq, applied_at) VALUES "
        "(?1, ?2, ?3) ON CONFLICT(source_node_id, source_seq) DO UPDATE SET applied_at = "
        "excluded.applied_at";
    static const char DEL[] =
        "DELETE FROM _sirannon_applied_changes WHERE source_node_id = ?1 AND source_seq != ?2";
    const char *sqls[2] = {INS, DEL};
    for (int i = 0; i < 2; i++) {
        gs_stmt *st;
        if (prep(conn, sqls[i], strlen(sqls[i]), &st, err) != GS_OK)
            return GS_ERROR;
        sqlite3_stmt *ss = gs_stmt_sqlite(st);
        sqlite3_bind_text(ss, 1, source, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ss, 2, seq);
        if (i == 0)
            sqlite3_bind_double(ss, 3, (double)gs_hlc_physical_ms() / 1000.0);
        int rc = gs_conn_step(conn, st, err);
        gs_conn_release(conn, st);
        if (rc != SQLITE_DONE) {
            gs_error_prefix(err, "recording the applied position of '%s'", source);
            return GS_ERROR;
        }
    }
    return GS_OK;
}

/* ---- entry points ---- */

void gs_repl_apply_result_free(gs_repl_apply_result *res)
{
    if (!res)
        return;
    for (size_t i = 0; i < res->ndropped; i++)
        gs_free(res->dropped_tables[i]);
    gs_free(res->dropped_tables);
    memset(res, 0, sizeof *res);
}

gs_status gs_repl_apply_batch(gs_conn *writer, const gs_repl_apply_ctx *ctx, const gs_repl_batch *b,
                              gs_repl_apply_result *res, gs_error *err)
{
    memset(res, 0, sizeof *res);
    if (!writer || !ctx || !ctx->clock || !b)
        return gs_error_set(err, 0, "INVALID_REQUEST",
                            "applying a batch needs the writer connection, a clock and a batch");
    if (validate(b, err) != GS_OK)
        return GS_ERROR;
    int own;
    if (tx_begin(writer, ctx->in_caller_tx, &own, err) != GS_OK)
        return GS_ERROR;
    applier a;
    memset(&a, 0, sizeof a);
    a.conn = writer;
    a.ctx = ctx;
    a.b = b;
    a.res = res;
    gs_buf_init(&a.sql);
    int64_t applied = 0;
    gs_status status = gs_repl_tables_ensure(writer, err);
    if (status == GS_OK)
        status = gs_repl_applied_seq(writer, b->source_node_id, &applied, err);
    size_t skip = 0;
    int nothing = 0;
    if (status == GS_OK) {
        res->applied_seq = applied;
        if (b->to_seq <= applied) {
            res->duplicate = 1;
            nothing = 1;
        } else if (applied > 0 && b->from_seq > applied + 1) {
            res->gap = 1;
            nothing = 1;
        } else if (b->from_seq <= applied) {
            if (b->to_seq - b->from_seq + 1 == (int64_t)b->nchanges) {
                skip = (size_t)(applied - b->from_seq + 1);
                res->skipped = skip;
            } else {
                res->gap = 1;
                nothing = 1;
            }
        }
    }
    if (status == GS_OK && !nothing)
        status = log_exists(&a, err);
    for (size_t i = skip; status == GS_OK && !nothing && i < b->nchanges; i++) {
        if (ctx->want && !ctx->want(ctx->want_user, &b->changes[i])) {
            res->skipped++; /* a table this node does not take from the source */
            res->filtered++;
            continue;
        }
        if (apply_change(&a, &b->changes[i], i, err) != GS_OK) {
            gs_error_prefix(err, "change %zu of batch %s (%s on '%s')", i,
                            b->batch_id ? b->batch_id : "?", b->changes[i].operation,
                            b->changes[i].table ? b->changes[i].table : "");
            status = GS_ERROR;
        }
    }
    /* the stamp lives only inside this transaction (cdc_internal.h) */
    if (status == GS_OK && a.stamped)
        status = gs_cdc_stamp_clear(writer, err);
    if (status == GS_OK && !nothing)
        status = set_position(writer, b->source_node_id, b->to_seq, err);
    if (status == GS_OK && !nothing) {
        char now[GS_HLC_MAX_LEN];
        gs_hlc_current(ctx->clock, now);
        status = gs_hlc_persist(writer, now, err);
        if (status != GS_OK)
            gs_error_prefix(err, "persisting the clock");
    }
    if (status == GS_OK && nothing)
        tx_rollback(writer, own); /* nothing was written */
    else if (status == GS_OK)
        status = tx_commit(writer, own, err);
    if (status != GS_OK) {
        tx_rollback(writer, own);
        gs_repl_apply_result_free(res);
        res->applied_seq = applied;
    } else if (!nothing) {
        res->applied_seq = b->to_seq;
    }
    tables_clear(&a);
    gs_free(a.tables);
    gs_buf_free(&a.sql);
    return status;
}

gs_status gs_repl_apply_record_position(gs_conn *writer, const char *source, int64_t seq,
                                        gs_error *err)
{
    if (!writer || !source || !source[0] || seq < 0)
        return gs_error_set(err, 0, "INVALID_REQUEST",
                            "recording a position needs the source's node id and a seq >= 0");
    int own;
    if (tx_begin(writer, 0, &own, err) != GS_OK)
        return GS_ERROR;
    gs_status status = gs_repl_tables_ensure(writer, err);
    if (status == GS_OK)
        status = set_position(writer, source, seq, err);
    if (status == GS_OK)
        status = tx_commit(writer, own, err);
    if (status != GS_OK)
        tx_rollback(writer, own);
    return status;
}
