/*
 * memory transport: one receiver's inbound queue and its delivery thread.
 *
 * Promise: entries leave the queue in deliver_at order, ties in insertion order; each pair's
 * entries get non-decreasing deliver_at values (pair->last_at), so a pair stays in send order
 * whatever delays other pairs draw. A reordered message is held back (deliver_at = its place
 * + hold_ms) until the pair's next message is queued, which takes its place; if none comes
 * within hold_ms it is delivered where it is. The delivery thread calls on_message and on_peer
 * with no lock held and stops after the callback it is in once told to stop.
 *
 * Ownership: the queue owns its entries and pairs; an entry is freed with the free function
 * of the host that allocated it.
 *
 * Threads: the queue functions run under inst->qlock (from send(), bus operations and the
 * delivery thread); gs_mt_delivery_* run on the core's main thread.
 */
#include "memory_internal.h"

#include <errno.h>
#include <string.h>
#include <time.h>

uint64_t gs_mt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

gs_mt_entry *gs_mt_entry_new(const gs_host *host, gs_mt_entry_kind kind, size_t len)
{
    if (len > SIZE_MAX - sizeof(gs_mt_entry))
        return NULL;
    gs_mt_entry *e = host->alloc(sizeof *e + len);
    if (!e)
        return NULL;
    memset(e, 0, sizeof *e);
    e->free_fn = host->free;
    e->kind = kind;
    e->copies = 1;
    e->len = len;
    return e;
}

void gs_mt_entry_free(gs_mt_entry *e)
{
    if (e)
        e->free_fn(e);
}

gs_mt_pair *gs_mt_pair_find(gs_mt_inst *inst, const char *from)
{
    for (gs_mt_pair *p = inst->pairs; p; p = p->next)
        if (strcmp(p->from, from) == 0)
            return p;
    return NULL;
}

/* ---- the sorted list ---- */

static void unlink_entry(gs_mt_inst *inst, gs_mt_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        inst->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        inst->tail = e->prev;
    e->prev = e->next = NULL;
}

static void insert_after(gs_mt_inst *inst, gs_mt_entry *at, gs_mt_entry *e)
{
    e->prev = at;
    e->next = at ? at->next : inst->head;
    if (e->next)
        e->next->prev = e;
    else
        inst->tail = e;
    if (at)
        at->next = e;
    else
        inst->head = e;
}

/* After every entry whose deliver_at is not later than e's (stable), scanning from the tail:
 * most entries go last, so this is O(1) unless delays differ. */
