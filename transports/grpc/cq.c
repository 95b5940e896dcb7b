/*
 * The completion-queue thread of a started grpc transport: it drives gRPC's I/O (the queue
 * polls), dispatches each completed batch to the server or client handlers under mu, runs the
 * timers (dials after backoff, server Forward deadlines) through the queue's wait deadline,
 * and delivers the collected events to the core with mu released. It never blocks on anything
 * but the completion queue, never sleeps, and runs no SQL.
 *
 * It exits when stop() shuts the queue down (GRPC_QUEUE_SHUTDOWN), after every call of the
 * instance was released.
 */
#include "grpc_internal.h"

#include <grpc/support/time.h>

#include <string.h>

#define GC_IDLE_WAIT_MS 1000

static int is_client_call(const gc_call *c)
{
    return c->kind == GC_CLI_REPLICATE || c->kind == GC_CLI_SYNC || c->kind == GC_CLI_FORWARD;
}

/* Move the deferred events (raised by send() or stop()) behind ob's. mu held. */
static void take_deferred(gc_inst *t, gc_outbox *ob)
{
    if (!t->deferred.head)
        return;
    if (ob->tail)
        ob->tail->next = t->deferred.head;
    else
        ob->head = t->deferred.head;
    ob->tail = t->deferred.tail;
    t->deferred.head = t->deferred.tail = NULL;
}

static void *cq_main(void *arg)
{
    gc_inst *t = arg;
    gc_outbox ob = {NULL, NULL};
    for (;;) {
        pthread_mutex_lock(&t->mu);
        uint64_t now = gs_gc_now_ms();
        uint64_t next = gs_gc_client_dial_due(t, now, &ob);
        uint64_t fwd = gs_gc_server_expire(t, now);
        if (fwd && (!next || fwd < next))
            next = fwd;
        take_deferred(t, &ob);
        int deliver = t->state == GC_RUNNING;
        pthread_mutex_unlock(&t->mu);
        gs_gc_outbox_flush(t, &ob, deliver);

        uint64_t wait = GC_IDLE_WAIT_MS;
        if (next) {
            uint64_t until = next > now ? next - now : 0;
            if (until < wait)
                wait = until;
        }
        gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                             gpr_time_from_millis((int64_t)wait, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(t->cq, deadline, NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        gc_tag *tag = ev.tag;
        pthread_mutex_lock(&t->mu);
        if (tag == &t->shutdown_tag) {
            t->server_shutdown_done = 1;
        } else {
            gc_call *c = tag->call;
            if (is_client_call(c))
                gs_gc_client_event(t, c, tag->op, ev.success, &ob);
            else
                gs_gc_server_event(t, c, tag->op, ev.success, &ob);
            gs_gc_call_maybe_free(c);
        }
        pthread_cond_broadcast(&t->cond);
        pthread_mutex_unlock(&t->mu);
    }
    pthread_mutex_lock(&t->mu);
    take_deferred(t, &ob);
    pthread_mutex_unlock(&t->mu);
    gs_gc_outbox_flush(t, &ob, 0);
    return NULL;
}

gs_status gs_gc_cq_thread_start(gc_inst *t, gs_error *err)
{
    if (pthread_create(&t->thread, NULL, cq_main, t) != 0) {
        t->host->error_set(err, 0, "INTERNAL_ERROR",
                           "grpc transport: cannot start the completion-queue thread");
        return GS_ERROR;
    }
    t->thread_live = 1;
    return GS_OK;
}
