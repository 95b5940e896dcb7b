/* The batch applier: two real databases, writes on A read as batches and applied on B, then
 * compared row by row; duplicate, gap and overlap positions; validation (checksum, size,
 * range, drift) with nothing applied; conflicts through an in-test resolver (keep, take,
 * merge, error, none); updates of absent rows; remote deletes; replicated DDL (and unsafe DDL
 * rolling the whole batch back); origin stamping; the ledger's high-water mark; the clock. */
#include "repl/apply.h"
#include "repl/checksum.h"
#include "repl/hlc.h"
#include "repl_test_db.h"

#include <criterion/criterion.h>
#include <string.h>

static char tmpdir[64];

static void setup(void)
{
    gs_test_mkdtemp(tmpdir, sizeof tmpdir, "repl-apply");
}

static void teardown(void)
{
    gs_test_rmtree(tmpdir);
}

TestSuite(repl_apply, .init = setup, .fini = teardown);

/* ---- an in-test resolver ---- */

enum { R_LWW = 0, R_KEEP, R_TAKE, R_MERGE, R_FAIL, R_BAD_MERGE, R_GHOST_MERGE };

typedef struct test_resolver {
    int mode;
    int calls;
    char table[64], row_id[64], op[16], pk[128], primary[64];
    char local_row[512], local_hlc[128], local_node[64];
    char incoming_new[512], incoming_old[512], incoming_hlc[128], incoming_node[64];
    char versions[512];
    int had_local_hlc;
} test_resolver;

static void keep(char *dst, size_t cap, const char *s)
{
    snprintf(dst, cap, "%s", s ? s : "(null)");
}

static gs_status tr_resolve(void *inst, const gs_conflict *c, gs_resolution *out, gs_error *err)
{
    test_resolver *r = inst;
    r->calls++;
    cr_assert_eq(c->struct_size, sizeof *c);
    keep(r->table, sizeof r->table, c->table);
    keep(r->row_id, sizeof r->row_id, c->row_id);
    keep(r->op, sizeof r->op, c->incoming_operation);
    keep(r->pk, sizeof r->pk, c->primary_key_json);
    keep(r->primary, sizeof r->primary, c->primary_node_id);
    keep(r->local_row, sizeof r->local_row, c->local_row_json);
    keep(r->local_hlc, sizeof r->local_hlc, c->local_hlc);
    keep(r->local_node, sizeof r->local_node, c->local_node_id);
    keep(r->incoming_new, sizeof r->incoming_new, c->incoming_new_json);
    keep(r->incoming_old, sizeof r->incoming_old, c->incoming_old_json);
    keep(r->incoming_hlc, sizeof r->incoming_hlc, c->incoming_hlc);
    keep(r->incoming_node, sizeof r->incoming_node, c->incoming_node_id);
    keep(r->versions, sizeof r->versions, c->column_versions_json);
    r->had_local_hlc = c->local_hlc != NULL;
    switch (r->mode) {
    case R_KEEP: out->kind = GS_RESOLVE_KEEP_LOCAL; return GS_OK;
    case R_TAKE: out->kind = GS_RESOLVE_TAKE_INCOMING; return GS_OK;
    case R_FAIL: return gs_error_set(err, 0, "CONFLICT_ERROR", "the test resolver refuses");
    case R_MERGE:
    case R_BAD_MERGE:
    case R_GHOST_MERGE: {
        /* the incoming v with the local w; or not a row; or a column t lacks */
        const char *text = r->mode == R_BAD_MERGE ? "[1, 2]" : "{\"ghost\":1}";
        char buf[256];
        if (r->mode == R_MERGE) {
            json_t *loc = json_loads(c->local_row_json, 0, NULL);
            json_t *inc = json_loads(c->incoming_new_json, 0, NULL);
            snprintf(buf, sizeof buf, "{\"v\":\"%s\",\"w\":%lld}",
                     json_string_value(json_object_get(inc, "v")),
                     (long long)json_integer_value(json_object_get(loc, "w")));
            json_decref(loc);
            json_decref(inc);
            text = buf;
        }
        out->kind = GS_RESOLVE_MERGED;
        out->merged_row_json = gs_strdup(text); /* host->alloc is gs_malloc */
        return GS_OK;
    }
    default: break;
    }
    /* the spec's LWW */
    if (strcmp(c->incoming_operation, "delete") == 0 || !c->local_hlc) {
        out->kind = GS_RESOLVE_TAKE_INCOMING;
        return GS_OK;
    }
    int cmp = gs_hlc_compare(c->incoming_hlc, c->local_hlc);
    if (cmp == 0)
        cmp = strcmp(c->incoming_node_id, c->local_node_id ? c->local_node_id : "") > 0 ? 1 : -1;
    out->kind = cmp > 0 ? GS_RESOLVE_TAKE_INCOMING : GS_RESOLVE_KEEP_LOCAL;
    return GS_OK;
}

