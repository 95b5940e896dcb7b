/*
 * transports/http against a fake host: dlopen gs_transport_http.so, hand it a gs_host that
 * this file fills, and talk to it over real sockets with a tiny HTTP/1.1 client (plain TCP or
 * GnuTLS).
 *
 * The fake core (api_submit) echoes what it was handed as JSON: method, path, query, body
 * length and byte sum, body_too_large, the X-Echo header. Paths decide how it answers:
 *   /async/...  from the fake core's worker thread, ~2 ms later
 *   /hold/...   from the worker thread once the test releases held requests
 *   anything    synchronously, inside api_submit
 * A request with body_too_large gets 413 PAYLOAD_TOO_LARGE.
 *
 * Every wait is a condition wait with a deadline, or a socket read with SO_RCVTIMEO.
 * Criterion runs each test in its own process, so the fake host is a process global.
 */
#include <gatestream/client_transport.h>

#include "plugin_test_host.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ========================================================================================== */
/* The fake host                                                                              */

typedef struct record {
    char method[16];
    char path[256];
    char query[256];
    size_t body_len;
    int too_large;
    int has_body_pointer;
} record;

typedef struct pending {
    struct pending *next;
    void (*complete)(void *user, const gs_response *response);
    void *user;
    int status;
    char *body;
    uint64_t due_ms; /* 0 = held until released */
} pending;

#define MAX_RECORDS 4096

static struct {
    gs_host host;
    gs_server_settings settings;
    char bind_host[64];

    int submitted, completed;
    record records[MAX_RECORDS];
    int record_count;

    pending *queue;
    int release_holds;
    int worker_stop;
    int worker_running;
    pthread_t worker;

    /* host->upgrade_handoff: what it was handed, and what it does (enum handoff_mode) */
    int handoffs, handoff_family, handoff_mode;
    int taken_done;
    char taken_head[8192];
    pthread_t taker;
    int taker_running;

    /* the plugin */
    void *dl;
    const gs_plugin_descriptor *desc;
    const gs_client_transport_vtable *vt;
    void *config;
    void *inst;
    int started;
} F;

static void *post_thread(void *arg)
{
    void **pair = arg;
    void (*fn)(void *) = (void (*)(void *))(uintptr_t)pair[0];
    fn(pair[1]);
    free(pair);
    return NULL;
}

static gs_status fh_post(const gs_host *host, void (*fn)(void *arg), void *arg)
{
    (void)host;
    void **pair = malloc(2 * sizeof *pair);
    if (!pair)
        return GS_AGAIN;
    pair[0] = (void *)(uintptr_t)fn;
    pair[1] = arg;
    pthread_t t;
    if (pthread_create(&t, NULL, post_thread, pair) != 0) {
        free(pair);
        return GS_AGAIN;
    }
    pthread_detach(t);
    return GS_OK;
}

/* What the fake host->upgrade_handoff does with an upgrade. */
enum handoff_mode {
    HANDOFF_DECLINE = 0, /* GS_DECLINED: no WebSocket transport; the http transport keeps it */
    HANDOFF_TAKE = 1,    /* GS_OK: a thread reads the head itself and answers 101 */
    HANDOFF_FAIL = 2,    /* GS_ERROR: the fd is closed, as a failing transport would */
};

/* HANDOFF_TAKE: read the untouched request head from the fd, answer 101, close. */
static void *taker_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    struct timeval tv = {.tv_sec = WAIT_MS / 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char head[8192];
    size_t n = 0;
    while (n + 1 < sizeof head) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, WAIT_MS) <= 0)
            break;
        ssize_t r = recv(fd, head + n, sizeof head - 1 - n, MSG_DONTWAIT);
        if (r <= 0)
            break;
        n += (size_t)r;
        head[n] = '\0';
        if (strstr(head, "\r\n\r\n"))
            break;
    }
    head[n] = '\0';
    const char *ans = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\n\r\n";
    (void)!send(fd, ans, strlen(ans), MSG_NOSIGNAL);
    close(fd);
    pthread_mutex_lock(&PT.lock);
    snprintf(F.taken_head, sizeof F.taken_head, "%s", head);
    F.taken_done++;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
    return NULL;
}

static gs_status fh_upgrade_handoff(const gs_host *host, int fd, const struct sockaddr *addr,
                                    socklen_t addrlen, gs_error *err)
{
    (void)host;
    (void)addrlen;
    pthread_mutex_lock(&PT.lock);
    F.handoffs++;
    F.handoff_family = addr ? addr->sa_family : -1;
    int mode = F.handoff_mode;
    int busy = F.taker_running;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
    if (mode == HANDOFF_DECLINE)
        return GS_DECLINED;
    if (mode == HANDOFF_FAIL || busy) {
        close(fd);
        fh_error_set(err, 503, "SHUTDOWN", "the WebSocket transport is stopping");
        return GS_ERROR;
    }
    pthread_mutex_lock(&PT.lock);
    F.taker_running = pthread_create(&F.taker, NULL, taker_main, (void *)(intptr_t)fd) == 0;
    int ok = F.taker_running;
    pthread_mutex_unlock(&PT.lock);
    if (!ok) {
        close(fd);
        return GS_ERROR;
    }
    return GS_OK;
}

static const gs_server_settings *fh_settings(const gs_host *host)
{
    (void)host;
    return &F.settings;
}

/* Append s to a JSON string literal (quotes and backslashes escaped). */
static void json_str(char *out, size_t size, const char *s)
{
    size_t o = strlen(out);
    if (!s) {
        snprintf(out + o, size - o, "null");
        return;
    }
    if (o + 1 < size)
        out[o++] = '"';
    for (; *s && o + 3 < size; s++) {
        if (*s == '"' || *s == '\\')
            out[o++] = '\\';
        out[o++] = *s;
    }
    if (o + 1 < size)
        out[o++] = '"';
    out[o] = '\0';
}

static void fake_complete(void (*complete)(void *, const gs_response *), void *user, int status,
                          const char *body)
{
    static const gs_header extra[] = {{"X-Fake", "yes"}};
    gs_response r = {
        .struct_size = sizeof r,
        .status = status,
        .headers = extra,
        .header_count = 1,
        .content_type = "application/json",
        .body = body,
        .body_len = strlen(body),
    };
    complete(user, &r);
    pthread_mutex_lock(&PT.lock);
    F.completed++;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
}

static gs_status fh_api_submit(const gs_host *host, const gs_request *q)
{
    (void)host;
    /* Runs on the plugin's threads: no Criterion assertion here; bad input shows as a 500. */
    int bad = q->struct_size != sizeof(gs_request) || !q->method || !q->path || !q->complete;
    const char *echo = "";
    for (size_t i = 0; i < q->header_count; i++)
        if (!strcasecmp(q->headers[i].name, "X-Echo"))
            echo = q->headers[i].value;
    uint32_t sum = 0;
    for (size_t i = 0; i < q->body_len; i++)
        sum += q->body[i];

    pthread_mutex_lock(&PT.lock);
    if (F.record_count < MAX_RECORDS) {
        record *rec = &F.records[F.record_count++];
        snprintf(rec->method, sizeof rec->method, "%s", q->method);
        snprintf(rec->path, sizeof rec->path, "%s", q->path);
        snprintf(rec->query, sizeof rec->query, "%s", q->query ? q->query : "(null)");
        rec->body_len = q->body_len;
        rec->too_large = q->body_too_large;
        rec->has_body_pointer = q->body != NULL;
    }
    F.submitted++;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);

    char body[2048];
    int status = 200;
    if (bad) {
        status = 500;
        snprintf(body, sizeof body, "{\"error\":{\"code\":\"BAD_REQUEST_STRUCT\"}}");
    } else if (q->body_too_large) {
        status = 413;
        snprintf(body, sizeof body,
                 "{\"error\":{\"code\":\"PAYLOAD_TOO_LARGE\",\"message\":\"too large\","
                 "\"details\":{}}}");
    } else {
        body[0] = '\0';
        strcat(body, "{\"method\":");
        json_str(body, sizeof body, q->method);
        strcat(body, ",\"path\":");
        json_str(body, sizeof body, q->path);
        strcat(body, ",\"query\":");
        json_str(body, sizeof body, q->query);
        size_t o = strlen(body);
        snprintf(body + o, sizeof body - o, ",\"body_len\":%zu,\"sum\":%u,\"echo\":", q->body_len,
                 sum);
        json_str(body, sizeof body, echo);
        strcat(body, "}");
    }

    int held = !strncmp(q->path, "/hold", 5);
    if (!held && strncmp(q->path, "/async", 6)) {
        fake_complete(q->complete, q->user, status, body);
        return GS_OK;
    }
    pending *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->complete = q->complete;
    p->user = q->user;
    p->status = status;
    p->body = strdup(body);
    p->due_ms = held ? 0 : now_ms() + 2;
    pthread_mutex_lock(&PT.lock);
    p->next = F.queue;
    F.queue = p;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
    return GS_OK;
}

