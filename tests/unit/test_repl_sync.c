/*
 * First sync (spec 03 "First Sync"): a replica joining a primary that holds many rows copies
 * the snapshot while writes continue, verifies the manifests and reaches ready with every
 * table equal; a sync cut short resumes from its completed tables.
 *
 * Rows: 1,000,000 on the release build; 200,000 under the sanitizers, which run several
 * times slower (the protocol is the same; only the volume differs).
 */
#include "repl_harness.h"

#include <stdlib.h>

#if defined(__SANITIZE_ADDRESS__)
#define SYNC_ROWS 200000
#else
#define SYNC_ROWS 1000000
#endif

static char dir[PATH_MAX];

static void setup(void)
{
    h_host_init();
    gs_log_set_level(getenv("GS_TEST_LOG") ? GS_LOG_DEBUG : GS_LOG_WARN);
    gs_test_mkdtemp(dir, sizeof dir, "repl_sync");
}

static void teardown(void)
{
    if (!getenv("GS_TEST_KEEP"))
        gs_test_rmtree(dir);
}

TestSuite(repl_sync, .init = setup, .fini = teardown, .timeout = 600);

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
