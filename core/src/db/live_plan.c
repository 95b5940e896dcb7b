/*
 * Planning a live query at open: the statement's shape and parameters, the table it reads
 * (columns, declared types and collations, how a row is identified), SQLite's confirmation
 * that it reads that table only, the statements the query runs (the positioned read and the
 * probe evaluation, rebuilt from the statement's own pieces), and the probe table with the
 * ORDER BY collations and LIMIT/OFFSET values SQLite resolves. See live_internal.h.
 *
 * Threads: the opener's thread, before the worker starts.
 */
#include "live_internal.h"

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "sqlite/guard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The value a parameter token binds, or NULL. */
static const gs_value *param_value(const gs_live *lv, size_t tok)
{
    const gs_ltok *t = &lv->shape.toks[tok];
    if (lv->params.kind == GS_BIND_POSITIONAL) {
        if (t->param >= 1 && (size_t)t->param <= lv->params.count)
            return &lv->params.items[t->param - 1].value;
        return NULL;
    }
    if (lv->params.kind != GS_BIND_NAMED)
        return NULL;
    const char *name = lv->shape.sql + t->start;
    for (size_t i = 0; i < lv->params.count; i++) {
        const char *k = lv->params.items[i].name;
        size_t kl = strlen(k);
        if ((kl == t->len && memcmp(k, name, kl) == 0) ||
            (kl + 1 == t->len && memcmp(k, name + 1, kl) == 0))
            return &lv->params.items[i].value;
    }
    return NULL;
}

static gs_status check_date_params(gs_live *lv, gs_error *err)
{
    for (size_t i = 0; i < lv->shape.ndate_params; i++) {
        const gs_value *v = param_value(lv, lv->shape.date_params[i]);
        if (v && v->type == GS_VALUE_TEXT && v->u.text.len == 3 &&
            strncasecmp(v->u.text.ptr, "now", 3) == 0)
            return gs_error_set(err, 0, "CDC_ERROR",
                                "a live query keeps a single-table SELECT current: a date/time "
                                "function of 'now' is nondeterministic");
    }
    return GS_OK;
}

static gs_status params_take(gs_live *lv, json_t *params, gs_error *err)
{
    size_t count = 0, bytes = 0;
    if (gs_params_check(params, "params", &count, &bytes, err) != GS_OK)
        return GS_ERROR;
    lv->param_items = gs_calloc(count ? count : 1, sizeof *lv->param_items);
    lv->param_arena = gs_malloc(bytes ? bytes : 1);
    if (!lv->param_items || !lv->param_arena)
        return gs_live_oom(err);
    char *arena = lv->param_arena;
    gs_params_convert(params, &lv->params, lv->param_items, &arena);
    return GS_OK;
}

gs_status gs_live_reader_open(const gs_live *lv, gs_conn **out, gs_error *err)
{
    gs_conn_options co = {
        .path = lv->path,
        .role = GS_CONN_READER,
        .sync_level = 1,
        .wal_autocheckpoint = -1,
        .busy_timeout_ms = lv->busy_timeout_ms,
        .stmt_cache_size = 0,
    };
    return gs_conn_open(&co, out, err);
}

static int col_index(const gs_live *lv, const char *name)
{
    for (size_t i = 0; i < lv->ncols; i++)
        if (strcasecmp(lv->cols[i].name, name) == 0)
            return (int)i;
    return -1;
}

gs_status gs_live_prep_trusted(gs_conn *c, const char *sql, gs_stmt **st, gs_error *err)
{
    if (gs_conn_prepare(c, sql, strlen(sql), GS_PREP_TRUSTED, st, err) != GS_OK) {
        gs_error_set(err, 0, "QUERY_ERROR", "%s", sqlite3_errmsg(gs_conn_db(c)));
        return GS_ERROR;
    }
    return GS_OK;
}