/* The fake core's worker: completes /async requests when due, /hold ones when released. */
static void *worker_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&PT.lock);
    for (;;) {
        pending *ready = NULL;
        uint64_t next_due = 0, now = now_ms();
        for (pending **pp = &F.queue; *pp;) {
            pending *p = *pp;
            int go = p->due_ms ? p->due_ms <= now : F.release_holds;
            if (go || F.worker_stop) {
                *pp = p->next;
                p->next = ready;
                ready = p;
            } else {
                if (p->due_ms && (!next_due || p->due_ms < next_due))
                    next_due = p->due_ms;
                pp = &p->next;
            }
        }
        if (ready) {
            pthread_mutex_unlock(&PT.lock);
            while (ready) {
                pending *p = ready;
                ready = p->next;
                fake_complete(p->complete, p->user, p->status, p->body);
                free(p->body);
                free(p);
            }
            pthread_mutex_lock(&PT.lock);
            continue;
        }
        if (F.worker_stop)
            break;
        if (next_due) {
            struct timespec ts = deadline_in(next_due > now ? next_due - now : 0);
            pthread_cond_timedwait(&PT.cond, &PT.lock, &ts);
        } else {
            pthread_cond_wait(&PT.cond, &PT.lock);
        }
    }
    pthread_mutex_unlock(&PT.lock);
    return NULL;
}

static void release_holds(void)
{
    pthread_mutex_lock(&PT.lock);
    F.release_holds = 1;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
}

static int wait_submitted(int n)
{
    return pt_wait_at_least(&F.submitted, n);
}

static int wait_completed(int n)
{
    return pt_wait_at_least(&F.completed, n);
}

static int find_record(const char *path, record *out)
{
    int found = 0;
    pthread_mutex_lock(&PT.lock);
    for (int i = F.record_count - 1; i >= 0; i--)
        if (!strcmp(F.records[i].path, path)) {
            *out = F.records[i];
            found = 1;
            break;
        }
    pthread_mutex_unlock(&PT.lock);
    return found;
}

/* ========================================================================================== */
/* Loading and driving the plugin                                                             */

static void config_set_int(const char *key, int64_t value)
{
    for (size_t i = 0; i < F.desc->config_key_count; i++) {
        const gs_config_key *k = (const gs_config_key *)((const char *)F.desc->config_keys +
                                                         i * F.desc->config_key_size);
        if (!strcmp(k->name, key)) {
            cr_assert_eq(k->type, GS_CFG_INT, "key %s is not INT", key);
            memcpy((char *)F.config + k->offset, &value, sizeof value);
            return;
        }
    }
    cr_assert_fail("the http plugin has no key %s", key);
}

static void load_plugin(void)
{
    F.desc = pt_load_descriptor("gs_transport_http.so", &F.dl);
    F.vt = F.desc->vtable;

    /* The config struct, filled from the key table's defaults as the core would. */
    F.config = calloc(1, F.desc->config_struct_size);
    cr_assert_not_null(F.config);
    for (size_t i = 0; i < F.desc->config_key_count; i++) {
        const gs_config_key *k = (const gs_config_key *)((const char *)F.desc->config_keys +
                                                         i * F.desc->config_key_size);
        cr_assert_eq(k->type, GS_CFG_INT);
        cr_assert_not_null(k->default_value);
        int64_t v = strtoll(k->default_value, NULL, 10);
        cr_assert(k->min >= k->max || (v >= k->min && v <= k->max), "default of %s in range",
                  k->name);
        cr_assert_leq(k->offset + sizeof v, F.desc->config_struct_size);
        memcpy((char *)F.config + k->offset, &v, sizeof v);
    }
    config_set_int("stop_timeout_ms", 3000);
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN); /* the core's job in the server; the test is the host here */
    memset(&F, 0, sizeof F);
    pt_init();

    pt_host_init(&F.host, &F);
    F.host.post = fh_post;
    F.host.server_settings = fh_settings;
    F.host.api_submit = fh_api_submit;
    F.host.upgrade_handoff = fh_upgrade_handoff;

    pt_settings_init(&F.settings, F.bind_host, sizeof F.bind_host);
    F.settings.idle_timeout_s = 30;

    cr_assert_eq(pthread_create(&F.worker, NULL, worker_main, NULL), 0);
    F.worker_running = 1;
    load_plugin();
}

static void teardown(void)
{
    if (F.inst) {
        F.vt->destroy(F.inst);
        F.inst = NULL;
    }
    release_holds();
    if (F.taker_running) {
        pthread_join(F.taker, NULL);
        F.taker_running = 0;
    }
    if (F.worker_running) {
        pthread_mutex_lock(&PT.lock);
        F.worker_stop = 1;
        pthread_cond_broadcast(&PT.cond);
        pthread_mutex_unlock(&PT.lock);
        pthread_join(F.worker, NULL);
        F.worker_running = 0;
    }
    cr_expect_eq(atomic_load(&PT.live_allocs), 0, "the plugin leaked %ld host allocations",
                 atomic_load(&PT.live_allocs));
    free(F.config);
    if (F.dl)
        dlclose(F.dl);
    pt_fini();
}

/* create + start; returns the bound port. */
static int server_start(void)
{
    pt_create_start(F.vt, &F.host, F.config, &F.inst);
    int port = F.vt->bound_port(F.inst);
    cr_assert_gt(port, 0);
    cr_assert_lt(port, 65536);
    return port;
}

/* ========================================================================================== */
/* A tiny HTTP/1.1 client                                                                     */

typedef struct client {
    int fd;
    gnutls_session_t tls;
    gnutls_certificate_credentials_t cred;
    char buf[65536];
    size_t len; /* bytes read ahead, not consumed yet */
} client;

typedef struct reply {
    int status;
    char head[8192];
    char *body;
    size_t body_len;
    int conn_close;
} reply;

static int client_open(client *c, int family, int port)
{
    memset(c, 0, sizeof *c);
    c->fd = pt_tcp_connect(family, port, 0);
    return c->fd < 0 ? -1 : 0;
}

static int client_connect(client *c, int port)
{
    return client_open(c, AF_INET, port);
}

static int client_start_tls(client *c, const char *ca_file)
{
    return pt_tls_start(c->fd, &c->tls, &c->cred, ca_file);
}

static void client_close(client *c)
{
    pt_conn_close(&c->fd, &c->tls, &c->cred);
}

static int client_write(client *c, const void *data, size_t n)
{
    return pt_write_all(c->fd, c->tls, data, n);
}

static int client_writes(client *c, const char *s)
{
    return client_write(c, s, strlen(s));
}

/* Read more bytes into c->buf. >0 read, 0 EOF, -1 error or timeout. */
static ssize_t client_fill(client *c)
{
    if (c->len >= sizeof c->buf)
        return -1;
    for (;;) {
        ssize_t r = c->tls ? gnutls_record_recv(c->tls, c->buf + c->len, sizeof c->buf - c->len)
                           : recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
        if (r < 0 && !c->tls && errno == EINTR)
            continue;
        if (r < 0 && c->tls && r == GNUTLS_E_INTERRUPTED)
            continue;
        if (r < 0 && c->tls && r == GNUTLS_E_PREMATURE_TERMINATION)
            return 0;
        if (r < 0)
            return -1;
        c->len += (size_t)r;
        return r;
    }
}

static void reply_free(reply *r)
{
    free(r->body);
    r->body = NULL;
}

static const char *reply_header(const reply *r, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (!strncasecmp(line, name, nl) && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t len = e ? (size_t)(e - v) : strlen(v);
            snprintf(out, size, "%.*s", (int)len, v);
            return out;
        }
    }
    return NULL;
}

