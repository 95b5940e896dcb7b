/*
 * Validation: a map node checked against a typed key table (gs_config_key) and copied into
 * the C struct the table describes. Entries are checked in document order (unknown keys,
 * wrong types, bounds, choices), then absent keys take their defaults or fail when
 * required. A YAML null counts as absent. Strings, lists and JSON text live in the arena.
 */
#include "config_internal.h"

#include "../base/alloc.h"
#include "../base/error.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Position of an absent map when the caller gave none: "file: " without a line. */
#define NO_LINE (-1)

typedef struct fill_ctx {
    const char *file;
    gs_cfg_arena *arena;
    gs_error *err;
} fill_ctx;

static void location(const fill_ctx *c, int line, char *buf, size_t n)
{
    if (line == NO_LINE)
        snprintf(buf, n, "%s: ", c->file);
    else
        gs_cfg_location(buf, n, c->file, line);
}

/* "file:line: path: message" with code INVALID_CONFIG. */
static gs_status fail(const fill_ctx *c, int line, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static gs_status fail(const fill_ctx *c, int line, const char *path, const char *fmt, ...)
{
    char loc[200], msg[480];
    location(c, line, loc, sizeof loc);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (path && *path)
        return gs_error_set(c->err, 0, GS_CFG_ERR, "%s%s: %s", loc, path, msg);
    return gs_error_set(c->err, 0, GS_CFG_ERR, "%s%s", loc, msg);
}

static gs_status fail_nomem(const fill_ctx *c, const char *path)
{
    return gs_error_set(c->err, 0, "INTERNAL_ERROR",
                        "%s: %s: out of memory while reading the config", c->file,
                        path && *path ? path : "(top)");
}

/* A defect in a key table (the program's, not the user's). */
static gs_status fail_table(const fill_ctx *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static gs_status fail_table(const fill_ctx *c, const char *path, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gs_error_set(c->err, 0, "INTERNAL_ERROR", "config key table, key '%s': %s",
                        path && *path ? path : "(top)", msg);
}

static void join(char *dst, size_t n, const char *where, const char *key)
{
    char ex[72];
    gs_cfg_excerpt(ex, sizeof ex, key, 64);
    snprintf(dst, n, "%s%s%s", where, *where ? "." : "", ex);
}

static const char *node_kind(const gs_cfg_node *n)
{
    if (n->type == GS_CFG_NODE_MAP)
        return "a map";
    if (n->type == GS_CFG_NODE_SEQ)
        return "a list";
    return n->is_null ? "an empty value" : "a single value";
}

static void put(char *out, size_t off, const void *v, size_t n)
{
    memcpy(out + off, v, n);
}

static gs_status fill_table(const fill_ctx *c, const gs_cfg_node *map, const char *where, int line,
                            const gs_config_key *keys, size_t count, size_t key_size, char *out,
                            int depth);

/* ---- scalar values ------------------------------------------------------------------ */

/* Store scalar text `s` for key k. For a default (is_default) an invalid text is a defect
 * of the table (INTERNAL_ERROR). Returns GS_OK, or an error already set. */
static gs_status store_scalar(const fill_ctx *c, const gs_config_key *k, const char *s,
                              int is_default, int line, const char *path, char *out)
{
    char why[360], got[88];
    int rc = 0;
    switch (k->type) {
    case GS_CFG_STRING: {
        rc = gs_cfg_check_choice(s, k, why, sizeof why);
        if (rc)
            break;
        char *v = gs_cfg_arena_strdup(c->arena, s);
        if (!v)
            return fail_nomem(c, path);
        const char *cv = v;
        put(out, k->offset, &cv, sizeof cv);
        return GS_OK;
    }
    case GS_CFG_INT: {
        int64_t v = 0;
        rc = gs_cfg_parse_int(s, k, &v, why, sizeof why);
        if (!rc)
            put(out, k->offset, &v, sizeof v);
        break;
    }
    case GS_CFG_BOOL: {
        int v = 0;
        rc = gs_cfg_parse_bool(s, &v, why, sizeof why);
        if (!rc)
            put(out, k->offset, &v, sizeof v);
        break;
    }
    case GS_CFG_DOUBLE: {
        double v = 0;
        rc = gs_cfg_parse_double(s, k, &v, why, sizeof why);
        if (!rc)
            put(out, k->offset, &v, sizeof v);
        break;
    }
    default: return fail_table(c, path, "type %d is not a scalar type", (int)k->type);
    }
    if (!rc)
        return GS_OK;
    gs_cfg_excerpt(got, sizeof got, s, 80);
    if (is_default)
        return fail_table(c, path, "the default '%s' is invalid: %s", got, why);
    return fail(c, line, path, "%s, got '%s'", why, got);
}

/* ---- lists ---------------------------------------------------------------------------- */

static const char *const empty_strings[] = {NULL};

static gs_status store_strings(const fill_ctx *c, const gs_config_key *k, const char *const *src,
                               size_t n, char *out, const char *path)
{
    gs_config_strings v = {empty_strings, 0};
    if (n > 0) {
        if (n > ((size_t)-1) / sizeof(char *) - 1)
            return fail_nomem(c, path);
        const char **items = gs_cfg_arena_calloc(c->arena, (n + 1) * sizeof *items);
        if (!items)
            return fail_nomem(c, path);
        for (size_t i = 0; i < n; i++) {
            items[i] = gs_cfg_arena_strdup(c->arena, src[i]);
            if (!items[i])
                return fail_nomem(c, path);
        }
        v.items = items;
        v.count = n;
    }
    put(out, k->offset, &v, sizeof v);
    return GS_OK;
}

static gs_status fill_string_list(const fill_ctx *c, const gs_config_key *k,
                                  const gs_cfg_node *node, const char *path, char *out)
{
    if (node->type != GS_CFG_NODE_SEQ) {
        char got[88] = "";
        if (node->type == GS_CFG_NODE_SCALAR)
            gs_cfg_excerpt(got, sizeof got, node->value, 80);
        if (node->type == GS_CFG_NODE_SCALAR)
            return fail(c, node->line, path,
                        "expected a list of strings, got the single value '%s' (write [%s] for a "
                        "list of one)",
                        got, got);
        return fail(c, node->line, path, "expected a list of strings, got %s", node_kind(node));
    }
    const char **tmp = gs_calloc(node->count ? node->count : 1, sizeof *tmp);
    if (!tmp)
        return fail_nomem(c, path);
    gs_status st = GS_OK;
    for (size_t i = 0; i < node->count && !st; i++) {
        const gs_cfg_node *item = node->children[i];
        char ipath[300], why[360], got[88];
        snprintf(ipath, sizeof ipath, "%s[%zu]", path, i);
        if (item->type != GS_CFG_NODE_SCALAR || item->is_null) {
            st = fail(c, item->line, ipath, "expected a string, got %s", node_kind(item));
        } else if (gs_cfg_check_choice(item->value, k, why, sizeof why)) {
            gs_cfg_excerpt(got, sizeof got, item->value, 80);
            st = fail(c, item->line, ipath, "%s, got '%s'", why, got);
        }
        tmp[i] = item->value;
    }
    if (!st)
        st = store_strings(c, k, tmp, node->count, out, path);
    gs_free(tmp);
    return st;
}

/* A default for a string list: comma-separated items, optionally inside [ ]; "" is empty. */
static gs_status default_string_list(const fill_ctx *c, const gs_config_key *k, const char *def,
                                     const char *path, char *out)
{
    size_t len = strlen(def);
    while (len && (def[0] == ' ' || def[0] == '\t'))
        def++, len--;
    while (len && (def[len - 1] == ' ' || def[len - 1] == '\t'))
        len--;
    if (len >= 2 && def[0] == '[' && def[len - 1] == ']')
        def++, len -= 2;
    char *copy = gs_strndup(def, len);
    if (!copy)
        return fail_nomem(c, path);
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += copy[i] == ',';
    n = len ? n + 1 : 0;
    const char **items = gs_calloc(n ? n : 1, sizeof *items);
    if (!items) {
        gs_free(copy);
        return fail_nomem(c, path);
    }
    size_t got = 0;
    char *p = copy;
    int empty_item = 0;
    while (got < n) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        while (*p == ' ' || *p == '\t')
            p++;
        size_t l = strlen(p);
        while (l && (p[l - 1] == ' ' || p[l - 1] == '\t'))
            p[--l] = '\0';
        empty_item |= l == 0;
        items[got++] = p;
        p = comma ? comma + 1 : p + l;
    }
    gs_status st = GS_OK;
    char why[360];
    if (empty_item)
        st = fail_table(c, path, "the default '%s' has an empty item", k->default_value);
    for (size_t i = 0; i < n && !st; i++)
        if (gs_cfg_check_choice(items[i], k, why, sizeof why))
            st = fail_table(c, path, "the default item '%s' is invalid: %s", items[i], why);
    if (!st)
        st = store_strings(c, k, items, n, out, path);
    gs_free(items);
    gs_free(copy);
    return st;
}

static gs_status fill_list(const fill_ctx *c, const gs_config_key *k, const gs_cfg_node *node,
                           const char *path, size_t key_size, char *out, int depth)
{
    if (node->type != GS_CFG_NODE_SEQ)
        return fail(c, node->line, path, "expected a list of maps, got %s", node_kind(node));
    gs_config_list v = {NULL, 0};
    if (node->count) {
        size_t sz = k->child_struct_size;
        if (sz > ((size_t)-1) / node->count)
            return fail_nomem(c, path);
        char *items = gs_cfg_arena_calloc(c->arena, node->count * sz);
        if (!items)
            return fail_nomem(c, path);
        for (size_t i = 0; i < node->count; i++) {
            const gs_cfg_node *item = node->children[i];
            char ipath[300];
            snprintf(ipath, sizeof ipath, "%s[%zu]", path, i);
            if (item->type != GS_CFG_NODE_MAP)
                return fail(c, item->line, ipath, "expected a map, got %s", node_kind(item));
            gs_status st = fill_table(c, item, ipath, item->line, k->children, k->child_count,
                                      key_size, items + i * sz, depth + 1);
            if (st)
                return st;
        }
        v.items = items;
        v.count = node->count;
    }
    put(out, k->offset, &v, sizeof v);
    return GS_OK;
}

/* ---- one key --------------------------------------------------------------------------- */

static gs_status store_json(const fill_ctx *c, const gs_config_key *k, const gs_cfg_node *node,
                            const char *path, char *out)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_cfg_to_json(node, &b);
    if (b.oom || !b.data) {
        gs_buf_free(&b);
        return fail_nomem(c, path);
    }
    char *text = gs_buf_take(&b, NULL);
    if (gs_cfg_arena_keep(c->arena, text))
        return fail_nomem(c, path);
    const char *ct = text;
    put(out, k->offset, &ct, sizeof ct);
    return GS_OK;
}

