/* The WebSocket connection: socket + optional TLS, the upgrade, the I/O thread, request
 * correlation and deadlines. See cl_ws.h for the contract. */
#include "cl_ws_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CL_WS_MAX_MESSAGE (256u << 20)
#define CL_WS_MAX_HEAD 16384

static __thread cl_ws *io_thread_ws;

int cl_ws_on_io_thread(cl_ws *ws)
{
    return io_thread_ws == ws;
}

/* ---------------------------------------------------------------------------------------
 * Pending requests: an open-addressing map by counter, and a min-heap of deadlines.
 * ------------------------------------------------------------------------------------- */

static size_t slot_of(uint64_t key, size_t cap)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key & (cap - 1);
}

static int pmap_grow(cl_ws *ws)
{
    size_t cap = ws->pcap ? ws->pcap * 2 : 256;
    cl_pending *slots = gs_calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < ws->pcap; i++) {
        if (!ws->pending[i].key)
            continue;
        size_t s = slot_of(ws->pending[i].key, cap);
        while (slots[s].key)
            s = (s + 1) & (cap - 1);
        slots[s] = ws->pending[i];
    }
    gs_free(ws->pending);
    ws->pending = slots;
    ws->pcap = cap;
    return 0;
}

static int pmap_put(cl_ws *ws, uint64_t key, cl_call *call)
{
    if ((ws->pcount + 1) * 2 > ws->pcap && pmap_grow(ws) != 0)
        return -1;
    size_t s = slot_of(key, ws->pcap);
    while (ws->pending[s].key)
        s = (s + 1) & (ws->pcap - 1);
    ws->pending[s].key = key;
    ws->pending[s].call = call;
    ws->pcount++;
    return 0;
}

static cl_call *pmap_take(cl_ws *ws, uint64_t key)
{
    if (!ws->pcap || !key)
        return NULL;
    size_t mask = ws->pcap - 1;
    size_t s = slot_of(key, ws->pcap);
    while (ws->pending[s].key && ws->pending[s].key != key)
        s = (s + 1) & mask;
    if (!ws->pending[s].key)
        return NULL;
    cl_call *call = ws->pending[s].call;
    ws->pending[s].key = 0;
    ws->pending[s].call = NULL;
    ws->pcount--;
    /* Backward-shift deletion keeps every probe chain unbroken. */
    size_t hole = s;
    for (size_t j = (s + 1) & mask; ws->pending[j].key; j = (j + 1) & mask) {
        size_t home = slot_of(ws->pending[j].key, ws->pcap);
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            ws->pending[hole] = ws->pending[j];
            ws->pending[j].key = 0;
            ws->pending[j].call = NULL;
            hole = j;
        }
    }
    return call;
}

static int heap_push(cl_ws *ws, int64_t deadline, uint64_t key)
{
    if (ws->nheap == ws->capheap) {
        size_t cap = ws->capheap ? ws->capheap * 2 : 256;
        cl_tmo *h = gs_realloc(ws->heap, cap * sizeof *h);
        if (!h)
            return -1;
        ws->heap = h;
        ws->capheap = cap;
    }
    size_t i = ws->nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (ws->heap[p].deadline <= deadline)
            break;
        ws->heap[i] = ws->heap[p];
        i = p;
    }
    ws->heap[i].deadline = deadline;
    ws->heap[i].key = key;
    return 0;
}

static cl_tmo heap_pop(cl_ws *ws)
{
    cl_tmo top = ws->heap[0];
    cl_tmo last = ws->heap[--ws->nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= ws->nheap)
            break;
        size_t m = l + 1 < ws->nheap && ws->heap[l + 1].deadline < ws->heap[l].deadline ? l + 1 : l;
        if (ws->heap[m].deadline >= last.deadline)
            break;
        ws->heap[i] = ws->heap[m];
        i = m;
    }
    if (ws->nheap)
        ws->heap[i] = last;
    return top;
}

/* Every pending call, removed (mu held). */
static cl_call **steal_pending(cl_ws *ws, size_t *n)
{
    *n = 0;
    cl_call **calls = ws->pcount ? gs_malloc(ws->pcount * sizeof *calls) : NULL;
    for (size_t i = 0; i < ws->pcap; i++) {
        if (!ws->pending[i].key)
            continue;
        if (calls)
            calls[(*n)++] = ws->pending[i].call;
        ws->pending[i].key = 0;
        ws->pending[i].call = NULL;
    }
    ws->pcount = 0;
    ws->nheap = 0;
    return calls;
}

static void fail_calls(cl_call **calls, size_t n, const gs_error *why)
{
    for (size_t i = 0; i < n; i++)
        cl_call_finish(calls[i], GS_ERROR, NULL, why);
    gs_free(calls);
}

/* ---------------------------------------------------------------------------------------
 * Socket and TLS
 * ------------------------------------------------------------------------------------- */

