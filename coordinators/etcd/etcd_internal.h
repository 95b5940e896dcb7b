/*
 * etcd coordinator internals, shared by its files:
 *   etcd.c   the plugin: descriptor, config keys and checks, create/start/stop/destroy;
 *   call.c   endpoints and channels, the bounded unary call with endpoint failover, token
 *            authentication, and the mapping of gRPC failures to COORDINATOR_UNAVAILABLE;
 *   kv.c     range and txn (the coordinator.h compare semantics encoded for etcd);
 *   lease.c  lease grant, keepalive (one exchange on a LeaseKeepAlive stream) and revoke;
 *   watch.c  watch streams, the completion-queue thread and event delivery;
 *   tls.c    PEM files and channel credentials;
 *   codec.c  protobuf-c packing/unpacking with the host allocator, byte buffers, an arena.
 *
 * Promise: every call has a deadline (call_timeout_ms overall, dial_timeout_ms for an
 * endpoint that is not connected); reads are linearisable (etcd's default, never
 * serializable); keys reach etcd with the key prefix and come back without it.
 *
 * Ownership: the instance owns its config copy, PEM texts, endpoints (their channels and
 * tokens), watches and the completion queue. A watch is owned by the instance's watch list
 * until it is detached (unwatched, stopped, failed or finished), no gRPC batch is
 * outstanding and no reference is held (watch() while it waits, an undelivered event); then
 * whoever drops the last of these frees it.
 *
 * Threads and locks: unary calls run on the caller's thread with a completion queue of their
 * own (pluck); watches run on the instance's completion-queue thread, which never blocks
 * except in grpc_completion_queue_next and calls the core with no lock held. One mutex (mu)
 * guards the instance state; an endpoint's auth_mu serialises its Authenticate calls and is
 * never taken with mu held.
 */
#ifndef GS_COORDINATOR_ETCD_INTERNAL_H
#define GS_COORDINATOR_ETCD_INTERNAL_H

#include <gatestream/coordinator.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <protobuf-c/protobuf-c.h>

#include "rpc.pb-c.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define EC_COMPONENT "coordinator.etcd"
#define EC_MAX_ENDPOINTS 16
/** etcd's default --max-txn-ops. */
#define EC_MAX_TXN_OPS 128
/** etcd's largest lease TTL (s). */
#define EC_MAX_TTL_S INT64_C(9000000000)

#define EC_METHOD_RANGE "/etcdserverpb.KV/Range"
#define EC_METHOD_TXN "/etcdserverpb.KV/Txn"
#define EC_METHOD_WATCH "/etcdserverpb.Watch/Watch"
#define EC_METHOD_LEASE_GRANT "/etcdserverpb.Lease/LeaseGrant"
#define EC_METHOD_LEASE_REVOKE "/etcdserverpb.Lease/LeaseRevoke"
#define EC_METHOD_LEASE_KEEPALIVE "/etcdserverpb.Lease/LeaseKeepAlive"
#define EC_METHOD_AUTHENTICATE "/etcdserverpb.Auth/Authenticate"

/** The plugin's config struct, filled by the core from the key table in etcd.c. */
typedef struct gs_etcd_config {
    const char *endpoints; /**< "http://h:p,https://h:p" */
    const char *key_prefix;
    int allow_insecure;
    const char *tls_ca_cert;
    const char *tls_cert;
    const char *tls_key;
    const char *username;
    const char *password;
    int64_t dial_timeout_ms;
    int64_t call_timeout_ms;
} gs_etcd_config;

typedef struct ec_endpoint {
    char *url;             /**< as configured, for messages */
    char *target;          /**< host:port for gRPC */
    int tls;               /**< https */
    grpc_channel *channel; /**< from start() to stop() */
    pthread_mutex_t auth_mu;
    char *token;  /**< auth token (mu), NULL = none yet */
    int auth_off; /**< etcd said authentication is not enabled (mu) */
} ec_endpoint;

/** A unary call in flight, so stop() can cancel it. On the caller's stack. */
typedef struct ec_inflight {
    struct ec_inflight *prev, *next;
    grpc_call *call;
} ec_inflight;

struct ec_inst;
struct ec_watch;

typedef enum ec_op { EC_OP_SEND = 1, EC_OP_RECV = 2, EC_OP_STATUS = 3 } ec_op;

typedef struct ec_tag {
    struct ec_watch *w;
    ec_op op;
} ec_tag;

