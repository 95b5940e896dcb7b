/*
 * transports/memory against a fake host: dlopen gs_transport_memory.so, fill its config struct
 * through its own key table (as the core's config layer does), and run several nodes of one
 * process on named buses. Each node records what its events report: messages (sender, type,
 * call id, a sequence number and a hash of the bytes) and peer up/down events, in arrival
 * order, under PT.lock; every change broadcasts PT.cond.
 *
 * Payloads: bytes 0..3 are a little-endian sequence number, byte 4 the sending stream (a
 * sender thread), the rest filler. Every wait is a condition wait with a deadline (WAIT_MS),
 * never a sleep. Criterion runs each test in its own process, so the fake host is global.
 */
#include "plugin_test_host.h"

#include <gatestream/repl_transport.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MT_FILE "gs_transport_memory.so"
#define MAX_NODES 8
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
} rec;

typedef struct node {
    int index;
    char id[64];
    char bus[64];
    void *inst;
    gs_repl_events ev;
    int started;
    /* Guarded by PT.lock. */
    rec *recs;
    size_t nrec, cap;
    int up[MAX_NODES];    /* last peer state reported about each node */
    int ups[MAX_NODES];   /* up events about each node */
    int downs[MAX_NODES]; /* down events about each node */
    int msgs[MAX_NODES];  /* messages received from each node */
    uint32_t next_seq[MAX_NODES][MAX_STREAMS];
    int order_errors;
    int after_stop;   /* callbacks that arrived after stop() returned */
    int stopped;      /* set once stop() returned */
    int gate_closed;  /* on_message blocks (bounded) while set */
    int in_gate;      /* a callback is blocked in the gate */
    int echo_forward; /* answer FORWARD_REQUEST with FORWARD_RESPONSE (same call id) */
    int echo_failures;
    int stop_self; /* call stop() on itself from on_message (a contract violation) */
    int unknown_from;
} node;