static const gs_resolver_vtable TEST_VT = {
    .struct_size = sizeof(gs_resolver_vtable),
    .resolve = tr_resolve,
};

static gs_repl_resolver_ref lookup(void *user, const char *table)
{
    gs_repl_resolver_ref ref = {NULL, NULL};
    if (user) {
        ref.vt = &TEST_VT;
        ref.instance = user;
    }
    return ref;
}

/* ---- applying on the writer thread ---- */

typedef struct apply_call {
    gs_database *db;
    const gs_repl_batch *b;
    test_resolver *r; /* NULL: no resolver */
    int keep_versions;
    int64_t drift;
    gs_repl_apply_result res;
} apply_call;

static gs_status apply_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    apply_call *ac = user;
    gs_repl_apply_ctx ctx = {.clock = gs_cdc_clock(ac->db),
                             .local_node_id = ac->db->cdc->node_id,
                             .primary_node_id = "node-a",
                             .resolver = lookup,
                             .resolver_user = ac->r,
                             .max_clock_drift_ms = ac->drift,
                             .keep_column_versions = ac->keep_versions,
                             .cdc = ac->db->cdc};
    return gs_repl_apply_batch(conn, &ctx, ac->b, &ac->res, err);
}

/* Apply b on db; returns the status, res and err filled. */
static gs_status apply(gs_database *db, const gs_repl_batch *b, test_resolver *r, int versions,
                       gs_repl_apply_result *res, gs_error *err)
{
    apply_call ac = {.db = db, .b = b, .r = r, .keep_versions = versions, .drift = 60000};
    gs_status st = rt_call(db, apply_fn, &ac, err);
    *res = ac.res;
    return st;
}

static void apply_ok(gs_database *db, const gs_repl_batch *b, test_resolver *r,
                     gs_repl_apply_result *res)
{
    gs_error err;
    cr_assert_eq(apply(db, b, r, 1, res, &err), GS_OK, "%s: %s", err.code, err.message);
}

/* Read A's next batch after `after` (max changes) and apply it on B with resolver r. */
static int64_t ship(gs_database *a, gs_database *b, int64_t after, size_t max, test_resolver *r,
                    gs_repl_apply_result *res)
{
    gs_repl_batch batch;
    int empty;
    rt_read_batch(a, "node-a", after, max, &batch, &empty);
    cr_assert_eq(empty, 0, "nothing to ship after %lld", (long long)after);
    apply_ok(b, &batch, r, res);
    int64_t to = batch.to_seq;
    gs_repl_batch_free(&batch);
    return to;
}

static void expect_same(gs_database *a, gs_database *b, const char *sql)
{
    char *x = rt_sql_dump(a, sql);
    char *y = rt_sql_dump(b, sql);
    cr_expect_str_eq(y, x, "%s: replica '%s' != primary '%s'", sql, y, x);
    free(x);
    free(y);
}

static void open_pair(gs_database **a, gs_database **b)
{
    *a = rt_open(tmpdir, "a.db", "node-a");
    *b = rt_open(tmpdir, "b.db", "node-b");
    rt_capture_all(*a);
    rt_capture_all(*b);
}

static void close_pair(gs_database *a, gs_database *b)
{
    rt_close(a);
    rt_close(b);
}

static void rehash(gs_repl_batch *b)
{
    char sum[65];
    gs_error err;
    cr_assert_eq(gs_repl_changes_checksum(b->changes, b->nchanges, sum, &err), GS_OK);
    gs_free(b->checksum);
    b->checksum = gs_strdup(sum);
}

static int64_t applied_pos(gs_database *db)
{
    return rt_sql_int(db, "SELECT coalesce(max(source_seq), 0) FROM _sirannon_applied_changes "
                          "WHERE source_node_id = 'node-a'");
}

/* ---- replication end to end ---- */

