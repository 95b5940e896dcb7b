/*
 * transports/tcp against a fake host: dlopen gs_transport_tcp.so, fill its config struct
 * through its own key table (as the core's config layer does) and run several nodes of one
 * process on loopback with ephemeral ports, plaintext (insecure: true) and mutual TLS with
 * certificates made at test time by the openssl CLI in a mkdtemp() directory. Raw sockets
 * play misbehaving peers: they speak the wire format through the plugin's own codec
 * (frame.c, compiled in here), so a test can send a bad first frame, an oversized length,
 * or go silent after its hello.
 *
 * Each node records what its events report, per peer name: up/down state and counts,
 * messages, order and content errors. Payloads: bytes 0..3 little-endian sequence number,
 * 4..7 the length, the rest a filler derived from both, so the receiver checks every byte;
 * the call id is a function of the sequence number and the type cycles 1..4. Every wait is a
 * condition wait with a deadline (WAIT_MS), never a sleep. Criterion runs each test in its
 * own process, so the fake core is global.
 */
#include "plugin_test_host.h"

#include <gatestream/repl_transport.h>

/* The plugin's wire codec, to play raw peers (pure C, no host needed). */
#include "../../transports/tcp/frame.c"

#include <criterion/criterion.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TCP_FILE "gs_transport_tcp.so"
#define MAX_NODES 6
#define MAX_NAMES 16

/* ========================================================================================== */
/* The fake core                                                                              */

typedef struct node {
    char id[64];
    void *inst;
    gs_repl_events ev;
    /* Guarded by PT.lock. */
    int stopped;    /* set once stop() returned */
    int after_stop; /* callbacks that arrived after that */
    int up[MAX_NAMES], ups[MAX_NAMES], downs[MAX_NAMES], msgs[MAX_NAMES];
    uint32_t next_seq[MAX_NAMES];
    int order_errors, content_errors, call_id_errors, zero_len;
    long bytes;
    int echo; /* answer FORWARD_REQUEST with FORWARD_RESPONSE, same call id and bytes */
    int echo_failures;
    int responses; /* FORWARD_RESPONSE messages whose call id matched */
} node;

static struct {
    void *dl;
    const gs_plugin_descriptor *desc;
    const gs_repl_transport_vtable *vt;
    gs_host host;
    node nodes[MAX_NODES];
    char names[MAX_NAMES][64]; /* peer names seen, by index (PT.lock) */
    char certs[512];           /* certificate directory (PT.tmpdir) */
} T;

/* PT.lock held. The index of a peer name (added when new); -1 when the table is full. */
static int name_index(const char *id)
{
    for (int i = 0; i < MAX_NAMES; i++) {
        if (strcmp(T.names[i], id) == 0)
            return i;
        if (!T.names[i][0]) {
            snprintf(T.names[i], sizeof T.names[i], "%s", id);
            return i;
        }
    }
    return -1;
}

static int name_of(const char *id)
{
    pthread_mutex_lock(&PT.lock);
    int i = name_index(id);
    pthread_mutex_unlock(&PT.lock);
    cr_assert_geq(i, 0);
    return i;
}

static uint64_t call_id_of(uint32_t seq)
{
    return (uint64_t)seq * UINT64_C(0x9E3779B97F4A7C15) + 3;
}

static void payload(uint8_t *buf, size_t len, uint32_t seq)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(i * 131 + seq * 7 + len);
    if (len >= 8) {
        for (int k = 0; k < 4; k++) {
            buf[k] = (uint8_t)(seq >> (8 * k));
            buf[4 + k] = (uint8_t)((uint32_t)len >> (8 * k));
        }
    }
}

static int payload_ok(const uint8_t *buf, size_t len, uint32_t *seq)
{
    if (len < 8)
        return 0;
    uint32_t s = 0, l = 0;
    for (int k = 0; k < 4; k++) {
        s |= (uint32_t)buf[k] << (8 * k);
        l |= (uint32_t)buf[4 + k] << (8 * k);
    }
    if (l != len)
        return 0;
    for (size_t i = 8; i < len; i++)
        if (buf[i] != (uint8_t)(i * 131 + s * 7 + len))
            return 0;
    *seq = s;
    return 1;
}

static void on_message(void *user, const char *from, gs_repl_msg_type type, uint64_t call_id,
                       const uint8_t *bytes, size_t len)
{
    node *n = user;
    uint32_t seq = 0;
    int ok = payload_ok(bytes, len, &seq);
    pthread_mutex_lock(&PT.lock);
    if (n->stopped)
        n->after_stop++;
    int i = name_index(from);
    if (i >= 0) {
        n->msgs[i]++;
        n->bytes += (long)len;
        if (len == 0) {
            n->zero_len++;
        } else if (!ok) {
            n->content_errors++;
        } else if (type == GS_REPL_MSG_FORWARD_RESPONSE) {
            n->responses += call_id == call_id_of(seq);
        } else {
            if (seq != n->next_seq[i])
                n->order_errors++;
            n->next_seq[i] = seq + 1;
            if (call_id != call_id_of(seq) || (!n->echo && (int)type != 1 + (int)(seq % 3)))
                n->call_id_errors++;
        }
    }
    int echo = n->echo && type == GS_REPL_MSG_FORWARD_REQUEST;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
    if (echo) {
        /* From the I/O thread, as the core's Forward handler could. */
        gs_error err;
        memset(&err, 0, sizeof err);
        if (T.vt->send(n->inst, from, GS_REPL_MSG_FORWARD_RESPONSE, call_id, bytes, len, &err) !=
            GS_OK) {
            pthread_mutex_lock(&PT.lock);
            n->echo_failures++;
            pthread_mutex_unlock(&PT.lock);
        }
    }
}

static void on_peer(void *user, const char *id, int connected)
{
    node *n = user;
    pthread_mutex_lock(&PT.lock);
    if (n->stopped)
        n->after_stop++;
    int i = name_index(id);
    if (i >= 0) {
        n->up[i] = connected;
        if (connected)
            n->ups[i]++;
        else
            n->downs[i]++;
    }
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
}

/* A second allocator for one node of a test: fails blocks of at least fail_from bytes. */
static atomic_size_t fail_from;

static void *picky_alloc(size_t size)
{
    size_t f = atomic_load(&fail_from);
    return f && size >= f ? NULL : fh_alloc(size);
}

static void *picky_realloc(void *ptr, size_t size)
{
    size_t f = atomic_load(&fail_from);
    return f && size >= f ? NULL : fh_realloc(ptr, size);
}

/* ========================================================================================== */
/* Config through the plugin's key table                                                      */

static const gs_config_key *key_in(const gs_config_key *keys, size_t count, const char *name)
{
    for (size_t i = 0; i < count; i++) {
        const gs_config_key *k =
            (const gs_config_key *)((const char *)keys + i * T.desc->config_key_size);
        if (strcmp(k->name, name) == 0)
            return k;
    }
    cr_assert_fail("the tcp transport has no key '%s'", name);
    return NULL;
}

static const gs_config_key *key(const char *name)
{
    return key_in(T.desc->config_keys, T.desc->config_key_count, name);
}

static void set_value(void *cfg, const char *name, gs_config_type type, const void *v, size_t n)
{
    const gs_config_key *k = key(name);
    cr_assert_eq(k->type, type, "key %s has type %d", name, (int)k->type);
    cr_assert_leq(k->offset + n, T.desc->config_struct_size);
    memcpy((char *)cfg + k->offset, v, n);
}

static void set_str(void *cfg, const char *name, const char *v)
{
    set_value(cfg, name, GS_CFG_STRING, &v, sizeof v);
}

static void set_int(void *cfg, const char *name, int64_t v)
{
    set_value(cfg, name, GS_CFG_INT, &v, sizeof v);
}

static void set_bool(void *cfg, const char *name, int v)
{
    set_value(cfg, name, GS_CFG_BOOL, &v, sizeof v);
}

