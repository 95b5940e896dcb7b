/*
 * The http transport's own acceptor: one port for HTTP and WebSocket.
 *
 * A Sirannon client uses one base URL for both (http://host:port/db/{id}/query and
 * ws://host:port/db/{id}), and libmicrohttpd cannot give a connection away. So when the host
 * takes upgrades (host->upgrade_handoff, ABI 1.1) and the port is plain HTTP, the transport
 * listens itself and libmicrohttpd runs without a listening socket (MHD_USE_NO_LISTEN_SOCKET):
 *   1. the accept thread accepts (non-blocking) and peeks (recv MSG_PEEK) at what the client
 *      sent: at most GS_HTTP_PEEK_MAX bytes, for at most peek_timeout_ms;
 *   2. anything but `GET` with `Upgrade: websocket` goes to MHD_add_connection as soon as that
 *      is clear (a POST after 4 bytes, a GET once its head is complete or the peek is full);
 *   3. an upgrade goes to host->upgrade_handoff; GS_DECLINED (no transport serves WebSocket)
 *      hands it to libmicrohttpd like any other GET (the core answers it).
 * Peeking consumes nothing: whoever gets the connection reads the request from its first byte.
 * Keep-alive connections pass here once, before their first request. A connection that sends
 * nothing within peek_timeout_ms is closed; one that sent part of a head by then goes to
 * libmicrohttpd, whose own timeouts apply. Many slow clients cost a list entry each: the
 * thread never waits on one connection.
 *
 * Connection limit: conn_count counts the connections being peeked at plus those
 * libmicrohttpd holds (MHD_OPTION_NOTIFY_CONNECTION reports the closed ones). At the limit the
 * thread stops polling the listening socket, so new connections wait in the kernel's backlog
 * exactly as they did with libmicrohttpd's own listener; a freed slot wakes the thread
 * through the eventfd. Upgrades handed over stop counting here: they are the WebSocket
 * transport's.
 *
 * Threads: the accept thread owns the listening socket and every gs_http_peek; stop() joins
 * it before touching either. gs_http_notify_connection runs on libmicrohttpd's threads and
 * touches only atomics and the eventfd.
 */
#include "http_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define GS_HTTP_PEEK_MAX 8192  /* bytes of a request head looked at before deciding */
#define ACC_EVENTS 64          /* epoll events per wake-up */
#define ACC_BATCH 64           /* accepts per wake-up, so peeks and wakes are not starved */
#define ACC_BACKOFF_MS 100     /* accept paused this long when file descriptors run out */
#define ACC_WARN_EVERY_MS 5000 /* at most one "out of file descriptors" warning per period */

struct gs_http_peek {
    int fd;
    int in_epoll; /* registered in acc_epoll_fd */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint64_t deadline_ms; /* monotonic; entries are in deadline order (fixed timeout) */
    size_t seen;          /* bytes the last peek saw */
    gs_http_peek *prev, *next;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void format_addr(const struct sockaddr_storage *ss, char *out, size_t size)
{
    char ip[INET6_ADDRSTRLEN];
    snprintf(out, size, "-");
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)ss;
        if (inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip))
            snprintf(out, size, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)ss;
        if (inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip))
            snprintf(out, size, "[%s]:%u", ip, (unsigned)ntohs(a->sin6_port));
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The request head                                                                           */

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/** One header line (no line end): is it `Upgrade:` with a `websocket` token? */
static int line_is_websocket_upgrade(const char *p, size_t len)
{
    const char *colon = memchr(p, ':', len);
    if (!colon)
        return 0;
    size_t nlen = (size_t)(colon - p);
    while (nlen && is_ows(p[nlen - 1]))
        nlen--;
    if (nlen != 7 || strncasecmp(p, "upgrade", 7) != 0)
        return 0;
    const char *v = colon + 1, *end = p + len;
    while (v < end) {
        const char *comma = memchr(v, ',', (size_t)(end - v));
        const char *te = comma ? comma : end;
        const char *ts = v;
        while (ts < te && is_ows(*ts))
            ts++;
        const char *tz = te;
        while (tz > ts && is_ows(tz[-1]))
            tz--;
        if (tz - ts == 9 && strncasecmp(ts, "websocket", 9) == 0)
            return 1;
        v = comma ? comma + 1 : end;
    }
    return 0;
}

