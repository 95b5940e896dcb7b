/*
 * The bounded replication log (issue 8, item 3): databases[].cdc.max_log_bytes /
 * max_log_changes / log_warn_bytes. Compaction keeps exactly the newest change per row (plus
 * what a consumer without the row needs) and every DDL row; past the bound the oldest changes
 * are pruned although a replica needs them, and that replica is told to resync and does; a
 * replica below the compacted range catches up from it; the warning is logged once per
 * crossing; the size is a metric.
 */
#include "repl_harness.h"

#include "api/metrics.h"
#include "db/cdc.h"
#include "db/cdc_internal.h"
#include "db/registry.h"
#include "node/settings.h"

#include <fcntl.h>
#include <stdlib.h>

H_REPL_SUITE(repl_log_bound, 240, GS_LOG_INFO)

/* ---- stderr capture: gs_log writes one line per event to fd 2 ---- */

static int saved_stderr = -1;
static char log_path[PATH_MAX + 16];

static void capture_start(void)
{
    snprintf(log_path, sizeof log_path, "%s/captured.log", dir);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(fd >= 0);
    fflush(stderr);
    saved_stderr = dup(2);
    cr_assert(saved_stderr >= 0);
    cr_assert(dup2(fd, 2) >= 0);
    close(fd);
}

/* Stop capturing; the captured text (gs_free it). */
static char *capture_stop(void)
{
    fflush(stderr);
    if (saved_stderr >= 0) {
        dup2(saved_stderr, 2);
        close(saved_stderr);
        saved_stderr = -1;
    }
    FILE *f = fopen(log_path, "r");
    cr_assert(f);
    gs_buf b;
    gs_buf_init(&b);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        gs_buf_append(&b, chunk, n);
    fclose(f);
    size_t len;
    char *s = gs_buf_take(&b, &len);
    cr_assert(s);
    /* show it, as the test would have without the capture */
    fputs(s, stderr);
    return s;
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* The log crossed db's warning mark at least once, and its WARN and its all-clear INFO
 * alternate, starting with a WARN: one line per crossing, never one per retention pass (how
 * many crossings there are depends on when the passes measure: the log can dip under the
 * mark between rounds of writes). */
static void assert_warned_per_crossing(const char *logged, const char *db)
{
    char warn[160], clear[160];
    snprintf(warn, sizeof warn, "database '%s': the change log passed cdc.log_warn_bytes", db);
    snprintf(clear, sizeof clear, "database '%s': the change log is back under", db);
    int warns = 0, expect_warn = 1;
    for (const char *p = logged; p && *p;) {
        const char *w = strstr(p, warn), *c = strstr(p, clear);
        if (!w && !c)
            break;
        int is_warn = w && (!c || w < c);
        cr_assert_eq(is_warn, expect_warn, "a %s line where a %s line was due",
                     is_warn ? "WARN" : "back-under", expect_warn ? "WARN" : "back-under");
        warns += is_warn;
        expect_warn = !is_warn;
        p = is_warn ? w + strlen(warn) : c + strlen(clear);
    }
    cr_assert_geq(warns, 1, "the log passed its warning mark without a WARN");
}

/* ---- the log, read directly from the file ---- */

static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    return db;
}

static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = raw_open(path);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    sqlite3_close(db);
}

static int64_t raw_int(const char *path, const char *sql)
{
    sqlite3 *db = raw_open(path);
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s", sql);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* The log as "table:OP:row_id" lines in seq order. */
static char *log_listing(const char *path)
{
    sqlite3 *db = raw_open(path);
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT table_name, operation, row_id FROM _sirannon_changes "
                                    "ORDER BY seq",
                                    -1, &st, NULL),
                 SQLITE_OK);
    gs_buf b;
    gs_buf_init(&b);
    while (sqlite3_step(st) == SQLITE_ROW)
        gs_buf_printf(&b, "%s:%s:%s\n", sqlite3_column_text(st, 0), sqlite3_column_text(st, 1),
                      sqlite3_column_text(st, 2));
    sqlite3_finalize(st);
    sqlite3_close(db);
    size_t len;
    char *s = gs_buf_take(&b, &len);
    return s ? s : gs_strdup("");
}

