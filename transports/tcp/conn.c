/*
 * tcp transport: one connection, on the I/O thread. From TCP connect to TLS handshake to
 * the hellos (the dialer speaks first, the acceptor answers once it has checked the
 * dialer's), then frames both ways; reading decodes frames in place and hands message
 * payloads to the core; writing drains the shared queue, coalescing small frames into one
 * write (one TLS record) and slicing big ones; closing unregisters the connection, tells the
 * core the peer left (if it was reported up) and reschedules the dialer with backoff.
 * A closed connection stays allocated until the end of the loop pass (gs_tcp_conn_bury), so
 * an epoll event already fetched for it, or a frame being handled, never touches freed memory.
 */
#include "tcp_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static uint64_t hello_timeout(const gs_tcp_inst *t)
{
    uint64_t ms = 3 * t->heartbeat_ms;
    return ms > GS_TCP_HELLO_TIMEOUT_MIN_MS ? ms : GS_TCP_HELLO_TIMEOUT_MIN_MS;
}

static const char *state_name(gs_tcp_conn_state s)
{
    switch (s) {
    case GS_TCP_C_CONNECTING: return "connecting";
    case GS_TCP_C_TLS: return "TLS handshake";
    case GS_TCP_C_HELLO: return "waiting for the hello";
    case GS_TCP_C_ACTIVE: return "active";
    case GS_TCP_C_CLOSED: return "closed";
    }
    return "?";
}

static const char *who(const gs_tcp_conn *c)
{
    return c->peer_id[0] ? c->peer_id : "an unidentified peer";
}

gs_tcp_out *gs_tcp_out_new(gs_tcp_inst *t, gs_tcp_frame_type ft, uint8_t mt, uint64_t call_id,
                           const uint8_t *payload, size_t payload_len)
{
    gs_tcp_out *o = t->host->alloc(sizeof *o + GS_TCP_FRAME_HEADER + payload_len);
    if (!o)
        return NULL;
    o->next = NULL;
    o->len = gs_tcp_frame_header(o->bytes, ft, mt, call_id, payload_len);
    if (payload_len)
        memcpy(o->bytes + GS_TCP_FRAME_HEADER, payload, payload_len);
    return o;
}

void gs_tcp_conn_enqueue_locked(gs_tcp_conn *c, gs_tcp_out *o)
{
    o->next = NULL;
    if (c->qtail)
        c->qtail->next = o;
    else
        c->qhead = o;
    c->qtail = o;
    c->qbytes += o->len;
}

static void free_list(const gs_host *host, gs_tcp_out *o)
{
    while (o) {
        gs_tcp_out *n = o->next;
        host->free(o);
        o = n;
    }
}

static void set_interest(gs_tcp_conn *c, uint32_t events)
{
    if (c->state == GS_TCP_C_CLOSED || c->epoll_events == events)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(c->t->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->epoll_events = events;
}

gs_tcp_conn *gs_tcp_conn_new(gs_tcp_inst *t, int fd, gs_tcp_dial *dial, gs_tcp_conn_state state,
                             const char *addr)
{
    gs_tcp_conn *c = t->host->alloc(sizeof *c);
    if (!c) {
        close(fd);
        return NULL;
    }
    memset(c, 0, sizeof *c);
    c->h.kind = GS_TCP_H_CONN;
    c->t = t;
    c->fd = fd;
    c->dial = dial;
    c->state = state;
    snprintf(c->addr, sizeof c->addr, "%s", addr ? addr : "?");
    if (dial)
        snprintf(c->peer_id, sizeof c->peer_id, "%s", dial->id);
    uint64_t now = gs_tcp_now_ms();
    c->last_rx_ms = now;
    c->deadline_ms = now + hello_timeout(t);
    c->silence_ms = 3 * t->heartbeat_ms;
    c->epoll_events = state == GS_TCP_C_CONNECTING ? EPOLLOUT : EPOLLIN;
    struct epoll_event ev = {.events = c->epoll_events, .data.ptr = c};
    if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        t->host->log(t->host, GS_LOG_WARN, GS_TCP_COMPONENT, "node '%s': epoll: %s", t->node_id,
                     strerror(errno));
        close(fd);
        t->host->free(c);
        return NULL;
    }
    pthread_mutex_lock(&t->lock);
    c->next = t->conns;
    t->conns = c;
    pthread_mutex_unlock(&t->lock);
    return c;
}

