/*
 * ws transport internals, shared by its three files:
 *   ws.c    the plugin: descriptor, config keys, create/start/stop/destroy, the libwebsockets
 *           context and its service thread, adopt_upgrade and the cross-thread work queue;
 *   conn.c  one WebSocket connection: the lws callback, the handshake (host->ws_open),
 *           message reassembly and limits, the outbound queue behind the gs_ws_sink,
 *           closing, and the access log;
 *   head.c  request heads: the one peeked from an adopted connection (raw path and every
 *           header, as sent) and, for connections on our own port, the headers libwebsockets
 *           parsed.
 *
 * Promise: every connection that got a session from host->ws_open gets exactly one
 * host->ws_close, when the connection is gone (either side closed it, the idle policy hung
 * up, or stop()). A connection's state is freed only once the service thread let go of it
 * and no core thread is inside its sink (reference count). No frame the core queued is
 * dropped silently: past max_ws_backpressure_bytes the send answers GS_AGAIN and the
 * connection closes with 4290.
 *
 * Ownership: gs_ws is the core's through the vtable (create .. destroy). A gs_ws_conn is
 * owned by its lws wsi (one reference, dropped at LWS_CALLBACK_WSI_DESTROY) and by each sink
 * call in progress (a reference for the duration of the call). Queued frames belong to their
 * connection.
 *
 * Threads: create/start/stop/destroy on the core's main thread. Every libwebsockets call
 * except lws_cancel_service runs on the service thread (or on the main thread after that
 * thread was joined, during lws_context_destroy). The sink (send, close) and adopt_upgrade
 * run on any thread: they queue under locks and wake the service thread with
 * lws_cancel_service, which is called only with ws->qlock held and ws->wakeable set, so it
 * never races the context's destruction. Lock order: conn->lock -> ws->qlock.
 */
#ifndef GS_TRANSPORT_WS_INTERNAL_H
#define GS_TRANSPORT_WS_INTERNAL_H

#include <gatestream/client_transport.h>

#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#define GS_WS_COMPONENT "ws"
#define GS_WS_SUBPROTOCOL "sirannon.v1"
#define GS_WS_PEEK_MAX 16384 /* bytes of an adopted connection's head we parse ourselves */
#define GS_WS_REASON_MAX 123 /* a close frame's reason, in bytes */

/** The plugin's config struct, filled by the core from the key table in ws.c. */
typedef struct gs_ws_config {
    int64_t port;              /**< own port: 0 = none, -1 = ephemeral, else the port */
    const char *host;          /**< own port's bind address; NULL = server.host */
    const char *tls_cert_file; /**< own port's TLS; NULL = server.tls_cert_file */
    const char *tls_key_file;  /**< own port's TLS; NULL = server.tls_key_file */
    int64_t ping_interval_s;   /**< silence before a ping (hang-up at server.idle_timeout_s) */
    int64_t stop_timeout_ms;   /**< how long stop() waits for close handshakes */
    int64_t max_header_bytes;  /**< libwebsockets' buffer for one request head */
    gs_config_strings headers; /**< extra header names to pass on for own-port upgrades */
} gs_ws_config;

typedef struct gs_ws_conn gs_ws_conn;
typedef struct gs_ws_adopt gs_ws_adopt;

/** A parsed request head (adopted connections): one allocation holds the text. */
typedef struct gs_ws_head {
    char *text;         /**< the head, NUL-separated in place */
    gs_header *headers; /**< name/value pairs pointing into text */
    size_t header_count;
    const char *target; /**< request target as sent, query removed */
} gs_ws_head;

/** An adopted connection waiting for the service thread. */
struct gs_ws_adopt {
    int fd;
    char remote[64];
    gs_ws_head head; /**< parsed from the peeked bytes; text NULL when that failed */
    /**
     * When the head was parsed it is also read off the socket, and libwebsockets is handed
     * this short version instead (lws_adopt_socket_vhost_readbuf): the request line and only
     * the headers its handshake needs, the subprotocol offer cut to "sirannon.v1". Its own
     * parser refuses offers over 126 bytes, and browsers carry credentials in the offer;
     * the core sees the whole offer from `head`. NULL: libwebsockets reads the socket.
     */
    char *lws_head;
    size_t lws_head_len;
    gs_ws_adopt *next;
};