static void close_socket(cl_ws *ws)
{
    if (ws->tls) {
        gnutls_deinit(ws->tls);
        ws->tls = NULL;
    }
    if (ws->fd >= 0) {
        close(ws->fd);
        ws->fd = -1;
    }
    ws->tls_pending = 0;
    gs_buf_reset(&ws->wbuf);
    ws->wpos = 0;
    gs_buf_reset(&ws->rbuf);
    gs_buf_reset(&ws->msg);
    ws->in_msg = 0;
}

/* >0 bytes, 0 EOF, -1 would block, -2 error. */
static ssize_t io_read(cl_ws *ws, void *buf, size_t n)
{
    if (ws->tls) {
        ssize_t r = gnutls_record_recv(ws->tls, buf, n);
        if (r >= 0)
            return r;
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
            return -1;
        if (r == GNUTLS_E_PREMATURE_TERMINATION)
            return 0;
        return -2;
    }
    ssize_t r = recv(ws->fd, buf, n, 0);
    if (r >= 0)
        return r;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : -2;
}

static ssize_t io_write(cl_ws *ws, const void *buf, size_t n)
{
    if (ws->tls) {
        size_t len = ws->tls_pending ? ws->tls_pending : n;
        ssize_t r = gnutls_record_send(ws->tls, buf, len);
        if (r >= 0) {
            ws->tls_pending = 0;
            return r;
        }
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
            ws->tls_pending = len;
            return -1;
        }
        return -2;
    }
    ssize_t r = send(ws->fd, buf, n, MSG_NOSIGNAL);
    if (r >= 0)
        return r;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : -2;
}

static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - cl_mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, (int)(left > 1000 ? 1000 : left));
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

static int tcp_connect(cl_ws *ws, int64_t deadline, gs_error *err)
{
    char port[16];
    snprintf(port, sizeof port, "%d", ws->ep->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(ws->ep->host, port, &hints, &res);
    if (rc != 0)
        return gs_error_set(err, 0, "CONNECTION_ERROR", "cannot resolve %s: %s", ws->ep->host,
                            gai_strerror(rc));
    int last_errno = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd =
            socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
            last_errno = errno;
            close(fd);
            continue;
        }
        int w = wait_fd(fd, POLLOUT, deadline);
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (w == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0) {
            freeaddrinfo(res);
            ws->fd = fd;
            return GS_OK;
        }
        last_errno = w == 0 ? ETIMEDOUT : soerr ? soerr : errno;
        close(fd);
    }
    freeaddrinfo(res);
    return gs_error_set(err, 0, "CONNECTION_ERROR", "cannot connect to %s: %s", ws->ep->base,
                        strerror(last_errno ? last_errno : ECONNREFUSED));
}

static int tls_start(cl_ws *ws, int64_t deadline, gs_error *err)
{
    gs_client *c = ws->c;
    if (!ws->cred) {
        if (gnutls_certificate_allocate_credentials(&ws->cred) != 0)
            return gs_error_set(err, 0, "INTERNAL_ERROR", "gnutls credentials: out of memory");
        int r = c->ca_file ? gnutls_certificate_set_x509_trust_file(ws->cred, c->ca_file,
                                                                    GNUTLS_X509_FMT_PEM)
                           : gnutls_certificate_set_x509_system_trust(ws->cred);
        if (r < 0 && !c->cfg.tls_insecure)
            return gs_error_set(err, 0, "CONNECTION_ERROR", "cannot load the CA %s: %s",
                                c->ca_file ? c->ca_file : "system trust store", gnutls_strerror(r));
    }
    if (gnutls_init(&ws->tls, GNUTLS_CLIENT | GNUTLS_NONBLOCK) != 0)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "gnutls_init failed");
    gnutls_set_default_priority(ws->tls);
    gnutls_credentials_set(ws->tls, GNUTLS_CRD_CERTIFICATE, ws->cred);
    if (!strchr(ws->ep->host, ':'))
        gnutls_server_name_set(ws->tls, GNUTLS_NAME_DNS, ws->ep->host, strlen(ws->ep->host));
    if (!c->cfg.tls_insecure)
        gnutls_session_set_verify_cert(ws->tls, ws->ep->host, 0);
    gnutls_transport_set_int(ws->tls, ws->fd);
    for (;;) {
        int r = gnutls_handshake(ws->tls);
        if (r == 0)
            return GS_OK;
        if (r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED)
            return gs_error_set(err, 0, "CONNECTION_ERROR", "TLS handshake with %s failed: %s",
                                ws->ep->base, gnutls_strerror(r));
        short ev = gnutls_record_get_direction(ws->tls) ? POLLOUT : POLLIN;
        if (wait_fd(ws->fd, ev, deadline) != 1)
            return gs_error_set(err, 0, "CONNECTION_ERROR", "TLS handshake with %s timed out",
                                ws->ep->base);
    }
}

static int write_all(cl_ws *ws, const char *p, size_t n, int64_t deadline, gs_error *err)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = io_write(ws, p + off, n - off);
        if (w > 0) {
            off += (size_t)w;
        } else if (w == -1) {
            if (wait_fd(ws->fd, ws->tls && !gnutls_record_get_direction(ws->tls) ? POLLIN : POLLOUT,
                        deadline) != 1)
                return gs_error_set(err, 0, "CONNECTION_ERROR",
                                    "timed out sending the upgrade to %s", ws->ep->base);
        } else {
            return gs_error_set(err, 0, "CONNECTION_ERROR", "sending to %s failed", ws->ep->base);
        }
    }
    return GS_OK;
}

