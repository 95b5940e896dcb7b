/*
 * transports/ws against a fake host: dlopen gs_transport_ws.so, hand it a gs_host that this
 * file fills, and talk to it over real sockets with a small WebSocket client (RFC 6455:
 * handshake with Sec-WebSocket-Accept check, masked and fragmented frames, ping/pong, close;
 * plain TCP or GnuTLS).
 *
 * Connections reach the plugin the way the http transport hands them over: this file
 * listens, accepts, waits until the request head is in the socket (peeking, like the http
 * acceptor) and calls adopt_upgrade. Some tests use the plugin's own port instead.
 *
 * The fake core (ws_open / ws_message / ws_too_large / ws_close):
 *   ws_open by path: /db/denied 4401, /db/forbidden 4403, /db/missing 1008, /db/teapot an
 *   HTTP 418 refusal; an offer without sirannon.v1 gets 400 UNSUPPORTED_SUBPROTOCOL; anything
 *   else opens a session (sirannon.v1 selected when offered).
 *   ws_message: "echo:X" answers X, "big:N" answers one N-byte frame, "close:CODE:REASON"
 *   closes, "flood:N:SIZE" sends N frames of SIZE bytes until a send is refused, and
 *   "sum" answers the length and byte sum of the message (for reassembly checks). Answers
 *   come from the fake core's worker thread, never from the plugin's thread.
 *   ws_too_large answers "too-large". ws_close is counted per session (must be exactly one).
 *
 * Every wait is bounded: condition waits with deadlines, sockets with SO_RCVTIMEO.
 */
#include <gatestream/client_transport.h>

#include "plugin_test_host.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <gnutls/crypto.h>
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
#include <time.h>
#include <unistd.h>

/* ========================================================================================== */
/* The fake host                                                                              */

typedef struct fsess {
    struct fsess *next;
    int id;
    gs_ws_sink sink;
    char path[256];
    pthread_mutex_t lock; /* the core's side of the sink contract: no send after ws_close */
    int closed;           /* ws_close calls */
    int messages;
    int too_large;
    int sends_ok, sends_again, sends_error;
} fsess;

typedef struct task {
    struct task *next;
    fsess *s;
    char *msg;
    size_t len;
} task;

typedef struct open_record {
    char path[256];
    char offer[4096], auth[256], origin[256], cookie[256], agent[256], custom[256];
    char remote[64];
    int header_count;
} open_record;

static struct {
    gs_host host;
    gs_server_settings settings;
    char bind_host[64];

    fsess *sessions;
    int session_count, opens, refusals, closes;
    open_record last_open;

    task *tasks, *tasks_tail;
    int worker_stop, worker_running;
    pthread_t worker;

    /* our own "http transport": accepts and hands over */
    int lfd, lport;
    int last_server_fd; /* a dup of the last socket handed over, to watch its send side */
    int acceptor_running;
    atomic_int acceptor_stop;
    pthread_t acceptor;

    void *dl;
    const gs_plugin_descriptor *desc;
    const gs_client_transport_vtable *vt;
    void *config;
    void *inst;
} F;

static gs_status fh_post(const gs_host *host, void (*fn)(void *arg), void *arg)
{
    (void)host;
    (void)fn;
    (void)arg;
    return GS_AGAIN;
}

static const gs_server_settings *fh_settings(const gs_host *host)
{
    (void)host;
    return &F.settings;
}

static gs_status fh_api_submit(const gs_host *host, const gs_request *q)
{
    (void)host;
    static const char body[] = "{\"error\":{\"code\":\"NOT_FOUND\"}}";
    gs_response r = {.struct_size = sizeof r,
                     .status = 404,
                     .content_type = "application/json",
                     .body = body,
                     .body_len = sizeof body - 1};
    q->complete(q->user, &r);
    return GS_OK;
}

static const char *hdr(const gs_ws_open_request *req, const char *name)
{
    for (size_t i = 0; i < req->header_count; i++)
        if (!strcasecmp(req->headers[i].name, name))
            return req->headers[i].value;
    return NULL;
}

static int offer_has_sirannon(const char *offer)
{
    if (!offer)
        return 0;
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", offer);
    for (char *save = NULL, *t = strtok_r(buf, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save))
        if (!strcmp(t, "sirannon.v1"))
            return 1;
    return 0;
}

static gs_status fh_ws_open(const gs_host *host, const gs_ws_open_request *req,
                            gs_ws_open_result *res, gs_error *err)
{
    (void)host;
    /* Runs on the plugin's thread: no Criterion assertion here. The offer may come in
     * several header lines; they are joined as one list. */
    char joined[4096] = "";
    for (size_t i = 0; i < req->header_count; i++)
        if (!strcasecmp(req->headers[i].name, "sec-websocket-protocol"))
            snprintf(joined + strlen(joined), sizeof joined - strlen(joined), "%s%s",
                     joined[0] ? ", " : "", req->headers[i].value);
    const char *offer = joined[0] ? joined : NULL;
    pthread_mutex_lock(&PT.lock);
    open_record *r = &F.last_open;
    memset(r, 0, sizeof *r);
    snprintf(r->path, sizeof r->path, "%s", req->path);
    snprintf(r->offer, sizeof r->offer, "%s", offer ? offer : "");
    snprintf(r->auth, sizeof r->auth, "%s",
             hdr(req, "authorization") ? hdr(req, "authorization") : "");
    snprintf(r->origin, sizeof r->origin, "%s", hdr(req, "origin") ? hdr(req, "origin") : "");
    snprintf(r->cookie, sizeof r->cookie, "%s", hdr(req, "cookie") ? hdr(req, "cookie") : "");
    snprintf(r->agent, sizeof r->agent, "%s", hdr(req, "user-agent") ? hdr(req, "user-agent") : "");
    snprintf(r->custom, sizeof r->custom, "%s", hdr(req, "x-custom") ? hdr(req, "x-custom") : "");
    snprintf(r->remote, sizeof r->remote, "%s", req->remote_address ? req->remote_address : "");
    r->header_count = (int)req->header_count;
    F.opens++;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);

    int refuse_close = 0;
    const char *reason = NULL;
    if (!strcmp(req->path, "/db/denied")) {
        refuse_close = 4401;
        reason = "UNAUTHORIZED: a bearer token is required";
    } else if (!strcmp(req->path, "/db/forbidden")) {
        refuse_close = 4403;
        reason = "FORBIDDEN: not yours";
    } else if (!strcmp(req->path, "/db/missing")) {
        refuse_close = 1008;
        reason = "DATABASE_NOT_FOUND: no database 'missing'";
    }
    if (refuse_close || !strcmp(req->path, "/db/teapot") ||
        (offer && offer[0] && !offer_has_sirannon(offer))) {
        pthread_mutex_lock(&PT.lock);
        F.refusals++;
        pthread_mutex_unlock(&PT.lock);
        if (refuse_close) {
            res->close_code = refuse_close;
            snprintf(res->reason, sizeof res->reason, "%s", reason);
            fh_error_set(err, 401, "UNAUTHORIZED", "refused");
        } else if (!strcmp(req->path, "/db/teapot")) {
            res->http_status = 418;
            snprintf(res->body, sizeof res->body,
                     "{\"error\":{\"code\":\"TEAPOT\",\"message\":\"short and stout\","
                     "\"details\":{}}}");
            fh_error_set(err, 418, "TEAPOT", "short and stout");
        } else {
            res->http_status = 400;
            snprintf(res->body, sizeof res->body,
                     "{\"error\":{\"code\":\"UNSUPPORTED_SUBPROTOCOL\",\"message\":\"offer "
                     "sirannon.v1\",\"details\":{}}}");
            fh_error_set(err, 400, "UNSUPPORTED_SUBPROTOCOL", "offer sirannon.v1");
        }
        return GS_ERROR;
    }

    fsess *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    pthread_mutex_init(&s->lock, NULL);
    s->sink = *req->sink;
    snprintf(s->path, sizeof s->path, "%s", req->path);
    pthread_mutex_lock(&PT.lock);
    s->id = ++F.session_count;
    s->next = F.sessions;
    F.sessions = s;
    pthread_mutex_unlock(&PT.lock);
    res->session = s;
    res->subprotocol = offer && offer[0] ? "sirannon.v1" : NULL;
    return GS_OK;
}

