/*
 * memory: the in-process coordinator (coordinator.h). A linearisable key-value store with
 * etcd's revisions, compare-and-set transactions, leases that expire by the monotonic clock and
 * prefix watches, living in the process: every instance naming the same `store` shares it, so
 * a test (or a local development setup) runs a whole coordinator-mode cluster in one process.
 *
 * What it does: create() checks the config, normalises the key prefix and joins the named
 * store (creating it, with its sweeper and delivery threads, on first use); start() lets the
 * instance call the store; the vtable entries check their arguments the way etcd does
 * (at most 128 compares and ops per branch, no key twice in a branch) and run in store.c,
 * lease.c and watch.c; stop() ends the instance's watches and makes later calls fail with
 * COORDINATOR_UNAVAILABLE; destroy() leaves the store. There is no failure switch: a test that
 * needs an unreachable coordinator wraps the vtable.
 *
 * Ownership: the instance copies its key prefix at create(); every pointer passed to a call is
 * the caller's and is copied before the call returns. The gs_kv handed to a visit or watch
 * callback is valid for that call only.
 *
 * Threads: create/start/stop/destroy on the core's main thread; the other entries from any
 * thread, each blocking only on the store lock. Watch callbacks run on the store's delivery
 * thread; stop/destroy must not be called from one (they log it and do what is safe).
 */
#include "memory_internal.h"

#include <inttypes.h>
#include <string.h>

#define CMEM_FAIL(host, err, code, ...) ((host)->error_set((err), 0, (code), __VA_ARGS__), GS_ERROR)

/* ------------------------------------------------------------------------------------------ */
/* Config keys                                                                                */

static const gs_config_key cmem_keys[] = {
    {.name = "store",
     .type = GS_CFG_STRING,
     .default_value = "default",
     .offset = offsetof(gs_cmem_config, store),
     .help = "store name: every instance of the process naming the same store shares its keys, "
             "leases and watches"},
    {.name = "key_prefix",
     .type = GS_CFG_STRING,
     .default_value = "gatestream/",
     .offset = offsetof(gs_cmem_config, key_prefix),
     .help = "prefix of every key this instance reads or writes (normalised to end with one "
             "'/'; never empty or '/')"},
    {.name = "max_history",
     .type = GS_CFG_INT,
     .default_value = "65536",
     .offset = offsetof(gs_cmem_config, max_history),
     .help = "events kept for watches that start at a past revision (set by the instance that "
             "creates the store); older ones are compacted",
     .min = CMEM_MIN_HISTORY,
     .max = CMEM_MAX_HISTORY},
};

#define CMEM_KEY_COUNT (sizeof cmem_keys / sizeof cmem_keys[0])

/* ------------------------------------------------------------------------------------------ */
/* Create and destroy                                                                         */

/* The key prefix with its trailing slashes folded into one; NULL with err filled when it is
 * empty or the root. */
static char *normalise_prefix(const gs_host *host, const char *in, gs_error *err)
{
    size_t n = in ? strlen(in) : 0;
    while (n && in[n - 1] == '/')
        n--;
    if (!n) {
        host->error_set(err, 0, "INVALID_CONFIG",
                        "memory coordinator: key_prefix '%s' is %s; give the store a namespace "
                        "such as \"gatestream/\"",
                        in ? in : "", in && *in ? "the root" : "empty");
        return NULL;
    }
    char *p = host->alloc(n + 2);
    if (!p) {
        host->error_set(err, 0, "INTERNAL_ERROR", "memory coordinator: out of memory");
        return NULL;
    }
    memcpy(p, in, n);
    p[n] = '/';
    p[n + 1] = '\0';
    return p;
}

