/*
 * One HTTP request through libmicrohttpd: from the request line to the access-log line.
 *
 * The life of a request context (gs_http_req):
 *   1. gs_http_uri_log (MHD thread) creates it when the request line is parsed, keeps the raw
 *      URI (path and query as received, percent-encoding intact) and links it into the
 *      instance's live list. MHD hands it back as *req_cls in every later callback.
 *   2. gs_http_access (MHD thread) is called first with the headers, then with each piece
 *      of the body, then once more when the body is complete. It buffers the body up to
 *      server.max_body_bytes, and submits the request to the core: at the end of the body,
 *      or as soon as the body is known to be too large (body_too_large = 1, nothing kept).
 *   3. The core answers through req_complete, exactly once, on any thread, maybe inside
 *      api_submit. The answer is turned into an MHD response right there; if the connection
 *      is suspended waiting for it, it is resumed.
 *   4. MHD calls the handler again (after the resume, or at the end of the body) and the
 *      stored response is queued. The handler suspends the connection only when it has to
 *      queue an answer that has not arrived yet.
 *   5. gs_http_completed (MHD thread) runs when the response was written or the connection
 *      died: access log, unlink, drop the connection's reference.
 *
 * Shared state (state, response, status) is guarded by req->lock. The states:
 *   WAITING    no answer yet, connection running (receiving, or between submit and suspend)
 *   SUSPENDED  no answer yet, connection suspended: whoever stores the answer resumes it
 *   READY      an answer is stored and not queued yet
 *   SENT       the answer was handed to MHD
 *   GONE       the connection finished; a late complete() only drops its reference
 * MHD_suspend_connection and MHD_resume_connection are both called with req->lock held, so
 * a resume can never precede its suspend, and stop() can never see a connection suspended
 * that somebody else is about to resume.
 */
#include "http_internal.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum req_state { REQ_WAITING, REQ_SUSPENDED, REQ_READY, REQ_SENT, REQ_GONE };

struct gs_http_req {
    /* Shared with complete() and stop(): guarded by lock. */
    pthread_mutex_t lock;
    int state;                     /**< enum req_state */
    struct MHD_Response *response; /**< READY: the answer to queue */
    unsigned int status;           /**< READY: its HTTP status */

    /* Immutable after creation; complete() reads only these and the fields above. */
    atomic_int refs;             /**< the connection's + the core's, while it holds one */
    struct MHD_Connection *conn; /**< valid until gs_http_completed */
    const gs_host *host;         /**< for free: outlives every instance */

    /* MHD-thread only (the connection's thread, or stop() once the daemon is gone). */
    gs_http *http;
    gs_http_req *prev, *next; /**< live list, guarded by http->lock */
    char *uri;                /**< raw request target; '?' replaced by NUL */
    const char *path;         /**< into uri */
    const char *query;        /**< into uri, or NULL */
    char method[16];          /**< for the access log (the request uses MHD's string) */
    char remote[64];          /**< "127.0.0.1:53122" / "[::1]:53122" */
    uint8_t *body;
    size_t body_len, body_cap;
    uint64_t dropped;         /**< body bytes read and dropped after the answer was known */
    int headers_seen;         /**< the first handler call happened */
    int submitted;            /**< handed to the core, or answered locally */
    int too_large;            /**< the body went past max_body_bytes */
    int close_after;          /**< answer with Connection: close */
    unsigned int sent_status; /**< status queued, 0 if none */
    struct timespec started;
};

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                              */

