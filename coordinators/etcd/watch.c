/*
 * Watches of the etcd coordinator and the instance's completion-queue thread.
 *
 * Each watch is one /etcdserverpb.Watch/Watch stream carrying one WatchCreateRequest (the key
 * prefix + the core's prefix, its range end, the start revision). watch() waits, bounded by
 * call_timeout_ms, until etcd confirms the watch (created), so a refusal is reported by the
 * call; a start revision of 0 is first turned into "the revision now + 1" by a linearisable
 * read, so nothing written after watch() returns is missed.
 *
 * The completion-queue thread completes every batch of every stream. A WatchResponse's events
 * are queued for the core and delivered after the instance lock is released, one watch at a
 * time, in the order etcd sent them. When a stream ends, is cancelled by etcd, or reports a
 * compaction, the watch gets one GS_WATCH_LOST (queued in an item it owns, so no allocation can
 * fail there) and is finished. The thread never blocks except in grpc_completion_queue_next.
 *
 * unwatch() marks the watch dead (no callback starts), cancels its call and waits while its
 * callback runs (never on the completion-queue thread itself). stop() does that for every
 * watch and waits until gRPC completed their batches before it shuts the queue down.
 */
#include "etcd_internal.h"

#include <grpc/support/time.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#define EC_STOP_LOG_EVERY_MS 5000

typedef struct ec_outbox {
    ec_item *head, *tail;
} ec_outbox;

int gs_etcd_on_cq_thread(const ec_inst *t)
{
    return t->thread_live && pthread_equal(pthread_self(), t->thread);
}

static void timed_wait(ec_inst *t, uint64_t until_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = gs_etcd_now_ms();
    uint64_t ms = until_ms > now ? until_ms - now : 0;
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&t->cond, &t->mu, &ts);
}

/* Free w once nobody needs it: detached, no batch outstanding, no reference. mu held. */
static void watch_release(ec_watch *w)
{
    if (!w->detached || w->ops || w->refs)
        return;
    ec_inst *t = w->t;
    for (ec_watch **pp = &t->watches; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    if (w->call)
        grpc_call_unref(w->call);
    if (w->send_bb)
        grpc_byte_buffer_destroy(w->send_bb);
    if (w->recv_bb)
        grpc_byte_buffer_destroy(w->recv_bb);
    grpc_metadata_array_destroy(&w->md_in);
    grpc_metadata_array_destroy(&w->trailing);
    grpc_slice_unref(w->details);
    if (w->has_token)
        grpc_slice_unref(w->token_md.value);
    t->host->free(w);
    pthread_cond_broadcast(&t->cond);
}

static void queue(ec_outbox *ob, ec_item *it)
{
    it->next = NULL;
    if (ob->tail)
        ob->tail->next = it;
    else
        ob->head = it;
    ob->tail = it;
    it->w->refs++;
}

/* The watch cannot keep its promise: one GS_WATCH_LOST, and the stream is ended. mu held. */
static void lose(ec_watch *w, ec_outbox *ob, int64_t rev, const char *why)
{
    if (!w->lost_queued && w->created && !w->dead) {
        w->lost_queued = 1;
        w->lost_rev = rev;
        snprintf(w->why, sizeof w->why, "%s", why);
        w->lost_item.w = w;
        w->lost_item.msg = NULL;
        queue(ob, &w->lost_item);
        w->t->host->log(w->t->host, GS_LOG_INFO, EC_COMPONENT, "watch %llu on %s lost: %s",
                        (unsigned long long)w->id, w->ep->url, why);
    }
    if (!w->ended && w->call)
        grpc_call_cancel(w->call, NULL);
}

static void start_read(ec_watch *w)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &w->recv_bb;
    if (grpc_call_start_batch(w->call, &op, 1, &w->tag_recv, NULL) == GRPC_CALL_OK)
        w->ops++;
    else if (!w->ended)
        grpc_call_cancel(w->call, NULL); /* the status batch will end it */
}

