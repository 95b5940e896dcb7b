/*
 * Per-table replication modes in the engine (repl/table_route.c, engine.c with
 * databases[].tables), three nodes in one process over the memory transport: a central
 * primary (node-a) and two edge replicas (node-b, node-c). For every mode: where a write runs
 * (here, forwarded, refused) and which way its changes flow; a sync table converges after
 * conflicting updates on both sides; the first sync takes only the tables the edge pulls and
 * leaves the edge's own tables alone; an edge's change log keeps what its primary has yet
 * to take, even over the size bound; the option checks.
 */
#include "repl_harness.h"

#include "db/cdc.h"
#include "db/cdc_internal.h"

#include <stdlib.h>

H_REPL_SUITE(repl_table_modes, 240, GS_LOG_WARN)

static const gs_repl_peer_cfg A_PEERS[] = {{"node-b", "replica"}, {"node-c", "replica"}};
static const gs_repl_peer_cfg TO_A[] = {{"node-a", "primary"}};

/* The edge's view: it owns files, reads the audit tables, shares settings, pushes telemetry,
 * forwards accounts, keeps scratch tables to itself. */
static const gs_table_mode_rule EDGE[] = {
    {"files", "primary"},       {"audit_*", "readonly"}, {"settings", "sync"},
    {"telemetry", "writeonly"}, {"accounts", "replica"}, {"scratch_*", "excluded"},
};
/* The central view: it takes files (refusing local writes), owns the audit tables and the
 * accounts (unlisted: the primary's role), shares settings and telemetry (whose changes the
 * edge ignores), keeps scratch tables to itself. */
static const gs_table_mode_rule CENTRAL[] = {
    {"files", "readonly"}, {"audit_*", "primary"},    {"settings", "sync"},
    {"telemetry", "sync"}, {"scratch_*", "excluded"},
};

static const char *const SCHEMA[] = {
    "CREATE TABLE files (id INTEGER PRIMARY KEY, name TEXT)",
    "CREATE TABLE audit_log (id INTEGER PRIMARY KEY, what TEXT)",
    "CREATE TABLE settings (k TEXT PRIMARY KEY, v TEXT)",
    "CREATE TABLE telemetry (id INTEGER PRIMARY KEY, v REAL)",
    "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)",
    "CREATE TABLE scratch_tmp (id INTEGER PRIMARY KEY, v TEXT)",
};

static gs_repl_options options(const gs_table_mode_rule *rules, size_t n)
{
    gs_repl_options o;
    gs_repl_options_default(&o);
    o.batch_interval_ms = 20;
    o.ack_timeout_ms = 500;
    o.sync_ack_timeout_ms = 5000;
    o.table_modes = rules;
    o.ntable_modes = n;
    return o;
}

static void start_central(tnode *a, const char *bus)
{
    gs_repl_options o = options(CENTRAL, sizeof CENTRAL / sizeof CENTRAL[0]);
    char y[256];
    snprintf(y, sizeof y, "bus: %s\npeers: [node-b, node-c]\n", bus);
    tnode_start(a, "primary", A_PEERS, 2, y, &o);
}

static void start_edge(tnode *n, const char *bus, int reject)
{
    gs_repl_options o = options(EDGE, sizeof EDGE / sizeof EDGE[0]);
    o.write_proxy_reject = reject;
    char y[256];
    snprintf(y, sizeof y, "bus: %s\npeers: [node-a]\n", bus);
    tnode_start(n, "replica", TO_A, 1, y, &o);
}

static void open_all(tnode n[3], int schema_everywhere)
{
    tnode_open(&n[0], dir, "node-a");
    tnode_open(&n[1], dir, "node-b");
    tnode_open(&n[2], dir, "node-c");
    for (int i = 0; i < (schema_everywhere ? 3 : 1); i++)
        for (size_t k = 0; k < sizeof SCHEMA / sizeof SCHEMA[0]; k++)
            exec_ok(n[i].db, SCHEMA[k]);
}

static void close_all(tnode n[3])
{
    for (int i = 0; i < 3; i++)
        tnode_close(&n[i]);
}

