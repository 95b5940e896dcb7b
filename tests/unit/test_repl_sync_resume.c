/*
 * Paged, resumable, time-bounded first sync (sync.c): keyset pages bounded in rows and bytes,
 * a page without an ack sent again with backoff, a page received twice applied once, a joiner
 * restarted mid-table resuming after its last page (our source) or starting the table over
 * (a source that ignores resume cursors), the SyncRequest extension on the wire, and a large
 * bootstrap interrupted twice while the primary keeps writing.
 *
 * Rows of the interrupted bootstrap: 1,000,000 on the release build; 100,000 under the
 * sanitizers, which run it many times slower (three syncs and a catch-up must fit the ctest
 * timeout of 300 s; the protocol is the same, only the volume differs).
 */
#include "repl_harness.h"
#include "repl_inbox.h"

#include "repl/checksum.h"

#include <stdlib.h>

#if defined(__SANITIZE_ADDRESS__)
#define RESUME_ROWS 100000
#else
#define RESUME_ROWS 1000000
#endif

H_REPL_SUITE(repl_sync_resume, 900, GS_LOG_WARN)

static const gs_repl_peer_cfg A_PEERS[] = {{"node-b", "replica"}};
static const gs_repl_peer_cfg TO_A[] = {{"node-a", "primary"}};

/* ---- a bare endpoint driven by hand (a rogue source or a hand-made joiner) ---- */

/* The k-th message of a kind from index `from` on; returns its index (fails the test). */
static int inbox_wait(inbox *in, gs_sync_kind kind, int from)
{
    for (int i = from;; i++) {
        gs_sync_message *m = inbox_get(in, i, 20000);
        cr_assert_not_null(m, "no sync message of kind %d arrived", (int)kind);
        if (m->kind == kind)
            return i;
    }
}

/* Open the memory transport of a bare endpoint `id` on `yaml`, delivering into in. */
static const gs_repl_transport_vtable *bare_open(tnode *n, const char *id, const char *yaml,
                                                 inbox *in)
{
    memset(n, 0, sizeof *n);
    snprintf(n->id, sizeof n->id, "%s", id);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_plugin_load_builtin("memory", "memory", GS_KIND_REPL_TRANSPORT, &n->tp, &err),
                 GS_OK);
    cr_assert_eq(gs_cfg_load_string(yaml, strlen(yaml), "bare.yaml", &n->tdoc, &err), GS_OK);
    const gs_plugin_descriptor *d = n->tp->desc;
    n->tcfg = gs_calloc(1, d->config_struct_size);
    cr_assert_eq(gs_cfg_fill(n->tdoc, n->tdoc->root, "m", d->config_keys, d->config_key_count,
                             d->config_key_size, n->tcfg, &n->tarena, &err),
                 GS_OK);
    const gs_repl_transport_vtable *tv = d->vtable;
    cr_assert_eq(tv->create(&h_host, n->tcfg, id, &n->tinst, &err), GS_OK);
    memset(in, 0, sizeof *in);
    pthread_mutex_init(&in->m, NULL);
    pthread_cond_init(&in->c, NULL);
    gs_repl_events ev = {
        .struct_size = sizeof ev, .user = in, .on_message = inbox_message, .on_peer = inbox_peer};
    cr_assert_eq(tv->start(n->tinst, &ev, &err), GS_OK);
    return tv;
}

static void bare_send(tnode *n, const char *to, const gs_sync_message *m)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_sync_message_encode(m, &bytes, &len, &err), GS_OK);
    cr_assert_eq(((const gs_repl_transport_vtable *)n->tp->desc->vtable)
                     ->send(n->tinst, to, GS_REPL_MSG_SYNC, 0, bytes, len, &err),
                 GS_OK, "%s", err.message);
    gs_free(bytes);
}

static void bare_ack(tnode *n, const char *rid, const gs_sync_batch *b)
{
    gs_sync_message m;
    memset(&m, 0, sizeof m);
    m.kind = GS_SMSG_ACK;
    m.ack.request_id = (char *)rid;
    m.ack.joiner_node_id = n->id;
    m.ack.table = b->table;
    m.ack.batch_index = b->batch_index;
    m.ack.success = 1;
    bare_send(n, "node-a", &m);
}

static void bare_close(tnode *n, const gs_repl_transport_vtable *tv, inbox *in)
{
    tv->stop(n->tinst);
    tnode_stop(n);
    inbox_free(in);
}

