/*
 * The local side of a source: catalogue, local tables and batches, run on the writer thread.
 */
#include "source_apply.h"
#include "source_names.h"
#include "../repl/rowsql.h"

#include "../base/alloc.h"
#include "../base/buf.h"
#include "../base/error.h"
#include "../base/log.h"
#include "../db/database_internal.h"
#include "../db/job.h"
#include "../sqlite/connection.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define CATALOGUE_SQL                                                                              \
    "CREATE TABLE IF NOT EXISTS _sirannon_gs_sources (source TEXT NOT NULL, remote_table TEXT "    \
    "NOT NULL, local_table TEXT NOT NULL, seq TEXT NOT NULL, epoch TEXT NOT NULL, "                \
    "rows_bootstrapped INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL, PRIMARY KEY "         \
    "(source, remote_table)) WITHOUT ROWID"

/* ---- waiting for the writer ---- */

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    gs_status st;
    gs_error err;
} waiter;

static void waiter_done(void *user, const gs_db_reply *reply)
{
    waiter *w = user;
    pthread_mutex_lock(&w->mu);
    w->st = reply->status;
    if (reply->status != GS_OK)
        gs_error_copy(&w->err, &reply->err);
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static gs_status run_on_writer(gs_database *db, gs_db_writer_fn fn, void *user, gs_error *err)
{
    waiter w;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    gs_error_init(&w.err);
    gs_status st = gs_db_writer_call(db, fn, user, waiter_done, &w, err);
    if (st == GS_OK) {
        /* the writer answers every job, at the latest at its deadline (write_timeout_ms) */
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        st = w.st;
        if (st != GS_OK)
            gs_error_copy(err, &w.err);
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return st;
}

/* ---- statements ---- */

static gs_status bind_value(sqlite3_stmt *st, int i, const gs_value *v, gs_error *err)
{
    int rc;
    switch (v->type) {
    case GS_VALUE_INT: rc = sqlite3_bind_int64(st, i, v->u.i); break;
    case GS_VALUE_DOUBLE: rc = sqlite3_bind_double(st, i, v->u.d); break;
    case GS_VALUE_TEXT:
        rc = sqlite3_bind_text64(st, i, v->u.text.ptr ? v->u.text.ptr : "", v->u.text.len,
                                 SQLITE_TRANSIENT, SQLITE_UTF8);
        break;
    case GS_VALUE_BLOB:
        rc = sqlite3_bind_blob64(st, i, v->u.blob.ptr ? (const void *)v->u.blob.ptr : "",
                                 v->u.blob.len, SQLITE_TRANSIENT);
        break;
    default: rc = sqlite3_bind_null(st, i); break;
    }
    if (rc != SQLITE_OK)
        return gs_error_set(err, 0, "QUERY_ERROR", "binding a value: %s", sqlite3_errstr(rc));
    return GS_OK;
}

/* Prepare (trusted), bind n values, step to the end. */
static gs_status run_stmt(gs_conn *conn, const char *sql, size_t len, const gs_value *const *vals,
                          size_t n, gs_error *err)
{
    gs_stmt *st;
    if (gs_conn_prepare(conn, sql, len, GS_PREP_TRUSTED, &st, err) != GS_OK)
        return GS_ERROR;
    gs_status rc = GS_OK;
    for (size_t i = 0; i < n && rc == GS_OK; i++)
        rc = bind_value(gs_stmt_sqlite(st), (int)i + 1, vals[i], err);
    while (rc == GS_OK) {
        int s = gs_conn_step(conn, st, err);
        if (s == SQLITE_DONE)
            break;
        if (s != SQLITE_ROW)
            rc = GS_ERROR;
    }
    gs_conn_release(conn, st);
    return rc;
}

static gs_status exec(gs_conn *conn, const char *sql, gs_error *err)
{
    return gs_conn_exec(conn, sql, err);
}

/* ---- catalogue ---- */

typedef struct load_job {
    const char *source_id;
    gs_source_position *items;
    size_t count;
} load_job;

static gs_status load_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    load_job *j = user;
    if (exec(conn, CATALOGUE_SQL, err) != GS_OK)
        return GS_ERROR;
    static const char sql[] = "SELECT remote_table, local_table, seq, epoch, rows_bootstrapped "
                              "FROM _sirannon_gs_sources WHERE source = ?1 ORDER BY remote_table";
    gs_stmt *st;
    if (gs_conn_prepare(conn, sql, sizeof sql - 1, GS_PREP_TRUSTED, &st, err) != GS_OK)
        return GS_ERROR;
    sqlite3_stmt *s = gs_stmt_sqlite(st);
    sqlite3_bind_text(s, 1, j->source_id, -1, SQLITE_STATIC);
    gs_status rc = GS_OK;
    for (;;) {
        int r = gs_conn_step(conn, st, err);
        if (r == SQLITE_DONE)
            break;
        if (r != SQLITE_ROW) {
            rc = GS_ERROR;
            break;
        }
        gs_source_position *grown = gs_realloc(j->items, (j->count + 1) * sizeof *grown);
        if (!grown) {
            rc = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
            break;
        }
        j->items = grown;
        gs_source_position *p = &j->items[j->count++];
        memset(p, 0, sizeof *p);
        snprintf(p->remote_table, sizeof p->remote_table, "%s",
                 (const char *)sqlite3_column_text(s, 0));
        snprintf(p->local_table, sizeof p->local_table, "%s",
                 (const char *)sqlite3_column_text(s, 1));
        snprintf(p->seq, sizeof p->seq, "%s", (const char *)sqlite3_column_text(s, 2));
        snprintf(p->epoch, sizeof p->epoch, "%s", (const char *)sqlite3_column_text(s, 3));
        p->rows_bootstrapped = sqlite3_column_int64(s, 4);
    }
    gs_conn_release(conn, st);
    return rc;
}

gs_status gs_source_catalogue_load(gs_database *db, const char *source_id, gs_source_position **out,
                                   size_t *count, gs_error *err)
{
    load_job j = {source_id, NULL, 0};
    *out = NULL;
    *count = 0;
    if (run_on_writer(db, load_fn, &j, err) != GS_OK) {
        gs_free(j.items);
        return GS_ERROR;
    }
    *out = j.items;
    *count = j.count;
    return GS_OK;
}

/* ---- local tables ---- */

typedef struct prepare_job {
    const char *local;
    const char *create_sql;
    int created;
    int columns_added;
    char **pk;
    size_t npk;
} prepare_job;

/* The remote table gained columns since the local copy was made (ALTER TABLE ... ADD COLUMN
 * there): add each one here with its declared type and default, so the remote's changes
 * apply. The remote definition is read by creating it in a private in-memory database; a
 * definition SQLite cannot create there adds nothing (the apply reports the mismatch). */
static gs_status add_missing_columns(gs_conn *conn, prepare_job *j, gs_error *err)
{
    sqlite3 *mem = NULL;
    if (sqlite3_open_v2(":memory:", &mem, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(mem, j->create_sql, NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_close(mem);
        return GS_OK;
    }
    sqlite3_stmt *st = NULL;
    gs_status rc = GS_OK;
    if (sqlite3_prepare_v2(mem,
                           "SELECT name, type, \"notnull\", dflt_value FROM pragma_table_info(?1) "
                           "ORDER BY cid",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_close(mem);
        return GS_OK;
    }
    sqlite3_bind_text(st, 1, j->local, -1, SQLITE_STATIC);
    sqlite3 *db = gs_conn_db(conn);
    gs_buf sql;
    gs_buf_init(&sql);
    while (rc == GS_OK && sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        const char *type = (const char *)sqlite3_column_text(st, 1);
        const char *dflt = (const char *)sqlite3_column_text(st, 3);
        if (!name || sqlite3_table_column_metadata(db, "main", j->local, name, NULL, NULL, NULL,
                                                   NULL, NULL) == SQLITE_OK)
            continue;
        gs_buf_reset(&sql);
        gs_buf_puts(&sql, "ALTER TABLE ");
        gs_repl_quote_ident(&sql, j->local);
        gs_buf_puts(&sql, " ADD COLUMN ");
        gs_repl_quote_ident(&sql, name);
        if (type && *type)
            gs_buf_printf(&sql, " %s", type);
        if (dflt)
            gs_buf_printf(&sql, " DEFAULT %s%s", dflt,
                          sqlite3_column_int(st, 2) ? " NOT NULL" : "");
        if (sql.oom) {
            rc = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
            break;
        }
        if (exec(conn, sql.data, err) != GS_OK) {
            gs_error_prefix(err, "adding column '%s' of the remote table to '%s'", name, j->local);
            rc = GS_ERROR;
            break;
        }
        j->columns_added++;
        gs_log(GS_LOG_INFO, "source",
               "local table '%s' gains column '%s' (the remote table has it): %s", j->local, name,
               sql.data);
    }
    gs_buf_free(&sql);
    sqlite3_finalize(st);
    sqlite3_close(mem);
    return rc;
}

static gs_status prepare_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    prepare_job *j = user;
    sqlite3 *db = gs_conn_db(conn);
    int exists = sqlite3_table_column_metadata(db, "main", j->local, NULL, NULL, NULL, NULL, NULL,
                                               NULL) == SQLITE_OK;
    if (!exists) {
        if (!j->create_sql)
            return gs_error_set(err, 0, "INVALID_REQUEST", "local table '%s' does not exist",
                                j->local);
        if (exec(conn, j->create_sql, err) != GS_OK) {
            gs_error_prefix(err, "creating local table '%s'", j->local);
            return GS_ERROR;
        }
        j->created = 1;
    } else if (j->create_sql && add_missing_columns(conn, j, err) != GS_OK) {
        return GS_ERROR;
    }
    gs_buf q;
    gs_buf_init(&q);
    gs_buf_puts(&q, "SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk");
    gs_stmt *st;
    if (q.oom || gs_conn_prepare(conn, q.data, q.len, GS_PREP_TRUSTED, &st, err) != GS_OK) {
        gs_buf_free(&q);
        return q.oom ? gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory") : GS_ERROR;
    }
    gs_buf_free(&q);
    sqlite3_bind_text(gs_stmt_sqlite(st), 1, j->local, -1, SQLITE_STATIC);
    gs_status rc = GS_OK;
    for (;;) {
        int r = gs_conn_step(conn, st, err);
        if (r == SQLITE_DONE)
            break;
        if (r != SQLITE_ROW) {
            rc = GS_ERROR;
            break;
        }
        char **grown = gs_realloc(j->pk, (j->npk + 1) * sizeof *grown);
        char *name = gs_strdup((const char *)sqlite3_column_text(gs_stmt_sqlite(st), 0));
        if (!grown || !name) {
            if (grown)
                j->pk = grown;
            gs_free(name);
            rc = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
            break;
        }
        j->pk = grown;
        j->pk[j->npk++] = name;
    }
    gs_conn_release(conn, st);
    if (rc == GS_OK && j->npk == 0)
        rc = gs_error_set(err, 0, "INVALID_REQUEST",
                          "table '%s' has no PRIMARY KEY: a source applies changes by primary "
                          "key; give the remote table one, or leave it out of `tables`",
                          j->local);
    return rc;
}

gs_status gs_source_table_prepare(gs_database *db, const char *local, const char *create_sql,
                                  int *created, char ***pk, size_t *npk, gs_error *err)
{
    prepare_job j = {local, create_sql, 0, 0, NULL, 0};
    gs_status rc = run_on_writer(db, prepare_fn, &j, err);
    if (rc != GS_OK) {
        for (size_t i = 0; i < j.npk; i++)
            gs_free(j.pk[i]);
        gs_free(j.pk);
        return GS_ERROR;
    }
    *created = j.created;
    *pk = j.pk;
    *npk = j.npk;
    return GS_OK;
}

/* ---- batches ---- */

static const gs_value *find_col(const gs_source_op *op, const char *name)
{
    for (size_t i = 0; i < op->count; i++)
        if (strcasecmp(op->cols[i], name) == 0)
            return &op->vals[i];
    return NULL;
}

static int is_pk(const gs_source_op *op, const char *col)
{
    for (size_t i = 0; i < op->npk; i++)
        if (strcasecmp(op->pk[i], col) == 0)
            return 1;
    return 0;
}

static gs_status apply_op(gs_conn *conn, const gs_source_op *op, gs_buf *sql, const gs_value **vals,
                          gs_error *err)
{
    gs_buf_reset(sql);
    size_t n = 0;
    if (op->is_delete) {
        gs_buf_puts(sql, "DELETE FROM ");
        gs_repl_quote_ident(sql, op->local);
        gs_buf_puts(sql, " WHERE ");
        for (size_t i = 0; i < op->npk; i++) {
            const gs_value *v = find_col(op, op->pk[i]);
            if (!v)
                return gs_error_set(err, 0, "INVALID_RESPONSE",
                                    "a delete on '%s' carries no value for key column '%s'",
                                    op->local, op->pk[i]);
            if (i)
                gs_buf_puts(sql, " AND ");
            gs_repl_quote_ident(sql, op->pk[i]);
            gs_buf_puts(sql, " IS ?");
            vals[n++] = v;
        }
    } else {
        if (op->count == 0)
            return gs_error_set(err, 0, "INVALID_RESPONSE", "a change on '%s' carries no row",
                                op->local);
        gs_buf_puts(sql, "INSERT INTO ");
        gs_repl_quote_ident(sql, op->local);
        gs_buf_puts(sql, " (");
        for (size_t i = 0; i < op->count; i++) {
            if (i)
                gs_buf_putc(sql, ',');
            gs_repl_quote_ident(sql, op->cols[i]);
            vals[n++] = &op->vals[i];
        }
        gs_buf_puts(sql, ") VALUES (");
        for (size_t i = 0; i < op->count; i++)
            gs_buf_puts(sql, i ? ",?" : "?");
        gs_buf_puts(sql, ") ON CONFLICT (");
        for (size_t i = 0; i < op->npk; i++) {
            if (i)
                gs_buf_putc(sql, ',');
            gs_repl_quote_ident(sql, op->pk[i]);
        }
        gs_buf_puts(sql, ") DO ");
        int any = 0;
        for (size_t i = 0; i < op->count; i++) {
            if (is_pk(op, op->cols[i]))
                continue;
            gs_buf_puts(sql, any ? "," : "UPDATE SET ");
            gs_repl_quote_ident(sql, op->cols[i]);
            gs_buf_puts(sql, "=excluded.");
            gs_repl_quote_ident(sql, op->cols[i]);
            any = 1;
        }
        if (!any)
            gs_buf_puts(sql, "NOTHING");
    }
    if (sql->oom)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    if (run_stmt(conn, sql->data, sql->len, vals, n, err) != GS_OK) {
        gs_error_prefix(err, "applying a change to '%s'", op->local);
        return GS_ERROR;
    }
    return GS_OK;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static gs_status store_position(gs_conn *conn, const char *source, const gs_source_position *p,
                                gs_error *err)
{
    static const char sql[] =
        "INSERT INTO _sirannon_gs_sources (source, remote_table, local_table, seq, epoch, "
        "rows_bootstrapped, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (source, "
        "remote_table) DO UPDATE SET local_table = excluded.local_table, seq = excluded.seq, "
        "epoch = excluded.epoch, rows_bootstrapped = rows_bootstrapped + "
        "excluded.rows_bootstrapped, "
        "updated_at = excluded.updated_at";
    gs_stmt *st;
    if (gs_conn_prepare(conn, sql, sizeof sql - 1, GS_PREP_TRUSTED, &st, err) != GS_OK)
        return GS_ERROR;
    sqlite3_stmt *s = gs_stmt_sqlite(st);
    sqlite3_bind_text(s, 1, source, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, p->remote_table, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, p->local_table, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, p->seq, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, p->epoch, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 6, p->rows_bootstrapped);
    sqlite3_bind_double(s, 7, now_s());
    int r = gs_conn_step(conn, st, err);
    gs_conn_release(conn, st);
    return r == SQLITE_DONE ? GS_OK : GS_ERROR;
}

static gs_status apply_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)out;
    const gs_source_batch *b = user;
    size_t maxvals = 1;
    for (size_t i = 0; i < b->nops; i++)
        if (b->ops[i].count > maxvals)
            maxvals = b->ops[i].count;
    const gs_value **vals = gs_malloc(maxvals * sizeof *vals);
    if (!vals)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    gs_buf sql;
    gs_buf_init(&sql);
    /* foreign keys: a copy may reference tables under their remote names, and the remote
     * already enforced them; the pragma cannot change inside a transaction */
    gs_status rc = exec(conn, "PRAGMA foreign_keys = OFF", err);
    if (rc == GS_OK)
        rc = exec(conn, "BEGIN IMMEDIATE", err);
    int in_tx = rc == GS_OK;
    for (size_t i = 0; rc == GS_OK && i < b->nclear; i++) {
        gs_buf_reset(&sql);
        gs_buf_puts(&sql, "DELETE FROM ");
        gs_repl_quote_ident(&sql, b->clear[i]);
        rc = sql.oom ? gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory")
                     : run_stmt(conn, sql.data, sql.len, NULL, 0, err);
    }
    for (size_t i = 0; rc == GS_OK && i < b->nops; i++)
        rc = apply_op(conn, &b->ops[i], &sql, vals, err);
    for (size_t i = 0; rc == GS_OK && i < b->npositions; i++)
        rc = store_position(conn, b->source_id, &b->positions[i], err);
    if (rc == GS_OK)
        rc = exec(conn, "COMMIT", err);
    if (rc != GS_OK && in_tx) {
        gs_error ignore;
        gs_error_init(&ignore);
        exec(conn, "ROLLBACK", &ignore);
    }
    gs_error fk;
    gs_error_init(&fk);
    exec(conn, "PRAGMA foreign_keys = ON", &fk);
    gs_buf_free(&sql);
    gs_free(vals);
    return rc;
}

gs_status gs_source_apply(gs_database *db, const gs_source_batch *batch, gs_error *err)
{
    return run_on_writer(db, apply_fn, (void *)batch, err);
}
