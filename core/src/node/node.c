#include "node.h"

#include "../base/fs.h"
#include <gatestream/client_transport.h>
#include <gatestream/hook.h>
#include <gatestream/repl_transport.h>
#include <gatestream/resolver.h>
#include <gatestream/host.h>

#include "../api/api.h"
#include "../api/ws.h"
#include "../base/alloc.h"
#include "../base/error.h"
#include "../base/log.h"
#include "../base/workpool.h"
#include "../config/config.h"
#include "../db/migrations.h"
#include "../db/cdc.h"
#include "../db/backup_cycle.h"
#include <gatestream/backup_destination.h>
#include <gatestream/coordinator.h>
#include "../db/registry.h"
#include "../plugin/loader.h"
#include "node_internal.h"
#include "settings.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* ---- the host table ---- */

static void host_log(const gs_host *host, gs_log_level level, const char *component,
                     const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gs_logv(level, component, fmt, ap);
    va_end(ap);
}

static uint64_t host_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *host_node_id(const gs_host *host)
{
    return ((const gs_node *)host->core)->s.node.id;
}

static gs_status host_post(const gs_host *host, void (*fn)(void *), void *arg)
{
    gs_node *n = host->core;
    return n->pool ? gs_workpool_post(n->pool, fn, arg) : GS_AGAIN;
}

static const gs_server_settings *host_server_settings(const gs_host *host)
{
    return &((const gs_node *)host->core)->server;
}

static gs_status host_api_submit(const gs_host *host, const gs_request *req)
{
    gs_node *n = host->core;
    if (!n->api) {
        static const char body[] = "{\"error\":{\"code\":\"SHUTDOWN\",\"message\":\"the server "
                                   "is not serving requests\"}}";
        gs_response r = {.struct_size = sizeof r,
                         .status = 503,
                         .content_type = "application/json",
                         .body = body,
                         .body_len = sizeof body - 1};
        req->complete(req->user, &r);
        return GS_ERROR;
    }
    return gs_api_submit(n->api, req);
}

static void host_error_set(gs_error *err, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gs_error_setv(err, status, code, fmt, ap);
    va_end(ap);
}

/* ---- WebSocket sessions and the upgrade hand-off (ABI 1.1) ---- */

static gs_status host_ws_open(const gs_host *host, const gs_ws_open_request *req,
                              gs_ws_open_result *res, gs_error *err)
{
    gs_node *n = host->core;
    if (!n->api) {
        memset(res, 0, sizeof *res);
        res->close_code = 1013;
        snprintf(res->reason, sizeof res->reason, "SHUTDOWN: the server is not serving");
        return gs_error_set(err, 0, "SHUTDOWN", "the server is not serving");
    }
    return gs_ws_open(n->api, req, res, err);
}

static void host_ws_message(const gs_host *host, void *session, const char *data, size_t len)
{
    gs_node *n = host->core;
    if (n->api)
        gs_ws_message(n->api, session, data, len);
}

static void host_ws_too_large(const gs_host *host, void *session)
{
    gs_node *n = host->core;
    if (n->api)
        gs_ws_too_large(n->api, session);
}

static void host_ws_close(const gs_host *host, void *session)
{
    gs_node *n = host->core;
    if (n->api)
        gs_ws_close(n->api, session);
}

/* An accepted connection whose request is a WebSocket upgrade (from the transport that
 * listens on the server port): to the first serving client transport that adopts upgrades.
 * Runs on that transport's accept thread, so `started` is read atomically. GS_DECLINED: none
 * serves upgrades, the caller keeps fd; any other answer: the adopting transport owns fd. */
static gs_status host_upgrade_handoff(const gs_host *host, int fd, const struct sockaddr *addr,
                                      socklen_t addrlen, gs_error *err)
{
    gs_node *n = host->core;
    for (size_t i = 0; i < n->instance_count; i++) {
        gs_instance *inst = &n->instances[i];
        if (inst->kind != GS_KIND_CLIENT_TRANSPORT || !inst->plugin ||
            !__atomic_load_n(&inst->started, __ATOMIC_ACQUIRE))
            continue;
        const gs_client_transport_vtable *vt = inst->plugin->desc->vtable;
        if (GS_HAS_MEMBER(gs_client_transport_vtable, adopt_upgrade, vt->struct_size) &&
            vt->adopt_upgrade)
            return vt->adopt_upgrade(inst->instance, fd, addr, addrlen, err);
    }
    return GS_DECLINED;
}

static void host_init(gs_node *n)
{
    gs_host *h = &n->host;
    memset(h, 0, sizeof *h);
    h->struct_size = sizeof *h;
    h->abi_major = GS_ABI_MAJOR;
    h->abi_minor = GS_ABI_MINOR;
    h->core = n;
    h->log = host_log;
    h->alloc = gs_malloc;
    h->realloc = gs_realloc;
    h->free = gs_free;
    h->now_ms = host_now_ms;
    h->node_id = host_node_id;
    h->post = host_post;
    h->server_settings = host_server_settings;
    h->api_submit = host_api_submit;
    h->error_set = host_error_set;
    h->ws_open = host_ws_open;
    h->ws_message = host_ws_message;
    h->ws_too_large = host_ws_too_large;
    h->ws_close = host_ws_close;
    h->upgrade_handoff = host_upgrade_handoff;
}

