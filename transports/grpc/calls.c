/*
 * One gRPC call as the transport drives it (contract in grpc_internal.h): its batches and
 * their tags, the outbound queue written one message at a time, the single outstanding read,
 * ending a call (status or cancel) and freeing it once gRPC has completed every batch. Also
 * the outbox that carries events from the locked handlers to the core.
 *
 * Threads: everything here runs with the instance's mu held (send() threads and the
 * completion-queue thread), except gs_gc_outbox_flush, which runs without it.
 */
#include "grpc_internal.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>

#include <stdio.h>
#include <string.h>

gc_call *gs_gc_call_new(gc_inst *t, gc_call_kind kind)
{
    gc_call *c = t->host->alloc(sizeof *c);
    if (!c)
        return NULL;
    memset(c, 0, sizeof *c);
    c->t = t;
    c->kind = kind;
    c->tag_send = (gc_tag){c, GC_OP_SEND};
    c->tag_recv = (gc_tag){c, GC_OP_RECV};
    c->tag_close = (gc_tag){c, GC_OP_CLOSE};
    c->tag_status = (gc_tag){c, GC_OP_STATUS};
    c->tag_accept = (gc_tag){c, GC_OP_ACCEPT};
    c->status_details = grpc_empty_slice();
    grpc_metadata_array_init(&c->md_in);
    grpc_metadata_array_init(&c->trailing);
    grpc_call_details_init(&c->details);
    c->next = t->calls;
    if (t->calls)
        t->calls->prev = c;
    t->calls = c;
    t->ncalls++;
    return c;
}

static gc_tag *tag_of(gc_call *c, gc_op op)
{
    switch (op) {
    case GC_OP_SEND: return &c->tag_send;
    case GC_OP_RECV: return &c->tag_recv;
    case GC_OP_CLOSE: return &c->tag_close;
    case GC_OP_STATUS: return &c->tag_status;
    default: return &c->tag_accept;
    }
}

grpc_call_error gs_gc_call_batch(gc_call *c, gc_op op, const grpc_op *ops, size_t n)
{
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, tag_of(c, op), NULL);
    if (e == GRPC_CALL_OK)
        c->ops++;
    else
        c->t->host->log(c->t->host, GS_LOG_ERROR, GC_COMPONENT,
                        "a gRPC batch could not be started: %s (the call is ended)",
                        grpc_call_error_to_string(e));
    return e;
}

static void drop_queue(gc_call *c)
{
    const gs_host *host = c->t->host;
    while (c->qhead) {
        gc_msg *m = c->qhead;
        c->qhead = m->next;
        c->qbytes -= m->len;
        grpc_byte_buffer_destroy(m->bb);
        host->free(m);
    }
    c->qtail = NULL;
}

/* Start the next write when none is in flight. */
static void pump(gc_call *c)
{
    if (c->send_busy || !c->qhead || c->finished)
        return;
    gc_msg *m = c->qhead;
    c->qhead = m->next;
    if (!c->qhead)
        c->qtail = NULL;
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!c->sent_md) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = m->bb;
    n++;
    c->send_bb = m->bb;
    c->send_len = m->len;
    c->t->host->free(m);
    if (gs_gc_call_batch(c, GC_OP_SEND, ops, n) != GRPC_CALL_OK) {
        grpc_byte_buffer_destroy(c->send_bb);
        c->send_bb = NULL;
        c->qbytes -= c->send_len;
        gs_gc_call_end(c, GRPC_STATUS_INTERNAL, "a write could not be started", NULL);
        return;
    }
    c->sent_md = 1;
    c->send_busy = 1;
}

static gs_status queue_buffer(gc_call *c, grpc_byte_buffer *bb, size_t len)
{
    gc_msg *m = c->t->host->alloc(sizeof *m);
    if (!m) {
        grpc_byte_buffer_destroy(bb);
        return GS_ERROR;
    }
    m->next = NULL;
    m->bb = bb;
    m->len = len;
    if (c->qtail)
        c->qtail->next = m;
    else
        c->qhead = m;
    c->qtail = m;
    c->qbytes += len;
    pump(c);
    return GS_OK;
}