static void fh_ws_message(const gs_host *host, void *session, const char *data, size_t len)
{
    (void)host;
    fsess *s = session;
    task *t = calloc(1, sizeof *t);
    if (!t)
        abort();
    t->s = s;
    t->msg = malloc(len + 1);
    memcpy(t->msg, data, len);
    t->msg[len] = '\0';
    t->len = len;
    pthread_mutex_lock(&PT.lock);
    s->messages++;
    if (F.tasks_tail)
        F.tasks_tail->next = t;
    else
        F.tasks = t;
    F.tasks_tail = t;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
}

static void fh_ws_too_large(const gs_host *host, void *session)
{
    fsess *s = session;
    pthread_mutex_lock(&PT.lock);
    s->too_large++;
    pthread_mutex_unlock(&PT.lock);
    fh_ws_message(host, session, "echo:too-large", strlen("echo:too-large"));
}

static void fh_ws_close(const gs_host *host, void *session)
{
    (void)host;
    fsess *s = session;
    pthread_mutex_lock(&s->lock); /* waits for a send in progress, as the core does */
    s->closed++;
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_lock(&PT.lock);
    F.closes++;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
}

/* The fake core's worker: answers messages through the sink, off the plugin's thread. */
static gs_status core_send(fsess *s, const char *data, size_t len)
{
    pthread_mutex_lock(&s->lock);
    gs_status st = GS_ERROR;
    if (!s->closed)
        st = s->sink.send(s->sink.user, data, len);
    if (st == GS_OK)
        s->sends_ok++;
    else if (st == GS_AGAIN)
        s->sends_again++;
    else
        s->sends_error++;
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_lock(&PT.lock);
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
    return st;
}

static void run_task(task *t)
{
    fsess *s = t->s;
    if (!strncmp(t->msg, "echo:", 5)) {
        core_send(s, t->msg + 5, t->len - 5);
    } else if (!strncmp(t->msg, "big:", 4)) {
        size_t n = strtoul(t->msg + 4, NULL, 10);
        char *b = malloc(n + 1);
        for (size_t i = 0; i < n; i++)
            b[i] = (char)('a' + i % 26);
        core_send(s, b, n);
        free(b);
    } else if (!strncmp(t->msg, "close:", 6)) {
        int code = atoi(t->msg + 6);
        const char *reason = strchr(t->msg + 6, ':');
        pthread_mutex_lock(&s->lock);
        if (!s->closed)
            s->sink.close(s->sink.user, code, reason ? reason + 1 : "");
        pthread_mutex_unlock(&s->lock);
    } else if (!strncmp(t->msg, "flood:", 6)) {
        char *end = NULL;
        long n = strtol(t->msg + 6, &end, 10);
        size_t size = end && *end == ':' ? strtoul(end + 1, NULL, 10) : 1024;
        char *b = malloc(size);
        memset(b, 'f', size);
        for (long i = 0; i < n; i++)
            if (core_send(s, b, size) != GS_OK)
                break; /* the core sends nothing more after GS_AGAIN */
        free(b);
    } else if (!strcmp(t->msg, "sum") || !strncmp(t->msg, "sum:", 4)) {
        uint32_t sum = 0;
        for (size_t i = 0; i < t->len; i++)
            sum += (unsigned char)t->msg[i];
        char out[64];
        int n = snprintf(out, sizeof out, "%zu:%u", t->len, sum);
        core_send(s, out, (size_t)n);
    }
}

static void *worker_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&PT.lock);
    for (;;) {
        task *t = F.tasks;
        if (t) {
            F.tasks = t->next;
            if (!F.tasks)
                F.tasks_tail = NULL;
            pthread_mutex_unlock(&PT.lock);
            run_task(t);
            free(t->msg);
            free(t);
            pthread_mutex_lock(&PT.lock);
            continue;
        }
        if (F.worker_stop)
            break;
        pthread_cond_wait(&PT.cond, &PT.lock);
    }
    pthread_mutex_unlock(&PT.lock);
    return NULL;
}

static int wait_closes(int n)
{
    return pt_wait_at_least(&F.closes, n);
}

static fsess *session_by_id(int id)
{
    pthread_mutex_lock(&PT.lock);
    fsess *s = F.sessions;
    while (s && s->id != id)
        s = s->next;
    pthread_mutex_unlock(&PT.lock);
    return s;
}

static int pred_sends_done(void *arg)
{
    fsess *s = arg;
    return s->sends_again + s->sends_error > 0;
}

/* ========================================================================================== */
/* Loading and driving the plugin                                                             */

static const gs_config_key *find_key(const char *name)
{
    for (size_t i = 0; i < F.desc->config_key_count; i++) {
        const gs_config_key *k = (const gs_config_key *)((const char *)F.desc->config_keys +
                                                         i * F.desc->config_key_size);
        if (!strcmp(k->name, name))
            return k;
    }
    cr_assert_fail("the ws plugin has no key %s", name);
    return NULL;
}

static void config_set_int(const char *key, int64_t value)
{
    const gs_config_key *k = find_key(key);
    cr_assert_eq(k->type, GS_CFG_INT, "key %s is not INT", key);
    memcpy((char *)F.config + k->offset, &value, sizeof value);
}

static void config_set_str(const char *key, const char *value)
{
    const gs_config_key *k = find_key(key);
    cr_assert_eq(k->type, GS_CFG_STRING, "key %s is not STRING", key);
    memcpy((char *)F.config + k->offset, &value, sizeof value);
}

static void load_plugin(void)
{
    F.desc = pt_load_descriptor("gs_transport_ws.so", &F.dl);
    F.vt = F.desc->vtable;
    /* The config struct, filled from the key table's defaults as the core would. */
    F.config = calloc(1, F.desc->config_struct_size);
    cr_assert_not_null(F.config);
    for (size_t i = 0; i < F.desc->config_key_count; i++) {
        const gs_config_key *k = (const gs_config_key *)((const char *)F.desc->config_keys +
                                                         i * F.desc->config_key_size);
        cr_assert(k->help && strlen(k->help) > 10, "key %s has help", k->name);
        if (k->type == GS_CFG_INT) {
            cr_assert_not_null(k->default_value);
            int64_t v = strtoll(k->default_value, NULL, 10);
            cr_assert(k->min >= k->max || (v >= k->min && v <= k->max));
            memcpy((char *)F.config + k->offset, &v, sizeof v);
        } else {
            cr_assert(k->type == GS_CFG_STRING || k->type == GS_CFG_STRING_LIST, "%s", k->name);
            cr_assert_null(k->default_value);
        }
    }
    config_set_int("stop_timeout_ms", 3000);
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    memset(&F, 0, sizeof F);
    F.lfd = -1;
    F.last_server_fd = -1;
    pt_init();
    PT.drop_debug_logs = 1; /* only what the plugin says above DEBUG is kept */

    pt_host_init(&F.host, &F);
    F.host.post = fh_post;
    F.host.server_settings = fh_settings;
    F.host.api_submit = fh_api_submit;
    F.host.ws_open = fh_ws_open;
    F.host.ws_message = fh_ws_message;
    F.host.ws_too_large = fh_ws_too_large;
    F.host.ws_close = fh_ws_close;

    pt_settings_init(&F.settings, F.bind_host, sizeof F.bind_host);
    F.settings.idle_timeout_s = 120;

    cr_assert_eq(pthread_create(&F.worker, NULL, worker_main, NULL), 0);
    F.worker_running = 1;
    load_plugin();
}

static void acceptor_stop(void);

static void teardown(void)
{
    acceptor_stop();
    if (F.inst) {
        F.vt->destroy(F.inst);
        F.inst = NULL;
    }
    /* Every session got exactly one ws_close, and nothing of the plugin is left. */
    for (fsess *s = F.sessions; s; s = s->next)
        cr_expect_eq(s->closed, 1, "session %d (%s) got %d ws_close calls", s->id, s->path,
                     s->closed);
    cr_expect_eq(atomic_load(&PT.live_allocs), 0, "the plugin leaked %ld host allocations",
                 atomic_load(&PT.live_allocs));
    if (F.worker_running) {
        pthread_mutex_lock(&PT.lock);
        F.worker_stop = 1;
        pthread_cond_broadcast(&PT.cond);
        pthread_mutex_unlock(&PT.lock);
        pthread_join(F.worker, NULL);
    }
    while (F.sessions) {
        fsess *s = F.sessions;
        F.sessions = s->next;
        pthread_mutex_destroy(&s->lock);
        free(s);
    }
    free(F.config);
    if (F.dl)
        dlclose(F.dl);
    pt_fini();
}