enum gs_http_head gs_http_classify_head(const char *buf, size_t n, size_t max)
{
    size_t m = n < 4 ? n : 4;
    if (memcmp(buf, "GET ", m) != 0)
        return GS_HTTP_HEAD_PLAIN;
    if (n < 4)
        return GS_HTTP_HEAD_MORE;
    const char *p = buf, *lim = buf + n;
    const char *nl = memchr(p, '\n', n);
    int upgrade = 0;
    while (nl) {
        p = nl + 1; /* the first line is the request line */
        nl = memchr(p, '\n', (size_t)(lim - p));
        if (!nl)
            break;
        size_t len = (size_t)(nl - p);
        if (len && p[len - 1] == '\r')
            len--;
        if (len == 0) /* the empty line: the head is complete */
            return upgrade ? GS_HTTP_HEAD_UPGRADE : GS_HTTP_HEAD_PLAIN;
        if (!upgrade && line_is_websocket_upgrade(p, len))
            upgrade = 1;
    }
    /* Incomplete. A head that fills the whole peek is libmicrohttpd's to refuse (431). */
    return n >= max ? GS_HTTP_HEAD_PLAIN : GS_HTTP_HEAD_MORE;
}

/* ------------------------------------------------------------------------------------------ */
/* Connections being peeked at (accept thread only)                                           */

static void peek_unlink(gs_http *h, gs_http_peek *pk)
{
    if (pk->in_epoll) {
        (void)epoll_ctl(h->acc_epoll_fd, EPOLL_CTL_DEL, pk->fd, NULL);
        pk->in_epoll = 0;
    }
    if (pk->prev)
        pk->prev->next = pk->next;
    else
        h->acc_head = pk->next;
    if (pk->next)
        pk->next->prev = pk->prev;
    else
        h->acc_tail = pk->prev;
    pk->prev = pk->next = NULL;
}

/** Close a connection we still own (it is gone, or it sent nothing in time). */
static void peek_drop(gs_http *h, gs_http_peek *pk, const char *why)
{
    peek_unlink(h, pk);
    close(pk->fd);
    atomic_fetch_sub(&h->conn_count, 1);
    if (why) {
        char remote[64];
        format_addr(&pk->addr, remote, sizeof remote);
        h->host->log(h->host, GS_LOG_DEBUG, GS_HTTP_COMPONENT, "closed a connection from %s: %s",
                     remote, why);
    }
    h->host->free(pk);
}

/** Give the connection to libmicrohttpd. It owns (and closes) the fd from here on. */
static void to_daemon(gs_http *h, gs_http_peek *pk)
{
    peek_unlink(h, pk);
    if (MHD_add_connection(h->daemon, pk->fd, (const struct sockaddr *)&pk->addr, pk->addrlen) !=
        MHD_YES) {
        /* Refused (per-address limit, out of memory); MHD closed the socket and said why. */
        char remote[64];
        format_addr(&pk->addr, remote, sizeof remote);
        atomic_fetch_sub(&h->conn_count, 1);
        h->host->log(h->host, GS_LOG_DEBUG, GS_HTTP_COMPONENT,
                     "libmicrohttpd refused the connection from %s", remote);
    }
    h->host->free(pk);
}

/** A WebSocket upgrade: to the transport that serves them, or to libmicrohttpd if none. */
static void to_upgrade(gs_http *h, gs_http_peek *pk)
{
    const gs_host *host = h->host;
    peek_unlink(h, pk);
    gs_error err;
    memset(&err, 0, sizeof err);
    err.struct_size = sizeof err;
    gs_status st =
        host->upgrade_handoff(host, pk->fd, (const struct sockaddr *)&pk->addr, pk->addrlen, &err);
    if (st == GS_DECLINED) {
        /* Nobody serves WebSocket: it is an ordinary GET (the core answers it). */
        to_daemon(h, pk);
        return;
    }
    /* GS_OK or a failure: either way the fd is the other transport's now (ABI 1.1). */
    atomic_fetch_sub(&h->conn_count, 1);
    if (st != GS_OK) {
        char remote[64];
        format_addr(&pk->addr, remote, sizeof remote);
        host->log(host, GS_LOG_WARN, GS_HTTP_COMPONENT,
                  "the WebSocket upgrade from %s could not be handed over: %s%s%s", remote,
                  err.code[0] ? err.code : "", err.code[0] ? ": " : "",
                  err.message[0] ? err.message : "no reason given");
    }
    host->free(pk);
}