/* ---- closing ---- */

/* A close frame written straight to the socket, best effort, when no write is half done
 * (a half-written frame or TLS record would turn it into garbage). */
static void write_close_frame(gs_tcp_conn *c, const char *reason)
{
    if (c->state < GS_TCP_C_HELLO || c->pend || c->foff)
        return;
    uint8_t buf[GS_TCP_FRAME_HEADER + GS_TCP_CLOSE_REASON_MAX];
    size_t n = strlen(reason);
    if (n > GS_TCP_CLOSE_REASON_MAX)
        n = GS_TCP_CLOSE_REASON_MAX;
    size_t total = gs_tcp_frame_header(buf, GS_TCP_FRAME_CLOSE, 0, 0, n);
    memcpy(buf + GS_TCP_FRAME_HEADER, reason, n);
    char why[128];
    if (c->tls) {
        gs_tcp_tls_send(c, buf, total, why, sizeof why);
        gs_tcp_tls_bye(c);
    } else {
        ssize_t w = send(c->fd, buf, total, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
    }
}

void gs_tcp_conn_close(gs_tcp_conn *c, int level, const char *reason, int send_close)
{
    if (c->state == GS_TCP_C_CLOSED)
        return;
    gs_tcp_inst *t = c->t;
    const gs_host *host = t->host;
    if (send_close)
        write_close_frame(c, reason);

    pthread_mutex_lock(&t->lock);
    c->registered = 0;
    for (gs_tcp_conn **pp = &t->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    gs_tcp_out *q = c->qhead;
    c->qhead = c->qtail = NULL;
    c->qbytes = 0;
    pthread_mutex_unlock(&t->lock);
    free_list(host, q);

    epoll_ctl(t->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->tls)
        gnutls_deinit(c->tls);
    c->tls = NULL;
    close(c->fd);
    c->fd = -1;
    gs_tcp_conn_state was = c->state;
    c->state = GS_TCP_C_CLOSED;
    c->next = t->grave;
    t->grave = c;

    int stopping = atomic_load(&t->stopping);
    char retry[64] = "";
    if (c->dial && c->dial->conn == c) {
        gs_tcp_dial *d = c->dial;
        d->conn = NULL;
        uint64_t now = gs_tcp_now_ms();
        d->next_ms = now + d->backoff_ms;
        if (!stopping)
            snprintf(retry, sizeof retry, "; reconnecting in %" PRIu64 " ms", d->backoff_ms);
        d->backoff_ms =
            d->backoff_ms * 2 > t->reconnect_max_ms ? t->reconnect_max_ms : d->backoff_ms * 2;
        if (was != GS_TCP_C_ACTIVE && d->failing++ > 0 && level > GS_LOG_ERROR)
            level = GS_LOG_DEBUG; /* the first failure in a row is enough at WARN */
    }
    host->log(host, (gs_log_level)level, GS_TCP_COMPONENT,
              "node '%s': connection %s %s (%s) closed while %s: %s%s", t->node_id,
              c->dial ? "to" : "from", who(c), c->addr, state_name(was), reason, retry);
    if (c->reported) {
        c->reported = 0;
        if (!stopping)
            t->events.on_peer(t->events.user, c->peer_id, 0);
    }
}

void gs_tcp_conn_bury(gs_tcp_inst *t)
{
    const gs_host *host = t->host;
    while (t->grave) {
        gs_tcp_conn *c = t->grave;
        t->grave = c->next;
        free_list(host, c->whead);
        host->free(c->rbuf);
        host->free(c->stage);
        host->free(c);
    }
}

/* ---- writing ---- */

static void take_queue(gs_tcp_conn *c)
{
    gs_tcp_inst *t = c->t;
    pthread_mutex_lock(&t->lock);
    if (c->qhead) {
        if (c->wtail)
            c->wtail->next = c->qhead;
        else
            c->whead = c->qhead;
        c->wtail = c->qtail;
        c->qhead = c->qtail = NULL;
    }
    if (c->freed_bytes) {
        c->qbytes = c->qbytes > c->freed_bytes ? c->qbytes - c->freed_bytes : 0;
        c->freed_bytes = 0;
    }
    pthread_mutex_unlock(&t->lock);
}

static void pop_written(gs_tcp_conn *c)
{
    gs_tcp_out *f = c->whead;
    c->whead = f->next;
    if (!c->whead)
        c->wtail = NULL;
    c->freed_bytes += f->len;
    c->t->host->free(f);
}

/* The next bytes to write into c->pend. 0 when there is nothing to write. */
static int next_chunk(gs_tcp_conn *c)
{
    if (!c->whead)
        take_queue(c);
    if (!c->whead)
        return 0;
    gs_tcp_out *f = c->whead;
    size_t rem = f->len - c->foff;
    size_t slice = c->tls ? GS_TCP_STAGE_BYTES : GS_TCP_PLAIN_CHUNK;
    if (c->foff > 0 || rem >= GS_TCP_STAGE_BYTES / 2 ||
        (!c->stage && !(c->stage = c->t->host->alloc(GS_TCP_STAGE_BYTES)))) {
        c->pend = f->bytes + c->foff;
        c->pend_len = rem < slice ? rem : slice;
        c->pend_stage = 0;
        return 1;
    }
    /* Coalesce consecutive small frames: one write, one TLS record. */
    c->stage_len = 0;
    for (int refilled = 0;;) {
        while (c->whead && c->whead->len < GS_TCP_STAGE_BYTES / 2 &&
               c->whead->len <= GS_TCP_STAGE_BYTES - c->stage_len) {
            memcpy(c->stage + c->stage_len, c->whead->bytes, c->whead->len);
            c->stage_len += c->whead->len;
            pop_written(c);
        }
        if (c->whead || refilled)
            break;
        take_queue(c);
        refilled = 1;
    }
    c->pend = c->stage;
    c->pend_len = c->stage_len;
    c->pend_stage = 1;
    return 1;
}

static void advance(gs_tcp_conn *c, size_t n)
{
    c->pend += n;
    c->pend_len -= n;
    if (!c->pend_stage) {
        c->foff += n;
        if (c->foff == c->whead->len) {
            pop_written(c);
            c->foff = 0;
        }
    }
    if (c->pend_len == 0) {
        c->pend = NULL;
        if (c->pend_stage)
            c->stage_len = 0;
    }
}

static ssize_t plain_send(gs_tcp_conn *c, const uint8_t *p, size_t n, char *why, size_t ws)
{
    for (;;) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w >= 0)
            return w;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return -1;
        snprintf(why, ws, "write: %s", strerror(errno));
        return -2;
    }
}

