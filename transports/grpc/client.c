/*
 * The grpc transport's client side (spec 04 "Connection Model"): one channel per configured
 * peer for the whole of start..stop, and on it a Replicate and a Sync stream, each opened with
 * our Hello. The server's Hello on Replicate must carry the node id the config lists for that
 * address (and, with client certificates verified, the id must be its certificate's CN); then
 * the peer is up. When either stream ends, both are ended and the pair is dialled again after
 * a backoff that doubles from reconnect_min_ms to reconnect_max_ms (reset by a Hello). A pair
 * whose server answers neither Hello within hello_timeout_ms is ended the same way: the
 * reference implementation's server refuses a client certificate whose CN is not the Hello's
 * node id by dropping the stream without a status, which would leave this node waiting on it
 * for good, with nothing logged. Forward is a unary call with forward_deadline_ms as its
 * deadline; a failed call is answered to the core as a ForwardResponse whose error says why,
 * so a waiting write fails at once.
 *
 * Threads: gs_gc_client_start from start() (mu held); dials and events on the
 * completion-queue thread; gs_gc_client_forward from send() threads. mu held throughout.
 */
#include "grpc_internal.h"

#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include <stdio.h>
#include <string.h>

#define GC_FAIL_LOG_EVERY_MS 5000

gs_status gs_gc_client_start(gc_inst *t, gs_error *err)
{
    int any = 0;
    for (gc_peer *p = t->peers; p; p = p->next)
        any |= p->configured;
    if (!any)
        return GS_OK;
    grpc_channel_credentials *creds = gs_gc_tls_channel_creds(t);
    if (!creds) {
        t->host->error_set(err, 0, "TRANSPORT_ERROR",
                           "grpc transport: cannot build the client credentials");
        return GS_ERROR;
    }
    uint64_t now = gs_gc_now_ms();
    for (gc_peer *p = t->peers; p; p = p->next) {
        if (!p->configured)
            continue;
        grpc_arg args[10];
        memset(args, 0, sizeof args);
        int na = 0;
#define INT_ARG(k, v)                                                                              \
    do {                                                                                           \
        args[na].type = GRPC_ARG_INTEGER;                                                          \
        args[na].key = (char *)(k);                                                                \
        args[na++].value.integer = (int)(v);                                                       \
    } while (0)
        INT_ARG(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, t->max_message_bytes);
        INT_ARG(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, t->max_message_bytes);
        INT_ARG(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, t->reconnect_min_ms);
        INT_ARG(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, t->reconnect_min_ms);
        INT_ARG(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, t->reconnect_max_ms);
        if (t->keepalive_ms > 0) {
            INT_ARG(GRPC_ARG_KEEPALIVE_TIME_MS, t->keepalive_ms);
            INT_ARG(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, t->keepalive_timeout_ms);
            INT_ARG(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
        }
#undef INT_ARG
        if (p->server_name) {
            args[na].type = GRPC_ARG_STRING;
            args[na].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
            args[na++].value.string = p->server_name;
        }
        grpc_channel_args ca = {(size_t)na, args};
        p->channel = grpc_channel_create(p->address, creds, &ca);
        p->backoff_ms = t->reconnect_min_ms;
        p->redial_at = now;
        p->fail_streak = 0;
        p->last_fail_log_ms = 0;
    }
    grpc_channel_credentials_release(creds);
    return GS_OK;
}

/* A client stream of p with our Hello queued; NULL when out of memory, finished when it could
 * not start. */
static gc_call *open_stream(gc_inst *t, gc_peer *p, gc_call_kind kind)
{
    gc_call *c = gs_gc_call_new(t, kind);
    if (!c)
        return NULL;
    c->peer = p;
    const char *m = kind == GC_CLI_SYNC ? GC_METHOD_SYNC : GC_METHOD_REPLICATE;
    c->call = grpc_channel_create_call(p->channel, NULL, GRPC_PROPAGATE_DEFAULTS, t->cq,
                                       grpc_slice_from_static_string(m), NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (kind == GC_CLI_SYNC)
        p->cli_sync = c;
    else
        p->cli_repl = c;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &c->trailing;
    op.data.recv_status_on_client.status = &c->status;
    op.data.recv_status_on_client.status_details = &c->status_details;
    if (!c->call || gs_gc_call_batch(c, GC_OP_CLOSE, &op, 1) != GRPC_CALL_OK ||
        gs_gc_call_write_buffer(c, gs_gc_hello_build(t, kind == GC_CLI_SYNC)) != GS_OK) {
        c->finished = 1;
        if (c->call)
            grpc_call_cancel(c->call, NULL);
        return c;
    }
    gs_gc_call_read(c);
    return c;
}

static void dial(gc_inst *t, gc_peer *p, gc_outbox *ob)
{
    p->redial_at = 0;
    if (p->cli_repl || p->cli_sync)
        return;
    gc_call *r = open_stream(t, p, GC_CLI_REPLICATE);
    gc_call *s = r && !r->finished ? open_stream(t, p, GC_CLI_SYNC) : NULL;
    p->hello_due = gs_gc_now_ms() + t->hello_timeout_ms;
    if (!r || r->finished || !s || s->finished) {
        p->hello_due = 0;
        t->host->log(t->host, GS_LOG_ERROR, GC_COMPONENT,
                     "node '%s': cannot open the streams to %s (%s)", t->node_id, p->id,
                     p->address);
        if (r) {
            r->finished = 0; /* let end() unhook it from the peer */
            gs_gc_call_end(r, GRPC_STATUS_INTERNAL, "dial failed", ob);
        }
        if (s) {
            s->finished = 0;
            gs_gc_call_end(s, GRPC_STATUS_INTERNAL, "dial failed", ob);
        }
        gs_gc_client_stream_lost(t, p, ob);
        if (r)
            gs_gc_call_maybe_free(r);
        if (s)
            gs_gc_call_maybe_free(s);
    }
}

/* The server neither answered our Hello nor ended the stream within hello_timeout_ms: end the
 * pair and dial again after the backoff, saying so. */
static void hello_overdue(gc_inst *t, gc_peer *p, gc_outbox *ob)
{
    p->hello_due = 0;
    gc_call *c = p->cli_repl && !p->cli_repl->hello_in   ? p->cli_repl
                 : p->cli_sync && !p->cli_sync->hello_in ? p->cli_sync
                                                         : NULL;
    if (!c)
        return;
    uint64_t now = gs_gc_now_ms();
    if (!p->last_fail_log_ms || now - p->last_fail_log_ms >= GC_FAIL_LOG_EVERY_MS) {
        p->last_fail_log_ms = now;
        t->host->log(t->host, p->fail_streak ? GS_LOG_WARN : GS_LOG_INFO, GC_COMPONENT,
                     "node '%s': no link to %s (%s): no Hello answered ours within %llu ms and the "
                     "stream was not ended (a server that refuses this node's identity may do "
                     "that: check that this node's certificate CN is its node id '%s'); "
                     "retrying with backoff",
                     t->node_id, p->id, p->address, (unsigned long long)t->hello_timeout_ms,
                     t->node_id);
    }
    p->fail_streak++;
    gs_gc_call_end(c, GRPC_STATUS_DEADLINE_EXCEEDED, "no Hello from the server", ob);
}

uint64_t gs_gc_client_dial_due(gc_inst *t, uint64_t now, gc_outbox *ob)
{
    uint64_t next = 0;
    if (t->state != GC_RUNNING)
        return 0;
    for (gc_peer *p = t->peers; p; p = p->next) {
        if (!p->configured)
            continue;
        if (p->hello_due && now >= p->hello_due)
            hello_overdue(t, p, ob);
        if (p->redial_at && now >= p->redial_at)
            dial(t, p, ob);
        if (p->redial_at && (!next || p->redial_at < next))
            next = p->redial_at;
        if (p->hello_due && (!next || p->hello_due < next))
            next = p->hello_due;
    }
    return next;
}

void gs_gc_client_stream_lost(gc_inst *t, gc_peer *p, gc_outbox *ob)
{
    if (p->cli_repl)
        gs_gc_call_end(p->cli_repl, GRPC_STATUS_CANCELLED, "sibling ended", ob);
    if (p->cli_sync)
        gs_gc_call_end(p->cli_sync, GRPC_STATUS_CANCELLED, "sibling ended", ob);
    if (t->state != GC_RUNNING || !p->configured || p->redial_at)
        return;
    p->redial_at = gs_gc_now_ms() + p->backoff_ms;
    p->backoff_ms =
        p->backoff_ms * 2 > t->reconnect_max_ms ? t->reconnect_max_ms : p->backoff_ms * 2;
}

/* Log a failed or ended link at most every GC_FAIL_LOG_EVERY_MS per peer. */
static void log_link_failure(gc_inst *t, gc_peer *p, const gc_call *c, const char *what)
{
    uint64_t now = gs_gc_now_ms();
    if (p->last_fail_log_ms && now - p->last_fail_log_ms < GC_FAIL_LOG_EVERY_MS)
        return;
    p->last_fail_log_ms = now;
    char details[256] = "";
    size_t n = GRPC_SLICE_LENGTH(c->status_details);
    if (n >= sizeof details)
        n = sizeof details - 1;
    memcpy(details, GRPC_SLICE_START_PTR(c->status_details), n);
    details[n] = '\0';
    t->host->log(t->host, p->fail_streak ? GS_LOG_WARN : GS_LOG_INFO, GC_COMPONENT,
                 "node '%s': %s to %s (%s): gRPC status %d%s%s; retrying with backoff", t->node_id,
                 what, p->id, p->address, (int)c->status, details[0] ? ": " : "", details);
}

static void stream_hello(gc_inst *t, gc_call *c, const uint8_t *bytes, size_t len, gc_outbox *ob)
{
    gc_peer *p = c->peer;
    int sync = c->kind == GC_CLI_SYNC;
    gc_hello h;
    char why[512];
    int bad = gs_gc_hello_parse(t, sync, bytes, len, &h, why, sizeof why) != 0;
    if (!bad && strcmp(h.node_id, p->id) != 0) {
        snprintf(why, sizeof why,
                 "the server at %s says it is '%s', but peers[] lists it as '%s'; fix the "
                 "address or the id",
                 p->address, h.node_id, p->id);
        bad = 1;
    }
    if (!bad && gs_gc_tls_verifies_peers(t)) {
        char cn[GC_ID_MAX + 1];
        if (gs_gc_tls_peer_cn(c->call, cn, sizeof cn) != 0 || strcmp(cn, h.node_id) != 0) {
            snprintf(why, sizeof why,
                     "the server certificate's CN '%s' does not match its Hello's node_id '%s'", cn,
                     h.node_id);
            bad = 1;
        }
    }
    if (bad) {
        uint64_t now = gs_gc_now_ms();
        if (!p->last_fail_log_ms || now - p->last_fail_log_ms >= GC_FAIL_LOG_EVERY_MS) {
            p->last_fail_log_ms = now;
            t->host->log(t->host, GS_LOG_ERROR, GC_COMPONENT, "node '%s': link to %s refused: %s",
                         t->node_id, p->id, why);
        }
        p->fail_streak++;
        gs_gc_call_end(c, GRPC_STATUS_PERMISSION_DENIED, why, ob);
        return;
    }
    c->hello_in = 1;
    c->live = 1;
    if (p->cli_repl && p->cli_repl->hello_in && p->cli_sync && p->cli_sync->hello_in)
        p->hello_due = 0;
    if (!sync) {
        p->backoff_ms = t->reconnect_min_ms;
        p->fail_streak = 0;
        p->last_fail_log_ms = 0;
        gs_gc_peer_sync_state(t, p, ob);
    }
}

static void forward_done(gc_inst *t, gc_call *c, gc_outbox *ob)
{
    c->finished = 1;
    int present = 0;
    grpc_slice msg = gs_gc_call_take_message(c, &present);
    if (c->status == GRPC_STATUS_OK && present) {
        gs_gc_outbox_message(t, ob, c->peer->id, GS_REPL_MSG_FORWARD_RESPONSE, c->call_id, msg);
        return;
    }
    grpc_slice_unref(msg);
    char details[200] = "";
    size_t n = GRPC_SLICE_LENGTH(c->status_details);
    if (n >= sizeof details)
        n = sizeof details - 1;
    memcpy(details, GRPC_SLICE_START_PTR(c->status_details), n);
    details[n] = '\0';
    char text[400];
    if (c->status == GRPC_STATUS_DEADLINE_EXCEEDED)
        snprintf(text, sizeof text,
                 "TOPOLOGY_ERROR: the primary %s did not answer the forwarded write within "
                 "forward_deadline_ms (%llu ms); it may or may not have been applied",
                 c->peer->id, (unsigned long long)t->forward_deadline_ms);
    else
        snprintf(text, sizeof text,
                 "TRANSPORT_ERROR: the Forward call to %s failed (gRPC status %d%s%s); the write "
                 "may or may not have been applied",
                 c->peer->id, (int)c->status, details[0] ? ": " : "", details);
    grpc_slice err = gs_gc_forward_error(t, c->request_id, text);
    gs_gc_outbox_message(t, ob, c->peer->id, GS_REPL_MSG_FORWARD_RESPONSE, c->call_id, err);
}

gs_status gs_gc_client_forward(gc_inst *t, gc_peer *p, uint64_t call_id, const uint8_t *bytes,
                               size_t len, gs_error *err)
{
    if (!p->channel || !p->cli_repl || !p->cli_repl->live) {
        t->host->error_set(err, 0, "TRANSPORT_ERROR",
                           "cannot forward to %s: this node has no live connection to it (a "
                           "Forward goes to a peer listed in this transport's peers)",
                           p->id);
        return GS_ERROR;
    }
    gc_call *c = gs_gc_call_new(t, GC_CLI_FORWARD);
    if (!c) {
        t->host->error_set(err, 0, "INTERNAL_ERROR", "out of memory starting a Forward call");
        return GS_ERROR;
    }
    c->peer = p;
    c->call_id = call_id;
    c->request_id = gs_gc_forward_request_id(t, bytes, len);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                     gpr_time_from_millis((int64_t)t->forward_deadline_ms, GPR_TIMESPAN));
    c->call = grpc_channel_create_call(p->channel, NULL, GRPC_PROPAGATE_DEFAULTS, t->cq,
                                       grpc_slice_from_static_string(GC_METHOD_FORWARD), NULL,
                                       deadline, NULL);
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)bytes, len);
    c->unary_out = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->unary_out;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->md_in;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &c->recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &c->trailing;
    ops[5].data.recv_status_on_client.status = &c->status;
    ops[5].data.recv_status_on_client.status_details = &c->status_details;
    if (!c->call || !c->unary_out || gs_gc_call_batch(c, GC_OP_CLOSE, ops, 6) != GRPC_CALL_OK) {
        c->finished = 1;
        gs_gc_call_maybe_free(c);
        t->host->error_set(err, 0, "TRANSPORT_ERROR", "cannot start a Forward call to %s", p->id);
        return GS_ERROR;
    }
    c->live = 1;
    return GS_OK;
}