static gs_status inspect_table(gs_live *lv, gs_conn *c, gs_error *err)
{
    sqlite3 *db = gs_conn_db(c);
    const char *table = lv->shape.table;
    gs_stmt *st;
    int rc;

    if (gs_live_prep_trusted(c, "PRAGMA encoding", &st, err) != GS_OK)
        return GS_ERROR;
    rc = gs_conn_step(c, st, err);
    int utf8 = rc == SQLITE_ROW &&
               strcasecmp((const char *)sqlite3_column_text(gs_stmt_sqlite(st), 0), "UTF-8") == 0;
    gs_conn_release(c, st);
    if (!utf8)
        return gs_error_set(err, 0, "CDC_ERROR",
                            "live queries need a UTF-8 database (its text order is compared "
                            "byte by byte)");

    if (gs_live_prep_trusted(
            c,
            "SELECT type, wr, name FROM pragma_table_list WHERE schema = 'main' AND "
            "name = ?1 COLLATE NOCASE",
            &st, err) != GS_OK)
        return GS_ERROR;
    sqlite3_bind_text(gs_stmt_sqlite(st), 1, table, -1, SQLITE_STATIC);
    rc = gs_conn_step(c, st, err);
    if (rc != SQLITE_ROW) {
        gs_conn_release(c, st);
        if (rc == SQLITE_DONE)
            return gs_error_set(err, 0, "CDC_ERROR",
                                "a live query reads a table of the main "
                                "database; '%s' is not one",
                                table);
        return GS_ERROR;
    }
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    const char *type = (const char *)sqlite3_column_text(ss, 0);
    int without_rowid = sqlite3_column_int(ss, 1);
    int is_table = type && strcmp(type, "table") == 0;
    gs_conn_release(c, st);
    if (!is_table)
        return gs_error_set(err, 0, "CDC_ERROR",
                            "'%s' is a %s: a live query reads a table, whose changes the "
                            "change feed carries",
                            table, type ? type : "?");

    if (gs_live_prep_trusted(c, "SELECT name, type, pk, hidden FROM pragma_table_xinfo(?1)", &st,
                             err) != GS_OK)
        return GS_ERROR;
    ss = gs_stmt_sqlite(st);
    sqlite3_bind_text(ss, 1, table, -1, SQLITE_STATIC);
    size_t cap = 0;
    while ((rc = gs_conn_step(c, st, err)) == SQLITE_ROW) {
        if (sqlite3_column_int(ss, 3) != 0) {
            gs_conn_release(c, st);
            return gs_error_set(err, 0, "CDC_ERROR",
                                "table '%s' has generated or hidden columns, which change "
                                "events do not carry; a live query cannot evaluate them",
                                table);
        }
        if (lv->ncols == cap) {
            cap = cap ? cap * 2 : 16;
            gs_live_col *nc = gs_realloc(lv->cols, cap * sizeof *nc);
            if (!nc) {
                gs_conn_release(c, st);
                return gs_live_oom(err);
            }
            lv->cols = nc;
        }
        gs_live_col *col = &lv->cols[lv->ncols];
        memset(col, 0, sizeof *col);
        lv->ncols++;
        const char *name = (const char *)sqlite3_column_text(ss, 0);
        const char *decl = (const char *)sqlite3_column_text(ss, 1);
        col->name = gs_strdup(name ? name : "");
        col->type = gs_strdup(decl ? decl : "");
        col->pk = sqlite3_column_int(ss, 2);
        if (!col->name || !col->type) {
            gs_conn_release(c, st);
            return gs_live_oom(err);
        }
    }
    gs_conn_release(c, st);
    if (rc != SQLITE_DONE)
        return GS_ERROR;
    if (lv->ncols == 0)
        return gs_error_set(err, 0, "CDC_ERROR", "table '%s' has no columns", table);

    for (size_t i = 0; i < lv->ncols; i++) {
        const char *coll = NULL;
        if (sqlite3_table_column_metadata(db, "main", table, lv->cols[i].name, NULL, &coll, NULL,
                                          NULL, NULL) != SQLITE_OK)
            return gs_error_set(err, 0, "CDC_ERROR", "reading column '%s' of '%s': %s",
                                lv->cols[i].name, table, sqlite3_errmsg(db));
        if (coll && strcasecmp(coll, "BINARY") != 0) {
            lv->cols[i].coll = gs_strdup(coll);
            if (!lv->cols[i].coll)
                return gs_live_oom(err);
        }
        if (lv->cols[i].pk > 0)
            lv->npk++;
    }
    if (lv->npk) {
        lv->pkcols = gs_calloc(lv->npk, sizeof *lv->pkcols);
        if (!lv->pkcols)
            return gs_live_oom(err);
        for (size_t i = 0; i < lv->ncols; i++)
            if (lv->cols[i].pk > 0 && (size_t)lv->cols[i].pk <= lv->npk)
                lv->pkcols[lv->cols[i].pk - 1] = i;
    }

    /* the rowid: its alias, no key at all, or out of reach */
    if (without_rowid) {
        lv->mode = GS_LIVE_KEY_PK;
    } else if (lv->npk == 0) {
        lv->mode = GS_LIVE_KEY_ROWID;
    } else {
        lv->mode = GS_LIVE_KEY_PK;
        if (lv->npk == 1 && strcasecmp(lv->cols[lv->pkcols[0]].type, "INTEGER") == 0) {
            /* INTEGER PRIMARY KEY aliases the rowid unless declared DESC, when SQLite builds
             * an index for it instead */
            if (gs_live_prep_trusted(
                    c, "SELECT count(*) FROM pragma_index_list(?1) WHERE origin = 'pk'", &st,
                    err) != GS_OK)
                return GS_ERROR;
            sqlite3_bind_text(gs_stmt_sqlite(st), 1, table, -1, SQLITE_STATIC);
            rc = gs_conn_step(c, st, err);
            int pk_index = rc == SQLITE_ROW ? sqlite3_column_int(gs_stmt_sqlite(st), 0) : -1;
            gs_conn_release(c, st);
            if (pk_index < 0)
                return GS_ERROR;
            if (pk_index == 0)
                lv->mode = GS_LIVE_KEY_ALIAS;
        }
    }
    static const char *const rowid_names[] = {"rowid", "oid", "_rowid_"};
    for (size_t i = 0; i < 3 && !lv->rowid_name; i++)
        if (col_index(lv, rowid_names[i]) < 0)
            lv->rowid_name = rowid_names[i];
    if (!lv->rowid_name)
        return gs_error_set(err, 0, "CDC_ERROR",
                            "table '%s' has columns named rowid, oid and _rowid_; a live query "
                            "needs one of the names for the row's identity",
                            table);
    if (lv->mode == GS_LIVE_KEY_PK && lv->shape.refs_rowid) {
        for (size_t t = 0; t < lv->shape.ntoks; t++) {
            const gs_ltok *k = &lv->shape.toks[t];
            if (k->kind != GS_LTOK_WORD && k->kind != GS_LTOK_QUOTED)
                continue;
            char *w = gs_live_shape_ident(&lv->shape, t);
            if (!w)
                return gs_live_oom(err);
            int bad = (strcasecmp(w, "rowid") == 0 || strcasecmp(w, "oid") == 0 ||
                       strcasecmp(w, "_rowid_") == 0) &&
                      col_index(lv, w) < 0;
            gs_free(w);
            if (bad)
                return gs_error_set(err, 0, "CDC_ERROR",
                                    "the statement reads the rowid of '%s', whose change events "
                                    "identify rows by its primary key instead; select the key "
                                    "columns",
                                    table);
        }
    }
    return GS_OK;
}