void gs_tcp_conn_flush(gs_tcp_conn *c)
{
    if (c->state != GS_TCP_C_HELLO && c->state != GS_TCP_C_ACTIVE)
        return;
    char why[256];
    size_t budget = GS_TCP_IO_BUDGET;
    for (;;) {
        if (!c->pend && !next_chunk(c)) {
            set_interest(c, EPOLLIN);
            break;
        }
        if (budget == 0) {
            /* More to write: EPOLLOUT (level-triggered) brings us back after the others. */
            set_interest(c, EPOLLIN | EPOLLOUT);
            break;
        }
        ssize_t n = c->tls ? gs_tcp_tls_send(c, c->pend, c->pend_len, why, sizeof why)
                           : plain_send(c, c->pend, c->pend_len, why, sizeof why);
        if (n == -1 || n == 0) {
            set_interest(c, EPOLLIN | EPOLLOUT);
            break;
        }
        if (n < 0) {
            gs_tcp_conn_close(c, GS_LOG_WARN, why, 0);
            return;
        }
        advance(c, (size_t)n);
        budget = (size_t)n < budget ? budget - (size_t)n : 0;
    }
    if (c->freed_bytes)
        take_queue(c); /* only settles the byte count when the queue is empty */
}

/* ---- hellos ---- */

