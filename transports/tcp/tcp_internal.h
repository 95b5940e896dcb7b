/*
 * tcp transport internals, shared by its files:
 *   tcp.c    the plugin: descriptor, config keys and checks, create/start/stop/destroy, send;
 *   frame.c  the wire format (pure; see frame.h);
 *   net.c    sockets: address parsing, the listener, non-blocking connect, accept;
 *   tls.c    gnutls: credentials, sessions, handshake, the peer certificate's CN, record I/O;
 *   conn.c   one connection: handshake and hellos, reading and decoding frames, the write
 *            queue and its flushing, closing (with the peer events);
 *   loop.c   the I/O thread: epoll, the eventfd wake-up, timers (heartbeats, silence,
 *            hello deadlines, reconnects with backoff) and the dialers.
 *
 * Promise: at most one registered (hello-complete) connection per peer node id; on_peer(id,
 * 1) when one is registered, on_peer(id, 0) when it ends; messages of one connection are
 * delivered in the order they were sent; no callback runs after stop() returns.
 *
 * Ownership: the instance copies its config at create() and the events (with the strings
 * they point to) at start(). Connections and their buffers belong to the I/O thread; frames
 * queued by send() belong to the connection's queue until the I/O thread writes or drops
 * them. Everything is allocated with the host's allocator.
 *
 * Threads and locks: create/start/stop/destroy on the core's main thread; send from any
 * thread; one I/O thread per started instance does every socket and TLS call and every
 * callback into the core. inst->lock guards the connection list, each connection's
 * `registered` flag and its shared queue, and `running`; the I/O thread never holds it while
 * calling the core or doing I/O.
 */
#ifndef GS_TRANSPORT_TCP_INTERNAL_H
#define GS_TRANSPORT_TCP_INTERNAL_H

#include "frame.h"

#include <gatestream/repl_transport.h>

#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define GS_TCP_COMPONENT "tcp"
/** Bytes of consecutive small frames coalesced into one write (one TLS record). */
#define GS_TCP_STAGE_BYTES 16384
/** Largest slice of a big frame handed to one plaintext send(). */
#define GS_TCP_PLAIN_CHUNK 262144
/** Read buffer size when no big frame is being received. */
#define GS_TCP_RBUF_BASE 65536
/** Bytes one connection may read, or write, in one pass of the loop (fairness: a busy
 * link cannot starve the others, or its own other direction). */
#define GS_TCP_IO_BUDGET 1048576
/** A connection must finish TLS and the hellos within max(this, 3 heartbeats). */
#define GS_TCP_HELLO_TIMEOUT_MIN_MS 5000

/** One `peers` entry of the config struct (filled by the core). */
typedef struct gs_tcp_peer_config {
    const char *id;      /**< the peer's node id (its certificate CN with TLS) */
    const char *address; /**< "host:port" or "[v6]:port" */
} gs_tcp_peer_config;

/** The plugin's config struct, filled by the core from the key table in tcp.c. */
typedef struct gs_tcp_config {
    const char *host;        /**< listen address */
    int64_t port;            /**< listen port; 0 = OS-assigned */
    const char *tls_cert;    /**< PEM certificate (chain) of this node, CN = node id */
    const char *tls_key;     /**< PEM private key */
    const char *tls_ca_cert; /**< PEM CA bundle that signs every peer's certificate */
    int insecure;            /**< 1 = plaintext, no authentication */
    gs_config_list peers;    /**< gs_tcp_peer_config items: the nodes this one dials */
    int64_t heartbeat_ms;
    int64_t reconnect_min_ms;
    int64_t reconnect_max_ms;
    int64_t max_queue_bytes;
    int64_t max_frame_bytes;
} gs_tcp_config;

/** A queued frame (header and payload), allocated with the host's allocator. */
typedef struct gs_tcp_out {
    struct gs_tcp_out *next;
    size_t len;
    uint8_t bytes[];
} gs_tcp_out;

/** What an epoll registration points to. */
typedef enum gs_tcp_handle_kind {
    GS_TCP_H_LISTEN = 1,
    GS_TCP_H_WAKE = 2,
    GS_TCP_H_CONN = 3,
} gs_tcp_handle_kind;

typedef struct gs_tcp_handle {
    gs_tcp_handle_kind kind;
} gs_tcp_handle;

typedef enum gs_tcp_conn_state {
    GS_TCP_C_CONNECTING = 0, /**< outbound, non-blocking connect in progress */
    GS_TCP_C_TLS,            /**< TLS handshake */
    GS_TCP_C_HELLO,          /**< waiting for the peer's hello */
    GS_TCP_C_ACTIVE,         /**< hellos exchanged, registered, messages flow */
    GS_TCP_C_CLOSED,         /**< closed, waiting to be freed at the end of the loop pass */
} gs_tcp_conn_state;

