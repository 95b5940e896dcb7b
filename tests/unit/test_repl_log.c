/* The replication log: the replication tables, outgoing batches read from the change log
 * (content, range, keys for every table shape, values, DDL rows, the 1000 limit, other
 * origins and unstamped rows), positions and peer state, "capture every table", and the
 * primary side of DDL replication in the writer (recorded in order, unsafe DDL refused without
 * a trace). Databases are real files under a mkdtemp directory. */
#include "repl/checksum.h"
#include "repl/hlc.h"
#include "repl_test_db.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

static char tmpdir[64];

static void setup(void)
{
    gs_test_mkdtemp(tmpdir, sizeof tmpdir, "repl-log");
}

static void teardown(void)
{
    gs_test_rmtree(tmpdir);
}

TestSuite(repl_log, .init = setup, .fini = teardown);

/* ---- helpers ---- */

static const gs_rval *val(const gs_rrow *r, const char *col)
{
    cr_assert_not_null(r, "no row (looking for %s)", col);
    int i = gs_rrow_find(r, col);
    cr_assert_geq(i, 0, "row has no column %s", col);
    return &r->vals[i];
}

static void expect_int(const gs_rrow *r, const char *col, int64_t v)
{
    const gs_rval *x = val(r, col);
    cr_expect_eq(x->type, GS_RVAL_INT, "%s: type %d", col, x->type);
    cr_expect_eq(x->i, v, "%s: %lld != %lld", col, (long long)x->i, (long long)v);
}

static void expect_text(const gs_rrow *r, const char *col, const char *v)
{
    const gs_rval *x = val(r, col);
    cr_expect_eq(x->type, GS_RVAL_TEXT, "%s: type %d", col, x->type);
    if (x->type == GS_RVAL_TEXT)
        cr_expect_str_eq((const char *)x->p, v, "%s", col);
}

/* Check the batch-level facts every batch must satisfy. */
static void expect_well_formed(const gs_repl_batch *b, const char *node, int64_t after)
{
    cr_assert_gt(b->nchanges, 0);
    cr_expect_str_eq(b->source_node_id, node);
    cr_expect_eq(b->from_seq, after + 1);
    cr_expect_eq(b->to_seq, b->changes[b->nchanges - 1].seq);
    char id[128];
    snprintf(id, sizeof id, "%s-%lld-%lld", node, (long long)b->from_seq, (long long)b->to_seq);
    cr_expect_str_eq(b->batch_id, id);
    cr_expect_null(b->group_id);
    cr_expect_eq(b->has_term, 0);
    char sum[65];
    gs_error err;
    cr_assert_eq(gs_repl_changes_checksum(b->changes, b->nchanges, sum, &err), GS_OK);
    cr_expect_str_eq(b->checksum, sum);
    const char *lo = b->changes[0].hlc, *hi = b->changes[0].hlc;
    int64_t prev = after;
    for (size_t i = 0; i < b->nchanges; i++) {
        const gs_repl_change *c = &b->changes[i];
        cr_expect_gt(c->seq, prev, "seq order");
        prev = c->seq;
        cr_expect_str_eq(c->node_id, node);
        cr_expect_gt(strlen(c->tx_id), 0, "stamped tx_id");
        gs_hlc_ts ts;
        cr_expect_eq(gs_hlc_decode(c->hlc, &ts, &err), GS_OK, "hlc %s", c->hlc);
        if (gs_hlc_compare(c->hlc, lo) < 0)
            lo = c->hlc;
        if (gs_hlc_compare(c->hlc, hi) > 0)
            hi = c->hlc;
    }
    cr_expect_str_eq(b->hlc_min, lo);
    cr_expect_str_eq(b->hlc_max, hi);
}

static gs_database *open_capturing(const char *name, const char *node)
{
    gs_database *db = rt_open(tmpdir, name, node);
    rt_capture_all(db);
    return db;
}

typedef struct pos_call {
    const char *peer;
    int64_t seq;
    const char *hlc;
    int64_t out;
    int op; /* 0 current, 1 applied, 2 save, 3 load, 4 ensure */
} pos_call;

static gs_status pos_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    pos_call *p = user;
    switch (p->op) {
    case 0: return gs_repl_current_seq(conn, &p->out, err);
    case 1: return gs_repl_applied_seq(conn, p->peer, &p->out, err);
    case 2: return gs_repl_peer_state_save(conn, p->peer, p->seq, p->hlc, err);
    case 3: return gs_repl_peer_state_load(conn, p->peer, &p->out, err);
    default: return gs_repl_tables_ensure(conn, err);
    }
}