static void req_release(gs_http_req *r)
{
    if (atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    const gs_host *host = r->host;
    if (r->response)
        MHD_destroy_response(r->response);
    if (r->body)
        host->free(r->body);
    if (r->uri)
        host->free(r->uri);
    pthread_mutex_destroy(&r->lock);
    host->free(r);
}

/** A JSON error body in the spec's shape (07-errors). `message` must need no escaping. */
static struct MHD_Response *local_response(const char *code, const char *message)
{
    char buf[512];
    int n =
        snprintf(buf, sizeof buf, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\",\"details\":{}}}",
                 code, message);
    if (n < 0 || (size_t)n >= sizeof buf)
        return NULL;
    struct MHD_Response *m = MHD_create_response_from_buffer((size_t)n, buf, MHD_RESPMEM_MUST_COPY);
    if (m)
        MHD_add_response_header(m, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return m;
}

/** Store a transport-made answer (the core is not asked). MHD thread, before any submit. */
static void req_answer_locally(gs_http_req *r, unsigned int status, const char *code,
                               const char *message)
{
    struct MHD_Response *m = local_response(code, message);
    pthread_mutex_lock(&r->lock);
    if (r->state == REQ_WAITING) {
        r->response = m;
        r->status = status;
        r->state = REQ_READY;
        m = NULL;
    }
    pthread_mutex_unlock(&r->lock);
    if (m)
        MHD_destroy_response(m);
    r->submitted = 1;
    r->close_after = 1;
}

static void format_remote(struct MHD_Connection *c, char *out, size_t size)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char ip[INET6_ADDRSTRLEN];
    snprintf(out, size, "-");
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
        if (inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip))
            snprintf(out, size, "%s:%u", ip, (unsigned)ntohs(s4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip))
            snprintf(out, size, "[%s]:%u", ip, (unsigned)ntohs(s6->sin6_port));
    }
}

/** Content-Length of a non-chunked request: 1 and *out when present and valid, else 0. */
static int request_content_length(struct MHD_Connection *c, uint64_t *out)
{
    const char *te =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    if (te && strcasestr(te, "chunked"))
        return 0;
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl || !*cl)
        return 0;
    /* MHD already refused a malformed Content-Length with 400; parse defensively anyway. */
    char *end = NULL;
    unsigned long long v = strtoull(cl, &end, 10);
    if (!end || *end != '\0' || cl[0] == '-')
        return 0;
    *out = (uint64_t)v;
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* The core's answer                                                                          */

/** Turn the core's answer into an MHD response (copies everything). Any thread. */
static struct MHD_Response *build_response(const gs_response *resp, unsigned int *status)
{
    if (!resp || !GS_HAS_MEMBER(gs_response, body_len, resp->struct_size)) {
        *status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        return local_response("INTERNAL_ERROR", "the server produced no valid response");
    }
    *status = resp->status >= 100 && resp->status <= 999 ? (unsigned int)resp->status
                                                         : MHD_HTTP_INTERNAL_SERVER_ERROR;
    size_t len = resp->body ? resp->body_len : 0;
    struct MHD_Response *m =
        MHD_create_response_from_buffer(len, (void *)resp->body, MHD_RESPMEM_MUST_COPY);
    if (!m) {
        *status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        return local_response("INTERNAL_ERROR", "out of memory while sending the response");
    }
    if (resp->content_type && resp->content_type[0])
        MHD_add_response_header(m, MHD_HTTP_HEADER_CONTENT_TYPE, resp->content_type);
    for (size_t i = 0; resp->headers && i < resp->header_count; i++) {
        const gs_header *hd = &resp->headers[i];
        /* MHD computes the framing headers itself. */
        if (!hd->name || !hd->value || !strcasecmp(hd->name, MHD_HTTP_HEADER_CONTENT_LENGTH) ||
            !strcasecmp(hd->name, MHD_HTTP_HEADER_TRANSFER_ENCODING))
            continue;
        MHD_add_response_header(m, hd->name, hd->value);
    }
    return m;
}

/** gs_request.complete: exactly once per submit, on any thread, never blocks for long. */
static void req_complete(void *user, const gs_response *resp)
{
    gs_http_req *r = user;
    unsigned int status = 0;
    /* Built before taking the lock: the copy may be large, and MHD responses are
     * self-contained objects that any thread may create. */
    struct MHD_Response *m = build_response(resp, &status);

    pthread_mutex_lock(&r->lock);
    if (r->state == REQ_WAITING || r->state == REQ_SUSPENDED) {
        int was_suspended = r->state == REQ_SUSPENDED;
        r->response = m;
        r->status = status;
        r->state = REQ_READY;
        m = NULL;
        /* A suspended connection cannot be closed by MHD, so r->conn is valid here. */
        if (was_suspended)
            MHD_resume_connection(r->conn);
    }
    pthread_mutex_unlock(&r->lock);
    if (m) /* the connection is gone, or stop() answered it already */
        MHD_destroy_response(m);
    req_release(r);
}

/* ------------------------------------------------------------------------------------------ */
/* Submit, queue, suspend                                                                     */