/* The byte estimate computed independently of the retention pass. */
#define ROW_BYTES                                                                                  \
    "sum(length(table_name) + length(row_id) + coalesce(length(old_data), 0) + "                   \
    "coalesce(length(new_data), 0) + length(node_id) + length(tx_id) + length(hlc) + 32)"

static void set_bound(gs_database *db, int64_t bytes, int64_t changes, int64_t warn)
{
    db->opts.cdc_max_log_bytes = bytes;
    db->opts.cdc_max_log_changes = changes;
    db->opts.cdc_log_warn_bytes = warn;
    atomic_store(&db->cdc->log_next_check, 0);
}

static void ddl_row(const char *path, const char *stmt)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO _sirannon_changes (table_name, operation, row_id, changed_at, new_data) "
             "VALUES ('__ddl__', 'DDL', '', (julianday('now') - 2440587.5) * 86400.0, "
             "json_object('ddlStatement', '%s'))",
             stmt);
    raw_exec(path, sql);
}

/* ---- compaction on one database ---- */

static void ignore_event(void *user, const char *json, size_t len, uint64_t seq)
{
    (void)user;
    (void)json;
    (void)len;
    (void)seq;
}

/* Subscribe to table resuming after since_seq, unsubscribe; the answer's resync flag. */
static int resume_resync(gs_database *db, const char *table, uint64_t since_seq)
{
    gs_cdc_subscribe_request req = {
        .table = table, .has_since = 1, .since_seq = since_seq, .on_event = ignore_event};
    gs_cdc_sub *sub = NULL;
    gs_cdc_subscribed info;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_cdc_subscribe(db, &req, &sub, &info, &err), GS_OK, "%s", err.message);
    gs_db_cdc_unsubscribe(db, sub);
    return info.resync;
}

