/*
 * Coordinator mode in one process (spec 03 "Coordinator-Backed Failover"): three engines over
 * the built-in memory transport and the built-in memory coordinator. The group registers and
 * syncs; writes wait for a majority; a replica refuses writes with STALE_PRIMARY and the
 * current primary in the details; the primary's departure promotes an in-sync replica at the
 * next term without losing an acknowledged write; a returning former primary rejoins, or is
 * quarantined when it holds writes the group never acknowledged; stale-term batches are
 * refused; an unreachable coordinator fails writes closed; a lagging replica leaves the
 * in-sync set so majority writes go on; read concerns. The real-etcd, real-process versions
 * of these are tests/integration/test_failover_etcd.py.
 */
#include "repl_harness.h"

#include "repl/codec.h"

#include <gatestream/coordinator.h>
#include <stdatomic.h>
#include <stdlib.h>

H_REPL_SUITE(repl_coord, 240, GS_LOG_ERROR)

/* ---- the memory coordinator, wrapped so a test can make it unreachable ---- */

static atomic_int coord_down;
static const gs_coordinator_vtable *mem_vt;

#define DOWN(err)                                                                                  \
    (atomic_load(&coord_down)                                                                      \
         ? gs_error_set(err, 0, "COORDINATOR_UNAVAILABLE", "the test cut the coordinator off")     \
         : GS_OK)

static gs_status w_start(void *i, gs_error *err)
{
    return DOWN(err) ? GS_ERROR : mem_vt->start(i, err);
}
static gs_status w_range(void *i, const uint8_t *k, size_t kl, int p, gs_kv_visit_fn v, void *u,
                         int64_t *rev, gs_error *err)
{
    return DOWN(err) ? GS_ERROR : mem_vt->range(i, k, kl, p, v, u, rev, err);
}
static gs_status w_txn(void *i, const gs_compare *c, size_t nc, const gs_op *s, size_t ns,
                       const gs_op *f, size_t nf, int *ok, int64_t *rev, gs_error *err)
{
    return DOWN(err) ? GS_ERROR : mem_vt->txn(i, c, nc, s, ns, f, nf, ok, rev, err);
}
static gs_status w_grant(void *i, int64_t ttl, int64_t *id, gs_error *err)
{
    return DOWN(err) ? GS_ERROR : mem_vt->lease_grant(i, ttl, id, err);
}
static gs_status w_keep(void *i, int64_t id, int64_t *left, gs_error *err)
{
    return DOWN(err) ? GS_ERROR : mem_vt->lease_keepalive(i, id, left, err);
}
static gs_status w_revoke(void *i, int64_t id, gs_error *err)
{
    return DOWN(err) ? GS_ERROR : mem_vt->lease_revoke(i, id, err);
}
static gs_status w_watch(void *i, const uint8_t *p, size_t pl, int64_t rev, gs_watch_fn fn, void *u,
                         uint64_t *id, gs_error *err)
{
    return DOWN(err) ? GS_ERROR : mem_vt->watch(i, p, pl, rev, fn, u, id, err);
}
static void w_unwatch(void *i, uint64_t id)
{
    mem_vt->unwatch(i, id);
}
static void w_stop(void *i)
{
    mem_vt->stop(i);
}
static void w_destroy(void *i)
{
    mem_vt->destroy(i);
}
static gs_status w_create(const gs_host *h, const void *cfg, void **inst, gs_error *err)
{
    return mem_vt->create(h, cfg, inst, err);
}

static gs_coordinator_vtable wrapped = {
    .struct_size = sizeof(gs_coordinator_vtable),
    .create = w_create,
    .start = w_start,
    .stop = w_stop,
    .destroy = w_destroy,
    .range = w_range,
    .txn = w_txn,
    .lease_grant = w_grant,
    .lease_keepalive = w_keep,
    .lease_revoke = w_revoke,
    .watch = w_watch,
    .unwatch = w_unwatch,
};

typedef struct cnode {
    tnode t;
    gs_plugin *cp;
    gs_cfg_doc *cdoc;
    gs_cfg_arena carena;
    void *ccfg;
    void *cinst;
    const char *role;
} cnode;

