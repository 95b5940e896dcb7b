/* WebSocket sessions (core/src/api/ws.c): the upgrade (path, subprotocol, authenticate hook,
 * database, shutdown), message validation and dispatch with every error code of spec 05,
 * statements through the shared runner, change subscriptions, live queries, backpressure and
 * the session's lifetime, all against a fake sink over a real registry in a temp directory.
 * Every wait is bounded. */
#include "api/api.h"
#include "api/api_internal.h"
#include "api/ws.h"
#include "api/ws_message.h"
#include "base/alloc.h"
#include "base/error.h"
#include "db/cdc.h"
#include "db/registry.h"
#include "test_support.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 20000

static char tmpdir[64];

/* ---- a fake sink: records frames and closes; can refuse sends ---- */

typedef struct frame {
    struct frame *next;
    json_t *json;
    char *text;
} frame;

typedef struct fake_sink {
    pthread_mutex_t m;
    pthread_cond_t c;
    frame *head, *tail;
    int nframes;
    int close_code;
    char close_reason[256];
    int closes;
    int refuse_after; /* > 0: sends past this many answer GS_AGAIN */
    int sends;
    int gone;       /* the test returned from gs_ws_close */
    int violations; /* sink calls after gs_ws_close returned */
    gs_ws_sink sink;
} fake_sink;

static gs_status sink_send(void *user, const char *data, size_t len)
{
    fake_sink *f = user;
    pthread_mutex_lock(&f->m);
    if (f->gone)
        f->violations++;
    f->sends++;
    if (f->refuse_after > 0 && f->sends > f->refuse_after) {
        pthread_mutex_unlock(&f->m);
        return GS_AGAIN;
    }
    frame *fr = calloc(1, sizeof *fr);
    fr->text = strndup(data, len);
    json_error_t je;
    fr->json = json_loadb(data, len, 0, &je);
    if (!fr->json)
        cr_log_error("frame is not JSON: %.*s", (int)len, data);
    if (f->tail)
        f->tail->next = fr;
    else
        f->head = fr;
    f->tail = fr;
    f->nframes++;
    pthread_cond_broadcast(&f->c);
    pthread_mutex_unlock(&f->m);
    return GS_OK;
}

static void sink_close(void *user, int code, const char *reason)
{
    fake_sink *f = user;
    pthread_mutex_lock(&f->m);
    if (f->gone)
        f->violations++;
    f->closes++;
    f->close_code = code;
    snprintf(f->close_reason, sizeof f->close_reason, "%s", reason ? reason : "");
    pthread_cond_broadcast(&f->c);
    pthread_mutex_unlock(&f->m);
}

static void sink_init(fake_sink *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->m, NULL);
    pthread_cond_init(&f->c, NULL);
    f->sink.struct_size = sizeof f->sink;
    f->sink.user = f;
    f->sink.send = sink_send;
    f->sink.close = sink_close;
}

static void sink_free(fake_sink *f)
{
    frame *fr = f->head;
    while (fr) {
        frame *n = fr->next;
        json_decref(fr->json);
        free(fr->text);
        free(fr);
        fr = n;
    }
    pthread_mutex_destroy(&f->m);
    pthread_cond_destroy(&f->c);
}

/* Take the first frame that pred accepts (any frame when pred is NULL), waiting for it at
 * most WAIT_MS; NULL then. Frames it passes over stay queued. The caller json_decrefs it. */
static json_t *take_frame(fake_sink *f, int (*pred)(json_t *, const void *), const void *arg)
{
    int64_t deadline = gs_test_now_ms() + WAIT_MS;
    pthread_mutex_lock(&f->m);
    frame *fr = NULL, *prev = NULL;
    for (;;) {
        prev = NULL;
        for (fr = f->head; fr; prev = fr, fr = fr->next)
            if (!pred || (fr->json && pred(fr->json, arg)))
                break;
        if (fr || gs_test_now_ms() >= deadline)
            break;
        struct timespec ts = gs_test_realtime_in(20);
        pthread_cond_timedwait(&f->c, &f->m, &ts);
    }
    if (fr) {
        if (prev)
            prev->next = fr->next;
        else
            f->head = fr->next;
        if (f->tail == fr)
            f->tail = prev;
    }
    pthread_mutex_unlock(&f->m);
    if (!fr)
        return NULL;
    json_t *j = fr->json;
    free(fr->text);
    free(fr);
    return j;
}

/* Like take_frame, without waiting. */
static json_t *take_frame_now(fake_sink *f, int (*pred)(json_t *, const void *), const void *arg)
{
    json_t *j = NULL;
    pthread_mutex_lock(&f->m);
    frame *prev = NULL;
    for (frame *fr = f->head; fr; prev = fr, fr = fr->next)
        if (fr->json && pred(fr->json, arg)) {
            if (prev)
                prev->next = fr->next;
            else
                f->head = fr->next;
            if (f->tail == fr)
                f->tail = prev;
            j = fr->json;
            free(fr->text);
            free(fr);
            break;
        }
    pthread_mutex_unlock(&f->m);
    return j;
}

static json_t *next_frame(fake_sink *f)
{
    return take_frame(f, NULL, NULL);
}

static const char *str(json_t *j, const char *key);

/* A reply to the request `id` (result, error, subscribed, unsubscribed). */
static int is_reply(json_t *j, const void *id)
{
    const char *t = json_string_value(json_object_get(j, "type"));
    const char *i = json_string_value(json_object_get(j, "id"));
    return t && i && strcmp(i, id) == 0 && strcmp(t, "change") != 0 && strcmp(t, "live") != 0;
}

typedef struct type_id {
    const char *type, *id;
} type_id;

static int is_type_id(json_t *j, const void *arg)
{
    const type_id *ti = arg;
    const char *t = json_string_value(json_object_get(j, "type"));
    const char *i = json_string_value(json_object_get(j, "id"));
    return t && i && strcmp(t, ti->type) == 0 && strcmp(i, ti->id) == 0;
}

/* Wait until cond(f) holds (under the sink lock), at most WAIT_MS. */
static int wait_for(fake_sink *f, int (*cond)(fake_sink *))
{
    int64_t deadline = gs_test_now_ms() + WAIT_MS;
    pthread_mutex_lock(&f->m);
    int ok;
    while (!(ok = cond(f)) && gs_test_now_ms() < deadline) {
        struct timespec ts = gs_test_realtime_in(20);
        pthread_cond_timedwait(&f->c, &f->m, &ts);
    }
    pthread_mutex_unlock(&f->m);
    return ok;
}

static int has_close(fake_sink *f)
{
    return f->closes > 0;
}

/* ---- a hook: authenticates by the Authorization header ---- */

static char seen_protocol[256];

static gs_status hook_create(const gs_host *host, const void *config, void **instance,
                             gs_error *err)
{
    (void)host;
    (void)config;
    (void)err;
    *instance = NULL;
    return GS_OK;
}

static void hook_destroy(void *instance)
{
    (void)instance;
}

