/*
 * The coordinator conformance suite (coordinator.h): one set of Criterion tests that every
 * coordinator backend must pass, so code written against the memory coordinator behaves the
 * same against etcd. It checks put/get through txn, prefix ranges (key order, prefix
 * stripping, namespace isolation), revisions, every compare target with every result (absent
 * keys included), failure branches, leases (grant, keepalive, expiry, revoke, GS_DECLINED),
 * watches (order, deletes, lease-expiry deletes, replay from a past revision, unwatch), two
 * instances sharing one store, concurrent compare-and-set, stop, and the txn refusals.
 *
 * The including test file includes plugin_test_host.h first and defines, before this header:
 *   CC_SUITE              the Criterion suite name;
 *   CC_SHORT_TTL_MS       the ttl of the expiry tests (what the backend really grants, ms);
 *   CC_EXCLUSIVE          1 when nothing else writes the store (revisions then step by one);
 *   static void cc_init(void), cc_fini(void)   per test (the fini checks for leaks);
 *   static const gs_coordinator_vtable *cc_vt(void);
 *   static void *cc_open(const char *key_prefix);   a started instance (asserts on failure);
 *   static void cc_close(void *inst);               stop + destroy.
 * Each test uses its own key prefix, so tests may share one store (one etcd) and run at once.
 *
 * Threads: watch callbacks record into a cc_watcher under PT.lock and broadcast PT.cond; every
 * wait is bounded (WAIT_MS, or the lease ttl plus a margin). Threads other than the test's own
 * never call cr_assert: they record, and the test thread asserts.
 */
#ifndef GS_TESTS_PLUGINS_COORDINATOR_CONFORMANCE_H
#define GS_TESTS_PLUGINS_COORDINATOR_CONFORMANCE_H

#include <gatestream/coordinator.h>

#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CC_TEST(name) Test(CC_SUITE, name, .init = cc_init, .fini = cc_fini)
#define CC_MAX_EVENTS 512

/* ========================================================================================== */
/* Helpers                                                                                    */

/* A key prefix of this test only: "cc-<pid>-<name>/". */
static inline const char *cc_prefix(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "cc-%ld-%s/", (long)getpid(), name);
    return buf;
}

typedef struct cc_kv {
    char key[160];
    size_t key_len;
    char value[160];
    size_t value_len;
    int64_t create, mod, version, lease;
} cc_kv;

typedef struct cc_list {
    cc_kv kv[64];
    int n;
} cc_list;

static inline void cc_copy_kv(cc_kv *d, const gs_kv *kv)
{
    memset(d, 0, sizeof *d);
    d->key_len = kv->key_len < sizeof d->key - 1 ? kv->key_len : sizeof d->key - 1;
    if (d->key_len)
        memcpy(d->key, kv->key, d->key_len);
    d->value_len = kv->value_len < sizeof d->value - 1 ? kv->value_len : sizeof d->value - 1;
    if (d->value_len)
        memcpy(d->value, kv->value, d->value_len);
    d->create = kv->create_revision;
    d->mod = kv->mod_revision;
    d->version = kv->version;
    d->lease = kv->lease;
}

static void cc_visit(void *user, const gs_kv *kv)
{
    cc_list *l = user;
    if (l->n < (int)(sizeof l->kv / sizeof l->kv[0]))
        cc_copy_kv(&l->kv[l->n], kv);
    l->n++;
}

/* Range (prefix or exact) into l; asserts success; the read's revision. */
static inline int64_t cc_range(void *inst, const char *key, int prefix, cc_list *l)
{
    gs_error err;
    memset(&err, 0, sizeof err);
    memset(l, 0, sizeof *l);
    int64_t rev = -1;
    gs_status rc =
        cc_vt()->range(inst, (const uint8_t *)key, strlen(key), prefix, cc_visit, l, &rev, &err);
    cr_assert_eq(rc, GS_OK, "range(%s): %s %s", key, err.code, err.message);
    cr_assert_geq(rev, 0);
    return rev;
}

/* 1 with *out filled when key exists. */
static inline int cc_get(void *inst, const char *key, cc_kv *out)
{
    cc_list l;
    cc_range(inst, key, 0, &l);
    cr_assert_leq(l.n, 1, "an exact read of %s returned %d keys", key, l.n);
    if (l.n && out)
        *out = l.kv[0];
    return l.n;
}

static inline gs_op cc_put_op(const char *key, const char *value, int64_t lease)
{
    return (gs_op){.type = GS_OP_PUT,
                   .key = (const uint8_t *)key,
                   .key_len = strlen(key),
                   .value = (const uint8_t *)value,
                   .value_len = strlen(value),
                   .lease = lease};
}

static inline gs_op cc_del_op(const char *key)
{
    return (gs_op){.type = GS_OP_DELETE, .key = (const uint8_t *)key, .key_len = strlen(key)};
}

static inline gs_compare cc_cmp_num(const char *key, gs_compare_target t, gs_compare_result r,
                                    int64_t n)
{
    return (gs_compare){
        .key = (const uint8_t *)key, .key_len = strlen(key), .target = t, .result = r, .number = n};
}

static inline gs_compare cc_cmp_value(const char *key, gs_compare_result r, const char *v)
{
    return (gs_compare){.key = (const uint8_t *)key,
                        .key_len = strlen(key),
                        .target = GS_CMP_VALUE,
                        .result = r,
                        .value = (const uint8_t *)v,
                        .value_len = strlen(v)};
}

/* A txn that must succeed as a call; *succeeded returned, *rev_out (may be NULL) filled. */
static inline int cc_txn(void *inst, const gs_compare *c, size_t nc, const gs_op *s, size_t ns,
                         const gs_op *f, size_t nf, int64_t *rev_out)
{
    gs_error err;
    memset(&err, 0, sizeof err);
    int ok = -1;
    int64_t rev = -1;
    gs_status rc = cc_vt()->txn(inst, c, nc, s, ns, f, nf, &ok, &rev, &err);
    cr_assert_eq(rc, GS_OK, "txn: %s %s", err.code, err.message);
    cr_assert(ok == 0 || ok == 1);
    cr_assert_gt(rev, 0);
    if (rev_out)
        *rev_out = rev;
    return ok;
}

static inline int64_t cc_put(void *inst, const char *key, const char *value, int64_t lease)
{
    gs_op op = cc_put_op(key, value, lease);
    int64_t rev;
    cr_assert_eq(cc_txn(inst, NULL, 0, &op, 1, NULL, 0, &rev), 1);
    return rev;
}

