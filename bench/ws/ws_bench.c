/*
 * ws_bench: a small load tool for gatestream's WebSocket protocol (spec 05), with its own
 * minimal RFC 6455 client over raw sockets (Python is too slow to load a server).
 *
 *   ws_bench --select  [--host H] [--port P] [--db ID] [--inflight N] [--seconds S] [--rows R]
 *       One WebSocket, N point selects in flight: every answer sends the next request.
 *       Loads R rows into bench_users first (load messages). Reports selects/s and the
 *       request latency percentiles.
 *   ws_bench --latency [--host H] [--port P] [--sub-port Q] [--db ID] [--rate W] [--seconds S]
 *       One connection subscribes to bench_events; another inserts W rows/s (paced, one
 *       execute each). For every row the tool records when it sent the insert, when the
 *       insert's result came back (the commit acknowledged) and when the subscriber received
 *       the change. Reports the insert-to-change and ack-to-change latency percentiles
 *       (p50/p99/max) and checks that every committed row arrived exactly once.
 *       --sub-port Q subscribes on another node (same host) than the one written to, e.g. a
 *       replica of the primary on P: the table is created on P, the tool waits (at most 30 s)
 *       until it has replicated to Q, and ack-to-change is then the replica lag as a client
 *       sees it (the primary's acknowledgement -> the replica's change event).
 *
 * Not installed; built with the tree when GS_BENCH is ON. Exit 0 on a clean run.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *opt_host = "127.0.0.1";
static int opt_port = 9876;
static int opt_sub_port = 0; /* 0: the same as opt_port */
static const char *opt_db = "main";
static int opt_inflight = 64;
static double opt_seconds = 10;
static int opt_rows = 100000;
static int opt_rate = 1000;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *what)
{
    fprintf(stderr, "ws_bench: %s\n", what);
    exit(1);
}

/* ---- a minimal WebSocket client ---- */

typedef struct wsc {
    int fd;
    unsigned char *buf; /* received, not yet parsed */
    size_t len, cap;
    unsigned char *out; /* frame being built */
    size_t out_cap;
} wsc;

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die("send failed (the server closed the connection?)");
        }
        c += w;
        n -= (size_t)w;
    }
}

static void ws_connect(wsc *c, int port_no, const char *path)
{
    memset(c, 0, sizeof *c);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    char port[16];
    snprintf(port, sizeof port, "%d", port_no);
    if (getaddrinfo(opt_host, port, &hints, &ai) != 0)
        die("cannot resolve host");
    c->fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (c->fd < 0 || connect(c->fd, ai->ai_addr, ai->ai_addrlen) != 0)
        die("cannot connect");
    freeaddrinfo(ai);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: "
                     "Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sirannon.v1\r\n\r\n",
                     path, opt_host, port_no);
    send_all(c->fd, req, (size_t)n);
    c->cap = 1 << 20;
    c->buf = malloc(c->cap);
    for (;;) {
        ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
        if (r <= 0)
            die("the server closed the connection during the handshake");
        c->len += (size_t)r;
        c->buf[c->len] = 0;
        char *end = strstr((char *)c->buf, "\r\n\r\n");
        if (!end)
            continue;
        if (strncmp((char *)c->buf, "HTTP/1.1 101", 12) != 0) {
            fprintf(stderr, "ws_bench: upgrade refused:\n%s\n", (char *)c->buf);
            exit(1);
        }
        size_t head = (size_t)(end + 4 - (char *)c->buf);
        memmove(c->buf, c->buf + head, c->len - head);
        c->len -= head;
        return;
    }
}

/* Queue (not send) one masked frame into out. */
static size_t frame_build(wsc *c, int opcode, const char *data, size_t n)
{
    size_t need = n + 14;
    if (c->out_cap < need) {
        c->out_cap = need * 2;
        c->out = realloc(c->out, c->out_cap);
    }
    unsigned char *p = c->out;
    size_t h = 0;
    p[h++] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        p[h++] = (unsigned char)(0x80 | n);
    } else if (n < 65536) {
        p[h++] = 0x80 | 126;
        p[h++] = (unsigned char)(n >> 8);
        p[h++] = (unsigned char)n;
    } else {
        p[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            p[h++] = (unsigned char)((uint64_t)n >> (8 * i));
    }
    unsigned char mask[4];
    if (getrandom(mask, 4, 0) != 4)
        memset(mask, 0x5a, 4);
    memcpy(p + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < n; i++)
        p[h + i] = (unsigned char)data[i] ^ mask[i & 3];
    return h + n;
}