/** Something the completion-queue thread hands to the core: events, or a loss. */
typedef struct ec_item {
    struct ec_item *next;
    struct ec_watch *w;
    Etcdserverpb__WatchResponse *msg; /**< the events; NULL for GS_WATCH_LOST */
} ec_item;

typedef struct ec_watch {
    struct ec_watch *next; /**< the instance's list (every watch not yet freed) */
    struct ec_inst *t;
    uint64_t id; /**< 0 until created */
    ec_endpoint *ep;
    grpc_call *call;
    ec_tag tag_send, tag_recv, tag_status;
    int ops;  /**< batches outstanding */
    int refs; /**< references besides the list */
    grpc_byte_buffer *send_bb, *recv_bb;
    grpc_metadata_array md_in, trailing;
    grpc_metadata token_md;
    int has_token;
    grpc_status_code status;
    grpc_slice details;
    gs_watch_fn fn;
    void *user;
    int created;      /**< etcd confirmed the watch */
    int failed;       /**< ended before it was created (why says how) */
    int ended;        /**< the call's status arrived */
    int lost_queued;  /**< GS_WATCH_LOST is queued or delivered */
    int dead;         /**< no callback from now on */
    int detached;     /**< unwatch no longer finds it */
    int64_t lost_rev; /**< revision etcd reported with the loss (0 = none) */
    char why[320];
    ec_item lost_item; /**< the queue item of its GS_WATCH_LOST, so a loss needs no memory */
} ec_watch;

typedef enum ec_state { EC_IDLE = 0, EC_RUNNING = 1, EC_STOPPING = 2 } ec_state;

typedef struct ec_inst {
    const gs_host *host;
    char *prefix; /**< normalised key prefix ("x/") */
    size_t prefix_len;
    ec_endpoint eps[EC_MAX_ENDPOINTS];
    size_t neps;
    char *endpoint_list; /**< the endpoints as one string, for messages */
    int current;         /**< endpoint tried first (mu) */
    int allow_insecure;
    char *ca_pem, *cert_pem, *key_pem;
    char *username, *password;
    int64_t dial_timeout_ms, call_timeout_ms;

    pthread_mutex_t mu;
    pthread_cond_t cond; /**< CLOCK_MONOTONIC: calls end, watches change, deliveries end */
    ec_state state;
    ec_inflight *inflight;
    size_t ninflight;
    ec_watch *watches;
    uint64_t next_watch_id;
    const ec_watch *delivering; /**< the watch whose callback runs now */

    grpc_completion_queue *cq;
    pthread_t thread;
    int thread_live;
    int grpc_inited;
} ec_inst;

/** Fill err (code, message) and evaluate to GS_ERROR. */
#define EC_FAIL(t, err, code, ...) ((t)->host->error_set((err), 0, (code), __VA_ARGS__), GS_ERROR)

/* ---- etcd.c ---- */

uint64_t gs_etcd_now_ms(void);
char *gs_etcd_strdup(const gs_host *host, const char *s);

/* ---- codec.c ---- */

/** A ProtobufCAllocator over the host allocator. */
ProtobufCAllocator gs_etcd_pb_allocator(const gs_host *host);
/** Pack msg into a gRPC byte buffer; NULL when out of memory. */
grpc_byte_buffer *gs_etcd_pack(const gs_host *host, const ProtobufCMessage *msg);
/** Unpack a received byte buffer (NULL when it does not parse or memory runs out). */
ProtobufCMessage *gs_etcd_unpack(const gs_host *host, const ProtobufCMessageDescriptor *desc,
                                 grpc_byte_buffer *bb);
void gs_etcd_free_msg(const gs_host *host, ProtobufCMessage *msg);

/** Allocations freed together (message trees built for one request). */
typedef struct ec_arena {
    const gs_host *host;
    void *chunks; /**< singly linked: each block starts with the next pointer */
    int failed;   /**< an allocation failed */
} ec_arena;

void *gs_etcd_arena_alloc(ec_arena *a, size_t n);
/** prefix + key as protobuf bytes in the arena. */
ProtobufCBinaryData gs_etcd_arena_key(ec_arena *a, const char *prefix, size_t prefix_len,
                                      const uint8_t *key, size_t key_len);
/** The end of the range of every key starting with k (the last byte below 0xff plus one). */
ProtobufCBinaryData gs_etcd_range_end(ec_arena *a, ProtobufCBinaryData k);
void gs_etcd_arena_free(ec_arena *a);

/* ---- tls.c ---- */

gs_status gs_etcd_tls_load(ec_inst *t, const gs_etcd_config *cfg, gs_error *err);
/** Channel credentials for ep (insecure for http://). */
grpc_channel_credentials *gs_etcd_channel_creds(ec_inst *t, const ec_endpoint *ep);