static inline int64_t cc_del(void *inst, const char *key)
{
    gs_op op = cc_del_op(key);
    int64_t rev;
    cr_assert_eq(cc_txn(inst, NULL, 0, &op, 1, NULL, 0, &rev), 1);
    return rev;
}

static inline int64_t cc_grant(void *inst, int64_t ttl_ms)
{
    gs_error err;
    memset(&err, 0, sizeof err);
    int64_t id = 0;
    cr_assert_eq(cc_vt()->lease_grant(inst, ttl_ms, &id, &err), GS_OK, "lease_grant: %s %s",
                 err.code, err.message);
    cr_assert_gt(id, 0);
    return id;
}

static inline int cc_kv_is(const cc_kv *kv, const char *key, const char *value)
{
    return kv->key_len == strlen(key) && memcmp(kv->key, key, kv->key_len) == 0 &&
           (!value ||
            (kv->value_len == strlen(value) && memcmp(kv->value, value, kv->value_len) == 0));
}

/* ---- watch recording ---- */

typedef struct cc_event {
    int type;
    cc_kv kv;
    int64_t rev;
} cc_event;

typedef struct cc_watcher {
    cc_event ev[CC_MAX_EVENTS];
    int n;            /* events and losses seen (PT.lock) */
    int lost;         /* GS_WATCH_LOST seen */
    int after_lost;   /* callbacks after a GS_WATCH_LOST */
    int after_end;    /* callbacks after the test ended the watch (ended set) */
    int ended;        /* set by the test once unwatch/stop returned */
    int gate_closed;  /* the callback waits (bounded) while set */
    int in_gate;      /* a callback is waiting in the gate */
    int concurrent;   /* callbacks of this watch that overlapped */
    int running;      /* callbacks running now */
    uint64_t last_ms; /* when the last callback arrived */
} cc_watcher;

static void cc_on_watch(void *user, int type, const gs_kv *kv, int64_t rev)
{
    cc_watcher *w = user;
    pthread_mutex_lock(&PT.lock);
    if (w->running++)
        w->concurrent++;
    if (w->ended)
        w->after_end++;
    if (w->lost)
        w->after_lost++;
    if (w->gate_closed) {
        w->in_gate = 1;
        pthread_cond_broadcast(&PT.cond);
        struct timespec ts = deadline_in(WAIT_MS);
        while (w->gate_closed)
            if (pthread_cond_timedwait(&PT.cond, &PT.lock, &ts) == ETIMEDOUT)
                break;
        w->in_gate = 0;
    }
    if (type == GS_WATCH_LOST)
        w->lost = 1;
    if (w->n < CC_MAX_EVENTS) {
        cc_event *e = &w->ev[w->n];
        memset(e, 0, sizeof *e);
        e->type = type;
        e->rev = rev;
        if (kv)
            cc_copy_kv(&e->kv, kv);
    }
    w->n++;
    w->last_ms = now_ms();
    w->running--;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
}

static inline uint64_t cc_watch(void *inst, const char *prefix, int64_t start, cc_watcher *w)
{
    gs_error err;
    memset(&err, 0, sizeof err);
    uint64_t id = 0;
    gs_status rc = cc_vt()->watch(inst, (const uint8_t *)prefix, strlen(prefix), start, cc_on_watch,
                                  w, &id, &err);
    cr_assert_eq(rc, GS_OK, "watch(%s): %s %s", prefix, err.code, err.message);
    cr_assert_neq(id, 0);
    return id;
}

typedef struct cc_count_arg {
    const cc_watcher *w;
    int n;
} cc_count_arg;

static int cc_pred_events(void *arg)
{
    const cc_count_arg *a = arg;
    return a->w->n >= a->n;
}

/* Wait (bounded by ms) until w saw at least n callbacks. */
static inline int cc_wait_events(const cc_watcher *w, int n, uint64_t ms)
{
    cc_count_arg a = {w, n};
    return wait_until(cc_pred_events, &a, ms);
}

static inline int cc_events(const cc_watcher *w)
{
    pthread_mutex_lock(&PT.lock);
    int n = w->n;
    pthread_mutex_unlock(&PT.lock);
    return n;
}

static inline void cc_end_watch(void *inst, uint64_t id, cc_watcher *w)
{
    cc_vt()->unwatch(inst, id);
    pthread_mutex_lock(&PT.lock);
    w->ended = 1;
    pthread_mutex_unlock(&PT.lock);
}

static inline void cc_assert_event(const cc_watcher *w, int i, int type, const char *key,
                                   const char *value, int64_t rev)
{
    cr_assert_lt(i, w->n);
    const cc_event *e = &w->ev[i];
    cr_assert_eq(e->type, type, "event %d: type %d, expected %d", i, e->type, type);
    cr_assert(cc_kv_is(&e->kv, key, value), "event %d: key '%.*s' value '%.*s', expected %s=%s", i,
              (int)e->kv.key_len, e->kv.key, (int)e->kv.value_len, e->kv.value, key,
              value ? value : "(any)");
    if (rev)
        cr_assert_eq(e->rev, rev, "event %d (%s): revision %" PRId64 ", expected %" PRId64, i, key,
                     e->rev, rev);
    cr_assert_eq(e->kv.mod, e->rev, "event %d: kv.mod_revision %" PRId64 " != revision %" PRId64, i,
                 e->kv.mod, e->rev);
    if (type == GS_WATCH_DELETE)
        cr_assert_eq(e->kv.value_len, 0);
}

/* ========================================================================================== */
/* The tests                                                                                  */

