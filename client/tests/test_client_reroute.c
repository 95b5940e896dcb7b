/* Subscriptions follow routing changes in coordinator mode (06-client: "When routing metadata
 * changes in topology mode, active subscriptions are re-established on the new endpoint; a
 * migrated subscription restarts live"). The decision (white-box, a fake discovery responder
 * naming made-up URLs): a refresh with the same metadata changes nothing, one with another
 * fingerprint bumps the route generation, an endpoint still listed keeps its subscriptions,
 * one no longer listed moves them to the endpoint a read now goes to, and routing naming no
 * endpoint fails them. Then end to end with two real gatestream servers standing for two
 * nodes and the fake responder as the coordinator's view: a subscription moves when the
 * metadata drops its node (the node still up, as when drained), or when its node is killed
 * (kept while still listed, moved once the metadata drops it), reports RESYNC with
 * `migrated` through the same callback and handle, and receives rows written on the new
 * node; routing naming no endpoint ends it with ROUTING_ERROR. Every wait is bounded. */
#include <criterion/criterion.h>

#include <gatestream/client.h>

#include "cl_internal.h"
#include "support.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ---- the coordinator's view: GET /db/main/cluster from a fake responder ---- */

typedef struct coord {
    pthread_mutex_t mu;
    char cluster[1024];
} coord;

static void starter(void *user, const char *method, const char *path, const char *body,
                    gst_reply *reply)
{
    (void)method;
    (void)body;
    coord *co = user;
    if (strcmp(path, "/db/main/cluster") != 0)
        return;
    pthread_mutex_lock(&co->mu);
    reply->status = 200;
    snprintf(reply->body, sizeof reply->body, "%s", co->cluster);
    pthread_mutex_unlock(&co->mu);
}

/* primary: a URL or NULL; reads: up to two URLs (NULL = fewer). */
static void set_cluster(coord *co, const char *primary, const char *r1, const char *r2,
                        const char *term)
{
    char p[256], reads[512] = "";
    if (primary)
        snprintf(p, sizeof p, "{\"nodeId\":\"p\",\"endpoint\":\"%s\"}", primary);
    else
        snprintf(p, sizeof p, "null");
    const char *rs[2] = {r1, r2};
    for (int i = 0; i < 2; i++) {
        if (!rs[i])
            continue;
        size_t n = strlen(reads);
        snprintf(reads + n, sizeof reads - n,
                 "%s{\"nodeId\":\"n%d\",\"endpoint\":\"%s\",\"readConcerns\":[\"local\","
                 "\"majority\"]}",
                 n ? "," : "", i, rs[i]);
    }
    pthread_mutex_lock(&co->mu);
    snprintf(co->cluster, sizeof co->cluster,
             "{\"databaseId\":\"main\",\"replicationGroupId\":\"g\",\"role\":\"replica\","
             "\"currentPrimary\":%s,\"primaryTerm\":\"%s\",\"readEndpoints\":[%s],"
             "\"health\":\"healthy\",\"healthReason\":\"in-sync\"}",
             p, term, reads);
    pthread_mutex_unlock(&co->mu);
}

static gs_client *coordinator_client(gst_fake *f, gs_client_transport t)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", gst_fake_port(f));
    const char *urls[] = {url};
    gs_client_config cfg;
    gs_client_config_init(&cfg);
    cfg.transport = t;
    cfg.mode = GS_CLIENT_MODE_COORDINATOR;
    cfg.reconnect_interval_ms = 100;
    cfg.reconnect_max_ms = 400;
    cfg.request_timeout_ms = 10000;
    gs_client *c;
    gs_error err;
    cr_assert_eq(gs_client_open(urls, 1, &cfg, &c, &err), GS_OK, "%s: %s", err.code, err.message);
    return c;
}

static cl_endpoint *endpoint(gs_client *c, const char *url)
{
    gs_error err;
    cl_endpoint *ep = cl_client_endpoint(c, url, &err);
    cr_assert(ep, "%s", err.message);
    return ep;
}