static gs_status hook_auth(void *instance, const gs_auth_context *ctx, char **identity,
                           gs_error *err)
{
    (void)instance;
    const char *auth = NULL;
    seen_protocol[0] = '\0';
    for (size_t i = 0; i < ctx->header_count; i++) {
        if (strcasecmp(ctx->headers[i].name, "authorization") == 0)
            auth = ctx->headers[i].value;
        if (strcasecmp(ctx->headers[i].name, "sec-websocket-protocol") == 0)
            snprintf(seen_protocol, sizeof seen_protocol, "%s", ctx->headers[i].value);
    }
    if (!auth)
        return GS_DECLINED;
    if (strcmp(auth, "Bearer alice") == 0) {
        *identity = gs_strdup("{\"sub\":\"alice\"}");
        return GS_OK;
    }
    if (strcmp(auth, "Bearer forbidden") == 0) {
        gs_error_set(err, 403, "FORBIDDEN_TENANT", "alice may not open this database");
        return GS_ERROR;
    }
    if (strcmp(auth, "Bearer long") == 0) {
        char msg[400];
        memset(msg, 'x', sizeof msg - 1);
        msg[sizeof msg - 1] = '\0';
        gs_error_set(err, 401, "UNAUTHORIZED", "%s", msg);
        return GS_ERROR;
    }
    if (strcmp(auth, "Bearer teapot") == 0) {
        gs_error_set(err, 418, "TEAPOT", "no coffee here");
        return GS_ERROR;
    }
    if (strcmp(auth, "Bearer broken") == 0) {
        gs_error_set(err, 0, "", "the hook fell over");
        return GS_ERROR;
    }
    gs_error_set(err, 401, "UNAUTHORIZED", "unknown token");
    return GS_ERROR;
}

static gs_status hook_before(void *instance, const gs_query_context *ctx, gs_error *err)
{
    (void)instance;
    if (strstr(ctx->sql, "denied_by_hook"))
        return gs_error_set(err, 0, "HOOK_DENIED", "the test hook denies this statement");
    return GS_OK;
}

static const gs_hook_vtable hook_vt = {.struct_size = sizeof hook_vt,
                                       .create = hook_create,
                                       .destroy = hook_destroy,
                                       .authenticate = hook_auth,
                                       .before_query = hook_before};

/* ---- fixture ---- */

static gs_registry *reg;
static gs_api *api;

static void make_ro_file(const char *path)
{
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "CREATE TABLE t(x INTEGER)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static gs_operations *make_ops(void)
{
    gs_operations *ops = gs_operations_new();
    gs_error err;
    gs_error_init(&err);
    char *s1[] = {"SELECT id, owner, qty FROM items WHERE owner = :owner ORDER BY id"};
    char *a1[] = {"owner"};
    gs_operation r1 = {.database = "main",
                       .name = "byOwner",
                       .kind = GS_OP_READ,
                       .statements = s1,
                       .statement_count = 1,
                       .args = a1,
                       .arg_count = 1};
    cr_assert_eq(gs_operations_add(ops, &r1, &err), GS_OK, "%s", err.message);
    char *s2[] = {"SELECT id, qty FROM items WHERE owner = :who ORDER BY id"};
    char *ia[] = {"who"}, *ifld[] = {"sub"};
    gs_operation r2 = {.database = "main",
                       .name = "mine",
                       .kind = GS_OP_READ,
                       .statements = s2,
                       .statement_count = 1,
                       .identity_args = ia,
                       .identity_fields = ifld,
                       .identity_count = 1};
    cr_assert_eq(gs_operations_add(ops, &r2, &err), GS_OK, "%s", err.message);
    char *s3[] = {"SELECT owner, count(*) AS n FROM items GROUP BY owner"};
    gs_operation r3 = {.database = "main",
                       .name = "counts",
                       .kind = GS_OP_READ,
                       .statements = s3,
                       .statement_count = 1};
    cr_assert_eq(gs_operations_add(ops, &r3, &err), GS_OK, "%s", err.message);
    char *s4[] = {"INSERT INTO items(owner, qty) VALUES (:owner, :qty)",
                  "UPDATE items SET qty = qty + 1 WHERE owner = :owner"};
    char *a4[] = {"owner", "qty"};
    gs_operation w1 = {.database = "main",
                       .name = "add",
                       .kind = GS_OP_WRITE,
                       .statements = s4,
                       .statement_count = 2,
                       .args = a4,
                       .arg_count = 2};
    cr_assert_eq(gs_operations_add(ops, &w1, &err), GS_OK, "%s", err.message);
    cr_assert_eq(gs_operations_build(ops, &err), GS_OK);
    return ops;
}

static gs_api *make_api(int accept_sql)
{
    gs_api_hook hook = {.name = "test", .vt = &hook_vt, .instance = NULL};
    gs_api_options ao;
    memset(&ao, 0, sizeof ao);
    ao.accept_sql = accept_sql;
    ao.max_body_bytes = 1048576;
    ao.hooks = &hook;
    ao.hook_count = 1;
    ao.operations = make_ops();
    gs_api *a = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_api_new(&ao, reg, &a, &err), GS_OK, "%s", err.message);
    return a;
}

static void setup(void)
{
    gs_test_mkdtemp(tmpdir, sizeof tmpdir, "ws");
    gs_registry_options ro;
    gs_registry_options_default(&ro);
    reg = gs_registry_new(&ro);
    cr_assert_not_null(reg);
    gs_error err;
    gs_error_init(&err);
    char path[160];
    gs_db_options o;
    gs_db_options_default(&o);
    o.read_pool_size = 2;
    o.cdc_fallback_poll_ms = 200;
    snprintf(path, sizeof path, "%s/main.db", tmpdir);
    cr_assert_eq(gs_registry_open(reg, "main", path, &o, &err), GS_OK, "%s", err.message);
    snprintf(path, sizeof path, "%s/ro.db", tmpdir);
    make_ro_file(path);
    gs_db_options r = o;
    r.read_only = 1;
    cr_assert_eq(gs_registry_open(reg, "ro", path, &r, &err), GS_OK, "%s", err.message);
    cr_assert_eq(gs_registry_open(reg, "mem", ":memory:", &o, &err), GS_OK, "%s", err.message);
    gs_db_options sh = o;
    sh.cdc_retention_ms = 1; /* everything the feed has passed is pruned at the next turn */
    snprintf(path, sizeof path, "%s/short.db", tmpdir);
    cr_assert_eq(gs_registry_open(reg, "short", path, &sh, &err), GS_OK, "%s", err.message);
    api = make_api(1);
}

/* Sessions a failed test left open; teardown closes them so the fixture never hangs. */
static void *open_sessions[16];
static gs_api *open_apis[16];

static void track(gs_api *a, void *session, int add)
{
    for (int i = 0; i < 16; i++) {
        if (add && !open_sessions[i]) {
            open_sessions[i] = session;
            open_apis[i] = a;
            return;
        }
        if (!add && open_sessions[i] == session) {
            open_sessions[i] = NULL;
            return;
        }
    }
}

