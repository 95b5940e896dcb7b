/* The replication codec: round trips of every message type (absent vs empty rows, absent
 * term and group, bool values, 64-bit extremes, NaN and infinite doubles, text with U+0000,
 * named and positional parameters), the bytes read back through the spec's own proto, map
 * keys sent twice, garbage and truncated bytes rejected, and allocation failures. */
#include "base/alloc.h"
#include "base/error.h"
#include "repl/checksum.h"
#include "repl/codec.h"
#include "repl/msg.h"

#include "replication.pb-c.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- building values ---- */

static gs_rval text(const char *s, size_t len)
{
    gs_rval v = {.type = GS_RVAL_TEXT, .len = len};
    v.p = gs_malloc(len + 1);
    memcpy(v.p, s, len);
    v.p[len] = 0;
    return v;
}

static gs_rval blob(const char *s, size_t len)
{
    gs_rval v = text(s, len);
    v.type = GS_RVAL_BLOB;
    return v;
}

static void put(gs_rrow *r, const char *name, gs_rval v)
{
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_rrow_add_take(r, name, &v, &err), GS_OK);
}

/* A row holding every kind of value the wire carries. */
static gs_rrow *every_value_row(void)
{
    gs_rrow *r = gs_rrow_new();
    put(r, "null", (gs_rval){.type = GS_RVAL_NULL});
    put(r, "zero", (gs_rval){.type = GS_RVAL_INT, .i = 0});
    put(r, "int", (gs_rval){.type = GS_RVAL_INT, .i = -42});
    put(r, "max", (gs_rval){.type = GS_RVAL_INT, .i = INT64_MAX});
    put(r, "min", (gs_rval){.type = GS_RVAL_INT, .i = INT64_MIN});
    put(r, "dzero", (gs_rval){.type = GS_RVAL_DOUBLE, .d = 0.0});
    put(r, "negzero", (gs_rval){.type = GS_RVAL_DOUBLE, .d = -0.0});
    put(r, "pi", (gs_rval){.type = GS_RVAL_DOUBLE, .d = 3.141592653589793});
    put(r, "nan", (gs_rval){.type = GS_RVAL_DOUBLE, .d = NAN});
    put(r, "inf", (gs_rval){.type = GS_RVAL_DOUBLE, .d = INFINITY});
    put(r, "ninf", (gs_rval){.type = GS_RVAL_DOUBLE, .d = -INFINITY});
    put(r, "empty_text", text("", 0));
    put(r, "text", text("h\xc3\xa9llo", 6));
    put(r, "nul_text", text("a\0b", 3));
    put(r, "empty_blob", blob("", 0));
    put(r, "blob", blob("\x00\x01\xff", 3));
    put(r, "true", (gs_rval){.type = GS_RVAL_BOOL, .i = 1});
    put(r, "false", (gs_rval){.type = GS_RVAL_BOOL, .i = 0});
    return r;
}

static void assert_rows_equal(const gs_rrow *a, const gs_rrow *b)
{
    if (!a || !b) {
        cr_assert_eq(a, b, "one row is NULL, the other is not");
        return;
    }
    cr_assert_eq(a->n, b->n, "column counts %zu and %zu", a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        cr_assert_str_eq(a->names[i], b->names[i]);
        cr_assert(gs_rval_equal(&a->vals[i], &b->vals[i]), "column %s differs", a->names[i]);
    }
}

static void assert_str_eq_or_null(const char *a, const char *b)
{
    if (!a || !b)
        cr_assert_eq(a, b, "\"%s\" vs \"%s\"", a ? a : "(null)", b ? b : "(null)");
    else
        cr_assert_str_eq(a, b);
}

static void fill_change(gs_repl_change *c, const char *op, int64_t seq)
{
    memset(c, 0, sizeof *c);
    c->table = gs_strdup("orders");
    c->operation = gs_strdup(op);
    c->row_id = gs_strdup("7");
    c->hlc = gs_strdup("018bcfe56800-0001-node-a");
    c->tx_id = gs_strdup("tx-1");
    c->node_id = gs_strdup("node-a");
    c->seq = seq;
    if (strcmp(op, "ddl") == 0) {
        c->ddl_statement = gs_strdup("ALTER TABLE orders ADD COLUMN note TEXT");
        c->row_id[0] = '\0';
        return;
    }
    c->primary_key = gs_rrow_new();
    put(c->primary_key, "id", (gs_rval){.type = GS_RVAL_INT, .i = 7});
    if (strcmp(op, "delete") != 0)
        c->new_data = every_value_row();
    if (strcmp(op, "insert") != 0)
        c->old_data = gs_rrow_new(); /* present but empty: {} */
}

/* ---- ReplicationMessage ---- */

static void roundtrip_repl(const gs_repl_message *in, gs_repl_message *out)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_repl_message_encode(in, &bytes, &len, &err), GS_OK, "%s", err.message);
    cr_assert_not_null(bytes);
    cr_assert_eq(gs_repl_message_decode(bytes, len, out, &err), GS_OK, "%s", err.message);
    gs_free(bytes);
}

