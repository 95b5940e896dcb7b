/*
 * The grpc transport's server (spec 04 "Connection Model", "Peer Identity", "Stream
 * Invariant", "Health, Shutdown"): it accepts every call through one outstanding
 * grpc_server_request_call and dispatches on the method:
 *   Replicate / Sync  the peer's Hello first (else the stream is ended), the node id checked
 *                     against the certificate's CN when client certificates are verified, our
 *                     Hello back, then every message to the core. A new Replicate (or Sync)
 *                     stream of a node ends its previous one before its first message is read.
 *   Forward           the caller is the node whose certificate CN it is, or (no client
 *                     certificates) the node whose live Replicate stream comes from the same
 *                     address; the request goes to the core with a call id of ours, the core's
 *                     answer completes the call, forward_deadline_ms fails it.
 *   Health/Check      SERVING for "" and the replication service while running, NOT_SERVING
 *                     while stopping, NOT_FOUND for other services.
 *   anything else     UNIMPLEMENTED.
 *
 * Threads: gs_gc_server_start from start() (mu held); events on the completion-queue thread
 * and gs_gc_server_answer from send() threads, mu held.
 */
#include "grpc_internal.h"

#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include <stdio.h>
#include <string.h>

#define GC_MAX_PEER_RECORDS 1024

static void request_call(gc_inst *t)
{
    if (!t->server || t->server_shutdown_done)
        return;
    gc_call *c = gs_gc_call_new(t, GC_ACCEPT);
    if (!c) {
        t->host->log(t->host, GS_LOG_ERROR, GC_COMPONENT,
                     "out of memory: the gRPC server stops accepting calls");
        return;
    }
    grpc_call_error e = grpc_server_request_call(t->server, &c->call, &c->details, &c->md_in, t->cq,
                                                 t->cq, &c->tag_accept);
    if (e != GRPC_CALL_OK) {
        t->host->log(t->host, GS_LOG_ERROR, GC_COMPONENT, "grpc_server_request_call: %s",
                     grpc_call_error_to_string(e));
        c->finished = 1;
        gs_gc_call_maybe_free(c);
        return;
    }
    c->ops++;
}

static void format_addr(char *out, size_t n, const char *host, int port)
{
    if (strchr(host, ':') && host[0] != '[')
        snprintf(out, n, "[%s]:%d", host, port);
    else
        snprintf(out, n, "%s:%d", host, port);
}

gs_status gs_gc_server_start(gc_inst *t, gs_error *err)
{
    grpc_arg args[5];
    memset(args, 0, sizeof args);
    int na = 0;
    args[na].type = GRPC_ARG_INTEGER;
    args[na].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[na++].value.integer = (int)t->max_message_bytes;
    args[na].type = GRPC_ARG_INTEGER;
    args[na].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[na++].value.integer = (int)t->max_message_bytes;
    /* Clients may ping as often as our own keepalive would (the default would close them). */
    args[na].type = GRPC_ARG_INTEGER;
    args[na].key = (char *)GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS;
    args[na++].value.integer = 1000;
    args[na].type = GRPC_ARG_INTEGER;
    args[na].key = (char *)GRPC_ARG_HTTP2_MAX_PING_STRIKES;
    args[na++].value.integer = 0;
    grpc_channel_args ca = {(size_t)na, args};
    t->server = grpc_server_create(&ca, NULL);
    if (!t->server) {
        t->host->error_set(err, 0, "TRANSPORT_ERROR", "grpc transport: cannot create the server");
        return GS_ERROR;
    }
    grpc_server_register_completion_queue(t->server, t->cq, NULL);
    char addr[320];
    int want = t->port_cfg > 0 ? (int)t->port_cfg : 0;
    format_addr(addr, sizeof addr, t->bind_host, want);
    grpc_server_credentials *creds = gs_gc_tls_server_creds(t);
    int port = creds ? grpc_server_add_http2_port(t->server, addr, creds) : 0;
    if (creds)
        grpc_server_credentials_release(creds);
    if (port <= 0) {
        grpc_server_destroy(t->server); /* never started and no port: safe */
        t->server = NULL;
        t->host->error_set(err, 0, "TRANSPORT_ERROR",
                           "grpc transport: cannot listen on %s (address in use, or not an "
                           "address of this machine?); change host/port",
                           addr);
        return GS_ERROR;
    }
    t->bound_port = port;
    t->server_shutdown_done = 0;
    grpc_server_start(t->server);
    request_call(t);
    format_addr(addr, sizeof addr, t->bind_host, port);
    t->host->log(t->host, GS_LOG_INFO, GC_COMPONENT, "node '%s': gRPC server listening on %s (%s)",
                 t->node_id, addr,
                 t->insecure                   ? "insecure: no TLS"
                 : gs_gc_tls_verifies_peers(t) ? "TLS, client certificates required"
                                               : "TLS, no client certificates");
    return GS_OK;
}