static const char *const VOTERS[] = {"node-a", "node-b", "node-c"};
static int forwarding; /* write_forwarding for the nodes a test starts */

static void cnode_coord(cnode *n, const char *store)
{
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_plugin_load_builtin("memory", "memory", GS_KIND_COORDINATOR, &n->cp, &err),
                 GS_OK, "%s", err.message);
    cr_assert(n->cp, "the memory coordinator is built in");
    mem_vt = n->cp->desc->vtable;
    char y[128];
    snprintf(y, sizeof y, "store: %s\n", store);
    const gs_plugin_descriptor *d = n->cp->desc;
    cr_assert_eq(gs_cfg_load_string(y, strlen(y), "coord.yaml", &n->cdoc, &err), GS_OK);
    n->ccfg = gs_calloc(1, d->config_struct_size ? d->config_struct_size : 1);
    cr_assert_eq(gs_cfg_fill(n->cdoc, n->cdoc->root, "coord", d->config_keys, d->config_key_count,
                             d->config_key_size, n->ccfg, &n->carena, &err),
                 GS_OK, "%s", err.message);
    cr_assert_eq(wrapped.create(&h_host, n->ccfg, &n->cinst, &err), GS_OK, "%s", err.message);
}

static void cnode_start(cnode *n, const char *bus, const char *role, const char *store)
{
    if (!n->cinst)
        cnode_coord(n, store);
    n->role = role;
    static gs_repl_peer_cfg peers[3][2];
    int self = n->t.id[5] - 'a';
    size_t k = 0;
    char list[64] = "";
    for (int i = 0; i < 3; i++) {
        if (i == self)
            continue;
        peers[self][k].id = VOTERS[i];
        peers[self][k].role = NULL;
        k++;
        strcat(list, list[0] ? ", " : "");
        strcat(list, VOTERS[i]);
    }
    char y[256];
    snprintf(y, sizeof y, "bus: %s\npeers: [%s]\n", bus, list);
    static gs_authority_options ao[3];
    memset(&ao[self], 0, sizeof ao[self]);
    ao[self].node_id = n->t.id;
    ao[self].cluster_id = "test";
    ao[self].group_id = "main";
    ao[self].endpoint = self == 0   ? "http://127.0.0.1:1"
                        : self == 1 ? "http://127.0.0.1:2"
                                    : "http://127.0.0.1:3";
    ao[self].voters = VOTERS;
    ao[self].nvoters = 3;
    ao[self].bootstrap_primary = strcmp(role, "primary") == 0;
    ao[self].session_ttl_ms = 1000;
    ao[self].controller = 1;
    ao[self].controller_lease_ttl_ms = 1000;
    ao[self].controller_tick_ms = 100;
    ao[self].vt = &wrapped;
    ao[self].inst = n->cinst;
    gs_repl_options o;
    gs_repl_options_default(&o);
    o.batch_interval_ms = 20;
    o.ack_timeout_ms = 500;
    o.sync_ack_timeout_ms = 5000;
    o.write_concern = "majority";
    o.write_concern_timeout_ms = 4000;
    o.in_sync_timeout_ms = 500;
    o.write_forwarding = forwarding;
    o.coordinator = &ao[self];
    tnode_start(&n->t, role, peers[self], 2, y, &o);
}

static void cnode_stop(cnode *n)
{
    tnode_stop(&n->t);
}

static void cnode_close(cnode *n)
{
    tnode_close(&n->t);
    if (n->cinst)
        wrapped.destroy(n->cinst);
    n->cinst = NULL;
    gs_cfg_arena_free(&n->carena);
    gs_cfg_free(n->cdoc);
    n->cdoc = NULL;
    gs_free(n->ccfg);
    n->ccfg = NULL;
    gs_plugin_unload(n->cp);
    n->cp = NULL;
}

static void open3(cnode n[3])
{
    memset(n, 0, 3 * sizeof *n);
    tnode_open(&n[0].t, dir, "node-a");
    tnode_open(&n[1].t, dir, "node-b");
    tnode_open(&n[2].t, dir, "node-c");
}

static void close3(cnode n[3])
{
    for (int i = 0; i < 3; i++)
        cnode_close(&n[i]);
}

