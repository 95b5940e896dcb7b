/*
 * One WebSocket connection through libwebsockets, from the upgrade to the last callback.
 *
 * The life of a gs_ws_conn:
 *   1. Created when the service thread adopts a handed-over socket (ws.c; attached to the new
 *      wsi in LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED, before its request is read) or, on
 *      our own port, at the upgrade filter. It is the wsi's opaque user data; the wsi holds
 *      one reference until LWS_CALLBACK_WSI_DESTROY.
 *   2. LWS_CALLBACK_HTTP_CONFIRM_UPGRADE (the request head is parsed, nothing answered yet):
 *      the transport checks the request (path /db/{id}, key, version), then asks the core
 *      (host->ws_open). GS_OK: returning 0 lets libwebsockets answer 101; its protocol list
 *      is built so that it selects exactly what the core chose ("sirannon.v1" when offered,
 *      nothing when nothing was offered). A refusal is answered here with the core's HTTP
 *      status and JSON body, or (close_code set) the handshake completes and the connection
 *      closes at once with that code and reason.
 *   3. LWS_CALLBACK_RECEIVE: fragments are reassembled up to server.max_body_bytes; a longer
 *      message is dropped as it arrives and reported (host->ws_too_large); every complete
 *      message goes to host->ws_message.
 *   4. The core's frames (sink->send, any thread) are copied into the connection's queue
 *      under its lock and written from LWS_CALLBACK_SERVER_WRITEABLE, large frames in
 *      fragments. The queue, plus what libwebsockets still buffers, is bounded by
 *      server.max_ws_backpressure_bytes: a send past it answers GS_AGAIN and the connection
 *      closes with 4290. sink->close closes after the queued frames; 4290, 1013 (stop) and
 *      refusals close at once.
 *   5. LWS_CALLBACK_CLOSED / WSI_DESTROY: host->ws_close exactly once, the access log line,
 *      and the wsi's reference is dropped; the memory goes when the last sink call returns.
 *
 * Threads: everything here runs on the service thread except sink_send and sink_close.
 */
#include "ws_internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define WS_CHUNK 65536         /* largest fragment written at once */
#define WS_WRITE_BUDGET 262144 /* bytes written per writeable callback, for fairness */
#define WS_RX_KEEP 65536       /* reassembly buffer kept between messages */

/* ------------------------------------------------------------------------------------------ */
/* Life and death                                                                             */

static gs_status sink_send(void *user, const char *data, size_t len);
static void sink_close(void *user, int code, const char *reason);

static void free_frames(const gs_host *host, gs_ws_frame *f)
{
    while (f) {
        gs_ws_frame *next = f->next;
        host->free(f);
        f = next;
    }
}

static void conn_unref(gs_ws_conn *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    const gs_host *host = c->ws->host;
    free_frames(host, c->q_head);
    gs_ws_head_free(host, &c->head);
    if (c->rx)
        host->free(c->rx);
    pthread_mutex_destroy(&c->lock);
    host->free(c);
}

gs_ws_conn *gs_ws_conn_new(gs_ws *ws, gs_ws_adopt *a)
{
    const gs_host *host = ws->host;
    gs_ws_conn *c = host->alloc(sizeof *c);
    if (!c)
        return NULL;
    memset(c, 0, sizeof *c);
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        host->free(c);
        return NULL;
    }
    c->ws = ws;
    atomic_init(&c->refs, 1);
    c->sink.struct_size = sizeof c->sink;
    c->sink.user = c;
    c->sink.send = sink_send;
    c->sink.close = sink_close;
    snprintf(c->remote, sizeof c->remote, "-");
    snprintf(c->path, sizeof c->path, "-");
    if (a) {
        c->adopted = 1;
        c->offer_checked = a->lws_head != NULL;
        c->head = a->head;
        memset(&a->head, 0, sizeof a->head);
        snprintf(c->remote, sizeof c->remote, "%s", a->remote);
    }
    return c;
}

void gs_ws_conn_release(gs_ws_conn *c)
{
    conn_unref(c);
}

void gs_ws_conn_attach(gs_ws_conn *c, struct lws *wsi)
{
    gs_ws *ws = c->ws;
    atomic_fetch_add(&c->refs, 1);
    c->wsi = wsi;
    lws_set_opaque_user_data(wsi, c);
    c->prev = NULL;
    c->next = ws->conns;
    if (ws->conns)
        ws->conns->prev = c;
    ws->conns = c;
    pthread_mutex_lock(&ws->qlock);
    ws->live++;
    pthread_mutex_unlock(&ws->qlock);
}

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                              */