typedef struct header_fill {
    gs_header *items;
    size_t count, cap;
} header_fill;

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    header_fill *f = cls;
    (void)kind;
    if (key && f->count < f->cap) {
        f->items[f->count].name = key;
        f->items[f->count].value = value ? value : "";
        f->count++;
    }
    return MHD_YES;
}

/** Hand the request to the core. MHD thread. The body is released once api_submit returns. */
static void req_submit(gs_http_req *r, const char *method)
{
    gs_http *h = r->http;
    const gs_host *host = h->host;
    header_fill f = {0};

    r->submitted = 1;
    int n = MHD_get_connection_values(r->conn, MHD_HEADER_KIND, NULL, NULL);
    if (n > 0) {
        f.items = host->alloc((size_t)n * sizeof *f.items);
        if (!f.items) {
            host->log(host, GS_LOG_ERROR, GS_HTTP_COMPONENT,
                      "out of memory for the headers of %s %s from %s", r->method, r->path,
                      r->remote);
            r->submitted = 0;
            req_answer_locally(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "INTERNAL_ERROR",
                               "the server ran out of memory");
            return;
        }
        f.cap = (size_t)n;
        MHD_get_connection_values(r->conn, MHD_HEADER_KIND, collect_header, &f);
    }

    gs_request q;
    memset(&q, 0, sizeof q);
    q.struct_size = sizeof q;
    q.method = method;
    q.path = r->path;
    q.query = r->query;
    q.headers = f.items;
    q.header_count = f.count;
    q.remote_address = r->remote;
    q.body = r->too_large ? NULL : r->body;
    q.body_len = r->too_large ? 0 : r->body_len;
    q.body_too_large = r->too_large;
    q.complete = req_complete;
    q.user = r;

    atomic_fetch_add(&r->refs, 1);    /* the core's reference, dropped in req_complete */
    (void)host->api_submit(host, &q); /* any return: complete() runs exactly once */

    if (f.items)
        host->free(f.items);
    if (r->body)
        host->free(r->body);
    r->body = NULL;
    r->body_len = r->body_cap = 0;
}

