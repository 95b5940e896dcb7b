/*
 * tcp transport I/O thread: one epoll loop per started instance. It accepts on the listener,
 * dials the configured peers (exponential backoff from reconnect_min_ms to reconnect_max_ms
 * while no connection to that id is up), runs every connection's state machine and timers,
 * and flushes queues that send() filled (send() wakes it through an eventfd). At stop it
 * closes every connection (a close frame tells each peer why) without calling the core.
 */
#include "tcp_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* Open connections (any state) above this are refused at accept. */
#define MAX_CONNS 1024
/* How long accepting pauses after the process ran out of descriptors. */
#define ACCEPT_PAUSE_MS 500

uint64_t gs_tcp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int gs_tcp_on_io_thread(const gs_tcp_inst *t)
{
    return t->thread_live && pthread_equal(pthread_self(), t->thread);
}

static int peer_registered(gs_tcp_inst *t, const char *id)
{
    int found = 0;
    pthread_mutex_lock(&t->lock);
    for (gs_tcp_conn *c = t->conns; c && !found; c = c->next)
        found = c->registered && strcmp(c->peer_id, id) == 0;
    pthread_mutex_unlock(&t->lock);
    return found;
}

static size_t conn_count(gs_tcp_inst *t)
{
    size_t n = 0;
    pthread_mutex_lock(&t->lock);
    for (gs_tcp_conn *c = t->conns; c; c = c->next)
        n++;
    pthread_mutex_unlock(&t->lock);
    return n;
}

static void dial(gs_tcp_inst *t, gs_tcp_dial *d, uint64_t now)
{
    const gs_host *host = t->host;
    char addr[80] = "", why[256];
    int fd = gs_tcp_connect_start(d->host, d->port, addr, sizeof addr, why, sizeof why);
    gs_tcp_conn *c = fd >= 0 ? gs_tcp_conn_new(t, fd, d, GS_TCP_C_CONNECTING, addr) : NULL;
    if (c) {
        d->conn = c;
        return;
    }
    if (fd >= 0)
        snprintf(why, sizeof why, "out of memory or descriptors for a connection");
    host->log(host, d->failing++ ? GS_LOG_DEBUG : GS_LOG_WARN, GS_TCP_COMPONENT,
              "node '%s': cannot reach peer '%s' at %s: %s; retrying in %" PRIu64 " ms", t->node_id,
              d->id, d->address, why, d->backoff_ms);
    d->next_ms = now + d->backoff_ms;
    d->backoff_ms =
        d->backoff_ms * 2 > t->reconnect_max_ms ? t->reconnect_max_ms : d->backoff_ms * 2;
}

static uint64_t accept_all(gs_tcp_inst *t, uint64_t now)
{
    const gs_host *host = t->host;
    for (int i = 0; i < 64; i++) {
        char addr[80] = "", why[256];
        int fd = gs_tcp_accept(t->lfd, addr, sizeof addr, why, sizeof why);
        if (fd == -1)
            return 0;
        if (fd == -2) {
            /* Out of descriptors, most likely: the listener would fire again at once. */
            host->log(host, GS_LOG_WARN, GS_TCP_COMPONENT, "node '%s': %s; not accepting for %d ms",
                      t->node_id, why, ACCEPT_PAUSE_MS);
            epoll_ctl(t->epfd, EPOLL_CTL_DEL, t->lfd, NULL);
            return now + ACCEPT_PAUSE_MS;
        }
        if (conn_count(t) >= MAX_CONNS) {
            host->log(host, GS_LOG_WARN, GS_TCP_COMPONENT,
                      "node '%s': refused a connection from %s: %d connections are open",
                      t->node_id, addr, MAX_CONNS);
            close(fd);
            continue;
        }
        gs_tcp_conn *c = gs_tcp_conn_new(t, fd, NULL, GS_TCP_C_HELLO, addr);
        if (c)
            gs_tcp_conn_start(c);
    }
    return 0;
}

