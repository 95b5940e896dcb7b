/*
 * memory coordinator internals, shared by its files:
 *   memory.c  the plugin: descriptor, config keys, create/start/stop/destroy and the vtable
 *             entries (argument checks, then the store);
 *   store.c   the process-wide registry of named stores, the sorted key table, range, txn,
 *             the event history and its compaction;
 *   lease.c   leases (grant, keepalive, revoke, expiry) and the store's sweeper thread;
 *   watch.c   watches and the store's delivery thread.
 *
 * Promise: a store is one linearisable key space shared by every instance of this loaded copy
 * of the plugin that names it (config `store`). Every mutation takes the store lock, so calls
 * are totally ordered; a successful change raises the store revision by one; leases expire by
 * the monotonic clock; watch events are delivered in revision order, one callback at a time.
 *
 * Ownership: a store is reference-counted by the instances that joined it (registry lock). Its
 * memory comes from the allocator of the host of the instance that created it (the function
 * pointers are copied, never the host table, which another node may free first). Key and value
 * bytes live in reference-counted blobs shared by the key table, the history and the delivery
 * thread; reference counts change only under the store lock.
 *
 * Threads and locks: the registry lock, then a store's lock (mu). Each store runs a sweeper
 * thread (lease expiry) and a delivery thread (watch callbacks, called with no lock held). The
 * vtable entries run on any core thread and hold mu for the duration of one operation.
 */
#ifndef GS_COORDINATOR_MEMORY_INTERNAL_H
#define GS_COORDINATOR_MEMORY_INTERNAL_H

#include <gatestream/coordinator.h>

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define CMEM_COMPONENT "coordinator.memory"
/** Most compares, and ops per branch, of one txn (etcd's default --max-txn-ops). */
#define CMEM_MAX_TXN_OPS 128
/** Bounds of `max_history`. */
#define CMEM_MIN_HISTORY 1024
#define CMEM_MAX_HISTORY (1 << 24)
/** Longest lease accepted: etcd's maximum TTL (9,000,000,000 s) in ms. */
#define CMEM_MAX_TTL_MS INT64_C(9000000000000000)
/** The sweeper wakes at least this often even with no lease due. */
#define CMEM_SWEEP_IDLE_MS 1000

/** The plugin's config struct, filled by the core from the key table in memory.c. */
typedef struct gs_cmem_config {
    const char *store;      /**< store name; instances naming the same store share it */
    const char *key_prefix; /**< prepended to every key; normalised to end with one '/' */
    int64_t max_history;    /**< events kept for watches that start in the past */
} gs_cmem_config;

/** Key (then value) bytes, shared by the key table, the history and the delivery thread. */
typedef struct cmem_blob {
    size_t refs;
    size_t key_len;
    size_t value_len;
    uint8_t bytes[]; /**< key_len bytes of key, then value_len bytes of value */
} cmem_blob;

/** A live key. */
typedef struct cmem_kv {
    cmem_blob *b;
    int64_t create_rev;
    int64_t mod_rev;
    int64_t version;
    int64_t lease;
} cmem_kv;

/** One change in the history (type GS_WATCH_PUT or GS_WATCH_DELETE). A delete keeps the
 * deleted key's blob but reports only its key. */
typedef struct cmem_event {
    cmem_blob *b;
    int type;
    int64_t revision;
    int64_t create_rev;
    int64_t version;
    int64_t lease;
} cmem_event;

typedef struct cmem_lease {
    int64_t id;
    int64_t ttl_ms;
    uint64_t expires_at; /**< monotonic ms */
    size_t nkeys;        /**< live keys attached */
} cmem_lease;

struct cmem_inst;

typedef struct cmem_watch {
    struct cmem_watch *next;
    struct cmem_inst *inst;
    uint64_t id;
    cmem_blob *prefix; /**< the full prefix (key prefix + the core's prefix) as a key */
    size_t strip;      /**< bytes of key prefix removed from keys handed to the callback */
    gs_watch_fn fn;
    void *user;
    uint64_t next_seq; /**< history position of the next event to look at */
    int lost;          /**< the watch cannot keep its promise: GS_WATCH_LOST is due */
} cmem_watch;

typedef struct cmem_store {
    struct cmem_store *next; /**< registry list */
    char *name;
    size_t refs; /**< instances joined (registry lock) */
    void *(*alloc)(size_t);
    void *(*realloc)(void *, size_t);
    void (*free)(void *);

    pthread_mutex_t mu;
    pthread_cond_t sweep_cond;   /**< CLOCK_MONOTONIC: a lease changed, or stopping */
    pthread_cond_t deliver_cond; /**< new events or watches, or stopping */
    pthread_cond_t idle_cond;    /**< a callback returned */
    int stopping;

    int64_t revision;    /**< the store revision (0 = nothing written yet) */
    int64_t compact_rev; /**< events of revisions <= this are gone from the history */

    cmem_kv *kvs; /**< sorted by key bytes */
    size_t nkv, kv_cap;

    cmem_lease *leases; /**< sorted by id (ids only grow) */
    size_t nleases, lease_cap;
    int64_t next_lease_id;

    cmem_event *ring; /**< the history: a ring of events in revision order */
    size_t ring_cap, ring_head, ring_count;
    uint64_t base_seq; /**< position of ring[ring_head] */
    size_t max_history;

    cmem_watch *watches;
    uint64_t next_watch_id;
    uint64_t last_delivered_id;   /**< round robin among ready watches */
    const cmem_watch *delivering; /**< the watch whose callback runs now, or NULL */

    pthread_t sweeper, deliverer;
    int sweeper_live, deliverer_live;
} cmem_store;

