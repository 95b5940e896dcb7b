/*
 * The node's `replication:` section: checks it against the declared plugins and databases at
 * load time (so --check-config proves it), then starts one replication engine for the
 * replicated database once it is open, and stops it before the databases close.
 */
#include "node_internal.h"

#include "../api/api_internal.h"
#include "../base/alloc.h"
#include "../base/error.h"
#include "../base/log.h"
#include "../repl/engine.h"

#include <gatestream/repl_transport.h>
#include <gatestream/resolver.h>

#include <stdio.h>
#include <string.h>

static gs_status build_options(gs_node *n, gs_repl_options *o, gs_repl_peer_cfg **peers_out,
                               gs_repl_table_resolver **trs_out, gs_error *err);

static const gs_settings_db *replicated_db(gs_node *n, gs_error *err)
{
    const gs_settings_repl *r = &n->s.replication;
    const gs_settings_db *dbs = n->s.databases.items;
    if (!r->database) {
        if (n->s.databases.count != 1) {
            gs_error_set(err, 0, "INVALID_CONFIG",
                         "%s: replication.database: name the replicated database (there are "
                         "%zu under databases)",
                         n->doc->file, n->s.databases.count);
            return NULL;
        }
        return &dbs[0];
    }
    for (size_t i = 0; i < n->s.databases.count; i++)
        if (strcmp(dbs[i].id, r->database) == 0)
            return &dbs[i];
    gs_error_set(err, 0, "INVALID_CONFIG",
                 "%s: replication.database: '%s' is not declared under databases", n->doc->file,
                 r->database);
    return NULL;
}

static gs_status want_instance(gs_node *n, const char *key, const char *name, gs_plugin_kind kind,
                               gs_instance **out, gs_error *err)
{
    gs_instance *inst = gs_node_find_instance(n, name);
    if (!inst || inst->kind != kind)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "%s: replication.%s: '%s' is not a %s plugin instance declared "
                            "under plugins",
                            n->doc->file, key, name, gs_plugin_kind_name(kind));
    *out = inst;
    return GS_OK;
}

/* databases[].tables: only on the replicated database, never in coordinator mode; the rules
 * themselves are checked by the engine's options check (table_mode.h). */
static gs_status check_table_modes(gs_node *n, const gs_settings_db *replicated, gs_error *err)
{
    const gs_settings_repl *r = &n->s.replication;
    const gs_settings_db *dbs = n->s.databases.items;
    for (size_t i = 0; i < n->s.databases.count; i++) {
        if (!dbs[i].tables.count)
            continue;
        if (&dbs[i] != replicated)
            return gs_error_set(err, 0, "INVALID_CONFIG",
                                "%s: databases[%s].tables: per-table replication modes apply to "
                                "the replicated database only (%s%s); remove the key or "
                                "replicate this database",
                                n->doc->file, dbs[i].id,
                                replicated ? "replication.database is " : "replication is off",
                                replicated ? replicated->id : "");
        if (r->coordinator.instance)
            return gs_error_set(err, 0, "INVALID_CONFIG",
                                "%s: databases[%s].tables: per-table modes are static-mode only: "
                                "a coordinator-mode group has a single primary (spec 03); remove "
                                "databases[%s].tables or the coordinator",
                                n->doc->file, dbs[i].id, dbs[i].id);
    }
    return GS_OK;
}