CC_TEST(put_get_update_delete)
{
    char pfx[128];
    void *a = cc_open(cc_prefix(pfx, sizeof pfx, "putget"));
    cc_kv kv;
    cr_assert_eq(cc_get(a, "clusters/c1/k", &kv), 0);

    int64_t r1 = cc_put(a, "clusters/c1/k", "{\"v\":1}", 0);
    cr_assert_eq(cc_get(a, "clusters/c1/k", &kv), 1);
    cr_assert(cc_kv_is(&kv, "clusters/c1/k", "{\"v\":1}"), "the key comes back relative");
    cr_assert_eq(kv.create, r1);
    cr_assert_eq(kv.mod, r1);
    cr_assert_eq(kv.version, 1);
    cr_assert_eq(kv.lease, 0);

    int64_t r2 = cc_put(a, "clusters/c1/k", "{\"v\":2}", 0);
    cr_assert_gt(r2, r1);
    cr_assert_eq(cc_get(a, "clusters/c1/k", &kv), 1);
    cr_assert(cc_kv_is(&kv, "clusters/c1/k", "{\"v\":2}"));
    cr_assert_eq(kv.create, r1, "create_revision stays");
    cr_assert_eq(kv.mod, r2);
    cr_assert_eq(kv.version, 2);

    /* Empty values and binary bytes survive. */
    cc_put(a, "clusters/c1/empty", "", 0);
    cr_assert_eq(cc_get(a, "clusters/c1/empty", &kv), 1);
    cr_assert_eq(kv.value_len, 0);
    static const uint8_t bin[] = {0, 1, 0xff, 0, 'x'};
    gs_op op = {.type = GS_OP_PUT,
                .key = (const uint8_t *)"clusters/c1/bin",
                .key_len = 15,
                .value = bin,
                .value_len = sizeof bin};
    cc_txn(a, NULL, 0, &op, 1, NULL, 0, NULL);
    cr_assert_eq(cc_get(a, "clusters/c1/bin", &kv), 1);
    cr_assert_eq(kv.value_len, sizeof bin);
    cr_assert_eq(memcmp(kv.value, bin, sizeof bin), 0);

    int64_t r3 = cc_del(a, "clusters/c1/k");
    cr_assert_gt(r3, r2);
    cr_assert_eq(cc_get(a, "clusters/c1/k", &kv), 0);
    int64_t r4 = cc_put(a, "clusters/c1/k", "{\"v\":3}", 0);
    cr_assert_eq(cc_get(a, "clusters/c1/k", &kv), 1);
    cr_assert_eq(kv.create, r4, "a re-created key has a new create_revision");
    cr_assert_eq(kv.version, 1, "and starts at version 1 again");
    cc_close(a);
}

CC_TEST(range_prefix_order_and_stripping)
{
    char pfx[128], pfx2[128];
    void *a = cc_open(cc_prefix(pfx, sizeof pfx, "range"));
    static const char *keys[] = {"clusters/c1/nodes/b",   "clusters/c2/nodes/a",
                                 "clusters/c1/nodes/a/x", "clusters/c1/nodesX",
                                 "clusters/c1/groups/g",  "clusters/c1/nodes/a",
                                 "clusters/c1/nodes/\xff"};
    gs_op ops[7];
    for (int i = 0; i < 7; i++)
        ops[i] = cc_put_op(keys[i], keys[i], 0);
    int64_t rev;
    cr_assert_eq(cc_txn(a, NULL, 0, ops, 7, NULL, 0, &rev), 1);

    cc_list l;
    int64_t read_rev = cc_range(a, "clusters/c1/nodes/", 1, &l);
    cr_assert_geq(read_rev, rev);
    cr_assert_eq(l.n, 4, "prefix nodes/: %d keys", l.n);
    cr_assert(cc_kv_is(&l.kv[0], "clusters/c1/nodes/a", "clusters/c1/nodes/a"));
    cr_assert(cc_kv_is(&l.kv[1], "clusters/c1/nodes/a/x", NULL));
    cr_assert(cc_kv_is(&l.kv[2], "clusters/c1/nodes/b", NULL));
    cr_assert(cc_kv_is(&l.kv[3], "clusters/c1/nodes/\xff", NULL), "byte order, 0xff last");
    for (int i = 0; i < 4; i++)
        cr_assert_eq(l.kv[i].mod, rev, "one txn, one revision");

    cc_range(a, "clusters/c1/", 1, &l);
    cr_assert_eq(l.n, 6);
    cr_assert(cc_kv_is(&l.kv[0], "clusters/c1/groups/g", NULL));
    cr_assert(cc_kv_is(&l.kv[5], "clusters/c1/nodesX", NULL));

    cc_range(a, "", 1, &l);
    cr_assert_eq(l.n, 7, "the empty prefix is the whole namespace of this key prefix");
    for (int i = 1; i < l.n; i++) {
        size_t n = l.kv[i - 1].key_len < l.kv[i].key_len ? l.kv[i - 1].key_len : l.kv[i].key_len;
        int c = memcmp(l.kv[i - 1].key, l.kv[i].key, n);
        cr_assert(c < 0 || (c == 0 && l.kv[i - 1].key_len < l.kv[i].key_len), "key order");
    }
    cr_assert_eq(cc_range(a, "clusters/c1/nodes/a", 0, &l) >= rev, 1);
    cr_assert_eq(l.n, 1, "an exact read is not a prefix read");

    /* Another key prefix is another namespace. */
    void *b = cc_open(cc_prefix(pfx2, sizeof pfx2, "range-other"));
    cc_range(b, "", 1, &l);
    cr_assert_eq(l.n, 0);
    cc_put(b, "clusters/c1/nodes/z", "z", 0);
    cc_range(a, "clusters/c1/nodes/", 1, &l);
    cr_assert_eq(l.n, 4);
    cc_close(b);
    cc_close(a);
}