static void rows_free(gs_rrow *rows, size_t n)
{
    for (size_t r = 0; r < n; r++) {
        for (size_t c = 0; c < rows[r].n; c++) {
            gs_free(rows[r].names[c]);
            gs_rval_free(&rows[r].vals[c]);
        }
        gs_free(rows[r].names);
        gs_free(rows[r].vals);
    }
}

/* rows id = from..to-1, v = 'row <id>' */
static void make_rows(gs_rrow *rows, int from, int to)
{
    gs_error err;
    gs_error_init(&err);
    memset(rows, 0, sizeof *rows * (size_t)(to - from));
    for (int r = from; r < to; r++) {
        char text[32];
        int len = snprintf(text, sizeof text, "row %d", r);
        gs_rval id = {.type = GS_RVAL_INT, .i = r};
        gs_rval v;
        gs_value tv = {.type = GS_VALUE_TEXT, .u.text = {text, (size_t)len}};
        cr_assert_eq(gs_rval_from_value(&v, &tv, &err), GS_OK);
        cr_assert_eq(gs_rrow_add_take(&rows[r - from], "id", &id, &err), GS_OK);
        cr_assert_eq(gs_rrow_add_take(&rows[r - from], "v", &v, &err), GS_OK);
    }
}

/* ---- the SyncRequest extension on the wire ---- */

/* The payload inside a SyncMessage: after its one-byte tag and its length. */
static const uint8_t *payload(const uint8_t *p, size_t len, size_t *out_len)
{
    cr_assert_gt(len, 2);
    size_t pos = 1, n = 0;
    for (int shift = 0; pos < len; shift += 7) {
        uint8_t b = p[pos++];
        n |= (size_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            break;
    }
    cr_assert_eq(pos + n, len, "one field holds the whole message");
    *out_len = n;
    return p + pos;
}

Test(repl_sync_resume, sync_request_resume_cursors_round_trip_and_leave_old_bytes_alone)
{
    char *done[] = {"small"};
    gs_sync_message m;
    memset(&m, 0, sizeof m);
    m.kind = GS_SMSG_REQUEST;
    m.request.request_id = "req-1";
    m.request.joiner_node_id = "node-b";
    m.request.completed_tables = done;
    m.request.ncompleted = 1;
    m.request.supports_stream_verification = 1;
    uint8_t *plain = NULL, *ext = NULL;
    size_t plain_len = 0, ext_len = 0;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_sync_message_encode(&m, &plain, &plain_len, &err), GS_OK);

    gs_sync_resume r[2] = {
        {"big", 41, "{\"k\":\"key\",\"v\":[[\"i\",420000]]}", "ab12", 420000},
        {"odd \"name\"", 0, "{\"k\":\"rowid\",\"v\":[[\"i\",7]]}", "cd34", 7},
    };
    m.request.resume = r;
    m.request.nresume = 2;
    m.request.resume_snapshot_seq = 123456789012LL;
    cr_assert_eq(gs_sync_message_encode(&m, &ext, &ext_len, &err), GS_OK);
    /* fields 100 and 101 come after the spec's fields: a node that does not know them reads
     * exactly the bytes it always read, and skips the rest */
    size_t pl = 0, el = 0;
    const uint8_t *pp = payload(plain, plain_len, &pl), *ep = payload(ext, ext_len, &el);
    cr_assert_gt(el, pl);
    cr_assert_eq(memcmp(ep, pp, pl), 0, "the spec's fields are encoded as before");
    cr_assert_eq(ep[pl], ((100 << 3 | 2) & 0x7f) | 0x80, "field 100 follows them");

    gs_sync_message d;
    cr_assert_eq(gs_sync_message_decode(ext, ext_len, &d, &err), GS_OK, "%s", err.message);
    cr_assert_eq(d.kind, GS_SMSG_REQUEST);
    cr_assert_str_eq(d.request.request_id, "req-1");
    cr_assert_eq(d.request.ncompleted, 1);
    cr_assert_str_eq(d.request.completed_tables[0], "small");
    cr_assert_eq(d.request.nresume, 2);
    for (size_t i = 0; i < 2; i++) {
        cr_assert_str_eq(d.request.resume[i].table, r[i].table);
        cr_assert_eq(d.request.resume[i].batch_index, r[i].batch_index);
        cr_assert_str_eq(d.request.resume[i].cursor, r[i].cursor);
        cr_assert_str_eq(d.request.resume[i].digest, r[i].digest);
        cr_assert_eq(d.request.resume[i].rows, r[i].rows);
    }
    cr_assert_eq(d.request.resume_snapshot_seq, 123456789012LL);
    gs_sync_message_free(&d);

    /* the plain request decodes with nothing to resume */
    cr_assert_eq(gs_sync_message_decode(plain, plain_len, &d, &err), GS_OK);
    cr_assert_eq(d.request.nresume, 0);
    cr_assert_null(d.request.resume);
    cr_assert_eq(d.request.resume_snapshot_seq, 0);
    gs_sync_message_free(&d);

    /* the batch extensions: absent when zero, kept when set */
    gs_sync_message b;
    memset(&b, 0, sizeof b);
    b.kind = GS_SMSG_BATCH;
    b.batch.request_id = "req-1";
    b.batch.table = "big";
    b.batch.batch_index = 3;
    b.batch.checksum = "00";
    uint8_t *b1 = NULL, *b2 = NULL;
    size_t l1 = 0, l2 = 0;
    cr_assert_eq(gs_sync_message_encode(&b, &b1, &l1, &err), GS_OK);
    b.batch.snapshot_seq = 99;
    b.batch.total_rows = 1000000;
    b.batch.cursor = "{\"k\":\"key\",\"v\":[[\"t\",\"6869\"]]}";
    cr_assert_eq(gs_sync_message_encode(&b, &b2, &l2, &err), GS_OK);
    pp = payload(b1, l1, &pl);
    ep = payload(b2, l2, &el);
    cr_assert_gt(el, pl);
    cr_assert_eq(memcmp(ep, pp, pl), 0);
    cr_assert_eq(gs_sync_message_decode(b2, l2, &d, &err), GS_OK);
    cr_assert_eq(d.batch.snapshot_seq, 99);
    cr_assert_eq(d.batch.total_rows, 1000000);
    cr_assert_str_eq(d.batch.cursor, b.batch.cursor);
    gs_sync_message_free(&d);
    cr_assert_eq(gs_sync_message_decode(b1, l1, &d, &err), GS_OK);
    cr_assert_null(d.batch.cursor);
    cr_assert_eq(d.batch.snapshot_seq, 0);
    gs_sync_message_free(&d);
    gs_free(b1);
    gs_free(b2);
    gs_free(plain);
    gs_free(ext);
}