/* A config struct holding every key's default, as the core fills it for an empty map. */
static void *config_defaults(void)
{
    const gs_plugin_descriptor *d = T.desc;
    void *cfg = calloc(1, d->config_struct_size);
    cr_assert_not_null(cfg);
    for (size_t i = 0; i < d->config_key_count; i++) {
        const gs_config_key *k =
            (const gs_config_key *)((const char *)d->config_keys + i * d->config_key_size);
        if (!k->default_value)
            continue;
        if (k->type == GS_CFG_STRING)
            set_str(cfg, k->name, k->default_value);
        else if (k->type == GS_CFG_INT)
            set_int(cfg, k->name, strtoll(k->default_value, NULL, 10));
        else if (k->type == GS_CFG_BOOL)
            set_bool(cfg, k->name, strcmp(k->default_value, "true") == 0);
    }
    return cfg;
}

typedef struct opts {
    int port;             /* 0 = OS-assigned */
    int tls;              /* 0 = insecure: true */
    const char *cert;     /* certificate/key file stem in T.certs (default: the node id) */
    const char *ca;       /* CA stem (default "ca") */
    const char *peers[4]; /* ids this node dials, NULL-terminated */
    int peer_ports[4];    /* their ports on 127.0.0.1 */
    int64_t heartbeat_ms, reconnect_min_ms, reconnect_max_ms, max_queue_bytes, max_frame_bytes;
    const char *role; /* local_role (default: replica when it dials, else primary) */
    const gs_host *host;
} opts;

/* The config struct for o (its peers list allocated: free with free_config). */
static void *make_config(const opts *o)
{
    void *cfg = config_defaults();
    set_str(cfg, "host", "127.0.0.1");
    set_int(cfg, "port", o->port);
    if (o->tls) {
        static char cert[600], keyf[600], ca[600];
        const char *stem = o->cert;
        snprintf(cert, sizeof cert, "%s/%s.pem", T.certs, stem);
        snprintf(keyf, sizeof keyf, "%s/%s.key", T.certs, stem);
        snprintf(ca, sizeof ca, "%s/%s.pem", T.certs, o->ca ? o->ca : "ca");
        /* create() copies what it keeps, so static buffers are fine here. */
        set_str(cfg, "tls_cert", cert);
        set_str(cfg, "tls_key", keyf);
        set_str(cfg, "tls_ca_cert", ca);
    } else {
        set_bool(cfg, "insecure", 1);
    }
    if (o->heartbeat_ms)
        set_int(cfg, "heartbeat_ms", o->heartbeat_ms);
    if (o->reconnect_min_ms)
        set_int(cfg, "reconnect_min_ms", o->reconnect_min_ms);
    if (o->reconnect_max_ms)
        set_int(cfg, "reconnect_max_ms", o->reconnect_max_ms);
    if (o->max_queue_bytes)
        set_int(cfg, "max_queue_bytes", o->max_queue_bytes);
    if (o->max_frame_bytes)
        set_int(cfg, "max_frame_bytes", o->max_frame_bytes);
    const gs_config_key *pk = key("peers");
    cr_assert_eq(pk->type, GS_CFG_LIST);
    size_t np = 0;
    while (np < 4 && o->peers[np])
        np++;
    if (np) {
        const gs_config_key *kid = key_in(pk->children, pk->child_count, "id");
        const gs_config_key *kaddr = key_in(pk->children, pk->child_count, "address");
        char *items = calloc(np, pk->child_struct_size);
        cr_assert_not_null(items);
        static char addrs[4][64];
        for (size_t i = 0; i < np; i++) {
            snprintf(addrs[i], sizeof addrs[i], "127.0.0.1:%d", o->peer_ports[i]);
            const char *id = o->peers[i], *addr = addrs[i];
            memcpy(items + i * pk->child_struct_size + kid->offset, &id, sizeof id);
            memcpy(items + i * pk->child_struct_size + kaddr->offset, &addr, sizeof addr);
        }
        gs_config_list l = {items, np};
        memcpy((char *)cfg + pk->offset, &l, sizeof l);
    }
    return cfg;
}

static void free_config(void *cfg)
{
    gs_config_list l;
    memcpy(&l, (char *)cfg + key("peers")->offset, sizeof l);
    free(l.items);
    free(cfg);
}

static gs_status try_create(int i, const char *id, const opts *o, gs_error *err)
{
    node *n = &T.nodes[i];
    memset(n, 0, sizeof *n);
    snprintf(n->id, sizeof n->id, "%s", id);
    opts oo = *o;
    if (!oo.cert)
        oo.cert = id;
    void *cfg = make_config(&oo);
    memset(err, 0, sizeof *err);
    n->inst = (void *)0x1; /* create must reset it */
    gs_status st = T.vt->create(o->host ? o->host : &T.host, cfg, id, &n->inst, err);
    free_config(cfg); /* the plugin must have copied what it keeps */
    if (st != GS_OK) {
        cr_assert_null(n->inst, "a failed create leaves *instance NULL");
        n->id[0] = '\0';
    }
    return st;
}

static void start_node(int i, const opts *o)
{
    node *n = &T.nodes[i];
    n->ev.struct_size = sizeof n->ev;
    n->ev.user = n;
    n->ev.on_message = on_message;
    n->ev.on_peer = on_peer;
    n->ev.local_role = o->role ? o->role : o->peers[0] ? "replica" : "primary";
    n->ev.protocol_version = "1.0";
    pthread_mutex_lock(&PT.lock);
    n->stopped = 0;
    pthread_mutex_unlock(&PT.lock);
    gs_error err;
    memset(&err, 0, sizeof err);
    cr_assert_eq(T.vt->start(n->inst, &n->ev, &err), GS_OK, "start %s: %s %s", n->id, err.code,
                 err.message);
}

static void create_node(int i, const char *id, const opts *o)
{
    gs_error err;
    gs_status st = try_create(i, id, o, &err);
    cr_assert_eq(st, GS_OK, "create %s: %s %s", id, err.code, err.message);
    start_node(i, o);
}

static void stop_node(int i)
{
    node *n = &T.nodes[i];
    T.vt->stop(n->inst);
    pthread_mutex_lock(&PT.lock);
    n->stopped = 1;
    pthread_mutex_unlock(&PT.lock);
}

static void destroy_node(int i)
{
    node *n = &T.nodes[i];
    if (!n->inst)
        return;
    T.vt->destroy(n->inst);
    n->inst = NULL;
    pthread_mutex_lock(&PT.lock);
    n->stopped = 1;
    pthread_mutex_unlock(&PT.lock);
}

/* The port node `id` logged it listens on (after start), or -1. */
static int listen_port(const char *id)
{
    char needle[128];
    snprintf(needle, sizeof needle, "node '%s' (", id);
    int port = -1;
    pthread_mutex_lock(&PT.lock);
    for (size_t i = 0; i < PT.log_count && port < 0; i++) {
        const char *l = PT.logs[i];
        const char *p = strstr(l, needle);
        const char *q = p ? strstr(p, "listening on 127.0.0.1:") : NULL;
        if (q)
            port = atoi(q + strlen("listening on 127.0.0.1:"));
    }
    pthread_mutex_unlock(&PT.lock);
    return port;
}

static int port_of(const char *id)
{
    int p = listen_port(id);
    cr_assert_gt(p, 0, "node %s logged no listening port", id);
    return p;
}

/* ========================================================================================== */
/* Waiting                                                                                    */

typedef struct peer_state {
    int at, about, state, count;
} peer_state;

static int pred_peer(void *arg)
{
    const peer_state *p = arg;
    const node *n = &T.nodes[p->at];
    if (p->state)
        return n->up[p->about] == 1 && n->ups[p->about] >= p->count;
    return n->up[p->about] == 0 && n->downs[p->about] >= p->count;
}

/* Wait (bounded) until node `at` heard that `about` is up (1) or down (0), at least count
 * times in all. */
static int wait_peer_n(int at, const char *about, int state, int count)
{
    peer_state p = {at, name_of(about), state, count};
    return wait_until(pred_peer, &p, WAIT_MS);
}