/* SQLite's own word that the statement reads one table: every b-tree its program opens is
 * the table or one of its indexes (a subquery, `x IN other_table` or a virtual table would
 * open another). */
static gs_status check_single_table(gs_live *lv, gs_conn *c, gs_error *err)
{
    int64_t *roots = NULL;
    size_t nroots = 0, cap = 0;
    gs_stmt *st;
    if (gs_live_prep_trusted(
            c,
            "SELECT rootpage FROM sqlite_schema WHERE tbl_name = ?1 COLLATE NOCASE AND "
            "type IN ('table', 'index') AND rootpage > 0",
            &st, err) != GS_OK)
        return GS_ERROR;
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    sqlite3_bind_text(ss, 1, lv->shape.table, -1, SQLITE_STATIC);
    int rc;
    while ((rc = gs_conn_step(c, st, err)) == SQLITE_ROW) {
        if (nroots == cap) {
            cap = cap ? cap * 2 : 16;
            int64_t *r = gs_realloc(roots, cap * sizeof *r);
            if (!r) {
                gs_conn_release(c, st);
                gs_free(roots);
                return gs_live_oom(err);
            }
            roots = r;
        }
        roots[nroots++] = sqlite3_column_int64(ss, 0);
    }
    gs_conn_release(c, st);
    if (rc != SQLITE_DONE) {
        gs_free(roots);
        return GS_ERROR;
    }
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_puts(&b, "EXPLAIN ");
    gs_buf_append(&b, lv->shape.sql, lv->shape.len);
    if (b.oom) {
        gs_buf_free(&b);
        gs_free(roots);
        return gs_live_oom(err);
    }
    gs_status out = gs_conn_prepare(c, b.data, b.len, GS_PREP_TRUSTED, &st, err);
    gs_buf_free(&b);
    if (out != GS_OK) {
        gs_free(roots);
        return gs_error_set(err, 0, "QUERY_ERROR", "%s", sqlite3_errmsg(gs_conn_db(c)));
    }
    ss = gs_stmt_sqlite(st);
    while (out == GS_OK && (rc = gs_conn_step(c, st, err)) == SQLITE_ROW) {
        const char *op = (const char *)sqlite3_column_text(ss, 1);
        if (!op)
            continue;
        if (strcmp(op, "VOpen") == 0) {
            out = gs_error_set(err, 0, "CDC_ERROR",
                               "a live query keeps a single-table SELECT current: the "
                               "statement reads a virtual table");
            break;
        }
        if (strcmp(op, "OpenRead") != 0 && strcmp(op, "ReopenIdx") != 0 &&
            strcmp(op, "OpenWrite") != 0)
            continue;
        int64_t root = sqlite3_column_int64(ss, 3);
        int dbi = sqlite3_column_int(ss, 4);
        int known = 0;
        for (size_t i = 0; dbi == 0 && i < nroots; i++)
            if (roots[i] == root)
                known = 1;
        if (!known)
            out = gs_error_set(err, 0, "CDC_ERROR",
                               "a live query keeps a single-table SELECT current: the "
                               "statement reads a table other than '%s' (a subquery or "
                               "`IN table`)",
                               lv->shape.table);
    }
    if (out == GS_OK && rc != SQLITE_DONE)
        out = GS_ERROR;
    gs_conn_release(c, st);
    gs_free(roots);
    return out;
}

