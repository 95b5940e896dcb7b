/*
 * The memory coordinator's stores: the process-wide registry of named stores (so several
 * nodes of one process share one key space), the sorted key table with etcd's revision
 * bookkeeping, range reads, transactions, and the event history watches read from.
 *
 * A store is created by the first instance that names it and freed when the last one leaves;
 * its sweeper and delivery threads live as long as it does. Every operation holds the store
 * lock from its first read to its last write, which is what makes the store linearisable.
 * A transaction prepares everything that can fail (memory) before it changes anything, so it
 * is applied entirely or not at all.
 */
#include "memory_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define CMEM_FAIL(host, err, code, ...) ((host)->error_set((err), 0, (code), __VA_ARGS__), GS_ERROR)
#define CMEM_RING_MIN 64

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static cmem_store *registry;

uint64_t gs_cmem_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------------------------------------------ */
/* Blobs and the key table                                                                    */

cmem_blob *gs_cmem_blob_new(cmem_store *s, const uint8_t *k1, size_t k1_len, const uint8_t *k2,
                            size_t k2_len, const uint8_t *value, size_t value_len)
{
    size_t key_len = k1_len + k2_len;
    if (key_len < k1_len || value_len > SIZE_MAX - sizeof(cmem_blob) - key_len)
        return NULL;
    cmem_blob *b = s->alloc(sizeof *b + key_len + value_len);
    if (!b)
        return NULL;
    b->refs = 1;
    b->key_len = key_len;
    b->value_len = value_len;
    if (k1_len)
        memcpy(b->bytes, k1, k1_len);
    if (k2_len)
        memcpy(b->bytes + k1_len, k2, k2_len);
    if (value_len)
        memcpy(b->bytes + key_len, value, value_len);
    return b;
}

void gs_cmem_blob_unref(cmem_store *s, cmem_blob *b)
{
    if (b && --b->refs == 0)
        s->free(b);
}

/* Byte order of the stored key against k1 + k2 (memcmp order, shorter first on a tie). */
static int key_cmp(const cmem_blob *b, const uint8_t *k1, size_t l1, const uint8_t *k2, size_t l2)
{
    size_t n = b->key_len < l1 ? b->key_len : l1;
    int c = n ? memcmp(b->bytes, k1, n) : 0;
    if (c)
        return c;
    if (b->key_len <= l1)
        return b->key_len < l1 + l2 ? -1 : 0;
    size_t rest = b->key_len - l1;
    n = rest < l2 ? rest : l2;
    c = n ? memcmp(b->bytes + l1, k2, n) : 0;
    if (c)
        return c;
    return rest < l2 ? -1 : rest > l2 ? 1 : 0;
}

/* 1 when the stored key starts with k1 + k2. */
static int key_has_prefix(const cmem_blob *b, const uint8_t *k1, size_t l1, const uint8_t *k2,
                          size_t l2)
{
    return b->key_len >= l1 + l2 && (!l1 || memcmp(b->bytes, k1, l1) == 0) &&
           (!l2 || memcmp(b->bytes + l1, k2, l2) == 0);
}

ptrdiff_t gs_cmem_find(const cmem_store *s, const uint8_t *k1, size_t l1, const uint8_t *k2,
                       size_t l2)
{
    size_t lo = 0, hi = s->nkv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = key_cmp(s->kvs[mid].b, k1, l1, k2, l2);
        if (c == 0)
            return (ptrdiff_t)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -(ptrdiff_t)lo - 1;
}

