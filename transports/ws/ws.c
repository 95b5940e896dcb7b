/*
 * ws: the WebSocket client transport, over libwebsockets (4.1, OpenSSL build).
 *
 * What it does: serves the Sirannon WebSocket protocol at /db/{id}. Connections come two
 * ways: handed over by the http transport, which shares the server port and peeks at each
 * new connection (adopt_upgrade: the request head is still unread, libwebsockets reads it
 * and does the handshake), and, when the key `port` is set, accepted on a port of its own
 * (the way to offer WSS, since a TLS port cannot be peeked). Messages and frames are the
 * core's (host->ws_open / ws_message / ws_too_large / ws_close and the gs_ws_sink); this
 * plugin owns the handshake, subprotocol selection, limits, backpressure, ping/pong and
 * closing (conn.c).
 *
 * One libwebsockets context per instance, with one service thread. Debian's libwebsockets
 * has no external poll, and its only thread-safe call is lws_cancel_service(): other
 * threads queue work (adopted sockets, connections with frames or a close) under qlock and
 * wake the service thread, which acts on it in LWS_CALLBACK_EVENT_WAIT_CANCELLED.
 *
 * Threads: create/start/stop/destroy on the core's main thread; adopt_upgrade on any thread.
 */
#include "ws_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WS_FAIL(host, err, code, ...)                                                              \
    ((err) ? (host)->error_set((err), 0, (code), __VA_ARGS__) : (void)0, GS_ERROR)

uint64_t gs_ws_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------------------------------------------ */
/* Config keys                                                                                */

static const gs_config_key ws_keys[] = {
    {.name = "port",
     .type = GS_CFG_INT,
     .default_value = "0",
     .offset = offsetof(gs_ws_config, port),
     .help = "a port of its own (e.g. for WSS): 0 = none, only upgrades handed over by the "
             "http transport on the server port; -1 = an ephemeral port",
     .min = -1,
     .max = 65535},
    {.name = "host",
     .type = GS_CFG_STRING,
     .offset = offsetof(gs_ws_config, host),
     .help = "bind address of its own port (IPv4 or IPv6 literal); default server.host"},
    {.name = "tls_cert_file",
     .type = GS_CFG_STRING,
     .offset = offsetof(gs_ws_config, tls_cert_file),
     .help = "PEM certificate chain for WSS on its own port; default server.tls_cert_file"},
    {.name = "tls_key_file",
     .type = GS_CFG_STRING,
     .offset = offsetof(gs_ws_config, tls_key_file),
     .help = "PEM private key for WSS on its own port; default server.tls_key_file"},
    {.name = "ping_interval_s",
     .type = GS_CFG_INT,
     .default_value = "30",
     .offset = offsetof(gs_ws_config, ping_interval_s),
     .help = "seconds without a pong before a ping; a connection silent for "
             "server.idle_timeout_s is closed",
     .min = 1,
     .max = 3600},
    {.name = "stop_timeout_ms",
     .type = GS_CFG_INT,
     .default_value = "3000",
     .offset = offsetof(gs_ws_config, stop_timeout_ms),
     .help = "how long stop waits for clients to answer the 1013 close before cutting them off",
     .min = 0,
     .max = 600000},
    {.name = "max_header_bytes",
     .type = GS_CFG_INT,
     .default_value = "16384",
     .offset = offsetof(gs_ws_config, max_header_bytes),
     .help = "largest upgrade request head (request line and headers) accepted",
     .min = 1024,
     .max = 65535},
    {.name = "headers",
     .type = GS_CFG_STRING_LIST,
     .offset = offsetof(gs_ws_config, headers),
     .help = "extra request headers passed to the core for upgrades on its own port (e.g. a "
             "custom auth header); upgrades handed over by the http transport carry all"},
};

#define WS_KEY_COUNT (sizeof ws_keys / sizeof ws_keys[0])

/* ------------------------------------------------------------------------------------------ */
/* libwebsockets' log: process-wide, so it goes to the instance that started last.            */

static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;
static gs_ws *log_target; /* guarded by log_mutex */