/** Copy a close reason, cut at GS_WS_REASON_MAX bytes on a UTF-8 character boundary. */
static void copy_reason(char *out, const char *in)
{
    size_t n = in ? strlen(in) : 0;
    if (n > GS_WS_REASON_MAX) {
        n = GS_WS_REASON_MAX;
        while (n > 0 && ((unsigned char)in[n] & 0xC0) == 0x80)
            n--;
    }
    if (n)
        memcpy(out, in, n);
    out[n] = '\0';
}

/** A code we may put in a close frame (RFC 6455 7.4); anything else becomes 1011. */
static int sendable_code(int code)
{
    if ((code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
        (code >= 3000 && code <= 4999))
        return code;
    return 1011;
}

/** Printable copy for the log: control bytes, quotes and backslashes become '?'. */
static void log_safe(char *out, size_t size, const char *in)
{
    size_t i = 0;
    for (; in && in[i] && i + 4 < size; i++) {
        unsigned char ch = (unsigned char)in[i];
        out[i] = (ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\') ? '?' : (char)ch;
    }
    out[i] = '\0';
    if (in && in[i])
        snprintf(out + i, size - i, "...");
}

/** Append s to a JSON string body (escaped). */
static size_t json_escape(char *out, size_t size, const char *s)
{
    size_t o = 0;
    for (; s && *s && o + 7 < size; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20) {
            o += (size_t)snprintf(out + o, size - o, "\\u%04x", ch);
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o] = '\0';
    return o;
}

static void error_body(char *out, size_t size, const char *code, const char *message)
{
    char c[96], m[600];
    json_escape(c, sizeof c, code);
    json_escape(m, sizeof m, message);
    snprintf(out, size, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\",\"details\":{}}}", c, m);
}

static void fill_remote(gs_ws_conn *c, struct lws *wsi)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char ip[INET6_ADDRSTRLEN];
    int fd = lws_get_socket_fd(wsi);
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)&ss;
        if (inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip))
            snprintf(c->remote, sizeof c->remote, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)&ss;
        if (inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip))
            snprintf(c->remote, sizeof c->remote, "[%s]:%u", ip, (unsigned)ntohs(a->sin6_port));
    }
}

static int offer_empty(const char *offer)
{
    for (const char *p = offer; p && *p; p++)
        if (*p != ' ' && *p != '\t' && *p != ',')
            return 0;
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* The upgrade                                                                                */

static const char *status_text(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 413: return "Content Too Large";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return status < 500 ? "Client Error" : "Server Error";
    }
}

/**
 * Answer an HTTP request (a refused upgrade, or plain HTTP on our port) with a JSON body.
 * Written whole, as HTTP/1.1: libwebsockets' header helpers would say HTTP/1.0 here, since
 * an upgrade request never reaches the code that records the request's version. `closing`
 * adds Connection: close (libwebsockets closes a refused upgrade once the answer is out).
 * Returns 1 (answered) or -1 (hang up), what the CONFIRM_UPGRADE callback returns.
 */
static int http_answer(gs_ws *ws, struct lws *wsi, int status, const char *body,
                       const char *extra_name, const char *extra_value, int closing)
{
    size_t blen = strlen(body);
    size_t cap = LWS_PRE + 512 + blen;
    unsigned char *b = ws->host->alloc(cap);
    if (!b)
        return -1;
    char *start = (char *)b + LWS_PRE;
    int n = snprintf(start, cap - LWS_PRE,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n%s%s%s%s%s\r\n",
                     status, status_text(status), blen, extra_name ? extra_name : "",
                     extra_name ? ": " : "", extra_name ? extra_value : "",
                     extra_name ? "\r\n" : "", closing ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n + blen >= cap - LWS_PRE) {
        ws->host->free(b);
        return -1;
    }
    memcpy(start + n, body, blen);
    int w = lws_write(wsi, (unsigned char *)start, (size_t)n + blen, LWS_WRITE_HTTP_HEADERS);
    ws->host->free(b);
    return w < 0 ? -1 : 1;
}

