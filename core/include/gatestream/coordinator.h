/*
 * Coordinator plugins (etcd, memory): a small linearisable key-value store with leases,
 * compare-and-set transactions and prefix watches, in the etcd v3 shape. The failover
 * protocol (sessions, controller lease, terms, in-sync set) lives in the core; a backend
 * only stores.
 *
 * Threads: calls come from the core's coordination thread and block at most the
 * configured call timeout; watch callbacks arrive on the plugin's threads and must not
 * block.
 */
#ifndef GATESTREAM_COORDINATOR_H
#define GATESTREAM_COORDINATOR_H

#include <gatestream/host.h>

#ifdef __cplusplus
extern "C" {
#endif

/** One key-value pair. Pointers valid for the call that produced it. @since 1.0 */
typedef struct gs_kv {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
    int64_t create_revision;
    int64_t mod_revision;
    int64_t version;
    int64_t lease;
} gs_kv;

typedef enum gs_compare_target {
    GS_CMP_VERSION = 0,
    GS_CMP_CREATE = 1,
    GS_CMP_MOD = 2,
    GS_CMP_VALUE = 3,
} gs_compare_target;

typedef enum gs_compare_result {
    GS_CMP_EQUAL = 0,
    GS_CMP_GREATER = 1,
    GS_CMP_LESS = 2,
    GS_CMP_NOT_EQUAL = 3,
} gs_compare_result;

/** A compare of a transaction. @since 1.0 */
typedef struct gs_compare {
    const uint8_t *key;
    size_t key_len;
    gs_compare_target target;
    gs_compare_result result;
    int64_t number;       /**< VERSION, CREATE, MOD */
    const uint8_t *value; /**< VALUE */
    size_t value_len;
} gs_compare;

typedef enum gs_op_type { GS_OP_PUT = 1, GS_OP_DELETE = 2 } gs_op_type;

/** A put or delete of a transaction. @since 1.0 */
typedef struct gs_op {
    gs_op_type type;
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
    int64_t lease; /**< 0 = none */
} gs_op;

/** Results of a range read: called once per key, then done. */
typedef void (*gs_kv_visit_fn)(void *user, const gs_kv *kv);

/** A watch event: type 0 = put, 1 = delete. */
typedef void (*gs_watch_fn)(void *user, int type, const gs_kv *kv, int64_t revision);

/** @since 1.0 */
typedef struct gs_coordinator_vtable {
    uint32_t struct_size;
    gs_status (*create)(const gs_host *host, const void *config, void **instance, gs_error *err);
    gs_status (*start)(void *instance, gs_error *err);
    void (*stop)(void *instance);
    void (*destroy)(void *instance);
    /** Read key, or every key with the prefix when prefix is 1; *revision = store revision. */
    gs_status (*range)(void *instance, const uint8_t *key, size_t key_len, int prefix,
                       gs_kv_visit_fn visit, void *user, int64_t *revision, gs_error *err);
    /** If every compare holds run success ops, else failure ops; *succeeded says which. */
    gs_status (*txn)(void *instance, const gs_compare *compares, size_t compare_count,
                     const gs_op *success, size_t success_count, const gs_op *failure,
                     size_t failure_count, int *succeeded, int64_t *revision, gs_error *err);
    gs_status (*lease_grant)(void *instance, int64_t ttl_ms, int64_t *lease_id, gs_error *err);
    gs_status (*lease_keepalive)(void *instance, int64_t lease_id, int64_t *ttl_ms_left,
                                 gs_error *err);
    gs_status (*lease_revoke)(void *instance, int64_t lease_id, gs_error *err);
    /** Watch a prefix from start_revision (0 = now); events until unwatch. */
    gs_status (*watch)(void *instance, const uint8_t *prefix, size_t prefix_len,
                       int64_t start_revision, gs_watch_fn fn, void *user, uint64_t *watch_id,
                       gs_error *err);
    void (*unwatch)(void *instance, uint64_t watch_id);
} gs_coordinator_vtable;

#ifdef __cplusplus
}
#endif
#endif