static struct {
    void *dl;
    const gs_plugin_descriptor *desc;
    const gs_repl_transport_vtable *vt;
    gs_host host;
    node nodes[MAX_NODES];
    long deliveries; /* messages delivered to any node (PT.lock) */
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

/* The node called id on the bus of `at` (ids are per bus). */
static int node_index(const node *at, const char *id)
{
    for (int i = 0; i < MAX_NODES; i++)
        if (T.nodes[i].id[0] && strcmp(T.nodes[i].id, id) == 0 &&
            strcmp(T.nodes[i].bus, at->bus) == 0)
            return i;
    return -1;
}

/* PT.lock held. */
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

static void on_message(void *user, const char *from, gs_repl_msg_type type, uint64_t call_id,
                       const uint8_t *bytes, size_t len)
{
    node *n = user;
    rec r = {.from = node_index(n, from),
             .type = (int)type,
             .call_id = call_id,
             .len = len,
             .hash = fnv(bytes, len)};
    if (len >= 5) {
        r.seq = (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16 |
                (uint32_t)bytes[3] << 24;
        r.stream = bytes[4] % MAX_STREAMS;
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
    if (r.from < 0) {
        n->unknown_from++;
    } else {
        n->msgs[r.from]++;
        if (type == GS_REPL_MSG_REPLICATION && len >= 5) {
            if (r.seq != n->next_seq[r.from][r.stream])
                n->order_errors++;
            n->next_seq[r.from][r.stream] = r.seq + 1;
        }
    }
    add_rec(n, &r);
    T.deliveries++;
    int echo = n->echo_forward && type == GS_REPL_MSG_FORWARD_REQUEST;
    int stop_self = n->stop_self;
    n->stop_self = 0;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
    if (stop_self)
        T.vt->stop(n->inst);
    if (echo) {
        /* From the delivery thread, as the core's Forward handler could. */
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
    int i = node_index(n, node_id);
    rec r = {.from = i, .type = connected ? EV_UP : EV_DOWN};
    pthread_mutex_lock(&PT.lock);
    if (i < 0) {
        n->unknown_from++;
    } else {
        n->up[i] = connected;
        if (connected)
            n->ups[i]++;
        else
            n->downs[i]++;
    }
    add_rec(n, &r);
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
}

/* An allocator that fails the n-th allocation from now, and every one after it, while armed. */
static atomic_int fail_armed;
static atomic_long fail_countdown;

static void *countdown_alloc(size_t size)
{
    if (atomic_load(&fail_armed) && atomic_fetch_sub(&fail_countdown, 1) <= 0)
        return NULL;
    return fh_alloc(size);
}

static void fail_after(long n)
{
    atomic_store(&fail_countdown, n);
    atomic_store(&fail_armed, 1);
}

static void fail_never(void)
{
    atomic_store(&fail_armed, 0);
}

/* ========================================================================================== */
/* Config through the plugin's key table                                                      */

static const gs_config_key *key(const char *name)
{
    const gs_plugin_descriptor *d = T.desc;
    for (size_t i = 0; i < d->config_key_count; i++) {
        const gs_config_key *k =
            (const gs_config_key *)((const char *)d->config_keys + i * d->config_key_size);
        if (strcmp(k->name, name) == 0)
            return k;
    }
    cr_assert_fail("the memory transport has no key '%s'", name);
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

static void set_double(void *cfg, const char *name, double v)
{
    set_value(cfg, name, GS_CFG_DOUBLE, &v, sizeof v);
}

static void set_list(void *cfg, const char *name, const char *const *items, size_t count)
{
    gs_config_strings s = {items, count};
    set_value(cfg, name, GS_CFG_STRING_LIST, &s, sizeof s);
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
        else if (k->type == GS_CFG_DOUBLE)
            set_double(cfg, k->name, strtod(k->default_value, NULL));
    }
    return cfg;
}

typedef struct opts {
    const char *bus;
    const char *peers[MAX_NODES]; /* NULL-terminated */
    int64_t max_queue_bytes;      /* 0 = default */
    int64_t seed;
    double drop, duplicate, reorder;
    int64_t delay_min, delay_max;
    int64_t hold_ms; /* 0 = default */
} opts;

static gs_status try_create(int i, const char *id, const opts *o, gs_error *err)
{
    node *n = &T.nodes[i];
    memset(n, 0, sizeof *n);
    n->index = i;
    snprintf(n->id, sizeof n->id, "%s", id);
    snprintf(n->bus, sizeof n->bus, "%s", o && o->bus ? o->bus : "default");
    void *cfg = config_defaults();
    size_t np = 0;
    if (o) {
        if (o->bus)
            set_str(cfg, "bus", o->bus);
        while (np < MAX_NODES && o->peers[np])
            np++;
        set_list(cfg, "peers", o->peers, np);
        if (o->max_queue_bytes)
            set_int(cfg, "max_queue_bytes", o->max_queue_bytes);
        set_int(cfg, "seed", o->seed);
        set_double(cfg, "drop_rate", o->drop);
        set_double(cfg, "duplicate_rate", o->duplicate);
        set_double(cfg, "reorder_rate", o->reorder);
        set_int(cfg, "delay_ms_min", o->delay_min);
        set_int(cfg, "delay_ms_max", o->delay_max);
        if (o->hold_ms)
            set_int(cfg, "reorder_hold_ms", o->hold_ms);
    }
    memset(err, 0, sizeof *err);
    n->inst = (void *)0x1; /* create must reset it */
    gs_status st = T.vt->create(&T.host, cfg, id, &n->inst, err);
    /* The core frees the config as soon as create returns: the plugin must have copied it. */
    free(cfg);
    if (st != GS_OK) {
        cr_assert_null(n->inst, "a failed create leaves *instance NULL");
        n->id[0] = '\0';
    }
    return st;
}

static void create_node(int i, const char *id, const opts *o)
{
    gs_error err;
    gs_status st = try_create(i, id, o, &err);
    cr_assert_eq(st, GS_OK, "create %s: %s %s", id, err.code, err.message);
}

static gs_status try_start(int i, gs_error *err)
{
    node *n = &T.nodes[i];
    n->ev.struct_size = sizeof n->ev;
    n->ev.user = n;
    n->ev.on_message = on_message;
    n->ev.on_peer = on_peer;
    memset(err, 0, sizeof *err);
    pthread_mutex_lock(&PT.lock);
    n->stopped = 0;
    pthread_mutex_unlock(&PT.lock);
    gs_status st = T.vt->start(n->inst, &n->ev, err);
    if (st == GS_OK)
        n->started = 1;
    return st;
}

static void start_node(int i)
{
    gs_error err;
    gs_status st = try_start(i, &err);
    cr_assert_eq(st, GS_OK, "start %s: %s %s", T.nodes[i].id, err.code, err.message);
}

static void stop_node(int i)
{
    node *n = &T.nodes[i];
    T.vt->stop(n->inst);
    n->started = 0;
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
    n->started = 0;
    pthread_mutex_lock(&PT.lock);
    n->stopped = 1;
    pthread_mutex_unlock(&PT.lock);
}

/* ========================================================================================== */
/* Sending and waiting                                                                        */

static void payload(uint8_t *buf, size_t len, uint32_t seq, int stream)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(i * 31 + seq);
    if (len >= 5) {
        buf[0] = (uint8_t)seq;
        buf[1] = (uint8_t)(seq >> 8);
        buf[2] = (uint8_t)(seq >> 16);
        buf[3] = (uint8_t)(seq >> 24);
        buf[4] = (uint8_t)stream;
    }
}

static gs_status send_raw(int from, const char *to, int type, uint64_t call_id,
                          const uint8_t *bytes, size_t len, gs_error *err)
{
    memset(err, 0, sizeof *err);
    return T.vt->send(T.nodes[from].inst, to, (gs_repl_msg_type)type, call_id, bytes, len, err);
}

static void send_ok(int from, int to, int type, uint32_t seq)
{
    uint8_t buf[16];
    payload(buf, sizeof buf, seq, 0);
    gs_error err;
    gs_status st = send_raw(from, T.nodes[to].id, type, seq, buf, sizeof buf, &err);
    cr_assert_eq(st, GS_OK, "send %s -> %s: %s %s", T.nodes[from].id, T.nodes[to].id, err.code,
                 err.message);
}

static gs_status control(int from, const char *text, gs_error *err)
{
    return send_raw(from, "$control", 0, 0, (const uint8_t *)text, strlen(text), err);
}

static void control_ok(int from, const char *text)
{
    gs_error err;
    gs_status st = control(from, text, &err);
    cr_assert_eq(st, GS_OK, "control '%s': %s %s", text, err.code, err.message);
}

typedef struct peer_state {
    int at, about, state;
} peer_state;

static int pred_peer(void *arg)
{
    const peer_state *p = arg;
    const node *n = &T.nodes[p->at];
    return p->state ? n->up[p->about] == 1 : n->up[p->about] == 0 && n->downs[p->about] > 0;
}

/* Wait (bounded) until node `at` last heard that `about` is up (1) or down (0). */
static int wait_peer(int at, int about, int state)
{
    peer_state p = {at, about, state};
    return wait_until(pred_peer, &p, WAIT_MS);
}

typedef struct msg_count {
    int at, from, n;
} msg_count;

static int pred_msgs(void *arg)
{
    const msg_count *m = arg;
    return T.nodes[m->at].msgs[m->from] >= m->n;
}

/* Wait (bounded) until node `at` received at least n messages from `from`. */
static int wait_msgs(int at, int from, int n)
{
    msg_count m = {at, from, n};
    return wait_until(pred_msgs, &m, WAIT_MS);
}

typedef struct rec_match {
    int at, from, type;
    uint32_t seq;
} rec_match;

static int pred_rec(void *arg)
{
    const rec_match *m = arg;
    const node *n = &T.nodes[m->at];
    for (size_t i = 0; i < n->nrec; i++)
        if (n->recs[i].from == m->from && n->recs[i].type == m->type && n->recs[i].seq == m->seq)
            return 1;
    return 0;
}

/* Wait (bounded) until node `at` received a message of `type` with `seq` from `from`. */
static int wait_rec(int at, int from, int type, uint32_t seq)
{
    rec_match m = {at, from, type, seq};
    return wait_until(pred_rec, &m, WAIT_MS);
}

static int get_int(const int *p)
{
    pthread_mutex_lock(&PT.lock);
    int v = *p;
    pthread_mutex_unlock(&PT.lock);
    return v;
}

/* ========================================================================================== */
/* Fixture                                                                                    */

static void setup(void)
{
    pt_init();
    memset(&T, 0, sizeof T);
    T.desc = pt_load_descriptor(MT_FILE, &T.dl);
    cr_assert_eq(T.desc->kind, GS_KIND_REPL_TRANSPORT);
    T.vt = T.desc->vtable;
    pt_host_init(&T.host, NULL);
    T.host.alloc = countdown_alloc;
    fail_never();
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

/* Every instance destroyed: nothing the plugin allocated through the host is left. */
static void assert_no_leak(void)
{
    for (int i = 0; i < MAX_NODES; i++)
        destroy_node(i);
    cr_assert_eq(atomic_load(&PT.live_allocs), 0, "%ld host blocks leaked",
                 atomic_load(&PT.live_allocs));
}

TestSuite(memory_transport, .init = setup, .fini = teardown, .timeout = 240);

/* ========================================================================================== */
/* Tests                                                                                      */

Test(memory_transport, descriptor_and_keys)
{
    const gs_plugin_descriptor *d = T.desc;
    cr_assert_str_eq(d->name, "memory");
    cr_assert_eq(d->abi_major, GS_ABI_MAJOR);
    cr_assert_str_eq(d->build_signature, GS_BUILD_SIGNATURE);
    cr_assert_geq(T.vt->struct_size, sizeof(gs_repl_transport_vtable));
    cr_assert(T.vt->create && T.vt->start && T.vt->send && T.vt->stop && T.vt->destroy);
    cr_assert_eq(d->config_key_size, sizeof(gs_config_key));
    const char *names[] = {"bus",          "peers",          "max_queue_bytes", "seed",
                           "drop_rate",    "duplicate_rate", "reorder_rate",    "delay_ms_min",
                           "delay_ms_max", "reorder_hold_ms"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const gs_config_key *k = key(names[i]);
        cr_assert_lt(k->offset, d->config_struct_size);
        cr_assert_not_null(k->help);
    }
    cr_assert_str_eq(key("bus")->default_value, "default");
    cr_assert_str_eq(key("max_queue_bytes")->default_value, "67108864");
    cr_assert_eq(key("drop_rate")->min, 0);
    cr_assert_eq(key("drop_rate")->max, 1);

    /* A host that passes no config struct gets the defaults. */
    gs_error err;
    memset(&err, 0, sizeof err);
    void *inst = NULL;
    cr_assert_eq(T.vt->create(&T.host, NULL, "solo", &inst, &err), GS_OK, "%s", err.message);
    T.vt->destroy(inst);
    cr_assert_eq(atomic_load(&PT.live_allocs), 0);
}

Test(memory_transport, three_nodes_peer_events)
{
    /* A lists B, C lists A and B, B lists nobody: every pair is linked by one side. D is on
     * another bus and lists everyone; E is on this bus but nobody lists it. */
    create_node(0, "A", &(opts){.bus = "tri", .peers = {"B"}});
    create_node(1, "B", &(opts){.bus = "tri"});
    create_node(2, "C", &(opts){.bus = "tri", .peers = {"A", "B"}});
    create_node(3, "D", &(opts){.bus = "elsewhere", .peers = {"*"}});
    create_node(4, "E", &(opts){.bus = "tri"});
    start_node(3);
    start_node(4);
    start_node(0);
    start_node(1);
    cr_assert(wait_peer(0, 1, 1), "A sees B up");
    cr_assert(wait_peer(1, 0, 1), "B sees A up");
    start_node(2);
    cr_assert(wait_peer(2, 0, 1));
    cr_assert(wait_peer(2, 1, 1));
    cr_assert(wait_peer(0, 2, 1));
    cr_assert(wait_peer(1, 2, 1));

    /* Messages flow both ways on every link, including the side that listed nobody. */
    send_ok(1, 0, GS_REPL_MSG_REPLICATION, 0);
    send_ok(1, 2, GS_REPL_MSG_REPLICATION, 0);
    send_ok(0, 2, GS_REPL_MSG_REPLICATION, 0);
    cr_assert(wait_msgs(0, 1, 1));
    cr_assert(wait_msgs(2, 1, 1));
    cr_assert(wait_msgs(2, 0, 1));

    /* B stops: A and C see it leave; B hears nothing more. */
    stop_node(1);
    cr_assert(wait_peer(0, 1, 0));
    cr_assert(wait_peer(2, 1, 0));
    gs_error err;
    cr_assert_eq(send_raw(0, "B", 1, 0, (const uint8_t *)"x", 1, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");

    /* And comes back. */
    start_node(1);
    cr_assert(wait_peer(0, 1, 1));
    cr_assert(wait_peer(2, 1, 1));
    cr_assert(wait_peer(1, 0, 1));
    cr_assert(wait_peer(1, 2, 1));
    send_ok(0, 1, GS_REPL_MSG_REPLICATION, 0);
    cr_assert(wait_msgs(1, 0, 1));

    pthread_mutex_lock(&PT.lock);
    cr_assert_eq(T.nodes[0].ups[1], 2);
    cr_assert_eq(T.nodes[0].downs[1], 1);
    cr_assert_eq(T.nodes[1].ups[0], 2, "B saw A up before its stop and after its restart");
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(T.nodes[3].ups[i], 0, "D on another bus links to nobody");
        cr_assert_eq(T.nodes[4].ups[i], 0, "E is listed by nobody");
        cr_assert_eq(T.nodes[i].ups[3], 0);
        cr_assert_eq(T.nodes[i].ups[4], 0);
        cr_assert_eq(T.nodes[i].unknown_from, 0);
    }
    pthread_mutex_unlock(&PT.lock);
    cr_assert_eq(send_raw(0, "E", 1, 0, (const uint8_t *)"x", 1, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    cr_assert(strstr(err.message, "lists"), "%s", err.message);
    cr_assert_eq(send_raw(3, "A", 1, 0, (const uint8_t *)"x", 1, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    cr_assert_eq(get_int(&T.nodes[1].after_stop), 0);
    assert_no_leak();
}

/* ---- 10,000 messages per pair, from several threads ---- */

#define ORDER_PER_PAIR 10000
#define ORDER_STREAMS 2

typedef struct sender_arg {
    int from, to, stream;
    int failures;
    int again;
} sender_arg;

static int pred_progress(void *arg)
{
    return T.deliveries > *(const long *)arg;
}

static void *sender_main(void *arg)
{
    sender_arg *a = arg;
    uint8_t buf[24];
    uint64_t deadline = now_ms() + 60000;
    for (uint32_t seq = 0; seq < ORDER_PER_PAIR / ORDER_STREAMS; seq++) {
        payload(buf, sizeof buf, seq, a->stream);
        for (;;) {
            gs_error err;
            memset(&err, 0, sizeof err);
            gs_status st = T.vt->send(T.nodes[a->from].inst, T.nodes[a->to].id,
                                      GS_REPL_MSG_REPLICATION, seq, buf, sizeof buf, &err);
            if (st == GS_OK)
                break;
            if (st != GS_AGAIN || now_ms() > deadline) {
                a->failures++;
                return NULL;
            }
            a->again++;
            /* The receiver's queue is full: wait (bounded) until something is delivered. */
            pthread_mutex_lock(&PT.lock);
            long seen = T.deliveries;
            pthread_mutex_unlock(&PT.lock);
            (void)wait_until(pred_progress, &seen, 100);
        }
    }
    return NULL;
}

Test(memory_transport, in_order_per_pair_from_many_threads)
{
    const char *ids[] = {"A", "B", "C"};
    for (int i = 0; i < 3; i++)
        create_node(i, ids[i], &(opts){.bus = "order", .peers = {"*"}});
    for (int i = 0; i < 3; i++)
        start_node(i);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            if (i != j)
                cr_assert(wait_peer(i, j, 1));

    sender_arg args[3 * 2 * ORDER_STREAMS];
    pthread_t threads[3 * 2 * ORDER_STREAMS];
    int n = 0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            for (int s = 0; i != j && s < ORDER_STREAMS; s++) {
                args[n] = (sender_arg){.from = i, .to = j, .stream = s};
                cr_assert_eq(pthread_create(&threads[n], NULL, sender_main, &args[n]), 0);
                n++;
            }
    for (int t = 0; t < n; t++) {
        pthread_join(threads[t], NULL);
        cr_assert_eq(args[t].failures, 0, "sender %d -> %d failed", args[t].from, args[t].to);
    }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            if (i != j)
                cr_assert(wait_msgs(i, j, ORDER_PER_PAIR), "%s got %d of %d from %s", ids[i],
                          get_int(&T.nodes[i].msgs[j]), ORDER_PER_PAIR, ids[j]);
    pthread_mutex_lock(&PT.lock);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(T.nodes[i].order_errors, 0, "%s saw messages out of order", ids[i]);
        for (int j = 0; j < 3; j++)
            if (i != j) {
                cr_assert_eq(T.nodes[i].msgs[j], ORDER_PER_PAIR, "no duplicates");
                for (int s = 0; s < ORDER_STREAMS; s++)
                    cr_assert_eq(T.nodes[i].next_seq[j][s], ORDER_PER_PAIR / ORDER_STREAMS);
            }
    }
    pthread_mutex_unlock(&PT.lock);
    assert_no_leak();
}

Test(memory_transport, send_errors)
{
    create_node(0, "A", &(opts){.bus = "err", .peers = {"B"}});
    create_node(1, "B", &(opts){.bus = "err"});
    gs_error err;
    const uint8_t b[1] = {7};

    /* Not started yet. */
    cr_assert_eq(send_raw(0, "B", 1, 0, b, 1, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    cr_assert(strstr(err.message, "stopped"), "%s", err.message);

    start_node(0);
    start_node(1);
    cr_assert(wait_peer(0, 1, 1));

    cr_assert_eq(send_raw(0, "nobody", 1, 0, b, 1, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    cr_assert(strstr(err.message, "nobody"), "%s", err.message);
    cr_assert_eq(send_raw(0, "A", 1, 0, b, 1, &err), GS_ERROR, "not to itself");
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    cr_assert_eq(send_raw(0, "B", 0, 0, b, 1, &err), GS_ERROR, "type 0 is for $control");
    cr_assert_eq(send_raw(0, "B", 5, 0, b, 1, &err), GS_ERROR, "unknown type");
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    cr_assert_eq(send_raw(0, "B", 1, 0, NULL, 3, &err), GS_ERROR, "bytes missing");
    cr_assert_eq(send_raw(0, NULL, 1, 0, b, 1, &err), GS_ERROR);
    cr_assert_eq(send_raw(0, "$control", 1, 0, (const uint8_t *)"heal", 4, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");

    /* A zero-length message is a message. */
    cr_assert_eq(send_raw(0, "B", 2, 9, NULL, 0, &err), GS_OK, "%s", err.message);
    cr_assert(wait_msgs(1, 0, 1));

    /* After stop, on both sides. */
    stop_node(1);
    cr_assert(wait_peer(0, 1, 0));
    cr_assert_eq(send_raw(0, "B", 1, 0, b, 1, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    cr_assert_eq(send_raw(1, "A", 1, 0, b, 1, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    cr_assert(strstr(err.message, "stopped"), "%s", err.message);
    stop_node(0);
    cr_assert_eq(send_raw(0, "B", 1, 0, b, 1, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    /* stop twice is harmless */
    stop_node(0);

    /* start twice is refused */
    start_node(0);
    cr_assert_eq(try_start(0, &err), GS_ERROR);
    assert_no_leak();
}

Test(memory_transport, call_ids_and_bytes_carried)
{
    create_node(0, "A", &(opts){.bus = "fwd", .peers = {"B"}});
    create_node(1, "B", &(opts){.bus = "fwd"});
    T.nodes[1].echo_forward = 1;
    start_node(0);
    start_node(1);
    cr_assert(wait_peer(0, 1, 1));

    /* 100 Forward requests with distinct call ids and binary bodies (NULs included); B answers
     * each from its delivery thread with the same call id and body. */
    uint64_t hashes[100];
    for (int i = 0; i < 100; i++) {
        uint8_t body[300];
        size_t len = (size_t)(i * 3);
        for (size_t k = 0; k < len; k++)
            body[k] = (uint8_t)((k * 7 + (size_t)i) & (k % 3 ? 0xff : 0x00));
        hashes[i] = fnv(body, len);
        gs_error err;
        uint64_t call_id = UINT64_C(0x1000000000) + (uint64_t)i * 977;
        cr_assert_eq(send_raw(0, "B", GS_REPL_MSG_FORWARD_REQUEST, call_id, body, len, &err), GS_OK,
                     "%s", err.message);
    }
    /* One large replication message. */
    size_t big_len = 1 << 20;
    uint8_t *big = malloc(big_len);
    cr_assert_not_null(big);
    payload(big, big_len, 4242, 1);
    uint64_t big_hash = fnv(big, big_len);
    gs_error err;
    cr_assert_eq(send_raw(0, "B", GS_REPL_MSG_REPLICATION, 0, big, big_len, &err), GS_OK);
    free(big);

    cr_assert(wait_msgs(0, 1, 100), "A got %d answers", get_int(&T.nodes[0].msgs[1]));
    cr_assert(wait_msgs(1, 0, 101));
    pthread_mutex_lock(&PT.lock);
    node *a = &T.nodes[0];
    node *b = &T.nodes[1];
    int answers = 0;
    for (size_t r = 0; r < a->nrec; r++) {
        if (a->recs[r].type != GS_REPL_MSG_FORWARD_RESPONSE)
            continue;
        int i = answers++;
        cr_assert_eq(a->recs[r].call_id, UINT64_C(0x1000000000) + (uint64_t)i * 977);
        cr_assert_eq(a->recs[r].len, (size_t)(i * 3));
        cr_assert_eq(a->recs[r].hash, hashes[i]);
    }
    cr_assert_eq(answers, 100);
    int reqs = 0, bigs = 0;
    for (size_t r = 0; r < b->nrec; r++) {
        if (b->recs[r].type == GS_REPL_MSG_FORWARD_REQUEST) {
            cr_assert_eq(b->recs[r].hash, hashes[reqs]);
            reqs++;
        } else if (b->recs[r].type == GS_REPL_MSG_REPLICATION) {
            cr_assert_eq(b->recs[r].len, big_len);
            cr_assert_eq(b->recs[r].hash, big_hash);
            cr_assert_eq(b->recs[r].call_id, 0);
            bigs++;
        }
    }
    cr_assert_eq(reqs, 100);
    cr_assert_eq(bigs, 1);
    cr_assert_eq(b->echo_failures, 0);
    pthread_mutex_unlock(&PT.lock);
    assert_no_leak();
}

Test(memory_transport, partition_and_heal)
{
    const char *ids[] = {"A", "B", "C"};
    for (int i = 0; i < 3; i++)
        create_node(i, ids[i], &(opts){.bus = "part", .peers = {"*"}});
    for (int i = 0; i < 3; i++)
        start_node(i);
    cr_assert(wait_peer(0, 1, 1) && wait_peer(1, 0, 1) && wait_peer(0, 2, 1));

    /* Messages in flight when the partition comes are lost: A's are held 5 s on the way. */
    control_ok(2, "delay 5000 5000 A");
    for (uint32_t s = 0; s < 20; s++)
        send_ok(0, 1, GS_REPL_MSG_REPLICATION, s);
    control_ok(2, "partition A B");
    uint64_t t0 = now_ms();
    cr_assert(wait_peer(0, 1, 0), "A sees B leave");
    cr_assert(wait_peer(1, 0, 0), "B sees A leave");
    cr_assert_lt(now_ms() - t0, 4000, "the down event does not wait out the lost messages' delay");
    gs_error err;
    cr_assert_eq(send_raw(0, "B", 1, 0, (const uint8_t *)"x", 1, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    cr_assert(strstr(err.message, "partitioned"), "%s", err.message);
    cr_assert_eq(send_raw(1, "A", 3, 1, (const uint8_t *)"x", 1, &err), GS_ERROR,
                 "a partition cuts Forward too");
    /* C still reaches both. */
    control_ok(2, "delay 0 0 A");
    send_ok(0, 2, GS_REPL_MSG_REPLICATION, 0);
    send_ok(1, 2, GS_REPL_MSG_REPLICATION, 0);
    cr_assert(wait_msgs(2, 0, 1) && wait_msgs(2, 1, 1));
    /* Partitioning again is a no-op; healing another pair changes nothing. */
    control_ok(0, "partition B A");
    control_ok(0, "heal A C");

    control_ok(1, "heal A B");
    cr_assert(wait_peer(0, 1, 1), "A sees B again");
    cr_assert(wait_peer(1, 0, 1), "B sees A again");
    send_ok(0, 1, GS_REPL_MSG_REPLICATION, 0);
    cr_assert(wait_rec(1, 0, GS_REPL_MSG_REPLICATION, 0));
    pthread_mutex_lock(&PT.lock);
    cr_assert_eq(T.nodes[1].msgs[0], 1, "the 20 in flight were dropped, only the new one came");
    cr_assert_eq(T.nodes[0].downs[1], 1);
    cr_assert_eq(T.nodes[0].ups[1], 2);
    cr_assert_eq(T.nodes[2].downs[0] + T.nodes[2].downs[1], 0, "C never lost anyone");
    pthread_mutex_unlock(&PT.lock);

    /* A partition outlives a restart, and "clear" heals everything. */
    control_ok(2, "partition A C");
    cr_assert(wait_peer(0, 2, 0));
    stop_node(0);
    start_node(0);
    cr_assert(wait_peer(0, 1, 1));
    cr_assert(wait_peer(1, 0, 1));
    cr_assert_eq(send_raw(0, "C", 1, 0, (const uint8_t *)"x", 1, &err), GS_ERROR);
    control_ok(1, "clear");
    cr_assert(wait_peer(0, 2, 1));
    cr_assert(wait_peer(2, 0, 1));

    /* Bad commands say what is wrong. */
    const char *bad[] = {
        "partition A", "partition A A", "heal A",     "drop 2", "drop x", "delay 9 3",
        "hold 0",      "seed abc",      "bogus",      "",       "   ",    "drop 0.1 nosuchnode",
        "clear A B",   "delay -1 4",    "reorder 1.5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(control(0, bad[i], &err), GS_ERROR, "'%s' must be refused", bad[i]);
        cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
        cr_assert_neq(err.message[0], '\0');
    }
    assert_no_leak();
}

/* ---- seeded faults ---- */

#define FAULT_MSGS 2000

typedef struct run_result {
    uint32_t *seqs; /* replication seqs in delivery order */
    size_t n;
    int forwards;
} run_result;

/* One run on a fresh bus: A sends FAULT_MSGS replication messages to B, then two Forward
 * markers (never faulted; the first releases a held message, the second comes after it).
 * via_control = 1: A starts clean and the faults come from control commands instead. */
static run_result fault_run(int run, int64_t seed, int via_control)
{
    char bus[32];
    snprintf(bus, sizeof bus, "faults-%d", run);
    opts a = {.bus = bus, .peers = {"B"}, .hold_ms = 60000};
    if (!via_control) {
        a.seed = seed;
        a.drop = 0.2;
        a.duplicate = 0.2;
        a.reorder = 0.2;
    }
    create_node(0, "A", &a);
    create_node(1, "B", &(opts){.bus = bus});
    start_node(0);
    start_node(1);
    cr_assert(wait_peer(0, 1, 1));
    if (via_control) {
        char cmd[64];
        snprintf(cmd, sizeof cmd, "seed %lld A", (long long)seed);
        control_ok(1, cmd);
        control_ok(1, "drop 0.2");
        control_ok(1, "duplicate 0.2 A");
        control_ok(1, "reorder 0.2");
    }
    for (uint32_t s = 0; s < FAULT_MSGS; s++)
        send_ok(0, 1, GS_REPL_MSG_REPLICATION, s);
    send_ok(0, 1, GS_REPL_MSG_FORWARD_REQUEST, 900000);
    send_ok(0, 1, GS_REPL_MSG_FORWARD_REQUEST, 900001);
    cr_assert(wait_rec(1, 0, GS_REPL_MSG_FORWARD_REQUEST, 900001));

    run_result r = {0};
    pthread_mutex_lock(&PT.lock);
    node *b = &T.nodes[1];
    r.seqs = malloc((b->nrec + 1) * sizeof *r.seqs);
    cr_assert_not_null(r.seqs);
    for (size_t i = 0; i < b->nrec; i++) {
        if (b->recs[i].type == GS_REPL_MSG_REPLICATION)
            r.seqs[r.n++] = b->recs[i].seq;
        else if (b->recs[i].type == GS_REPL_MSG_FORWARD_REQUEST)
            r.forwards++;
    }
    pthread_mutex_unlock(&PT.lock);
    destroy_node(0);
    destroy_node(1);
    free(T.nodes[0].recs);
    free(T.nodes[1].recs);
    memset(&T.nodes[0], 0, sizeof T.nodes[0]);
    memset(&T.nodes[1], 0, sizeof T.nodes[1]);
    return r;
}

static int same_run(const run_result *a, const run_result *b)
{
    return a->n == b->n && memcmp(a->seqs, b->seqs, a->n * sizeof *a->seqs) == 0;
}

Test(memory_transport, seeded_faults_are_reproducible)
{
    run_result r1 = fault_run(1, 42, 0);
    run_result r2 = fault_run(2, 42, 0);
    run_result r3 = fault_run(3, 42, 1);
    run_result r4 = fault_run(4, 43, 0);

    cr_assert(same_run(&r1, &r2), "same seed, same delivered sequence");
    cr_assert(same_run(&r1, &r3), "control commands give the same faults as config");
    cr_assert_not(same_run(&r1, &r4), "another seed, another sequence");
    cr_assert_eq(r1.forwards, 2, "Forward messages are never faulted");

    /* The faults happened, at about their rates. */
    static int seen[FAULT_MSGS];
    size_t duplicates = 0, descents = 0;
    for (size_t i = 0; i < r1.n; i++) {
        cr_assert_lt(r1.seqs[i], FAULT_MSGS);
        if (seen[r1.seqs[i]]++)
            duplicates++;
        if (i && r1.seqs[i] < r1.seqs[i - 1])
            descents++;
    }
    size_t distinct = 0;
    for (int s = 0; s < FAULT_MSGS; s++)
        distinct += seen[s] > 0;
    double lost = 1.0 - (double)distinct / FAULT_MSGS;
    cr_assert(lost > 0.12 && lost < 0.28, "lost %.3f of the messages, expected about 0.2", lost);
    cr_assert_gt(duplicates, FAULT_MSGS / 10, "duplicates: %zu", duplicates);
    cr_assert_gt(descents, FAULT_MSGS / 20, "reorderings: %zu", descents);
    /* Reordering swaps neighbours only: nothing arrives much later than its place. */
    for (size_t i = 1; i < r1.n; i++)
        if (r1.seqs[i] < r1.seqs[i - 1])
            cr_assert_lt(r1.seqs[i - 1] - r1.seqs[i], 20u, "a swap, not a shuffle");
    free(r1.seqs);
    free(r2.seqs);
    free(r3.seqs);
    free(r4.seqs);
    cr_assert_eq(atomic_load(&PT.live_allocs), 0);
}

Test(memory_transport, forward_is_never_faulted_and_delay_keeps_order)
{
    create_node(0, "A",
                &(opts){.bus = "reliable",
                        .peers = {"B"},
                        .seed = 7,
                        .drop = 1.0,
                        .duplicate = 1.0,
                        .reorder = 1.0,
                        .delay_min = 0,
                        .delay_max = 20});
    create_node(1, "B", &(opts){.bus = "reliable"});
    start_node(0);
    start_node(1);
    cr_assert(wait_peer(0, 1, 1));
    for (uint32_t s = 0; s < 300; s++)
        send_ok(0, 1, s % 2 ? GS_REPL_MSG_FORWARD_RESPONSE : GS_REPL_MSG_FORWARD_REQUEST, s);
    /* drop 1.0: none of these arrives. */
    for (uint32_t s = 0; s < 50; s++)
        send_ok(0, 1, GS_REPL_MSG_SYNC, s);
    send_ok(0, 1, GS_REPL_MSG_FORWARD_REQUEST, 1000);
    cr_assert(wait_rec(1, 0, GS_REPL_MSG_FORWARD_REQUEST, 1000));
    pthread_mutex_lock(&PT.lock);
    node *b = &T.nodes[1];
    uint32_t expect = 0;
    for (size_t i = 0; i < b->nrec; i++) {
        if (b->recs[i].type == EV_UP)
            continue;
        cr_assert_neq(b->recs[i].type, GS_REPL_MSG_SYNC, "drop 1.0 drops every sync message");
        if (b->recs[i].seq == 1000)
            break;
        cr_assert_eq(b->recs[i].seq, expect, "delayed Forward messages stay in order");
        expect++;
    }
    cr_assert_eq(expect, 300);
    pthread_mutex_unlock(&PT.lock);
    assert_no_leak();
}

/* ---- the queue bound ---- */

static int pred_in_gate(void *arg)
{
    return ((node *)arg)->in_gate;
}

Test(memory_transport, queue_bound_gives_again)
{
    create_node(0, "A", &(opts){.bus = "bound", .peers = {"B"}});
    create_node(1, "B", &(opts){.bus = "bound", .max_queue_bytes = 65536});
    start_node(0);
    start_node(1);
    cr_assert(wait_peer(0, 1, 1));
    cr_assert(wait_peer(1, 0, 1));

    /* B's core is stuck in its first message; the sender is never blocked. */
    pthread_mutex_lock(&PT.lock);
    T.nodes[1].gate_closed = 1;
    pthread_mutex_unlock(&PT.lock);
    static uint8_t kib[1024];
    payload(kib, sizeof kib, 0, 0);
    gs_error err;
    cr_assert_eq(send_raw(0, "B", 1, 0, kib, sizeof kib, &err), GS_OK);
    cr_assert(wait_until(pred_in_gate, &T.nodes[1], WAIT_MS));

    int accepted = 1;
    gs_status st = GS_OK;
    uint64_t t0 = now_ms();
    for (uint32_t s = 1; s < 200; s++) {
        payload(kib, sizeof kib, s, 0);
        st = send_raw(0, "B", 1, 0, kib, sizeof kib, &err);
        if (st != GS_OK)
            break;
        accepted++;
    }
    cr_assert_eq(st, GS_AGAIN, "past the bound send answers GS_AGAIN, got %d", st);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    cr_assert(strstr(err.message, "full"), "%s", err.message);
    cr_assert_eq(accepted, 1 + 64, "64 KiB queued behind the one being delivered");
    cr_assert_lt(now_ms() - t0, 2000, "send never waits for the receiver");
    /* A message that can never fit is an error, not a retry. */
    static uint8_t huge[70000];
    cr_assert_eq(send_raw(0, "B", 1, 0, huge, sizeof huge, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    /* Forward messages count against the same bound. */
    cr_assert_eq(send_raw(0, "B", 3, 1, kib, sizeof kib, &err), GS_AGAIN);

    pthread_mutex_lock(&PT.lock);
    T.nodes[1].gate_closed = 0;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
    cr_assert(wait_msgs(1, 0, accepted));
    payload(kib, sizeof kib, (uint32_t)accepted, 0);
    cr_assert_eq(send_raw(0, "B", 1, 0, kib, sizeof kib, &err), GS_OK, "room again");
    cr_assert(wait_msgs(1, 0, accepted + 1));
    cr_assert_eq(get_int(&T.nodes[1].order_errors), 0);
    assert_no_leak();
}

/* ---- stop with messages in flight ---- */

Test(memory_transport, stop_while_messages_in_flight)
{
    create_node(0, "A",
                &(opts){.bus = "flight", .peers = {"B", "C"}, .delay_min = 100, .delay_max = 200});
    create_node(1, "B", &(opts){.bus = "flight", .delay_min = 20, .delay_max = 60});
    create_node(2, "C", &(opts){.bus = "flight"});
    for (int i = 0; i < 3; i++)
        start_node(i);
    cr_assert(wait_peer(0, 1, 1) && wait_peer(1, 0, 1) && wait_peer(0, 2, 1));

    /* B stops with A's messages queued for it: they are dropped, B hears nothing after stop,
     * and nothing leaks. */
    for (uint32_t s = 0; s < 2000; s++)
        send_ok(0, 1, GS_REPL_MSG_REPLICATION, s);
    stop_node(1);
    cr_assert(wait_peer(0, 1, 0));
    int got_b = get_int(&T.nodes[1].msgs[0]);
    cr_assert_lt(got_b, 2000, "stop came while messages were in flight");

    /* B's own messages to A, queued with a delay, still reach A before A hears B left
     * (a graceful close), in order. */
    start_node(1);
    cr_assert(wait_peer(0, 1, 1) && wait_peer(1, 0, 1));
    for (uint32_t s = 0; s < 500; s++)
        send_ok(1, 0, GS_REPL_MSG_REPLICATION, s);
    stop_node(1);
    cr_assert(wait_peer(0, 1, 0));
    pthread_mutex_lock(&PT.lock);
    node *a = &T.nodes[0];
    cr_assert_eq(a->msgs[1], 500, "A got all of B's messages before B's down event");
    cr_assert_eq(a->order_errors, 0);
    size_t last_from_b = 0;
    for (size_t i = 0; i < a->nrec; i++)
        if (a->recs[i].from == 1)
            last_from_b = i;
    cr_assert_eq(a->recs[last_from_b].type, EV_DOWN, "the down event comes last");
    pthread_mutex_unlock(&PT.lock);

    /* A stops while C has a backlog from nobody and A has one for C: destroy everything with
     * messages queued. */
    for (uint32_t s = 0; s < 1000; s++)
        send_ok(0, 2, GS_REPL_MSG_REPLICATION, s);
    stop_node(2);
    stop_node(0);
    cr_assert_eq(get_int(&T.nodes[1].after_stop), 0, "no callback after stop");
    cr_assert_eq(get_int(&T.nodes[2].after_stop), 0, "no callback after stop");
    cr_assert_eq(get_int(&T.nodes[0].after_stop), 0, "no callback after stop");
    assert_no_leak();
}

/* ---- configuration and identity ---- */

Test(memory_transport, ids_buses_and_bad_config)
{
    gs_error err;
    create_node(0, "A", &(opts){.bus = "x", .peers = {"*"}});
    create_node(1, "A", &(opts){.bus = "x"});
    create_node(2, "A", &(opts){.bus = "y", .peers = {"*"}});
    create_node(3, "B", &(opts){.bus = "y"});
    start_node(0);
    cr_assert_eq(try_start(1, &err), GS_ERROR, "one node id per bus");
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "already started"), "%s", err.message);
    start_node(2);
    start_node(3);
    cr_assert(wait_peer(3, 2, 1));
    /* Node 'A' on bus x is not B's peer: B only knows A of bus y. */
    pthread_mutex_lock(&PT.lock);
    cr_assert_eq(T.nodes[0].ups[3], 0);
    pthread_mutex_unlock(&PT.lock);
    /* Once the first A leaves, the second may start. */
    stop_node(0);
    start_node(1);

    const struct {
        const char *id;
        opts o;
    } bad[] = {
        {"", {.bus = "z"}},
        {"$x", {.bus = "z"}},
        {"has space", {.bus = "z"}},
        {"ok", {.bus = ""}},
        {"ok", {.bus = "z", .peers = {"bad peer"}}},
        {"ok", {.bus = "z", .peers = {""}}},
        {"ok", {.bus = "z", .drop = 1.5}},
        {"ok", {.bus = "z", .reorder = -0.1}},
        {"ok", {.bus = "z", .delay_min = 10, .delay_max = 5}},
        {"ok", {.bus = "z", .max_queue_bytes = -5}},
        {"ok", {.bus = "z", .hold_ms = -1}},
    };
    long live = atomic_load(&PT.live_allocs);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(try_create(5, bad[i].id, &bad[i].o, &err), GS_ERROR, "bad config %zu", i);
        cr_assert_str_eq(err.code, "INVALID_CONFIG", "%zu: %s", i, err.code);
        cr_assert_neq(err.message[0], '\0');
    }
    cr_assert_eq(atomic_load(&PT.live_allocs), live, "a refused create allocates nothing");
    assert_no_leak();
}

Test(memory_transport, allocation_failures)
{
    gs_error err;
    /* create fails cleanly at every allocation it makes. */
    atomic_store(&PT.fail_size_min, 1);
    cr_assert_eq(try_create(0, "A", &(opts){.bus = "oom", .peers = {"B"}}, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INTERNAL_ERROR");
    atomic_store(&PT.fail_size_min, 0);
    cr_assert_eq(atomic_load(&PT.live_allocs), 0);

    create_node(0, "A", &(opts){.bus = "oom", .peers = {"B"}});
    create_node(1, "B", &(opts){.bus = "oom"});
    start_node(1);
    /* start cannot allocate its link: refused, B hears nothing, A can start later. */
    atomic_store(&PT.fail_size_min, 1);
    cr_assert_eq(try_start(0, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INTERNAL_ERROR");
    atomic_store(&PT.fail_size_min, 0);
    start_node(0);
    cr_assert(wait_peer(0, 1, 1) && wait_peer(1, 0, 1));
    pthread_mutex_lock(&PT.lock);
    cr_assert_eq(T.nodes[1].ups[0], 1, "the failed start reported nothing");
    cr_assert_eq(T.nodes[1].downs[0], 0);
    pthread_mutex_unlock(&PT.lock);

    /* send cannot copy a big message: INTERNAL_ERROR, nothing queued. */
    static uint8_t big[4096];
    atomic_store(&PT.fail_size_min, 4000);
    cr_assert_eq(send_raw(0, "B", 1, 0, big, sizeof big, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INTERNAL_ERROR");
    /* partition cannot record itself; heal cannot allocate the new link. */
    atomic_store(&PT.fail_size_min, 1);
    cr_assert_eq(control(0, "partition A B", &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INTERNAL_ERROR");
    atomic_store(&PT.fail_size_min, 0);
    send_ok(0, 1, 1, 0);
    cr_assert(wait_msgs(1, 0, 1), "still linked");
    control_ok(0, "partition A B");
    cr_assert(wait_peer(0, 1, 0));
    atomic_store(&PT.fail_size_min, 1);
    cr_assert_eq(control(0, "heal", &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INTERNAL_ERROR");
    atomic_store(&PT.fail_size_min, 0);
    cr_assert_eq(send_raw(0, "B", 1, 0, big, 8, &err), GS_ERROR, "the partition stays");
    control_ok(0, "heal");
    cr_assert(wait_peer(0, 1, 1) && wait_peer(1, 0, 1));
    send_ok(0, 1, 1, 1);
    cr_assert(wait_msgs(1, 0, 2));
    assert_no_leak();
}

Test(memory_transport, held_message_released_after_hold)
{
    create_node(0, "A", &(opts){.bus = "hold", .peers = {"B"}, .reorder = 1.0, .hold_ms = 300});
    create_node(1, "B", &(opts){.bus = "hold"});
    start_node(0);
    start_node(1);
    cr_assert(wait_peer(0, 1, 1));
    /* Alone, a reordered message waits hold_ms for a next one, then goes in place. */
    send_ok(0, 1, GS_REPL_MSG_REPLICATION, 0);
    cr_assert(wait_rec(1, 0, GS_REPL_MSG_REPLICATION, 0));
    /* 1 is held, 2 takes its place (a message cannot be held while another is). */
    send_ok(0, 1, GS_REPL_MSG_REPLICATION, 1);
    send_ok(0, 1, GS_REPL_MSG_REPLICATION, 2);
    send_ok(0, 1, GS_REPL_MSG_REPLICATION, 3);
    cr_assert(wait_msgs(1, 0, 4));
    pthread_mutex_lock(&PT.lock);
    uint32_t want[] = {0, 2, 1, 3};
    size_t k = 0;
    for (size_t i = 0; i < T.nodes[1].nrec; i++)
        if (T.nodes[1].recs[i].type == GS_REPL_MSG_REPLICATION) {
            cr_assert_lt(k, 4);
            cr_assert_eq(T.nodes[1].recs[i].seq, want[k], "position %zu", k);
            k++;
        }
    pthread_mutex_unlock(&PT.lock);
    assert_no_leak();
}

Test(memory_transport, stop_from_own_callback_does_not_hang)
{
    create_node(0, "A", &(opts){.bus = "self", .peers = {"B"}});
    create_node(1, "B", &(opts){.bus = "self"});
    start_node(0);
    start_node(1);
    cr_assert(wait_peer(0, 1, 1));
    pthread_mutex_lock(&PT.lock);
    T.nodes[1].stop_self = 1;
    pthread_mutex_unlock(&PT.lock);
    send_ok(0, 1, GS_REPL_MSG_REPLICATION, 0);
    cr_assert(wait_log("called from its own event callback"));
    cr_assert(wait_peer(0, 1, 0), "A sees B leave");
    gs_error err;
    cr_assert_eq(send_raw(1, "A", 1, 0, (const uint8_t *)"x", 1, &err), GS_ERROR);
    /* The main thread can restart it (joining the old thread first) and destroy it. */
    start_node(1);
    cr_assert(wait_peer(0, 1, 1));
    assert_no_leak();
}

Test(memory_transport, allocation_failure_at_every_step)
{
    gs_error err;
    /* create: fail its 1st, 2nd, ... allocation until it succeeds; each failure leaves
     * nothing allocated. */
    long k = 0;
    for (; k < 64; k++) {
        fail_after(k);
        gs_status st = try_create(0, "A", &(opts){.bus = "steps", .peers = {"B", "C"}}, &err);
        fail_never();
        if (st == GS_OK)
            break;
        cr_assert_str_eq(err.code, "INTERNAL_ERROR", "step %ld: %s", k, err.code);
        cr_assert_eq(atomic_load(&PT.live_allocs), 0, "step %ld leaked", k);
    }
    cr_assert_geq(k, 5, "create allocates the instance, its id, peers and the bus");
    cr_assert_lt(k, 64);

    create_node(1, "B", &(opts){.bus = "steps"});
    create_node(2, "C", &(opts){.bus = "steps"});
    start_node(1);
    start_node(2);
    long live = atomic_load(&PT.live_allocs);
    /* start: every allocation of its two links can fail; nothing is reported or kept. */
    for (k = 0; k < 64; k++) {
        fail_after(k);
        gs_status st = try_start(0, &err);
        fail_never();
        if (st == GS_OK)
            break;
        cr_assert_str_eq(err.code, "INTERNAL_ERROR");
        cr_assert_eq(atomic_load(&PT.live_allocs), live, "step %ld leaked", k);
        pthread_mutex_lock(&PT.lock);
        cr_assert_eq(T.nodes[1].ups[0] + T.nodes[2].ups[0], 0, "a failed start reports nothing");
        pthread_mutex_unlock(&PT.lock);
    }
    cr_assert_geq(k, 8, "two links: pair states and four events each");
    cr_assert(wait_peer(1, 0, 1) && wait_peer(2, 0, 1) && wait_peer(0, 1, 1) && wait_peer(0, 2, 1));

    /* heal: partitions it could not heal stay, and a later heal finishes the job. */
    control_ok(1, "partition A B");
    control_ok(1, "partition A C");
    cr_assert(wait_peer(0, 1, 0) && wait_peer(0, 2, 0));
    for (k = 0; k < 64; k++) {
        fail_after(k);
        gs_status st = control(1, "heal", &err);
        fail_never();
        if (st == GS_OK)
            break;
        cr_assert_str_eq(err.code, "INTERNAL_ERROR");
    }
    cr_assert_lt(k, 64);
    cr_assert(wait_peer(0, 1, 1) && wait_peer(0, 2, 1) && wait_peer(1, 0, 1) && wait_peer(2, 0, 1));
    send_ok(0, 1, GS_REPL_MSG_REPLICATION, 0);
    send_ok(0, 2, GS_REPL_MSG_REPLICATION, 0);
    cr_assert(wait_msgs(1, 0, 1) && wait_msgs(2, 0, 1));
    assert_no_leak();
}
