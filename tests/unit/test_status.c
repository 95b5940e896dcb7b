/*
 * The status page's document (core/src/api/status.c, GET /status.json) and its replication
 * fragments (core/src/repl/repl_status.c): the shape, strings that would be markup or break
 * JSON, the numbers (uptime, request counts, seqs, lag) on a real three-node cluster over the
 * built-in memory transport, and the embedded page itself (no external URL, no innerHTML).
 */
#include "repl_harness.h"

#include "api/metrics.h"
#include "api/status.h"
#include "db/registry.h"
#include "repl/repl_status.h"

#include <stdlib.h>

static char dir[PATH_MAX];

static void setup(void)
{
    h_host_init();
    gs_log_set_level(getenv("GS_TEST_LOG") ? GS_LOG_DEBUG : GS_LOG_WARN);
    gs_test_mkdtemp(dir, sizeof dir, "status");
}

static void teardown(void)
{
    gs_test_rmtree(dir);
}

TestSuite(status, .init = setup, .fini = teardown, .timeout = 120);

static const char HOSTILE[] = "n\"</script><script>alert(1)</script>\\\n\x01\xc3\xa9";

/* The document of (reg, node, m), parsed; the caller owns it. */
static json_t *status_doc(gs_registry *reg, const gs_status_node *node, gs_metrics *m)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_status_json(reg, node, m, &b, &err), GS_OK, "%s", err.message);
    cr_assert(!b.oom);
    json_error_t je;
    json_t *doc = json_loadb(b.data, b.len, 0, &je);
    cr_assert_not_null(doc, "not JSON (%s): %.*s", je.text, (int)b.len, b.data);
    gs_buf_free(&b);
    return doc;
}

/* A fragment appended by fn(arg, b), parsed as any JSON value. */
static json_t *fragment(void (*fn)(gs_repl_engine *, gs_buf *), gs_repl_engine *e)
{
    gs_buf b;
    gs_buf_init(&b);
    fn(e, &b);
    cr_assert(!b.oom);
    json_error_t je;
    json_t *j = json_loadb(b.data, b.len, JSON_DECODE_ANY, &je);
    cr_assert_not_null(j, "not JSON (%s): %.*s", je.text, (int)b.len, b.data);
    gs_buf_free(&b);
    return j;
}

static json_int_t int_at(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    cr_assert(json_is_integer(v), "%s is not an integer", key);
    return json_integer_value(v);
}

static const char *str_at(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    cr_assert(json_is_string(v), "%s is not a string", key);
    return json_string_value(v);
}