CC_TEST(revisions_increase)
{
    char pfx[128];
    void *a = cc_open(cc_prefix(pfx, sizeof pfx, "revs"));
    cc_list l;
    int64_t r0 = cc_range(a, "x", 0, &l);
    int64_t prev = r0;
    for (int i = 0; i < 5; i++) {
        int64_t r = cc_put(a, "x", "v", 0);
        cr_assert_gt(r, prev);
        if (CC_EXCLUSIVE)
            cr_assert_eq(r, prev + 1, "every change raises the revision by one");
        prev = r;
    }
    /* A txn of three puts is one revision. */
    gs_op ops[3] = {cc_put_op("m1", "1", 0), cc_put_op("m2", "2", 0), cc_put_op("m3", "3", 0)};
    int64_t r;
    cc_txn(a, NULL, 0, ops, 3, NULL, 0, &r);
    cr_assert_gt(r, prev);
    if (CC_EXCLUSIVE)
        cr_assert_eq(r, prev + 1);
    cc_range(a, "m", 1, &l);
    cr_assert_eq(l.n, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(l.kv[i].mod, r);
    prev = r;

    /* A failed compare with no failure ops, and a delete of nothing, change nothing. */
    gs_compare c = cc_cmp_num("x", GS_CMP_VERSION, GS_CMP_EQUAL, 999);
    gs_op put = cc_put_op("never", "1", 0);
    cr_assert_eq(cc_txn(a, &c, 1, &put, 1, NULL, 0, &r), 0);
    cr_assert_geq(r, prev);
    if (CC_EXCLUSIVE)
        cr_assert_eq(r, prev, "nothing written, no new revision");
    cr_assert_eq(cc_get(a, "never", NULL), 0);
    gs_op del = cc_del_op("absent");
    cc_txn(a, NULL, 0, &del, 1, NULL, 0, &r);
    if (CC_EXCLUSIVE)
        cr_assert_eq(r, prev, "deleting an absent key changes nothing");

    int64_t read = cc_range(a, "x", 0, &l);
    cr_assert_geq(read, prev);
    if (CC_EXCLUSIVE)
        cr_assert_eq(read, prev, "a read reports the store revision");

    /* The revision out-pointers are optional. */
    gs_error err;
    int ok;
    cr_assert_eq(cc_vt()->txn(a, NULL, 0, &put, 1, NULL, 0, &ok, NULL, &err), GS_OK);
    cr_assert_eq(cc_vt()->range(a, (const uint8_t *)"x", 1, 0, NULL, NULL, NULL, &err), GS_OK);
    cc_close(a);
}

typedef struct cc_cmp_case {
    gs_compare_target target;
    int64_t actual;
} cc_cmp_case;

/* Run compare c; the success branch writes "s" to key r, the failure branch "f". */
static inline int cc_check_compare(void *a, const gs_compare *c, size_t n)
{
    gs_op s = cc_put_op("cmp/result", "s", 0), f = cc_put_op("cmp/result", "f", 0);
    int ok = cc_txn(a, c, n, &s, 1, &f, 1, NULL);
    cc_kv kv;
    cr_assert_eq(cc_get(a, "cmp/result", &kv), 1);
    cr_assert(cc_kv_is(&kv, "cmp/result", ok ? "s" : "f"), "the branch applied matches succeeded");
    return ok;
}

CC_TEST(compare_every_target_and_result)
{
    char pfx[128];
    void *a = cc_open(cc_prefix(pfx, sizeof pfx, "compare"));
    int64_t lease = cc_grant(a, 30000);
    int64_t create = cc_put(a, "cmp/k", "a", 0);
    int64_t mod = cc_put(a, "cmp/k", "m", lease);
    cc_kv kv;
    cr_assert_eq(cc_get(a, "cmp/k", &kv), 1);
    cr_assert_eq(kv.version, 2);
    cr_assert_eq(kv.lease, lease);

    cc_cmp_case cases[] = {
        {GS_CMP_VERSION, 2}, {GS_CMP_CREATE, create}, {GS_CMP_MOD, mod}, {GS_CMP_LEASE, lease}};
    static const gs_compare_result results[] = {GS_CMP_EQUAL, GS_CMP_GREATER, GS_CMP_LESS,
                                                GS_CMP_NOT_EQUAL};
    for (size_t t = 0; t < 4; t++)
        for (int d = -1; d <= 1; d++)
            for (size_t r = 0; r < 4; r++) {
                int64_t operand = cases[t].actual + d;
                gs_compare c = cc_cmp_num("cmp/k", cases[t].target, results[r], operand);
                int want = results[r] == GS_CMP_EQUAL     ? d == 0
                           : results[r] == GS_CMP_GREATER ? d < 0
                           : results[r] == GS_CMP_LESS    ? d > 0
                                                          : d != 0;
                cr_assert_eq(cc_check_compare(a, &c, 1), want,
                             "target %d result %d operand actual%+d", (int)cases[t].target,
                             (int)results[r], d);
            }
    static const char *operands[] = {"l", "m", "n"};
    for (int d = 0; d < 3; d++)
        for (size_t r = 0; r < 4; r++) {
            gs_compare c = cc_cmp_value("cmp/k", results[r], operands[d]);
            int rel = d - 1; /* operand relative to the value "m" */
            int want = results[r] == GS_CMP_EQUAL     ? rel == 0
                       : results[r] == GS_CMP_GREATER ? rel < 0
                       : results[r] == GS_CMP_LESS    ? rel > 0
                                                      : rel != 0;
            cr_assert_eq(cc_check_compare(a, &c, 1), want, "value %d vs '%s'", (int)results[r],
                         operands[d]);
        }
    /* Against the empty value, present: "m" > "" and != "". */
    gs_compare c = cc_cmp_value("cmp/k", GS_CMP_EQUAL, "");
    cr_assert_eq(cc_check_compare(a, &c, 1), 0);
    c = cc_cmp_value("cmp/k", GS_CMP_NOT_EQUAL, "");
    cr_assert_eq(cc_check_compare(a, &c, 1), 1);
    c = cc_cmp_value("cmp/k", GS_CMP_GREATER, "");
    cr_assert_eq(cc_check_compare(a, &c, 1), 1);

    /* An absent key: version, create, mod and lease 0, the empty value (coordinator.h). */
    for (size_t t = 0; t < 4; t++) {
        c = cc_cmp_num("cmp/absent", cases[t].target, GS_CMP_EQUAL, 0);
        cr_assert_eq(cc_check_compare(a, &c, 1), 1, "absent key, target %d == 0",
                     (int)cases[t].target);
        c = cc_cmp_num("cmp/absent", cases[t].target, GS_CMP_LESS, 1);
        cr_assert_eq(cc_check_compare(a, &c, 1), 1);
        c = cc_cmp_num("cmp/absent", cases[t].target, GS_CMP_GREATER, 0);
        cr_assert_eq(cc_check_compare(a, &c, 1), 0);
    }
    struct {
        gs_compare_result r;
        const char *v;
        int want;
    } absent[] = {{GS_CMP_EQUAL, "", 1},     {GS_CMP_EQUAL, "x", 0},  {GS_CMP_NOT_EQUAL, "x", 1},
                  {GS_CMP_NOT_EQUAL, "", 0}, {GS_CMP_LESS, "x", 1},   {GS_CMP_LESS, "", 0},
                  {GS_CMP_GREATER, "", 0},   {GS_CMP_GREATER, "x", 0}};
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++) {
        c = cc_cmp_value("cmp/absent", absent[i].r, absent[i].v);
        cr_assert_eq(cc_check_compare(a, &c, 1), absent[i].want, "absent value %d '%s'",
                     (int)absent[i].r, absent[i].v);
    }
    /* A present empty value is not an absent key for the other targets. */
    cc_put(a, "cmp/empty", "", 0);
    c = cc_cmp_value("cmp/empty", GS_CMP_EQUAL, "");
    cr_assert_eq(cc_check_compare(a, &c, 1), 1);
    c = cc_cmp_num("cmp/empty", GS_CMP_VERSION, GS_CMP_EQUAL, 0);
    cr_assert_eq(cc_check_compare(a, &c, 1), 0);

    /* Several compares: all must hold. */
    gs_compare all[4] = {cc_cmp_value("cmp/absent", GS_CMP_EQUAL, ""),
                         cc_cmp_num("cmp/k", GS_CMP_VERSION, GS_CMP_EQUAL, 2),
                         cc_cmp_value("cmp/absent2", GS_CMP_LESS, "x"),
                         cc_cmp_value("cmp/k", GS_CMP_NOT_EQUAL, "z")};
    cr_assert_eq(cc_check_compare(a, all, 4), 1);
    all[1].number = 3;
    cr_assert_eq(cc_check_compare(a, all, 4), 0);
    all[1].number = 2;
    all[3] = cc_cmp_value("cmp/k", GS_CMP_NOT_EQUAL, "m");
    cr_assert_eq(cc_check_compare(a, all, 4), 0);
    all[3] = cc_cmp_value("cmp/k", GS_CMP_LESS, "n");
    cr_assert_eq(cc_check_compare(a, all, 4), 1);
    cc_close(a);
}