/* Key k is absent (or null). `null_node` is the null entry when there was one. */
static gs_status fill_absent(const fill_ctx *c, const gs_config_key *k,
                             const gs_cfg_node *null_node, const char *where, const char *path,
                             int line, size_t key_size, char *out, int depth)
{
    if (k->required) {
        if (null_node)
            return fail(c, null_node->line, path, "a value is required for '%s', but it is empty",
                        k->name);
        return fail(c, line, where, "missing required key '%s'", k->name);
    }
    const char *def = k->default_value;
    switch (k->type) {
    case GS_CFG_STRING:
        if (def)
            return store_scalar(c, k, def, 1, line, path, out);
        {
            const char *none = NULL;
            put(out, k->offset, &none, sizeof none);
        }
        return GS_OK;
    case GS_CFG_INT:
    case GS_CFG_BOOL:
    case GS_CFG_DOUBLE:
        if (def)
            return store_scalar(c, k, def, 1, line, path, out);
        if (k->type == GS_CFG_INT) {
            int64_t z = 0;
            put(out, k->offset, &z, sizeof z);
        } else if (k->type == GS_CFG_BOOL) {
            int z = 0;
            put(out, k->offset, &z, sizeof z);
        } else {
            double z = 0;
            put(out, k->offset, &z, sizeof z);
        }
        return GS_OK;
    case GS_CFG_STRING_LIST:
        if (def)
            return default_string_list(c, k, def, path, out);
        return store_strings(c, k, NULL, 0, out, path);
    case GS_CFG_SECTION:
        return fill_table(c, NULL, path, line, k->children, k->child_count, key_size,
                          out + k->offset, depth + 1);
    case GS_CFG_LIST: {
        gs_config_list v = {NULL, 0};
        put(out, k->offset, &v, sizeof v);
        return GS_OK;
    }
    case GS_CFG_JSON:
        if (def) {
            json_error_t jerr;
            json_t *j = json_loads(def, JSON_DECODE_ANY, &jerr);
            if (!j)
                return fail_table(c, path, "the default is not valid JSON: %s", jerr.text);
            json_decref(j);
            char *text = gs_cfg_arena_strdup(c->arena, def);
            if (!text)
                return fail_nomem(c, path);
            const char *ct = text;
            put(out, k->offset, &ct, sizeof ct);
        } else {
            const char *none = NULL;
            put(out, k->offset, &none, sizeof none);
        }
        return GS_OK;
    }
    return fail_table(c, path, "unknown type %d", (int)k->type);
}