/* ---- the joiner against a rogue source ---- */

/* Send the schema batch of table t (snapshot_seq 0 = say nothing, as a reference node). */
static void rogue_schema(tnode *a, const char *rid, int64_t snapshot_seq)
{
    char *schema[] = {"CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"};
    char sum[65];
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_repl_strings_checksum(schema, 1, sum, &err), GS_OK);
    gs_sync_message m;
    memset(&m, 0, sizeof m);
    m.kind = GS_SMSG_BATCH;
    m.batch.request_id = (char *)rid;
    m.batch.table = "__schema__";
    m.batch.schema = schema;
    m.batch.nschema = 1;
    m.batch.checksum = sum;
    m.batch.is_last_batch_for_table = 1;
    m.batch.total_tables = 1;
    m.batch.snapshot_seq = snapshot_seq;
    m.batch.total_rows = snapshot_seq ? 3 : 0;
    bare_send(a, "node-b", &m);
}

/* Send rows [from, to) of t as batch idx; returns its checksum in sum. */
static void rogue_page(tnode *a, const char *rid, int idx, int from, int to, int last,
                       const char *cursor, char sum[65])
{
    gs_rrow rows[8];
    make_rows(rows, from, to);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_repl_rows_checksum(rows, (size_t)(to - from), sum, &err), GS_OK);
    gs_sync_message m;
    memset(&m, 0, sizeof m);
    m.kind = GS_SMSG_BATCH;
    m.batch.request_id = (char *)rid;
    m.batch.table = "t";
    m.batch.batch_index = idx;
    m.batch.rows = rows;
    m.batch.nrows = (size_t)(to - from);
    m.batch.checksum = sum;
    m.batch.is_last_batch_for_table = last;
    m.batch.cursor = (char *)cursor;
    bare_send(a, "node-b", &m);
    rows_free(rows, (size_t)(to - from));
}

