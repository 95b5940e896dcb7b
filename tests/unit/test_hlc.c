/* The hybrid logical clock: every vector of tests/vectors/hlc.json (the spec's), then now(),
 * receive(), overflow, drift, seeding and persistence. */
#include "base/error.h"
#include "repl/hlc.h"
#include "sqlite/connection.h"
#include "test_support.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef GS_VECTORS_DIR
#error "GS_VECTORS_DIR must name tests/vectors (tests/CMakeLists.txt sets it)"
#endif

static json_t *vectors(void)
{
    json_error_t je;
    json_t *v = json_load_file(GS_VECTORS_DIR "/hlc.json", 0, &je);
    cr_assert_not_null(v, "cannot read %s/hlc.json: %s", GS_VECTORS_DIR, je.text);
    return v;
}

Test(hlc, vectors_encoding)
{
    json_t *v = vectors();
    json_t *list = json_object_get(v, "encoding");
    cr_assert(json_array_size(list) >= 6);
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c)
    {
        json_t *in = json_object_get(c, "input");
        char out[GS_HLC_MAX_LEN];
        size_t n = gs_hlc_encode(json_integer_value(json_object_get(in, "wallMs")),
                                 (uint32_t)json_integer_value(json_object_get(in, "logical")),
                                 json_string_value(json_object_get(in, "nodeId")), out, sizeof out);
        const char *want = json_string_value(json_object_get(c, "expected"));
        cr_assert_str_eq(out, want, "encoding vector %zu", i);
        cr_assert_eq(n, strlen(want));
    }
    json_decref(v);
}

Test(hlc, vectors_decoding)
{
    json_t *v = vectors();
    json_t *list = json_object_get(v, "decoding");
    cr_assert(json_array_size(list) >= 4);
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c)
    {
        const char *in = json_string_value(json_object_get(c, "input"));
        gs_hlc_ts ts;
        gs_error err;
        gs_error_init(&err);
        gs_status rc = gs_hlc_decode(in, &ts, &err);
        if (json_is_true(json_object_get(c, "expected_error"))) {
            cr_assert_eq(rc, GS_ERROR, "decoding vector %zu (%s) must fail", i, in);
            cr_assert_str_eq(err.code, "REPLICATION_ERROR");
            continue;
        }
        cr_assert_eq(rc, GS_OK, "decoding vector %zu: %s", i, err.message);
        json_t *want = json_object_get(c, "expected");
        cr_assert_eq(ts.wall_ms, json_integer_value(json_object_get(want, "wallMs")));
        cr_assert_eq(ts.logical, (uint32_t)json_integer_value(json_object_get(want, "logical")));
        const char *node = json_string_value(json_object_get(want, "nodeId"));
        cr_assert_eq(ts.node_len, strlen(node));
        cr_assert(memcmp(ts.node_id, node, ts.node_len) == 0, "vector %zu node id", i);
    }
    json_decref(v);
}

Test(hlc, vectors_comparison)
{
    json_t *v = vectors();
    json_t *list = json_object_get(v, "comparison");
    cr_assert(json_array_size(list) >= 5);
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c)
    {
        const char *a = json_string_value(json_object_get(c, "a"));
        const char *b = json_string_value(json_object_get(c, "b"));
        int want = (int)json_integer_value(json_object_get(c, "expected"));
        cr_assert_eq(gs_hlc_compare(a, b), want, "comparison vector %zu (%s vs %s)", i, a, b);
        cr_assert_eq(gs_hlc_compare(b, a), -want, "comparison vector %zu reversed", i);
    }
    json_decref(v);
}

Test(hlc, decode_refuses_malformed_parts)
{
    const char *bad[] = {"",
                         "a-b",
                         "zz-0000-n",
                         "018bcfe56800-xyz-n",
                         "-0000-n",
                         "018bcfe56800--n",
                         "018bcfe56800-00001-n",
                         "10000000000000-0000-n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gs_hlc_ts ts;
        gs_error err;
        gs_error_init(&err);
        cr_assert_eq(gs_hlc_decode(bad[i], &ts, &err), GS_ERROR, "'%s'", bad[i]);
        cr_assert_str_eq(err.code, "REPLICATION_ERROR");
    }
    gs_hlc_ts ts;
    gs_error err;
    cr_assert_eq(gs_hlc_decode("018bcfe56800-0000-", &ts, &err), GS_OK, "an empty node id");
    cr_assert_eq(ts.node_len, 0);
}