static void lws_log_emit(int level, const char *line)
{
    char msg[256];
    snprintf(msg, sizeof msg, "%s", line);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    pthread_mutex_lock(&log_mutex);
    gs_ws *ws = log_target;
    if (ws) {
        pthread_mutex_lock(&ws->loglock);
        if (ws->capture_log && level == LLL_ERR)
            snprintf(ws->start_log, sizeof ws->start_log, "%s", msg);
        pthread_mutex_unlock(&ws->loglock);
        /* Client misbehaviour shows up here as errors too: DEBUG, or clients flood the log. */
        ws->host->log(ws->host, GS_LOG_DEBUG, GS_WS_COMPONENT, "libwebsockets: %s", msg);
    }
    pthread_mutex_unlock(&log_mutex);
}

static void log_attach(gs_ws *ws)
{
    pthread_mutex_lock(&log_mutex);
    log_target = ws;
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);
    pthread_mutex_unlock(&log_mutex);
}

static void log_detach(gs_ws *ws)
{
    pthread_mutex_lock(&log_mutex);
    if (log_target == ws)
        log_target = NULL;
    pthread_mutex_unlock(&log_mutex);
}

/* ------------------------------------------------------------------------------------------ */
/* The work queue                                                                             */

static void wake_locked(gs_ws *ws)
{
    if (ws->wakeable && !ws->wake_pending) {
        ws->wake_pending = 1;
        lws_cancel_service(ws->ctx);
    }
}

void gs_ws_mark_dirty_locked(gs_ws *ws, gs_ws_conn *c)
{
    if (c->gone)
        return;
    pthread_mutex_lock(&ws->qlock);
    if (!c->dirty) {
        c->dirty = 1;
        c->dirty_next = ws->dirty;
        ws->dirty = c;
    }
    wake_locked(ws);
    pthread_mutex_unlock(&ws->qlock);
}

void gs_ws_forget(gs_ws *ws, gs_ws_conn *c)
{
    pthread_mutex_lock(&ws->qlock);
    if (c->dirty) {
        for (gs_ws_conn **pp = &ws->dirty; *pp; pp = &(*pp)->dirty_next)
            if (*pp == c) {
                *pp = c->dirty_next;
                break;
            }
        c->dirty = 0;
    }
    if (ws->live)
        ws->live--;
    pthread_cond_broadcast(&ws->qcond);
    pthread_mutex_unlock(&ws->qlock);
}

int gs_ws_stopping(gs_ws *ws)
{
    pthread_mutex_lock(&ws->qlock);
    int s = ws->stopping;
    pthread_mutex_unlock(&ws->qlock);
    return s;
}

/* Called once per protocol and vhost for each wake-up; the later calls find nothing. */
void gs_ws_drain(gs_ws *ws)
{
    pthread_mutex_lock(&ws->qlock);
    gs_ws_adopt *adopts = ws->adopt_head;
    ws->adopt_head = ws->adopt_tail = NULL;
    gs_ws_conn *dirty = ws->dirty;
    ws->dirty = NULL;
    for (gs_ws_conn *c = dirty; c; c = c->dirty_next)
        c->dirty = 0;
    int close_all = ws->close_all;
    ws->close_all = 0;
    ws->wake_pending = 0;
    pthread_mutex_unlock(&ws->qlock);

    /* Nothing below closes a wsi synchronously, so the dirty entries stay valid. */
    for (gs_ws_conn *c = dirty, *next; c; c = next) {
        next = c->dirty_next;
        if (c->wsi && c->established)
            lws_callback_on_writable(c->wsi);
    }
    if (close_all)
        gs_ws_conn_close_all(ws);
    while (adopts) {
        gs_ws_adopt *a = adopts;
        adopts = a->next;
        gs_ws_conn *c = gs_ws_conn_new(ws, a); /* takes a->head */
        if (!c) {
            ws->host->log(ws->host, GS_LOG_WARN, GS_WS_COMPONENT,
                          "out of memory adopting the connection from %s: closed", a->remote);
            close(a->fd);
        } else {
            /* The new wsi picks c up in LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED, before
             * its request is read: with a short head, libwebsockets serves it right here. A
             * NULL answer then may also mean it was served and closed (a refusal). */
            ws->adopting = c;
            if (a->lws_head)
                (void)lws_adopt_socket_vhost_readbuf(ws->vh_adopt, a->fd, a->lws_head,
                                                     a->lws_head_len);
            else
                (void)lws_adopt_socket_vhost(ws->vh_adopt, a->fd); /* closes fd on failure */
            if (ws->adopting == c) /* no wsi came to life: the fd is closed */
                ws->host->log(ws->host, GS_LOG_WARN, GS_WS_COMPONENT,
                              "libwebsockets could not adopt the connection from %s: closed",
                              a->remote);
            ws->adopting = NULL;
            gs_ws_conn_release(c); /* the wsi keeps its own reference */
        }
        gs_ws_head_free(ws->host, &a->head);
        if (a->lws_head)
            ws->host->free(a->lws_head);
        ws->host->free(a);
    }
}

