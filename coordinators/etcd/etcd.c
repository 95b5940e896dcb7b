/*
 * etcd: the production coordinator (coordinator.h) over etcd's v3 API, spoken with gRPC core
 * and a hand-written protobuf subset (proto/etcd/kv.proto, rpc.proto) compiled by protoc-c in
 * this plugin's build folder.
 *
 * What it does: create() checks the config (https:// unless allow_insecure, a key prefix that
 * is never the root, both halves of a client certificate and of a username/password), reads
 * the PEM files and normalises the key prefix; start() creates a channel per endpoint and the
 * completion-queue thread, then proves etcd answers (a linearisable read, authenticating
 * first when a username is set) within dial_timeout_ms; the vtable entries check their
 * arguments with etcd's own limits and run in kv.c, lease.c and watch.c; stop() cancels the
 * calls in flight and every watch, waits for them and closes the channels, after which calls
 * fail at once; destroy() frees the instance.
 *
 * Ownership: the instance copies its config at create(); every pointer passed to a call is the
 * caller's and is not kept. A gs_kv handed to a visit or watch callback is valid for that call.
 *
 * Threads: create/start/stop/destroy on the core's main thread (stop/destroy refuse to run on
 * the completion-queue thread, i.e. from a watch callback); range, txn and the lease calls from
 * any thread, each blocking at most call_timeout_ms; watch callbacks on the completion-queue
 * thread, one at a time.
 */
#include "etcd_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define EC_MAX_TIMEOUT_MS INT64_C(3600000)

/* ------------------------------------------------------------------------------------------ */
/* Config keys                                                                                */

#define EC_STR_KEY(key, req, field, text)                                                          \
    {                                                                                              \
        .name = (key), .type = GS_CFG_STRING, .required = (req),                                   \
        .offset = offsetof(gs_etcd_config, field), .help = (text)                                  \
    }
#define EC_MS_KEY(key, def, field, text)                                                           \
    {                                                                                              \
        .name = (key), .type = GS_CFG_INT, .default_value = (def),                                 \
        .offset = offsetof(gs_etcd_config, field), .help = (text), .min = 1,                       \
        .max = EC_MAX_TIMEOUT_MS                                                                   \
    }

static const gs_config_key ec_keys[] = {
    EC_STR_KEY("endpoints", 1, endpoints,
               "comma-separated etcd client URLs, e.g. \"https://10.0.0.1:2379,https://"
               "10.0.0.2:2379\" (a string, so ${ETCD_ENDPOINTS} can expand into it)"),
    EC_STR_KEY("key_prefix", 1, key_prefix,
               "prefix of every key (normalised to end with one '/'; never empty or '/'), e.g. "
               "\"gatestream/\""),
    {.name = "allow_insecure",
     .type = GS_CFG_BOOL,
     .default_value = "false",
     .offset = offsetof(gs_etcd_config, allow_insecure),
     .help = "accept plaintext http:// endpoints (local development only)"},
    EC_STR_KEY("tls_ca_cert", 0, tls_ca_cert,
               "PEM CA that signed etcd's server certificate (default: the system roots)"),
    EC_STR_KEY("tls_cert", 0, tls_cert,
               "PEM client certificate presented to etcd (--client-cert-auth); with tls_key"),
    EC_STR_KEY("tls_key", 0, tls_key, "PEM private key of tls_cert"),
    EC_STR_KEY("username", 0, username,
               "etcd user: authenticate once per connection and send the token on every call"),
    EC_STR_KEY("password", 0, password, "password of username"),
    EC_MS_KEY("dial_timeout_ms", "5000", dial_timeout_ms,
              "longest wait for a connection to an endpoint (start, and each endpoint tried)"),
    EC_MS_KEY("call_timeout_ms", "5000", call_timeout_ms,
              "deadline of every call, all endpoints tried included"),
};

#define EC_KEY_COUNT (sizeof ec_keys / sizeof ec_keys[0])

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                    */

uint64_t gs_etcd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

