/* Every call of the client against a real gatestream process, over HTTP and over WebSocket:
 * query, execute, transaction, batch, load, loadAll, registered reads and writes, read and
 * write concern, value round trips through SQLite, errors with the server's codes, the
 * client-side SQL refusal, timeouts, bearer tokens and refused WebSocket connections. */
#include <criterion/criterion.h>

#include <gatestream/client.h>

#include "support.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *OPERATIONS =
    "  operations:\n"
    "    - { database: main, name: byOwner, kind: read, args: [owner],\n"
    "        sql: \"SELECT id, owner, qty FROM items WHERE owner = :owner ORDER BY id\" }\n"
    "    - { database: main, name: addItem, kind: write, args: [owner, qty],\n"
    "        statements: [ { sql: \"INSERT INTO items (owner, qty) VALUES (:owner, :qty)\" },\n"
    "                      { sql: \"UPDATE items SET qty = qty + 0 WHERE owner = :owner\" } ] }\n";

static gst_server srv;

static void start_server(void)
{
    cr_assert_eq(gst_server_start(&srv, NULL, OPERATIONS, NULL, 1), 0, "server start");
}

static void stop_server(void)
{
    gst_server_cleanup(&srv);
}

static gs_client *open_client(gs_client_transport t, gs_client_config *base)
{
    char url[64];
    const char *urls[] = {gst_server_url(&srv, url, sizeof url)};
    gs_client_config cfg;
    if (base)
        cfg = *base;
    else
        gs_client_config_init(&cfg);
    cfg.transport = t;
    gs_client *c;
    gs_error err;
    cr_assert_eq(gs_client_open(urls, 1, &cfg, &c, &err), GS_OK, "%s: %s", err.code, err.message);
    return c;
}

static gs_client_db *db_of(gs_client *c)
{
    gs_error err;
    gs_client_db *db = gs_client_database(c, "main", &err);
    cr_assert(db, "%s", err.message);
    return db;
}

