/*
 * First sync (spec 03 "First Sync"): a replica joining a primary that holds many rows copies
 * the snapshot while writes continue, verifies the manifests and reaches ready with every
 * table equal; a sync cut short resumes from its completed tables.
 *
 * Rows: 1,000,000 on the release build; 200,000 under the sanitizers, which run several
 * times slower (the protocol is the same; only the volume differs).
 */
#include "repl_harness.h"
#include "repl_inbox.h"

#include <stdlib.h>

#if defined(__SANITIZE_ADDRESS__)
#define SYNC_ROWS 200000
#else
#define SYNC_ROWS 1000000
#endif

H_REPL_SUITE(repl_sync, 600, GS_LOG_WARN)

static const gs_repl_peer_cfg A_PEERS[] = {{"node-b", "replica"}};
static const gs_repl_peer_cfg TO_A[] = {{"node-a", "primary"}};

/* Fill node-a's file before it opens: big (rows), small (a handful of odd values), empty. */
static void fill(const char *path, int rows)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    char sql[1024];
    snprintf(sql, sizeof sql,
             "PRAGMA journal_mode=WAL;"
             "CREATE TABLE big (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL, tag BLOB);"
             "CREATE INDEX big_name ON big (name);"
             "CREATE TABLE small (k TEXT PRIMARY KEY, v ANY, n INTEGER) ;"
             "CREATE TABLE empty_one (a INTEGER, b TEXT);"
             "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d) "
             "INSERT INTO big SELECT x, 'name ' || x, x * 1.5, CASE WHEN x %% 7 = 0 THEN NULL "
             "ELSE randomblob(12) END FROM c;"
             "INSERT INTO small VALUES ('a', 9223372036854775807, -9223372036854775807 - 1),"
             " ('b', 0.1, NULL), ('c', x'00010203', 3), ('d', 'text with \"quotes\" and "
             "\\ and ''', 4), ('e', NULL, 5);",
             rows);
    char *msg = NULL;
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, &msg), SQLITE_OK, "%s", msg ? msg : "");
    sqlite3_close(db);
}

typedef struct writer_arg {
    gs_database *db;
    int n;
    volatile int stop;
    int done;
} writer_arg;

static void *writes_during_sync(void *p)
{
    writer_arg *w = p;
    for (int i = 0; i < w->n && !w->stop; i++) {
        char sql[160];
        if (i % 3 == 0)
            snprintf(sql, sizeof sql, "UPDATE big SET score = score + 1 WHERE id = %d", 1 + i * 7);
        else if (i % 3 == 1)
            snprintf(sql, sizeof sql, "INSERT INTO big (id, name) VALUES (%d, 'during %d')",
                     SYNC_ROWS + 1 + i, i);
        else
            snprintf(sql, sizeof sql, "DELETE FROM big WHERE id = %d", 2 + i * 5);
        exec_ok(w->db, sql);
        w->done++;
    }
    return NULL;
}

Test(repl_sync, joiner_syncs_a_large_primary_while_writes_continue)
{
    tnode a, b;
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/node-a.db", dir);
    fill(path, SYNC_ROWS);
    tnode_open(&a, dir, "node-a");
    gs_repl_options o;
    gs_repl_options_default(&o);
    o.batch_interval_ms = 20;
    o.ack_timeout_ms = 2000;
    tnode_start(&a, "primary", A_PEERS, 1, "bus: big\npeers: [node-b]\n", &o);
    tnode_open(&b, dir, "node-b");
    writer_arg w = {a.db, 2000, 0, 0};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, writes_during_sync, &w), 0);
    int64_t t0 = gs_test_now_ms();
    tnode_start(&b, "replica", TO_A, 1, "bus: big\npeers: [node-a]\n", &o);
    tnode *reps[] = {&b};
    int64_t deadline = gs_test_now_ms() + 300000;
    while (strcmp(gs_repl_sync_phase(b.e), "ready") != 0 && gs_test_now_ms() < deadline)
        usleep(10000); /* polling a condition, bounded by the deadline */
    int64_t ready_ms = gs_test_now_ms() - t0;
    cr_assert_str_eq(gs_repl_sync_phase(b.e), "ready", "the joiner never became ready");
    pthread_join(t, NULL);
    cr_assert_eq(w.done, w.n);
    cr_assert(wait_converged(&a, reps, 1, 120000), "the joiner did not catch up");
    assert_same(&a, &b);
    gs_log(GS_LOG_WARN, "test", "first sync of %d rows reached ready in %lld ms", SYNC_ROWS,
           (long long)ready_ms);
    gs_repl_counters c;
    gs_repl_get_counters(b.e, &c);
    cr_assert_eq(c.rejected, 0);
    tnode_close(&b);
    tnode_close(&a);
}