static void on_message(ec_inst *t, ec_watch *w, ec_outbox *ob)
{
    Etcdserverpb__WatchResponse *resp = (Etcdserverpb__WatchResponse *)gs_etcd_unpack(
        t->host, &etcdserverpb__watch_response__descriptor, w->recv_bb);
    grpc_byte_buffer_destroy(w->recv_bb);
    w->recv_bb = NULL;
    if (!resp) {
        if (!w->created) {
            w->failed = 1;
            snprintf(w->why, sizeof w->why, "etcd sent a watch answer that does not parse");
            pthread_cond_broadcast(&t->cond);
        }
        lose(w, ob, 0, "an answer that does not parse (or out of memory)");
        return;
    }
    int64_t rev = resp->header ? resp->header->revision : 0;
    if (!w->created) {
        if (!resp->created || resp->canceled) {
            w->failed = 1;
            snprintf(w->why, sizeof w->why, "etcd did not create the watch: %s",
                     resp->cancel_reason && *resp->cancel_reason ? resp->cancel_reason
                                                                 : "no reason given");
            pthread_cond_broadcast(&t->cond);
            gs_etcd_free_msg(t->host, &resp->base);
            if (!w->ended)
                grpc_call_cancel(w->call, NULL);
            return;
        }
        w->created = 1;
        pthread_cond_broadcast(&t->cond);
    }
    if (resp->compact_revision > 0) {
        char why[200];
        snprintf(why, sizeof why, "history compacted up to revision %lld",
                 (long long)resp->compact_revision);
        lose(w, ob, rev, why);
        gs_etcd_free_msg(t->host, &resp->base);
        return;
    }
    if (resp->canceled) {
        char why[300];
        snprintf(why, sizeof why, "cancelled by etcd: %s",
                 resp->cancel_reason && *resp->cancel_reason ? resp->cancel_reason : "no reason");
        lose(w, ob, rev, why);
        gs_etcd_free_msg(t->host, &resp->base);
        return;
    }
    if (resp->n_events && !w->dead) {
        ec_item *it = t->host->alloc(sizeof *it);
        if (!it) {
            gs_etcd_free_msg(t->host, &resp->base);
            lose(w, ob, rev, "out of memory queueing events");
            return;
        }
        it->w = w;
        it->msg = resp;
        queue(ob, it);
    } else {
        gs_etcd_free_msg(t->host, &resp->base);
    }
    if (!w->dead && !w->ended)
        start_read(w);
}

static void on_status(ec_inst *t, ec_watch *w, ec_outbox *ob)
{
    w->ended = 1;
    if (!w->created) {
        if (!w->failed) {
            w->failed = 1;
            snprintf(w->why, sizeof w->why, "%.*s (gRPC status %d)",
                     (int)GRPC_SLICE_LENGTH(w->details),
                     (const char *)GRPC_SLICE_START_PTR(w->details), (int)w->status);
        }
        pthread_cond_broadcast(&t->cond);
        return;
    }
    char why[300];
    snprintf(why, sizeof why, "the stream ended: %.*s (gRPC status %d)",
             (int)GRPC_SLICE_LENGTH(w->details), (const char *)GRPC_SLICE_START_PTR(w->details),
             (int)w->status);
    lose(w, ob, 0, why);
}