/* Read one response (Content-Length framing; 1xx responses are skipped). 0 ok, -1 not. */
static int client_read_reply(client *c, reply *r)
{
    memset(r, 0, sizeof *r);
    for (;;) {
        char *end = NULL;
        while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
            if (client_fill(c) <= 0)
                return -1;
        size_t head_len = (size_t)(end - c->buf) + 4;
        if (head_len >= sizeof r->head)
            return -1;
        memcpy(r->head, c->buf, head_len);
        r->head[head_len] = '\0';
        memmove(c->buf, c->buf + head_len, c->len - head_len);
        c->len -= head_len;
        if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1)
            return -1;
        if (r->status >= 200)
            break;
    }
    char v[256];
    size_t cl = 0;
    if (reply_header(r, "Content-Length", v, sizeof v))
        cl = strtoul(v, NULL, 10);
    else if (reply_header(r, "Transfer-Encoding", v, sizeof v))
        return -1; /* the transport sends buffers: always Content-Length */
    r->conn_close = reply_header(r, "Connection", v, sizeof v) && !strcasecmp(v, "close");
    r->body = malloc(cl + 1);
    if (!r->body)
        abort();
    while (c->len < cl && c->len < sizeof c->buf)
        if (client_fill(c) <= 0) {
            reply_free(r);
            return -1;
        }
    if (cl > c->len) {
        reply_free(r);
        return -1;
    }
    memcpy(r->body, c->buf, cl);
    r->body[cl] = '\0';
    r->body_len = cl;
    memmove(c->buf, c->buf + cl, c->len - cl);
    c->len -= cl;
    return 0;
}

/* One request/response on an open connection. */
static int client_request(client *c, const char *method, const char *target, const char *extra,
                          const char *body, reply *r)
{
    size_t blen = body ? strlen(body) : 0;
    size_t cap = strlen(target) + (extra ? strlen(extra) : 0) + 256;
    char *head = malloc(cap);
    if (!head)
        return -1;
    int n = snprintf(head, cap, "%s %s HTTP/1.1\r\nHost: test\r\n%s", method, target,
                     extra ? extra : "");
    if (body)
        snprintf(head + n, cap - (size_t)n, "Content-Length: %zu\r\n\r\n", blen);
    else
        snprintf(head + n, cap - (size_t)n, "\r\n");
    int rc = client_writes(c, head);
    free(head);
    if (rc != 0)
        return -1;
    if (blen && client_write(c, body, blen) != 0)
        return -1;
    return client_read_reply(c, r);
}

/* After the last reply: does the server close the connection (EOF or reset), bounded? */
static int client_sees_close(client *c)
{
    if (c->len > 0)
        return 0; /* unexpected extra bytes */
    ssize_t r = client_fill(c);
    if (r == 0)
        return 1;
    return r < 0 && !c->tls && (errno == ECONNRESET || errno == EPIPE);
}

/* A JSON field of the echo as text (numbers) or the string value without quotes. */
static int json_field(const char *json, const char *field, char *out, size_t size)
{
    char key[128];
    snprintf(key, sizeof key, "\"%s\":", field);
    const char *p = strstr(json, key);
    if (!p)
        return 0;
    p += strlen(key);
    if (*p == '"') {
        p++;
        size_t i = 0;
        while (*p && *p != '"' && i + 1 < size) {
            if (*p == '\\' && p[1])
                p++;
            out[i++] = *p++;
        }
        out[i] = '\0';
        return 1;
    }
    size_t i = 0;
    while (*p && *p != ',' && *p != '}' && i + 1 < size)
        out[i++] = *p++;
    out[i] = '\0';
    return 1;
}

static void expect_echo(const reply *r, const char *method, const char *path, size_t body_len)
{
    char v[512];
    cr_assert_eq(r->status, 200, "status %d body %s", r->status, r->body ? r->body : "");
    cr_assert(json_field(r->body, "method", v, sizeof v) && !strcmp(v, method), "method in %s",
              r->body);
    cr_assert(json_field(r->body, "path", v, sizeof v) && !strcmp(v, path), "path %s in %s", path,
              r->body);
    cr_assert(json_field(r->body, "body_len", v, sizeof v) && strtoul(v, NULL, 10) == body_len,
              "body_len %zu in %s", body_len, r->body);
}

/* ========================================================================================== */
/* Tests                                                                                      */

TestSuite(http, .init = setup, .fini = teardown, .timeout = 120);

Test(http, descriptor_and_keys)
{
    cr_assert_eq(F.desc->struct_size, sizeof(gs_plugin_descriptor));
    cr_assert_eq(F.desc->abi_major, GS_ABI_MAJOR);
    cr_assert_eq(F.desc->kind, GS_KIND_CLIENT_TRANSPORT);
    cr_assert_str_eq(F.desc->name, "http");
    cr_assert_str_eq(F.desc->build_signature, GS_BUILD_SIGNATURE);
    cr_assert_eq(F.desc->config_key_size, sizeof(gs_config_key));
    cr_assert_not_null(F.desc->description);
    cr_assert_eq(F.vt->struct_size, sizeof(gs_client_transport_vtable));
    cr_assert(F.vt->create && F.vt->start && F.vt->stop && F.vt->destroy && F.vt->bound_port);
    const char *wanted[] = {"threads", "connection_timeout_s", "max_connections",
                            "stop_timeout_ms"};
    for (size_t w = 0; w < sizeof wanted / sizeof wanted[0]; w++) {
        int found = 0;
        for (size_t i = 0; i < F.desc->config_key_count; i++) {
            const gs_config_key *k = &F.desc->config_keys[i];
            cr_assert(k->help && strlen(k->help) > 10, "key %s has help", k->name);
            found |= !strcmp(k->name, wanted[w]);
        }
        cr_assert(found, "key %s", wanted[w]);
    }
    /* Only the entry is exported. */
    cr_assert_null(dlsym(F.dl, "gs_http_access"));
    cr_assert_null(dlsym(F.dl, "gs_http_uri_log"));
}

Test(http, get_and_post_sync)
{
    int port = server_start();
    client c;
    reply r;
    char v[256];
    cr_assert_eq(client_connect(&c, port), 0);

    cr_assert_eq(client_request(&c, "GET", "/sync/a?x=1%202&y", "X-Echo: hello\r\n", NULL, &r), 0);
    expect_echo(&r, "GET", "/sync/a", 0);
    cr_assert(json_field(r.body, "query", v, sizeof v) && !strcmp(v, "x=1%202&y"), "%s", r.body);
    cr_assert(json_field(r.body, "echo", v, sizeof v) && !strcmp(v, "hello"), "%s", r.body);
    cr_assert(reply_header(&r, "Content-Type", v, sizeof v) && !strcmp(v, "application/json"));
    cr_assert(reply_header(&r, "X-Fake", v, sizeof v) && !strcmp(v, "yes"));
    cr_assert_not(r.conn_close);
    reply_free(&r);

    /* The raw path reaches the core: %2F stays encoded, no query means NULL. */
    cr_assert_eq(client_request(&c, "GET", "/db/a%2Fb%20c/query", NULL, NULL, &r), 0);
    expect_echo(&r, "GET", "/db/a%2Fb%20c/query", 0);
    cr_assert(json_field(r.body, "query", v, sizeof v) && !strcmp(v, "null"), "%s", r.body);
    reply_free(&r);

    cr_assert_eq(client_request(&c, "POST", "/sync/b", "Content-Type: application/json\r\n",
                                "{\"sql\":\"select 1\"}", &r),
                 0);
    expect_echo(&r, "POST", "/sync/b", strlen("{\"sql\":\"select 1\"}"));
    uint32_t sum = 0;
    for (const char *p = "{\"sql\":\"select 1\"}"; *p; p++)
        sum += (unsigned char)*p;
    cr_assert(json_field(r.body, "sum", v, sizeof v) && strtoul(v, NULL, 10) == sum);
    reply_free(&r);

    /* An empty POST is handed over with no body. */
    cr_assert_eq(client_request(&c, "POST", "/sync/empty", NULL, "", &r), 0);
    expect_echo(&r, "POST", "/sync/empty", 0);
    reply_free(&r);

    /* Expect: 100-continue gets its interim reply, then the answer. */
    cr_assert_eq(client_writes(&c, "POST /sync/cont HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                                   "Expect: 100-continue\r\n\r\n"),
                 0);
    while (!memmem(c.buf, c.len, "\r\n\r\n", 4))
        cr_assert_gt(client_fill(&c), 0);
    cr_assert(!strncmp(c.buf, "HTTP/1.1 100", 12), "got %.*s", (int)c.len, c.buf);
    cr_assert_eq(client_writes(&c, "abcde"), 0);
    cr_assert_eq(client_read_reply(&c, &r), 0);
    expect_echo(&r, "POST", "/sync/cont", 5);
    reply_free(&r);
    client_close(&c);

    record rec;
    cr_assert(find_record("/sync/b", &rec));
    cr_assert_str_eq(rec.method, "POST");
    cr_assert_eq(rec.too_large, 0);
}

Test(http, keep_alive_and_async)
{
    int port = server_start();
    client c;
    reply r;
    cr_assert_eq(client_connect(&c, port), 0);
    const char *paths[] = {"/sync/1", "/async/2", "/async/3", "/sync/4", "/async/5"};
    for (size_t i = 0; i < 5; i++) {
        char body[64];
        snprintf(body, sizeof body, "body-%zu", i);
        int post = i % 2 == 1;
        cr_assert_eq(
            client_request(&c, post ? "POST" : "GET", paths[i], NULL, post ? body : NULL, &r), 0,
            "request %zu on the same connection", i);
        expect_echo(&r, post ? "POST" : "GET", paths[i], post ? strlen(body) : 0);
        cr_assert_not(r.conn_close);
        reply_free(&r);
    }
    client_close(&c);

    /* Pipelined: two requests written at once, answered in order. */
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_writes(&c, "GET /async/p1 HTTP/1.1\r\nHost: t\r\n\r\n"
                                   "GET /sync/p2 HTTP/1.1\r\nHost: t\r\n\r\n"),
                 0);
    cr_assert_eq(client_read_reply(&c, &r), 0);
    expect_echo(&r, "GET", "/async/p1", 0);
    reply_free(&r);
    cr_assert_eq(client_read_reply(&c, &r), 0);
    expect_echo(&r, "GET", "/sync/p2", 0);
    reply_free(&r);
    client_close(&c);
}