/* The single value of a one-row, one-column query on the file ("" for no row, NULL). */
static char *query1(tnode *n, const char *sql)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(n->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    char *v = NULL;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        v = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v ? v : strdup("");
}

/* Wait until the query answers want on node n (bounded). */
static int wait_value(tnode *n, const char *sql, const char *want, int64_t timeout_ms)
{
    int64_t deadline = gs_test_now_ms() + timeout_ms;
    for (;;) {
        char *v = query1(n, sql);
        int ok = strcmp(v, want) == 0;
        free(v);
        if (ok)
            return 1;
        if (gs_test_now_ms() >= deadline)
            return 0;
        usleep(5000); /* polling a condition, bounded by the deadline */
    }
}

static void expect_value(tnode *n, const char *sql, const char *want)
{
    cr_assert(wait_value(n, sql, want, 20000), "%s: '%s' never answered '%s' (last: '%s')", n->id,
              sql, want, query1(n, sql));
}

/* The query answers want on node n now (no waiting). */
static void expect_now(tnode *n, const char *sql, const char *want)
{
    char *v = query1(n, sql);
    cr_assert_str_eq(v, want, "%s: '%s'", n->id, sql);
    free(v);
}

static void refused(tnode *n, const char *sql, const char *needle)
{
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(submit_wait(n->db, GS_DB_EXECUTE, sql, NULL, NULL, NULL, &err, NULL), GS_ERROR,
                 "%s on %s ran", sql, n->id);
    cr_assert_str_eq(err.code, "TOPOLOGY_ERROR", "%s: %s", err.code, err.message);
    cr_assert(strstr(err.message, needle), "'%s' lacks '%s'", err.message, needle);
}

/* Every side has applied what the other side sent it (both directions idle). */
static void settle(tnode n[3])
{
    tnode *reps[] = {&n[1], &n[2]};
    cr_assert(wait_converged(&n[0], reps, 2, 30000));
}

static void start_all(tnode n[3], const char *bus, int reject)
{
    start_central(&n[0], bus);
    start_edge(&n[1], bus, reject);
    start_edge(&n[2], bus, reject);
    settle(n);
    wait_connected(&n[1], "node-a");
    wait_connected(&n[2], "node-a");
    wait_connected(&n[0], "node-b");
    wait_connected(&n[0], "node-c");
}

