/*
 * http transport internals, shared by its three files:
 *   http.c      the plugin: descriptor, config keys, create/start/stop/destroy, listening,
 *               TLS material, the libmicrohttpd daemon;
 *   request.c   one HTTP request: body buffering, the hand-off to host->api_submit, the
 *               suspend/resume dance with request->complete, the access log;
 *   acceptor.c  the port shared with WebSocket: our own listening socket and accept thread,
 *               which peeks at each new connection's request head and hands WebSocket
 *               upgrades to host->upgrade_handoff and everything else to libmicrohttpd.
 *
 * Promise: every request the daemon parses is handed to the core exactly once (or answered
 * locally when the transport cannot: out of memory, shutting down) and answered exactly once;
 * a request context outlives both its connection and the core's reference to it, whichever
 * ends last (reference count), so a complete() that arrives after the client went away, or
 * after the instance was destroyed, only frees memory.
 *
 * Ownership: gs_http is owned by the core through the vtable (create .. destroy). A
 * gs_http_req is owned jointly by its MHD connection and, once submitted, by the core;
 * the last of the two to let go frees it (gs_http_req_release).
 *
 * Threads: create/start/stop/destroy run on the core's main thread. The MHD callbacks
 * (uri log, access handler, request completed, connection notify, logger) run on the daemon's
 * I/O threads. The acceptor thread (acceptor.c) owns the listening socket and the connections
 * it is still peeking at; it touches the daemon only through MHD_add_connection.
 * request->complete runs on any core thread, possibly inside api_submit. A request's shared
 * state is guarded by its own mutex; the instance's live list by the instance mutex; the
 * lock order is instance -> request -> MHD's internal mutex, never the other way.
 */
#ifndef GS_TRANSPORT_HTTP_INTERNAL_H
#define GS_TRANSPORT_HTTP_INTERNAL_H

#include <gatestream/client_transport.h>

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#define GS_HTTP_COMPONENT "http"

/** The plugin's config struct, filled by the core from the key table in http.c. */
typedef struct gs_http_config {
    int64_t threads;                 /**< I/O threads; 0 = server.io_threads */
    int64_t connection_timeout_s;    /**< idle timeout; 0 = server.idle_timeout_s */
    int64_t max_connections;         /**< connection limit; 0 = server.connection_limit */
    int64_t max_connections_per_ip;  /**< per client address; 0 = unlimited */
    int64_t connection_memory_bytes; /**< MHD per-connection pool (request line + headers) */
    int64_t stop_timeout_ms;         /**< how long stop() waits for in-flight requests */
    int64_t oversize_drain_bytes;    /**< chunked bytes read and dropped after a 413 */
    int64_t upgrade_handoff;         /**< 1 = own acceptor, upgrades to host->upgrade_handoff */
    int64_t peek_timeout_ms;         /**< how long a new connection may take to send its head */
} gs_http_config;

typedef struct gs_http_peek gs_http_peek;

typedef struct gs_http_req gs_http_req;