static int completed_tables(const char *path)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st = NULL;
    int n = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT count(*) FROM _sirannon_sync_state WHERE status = 'completed'",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

Test(repl_sync, a_sync_cut_short_resumes_from_completed_tables)
{
    tnode a, b;
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/node-a.db", dir);
    fill(path, 50000);
    tnode_open(&a, dir, "node-a");
    gs_repl_options o;
    gs_repl_options_default(&o);
    o.batch_interval_ms = 20;
    o.sync_batch_size = 1000;
    tnode_start(&a, "primary", A_PEERS, 1, "bus: cut\npeers: [node-b]\n", &o);
    tnode_open(&b, dir, "node-b");
    /* hold the stream back so the cut lands mid-sync: 2 ms per delivered message */
    tnode_control(&a, "delay 2 2");
    tnode_start(&b, "replica", TO_A, 1, "bus: cut\npeers: [node-a]\n", &o);
    int64_t deadline = gs_test_now_ms() + 60000;
    while (completed_tables(b.path) < 1 && gs_test_now_ms() < deadline)
        usleep(2000); /* polling a condition, bounded by the deadline */
    cr_assert_geq(completed_tables(b.path), 1, "no table completed");
    cr_assert_neq(strcmp(gs_repl_sync_phase(b.e), "ready"), 0, "the sync finished too soon");
    /* B stops mid-sync; its database closes and opens again */
    tnode_close(&b);
    tnode_control(&a, "delay 0 0");
    tnode_open(&b, dir, "node-b");
    tnode_start(&b, "replica", TO_A, 1, "bus: cut\npeers: [node-a]\n", &o);
    cr_assert_neq(strcmp(gs_repl_sync_phase(b.e), "ready"), 0, "an unfinished sync counts as done");
    tnode *reps[] = {&b};
    cr_assert(wait_converged(&a, reps, 1, 60000), "the resumed sync did not finish");
    assert_same(&a, &b);
    tnode_close(&b);
    tnode_close(&a);
}

/* ---- a rogue source: the joiner's checks on what a primary streams ---- */

#include "repl/checksum.h"

/* Wait for the k-th message (0-based) of a kind; returns its index. */
static int inbox_wait(inbox *in, gs_sync_kind kind, int k)
{
    struct timespec ts = gs_test_realtime_in(20000);
    pthread_mutex_lock(&in->m);
    for (;;) {
        int seen = 0;
        for (int i = 0; i < in->n; i++)
            if (in->msgs[i].kind == kind && seen++ == k) {
                pthread_mutex_unlock(&in->m);
                return i;
            }
        if (pthread_cond_timedwait(&in->c, &in->m, &ts) != 0)
            break;
    }
    pthread_mutex_unlock(&in->m);
    cr_assert_fail("no message of kind %d number %d arrived", (int)kind, k);
    return -1;
}

static void rogue_send(tnode *r, const gs_sync_message *m)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_sync_message_encode(m, &bytes, &len, &err), GS_OK);
    cr_assert_eq(((const gs_repl_transport_vtable *)r->tp->desc->vtable)
                     ->send(r->tinst, "node-b", GS_REPL_MSG_SYNC, 0, bytes, len, &err),
                 GS_OK, "%s", err.message);
    gs_free(bytes);
}

