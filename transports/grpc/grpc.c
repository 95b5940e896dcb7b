/*
 * grpc: the interoperable replication transport (spec 04 "gRPC Wire Protocol (Normative)").
 * The core's typed messages travel as the gRPC messages of sirannon.replication.v1.Replication:
 * type 1 on the Replicate stream, type 2 on the Sync stream, type 3 as a Forward request and
 * type 4 as its response (matched by call id). The transport adds and consumes the Hello that
 * opens every stream and serves grpc.health.v1.Health/Check.
 *
 * What it does: create() copies and checks the config and reads the TLS files; start() starts
 * the completion-queue thread, the server (on a primary, in coordinator mode, or whenever
 * `port` is set) and a channel to every configured peer; send() queues bytes on the peer's
 * stream (never blocking: GS_AGAIN past max_queue_bytes); stop() drains as README.md says.
 * The server is in server.c, the client side in client.c, calls and queues in calls.c, the
 * thread in cq.c, protobuf in wire.c, TLS in tls.c; this file is the plugin and its lifecycle.
 *
 * Ownership: the instance copies its config and node id at create() and the events at start().
 * Bytes passed to send() are copied before it returns.
 *
 * Threads: create/start/stop/destroy on the core's main thread (never from an event callback);
 * send from any thread. Events arrive on the instance's completion-queue thread, one at a time.
 */
#include "grpc_internal.h"

#include <grpc/support/time.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define GC_FAIL(t, err, code, ...) ((t)->host->error_set((err), 0, (code), __VA_ARGS__), GS_ERROR)
#define GC_DAY_MS INT64_C(86400000)
#define GC_MAX_MESSAGE INT64_C(1073741824)
#define GC_MAX_QUEUE INT64_C(1099511627776)
#define GC_STOP_LOG_EVERY_MS 5000

/* ------------------------------------------------------------------------------------------ */
/* Config keys                                                                                */

#define GC_INT_KEY(key, def, field, lo, hi, text)                                                  \
    {                                                                                              \
        .name = (key), .type = GS_CFG_INT, .default_value = (def),                                 \
        .offset = offsetof(gc_config, field), .help = (text), .min = (lo), .max = (hi)             \
    }
#define GC_STR_KEY(key, def, field, text)                                                          \
    {                                                                                              \
        .name = (key), .type = GS_CFG_STRING, .default_value = (def),                              \
        .offset = offsetof(gc_config, field), .help = (text)                                       \
    }

static const gs_config_key gc_peer_keys[] = {
    {.name = "id",
     .type = GS_CFG_STRING,
     .required = 1,
     .offset = offsetof(gc_peer_config, id),
     .help = "the peer's node id (its Hello, and its certificate CN with TLS, must match)"},
    {.name = "address",
     .type = GS_CFG_STRING,
     .required = 1,
     .offset = offsetof(gc_peer_config, address),
     .help = "host:port of the peer's gRPC server, e.g. 127.0.0.1:9891"},
    {.name = "server_name",
     .type = GS_CFG_STRING,
     .offset = offsetof(gc_peer_config, server_name),
     .help = "TLS: the name to verify in the peer's certificate instead of the address's host"},
};