Test(repl_table_modes, each_mode_writes_and_pulls)
{
    tnode n[3];
    open_all(n, 0);
    start_all(n, "modes", 0);

    /* replica (edge) / primary (central): central writes flow to both edges */
    exec_ok(n[0].db, "INSERT INTO accounts (id, owner) VALUES (1, 'central')");
    expect_value(&n[1], "SELECT owner FROM accounts WHERE id = 1", "central");
    expect_value(&n[2], "SELECT owner FROM accounts WHERE id = 1", "central");

    /* readonly (edge): pulled, local writes refused */
    exec_ok(n[0].db, "INSERT INTO audit_log (id, what) VALUES (1, 'login')");
    expect_value(&n[1], "SELECT what FROM audit_log WHERE id = 1", "login");
    refused(&n[1], "INSERT INTO audit_log (id, what) VALUES (2, 'edge')",
            "table 'audit_log' is readonly on node node-b");
    refused(&n[1], "DELETE FROM audit_log", "readonly");

    /* primary (edge) / readonly (central): edge writes run at the edge and reach the central,
     * which refuses its own writes; the other edge never sees them (the central does not emit
     * a table it only reads) */
    exec_ok(n[1].db, "INSERT INTO files (id, name) VALUES (1, 'b.txt')");
    exec_ok(n[2].db, "INSERT INTO files (id, name) VALUES (2, 'c.txt')");
    expect_value(&n[0], "SELECT group_concat(name) FROM (SELECT name FROM files ORDER BY id)",
                 "b.txt,c.txt");
    refused(&n[0], "UPDATE files SET name = 'x'", "table 'files' is readonly on node node-a");

    /* writeonly (edge) / sync (central): edge telemetry reaches the central; the central's
     * own telemetry is ignored by the edge (counted as filtered) */
    exec_ok(n[1].db, "INSERT INTO telemetry (id, v) VALUES (1, 0.5)");
    expect_value(&n[0], "SELECT v FROM telemetry WHERE id = 1", "0.5");
    gs_repl_counters before;
    gs_repl_get_counters(n[1].e, &before);
    exec_ok(n[0].db, "INSERT INTO telemetry (id, v) VALUES (100, 9.5)");
    exec_ok(n[0].db, "INSERT INTO accounts (id, owner) VALUES (2, 'marker')");
    expect_value(&n[1], "SELECT owner FROM accounts WHERE id = 2", "marker");
    char *t = query1(&n[1], "SELECT count(*) FROM telemetry WHERE id = 100");
    cr_assert_str_eq(t, "0", "a writeonly table took a remote change");
    free(t);
    gs_repl_counters after;
    gs_repl_get_counters(n[1].e, &after);
    cr_assert_gt(after.changes_filtered, before.changes_filtered);

    /* excluded: never leaves either side */
    exec_ok(n[0].db, "INSERT INTO scratch_tmp (id, v) VALUES (1, 'central')");
    exec_ok(n[1].db, "INSERT INTO scratch_tmp (id, v) VALUES (1, 'edge')");
    exec_ok(n[0].db, "INSERT INTO accounts (id, owner) VALUES (3, 'marker2')");
    exec_ok(n[1].db, "INSERT INTO files (id, name) VALUES (3, 'marker.txt')");
    expect_value(&n[1], "SELECT owner FROM accounts WHERE id = 3", "marker2");
    expect_value(&n[0], "SELECT name FROM files WHERE id = 3", "marker.txt");
    expect_now(&n[1], "SELECT v FROM scratch_tmp", "edge");
    expect_now(&n[0], "SELECT v FROM scratch_tmp", "central");
    expect_now(&n[2], "SELECT count(*) FROM scratch_tmp", "0");

    /* sync both ways */
    exec_ok(n[1].db, "INSERT INTO settings (k, v) VALUES ('from-edge', '1')");
    expect_value(&n[0], "SELECT v FROM settings WHERE k = 'from-edge'", "1");
    /* the central relays it to the other edge */
    expect_value(&n[2], "SELECT v FROM settings WHERE k = 'from-edge'", "1");
    exec_ok(n[0].db, "INSERT INTO settings (k, v) VALUES ('from-central', '2')");
    expect_value(&n[1], "SELECT v FROM settings WHERE k = 'from-central'", "2");
    expect_value(&n[2], "SELECT v FROM settings WHERE k = 'from-central'", "2");
    /* a sync change is never sent back to where it came from: the central's log holds the
     * edge's change under the edge's id only */
    expect_now(&n[0],
               "SELECT group_concat(node_id) FROM _sirannon_changes WHERE table_name = "
               "'settings' AND row_id IS NOT NULL AND new_data LIKE '%from-edge%'",
               "node-b");
    /* and node-c holds it under node-b's id too (relayed, not re-stamped) */
    expect_now(&n[2],
               "SELECT group_concat(node_id) FROM _sirannon_changes WHERE table_name = "
               "'settings' AND new_data LIKE '%from-edge%'",
               "node-b");
    /* the edge that wrote it logs it once: it never came back */
    expect_now(&n[1],
               "SELECT count(*) FROM _sirannon_changes WHERE table_name = 'settings' AND "
               "new_data LIKE '%from-edge%'",
               "1");
    close_all(n);
}