Test(repl_sync, a_manifest_mismatch_wipes_the_synced_tables_and_starts_again)
{
    tnode a, b;
    memset(&a, 0, sizeof a);
    snprintf(a.id, sizeof a.id, "node-a");
    gs_error err;
    gs_error_init(&err);
    const char *yaml = "bus: rogue\npeers: [node-b]\n";
    cr_assert_eq(gs_plugin_load_builtin("memory", "memory", GS_KIND_REPL_TRANSPORT, &a.tp, &err),
                 GS_OK);
    cr_assert_eq(gs_cfg_load_string(yaml, strlen(yaml), "a.yaml", &a.tdoc, &err), GS_OK);
    const gs_plugin_descriptor *d = a.tp->desc;
    a.tcfg = gs_calloc(1, d->config_struct_size);
    cr_assert_eq(gs_cfg_fill(a.tdoc, a.tdoc->root, "m", d->config_keys, d->config_key_count,
                             d->config_key_size, a.tcfg, &a.tarena, &err),
                 GS_OK);
    const gs_repl_transport_vtable *tv = d->vtable;
    cr_assert_eq(tv->create(&h_host, a.tcfg, "node-a", &a.tinst, &err), GS_OK);
    inbox in;
    memset(&in, 0, sizeof in);
    pthread_mutex_init(&in.m, NULL);
    pthread_cond_init(&in.c, NULL);
    gs_repl_events ev = {
        .struct_size = sizeof ev, .user = &in, .on_message = inbox_message, .on_peer = inbox_peer};
    cr_assert_eq(tv->start(a.tinst, &ev, &err), GS_OK);

    tnode_open(&b, dir, "node-b");
    gs_repl_options o;
    gs_repl_options_default(&o);
    o.batch_interval_ms = 20;
    tnode_start(&b, "replica", TO_A, 1, "bus: rogue\npeers: [node-a]\n", &o);
    int i = inbox_wait(&in, GS_SMSG_REQUEST, 0);
    char rid[64];
    snprintf(rid, sizeof rid, "%s", in.msgs[i].request.request_id);
    cr_assert(in.msgs[i].request.supports_stream_verification);

    /* schema, then one batch of two rows */
    char *schema[] = {"CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"};
    char sum[65];
    cr_assert_eq(gs_repl_strings_checksum(schema, 1, sum, &err), GS_OK);
    gs_sync_message m;
    memset(&m, 0, sizeof m);
    m.kind = GS_SMSG_BATCH;
    m.batch.request_id = rid;
    m.batch.table = "__schema__";
    m.batch.schema = schema;
    m.batch.nschema = 1;
    m.batch.checksum = sum;
    m.batch.is_last_batch_for_table = 1;
    m.batch.total_tables = 1;
    rogue_send(&a, &m);
    i = inbox_wait(&in, GS_SMSG_ACK, 0);
    cr_assert(in.msgs[i].ack.success, "schema refused: %s", in.msgs[i].ack.error);

    gs_rrow rows[2];
    memset(rows, 0, sizeof rows);
    for (int r = 0; r < 2; r++) {
        gs_rval id = {.type = GS_RVAL_INT, .i = r + 1};
        gs_rval v;
        gs_value tv2 = {.type = GS_VALUE_TEXT, .u.text = {"row", 3}};
        gs_rval_from_value(&v, &tv2, &err);
        gs_rrow_add_take(&rows[r], "id", &id, &err);
        gs_rrow_add_take(&rows[r], "v", &v, &err);
    }
    cr_assert_eq(gs_repl_rows_checksum(rows, 2, sum, &err), GS_OK);
    memset(&m, 0, sizeof m);
    m.kind = GS_SMSG_BATCH;
    m.batch.request_id = rid;
    m.batch.table = "t";
    m.batch.rows = rows;
    m.batch.nrows = 2;
    m.batch.checksum = sum;
    m.batch.is_last_batch_for_table = 1;
    rogue_send(&a, &m);
    i = inbox_wait(&in, GS_SMSG_ACK, 1);
    cr_assert(in.msgs[i].ack.success, "rows refused: %s", in.msgs[i].ack.error);
    cr_assert_eq(table_rows(b.path, "t"), 2);

    /* a manifest whose digest does not match what was streamed */
    gs_sync_manifest mf = {"t", 2, NULL, "00"};
    memset(&m, 0, sizeof m);
    m.kind = GS_SMSG_COMPLETE;
    m.complete.request_id = rid;
    m.complete.snapshot_seq = 7;
    m.complete.manifests = &mf;
    m.complete.nmanifests = 1;
    rogue_send(&a, &m);
    /* the joiner wipes and asks again from scratch */
    i = inbox_wait(&in, GS_SMSG_REQUEST, 1);
    cr_assert_eq(in.msgs[i].request.ncompleted, 0, "a wiped sync resumes nothing");
    cr_assert_neq(strcmp(in.msgs[i].request.request_id, rid), 0, "a new request id");
    cr_assert_eq(table_rows(b.path, "t"), 0, "the synced rows were wiped");
    cr_assert_neq(strcmp(gs_repl_sync_phase(b.e), "ready"), 0);
    gs_error last;
    gs_error_init(&last);
    gs_repl_last_error(b.e, &last);
    cr_assert_str_eq(last.code, "SYNC_ERROR", "%s", last.message);

    /* an out-of-order batch is refused */
    char rid2[64];
    snprintf(rid2, sizeof rid2, "%s", in.msgs[i].request.request_id);
    memset(&m, 0, sizeof m);
    m.kind = GS_SMSG_BATCH;
    m.batch.request_id = rid2;
    m.batch.table = "__schema__";
    m.batch.schema = schema;
    m.batch.nschema = 1;
    cr_assert_eq(gs_repl_strings_checksum(schema, 1, sum, &err), GS_OK);
    m.batch.checksum = sum;
    m.batch.is_last_batch_for_table = 1;
    rogue_send(&a, &m);
    inbox_wait(&in, GS_SMSG_ACK, 2);
    cr_assert_eq(gs_repl_rows_checksum(rows, 2, sum, &err), GS_OK);
    memset(&m, 0, sizeof m);
    m.kind = GS_SMSG_BATCH;
    m.batch.request_id = rid2;
    m.batch.table = "t";
    m.batch.batch_index = 3;
    m.batch.rows = rows;
    m.batch.nrows = 2;
    m.batch.checksum = sum;
    rogue_send(&a, &m);
    i = inbox_wait(&in, GS_SMSG_ACK, 3);
    cr_assert(!in.msgs[i].ack.success, "an out-of-order batch was accepted");
    /* and a batch whose checksum does not match its rows */
    m.batch.batch_index = 0;
    m.batch.checksum = "0000000000000000000000000000000000000000000000000000000000000000";
    rogue_send(&a, &m);
    i = inbox_wait(&in, GS_SMSG_ACK, 4);
    cr_assert(!in.msgs[i].ack.success, "a batch with a bad checksum was accepted");
    cr_assert_eq(table_rows(b.path, "t"), 0);

    for (int r = 0; r < 2; r++) {
        for (size_t c = 0; c < rows[r].n; c++) {
            gs_free(rows[r].names[c]);
            gs_rval_free(&rows[r].vals[c]);
        }
        gs_free(rows[r].names);
        gs_free(rows[r].vals);
    }
    tnode_close(&b);
    tv->stop(a.tinst);
    tnode_stop(&a);
    inbox_free(&in);
}