gs_status gs_gc_call_write(gc_call *c, const uint8_t *bytes, size_t len, gs_error *err)
{
    gc_inst *t = c->t;
    if (c->finished) {
        t->host->error_set(err, 0, "TRANSPORT_ERROR", "the stream to %s has ended",
                           c->peer ? c->peer->id : "?");
        return GS_ERROR;
    }
    if (len > t->max_queue_bytes) {
        t->host->error_set(err, 0, "TRANSPORT_ERROR",
                           "a %zu-byte message to %s can never fit max_queue_bytes (%llu)", len,
                           c->peer ? c->peer->id : "?", (unsigned long long)t->max_queue_bytes);
        return GS_ERROR;
    }
    if (c->qbytes + len > t->max_queue_bytes) {
        t->host->error_set(err, 0, "TRANSPORT_ERROR",
                           "the outbound queue to %s is full (%zu bytes waiting, bound %llu); "
                           "retry when it drains",
                           c->peer ? c->peer->id : "?", c->qbytes,
                           (unsigned long long)t->max_queue_bytes);
        return GS_AGAIN;
    }
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)bytes, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    if (!bb || queue_buffer(c, bb, len) != GS_OK) {
        t->host->error_set(err, 0, "INTERNAL_ERROR", "out of memory queueing a message for %s",
                           c->peer ? c->peer->id : "?");
        return GS_ERROR;
    }
    return GS_OK;
}

gs_status gs_gc_call_write_buffer(gc_call *c, grpc_byte_buffer *bb)
{
    if (!bb)
        return GS_ERROR;
    return queue_buffer(c, bb, grpc_byte_buffer_length(bb));
}

void gs_gc_call_write_done(gc_call *c, int ok, gc_outbox *ob)
{
    c->send_busy = 0;
    if (c->send_bb) {
        grpc_byte_buffer_destroy(c->send_bb);
        c->send_bb = NULL;
        c->qbytes -= c->send_len;
        c->send_len = 0;
    }
    if (!ok) {
        gs_gc_call_end(c, GRPC_STATUS_UNAVAILABLE, "a write failed", ob);
        return;
    }
    pump(c);
}

void gs_gc_call_read(gc_call *c)
{
    if (c->recv_busy || c->finished)
        return;
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    int client = c->kind == GC_CLI_REPLICATE || c->kind == GC_CLI_SYNC;
    if (client && !c->got_md) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n].data.recv_initial_metadata.recv_initial_metadata = &c->md_in;
        n++;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = &c->recv_bb;
    n++;
    if (gs_gc_call_batch(c, GC_OP_RECV, ops, n) != GRPC_CALL_OK) {
        gs_gc_call_end(c, GRPC_STATUS_INTERNAL, "a read could not be started", NULL);
        return;
    }
    if (client)
        c->got_md = 1;
    c->recv_busy = 1;
}

grpc_slice gs_gc_call_take_message(gc_call *c, int *present)
{
    *present = 0;
    if (!c->recv_bb)
        return grpc_empty_slice();
    grpc_byte_buffer_reader r;
    grpc_slice s = grpc_empty_slice();
    if (grpc_byte_buffer_reader_init(&r, c->recv_bb)) {
        s = grpc_byte_buffer_reader_readall(&r);
        grpc_byte_buffer_reader_destroy(&r);
        *present = 1;
    }
    grpc_byte_buffer_destroy(c->recv_bb);
    c->recv_bb = NULL;
    return s;
}

static int is_server_call(const gc_call *c)
{
    return c->kind == GC_SRV_REPLICATE || c->kind == GC_SRV_SYNC || c->kind == GC_SRV_FORWARD ||
           c->kind == GC_SRV_HEALTH;
}

/* A graceful end of a server stream: status OK after the writes already started. 1 when the
 * batch started. */
static int send_status(gc_call *c, const char *why)
{
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!c->sent_md) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        c->sent_md = 1;
    }
    grpc_slice details = grpc_slice_from_copied_string(why ? why : "");
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = GRPC_STATUS_OK;
    ops[n].data.send_status_from_server.status_details = &details;
    n++;
    int ok = gs_gc_call_batch(c, GC_OP_STATUS, ops, n) == GRPC_CALL_OK;
    grpc_slice_unref(details);
    return ok;
}