/* ---- accepting ---- */

static int method_is(const gc_call *c, const char *m)
{
    return grpc_slice_str_cmp(c->details.method, m) == 0;
}

/* Refuse a call that has no batch of ours: status, then release. */
static void refuse(gc_call *c, grpc_status_code code, const char *why)
{
    c->status_sent = 1;
    grpc_call_cancel_with_status(c->call, code, why, NULL);
    c->finished = 1;
}

static int start_close(gc_call *c)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    return gs_gc_call_batch(c, GC_OP_CLOSE, &op, 1) == GRPC_CALL_OK;
}

/* The node a Forward call comes from, or NULL. */
static gc_peer *forward_caller(gc_inst *t, gc_call *c)
{
    if (gs_gc_tls_verifies_peers(t)) {
        char cn[GC_ID_MAX + 1];
        if (gs_gc_tls_peer_cn(c->call, cn, sizeof cn) != 0)
            return NULL;
        gc_peer *p = gs_gc_peer_get(t, cn, 0);
        return p && gs_gc_peer_up(p) ? p : NULL;
    }
    char *addr = grpc_call_get_peer(c->call);
    gc_peer *found = NULL;
    for (gc_peer *p = t->peers; addr && p && !found; p = p->next)
        if (p->srv_repl && p->srv_repl->live && p->srv_repl->peer_addr &&
            strcmp(p->srv_repl->peer_addr, addr) == 0)
            found = p;
    gpr_free(addr);
    return found;
}

static void accepted(gc_inst *t, gc_call *c, gc_outbox *ob)
{
    request_call(t);
    int running = t->state == GC_RUNNING;
    if (method_is(c, GC_METHOD_REPLICATE) || method_is(c, GC_METHOD_SYNC)) {
        c->kind = method_is(c, GC_METHOD_REPLICATE) ? GC_SRV_REPLICATE : GC_SRV_SYNC;
        if (!running) {
            refuse(c, GRPC_STATUS_UNAVAILABLE, "the node is stopping");
            return;
        }
        if (!start_close(c)) {
            refuse(c, GRPC_STATUS_INTERNAL, "cannot start the stream");
            return;
        }
        gs_gc_call_read(c);
    } else if (method_is(c, GC_METHOD_FORWARD)) {
        c->kind = GC_SRV_FORWARD;
        if (!running) {
            refuse(c, GRPC_STATUS_UNAVAILABLE, "the node is stopping");
            return;
        }
        gc_peer *p = forward_caller(t, c);
        if (!p) {
            t->host->log(t->host, GS_LOG_WARN, GC_COMPONENT,
                         "node '%s': a Forward call from a node with no live Replicate stream "
                         "(or no matching certificate) was refused",
                         t->node_id);
            refuse(c, GRPC_STATUS_UNAUTHENTICATED,
                   "Forward from an unidentified node: open a Replicate stream first");
            return;
        }
        c->peer = p;
        if (!start_close(c)) {
            refuse(c, GRPC_STATUS_INTERNAL, "cannot start the call");
            return;
        }
        gs_gc_call_read(c);
    } else if (method_is(c, GC_METHOD_HEALTH_CHECK)) {
        c->kind = GC_SRV_HEALTH;
        if (!start_close(c)) {
            refuse(c, GRPC_STATUS_INTERNAL, "cannot start the call");
            return;
        }
        gs_gc_call_read(c);
    } else {
        c->kind = GC_SRV_HEALTH; /* any server kind: it is refused at once */
        refuse(c, GRPC_STATUS_UNIMPLEMENTED,
               "this server serves " GC_SERVICE " and grpc.health.v1.Health/Check only");
    }
    (void)ob;
}

/* ---- unary answers ---- */

/* Answer a unary call: message (may be NULL) and status. Takes bb. */
static void answer(gc_call *c, grpc_byte_buffer *bb, grpc_status_code code, const char *why)
{
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (bb) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = bb;
        n++;
    }
    grpc_slice details = grpc_slice_from_copied_string(why ? why : "");
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details = &details;
    n++;
    c->sent_md = 1;
    c->status_sent = 1;
    if (gs_gc_call_batch(c, GC_OP_STATUS, ops, n) == GRPC_CALL_OK) {
        c->send_bb = bb; /* destroyed when the call is freed */
        c->send_len = 0;
    } else {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_INTERNAL, "cannot answer", NULL);
    }
    grpc_slice_unref(details);
    gs_gc_call_end(c, code, why, NULL);
}

static void forward_done(gc_inst *t, gc_call *c)
{
    if (c->live && !c->answered) {
        c->live = 0;
        if (t->pending_fwds)
            t->pending_fwds--;
        pthread_cond_broadcast(&t->cond);
    }
}