/* The value of header `name` in a response head (case-insensitive), copied into out. */
static int head_value(const char *head, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);
    for (const char *l = strstr(head, "\r\n"); l && l[2]; l = strstr(l + 2, "\r\n")) {
        const char *s = l + 2;
        if (strncasecmp(s, name, nl) == 0 && s[nl] == ':') {
            const char *v = s + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t len = e ? (size_t)(e - v) : strlen(v);
            while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
                len--;
            if (len >= size)
                len = size - 1;
            memcpy(out, v, len);
            out[len] = '\0';
            return 1;
        }
    }
    return 0;
}

/* A refused upgrade: read the body (bounded) and report the server's error. */
static int upgrade_refused(cl_ws *ws, int status, const char *head, size_t head_len,
                           int64_t deadline, gs_error *err)
{
    char cl[32];
    size_t want = head_value(head, "Content-Length", cl, sizeof cl) ? strtoul(cl, NULL, 10) : 0;
    if (want > 65536)
        want = 65536;
    while (ws->rbuf.len - head_len < want && cl_mono_ms() < deadline) {
        char buf[4096];
        ssize_t r = io_read(ws, buf, sizeof buf);
        if (r > 0) {
            gs_buf_append(&ws->rbuf, buf, (size_t)r);
        } else if (r == -1) {
            if (wait_fd(ws->fd, POLLIN, deadline) != 1)
                break;
        } else {
            break;
        }
    }
    json_t *j = NULL;
    if (ws->rbuf.len > head_len)
        j = json_loadb(ws->rbuf.data + head_len, ws->rbuf.len - head_len, 0, NULL);
    int done = j && cl_error_from_envelope(json_object_get(j, "error"), status, err) == 0;
    json_decref(j);
    if (!done)
        gs_error_set(err, status, "CONNECTION_ERROR",
                     "the WebSocket upgrade at %s%s was refused with HTTP %d", ws->ep->ws_base,
                     ws->path + strlen(ws->ep->prefix), status);
    return GS_ERROR;
}

static int do_upgrade(cl_ws *ws, int64_t deadline, gs_error *err)
{
    gs_client *c = ws->c;
    char key[25], accept[29];
    if (cl_ws_make_key(key) != 0 || cl_ws_accept_for(key, accept) != 0)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "cannot make a WebSocket key");
    gs_buf req;
    gs_buf_init(&req);
    int v6 = strchr(ws->ep->host, ':') != NULL;
    gs_buf_printf(&req,
                  "GET %s HTTP/1.1\r\nHost: %s%s%s:%d\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
                  ws->path, v6 ? "[" : "", ws->ep->host, v6 ? "]" : "", ws->ep->port, key);
    if (c->nprotocols) {
        gs_buf_puts(&req, "Sec-WebSocket-Protocol: ");
        for (size_t i = 0; i < c->nprotocols; i++)
            gs_buf_printf(&req, "%s%s", i ? ", " : "", c->protocols[i]);
        gs_buf_puts(&req, "\r\n");
    }
    for (size_t i = 0; i < c->nheaders; i++)
        gs_buf_printf(&req, "%s\r\n", c->headers[i]);
    gs_buf_puts(&req, "\r\n");
    if (req.oom) {
        gs_buf_free(&req);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    int st = write_all(ws, req.data, req.len, deadline, err);
    gs_buf_free(&req);
    if (st != GS_OK)
        return st;
    /* Read the response head. */
    size_t head_len = 0;
    while (!head_len) {
        char buf[4096];
        ssize_t r = io_read(ws, buf, sizeof buf);
        if (r > 0) {
            gs_buf_append(&ws->rbuf, buf, (size_t)r);
            if (ws->rbuf.oom)
                return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
            char *end = memmem(ws->rbuf.data, ws->rbuf.len, "\r\n\r\n", 4);
            if (end)
                head_len = (size_t)(end - ws->rbuf.data) + 4;
            else if (ws->rbuf.len > CL_WS_MAX_HEAD)
                return gs_error_set(err, 0, "INVALID_RESPONSE",
                                    "the upgrade response head from %s is too long", ws->ep->base);
        } else if (r == -1) {
            if (wait_fd(ws->fd, POLLIN, deadline) != 1)
                return gs_error_set(err, 0, "CONNECTION_ERROR",
                                    "no WebSocket upgrade response from %s in time", ws->ep->base);
        } else {
            return gs_error_set(err, 0, "CONNECTION_ERROR",
                                "%s closed the connection during the WebSocket upgrade",
                                ws->ep->base);
        }
    }
    char *head = gs_strndup(ws->rbuf.data, head_len);
    if (!head)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    int status = 0;
    if (sscanf(head, "HTTP/1.%*d %d", &status) != 1) {
        gs_free(head);
        return gs_error_set(err, 0, "INVALID_RESPONSE",
                            "%s answered the upgrade with something that is not HTTP",
                            ws->ep->base);
    }
    if (status != 101) {
        upgrade_refused(ws, status, head, head_len, deadline, err);
        gs_free(head);
        return GS_ERROR;
    }
    char got[128], proto[128];
    int ok = head_value(head, "Sec-WebSocket-Accept", got, sizeof got) && !strcmp(got, accept);
    int has_proto = head_value(head, "Sec-WebSocket-Protocol", proto, sizeof proto);
    gs_free(head);
    if (!ok)
        return gs_error_set(err, 0, "INVALID_RESPONSE",
                            "%s answered the upgrade with a wrong Sec-WebSocket-Accept",
                            ws->ep->base);
    if (c->nprotocols ? !has_proto || strcmp(proto, "sirannon.v1") : has_proto)
        return gs_error_set(err, 0, "INVALID_RESPONSE", "%s selected subprotocol '%s'; expected %s",
                            ws->ep->base, has_proto ? proto : "",
                            c->nprotocols ? "sirannon.v1" : "none");
    /* Frames that came with the head stay in rbuf. */
    memmove(ws->rbuf.data, ws->rbuf.data + head_len, ws->rbuf.len - head_len);
    ws->rbuf.len -= head_len;
    ws->unparsed = ws->rbuf.len > 0;
    return GS_OK;
}