static void teardown(void)
{
    for (int i = 0; i < 16; i++)
        if (open_sessions[i]) {
            gs_ws_close(open_apis[i], open_sessions[i]);
            open_sessions[i] = NULL;
        }
    int left = 0;
    if (api) {
        gs_api_begin_shutdown(api);
        left = gs_api_wait_idle(api, WAIT_MS);
        if (!left)
            gs_api_free(api);
        api = NULL;
    }
    gs_registry_shutdown(reg);
    gs_registry_free(reg);
    gs_test_rmtree(tmpdir);
    cr_assert_eq(left, 0, "sessions or requests left running");
}

TestSuite(ws, .init = setup, .fini = teardown, .timeout = 120);

/* ---- helpers ---- */

typedef struct conn {
    fake_sink f;
    void *session;
} conn;

static gs_status open_with(gs_api *a, conn *c, const char *path, const gs_header *h, size_t nh,
                           gs_ws_open_result *res, gs_error *err)
{
    sink_init(&c->f);
    gs_ws_open_request req = {.struct_size = sizeof req,
                              .path = path,
                              .headers = h,
                              .header_count = nh,
                              .remote_address = "127.0.0.1:5000",
                              .sink = &c->f.sink};
    memset(res, 0, sizeof *res);
    res->struct_size = sizeof *res;
    gs_error_init(err);
    gs_status st = gs_ws_open(a, &req, res, err);
    c->session = st == GS_OK ? res->session : NULL;
    if (c->session)
        track(a, c->session, 1);
    return st;
}

static void open_main(conn *c)
{
    gs_header h[] = {{"Sec-WebSocket-Protocol", "sirannon.v1"}, {"Authorization", "Bearer alice"}};
    gs_ws_open_result res;
    gs_error err;
    cr_assert_eq(open_with(api, c, "/db/main", h, 2, &res, &err), GS_OK, "%s: %s", err.code,
                 err.message);
    cr_assert_str_eq(res.subprotocol, "sirannon.v1");
}

static void close_conn(gs_api *a, conn *c)
{
    if (c->session) {
        track(a, c->session, 0);
        gs_ws_close(a, c->session);
    }
    pthread_mutex_lock(&c->f.m);
    c->f.gone = 1;
    pthread_mutex_unlock(&c->f.m);
    c->session = NULL;
}

static void finish_conn(conn *c)
{
    cr_assert_eq(c->f.violations, 0, "the sink was called after gs_ws_close returned");
    sink_free(&c->f);
}

static void sendf(conn *c, const char *text)
{
    gs_ws_message(api, c->session, text, strlen(text));
}

static const char *str(json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : "";
}

/* Send one message and expect an error frame with `code` echoing `id`. */
static void expect_error(conn *c, const char *msg, const char *id, const char *code)
{
    sendf(c, msg);
    json_t *j = take_frame(&c->f, is_reply, id);
    cr_assert_not_null(j, "no answer to %s", msg);
    cr_assert_str_eq(str(j, "type"), "error", "to %s: %s", msg, json_dumps(j, 0));
    cr_assert_str_eq(str(j, "id"), id, "to %s", msg);
    json_t *e = json_object_get(j, "error");
    cr_assert_str_eq(str(e, "code"), code, "to %s: %s", msg, str(e, "message"));
    cr_assert(strlen(str(e, "message")) > 0);
    json_decref(j);
}

/* Send one message and return the data of its result frame. */
static json_t *expect_result(conn *c, const char *msg, const char *id)
{
    sendf(c, msg);
    json_t *j = take_frame(&c->f, is_reply, id);
    cr_assert_not_null(j, "no answer to %s", msg);
    cr_assert_str_eq(str(j, "type"), "result", "to %s: %s", msg, json_dumps(j, 0));
    cr_assert_str_eq(str(j, "id"), id);
    json_t *d = json_incref(json_object_get(j, "data"));
    json_decref(j);
    return d;
}

static void create_items(conn *c)
{
    json_t *d = expect_result(c,
                              "{\"type\":\"execute\",\"id\":\"mk\",\"sql\":\"CREATE TABLE items("
                              "id INTEGER PRIMARY KEY, owner TEXT, qty INTEGER)\"}",
                              "mk");
    json_decref(d);
}

/* ---- the upgrade ---- */

Test(ws, open_selects_subprotocol_and_passes_the_offer_to_the_hook)
{
    conn c;
    gs_header h[] = {{"sec-websocket-protocol", " bearer.tok ,  sirannon.v1 "},
                     {"authorization", "Bearer alice"}};
    gs_ws_open_result res;
    gs_error err;
    cr_assert_eq(open_with(api, &c, "/db/main", h, 2, &res, &err), GS_OK);
    cr_assert_str_eq(res.subprotocol, "sirannon.v1");
    cr_assert_str_eq(seen_protocol, " bearer.tok ,  sirannon.v1 ");
    close_conn(api, &c);
    finish_conn(&c);

    gs_header none[] = {{"authorization", "Bearer alice"}};
    cr_assert_eq(open_with(api, &c, "/db/main", none, 1, &res, &err), GS_OK);
    cr_assert_null(res.subprotocol);
    close_conn(api, &c);
    finish_conn(&c);
}

Test(ws, open_refuses_an_offer_without_sirannon)
{
    conn c;
    gs_header h[] = {{"Sec-WebSocket-Protocol", "graphql-ws, sirannon.v2"}};
    gs_ws_open_result res;
    gs_error err;
    cr_assert_eq(open_with(api, &c, "/db/main", h, 1, &res, &err), GS_ERROR);
    cr_assert_eq(res.close_code, 0);
    cr_assert_eq(res.http_status, 400);
    cr_assert_str_eq(err.code, "UNSUPPORTED_SUBPROTOCOL");
    json_t *b = json_loads(res.body, 0, NULL);
    cr_assert_str_eq(str(json_object_get(b, "error"), "code"), "UNSUPPORTED_SUBPROTOCOL");
    json_decref(b);
    sink_free(&c.f);
}

Test(ws, open_refuses_other_paths_with_404)
{
    const char *paths[] = {"/db/", "/db/main/query", "/x/main", "/", "/db/ma%zzin"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        conn c;
        gs_ws_open_result res;
        gs_error err;
        cr_assert_eq(open_with(api, &c, paths[i], NULL, 0, &res, &err), GS_ERROR);
        cr_assert_eq(res.http_status, 404, "%s", paths[i]);
        cr_assert_eq(res.close_code, 0);
        cr_assert_str_eq(err.code, "NOT_FOUND");
        cr_assert(strstr(res.body, "\"NOT_FOUND\""));
        sink_free(&c.f);
    }
}