CC_TEST(failure_branch_applies_instead)
{
    char pfx[128];
    void *a = cc_open(cc_prefix(pfx, sizeof pfx, "failure"));
    cc_put(a, "f/keep", "1", 0);
    cc_put(a, "f/doomed", "1", 0);
    gs_compare c = cc_cmp_num("f/keep", GS_CMP_VERSION, GS_CMP_EQUAL, 5);
    gs_op s[2] = {cc_put_op("f/success", "yes", 0), cc_del_op("f/keep")};
    gs_op f[3] = {cc_put_op("f/failure", "yes", 0), cc_del_op("f/doomed"),
                  cc_put_op("f/keep", "2", 0)};
    int64_t rev;
    cr_assert_eq(cc_txn(a, &c, 1, s, 2, f, 3, &rev), 0);
    cc_kv kv;
    cr_assert_eq(cc_get(a, "f/success", NULL), 0, "the success branch did not run");
    cr_assert_eq(cc_get(a, "f/failure", &kv), 1);
    cr_assert_eq(kv.mod, rev);
    cr_assert_eq(cc_get(a, "f/doomed", NULL), 0);
    cr_assert_eq(cc_get(a, "f/keep", &kv), 1);
    cr_assert(cc_kv_is(&kv, "f/keep", "2"));
    cr_assert_eq(kv.version, 2);

    c.number = 2;
    cr_assert_eq(cc_txn(a, &c, 1, s, 2, f, 3, &rev), 1);
    cr_assert_eq(cc_get(a, "f/success", NULL), 1);
    cr_assert_eq(cc_get(a, "f/keep", NULL), 0);
    cc_close(a);
}

CC_TEST(lease_grant_keepalive_revoke)
{
    char pfx[128];
    void *a = cc_open(cc_prefix(pfx, sizeof pfx, "lease"));
    int64_t l1 = cc_grant(a, 10000), l2 = cc_grant(a, 10000);
    cr_assert_neq(l1, l2);
    cc_put(a, "l/k1", "1", l1);
    cc_put(a, "l/k2", "2", l1);
    cc_put(a, "l/other", "3", l2);
    cc_put(a, "l/plain", "4", 0);
    cc_kv kv;
    cr_assert_eq(cc_get(a, "l/k1", &kv), 1);
    cr_assert_eq(kv.lease, l1);

    gs_error err;
    memset(&err, 0, sizeof err);
    int64_t left = 0;
    cr_assert_eq(cc_vt()->lease_keepalive(a, l1, &left, &err), GS_OK, "%s %s", err.code,
                 err.message);
    cr_assert(left >= 9000 && left <= 11000, "keepalive granted %" PRId64 " ms", left);

    int64_t before;
    cc_list l;
    before = cc_range(a, "l/", 1, &l);
    cr_assert_eq(cc_vt()->lease_revoke(a, l1, &err), GS_OK, "%s %s", err.code, err.message);
    int64_t after = cc_range(a, "l/", 1, &l);
    cr_assert_gt(after, before, "deleting the lease's keys is a change");
    cr_assert_eq(l.n, 2, "the revoked lease's keys are gone, the others stay");
    cr_assert(cc_kv_is(&l.kv[0], "l/other", NULL));
    cr_assert(cc_kv_is(&l.kv[1], "l/plain", NULL));

    cr_assert_eq(cc_vt()->lease_keepalive(a, l1, &left, &err), GS_DECLINED,
                 "a revoked lease is declined, not an error");
    cr_assert_eq(cc_vt()->lease_revoke(a, l1, &err), GS_OK, "revoking twice is fine");
    cr_assert_eq(cc_vt()->lease_revoke(a, INT64_C(0x5eed0000cafe), &err), GS_OK,
                 "an unknown lease is GS_OK");
    cr_assert_eq(cc_vt()->lease_keepalive(a, INT64_C(0x5eed0000cafe), &left, &err), GS_DECLINED);

    /* A put attached to a gone lease is refused and changes nothing. */
    gs_op ops[2] = {cc_put_op("l/late", "x", l1), cc_put_op("l/plain", "changed", 0)};
    int ok = -1;
    memset(&err, 0, sizeof err);
    cr_assert_eq(cc_vt()->txn(a, NULL, 0, ops, 2, NULL, 0, &ok, NULL, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "COORDINATOR_UNAVAILABLE");
    cr_assert(strstr(err.message, "lease"), "the message names the lease: %s", err.message);
    cr_assert_eq(cc_get(a, "l/late", NULL), 0);
    cr_assert_eq(cc_get(a, "l/plain", &kv), 1);
    cr_assert(cc_kv_is(&kv, "l/plain", "4"));

    /* Moving a key from one lease to another, then revoking the first, keeps it. */
    int64_t l3 = cc_grant(a, 10000);
    cc_put(a, "l/moving", "1", l2);
    cc_put(a, "l/moving", "2", l3);
    cr_assert_eq(cc_vt()->lease_revoke(a, l2, &err), GS_OK);
    cr_assert_eq(cc_get(a, "l/moving", &kv), 1);
    cr_assert_eq(kv.lease, l3);
    cr_assert_eq(cc_get(a, "l/other", NULL), 0);
    cr_assert_eq(cc_vt()->lease_revoke(a, l3, &err), GS_OK);
    cr_assert_eq(cc_get(a, "l/moving", NULL), 0);
    cc_close(a);
}

CC_TEST(lease_expiry_deletes_keys_and_watchers_see_it)
{
    char pfx[128];
    void *a = cc_open(cc_prefix(pfx, sizeof pfx, "expiry"));
    static cc_watcher w;
    uint64_t id = cc_watch(a, "e/", 0, &w);
    uint64_t t0 = now_ms();
    int64_t lease = cc_grant(a, CC_SHORT_TTL_MS);
    int64_t r1 = cc_put(a, "e/a", "1", lease);
    int64_t r2 = cc_put(a, "e/b", "2", lease);
    cc_put(a, "e/plain", "3", 0);
    cr_assert(cc_wait_events(&w, 5, CC_SHORT_TTL_MS + WAIT_MS), "the expiry deletes never came");
    uint64_t waited = now_ms() - t0;
    cr_assert_geq(waited + 100, (uint64_t)CC_SHORT_TTL_MS, "expired early: %" PRIu64 " ms", waited);
    cc_assert_event(&w, 0, GS_WATCH_PUT, "e/a", "1", r1);
    cc_assert_event(&w, 1, GS_WATCH_PUT, "e/b", "2", r2);
    cc_assert_event(&w, 2, GS_WATCH_PUT, "e/plain", "3", 0);
    cc_assert_event(&w, 3, GS_WATCH_DELETE, "e/a", NULL, 0);
    cc_assert_event(&w, 4, GS_WATCH_DELETE, "e/b", NULL, 0);
    cr_assert_eq(w.ev[3].rev, w.ev[4].rev, "one lease, one revision");
    cr_assert_gt(w.ev[3].rev, w.ev[2].rev);
    cc_list l;
    cc_range(a, "e/", 1, &l);
    cr_assert_eq(l.n, 1);
    cr_assert(cc_kv_is(&l.kv[0], "e/plain", "3"));
    gs_error err;
    int64_t left;
    cr_assert_eq(cc_vt()->lease_keepalive(a, lease, &left, &err), GS_DECLINED);
    cc_end_watch(a, id, &w);
    cc_close(a);
}

CC_TEST(keepalive_keeps_keys)
{
    char pfx[128];
    void *a = cc_open(cc_prefix(pfx, sizeof pfx, "keepalive"));
    static cc_watcher w;
    uint64_t id = cc_watch(a, "k/", 0, &w);
    int64_t lease = cc_grant(a, CC_SHORT_TTL_MS);
    cc_put(a, "k/session", "1", lease);
    /* Renew every third of the ttl for twice the ttl: a schedule, not a wait for a condition. */
    uint64_t end = now_ms() + 2 * CC_SHORT_TTL_MS;
    while (now_ms() < end) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(CC_SHORT_TTL_MS / 3) * 1000000L};
        while (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        nanosleep(&ts, NULL);
        gs_error err;
        int64_t left = 0;
        cr_assert_eq(cc_vt()->lease_keepalive(a, lease, &left, &err), GS_OK);
        cr_assert_gt(left, 0);
    }
    cr_assert_eq(cc_get(a, "k/session", NULL), 1, "a renewed lease keeps its keys");
    cr_assert_eq(cc_events(&w), 1, "no delete was seen");
    cc_end_watch(a, id, &w);
    cc_close(a);
}