/**
 * Look at what the connection sent and hand it on when that decides it. `final`: no more
 * bytes will come (peer closed its side, or the deadline passed). Returns 1 when the
 * connection left the list, 0 when it waits for more.
 */
static int peek_decide(gs_http *h, gs_http_peek *pk, int final)
{
    char buf[GS_HTTP_PEEK_MAX];
    ssize_t r;
    do
        r = recv(pk->fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!final)
            return 0;
        if (pk->seen == 0)
            peek_drop(h, pk, "it sent nothing in time");
        else
            to_daemon(h, pk); /* peeked bytes stay queued, so this is not expected */
        return 1;
    }
    if (r < 0) {
        peek_drop(h, pk, "read error before its request");
        return 1;
    }
    if (r == 0) {
        peek_drop(h, pk, NULL); /* closed before sending a byte: nothing to log */
        return 1;
    }
    pk->seen = (size_t)r;
    enum gs_http_head kind = gs_http_classify_head(buf, (size_t)r, sizeof buf);
    if (kind == GS_HTTP_HEAD_MORE && !final)
        return 0;
    if (kind == GS_HTTP_HEAD_UPGRADE)
        to_upgrade(h, pk);
    else
        to_daemon(h, pk); /* plain, or an unfinished head: libmicrohttpd answers or times out */
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* The listening socket                                                                       */

static void listen_arm(gs_http *h, int on)
{
    struct epoll_event ev = {.events = on ? EPOLLIN : 0, .data.ptr = &h->acc_listen_fd};
    (void)epoll_ctl(h->acc_epoll_fd, EPOLL_CTL_MOD, h->acc_listen_fd, &ev);
}

static int at_limit(gs_http *h)
{
    return h->conn_limit > 0 && atomic_load(&h->conn_count) >= h->conn_limit;
}

/** Stop polling the listening socket until a slot frees (gs_http_notify_connection wakes). */
static void pause_at_limit(gs_http *h)
{
    listen_arm(h, 0);
    atomic_store(&h->acc_paused, 1);
    /* A slot may have freed between the check and the flag: look again, so no wake is lost. */
    if (!at_limit(h)) {
        atomic_store(&h->acc_paused, 0);
        listen_arm(h, 1);
    }
}

