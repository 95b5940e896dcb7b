/*
 * grpc transport internals, shared by its files:
 *   grpc.c    the plugin: descriptor, config keys, create/start/stop/destroy, send;
 *   calls.c   one gRPC call as this transport drives it: outbound queue (one write at a time),
 *             reads, ending, release, and the outbox of events for the core;
 *   server.c  the server: accepting calls, Replicate/Sync streams, Forward, Health;
 *   client.c  the client side: channels to configured peers, dialing with backoff, the
 *             client's Replicate/Sync streams and Forward calls;
 *   cq.c      the completion-queue thread: dispatch, timers, delivery of events to the core;
 *   wire.c    the few protobuf messages the transport itself reads or builds (Hello, a
 *             ForwardResponse carrying an error, the health check);
 *   tls.c     credentials from PEM files, the peer certificate's common name.
 *
 * Promise: every message the core sends is written on the peer's stream in send order, one
 * write in flight per call; every message a peer sends after its Hello is handed to the core
 * in arrival order; a Hello is never handed to the core; on_peer(id, 1) follows the exchange
 * of Hellos on a Replicate stream, on_peer(id, 0) its end.
 *
 * Ownership: the instance owns its config copy, PEM texts, peers, calls, the completion
 * queue, the server and the channels. A gc_call is owned by the instance's call list from
 * creation until its last outstanding batch completed and it is finished (calls.c frees it).
 *
 * Threads and locks: create/start/stop/destroy on the core's main thread; send from any core
 * thread; one completion-queue thread per started instance. One mutex (mu) guards all
 * mutable state; gRPC batches are started with mu held (grpc_call_start_batch never calls
 * back). The core is never called with mu held: handlers collect events in an outbox that the
 * completion-queue thread delivers after unlocking.
 */
#ifndef GS_TRANSPORT_GRPC_INTERNAL_H
#define GS_TRANSPORT_GRPC_INTERNAL_H

#include <gatestream/repl_transport.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define GC_COMPONENT "grpc"

#define GC_SERVICE "sirannon.replication.v1.Replication"
#define GC_METHOD_REPLICATE "/sirannon.replication.v1.Replication/Replicate"
#define GC_METHOD_SYNC "/sirannon.replication.v1.Replication/Sync"
#define GC_METHOD_FORWARD "/sirannon.replication.v1.Replication/Forward"
#define GC_METHOD_HEALTH_CHECK "/grpc.health.v1.Health/Check"

/** Longest node id accepted (from config or a Hello). */
#define GC_ID_MAX 255

/* ------------------------------------------------------------------------------------------ */
/* Config                                                                                     */

/** One entry of `peers`. */
typedef struct gc_peer_config {
    const char *id;          /**< the peer's node id (must match its Hello) */
    const char *address;     /**< host:port of its gRPC server */
    const char *server_name; /**< TLS name to verify instead of the address's host, or NULL */
} gc_peer_config;

/** The plugin's config struct, filled by the core from the key table in grpc.c. */
typedef struct gc_config {
    const char *host;
    int64_t port; /**< -1 = listen only as primary / coordinator mode, on an OS-assigned port */
    const char *tls_cert;
    const char *tls_key;
    const char *tls_ca_cert;
    int insecure;
    int64_t forward_deadline_ms;
    gs_config_list peers; /**< gc_peer_config items */
    int64_t reconnect_min_ms;
    int64_t reconnect_max_ms;
    int64_t max_queue_bytes;
    int64_t max_message_bytes;
    int64_t keepalive_ms;
    int64_t keepalive_timeout_ms;
    int64_t hello_timeout_ms;
} gc_config;

/* ------------------------------------------------------------------------------------------ */
/* Calls                                                                                      */

typedef enum gc_call_kind {
    GC_ACCEPT = 0,    /**< a requested server call not yet arrived */
    GC_SRV_REPLICATE, /**< server side of Replicate */
    GC_SRV_SYNC,      /**< server side of Sync */
    GC_SRV_FORWARD,   /**< server side of Forward */
    GC_SRV_HEALTH,    /**< server side of Health/Check */
    GC_CLI_REPLICATE, /**< client side of Replicate */
    GC_CLI_SYNC,      /**< client side of Sync */
    GC_CLI_FORWARD,   /**< client side of Forward */
} gc_call_kind;