struct gs_tcp_inst;
struct gs_tcp_conn;

/** A configured peer this node dials (I/O thread, except the immutable id and address). */
typedef struct gs_tcp_dial {
    char *id;
    char *address;
    char host[256]; /**< parsed from address */
    char port[8];
    struct gs_tcp_conn *conn; /**< the connection in progress or up, or NULL */
    uint64_t next_ms;         /**< next attempt (monotonic ms) when conn is NULL */
    uint64_t backoff_ms;      /**< the wait after the next failure */
    int failing;              /**< failures since the last success (first one logged at WARN) */
} gs_tcp_dial;

typedef struct gs_tcp_conn {
    gs_tcp_handle h; /**< first: the epoll pointer */
    struct gs_tcp_conn *next;
    struct gs_tcp_inst *t;
    int fd;
    gs_tcp_dial *dial; /**< the dialer that made it; NULL for an accepted connection */
    gs_tcp_conn_state state;
    gnutls_session_t tls; /**< NULL in insecure mode */
    char peer_id[256];    /**< expected (outbound) or from the hello (inbound) */
    char cert_cn[256];    /**< the peer certificate's CN (TLS) */
    char addr[80];        /**< remote address, for logs */
    char role[8];         /**< from the peer's hello */
    uint64_t silence_ms;  /**< drop the peer after this long without a byte */
    uint64_t last_rx_ms, next_hb_ms, deadline_ms;
    uint32_t epoll_events; /**< the interest currently registered */

    /* Guarded by inst->lock. */
    int registered; /**< the peer's connection: send() queues here */
    gs_tcp_out *qhead, *qtail;
    uint64_t qbytes; /**< queued and not yet written */

    /* I/O thread only. */
    uint8_t *rbuf;
    size_t rlen, rcap;
    size_t need; /**< bytes the incomplete frame at rbuf's start needs in all (0: none known) */
    gs_tcp_out *whead, *wtail; /**< frames taken from the shared queue */
    size_t foff;               /**< bytes of whead already written */
    uint8_t *stage;            /**< coalesced small frames (GS_TCP_STAGE_BYTES) */
    size_t stage_len, stage_off;
    const uint8_t *pend; /**< a chunk a write returned EAGAIN on (TLS retries it as is) */
    size_t pend_len;
    int pend_stage;       /**< pend points into stage, else into whead */
    uint64_t freed_bytes; /**< written bytes not yet subtracted from qbytes */
    int reported;         /**< on_peer(id, 1) was called; on_peer(id, 0) is owed */
    int read_more;        /**< the read budget ran out with bytes left: read again soon */
} gs_tcp_conn;

typedef struct gs_tcp_inst {
    const gs_host *host;
    char *node_id;

    /* Config, copied at create. */
    char *bind_host;
    int port;       /**< configured port */
    int bound_port; /**< the port the first listen got (reused on restart when port is 0) */
    int insecure;
    gs_tcp_dial *dials;
    size_t ndials;
    uint64_t heartbeat_ms, reconnect_min_ms, reconnect_max_ms, max_queue_bytes, max_frame_bytes;

    /* TLS (create..destroy). */
    gnutls_certificate_credentials_t cred;
    gnutls_priority_t prio;

    /* start..stop: main thread writes, I/O thread reads. */
    gs_repl_events events;
    char role[8];
    char *group_id;
    char *protocol_version;
    int64_t primary_term;
    int listening;
    int epfd, wakefd, lfd;
    gs_tcp_handle listen_h, wake_h;
    pthread_t thread;
    int thread_live;
    atomic_int wake_pending;
    atomic_int stopping;

    pthread_mutex_t lock;
    int running;        /**< lock: started and not stopping; send() accepts */
    gs_tcp_conn *conns; /**< lock: every open connection */
    gs_tcp_conn *grave; /**< I/O thread: closed, freed at the end of the loop pass */
} gs_tcp_inst;

/* ---- tcp.c ---- */

/** Wake the I/O thread (any thread; coalesced). */
void gs_tcp_wake(gs_tcp_inst *t);

/* ---- net.c ---- */

/** Split "host:port" / "[v6]:port" into host and port text. 0, or -1 with why. */
int gs_tcp_parse_address(const char *address, char *host, size_t host_cap, char *port,
                         size_t port_cap, char *why, size_t why_size);
/** Bind and listen on host:port (non-blocking, close-on-exec, SO_REUSEADDR). The fd, or -1
 * with why; *bound is the port bound. */
int gs_tcp_listen(const char *host, int port, int *bound, char *why, size_t why_size);
/** Start a non-blocking connect to host:port. The fd (connected or in progress), or -1 with
 * why. Name resolution (getaddrinfo) runs here, on the caller's thread. */
int gs_tcp_connect_start(const char *host, const char *port, char *addr_text, size_t addr_cap,
                         char *why, size_t why_size);