/* ---- loading ---- */

/* Read every databases[].migrations folder (and tenants.migrations) now, so --check-config
 * proves the files. */
static gs_status load_migrations(gs_node *n, gs_error *err)
{
    if (n->s.tenants.migrations) {
        char *dir = gs_path_join(n->config_dir, n->s.tenants.migrations);
        if (!dir)
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        gs_status st = gs_migrations_load_dir(dir, &n->tenant_migrations, err);
        gs_free(dir);
        if (st != GS_OK) {
            gs_error_prefix(err, "%s: tenants.migrations", n->doc->file);
            return GS_ERROR;
        }
    }
    const gs_settings_db *dbs = n->s.databases.items;
    size_t count = n->s.databases.count;
    n->migrations = gs_calloc(count ? count : 1, sizeof *n->migrations);
    if (!n->migrations)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    for (size_t i = 0; i < count; i++) {
        if (!dbs[i].migrations)
            continue;
        char *dir = gs_path_join(n->config_dir, dbs[i].migrations);
        if (!dir)
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        gs_status st = gs_migrations_load_dir(dir, &n->migrations[i], err);
        gs_free(dir);
        if (st != GS_OK) {
            gs_error_prefix(err, "%s: databases[%zu].migrations", n->doc->file, i);
            return GS_ERROR;
        }
    }
    return GS_OK;
}

static gs_status load_plugins(gs_node *n, gs_error *err)
{
    const gs_settings_plugin *ps = n->s.plugins.items;
    size_t count = n->s.plugins.count;
    n->instances = gs_calloc(count ? count : 1, sizeof *n->instances);
    if (!n->instances)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    const gs_cfg_node *list = gs_cfg_get(n->doc->root, "plugins");
    for (size_t i = 0; i < count; i++) {
        const gs_settings_plugin *p = &ps[i];
        for (size_t j = 0; j < i; j++)
            if (strcmp(ps[j].name, p->name) == 0)
                return gs_error_set(err, 0, "INVALID_CONFIG",
                                    "%s:%d: plugins[%zu].name: instance name '%s' is used twice",
                                    n->doc->file, list->children[i]->line, i, p->name);
        gs_instance *inst = &n->instances[n->instance_count++];
        inst->name = p->name;
        inst->kind = gs_plugin_kind_parse(p->kind);
        const char *pname = p->plugin ? p->plugin : p->name;
        if (!p->path && gs_plugin_load_builtin(p->name, pname, inst->kind, &inst->plugin, err))
            return GS_ERROR;
        if (!inst->plugin) {
            char *path = NULL;
            if (gs_plugin_find(p->name, pname, inst->kind, p->path, n->config_dir, &path, err) !=
                GS_OK)
                return GS_ERROR;
            gs_status st = gs_plugin_load(p->name, path, inst->kind, &inst->plugin, err);
            gs_free(path);
            if (st != GS_OK)
                return GS_ERROR;
        }
        const gs_plugin_descriptor *d = inst->plugin->desc;
        inst->config = gs_calloc(1, d->config_struct_size ? d->config_struct_size : 1);
        if (!inst->config)
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        char where[128];
        snprintf(where, sizeof where, "plugins[%zu].config", i);
        const gs_cfg_node *cfg = gs_cfg_get(list->children[i], "config");
        if (cfg && cfg->is_null)
            cfg = NULL;
        if (gs_cfg_fill(n->doc, cfg, where, d->config_keys, d->config_key_count, d->config_key_size,
                        inst->config, &inst->arena, err) != GS_OK)
            return GS_ERROR;
    }
    return GS_OK;
}

gs_instance *gs_node_find_instance(gs_node *n, const char *name)
{
    for (size_t i = 0; i < n->instance_count; i++)
        if (strcmp(n->instances[i].name, name) == 0)
            return &n->instances[i];
    return NULL;
}