Test(repl_log_bound, compaction_keeps_the_newest_change_per_row_and_every_ddl)
{
    tnode n;
    tnode_open(&n, dir, "solo");
    set_bound(n.db, 0, 0, 0);
    exec_ok(n.db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
    exec_ok(n.db, "CREATE TABLE c (a INTEGER, b INTEGER, v TEXT, PRIMARY KEY (a, b))");
    exec_ok(n.db, "CREATE TABLE r (v TEXT)");
    gs_error err;
    gs_error_init(&err);
    const char *tables[] = {"t", "c", "r"};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(gs_db_cdc_watch(n.db, tables[i], &err), GS_OK, "%s", err.message);
    /* the row index replication creates (gs_repl_tables_ensure); compaction needs it */
    raw_exec(n.path, "CREATE INDEX IF NOT EXISTS idx__sirannon_changes_row ON _sirannon_changes "
                     "(table_name, row_id)");
    static const char *const script[] = {
        "INSERT INTO t VALUES (1, 'a')",      /* kept: an update of an absent row is skipped */
        "UPDATE t SET v = 'b' WHERE id = 1",  /* superseded by the last update of row 1 */
        "UPDATE t SET v = 'c' WHERE id = 1",  /* superseded */
        "UPDATE t SET v = 'd' WHERE id = 1",  /* superseded */
        "INSERT INTO t VALUES (2, 'a')",      /* superseded by the delete */
        "UPDATE t SET v = 'b' WHERE id = 2",  /* superseded by the delete */
        "DELETE FROM t WHERE id = 2",         /* kept: the newest of row 2 */
        "INSERT INTO t VALUES (3, 'a')",      /* superseded by the delete */
        "DELETE FROM t WHERE id = 3",         /* kept: a later insert does not supersede it */
        "INSERT INTO t VALUES (3, 'b')",      /* kept */
        "UPDATE t SET v = 'c' WHERE id = 3",  /* kept: newest */
        "INSERT INTO t VALUES (5, 'a')",      /* kept */
        "UPDATE t SET id = 50 WHERE id = 5",  /* kept: the key changed */
        "UPDATE t SET v = 'b' WHERE id = 50", /* kept: newest */
        "INSERT INTO c VALUES (1, 1, 'a')",   /* composite key: never compacted */
        "UPDATE c SET v = 'b' WHERE a = 1",   /* kept */
        "UPDATE c SET v = 'c' WHERE a = 1",   /* kept */
        "INSERT INTO r VALUES ('a')",         /* rowid table: never compacted */
        "UPDATE r SET v = 'b'",               /* kept */
        "UPDATE r SET v = 'c'",               /* kept */
        NULL,                                 /* a DDL row: ADD COLUMN (not a barrier) */
        "UPDATE t SET v = 'e' WHERE id = 1",  /* kept: newest of row 1 */
    };
    int64_t seq_of_delete3 = 0;
    for (size_t i = 0; i < sizeof script / sizeof script[0]; i++) {
        if (script[i])
            exec_ok(n.db, script[i]);
        else
            ddl_row(n.path, "ALTER TABLE t ADD COLUMN w TEXT");
        if (i == 8)
            seq_of_delete3 = raw_int(n.path, "SELECT max(seq) FROM _sirannon_changes");
    }
    cr_assert_eq(raw_int(n.path, "SELECT count(*) FROM _sirannon_changes"), 22);

    /* a replica at seq 0 holds everything; the bound is 20 rows */
    atomic_store(&n.db->cdc->repl_hold, 0);
    set_bound(n.db, 0, 20, 0);
    cr_assert_eq(gs_cdc_prune_now(n.db, &err), GS_OK, "%s", err.message);
    char *got = log_listing(n.path);
    cr_assert_str_eq(got, "t:INSERT:1\n"
                          "t:DELETE:2\n"
                          "t:DELETE:3\n"
                          "t:INSERT:3\n"
                          "t:UPDATE:3\n"
                          "t:INSERT:5\n"
                          "t:UPDATE:50\n"
                          "t:UPDATE:50\n"
                          "c:INSERT:1-1\n"
                          "c:UPDATE:1-1\n"
                          "c:UPDATE:1-1\n"
                          "r:INSERT:1\n"
                          "r:UPDATE:1\n"
                          "r:UPDATE:1\n"
                          "__ddl__:DDL:\n"
                          "t:UPDATE:1\n");
    gs_free(got);
    gs_change_log_stats s;
    cr_assert_eq(gs_db_change_log_stats(n.db, &s, &err), GS_OK);
    cr_assert_eq(s.changes, 16);
    cr_assert_eq(s.bytes, raw_int(n.path, "SELECT " ROW_BYTES " FROM _sirannon_changes"));
    cr_assert_eq(s.compacted_total, 6);
    cr_assert_eq(s.forced_total, 0);
    cr_assert_eq(s.pruned_seq, 0, "compaction alone prunes nothing");
    cr_assert_eq(s.max_changes, 20);
    /* the newest change compaction deleted is the insert of row 3 just before its delete: a
     * subscriber resuming below it would miss a change and is told to resync; one resuming
     * at it misses nothing */
    uint64_t top = (uint64_t)seq_of_delete3 - 1;
    cr_assert_eq(raw_int(n.path, "SELECT value FROM _sirannon_meta WHERE key = "
                                 "'cdc_compacted_seq'"),
                 (int64_t)top);
    cr_assert_eq(resume_resync(n.db, "t", top - 1), 1, "resumed below a compacted change");
    cr_assert_eq(resume_resync(n.db, "t", top), 0, "resumed at the newest compacted change");

    /* a schema change that is not additive is a barrier: older changes stay as they are */
    ddl_row(n.path, "DROP TABLE zz");
    exec_ok(n.db, "UPDATE t SET v = 'f' WHERE id = 1"); /* superseded by the next */
    exec_ok(n.db, "UPDATE t SET v = 'g' WHERE id = 1");
    set_bound(n.db, 0, 17, 0); /* 19 rows; compaction takes one, then 3 go to reach 15 */
    cr_assert_eq(gs_cdc_prune_now(n.db, &err), GS_OK, "%s", err.message);
    got = log_listing(n.path);
    cr_assert_str_eq(got, "t:INSERT:3\n"
                          "t:UPDATE:3\n"
                          "t:INSERT:5\n"
                          "t:UPDATE:50\n"
                          "t:UPDATE:50\n"
                          "c:INSERT:1-1\n"
                          "c:UPDATE:1-1\n"
                          "c:UPDATE:1-1\n"
                          "r:INSERT:1\n"
                          "r:UPDATE:1\n"
                          "r:UPDATE:1\n"
                          "__ddl__:DDL:\n"
                          "t:UPDATE:1\n"
                          "__ddl__:DDL:\n"
                          "t:UPDATE:1\n");
    gs_free(got);
    cr_assert_eq(gs_db_change_log_stats(n.db, &s, &err), GS_OK);
    cr_assert_eq(s.changes, 15);
    cr_assert_eq(s.bytes, raw_int(n.path, "SELECT " ROW_BYTES " FROM _sirannon_changes"));
    cr_assert_eq(s.compacted_total, 7);
    cr_assert_eq(s.forced_total, 3);
    cr_assert_eq(s.pruned_seq, seq_of_delete3, "pruned up to the third oldest change");
    cr_assert_eq(raw_int(n.path, "SELECT value FROM _sirannon_meta WHERE key = 'cdc_pruned_seq'"),
                 seq_of_delete3);
    tnode_close(&n);
}

Test(repl_log_bound, stats_and_metrics_and_the_warning_once_per_crossing)
{
    tnode n;
    tnode_open(&n, dir, "warn");
    exec_ok(n.db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_cdc_watch(n.db, "t", &err), GS_OK, "%s", err.message);
    gs_change_log_stats s;
    cr_assert_eq(gs_db_change_log_stats(n.db, &s, &err), GS_OK);
    cr_assert_eq(s.changes, -1, "not measured before the first pass");
    cr_assert_eq(s.max_bytes, 1073741824, "the default bound is 1 GiB");
    cr_assert_eq(s.warn_bytes, 1073741824 / 10 * 8, "the default warning is at 80%%");

    atomic_store(&n.db->cdc->repl_hold, 0); /* a replica that never comes back */
    set_bound(n.db, 20000, 0, 10000);
    capture_start();
    for (int round = 0; round < 2; round++) {
        /* well past the bound: nothing is superseded, so the oldest are pruned */
        for (int i = 0; i < 400; i++) {
            char sql[160];
            snprintf(sql, sizeof sql,
                     "INSERT INTO t VALUES (%d, 'a value of some length to fill the log %d')",
                     round * 1000 + i, i);
            exec_ok(n.db, sql);
            if (i % 50 == 49)
                cr_assert_eq(gs_cdc_prune_now(n.db, &err), GS_OK, "%s", err.message);
        }
        cr_assert_eq(gs_db_change_log_stats(n.db, &s, &err), GS_OK);
        cr_assert_leq(s.bytes, 20000, "the log stays under its bound: %lld", (long long)s.bytes);
        cr_assert_eq(s.bytes, raw_int(n.path, "SELECT " ROW_BYTES " FROM _sirannon_changes"));
        cr_assert_eq(s.changes, raw_int(n.path, "SELECT count(*) FROM _sirannon_changes"));
        cr_assert_gt(s.forced_total, 0);
        cr_assert_gt(s.pruned_seq, 0);
        /* everyone caught up and the rows aged: the log falls back under the warning */
        atomic_store(&n.db->cdc->repl_hold, UINT64_MAX);
        raw_exec(n.path, "UPDATE _sirannon_changes SET changed_at = 0");
        cr_assert_eq(gs_cdc_prune_now(n.db, &err), GS_OK, "%s", err.message);
        atomic_store(&n.db->cdc->repl_hold, 0);
    }
    char *logged = capture_stop();
    cr_assert_eq(count_of(logged, "passed cdc.log_warn_bytes"), 2, "one WARN per crossing");
    cr_assert_eq(count_of(logged, "back under cdc.log_warn_bytes"), 2, "one INFO per fall");
    cr_assert_geq(count_of(logged, "told to resync"), 1, "forced pruning says what it did");
    gs_free(logged);

    cr_assert_eq(gs_db_change_log_stats(n.db, &s, &err), GS_OK);
    int64_t pruned = s.pruned_seq;
    cr_assert_gt(pruned, 0);
    tnode_close(&n);

    /* the metrics of the same file, served through a registry */
    gs_registry *reg = gs_registry_new(NULL);
    cr_assert_not_null(reg);
    gs_db_options o;
    gs_db_options_default(&o);
    o.read_pool_size = 1;
    o.cdc_max_log_bytes = 20000;
    cr_assert_eq(gs_registry_open(reg, "warn", n.path, &o, &err), GS_OK, "%s", err.message);
    gs_database *db = gs_registry_acquire(reg, "warn", &err);
    cr_assert_not_null(db, "%s", err.message);
    cr_assert_eq(gs_cdc_prune_now(db, &err), GS_OK, "%s", err.message);
    cr_assert_eq(gs_db_change_log_stats(db, &s, &err), GS_OK);
    cr_assert_eq(s.pruned_seq, pruned, "pruned_seq survives a restart");
    cr_assert_eq(s.changes, raw_int(n.path, "SELECT count(*) FROM _sirannon_changes"));
    gs_registry_release(reg, db);
    gs_metrics *m = gs_metrics_new(0);
    gs_buf b;
    gs_buf_init(&b);
    cr_assert_eq(gs_metrics_render(m, reg, &b, &err), GS_OK, "%s", err.message);
    char want[256];
    snprintf(want, sizeof want, "gatestream_repl_log_changes{db=\"warn\"} %lld\n",
             (long long)s.changes);
    cr_assert(strstr(b.data, want), "missing %s in:\n%s", want, b.data);
    snprintf(want, sizeof want, "gatestream_repl_log_bytes{db=\"warn\"} %lld\n",
             (long long)s.bytes);
    cr_assert(strstr(b.data, want), "missing %s", want);
    snprintf(want, sizeof want, "gatestream_repl_log_pruned_seq{db=\"warn\"} %lld\n",
             (long long)pruned);
    cr_assert(strstr(b.data, want), "missing %s", want);
    cr_assert(strstr(b.data, "gatestream_repl_log_pruned_total{db=\"warn\"} 0\n"));
    cr_assert(strstr(b.data, "gatestream_repl_log_compacted_total{db=\"warn\"} 0\n"));
    cr_assert(strstr(b.data, "gatestream_repl_log_max_bytes{db=\"warn\"} 20000\n"));
    cr_assert(strstr(b.data, "# TYPE gatestream_repl_log_bytes gauge\n"));
    gs_buf_free(&b);
    gs_metrics_free(m);
    gs_registry_free(reg);
}

/* ---- three nodes ---- */

static const gs_repl_peer_cfg A_PEERS[] = {{"node-b", "replica"}, {"node-c", "replica"}};
static const gs_repl_peer_cfg TO_A[] = {{"node-a", "primary"}};

static gs_repl_options fast_options(void)
{
    gs_repl_options o;
    gs_repl_options_default(&o);
    o.batch_interval_ms = 20;
    o.ack_timeout_ms = 500;
    o.sync_ack_timeout_ms = 5000;
    o.write_concern_timeout_ms = 2000;
    return o;
}

static void start_cluster(tnode n[3], const char *bus, const gs_repl_options *o)
{
    char y[256];
    snprintf(y, sizeof y, "bus: %s\npeers: [node-b, node-c]\n", bus);
    tnode_start(&n[0], "primary", A_PEERS, 2, y, o);
    for (int i = 1; i < 3; i++) {
        snprintf(y, sizeof y, "bus: %s\npeers: [node-a]\n", bus);
        tnode_start(&n[i], "replica", TO_A, 1, y, o);
    }
}

static void create_schema(gs_database *db)
{
    exec_ok(db, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, "
                "data BLOB)");
    exec_ok(db, "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, item INTEGER, note "
                "TEXT)");
}

/* One statement per call through the replication path; ops mixes inserts, updates of a small
 * set of hot rows, deletes and re-inserts (so a good part of the log is superseded). */
static void churn(gs_database *db, int ops, unsigned seed, int rows, int with_inserts)
{
    for (int i = 0; i < ops; i++) {
        unsigned r = (unsigned)rand_r(&seed);
        int id = 1 + (int)(r % (unsigned)rows);
        char sql[256];
        int kind = (int)((r >> 8) % 10);
        if (with_inserts && kind == 0)
            snprintf(sql, sizeof sql,
                     "INSERT INTO audit (item, note) VALUES (%d, 'note %u with some text')", id, r);
        else if (kind == 1)
            snprintf(sql, sizeof sql, "DELETE FROM items WHERE id = %d", id);
        else
            snprintf(sql, sizeof sql,
                     "INSERT INTO items (id, name, qty, price, data) VALUES (%d, 'item %u', %u, "
                     "%u.5, x'%08x') ON CONFLICT (id) DO UPDATE SET name = excluded.name, qty = "
                     "excluded.qty, price = excluded.price",
                     id, r, r % 1000, r % 77, r);
        exec_ok(db, sql);
    }
}

static int64_t file_log_bytes(const char *path)
{
    return raw_int(path, "SELECT coalesce(" ROW_BYTES ", 0) FROM _sirannon_changes");
}

/* Wait (bounded) until the retention ticks brought the log under max bytes. */
static int64_t wait_under(tnode *p, int64_t max)
{
    int64_t deadline = gs_test_now_ms() + 10000, bytes = 0;
    while (gs_test_now_ms() < deadline) {
        bytes = file_log_bytes(p->path);
        if (bytes <= max)
            return bytes;
        usleep(20000); /* polling a condition, bounded by the deadline */
    }
    return bytes;
}

Test(repl_log_bound, a_replica_below_the_compacted_range_catches_up_from_it)
{
    tnode n[3];
    open_cluster(n, dir);
    create_schema(n[0].db);
    gs_repl_options o = fast_options();
    start_cluster(n, "compact", &o);
    tnode *reps[] = {&n[1], &n[2]};
    cr_assert(wait_converged(&n[0], reps, 2, 30000));
    churn(n[0].db, 200, 7, 40, 0); /* node-c has these */
    cr_assert(wait_converged(&n[0], reps, 2, 30000));

    set_bound(n[0].db, 150000, 0, 0);
    capture_start();
    tnode_control(&n[0], "partition node-a node-c");
    /* 3,000 upserts and deletes of 40 rows: far past the bound uncompacted, well under it
     * compacted (at most three changes per row survive) */
    for (int round = 0; round < 6; round++) {
        churn(n[0].db, 500, 100 + (unsigned)round, 40, 0);
        int64_t bytes = wait_under(&n[0], 150000);
        cr_assert_leq(bytes, 150000, "round %d: the log is at %lld bytes", round, (long long)bytes);
    }
    tnode *b_only[] = {&n[1]};
    cr_assert(wait_converged(&n[0], b_only, 1, 30000));
    gs_error err;
    gs_change_log_stats s;
    cr_assert_eq(gs_db_change_log_stats(n[0].db, &s, &err), GS_OK);
    cr_assert_gt(s.compacted_total, 1000, "compacted %lld", (long long)s.compacted_total);
    cr_assert_eq(s.forced_total, 0, "compaction was enough");
    int64_t c_pos = gs_repl_position(n[2].e);
    cr_assert_geq((int64_t)s.pruned_seq, 0);
    cr_assert_leq(s.pruned_seq, c_pos, "nothing node-c needs was pruned");

    tnode_control(&n[0], "heal");
    cr_assert(wait_converged(&n[0], reps, 2, 30000), "node-c did not catch up");
    char *logged = capture_stop();
    cr_assert_eq(count_of(logged, "resyncing from"), 0, "node-c caught up from the log");
    gs_free(logged);
    assert_same(&n[0], &n[1]);
    assert_same(&n[0], &n[2]);
    close_cluster(n);
}

Test(repl_log_bound, the_log_stays_bounded_and_a_replica_beyond_it_resyncs)
{
    tnode n[3];
    open_cluster(n, dir);
    create_schema(n[0].db);
    gs_repl_options o = fast_options();
    start_cluster(n, "bounded", &o);
    tnode *reps[] = {&n[1], &n[2]};
    cr_assert(wait_converged(&n[0], reps, 2, 30000));
    churn(n[0].db, 100, 3, 50, 1);
    cr_assert(wait_converged(&n[0], reps, 2, 30000));

    set_bound(n[0].db, 100000, 0, 80000);
    capture_start();
    tnode_control(&n[0], "partition node-a node-c");
    /* inserts that nothing supersedes, among upserts: compaction is not enough */
    int64_t most = 0;
    for (int round = 0; round < 8; round++) {
        churn(n[0].db, 400, 200 + (unsigned)round, 300, 1);
        int64_t bytes = wait_under(&n[0], 100000);
        cr_assert_leq(bytes, 100000, "round %d: the log is at %lld bytes", round, (long long)bytes);
        if (bytes > most)
            most = bytes;
    }
    tnode *b_only[] = {&n[1]};
    cr_assert(wait_converged(&n[0], b_only, 1, 30000), "the healthy replica converges");
    assert_same(&n[0], &n[1]);
    gs_error err;
    gs_change_log_stats s;
    cr_assert_eq(gs_db_change_log_stats(n[0].db, &s, &err), GS_OK);
    cr_assert_gt(s.forced_total, 0);
    int64_t c_pos = gs_repl_position(n[2].e);
    cr_assert_gt(s.pruned_seq, c_pos, "node-c is behind the pruned log");

    tnode_control(&n[0], "heal");
    cr_assert(wait_converged(&n[0], reps, 2, 60000), "node-c did not resync");
    char *logged = capture_stop();
    cr_assert_geq(count_of(logged, "told it to resync"), 1, "the primary says so");
    cr_assert_geq(count_of(logged, "resyncing from node-a"), 1, "node-c says why it resyncs");
    assert_warned_per_crossing(logged, "node-a");
    cr_assert_geq(count_of(logged, "although a replica needed them"), 1, "pruning says so");
    gs_free(logged);
    assert_same(&n[0], &n[2]);
    assert_same(&n[0], &n[1]);
    /* back in step: it streams again */
    churn(n[0].db, 50, 99, 300, 1);
    cr_assert(wait_converged(&n[0], reps, 2, 30000));
    assert_same(&n[0], &n[2]);
    close_cluster(n);
}

/* ---- configuration ---- */

static gs_status fill_settings(const char *yaml, gs_settings *s, gs_cfg_doc **doc,
                               gs_cfg_arena *arena, gs_error *err)
{
    memset(s, 0, sizeof *s);
    memset(arena, 0, sizeof *arena);
    cr_assert_eq(gs_cfg_load_string(yaml, strlen(yaml), "bound.yaml", doc, err), GS_OK, "%s",
                 err->message);
    size_t nkeys = 0;
    const gs_config_key *keys = gs_settings_keys(&nkeys);
    return gs_cfg_fill(*doc, (*doc)->root, "", keys, nkeys, sizeof(gs_config_key), s, arena, err);
}

Test(repl_log_bound, the_bound_is_configured_per_database_with_documented_defaults)
{
    gs_settings s;
    gs_cfg_doc *doc = NULL;
    gs_cfg_arena arena;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(fill_settings("databases:\n  - id: main\n", &s, &doc, &arena, &err), GS_OK, "%s",
                 err.message);
    cr_assert_eq(s.databases.count, 1);
    const gs_settings_db *d = s.databases.items;
    cr_assert_eq(d->cdc.max_log_bytes, 1073741824, "1 GiB by default");
    cr_assert_eq(d->cdc.max_log_changes, 0, "no row bound by default");
    cr_assert_eq(d->cdc.log_warn_bytes, 0, "0 = 80%% of max_log_bytes");
    gs_cfg_arena_free(&arena);
    gs_cfg_free(doc);

    cr_assert_eq(fill_settings("databases:\n  - id: main\n    cdc:\n      max_log_bytes: 5000000\n"
                               "      max_log_changes: 20000\n      log_warn_bytes: 4000000\n",
                               &s, &doc, &arena, &err),
                 GS_OK, "%s", err.message);
    d = s.databases.items;
    cr_assert_eq(d->cdc.max_log_bytes, 5000000);
    cr_assert_eq(d->cdc.max_log_changes, 20000);
    cr_assert_eq(d->cdc.log_warn_bytes, 4000000);
    gs_cfg_arena_free(&arena);
    gs_cfg_free(doc);

    cr_assert_neq(fill_settings("databases:\n  - id: main\n    cdc:\n      max_log_bytes: -1\n", &s,
                                &doc, &arena, &err),
                  GS_OK, "a negative bound is refused");
    cr_assert(strstr(err.message, "max_log_bytes"), "names the key: %s", err.message);
    gs_cfg_arena_free(&arena);
    gs_cfg_free(doc);
}