void gs_gc_client_event(gc_inst *t, gc_call *c, gc_op op, int ok, gc_outbox *ob)
{
    c->ops--;
    gc_peer *p = c->peer;
    switch (op) {
    case GC_OP_SEND: gs_gc_call_write_done(c, ok, ob); return;
    case GC_OP_RECV: {
        c->recv_busy = 0;
        int present = 0;
        grpc_slice msg = gs_gc_call_take_message(c, &present);
        if (c->finished) {
            grpc_slice_unref(msg);
            return;
        }
        if (!ok || !present) {
            grpc_slice_unref(msg);
            return; /* the status (GC_OP_CLOSE) follows and says why */
        }
        const uint8_t *b = GRPC_SLICE_START_PTR(msg);
        size_t len = GRPC_SLICE_LENGTH(msg);
        if (!c->hello_in) {
            stream_hello(t, c, b, len, ob);
            grpc_slice_unref(msg);
        } else if (gs_gc_payload_field(b, len) == 1) {
            grpc_slice_unref(msg); /* a Hello again: never the core's */
        } else {
            gs_gc_outbox_message(
                t, ob, p->id, c->kind == GC_CLI_SYNC ? GS_REPL_MSG_SYNC : GS_REPL_MSG_REPLICATION,
                0, msg);
        }
        gs_gc_call_read(c);
        return;
    }
    case GC_OP_CLOSE:
        c->closed = 1;
        if (c->kind == GC_CLI_FORWARD) {
            c->live = 0;
            forward_done(t, c, ob);
            return;
        }
        if (!c->finished) {
            if (!c->hello_in)
                p->fail_streak++;
            log_link_failure(t, p, c,
                             c->hello_in ? (c->kind == GC_CLI_SYNC ? "the Sync stream ended"
                                                                   : "the Replicate stream ended")
                                         : "no link");
        }
        gs_gc_call_end(c, GRPC_STATUS_CANCELLED, "closed", ob);
        return;
    default: return;
    }
}