#define OK(call)                                                                                   \
    do {                                                                                           \
        gs_error err_;                                                                             \
        gs_error *err = &err_;                                                                     \
        gs_status st_ = (call);                                                                    \
        cr_assert_eq(st_, GS_OK, "%s failed: %s: %s", #call, err_.code, err_.message);             \
    } while (0)

static void calls(gs_client_transport t)
{
    gs_client *c = open_client(t, NULL);
    gs_client_db *db = db_of(c);
    gs_client_exec ex;
    OK(gs_client_execute(db, "CREATE TABLE items (id INTEGER PRIMARY KEY, owner TEXT, qty INTEGER)",
                         NULL, NULL, &ex, err));
    gs_value p[] = {gs_client_val_text("alice"), gs_client_val_int(1)};
    gs_client_params pp = gs_client_positional(p, 2);
    OK(gs_client_execute(db, "INSERT INTO items (owner, qty) VALUES (?, ?)", &pp, NULL, &ex, err));
    cr_assert_eq(ex.changes, 1);
    cr_assert_eq(ex.last_insert_rowid, 1);
    cr_assert_str_eq(ex.last_insert_rowid_text, "1");

    /* named parameters */
    const char *names[] = {"o", ":q"};
    gs_value nv[] = {gs_client_val_text("bob"), gs_client_val_int(7)};
    gs_client_params np = gs_client_named(names, nv, 2);
    OK(gs_client_execute(db, "INSERT INTO items (owner, qty) VALUES (:o, :q)", &np, NULL, &ex,
                         err));
    cr_assert_eq(ex.last_insert_rowid, 2);

    /* transaction */
    gs_value tv = gs_client_val_text("carol");
    gs_client_stmt stmts[] = {
        {"INSERT INTO items (owner, qty) VALUES (?, 3)", gs_client_positional(&tv, 1)},
        {"UPDATE items SET qty = qty + 1 WHERE owner = 'carol'", {0}},
    };
    gs_client_results res;
    OK(gs_client_transaction(db, stmts, 2, NULL, &res, err));
    cr_assert_eq(res.count, 2);
    cr_assert_eq(res.items[0].last_insert_rowid, 3);
    cr_assert_eq(res.items[1].changes, 1);
    gs_client_results_free(&res);

    /* batch */
    gs_value b0[] = {gs_client_val_text("dan"), gs_client_val_int(4)};
    gs_value b1[] = {gs_client_val_text("eve"), gs_client_val_int(5)};
    gs_client_params batch[] = {gs_client_positional(b0, 2), gs_client_positional(b1, 2)};
    OK(gs_client_batch(db, "INSERT INTO items (owner, qty) VALUES (?, ?)", batch, 2, NULL, &res,
                       err));
    cr_assert_eq(res.count, 2);
    cr_assert_eq(res.items[1].last_insert_rowid, 5);
    gs_client_results_free(&res);

    /* load and loadAll */
    gs_client_load_result lr;
    gs_client_call_opts lo;
    gs_client_call_opts_init(&lo);
    lo.durability = "normal";
    lo.checkpoint = 1;
    OK(gs_client_load(db, "INSERT INTO items (owner, qty) VALUES (?, ?)", batch, 2, &lo, &lr, err));
    cr_assert_eq(lr.rows_loaded, 2);
    enum { N = 2500 };
    static gs_value vals[N][2];
    static gs_client_params rows[N];
    for (int i = 0; i < N; i++) {
        vals[i][0] = gs_client_val_text("bulk");
        vals[i][1] = gs_client_val_int(i);
        rows[i] = gs_client_positional(vals[i], 2);
    }
    OK(gs_client_load_all(db, "INSERT INTO items (owner, qty) VALUES (?, ?)", rows, N, 1000, NULL,
                          &lr, err));
    cr_assert_eq(lr.rows_loaded, N);
    cr_assert_eq(lr.changes, N);

    /* query with read concern */
    gs_client_call_opts qo;
    gs_client_call_opts_init(&qo);
    qo.read_concern = "local";
    gs_value owner = gs_client_val_text("bulk");
    gs_client_params op = gs_client_positional(&owner, 1);
    gs_client_rows *r;
    OK(gs_client_query(db, "SELECT count(*) AS n, sum(qty) AS s FROM items WHERE owner = ?", &op,
                       &qo, &r, err));
    cr_assert_eq(gs_client_rows_count(r), 1);
    cr_assert_str_eq(gs_client_rows_column_name(r, 0), "n");
    cr_assert_eq(gs_client_rows_get(r, 0, 0)->u.i, N);
    cr_assert_eq(gs_client_rows_get(r, 0, 1)->u.i, (int64_t)N * (N - 1) / 2);
    gs_client_rows_free(r);

    /* write concern (a standalone node accepts local) */
    gs_client_call_opts wo;
    gs_client_call_opts_init(&wo);
    wo.write_concern = "local";
    OK(gs_client_execute(db, "UPDATE items SET qty = qty WHERE id = 1", NULL, &wo, &ex, err));
    cr_assert_eq(ex.changes, 1);

    /* registered operations */
    const char *an[] = {"owner", "qty"};
    gs_value av[] = {gs_client_val_text("gus"), gs_client_val_int(9)};
    gs_client_params args = gs_client_named(an, av, 2);
    OK(gs_client_execute_named(db, "addItem", &args, NULL, &res, err));
    cr_assert_eq(res.count, 2, "one result per statement of the write");
    gs_client_results_free(&res);
    gs_client_params qa = gs_client_named(an, av, 1);
    OK(gs_client_query_named(db, "byOwner", &qa, NULL, &r, err));
    cr_assert_eq(gs_client_rows_count(r), 1);
    cr_assert_eq(gs_client_rows_get(r, 0, gs_client_rows_column_index(r, "qty"))->u.i, 9);
    gs_client_rows_free(r);

    /* the generic call */
    gs_client_request req;
    gs_client_request_init(&req, GS_CLIENT_OP_QUERY);
    req.sql = "SELECT 41 + 1 AS answer";
    gs_client_response resp;
    OK(gs_client_call(db, &req, &resp, err));
    cr_assert_eq(gs_client_rows_get(resp.rows, 0, 0)->u.i, 42);
    gs_client_response_clear(&resp);
    gs_client_close(c);
}

Test(client_calls, every_call_over_http, .init = start_server, .fini = stop_server)
{
    calls(GS_CLIENT_TRANSPORT_HTTP);
}

Test(client_calls, every_call_over_websocket, .init = start_server, .fini = stop_server)
{
    calls(GS_CLIENT_TRANSPORT_WEBSOCKET);
}

static void values(gs_client_transport t)
{
    gs_client *c = open_client(t, NULL);
    gs_client_db *db = db_of(c);
    gs_client_exec ex;
    OK(gs_client_execute(db, "CREATE TABLE v (id INTEGER PRIMARY KEY, x)", NULL, NULL, &ex, err));
    uint8_t blob[300];
    for (size_t i = 0; i < sizeof blob; i++)
        blob[i] = (uint8_t)(i * 7);
    gs_value in[] = {
        gs_client_val_int(INT64_MAX),
        gs_client_val_int(INT64_MIN),
        gs_client_val_int(9007199254740993LL),
        gs_client_val_int(-9007199254740993LL),
        gs_client_val_int(9007199254740991LL),
        gs_client_val_int(0),
        gs_client_val_double(0.1),
        gs_client_val_double(-1.5e300),
        gs_client_val_double(2.0),
        gs_client_val_text(""),
        gs_client_val_text("snow ☃ and emoji 😀"),
        gs_client_val_text("{\"__sirannon_int\":\"1\"}"),
        gs_client_val_blob(blob, sizeof blob),
        gs_client_val_blob("\0\0", 2),
        gs_client_val_null(),
    };
    size_t n = sizeof in / sizeof in[0];
    for (size_t i = 0; i < n; i++) {
        gs_client_params p = gs_client_positional(&in[i], 1);
        OK(gs_client_execute(db, "INSERT INTO v (x) VALUES (?)", &p, NULL, &ex, err));
    }
    gs_client_rows *r;
    OK(gs_client_query(db, "SELECT x, typeof(x) AS t FROM v ORDER BY id", NULL, NULL, &r, err));
    cr_assert_eq(gs_client_rows_count(r), n);
    for (size_t i = 0; i < n; i++) {
        const gs_value *v = gs_client_rows_get(r, i, 0);
        const char *sqltype = gs_client_rows_get(r, i, 1)->u.text.ptr;
        if (in[i].type == GS_VALUE_DOUBLE && in[i].u.d == 2.0) {
            /* Stored as REAL (the client sent 2.0), but JSON numbers carry no type and the
             * server writes it as 2: it comes back as the integer 2. */
            cr_assert_str_eq(sqltype, "real");
            cr_assert(v->type == GS_VALUE_INT && v->u.i == 2, "row %zu", i);
            continue;
        }
        cr_assert_eq(v->type, in[i].type, "row %zu: type %d, want %d (%s)", i, v->type, in[i].type,
                     sqltype);
        switch (v->type) {
        case GS_VALUE_INT:
            cr_assert_eq(v->u.i, in[i].u.i, "row %zu", i);
            cr_assert_str_eq(sqltype, "integer");
            break;
        case GS_VALUE_DOUBLE:
            cr_assert(v->u.d == in[i].u.d, "row %zu: %.17g", i, v->u.d);
            cr_assert_str_eq(sqltype, "real", "row %zu: REAL stays REAL", i);
            break;
        case GS_VALUE_TEXT:
            cr_assert_eq(v->u.text.len, in[i].u.text.len, "row %zu", i);
            cr_assert(!memcmp(v->u.text.ptr, in[i].u.text.ptr, v->u.text.len), "row %zu", i);
            cr_assert_str_eq(sqltype, "text");
            break;
        case GS_VALUE_BLOB:
            cr_assert_eq(v->u.blob.len, in[i].u.blob.len, "row %zu", i);
            cr_assert(!memcmp(v->u.blob.ptr, in[i].u.blob.ptr, v->u.blob.len), "row %zu", i);
            cr_assert_str_eq(sqltype, "blob");
            break;
        default: cr_assert_str_eq(sqltype, "null"); break;
        }
    }
    gs_client_rows_free(r);
    /* Bind parameters in a WHERE clause find the exact 64-bit value. */
    gs_value big = gs_client_val_int(9007199254740993LL);
    gs_client_params bp = gs_client_positional(&big, 1);
    OK(gs_client_query(db, "SELECT count(*) AS n FROM v WHERE x = ?", &bp, NULL, &r, err));
    cr_assert_eq(gs_client_rows_get(r, 0, 0)->u.i, 1);
    gs_client_rows_free(r);
    /* lastInsertRowId beyond 2^53 arrives undecoded as a decimal string. */
    OK(gs_client_execute(db, "INSERT INTO v (id, x) VALUES (9007199254740999, 1)", NULL, NULL, &ex,
                         err));
    cr_assert_eq(ex.last_insert_rowid, 9007199254740999LL);
    cr_assert_str_eq(ex.last_insert_rowid_text, "9007199254740999");
    gs_client_close(c);
}

Test(client_values, round_trip_over_http, .init = start_server, .fini = stop_server)
{
    values(GS_CLIENT_TRANSPORT_HTTP);
}

Test(client_values, round_trip_over_websocket, .init = start_server, .fini = stop_server)
{
    values(GS_CLIENT_TRANSPORT_WEBSOCKET);
}

static void expect_error(gs_status st, const gs_error *err, const char *code, int http_status)
{
    cr_assert_eq(st, GS_ERROR, "expected %s", code);
    cr_assert_str_eq(err->code, code, "%s: %s", err->code, err->message);
    cr_assert_eq(err->status, http_status, "%s: status %d", code, err->status);
    cr_assert(err->message[0], "a message for a person");
}

static void errors(gs_client_transport t)
{
    int http = t == GS_CLIENT_TRANSPORT_HTTP;
    gs_client *c = open_client(t, NULL);
    gs_client_db *db = db_of(c);
    gs_error err;
    gs_client_rows *r;
    gs_client_exec ex;
    expect_error(gs_client_query(db, "SELECT * FROM missing", NULL, NULL, &r, &err), &err,
                 "QUERY_ERROR", http ? 400 : 0);
    cr_assert(strstr(err.message, "missing"), "%s", err.message);
    expect_error(gs_client_query(db, "SELECT * FROM _sirannon_changes", NULL, NULL, &r, &err), &err,
                 "FORBIDDEN_SQL", http ? 403 : 0);
    expect_error(gs_client_execute(db, "INSERT INTO nowhere VALUES (1)", NULL, NULL, &ex, &err),
                 &err, "QUERY_ERROR", http ? 400 : 0);
    expect_error(gs_client_query_named(db, "noSuchRead", NULL, NULL, &r, &err), &err,
                 "UNKNOWN_QUERY", http ? 404 : 0);
    expect_error(gs_client_query_named(db, "byOwner", NULL, NULL, &r, &err), &err,
                 "MISSING_ARGUMENT", http ? 400 : 0);
    gs_client_results res;
    gs_client_stmt bad[] = {{"CREATE TABLE tx (a)", {0}}, {"INSERT INTO nope VALUES (1)", {0}}};
    gs_status st = gs_client_transaction(db, bad, 2, NULL, &res, &err);
    cr_assert_eq(st, GS_ERROR);
    cr_assert(!strcmp(err.code, "QUERY_ERROR") || !strcmp(err.code, "TRANSACTION_ERROR"), "%s",
              err.code);
    /* the transaction rolled back */
    cr_assert_eq(gs_client_query(db, "SELECT * FROM tx", NULL, NULL, &r, &err), GS_ERROR);
    /* an unknown database */
    gs_client_db *other = gs_client_database(c, "nope", &err);
    st = gs_client_query(other, "SELECT 1", NULL, NULL, &r, &err);
    cr_assert_eq(st, GS_ERROR);
    if (http)
        expect_error(st, &err, "DATABASE_NOT_FOUND", 404);
    else
        cr_assert(strstr(err.message, "DATABASE_NOT_FOUND") &&
                      !strcmp(err.code, "CONNECTION_ERROR"),
                  "%s: %s", err.code, err.message);
    /* the connection to main still works */
    OK(gs_client_query(db, "SELECT 1 AS one", NULL, NULL, &r, err));
    gs_client_rows_free(r);
    /* timeouts: a query that runs for seconds, a 100 ms budget */
    gs_client_call_opts o;
    gs_client_call_opts_init(&o);
    o.timeout_ms = 100;
    long long t0 = gst_now_ms();
    st = gs_client_query(db,
                         "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                         "WHERE i < 2000000) SELECT count(*) FROM n",
                         NULL, &o, &r, &err);
    long long took = gst_now_ms() - t0;
    expect_error(st, &err, "TIMEOUT", 0);
    cr_assert_lt(took, 5000, "the timeout fired after %lld ms", took);
    gs_client_close(c);
}