typedef enum gc_op {
    GC_OP_SEND = 1,   /**< SEND_MESSAGE (and SEND_INITIAL_METADATA the first time) */
    GC_OP_RECV = 2,   /**< RECV_MESSAGE (client: with RECV_INITIAL_METADATA the first time) */
    GC_OP_CLOSE = 3,  /**< RECV_CLOSE_ON_SERVER / RECV_STATUS_ON_CLIENT (client unary: all) */
    GC_OP_STATUS = 4, /**< server: SEND_STATUS_FROM_SERVER (and the unary answer) */
    GC_OP_ACCEPT = 5, /**< grpc_server_request_call */
    GC_OP_SHUTDOWN = 6,
} gc_op;

struct gc_call;
struct gc_inst;
struct gc_peer;

/** What a completion-queue tag points at: the call and which of its batches completed. */
typedef struct gc_tag {
    struct gc_call *call; /**< NULL for the server shutdown tag */
    gc_op op;
} gc_tag;

/** A message waiting for its write. */
typedef struct gc_msg {
    struct gc_msg *next;
    grpc_byte_buffer *bb;
    size_t len;
} gc_msg;

typedef struct gc_call {
    struct gc_call *prev, *next; /**< the instance's call list (mu) */
    struct gc_inst *t;
    grpc_call *call;
    gc_call_kind kind;
    struct gc_peer *peer; /**< the peer this call belongs to (streams, forwards), or NULL */
    gc_tag tag_send, tag_recv, tag_close, tag_status, tag_accept;
    int ops;         /**< batches started and not completed */
    int send_busy;   /**< a SEND_MESSAGE batch is in flight */
    int recv_busy;   /**< a RECV_MESSAGE batch is in flight */
    int sent_md;     /**< initial metadata went out with the first write (or status) */
    int got_md;      /**< client: initial metadata requested with the first read */
    int hello_in;    /**< the peer's Hello arrived */
    int live;        /**< usable for the core's sends */
    int finished;    /**< ended: no more reads, writes or events */
    int status_sent; /**< server: status sent or the call cancelled */
    int closed;      /**< the close batch completed */
    gc_msg *qhead, *qtail;
    size_t qbytes; /**< queued bytes, the message being written included */
    grpc_byte_buffer *send_bb;
    size_t send_len;
    grpc_byte_buffer *recv_bb;
    grpc_byte_buffer *unary_out; /**< client forward: the request being sent */
    grpc_metadata_array md_in;
    grpc_metadata_array trailing;
    grpc_call_details details;
    grpc_status_code status;
    grpc_slice status_details;
    int cancelled;        /**< server: RECV_CLOSE_ON_SERVER said cancelled */
    char *peer_addr;      /**< grpc_call_get_peer() of a server stream (host alloc), or NULL */
    uint64_t call_id;     /**< forwards: the core's call id (client) or ours (server) */
    uint64_t deadline_ms; /**< server forward: when it is failed */
    int answered;         /**< server forward: the core's answer was sent */
    char *request_id;     /**< client forward: request_id of the request (host alloc) */
} gc_call;

/* ------------------------------------------------------------------------------------------ */
/* Peers                                                                                      */

/** Everything known about one node id: its configured link (client side) and the streams it
 * opened to this node's server. */
typedef struct gc_peer {
    struct gc_peer *next;
    char *id;
    /* Configured peers (this node dials them). */
    int configured;
    char *address;
    char *server_name;
    grpc_channel *channel;
    gc_call *cli_repl, *cli_sync;
    uint64_t backoff_ms;
    uint64_t redial_at; /**< monotonic ms of the next dial; 0 = none scheduled */
    uint64_t last_fail_log_ms;
    int fail_streak;    /**< consecutive dials that never got a Hello */
    uint64_t hello_due; /**< monotonic ms by which the dialled pair must hold the server's
                           Hellos (0 = none pending): hello_timeout_ms after the dial */
    /* Streams this peer opened to our server. */
    gc_call *srv_repl, *srv_sync;
    int reported_up; /**< the core was told on_peer(id, 1) last */
} gc_peer;

/* ------------------------------------------------------------------------------------------ */
/* Events for the core                                                                        */

typedef struct gc_event {
    struct gc_event *next;
    int is_peer;
    int connected;
    gs_repl_msg_type type;
    uint64_t call_id;
    grpc_slice bytes; /**< the message (a gRPC slice, unref'd after delivery) */
    char peer[];
} gc_event;

typedef struct gc_outbox {
    gc_event *head, *tail;
} gc_outbox;

/* ------------------------------------------------------------------------------------------ */
/* The instance                                                                               */

typedef enum gc_state {
    GC_IDLE = 0,     /**< created or stopped */
    GC_RUNNING = 1,  /**< started */
    GC_STOPPING = 2, /**< stop() in progress: health NOT_SERVING, no new streams, no events */
} gc_state;