/** One outbound frame (text), or the part of it not written yet. */
typedef struct gs_ws_frame {
    struct gs_ws_frame *next;
    size_t len;           /**< payload bytes */
    size_t off;           /**< bytes already handed to lws */
    unsigned char data[]; /**< LWS_PRE bytes of headroom, then the payload */
} gs_ws_frame;

struct gs_ws;

/** One connection, from adoption (or its upgrade on our own port) to LWS_CALLBACK_WSI_DESTROY. */
struct gs_ws_conn {
    struct gs_ws *ws;
    atomic_int refs; /**< the wsi's (until WSI_DESTROY) + one per sink call in progress */
    gs_ws_sink sink; /**< what the core calls; user = this */

    /* Guarded by lock: shared with sink callers on core threads. */
    pthread_mutex_t lock;
    gs_ws_frame *q_head, *q_tail;
    uint64_t queued;   /**< bytes queued, plus bytes lws still buffers (inflight) */
    uint64_t inflight; /**< bytes handed to lws that it had not written out yet */
    int closing;       /**< no more sends: a close is queued, or the connection is gone */
    int close_now;     /**< close at once, dropping what is queued (4290, 1013, refusals) */
    int close_code;    /**< the code we close with (0 = none queued) */
    char close_reason[GS_WS_REASON_MAX + 1];
    int gone;  /**< the wsi is gone: never mark dirty again */
    int dirty; /**< in ws->dirty (the flag is guarded by ws->qlock) */
    gs_ws_conn *dirty_next;

    /* Service thread only. */
    struct lws *wsi;
    gs_ws_conn *prev, *next; /**< ws->conns */
    gs_ws_head head;         /**< adopted: the head as sent; own port: filled at the upgrade */
    int adopted;
    int offer_checked; /**< libwebsockets sees a short offer: no length limit applies */
    char remote[64];
    char path[320];     /**< for the access log (printable) */
    void *session;      /**< the core's, from ws_open until ws_close */
    int close_reported; /**< host->ws_close was called */
    int established;    /**< the 101 went out */
    int refuse_code;    /**< complete the handshake, then close with this (no session) */
    char refuse_reason[GS_WS_REASON_MAX + 1];
    const char *subprotocol; /**< what was selected, for the log */
    int peer_code;           /**< the code of a close the client started, or 0 */
    int sent_code;           /**< the code of the close we sent, or 0 */
    uint64_t opened_ms;
    unsigned char *rx; /**< the message being reassembled */
    size_t rx_len, rx_cap;
    int rx_discard; /**< the message passed max_message: its bytes are dropped */
};

/** One instance: one lws context, its service thread, an adopt vhost and maybe a port. */
typedef struct gs_ws {
    const gs_host *host;
    const gs_server_settings *settings;
    gs_ws_config cfg;
    char **custom_names; /**< cfg.headers lower-cased with ':' appended (lws's lookup form) */
    size_t custom_count;

    /* Set by start(), read-only while serving. */
    uint64_t max_message; /**< server.max_body_bytes */
    uint64_t max_backlog; /**< server.max_ws_backpressure_bytes */
    int access_log;       /**< server.access_log */
    struct lws_protocols protocols[3];
    lws_retry_bo_t retry; /**< ping and idle hang-up policy */
    struct lws_context *ctx;
    struct lws_vhost *vh_adopt; /**< no listener: adopted sockets */
    struct lws_vhost *vh_port;  /**< our own port, or NULL */
    int tls;                    /**< the own port serves WSS */
    int bound_port;             /**< our own port, or -1 */
    char addr_text[96];         /**< "127.0.0.1:9877" for messages, or "" */
    pthread_t thread;
    int thread_running;
    atomic_int exit_loop; /**< the service thread ends its loop */

    /* Shared with other threads: guarded by qlock. */
    pthread_mutex_t qlock;
    pthread_cond_t qcond; /**< broadcast when live drops, for stop() */
    int serving;          /**< adopt_upgrade accepted */
    int wakeable;         /**< ctx may be woken (lws_cancel_service) */
    int wake_pending;     /**< a wake-up is on its way */
    int close_all;        /**< stop(): close every connection with 1013 */
    int stopping;         /**< new upgrades are answered with 1013 */
    gs_ws_adopt *adopt_head, *adopt_tail;
    gs_ws_conn *dirty; /**< connections with frames or a close to act on */
    size_t live;       /**< connections with a wsi */

    /* Service thread only. */
    gs_ws_conn *conns;    /**< every connection with a wsi (doubly linked) */
    gs_ws_conn *adopting; /**< being adopted: NEW_CLIENT_INSTANTIATED attaches it */

    /* Start-up diagnostics from the libwebsockets log. */
    pthread_mutex_t loglock;
    int capture_log;
    char start_log[256];
} gs_ws;