static gs_status create_instances(gs_node *n, gs_error *err)
{
    for (size_t i = 0; i < n->instance_count; i++) {
        gs_instance *inst = &n->instances[i];
        const void *vt = inst->plugin->desc->vtable;
        gs_status st = GS_OK;
        gs_error_init(err);
        switch (inst->kind) {
        case GS_KIND_CLIENT_TRANSPORT:
            st = ((const gs_client_transport_vtable *)vt)
                     ->create(&n->host, inst->config, &inst->instance, err);
            break;
        case GS_KIND_HOOK:
            st = ((const gs_hook_vtable *)vt)->create(&n->host, inst->config, &inst->instance, err);
            break;
        case GS_KIND_REPL_TRANSPORT:
            st = ((const gs_repl_transport_vtable *)vt)
                     ->create(&n->host, inst->config, n->s.node.id, &inst->instance, err);
            break;
        case GS_KIND_RESOLVER:
            st = ((const gs_resolver_vtable *)vt)
                     ->create(&n->host, inst->config, &inst->instance, err);
            break;
        case GS_KIND_BACKUP_DESTINATION:
            st = ((const gs_backup_destination_vtable *)vt)
                     ->create(&n->host, inst->config, &inst->instance, err);
            break;
        case GS_KIND_COORDINATOR:
            /* connected by the replication engine's authority (it retries while unreachable) */
            st = ((const gs_coordinator_vtable *)vt)
                     ->create(&n->host, inst->config, &inst->instance, err);
            break;
        default:
            return gs_error_set(err, 0, "INVALID_CONFIG",
                                "plugin '%s': %s plugins are not served by this version yet "
                                "(client_transport and hook are)",
                                inst->name, gs_plugin_kind_name(inst->kind));
        }
        if (st != GS_OK) {
            inst->instance = NULL;
            gs_error_prefix(err, "plugin '%s' (%s) refused its config", inst->name,
                            inst->plugin->path);
            return GS_ERROR;
        }
    }
    return GS_OK;
}

static gs_status validate_cross_refs(gs_node *n, gs_error *err)
{
    const gs_settings_server *sv = &n->s.server;
    for (size_t i = 0; i < sv->transports.count; i++) {
        gs_instance *inst = gs_node_find_instance(n, sv->transports.items[i]);
        if (!inst || inst->kind != GS_KIND_CLIENT_TRANSPORT)
            return gs_error_set(err, 0, "INVALID_CONFIG",
                                "%s: server.transports: '%s' is not a client_transport plugin "
                                "instance declared under plugins",
                                n->doc->file, sv->transports.items[i]);
    }
    if (sv->max_ws_backpressure_bytes && sv->max_ws_backpressure_bytes < sv->max_body_bytes)
        return gs_error_set(err, 0, "INVALID_WS_BACKPRESSURE",
                            "%s: server.max_ws_backpressure_bytes (%lld) must be at least "
                            "server.max_body_bytes (%lld), so one reply frame always fits",
                            n->doc->file, (long long)sv->max_ws_backpressure_bytes,
                            (long long)sv->max_body_bytes);
    if ((sv->tls_cert_file == NULL) != (sv->tls_key_file == NULL))
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "%s: server: set both tls_cert_file and tls_key_file, or neither",
                            n->doc->file);
    int has_auth = 0;
    for (size_t i = 0; i < n->instance_count; i++) {
        const gs_instance *inst = &n->instances[i];
        if (inst->kind == GS_KIND_HOOK &&
            GS_HAS_MEMBER(gs_hook_vtable, authenticate,
                          ((const gs_hook_vtable *)inst->plugin->desc->vtable)->struct_size) &&
            ((const gs_hook_vtable *)inst->plugin->desc->vtable)->authenticate)
            has_auth = 1;
    }
    if (sv->accept_backup_restore && !has_auth)
        return gs_error_set(err, 0, "INVALID_BACKUP_RESTORE",
                            "%s: server.accept_backup_restore is true but no hook plugin "
                            "authenticates requests; add one (e.g. auth_token) or turn it off",
                            n->doc->file);
    const gs_settings_db *dbs = n->s.databases.items;
    for (size_t i = 0; i < n->s.databases.count; i++) {
        for (size_t j = 0; j < i; j++)
            if (strcmp(dbs[i].id, dbs[j].id) == 0)
                return gs_error_set(err, 0, "INVALID_CONFIG",
                                    "%s: databases[%zu].id: '%s' is declared twice", n->doc->file,
                                    i, dbs[i].id);
        if (!dbs[i].id[0])
            return gs_error_set(err, 0, "INVALID_CONFIG", "%s: databases[%zu].id is empty",
                                n->doc->file, i);
    }
    return GS_OK;
}

static gs_status apply_overrides(gs_cfg_doc *doc, const gs_overrides *ov, gs_error *err)
{
    if (!ov)
        return GS_OK;
    if (ov->host && gs_cfg_set(doc, "server.host", ov->host, err))
        return GS_ERROR;
    if (ov->port && gs_cfg_set(doc, "server.port", ov->port, err))
        return GS_ERROR;
    if (ov->data_dir && gs_cfg_set(doc, "node.data_dir", ov->data_dir, err))
        return GS_ERROR;
    return GS_OK;
}

