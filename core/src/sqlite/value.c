#include "value.h"

#include "base/text.h"
#include "base/alloc.h"
#include "base/error.h"

#include <string.h>

static const char INT_TAG[] = "__sirannon_int";
static const char BLOB_TAG[] = "__sirannon_blob";

/* Parse an integer envelope payload: -?[0-9]{1,19}, within int64. */
static int parse_int_payload(const char *s, size_t len, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    if (len > 0 && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    size_t digits = len - i;
    if (digits < 1 || digits > 19)
        return -1;
    uint64_t mag = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        mag = mag * 10 + (uint64_t)(s[i] - '0'); /* 19 digits never overflow uint64 */
    }
    if (neg) {
        if (mag > (uint64_t)INT64_MAX + 1)
            return -2;
        *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        if (mag > (uint64_t)INT64_MAX)
            return -2;
        *out = (int64_t)mag;
    }
    return 0;
}

gs_status gs_value_check(const json_t *v, size_t *bytes, gs_error *err)
{
    switch (json_typeof(v)) {
    case JSON_NULL:
    case JSON_TRUE:
    case JSON_FALSE:
    case JSON_INTEGER:
    case JSON_REAL: return GS_OK;
    case JSON_STRING: *bytes += json_string_length(v); return GS_OK;
    case JSON_ARRAY:
        return gs_error_set(err, 0, "INVALID_REQUEST",
                            "an array is not a bind value (use a scalar, an __sirannon_int or "
                            "an __sirannon_blob envelope)");
    case JSON_OBJECT: break;
    }
    const char *key = NULL;
    json_t *payload = NULL;
    if (json_object_size(v) == 1) {
        void *it = json_object_iter((json_t *)v);
        key = json_object_iter_key(it);
        payload = json_object_iter_value(it);
    }
    if (!key || (strcmp(key, INT_TAG) != 0 && strcmp(key, BLOB_TAG) != 0))
        return gs_error_set(err, 0, "INVALID_REQUEST",
                            "an object is not a bind value unless it is an envelope with exactly "
                            "one key, \"__sirannon_int\" or \"__sirannon_blob\"");
    if (!json_is_string(payload))
        return gs_error_set(err, 0, "INVALID_REQUEST", "the %s envelope must carry a string", key);
    const char *s = json_string_value(payload);
    size_t len = json_string_length(payload);
    if (strcmp(key, INT_TAG) == 0) {
        int64_t ignored;
        int rc = parse_int_payload(s, len, &ignored);
        if (rc == -1)
            return gs_error_set(err, 0, "INVALID_REQUEST",
                                "malformed __sirannon_int envelope: expected an optional '-' "
                                "and 1 to 19 decimal digits");
        if (rc == -2)
            return gs_error_set(err, 0, "INVALID_REQUEST",
                                "__sirannon_int envelope out of range: the value does not fit a "
                                "64-bit signed integer");
        return GS_OK;
    }
    if (len % 2 != 0)
        return gs_error_set(err, 0, "INVALID_REQUEST",
                            "malformed __sirannon_blob envelope: odd number of hex digits");
    for (size_t i = 0; i < len; i++)
        if (gs_hex_value((unsigned char)s[i]) < 0)
            return gs_error_set(err, 0, "INVALID_REQUEST",
                                "malformed __sirannon_blob envelope: '%c' at offset %zu is not "
                                "a hex digit",
                                (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?', i);
    *bytes += len / 2;
    return GS_OK;
}

void gs_value_from_json(const json_t *v, gs_value *out, char **arena)
{
    memset(out, 0, sizeof *out);
    switch (json_typeof(v)) {
    case JSON_NULL: out->type = GS_VALUE_NULL; return;
    case JSON_TRUE:
    case JSON_FALSE:
        out->type = GS_VALUE_INT;
        out->u.i = json_is_true(v) ? 1 : 0;
        return;
    case JSON_INTEGER:
        out->type = GS_VALUE_INT;
        out->u.i = (int64_t)json_integer_value(v);
        return;
    case JSON_REAL:
        out->type = GS_VALUE_DOUBLE;
        out->u.d = json_real_value(v);
        return;
    case JSON_STRING: {
        size_t len = json_string_length(v);
        out->type = GS_VALUE_TEXT;
        out->u.text.len = len;
        if (len == 0) {
            out->u.text.ptr = "";
            return;
        }
        memcpy(*arena, json_string_value(v), len);
        out->u.text.ptr = *arena;
        *arena += len;
        return;
    }
    case JSON_ARRAY: return; /* rejected by gs_value_check */
    case JSON_OBJECT: break;
    }
    void *it = json_object_iter((json_t *)v);
    const char *key = json_object_iter_key(it);
    json_t *payload = json_object_iter_value(it);
    const char *s = json_string_value(payload);
    size_t len = json_string_length(payload);
    if (strcmp(key, INT_TAG) == 0) {
        out->type = GS_VALUE_INT;
        parse_int_payload(s, len, &out->u.i);
        return;
    }
    out->type = GS_VALUE_BLOB;
    out->u.blob.len = len / 2;
    uint8_t *dst = (uint8_t *)*arena;
    for (size_t i = 0; i < len; i += 2)
        dst[i / 2] = (uint8_t)(gs_hex_value((unsigned char)s[i]) << 4 |
                               gs_hex_value((unsigned char)s[i + 1]));
    out->u.blob.ptr = dst;
    *arena += len / 2;
}

gs_status gs_params_check(const json_t *params, const char *label, size_t *count, size_t *bytes,
                          gs_error *err)
{
    if (!params || json_is_null(params))
        return GS_OK;
    if (json_is_array(params)) {
        size_t i;
        json_t *v;
        json_array_foreach(params, i, v)
        {
            if (gs_value_check(v, bytes, err) != GS_OK) {
                gs_error_prefix(err, "%s[%zu]", label, i);
                return GS_ERROR;
            }
        }
        *count += json_array_size(params);
        return GS_OK;
    }
    if (json_is_object(params)) {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)params, key, v)
        {
            if (key[0] == '\0') {
                gs_error_set(err, 0, "INVALID_REQUEST", "%s: a parameter name is empty", label);
                return GS_ERROR;
            }
            if (gs_value_check(v, bytes, err) != GS_OK) {
                gs_error_prefix(err, "%s.%s", label, key);
                return GS_ERROR;
            }
            *bytes += strlen(key) + 1;
        }
        *count += json_object_size(params);
        return GS_OK;
    }
    return gs_error_set(err, 0, "INVALID_REQUEST",
                        "%s must be an array (positional) or an object (named parameters)", label);
}

