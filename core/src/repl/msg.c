/* The replication message model: value and row helpers, the change-log and tagged JSON
 * conversions, and releasing messages (contract in msg.h). */
#include "msg.h"

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "sqlite/value.h"

#include <math.h>
#include <string.h>

static const char INT_TAG[] = "__sirannon_int";

/* ---- values ---- */

void gs_rval_free(gs_rval *v)
{
    if (!v)
        return;
    gs_free(v->p);
    memset(v, 0, sizeof *v);
}

/* Own a copy of len bytes (plus a NUL, so text stays a C string). */
static gs_status copy_bytes(gs_rval *dst, gs_rval_type type, const void *p, size_t len,
                            gs_error *err)
{
    uint8_t *copy = gs_malloc(len + 1);
    if (!copy)
        return gs_error_set(err, 0, "REPLICATION_ERROR",
                            "out of memory copying a %zu-byte column value", len);
    if (len)
        memcpy(copy, p, len);
    copy[len] = 0;
    memset(dst, 0, sizeof *dst);
    dst->type = type;
    dst->p = copy;
    dst->len = len;
    return GS_OK;
}

gs_status gs_rval_copy(gs_rval *dst, const gs_rval *src, gs_error *err)
{
    if (src->type == GS_RVAL_TEXT || src->type == GS_RVAL_BLOB)
        return copy_bytes(dst, src->type, src->p, src->len, err);
    *dst = *src;
    dst->p = NULL;
    dst->len = 0;
    return GS_OK;
}

gs_status gs_rval_from_value(gs_rval *dst, const gs_value *src, gs_error *err)
{
    memset(dst, 0, sizeof *dst);
    switch (src->type) {
    case GS_VALUE_INT:
        dst->type = GS_RVAL_INT;
        dst->i = src->u.i;
        return GS_OK;
    case GS_VALUE_DOUBLE:
        dst->type = GS_RVAL_DOUBLE;
        dst->d = src->u.d;
        return GS_OK;
    case GS_VALUE_TEXT: return copy_bytes(dst, GS_RVAL_TEXT, src->u.text.ptr, src->u.text.len, err);
    case GS_VALUE_BLOB: return copy_bytes(dst, GS_RVAL_BLOB, src->u.blob.ptr, src->u.blob.len, err);
    case GS_VALUE_NULL: break;
    }
    dst->type = GS_RVAL_NULL;
    return GS_OK;
}

gs_value gs_rval_view(const gs_rval *v)
{
    gs_value out;
    memset(&out, 0, sizeof out);
    switch (v->type) {
    case GS_RVAL_INT:
    case GS_RVAL_BOOL:
        out.type = GS_VALUE_INT;
        out.u.i = v->i;
        break;
    case GS_RVAL_DOUBLE:
        out.type = GS_VALUE_DOUBLE;
        out.u.d = v->d;
        break;
    case GS_RVAL_TEXT:
        out.type = GS_VALUE_TEXT;
        out.u.text.ptr = v->p ? (const char *)v->p : "";
        out.u.text.len = v->p ? v->len : 0;
        break;
    case GS_RVAL_BLOB:
        out.type = GS_VALUE_BLOB;
        out.u.blob.ptr = v->p;
        out.u.blob.len = v->p ? v->len : 0;
        break;
    case GS_RVAL_NULL: out.type = GS_VALUE_NULL; break;
    }
    return out;
}

int gs_rval_equal(const gs_rval *a, const gs_rval *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case GS_RVAL_NULL: return 1;
    case GS_RVAL_INT:
    case GS_RVAL_BOOL: return a->i == b->i;
    case GS_RVAL_DOUBLE: {
        /* +0 and -0 are one value; otherwise the bits decide, so a NaN equals itself */
        if (a->d == 0 && b->d == 0)
            return 1;
        return memcmp(&a->d, &b->d, sizeof a->d) == 0;
    }
    case GS_RVAL_TEXT:
    case GS_RVAL_BLOB: {
        size_t la = a->p ? a->len : 0, lb = b->p ? b->len : 0;
        return la == lb && (la == 0 || memcmp(a->p, b->p, la) == 0);
    }
    }
    return 0;
}

/* ---- rows ---- */

gs_rrow *gs_rrow_new(void)
{
    return gs_calloc(1, sizeof(gs_rrow));
}

