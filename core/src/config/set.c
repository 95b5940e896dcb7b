/*
 * Command-line overrides: gs_cfg_set(doc, "server.port", "9000") walks the dotted path,
 * creating maps that are missing, and sets the final key to a plain scalar with line 0
 * (messages then say "<command line>"). A segment may index an existing list item:
 * "databases[0].readers". The change is all or nothing: on any error the tree is as before.
 */
#include "config_internal.h"

#include "../base/alloc.h"
#include "../base/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INDICES 4

typedef struct seg {
    const char *name;
    size_t name_len;
    size_t idx[MAX_INDICES];
    int nidx;
} seg;

static gs_status set_fail(gs_error *err, const char *dotted, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static gs_status set_fail(gs_error *err, const char *dotted, const char *code, const char *fmt, ...)
{
    char ex[160], msg[300];
    gs_cfg_excerpt(ex, sizeof ex, dotted, 150);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gs_error_set(err, 0, code, "<command line>: %s: %s", ex, msg);
}

/* Split "a.b[1].c" into segments; returns the count, or GS_ERROR with err set. */
static int parse_path(const char *dotted, seg *segs, int max, gs_error *err)
{
    int n = 0, depth = 0;
    const char *p = dotted;
    for (;;) {
        if (n == max)
            return set_fail(err, dotted, GS_CFG_ERR, "the key path is too deep");
        seg *s = &segs[n];
        memset(s, 0, sizeof *s);
        s->name = p;
        while (*p && *p != '.' && *p != '[' && *p != ']')
            p++;
        s->name_len = (size_t)(p - s->name);
        if (s->name_len == 0)
            return set_fail(err, dotted, GS_CFG_ERR,
                            "empty key in the path (write it like server.port)");
        while (*p == '[') {
            char *end;
            if (p[1] < '0' || p[1] > '9')
                return set_fail(err, dotted, GS_CFG_ERR, "a list index must be a number");
            unsigned long long v = strtoull(p + 1, &end, 10);
            if (*end != ']' || v > 1000000)
                return set_fail(err, dotted, GS_CFG_ERR, "malformed list index");
            if (s->nidx == MAX_INDICES)
                return set_fail(err, dotted, GS_CFG_ERR, "too many list indices in a row");
            s->idx[s->nidx++] = (size_t)v;
            p = end + 1;
        }
        depth += 1 + s->nidx;
        if (depth > GS_CFG_MAX_DEPTH)
            return set_fail(err, dotted, GS_CFG_ERR, "the key path is too deep");
        n++;
        if (*p == '\0')
            return n;
        if (*p != '.')
            return set_fail(err, dotted, GS_CFG_ERR, "unexpected ']' in the key path");
        p++;
    }
}

static gs_cfg_node *find_entry(gs_cfg_node *map, const seg *s)
{
    for (size_t i = 0; i < map->count; i++) {
        const char *k = map->children[i]->key;
        if (k && strlen(k) == s->name_len && memcmp(k, s->name, s->name_len) == 0)
            return map->children[i];
    }
    return NULL;
}

/* A detached chain of new nodes for segments [i, n): maps down to the scalar `value`. */
static gs_cfg_node *build_chain(const seg *segs, int i, int n, const char *value)
{
    int last = i == n - 1;
    gs_cfg_node *node = gs_cfg_node_new(last ? GS_CFG_NODE_SCALAR : GS_CFG_NODE_MAP, 0, 0);
    if (!node)
        return NULL;
    node->key = gs_strndup(segs[i].name, segs[i].name_len);
    if (!node->key)
        goto fail;
    if (last) {
        node->value = gs_strdup(value);
        if (!node->value)
            goto fail;
        node->is_null = gs_cfg_text_is_null(value, strlen(value));
        return node;
    }
    gs_cfg_node *child = build_chain(segs, i + 1, n, value);
    if (!child)
        goto fail;
    if (gs_cfg_node_append(node, child)) {
        gs_cfg_node_free(child);
        goto fail;
    }
    return node;
fail:
    gs_cfg_node_free(node);
    return NULL;
}

static gs_status oom(gs_error *err, const char *dotted)
{
    return set_fail(err, dotted, "INTERNAL_ERROR", "out of memory while applying the override");
}

gs_status gs_cfg_set(gs_cfg_doc *doc, const char *dotted, const char *value, gs_error *err)
{
    if (!doc || !doc->root || doc->root->type != GS_CFG_NODE_MAP || !dotted || !value)
        return gs_error_set(err, 0, "INTERNAL_ERROR",
                            "gs_cfg_set: missing document, key or "
                            "value");
    seg segs[GS_CFG_MAX_DEPTH];
    int n = parse_path(dotted, segs, GS_CFG_MAX_DEPTH, err);
    if (n < 0)
        return GS_ERROR;

    gs_cfg_node *cur = doc->root;
    for (int i = 0; i < n; i++) {
        gs_cfg_node *node = find_entry(cur, &segs[i]);
        if (!node) {
            if (segs[i].nidx)
                return set_fail(err, dotted, GS_CFG_ERR,
                                "cannot index a list that is not in the config");
            gs_cfg_node *chain = build_chain(segs, i, n, value);
            if (!chain)
                return oom(err, dotted);
            if (gs_cfg_node_append(cur, chain)) {
                gs_cfg_node_free(chain);
                return oom(err, dotted);
            }
            return GS_OK;
        }
        for (int k = 0; k < segs[i].nidx; k++) {
            if (node->type != GS_CFG_NODE_SEQ)
                return set_fail(err, dotted, GS_CFG_ERR, "indexes something that is not a list");
            if (segs[i].idx[k] >= node->count) {
                return set_fail(err, dotted, GS_CFG_ERR,
                                "list index %zu is out of range; the list has %zu item%s",
                                segs[i].idx[k], node->count, node->count == 1 ? "" : "s");
            }
            node = node->children[segs[i].idx[k]];
        }
        if (i == n - 1) {
            char *v = gs_strdup(value);
            if (!v)
                return oom(err, dotted);
            gs_cfg_node_clear(node);
            node->type = GS_CFG_NODE_SCALAR;
            node->value = v;
            node->quoted = 0;
            node->is_null = gs_cfg_text_is_null(v, strlen(v));
            node->line = 0;
            node->col = 0;
            return GS_OK;
        }
        if (node->type == GS_CFG_NODE_MAP) {
            cur = node;
            continue;
        }
        if (node->type == GS_CFG_NODE_SCALAR && node->is_null) {
            /* "server:" with no value becomes a map holding the override. */
            gs_cfg_node *chain = build_chain(segs, i + 1, n, value);
            if (!chain)
                return oom(err, dotted);
            if (gs_cfg_node_append(node, chain)) {
                gs_cfg_node_free(chain);
                return oom(err, dotted);
            }
            gs_free(node->value);
            node->value = NULL;
            node->type = GS_CFG_NODE_MAP;
            node->is_null = 0;
            node->quoted = 0;
            return GS_OK;
        }
        return set_fail(err, dotted, GS_CFG_ERR,
                        node->type == GS_CFG_NODE_SEQ
                            ? "a part of the path is a list in the config, not a map (index it "
                              "like name[0])"
                            : "a part of the path is a value in the config, not a map");
    }
    return GS_OK; /* unreachable: n >= 1 and the last segment returns */
}
