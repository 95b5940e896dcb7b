/*
 * transports/grpc against a fake host: dlopen gs_transport_grpc.so, fill its config struct
 * through its own key table (as the core's config layer does), and run two or three instances
 * in this process on loopback with OS-assigned ports, insecure and with mutual TLS
 * (certificates made at test time with the openssl CLI in a mkdtemp directory). A raw gRPC
 * client written here against gRPC core plays the misbehaving peer (no Hello, a second
 * Replicate stream) and the health checker.
 *
 * Each node records what its events report (sender, type, call id, a sequence number and a
 * hash of the bytes; peer up/down) under PT.lock; every change broadcasts PT.cond. Payloads of
 * type 1/2 are protobuf-shaped (field 2, length-delimited: the transport passes anything after
 * the Hello through, but drops a repeated Hello, field 1) whose body starts with a
 * little-endian sequence number and a stream byte. Every wait has a deadline (WAIT_MS).
 */
#include "plugin_test_host.h"

#include <gatestream/repl_transport.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GC_FILE "gs_transport_grpc.so"
#define MAX_NODES 4
#define MAX_STREAMS 4
#define EV_UP 101
#define EV_DOWN 100

/* ========================================================================================== */
/* The fake core                                                                              */

typedef struct rec {
    int from; /* node index, -1 when unknown */
    int type; /* 1..4, or EV_UP / EV_DOWN */
    uint64_t call_id;
    uint32_t seq;
    int stream;
    size_t len;
    uint64_t hash;
    char text[160]; /* the start of the bytes, NUL-terminated (forward error texts) */
} rec;

typedef struct node {
    char id[64];
    void *inst;
    gs_repl_events ev;
    /* Guarded by PT.lock. */
    rec *recs;
    size_t nrec, cap;
    int up[MAX_NODES + 1];
    int ups[MAX_NODES + 1];
    int downs[MAX_NODES + 1];
    int msgs[MAX_NODES + 1]; /* index MAX_NODES: an id that is no node of the test */
    uint32_t next_seq[MAX_NODES + 1][3][MAX_STREAMS];
    int order_errors;
    int after_stop;
    int stopped;
    int gate_closed;
    int in_gate;
    int echo_forward;
    int echo_failures;
    uint64_t last_fwd_call; /* call id of the last forward request */
    char last_fwd_from[64];
} node;

static struct {
    void *dl;
    const gs_plugin_descriptor *desc;
    const gs_repl_transport_vtable *vt;
    gs_host host;
    node nodes[MAX_NODES];
} T;

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

static int node_index(const char *id)
{
    for (int i = 0; i < MAX_NODES; i++)
        if (T.nodes[i].id[0] && strcmp(T.nodes[i].id, id) == 0)
            return i;
    return MAX_NODES;
}

static void add_rec(node *n, const rec *r)
{
    if (n->stopped)
        n->after_stop++;
    if (n->nrec == n->cap) {
        size_t cap = n->cap ? n->cap * 2 : 1024;
        rec *nr = realloc(n->recs, cap * sizeof *nr);
        cr_assert_not_null(nr);
        n->recs = nr;
        n->cap = cap;
    }
    n->recs[n->nrec++] = *r;
}

/* A type 1/2 payload: field 2 (length-delimited) whose body is seq (LE), stream, filler. */
static size_t payload(uint8_t *out, size_t body, uint32_t seq, int stream)
{
    size_t n = 0;
    out[n++] = 0x12;
    size_t v = body;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    uint8_t *b = out + n;
    for (size_t i = 0; i < body; i++)
        b[i] = (uint8_t)(i * 31 + seq);
    if (body >= 5) {
        b[0] = (uint8_t)seq;
        b[1] = (uint8_t)(seq >> 8);
        b[2] = (uint8_t)(seq >> 16);
        b[3] = (uint8_t)(seq >> 24);
        b[4] = (uint8_t)stream;
    }
    return n + body;
}

/* The body of a payload() message, or NULL. */
static const uint8_t *payload_body(const uint8_t *p, size_t len, size_t *body)
{
    if (len < 2 || p[0] != 0x12)
        return NULL;
    size_t i = 1, v = 0;
    int shift = 0;
    while (i < len && (p[i] & 0x80)) {
        v |= (size_t)(p[i++] & 0x7f) << shift;
        shift += 7;
    }
    if (i >= len)
        return NULL;
    v |= (size_t)p[i++] << shift;
    if (v != len - i)
        return NULL;
    *body = v;
    return p + i;
}