Test(repl_apply, writes_on_a_arrive_on_b_row_for_row)
{
    gs_database *a, *b;
    open_pair(&a, &b);
    rt_exec(a, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB, big "
               "INTEGER)");
    rt_exec(a, "CREATE TABLE comp (k1 TEXT, k2 INTEGER, v TEXT, PRIMARY KEY (k1, k2))");
    rt_exec(a, "CREATE TABLE nokey (x TEXT, y INTEGER)");
    rt_exec(a, "CREATE TABLE bkey (k BLOB PRIMARY KEY, v TEXT) WITHOUT ROWID");
    const char *tx[] = {
        "INSERT INTO t VALUES (1, 'ann', 1.5, x'00FF', 9223372036854775807)",
        "INSERT INTO t VALUES (2, 'bob', NULL, NULL, -5)",
        "INSERT INTO t VALUES (3, 'cy', 0.1, x'', 0)",
        "INSERT INTO comp VALUES ('a', 1, 'one'), ('a', 2, 'two')",
        "INSERT INTO nokey VALUES ('p', 1), ('q', 2), ('r', 3)",
        "INSERT INTO bkey VALUES (x'0102', 'blob key')",
    };
    rt_tx(a, tx, 6);
    rt_exec(a, "DELETE FROM nokey WHERE x = 'p'"); /* rowids 2 and 3 remain: B must match them */
    rt_exec(a, "INSERT INTO nokey VALUES ('s', 4)");
    rt_exec(a, "UPDATE t SET name = 'ann2', score = 2.0 WHERE id = 1");
    rt_exec(a, "UPDATE t SET id = 10 WHERE id = 2"); /* the key itself changes */
    rt_exec(a, "UPDATE comp SET v = 'TWO' WHERE k2 = 2");
    rt_exec(a, "UPDATE nokey SET y = 30 WHERE x = 'r'");
    rt_exec(a, "UPDATE bkey SET v = 'still' WHERE k = x'0102'");
    rt_exec(a, "DELETE FROM t WHERE id = 3");
    rt_exec(a, "DELETE FROM comp WHERE k2 = 1");

    test_resolver r = {.mode = R_LWW};
    gs_repl_apply_result res;
    gs_repl_batch batch;
    int empty;
    rt_read_batch(a, "node-a", 0, 0, &batch, &empty);
    apply_ok(b, &batch, &r, &res);
    cr_expect_eq(res.duplicate, 0);
    cr_expect_eq(res.gap, 0);
    cr_expect_eq(res.applied_seq, batch.to_seq);
    cr_expect_eq(res.ddl, 4);
    cr_expect_eq(res.applied + res.skipped, batch.nchanges, "%zu + %zu != %zu", res.applied,
                 res.skipped, batch.nchanges);
    cr_expect_eq(res.skipped, 0);
    cr_expect_eq(res.conflicts, r.calls);
    cr_expect_gt(r.calls, 0, "updates and deletes of existing rows go through the resolver");
    gs_repl_apply_result_free(&res);

    expect_same(a, b, "SELECT id, name, quote(score), hex(data), big FROM t ORDER BY id");
    expect_same(a, b, "SELECT * FROM comp ORDER BY k1, k2");
    expect_same(a, b, "SELECT rowid, x, y FROM nokey ORDER BY rowid");
    expect_same(a, b, "SELECT hex(k), v FROM bkey");
    expect_same(a, b,
                "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE "
                "'\\_sirannon%' ESCAPE '\\' AND name NOT LIKE 'sqlite%' ORDER BY name");

    /* origin stamping: B's change rows carry A's node, tx and hlc, in the same order */
    expect_same(a, b,
                "SELECT table_name, operation, row_id, old_data, new_data, node_id, tx_id, "
                "hlc FROM _sirannon_changes WHERE operation != 'DDL' ORDER BY seq");
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM _sirannon_changes WHERE node_id != "
                               "'node-a'"),
                 0);
    /* so B never sends them as its own */
    gs_repl_batch mine;
    rt_read_batch(b, "node-b", 0, 0, &mine, &empty);
    cr_expect_eq(empty, 1);

    /* the ledger keeps the high-water mark only */
    char *ledger = rt_sql_dump(b, "SELECT source_node_id, source_seq FROM "
                                  "_sirannon_applied_changes");
    char want[64];
    snprintf(want, sizeof want, "node-a|%lld", (long long)batch.to_seq);
    cr_expect_str_eq(ledger, want);
    free(ledger);

    /* the clock moved past every stamp and was persisted */
    char now[GS_HLC_MAX_LEN];
    gs_hlc_current(gs_cdc_clock(b), now);
    gs_hlc_ts t1, t2;
    gs_error err;
    cr_assert_eq(gs_hlc_decode(now, &t1, &err), GS_OK);
    cr_assert_eq(gs_hlc_decode(batch.hlc_max, &t2, &err), GS_OK);
    cr_expect(t1.wall_ms > t2.wall_ms || (t1.wall_ms == t2.wall_ms && t1.logical > t2.logical),
              "clock %s is not past %s", now, batch.hlc_max);
    char *persisted = rt_sql_text(b, "SELECT value FROM _sirannon_meta WHERE key = 'hlc_clock'");
    cr_assert_not_null(persisted);
    cr_expect_geq(strncmp(persisted, batch.hlc_max, 17), 0, "persisted %s < %s", persisted,
                  batch.hlc_max);
    free(persisted);

    /* column versions were recorded for the written columns */
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM _sirannon_column_versions WHERE table_name "
                               "= 't' AND row_id = '1' AND node_id = 'node-a'"),
                 5);
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM _sirannon_column_versions WHERE table_name "
                               "= 't' AND row_id = '3'"),
                 0, "a delete removes the row's versions");
    int64_t at = batch.to_seq;
    gs_repl_batch_free(&batch);

    /* the next batch continues where this one ended */
    rt_exec(a, "INSERT INTO t VALUES (4, 'dee', 4.0, NULL, 4)");
    int64_t to = rt_sql_int(a, "SELECT max(seq) FROM _sirannon_changes");
    ship(a, b, at, 0, &r, &res);
    cr_expect_eq(res.applied_seq, to);
    cr_expect_eq(res.applied, 1);
    expect_same(a, b, "SELECT id, name FROM t ORDER BY id");
    close_pair(a, b);
}

