/*
 * Rows of a live query: the positioned read of the base table (rows and the change log's
 * position in one read transaction), the evaluation of change images in the probe table,
 * and row identities, which must come out byte-equal whether a row was read or arrived in a
 * change event. See live_internal.h.
 *
 * Threads: the opener's thread during open, then the worker.
 */
#include "live_internal.h"

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- identities ---- */

/* One value's identity bytes (type tag + exact value), length-prefixed. */
static void key_piece(gs_buf *b, char tag, const void *p, size_t n)
{
    gs_buf_printf(b, "%zu:%c", n + 1, tag);
    gs_buf_append(b, p, n);
}

void gs_live_key_int(gs_buf *b, int64_t v)
{
    char t[32];
    int n = snprintf(t, sizeof t, "%" PRId64, v);
    key_piece(b, 'i', t, (size_t)n);
}

static void key_real(gs_buf *b, double d)
{
    char t[40];
    int n = snprintf(t, sizeof t, "%.17g", d);
    key_piece(b, 'r', t, (size_t)n);
}

static void key_from_column(gs_buf *b, sqlite3_stmt *st, int col)
{
    switch (sqlite3_column_type(st, col)) {
    case SQLITE_INTEGER: gs_live_key_int(b, sqlite3_column_int64(st, col)); return;
    case SQLITE_FLOAT: key_real(b, sqlite3_column_double(st, col)); return;
    case SQLITE_TEXT: {
        const unsigned char *p = sqlite3_column_text(st, col);
        key_piece(b, 't', p, p ? (size_t)sqlite3_column_bytes(st, col) : 0);
        return;
    }
    case SQLITE_BLOB: {
        const void *p = sqlite3_column_blob(st, col);
        gs_buf h;
        gs_buf_init(&h);
        gs_buf_hex_upper(&h, p, p ? (size_t)sqlite3_column_bytes(st, col) : 0);
        key_piece(b, 'b', h.data ? h.data : "", h.len);
        if (h.oom)
            b->oom = 1;
        gs_buf_free(&h);
        return;
    }
    default: key_piece(b, 'n', "", 0); return;
    }
}

int gs_live_key_from_json(gs_buf *b, const json_t *v)
{
    if (!v || json_is_null(v)) {
        key_piece(b, 'n', "", 0);
        return 0;
    }
    if (json_is_integer(v)) {
        gs_live_key_int(b, (int64_t)json_integer_value(v));
        return 0;
    }
    if (json_is_real(v)) {
        key_real(b, json_real_value(v));
        return 0;
    }
    if (json_is_true(v) || json_is_false(v)) {
        gs_live_key_int(b, json_is_true(v) ? 1 : 0);
        return 0;
    }
    if (json_is_string(v)) {
        key_piece(b, 't', json_string_value(v), json_string_length(v));
        return 0;
    }
    if (json_is_object(v) && json_object_size(v) == 1) {
        const json_t *i = json_object_get(v, "__sirannon_int");
        const json_t *h = json_object_get(v, "__sirannon_blob");
        if (i && json_is_string(i)) {
            char *end;
            errno = 0;
            long long x = strtoll(json_string_value(i), &end, 10);
            if (errno || *end || end == json_string_value(i))
                return -1;
            gs_live_key_int(b, (int64_t)x);
            return 0;
        }
        if (h && json_is_string(h)) {
            const char *s = json_string_value(h);
            size_t n = json_string_length(h);
            gs_buf u;
            gs_buf_init(&u);
            for (size_t k = 0; k < n; k++)
                gs_buf_putc(&u, (char)(s[k] >= 'a' && s[k] <= 'f' ? s[k] - 32 : s[k]));
            key_piece(b, 'b', u.data ? u.data : "", u.len);
            if (u.oom)
                b->oom = 1;
            gs_buf_free(&u);
            return 0;
        }
    }
    return -1;
}

int gs_live_parse_rowid(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (!json_is_string(v))
        return -1;
    char *end;
    errno = 0;
    long long x = strtoll(json_string_value(v), &end, 10);
    if (errno || *end || end == json_string_value(v))
        return -1;
    *out = (int64_t)x;
    return 0;
}

/* Build a held row from the current row of st: visible columns [0, nvis), then (when
 * key_col >= 0) the identity columns, then hidden sort columns from hidden_col. */