static int wait_peer(int at, const char *about, int state)
{
    return wait_peer_n(at, about, state, 1);
}

typedef struct msg_count {
    int at, from, n;
} msg_count;

static int pred_msgs(void *arg)
{
    const msg_count *m = arg;
    return T.nodes[m->at].msgs[m->from] >= m->n;
}

static int wait_msgs(int at, const char *from, int n)
{
    msg_count m = {at, name_of(from), n};
    return wait_until(pred_msgs, &m, WAIT_MS);
}

static int pred_responses(void *arg)
{
    const msg_count *m = arg;
    return T.nodes[m->at].responses >= m->n;
}

static int get(const int *p)
{
    pthread_mutex_lock(&PT.lock);
    int v = *p;
    pthread_mutex_unlock(&PT.lock);
    return v;
}

typedef struct two_needles {
    const char *a, *b;
} two_needles;

static int pred_log2(void *arg)
{
    const two_needles *n = arg;
    for (size_t i = 0; i < PT.log_count; i++)
        if (strstr(PT.logs[i], n->a) && strstr(PT.logs[i], n->b))
            return 1;
    return 0;
}

/* Wait (bounded) for one log line holding both a and b. */
static int wait_log2(const char *a, const char *b)
{
    two_needles n = {a, b};
    return wait_until(pred_log2, &n, WAIT_MS);
}

/* ========================================================================================== */
/* Sending                                                                                    */

static size_t size_of(uint32_t seq)
{
    if (seq % 97 == 5)
        return 40000 + seq % 3000; /* big frames: sliced, never coalesced */
    return 8 + (seq * 37) % 600;
}

/* Send message seq from node `from` to `to` (type 1 + seq % 3, call id from seq); on GS_AGAIN
 * wait for the fake core to move and retry, bounded by WAIT_MS. */
static void send_seq(int from, const char *to, uint32_t seq, size_t len)
{
    static uint8_t buf[1 << 22];
    cr_assert_leq(len, sizeof buf);
    payload(buf, len, seq);
    struct timespec ts = deadline_in(WAIT_MS);
    for (;;) {
        gs_error err;
        memset(&err, 0, sizeof err);
        gs_status st = T.vt->send(T.nodes[from].inst, to, (gs_repl_msg_type)(1 + seq % 3),
                                  call_id_of(seq), buf, len, &err);
        if (st == GS_OK)
            return;
        cr_assert_eq(st, GS_AGAIN, "send %u %s -> %s: %s %s", seq, T.nodes[from].id, to, err.code,
                     err.message);
        pthread_mutex_lock(&PT.lock);
        int rc = pthread_cond_timedwait(&PT.cond, &PT.lock, &ts);
        pthread_mutex_unlock(&PT.lock);
        cr_assert_neq(rc, ETIMEDOUT, "the queue to %s stayed full for %d ms", to, WAIT_MS);
    }
}

static gs_status send_bytes(int from, const char *to, int type, uint64_t call_id,
                            const uint8_t *bytes, size_t len, gs_error *err)
{
    memset(err, 0, sizeof *err);
    return T.vt->send(T.nodes[from].inst, to, (gs_repl_msg_type)type, call_id, bytes, len, err);
}

/* ========================================================================================== */
/* Raw peers: a socket that speaks the wire format by hand                                    */

typedef struct raw {
    int fd;
    uint8_t buf[1 << 16];
    size_t len, used;
    char close_reason[600];
} raw;

static void raw_connect(raw *r, int port, int rcvbuf)
{
    memset(r, 0, sizeof *r);
    r->fd = pt_tcp_connect(AF_INET, port, rcvbuf);
    cr_assert_geq(r->fd, 0, "connect to 127.0.0.1:%d", port);
}

/* Write one frame in one write (a peer that refuses it may close before a second one). 0, or
 * -1 when the write failed. */
static int raw_frame_try(raw *r, gs_tcp_frame_type ft, uint8_t mt, uint64_t call_id,
                         const uint8_t *p, size_t n)
{
    uint8_t *buf = malloc(GS_TCP_FRAME_HEADER + n);
    cr_assert_not_null(buf);
    gs_tcp_frame_header(buf, ft, mt, call_id, n);
    if (n)
        memcpy(buf + GS_TCP_FRAME_HEADER, p, n);
    int rc = pt_write_all(r->fd, NULL, buf, GS_TCP_FRAME_HEADER + n);
    free(buf);
    return rc;
}

static void raw_frame(raw *r, gs_tcp_frame_type ft, uint8_t mt, uint64_t call_id, const uint8_t *p,
                      size_t n)
{
    cr_assert_eq(raw_frame_try(r, ft, mt, call_id, p, n), 0, "write to the transport failed");
}

/* A hello from a raw peer; 0, or -1 when the write failed. */
static int raw_hello_try(raw *r, const char *id, const char *role, uint32_t heartbeat_ms)
{
    gs_tcp_hello h;
    memset(&h, 0, sizeof h);
    h.version = GS_TCP_HELLO_VERSION;
    h.heartbeat_ms = heartbeat_ms;
    snprintf(h.node_id, sizeof h.node_id, "%s", id);
    snprintf(h.role, sizeof h.role, "%s", role);
    snprintf(h.protocol_version, sizeof h.protocol_version, "1.0");
    uint8_t p[GS_TCP_HELLO_MAX];
    size_t n = gs_tcp_hello_encode(&h, p, sizeof p);
    cr_assert_gt(n, 0);
    return raw_frame_try(r, GS_TCP_FRAME_HELLO, 0, 0, p, n);
}

static void raw_hello(raw *r, const char *id, const char *role, uint32_t heartbeat_ms)
{
    cr_assert_eq(raw_hello_try(r, id, role, heartbeat_ms), 0, "write to the transport failed");
}

/* The next frame (1), end of stream (0), an error/timeout (-1) or bytes that are no frame
 * (-2). f points into r->buf until the next call. A close frame's reason is kept in
 * r->close_reason. */
static int raw_read(raw *r, gs_tcp_frame *f)
{
    if (r->used) {
        memmove(r->buf, r->buf + r->used, r->len - r->used);
        r->len -= r->used;
        r->used = 0;
    }
    for (;;) {
        size_t need = 0;
        char why[256];
        gs_tcp_decode_result d =
            gs_tcp_frame_decode(r->buf, r->len, sizeof r->buf - 4, f, &need, why, sizeof why);
        if (d == GS_TCP_DECODE_ERROR)
            return -2; /* not our wire format (a TLS alert, say) */
        if (d == GS_TCP_DECODE_FRAME) {
            r->used = f->total_len;
            if (f->frame_type == GS_TCP_FRAME_CLOSE)
                snprintf(r->close_reason, sizeof r->close_reason, "%.*s", (int)f->payload_len,
                         (const char *)f->payload);
            return 1;
        }
        ssize_t n = recv(r->fd, r->buf + r->len, sizeof r->buf - r->len, 0);
        if (n == 0)
            return 0;
        if (n < 0)
            return errno == ECONNRESET ? 0 : -1;
        r->len += (size_t)n;
    }
}

/* Read the transport's hello (the first frame) into h. */
static void raw_expect_hello(raw *r, gs_tcp_hello *h)
{
    gs_tcp_frame f;
    cr_assert_eq(raw_read(r, &f), 1, "no hello came back");
    cr_assert_eq(f.frame_type, GS_TCP_FRAME_HELLO, "first frame type %u", f.frame_type);
    char why[256];
    cr_assert_eq(gs_tcp_hello_decode(f.payload, f.payload_len, h, why, sizeof why), 0, "%s", why);
}

/* Read until the transport closes the connection (bounded by the socket timeout). 1 when it
 * did. */
static int raw_expect_closed(raw *r)
{
    gs_tcp_frame f;
    for (int i = 0; i < 100000; i++) {
        int rc = raw_read(r, &f);
        if (rc == 0)
            return 1;
        if (rc == -1)
            return 0;
        if (rc == -2) {
            /* Not frames: drain to the end of the stream. */
            uint8_t junk[4096];
            ssize_t n;
            while ((n = recv(r->fd, junk, sizeof junk, 0)) > 0)
                ;
            return n == 0 || errno == ECONNRESET;
        }
    }
    return 0;
}