Test(repl_table_modes, replica_tables_are_forwarded_or_refused)
{
    tnode n[3];
    open_all(n, 0);
    start_all(n, "fwd", 0);
    gs_error err;
    gs_error_init(&err);
    char *json = NULL;
    /* forwarded to the central, back through replication */
    cr_assert_eq(submit_wait(n[1].db, GS_DB_EXECUTE,
                             "INSERT INTO accounts (id, owner) VALUES (7, 'via-edge')", NULL, NULL,
                             NULL, &err, &json),
                 GS_OK, "%s %s", err.code, err.message);
    cr_assert(strstr(json, "\"changes\":1"), "%s", json);
    free(json);
    char *t = query1(&n[0], "SELECT owner FROM accounts WHERE id = 7");
    cr_assert_str_eq(t, "via-edge", "the forwarded write ran on the central");
    free(t);
    expect_value(&n[1], "SELECT owner FROM accounts WHERE id = 7", "via-edge");
    expect_value(&n[2], "SELECT owner FROM accounts WHERE id = 7", "via-edge");
    /* a local table runs here even on a replica node (no forwarding configured at all) */
    exec_ok(n[1].db, "INSERT INTO files (id, name) VALUES (7, 'here')");
    expect_now(&n[1], "SELECT name FROM files WHERE id = 7", "here");
    expect_value(&n[0], "SELECT name FROM files WHERE id = 7", "here"); /* and it flows up */
    /* a transaction mixing a local and a forwarded table is refused */
    gs_db_stmt st[2] = {{"INSERT INTO files (id, name) VALUES (8, 'x')", NULL},
                        {"INSERT INTO accounts (id, owner) VALUES (8, 'x')", NULL}};
    gs_db_request req;
    memset(&req, 0, sizeof req);
    req.kind = GS_DB_TRANSACTION;
    req.stmts = st;
    req.stmt_count = 2;
    gs_error_init(&err);
    cr_assert_eq(gs_api_repl_submit(n[1].db, &req, NULL, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "TOPOLOGY_ERROR");
    cr_assert(strstr(err.message, "'files' (primary: written here) and table 'accounts' "
                                  "(replica: owned by the primary)"),
              "%s", err.message);
    /* a transaction on local tables only runs here */
    gs_db_stmt lst[2] = {{"INSERT INTO files (id, name) VALUES (9, 'tx')", NULL},
                         {"INSERT INTO settings (k, v) VALUES ('tx', '9')", NULL}};
    req.stmts = lst;
    waiter w;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.m, NULL);
    pthread_cond_init(&w.c, NULL);
    req.done = waiter_done;
    req.user = &w;
    gs_error_init(&err);
    cr_assert_eq(gs_api_repl_submit(n[1].db, &req, NULL, &err), GS_OK, "%s", err.message);
    expect_value(&n[0], "SELECT v FROM settings WHERE k = 'tx'", "9");
    pthread_mutex_lock(&w.m);
    cr_assert(w.done && w.st == GS_OK);
    pthread_mutex_unlock(&w.m);
    free(w.json);
    pthread_mutex_destroy(&w.m);
    pthread_cond_destroy(&w.c);
    expect_value(&n[0], "SELECT name FROM files WHERE id = 9", "tx");

    /* write_proxy: reject */
    tnode_stop(&n[2]);
    start_edge(&n[2], "fwd", 1);
    wait_connected(&n[2], "node-a");
    refused(&n[2], "UPDATE accounts SET owner = 'no'", "write_proxy is reject");
    exec_ok(n[2].db, "INSERT INTO files (id, name) VALUES (20, 'still-local')");
    expect_value(&n[0], "SELECT name FROM files WHERE id = 20", "still-local");
    close_all(n);
}

static gs_db_request tx_request(const gs_db_stmt *st, size_t count)
{
    gs_db_request req;
    memset(&req, 0, sizeof req);
    req.kind = GS_DB_TRANSACTION;
    req.stmts = st;
    req.stmt_count = count;
    return req;
}

/* A transaction of the given statements on n is refused with TOPOLOGY_ERROR naming needle. */
static void refused_tx(tnode *n, const gs_db_stmt *st, size_t count, const char *needle)
{
    gs_db_request req = tx_request(st, count);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_api_repl_submit(n->db, &req, NULL, &err), GS_ERROR, "the transaction ran");
    cr_assert_str_eq(err.code, "TOPOLOGY_ERROR", "%s: %s", err.code, err.message);
    cr_assert(strstr(err.message, needle), "'%s' lacks '%s'", err.message, needle);
}