/* The /db/{id}/cluster body of n, parsed. */
static json_t *cluster(cnode *n)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_repl_cluster_json(n->t.e, "main", &b);
    json_error_t je;
    json_t *j = json_loads(b.data, 0, &je);
    cr_assert_not_null(j, "cluster json: %s", b.data);
    gs_buf_free(&b);
    return j;
}

/* Wait until n reports `primary` as the primary with a term > min_term, in-sync members
 * `in_sync` of them; returns the term. */
static int64_t wait_primary(cnode *n, const char *primary, int64_t min_term, int64_t timeout_ms)
{
    int64_t deadline = gs_test_now_ms() + timeout_ms;
    while (gs_test_now_ms() < deadline) {
        json_t *j = cluster(n);
        const char *p =
            json_string_value(json_object_get(json_object_get(j, "currentPrimary"), "nodeId"));
        int64_t term = atoll(json_string_value(json_object_get(j, "primaryTerm")) ?: "0");
        int ok = p && (!primary || strcmp(p, primary) == 0) && term > min_term;
        json_decref(j);
        if (ok)
            return term;
        usleep(10000); /* polling a condition, bounded by the deadline */
    }
    cr_assert_fail("%s never saw primary %s above term %lld", n->t.id, primary ? primary : "*",
                   (long long)min_term);
    return 0;
}

static gs_status cwrite(cnode *n, const char *sql, gs_error *err)
{
    gs_error_init(err);
    return submit_wait(n->t.db, GS_DB_EXECUTE, sql, NULL, NULL, NULL, err, NULL);
}

/* Retry a majority write on n until it is accepted (a new primary's in-sync set settling). */
static void write_eventually(cnode *n, const char *sql, int64_t timeout_ms)
{
    int64_t deadline = gs_test_now_ms() + timeout_ms;
    gs_error err;
    while (gs_test_now_ms() < deadline) {
        if (cwrite(n, sql, &err) == GS_OK)
            return;
        usleep(20000); /* polling a condition, bounded by the deadline */
    }
    cr_assert_fail("'%s' on %s never succeeded: %s %s", sql, n->t.id, err.code, err.message);
}

static int count_rows(cnode *n)
{
    char *json = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(submit_wait(n->t.db, GS_DB_QUERY, "SELECT count(*) AS n FROM items", NULL, NULL,
                             NULL, &err, &json),
                 GS_OK, "%s", err.message);
    json_error_t je;
    json_t *j = json_loads(json, 0, &je);
    int c = (int)json_integer_value(json_object_get(json_array_get(j, 0), "n"));
    json_decref(j);
    free(json);
    return c;
}

static int wait_rows(cnode *n, int want, int64_t timeout_ms)
{
    int64_t deadline = gs_test_now_ms() + timeout_ms;
    while (gs_test_now_ms() < deadline) {
        if (count_rows(n) == want)
            return 1;
        usleep(10000); /* polling a condition, bounded by the deadline */
    }
    return count_rows(n) == want;
}

static void in_sync_wait(cnode *n, size_t want, int64_t timeout_ms)
{
    int64_t deadline = gs_test_now_ms() + timeout_ms;
    size_t have = 0;
    while (gs_test_now_ms() < deadline) {
        json_t *j = cluster(n);
        json_t *eps = json_object_get(j, "readEndpoints");
        have = 0;
        for (size_t i = 0; i < json_array_size(eps); i++)
            have += json_array_size(json_object_get(json_array_get(eps, i), "readConcerns")) > 1;
        json_decref(j);
        if (have == want)
            return;
        usleep(10000); /* polling a condition, bounded by the deadline */
    }
    json_t *j = cluster(n);
    char *text = json_dumps(j, 0);
    json_decref(j);
    cr_assert_fail("%s: %zu in-sync nodes, wanted %zu: %s", n->t.id, have, want, text);
}

static void bootstrap(cnode n[3], const char *bus)
{
    exec_ok(n[0].t.db, "CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)");
    cnode_start(&n[0], bus, "primary", bus);
    cnode_start(&n[1], bus, "replica", bus);
    cnode_start(&n[2], bus, "replica", bus);
    wait_primary(&n[0], "node-a", 0, 10000);
    in_sync_wait(&n[0], 3, 20000);
}

