/* Unit tests for core/src/api: route matching and percent-decoding, body checks, registered
 * operations (argument resolution and the registry digest). */
#include <criterion/criterion.h>

#include "api/body.h"
#include "api/operations.h"
#include "api/route.h"
#include "base/alloc.h"
#include "base/error.h"

#include <string.h>

Test(route, fixed_routes)
{
    gs_route r;
    cr_assert_eq(gs_route_match("GET", "/health", &r), GS_OK);
    cr_assert_eq(r.action, GS_ROUTE_HEALTH);
    cr_assert_eq(gs_route_match("GET", "/health/ready", &r), GS_OK);
    cr_assert_eq(r.action, GS_ROUTE_HEALTH_READY);
    cr_assert_eq(gs_route_match("GET", "/capabilities?x=1", &r), GS_OK);
    cr_assert_eq(r.action, GS_ROUTE_CAPABILITIES);
    cr_assert_eq(gs_route_match("POST", "/health", &r), GS_ERROR);
    cr_assert_eq(gs_route_match("GET", "/healthz", &r), GS_ERROR);
    cr_assert_eq(gs_route_match("GET", "/", &r), GS_ERROR);
}

Test(route, db_routes_decode_id_and_name)
{
    gs_route r;
    cr_assert_eq(gs_route_match("POST", "/db/a%2Fb/query", &r), GS_OK);
    cr_assert_eq(r.action, GS_ROUTE_QUERY);
    cr_assert_str_eq(r.database_id, "a/b");
    gs_route_clear(&r);
    cr_assert_eq(gs_route_match("POST", "/db/main/execute/add%20item", &r), GS_OK);
    cr_assert_eq(r.action, GS_ROUTE_EXECUTE_NAMED);
    cr_assert_str_eq(r.name, "add item");
    gs_route_clear(&r);
    cr_assert_eq(gs_route_match("GET", "/db/main/backup/restore", &r), GS_OK);
    cr_assert_eq(r.action, GS_ROUTE_BACKUP_RESTORE_STATUS);
    gs_route_clear(&r);
    cr_assert_eq(gs_route_match("POST", "/db/main/backup/restore", &r), GS_OK);
    cr_assert_eq(r.action, GS_ROUTE_BACKUP_RESTORE);
    gs_route_clear(&r);
}

Test(route, refusals)
{
    gs_route r;
    cr_assert_eq(gs_route_match("GET", "/db/main/query", &r), GS_ERROR);
    cr_assert_eq(gs_route_match("POST", "/db//query", &r), GS_ERROR);
    cr_assert_eq(gs_route_match("POST", "/db/main", &r), GS_ERROR);
    cr_assert_eq(gs_route_match("POST", "/db/main/query/", &r), GS_ERROR);
    cr_assert_eq(gs_route_match("POST", "/db/main/query/a/b", &r), GS_ERROR);
    cr_assert_eq(gs_route_match("POST", "/db/ma%00in/query", &r), GS_ERROR);
    cr_assert_eq(gs_route_match("POST", "/db/ma%zzin/query", &r), GS_ERROR);
    cr_assert_eq(gs_route_match("POST", "/db/main%2/query", &r), GS_ERROR);
    cr_assert_eq(gs_route_match(NULL, "/health", &r), GS_ERROR);
}

static json_t *parse(const char *s, int allow_empty, gs_error *err)
{
    json_t *v = NULL;
    gs_error_init(err);
    gs_body_parse((const uint8_t *)s, strlen(s), allow_empty, &v, err);
    return v;
}

Test(body, text_may_hold_nul_but_sql_may_not)
{
    gs_error err;
    /* a bound text value keeps its U+0000 and everything after it */
    json_t *v = parse("{\"sql\":\"SELECT ?\",\"params\":[\"a\\u0000b\"]}", 0, &err);
    cr_assert_not_null(v, "%s", err.message);
    json_t *p = json_array_get(json_object_get(v, "params"), 0);
    cr_assert_eq(json_string_length(p), 3);
    cr_assert_eq(memcmp(json_string_value(p), "a\0b", 3), 0);
    json_decref(v);
    /* SQL with a NUL would be cut short by SQLite: refused before it runs */
    v = parse("{\"sql\":\"SELECT 1\\u0000; DROP TABLE t\"}", 0, &err);
    cr_assert_not_null(v);
    gs_db_request dreq;
    gs_db_stmt *stmts = NULL;
    gs_error_init(&err);
    cr_assert_eq(gs_body_to_db_request(GS_ROUTE_EXECUTE, v, &dreq, &stmts, &err), GS_ERROR);
    cr_expect_str_eq(err.code, "INVALID_REQUEST");
    gs_free(stmts);
    json_decref(v);
}

Test(body, parse_errors)
{
    gs_error err;
    cr_assert_null(parse("", 0, &err));
    cr_assert_str_eq(err.code, "EMPTY_BODY");
    json_t *v = parse(" \n", 1, &err);
    cr_assert(json_is_object(v));
    json_decref(v);
    cr_assert_null(parse("{\"a\":", 0, &err));
    cr_assert_str_eq(err.code, "INVALID_JSON");
    cr_assert_null(parse("[1]", 0, &err));
    cr_assert_str_eq(err.code, "INVALID_REQUEST");
    cr_assert_null(parse("{\"a\":\"\xff\"}", 0, &err));
    cr_assert_str_eq(err.code, "INVALID_JSON");
}