CC_TEST(watch_sees_puts_and_deletes_in_order)
{
    char pfx[128];
    void *a = cc_open(cc_prefix(pfx, sizeof pfx, "watch"));
    static cc_watcher w;
    uint64_t id = cc_watch(a, "clusters/c1/", 0, &w);
    int64_t r1 = cc_put(a, "clusters/c1/a", "1", 0);
    int64_t r2 = cc_put(a, "clusters/c1/b", "2", 0);
    int64_t r3 = cc_del(a, "clusters/c1/a");
    gs_op ops[2] = {cc_put_op("clusters/c1/c", "3", 0), cc_del_op("clusters/c1/b")};
    int64_t r4;
    cc_txn(a, NULL, 0, ops, 2, NULL, 0, &r4);
    cc_put(a, "clusters/c2/x", "not mine", 0);
    cc_put(a, "clusters/c1", "not under the prefix either", 0);
    int64_t r5 = cc_put(a, "clusters/c1/a", "4", 0);
    cr_assert(cc_wait_events(&w, 6, WAIT_MS), "saw %d of 6 events", cc_events(&w));
    cc_assert_event(&w, 0, GS_WATCH_PUT, "clusters/c1/a", "1", r1);
    cr_assert_eq(w.ev[0].kv.create, r1);
    cr_assert_eq(w.ev[0].kv.version, 1);
    cc_assert_event(&w, 1, GS_WATCH_PUT, "clusters/c1/b", "2", r2);
    cc_assert_event(&w, 2, GS_WATCH_DELETE, "clusters/c1/a", NULL, r3);
    cc_assert_event(&w, 3, GS_WATCH_PUT, "clusters/c1/c", "3", r4);
    cc_assert_event(&w, 4, GS_WATCH_DELETE, "clusters/c1/b", NULL, r4);
    cc_assert_event(&w, 5, GS_WATCH_PUT, "clusters/c1/a", "4", r5);
    cr_assert_eq(w.ev[5].kv.create, r5);
    cr_assert_eq(w.ev[5].kv.version, 1);
    cr_assert_eq(w.concurrent, 0, "one callback at a time");
    /* Nothing more arrives: the next event is a fresh put, not a leftover. */
    int64_t r6 = cc_put(a, "clusters/c1/z", "5", 0);
    cr_assert(cc_wait_events(&w, 7, WAIT_MS));
    cc_assert_event(&w, 6, GS_WATCH_PUT, "clusters/c1/z", "5", r6);
    cc_end_watch(a, id, &w);
    cc_close(a);
}

CC_TEST(watch_from_past_revision_replays)
{
    char pfx[128];
    void *a = cc_open(cc_prefix(pfx, sizeof pfx, "replay"));
    int64_t r1 = cc_put(a, "p/x1", "1", 0);
    int64_t r2 = cc_put(a, "p/x2", "2", 0);
    int64_t r3 = cc_del(a, "p/x1");
    static cc_watcher w1, w2;
    uint64_t id1 = cc_watch(a, "p/", r1, &w1);
    uint64_t id2 = cc_watch(a, "p/", r2, &w2);
    cr_assert(cc_wait_events(&w1, 3, WAIT_MS));
    cc_assert_event(&w1, 0, GS_WATCH_PUT, "p/x1", "1", r1);
    cc_assert_event(&w1, 1, GS_WATCH_PUT, "p/x2", "2", r2);
    cc_assert_event(&w1, 2, GS_WATCH_DELETE, "p/x1", NULL, r3);
    cr_assert(cc_wait_events(&w2, 2, WAIT_MS));
    cc_assert_event(&w2, 0, GS_WATCH_PUT, "p/x2", "2", r2);
    cc_assert_event(&w2, 1, GS_WATCH_DELETE, "p/x1", NULL, r3);
    int64_t r4 = cc_put(a, "p/x3", "3", 0);
    cr_assert(cc_wait_events(&w1, 4, WAIT_MS));
    cr_assert(cc_wait_events(&w2, 3, WAIT_MS));
    cc_assert_event(&w1, 3, GS_WATCH_PUT, "p/x3", "3", r4);
    cc_assert_event(&w2, 2, GS_WATCH_PUT, "p/x3", "3", r4);
    cr_assert_eq(w1.lost + w2.lost, 0);
    cc_end_watch(a, id1, &w1);
    cc_end_watch(a, id2, &w2);
    cc_close(a);
}

