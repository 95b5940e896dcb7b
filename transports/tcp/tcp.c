/*
 * tcp: the lean replication transport. The core's replication messages travel as
 * length-prefixed frames (frame.h) over TCP, protected by TLS 1.3 with mutual
 * authentication (gnutls), one connection per peer, with hellos, heartbeats, a frame size
 * limit and reconnects with exponential backoff. README.md has the wire format, the keys,
 * the threads and the limits.
 *
 * This file is the plugin: the config key table and its checks, create/start/stop/destroy
 * and send. The connection machinery is in conn.c, the I/O thread in loop.c, sockets in
 * net.c, TLS in tls.c.
 *
 * Ownership: create() copies the config and the node id; start() copies the events and the
 * strings they point to. send() copies the bytes before it returns.
 *
 * Threads: create/start/stop/destroy on the core's main thread (never from this transport's
 * callbacks); send from any thread, never blocking on the network (a bounded queue per
 * peer). Callbacks arrive on the instance's I/O thread, one at a time.
 */
#include "tcp_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TCP_FAIL(host, err, code, ...) ((host)->error_set((err), 0, (code), __VA_ARGS__), GS_ERROR)

/* ------------------------------------------------------------------------------------------ */
/* Config keys                                                                                */

#define TCP_INT_KEY(key, def, field, lo, hi, text)                                                 \
    {                                                                                              \
        .name = (key), .type = GS_CFG_INT, .default_value = (def),                                 \
        .offset = offsetof(gs_tcp_config, field), .help = (text), .min = (lo), .max = (hi)         \
    }
#define TCP_STR_KEY(key, def, field, text)                                                         \
    {                                                                                              \
        .name = (key), .type = GS_CFG_STRING, .default_value = (def),                              \
        .offset = offsetof(gs_tcp_config, field), .help = (text)                                   \
    }

#define TCP_MAX_MS 3600000
#define TCP_MAX_QUEUE_BYTES INT64_C(1099511627776)

static const gs_config_key tcp_peer_keys[] = {
    {.name = "id",
     .type = GS_CFG_STRING,
     .required = 1,
     .offset = offsetof(gs_tcp_peer_config, id),
     .help = "the peer's node id (with TLS, its certificate's CN)"},
    {.name = "address",
     .type = GS_CFG_STRING,
     .required = 1,
     .offset = offsetof(gs_tcp_peer_config, address),
     .help = "host:port (or [ipv6]:port) the peer listens on"},
};

static const gs_config_key tcp_keys[] = {
    TCP_STR_KEY("host", "0.0.0.0", host, "listen address"),
    TCP_INT_KEY("port", "0", port, 0, 65535,
                "listen port; 0 = OS-assigned (logged). The primary always listens, any node "
                "listens when port is set"),
    TCP_STR_KEY("tls_cert", NULL, tls_cert,
                "PEM certificate of this node, CN = node.id (required unless insecure)"),
    TCP_STR_KEY("tls_key", NULL, tls_key, "PEM private key of tls_cert (required unless insecure)"),
    TCP_STR_KEY("tls_ca_cert", NULL, tls_ca_cert,
                "PEM CA that signs every node's certificate; peers are verified against it "
                "(required unless insecure)"),
    {.name = "insecure",
     .type = GS_CFG_BOOL,
     .default_value = "false",
     .offset = offsetof(gs_tcp_config, insecure),
     .help = "true = plaintext with no authentication (development only)"},
    {.name = "peers",
     .type = GS_CFG_LIST,
     .offset = offsetof(gs_tcp_config, peers),
     .help = "nodes this node dials: {id, address}; replicas list the primary",
     .children = tcp_peer_keys,
     .child_count = sizeof tcp_peer_keys / sizeof tcp_peer_keys[0],
     .child_struct_size = sizeof(gs_tcp_peer_config)},
    TCP_INT_KEY("heartbeat_ms", "1000", heartbeat_ms, 10, TCP_MAX_MS,
                "heartbeat period; a peer silent for 3 periods is dropped"),
    TCP_INT_KEY("reconnect_min_ms", "100", reconnect_min_ms, 1, TCP_MAX_MS,
                "first wait before redialling a peer"),
    TCP_INT_KEY("reconnect_max_ms", "5000", reconnect_max_ms, 1, TCP_MAX_MS,
                "longest wait between redials (the wait doubles up to it)"),
    TCP_INT_KEY("max_queue_bytes", "67108864", max_queue_bytes, 1024, TCP_MAX_QUEUE_BYTES,
                "bytes queued to one peer and not yet written; a send past it gets GS_AGAIN"),
    TCP_INT_KEY("max_frame_bytes", "67108864", max_frame_bytes, GS_TCP_FRAME_LIMIT_MIN,
                GS_TCP_FRAME_LIMIT_MAX,
                "largest frame accepted or sent (length field); a larger one closes the "
                "connection"),
};

