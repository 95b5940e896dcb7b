/*
 * coordinators/memory against a fake host: dlopen gs_coordinator_memory.so, fill its config
 * struct through its own key table (as the core's config layer does), run the conformance
 * suite (coordinator_conformance.h) on a shared named store, then what is particular to the
 * memory store: key prefix normalisation, stores shared by name only and freed with their last
 * instance, history compaction making watches lost, callbacks calling the store, allocation
 * failures, and no leak (every test ends with zero live allocations of the fake host).
 *
 * Criterion runs each test in its own process, so the fake host and the loaded plugin are
 * process globals. Every wait is bounded.
 */
#include "plugin_test_host.h"

#include <gatestream/coordinator.h>

#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define CM_FILE "gs_coordinator_memory.so"

static struct {
    void *dl;
    const gs_plugin_descriptor *desc;
    const gs_coordinator_vtable *vt;
    gs_host host;
} T;

static const gs_coordinator_vtable *cc_vt(void)
{
    return T.vt;
}

/* ---- config through the plugin's key table ---- */

static const gs_config_key *key(const char *name)
{
    const gs_plugin_descriptor *d = T.desc;
    for (size_t i = 0; i < d->config_key_count; i++) {
        const gs_config_key *k =
            (const gs_config_key *)((const char *)d->config_keys + i * d->config_key_size);
        if (strcmp(k->name, name) == 0)
            return k;
    }
    cr_assert_fail("the memory coordinator has no key '%s'", name);
    return NULL;
}

static void set_str(void *cfg, const char *name, const char *v)
{
    const gs_config_key *k = key(name);
    cr_assert_eq(k->type, GS_CFG_STRING);
    memcpy((char *)cfg + k->offset, &v, sizeof v);
}

static void set_int(void *cfg, const char *name, int64_t v)
{
    const gs_config_key *k = key(name);
    cr_assert_eq(k->type, GS_CFG_INT);
    memcpy((char *)cfg + k->offset, &v, sizeof v);
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
    }
    return cfg;
}

static gs_status try_create(const char *store, const char *prefix, int64_t max_history, void **inst,
                            gs_error *err)
{
    void *cfg = config_defaults();
    if (store)
        set_str(cfg, "store", store);
    if (prefix)
        set_str(cfg, "key_prefix", prefix);
    if (max_history)
        set_int(cfg, "max_history", max_history);
    memset(err, 0, sizeof *err);
    gs_status rc = T.vt->create(&T.host, cfg, inst, err);
    free(cfg); /* create copied what it keeps */
    return rc;
}

static void *open_on(const char *store, const char *prefix, int64_t max_history)
{
    void *inst = NULL;
    gs_error err;
    cr_assert_eq(try_create(store, prefix, max_history, &inst, &err), GS_OK, "create: %s %s",
                 err.code, err.message);
    cr_assert_eq(T.vt->start(inst, &err), GS_OK, "start: %s %s", err.code, err.message);
    return inst;
}

/* ---- the conformance hooks ---- */

static void cc_init(void)
{
    pt_init();
    pt_host_init(&T.host, NULL);
    T.desc = pt_load_descriptor(CM_FILE, &T.dl);
    cr_assert_eq(T.desc->kind, GS_KIND_COORDINATOR);
    T.vt = T.desc->vtable;
}

static void cc_fini(void)
{
    long live = atomic_load(&PT.live_allocs);
    pt_fini();
    cr_assert_eq(live, 0, "%ld allocations of the fake host still live (leak)", live);
}

static void *cc_open(const char *prefix)
{
    return open_on("conformance", prefix, 0);
}

static void cc_close(void *inst)
{
    T.vt->stop(inst);
    T.vt->destroy(inst);
}

#define CC_SUITE coordinator_memory
#define CC_SHORT_TTL_MS 300
#define CC_EXCLUSIVE 1
#include "coordinator_conformance.h"

#define MEM_TEST(name) Test(coordinator_memory, name, .init = cc_init, .fini = cc_fini)

/* ========================================================================================== */
/* The memory store in particular                                                             */

MEM_TEST(descriptor_and_keys)
{
    const gs_plugin_descriptor *d = T.desc;
    cr_assert_str_eq(d->name, "memory");
    cr_assert_eq(d->abi_major, GS_ABI_MAJOR);
    cr_assert_geq(d->abi_minor, 4, "coordinators need ABI 1.4");
    cr_assert_str_eq(d->build_signature, GS_BUILD_SIGNATURE);
    cr_assert_eq(T.vt->struct_size, sizeof(gs_coordinator_vtable));
    const gs_config_key *k = key("store");
    cr_assert_str_eq(k->default_value, "default");
    k = key("key_prefix");
    cr_assert_str_eq(k->default_value, "gatestream/");
    k = key("max_history");
    cr_assert_lt(k->min, k->max);
    for (size_t i = 0; i < d->config_key_count; i++) {
        const gs_config_key *ki =
            (const gs_config_key *)((const char *)d->config_keys + i * d->config_key_size);
        cr_assert_lt(ki->offset, d->config_struct_size);
        cr_assert_not_null(ki->help);
    }
    /* No config struct at all: the defaults. */
    gs_error err;
    void *inst = NULL;
    cr_assert_eq(T.vt->create(&T.host, NULL, &inst, &err), GS_OK);
    cr_assert_eq(T.vt->start(inst, &err), GS_OK);
    T.vt->stop(inst);
    T.vt->destroy(inst);
}