static int queue_hello(gs_tcp_conn *c)
{
    gs_tcp_inst *t = c->t;
    gs_tcp_hello h;
    memset(&h, 0, sizeof h);
    h.version = GS_TCP_HELLO_VERSION;
    h.heartbeat_ms = (uint32_t)t->heartbeat_ms;
    h.primary_term = t->primary_term;
    snprintf(h.node_id, sizeof h.node_id, "%s", t->node_id);
    snprintf(h.role, sizeof h.role, "%s", t->role);
    snprintf(h.group_id, sizeof h.group_id, "%s", t->group_id ? t->group_id : "");
    snprintf(h.protocol_version, sizeof h.protocol_version, "%s",
             t->protocol_version ? t->protocol_version : "");
    uint8_t payload[GS_TCP_HELLO_MAX];
    size_t n = gs_tcp_hello_encode(&h, payload, sizeof payload);
    gs_tcp_out *o = n ? gs_tcp_out_new(t, GS_TCP_FRAME_HELLO, 0, 0, payload, n) : NULL;
    if (!o) {
        gs_tcp_conn_close(c, GS_LOG_ERROR,
                          n ? "out of memory for the hello"
                            : "this node's hello cannot be encoded (group id or protocol "
                              "version too long, or holds control bytes)",
                          0);
        return -1;
    }
    pthread_mutex_lock(&t->lock);
    gs_tcp_conn_enqueue_locked(c, o);
    pthread_mutex_unlock(&t->lock);
    return 0;
}

/* Register c as the peer's connection, resolving a clash with another one for the same id. */
static void activate(gs_tcp_conn *c, const gs_tcp_hello *h)
{
    gs_tcp_inst *t = c->t;
    const gs_host *host = t->host;
    gs_tcp_conn *old = NULL;
    pthread_mutex_lock(&t->lock);
    for (gs_tcp_conn *o = t->conns; o; o = o->next)
        if (o != c && o->registered && strcmp(o->peer_id, c->peer_id) == 0) {
            old = o;
            break;
        }
    if (old && (old->dial != NULL) != (c->dial != NULL)) {
        /* Both nodes dialled each other: keep the connection the lower node id dialled, as
         * the peer decides too. */
        const char *c_dialer = c->dial ? t->node_id : c->peer_id;
        if (strcmp(c_dialer, t->node_id) == 0 ? strcmp(t->node_id, c->peer_id) > 0
                                              : strcmp(c->peer_id, t->node_id) > 0) {
            pthread_mutex_unlock(&t->lock);
            gs_tcp_conn_close(c, GS_LOG_INFO,
                              "both nodes dialled each other; the connection dialled by the "
                              "lower node id is kept",
                              1);
            return;
        }
    }
    if (old)
        old->registered = 0;
    c->registered = 1;
    c->state = GS_TCP_C_ACTIVE;
    pthread_mutex_unlock(&t->lock);
    if (old)
        gs_tcp_conn_close(old, GS_LOG_INFO, "replaced by a newer connection of the same node", 1);

    uint64_t now = gs_tcp_now_ms();
    c->next_hb_ms = now + t->heartbeat_ms;
    c->last_rx_ms = now;
    if (c->dial) {
        c->dial->failing = 0;
        c->dial->backoff_ms = t->reconnect_min_ms;
    }
    snprintf(c->role, sizeof c->role, "%s", h->role);
    host->log(host, GS_LOG_INFO, GS_TCP_COMPONENT,
              "node '%s': peer '%s' (%s%s%s, term %" PRId64 ", protocol %s) connected %s %s, %s",
              t->node_id, c->peer_id, h->role, h->group_id[0] ? ", group " : "", h->group_id,
              h->primary_term, h->protocol_version[0] ? h->protocol_version : "-",
              c->dial ? "to" : "from", c->addr,
              c->tls ? "TLS 1.3, certificate CN verified" : "plaintext (insecure)");
    if (t->protocol_version && h->protocol_version[0] &&
        strcmp(t->protocol_version, h->protocol_version) != 0)
        host->log(host, GS_LOG_WARN, GS_TCP_COMPONENT,
                  "node '%s': peer '%s' speaks replication protocol %s, this node %s", t->node_id,
                  c->peer_id, h->protocol_version, t->protocol_version);
    if (!atomic_load(&t->stopping)) {
        c->reported = 1;
        t->events.on_peer(t->events.user, c->peer_id, 1);
    }
}