gs_status gs_gc_server_answer(gc_inst *t, const char *to, uint64_t call_id, const uint8_t *bytes,
                              size_t len, gs_error *err)
{
    gc_call *c = t->calls;
    while (c && !(c->kind == GC_SRV_FORWARD && c->call_id == call_id && c->live))
        c = c->next;
    if (!c) {
        t->host->error_set(err, 0, "TRANSPORT_ERROR",
                           "no Forward call %llu is waiting for an answer (it passed "
                           "forward_deadline_ms, or its caller gave up)",
                           (unsigned long long)call_id);
        return GS_ERROR;
    }
    if (strcmp(c->peer->id, to) != 0) {
        t->host->error_set(err, 0, "TRANSPORT_ERROR", "Forward call %llu came from %s, not %s",
                           (unsigned long long)call_id, c->peer->id, to);
        return GS_ERROR;
    }
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)bytes, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    forward_done(t, c);
    c->answered = 1;
    answer(c, bb, GRPC_STATUS_OK, NULL);
    return GS_OK;
}

uint64_t gs_gc_server_expire(gc_inst *t, uint64_t now)
{
    uint64_t next = 0;
    for (gc_call *c = t->calls; c; c = c->next) {
        if (c->kind != GC_SRV_FORWARD || !c->live)
            continue;
        if (now >= c->deadline_ms) {
            t->host->log(t->host, GS_LOG_WARN, GC_COMPONENT,
                         "node '%s': Forward call %llu from %s was not answered within "
                         "forward_deadline_ms (%llu ms); the caller gets DEADLINE_EXCEEDED",
                         t->node_id, (unsigned long long)c->call_id, c->peer->id,
                         (unsigned long long)t->forward_deadline_ms);
            forward_done(t, c);
            gs_gc_call_end(c, GRPC_STATUS_DEADLINE_EXCEEDED,
                           "the primary did not answer within forward_deadline_ms", NULL);
            continue;
        }
        if (!next || c->deadline_ms < next)
            next = c->deadline_ms;
    }
    return next;
}

/* ---- streams ---- */

