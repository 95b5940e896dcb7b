/* The normative checksum: every vector of tests/vectors/checksum.json (canonical text and
 * digest byte for byte), then the cases the vectors leave silent, whose expected text is what
 * the reference canonicaliser (JavaScript) prints for the same values: floats, integral
 * doubles, int64 extremes, blob base64 padding, string escapes, key order, ddlStatement, the
 * batchDigest chain. */
#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/sha256.h"
#include "repl/checksum.h"
#include "repl/msg.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifndef GS_VECTORS_DIR
#error "GS_VECTORS_DIR must name tests/vectors (tests/CMakeLists.txt sets it)"
#endif

static json_t *vectors(void)
{
    json_error_t je;
    json_t *v = json_load_file(GS_VECTORS_DIR "/checksum.json", 0, &je);
    cr_assert_not_null(v, "cannot read %s/checksum.json: %s", GS_VECTORS_DIR, je.text);
    return v;
}

static char *dup_or_null(const json_t *s)
{
    return json_is_string(s) ? gs_strdup(json_string_value(s)) : NULL;
}

static gs_rrow *row_of(const json_t *obj)
{
    gs_rrow *r = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_rrow_from_json(obj, &r, &err), GS_OK, "%s", err.message);
    return r;
}

/* A vector's change (JSON, camelCase keys) as a gs_repl_change. */
static void change_of(const json_t *j, gs_repl_change *c)
{
    memset(c, 0, sizeof *c);
    c->table = dup_or_null(json_object_get(j, "table"));
    c->operation = dup_or_null(json_object_get(j, "operation"));
    c->row_id = dup_or_null(json_object_get(j, "rowId"));
    c->primary_key = row_of(json_object_get(j, "primaryKey"));
    c->hlc = dup_or_null(json_object_get(j, "hlc"));
    c->tx_id = dup_or_null(json_object_get(j, "txId"));
    c->node_id = dup_or_null(json_object_get(j, "nodeId"));
    c->new_data = row_of(json_object_get(j, "newData"));
    c->old_data = row_of(json_object_get(j, "oldData"));
    c->ddl_statement = dup_or_null(json_object_get(j, "ddlStatement"));
}

Test(repl_checksum, vectors_all_sections_known)
{
    /* a vector section added to the file later must not be skipped silently */
    json_t *v = vectors();
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val)
    {
        if (!json_is_array(val))
            continue;
        cr_assert(strcmp(key, "batch_checksum") == 0 || strcmp(key, "sync_batch_checksum") == 0 ||
                      strcmp(key, "notes") == 0,
                  "checksum.json has a vector section \"%s\" this test does not run", key);
    }
    json_decref(v);
}

Test(repl_checksum, vectors_batch)
{
    json_t *v = vectors();
    json_t *list = json_object_get(v, "batch_checksum");
    cr_assert_geq(json_array_size(list), 2);
    size_t i;
    json_t *vec;
    json_array_foreach(list, i, vec)
    {
        json_t *changes = json_object_get(vec, "changes");
        size_t n = json_array_size(changes);
        gs_repl_change *c = gs_calloc(n ? n : 1, sizeof *c);
        for (size_t k = 0; k < n; k++)
            change_of(json_array_get(changes, k), &c[k]);
        const char *canonical = json_string_value(json_object_get(vec, "canonical"));
        const char *expected = json_string_value(json_object_get(vec, "expected"));

        gs_buf b;
        gs_buf_init(&b);
        gs_repl_canonical_changes(&b, c, n);
        cr_assert_str_eq(b.data, canonical, "vector %zu canonical", i);
        gs_buf_free(&b);

        char out[65];
        gs_error err;
        gs_error_init(&err);
        cr_assert_eq(gs_repl_changes_checksum(c, n, out, &err), GS_OK);
        cr_assert_str_eq(out, expected, "vector %zu checksum", i);
        char direct[65];
        gs_sha256_hex(canonical, strlen(canonical), direct);
        cr_assert_str_eq(direct, expected, "vector %zu: sha256 of its canonical text", i);

        for (size_t k = 0; k < n; k++)
            gs_repl_change_free(&c[k]);
        gs_free(c);
    }
    json_decref(v);
}