static int kv_reserve(cmem_store *s, size_t more)
{
    if (s->nkv + more <= s->kv_cap)
        return 0;
    size_t cap = s->kv_cap ? s->kv_cap * 2 : 64;
    while (cap < s->nkv + more)
        cap *= 2;
    cmem_kv *n = s->realloc(s->kvs, cap * sizeof *n);
    if (!n)
        return -1;
    s->kvs = n;
    s->kv_cap = cap;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* History                                                                                    */

int gs_cmem_history_reserve(cmem_store *s, size_t n)
{
    if (s->ring_count + n <= s->ring_cap)
        return 0;
    size_t cap = s->ring_cap ? s->ring_cap * 2 : CMEM_RING_MIN;
    while (cap < s->ring_count + n)
        cap *= 2;
    cmem_event *ring = s->alloc(cap * sizeof *ring);
    if (!ring)
        return -1;
    for (size_t i = 0; i < s->ring_count; i++)
        ring[i] = s->ring[(s->ring_head + i) % s->ring_cap];
    s->free(s->ring);
    s->ring = ring;
    s->ring_cap = cap;
    s->ring_head = 0;
    return 0;
}

void gs_cmem_history_append(cmem_store *s, cmem_blob *b, int type, int64_t revision,
                            int64_t create_rev, int64_t version, int64_t lease)
{
    cmem_event *e = &s->ring[(s->ring_head + s->ring_count) % s->ring_cap];
    b->refs++;
    *e = (cmem_event){.b = b,
                      .type = type,
                      .revision = revision,
                      .create_rev = create_rev,
                      .version = version,
                      .lease = lease};
    s->ring_count++;
}

static void drop_oldest_revision(cmem_store *s)
{
    int64_t rev = s->ring[s->ring_head].revision;
    while (s->ring_count && s->ring[s->ring_head].revision == rev) {
        gs_cmem_blob_unref(s, s->ring[s->ring_head].b);
        s->ring_head = (s->ring_head + 1) % s->ring_cap;
        s->ring_count--;
        s->base_seq++;
    }
    s->compact_rev = rev;
}

void gs_cmem_history_forget(cmem_store *s, int64_t rev)
{
    while (s->ring_count)
        drop_oldest_revision(s);
    s->compact_rev = rev;
    for (cmem_watch *w = s->watches; w; w = w->next)
        w->lost = 1;
    pthread_cond_broadcast(&s->deliver_cond);
}

void gs_cmem_history_trim(cmem_store *s)
{
    while (s->ring_count > s->max_history) {
        int64_t oldest = s->ring[s->ring_head].revision;
        int64_t newest = s->ring[(s->ring_head + s->ring_count - 1) % s->ring_cap].revision;
        if (oldest == newest)
            break; /* never drop the revision just written */
        drop_oldest_revision(s);
    }
    pthread_cond_broadcast(&s->deliver_cond);
}

void gs_cmem_remove_at(cmem_store *s, size_t i, int64_t rev, int record)
{
    cmem_kv kv = s->kvs[i];
    if (kv.lease) {
        cmem_lease *l = gs_cmem_lease_find(s, kv.lease);
        if (l && l->nkeys)
            l->nkeys--;
    }
    if (record)
        gs_cmem_history_append(s, kv.b, GS_WATCH_DELETE, rev, 0, 0, 0);
    gs_cmem_blob_unref(s, kv.b);
    memmove(&s->kvs[i], &s->kvs[i + 1], (s->nkv - i - 1) * sizeof *s->kvs);
    s->nkv--;
}

/* ------------------------------------------------------------------------------------------ */
/* The registry                                                                               */

static void store_free(cmem_store *s)
{
    for (size_t i = 0; i < s->nkv; i++)
        gs_cmem_blob_unref(s, s->kvs[i].b);
    for (size_t i = 0; i < s->ring_count; i++)
        gs_cmem_blob_unref(s, s->ring[(s->ring_head + i) % s->ring_cap].b);
    while (s->watches) {
        cmem_watch *w = s->watches;
        s->watches = w->next;
        gs_cmem_blob_unref(s, w->prefix);
        s->free(w);
    }
    s->free(s->kvs);
    s->free(s->ring);
    s->free(s->leases);
    s->free(s->name);
    pthread_cond_destroy(&s->sweep_cond);
    pthread_cond_destroy(&s->deliver_cond);
    pthread_cond_destroy(&s->idle_cond);
    pthread_mutex_destroy(&s->mu);
    s->free(s);
}

static void store_stop_threads(cmem_store *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->sweep_cond);
    pthread_cond_broadcast(&s->deliver_cond);
    pthread_mutex_unlock(&s->mu);
    if (s->sweeper_live)
        pthread_join(s->sweeper, NULL);
    if (s->deliverer_live)
        pthread_join(s->deliverer, NULL);
    s->sweeper_live = s->deliverer_live = 0;
}

static int cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return -1;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
    return rc == 0 ? 0 : -1;
}

