/* Tagged value encoding: parameter checking, conversion, binding and row encoding. */
#include "base/alloc.h"
#include "base/error.h"
#include "sqlite/value.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

/* Check and convert one JSON params text into a set; returns the arena (free it). */
static char *convert(const char *json, gs_bind_set *set, gs_bind_param **items, gs_error *err,
                     gs_status *st)
{
    json_error_t je;
    json_t *j = json_loads(json, JSON_DECODE_ANY, &je);
    cr_assert_not_null(j, "bad test JSON %s: %s", json, je.text);
    size_t count = 0, bytes = 0;
    *st = gs_params_check(j, "params", &count, &bytes, err);
    char *arena = NULL;
    *items = NULL;
    if (*st == GS_OK) {
        *items = gs_calloc(count + 1, sizeof **items);
        arena = gs_malloc(bytes + 1);
        char *a = arena;
        gs_params_convert(j, set, *items, &a);
        cr_assert_eq((size_t)(a - arena), bytes, "arena use must match the size computed");
    }
    json_decref(j);
    return arena;
}

static gs_status check_value(const char *json, gs_error *err)
{
    json_t *j = json_loads(json, JSON_DECODE_ANY, NULL);
    cr_assert_not_null(j, "bad test JSON %s", json);
    size_t bytes = 0;
    gs_status st = gs_value_check(j, &bytes, err);
    json_decref(j);
    return st;
}

Test(value, scalars_convert)
{
    gs_error err;
    gs_error_init(&err);
    gs_bind_set set;
    gs_bind_param *items;
    gs_status st;
    char *arena =
        convert("[null, true, false, 42, -7, 1.5, \"h\\u00e9\", \"\"]", &set, &items, &err, &st);
    cr_assert_eq(st, GS_OK, "%s", err.message);
    cr_assert_eq(set.kind, GS_BIND_POSITIONAL);
    cr_assert_eq(set.count, 8);
    cr_assert_eq(items[0].value.type, GS_VALUE_NULL);
    cr_assert_eq(items[1].value.type, GS_VALUE_INT);
    cr_assert_eq(items[1].value.u.i, 1);
    cr_assert_eq(items[2].value.u.i, 0);
    cr_assert_eq(items[3].value.u.i, 42);
    cr_assert_eq(items[4].value.u.i, -7);
    cr_assert_eq(items[5].value.type, GS_VALUE_DOUBLE);
    cr_assert_float_eq(items[5].value.u.d, 1.5, 1e-12);
    cr_assert_eq(items[6].value.type, GS_VALUE_TEXT);
    cr_assert_eq(items[6].value.u.text.len, 3);
    cr_assert(memcmp(items[6].value.u.text.ptr, "h\xc3\xa9", 3) == 0);
    cr_assert_eq(items[7].value.type, GS_VALUE_TEXT);
    cr_assert_eq(items[7].value.u.text.len, 0);
    gs_free(items);
    gs_free(arena);
}

Test(value, int_envelopes_at_the_limits)
{
    gs_error err;
    gs_error_init(&err);
    gs_bind_set set;
    gs_bind_param *items;
    gs_status st;
    char *arena = convert("[{\"__sirannon_int\":\"9223372036854775807\"},"
                          "{\"__sirannon_int\":\"-9223372036854775808\"},"
                          "{\"__sirannon_int\":\"0\"},{\"__sirannon_int\":\"-1\"},"
                          "{\"__sirannon_int\":\"0009007199254740993\"}]",
                          &set, &items, &err, &st);
    cr_assert_eq(st, GS_OK, "%s", err.message);
    cr_assert_eq(items[0].value.type, GS_VALUE_INT);
    cr_assert_eq(items[0].value.u.i, INT64_MAX);
    cr_assert_eq(items[1].value.u.i, INT64_MIN);
    cr_assert_eq(items[2].value.u.i, 0);
    cr_assert_eq(items[3].value.u.i, -1);
    cr_assert_eq(items[4].value.u.i, 9007199254740993LL);
    gs_free(items);
    gs_free(arena);
}

Test(value, malformed_envelopes_are_invalid_request)
{
    static const char *bad[] = {
        "{\"__sirannon_int\":\"9223372036854775808\"}",  /* overflow */
        "{\"__sirannon_int\":\"-9223372036854775809\"}", /* underflow */
        "{\"__sirannon_int\":\"12345678901234567890\"}", /* 20 digits */
        "{\"__sirannon_int\":\"\"}",
        "{\"__sirannon_int\":\"-\"}",
        "{\"__sirannon_int\":\"+1\"}",
        "{\"__sirannon_int\":\"1.5\"}",
        "{\"__sirannon_int\":\" 1\"}",
        "{\"__sirannon_int\":\"0x10\"}",
        "{\"__sirannon_int\":12}",                /* non-string */
        "{\"__sirannon_int\":\"1\",\"extra\":1}", /* extra key */
        "{\"__sirannon_blob\":\"ABC\"}",          /* odd */
        "{\"__sirannon_blob\":\"GG\"}",           /* non-hex */
        "{\"__sirannon_blob\":\"0 \"}",
        "{\"__sirannon_blob\":null}",
        "{\"__sirannon_blob\":\"00\",\"__sirannon_int\":\"1\"}",
        "{\"other\":\"1\"}",
        "{}",
        "[1,2]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gs_error err;
        gs_error_init(&err);
        cr_assert_eq(check_value(bad[i], &err), GS_ERROR, "accepted %s", bad[i]);
        cr_assert_str_eq(err.code, "INVALID_REQUEST", "%s -> %s", bad[i], err.code);
    }
}