static void on_message(void *user, const char *from, gs_repl_msg_type type, uint64_t call_id,
                       const uint8_t *bytes, size_t len)
{
    node *n = user;
    rec r = {.from = node_index(from),
             .type = (int)type,
             .call_id = call_id,
             .len = len,
             .hash = fnv(bytes, len)};
    size_t tl = len < sizeof r.text - 1 ? len : sizeof r.text - 1;
    for (size_t i = 0; i < tl; i++)
        r.text[i] = bytes[i] >= 0x20 && bytes[i] < 0x7f ? (char)bytes[i] : '.';
    size_t body = 0;
    const uint8_t *b = payload_body(bytes, len, &body);
    if (b && body >= 5) {
        r.seq = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        r.stream = b[4] % MAX_STREAMS;
    }
    pthread_mutex_lock(&PT.lock);
    if (n->gate_closed) {
        n->in_gate = 1;
        pthread_cond_broadcast(&PT.cond);
        struct timespec ts = deadline_in(WAIT_MS);
        while (n->gate_closed)
            if (pthread_cond_timedwait(&PT.cond, &PT.lock, &ts) == ETIMEDOUT)
                break;
        n->in_gate = 0;
    }
    n->msgs[r.from]++;
    if ((type == GS_REPL_MSG_REPLICATION || type == GS_REPL_MSG_SYNC) && b && body >= 5) {
        if (r.seq != n->next_seq[r.from][type][r.stream])
            n->order_errors++;
        n->next_seq[r.from][type][r.stream] = r.seq + 1;
    }
    if (type == GS_REPL_MSG_FORWARD_REQUEST) {
        n->last_fwd_call = call_id;
        snprintf(n->last_fwd_from, sizeof n->last_fwd_from, "%s", from);
    }
    add_rec(n, &r);
    int echo = n->echo_forward && type == GS_REPL_MSG_FORWARD_REQUEST;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
    if (echo) {
        /* Answer from the event thread, as a core could (the core queues it in fact). */
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

static void on_peer(void *user, const char *node_id, int connected)
{
    node *n = user;
    int i = node_index(node_id);
    rec r = {.from = i, .type = connected ? EV_UP : EV_DOWN};
    pthread_mutex_lock(&PT.lock);
    n->up[i] = connected;
    if (connected)
        n->ups[i]++;
    else
        n->downs[i]++;
    add_rec(n, &r);
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
}

/* ========================================================================================== */
/* Config through the plugin's key table                                                      */

typedef struct peer_cfg { /* the plugin's peers[] item, as its key table describes it */
    const char *id;
    const char *address;
    const char *server_name;
} peer_cfg;

static const gs_config_key *key(const char *name)
{
    const gs_plugin_descriptor *d = T.desc;
    for (size_t i = 0; i < d->config_key_count; i++) {
        const gs_config_key *k =
            (const gs_config_key *)((const char *)d->config_keys + i * d->config_key_size);
        if (strcmp(k->name, name) == 0)
            return k;
    }
    cr_assert_fail("the grpc transport has no key '%s'", name);
    return NULL;
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
    int tls;             /* 0 = insecure */
    const char *cert;    /* file base names in PT.tmpdir (node.pem / node.key) */
    const char *ca;      /* CA file name in PT.tmpdir, or NULL */
    int port;            /* -1 = default, 0 = OS-assigned, else fixed */
    const char *peer_id; /* one peer to dial, or NULL */
    int peer_port;       /* its port */
    int64_t forward_deadline_ms;
    int64_t max_queue_bytes;
    const char *role; /* "primary" / "replica" (events.local_role) */
    int64_t hello_timeout_ms;
} opts;

static gs_status try_create(int i, const char *id, const opts *o, gs_error *err)
{
    node *n = &T.nodes[i];
    free(n->recs);
    memset(n, 0, sizeof *n);
    snprintf(n->id, sizeof n->id, "%s", id);
    void *cfg = config_defaults();
    char cert[600], keyf[600], ca[600], addr[64];
    set_str(cfg, "host", "127.0.0.1");
    if (o->tls) {
        snprintf(cert, sizeof cert, "%s/%s.pem", PT.tmpdir, o->cert);
        snprintf(keyf, sizeof keyf, "%s/%s.key", PT.tmpdir, o->cert);
        set_str(cfg, "tls_cert", cert);
        set_str(cfg, "tls_key", keyf);
        if (o->ca) {
            snprintf(ca, sizeof ca, "%s/%s", PT.tmpdir, o->ca);
            set_str(cfg, "tls_ca_cert", ca);
        }
    } else {
        set_bool(cfg, "insecure", 1);
    }
    if (o->port >= 0)
        set_int(cfg, "port", o->port);
    peer_cfg pc = {0};
    if (o->peer_id) {
        snprintf(addr, sizeof addr, "127.0.0.1:%d", o->peer_port);
        pc.id = o->peer_id;
        pc.address = addr;
        gs_config_list l = {&pc, 1};
        set_value(cfg, "peers", GS_CFG_LIST, &l, sizeof l);
    }
    if (o->forward_deadline_ms)
        set_int(cfg, "forward_deadline_ms", o->forward_deadline_ms);
    if (o->max_queue_bytes)
        set_int(cfg, "max_queue_bytes", o->max_queue_bytes);
    if (o->hello_timeout_ms)
        set_int(cfg, "hello_timeout_ms", o->hello_timeout_ms);
    set_int(cfg, "reconnect_min_ms", 50);
    set_int(cfg, "reconnect_max_ms", 400);
    memset(err, 0, sizeof *err);
    n->inst = (void *)0x1;
    gs_status st = T.vt->create(&T.host, cfg, id, &n->inst, err);
    free(cfg); /* the core frees the config once create returns */
    if (st != GS_OK) {
        cr_assert_null(n->inst, "a failed create leaves *instance NULL");
        n->id[0] = '\0';
    }
    return st;
}

static void start_node(int i, const char *role)
{
    node *n = &T.nodes[i];
    n->ev.struct_size = sizeof n->ev;
    n->ev.user = n;
    n->ev.on_message = on_message;
    n->ev.on_peer = on_peer;
    n->ev.local_role = role;
    n->ev.protocol_version = "1.0";
    pthread_mutex_lock(&PT.lock);
    n->stopped = 0;
    pthread_mutex_unlock(&PT.lock);
    gs_error err;
    memset(&err, 0, sizeof err);
    gs_status st = T.vt->start(n->inst, &n->ev, &err);
    cr_assert_eq(st, GS_OK, "start %s: %s %s", n->id, err.code, err.message);
}

static void make_node(int i, const char *id, const opts *o)
{
    gs_error err;
    gs_status st = try_create(i, id, o, &err);
    cr_assert_eq(st, GS_OK, "create %s: %s %s", id, err.code, err.message);
    start_node(i, o->role ? o->role : (o->peer_id ? "replica" : "primary"));
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

/* The port node `id` logged it listens on (waits for the line). */
static int port_of(const char *id)
{
    char needle[128];
    snprintf(needle, sizeof needle, "node '%s': gRPC server listening on ", id);
    cr_assert(wait_log(needle), "no listening line for %s", id);
    int port = 0;
    pthread_mutex_lock(&PT.lock);
    for (size_t i = PT.log_count; i-- > 0;) {
        const char *p = strstr(PT.logs[i], needle);
        if (!p)
            continue;
        p += strlen(needle);
        if (sscanf(p, "%*[^:]:%d", &port) != 1)
            port = 0;
        break;
    }
    pthread_mutex_unlock(&PT.lock);
    cr_assert_gt(port, 0, "cannot parse the port of %s", id);
    return port;
}

/* ========================================================================================== */
/* Waiting                                                                                    */

typedef struct peer_state {
    int at, about, state, min_events;
} peer_state;

static int pred_peer(void *arg)
{
    const peer_state *p = arg;
    const node *n = &T.nodes[p->at];
    if (p->state)
        return n->up[p->about] == 1 && n->ups[p->about] >= p->min_events;
    return n->up[p->about] == 0 && n->downs[p->about] >= p->min_events;
}

static int wait_peer_n(int at, int about, int state, int min_events)
{
    peer_state p = {at, about, state, min_events ? min_events : 1};
    return wait_until(pred_peer, &p, WAIT_MS);
}

static int wait_peer(int at, int about, int state)
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

static int wait_msgs(int at, int from, int n)
{
    msg_count m = {at, from, n};
    return wait_until(pred_msgs, &m, WAIT_MS);
}

static int get_int(const int *p)
{
    pthread_mutex_lock(&PT.lock);
    int v = *p;
    pthread_mutex_unlock(&PT.lock);
    return v;
}

static gs_status send_raw(int from, const char *to, int type, uint64_t call_id,
                          const uint8_t *bytes, size_t len, gs_error *err)
{
    memset(err, 0, sizeof *err);
    return T.vt->send(T.nodes[from].inst, to, (gs_repl_msg_type)type, call_id, bytes, len, err);
}

static void send_seq(int from, int to, int type, uint32_t seq, int stream)
{
    uint8_t buf[64];
    size_t n = payload(buf, 40, seq, stream);
    gs_error err;
    gs_status st = send_raw(from, T.nodes[to].id, type, 0, buf, n, &err);
    cr_assert_eq(st, GS_OK, "send %s -> %s: %s %s", T.nodes[from].id, T.nodes[to].id, err.code,
                 err.message);
}

/* The first record of node at with this type and call id, copied out; 0 when none. */
static int find_rec(int at, int type, uint64_t call_id, rec *out)
{
    int found = 0;
    pthread_mutex_lock(&PT.lock);
    const node *n = &T.nodes[at];
    for (size_t i = 0; i < n->nrec && !found; i++)
        if (n->recs[i].type == type && n->recs[i].call_id == call_id) {
            *out = n->recs[i];
            found = 1;
        }
    pthread_mutex_unlock(&PT.lock);
    return found;
}

typedef struct rec_wait {
    int at, type;
    uint64_t call_id;
} rec_wait;

static int pred_rec(void *arg)
{
    const rec_wait *w = arg;
    const node *n = &T.nodes[w->at];
    for (size_t i = 0; i < n->nrec; i++)
        if (n->recs[i].type == w->type && n->recs[i].call_id == w->call_id)
            return 1;
    return 0;
}

static int wait_rec(int at, int type, uint64_t call_id)
{
    rec_wait w = {at, type, call_id};
    return wait_until(pred_rec, &w, WAIT_MS);
}

/* ========================================================================================== */
/* A raw gRPC client (gRPC core, one completion queue per call)                               */

typedef struct raw {
    grpc_channel *ch;
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_metadata_array md, trailing;
    grpc_status_code status;
    grpc_slice details;
    grpc_byte_buffer *recv;
    uint64_t done; /* bit per completed tag */
    int sent_md, got_md, got_status;
} raw;

enum { TAG_STATUS = 1, TAG_SEND = 2, TAG_RECV = 3, TAG_UNARY = 4 };

/* Wait until tag completed (bounded). 1 = completed with success, 0 = failed, -1 = timeout. */
static int raw_wait(raw *r, int tag, uint64_t ms)
{
    uint64_t end = now_ms() + ms;
    while (!(r->done & (UINT64_C(1) << tag))) {
        uint64_t now = now_ms();
        if (now >= end)
            return -1;
        gpr_timespec d = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                      gpr_time_from_millis((int64_t)(end - now), GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(r->cq, d, NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            int t = (int)(intptr_t)ev.tag;
            r->done |= UINT64_C(1) << t;
            if (!ev.success)
                r->done |= UINT64_C(1) << (t + 32);
        }
    }
    int ok = !(r->done & (UINT64_C(1) << (tag + 32)));
    r->done &= ~((UINT64_C(1) << tag) | (UINT64_C(1) << (tag + 32)));
    return ok;
}

static void raw_open(raw *r, int port, const char *method)
{
    memset(r, 0, sizeof *r);
    grpc_init();
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    r->ch = grpc_channel_create(target, creds, NULL);
    grpc_channel_credentials_release(creds);
    r->cq = grpc_completion_queue_create_for_next(NULL);
    r->call = grpc_channel_create_call(
        r->ch, NULL, GRPC_PROPAGATE_DEFAULTS, r->cq, grpc_slice_from_static_string(method), NULL,
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(WAIT_MS, GPR_TIMESPAN)),
        NULL);
    grpc_metadata_array_init(&r->md);
    grpc_metadata_array_init(&r->trailing);
    r->details = grpc_empty_slice();
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &r->trailing;
    op.data.recv_status_on_client.status = &r->status;
    op.data.recv_status_on_client.status_details = &r->details;
    cr_assert_eq(grpc_call_start_batch(r->call, &op, 1, (void *)(intptr_t)TAG_STATUS, NULL),
                 GRPC_CALL_OK);
}

static int raw_send(raw *r, const uint8_t *p, size_t n)
{
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)p, n);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t k = 0;
    if (!r->sent_md)
        ops[k++].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[k].op = GRPC_OP_SEND_MESSAGE;
    ops[k++].data.send_message.send_message = bb;
    r->sent_md = 1;
    cr_assert_eq(grpc_call_start_batch(r->call, ops, k, (void *)(intptr_t)TAG_SEND, NULL),
                 GRPC_CALL_OK);
    int ok = raw_wait(r, TAG_SEND, WAIT_MS);
    grpc_byte_buffer_destroy(bb);
    return ok;
}

/* Receive one message into out (up to cap bytes): its length, or -1 when the stream ended. */
static long raw_recv(raw *r, uint8_t *out, size_t cap)
{
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t k = 0;
    if (!r->got_md) {
        ops[k].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[k++].data.recv_initial_metadata.recv_initial_metadata = &r->md;
    }
    ops[k].op = GRPC_OP_RECV_MESSAGE;
    ops[k++].data.recv_message.recv_message = &r->recv;
    r->got_md = 1;
    cr_assert_eq(grpc_call_start_batch(r->call, ops, k, (void *)(intptr_t)TAG_RECV, NULL),
                 GRPC_CALL_OK);
    int ok = raw_wait(r, TAG_RECV, WAIT_MS);
    cr_assert_neq(ok, -1, "raw_recv timed out");
    if (!r->recv)
        return -1;
    grpc_byte_buffer_reader rd;
    grpc_byte_buffer_reader_init(&rd, r->recv);
    grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    size_t n = GRPC_SLICE_LENGTH(s);
    memcpy(out, GRPC_SLICE_START_PTR(s), n < cap ? n : cap);
    grpc_slice_unref(s);
    grpc_byte_buffer_destroy(r->recv);
    r->recv = NULL;
    return (long)n;
}

/* Wait for the call's status (bounded); returns it, or -1 on timeout. */
static int raw_status(raw *r, uint64_t ms)
{
    if (!r->got_status) {
        if (raw_wait(r, TAG_STATUS, ms) < 0)
            return -1;
        r->got_status = 1;
    }
    return (int)r->status;
}

static void raw_close(raw *r)
{
    grpc_call_cancel(r->call, NULL);
    cr_assert_geq(raw_status(r, WAIT_MS), 0);
    grpc_call_unref(r->call);
    grpc_channel_destroy(r->ch);
    grpc_completion_queue_shutdown(r->cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(r->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
    }
    grpc_completion_queue_destroy(r->cq);
    grpc_metadata_array_destroy(&r->md);
    grpc_metadata_array_destroy(&r->trailing);
    grpc_slice_unref(r->details);
    grpc_shutdown();
}

/* One unary call: request bytes in, *status and the response (length, -1 = none) out. */
static long raw_unary(int port, const char *method, const uint8_t *req, size_t n, uint8_t *out,
                      size_t cap, int *status)
{
    raw r;
    raw_open(&r, port, method);
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)req, n);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_op ops[5];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &r.md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &r.recv;
    cr_assert_eq(grpc_call_start_batch(r.call, ops, 5, (void *)(intptr_t)TAG_UNARY, NULL),
                 GRPC_CALL_OK);
    cr_assert_neq(raw_wait(&r, TAG_UNARY, WAIT_MS), -1, "unary call timed out");
    grpc_byte_buffer_destroy(bb);
    *status = raw_status(&r, WAIT_MS);
    long len = -1;
    if (r.recv) {
        grpc_byte_buffer_reader rd;
        grpc_byte_buffer_reader_init(&rd, r.recv);
        grpc_slice m = grpc_byte_buffer_reader_readall(&rd);
        grpc_byte_buffer_reader_destroy(&rd);
        len = (long)GRPC_SLICE_LENGTH(m);
        memcpy(out, GRPC_SLICE_START_PTR(m), (size_t)len < cap ? (size_t)len : cap);
        grpc_slice_unref(m);
        grpc_byte_buffer_destroy(r.recv);
        r.recv = NULL;
    }
    r.got_status = 1;
    raw_close(&r);
    return len;
}