static gs_status cmem_create(const gs_host *host, const void *config, void **instance,
                             gs_error *err)
{
    *instance = NULL;
    gs_cmem_config defaults = {
        .store = "default", .key_prefix = "gatestream/", .max_history = 65536};
    const gs_cmem_config *cfg = config ? config : &defaults;
    const char *store = cfg->store ? cfg->store : "default";
    if (!*store)
        return CMEM_FAIL(host, err, "INVALID_CONFIG",
                         "memory coordinator: 'store' is empty; name the store (default "
                         "\"default\")");
    if (cfg->max_history < CMEM_MIN_HISTORY || cfg->max_history > CMEM_MAX_HISTORY)
        return CMEM_FAIL(host, err, "INVALID_CONFIG",
                         "memory coordinator: max_history = %" PRId64 " is outside %d..%d",
                         cfg->max_history, CMEM_MIN_HISTORY, CMEM_MAX_HISTORY);
    cmem_inst *in = host->alloc(sizeof *in);
    if (!in)
        return CMEM_FAIL(host, err, "INTERNAL_ERROR", "memory coordinator: out of memory");
    memset(in, 0, sizeof *in);
    in->host = host;
    if (!(in->prefix = normalise_prefix(host, cfg->key_prefix, err))) {
        host->free(in);
        return GS_ERROR;
    }
    in->prefix_len = strlen(in->prefix);
    if (gs_cmem_store_join(host, store, (size_t)cfg->max_history, &in->store, err) != GS_OK) {
        host->free(in->prefix);
        host->free(in);
        return GS_ERROR;
    }
    *instance = in;
    return GS_OK;
}

static void cmem_stop(void *instance);

static void cmem_destroy(void *instance)
{
    cmem_inst *in = instance;
    if (!in)
        return;
    cmem_stop(in);
    if (gs_cmem_on_delivery_thread(in->store)) {
        /* Leaving could free the store (and join this very thread): refuse and leak. */
        in->host->log(in->host, GS_LOG_ERROR, CMEM_COMPONENT,
                      "store '%s': destroy() called from a watch callback; the instance is "
                      "leaked. Destroy it from the core's main thread",
                      in->store->name);
        return;
    }
    gs_cmem_store_leave(in->store, in);
    const gs_host *host = in->host;
    host->free(in->prefix);
    host->free(in);
}

/* ------------------------------------------------------------------------------------------ */
/* Start and stop                                                                             */

static gs_status cmem_start(void *instance, gs_error *err)
{
    cmem_inst *in = instance;
    (void)err;
    pthread_mutex_lock(&in->store->mu);
    int was = in->running;
    in->running = 1;
    pthread_mutex_unlock(&in->store->mu);
    if (!was)
        in->host->log(in->host, GS_LOG_INFO, CMEM_COMPONENT,
                      "started on store '%s' with key prefix '%s'", in->store->name, in->prefix);
    return GS_OK;
}

static void cmem_stop(void *instance)
{
    cmem_inst *in = instance;
    if (!in)
        return;
    pthread_mutex_lock(&in->store->mu);
    int was = in->running;
    in->running = 0;
    pthread_mutex_unlock(&in->store->mu);
    if (gs_cmem_on_delivery_thread(in->store))
        in->host->log(in->host, GS_LOG_ERROR, CMEM_COMPONENT,
                      "store '%s': stop() called from a watch callback; the watches end, but "
                      "stop() cannot wait for the callback it was called from",
                      in->store->name);
    gs_cmem_watch_remove(in, 0, 1);
    if (was)
        in->host->log(in->host, GS_LOG_INFO, CMEM_COMPONENT, "stopped on store '%s'",
                      in->store->name);
}

/* ------------------------------------------------------------------------------------------ */
/* Argument checks (the same limits as etcd, so code tested here behaves the same there)      */

static int same_key(const gs_op *a, const gs_op *b)
{
    return a->key_len == b->key_len && (!a->key_len || memcmp(a->key, b->key, a->key_len) == 0);
}