static void fill_server_settings(gs_node *n)
{
    int lvl = gs_log_level_parse(n->s.log.level);
    if (lvl >= 0)
        gs_log_set_level((gs_log_level)lvl);
    const gs_settings_server *sv = &n->s.server;
    n->server.struct_size = sizeof n->server;
    n->server.host = sv->host;
    n->server.port = (int)sv->port;
    n->server.max_body_bytes = (uint64_t)sv->max_body_bytes;
    n->server.max_ws_backpressure_bytes =
        sv->max_ws_backpressure_bytes
            ? (uint64_t)sv->max_ws_backpressure_bytes
            : (sv->max_body_bytes > 16777216 ? (uint64_t)sv->max_body_bytes : 16777216u);
    n->server.tls_cert_file = sv->tls_cert_file;
    n->server.tls_key_file = sv->tls_key_file;
    n->server.io_threads = (int)sv->io_threads;
    n->server.connection_limit = (int)sv->connection_limit;
    n->server.idle_timeout_s = (int)sv->idle_timeout_s;
    n->server.access_log = sv->access_log;
}

gs_status gs_node_load(const char *config_path, const gs_overrides *ov, gs_node **out,
                       gs_error *err)
{
    *out = NULL;
    gs_node *n = gs_calloc(1, sizeof *n);
    if (!n)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    host_init(n);
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", config_path);
    n->config_dir = gs_strdup(dirname(tmp));
    size_t nkeys;
    const gs_config_key *keys = gs_settings_keys(&nkeys);
    if (!n->config_dir || gs_cfg_load_file(config_path, &n->doc, err) != GS_OK ||
        apply_overrides(n->doc, ov, err) != GS_OK ||
        gs_cfg_fill(n->doc, n->doc->root, "", keys, nkeys, sizeof(gs_config_key), &n->s, &n->arena,
                    err) != GS_OK ||
        load_plugins(n, err) != GS_OK || validate_cross_refs(n, err) != GS_OK ||
        load_migrations(n, err) != GS_OK ||
        (fill_server_settings(n), create_instances(n, err)) != GS_OK ||
        gs_node_repl_check(n, err) != GS_OK || gs_node_backup_check(n, err) != GS_OK ||
        gs_node_sources_check(n, err) != GS_OK) {
        if (!n->config_dir)
            gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        gs_node_free(n);
        return GS_ERROR;
    }
    *out = n;
    return GS_OK;
}

/* ---- starting ---- */

/* Apply a database's pending migrations before anything can serve it (the transports start
 * later). A read-only database skips them. */
static gs_status migrate_database(gs_node *n, const char *id, const gs_migration_set *set,
                                  gs_error *err)
{
    gs_database *db = gs_registry_acquire(n->reg, id, err);
    if (!db)
        return GS_ERROR;
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_status st = gs_db_migrate(db, GS_MIGRATE_UP, set, GS_MIGRATION_NO_TARGET, &r, err);
    if (st == GS_OK && r.read_only)
        gs_log(GS_LOG_WARN, "core", "database '%s' is read-only: its migrations were skipped", id);
    else if (st == GS_OK)
        gs_log(GS_LOG_INFO, "core",
               "database '%s' schema at version %lld (%zu migration(s) applied)", id,
               (long long)r.user_version, r.done_count);
    gs_migration_report_free(&r);
    gs_registry_release(n->reg, db);
    return st;
}

/* Track the configured CDC tables; after migrations, which may create them. */
static gs_status watch_tables(gs_node *n, const gs_settings_db *d, gs_error *err)
{
    if (!d->cdc.tables.count || d->read_only)
        return GS_OK;
    gs_database *db = gs_registry_acquire(n->reg, d->id, err);
    if (!db)
        return GS_ERROR;
    gs_status st = GS_OK;
    for (size_t i = 0; i < d->cdc.tables.count && st == GS_OK; i++) {
        st = gs_db_cdc_watch(db, d->cdc.tables.items[i], err);
        if (st != GS_OK)
            gs_error_prefix(err,
                            "cdc.tables[%zu] (create the table first, e.g. through "
                            "databases[].migrations, or remove it from cdc.tables)",
                            i);
    }
    if (st == GS_OK)
        gs_log(GS_LOG_INFO, "core", "database '%s': capturing changes of %zu table(s)", d->id,
               d->cdc.tables.count);
    gs_registry_release(n->reg, db);
    return st;
}

static void db_options_from(gs_node *n, gs_db_options *o, const gs_settings_db *d)
{
    gs_db_options_default(o);
    o->cdc_retention_ms = d->cdc.retention_ms;
    o->cdc_watch_on_subscribe = d->cdc.watch_on_subscribe;
    o->cdc_fallback_poll_ms = d->cdc.fallback_poll_ms;
    o->cdc_max_log_bytes = d->cdc.max_log_bytes;
    o->cdc_max_log_changes = d->cdc.max_log_changes;
    o->cdc_log_warn_bytes = d->cdc.log_warn_bytes;
    o->node_id = n->s.node.id;
    o->read_only = d->read_only;
    o->read_pool_size = (int)d->read_pool_size;
    o->wal = d->wal;
    o->synchronous = d->synchronous;
    o->wal_autocheckpoint = d->wal_autocheckpoint;
    o->max_pending_writes = d->max_pending_writes;
    o->write_timeout_ms = d->write_timeout_ms;
    o->stmt_cache_size = (int)d->stmt_cache_size;
    o->busy_timeout_ms = (int)d->busy_timeout_ms;
}