Test(value, blob_envelopes_accept_either_case)
{
    gs_error err;
    gs_error_init(&err);
    gs_bind_set set;
    gs_bind_param *items;
    gs_status st;
    char *arena =
        convert("{\"a\":{\"__sirannon_blob\":\"00fFaB\"},\"b\":{\"__sirannon_blob\":\"\"}}", &set,
                &items, &err, &st);
    cr_assert_eq(st, GS_OK, "%s", err.message);
    cr_assert_eq(set.kind, GS_BIND_NAMED);
    cr_assert_eq(set.count, 2);
    cr_assert_str_eq(items[0].name, "a");
    cr_assert_eq(items[0].value.type, GS_VALUE_BLOB);
    cr_assert_eq(items[0].value.u.blob.len, 3);
    cr_assert(memcmp(items[0].value.u.blob.ptr, "\x00\xff\xab", 3) == 0);
    cr_assert_eq(items[1].value.type, GS_VALUE_BLOB);
    cr_assert_eq(items[1].value.u.blob.len, 0);
    gs_free(items);
    gs_free(arena);
}

Test(value, errors_name_the_parameter)
{
    gs_error err;
    gs_error_init(&err);
    gs_bind_set set;
    gs_bind_param *items;
    gs_status st;
    convert("[1, {\"__sirannon_int\":\"x\"}]", &set, &items, &err, &st);
    cr_assert_eq(st, GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_REQUEST");
    cr_assert(strstr(err.message, "params[1]"), "%s", err.message);
    convert("{\"name\": [1]}", &set, &items, &err, &st);
    cr_assert_eq(st, GS_ERROR);
    cr_assert(strstr(err.message, "params.name"), "%s", err.message);
    convert("\"text\"", &set, &items, &err, &st);
    cr_assert_eq(st, GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_REQUEST");
    convert("7", &set, &items, &err, &st);
    cr_assert_eq(st, GS_ERROR);
}

/* ---- binding and encoding through a real statement ---- */

static sqlite3 *mem(void)
{
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(":memory:", &db), SQLITE_OK);
    return db;
}

/* Bind params_json to sql, step once, encode the row. Returns GS_OK and fills out. */
static gs_status bind_and_encode(sqlite3 *db, const char *sql, const char *params_json, gs_buf *out,
                                 gs_error *err)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    gs_bind_set set = {.kind = GS_BIND_NONE};
    gs_bind_param *items = NULL;
    char *arena = NULL;
    gs_status rc;
    if (params_json) {
        arena = convert(params_json, &set, &items, err, &rc);
        cr_assert_eq(rc, GS_OK, "%s", err->message);
    }
    rc = gs_params_bind(st, &set, err);
    if (rc == GS_OK) {
        cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s", sqlite3_errmsg(db));
        gs_row_keys keys;
        gs_row_keys_init(&keys);
        cr_assert_eq(gs_row_keys_build(&keys, st), 0);
        gs_buf_reset(out);
        gs_value_append_row(out, st, &keys);
        gs_row_keys_free(&keys);
    }
    sqlite3_finalize(st);
    gs_free(items);
    gs_free(arena);
    return rc;
}

Test(value, row_encoding_and_safe_integer_boundaries)
{
    sqlite3 *db = mem();
    gs_buf out;
    gs_buf_init(&out);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(bind_and_encode(db,
                                 "SELECT 9007199254740991 AS a, -9007199254740991 AS b, "
                                 "9007199254740992 AS c, -9007199254740992 AS d, "
                                 "9223372036854775807 AS e, -9223372036854775807 - 1 AS f",
                                 NULL, &out, &err),
                 GS_OK);
    cr_assert_str_eq(out.data, "{\"a\":9007199254740991,\"b\":-9007199254740991,"
                               "\"c\":{\"__sirannon_int\":\"9007199254740992\"},"
                               "\"d\":{\"__sirannon_int\":\"-9007199254740992\"},"
                               "\"e\":{\"__sirannon_int\":\"9223372036854775807\"},"
                               "\"f\":{\"__sirannon_int\":\"-9223372036854775808\"}}");
    cr_assert_eq(bind_and_encode(db,
                                 "SELECT 1.5 AS r, 'x\"y' AS t, NULL AS n, X'00FF10' AS b, "
                                 "X'' AS e, 0.1 AS p",
                                 NULL, &out, &err),
                 GS_OK);
    cr_assert_str_eq(out.data, "{\"r\":1.5,\"t\":\"x\\\"y\",\"n\":null,\"b\":{\"__sirannon_blob\":"
                               "\"00FF10\"},\"e\":{\"__sirannon_blob\":\"\"},\"p\":0.1}");
    gs_buf_free(&out);
    sqlite3_close(db);
}