gs_status gs_node_repl_check(gs_node *n, gs_error *err)
{
    const gs_settings_repl *r = &n->s.replication;
    if (!r->role) {
        if (check_table_modes(n, NULL, err) != GS_OK)
            return GS_ERROR;
        if (r->transport || r->peers.count)
            return gs_error_set(err, 0, "INVALID_CONFIG",
                                "%s: replication: set role (primary or replica) to replicate",
                                n->doc->file);
        return GS_OK;
    }
    const gs_settings_db *d = replicated_db(n, err);
    if (!d)
        return GS_ERROR;
    if (d->read_only)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "%s: database '%s' is read_only and cannot replicate", n->doc->file,
                            d->id);
    if (check_table_modes(n, d, err) != GS_OK)
        return GS_ERROR;
    gs_instance *inst;
    if (!r->transport)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "%s: replication.transport: name a repl_transport plugin instance "
                            "(grpc, tcp or memory)",
                            n->doc->file);
    if (want_instance(n, "transport", r->transport, GS_KIND_REPL_TRANSPORT, &inst, err))
        return GS_ERROR;
    if (r->coordinator.instance) {
        if (want_instance(n, "coordinator.instance", r->coordinator.instance, GS_KIND_COORDINATOR,
                          &inst, err) != GS_OK)
            return GS_ERROR;
        if (!r->coordinator.cluster_id)
            return gs_error_set(err, 0, "INVALID_CONFIG",
                                "%s: replication.coordinator.cluster_id is required", n->doc->file);
    } else if (r->coordinator.cluster_id || r->coordinator.voters.count) {
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "%s: replication.coordinator: set instance (a coordinator plugin "
                            "instance) to turn on coordinator mode",
                            n->doc->file);
    }
    if (r->resolver &&
        want_instance(n, "resolver", r->resolver, GS_KIND_RESOLVER, &inst, err) != GS_OK)
        return GS_ERROR;
    const gs_settings_repl_resolver *rs = r->resolvers.items;
    for (size_t i = 0; i < r->resolvers.count; i++)
        if (want_instance(n, "resolvers[].resolver", rs[i].resolver, GS_KIND_RESOLVER, &inst,
                          err) != GS_OK)
            return GS_ERROR;
    if (!r->resolver) {
        /* the default resolver: the built-in last-writer-wins */
        gs_instance *l = &n->lww;
        l->name = "lww (default resolver)";
        l->kind = GS_KIND_RESOLVER;
        if (gs_plugin_load_builtin(l->name, "lww", GS_KIND_RESOLVER, &l->plugin, err) != GS_OK)
            return GS_ERROR;
        if (!l->plugin) {
            char *path = NULL;
            if (gs_plugin_find(l->name, "lww", GS_KIND_RESOLVER, NULL, NULL, &path, err) != GS_OK)
                return GS_ERROR;
            gs_status st = gs_plugin_load(l->name, path, GS_KIND_RESOLVER, &l->plugin, err);
            gs_free(path);
            if (st != GS_OK)
                return GS_ERROR;
        }
        const gs_plugin_descriptor *pd = l->plugin->desc;
        l->config = gs_calloc(1, pd->config_struct_size ? pd->config_struct_size : 1);
        if (!l->config ||
            gs_cfg_fill(n->doc, NULL, "replication.resolver", pd->config_keys, pd->config_key_count,
                        pd->config_key_size, l->config, &l->arena, err) != GS_OK)
            return l->config ? GS_ERROR : gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        const gs_resolver_vtable *vt = pd->vtable;
        if (vt->create(&n->host, l->config, &l->instance, err) != GS_OK) {
            l->instance = NULL;
            return GS_ERROR;
        }
    }
    /* the engine's own checks (roles, peers, limits), so --check-config proves them */
    gs_repl_options o;
    gs_repl_peer_cfg *peers = NULL;
    gs_repl_table_resolver *trs = NULL;
    gs_status st = build_options(n, &o, &peers, &trs, err);
    if (st == GS_OK && (st = gs_repl_options_check(&o, err)) != GS_OK) {
        if (o.ntable_modes && strncmp(err->message, "tables[", 7) == 0)
            gs_error_prefix(err, "%s: databases[%s]", n->doc->file, replicated_db(n, err)->id);
        else
            gs_error_prefix(err, "%s: replication", n->doc->file);
    }
    gs_free(peers);
    gs_free(trs);
    return st;
}

static gs_repl_resolver_ref ref_of(gs_instance *inst)
{
    gs_repl_resolver_ref ref = {inst->plugin->desc->vtable, inst->instance};
    return ref;
}

static int is_field_merge(const gs_instance *inst)
{
    return strcmp(inst->plugin->desc->name, "field_merge") == 0;
}