static void stream_hello(gc_inst *t, gc_call *c, const uint8_t *p, size_t len, gc_outbox *ob)
{
    int sync = c->kind == GC_SRV_SYNC;
    const char *what = sync ? "Sync" : "Replicate";
    gc_hello h;
    char why[256];
    if (gs_gc_hello_parse(t, sync, p, len, &h, why, sizeof why) != 0) {
        t->host->log(t->host, GS_LOG_WARN, GC_COMPONENT, "node '%s': a %s stream was ended: %s",
                     t->node_id, what, why);
        gs_gc_call_end(c, GRPC_STATUS_FAILED_PRECONDITION, why, ob);
        return;
    }
    if (gs_gc_tls_verifies_peers(t)) {
        char cn[GC_ID_MAX + 1];
        if (gs_gc_tls_peer_cn(c->call, cn, sizeof cn) != 0 || strcmp(cn, h.node_id) != 0) {
            snprintf(why, sizeof why,
                     "the client certificate's CN '%s' does not match the Hello's node_id '%s'", cn,
                     h.node_id);
            t->host->log(t->host, GS_LOG_WARN, GC_COMPONENT,
                         "node '%s': a %s stream was refused: %s", t->node_id, what, why);
            gs_gc_call_end(c, GRPC_STATUS_UNAUTHENTICATED, why, ob);
            return;
        }
    }
    if (strcmp(h.node_id, t->node_id) == 0) {
        snprintf(why, sizeof why, "the Hello carries this node's own id '%s'", h.node_id);
        t->host->log(t->host, GS_LOG_WARN, GC_COMPONENT, "node '%s': a %s stream was refused: %s",
                     t->node_id, what, why);
        gs_gc_call_end(c, GRPC_STATUS_FAILED_PRECONDITION, why, ob);
        return;
    }
    size_t npeers = 0;
    for (gc_peer *q = t->peers; q; q = q->next)
        npeers++;
    gc_peer *peer = gs_gc_peer_get(t, h.node_id, npeers < GC_MAX_PEER_RECORDS);
    if (!peer) {
        gs_gc_call_end(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "too many peers", ob);
        return;
    }
    gc_call **slot = sync ? &peer->srv_sync : &peer->srv_repl;
    if (*slot && *slot != c) {
        t->host->log(t->host, GS_LOG_INFO, GC_COMPONENT,
                     "node '%s': a new %s stream from %s replaces the previous one", t->node_id,
                     what, h.node_id);
        gs_gc_call_end(*slot, GRPC_STATUS_ABORTED, "replaced by a newer stream from the same node",
                       ob);
    }
    char *addr = grpc_call_get_peer(c->call);
    c->peer_addr = gs_gc_strdup(t->host, addr ? addr : "");
    gpr_free(addr);
    c->peer = peer;
    *slot = c;
    c->hello_in = 1;
    c->live = 1;
    if (gs_gc_call_write_buffer(c, gs_gc_hello_build(t, sync)) != GS_OK) {
        gs_gc_call_end(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", ob);
        return;
    }
    gs_gc_peer_sync_state(t, peer, ob);
}

static void stream_message(gc_inst *t, gc_call *c, grpc_slice msg, gc_outbox *ob)
{
    const uint8_t *p = GRPC_SLICE_START_PTR(msg);
    size_t len = GRPC_SLICE_LENGTH(msg);
    if (!c->hello_in) {
        stream_hello(t, c, p, len, ob);
        grpc_slice_unref(msg);
        return;
    }
    if (gs_gc_payload_field(p, len) == 1) { /* a Hello again: never the core's */
        grpc_slice_unref(msg);
        return;
    }
    gs_gc_outbox_message(t, ob, c->peer->id,
                         c->kind == GC_SRV_SYNC ? GS_REPL_MSG_SYNC : GS_REPL_MSG_REPLICATION, 0,
                         msg);
}

/* ---- events ---- */

static void on_recv(gc_inst *t, gc_call *c, int ok, gc_outbox *ob)
{
    c->recv_busy = 0;
    int present = 0;
    grpc_slice msg = gs_gc_call_take_message(c, &present);
    if (c->finished) {
        grpc_slice_unref(msg);
        return;
    }
    if (!ok || !present) {
        grpc_slice_unref(msg);
        /* The client half-closed (or the call broke). */
        if (c->kind == GC_SRV_FORWARD || c->kind == GC_SRV_HEALTH)
            answer(c, NULL, GRPC_STATUS_INVALID_ARGUMENT, "a unary call needs one request");
        else
            gs_gc_call_end(c, GRPC_STATUS_OK, "the client closed the stream", ob);
        return;
    }
    switch (c->kind) {
    case GC_SRV_REPLICATE:
    case GC_SRV_SYNC:
        stream_message(t, c, msg, ob);
        gs_gc_call_read(c);
        break;
    case GC_SRV_FORWARD:
        if (t->state != GC_RUNNING) {
            grpc_slice_unref(msg);
            answer(c, NULL, GRPC_STATUS_UNAVAILABLE, "the node is stopping");
            break;
        }
        c->call_id = ++t->next_fwd_id;
        c->deadline_ms = gs_gc_now_ms() + t->forward_deadline_ms;
        c->live = 1;
        t->pending_fwds++;
        gs_gc_outbox_message(t, ob, c->peer->id, GS_REPL_MSG_FORWARD_REQUEST, c->call_id, msg);
        break;
    case GC_SRV_HEALTH: {
        char service[256];
        int parsed = gs_gc_health_service(t, GRPC_SLICE_START_PTR(msg), GRPC_SLICE_LENGTH(msg),
                                          service, sizeof service);
        grpc_slice_unref(msg);
        if (parsed != 0)
            answer(c, NULL, GRPC_STATUS_INVALID_ARGUMENT, "not a HealthCheckRequest");
        else if (service[0] && strcmp(service, GC_SERVICE) != 0)
            answer(c, NULL, GRPC_STATUS_NOT_FOUND, "unknown service");
        else
            answer(c, gs_gc_health_response(t->state == GC_RUNNING ? 1 : 2), GRPC_STATUS_OK, NULL);
        break;
    }
    default: grpc_slice_unref(msg); break;
    }
}

void gs_gc_server_event(gc_inst *t, gc_call *c, gc_op op, int ok, gc_outbox *ob)
{
    c->ops--;
    switch (op) {
    case GC_OP_ACCEPT:
        if (!ok) {
            c->finished = 1; /* the server is shutting down */
            return;
        }
        accepted(t, c, ob);
        return;
    case GC_OP_RECV: on_recv(t, c, ok, ob); return;
    case GC_OP_SEND: gs_gc_call_write_done(c, ok, ob); return;
    case GC_OP_STATUS: return;
    case GC_OP_CLOSE:
        c->closed = 1;
        if (c->kind == GC_SRV_FORWARD)
            forward_done(t, c);
        if (!c->finished && (c->kind == GC_SRV_REPLICATE || c->kind == GC_SRV_SYNC) && c->hello_in)
            t->host->log(t->host, GS_LOG_INFO, GC_COMPONENT,
                         "node '%s': the %s stream from %s ended%s", t->node_id,
                         c->kind == GC_SRV_SYNC ? "Sync" : "Replicate", c->peer ? c->peer->id : "?",
                         c->cancelled ? " (cancelled)" : "");
        gs_gc_call_end(c, GRPC_STATUS_CANCELLED, "closed", ob);
        return;
    default: return;
    }
}