Test(repl_codec, hello_with_and_without_term)
{
    gs_repl_message in, out;
    memset(&in, 0, sizeof in);
    in.kind = GS_RMSG_HELLO;
    in.hello.node_id = gs_strdup("node-b");
    in.hello.role = gs_strdup("replica");
    in.hello.group_id = gs_strdup("g1");
    in.hello.has_term = 1;
    in.hello.primary_term = 9;
    in.hello.protocol_version = gs_strdup("1");
    roundtrip_repl(&in, &out);
    cr_assert_eq(out.kind, GS_RMSG_HELLO);
    cr_assert_str_eq(out.hello.node_id, "node-b");
    cr_assert_str_eq(out.hello.role, "replica");
    cr_assert_str_eq(out.hello.group_id, "g1");
    cr_assert_eq(out.hello.has_term, 1);
    cr_assert_eq(out.hello.primary_term, 9);
    cr_assert_str_eq(out.hello.protocol_version, "1");
    gs_repl_message_free(&out);

    /* static mode: no group, no term, no protocol version */
    gs_free(in.hello.group_id);
    in.hello.group_id = NULL;
    in.hello.has_term = 0;
    in.hello.primary_term = 0;
    gs_free(in.hello.protocol_version);
    in.hello.protocol_version = NULL;
    roundtrip_repl(&in, &out);
    cr_assert_null(out.hello.group_id, "absent group_id decodes as absent");
    cr_assert_eq(out.hello.has_term, 0);
    cr_assert_not_null(out.hello.protocol_version);
    cr_assert_str_eq(out.hello.protocol_version, "");
    gs_repl_message_free(&out);
    gs_repl_message_free(&in);
}

static void fill_batch(gs_repl_batch *b)
{
    memset(b, 0, sizeof *b);
    b->source_node_id = gs_strdup("node-a");
    b->batch_id = gs_strdup("node-a-1-4");
    b->group_id = gs_strdup("group");
    b->has_term = 1;
    b->primary_term = INT64_MAX;
    b->from_seq = 1;
    b->to_seq = 4;
    b->hlc_min = gs_strdup("018bcfe56800-0001-node-a");
    b->hlc_max = gs_strdup("018bcfe56801-0000-node-a");
    b->nchanges = 4;
    b->changes = gs_calloc(4, sizeof *b->changes);
    fill_change(&b->changes[0], "insert", 1);
    fill_change(&b->changes[1], "update", 2);
    fill_change(&b->changes[2], "delete", 3);
    fill_change(&b->changes[3], "ddl", 4);
    char sum[65];
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_repl_changes_checksum(b->changes, b->nchanges, sum, &err), GS_OK);
    b->checksum = gs_strdup(sum);
}

Test(repl_codec, batch_round_trip)
{
    gs_repl_message in, out;
    memset(&in, 0, sizeof in);
    in.kind = GS_RMSG_BATCH;
    fill_batch(&in.batch);
    roundtrip_repl(&in, &out);
    cr_assert_eq(out.kind, GS_RMSG_BATCH);
    const gs_repl_batch *a = &in.batch, *b = &out.batch;
    cr_assert_str_eq(b->source_node_id, a->source_node_id);
    cr_assert_str_eq(b->batch_id, a->batch_id);
    cr_assert_str_eq(b->group_id, "group");
    cr_assert_eq(b->has_term, 1);
    cr_assert_eq(b->primary_term, INT64_MAX);
    cr_assert_eq(b->from_seq, 1);
    cr_assert_eq(b->to_seq, 4);
    cr_assert_str_eq(b->hlc_min, a->hlc_min);
    cr_assert_str_eq(b->hlc_max, a->hlc_max);
    cr_assert_str_eq(b->checksum, a->checksum);
    cr_assert_eq(b->nchanges, 4);
    for (size_t i = 0; i < 4; i++) {
        const gs_repl_change *x = &a->changes[i], *y = &b->changes[i];
        cr_assert_str_eq(y->table, x->table);
        cr_assert_str_eq(y->operation, x->operation);
        cr_assert_str_eq(y->row_id, x->row_id);
        cr_assert_str_eq(y->hlc, x->hlc);
        cr_assert_str_eq(y->tx_id, x->tx_id);
        cr_assert_str_eq(y->node_id, x->node_id);
        assert_rows_equal(x->new_data, y->new_data);
        assert_rows_equal(x->old_data, y->old_data);
        assert_str_eq_or_null(x->ddl_statement, y->ddl_statement);
        cr_assert_eq(y->seq, 0, "seq is local and never sent");
        if (x->primary_key)
            assert_rows_equal(x->primary_key, y->primary_key);
        else
            cr_assert(y->primary_key && y->primary_key->n == 0, "absent key map decodes as {}");
    }
    /* the null row (delete's newData) and the empty row (update's oldData) stay apart */
    cr_assert_null(b->changes[2].new_data);
    cr_assert_not_null(b->changes[1].old_data);
    cr_assert_eq(b->changes[1].old_data->n, 0);
    /* the value types survive exactly */
    const gs_rrow *r = b->changes[0].new_data;
    cr_assert_eq(r->vals[gs_rrow_find(r, "zero")].type, GS_RVAL_INT);
    cr_assert_eq(r->vals[gs_rrow_find(r, "min")].i, INT64_MIN);
    cr_assert(isnan(r->vals[gs_rrow_find(r, "nan")].d));
    cr_assert(isinf(r->vals[gs_rrow_find(r, "ninf")].d));
    cr_assert(signbit(r->vals[gs_rrow_find(r, "negzero")].d), "-0.0 keeps its sign");
    cr_assert_eq(r->vals[gs_rrow_find(r, "empty_text")].type, GS_RVAL_TEXT);
    cr_assert_eq(r->vals[gs_rrow_find(r, "nul_text")].len, 3, "text keeps bytes after U+0000");
    cr_assert_eq(r->vals[gs_rrow_find(r, "empty_blob")].type, GS_RVAL_BLOB);
    cr_assert_eq(r->vals[gs_rrow_find(r, "true")].type, GS_RVAL_BOOL);
    cr_assert_eq(r->vals[gs_rrow_find(r, "true")].i, 1);
    cr_assert_eq(r->vals[gs_rrow_find(r, "false")].type, GS_RVAL_BOOL);
    cr_assert_eq(r->vals[gs_rrow_find(r, "false")].i, 0);
    /* the receiver's checksum matches the sender's */
    char sum[65];
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_repl_changes_checksum(b->changes, b->nchanges, sum, &err), GS_OK);
    cr_assert_str_eq(sum, b->checksum);
    gs_repl_message_free(&out);
    gs_repl_message_free(&in);
}