/** Refuse an upgrade with an HTTP status and a JSON error body; logs the attempt. */
static int refuse_http(gs_ws_conn *c, struct lws *wsi, int status, const char *body,
                       const char *why, const char *extra_name, const char *extra_value)
{
    gs_ws *ws = c->ws;
    if (ws->access_log)
        ws->host->log(ws->host, GS_LOG_INFO, GS_WS_COMPONENT, "WS %s %d %s (refused: %s)", c->path,
                      status, c->remote, why);
    return http_answer(ws, wsi, status, body, extra_name, extra_value, 1);
}

static int refuse_local(gs_ws_conn *c, struct lws *wsi, int status, const char *code,
                        const char *message, const char *extra_name, const char *extra_value)
{
    char body[768];
    error_body(body, sizeof body, code, message);
    return refuse_http(c, wsi, status, body, code, extra_name, extra_value);
}

/** The HTTP status that says what a close code says, when the handshake cannot complete. */
static int status_for_close(int code)
{
    switch (code) {
    case 4401: return 401;
    case 4403: return 403;
    case 1008: return 404;
    case 1013: return 503;
    default: return 400;
    }
}

/** Complete the handshake, then close at once with code/reason (no session). */
static int refuse_after_handshake(gs_ws_conn *c, int code, const char *reason)
{
    c->refuse_code = sendable_code(code);
    copy_reason(c->refuse_reason, reason);
    c->subprotocol = NULL;
    return 0;
}

static int on_confirm_upgrade(gs_ws *ws, struct lws *wsi, const char *up)
{
    const gs_host *host = ws->host;
    gs_ws_conn *c = lws_get_opaque_user_data(wsi);
    if (!c) {
        /* Our own port: the connection becomes ours here. */
        c = gs_ws_conn_new(ws, NULL);
        if (!c)
            return -1;
        fill_remote(c, wsi);
        gs_ws_conn_attach(c, wsi);
        conn_unref(c); /* the wsi's reference remains */
    }
    if (!c->head.text && gs_ws_head_from_lws(ws, wsi, &c->head) != GS_OK)
        return refuse_local(c, wsi, 500, "INTERNAL_ERROR",
                            "the server ran out of memory reading the upgrade request", NULL, NULL);
    const char *path = c->head.target;
    log_safe(c->path, sizeof c->path, path);

    if (!up || strcasecmp(up, "websocket") != 0)
        return refuse_local(c, wsi, 400, "INVALID_REQUEST",
                            "only WebSocket upgrades are served here", NULL, NULL);
    if (!gs_ws_path_ok(path))
        return refuse_local(c, wsi, 404, "NOT_FOUND",
                            "WebSocket connections are served at /db/{id}", NULL, NULL);
    const char *key = gs_ws_head_get(&c->head, "sec-websocket-key");
    const char *version = gs_ws_head_get(&c->head, "sec-websocket-version");
    const char *hosthdr = gs_ws_head_get(&c->head, "host");
    const char *offer = gs_ws_head_get(&c->head, "sec-websocket-protocol");
    const char *connection = gs_ws_head_get(&c->head, "connection");
    if (!key || !key[0] || strlen(key) >= 100 || !hosthdr || !hosthdr[0] || !connection ||
        !gs_ws_token_in(connection, "upgrade"))
        return refuse_local(c, wsi, 400, "INVALID_REQUEST",
                            "a WebSocket upgrade needs Host, Connection: Upgrade and a "
                            "Sec-WebSocket-Key",
                            NULL, NULL);
    if (!version || strcmp(version, "13") != 0)
        return refuse_local(c, wsi, 426, "INVALID_REQUEST",
                            "only WebSocket version 13 is supported", "Sec-WebSocket-Version",
                            "13");
    /* What libwebsockets will select: the first offered name it knows ("sirannon.v1"), or
     * none when nothing is offered; an offer without it cannot complete a handshake. The
     * offer may come in several header lines: libwebsockets joins them. */
    int none = 1, has = 0;
    size_t offer_len = 0;
    for (size_t i = 0; i < c->head.header_count; i++) {
        const gs_header *hd = &c->head.headers[i];
        if (strcasecmp(hd->name, "sec-websocket-protocol") != 0)
            continue;
        offer_len += (offer_len ? 1 : 0) + strlen(hd->value);
        none = none && offer_empty(hd->value);
        has = has || gs_ws_offer_has(hd->value, GS_WS_SUBPROTOCOL);
    }
    if (!c->offer_checked && offer_len > 126)
        return refuse_local(c, wsi, 400, "INVALID_REQUEST",
                            "the Sec-WebSocket-Protocol offer is longer than 126 bytes, the most "
                            "this port takes (the server port takes longer ones)",
                            NULL, NULL);

    if (gs_ws_stopping(ws)) {
        if (none || has)
            return refuse_after_handshake(c, 1013, "SHUTDOWN: the server is shutting down");
        return refuse_local(c, wsi, 503, "SHUTDOWN", "the server is shutting down", NULL, NULL);
    }

    gs_ws_open_request req;
    memset(&req, 0, sizeof req);
    req.struct_size = sizeof req;
    req.path = path;
    req.headers = c->head.headers;
    req.header_count = c->head.header_count;
    req.remote_address = c->remote;
    req.sink = &c->sink;
    gs_ws_open_result res;
    memset(&res, 0, sizeof res);
    res.struct_size = sizeof res;
    gs_error err;
    memset(&err, 0, sizeof err);
    err.struct_size = sizeof err;
    gs_status st = host->ws_open(host, &req, &res, &err);

    if (st == GS_OK) {
        c->session = res.session;
        const char *sel = res.subprotocol;
        int consistent = sel ? (!strcmp(sel, GS_WS_SUBPROTOCOL) && has) : none;
        if (!consistent) {
            /* The core chose what libwebsockets cannot echo: refuse rather than lie. */
            host->log(host, GS_LOG_ERROR, GS_WS_COMPONENT,
                      "the core selected subprotocol '%s' for an offer of '%s'; this transport "
                      "can select only %s when offered, or none when nothing is offered",
                      sel ? sel : "(none)", offer ? offer : "", GS_WS_SUBPROTOCOL);
            c->close_reported = 1;
            host->ws_close(host, c->session);
            c->session = NULL;
            return refuse_local(c, wsi, 500, "INTERNAL_ERROR",
                                "the server could not agree on a subprotocol", NULL, NULL);
        }
        c->subprotocol = sel ? GS_WS_SUBPROTOCOL : NULL;
        return 0; /* libwebsockets answers 101 and selects the same subprotocol */
    }

    /* Refused. */
    char reason[GS_WS_REASON_MAX + 1];
    if (res.reason[0])
        copy_reason(reason, res.reason);
    else {
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s: %s", err.code[0] ? err.code : "REFUSED",
                 err.message[0] ? err.message : "the upgrade was refused");
        copy_reason(reason, tmp);
    }
    if (res.close_code && (none || has))
        return refuse_after_handshake(c, res.close_code, reason);
    int status = res.close_code    ? status_for_close(res.close_code)
                 : res.http_status ? res.http_status
                 : err.status      ? err.status
                                   : 400;
    if (status < 400 || status > 599)
        status = 400;
    char body[sizeof res.body];
    if (res.body[0] && !res.close_code)
        snprintf(body, sizeof body, "%s", res.body);
    else
        error_body(body, sizeof body, err.code[0] ? err.code : "INVALID_REQUEST",
                   err.message[0] ? err.message : reason);
    return refuse_http(c, wsi, status, body, err.code[0] ? err.code : "refused", NULL, NULL);
}