static int do_connect(cl_ws *ws, gs_error *err)
{
    int64_t deadline = cl_mono_ms() + ws->c->cfg.connect_timeout_ms;
    gs_buf_reset(&ws->rbuf);
    if (tcp_connect(ws, deadline, err) != GS_OK)
        return GS_ERROR;
    if (ws->ep->tls && tls_start(ws, deadline, err) != GS_OK) {
        close_socket(ws);
        return GS_ERROR;
    }
    if (do_upgrade(ws, deadline, err) != GS_OK) {
        close_socket(ws);
        return GS_ERROR;
    }
    return GS_OK;
}

/* ---------------------------------------------------------------------------------------
 * Queue and wake-up
 * ------------------------------------------------------------------------------------- */

void cl_ws_wake(cl_ws *ws)
{
    uint64_t one = 1;
    ssize_t r = write(ws->wake_fd, &one, sizeof one);
    (void)r;
}

void cl_ws_queue_locked(cl_ws *ws, const char *text, size_t len)
{
    int was_empty = ws->out.len == 0;
    cl_ws_frame_append(&ws->out, CL_WS_TEXT, text, len);
    if (ws->state != CL_WS_OPEN)
        ws->want_connect = 1;
    if (was_empty)
        cl_ws_wake(ws);
}

int64_t cl_ws_backoff_delay(int64_t base_ms, int64_t max_ms, int step)
{
    if (base_ms < 1)
        base_ms = 1;
    if (max_ms < base_ms)
        max_ms = base_ms;
    int64_t d = base_ms;
    for (int i = 0; i < step && d < max_ms; i++)
        d *= 2;
    return d < max_ms ? d : max_ms;
}

static int64_t backoff_ms(cl_ws *ws)
{
    int64_t d = cl_ws_backoff_delay(ws->c->cfg.reconnect_interval_ms, ws->c->cfg.reconnect_max_ms,
                                    ws->backoff_step);
    if (ws->backoff_step < 62)
        ws->backoff_step++;
    return d;
}

/* The connection is gone (or never came): fail what waits, tell the subscriptions. */
static void connection_lost(cl_ws *ws, const gs_error *why, int refused)
{
    close_socket(ws);
    pthread_mutex_lock(&ws->mu);
    ws->state = refused ? CL_WS_REFUSED : CL_WS_IDLE;
    if (refused)
        gs_error_copy(&ws->refused, why);
    gs_buf_reset(&ws->out);
    ws->want_connect = 0;
    size_t n;
    cl_call **calls = steal_pending(ws, &n);
    pthread_mutex_unlock(&ws->mu);
    fail_calls(calls, n, why);
    cl_ws_subs_on_close(ws, why, refused);
    pthread_mutex_lock(&ws->mu);
    int down = !refused && ws->c->cfg.auto_reconnect && cl_ws_subs_down_locked(ws);
    if (down)
        ws->reconnect_at = cl_mono_ms() + backoff_ms(ws);
    int stopping = ws->stopping;
    pthread_mutex_unlock(&ws->mu);
    if (down && !stopping && ws->c->mode == CL_COORDINATOR && !atomic_load(&ws->c->closing)) {
        /* 06-client: the node may be gone. Read routing again before the (backed-off)
         * reconnect; subscriptions whose endpoint it no longer lists move. When no endpoint
         * answers, the routing held stays and the reconnect goes ahead. */
        gs_error e;
        gs_error_init(&e);
        cl_route_refresh(ws->db, NULL, &e);
        cl_ws_subs_reroute(ws, 1);
    }
}

/* ---------------------------------------------------------------------------------------
 * Inbound
 * ------------------------------------------------------------------------------------- */