static void accept_some(gs_http *h)
{
    const gs_host *host = h->host;
    for (int i = 0; i < ACC_BATCH; i++) {
        if (at_limit(h)) {
            pause_at_limit(h);
            return;
        }
        gs_http_peek tmp;
        memset(&tmp, 0, sizeof tmp);
        tmp.addrlen = sizeof tmp.addr;
        int fd = accept4(h->acc_listen_fd, (struct sockaddr *)&tmp.addr, &tmp.addrlen,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EINTR || e == ECONNABORTED || e == EPROTO || e == EPERM)
                continue; /* that client is gone; others may wait */
            if (e == EAGAIN || e == EWOULDBLOCK)
                return;
            /* Out of descriptors or memory: the socket stays readable, so back off instead
             * of spinning, and say so (rarely). */
            uint64_t now = mono_ms();
            h->acc_resume_ms = now + ACC_BACKOFF_MS;
            listen_arm(h, 0);
            if (!h->acc_full_logged_ms || now - h->acc_full_logged_ms >= ACC_WARN_EVERY_MS) {
                h->acc_full_logged_ms = now;
                char why[128];
                gs_http_errno_text(e, why, sizeof why);
                host->log(host, GS_LOG_WARN, GS_HTTP_COMPONENT,
                          "cannot accept connections on %s: %s; retrying in %d ms", h->addr_text,
                          why, ACC_BACKOFF_MS);
            }
            return;
        }
        /* Replies and pushed WebSocket frames are small: send them now, not after Nagle. */
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        atomic_fetch_add(&h->conn_count, 1);
        gs_http_peek *pk = host->alloc(sizeof *pk);
        if (!pk) {
            /* No memory to wait for its head: libmicrohttpd takes it as it is (its memory is
             * its own, so it can still answer, 500 if the core's allocator keeps failing). */
            if (MHD_add_connection(h->daemon, fd, (const struct sockaddr *)&tmp.addr,
                                   tmp.addrlen) != MHD_YES)
                atomic_fetch_sub(&h->conn_count, 1);
            continue;
        }
        *pk = tmp;
        pk->fd = fd;
        pk->deadline_ms = mono_ms() + (uint64_t)h->cfg.peek_timeout_ms;
        pk->prev = h->acc_tail;
        if (h->acc_tail)
            h->acc_tail->next = pk;
        else
            h->acc_head = pk;
        h->acc_tail = pk;

        /* The request is often there already; otherwise wait for it (edge-triggered: every
         * new segment wakes us, although the peeked bytes stay queued). */
        if (peek_decide(h, pk, 0))
            continue;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = pk};
        if (epoll_ctl(h->acc_epoll_fd, EPOLL_CTL_ADD, fd, &ev) == 0)
            pk->in_epoll = 1;
        else
            to_daemon(h, pk); /* cannot wait for it here: libmicrohttpd reads it itself */
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The thread                                                                                 */

static int next_timeout_ms(gs_http *h)
{
    uint64_t now = mono_ms(), due = 0;
    if (h->acc_head)
        due = h->acc_head->deadline_ms;
    if (h->acc_resume_ms && (!due || h->acc_resume_ms < due))
        due = h->acc_resume_ms;
    if (!due)
        return -1;
    return due <= now ? 0 : (int)(due - now > 60000 ? 60000 : due - now);
}