/** One instance: one listening address, one MHD daemon. */
typedef struct gs_http {
    const gs_host *host;
    const gs_server_settings *settings;
    gs_http_config cfg;
    uint64_t max_body_bytes; /**< server.max_body_bytes, read at start() */
    int access_log;          /**< server.access_log, read at start() */

    struct sockaddr_storage addr; /**< the bind address (port included) */
    int family;                   /**< AF_INET or AF_INET6 */
    char addr_text[96];           /**< "127.0.0.1:9876" or "[::1]:9876" for messages */

    char *tls_cert; /**< PEM, NUL-terminated, host->alloc; kept while the daemon runs */
    char *tls_key;  /**< PEM, wiped before it is freed */
    size_t tls_key_len;

    struct MHD_Daemon *daemon;
    int bound_port; /**< port actually bound, -1 when not serving */

    /* The acceptor (acceptor.c); used = 1 while it serves the port instead of MHD. */
    int acc_used;           /**< set by start(), read-only until stop() */
    int acc_listen_fd;      /**< our listening socket, -1 when none */
    int acc_epoll_fd;       /**< the acceptor's epoll set, -1 when none */
    int acc_wake_fd;        /**< eventfd: stop, or a connection slot freed while paused */
    pthread_t acc_thread;   /**< the accept thread */
    int acc_running;        /**< the thread was started and not joined yet */
    atomic_int acc_stop;    /**< stop() asks the thread to end */
    atomic_int acc_paused;  /**< the thread stopped accepting at the connection limit */
    atomic_long conn_count; /**< connections being peeked at or owned by the daemon */
    int64_t conn_limit;     /**< the connection limit the acceptor enforces; 0 = none */
    gs_http_peek *acc_head; /**< connections being peeked at, oldest first (thread only) */
    gs_http_peek *acc_tail;
    uint64_t acc_resume_ms;      /**< accept paused after EMFILE/ENFILE until then; 0 = not */
    uint64_t acc_full_logged_ms; /**< last "out of file descriptors" warning */

    atomic_int stopping; /**< stop() began: answers carry Connection: close */
    atomic_int closing;  /**< stop() stopped waiting: no suspend, local 503s */

    pthread_mutex_t lock; /**< guards the fields below */
    pthread_cond_t quiet; /**< broadcast when live_count drops to zero */
    gs_http_req *live;    /**< requests attached to a connection (doubly linked) */
    size_t live_count;    /**< entries in live */
    int capture_log;      /**< 1 while start() runs: keep MHD's last message */
    char start_log[256];  /**< MHD's last message during start() */
} gs_http;

/* request.c: MHD callbacks (cls is the gs_http instance). */
void *gs_http_uri_log(void *cls, const char *uri, struct MHD_Connection *connection);
size_t gs_http_unescape_keep(void *cls, struct MHD_Connection *connection, char *s);
enum MHD_Result gs_http_access(void *cls, struct MHD_Connection *connection, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **req_cls);
void gs_http_completed(void *cls, struct MHD_Connection *connection, void **req_cls,
                       enum MHD_RequestTerminationCode toe);

/* http.c */

/** strerror text with a lower-case first letter, for "cannot ...: <why>" messages. */
void gs_http_errno_text(int e, char *out, size_t size);

/* acceptor.c */

/** What a peeked request head asks for. */
enum gs_http_head {
    GS_HTTP_HEAD_MORE = 0,    /**< a GET whose head is not complete yet: wait for more bytes */
    GS_HTTP_HEAD_PLAIN = 1,   /**< anything but a WebSocket upgrade: libmicrohttpd serves it */
    GS_HTTP_HEAD_UPGRADE = 2, /**< GET with Upgrade: websocket: hand it to host->upgrade_handoff */
};

/** Classify the first n bytes a connection sent (n <= max; max = the peek bound). Pure. */
enum gs_http_head gs_http_classify_head(const char *buf, size_t n, size_t max);

/** start(): create, bind and listen on h->addr (non-blocking). Fills h->bound_port. */
gs_status gs_http_acceptor_listen(gs_http *h, gs_error *err);
/** start(), after the daemon runs: the epoll set, the wake eventfd and the accept thread. */
gs_status gs_http_acceptor_start(gs_http *h, gs_error *err);
/** stop(): end the accept thread, close the listening socket and every connection still
 * being peeked at. Idempotent. The wake eventfd stays open until gs_http_acceptor_close. */
void gs_http_acceptor_stop(gs_http *h);
/** After MHD_stop_daemon (no more connection notifications): close what is left. */
void gs_http_acceptor_close(gs_http *h);
/** MHD_OPTION_NOTIFY_CONNECTION: keeps conn_count, wakes a paused acceptor. MHD threads. */
void gs_http_notify_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                               enum MHD_ConnectionNotificationCode toe);

/**
 * stop(): answer every request still suspended waiting for the core with 503 SHUTDOWN and
 * resume its connection, so the daemon can be stopped. The caller has set `closing`, so no
 * request suspends after this returns. Main thread; takes the instance lock. Returns how
 * many requests it answered.
 */
size_t gs_http_finish_suspended(gs_http *h);

#endif