typedef struct cc_unwatch_arg {
    void *inst;
    uint64_t id;
    int returned; /* PT.lock */
    cc_watcher *w;
} cc_unwatch_arg;

static void *cc_unwatch_thread(void *p)
{
    cc_unwatch_arg *u = p;
    cc_vt()->unwatch(u->inst, u->id);
    pthread_mutex_lock(&PT.lock);
    u->returned = 1;
    u->w->ended = 1;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
    return NULL;
}

static int cc_pred_in_gate(void *p)
{
    return ((cc_watcher *)p)->in_gate;
}

static int cc_pred_returned(void *p)
{
    return ((cc_unwatch_arg *)p)->returned;
}

CC_TEST(unwatch_waits_for_the_callback_and_stops_events)
{
    char pfx[128];
    void *a = cc_open(cc_prefix(pfx, sizeof pfx, "unwatch"));
    static cc_watcher w1, w2;
    w1.gate_closed = 1;
    uint64_t id1 = cc_watch(a, "u/", 0, &w1);
    cc_put(a, "u/first", "1", 0);
    cr_assert(wait_until(cc_pred_in_gate, &w1, WAIT_MS), "the callback never ran");

    static cc_unwatch_arg u;
    u = (cc_unwatch_arg){.inst = a, .id = id1, .w = &w1};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, cc_unwatch_thread, &u), 0);
    /* While the callback is held, unwatch must not return (a bounded negative check). */
    cr_assert_eq(wait_until(cc_pred_returned, &u, 300), 0,
                 "unwatch returned while its callback was still running");
    pthread_mutex_lock(&PT.lock);
    w1.gate_closed = 0;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
    cr_assert(wait_until(cc_pred_returned, &u, WAIT_MS), "unwatch never returned");
    pthread_join(th, NULL);
    cr_assert_eq(cc_events(&w1), 1);

    /* A second watch proves later events are delivered; the ended watch gets none. */
    uint64_t id2 = cc_watch(a, "u/", 0, &w2);
    cc_put(a, "u/second", "2", 0);
    cc_put(a, "u/third", "3", 0);
    cr_assert(cc_wait_events(&w2, 2, WAIT_MS));
    cr_assert_eq(cc_events(&w1), 1, "no callback after unwatch returned");
    cr_assert_eq(w1.after_end, 0);
    cc_vt()->unwatch(a, id1);                  /* twice: ignored */
    cc_vt()->unwatch(a, UINT64_C(0xdeadbeef)); /* unknown: ignored */
    cc_end_watch(a, id2, &w2);
    cc_put(a, "u/fourth", "4", 0);
    cr_assert_eq(w2.after_end, 0);
    cc_close(a);
}

CC_TEST(two_instances_share_one_store)
{
    char pfx[128];
    cc_prefix(pfx, sizeof pfx, "shared");
    void *a = cc_open(pfx);
    void *b = cc_open(pfx);
    static cc_watcher wb;
    uint64_t id = cc_watch(b, "s/", 0, &wb);
    for (int i = 0; i < 20; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        int64_t r = cc_put(a, "s/k", v, 0);
        cc_kv kv;
        cr_assert_eq(cc_get(b, "s/k", &kv), 1, "read after write across instances");
        cr_assert(cc_kv_is(&kv, "s/k", v), "b read '%.*s', a wrote '%s'", (int)kv.value_len,
                  kv.value, v);
        cr_assert_geq(kv.mod, r);
        /* b compares against what a wrote. */
        gs_compare c = cc_cmp_num("s/k", GS_CMP_MOD, GS_CMP_EQUAL, kv.mod);
        gs_op op = cc_put_op("s/k2", v, 0);
        cr_assert_eq(cc_txn(b, &c, 1, &op, 1, NULL, 0, NULL), 1);
    }
    cr_assert(cc_wait_events(&wb, 40, WAIT_MS), "b's watch saw %d of a's and b's 40 changes",
              cc_events(&wb));
    /* Leases belong to the store, not to the instance. */
    int64_t lease = cc_grant(a, 10000);
    gs_error err;
    int64_t left;
    cr_assert_eq(cc_vt()->lease_keepalive(b, lease, &left, &err), GS_OK);
    cr_assert_eq(cc_vt()->lease_revoke(a, lease, &err), GS_OK);
    cr_assert_eq(cc_vt()->lease_keepalive(b, lease, &left, &err), GS_DECLINED);
    cc_end_watch(b, id, &wb);
    cc_close(b);
    cc_close(a);
}

#define CC_CAS_THREADS 4
#define CC_CAS_ROUNDS 25

typedef struct cc_cas {
    void *inst[2];
    pthread_barrier_t start, done;
    int64_t base_mod;
    int round;
    int wins[CC_CAS_ROUNDS];
    int errors;
    char last_error[600];
} cc_cas;

static cc_cas cc_cas_state;

static void *cc_cas_thread(void *p)
{
    intptr_t me = (intptr_t)p;
    cc_cas *s = &cc_cas_state;
    for (int round = 0; round < CC_CAS_ROUNDS; round++) {
        pthread_barrier_wait(&s->start);
        char v[16];
        snprintf(v, sizeof v, "%d", round + 1);
        gs_compare c = cc_cmp_num("cas/counter", GS_CMP_MOD, GS_CMP_EQUAL, s->base_mod);
        gs_op op = cc_put_op("cas/counter", v, 0);
        gs_error err;
        int ok = 0;
        gs_status rc = cc_vt()->txn(s->inst[me % 2], &c, 1, &op, 1, NULL, 0, &ok, NULL, &err);
        pthread_mutex_lock(&PT.lock);
        if (rc != GS_OK) {
            s->errors++;
            snprintf(s->last_error, sizeof s->last_error, "%s %s", err.code, err.message);
        } else if (ok) {
            s->wins[round]++;
        }
        pthread_mutex_unlock(&PT.lock);
        pthread_barrier_wait(&s->done);
    }
    return NULL;
}