static gs_status store_new(const gs_host *host, const char *name, size_t max_history,
                           cmem_store **out, gs_error *err)
{
    cmem_store *s = host->alloc(sizeof *s);
    if (!s)
        return CMEM_FAIL(host, err, "INTERNAL_ERROR",
                         "memory coordinator: out of memory creating store '%s'", name);
    memset(s, 0, sizeof *s);
    s->alloc = host->alloc;
    s->realloc = host->realloc;
    s->free = host->free;
    s->refs = 1;
    s->max_history = max_history;
    s->next_lease_id = 1;
    s->next_watch_id = 1;
    size_t n = strlen(name) + 1;
    s->name = host->alloc(n);
    if (!s->name) {
        host->free(s);
        return CMEM_FAIL(host, err, "INTERNAL_ERROR",
                         "memory coordinator: out of memory creating store '%s'", name);
    }
    memcpy(s->name, name, n);
    int locks = 0;
    if (pthread_mutex_init(&s->mu, NULL) == 0) {
        locks = 1;
        if (cond_init_monotonic(&s->sweep_cond) == 0) {
            locks = 2;
            if (cond_init_monotonic(&s->deliver_cond) == 0) {
                locks = 3;
                if (cond_init_monotonic(&s->idle_cond) == 0)
                    locks = 4;
            }
        }
    }
    if (locks < 4) {
        if (locks >= 3)
            pthread_cond_destroy(&s->deliver_cond);
        if (locks >= 2)
            pthread_cond_destroy(&s->sweep_cond);
        if (locks >= 1)
            pthread_mutex_destroy(&s->mu);
        host->free(s->name);
        host->free(s);
        return CMEM_FAIL(host, err, "INTERNAL_ERROR",
                         "memory coordinator: cannot create the locks of store '%s'", name);
    }
    if (gs_cmem_history_reserve(s, CMEM_RING_MIN) != 0 || gs_cmem_sweeper_start(s) != GS_OK ||
        gs_cmem_deliverer_start(s) != GS_OK) {
        store_stop_threads(s);
        store_free(s);
        return CMEM_FAIL(host, err, "INTERNAL_ERROR",
                         "memory coordinator: cannot start the threads of store '%s' (out of "
                         "memory or threads)",
                         name);
    }
    *out = s;
    return GS_OK;
}

gs_status gs_cmem_store_join(const gs_host *host, const char *name, size_t max_history,
                             cmem_store **out, gs_error *err)
{
    *out = NULL;
    pthread_mutex_lock(&registry_lock);
    for (cmem_store *s = registry; s; s = s->next)
        if (strcmp(s->name, name) == 0) {
            s->refs++;
            pthread_mutex_unlock(&registry_lock);
            *out = s;
            return GS_OK;
        }
    cmem_store *s;
    gs_status rc = store_new(host, name, max_history, &s, err);
    if (rc == GS_OK) {
        s->next = registry;
        registry = s;
        *out = s;
    }
    pthread_mutex_unlock(&registry_lock);
    return rc;
}