static int on_established(gs_ws_conn *c, struct lws *wsi)
{
    gs_ws *ws = c->ws;
    c->established = 1;
    c->opened_ms = gs_ws_now_ms();
    if (ws->access_log) {
        if (c->refuse_code)
            ws->host->log(ws->host, GS_LOG_INFO, GS_WS_COMPONENT,
                          "WS %s 101 %s (refused: closing with %d)", c->path, c->remote,
                          c->refuse_code);
        else
            ws->host->log(ws->host, GS_LOG_INFO, GS_WS_COMPONENT, "WS %s 101 %s %s", c->path,
                          c->remote, c->subprotocol ? c->subprotocol : "(no subprotocol)");
    }
    /* stop() began between the upgrade and now: this one missed its 1013. */
    int stopping = !c->refuse_code && gs_ws_stopping(ws);
    pthread_mutex_lock(&c->lock);
    if (c->refuse_code) {
        c->closing = 1;
        c->close_now = 1;
        c->close_code = c->refuse_code;
        snprintf(c->close_reason, sizeof c->close_reason, "%s", c->refuse_reason);
    } else if (stopping && !c->close_now) {
        c->closing = 1;
        c->close_now = 1;
        c->close_code = 1013;
        snprintf(c->close_reason, sizeof c->close_reason, "SHUTDOWN: the server is shutting down");
    }
    int pending = c->q_head || c->closing;
    pthread_mutex_unlock(&c->lock);
    if (pending)
        lws_callback_on_writable(wsi);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Inbound                                                                                    */

static int on_receive(gs_ws_conn *c, struct lws *wsi, const void *in, size_t len)
{
    gs_ws *ws = c->ws;
    const gs_host *host = ws->host;
    if (!c->session)
        return 0; /* refused and closing: nothing reaches the core */
    if (!c->rx_discard) {
        if ((uint64_t)c->rx_len + len > ws->max_message) {
            /* Too large: drop what we have and the rest as it comes. */
            c->rx_discard = 1;
            c->rx_len = 0;
            if (c->rx_cap > WS_RX_KEEP) {
                host->free(c->rx);
                c->rx = NULL;
                c->rx_cap = 0;
            }
        } else if (len) {
            if (c->rx_len + len > c->rx_cap) {
                size_t cap = c->rx_cap ? c->rx_cap * 2 : 4096;
                while (cap < c->rx_len + len)
                    cap *= 2;
                if ((uint64_t)cap > ws->max_message)
                    cap = (size_t)ws->max_message;
                unsigned char *nb = host->realloc(c->rx, cap);
                if (!nb) {
                    pthread_mutex_lock(&c->lock);
                    if (!c->closing) {
                        c->closing = 1;
                        c->close_now = 1;
                        c->close_code = 1011;
                        snprintf(c->close_reason, sizeof c->close_reason,
                                 "INTERNAL_ERROR: out of memory reading a message");
                    }
                    pthread_mutex_unlock(&c->lock);
                    lws_callback_on_writable(wsi);
                    return 0;
                }
                c->rx = nb;
                c->rx_cap = cap;
            }
            memcpy(c->rx + c->rx_len, in, len);
            c->rx_len += len;
        }
    }
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi) != 0)
        return 0; /* more of this message to come */

    pthread_mutex_lock(&c->lock);
    int closing = c->closing;
    pthread_mutex_unlock(&c->lock);
    if (!closing) {
        if (c->rx_discard)
            host->ws_too_large(host, c->session);
        else
            host->ws_message(host, c->session, c->rx ? (const char *)c->rx : "", c->rx_len);
    }
    c->rx_len = 0;
    c->rx_discard = 0;
    if (c->rx_cap > WS_RX_KEEP) {
        host->free(c->rx);
        c->rx = NULL;
        c->rx_cap = 0;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Outbound                                                                                   */

static int send_close(gs_ws_conn *c, struct lws *wsi, int code, const char *reason)
{
    c->sent_code = code;
    lws_close_reason(wsi, (enum lws_close_status)code, (unsigned char *)reason, strlen(reason));
    return -1; /* libwebsockets sends the close frame and waits for the client's */
}

static int on_writeable(gs_ws_conn *c, struct lws *wsi)
{
    const gs_host *host = c->ws->host;
    size_t budget = WS_WRITE_BUDGET;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        if (c->inflight) { /* a writeable callback: what lws buffered is out */
            c->queued -= c->inflight;
            c->inflight = 0;
        }
        if (c->close_now) {
            gs_ws_frame *drop = c->q_head;
            c->q_head = c->q_tail = NULL;
            c->queued = 0;
            int code = c->close_code;
            char reason[GS_WS_REASON_MAX + 1];
            snprintf(reason, sizeof reason, "%s", c->close_reason);
            pthread_mutex_unlock(&c->lock);
            free_frames(host, drop);
            return send_close(c, wsi, code, reason);
        }
        gs_ws_frame *f = c->q_head;
        if (!f) {
            int code = c->closing ? c->close_code : 0;
            char reason[GS_WS_REASON_MAX + 1];
            snprintf(reason, sizeof reason, "%s", c->close_reason);
            pthread_mutex_unlock(&c->lock);
            return code ? send_close(c, wsi, code, reason) : 0;
        }
        pthread_mutex_unlock(&c->lock);
        if (budget == 0) {
            lws_callback_on_writable(wsi);
            return 0;
        }
        /* Only this thread takes frames off the queue, so f stays valid unlocked. */
        size_t chunk = f->len - f->off;
        if (chunk > WS_CHUNK)
            chunk = WS_CHUNK;
        int first = f->off == 0, last = f->off + chunk == f->len;
        int proto = first ? LWS_WRITE_TEXT : LWS_WRITE_CONTINUATION;
        if (!last)
            proto |= LWS_WRITE_NO_FIN;
        /* The LWS_PRE bytes before a later fragment are payload already sent: lws may
         * write its frame header there. */
        if (lws_write(wsi, f->data + LWS_PRE + f->off, chunk, (enum lws_write_protocol)proto) < 0)
            return -1;
        int buffered = lws_partial_buffered(wsi);
        gs_ws_frame *done = NULL;
        pthread_mutex_lock(&c->lock);
        f->off += chunk;
        if (buffered)
            c->inflight += chunk;
        else
            c->queued -= chunk;
        if (f->off == f->len) {
            c->q_head = f->next;
            if (!c->q_head)
                c->q_tail = NULL;
            done = f;
        }
        pthread_mutex_unlock(&c->lock);
        if (done)
            host->free(done);
        budget = budget > chunk ? budget - chunk : 0;
        if (buffered) {
            lws_callback_on_writable(wsi); /* called back once lws wrote its buffer out */
            return 0;
        }
    }
}