Test(http, bound_port_and_stop)
{
    int port = server_start();
    cr_assert_neq(port, 0);
    client c;
    reply r;
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_request(&c, "GET", "/sync/x", NULL, NULL, &r), 0);
    expect_echo(&r, "GET", "/sync/x", 0);
    reply_free(&r);
    client_close(&c);

    F.vt->stop(F.inst);
    cr_assert_eq(F.vt->bound_port(F.inst), -1);
    cr_assert_neq(client_connect(&c, port), 0, "the port is closed after stop");
    F.vt->stop(F.inst); /* twice is harmless */

    /* The same instance starts again. */
    gs_error err;
    cr_assert_eq(F.vt->start(F.inst, &err), GS_OK, "%s", err.message);
    port = F.vt->bound_port(F.inst);
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_request(&c, "GET", "/async/again", NULL, NULL, &r), 0);
    expect_echo(&r, "GET", "/async/again", 0);
    reply_free(&r);
    client_close(&c);
}

/* Exactly max_body_bytes passes; one more byte is 413 with nothing buffered. */
Test(http, body_limit_boundary)
{
    F.settings.max_body_bytes = 4096;
    int port = server_start();
    char *body = malloc(4098);
    memset(body, 'b', 4097);
    body[4096] = '\0';
    client c;
    reply r;
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_request(&c, "POST", "/sync/exact", NULL, body, &r), 0);
    expect_echo(&r, "POST", "/sync/exact", 4096);
    cr_assert_not(r.conn_close);
    reply_free(&r);

    body[4096] = 'b';
    body[4097] = '\0';
    cr_assert_eq(client_request(&c, "POST", "/sync/over", NULL, body, &r), 0);
    cr_assert_eq(r.status, 413);
    cr_assert(strstr(r.body, "PAYLOAD_TOO_LARGE"));
    cr_assert(r.conn_close, "a 413 closes the connection");
    reply_free(&r);
    cr_assert(client_sees_close(&c));
    client_close(&c);
    free(body);

    record rec;
    cr_assert(find_record("/sync/over", &rec));
    cr_assert_eq(rec.too_large, 1);
    cr_assert_eq(rec.body_len, 0);
    cr_assert_eq(rec.has_body_pointer, 0);
}

/* Content-Length over the limit: answered from the headers, the body is never read. */
static void too_large_content_length(const char *path)
{
    F.settings.max_body_bytes = 65536;
    int port = server_start();
    size_t peak_before = atomic_load(&PT.peak_bytes);
    client c;
    reply r;
    cr_assert_eq(client_connect(&c, port), 0);
    char head[256];
    snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: 10485760\r\n\r\n",
             path);
    cr_assert_eq(client_writes(&c, head), 0);
    char chunk[1024];
    memset(chunk, 'z', sizeof chunk);
    cr_assert_eq(client_write(&c, chunk, sizeof chunk), 0);
    cr_assert_eq(client_read_reply(&c, &r), 0);
    cr_assert_eq(r.status, 413, "%d %s", r.status, r.body);
    cr_assert(strstr(r.body, "PAYLOAD_TOO_LARGE"));
    cr_assert(r.conn_close);
    reply_free(&r);
    cr_assert(client_sees_close(&c), "the connection is closed after the 413");
    client_close(&c);

    record rec;
    cr_assert(find_record(path, &rec));
    cr_assert_eq(rec.too_large, 1);
    cr_assert_eq(rec.body_len, 0);
    cr_assert_lt(atomic_load(&PT.peak_bytes) - peak_before, 65536, "nothing of the body kept");

    /* The server is fine afterwards. */
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_request(&c, "GET", "/sync/after", NULL, NULL, &r), 0);
    expect_echo(&r, "GET", "/sync/after", 0);
    reply_free(&r);
    client_close(&c);
}

Test(http, too_large_content_length_sync)
{
    too_large_content_length("/sync/big");
}

Test(http, too_large_content_length_async)
{
    too_large_content_length("/async/big");
}

/* Chunked over the limit: the 413 is decided mid-body, the rest is read and dropped. */
static void too_large_chunked(const char *path)
{
    F.settings.max_body_bytes = 65536;
    int port = server_start();
    size_t peak_before = atomic_load(&PT.peak_bytes);
    client c;
    reply r;
    cr_assert_eq(client_connect(&c, port), 0);
    char head[256];
    snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
             path);
    cr_assert_eq(client_writes(&c, head), 0);
    static char chunk[65536 + 32];
    int hl = snprintf(chunk, sizeof chunk, "10000\r\n");
    memset(chunk + hl, 'c', 65536);
    memcpy(chunk + hl + 65536, "\r\n", 2);
    size_t clen = (size_t)hl + 65536 + 2;
    for (int i = 0; i < 160; i++) /* 10 MiB */
        cr_assert_eq(client_write(&c, chunk, clen), 0, "chunk %d", i);
    cr_assert_eq(client_writes(&c, "0\r\n\r\n"), 0);
    cr_assert_eq(client_read_reply(&c, &r), 0);
    cr_assert_eq(r.status, 413, "%d %s", r.status, r.body);
    cr_assert(strstr(r.body, "PAYLOAD_TOO_LARGE"));
    cr_assert(r.conn_close);
    reply_free(&r);
    cr_assert(client_sees_close(&c), "the connection is closed after the 413");
    client_close(&c);

    record rec;
    cr_assert(find_record(path, &rec));
    cr_assert_eq(rec.too_large, 1);
    cr_assert_eq(rec.body_len, 0);
    /* At most the limit (plus growth slack) was ever held: never the 10 MiB. */
    cr_assert_lt(atomic_load(&PT.peak_bytes) - peak_before, 3 * 65536);
}

Test(http, too_large_chunked_sync)
{
    too_large_chunked("/sync/chunked");
}

Test(http, too_large_chunked_async)
{
    too_large_chunked("/async/chunked");
}

Test(http, chunked_within_limit)
{
    int port = server_start();
    client c;
    reply r;
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_writes(&c, "POST /async/ch HTTP/1.1\r\nHost: t\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n"
                                   "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
                 0);
    cr_assert_eq(client_read_reply(&c, &r), 0);
    expect_echo(&r, "POST", "/async/ch", 11);
    cr_assert_not(r.conn_close);
    reply_free(&r);
    cr_assert_eq(client_request(&c, "GET", "/sync/next", NULL, NULL, &r), 0);
    expect_echo(&r, "GET", "/sync/next", 0);
    reply_free(&r);
    client_close(&c);
}

/* 32 threads x 50 requests, keep-alive, sync and async mixed: every answer matches. */
typedef struct load_arg {
    int port;
    int id;
    int failures;
    char first_failure[256];
} load_arg;