char *gs_etcd_strdup(const gs_host *host, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *p = host->alloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* ------------------------------------------------------------------------------------------ */
/* Create and destroy                                                                         */

static void free_instance(ec_inst *t)
{
    const gs_host *host = t->host;
    gs_etcd_endpoints_free(t);
    host->free(t->prefix);
    host->free(t->ca_pem);
    host->free(t->cert_pem);
    host->free(t->key_pem);
    host->free(t->username);
    if (t->password) {
        memset(t->password, 0, strlen(t->password));
        host->free(t->password);
    }
    if (t->grpc_inited)
        grpc_shutdown();
    host->free(t);
}

static gs_status check_config(ec_inst *t, const gs_etcd_config *cfg, gs_error *err)
{
    if (cfg->dial_timeout_ms < 1 || cfg->dial_timeout_ms > EC_MAX_TIMEOUT_MS ||
        cfg->call_timeout_ms < 1 || cfg->call_timeout_ms > EC_MAX_TIMEOUT_MS)
        return EC_FAIL(t, err, "INVALID_CONFIG",
                       "etcd coordinator: dial_timeout_ms (%" PRId64
                       ") and call_timeout_ms (%" PRId64 ") must be 1..%" PRId64,
                       cfg->dial_timeout_ms, cfg->call_timeout_ms, EC_MAX_TIMEOUT_MS);
    size_t n = cfg->key_prefix ? strlen(cfg->key_prefix) : 0;
    while (n && cfg->key_prefix[n - 1] == '/')
        n--;
    if (!n)
        return EC_FAIL(t, err, "INVALID_CONFIG",
                       "etcd coordinator: key_prefix '%s' is %s; give this store a namespace "
                       "such as \"gatestream/\" (other data in etcd must stay out of reach)",
                       cfg->key_prefix ? cfg->key_prefix : "",
                       cfg->key_prefix && *cfg->key_prefix ? "the root" : "required");
    if (cfg->username && *cfg->username && !cfg->password)
        return EC_FAIL(t, err, "INVALID_CONFIG",
                       "etcd coordinator: username '%s' is set but password is not", cfg->username);
    if ((!cfg->username || !*cfg->username) && cfg->password && *cfg->password)
        return EC_FAIL(t, err, "INVALID_CONFIG",
                       "etcd coordinator: password is set but username is not");
    t->prefix = t->host->alloc(n + 2);
    if (!t->prefix)
        return EC_FAIL(t, err, "INTERNAL_ERROR", "etcd coordinator: out of memory");
    memcpy(t->prefix, cfg->key_prefix, n);
    t->prefix[n] = '/';
    t->prefix[n + 1] = '\0';
    t->prefix_len = n + 1;
    return GS_OK;
}

static gs_status ec_create(const gs_host *host, const void *config, void **instance, gs_error *err)
{
    *instance = NULL;
    gs_etcd_config defaults = {.dial_timeout_ms = 5000, .call_timeout_ms = 5000};
    const gs_etcd_config *cfg = config ? config : &defaults;
    ec_inst *t = host->alloc(sizeof *t);
    if (!t) {
        host->error_set(err, 0, "INTERNAL_ERROR", "etcd coordinator: out of memory");
        return GS_ERROR;
    }
    memset(t, 0, sizeof *t);
    t->host = host;
    t->allow_insecure = cfg->allow_insecure;
    t->dial_timeout_ms = cfg->dial_timeout_ms;
    t->call_timeout_ms = cfg->call_timeout_ms;
    if (check_config(t, cfg, err) != GS_OK || gs_etcd_endpoints_parse(t, cfg->endpoints, err) ||
        gs_etcd_tls_load(t, cfg, err) != GS_OK) {
        free_instance(t);
        return GS_ERROR;
    }
    int https = 0;
    for (size_t i = 0; i < t->neps; i++)
        https |= t->eps[i].tls;
    if (!https && (t->ca_pem || t->cert_pem))
        host->log(host, GS_LOG_WARN, EC_COMPONENT,
                  "tls_ca_cert/tls_cert are set but no endpoint is https://; they are not used");
    if (cfg->username && *cfg->username) {
        t->username = gs_etcd_strdup(host, cfg->username);
        t->password = gs_etcd_strdup(host, cfg->password);
        if (!t->username || !t->password) {
            free_instance(t);
            host->error_set(err, 0, "INTERNAL_ERROR", "etcd coordinator: out of memory");
            return GS_ERROR;
        }
    }
    pthread_condattr_t ca;
    int ok = pthread_mutex_init(&t->mu, NULL) == 0;
    if (ok) {
        int cond_ok = pthread_condattr_init(&ca) == 0;
        if (cond_ok) {
            pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
            cond_ok = pthread_cond_init(&t->cond, &ca) == 0;
            pthread_condattr_destroy(&ca);
        }
        if (!cond_ok) {
            pthread_mutex_destroy(&t->mu);
            ok = 0;
        }
    }
    if (!ok) {
        free_instance(t);
        host->error_set(err, 0, "INTERNAL_ERROR", "etcd coordinator: cannot create its lock");
        return GS_ERROR;
    }
    grpc_init();
    t->grpc_inited = 1;
    *instance = t;
    return GS_OK;
}

static void ec_stop(void *instance);

static void ec_destroy(void *instance)
{
    ec_inst *t = instance;
    if (!t)
        return;
    if (gs_etcd_on_cq_thread(t)) {
        t->host->log(t->host, GS_LOG_ERROR, EC_COMPONENT,
                     "destroy() called from a watch callback; the instance is leaked. Destroy "
                     "it from the core's main thread");
        return;
    }
    ec_stop(t);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->mu);
    free_instance(t);
}