void gs_params_convert(const json_t *params, gs_bind_set *set, gs_bind_param *items, char **arena)
{
    set->items = items;
    set->count = 0;
    set->kind = GS_BIND_NONE;
    if (!params || json_is_null(params))
        return;
    if (json_is_array(params)) {
        set->kind = GS_BIND_POSITIONAL;
        size_t i;
        json_t *v;
        json_array_foreach(params, i, v)
        {
            items[i].name = NULL;
            gs_value_from_json(v, &items[i].value, arena);
        }
        set->count = json_array_size(params);
        return;
    }
    set->kind = GS_BIND_NAMED;
    const char *key;
    json_t *v;
    size_t n = 0;
    json_object_foreach((json_t *)params, key, v)
    {
        size_t kl = strlen(key);
        memcpy(*arena, key, kl + 1);
        items[n].name = *arena;
        *arena += kl + 1;
        gs_value_from_json(v, &items[n].value, arena);
        n++;
    }
    set->count = n;
}

static int bind_one(sqlite3_stmt *stmt, int idx, const gs_value *v)
{
    switch (v->type) {
    case GS_VALUE_NULL: return sqlite3_bind_null(stmt, idx);
    case GS_VALUE_INT: return sqlite3_bind_int64(stmt, idx, v->u.i);
    case GS_VALUE_DOUBLE: return sqlite3_bind_double(stmt, idx, v->u.d);
    case GS_VALUE_TEXT:
        return sqlite3_bind_text64(stmt, idx, v->u.text.ptr, v->u.text.len, SQLITE_STATIC,
                                   SQLITE_UTF8);
    case GS_VALUE_BLOB:
        /* a NULL pointer would bind SQL NULL; an empty blob is a zero-length blob */
        if (v->u.blob.len == 0)
            return sqlite3_bind_zeroblob(stmt, idx, 0);
        return sqlite3_bind_blob64(stmt, idx, v->u.blob.ptr, v->u.blob.len, SQLITE_STATIC);
    }
    return SQLITE_MISUSE;
}

static const gs_bind_param *find_named(const gs_bind_set *set, const char *pname)
{
    /* a key with its prefix binds that exact name; a bare key binds :key, @key or $key */
    for (size_t i = 0; i < set->count; i++)
        if (strcmp(set->items[i].name, pname) == 0)
            return &set->items[i];
    for (size_t i = 0; i < set->count; i++) {
        const char *k = set->items[i].name;
        if (k[0] != ':' && k[0] != '@' && k[0] != '$' && strcmp(k, pname + 1) == 0)
            return &set->items[i];
    }
    return NULL;
}

