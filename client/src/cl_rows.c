/* gs_client_rows: decoded query rows. Columns come from the first row's keys in order; a
 * key first seen in a later row is appended (earlier rows read NULL there). Each row is one
 * allocation holding its values and their text/blob bytes, so live-query operations insert
 * and delete rows cheaply. Not thread-safe; one owner. */
#include "cl_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct cl_row {
    size_t n;
    gs_value v[];
} cl_row;

struct gs_client_rows {
    size_t ncols, capcols;
    char **cols;
    size_t nrows, caprows;
    cl_row **rows;
};

static const gs_value null_value = {.type = GS_VALUE_NULL};

gs_client_rows *cl_rows_new(void)
{
    return gs_calloc(1, sizeof(gs_client_rows));
}

void gs_client_rows_free(gs_client_rows *rows)
{
    if (!rows)
        return;
    for (size_t i = 0; i < rows->nrows; i++)
        gs_free(rows->rows[i]);
    for (size_t i = 0; i < rows->ncols; i++)
        gs_free(rows->cols[i]);
    gs_free(rows->rows);
    gs_free(rows->cols);
    gs_free(rows);
}

size_t gs_client_rows_count(const gs_client_rows *rows)
{
    return rows ? rows->nrows : 0;
}

size_t gs_client_rows_columns(const gs_client_rows *rows)
{
    return rows ? rows->ncols : 0;
}

const char *gs_client_rows_column_name(const gs_client_rows *rows, size_t col)
{
    return rows && col < rows->ncols ? rows->cols[col] : NULL;
}

long gs_client_rows_column_index(const gs_client_rows *rows, const char *name)
{
    if (!rows || !name)
        return -1;
    for (size_t i = 0; i < rows->ncols; i++)
        if (strcmp(rows->cols[i], name) == 0)
            return (long)i;
    return -1;
}

const gs_value *gs_client_rows_get(const gs_client_rows *rows, size_t row, size_t col)
{
    if (!rows || row >= rows->nrows)
        return &null_value;
    const cl_row *r = rows->rows[row];
    return col < r->n ? &r->v[col] : &null_value;
}

gs_client_row gs_client_rows_row(const gs_client_rows *rows, size_t row)
{
    gs_client_row out = {0, NULL, NULL};
    if (!rows || row >= rows->nrows)
        return out;
    out.count = rows->rows[row]->n;
    out.columns = (const char *const *)rows->cols;
    out.values = rows->rows[row]->v;
    return out;
}

/* Index of column `name`, appended when new; `guess` is tried first. -1 on OOM. */
static long column_of(gs_client_rows *rows, const char *name, size_t guess)
{
    if (guess < rows->ncols && strcmp(rows->cols[guess], name) == 0)
        return (long)guess;
    long i = gs_client_rows_column_index(rows, name);
    if (i >= 0)
        return i;
    if (rows->ncols == rows->capcols) {
        size_t cap = rows->capcols ? rows->capcols * 2 : 8;
        char **cols = gs_realloc(rows->cols, cap * sizeof *cols);
        if (!cols)
            return -1;
        rows->cols = cols;
        rows->capcols = cap;
    }
    char *dup = gs_strdup(name);
    if (!dup)
        return -1;
    rows->cols[rows->ncols] = dup;
    return (long)rows->ncols++;
}

/* Build one row from a JSON object against rows' columns (adding new ones). */
static cl_row *row_from_object(gs_client_rows *rows, json_t *obj, gs_error *err)
{
    if (!json_is_object(obj)) {
        gs_error_set(err, 0, "INVALID_RESPONSE", "a row is not a JSON object");
        return NULL;
    }
    size_t bytes = 0;
    size_t k = 0;
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        if (column_of(rows, key, k++) < 0) {
            gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory decoding a row");
            return NULL;
        }
        long sz = cl_value_size(val);
        if (sz < 0) {
            gs_error_set(err, 0, "INVALID_RESPONSE",
                         "column '%s' holds a malformed __sirannon_int/__sirannon_blob envelope",
                         key);
            return NULL;
        }
        bytes += (size_t)sz;
    }
    size_t n = rows->ncols;
    cl_row *r = gs_malloc(sizeof *r + n * sizeof(gs_value) + bytes);
    if (!r) {
        gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory decoding a row");
        return NULL;
    }
    r->n = n;
    for (size_t i = 0; i < n; i++)
        r->v[i] = null_value;
    char *store = (char *)&r->v[n];
    k = 0;
    json_object_foreach(obj, key, val)
    {
        long c = column_of(rows, key, k++);
        if (cl_value_decode(val, &r->v[c], &store) != 0) {
            gs_free(r);
            gs_error_set(err, 0, "INVALID_RESPONSE",
                         "column '%s' holds a malformed __sirannon_int/__sirannon_blob envelope",
                         key);
            return NULL;
        }
    }
    return r;
}

static gs_status reserve_rows(gs_client_rows *rows, size_t extra, gs_error *err)
{
    if (rows->nrows + extra <= rows->caprows)
        return GS_OK;
    size_t cap = rows->caprows ? rows->caprows : 8;
    while (cap < rows->nrows + extra)
        cap *= 2;
    cl_row **r = gs_realloc(rows->rows, cap * sizeof *r);
    if (!r)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory holding rows");
    rows->rows = r;
    rows->caprows = cap;
    return GS_OK;
}