/* ------------------------------------------------------------------------------------------ */
/* Start and stop                                                                             */

/* Cancel the calls in flight, end the watches, close the channels. */
static void shut(ec_inst *t)
{
    pthread_mutex_lock(&t->mu);
    t->state = EC_STOPPING;
    for (ec_inflight *fl = t->inflight; fl; fl = fl->next)
        if (fl->call)
            grpc_call_cancel(fl->call, NULL);
    while (t->ninflight) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 200 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&t->cond, &t->mu, &ts);
        for (ec_inflight *fl = t->inflight; fl; fl = fl->next)
            if (fl->call)
                grpc_call_cancel(fl->call, NULL); /* started after the first pass */
    }
    pthread_mutex_unlock(&t->mu);
    gs_etcd_cq_stop(t);
    gs_etcd_channels_destroy(t);
    pthread_mutex_lock(&t->mu);
    t->state = EC_IDLE;
    pthread_mutex_unlock(&t->mu);
}

static gs_status ec_start(void *instance, gs_error *err)
{
    ec_inst *t = instance;
    pthread_mutex_lock(&t->mu);
    ec_state st = t->state;
    pthread_mutex_unlock(&t->mu);
    if (st == EC_RUNNING)
        return GS_OK;
    if (gs_etcd_channels_create(t, err) != GS_OK)
        return GS_ERROR;
    if (gs_etcd_cq_start(t, err) != GS_OK) {
        gs_etcd_channels_destroy(t);
        return GS_ERROR;
    }
    pthread_mutex_lock(&t->mu);
    t->state = EC_RUNNING;
    pthread_mutex_unlock(&t->mu);
    /* Prove etcd answers (and accepts our credentials) before saying we are started. */
    int64_t rev = 0;
    uint64_t t0 = gs_etcd_now_ms();
    if (gs_etcd_revision_now(t, t->dial_timeout_ms, &rev, err) != GS_OK) {
        shut(t);
        return GS_ERROR;
    }
    pthread_mutex_lock(&t->mu);
    const char *url = t->eps[t->current].url;
    pthread_mutex_unlock(&t->mu);
    t->host->log(t->host, GS_LOG_INFO, EC_COMPONENT,
                 "connected to %s in %llu ms (revision %lld, key prefix '%s'%s)", url,
                 (unsigned long long)(gs_etcd_now_ms() - t0), (long long)rev, t->prefix,
                 t->username ? ", authenticated" : "");
    return GS_OK;
}

static void ec_stop(void *instance)
{
    ec_inst *t = instance;
    if (!t)
        return;
    if (gs_etcd_on_cq_thread(t)) {
        t->host->log(t->host, GS_LOG_ERROR, EC_COMPONENT,
                     "stop() called from a watch callback; refused (it would wait for itself). "
                     "Stop it from the core's main thread");
        return;
    }
    pthread_mutex_lock(&t->mu);
    ec_state st = t->state;
    pthread_mutex_unlock(&t->mu);
    if (st != EC_RUNNING)
        return;
    shut(t);
    t->host->log(t->host, GS_LOG_INFO, EC_COMPONENT, "stopped (endpoints %s)", t->endpoint_list);
}