gs_status gs_params_bind(sqlite3_stmt *stmt, const gs_bind_set *set, gs_error *err)
{
    int n = sqlite3_bind_parameter_count(stmt);
    int rc = SQLITE_OK;
    switch (set->kind) {
    case GS_BIND_NONE:
        if (n > 0)
            return gs_error_set(err, 0, "QUERY_ERROR",
                                "the statement has %d parameter%s but no values were given", n,
                                n == 1 ? "" : "s");
        return GS_OK;
    case GS_BIND_POSITIONAL:
        if (set->count != (size_t)n)
            return gs_error_set(err, 0, "QUERY_ERROR",
                                "too %s parameter values: the statement expects %d, got %zu",
                                set->count < (size_t)n ? "few" : "many", n, set->count);
        for (int i = 0; i < n && rc == SQLITE_OK; i++)
            rc = bind_one(stmt, i + 1, &set->items[i].value);
        break;
    case GS_BIND_NAMED:
        for (int i = 1; i <= n && rc == SQLITE_OK; i++) {
            const char *pname = sqlite3_bind_parameter_name(stmt, i);
            if (!pname)
                return gs_error_set(err, 0, "QUERY_ERROR",
                                    "parameter %d is positional (?) but the values are named; "
                                    "pass an array",
                                    i);
            const gs_bind_param *p = find_named(set, pname);
            if (!p)
                return gs_error_set(err, 0, "QUERY_ERROR", "no value for named parameter %s",
                                    pname);
            rc = bind_one(stmt, i, &p->value);
        }
        break;
    }
    if (rc != SQLITE_OK)
        return gs_error_set(err, 0, "QUERY_ERROR", "cannot bind a parameter: %s",
                            sqlite3_errstr(rc));
    return GS_OK;
}

void gs_value_append_int(gs_buf *b, int64_t v)
{
    if (v >= -GS_SAFE_INT_MAX && v <= GS_SAFE_INT_MAX) {
        gs_buf_json_int(b, v);
        return;
    }
    gs_buf_puts(b, "{\"__sirannon_int\":\"");
    gs_buf_json_int(b, v);
    gs_buf_puts(b, "\"}");
}

void gs_value_append_blob(gs_buf *b, const void *p, size_t len)
{
    gs_buf_puts(b, "{\"__sirannon_blob\":\"");
    gs_buf_hex_upper(b, p, len);
    gs_buf_puts(b, "\"}");
}

void gs_value_append_rowid(gs_buf *b, int64_t v)
{
    if (v >= -GS_SAFE_INT_MAX && v <= GS_SAFE_INT_MAX) {
        gs_buf_json_int(b, v);
        return;
    }
    gs_buf_putc(b, '"');
    gs_buf_json_int(b, v);
    gs_buf_putc(b, '"');
}

void gs_value_append_column(gs_buf *b, sqlite3_stmt *stmt, int col)
{
    switch (sqlite3_column_type(stmt, col)) {
    case SQLITE_INTEGER: gs_value_append_int(b, sqlite3_column_int64(stmt, col)); return;
    case SQLITE_FLOAT: gs_buf_json_double(b, sqlite3_column_double(stmt, col)); return;
    case SQLITE_TEXT: {
        const unsigned char *p = sqlite3_column_text(stmt, col);
        int n = sqlite3_column_bytes(stmt, col);
        if (!p) { /* out of memory converting the value */
            b->oom = 1;
            return;
        }
        gs_buf_json_string(b, (const char *)p, (size_t)n);
        return;
    }
    case SQLITE_BLOB: {
        const void *p = sqlite3_column_blob(stmt, col);
        int n = sqlite3_column_bytes(stmt, col);
        gs_value_append_blob(b, p, p ? (size_t)n : 0);
        return;
    }
    default: gs_buf_append(b, "null", 4); return;
    }
}

void gs_row_keys_init(gs_row_keys *k)
{
    gs_buf_init(&k->text);
    k->off = NULL;
    k->cap = 0;
    k->ncols = 0;
}

void gs_row_keys_free(gs_row_keys *k)
{
    gs_buf_free(&k->text);
    gs_free(k->off);
    gs_row_keys_init(k);
}

int gs_row_keys_build(gs_row_keys *k, sqlite3_stmt *stmt)
{
    int n = sqlite3_column_count(stmt);
    if ((size_t)n + 1 > k->cap) {
        size_t cap = (size_t)n + 1 < 16 ? 16 : (size_t)n + 1;
        size_t *off = gs_realloc(k->off, cap * sizeof *off);
        if (!off)
            return -1;
        k->off = off;
        k->cap = cap;
    }
    gs_buf_reset(&k->text);
    for (int i = 0; i < n; i++) {
        k->off[i] = k->text.len;
        const char *name = sqlite3_column_name(stmt, i);
        if (!name)
            name = "";
        gs_buf_json_string(&k->text, name, strlen(name));
        gs_buf_putc(&k->text, ':');
    }
    k->off[n] = k->text.len;
    k->ncols = n;
    return k->text.oom ? -1 : 0;
}

void gs_value_append_row(gs_buf *b, sqlite3_stmt *stmt, const gs_row_keys *keys)
{
    gs_buf_putc(b, '{');
    for (int i = 0; i < keys->ncols; i++) {
        if (i)
            gs_buf_putc(b, ',');
        gs_buf_append(b, keys->text.data + keys->off[i], keys->off[i + 1] - keys->off[i]);
        gs_value_append_column(b, stmt, i);
    }
    gs_buf_putc(b, '}');
}