/* Release a row's contents, not the struct (sync batches hold rows in an array). */
static void rrow_clear(gs_rrow *r)
{
    for (size_t i = 0; i < r->n; i++) {
        gs_free(r->names[i]);
        gs_rval_free(&r->vals[i]);
    }
    gs_free(r->names);
    gs_free(r->vals);
    memset(r, 0, sizeof *r);
}

void gs_rrow_free(gs_rrow *r)
{
    if (!r)
        return;
    rrow_clear(r);
    gs_free(r);
}

static int rrow_grow(gs_rrow *r)
{
    if (r->n < r->cap)
        return 0;
    size_t cap = r->cap ? r->cap * 2 : 8;
    char **names = gs_realloc(r->names, cap * sizeof *names);
    if (!names)
        return -1;
    r->names = names;
    gs_rval *vals = gs_realloc(r->vals, cap * sizeof *vals);
    if (!vals)
        return -1;
    r->vals = vals;
    r->cap = cap;
    return 0;
}

gs_status gs_rrow_add_take(gs_rrow *r, const char *name, gs_rval *v, gs_error *err)
{
    char *copy = rrow_grow(r) == 0 ? gs_strdup(name) : NULL;
    if (!copy) {
        gs_rval_free(v); /* a _take consumes its argument even when it fails */
        return gs_error_set(err, 0, "REPLICATION_ERROR",
                            "out of memory adding column \"%s\" to a row", name);
    }
    r->names[r->n] = copy;
    r->vals[r->n] = *v;
    r->n++;
    memset(v, 0, sizeof *v);
    return GS_OK;
}

gs_status gs_rrow_add_copy(gs_rrow *r, const char *name, const gs_rval *v, gs_error *err)
{
    gs_rval copy;
    if (gs_rval_copy(&copy, v, err) != GS_OK)
        return GS_ERROR;
    return gs_rrow_add_take(r, name, &copy, err);
}

int gs_rrow_find(const gs_rrow *r, const char *name)
{
    if (!r)
        return -1;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->names[i], name) == 0)
            return (int)i;
    return -1;
}

gs_rrow *gs_rrow_copy(const gs_rrow *r, gs_error *err)
{
    if (!r)
        return NULL;
    gs_rrow *out = gs_rrow_new();
    if (!out) {
        gs_error_set(err, 0, "REPLICATION_ERROR", "out of memory copying a row");
        return NULL;
    }
    for (size_t i = 0; i < r->n; i++) {
        if (gs_rrow_add_copy(out, r->names[i], &r->vals[i], err) != GS_OK) {
            gs_rrow_free(out);
            return NULL;
        }
    }
    return out;
}

/* ---- JSON ---- */

/*
 * One tagged JSON value into an owned value. JSON true/false become BOOL (the wire's
 * bool_value), so gs_rrow_to_json and this function round trip; everything else goes through
 * the tagged value decoder of sqlite/value.c (numbers, strings, the two envelopes).
 */
static gs_status rval_from_json(const json_t *v, gs_rval *out, gs_error *err)
{
    memset(out, 0, sizeof *out);
    if (json_is_boolean(v)) {
        out->type = GS_RVAL_BOOL;
        out->i = json_is_true(v) ? 1 : 0;
        return GS_OK;
    }
    size_t bytes = 0;
    if (gs_value_check(v, &bytes, err) != GS_OK)
        return GS_ERROR;
    char *arena = gs_malloc(bytes);
    if (!arena)
        return gs_error_set(err, 0, "REPLICATION_ERROR",
                            "out of memory decoding a %zu-byte column value", bytes);
    char *cursor = arena;
    gs_value val;
    gs_value_from_json(v, &val, &cursor);
    gs_status st = gs_rval_from_value(out, &val, err);
    gs_free(arena);
    return st;
}