CC_TEST(concurrent_compare_and_set_has_one_winner)
{
    char pfx[128];
    cc_prefix(pfx, sizeof pfx, "cas");
    cc_cas *s = &cc_cas_state;
    memset(s, 0, sizeof *s);
    s->inst[0] = cc_open(pfx);
    s->inst[1] = cc_open(pfx);
    cc_put(s->inst[0], "cas/counter", "0", 0);
    pthread_barrier_init(&s->start, NULL, CC_CAS_THREADS + 1);
    pthread_barrier_init(&s->done, NULL, CC_CAS_THREADS + 1);
    pthread_t th[CC_CAS_THREADS];
    for (intptr_t i = 0; i < CC_CAS_THREADS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, cc_cas_thread, (void *)i), 0);
    for (int round = 0; round < CC_CAS_ROUNDS; round++) {
        cc_kv kv;
        cr_assert_eq(cc_get(s->inst[0], "cas/counter", &kv), 1);
        char want[16];
        snprintf(want, sizeof want, "%d", round);
        cr_assert(cc_kv_is(&kv, "cas/counter", want));
        s->base_mod = kv.mod;
        pthread_barrier_wait(&s->start);
        pthread_barrier_wait(&s->done);
    }
    for (int i = 0; i < CC_CAS_THREADS; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(s->errors, 0, "txn errors: %s", s->last_error);
    for (int round = 0; round < CC_CAS_ROUNDS; round++)
        cr_assert_eq(s->wins[round], 1, "round %d had %d winners", round, s->wins[round]);
    cc_kv kv;
    cr_assert_eq(cc_get(s->inst[1], "cas/counter", &kv), 1);
    cr_assert_eq(kv.version, CC_CAS_ROUNDS + 1);
    pthread_barrier_destroy(&s->start);
    pthread_barrier_destroy(&s->done);
    cc_close(s->inst[0]);
    cc_close(s->inst[1]);
}

CC_TEST(stop_ends_watches_and_fails_calls)
{
    char pfx[128];
    cc_prefix(pfx, sizeof pfx, "stop");
    void *a = cc_open(pfx);
    void *b = cc_open(pfx);
    static cc_watcher wa, wb;
    cc_watch(a, "st/", 0, &wa);
    uint64_t idb = cc_watch(b, "st/", 0, &wb);
    cc_put(b, "st/1", "1", 0);
    cr_assert(cc_wait_events(&wa, 1, WAIT_MS));
    cc_vt()->stop(a);
    pthread_mutex_lock(&PT.lock);
    wa.ended = 1;
    pthread_mutex_unlock(&PT.lock);

    gs_error err;
    memset(&err, 0, sizeof err);
    uint64_t t0 = now_ms();
    cc_list l;
    cr_assert_eq(cc_vt()->range(a, (const uint8_t *)"st/", 3, 1, cc_visit, &l, NULL, &err),
                 GS_ERROR);
    cr_assert_str_eq(err.code, "COORDINATOR_UNAVAILABLE");
    gs_op op = cc_put_op("st/2", "2", 0);
    int ok;
    cr_assert_eq(cc_vt()->txn(a, NULL, 0, &op, 1, NULL, 0, &ok, NULL, &err), GS_ERROR);
    int64_t id;
    cr_assert_eq(cc_vt()->lease_grant(a, 1000, &id, &err), GS_ERROR);
    cr_assert_lt(now_ms() - t0, 2000, "calls after stop fail fast");

    cc_put(b, "st/3", "3", 0);
    cr_assert(cc_wait_events(&wb, 2, WAIT_MS));
    cr_assert_eq(cc_events(&wa), 1, "no callback after stop");
    cr_assert_eq(wa.after_end, 0);

    /* start again: usable, and its old watches stay ended. */
    memset(&err, 0, sizeof err);
    cr_assert_eq(cc_vt()->start(a, &err), GS_OK, "%s %s", err.code, err.message);
    cr_assert_eq(cc_get(a, "st/3", NULL), 1);
    cc_put(b, "st/4", "4", 0);
    cr_assert(cc_wait_events(&wb, 3, WAIT_MS));
    cr_assert_eq(cc_events(&wa), 1);
    cc_end_watch(b, idb, &wb);
    cc_close(a);
    cc_close(b);
}

CC_TEST(txn_refusals)
{
    char pfx[128];
    void *a = cc_open(cc_prefix(pfx, sizeof pfx, "refuse"));
    gs_error err;
    int ok;
    memset(&err, 0, sizeof err);
    gs_op dup[2] = {cc_put_op("r/k", "1", 0), cc_put_op("r/k", "2", 0)};
    cr_assert_eq(cc_vt()->txn(a, NULL, 0, dup, 2, NULL, 0, &ok, NULL, &err), GS_ERROR);
    cr_assert(strstr(err.message, "twice"), "%s", err.message);
    gs_op dup2[2] = {cc_put_op("r/k", "1", 0), cc_del_op("r/k")};
    cr_assert_eq(cc_vt()->txn(a, NULL, 0, dup2, 2, NULL, 0, &ok, NULL, &err), GS_ERROR);
    cr_assert_eq(cc_get(a, "r/k", NULL), 0, "a refused txn changes nothing");

    /* The same key in the success and the failure branch is fine. */
    gs_op s = cc_put_op("r/k", "s", 0), f = cc_put_op("r/k", "f", 0);
    cr_assert_eq(cc_txn(a, NULL, 0, &s, 1, &f, 1, NULL), 1);

    static gs_op many[129];
    static char keys[129][16];
    for (int i = 0; i < 129; i++) {
        snprintf(keys[i], sizeof keys[i], "r/m%d", i);
        many[i] = cc_put_op(keys[i], "x", 0);
    }
    cr_assert_eq(cc_vt()->txn(a, NULL, 0, many, 129, NULL, 0, &ok, NULL, &err), GS_ERROR);
    cr_assert_eq(cc_txn(a, NULL, 0, many, 128, NULL, 0, NULL), 1, "128 ops are allowed");

    int64_t id;
    cr_assert_eq(cc_vt()->lease_grant(a, 0, &id, &err), GS_ERROR, "a ttl of 0 is refused");
    cr_assert_eq(cc_vt()->lease_grant(a, -5, &id, &err), GS_ERROR);
    cc_close(a);
}

#endif