Test(repl_codec, ack_round_trip)
{
    gs_repl_message in, out;
    memset(&in, 0, sizeof in);
    in.kind = GS_RMSG_ACK;
    in.ack.batch_id = gs_strdup(""); /* the applied-position report on connect */
    in.ack.acked_seq = INT64_MIN;
    in.ack.node_id = gs_strdup("node-c");
    roundtrip_repl(&in, &out);
    cr_assert_eq(out.kind, GS_RMSG_ACK);
    cr_assert_str_eq(out.ack.batch_id, "");
    cr_assert_eq(out.ack.acked_seq, INT64_MIN);
    cr_assert_str_eq(out.ack.node_id, "node-c");
    cr_assert_null(out.ack.group_id);
    cr_assert_eq(out.ack.has_term, 0);
    gs_repl_message_free(&out);
    gs_repl_message_free(&in);
}

/* Our bytes, read through the spec's own proto (sirannon.replication.v1 as generated from
 * proto/replication.proto): the codec's wire twin must be the same protocol. */
Test(repl_codec, bytes_match_the_spec_proto)
{
    gs_repl_message in;
    memset(&in, 0, sizeof in);
    in.kind = GS_RMSG_BATCH;
    fill_batch(&in.batch);
    uint8_t *bytes;
    size_t len;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_repl_message_encode(&in, &bytes, &len, &err), GS_OK);
    Sirannon__Replication__V1__ReplicationMessage *m =
        sirannon__replication__v1__replication_message__unpack(NULL, len, bytes);
    cr_assert_not_null(m);
    cr_assert_eq(m->payload_case, SIRANNON__REPLICATION__V1__REPLICATION_MESSAGE__PAYLOAD_BATCH);
    Sirannon__Replication__V1__BatchPayload *b = m->batch;
    cr_assert_str_eq(b->source_node_id, "node-a");
    cr_assert_str_eq(b->group_id, "group");
    cr_assert_eq(b->primary_term, INT64_MAX);
    cr_assert_str_eq(b->hlc_range->max, "018bcfe56801-0000-node-a");
    cr_assert_eq(b->n_changes, 4);
    Sirannon__Replication__V1__ReplicationChange *c = b->changes[0];
    cr_assert_str_eq(c->operation, "insert");
    cr_assert_null(c->old_data);
    cr_assert_not_null(b->changes[1]->old_data, "an empty row is a present RowData");
    cr_assert_eq(b->changes[1]->old_data->n_fields, 0);
    cr_assert_null(b->changes[3]->primary_key);
    cr_assert_str_eq(b->changes[3]->ddl_statement, "ALTER TABLE orders ADD COLUMN note TEXT");
    int seen = 0;
    for (size_t i = 0; i < c->new_data->n_fields; i++) {
        Sirannon__Replication__V1__RowData__FieldsEntry *f = c->new_data->fields[i];
        if (strcmp(f->key, "null") == 0) {
            cr_assert_eq(f->value->kind_case,
                         SIRANNON__REPLICATION__V1__COLUMN_VALUE__KIND_NULL_VALUE);
            cr_assert_eq(f->value->null_value, 1);
            seen++;
        } else if (strcmp(f->key, "text") == 0) {
            cr_assert_eq(f->value->kind_case,
                         SIRANNON__REPLICATION__V1__COLUMN_VALUE__KIND_STRING_VALUE);
            cr_assert_str_eq(f->value->string_value, "h\xc3\xa9llo");
            seen++;
        } else if (strcmp(f->key, "max") == 0) {
            cr_assert_eq(f->value->kind_case,
                         SIRANNON__REPLICATION__V1__COLUMN_VALUE__KIND_INT_VALUE);
            cr_assert_eq(f->value->int_value, INT64_MAX);
            seen++;
        } else if (strcmp(f->key, "true") == 0) {
            cr_assert_eq(f->value->kind_case,
                         SIRANNON__REPLICATION__V1__COLUMN_VALUE__KIND_BOOL_VALUE);
            cr_assert_eq(f->value->bool_value, 1);
            seen++;
        } else if (strcmp(f->key, "blob") == 0) {
            cr_assert_eq(f->value->kind_case,
                         SIRANNON__REPLICATION__V1__COLUMN_VALUE__KIND_BLOB_VALUE);
            cr_assert_eq(f->value->blob_value.len, 3);
            seen++;
        }
    }
    cr_assert_eq(seen, 5);
    sirannon__replication__v1__replication_message__free_unpacked(m, NULL);

    /* and the other way: bytes packed with the spec's proto decode through the codec */
    Sirannon__Replication__V1__Hello hello = SIRANNON__REPLICATION__V1__HELLO__INIT;
    hello.node_id = "js-node";
    hello.role = "primary";
    hello.primary_term = 3;
    Sirannon__Replication__V1__ReplicationMessage rm =
        SIRANNON__REPLICATION__V1__REPLICATION_MESSAGE__INIT;
    rm.payload_case = SIRANNON__REPLICATION__V1__REPLICATION_MESSAGE__PAYLOAD_HELLO;
    rm.hello = &hello;
    uint8_t spec_bytes[256];
    size_t n = sirannon__replication__v1__replication_message__pack(&rm, spec_bytes);
    gs_repl_message out;
    cr_assert_eq(gs_repl_message_decode(spec_bytes, n, &out, &err), GS_OK, "%s", err.message);
    cr_assert_str_eq(out.hello.node_id, "js-node");
    cr_assert_str_eq(out.hello.role, "primary");
    cr_assert_eq(out.hello.has_term, 1);
    cr_assert_eq(out.hello.primary_term, 3);
    cr_assert_null(out.hello.group_id);
    gs_repl_message_free(&out);
    gs_free(bytes);
    gs_repl_message_free(&in);
}