Test(ws, open_auth_refusals_close_4401_4403_or_answer_http)
{
    struct {
        const char *token;
        int close_code, http_status;
        const char *code;
    } cases[] = {{"Bearer nobody", 4401, 0, "UNAUTHORIZED"},
                 {"Bearer forbidden", 4403, 0, "FORBIDDEN_TENANT"},
                 {"Bearer teapot", 0, 418, "TEAPOT"},
                 {"Bearer broken", 0, 500, "HOOK_ERROR"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        conn c;
        gs_header h[] = {{"Authorization", cases[i].token}};
        gs_ws_open_result res;
        gs_error err;
        cr_assert_eq(open_with(api, &c, "/db/main", h, 1, &res, &err), GS_ERROR);
        cr_assert_eq(res.close_code, cases[i].close_code, "%s", cases[i].token);
        cr_assert_eq(res.http_status, cases[i].http_status, "%s", cases[i].token);
        cr_assert_str_eq(err.code, cases[i].code);
        if (res.close_code) {
            char prefix[80];
            snprintf(prefix, sizeof prefix, "%s: ", cases[i].code);
            cr_assert_eq(strncmp(res.reason, prefix, strlen(prefix)), 0, "%s", res.reason);
        } else {
            json_t *b = json_loads(res.body, 0, NULL);
            cr_assert_str_eq(str(json_object_get(b, "error"), "code"), cases[i].code);
            json_decref(b);
        }
        sink_free(&c.f);
    }
    /* a long message is cut to a close frame's 123 bytes */
    conn c;
    gs_header h[] = {{"Authorization", "Bearer long"}};
    gs_ws_open_result res;
    gs_error err;
    cr_assert_eq(open_with(api, &c, "/db/main", h, 1, &res, &err), GS_ERROR);
    cr_assert_eq(res.close_code, 4401);
    cr_assert_eq(strlen(res.reason), 123);
    cr_assert_eq(strncmp(res.reason, "UNAUTHORIZED: xxx", 17), 0);
    sink_free(&c.f);
}

Test(ws, open_unknown_database_closes_1008)
{
    conn c;
    gs_ws_open_result res;
    gs_error err;
    cr_assert_eq(open_with(api, &c, "/db/nope", NULL, 0, &res, &err), GS_ERROR);
    cr_assert_eq(res.close_code, 1008);
    cr_assert_str_eq(err.code, "DATABASE_NOT_FOUND");
    cr_assert_eq(strncmp(res.reason, "DATABASE_NOT_FOUND: ", 20), 0);
    sink_free(&c.f);
}

Test(ws, open_closed_database_closes_1008)
{
    conn c;
    gs_error err;
    gs_error_init(&err);
    gs_database *db = gs_registry_acquire(reg, "ro", &err);
    cr_assert_not_null(db);
    gs_db_close(db); /* closed, still registered */
    gs_ws_open_result res;
    cr_assert_eq(open_with(api, &c, "/db/ro", NULL, 0, &res, &err), GS_ERROR);
    gs_registry_release(reg, db);
    cr_assert_eq(res.close_code, 1008);
    cr_assert_str_eq(err.code, "DATABASE_CLOSED");
    sink_free(&c.f);
}

Test(ws, shutdown_closes_sessions_1013_and_refuses_upgrades)
{
    conn a, b;
    open_main(&a);
    open_main(&b);
    gs_api_begin_shutdown(api);
    cr_assert(wait_for(&a.f, has_close));
    cr_assert(wait_for(&b.f, has_close));
    cr_assert_eq(a.f.close_code, 1013);
    cr_assert_eq(strncmp(a.f.close_reason, "HANDLER_CLOSED: ", 16), 0);
    cr_assert_eq(b.f.close_code, 1013);
    conn c;
    gs_ws_open_result res;
    gs_error err;
    cr_assert_eq(open_with(api, &c, "/db/main", NULL, 0, &res, &err), GS_ERROR);
    cr_assert_eq(res.close_code, 1013);
    sink_free(&c.f);
    /* the sessions count as work in flight until the transport closes them */
    cr_assert_eq(gs_api_wait_idle(api, 50), 2);
    close_conn(api, &a);
    close_conn(api, &b);
    cr_assert_eq(gs_api_wait_idle(api, WAIT_MS), 0);
    finish_conn(&a);
    finish_conn(&b);
}

/* ---- message validation ---- */

Test(ws, validation_errors)
{
    conn c;
    open_main(&c);
    expect_error(&c, "{\"type\":", "", "INVALID_JSON");
    expect_error(&c, "[1,2]", "", "INVALID_MESSAGE");
    expect_error(&c, "\"query\"", "", "INVALID_MESSAGE");
    expect_error(&c, "{\"id\":\"a\"}", "a", "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":7,\"id\":\"a\"}", "a", "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"query\"}", "", "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"query\",\"id\":42}", "42", "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"frobnicate\",\"id\":\"b\"}", "b", "UNKNOWN_TYPE");
    expect_error(&c, "{\"type\":\"transaction\",\"id\":\"c\",\"name\":\"add\"}", "c",
                 "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"query\",\"id\":\"d\",\"name\":5}", "d", "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"query\",\"id\":\"e\"}", "e", "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"query\",\"id\":\"e\",\"sql\":\"\"}", "e", "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"query\",\"id\":\"f\",\"sql\":\"SELECT 1\",\"params\":3}", "f",
                 "INVALID_MESSAGE");
    expect_error(&c,
                 "{\"type\":\"query\",\"id\":\"g\",\"sql\":\"SELECT ?\",\"params\":"
                 "[{\"__sirannon_int\":\"12x\"}]}",
                 "g", "INVALID_MESSAGE");
    expect_error(&c,
                 "{\"type\":\"query\",\"id\":\"h\",\"sql\":\"SELECT ?\",\"params\":"
                 "[{\"__sirannon_blob\":\"ABC\"}]}",
                 "h", "INVALID_MESSAGE");
    expect_error(&c,
                 "{\"type\":\"query\",\"id\":\"i\",\"sql\":\"SELECT 1\",\"readConcern\":"
                 "{\"level\":\"eventual\"}}",
                 "i", "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"query\",\"id\":\"i2\",\"sql\":\"SELECT 1\",\"readConcern\":1}",
                 "i2", "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"transaction\",\"id\":\"j\",\"statements\":[]}", "j",
                 "INVALID_MESSAGE");
    expect_error(&c,
                 "{\"type\":\"transaction\",\"id\":\"j2\",\"statements\":[{\"sql\":\"SELECT ?\","
                 "\"params\":[{\"__sirannon_int\":\"99999999999999999999\"}]}]}",
                 "j2", "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"batch\",\"id\":\"k\",\"sql\":\"x\",\"paramsBatch\":[]}", "k",
                 "INVALID_MESSAGE");
    expect_error(&c,
                 "{\"type\":\"batch\",\"id\":\"k2\",\"sql\":\"x\",\"paramsBatch\":"
                 "[[{\"__sirannon_blob\":1}]]}",
                 "k2", "INVALID_MESSAGE");
    expect_error(&c,
                 "{\"type\":\"load\",\"id\":\"l\",\"sql\":\"x\",\"paramsBatch\":[[1]],"
                 "\"durability\":\"full\"}",
                 "l", "INVALID_MESSAGE");
    expect_error(&c,
                 "{\"type\":\"load\",\"id\":\"l2\",\"sql\":\"x\",\"paramsBatch\":[[1]],"
                 "\"checkpoint\":\"yes\"}",
                 "l2", "INVALID_MESSAGE");
    expect_error(&c,
                 "{\"type\":\"execute\",\"id\":\"m\",\"sql\":\"x\",\"writeConcern\":"
                 "{\"level\":\"some\"}}",
                 "m", "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"query\",\"id\":\"n\",\"name\":\"byOwner\",\"args\":[1]}", "n",
                 "INVALID_MESSAGE");
    expect_error(&c,
                 "{\"type\":\"query\",\"id\":\"n2\",\"name\":\"byOwner\",\"args\":{\"owner\":"
                 "{\"__sirannon_int\":\"x\"}}}",
                 "n2", "INVALID_MESSAGE");
    /* subscribe shapes */
    expect_error(&c, "{\"type\":\"subscribe\",\"id\":\"s1\"}", "s1", "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"subscribe\",\"id\":\"s2\",\"table\":3}", "s2", "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"subscribe\",\"id\":\"s3\",\"table\":\"t\",\"filter\":[1]}", "s3",
                 "INVALID_MESSAGE");
    expect_error(&c,
                 "{\"type\":\"subscribe\",\"id\":\"s4\",\"table\":\"t\",\"filter\":{\"a\":"
                 "{\"__sirannon_blob\":\"G0\"}}}",
                 "s4", "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"subscribe\",\"id\":\"s5\",\"table\":\"t\",\"sinceSeq\":12}", "s5",
                 "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"subscribe\",\"id\":\"s6\",\"table\":\"t\",\"sinceSeq\":\"-1\"}",
                 "s6", "INVALID_MESSAGE");
    expect_error(&c,
                 "{\"type\":\"subscribe\",\"id\":\"s7\",\"table\":\"t\",\"sinceSeq\":"
                 "\"18446744073709551616\"}",
                 "s7", "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"subscribe\",\"id\":\"s8\",\"table\":\"t\",\"epoch\":1}", "s8",
                 "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"subscribe\",\"id\":\"s9\",\"tables\":[\"a\",\"b\"]}", "s9",
                 "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"subscribe\",\"id\":\"s10\",\"tables\":[],\"deviceId\":\"d\"}",
                 "s10", "INVALID_MESSAGE");
    {
        /* 501 names */
        char big[8192] = "{\"type\":\"subscribe\",\"id\":\"s11\",\"deviceId\":\"d\",\"tables\":[";
        for (int i = 0; i < 501; i++)
            strcat(big, i ? ",\"t\"" : "\"t\"");
        strcat(big, "]}");
        expect_error(&c, big, "s11", "INVALID_MESSAGE");
    }
    expect_error(&c,
                 "{\"type\":\"subscribe\",\"id\":\"s12\",\"table\":\"t\",\"stagedStream\":true}",
                 "s12", "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"subscribe\",\"id\":\"s13\",\"name\":\"byOwner\",\"table\":\"t\"}",
                 "s13", "INVALID_MESSAGE");
    expect_error(&c,
                 "{\"type\":\"subscribe\",\"id\":\"s14\",\"name\":\"byOwner\",\"sinceSeq\":\"1\"}",
                 "s14", "INVALID_MESSAGE");
    expect_error(&c,
                 "{\"type\":\"subscribe\",\"id\":\"s15\",\"name\":\"byOwner\",\"registryDigest\":"
                 "1}",
                 "s15", "INVALID_MESSAGE");
    expect_error(&c, "{\"type\":\"ack\",\"id\":\"a1\",\"deviceId\":\"d\"}", "a1",
                 "INVALID_MESSAGE");
    /* device sync is not served */
    expect_error(&c, "{\"type\":\"ack\",\"id\":\"a2\",\"deviceId\":\"d\",\"seq\":\"4\"}", "a2",
                 "SYNC_UNSUPPORTED");
    expect_error(&c, "{\"type\":\"subscribe\",\"id\":\"s16\",\"table\":\"t\",\"deviceId\":\"d\"}",
                 "s16", "SYNC_UNSUPPORTED");
    expect_error(&c,
                 "{\"type\":\"subscribe\",\"id\":\"s17\",\"tables\":[\"a\",\"b\"],\"deviceId\":"
                 "\"d\"}",
                 "s17", "SYNC_UNSUPPORTED");
    close_conn(api, &c);
    finish_conn(&c);
}

Test(ws, too_large_answers_payload_too_large)
{
    conn c;
    open_main(&c);
    gs_ws_too_large(api, c.session);
    json_t *j = next_frame(&c.f);
    cr_assert_not_null(j);
    cr_assert_str_eq(str(j, "type"), "error");
    cr_assert_str_eq(str(j, "id"), "");
    cr_assert_str_eq(str(json_object_get(j, "error"), "code"), "PAYLOAD_TOO_LARGE");
    json_decref(j);
    close_conn(api, &c);
    finish_conn(&c);
}

Test(ws, sql_not_accepted_when_accept_sql_is_off)
{
    gs_api *strict = make_api(0);
    gs_api *keep = api;
    api = strict;
    conn c;
    open_main(&c);
    const char *msgs[] = {
        "{\"type\":\"query\",\"id\":\"1\",\"sql\":\"SELECT 1\"}",
        "{\"type\":\"execute\",\"id\":\"1\",\"sql\":\"SELECT 1\"}",
        "{\"type\":\"transaction\",\"id\":\"1\",\"statements\":[{\"sql\":\"SELECT 1\"}]}",
        "{\"type\":\"batch\",\"id\":\"1\",\"sql\":\"x\",\"paramsBatch\":[[1]]}",
        "{\"type\":\"load\",\"id\":\"1\",\"sql\":\"x\",\"paramsBatch\":[[1]]}",
        /* malformed SQL messages are refused for SQL first */
        "{\"type\":\"query\",\"id\":\"1\",\"sql\":5}",
    };
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++)
        expect_error(&c, msgs[i], "1", "SQL_NOT_ACCEPTED");
    /* registered operations still run */
    expect_error(&c,
                 "{\"type\":\"query\",\"id\":\"2\",\"name\":\"byOwner\",\"args\":{\"owner\":1}}",
                 "2", "QUERY_ERROR"); /* no table yet: the statement reached the database */
    close_conn(api, &c);
    finish_conn(&c);
    api = keep;
    gs_api_begin_shutdown(strict);
    cr_assert_eq(gs_api_wait_idle(strict, WAIT_MS), 0);
    gs_api_free(strict);
}