static void *service_main(void *arg)
{
    gs_ws *ws = arg;
    while (!atomic_load(&ws->exit_loop))
        if (lws_service(ws->ctx, 0) < 0)
            break;
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* adopt_upgrade                                                                              */

/**
 * The head libwebsockets gets for an adopted connection: what its handshake needs and no
 * more. The target is "/" (the transport uses the raw one from a->head); the offer is cut to
 * "sirannon.v1" when it holds it (the only name libwebsockets can select), and left out
 * otherwise (the core refuses such an offer before libwebsockets selects anything).
 */
static gs_status short_head(const gs_host *host, gs_ws_adopt *a)
{
    const gs_ws_head *h = &a->head;
    const char *hosthdr = gs_ws_head_get(h, "host");
    const char *key = gs_ws_head_get(h, "sec-websocket-key");
    const char *version = gs_ws_head_get(h, "sec-websocket-version");
    const char *upgrade = gs_ws_head_get(h, "upgrade");
    const char *connection = gs_ws_head_get(h, "connection");
    int has = 0;
    for (size_t i = 0; i < h->header_count; i++)
        if (!strcasecmp(h->headers[i].name, "sec-websocket-protocol") &&
            gs_ws_offer_has(h->headers[i].value, GS_WS_SUBPROTOCOL))
            has = 1;
    char text[1536];
    int n = snprintf(text, sizeof text, "GET / HTTP/1.1\r\n");
#define WS_LINE(name, value)                                                                       \
    if ((value) && n >= 0 && (size_t)n < sizeof text)                                              \
    n += snprintf(text + n, sizeof text - (size_t)n, "%s: %s\r\n", (name), (value))
    WS_LINE("Host", hosthdr);
    WS_LINE("Upgrade", upgrade && gs_ws_token_in(upgrade, "websocket") ? "websocket" : upgrade);
    WS_LINE("Connection",
            connection && gs_ws_token_in(connection, "upgrade") ? "Upgrade" : connection);
    WS_LINE("Sec-WebSocket-Key", key);
    WS_LINE("Sec-WebSocket-Version", version);
    WS_LINE("Sec-WebSocket-Protocol", has ? GS_WS_SUBPROTOCOL : NULL);
#undef WS_LINE
    if (n < 0 || (size_t)n + 3 > sizeof text)
        return GS_ERROR; /* unusually long values: libwebsockets reads the socket instead */
    n += snprintf(text + n, sizeof text - (size_t)n, "\r\n");
    a->lws_head = host->alloc((size_t)n + 1);
    if (!a->lws_head)
        return GS_ERROR;
    memcpy(a->lws_head, text, (size_t)n + 1);
    a->lws_head_len = (size_t)n;
    return GS_OK;
}

static void format_sockaddr(const struct sockaddr *sa, socklen_t len, char *out, size_t size)
{
    char ip[INET6_ADDRSTRLEN];
    snprintf(out, size, "-");
    if (!sa)
        return;
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)sa;
        if (inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip))
            snprintf(out, size, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
    } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)sa;
        if (inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip))
            snprintf(out, size, "[%s]:%u", ip, (unsigned)ntohs(a->sin6_port));
    }
}