static void server_start(void)
{
    pt_create_start(F.vt, &F.host, F.config, &F.inst);
}

/* Our stand-in for the http transport: accept, wait for the head, hand the fd over. */
static void *acceptor_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&F.acceptor_stop)) {
        struct pollfd p = {.fd = F.lfd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(F.lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            continue;
        /* The head must be in the socket before the hand-over, as with the http transport. */
        uint64_t until = now_ms() + WAIT_MS;
        char buf[16384];
        while (now_ms() < until) {
            ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_PEEK);
            if (n > 0) {
                buf[n] = '\0';
                if (strstr(buf, "\r\n\r\n"))
                    break;
            } else if (n == 0) {
                break;
            }
            struct pollfd q = {.fd = fd, .events = POLLIN};
            poll(&q, 1, 20);
        }
        gs_error err;
        memset(&err, 0, sizeof err);
        pthread_mutex_lock(&PT.lock);
        if (F.last_server_fd >= 0)
            close(F.last_server_fd);
        F.last_server_fd = dup(fd);
        pthread_mutex_unlock(&PT.lock);
        if (F.vt->adopt_upgrade(F.inst, fd, (struct sockaddr *)&ss, sl, &err) != GS_OK)
            fprintf(stderr, "adopt_upgrade: %s %s\n", err.code, err.message);
    }
    return NULL;
}