/* ---- positions ---- */

Test(repl_apply, duplicate_gap_and_overlap)
{
    gs_database *a, *b;
    open_pair(&a, &b);
    rt_exec(a, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"); /* seq 1 */
    for (int i = 1; i <= 5; i++) {                                 /* seq 2..6 */
        char sql[64];
        snprintf(sql, sizeof sql, "INSERT INTO t VALUES (%d, 'v%d')", i, i);
        rt_exec(a, sql);
    }
    gs_repl_apply_result res;
    gs_repl_batch b12, b45, b234, b56;
    int empty;
    rt_read_batch(a, "node-a", 0, 2, &b12, &empty);
    apply_ok(b, &b12, NULL, &res);
    cr_expect_eq(res.applied_seq, 2);
    cr_expect_eq(res.applied, 2);
    int64_t log_rows = rt_sql_int(b, "SELECT count(*) FROM _sirannon_changes");

    /* the same batch again: a duplicate, nothing applied */
    apply_ok(b, &b12, NULL, &res);
    cr_expect_eq(res.duplicate, 1);
    cr_expect_eq(res.applied_seq, 2);
    cr_expect_eq(res.applied, 0);
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM _sirannon_changes"), log_rows);

    /* a batch starting past the position: a gap, nothing applied */
    rt_read_batch(a, "node-a", 3, 2, &b45, &empty);
    cr_assert_eq(b45.from_seq, 4);
    apply_ok(b, &b45, NULL, &res);
    cr_expect_eq(res.gap, 1);
    cr_expect_eq(res.applied_seq, 2);
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM t"), 1);
    cr_expect_eq(applied_pos(b), 2);

    /* an overlapping contiguous batch: the applied part is skipped */
    rt_read_batch(a, "node-a", 1, 3, &b234, &empty);
    cr_assert_eq(b234.from_seq, 2);
    cr_assert_eq(b234.to_seq, 4);
    apply_ok(b, &b234, NULL, &res);
    cr_expect_eq(res.gap, 0);
    cr_expect_eq(res.applied_seq, 4);
    cr_expect_eq(res.skipped, 1);
    cr_expect_eq(res.applied, 2);
    cr_expect_eq(res.conflicts, 0, "row 1 was not applied twice");
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM t"), 3);
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM _sirannon_changes WHERE row_id = '1'"), 1);

    gs_repl_batch_free(&b12);
    gs_repl_batch_free(&b45);
    gs_repl_batch_free(&b234);

    /* an overlapping batch that is not contiguous (it covers seq 3..7 with 4 changes, as when
     * seq 3 belongs to another origin) cannot be cut: a gap */
    rt_exec(a, "INSERT INTO t VALUES (99, 'later')"); /* seq 7 */
    gs_repl_batch sparse;
    rt_read_batch(a, "node-a", 3, 0, &sparse, &empty);
    cr_assert_eq(sparse.from_seq, 4);
    cr_assert_eq(sparse.nchanges, 4);
    sparse.from_seq = 3;
    gs_free(sparse.batch_id);
    sparse.batch_id = gs_strdup("node-a-3-7");
    apply_ok(b, &sparse, NULL, &res);
    cr_expect_eq(res.gap, 1);
    cr_expect_eq(res.applied_seq, 4);
    gs_repl_batch_free(&sparse);

    /* the right next batch applies */
    rt_read_batch(a, "node-a", 4, 0, &b56, &empty);
    apply_ok(b, &b56, NULL, &res);
    cr_expect_eq(res.applied_seq, 7);
    expect_same(a, b, "SELECT * FROM t ORDER BY id");
    cr_expect_eq(applied_pos(b), 7);
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM _sirannon_applied_changes"), 1);
    gs_repl_batch_free(&b56);
    close_pair(a, b);
}

typedef struct pos_set {
    const char *source;
    int64_t seq;
} pos_set;

static gs_status record_fn(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    pos_set *p = user;
    return gs_repl_apply_record_position(conn, p->source, p->seq, err);
}

Test(repl_apply, record_position_sets_the_high_water_mark)
{
    gs_database *b = rt_open(tmpdir, "b.db", "node-b");
    gs_error err;
    pos_set p = {"node-a", 500};
    cr_assert_eq(rt_call(b, record_fn, &p, &err), GS_OK, "%s", err.message);
    cr_expect_eq(applied_pos(b), 500);
    p.seq = 120; /* a new snapshot replaces the mark, even a lower one */
    cr_assert_eq(rt_call(b, record_fn, &p, &err), GS_OK, "%s", err.message);
    cr_expect_eq(applied_pos(b), 120);
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM _sirannon_applied_changes"), 1);
    p.source = "";
    cr_expect_eq(rt_call(b, record_fn, &p, &err), GS_ERROR);
    cr_expect_str_eq(err.code, "INVALID_REQUEST");
    rt_close(b);
}

/* ---- validation: nothing applied ---- */

Test(repl_apply, invalid_batches_apply_nothing)
{
    gs_database *a, *b;
    open_pair(&a, &b);
    rt_exec(a, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
    rt_exec(a, "INSERT INTO t VALUES (1, 'x')");
    gs_repl_batch batch;
    int empty;
    rt_read_batch(a, "node-a", 0, 0, &batch, &empty);
    gs_repl_apply_result res;
    gs_error err;

    /* a changed value under the old checksum */
    gs_rval *v = &batch.changes[1].new_data->vals[1];
    cr_assert_eq(v->type, GS_RVAL_TEXT);
    v->p[0] = 'y';
    cr_expect_eq(apply(b, &batch, NULL, 1, &res, &err), GS_ERROR);
    cr_expect_str_eq(err.code, "BATCH_VALIDATION_ERROR");
    cr_expect_not_null(strstr(err.message, "checksum"), "%s", err.message);
    v->p[0] = 'x';

    /* a range that is not one */
    int64_t from = batch.from_seq;
    batch.from_seq = batch.to_seq + 1;
    cr_expect_eq(apply(b, &batch, NULL, 1, &res, &err), GS_ERROR);
    cr_expect_str_eq(err.code, "BATCH_VALIDATION_ERROR");
    batch.from_seq = from;

    /* a clock far ahead of ours */
    char ahead[GS_HLC_MAX_LEN];
    gs_hlc_encode(gs_hlc_physical_ms() + 10 * 60 * 1000, 0, "node-a", ahead, sizeof ahead);
    char *saved = batch.changes[1].hlc;
    batch.changes[1].hlc = gs_strdup(ahead);
    rehash(&batch);
    cr_expect_eq(apply(b, &batch, NULL, 1, &res, &err), GS_ERROR);
    cr_expect_str_eq(err.code, "BATCH_VALIDATION_ERROR");
    cr_expect_not_null(strstr(err.message, "drift"), "%s", err.message);
    gs_free(batch.changes[1].hlc);
    batch.changes[1].hlc = saved;

    /* a malformed stamp */
    batch.changes[1].hlc = gs_strdup("not-an-hlc");
    rehash(&batch);
    cr_expect_eq(apply(b, &batch, NULL, 1, &res, &err), GS_ERROR);
    cr_expect_str_eq(err.code, "BATCH_VALIDATION_ERROR");
    gs_free(batch.changes[1].hlc);
    batch.changes[1].hlc = saved;

    /* a column B does not have */
    gs_rval extra = {.type = GS_RVAL_INT, .i = 1};
    cr_assert_eq(gs_rrow_add_take(batch.changes[1].new_data, "ghost", &extra, &err), GS_OK);
    rehash(&batch);
    cr_expect_eq(apply(b, &batch, NULL, 1, &res, &err), GS_ERROR);
    cr_expect_str_eq(err.code, "BATCH_VALIDATION_ERROR");
    cr_expect_not_null(strstr(err.message, "ghost"), "%s", err.message);

    /* nothing of any attempt is on B: no table, no rows, no position */
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM sqlite_master WHERE name = 't'"), 0);
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM _sirannon_changes"), 0);
    cr_expect_eq(applied_pos(b), 0);
    gs_repl_batch_free(&batch);

    /* more than 1000 changes */
    gs_repl_batch big;
    memset(&big, 0, sizeof big);
    big.source_node_id = "node-a";
    big.from_seq = 1;
    big.to_seq = 1001;
    big.nchanges = 1001;
    big.changes = gs_calloc(1001, sizeof *big.changes);
    cr_expect_eq(apply(b, &big, NULL, 1, &res, &err), GS_ERROR);
    cr_expect_str_eq(err.code, "BATCH_VALIDATION_ERROR");
    cr_expect_not_null(strstr(err.message, "1000"), "%s", err.message);
    gs_free(big.changes);
    close_pair(a, b);
}

/* ---- conflicts ---- */

/* A and B both have t(id, v, w); B wrote row 1 itself; A then inserts and updates row 1. */
static void conflict_setup(gs_database **a, gs_database **b)
{
    open_pair(a, b);
    gs_repl_apply_result res;
    rt_exec(*a, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, w INTEGER)");
    ship(*a, *b, 0, 0, NULL, &res);
    rt_exec(*b, "INSERT INTO t VALUES (1, 'local', 7)");
    rt_exec(*a, "INSERT INTO t VALUES (1, 'remote', 8)");
}

static void conflict_run(int mode, gs_database **pa, gs_database **pb, test_resolver *r,
                         gs_repl_apply_result *res, gs_status *st, gs_error *err)
{
    conflict_setup(pa, pb);
    r->mode = mode;
    gs_repl_batch batch;
    int empty;
    rt_read_batch(*pa, "node-a", 1, 0, &batch, &empty);
    *st = apply(*pb, &batch, r, 1, res, err);
    gs_repl_batch_free(&batch);
}

Test(repl_apply, conflict_keep_local)
{
    gs_database *a, *b;
    test_resolver r;
    memset(&r, 0, sizeof r);
    gs_repl_apply_result res;
    gs_status st;
    gs_error err;
    conflict_run(R_KEEP, &a, &b, &r, &res, &st, &err);
    cr_assert_eq(st, GS_OK, "%s", err.message);
    cr_expect_eq(r.calls, 1);
    cr_expect_eq(res.conflicts, 1);
    cr_expect_eq(res.skipped, 1);
    cr_expect_eq(res.applied, 0);
    cr_expect_eq(res.applied_seq, 2, "a skipped change still advances the position");
    char *row = rt_sql_dump(b, "SELECT * FROM t");
    cr_expect_str_eq(row, "1|local|7");
    free(row);
    /* what the resolver saw: the spec's ConflictContext */
    cr_expect_str_eq(r.table, "t");
    cr_expect_str_eq(r.row_id, "1");
    cr_expect_str_eq(r.op, "insert");
    cr_expect_str_eq(r.pk, "{\"id\":1}");
    cr_expect_str_eq(r.primary, "node-a");
    cr_expect_str_eq(r.local_row, "{\"id\":1,\"v\":\"local\",\"w\":7}");
    cr_expect_str_eq(r.incoming_new, "{\"id\":1,\"v\":\"remote\",\"w\":8}");
    cr_expect_str_eq(r.incoming_old, "(null)");
    cr_expect_str_eq(r.incoming_node, "node-a");
    cr_expect_str_eq(r.local_node, "node-b", "B's own stamped write is the local stamp");
    char *bh = rt_sql_text(b, "SELECT hlc FROM _sirannon_changes WHERE node_id = 'node-b'");
    cr_expect_str_eq(r.local_hlc, bh);
    free(bh);
    cr_expect_str_eq(r.versions, "(null)");
    close_pair(a, b);
}

Test(repl_apply, conflict_take_incoming)
{
    gs_database *a, *b;
    test_resolver r;
    memset(&r, 0, sizeof r);
    gs_repl_apply_result res;
    gs_status st;
    gs_error err;
    conflict_run(R_TAKE, &a, &b, &r, &res, &st, &err);
    cr_assert_eq(st, GS_OK, "%s", err.message);
    cr_expect_eq(res.conflicts, 1);
    cr_expect_eq(res.applied, 1);
    expect_same(a, b, "SELECT * FROM t");
    /* the written columns now carry A's stamp, and the next conflict sees it first */
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM _sirannon_column_versions WHERE node_id = "
                               "'node-a' AND row_id = '1'"),
                 3);
    rt_exec(b, "UPDATE t SET w = 100 WHERE id = 1");
    rt_exec(a, "UPDATE t SET v = 'again' WHERE id = 1");
    gs_repl_batch batch;
    int empty;
    rt_read_batch(a, "node-a", res.applied_seq, 0, &batch, &empty);
    r.mode = R_KEEP;
    apply_ok(b, &batch, &r, &res);
    cr_expect_eq(r.calls, 2);
    cr_expect_str_eq(r.local_node, "node-a", "column versions come before the change log");
    cr_expect_neq(strstr(r.versions, "\"v\":{\"hlc\":"), NULL, "%s", r.versions);
    cr_expect_str_eq(r.op, "update");
    cr_expect_str_eq(r.incoming_old, "{\"id\":1,\"v\":\"remote\",\"w\":8}");
    gs_repl_batch_free(&batch);
    close_pair(a, b);
}