/* Prepare the statement as the user wrote it: its errors are the user's (QUERY_ERROR), and
 * it tells the result's columns and which table each comes from. */
static gs_status check_statement(gs_live *lv, gs_conn *c, gs_error *err)
{
    gs_stmt *st;
    if (gs_conn_prepare(c, lv->shape.sql, lv->shape.len, 0, &st, err) != GS_OK)
        return GS_ERROR;
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    gs_status rc = GS_OK;
    if (!sqlite3_stmt_readonly(ss)) {
        rc = gs_error_set(err, 0, "CDC_ERROR", "a live query must not modify the database");
        goto out;
    }
    if (sqlite3_bind_parameter_count(ss) != lv->shape.max_param) {
        rc = gs_error_set(err, 0, "CDC_ERROR",
                          "the statement's parameters could not be numbered (%d found, SQLite "
                          "counts %d)",
                          lv->shape.max_param, sqlite3_bind_parameter_count(ss));
        goto out;
    }
    if (gs_params_bind(ss, &lv->params, err) != GS_OK) {
        rc = GS_ERROR;
        goto out;
    }
    lv->nvis = sqlite3_column_count(ss);
    /* the result's keys are the statement's own column names (the rebuilt statements name
     * their parameters ?N, which would change an expression column's name) */
    if (gs_row_keys_build(&lv->rkeys, ss) != 0) {
        rc = gs_live_oom(err);
        goto out;
    }
    for (int i = 0; i < lv->nvis; i++) {
        const char *t = sqlite3_column_table_name(ss, i);
        const char *d = sqlite3_column_database_name(ss, i);
        if ((t && strcasecmp(t, lv->shape.table) != 0) || (d && strcmp(d, "main") != 0)) {
            rc = gs_error_set(err, 0, "CDC_ERROR",
                              "a live query reads one table; column %d comes from '%s'", i + 1,
                              t ? t : "?");
            goto out;
        }
    }
out:
    gs_conn_release(c, st);
    return rc;
}