Test(repl_checksum, vectors_sync_batch)
{
    json_t *v = vectors();
    json_t *list = json_object_get(v, "sync_batch_checksum");
    cr_assert_geq(json_array_size(list), 1);
    size_t i;
    json_t *vec;
    json_array_foreach(list, i, vec)
    {
        json_t *rows = json_object_get(vec, "rows");
        size_t n = json_array_size(rows);
        gs_rrow *arr = gs_calloc(n ? n : 1, sizeof *arr);
        for (size_t k = 0; k < n; k++) {
            gs_rrow *r = row_of(json_array_get(rows, k));
            arr[k] = *r; /* move the contents into the array, drop the shell */
            gs_free(r);
        }
        gs_buf b;
        gs_buf_init(&b);
        gs_repl_canonical_rows(&b, arr, n);
        cr_assert_str_eq(b.data, json_string_value(json_object_get(vec, "canonical")),
                         "vector %zu canonical", i);
        gs_buf_free(&b);
        char out[65];
        gs_error err;
        gs_error_init(&err);
        cr_assert_eq(gs_repl_rows_checksum(arr, n, out, &err), GS_OK);
        cr_assert_str_eq(out, json_string_value(json_object_get(vec, "expected")), "vector %zu", i);
        /* release through the sync batch owner, which holds rows the same way */
        gs_sync_batch sb;
        memset(&sb, 0, sizeof sb);
        sb.rows = arr;
        sb.nrows = n;
        gs_sync_batch_free(&sb);
    }
    json_decref(v);
}

/* ---- silent cases ---- */

static void expect_value(const gs_rval *v, const char *want)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_repl_canonical_value(&b, v);
    cr_assert_not_null(b.data);
    cr_assert_str_eq(b.data, want);
    gs_buf_free(&b);
}

static void expect_double(double d, const char *want)
{
    gs_rval v = {.type = GS_RVAL_DOUBLE, .d = d};
    expect_value(&v, want);
}

static void expect_int(int64_t i, const char *want)
{
    gs_rval v = {.type = GS_RVAL_INT, .i = i};
    expect_value(&v, want);
}

Test(repl_checksum, non_integral_doubles_print_as_javascript)
{
    /* expected texts are JSON.stringify(x) in Node for the same doubles */
    expect_double(42.5, "42.5");
    expect_double(0.1, "0.1");
    expect_double(0.3, "0.3");
    expect_double(0.1 + 0.2, "0.30000000000000004");
    expect_double(2.0 / 3.0, "0.6666666666666666");
    expect_double(-2.5, "-2.5");
    expect_double(4.35, "4.35");
    expect_double(123456789.125, "123456789.125");
    expect_double(0.000001, "0.000001");
    expect_double(1.25e-6, "0.00000125");
    expect_double(1e-7, "1e-7");
    expect_double(-1e-7, "-1e-7");
    expect_double(1.5e-7, "1.5e-7");
    expect_double(5e-7, "5e-7");
    expect_double(123e-20, "1.23e-18");
    expect_double(5e-324, "5e-324"); /* the smallest subnormal */
    expect_double(1.5e-323, "1.5e-323");
}

Test(repl_checksum, integral_doubles_are_sint)
{
    expect_double(3.0, "{\"__sint\":\"3\"}");
    expect_double(-0.0, "{\"__sint\":\"0\"}");
    expect_double(0.0, "{\"__sint\":\"0\"}");
    expect_double(100.0, "{\"__sint\":\"100\"}");
    expect_double(-7.0, "{\"__sint\":\"-7\"}");
    expect_double(9007199254740992.0, "{\"__sint\":\"9007199254740992\"}");
    expect_double(9007199254740994.0, "{\"__sint\":\"9007199254740994\"}");
    expect_double(1e20, "{\"__sint\":\"100000000000000000000\"}");
    expect_double(123456789012345680000.0, "{\"__sint\":\"123456789012345680000\"}");
    expect_double(1e21, "{\"__sint\":\"1e+21\"}");
    expect_double(1.2e21, "{\"__sint\":\"1.2e+21\"}");
    expect_double(1e23, "{\"__sint\":\"1e+23\"}");
    expect_double(1e300, "{\"__sint\":\"1e+300\"}");
    expect_double(-1e300, "{\"__sint\":\"-1e+300\"}");
    expect_double(1.7976931348623157e308, "{\"__sint\":\"1.7976931348623157e+308\"}");
}