Test(repl_coord, registers_syncs_and_writes_with_majority)
{
    cnode n[3];
    open3(n);
    bootstrap(n, "boot");
    gs_error err;
    for (int i = 1; i <= 20; i++) {
        char sql[96];
        snprintf(sql, sizeof sql, "INSERT INTO items (id, v) VALUES (%d, 'x')", i);
        cr_assert_eq(cwrite(&n[0], sql, &err), GS_OK, "%s %s", err.code, err.message);
    }
    /* majority (the default) means a replica holds every acknowledged write... and with both
     * replicas in sync, both do */
    cr_assert(wait_rows(&n[1], 20, 5000));
    cr_assert(wait_rows(&n[2], 20, 5000));
    /* a replica refuses writes with the primary in the details */
    cr_assert_eq(cwrite(&n[1], "INSERT INTO items (id) VALUES (99)", &err), GS_ERROR);
    cr_expect_str_eq(err.code, "STALE_PRIMARY");
    cr_expect(strstr(err.details, "\"nodeId\":\"node-a\"") != NULL, "%s", err.details);
    cr_expect(strstr(err.details, "\"primaryTerm\":\"1\"") != NULL, "%s", err.details);
    /* cluster status */
    json_t *j = cluster(&n[1]);
    cr_expect_str_eq(json_string_value(json_object_get(j, "role")), "replica");
    cr_expect_str_eq(json_string_value(json_object_get(j, "primaryTerm")), "1");
    cr_expect_str_eq(json_string_value(json_object_get(j, "health")), "healthy");
    cr_expect_eq(json_array_size(json_object_get(j, "readEndpoints")), 3);
    json_decref(j);
    /* read concerns: majority on an in-sync replica, linearizable only on the primary */
    cr_expect_eq(gs_repl_check_read(n[1].t.e, "majority", &err), GS_OK, "%s", err.message);
    cr_expect_eq(gs_repl_check_read(n[1].t.e, "linearizable", &err), GS_ERROR);
    cr_expect_str_eq(err.code, "READ_CONCERN_ERROR");
    cr_expect_eq(gs_repl_check_read(n[0].t.e, "linearizable", &err), GS_OK, "%s", err.message);
    close3(n);
}

Test(repl_coord, failover_keeps_every_acknowledged_write_and_the_old_primary_rejoins)
{
    cnode n[3];
    open3(n);
    bootstrap(n, "fail");
    gs_error err;
    for (int i = 1; i <= 50; i++) {
        char sql[96];
        snprintf(sql, sizeof sql, "INSERT INTO items (id, v) VALUES (%d, 'before')", i);
        cr_assert_eq(cwrite(&n[0], sql, &err), GS_OK, "%s %s", err.code, err.message);
    }
    /* the primary goes away (its session is deregistered) */
    cnode_stop(&n[0]);
    int64_t t = wait_primary(&n[1], NULL, 1, 15000);
    cr_expect_eq(t, 2);
    json_t *j = cluster(&n[1]);
    const char *np =
        json_string_value(json_object_get(json_object_get(j, "currentPrimary"), "nodeId"));
    cnode *p = strcmp(np, "node-b") == 0 ? &n[1] : &n[2];
    cnode *other = p == &n[1] ? &n[2] : &n[1];
    json_decref(j);
    /* no acknowledged write is lost; the new primary takes majority writes */
    cr_assert_eq(count_rows(p), 50);
    write_eventually(p, "INSERT INTO items (id, v) VALUES (51, 'after')", 15000);
    cr_assert(wait_rows(other, 51, 10000), "the other replica did not follow the new primary");
    /* the former primary returns with nothing local-only: it follows and is admitted again */
    cnode_start(&n[0], "fail", "primary", "fail");
    cr_assert(wait_rows(&n[0], 51, 15000), "the former primary did not catch up");
    in_sync_wait(p, 3, 20000);
    cr_assert_eq(cwrite(&n[0], "INSERT INTO items (id) VALUES (77)", &err), GS_ERROR);
    cr_expect_str_eq(err.code, "STALE_PRIMARY");
    close3(n);
}