/* Hand the queued items to the core, with mu released. */
static void deliver(ec_inst *t, ec_outbox *ob)
{
    while (ob->head) {
        ec_item *it = ob->head;
        ob->head = it->next;
        if (!ob->head)
            ob->tail = NULL;
        ec_watch *w = it->w;
        pthread_mutex_lock(&t->mu);
        int run = !w->dead;
        if (run) {
            t->delivering = w;
            if (!it->msg) {
                w->dead = 1; /* a lost watch is finished */
                w->detached = 1;
            }
        }
        pthread_mutex_unlock(&t->mu);
        if (run && !it->msg) {
            w->fn(w->user, GS_WATCH_LOST, NULL, w->lost_rev);
        } else if (run) {
            for (size_t i = 0; i < it->msg->n_events; i++) {
                const Mvccpb__Event *e = it->msg->events[i];
                const Mvccpb__KeyValue *kv = e->kv;
                if (i) {
                    pthread_mutex_lock(&t->mu);
                    int dead = w->dead;
                    pthread_mutex_unlock(&t->mu);
                    if (dead)
                        break;
                }
                if (!kv || kv->key.len < t->prefix_len ||
                    memcmp(kv->key.data, t->prefix, t->prefix_len) != 0)
                    continue;
                gs_kv out = {.key = kv->key.data + t->prefix_len,
                             .key_len = kv->key.len - t->prefix_len,
                             .mod_revision = kv->mod_revision};
                int type =
                    e->type == MVCCPB__EVENT__EVENT_TYPE__DELETE ? GS_WATCH_DELETE : GS_WATCH_PUT;
                if (type == GS_WATCH_PUT) {
                    out.value = kv->value.data;
                    out.value_len = kv->value.len;
                    out.create_revision = kv->create_revision;
                    out.version = kv->version;
                    out.lease = kv->lease;
                }
                w->fn(w->user, type, &out, kv->mod_revision);
            }
        }
        if (it->msg) {
            gs_etcd_free_msg(t->host, &it->msg->base);
            t->host->free(it);
        }
        pthread_mutex_lock(&t->mu);
        if (run)
            t->delivering = NULL;
        w->refs--;
        pthread_cond_broadcast(&t->cond);
        watch_release(w);
        pthread_mutex_unlock(&t->mu);
    }
}

static void *cq_main(void *arg)
{
    ec_inst *t = arg;
    ec_outbox ob = {NULL, NULL};
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(t->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        ec_tag *tag = ev.tag;
        ec_watch *w = tag->w;
        pthread_mutex_lock(&t->mu);
        w->ops--;
        switch (tag->op) {
        case EC_OP_SEND:
            grpc_byte_buffer_destroy(w->send_bb);
            w->send_bb = NULL;
            break;
        case EC_OP_RECV:
            if (ev.success && w->recv_bb)
                on_message(t, w, &ob);
            break; /* otherwise the stream is ending: the status follows */
        case EC_OP_STATUS: on_status(t, w, &ob); break;
        }
        watch_release(w);
        pthread_mutex_unlock(&t->mu);
        deliver(t, &ob);
    }
    return NULL;
}

gs_status gs_etcd_cq_start(ec_inst *t, gs_error *err)
{
    t->cq = grpc_completion_queue_create_for_next(NULL);
    if (!t->cq)
        return EC_FAIL(t, err, "COORDINATOR_UNAVAILABLE",
                       "etcd coordinator: cannot create a gRPC completion queue");
    if (pthread_create(&t->thread, NULL, cq_main, t) != 0) {
        grpc_completion_queue_shutdown(t->cq);
        grpc_completion_queue_destroy(t->cq);
        t->cq = NULL;
        return EC_FAIL(t, err, "INTERNAL_ERROR",
                       "etcd coordinator: cannot start the completion-queue thread");
    }
    t->thread_live = 1;
    return GS_OK;
}