/** Queue an answer. Consumes m. MHD thread, in a state where MHD accepts a response. */
static enum MHD_Result req_queue(gs_http_req *r, unsigned int status, struct MHD_Response *m)
{
    if (!m)
        return MHD_NO; /* out of memory: MHD closes the connection */
    if (r->close_after || atomic_load(&r->http->stopping))
        MHD_add_response_header(m, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(r->conn, status, m);
    MHD_destroy_response(m);
    if (ret == MHD_YES)
        r->sent_status = status;
    return ret;
}

/**
 * The request is submitted (or answered locally) and MHD may take a response now: queue the
 * answer if there is one, otherwise suspend until complete() resumes the connection.
 */
static enum MHD_Result req_dispatch(gs_http_req *r)
{
    pthread_mutex_lock(&r->lock);
    if (r->state == REQ_READY) {
        struct MHD_Response *m = r->response;
        unsigned int status = r->status;
        r->response = NULL;
        r->state = REQ_SENT;
        pthread_mutex_unlock(&r->lock);
        return req_queue(r, status, m);
    }
    if (r->state == REQ_WAITING) {
        if (atomic_load(&r->http->closing)) {
            /* stop() gave up waiting: no new suspension, the core's answer is dropped. */
            r->state = REQ_SENT;
            pthread_mutex_unlock(&r->lock);
            r->close_after = 1;
            return req_queue(r, MHD_HTTP_SERVICE_UNAVAILABLE,
                             local_response("SHUTDOWN", "the server is shutting down"));
        }
        r->state = REQ_SUSPENDED;
        MHD_suspend_connection(r->conn); /* under the lock: see the file comment */
    }
    pthread_mutex_unlock(&r->lock);
    return MHD_YES;
}

/* ------------------------------------------------------------------------------------------ */
/* MHD callbacks                                                                              */

size_t gs_http_unescape_keep(void *cls, struct MHD_Connection *connection, char *s)
{
    /* The core decodes /db/{id}/... segments itself: an id may contain %2F. */
    (void)cls;
    (void)connection;
    return strlen(s);
}

void *gs_http_uri_log(void *cls, const char *uri, struct MHD_Connection *connection)
{
    gs_http *h = cls;
    const gs_host *host = h->host;
    gs_http_req *r = host->alloc(sizeof *r);
    if (!r)
        return NULL;
    memset(r, 0, sizeof *r);
    if (pthread_mutex_init(&r->lock, NULL) != 0) {
        host->free(r);
        return NULL;
    }
    size_t n = uri ? strlen(uri) : 0;
    r->uri = host->alloc(n + 1);
    if (!r->uri) {
        pthread_mutex_destroy(&r->lock);
        host->free(r);
        return NULL;
    }
    if (n)
        memcpy(r->uri, uri, n);
    r->uri[n] = '\0';
    char *q = strchr(r->uri, '?');
    if (q) {
        *q = '\0';
        if (q[1])
            r->query = q + 1;
    }
    r->path = r->uri;
    atomic_init(&r->refs, 1);
    r->state = REQ_WAITING;
    r->conn = connection;
    r->host = host;
    r->http = h;
    snprintf(r->method, sizeof r->method, "-");
    clock_gettime(CLOCK_MONOTONIC, &r->started);
    format_remote(connection, r->remote, sizeof r->remote);

    pthread_mutex_lock(&h->lock);
    r->next = h->live;
    if (h->live)
        h->live->prev = r;
    h->live = r;
    h->live_count++;
    pthread_mutex_unlock(&h->lock);
    return r;
}

/** Grow the body buffer to hold `need` bytes (need <= max). 0 ok, -1 out of memory. */
static int body_reserve(gs_http_req *r, uint64_t need, uint64_t max)
{
    if (need <= r->body_cap)
        return 0;
    uint64_t cap = r->body_cap ? (uint64_t)r->body_cap * 2 : 16384;
    if (cap < need)
        cap = need;
    if (cap > max)
        cap = max;
    uint8_t *nb = r->http->host->realloc(r->body, (size_t)cap);
    if (!nb)
        return -1;
    r->body = nb;
    r->body_cap = (size_t)cap;
    return 0;
}

enum MHD_Result gs_http_access(void *cls, struct MHD_Connection *connection, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **req_cls)
{
    gs_http *h = cls;
    gs_http_req *r = *req_cls;
    const uint64_t max = h->max_body_bytes;
    (void)url; /* unescaped by our identity callback: the same text as r->path */
    (void)version;

    if (!r) {
        /* gs_http_uri_log could not allocate: answer 500 on the first call and close. */
        struct MHD_Response *m = local_response("INTERNAL_ERROR", "the server ran out of memory");
        if (!m)
            return MHD_NO;
        MHD_add_response_header(m, MHD_HTTP_HEADER_CONNECTION, "close");
        enum MHD_Result ret = MHD_queue_response(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, m);
        MHD_destroy_response(m);
        return ret;
    }

    if (!r->headers_seen) {
        /* First call: headers are in, no body byte was passed yet. */
        uint64_t cl = 0;
        int has_cl = request_content_length(connection, &cl);
        r->headers_seen = 1;
        snprintf(r->method, sizeof r->method, "%s", method);
        if (atomic_load(&h->closing)) {
            req_answer_locally(r, MHD_HTTP_SERVICE_UNAVAILABLE, "SHUTDOWN",
                               "the server is shutting down");
            return req_dispatch(r);
        }
        if (has_cl && cl > max) {
            /* Known too large before a byte of it is read: answer now. MHD then refuses
             * the upload and closes the connection after the response. */
            r->too_large = 1;
            r->close_after = 1;
            req_submit(r, method);
            return req_dispatch(r);
        }
        if (has_cl && cl > 0 && body_reserve(r, cl, max) != 0) {
            req_answer_locally(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "INTERNAL_ERROR",
                               "the server ran out of memory");
            return req_dispatch(r);
        }
        return MHD_YES;
    }