static void append_source(gs_live *lv, gs_buf *b)
{
    gs_buf_puts(b, lv->source);
    gs_buf_putc(b, '.');
    gs_buf_puts(b, lv->rowid_name);
}

static void append_col_ref(gs_live *lv, gs_buf *b, size_t col)
{
    gs_buf_puts(b, lv->source);
    gs_buf_putc(b, '.');
    gs_live_quote_ident(b, lv->cols[col].name);
}

/* Resolve each ORDER BY term to a result column (alias or ordinal) or a hidden expression;
 * with no ORDER BY, the rows keep their identity's order. */
static gs_status plan_terms(gs_live *lv, gs_error *err)
{
    const gs_live_shape *s = &lv->shape;
    size_t n = s->nterms ? s->nterms : (lv->mode == GS_LIVE_KEY_PK ? lv->npk : 1);
    lv->terms = gs_calloc(n, sizeof *lv->terms);
    lv->keys = gs_calloc(n, sizeof *lv->keys);
    if (!lv->terms || !lv->keys)
        return gs_live_oom(err);
    lv->nterms = n;
    /* result column of each select item's first column */
    size_t ncolumns = 0;
    for (size_t i = 0; i < s->nitems; i++)
        ncolumns += s->items[i].star ? lv->ncols : 1;
    int map_ok = ncolumns == (size_t)lv->nvis;
    gs_buf b;
    gs_buf_init(&b);
    for (size_t i = 0; i < n; i++) {
        gs_live_sort_term *t = &lv->terms[i];
        t->col = -1;
        if (!s->nterms) {
            if (lv->mode == GS_LIVE_KEY_ROWID)
                append_source(lv, &b);
            else
                append_col_ref(lv, &b, lv->pkcols[i]);
            const char *coll = lv->mode == GS_LIVE_KEY_ROWID ? NULL : lv->cols[lv->pkcols[i]].coll;
            if (coll)
                gs_live_coll_parse(coll, strlen(coll), &t->key.coll);
        } else {
            const gs_live_term *term = &s->terms[i];
            t->key.desc = term->desc;
            t->key.bignull = term->nulls == 0 ? 0 : (term->nulls == 2) != term->desc;
            if (term->ordinal != 0) {
                if (!map_ok || term->ordinal < 0 || term->ordinal > lv->nvis) {
                    gs_buf_free(&b);
                    return gs_error_set(err, 0, "CDC_ERROR",
                                        "ORDER BY %d does not name a column of the result",
                                        term->ordinal);
                }
                t->col = term->ordinal - 1;
            } else if (term->ident) {
                size_t at = 0;
                for (size_t k = 0; k < s->nitems && t->col < 0; k++) {
                    if (s->items[k].alias && strcasecmp(s->items[k].alias, term->ident) == 0 &&
                        map_ok)
                        t->col = (int)at;
                    at += s->items[k].star ? lv->ncols : 1;
                }
            }
            if (t->col < 0)
                gs_live_shape_append(s, &b, term->e0, term->e1);
        }
        if (t->col < 0) {
            if (b.oom) {
                gs_buf_free(&b);
                return gs_live_oom(err);
            }
            t->expr = gs_buf_take(&b, NULL);
            if (!t->expr)
                t->expr = gs_strdup("");
            if (!t->expr)
                return gs_live_oom(err);
            lv->nhidden++;
        }
        gs_buf_reset(&b);
    }
    gs_buf_free(&b);
    return GS_OK;
}

static void append_hidden_sorts(gs_live *lv, gs_buf *b)
{
    for (size_t i = 0; i < lv->nterms; i++)
        if (lv->terms[i].col < 0) {
            gs_buf_puts(b, ", ");
            gs_buf_puts(b, lv->terms[i].expr);
        }
}