/* ---- SyncMessage ---- */

static void roundtrip_sync(const gs_sync_message *in, gs_sync_message *out)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_sync_message_encode(in, &bytes, &len, &err), GS_OK, "%s", err.message);
    cr_assert_eq(gs_sync_message_decode(bytes, len, out, &err), GS_OK, "%s", err.message);
    gs_free(bytes);
}

Test(repl_codec, sync_hello_and_request)
{
    gs_sync_message in, out;
    memset(&in, 0, sizeof in);
    in.kind = GS_SMSG_HELLO;
    in.hello.node_id = gs_strdup("joiner");
    in.hello.role = gs_strdup("replica");
    roundtrip_sync(&in, &out);
    cr_assert_eq(out.kind, GS_SMSG_HELLO);
    cr_assert_str_eq(out.hello.node_id, "joiner");
    gs_sync_message_free(&out);
    gs_sync_message_free(&in);

    memset(&in, 0, sizeof in);
    in.kind = GS_SMSG_REQUEST;
    in.request.request_id = gs_strdup("req-1");
    in.request.joiner_node_id = gs_strdup("joiner");
    in.request.ncompleted = 2;
    in.request.completed_tables = gs_calloc(2, sizeof(char *));
    in.request.completed_tables[0] = gs_strdup("a");
    in.request.completed_tables[1] = gs_strdup("");
    in.request.supports_stream_verification = 1;
    in.request.group_id = gs_strdup("g");
    in.request.has_term = 1;
    in.request.primary_term = 2;
    roundtrip_sync(&in, &out);
    cr_assert_eq(out.kind, GS_SMSG_REQUEST);
    cr_assert_str_eq(out.request.request_id, "req-1");
    cr_assert_str_eq(out.request.joiner_node_id, "joiner");
    cr_assert_eq(out.request.ncompleted, 2);
    cr_assert_str_eq(out.request.completed_tables[0], "a");
    cr_assert_str_eq(out.request.completed_tables[1], "");
    cr_assert_eq(out.request.supports_stream_verification, 1);
    cr_assert_str_eq(out.request.group_id, "g");
    cr_assert_eq(out.request.primary_term, 2);
    gs_sync_message_free(&out);
    gs_sync_message_free(&in);
}