static const gs_config_key gc_keys[] = {
    GC_STR_KEY("host", "0.0.0.0", host, "listening address of the gRPC server"),
    GC_INT_KEY("port", "-1", port, -1, 65535,
               "listening port; 0 = OS-assigned (logged). -1 (default): listen only as primary "
               "or in coordinator mode, on an OS-assigned port"),
    GC_STR_KEY("tls_cert", NULL, tls_cert, "PEM certificate chain (required unless insecure)"),
    GC_STR_KEY("tls_key", NULL, tls_key, "PEM private key (required unless insecure)"),
    GC_STR_KEY("tls_ca_cert", NULL, tls_ca_cert,
               "PEM CA: when set, client certificates are required and verified and their CN "
               "must equal the node id of their Hello; clients verify servers against it"),
    {.name = "insecure",
     .type = GS_CFG_BOOL,
     .default_value = "false",
     .offset = offsetof(gc_config, insecure),
     .help = "no TLS and no authentication (local development and tests only)"},
    GC_INT_KEY("forward_deadline_ms", "30000", forward_deadline_ms, 1, GC_DAY_MS,
               "deadline of a Forward call (client) and of the core's answer to one (server)"),
    {.name = "peers",
     .type = GS_CFG_LIST,
     .offset = offsetof(gc_config, peers),
     .help = "nodes this node connects to: {id, address, server_name}",
     .children = gc_peer_keys,
     .child_count = sizeof gc_peer_keys / sizeof gc_peer_keys[0],
     .child_struct_size = sizeof(gc_peer_config)},
    GC_INT_KEY("reconnect_min_ms", "100", reconnect_min_ms, 1, GC_DAY_MS,
               "first redial delay after a lost or failed link (doubles each failure)"),
    GC_INT_KEY("reconnect_max_ms", "5000", reconnect_max_ms, 1, GC_DAY_MS, "longest redial delay"),
    GC_INT_KEY("max_queue_bytes", "67108864", max_queue_bytes, 1, GC_MAX_QUEUE,
               "bytes queued for one stream before send() returns GS_AGAIN"),
    GC_INT_KEY("max_message_bytes", "67108864", max_message_bytes, 1, GC_MAX_MESSAGE,
               "largest message sent or received"),
    GC_INT_KEY("keepalive_ms", "20000", keepalive_ms, 0, GC_DAY_MS,
               "client keepalive ping interval on an idle link (0 = off)"),
    GC_INT_KEY("keepalive_timeout_ms", "10000", keepalive_timeout_ms, 1, GC_DAY_MS,
               "a keepalive ping unanswered this long drops the link"),
    GC_INT_KEY("hello_timeout_ms", "10000", hello_timeout_ms, 1, GC_DAY_MS,
               "a dialled server that answers neither Hello within this long (nor ends the "
               "streams) is dropped and dialled again"),
};

#define GC_KEY_COUNT (sizeof gc_keys / sizeof gc_keys[0])

static void config_defaults(gc_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->host = "0.0.0.0";
    cfg->port = -1;
    cfg->forward_deadline_ms = 30000;
    cfg->reconnect_min_ms = 100;
    cfg->reconnect_max_ms = 5000;
    cfg->max_queue_bytes = 67108864;
    cfg->max_message_bytes = 67108864;
    cfg->keepalive_ms = 20000;
    cfg->keepalive_timeout_ms = 10000;
    cfg->hello_timeout_ms = 10000;
}

/* ------------------------------------------------------------------------------------------ */
/* Helpers shared by the other files                                                          */

uint64_t gs_gc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