#define TCP_KEY_COUNT (sizeof tcp_keys / sizeof tcp_keys[0])

static void config_defaults(gs_tcp_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->host = "0.0.0.0";
    cfg->heartbeat_ms = 1000;
    cfg->reconnect_min_ms = 100;
    cfg->reconnect_max_ms = 5000;
    cfg->max_queue_bytes = 67108864;
    cfg->max_frame_bytes = 67108864;
}

static gs_status check_range(const gs_host *host, gs_error *err, const char *key, int64_t v,
                             int64_t lo, int64_t hi)
{
    if (v < lo || v > hi)
        return TCP_FAIL(host, err, "INVALID_CONFIG",
                        "tcp transport: %s = %" PRId64 " is outside %" PRId64 "..%" PRId64, key, v,
                        lo, hi);
    return GS_OK;
}

static gs_status check_config(const gs_host *host, const gs_tcp_config *cfg, const char *node_id,
                              gs_error *err)
{
    if (!node_id || !gs_tcp_node_id_ok(node_id, strlen(node_id)))
        return TCP_FAIL(host, err, "INVALID_CONFIG",
                        "tcp transport: node id '%s' cannot be used: it must be 1..255 bytes "
                        "with no spaces or control characters",
                        node_id ? node_id : "");
    if (!cfg->host || !*cfg->host || strlen(cfg->host) > 255)
        return TCP_FAIL(host, err, "INVALID_CONFIG",
                        "tcp transport: 'host' must name the listen address (default 0.0.0.0)");
    if (check_range(host, err, "port", cfg->port, 0, 65535) ||
        check_range(host, err, "heartbeat_ms", cfg->heartbeat_ms, 10, TCP_MAX_MS) ||
        check_range(host, err, "reconnect_min_ms", cfg->reconnect_min_ms, 1, TCP_MAX_MS) ||
        check_range(host, err, "reconnect_max_ms", cfg->reconnect_max_ms, 1, TCP_MAX_MS) ||
        check_range(host, err, "max_queue_bytes", cfg->max_queue_bytes, 1024,
                    TCP_MAX_QUEUE_BYTES) ||
        check_range(host, err, "max_frame_bytes", cfg->max_frame_bytes, GS_TCP_FRAME_LIMIT_MIN,
                    GS_TCP_FRAME_LIMIT_MAX))
        return GS_ERROR;
    if (cfg->reconnect_min_ms > cfg->reconnect_max_ms)
        return TCP_FAIL(host, err, "INVALID_CONFIG",
                        "tcp transport: reconnect_min_ms (%" PRId64
                        ") is above reconnect_max_ms (%" PRId64 ")",
                        cfg->reconnect_min_ms, cfg->reconnect_max_ms);
    if (!cfg->insecure) {
        const struct {
            const char *key, *v;
        } files[] = {{"tls_cert", cfg->tls_cert},
                     {"tls_key", cfg->tls_key},
                     {"tls_ca_cert", cfg->tls_ca_cert}};
        for (size_t i = 0; i < 3; i++)
            if (!files[i].v || !*files[i].v)
                return TCP_FAIL(host, err, "INVALID_CONFIG",
                                "tcp transport: %s is not set; TLS with mutual authentication "
                                "needs tls_cert, tls_key and tls_ca_cert (or set insecure: true "
                                "for plaintext, development only)",
                                files[i].key);
    }
    if (cfg->peers.count && !cfg->peers.items)
        return TCP_FAIL(host, err, "INVALID_CONFIG", "tcp transport: 'peers' has no items");
    const gs_tcp_peer_config *ps = cfg->peers.items;
    for (size_t i = 0; i < cfg->peers.count; i++) {
        char h[256], p[8], why[256];
        if (!ps[i].id || !gs_tcp_node_id_ok(ps[i].id, strlen(ps[i].id)))
            return TCP_FAIL(host, err, "INVALID_CONFIG",
                            "tcp transport: peers[%zu].id '%s' is not a node id (1..255 bytes, "
                            "no spaces or control characters)",
                            i, ps[i].id ? ps[i].id : "");
        if (strcmp(ps[i].id, node_id) == 0)
            return TCP_FAIL(host, err, "INVALID_CONFIG",
                            "tcp transport: peers[%zu] is this node itself ('%s')", i, node_id);
        for (size_t j = 0; j < i; j++)
            if (strcmp(ps[j].id, ps[i].id) == 0)
                return TCP_FAIL(host, err, "INVALID_CONFIG",
                                "tcp transport: peers[%zu] and peers[%zu] both name '%s'", j, i,
                                ps[i].id);
        if (gs_tcp_parse_address(ps[i].address, h, sizeof h, p, sizeof p, why, sizeof why))
            return TCP_FAIL(host, err, "INVALID_CONFIG", "tcp transport: peers[%zu].address: %s", i,
                            why);
    }
    return GS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Create and destroy                                                                         */

static char *dup_str(const gs_host *host, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *p = host->alloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

static void free_instance(gs_tcp_inst *t)
{
    const gs_host *host = t->host;
    gs_tcp_tls_free(t);
    for (size_t i = 0; t->dials && i < t->ndials; i++) {
        host->free(t->dials[i].id);
        host->free(t->dials[i].address);
    }
    host->free(t->dials);
    host->free(t->bind_host);
    host->free(t->node_id);
    host->free(t->group_id);
    host->free(t->protocol_version);
    host->free(t);
}

static gs_status tcp_create(const gs_host *host, const void *config, const char *local_node_id,
                            void **instance, gs_error *err)
{
    *instance = NULL;
    gs_tcp_config defaults;
    const gs_tcp_config *cfg = config;
    if (!cfg) {
        config_defaults(&defaults);
        cfg = &defaults;
    }
    if (check_config(host, cfg, local_node_id, err) != GS_OK)
        return GS_ERROR;

    gs_tcp_inst *t = host->alloc(sizeof *t);
    if (!t)
        return TCP_FAIL(host, err, "INTERNAL_ERROR", "out of memory creating the tcp transport");
    memset(t, 0, sizeof *t);
    t->host = host;
    t->epfd = t->wakefd = t->lfd = -1;
    t->port = (int)cfg->port;
    t->insecure = cfg->insecure != 0;
    t->heartbeat_ms = (uint64_t)cfg->heartbeat_ms;
    t->reconnect_min_ms = (uint64_t)cfg->reconnect_min_ms;
    t->reconnect_max_ms = (uint64_t)cfg->reconnect_max_ms;
    t->max_queue_bytes = (uint64_t)cfg->max_queue_bytes;
    t->max_frame_bytes = (uint64_t)cfg->max_frame_bytes;
    atomic_init(&t->wake_pending, 0);
    atomic_init(&t->stopping, 0);

    int ok = (t->node_id = dup_str(host, local_node_id)) != NULL &&
             (t->bind_host = dup_str(host, cfg->host)) != NULL;
    const gs_tcp_peer_config *ps = cfg->peers.items;
    if (ok && cfg->peers.count) {
        ok = (t->dials = host->alloc(cfg->peers.count * sizeof *t->dials)) != NULL;
        if (ok)
            memset(t->dials, 0, cfg->peers.count * sizeof *t->dials);
        for (size_t i = 0; ok && i < cfg->peers.count; i++) {
            gs_tcp_dial *d = &t->dials[i];
            t->ndials = i + 1;
            char why[256];
            ok = (d->id = dup_str(host, ps[i].id)) != NULL &&
                 (d->address = dup_str(host, ps[i].address)) != NULL &&
                 gs_tcp_parse_address(ps[i].address, d->host, sizeof d->host, d->port,
                                      sizeof d->port, why, sizeof why) == 0;
        }
    }
    if (!ok) {
        free_instance(t);
        return TCP_FAIL(host, err, "INTERNAL_ERROR", "out of memory creating the tcp transport");
    }
    if (!t->insecure) {
        if (gs_tcp_tls_init(t, cfg->tls_cert, cfg->tls_key, cfg->tls_ca_cert, err) != GS_OK) {
            free_instance(t);
            return GS_ERROR;
        }
    } else if (cfg->tls_cert || cfg->tls_key || cfg->tls_ca_cert) {
        host->log(host, GS_LOG_WARN, GS_TCP_COMPONENT,
                  "node '%s': insecure: true, so tls_cert, tls_key and tls_ca_cert are ignored "
                  "(plaintext, no authentication)",
                  t->node_id);
    }
    if (pthread_mutex_init(&t->lock, NULL) != 0) {
        free_instance(t);
        return TCP_FAIL(host, err, "INTERNAL_ERROR", "cannot create the tcp transport's lock");
    }
    *instance = t;
    return GS_OK;
}

static void tcp_stop(void *instance);

static void tcp_destroy(void *instance)
{
    gs_tcp_inst *t = instance;
    if (!t)
        return;
    if (gs_tcp_on_io_thread(t)) {
        tcp_stop(t);
        t->host->log(t->host, GS_LOG_ERROR, GS_TCP_COMPONENT,
                     "node '%s': destroy() called from its own event callback; the instance is "
                     "leaked. Destroy it from the core's main thread",
                     t->node_id);
        return;
    }
    tcp_stop(t);
    pthread_mutex_destroy(&t->lock);
    free_instance(t);
}

/* ------------------------------------------------------------------------------------------ */
/* Start and stop                                                                             */

static gs_status tcp_start(void *instance, const gs_repl_events *events, gs_error *err)
{
    gs_tcp_inst *t = instance;
    const gs_host *host = t->host;
    if (!events || !GS_HAS_MEMBER(gs_repl_events, on_peer, events->struct_size) ||
        !events->on_message || !events->on_peer)
        return TCP_FAIL(host, err, "INTERNAL_ERROR",
                        "tcp transport '%s': start() needs events with on_message and on_peer",
                        t->node_id);
    if (gs_tcp_on_io_thread(t))
        return TCP_FAIL(host, err, "INTERNAL_ERROR",
                        "tcp transport '%s': start() called from its own event callback",
                        t->node_id);
    pthread_mutex_lock(&t->lock);
    int running = t->running;
    pthread_mutex_unlock(&t->lock);
    if (running)
        return TCP_FAIL(host, err, "INTERNAL_ERROR", "tcp transport '%s' is already started",
                        t->node_id);
    /* A stop() that ran on the I/O thread left the thread to be joined here. */
    gs_tcp_loop_stop(t);

    memset(&t->events, 0, sizeof t->events);
    size_t n = events->struct_size < sizeof t->events ? events->struct_size : sizeof t->events;
    memcpy(&t->events, events, n);
    t->events.struct_size = sizeof t->events;
    const char *role =
        GS_HAS_MEMBER(gs_repl_events, local_role, events->struct_size) ? events->local_role : NULL;
    if (!role)
        role = t->ndials ? "replica" : "primary";
    if (strcmp(role, "primary") != 0 && strcmp(role, "replica") != 0)
        return TCP_FAIL(host, err, "INVALID_CONFIG",
                        "tcp transport '%s': local role '%s' is not primary or replica", t->node_id,
                        role);
    snprintf(t->role, sizeof t->role, "%s", role);
    const char *group =
        GS_HAS_MEMBER(gs_repl_events, group_id, events->struct_size) ? events->group_id : NULL;
    const char *proto = GS_HAS_MEMBER(gs_repl_events, protocol_version, events->struct_size)
                            ? events->protocol_version
                            : NULL;
    t->primary_term =
        GS_HAS_MEMBER(gs_repl_events, primary_term, events->struct_size) ? events->primary_term : 0;
    host->free(t->group_id);
    host->free(t->protocol_version);
    t->group_id = group && *group ? dup_str(host, group) : NULL;
    t->protocol_version = proto && *proto ? dup_str(host, proto) : NULL;
    if ((group && *group && !t->group_id) || (proto && *proto && !t->protocol_version))
        return TCP_FAIL(host, err, "INTERNAL_ERROR", "out of memory starting the tcp transport");
    if ((t->group_id && strlen(t->group_id) > 255) ||
        (t->protocol_version && strlen(t->protocol_version) > 63) || t->primary_term < 0)
        return TCP_FAIL(host, err, "INVALID_CONFIG",
                        "tcp transport '%s': the group id (at most 255 bytes), protocol version "
                        "(at most 63) or primary term (>= 0) cannot be carried in a hello",
                        t->node_id);
    /* Spec 04: a node serves when it is the primary or a group id is configured; here also
     * whenever a port is set, so replicas can take connections too. */
    t->listening = strcmp(t->role, "primary") == 0 || t->group_id || t->port != 0;
    return gs_tcp_loop_start(t, err);
}

static void tcp_stop(void *instance)
{
    gs_tcp_inst *t = instance;
    if (!t)
        return;
    if (gs_tcp_on_io_thread(t)) {
        /* Joining ourselves would hang: the thread stops after this callback; start() or
         * destroy() joins it. */
        gs_tcp_loop_stop(t);
        t->host->log(t->host, GS_LOG_ERROR, GS_TCP_COMPONENT,
                     "node '%s': stop() called from its own event callback; the transport stops "
                     "after this callback, but stop() cannot wait for it",
                     t->node_id);
        return;
    }
    pthread_mutex_lock(&t->lock);
    int was = t->running;
    pthread_mutex_unlock(&t->lock);
    gs_tcp_loop_stop(t);
    if (was)
        t->host->log(t->host, GS_LOG_INFO, GS_TCP_COMPONENT, "node '%s' stopped", t->node_id);
}

/* ------------------------------------------------------------------------------------------ */
/* Send                                                                                       */

void gs_tcp_wake(gs_tcp_inst *t)
{
    if (!atomic_exchange(&t->wake_pending, 1)) {
        uint64_t one = 1;
        ssize_t w = write(t->wakefd, &one, sizeof one);
        (void)w;
    }
}

/* Under t->lock: the registered connection of peer `to`, or NULL. */
static gs_tcp_conn *find_peer(gs_tcp_inst *t, const char *to)
{
    for (gs_tcp_conn *c = t->conns; c; c = c->next)
        if (c->registered && strcmp(c->peer_id, to) == 0)
            return c;
    return NULL;
}

/* Under t->lock: why a frame of flen bytes cannot be queued to `to` now, or GS_OK. */
static gs_status can_queue(gs_tcp_inst *t, const char *to, size_t flen, gs_tcp_conn **out,
                           gs_error *err)
{
    const gs_host *host = t->host;
    if (!t->running)
        return TCP_FAIL(host, err, "TRANSPORT_ERROR",
                        "the tcp transport of node '%s' is not started (or was stopped)",
                        t->node_id);
    gs_tcp_conn *c = find_peer(t, to);
    if (!c)
        return TCP_FAIL(host, err, "TRANSPORT_ERROR",
                        "peer '%s' is not connected to node '%s' over tcp", to, t->node_id);
    if (c->qbytes + flen > t->max_queue_bytes) {
        host->error_set(err, 0, "TRANSPORT_ERROR",
                        "the queue to peer '%s' holds %" PRIu64
                        " unwritten bytes (max_queue_bytes %" PRIu64 "); retry later",
                        to, c->qbytes, t->max_queue_bytes);
        return GS_AGAIN;
    }
    *out = c;
    return GS_OK;
}

static gs_status tcp_send(void *instance, const char *to_node_id, gs_repl_msg_type type,
                          uint64_t call_id, const uint8_t *bytes, size_t len, gs_error *err)
{
    gs_tcp_inst *t = instance;
    const gs_host *host = t->host;
    if (!to_node_id)
        return TCP_FAIL(host, err, "TRANSPORT_ERROR", "send() needs a peer node id");
    if (len && !bytes)
        return TCP_FAIL(host, err, "TRANSPORT_ERROR", "send() of %zu bytes with no buffer", len);
    if (type < GS_REPL_MSG_REPLICATION || type > GS_REPL_MSG_FORWARD_RESPONSE)
        return TCP_FAIL(host, err, "TRANSPORT_ERROR",
                        "unknown replication message type %d (expected 1..4)", (int)type);
    if (len > t->max_frame_bytes - GS_TCP_FRAME_MIN_LENGTH)
        return TCP_FAIL(host, err, "TRANSPORT_ERROR",
                        "a message of %zu bytes does not fit max_frame_bytes (%" PRIu64
                        ", of which the frame header takes %d); raise max_frame_bytes on every "
                        "node",
                        len, t->max_frame_bytes, GS_TCP_FRAME_MIN_LENGTH);
    size_t flen = len + GS_TCP_FRAME_HEADER;
    if (flen > t->max_queue_bytes)
        return TCP_FAIL(host, err, "TRANSPORT_ERROR",
                        "a message of %zu bytes can never fit max_queue_bytes (%" PRIu64 ")", len,
                        t->max_queue_bytes);

    /* Check before copying (a full queue should not cost a big allocation), then again
     * under the lock that queues it. */
    gs_tcp_conn *c = NULL;
    pthread_mutex_lock(&t->lock);
    gs_status st = can_queue(t, to_node_id, flen, &c, err);
    pthread_mutex_unlock(&t->lock);
    if (st != GS_OK)
        return st;
    gs_tcp_out *o = gs_tcp_out_new(t, GS_TCP_FRAME_MESSAGE, (uint8_t)type, call_id, bytes, len);
    if (!o)
        return TCP_FAIL(host, err, "INTERNAL_ERROR",
                        "out of memory queueing a %zu-byte message to '%s'", len, to_node_id);
    pthread_mutex_lock(&t->lock);
    st = can_queue(t, to_node_id, flen, &c, err);
    if (st == GS_OK) {
        gs_tcp_conn_enqueue_locked(c, o);
        o = NULL;
        gs_tcp_wake(t); /* under the lock: stop() closes the eventfd only after taking it */
    }
    pthread_mutex_unlock(&t->lock);
    host->free(o);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* Descriptor                                                                                 */

static const gs_repl_transport_vtable tcp_vtable = {
    .struct_size = sizeof(gs_repl_transport_vtable),
    .create = tcp_create,
    .start = tcp_start,
    .send = tcp_send,
    .stop = tcp_stop,
    .destroy = tcp_destroy,
};

static const gs_plugin_descriptor tcp_descriptor = {
    .struct_size = sizeof(gs_plugin_descriptor),
    .abi_major = GS_ABI_MAJOR,
    .abi_minor = GS_ABI_MINOR,
    .kind = GS_KIND_REPL_TRANSPORT,
    .name = "tcp",
    .version = "0.1.0",
    .build_signature = GS_BUILD_SIGNATURE,
    .vtable = &tcp_vtable,
    .config_keys = tcp_keys,
    .config_key_count = TCP_KEY_COUNT,
    .config_key_size = sizeof(gs_config_key),
    .config_struct_size = sizeof(gs_tcp_config),
    .description = "replication over length-prefixed TCP frames with TLS 1.3 and mutual "
                   "authentication (gnutls), heartbeats and reconnects",
};

GS_PLUGIN_DEFINE(tcp_descriptor)