/* ------------------------------------------------------------------------------------------ */
/* Argument checks (etcd's own limits, checked before anything is sent)                       */

static int same_key(const gs_op *a, const gs_op *b)
{
    return a->key_len == b->key_len && (!a->key_len || memcmp(a->key, b->key, a->key_len) == 0);
}

static gs_status check_ops(ec_inst *t, const char *branch, const gs_op *ops, size_t n,
                           gs_error *err)
{
    if (n && !ops)
        return EC_FAIL(t, err, "INTERNAL_ERROR",
                       "etcd coordinator: txn %s has %zu ops and no array", branch, n);
    if (n > EC_MAX_TXN_OPS)
        return EC_FAIL(t, err, "INTERNAL_ERROR",
                       "etcd coordinator: txn %s has %zu ops; etcd allows at most %d", branch, n,
                       EC_MAX_TXN_OPS);
    for (size_t i = 0; i < n; i++) {
        const gs_op *op = &ops[i];
        if (op->type != GS_OP_PUT && op->type != GS_OP_DELETE)
            return EC_FAIL(t, err, "INTERNAL_ERROR",
                           "etcd coordinator: txn %s op %zu has unknown type %d", branch, i,
                           (int)op->type);
        if ((op->key_len && !op->key) || (op->type == GS_OP_PUT && op->value_len && !op->value))
            return EC_FAIL(t, err, "INTERNAL_ERROR",
                           "etcd coordinator: txn %s op %zu has a length without bytes", branch, i);
        if (op->type == GS_OP_PUT && op->lease < 0)
            return EC_FAIL(t, err, "INTERNAL_ERROR",
                           "etcd coordinator: txn %s op %zu names lease %" PRId64, branch, i,
                           op->lease);
        for (size_t j = 0; j < i; j++)
            if (same_key(&ops[j], op))
                return EC_FAIL(t, err, "INTERNAL_ERROR",
                               "etcd coordinator: txn %s changes key '%.*s' twice (ops %zu and "
                               "%zu); etcd refuses that",
                               branch, (int)(op->key_len > 200 ? 200 : op->key_len),
                               (const char *)op->key, j, i);
    }
    return GS_OK;
}

