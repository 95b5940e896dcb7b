/*
 * Watches of the memory coordinator and the store's delivery thread.
 *
 * A watch is a position in the store's history plus a key prefix. The delivery thread takes
 * one event at a time for one ready watch (round robin among them), releases the store lock,
 * calls the watch's callback, and takes the lock again: events reach each watch in history
 * (revision) order, one callback at a time, and the callback may call the coordinator. A watch
 * whose next event was compacted away, or that starts before the oldest kept revision, gets one
 * GS_WATCH_LOST and is then finished.
 *
 * Ending a watch (unwatch, stop) unlinks it under the lock and then waits on idle_cond while
 * its callback runs, so no callback of it starts or runs after the call returns. Called from
 * the delivery thread itself (a callback of another watch), it never waits for that thread.
 */
#include "memory_internal.h"

#include <string.h>

int gs_cmem_on_delivery_thread(const cmem_store *s)
{
    return s->deliverer_live && pthread_equal(pthread_self(), s->deliverer);
}

static const cmem_event *event_at(const cmem_store *s, uint64_t seq)
{
    return &s->ring[(s->ring_head + (size_t)(seq - s->base_seq)) % s->ring_cap];
}

gs_status gs_cmem_watch_add(cmem_inst *in, const uint8_t *prefix, size_t prefix_len,
                            int64_t start_revision, gs_watch_fn fn, void *user, uint64_t *id,
                            gs_error *err)
{
    if (gs_cmem_enter(in, err) != GS_OK)
        return GS_ERROR;
    cmem_store *s = in->store;
    cmem_watch *w = s->alloc(sizeof *w);
    cmem_blob *p = w ? gs_cmem_blob_new(s, (const uint8_t *)in->prefix, in->prefix_len, prefix,
                                        prefix_len, NULL, 0)
                     : NULL;
    if (!p) {
        s->free(w);
        pthread_mutex_unlock(&s->mu);
        in->host->error_set(err, 0, "INTERNAL_ERROR",
                            "memory coordinator: out of memory registering a watch");
        return GS_ERROR;
    }
    memset(w, 0, sizeof *w);
    w->inst = in;
    w->id = s->next_watch_id++;
    w->prefix = p;
    w->strip = in->prefix_len;
    w->fn = fn;
    w->user = user;
    uint64_t end = s->base_seq + s->ring_count;
    if (start_revision <= 0) {
        w->next_seq = end;
    } else if (start_revision <= s->compact_rev) {
        w->next_seq = s->base_seq;
        w->lost = 1; /* the history it asks for is gone */
    } else {
        uint64_t lo = s->base_seq, hi = end;
        while (lo < hi) {
            uint64_t mid = lo + (hi - lo) / 2;
            if (event_at(s, mid)->revision < start_revision)
                lo = mid + 1;
            else
                hi = mid;
        }
        w->next_seq = lo;
    }
    w->next = s->watches;
    s->watches = w;
    *id = w->id;
    pthread_cond_broadcast(&s->deliver_cond);
    pthread_mutex_unlock(&s->mu);
    return GS_OK;
}

static void watch_free(cmem_store *s, cmem_watch *w)
{
    gs_cmem_blob_unref(s, w->prefix);
    s->free(w);
}

static int has_prefix(const cmem_blob *key, const cmem_blob *prefix)
{
    return key->key_len >= prefix->key_len &&
           (!prefix->key_len || memcmp(key->bytes, prefix->bytes, prefix->key_len) == 0);
}

/* 1 when w has something to deliver now: its loss, or an event of its prefix at next_seq
 * (events of other keys are skipped for good). mu held. */
static int watch_ready(const cmem_store *s, cmem_watch *w)
{
    if (w->lost)
        return 1;
    if (w->next_seq < s->base_seq) {
        w->lost = 1; /* compacted before it was delivered */
        return 1;
    }
    uint64_t end = s->base_seq + s->ring_count;
    while (w->next_seq < end) {
        if (has_prefix(event_at(s, w->next_seq)->b, w->prefix))
            return 1;
        w->next_seq++;
    }
    return 0;
}