/* ---- statements ---- */

Test(ws, statements_answer_result_frames)
{
    conn c;
    open_main(&c);
    create_items(&c);
    json_t *d = expect_result(&c,
                              "{\"type\":\"execute\",\"id\":\"e1\",\"sql\":\"INSERT INTO items("
                              "owner, qty) VALUES (?, ?)\",\"params\":[\"alice\",1]}",
                              "e1");
    cr_assert_eq(json_integer_value(json_object_get(d, "changes")), 1);
    cr_assert_eq(json_integer_value(json_object_get(d, "lastInsertRowId")), 1);
    json_decref(d);
    d = expect_result(&c,
                      "{\"type\":\"transaction\",\"id\":\"t1\",\"statements\":[{\"sql\":\"INSERT "
                      "INTO items(owner, qty) VALUES ('bob', 2)\"},{\"sql\":\"UPDATE items SET qty "
                      "= qty + 1\"}]}",
                      "t1");
    json_t *results = json_object_get(d, "results");
    cr_assert_eq(json_array_size(results), 2);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(results, 1), "changes")), 2);
    json_decref(d);
    d = expect_result(&c,
                      "{\"type\":\"batch\",\"id\":\"b1\",\"sql\":\"INSERT INTO items(owner, qty) "
                      "VALUES (:o, :q)\",\"paramsBatch\":[{\"o\":\"carol\",\"q\":1},{\"o\":\"dan\","
                      "\"q\":{\"__sirannon_int\":\"9007199254740993\"}}]}",
                      "b1");
    cr_assert_eq(json_array_size(json_object_get(d, "results")), 2);
    json_decref(d);
    d = expect_result(&c,
                      "{\"type\":\"load\",\"id\":\"l1\",\"sql\":\"INSERT INTO items(owner, qty) "
                      "VALUES (?, ?)\",\"paramsBatch\":[[\"e\",1],[\"f\",2],[\"g\",3]]}",
                      "l1");
    cr_assert_eq(json_integer_value(json_object_get(d, "rowsLoaded")), 3);
    json_decref(d);
    d = expect_result(&c,
                      "{\"type\":\"query\",\"id\":\"q1\",\"sql\":\"SELECT owner, qty FROM items "
                      "WHERE owner = ?\",\"params\":[\"dan\"],\"readConcern\":{\"level\":\"local\"}"
                      "}",
                      "q1");
    json_t *rows = json_object_get(d, "rows");
    cr_assert_eq(json_array_size(rows), 1);
    cr_assert_str_eq(str(json_object_get(json_array_get(rows, 0), "qty"), "__sirannon_int"),
                     "9007199254740993");
    json_decref(d);
    expect_error(&c, "{\"type\":\"query\",\"id\":\"q2\",\"sql\":\"SELECT * FROM nowhere\"}", "q2",
                 "QUERY_ERROR");
    expect_error(&c, "{\"type\":\"query\",\"id\":\"q3\",\"sql\":\"SELECT * FROM _sirannon_meta\"}",
                 "q3", "FORBIDDEN_SQL");
    expect_error(&c, "{\"type\":\"query\",\"id\":\"q4\",\"sql\":\"SELECT 'denied_by_hook'\"}", "q4",
                 "HOOK_DENIED");
    close_conn(api, &c);
    finish_conn(&c);
}