Test(repl_checksum, non_finite_doubles_are_null)
{
    expect_double(NAN, "null");
    expect_double(INFINITY, "null");
    expect_double(-INFINITY, "null");
}

Test(repl_checksum, integers_exact)
{
    expect_int(0, "{\"__sint\":\"0\"}");
    expect_int(1, "{\"__sint\":\"1\"}");
    expect_int(-1, "{\"__sint\":\"-1\"}");
    expect_int(9007199254740993LL, "{\"__sint\":\"9007199254740993\"}");
    expect_int(INT64_MAX, "{\"__sint\":\"9223372036854775807\"}");
    expect_int(INT64_MIN, "{\"__sint\":\"-9223372036854775808\"}");
}

Test(repl_checksum, null_and_bool)
{
    gs_rval n = {.type = GS_RVAL_NULL};
    gs_rval t = {.type = GS_RVAL_BOOL, .i = 1};
    gs_rval f = {.type = GS_RVAL_BOOL, .i = 0};
    expect_value(&n, "null");
    expect_value(&t, "true");
    expect_value(&f, "false");
}

static void expect_blob(const char *bytes, size_t len, const char *want)
{
    uint8_t *p = gs_malloc(len + 1);
    memcpy(p, bytes, len);
    gs_rval v = {.type = GS_RVAL_BLOB, .p = p, .len = len};
    expect_value(&v, want);
    gs_free(p);
}

Test(repl_checksum, blob_base64_padding)
{
    expect_blob("", 0, "{\"__blob\":\"\"}");
    expect_blob("\x01", 1, "{\"__blob\":\"AQ==\"}");
    expect_blob("\x01\x02", 2, "{\"__blob\":\"AQI=\"}");
    expect_blob("\x01\x02\x03", 3, "{\"__blob\":\"AQID\"}");
    expect_blob("\xff\xfe\xfd\xfc", 4, "{\"__blob\":\"//79/A==\"}");
    expect_blob("hello", 5, "{\"__blob\":\"aGVsbG8=\"}");
    /* an empty blob held as a NULL pointer renders like any empty blob */
    gs_rval v = {.type = GS_RVAL_BLOB, .p = NULL, .len = 0};
    expect_value(&v, "{\"__blob\":\"\"}");
}

Test(repl_checksum, string_escapes_as_json_stringify)
{
    /* JSON.stringify("a\"\\\b\f\n\r\t\u0001\u001f\u007fé\u2028 😀") in Node */
    static const char in[] = "a\"\\\b\f\n\r\t\x01\x1f\x7f\xc3\xa9\xe2\x80\xa8 \xf0\x9f\x98\x80";
    static const char want[] =
        "\"a\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\x7f\xc3\xa9\xe2\x80\xa8 \xf0\x9f\x98\x80\"";
    uint8_t *p = (uint8_t *)gs_strdup(in);
    gs_rval v = {.type = GS_RVAL_TEXT, .p = p, .len = strlen(in)};
    expect_value(&v, want);
    gs_free(p);
    /* an embedded NUL is \u0000 */
    gs_rval z = {.type = GS_RVAL_TEXT, .p = (uint8_t *)"a\0b", .len = 3};
    expect_value(&z, "\"a\\u0000b\"");
}

static void add_int(gs_rrow *r, const char *name, int64_t i)
{
    gs_rval v = {.type = GS_RVAL_INT, .i = i};
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_rrow_add_take(r, name, &v, &err), GS_OK);
}

static void add_text(gs_rrow *r, const char *name, const char *s)
{
    gs_rval v = {.type = GS_RVAL_TEXT, .p = (uint8_t *)s, .len = strlen(s)};
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_rrow_add_copy(r, name, &v, &err), GS_OK);
}