/* Write what send() queued on connections not already waiting for EPOLLOUT. */
static void flush_all(gs_tcp_inst *t)
{
    for (gs_tcp_conn *c = t->conns, *next; c; c = next) {
        next = c->next;
        if (c->state != GS_TCP_C_HELLO && c->state != GS_TCP_C_ACTIVE)
            continue;
        if (c->epoll_events & EPOLLOUT)
            continue;
        pthread_mutex_lock(&t->lock);
        int queued = c->qhead != NULL;
        pthread_mutex_unlock(&t->lock);
        if (queued || c->pend || c->whead)
            gs_tcp_conn_flush(c);
    }
}

static void close_all(gs_tcp_inst *t, const char *reason)
{
    /* Only this thread changes the list, so walking it here without the lock is safe. */
    while (t->conns)
        gs_tcp_conn_close(t->conns, GS_LOG_DEBUG, reason, 1);
    gs_tcp_conn_bury(t);
    for (size_t i = 0; i < t->ndials; i++)
        t->dials[i].conn = NULL;
}

static void *io_main(void *arg)
{
    gs_tcp_inst *t = arg;
    struct epoll_event evs[64];
    uint64_t listen_resume = 0;
    while (!atomic_load(&t->stopping)) {
        uint64_t now = gs_tcp_now_ms();
        uint64_t next = now + 1000;
        if (listen_resume && now >= listen_resume) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &t->listen_h};
            epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->lfd, &ev);
            listen_resume = 0;
        }
        if (listen_resume && listen_resume < next)
            next = listen_resume;
        for (size_t i = 0; i < t->ndials; i++) {
            gs_tcp_dial *d = &t->dials[i];
            if (d->conn)
                continue;
            if (now >= d->next_ms) {
                if (peer_registered(t, d->id))
                    d->next_ms = now + t->heartbeat_ms; /* it dialled us: nothing to do */
                else
                    dial(t, d, now);
            }
            if (!d->conn && d->next_ms < next)
                next = d->next_ms;
        }
        for (gs_tcp_conn *c = t->conns, *n; c; c = n) {
            n = c->next;
            if (c->read_more)
                gs_tcp_conn_read(c);
        }
        for (gs_tcp_conn *c = t->conns, *n; c; c = n) {
            n = c->next;
            uint64_t due = gs_tcp_conn_tick(c, now);
            if (due < next)
                next = due;
        }
        flush_all(t);
        gs_tcp_conn_bury(t);
        for (gs_tcp_conn *c = t->conns; c; c = c->next)
            if (c->read_more)
                next = now; /* more to read: do not sleep */

        now = gs_tcp_now_ms();
        int timeout = next > now ? (int)(next - now) : 0;
        int n = epoll_wait(t->epfd, evs, (int)(sizeof evs / sizeof evs[0]), timeout);
        if (n < 0 && errno != EINTR) {
            t->host->log(t->host, GS_LOG_ERROR, GS_TCP_COMPONENT,
                         "node '%s': epoll_wait: %s; the transport stops", t->node_id,
                         strerror(errno));
            break;
        }
        now = gs_tcp_now_ms();
        for (int i = 0; i < n && !atomic_load(&t->stopping); i++) {
            gs_tcp_handle *h = evs[i].data.ptr;
            if (h->kind == GS_TCP_H_WAKE) {
                uint64_t v;
                ssize_t r = read(t->wakefd, &v, sizeof v);
                (void)r;
                atomic_store(&t->wake_pending, 0);
            } else if (h->kind == GS_TCP_H_LISTEN) {
                uint64_t pause = accept_all(t, now);
                if (pause)
                    listen_resume = pause;
            } else {
                gs_tcp_conn_event((gs_tcp_conn *)h, evs[i].events);
            }
        }
        gs_tcp_conn_bury(t);
    }
    close_all(t, "the node is stopping");
    pthread_mutex_lock(&t->lock);
    t->running = 0; /* also when the loop ended on an epoll error: send() must say so */
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