static gs_live_row *row_from_stmt(gs_live *lv, sqlite3_stmt *st, const char *key, size_t keylen,
                                  int hidden_col)
{
    gs_live_val vals[64];
    gs_live_val *v = lv->nterms <= 64 ? vals : gs_malloc(lv->nterms * sizeof *v);
    if (!v)
        return NULL;
    int h = hidden_col;
    for (size_t i = 0; i < lv->nterms; i++) {
        int col = lv->terms[i].col >= 0 ? lv->terms[i].col : h++;
        gs_live_val *x = &v[i];
        memset(x, 0, sizeof *x);
        x->type = sqlite3_column_type(st, col);
        switch (x->type) {
        case SQLITE_INTEGER: x->i = sqlite3_column_int64(st, col); break;
        case SQLITE_FLOAT: x->d = sqlite3_column_double(st, col); break;
        case SQLITE_TEXT:
            x->p = sqlite3_column_text(st, col);
            x->n = x->p ? (size_t)sqlite3_column_bytes(st, col) : 0;
            break;
        case SQLITE_BLOB:
            x->p = sqlite3_column_blob(st, col);
            x->n = x->p ? (size_t)sqlite3_column_bytes(st, col) : 0;
            break;
        default: x->type = SQLITE_NULL; break;
        }
    }
    gs_buf_reset(&lv->out);
    lv->rkeys.ncols = lv->nvis; /* the identity and sort columns are not part of the row */
    gs_value_append_row(&lv->out, st, &lv->rkeys);
    gs_live_row *r = NULL;
    if (!lv->out.oom)
        r = gs_live_row_new(key, keylen, lv->out.data, lv->out.len, v, lv->nterms);
    if (v != vals)
        gs_free(v);
    return r;
}

gs_status gs_live_positioned_read(gs_live *lv, gs_live_row ***rows_out, size_t *n_out,
                                  uint64_t *seq_out, gs_error *err)
{
    *rows_out = NULL;
    *n_out = 0;
    gs_conn *c;
    if (gs_live_reader_open(lv, &c, err) != GS_OK)
        return GS_ERROR;
    gs_live_row **rows = NULL;
    size_t n = 0, cap = 0;
    gs_stmt *st = NULL;
    gs_status rc = GS_ERROR;
    gs_buf key;
    gs_buf_init(&key);
    if (gs_conn_exec(c, "BEGIN", err) != GS_OK)
        goto out;
    if (gs_live_prep_trusted(c,
                             "SELECT max(coalesce((SELECT max(seq) FROM _sirannon_changes), 0), "
                             "coalesce((SELECT seq FROM sqlite_sequence WHERE name = "
                             "'_sirannon_changes'), 0))",
                             &st, err) != GS_OK)
        goto out;
    if (gs_conn_step(c, st, err) != SQLITE_ROW)
        goto out;
    *seq_out = (uint64_t)sqlite3_column_int64(gs_stmt_sqlite(st), 0);
    gs_conn_release(c, st);
    st = NULL;

    if (gs_conn_prepare(c, lv->read_sql, strlen(lv->read_sql), GS_PREP_TRUSTED, &st, err) !=
        GS_OK) {
        gs_error_set(err, 0, "QUERY_ERROR", "%s", sqlite3_errmsg(gs_conn_db(c)));
        goto out;
    }
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    if (gs_live_bind_params(lv, ss, err) != GS_OK)
        goto out;
    int nkey = lv->mode == GS_LIVE_KEY_ROWID ? 1 : (int)lv->npk;
    int step;
    while ((step = gs_conn_step(c, st, err)) == SQLITE_ROW) {
        gs_buf_reset(&key);
        for (int k = 0; k < nkey; k++)
            key_from_column(&key, ss, lv->nvis + k);
        if (key.oom) {
            gs_live_oom(err);
            goto out;
        }
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            gs_live_row **r = gs_realloc(rows, nc * sizeof *r);
            if (!r) {
                gs_live_oom(err);
                goto out;
            }
            rows = r;
            cap = nc;
        }
        rows[n] = row_from_stmt(lv, ss, key.data, key.len, lv->nvis + nkey);
        if (!rows[n]) {
            gs_live_oom(err);
            goto out;
        }
        n++;
    }
    if (step != SQLITE_DONE)
        goto out;
    gs_conn_release(c, st);
    st = NULL;
    if (gs_conn_exec(c, "COMMIT", err) != GS_OK)
        goto out;
    rc = GS_OK;
out:
    gs_buf_free(&key);
    if (st)
        gs_conn_release(c, st);
    gs_conn_close(c); /* ends the read transaction when it is still open */
    if (rc != GS_OK) {
        for (size_t i = 0; i < n; i++)
            gs_live_row_free(rows[i]);
        gs_free(rows);
        return GS_ERROR;
    }
    *rows_out = rows;
    *n_out = n;
    return GS_OK;
}

static int cmp_img_rowid(const void *a, const void *b)
{
    const gs_live_img *x = *(gs_live_img *const *)a, *y = *(gs_live_img *const *)b;
    return x->rowid < y->rowid ? -1 : (x->rowid > y->rowid ? 1 : 0);
}