static gs_status ws_adopt_upgrade(void *instance, int fd, const struct sockaddr *addr,
                                  socklen_t addrlen, gs_error *err)
{
    gs_ws *ws = instance;
    const gs_host *host = ws->host;
    gs_ws_adopt *a = host->alloc(sizeof *a);
    if (!a) {
        close(fd);
        return WS_FAIL(host, err, "INTERNAL_ERROR", "out of memory taking a WebSocket upgrade");
    }
    memset(a, 0, sizeof *a);
    a->fd = fd;
    format_sockaddr(addr, addrlen, a->remote, sizeof a->remote);

    /* The head is still unread: keep the target and headers exactly as sent, and give
     * libwebsockets a short version of it (see gs_ws_adopt). When it is not all there (a host
     * that hands over early), libwebsockets reads and parses the socket itself. */
    char *buf = host->alloc(GS_WS_PEEK_MAX);
    if (buf) {
        ssize_t n;
        size_t used = 0;
        do
            n = recv(fd, buf, GS_WS_PEEK_MAX, MSG_PEEK | MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        if (n > 0 && gs_ws_head_parse(host, buf, (size_t)n, &a->head, &used) == GS_OK &&
            short_head(host, a) == GS_OK) {
            /* Read the head off the socket: exactly its bytes, which are all there. */
            ssize_t r;
            do
                r = recv(fd, buf, used, MSG_DONTWAIT);
            while (r < 0 && errno == EINTR);
            if (r != (ssize_t)used) {
                if (err)
                    host->error_set(err, 0, "INTERNAL_ERROR",
                                    "cannot read the WebSocket upgrade request of %s", a->remote);
                host->free(buf);
                close(fd);
                gs_ws_head_free(host, &a->head);
                host->free(a->lws_head);
                host->free(a);
                return GS_ERROR;
            }
        }
        /* Parsed without a short head (unusually long values): the raw head still goes to
         * the core, and libwebsockets reads the request from the socket. */
        host->free(buf);
    }

    pthread_mutex_lock(&ws->qlock);
    int ok = ws->serving;
    if (ok) {
        if (ws->adopt_tail)
            ws->adopt_tail->next = a;
        else
            ws->adopt_head = a;
        ws->adopt_tail = a;
        wake_locked(ws);
    }
    pthread_mutex_unlock(&ws->qlock);
    if (ok)
        return GS_OK;
    close(fd);
    gs_ws_head_free(host, &a->head);
    if (a->lws_head)
        host->free(a->lws_head);
    host->free(a);
    return WS_FAIL(host, err, "SHUTDOWN", "the WebSocket transport is not serving");
}

/* ------------------------------------------------------------------------------------------ */
/* Lifecycle                                                                                  */

static void ws_destroy(void *instance);

static void free_custom_names(gs_ws *ws)
{
    for (size_t i = 0; i < ws->custom_count; i++)
        ws->host->free(ws->custom_names[i]);
    if (ws->custom_names)
        ws->host->free(ws->custom_names);
    ws->custom_names = NULL;
    ws->custom_count = 0;
}

static gs_status ws_create(const gs_host *host, const void *config, void **instance, gs_error *err)
{
    if (!instance)
        return GS_ERROR;
    *instance = NULL;
    if (!host || !GS_HAS_MEMBER(gs_host, ws_close, host->struct_size) || !host->alloc ||
        !host->free || !host->log || !host->server_settings || !host->error_set)
        return host && host->error_set
                   ? WS_FAIL(host, err, "INVALID_CONFIG",
                             "the ws transport needs a host with the ABI 1.1 WebSocket session "
                             "calls (ws_open, ws_message, ws_too_large, ws_close)")
                   : GS_ERROR;
    if (!host->ws_open || !host->ws_message || !host->ws_too_large || !host->ws_close)
        return WS_FAIL(host, err, "INVALID_CONFIG",
                       "the host has no WebSocket session layer (ws_open and friends are NULL)");
    const gs_server_settings *s = host->server_settings(host);
    if (!s || !GS_HAS_MEMBER(gs_server_settings, access_log, s->struct_size))
        return WS_FAIL(host, err, "INTERNAL_ERROR",
                       "the host gave the ws transport no server settings");
    if (s->max_body_bytes == 0 || s->max_body_bytes > (uint64_t)SIZE_MAX / 2)
        return WS_FAIL(host, err, "INVALID_MAX_BODY_BYTES",
                       "server.max_body_bytes %" PRIu64 " cannot be enforced by the ws transport",
                       s->max_body_bytes);
    if (s->max_ws_backpressure_bytes == 0 || s->max_ws_backpressure_bytes < s->max_body_bytes)
        return WS_FAIL(host, err, "INVALID_WS_BACKPRESSURE",
                       "server.max_ws_backpressure_bytes %" PRIu64
                       " must be at least max_body_bytes (%" PRIu64 ")",
                       s->max_ws_backpressure_bytes, s->max_body_bytes);

    gs_ws *ws = host->alloc(sizeof *ws);
    if (!ws)
        return WS_FAIL(host, err, "INTERNAL_ERROR", "out of memory creating the ws transport");
    memset(ws, 0, sizeof *ws);
    ws->host = host;
    ws->settings = s;
    ws->bound_port = -1;
    atomic_init(&ws->exit_loop, 0);
    if (config) {
        memcpy(&ws->cfg, config, sizeof ws->cfg);
    } else {
        ws->cfg.ping_interval_s = 30;
        ws->cfg.stop_timeout_ms = 3000;
        ws->cfg.max_header_bytes = 16384;
    }
    for (size_t i = 0; i < WS_KEY_COUNT; i++) {
        const gs_config_key *k = &ws_keys[i];
        if (k->type != GS_CFG_INT)
            continue;
        int64_t v;
        memcpy(&v, (const char *)&ws->cfg + k->offset, sizeof v);
        if (v < k->min || v > k->max) {
            host->free(ws);
            return WS_FAIL(host, err, "INVALID_CONFIG",
                           "ws transport: %s = %" PRId64 " is outside %" PRId64 "..%" PRId64,
                           k->name, v, k->min, k->max);
        }
    }
    if (pthread_mutex_init(&ws->qlock, NULL) != 0) {
        host->free(ws);
        return WS_FAIL(host, err, "INTERNAL_ERROR", "cannot create the ws transport's lock");
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int cond_ok = pthread_cond_init(&ws->qcond, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!cond_ok || pthread_mutex_init(&ws->loglock, NULL) != 0) {
        if (cond_ok)
            pthread_cond_destroy(&ws->qcond);
        pthread_mutex_destroy(&ws->qlock);
        host->free(ws);
        return WS_FAIL(host, err, "INTERNAL_ERROR", "cannot create the ws transport's lock");
    }

    /* Custom header names in libwebsockets' lookup form: lower case, ':' appended. */
    if (ws->cfg.headers.count) {
        ws->custom_names = host->alloc(ws->cfg.headers.count * sizeof *ws->custom_names);
        if (!ws->custom_names) {
            ws_destroy(ws);
            return WS_FAIL(host, err, "INTERNAL_ERROR", "out of memory creating the ws transport");
        }
        for (size_t i = 0; i < ws->cfg.headers.count; i++) {
            const char *h = ws->cfg.headers.items[i];
            size_t n = h ? strlen(h) : 0;
            int valid = n > 0 && n < 200;
            for (size_t j = 0; valid && j < n; j++)
                valid = h[j] > 32 && h[j] < 127 && h[j] != ':';
            if (!valid) {
                ws_destroy(ws);
                return WS_FAIL(host, err, "INVALID_CONFIG",
                               "ws transport: headers: '%s' is not a header name", h ? h : "");
            }
            char *c = host->alloc(n + 2);
            if (!c) {
                ws_destroy(ws);
                return WS_FAIL(host, err, "INTERNAL_ERROR",
                               "out of memory creating the ws transport");
            }
            for (size_t j = 0; j < n; j++)
                c[j] = (char)(h[j] >= 'A' && h[j] <= 'Z' ? h[j] - 'A' + 'a' : h[j]);
            c[n] = ':';
            c[n + 1] = '\0';
            ws->custom_names[ws->custom_count++] = c;
        }
    }
    *instance = ws;
    return GS_OK;
}

/** The own port's bind address as libwebsockets wants it (an IP literal, no brackets). */
static gs_status own_address(gs_ws *ws, char *lit, size_t size, gs_error *err)
{
    const char *text = ws->cfg.host && ws->cfg.host[0] ? ws->cfg.host : ws->settings->host;
    if (!text || !text[0])
        text = "127.0.0.1";
    size_t n = strlen(text);
    if (n >= 2 && text[0] == '[' && text[n - 1] == ']')
        snprintf(lit, size, "%.*s", (int)(n - 2), text + 1);
    else
        snprintf(lit, size, "%s", text);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_flags = AI_NUMERICHOST;
    if (getaddrinfo(lit, NULL, &hints, &res) != 0 || !res) {
        if (res)
            freeaddrinfo(res);
        return WS_FAIL(ws->host, err, "INVALID_CONFIG",
                       "ws transport: host '%s' is not an IPv4 or IPv6 address literal", text);
    }
    int v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    snprintf(ws->addr_text, sizeof ws->addr_text, v6 ? "[%s]:%d" : "%s:%d", lit,
             ws->cfg.port > 0 ? (int)ws->cfg.port : 0);
    return GS_OK;
}

/** Readable regular file? For a start() error that names the file. */
static int file_ok(const char *path, char *why, size_t size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, size, "%s", strerror(errno));
        if (why[0] >= 'A' && why[0] <= 'Z')
            why[0] = (char)(why[0] - 'A' + 'a');
        return 0;
    }
    fclose(f);
    return 1;
}