Test(client_reroute, cluster_serves_lists_primary_and_readable_endpoints)
{
    coord co = {PTHREAD_MUTEX_INITIALIZER, ""};
    gst_fake *f = gst_fake_start(starter, &co);
    gs_client *c = coordinator_client(f, GS_CLIENT_TRANSPORT_HTTP);
    const char *a = "http://127.0.0.1:1", *b = "http://127.0.0.1:2", *x = "http://127.0.0.1:3";
    set_cluster(&co, a, NULL, b, "1");
    json_t *j = json_loads(co.cluster, 0, NULL);
    cr_assert(j);
    cl_cluster cl;
    gs_error err;
    cr_assert_eq(cl_cluster_parse(c, "main", j, &cl, &err), GS_OK, "%s", err.message);
    json_decref(j);
    cr_assert_eq(cl_cluster_serves(&cl, endpoint(c, a)), 1, "the primary serves");
    cr_assert_eq(cl_cluster_serves(&cl, endpoint(c, b)), 1, "a readable endpoint serves");
    cr_assert_eq(cl_cluster_serves(&cl, endpoint(c, x)), 0, "an unlisted endpoint does not");
    cl_cluster_clear(&cl);
    cr_assert_eq(cl_cluster_serves(&cl, endpoint(c, a)), 0, "unknown routing serves nothing");
    gs_client_close(c);
    gst_fake_stop(f);
}

Test(client_reroute, decision_follows_the_fingerprint)
{
    coord co = {PTHREAD_MUTEX_INITIALIZER, ""};
    const char *a = "http://127.0.0.1:1", *b = "http://127.0.0.1:2";
    set_cluster(&co, a, a, b, "1");
    gst_fake *f = gst_fake_start(starter, &co);
    gs_client *c = coordinator_client(f, GS_CLIENT_TRANSPORT_HTTP);
    gs_error err;
    gs_client_db *db = gs_client_database(c, "main", &err);
    cl_endpoint *ea = endpoint(c, a), *eb = endpoint(c, b), *to = NULL;
    /* routing not known yet: nothing moves (the next refresh decides) */
    cr_assert_eq(cl_route_reroute(db, ea, &to, &err), CL_REROUTE_KEEP);
    char route[128];
    cr_assert_eq(gs_client_route(db, 0, route, sizeof route, &err), GS_OK, "%s", err.message);
    cr_assert_str_eq(route, a, "read preference primary");
    unsigned gen = atomic_load(&db->route_gen);
    /* the same metadata again: no change */
    int changed = -1;
    cr_assert_eq(cl_route_refresh(db, &changed, &err), GS_OK, "%s", err.message);
    cr_assert_eq(changed, 0);
    cr_assert_eq(atomic_load(&db->route_gen), gen, "same fingerprint, same generation");
    cr_assert_eq(cl_route_reroute(db, ea, &to, &err), CL_REROUTE_KEEP, "a still serves");
    /* the primary moves to b; a stays listed as readable: subscriptions on a stay */
    set_cluster(&co, b, a, b, "2");
    cr_assert_eq(cl_route_refresh(db, &changed, &err), GS_OK, "%s", err.message);
    cr_assert_eq(changed, 1, "another term is another fingerprint");
    cr_assert_eq(atomic_load(&db->route_gen), gen + 1);
    cr_assert_eq(cl_route_reroute(db, ea, &to, &err), CL_REROUTE_KEEP, "a is still readable");
    /* a leaves the metadata (killed, drained): its subscriptions move to where a read goes */
    set_cluster(&co, b, NULL, b, "2");
    cr_assert_eq(cl_route_refresh(db, &changed, &err), GS_OK, "%s", err.message);
    cr_assert_eq(changed, 1, "a read endpoint less is another fingerprint");
    cr_assert_eq(atomic_load(&db->route_gen), gen + 2);
    cr_assert_eq(cl_route_reroute(db, ea, &to, &err), CL_REROUTE_MOVE);
    cr_assert_eq(to, eb, "moved to the endpoint a read is routed to");
    cr_assert_eq(cl_route_reroute(db, eb, &to, &err), CL_REROUTE_KEEP, "b serves");
    /* no primary and no readable endpoint: nothing can take them */
    set_cluster(&co, NULL, NULL, NULL, "3");
    cr_assert_eq(cl_route_refresh(db, &changed, &err), GS_OK, "%s", err.message);
    cr_assert_eq(changed, 1);
    gs_error_init(&err);
    cr_assert_eq(cl_route_reroute(db, eb, &to, &err), CL_REROUTE_FAIL);
    cr_assert_str_eq(err.code, "ROUTING_ERROR");
    cr_assert(strstr(err.message, b), "the message names the endpoint left: %s", err.message);
    /* a failed refresh keeps the routing held */
    gst_fake_stop(f);
    cr_assert_neq(cl_route_refresh(db, &changed, &err), GS_OK);
    cr_assert_eq(changed, 0);
    pthread_mutex_lock(&db->mu);
    int known = db->cluster.known;
    pthread_mutex_unlock(&db->mu);
    cr_assert_eq(known, 1, "routing kept when no endpoint answers");
    gs_client_close(c);
}