/* The object's members in document order (jansson keeps insertion order). */
static gs_status rrow_from_object(const json_t *obj, const char *what, gs_rrow **out, gs_error *err)
{
    *out = NULL;
    if (!json_is_object(obj))
        return gs_error_set(err, 0, "REPLICATION_ERROR", "%s is not a JSON object of column values",
                            what);
    gs_rrow *row = gs_rrow_new();
    if (!row)
        return gs_error_set(err, 0, "REPLICATION_ERROR", "out of memory decoding %s", what);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        gs_rval val;
        gs_error verr;
        gs_error_init(&verr);
        if (rval_from_json(v, &val, &verr) != GS_OK) {
            gs_error_set(err, 0, "REPLICATION_ERROR", "%s: column \"%s\": %s", what, key,
                         verr.message);
            gs_rrow_free(row);
            return GS_ERROR;
        }
        if (gs_rrow_add_take(row, key, &val, err) != GS_OK) {
            gs_rrow_free(row);
            return GS_ERROR;
        }
    }
    *out = row;
    return GS_OK;
}

gs_status gs_rrow_from_log_json(const char *text, gs_rrow **out, gs_error *err)
{
    *out = NULL;
    if (!text)
        return GS_OK;
    json_error_t jerr;
    /* ALLOW_NUL: a TEXT value may hold U+0000; lengths are kept, not C-string ends */
    json_t *obj = json_loads(text, JSON_ALLOW_NUL, &jerr);
    if (!obj)
        return gs_error_set(err, 0, "REPLICATION_ERROR",
                            "a change-log row image is not valid JSON (%s at line %d, column "
                            "%d); the _sirannon_changes row was not written by the CDC "
                            "triggers",
                            jerr.text, jerr.line, jerr.column);
    gs_status st = rrow_from_object(obj, "a change-log row image", out, err);
    json_decref(obj);
    return st;
}

gs_status gs_rrow_from_json(const json_t *obj, gs_rrow **out, gs_error *err)
{
    *out = NULL;
    if (!obj || json_is_null(obj))
        return GS_OK;
    return rrow_from_object(obj, "a row", out, err);
}

/* A string value; text that is not valid UTF-8 (jansson refuses it) is repaired the way the
 * rest of the core renders it, each invalid byte becoming U+FFFD. */
static json_t *text_to_json(const gs_rval *v)
{
    const char *s = v->p ? (const char *)v->p : "";
    size_t len = v->p ? v->len : 0;
    json_t *j = json_stringn(s, len);
    if (j)
        return j;
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_json_string(&b, s, len);
    if (!b.oom)
        j = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    gs_buf_free(&b);
    return j;
}

static json_t *rval_to_json(const gs_rval *v)
{
    switch (v->type) {
    case GS_RVAL_NULL: return json_null();
    case GS_RVAL_BOOL: return json_boolean(v->i != 0);
    case GS_RVAL_INT: {
        if (v->i >= -GS_SAFE_INT_MAX && v->i <= GS_SAFE_INT_MAX)
            return json_integer((json_int_t)v->i);
        char dec[24];
        snprintf(dec, sizeof dec, "%lld", (long long)v->i);
        return json_pack("{ss}", INT_TAG, dec);
    }
    case GS_RVAL_DOUBLE: return isfinite(v->d) ? json_real(v->d) : json_null();
    case GS_RVAL_TEXT: return text_to_json(v);
    case GS_RVAL_BLOB: {
        gs_buf b;
        gs_buf_init(&b);
        gs_buf_hex_upper(&b, v->p, v->p ? v->len : 0);
        json_t *j =
            b.oom ? NULL : json_pack("{s:s%}", "__sirannon_blob", b.data ? b.data : "", b.len);
        gs_buf_free(&b);
        return j;
    }
    }
    return json_null();
}