Test(repl_codec, sync_batch_rows_and_schema)
{
    gs_sync_message in, out;
    memset(&in, 0, sizeof in);
    in.kind = GS_SMSG_BATCH;
    gs_sync_batch *b = &in.batch;
    b->request_id = gs_strdup("req-1");
    b->table = gs_strdup("orders");
    b->batch_index = 2147483647;
    b->nrows = 3;
    b->rows = gs_calloc(3, sizeof *b->rows);
    gs_rrow *r = every_value_row();
    b->rows[0] = *r;
    gs_free(r);
    /* rows[1] stays an empty row {} */
    put(&b->rows[2], "id", (gs_rval){.type = GS_RVAL_INT, .i = 2});
    b->nschema = 1;
    b->schema = gs_calloc(1, sizeof(char *));
    b->schema[0] = gs_strdup("CREATE TABLE orders (id INTEGER PRIMARY KEY)");
    b->is_last_batch_for_table = 1;
    b->total_tables = 5;
    char sum[65];
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_repl_rows_checksum(b->rows, b->nrows, sum, &err), GS_OK);
    b->checksum = gs_strdup(sum);
    roundtrip_sync(&in, &out);
    cr_assert_eq(out.kind, GS_SMSG_BATCH);
    const gs_sync_batch *o = &out.batch;
    cr_assert_str_eq(o->request_id, "req-1");
    cr_assert_str_eq(o->table, "orders");
    cr_assert_eq(o->batch_index, 2147483647);
    cr_assert_eq(o->nrows, 3);
    for (size_t i = 0; i < 3; i++)
        assert_rows_equal(&b->rows[i], &o->rows[i]);
    cr_assert_eq(o->nschema, 1);
    cr_assert_str_eq(o->schema[0], b->schema[0]);
    cr_assert_eq(o->is_last_batch_for_table, 1);
    cr_assert_eq(o->total_tables, 5);
    cr_assert_null(o->group_id);
    cr_assert_eq(o->has_term, 0);
    cr_assert_eq(gs_repl_rows_checksum(o->rows, o->nrows, sum, &err), GS_OK);
    cr_assert_str_eq(sum, o->checksum);
    gs_sync_message_free(&out);
    gs_sync_message_free(&in);
}

Test(repl_codec, sync_complete_and_ack)
{
    gs_sync_message in, out;
    memset(&in, 0, sizeof in);
    in.kind = GS_SMSG_COMPLETE;
    in.complete.request_id = gs_strdup("req-1");
    in.complete.snapshot_seq = 123456789012LL;
    in.complete.nmanifests = 2;
    in.complete.manifests = gs_calloc(2, sizeof *in.complete.manifests);
    in.complete.manifests[0].table = gs_strdup("a");
    in.complete.manifests[0].row_count = 10;
    in.complete.manifests[0].batch_digest = gs_strdup("abc");
    in.complete.manifests[1].table = gs_strdup("b");
    in.complete.manifests[1].pk_hash = gs_strdup("def");
    in.complete.group_id = gs_strdup("g");
    in.complete.has_term = 1;
    in.complete.primary_term = 4;
    roundtrip_sync(&in, &out);
    cr_assert_eq(out.kind, GS_SMSG_COMPLETE);
    cr_assert_eq(out.complete.snapshot_seq, 123456789012LL);
    cr_assert_eq(out.complete.nmanifests, 2);
    cr_assert_str_eq(out.complete.manifests[0].table, "a");
    cr_assert_eq(out.complete.manifests[0].row_count, 10);
    cr_assert_null(out.complete.manifests[0].pk_hash);
    cr_assert_str_eq(out.complete.manifests[0].batch_digest, "abc");
    cr_assert_str_eq(out.complete.manifests[1].pk_hash, "def");
    cr_assert_null(out.complete.manifests[1].batch_digest);
    cr_assert_eq(out.complete.primary_term, 4);
    gs_sync_message_free(&out);
    gs_sync_message_free(&in);

    memset(&in, 0, sizeof in);
    in.kind = GS_SMSG_ACK;
    in.ack.request_id = gs_strdup("req-1");
    in.ack.joiner_node_id = gs_strdup("joiner");
    in.ack.table = gs_strdup("a");
    in.ack.batch_index = 3;
    in.ack.success = 0;
    in.ack.error = gs_strdup("BATCH_VALIDATION_ERROR: checksum mismatch");
    roundtrip_sync(&in, &out);
    cr_assert_eq(out.kind, GS_SMSG_ACK);
    cr_assert_eq(out.ack.batch_index, 3);
    cr_assert_eq(out.ack.success, 0);
    cr_assert_str_eq(out.ack.error, "BATCH_VALIDATION_ERROR: checksum mismatch");
    gs_sync_message_free(&out);
    gs_free(in.ack.error);
    in.ack.error = NULL;
    in.ack.success = 1;
    roundtrip_sync(&in, &out);
    cr_assert_eq(out.ack.success, 1);
    cr_assert_null(out.ack.error, "absent error decodes as absent");
    gs_sync_message_free(&out);
    gs_sync_message_free(&in);
}