Test(status, node_and_request_counters_without_databases)
{
    gs_metrics *m = gs_metrics_new(1);
    cr_assert_not_null(m);
    for (int i = 0; i < 7; i++)
        gs_metrics_http(m, GS_ROUTE_QUERY, gs_metrics_method("POST"), 200, 1000);
    gs_metrics_http(m, GS_ROUTE_QUERY, gs_metrics_method("POST"), 400, 1000);
    gs_metrics_http(m, GS_ROUTE_STATUS_JSON, gs_metrics_method("GET"), 200, 1000);
    gs_metrics_http(m, GS_METRICS_ROUTE_UNMATCHED, gs_metrics_method("GET"), 404, 1000);

    int64_t now = gs_status_now_unix_ms();
    gs_status_node node = {.id = HOSTILE, .version = "1.2.3", .started_unix_ms = now - 5000};
    json_t *doc = status_doc(NULL, &node, m);

    json_t *n = json_object_get(doc, "node");
    cr_assert_str_eq(str_at(n, "id"), "n\"</script><script>alert(1)</script>\\\n\x01\xc3\xa9");
    cr_assert_str_eq(str_at(n, "version"), "1.2.3");
    cr_assert_str_eq(str_at(n, "role"), "standalone");
    cr_assert_eq(int_at(n, "startedAt"), now - 5000);
    cr_assert(int_at(n, "now") >= now);
    double up = json_number_value(json_object_get(n, "uptimeSeconds"));
    cr_assert(up >= 4.9 && up < 60, "uptime %f", up);

    json_t *q = json_object_get(doc, "requests");
    cr_assert_eq(int_at(q, "total"), 10);
    json_t *routes = json_object_get(q, "routes");
    cr_assert(json_is_array(routes));
    cr_assert_eq(json_array_size(routes), 3, "one entry per route answered");
    size_t i;
    json_t *r;
    int seen = 0;
    json_array_foreach(routes, i, r)
    {
        const char *route = str_at(r, "route");
        if (strcmp(route, "/db/{id}/query") == 0) {
            cr_assert_str_eq(str_at(r, "method"), "POST");
            cr_assert_eq(int_at(r, "count"), 8);
            seen |= 1;
        } else if (strcmp(route, "/status.json") == 0) {
            cr_assert_str_eq(str_at(r, "method"), "GET");
            cr_assert_eq(int_at(r, "count"), 1);
            seen |= 2;
        } else if (strcmp(route, "unmatched") == 0) {
            cr_assert_eq(int_at(r, "count"), 1);
            seen |= 4;
        } else {
            cr_assert_fail("unexpected route %s", route);
        }
    }
    cr_assert_eq(seen, 7);
    cr_assert(json_is_array(json_object_get(doc, "databases")));
    cr_assert_eq(json_array_size(json_object_get(doc, "databases")), 0);
    json_decref(doc);

    /* no counters: requests is null; no node: empty id and version */
    doc = status_doc(NULL, NULL, NULL);
    cr_assert(json_is_null(json_object_get(doc, "requests")));
    cr_assert_str_eq(str_at(json_object_get(doc, "node"), "id"), "");
    json_decref(doc);
    gs_metrics_free(m);
}

Test(status, databases_with_hostile_ids_without_replication)
{
    gs_registry_options ro;
    gs_registry_options_default(&ro);
    gs_registry *reg = gs_registry_new(&ro);
    cr_assert_not_null(reg);
    gs_db_options o;
    gs_db_options_default(&o);
    o.read_pool_size = 1;
    gs_error err;
    gs_error_init(&err);
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/plain.db", dir);
    cr_assert_eq(gs_registry_open(reg, "plain", path, &o, &err), GS_OK, "%s", err.message);
    snprintf(path, sizeof path, "%s/hostile.db", dir);
    const char *hostile_id = "<script>x</script>\"'&";
    cr_assert_eq(gs_registry_open(reg, hostile_id, path, &o, &err), GS_OK, "%s", err.message);

    json_t *doc = status_doc(reg, NULL, NULL);
    json_t *dbs = json_object_get(doc, "databases");
    cr_assert_eq(json_array_size(dbs), 2);
    int seen = 0;
    size_t i;
    json_t *d;
    json_array_foreach(dbs, i, d)
    {
        const char *id = str_at(d, "id");
        seen |= strcmp(id, "plain") == 0 ? 1 : strcmp(id, hostile_id) == 0 ? 2 : 4;
        cr_assert(json_is_false(json_object_get(d, "readOnly")));
        cr_assert(json_is_false(json_object_get(d, "closed")));
        cr_assert(json_is_null(json_object_get(d, "replication")), "not replicated");
        cr_assert(json_is_array(json_object_get(d, "sources")));
        json_t *log = json_object_get(d, "log");
        cr_assert(json_is_object(log));
        cr_assert(json_is_null(json_object_get(log, "lastSeq")));
        cr_assert(json_is_null(json_object_get(log, "rows")));
        cr_assert_eq(int_at(log, "prunedSeq"), 0);
        cr_assert(json_is_null(json_object_get(log, "bytes")));
    }
    cr_assert_eq(seen, 3);
    cr_assert_str_eq(str_at(json_object_get(doc, "node"), "role"), "standalone");
    json_decref(doc);
    gs_registry_shutdown(reg);
    gs_registry_free(reg);
}

static const gs_repl_peer_cfg A_PEERS[] = {{"node-b", "replica"}, {"node-c", "replica"}};
static const gs_repl_peer_cfg TO_A[] = {{"node-a", "primary"}};