void gs_cmem_store_leave(cmem_store *s, const cmem_inst *leaving)
{
    (void)leaving;
    pthread_mutex_lock(&registry_lock);
    if (--s->refs > 0) {
        pthread_mutex_unlock(&registry_lock);
        return;
    }
    for (cmem_store **pp = &registry; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    pthread_mutex_unlock(&registry_lock);
    store_stop_threads(s);
    store_free(s);
}

/* ------------------------------------------------------------------------------------------ */
/* Operations                                                                                 */

gs_status gs_cmem_enter(cmem_inst *in, gs_error *err)
{
    cmem_store *s = in->store;
    pthread_mutex_lock(&s->mu);
    if (!in->running) {
        pthread_mutex_unlock(&s->mu);
        return CMEM_FAIL(in->host, err, "COORDINATOR_UNAVAILABLE",
                         "memory coordinator (store '%s'): the instance is not started, or was "
                         "stopped; start it before calling it",
                         s->name);
    }
    gs_cmem_expire_due(s, gs_cmem_now_ms());
    return GS_OK;
}

gs_status gs_cmem_range(cmem_inst *in, const uint8_t *key, size_t key_len, int prefix,
                        gs_kv_visit_fn visit, void *user, int64_t *revision, gs_error *err)
{
    if (gs_cmem_enter(in, err) != GS_OK)
        return GS_ERROR;
    cmem_store *s = in->store;
    const uint8_t *p = (const uint8_t *)in->prefix;
    size_t lo, hi;
    ptrdiff_t at = gs_cmem_find(s, p, in->prefix_len, key, key_len);
    if (!prefix) {
        lo = at >= 0 ? (size_t)at : 0;
        hi = at >= 0 ? lo + 1 : 0;
    } else {
        lo = at >= 0 ? (size_t)at : (size_t)(-at - 1);
        hi = lo;
        while (hi < s->nkv && key_has_prefix(s->kvs[hi].b, p, in->prefix_len, key, key_len))
            hi++;
    }
    size_t n = hi - lo;
    int64_t rev = s->revision;
    cmem_kv *snap = NULL;
    if (n) {
        snap = s->alloc(n * sizeof *snap);
        if (!snap) {
            pthread_mutex_unlock(&s->mu);
            return CMEM_FAIL(in->host, err, "INTERNAL_ERROR",
                             "memory coordinator: out of memory reading %zu keys", n);
        }
        for (size_t i = 0; i < n; i++) {
            snap[i] = s->kvs[lo + i];
            snap[i].b->refs++;
        }
    }
    pthread_mutex_unlock(&s->mu);

    /* The snapshot was taken atomically; the visitor runs without the lock, so it may call
     * the coordinator again. */
    for (size_t i = 0; visit && i < n; i++) {
        const cmem_blob *b = snap[i].b;
        gs_kv kv = {.key = b->bytes + in->prefix_len,
                    .key_len = b->key_len - in->prefix_len,
                    .value = b->bytes + b->key_len,
                    .value_len = b->value_len,
                    .create_revision = snap[i].create_rev,
                    .mod_revision = snap[i].mod_rev,
                    .version = snap[i].version,
                    .lease = snap[i].lease};
        visit(user, &kv);
    }
    if (n) {
        pthread_mutex_lock(&s->mu);
        for (size_t i = 0; i < n; i++)
            gs_cmem_blob_unref(s, snap[i].b);
        pthread_mutex_unlock(&s->mu);
        s->free(snap);
    }
    if (revision)
        *revision = rev;
    return GS_OK;
}

/* Go's bytes.Compare. */
static int bytes_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c < 0 ? -1 : 1;
    return al < bl ? -1 : al > bl ? 1 : 0;
}

static int compare_holds(const cmem_inst *in, const gs_compare *c)
{
    const cmem_store *s = in->store;
    ptrdiff_t at = gs_cmem_find(s, (const uint8_t *)in->prefix, in->prefix_len, c->key, c->key_len);
    const cmem_kv *kv = at >= 0 ? &s->kvs[at] : NULL;
    int r;
    if (c->target == GS_CMP_VALUE) {
        /* An absent key compares as the empty value (coordinator.h). */
        const uint8_t *v = kv ? kv->b->bytes + kv->b->key_len : NULL;
        size_t vl = kv ? kv->b->value_len : 0;
        r = bytes_cmp(v, vl, c->value, c->value_len);
    } else {
        int64_t actual = 0;
        if (kv) {
            switch (c->target) {
            case GS_CMP_VERSION: actual = kv->version; break;
            case GS_CMP_CREATE: actual = kv->create_rev; break;
            case GS_CMP_MOD: actual = kv->mod_rev; break;
            default: actual = kv->lease; break;
            }
        }
        r = actual < c->number ? -1 : actual > c->number ? 1 : 0;
    }
    switch (c->result) {
    case GS_CMP_EQUAL: return r == 0;
    case GS_CMP_GREATER: return r > 0;
    case GS_CMP_LESS: return r < 0;
    default: return r != 0;
    }
}

