/* The tagged value encoding of spec 02 both ways: gs_value -> JSON text (integers beyond
 * +/-(2^53-1) as {"__sirannon_int":"<dec>"}, blobs as {"__sirannon_blob":"<HEX>"}), and
 * jansson values -> gs_value. A malformed envelope is rejected, never decoded. Pure. */
#include "cl_internal.h"

#include "base/text.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cl_value_encode(gs_buf *b, const gs_value *v)
{
    switch (v->type) {
    case GS_VALUE_INT:
        if (v->u.i > GS_SAFE_INT_MAX || v->u.i < -GS_SAFE_INT_MAX) {
            gs_buf_printf(b, "{\"__sirannon_int\":\"%lld\"}", (long long)v->u.i);
        } else {
            gs_buf_json_int(b, v->u.i);
        }
        break;
    case GS_VALUE_DOUBLE: {
        size_t start = b->len;
        gs_buf_json_double(b, v->u.d);
        /* Keep a REAL a REAL: "2" would bind as INTEGER on the server, "2.0" binds as REAL. */
        if (!b->oom && b->len > start && strcspn(b->data + start, ".eEn") == b->len - start)
            gs_buf_puts(b, ".0");
        break;
    }
    case GS_VALUE_TEXT:
        gs_buf_json_string(b, v->u.text.ptr ? v->u.text.ptr : "", v->u.text.len);
        break;
    case GS_VALUE_BLOB:
        gs_buf_puts(b, "{\"__sirannon_blob\":\"");
        gs_buf_hex_upper(b, v->u.blob.ptr, v->u.blob.len);
        gs_buf_puts(b, "\"}");
        break;
    default: gs_buf_puts(b, "null"); break;
    }
}

gs_status cl_params_encode(gs_buf *b, const gs_client_params *p, gs_error *err)
{
    if (p->count && !p->values)
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "params.count is %zu but values is NULL",
                            p->count);
    gs_buf_putc(b, p->names ? '{' : '[');
    for (size_t i = 0; i < p->count; i++) {
        if (i)
            gs_buf_putc(b, ',');
        if (p->names) {
            const char *n = p->names[i];
            if (!n || !*n)
                return gs_error_set(err, 0, "INVALID_ARGUMENT", "named parameter %zu has no name",
                                    i);
            /* ":name", "@name", "$name" and "name" all bind the same parameter. */
            if (*n == ':' || *n == '@' || *n == '$')
                n++;
            gs_buf_json_string(b, n, strlen(n));
            gs_buf_putc(b, ':');
        }
        cl_value_encode(b, &p->values[i]);
    }
    gs_buf_putc(b, p->names ? '}' : ']');
    return GS_OK;
}

/* The envelope's payload when j is exactly {"<key>": "<string>"}, else NULL. */
static const char *envelope(json_t *j, const char **key)
{
    if (!json_is_object(j) || json_object_size(j) != 1)
        return NULL;
    json_t *v = json_object_get(j, "__sirannon_int");
    if (v) {
        *key = "int";
    } else {
        v = json_object_get(j, "__sirannon_blob");
        *key = "blob";
    }
    return v && json_is_string(v) ? json_string_value(v) : NULL;
}

static int parse_int_envelope(const char *s, int64_t *out)
{
    const char *d = *s == '-' ? s + 1 : s;
    size_t n = strlen(d);
    if (n < 1 || n > 19 || strspn(d, "0123456789") != n)
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

long cl_value_size(json_t *j)
{
    const char *key;
    const char *env = envelope(j, &key);
    if (env) {
        if (key[0] == 'i')
            return 0;
        size_t n = strlen(env);
        if (n % 2)
            return -1;
        return (long)(n / 2 + 1);
    }
    if (json_is_object(j) &&
        (json_object_get(j, "__sirannon_int") || json_object_get(j, "__sirannon_blob")) &&
        json_object_size(j) == 1)
        return -1; /* an envelope whose payload is not a string */
    if (json_is_string(j))
        return (long)json_string_length(j) + 1;
    if (json_is_object(j) || json_is_array(j)) {
        char *t = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        long n = t ? (long)strlen(t) + 1 : 1;
        free(t);
        return n;
    }
    return 0;
}

int cl_value_decode(json_t *j, gs_value *v, char **store)
{
    memset(v, 0, sizeof *v);
    const char *key;
    const char *env = envelope(j, &key);
    if (env) {
        if (key[0] == 'i') {
            v->type = GS_VALUE_INT;
            return parse_int_envelope(env, &v->u.i);
        }
        size_t n = strlen(env);
        if (n % 2)
            return -1;
        uint8_t *dst = (uint8_t *)*store;
        for (size_t i = 0; i < n; i += 2) {
            int hi = gs_hex_value((unsigned char)env[i]);
            int lo = gs_hex_value((unsigned char)env[i + 1]);
            if (hi < 0 || lo < 0)
                return -1;
            dst[i / 2] = (uint8_t)(hi << 4 | lo);
        }
        dst[n / 2] = 0;
        v->type = GS_VALUE_BLOB;
        v->u.blob.ptr = dst;
        v->u.blob.len = n / 2;
        *store += n / 2 + 1;
        return 0;
    }
    switch (json_typeof(j)) {
    case JSON_INTEGER:
        v->type = GS_VALUE_INT;
        v->u.i = (int64_t)json_integer_value(j);
        return 0;
    case JSON_REAL:
        v->type = GS_VALUE_DOUBLE;
        v->u.d = json_real_value(j);
        return 0;
    case JSON_TRUE:
    case JSON_FALSE:
        v->type = GS_VALUE_INT;
        v->u.i = json_is_true(j);
        return 0;
    case JSON_STRING: {
        size_t n = json_string_length(j);
        memcpy(*store, json_string_value(j), n);
        (*store)[n] = '\0';
        v->type = GS_VALUE_TEXT;
        v->u.text.ptr = *store;
        v->u.text.len = n;
        *store += n + 1;
        return 0;
    }
    case JSON_OBJECT:
    case JSON_ARRAY: {
        if (json_is_object(j) && json_object_size(j) == 1 &&
            (json_object_get(j, "__sirannon_int") || json_object_get(j, "__sirannon_blob")))
            return -1;
        /* Not a column value the spec defines; kept as its JSON text so nothing is lost. */
        char *t = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        size_t n = t ? strlen(t) : 0;
        if (t)
            memcpy(*store, t, n);
        (*store)[n] = '\0';
        free(t);
        v->type = GS_VALUE_TEXT;
        v->u.text.ptr = *store;
        v->u.text.len = n;
        *store += n + 1;
        return 0;
    }
    default: v->type = GS_VALUE_NULL; return 0;
    }
}
