/* The client's pure parts, no server: URLs, the tagged value codec both ways, WebSocket
 * framing and the handshake key, rows, configuration and request validation. */
#include <criterion/criterion.h>

#include "cl_internal.h"
#include "cl_ws.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

Test(client_url, parses_and_normalises)
{
    cl_url u;
    gs_error err;
    cr_assert_eq(cl_url_parse("http://127.0.0.1:9876/", &u, &err), GS_OK);
    cr_assert_str_eq(u.host, "127.0.0.1");
    cr_assert_eq(u.port, 9876);
    cr_assert_str_eq(u.prefix, "");
    cr_assert(!u.tls && !u.ws);
    cl_url_clear(&u);
    cr_assert_eq(cl_url_parse("wss://[::1]/base//", &u, &err), GS_OK);
    cr_assert_str_eq(u.host, "::1");
    cr_assert_eq(u.port, 443);
    cr_assert_str_eq(u.prefix, "/base");
    cr_assert(u.tls && u.ws);
    cl_url_clear(&u);
    const char *bad[] = {"",
                         "127.0.0.1:80",
                         "ftp://x",
                         "http://",
                         "http://h:0",
                         "http://h:70000",
                         "http://h:12x",
                         "http://u@h",
                         "http://h/p?q=1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(cl_url_parse(bad[i], &u, &err), GS_ERROR, "%s accepted", bad[i]);
        cr_assert_str_eq(err.code, "INVALID_ARGUMENT");
    }
    gs_buf b;
    gs_buf_init(&b);
    cl_url_encode(&b, "a b/c?d=é~*'()");
    cr_assert_str_eq(b.data, "a%20b%2Fc%3Fd%3D%C3%A9~*'()");
    gs_buf_free(&b);
}

static char *encode(const gs_value *v)
{
    gs_buf b;
    gs_buf_init(&b);
    cl_value_encode(&b, v);
    return gs_buf_take(&b, NULL);
}

/* Encode, parse the JSON, decode: the value must come back identical. */
static void roundtrip(gs_value v)
{
    char *t = encode(&v);
    json_t *j = json_loads(t, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    cr_assert(j, "not JSON: %s", t);
    long sz = cl_value_size(j);
    cr_assert_geq(sz, 0);
    char *store = gs_malloc((size_t)sz + 1);
    char *p = store;
    gs_value back;
    cr_assert_eq(cl_value_decode(j, &back, &p), 0, "decode %s", t);
    cr_assert_eq(back.type, v.type, "type of %s", t);
    switch (v.type) {
    case GS_VALUE_INT: cr_assert_eq(back.u.i, v.u.i, "%s", t); break;
    case GS_VALUE_DOUBLE:
        cr_assert(back.u.d == v.u.d && signbit(back.u.d) == signbit(v.u.d), "%s", t);
        break;
    case GS_VALUE_TEXT:
        cr_assert_eq(back.u.text.len, v.u.text.len);
        cr_assert(!memcmp(back.u.text.ptr, v.u.text.ptr, v.u.text.len));
        break;
    case GS_VALUE_BLOB:
        cr_assert_eq(back.u.blob.len, v.u.blob.len);
        cr_assert(!v.u.blob.len || !memcmp(back.u.blob.ptr, v.u.blob.ptr, v.u.blob.len));
        break;
    default: break;
    }
    json_decref(j);
    gs_free(store);
    gs_free(t);
}

Test(client_value, encodes_per_spec)
{
    gs_value v = gs_client_val_int(GS_SAFE_INT_MAX);
    char *t = encode(&v);
    cr_assert_str_eq(t, "9007199254740991");
    gs_free(t);
    v = gs_client_val_int(GS_SAFE_INT_MAX + 1);
    t = encode(&v);
    cr_assert_str_eq(t, "{\"__sirannon_int\":\"9007199254740992\"}");
    gs_free(t);
    v = gs_client_val_int(INT64_MIN);
    t = encode(&v);
    cr_assert_str_eq(t, "{\"__sirannon_int\":\"-9223372036854775808\"}");
    gs_free(t);
    v = gs_client_val_blob("\x00\xab\xff", 3);
    t = encode(&v);
    cr_assert_str_eq(t, "{\"__sirannon_blob\":\"00ABFF\"}");
    gs_free(t);
    v = gs_client_val_blob(NULL, 0);
    t = encode(&v);
    cr_assert_str_eq(t, "{\"__sirannon_blob\":\"\"}");
    gs_free(t);
    v = gs_client_val_double(2.0);
    t = encode(&v);
    cr_assert_str_eq(t, "2.0", "a REAL stays a REAL on the wire: %s", t);
    gs_free(t);
    v = gs_client_val_textn("a\0b\"", 4);
    t = encode(&v);
    cr_assert_str_eq(t, "\"a\\u0000b\\\"\"");
    gs_free(t);
    v = gs_client_val_null();
    t = encode(&v);
    cr_assert_str_eq(t, "null");
    gs_free(t);
}

Test(client_value, round_trips)
{
    int64_t ints[] = {0,
                      1,
                      -1,
                      GS_SAFE_INT_MAX,
                      -GS_SAFE_INT_MAX,
                      GS_SAFE_INT_MAX + 1,
                      -GS_SAFE_INT_MAX - 1,
                      INT64_MAX,
                      INT64_MIN};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        roundtrip(gs_client_val_int(ints[i]));
    double ds[] = {0.1, -0.0, 1e300, -1e-300, DBL_MAX, DBL_MIN, 2.5, 3.0, 1e21};
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++)
        roundtrip(gs_client_val_double(ds[i]));
    roundtrip(gs_client_val_text(""));
    roundtrip(gs_client_val_text("héllo ✓ 😀"));
    roundtrip(gs_client_val_textn("nul\0inside", 10));
    roundtrip(gs_client_val_text("{\"__sirannon_int\":\"5\"}")); /* text, not an envelope */
    uint8_t blob[256];
    for (int i = 0; i < 256; i++)
        blob[i] = (uint8_t)i;
    roundtrip(gs_client_val_blob(blob, sizeof blob));
    roundtrip(gs_client_val_blob(NULL, 0));
    roundtrip(gs_client_val_null());
}