static int64_t pos(gs_database *db, int op, const char *peer)
{
    pos_call p = {.op = op, .peer = peer};
    gs_error err;
    cr_assert_eq(rt_call(db, pos_fn, &p, &err), GS_OK, "%s: %s", err.code, err.message);
    return p.out;
}

static gs_status exec_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    return gs_conn_exec(conn, user, err);
}

/* An internal statement on the writer (not stamped: it bypasses the client path). */
static void internal_exec(gs_database *db, const char *sql)
{
    gs_error err;
    cr_assert_eq(rt_call(db, exec_fn, (void *)sql, &err), GS_OK, "%s: %s", sql, err.message);
}

/* ---- the tables ---- */

Test(repl_log, tables_are_the_spec_tables_and_idempotent)
{
    gs_database *db = rt_open(tmpdir, "a.db", "node-a");
    pos(db, 4, NULL);
    pos(db, 4, NULL);
    static const struct {
        const char *table, *cols;
    } want[] = {
        {"_sirannon_peer_state", "peer_node_id,last_acked_seq,last_received_hlc,updated_at"},
        {"_sirannon_applied_changes", "source_node_id,source_seq,applied_at"},
        {"_sirannon_column_versions", "table_name,row_id,column_name,hlc,node_id"},
        {"_sirannon_sync_state", "table_name,status,row_count,pk_hash,snapshot_seq,"
                                 "source_peer_id,started_at,completed_at,request_id"},
        {"_sirannon_meta", "key,value"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char sql[200];
        snprintf(sql, sizeof sql, "SELECT group_concat(name, ',') FROM pragma_table_info('%s')",
                 want[i].table);
        char *cols = rt_sql_text(db, sql);
        cr_assert_not_null(cols, "%s missing", want[i].table);
        cr_expect_str_eq(cols, want[i].cols, "%s", want[i].table);
        free(cols);
    }
    /* the primary keys of the spec */
    cr_expect_eq(rt_sql_int(db, "SELECT count(*) FROM pragma_table_info('_sirannon_applied_"
                                "changes') WHERE pk > 0"),
                 2);
    cr_expect_eq(rt_sql_int(db, "SELECT count(*) FROM pragma_table_info('_sirannon_column_"
                                "versions') WHERE pk > 0"),
                 3);
    /* no change log yet: no positions, no batches */
    cr_expect_eq(pos(db, 0, NULL), 0);
    gs_repl_batch b;
    int empty;
    rt_read_batch(db, "node-a", 0, 100, &b, &empty);
    cr_expect_eq(empty, 1);
    rt_close(db);
}

Test(repl_log, positions_and_peer_state)
{
    gs_database *db = rt_open(tmpdir, "a.db", "node-a");
    /* nothing exists yet: every position is 0 */
    cr_expect_eq(pos(db, 1, "node-b"), 0);
    cr_expect_eq(pos(db, 3, "node-b"), 0);
    pos(db, 4, NULL);
    cr_expect_eq(pos(db, 1, "node-b"), 0);
    internal_exec(db, "INSERT INTO _sirannon_applied_changes VALUES ('node-b', 7, 1.0), "
                      "('node-b', 9, 1.0), ('node-c', 3, 1.0)");
    cr_expect_eq(pos(db, 1, "node-b"), 9);
    cr_expect_eq(pos(db, 1, "node-c"), 3);
    cr_expect_eq(pos(db, 1, "node-x"), 0);

    pos_call p = {.op = 2, .peer = "node-b", .seq = 41, .hlc = "0000000003e8-0000-node-b"};
    gs_error err;
    cr_assert_eq(rt_call(db, pos_fn, &p, &err), GS_OK, "%s", err.message);
    cr_expect_eq(pos(db, 3, "node-b"), 41);
    p.seq = 42;
    p.hlc = NULL;
    cr_assert_eq(rt_call(db, pos_fn, &p, &err), GS_OK, "%s", err.message);
    cr_expect_eq(pos(db, 3, "node-b"), 42);
    cr_expect_eq(pos(db, 3, "node-c"), 0);
    char *row = rt_sql_dump(db, "SELECT peer_node_id, last_acked_seq, last_received_hlc, "
                                "typeof(updated_at), updated_at > 1600000000 FROM "
                                "_sirannon_peer_state");
    cr_expect_str_eq(row, "node-b|42||real|1");
    free(row);
    p.peer = "";
    cr_expect_eq(rt_call(db, pos_fn, &p, &err), GS_ERROR);
    cr_expect_str_eq(err.code, "INVALID_REQUEST");
    rt_close(db);
}

/* ---- capture every table ---- */

Test(repl_log, capture_all_watches_every_user_table)
{
    gs_database *db = rt_open(tmpdir, "a.db", "node-a");
    internal_exec(db, "CREATE TABLE t1 (id INTEGER PRIMARY KEY, v TEXT)");
    internal_exec(db, "CREATE TABLE t2 (a, b)");
    internal_exec(db, "CREATE VIRTUAL TABLE f USING fts5(body)");
    internal_exec(db, "CREATE VIEW v1 AS SELECT * FROM t1");
    cr_expect_eq(atomic_load(&db->cdc->capture_all), 0);
    rt_capture_all(db);
    cr_expect_eq(atomic_load(&db->cdc->capture_all), 1);
    cr_expect_eq(atomic_load(&db->cdc->stamping), 1);
    char *trg = rt_sql_dump(db, "SELECT DISTINCT tbl_name FROM sqlite_master WHERE type = "
                                "'trigger' ORDER BY 1");
    cr_expect_str_eq(trg, "t1\nt2", "triggers on %s", trg);
    free(trg);
    /* a write is captured and stamped */
    rt_exec(db, "INSERT INTO t2 VALUES (1, 2)");
    char *row = rt_sql_dump(db, "SELECT table_name, operation, node_id, length(tx_id) > 0, hlc "
                                "!= '' FROM _sirannon_changes");
    cr_expect_str_eq(row, "t2|INSERT|node-a|1|1");
    free(row);
    /* idempotent */
    rt_capture_all(db);
    cr_expect_eq(rt_sql_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"), 6);
    rt_close(db);
}

Test(repl_log, capture_all_refuses_a_table_that_cannot_carry_triggers)
{
    gs_database *db = rt_open(tmpdir, "a.db", "node-a");
    internal_exec(db, "CREATE TABLE \"bad name\" (a)");
    gs_error err;
    cr_expect_eq(rt_call(db, rt_capture_fn, db, &err), GS_ERROR);
    cr_expect_str_eq(err.code, "CDC_ERROR");
    cr_expect_not_null(strstr(err.message, "bad name"), "%s", err.message);
    cr_expect_eq(atomic_load(&db->cdc->capture_all), 0);
    rt_close(db);
}

/* ---- batches ---- */

Test(repl_log, batch_content_for_insert_update_delete_and_ddl)
{
    gs_database *db = open_capturing("a.db", "node-a");
    rt_exec(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL)");
    rt_exec(db, "INSERT INTO t VALUES (1, 'ann', 1.5)");
    rt_exec(db, "UPDATE t SET name = 'bea', score = 3.0 WHERE id = 1");
    rt_exec(db, "DELETE FROM t WHERE id = 1");

    gs_repl_batch b;
    int empty;
    rt_read_batch(db, "node-a", 0, 100, &b, &empty);
    cr_assert_eq(empty, 0);
    cr_assert_eq(b.nchanges, 4);
    expect_well_formed(&b, "node-a", 0);

    const gs_repl_change *c = &b.changes[0];
    cr_expect_str_eq(c->operation, "ddl");
    cr_expect_str_eq(c->table, "__ddl__");
    cr_expect_str_eq(c->row_id, "");
    cr_expect_str_eq(c->ddl_statement,
                     "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL)");
    cr_assert_not_null(c->primary_key);
    cr_expect_eq(c->primary_key->n, 0);
    cr_expect_null(c->new_data);
    cr_expect_null(c->old_data);

    c = &b.changes[1];
    cr_expect_str_eq(c->operation, "insert");
    cr_expect_str_eq(c->table, "t");
    cr_expect_str_eq(c->row_id, "1");
    cr_expect_null(c->ddl_statement);
    cr_expect_null(c->old_data);
    cr_assert_eq(c->primary_key->n, 1);
    expect_int(c->primary_key, "id", 1);
    expect_int(c->new_data, "id", 1);
    expect_text(c->new_data, "name", "ann");
    cr_expect_eq(val(c->new_data, "score")->type, GS_RVAL_DOUBLE);
    cr_expect_eq(val(c->new_data, "score")->d, 1.5);

    c = &b.changes[2];
    cr_expect_str_eq(c->operation, "update");
    expect_text(c->old_data, "name", "ann");
    expect_text(c->new_data, "name", "bea");
    cr_expect_eq(val(c->new_data, "score")->type, GS_RVAL_DOUBLE, "3.0 stays a double");
    expect_int(c->primary_key, "id", 1);

    c = &b.changes[3];
    cr_expect_str_eq(c->operation, "delete");
    cr_expect_null(c->new_data);
    expect_text(c->old_data, "name", "bea");
    expect_int(c->primary_key, "id", 1);

    /* every unit has its own tx_id */
    cr_expect_str_neq(b.changes[1].tx_id, b.changes[2].tx_id);
    int64_t to = b.to_seq;
    gs_repl_batch_free(&b);

    /* nothing after the end; a later batch starts right after */
    rt_read_batch(db, "node-a", to, 100, &b, &empty);
    cr_expect_eq(empty, 1);
    cr_expect_eq(b.nchanges, 0);
    cr_expect_null(b.changes);
    rt_exec(db, "INSERT INTO t VALUES (2, 'cy', NULL)");
    rt_read_batch(db, "node-a", to, 100, &b, &empty);
    cr_assert_eq(empty, 0);
    cr_assert_eq(b.nchanges, 1);
    expect_well_formed(&b, "node-a", to);
    cr_expect_eq(val(b.changes[0].new_data, "score")->type, GS_RVAL_NULL);
    gs_repl_batch_free(&b);

    /* another node's stream is a different stream; a missing node id is refused */
    rt_read_batch(db, "node-b", 0, 100, &b, &empty);
    cr_expect_eq(empty, 1);
    rt_read r = {.node = "", .after = 0, .max = 10};
    gs_error err;
    cr_expect_eq(rt_call(db, rt_read_fn, &r, &err), GS_ERROR);
    cr_expect_str_eq(err.code, "INVALID_REQUEST");
    rt_close(db);
}

Test(repl_log, primary_keys_for_every_table_shape)
{
    gs_database *db = open_capturing("a.db", "node-a");
    rt_exec(db, "CREATE TABLE comp (a TEXT, b INTEGER, c TEXT, PRIMARY KEY (b, a))");
    rt_exec(db, "CREATE TABLE nokey (x TEXT, y INTEGER)");
    rt_exec(db, "CREATE TABLE bkey (k BLOB PRIMARY KEY, v INTEGER) WITHOUT ROWID");
    rt_exec(db, "CREATE TABLE tkey (code TEXT PRIMARY KEY, n INTEGER)");
    rt_exec(db, "INSERT INTO comp VALUES ('x', 7, 'c')");
    rt_exec(db, "INSERT INTO nokey VALUES ('p', 1)");
    rt_exec(db, "INSERT INTO nokey VALUES ('q', 2)");
    rt_exec(db, "INSERT INTO bkey VALUES (x'00ff10', 5)");
    rt_exec(db, "INSERT INTO tkey VALUES ('k-1', 5)");
    rt_exec(db, "DELETE FROM nokey WHERE x = 'q'");

    gs_repl_batch b;
    int empty;
    rt_read_batch(db, "node-a", 0, 100, &b, &empty);
    cr_assert_eq(b.nchanges, 10);
    expect_well_formed(&b, "node-a", 0);

    const gs_repl_change *c = &b.changes[4];
    cr_expect_str_eq(c->table, "comp");
    cr_expect_str_eq(c->row_id, "7-x");
    cr_assert_eq(c->primary_key->n, 2);
    cr_expect_str_eq(c->primary_key->names[0], "b", "pk order follows the declaration");
    cr_expect_str_eq(c->primary_key->names[1], "a");
    expect_int(c->primary_key, "b", 7);
    expect_text(c->primary_key, "a", "x");

    c = &b.changes[5];
    cr_expect_str_eq(c->table, "nokey");
    cr_assert_eq(c->primary_key->n, 1);
    expect_int(c->primary_key, "rowid", 1);
    c = &b.changes[6];
    expect_int(c->primary_key, "rowid", 2);

    c = &b.changes[7];
    cr_expect_str_eq(c->table, "bkey");
    cr_expect_str_eq(c->row_id, "00FF10");
    const gs_rval *k = val(c->primary_key, "k");
    cr_expect_eq(k->type, GS_RVAL_BLOB);
    cr_expect_eq(k->len, 3);
    cr_expect(k->len == 3 && memcmp(k->p, "\x00\xff\x10", 3) == 0);

    c = &b.changes[8];
    expect_text(c->primary_key, "code", "k-1");
    cr_expect_str_eq(c->row_id, "k-1");

    c = &b.changes[9];
    cr_expect_str_eq(c->operation, "delete");
    expect_int(c->primary_key, "rowid", 2);
    gs_repl_batch_free(&b);
    rt_close(db);
}

Test(repl_log, values_keep_their_types)
{
    gs_database *db = open_capturing("a.db", "node-a");
    rt_exec(db, "CREATE TABLE v (id INTEGER PRIMARY KEY, big INTEGER, neg INTEGER, d REAL, "
                "whole REAL, tiny REAL, b BLOB, e BLOB, t TEXT, n TEXT)");
    rt_exec(db, "INSERT INTO v VALUES (1, 1152921504606846976, -9007199254740993, 0.1, 2.0, "
                "1e-300, x'DEADBEEF', x'', 'h\xc3\xa9 \"q\"', NULL)");
    gs_repl_batch b;
    int empty;
    rt_read_batch(db, "node-a", 0, 100, &b, &empty);
    cr_assert_eq(b.nchanges, 2);
    const gs_rrow *r = b.changes[1].new_data;
    expect_int(r, "big", 1152921504606846976LL);
    expect_int(r, "neg", -9007199254740993LL);
    cr_expect_eq(val(r, "d")->type, GS_RVAL_DOUBLE);
    cr_expect_eq(val(r, "d")->d, 0.1);
    cr_expect_eq(val(r, "whole")->type, GS_RVAL_DOUBLE);
    cr_expect_eq(val(r, "whole")->d, 2.0);
    /* within 1e-15 relative: SQLite formats with long double, which valgrind emulates at
     * 64-bit precision, so the last digit may differ under valgrind only */
    cr_expect(fabs(val(r, "tiny")->d / 1e-300 - 1.0) < 1e-15, "tiny %.17g", val(r, "tiny")->d);
    const gs_rval *blob = val(r, "b");
    cr_expect_eq(blob->type, GS_RVAL_BLOB);
    cr_expect(blob->len == 4 && memcmp(blob->p, "\xde\xad\xbe\xef", 4) == 0);
    cr_expect_eq(val(r, "e")->type, GS_RVAL_BLOB);
    cr_expect_eq(val(r, "e")->len, 0);
    expect_text(r, "t", "h\xc3\xa9 \"q\"");
    cr_expect_eq(val(r, "n")->type, GS_RVAL_NULL);
    gs_repl_batch_free(&b);
    rt_close(db);
}

Test(repl_log, limit_is_1000_and_other_origins_are_skipped)
{
    gs_database *db = open_capturing("a.db", "node-a");
    rt_exec(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)");
    /* 1100 rows in one batch job */
    gs_buf p;
    gs_buf_init(&p);
    gs_buf_putc(&p, '[');
    for (int i = 1; i <= 1100; i++)
        gs_buf_printf(&p, "%s[%d,%d]", i > 1 ? "," : "", i, i * 10);
    gs_buf_putc(&p, ']');
    rt_batch(db, "INSERT INTO t VALUES (?, ?)", p.data);
    gs_buf_free(&p);

    gs_repl_batch b;
    int empty;
    size_t asks[] = {0, 5000, 1000};
    for (size_t i = 0; i < 3; i++) {
        rt_read_batch(db, "node-a", 0, asks[i], &b, &empty);
        cr_expect_eq(b.nchanges, 1000, "max_changes %zu gave %zu", asks[i], b.nchanges);
        gs_repl_batch_free(&b);
    }
    rt_read_batch(db, "node-a", 0, 10, &b, &empty);
    cr_assert_eq(b.nchanges, 10);
    expect_well_formed(&b, "node-a", 0);
    cr_expect_eq(b.to_seq, 10);
    gs_repl_batch_free(&b);

    /* rows another node wrote (applied here) and unstamped rows are not this node's stream:
     * the batch still starts at after + 1, covering them */
    internal_exec(db, "UPDATE _sirannon_changes SET node_id = 'node-z' WHERE seq BETWEEN 11 AND "
                      "20");
    internal_exec(db, "INSERT INTO t VALUES (5000, 0)"); /* internal: never stamped */
    cr_expect_eq(rt_sql_int(db, "SELECT count(*) FROM _sirannon_changes WHERE node_id = ''"), 1);
    rt_read_batch(db, "node-a", 10, 5, &b, &empty);
    cr_assert_eq(b.nchanges, 5);
    expect_well_formed(&b, "node-a", 10);
    cr_expect_eq(b.from_seq, 11);
    cr_expect_eq(b.changes[0].seq, 21);
    cr_expect_eq(b.to_seq, 25);
    gs_repl_batch_free(&b);

    rt_read_batch(db, "node-a", 1000, 0, &b, &empty);
    cr_assert_eq(b.nchanges, 101, "the rest: %zu", b.nchanges);
    cr_expect_eq(b.to_seq, 1101);
    for (size_t i = 0; i < b.nchanges; i++)
        cr_expect_str_neq(b.changes[i].node_id, "", "an unstamped row was sent");
    gs_repl_batch_free(&b);

    /* the current seq counts every row; after a prune it still reports the log's end */
    cr_expect_eq(pos(db, 0, NULL), 1102);
    internal_exec(db, "DELETE FROM _sirannon_changes");
    cr_expect_eq(pos(db, 0, NULL), 1102);
    rt_close(db);
}

/* ---- the primary side of DDL replication ---- */

Test(repl_log, primary_ddl_is_recorded_in_order_with_the_dml_around_it)
{
    gs_database *db = open_capturing("a.db", "node-a");
    rt_exec(db, "  CREATE TABLE u (id INTEGER PRIMARY KEY, v TEXT);  ");
    const char *tx[] = {
        "INSERT INTO u VALUES (1, 'one')",     "ALTER TABLE u ADD COLUMN w INTEGER DEFAULT 0",
        "INSERT INTO u VALUES (2, 'two', 22)", "CREATE INDEX idx_u_w ON u (w)",
        "UPDATE u SET w = 11 WHERE id = 1",
    };
    rt_tx(db, tx, 5);
    rt_exec(db, "CREATE TABLE later (k TEXT PRIMARY KEY)");
    rt_exec(db, "INSERT INTO later VALUES ('a')");
    rt_exec(db, "DROP INDEX idx_u_w");
    rt_exec(db, "DROP TABLE later");

    gs_repl_batch b;
    int empty;
    rt_read_batch(db, "node-a", 0, 100, &b, &empty);
    expect_well_formed(&b, "node-a", 0);
    static const char *const want[][2] = {
        {"ddl", "CREATE TABLE u (id INTEGER PRIMARY KEY, v TEXT)"},
        {"insert", "u"},
        {"ddl", "ALTER TABLE u ADD COLUMN w INTEGER DEFAULT 0"},
        {"insert", "u"},
        {"ddl", "CREATE INDEX idx_u_w ON u (w)"},
        {"update", "u"},
        {"ddl", "CREATE TABLE later (k TEXT PRIMARY KEY)"},
        {"insert", "later"},
        {"ddl", "DROP INDEX idx_u_w"},
        {"ddl", "DROP TABLE later"},
    };
    cr_assert_eq(b.nchanges, sizeof want / sizeof want[0], "%zu changes", b.nchanges);
    for (size_t i = 0; i < b.nchanges; i++) {
        const gs_repl_change *c = &b.changes[i];
        cr_expect_str_eq(c->operation, want[i][0], "change %zu", i);
        if (strcmp(want[i][0], "ddl") == 0)
            cr_expect_str_eq(c->ddl_statement, want[i][1], "change %zu", i);
        else
            cr_expect_str_eq(c->table, want[i][1], "change %zu", i);
    }
    /* the transaction is one unit: one tx_id over its DML and DDL */
    for (size_t i = 2; i <= 5; i++)
        cr_expect_str_eq(b.changes[i].tx_id, b.changes[1].tx_id, "change %zu", i);
    cr_expect_str_neq(b.changes[0].tx_id, b.changes[1].tx_id);
    /* the triggers followed the new column inside the same transaction */
    expect_int(b.changes[3].new_data, "w", 22);
    expect_int(b.changes[5].new_data, "w", 11);
    expect_int(b.changes[5].old_data, "w", 0);
    /* a dropped table's earlier change has no key columns to read any more: empty key */
    cr_expect_eq(b.changes[7].primary_key->n, 0);
    gs_repl_batch_free(&b);
    rt_close(db);
}

Test(repl_log, unsafe_primary_ddl_is_refused_without_a_trace)
{
    gs_database *db = open_capturing("a.db", "node-a");
    rt_exec(db, "CREATE TABLE u (id INTEGER PRIMARY KEY, v TEXT)");
    rt_exec(db, "INSERT INTO u VALUES (1, 'x')");
    int64_t before = pos(db, 0, NULL);
    char *schema_before = rt_sql_dump(db, "SELECT name, sql FROM sqlite_master ORDER BY name");

    static const char *const bad[] = {
        "CREATE TABLE copy AS SELECT * FROM u",
        "CREATE VIEW v AS SELECT * FROM u",
        "ALTER TABLE u RENAME TO z",
        "ALTER TABLE u DROP COLUMN v",
        "CREATE TABLE r (a BLOB DEFAULT (randomblob(8)))",
        "CREATE TRIGGER tr AFTER INSERT ON u BEGIN SELECT 1; END",
        "CREATE TEMP TABLE tmp (a)",
    };
    char msg[512];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rt_fail(db, GS_DB_EXECUTE, &bad[i], 1, "BATCH_VALIDATION_ERROR", msg, sizeof msg);
        cr_expect_not_null(strstr(msg, "cannot be replicated"), "%s: %s", bad[i], msg);
    }
    /* a transaction with an unsafe statement is refused whole */
    const char *tx[] = {"INSERT INTO u VALUES (2, 'y')", "CREATE TABLE t2 AS SELECT 1"};
    rt_fail(db, GS_DB_TRANSACTION, tx, 2, "BATCH_VALIDATION_ERROR", msg, sizeof msg);

    /* a batch or a load cannot carry DDL past the recording */
    static const gs_db_job_kind kinds[] = {GS_DB_BATCH, GS_DB_LOAD};
    for (size_t i = 0; i < 2; i++) {
        const char *sql = "CREATE TABLE sneaky (a)";
        rt_waiter w;
        rt_waiter_init(&w);
        cr_expect_eq(rt_run(db, kinds[i], &sql, 1, "[[]]", &w), GS_ERROR, "kind %d", kinds[i]);
        cr_expect_str_eq(w.code, "BATCH_VALIDATION_ERROR", "kind %d: %s", kinds[i], w.message);
        rt_waiter_free(&w);
    }

    char *schema_after = rt_sql_dump(db, "SELECT name, sql FROM sqlite_master ORDER BY name");
    cr_expect_str_eq(schema_after, schema_before);
    free(schema_before);
    free(schema_after);
    cr_expect_eq(pos(db, 0, NULL), before, "no change row was written");
    cr_expect_eq(rt_sql_int(db, "SELECT count(*) FROM u"), 1);

    /* a safe statement still works afterwards */
    rt_exec(db, "ALTER TABLE u ADD COLUMN w");
    cr_expect_eq(pos(db, 0, NULL), before + 1);
    rt_close(db);
}

/* ---- row images: the one-pass decoder against the general one ---- */

static int rows_equal(const gs_rrow *a, const gs_rrow *b)
{
    if (!a || !b)
        return a == b;
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->names[i], b->names[i]) != 0 || !gs_rval_equal(&a->vals[i], &b->vals[i]))
            return 0;
        /* text and blobs own a NUL-terminated copy, empty ones too */
        if ((a->vals[i].type == GS_RVAL_TEXT || a->vals[i].type == GS_RVAL_BLOB) &&
            (!a->vals[i].p || !b->vals[i].p || a->vals[i].p[a->vals[i].len] != 0))
            return 0;
        if (a->vals[i].type == GS_RVAL_DOUBLE && signbit(a->vals[i].d) != signbit(b->vals[i].d))
            return 0;
    }
    return 1;
}