gs_status gs_tcp_loop_start(gs_tcp_inst *t, gs_error *err)
{
    const gs_host *host = t->host;
    char why[256];
    t->epfd = epoll_create1(EPOLL_CLOEXEC);
    t->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    t->lfd = -1;
    if (t->epfd < 0 || t->wakefd < 0) {
        host->error_set(err, 0, "TRANSPORT_ERROR", "tcp transport: epoll/eventfd: %s",
                        strerror(errno));
        goto fail;
    }
    t->wake_h.kind = GS_TCP_H_WAKE;
    t->listen_h.kind = GS_TCP_H_LISTEN;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &t->wake_h};
    if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->wakefd, &ev) != 0) {
        host->error_set(err, 0, "TRANSPORT_ERROR", "tcp transport: epoll: %s", strerror(errno));
        goto fail;
    }
    if (t->listening) {
        int port = t->port ? t->port : t->bound_port;
        int bound = 0;
        t->lfd = gs_tcp_listen(t->bind_host, port, &bound, why, sizeof why);
        if (t->lfd < 0) {
            host->error_set(err, 0, "TRANSPORT_ERROR",
                            "tcp transport of node '%s': %s (is another process using the "
                            "port? set `port` to a free one)",
                            t->node_id, why);
            goto fail;
        }
        t->bound_port = bound;
        ev.data.ptr = &t->listen_h;
        if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->lfd, &ev) != 0) {
            host->error_set(err, 0, "TRANSPORT_ERROR", "tcp transport: epoll: %s", strerror(errno));
            goto fail;
        }
        host->log(host, GS_LOG_INFO, GS_TCP_COMPONENT, "node '%s' (%s) listening on %s%s%s:%d, %s",
                  t->node_id, t->role, strchr(t->bind_host, ':') ? "[" : "", t->bind_host,
                  strchr(t->bind_host, ':') ? "]" : "", bound,
                  t->insecure ? "plaintext (insecure: true)"
                              : "TLS 1.3 with mutual authentication");
    }
    uint64_t now = gs_tcp_now_ms();
    for (size_t i = 0; i < t->ndials; i++) {
        t->dials[i].conn = NULL;
        t->dials[i].next_ms = now;
        t->dials[i].backoff_ms = t->reconnect_min_ms;
        t->dials[i].failing = 0;
    }
    atomic_store(&t->stopping, 0);
    atomic_store(&t->wake_pending, 0);
    pthread_mutex_lock(&t->lock);
    t->running = 1;
    pthread_mutex_unlock(&t->lock);
    int rc = pthread_create(&t->thread, NULL, io_main, t);
    if (rc != 0) {
        pthread_mutex_lock(&t->lock);
        t->running = 0;
        pthread_mutex_unlock(&t->lock);
        host->error_set(err, 0, "TRANSPORT_ERROR", "tcp transport: cannot start its thread: %s",
                        strerror(rc));
        goto fail;
    }
    t->thread_live = 1;
    return GS_OK;
fail:
    if (t->lfd >= 0)
        close(t->lfd);
    if (t->wakefd >= 0)
        close(t->wakefd);
    if (t->epfd >= 0)
        close(t->epfd);
    t->lfd = t->wakefd = t->epfd = -1;
    return GS_ERROR;
}

void gs_tcp_loop_stop(gs_tcp_inst *t)
{
    pthread_mutex_lock(&t->lock);
    t->running = 0;
    if (t->thread_live) {
        atomic_store(&t->stopping, 1);
        uint64_t one = 1;
        ssize_t w = write(t->wakefd, &one, sizeof one);
        (void)w;
    }
    pthread_mutex_unlock(&t->lock);
    if (!t->thread_live || gs_tcp_on_io_thread(t))
        return;
    pthread_join(t->thread, NULL);
    t->thread_live = 0;
    if (t->lfd >= 0)
        close(t->lfd);
    if (t->wakefd >= 0)
        close(t->wakefd);
    if (t->epfd >= 0)
        close(t->epfd);
    t->lfd = t->wakefd = t->epfd = -1;
}