static void *load_thread(void *p)
{
    load_arg *a = p;
    client c;
    int open = 0;
    for (int j = 0; j < 50; j++) {
        if (!open || j % 17 == 0) { /* reconnect now and then */
            if (open)
                client_close(&c);
            if (client_connect(&c, a->port) != 0) {
                a->failures++;
                snprintf(a->first_failure, sizeof a->first_failure, "connect failed: %s",
                         strerror(errno));
                return NULL;
            }
            open = 1;
        }
        char path[64], body[128], v[128];
        snprintf(path, sizeof path, "/%s/t%d/r%d", (a->id + j) % 2 ? "async" : "sync", a->id, j);
        int post = j % 3 == 0;
        snprintf(body, sizeof body, "payload-%d-%d", a->id, j);
        reply r;
        int ok = client_request(&c, post ? "POST" : "GET", path, NULL, post ? body : NULL, &r) == 0;
        ok = ok && r.status == 200 && json_field(r.body, "path", v, sizeof v) && !strcmp(v, path) &&
             json_field(r.body, "body_len", v, sizeof v) &&
             strtoul(v, NULL, 10) == (post ? strlen(body) : 0);
        if (!ok) {
            if (!a->failures)
                snprintf(a->first_failure, sizeof a->first_failure, "%s: status %d body %s", path,
                         r.status, r.body ? r.body : "(none)");
            a->failures++;
            reply_free(&r);
            client_close(&c);
            open = 0;
            continue;
        }
        reply_free(&r);
    }
    if (open)
        client_close(&c);
    return NULL;
}

Test(http, many_concurrent_connections)
{
    F.settings.io_threads = 4;
    F.settings.access_log = 0;
    int port = server_start();
    enum { N = 32 };
    pthread_t t[N];
    load_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (load_arg){.port = port, .id = i};
        cr_assert_eq(pthread_create(&t[i], NULL, load_thread, &args[i]), 0);
    }
    int failures = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        if (args[i].failures)
            fprintf(stderr, "thread %d: %d failures, first: %s\n", i, args[i].failures,
                    args[i].first_failure);
        failures += args[i].failures;
    }
    cr_assert_eq(failures, 0);
    cr_assert(wait_completed(N * 50));
    pthread_mutex_lock(&PT.lock);
    int submitted = F.submitted;
    pthread_mutex_unlock(&PT.lock);
    cr_assert_eq(submitted, N * 50);
}

Test(http, client_disconnects_while_pending)
{
    /* libmicrohttpd 0.9.75 with epoll misses a FIN that arrives together with the last data
     * (a short read clears its read-ready flag), so such a connection may only be reaped by
     * the idle timeout: keep it short here. Either way the request is reported once. */
    config_set_int("connection_timeout_s", 2);
    F.settings.max_body_bytes = 1024;
    int port = server_start();
    client c;
    reply r;

    /* 1. Suspended waiting for the core, then the client leaves; the answer comes later. */
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_writes(&c, "GET /hold/gone HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    cr_assert(wait_submitted(1));
    client_close(&c);

    /* 2. The body stops half way and the client leaves: never submitted. */
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_writes(&c, "POST /sync/half HTTP/1.1\r\nHost: t\r\n"
                                   "Content-Length: 1000\r\n\r\n0123456789"),
                 0);
    client_close(&c);
    cr_assert(wait_log("/sync/half - "), "the abandoned upload is logged");

    /* 3. Submitted early (chunked, too large), answer pending, connection dies before the
     * core answers: the late complete() only frees the context. */
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_writes(&c, "POST /hold/early HTTP/1.1\r\nHost: t\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n"),
                 0);
    char chunk[4200];
    int hl = snprintf(chunk, sizeof chunk, "1000\r\n");
    memset(chunk + hl, 'x', 4096);
    memcpy(chunk + hl + 4096, "\r\n", 2);
    cr_assert_eq(client_write(&c, chunk, (size_t)hl + 4098), 0);
    cr_assert(wait_submitted(2));
    client_close(&c);
    cr_assert(wait_log("/hold/early - "), "the dead connection was reported");

    release_holds();
    cr_assert(wait_completed(2));
    cr_assert(wait_log("/hold/gone "), "the dead suspended request is logged once answered");

    /* The server still serves. */
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_request(&c, "GET", "/async/alive", NULL, NULL, &r), 0);
    expect_echo(&r, "GET", "/async/alive", 0);
    reply_free(&r);
    client_close(&c);
}

/* Allocation failures: the transport answers 500 itself and keeps serving. */
static void expect_local_500(client *c, const char *method, const char *target, const char *extra,
                             const char *body)
{
    reply r;
    cr_assert_eq(client_request(c, method, target, extra, body, &r), 0, "%s", target);
    cr_assert_eq(r.status, 500, "%s got %d", target, r.status);
    cr_assert(strstr(r.body, "\"INTERNAL_ERROR\""), "%s", r.body);
    cr_assert(r.conn_close);
    reply_free(&r);
    record rec;
    cr_assert_not(find_record(target, &rec), "%s never reaches the core", target);
}

Test(http, allocation_failures)
{
    int port = server_start();
    client c;
    reply r;

    /* Nothing can be allocated: not even the request context. */
    atomic_store(&PT.fail_size_min, 1);
    cr_assert_eq(client_connect(&c, port), 0);
    expect_local_500(&c, "GET", "/sync/nomem", NULL, NULL);
    client_close(&c);

    /* Big allocations fail: the body buffer (Content-Length, then chunked growth). */
    atomic_store(&PT.fail_size_min, 5000);
    char *body = malloc(10001);
    memset(body, 'q', 10000);
    body[10000] = '\0';
    cr_assert_eq(client_connect(&c, port), 0);
    expect_local_500(&c, "POST", "/sync/nobody", NULL, body);
    client_close(&c);
    free(body);
    cr_assert_eq(client_connect(&c, port), 0);
    static char chunked[20000];
    int n = snprintf(chunked, sizeof chunked,
                     "POST /sync/nochunk HTTP/1.1\r\nHost: t\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n4000\r\n");
    memset(chunked + n, 'k', 0x4000);
    const char *tail = "\r\n1\r\nk\r\n0\r\n\r\n";
    memcpy(chunked + n + 0x4000, tail, strlen(tail));
    cr_assert_eq(client_write(&c, chunked, (size_t)n + 0x4000 + strlen(tail)), 0);
    cr_assert_eq(client_read_reply(&c, &r), 0);
    cr_assert_eq(r.status, 500, "chunked got %d", r.status);
    reply_free(&r);
    client_close(&c);

    /* ... and the header array of a request with many headers. */
    char *many = malloc(400 * 24 + 1);
    many[0] = '\0';
    for (int i = 0; i < 400; i++)
        sprintf(many + strlen(many), "X-H%03d: v\r\n", i);
    cr_assert_eq(client_connect(&c, port), 0);
    expect_local_500(&c, "GET", "/sync/noheaders", many, NULL);
    client_close(&c);
    free(many);

    /* Memory is back: all is well. */
    atomic_store(&PT.fail_size_min, 0);
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_request(&c, "GET", "/async/fine", NULL, NULL, &r), 0);
    expect_echo(&r, "GET", "/async/fine", 0);
    reply_free(&r);
    client_close(&c);
}