gs_status gs_cmem_txn(cmem_inst *in, const gs_compare *compares, size_t ncmp, const gs_op *success,
                      size_t nsuccess, const gs_op *failure, size_t nfailure, int *succeeded,
                      int64_t *revision, gs_error *err)
{
    if (gs_cmem_enter(in, err) != GS_OK)
        return GS_ERROR;
    cmem_store *s = in->store;
    const uint8_t *p = (const uint8_t *)in->prefix;
    int ok = 1;
    for (size_t i = 0; ok && i < ncmp; i++)
        ok = compare_holds(in, &compares[i]);
    const gs_op *ops = ok ? success : failure;
    size_t nops = ok ? nsuccess : nfailure;

    /* What the chosen branch changes, and whether it may (its leases exist). */
    size_t puts = 0, changes = 0;
    for (size_t i = 0; i < nops; i++) {
        if (ops[i].type == GS_OP_PUT) {
            if (ops[i].lease && !gs_cmem_lease_find(s, ops[i].lease)) {
                pthread_mutex_unlock(&s->mu);
                return CMEM_FAIL(in->host, err, "COORDINATOR_UNAVAILABLE",
                                 "memory coordinator: lease %" PRId64
                                 " is not found (expired or revoked); the transaction was not "
                                 "applied. Grant a new lease",
                                 ops[i].lease);
            }
            puts++;
            changes++;
        } else if (gs_cmem_find(s, p, in->prefix_len, ops[i].key, ops[i].key_len) >= 0) {
            changes++;
        }
    }
    if (!changes) {
        *succeeded = ok;
        if (revision)
            *revision = s->revision;
        pthread_mutex_unlock(&s->mu);
        return GS_OK;
    }

    /* Everything that can fail, before anything changes. */
    cmem_blob *stack_blobs[16];
    cmem_blob **blobs = puts <= 16 ? stack_blobs : s->alloc(puts * sizeof *blobs);
    int mem_ok =
        blobs != NULL && kv_reserve(s, puts) == 0 && gs_cmem_history_reserve(s, changes) == 0;
    size_t made = 0;
    for (size_t i = 0; mem_ok && i < nops; i++) {
        if (ops[i].type != GS_OP_PUT)
            continue;
        blobs[made] = gs_cmem_blob_new(s, p, in->prefix_len, ops[i].key, ops[i].key_len,
                                       ops[i].value, ops[i].value_len);
        mem_ok = blobs[made] != NULL;
        made += mem_ok;
    }
    if (!mem_ok) {
        for (size_t i = 0; i < made; i++)
            gs_cmem_blob_unref(s, blobs[i]);
        if (blobs != stack_blobs)
            s->free(blobs);
        pthread_mutex_unlock(&s->mu);
        return CMEM_FAIL(in->host, err, "INTERNAL_ERROR",
                         "memory coordinator: out of memory applying a transaction of %zu "
                         "operations; nothing was changed",
                         nops);
    }

    int64_t rev = ++s->revision;
    size_t bi = 0;
    for (size_t i = 0; i < nops; i++) {
        const gs_op *op = &ops[i];
        ptrdiff_t at = gs_cmem_find(s, p, in->prefix_len, op->key, op->key_len);
        if (op->type == GS_OP_DELETE) {
            if (at >= 0)
                gs_cmem_remove_at(s, (size_t)at, rev, 1);
            continue;
        }
        cmem_blob *b = blobs[bi++];
        cmem_kv *kv;
        if (at >= 0) {
            kv = &s->kvs[at];
            if (kv->lease != op->lease) {
                cmem_lease *old = kv->lease ? gs_cmem_lease_find(s, kv->lease) : NULL;
                if (old && old->nkeys)
                    old->nkeys--;
                if (op->lease)
                    gs_cmem_lease_find(s, op->lease)->nkeys++;
            }
            gs_cmem_blob_unref(s, kv->b);
            kv->b = b;
            kv->mod_rev = rev;
            kv->version++;
            kv->lease = op->lease;
        } else {
            size_t pos = (size_t)(-at - 1);
            memmove(&s->kvs[pos + 1], &s->kvs[pos], (s->nkv - pos) * sizeof *s->kvs);
            s->nkv++;
            kv = &s->kvs[pos];
            *kv = (cmem_kv){
                .b = b, .create_rev = rev, .mod_rev = rev, .version = 1, .lease = op->lease};
            if (op->lease)
                gs_cmem_lease_find(s, op->lease)->nkeys++;
        }
        gs_cmem_history_append(s, b, GS_WATCH_PUT, rev, kv->create_rev, kv->version, kv->lease);
    }
    if (blobs != stack_blobs)
        s->free(blobs);
    gs_cmem_history_trim(s);
    *succeeded = ok;
    if (revision)
        *revision = rev;
    pthread_mutex_unlock(&s->mu);
    return GS_OK;
}