/* Health/Check for service: the serving status (1, 2), or -(gRPC status) when the call failed. */
static int health(int port, const char *service)
{
    uint8_t req[300], resp[64];
    size_t n = 0, sl = strlen(service);
    if (sl) {
        req[n++] = 0x0a;
        req[n++] = (uint8_t)sl;
        memcpy(req + n, service, sl);
        n += sl;
    }
    int status = -1;
    long len = raw_unary(port, "/grpc.health.v1.Health/Check", req, n, resp, sizeof resp, &status);
    if (status != GRPC_STATUS_OK)
        return -status;
    if (len == 0)
        return 0; /* UNKNOWN (the default value is not encoded) */
    cr_assert_eq(len, 2, "health response of %ld bytes", len);
    cr_assert_eq(resp[0], 0x08);
    return resp[1];
}

/* A ReplicationMessage / SyncMessage (both: field 1) carrying Hello{node_id, role}. */
static size_t hello_bytes(uint8_t *out, const char *id, const char *role)
{
    size_t il = strlen(id), rl = strlen(role);
    size_t inner = 2 + il + 2 + rl;
    size_t n = 0;
    out[n++] = 0x0a;
    out[n++] = (uint8_t)inner;
    out[n++] = 0x0a;
    out[n++] = (uint8_t)il;
    memcpy(out + n, id, il);
    n += il;
    out[n++] = 0x12;
    out[n++] = (uint8_t)rl;
    memcpy(out + n, role, rl);
    n += rl;
    return n;
}