static void raw_close(raw *r)
{
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
}

/* A listening socket on 127.0.0.1 with an OS-assigned port: *port. */
static int fake_listener(int *port)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(lfd, 4), 0);
    socklen_t sl = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    *port = ntohs(sa.sin_port);
    return lfd;
}

/* Accept the node's dial on lfd, read its hello (a replica's), answer as `id` with the
 * heartbeat period hb. */
static void fake_accept(int lfd, raw *r, const char *id, uint32_t hb)
{
    struct pollfd pfd = {.fd = lfd, .events = POLLIN};
    cr_assert_eq(poll(&pfd, 1, WAIT_MS), 1, "the node dialled");
    memset(r, 0, sizeof *r);
    r->fd = accept(lfd, NULL, NULL);
    cr_assert_geq(r->fd, 0);
    struct timeval tv = {.tv_sec = WAIT_MS / 1000};
    setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    gs_tcp_hello h;
    raw_expect_hello(r, &h);
    cr_assert(strcmp(h.role, "replica") == 0 || strcmp(h.role, "primary") == 0);
    raw_hello(r, id, "primary", hb);
}

/* ========================================================================================== */
/* Certificates                                                                               */

static void run(const char *cmd)
{
    int rc = system(cmd);
    cr_assert_eq(rc, 0, "command failed (%d): %s", rc, cmd);
}

/* In the test's temp directory: ca (the cluster CA), a leaf certificate per name signed by
 * it, and "evil-ca" with "evil-node-b" (CN node-b) signed by that other CA. */
static void make_certs(const char *const *names)
{
    cr_assert_eq(system("command -v openssl >/dev/null 2>&1"), 0, "the openssl CLI is needed");
    cr_assert_eq(pt_make_tmpdir("gs-tcp-test"), 0);
    snprintf(T.certs, sizeof T.certs, "%s", PT.tmpdir);
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && printf 'basicConstraints=CA:FALSE\\nkeyUsage=digitalSignature\\n"
             "extendedKeyUsage=serverAuth,clientAuth\\n' > leaf.ext && "
             "for ca in ca evil-ca; do openssl req -x509 -newkey ec -pkeyopt "
             "ec_paramgen_curve:prime256v1 -nodes -keyout $ca.key -out $ca.pem -days 2 "
             "-subj /CN=$ca >/dev/null 2>&1 || exit 1; done",
             T.certs);
    run(cmd);
    const char *all[16];
    size_t n = 0;
    for (; names[n] && n < 14; n++)
        all[n] = names[n];
    for (size_t i = 0; i <= n; i++) {
        /* name[:cn[:ca]] ; the last round makes evil-node-b */
        char name[64], cn[64], ca[64];
        if (i == n) {
            snprintf(name, sizeof name, "evil-node-b");
            snprintf(cn, sizeof cn, "node-b");
            snprintf(ca, sizeof ca, "evil-ca");
        } else {
            char spec[128];
            snprintf(spec, sizeof spec, "%s", all[i]);
            char *c1 = strchr(spec, ':');
            if (c1)
                *c1++ = '\0';
            snprintf(name, sizeof name, "%s", spec);
            snprintf(cn, sizeof cn, "%s", c1 ? c1 : spec);
            snprintf(ca, sizeof ca, "ca");
        }
        snprintf(cmd, sizeof cmd,
                 "cd '%s' && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                 "-keyout %s.key -out %s.csr -subj /CN=%s >/dev/null 2>&1 && openssl x509 -req "
                 "-in %s.csr -CA %s.pem -CAkey %s.key -CAcreateserial -days 2 -extfile leaf.ext "
                 "-out %s.pem >/dev/null 2>&1",
                 T.certs, name, name, cn, name, ca, ca, name);
        run(cmd);
    }
}

/* ========================================================================================== */
/* Fixture                                                                                    */

static void setup(void)
{
    pt_init();
    memset(&T, 0, sizeof T);
    T.desc = pt_load_descriptor(TCP_FILE, &T.dl);
    cr_assert_eq(T.desc->kind, GS_KIND_REPL_TRANSPORT);
    T.vt = T.desc->vtable;
    pt_host_init(&T.host, NULL);
    atomic_store(&fail_from, 0);
}

static void pumps_stop(void);

static void teardown(void)
{
    pumps_stop();
    for (int i = 0; i < MAX_NODES; i++)
        destroy_node(i);
    pt_fini();
}

/* Every instance destroyed: nothing the plugin allocated through the host is left. */
static void assert_no_leak(void)
{
    for (int i = 0; i < MAX_NODES; i++)
        destroy_node(i);
    cr_assert_eq(atomic_load(&PT.live_allocs), 0, "%ld host blocks leaked",
                 atomic_load(&PT.live_allocs));
}

TestSuite(tcp_transport, .init = setup, .fini = teardown, .timeout = 240);

/* ========================================================================================== */
/* Tests: the plugin and its config                                                           */

Test(tcp_transport, descriptor_and_keys)
{
    const gs_plugin_descriptor *d = T.desc;
    cr_assert_str_eq(d->name, "tcp");
    cr_assert_eq(d->abi_major, GS_ABI_MAJOR);
    cr_assert_str_eq(d->build_signature, GS_BUILD_SIGNATURE);
    cr_assert_geq(T.vt->struct_size, sizeof(gs_repl_transport_vtable));
    cr_assert(T.vt->create && T.vt->start && T.vt->send && T.vt->stop && T.vt->destroy);
    const char *names[] = {"host",
                           "port",
                           "tls_cert",
                           "tls_key",
                           "tls_ca_cert",
                           "insecure",
                           "peers",
                           "heartbeat_ms",
                           "reconnect_min_ms",
                           "reconnect_max_ms",
                           "max_queue_bytes",
                           "max_frame_bytes"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const gs_config_key *k = key(names[i]);
        cr_assert_lt(k->offset, d->config_struct_size);
        cr_assert_not_null(k->help);
    }
    cr_assert_str_eq(key("host")->default_value, "0.0.0.0");
    cr_assert_str_eq(key("port")->default_value, "0");
    cr_assert_str_eq(key("insecure")->default_value, "false");
    cr_assert_str_eq(key("heartbeat_ms")->default_value, "1000");
    cr_assert_str_eq(key("reconnect_min_ms")->default_value, "100");
    cr_assert_str_eq(key("reconnect_max_ms")->default_value, "5000");
    cr_assert_str_eq(key("max_frame_bytes")->default_value, "67108864");
    cr_assert_eq(d->config_key_count, sizeof names / sizeof names[0]);

    /* TLS is on by default: with no certificate files, create refuses and says what to do. */
    gs_error err;
    memset(&err, 0, sizeof err);
    void *inst = (void *)0x1;
    cr_assert_eq(T.vt->create(&T.host, NULL, "solo", &inst, &err), GS_ERROR);
    cr_assert_null(inst);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "tls_cert") && strstr(err.message, "insecure"), "%s",
              err.message);
    cr_assert_eq(atomic_load(&PT.live_allocs), 0);
}