/* Both decoders agree on the row, or both refuse it with the same error. */
static void expect_same_decode(const char *text)
{
    gs_rrow *fast = NULL, *slow = NULL;
    gs_error ef, es;
    gs_error_init(&ef);
    gs_error_init(&es);
    gs_status sf = gs_repl_log_image_decode(text, &fast, &ef);
    gs_status ss = gs_rrow_from_log_json(text, &slow, &es);
    cr_expect_eq(sf, ss, "status for %s: %s", text, sf ? ef.message : es.message);
    if (sf == GS_OK && ss == GS_OK)
        cr_expect(rows_equal(fast, slow), "rows differ for %s", text);
    else
        cr_expect_str_eq(ef.message, es.message, "error for %s", text);
    gs_rrow_free(fast);
    gs_rrow_free(slow);
}

Test(repl_log, image_decoder_matches_the_general_decoder)
{
    static const char *const texts[] = {
        /* what the triggers write */
        "{}",
        "{\"id\":1,\"name\":\"row 1\",\"v\":3}",
        "{\"a\":-5,\"b\":0,\"c\":-0,\"d\":999999999999999999,\"e\":-999999999999999999}",
        "{\"r\":1.5,\"s\":-0.0,\"t\":1.0e+20,\"u\":0.10000000000000001,\"w\":2.5E-7,\"x\":1e5}",
        "{\"n\":null,\"t\":\"\",\"b\":{\"__sirannon_blob\":\"\"}}",
        "{\"b\":{\"__sirannon_blob\":\"00FFa0\"},\"k\":{\"__sirannon_int\":\"9007199254740993\"}}",
        "{\"k\":{\"__sirannon_int\":\"-9223372036854775808\"},\"m\":{\"__sirannon_int\":"
        "\"9223372036854775807\"}}",
        "{\"s\":\"quote \\\" back \\\\ slash \\/ tab \\t nl \\n cr \\r bs \\b ff \\f\"}",
        "{\"s\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}",
        "{\"t\":true,\"f\":false}",
        "{\"\xc3\xa9t\xc3\xa9\":1}",
        /* the general decoder's cases: escapes, whitespace, odd numbers and envelopes */
        "{\"s\":\"\\u00e9 and \\u0000 inside\"}",
        " {\"a\": 1 , \"b\" :2}\n",
        "{\"a\":1234567890123456789}",
        "{\"a\":-9223372036854775808}",
        "{\"a\":99999999999999999999}",
        "{\"a\":1e400}",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":.5}",
        "{\"a\":+1}",
        "{\"a\":1,\"a\":2}",
        "{\"k\":{\"__sirannon_int\":\"99999999999999999999\"}}",
        "{\"k\":{\"__sirannon_int\":\"-\"}}",
        "{\"k\":{\"__sirannon_int\":\"12a\"}}",
        "{\"b\":{\"__sirannon_blob\":\"abc\"}}",
        "{\"b\":{\"__sirannon_blob\":\"zz\"}}",
        "{\"b\":{\"__sirannon_blob\":\"00\",\"x\":1}}",
        "{\"b\":{\"other\":\"00\"}}",
        "{\"b\":[1,2]}",
        "{\"s\":\"bad \xff utf8\"}",
        "{\"s\":\"overlong \xc0\xaf\"}",
        "{\"s\":\"surrogate \xed\xa0\x80\"}",
        "{\"s\":\"ctl \x01\"}",
        "{\"s\":\"unterminated}",
        "{\"a\":1",
        "{\"a\":1}x",
        "[1,2]",
        "null",
        "\"text\"",
        "",
        "{\"a\" 1}",
        "{a:1}",
        "{\"a\":nul}",
        "{\"a\":tru}",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        expect_same_decode(texts[i]);
    gs_rrow *none = (gs_rrow *)1;
    gs_error err;
    cr_assert_eq(gs_repl_log_image_decode(NULL, &none, &err), GS_OK);
    cr_assert_null(none);
}

/* Every value the triggers can write decodes the same both ways (a real change log). */
Test(repl_log, image_decoder_matches_on_trigger_output)
{
    gs_database *db = rt_open(tmpdir, "img", "node-a");
    rt_exec(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, i, r, s, b)");
    rt_capture_all(db);
    rt_exec(db, "INSERT INTO t VALUES (1, 0, 0.0, '', x'')");
    rt_exec(db, "INSERT INTO t VALUES (2, -9223372036854775808, -0.0, 'caf\xc3\xa9', x'00ff')");
    rt_exec(db, "INSERT INTO t VALUES (3, 9223372036854775807, 1e300, 'a\"b\\c\nd\te\x01', x'41')");
    rt_exec(db, "INSERT INTO t VALUES (4, 9007199254740991, 0.1, char(0x1F600), NULL)");
    rt_exec(db, "INSERT INTO t VALUES (5, -9007199254740992, -2.5e-308, 'x', randomblob(40))");
    rt_exec(db, "UPDATE t SET s = s || '!' WHERE id IN (2, 3)");
    rt_exec(db, "DELETE FROM t WHERE id = 4");
    /* one image per line (SQLite escapes newlines inside JSON text) */
    char *dump = rt_sql_dump(db, "SELECT img FROM (SELECT seq, 0 AS k, old_data AS img FROM "
                                 "_sirannon_changes UNION ALL SELECT seq, 1, new_data FROM "
                                 "_sirannon_changes) WHERE img IS NOT NULL ORDER BY seq, k");
    cr_assert_not_null(dump);
    size_t n = 0;
    for (char *line = strtok(dump, "\n"); line; line = strtok(NULL, "\n")) {
        expect_same_decode(line);
        n++;
    }
    cr_expect_geq(n, 9, "the images were read (%zu)", n);
    free(dump);
    gs_db_free(db);
}