static const char *check_body(gs_route_action a, const char *json)
{
    static gs_error err;
    gs_error_init(&err);
    json_t *v = parse(json, 0, &err);
    cr_assert_not_null(v, "parse %s", json);
    gs_db_request dreq;
    gs_db_stmt *stmts = NULL;
    gs_status st = gs_body_to_db_request(a, v, &dreq, &stmts, &err);
    gs_free(stmts);
    json_decref(v);
    return st == GS_OK ? "OK" : err.code;
}

Test(body, statement_shapes)
{
    cr_assert_str_eq(check_body(GS_ROUTE_QUERY, "{\"sql\":\"SELECT 1\"}"), "OK");
    cr_assert_str_eq(check_body(GS_ROUTE_QUERY, "{\"sql\":\"SELECT ?\",\"params\":[1]}"), "OK");
    cr_assert_str_eq(check_body(GS_ROUTE_QUERY, "{\"sql\":\"SELECT :a\",\"params\":{\"a\":1}}"),
                     "OK");
    cr_assert_str_eq(check_body(GS_ROUTE_QUERY, "{}"), "INVALID_REQUEST");
    cr_assert_str_eq(check_body(GS_ROUTE_QUERY, "{\"sql\":\"\"}"), "INVALID_REQUEST");
    cr_assert_str_eq(check_body(GS_ROUTE_QUERY, "{\"sql\":\"x\",\"params\":\"p\"}"),
                     "INVALID_REQUEST");
    cr_assert_str_eq(check_body(GS_ROUTE_TRANSACTION, "{\"statements\":[]}"), "INVALID_REQUEST");
    cr_assert_str_eq(check_body(GS_ROUTE_TRANSACTION, "{\"statements\":[{\"sql\":\"x\"}]}"), "OK");
    cr_assert_str_eq(check_body(GS_ROUTE_TRANSACTION, "{\"statements\":[{\"sql\":1}]}"),
                     "INVALID_REQUEST");
    cr_assert_str_eq(check_body(GS_ROUTE_BATCH, "{\"sql\":\"x\",\"paramsBatch\":[[1],{}]}"), "OK");
    cr_assert_str_eq(check_body(GS_ROUTE_BATCH, "{\"sql\":\"x\",\"paramsBatch\":[]}"),
                     "INVALID_REQUEST");
    cr_assert_str_eq(check_body(GS_ROUTE_BATCH, "{\"sql\":\"x\",\"paramsBatch\":[3]}"),
                     "INVALID_REQUEST");
    cr_assert_str_eq(
        check_body(GS_ROUTE_LOAD, "{\"sql\":\"x\",\"paramsBatch\":[[1]],\"durability\":\"full\"}"),
        "INVALID_DURABILITY");
    cr_assert_str_eq(
        check_body(GS_ROUTE_LOAD, "{\"sql\":\"x\",\"paramsBatch\":[[1]],\"checkpoint\":1}"),
        "INVALID_REQUEST");
    cr_assert_str_eq(check_body(GS_ROUTE_LOAD,
                                "{\"sql\":\"x\",\"paramsBatch\":[[1]],\"durability\":\"normal\","
                                "\"checkpoint\":false}"),
                     "OK");
}

Test(body, concerns)
{
    cr_assert_str_eq(
        check_body(GS_ROUTE_QUERY, "{\"sql\":\"x\",\"readConcern\":{\"level\":\"linearizable\"}}"),
        "OK");
    cr_assert_str_eq(check_body(GS_ROUTE_QUERY, "{\"sql\":\"x\",\"readConcern\":{\"level\":1}}"),
                     "INVALID_REQUEST");
    cr_assert_str_eq(check_body(GS_ROUTE_EXECUTE,
                                "{\"sql\":\"x\",\"writeConcern\":{\"level\":\"majority\","
                                "\"timeoutMs\":250}}"),
                     "OK");
    cr_assert_str_eq(check_body(GS_ROUTE_EXECUTE,
                                "{\"sql\":\"x\",\"writeConcern\":{\"level\":\"all\","
                                "\"timeoutMs\":0}}"),
                     "INVALID_REQUEST");
    cr_assert_str_eq(check_body(GS_ROUTE_BATCH, "{\"sql\":\"x\",\"paramsBatch\":[[1]],"
                                                "\"writeConcern\":{\"level\":\"none\"}}"),
                     "INVALID_REQUEST");
}