Test(tcp_transport, config_errors)
{
    gs_error err;
    /* Each bad config is refused with INVALID_CONFIG and a message naming the key. */
    struct {
        opts o;
        const char *id;
        const char *needle;
    } bad[] = {
        {{.peers = {"node-a"}, .peer_ports = {0}}, "node-b", "peers[0].address"},
        {{.peers = {"node-b"}, .peer_ports = {9}}, "node-b", "this node itself"},
        {{.peers = {"node-a", "node-a"}, .peer_ports = {9, 10}}, "node-b", "both name"},
        {{.peers = {"bad id"}, .peer_ports = {9}}, "node-b", "peers[0].id"},
        {{.reconnect_min_ms = 500, .reconnect_max_ms = 100}, "node-b", "reconnect_min_ms"},
        {{.heartbeat_ms = 5}, "node-b", "heartbeat_ms"},
        {{.max_frame_bytes = 100}, "node-b", "max_frame_bytes"},
        {{0}, "bad\nid", "node id"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gs_status st = try_create(0, bad[i].id, &bad[i].o, &err);
        cr_assert_eq(st, GS_ERROR, "case %zu was accepted", i);
        cr_assert_str_eq(err.code, "INVALID_CONFIG", "case %zu: %s", i, err.code);
        cr_assert(strstr(err.message, bad[i].needle), "case %zu: '%s' lacks '%s'", i, err.message,
                  bad[i].needle);
    }
    /* Certificate files that do not exist, or a CA file with no certificate. */
    const char *const names[] = {"node-a", NULL};
    make_certs(names);
    opts o = {.tls = 1, .cert = "missing"};
    cr_assert_eq(try_create(0, "node-a", &o, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "tls_cert"), "%s", err.message);
    opts o2 = {.tls = 1, .ca = "leaf"}; /* leaf.ext is no PEM file */
    char p[600];
    snprintf(p, sizeof p, "%s/leaf.pem", T.certs);
    FILE *f = fopen(p, "w");
    cr_assert_not_null(f);
    fputs("not a certificate\n", f);
    fclose(f);
    cr_assert_eq(try_create(0, "node-a", &o2, &err), GS_ERROR);
    cr_assert(strstr(err.message, "tls_ca_cert"), "%s", err.message);
    assert_no_leak();
}

Test(tcp_transport, send_errors)
{
    opts a = {0};
    gs_error err;
    cr_assert_eq(try_create(0, "node-a", &a, &err), GS_OK, "%s", err.message);
    uint8_t b[8] = {0};
    /* Not started yet. */
    cr_assert_eq(send_bytes(0, "node-b", 1, 0, b, sizeof b, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    start_node(0, &a);
    /* Not connected, a bad type, a NULL buffer, a message over max_frame_bytes. */
    cr_assert_eq(send_bytes(0, "node-b", 1, 0, b, sizeof b, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    cr_assert(strstr(err.message, "not connected"), "%s", err.message);
    cr_assert_eq(send_bytes(0, "node-b", 7, 0, b, sizeof b, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    cr_assert_eq(send_bytes(0, "node-b", 1, 0, NULL, 4, &err), GS_ERROR);
    cr_assert_eq(send_bytes(0, "node-b", 1, 0, b, (size_t)67108864, &err), GS_ERROR);
    cr_assert(strstr(err.message, "max_frame_bytes"), "%s", err.message);
    /* Started twice. */
    gs_error e2;
    memset(&e2, 0, sizeof e2);
    cr_assert_eq(T.vt->start(T.nodes[0].inst, &T.nodes[0].ev, &e2), GS_ERROR);
    stop_node(0);
    cr_assert_eq(send_bytes(0, "node-b", 1, 0, b, sizeof b, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    assert_no_leak();
}

/* ========================================================================================== */
/* Tests: traffic                                                                             */

/* node-a (primary, listening) with node-b and node-c dialling it. */
static void three_nodes(int tls, int64_t heartbeat_ms)
{
    opts a = {.tls = tls, .heartbeat_ms = heartbeat_ms};
    create_node(0, "node-a", &a);
    int port = port_of("node-a");
    opts b = {.tls = tls, .peers = {"node-a"}, .peer_ports = {port}, .heartbeat_ms = heartbeat_ms};
    create_node(1, "node-b", &b);
    create_node(2, "node-c", &b);
    cr_assert(wait_peer(0, "node-b", 1), "node-a sees node-b");
    cr_assert(wait_peer(0, "node-c", 1), "node-a sees node-c");
    cr_assert(wait_peer(1, "node-a", 1), "node-b sees node-a");
    cr_assert(wait_peer(2, "node-a", 1), "node-c sees node-a");
}

/* n messages a -> b and b -> a, interleaved, then check order, content, call ids, types. */
static void both_ways(int a, int b, uint32_t n)
{
    const char *ida = T.nodes[a].id, *idb = T.nodes[b].id;
    int ia = name_of(ida), ib = name_of(idb);
    for (uint32_t s = 0; s < n; s++) {
        send_seq(a, idb, s, size_of(s));
        send_seq(b, ida, s, size_of(s + 1));
    }
    cr_assert(wait_msgs(b, ida, (int)n), "%s got %d of %u from %s", idb, get(&T.nodes[b].msgs[ia]),
              n, ida);
    cr_assert(wait_msgs(a, idb, (int)n), "%s got %d of %u from %s", ida, get(&T.nodes[a].msgs[ib]),
              n, idb);
    pthread_mutex_lock(&PT.lock);
    int errs[] = {T.nodes[a].order_errors, T.nodes[a].content_errors, T.nodes[a].call_id_errors,
                  T.nodes[b].order_errors, T.nodes[b].content_errors, T.nodes[b].call_id_errors};
    uint32_t next_a = T.nodes[a].next_seq[ib], next_b = T.nodes[b].next_seq[ia];
    pthread_mutex_unlock(&PT.lock);
    for (size_t i = 0; i < 6; i++)
        cr_assert_eq(errs[i], 0, "error counter %zu is %d", i, errs[i]);
    cr_assert_eq(next_a, n);
    cr_assert_eq(next_b, n);
}

Test(tcp_transport, insecure_three_nodes)
{
    three_nodes(0, 0);
    cr_assert(log_contains("plaintext (insecure)"));
    both_ways(0, 1, 200);
    both_ways(0, 2, 50);
    /* Replicas do not link to each other: node-b cannot reach node-c. */
    gs_error err;
    uint8_t x[8] = {0};
    cr_assert_eq(send_bytes(1, "node-c", 1, 0, x, sizeof x, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    /* A zero-length message arrives as one. */
    cr_assert_eq(send_bytes(1, "node-a", 1, 0, NULL, 0, &err), GS_OK, "%s", err.message);
    cr_assert(pt_wait_at_least(&T.nodes[0].zero_len, 1));
    /* node-b stops: node-a sees it leave, node-c stays. */
    stop_node(1);
    cr_assert(wait_peer(0, "node-b", 0));
    cr_assert_eq(get(&T.nodes[0].up[name_of("node-c")]), 1);
    assert_no_leak();
}

Test(tcp_transport, ten_thousand_messages_insecure)
{
    three_nodes(0, 0);
    both_ways(0, 1, 10000);
    assert_no_leak();
}

Test(tcp_transport, mtls_ten_thousand_messages_and_calls)
{
    const char *const names[] = {"node-a", "node-b", "node-c", NULL};
    make_certs(names);
    three_nodes(1, 0);
    cr_assert(log_contains("TLS 1.3, certificate CN verified"));
    cr_assert(log_contains("TLS 1.3 with mutual authentication"));
    both_ways(0, 1, 10000);
    /* Forward calls: node-c asks, node-a answers with the same call id from its I/O thread. */
    pthread_mutex_lock(&PT.lock);
    T.nodes[0].echo = 1;
    pthread_mutex_unlock(&PT.lock);
    static uint8_t buf[4096];
    for (uint32_t s = 0; s < 300; s++) {
        size_t len = 8 + s % 2000;
        payload(buf, len, s);
        gs_error err;
        cr_assert_eq(
            send_bytes(2, "node-a", GS_REPL_MSG_FORWARD_REQUEST, call_id_of(s), buf, len, &err),
            GS_OK, "%s", err.message);
    }
    msg_count m = {2, 0, 300};
    cr_assert(wait_until(pred_responses, &m, WAIT_MS), "%d of 300 answers matched",
              get(&T.nodes[2].responses));
    cr_assert_eq(get(&T.nodes[0].echo_failures), 0);
    /* One big message (several TLS records, a grown read buffer) in both directions. */
    send_seq(1, "node-a", 10000, 3 << 20);
    cr_assert(wait_msgs(0, "node-b", 10001));
    cr_assert_eq(get(&T.nodes[0].content_errors), 0);
    assert_no_leak();
}

/* ========================================================================================== */
/* Tests: refusals                                                                            */

Test(tcp_transport, wrong_cn_refused)
{
    /* "mallory" holds a certificate with CN mallory from the cluster CA, and claims to be
     * node-b; node-b2 holds node-b's CN but the primary's certificate is mallory's. */
    const char *const names[] = {"node-a", "node-b", "mallory", NULL};
    make_certs(names);
    opts a = {.tls = 1};
    create_node(0, "node-a", &a);
    int port = port_of("node-a");
    opts b = {.tls = 1, .cert = "mallory", .peers = {"node-a"}, .peer_ports = {port}};
    create_node(1, "node-b", &b);
    cr_assert(log_contains("tls_cert"), "a CN that is not the node id is warned about at create");
    cr_assert(wait_log("but its certificate's CN is 'mallory'"));
    cr_assert(wait_log("the peer closed it: refused"), "the dialler hears why");
    cr_assert_eq(get(&T.nodes[0].ups[name_of("node-b")]), 0);
    cr_assert_eq(get(&T.nodes[1].ups[name_of("node-a")]), 0);
    destroy_node(1);

    /* The other way round: the listener's CN is not the id the dialler expects. */
    opts m = {.tls = 1, .cert = "mallory"};
    create_node(2, "node-m", &m);
    int mport = port_of("node-m");
    opts c = {.tls = 1, .cert = "node-b", .peers = {"node-m"}, .peer_ports = {mport}};
    create_node(3, "node-b", &c);
    cr_assert(wait_log("its certificate's CN is 'mallory', but peers[] lists this address as "
                       "'node-m'"));
    cr_assert_eq(get(&T.nodes[2].ups[name_of("node-b")]), 0);
    cr_assert_eq(get(&T.nodes[3].ups[name_of("node-m")]), 0);
    assert_no_leak();
}

Test(tcp_transport, untrusted_ca_refused)
{
    const char *const names[] = {"node-a", "node-b", "node-c", NULL};
    make_certs(names);
    opts a = {.tls = 1};
    create_node(0, "node-a", &a);
    int port = port_of("node-a");
    /* CN node-b, but signed by another CA: the primary's handshake refuses it. */
    opts b = {.tls = 1, .cert = "evil-node-b", .peers = {"node-a"}, .peer_ports = {port}};
    create_node(1, "node-b", &b);
    cr_assert(wait_log2("node 'node-a': connection from",
                        "presented no certificate signed by this node's tls_ca_cert"));
    /* The dialler sees the link end (the alert, or a reset when the refusing side closed
     * before reading the dialler's hello: TCP may drop the alert then). */
    cr_assert(wait_log2("node 'node-b': connection to node-a", "closed while"));
    cr_assert_eq(get(&T.nodes[0].ups[name_of("node-b")]), 0);
    cr_assert_eq(get(&T.nodes[1].ups[name_of("node-a")]), 0);
    destroy_node(1);
    /* And a dialler that trusts another CA refuses the primary. */
    opts c = {.tls = 1, .ca = "evil-ca", .peers = {"node-a"}, .peer_ports = {port}};
    create_node(2, "node-c", &c);
    cr_assert(wait_log2("node 'node-c': connection to node-a",
                        "TLS handshake refused the peer's certificate"));
    cr_assert_eq(get(&T.nodes[2].ups[name_of("node-a")]), 0);
    assert_no_leak();
}

Test(tcp_transport, plaintext_peer_refused_by_tls_node)
{
    const char *const names[] = {"node-a", NULL};
    make_certs(names);
    opts a = {.tls = 1};
    create_node(0, "node-a", &a);
    raw r;
    raw_connect(&r, port_of("node-a"), 0);
    raw_hello_try(&r, "node-x", "replica", 1000); /* may fail: the node closes at once */
    cr_assert(raw_expect_closed(&r), "a plaintext hello to a TLS node is closed");
    cr_assert(wait_log("TLS handshake failed"));
    cr_assert_eq(get(&T.nodes[0].ups[name_of("node-x")]), 0);
    raw_close(&r);
    assert_no_leak();
}

Test(tcp_transport, first_frame_not_hello_closed)
{
    opts a = {0};
    create_node(0, "node-a", &a);
    int port = port_of("node-a");
    raw r;
    raw_connect(&r, port, 0);
    uint8_t p[16];
    payload(p, sizeof p, 1);
    raw_frame(&r, GS_TCP_FRAME_MESSAGE, 1, 0, p, sizeof p);
    cr_assert(raw_expect_closed(&r));
    cr_assert(strstr(r.close_reason, "first frame was not a hello"), "close reason: '%s'",
              r.close_reason);
    cr_assert(wait_log("first frame was not a hello"));
    raw_close(&r);

    /* HTTP on the replication port: its first four bytes read as a huge length. */
    raw_connect(&r, port, 0);
    const char *get_req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    cr_assert_eq(pt_write_all(r.fd, NULL, get_req, strlen(get_req)), 0);
    cr_assert(raw_expect_closed(&r));
    cr_assert(wait_log("exceeds max_frame_bytes"));
    raw_close(&r);

    /* A hello with the node's own id is refused too. */
    raw_connect(&r, port, 0);
    raw_hello(&r, "node-a", "replica", 1000);
    cr_assert(raw_expect_closed(&r));
    cr_assert(strstr(r.close_reason, "own id"), "%s", r.close_reason);
    raw_close(&r);
    for (int i = 0; i < MAX_NAMES; i++)
        cr_assert_eq(get(&T.nodes[0].ups[i]), 0, "no peer came up");
    assert_no_leak();
}

Test(tcp_transport, oversize_frame_refused_without_allocating)
{
    opts a = {.max_frame_bytes = 65536};
    create_node(0, "node-a", &a);
    raw r;
    raw_connect(&r, port_of("node-a"), 0);
    raw_hello(&r, "node-x", "replica", 1000);
    gs_tcp_hello h;
    raw_expect_hello(&r, &h);
    cr_assert_str_eq(h.node_id, "node-a");
    cr_assert_str_eq(h.role, "primary");
    cr_assert_str_eq(h.protocol_version, "1.0");
    cr_assert(wait_peer(0, "node-x", 1));
    /* A frame inside the limit is delivered... */
    uint8_t p[1000];
    payload(p, sizeof p, 0);
    raw_frame(&r, GS_TCP_FRAME_MESSAGE, 1, call_id_of(0), p, sizeof p);
    cr_assert(wait_msgs(0, "node-x", 1));
    size_t before = atomic_load(&PT.peak_bytes);
    /* ...one claiming a gigabyte closes the connection, and nothing that big is allocated. */
    uint8_t hdr[GS_TCP_FRAME_HEADER];
    uint8_t big[4] = {0x3f, 0xff, 0xff, 0xff};
    memcpy(hdr, big, 4);
    hdr[4] = GS_TCP_FRAME_MESSAGE;
    hdr[5] = 1;
    memset(hdr + 6, 0, 8);
    cr_assert_eq(pt_write_all(r.fd, NULL, hdr, sizeof hdr), 0);
    cr_assert(raw_expect_closed(&r));
    cr_assert(strstr(r.close_reason, "exceeds max_frame_bytes"), "%s", r.close_reason);
    cr_assert(wait_peer(0, "node-x", 0));
    cr_assert(wait_log("exceeds max_frame_bytes (65536)"));
    cr_assert_lt(atomic_load(&PT.peak_bytes), before + (1 << 20), "peak %zu bytes",
                 atomic_load(&PT.peak_bytes));
    raw_close(&r);
    /* The sending side refuses what the limit cannot carry. */
    gs_error err;
    static uint8_t m[70000];
    raw_connect(&r, port_of("node-a"), 0);
    raw_hello(&r, "node-y", "replica", 1000);
    cr_assert(wait_peer(0, "node-y", 1));
    cr_assert_eq(send_bytes(0, "node-y", 1, 0, m, sizeof m, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    cr_assert(strstr(err.message, "max_frame_bytes"), "%s", err.message);
    raw_close(&r);
    assert_no_leak();
}

Test(tcp_transport, incoming_frame_out_of_memory_closes)
{
    /* node-a's host fails blocks of 1 MiB and more: a 2 MiB frame cannot be read. */
    static gs_host picky;
    picky = T.host;
    picky.alloc = picky_alloc;
    picky.realloc = picky_realloc;
    opts a = {.host = &picky};
    create_node(0, "node-a", &a);
    opts b = {.peers = {"node-a"}, .peer_ports = {port_of("node-a")}};
    create_node(1, "node-b", &b);
    cr_assert(wait_peer(0, "node-b", 1));
    cr_assert(wait_peer(1, "node-a", 1));
    atomic_store(&fail_from, 1 << 20);
    send_seq(1, "node-a", 0, 2 << 20);
    cr_assert(wait_log("out of memory for an incoming frame"));
    cr_assert(wait_peer(0, "node-b", 0));
    /* node-b redials and the link works again. */
    cr_assert(wait_peer_n(0, "node-b", 1, 2));
    /* Sending side: the frame copy fails, send says so. */
    static uint8_t m[2 << 20];
    gs_error err;
    cr_assert(wait_peer_n(1, "node-a", 1, 2));
    cr_assert_eq(send_bytes(0, "node-b", 1, 0, m, sizeof m, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INTERNAL_ERROR");
    atomic_store(&fail_from, 0);
    assert_no_leak();
}

/* ========================================================================================== */
/* Tests: liveness and reconnects                                                             */

Test(tcp_transport, heartbeat_timeout_drops_silent_peer)
{
    opts a = {.heartbeat_ms = 100};
    create_node(0, "node-a", &a);
    raw r;
    raw_connect(&r, port_of("node-a"), 0);
    raw_hello(&r, "node-x", "replica", 100);
    gs_tcp_hello h;
    raw_expect_hello(&r, &h);
    cr_assert_eq(h.heartbeat_ms, 100);
    cr_assert(wait_peer(0, "node-x", 1));
    uint64_t t0 = now_ms();
    /* The node heartbeats us; we say nothing: dropped after 3 heartbeats. */
    gs_tcp_frame f;
    cr_assert_eq(raw_read(&r, &f), 1);
    cr_assert_eq(f.frame_type, GS_TCP_FRAME_HEARTBEAT);
    cr_assert(wait_peer(0, "node-x", 0));
    uint64_t took = now_ms() - t0;
    cr_assert_geq(took, 250, "dropped after %llu ms", (unsigned long long)took);
    cr_assert(wait_log("silent for"));
    cr_assert(raw_expect_closed(&r));
    raw_close(&r);
    assert_no_leak();
}

Test(tcp_transport, replica_drops_silent_primary_and_redials)
{
    /* A fake primary: accepts, answers the hello, then says nothing. */
    int port;
    int lfd = fake_listener(&port);
    opts b = {.peers = {"fake"},
              .peer_ports = {port},
              .heartbeat_ms = 100,
              .reconnect_min_ms = 50,
              .reconnect_max_ms = 200};
    create_node(1, "node-b", &b);
    for (int round = 1; round <= 2; round++) {
        raw r;
        fake_accept(lfd, &r, "fake", 100);
        cr_assert(wait_peer_n(1, "fake", 1, round));
        cr_assert(wait_peer_n(1, "fake", 0, round), "the silent primary is dropped");
        raw_close(&r);
    }
    cr_assert(wait_log("silent for"));
    close(lfd);
    assert_no_leak();
}

Test(tcp_transport, reconnect_after_restart)
{
    opts a = {.heartbeat_ms = 200};
    create_node(0, "node-a", &a);
    int port = port_of("node-a");
    opts b = {.peers = {"node-a"},
              .peer_ports = {port},
              .heartbeat_ms = 200,
              .reconnect_min_ms = 20,
              .reconnect_max_ms = 300};
    create_node(1, "node-b", &b);
    cr_assert(wait_peer(1, "node-a", 1));
    both_ways(0, 1, 20);

    /* Stop and start the same instance: it listens on the same port again. */
    stop_node(0);
    cr_assert(wait_peer(1, "node-a", 0));
    start_node(0, &a);
    cr_assert_eq(listen_port("node-a"), port);
    cr_assert(wait_peer_n(1, "node-a", 1, 2), "node-b redials the restarted node-a");
    cr_assert(wait_peer_n(0, "node-b", 1, 2));

    /* A new instance on the fixed port (a process restart). */
    destroy_node(0);
    cr_assert(wait_peer_n(1, "node-a", 0, 2));
    opts a2 = {.port = port, .heartbeat_ms = 200};
    create_node(0, "node-a", &a2);
    cr_assert(wait_peer_n(1, "node-a", 1, 3));
    cr_assert(wait_peer(0, "node-b", 1));
    /* Fresh sequence on the new link. */
    int ia = name_of("node-a");
    pthread_mutex_lock(&PT.lock);
    T.nodes[1].next_seq[ia] = 0;
    T.nodes[1].msgs[ia] = 0;
    pthread_mutex_unlock(&PT.lock);
    send_seq(0, "node-b", 0, 100);
    cr_assert(wait_msgs(1, "node-a", 1));
    cr_assert(log_contains("reconnecting in"));
    assert_no_leak();
}

Test(tcp_transport, new_connection_replaces_old)
{
    opts a = {0};
    create_node(0, "node-a", &a);
    int port = port_of("node-a");
    raw r1, r2;
    gs_tcp_hello h;
    raw_connect(&r1, port, 0);
    raw_hello(&r1, "node-x", "replica", 60000);
    raw_expect_hello(&r1, &h);
    cr_assert(wait_peer(0, "node-x", 1));
    raw_connect(&r2, port, 0);
    raw_hello(&r2, "node-x", "replica", 60000);
    raw_expect_hello(&r2, &h);
    /* The old one is closed with a reason; node-a saw x leave and come back. */
    cr_assert(raw_expect_closed(&r1));
    cr_assert(strstr(r1.close_reason, "replaced"), "%s", r1.close_reason);
    cr_assert(wait_peer_n(0, "node-x", 1, 2));
    cr_assert_eq(get(&T.nodes[0].downs[name_of("node-x")]), 1);
    /* Messages go to the new connection. */
    uint8_t p[64];
    payload(p, sizeof p, 0);
    gs_error err;
    cr_assert_eq(send_bytes(0, "node-x", 2, 77, p, sizeof p, &err), GS_OK, "%s", err.message);
    gs_tcp_frame f;
    cr_assert_eq(raw_read(&r2, &f), 1);
    cr_assert_eq(f.frame_type, GS_TCP_FRAME_MESSAGE);
    cr_assert_eq(f.msg_type, 2);
    cr_assert_eq(f.call_id, 77);
    cr_assert_eq(f.payload_len, sizeof p);
    cr_assert_eq(memcmp(f.payload, p, sizeof p), 0);
    raw_close(&r1);
    raw_close(&r2);
    assert_no_leak();
}

Test(tcp_transport, full_queue_gives_again)
{
    opts a = {.max_queue_bytes = 65536};
    create_node(0, "node-a", &a);
    raw r;
    /* A peer that never reads, with a tiny receive buffer. */
    raw_connect(&r, port_of("node-a"), 4096);
    raw_hello(&r, "slow", "replica", 60000);
    cr_assert(wait_peer(0, "slow", 1));
    static uint8_t m[16384];
    gs_error err;
    int again = 0;
    long sent = 0;
    for (int i = 0; i < 100000 && !again; i++) {
        gs_status st = send_bytes(0, "slow", 1, 0, m, sizeof m, &err);
        if (st == GS_AGAIN)
            again = 1;
        else
            cr_assert_eq(st, GS_OK, "%s %s", err.code, err.message);
        sent += st == GS_OK;
    }
    cr_assert(again, "no GS_AGAIN after %ld messages", sent);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    cr_assert(strstr(err.message, "max_queue_bytes"), "%s", err.message);
    cr_assert_lt(sent * (long)sizeof m, 64L << 20, "queued %ld bytes", sent * (long)sizeof m);
    /* A message larger than the whole queue can never fit. */
    static uint8_t huge[70000];
    cr_assert_eq(send_bytes(0, "slow", 1, 0, huge, sizeof huge, &err), GS_ERROR);
    raw_close(&r);
    assert_no_leak();
}

/* Sender threads for the stop test. Global, so teardown stops them even when an assertion
 * ends the test early (they must not outlive the nodes they send through). */
typedef struct pump {
    int from;
    const char *to;
    pthread_t thread;
    int live;
    atomic_int stop;
    long sent;
} pump;

static pump PUMPS[2];

static void *pump_main(void *arg)
{
    pump *p = arg;
    static _Thread_local uint8_t buf[2048];
    for (uint32_t s = 0; !atomic_load(&p->stop); s++) {
        payload(buf, sizeof buf, s);
        gs_error err;
        memset(&err, 0, sizeof err);
        gs_status st = T.vt->send(T.nodes[p->from].inst, p->to, GS_REPL_MSG_REPLICATION, 0, buf,
                                  sizeof buf, &err);
        if (st == GS_OK) {
            p->sent++;
        } else if (st == GS_AGAIN) {
            /* The queue is full: let the receiver move (bounded wait on its progress). */
            struct timespec ts = deadline_in(20);
            pthread_mutex_lock(&PT.lock);
            pthread_cond_timedwait(&PT.cond, &PT.lock, &ts);
            pthread_mutex_unlock(&PT.lock);
        } else if (p->sent > 0) {
            break; /* stopped under us */
        }
    }
    return NULL;
}

static void pumps_start(void)
{
    PUMPS[0] = (pump){.from = 0, .to = "node-b"};
    PUMPS[1] = (pump){.from = 1, .to = "node-a"};
    for (int i = 0; i < 2; i++)
        PUMPS[i].live = pthread_create(&PUMPS[i].thread, NULL, pump_main, &PUMPS[i]) == 0;
}

static void pumps_stop(void)
{
    for (int i = 0; i < 2; i++) {
        atomic_store(&PUMPS[i].stop, 1);
        if (PUMPS[i].live)
            pthread_join(PUMPS[i].thread, NULL);
        PUMPS[i].live = 0;
    }
}

static int pred_after_stop(void *arg)
{
    (void)arg;
    return T.nodes[0].after_stop + T.nodes[1].after_stop > 0;
}

Test(tcp_transport, stop_with_traffic_in_flight)
{
    const char *const names[] = {"node-a", "node-b", NULL};
    make_certs(names);
    opts a = {.tls = 1, .max_queue_bytes = 1 << 20};
    create_node(0, "node-a", &a);
    opts b = {.tls = 1,
              .peers = {"node-a"},
              .peer_ports = {port_of("node-a")},
              .max_queue_bytes = 1 << 20};
    create_node(1, "node-b", &b);
    cr_assert(wait_peer(0, "node-b", 1));
    cr_assert(wait_peer(1, "node-a", 1));
    pumps_start();
    cr_assert(wait_msgs(1, "node-a", 500));
    cr_assert(wait_msgs(0, "node-b", 500));
    /* Stop both while the pumps still send. */
    stop_node(0);
    stop_node(1);
    pumps_stop();
    /* No callback after stop returned: wait (bounded) for one that must not come. */
    cr_assert_not(wait_until(pred_after_stop, NULL, 300), "a callback ran after stop()");
    gs_error err;
    uint8_t x[8] = {0};
    cr_assert_eq(send_bytes(0, "node-b", 1, 0, x, sizeof x, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    assert_no_leak();
}

Test(tcp_transport, both_dial_each_other_lower_id_dialler_wins)
{
    /* node-a dials node-b (a raw peer) and node-b also dials node-a: node-a < node-b, so the
     * link node-a dialled stays and node-b's is refused. */
    int fport;
    int lfd = fake_listener(&fport);
    opts a = {.peers = {"node-b"}, .peer_ports = {fport}, .role = "primary"};
    create_node(0, "node-a", &a);
    raw out, in;
    fake_accept(lfd, &out, "node-b", 60000);
    cr_assert(wait_peer(0, "node-b", 1));
    raw_connect(&in, port_of("node-a"), 0);
    raw_hello(&in, "node-b", "replica", 60000);
    cr_assert(raw_expect_closed(&in));
    cr_assert(strstr(in.close_reason, "dialled each other"), "%s", in.close_reason);
    cr_assert_eq(get(&T.nodes[0].downs[name_of("node-b")]), 0);
    cr_assert_eq(get(&T.nodes[0].ups[name_of("node-b")]), 1);
    raw_close(&in);
    raw_close(&out);
    close(lfd);

    /* node-z dials node-b, and node-b dials node-z: node-b < node-z, so node-b's link
     * replaces the one node-z dialled. */
    lfd = fake_listener(&fport);
    opts z = {.peers = {"node-b"}, .peer_ports = {fport}, .role = "primary"};
    create_node(1, "node-z", &z);
    fake_accept(lfd, &out, "node-b", 60000);
    cr_assert(wait_peer(1, "node-b", 1));
    raw_connect(&in, port_of("node-z"), 0);
    raw_hello(&in, "node-b", "replica", 60000);
    gs_tcp_hello h;
    raw_expect_hello(&in, &h);
    cr_assert_str_eq(h.node_id, "node-z");
    cr_assert(raw_expect_closed(&out));
    cr_assert(strstr(out.close_reason, "replaced"), "%s", out.close_reason);
    cr_assert(wait_peer_n(1, "node-b", 1, 2));
    cr_assert_eq(get(&T.nodes[1].downs[name_of("node-b")]), 1);
    /* node-z does not redial node-b while the link node-b dialled is up. */
    struct pollfd pfd = {.fd = lfd, .events = POLLIN};
    cr_assert_eq(poll(&pfd, 1, 500), 0, "node-z redialled a connected peer");
    raw_close(&in);
    raw_close(&out);
    close(lfd);
    assert_no_leak();
}

Test(tcp_transport, both_dial_each_other_settle_on_one_link)
{
    /* Two real nodes that list each other with fixed ports end up with one link that carries
     * traffic, whatever order their dials cross in. */
    int pa, pb;
    int la = fake_listener(&pa), lb = fake_listener(&pb);
    close(la);
    close(lb);
    opts a = {.port = pa,
              .peers = {"node-b"},
              .peer_ports = {pb},
              .role = "primary",
              .reconnect_min_ms = 20,
              .reconnect_max_ms = 100};
    opts b = {.port = pb,
              .peers = {"node-a"},
              .peer_ports = {pa},
              .role = "replica",
              .reconnect_min_ms = 20,
              .reconnect_max_ms = 100};
    create_node(0, "node-a", &a);
    create_node(1, "node-b", &b);
    cr_assert(wait_peer(0, "node-b", 1));
    cr_assert(wait_peer(1, "node-a", 1));
    /* A probe sent while a crossing link is being replaced may be lost: probe until one
     * arrives each way (bounded). */
    int ok_ab = 0, ok_ba = 0;
    uint64_t end = now_ms() + WAIT_MS;
    uint8_t x[8] = {0};
    while ((!ok_ab || !ok_ba) && now_ms() < end) {
        gs_error err;
        send_bytes(0, "node-b", 1, 0, x, sizeof x, &err);
        send_bytes(1, "node-a", 1, 0, x, sizeof x, &err);
        msg_count m1 = {1, name_of("node-a"), 1}, m2 = {0, name_of("node-b"), 1};
        ok_ab = wait_until(pred_msgs, &m1, 200);
        ok_ba = wait_until(pred_msgs, &m2, 200);
    }
    cr_assert(ok_ab && ok_ba, "no traffic over the settled link");
    cr_assert_eq(get(&T.nodes[0].up[name_of("node-b")]), 1);
    cr_assert_eq(get(&T.nodes[1].up[name_of("node-a")]), 1);
    assert_no_leak();
}