/* Limits libmicrohttpd enforces for us: header memory, connection count. */
Test(http, header_and_connection_limits)
{
    config_set_int("connection_memory_bytes", 8192);
    config_set_int("max_connections", 2);
    config_set_int("threads", 1);
    int port = server_start();
    client c;
    reply r;
    cr_assert_eq(client_connect(&c, port), 0);
    char *big = malloc(20000);
    memcpy(big, "X-Big: ", 7);
    memset(big + 7, 'h', 16000);
    memcpy(big + 16007, "\r\n", 3);
    int rc = client_request(&c, "GET", "/sync/bighead", big, NULL, &r);
    free(big);
    cr_assert_eq(rc, 0);
    cr_assert_eq(r.status, 431, "got %d", r.status);
    reply_free(&r);
    client_close(&c);
    record rec;
    cr_assert_not(find_record("/sync/bighead", &rec), "never reaches the core");

    /* Two connections open and idle: a third waits in the listen backlog, unanswered, until
     * one of the two goes away. (No answer is a negative: it is checked for 300 ms.) */
    client a, b;
    cr_assert_eq(client_connect(&a, port), 0);
    cr_assert_eq(client_request(&a, "GET", "/sync/a", NULL, NULL, &r), 0);
    reply_free(&r);
    cr_assert_eq(client_connect(&b, port), 0);
    cr_assert_eq(client_request(&b, "GET", "/sync/b", NULL, NULL, &r), 0);
    reply_free(&r);
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_writes(&c, "GET /sync/c HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    struct pollfd pfd = {.fd = c.fd, .events = POLLIN};
    cr_assert_eq(poll(&pfd, 1, 300), 0, "no answer past the connection limit");
    cr_assert_not(find_record("/sync/c", &rec));
    client_close(&a);
    cr_assert_eq(client_read_reply(&c, &r), 0);
    expect_echo(&r, "GET", "/sync/c", 0);
    reply_free(&r);
    client_close(&c);
    client_close(&b);
}

/* stop() while requests wait for the core, which answers during the stop: all get answers. */
typedef struct hold_client {
    int port;
    char path[64];
    int status;
    int conn_close;
} hold_client;

static void *hold_client_main(void *p)
{
    hold_client *h = p;
    client c;
    reply r;
    h->status = -1;
    if (client_connect(&c, h->port) != 0)
        return NULL;
    if (client_request(&c, "GET", h->path, NULL, NULL, &r) == 0) {
        h->status = r.status;
        h->conn_close = r.conn_close;
        reply_free(&r);
    }
    client_close(&c);
    return NULL;
}

static void *stop_main(void *p)
{
    (void)p;
    F.vt->stop(F.inst);
    return NULL;
}

Test(http, stop_waits_for_in_flight)
{
    int port = server_start();
    enum { N = 4 };
    pthread_t t[N];
    hold_client hc[N];
    for (int i = 0; i < N; i++) {
        hc[i] = (hold_client){.port = port};
        snprintf(hc[i].path, sizeof hc[i].path, "/hold/stop%d", i);
        cr_assert_eq(pthread_create(&t[i], NULL, hold_client_main, &hc[i]), 0);
    }
    cr_assert(wait_submitted(N));
    pthread_t st;
    uint64_t t0 = now_ms();
    cr_assert_eq(pthread_create(&st, NULL, stop_main, NULL), 0);
    cr_assert(wait_log("waiting up to 3000 ms for 4 requests in flight"), "stop() is draining");
    release_holds();
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(hc[i].status, 200, "client %d got %d", i, hc[i].status);
        cr_assert(hc[i].conn_close, "answers during stop close the connection");
    }
    pthread_join(st, NULL);
    cr_assert_lt(now_ms() - t0, 3000, "stop returned once the requests were written");
    cr_assert_not(log_contains("still in flight"));
    client c;
    cr_assert_neq(client_connect(&c, port), 0);
}

/* stop() while the core never answers: bounded wait, 503, and complete() after destroy. */
Test(http, stop_times_out_then_late_complete)
{
    config_set_int("stop_timeout_ms", 200);
    int port = server_start();
    enum { N = 3 };
    pthread_t t[N];
    hold_client hc[N];
    for (int i = 0; i < N; i++) {
        hc[i] = (hold_client){.port = port};
        snprintf(hc[i].path, sizeof hc[i].path, "/hold/never%d", i);
        cr_assert_eq(pthread_create(&t[i], NULL, hold_client_main, &hc[i]), 0);
    }
    cr_assert(wait_submitted(N));
    uint64_t t0 = now_ms();
    F.vt->stop(F.inst);
    uint64_t took = now_ms() - t0;
    cr_assert_geq(took, 190);
    cr_assert_lt(took, 2500);
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(hc[i].status, 503, "client %d got %d", i, hc[i].status);
    }
    cr_assert(log_contains("still in flight"));
    F.vt->destroy(F.inst);
    F.inst = NULL;
    /* The core answers after the transport is gone: only the contexts are freed. */
    release_holds();
    cr_assert(wait_completed(N));
    cr_assert_eq(atomic_load(&PT.live_allocs), 0);
}

/* stop() while clients hammer keep-alive connections: every answer is right or a 503, the
 * daemon is never stopped with a suspended connection (libmicrohttpd would abort). */
typedef struct storm_arg {
    int port;
    int id;
    atomic_int *stopped;
    int answered, refused, bad;
    char first_bad[256];
} storm_arg;

static void *storm_thread(void *p)
{
    storm_arg *a = p;
    client c;
    int open = 0;
    for (int j = 0; j < 100000; j++) {
        if (!open) {
            if (client_connect(&c, a->port) != 0) {
                a->refused++;
                if (atomic_load(a->stopped))
                    break;
                continue;
            }
            open = 1;
        }
        char path[64], v[128];
        snprintf(path, sizeof path, "/%s/s%d/r%d", j % 2 ? "async" : "sync", a->id, j);
        reply r;
        if (client_request(&c, "GET", path, NULL, NULL, &r) != 0) {
            client_close(&c);
            open = 0;
            if (atomic_load(a->stopped))
                break;
            continue;
        }
        int ok = (r.status == 200 && json_field(r.body, "path", v, sizeof v) && !strcmp(v, path)) ||
                 (r.status == 503 && strstr(r.body, "\"SHUTDOWN\""));
        if (!ok && !a->bad++)
            snprintf(a->first_bad, sizeof a->first_bad, "%s: %d %s", path, r.status, r.body);
        a->answered++;
        int close_now = r.conn_close;
        reply_free(&r);
        if (close_now) {
            client_close(&c);
            open = 0;
        }
    }
    if (open)
        client_close(&c);
    return NULL;
}

Test(http, stop_under_load)
{
    config_set_int("stop_timeout_ms", 500);
    F.settings.io_threads = 3;
    F.settings.access_log = 0;
    int port = server_start();
    enum { N = 16 };
    atomic_int stopped;
    atomic_init(&stopped, 0);
    pthread_t t[N];
    storm_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (storm_arg){.port = port, .id = i, .stopped = &stopped};
        cr_assert_eq(pthread_create(&t[i], NULL, storm_thread, &args[i]), 0);
    }
    /* And a few requests the core never answers before stop() gives up on them. */
    enum { H = 4 };
    pthread_t ht[H];
    hold_client hc[H];
    for (int i = 0; i < H; i++) {
        hc[i] = (hold_client){.port = port};
        snprintf(hc[i].path, sizeof hc[i].path, "/hold/storm%d", i);
        cr_assert_eq(pthread_create(&ht[i], NULL, hold_client_main, &hc[i]), 0);
    }
    cr_assert(wait_completed(2000), "the storm is under way");
    for (int i = 0; i < H; i++) {
        char path[64];
        snprintf(path, sizeof path, "/hold/storm%d", i);
        record rec;
        struct timespec ts = deadline_in(WAIT_MS);
        while (!find_record(path, &rec)) { /* the record appears under PT.lock + broadcast */
            pthread_mutex_lock(&PT.lock);
            int rc = pthread_cond_timedwait(&PT.cond, &PT.lock, &ts);
            pthread_mutex_unlock(&PT.lock);
            cr_assert_neq(rc, ETIMEDOUT, "%s reached the core", path);
        }
    }
    F.vt->stop(F.inst);
    for (int i = 0; i < H; i++) {
        pthread_join(ht[i], NULL);
        cr_assert_eq(hc[i].status, 503, "held request %d got %d", i, hc[i].status);
    }
    atomic_store(&stopped, 1);
    int answered = 0, bad = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        answered += args[i].answered;
        bad += args[i].bad;
        if (args[i].bad)
            fprintf(stderr, "storm %d: %s\n", i, args[i].first_bad);
    }
    cr_assert_eq(bad, 0);
    cr_assert_geq(answered, 2000);
    /* The core answers the held requests after the transport is gone; then everything it
     * was handed is completed and nothing of the transport is left. */
    F.vt->destroy(F.inst);
    F.inst = NULL;
    release_holds();
    pthread_mutex_lock(&PT.lock);
    int submitted = F.submitted;
    pthread_mutex_unlock(&PT.lock);
    cr_assert(wait_completed(submitted));
    cr_assert_eq(atomic_load(&PT.live_allocs), 0);
}

Test(http, access_log_line)
{
    int port = server_start();
    client c;
    reply r;
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_request(&c, "POST", "/sync/logme?token=SECRETQ",
                                "Authorization: Bearer SECRETTOKEN\r\n", "SECRETBODY", &r),
                 0);
    reply_free(&r);
    client_close(&c);
    cr_assert(wait_log("INFO http: POST /sync/logme 200 "));
    cr_assert(log_contains(" 127.0.0.1:"));
    cr_assert(log_contains("ms 127.0.0.1:"));
    cr_assert_not(log_contains("SECRET"));
}

Test(http, access_log_off)
{
    F.settings.access_log = 0;
    int port = server_start();
    client c;
    reply r;
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_request(&c, "GET", "/sync/quiet", NULL, NULL, &r), 0);
    reply_free(&r);
    client_close(&c);
    F.vt->stop(F.inst);
    cr_assert_not(log_contains("/sync/quiet"));
}