typedef struct cmem_inst {
    const gs_host *host;
    cmem_store *store;
    char *prefix; /**< normalised key prefix */
    size_t prefix_len;
    int running; /**< started and not stopped (store mu) */
} cmem_inst;

/* ---- store.c ---- */

uint64_t gs_cmem_now_ms(void);
/** Join (creating it when needed) the store called name; max_history applies when it is
 * created. The store's allocator and threads come from host. */
gs_status gs_cmem_store_join(const gs_host *host, const char *name, size_t max_history,
                             cmem_store **out, gs_error *err);
/** Leave the store; the last instance out stops its threads and frees it. */
void gs_cmem_store_leave(cmem_store *s, const cmem_inst *leaving);
/** A new blob holding key (k1 then k2 appended) and value; NULL when out of memory. */
cmem_blob *gs_cmem_blob_new(cmem_store *s, const uint8_t *k1, size_t k1_len, const uint8_t *k2,
                            size_t k2_len, const uint8_t *value, size_t value_len);
void gs_cmem_blob_unref(cmem_store *s, cmem_blob *b);
/** Index of the key k1 + k2 in the table, or -(insertion point) - 1. mu held. */
ptrdiff_t gs_cmem_find(const cmem_store *s, const uint8_t *k1, size_t l1, const uint8_t *k2,
                       size_t l2);
/** Lock the store for an operation of in: GS_OK with mu held and the due leases expired, or
 * GS_ERROR (COORDINATOR_UNAVAILABLE, mu not held) when the instance is not started. */
gs_status gs_cmem_enter(cmem_inst *in, gs_error *err);
/** Make room for n more events in the history. 0, or -1 when out of memory. mu held. */
int gs_cmem_history_reserve(cmem_store *s, size_t n);
/** Append an event (room reserved; takes a reference to b). mu held. */
void gs_cmem_history_append(cmem_store *s, cmem_blob *b, int type, int64_t revision,
                            int64_t create_rev, int64_t version, int64_t lease);
/** Drop whole old revisions past max_history, then wake the delivery thread. mu held. */
void gs_cmem_history_trim(cmem_store *s);
/** Remove key i from the table; with record, a delete event at revision rev goes to the
 * history (room reserved). mu held. */
void gs_cmem_remove_at(cmem_store *s, size_t i, int64_t rev, int record);
/** The history could not hold the events of revision rev: forget it all and make every watch
 * lost (it cannot be told what changed). mu held. */
void gs_cmem_history_forget(cmem_store *s, int64_t rev);

/** range / txn with keys relative to the instance's prefix; arguments checked by memory.c.
 * They lock the store themselves (gs_cmem_enter); visit runs with no lock held. */
gs_status gs_cmem_range(cmem_inst *in, const uint8_t *key, size_t key_len, int prefix,
                        gs_kv_visit_fn visit, void *user, int64_t *revision, gs_error *err);
gs_status gs_cmem_txn(cmem_inst *in, const gs_compare *compares, size_t ncmp, const gs_op *success,
                      size_t nsuccess, const gs_op *failure, size_t nfailure, int *succeeded,
                      int64_t *revision, gs_error *err);

/* ---- lease.c (the three calls lock the store themselves; the rest need mu held) ---- */

gs_status gs_cmem_lease_grant(cmem_inst *in, int64_t ttl_ms, int64_t *id, gs_error *err);
/** GS_OK, GS_DECLINED (no such lease), or GS_ERROR (not started / out of memory). */
gs_status gs_cmem_lease_keepalive(cmem_inst *in, int64_t id, int64_t *ttl_ms_left, gs_error *err);
gs_status gs_cmem_lease_revoke(cmem_inst *in, int64_t id, gs_error *err);
/** The lease with that id, or NULL. */
cmem_lease *gs_cmem_lease_find(cmem_store *s, int64_t id);
/** Revoke every lease whose time is up (their keys go, one revision per lease). */
void gs_cmem_expire_due(cmem_store *s, uint64_t now);
/** Start the sweeper thread (no lock held). */
gs_status gs_cmem_sweeper_start(cmem_store *s);

/* ---- watch.c ---- */

/** Register a watch of keys starting with the instance prefix + prefix (locks the store). */
gs_status gs_cmem_watch_add(cmem_inst *in, const uint8_t *prefix, size_t prefix_len,
                            int64_t start_revision, gs_watch_fn fn, void *user, uint64_t *id,
                            gs_error *err);
/** End one watch of the instance (or every one when all is set): no callback of them runs
 * once this returns, unless called from that callback. Takes and releases mu. */
void gs_cmem_watch_remove(cmem_inst *in, uint64_t id, int all);
/** 1 when the calling thread is the store's delivery thread. */
int gs_cmem_on_delivery_thread(const cmem_store *s);
/** Start the delivery thread (no lock held). */
gs_status gs_cmem_deliverer_start(cmem_store *s);

#endif