static uint64_t id_counter(const char *id)
{
    if (!id || id[0] != 'c' || id[1] != '_')
        return 0;
    char *end;
    unsigned long long v = strtoull(id + 2, &end, 10);
    return *end == '_' ? v : 0;
}

static void on_text(cl_ws *ws, const char *p, size_t n)
{
    json_t *m = json_loadb(p, n, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(m)) {
        json_decref(m);
        return; /* not a Sirannon message; nothing to correlate it with */
    }
    const char *type = json_string_value(json_object_get(m, "type"));
    const char *id = json_string_value(json_object_get(m, "id"));
    if (!type) {
        json_decref(m);
        return;
    }
    int is_reply = !strcmp(type, "result") || !strcmp(type, "error");
    cl_call *call = NULL;
    if (is_reply && id) {
        pthread_mutex_lock(&ws->mu);
        call = pmap_take(ws, id_counter(id));
        pthread_mutex_unlock(&ws->mu);
    }
    if (call) {
        if (type[0] == 'r') {
            cl_call_finish(call, GS_OK, json_object_get(m, "data"), NULL);
        } else {
            gs_error e;
            gs_error_init(&e);
            if (cl_error_from_envelope(json_object_get(m, "error"), 0, &e) != 0)
                gs_error_set(&e, 0, "INVALID_RESPONSE",
                             "the server sent an error message without a code");
            cl_call_finish(call, GS_ERROR, NULL, &e);
        }
    } else if (id && strcmp(type, "result") != 0) {
        cl_ws_sub_message(ws, type, id, m);
    }
    json_decref(m);
}

static void queue_control(cl_ws *ws, int opcode, const void *p, size_t n)
{
    /* Straight into the write buffer: control frames may go between data frames. */
    cl_ws_frame_append(&ws->wbuf, opcode, p, n);
}

/* Parse what rbuf holds. Returns 0, or -1 when the connection must end (why filled). */
static int process_frames(cl_ws *ws, gs_error *why, int *refused)
{
    size_t off = 0;
    int rc = 0;
    while (rc == 0) {
        cl_ws_frame_hdr h;
        const uint8_t *p = (const uint8_t *)ws->rbuf.data + off;
        size_t avail = ws->rbuf.len - off;
        int r = cl_ws_frame_parse(p, avail, &h);
        if (r == 0)
            break;
        if (r < 0 || h.masked) {
            gs_error_set(why, 0, "CONNECTION_ERROR", "the server at %s broke the WebSocket framing",
                         ws->ep->base);
            rc = -1;
            break;
        }
        if (h.len > CL_WS_MAX_MESSAGE) {
            gs_error_set(why, 0, "CONNECTION_ERROR", "a WebSocket frame of %llu bytes is too big",
                         (unsigned long long)h.len);
            rc = -1;
            break;
        }
        if (avail < h.header_len + h.len)
            break;
        const char *payload = (const char *)p + h.header_len;
        size_t plen = (size_t)h.len;
        off += h.header_len + plen;
        switch (h.opcode) {
        case CL_WS_PING: queue_control(ws, CL_WS_PONG, payload, plen); break;
        case CL_WS_PONG: break;
        case CL_WS_CLOSE: {
            int code = plen >= 2 ? ((uint8_t)payload[0] << 8 | (uint8_t)payload[1]) : 1005;
            char reason[256];
            size_t rl = plen > 2 ? plen - 2 : 0;
            if (rl >= sizeof reason)
                rl = sizeof reason - 1;
            memcpy(reason, plen > 2 ? payload + 2 : "", rl);
            reason[rl] = '\0';
            uint8_t echo[2] = {(uint8_t)(code >> 8), (uint8_t)code};
            queue_control(ws, CL_WS_CLOSE, echo, code == 1005 ? 0 : 2);
            *refused = code == 4401 || code == 4403 || (code >= 4000 && code <= 4099);
            const char *ecode = code == 4401   ? "UNAUTHORIZED"
                                : code == 4403 ? "FORBIDDEN"
                                               : "CONNECTION_ERROR";
            if (*refused)
                gs_error_set(why, 0, ecode, "The server refused the WebSocket connection: %s",
                             rl ? reason : "no reason given");
            else
                gs_error_set(why, 0, ecode, "the server closed the WebSocket (%d%s%s)", code,
                             rl ? " " : "", reason);
            snprintf(why->details, sizeof why->details, "{\"closeCode\":%d}", code);
            rc = -1;
            break;
        }
        case CL_WS_TEXT:
        case CL_WS_BINARY:
        case CL_WS_CONT:
            if ((h.opcode == CL_WS_CONT) != (ws->in_msg != 0)) {
                gs_error_set(why, 0, "CONNECTION_ERROR",
                             "the server at %s broke WebSocket fragmentation", ws->ep->base);
                rc = -1;
                break;
            }
            if (h.fin && !ws->in_msg) {
                if (h.opcode == CL_WS_TEXT)
                    on_text(ws, payload, plen);
                break;
            }
            if (!ws->in_msg) {
                ws->in_msg = 1;
                ws->msg_opcode = h.opcode;
                gs_buf_reset(&ws->msg);
            }
            gs_buf_append(&ws->msg, payload, plen);
            if (ws->msg.oom || ws->msg.len > CL_WS_MAX_MESSAGE) {
                gs_error_set(why, 0, "CONNECTION_ERROR", "a WebSocket message is too big");
                rc = -1;
                break;
            }
            if (h.fin) {
                ws->in_msg = 0;
                if (ws->msg_opcode == CL_WS_TEXT)
                    on_text(ws, ws->msg.data, ws->msg.len);
                gs_buf_reset(&ws->msg);
            }
            break;
        }
    }
    if (off) {
        memmove(ws->rbuf.data, ws->rbuf.data + off, ws->rbuf.len - off);
        ws->rbuf.len -= off;
    }
    return rc;
}