Test(client_reroute, static_mode_never_reroutes)
{
    const char *urls[] = {"http://127.0.0.1:1", "http://127.0.0.1:2"};
    gs_client_config cfg;
    gs_client_config_init(&cfg);
    gs_client *c;
    gs_error err;
    cr_assert_eq(gs_client_open(urls, 2, &cfg, &c, &err), GS_OK, "%s", err.message);
    gs_client_db *db = gs_client_database(c, "main", &err);
    cl_endpoint *to = NULL;
    cr_assert_eq(cl_route_reroute(db, endpoint(c, urls[1]), &to, &err), CL_REROUTE_KEEP);
    int changed = -1;
    cr_assert_eq(cl_route_refresh(db, &changed, &err), GS_OK);
    cr_assert_eq(changed, 0);
    cr_assert_eq(atomic_load(&db->route_gen), 0);
    gs_client_close(c);
}

/* ---- end to end: two real servers as two nodes ---- */

static gst_server node1, node2;

static void make_table(gst_server *s)
{
    int status;
    char out[512];
    cr_assert_eq(gst_http(s->port, "POST", "/db/main/execute",
                          "{\"sql\":\"CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)\"}",
                          &status, out, sizeof out),
                 0);
    cr_assert_eq(status, 200, "%s", out);
}

static void start_nodes(void)
{
    cr_assert_eq(gst_server_start(&node1, NULL, NULL, NULL, 1), 0);
    cr_assert_eq(gst_server_start(&node2, NULL, NULL, NULL, 1), 0);
    make_table(&node1);
    make_table(&node2);
}

static void stop_nodes(void)
{
    gst_server_cleanup(&node1);
    gst_server_cleanup(&node2);
}

static void insert(gst_server *s, int id, const char *who)
{
    char body[256], out[512];
    int status;
    snprintf(body, sizeof body, "{\"sql\":\"INSERT INTO t (id, who) VALUES (%d, '%s')\"}", id, who);
    cr_assert_eq(gst_http(s->port, "POST", "/db/main/execute", body, &status, out, sizeof out), 0);
    cr_assert_eq(status, 200, "%s", out);
}

/* What the subscription's callback saw. */
typedef struct seen {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ids[64];
    int nids;
    int migrated;
    char endpoint[128];
    int resync_plain;
    int disconnected;
    int errors;
    char error_code[64];
    char error_msg[512];
    int after_error; /* events after the ERROR (must stay 0) */
} seen;