static gs_status fill_present(const fill_ctx *c, const gs_config_key *k, const gs_cfg_node *node,
                              const char *path, size_t key_size, char *out, int depth)
{
    static const char *const expected[] = {
        [GS_CFG_STRING] = "expected a string",
        [GS_CFG_INT] = "expected an integer",
        [GS_CFG_BOOL] = "expected true or false",
        [GS_CFG_DOUBLE] = "expected a number",
    };
    switch (k->type) {
    case GS_CFG_STRING:
    case GS_CFG_INT:
    case GS_CFG_BOOL:
    case GS_CFG_DOUBLE:
        if (node->type != GS_CFG_NODE_SCALAR)
            return fail(c, node->line, path, "%s, got %s", expected[k->type], node_kind(node));
        return store_scalar(c, k, node->value, 0, node->line, path, out);
    case GS_CFG_STRING_LIST: return fill_string_list(c, k, node, path, out);
    case GS_CFG_SECTION:
        if (node->type != GS_CFG_NODE_MAP)
            return fail(c, node->line, path, "expected a map of keys, got %s", node_kind(node));
        return fill_table(c, node, path, node->line, k->children, k->child_count, key_size,
                          out + k->offset, depth + 1);
    case GS_CFG_LIST: return fill_list(c, k, node, path, key_size, out, depth);
    case GS_CFG_JSON: return store_json(c, k, node, path, out);
    }
    return fail_table(c, path, "unknown type %d", (int)k->type);
}