/* ---- Forward ---- */

Test(repl_codec, forward_request_params)
{
    gs_fwd_request in, out;
    memset(&in, 0, sizeof in);
    in.request_id = gs_strdup("fwd-1");
    in.group_id = gs_strdup("g");
    in.has_term = 1;
    in.primary_term = 11;
    in.nstatements = 4;
    in.statements = gs_calloc(4, sizeof *in.statements);
    /* 0: named only */
    in.statements[0].sql = gs_strdup("INSERT INTO t VALUES (:a, :b)");
    in.statements[0].named = gs_rrow_new();
    put(in.statements[0].named, "a", (gs_rval){.type = GS_RVAL_INT, .i = INT64_MIN});
    put(in.statements[0].named, "b", text("x", 1));
    /* 1: positional only, every value type */
    gs_rrow *all = every_value_row();
    in.statements[1].sql = gs_strdup("INSERT INTO t VALUES (?)");
    in.statements[1].npositional = all->n;
    in.statements[1].positional = gs_calloc(all->n, sizeof(gs_rval));
    for (size_t i = 0; i < all->n; i++) {
        in.statements[1].positional[i] = all->vals[i];
        memset(&all->vals[i], 0, sizeof all->vals[i]);
    }
    gs_rrow_free(all);
    /* 2: both: named wins */
    in.statements[2].sql = gs_strdup("UPDATE t SET a = :a");
    in.statements[2].named = gs_rrow_new();
    put(in.statements[2].named, "a", (gs_rval){.type = GS_RVAL_BOOL, .i = 1});
    in.statements[2].npositional = 1;
    in.statements[2].positional = gs_calloc(1, sizeof(gs_rval));
    in.statements[2].positional[0] = (gs_rval){.type = GS_RVAL_INT, .i = 5};
    /* 3: no parameters */
    in.statements[3].sql = gs_strdup("DELETE FROM t");

    uint8_t *bytes;
    size_t len;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_fwd_request_encode(&in, &bytes, &len, &err), GS_OK);
    cr_assert_eq(gs_fwd_request_decode(bytes, len, &out, &err), GS_OK, "%s", err.message);
    gs_free(bytes);
    cr_assert_str_eq(out.request_id, "fwd-1");
    cr_assert_str_eq(out.group_id, "g");
    cr_assert_eq(out.primary_term, 11);
    cr_assert_eq(out.nstatements, 4);
    cr_assert_str_eq(out.statements[0].sql, in.statements[0].sql);
    assert_rows_equal(in.statements[0].named, out.statements[0].named);
    cr_assert_eq(out.statements[0].npositional, 0);
    cr_assert_null(out.statements[1].named);
    cr_assert_eq(out.statements[1].npositional, in.statements[1].npositional);
    for (size_t i = 0; i < in.statements[1].npositional; i++)
        cr_assert(gs_rval_equal(&in.statements[1].positional[i], &out.statements[1].positional[i]),
                  "positional %zu", i);
    assert_rows_equal(in.statements[2].named, out.statements[2].named);
    cr_assert_eq(out.statements[2].npositional, 0, "named wins: positional dropped");
    cr_assert_null(out.statements[3].named);
    cr_assert_eq(out.statements[3].npositional, 0);
    cr_assert_str_eq(out.statements[3].sql, "DELETE FROM t");
    gs_fwd_request_free(&out);
    gs_fwd_request_free(&in);
}

Test(repl_codec, forward_response)
{
    gs_fwd_response in, out;
    memset(&in, 0, sizeof in);
    in.request_id = gs_strdup("fwd-1");
    in.nresults = 2;
    in.results = gs_calloc(2, sizeof *in.results);
    in.results[0] = (gs_fwd_result){.changes = 1, .last_insert_row_id = INT64_MAX};
    in.results[1] = (gs_fwd_result){.changes = 0, .last_insert_row_id = -1};
    uint8_t *bytes;
    size_t len;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_fwd_response_encode(&in, &bytes, &len, &err), GS_OK);
    cr_assert_eq(gs_fwd_response_decode(bytes, len, &out, &err), GS_OK);
    gs_free(bytes);
    cr_assert_str_eq(out.request_id, "fwd-1");
    cr_assert_eq(out.nresults, 2);
    cr_assert_eq(out.results[0].changes, 1);
    cr_assert_eq(out.results[0].last_insert_row_id, INT64_MAX);
    cr_assert_eq(out.results[1].last_insert_row_id, -1);
    cr_assert_null(out.error);
    cr_assert_null(out.group_id);
    cr_assert_eq(out.has_term, 0);
    gs_fwd_response_free(&out);

    gs_free(in.results);
    in.results = NULL;
    in.nresults = 0;
    in.error = gs_strdup("STALE_PRIMARY: term 3 is not current");
    in.group_id = gs_strdup("g");
    in.has_term = 1;
    in.primary_term = 3;
    cr_assert_eq(gs_fwd_response_encode(&in, &bytes, &len, &err), GS_OK);
    cr_assert_eq(gs_fwd_response_decode(bytes, len, &out, &err), GS_OK);
    gs_free(bytes);
    cr_assert_eq(out.nresults, 0);
    cr_assert_str_eq(out.error, "STALE_PRIMARY: term 3 is not current");
    cr_assert_str_eq(out.group_id, "g");
    cr_assert_eq(out.primary_term, 3);
    gs_fwd_response_free(&out);
    gs_fwd_response_free(&in);
}