json_t *gs_rrow_to_json(const gs_rrow *r)
{
    if (!r)
        return json_null();
    json_t *obj = json_object();
    if (!obj)
        return NULL;
    for (size_t i = 0; i < r->n; i++) {
        json_t *v = rval_to_json(&r->vals[i]);
        if (!v || json_object_set_new(obj, r->names[i], v) != 0) {
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

/* ---- releasing messages ---- */

static void free_strings(char **s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        gs_free(s[i]);
    gs_free(s);
}

void gs_repl_change_free(gs_repl_change *c)
{
    if (!c)
        return;
    gs_free(c->table);
    gs_free(c->operation);
    gs_free(c->row_id);
    gs_rrow_free(c->primary_key);
    gs_free(c->hlc);
    gs_free(c->tx_id);
    gs_free(c->node_id);
    gs_rrow_free(c->new_data);
    gs_rrow_free(c->old_data);
    gs_free(c->ddl_statement);
    memset(c, 0, sizeof *c);
}

void gs_repl_batch_free(gs_repl_batch *b)
{
    if (!b)
        return;
    gs_free(b->source_node_id);
    gs_free(b->batch_id);
    gs_free(b->group_id);
    gs_free(b->hlc_min);
    gs_free(b->hlc_max);
    for (size_t i = 0; i < b->nchanges; i++)
        gs_repl_change_free(&b->changes[i]);
    gs_free(b->changes);
    gs_free(b->checksum);
    memset(b, 0, sizeof *b);
}

void gs_repl_ack_free(gs_repl_ack *a)
{
    if (!a)
        return;
    gs_free(a->batch_id);
    gs_free(a->group_id);
    gs_free(a->node_id);
    memset(a, 0, sizeof *a);
}

void gs_repl_hello_free(gs_repl_hello *h)
{
    if (!h)
        return;
    gs_free(h->node_id);
    gs_free(h->role);
    gs_free(h->group_id);
    gs_free(h->protocol_version);
    memset(h, 0, sizeof *h);
}

void gs_repl_message_free(gs_repl_message *m)
{
    if (!m)
        return;
    gs_repl_hello_free(&m->hello);
    gs_repl_batch_free(&m->batch);
    gs_repl_ack_free(&m->ack);
    m->kind = GS_RMSG_NONE;
}

void gs_sync_request_free(gs_sync_request *r)
{
    if (!r)
        return;
    gs_free(r->request_id);
    gs_free(r->joiner_node_id);
    free_strings(r->completed_tables, r->ncompleted);
    gs_free(r->group_id);
    for (size_t i = 0; r->resume && i < r->nresume; i++) {
        gs_free(r->resume[i].table);
        gs_free(r->resume[i].cursor);
        gs_free(r->resume[i].digest);
    }
    gs_free(r->resume);
    memset(r, 0, sizeof *r);
}

void gs_sync_batch_free(gs_sync_batch *b)
{
    if (!b)
        return;
    gs_free(b->request_id);
    gs_free(b->table);
    for (size_t i = 0; b->rows && i < b->nrows; i++)
        rrow_clear(&b->rows[i]);
    gs_free(b->rows);
    free_strings(b->schema, b->nschema);
    gs_free(b->checksum);
    gs_free(b->group_id);
    gs_free(b->cursor);
    memset(b, 0, sizeof *b);
}

void gs_sync_complete_free(gs_sync_complete *c)
{
    if (!c)
        return;
    gs_free(c->request_id);
    for (size_t i = 0; i < c->nmanifests; i++) {
        gs_free(c->manifests[i].table);
        gs_free(c->manifests[i].pk_hash);
        gs_free(c->manifests[i].batch_digest);
    }
    gs_free(c->manifests);
    gs_free(c->group_id);
    memset(c, 0, sizeof *c);
}

void gs_sync_ack_free(gs_sync_ack *a)
{
    if (!a)
        return;
    gs_free(a->request_id);
    gs_free(a->joiner_node_id);
    gs_free(a->table);
    gs_free(a->error);
    gs_free(a->group_id);
    memset(a, 0, sizeof *a);
}

void gs_sync_message_free(gs_sync_message *m)
{
    if (!m)
        return;
    gs_repl_hello_free(&m->hello);
    gs_sync_request_free(&m->request);
    gs_sync_batch_free(&m->batch);
    gs_sync_complete_free(&m->complete);
    gs_sync_ack_free(&m->ack);
    m->kind = GS_SMSG_NONE;
}

void gs_fwd_request_free(gs_fwd_request *r)
{
    if (!r)
        return;
    gs_free(r->request_id);
    for (size_t i = 0; i < r->nstatements; i++) {
        gs_fwd_statement *s = &r->statements[i];
        gs_free(s->sql);
        gs_rrow_free(s->named);
        for (size_t k = 0; k < s->npositional; k++)
            gs_rval_free(&s->positional[k]);
        gs_free(s->positional);
    }
    gs_free(r->statements);
    gs_free(r->group_id);
    memset(r, 0, sizeof *r);
}

void gs_fwd_response_free(gs_fwd_response *r)
{
    if (!r)
        return;
    gs_free(r->request_id);
    gs_free(r->results);
    gs_free(r->error);
    gs_free(r->group_id);
    memset(r, 0, sizeof *r);
}