char *gs_gc_strdup(const gs_host *host, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *p = host->alloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

int gs_gc_peer_up(const gc_peer *p)
{
    return (p->cli_repl && p->cli_repl->live) || (p->srv_repl && p->srv_repl->live);
}

gc_peer *gs_gc_peer_get(gc_inst *t, const char *id, int create)
{
    for (gc_peer *p = t->peers; p; p = p->next)
        if (strcmp(p->id, id) == 0)
            return p;
    if (!create)
        return NULL;
    gc_peer *p = t->host->alloc(sizeof *p);
    if (!p)
        return NULL;
    memset(p, 0, sizeof *p);
    if (!(p->id = gs_gc_strdup(t->host, id))) {
        t->host->free(p);
        return NULL;
    }
    p->next = t->peers;
    t->peers = p;
    return p;
}

void gs_gc_peer_sync_state(gc_inst *t, gc_peer *p, gc_outbox *ob)
{
    int up = gs_gc_peer_up(p);
    if (up == p->reported_up)
        return;
    p->reported_up = up;
    gs_gc_outbox_peer(t, ob, p->id, up);
}

/* ------------------------------------------------------------------------------------------ */
/* Create and destroy                                                                         */

static const char *id_problem(const char *id)
{
    if (!id || !*id)
        return "it is empty";
    if (strlen(id) > GC_ID_MAX)
        return "it is longer than 255 bytes";
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return "it holds whitespace or a control character";
    return NULL;
}

static gs_status check_config(const gs_host *host, const gc_config *cfg, const char *node_id,
                              gs_error *err)
{
    gc_inst fake = {.host = host};
    gc_inst *t = &fake;
    const char *why = id_problem(node_id);
    if (why)
        return GC_FAIL(t, err, "INVALID_CONFIG", "grpc transport: node id '%s' cannot be used: %s",
                       node_id ? node_id : "", why);
    if (!cfg->host || !*cfg->host)
        return GC_FAIL(t, err, "INVALID_CONFIG",
                       "grpc transport: 'host' is empty; use 0.0.0.0, 127.0.0.1 or an address "
                       "of this machine");
    if (cfg->port < -1 || cfg->port > 65535)
        return GC_FAIL(t, err, "INVALID_CONFIG",
                       "grpc transport: port %" PRId64 " is outside -1..65535", cfg->port);
    if (cfg->reconnect_min_ms < 1 || cfg->reconnect_max_ms < cfg->reconnect_min_ms)
        return GC_FAIL(t, err, "INVALID_CONFIG",
                       "grpc transport: reconnect_min_ms (%" PRId64
                       ") must be >= 1 and <= reconnect_max_ms (%" PRId64 ")",
                       cfg->reconnect_min_ms, cfg->reconnect_max_ms);
    if (cfg->forward_deadline_ms < 1 || cfg->max_queue_bytes < 1 || cfg->max_message_bytes < 1 ||
        cfg->max_message_bytes > GC_MAX_MESSAGE || cfg->keepalive_ms < 0 ||
        cfg->keepalive_timeout_ms < 1 || cfg->hello_timeout_ms < 1)
        return GC_FAIL(t, err, "INVALID_CONFIG",
                       "grpc transport: forward_deadline_ms, max_queue_bytes, "
                       "max_message_bytes (<= 1 GiB), keepalive_timeout_ms and hello_timeout_ms "
                       "must be positive, keepalive_ms >= 0");
    if (!cfg->insecure && (!cfg->tls_cert || !cfg->tls_key))
        return GC_FAIL(t, err, "INVALID_CONFIG",
                       "grpc transport: TLS is on by default and needs tls_cert and tls_key "
                       "(PEM files); set insecure: true only for local development");
    const gc_peer_config *peers = cfg->peers.items;
    if (cfg->peers.count && !peers)
        return GC_FAIL(t, err, "INVALID_CONFIG", "grpc transport: 'peers' has no items");
    for (size_t i = 0; i < cfg->peers.count; i++) {
        why = id_problem(peers[i].id);
        if (why)
            return GC_FAIL(t, err, "INVALID_CONFIG",
                           "grpc transport: peers[%zu].id '%s' is not a node id: %s", i,
                           peers[i].id ? peers[i].id : "", why);
        if (strcmp(peers[i].id, node_id) == 0)
            return GC_FAIL(t, err, "INVALID_CONFIG",
                           "grpc transport: peers[%zu] is this node itself ('%s')", i, node_id);
        if (!peers[i].address || !*peers[i].address)
            return GC_FAIL(t, err, "INVALID_CONFIG",
                           "grpc transport: peers[%zu] ('%s') needs an address (host:port)", i,
                           peers[i].id);
        for (size_t j = 0; j < i; j++)
            if (strcmp(peers[j].id, peers[i].id) == 0)
                return GC_FAIL(t, err, "INVALID_CONFIG",
                               "grpc transport: peers[%zu] and peers[%zu] are both '%s'", j, i,
                               peers[i].id);
    }
    return GS_OK;
}

static void free_peer(gc_inst *t, gc_peer *p)
{
    const gs_host *host = t->host;
    host->free(p->id);
    host->free(p->address);
    host->free(p->server_name);
    host->free(p);
}

static void free_instance(gc_inst *t)
{
    const gs_host *host = t->host;
    while (t->peers) {
        gc_peer *p = t->peers;
        t->peers = p->next;
        free_peer(t, p);
    }
    host->free(t->node_id);
    host->free(t->bind_host);
    host->free(t->cert_path);
    host->free(t->key_path);
    host->free(t->ca_path);
    host->free(t->cert_pem);
    host->free(t->key_pem);
    host->free(t->ca_pem);
    host->free(t->group_id);
    host->free(t->protocol_version);
    if (t->grpc_inited)
        grpc_shutdown();
    host->free(t);
}

static gs_status gc_create(const gs_host *host, const void *config, const char *local_node_id,
                           void **instance, gs_error *err)
{
    *instance = NULL;
    gc_config defaults;
    const gc_config *cfg = config;
    if (!cfg) {
        config_defaults(&defaults);
        cfg = &defaults;
    }
    if (check_config(host, cfg, local_node_id, err) != GS_OK)
        return GS_ERROR;
    gc_inst *t = host->alloc(sizeof *t);
    if (!t) {
        host->error_set(err, 0, "INTERNAL_ERROR", "out of memory creating the grpc transport");
        return GS_ERROR;
    }
    memset(t, 0, sizeof *t);
    t->host = host;
    t->port_cfg = cfg->port;
    t->insecure = cfg->insecure;
    t->forward_deadline_ms = (uint64_t)cfg->forward_deadline_ms;
    t->reconnect_min_ms = (uint64_t)cfg->reconnect_min_ms;
    t->reconnect_max_ms = (uint64_t)cfg->reconnect_max_ms;
    t->max_queue_bytes = (uint64_t)cfg->max_queue_bytes;
    t->max_message_bytes = (uint64_t)cfg->max_message_bytes;
    t->keepalive_ms = cfg->keepalive_ms;
    t->keepalive_timeout_ms = cfg->keepalive_timeout_ms;
    t->hello_timeout_ms = (uint64_t)cfg->hello_timeout_ms;
    int ok = (t->node_id = gs_gc_strdup(host, local_node_id)) &&
             (t->bind_host = gs_gc_strdup(host, cfg->host));
    if (ok && !t->insecure) {
        ok = (t->cert_path = gs_gc_strdup(host, cfg->tls_cert)) &&
             (t->key_path = gs_gc_strdup(host, cfg->tls_key)) &&
             (!cfg->tls_ca_cert || (t->ca_path = gs_gc_strdup(host, cfg->tls_ca_cert)));
    }
    const gc_peer_config *pc = cfg->peers.items;
    /* Reverse order of insertion keeps the config order in the list. */
    for (size_t i = cfg->peers.count; ok && i-- > 0;) {
        gc_peer *p = gs_gc_peer_get(t, pc[i].id, 1);
        ok = p && (p->address = gs_gc_strdup(host, pc[i].address)) &&
             (!pc[i].server_name || (p->server_name = gs_gc_strdup(host, pc[i].server_name)));
        if (p)
            p->configured = 1;
    }
    if (!ok) {
        free_instance(t);
        host->error_set(err, 0, "INTERNAL_ERROR", "out of memory creating the grpc transport");
        return GS_ERROR;
    }
    if (gs_gc_tls_load(t, err) != GS_OK) {
        free_instance(t);
        return GS_ERROR;
    }
    pthread_condattr_t ca;
    int lock_ok = pthread_mutex_init(&t->mu, NULL) == 0;
    if (lock_ok) {
        int cond_ok = pthread_condattr_init(&ca) == 0;
        if (cond_ok) {
            pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
            cond_ok = pthread_cond_init(&t->cond, &ca) == 0;
            pthread_condattr_destroy(&ca);
        }
        if (!cond_ok) {
            pthread_mutex_destroy(&t->mu);
            lock_ok = 0;
        }
    }
    if (!lock_ok) {
        free_instance(t);
        host->error_set(err, 0, "INTERNAL_ERROR", "cannot create the grpc transport's lock");
        return GS_ERROR;
    }
    grpc_init();
    t->grpc_inited = 1;
    *instance = t;
    return GS_OK;
}

static void gc_stop(void *instance);

static void gc_destroy(void *instance)
{
    gc_inst *t = instance;
    if (!t)
        return;
    if (t->thread_live && pthread_equal(pthread_self(), t->thread)) {
        t->host->log(t->host, GS_LOG_ERROR, GC_COMPONENT,
                     "node '%s': destroy() called from its own event callback; the instance is "
                     "leaked. Destroy it from the core's main thread",
                     t->node_id);
        return;
    }
    gc_stop(t);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->mu);
    free_instance(t);
}

