/*
 * gs_host: what the core lends a plugin. A plugin calls the core only through this table
 * (it links no core symbol), so one .so loads into the server, a test harness, or another
 * host that fills the same table.
 *
 * Promise: the table is size-prefixed and append-only; read a member added after 1.0 only
 * when GS_HAS_MEMBER(gs_host, member, host->struct_size) holds. Every function here is
 * thread-safe and may be called from any thread.
 *
 * Ownership: the caller owns what it passes; the core copies what it keeps. Memory the
 * core hands a plugin to keep (identity text, for instance) is allocated with host->alloc
 * and released with host->free.
 */
#ifndef GATESTREAM_HOST_H
#define GATESTREAM_HOST_H

#include <gatestream/abi.h>
#include <stdarg.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gs_log_level {
    GS_LOG_ERROR = 0,
    GS_LOG_WARN = 1,
    GS_LOG_INFO = 2,
    GS_LOG_DEBUG = 3,
} gs_log_level;

/** One HTTP header; names compare case-insensitively. */
typedef struct gs_header {
    const char *name;
    const char *value;
} gs_header;

struct gs_response;

/**
 * A client request, as a client transport hands it to the core's api layer.
 * Every pointer is owned by the transport and needs to stay valid only until
 * api_submit returns: the core copies what it keeps.
 * @since 1.0
 */
typedef struct gs_request {
    uint32_t struct_size;     /**< sizeof(gs_request) of the transport */
    const char *method;       /**< "GET", "POST", "OPTIONS", ... */
    const char *path;         /**< path as received (percent-encoded), no query string */
    const char *query;        /**< query string without '?', or NULL */
    const gs_header *headers; /**< request headers */
    size_t header_count;
    const char *remote_address; /**< "127.0.0.1:53122" or "[::1]:53122" */
    const uint8_t *body;        /**< request body, or NULL */
    size_t body_len;
    int body_too_large; /**< 1 when the transport stopped reading past max_body_bytes */
    /**
     * Called exactly once with the answer, on any core thread, possibly before api_submit
     * returns. The response and everything it points to are valid for the call only; the
     * transport copies what it sends and must not block (wake its own loop instead).
     */
    void (*complete)(void *user, const struct gs_response *response);
    void *user; /**< passed back to complete */
} gs_request;

/**
 * The core's answer to a gs_request. Valid only during the complete() call.
 * @since 1.0
 */
typedef struct gs_response {
    uint32_t struct_size;
    int status;               /**< HTTP status */
    const gs_header *headers; /**< extra headers (CORS, Retry-After, Vary), not Content-Type */
    size_t header_count;
    const char *content_type; /**< "application/json" */
    const char *body;         /**< body bytes (not NUL-terminated) */
    size_t body_len;
} gs_response;

/**
 * Settings of the server section that client transports share.
 * Valid from create() to destroy() of the transport instance.
 * @since 1.0
 */
typedef struct gs_server_settings {
    uint32_t struct_size;
    const char *host;                   /**< bind address, e.g. "127.0.0.1" */
    int port;                           /**< TCP port; 0 = an ephemeral port */
    uint64_t max_body_bytes;            /**< requests above this get 413 PAYLOAD_TOO_LARGE */
    uint64_t max_ws_backpressure_bytes; /**< WebSocket outbound bound (close 4290 past it) */
    const char *tls_cert_file;          /**< PEM certificate chain, or NULL for plain HTTP */
    const char *tls_key_file;           /**< PEM private key, or NULL */
    int io_threads;                     /**< I/O threads a transport may run (>= 1) */
    int connection_limit;               /**< simultaneous connections a transport accepts */
    int idle_timeout_s;                 /**< idle connection timeout in seconds */
    int access_log;                     /**< 1 = one log line per request */
} gs_server_settings;

/**
 * How the core talks back to one WebSocket connection. Filled by the transport, valid from
 * ws_open until the transport's ws_close call returns.
 * @since 1.1
 */
typedef struct gs_ws_sink {
    uint32_t struct_size;
    void *user;
    /**
     * Queue one text frame (the transport copies data). Thread-safe, never blocks. Returns
     * GS_AGAIN when the frame would push the connection's outbound buffer past
     * max_ws_backpressure_bytes: the transport then closes the connection with 4290 itself
     * and the core sends nothing more. GS_ERROR when the connection is already closing.
     */
    gs_status (*send)(void *user, const char *data, size_t len);
    /** Close with a code (1000, 1008, 1013, 4401, ...) and a reason. Thread-safe. */
    void (*close)(void *user, int code, const char *reason);
} gs_ws_sink;

/**
 * A WebSocket upgrade the transport received, before it answers the handshake.
 * Valid for the ws_open call only.
 * @since 1.1
 */