/** Accept one connection (non-blocking, close-on-exec, TCP_NODELAY). The fd, -1 when none
 * is waiting, -2 on an error worth a log line (why filled). */
int gs_tcp_accept(int lfd, char *addr_text, size_t addr_cap, char *why, size_t why_size);
/** The pending error of a non-blocking connect (0 = connected). */
int gs_tcp_connect_result(int fd);

/* ---- tls.c ---- */

/** Load the certificate, key and CA of the config; build the TLS 1.3 priority. Warns when
 * the certificate's CN is not the node id. GS_OK or GS_ERROR (INVALID_CONFIG, err filled). */
gs_status gs_tcp_tls_init(gs_tcp_inst *t, const char *cert, const char *key, const char *ca,
                          gs_error *err);
void gs_tcp_tls_free(gs_tcp_inst *t);
/** A session for c (client when c->dial). 0, or -1 with why. */
int gs_tcp_tls_session(gs_tcp_conn *c, char *why, size_t why_size);
/** Step the handshake: 1 done (peer chain verified, c->cert_cn filled), 0 again (c's epoll
 * interest updated by the caller from gs_tcp_tls_wants_write), -1 failed (why filled). */
int gs_tcp_tls_handshake(gs_tcp_conn *c, char *why, size_t why_size);
/** 1 when the session waits to write. */
int gs_tcp_tls_wants_write(const gs_tcp_conn *c);
/** Read: > 0 bytes, 0 end of stream, -1 again, -2 error (why filled). */
ssize_t gs_tcp_tls_recv(gs_tcp_conn *c, uint8_t *buf, size_t cap, char *why, size_t why_size);
/** Write: > 0 bytes taken, -1 again (retry the same bytes), -2 error (why filled). */
ssize_t gs_tcp_tls_send(gs_tcp_conn *c, const uint8_t *buf, size_t len, char *why, size_t why_size);
/** Best-effort TLS close_notify (non-blocking; ignores failures). */
void gs_tcp_tls_bye(gs_tcp_conn *c);

/* ---- conn.c ---- */

/** A connection around fd (inbound when dial is NULL), registered with epoll. NULL when out
 * of memory or epoll refuses (fd closed). */
gs_tcp_conn *gs_tcp_conn_new(gs_tcp_inst *t, int fd, gs_tcp_dial *dial, gs_tcp_conn_state state,
                             const char *addr);
/** TCP is up (accepted, or a dial connected): start TLS, or the hellos in insecure mode. */
void gs_tcp_conn_start(gs_tcp_conn *c);
/** Handle epoll events on c. */
void gs_tcp_conn_event(gs_tcp_conn *c, uint32_t events);
/** Write what c's queue holds, as far as the socket takes it (at most GS_TCP_IO_BUDGET bytes;
 * EPOLLOUT brings the loop back for the rest). */
void gs_tcp_conn_flush(gs_tcp_conn *c);
/** Read and handle what c's socket holds (at most GS_TCP_IO_BUDGET bytes; c->read_more is set
 * when bytes were left). */
void gs_tcp_conn_read(gs_tcp_conn *c);
/** Timers of c at now: hello deadline, silence, heartbeat. Returns the next due time. */
uint64_t gs_tcp_conn_tick(gs_tcp_conn *c, uint64_t now);
/** Close c: unregister it, report on_peer(id, 0) if it was registered (unless stopping),
 * reschedule its dialer, and move it to the grave. reason is logged; send_close also sends it
 * to the peer in a close frame when the connection can still carry one. */
void gs_tcp_conn_close(gs_tcp_conn *c, int level, const char *reason, int send_close);
/** Free the closed connections (end of a loop pass, or at stop). */
void gs_tcp_conn_bury(gs_tcp_inst *t);
/** Queue a frame on c (inst->lock held). Takes o. */
void gs_tcp_conn_enqueue_locked(gs_tcp_conn *c, gs_tcp_out *o);
/** Allocate a frame of payload_len bytes with its header written. NULL when out of memory. */
gs_tcp_out *gs_tcp_out_new(gs_tcp_inst *t, gs_tcp_frame_type ft, uint8_t mt, uint64_t call_id,
                           const uint8_t *payload, size_t payload_len);

/* ---- loop.c ---- */

/** Start the I/O thread (listener and eventfd set up first). GS_OK or GS_ERROR. */
gs_status gs_tcp_loop_start(gs_tcp_inst *t, gs_error *err);
/** Stop and join the I/O thread; close every connection and the listener. */
void gs_tcp_loop_stop(gs_tcp_inst *t);
/** 1 when the caller runs on t's I/O thread. */
int gs_tcp_on_io_thread(const gs_tcp_inst *t);
/** Monotonic milliseconds. */
uint64_t gs_tcp_now_ms(void);

#endif