/* ---- map keys sent twice ---- */

static void duplicate_keys(size_t ncols)
{
    gs_repl_message in, out;
    memset(&in, 0, sizeof in);
    in.kind = GS_RMSG_BATCH;
    in.batch.nchanges = 1;
    in.batch.changes = gs_calloc(1, sizeof *in.batch.changes);
    gs_repl_change *c = &in.batch.changes[0];
    c->new_data = gs_rrow_new();
    char name[16];
    for (size_t i = 0; i < ncols; i++) {
        snprintf(name, sizeof name, "c%zu", i);
        put(c->new_data, name, (gs_rval){.type = GS_RVAL_INT, .i = (int64_t)i});
    }
    put(c->new_data, "c1", (gs_rval){.type = GS_RVAL_INT, .i = 1000}); /* c1 again */
    roundtrip_repl(&in, &out);
    const gs_rrow *r = out.batch.changes[0].new_data;
    cr_assert_eq(r->n, ncols, "the key sent twice appears once");
    int i = gs_rrow_find(r, "c1");
    cr_assert_geq(i, 0);
    cr_assert_eq(r->vals[i].i, 1000, "the last value wins");
    gs_repl_message_free(&out);
    gs_repl_message_free(&in);
}

Test(repl_codec, map_key_sent_twice_keeps_last)
{
    duplicate_keys(3);  /* pairwise check */
    duplicate_keys(40); /* sorted check */
}

/* ---- rejected input ---- */

typedef gs_status (*decode_fn)(const uint8_t *p, size_t len, gs_error *err);

static gs_status dec_repl(const uint8_t *p, size_t len, gs_error *err)
{
    gs_repl_message m;
    gs_status st = gs_repl_message_decode(p, len, &m, err);
    if (st == GS_OK)
        gs_repl_message_free(&m);
    else
        cr_assert_eq(m.kind, GS_RMSG_NONE);
    return st;
}

static gs_status dec_sync(const uint8_t *p, size_t len, gs_error *err)
{
    gs_sync_message m;
    gs_status st = gs_sync_message_decode(p, len, &m, err);
    if (st == GS_OK)
        gs_sync_message_free(&m);
    else
        cr_assert_eq(m.kind, GS_SMSG_NONE);
    return st;
}

static gs_status dec_freq(const uint8_t *p, size_t len, gs_error *err)
{
    gs_fwd_request m;
    gs_status st = gs_fwd_request_decode(p, len, &m, err);
    if (st == GS_OK)
        gs_fwd_request_free(&m);
    return st;
}

static gs_status dec_fresp(const uint8_t *p, size_t len, gs_error *err)
{
    gs_fwd_response m;
    gs_status st = gs_fwd_response_decode(p, len, &m, err);
    if (st == GS_OK)
        gs_fwd_response_free(&m);
    return st;
}

static void expect_rejected(decode_fn fn, const uint8_t *p, size_t len, const char *needle)
{
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(fn(p, len, &err), GS_ERROR, "accepted %zu bytes", len);
    cr_assert_str_eq(err.code, "REPLICATION_ERROR");
    cr_assert_not_null(strstr(err.message, needle), "message \"%s\" lacks \"%s\"", err.message,
                       needle);
}