MEM_TEST(key_prefix_normalised_or_refused)
{
    void *a = open_on("norm", "gs", 0);
    void *b = open_on("norm", "gs///", 0);
    void *c = open_on("norm", "gs/", 0);
    void *root = open_on("norm", "other/", 0);
    cc_put(a, "k", "from a", 0);
    cc_kv kv;
    cr_assert_eq(cc_get(b, "k", &kv), 1, "\"gs\" and \"gs///\" are the same prefix \"gs/\"");
    cr_assert(cc_kv_is(&kv, "k", "from a"));
    cr_assert_eq(cc_get(c, "k", NULL), 1);
    cr_assert_eq(cc_get(root, "k", NULL), 0);
    cc_close(a);
    cc_close(b);
    cc_close(c);
    cc_close(root);

    static const char *bad[] = {"", "/", "////"};
    for (size_t i = 0; i < 3; i++) {
        gs_error err;
        void *inst = (void *)1;
        cr_assert_eq(try_create("norm", bad[i], 0, &inst, &err), GS_ERROR, "'%s'", bad[i]);
        cr_assert_str_eq(err.code, "INVALID_CONFIG");
        cr_assert(strstr(err.message, "key_prefix"), "%s", err.message);
        cr_assert_null(inst);
    }
    gs_error err;
    void *inst;
    cr_assert_eq(try_create("", "x/", 0, &inst, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert_eq(try_create("norm", "x/", 10, &inst, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "max_history"), "%s", err.message);
}

MEM_TEST(stores_are_shared_by_name_and_freed_with_the_last_instance)
{
    void *a1 = open_on("s1", "p/", 0);
    void *a2 = open_on("s1", "p/", 0);
    void *b1 = open_on("s2", "p/", 0);
    int64_t ra = cc_put(a1, "k", "s1", 0);
    cr_assert_eq(cc_get(a2, "k", NULL), 1);
    cr_assert_eq(cc_get(b1, "k", NULL), 0, "another store is another key space");
    int64_t rb = cc_put(b1, "k", "s2", 0);
    cr_assert_eq(ra, 1);
    cr_assert_eq(rb, 1, "revisions are per store");
    cc_close(a1);
    cr_assert_eq(cc_get(a2, "k", NULL), 1, "the store lives while an instance is joined");
    cc_close(a2);
    void *a3 = open_on("s1", "p/", 0);
    cc_list l;
    cr_assert_eq(cc_range(a3, "", 1, &l), 0, "a store made again starts empty");
    cr_assert_eq(l.n, 0);
    cc_close(a3);
    cc_close(b1);
}

MEM_TEST(compaction_makes_watches_lost)
{
    void *a = open_on("compact", "p/", 1024);
    static cc_watcher slow, late, recent;
    slow.gate_closed = 1;
    uint64_t id_slow = cc_watch(a, "h/", 0, &slow);
    int64_t first = cc_put(a, "h/k", "0", 0);
    cr_assert(wait_until(cc_pred_in_gate, &slow, WAIT_MS));
    char v[16];
    int64_t last = 0;
    for (int i = 1; i <= 1500; i++) {
        snprintf(v, sizeof v, "%d", i);
        last = cc_put(a, "h/k", v, 0);
    }
    /* Revision 1 is gone now: a watch asking for it is lost at once; a recent start
     * revision is still kept. (Both are served once the held callback returns: one delivery
     * thread per store.) */
    uint64_t id_late = cc_watch(a, "h/", first, &late);
    uint64_t id_recent = cc_watch(a, "h/", last - 10, &recent);
    pthread_mutex_lock(&PT.lock);
    slow.gate_closed = 0;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
    cr_assert(cc_wait_events(&late, 1, WAIT_MS));
    cr_assert_eq(late.ev[0].type, GS_WATCH_LOST);
    cr_assert(cc_wait_events(&recent, 11, WAIT_MS));
    cr_assert_eq(recent.lost, 0);
    cr_assert_eq(recent.ev[0].rev, last - 10);
    cr_assert_eq(recent.ev[10].rev, last);

    /* The slow watch: its next events were compacted while it was held. */
    cr_assert(cc_wait_events(&slow, 2, WAIT_MS));
    cr_assert_eq(slow.ev[0].type, GS_WATCH_PUT);
    cr_assert_eq(slow.ev[1].type, GS_WATCH_LOST, "the slow watch is lost, not silently skipped");
    cc_put(a, "h/k", "after", 0);
    cr_assert(cc_wait_events(&recent, 12, WAIT_MS));
    cr_assert_eq(cc_events(&slow), 2, "nothing after GS_WATCH_LOST");
    cr_assert_eq(cc_events(&late), 1);
    cr_assert_eq(slow.after_lost + late.after_lost, 0);
    /* Unwatching a lost watch is harmless. */
    T.vt->unwatch(a, id_slow);
    T.vt->unwatch(a, id_late);
    cc_end_watch(a, id_recent, &recent);
    cc_close(a);
}

/* A watch callback that uses the store, and ends another watch, from the delivery thread. */
static struct {
    void *inst;
    uint64_t other_id;
    int seen;
    int range_rc, txn_rc, found;
} CB;

static void cb_calls_store(void *user, int type, const gs_kv *kv, int64_t rev)
{
    (void)user;
    (void)rev;
    if (type != GS_WATCH_PUT || kv->key_len != 3 || memcmp(kv->key, "c/a", 3) != 0)
        return;
    cc_list l;
    memset(&l, 0, sizeof l);
    gs_error err;
    int rc = T.vt->range(CB.inst, (const uint8_t *)"c/", 2, 1, cc_visit, &l, NULL, &err);
    gs_op op = cc_put_op("c/from-callback", "1", 0);
    int ok = 0;
    int rc2 = T.vt->txn(CB.inst, NULL, 0, &op, 1, NULL, 0, &ok, NULL, &err);
    T.vt->unwatch(CB.inst, CB.other_id);
    pthread_mutex_lock(&PT.lock);
    CB.range_rc = rc;
    CB.txn_rc = rc2;
    CB.found = l.n;
    CB.seen = 1;
    pthread_cond_broadcast(&PT.cond);
    pthread_mutex_unlock(&PT.lock);
}

static int pred_cb_seen(void *p)
{
    (void)p;
    return CB.seen;
}

MEM_TEST(callbacks_may_call_the_store_and_end_other_watches)
{
    void *a = open_on("cb", "p/", 0);
    CB.inst = a;
    static cc_watcher other, witness;
    CB.other_id = cc_watch(a, "c/", 0, &other);
    gs_error err;
    uint64_t id;
    cr_assert_eq(T.vt->watch(a, (const uint8_t *)"c/", 2, 0, cb_calls_store, NULL, &id, &err),
                 GS_OK);
    uint64_t wid = cc_watch(a, "c/", 0, &witness);
    cc_put(a, "c/a", "1", 0);
    cr_assert(wait_until(pred_cb_seen, NULL, WAIT_MS), "the callback never finished");
    cr_assert_eq(CB.range_rc, GS_OK);
    cr_assert_eq(CB.txn_rc, GS_OK);
    cr_assert_eq(CB.found, 1);
    cr_assert(cc_wait_events(&witness, 2, WAIT_MS), "the callback's own put is delivered");
    int before = cc_events(&other);
    cc_put(a, "c/b", "2", 0);
    cr_assert(cc_wait_events(&witness, 3, WAIT_MS));
    cr_assert_eq(cc_events(&other), before, "the watch ended from a callback gets nothing more");
    cr_assert_leq(before, 2);
    T.vt->unwatch(a, id);
    cc_end_watch(a, wid, &witness);
    cc_close(a);
}

MEM_TEST(allocation_failures_change_nothing)
{
    /* create fails cleanly when memory runs out. */
    atomic_store(&PT.fail_size_min, 1);
    gs_error err;
    void *inst = (void *)1;
    cr_assert_eq(try_create("oom", "p/", 0, &inst, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INTERNAL_ERROR");
    cr_assert_null(inst);
    atomic_store(&PT.fail_size_min, 0);
    cr_assert_eq(atomic_load(&PT.live_allocs), 0, "a failed create leaves nothing behind");

    void *a = open_on("oom", "p/", 0);
    int64_t r = cc_put(a, "k", "small", 0);
    static uint8_t big[1 << 20];
    memset(big, 'b', sizeof big);
    gs_op ops[2] = {cc_put_op("k2", "x", 0),
                    {.type = GS_OP_PUT,
                     .key = (const uint8_t *)"k",
                     .key_len = 1,
                     .value = big,
                     .value_len = sizeof big}};
    atomic_store(&PT.fail_size_min, sizeof big);
    int ok;
    cr_assert_eq(T.vt->txn(a, NULL, 0, ops, 2, NULL, 0, &ok, NULL, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INTERNAL_ERROR");
    atomic_store(&PT.fail_size_min, 0);
    cc_kv kv;
    cr_assert_eq(cc_get(a, "k2", NULL), 0, "all or nothing");
    cr_assert_eq(cc_get(a, "k", &kv), 1);
    cr_assert(cc_kv_is(&kv, "k", "small"));
    cc_list l;
    cr_assert_eq(cc_range(a, "", 1, &l), r, "no revision was used");
    cc_close(a);
}

MEM_TEST(calls_before_start_fail)
{
    gs_error err;
    void *inst;
    cr_assert_eq(try_create("early", "p/", 0, &inst, &err), GS_OK);
    cc_list l;
    cr_assert_eq(T.vt->range(inst, (const uint8_t *)"", 0, 1, cc_visit, &l, NULL, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "COORDINATOR_UNAVAILABLE");
    cr_assert(strstr(err.message, "not started"), "%s", err.message);
    T.vt->destroy(inst); /* destroy without start or stop */
}