/* ---- a clock with a fake time source ---- */

static int64_t fake_now;

static int64_t fake_time(void *user)
{
    (void)user;
    return fake_now;
}

static void clock_at(gs_hlc *c, const char *node, int64_t now, int64_t drift)
{
    gs_error err;
    cr_assert_eq(gs_hlc_init(c, node, drift, &err), GS_OK);
    fake_now = now;
    gs_hlc_set_time_source(c, fake_time, NULL);
}

static void now_is(gs_hlc *c, const char *want)
{
    char out[GS_HLC_MAX_LEN];
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_hlc_now(c, out, &err), GS_OK, "%s", err.message);
    cr_assert_str_eq(out, want);
}

static void receive_is(gs_hlc *c, const char *remote, const char *want)
{
    char out[GS_HLC_MAX_LEN];
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_hlc_receive(c, remote, out, &err), GS_OK, "%s", err.message);
    cr_assert_str_eq(out, want, "receive(%s)", remote);
}

Test(hlc, now_ticks_logically_within_a_millisecond)
{
    gs_hlc c;
    clock_at(&c, "node-a", 1700000000000, 0);
    now_is(&c, "018bcfe56800-0000-node-a");
    now_is(&c, "018bcfe56800-0001-node-a");
    now_is(&c, "018bcfe56800-0002-node-a");
    fake_now = 1700000000001;
    now_is(&c, "018bcfe56801-0000-node-a");
    /* the wall clock going backwards never moves the HLC back */
    fake_now = 1699999999000;
    now_is(&c, "018bcfe56801-0001-node-a");
    gs_hlc_destroy(&c);
}