/* ------------------------------------------------------------------------------------------ */
/* Start and stop                                                                             */

static void teardown(gc_inst *t);

static gs_status gc_start(void *instance, const gs_repl_events *events, gs_error *err)
{
    gc_inst *t = instance;
    if (!events ||
        events->struct_size < offsetof(gs_repl_events, on_message) + sizeof(events->on_message) ||
        !events->on_message)
        return GC_FAIL(t, err, "INTERNAL_ERROR",
                       "grpc transport '%s': start() needs events with on_message", t->node_id);
    pthread_mutex_lock(&t->mu);
    gc_state st = t->state;
    pthread_mutex_unlock(&t->mu);
    if (st != GC_IDLE)
        return GC_FAIL(t, err, "INTERNAL_ERROR", "grpc transport '%s' is already started",
                       t->node_id);

    memset(&t->events, 0, sizeof t->events);
    size_t n = events->struct_size < sizeof t->events ? events->struct_size : sizeof t->events;
    memcpy(&t->events, events, n);
    t->events.struct_size = sizeof t->events;
    const char *role = NULL, *group = NULL, *version = NULL;
    int64_t term = 0;
    if (GS_HAS_MEMBER(gs_repl_events, protocol_version, events->struct_size)) {
        role = events->local_role;
        group = events->group_id;
        term = events->primary_term;
        version = events->protocol_version;
    }
    int any_configured = 0;
    for (gc_peer *p = t->peers; p; p = p->next)
        any_configured |= p->configured;
    if (!role || (strcmp(role, "primary") != 0 && strcmp(role, "replica") != 0))
        role = any_configured ? "replica" : "primary";
    snprintf(t->role, sizeof t->role, "%s", role);
    t->host->free(t->group_id);
    t->host->free(t->protocol_version);
    t->group_id = group && *group ? gs_gc_strdup(t->host, group) : NULL;
    t->protocol_version = gs_gc_strdup(t->host, version ? version : "");
    t->primary_term = term;
    if ((group && *group && !t->group_id) || !t->protocol_version)
        return GC_FAIL(t, err, "INTERNAL_ERROR", "out of memory starting the grpc transport");

    t->cq = grpc_completion_queue_create_for_next(NULL);
    if (!t->cq)
        return GC_FAIL(t, err, "TRANSPORT_ERROR", "grpc transport: no completion queue");
    t->shutdown_tag = (gc_tag){NULL, GC_OP_SHUTDOWN};
    t->server_shutdown_done = 0;
    t->pending_fwds = 0;
    int run_server = strcmp(t->role, "primary") == 0 || t->group_id || t->port_cfg >= 0;
    pthread_mutex_lock(&t->mu);
    t->state = GC_RUNNING;
    gs_status rc = run_server ? gs_gc_server_start(t, err) : GS_OK;
    if (rc == GS_OK)
        rc = gs_gc_client_start(t, err);
    pthread_mutex_unlock(&t->mu);
    if (rc == GS_OK)
        rc = gs_gc_cq_thread_start(t, err);
    if (rc != GS_OK) {
        teardown(t);
        return GS_ERROR;
    }
    t->host->log(t->host, GS_LOG_INFO, GC_COMPONENT, "node '%s' started as %s (%s, %s)", t->node_id,
                 t->role, t->server ? "serving" : "not serving",
                 any_configured ? "dialling its peers" : "no peers to dial");
    return GS_OK;
}