/* Start the plugin and our acceptor; returns the port clients connect to. */
static int start_handoff(void)
{
    server_start();
    F.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int on = 1;
    setsockopt(F.lfd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    cr_assert_eq(bind(F.lfd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(F.lfd, 256), 0);
    socklen_t len = sizeof a;
    getsockname(F.lfd, (struct sockaddr *)&a, &len);
    F.lport = ntohs(a.sin_port);
    atomic_store(&F.acceptor_stop, 0);
    cr_assert_eq(pthread_create(&F.acceptor, NULL, acceptor_main, NULL), 0);
    F.acceptor_running = 1;
    return F.lport;
}

static void acceptor_stop(void)
{
    if (F.acceptor_running) {
        atomic_store(&F.acceptor_stop, 1);
        pthread_join(F.acceptor, NULL);
        F.acceptor_running = 0;
    }
    if (F.lfd >= 0)
        close(F.lfd);
    F.lfd = -1;
    if (F.last_server_fd >= 0)
        close(F.last_server_fd);
    F.last_server_fd = -1;
}

/* ========================================================================================== */
/* A small WebSocket client                                                                   */

enum { OP_CONT = 0, OP_TEXT = 1, OP_BIN = 2, OP_CLOSE = 8, OP_PING = 9, OP_PONG = 10 };

typedef struct wsc {
    int fd;
    gnutls_session_t tls;
    gnutls_certificate_credentials_t cred;
    unsigned char *buf;
    size_t len, cap;
    int status;      /* handshake answer */
    char head[8192]; /* its head */
    char body[2048]; /* its body (refusals) */
    int auto_pong;   /* answer pings */
    int pings;       /* pings seen */
    int close_code;  /* from the server's close frame, 1005 when it had none */
    char close_reason[128];
    char key[32];
} wsc;

static void b64(const unsigned char *in, size_t n, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = '\0';
}

static int wsc_tcp(wsc *c, int port, int rcvbuf)
{
    memset(c, 0, sizeof *c);
    c->fd = pt_tcp_connect(AF_INET, port, rcvbuf);
    return c->fd < 0 ? -1 : 0;
}

static void wsc_close(wsc *c)
{
    pt_conn_close(&c->fd, &c->tls, &c->cred);
    free(c->buf);
    c->buf = NULL;
}

static int wsc_start_tls(wsc *c, const char *ca_file)
{
    return pt_tls_start(c->fd, &c->tls, &c->cred, ca_file);
}

static int wsc_write(wsc *c, const void *data, size_t n)
{
    return pt_write_all(c->fd, c->tls, data, n);
}

/* Read more bytes. >0 read, 0 EOF, -1 error or timeout. */
static ssize_t wsc_fill(wsc *c)
{
    if (c->cap - c->len < 65536) {
        size_t cap = c->cap ? c->cap * 2 : 131072;
        unsigned char *nb = realloc(c->buf, cap);
        if (!nb)
            return -1;
        c->buf = nb;
        c->cap = cap;
    }
    for (;;) {
        ssize_t r = c->tls ? gnutls_record_recv(c->tls, c->buf + c->len, c->cap - c->len)
                           : recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (r < 0 && ((!c->tls && errno == EINTR) || (c->tls && r == GNUTLS_E_INTERRUPTED)))
            continue;
        if (r < 0 && c->tls && r == GNUTLS_E_PREMATURE_TERMINATION)
            return 0;
        if (r < 0 && c->tls && r == GNUTLS_E_AGAIN && errno != EAGAIN && errno != EWOULDBLOCK)
            continue; /* a TLS record without application data (a session ticket) */
        if (r < 0) {
            if (c->tls)
                fprintf(stderr, "TLS read: %s\n", gnutls_strerror((int)r));
            return -1;
        }
        c->len += (size_t)r;
        return r;
    }
}

static void wsc_consume(wsc *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

static const char *head_value(const char *head, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (!strncasecmp(line, name, nl) && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            snprintf(out, size, "%.*s", (int)(e ? (size_t)(e - v) : strlen(v)), v);
            return out;
        }
    }
    return NULL;
}

/* The opening handshake on a connected client. Returns the HTTP status, -1 on I/O failure.
 * A 101 is checked: Sec-WebSocket-Accept must match the key. */
static int wsc_handshake(wsc *c, const char *path, const char *extra)
{
    unsigned char raw[16];
    for (int i = 0; i < 16; i++)
        raw[i] = (unsigned char)rand();
    b64(raw, 16, c->key);
    char req[4096];
    snprintf(req, sizeof req,
             "GET %s HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
             path, c->key, extra ? extra : "");
    if (wsc_write(c, req, strlen(req)) != 0)
        return -1;
    unsigned char *end;
    while (!c->buf || !(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
        if (wsc_fill(c) <= 0) {
            fprintf(stderr, "handshake: no answer head (%zu bytes: %.*s)\n", c->len, (int)c->len,
                    c->buf ? (const char *)c->buf : "");
            return -1;
        }
    size_t hl = (size_t)(end - c->buf) + 4;
    if (hl >= sizeof c->head)
        return -1;
    memcpy(c->head, c->buf, hl);
    c->head[hl] = '\0';
    wsc_consume(c, hl);
    if (sscanf(c->head, "HTTP/1.1 %d", &c->status) != 1) {
        fprintf(stderr, "handshake: bad answer head: %s\n", c->head);
        return -1;
    }
    char v[256];
    if (c->status == 101) {
        char cat[128];
        snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", c->key);
        unsigned char sha[20];
        gnutls_hash_fast(GNUTLS_DIG_SHA1, cat, strlen(cat), sha);
        char want[64];
        b64(sha, 20, want);
        if (!head_value(c->head, "Sec-WebSocket-Accept", v, sizeof v) || strcmp(v, want) != 0) {
            fprintf(stderr, "bad Sec-WebSocket-Accept in %s\n", c->head);
            return -1;
        }
        return 101;
    }
    size_t cl = head_value(c->head, "Content-Length", v, sizeof v) ? strtoul(v, NULL, 10) : 0;
    while (c->len < cl)
        if (wsc_fill(c) <= 0) {
            fprintf(stderr, "handshake: body cut short (%zu of %zu bytes) after %s\n", c->len, cl,
                    c->head);
            return -1;
        }
    snprintf(c->body, sizeof c->body, "%.*s", (int)cl, (const char *)c->buf);
    wsc_consume(c, cl);
    return c->status;
}

static int wsc_open(wsc *c, int port, const char *path, const char *extra)
{
    if (wsc_tcp(c, port, 0) != 0)
        return -1;
    return wsc_handshake(c, path, extra);
}

/* Send one frame, masked (a client must mask). */
static int wsc_frame(wsc *c, int op, int fin, const void *payload, size_t n)
{
    unsigned char *f = malloc(n + 14);
    size_t h = 0;
    f[h++] = (unsigned char)((fin ? 0x80 : 0) | op);
    if (n < 126) {
        f[h++] = (unsigned char)(0x80 | n);
    } else if (n < 65536) {
        f[h++] = 0x80 | 126;
        f[h++] = (unsigned char)(n >> 8);
        f[h++] = (unsigned char)n;
    } else {
        f[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            f[h++] = (unsigned char)((uint64_t)n >> (8 * i));
    }
    unsigned char mask[4] = {(unsigned char)rand(), (unsigned char)rand(), (unsigned char)rand(),
                             (unsigned char)rand()};
    memcpy(f + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < n; i++)
        f[h + i] = ((const unsigned char *)payload)[i] ^ mask[i & 3];
    int rc = wsc_write(c, f, h + n);
    free(f);
    return rc;
}

static int wsc_text(wsc *c, const char *s)
{
    return wsc_frame(c, OP_TEXT, 1, s, strlen(s));
}

static int wsc_send_close(wsc *c, int code, const char *reason)
{
    unsigned char p[128];
    p[0] = (unsigned char)(code >> 8);
    p[1] = (unsigned char)code;
    size_t rl = strlen(reason);
    memcpy(p + 2, reason, rl);
    return wsc_frame(c, OP_CLOSE, 1, p, 2 + rl);
}

/* Read one frame (the server does not mask). */
static int wsc_read_frame(wsc *c, int *op, int *fin, unsigned char **payload, size_t *n)
{
    for (;;) {
        if (c->len >= 2) {
            unsigned char b1 = c->buf[1];
            if (b1 & 0x80)
                return -1; /* a server must not mask */
            size_t need = 2, len = b1 & 0x7f;
            if (len == 126)
                need += 2;
            else if (len == 127)
                need += 8;
            if (c->len >= need) {
                if (len == 126)
                    len = (size_t)c->buf[2] << 8 | c->buf[3];
                else if (len == 127) {
                    len = 0;
                    for (int i = 0; i < 8; i++)
                        len = len << 8 | c->buf[2 + i];
                }
                if (c->len >= need + len) {
                    *op = c->buf[0] & 0x0f;
                    *fin = (c->buf[0] & 0x80) != 0;
                    *payload = malloc(len + 1);
                    memcpy(*payload, c->buf + need, len);
                    (*payload)[len] = 0;
                    *n = len;
                    wsc_consume(c, need + len);
                    return 0;
                }
            }
        }
        if (wsc_fill(c) <= 0)
            return -1;
    }
}

/* Read one message. Returns its opcode (OP_TEXT, OP_BIN, or OP_CLOSE with close_code set),
 * -1 on EOF or error. Pings are counted and answered when auto_pong; fragments joined. */
static int wsc_read_msg(wsc *c, char **data, size_t *len)
{
    char *msg = NULL;
    size_t mlen = 0;
    int mop = -1;
    for (;;) {
        int op, fin;
        unsigned char *p;
        size_t n;
        if (wsc_read_frame(c, &op, &fin, &p, &n) != 0) {
            free(msg);
            return -1;
        }
        if (op == OP_PING) {
            c->pings++;
            if (c->auto_pong)
                wsc_frame(c, OP_PONG, 1, p, n);
            free(p);
            continue;
        }
        if (op == OP_PONG) {
            free(p);
            continue;
        }
        if (op == OP_CLOSE) {
            c->close_code = n >= 2 ? (p[0] << 8 | p[1]) : 1005;
            snprintf(c->close_reason, sizeof c->close_reason, "%.*s", n > 2 ? (int)(n - 2) : 0,
                     n > 2 ? (const char *)p + 2 : "");
            free(p);
            free(msg);
            return OP_CLOSE;
        }
        if (op != OP_CONT)
            mop = op;
        char *nm = realloc(msg, mlen + n + 1);
        memcpy(nm + mlen, p, n);
        mlen += n;
        nm[mlen] = '\0';
        msg = nm;
        free(p);
        if (fin) {
            *data = msg;
            *len = mlen;
            return mop;
        }
    }
}

/* Send a text message and expect `want` back. */
static void expect_echo(wsc *c, const char *text)
{
    char m[512];
    snprintf(m, sizeof m, "echo:%s", text);
    cr_assert_eq(wsc_text(c, m), 0);
    char *data = NULL;
    size_t len = 0;
    int op = wsc_read_msg(c, &data, &len);
    cr_assert_eq(op, OP_TEXT, "expected the echo of %s, got op %d (close %d %s)", text, op,
                 c->close_code, c->close_reason);
    cr_assert_eq(len, strlen(text));
    cr_assert_str_eq(data, text);
    free(data);
}

/* Expect the server's close frame with `code`, answer it, and see the connection end. */
static void expect_close(wsc *c, int code, const char *reason_part)
{
    char *data = NULL;
    size_t len = 0;
    int op;
    while ((op = wsc_read_msg(c, &data, &len)) == OP_TEXT)
        free(data); /* frames queued before the close */
    cr_assert_eq(op, OP_CLOSE, "expected a close frame");
    cr_assert_eq(c->close_code, code, "close code %d, want %d (%s)", c->close_code, code,
                 c->close_reason);
    if (reason_part)
        cr_assert(strstr(c->close_reason, reason_part), "reason '%s'", c->close_reason);
    wsc_send_close(c, code, "");
    unsigned char *p;
    int fop, fin;
    size_t n;
    /* After the close handshake the server closes the TCP connection. */
    while (wsc_read_frame(c, &fop, &fin, &p, &n) == 0)
        free(p);
}

/* Close from the client side and wait for the server's answer. */
static void client_bye(wsc *c)
{
    cr_assert_eq(wsc_send_close(c, 1000, "bye"), 0);
    char *data = NULL;
    size_t len = 0;
    int op;
    while ((op = wsc_read_msg(c, &data, &len)) == OP_TEXT)
        free(data);
    cr_assert_eq(op, OP_CLOSE);
    cr_assert_eq(c->close_code, 1000);
    wsc_close(c);
}

/* ========================================================================================== */
/* Tests                                                                                      */

TestSuite(ws, .init = setup, .fini = teardown, .timeout = 120);

Test(ws, descriptor_and_keys)
{
    cr_assert_eq(F.desc->struct_size, sizeof(gs_plugin_descriptor));
    cr_assert_eq(F.desc->kind, GS_KIND_CLIENT_TRANSPORT);
    cr_assert_str_eq(F.desc->name, "ws");
    cr_assert_str_eq(F.desc->build_signature, GS_BUILD_SIGNATURE);
    cr_assert_eq(F.vt->struct_size, sizeof(gs_client_transport_vtable));
    cr_assert(F.vt->create && F.vt->start && F.vt->stop && F.vt->destroy && F.vt->bound_port);
    cr_assert(GS_HAS_MEMBER(gs_client_transport_vtable, adopt_upgrade, F.vt->struct_size) &&
              F.vt->adopt_upgrade);
    const char *wanted[] = {
        "port",   "host", "tls_cert_file", "tls_key_file", "ping_interval_s", "stop_timeout_ms",
        "headers"};
    for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++)
        cr_assert_not_null(find_key(wanted[i]));
    cr_assert_null(dlsym(F.dl, "gs_ws_callback"), "only the entry is exported");

    /* Without a port it idles: no port bound, nothing to stop but itself. */
    server_start();
    cr_assert_eq(F.vt->bound_port(F.inst), -1);
    cr_assert(log_contains("serving WebSocket upgrades handed over"));
    F.vt->stop(F.inst);
    F.vt->stop(F.inst);
}

Test(ws, handshake_selects_sirannon_v1)
{
    int port = start_handoff();
    wsc c;
    char v[256];
    cr_assert_eq(wsc_open(&c, port, "/db/a%2Fb",
                          "Sec-WebSocket-Protocol: sirannon.v1, other\r\n"
                          "Authorization: Bearer T0K3N\r\nOrigin: https://app.example\r\n"
                          "Cookie: a=1; b=2\r\nUser-Agent: test-client/1\r\nX-Custom: yes\r\n"),
                 101, "status %d", c.status);
    cr_assert(head_value(c.head, "Sec-WebSocket-Protocol", v, sizeof v), "%s", c.head);
    cr_assert_str_eq(v, "sirannon.v1");
    /* The core saw the raw path and every header (handed over: all of them). */
    pthread_mutex_lock(&PT.lock);
    open_record r = F.last_open;
    pthread_mutex_unlock(&PT.lock);
    cr_assert_str_eq(r.path, "/db/a%2Fb");
    cr_assert_str_eq(r.offer, "sirannon.v1, other");
    cr_assert_str_eq(r.auth, "Bearer T0K3N");
    cr_assert_str_eq(r.origin, "https://app.example");
    cr_assert_str_eq(r.cookie, "a=1; b=2");
    cr_assert_str_eq(r.agent, "test-client/1");
    cr_assert_str_eq(r.custom, "yes");
    cr_assert(!strncmp(r.remote, "127.0.0.1:", 10), "%s", r.remote);

    expect_echo(&c, "hello");
    expect_echo(&c, "");
    expect_echo(&c, "{\"type\":\"query\",\"id\":\"1\"}");
    client_bye(&c);
    cr_assert(wait_closes(1));
    cr_assert(wait_log("INFO ws: WS /db/a%2Fb 101 127.0.0.1:"));
    cr_assert(wait_log("closed 1000 127.0.0.1:"));
    cr_assert(log_contains("(by client)"));
    cr_assert_not(log_contains("T0K3N"), "never a header value in the log");
    cr_assert_not(log_contains("hello"), "never a message in the log");
}

Test(ws, handshake_without_offer_selects_none)
{
    int port = start_handoff();
    wsc c;
    char v[256];
    cr_assert_eq(wsc_open(&c, port, "/db/main", NULL), 101);
    cr_assert_null(head_value(c.head, "Sec-WebSocket-Protocol", v, sizeof v), "%s", c.head);
    expect_echo(&c, "no subprotocol");
    client_bye(&c);
    cr_assert(wait_closes(1));
}

Test(ws, offer_without_sirannon_is_http_400)
{
    int port = start_handoff();
    wsc c;
    cr_assert_eq(wsc_open(&c, port, "/db/main", "Sec-WebSocket-Protocol: chat, superchat\r\n"),
                 400);
    char v[256];
    cr_assert(head_value(c.head, "Content-Type", v, sizeof v) && !strcmp(v, "application/json"));
    cr_assert(strstr(c.body, "\"UNSUPPORTED_SUBPROTOCOL\""), "%s", c.body);
    cr_assert_eq(wsc_fill(&c), 0, "the connection is closed after the refusal");
    wsc_close(&c);

    /* The core's own HTTP refusal, status and body as given. */
    cr_assert_eq(wsc_open(&c, port, "/db/teapot", NULL), 418);
    cr_assert(strstr(c.body, "short and stout"), "%s", c.body);
    wsc_close(&c);
    pthread_mutex_lock(&PT.lock);
    cr_assert_eq(F.session_count, 0);
    cr_assert_eq(F.refusals, 2);
    pthread_mutex_unlock(&PT.lock);
    cr_assert(wait_log("WS /db/main 400 127.0.0.1:"));
}

static void expect_refused_after_handshake(int port, const char *path, int code, const char *why)
{
    wsc c;
    cr_assert_eq(wsc_open(&c, port, path, "Sec-WebSocket-Protocol: sirannon.v1\r\n"), 101);
    expect_close(&c, code, why);
    wsc_close(&c);
}

Test(ws, refusals_close_after_the_handshake)
{
    int port = start_handoff();
    expect_refused_after_handshake(port, "/db/denied", 4401,
                                   "UNAUTHORIZED: a bearer token is required");
    expect_refused_after_handshake(port, "/db/forbidden", 4403, "FORBIDDEN: not yours");
    expect_refused_after_handshake(port, "/db/missing", 1008, "DATABASE_NOT_FOUND");
    /* Without an offer too. */
    wsc c;
    cr_assert_eq(wsc_open(&c, port, "/db/denied", NULL), 101);
    expect_close(&c, 4401, "UNAUTHORIZED");
    wsc_close(&c);
    pthread_mutex_lock(&PT.lock);
    cr_assert_eq(F.session_count, 0, "no session for a refusal");
    pthread_mutex_unlock(&PT.lock);
    cr_assert(wait_log("WS /db/denied 101 127.0.0.1:"));
    cr_assert(log_contains("(refused: closing with 4401)"));
}

/* Browsers carry a credential in the subprotocol offer: however long, the core sees all of
 * it and the handshake selects sirannon.v1 (libwebsockets itself stops at 126 bytes). */
Test(ws, long_credential_in_the_offer)
{
    int port = start_handoff();
    char token[1200];
    memset(token, 'T', 1000);
    token[1000] = '\0';
    char extra[1400];
    snprintf(extra, sizeof extra, "Sec-WebSocket-Protocol: sirannon.v1, bearer.%s\r\n", token);
    wsc c;
    char v[256];
    cr_assert_eq(wsc_open(&c, port, "/db/main", extra), 101, "status %d", c.status);
    cr_assert(head_value(c.head, "Sec-WebSocket-Protocol", v, sizeof v));
    cr_assert_str_eq(v, "sirannon.v1", "the credential never comes back");
    pthread_mutex_lock(&PT.lock);
    cr_assert_eq(strlen(F.last_open.offer), strlen("sirannon.v1, bearer.") + 1000);
    pthread_mutex_unlock(&PT.lock);
    expect_echo(&c, "long offer");
    client_bye(&c);

    /* The offer in two header lines. */
    cr_assert_eq(wsc_open(&c, port, "/db/main",
                          "Sec-WebSocket-Protocol: sirannon.v1\r\n"
                          "Sec-WebSocket-Protocol: token.abc\r\n"),
                 101);
    cr_assert(head_value(c.head, "Sec-WebSocket-Protocol", v, sizeof v));
    cr_assert_str_eq(v, "sirannon.v1");
    pthread_mutex_lock(&PT.lock);
    cr_assert_str_eq(F.last_open.offer, "sirannon.v1, token.abc");
    pthread_mutex_unlock(&PT.lock);
    client_bye(&c);
    cr_assert(wait_closes(2));
}

Test(ws, bad_requests_are_answered_locally)
{
    int port = start_handoff();
    wsc c;
    cr_assert_eq(wsc_open(&c, port, "/other/place", NULL), 404);
    cr_assert(strstr(c.body, "\"NOT_FOUND\""), "%s", c.body);
    wsc_close(&c);
    cr_assert_eq(wsc_open(&c, port, "/db/a/b", NULL), 404);
    wsc_close(&c);
    cr_assert_eq(wsc_open(&c, port, "/db/", NULL), 404);
    wsc_close(&c);

    /* Connection without the upgrade token. */
    cr_assert_eq(wsc_tcp(&c, port, 0), 0);
    const char *noconn = "GET /db/main HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                         "Connection: keep-alive\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n";
    cr_assert_eq(wsc_write(&c, noconn, strlen(noconn)), 0);
    while (!c.buf || !memmem(c.buf, c.len, "\r\n\r\n", 4))
        cr_assert_gt(wsc_fill(&c), 0);
    cr_assert(!strncmp((char *)c.buf, "HTTP/1.1 400", 12), "%.*s", (int)c.len, c.buf);
    wsc_close(&c);

    /* Version 8: 426 naming the version we speak. */
    cr_assert_eq(wsc_tcp(&c, port, 0), 0);
    const char *v8 = "GET /db/main HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 8\r\n\r\n";
    cr_assert_eq(wsc_write(&c, v8, strlen(v8)), 0);
    while (!c.buf || !memmem(c.buf, c.len, "\r\n\r\n", 4))
        cr_assert_gt(wsc_fill(&c), 0);
    cr_assert(!strncmp((char *)c.buf, "HTTP/1.1 426", 12), "%.*s", (int)c.len, c.buf);
    cr_assert(memmem(c.buf, c.len, "sec-websocket-version: 13", 25) ||
              memmem(c.buf, c.len, "Sec-WebSocket-Version: 13", 25));
    wsc_close(&c);

    /* No key. */
    cr_assert_eq(wsc_tcp(&c, port, 0), 0);
    const char *nokey = "GET /db/main HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    cr_assert_eq(wsc_write(&c, nokey, strlen(nokey)), 0);
    while (!c.buf || !memmem(c.buf, c.len, "\r\n\r\n", 4))
        cr_assert_gt(wsc_fill(&c), 0);
    cr_assert(!strncmp((char *)c.buf, "HTTP/1.1 400", 12), "%.*s", (int)c.len, c.buf);
    wsc_close(&c);
    pthread_mutex_lock(&PT.lock);
    cr_assert_eq(F.opens, 0, "the core is not asked about malformed upgrades");
    pthread_mutex_unlock(&PT.lock);
}

Test(ws, fragmented_messages_are_reassembled)
{
    int port = start_handoff();
    wsc c;
    cr_assert_eq(wsc_open(&c, port, "/db/main", "Sec-WebSocket-Protocol: sirannon.v1\r\n"), 101);
    /* Three fragments with a ping between them. */
    cr_assert_eq(wsc_frame(&c, OP_TEXT, 0, "ech", 3), 0);
    cr_assert_eq(wsc_frame(&c, OP_CONT, 0, "o:frag", 6), 0);
    cr_assert_eq(wsc_frame(&c, OP_PING, 1, "p", 1), 0);
    cr_assert_eq(wsc_frame(&c, OP_CONT, 1, "mented", 6), 0);
    char *data;
    size_t len;
    cr_assert_eq(wsc_read_msg(&c, &data, &len), OP_TEXT);
    cr_assert_str_eq(data, "fragmented");
    free(data);

    /* 300 kB in 7 fragments of different sizes: the core sees one message. */
    size_t total = 300000;
    char *big = malloc(total);
    memcpy(big, "sum:", 4);
    uint32_t sum = 0;
    for (size_t i = 4; i < total; i++)
        big[i] = (char)('A' + i % 50);
    for (size_t i = 0; i < total; i++)
        sum += (unsigned char)big[i];
    size_t cuts[] = {0, 1, 1000, 70000, 70001, 150000, 299999, total};
    for (size_t i = 0; i + 1 < sizeof cuts / sizeof cuts[0]; i++)
        cr_assert_eq(wsc_frame(&c, i == 0 ? OP_TEXT : OP_CONT,
                               i + 2 == sizeof cuts / sizeof cuts[0], big + cuts[i],
                               cuts[i + 1] - cuts[i]),
                     0);
    free(big);
    cr_assert_eq(wsc_read_msg(&c, &data, &len), OP_TEXT);
    char want[64];
    snprintf(want, sizeof want, "%zu:%u", total, sum);
    cr_assert_str_eq(data, want);
    free(data);

    /* A big answer goes out in fragments and arrives whole. */
    cr_assert_eq(wsc_text(&c, "big:1000000"), 0);
    cr_assert_eq(wsc_read_msg(&c, &data, &len), OP_TEXT);
    cr_assert_eq(len, 1000000);
    for (size_t i = 0; i < len; i += 9973)
        cr_assert_eq(data[i], (char)('a' + i % 26));
    free(data);
    client_bye(&c);
}

/* Text must be UTF-8 (libwebsockets checks it: 1007); binary messages reach the core too. */
Test(ws, utf8_and_binary)
{
    int port = start_handoff();
    wsc c;
    cr_assert_eq(wsc_open(&c, port, "/db/main", NULL), 101);
    cr_assert_eq(wsc_frame(&c, OP_BIN, 1, "echo:\xff\x00bin", 10), 0);
    char *data;
    size_t len;
    cr_assert_eq(wsc_read_msg(&c, &data, &len), OP_TEXT);
    cr_assert_eq(len, 5);
    cr_assert(!memcmp(data, "\xff\x00bin", 5));
    free(data);
    expect_echo(&c, "caf\xc3\xa9");
    cr_assert_eq(wsc_frame(&c, OP_TEXT, 1, "echo:\xc3\x28", 7), 0);
    expect_close(&c, 1007, NULL);
    wsc_close(&c);
    cr_assert(wait_closes(1));
}

Test(ws, message_over_the_limit_is_refused_and_the_connection_lives)
{
    F.settings.max_body_bytes = 4096;
    F.settings.max_ws_backpressure_bytes = 65536;
    int port = start_handoff();
    wsc c;
    cr_assert_eq(wsc_open(&c, port, "/db/main", NULL), 101);
    size_t peak_before = atomic_load(&PT.peak_bytes);

    /* Exactly the limit passes. */
    char *m = malloc(2000000);
    memcpy(m, "sum:", 4);
    memset(m + 4, 'x', 4096 - 4);
    cr_assert_eq(wsc_frame(&c, OP_TEXT, 1, m, 4096), 0);
    char *data;
    size_t len;
    cr_assert_eq(wsc_read_msg(&c, &data, &len), OP_TEXT);
    cr_assert(!strncmp(data, "4096:", 5), "%s", data);
    free(data);

    /* One byte more, in one frame: ws_too_large. */
    memset(m + 4, 'y', 4097 - 4);
    cr_assert_eq(wsc_frame(&c, OP_TEXT, 1, m, 4097), 0);
    cr_assert_eq(wsc_read_msg(&c, &data, &len), OP_TEXT);
    cr_assert_str_eq(data, "too-large");
    free(data);

    /* 2 MB in fragments: dropped as it arrives, never held. */
    memset(m, 'z', 2000000);
    for (size_t off = 0; off < 2000000; off += 100000)
        cr_assert_eq(
            wsc_frame(&c, off ? OP_CONT : OP_TEXT, off + 100000 >= 2000000, m + off, 100000), 0);
    free(m);
    cr_assert_eq(wsc_read_msg(&c, &data, &len), OP_TEXT);
    cr_assert_str_eq(data, "too-large");
    free(data);
    cr_assert_lt(atomic_load(&PT.peak_bytes) - peak_before, 512 * 1024,
                 "the oversized message was never buffered");

    expect_echo(&c, "still here");
    fsess *s = session_by_id(1);
    cr_assert_not_null(s);
    pthread_mutex_lock(&PT.lock);
    cr_assert_eq(s->too_large, 2);
    pthread_mutex_unlock(&PT.lock);
    client_bye(&c);
}

/* A client that never reads: sends past the bound answer GS_AGAIN and it gets 4290. */
Test(ws, backpressure_closes_with_4290)
{
    F.settings.max_body_bytes = 4096;
    F.settings.max_ws_backpressure_bytes = 262144;
    int port = start_handoff();
    wsc c;
    cr_assert_eq(wsc_tcp(&c, port, 4096), 0);
    cr_assert_eq(wsc_handshake(&c, "/db/main", NULL), 101);
    cr_assert_eq(wsc_text(&c, "flood:100000:4000"), 0);
    fsess *s = NULL;
    struct timespec ts = deadline_in(WAIT_MS);
    while (!(s = session_by_id(1))) {
        pthread_mutex_lock(&PT.lock);
        int rc = pthread_cond_timedwait(&PT.cond, &PT.lock, &ts);
        pthread_mutex_unlock(&PT.lock);
        cr_assert_neq(rc, ETIMEDOUT);
    }
    cr_assert(wait_until(pred_sends_done, s, WAIT_MS), "the flood stops");
    pthread_mutex_lock(&s->lock);
    int ok = s->sends_ok, again = s->sends_again;
    pthread_mutex_unlock(&s->lock);
    cr_assert_eq(again, 1, "the send past the bound answers GS_AGAIN");
    cr_assert_lt(ok, 100000);
    /* No frame was dropped: the client reads every accepted frame, then the 4290. */
    int frames = 0;
    char *data;
    size_t len;
    int op;
    while ((op = wsc_read_msg(&c, &data, &len)) == OP_TEXT) {
        cr_assert_eq(len, 4000);
        frames++;
        free(data);
    }
    cr_assert_eq(op, OP_CLOSE, "a close frame after the frames");
    cr_assert_eq(c.close_code, 4290);
    cr_assert(strstr(c.close_reason, "OVERLOADED"), "%s", c.close_reason);
    cr_assert_leq(frames, ok);
    wsc_send_close(&c, 4290, "");
    wsc_close(&c);
    cr_assert(wait_closes(1));
    cr_assert(log_contains("with 4290"));
    fprintf(stderr, "backpressure: %d frames accepted, %d read before the 4290\n", ok, frames);
}

Test(ws, sink_close_after_queued_frames)
{
    int port = start_handoff();
    wsc c;
    cr_assert_eq(wsc_open(&c, port, "/db/main", NULL), 101);
    cr_assert_eq(wsc_text(&c, "echo:first"), 0);
    cr_assert_eq(wsc_text(&c, "close:4000:done here"), 0);
    char *data;
    size_t len;
    cr_assert_eq(wsc_read_msg(&c, &data, &len), OP_TEXT);
    cr_assert_str_eq(data, "first");
    free(data);
    expect_close(&c, 4000, "done here");
    wsc_close(&c);
    cr_assert(wait_closes(1));
    cr_assert(wait_log("closed 4000 127.0.0.1:"));
    cr_assert(log_contains("(by server)"));
}

Test(ws, stop_closes_every_connection_with_1013)
{
    config_set_int("stop_timeout_ms", 300);
    F.settings.max_ws_backpressure_bytes = 64 << 20;
    int port = start_handoff();
    enum { N = 3 };
    wsc c[N];
    for (int i = 0; i < N; i++) {
        cr_assert_eq(wsc_tcp(&c[i], port, i == N - 1 ? 4096 : 0), 0);
        cr_assert_eq(wsc_handshake(&c[i], "/db/main", NULL), 101);
        expect_echo(&c[i], "up");
    }
    /* The last client stops reading with megabytes on their way: its close frame cannot be
     * written, so stop() waits stop_timeout_ms for it and then cuts it off. */
    cr_assert_eq(wsc_text(&c[N - 1], "flood:2000:4000"), 0);
    fsess *s = NULL;
    struct timespec ts = deadline_in(WAIT_MS);
    pthread_mutex_lock(&PT.lock);
    for (;;) {
        for (s = F.sessions; s && s->sends_ok < 2000; s = s->next)
            ;
        if (s || pthread_cond_timedwait(&PT.cond, &PT.lock, &ts) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&PT.lock);
    cr_assert_not_null(s, "the flood was queued");
    /* ... and the server's side of that socket is full: nothing more can be written. */
    uint64_t until = now_ms() + WAIT_MS;
    int full = 0;
    while (!full && now_ms() < until) {
        pthread_mutex_lock(&PT.lock);
        struct pollfd p = {.fd = F.last_server_fd, .events = POLLOUT};
        full = poll(&p, 1, 0) == 0;
        pthread_mutex_unlock(&PT.lock);
        if (!full) {
            struct pollfd idle = {.fd = -1};
            poll(&idle, 0, 20); /* bounded polling of a kernel state nothing signals */
        }
    }
    cr_assert(full, "the server's send buffer filled up");
    acceptor_stop();
    uint64_t t0 = now_ms();
    F.vt->stop(F.inst);
    uint64_t took = now_ms() - t0;
    cr_assert_geq(took, 250);
    cr_assert_lt(took, 5000);
    cr_assert(log_contains("1 connection did not finish closing in 300 ms"));
    pthread_mutex_lock(&PT.lock);
    cr_assert_eq(F.closes, N, "ws_close once per connection by the time stop returns");
    pthread_mutex_unlock(&PT.lock);
    /* The others got their 1013. */
    for (int i = 0; i < N - 1; i++) {
        char *data;
        size_t len;
        int op;
        while ((op = wsc_read_msg(&c[i], &data, &len)) == OP_TEXT)
            free(data);
        cr_assert_eq(op, OP_CLOSE, "client %d got a close frame", i);
        cr_assert_eq(c[i].close_code, 1013);
        cr_assert(strstr(c[i].close_reason, "SHUTDOWN"), "%s", c[i].close_reason);
    }
    for (int i = 0; i < N; i++)
        wsc_close(&c[i]);
}

/* Clients that answer the 1013 at once: stop() returns as soon as they did. */
typedef struct closer {
    wsc c;
    int code;
} closer;

static void *closer_main(void *arg)
{
    closer *k = arg;
    char *data;
    size_t len;
    int op;
    while ((op = wsc_read_msg(&k->c, &data, &len)) == OP_TEXT)
        free(data);
    if (op == OP_CLOSE) {
        k->code = k->c.close_code;
        wsc_send_close(&k->c, k->c.close_code, "");
    }
    return NULL;
}

Test(ws, stop_waits_for_close_handshakes)
{
    int port = start_handoff();
    enum { N = 4 };
    closer k[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        cr_assert_eq(wsc_open(&k[i].c, port, "/db/main", "Sec-WebSocket-Protocol: sirannon.v1\r\n"),
                     101);
        expect_echo(&k[i].c, "ready");
        k[i].code = 0;
        cr_assert_eq(pthread_create(&t[i], NULL, closer_main, &k[i]), 0);
    }
    uint64_t t0 = now_ms();
    F.vt->stop(F.inst);
    uint64_t took = now_ms() - t0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(k[i].code, 1013);
        wsc_close(&k[i].c);
    }
    cr_assert_lt(took, 2500, "stop returned once the clients answered (%llu ms)",
                 (unsigned long long)took);
    cr_assert_not(log_contains("did not finish closing"));
    pthread_mutex_lock(&PT.lock);
    cr_assert_eq(F.closes, N);
    pthread_mutex_unlock(&PT.lock);
    /* Handed-over upgrades after stop are refused (the fd is closed). */
    struct sockaddr_in a = {.sin_family = AF_INET};
    int fds[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    gs_error err;
    memset(&err, 0, sizeof err);
    cr_assert_eq(F.vt->adopt_upgrade(F.inst, fds[0], (struct sockaddr *)&a, sizeof a, &err),
                 GS_ERROR);
    cr_assert_str_eq(err.code, "SHUTDOWN");
    char b;
    cr_assert_eq(recv(fds[1], &b, 1, 0), 0, "the handed-over fd was closed");
    close(fds[1]);
}

/* 50 connections at once, each with a few messages: ws_close exactly once each. */
typedef struct many_arg {
    int port, id, failures;
    char why[256];
} many_arg;

static void *many_main(void *arg)
{
    many_arg *a = arg;
    wsc c;
    if (wsc_open(&c, a->port, "/db/main", "Sec-WebSocket-Protocol: sirannon.v1\r\n") != 101) {
        a->failures++;
        snprintf(a->why, sizeof a->why, "handshake status %d", c.status);
        if (c.fd >= 0)
            wsc_close(&c);
        return NULL;
    }
    for (int j = 0; j < 5; j++) {
        char m[64], want[64];
        snprintf(want, sizeof want, "c%d-m%d", a->id, j);
        snprintf(m, sizeof m, "echo:%s", want);
        char *data = NULL;
        size_t len;
        if (wsc_text(&c, m) != 0 || wsc_read_msg(&c, &data, &len) != OP_TEXT ||
            strcmp(data, want) != 0) {
            a->failures++;
            snprintf(a->why, sizeof a->why, "message %d: got %s", j, data ? data : "(none)");
            free(data);
            break;
        }
        free(data);
    }
    if (a->id % 2) {
        wsc_send_close(&c, 1000, "bye");
        char *data;
        size_t len;
        int op;
        while ((op = wsc_read_msg(&c, &data, &len)) == OP_TEXT)
            free(data);
    }
    wsc_close(&c); /* the even ones just vanish */
    return NULL;
}

Test(ws, many_connections)
{
    F.settings.access_log = 0;
    int port = start_handoff();
    enum { N = 50 };
    pthread_t t[N];
    many_arg a[N];
    for (int i = 0; i < N; i++) {
        a[i] = (many_arg){.port = port, .id = i};
        cr_assert_eq(pthread_create(&t[i], NULL, many_main, &a[i]), 0);
    }
    int failures = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        if (a[i].failures)
            fprintf(stderr, "client %d: %s\n", i, a[i].why);
        failures += a[i].failures;
    }
    cr_assert_eq(failures, 0);
    cr_assert(wait_closes(N), "every connection was reported closed");
    pthread_mutex_lock(&PT.lock);
    cr_assert_eq(F.session_count, N);
    for (fsess *s = F.sessions; s; s = s->next)
        cr_assert_eq(s->closed, 1, "session %d closed %d times", s->id, s->closed);
    pthread_mutex_unlock(&PT.lock);
}

/* Handle one frame the server sent within ms (pings counted, answered when auto_pong).
 * Returns -1 once the connection ended (EOF or a close frame), 0 otherwise. */
static int wsc_pump(wsc *c, int ms)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (c->len < 2 && poll(&p, 1, ms) <= 0)
        return 0;
    int op, fin;
    unsigned char *pl;
    size_t n;
    if (wsc_read_frame(c, &op, &fin, &pl, &n) != 0)
        return -1;
    if (op == OP_PING) {
        c->pings++;
        if (c->auto_pong)
            wsc_frame(c, OP_PONG, 1, pl, n);
    }
    free(pl);
    return op == OP_CLOSE ? -1 : 0;
}

/* Pings on a quiet connection; one that never answers is closed after idle_timeout_s. */
Test(ws, ping_pong_and_idle_timeout)
{
    F.settings.idle_timeout_s = 3;
    config_set_int("ping_interval_s", 1);
    int port = start_handoff();
    wsc mute, alive;
    cr_assert_eq(wsc_open(&mute, port, "/db/main", NULL), 101);
    cr_assert_eq(wsc_open(&alive, port, "/db/main", NULL), 101);
    alive.auto_pong = 1;
    uint64_t t0 = now_ms(), gone = 0;
    /* Both are read; only `alive` answers pings. Run past the idle timeout. */
    while (now_ms() - t0 < 5000) {
        if (!gone && wsc_pump(&mute, 20) < 0)
            gone = now_ms() - t0;
        cr_assert_eq(wsc_pump(&alive, 20), 0, "the client that answers pings stays");
    }
    cr_assert_gt(gone, 0, "the silent client was closed");
    cr_assert_geq(mute.pings, 1, "the server pinged the quiet connection");
    cr_assert_geq(gone, 2000, "closed after %llu ms", (unsigned long long)gone);
    cr_assert_lt(gone, 4500, "closed after %llu ms", (unsigned long long)gone);
    wsc_close(&mute);
    cr_assert_geq(alive.pings, 3, "pinged about once a second (%d)", alive.pings);
    expect_echo(&alive, "ping me");
    client_bye(&alive);
    cr_assert(wait_closes(2));
}

/* Our own port: plain WebSocket, headers from libwebsockets' parse, plain HTTP refused. */
Test(ws, own_port)
{
    config_set_int("port", -1);
    static const char *const extra[] = {"X-Custom"};
    gs_config_strings list = {.items = extra, .count = 1};
    const gs_config_key *k = find_key("headers");
    memcpy((char *)F.config + k->offset, &list, sizeof list);
    server_start();
    int port = F.vt->bound_port(F.inst);
    cr_assert_gt(port, 0);
    cr_assert(log_contains("serving WebSocket on 127.0.0.1:0 (bound port"));
    wsc c;
    cr_assert_eq(wsc_open(&c, port, "/db/x%2Fy%20z",
                          "Sec-WebSocket-Protocol: sirannon.v1\r\nAuthorization: Bearer abc\r\n"
                          "X-Custom: passed\r\nX-Other: not configured\r\n"),
                 101);
    pthread_mutex_lock(&PT.lock);
    open_record r = F.last_open;
    pthread_mutex_unlock(&PT.lock);
    cr_assert_str_eq(r.path, "/db/x%2Fy%20z");
    cr_assert_str_eq(r.auth, "Bearer abc");
    cr_assert_str_eq(r.offer, "sirannon.v1");
    cr_assert_str_eq(r.custom, "passed");
    expect_echo(&c, "own port");
    client_bye(&c);

    /* Here libwebsockets parses the offer itself: more than 126 bytes is refused, clearly. */
    char longer[400];
    snprintf(longer, sizeof longer, "Sec-WebSocket-Protocol: sirannon.v1, t.%0200d\r\n", 7);
    cr_assert_eq(wsc_open(&c, port, "/db/main", longer), 400);
    cr_assert(strstr(c.body, "longer than 126 bytes"), "%s", c.body);
    wsc_close(&c);

    /* A plain HTTP request there gets a JSON 404. */
    cr_assert_eq(wsc_tcp(&c, port, 0), 0);
    const char *get = "GET /db/x HTTP/1.1\r\nHost: t\r\n\r\n";
    cr_assert_eq(wsc_write(&c, get, strlen(get)), 0);
    while (!c.buf || !memmem(c.buf, c.len, "NOT_FOUND", 9))
        cr_assert_gt(wsc_fill(&c), 0);
    cr_assert(!strncmp((char *)c.buf, "HTTP/1.1 404", 12), "%.*s", (int)c.len, c.buf);
    wsc_close(&c);
    cr_assert(wait_closes(1));

    F.vt->stop(F.inst);
    cr_assert_eq(F.vt->bound_port(F.inst), -1);
    cr_assert_neq(wsc_tcp(&c, port, 0), 0, "the port is closed after stop");
    /* It starts again. */
    gs_error err;
    cr_assert_eq(F.vt->start(F.inst, &err), GS_OK, "%s", err.message);
    cr_assert_gt(F.vt->bound_port(F.inst), 0);
}

Test(ws, busy_port_and_bad_settings)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(fd, 4), 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    config_set_int("port", ntohs(a.sin_port));
    gs_error err;
    memset(&err, 0, sizeof err);
    cr_assert_eq(F.vt->create(&F.host, F.config, &F.inst, &err), GS_OK);
    cr_assert_eq(F.vt->start(F.inst, &err), GS_ERROR);
    char want[64];
    snprintf(want, sizeof want, "cannot serve WebSocket on 127.0.0.1:%d", ntohs(a.sin_port));
    cr_assert(strstr(err.message, want), "%s", err.message);
    cr_assert_eq(F.vt->bound_port(F.inst), -1);
    F.vt->stop(F.inst);
    close(fd);
    F.vt->destroy(F.inst);
    F.inst = NULL;

    void *inst = NULL;
    config_set_int("port", 0);
    F.settings.max_ws_backpressure_bytes = 100;
    F.settings.max_body_bytes = 1000;
    cr_assert_eq(F.vt->create(&F.host, F.config, &inst, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_WS_BACKPRESSURE");
    F.settings.max_ws_backpressure_bytes = 16777216;

    config_set_int("port", -1);
    config_set_str("host", "not-an-address");
    cr_assert_eq(F.vt->create(&F.host, F.config, &inst, &err), GS_OK);
    cr_assert_eq(F.vt->start(inst, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "not-an-address"), "%s", err.message);
    F.vt->destroy(inst);

    /* A host without the WebSocket session calls (ABI 1.0) is refused with a reason. */
    F.host.struct_size = (uint32_t)offsetof(gs_host, ws_open);
    cr_assert_eq(F.vt->create(&F.host, F.config, &inst, &err), GS_ERROR);
    cr_assert(strstr(err.message, "ABI 1.1"), "%s", err.message);
    F.host.struct_size = sizeof F.host;
}

/* ------------------------------------------------------------------------------------------ */
/* WSS on its own port                                                                        */

Test(ws, wss_on_own_port)
{
    if (pt_make_certificate("gs-test-ws") != 0)
        cr_skip_test("no openssl CLI to make a test certificate");
    config_set_int("port", -1);
    config_set_str("tls_cert_file", PT.cert_path);
    config_set_str("tls_key_file", PT.key_path);
    server_start();
    int port = F.vt->bound_port(F.inst);
    cr_assert_gt(port, 0);
    cr_assert(log_contains("serving WSS on 127.0.0.1:0"));
    wsc c;
    cr_assert_eq(wsc_tcp(&c, port, 0), 0);
    cr_assert_eq(wsc_start_tls(&c, PT.cert_path), 0);
    cr_assert_eq(wsc_handshake(&c, "/db/secure", "Sec-WebSocket-Protocol: sirannon.v1\r\n"), 101);
    expect_echo(&c, "over tls");
    cr_assert_eq(wsc_text(&c, "big:200000"), 0);
    char *data;
    size_t len;
    cr_assert_eq(wsc_read_msg(&c, &data, &len), OP_TEXT);
    cr_assert_eq(len, 200000);
    free(data);
    client_bye(&c);
    cr_assert(wait_closes(1));
    cr_assert(pt_wait_at_least(&F.opens, 1));
}