void gs_etcd_cq_stop(ec_inst *t)
{
    pthread_mutex_lock(&t->mu);
    for (ec_watch *w = t->watches; w; w = w->next) {
        w->dead = 1;
        w->detached = 1;
        if (!w->ended && w->call)
            grpc_call_cancel(w->call, NULL);
    }
    pthread_cond_broadcast(&t->cond);
    uint64_t next_log = gs_etcd_now_ms() + EC_STOP_LOG_EVERY_MS;
    while (t->watches || t->delivering) {
        timed_wait(t, gs_etcd_now_ms() + 200);
        if ((t->watches || t->delivering) && gs_etcd_now_ms() >= next_log) {
            next_log = gs_etcd_now_ms() + EC_STOP_LOG_EVERY_MS;
            t->host->log(t->host, GS_LOG_WARN, EC_COMPONENT,
                         "stop() still waits for gRPC to release the watch streams");
        }
    }
    pthread_mutex_unlock(&t->mu);
    if (t->cq) {
        grpc_completion_queue_shutdown(t->cq);
        if (t->thread_live)
            pthread_join(t->thread, NULL);
        t->thread_live = 0;
        grpc_completion_queue_destroy(t->cq);
        t->cq = NULL;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* watch / unwatch                                                                            */

/* Open the stream of w on its endpoint: the create request, the first read, the status.
 * mu held. 0, or -1 when gRPC refused a batch (the call is cancelled; its status follows). */
static int open_stream(ec_inst *t, ec_watch *w, grpc_byte_buffer *req)
{
    w->call = grpc_channel_create_call(w->ep->channel, NULL, GRPC_PROPAGATE_DEFAULTS, t->cq,
                                       grpc_slice_from_static_string(EC_METHOD_WATCH), NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (!w->call)
        return -1;
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (w->has_token) {
        ops[0].data.send_initial_metadata.count = 1;
        ops[0].data.send_initial_metadata.metadata = &w->token_md;
    }
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    w->send_bb = req;
    if (grpc_call_start_batch(w->call, ops, 2, &w->tag_send, NULL) != GRPC_CALL_OK) {
        w->send_bb = NULL;
        grpc_byte_buffer_destroy(req);
        grpc_call_cancel(w->call, NULL);
        return -1;
    }
    w->ops++;
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[0].data.recv_initial_metadata.recv_initial_metadata = &w->md_in;
    ops[1].op = GRPC_OP_RECV_MESSAGE;
    ops[1].data.recv_message.recv_message = &w->recv_bb;
    if (grpc_call_start_batch(w->call, ops, 2, &w->tag_recv, NULL) == GRPC_CALL_OK)
        w->ops++;
    grpc_op st;
    memset(&st, 0, sizeof st);
    st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    st.data.recv_status_on_client.trailing_metadata = &w->trailing;
    st.data.recv_status_on_client.status = &w->status;
    st.data.recv_status_on_client.status_details = &w->details;
    if (grpc_call_start_batch(w->call, &st, 1, &w->tag_status, NULL) != GRPC_CALL_OK) {
        grpc_call_cancel(w->call, NULL);
        w->ended = 1;
        w->failed = 1;
        snprintf(w->why, sizeof w->why, "gRPC refused to start the watch stream");
        return -1;
    }
    w->ops++;
    return 0;
}

static ec_watch *watch_new(ec_inst *t, ec_endpoint *ep, gs_watch_fn fn, void *user,
                           const char *token)
{
    ec_watch *w = t->host->alloc(sizeof *w);
    if (!w)
        return NULL;
    memset(w, 0, sizeof *w);
    w->t = t;
    w->ep = ep;
    w->fn = fn;
    w->user = user;
    w->tag_send = (ec_tag){w, EC_OP_SEND};
    w->tag_recv = (ec_tag){w, EC_OP_RECV};
    w->tag_status = (ec_tag){w, EC_OP_STATUS};
    grpc_metadata_array_init(&w->md_in);
    grpc_metadata_array_init(&w->trailing);
    w->details = grpc_empty_slice();
    w->status = GRPC_STATUS_OK;
    if (token && *token) {
        w->token_md.key = grpc_slice_from_static_string("token");
        w->token_md.value = grpc_slice_from_copied_string(token);
        w->has_token = 1;
    }
    w->refs = 1; /* watch()'s, while it waits for the creation */
    w->next = t->watches;
    t->watches = w;
    return w;
}

gs_status gs_etcd_watch(ec_inst *t, const uint8_t *prefix, size_t prefix_len,
                        int64_t start_revision, gs_watch_fn fn, void *user, uint64_t *watch_id,
                        gs_error *err)
{
    if (!start_revision) {
        int64_t now_rev;
        if (gs_etcd_revision_now(t, t->call_timeout_ms, &now_rev, err) != GS_OK)
            return GS_ERROR;
        start_revision = now_rev + 1;
    }
    ec_arena a = {.host = t->host};
    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cr.key = gs_etcd_arena_key(&a, t->prefix, t->prefix_len, prefix, prefix_len);
    if (!a.failed)
        cr.range_end = gs_etcd_range_end(&a, cr.key);
    cr.start_revision = start_revision;
    Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
    wr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    wr.create_request = &cr;

    uint64_t deadline = gs_etcd_now_ms() + (uint64_t)t->call_timeout_ms;
    pthread_mutex_lock(&t->mu);
    size_t start = (size_t)t->current;
    pthread_mutex_unlock(&t->mu);
    char last[600] = "no endpoint answered";
    gs_status rc = GS_ERROR;
    int refused = 0, retried_auth = 0;
    for (size_t i = 0; i < t->neps && !a.failed && rc != GS_OK && !refused;) {
        ec_endpoint *ep = &t->eps[(start + i) % t->neps];
        uint64_t now = gs_etcd_now_ms();
        if (now >= deadline)
            break;
        char tok[4096];
        int unreachable = 0;
        if (gs_etcd_token(t, ep, deadline, tok, sizeof tok, &unreachable, err) != GS_OK) {
            if (!unreachable) {
                refused = 1; /* err says why */
                break;
            }
            snprintf(last, sizeof last, "%s", err->message);
            i++;
            continue;
        }
        grpc_byte_buffer *req = gs_etcd_pack(t->host, &wr.base);
        if (!req) {
            a.failed = 1;
            break;
        }
        pthread_mutex_lock(&t->mu);
        if (t->state != EC_RUNNING) {
            pthread_mutex_unlock(&t->mu);
            grpc_byte_buffer_destroy(req);
            snprintf(last, sizeof last, "the instance is not started, or was stopped");
            break;
        }
        ec_watch *w = watch_new(t, ep, fn, user, tok);
        if (!w) {
            pthread_mutex_unlock(&t->mu);
            grpc_byte_buffer_destroy(req);
            a.failed = 1;
            break;
        }
        open_stream(t, w, req);
        while (!w->created && !w->failed && t->state == EC_RUNNING && gs_etcd_now_ms() < deadline)
            timed_wait(t, deadline);
        int unavailable = 0, bad_token = 0;
        if (w->created && !w->dead && t->state == EC_RUNNING) {
            w->id = ++t->next_watch_id;
            *watch_id = w->id;
            rc = GS_OK;
        } else {
            if (w->failed) {
                snprintf(last, sizeof last, "%s: %s", ep->url, w->why);
                unavailable = w->ended && (w->status == GRPC_STATUS_UNAVAILABLE ||
                                           w->status == GRPC_STATUS_DEADLINE_EXCEEDED);
                bad_token = (w->ended && w->status == GRPC_STATUS_UNAUTHENTICATED) ||
                            strstr(w->why, "invalid auth token") != NULL;
            } else if (t->state != EC_RUNNING) {
                snprintf(last, sizeof last, "the instance was stopped");
            } else {
                snprintf(last, sizeof last, "%s did not confirm the watch within %lld ms", ep->url,
                         (long long)t->call_timeout_ms);
            }
            w->dead = 1;
            w->detached = 1;
            if (!w->ended)
                grpc_call_cancel(w->call, NULL);
        }
        w->refs--;
        watch_release(w);
        pthread_mutex_unlock(&t->mu);
        if (rc == GS_OK)
            break;
        if (bad_token && t->username && !retried_auth) {
            retried_auth = 1;
            gs_etcd_token_invalid(t, ep, tok);
            continue; /* the same endpoint, with a new token */
        }
        if (!unavailable)
            break;
        i++;
    }
    gs_etcd_arena_free(&a);
    if (rc == GS_OK)
        return GS_OK;
    if (refused)
        return GS_ERROR;
    if (a.failed)
        return EC_FAIL(t, err, "INTERNAL_ERROR", "etcd coordinator: out of memory opening a watch");
    return EC_FAIL(t, err, "COORDINATOR_UNAVAILABLE",
                   "etcd coordinator: cannot open a watch on %s: %s", t->endpoint_list, last);
}

void gs_etcd_unwatch(ec_inst *t, uint64_t watch_id)
{
    pthread_mutex_lock(&t->mu);
    ec_watch *w = t->watches;
    while (w && !(w->id == watch_id && !w->detached))
        w = w->next;
    if (w) {
        w->dead = 1;
        w->detached = 1;
        if (!w->ended && w->call)
            grpc_call_cancel(w->call, NULL);
        w->refs++;
        if (!gs_etcd_on_cq_thread(t))
            while (t->delivering == w)
                timed_wait(t, gs_etcd_now_ms() + 1000);
        w->refs--;
        watch_release(w);
    }
    pthread_mutex_unlock(&t->mu);
}