void gs_gc_call_end(gc_call *c, grpc_status_code code, const char *why, gc_outbox *ob)
{
    if (c->finished)
        return;
    gc_inst *t = c->t;
    if (!ob)
        ob = &t->deferred;
    c->finished = 1;
    c->live = 0;
    drop_queue(c);
    if (c->call) {
        if (is_server_call(c)) {
            if (!c->status_sent && !c->closed) {
                c->status_sent = 1;
                if (code != GRPC_STATUS_OK || !send_status(c, why))
                    grpc_call_cancel_with_status(
                        c->call, code == GRPC_STATUS_OK ? GRPC_STATUS_UNAVAILABLE : code,
                        why ? why : "", NULL);
            }
        } else if (!c->closed) {
            grpc_call_cancel(c->call, NULL);
        }
    }
    gc_peer *p = c->peer;
    if (!p)
        return;
    int client_stream = 0;
    if (p->srv_repl == c)
        p->srv_repl = NULL;
    if (p->srv_sync == c)
        p->srv_sync = NULL;
    if (p->cli_repl == c) {
        p->cli_repl = NULL;
        client_stream = 1;
    }
    if (p->cli_sync == c) {
        p->cli_sync = NULL;
        client_stream = 1;
    }
    if (client_stream)
        gs_gc_client_stream_lost(t, p, ob);
    gs_gc_peer_sync_state(t, p, ob);
}

void gs_gc_call_maybe_free(gc_call *c)
{
    if (!c->finished || c->ops > 0)
        return;
    gc_inst *t = c->t;
    const gs_host *host = t->host;
    if (c->prev)
        c->prev->next = c->next;
    else
        t->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    t->ncalls--;
    drop_queue(c);
    if (c->send_bb)
        grpc_byte_buffer_destroy(c->send_bb);
    if (c->recv_bb)
        grpc_byte_buffer_destroy(c->recv_bb);
    if (c->unary_out)
        grpc_byte_buffer_destroy(c->unary_out);
    grpc_metadata_array_destroy(&c->md_in);
    grpc_metadata_array_destroy(&c->trailing);
    grpc_call_details_destroy(&c->details);
    grpc_slice_unref(c->status_details);
    if (c->call)
        grpc_call_unref(c->call);
    host->free(c->peer_addr);
    host->free(c->request_id);
    host->free(c);
    pthread_cond_broadcast(&t->cond);
}

/* ---- the outbox ---- */

static gc_event *event_new(gc_inst *t, gc_outbox *ob, const char *peer)
{
    size_t n = strlen(peer) + 1;
    gc_event *e = t->host->alloc(sizeof *e + n);
    if (!e) {
        t->host->log(t->host, GS_LOG_ERROR, GC_COMPONENT,
                     "out of memory: an event from %s for the core was dropped", peer);
        return NULL;
    }
    memset(e, 0, sizeof *e);
    memcpy(e->peer, peer, n);
    e->bytes = grpc_empty_slice();
    if (ob->tail)
        ob->tail->next = e;
    else
        ob->head = e;
    ob->tail = e;
    return e;
}

void gs_gc_outbox_message(gc_inst *t, gc_outbox *ob, const char *peer, gs_repl_msg_type type,
                          uint64_t call_id, grpc_slice bytes)
{
    gc_event *e = event_new(t, ob, peer);
    if (!e) {
        grpc_slice_unref(bytes);
        return;
    }
    e->type = type;
    e->call_id = call_id;
    e->bytes = bytes;
}

void gs_gc_outbox_peer(gc_inst *t, gc_outbox *ob, const char *peer, int connected)
{
    gc_event *e = event_new(t, ob, peer);
    if (!e)
        return;
    e->is_peer = 1;
    e->connected = connected;
}

void gs_gc_outbox_flush(gc_inst *t, gc_outbox *ob, int deliver)
{
    gc_event *e = ob->head;
    ob->head = ob->tail = NULL;
    while (e) {
        gc_event *next = e->next;
        if (deliver) {
            if (e->is_peer) {
                t->host->log(t->host, GS_LOG_INFO, GC_COMPONENT, "node '%s': peer %s %s",
                             t->node_id, e->peer, e->connected ? "connected" : "disconnected");
                if (t->events.on_peer)
                    t->events.on_peer(t->events.user, e->peer, e->connected);
            } else {
                t->events.on_message(t->events.user, e->peer, e->type, e->call_id,
                                     GRPC_SLICE_START_PTR(e->bytes), GRPC_SLICE_LENGTH(e->bytes));
            }
        }
        grpc_slice_unref(e->bytes);
        t->host->free(e);
        e = next;
    }
}