Test(repl_apply, conflict_merge)
{
    gs_database *a, *b;
    test_resolver r;
    memset(&r, 0, sizeof r);
    gs_repl_apply_result res;
    gs_status st;
    gs_error err;
    conflict_run(R_MERGE, &a, &b, &r, &res, &st, &err);
    cr_assert_eq(st, GS_OK, "%s", err.message);
    cr_expect_eq(res.conflicts, 1);
    cr_expect_eq(res.applied, 1);
    char *row = rt_sql_dump(b, "SELECT * FROM t");
    cr_expect_str_eq(row, "1|remote|7");
    free(row);
    /* the merged columns are versioned with the incoming stamp */
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM _sirannon_column_versions WHERE row_id = "
                               "'1' AND node_id = 'node-a'"),
                 2);
    /* B's change row for the merge is stamped with the origin */
    char *last = rt_sql_dump(b, "SELECT operation, node_id FROM _sirannon_changes ORDER BY seq "
                                "DESC LIMIT 1");
    cr_expect_str_eq(last, "UPDATE|node-a");
    free(last);
    close_pair(a, b);
}

Test(repl_apply, conflict_errors_roll_back)
{
    static const int modes[] = {R_FAIL, R_BAD_MERGE, R_GHOST_MERGE, -1};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        gs_database *a, *b;
        test_resolver r;
        memset(&r, 0, sizeof r);
        gs_repl_apply_result res;
        gs_status st;
        gs_error err;
        gs_error_init(&err);
        conflict_setup(&a, &b);
        r.mode = modes[i];
        gs_repl_batch batch;
        int empty;
        rt_read_batch(a, "node-a", 1, 0, &batch, &empty);
        st = apply(b, &batch, modes[i] < 0 ? NULL : &r, 1, &res, &err);
        cr_expect_eq(st, GS_ERROR, "mode %d", modes[i]);
        cr_expect_str_eq(err.code, "CONFLICT_ERROR", "mode %d: %s", modes[i], err.message);
        cr_expect_str_eq(err.details, "{\"table\":\"t\",\"rowId\":\"1\"}");
        cr_expect_eq(res.applied, 0);
        cr_expect_eq(res.applied_seq, 1);
        char *row = rt_sql_dump(b, "SELECT * FROM t");
        cr_expect_str_eq(row, "1|local|7");
        free(row);
        cr_expect_eq(applied_pos(b), 1);
        gs_repl_batch_free(&batch);
        close_pair(a, b);
        gs_test_rmtree(tmpdir);
        gs_test_mkdtemp(tmpdir, sizeof tmpdir, "repl-apply");
    }
}