gs_status cl_rows_from_json(json_t *arr, gs_client_rows **out, gs_error *err)
{
    *out = NULL;
    if (!json_is_array(arr))
        return gs_error_set(err, 0, "INVALID_RESPONSE", "the server's rows are not a JSON array");
    gs_client_rows *rows = cl_rows_new();
    if (!rows || reserve_rows(rows, json_array_size(arr), err) != GS_OK) {
        gs_client_rows_free(rows);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory holding rows");
    }
    size_t i;
    json_t *obj;
    json_array_foreach(arr, i, obj)
    {
        cl_row *r = row_from_object(rows, obj, err);
        if (!r) {
            gs_client_rows_free(rows);
            return GS_ERROR;
        }
        rows->rows[rows->nrows++] = r;
    }
    *out = rows;
    return GS_OK;
}

gs_status cl_rows_from_object(json_t *obj, gs_client_rows **out, gs_error *err)
{
    json_t *arr = json_array();
    if (!arr || json_array_append(arr, obj) != 0) {
        json_decref(arr);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    gs_status st = cl_rows_from_json(arr, out, err);
    json_decref(arr);
    return st;
}

gs_status cl_rows_insert(gs_client_rows *rows, size_t index, json_t *obj, gs_error *err)
{
    if (index > rows->nrows)
        return gs_error_set(err, 0, "INVALID_RESPONSE",
                            "live insert at index %zu outside the %zu rows held", index,
                            rows->nrows);
    if (reserve_rows(rows, 1, err) != GS_OK)
        return GS_ERROR;
    cl_row *r = row_from_object(rows, obj, err);
    if (!r)
        return GS_ERROR;
    memmove(&rows->rows[index + 1], &rows->rows[index],
            (rows->nrows - index) * sizeof rows->rows[0]);
    rows->rows[index] = r;
    rows->nrows++;
    return GS_OK;
}

gs_status cl_rows_update(gs_client_rows *rows, size_t index, json_t *obj, gs_error *err)
{
    if (index >= rows->nrows)
        return gs_error_set(err, 0, "INVALID_RESPONSE",
                            "live update at index %zu outside the %zu rows held", index,
                            rows->nrows);
    cl_row *r = row_from_object(rows, obj, err);
    if (!r)
        return GS_ERROR;
    gs_free(rows->rows[index]);
    rows->rows[index] = r;
    return GS_OK;
}

gs_status cl_rows_delete(gs_client_rows *rows, size_t index)
{
    if (index >= rows->nrows)
        return GS_ERROR;
    gs_free(rows->rows[index]);
    memmove(&rows->rows[index], &rows->rows[index + 1],
            (rows->nrows - index - 1) * sizeof rows->rows[0]);
    rows->nrows--;
    return GS_OK;
}

static size_t row_bytes(const cl_row *r)
{
    size_t bytes = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (r->v[i].type == GS_VALUE_TEXT)
            bytes += r->v[i].u.text.len + 1;
        else if (r->v[i].type == GS_VALUE_BLOB)
            bytes += r->v[i].u.blob.len + 1;
    }
    return bytes;
}

gs_client_rows *cl_rows_copy(const gs_client_rows *src)
{
    gs_client_rows *rows = cl_rows_new();
    gs_error err;
    if (!rows)
        return NULL;
    for (size_t c = 0; c < src->ncols; c++)
        if (column_of(rows, src->cols[c], c) < 0)
            goto oom;
    if (reserve_rows(rows, src->nrows, &err) != GS_OK)
        goto oom;
    for (size_t i = 0; i < src->nrows; i++) {
        const cl_row *s = src->rows[i];
        cl_row *r = gs_malloc(sizeof *r + s->n * sizeof(gs_value) + row_bytes(s));
        if (!r)
            goto oom;
        r->n = s->n;
        char *store = (char *)&r->v[s->n];
        for (size_t k = 0; k < s->n; k++) {
            r->v[k] = s->v[k];
            if (s->v[k].type == GS_VALUE_TEXT) {
                memcpy(store, s->v[k].u.text.ptr, s->v[k].u.text.len);
                store[s->v[k].u.text.len] = '\0';
                r->v[k].u.text.ptr = store;
                store += s->v[k].u.text.len + 1;
            } else if (s->v[k].type == GS_VALUE_BLOB) {
                memcpy(store, s->v[k].u.blob.ptr, s->v[k].u.blob.len);
                store[s->v[k].u.blob.len] = '\0';
                r->v[k].u.blob.ptr = (const uint8_t *)store;
                store += s->v[k].u.blob.len + 1;
            }
        }
        rows->rows[rows->nrows++] = r;
    }
    return rows;
oom:
    gs_client_rows_free(rows);
    return NULL;
}

char *gs_client_rows_to_json(const gs_client_rows *rows)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_putc(&b, '[');
    for (size_t i = 0; rows && i < rows->nrows; i++) {
        if (i)
            gs_buf_putc(&b, ',');
        gs_buf_putc(&b, '{');
        for (size_t c = 0; c < rows->ncols; c++) {
            if (c)
                gs_buf_putc(&b, ',');
            gs_buf_json_string(&b, rows->cols[c], strlen(rows->cols[c]));
            gs_buf_putc(&b, ':');
            cl_value_encode(&b, gs_client_rows_get(rows, i, c));
        }
        gs_buf_putc(&b, '}');
    }
    gs_buf_putc(&b, ']');
    if (b.oom) {
        gs_buf_free(&b);
        return NULL;
    }
    return gs_buf_take(&b, NULL);
}

char *gs_client_row_to_json(gs_client_row row)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_putc(&b, '{');
    for (size_t c = 0; c < row.count; c++) {
        if (c)
            gs_buf_putc(&b, ',');
        gs_buf_json_string(&b, row.columns[c], strlen(row.columns[c]));
        gs_buf_putc(&b, ':');
        cl_value_encode(&b, &row.values[c]);
    }
    gs_buf_putc(&b, '}');
    if (b.oom) {
        gs_buf_free(&b);
        return NULL;
    }
    return gs_buf_take(&b, NULL);
}

void gs_client_free(void *p)
{
    gs_free(p);
}