static gs_status build_operations(gs_node *n, gs_operations **out, gs_error *err)
{
    *out = NULL;
    const gs_settings_server *sv = &n->s.server;
    if (!sv->operations.count)
        return GS_OK;
    gs_operations *ops = gs_operations_new();
    if (!ops)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    const gs_settings_op *list = sv->operations.items;
    for (size_t i = 0; i < sv->operations.count; i++) {
        const gs_settings_op *so = &list[i];
        gs_operation op;
        memset(&op, 0, sizeof op);
        op.database = (char *)so->database;
        op.name = (char *)so->name;
        op.kind = strcmp(so->kind, "read") == 0 ? GS_OP_READ : GS_OP_WRITE;
        char *read_sql[1] = {(char *)so->sql};
        char **stmts = NULL;
        if (op.kind == GS_OP_READ) {
            if (!so->sql || so->statements.count) {
                gs_operations_free(ops);
                return gs_error_set(err, 0, "INVALID_CONFIG",
                                    "%s: server.operations[%zu]: a read has exactly one 'sql' "
                                    "and no 'statements'",
                                    n->doc->file, i);
            }
            op.statements = read_sql;
            op.statement_count = 1;
        } else {
            const gs_settings_stmt *st = so->statements.items;
            size_t cnt = so->statements.count + (so->sql ? 1 : 0);
            stmts = gs_calloc(cnt ? cnt : 1, sizeof *stmts);
            if (!stmts) {
                gs_operations_free(ops);
                return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
            }
            size_t k = 0;
            if (so->sql)
                stmts[k++] = (char *)so->sql;
            for (size_t j = 0; j < so->statements.count; j++)
                stmts[k++] = (char *)st[j].sql;
            op.statements = stmts;
            op.statement_count = k;
        }
        op.args = (char **)so->args.items;
        op.arg_count = so->args.count;
        json_t *fi = NULL;
        char *fargs[64], *ffields[64];
        if (so->from_identity_json) {
            fi = json_loads(so->from_identity_json, 0, NULL);
            if (!json_is_object(fi) || json_object_size(fi) > 64) {
                json_decref(fi);
                gs_free(stmts);
                gs_operations_free(ops);
                return gs_error_set(err, 0, "INVALID_CONFIG",
                                    "%s: server.operations[%zu].from_identity must map argument "
                                    "names to identity field names",
                                    n->doc->file, i);
            }
            const char *k;
            json_t *v;
            size_t m = 0;
            json_object_foreach(fi, k, v)
            {
                if (!json_is_string(v)) {
                    json_decref(fi);
                    gs_free(stmts);
                    gs_operations_free(ops);
                    return gs_error_set(err, 0, "INVALID_CONFIG",
                                        "%s: server.operations[%zu].from_identity.%s must name "
                                        "an identity field",
                                        n->doc->file, i, k);
                }
                fargs[m] = (char *)k;
                ffields[m++] = (char *)json_string_value(v);
            }
            op.identity_args = fargs;
            op.identity_fields = ffields;
            op.identity_count = m;
        }
        gs_status st = gs_operations_add(ops, &op, err);
        json_decref(fi);
        gs_free(stmts);
        if (st != GS_OK) {
            gs_error_prefix(err, "%s: server.operations[%zu]", n->doc->file, i);
            gs_operations_free(ops);
            return GS_ERROR;
        }
    }
    if (gs_operations_build(ops, err) != GS_OK) {
        gs_operations_free(ops);
        return GS_ERROR;
    }
    *out = ops;
    return GS_OK;
}

/* ---- registry lifecycle events -> hook plugins (spec 02 Hooks), in config order ---- */

#define NODE_HOOK_HAS(vt, member)                                                                  \
    (GS_HAS_MEMBER(gs_hook_vtable, member, (vt)->struct_size) && (vt)->member)

static gs_status node_before_connect(void *user, const char *id, const char *path, gs_error *err)
{
    gs_node *n = user;
    for (size_t i = 0; i < n->instance_count; i++) {
        gs_instance *inst = &n->instances[i];
        if (inst->kind != GS_KIND_HOOK || !inst->instance)
            continue;
        const gs_hook_vtable *vt = inst->plugin->desc->vtable;
        if (!NODE_HOOK_HAS(vt, before_connect))
            continue;
        gs_error_init(err);
        if (vt->before_connect(inst->instance, id, path, err) == GS_ERROR) {
            if (!err->code[0])
                gs_error_set(err, 0, "HOOK_DENIED", "hook '%s' denied opening database '%s'",
                             inst->name, id);
            return GS_ERROR;
        }
    }
    gs_error_init(err);
    return GS_OK;
}