Test(ws, registered_operations_resolve_against_the_upgrade_identity)
{
    conn c;
    open_main(&c); /* identity {"sub":"alice"} */
    create_items(&c);
    json_t *d = expect_result(
        &c,
        "{\"type\":\"execute\",\"id\":\"w\",\"name\":\"add\",\"args\":{\"owner\":\"alice\","
        "\"qty\":5}}",
        "w");
    cr_assert_eq(json_array_size(json_object_get(d, "results")), 2);
    json_decref(d);
    d = expect_result(&c,
                      "{\"type\":\"query\",\"id\":\"r\",\"name\":\"byOwner\",\"args\":{\"owner\":"
                      "\"alice\"}}",
                      "r");
    cr_assert_eq(
        json_integer_value(json_object_get(json_array_get(json_object_get(d, "rows"), 0), "qty")),
        6);
    json_decref(d);
    d = expect_result(&c, "{\"type\":\"query\",\"id\":\"m\",\"name\":\"mine\"}", "m");
    cr_assert_eq(json_array_size(json_object_get(d, "rows")), 1);
    json_decref(d);
    expect_error(&c, "{\"type\":\"query\",\"id\":\"u\",\"name\":\"nope\"}", "u", "UNKNOWN_QUERY");
    expect_error(&c, "{\"type\":\"execute\",\"id\":\"u2\",\"name\":\"byOwner\"}", "u2",
                 "UNKNOWN_QUERY");
    expect_error(&c, "{\"type\":\"query\",\"id\":\"ma\",\"name\":\"byOwner\"}", "ma",
                 "MISSING_ARGUMENT");
    expect_error(&c,
                 "{\"type\":\"query\",\"id\":\"na\",\"name\":\"byOwner\",\"args\":{\"owner\":1,"
                 "\"x\":2}}",
                 "na", "ARGUMENT_NOT_ALLOWED");
    expect_error(&c, "{\"type\":\"query\",\"id\":\"na2\",\"name\":\"mine\",\"args\":{\"who\":1}}",
                 "na2", "ARGUMENT_NOT_ALLOWED");
    close_conn(api, &c);
    finish_conn(&c);

    /* anonymous: an operation filled from identity has nothing to take */
    gs_ws_open_result res;
    gs_error err;
    cr_assert_eq(open_with(api, &c, "/db/main", NULL, 0, &res, &err), GS_OK);
    expect_error(&c, "{\"type\":\"query\",\"id\":\"ir\",\"name\":\"mine\"}", "ir",
                 "IDENTITY_REQUIRED");
    close_conn(api, &c);
    finish_conn(&c);
}

Test(ws, many_requests_in_flight_each_answered_once)
{
    conn c;
    open_main(&c);
    create_items(&c);
    enum { N = 400 };
    char msg[256];
    for (int i = 0; i < N; i++) {
        if (i % 2)
            snprintf(msg, sizeof msg,
                     "{\"type\":\"execute\",\"id\":\"r%d\",\"sql\":\"INSERT INTO items(owner, qty)"
                     " VALUES ('x', %d)\"}",
                     i, i);
        else
            snprintf(msg, sizeof msg,
                     "{\"type\":\"query\",\"id\":\"r%d\",\"sql\":\"SELECT %d AS v\"}", i, i);
        sendf(&c, msg);
    }
    static int seen[N];
    memset(seen, 0, sizeof seen);
    for (int k = 0; k < N; k++) {
        json_t *j = next_frame(&c.f);
        cr_assert_not_null(j, "only %d of %d answers", k, N);
        cr_assert_str_eq(str(j, "type"), "result");
        int i = atoi(str(j, "id") + 1);
        cr_assert(i >= 0 && i < N);
        seen[i]++;
        json_t *data = json_object_get(j, "data");
        if (i % 2 == 0)
            cr_assert_eq(json_integer_value(json_object_get(
                             json_array_get(json_object_get(data, "rows"), 0), "v")),
                         i);
        else
            cr_assert_eq(json_integer_value(json_object_get(data, "changes")), 1);
        json_decref(j);
    }
    for (int i = 0; i < N; i++)
        cr_assert_eq(seen[i], 1, "request %d answered %d times", i, seen[i]);
    close_conn(api, &c);
    finish_conn(&c);
}