static char *canonical_rows(const gs_rrow *rows, size_t n)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_repl_canonical_rows(&b, rows, n);
    cr_assert(!b.oom);
    return gs_buf_take(&b, NULL);
}

Test(repl_checksum, keys_sorted_by_bytes)
{
    gs_rrow *r = gs_rrow_new();
    add_int(r, "zeta", 1);
    add_int(r, "Zeta", 2); /* upper case sorts first */
    add_int(r, "a b", 3);
    add_int(r, "a", 4);
    add_int(r, "\xc3\xa9t\xc3\xa9", 5); /* "été": non-ASCII after ASCII */
    add_int(r, "_x", 6);
    char *got = canonical_rows(r, 1);
    cr_assert_str_eq(got, "[{\"Zeta\":{\"__sint\":\"2\"},\"_x\":{\"__sint\":\"6\"},"
                          "\"a\":{\"__sint\":\"4\"},\"a b\":{\"__sint\":\"3\"},"
                          "\"zeta\":{\"__sint\":\"1\"},\"\xc3\xa9t\xc3\xa9\":{\"__sint\":\"5\"}}]");
    gs_free(got);

    /* insertion order does not matter */
    gs_rrow *s = gs_rrow_new();
    add_text(s, "b", "x");
    add_int(s, "a", 1);
    gs_rrow *t = gs_rrow_new();
    add_int(t, "a", 1);
    add_text(t, "b", "x");
    char cs[65], ct[65];
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_repl_rows_checksum(s, 1, cs, &err), GS_OK);
    cr_assert_eq(gs_repl_rows_checksum(t, 1, ct, &err), GS_OK);
    cr_assert_str_eq(cs, ct);
    gs_rrow_free(r);
    gs_rrow_free(s);
    gs_rrow_free(t);
}

Test(repl_checksum, many_columns_and_duplicate_names)
{
    /* more columns than the on-stack sort area; the later of two equal names wins */
    gs_rrow *r = gs_rrow_new();
    char name[16];
    for (int i = 39; i >= 0; i--) {
        snprintf(name, sizeof name, "c%02d", i);
        add_int(r, name, i);
    }
    add_int(r, "c05", 500);
    char *got = canonical_rows(r, 1);
    cr_assert_not_null(strstr(got, "[{\"c00\":{\"__sint\":\"0\"},\"c01\":"));
    cr_assert_not_null(strstr(got, "\"c05\":{\"__sint\":\"500\"},\"c06\""));
    cr_assert_null(strstr(got, "\"c05\":{\"__sint\":\"5\"}"));
    cr_assert_not_null(strstr(got, "\"c39\":{\"__sint\":\"39\"}}]"));
    gs_free(got);
    gs_rrow_free(r);
}

static void fill_change(gs_repl_change *c, const char *ddl)
{
    memset(c, 0, sizeof *c);
    c->table = gs_strdup("t");
    c->operation = gs_strdup(ddl ? "ddl" : "delete");
    c->row_id = gs_strdup(ddl ? "" : "7");
    if (!ddl) {
        c->primary_key = gs_rrow_new();
        add_int(c->primary_key, "id", 7);
        c->old_data = gs_rrow_new();
        add_int(c->old_data, "id", 7);
    }
    c->hlc = gs_strdup("018bcfe56800-0001-node-a");
    c->tx_id = gs_strdup("tx");
    c->node_id = gs_strdup("node-a");
    c->ddl_statement = ddl ? gs_strdup(ddl) : NULL;
}