static void node_database_event(gs_node *n, int open, const char *id, const char *path)
{
    for (size_t i = 0; i < n->instance_count; i++) {
        gs_instance *inst = &n->instances[i];
        if (inst->kind != GS_KIND_HOOK || !inst->instance)
            continue;
        const gs_hook_vtable *vt = inst->plugin->desc->vtable;
        if (open && NODE_HOOK_HAS(vt, database_open))
            vt->database_open(inst->instance, id, path);
        else if (!open && NODE_HOOK_HAS(vt, database_close))
            vt->database_close(inst->instance, id, path);
    }
}

static void node_database_opened(void *user, const char *id, const char *path)
{
    node_database_event(user, 1, id, path);
}

static void node_database_closed(void *user, const char *id, const char *path)
{
    node_database_event(user, 0, id, path);
}

/* Open databases[i] with its configured settings (backups included), apply its migrations and
 * watch its CDC tables: at start-up, and again when a restore rebuilt its file (then on the
 * restore's thread). */
static gs_status open_configured(gs_node *n, size_t i, gs_error *err)
{
    const gs_settings_db *d = &((const gs_settings_db *)n->s.databases.items)[i];
    char file[PATH_MAX];
    if (d->path)
        snprintf(file, sizeof file, "%s", d->path);
    else
        snprintf(file, sizeof file, "%s.db", d->id);
    char *path = gs_path_join(n->data_dir, file);
    if (!path)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    gs_db_options o;
    db_options_from(n, &o, d);
    gs_backup_cycle_config bc;
    char staging[PATH_MAX];
    if (gs_node_backup_config(n, d, &bc, staging, sizeof staging))
        o.backups = &bc;
    gs_status st = gs_registry_open(n->reg, d->id, path, &o, err);
    if (st == GS_OK)
        gs_log(GS_LOG_INFO, "core", "database '%s' open at %s (%s, %lld readers%s)", d->id, path,
               o.read_only ? "read-only" : "read-write", (long long)o.read_pool_size,
               o.backups ? ", backups on" : "");
    gs_free(path);
    if (st == GS_OK && n->migrations && n->migrations[i])
        st = migrate_database(n, d->id, n->migrations[i], err);
    if (st == GS_OK)
        st = watch_tables(n, d, err);
    if (st != GS_OK) {
        gs_error_prefix(err, "database '%s'", d->id);
        return GS_ERROR;
    }
    return GS_OK;
}

/* The api's reopen after a restore (api_backup.c), on the restore's thread. */
static gs_status node_reopen(void *user, const char *id, gs_error *err)
{
    gs_node *n = user;
    const gs_settings_db *dbs = n->s.databases.items;
    for (size_t i = 0; i < n->s.databases.count; i++)
        if (strcmp(dbs[i].id, id) == 0)
            return open_configured(n, i, err);
    return gs_error_set(err, 0, "DATABASE_NOT_FOUND",
                        "database '%s' is not declared under databases, so it cannot be "
                        "reopened",
                        id);
}