/* Send what the write buffer holds. -1 on a broken connection. */
static int flush_writes(cl_ws *ws)
{
    while (ws->wpos < ws->wbuf.len) {
        ssize_t w = io_write(ws, ws->wbuf.data + ws->wpos, ws->wbuf.len - ws->wpos);
        if (w > 0)
            ws->wpos += (size_t)w;
        else if (w == -1)
            return 0;
        else
            return -1;
    }
    gs_buf_reset(&ws->wbuf);
    ws->wpos = 0;
    return 0;
}

static void expire(cl_ws *ws)
{
    int64_t now = cl_mono_ms();
    for (;;) {
        cl_call *call = NULL;
        pthread_mutex_lock(&ws->mu);
        while (ws->nheap && ws->heap[0].deadline <= now && !call) {
            cl_tmo t = heap_pop(ws);
            call = pmap_take(ws, t.key);
        }
        pthread_mutex_unlock(&ws->mu);
        if (!call)
            return;
        gs_error e;
        gs_error_init(&e);
        gs_error_set(&e, 0, "TIMEOUT", "no answer from %s within %lld ms", ws->ep->base,
                     (long long)call->timeout_ms);
        cl_call_finish(call, GS_ERROR, NULL, &e);
    }
}

/* ---------------------------------------------------------------------------------------
 * The I/O thread
 * ------------------------------------------------------------------------------------- */

static void drain_wake(cl_ws *ws)
{
    uint64_t v;
    ssize_t r = read(ws->wake_fd, &v, sizeof v);
    (void)r;
}