static void ws_send(wsc *c, const char *data, size_t n)
{
    size_t len = frame_build(c, 1, data, n);
    send_all(c->fd, c->out, len);
}

/* Parse one complete message out of the buffer: 1 with *msg (NUL-terminated in place until
 * the next call), 0 when more bytes are needed. Pings are answered; a close ends the run. */
static int ws_next(wsc *c, char **msg, size_t *msg_len, size_t *consumed)
{
    for (;;) {
        if (c->len < 2)
            return 0;
        unsigned char *p = c->buf;
        int op = p[0] & 0x0F;
        uint64_t n = p[1] & 0x7F;
        size_t h = 2;
        if (n == 126) {
            if (c->len < 4)
                return 0;
            n = ((uint64_t)p[2] << 8) | p[3];
            h = 4;
        } else if (n == 127) {
            if (c->len < 10)
                return 0;
            n = 0;
            for (int i = 0; i < 8; i++)
                n = (n << 8) | p[2 + i];
            h = 10;
        }
        if (c->len < h + n) {
            if (h + n + 1 > c->cap) {
                c->cap = (size_t)(h + n + 1) * 2;
                c->buf = realloc(c->buf, c->cap);
            }
            return 0;
        }
        if (!(p[0] & 0x80))
            die("the server sent a fragmented message (this tool does not reassemble)");
        if (op == 0x8) {
            int code = n >= 2 ? (p[h] << 8 | p[h + 1]) : 0;
            fprintf(stderr, "ws_bench: the server closed the connection: %d %.*s\n", code,
                    (int)(n >= 2 ? n - 2 : 0), (char *)p + h + 2);
            exit(1);
        }
        if (op == 0x9) {
            size_t len = frame_build(c, 0xA, (char *)p + h, (size_t)n);
            send_all(c->fd, c->out, len);
            memmove(c->buf, c->buf + h + n, c->len - h - n);
            c->len -= h + n;
            continue;
        }
        if (op == 0xA) {
            memmove(c->buf, c->buf + h + n, c->len - h - n);
            c->len -= h + n;
            continue;
        }
        *msg = (char *)p + h;
        *msg_len = (size_t)n;
        *consumed = h + (size_t)n;
        return 1;
    }
}

static void ws_consume(wsc *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Read more bytes (blocking up to timeout_ms). 0 on timeout. */
static int ws_fill(wsc *c, int timeout_ms)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    int r = poll(&pfd, 1, timeout_ms);
    if (r <= 0)
        return 0;
    if (c->cap - c->len < 65536) {
        c->cap *= 2;
        c->buf = realloc(c->buf, c->cap);
    }
    ssize_t got = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (got <= 0)
        die("the server closed the connection");
    c->len += (size_t)got;
    return 1;
}

/* Block until one message; returns it as a new JSON value. */
static json_t *ws_recv_json(wsc *c, int timeout_ms)
{
    int64_t deadline = now_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        char *m;
        size_t n, used;
        if (ws_next(c, &m, &n, &used)) {
            json_error_t je;
            json_t *j = json_loadb(m, n, 0, &je);
            ws_consume(c, used);
            if (!j)
                die("the server sent a frame that is not JSON");
            return j;
        }
        int left = (int)((deadline - now_us()) / 1000);
        if (left <= 0 || !ws_fill(c, left))
            die("no answer in time");
    }
}