Test(ws, close_with_requests_in_flight_never_calls_the_sink_afterwards)
{
    for (int round = 0; round < 20; round++) {
        conn c;
        open_main(&c);
        for (int i = 0; i < 50; i++)
            sendf(&c, "{\"type\":\"query\",\"id\":\"q\",\"sql\":\"WITH RECURSIVE n(x) AS (SELECT 1 "
                      "UNION ALL SELECT x+1 FROM n WHERE x < 2000) SELECT count(*) FROM n\"}");
        close_conn(api, &c);
        cr_assert_eq(gs_api_wait_idle(api, WAIT_MS), 0);
        finish_conn(&c);
    }
}

/* ---- change subscriptions ---- */

static json_t *expect_type(conn *c, const char *type, const char *id)
{
    type_id ti = {type, id};
    json_t *j = take_frame(&c->f, is_type_id, &ti);
    cr_assert_not_null(j, "no %s frame", type);
    cr_assert_str_eq(str(j, "type"), type, "%s", json_dumps(j, 0));
    cr_assert_str_eq(str(j, "id"), id);
    return j;
}

Test(ws, subscribe_delivers_changes_with_tx_end)
{
    conn c;
    open_main(&c);
    create_items(&c);
    sendf(&c, "{\"type\":\"subscribe\",\"id\":\"sub\",\"table\":\"items\"}");
    json_t *j = expect_type(&c, "subscribed", "sub");
    cr_assert(strlen(str(j, "seq")) > 0);
    cr_assert(strlen(str(j, "epoch")) > 0);
    cr_assert_null(json_object_get(j, "resync"));
    char epoch[64];
    snprintf(epoch, sizeof epoch, "%s", str(j, "epoch"));
    json_decref(j);
    expect_error(&c, "{\"type\":\"subscribe\",\"id\":\"sub\",\"table\":\"items\"}", "sub",
                 "DUPLICATE_SUBSCRIPTION");

    json_decref(
        expect_result(&c,
                      "{\"type\":\"transaction\",\"id\":\"t\",\"statements\":[{\"sql\":"
                      "\"INSERT INTO items(owner, qty) VALUES ('a', 1)\"},{\"sql\":\"INSERT "
                      "INTO items(owner, qty) VALUES ('b', 2)\"}]}",
                      "t"));
    /* the result and the changes may come in either order: frames are matched by type */
    int changes = 0, ends = 0;
    uint64_t last_seq = 0;
    for (int k = 0; k < 2; k++) {
        j = expect_type(&c, "change", "sub");
        json_t *ev = json_object_get(j, "event");
        cr_assert_str_eq(str(ev, "type"), "insert");
        cr_assert_str_eq(str(ev, "table"), "items");
        uint64_t seq = strtoull(str(ev, "seq"), NULL, 10);
        cr_assert(seq > last_seq);
        last_seq = seq;
        changes++;
        if (json_is_true(json_object_get(ev, "txEnd")))
            ends++;
        if (k == 1)
            cr_assert(json_is_true(json_object_get(ev, "txEnd")), "txEnd on the last change");
        json_decref(j);
    }
    cr_assert_eq(changes, 2);
    cr_assert_eq(ends, 1);

    sendf(&c, "{\"type\":\"unsubscribe\",\"id\":\"sub\"}");
    json_decref(expect_type(&c, "unsubscribed", "sub"));
    expect_error(&c, "{\"type\":\"unsubscribe\",\"id\":\"sub\"}", "sub", "SUBSCRIPTION_NOT_FOUND");

    /* resume from the first change: the second is replayed */
    char msg[256];
    snprintf(msg, sizeof msg,
             "{\"type\":\"subscribe\",\"id\":\"again\",\"table\":\"items\",\"sinceSeq\":\"%llu\","
             "\"epoch\":\"%s\"}",
             (unsigned long long)(last_seq - 1), epoch);
    sendf(&c, msg);
    j = expect_type(&c, "subscribed", "again");
    cr_assert_null(json_object_get(j, "resync"));
    json_decref(j);
    j = expect_type(&c, "change", "again");
    cr_assert_eq(strtoull(str(json_object_get(j, "event"), "seq"), NULL, 10), last_seq);
    json_decref(j);

    /* a foreign epoch forces a resync */
    sendf(&c, "{\"type\":\"subscribe\",\"id\":\"foreign\",\"table\":\"items\",\"sinceSeq\":\"1\","
              "\"epoch\":\"not-this-file\"}");
    j = expect_type(&c, "subscribed", "foreign");
    cr_assert(json_is_true(json_object_get(j, "resync")));
    json_decref(j);
    close_conn(api, &c);
    finish_conn(&c);
}

Test(ws, resume_below_retention_resyncs)
{
    conn c;
    gs_ws_open_result res;
    gs_error err;
    cr_assert_eq(open_with(api, &c, "/db/short", NULL, 0, &res, &err), GS_OK);
    json_decref(expect_result(
        &c, "{\"type\":\"execute\",\"id\":\"k\",\"sql\":\"CREATE TABLE t(x)\"}", "k"));
    sendf(&c, "{\"type\":\"subscribe\",\"id\":\"keep\",\"table\":\"t\"}");
    json_decref(expect_type(&c, "subscribed", "keep"));
    /* every commit is a feed read; retention runs every hundred reads */
    int resynced = 0;
    for (int round = 0; round < 20 && !resynced; round++) {
        for (int i = 0; i < 110; i++) {
            json_decref(expect_result(
                &c, "{\"type\":\"execute\",\"id\":\"w\",\"sql\":\"INSERT INTO t VALUES (1)\"}",
                "w"));
            json_decref(expect_type(&c, "change", "keep"));
        }
        sendf(&c, "{\"type\":\"subscribe\",\"id\":\"old\",\"table\":\"t\",\"sinceSeq\":\"1\"}");
        json_t *j = expect_type(&c, "subscribed", "old");
        resynced = json_is_true(json_object_get(j, "resync"));
        json_decref(j);
        sendf(&c, "{\"type\":\"unsubscribe\",\"id\":\"old\"}");
        json_decref(expect_type(&c, "unsubscribed", "old"));
        /* drop what the resumed subscription replayed before it ended */
        type_id ti = {"change", "old"};
        json_t *x;
        while ((x = take_frame_now(&c.f, is_type_id, &ti)))
            json_decref(x);
    }
    cr_assert(resynced, "a cursor below the retained history never reported resync");
    close_conn(api, &c);
    finish_conn(&c);
}