gs_status gs_live_probe_pass(gs_live *lv, gs_live_img *imgs, size_t n, gs_error *err)
{
    if (n == 0)
        return GS_OK;
    gs_conn *c = lv->probe;
    gs_live_img **by_rowid = NULL;
    gs_stmt *ins = NULL, *sel = NULL;
    gs_bind_param *items = NULL;
    char *arena = NULL;
    gs_status rc = GS_ERROR;
    if (gs_live_probe_exec(lv, "BEGIN", err) != GS_OK)
        return GS_ERROR;
    size_t nitems = lv->ncols + (lv->mode != GS_LIVE_KEY_ALIAS);
    items = gs_calloc(nitems, sizeof *items);
    if (!items) {
        gs_live_oom(err);
        goto out;
    }
    if (gs_conn_prepare(c, lv->insert_sql, strlen(lv->insert_sql), GS_PREP_TRUSTED, &ins, err) !=
        GS_OK)
        goto out;
    for (size_t s = 0; s < n; s++) {
        gs_live_img *im = &imgs[s];
        if (lv->mode == GS_LIVE_KEY_PK)
            im->rowid = (int64_t)s + 1;
        /* the image's columns are the table's: anything else means ALTER TABLE changed the
         * table under the live query, whose probe table and rows no longer fit */
        int fits = json_is_object(im->row) && json_object_size(im->row) == lv->ncols;
        for (size_t i = 0; fits && i < lv->ncols; i++)
            if (!json_object_get(im->row, lv->cols[i].name))
                fits = 0;
        if (!fits) {
            gs_error_set(err, 0, "CDC_ERROR",
                         "the columns of table '%s' changed (ALTER TABLE) while a live query "
                         "was open; open the live query again",
                         lv->shape.table);
            goto out;
        }
        size_t bytes = 0;
        for (size_t i = 0; i < lv->ncols; i++) {
            const json_t *v = json_object_get(im->row, lv->cols[i].name);
            if (v && gs_value_check(v, &bytes, err) != GS_OK) {
                gs_error_prefix(err, "column '%s' of a change event", lv->cols[i].name);
                goto out;
            }
        }
        gs_free(arena);
        arena = gs_malloc(bytes ? bytes : 1);
        if (!arena) {
            gs_live_oom(err);
            goto out;
        }
        char *ap = arena;
        size_t k = 0;
        if (lv->mode != GS_LIVE_KEY_ALIAS) {
            items[k].name = NULL;
            items[k].value.type = GS_VALUE_INT;
            items[k].value.u.i = im->rowid;
            k++;
        }
        for (size_t i = 0; i < lv->ncols; i++, k++) {
            const json_t *v = json_object_get(im->row, lv->cols[i].name);
            items[k].name = NULL;
            if (v)
                gs_value_from_json(v, &items[k].value, &ap);
            else
                items[k].value.type = GS_VALUE_NULL;
        }
        gs_bind_set set = {.kind = GS_BIND_POSITIONAL, .count = nitems, .items = items};
        sqlite3_stmt *is = gs_stmt_sqlite(ins);
        sqlite3_reset(is);
        if (gs_params_bind(is, &set, err) != GS_OK)
            goto out;
        if (gs_conn_step(c, ins, err) != SQLITE_DONE) {
            gs_error_set(err, 0, "CDC_ERROR", "writing a change into the probe table: %s",
                         sqlite3_errmsg(gs_conn_db(c)));
            goto out;
        }
    }
    gs_conn_release(c, ins);
    ins = NULL;

    /* images by probe rowid */
    by_rowid = gs_malloc(n * sizeof *by_rowid);
    if (!by_rowid) {
        gs_live_oom(err);
        goto out;
    }
    for (size_t s = 0; s < n; s++)
        by_rowid[s] = &imgs[s];
    qsort(by_rowid, n, sizeof *by_rowid, cmp_img_rowid);

    if (gs_conn_prepare(c, lv->probe_sql, strlen(lv->probe_sql), GS_PREP_TRUSTED, &sel, err) !=
        GS_OK)
        goto out;
    sqlite3_stmt *ss = gs_stmt_sqlite(sel);
    if (gs_live_bind_params(lv, ss, err) != GS_OK)
        goto out;
    int step;
    while ((step = gs_conn_step(c, sel, err)) == SQLITE_ROW) {
        gs_live_img probe = {.rowid = sqlite3_column_int64(ss, lv->nvis)};
        gs_live_img *pp = &probe;
        gs_live_img **hit = bsearch(&pp, by_rowid, n, sizeof *by_rowid, cmp_img_rowid);
        if (!hit)
            continue;
        gs_live_img *im = *hit;
        gs_live_row_free(im->match);
        im->match = row_from_stmt(lv, ss, im->key, im->keylen, lv->nvis + 1);
        if (!im->match) {
            gs_live_oom(err);
            goto out;
        }
    }
    if (step != SQLITE_DONE) {
        gs_error_set(err, 0, "QUERY_ERROR", "evaluating a change: %s",
                     sqlite3_errmsg(gs_conn_db(c)));
        goto out;
    }
    rc = GS_OK;
out:
    if (ins)
        gs_conn_release(c, ins);
    if (sel)
        gs_conn_release(c, sel);
    gs_error rb;
    gs_conn_exec(c, "ROLLBACK", &rb); /* the probe table is empty between transactions */
    gs_free(by_rowid);
    gs_free(items);
    gs_free(arena);
    return rc;
}