typedef struct gc_inst {
    const gs_host *host;
    char *node_id;

    /* Config copy. */
    char *bind_host;
    int64_t port_cfg;
    int insecure;
    uint64_t forward_deadline_ms;
    uint64_t reconnect_min_ms, reconnect_max_ms;
    uint64_t max_queue_bytes, max_message_bytes;
    int64_t keepalive_ms, keepalive_timeout_ms;
    uint64_t hello_timeout_ms;
    char *cert_path, *key_path, *ca_path;
    char *cert_pem, *key_pem, *ca_pem; /**< NUL-terminated file contents (host alloc) */

    /* Hello fields, from the events at start. */
    char role[16];
    char *group_id;
    int64_t primary_term;
    char *protocol_version;

    gs_repl_events events;

    pthread_mutex_t mu;
    pthread_cond_t cond; /**< CLOCK_MONOTONIC; broadcast when calls end, forwards finish, the
                            server shuts down, or the thread exits */
    gc_state state;
    gc_peer *peers;
    gc_outbox deferred; /**< events raised outside the completion-queue thread (send, stop);
                           the thread delivers them */
    gc_call *calls;     /**< every gc_call not yet freed */
    size_t ncalls;
    uint64_t next_fwd_id; /**< server side Forward call ids */
    size_t pending_fwds;  /**< server forwards not answered, failed or cancelled yet */

    grpc_completion_queue *cq;
    grpc_server *server;
    int bound_port;
    gc_tag shutdown_tag;
    int server_shutdown_done;
    grpc_channel_credentials *client_creds; /**< NULL when insecure */

    pthread_t thread;
    int thread_live;
    int grpc_inited;
} gc_inst;

/* ---- grpc.c ---- */

/** monotonic milliseconds */
uint64_t gs_gc_now_ms(void);
/** host->alloc'd copy of s (NULL for NULL or out of memory). */
char *gs_gc_strdup(const gs_host *host, const char *s);
/** 1 when a Replicate stream of p carries messages (either side). mu held. */
int gs_gc_peer_up(const gc_peer *p);
/** The peer record for id, created (unconfigured) when create is set. NULL when absent or
 * out of memory. mu held. */
gc_peer *gs_gc_peer_get(gc_inst *t, const char *id, int create);
/** Report an up/down change of p to the core if its state moved. mu held. */
void gs_gc_peer_sync_state(gc_inst *t, gc_peer *p, gc_outbox *ob);

/* ---- calls.c (mu held unless said otherwise) ---- */

gc_call *gs_gc_call_new(gc_inst *t, gc_call_kind kind);
/** Start batch `op` of c with ops[n]; counts it as outstanding. GRPC_CALL_OK or an error (the
 * batch was not started). */
grpc_call_error gs_gc_call_batch(gc_call *c, gc_op op, const grpc_op *ops, size_t n);
/** Queue a copy of bytes for writing (and write it now if nothing is in flight). GS_OK,
 * GS_AGAIN past max_queue_bytes, GS_ERROR when the call cannot take it (err filled). */
gs_status gs_gc_call_write(gc_call *c, const uint8_t *bytes, size_t len, gs_error *err);
/** Queue a ready byte buffer (our Hello) for writing; takes bb. */
gs_status gs_gc_call_write_buffer(gc_call *c, grpc_byte_buffer *bb);
/** A write of c completed: account for it and start the next one (or end c on failure). */
void gs_gc_call_write_done(gc_call *c, int ok, gc_outbox *ob);
/** Ask for the next message when none is requested. */
void gs_gc_call_read(gc_call *c);
/** End c: no more messages either way; server calls get `code`/`why` as their status (OK:
 * sent after the queued writes; otherwise the call is cancelled with it), client calls are
 * cancelled. Unhooks it from its peer and resyncs the peer's state into ob (NULL: the
 * instance's deferred outbox). Idempotent. */
void gs_gc_call_end(gc_call *c, grpc_status_code code, const char *why, gc_outbox *ob);
/** Free c when it is finished and no batch is outstanding. */
void gs_gc_call_maybe_free(gc_call *c);
/** Detach the received message of c as a slice (empty slice when none). */
grpc_slice gs_gc_call_take_message(gc_call *c, int *present);

/** Queue an event (copies peer; takes bytes). Logs and drops it when memory runs out. */
void gs_gc_outbox_message(gc_inst *t, gc_outbox *ob, const char *peer, gs_repl_msg_type type,
                          uint64_t call_id, grpc_slice bytes);