/* ws.c */

/** Queue c for the service thread (frames or a close to act on) and wake it. c->lock held;
 * does nothing once c->gone. */
void gs_ws_mark_dirty_locked(gs_ws *ws, gs_ws_conn *c);
/** LWS_CALLBACK_EVENT_WAIT_CANCELLED: act on what other threads queued. Service thread. */
void gs_ws_drain(gs_ws *ws);
/** 1 once stop() began (new upgrades are closed with 1013). Any thread. */
int gs_ws_stopping(gs_ws *ws);
/** WSI_DESTROY: take c off the dirty list and the live count. c->gone is set. */
void gs_ws_forget(gs_ws *ws, gs_ws_conn *c);
/** Monotonic milliseconds. */
uint64_t gs_ws_now_ms(void);

/* conn.c */

/** The one lws callback for every protocol and vhost of the context. Service thread. */
int gs_ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len);
/** A connection (for an adopted socket when a is set: takes a->head). One reference, the
 * caller's. NULL when out of memory. */
gs_ws_conn *gs_ws_conn_new(gs_ws *ws, gs_ws_adopt *a);
/** Drop the caller's reference. */
void gs_ws_conn_release(gs_ws_conn *c);
/** Attach a connection to its wsi: opaque user data, the instance's list, the live count,
 * and a reference for the wsi (dropped at LWS_CALLBACK_WSI_DESTROY). */
void gs_ws_conn_attach(gs_ws_conn *c, struct lws *wsi);
/** stop(): close every connection with 1013. Service thread. */
void gs_ws_conn_close_all(gs_ws *ws);

/* head.c */

/**
 * Parse a request head (the bytes up to and including the empty line) into `out`; *used is
 * its length in `data`. Returns GS_OK, GS_AGAIN when `data` holds no complete head,
 * GS_ERROR when it is not a request line with an origin-form target, or out of memory.
 */
gs_status gs_ws_head_parse(const gs_host *host, const char *data, size_t n, gs_ws_head *out,
                           size_t *used);
/** 1 when the comma-separated header value holds `token` (case-insensitive). */
int gs_ws_token_in(const char *value, const char *token);
/** 1 when a subprotocol offer holds `name` exactly (names split at commas and blanks, as
 * libwebsockets splits them; subprotocol names are case-sensitive). */
int gs_ws_offer_has(const char *offer, const char *name);
void gs_ws_head_free(const gs_host *host, gs_ws_head *h);
/** Value of header `name` (case-insensitive), or NULL. */
const char *gs_ws_head_get(const gs_ws_head *h, const char *name);

/**
 * The headers libwebsockets parsed for wsi (known headers and the configured custom ones),
 * as one gs_ws_head (target: the path libwebsockets decoded, percent-encoded again). Service
 * thread, during the HTTP phase.
 */
gs_status gs_ws_head_from_lws(gs_ws *ws, struct lws *wsi, gs_ws_head *out);

/** 1 when path (no query) is /db/{id} with one non-empty segment. */
int gs_ws_path_ok(const char *path);

#endif