static gs_status sink_send(void *user, const char *data, size_t len)
{
    gs_ws_conn *c = user;
    gs_ws *ws = c->ws;
    const gs_host *host = ws->host;
    atomic_fetch_add(&c->refs, 1);
    gs_ws_frame *f = NULL;
    if ((uint64_t)len <= ws->max_backlog) {
        f = host->alloc(sizeof *f + LWS_PRE + len);
        if (f) {
            f->next = NULL;
            f->len = len;
            f->off = 0;
            if (len)
                memcpy(f->data + LWS_PRE, data, len);
        }
    }
    gs_status st;
    uint64_t queued = 0;
    pthread_mutex_lock(&c->lock);
    if (c->closing || c->gone) {
        st = GS_ERROR;
    } else if ((uint64_t)len > ws->max_backlog || c->queued + len > ws->max_backlog) {
        /* Past the bound: close rather than drop, so the client knows it lost frames. */
        queued = c->queued;
        c->closing = 1;
        c->close_now = 1;
        c->close_code = 4290;
        snprintf(c->close_reason, sizeof c->close_reason,
                 "OVERLOADED: the client reads too slowly (outbound buffer over %llu bytes)",
                 (unsigned long long)ws->max_backlog);
        gs_ws_mark_dirty_locked(ws, c);
        st = GS_AGAIN;
    } else if (!f) {
        c->closing = 1;
        c->close_now = 1;
        c->close_code = 1011;
        snprintf(c->close_reason, sizeof c->close_reason,
                 "INTERNAL_ERROR: out of memory queueing a message");
        gs_ws_mark_dirty_locked(ws, c);
        st = GS_ERROR;
    } else {
        if (c->q_tail)
            c->q_tail->next = f;
        else
            c->q_head = f;
        c->q_tail = f;
        c->queued += len;
        f = NULL;
        gs_ws_mark_dirty_locked(ws, c);
        st = GS_OK;
    }
    pthread_mutex_unlock(&c->lock);
    if (f)
        host->free(f);
    if (st == GS_AGAIN)
        host->log(host, GS_LOG_WARN, GS_WS_COMPONENT,
                  "closing a WebSocket from %s with 4290: %llu bytes waiting, a %zu-byte frame "
                  "would pass max_ws_backpressure_bytes (%llu)",
                  c->remote, (unsigned long long)queued, len, (unsigned long long)ws->max_backlog);
    conn_unref(c);
    return st;
}