static void expect_ack(inbox *in, int *at, const char *table, int idx, int success)
{
    int i = inbox_wait(in, GS_SMSG_ACK, *at);
    *at = i + 1;
    const gs_sync_ack *a = &in->msgs[i].ack;
    cr_assert_str_eq(a->table, table);
    cr_assert_eq(a->batch_index, idx, "ack of batch %d, expected %d", a->batch_index, idx);
    cr_assert_eq(a->success, success, "ack of %s batch %d: %s", table, idx,
                 a->error ? a->error : "");
}

Test(repl_sync_resume, a_page_received_twice_is_applied_once_and_a_restart_resumes_or_restarts)
{
    tnode a, b;
    inbox in;
    const gs_repl_transport_vtable *tv =
        bare_open(&a, "node-a", "bus: rogue2\npeers: [node-b]\n", &in);
    tnode_open(&b, dir, "node-b");
    gs_repl_options o;
    gs_repl_options_default(&o);
    o.batch_interval_ms = 20;
    tnode_start(&b, "replica", TO_A, 1, "bus: rogue2\npeers: [node-a]\n", &o);
    int i = inbox_wait(&in, GS_SMSG_REQUEST, 0);
    char rid[64];
    snprintf(rid, sizeof rid, "%s", in.msgs[i].request.request_id);
    cr_assert_eq(in.msgs[i].request.nresume, 0, "a fresh joiner has nothing to resume");
    int at = i + 1;
    rogue_schema(&a, rid, 40);
    expect_ack(&in, &at, "__schema__", 0, 1);

    /* page 0 twice (its ack was lost): acknowledged twice, applied once */
    char sum0[65], sum1[65];
    rogue_page(&a, rid, 0, 1, 3, 0, "{\"k\":\"key\",\"v\":[[\"i\",2]]}", sum0);
    expect_ack(&in, &at, "t", 0, 1);
    rogue_page(&a, rid, 0, 1, 3, 0, "{\"k\":\"key\",\"v\":[[\"i\",2]]}", sum0);
    expect_ack(&in, &at, "t", 0, 1);
    cr_assert_eq(table_rows(b.path, "t"), 2, "the page received twice was applied once");
    gs_sync_progress p;
    gs_repl_sync_progress(b.e, &p);
    cr_assert_eq(p.pages_duplicate, 1);
    cr_assert(p.active);
    cr_assert_eq(p.rows, 2);
    cr_assert_eq(p.rows_total, 3);
    cr_assert_eq(p.tables_total, 1);
    gs_buf hb;
    gs_buf_init(&hb);
    gs_repl_status_json(b.e, &hb);
    cr_assert(strstr(hb.data, "\"syncProgress\":{\"source\":\"node-a\",\"tablesDone\":0,"
                              "\"tablesTotal\":1,\"rows\":2,\"rowsTotal\":3"),
              "/health/ready shows the progress: %s", hb.data);
    gs_buf_free(&hb);

    /* the joiner stops mid-table and starts again: it asks to resume after page 0 */
    tnode_close(&b);
    inbox_free(&in);
    tnode_open(&b, dir, "node-b");
    tnode_start(&b, "replica", TO_A, 1, "bus: rogue2\npeers: [node-a]\n", &o);
    i = inbox_wait(&in, GS_SMSG_REQUEST, 0);
    const gs_sync_request *rq = &in.msgs[i].request;
    cr_assert_eq(rq->nresume, 1, "one table to resume");
    cr_assert_str_eq(rq->resume[0].table, "t");
    cr_assert_eq(rq->resume[0].batch_index, 0);
    cr_assert_eq(rq->resume[0].rows, 2);
    cr_assert_str_eq(rq->resume[0].cursor, "{\"k\":\"key\",\"v\":[[\"i\",2]]}");
    char chain[65] = "";
    gs_repl_digest_step(chain, sum0);
    cr_assert_str_eq(rq->resume[0].digest, chain, "the digest chain through page 0");
    cr_assert_eq(rq->resume_snapshot_seq, 40, "the snapshot the kept part came from");
    cr_assert_eq(rq->ncompleted, 0);
    snprintf(rid, sizeof rid, "%s", rq->request_id);
    at = i + 1;

    /* a source that ignores the cursor (a reference node) sends t from page 0: the joiner
     * empties it and starts over */
    rogue_schema(&a, rid, 0);
    expect_ack(&in, &at, "__schema__", 0, 1);
    rogue_page(&a, rid, 0, 1, 3, 0, NULL, sum0);
    expect_ack(&in, &at, "t", 0, 1);
    rogue_page(&a, rid, 1, 3, 4, 1, NULL, sum1);
    expect_ack(&in, &at, "t", 1, 1);
    cr_assert_eq(table_rows(b.path, "t"), 3);
    gs_repl_sync_progress(b.e, &p);
    cr_assert_eq(p.tables_restarted, 1);
    cr_assert_eq(p.tables_resumed, 0);
    chain[0] = '\0';
    gs_repl_digest_step(chain, sum0);
    gs_repl_digest_step(chain, sum1);
    gs_sync_manifest mf = {"t", 3, NULL, chain};
    gs_sync_message m;
    memset(&m, 0, sizeof m);
    m.kind = GS_SMSG_COMPLETE;
    m.complete.request_id = rid;
    m.complete.snapshot_seq = 50;
    m.complete.manifests = &mf;
    m.complete.nmanifests = 1;
    bare_send(&a, "node-b", &m);
    int64_t deadline = gs_test_now_ms() + 20000;
    while (strcmp(gs_repl_sync_phase(b.e), "catching-up") != 0 &&
           strcmp(gs_repl_sync_phase(b.e), "ready") != 0 && gs_test_now_ms() < deadline)
        usleep(2000); /* polling a condition, bounded by the deadline */
    cr_assert_neq(strcmp(gs_repl_sync_phase(b.e), "syncing"), 0, "the sync was not verified");
    /* every part of this sync came from the last snapshot (50) or one whose seq is unknown;
     * the kept part from snapshot 40 was started over, so catch-up goes on from 50 */
    cr_assert_eq(gs_repl_position(b.e), 50);
    gs_repl_sync_progress(b.e, &p);
    cr_assert(!p.active);
    tnode_close(&b);
    bare_close(&a, tv, &in);
}