static gs_status plan_sql(gs_live *lv, gs_error *err)
{
    const gs_live_shape *s = &lv->shape;
    gs_buf b;
    gs_buf_init(&b);

    /* the source name: the alias, else the table */
    gs_live_quote_ident(&b, s->alias ? s->alias : s->table);
    lv->source = gs_buf_take(&b, NULL);
    if (!lv->source)
        return gs_live_oom(err);
    if (plan_terms(lv, err) != GS_OK)
        return GS_ERROR;

    /* read: list, identity, hidden sorts, then the statement's own FROM .. LIMIT */
    gs_buf_puts(&b, "SELECT ");
    gs_live_shape_append(s, &b, s->list0, s->list1);
    if (lv->mode == GS_LIVE_KEY_ROWID) {
        gs_buf_puts(&b, ", ");
        append_source(lv, &b);
    } else {
        for (size_t i = 0; i < lv->npk; i++) {
            gs_buf_puts(&b, ", ");
            append_col_ref(lv, &b, lv->pkcols[i]);
        }
    }
    append_hidden_sorts(lv, &b);
    gs_buf_puts(&b, " FROM ");
    gs_live_shape_append(s, &b, s->from0, s->from1);
    if (s->idx1 > s->idx0) {
        gs_buf_putc(&b, ' ');
        gs_live_shape_append(s, &b, s->idx0, s->idx1);
    }
    if (s->has_where) {
        gs_buf_puts(&b, " WHERE ");
        gs_live_shape_append(s, &b, s->where0, s->where1);
    }
    if (s->nterms) {
        gs_buf_puts(&b, " ORDER BY ");
        gs_live_shape_append(s, &b, s->order0, s->order1);
    }
    if (s->has_limit) {
        gs_buf_puts(&b, " LIMIT ");
        gs_live_shape_append(s, &b, s->limit0, s->limit1);
        if (s->has_offset) {
            gs_buf_puts(&b, " OFFSET ");
            gs_live_shape_append(s, &b, s->off0, s->off1);
        }
    }
    if (b.oom)
        goto fail;
    lv->read_sql = gs_buf_take(&b, NULL);

    /* probe: list, the probe row's rowid, hidden sorts, over the probe table */
    gs_buf_puts(&b, "SELECT ");
    gs_live_shape_append(s, &b, s->list0, s->list1);
    gs_buf_puts(&b, ", ");
    append_source(lv, &b);
    append_hidden_sorts(lv, &b);
    if (lv->params.kind == GS_BIND_POSITIONAL && s->max_param > 0)
        gs_buf_printf(&b, ", ?%d", s->max_param); /* every index stays bindable */
    gs_buf_printf(&b, " FROM temp.\"%s\" AS %s", lv->probe_name, lv->source);
    if (s->has_where) {
        gs_buf_puts(&b, " WHERE ");
        gs_live_shape_append(s, &b, s->where0, s->where1);
    }
    if (b.oom)
        goto fail;
    lv->probe_sql = gs_buf_take(&b, NULL);

    gs_buf_printf(&b, "INSERT INTO temp.\"%s\" (", lv->probe_name);
    int n = 0;
    if (lv->mode != GS_LIVE_KEY_ALIAS) {
        gs_buf_puts(&b, "rowid");
        n++;
    }
    for (size_t i = 0; i < lv->ncols; i++) {
        if (n++)
            gs_buf_puts(&b, ", ");
        gs_live_quote_ident(&b, lv->cols[i].name);
    }
    gs_buf_puts(&b, ") VALUES (");
    for (int i = 1; i <= n; i++)
        gs_buf_printf(&b, i > 1 ? ", ?%d" : "?%d", i);
    gs_buf_putc(&b, ')');
    if (b.oom)
        goto fail;
    lv->insert_sql = gs_buf_take(&b, NULL);
    if (!lv->read_sql || !lv->probe_sql || !lv->insert_sql)
        return gs_live_oom(err);
    return GS_OK;
fail:
    gs_buf_free(&b);
    return gs_live_oom(err);
}

gs_status gs_live_probe_exec(gs_live *lv, const char *sql, gs_error *err)
{
    if (gs_conn_exec(lv->probe, sql, err) != GS_OK) {
        gs_error_set(err, 0, "CDC_ERROR", "the live query's probe table: %s",
                     sqlite3_errmsg(gs_conn_db(lv->probe)));
        return GS_ERROR;
    }
    return GS_OK;
}

gs_status gs_live_bind_params(gs_live *lv, sqlite3_stmt *st, gs_error *err)
{
    return gs_params_bind(st, &lv->params, err);
}