gs_status gs_node_start(gs_node *n, gs_error *err)
{
    const gs_settings *s = &n->s;
    n->data_dir = gs_strdup(s->node.data_dir);
    if (!n->data_dir)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    if (gs_mkdir_p(n->data_dir) != 0)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "cannot create node.data_dir '%s': %s; create it or point "
                            "--data-dir elsewhere",
                            n->data_dir, strerror(errno));
    gs_registry_options ro;
    gs_registry_options_default(&ro);
    ro.events.before_connect = node_before_connect;
    ro.events.opened = node_database_opened;
    ro.events.closed = node_database_closed;
    ro.events.user = n;
    char *tenant_dir = NULL;
    if (s->tenants.dir) {
        tenant_dir = gs_path_join(n->data_dir, s->tenants.dir);
        if (!tenant_dir || gs_mkdir_p(tenant_dir) != 0) {
            gs_free(tenant_dir);
            return gs_error_set(err, 0, "INVALID_CONFIG", "cannot create tenants.dir");
        }
        ro.tenant_dir = tenant_dir;
        ro.tenant_extension = s->tenants.extension;
        ro.tenant_create = s->tenants.create;
        ro.tenant_options.read_pool_size = (int)s->tenants.read_pool_size;
        ro.tenant_options.synchronous = s->tenants.synchronous;
        ro.tenant_options.node_id = s->node.id;
        ro.max_open = s->tenants.max_open;
        ro.idle_timeout_ms = s->tenants.idle_timeout_ms;
        ro.migrations = n->tenant_migrations;
    }
    n->reg = gs_registry_new(&ro);
    gs_free(tenant_dir);
    if (!n->reg)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    for (size_t i = 0; i < s->databases.count; i++)
        if (open_configured(n, i, err) != GS_OK)
            return GS_ERROR;
    if (gs_node_repl_start(n, err) != GS_OK)
        return GS_ERROR;
    if (gs_node_sources_start(n, err) != GS_OK)
        return GS_ERROR;
    gs_operations *ops = NULL;
    if (build_operations(n, &ops, err) != GS_OK)
        return GS_ERROR;
    gs_api_hook hooks[64];
    size_t nh = 0;
    for (size_t i = 0; i < n->instance_count && nh < 64; i++) {
        gs_instance *inst = &n->instances[i];
        if (inst->kind != GS_KIND_HOOK)
            continue;
        hooks[nh].name = inst->name;
        hooks[nh].vt = inst->plugin->desc->vtable;
        hooks[nh].instance = inst->instance;
        nh++;
    }
    const gs_settings_server *sv = &s->server;
    gs_api_options ao;
    memset(&ao, 0, sizeof ao);
    ao.accept_sql = sv->accept_sql;
    ao.accept_backup_restore = sv->accept_backup_restore;
    ao.cluster_status = !sv->cluster_status || strcmp(sv->cluster_status, "off") == 0 ? 0
                        : strcmp(sv->cluster_status, "any") == 0                      ? 2
                                                                                      : 1;
    ao.max_body_bytes = (uint64_t)sv->max_body_bytes;
    ao.cors.enabled = sv->cors.enabled;
    ao.cors.origins = sv->cors.origins.items;
    ao.cors.origin_count = sv->cors.origins.count;
    ao.cors.max_age = sv->cors.max_age;
    char methods[512] = "", headers[512] = "";
    for (size_t i = 0; i < sv->cors.methods.count; i++)
        snprintf(methods + strlen(methods), sizeof methods - strlen(methods), "%s%s", i ? ", " : "",
                 sv->cors.methods.items[i]);
    for (size_t i = 0; i < sv->cors.headers.count; i++)
        snprintf(headers + strlen(headers), sizeof headers - strlen(headers), "%s%s", i ? ", " : "",
                 sv->cors.headers.items[i]);
    ao.cors.methods = methods[0] ? methods : NULL;
    ao.cors.headers = headers[0] ? headers : NULL;
    ao.hooks = hooks;
    ao.hook_count = nh;
    ao.operations = ops;
    ao.metrics_enabled = sv->metrics.enabled;
    ao.metrics_authenticate = sv->metrics.authenticate;
    ao.status_page = sv->status_page;
    ao.node_id = s->node.id;
    if (n->sources) {
        ao.sources_json = gs_node_sources_json;
        ao.sources_user = n;
    }
    ao.reopen = node_reopen;
    ao.reopen_user = n;
    if (gs_api_new(&ao, n->reg, &n->api, err) != GS_OK) {
        gs_operations_free(ops);
        return GS_ERROR;
    }
    n->pool = gs_workpool_new(2, err);
    if (!n->pool)
        return GS_ERROR;
    /* Start the client transports that serve: those that take WebSocket upgrades first, so
     * a listener never hands an upgrade to a transport that is not running yet. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n->instance_count; i++) {
            gs_instance *inst = &n->instances[i];
            if (inst->kind != GS_KIND_CLIENT_TRANSPORT)
                continue;
            const gs_client_transport_vtable *vt = inst->plugin->desc->vtable;
            int adopts =
                GS_HAS_MEMBER(gs_client_transport_vtable, adopt_upgrade, vt->struct_size) &&
                vt->adopt_upgrade;
            if (adopts != (pass == 0))
                continue;
            int serves = sv->transports.count == 0;
            for (size_t j = 0; j < sv->transports.count; j++)
                if (strcmp(sv->transports.items[j], inst->name) == 0)
                    serves = 1;
            if (!serves)
                continue;
            gs_error_init(err);
            if (vt->start(inst->instance, err) != GS_OK) {
                gs_error_prefix(err, "client transport '%s'", inst->name);
                return GS_ERROR;
            }
            __atomic_store_n(&inst->started, 1, __ATOMIC_RELEASE); /* read by upgrade_handoff */
            int port = GS_HAS_MEMBER(gs_client_transport_vtable, bound_port, vt->struct_size) &&
                               vt->bound_port
                           ? vt->bound_port(inst->instance)
                           : (int)sv->port;
            if (port >= 0)
                gs_log(GS_LOG_INFO, "core", "client transport '%s' serving on %s port %d",
                       inst->name, sv->host, port);
            else
                gs_log(GS_LOG_INFO, "core",
                       "client transport '%s' serving upgrades handed over on the shared port",
                       inst->name);
        }
    }
    n->started = 1;
    gs_log(GS_LOG_INFO, "core", "node '%s' ready (gatestream %s)", s->node.id, GS_VERSION);
    return GS_OK;
}

int gs_node_bound_port(const gs_node *n)
{
    for (size_t i = 0; i < n->instance_count; i++) {
        const gs_instance *inst = &n->instances[i];
        if (inst->kind != GS_KIND_CLIENT_TRANSPORT || !inst->started)
            continue;
        const gs_client_transport_vtable *vt = inst->plugin->desc->vtable;
        int port =
            GS_HAS_MEMBER(gs_client_transport_vtable, bound_port, vt->struct_size) && vt->bound_port
                ? vt->bound_port(inst->instance)
                : -1;
        if (port >= 0) /* a transport without a port of its own (ws) answers -1 */
            return port;
    }
    return -1;
}