static gs_status check_ops(const cmem_inst *in, const char *branch, const gs_op *ops, size_t n,
                           gs_error *err)
{
    if (n && !ops)
        return CMEM_FAIL(in->host, err, "INTERNAL_ERROR",
                         "memory coordinator: txn %s has %zu ops and no array", branch, n);
    if (n > CMEM_MAX_TXN_OPS)
        return CMEM_FAIL(in->host, err, "INTERNAL_ERROR",
                         "memory coordinator: txn %s has %zu ops; at most %d are allowed (etcd's "
                         "limit)",
                         branch, n, CMEM_MAX_TXN_OPS);
    for (size_t i = 0; i < n; i++) {
        const gs_op *op = &ops[i];
        if (op->type != GS_OP_PUT && op->type != GS_OP_DELETE)
            return CMEM_FAIL(in->host, err, "INTERNAL_ERROR",
                             "memory coordinator: txn %s op %zu has unknown type %d", branch, i,
                             (int)op->type);
        if ((op->key_len && !op->key) || (op->type == GS_OP_PUT && op->value_len && !op->value))
            return CMEM_FAIL(in->host, err, "INTERNAL_ERROR",
                             "memory coordinator: txn %s op %zu has a length without bytes", branch,
                             i);
        if (op->type == GS_OP_PUT && op->lease < 0)
            return CMEM_FAIL(in->host, err, "INTERNAL_ERROR",
                             "memory coordinator: txn %s op %zu names lease %" PRId64, branch, i,
                             op->lease);
        for (size_t j = 0; j < i; j++)
            if (same_key(&ops[j], op))
                return CMEM_FAIL(in->host, err, "INTERNAL_ERROR",
                                 "memory coordinator: txn %s changes key '%.*s' twice (ops %zu "
                                 "and %zu); etcd refuses that too",
                                 branch, (int)(op->key_len > 200 ? 200 : op->key_len),
                                 (const char *)op->key, j, i);
    }
    return GS_OK;
}