static void lag_exceeded(void *user, const char *peer, double lag_seconds)
{
    gs_node *n = user;
    gs_log(GS_LOG_WARN, "repl",
           "replica %s lags by %.1f s (over replication.flow_control.max_lag_seconds %.1f); "
           "check its link and load",
           peer, lag_seconds, n->s.replication.flow_control.max_lag_seconds);
}

/* onBeforeForwardedQuery: a write forwarded by a replica passes the beforeQuery hooks of
 * this node (the primary) under the operation name "$forwarded", with no identity (the
 * replica authenticated its caller). Inbound replication thread. */
static gs_status before_forwarded(void *user, const char *sql, json_t *params, gs_error *err)
{
    gs_node *n = user;
    gs_api *api = __atomic_load_n(&n->api, __ATOMIC_ACQUIRE);
    if (!api)
        return GS_OK;
    const gs_settings_db *d = replicated_db(n, err);
    if (!d)
        return GS_ERROR;
    return gs_api_before_query_op(api, d->id, "$forwarded", sql, params, NULL, 1, err);
}

/* The engine's options from the section; peers and trs are filled (caller frees). */
static gs_status build_options(gs_node *n, gs_repl_options *o, gs_repl_peer_cfg **peers_out,
                               gs_repl_table_resolver **trs_out, gs_error *err)
{
    const gs_settings_repl *r = &n->s.replication;
    gs_repl_options_default(o);
    o->node_id = n->s.node.id;
    o->role = r->role;
    gs_repl_peer_cfg *peers = gs_calloc(r->peers.count ? r->peers.count : 1, sizeof *peers);
    gs_repl_table_resolver *trs =
        gs_calloc(r->resolvers.count ? r->resolvers.count : 1, sizeof *trs);
    *peers_out = peers;
    *trs_out = trs;
    if (!peers || !trs)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    const gs_settings_repl_peer *ps = r->peers.items;
    for (size_t i = 0; i < r->peers.count; i++) {
        peers[i].id = ps[i].id;
        peers[i].role = ps[i].role;
    }
    o->peers = peers;
    o->npeers = r->peers.count;
    gs_instance *t = gs_node_find_instance(n, r->transport);
    o->transport = t->plugin->desc->vtable;
    o->transport_instance = t->instance;
    gs_instance *def = r->resolver ? gs_node_find_instance(n, r->resolver) : &n->lww;
    o->default_resolver = ref_of(def);
    o->keep_column_versions = is_field_merge(def);
    const gs_settings_repl_resolver *rs = r->resolvers.items;
    for (size_t i = 0; i < r->resolvers.count; i++) {
        gs_instance *ri = gs_node_find_instance(n, rs[i].resolver);
        trs[i].table = rs[i].table;
        trs[i].ref = ref_of(ri);
        o->keep_column_versions |= is_field_merge(ri);
    }
    o->resolvers = trs;
    o->nresolvers = r->resolvers.count;
    o->batch_size = r->batch_size;
    o->batch_interval_ms = r->batch_interval_ms;
    o->max_pending_batches = r->max_pending_batches;
    o->max_batch_changes = r->max_batch_changes;
    o->max_clock_drift_ms = r->max_clock_drift_ms;
    o->ack_timeout_ms = r->ack_timeout_ms;
    o->initial_sync = r->initial_sync;
    o->sync_batch_size = r->sync_batch_size;
    o->sync_batch_max_bytes = r->sync_batch_max_bytes;
    o->max_concurrent_syncs = r->max_concurrent_syncs;
    o->max_sync_duration_ms = r->max_sync_duration_ms;
    o->max_sync_lag_before_ready = r->max_sync_lag_before_ready;
    o->sync_ack_timeout_ms = r->sync_ack_timeout_ms;
    o->catch_up_deadline_ms = r->catch_up_deadline_ms;
    o->write_forwarding = r->write_forwarding;
    o->forward_deadline_ms = r->forward_deadline_ms;
    o->write_concern = r->write_concern ? r->write_concern : "local";
    o->write_concern_timeout_ms = r->write_concern_timeout_ms;
    o->resume_from_seq = r->resume_from_seq;
    o->flow_max_lag_seconds = r->flow_control.max_lag_seconds;
    const gs_settings_db *tdb = replicated_db(n, err);
    if (!tdb)
        return GS_ERROR;
    /* gs_settings_table_mode and gs_table_mode_rule are both {match, mode} */
    _Static_assert(sizeof(gs_settings_table_mode) == sizeof(gs_table_mode_rule) &&
                       offsetof(gs_settings_table_mode, mode) == offsetof(gs_table_mode_rule, mode),
                   "the config rows are handed to the engine as they are");
    o->table_modes = (const gs_table_mode_rule *)tdb->tables.items;
    o->ntable_modes = tdb->tables.count;
    o->write_proxy_reject = tdb->write_proxy && strcmp(tdb->write_proxy, "reject") == 0;
    o->on_lag_exceeded = lag_exceeded;
    o->before_forwarded = before_forwarded;
    o->user = n;
    if (r->coordinator.instance) {
        gs_authority_options *a = &n->auth_o;
        memset(a, 0, sizeof *a);
        gs_instance *ci = gs_node_find_instance(n, r->coordinator.instance);
        a->node_id = n->s.node.id;
        a->cluster_id = r->coordinator.cluster_id;
        const gs_settings_db *d = replicated_db(n, err);
        if (!d)
            return GS_ERROR;
        a->group_id = r->coordinator.group_id ? r->coordinator.group_id : d->id;
        a->endpoint = r->coordinator.endpoint;
        a->voters = r->coordinator.voters.items;
        a->nvoters = r->coordinator.voters.count;
        a->bootstrap_primary = r->role && strcmp(r->role, "primary") == 0;
        a->session_ttl_ms = r->coordinator.session_ttl_ms;
        a->controller = r->coordinator.controller.enabled;
        a->controller_lease_ttl_ms = r->coordinator.controller.lease_ttl_ms;
        a->controller_tick_ms = r->coordinator.controller.tick_interval_ms;
        a->vt = ci ? ci->plugin->desc->vtable : NULL;
        a->inst = ci ? ci->instance : NULL;
        a->package_version = GS_VERSION;
        a->spec_version = "1.0";
        a->protocol_version = GS_REPL_PROTOCOL_VERSION;
        o->coordinator = a;
        o->in_sync_timeout_ms = r->coordinator.in_sync_timeout_ms;
        /* coordinator mode: a write that states no concern waits for a majority */
        if (!r->write_concern)
            o->write_concern = "majority";
    }
    return GS_OK;
}