Test(hlc, now_overflow_fails_and_leaves_the_clock)
{
    gs_hlc c;
    clock_at(&c, "n", 1000, 0);
    gs_error err;
    cr_assert_eq(gs_hlc_observe(&c, "0000000003e8-fffe-x", &err), GS_OK);
    now_is(&c, "0000000003e8-ffff-n");
    char out[GS_HLC_MAX_LEN];
    gs_error_init(&err);
    cr_assert_eq(gs_hlc_now(&c, out, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "REPLICATION_ERROR");
    cr_assert(strstr(err.message, "overflow") != NULL, "%s", err.message);
    gs_hlc_current(&c, out);
    cr_assert_str_eq(out, "0000000003e8-ffff-n", "unchanged by the failure");
    fake_now = 1001;
    now_is(&c, "0000000003e9-0000-n");
    gs_hlc_destroy(&c);
}

Test(hlc, receive_follows_each_case)
{
    gs_hlc c;
    /* physical ahead of both: take physical, logical 0 */
    clock_at(&c, "me", 5000, 0);
    receive_is(&c, "000000001000-0005-peer", "000000001388-0000-me");
    /* remote ahead of local and physical: remote wall, remote logical + 1 */
    receive_is(&c, "000000001770-0007-peer", "000000001770-0008-me");
    /* local ahead of remote (physical behind): local logical + 1 */
    receive_is(&c, "000000001000-00ff-peer", "000000001770-0009-me");
    /* same wall: max(local, remote) + 1 */
    receive_is(&c, "000000001770-0020-peer", "000000001770-0021-me");
    receive_is(&c, "000000001770-0003-peer", "000000001770-0022-me");
    /* now() after receive stays ahead */
    now_is(&c, "000000001770-0023-me");
    /* overflow through receive */
    char out[GS_HLC_MAX_LEN];
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_hlc_receive(&c, "000000001771-ffff-peer", out, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "REPLICATION_ERROR");
    gs_hlc_current(&c, out);
    cr_assert_str_eq(out, "000000001770-0023-me");
    /* a malformed remote */
    cr_assert_eq(gs_hlc_receive(&c, "nope", out, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "REPLICATION_ERROR");
    gs_hlc_destroy(&c);
}

Test(hlc, receive_refuses_a_remote_past_the_drift)
{
    gs_hlc c;
    clock_at(&c, "me", 1700000000000, GS_HLC_DEFAULT_MAX_DRIFT_MS);
    char remote[GS_HLC_MAX_LEN], out[GS_HLC_MAX_LEN];
    gs_error err;
    /* exactly the bound: accepted */
    gs_hlc_encode(1700000060000, 0, "peer", remote, sizeof remote);
    gs_error_init(&err);
    cr_assert_eq(gs_hlc_receive(&c, remote, out, &err), GS_OK, "%s", err.message);
    /* one ms past it: refused, clock unchanged */
    char before[GS_HLC_MAX_LEN];
    gs_hlc_current(&c, before);
    gs_hlc_encode(1700000060001, 0, "peer", remote, sizeof remote);
    cr_assert_eq(gs_hlc_receive(&c, remote, out, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "BATCH_VALIDATION_ERROR");
    gs_hlc_current(&c, out);
    cr_assert_str_eq(out, before);
    /* far behind is fine for the clock; the batch check reads the distance */
    gs_hlc_encode(1699999000000, 0, "peer", remote, sizeof remote);
    cr_assert_eq(gs_hlc_receive(&c, remote, out, &err), GS_OK);
    cr_assert_eq(gs_hlc_drift_ms(&c, remote), 1000000);
    cr_assert_eq(gs_hlc_drift_ms(&c, "junk"), -1);
    /* no bound */
    gs_hlc_set_max_drift(&c, 0);
    gs_hlc_encode(1800000000000, 0, "peer", remote, sizeof remote);
    cr_assert_eq(gs_hlc_receive(&c, remote, out, &err), GS_OK);
    gs_hlc_destroy(&c);
}

Test(hlc, real_clock_is_monotonic)
{
    gs_hlc c;
    gs_error err;
    cr_assert_eq(gs_hlc_init(&c, "node-real", 0, &err), GS_OK);
    char prev[GS_HLC_MAX_LEN] = "";
    for (int i = 0; i < 100000; i++) {
        char out[GS_HLC_MAX_LEN];
        cr_assert_eq(gs_hlc_now(&c, out, &err), GS_OK);
        cr_assert_gt(strcmp(out, prev), 0, "%s after %s", out, prev);
        memcpy(prev, out, sizeof prev);
    }
    gs_hlc_ts ts;
    cr_assert_eq(gs_hlc_decode(prev, &ts, &err), GS_OK);
    int64_t wall = gs_hlc_physical_ms();
    cr_assert(ts.wall_ms <= wall && ts.wall_ms > wall - 60000, "wall ms tracks the clock");
    gs_hlc_destroy(&c);
}

Test(hlc, node_id_too_long_is_refused)
{
    char node[GS_HLC_MAX_NODE_ID + 2];
    memset(node, 'n', sizeof node - 1);
    node[sizeof node - 1] = '\0';
    gs_hlc c;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_hlc_init(&c, node, 0, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "REPLICATION_ERROR");
}

/* ---- persistence ---- */

static char tmpdir[64];

Test(hlc, load_seeds_from_meta_log_and_column_versions)
{
    gs_test_mkdtemp(tmpdir, sizeof tmpdir, "hlc");
    char path[128];
    snprintf(path, sizeof path, "%s/h.db", tmpdir);
    gs_conn_options co = gs_test_writer_options(path, 1000, 8);
    gs_conn *conn;
    gs_error err;
    cr_assert_eq(gs_conn_open(&co, &conn, &err), GS_OK, "%s", err.message);

    gs_hlc c;
    clock_at(&c, "me", 1000, 0);
    /* nothing stored: stays at zero */
    cr_assert_eq(gs_hlc_load(&c, conn, &err), GS_OK, "%s", err.message);
    char out[GS_HLC_MAX_LEN];
    gs_hlc_current(&c, out);
    cr_assert_str_eq(out, "000000000000-0000-me");

    cr_assert_eq(gs_conn_exec(conn,
                              "CREATE TABLE _sirannon_meta (key TEXT PRIMARY KEY, value TEXT NOT "
                              "NULL)",
                              &err),
                 GS_OK);
    cr_assert_eq(gs_hlc_persist(conn, "000000002000-0004-me", &err), GS_OK, "%s", err.message);
    cr_assert_eq(gs_hlc_persist(conn, "000000002000-0005-me", &err), GS_OK, "upsert");
    cr_assert_eq(gs_hlc_load(&c, conn, &err), GS_OK);
    gs_hlc_current(&c, out);
    cr_assert_str_eq(out, "000000002000-0005-me");
    /* the physical clock is behind the persisted one: now() continues from it */
    now_is(&c, "000000002000-0006-me");

    /* the change log and the column versions hold later stamps */
    cr_assert_eq(gs_conn_exec(conn,
                              "CREATE TABLE _sirannon_changes (seq INTEGER PRIMARY KEY, hlc TEXT "
                              "NOT NULL DEFAULT '')",
                              &err),
                 GS_OK);
    cr_assert_eq(gs_conn_exec(conn,
                              "INSERT INTO _sirannon_changes (hlc) VALUES ('000000003000-0001-a'), "
                              "(''), ('000000002500-0009-b')",
                              &err),
                 GS_OK);
    cr_assert_eq(gs_hlc_load(&c, conn, &err), GS_OK);
    gs_hlc_current(&c, out);
    cr_assert_str_eq(out, "000000003000-0001-me");
    cr_assert_eq(gs_conn_exec(conn,
                              "CREATE TABLE _sirannon_column_versions (tbl TEXT, hlc TEXT NOT "
                              "NULL)",
                              &err),
                 GS_OK);
    cr_assert_eq(gs_conn_exec(conn,
                              "INSERT INTO _sirannon_column_versions VALUES ('t', "
                              "'000000003000-0007-z')",
                              &err),
                 GS_OK);
    cr_assert_eq(gs_hlc_load(&c, conn, &err), GS_OK);
    gs_hlc_current(&c, out);
    cr_assert_str_eq(out, "000000003000-0007-me");
    /* a malformed persisted value is ignored, never moves the clock */
    cr_assert_eq(gs_hlc_persist(conn, "garbage", &err), GS_OK);
    cr_assert_eq(gs_hlc_load(&c, conn, &err), GS_OK);
    gs_hlc_current(&c, out);
    cr_assert_str_eq(out, "000000003000-0007-me");
    gs_hlc_destroy(&c);
    gs_conn_close(conn);
    gs_test_rmtree(tmpdir);
}

/* The encoder writes stamps directly; printf's rules are the reference, truncation included. */
Test(hlc, encode_matches_printf_everywhere)
{
    static const int64_t walls[] = {
        0, 1, 0xabcdef, 1700000000000, 0xffffffffffffLL, 0x1000000000000LL, -1, INT64_MAX};
    static const uint32_t logicals[] = {0, 1, 0xabc, 0xffff, 0x10000, 0xffffffffu};
    static const char *const nodes[] = {"", "n", "node-a", "a-b-c", NULL};
    static const size_t caps[] = {1, 5, 18, 19, 20, 24, 25, 64};
    for (size_t w = 0; w < sizeof walls / sizeof walls[0]; w++)
        for (size_t l = 0; l < sizeof logicals / sizeof logicals[0]; l++)
            for (size_t k = 0; k < sizeof nodes / sizeof nodes[0]; k++)
                for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
                    char got[64], want[64];
                    memset(got, 'x', sizeof got);
                    memset(want, 'x', sizeof want);
                    size_t n = gs_hlc_encode(walls[w], logicals[l], nodes[k], got, caps[c]);
                    int m = snprintf(want, caps[c], "%012llx-%04x-%s", (unsigned long long)walls[w],
                                     (unsigned)logicals[l], nodes[k] ? nodes[k] : "");
                    cr_assert_eq(n, (size_t)m, "length for %lld/%u/%s/%zu", (long long)walls[w],
                                 logicals[l], nodes[k] ? nodes[k] : "(null)", caps[c]);
                    cr_assert_eq(memcmp(got, want, sizeof got), 0, "bytes for %lld/%u/%s/%zu",
                                 (long long)walls[w], logicals[l], nodes[k] ? nodes[k] : "(null)",
                                 caps[c]);
                }
}