static void sink_close(void *user, int code, const char *reason)
{
    gs_ws_conn *c = user;
    atomic_fetch_add(&c->refs, 1);
    pthread_mutex_lock(&c->lock);
    if (!c->closing && !c->gone) {
        c->closing = 1;
        c->close_code = sendable_code(code);
        copy_reason(c->close_reason, reason);
        gs_ws_mark_dirty_locked(c->ws, c);
    }
    pthread_mutex_unlock(&c->lock);
    conn_unref(c);
}

void gs_ws_conn_close_all(gs_ws *ws)
{
    for (gs_ws_conn *c = ws->conns; c; c = c->next) {
        if (!c->established)
            continue; /* still in its HTTP phase: its upgrade is answered with 1013 */
        pthread_mutex_lock(&c->lock);
        if (!c->close_now && !c->gone) {
            c->closing = 1;
            c->close_now = 1;
            c->close_code = 1013;
            snprintf(c->close_reason, sizeof c->close_reason,
                     "SHUTDOWN: the server is shutting down");
        }
        pthread_mutex_unlock(&c->lock);
        lws_callback_on_writable(c->wsi);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The end                                                                                    */

/** The connection is gone: no more sends, host->ws_close once, the access-log line. */
static void report_close(gs_ws_conn *c)
{
    gs_ws *ws = c->ws;
    const gs_host *host = ws->host;
    pthread_mutex_lock(&c->lock);
    c->closing = 1;
    c->gone = 1;
    gs_ws_frame *drop = c->q_head;
    c->q_head = c->q_tail = NULL;
    c->queued = c->inflight = 0;
    pthread_mutex_unlock(&c->lock);
    free_frames(host, drop);
    if (c->session && !c->close_reported) {
        c->close_reported = 1;
        host->ws_close(host, c->session);
        c->session = NULL;
    }
    if (c->established && ws->access_log) {
        c->established = 0; /* log once */
        double secs = (double)(gs_ws_now_ms() - c->opened_ms) / 1000.0;
        if (c->sent_code)
            host->log(host, GS_LOG_INFO, GS_WS_COMPONENT, "WS %s closed %d %s %.1fs (by server)",
                      c->path, c->sent_code, c->remote, secs);
        else if (c->peer_code)
            host->log(host, GS_LOG_INFO, GS_WS_COMPONENT, "WS %s closed %d %s %.1fs (by client)",
                      c->path, c->peer_code, c->remote, secs);
        else
            host->log(host, GS_LOG_INFO, GS_WS_COMPONENT,
                      "WS %s closed 1006 %s %.1fs (connection lost)", c->path, c->remote, secs);
    }
}

static void on_destroy(gs_ws_conn *c, struct lws *wsi)
{
    gs_ws *ws = c->ws;
    report_close(c);
    lws_set_opaque_user_data(wsi, NULL);
    c->wsi = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else if (ws->conns == c)
        ws->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    gs_ws_forget(ws, c);
    conn_unref(c); /* the wsi's reference; a sink call in progress keeps it a moment longer */
}

/* ------------------------------------------------------------------------------------------ */
/* The callback                                                                               */

int gs_ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    (void)user;
    struct lws_context *ctx = lws_get_context(wsi);
    gs_ws *ws = ctx ? lws_context_user(ctx) : NULL;
    if (!ws)
        return 0;
    gs_ws_conn *c;
    switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED: gs_ws_drain(ws); return 0;
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        /* An adoption in progress (ws.c): attach before the request is read. (Not at
         * LWS_CALLBACK_WSI_CREATE: libwebsockets resets the opaque pointer after it.) */
        if (ws->adopting && !lws_get_opaque_user_data(wsi)) {
            gs_ws_conn_attach(ws->adopting, wsi);
            ws->adopting = NULL;
        }
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: return on_confirm_upgrade(ws, wsi, in);
    case LWS_CALLBACK_ESTABLISHED: {
        /* pushed frames are small and latency-bound: no Nagle delay */
        int one = 1;
        (void)setsockopt(lws_get_socket_fd(wsi), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c = lws_get_opaque_user_data(wsi);
        return c ? on_established(c, wsi) : -1;
    }
    case LWS_CALLBACK_RECEIVE:
        c = lws_get_opaque_user_data(wsi);
        return c ? on_receive(c, wsi, in, len) : -1;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        c = lws_get_opaque_user_data(wsi);
        return c ? on_writeable(c, wsi) : -1;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        c = lws_get_opaque_user_data(wsi);
        if (c) {
            const unsigned char *p = in;
            c->peer_code = len >= 2 && p ? (p[0] << 8) | p[1] : 1005;
        }
        return 0; /* libwebsockets answers the close */
    case LWS_CALLBACK_CLOSED:
        c = lws_get_opaque_user_data(wsi);
        if (c)
            report_close(c);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        c = lws_get_opaque_user_data(wsi);
        if (c)
            on_destroy(c, wsi);
        return 0;
    case LWS_CALLBACK_HTTP: {
        /* A plain HTTP request on our own port (or a handed-over connection that did not
         * upgrade): this transport serves only upgrades. */
        char body[256];
        error_body(body, sizeof body, "NOT_FOUND",
                   "this port serves WebSocket upgrades at /db/{id} only");
        if (http_answer(ws, wsi, 404, body, NULL, NULL, 0) < 0)
            return -1;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    default: return 0;
    }
}