Test(client_value, rejects_malformed_envelopes)
{
    const char *bad[] = {"{\"__sirannon_int\":\"12x\"}",
                         "{\"__sirannon_int\":\"\"}",
                         "{\"__sirannon_int\":\"99999999999999999999\"}",
                         "{\"__sirannon_int\":5}",
                         "{\"__sirannon_blob\":\"ABC\"}",
                         "{\"__sirannon_blob\":\"ZZ\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *j = json_loads(bad[i], 0, NULL);
        cr_assert(j);
        long sz = cl_value_size(j);
        if (sz >= 0) {
            char *store = gs_malloc((size_t)sz + 1);
            char *p = store;
            gs_value v;
            cr_assert_eq(cl_value_decode(j, &v, &p), -1, "%s decoded", bad[i]);
            gs_free(store);
        }
        json_decref(j);
    }
    /* A row holding one is INVALID_RESPONSE. */
    json_t *rows = json_loads("[{\"a\":{\"__sirannon_blob\":\"A\"}}]", 0, NULL);
    gs_client_rows *r;
    gs_error err;
    cr_assert_eq(cl_rows_from_json(rows, &r, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_RESPONSE");
    json_decref(rows);
}

Test(client_value, params_encode)
{
    gs_value v[] = {gs_client_val_int(1), gs_client_val_text("x")};
    const char *names[] = {":a", "b"};
    gs_buf b;
    gs_buf_init(&b);
    gs_error err;
    gs_client_params p = gs_client_named(names, v, 2);
    cr_assert_eq(cl_params_encode(&b, &p, &err), GS_OK);
    cr_assert_str_eq(b.data, "{\"a\":1,\"b\":\"x\"}");
    gs_buf_reset(&b);
    p = gs_client_positional(v, 2);
    cr_assert_eq(cl_params_encode(&b, &p, &err), GS_OK);
    cr_assert_str_eq(b.data, "[1,\"x\"]");
    gs_buf_free(&b);
}

Test(client_rows, columns_views_and_live_ops)
{
    json_t *arr =
        json_loads("[{\"id\":1,\"name\":\"a\"},{\"name\":\"b\",\"id\":2,\"extra\":true}]", 0, NULL);
    gs_client_rows *r;
    gs_error err;
    cr_assert_eq(cl_rows_from_json(arr, &r, &err), GS_OK);
    json_decref(arr);
    cr_assert_eq(gs_client_rows_count(r), 2);
    cr_assert_eq(gs_client_rows_columns(r), 3);
    cr_assert_str_eq(gs_client_rows_column_name(r, 0), "id");
    cr_assert_eq(gs_client_rows_column_index(r, "extra"), 2);
    cr_assert_eq(gs_client_rows_column_index(r, "nope"), -1);
    cr_assert_eq(gs_client_rows_get(r, 0, 2)->type, GS_VALUE_NULL, "absent key reads NULL");
    cr_assert_eq(gs_client_rows_get(r, 1, 0)->u.i, 2);
    cr_assert_str_eq(gs_client_rows_get(r, 1, 1)->u.text.ptr, "b");
    cr_assert_eq(gs_client_rows_get(r, 9, 9)->type, GS_VALUE_NULL, "out of range reads NULL");
    gs_client_row row = gs_client_rows_row(r, 1);
    cr_assert_eq(row.count, 3);
    cr_assert_str_eq(row.columns[2], "extra");
    json_t *o = json_loads("{\"id\":3,\"name\":\"c\"}", 0, NULL);
    cr_assert_eq(cl_rows_insert(r, 0, o, &err), GS_OK);
    cr_assert_eq(cl_rows_insert(r, 9, o, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_RESPONSE");
    cr_assert_eq(cl_rows_update(r, 2, o, &err), GS_OK);
    cr_assert_eq(cl_rows_delete(r, 1), GS_OK);
    cr_assert_eq(cl_rows_delete(r, 5), GS_ERROR);
    json_decref(o);
    cr_assert_eq(gs_client_rows_count(r), 2);
    gs_client_rows *copy = cl_rows_copy(r);
    char *js = gs_client_rows_to_json(copy);
    cr_assert_str_eq(js, "[{\"id\":3,\"name\":\"c\",\"extra\":null},"
                         "{\"id\":3,\"name\":\"c\",\"extra\":null}]");
    gs_client_free(js);
    gs_client_rows_free(copy);
    gs_client_rows_free(r);
}

Test(client_ws_frame, handshake_key_and_frames)
{
    char accept[29];
    /* RFC 6455 section 1.3's example. */
    cr_assert_eq(cl_ws_accept_for("dGhlIHNhbXBsZSBub25jZQ==", accept), 0);
    cr_assert_str_eq(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    char key[25];
    cr_assert_eq(cl_ws_make_key(key), 0);
    cr_assert_eq(strlen(key), 24);
    size_t sizes[] = {0, 5, 125, 126, 65535, 65536, 200000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        char *payload = gs_malloc(n + 1);
        for (size_t i = 0; i < n; i++)
            payload[i] = (char)('a' + i % 26);
        gs_buf b;
        gs_buf_init(&b);
        cl_ws_frame_append(&b, CL_WS_TEXT, payload, n);
        cl_ws_frame_hdr h;
        cr_assert_eq(cl_ws_frame_parse((uint8_t *)b.data, 1, &h), 0, "needs more");
        cr_assert_eq(cl_ws_frame_parse((uint8_t *)b.data, b.len, &h), 1);
        cr_assert(h.fin && h.masked && h.opcode == CL_WS_TEXT && h.len == n);
        cr_assert_eq(h.header_len + n, b.len);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq((char)(b.data[h.header_len + i] ^ h.mask[i & 3]), payload[i]);
        gs_buf_free(&b);
        gs_free(payload);
    }
    /* Protocol errors: RSV bits, long control frame, fragmented control, reserved opcode. */
    uint8_t rsv[] = {0xC1, 0x00};
    uint8_t longping[] = {0x89, 126, 0, 200};
    uint8_t fragping[] = {0x09, 0x00};
    uint8_t op3[] = {0x83, 0x00};
    cl_ws_frame_hdr h;
    cr_assert_eq(cl_ws_frame_parse(rsv, 2, &h), -1);
    cr_assert_eq(cl_ws_frame_parse(longping, 4, &h), -1);
    cr_assert_eq(cl_ws_frame_parse(fragping, 2, &h), -1);
    cr_assert_eq(cl_ws_frame_parse(op3, 2, &h), -1);
}

Test(client_ws, reconnect_backoff_doubles_up_to_the_cap)
{
    int64_t want[] = {1000, 2000, 4000, 8000, 16000, 30000, 30000};
    for (int i = 0; i < 7; i++)
        cr_assert_eq(cl_ws_backoff_delay(1000, 30000, i), want[i], "step %d", i);
    cr_assert_eq(cl_ws_backoff_delay(1000, 30000, 1000), 30000, "no overflow on long outages");
    cr_assert_eq(cl_ws_backoff_delay(0, 0, 3), 1, "a zero interval still waits");
    cr_assert_eq(cl_ws_backoff_delay(500, 100, 2), 500, "a cap below the interval");
}

static const char *url1[] = {"http://127.0.0.1:1"};

Test(client_config, refuses_bad_options)
{
    gs_client *c;
    gs_error err;
    gs_client_config cfg;
    gs_client_config_init(&cfg);
    cfg.mode = GS_CLIENT_MODE_SINGLE;
    cfg.read_preference = GS_CLIENT_READ_NEAREST;
    cr_assert_eq(gs_client_open(url1, 1, &cfg, &c, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_ARGUMENT");
    cr_assert(strstr(err.message, "readPreference"), "%s", err.message);

    gs_client_config_init(&cfg);
    const char *protos[] = {"bearer.secret-token", "has space"};
    cfg.ws_protocols = protos;
    cfg.ws_protocol_count = 2;
    cr_assert_eq(gs_client_open(url1, 1, &cfg, &c, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_ARGUMENT");
    cr_assert(strstr(err.message, "webSocketProtocols"), "%s", err.message);
    cr_assert(!strstr(err.message, "has space"), "the value stays out of the message");
    const char *dup[] = {"tok", "tok"};
    cfg.ws_protocols = dup;
    cr_assert_eq(gs_client_open(url1, 1, &cfg, &c, &err), GS_ERROR);
    cr_assert(strstr(err.message, "webSocketProtocols[1]"), "%s", err.message);

    gs_client_config_init(&cfg);
    const char *hdrs[] = {"X-Bad\r\nInjected: 1"};
    cfg.headers = hdrs;
    cfg.header_count = 1;
    cr_assert_eq(gs_client_open(url1, 1, &cfg, &c, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_ARGUMENT");

    gs_client_config_init(&cfg);
    cfg.read_concern = "strong";
    cr_assert_eq(gs_client_open(url1, 1, &cfg, &c, &err), GS_ERROR);
    const char *wsurl[] = {"ws://127.0.0.1:1"};
    gs_client_config_init(&cfg);
    cfg.transport = GS_CLIENT_TRANSPORT_HTTP;
    cr_assert_eq(gs_client_open(wsurl, 1, &cfg, &c, &err), GS_ERROR);
    cr_assert_eq(gs_client_open(NULL, 0, NULL, &c, &err), GS_ERROR);
    const char *badurl[] = {"nope"};
    cr_assert_eq(gs_client_open(badurl, 1, NULL, &c, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_ARGUMENT");
}

Test(client_config, validates_requests_before_the_network)
{
    gs_client *c;
    gs_error err;
    gs_client_config cfg;
    gs_client_config_init(&cfg);
    cfg.transport = GS_CLIENT_TRANSPORT_HTTP;
    cr_assert_eq(gs_client_open(url1, 1, &cfg, &c, &err), GS_OK);
    gs_client_db *db = gs_client_database(c, "main", &err);
    cr_assert(db);
    cr_assert_eq(gs_client_database(c, "main", &err), db, "database() is cached");
    gs_client_results res;
    cr_assert_eq(gs_client_transaction(db, NULL, 0, NULL, &res, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_ARGUMENT");
    cr_assert_eq(gs_client_batch(db, "INSERT INTO t VALUES (?)", NULL, 0, NULL, &res, &err),
                 GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_ARGUMENT");
    gs_client_load_result lr;
    gs_value one = gs_client_val_int(1);
    gs_client_params p = gs_client_positional(&one, 1);
    cr_assert_eq(gs_client_load_all(db, "INSERT INTO t VALUES (?)", &p, 1, -5, NULL, &lr, &err),
                 GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_ARGUMENT");
    gs_client_rows *rows;
    cr_assert_eq(gs_client_query(db, "", NULL, NULL, &rows, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_ARGUMENT");
    cr_assert_eq(gs_client_query_named(db, "byOwner", &p, NULL, &rows, &err), GS_ERROR,
                 "positional args for a registered operation");
    gs_client_call_opts o;
    gs_client_call_opts_init(&o);
    o.read_concern = "strongest";
    cr_assert_eq(gs_client_query(db, "SELECT 1", NULL, &o, &rows, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_ARGUMENT");
    /* Over HTTP, subscriptions and live queries are TRANSPORT_ERROR. */
    gs_client_sub *sub;
    cr_assert_eq(gs_client_subscribe(db, "t", NULL, NULL, (gs_client_event_fn)1, NULL, &sub, &err),
                 GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    gs_client_live *lq;
    cr_assert_eq(gs_client_live_open(db, "op", NULL, (gs_client_live_fn)1, NULL, &lq, &err),
                 GS_ERROR);
    cr_assert_str_eq(err.code, "TRANSPORT_ERROR");
    /* Nothing listens on port 1: a connection error, with the URL in the message. */
    cr_assert_eq(gs_client_query(db, "SELECT 1", NULL, NULL, &rows, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "CONNECTION_ERROR");
    gs_client_close(c);
}
