/*
 * A test host for conflict resolver plugins (test_resolvers.c, test_example_resolver.c):
 * dlopen a resolver .so from $GS_PLUGIN_DIR as the core does (plugin_test_host.h), fill its
 * config struct through its own key table (defaults first, as the core's config layer does),
 * create an instance, and run conflicts through it.
 *
 * Ownership: rh_plugin owns the dlopen handle and the instance (rh_close releases both);
 * rh_conflict_* builders keep the JSON texts they make in the rh_texts list, freed by
 * rh_texts_free. Merged rows come from the host allocator and go back with fh_free.
 * Threads: the test's thread, except that resolve may be called from several threads on
 * one instance (resolvers are pure). Criterion runs each test in its own process; the
 * suite's init/fini (rh_setup/rh_teardown) reset the global host state.
 */
#ifndef GS_TESTS_PLUGINS_RESOLVER_HOST_H
#define GS_TESTS_PLUGINS_RESOLVER_HOST_H

#include "plugin_test_host.h"

#include <gatestream/resolver.h>

#include <jansson.h>

static gs_host RH_HOST;

static inline void rh_setup(void)
{
    pt_init();
    memset(&RH_HOST, 0, sizeof RH_HOST);
    pt_host_init(&RH_HOST, NULL);
}

static inline void rh_teardown(void)
{
    pt_fini();
}

static inline long rh_live(void)
{
    return atomic_load(&PT.live_allocs);
}

typedef struct rh_plugin {
    void *dl;
    const gs_plugin_descriptor *desc;
    const gs_resolver_vtable *vt;
    void *inst;
} rh_plugin;

/* Load so_name and check it is the resolver `name` with the three required callbacks. */
static inline rh_plugin rh_load(const char *so_name, const char *name)
{
    rh_plugin p = {0};
    p.desc = pt_load_descriptor(so_name, &p.dl);
    cr_assert_eq(p.desc->kind, GS_KIND_RESOLVER, "%s is not a resolver", so_name);
    cr_assert_str_eq(p.desc->name, name);
    cr_assert_eq(p.desc->abi_major, GS_ABI_MAJOR);
    cr_assert_geq(p.desc->abi_minor, 3, "resolvers need ABI 1.3");
    cr_assert_str_eq(p.desc->build_signature, GS_BUILD_SIGNATURE);
    p.vt = p.desc->vtable;
    cr_assert_geq(p.vt->struct_size, sizeof(gs_resolver_vtable));
    cr_assert(p.vt->create && p.vt->destroy && p.vt->resolve);
    cr_assert(p.desc->description && *p.desc->description);
    for (size_t i = 0; i < p.desc->config_key_count; i++) {
        const gs_config_key *k = (const gs_config_key *)((const char *)p.desc->config_keys +
                                                         i * p.desc->config_key_size);
        cr_assert(k->name && *k->name && k->help && *k->help);
    }
    return p;
}

static inline const gs_config_key *rh_key(const rh_plugin *p, const char *name)
{
    for (size_t i = 0; i < p->desc->config_key_count; i++) {
        const gs_config_key *k = (const gs_config_key *)((const char *)p->desc->config_keys +
                                                         i * p->desc->config_key_size);
        if (strcmp(k->name, name) == 0)
            return k;
    }
    cr_assert_fail("%s has no config key '%s'", p->desc->name, name);
    return NULL;
}

/*
 * Create the instance from string keys: `keys` holds name, value pairs (n pairs; a NULL
 * value leaves the key absent). Every STRING key starts at its default, as the core fills
 * it. The config struct is freed before this returns: an instance must not point into it.
 * Returns create's status; err is filled on failure, and p->inst must then be NULL.
 */
static inline gs_status rh_create(rh_plugin *p, const char *const *keys, size_t n, gs_error *err)
{
    size_t size = p->desc->config_struct_size;
    char *cfg = calloc(1, size ? size : 1);
    cr_assert_not_null(cfg);
    for (size_t i = 0; i < p->desc->config_key_count; i++) {
        const gs_config_key *k = (const gs_config_key *)((const char *)p->desc->config_keys +
                                                         i * p->desc->config_key_size);
        if (k->type == GS_CFG_STRING)
            memcpy(cfg + k->offset, &k->default_value, sizeof(const char *));
    }
    /* Copies of the values, freed with cfg, so the instance cannot keep them either. */
    char *copies[8] = {0};
    cr_assert_leq(n, 8u);
    for (size_t i = 0; i < n; i++) {
        const gs_config_key *k = rh_key(p, keys[2 * i]);
        cr_assert_eq(k->type, GS_CFG_STRING);
        copies[i] = keys[2 * i + 1] ? strdup(keys[2 * i + 1]) : NULL;
        memcpy(cfg + k->offset, &copies[i], sizeof(char *));
    }
    memset(err, 0, sizeof *err);
    p->inst = (void *)0x1;
    gs_status st = p->vt->create(&RH_HOST, size ? cfg : NULL, &p->inst, err);
    if (size)
        memset(cfg, 0x5a, size);
    free(cfg);
    for (size_t i = 0; i < n; i++)
        free(copies[i]);
    if (st != GS_OK)
        cr_assert_null(p->inst, "a failed create leaves no instance");
    return st;
}