/* Table defects that would make filling unsafe, checked before any key is touched. */
static gs_status check_key(const fill_ctx *c, const gs_config_key *k, const char *path)
{
    if (!k->name || !*k->name)
        return fail_table(c, path, "a key has no name");
    if (k->type < GS_CFG_STRING || k->type > GS_CFG_JSON)
        return fail_table(c, path, "unknown type %d", (int)k->type);
    if (k->type == GS_CFG_SECTION || k->type == GS_CFG_LIST) {
        if (k->child_count && !k->children)
            return fail_table(c, path, "child_count is set but children is NULL");
        if (k->default_value)
            return fail_table(c, path, "a section or list cannot have a default");
        if (k->type == GS_CFG_LIST && k->child_struct_size == 0)
            return fail_table(c, path, "a list needs child_struct_size");
    }
    return GS_OK;
}

static void known_keys(const gs_config_key *keys, size_t count, size_t key_size, char *buf,
                       size_t n)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < count; i++) {
        gs_config_key k;
        gs_cfg_key_at(keys, i, key_size, &k);
        const char *name = k.name ? k.name : "?";
        size_t need = (i ? 2 : 0) + strlen(name);
        if (o + need + 6 > n) { /* room for ", ..." */
            snprintf(buf + o, n - o, "%s...", i ? ", " : "");
            return;
        }
        o += (size_t)snprintf(buf + o, n - o, "%s%s", i ? ", " : "", name);
    }
    if (count == 0)
        snprintf(buf, n, "(none)");
}