/* ---- against our source: pages by bytes, a lost ack, an interrupted bootstrap ---- */

Test(repl_sync_resume, pages_are_bounded_in_bytes_and_a_larger_row_goes_alone)
{
    tnode a;
    tnode_open(&a, dir, "node-a");
    gs_repl_options o;
    gs_repl_options_default(&o);
    o.batch_interval_ms = 20;
    o.sync_batch_size = 1000;
    o.sync_batch_max_bytes = 256 * 1024;
    tnode_start(&a, "primary", A_PEERS, 1, "bus: bytes\npeers: [node-b]\n", &o);
    exec_ok(a.db, "CREATE TABLE blobs (k TEXT PRIMARY KEY, b BLOB) WITHOUT ROWID");
    /* 20 rows of 100 KB, then one of 1 MB (over the bound) in the middle of the key order */
    exec_ok(a.db, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20) "
                  "INSERT INTO blobs SELECT printf('k%02d', x), randomblob(100000) FROM c");
    exec_ok(a.db, "INSERT INTO blobs VALUES ('k10x', randomblob(1048576))");
    inbox in;
    tnode bj;
    const gs_repl_transport_vtable *tv =
        bare_open(&bj, "node-b", "bus: bytes\npeers: [node-a]\n", &in);
    gs_sync_message m;
    memset(&m, 0, sizeof m);
    m.kind = GS_SMSG_REQUEST;
    m.request.request_id = "req-bytes";
    m.request.joiner_node_id = "node-b";
    m.request.supports_stream_verification = 1;
    bare_send(&bj, "node-a", &m);
    int pages = 0, rows = 0, alone = 0;
    char prev_last[16] = "";
    for (int i = 0;; i++) {
        gs_sync_message *got = inbox_get(&in, i, 20000);
        cr_assert_not_null(got, "the sync stalled");
        if (got->kind == GS_SMSG_COMPLETE) {
            cr_assert_eq(got->complete.nmanifests, 1);
            cr_assert_eq(got->complete.manifests[0].row_count, 21);
            break;
        }
        cr_assert_eq(got->kind, GS_SMSG_BATCH);
        const gs_sync_batch *bt = &got->batch;
        if (strcmp(bt->table, "blobs") == 0) {
            size_t bytes = 0;
            for (size_t r = 0; r < bt->nrows; r++)
                for (size_t c = 0; c < bt->rows[r].n; c++)
                    bytes += bt->rows[r].vals[c].len + 8;
            cr_assert(bt->nrows == 1 || bytes <= (size_t)o.sync_batch_max_bytes,
                      "page %d holds %zu rows, %zu bytes", (int)bt->batch_index, bt->nrows, bytes);
            if (bt->nrows == 1 && bt->rows[0].vals[1].len == 1048576)
                alone = 1;
            /* keyset order: every page starts after the previous one's last key */
            for (size_t r = 0; r < bt->nrows; r++) {
                const char *k = (const char *)bt->rows[r].vals[0].p;
                cr_assert_gt(strcmp(k, prev_last), 0, "key %s after %s", k, prev_last);
                snprintf(prev_last, sizeof prev_last, "%s", k);
            }
            cr_assert_not_null(bt->cursor, "every page carries its cursor");
            cr_assert_eq(bt->batch_index, pages);
            pages++;
            rows += (int)bt->nrows;
        } else {
            cr_assert_eq(bt->snapshot_seq, gs_db_committed_seq(a.db),
                         "the schema batch names "
                         "its snapshot");
            cr_assert_eq(bt->total_rows, 21);
        }
        bare_ack(&bj, "req-bytes", bt);
    }
    cr_assert_eq(rows, 21);
    cr_assert(alone, "the 1 MB row went alone");
    cr_assert_geq(pages, 11, "21 rows of >= 100 KB under a 256 KB bound: %d pages", pages);
    bare_close(&bj, tv, &in);
    tnode_close(&a);
}