static void *acceptor_main(void *arg)
{
    gs_http *h = arg;
    struct epoll_event ev[ACC_EVENTS];
    while (!atomic_load(&h->acc_stop)) {
        int n = epoll_wait(h->acc_epoll_fd, ev, ACC_EVENTS, next_timeout_ms(h));
        if (n < 0 && errno != EINTR) {
            char why[128];
            gs_http_errno_text(errno, why, sizeof why);
            h->host->log(h->host, GS_LOG_ERROR, GS_HTTP_COMPONENT,
                         "the accept thread on %s failed (epoll_wait: %s); retrying", h->addr_text,
                         why);
            usleep(100 * 1000);
            continue;
        }
        for (int i = 0; i < n; i++) {
            void *tag = ev[i].data.ptr;
            if (tag == &h->acc_wake_fd) {
                uint64_t v;
                (void)!read(h->acc_wake_fd, &v, sizeof v);
                if (atomic_load(&h->acc_paused) && !at_limit(h)) {
                    atomic_store(&h->acc_paused, 0);
                    if (!h->acc_resume_ms)
                        listen_arm(h, 1);
                }
            } else if (tag == &h->acc_listen_fd) {
                accept_some(h);
            } else {
                uint32_t e = ev[i].events;
                (void)peek_decide(h, tag, (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0);
            }
        }
        uint64_t now = mono_ms();
        while (h->acc_head && h->acc_head->deadline_ms <= now)
            (void)peek_decide(h, h->acc_head, 1);
        if (h->acc_resume_ms && h->acc_resume_ms <= now) {
            h->acc_resume_ms = 0;
            if (!atomic_load(&h->acc_paused))
                listen_arm(h, 1);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Lifecycle                                                                                  */

#define ACC_FAIL(h, err, code, ...)                                                                \
    ((err) ? (h)->host->error_set((err), 0, (code), __VA_ARGS__) : (void)0, GS_ERROR)

gs_status gs_http_acceptor_listen(gs_http *h, gs_error *err)
{
    char why[128];
    int fd = socket(h->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        gs_http_errno_text(errno, why, sizeof why);
        return ACC_FAIL(h, err, "INTERNAL_ERROR", "cannot listen on %s: %s", h->addr_text, why);
    }
    int on = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (h->family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    /* Wake for a connection once its first bytes are in: the first peek then usually decides
     * it at once. A silent one is still accepted after about a second, then timed out. */
    int defer = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof defer);
    socklen_t len =
        h->family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, (const struct sockaddr *)&h->addr, len) != 0 || listen(fd, SOMAXCONN) != 0) {
        int e = errno;
        close(fd);
        gs_http_errno_text(e, why, sizeof why);
        int config_fault = e == EADDRNOTAVAIL || e == EACCES || e == EAFNOSUPPORT;
        return ACC_FAIL(h, err, config_fault ? "INVALID_CONFIG" : "INTERNAL_ERROR",
                        "cannot listen on %s: %s", h->addr_text, why);
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    int port = 0;
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0)
        port = bound.ss_family == AF_INET6
                   ? ntohs(((struct sockaddr_in6 *)(void *)&bound)->sin6_port)
                   : ntohs(((struct sockaddr_in *)(void *)&bound)->sin_port);
    h->acc_listen_fd = fd;
    h->bound_port = port;
    return GS_OK;
}

gs_status gs_http_acceptor_start(gs_http *h, gs_error *err)
{
    char why[128];
    atomic_store(&h->acc_stop, 0);
    atomic_store(&h->acc_paused, 0);
    atomic_store(&h->conn_count, 0);
    h->acc_head = h->acc_tail = NULL;
    h->acc_resume_ms = 0;
    h->acc_epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    h->acc_wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int ok = h->acc_epoll_fd >= 0 && h->acc_wake_fd >= 0;
    if (ok) {
        struct epoll_event l = {.events = EPOLLIN, .data.ptr = &h->acc_listen_fd};
        struct epoll_event w = {.events = EPOLLIN, .data.ptr = &h->acc_wake_fd};
        ok = epoll_ctl(h->acc_epoll_fd, EPOLL_CTL_ADD, h->acc_listen_fd, &l) == 0 &&
             epoll_ctl(h->acc_epoll_fd, EPOLL_CTL_ADD, h->acc_wake_fd, &w) == 0;
    }
    int e = errno;
    if (ok && (e = pthread_create(&h->acc_thread, NULL, acceptor_main, h)) == 0) {
        h->acc_running = 1;
        return GS_OK;
    }
    gs_http_errno_text(e, why, sizeof why);
    gs_http_acceptor_stop(h);
    gs_http_acceptor_close(h);
    return ACC_FAIL(h, err, "INTERNAL_ERROR", "cannot start the accept thread on %s: %s",
                    h->addr_text, why);
}

void gs_http_acceptor_stop(gs_http *h)
{
    if (h->acc_running) {
        atomic_store(&h->acc_stop, 1);
        uint64_t one = 1;
        (void)!write(h->acc_wake_fd, &one, sizeof one);
        pthread_join(h->acc_thread, NULL);
        h->acc_running = 0;
    }
    while (h->acc_head)
        peek_drop(h, h->acc_head, "the server is stopping");
    if (h->acc_listen_fd >= 0)
        close(h->acc_listen_fd);
    h->acc_listen_fd = -1;
    if (h->acc_epoll_fd >= 0)
        close(h->acc_epoll_fd);
    h->acc_epoll_fd = -1;
}

void gs_http_acceptor_close(gs_http *h)
{
    if (h->acc_wake_fd >= 0)
        close(h->acc_wake_fd);
    h->acc_wake_fd = -1;
}

void gs_http_notify_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                               enum MHD_ConnectionNotificationCode toe)
{
    gs_http *h = cls;
    (void)connection;
    (void)socket_context;
    if (toe != MHD_CONNECTION_NOTIFY_CLOSED)
        return;
    atomic_fetch_sub(&h->conn_count, 1);
    if (atomic_load(&h->acc_paused)) {
        uint64_t one = 1;
        (void)!write(h->acc_wake_fd, &one, sizeof one);
    }
}