static int find_key(const gs_config_key *keys, size_t count, size_t key_size, const char *name,
                    gs_config_key *k)
{
    for (size_t i = 0; i < count; i++) {
        gs_cfg_key_at(keys, i, key_size, k);
        if (k->name && strcmp(k->name, name) == 0)
            return 1;
    }
    return 0;
}

static gs_status fill_table(const fill_ctx *c, const gs_cfg_node *map, const char *where, int line,
                            const gs_config_key *keys, size_t count, size_t key_size, char *out,
                            int depth)
{
    if (depth > GS_CFG_MAX_DEPTH)
        return fail_table(c, where,
                          "tables nest deeper than %d levels (a table that contains "
                          "itself?)",
                          GS_CFG_MAX_DEPTH);
    if (count && !keys)
        return fail_table(c, where, "count is %zu but keys is NULL", count);
    if (map)
        line = map->line;
    char path[300];
    gs_config_key k;
    for (size_t i = 0; i < count; i++) {
        gs_cfg_key_at(keys, i, key_size, &k);
        join(path, sizeof path, where, k.name ? k.name : "?");
        gs_status st = check_key(c, &k, path);
        if (st)
            return st;
    }
    /* Entries in document order, so the first error is the first in the file. */
    for (size_t i = 0; map && i < map->count; i++) {
        const gs_cfg_node *e = map->children[i];
        const char *name = e->key ? e->key : "";
        join(path, sizeof path, where, name);
        if (!find_key(keys, count, key_size, name, &k)) {
            char known[260], ex[72];
            known_keys(keys, count, key_size, known, sizeof known);
            gs_cfg_excerpt(ex, sizeof ex, name, 64);
            return fail(c, e->line, path, "unknown key '%s'; known keys: %s", ex, known);
        }
        gs_status st = e->type == GS_CFG_NODE_SCALAR && e->is_null
                           ? fill_absent(c, &k, e, where, path, line, key_size, out, depth)
                           : fill_present(c, &k, e, path, key_size, out, depth);
        if (st)
            return st;
    }
    /* Keys the map does not mention. */
    for (size_t i = 0; i < count; i++) {
        gs_cfg_key_at(keys, i, key_size, &k);
        if (map && gs_cfg_get(map, k.name))
            continue;
        join(path, sizeof path, where, k.name);
        gs_status st = fill_absent(c, &k, NULL, where, path, line, key_size, out, depth);
        if (st)
            return st;
    }
    return GS_OK;
}

gs_status gs_cfg_fill(const gs_cfg_doc *doc, const gs_cfg_node *map, const char *where,
                      const gs_config_key *keys, size_t count, size_t key_size, void *out,
                      gs_cfg_arena *arena, gs_error *err)
{
    fill_ctx c = {doc && doc->file ? doc->file : "<config>", arena, err};
    if (!where)
        where = "";
    if (!out || !arena || (count && key_size < offsetof(gs_config_key, help)))
        return gs_error_set(err, 0, "INTERNAL_ERROR",
                            "gs_cfg_fill: missing output struct, arena or key table");
    int line = map ? map->line : NO_LINE;
    if (map && map->type == GS_CFG_NODE_SCALAR && map->is_null)
        map = NULL; /* "config:" with nothing after it: absent, reported at its line */
    if (map && map->type != GS_CFG_NODE_MAP)
        return fail(&c, map->line, where, "expected a map of keys, got %s", node_kind(map));
    return fill_table(&c, map, where, line, keys, count, key_size, out, 0);
}