Test(repl_coord, a_former_primary_with_local_only_writes_is_quarantined)
{
    cnode n[3];
    open3(n);
    bootstrap(n, "quar");
    gs_error err;
    cr_assert_eq(cwrite(&n[0], "INSERT INTO items (id) VALUES (1)", &err), GS_OK, "%s",
                 err.message);
    /* cut the replicas off the primary's stream, then write locally only (explicit opt-in) */
    tnode_control(&n[0].t, "partition node-a node-b");
    tnode_control(&n[0].t, "partition node-a node-c");
    json_t *local = json_pack("{s:s}", "level", "local");
    cr_assert_eq(submit_wait(n[0].t.db, GS_DB_EXECUTE, "INSERT INTO items (id) VALUES (2)", NULL,
                             NULL, local, &err, NULL),
                 GS_OK, "%s", err.message);
    json_decref(local);
    cnode_stop(&n[0]);
    tnode_control(&n[1].t, "heal");
    wait_primary(&n[1], NULL, 1, 15000);
    cnode_start(&n[0], "quar", "primary", "quar");
    /* it is faulted: no writes, no majority reads, health says why */
    int64_t deadline = gs_test_now_ms() + 15000;
    const char *code = "";
    while (gs_test_now_ms() < deadline) {
        if (cwrite(&n[0], "INSERT INTO items (id) VALUES (3)", &err) == GS_ERROR &&
            strcmp(err.code, "UNSAFE_RECOVERY_REQUIRED") == 0) {
            code = "UNSAFE_RECOVERY_REQUIRED";
            break;
        }
        usleep(20000); /* polling a condition, bounded by the deadline */
    }
    cr_expect_str_eq(code, "UNSAFE_RECOVERY_REQUIRED");
    cr_expect_eq(gs_repl_check_read(n[0].t.e, "majority", &err), GS_ERROR);
    json_t *j = cluster(&n[0]);
    cr_expect_str_eq(json_string_value(json_object_get(j, "healthReason")), "faulted");
    json_decref(j);
    /* an operator lifts the quarantine: the node syncs again, its local-only row is gone */
    gs_group_state g;
    cr_assert_eq(
        gs_group_maintenance(&wrapped, n[1].cinst, "test", "main", "node-a", "rejoin", &g, &err),
        GS_OK, "%s", err.message);
    cr_expect_not(gs_id_set_has(&g.faulted, "node-a"));
    cnode *p = strcmp(g.primary, "node-b") == 0 ? &n[1] : &n[2];
    in_sync_wait(p, 3, 20000);
    cr_assert_eq(count_rows(&n[0]), 1, "the local-only write survived the rejoin");
    close3(n);
}

Test(repl_coord, stale_term_batches_are_refused)
{
    cnode n[3];
    open3(n);
    bootstrap(n, "stale");
    gs_repl_counters before;
    gs_repl_get_counters(n[1].t.e, &before);
    /* a batch of term 0 (as a static-mode or stale primary would send) from node-a */
    gs_repl_message m;
    memset(&m, 0, sizeof m);
    m.kind = GS_RMSG_BATCH;
    m.batch.source_node_id = "node-a";
    m.batch.batch_id = "node-a-1000-1000";
    m.batch.from_seq = 1000;
    m.batch.to_seq = 1000;
    m.batch.checksum = "";
    uint8_t *bytes = NULL;
    size_t len = 0;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_repl_message_encode(&m, &bytes, &len, &err), GS_OK);
    cr_assert_eq(((const gs_repl_transport_vtable *)n[0].t.tp->desc->vtable)
                     ->send(n[0].t.tinst, "node-b", GS_REPL_MSG_REPLICATION, 0, bytes, len, &err),
                 GS_OK, "%s", err.message);
    gs_free(bytes);
    int64_t deadline = gs_test_now_ms() + 5000;
    gs_repl_counters after;
    do {
        gs_repl_get_counters(n[1].t.e, &after);
        if (after.rejected > before.rejected)
            break;
        usleep(5000); /* polling a condition, bounded by the deadline */
    } while (gs_test_now_ms() < deadline);
    cr_assert_gt(after.rejected, before.rejected);
    gs_repl_last_error(n[1].t.e, &err);
    cr_expect_str_eq(err.code, "STALE_PRIMARY");
    close3(n);
}