static int is_stream(const gc_call *c)
{
    return c->kind == GC_SRV_REPLICATE || c->kind == GC_SRV_SYNC || c->kind == GC_CLI_REPLICATE ||
           c->kind == GC_CLI_SYNC || c->kind == GC_CLI_FORWARD;
}

/* Wait on t->cond until *done holds, logging every few seconds what is awaited. mu held. */
static void wait_for(gc_inst *t, int (*done)(gc_inst *), const char *what)
{
    uint64_t next_log = gs_gc_now_ms() + GC_STOP_LOG_EVERY_MS;
    while (!done(t)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 200 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&t->cond, &t->mu, &ts);
        if (!done(t) && gs_gc_now_ms() >= next_log) {
            next_log = gs_gc_now_ms() + GC_STOP_LOG_EVERY_MS;
            t->host->log(t->host, GS_LOG_WARN, GC_COMPONENT, "node '%s': stop() still waits for %s",
                         t->node_id, what);
        }
    }
}

static int forwards_done(gc_inst *t)
{
    return t->pending_fwds == 0;
}

static int calls_done(gc_inst *t)
{
    return (!t->server || t->server_shutdown_done) && t->ncalls == 0;
}

/* Everything after the streams were ended: server shutdown, release of every call, the queue
 * shut down and drained by the thread, then the gRPC objects destroyed. */