static void on_hello(gs_tcp_conn *c, const gs_tcp_frame *f)
{
    gs_tcp_inst *t = c->t;
    char why[256], msg[600];
    gs_tcp_hello h;
    if (gs_tcp_hello_decode(f->payload, f->payload_len, &h, why, sizeof why) != 0) {
        snprintf(msg, sizeof msg, "bad hello: %s", why);
        gs_tcp_conn_close(c, GS_LOG_WARN, msg, 1);
        return;
    }
    if (c->tls && strcmp(h.node_id, c->cert_cn) != 0) {
        snprintf(msg, sizeof msg,
                 "refused: the hello says node '%s' but its certificate's CN is '%s' (the CN "
                 "must equal the node id)",
                 h.node_id, c->cert_cn);
        gs_tcp_conn_close(c, GS_LOG_WARN, msg, 1);
        return;
    }
    if (c->dial && strcmp(h.node_id, c->peer_id) != 0) {
        snprintf(msg, sizeof msg,
                 "refused: the node at this address says it is '%s', but peers[] lists it as "
                 "'%s'",
                 h.node_id, c->peer_id);
        gs_tcp_conn_close(c, GS_LOG_WARN, msg, 1);
        return;
    }
    if (strcmp(h.node_id, t->node_id) == 0) {
        gs_tcp_conn_close(c, GS_LOG_WARN,
                          "refused: the peer has this node's own id (a node dialled itself, or "
                          "two nodes share an id)",
                          1);
        return;
    }
    snprintf(c->peer_id, sizeof c->peer_id, "%s", h.node_id);
    uint64_t hb = h.heartbeat_ms > t->heartbeat_ms ? h.heartbeat_ms : t->heartbeat_ms;
    c->silence_ms = 3 * hb;
    if (!c->dial && queue_hello(c) != 0)
        return;
    activate(c, &h);
    if (c->state == GS_TCP_C_ACTIVE)
        gs_tcp_conn_flush(c);
}

/* ---- reading ---- */

static void on_frame(gs_tcp_conn *c, const gs_tcp_frame *f)
{
    gs_tcp_inst *t = c->t;
    char msg[700];
    if (f->frame_type == GS_TCP_FRAME_CLOSE) {
        snprintf(msg, sizeof msg, "the peer closed it: %.*s", (int)f->payload_len,
                 (const char *)f->payload);
        for (char *p = msg; *p; p++)
            if ((unsigned char)*p < 0x20)
                *p = '?';
        gs_tcp_conn_close(c, c->state == GS_TCP_C_ACTIVE ? GS_LOG_INFO : GS_LOG_WARN, msg, 0);
        return;
    }
    if (c->state == GS_TCP_C_HELLO) {
        if (f->frame_type != GS_TCP_FRAME_HELLO) {
            snprintf(msg, sizeof msg, "refused: its first frame was not a hello (type %u)",
                     f->frame_type);
            gs_tcp_conn_close(c, GS_LOG_WARN, msg, 1);
            return;
        }
        on_hello(c, f);
        return;
    }
    switch (f->frame_type) {
    case GS_TCP_FRAME_MESSAGE:
        if (!atomic_load(&t->stopping))
            t->events.on_message(t->events.user, c->peer_id, (gs_repl_msg_type)f->msg_type,
                                 f->call_id, f->payload, f->payload_len);
        break;
    case GS_TCP_FRAME_HEARTBEAT: break;
    case GS_TCP_FRAME_HELLO:
        gs_tcp_conn_close(c, GS_LOG_WARN, "protocol error: a second hello", 1);
        break;
    default: break;
    }
}

/* Decode every complete frame in rbuf, then keep the incomplete rest at its start. */
static void parse(gs_tcp_conn *c)
{
    size_t *need = &c->need;
    gs_tcp_inst *t = c->t;
    size_t off = 0;
    *need = 0;
    while ((c->state == GS_TCP_C_HELLO || c->state == GS_TCP_C_ACTIVE) &&
           !atomic_load(&t->stopping)) {
        gs_tcp_frame f;
        char why[256];
        gs_tcp_decode_result r = gs_tcp_frame_decode(c->rbuf + off, c->rlen - off,
                                                     t->max_frame_bytes, &f, need, why, sizeof why);
        if (r == GS_TCP_DECODE_NEED_MORE)
            break;
        if (r == GS_TCP_DECODE_ERROR) {
            char msg[400];
            if (!c->tls && c->rlen - off >= 2 && c->rbuf[off] == 0x16 && c->rbuf[off + 1] == 3)
                snprintf(msg, sizeof msg,
                         "refused: the peer speaks TLS but this node runs with insecure: true "
                         "(%s)",
                         why);
            else
                snprintf(msg, sizeof msg, "refused: %s", why);
            gs_tcp_conn_close(c, GS_LOG_WARN, msg, 1);
            return;
        }
        on_frame(c, &f);
        off += f.total_len;
    }
    if (c->state == GS_TCP_C_CLOSED)
        return;
    if (off) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
}