Test(repl_coord, an_unreachable_coordinator_fails_writes_closed_and_they_recover)
{
    cnode n[3];
    open3(n);
    bootstrap(n, "down");
    gs_error err;
    cr_assert_eq(cwrite(&n[0], "INSERT INTO items (id) VALUES (1)", &err), GS_OK, "%s",
                 err.message);
    atomic_store(&coord_down, 1);
    int64_t deadline = gs_test_now_ms() + 5000;
    int refused = 0;
    while (gs_test_now_ms() < deadline && !refused) {
        refused = cwrite(&n[0], "INSERT INTO items (v) VALUES ('x')", &err) == GS_ERROR &&
                  strcmp(err.code, "COORDINATOR_UNAVAILABLE") == 0;
        if (!refused)
            usleep(20000); /* polling a condition, bounded by the deadline */
    }
    atomic_store(&coord_down, 0);
    cr_assert(refused, "writes were not refused with COORDINATOR_UNAVAILABLE: %s", err.code);
    /* every session lapsed while the coordinator was away, so the group may have a new
     * primary: whichever it is takes majority writes again */
    wait_primary(&n[1], NULL, 0, 10000);
    int64_t deadline2 = gs_test_now_ms() + 15000;
    int ok = 0;
    while (!ok && gs_test_now_ms() < deadline2) {
        for (int i = 0; i < 3 && !ok; i++)
            ok = cwrite(&n[i], "INSERT INTO items (id) VALUES (1000)", &err) == GS_OK;
        if (!ok)
            usleep(20000); /* polling a condition, bounded by the deadline */
    }
    cr_assert(ok, "no node took writes again after the coordinator returned: %s", err.message);
    close3(n);
}

Test(repl_coord, a_lagging_replica_leaves_the_in_sync_set_and_majority_writes_go_on)
{
    cnode n[3];
    open3(n);
    bootstrap(n, "lag");
    gs_error err;
    tnode_control(&n[0].t, "partition node-a node-b");
    /* the write cannot complete while node-b is in the in-sync set without it: node-b is
     * removed from the set in the coordinator first (here at once: the link is down), then
     * the write completes with node-a and node-c */
    cr_assert_eq(cwrite(&n[0], "INSERT INTO items (id) VALUES (1)", &err), GS_OK, "%s %s", err.code,
                 err.message);
    in_sync_wait(&n[0], 2, 5000);
    cr_assert_eq(cwrite(&n[0], "INSERT INTO items (id) VALUES (2)", &err), GS_OK, "%s",
                 err.message);
    tnode_control(&n[0].t, "heal");
    cr_assert(wait_rows(&n[1], 2, 10000));
    in_sync_wait(&n[0], 3, 20000);
    close3(n);
}

Test(repl_coord, replicas_forward_writes_under_the_current_term_to_whichever_node_is_primary)
{
    forwarding = 1;
    cnode n[3];
    open3(n);
    bootstrap(n, "fwd");
    gs_error err;
    cr_assert_eq(cwrite(&n[1], "INSERT INTO items (id, v) VALUES (1, 'via b')", &err), GS_OK,
                 "%s %s", err.code, err.message);
    /* forwarded writes are answered at the group's concern: every in-sync node has it */
    cr_assert_eq(count_rows(&n[0]), 1);
    cr_assert(wait_rows(&n[2], 1, 5000));
    /* transactions are never forwarded */
    gs_error_init(&err);
    gs_repl_write_route route;
    cr_assert_eq(gs_repl_route_write(n[1].t.e, GS_DB_TRANSACTION, 1, &route, &err), GS_ERROR);
    cr_expect_str_eq(err.code, "STALE_PRIMARY");
    /* after a failover the surviving replica forwards to the new primary */
    cnode_stop(&n[0]);
    wait_primary(&n[1], NULL, 1, 15000);
    json_t *j = cluster(&n[1]);
    const char *np =
        json_string_value(json_object_get(json_object_get(j, "currentPrimary"), "nodeId"));
    cnode *other = strcmp(np, "node-b") == 0 ? &n[2] : &n[1];
    json_decref(j);
    write_eventually(other, "INSERT INTO items (id, v) VALUES (3, 'after failover')", 15000);
    cr_assert_eq(count_rows(other), 2);
    close3(n);
    forwarding = 0;
}
