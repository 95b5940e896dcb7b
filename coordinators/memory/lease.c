/*
 * Leases of the memory coordinator: grant, keepalive, revoke, and expiry by the monotonic
 * clock. A lease lives exactly ttl_ms after its grant or last keepalive (no rounding). When it
 * expires or is revoked, every key attached to it is deleted in one revision and watchers see
 * the deletes.
 *
 * Expiry happens in two places, both under the store lock: at the start of every operation
 * (so no call ever observes a lease, or a key of a lease, past its time) and on the store's
 * sweeper thread, which waits on a condition variable until the earliest expiry (at most
 * CMEM_SWEEP_IDLE_MS) so keys of an idle store still disappear on time and watchers hear it.
 */
#include "memory_internal.h"

#include <string.h>
#include <time.h>

cmem_lease *gs_cmem_lease_find(cmem_store *s, int64_t id)
{
    size_t lo = 0, hi = s->nleases;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->leases[mid].id == id)
            return &s->leases[mid];
        if (s->leases[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Delete lease idx and its keys (one revision when it had keys). mu held. */
static void lease_remove(cmem_store *s, size_t idx)
{
    cmem_lease l = s->leases[idx];
    memmove(&s->leases[idx], &s->leases[idx + 1], (s->nleases - idx - 1) * sizeof *s->leases);
    s->nleases--;
    size_t nkeys = 0;
    for (size_t i = 0; i < s->nkv; i++)
        nkeys += s->kvs[i].lease == l.id;
    if (!nkeys)
        return;
    int64_t rev = ++s->revision;
    int record = gs_cmem_history_reserve(s, nkeys) == 0;
    for (size_t i = s->nkv; i-- > 0;)
        if (s->kvs[i].lease == l.id)
            gs_cmem_remove_at(s, i, rev, record);
    if (record) {
        /* The deletes went in reverse key order; watchers get them in key order. */
        size_t first = s->ring_count - nkeys;
        for (size_t a = first, b = s->ring_count - 1; a < b; a++, b--) {
            cmem_event *ea = &s->ring[(s->ring_head + a) % s->ring_cap];
            cmem_event *eb = &s->ring[(s->ring_head + b) % s->ring_cap];
            cmem_event t = *ea;
            *ea = *eb;
            *eb = t;
        }
        gs_cmem_history_trim(s);
    } else {
        gs_cmem_history_forget(s, rev);
    }
}

void gs_cmem_expire_due(cmem_store *s, uint64_t now)
{
    for (size_t i = 0; i < s->nleases;) {
        if (s->leases[i].expires_at <= now)
            lease_remove(s, i);
        else
            i++;
    }
}

gs_status gs_cmem_lease_grant(cmem_inst *in, int64_t ttl_ms, int64_t *id, gs_error *err)
{
    if (gs_cmem_enter(in, err) != GS_OK)
        return GS_ERROR;
    cmem_store *s = in->store;
    if (s->nleases == s->lease_cap) {
        size_t cap = s->lease_cap ? s->lease_cap * 2 : 16;
        cmem_lease *n = s->realloc(s->leases, cap * sizeof *n);
        if (!n) {
            pthread_mutex_unlock(&s->mu);
            in->host->error_set(err, 0, "INTERNAL_ERROR",
                                "memory coordinator: out of memory granting a lease");
            return GS_ERROR;
        }
        s->leases = n;
        s->lease_cap = cap;
    }
    cmem_lease *l = &s->leases[s->nleases++];
    *l = (cmem_lease){.id = s->next_lease_id++,
                      .ttl_ms = ttl_ms,
                      .expires_at = gs_cmem_now_ms() + (uint64_t)ttl_ms};
    *id = l->id;
    pthread_cond_broadcast(&s->sweep_cond);
    pthread_mutex_unlock(&s->mu);
    return GS_OK;
}

gs_status gs_cmem_lease_keepalive(cmem_inst *in, int64_t id, int64_t *ttl_ms_left, gs_error *err)
{
    if (gs_cmem_enter(in, err) != GS_OK)
        return GS_ERROR;
    cmem_store *s = in->store;
    cmem_lease *l = gs_cmem_lease_find(s, id);
    if (!l) {
        pthread_mutex_unlock(&s->mu);
        return GS_DECLINED;
    }
    l->expires_at = gs_cmem_now_ms() + (uint64_t)l->ttl_ms;
    *ttl_ms_left = l->ttl_ms;
    pthread_mutex_unlock(&s->mu);
    return GS_OK;
}

gs_status gs_cmem_lease_revoke(cmem_inst *in, int64_t id, gs_error *err)
{
    if (gs_cmem_enter(in, err) != GS_OK)
        return GS_ERROR;
    cmem_store *s = in->store;
    cmem_lease *l = gs_cmem_lease_find(s, id);
    if (l)
        lease_remove(s, (size_t)(l - s->leases));
    pthread_mutex_unlock(&s->mu);
    return GS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* The sweeper                                                                                */

static void *sweeper_main(void *arg)
{
    cmem_store *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        uint64_t now = gs_cmem_now_ms();
        gs_cmem_expire_due(s, now);
        uint64_t wake = now + CMEM_SWEEP_IDLE_MS;
        for (size_t i = 0; i < s->nleases; i++)
            if (s->leases[i].expires_at < wake)
                wake = s->leases[i].expires_at;
        /* Sleep until the earliest expiry, or until a grant / stop signals a change. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ms = wake > now ? wake - now : 0;
        ts.tv_sec += (time_t)(ms / 1000);
        ts.tv_nsec += (long)(ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->sweep_cond, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

gs_status gs_cmem_sweeper_start(cmem_store *s)
{
    if (pthread_create(&s->sweeper, NULL, sweeper_main, s) != 0)
        return GS_ERROR;
    s->sweeper_live = 1;
    return GS_OK;
}