Test(repl_codec, garbage_rejected)
{
    /* a truncated varint, a length past the end, a bad wire type, an invalid field number */
    static const uint8_t trunc_varint[] = {0x18, 0xff};
    static const uint8_t long_len[] = {0x0a, 0x10, 'a'};
    static const uint8_t bad_wire[] = {0x0f, 0x00};
    static const uint8_t field_zero[] = {0x00, 0x01};
    decode_fn all[] = {dec_repl, dec_sync, dec_freq, dec_fresp};
    for (size_t k = 0; k < 4; k++) {
        expect_rejected(all[k], trunc_varint, sizeof trunc_varint, "cannot decode");
        expect_rejected(all[k], long_len, sizeof long_len, "cannot decode");
        expect_rejected(all[k], bad_wire, sizeof bad_wire, "cannot decode");
        expect_rejected(all[k], field_zero, sizeof field_zero, "cannot decode");
        expect_rejected(all[k], NULL, 5, "cannot decode");
    }
    /* an empty message, or only unknown fields: no payload set */
    static const uint8_t unknown_only[] = {0x50, 0x01}; /* field 10, varint 1 */
    expect_rejected(dec_repl, NULL, 0, "no payload");
    expect_rejected(dec_repl, unknown_only, sizeof unknown_only, "no payload");
    expect_rejected(dec_sync, (const uint8_t *)"", 0, "no payload");
    expect_rejected(dec_sync, unknown_only, sizeof unknown_only, "no payload");
    /* a ForwardRequest / Response has no oneof: an empty one is valid */
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(dec_freq(NULL, 0, &err), GS_OK);
    cr_assert_eq(dec_fresp(NULL, 0, &err), GS_OK);
}

Test(repl_codec, truncations_and_random_bytes_never_crash)
{
    gs_repl_message in;
    memset(&in, 0, sizeof in);
    in.kind = GS_RMSG_BATCH;
    fill_batch(&in.batch);
    uint8_t *bytes;
    size_t len;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_repl_message_encode(&in, &bytes, &len, &err), GS_OK);
    int rejected = 0;
    for (size_t cut = 0; cut < len; cut++) {
        if (dec_repl(bytes, cut, &err) != GS_OK)
            rejected++;
        /* the same bytes are no valid message of another type either way, but must not crash */
        dec_sync(bytes, cut, &err);
        dec_freq(bytes, cut, &err);
        dec_fresp(bytes, cut, &err);
    }
    cr_assert_geq(rejected, (int)(len * 9 / 10), "most truncations must be rejected");
    /* flip every byte in turn */
    for (size_t i = 0; i < len; i++) {
        uint8_t *copy = gs_malloc(len);
        memcpy(copy, bytes, len);
        copy[i] ^= 0xa5;
        dec_repl(copy, len, &err);
        dec_sync(copy, len, &err);
        gs_free(copy);
    }
    /* random bytes, fixed seed */
    srand(424242);
    uint8_t buf[256];
    for (int round = 0; round < 3000; round++) {
        size_t n = (size_t)(rand() % (int)sizeof buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)rand();
        dec_repl(buf, n, &err);
        dec_sync(buf, n, &err);
        dec_freq(buf, n, &err);
        dec_fresp(buf, n, &err);
    }
    gs_free(bytes);
    gs_repl_message_free(&in);
}

Test(repl_codec, encode_without_kind_is_an_error)
{
    gs_repl_message m;
    memset(&m, 0, sizeof m);
    uint8_t *bytes = (uint8_t *)1;
    size_t len = 7;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_repl_message_encode(&m, &bytes, &len, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "REPLICATION_ERROR");
    cr_assert_null(bytes);
    cr_assert_eq(len, 0);
    gs_sync_message s;
    memset(&s, 0, sizeof s);
    cr_assert_eq(gs_sync_message_encode(&s, &bytes, &len, &err), GS_ERROR);
}

Test(repl_codec, out_of_memory_everywhere)
{
    gs_repl_message in;
    memset(&in, 0, sizeof in);
    in.kind = GS_RMSG_BATCH;
    fill_batch(&in.batch);
    uint8_t *good;
    size_t good_len;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_repl_message_encode(&in, &good, &good_len, &err), GS_OK);
    int enc_failed = 0, dec_failed = 0;
    for (long k = 0; k < 400; k++) {
        uint8_t *bytes = NULL;
        size_t len = 0;
        gs_alloc_fail_after(k, 1);
        gs_status st = gs_repl_message_encode(&in, &bytes, &len, &err);
        gs_alloc_fail_after(-1, 0);
        if (st == GS_OK) {
            cr_assert_eq(len, good_len);
            cr_assert(memcmp(bytes, good, len) == 0);
            gs_free(bytes);
        } else {
            cr_assert_str_eq(err.code, "REPLICATION_ERROR");
            cr_assert_null(bytes);
            enc_failed++;
        }
        gs_repl_message out;
        gs_alloc_fail_after(k, 1);
        st = gs_repl_message_decode(good, good_len, &out, &err);
        gs_alloc_fail_after(-1, 0);
        if (st == GS_OK) {
            cr_assert_eq(out.batch.nchanges, 4);
            gs_repl_message_free(&out);
        } else {
            cr_assert_str_eq(err.code, "REPLICATION_ERROR");
            cr_assert_eq(out.kind, GS_RMSG_NONE);
            dec_failed++;
        }
    }
    cr_assert_gt(enc_failed, 0);
    cr_assert_gt(dec_failed, 100, "decoding makes many allocations; each failure is an error");
    gs_free(good);
    gs_repl_message_free(&in);
}