static json_t *request(wsc *c, json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT);
    ws_send(c, text, strlen(text));
    free(text);
    json_decref(msg);
    for (;;) {
        json_t *j = ws_recv_json(c, 60000);
        const char *type = json_string_value(json_object_get(j, "type"));
        if (type &&
            (!strcmp(type, "result") || !strcmp(type, "error") || !strcmp(type, "subscribed"))) {
            if (!strcmp(type, "error")) {
                char *t = json_dumps(j, 0);
                fprintf(stderr, "ws_bench: %s\n", t);
                exit(1);
            }
            return j;
        }
        json_decref(j);
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void percentiles(const char *what, int64_t *v, size_t n)
{
    if (!n) {
        printf("%s: no samples\n", what);
        return;
    }
    qsort(v, n, sizeof *v, cmp_i64);
    printf("%s: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, max %.3f ms (%zu samples)\n", what,
           v[n / 2] / 1000.0, v[n * 9 / 10] / 1000.0, v[n * 99 / 100] / 1000.0, v[n - 1] / 1000.0,
           n);
}

/* ---- --select ---- */

static void load_users(wsc *c)
{
    json_decref(request(c, json_pack("{s:s,s:s,s:s}", "type", "execute", "id", "mk", "sql",
                                     "CREATE TABLE IF NOT EXISTS bench_users (id INTEGER PRIMARY "
                                     "KEY, name TEXT NOT NULL, email TEXT NOT NULL, age INTEGER "
                                     "NOT NULL, bio TEXT)")));
    json_t *r = request(c, json_pack("{s:s,s:s,s:s}", "type", "query", "id", "n", "sql",
                                     "SELECT count(*) AS n FROM bench_users"));
    json_int_t have = json_integer_value(json_object_get(
        json_array_get(json_object_get(json_object_get(r, "data"), "rows"), 0), "n"));
    json_decref(r);
    for (int start = (int)have + 1; start <= opt_rows; start += 5000) {
        json_t *batch = json_array();
        for (int i = start; i < start + 5000 && i <= opt_rows; i++) {
            char name[32], email[48], bio[48];
            snprintf(name, sizeof name, "user%d", i);
            snprintf(email, sizeof email, "user%d@example.com", i);
            snprintf(bio, sizeof bio, "Bio for user %d", i);
            json_array_append_new(batch,
                                  json_pack("[i,s,s,i,s]", i, name, email, 18 + i % 62, bio));
        }
        json_decref(request(
            c, json_pack("{s:s,s:s,s:s,s:o}", "type", "load", "id", "ld", "sql",
                         "INSERT INTO bench_users (id, name, email, age, bio) VALUES (?, ?, ?, "
                         "?, ?)",
                         "paramsBatch", batch)));
    }
}

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void send_select(wsc *c, unsigned slot, int64_t *sent_at)
{
    char msg[256];
    int id = (int)(rng() % (uint64_t)opt_rows) + 1;
    int n = snprintf(msg, sizeof msg,
                     "{\"type\":\"query\",\"id\":\"%u\",\"sql\":\"SELECT id, name, email, age, "
                     "bio FROM bench_users WHERE id = ?\",\"params\":[%d]}",
                     slot, id);
    sent_at[slot] = now_us();
    ws_send(c, msg, (size_t)n);
}

static int run_select(void)
{
    char path[300];
    snprintf(path, sizeof path, "/db/%s", opt_db);
    wsc c;
    ws_connect(&c, opt_port, path);
    load_users(&c);
    int64_t *sent_at = calloc((size_t)opt_inflight, sizeof *sent_at);
    size_t cap = 1 << 22, nlat = 0;
    int64_t *lat = malloc(cap * sizeof *lat);
    /* warm-up: one second */
    for (int phase = 0; phase < 2; phase++) {
        double secs = phase == 0 ? 1.0 : opt_seconds;
        uint64_t done = 0, errors = 0;
        nlat = 0;
        for (int i = 0; i < opt_inflight; i++)
            send_select(&c, (unsigned)i, sent_at);
        int64_t t0 = now_us(), end = t0 + (int64_t)(secs * 1e6);
        int outstanding = opt_inflight;
        int stopping = 0;
        while (outstanding > 0) {
            char *m;
            size_t n, used;
            while (ws_next(&c, &m, &n, &used)) {
                /* {"type":"result","id":"<slot>","data":{"rows":[...]}} */
                static const char pre[] = "{\"type\":\"result\",\"id\":\"";
                int ok = n > sizeof pre - 1 && memcmp(m, pre, sizeof pre - 1) == 0;
                if (!ok)
                    errors++;
                unsigned slot = (unsigned)strtoul(m + (ok ? sizeof pre - 1 : 0), NULL, 10);
                if (!ok) {
                    char *idp = memmem(m, n, "\"id\":\"", 6);
                    slot = idp ? (unsigned)strtoul(idp + 6, NULL, 10) : 0;
                    if (errors < 5)
                        fprintf(stderr, "ws_bench: unexpected frame: %.*s\n", (int)n, m);
                }
                ws_consume(&c, used);
                int64_t t = now_us();
                if (slot < (unsigned)opt_inflight) {
                    if (nlat < cap)
                        lat[nlat++] = t - sent_at[slot];
                    done++;
                    if (!stopping && t < end)
                        send_select(&c, slot, sent_at);
                    else {
                        stopping = 1;
                        outstanding--;
                    }
                }
            }
            if (outstanding > 0 && !ws_fill(&c, 10000))
                die("answers stopped arriving");
        }
        double el = (now_us() - t0) / 1e6;
        if (phase == 1) {
            printf("point selects over one WebSocket, %d in flight: %.0f selects/s (%llu in "
                   "%.2f s, %llu errors)\n",
                   opt_inflight, done / el, (unsigned long long)done, el,
                   (unsigned long long)errors);
            percentiles("select latency", lat, nlat);
        }
        if (errors)
            return 1;
    }
    close(c.fd);
    free(sent_at);
    free(lat);
    free(c.buf);
    free(c.out);
    return 0;
}

/* ---- --latency ---- */

/* Poll the node behind c (every 10 ms, at most timeout_s) until it holds the table: a
 * replica receives the primary's CREATE TABLE through replication, not at once. */
static void wait_for_table(wsc *c, const char *table, int timeout_s)
{
    int64_t deadline = now_us() + (int64_t)timeout_s * 1000000;
    for (;;) {
        json_t *r = request(c, json_pack("{s:s,s:s,s:s,s:[s]}", "type", "query", "id", "tbl", "sql",
                                         "SELECT count(*) AS n FROM sqlite_master WHERE "
                                         "type = 'table' AND name = ?",
                                         "params", table));
        json_int_t n = json_integer_value(json_object_get(
            json_array_get(json_object_get(json_object_get(r, "data"), "rows"), 0), "n"));
        json_decref(r);
        if (n > 0)
            return;
        if (now_us() > deadline)
            die("the table did not reach the subscriber's node in time (is it replicating?)");
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static int run_latency(void)
{
    char path[300];
    snprintf(path, sizeof path, "/db/%s", opt_db);
    wsc w, s;
    int sub_port = opt_sub_port ? opt_sub_port : opt_port;
    ws_connect(&w, opt_port, path);
    ws_connect(&s, sub_port, path);
    json_decref(request(&w, json_pack("{s:s,s:s,s:s}", "type", "execute", "id", "mk", "sql",
                                      "CREATE TABLE IF NOT EXISTS bench_events (k INTEGER "
                                      "PRIMARY KEY, payload TEXT)")));
    if (sub_port != opt_port)
        wait_for_table(&s, "bench_events", 30);
    json_decref(request(
        &s, json_pack("{s:s,s:s,s:s}", "type", "subscribe", "id", "sub", "table", "bench_events")));
    json_t *r = request(&w, json_pack("{s:s,s:s,s:s}", "type", "query", "id", "mx", "sql",
                                      "SELECT coalesce(max(k), 0) AS k FROM bench_events"));
    int64_t base = json_integer_value(json_object_get(
        json_array_get(json_object_get(json_object_get(r, "data"), "rows"), 0), "k"));
    json_decref(r);

    size_t total = (size_t)(opt_rate * opt_seconds);
    int64_t *sent = calloc(total, sizeof *sent), *acked = calloc(total, sizeof *acked);
    int64_t *got = calloc(total, sizeof *got);
    int *seen = calloc(total, sizeof *seen);
    size_t nsent = 0, nack = 0, nchg = 0, dup = 0, stray = 0;
    int64_t t0 = now_us(), interval = 1000000 / opt_rate;
    int64_t end_wait = 0;
    while (nack < total || nchg < total) {
        int64_t t = now_us();
        /* paced writer: catch up to the schedule */
        while (nsent < total && t >= t0 + (int64_t)nsent * interval) {
            char msg[200];
            int n = snprintf(msg, sizeof msg,
                             "{\"type\":\"execute\",\"id\":\"%zu\",\"sql\":\"INSERT INTO "
                             "bench_events (k, payload) VALUES (?, 'x')\",\"params\":[%lld]}",
                             nsent, (long long)(base + 1 + (int64_t)nsent));
            sent[nsent] = now_us();
            ws_send(&w, msg, (size_t)n);
            nsent++;
        }
        if (nsent == total && !end_wait)
            end_wait = now_us() + 30000000;
        if (end_wait && now_us() > end_wait)
            break;
        struct pollfd p[2] = {{.fd = w.fd, .events = POLLIN}, {.fd = s.fd, .events = POLLIN}};
        int64_t next = nsent < total ? t0 + (int64_t)nsent * interval : now_us() + 100000;
        /* Sleep until the next write is due, to the microsecond: a millisecond timeout would
         * round a sub-millisecond interval down to 0 and spin a core the nodes need. */
        int64_t wait_us = next - now_us();
        if (wait_us < 0)
            wait_us = 0;
        struct timespec wait_ts = {.tv_sec = wait_us / 1000000,
                                   .tv_nsec = (long)(wait_us % 1000000) * 1000};
        if (ppoll(p, 2, &wait_ts, NULL) < 0 && errno != EINTR)
            die("poll failed");
        for (int k = 0; k < 2; k++) {
            if (!(p[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            wsc *c = k ? &s : &w;
            ws_fill(c, 0);
            char *m;
            size_t n, used;
            while (ws_next(c, &m, &n, &used)) {
                int64_t now = now_us();
                json_t *j = json_loadb(m, n, 0, NULL);
                ws_consume(c, used);
                const char *type = json_string_value(json_object_get(j, "type"));
                if (!type) {
                    json_decref(j);
                    continue;
                }
                if (k == 0 && !strcmp(type, "result")) {
                    size_t i = strtoul(json_string_value(json_object_get(j, "id")), NULL, 10);
                    if (i < total)
                        acked[i] = now;
                    nack++;
                } else if (k == 0 && !strcmp(type, "error")) {
                    char *e = json_dumps(j, 0);
                    fprintf(stderr, "ws_bench: write failed: %s\n", e);
                    exit(1);
                } else if (k == 1 && !strcmp(type, "change")) {
                    json_t *row = json_object_get(json_object_get(j, "event"), "row");
                    int64_t key = json_integer_value(json_object_get(row, "k"));
                    int64_t i = key - base - 1;
                    if (i >= 0 && (size_t)i < total) {
                        if (seen[i]++)
                            dup++;
                        else {
                            got[i] = now;
                            nchg++;
                        }
                    } else {
                        stray++;
                    }
                }
                json_decref(j);
            }
        }
    }
    double el = (now_us() - t0) / 1e6;
    int64_t *e2e = malloc(total * sizeof *e2e), *a2c = malloc(total * sizeof *a2c);
    int64_t *w2a = malloc(total * sizeof *w2a);
    size_t ne = 0, na = 0, nw = 0, missing = 0;
    for (size_t i = 0; i < total; i++) {
        if (acked[i])
            w2a[nw++] = acked[i] - sent[i];
        if (!seen[i]) {
            missing++;
            continue;
        }
        e2e[ne++] = got[i] - sent[i];
        if (acked[i])
            a2c[na++] = got[i] - acked[i];
    }
    if (sub_port != opt_port)
        printf("writes to port %d, subscriber on port %d\n", opt_port, sub_port);
    printf("change feed latency at %d writes/s for %.0f s (%.2f s elapsed): %zu writes, %zu "
           "changes received, %zu missing, %zu duplicates, %zu stray\n",
           opt_rate, opt_seconds, el, nsent, nchg, missing, dup, stray);
    percentiles("insert sent -> change received (upper bound of commit-to-subscriber)", e2e, ne);
    percentiles("insert acknowledged -> change received (can be negative)", a2c, na);
    percentiles("insert sent -> insert acknowledged (the write itself)", w2a, nw);
    close(w.fd);
    close(s.fd);
    return missing || dup ? 1 : 0;
}

int main(int argc, char **argv)
{
    int mode = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--select"))
            mode = 1;
        else if (!strcmp(a, "--latency"))
            mode = 2;
        else if (!strcmp(a, "--host") && v)
            opt_host = argv[++i];
        else if (!strcmp(a, "--port") && v)
            opt_port = atoi(argv[++i]);
        else if (!strcmp(a, "--sub-port") && v)
            opt_sub_port = atoi(argv[++i]);
        else if (!strcmp(a, "--db") && v)
            opt_db = argv[++i];
        else if (!strcmp(a, "--inflight") && v)
            opt_inflight = atoi(argv[++i]);
        else if (!strcmp(a, "--seconds") && v)
            opt_seconds = atof(argv[++i]);
        else if (!strcmp(a, "--rows") && v)
            opt_rows = atoi(argv[++i]);
        else if (!strcmp(a, "--rate") && v)
            opt_rate = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: ws_bench --select|--latency [--host H] [--port P] "
                            "[--sub-port Q] [--db ID] [--inflight N] [--seconds S] [--rows R] "
                            "[--rate W]\n");
            return 2;
        }
    }
    if (opt_inflight < 1 || opt_rows < 1 || opt_rate < 1 || opt_seconds <= 0)
        die("--inflight, --rows, --rate and --seconds must be positive");
    if (opt_port < 1 || opt_port > 65535 || opt_sub_port < 0 || opt_sub_port > 65535)
        die("--port and --sub-port must be TCP ports (1..65535)");
    if (mode == 1)
        return run_select();
    if (mode == 2)
        return run_latency();
    fprintf(stderr, "ws_bench: pick --select or --latency\n");
    return 2;
}
