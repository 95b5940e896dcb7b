/*
 * Replication transport plugins (gRPC, TCP, memory): they move the spec's replication
 * messages between node ids and report peers connecting and leaving. The core encodes and
 * decodes every message (protobuf, proto/replication.proto); a transport moves opaque
 * bytes tagged with their message type and, for Forward, a call id.
 *
 * Threads: create/start/stop/destroy on the core's main thread; send from any core thread
 * (thread-safe, never blocks: it queues or returns GS_AGAIN); events arrive on the
 * transport's threads and must not block (the core queues the work).
 */
#ifndef GATESTREAM_REPL_TRANSPORT_H
#define GATESTREAM_REPL_TRANSPORT_H

#include <gatestream/host.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gs_repl_msg_type {
    GS_REPL_MSG_REPLICATION = 1,     /**< ReplicationMessage on the Replicate stream */
    GS_REPL_MSG_SYNC = 2,            /**< SyncMessage on the Sync stream */
    GS_REPL_MSG_FORWARD_REQUEST = 3, /**< ForwardRequest (unary Forward call) */
    GS_REPL_MSG_FORWARD_RESPONSE = 4 /**< ForwardResponse, matched by call_id */
} gs_repl_msg_type;

/** Events a transport reports. Valid from start() to stop(). @since 1.0 */
typedef struct gs_repl_events {
    uint32_t struct_size;
    void *user;
    /** A message from a peer; bytes valid for the call only. */
    void (*on_message)(void *user, const char *from_node_id, gs_repl_msg_type type,
                       uint64_t call_id, const uint8_t *bytes, size_t len);
    /** A peer connected (1) or left (0). A disconnect is not a death signal. */
    void (*on_peer)(void *user, const char *node_id, int connected);
    /* ---- ABI 1.3: what the engine tells the transport about this node (spec 04
     * TransportConfig); read them only when struct_size covers them ---- */
    /** @since 1.3 "primary" | "replica" (the Hello role). */
    const char *local_role;
    /** @since 1.3 Coordinator mode: the group id, NULL in static mode. */
    const char *group_id;
    /** @since 1.3 Coordinator mode: the primary term, 0 (absent) in static mode. */
    int64_t primary_term;
    /** @since 1.3 The replication protocol version this node speaks (Hello). */
    const char *protocol_version;
} gs_repl_events;

/** @since 1.0 */
typedef struct gs_repl_transport_vtable {
    uint32_t struct_size;
    /** Required. local_node_id is this node's id. */
    gs_status (*create)(const gs_host *host, const void *config, const char *local_node_id,
                        void **instance, gs_error *err);
    /** Required. Listen and connect to configured peers; report through events. */
    gs_status (*start)(void *instance, const gs_repl_events *events, gs_error *err);
    /** Required. Queue bytes for a peer; the transport copies them. */
    gs_status (*send)(void *instance, const char *to_node_id, gs_repl_msg_type type,
                      uint64_t call_id, const uint8_t *bytes, size_t len, gs_error *err);
    /** Required. Close streams, drain Forward calls; return when quiet. */
    void (*stop)(void *instance);
    /** Required. */
    void (*destroy)(void *instance);
} gs_repl_transport_vtable;

#ifdef __cplusplus
}
#endif
#endif