/* Routing looks at every table a request writes, however many (a readonly table after 20
 * local ones is still refused), and a statement's remembered answer (the second time its
 * text is seen) routes like the first. The edge runs alone: refusals need no peer. */
Test(repl_table_modes, every_table_of_a_request_is_checked_and_answers_are_remembered)
{
    tnode b;
    tnode_open(&b, dir, "node-b");
    for (size_t k = 0; k < sizeof SCHEMA / sizeof SCHEMA[0]; k++)
        exec_ok(b.db, SCHEMA[k]);
    enum { LOCAL = 20 };
    static char sql[LOCAL + 1][96];
    gs_db_stmt st[LOCAL + 1];
    for (int i = 0; i < LOCAL; i++) {
        snprintf(sql[i], sizeof sql[i], "CREATE TABLE scratch_%d (id INTEGER PRIMARY KEY)", i);
        exec_ok(b.db, sql[i]);
        snprintf(sql[i], sizeof sql[i], "INSERT INTO scratch_%d (id) VALUES (1)", i);
        st[i] = (gs_db_stmt){sql[i], NULL};
    }
    snprintf(sql[LOCAL], sizeof sql[LOCAL], "INSERT INTO audit_log (id, what) VALUES (1, 'x')");
    st[LOCAL] = (gs_db_stmt){sql[LOCAL], NULL};
    start_edge(&b, "alone", 0);
    for (int round = 0; round < 2; round++) { /* the second round takes remembered answers */
        refused_tx(&b, st, LOCAL + 1, "table 'audit_log' is readonly on node node-b");
        gs_db_stmt mixed[2] = {st[0], {"INSERT INTO accounts (id, owner) VALUES (1, 'x')", NULL}};
        refused_tx(&b, mixed, 2, "'scratch_0' (excluded: written here) and table 'accounts'");
        refused(&b, "INSERT INTO audit_log (id, what) VALUES (1, 'x')", "readonly");
    }
    /* the local tables alone run here */
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(submit_request_wait(b.db, tx_request(st, LOCAL), NULL, &err, NULL), GS_OK, "%s",
                 err.message);
    expect_now(&b, "SELECT count(*) FROM scratch_19", "1");
    tnode_stop(&b);
    tnode_close(&b);
}

/* The primary cannot run a first sync from an edge, so the edge's log never prunes what the
 * primary has not taken from it, whatever its size bound: cut off, the edge writes far past
 * the bound; healed, the central gets every row. */
Test(repl_table_modes, an_edge_keeps_what_its_primary_has_not_taken_over_the_bound)
{
    tnode n[3];
    open_all(n, 1);
    start_all(n, "upstream", 0);
    for (int i = 0; i < 20; i++) {
        char sql[96];
        snprintf(sql, sizeof sql, "INSERT INTO files (id, name) VALUES (%d, 'before')", i);
        exec_ok(n[1].db, sql);
    }
    expect_value(&n[0], "SELECT count(*) FROM files", "20");
    tnode_control(&n[0], "partition node-a node-b");
    enum { WRITES = 300 };
    for (int i = 0; i < WRITES; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "INSERT INTO files (id, name) VALUES (%d, 'while cut off: %0*d')",
                 1000 + i, 40, i);
        exec_ok(n[1].db, sql);
    }
    /* a bound far below what the edge holds for the central */
    n[1].db->opts.cdc_max_log_bytes = 4000;
    n[1].db->opts.cdc_max_log_changes = 0;
    atomic_store(&n[1].db->cdc->log_next_check, 0);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_cdc_prune_now(n[1].db, &err), GS_OK, "%s", err.message);
    gs_change_log_stats st;
    cr_assert_eq(gs_db_change_log_stats(n[1].db, &st, &err), GS_OK, "%s", err.message);
    cr_assert_eq(st.forced_total, 0, "the edge pruned %lld changes its primary still needed",
                 (long long)st.forced_total);
    cr_assert_gt(st.bytes, 4000, "the log stays over its bound while the central needs it");
    tnode_control(&n[0], "heal");
    char want[16];
    snprintf(want, sizeof want, "%d", 20 + WRITES);
    expect_value(&n[0], "SELECT count(*) FROM files", want);
    close_all(n);
}