/* Parse the node_id of a Hello message into id; 0 or -1. */
static int hello_id(const uint8_t *p, long len, char *id, size_t cap)
{
    if (len < 4 || p[0] != 0x0a || p[2] != 0x0a || (size_t)p[3] >= cap)
        return -1;
    memcpy(id, p + 4, p[3]);
    id[p[3]] = '\0';
    return 0;
}

/* ========================================================================================== */
/* Certificates                                                                               */

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    cr_assert_eq(rc, 0, "command failed: %s", cmd);
}

/* A CA in PT.tmpdir/<ca>.pem and .key. */
static void make_ca(const char *ca)
{
    sh("cd '%s' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
       "-keyout %s.key -out %s.pem -days 2 -subj /CN=%s >/dev/null 2>&1",
       PT.tmpdir, ca, ca, ca);
}

/* PT.tmpdir/<name>.pem/.key: a certificate with CN cn signed by ca, for localhost/127.0.0.1. */
static void make_cert(const char *name, const char *cn, const char *ca)
{
    sh("cd '%s' && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > %s.ext && "
       "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout %s.key "
       "-out %s.csr -subj /CN=%s >/dev/null 2>&1 && "
       "openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -CAcreateserial -out %s.pem "
       "-days 2 -extfile %s.ext >/dev/null 2>&1",
       PT.tmpdir, name, name, name, cn, name, ca, ca, name, name);
}

/* ========================================================================================== */
/* Fixture                                                                                    */

static void setup(void)
{
    pt_init();
    memset(&T, 0, sizeof T);
    T.desc = pt_load_descriptor(GC_FILE, &T.dl);
    cr_assert_eq(T.desc->kind, GS_KIND_REPL_TRANSPORT);
    T.vt = T.desc->vtable;
    pt_host_init(&T.host, NULL);
    PT.drop_debug_logs = 1;
    cr_assert_eq(pt_make_tmpdir("gs-grpc"), 0);
}

static void teardown(void)
{
    for (int i = 0; i < MAX_NODES; i++) {
        destroy_node(i);
        free(T.nodes[i].recs);
        T.nodes[i].recs = NULL;
    }
    pt_fini();
}

static void assert_no_leak(void)
{
    for (int i = 0; i < MAX_NODES; i++)
        destroy_node(i);
    cr_assert_eq(atomic_load(&PT.live_allocs), 0, "%ld host blocks leaked",
                 atomic_load(&PT.live_allocs));
}

TestSuite(grpc_transport, .init = setup, .fini = teardown, .timeout = 120);

static const opts INSECURE_PRIMARY = {.port = 0};

/* A primary (node 0, "a") and a replica dialling it (node 1, "b"), both up. */
static int pair(const opts *po, const opts *ro_in)
{
    make_node(0, "a", po);
    int port = port_of("a");
    opts ro = *ro_in;
    ro.peer_id = "a";
    ro.peer_port = port;
    make_node(1, "b", &ro);
    cr_assert(wait_peer(1, 0, 1), "b never saw a up");
    cr_assert(wait_peer(0, 1, 1), "a never saw b up");
    return port;
}

/* ========================================================================================== */
/* Tests                                                                                      */