static gs_status check_compares(ec_inst *t, const gs_compare *c, size_t n, gs_error *err)
{
    if (n && !c)
        return EC_FAIL(t, err, "INTERNAL_ERROR",
                       "etcd coordinator: txn has %zu compares and no array", n);
    if (n > EC_MAX_TXN_OPS)
        return EC_FAIL(t, err, "INTERNAL_ERROR",
                       "etcd coordinator: txn has %zu compares; etcd allows at most %d", n,
                       EC_MAX_TXN_OPS);
    for (size_t i = 0; i < n; i++) {
        if ((unsigned)c[i].target > GS_CMP_LEASE || (unsigned)c[i].result > GS_CMP_NOT_EQUAL)
            return EC_FAIL(t, err, "INTERNAL_ERROR",
                           "etcd coordinator: compare %zu has target %d / result %d, outside "
                           "the enums of coordinator.h",
                           i, (int)c[i].target, (int)c[i].result);
        if ((c[i].key_len && !c[i].key) ||
            (c[i].target == GS_CMP_VALUE && c[i].value_len && !c[i].value))
            return EC_FAIL(t, err, "INTERNAL_ERROR",
                           "etcd coordinator: compare %zu has a length without bytes", i);
    }
    return GS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* The store calls                                                                            */

static gs_status ec_range(void *instance, const uint8_t *key, size_t key_len, int prefix,
                          gs_kv_visit_fn visit, void *user, int64_t *revision, gs_error *err)
{
    ec_inst *t = instance;
    if (key_len && !key)
        return EC_FAIL(t, err, "INTERNAL_ERROR",
                       "etcd coordinator: range of %zu key bytes with no buffer", key_len);
    return gs_etcd_range(t, key, key_len, prefix, visit, user, revision, err);
}

static gs_status ec_txn(void *instance, const gs_compare *compares, size_t compare_count,
                        const gs_op *success, size_t success_count, const gs_op *failure,
                        size_t failure_count, int *succeeded, int64_t *revision, gs_error *err)
{
    ec_inst *t = instance;
    int dummy;
    if (check_compares(t, compares, compare_count, err) != GS_OK ||
        check_ops(t, "success", success, success_count, err) != GS_OK ||
        check_ops(t, "failure", failure, failure_count, err) != GS_OK)
        return GS_ERROR;
    return gs_etcd_txn(t, compares, compare_count, success, success_count, failure, failure_count,
                       succeeded ? succeeded : &dummy, revision, err);
}

static gs_status ec_lease_grant(void *instance, int64_t ttl_ms, int64_t *lease_id, gs_error *err)
{
    ec_inst *t = instance;
    if (!lease_id || ttl_ms < 1 || ttl_ms / 1000 > EC_MAX_TTL_S)
        return EC_FAIL(t, err, "INTERNAL_ERROR",
                       "etcd coordinator: lease_grant needs 1 <= ttl_ms <= %" PRId64
                       " s (got %" PRId64 " ms) and a place for the id",
                       EC_MAX_TTL_S, ttl_ms);
    return gs_etcd_lease_grant(t, ttl_ms, lease_id, err);
}

static gs_status ec_lease_keepalive(void *instance, int64_t lease_id, int64_t *ttl_ms_left,
                                    gs_error *err)
{
    ec_inst *t = instance;
    int64_t left = 0;
    gs_status rc = lease_id > 0 ? gs_etcd_lease_keepalive(t, lease_id, &left, err) : GS_DECLINED;
    if (ttl_ms_left)
        *ttl_ms_left = rc == GS_OK ? left : 0;
    return rc;
}

static gs_status ec_lease_revoke(void *instance, int64_t lease_id, gs_error *err)
{
    ec_inst *t = instance;
    if (lease_id <= 0)
        return GS_OK;
    return gs_etcd_lease_revoke(t, lease_id, err);
}

static gs_status ec_watch_call(void *instance, const uint8_t *prefix, size_t prefix_len,
                               int64_t start_revision, gs_watch_fn fn, void *user,
                               uint64_t *watch_id, gs_error *err)
{
    ec_inst *t = instance;
    if (!fn || !watch_id || (prefix_len && !prefix) || start_revision < 0)
        return EC_FAIL(t, err, "INTERNAL_ERROR",
                       "etcd coordinator: watch needs a callback, a place for the id, the "
                       "prefix bytes and start_revision >= 0");
    return gs_etcd_watch(t, prefix, prefix_len, start_revision, fn, user, watch_id, err);
}

static void ec_unwatch(void *instance, uint64_t watch_id)
{
    if (instance && watch_id)
        gs_etcd_unwatch(instance, watch_id);
}

/* ------------------------------------------------------------------------------------------ */
/* Descriptor                                                                                 */

static const gs_coordinator_vtable ec_vtable = {
    .struct_size = sizeof(gs_coordinator_vtable),
    .create = ec_create,
    .start = ec_start,
    .stop = ec_stop,
    .destroy = ec_destroy,
    .range = ec_range,
    .txn = ec_txn,
    .lease_grant = ec_lease_grant,
    .lease_keepalive = ec_lease_keepalive,
    .lease_revoke = ec_lease_revoke,
    .watch = ec_watch_call,
    .unwatch = ec_unwatch,
};

static const gs_plugin_descriptor ec_descriptor = {
    .struct_size = sizeof(gs_plugin_descriptor),
    .abi_major = GS_ABI_MAJOR,
    .abi_minor = GS_ABI_MINOR,
    .kind = GS_KIND_COORDINATOR,
    .name = "etcd",
    .version = "0.1.0",
    .build_signature = GS_BUILD_SIGNATURE,
    .vtable = &ec_vtable,
    .config_keys = ec_keys,
    .config_key_count = EC_KEY_COUNT,
    .config_key_size = sizeof(gs_config_key),
    .config_struct_size = sizeof(gs_etcd_config),
    .description = "etcd v3 coordinator over gRPC: linearisable reads, transactions, leases "
                   "and watches under a key prefix, with TLS, client certificates and "
                   "username/password",
};

GS_PLUGIN_DEFINE(ec_descriptor)