Test(repl_apply, update_of_an_absent_row_is_skipped_and_delete_wins)
{
    gs_database *a, *b;
    open_pair(&a, &b);
    test_resolver r = {.mode = R_LWW};
    gs_repl_apply_result res;
    rt_exec(a, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
    rt_exec(a, "INSERT INTO t VALUES (1, 'one'), (2, 'two')");
    int64_t at = ship(a, b, 0, 0, &r, &res);

    /* B deleted row 1, A updates it: skipped, not resurrected */
    rt_exec(b, "DELETE FROM t WHERE id = 1");
    rt_exec(a, "UPDATE t SET v = 'uno' WHERE id = 1");
    at = ship(a, b, at, 0, &r, &res);
    cr_expect_eq(res.skipped, 1);
    cr_expect_eq(res.applied, 0);
    cr_expect_eq(res.conflicts, 0);
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM t WHERE id = 1"), 0);

    /* B changed row 2 after A, A deletes it: the remote delete wins */
    rt_exec(b, "UPDATE t SET v = 'mine' WHERE id = 2");
    rt_exec(a, "DELETE FROM t WHERE id = 2");
    int calls = r.calls;
    at = ship(a, b, at, 0, &r, &res);
    cr_expect_eq(r.calls, calls + 1, "the resolver still sees the delete");
    cr_expect_str_eq(r.op, "delete");
    cr_expect_eq(res.applied, 1);
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM t"), 0);

    /* a delete of a row B never had is skipped */
    rt_exec(a, "INSERT INTO t VALUES (3, 'x')");
    rt_exec(b, "INSERT INTO t VALUES (4, 'only on b')");
    at = ship(a, b, at, 0, &r, &res);
    rt_exec(b, "DELETE FROM t WHERE id = 3");
    rt_exec(a, "DELETE FROM t WHERE id = 3");
    ship(a, b, at, 0, &r, &res);
    cr_expect_eq(res.skipped, 1);
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM t"), 1);
    close_pair(a, b);
}

/* ---- DDL ---- */

Test(repl_apply, ddl_mix_is_replicated)
{
    gs_database *a, *b;
    open_pair(&a, &b);
    rt_exec(a, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
    rt_exec(a, "INSERT INTO t VALUES (1, 'one')");
    const char *tx[] = {
        "ALTER TABLE t ADD COLUMN w INTEGER DEFAULT 5",
        "INSERT INTO t VALUES (2, 'two', 22)",
        "CREATE UNIQUE INDEX idx_t_v ON t (v)",
    };
    rt_tx(a, tx, 3);
    rt_exec(a, "CREATE TABLE gone (k TEXT PRIMARY KEY)");
    rt_exec(a, "INSERT INTO gone VALUES ('a')");
    rt_exec(a, "CREATE INDEX IF NOT EXISTS idx_gone ON gone (k)");
    rt_exec(a, "DROP INDEX idx_gone");
    rt_exec(a, "DROP TABLE gone");
    rt_exec(a, "UPDATE t SET w = 9 WHERE id = 1");

    test_resolver r = {.mode = R_LWW};
    gs_repl_apply_result res;
    gs_repl_batch batch;
    int empty;
    rt_read_batch(a, "node-a", 0, 0, &batch, &empty);
    apply_ok(b, &batch, &r, &res);
    cr_expect_eq(res.ddl, 7);
    cr_assert_eq(res.ndropped, 1);
    cr_expect_str_eq(res.dropped_tables[0], "gone");
    /* the column versions of the dropped table went with it */
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM _sirannon_column_versions WHERE table_name "
                               "= 'gone'"),
                 0);
    gs_repl_apply_result_free(&res);
    cr_expect_eq(res.ndropped, 0);
    expect_same(a, b, "SELECT * FROM t ORDER BY id");
    expect_same(a, b,
                "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE "
                "'\\_sirannon%' ESCAPE '\\' AND name NOT LIKE 'sqlite%' AND type != "
                "'trigger' ORDER BY name");
    /* B's triggers follow the new column: the captured rows match A's */
    expect_same(a, b,
                "SELECT table_name, operation, row_id, old_data, new_data, hlc FROM "
                "_sirannon_changes WHERE operation != 'DDL' ORDER BY seq");
    /* and B's own later writes are captured with it */
    rt_exec(b, "INSERT INTO t VALUES (3, 'three', 33)");
    char *nd = rt_sql_text(b, "SELECT new_data FROM _sirannon_changes ORDER BY seq DESC LIMIT 1");
    cr_expect_str_eq(nd, "{\"id\":3,\"v\":\"three\",\"w\":33}");
    free(nd);
    gs_repl_batch_free(&batch);
    close_pair(a, b);
}