/* One round on an open connection; returns -1 when it ended. */
static int open_round(cl_ws *ws)
{
    pthread_mutex_lock(&ws->mu);
    if (ws->out.len) {
        if (!ws->wbuf.len) {
            gs_buf t = ws->wbuf;
            ws->wbuf = ws->out;
            ws->out = t;
            ws->wpos = 0;
        } else {
            gs_buf_append(&ws->wbuf, ws->out.data, ws->out.len);
        }
        gs_buf_reset(&ws->out);
    }
    int64_t timeout = -1;
    if (ws->nheap) {
        timeout = ws->heap[0].deadline - cl_mono_ms();
        if (timeout < 0)
            timeout = 0;
    }
    int stopping = ws->stopping;
    pthread_mutex_unlock(&ws->mu);
    if (stopping)
        return 0;
    gs_error why;
    gs_error_init(&why);
    int refused = 0;
    if (ws->wbuf.oom) {
        gs_error_set(&why, 0, "INTERNAL_ERROR", "out of memory queueing frames");
        connection_lost(ws, &why, 0);
        return -1;
    }
    if (ws->wpos < ws->wbuf.len && flush_writes(ws) != 0) {
        gs_error_set(&why, 0, "CONNECTION_ERROR", "the connection to %s broke while sending",
                     ws->ep->base);
        connection_lost(ws, &why, 0);
        return -1;
    }
    if (ws->rbuf.len && ws->unparsed) {
        /* Frames that arrived with the upgrade response. */
        ws->unparsed = 0;
        if (process_frames(ws, &why, &refused) != 0) {
            flush_writes(ws);
            connection_lost(ws, &why, refused);
            return -1;
        }
    }
    int tls_buffered = ws->tls && gnutls_record_check_pending(ws->tls) > 0;
    struct pollfd p[2] = {{.fd = ws->fd, .events = POLLIN}, {.fd = ws->wake_fd, .events = POLLIN}};
    if (ws->wpos < ws->wbuf.len)
        p[0].events |=
            ws->tls && ws->tls_pending && !gnutls_record_get_direction(ws->tls) ? POLLIN : POLLOUT;
    int r = tls_buffered ? 1 : poll(p, 2, timeout > 1000 || timeout < 0 ? 1000 : (int)timeout);
    if (r < 0 && errno != EINTR) {
        gs_error_set(&why, 0, "CONNECTION_ERROR", "poll failed: %s", strerror(errno));
        connection_lost(ws, &why, 0);
        return -1;
    }
    if (p[1].revents & POLLIN)
        drain_wake(ws);
    if (tls_buffered || (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
        for (int rounds = 0; rounds < 64; rounds++) {
            if (gs_buf_reserve(&ws->rbuf, 65536)) {
                gs_error_set(&why, 0, "INTERNAL_ERROR", "out of memory reading frames");
                connection_lost(ws, &why, 0);
                return -1;
            }
            ssize_t n = io_read(ws, ws->rbuf.data + ws->rbuf.len, 65536);
            if (n > 0) {
                ws->rbuf.len += (size_t)n;
                if (process_frames(ws, &why, &refused) != 0) {
                    flush_writes(ws); /* the close reply, best effort */
                    connection_lost(ws, &why, refused);
                    return -1;
                }
                continue;
            }
            if (n == -1)
                break;
            gs_error_set(&why, 0, "CONNECTION_ERROR", "the server at %s closed the connection",
                         ws->ep->base);
            snprintf(why.details, sizeof why.details, "{\"closeCode\":1006}");
            connection_lost(ws, &why, 0);
            return -1;
        }
    }
    if (ws->wpos < ws->wbuf.len && flush_writes(ws) != 0) {
        gs_error_set(&why, 0, "CONNECTION_ERROR", "the connection to %s broke while sending",
                     ws->ep->base);
        connection_lost(ws, &why, 0);
        return -1;
    }
    expire(ws);
    return 0;
}

static void *io_main(void *arg)
{
    cl_ws *ws = arg;
    io_thread_ws = ws;
    cl_mark_library_thread();
    pthread_mutex_lock(&ws->mu);
    while (!ws->stopping) {
        if (atomic_load(&ws->db->route_gen) != ws->route_seen) {
            /* routing changed (cl_route.c woke us): do our subscriptions still belong here? */
            pthread_mutex_unlock(&ws->mu);
            cl_ws_subs_reroute(ws, 0);
            pthread_mutex_lock(&ws->mu);
            continue;
        }
        if (ws->state == CL_WS_OPEN) {
            pthread_mutex_unlock(&ws->mu);
            open_round(ws);
            pthread_mutex_lock(&ws->mu);
            continue;
        }
        int64_t now = cl_mono_ms();
        int down =
            ws->state == CL_WS_IDLE && ws->c->cfg.auto_reconnect && cl_ws_subs_down_locked(ws);
        int want = ws->state == CL_WS_IDLE && (ws->want_connect || cl_ws_subs_waiting_locked(ws) ||
                                               (down && now >= ws->reconnect_at));
        if (want) {
            pthread_mutex_unlock(&ws->mu);
            gs_error err;
            gs_error_init(&err);
            int rc = do_connect(ws, &err);
            pthread_mutex_lock(&ws->mu);
            if (rc == GS_OK && !ws->stopping) {
                ws->state = CL_WS_OPEN;
                ws->want_connect = 0;
                ws->backoff_step = 0;
                cl_ws_subs_on_open_locked(ws);
            } else if (rc != GS_OK) {
                pthread_mutex_unlock(&ws->mu);
                connection_lost(ws, &err, 0);
                pthread_mutex_lock(&ws->mu);
            }
            continue;
        }
        /* Idle: wait for a request, or the next reconnect attempt. */
        int64_t wait = down ? ws->reconnect_at - now : -1;
        if (ws->nheap) {
            int64_t t = ws->heap[0].deadline - now;
            wait = wait < 0 || t < wait ? (t < 0 ? 0 : t) : wait;
        }
        pthread_mutex_unlock(&ws->mu);
        struct pollfd p = {.fd = ws->wake_fd, .events = POLLIN};
        if (poll(&p, 1, wait < 0 || wait > 1000 ? 1000 : (int)wait) > 0)
            drain_wake(ws);
        expire(ws);
        pthread_mutex_lock(&ws->mu);
    }
    int was_open = ws->state == CL_WS_OPEN;
    pthread_mutex_unlock(&ws->mu);
    if (was_open && ws->fd >= 0) {
        uint8_t code[2] = {1000 >> 8, 1000 & 0xff};
        gs_buf_reset(&ws->wbuf);
        ws->wpos = 0;
        cl_ws_frame_append(&ws->wbuf, CL_WS_CLOSE, code, 2);
        flush_writes(ws);
    }
    close_socket(ws);
    gs_error why;
    gs_error_init(&why);
    gs_error_set(&why, 0, "CONNECTION_ERROR", "the client was closed");
    pthread_mutex_lock(&ws->mu);
    size_t n;
    cl_call **calls = steal_pending(ws, &n);
    pthread_mutex_unlock(&ws->mu);
    fail_calls(calls, n, &why);
    return NULL;
}

/* ---------------------------------------------------------------------------------------
 * Public to the library
 * ------------------------------------------------------------------------------------- */

cl_ws *cl_ws_new(gs_client *c, cl_endpoint *ep, gs_client_db *db, gs_error *err)
{
    cl_ws *ws = gs_calloc(1, sizeof *ws);
    if (!ws) {
        gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        return NULL;
    }
    ws->c = c;
    ws->ep = ep;
    ws->db = db;
    ws->fd = -1;
    ws->route_seen = atomic_load(&db->route_gen);
    gs_buf_init(&ws->out);
    gs_buf_init(&ws->wbuf);
    gs_buf_init(&ws->rbuf);
    gs_buf_init(&ws->msg);
    gs_error_init(&ws->refused);
    gs_buf p;
    gs_buf_init(&p);
    gs_buf_printf(&p, "%s/db/%s", ep->prefix, db->id_enc);
    ws->path = gs_buf_take(&p, NULL);
    ws->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&ws->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ws->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (!ws->path || ws->wake_fd < 0 || pthread_create(&ws->th, NULL, io_main, ws) != 0) {
        gs_error_set(err, 0, "INTERNAL_ERROR", "cannot start the WebSocket I/O thread");
        ws->th_started = 0;
        cl_ws_free(ws);
        return NULL;
    }
    ws->th_started = 1;
    return ws;
}

void cl_ws_stop(cl_ws *ws)
{
    if (!ws || !ws->th_started)
        return;
    pthread_mutex_lock(&ws->mu);
    ws->stopping = 1;
    pthread_mutex_unlock(&ws->mu);
    cl_ws_wake(ws);
    pthread_join(ws->th, NULL);
    ws->th_started = 0;
}

void cl_ws_free(cl_ws *ws)
{
    if (!ws)
        return;
    cl_ws_stop(ws);
    cl_ws_subs_free_all(ws);
    if (ws->cred)
        gnutls_certificate_free_credentials(ws->cred);
    if (ws->wake_fd >= 0)
        close(ws->wake_fd);
    gs_free(ws->pending);
    gs_free(ws->heap);
    gs_buf_free(&ws->out);
    gs_buf_free(&ws->wbuf);
    gs_buf_free(&ws->rbuf);
    gs_buf_free(&ws->msg);
    gs_free(ws->path);
    pthread_cond_destroy(&ws->cv);
    pthread_mutex_destroy(&ws->mu);
    gs_free(ws);
}

gs_status cl_ws_submit(cl_ws *ws, cl_call *call, gs_error *err)
{
    uint64_t n = atomic_fetch_add(&ws->counter, 1) + 1;
    gs_buf m;
    gs_buf_init(&m);
    gs_buf_printf(&m, "{\"type\":\"%s\",\"id\":\"c_%llu_%lld\"", call->ws_type,
                  (unsigned long long)n, (long long)cl_now_ms());
    if (call->name) {
        gs_buf_puts(&m, ",\"name\":");
        gs_buf_json_string(&m, call->name, strlen(call->name));
    }
    if (call->fields_len) {
        gs_buf_putc(&m, ',');
        gs_buf_append(&m, call->fields, call->fields_len);
    }
    gs_buf_putc(&m, '}');
    gs_buf frame;
    gs_buf_init(&frame);
    if (!m.oom)
        cl_ws_frame_append(&frame, CL_WS_TEXT, m.data, m.len);
    gs_buf_free(&m);
    if (m.oom || frame.oom) {
        gs_buf_free(&frame);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory framing the request");
    }
    int64_t deadline = call->timeout_ms > 0 ? cl_mono_ms() + call->timeout_ms : 0;
    pthread_mutex_lock(&ws->mu);
    gs_status st = GS_OK;
    if (ws->stopping) {
        st = gs_error_set(err, 0, "CONNECTION_ERROR", "the client is closing");
    } else if (ws->state == CL_WS_REFUSED) {
        gs_error_copy(err, &ws->refused);
        st = GS_ERROR;
    } else if (pmap_put(ws, n, call) != 0 || (deadline && heap_push(ws, deadline, n) != 0)) {
        pmap_take(ws, n);
        st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory queueing the request");
    } else {
        int was_empty = ws->out.len == 0;
        gs_buf_append(&ws->out, frame.data, frame.len);
        if (ws->out.oom) {
            pmap_take(ws, n);
            gs_buf_reset(&ws->out);
            ws->out.oom = 0;
            st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory queueing the request");
        } else {
            if (ws->state != CL_WS_OPEN)
                ws->want_connect = 1;
            if (was_empty)
                cl_ws_wake(ws);
        }
    }
    pthread_mutex_unlock(&ws->mu);
    gs_buf_free(&frame);
    return st;
}

int cl_ws_run_callback(cl_ws *ws, struct gs_client_sub *sub, uint64_t serial,
                       void (*fn)(struct gs_client_sub *, void *), void *arg)
{
    pthread_mutex_lock(&ws->mu);
    struct gs_client_sub *s = ws->subs;
    while (s && !(s == sub && s->serial == serial))
        s = s->next;
    if (!s) {
        pthread_mutex_unlock(&ws->mu);
        return -1;
    }
    ws->cb_running = sub;
    pthread_mutex_unlock(&ws->mu);
    fn(sub, arg);
    pthread_mutex_lock(&ws->mu);
    ws->cb_running = NULL;
    int free_it = sub->free_after_cb;
    pthread_cond_broadcast(&ws->cv);
    pthread_mutex_unlock(&ws->mu);
    if (free_it) {
        gs_client_rows_free(sub->rows);
        gs_free(sub->fields);
        gs_free(sub);
    }
    return 0;
}