Test(grpc_transport, descriptor_and_keys)
{
    const gs_plugin_descriptor *d = T.desc;
    cr_assert_str_eq(d->name, "grpc");
    cr_assert_eq(d->abi_major, GS_ABI_MAJOR);
    cr_assert_str_eq(d->build_signature, GS_BUILD_SIGNATURE);
    cr_assert(T.vt->create && T.vt->start && T.vt->send && T.vt->stop && T.vt->destroy);
    const char *names[] = {"host",
                           "port",
                           "tls_cert",
                           "tls_key",
                           "tls_ca_cert",
                           "insecure",
                           "forward_deadline_ms",
                           "peers",
                           "reconnect_min_ms",
                           "reconnect_max_ms",
                           "max_queue_bytes",
                           "max_message_bytes",
                           "hello_timeout_ms"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        cr_assert_not_null(key(names[i]));
    cr_assert_str_eq(key("host")->default_value, "0.0.0.0");
    cr_assert_str_eq(key("forward_deadline_ms")->default_value, "30000");
    cr_assert_str_eq(key("insecure")->default_value, "false");
    cr_assert_str_eq(key("reconnect_min_ms")->default_value, "100");
    cr_assert_str_eq(key("reconnect_max_ms")->default_value, "5000");
    cr_assert_str_eq(key("hello_timeout_ms")->default_value, "10000");
}

Test(grpc_transport, bad_config_is_refused)
{
    gs_error err;
    opts o = {.tls = 1, .cert = "missing", .port = 0};
    cr_assert_eq(try_create(0, "a", &o, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "missing.pem"), "%s", err.message);

    /* TLS without a certificate. */
    void *cfg = config_defaults();
    void *inst = NULL;
    memset(&err, 0, sizeof err);
    cr_assert_eq(T.vt->create(&T.host, cfg, "a", &inst, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "tls_cert"), "%s", err.message);
    /* A peer that is this node, duplicate peers, a bad id. */
    set_bool(cfg, "insecure", 1);
    peer_cfg pcs[2] = {{"a", "127.0.0.1:1", NULL}, {"b", "127.0.0.1:2", NULL}};
    gs_config_list l = {pcs, 1};
    set_value(cfg, "peers", GS_CFG_LIST, &l, sizeof l);
    cr_assert_eq(T.vt->create(&T.host, cfg, "a", &inst, &err), GS_ERROR);
    cr_assert(strstr(err.message, "this node itself"), "%s", err.message);
    pcs[0].id = "b";
    l.count = 2;
    set_value(cfg, "peers", GS_CFG_LIST, &l, sizeof l);
    cr_assert_eq(T.vt->create(&T.host, cfg, "a", &inst, &err), GS_ERROR);
    cr_assert(strstr(err.message, "both 'b'"), "%s", err.message);
    pcs[0].id = "has space";
    cr_assert_eq(T.vt->create(&T.host, cfg, "a", &inst, &err), GS_ERROR);
    cr_assert(strstr(err.message, "whitespace"), "%s", err.message);
    free(cfg);
    assert_no_leak();
}

Test(grpc_transport, hello_exchange_and_peer_events)
{
    opts ro = {.port = -1};
    pair(&INSECURE_PRIMARY, &ro);
    cr_assert_eq(get_int(&T.nodes[0].ups[1]), 1);
    cr_assert_eq(get_int(&T.nodes[1].ups[0]), 1);
    /* No message reached either core: the Hellos are the transport's. */
    cr_assert_eq(get_int(&T.nodes[0].msgs[1]), 0);
    cr_assert_eq(get_int(&T.nodes[1].msgs[0]), 0);
    /* The replica runs no server (role replica, no port). */
    cr_assert(!log_contains("node 'b': gRPC server listening"));
    stop_node(1);
    cr_assert(wait_peer(0, 1, 0), "a never saw b leave");
    cr_assert_eq(get_int(&T.nodes[1].after_stop), 0);
    assert_no_leak();
}

Test(grpc_transport, messages_both_ways_in_order)
{
    opts ro = {.port = -1};
    pair(&INSECURE_PRIMARY, &ro);
    const int n = 500;
    for (int i = 0; i < n; i++) {
        send_seq(0, 1, GS_REPL_MSG_REPLICATION, (uint32_t)i, 0);
        send_seq(1, 0, GS_REPL_MSG_REPLICATION, (uint32_t)i, 1);
        if (i < 50) {
            send_seq(0, 1, GS_REPL_MSG_SYNC, (uint32_t)i, 2);
            send_seq(1, 0, GS_REPL_MSG_SYNC, (uint32_t)i, 3);
        }
    }
    cr_assert(wait_msgs(1, 0, n + 50), "b got %d", get_int(&T.nodes[1].msgs[0]));
    cr_assert(wait_msgs(0, 1, n + 50), "a got %d", get_int(&T.nodes[0].msgs[1]));
    cr_assert_eq(get_int(&T.nodes[0].order_errors), 0);
    cr_assert_eq(get_int(&T.nodes[1].order_errors), 0);
    pthread_mutex_lock(&PT.lock);
    int repl = 0, sync = 0;
    for (size_t i = 0; i < T.nodes[1].nrec; i++) {
        const rec *r = &T.nodes[1].recs[i];
        if (r->type == GS_REPL_MSG_REPLICATION)
            repl += r->stream == 0 && r->call_id == 0;
        if (r->type == GS_REPL_MSG_SYNC)
            sync += r->stream == 2;
    }
    pthread_mutex_unlock(&PT.lock);
    cr_assert_eq(repl, n);
    cr_assert_eq(sync, 50);

    /* Bytes arrive exactly as sent, a repeated Hello is dropped, an empty message passes. */
    uint8_t big[70000];
    size_t bl = payload(big, sizeof big - 8, 9999, 1);
    gs_error err;
    cr_assert_eq(send_raw(1, "a", 1, 0, big, bl, &err), GS_OK, "%s", err.message);
    uint8_t h[64];
    size_t hl = hello_bytes(h, "b", "replica");
    cr_assert_eq(send_raw(1, "a", 1, 0, h, hl, &err), GS_OK);
    cr_assert_eq(send_raw(1, "a", 1, 0, NULL, 0, &err), GS_OK);
    cr_assert(wait_msgs(0, 1, n + 50 + 2));
    pthread_mutex_lock(&PT.lock);
    const node *a = &T.nodes[0];
    const rec *last = &a->recs[a->nrec - 1], *prev = &a->recs[a->nrec - 2];
    cr_assert_eq(prev->len, bl);
    cr_assert_eq(prev->hash, fnv(big, bl));
    cr_assert_eq(last->len, 0);
    pthread_mutex_unlock(&PT.lock);
    assert_no_leak();
}

Test(grpc_transport, forward_call_ids_and_deadline)
{
    /* the primary's own deadline comes first, so its expiry (not the caller's cancellation)
     * ends the unanswered call: the order of what follows is fixed */
    opts po = {.port = 0, .forward_deadline_ms = 400};
    opts ro = {.port = -1, .forward_deadline_ms = 1500};
    pair(&po, &ro);
    pthread_mutex_lock(&PT.lock);
    T.nodes[0].echo_forward = 1;
    pthread_mutex_unlock(&PT.lock);
    uint8_t req[] = {0x0a, 0x03, 'r', 'q', '1', 0x1a, 0x01, 'g'}; /* request_id "rq1" */
    gs_error err;
    cr_assert_eq(send_raw(1, "a", GS_REPL_MSG_FORWARD_REQUEST, 77, req, sizeof req, &err), GS_OK,
                 "%s", err.message);
    cr_assert(wait_rec(1, GS_REPL_MSG_FORWARD_RESPONSE, 77), "no answer to call 77");
    rec r;
    cr_assert(find_rec(1, GS_REPL_MSG_FORWARD_RESPONSE, 77, &r));
    cr_assert_eq(r.hash, fnv(req, sizeof req), "the answer's bytes are the primary core's");
    /* The primary's core saw a call id of the transport's own, from b. */
    rec q;
    uint64_t server_call = T.nodes[0].last_fwd_call;
    cr_assert(find_rec(0, GS_REPL_MSG_FORWARD_REQUEST, server_call, &q));
    cr_assert_eq(q.from, 1);
    cr_assert_eq(q.hash, fnv(req, sizeof req));
    cr_assert_eq(get_int(&T.nodes[0].echo_failures), 0);

    /* Unanswered: the replica's core gets a ForwardResponse with the error at the deadline,
     * and the primary's late answer is refused. */
    pthread_mutex_lock(&PT.lock);
    T.nodes[0].echo_forward = 0;
    pthread_mutex_unlock(&PT.lock);
    uint64_t t0 = now_ms();
    cr_assert_eq(send_raw(1, "a", GS_REPL_MSG_FORWARD_REQUEST, 78, req, sizeof req, &err), GS_OK);
    cr_assert(wait_rec(1, GS_REPL_MSG_FORWARD_RESPONSE, 78), "no deadline answer to call 78");
    uint64_t took = now_ms() - t0;
    cr_assert_geq(took, 300, "the deadline came after %llu ms", (unsigned long long)took);
    cr_assert_lt(took, 5000);
    cr_assert(find_rec(1, GS_REPL_MSG_FORWARD_RESPONSE, 78, &r));
    cr_assert(strstr(r.text, "rq1"), "the error answer carries the request id: %s", r.text);
    cr_assert(strstr(r.text, "ERROR: "), "the error answer says why: %s", r.text);
    cr_assert(wait_log("was not answered within forward_deadline_ms"));
    server_call = T.nodes[0].last_fwd_call;
    cr_assert_eq(send_raw(0, "b", GS_REPL_MSG_FORWARD_RESPONSE, server_call, req, sizeof req, &err),
                 GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    /* An answer for a call id that never was. */
    cr_assert_eq(send_raw(0, "b", GS_REPL_MSG_FORWARD_RESPONSE, 123456, req, sizeof req, &err),
                 GS_ERROR);
    /* A forward to a node this one has no client link to. */
    cr_assert_eq(send_raw(0, "b", GS_REPL_MSG_FORWARD_REQUEST, 5, req, sizeof req, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    assert_no_leak();
}

Test(grpc_transport, transport_error_to_unconnected_peers)
{
    gs_error err;
    opts o = {.port = 0};
    cr_assert_eq(try_create(0, "a", &o, &err), GS_OK);
    uint8_t b[16];
    size_t n = payload(b, 8, 1, 0);
    cr_assert_eq(send_raw(0, "b", 1, 0, b, n, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR", "before start");
    start_node(0, "primary");
    cr_assert_eq(send_raw(0, "nobody", 1, 0, b, n, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    cr_assert_eq(send_raw(0, "nobody", 2, 0, b, n, &err), GS_ERROR);
    cr_assert_eq(send_raw(0, "nobody", 9, 0, b, n, &err), GS_ERROR);
    /* A configured peer that is not up yet (nothing listens there). */
    opts ro = {.port = -1, .peer_id = "z", .peer_port = 1};
    cr_assert_eq(try_create(1, "b", &ro, &err), GS_OK);
    start_node(1, "replica");
    cr_assert_eq(send_raw(1, "z", 1, 0, b, n, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    cr_assert_eq(send_raw(1, "z", 3, 1, b, n, &err), GS_ERROR);
    cr_assert(wait_log("no link to z"), "the failing dial is logged");
    stop_node(1);
    cr_assert_eq(send_raw(1, "z", 1, 0, b, n, &err), GS_ERROR, "after stop");
    /* The second start of a started instance fails; a stopped one starts again. */
    node *a = &T.nodes[0];
    memset(&err, 0, sizeof err);
    cr_assert_eq(T.vt->start(a->inst, &a->ev, &err), GS_ERROR);
    start_node(1, "replica");
    assert_no_leak();
}

Test(grpc_transport, first_message_not_hello_ends_the_stream)
{
    make_node(0, "a", &INSECURE_PRIMARY);
    int port = port_of("a");
    raw r;
    raw_open(&r, port, "/sirannon.replication.v1.Replication/Replicate");
    uint8_t b[64];
    size_t n = payload(b, 10, 1, 0);
    raw_send(&r, b, n);
    uint8_t in[256];
    cr_assert_eq(raw_recv(&r, in, sizeof in), -1, "no reply to a stream without a Hello");
    int st = raw_status(&r, WAIT_MS);
    cr_assert_eq(st, GRPC_STATUS_FAILED_PRECONDITION, "status %d", st);
    raw_close(&r);
    /* Same on Sync, and an empty node id is no Hello either. */
    raw_open(&r, port, "/sirannon.replication.v1.Replication/Sync");
    n = hello_bytes(b, "", "replica");
    raw_send(&r, b, n);
    cr_assert_eq(raw_recv(&r, in, sizeof in), -1);
    cr_assert_eq(raw_status(&r, WAIT_MS), GRPC_STATUS_FAILED_PRECONDITION);
    raw_close(&r);
    cr_assert_eq(get_int(&T.nodes[0].msgs[MAX_NODES]), 0, "nothing reached the core");
    cr_assert_eq(get_int(&T.nodes[0].ups[MAX_NODES]), 0);
    cr_assert(log_contains("node 'a': a Replicate stream was ended: the first message is not"));
    cr_assert(log_contains("a Sync stream was ended: the Hello's node_id cannot be used"));
    /* Unknown methods are refused. */
    int status = 0;
    uint8_t out[16];
    raw_unary(port, "/sirannon.replication.v1.Replication/Nope", b, 1, out, sizeof out, &status);
    cr_assert_eq(status, GRPC_STATUS_UNIMPLEMENTED);
    assert_no_leak();
}

Test(grpc_transport, second_replicate_stream_replaces_the_first)
{
    make_node(0, "a", &INSECURE_PRIMARY);
    int port = port_of("a");
    snprintf(T.nodes[2].id, sizeof T.nodes[2].id, "x"); /* name the raw client's id */
    raw r1, r2;
    uint8_t b[128], in[256];
    raw_open(&r1, port, "/sirannon.replication.v1.Replication/Replicate");
    raw_send(&r1, b, hello_bytes(b, "x", "replica"));
    long n = raw_recv(&r1, in, sizeof in);
    char id[64];
    cr_assert_gt(n, 0);
    cr_assert_eq(hello_id(in, n, id, sizeof id), 0);
    cr_assert_str_eq(id, "a", "the server answers with its own Hello");
    cr_assert(wait_peer(0, 2, 1));
    raw_send(&r1, b, payload(b, 20, 0, 0));
    cr_assert(wait_msgs(0, 2, 1));

    raw_open(&r2, port, "/sirannon.replication.v1.Replication/Replicate");
    raw_send(&r2, b, hello_bytes(b, "x", "replica"));
    n = raw_recv(&r2, in, sizeof in);
    cr_assert_gt(n, 0);
    /* The first stream was ended, the core heard x leave and come back. */
    cr_assert_eq(raw_recv(&r1, in, sizeof in), -1);
    cr_assert_eq(raw_status(&r1, WAIT_MS), GRPC_STATUS_ABORTED);
    cr_assert(wait_peer_n(0, 2, 1, 2), "x up again on the new stream");
    cr_assert_eq(get_int(&T.nodes[0].downs[2]), 1);
    raw_send(&r2, b, payload(b, 20, 1, 0));
    cr_assert(wait_msgs(0, 2, 2));
    cr_assert_eq(get_int(&T.nodes[0].order_errors), 0);
    /* The server's sends go to the new stream. */
    gs_error err;
    cr_assert_eq(send_raw(0, "x", 1, 0, b, payload(b, 20, 5, 0), &err), GS_OK);
    n = raw_recv(&r2, in, sizeof in);
    cr_assert_eq(n, (long)payload(b, 20, 5, 0));
    raw_close(&r1);
    raw_close(&r2);
    cr_assert(wait_peer_n(0, 2, 0, 2), "x left when its stream was cancelled");
    assert_no_leak();
}

static void *stop_thread(void *arg)
{
    stop_node((int)(intptr_t)arg);
    return NULL;
}

Test(grpc_transport, health_serving_then_not_serving_while_forwards_drain)
{
    opts po = {.port = 0, .forward_deadline_ms = 20000};
    opts ro = {.port = -1, .forward_deadline_ms = 20000};
    int port = pair(&po, &ro);
    cr_assert_eq(health(port, ""), 1);
    cr_assert_eq(health(port, "sirannon.replication.v1.Replication"), 1);
    cr_assert_eq(health(port, "some.other.Service"), -GRPC_STATUS_NOT_FOUND);

    /* A Forward the primary's core holds: stop() waits for it, health says NOT_SERVING. */
    uint8_t req[] = {0x0a, 0x02, 'f', '1'};
    gs_error err;
    cr_assert_eq(send_raw(1, "a", GS_REPL_MSG_FORWARD_REQUEST, 9, req, sizeof req, &err), GS_OK);
    cr_assert(wait_msgs(0, 1, 1));
    uint64_t call = T.nodes[0].last_fwd_call;
    pthread_t th;
    pthread_create(&th, NULL, stop_thread, (void *)(intptr_t)0);
    int seen = 0;
    for (uint64_t end = now_ms() + WAIT_MS; now_ms() < end && seen != 2;)
        seen = health(port, "");
    cr_assert_eq(seen, 2, "NOT_SERVING while stopping");
    /* New streams are refused while draining. */
    raw r;
    uint8_t b[64], in[64];
    raw_open(&r, port, "/sirannon.replication.v1.Replication/Replicate");
    raw_send(&r, b, hello_bytes(b, "x", "replica"));
    cr_assert_eq(raw_recv(&r, in, sizeof in), -1);
    cr_assert_eq(raw_status(&r, WAIT_MS), GRPC_STATUS_UNAVAILABLE);
    raw_close(&r);
    /* The core answers; stop completes; the replica gets the answer. */
    uint8_t resp[] = {0x0a, 0x02, 'f', '1'};
    cr_assert_eq(send_raw(0, "b", GS_REPL_MSG_FORWARD_RESPONSE, call, resp, sizeof resp, &err),
                 GS_OK, "%s", err.message);
    pthread_join(th, NULL);
    cr_assert(wait_rec(1, GS_REPL_MSG_FORWARD_RESPONSE, 9));
    rec q;
    cr_assert(find_rec(1, GS_REPL_MSG_FORWARD_RESPONSE, 9, &q));
    cr_assert_eq(q.hash, fnv(resp, sizeof resp), "the drained Forward got the real answer");
    cr_assert_eq(get_int(&T.nodes[0].after_stop), 0);
    assert_no_leak();
}

typedef struct pump_arg {
    int from, to, type, stream, count;
    int failures, again;
} pump_arg;

static void *pump_thread(void *arg)
{
    pump_arg *p = arg;
    uint8_t buf[600];
    for (int i = 0; i < p->count; i++) {
        size_t n = payload(buf, 500, (uint32_t)i, p->stream);
        gs_error err;
        memset(&err, 0, sizeof err);
        gs_status st = T.vt->send(T.nodes[p->from].inst, T.nodes[p->to].id,
                                  (gs_repl_msg_type)p->type, 0, buf, n, &err);
        if (st == GS_AGAIN)
            p->again++;
        else if (st != GS_OK)
            p->failures++;
    }
    return NULL;
}

Test(grpc_transport, stop_while_streams_are_busy)
{
    opts ro = {.port = -1};
    pair(&INSECURE_PRIMARY, &ro);
    pump_arg args[4] = {{0, 1, 1, 0, 20000, 0, 0},
                        {1, 0, 1, 1, 20000, 0, 0},
                        {0, 1, 2, 2, 5000, 0, 0},
                        {1, 0, 2, 3, 5000, 0, 0}};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, pump_thread, &args[i]);
    cr_assert(wait_msgs(0, 1, 200), "traffic flows");
    stop_node(0);
    stop_node(1);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(get_int(&T.nodes[0].after_stop), 0, "no callback after stop");
    cr_assert_eq(get_int(&T.nodes[1].after_stop), 0, "no callback after stop");
    cr_assert_eq(get_int(&T.nodes[0].order_errors), 0);
    cr_assert_eq(get_int(&T.nodes[1].order_errors), 0);
    assert_no_leak();
}

Test(grpc_transport, full_queue_gives_again_then_drains_in_order)
{
    opts po = {.port = 0};
    opts ro = {.port = -1, .max_queue_bytes = 256 * 1024};
    pair(&po, &ro);
    gs_error err;
    uint8_t big[300 * 1024];
    cr_assert_eq(send_raw(1, "a", 1, 0, big, sizeof big, &err), GS_ERROR, "over the whole bound");
    /* The primary's core blocks its event thread: gRPC flow control stops the replica's
     * writes and its queue fills. */
    pthread_mutex_lock(&PT.lock);
    T.nodes[0].gate_closed = 1;
    pthread_mutex_unlock(&PT.lock);
    uint8_t buf[4200];
    int sent = 0, again = 0;
    while (sent < 20000 && !again) {
        size_t n = payload(buf, 4096, (uint32_t)sent, 0);
        gs_status st = send_raw(1, "a", 1, 0, buf, n, &err);
        if (st == GS_AGAIN) {
            again = 1;
            cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
        } else {
            cr_assert_eq(st, GS_OK, "%s", err.message);
            sent++;
        }
    }
    cr_assert(again, "GS_AGAIN after %d messages", sent);
    pthread_mutex_lock(&PT.lock);
    T.nodes[0].gate_closed = 0;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
    cr_assert(wait_msgs(0, 1, sent), "a got %d of %d", get_int(&T.nodes[0].msgs[1]), sent);
    cr_assert_eq(get_int(&T.nodes[0].order_errors), 0);
    assert_no_leak();
}

Test(grpc_transport, reconnect_after_the_server_restarts)
{
    opts ro = {.port = -1};
    int port = pair(&INSECURE_PRIMARY, &ro);
    destroy_node(0);
    cr_assert(wait_peer(1, 0, 0), "b saw a leave");
    gs_error err;
    uint8_t b[64];
    cr_assert_eq(send_raw(1, "a", 1, 0, b, payload(b, 10, 0, 0), &err), GS_ERROR);
    /* A new primary on the same port: the replica dials it again by itself. */
    opts po = {.port = port};
    make_node(0, "a", &po);
    cr_assert(wait_peer_n(1, 0, 1, 2), "b reconnected to a");
    cr_assert(wait_peer(0, 1, 1));
    send_seq(1, 0, 1, 0, 0);
    cr_assert(wait_msgs(0, 1, 1));
    assert_no_leak();
}

Test(grpc_transport, mutual_tls_good_wrong_cn_untrusted_ca)
{
    if (system("command -v openssl >/dev/null 2>&1") != 0)
        cr_skip_test("no openssl CLI");
    make_ca("ca");
    make_ca("rogue");
    make_cert("a", "a", "ca");
    make_cert("b", "b", "ca");
    make_cert("c_wrong_cn", "mallory", "ca"); /* right CA, CN is not the node id */
    make_cert("d_rogue", "d", "rogue");       /* right CN, CA the primary does not trust */
    opts po = {.tls = 1, .cert = "a", .ca = "ca.pem", .port = 0};
    make_node(0, "a", &po);
    int port = port_of("a");
    cr_assert(log_contains("TLS, client certificates required"));
    cr_assert_eq(health(port, ""), -GRPC_STATUS_UNAVAILABLE, "plaintext is refused");

    opts ok = {
        .tls = 1, .cert = "b", .ca = "ca.pem", .port = -1, .peer_id = "a", .peer_port = port};
    make_node(1, "b", &ok);
    cr_assert(wait_peer(1, 0, 1) && wait_peer(0, 1, 1), "mutual TLS link");
    send_seq(1, 0, 1, 0, 0);
    send_seq(0, 1, 1, 0, 0);
    cr_assert(wait_msgs(0, 1, 1) && wait_msgs(1, 0, 1));

    opts wrong = {.tls = 1,
                  .cert = "c_wrong_cn",
                  .ca = "ca.pem",
                  .port = -1,
                  .peer_id = "a",
                  .peer_port = port};
    make_node(2, "c", &wrong);
    opts rogue = {
        .tls = 1, .cert = "d_rogue", .ca = "ca.pem", .port = -1, .peer_id = "a", .peer_port = port};
    make_node(3, "d", &rogue);
    cr_assert(wait_log("CN 'mallory' does not match the Hello's node_id 'c'"));
    cr_assert(wait_log("node 'd': no link to a"), "the untrusted client cannot connect");
    /* Neither refused node ever came up, on either side, nor delivered anything. */
    cr_assert_eq(get_int(&T.nodes[0].ups[2]), 0);
    cr_assert_eq(get_int(&T.nodes[0].ups[3]), 0);
    cr_assert_eq(get_int(&T.nodes[2].ups[0]), 0);
    cr_assert_eq(get_int(&T.nodes[3].ups[0]), 0);
    cr_assert_eq(get_int(&T.nodes[0].msgs[2]) + get_int(&T.nodes[0].msgs[3]), 0);
    assert_no_leak();
}

/* A gRPC server that accepts every call and neither answers nor ends it: what the reference
 * implementation's server does to a stream whose client certificate CN is not the Hello's
 * node id (it destroys the stream object without sending a status). */
typedef struct silent {
    grpc_server *srv;
    grpc_completion_queue *cq;
    int port;
    grpc_call *pending;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_call *calls[32];
    int ncalls;
    int replicate_calls;
} silent;

#define SILENT_ACCEPT ((void *)1)
#define SILENT_DOWN ((void *)2)

static void silent_request(silent *s)
{
    s->pending = NULL;
    grpc_call_details_init(&s->details);
    grpc_metadata_array_init(&s->md);
    cr_assert_eq(grpc_server_request_call(s->srv, &s->pending, &s->details, &s->md, s->cq, s->cq,
                                          SILENT_ACCEPT),
                 GRPC_CALL_OK);
}

static void silent_start(silent *s)
{
    memset(s, 0, sizeof *s);
    grpc_init();
    s->cq = grpc_completion_queue_create_for_next(NULL);
    s->srv = grpc_server_create(NULL, NULL);
    grpc_server_register_completion_queue(s->srv, s->cq, NULL);
    grpc_server_credentials *c = grpc_insecure_server_credentials_create();
    s->port = grpc_server_add_http2_port(s->srv, "127.0.0.1:0", c);
    grpc_server_credentials_release(c);
    cr_assert_gt(s->port, 0);
    grpc_server_start(s->srv);
    silent_request(s);
}

/* Accept calls (and do nothing with them) until n Replicate calls arrived; 0 after ms. */
static int silent_serve(silent *s, int n, uint64_t ms)
{
    uint64_t end = now_ms() + ms;
    while (s->replicate_calls < n) {
        uint64_t now = now_ms();
        if (now >= end)
            return 0;
        gpr_timespec d = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                      gpr_time_from_millis((int64_t)(end - now), GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(s->cq, d, NULL);
        if (ev.type != GRPC_OP_COMPLETE || ev.tag != SILENT_ACCEPT)
            continue;
        if (ev.success && s->pending) {
            if (grpc_slice_str_cmp(s->details.method,
                                   "/sirannon.replication.v1.Replication/Replicate") == 0)
                s->replicate_calls++;
            cr_assert_lt(s->ncalls, 32);
            s->calls[s->ncalls++] = s->pending;
        }
        grpc_call_details_destroy(&s->details);
        grpc_metadata_array_destroy(&s->md);
        silent_request(s);
    }
    return 1;
}

static void silent_stop(silent *s)
{
    grpc_server_shutdown_and_notify(s->srv, s->cq, SILENT_DOWN);
    grpc_server_cancel_all_calls(s->srv);
    int down = 0, accept_done = 0;
    while (!down || !accept_done) {
        grpc_event ev = grpc_completion_queue_next(
            s->cq,
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(WAIT_MS, GPR_TIMESPAN)),
            NULL);
        cr_assert_eq(ev.type, GRPC_OP_COMPLETE, "the silent server did not shut down");
        if (ev.tag == SILENT_DOWN) {
            down = 1;
        } else if (ev.tag == SILENT_ACCEPT) {
            if (ev.success && s->pending)
                s->calls[s->ncalls < 32 ? s->ncalls++ : 31] = s->pending;
            grpc_call_details_destroy(&s->details);
            grpc_metadata_array_destroy(&s->md);
            accept_done = 1;
        }
    }
    for (int i = 0; i < s->ncalls; i++)
        grpc_call_unref(s->calls[i]);
    grpc_server_destroy(s->srv);
    grpc_completion_queue_shutdown(s->cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
    }
    grpc_completion_queue_destroy(s->cq);
    grpc_shutdown();
}

/* The last log line holding needle, copied into buf ("" when none). */
static const char *last_log_with(const char *needle, char *buf, size_t cap)
{
    buf[0] = '\0';
    pthread_mutex_lock(&PT.lock);
    for (size_t i = PT.log_count; i-- > 0;)
        if (strstr(PT.logs[i], needle)) {
            snprintf(buf, cap, "%s", PT.logs[i]);
            break;
        }
    pthread_mutex_unlock(&PT.lock);
    return buf;
}

Test(grpc_transport, a_server_that_never_answers_the_hello_is_dropped_and_dialled_again)
{
    silent s;
    silent_start(&s);
    opts ro = {.port = -1, .peer_id = "a", .peer_port = s.port, .hello_timeout_ms = 300};
    make_node(1, "b", &ro);
    cr_assert(silent_serve(&s, 1, WAIT_MS), "b never dialled the silent server");
    /* Without a Hello deadline b waits on the first pair for good: no second dial. */
    cr_assert(silent_serve(&s, 2, WAIT_MS), "b kept waiting on a server that never answers");
    char line[512];
    cr_assert(wait_log("no Hello answered ours within 300 ms"),
              "the dropped link was not logged; "
              "the last link line: %s",
              last_log_with("node 'b'", line, sizeof line));
    cr_assert(log_contains("node 'b': no link to a (127.0.0.1:"));
    cr_assert_eq(get_int(&T.nodes[1].ups[MAX_NODES]), 0, "b took the silent server for a peer");
    stop_node(1);
    destroy_node(1);
    silent_stop(&s);
    assert_no_leak();
}