static void stop_service(gs_ws *ws)
{
    pthread_mutex_lock(&ws->qlock);
    ws->wakeable = 0; /* from here no thread touches ctx but this one */
    pthread_mutex_unlock(&ws->qlock);
    if (ws->thread_running) {
        atomic_store(&ws->exit_loop, 1);
        lws_cancel_service(ws->ctx);
        pthread_join(ws->thread, NULL);
        ws->thread_running = 0;
    }
    if (ws->ctx) {
        /* Remaining connections close here (their ws_close runs on this thread). */
        lws_context_destroy(ws->ctx);
        ws->ctx = NULL;
    }
    ws->vh_adopt = ws->vh_port = NULL;
    /* Upgrades queued after the thread's last drain: nobody will serve them. */
    pthread_mutex_lock(&ws->qlock);
    gs_ws_adopt *a = ws->adopt_head;
    ws->adopt_head = ws->adopt_tail = NULL;
    ws->dirty = NULL;
    pthread_mutex_unlock(&ws->qlock);
    while (a) {
        gs_ws_adopt *next = a->next;
        close(a->fd);
        gs_ws_head_free(ws->host, &a->head);
        if (a->lws_head)
            ws->host->free(a->lws_head);
        ws->host->free(a);
        a = next;
    }
}

static gs_status ws_start(void *instance, gs_error *err)
{
    gs_ws *ws = instance;
    const gs_host *host = ws->host;
    const gs_server_settings *s = ws->settings;
    if (ws->ctx)
        return WS_FAIL(host, err, "INTERNAL_ERROR", "the ws transport already runs");

    ws->max_message = s->max_body_bytes;
    ws->max_backlog = s->max_ws_backpressure_bytes;
    ws->access_log = s->access_log;

    /* Idle policy: a ping after ping_interval_s without a pong, hang up when nothing came
     * back for idle_timeout_s (libwebsockets' validity timer; a pong resets it). */
    int hangup = s->idle_timeout_s > 0 ? s->idle_timeout_s : 120;
    if (hangup > 65535)
        hangup = 65535;
    if (hangup < 2)
        hangup = 2;
    int ping = (int)ws->cfg.ping_interval_s;
    if (ping >= hangup)
        ping = hangup / 2;
    if (ping < 1)
        ping = 1;
    memset(&ws->retry, 0, sizeof ws->retry);
    ws->retry.secs_since_valid_ping = (uint16_t)ping;
    ws->retry.secs_since_valid_hangup = (uint16_t)hangup;

    /* protocols[0] ("") serves upgrades that offer no subprotocol (nothing is echoed) and
     * plain HTTP; "sirannon.v1" is the one subprotocol a client may select. */
    memset(ws->protocols, 0, sizeof ws->protocols);
    ws->protocols[0].name = "";
    ws->protocols[0].callback = gs_ws_callback;
    ws->protocols[0].rx_buffer_size = 65536;
    ws->protocols[1].name = GS_WS_SUBPROTOCOL;
    ws->protocols[1].callback = gs_ws_callback;
    ws->protocols[1].rx_buffer_size = 65536;

    const char *cert = ws->cfg.tls_cert_file && ws->cfg.tls_cert_file[0] ? ws->cfg.tls_cert_file
                                                                         : s->tls_cert_file;
    const char *key =
        ws->cfg.tls_key_file && ws->cfg.tls_key_file[0] ? ws->cfg.tls_key_file : s->tls_key_file;
    int own = ws->cfg.port != 0;
    char lit[64] = "";
    ws->addr_text[0] = '\0';
    ws->tls = own && cert && cert[0] && key && key[0];
    if (own) {
        if (own_address(ws, lit, sizeof lit, err) != GS_OK)
            return GS_ERROR;
        if ((cert && cert[0]) != (key && key[0]))
            return WS_FAIL(host, err, "INVALID_CONFIG",
                           "WSS on %s needs both a certificate and a private key", ws->addr_text);
        char why[128];
        if (ws->tls && !file_ok(cert, why, sizeof why))
            return WS_FAIL(host, err, "INVALID_CONFIG",
                           "cannot serve WSS on %s: cannot read the certificate '%s': %s",
                           ws->addr_text, cert, why);
        if (ws->tls && !file_ok(key, why, sizeof why))
            return WS_FAIL(host, err, "INVALID_CONFIG",
                           "cannot serve WSS on %s: cannot read the private key '%s': %s",
                           ws->addr_text, key, why);
    }

    log_attach(ws);
    pthread_mutex_lock(&ws->loglock);
    ws->capture_log = 1;
    ws->start_log[0] = '\0';
    pthread_mutex_unlock(&ws->loglock);

    struct lws_context_creation_info ci;
    memset(&ci, 0, sizeof ci);
    /* UTF-8 validation of text frames is read from the context's options, not the vhost's. */
    ci.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_VALIDATE_UTF8 |
                 (ws->tls ? LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT : 0);
    ci.port = CONTEXT_PORT_NO_LISTEN;
    ci.gid = -1;
    ci.uid = -1;
    ci.user = ws;
    ci.max_http_header_data2 = (unsigned int)ws->cfg.max_header_bytes;
    ci.max_http_header_pool2 = 256;
    ci.count_threads = 1;
    ci.timeout_secs = 10;
    ws->ctx = lws_create_context(&ci);

    const char *failed = NULL;
    if (!ws->ctx) {
        failed = "cannot create the libwebsockets context";
    } else {
        struct lws_context_creation_info vi;
        memset(&vi, 0, sizeof vi);
        vi.vhost_name = "gatestream-adopt";
        vi.port = CONTEXT_PORT_NO_LISTEN_SERVER;
        vi.protocols = ws->protocols;
        vi.retry_and_idle_policy = &ws->retry;
        vi.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
        ws->vh_adopt = lws_create_vhost(ws->ctx, &vi);
        if (!ws->vh_adopt)
            failed = "cannot create the libwebsockets vhost for handed-over upgrades";
        if (!failed && own) {
            vi.vhost_name = "gatestream-port";
            vi.port = ws->cfg.port > 0 ? (int)ws->cfg.port : 0;
            vi.iface = lit;
            vi.options = LWS_SERVER_OPTION_VALIDATE_UTF8 |
                         LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND |
                         (strchr(lit, ':') ? 0 : LWS_SERVER_OPTION_DISABLE_IPV6);
            if (ws->tls) {
                /* libwebsockets enables TLS on a vhost only with this option set on it too. */
                vi.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
                vi.ssl_cert_filepath = cert;
                vi.ssl_private_key_filepath = key;
                vi.alpn = "http/1.1";
            }
            ws->vh_port = lws_create_vhost(ws->ctx, &vi);
            if (!ws->vh_port)
                failed = "libwebsockets could not listen";
            else
                ws->bound_port = lws_get_vhost_listen_port(ws->vh_port);
        }
    }
    char lws_said[sizeof ws->start_log];
    pthread_mutex_lock(&ws->loglock);
    ws->capture_log = 0;
    snprintf(lws_said, sizeof lws_said, "%s", ws->start_log);
    pthread_mutex_unlock(&ws->loglock);

    if (!failed) {
        pthread_mutex_lock(&ws->qlock);
        ws->serving = 1;
        ws->wakeable = 1;
        ws->wake_pending = 0;
        ws->close_all = 0;
        ws->stopping = 0;
        pthread_mutex_unlock(&ws->qlock);
        atomic_store(&ws->exit_loop, 0);
        int e = pthread_create(&ws->thread, NULL, service_main, ws);
        if (e == 0)
            ws->thread_running = 1;
        else
            failed = "cannot start the WebSocket service thread";
    }
    if (failed) {
        pthread_mutex_lock(&ws->qlock);
        ws->serving = 0;
        pthread_mutex_unlock(&ws->qlock);
        stop_service(ws);
        ws->bound_port = -1;
        if (own)
            return WS_FAIL(host, err, "INTERNAL_ERROR", "cannot serve %s on %s: %s%s%s",
                           ws->tls ? "WSS" : "WebSocket", ws->addr_text, failed,
                           lws_said[0] ? ": " : "", lws_said);
        return WS_FAIL(host, err, "INTERNAL_ERROR", "cannot start the ws transport: %s%s%s", failed,
                       lws_said[0] ? ": " : "", lws_said);
    }
    if (own)
        host->log(host, GS_LOG_INFO, GS_WS_COMPONENT,
                  "serving %s on %s (bound port %d) and upgrades handed over; ping after %ds, "
                  "idle timeout %ds",
                  ws->tls ? "WSS" : "WebSocket", ws->addr_text, ws->bound_port, ping, hangup);
    else
        host->log(host, GS_LOG_INFO, GS_WS_COMPONENT,
                  "serving WebSocket upgrades handed over by the http transport; ping after "
                  "%ds, idle timeout %ds",
                  ping, hangup);
    return GS_OK;
}