static gs_operations *sample_ops(void)
{
    gs_operations *ops = gs_operations_new();
    gs_error err;
    gs_error_init(&err);
    char *s1[] = {"SELECT * FROM t WHERE id = :id AND owner = :owner"};
    char *args1[] = {"id"};
    char *ia[] = {"owner"}, *ifld[] = {"sub"};
    gs_operation r = {.database = "main",
                      .name = "get",
                      .kind = GS_OP_READ,
                      .statements = s1,
                      .statement_count = 1,
                      .args = args1,
                      .arg_count = 1,
                      .identity_args = ia,
                      .identity_fields = ifld,
                      .identity_count = 1};
    cr_assert_eq(gs_operations_add(ops, &r, &err), GS_OK);
    char *s2[] = {"INSERT INTO t VALUES (:a, :b)", "UPDATE c SET n = n + 1"};
    char *args2[] = {"b", "a"};
    gs_operation w = {.database = "main",
                      .name = "put",
                      .kind = GS_OP_WRITE,
                      .statements = s2,
                      .statement_count = 2,
                      .args = args2,
                      .arg_count = 2};
    cr_assert_eq(gs_operations_add(ops, &w, &err), GS_OK);
    cr_assert_eq(gs_operations_add(ops, &w, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert_eq(gs_operations_build(ops, &err), GS_OK);
    return ops;
}

Test(operations, resolve_arguments)
{
    gs_operations *ops = sample_ops();
    const gs_operation *get = gs_operations_find(ops, "main", "get", GS_OP_READ);
    cr_assert_not_null(get);
    cr_assert_null(gs_operations_find(ops, "main", "get", GS_OP_WRITE));
    cr_assert_null(gs_operations_find(ops, "other", "get", GS_OP_READ));
    gs_error err;
    gs_error_init(&err);
    json_t *identity = json_pack("{s:s}", "sub", "alice");
    json_t *args = json_pack("{s:i}", "id", 7);
    json_t *out = gs_operation_resolve_args(get, args, identity, &err);
    cr_assert_not_null(out);
    cr_assert_eq(json_integer_value(json_object_get(out, "id")), 7);
    cr_assert_str_eq(json_string_value(json_object_get(out, "owner")), "alice");
    json_decref(out);
    cr_assert_null(gs_operation_resolve_args(get, args, NULL, &err));
    cr_assert_str_eq(err.code, "IDENTITY_REQUIRED");
    json_t *bad = json_pack("{s:i,s:s}", "id", 1, "owner", "mallory");
    cr_assert_null(gs_operation_resolve_args(get, bad, identity, &err));
    cr_assert_str_eq(err.code, "ARGUMENT_NOT_ALLOWED");
    json_t *extra = json_pack("{s:i,s:i}", "id", 1, "zzz", 2);
    cr_assert_null(gs_operation_resolve_args(get, extra, identity, &err));
    cr_assert_str_eq(err.code, "ARGUMENT_NOT_ALLOWED");
    cr_assert_null(gs_operation_resolve_args(get, NULL, identity, &err));
    cr_assert_str_eq(err.code, "MISSING_ARGUMENT");
    json_t *arr = json_array();
    cr_assert_null(gs_operation_resolve_args(get, arr, identity, &err));
    cr_assert_str_eq(err.code, "INVALID_REQUEST");
    json_decref(arr);
    json_decref(extra);
    json_decref(bad);
    json_decref(args);
    json_decref(identity);
    gs_operations_free(ops);
}

Test(operations, digest_is_stable_and_sensitive)
{
    gs_operations *a = sample_ops();
    gs_operations *b = sample_ops();
    cr_assert_eq(strlen(gs_operations_digest(a)), 64);
    cr_assert_str_eq(gs_operations_digest(a), gs_operations_digest(b));
    /* adding an argument changes the contract and so the digest */
    gs_operations *c = gs_operations_new();
    gs_error err;
    gs_error_init(&err);
    char *s1[] = {"SELECT 1"};
    char *args[] = {"id", "extra"};
    gs_operation r = {.database = "main",
                      .name = "get",
                      .kind = GS_OP_READ,
                      .statements = s1,
                      .statement_count = 1,
                      .args = args,
                      .arg_count = 2};
    cr_assert_eq(gs_operations_add(c, &r, &err), GS_OK);
    cr_assert_eq(gs_operations_build(c, &err), GS_OK);
    cr_assert_str_neq(gs_operations_digest(a), gs_operations_digest(c));
    gs_operations_free(a);
    gs_operations_free(b);
    gs_operations_free(c);
}

Test(operations, shape_checks)
{
    gs_operations *ops = gs_operations_new();
    gs_error err;
    gs_error_init(&err);
    char *two[] = {"SELECT 1", "SELECT 2"};
    gs_operation r = {.database = "main",
                      .name = "r",
                      .kind = GS_OP_READ,
                      .statements = two,
                      .statement_count = 2};
    cr_assert_eq(gs_operations_add(ops, &r, &err), GS_ERROR);
    char *a[] = {"x"};
    gs_operation w = {.database = "main",
                      .name = "w",
                      .kind = GS_OP_WRITE,
                      .statements = two,
                      .statement_count = 1,
                      .args = a,
                      .arg_count = 1,
                      .identity_args = a,
                      .identity_fields = a,
                      .identity_count = 1};
    cr_assert_eq(gs_operations_add(ops, &w, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    gs_operations_free(ops);
}