/* Collations and directions of the ORDER BY terms, as SQLite's sorter has them. */
static gs_status probe_order(gs_live *lv, gs_error *err)
{
    for (size_t i = 0; i < lv->nterms; i++)
        lv->keys[i] = lv->terms[i].key;
    const gs_live_shape *s = &lv->shape;
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_puts(&b, "EXPLAIN SELECT ");
    if (s->nterms) {
        gs_live_shape_append(s, &b, s->list0, s->list1);
    } else {
        for (size_t i = 0; i < lv->nterms; i++)
            gs_buf_printf(&b, "%s%s", i ? ", " : "", lv->terms[i].expr);
    }
    gs_buf_printf(&b, " FROM temp.\"%s\" AS %s ORDER BY ", lv->probe_name, lv->source);
    if (s->nterms) {
        gs_live_shape_append(s, &b, s->order0, s->order1);
    } else {
        for (size_t i = 0; i < lv->nterms; i++)
            gs_buf_printf(&b, "%s%s", i ? ", " : "", lv->terms[i].expr);
    }
    if (b.oom) {
        gs_buf_free(&b);
        return gs_live_oom(err);
    }
    gs_stmt *st;
    gs_status rc = gs_conn_prepare(lv->probe, b.data, b.len, GS_PREP_TRUSTED, &st, err);
    gs_buf_free(&b);
    if (rc != GS_OK)
        return gs_error_set(err, 0, "CDC_ERROR",
                            "the statement cannot be ordered over its probe table: %s",
                            sqlite3_errmsg(gs_conn_db(lv->probe)));
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    int found = 0, step;
    rc = GS_OK;
    while ((step = gs_conn_step(lv->probe, st, err)) == SQLITE_ROW) {
        const char *op = (const char *)sqlite3_column_text(ss, 1);
        if (!op || strcmp(op, "SorterOpen") != 0 || found)
            continue;
        found = 1;
        char unknown[64] = "";
        int k = gs_live_keyinfo_parse((const char *)sqlite3_column_text(ss, 5), lv->keys,
                                      lv->nterms, unknown, sizeof unknown);
        if (k == -2)
            rc = gs_error_set(err, 0, "CDC_ERROR",
                              "ORDER BY uses collation '%s'; live queries order by BINARY, "
                              "NOCASE and RTRIM only",
                              unknown);
        else if (k != 0)
            rc = gs_error_set(err, 0, "CDC_ERROR",
                              "SQLite orders this statement in a way a live query cannot "
                              "follow (sorter %s for %zu terms)",
                              (const char *)sqlite3_column_text(ss, 5), lv->nterms);
    }
    gs_conn_release(lv->probe, st);
    if (step != SQLITE_DONE && rc == GS_OK)
        rc = gs_error_set(err, 0, "CDC_ERROR", "explaining the statement: %s", err->message);
    /* no sorter: the order is the probe table's rowid order (the term is the rowid), and the
     * lexical direction stands */
    return rc;
}

/* The LIMIT and OFFSET values, evaluated with the statement's parameters. */
static gs_status probe_window(gs_live *lv, gs_error *err)
{
    const gs_live_shape *s = &lv->shape;
    lv->limit = -1;
    lv->offset = 0;
    if (!s->has_limit)
        return GS_OK;
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_puts(&b, "SELECT (");
    gs_live_shape_append(s, &b, s->limit0, s->limit1);
    gs_buf_puts(&b, "), (");
    if (s->has_offset)
        gs_live_shape_append(s, &b, s->off0, s->off1);
    else
        gs_buf_putc(&b, '0');
    gs_buf_putc(&b, ')');
    if (lv->params.kind == GS_BIND_POSITIONAL && s->max_param > 0)
        gs_buf_printf(&b, ", ?%d", s->max_param);
    if (b.oom) {
        gs_buf_free(&b);
        return gs_live_oom(err);
    }
    gs_stmt *st;
    gs_status rc = gs_conn_prepare(lv->probe, b.data, b.len, GS_PREP_TRUSTED, &st, err);
    gs_buf_free(&b);
    if (rc != GS_OK)
        return gs_error_set(err, 0, "QUERY_ERROR", "LIMIT: %s",
                            sqlite3_errmsg(gs_conn_db(lv->probe)));
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    rc = gs_live_bind_params(lv, ss, err);
    if (rc == GS_OK && gs_conn_step(lv->probe, st, err) == SQLITE_ROW) {
        lv->limit = sqlite3_column_int64(ss, 0);
        lv->offset = sqlite3_column_int64(ss, 1);
        if (lv->limit < 0)
            lv->limit = -1;
        if (lv->offset < 0)
            lv->offset = 0;
    } else if (rc == GS_OK) {
        rc = GS_ERROR;
    }
    gs_conn_release(lv->probe, st);
    return rc;
}