Test(client_errors, codes_over_http, .init = start_server, .fini = stop_server)
{
    errors(GS_CLIENT_TRANSPORT_HTTP);
}

Test(client_errors, codes_over_websocket, .init = start_server, .fini = stop_server)
{
    errors(GS_CLIENT_TRANSPORT_WEBSOCKET);
}

static void start_no_sql(void)
{
    cr_assert_eq(gst_server_start(&srv, NULL, OPERATIONS, NULL, 0), 0, "server start");
}

static void no_sql(gs_client_transport t)
{
    gs_client *c = open_client(t, NULL);
    gs_client_db *db = db_of(c);
    gs_error err;
    gs_client_rows *r;
    gs_client_exec ex;
    gs_client_results res;
    gs_client_load_result lr;
    gs_value one = gs_client_val_int(1);
    gs_client_params p = gs_client_positional(&one, 1);
    gs_client_stmt s = {"SELECT 1", {0}};
    /* Refused before anything is sent (status 0: no server answered it). */
    expect_error(gs_client_query(db, "SELECT 1", NULL, NULL, &r, &err), &err, "SQL_NOT_ACCEPTED",
                 0);
    expect_error(gs_client_execute(db, "SELECT 1", NULL, NULL, &ex, &err), &err, "SQL_NOT_ACCEPTED",
                 0);
    expect_error(gs_client_transaction(db, &s, 1, NULL, &res, &err), &err, "SQL_NOT_ACCEPTED", 0);
    expect_error(gs_client_batch(db, "SELECT ?", &p, 1, NULL, &res, &err), &err, "SQL_NOT_ACCEPTED",
                 0);
    expect_error(gs_client_load(db, "SELECT ?", &p, 1, NULL, &lr, &err), &err, "SQL_NOT_ACCEPTED",
                 0);
    cr_assert(!gst_log_contains(&srv, "/db/main/query"), "no statement reached the server");
    /* Registered operations still run (the table does not exist: the server's own error). */
    const char *an[] = {"owner"};
    gs_value av = gs_client_val_text("x");
    gs_client_params args = gs_client_named(an, &av, 1);
    gs_status st = gs_client_query_named(db, "byOwner", &args, NULL, &r, &err);
    cr_assert_eq(st, GS_ERROR);
    cr_assert_str_eq(err.code, "QUERY_ERROR", "%s: %s", err.code, err.message);
    /* Without the capability check the server refuses on its own. */
    gs_client_close(c);
    gs_client_config cfg;
    gs_client_config_init(&cfg);
    cfg.check_capabilities = 0;
    c = open_client(t, &cfg);
    db = db_of(c);
    expect_error(gs_client_query(db, "SELECT 1", NULL, NULL, &r, &err), &err, "SQL_NOT_ACCEPTED",
                 t == GS_CLIENT_TRANSPORT_HTTP ? 403 : 0);
    gs_client_close(c);
}