static void read_some(gs_tcp_conn *c)
{
    gs_tcp_inst *t = c->t;
    const gs_host *host = t->host;
    size_t budget = GS_TCP_IO_BUDGET;
    char why[256];
    c->read_more = 0;
    while ((c->state == GS_TCP_C_HELLO || c->state == GS_TCP_C_ACTIVE) &&
           !atomic_load(&t->stopping)) {
        /* c->need (kept across calls) covers the incomplete frame at the buffer's start. */
        size_t want = c->need > GS_TCP_RBUF_BASE ? c->need : GS_TCP_RBUF_BASE;
        if (c->rcap != want && (c->rcap < want || c->rlen <= want)) {
            /* Grow for a big frame (its length already checked against max_frame_bytes), or
             * shrink back once it is consumed. */
            uint8_t *nb = host->realloc(c->rbuf, want);
            if (!nb) {
                if (c->rcap < want) {
                    gs_tcp_conn_close(c, GS_LOG_ERROR, "out of memory for an incoming frame", 1);
                    return;
                }
            } else {
                c->rbuf = nb;
                c->rcap = want;
            }
        }
        if (c->rlen >= c->rcap) {
            /* parse() leaves less than one frame behind, and want covers a whole frame. */
            gs_tcp_conn_close(c, GS_LOG_ERROR, "internal error: the read buffer is full", 1);
            return;
        }
        ssize_t n;
        if (c->tls) {
            n = gs_tcp_tls_recv(c, c->rbuf + c->rlen, c->rcap - c->rlen, why, sizeof why);
        } else {
            n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    n = -1;
                } else {
                    snprintf(why, sizeof why, "read: %s", strerror(errno));
                    n = -2;
                }
            }
        }
        if (n == -1)
            return;
        if (n == 0) {
            gs_tcp_conn_close(c, c->state == GS_TCP_C_ACTIVE ? GS_LOG_INFO : GS_LOG_WARN,
                              "the peer closed the connection", 0);
            return;
        }
        if (n < 0) {
            gs_tcp_conn_close(c, GS_LOG_WARN, why, 0);
            return;
        }
        c->rlen += (size_t)n;
        c->last_rx_ms = gs_tcp_now_ms();
        parse(c);
        budget = (size_t)n < budget ? budget - (size_t)n : 0;
        if (budget == 0) {
            /* Let the other connections (and this one's writes) have a turn. A TLS session
             * may hold decrypted bytes epoll cannot see: the loop comes back for them. */
            c->read_more = c->state == GS_TCP_C_HELLO || c->state == GS_TCP_C_ACTIVE;
            return;
        }
    }
}

void gs_tcp_conn_read(gs_tcp_conn *c)
{
    if (c->state == GS_TCP_C_HELLO || c->state == GS_TCP_C_ACTIVE)
        read_some(c);
}

/* ---- state machine ---- */

static void tls_step(gs_tcp_conn *c)
{
    char why[512];
    int r = gs_tcp_tls_handshake(c, why, sizeof why);
    if (r == 0) {
        set_interest(c, gs_tcp_tls_wants_write(c) ? EPOLLOUT : EPOLLIN);
        return;
    }
    if (r < 0) {
        gs_tcp_conn_close(c, GS_LOG_WARN, why, 0);
        return;
    }
    if (c->dial && strcmp(c->cert_cn, c->peer_id) != 0) {
        char msg[700];
        snprintf(msg, sizeof msg,
                 "refused: its certificate's CN is '%s', but peers[] lists this address as "
                 "'%s' (the CN must equal the node id)",
                 c->cert_cn, c->peer_id);
        c->state = GS_TCP_C_HELLO; /* TLS is up: the close frame can go out */
        gs_tcp_conn_close(c, GS_LOG_WARN, msg, 1);
        return;
    }
    c->state = GS_TCP_C_HELLO;
    set_interest(c, EPOLLIN);
    if (c->dial) {
        if (queue_hello(c) != 0)
            return;
        gs_tcp_conn_flush(c);
    }
    /* The peer's first frame may already sit decrypted in the session: epoll would not
     * report it again. */
    read_some(c);
}