static void ws_stop(void *instance)
{
    gs_ws *ws = instance;
    if (!ws || !ws->ctx)
        return;
    const gs_host *host = ws->host;

    /* 1. No new upgrades; every connection gets a 1013 close. */
    pthread_mutex_lock(&ws->qlock);
    ws->serving = 0;
    ws->stopping = 1;
    ws->close_all = 1;
    size_t live = ws->live;
    wake_locked(ws);
    pthread_mutex_unlock(&ws->qlock);
    host->log(host, GS_LOG_INFO, GS_WS_COMPONENT,
              "stopping: closing %zu connection%s with 1013, waiting up to %" PRId64 " ms", live,
              live == 1 ? "" : "s", ws->cfg.stop_timeout_ms);

    /* 2. Let the close handshakes finish, for at most stop_timeout_ms. */
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += (time_t)(ws->cfg.stop_timeout_ms / 1000);
    deadline.tv_nsec += (long)(ws->cfg.stop_timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&ws->qlock);
    while (ws->live > 0)
        if (pthread_cond_timedwait(&ws->qcond, &ws->qlock, &deadline) != 0)
            break;
    size_t left = ws->live;
    pthread_mutex_unlock(&ws->qlock);
    if (left)
        host->log(host, GS_LOG_WARN, GS_WS_COMPONENT,
                  "%zu connection%s did not finish closing in %" PRId64 " ms: cut off", left,
                  left == 1 ? "" : "s", ws->cfg.stop_timeout_ms);

    /* 3. End the service thread and the context; what is left closes now. */
    stop_service(ws);
    ws->bound_port = -1;
    log_detach(ws);
    host->log(host, GS_LOG_INFO, GS_WS_COMPONENT, "stopped");
}