    if (*upload_data_size != 0) {
        /* A piece of the body. MHD cannot take a response until the body ends, so an
         * early answer waits in the context and the rest of the body is dropped. */
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->submitted) {
            r->dropped += n;
            if (r->dropped > (uint64_t)h->cfg.oversize_drain_bytes)
                return MHD_NO; /* close without an answer: the client keeps sending */
            return MHD_YES;
        }
        if ((uint64_t)n > max - r->body_len) {
            r->too_large = 1;
            r->close_after = 1;
            if (r->body)
                h->host->free(r->body);
            r->body = NULL;
            r->body_len = r->body_cap = 0;
            r->dropped = n;
            req_submit(r, method);
            return MHD_YES;
        }
        if (body_reserve(r, (uint64_t)r->body_len + n, max) != 0) {
            if (r->body)
                h->host->free(r->body);
            r->body = NULL;
            r->body_len = r->body_cap = 0;
            r->dropped = n;
            req_answer_locally(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "INTERNAL_ERROR",
                               "the server ran out of memory");
            return MHD_YES;
        }
        memcpy(r->body + r->body_len, upload_data, n);
        r->body_len += n;
        return MHD_YES;
    }

    /* The request is complete (or the connection was just resumed): answer it. */
    if (!r->submitted)
        req_submit(r, method);
    return req_dispatch(r);
}

static const char *termination_text(enum MHD_RequestTerminationCode toe)
{
    switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK: return "answered by libmicrohttpd";
    case MHD_REQUEST_TERMINATED_WITH_ERROR: return "connection error";
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED: return "timed out";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN: return "server stopped";
    case MHD_REQUEST_TERMINATED_READ_ERROR: return "read error";
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT: return "client closed the connection";
    }
    return "closed";
}

/** Printable copy of a path for the log: control bytes, quotes and backslashes become '?'. */
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

static void access_log(gs_http *h, gs_http_req *r, enum MHD_RequestTerminationCode toe)
{
    if (!h->access_log)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double ms = (double)(now.tv_sec - r->started.tv_sec) * 1e3 +
                (double)(now.tv_nsec - r->started.tv_nsec) / 1e6;
    char path[320];
    char method[sizeof r->method];
    log_safe(path, sizeof path, r->path);
    log_safe(method, sizeof method, r->method);
    /* Never the query, the body, or a header: they may carry SQL, parameters or tokens. */
    if (r->sent_status && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        h->host->log(h->host, GS_LOG_INFO, GS_HTTP_COMPONENT, "%s %s %u %.1fms %s", method, path,
                     r->sent_status, ms, r->remote);
    else if (r->sent_status)
        h->host->log(h->host, GS_LOG_INFO, GS_HTTP_COMPONENT, "%s %s %u %.1fms %s (%s)", method,
                     path, r->sent_status, ms, r->remote, termination_text(toe));
    else
        h->host->log(h->host, GS_LOG_INFO, GS_HTTP_COMPONENT, "%s %s - %.1fms %s (%s)", method,
                     path, ms, r->remote, termination_text(toe));
}

void gs_http_completed(void *cls, struct MHD_Connection *connection, void **req_cls,
                       enum MHD_RequestTerminationCode toe)
{
    gs_http *h = cls;
    gs_http_req *r = *req_cls;
    (void)connection;
    *req_cls = NULL;
    if (!r)
        return;

    struct MHD_Response *unsent = NULL;
    pthread_mutex_lock(&r->lock);
    if (r->state != REQ_SENT) {
        unsent = r->response;
        r->response = NULL;
    }
    r->state = REQ_GONE;
    pthread_mutex_unlock(&r->lock);
    if (unsent)
        MHD_destroy_response(unsent);

    access_log(h, r, toe);

    pthread_mutex_lock(&h->lock);
    if (r->prev)
        r->prev->next = r->next;
    else
        h->live = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    if (--h->live_count == 0)
        pthread_cond_broadcast(&h->quiet);
    pthread_mutex_unlock(&h->lock);

    req_release(r); /* the connection's reference; the core may still hold its own */
}

size_t gs_http_finish_suspended(gs_http *h)
{
    size_t n = 0;
    pthread_mutex_lock(&h->lock);
    for (gs_http_req *r = h->live; r; r = r->next) {
        pthread_mutex_lock(&r->lock);
        if (r->state == REQ_SUSPENDED) {
            r->response = local_response("SHUTDOWN", "the server is shutting down");
            r->status = MHD_HTTP_SERVICE_UNAVAILABLE;
            r->state = REQ_READY;
            MHD_resume_connection(r->conn);
            n++;
        }
        pthread_mutex_unlock(&r->lock);
    }
    pthread_mutex_unlock(&h->lock);
    return n;
}