static void transport_up(gs_tcp_conn *c)
{
    char why[256];
    if (c->t->insecure) {
        c->state = GS_TCP_C_HELLO;
        set_interest(c, EPOLLIN);
        if (c->dial) {
            if (queue_hello(c) != 0)
                return;
            gs_tcp_conn_flush(c);
        }
        return;
    }
    c->state = GS_TCP_C_TLS;
    if (gs_tcp_tls_session(c, why, sizeof why) != 0) {
        gs_tcp_conn_close(c, GS_LOG_ERROR, why, 0);
        return;
    }
    tls_step(c);
}

void gs_tcp_conn_start(gs_tcp_conn *c)
{
    transport_up(c);
}

void gs_tcp_conn_event(gs_tcp_conn *c, uint32_t events)
{
    if (c->state == GS_TCP_C_CLOSED)
        return;
    if (c->state == GS_TCP_C_CONNECTING) {
        int e = gs_tcp_connect_result(c->fd);
        if (e) {
            char why[256];
            snprintf(why, sizeof why, "cannot connect: %s", strerror(e));
            gs_tcp_conn_close(c, GS_LOG_WARN, why, 0);
            return;
        }
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        transport_up(c);
        return;
    }
    if (c->state == GS_TCP_C_TLS) {
        tls_step(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        read_some(c);
    if (c->state != GS_TCP_C_CLOSED && (events & EPOLLOUT))
        gs_tcp_conn_flush(c);
}

uint64_t gs_tcp_conn_tick(gs_tcp_conn *c, uint64_t now)
{
    gs_tcp_inst *t = c->t;
    char msg[200];
    if (c->state == GS_TCP_C_CLOSED)
        return UINT64_MAX;
    if (c->state != GS_TCP_C_ACTIVE) {
        if (now < c->deadline_ms)
            return c->deadline_ms;
        snprintf(msg, sizeof msg, "no %s within %" PRIu64 " ms",
                 c->state == GS_TCP_C_CONNECTING ? "connection"
                 : c->state == GS_TCP_C_TLS      ? "TLS handshake"
                                                 : "hello",
                 hello_timeout(t));
        gs_tcp_conn_close(c, GS_LOG_WARN, msg, 1);
        return UINT64_MAX;
    }
    if (c->last_rx_ms <= now && now - c->last_rx_ms >= c->silence_ms) {
        /* Bytes may wait in the socket while this thread was busy elsewhere: read first. */
        read_some(c);
        if (c->state != GS_TCP_C_ACTIVE)
            return UINT64_MAX;
    }
    if (c->last_rx_ms <= now && now - c->last_rx_ms >= c->silence_ms) {
        snprintf(msg, sizeof msg,
                 "the peer was silent for %" PRIu64 " ms (3 heartbeats); dropped as dead",
                 now - c->last_rx_ms);
        gs_tcp_conn_close(c, GS_LOG_WARN, msg, 1);
        return UINT64_MAX;
    }
    if (now >= c->next_hb_ms) {
        gs_tcp_out *o = gs_tcp_out_new(t, GS_TCP_FRAME_HEARTBEAT, 0, 0, NULL, 0);
        if (o) {
            pthread_mutex_lock(&t->lock);
            gs_tcp_conn_enqueue_locked(c, o);
            pthread_mutex_unlock(&t->lock);
        }
        c->next_hb_ms = now + t->heartbeat_ms;
        if (!(c->epoll_events & EPOLLOUT))
            gs_tcp_conn_flush(c);
        if (c->state == GS_TCP_C_CLOSED)
            return UINT64_MAX;
    }
    uint64_t dead = c->last_rx_ms + c->silence_ms;
    return c->next_hb_ms < dead ? c->next_hb_ms : dead;
}
