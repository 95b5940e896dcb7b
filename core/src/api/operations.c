#include "operations.h"

#include "../base/alloc.h"
#include "../base/buf.h"
#include "../base/error.h"
#include "../base/sha256.h"

#include <stdlib.h>
#include <string.h>

struct gs_operations {
    gs_operation *items;
    size_t count, cap;
    char digest[65];
};

gs_operations *gs_operations_new(void)
{
    return gs_calloc(1, sizeof(gs_operations));
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        gs_free(v[i]);
    gs_free(v);
}

static void op_clear(gs_operation *op)
{
    gs_free(op->database);
    gs_free(op->name);
    free_strv(op->statements, op->statement_count);
    free_strv(op->args, op->arg_count);
    free_strv(op->identity_args, op->identity_count);
    free_strv(op->identity_fields, op->identity_count);
}

void gs_operations_free(gs_operations *ops)
{
    if (!ops)
        return;
    for (size_t i = 0; i < ops->count; i++)
        op_clear(&ops->items[i]);
    gs_free(ops->items);
    gs_free(ops);
}

static char **dup_strv(char *const *v, size_t n, int *oom)
{
    if (!n)
        return NULL;
    char **out = gs_calloc(n, sizeof *out);
    if (!out) {
        *oom = 1;
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if (!(out[i] = gs_strdup(v[i])))
            *oom = 1;
    return out;
}

gs_status gs_operations_add(gs_operations *ops, const gs_operation *op, gs_error *err)
{
    if (!op->database || !op->name || !*op->name)
        return gs_error_set(err, 0, "INVALID_CONFIG", "an operation needs a database and a name");
    if (gs_operations_find_any(ops, op->database, op->name))
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "operation '%s' is declared twice for database '%s'", op->name,
                            op->database);
    if (op->kind == GS_OP_READ && op->statement_count != 1)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "read operation '%s' needs exactly one statement ('sql')", op->name);
    if (op->kind == GS_OP_WRITE && op->statement_count < 1)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "write operation '%s' needs at least one statement ('statements')",
                            op->name);
    for (size_t i = 0; i < op->identity_count; i++)
        for (size_t j = 0; j < op->arg_count; j++)
            if (strcmp(op->identity_args[i], op->args[j]) == 0)
                return gs_error_set(err, 0, "INVALID_CONFIG",
                                    "operation '%s': argument '%s' is both a caller argument "
                                    "and filled from identity; list it in one place",
                                    op->name, op->args[j]);
    if (ops->count == ops->cap) {
        size_t cap = ops->cap ? ops->cap * 2 : 8;
        gs_operation *p = gs_realloc(ops->items, cap * sizeof *p);
        if (!p)
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        ops->items = p;
        ops->cap = cap;
    }
    gs_operation *o = &ops->items[ops->count];
    memset(o, 0, sizeof *o);
    int oom = 0;
    o->database = gs_strdup(op->database);
    o->name = gs_strdup(op->name);
    o->kind = op->kind;
    o->statements = dup_strv(op->statements, op->statement_count, &oom);
    o->statement_count = op->statement_count;
    o->args = dup_strv(op->args, op->arg_count, &oom);
    o->arg_count = op->arg_count;
    o->identity_args = dup_strv(op->identity_args, op->identity_count, &oom);
    o->identity_fields = dup_strv(op->identity_fields, op->identity_count, &oom);
    o->identity_count = op->identity_count;
    if (oom || !o->database || !o->name) {
        op_clear(o);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    ops->count++;
    return GS_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_op(const void *a, const void *b)
{
    const gs_operation *x = *(const gs_operation *const *)a, *y = *(const gs_operation *const *)b;
    int c = strcmp(x->database, y->database);
    if (c)
        return c;
    if (x->kind != y->kind)
        return x->kind == GS_OP_READ ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Sorted names joined with ',' */
static void put_sorted(gs_buf *b, char **v, size_t n)
{
    char **s = n ? gs_malloc(n * sizeof *s) : NULL;
    if (n && !s) {
        b->oom = 1;
        return;
    }
    for (size_t i = 0; i < n; i++)
        s[i] = v[i];
    if (n)
        qsort(s, n, sizeof *s, cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (i)
            gs_buf_putc(b, ',');
        gs_buf_puts(b, s[i]);
    }
    gs_free(s);
}

gs_status gs_operations_build(gs_operations *ops, gs_error *err)
{
    /* One line per operation: db NUL kind NUL name NUL args NUL identity-args, sorted by
     * database, reads before writes, then name; lines joined by '\n'. */
    const gs_operation **sorted = gs_malloc((ops->count ? ops->count : 1) * sizeof *sorted);
    if (!sorted)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    for (size_t i = 0; i < ops->count; i++)
        sorted[i] = &ops->items[i];
    qsort(sorted, ops->count, sizeof *sorted, cmp_op);
    gs_buf b;
    gs_buf_init(&b);
    for (size_t i = 0; i < ops->count; i++) {
        const gs_operation *o = sorted[i];
        if (i)
            gs_buf_putc(&b, '\n');
        gs_buf_puts(&b, o->database);
        gs_buf_append(&b, "\0", 1);
        gs_buf_puts(&b, o->kind == GS_OP_READ ? "read" : "write");
        gs_buf_append(&b, "\0", 1);
        gs_buf_puts(&b, o->name);
        gs_buf_append(&b, "\0", 1);
        put_sorted(&b, o->args, o->arg_count);
        gs_buf_append(&b, "\0", 1);
        put_sorted(&b, o->identity_args, o->identity_count);
    }
    gs_free(sorted);
    if (b.oom) {
        gs_buf_free(&b);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    gs_sha256_hex(b.data ? b.data : "", b.len, ops->digest);
    gs_buf_free(&b);
    return GS_OK;
}

size_t gs_operations_count(const gs_operations *ops)
{
    return ops ? ops->count : 0;
}

const char *gs_operations_digest(const gs_operations *ops)
{
    return ops->digest;
}

const gs_operation *gs_operations_find(const gs_operations *ops, const char *database,
                                       const char *name, gs_op_kind kind)
{
    for (size_t i = 0; ops && i < ops->count; i++) {
        const gs_operation *o = &ops->items[i];
        if (o->kind == kind && strcmp(o->database, database) == 0 && strcmp(o->name, name) == 0)
            return o;
    }
    return NULL;
}

const gs_operation *gs_operations_find_any(const gs_operations *ops, const char *database,
                                           const char *name)
{
    const gs_operation *o = gs_operations_find(ops, database, name, GS_OP_READ);
    return o ? o : gs_operations_find(ops, database, name, GS_OP_WRITE);
}

json_t *gs_operation_resolve_args(const gs_operation *op, json_t *args, json_t *identity,
                                  gs_error *err)
{
    if (args && !json_is_object(args) && !json_is_null(args)) {
        gs_error_set(err, 0, "INVALID_REQUEST", "'args' must be an object");
        return NULL;
    }
    json_t *out = json_object();
    if (!out) {
        gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        return NULL;
    }
    const char *key;
    json_t *val;
    if (json_is_object(args)) {
        json_object_foreach(args, key, val)
        {
            int declared = 0;
            for (size_t i = 0; i < op->arg_count; i++)
                if (strcmp(op->args[i], key) == 0)
                    declared = 1;
            for (size_t i = 0; i < op->identity_count; i++)
                if (strcmp(op->identity_args[i], key) == 0) {
                    gs_error_set(err, 0, "ARGUMENT_NOT_ALLOWED",
                                 "argument '%s' of operation '%s' is filled from the caller's "
                                 "identity and may not be supplied",
                                 key, op->name);
                    json_decref(out);
                    return NULL;
                }
            if (!declared) {
                gs_error_set(err, 0, "ARGUMENT_NOT_ALLOWED",
                             "operation '%s' declares no argument '%s'", op->name, key);
                json_decref(out);
                return NULL;
            }
            json_object_set(out, key, val);
        }
    }
    for (size_t i = 0; i < op->arg_count; i++) {
        if (!json_object_get(out, op->args[i])) {
            gs_error_set(err, 0, "MISSING_ARGUMENT", "operation '%s' needs argument '%s'", op->name,
                         op->args[i]);
            json_decref(out);
            return NULL;
        }
    }
    for (size_t i = 0; i < op->identity_count; i++) {
        json_t *v =
            json_is_object(identity) ? json_object_get(identity, op->identity_fields[i]) : NULL;
        if (!v) {
            gs_error_set(err, 0, "IDENTITY_REQUIRED",
                         "operation '%s' fills '%s' from the identity field '%s'; the request "
                         "carries %s",
                         op->name, op->identity_args[i], op->identity_fields[i],
                         identity ? "an identity without that field" : "no identity");
            json_decref(out);
            return NULL;
        }
        json_object_set(out, op->identity_args[i], v);
    }
    return out;
}