Test(ws, subscribe_refusals)
{
    conn c;
    open_main(&c);
    expect_error(&c, "{\"type\":\"subscribe\",\"id\":\"x\",\"table\":\"missing\"}", "x",
                 "CDC_ERROR");
    expect_error(&c, "{\"type\":\"subscribe\",\"id\":\"y\",\"table\":\"bad name\"}", "y",
                 "CDC_ERROR");
    close_conn(api, &c);
    finish_conn(&c);

    gs_ws_open_result res;
    gs_error err;
    cr_assert_eq(open_with(api, &c, "/db/ro", NULL, 0, &res, &err), GS_OK);
    expect_error(&c, "{\"type\":\"subscribe\",\"id\":\"r\",\"table\":\"t\"}", "r", "READ_ONLY");
    close_conn(api, &c);
    finish_conn(&c);

    cr_assert_eq(open_with(api, &c, "/db/mem", NULL, 0, &res, &err), GS_OK);
    json_decref(expect_result(
        &c, "{\"type\":\"execute\",\"id\":\"k\",\"sql\":\"CREATE TABLE t(x)\"}", "k"));
    expect_error(&c, "{\"type\":\"subscribe\",\"id\":\"m\",\"table\":\"t\"}", "m",
                 "CDC_UNSUPPORTED");
    close_conn(api, &c);
    finish_conn(&c);
}

static int refused(fake_sink *f)
{
    return f->sends > f->refuse_after;
}

Test(ws, backpressure_stops_sending_and_releases_subscriptions)
{
    conn c;
    open_main(&c);
    create_items(&c);
    sendf(&c, "{\"type\":\"subscribe\",\"id\":\"s\",\"table\":\"items\"}");
    json_decref(expect_type(&c, "subscribed", "s"));
    gs_error err;
    gs_error_init(&err);
    gs_database *db = gs_registry_acquire(reg, "main", &err);
    cr_assert_eq(gs_db_cdc_subscriber_count(db), 1);
    pthread_mutex_lock(&c.f.m);
    c.f.refuse_after = c.f.sends + 3;
    pthread_mutex_unlock(&c.f.m);
    for (int i = 0; i < 20; i++)
        sendf(&c, "{\"type\":\"execute\",\"id\":\"w\",\"sql\":\"INSERT INTO items(owner, qty) "
                  "VALUES ('z', 1)\"}");
    cr_assert(wait_for(&c.f, refused));
    /* the subscription is released without waiting for the transport's close */
    int64_t deadline = gs_test_now_ms() + WAIT_MS;
    while (gs_db_cdc_subscriber_count(db) != 0 && gs_test_now_ms() < deadline)
        usleep(5000);
    cr_assert_eq(gs_db_cdc_subscriber_count(db), 0);
    /* nothing more is sent: the refused send was the last */
    cr_assert(gs_api_wait_idle(api, 200) >= 1); /* the session itself is still open */
    pthread_mutex_lock(&c.f.m);
    int sends = c.f.sends;
    pthread_mutex_unlock(&c.f.m);
    cr_assert_eq(sends, c.f.refuse_after + 1);
    gs_registry_release(reg, db);
    close_conn(api, &c);
    finish_conn(&c);
}

Test(ws, close_releases_subscriptions)
{
    conn c;
    open_main(&c);
    create_items(&c);
    sendf(&c, "{\"type\":\"subscribe\",\"id\":\"s1\",\"table\":\"items\"}");
    sendf(&c, "{\"type\":\"subscribe\",\"id\":\"s2\",\"table\":\"items\",\"filter\":{\"owner\":"
              "\"a\"}}");
    json_decref(expect_type(&c, "subscribed", "s1"));
    json_decref(expect_type(&c, "subscribed", "s2"));
    gs_error err;
    gs_error_init(&err);
    gs_database *db = gs_registry_acquire(reg, "main", &err);
    cr_assert_eq(gs_db_cdc_subscriber_count(db), 2);
    close_conn(api, &c);
    cr_assert_eq(gs_api_wait_idle(api, WAIT_MS), 0);
    cr_assert_eq(gs_db_cdc_subscriber_count(db), 0);
    gs_registry_release(reg, db);
    finish_conn(&c);
}

/* ---- live queries ---- */

Test(ws, live_query_subscribed_rows_then_ops)
{
    conn c;
    open_main(&c);
    create_items(&c);
    json_decref(
        expect_result(&c,
                      "{\"type\":\"execute\",\"id\":\"w\",\"sql\":\"INSERT INTO items(owner,"
                      " qty) VALUES ('alice', 1)\"}",
                      "w"));
    char msg[256];
    snprintf(msg, sizeof msg,
             "{\"type\":\"subscribe\",\"id\":\"lq\",\"name\":\"byOwner\",\"args\":{\"owner\":"
             "\"alice\"},\"registryDigest\":\"%s\"}",
             gs_operations_digest(api->ops));
    sendf(&c, msg);
    json_t *j = expect_type(&c, "subscribed", "lq");
    json_t *rows = json_object_get(j, "rows");
    cr_assert_eq(json_array_size(rows), 1);
    cr_assert_str_eq(str(json_array_get(rows, 0), "owner"), "alice");
    json_decref(j);

    json_decref(expect_result(&c,
                              "{\"type\":\"execute\",\"id\":\"w2\",\"sql\":\"INSERT INTO "
                              "items(owner, qty) VALUES ('alice', 2)\"}",
                              "w2"));
    j = expect_type(&c, "live", "lq");
    json_t *ops = json_object_get(j, "ops");
    cr_assert(json_array_size(ops) >= 1, "%s", json_dumps(j, 0));
    cr_assert_str_eq(str(json_array_get(ops, 0), "op"), "insert");
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(ops, 0), "index")), 1);
    json_decref(j);

    json_decref(expect_result(
        &c, "{\"type\":\"execute\",\"id\":\"w3\",\"sql\":\"DELETE FROM items WHERE qty = 1\"}",
        "w3"));
    j = expect_type(&c, "live", "lq");
    cr_assert_str_eq(str(json_array_get(json_object_get(j, "ops"), 0), "op"), "delete");
    json_decref(j);

    sendf(&c, "{\"type\":\"unsubscribe\",\"id\":\"lq\"}");
    json_decref(expect_type(&c, "unsubscribed", "lq"));
    close_conn(api, &c);
    finish_conn(&c);
}

Test(ws, live_query_refusals)
{
    conn c;
    open_main(&c);
    create_items(&c);
    expect_error(&c,
                 "{\"type\":\"subscribe\",\"id\":\"a\",\"name\":\"byOwner\",\"args\":{\"owner\":"
                 "\"x\"},\"registryDigest\":\"0000\"}",
                 "a", "REGISTRY_MISMATCH");
    expect_error(&c, "{\"type\":\"subscribe\",\"id\":\"b\",\"name\":\"nope\"}", "b",
                 "UNKNOWN_QUERY");
    expect_error(&c, "{\"type\":\"subscribe\",\"id\":\"c\",\"name\":\"byOwner\"}", "c",
                 "MISSING_ARGUMENT");
    expect_error(&c, "{\"type\":\"subscribe\",\"id\":\"d\",\"name\":\"counts\"}", "d", "CDC_ERROR");
    close_conn(api, &c);
    finish_conn(&c);
}