static void on_event(void *user, const gs_client_event *ev)
{
    seen *s = user;
    pthread_mutex_lock(&s->mu);
    if (s->errors)
        s->after_error++;
    switch (ev->kind) {
    case GS_CLIENT_EVENT_CHANGE: {
        long id = -1;
        for (size_t i = 0; i < ev->row.count; i++)
            if (!strcmp(ev->row.columns[i], "id") && ev->row.values[i].type == GS_VALUE_INT)
                id = (long)ev->row.values[i].u.i;
        if (s->nids < 64)
            s->ids[s->nids++] = (int)id;
        break;
    }
    case GS_CLIENT_EVENT_RESYNC:
        if (ev->migrated) {
            s->migrated++;
            snprintf(s->endpoint, sizeof s->endpoint, "%s", ev->endpoint ? ev->endpoint : "");
        } else {
            s->resync_plain++;
        }
        break;
    case GS_CLIENT_EVENT_DISCONNECTED: s->disconnected++; break;
    case GS_CLIENT_EVENT_ERROR:
        s->errors++;
        snprintf(s->error_code, sizeof s->error_code, "%s", ev->error ? ev->error->code : "");
        snprintf(s->error_msg, sizeof s->error_msg, "%s", ev->error ? ev->error->message : "");
        break;
    default: break;
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void seen_init(seen *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
}

static void seen_destroy(seen *s)
{
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

static int has_id_locked(seen *s, int id)
{
    for (int i = 0; i < s->nids; i++)
        if (s->ids[i] == id)
            return 1;
    return 0;
}

/* Wait (bounded) until cond(s, arg) holds; returns whether it did. */
static int wait_until(seen *s, int (*cond)(seen *, int), int arg, int timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    int ok = cond(s, arg);
    while (!ok && pthread_cond_timedwait(&s->cv, &s->mu, &dl) == 0)
        ok = cond(s, arg);
    ok = cond(s, arg);
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static int got_id(seen *s, int id)
{
    return has_id_locked(s, id);
}
static int got_migrated(seen *s, int n)
{
    return s->migrated >= n;
}
static int got_disconnected(seen *s, int n)
{
    return s->disconnected >= n;
}
static int got_error(seen *s, int n)
{
    return s->errors >= n;
}

typedef struct e2e {
    coord co;
    gst_fake *fake;
    gs_client *c;
    gs_client_db *db;
    gs_client_sub *sub;
    seen ev;
    char u1[64], u2[64];
} e2e;

/* A coordinator client whose metadata names node1 primary and node2 readable; a
 * subscription to t lands on node1 and sees a row written there. */
static void e2e_open(e2e *x)
{
    memset(x, 0, sizeof *x);
    pthread_mutex_init(&x->co.mu, NULL);
    gst_server_url(&node1, x->u1, sizeof x->u1);
    gst_server_url(&node2, x->u2, sizeof x->u2);
    set_cluster(&x->co, x->u1, x->u1, x->u2, "1");
    x->fake = gst_fake_start(starter, &x->co);
    cr_assert(x->fake);
    x->c = coordinator_client(x->fake, GS_CLIENT_TRANSPORT_WEBSOCKET);
    gs_error err;
    x->db = gs_client_database(x->c, "main", &err);
    seen_init(&x->ev);
    cr_assert_eq(gs_client_subscribe(x->db, "t", NULL, NULL, on_event, &x->ev, &x->sub, &err),
                 GS_OK, "%s: %s", err.code, err.message);
    char route[128];
    cr_assert_eq(gs_client_route(x->db, 0, route, sizeof route, &err), GS_OK);
    cr_assert_str_eq(route, x->u1, "the subscription is routed to node1");
    insert(&node1, 1, "node1");
    cr_assert(wait_until(&x->ev, got_id, 1, 10000), "the row written on node1 arrives");
}

static void e2e_close(e2e *x)
{
    gs_client_unsubscribe(x->sub);
    gs_client_close(x->c);
    gst_fake_stop(x->fake);
    seen_destroy(&x->ev);
    pthread_mutex_destroy(&x->co.mu);
}

/* After the move: RESYNC(migrated) naming node2, a row written on node2 arrives in the same
 * callback, and the cursor is node2's. */
static void expect_moved_to_node2(e2e *x)
{
    cr_assert(wait_until(&x->ev, got_migrated, 1, 15000), "a RESYNC with migrated = 1 arrives");
    pthread_mutex_lock(&x->ev.mu);
    cr_assert_str_eq(x->ev.endpoint, x->u2, "migrated to node2");
    cr_assert_eq(x->ev.migrated, 1, "moved once");
    cr_assert_eq(x->ev.errors, 0, "not ended: %s", x->ev.error_msg);
    pthread_mutex_unlock(&x->ev.mu);
    insert(&node2, 1001, "node2");
    cr_assert(wait_until(&x->ev, got_id, 1001, 10000),
              "the row written on node2 after the move arrives in the same callback");
    /* the cursor advances once the callback returned: poll it (bounded) */
    char seq[32] = "", epoch[160] = "";
    long long dl = gst_now_ms() + 5000;
    do {
        gs_client_sub_cursor(x->sub, seq, sizeof seq, epoch, sizeof epoch);
        if (!strcmp(seq, "1"))
            break;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    } while (gst_now_ms() < dl);
    cr_assert_str_eq(seq, "1", "the cursor restarted in node2's sequence space: %s", seq);
    cr_assert(epoch[0], "node2's epoch");
}

Test(client_reroute, subscription_moves_when_routing_drops_its_node, .init = start_nodes,
     .fini = stop_nodes, .timeout = 120)
{
    e2e x;
    e2e_open(&x);
    /* node1 drained: still up, no longer in the metadata; a refresh (any call's error would
     * do it) installs the new routing */
    set_cluster(&x.co, x.u2, NULL, x.u2, "2");
    gs_error err;
    int changed = 0;
    cr_assert_eq(cl_route_refresh(x.db, &changed, &err), GS_OK, "%s", err.message);
    cr_assert_eq(changed, 1);
    expect_moved_to_node2(&x);
    pthread_mutex_lock(&x.ev.mu);
    cr_assert_eq(x.ev.disconnected, 0, "the connection to node1 never dropped");
    pthread_mutex_unlock(&x.ev.mu);
    /* node1, still up, no longer feeds the subscription */
    insert(&node1, 2, "node1-after");
    insert(&node2, 1002, "node2");
    cr_assert(wait_until(&x.ev, got_id, 1002, 10000));
    pthread_mutex_lock(&x.ev.mu);
    cr_assert_eq(has_id_locked(&x.ev, 2), 0, "no event from the node left behind");
    pthread_mutex_unlock(&x.ev.mu);
    e2e_close(&x);
}

Test(client_reroute, subscription_moves_when_its_node_is_killed, .init = start_nodes,
     .fini = stop_nodes, .timeout = 120)
{
    e2e x;
    e2e_open(&x);
    int before = gst_fake_hits(x.fake, "/db/main/cluster");
    gst_server_kill9(&node1);
    cr_assert(wait_until(&x.ev, got_disconnected, 1, 10000), "DISCONNECTED first");
    /* while the metadata still lists node1, the subscription stays and retries there, reading
     * routing again before each reconnect */
    long long dl = gst_now_ms() + 10000;
    while (gst_fake_hits(x.fake, "/db/main/cluster") < before + 2 && gst_now_ms() < dl) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    cr_assert_geq(gst_fake_hits(x.fake, "/db/main/cluster"), before + 2,
                  "routing read again after the close and after a failed reconnect");
    pthread_mutex_lock(&x.ev.mu);
    cr_assert_eq(x.ev.migrated, 0, "still listed: not moved");
    pthread_mutex_unlock(&x.ev.mu);
    /* the coordinator drops node1 (its session expired) and names node2 */
    set_cluster(&x.co, x.u2, NULL, x.u2, "2");
    expect_moved_to_node2(&x);
    e2e_close(&x);
}

Test(client_reroute, subscription_ends_when_no_endpoint_serves, .init = start_nodes,
     .fini = stop_nodes, .timeout = 120)
{
    e2e x;
    e2e_open(&x);
    set_cluster(&x.co, NULL, NULL, NULL, "2");
    gs_error err;
    int changed = 0;
    cr_assert_eq(cl_route_refresh(x.db, &changed, &err), GS_OK, "%s", err.message);
    cr_assert(wait_until(&x.ev, got_error, 1, 15000), "an ERROR event ends the subscription");
    pthread_mutex_lock(&x.ev.mu);
    cr_assert_str_eq(x.ev.error_code, "ROUTING_ERROR", "%s", x.ev.error_msg);
    cr_assert(strstr(x.ev.error_msg, x.u1), "names the endpoint left: %s", x.ev.error_msg);
    cr_assert_eq(x.ev.migrated, 0);
    pthread_mutex_unlock(&x.ev.mu);
    /* ended for good: a row written on node1 is not delivered */
    insert(&node1, 3, "node1");
    insert(&node2, 1003, "node2");
    cr_assert_eq(wait_until(&x.ev, got_id, 3, 1000), 0, "nothing after the end");
    pthread_mutex_lock(&x.ev.mu);
    cr_assert_eq(x.ev.after_error, 0, "no event after the ERROR");
    pthread_mutex_unlock(&x.ev.mu);
    e2e_close(&x);
}