Test(client_sql_refusal, over_http, .init = start_no_sql, .fini = stop_server)
{
    no_sql(GS_CLIENT_TRANSPORT_HTTP);
}

Test(client_sql_refusal, over_websocket, .init = start_no_sql, .fini = stop_server)
{
    no_sql(GS_CLIENT_TRANSPORT_WEBSOCKET);
}

static void start_auth(void)
{
    const char *plugins = "  - name: tokens\n    plugin: auth_token\n    kind: hook\n"
                          "    config:\n      tokens:\n"
                          "        - { token: app-token, name: alice, databases: [main] }\n";
    cr_assert_eq(gst_server_start(&srv, plugins, NULL, NULL, 1), 0, "server start");
}

Test(client_auth, bearer_token_and_refusals, .init = start_auth, .fini = stop_server)
{
    gs_error err;
    gs_client_rows *r;
    gs_client_config cfg;
    for (int t = 0; t < 2; t++) {
        gs_client_transport tr = t ? GS_CLIENT_TRANSPORT_WEBSOCKET : GS_CLIENT_TRANSPORT_HTTP;
        gs_client_config_init(&cfg);
        cfg.bearer_token = "app-token";
        gs_client *c = open_client(tr, &cfg);
        OK(gs_client_query(db_of(c), "SELECT 1 AS one", NULL, NULL, &r, err));
        gs_client_rows_free(r);
        gs_client_close(c);
        /* no token */
        c = open_client(tr, NULL);
        gs_client_db *db = db_of(c);
        gs_status st = gs_client_query(db, "SELECT 1 AS one", NULL, NULL, &r, &err);
        cr_assert_eq(st, GS_ERROR);
        if (tr == GS_CLIENT_TRANSPORT_HTTP) {
            cr_assert_eq(err.status, 401, "%d %s", err.status, err.code);
        } else {
            cr_assert_str_eq(err.code, "UNAUTHORIZED", "%s: %s", err.code, err.message);
            cr_assert(strstr(err.details, "4401"), "%s", err.details);
            /* refused for good: later calls fail at once with the same code */
            long long t0 = gst_now_ms();
            cr_assert_eq(gs_client_query(db, "SELECT 1", NULL, NULL, &r, &err), GS_ERROR);
            cr_assert_str_eq(err.code, "UNAUTHORIZED");
            cr_assert_lt(gst_now_ms() - t0, 1000);
        }
        gs_client_close(c);
    }
}

Test(client_websocket, subprotocols_offered, .init = start_server, .fini = stop_server)
{
    gs_client_config cfg;
    gs_client_config_init(&cfg);
    const char *protos[] = {"bearer.token-value"};
    cfg.ws_protocols = protos;
    cfg.ws_protocol_count = 1;
    const char *hdrs[] = {"X-Trace: abc"};
    cfg.headers = hdrs;
    cfg.header_count = 1;
    gs_client *c = open_client(GS_CLIENT_TRANSPORT_WEBSOCKET, &cfg);
    gs_client_rows *r;
    /* The server selects sirannon.v1 (offered first); the client checks it. */
    OK(gs_client_query(db_of(c), "SELECT 'ok' AS v", NULL, NULL, &r, err));
    cr_assert_str_eq(gs_client_rows_get(r, 0, 0)->u.text.ptr, "ok");
    gs_client_rows_free(r);
    gs_client_close(c);
}