gs_status gs_node_repl_start(gs_node *n, gs_error *err)
{
    const gs_settings_repl *r = &n->s.replication;
    if (!r->role)
        return GS_OK;
    const gs_settings_db *d = replicated_db(n, err);
    if (!d)
        return GS_ERROR;
    gs_database *db = gs_registry_acquire(n->reg, d->id, err);
    if (!db)
        return GS_ERROR;
    gs_repl_options o;
    gs_repl_peer_cfg *peers = NULL;
    gs_repl_table_resolver *trs = NULL;
    gs_status st = build_options(n, &o, &peers, &trs, err);
    if (st == GS_OK)
        st = gs_repl_engine_start(db, &o, &n->repl, err);
    gs_free(peers);
    gs_free(trs);
    gs_registry_release(n->reg, db);
    if (st != GS_OK)
        return GS_ERROR;
    gs_instance *tr = gs_node_find_instance(n, r->transport);
    tr->started = 1;
    return GS_OK;
}

void gs_node_repl_stop(gs_node *n)
{
    if (!n->repl)
        return;
    gs_repl_engine_free(n->repl);
    n->repl = NULL;
    gs_instance *tr =
        n->s.replication.transport ? gs_node_find_instance(n, n->s.replication.transport) : NULL;
    if (tr)
        tr->started = 0;
}

void gs_node_repl_free(gs_node *n)
{
    gs_node_repl_stop(n);
    gs_instance *l = &n->lww;
    if (l->instance)
        ((const gs_resolver_vtable *)l->plugin->desc->vtable)->destroy(l->instance);
    l->instance = NULL;
    gs_cfg_arena_free(&l->arena);
    gs_free(l->config);
    l->config = NULL;
    gs_plugin_unload(l->plugin);
    l->plugin = NULL;
}