Test(http, busy_port_fails_cleanly)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(fd, 4), 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    F.settings.port = ntohs(a.sin_port);

    gs_error err;
    memset(&err, 0, sizeof err);
    cr_assert_eq(F.vt->create(&F.host, F.config, &F.inst, &err), GS_OK);
    cr_assert_eq(F.vt->start(F.inst, &err), GS_ERROR);
    char want[64];
    snprintf(want, sizeof want, "cannot listen on 127.0.0.1:%d: address already in use",
             F.settings.port);
    cr_assert_str_eq(err.message, want);
    cr_assert_str_eq(err.code, "INTERNAL_ERROR");
    cr_assert_eq(F.vt->bound_port(F.inst), -1);
    F.vt->stop(F.inst); /* stop after a failed start is harmless */
    close(fd);
}

Test(http, bad_settings_refused)
{
    gs_error err;
    void *inst = NULL;
    snprintf(F.bind_host, sizeof F.bind_host, "not-an-address");
    cr_assert_eq(F.vt->create(&F.host, F.config, &inst, &err), GS_ERROR);
    cr_assert_null(inst);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "not-an-address"), "%s", err.message);

    snprintf(F.bind_host, sizeof F.bind_host, "127.0.0.1");
    F.settings.port = 70000;
    cr_assert_eq(F.vt->create(&F.host, F.config, &inst, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    F.settings.port = 0;

    F.settings.max_body_bytes = 0;
    cr_assert_eq(F.vt->create(&F.host, F.config, &inst, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_MAX_BODY_BYTES");
    F.settings.max_body_bytes = 1024;

    /* A config value outside its key's bounds (a host that skipped validation). */
    config_set_int("connection_memory_bytes", 100);
    cr_assert_eq(F.vt->create(&F.host, F.config, &inst, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "connection_memory_bytes"), "%s", err.message);
    config_set_int("connection_memory_bytes", 65536);

    /* A host with no config struct gets the table's defaults. */
    cr_assert_eq(F.vt->create(&F.host, NULL, &inst, &err), GS_OK, "%s", err.message);
    F.vt->destroy(inst);
}

Test(http, ipv6_loopback)
{
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::1", &a.sin6_addr);
    int ok = probe >= 0 && bind(probe, (struct sockaddr *)&a, sizeof a) == 0;
    if (probe >= 0)
        close(probe);
    if (!ok)
        cr_skip_test("no IPv6 loopback here");
    snprintf(F.bind_host, sizeof F.bind_host, "::1");
    int port = server_start();
    client c;
    reply r;
    cr_assert_eq(client_open(&c, AF_INET6, port), 0);
    cr_assert_eq(client_request(&c, "GET", "/async/v6", NULL, NULL, &r), 0);
    expect_echo(&r, "GET", "/async/v6", 0);
    reply_free(&r);
    client_close(&c);
    cr_assert(wait_log("GET /async/v6 200 "));
    cr_assert(log_contains("[::1]:"));
    cr_assert(log_contains("on [::1]:0"));
}

/* ------------------------------------------------------------------------------------------ */
/* One port for HTTP and WebSocket: the acceptor peeks, upgrades go to host->upgrade_handoff   */

static int handoff_count(void)
{
    pthread_mutex_lock(&PT.lock);
    int n = F.handoffs;
    pthread_mutex_unlock(&PT.lock);
    return n;
}

#define UPGRADE_HEADERS                                                                            \
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"                   \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"

/* Declined (no WebSocket transport): the upgrade is an ordinary GET for the core. */
Test(http, upgrade_declined_goes_to_the_core)
{
    int port = server_start();
    cr_assert(wait_log("WebSocket upgrades handed over"), "the acceptor serves the port");
    client c;
    reply r;
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_request(&c, "GET", "/db/main", UPGRADE_HEADERS, NULL, &r), 0);
    expect_echo(&r, "GET", "/db/main", 0);
    reply_free(&r);
    client_close(&c);
    cr_assert_eq(handoff_count(), 1);
    pthread_mutex_lock(&PT.lock);
    cr_assert_eq(F.handoff_family, AF_INET);
    pthread_mutex_unlock(&PT.lock);

    /* Plain requests, keep-alive after a first request, POSTs and other upgrades are never
     * offered to the WebSocket side. */
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_request(&c, "POST", "/sync/p", NULL, "x", &r), 0);
    expect_echo(&r, "POST", "/sync/p", 1);
    reply_free(&r);
    cr_assert_eq(client_request(&c, "GET", "/sync/g", NULL, NULL, &r), 0);
    expect_echo(&r, "GET", "/sync/g", 0);
    reply_free(&r);
    /* After the first request the connection is libmicrohttpd's: not peeked again. */
    cr_assert_eq(client_request(&c, "GET", "/db/second", UPGRADE_HEADERS, NULL, &r), 0);
    expect_echo(&r, "GET", "/db/second", 0);
    reply_free(&r);
    client_close(&c);
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(
        client_request(&c, "GET", "/sync/h2c", "Upgrade: h2c\r\nConnection: Upgrade\r\n", NULL, &r),
        0);
    expect_echo(&r, "GET", "/sync/h2c", 0);
    reply_free(&r);
    client_close(&c);
    cr_assert_eq(handoff_count(), 1);
}

/* Taken: the other side reads the request head from the first byte (peeking consumed
 * nothing) and answers on the same connection. */
static void expect_taken(int port, const char *request, const char *want_in_head)
{
    client c;
    int before;
    pthread_mutex_lock(&PT.lock);
    before = F.taken_done;
    pthread_mutex_unlock(&PT.lock);
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_writes(&c, request), 0);
    while (!memmem(c.buf, c.len, "\r\n\r\n", 4))
        cr_assert_gt(client_fill(&c), 0, "an answer from the taker");
    cr_assert(!strncmp(c.buf, "HTTP/1.1 101 ", 13), "got %.*s", (int)c.len, c.buf);
    client_close(&c);
    int want = before + 1;
    cr_assert(pt_wait_at_least(&F.taken_done, want));
    pthread_mutex_lock(&PT.lock);
    cr_assert_str_eq(F.taken_head, request, "the head arrives whole and unread");
    cr_assert(strstr(F.taken_head, want_in_head));
    pthread_mutex_unlock(&PT.lock);
    pthread_join(F.taker, NULL);
    F.taker_running = 0;
}

Test(http, upgrade_taken_with_the_head_unread)
{
    F.handoff_mode = HANDOFF_TAKE;
    int port = server_start();
    expect_taken(port, "GET /db/a HTTP/1.1\r\nHost: t\r\n" UPGRADE_HEADERS "\r\n", "/db/a");
    /* Header names and the token compare case-insensitively; the token may be in a list. */
    expect_taken(port,
                 "GET /db/b HTTP/1.1\r\nHost: t\r\nconnection: upgrade\r\n"
                 "UPGRADE :  foo/2, WebSocket \r\n\r\n",
                 "/db/b");
    cr_assert_eq(handoff_count(), 2);
    /* The port still serves HTTP. */
    client c;
    reply r;
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_request(&c, "GET", "/async/after", NULL, NULL, &r), 0);
    expect_echo(&r, "GET", "/async/after", 0);
    reply_free(&r);
    client_close(&c);
}

/* The head arrives in pieces: nothing is decided until it is complete. */
Test(http, upgrade_head_in_pieces)
{
    F.handoff_mode = HANDOFF_TAKE;
    int port = server_start();
    client c;
    cr_assert_eq(client_connect(&c, port), 0);
    const char *parts[] = {"GE", "T /db/slow HTTP/1.1\r\nHost: t\r\nUpgr",
                           "ade: websocket\r\nConnection: Upgrade\r\n", "\r\n"};
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(client_writes(&c, parts[i]), 0);
        if (i < 3) {
            /* Not decided yet: no hand-off and no answer (a negative, checked for 150 ms). */
            struct pollfd pfd = {.fd = c.fd, .events = POLLIN};
            cr_assert_eq(poll(&pfd, 1, 150), 0, "no answer after part %zu", i);
            cr_assert_eq(handoff_count(), 0);
        }
    }
    while (!memmem(c.buf, c.len, "\r\n\r\n", 4))
        cr_assert_gt(client_fill(&c), 0);
    cr_assert(!strncmp(c.buf, "HTTP/1.1 101 ", 13), "got %.*s", (int)c.len, c.buf);
    client_close(&c);
    cr_assert(pt_wait_at_least(&F.taken_done, 1));
    pthread_mutex_lock(&PT.lock);
    cr_assert_str_eq(F.taken_head, "GET /db/slow HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                                   "Connection: Upgrade\r\n\r\n");
    pthread_mutex_unlock(&PT.lock);
}