Test(repl_sync_resume, a_page_whose_ack_is_dropped_is_sent_again_with_backoff)
{
    tnode a, b;
    tnode_open(&a, dir, "node-a");
    gs_repl_options o;
    gs_repl_options_default(&o);
    o.batch_interval_ms = 20;
    o.sync_batch_size = 100;
    o.sync_ack_timeout_ms = 150;
    tnode_start(&a, "primary", A_PEERS, 1, "bus: drop\npeers: [node-b]\n", &o);
    exec_ok(a.db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
    exec_ok(a.db, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500) "
                  "INSERT INTO t SELECT x, 'v' || x FROM c");
    inbox in;
    const gs_repl_transport_vtable *tv =
        bare_open(&b, "node-b", "bus: drop\npeers: [node-a]\n", &in);
    gs_sync_message m;
    memset(&m, 0, sizeof m);
    m.kind = GS_SMSG_REQUEST;
    m.request.request_id = "req-drop";
    m.request.joiner_node_id = "node-b";
    m.request.supports_stream_verification = 1;
    bare_send(&b, "node-a", &m);
    int dropped = 0, again = 0;
    int64_t dropped_at = 0, again_at = 0;
    char dropped_sum[65] = "";
    for (int i = 0;; i++) {
        gs_sync_message *got = inbox_get(&in, i, 20000);
        cr_assert_not_null(got, "the sync stalled");
        if (got->kind == GS_SMSG_COMPLETE)
            break;
        const gs_sync_batch *bt = &got->batch;
        if (strcmp(bt->table, "t") == 0 && bt->batch_index == 2 && !dropped) {
            /* the memory transport loses this page's ack (fault mode drop) */
            tnode_control(&b, "drop 1");
            bare_ack(&b, "req-drop", bt);
            tnode_control(&b, "drop 0");
            dropped = 1;
            dropped_at = gs_test_now_ms();
            snprintf(dropped_sum, sizeof dropped_sum, "%s", bt->checksum);
            continue;
        }
        if (strcmp(bt->table, "t") == 0 && bt->batch_index == 2 && dropped && !again) {
            again = 1;
            again_at = gs_test_now_ms();
            cr_assert_str_eq(bt->checksum, dropped_sum, "the same page again");
        }
        if (strcmp(bt->table, "t") == 0 && dropped)
            cr_assert_geq(bt->batch_index, 2, "no page before the lost one is sent again");
        bare_ack(&b, "req-drop", bt);
    }
    cr_assert(dropped && again, "the page whose ack was lost came again");
    cr_assert_geq(again_at - dropped_at, 100, "it came again after the ack timeout");
    gs_sync_progress p;
    gs_repl_sync_progress(a.e, &p);
    cr_assert_geq(p.pages_resent, 1);
    bare_close(&b, tv, &in);
    tnode_close(&a);
}