static json_t *peer_named(json_t *peers, const char *id)
{
    size_t i;
    json_t *p;
    json_array_foreach(peers, i, p) if (strcmp(str_at(p, "id"), id) == 0) return p;
    cr_assert_fail("no peer %s", id);
    return NULL;
}

/* Wait (bounded) until the primary's view shows both replicas acknowledging `head`. */
static json_t *wait_acked(tnode *a, int64_t head)
{
    int64_t deadline = gs_test_now_ms() + 20000;
    json_t *peers = NULL;
    while (gs_test_now_ms() < deadline) {
        json_decref(peers);
        peers = fragment(gs_repl_status_peers, a->e);
        int ok = 1;
        size_t i;
        json_t *p;
        json_array_foreach(peers, i, p) ok &=
            json_integer_value(json_object_get(p, "lastAckedSeq")) >= head &&
            json_is_true(json_object_get(p, "inSync"));
        if (ok && json_array_size(peers) == 2)
            return peers;
        usleep(5000); /* polling a condition, bounded by the deadline */
    }
    cr_assert_fail("the replicas never acknowledged seq %lld", (long long)head);
    return NULL;
}

Test(status, replication_fragments_on_three_nodes)
{
    tnode n[3];
    tnode_open(&n[0], dir, "node-a");
    tnode_open(&n[1], dir, "node-b");
    tnode_open(&n[2], dir, "node-c");
    gs_repl_options o;
    gs_repl_options_default(&o);
    o.batch_interval_ms = 20;
    o.write_forwarding = 1;
    tnode_start(&n[0], "primary", A_PEERS, 2, "bus: status\npeers: [node-b, node-c]\n", &o);
    tnode_start(&n[1], "replica", TO_A, 1, "bus: status\npeers: [node-a]\n", &o);
    tnode_start(&n[2], "replica", TO_A, 1, "bus: status\npeers: [node-a]\n", &o);
    wait_connected(&n[0], "node-b");
    wait_connected(&n[0], "node-c");

    exec_ok(n[0].db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
    for (int i = 0; i < 20; i++)
        exec_ok(n[0].db, "INSERT INTO t (v) VALUES ('x')");
    tnode *reps[] = {&n[1], &n[2]};
    cr_assert(wait_converged(&n[0], reps, 2, 20000), "the replicas did not converge");
    /* the writes above may have reached a replica inside its first sync's snapshot: one more,
     * now that both are ready, travels as a batch (the counters below need one) */
    exec_ok(n[0].db, "INSERT INTO t (v) VALUES ('after ready')");
    cr_assert(wait_converged(&n[0], reps, 2, 20000), "the replicas did not converge");
    int64_t head = gs_db_committed_seq(n[0].db);
    cr_assert(head >= 20);

    /* the primary sees both replicas, connected, in sync, at its head, no lag */
    json_t *peers = wait_acked(&n[0], head);
    for (int k = 1; k < 3; k++) {
        json_t *p = peer_named(peers, n[k].id);
        cr_assert_str_eq(str_at(p, "role"), "replica");
        cr_assert(json_is_true(json_object_get(p, "connected")));
        cr_assert_eq(int_at(p, "lastAckedSeq"), head);
        cr_assert_eq(int_at(p, "lagChanges"), 0);
        cr_assert_eq(int_at(p, "lagMs"), 0);
        cr_assert(int_at(p, "lastSentSeq") >= head);
        cr_assert(int_at(p, "connectedForMs") >= 0);
    }
    json_decref(peers);

    /* a replica sees the primary; it does not send to it, so the sender fields are null */
    peers = fragment(gs_repl_status_peers, n[1].e);
    cr_assert_eq(json_array_size(peers), 1);
    json_t *p = peer_named(peers, "node-a");
    cr_assert_str_eq(str_at(p, "role"), "primary");
    cr_assert(json_is_true(json_object_get(p, "connected")));
    cr_assert(json_is_null(json_object_get(p, "lagChanges")));
    cr_assert(json_is_null(json_object_get(p, "lastAckedSeq")));
    cr_assert(json_is_false(json_object_get(p, "inSync")));
    json_decref(peers);

    /* the summary, completed into an object */
    for (int k = 0; k < 2; k++) {
        gs_buf b;
        gs_buf_init(&b);
        const char *role = NULL;
        gs_buf_putc(&b, '{');
        gs_repl_status_summary(n[k].e, &b, &role);
        gs_buf_putc(&b, '}');
        json_t *s = gs_test_parse_json(b.data);
        cr_assert_str_eq(role, k ? "replica" : "primary");
        cr_assert_str_eq(str_at(s, "role"), role);
        cr_assert_str_eq(str_at(s, "phase"), "ready");
        cr_assert_str_eq(str_at(s, "health"), "healthy");
        cr_assert(json_is_false(json_object_get(s, "coordinated")));
        cr_assert(json_is_true(json_object_get(s, "writeForwarding")));
        cr_assert_eq(int_at(s, "position"), head);
        cr_assert(json_is_null(json_object_get(s, "lastError")));
        json_t *c = json_object_get(s, "counters");
        cr_assert(int_at(c, k ? "batchesApplied" : "batchesSent") > 0);
        json_decref(s);
        gs_buf_free(&b);
    }

    /* the change log of the primary: every seq retained */
    gs_buf b;
    gs_buf_init(&b);
    gs_repl_status_log(n[0].db, &b);
    json_t *log = gs_test_parse_json(b.data);
    cr_assert_eq(int_at(log, "lastSeq"), head);
    cr_assert_eq(int_at(log, "prunedSeq"), 0);
    cr_assert_eq(int_at(log, "rows"), head);
    json_decref(log);
    gs_buf_free(&b);

    /* the parts other work fills: their empty values today */
    json_t *modes = fragment(gs_repl_status_table_modes, n[0].e);
    cr_assert(json_is_array(modes));
    json_decref(modes);
    json_t *sync = fragment(gs_repl_status_sync, n[0].e);
    cr_assert(json_is_null(sync) || json_is_object(sync));
    json_decref(sync);

    /* a replica that stops acknowledging: the primary's lag grows in changes */
    tnode_stop(&n[2]);
    for (int i = 0; i < 5; i++)
        exec_ok(n[0].db, "INSERT INTO t (v) VALUES ('y')");
    int64_t head2 = gs_db_committed_seq(n[0].db);
    int64_t deadline = gs_test_now_ms() + 10000;
    json_t *c = NULL;
    while (gs_test_now_ms() < deadline) {
        peers = fragment(gs_repl_status_peers, n[0].e);
        c = json_incref(peer_named(peers, "node-c"));
        json_decref(peers);
        if (json_is_false(json_object_get(c, "connected")))
            break;
        json_decref(c);
        c = NULL;
        usleep(5000); /* polling a condition, bounded by the deadline */
    }
    cr_assert_not_null(c, "the primary never saw node-c leave");
    cr_assert_eq(int_at(c, "lagChanges"), head2 - head);
    cr_assert(json_is_false(json_object_get(c, "inSync")));
    json_decref(c);

    for (int k = 0; k < 3; k++)
        tnode_close(&n[k]);
}

Test(status, page_is_self_contained)
{
    size_t len;
    const char *page = gs_status_page_html(&len);
    cr_assert(len > 1000);
    cr_assert_eq(strlen(page), len, "NUL-terminated, no NUL inside");
    cr_assert(strncmp(page, "<!doctype html>", 15) == 0);
    cr_assert_null(strstr(page, "http://"), "no external URL");
    cr_assert_null(strstr(page, "https://"), "no external URL");
    cr_assert_null(strstr(page, "innerHTML"), "data is placed with textContent only");
    cr_assert_null(strstr(page, "src="), "nothing loaded from elsewhere");
    cr_assert_not_null(strstr(page, "/status.json"));
    cr_assert_not_null(strstr(page, "unreachable since"));
}
