/*
 * Coordinator plugins (coordinators/etcd, coordinators/memory): a small linearisable
 * key-value store with leases, compare-and-set transactions and prefix watches, in the etcd
 * v3 shape. The failover protocol of spec 03 "Coordinator-Backed Failover" (node sessions,
 * the controller lease, primary terms, the in-sync set, maintenance and quarantine) lives in
 * the core (core/src/repl/authority.c); a backend only stores, so a new one is a few hundred
 * lines.
 *
 * Promise the core relies on:
 *  - linearisable: a call that returned GS_OK is seen by every later call of any instance
 *    talking to the same store (range reads are not served from a stale follower);
 *  - revisions: every successful mutation raises the store revision by one; a key's
 *    create_revision / mod_revision / version follow etcd's meaning (version 0 = absent);
 *  - txn: every compare is evaluated and the chosen op list applied atomically;
 *  - leases: a key put with a lease is deleted when the lease expires or is revoked; a lease
 *    lives ttl_ms after its grant or last keepalive (the store may round up to whole seconds);
 *  - watch: every put and delete under the prefix after start_revision is delivered once, in
 *    revision order; when the plugin cannot keep that promise (connection lost, history
 *    compacted, watch cancelled by the store) it delivers GS_WATCH_LOST once and no more events
 *    for that watch — the core then reads the state again and opens a new watch.
 *
 * Keys: the core passes keys relative to the cluster namespace ("clusters/<cluster>/..."); a
 * backend prepends its configured key prefix (etcd: `key_prefix`, required, never the root),
 * so clusters and unrelated data share one store safely. Values are JSON text.
 *
 * Errors: a store that cannot be reached in time, or answers with an error, returns GS_ERROR
 * with code COORDINATOR_UNAVAILABLE and a message naming the endpoint and the fix. A txn that
 * fails that way may or may not have been applied (the connection can break after the store
 * committed it): the caller reads the state again before deciding. A lease that no longer
 * exists is reported as GS_DECLINED by lease_keepalive (not an error); a txn putting a key on
 * such a lease fails as a whole with COORDINATOR_UNAVAILABLE (nothing applied).
 *
 * Ownership: the caller owns every pointer it passes; a plugin copies what it keeps. A gs_kv
 * handed to a callback is valid for that call only.
 *
 * Threads: every call may come from several core threads at once (the coordination thread,
 * the write path proving authority, the health endpoint) and blocks at most the configured
 * call timeout. Watch callbacks arrive on the plugin's own threads, one at a time per watch,
 * and must not block; the core copies what it needs and wakes its coordination thread.
 * create/start run on the core's main thread before any other call; stop ends every watch
 * (no callback runs after stop returns) and makes later calls fail fast; destroy follows.
 */
#ifndef GATESTREAM_COORDINATOR_H
#define GATESTREAM_COORDINATOR_H

#include <gatestream/host.h>