Test(repl_sync_resume, a_page_never_acknowledged_ends_the_sync_with_sync_error)
{
    tnode a, b;
    tnode_open(&a, dir, "node-a");
    gs_repl_options o;
    gs_repl_options_default(&o);
    o.batch_interval_ms = 20;
    o.sync_ack_timeout_ms = 50;
    tnode_start(&a, "primary", A_PEERS, 1, "bus: deaf\npeers: [node-b]\n", &o);
    exec_ok(a.db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
    inbox in;
    const gs_repl_transport_vtable *tv =
        bare_open(&b, "node-b", "bus: deaf\npeers: [node-a]\n", &in);
    gs_sync_message m;
    memset(&m, 0, sizeof m);
    m.kind = GS_SMSG_REQUEST;
    m.request.request_id = "req-deaf";
    m.request.joiner_node_id = "node-b";
    m.request.supports_stream_verification = 1;
    bare_send(&b, "node-a", &m);
    /* never acknowledge: the schema batch is sent 1 + 4 times (waits 50+100+200+200+200 ms) */
    int sends = 0;
    for (int i = 0; i < 5; i++) {
        gs_sync_message *got = inbox_get(&in, i, 5000);
        cr_assert_not_null(got, "send %d of the unacknowledged page did not come", i + 1);
        cr_assert_eq(got->kind, GS_SMSG_BATCH);
        cr_assert_str_eq(got->batch.table, "__schema__");
        sends++;
    }
    cr_assert_eq(sends, 5);
    gs_error last;
    int64_t deadline = gs_test_now_ms() + 5000;
    do {
        gs_error_init(&last);
        gs_repl_last_error(a.e, &last);
        if (strcmp(last.code, "SYNC_ERROR") == 0)
            break;
        usleep(5000); /* polling a condition, bounded by the deadline */
    } while (gs_test_now_ms() < deadline);
    cr_assert_str_eq(last.code, "SYNC_ERROR", "%s", last.message);
    cr_assert(strstr(last.message, "after 5 sends"), "%s", last.message);
    cr_assert_null(inbox_get(&in, 5, 300), "nothing more after the last try");
    bare_close(&b, tv, &in);
    tnode_close(&a);
}

/* ---- a large bootstrap interrupted twice ---- */

static void fill(const char *path, int rows)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    char sql[1024];
    snprintf(sql, sizeof sql,
             "PRAGMA journal_mode=WAL;"
             "CREATE TABLE big (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL, tag BLOB);"
             "CREATE TABLE keyed (a TEXT, b INTEGER, v TEXT, PRIMARY KEY (a, b));"
             "CREATE TABLE bag (x INTEGER, y TEXT);"
             "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d) "
             "INSERT INTO big SELECT x, 'name ' || x, x * 1.5, CASE WHEN x %% 7 = 0 THEN NULL "
             "ELSE randomblob(12) END FROM c;"
             "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d) "
             "INSERT INTO keyed SELECT 'k' || (x %% 97), x, 'v' || x FROM c;"
             "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d) "
             "INSERT INTO bag SELECT x %% 13, 'y' || x FROM c;",
             rows, rows / 10, rows / 10);
    char *msg = NULL;
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, &msg), SQLITE_OK, "%s", msg ? msg : "");
    sqlite3_close(db);
}

typedef struct writer_arg {
    gs_database *db;
    volatile int stop;
    int done;
} writer_arg;

/* Writes on the primary for as long as the test runs: updates, inserts and deletes spread
 * over the whole key range of every table. */
static void *writes_meanwhile(void *p)
{
    writer_arg *w = p;
    for (int i = 0; !w->stop; i++) {
        char sql[200];
        int id = 1 + (int)(((int64_t)i * 7919) % RESUME_ROWS);
        switch (i % 5) {
        case 0:
            snprintf(sql, sizeof sql,
                     "UPDATE big SET score = score + 1, name = 'upd %d' WHERE "
                     "id = %d",
                     i, id);
            break;
        case 1:
            snprintf(sql, sizeof sql, "INSERT INTO big (id, name) VALUES (%d, 'during %d')",
                     RESUME_ROWS + 1 + i, i);
            break;
        case 2: snprintf(sql, sizeof sql, "DELETE FROM big WHERE id = %d", id); break;
        case 3:
            snprintf(sql, sizeof sql, "UPDATE keyed SET v = 'upd %d' WHERE b = %d", i,
                     1 + id % (RESUME_ROWS / 10));
            break;
        default: snprintf(sql, sizeof sql, "INSERT INTO bag VALUES (%d, 'during %d')", i, i); break;
        }
        exec_ok(w->db, sql);
        w->done++;
        usleep(500); /* pacing of the background load, not a wait for a condition */
    }
    return NULL;
}