Test(repl_apply, unsafe_ddl_rolls_the_whole_batch_back)
{
    gs_database *a, *b;
    open_pair(&a, &b);
    rt_exec(a, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
    rt_exec(a, "INSERT INTO t VALUES (1, 'one')");
    rt_exec(a, "CREATE INDEX idx_t_v ON t (v)");
    gs_repl_batch batch;
    int empty;
    rt_read_batch(a, "node-a", 0, 0, &batch, &empty);
    cr_assert_eq(batch.nchanges, 3);
    static const char *const bad[] = {
        "CREATE TABLE evil AS SELECT 1",
        "CREATE TABLE evil (a); DROP TABLE t",
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM t; END",
        "ALTER TABLE t RENAME TO z",
        "CREATE TABLE x (a DEFAULT (load_extension('evil')))",
        "DROP TABLE _sirannon_changes",
        "ATTACH DATABASE '/tmp/x' AS x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *saved = batch.changes[2].ddl_statement;
        batch.changes[2].ddl_statement = gs_strdup(bad[i]);
        rehash(&batch);
        gs_repl_apply_result res;
        gs_error err;
        cr_expect_eq(apply(b, &batch, NULL, 1, &res, &err), GS_ERROR, "%s", bad[i]);
        cr_expect_str_eq(err.code, "BATCH_VALIDATION_ERROR", "%s: %s", bad[i], err.message);
        gs_free(batch.changes[2].ddl_statement);
        batch.changes[2].ddl_statement = saved;
    }
    /* the CREATE TABLE and the insert before the bad statement are gone too */
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM sqlite_master WHERE name IN ('t', 'evil', "
                               "'x', 'z')"),
                 0);
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM _sirannon_changes"), 0);
    cr_expect_eq(applied_pos(b), 0);
    /* the genuine batch still applies afterwards */
    rehash(&batch);
    gs_repl_apply_result res;
    apply_ok(b, &batch, NULL, &res);
    expect_same(a, b, "SELECT * FROM t");
    /* the rolled-back attempts did not leave change capture believing t has triggers */
    expect_same(a, b,
                "SELECT table_name, operation, new_data, hlc FROM _sirannon_changes WHERE "
                "operation != 'DDL' ORDER BY seq");
    cr_expect_eq(rt_sql_int(b, "SELECT count(*) FROM _sirannon_changes"), 1);
    gs_repl_batch_free(&batch);
    close_pair(a, b);
}