static void teardown(gc_inst *t)
{
    pthread_mutex_lock(&t->mu);
    t->state = GC_STOPPING;
    for (gc_call *c = t->calls; c; c = c->next)
        if (is_stream(c))
            gs_gc_call_end(c, GRPC_STATUS_UNAVAILABLE, "the node is stopping", NULL);
    for (gc_peer *p = t->peers; p; p = p->next)
        p->redial_at = 0;
    if (t->thread_live)
        wait_for(t, forwards_done, "Forward calls to be answered (bounded by their deadline)");
    if (t->server) {
        grpc_server_shutdown_and_notify(t->server, t->cq, &t->shutdown_tag);
        grpc_server_cancel_all_calls(t->server);
    }
    int thread = t->thread_live;
    if (thread)
        wait_for(t, calls_done, "gRPC to release its calls");
    pthread_mutex_unlock(&t->mu);
    if (t->cq) {
        grpc_completion_queue_shutdown(t->cq);
        if (thread) {
            pthread_join(t->thread, NULL);
            t->thread_live = 0;
        } else {
            /* start() failed before the thread ran: drain here. */
            for (;;) {
                grpc_event ev =
                    grpc_completion_queue_next(t->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
                if (ev.type == GRPC_QUEUE_SHUTDOWN)
                    break;
                gc_tag *tag = ev.tag;
                if (ev.type == GRPC_OP_COMPLETE && tag != &t->shutdown_tag && tag->call) {
                    pthread_mutex_lock(&t->mu);
                    tag->call->ops--;
                    tag->call->finished = 1;
                    gs_gc_call_maybe_free(tag->call);
                    pthread_mutex_unlock(&t->mu);
                }
            }
        }
    }
    pthread_mutex_lock(&t->mu);
    gs_gc_outbox_flush(t, &t->deferred, 0);
    /* Calls that never had a batch (start failures) are finished with nothing outstanding. */
    while (t->calls) {
        gc_call *c = t->calls;
        c->finished = 1;
        c->ops = 0;
        gs_gc_call_maybe_free(c);
    }
    for (gc_peer **pp = &t->peers; *pp;) {
        gc_peer *p = *pp;
        if (p->channel)
            grpc_channel_destroy(p->channel);
        p->channel = NULL;
        p->cli_repl = p->cli_sync = p->srv_repl = p->srv_sync = NULL;
        p->reported_up = 0;
        p->redial_at = 0;
        if (!p->configured) {
            *pp = p->next;
            free_peer(t, p);
        } else {
            pp = &p->next;
        }
    }
    if (t->server)
        grpc_server_destroy(t->server);
    t->server = NULL;
    if (t->cq)
        grpc_completion_queue_destroy(t->cq);
    t->cq = NULL;
    t->bound_port = 0;
    t->state = GC_IDLE;
    pthread_mutex_unlock(&t->mu);
}

static void gc_stop(void *instance)
{
    gc_inst *t = instance;
    if (!t)
        return;
    if (t->thread_live && pthread_equal(pthread_self(), t->thread)) {
        t->host->log(t->host, GS_LOG_ERROR, GC_COMPONENT,
                     "node '%s': stop() called from its own event callback; refused (it would "
                     "wait for itself). Stop it from the core's main thread",
                     t->node_id);
        return;
    }
    pthread_mutex_lock(&t->mu);
    gc_state st = t->state;
    pthread_mutex_unlock(&t->mu);
    if (st != GC_RUNNING)
        return;
    uint64_t t0 = gs_gc_now_ms();
    teardown(t);
    t->host->log(t->host, GS_LOG_INFO, GC_COMPONENT, "node '%s' stopped in %llu ms", t->node_id,
                 (unsigned long long)(gs_gc_now_ms() - t0));
}

/* ------------------------------------------------------------------------------------------ */
/* Send                                                                                       */

static gs_status gc_send(void *instance, const char *to_node_id, gs_repl_msg_type type,
                         uint64_t call_id, const uint8_t *bytes, size_t len, gs_error *err)
{
    gc_inst *t = instance;
    if (!to_node_id)
        return GC_FAIL(t, err, "TRANSPORT_ERROR", "send() needs a peer node id");
    if (len && !bytes)
        return GC_FAIL(t, err, "TRANSPORT_ERROR", "send() of %zu bytes with no buffer", len);
    if (type < GS_REPL_MSG_REPLICATION || type > GS_REPL_MSG_FORWARD_RESPONSE)
        return GC_FAIL(t, err, "TRANSPORT_ERROR",
                       "unknown replication message type %d (expected 1..4)", (int)type);
    if (len > t->max_message_bytes)
        return GC_FAIL(t, err, "TRANSPORT_ERROR",
                       "a %zu-byte message to %s is over max_message_bytes (%llu)", len, to_node_id,
                       (unsigned long long)t->max_message_bytes);
    static const uint8_t empty[1] = {0};
    if (!bytes)
        bytes = empty;
    pthread_mutex_lock(&t->mu);
    gs_status rc;
    gc_peer *p = gs_gc_peer_get(t, to_node_id, 0);
    if (type == GS_REPL_MSG_FORWARD_RESPONSE && t->state != GC_IDLE) {
        /* Answers are taken while stopping too: stop() waits for them. */
        rc = gs_gc_server_answer(t, to_node_id, call_id, bytes, len, err);
    } else if (t->state != GC_RUNNING) {
        rc = GC_FAIL(t, err, "TRANSPORT_ERROR",
                     "the grpc transport of '%s' is not started (or is stopping)", t->node_id);
    } else if (!p) {
        rc = GC_FAIL(t, err, "TRANSPORT_ERROR",
                     "%s is not connected (no stream of that node id is open)", to_node_id);
    } else if (type == GS_REPL_MSG_FORWARD_REQUEST) {
        rc = gs_gc_client_forward(t, p, call_id, bytes, len, err);
    } else {
        gc_call *c = NULL;
        if (type == GS_REPL_MSG_REPLICATION)
            c = p->cli_repl && p->cli_repl->live   ? p->cli_repl
                : p->srv_repl && p->srv_repl->live ? p->srv_repl
                                                   : NULL;
        else
            c = p->cli_sync && !p->cli_sync->finished ? p->cli_sync
                : p->srv_sync && p->srv_sync->live    ? p->srv_sync
                                                      : NULL;
        if (!c)
            rc = GC_FAIL(t, err, "TRANSPORT_ERROR", "%s has no live %s stream", to_node_id,
                         type == GS_REPL_MSG_REPLICATION ? "Replicate" : "Sync");
        else
            rc = gs_gc_call_write(c, bytes, len, err);
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Descriptor                                                                                 */

static const gs_repl_transport_vtable gc_vtable = {
    .struct_size = sizeof(gs_repl_transport_vtable),
    .create = gc_create,
    .start = gc_start,
    .send = gc_send,
    .stop = gc_stop,
    .destroy = gc_destroy,
};

static const gs_plugin_descriptor gc_descriptor = {
    .struct_size = sizeof(gs_plugin_descriptor),
    .abi_major = GS_ABI_MAJOR,
    .abi_minor = GS_ABI_MINOR,
    .kind = GS_KIND_REPL_TRANSPORT,
    .name = "grpc",
    .version = "0.1.0",
    .build_signature = GS_BUILD_SIGNATURE,
    .vtable = &gc_vtable,
    .config_keys = gc_keys,
    .config_key_count = GC_KEY_COUNT,
    .config_key_size = sizeof(gs_config_key),
    .config_struct_size = sizeof(gc_config),
    .description = "gRPC replication transport (spec 04 wire protocol): Replicate and Sync "
                   "streams, Forward, health, mutual TLS",
};

GS_PLUGIN_DEFINE(gc_descriptor)