static gs_status check_compares(const cmem_inst *in, const gs_compare *c, size_t n, gs_error *err)
{
    if (n && !c)
        return CMEM_FAIL(in->host, err, "INTERNAL_ERROR",
                         "memory coordinator: txn has %zu compares and no array", n);
    if (n > CMEM_MAX_TXN_OPS)
        return CMEM_FAIL(in->host, err, "INTERNAL_ERROR",
                         "memory coordinator: txn has %zu compares; at most %d are allowed", n,
                         CMEM_MAX_TXN_OPS);
    for (size_t i = 0; i < n; i++) {
        if ((unsigned)c[i].target > GS_CMP_LEASE || (unsigned)c[i].result > GS_CMP_NOT_EQUAL)
            return CMEM_FAIL(in->host, err, "INTERNAL_ERROR",
                             "memory coordinator: compare %zu has target %d / result %d, "
                             "outside the enums of coordinator.h",
                             i, (int)c[i].target, (int)c[i].result);
        if ((c[i].key_len && !c[i].key) ||
            (c[i].target == GS_CMP_VALUE && c[i].value_len && !c[i].value))
            return CMEM_FAIL(in->host, err, "INTERNAL_ERROR",
                             "memory coordinator: compare %zu has a length without bytes", i);
    }
    return GS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* The store calls                                                                            */

static gs_status cmem_range(void *instance, const uint8_t *key, size_t key_len, int prefix,
                            gs_kv_visit_fn visit, void *user, int64_t *revision, gs_error *err)
{
    cmem_inst *in = instance;
    if (key_len && !key)
        return CMEM_FAIL(in->host, err, "INTERNAL_ERROR",
                         "memory coordinator: range of %zu key bytes with no buffer", key_len);
    return gs_cmem_range(in, key, key_len, prefix, visit, user, revision, err);
}

static gs_status cmem_txn(void *instance, const gs_compare *compares, size_t compare_count,
                          const gs_op *success, size_t success_count, const gs_op *failure,
                          size_t failure_count, int *succeeded, int64_t *revision, gs_error *err)
{
    cmem_inst *in = instance;
    int dummy;
    if (check_compares(in, compares, compare_count, err) != GS_OK ||
        check_ops(in, "success", success, success_count, err) != GS_OK ||
        check_ops(in, "failure", failure, failure_count, err) != GS_OK)
        return GS_ERROR;
    return gs_cmem_txn(in, compares, compare_count, success, success_count, failure, failure_count,
                       succeeded ? succeeded : &dummy, revision, err);
}

static gs_status cmem_lease_grant(void *instance, int64_t ttl_ms, int64_t *lease_id, gs_error *err)
{
    cmem_inst *in = instance;
    if (!lease_id || ttl_ms < 1 || ttl_ms > CMEM_MAX_TTL_MS)
        return CMEM_FAIL(in->host, err, "INTERNAL_ERROR",
                         "memory coordinator: lease_grant needs 1 <= ttl_ms <= %" PRId64
                         " (got %" PRId64 ") and a place for the id",
                         CMEM_MAX_TTL_MS, ttl_ms);
    return gs_cmem_lease_grant(in, ttl_ms, lease_id, err);
}

static gs_status cmem_lease_keepalive(void *instance, int64_t lease_id, int64_t *ttl_ms_left,
                                      gs_error *err)
{
    int64_t left = 0;
    gs_status rc = gs_cmem_lease_keepalive(instance, lease_id, &left, err);
    if (ttl_ms_left)
        *ttl_ms_left = rc == GS_OK ? left : 0;
    return rc;
}

static gs_status cmem_lease_revoke(void *instance, int64_t lease_id, gs_error *err)
{
    return gs_cmem_lease_revoke(instance, lease_id, err);
}

static gs_status cmem_watch_call(void *instance, const uint8_t *prefix, size_t prefix_len,
                                 int64_t start_revision, gs_watch_fn fn, void *user,
                                 uint64_t *watch_id, gs_error *err)
{
    cmem_inst *in = instance;
    if (!fn || !watch_id || (prefix_len && !prefix) || start_revision < 0)
        return CMEM_FAIL(in->host, err, "INTERNAL_ERROR",
                         "memory coordinator: watch needs a callback, a place for the id, the "
                         "prefix bytes and start_revision >= 0");
    return gs_cmem_watch_add(in, prefix, prefix_len, start_revision, fn, user, watch_id, err);
}

static void cmem_unwatch(void *instance, uint64_t watch_id)
{
    cmem_inst *in = instance;
    if (in && watch_id)
        gs_cmem_watch_remove(in, watch_id, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* Descriptor                                                                                 */

static const gs_coordinator_vtable cmem_vtable = {
    .struct_size = sizeof(gs_coordinator_vtable),
    .create = cmem_create,
    .start = cmem_start,
    .stop = cmem_stop,
    .destroy = cmem_destroy,
    .range = cmem_range,
    .txn = cmem_txn,
    .lease_grant = cmem_lease_grant,
    .lease_keepalive = cmem_lease_keepalive,
    .lease_revoke = cmem_lease_revoke,
    .watch = cmem_watch_call,
    .unwatch = cmem_unwatch,
};

static const gs_plugin_descriptor cmem_descriptor = {
    .struct_size = sizeof(gs_plugin_descriptor),
    .abi_major = GS_ABI_MAJOR,
    .abi_minor = GS_ABI_MINOR,
    .kind = GS_KIND_COORDINATOR,
    .name = "memory",
    .version = "0.1.0",
    .build_signature = GS_BUILD_SIGNATURE,
    .vtable = &cmem_vtable,
    .config_keys = cmem_keys,
    .config_key_count = CMEM_KEY_COUNT,
    .config_key_size = sizeof(gs_config_key),
    .config_struct_size = sizeof(gs_cmem_config),
    .description = "in-process coordinator: a linearisable store with revisions, leases, "
                   "compare-and-set transactions and prefix watches, shared by name within "
                   "one process (tests, local development)",
};

GS_PLUGIN_DEFINE(cmem_descriptor)