/* ---- call.c ---- */

/** Parse `endpoints` into t->eps; INVALID_CONFIG naming the key and the entry. */
gs_status gs_etcd_endpoints_parse(ec_inst *t, const char *list, gs_error *err);
void gs_etcd_endpoints_free(ec_inst *t);
/** Create every endpoint's channel (start). */
gs_status gs_etcd_channels_create(ec_inst *t, gs_error *err);
void gs_etcd_channels_destroy(ec_inst *t);

/** What one call got back. */
typedef struct ec_reply {
    grpc_status_code status;
    char details[256];
    grpc_byte_buffer *body; /**< the response message (the caller destroys it), or NULL */
    const ec_endpoint *ep;  /**< the endpoint that answered */
} ec_reply;

/**
 * Call method with req on the endpoints: the current one first, the next ones on
 * UNAVAILABLE (a call that may have reached etcd is retried elsewhere only when idempotent),
 * authenticating first when `username` is set and again once on an invalid token. Bounded by
 * call_timeout_ms. GS_OK: status OK (reply->body set). GS_DECLINED: etcd answered with an
 * error status (reply->status, reply->details; err untouched). GS_ERROR: no endpoint answered
 * in time, authentication was refused, or the instance is stopped (err: COORDINATOR_UNAVAILABLE).
 */
gs_status gs_etcd_call(ec_inst *t, const char *method, const ProtobufCMessage *req, int idempotent,
                       ec_reply *reply, gs_error *err);
/** gs_etcd_call with another time budget than call_timeout_ms (start's probe). */
gs_status gs_etcd_call_within(ec_inst *t, const char *method, const ProtobufCMessage *req,
                              int idempotent, int64_t budget_ms, ec_reply *reply, gs_error *err);
/** err = COORDINATOR_UNAVAILABLE for an error status etcd answered to `what`. */
gs_status gs_etcd_status_error(ec_inst *t, const char *what, const ec_reply *reply, gs_error *err);
/** The token to send to ep into tok ("" = none: no username, or auth off there), asking
 * etcd (Authenticate, bounded by deadline_ms) when none is known. GS_ERROR with err on
 * failure, *unreachable set when the endpoint could not be reached (try the next one). */
gs_status gs_etcd_token(ec_inst *t, ec_endpoint *ep, uint64_t deadline_ms, char *tok, size_t cap,
                        int *unreachable, gs_error *err);
/** Forget ep's token if it is still `used`. */
void gs_etcd_token_invalid(ec_inst *t, ec_endpoint *ep, const char *used);
/** Deadline helpers. */
gpr_timespec gs_etcd_deadline(uint64_t at_ms);

/* ---- kv.c ---- */

gs_status gs_etcd_range(ec_inst *t, const uint8_t *key, size_t key_len, int prefix,
                        gs_kv_visit_fn visit, void *user, int64_t *revision, gs_error *err);
/** The store revision now (a linearisable read), within budget_ms. */
gs_status gs_etcd_revision_now(ec_inst *t, int64_t budget_ms, int64_t *revision, gs_error *err);
gs_status gs_etcd_txn(ec_inst *t, const gs_compare *compares, size_t ncmp, const gs_op *success,
                      size_t nsuccess, const gs_op *failure, size_t nfailure, int *succeeded,
                      int64_t *revision, gs_error *err);

/* ---- lease.c ---- */

gs_status gs_etcd_lease_grant(ec_inst *t, int64_t ttl_ms, int64_t *id, gs_error *err);
gs_status gs_etcd_lease_keepalive(ec_inst *t, int64_t id, int64_t *ttl_ms_left, gs_error *err);
gs_status gs_etcd_lease_revoke(ec_inst *t, int64_t id, gs_error *err);

/* ---- watch.c ---- */

gs_status gs_etcd_cq_start(ec_inst *t, gs_error *err);
/** Cancel every watch, wait until their batches completed, shut the queue down and join
 * its thread (stop; mu not held). */
void gs_etcd_cq_stop(ec_inst *t);
int gs_etcd_on_cq_thread(const ec_inst *t);
gs_status gs_etcd_watch(ec_inst *t, const uint8_t *prefix, size_t prefix_len,
                        int64_t start_revision, gs_watch_fn fn, void *user, uint64_t *watch_id,
                        gs_error *err);
void gs_etcd_unwatch(ec_inst *t, uint64_t watch_id);

#endif