static void ws_destroy(void *instance)
{
    gs_ws *ws = instance;
    if (!ws)
        return;
    ws_stop(ws);
    log_detach(ws);
    free_custom_names(ws);
    pthread_mutex_destroy(&ws->loglock);
    pthread_cond_destroy(&ws->qcond);
    pthread_mutex_destroy(&ws->qlock);
    ws->host->free(ws);
}

static int ws_bound_port(void *instance)
{
    gs_ws *ws = instance;
    return ws && ws->ctx && ws->vh_port ? ws->bound_port : -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Descriptor                                                                                 */

static const gs_client_transport_vtable ws_vtable = {
    .struct_size = sizeof(gs_client_transport_vtable),
    .create = ws_create,
    .start = ws_start,
    .stop = ws_stop,
    .destroy = ws_destroy,
    .bound_port = ws_bound_port,
    .adopt_upgrade = ws_adopt_upgrade,
};

static const gs_plugin_descriptor ws_descriptor = {
    .struct_size = sizeof(gs_plugin_descriptor),
    .abi_major = GS_ABI_MAJOR,
    .abi_minor = GS_ABI_MINOR,
    .kind = GS_KIND_CLIENT_TRANSPORT,
    .name = "ws",
    .version = "0.1.0",
    .build_signature = GS_BUILD_SIGNATURE,
    .vtable = &ws_vtable,
    .config_keys = ws_keys,
    .config_key_count = WS_KEY_COUNT,
    .config_key_size = sizeof(gs_config_key),
    .config_struct_size = sizeof(gs_ws_config),
    .description = "WebSocket client transport over libwebsockets (upgrades handed over by the "
                   "http transport on the server port, or a port of its own, WSS included)",
};

GS_PLUGIN_DEFINE(ws_descriptor)