#ifdef __cplusplus
extern "C" {
#endif

/** One key-value pair. Pointers valid for the call that produced it. @since 1.0 */
typedef struct gs_kv {
    const uint8_t *key; /**< relative to the key prefix (the prefix is stripped) */
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
    int64_t create_revision;
    int64_t mod_revision;
    int64_t version;
    int64_t lease; /**< 0 = none */
} gs_kv;

typedef enum gs_compare_target {
    GS_CMP_VERSION = 0,
    GS_CMP_CREATE = 1,
    GS_CMP_MOD = 2,
    GS_CMP_VALUE = 3,
    GS_CMP_LEASE = 4, /**< the lease the key is attached to (0 = none) @since 1.4 */
} gs_compare_target;

typedef enum gs_compare_result {
    GS_CMP_EQUAL = 0,
    GS_CMP_GREATER = 1,
    GS_CMP_LESS = 2,
    GS_CMP_NOT_EQUAL = 3,
} gs_compare_result;

/** A compare of a transaction: `target(key) result operand`. An absent key has version,
 * create and mod revision 0, lease 0 and an empty value. @since 1.0 */
typedef struct gs_compare {
    const uint8_t *key;
    size_t key_len;
    gs_compare_target target;
    gs_compare_result result;
    int64_t number;       /**< VERSION, CREATE, MOD, LEASE */
    const uint8_t *value; /**< VALUE */
    size_t value_len;
} gs_compare;

typedef enum gs_op_type { GS_OP_PUT = 1, GS_OP_DELETE = 2 } gs_op_type;

/** A put or delete of a transaction (a delete removes exactly `key`). @since 1.0 */
typedef struct gs_op {
    gs_op_type type;
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
    int64_t lease; /**< PUT: 0 = none */
} gs_op;

/** Results of a range read: called once per key, in key order, during the call. */
typedef void (*gs_kv_visit_fn)(void *user, const gs_kv *kv);

/** Watch event types. */
enum {
    GS_WATCH_PUT = 0,
    GS_WATCH_DELETE = 1,
    GS_WATCH_LOST = 2, /**< the watch ended; kv is NULL; no further event @since 1.4 */
};

/** A watch event (see the enum above). kv is NULL for GS_WATCH_LOST, whose revision is
 * informative only (the store revision when the loss was noticed, or 0); for a delete kv holds
 * the key and mod_revision only. */
typedef void (*gs_watch_fn)(void *user, int type, const gs_kv *kv, int64_t revision);

/**
 * The vtable. The members are the 1.0 list; their documented behaviour was settled in 1.4,
 * before any coordinator plugin existed, and the loader refuses coordinators built for an
 * older minor.
 * @since 1.0
 */
typedef struct gs_coordinator_vtable {
    uint32_t struct_size;
    /** Required. Make an instance from the plugin's filled config struct; no I/O yet. */
    gs_status (*create)(const gs_host *host, const void *config, void **instance, gs_error *err);
    /** Required. Connect (bounded by the dial timeout). COORDINATOR_UNAVAILABLE when the store
     * cannot be reached; the core retries start later, so it must be callable again. */
    gs_status (*start)(void *instance, gs_error *err);
    /** Required. End every watch (no callback after this returns); later calls fail fast. */
    void (*stop)(void *instance);
    /** Required. Release the instance. */
    void (*destroy)(void *instance);
    /** Required. Read `key`, or every key starting with it when prefix is 1, calling visit
     * once per key in key order; *revision (may be NULL) = the store revision of the read. */
    gs_status (*range)(void *instance, const uint8_t *key, size_t key_len, int prefix,
                       gs_kv_visit_fn visit, void *user, int64_t *revision, gs_error *err);
    /** Required. If every compare holds apply the success ops, else the failure ops, in one
     * atomic step; *succeeded = 1 or 0; *revision (may be NULL) = the revision after it. */
    gs_status (*txn)(void *instance, const gs_compare *compares, size_t compare_count,
                     const gs_op *success, size_t success_count, const gs_op *failure,
                     size_t failure_count, int *succeeded, int64_t *revision, gs_error *err);
    /** Required. A new lease living ttl_ms (rounded up to what the store supports). */
    gs_status (*lease_grant)(void *instance, int64_t ttl_ms, int64_t *lease_id, gs_error *err);
    /** Required. Renew once; *ttl_ms_left = the remaining life the store granted. GS_DECLINED
     * when the lease expired or was revoked. */
    gs_status (*lease_keepalive)(void *instance, int64_t lease_id, int64_t *ttl_ms_left,
                                 gs_error *err);
    /** Required. Revoke the lease (its keys go). An unknown lease is GS_OK. */
    gs_status (*lease_revoke)(void *instance, int64_t lease_id, gs_error *err);
    /** Required. Watch every key starting with prefix, from start_revision (0 = after now);
     * the watch is registered before this returns. *watch_id names it for unwatch. */
    gs_status (*watch)(void *instance, const uint8_t *prefix, size_t prefix_len,
                       int64_t start_revision, gs_watch_fn fn, void *user, uint64_t *watch_id,
                       gs_error *err);
    /** Required. End a watch; no callback for it runs after this returns (so it is never
     * called from that watch's own callback). Unknown ids are ignored. */
    void (*unwatch)(void *instance, uint64_t watch_id);
} gs_coordinator_vtable;

#ifdef __cplusplus
}
#endif
#endif