/* Create with keys, failing the test on an error. */
static inline void rh_create_ok(rh_plugin *p, const char *const *keys, size_t n)
{
    gs_error err;
    gs_status st = rh_create(p, keys, n, &err);
    cr_assert_eq(st, GS_OK, "create %s: %s %s", p->desc->name, err.code, err.message);
}

/* Destroy the instance (if any), check that no host memory is left, and dlclose. */
static inline void rh_close(rh_plugin *p)
{
    if (p->inst)
        p->vt->destroy(p->inst);
    p->inst = NULL;
    cr_assert_eq(rh_live(), 0, "%ld host block(s) leaked by %s", rh_live(), p->desc->name);
    dlclose(p->dl);
    p->dl = NULL;
}

/* ---- building conflicts ---- */

/* JSON texts a test builds; freed together. */
typedef struct rh_texts {
    char *items[32];
    size_t n;
} rh_texts;

static inline const char *rh_keep(rh_texts *t, char *s)
{
    cr_assert_lt(t->n, 32u);
    t->items[t->n++] = s;
    return s;
}

static inline void rh_texts_free(rh_texts *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->items[i]);
    t->n = 0;
}

/* A compact JSON text of v (kept in t), or NULL when v is NULL or JSON null. */
static inline const char *rh_dump(rh_texts *t, const json_t *v)
{
    if (!v || json_is_null(v))
        return NULL;
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    cr_assert_not_null(s);
    return rh_keep(t, s);
}

/* An LWW-shaped conflict on orders/42: an update from in_node stamped in_hlc against a local
 * row stamped local_hlc by local_node. */
static inline gs_conflict rh_conflict(const char *local_hlc, const char *local_node,
                                      const char *in_hlc, const char *in_node)
{
    gs_conflict c = {
        .struct_size = sizeof c,
        .table = "orders",
        .row_id = "42",
        .primary_key_json = "{\"id\":42}",
        .local_row_json = "{\"id\":42,\"total\":10}",
        .local_hlc = local_hlc,
        .local_node_id = local_node,
        .incoming_operation = "update",
        .incoming_new_json = "{\"id\":42,\"total\":11}",
        .incoming_old_json = "{\"id\":42,\"total\":9}",
        .incoming_hlc = in_hlc,
        .incoming_node_id = in_node,
    };
    return c;
}

/* Resolve into *res; a merged row is res->merged_row_json (host memory: fh_free it). */
static inline gs_status rh_resolve(const rh_plugin *p, const gs_conflict *c, gs_resolution *res,
                                   gs_error *err)
{
    memset(res, 0, sizeof *res);
    res->struct_size = sizeof *res;
    res->merged_row_json = (char *)0x1; /* the resolver must set it */
    memset(err, 0, sizeof *err);
    gs_status st = p->vt->resolve(p->inst, c, res, err);
    if (st != GS_OK || res->kind != GS_RESOLVE_MERGED)
        cr_assert_null(res->merged_row_json, "merged_row_json is set only for a merge");
    return st;
}

/* Resolve and return the kind, failing the test on an error; a merged row is checked to be
 * a JSON object and then freed (use rh_merged to look at it). */
static inline gs_resolution_kind rh_kind(const rh_plugin *p, const gs_conflict *c)
{
    gs_resolution res;
    gs_error err;
    gs_status st = rh_resolve(p, c, &res, &err);
    cr_assert_eq(st, GS_OK, "resolve: %s %s", err.code, err.message);
    if (res.kind == GS_RESOLVE_MERGED) {
        cr_assert_not_null(res.merged_row_json);
        json_t *row = json_loads(res.merged_row_json, 0, NULL);
        cr_assert(json_is_object(row), "merged row is no JSON object: %s", res.merged_row_json);
        json_decref(row);
        fh_free(res.merged_row_json);
    }
    return res.kind;
}

/* Resolve a conflict that must merge; returns the merged row parsed (json_decref it). */
static inline json_t *rh_merged(const rh_plugin *p, const gs_conflict *c)
{
    gs_resolution res;
    gs_error err;
    gs_status st = rh_resolve(p, c, &res, &err);
    cr_assert_eq(st, GS_OK, "resolve: %s %s", err.code, err.message);
    cr_assert_eq(res.kind, GS_RESOLVE_MERGED);
    cr_assert_not_null(res.merged_row_json);
    json_error_t jerr;
    json_t *row = json_loads(res.merged_row_json, 0, &jerr);
    cr_assert(json_is_object(row), "merged row: %s (%s)", res.merged_row_json, jerr.text);
    fh_free(res.merged_row_json);
    return row;
}

/* 1 when the JSON texts a and b hold equal values (type-exact, key order ignored). */
static inline int rh_json_equal_text(const char *a, const char *b)
{
    json_t *ja = json_loads(a, JSON_DECODE_ANY, NULL), *jb = json_loads(b, JSON_DECODE_ANY, NULL);
    int eq = ja && jb && json_equal(ja, jb);
    json_decref(ja);
    json_decref(jb);
    return eq;
}

#endif