/* The ready watch that comes next in round robin (by id, after the last one served). */
static cmem_watch *pick(cmem_store *s)
{
    cmem_watch *after = NULL, *first = NULL;
    for (cmem_watch *w = s->watches; w; w = w->next) {
        if (!watch_ready(s, w))
            continue;
        if (w->id > s->last_delivered_id && (!after || w->id < after->id))
            after = w;
        if (!first || w->id < first->id)
            first = w;
    }
    return after ? after : first;
}

static void *deliver_main(void *arg)
{
    cmem_store *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        cmem_watch *w = pick(s);
        if (!w) {
            pthread_cond_wait(&s->deliver_cond, &s->mu);
            continue;
        }
        s->last_delivered_id = w->id;
        uint64_t wid = w->id;
        int lost = w->lost;
        cmem_event ev;
        memset(&ev, 0, sizeof ev);
        if (!lost) {
            ev = *event_at(s, w->next_seq);
            ev.b->refs++;
            w->next_seq++;
        }
        int64_t now_rev = s->revision;
        gs_watch_fn fn = w->fn;
        void *user = w->user;
        size_t strip = w->strip;
        s->delivering = w;
        pthread_mutex_unlock(&s->mu);

        if (lost) {
            fn(user, GS_WATCH_LOST, NULL, now_rev);
        } else {
            gs_kv kv = {.key = ev.b->bytes + strip,
                        .key_len = ev.b->key_len - strip,
                        .mod_revision = ev.revision};
            if (ev.type == GS_WATCH_PUT) {
                kv.value = ev.b->bytes + ev.b->key_len;
                kv.value_len = ev.b->value_len;
                kv.create_revision = ev.create_rev;
                kv.version = ev.version;
                kv.lease = ev.lease;
            }
            fn(user, ev.type, &kv, ev.revision);
        }

        pthread_mutex_lock(&s->mu);
        if (!lost) {
            gs_cmem_blob_unref(s, ev.b);
        } else {
            /* A lost watch is finished; unless unwatch/stop took it meanwhile, free it. */
            for (cmem_watch **pp = &s->watches; *pp; pp = &(*pp)->next)
                if ((*pp)->id == wid) {
                    cmem_watch *gone = *pp;
                    *pp = gone->next;
                    watch_free(s, gone);
                    break;
                }
        }
        s->delivering = NULL;
        pthread_cond_broadcast(&s->idle_cond);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

gs_status gs_cmem_deliverer_start(cmem_store *s)
{
    if (pthread_create(&s->deliverer, NULL, deliver_main, s) != 0)
        return GS_ERROR;
    s->deliverer_live = 1;
    return GS_OK;
}

void gs_cmem_watch_remove(cmem_inst *in, uint64_t id, int all)
{
    cmem_store *s = in->store;
    pthread_mutex_lock(&s->mu);
    cmem_watch *removed = NULL;
    for (cmem_watch **pp = &s->watches; *pp;) {
        cmem_watch *w = *pp;
        if (w->inst == in && (all || w->id == id)) {
            *pp = w->next;
            w->next = removed;
            removed = w;
            if (!all)
                break;
        } else {
            pp = &w->next;
        }
    }
    if (!gs_cmem_on_delivery_thread(s)) {
        /* Wait out a callback of a removed watch; nothing starts one again (unlinked). */
        for (;;) {
            int busy = 0;
            for (cmem_watch *w = removed; w && !busy; w = w->next)
                busy = s->delivering == w;
            if (!busy)
                break;
            pthread_cond_wait(&s->idle_cond, &s->mu);
        }
    }
    /* On the delivery thread, the callback running now (if one of these) is the caller
     * itself; the thread touches no watch after a callback returns, so freeing is safe. */
    while (removed) {
        cmem_watch *w = removed;
        removed = w->next;
        watch_free(s, w);
    }
    pthread_mutex_unlock(&s->mu);
}