void gs_gc_outbox_peer(gc_inst *t, gc_outbox *ob, const char *peer, int connected);
/** Deliver (when deliver is set) and free every event. Called WITHOUT mu. */
void gs_gc_outbox_flush(gc_inst *t, gc_outbox *ob, int deliver);

/* ---- server.c ---- */

/** Create the server, bind it, start it and request the first call. Called from start()
 * before the completion-queue thread runs (no lock needed). */
gs_status gs_gc_server_start(gc_inst *t, gs_error *err);
/** Completion of a server call's batch. mu held. */
void gs_gc_server_event(gc_inst *t, gc_call *c, gc_op op, int ok, gc_outbox *ob);
/** The core's answer to a Forward call. mu held. */
gs_status gs_gc_server_answer(gc_inst *t, const char *to, uint64_t call_id, const uint8_t *bytes,
                              size_t len, gs_error *err);
/** Fail the server forwards past their deadline; the earliest remaining deadline (0 = none).
 * mu held. */
uint64_t gs_gc_server_expire(gc_inst *t, uint64_t now);

/* ---- client.c ---- */

/** Create the channel of every configured peer and schedule the first dials. Called from
 * start() before the completion-queue thread runs. */
gs_status gs_gc_client_start(gc_inst *t, gs_error *err);
/** Completion of a client call's batch. mu held. */
void gs_gc_client_event(gc_inst *t, gc_call *c, gc_op op, int ok, gc_outbox *ob);
/** Dial the peers whose time has come; the earliest remaining dial time (0 = none). mu held. */
uint64_t gs_gc_client_dial_due(gc_inst *t, uint64_t now, gc_outbox *ob);
/** Start a Forward call to peer p. mu held. */
gs_status gs_gc_client_forward(gc_inst *t, gc_peer *p, uint64_t call_id, const uint8_t *bytes,
                               size_t len, gs_error *err);
/** A client stream of p ended: end its sibling, schedule the next dial. mu held. */
void gs_gc_client_stream_lost(gc_inst *t, gc_peer *p, gc_outbox *ob);

/* ---- cq.c ---- */

gs_status gs_gc_cq_thread_start(gc_inst *t, gs_error *err);

/* ---- wire.c ---- */

typedef struct gc_hello {
    char node_id[GC_ID_MAX + 1];
    char role[32];
    char group_id[256];
    int64_t primary_term;
    char protocol_version[64];
} gc_hello;

/** The ReplicationMessage (sync = 0) or SyncMessage (sync = 1) carrying this node's Hello, as
 * a byte buffer (NULL when out of memory). */
grpc_byte_buffer *gs_gc_hello_build(gc_inst *t, int sync);
/** Parse the first message of a stream: 0 with *h filled when it is a Hello with a node id;
 * -1 otherwise (why filled for a person). */
int gs_gc_hello_parse(gc_inst *t, int sync, const uint8_t *p, size_t len, gc_hello *h, char *why,
                      size_t why_size);
/** The field number of the payload oneof a ReplicationMessage / SyncMessage carries (the last
 * one set), 0 when none, -1 when the bytes are not a protobuf message. */
int gs_gc_payload_field(const uint8_t *p, size_t len);
/** request_id (field 1) of a ForwardRequest, host alloc'd ("" when absent; NULL when out of
 * memory or the bytes do not parse). */
char *gs_gc_forward_request_id(gc_inst *t, const uint8_t *p, size_t len);
/** A ForwardResponse {request_id, error} as a slice (empty slice when out of memory). */
grpc_slice gs_gc_forward_error(gc_inst *t, const char *request_id, const char *error);
/** The service name of a HealthCheckRequest; -1 when the bytes do not parse. */
int gs_gc_health_service(gc_inst *t, const uint8_t *p, size_t len, char *out, size_t out_size);
/** A HealthCheckResponse with status (1 SERVING, 2 NOT_SERVING). */
grpc_byte_buffer *gs_gc_health_response(int status);

/* ---- tls.c ---- */

/** Read the PEM files named in the config into t (create time). */
gs_status gs_gc_tls_load(gc_inst *t, gs_error *err);
grpc_server_credentials *gs_gc_tls_server_creds(gc_inst *t);
grpc_channel_credentials *gs_gc_tls_channel_creds(gc_inst *t);
/** The x509 common name of the call's peer certificate into out; 0, or -1 when there is none. */
int gs_gc_tls_peer_cn(grpc_call *call, char *out, size_t out_size);
/** 1 when client certificates are requested and verified (TLS with a CA). */
int gs_gc_tls_verifies_peers(const gc_inst *t);

#endif