static void insert_sorted(gs_mt_inst *inst, gs_mt_entry *e)
{
    gs_mt_entry *at = inst->tail;
    while (at && at->deliver_at > e->deliver_at)
        at = at->prev;
    insert_after(inst, at, e);
    pthread_cond_signal(&inst->qcond);
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

void gs_mt_queue_message(gs_mt_inst *inst, gs_mt_pair *pair, gs_mt_entry *e, const gs_mt_fate *fate,
                         uint64_t hold_ms)
{
    e->pair = pair;
    e->copies = fate->duplicate ? 2 : 1;
    inst->queued_bytes += e->len;
    uint64_t at = max_u64(gs_mt_now_ms() + fate->delay_ms, pair->last_at);
    gs_mt_entry *held = pair->held;
    if (fate->reorder && !held) {
        /* Hold it back: the pair's next message takes its place. last_at is untouched, so
         * that next message can go ahead of it. */
        e->deliver_at = at + hold_ms;
        pair->held = e;
        insert_sorted(inst, e);
        return;
    }
    e->deliver_at = at;
    pair->last_at = at;
    insert_sorted(inst, e);
    if (held) {
        /* The held message follows this one: the swap. */
        unlink_entry(inst, held);
        held->deliver_at = at;
        insert_after(inst, e, held);
        pair->held = NULL;
    }
}

void gs_mt_queue_release_held(gs_mt_inst *inst, gs_mt_pair *pair)
{
    gs_mt_entry *held = pair->held;
    if (!held)
        return;
    unlink_entry(inst, held);
    held->deliver_at = max_u64(gs_mt_now_ms(), pair->last_at);
    pair->last_at = held->deliver_at;
    pair->held = NULL;
    insert_sorted(inst, held);
}

void gs_mt_queue_event(gs_mt_inst *inst, gs_mt_pair *pair, gs_mt_entry *e)
{
    e->pair = pair;
    e->deliver_at = max_u64(gs_mt_now_ms(), pair->last_at);
    pair->last_at = e->deliver_at;
    insert_sorted(inst, e);
}

void gs_mt_queue_purge_pair(gs_mt_inst *inst, gs_mt_pair *pair)
{
    /* What the pair keeps queued (its events) bounds its next deliver_at; the purged messages
     * must not delay what comes next (a down event would wait out their delay). */
    uint64_t last = 0;
    gs_mt_entry *e = inst->head;
    while (e) {
        gs_mt_entry *next = e->next;
        if (e->pair == pair && e->kind == GS_MT_MESSAGE) {
            unlink_entry(inst, e);
            inst->queued_bytes -= e->len;
            atomic_fetch_add(&inst->dropped, (unsigned long long)e->copies);
            gs_mt_entry_free(e);
        } else if (e->pair == pair) {
            last = max_u64(last, e->deliver_at);
        }
        e = next;
    }
    pair->held = NULL;
    pair->last_at = last;
}

/* ---- the delivery thread ---- */

/* The instance whose delivery thread this is (NULL on every other thread): set by the thread
 * itself, so a callback that calls stop() is recognised however early it runs. */
static _Thread_local const gs_mt_inst *current_delivery;

static struct timespec abs_deadline(uint64_t at_ms)
{
    struct timespec ts = {.tv_sec = (time_t)(at_ms / 1000),
                          .tv_nsec = (long)(at_ms % 1000) * 1000000L};
    return ts;
}

static void deliver(gs_mt_inst *inst, gs_mt_entry *e)
{
    const gs_repl_events *ev = &inst->events;
    const char *from = e->pair->from;
    if (e->kind == GS_MT_MESSAGE) {
        for (int i = 0; i < e->copies; i++) {
            ev->on_message(ev->user, from, e->type, e->call_id, e->bytes, e->len);
            atomic_fetch_add(&inst->delivered, 1);
        }
    } else if (ev->on_peer) {
        ev->on_peer(ev->user, from, e->kind == GS_MT_PEER_UP);
    }
}

static void *delivery_main(void *arg)
{
    gs_mt_inst *inst = arg;
    current_delivery = inst;
    pthread_mutex_lock(&inst->qlock);
    while (!inst->stopping) {
        gs_mt_entry *e = inst->head;
        if (!e) {
            pthread_cond_wait(&inst->qcond, &inst->qlock);
            continue;
        }
        if (e->deliver_at > gs_mt_now_ms()) {
            struct timespec ts = abs_deadline(e->deliver_at);
            pthread_cond_timedwait(&inst->qcond, &inst->qlock, &ts);
            continue;
        }
        unlink_entry(inst, e);
        if (e->kind == GS_MT_MESSAGE) {
            inst->queued_bytes -= e->len;
            gs_mt_pair *pair = e->pair;
            if (pair->held == e) {
                /* Nothing followed within hold_ms: it goes where it was. */
                pair->held = NULL;
                pair->last_at = max_u64(pair->last_at, e->deliver_at);
            }
        }
        pthread_mutex_unlock(&inst->qlock);
        deliver(inst, e);
        gs_mt_entry_free(e);
        pthread_mutex_lock(&inst->qlock);
    }
    pthread_mutex_unlock(&inst->qlock);
    return NULL;
}

gs_status gs_mt_delivery_start(gs_mt_inst *inst, gs_error *err)
{
    pthread_mutex_lock(&inst->qlock);
    inst->stopping = 0;
    pthread_mutex_unlock(&inst->qlock);
    int rc = pthread_create(&inst->thread, NULL, delivery_main, inst);
    if (rc != 0) {
        inst->host->error_set(err, 0, "INTERNAL_ERROR",
                              "memory transport '%s': cannot start its delivery thread: %s",
                              inst->node_id, strerror(rc));
        return GS_ERROR;
    }
    inst->thread_live = 1;
    return GS_OK;
}

void gs_mt_delivery_signal_stop(gs_mt_inst *inst)
{
    pthread_mutex_lock(&inst->qlock);
    inst->stopping = 1;
    pthread_cond_broadcast(&inst->qcond);
    pthread_mutex_unlock(&inst->qlock);
}

int gs_mt_on_delivery_thread(const gs_mt_inst *inst)
{
    return current_delivery == inst;
}

void gs_mt_delivery_reap(gs_mt_inst *inst)
{
    if (inst->thread_live) {
        gs_mt_delivery_signal_stop(inst);
        pthread_join(inst->thread, NULL);
        inst->thread_live = 0;
    }
    pthread_mutex_lock(&inst->qlock);
    gs_mt_entry *e = inst->head;
    while (e) {
        gs_mt_entry *next = e->next;
        if (e->kind == GS_MT_MESSAGE)
            atomic_fetch_add(&inst->dropped, (unsigned long long)e->copies);
        gs_mt_entry_free(e);
        e = next;
    }
    inst->head = inst->tail = NULL;
    inst->queued_bytes = 0;
    gs_mt_pair *p = inst->pairs;
    while (p) {
        gs_mt_pair *next = p->next;
        gs_mt_entry_free(p->down_reserve);
        inst->host->free(p->from);
        inst->host->free(p);
        p = next;
    }
    inst->pairs = NULL;
    pthread_mutex_unlock(&inst->qlock);
}