typedef struct gs_ws_open_request {
    uint32_t struct_size;
    const char *path;         /**< as received (percent-encoded), no query string */
    const gs_header *headers; /**< upgrade request headers (sec-websocket-protocol included) */
    size_t header_count;
    const char *remote_address;
    const gs_ws_sink *sink; /**< copied by the core */
} gs_ws_open_request;

/** The core's answer to an upgrade. @since 1.1 */
typedef struct gs_ws_open_result {
    uint32_t struct_size;
    /** GS_OK: accept the upgrade; select `subprotocol` (NULL = none) and keep `session`. */
    void *session;
    const char *subprotocol; /**< static string, e.g. "sirannon.v1", or NULL */
    /**
     * On refusal (ws_open returned GS_ERROR): when close_code is 0, answer the upgrade with
     * the HTTP status gs_error_status(err) and the JSON error body `body` (then no
     * session exists); when close_code is set (4401, 4403, 1008, 1013), complete the
     * handshake and close at once with that code and `reason` (spec 05).
     */
    int close_code;
    char reason[124]; /**< "CODE: message", at most 123 bytes (a close frame's limit) */
    char body[768];   /**< the JSON error envelope for an HTTP refusal */
    int http_status;
} gs_ws_open_result;

/**
 * The host table.
 * @since 1.0
 */
typedef struct gs_host {
    uint32_t struct_size; /**< sizeof(gs_host) of the core */
    uint16_t abi_major;
    uint16_t abi_minor;
    void *core; /**< the core's private context; opaque to plugins */

    /** Log one line: "<time> <level> <component>: <message>". Never logs request bodies. */
    void (*log)(const struct gs_host *host, gs_log_level level, const char *component,
                const char *fmt, ...) __attribute__((format(printf, 4, 5)));
    /** The core's allocator (tests inject failures through it). */
    void *(*alloc)(size_t size);
    void *(*realloc)(void *ptr, size_t size);
    void (*free)(void *ptr);
    /** Monotonic milliseconds. */
    uint64_t (*now_ms)(void);
    /** The node id from config (node.id). */
    const char *(*node_id)(const struct gs_host *host);
    /** Run fn(arg) on a core worker thread. GS_AGAIN when the core is shutting down. */
    gs_status (*post)(const struct gs_host *host, void (*fn)(void *arg), void *arg);

    /** The shared server settings (client transports). */
    const gs_server_settings *(*server_settings)(const struct gs_host *host);
    /**
     * Hand a request to the api layer. The core answers through request->complete
     * exactly once, whatever this returns; a non-OK return means the core answered
     * already (for instance 503 SHUTDOWN). Called on the transport's I/O thread; runs no SQL.
     */
    gs_status (*api_submit)(const struct gs_host *host, const gs_request *request);

    /** Fill err with code and message; status 0 derives the HTTP status from the code. */
    void (*error_set)(gs_error *err, int status, const char *code, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

    /* ---- ABI 1.1: WebSocket sessions and connection hand-off ---- */

    /**
     * @since 1.1 An upgrade request at `path`: authenticate it, check the database and the
     * offered subprotocols (spec 05), and open a session. Runs on the transport's thread;
     * no SQL. See gs_ws_open_result for what to answer. The core may call the sink from
     * any thread once this returns GS_OK.
     */
    gs_status (*ws_open)(const struct gs_host *host, const gs_ws_open_request *req,
                         gs_ws_open_result *result, gs_error *err);
    /** @since 1.1 One complete text (or binary) message from the client; data valid for the
     * call only. Oversized messages are the transport's to refuse: call ws_too_large. */
    void (*ws_message)(const struct gs_host *host, void *session, const char *data, size_t len);
    /** @since 1.1 The client sent a message over max_body_bytes (the transport discarded it):
     * the core answers PAYLOAD_TOO_LARGE. */
    void (*ws_too_large)(const struct gs_host *host, void *session);
    /**
     * @since 1.1 The connection is gone (either side closed it). After this returns the core
     * never touches the sink again and frees the session; in-flight work is dropped.
     */
    void (*ws_close)(const struct gs_host *host, void *session);
    /**
     * @since 1.1 Hand an accepted TCP connection whose request is a WebSocket upgrade (its
     * bytes peeked, not yet read) to the client transport that serves upgrades. GS_DECLINED:
     * no transport serves upgrades and the caller keeps fd; any other answer means fd is no
     * longer the caller's (the receiving transport closes it on failure).
     */
    gs_status (*upgrade_handoff)(const struct gs_host *host, int fd, const struct sockaddr *addr,
                                 socklen_t addrlen, gs_error *err);
} gs_host;

#ifdef __cplusplus
}
#endif
#endif