Test(repl_table_modes, sync_table_converges_after_conflicting_updates)
{
    tnode n[3];
    open_all(n, 0);
    start_all(n, "conflict", 0);
    exec_ok(n[0].db, "INSERT INTO settings (k, v) VALUES ('mode', 'start')");
    expect_value(&n[1], "SELECT v FROM settings WHERE k = 'mode'", "start");
    /* cut the link, update the same row on both sides, restore it */
    tnode_control(&n[0], "partition node-a node-b");
    exec_ok(n[0].db, "UPDATE settings SET v = 'central' WHERE k = 'mode'");
    usleep(20000); /* a later wall clock for the edge's stamp: last writer wins */
    exec_ok(n[1].db, "UPDATE settings SET v = 'edge' WHERE k = 'mode'");
    tnode_control(&n[0], "heal node-a node-b");
    expect_value(&n[0], "SELECT v FROM settings WHERE k = 'mode'", "edge");
    expect_value(&n[1], "SELECT v FROM settings WHERE k = 'mode'", "edge");
    close_all(n);
}

Test(repl_table_modes, first_sync_takes_only_pulled_tables)
{
    tnode n[3];
    open_all(n, 0);
    /* the central holds rows of every table before the edge joins */
    exec_ok(n[0].db, "INSERT INTO accounts (id, owner) VALUES (1, 'a')");
    exec_ok(n[0].db, "INSERT INTO audit_log (id, what) VALUES (1, 'x')");
    exec_ok(n[0].db, "INSERT INTO settings (k, v) VALUES ('s', 'central')");
    exec_ok(n[0].db, "INSERT INTO telemetry (id, v) VALUES (1, 1.5)");
    exec_ok(n[0].db, "INSERT INTO scratch_tmp (id, v) VALUES (1, 'central')");
    /* the edge already has its own files */
    exec_ok(n[1].db, "CREATE TABLE files (id INTEGER PRIMARY KEY, name TEXT)");
    exec_ok(n[1].db, "INSERT INTO files (id, name) VALUES (1, 'mine')");
    start_central(&n[0], "boot");
    start_edge(&n[1], "boot", 0);
    tnode *reps[] = {&n[1]};
    cr_assert(wait_converged(&n[0], reps, 1, 30000));
    expect_now(&n[1], "SELECT owner FROM accounts", "a");
    expect_now(&n[1], "SELECT what FROM audit_log", "x");
    /* sync and writeonly tables take the stream only; excluded never; the edge's own table
     * is left alone */
    expect_now(&n[1], "SELECT count(*) FROM settings", "0");
    expect_now(&n[1], "SELECT count(*) FROM telemetry", "0");
    expect_now(&n[1], "SELECT name FROM files", "mine");
    /* and the stream carries what follows */
    exec_ok(n[0].db, "INSERT INTO settings (k, v) VALUES ('later', 'yes')");
    expect_value(&n[1], "SELECT v FROM settings WHERE k = 'later'", "yes");
    close_all(n);
}

Test(repl_table_modes, option_checks)
{
    gs_repl_options o = options(EDGE, sizeof EDGE / sizeof EDGE[0]);
    o.node_id = "n";
    o.role = "primary";
    o.transport = (const gs_repl_transport_vtable *)1;
    o.transport_instance = (void *)1;
    o.default_resolver.vt = (const gs_resolver_vtable *)1;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_repl_options_check(&o, &err), GS_OK, "%s", err.message);
    gs_authority_options a;
    memset(&a, 0, sizeof a);
    o.coordinator = &a;
    cr_assert_eq(gs_repl_options_check(&o, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "per-table modes are static-mode only"), "%s", err.message);
    o.coordinator = NULL;
    const gs_table_mode_rule bad[] = {{"x", "mirror"}};
    o.table_modes = bad;
    o.ntable_modes = 1;
    gs_error_init(&err);
    cr_assert_eq(gs_repl_options_check(&o, &err), GS_ERROR);
    cr_assert(strstr(err.message, "tables[0].mode"), "%s", err.message);
}