/* A silent connection holds nobody up and is closed after peek_timeout_ms. */
Test(http, silent_connection_closed_after_peek_timeout)
{
    config_set_int("peek_timeout_ms", 300);
    int port = server_start();
    client silent, c;
    reply r;
    cr_assert_eq(client_connect(&silent, port), 0);
    uint64_t t0 = now_ms();
    /* Meanwhile other clients are served at once. */
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(client_connect(&c, port), 0);
        cr_assert_eq(client_request(&c, "GET", "/sync/busy", NULL, NULL, &r), 0);
        expect_echo(&r, "GET", "/sync/busy", 0);
        reply_free(&r);
        client_close(&c);
    }
    cr_assert(client_sees_close(&silent), "the silent connection is closed");
    uint64_t took = now_ms() - t0;
    cr_assert_geq(took, 250);
    cr_assert_lt(took, 5000);
    client_close(&silent);
    cr_assert(wait_log("sent nothing in time"));

    /* A connection that sent part of a head by the deadline goes to libmicrohttpd, which
     * answers once the rest arrives. */
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_writes(&c, "GET /sync/late HT"), 0);
    struct pollfd pfd = {.fd = c.fd, .events = POLLIN};
    cr_assert_eq(poll(&pfd, 1, 600), 0, "nothing is answered before the head is complete");
    cr_assert_eq(client_writes(&c, "TP/1.1\r\nHost: t\r\n\r\n"), 0);
    cr_assert_eq(client_read_reply(&c, &r), 0);
    expect_echo(&r, "GET", "/sync/late", 0);
    reply_free(&r);
    client_close(&c);
    cr_assert_eq(handoff_count(), 0);
}

/* A head longer than the peek bound is decided without the rest: libmicrohttpd's. */
Test(http, long_head_goes_to_the_daemon)
{
    F.handoff_mode = HANDOFF_TAKE;
    int port = server_start();
    char *extra = malloc(12000);
    size_t n = 0;
    for (int i = 0; i < 400; i++)
        n += (size_t)sprintf(extra + n, "X-Pad-%03d: 0123456789\r\n", i);
    sprintf(extra + n, UPGRADE_HEADERS);
    client c;
    reply r;
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_request(&c, "GET", "/sync/long", extra, NULL, &r), 0);
    free(extra);
    expect_echo(&r, "GET", "/sync/long", 0);
    reply_free(&r);
    client_close(&c);
    cr_assert_eq(handoff_count(), 0);
}

/* A failing hand-off owns the fd (it closed it): logged, the client sees the close. */
Test(http, upgrade_handoff_failure)
{
    F.handoff_mode = HANDOFF_FAIL;
    int port = server_start();
    client c;
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_writes(&c, "GET /db/x HTTP/1.1\r\nHost: t\r\n" UPGRADE_HEADERS "\r\n"), 0);
    cr_assert(client_sees_close(&c));
    client_close(&c);
    cr_assert(wait_log("could not be handed over: SHUTDOWN: the WebSocket transport is stopping"));
    cr_assert(pt_wait_at_least(&F.handoffs, 1));
}

/* Without the hand-off (an ABI 1.0 host, the key off, or TLS) libmicrohttpd listens itself
 * and an upgrade is an ordinary GET. */
static void expect_no_handoff(int port)
{
    client c;
    reply r;
    cr_assert_not(log_contains("WebSocket upgrades handed over"));
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_request(&c, "GET", "/db/plain", UPGRADE_HEADERS, NULL, &r), 0);
    expect_echo(&r, "GET", "/db/plain", 0);
    reply_free(&r);
    client_close(&c);
    cr_assert_eq(handoff_count(), 0);
}

Test(http, abi_1_0_host_keeps_mhd_listener)
{
    F.host.struct_size = (uint32_t)offsetof(gs_host, ws_open);
    F.handoff_mode = HANDOFF_TAKE;
    expect_no_handoff(server_start());
}

Test(http, upgrade_handoff_key_off)
{
    config_set_int("upgrade_handoff", 0);
    F.handoff_mode = HANDOFF_TAKE;
    expect_no_handoff(server_start());
}

/* Many new connections at once through the acceptor: every one is answered. */
Test(http, many_new_connections_race_the_acceptor)
{
    F.settings.io_threads = 3;
    F.settings.access_log = 0;
    F.handoff_mode = HANDOFF_DECLINE;
    int port = server_start();
    enum { N = 24 };
    pthread_t t[N];
    hold_client hc[N];
    for (int i = 0; i < N; i++) {
        hc[i] = (hold_client){.port = port};
        snprintf(hc[i].path, sizeof hc[i].path, "/async/race%d", i);
        cr_assert_eq(pthread_create(&t[i], NULL, hold_client_main, &hc[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(hc[i].status, 200, "client %d got %d", i, hc[i].status);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* HTTPS                                                                                      */

Test(http, https_round_trip)
{
    if (pt_make_certificate("gs-test-http") != 0)
        cr_skip_test("no openssl CLI to make a test certificate");
    F.settings.tls_cert_file = PT.cert_path;
    F.settings.tls_key_file = PT.key_path;
    int port = server_start();
    cr_assert(wait_log("serving HTTPS on 127.0.0.1:0"));

    client c;
    reply r;
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_start_tls(&c, PT.cert_path), 0);
    cr_assert_eq(client_request(&c, "GET", "/sync/tls?a=b", NULL, NULL, &r), 0);
    expect_echo(&r, "GET", "/sync/tls", 0);
    reply_free(&r);
    cr_assert_eq(client_request(&c, "POST", "/async/tls", NULL, "over tls", &r), 0);
    expect_echo(&r, "POST", "/async/tls", 8);
    cr_assert_not(r.conn_close);
    reply_free(&r);
    client_close(&c);

    /* With TLS nothing is peeked (it would be ciphertext): an upgrade is an ordinary GET. */
    F.handoff_mode = HANDOFF_TAKE;
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_start_tls(&c, PT.cert_path), 0);
    cr_assert_eq(client_request(&c, "GET", "/db/wss", UPGRADE_HEADERS, NULL, &r), 0);
    expect_echo(&r, "GET", "/db/wss", 0);
    reply_free(&r);
    client_close(&c);
    cr_assert_eq(handoff_count(), 0);
    cr_assert_not(log_contains("WebSocket upgrades handed over"));

    /* Plain HTTP to the TLS port gets no HTTP answer. */
    cr_assert_eq(client_connect(&c, port), 0);
    cr_assert_eq(client_writes(&c, "GET /sync/plain HTTP/1.1\r\nHost: t\r\n\r\n"), 0);
    cr_assert_neq(client_read_reply(&c, &r), 0);
    client_close(&c);
    record rec;
    cr_assert_not(find_record("/sync/plain", &rec));
}

Test(http, https_config_errors)
{
    gs_error err;
    void *inst = NULL;
    cr_assert_eq(pt_make_tmpdir("gs-test-http"), 0);

    /* Only one of the pair. */
    F.settings.tls_cert_file = "/nonexistent/cert.pem";
    cr_assert_eq(F.vt->create(&F.host, F.config, &inst, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "tls_key_file"), "%s", err.message);

    /* Both set, the certificate cannot be read: start() names the file. */
    F.settings.tls_key_file = "/nonexistent/key.pem";
    cr_assert_eq(F.vt->create(&F.host, F.config, &F.inst, &err), GS_OK);
    cr_assert_eq(F.vt->start(F.inst, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "/nonexistent/cert.pem"), "%s", err.message);
    cr_assert(strstr(err.message, "no such file"), "%s", err.message);
    F.vt->destroy(F.inst);
    F.inst = NULL;

    /* Files that are not PEM. */
    char cert[600], key[600];
    snprintf(cert, sizeof cert, "%s/cert.pem", PT.tmpdir);
    snprintf(key, sizeof key, "%s/key.pem", PT.tmpdir);
    FILE *f = fopen(cert, "w");
    fputs("not a certificate\n", f);
    fclose(f);
    f = fopen(key, "w");
    fputs("not a key\n", f);
    fclose(f);
    F.settings.tls_cert_file = cert;
    F.settings.tls_key_file = key;
    cr_assert_eq(F.vt->create(&F.host, F.config, &F.inst, &err), GS_OK);
    cr_assert_eq(F.vt->start(F.inst, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "PEM"), "%s", err.message);

    /* PEM-looking garbage: libmicrohttpd/GnuTLS refuse it, and the message says so. */
    f = fopen(cert, "w");
    fputs("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", f);
    fclose(f);
    f = fopen(key, "w");
    fputs("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", f);
    fclose(f);
    cr_assert_eq(F.vt->start(F.inst, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "cannot start HTTPS on 127.0.0.1:0"), "%s", err.message);
}