/* ---- a joiner that reports no position after its sync (as a reference replica does) ---- */

static void joiner_send(tnode *r, const gs_sync_message *m)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_sync_message_encode(m, &bytes, &len, &err), GS_OK);
    cr_assert_eq(((const gs_repl_transport_vtable *)r->tp->desc->vtable)
                     ->send(r->tinst, "node-a", GS_REPL_MSG_SYNC, 0, bytes, len, &err),
                 GS_OK, "%s", err.message);
    gs_free(bytes);
}

/* The i-th sync message the joiner received (waits, bounded). */
static gs_sync_message *joiner_next(inbox *in, int i)
{
    gs_sync_message *m = inbox_get(in, i, 20000);
    cr_assert_not_null(m, "sync message %d never arrived", i);
    return m;
}

Test(repl_sync, a_joiner_that_reports_no_position_after_its_sync_is_streamed_the_rest)
{
    /* Spec 03 First Sync: the joiner goes on from snapshotSeq. A reference-implementation
     * replica reports its applied position only when it connects, never after the sync, so
     * the primary must stream what follows the snapshot without waiting for a report. */
    tnode a, b;
    tnode_open(&a, dir, "node-a");
    gs_repl_options o;
    gs_repl_options_default(&o);
    o.batch_interval_ms = 20;
    tnode_start(&a, "primary", A_PEERS, 1, "bus: quiet\npeers: [node-b]\n", &o);
    exec_ok(a.db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
    exec_ok(a.db, "INSERT INTO t VALUES (1, 'one'), (2, 'two')");

    /* node-b: a bare memory-transport endpoint driven by hand */
    memset(&b, 0, sizeof b);
    snprintf(b.id, sizeof b.id, "node-b");
    gs_error err;
    gs_error_init(&err);
    const char *yaml = "bus: quiet\npeers: [node-a]\n";
    cr_assert_eq(gs_plugin_load_builtin("memory", "memory", GS_KIND_REPL_TRANSPORT, &b.tp, &err),
                 GS_OK);
    cr_assert_eq(gs_cfg_load_string(yaml, strlen(yaml), "b.yaml", &b.tdoc, &err), GS_OK);
    const gs_plugin_descriptor *d = b.tp->desc;
    b.tcfg = gs_calloc(1, d->config_struct_size);
    cr_assert_eq(gs_cfg_fill(b.tdoc, b.tdoc->root, "m", d->config_keys, d->config_key_count,
                             d->config_key_size, b.tcfg, &b.tarena, &err),
                 GS_OK);
    const gs_repl_transport_vtable *tv = d->vtable;
    cr_assert_eq(tv->create(&h_host, b.tcfg, "node-b", &b.tinst, &err), GS_OK);
    inbox in;
    memset(&in, 0, sizeof in);
    pthread_mutex_init(&in.m, NULL);
    pthread_cond_init(&in.c, NULL);
    gs_repl_events ev = {
        .struct_size = sizeof ev, .user = &in, .on_message = inbox_message, .on_peer = inbox_peer};
    cr_assert_eq(tv->start(b.tinst, &ev, &err), GS_OK);

    gs_sync_message m;
    memset(&m, 0, sizeof m);
    m.kind = GS_SMSG_REQUEST;
    m.request.request_id = "req-quiet-1";
    m.request.joiner_node_id = "node-b";
    m.request.supports_stream_verification = 1;
    joiner_send(&b, &m);
    int64_t snapshot = -1;
    for (int i = 0; snapshot < 0; i++) {
        gs_sync_message *got = joiner_next(&in, i);
        if (got->kind == GS_SMSG_COMPLETE) {
            snapshot = got->complete.snapshot_seq;
            break;
        }
        cr_assert_eq(got->kind, GS_SMSG_BATCH, "unexpected sync message kind %d", got->kind);
        memset(&m, 0, sizeof m);
        m.kind = GS_SMSG_ACK;
        m.ack.request_id = "req-quiet-1";
        m.ack.joiner_node_id = "node-b";
        m.ack.table = got->batch.table;
        m.ack.batch_index = got->batch.batch_index;
        m.ack.success = 1;
        joiner_send(&b, &m);
    }
    cr_assert_geq(snapshot, 2, "the snapshot holds the table and its rows");

    /* No position report from node-b; a write after the snapshot must reach it anyway. */
    exec_ok(a.db, "INSERT INTO t VALUES (3, 'after the snapshot')");
    struct timespec ts = gs_test_realtime_in(10000);
    pthread_mutex_lock(&in.m);
    while (in.batches == 0)
        if (pthread_cond_timedwait(&in.c, &in.m, &ts) != 0)
            break;
    int batches = in.batches;
    int64_t from = in.first_from_seq;
    pthread_mutex_unlock(&in.m);
    cr_assert_gt(batches, 0,
                 "the primary never streamed past the snapshot to a joiner that "
                 "reported no position");
    cr_assert_eq(from, snapshot + 1, "the stream resumes right after snapshotSeq %lld",
                 (long long)snapshot);

    tnode_close(&a);
    tv->stop(b.tinst);
    tnode_stop(&b);
    inbox_free(&in);
}