Test(value, invalid_utf8_text_becomes_replacement_character)
{
    sqlite3 *db = mem();
    gs_buf out;
    gs_buf_init(&out);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(bind_and_encode(db, "SELECT CAST(X'61FF62' AS TEXT) AS t", NULL, &out, &err),
                 GS_OK);
    cr_assert_str_eq(out.data, "{\"t\":\"a\xEF\xBF\xBD"
                               "b\"}");
    gs_buf_free(&out);
    sqlite3_close(db);
}

Test(value, values_round_trip_through_sqlite)
{
    sqlite3 *db = mem();
    gs_buf out;
    gs_buf_init(&out);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(bind_and_encode(db, "SELECT ? AS a, ? AS b, ? AS c, ? AS d, ? AS e, ? AS f",
                                 "[{\"__sirannon_blob\":\"deadBEEF\"},"
                                 "{\"__sirannon_int\":\"-9223372036854775808\"},"
                                 "{\"__sirannon_int\":\"42\"}, true, null, 2.25]",
                                 &out, &err),
                 GS_OK, "%s", err.message);
    cr_assert_str_eq(out.data, "{\"a\":{\"__sirannon_blob\":\"DEADBEEF\"},"
                               "\"b\":{\"__sirannon_int\":\"-9223372036854775808\"},"
                               "\"c\":42,\"d\":1,\"e\":null,\"f\":2.25}");
    /* an empty blob binds a zero-length blob, not NULL */
    cr_assert_eq(
        bind_and_encode(db, "SELECT typeof(?) AS t", "[{\"__sirannon_blob\":\"\"}]", &out, &err),
        GS_OK);
    cr_assert_str_eq(out.data, "{\"t\":\"blob\"}");
    gs_buf_free(&out);
    sqlite3_close(db);
}

Test(value, named_parameters_bind_with_and_without_prefix)
{
    sqlite3 *db = mem();
    gs_buf out;
    gs_buf_init(&out);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(bind_and_encode(db, "SELECT :a AS a, @b AS b, $c AS c, :d AS d",
                                 "{\"a\":1,\"@b\":\"two\",\"c\":3.5,\":d\":null,\"unused\":9}",
                                 &out, &err),
                 GS_OK, "%s", err.message);
    cr_assert_str_eq(out.data, "{\"a\":1,\"b\":\"two\",\"c\":3.5,\"d\":null}");
    /* a key carrying a different prefix does not bind */
    cr_assert_eq(bind_and_encode(db, "SELECT :a AS a", "{\"@a\":1}", &out, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "QUERY_ERROR");
    cr_assert(strstr(err.message, ":a"), "%s", err.message);
    gs_buf_free(&out);
    sqlite3_close(db);
}

Test(value, parameter_count_mismatches_are_query_errors)
{
    sqlite3 *db = mem();
    gs_buf out;
    gs_buf_init(&out);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(bind_and_encode(db, "SELECT ?, ?", "[1]", &out, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "QUERY_ERROR");
    cr_assert(strstr(err.message, "too few"), "%s", err.message);
    cr_assert_eq(bind_and_encode(db, "SELECT ?", "[1, 2]", &out, &err), GS_ERROR);
    cr_assert(strstr(err.message, "too many"), "%s", err.message);
    cr_assert_eq(bind_and_encode(db, "SELECT ?", NULL, &out, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "QUERY_ERROR");
    cr_assert_eq(bind_and_encode(db, "SELECT ?", "{\"a\":1}", &out, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "QUERY_ERROR");
    cr_assert_eq(bind_and_encode(db, "SELECT 1 AS one", "[]", &out, &err), GS_OK);
    cr_assert_eq(bind_and_encode(db, "SELECT 1 AS one", "null", &out, &err), GS_OK);
    gs_buf_free(&out);
    sqlite3_close(db);
}

Test(value, rowid_is_a_number_or_a_decimal_string)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_value_append_rowid(&b, 9007199254740991LL);
    cr_assert_str_eq(b.data, "9007199254740991");
    gs_buf_reset(&b);
    gs_value_append_rowid(&b, 9007199254740992LL);
    cr_assert_str_eq(b.data, "\"9007199254740992\"");
    gs_buf_reset(&b);
    gs_value_append_rowid(&b, INT64_MIN);
    cr_assert_str_eq(b.data, "\"-9223372036854775808\"");
    gs_buf_free(&b);
}