static gs_status probe_create(gs_live *lv, gs_error *err)
{
    gs_conn_options co = {
        .path = ":memory:",
        .role = GS_CONN_WRITER,
        .create = 1,
        .sync_level = 0,
        .wal_autocheckpoint = -1,
        .busy_timeout_ms = 0,
        .stmt_cache_size = 16,
    };
    if (gs_conn_open(&co, &lv->probe, err) != GS_OK)
        return GS_ERROR;
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_printf(&b, "CREATE TEMP TABLE \"%s\" (", lv->probe_name);
    for (size_t i = 0; i < lv->ncols; i++) {
        const gs_live_col *c = &lv->cols[i];
        if (i)
            gs_buf_puts(&b, ", ");
        gs_live_quote_ident(&b, c->name);
        if (lv->mode == GS_LIVE_KEY_ALIAS && c->pk == 1) {
            gs_buf_puts(&b, " INTEGER PRIMARY KEY");
        } else if (c->type[0]) {
            /* the declared type decides the affinity; quoting keeps it one type name */
            gs_buf_putc(&b, ' ');
            gs_live_quote_ident(&b, c->type);
        }
        if (c->coll) {
            gs_buf_puts(&b, " COLLATE ");
            gs_live_quote_ident(&b, c->coll);
        }
    }
    gs_buf_putc(&b, ')');
    if (b.oom) {
        gs_buf_free(&b);
        return gs_live_oom(err);
    }
    gs_status rc = gs_live_probe_exec(lv, b.data, err);
    gs_buf_free(&b);
    if (rc != GS_OK)
        return GS_ERROR;
    gs_stmt *st;
    if (gs_conn_prepare(lv->probe, lv->insert_sql, strlen(lv->insert_sql), GS_PREP_TRUSTED, &st,
                        err) != GS_OK)
        return gs_error_set(err, 0, "CDC_ERROR", "the live query's probe table: %s",
                            sqlite3_errmsg(gs_conn_db(lv->probe)));
    gs_conn_release(lv->probe, st);
    if (gs_conn_prepare(lv->probe, lv->probe_sql, strlen(lv->probe_sql), GS_PREP_TRUSTED, &st,
                        err) != GS_OK)
        return gs_error_set(err, 0, "CDC_ERROR",
                            "the statement cannot be evaluated over its probe table: %s",
                            sqlite3_errmsg(gs_conn_db(lv->probe)));
    gs_conn_release(lv->probe, st);
    if (probe_order(lv, err) != GS_OK)
        return GS_ERROR;
    return probe_window(lv, err);
}

gs_status gs_live_plan_open(gs_live *lv, const char *sql, json_t *params, gs_error *err)
{
    if (gs_live_shape_parse(sql, &lv->shape, err) != GS_OK)
        return GS_ERROR;
    if (params_take(lv, params, err) != GS_OK)
        return GS_ERROR;
    if (check_date_params(lv, err) != GS_OK)
        return GS_ERROR;

    gs_conn *c;
    if (gs_live_reader_open(lv, &c, err) != GS_OK)
        return GS_ERROR;
    gs_status rc = check_statement(lv, c, err);
    if (rc == GS_OK)
        rc = check_single_table(lv, c, err);
    if (rc == GS_OK)
        rc = inspect_table(lv, c, err);
    gs_conn_close(c);
    if (rc != GS_OK)
        return GS_ERROR;
    if (plan_sql(lv, err) != GS_OK)
        return GS_ERROR;
    if (probe_create(lv, err) != GS_OK)
        return GS_ERROR;
    return GS_OK;
}