Test(repl_checksum, change_with_and_without_ddl_statement)
{
    gs_repl_change c[2];
    fill_change(&c[0], NULL);
    fill_change(&c[1], "ALTER TABLE t ADD COLUMN x");
    gs_buf b;
    gs_buf_init(&b);
    gs_repl_canonical_changes(&b, c, 2);
    cr_assert_str_eq(
        b.data, "[{\"hlc\":\"018bcfe56800-0001-node-a\",\"newData\":null,\"nodeId\":\"node-a\","
                "\"oldData\":{\"id\":{\"__sint\":\"7\"}},\"operation\":\"delete\","
                "\"primaryKey\":{\"id\":{\"__sint\":\"7\"}},\"rowId\":\"7\",\"table\":\"t\","
                "\"txId\":\"tx\"},"
                "{\"ddlStatement\":\"ALTER TABLE t ADD COLUMN x\","
                "\"hlc\":\"018bcfe56800-0001-node-a\",\"newData\":null,\"nodeId\":\"node-a\","
                "\"oldData\":null,\"operation\":\"ddl\",\"primaryKey\":{},\"rowId\":\"\","
                "\"table\":\"t\",\"txId\":\"tx\"}]");
    char sum[65];
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_repl_changes_checksum(c, 2, sum, &err), GS_OK);
    char direct[65];
    gs_sha256_hex(b.data, b.len, direct);
    cr_assert_str_eq(sum, direct);
    gs_buf_free(&b);
    gs_repl_change_free(&c[0]);
    gs_repl_change_free(&c[1]);
}

Test(repl_checksum, schema_strings)
{
    char *schema[] = {"CREATE TABLE a (id INTEGER PRIMARY KEY)", "CREATE TABLE \"b\" (x)"};
    gs_buf b;
    gs_buf_init(&b);
    gs_repl_canonical_strings(&b, schema, 2);
    cr_assert_str_eq(
        b.data, "[\"CREATE TABLE a (id INTEGER PRIMARY KEY)\",\"CREATE TABLE \\\"b\\\" (x)\"]");
    char sum[65], direct[65];
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_repl_strings_checksum(schema, 2, sum, &err), GS_OK);
    gs_sha256_hex(b.data, b.len, direct);
    cr_assert_str_eq(sum, direct);
    gs_buf_free(&b);
    cr_assert_eq(gs_repl_strings_checksum(NULL, 0, sum, &err), GS_OK);
    /* the vectors' empty-array digest */
    cr_assert_str_eq(sum, "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945");
}

Test(repl_checksum, batch_digest_chain)
{
    /* two batches: sha256("" + c1), then sha256(d1 + c2) */
    const char *c1 = "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945";
    const char *c2 = "d77f7863f0a03146686e46b322d78dbb96bd044835a27b13d2285e7833f89e98";
    char digest[65];
    digest[0] = '\0';
    gs_repl_digest_step(digest, c1);
    char want[65];
    gs_sha256_hex(c1, strlen(c1), want);
    cr_assert_str_eq(digest, want);
    char joined[129];
    snprintf(joined, sizeof joined, "%s%s", want, c2);
    gs_sha256_hex(joined, 128, want);
    gs_repl_digest_step(digest, c2);
    cr_assert_str_eq(digest, want);
    /* fixed values, computed independently (Node: createHash('sha256').update(a).update(b)) */
    cr_assert_str_eq(digest, "cc8b6197d4beb5101f4eec107667de9537f0e764f0b379a6531530994e572dee");
}

Test(repl_checksum, batch_digest_of_empty_table)
{
    /* an empty table streams one batch with no rows: digest = sha256(checksum("[]")) */
    char sum[65];
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_repl_rows_checksum(NULL, 0, sum, &err), GS_OK);
    cr_assert_str_eq(sum, "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945");
    char digest[65] = "";
    gs_repl_digest_step(digest, sum);
    cr_assert_str_eq(digest, "a117288688ad59388f308b82aa30755bcd67d6461625521d70a42c11912dcc05");
}

Test(repl_checksum, out_of_memory_is_an_error)
{
    gs_rrow *r = gs_rrow_new();
    add_text(r, "name", "a value long enough to need the buffer to grow past its first size");
    char sum[65];
    gs_error err;
    gs_error_init(&err);
    gs_alloc_fail_after(0, 1);
    gs_status st = gs_repl_rows_checksum(r, 1, sum, &err);
    gs_alloc_fail_after(-1, 0);
    cr_assert_eq(st, GS_ERROR);
    cr_assert_str_eq(err.code, "REPLICATION_ERROR");
    gs_rrow_free(r);
}