/* Changes in the log of the file at path that node `id` wrote itself. */
static int own_changes(const char *path, const char *id)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st = NULL;
    int n = -1;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM _sirannon_changes WHERE node_id = ?",
                                    -1, &st, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* Wait until b's sync holds at least `rows` rows (a page boundary past it), bounded. */
static void wait_rows(tnode *b, int64_t rows)
{
    int64_t deadline = gs_test_now_ms() + 300000;
    gs_sync_progress p;
    for (;;) {
        gs_repl_sync_progress(b->e, &p);
        if (p.rows >= rows || gs_test_now_ms() > deadline)
            break;
        usleep(1000); /* polling a condition, bounded by the deadline */
    }
    cr_assert_geq(p.rows, rows, "the sync did not get to %lld rows", (long long)rows);
}

Test(repl_sync_resume, a_large_bootstrap_interrupted_twice_resumes_and_converges)
{
    tnode a, b;
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/node-a.db", dir);
    fill(path, RESUME_ROWS);
    tnode_open(&a, dir, "node-a");
    gs_repl_options o;
    gs_repl_options_default(&o);
    o.batch_interval_ms = 20;
    o.ack_timeout_ms = 2000;
    o.sync_batch_size = RESUME_ROWS / 100; /* 100 pages of big */
    tnode_start(&a, "primary", A_PEERS, 1, "bus: twice\npeers: [node-b]\n", &o);
    writer_arg w = {a.db, 0, 0};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, writes_meanwhile, &w), 0);
    /* slow the stream a little so the stops land mid-table */
    tnode_control(&a, "delay 1 1");
    tnode_open(&b, dir, "node-b");
    tnode_start(&b, "replica", TO_A, 1, "bus: twice\npeers: [node-a]\n", &o);
    int64_t stops[2] = {RESUME_ROWS / 4, RESUME_ROWS * 3 / 5};
    for (int k = 0; k < 2; k++) {
        wait_rows(&b, stops[k]);
        gs_sync_progress p;
        gs_repl_sync_progress(b.e, &p);
        cr_assert(p.active, "stop %d: the sync is still running", k + 1);
        cr_assert_lt(p.rows, RESUME_ROWS, "stop %d lands inside table big", k + 1);
        cr_assert_eq(p.tables_restarted, 0, "no table started over");
        if (k == 1)
            cr_assert_eq(p.tables_resumed, 1, "the second run resumed big mid-table");
        tnode_close(&b); /* the joiner's process stops; its database closes */
        tnode_open(&b, dir, "node-b");
        tnode_start(&b, "replica", TO_A, 1, "bus: twice\npeers: [node-a]\n", &o);
    }
    tnode_control(&a, "delay 0 0");
    int64_t deadline = gs_test_now_ms() + 600000;
    while ((strcmp(gs_repl_sync_phase(b.e), "syncing") == 0 ||
            strcmp(gs_repl_sync_phase(b.e), "pending") == 0) &&
           gs_test_now_ms() < deadline)
        usleep(10000); /* polling a condition, bounded by the deadline */
    gs_sync_progress p;
    gs_repl_sync_progress(b.e, &p);
    cr_assert_eq(p.tables_resumed, 1, "the third run resumed big mid-table");
    cr_assert_eq(p.tables_restarted, 0, "no table started over");
    cr_assert(!p.active);
    cr_assert_geq(p.rows, RESUME_ROWS * 9 / 10, "rows held at the end: %lld", (long long)p.rows);
    w.stop = 1;
    pthread_join(t, NULL);
    cr_assert_gt(w.done, 0, "the primary kept writing");
    tnode *reps[] = {&b};
    cr_assert(wait_converged(&a, reps, 1, 300000), "the joiner did not catch up");
    assert_same(&a, &b);
    /* the copied rows were not captured as the joiner's own writes (resumed pages included) */
    cr_assert_eq(own_changes(b.path, "node-b"), 0);
    gs_repl_counters c;
    gs_repl_get_counters(b.e, &c);
    cr_assert_eq(c.rejected, 0);
    gs_log(GS_LOG_WARN, "test", "interrupted bootstrap of %d rows: %d writes meanwhile",
           RESUME_ROWS, w.done);
    tnode_close(&b);
    tnode_close(&a);
}