void gs_node_stop(gs_node *n)
{
    if (!n || n->stopped)
        return;
    n->stopped = 1;
    if (n->api) {
        gs_api_begin_shutdown(n->api);
        int left = gs_api_wait_idle(n->api, n->s.server.shutdown_timeout_ms);
        if (left)
            gs_log(GS_LOG_WARN, "core", "%d request(s) still running after %lld ms; stopping", left,
                   (long long)n->s.server.shutdown_timeout_ms);
    }
    for (size_t i = n->instance_count; i-- > 0;) {
        gs_instance *inst = &n->instances[i];
        if (inst->kind == GS_KIND_CLIENT_TRANSPORT && inst->started) {
            ((const gs_client_transport_vtable *)inst->plugin->desc->vtable)->stop(inst->instance);
            __atomic_store_n(&inst->started, 0, __ATOMIC_RELEASE);
        }
    }
    gs_node_sources_stop(n); /* they write into the databases: before those close */
    gs_node_repl_stop(n);
    for (size_t i = n->instance_count; i-- > 0;) {
        gs_instance *inst = &n->instances[i];
        if (inst->kind == GS_KIND_COORDINATOR && inst->instance)
            ((const gs_coordinator_vtable *)inst->plugin->desc->vtable)->stop(inst->instance);
    }
    if (n->reg)
        gs_registry_shutdown(n->reg);
    if (n->api) /* requests cut off by the transports have answered by now */
        gs_api_wait_idle(n->api, 1000);
}

void gs_node_free(gs_node *n)
{
    if (!n)
        return;
    gs_node_stop(n);
    for (size_t i = n->instance_count; i-- > 0;) {
        gs_instance *inst = &n->instances[i];
        if (inst->instance) {
            const void *vt = inst->plugin->desc->vtable;
            if (inst->kind == GS_KIND_CLIENT_TRANSPORT)
                ((const gs_client_transport_vtable *)vt)->destroy(inst->instance);
            else if (inst->kind == GS_KIND_HOOK)
                ((const gs_hook_vtable *)vt)->destroy(inst->instance);
            else if (inst->kind == GS_KIND_REPL_TRANSPORT)
                ((const gs_repl_transport_vtable *)vt)->destroy(inst->instance);
            else if (inst->kind == GS_KIND_RESOLVER)
                ((const gs_resolver_vtable *)vt)->destroy(inst->instance);
            else if (inst->kind == GS_KIND_BACKUP_DESTINATION)
                ((const gs_backup_destination_vtable *)vt)->destroy(inst->instance);
            else if (inst->kind == GS_KIND_COORDINATOR)
                ((const gs_coordinator_vtable *)vt)->destroy(inst->instance);
        }
    }
    gs_node_repl_free(n);
    gs_node_sources_free(n);
    gs_api_free(n->api);
    if (n->pool)
        gs_workpool_free(n->pool);
    if (n->reg)
        gs_registry_free(n->reg);
    for (size_t i = 0; i < n->instance_count; i++) {
        gs_instance *inst = &n->instances[i];
        gs_cfg_arena_free(&inst->arena);
        gs_free(inst->config);
        gs_plugin_unload(inst->plugin);
    }
    gs_free(n->instances);
    for (size_t i = 0; n->migrations && i < n->s.databases.count; i++)
        gs_migration_set_free(n->migrations[i]);
    gs_free(n->migrations);
    gs_migration_set_free(n->tenant_migrations);
    gs_cfg_arena_free(&n->arena);
    gs_cfg_free(n->doc);
    gs_free(n->config_dir);
    gs_free(n->data_dir);
    gs_free(n);
}

gs_status gs_describe_plugin(const char *name, char **text, gs_error *err)
{
    char *path = NULL;
    gs_plugin *p = NULL;
    if (gs_plugin_find(name, name, 0, NULL, NULL, &path, err) != GS_OK)
        return GS_ERROR;
    gs_status st = gs_plugin_load(name, path, 0, &p, err);
    gs_free(path);
    if (st != GS_OK)
        return GS_ERROR;
    const gs_plugin_descriptor *d = p->desc;
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_printf(&b, "plugin %s %s (%s, ABI %u.%u)\n  %s\n  file: %s\n\nconfig keys:\n", d->name,
                  d->version ? d->version : "", gs_plugin_kind_name(d->kind), d->abi_major,
                  d->abi_minor,
                  GS_HAS_MEMBER(gs_plugin_descriptor, description, d->struct_size) && d->description
                      ? d->description
                      : "",
                  p->path);
    if (d->config_key_count)
        gs_cfg_describe(d->config_keys, d->config_key_count, d->config_key_size, 1, &b);
    else
        gs_buf_puts(&b, "  (none)\n");
    gs_plugin_unload(p);
    if (b.oom) {
        gs_buf_free(&b);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    *text = gs_buf_take(&b, NULL);
    return GS_OK;
}
