#include "api.h"
#include "api_internal.h"
#include "../repl/engine.h"

#include "../base/alloc.h"
#include "../base/buf.h"
#include "../base/error.h"
#include "../base/log.h"
#include "body.h"
#include "metrics.h"
#include "route.h"
#include "status.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* One HTTP request in flight: what the answer needs once the database replies. */
typedef struct api_call {
    gs_api *api;
    void (*complete)(void *user, const gs_response *resp);
    void *user;
    char *origin;    /* request Origin, for CORS on the answer */
    gs_database *db; /* held by the backup and sync routes while they answer */
    json_t *identity;
    int64_t started_ns; /* metrics: arrival, route slot and method slot */
    int m_route;
    int m_method;
} api_call;

void gs_api_inflight_add(gs_api *api)
{
    pthread_mutex_lock(&api->mu);
    api->inflight++;
    pthread_mutex_unlock(&api->mu);
}

void gs_api_inflight_done(gs_api *api)
{
    pthread_mutex_lock(&api->mu);
    if (--api->inflight == 0)
        pthread_cond_broadcast(&api->idle);
    pthread_mutex_unlock(&api->mu);
}

static void call_free(api_call *c)
{
    if (c->db)
        gs_registry_release(c->api->reg, c->db);
    json_decref(c->identity);
    gs_free(c->origin);
    gs_free(c);
}

/* CORS headers for a normal answer: Allow-Origin (+ Vary when not "*"). */
static size_t cors_headers(const gs_api *api, const char *origin, gs_header *h, size_t max)
{
    size_t n = 0;
    if (!api->cors.enabled || max < 2)
        return 0;
    const char *allow = NULL;
    if (api->cors.origin_count == 0) {
        allow = "*";
    } else if (api->cors.origin_count == 1) {
        allow = api->cors.origins[0]; /* a single configured origin is sent as is */
    } else if (origin) {
        for (size_t i = 0; i < api->cors.origin_count; i++)
            if (strcmp(api->cors.origins[i], origin) == 0)
                allow = origin;
    }
    if (allow) {
        h[n].name = "Access-Control-Allow-Origin";
        h[n++].value = allow;
    }
    if (!allow || strcmp(allow, "*") != 0) {
        h[n].name = "Vary";
        h[n++].value = "Origin";
    }
    return n;
}

/* Send an answer and end the call. */
static void respond_as(api_call *c, int status, const char *content_type, const char *body,
                       size_t len, const char *retry_after)
{
    gs_header h[8];
    size_t n = cors_headers(c->api, c->origin, h, 6);
    if (retry_after) {
        h[n].name = "Retry-After";
        h[n++].value = retry_after;
    }
    gs_response r = {.struct_size = sizeof r,
                     .status = status,
                     .headers = h,
                     .header_count = n,
                     .content_type = content_type,
                     .body = body,
                     .body_len = len};
    gs_api *api = c->api;
    if (api->metrics)
        gs_metrics_http(api->metrics, c->m_route, c->m_method, status,
                        gs_metrics_now_ns() - c->started_ns);
    c->complete(c->user, &r);
    call_free(c);
    gs_api_inflight_done(api);
}

static void respond(api_call *c, int status, const char *body, size_t len, const char *retry_after)
{
    respond_as(c, status, "application/json", body, len, retry_after);
}

static void respond_error(api_call *c, const gs_error *err)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_error_to_json(err, &b);
    int status = gs_error_status(err);
    if (status >= 500 && strcmp(err->code, "WRITE_OVERLOADED") != 0 &&
        strcmp(err->code, "SHUTDOWN") != 0 && strcmp(err->code, "DATABASE_CLOSED") != 0)
        gs_log(GS_LOG_WARN, "api", "%d %s: %s", status, err->code, err->message);
    if (b.oom) {
        static const char oom[] =
            "{\"error\":{\"code\":\"INTERNAL_ERROR\",\"message\":\"out of memory\"}}";
        respond(c, 500, oom, sizeof oom - 1, NULL);
    } else {
        respond(c, status, b.data, b.len, strcmp(err->code, "WRITE_OVERLOADED") == 0 ? "1" : NULL);
    }
    gs_buf_free(&b);
}

static void respond_code(api_call *c, const char *code, const char *fmt, const char *arg)
{
    gs_error e;
    gs_error_init(&e);
    gs_error_set(&e, 0, code, fmt, arg ? arg : "");
    respond_error(c, &e);
}

static void respond_json(api_call *c, int status, const char *json)
{
    respond(c, status, json, strlen(json), NULL);
}

/* ---- database completion ---- */

void gs_api_append_result(gs_buf *b, gs_api_wrap wrap, const char *json, size_t len)
{
    if (wrap == GS_API_WRAP_RAW) {
        gs_buf_append(b, json, len);
        return;
    }
    gs_buf_puts(b, wrap == GS_API_WRAP_ROWS ? "{\"rows\":" : "{\"results\":");
    gs_buf_append(b, json, len);
    gs_buf_putc(b, '}');
}

static void http_stmt_done(void *user, gs_status st, const gs_error *err, gs_api_wrap wrap,
                           const char *json, size_t len, int retry_after_s)
{
    api_call *c = user;
    (void)retry_after_s; /* WRITE_OVERLOADED answers Retry-After: 1 (respond_error) */
    if (st != GS_OK) {
        respond_error(c, err);
        return;
    }
    if (wrap == GS_API_WRAP_RAW) {
        respond(c, 200, json, len, NULL);
        return;
    }
    gs_buf b;
    gs_buf_init(&b);
    gs_api_append_result(&b, wrap, json, len);
    if (b.oom)
        respond_code(c, "INTERNAL_ERROR", "out of memory building the response%s", "");
    else
        respond(c, 200, b.data, b.len, NULL);
    gs_buf_free(&b);
}

/* ---- hooks ---- */

gs_status gs_api_authenticate(gs_api *api, const gs_auth_context *ctx, json_t **identity,
                              gs_error *err)
{
    *identity = NULL;
    for (size_t i = 0; i < api->hook_count; i++) {
        const gs_api_hook *h = &api->hooks[i];
        if (!GS_HAS_MEMBER(gs_hook_vtable, authenticate, h->vt->struct_size) ||
            !h->vt->authenticate)
            continue;
        char *text = NULL;
        gs_error_init(err);
        gs_status st = h->vt->authenticate(h->instance, ctx, &text, err);
        if (st == GS_DECLINED) {
            gs_free(text);
            continue;
        }
        if (st == GS_OK) {
            if (!text)
                return GS_OK; /* explicitly anonymous */
            json_error_t je;
            json_t *id = json_loads(text, 0, &je);
            gs_free(text);
            if (!json_is_object(id)) {
                json_decref(id);
                return gs_error_set(err, 500, "HOOK_ERROR",
                                    "hook '%s' returned an identity that is not a JSON object",
                                    h->name);
            }
            *identity = id;
            return GS_OK;
        }
        gs_free(text);
        if (err->status <= 0) {
            /* A refusal without a status is a hook failure (spec: 500 HOOK_ERROR). */
            char msg[sizeof err->message];
            memcpy(msg, err->message, sizeof msg);
            return gs_error_set(err, 500, "HOOK_ERROR", "hook '%s' failed: %s", h->name,
                                msg[0] ? msg : "no message");
        }
        if (!err->code[0])
            gs_error_set(err, err->status, "HOOK_ERROR", "hook '%s' refused the request", h->name);
        return GS_ERROR;
    }
    return GS_OK;
}

gs_status gs_api_before_query(gs_api *api, const char *database_id, const char *sql, json_t *params,
                              json_t *identity, int is_write, gs_error *err)
{
    return gs_api_before_query_op(api, database_id, NULL, sql, params, identity, is_write, err);
}

/* beforeQuery: every hook may deny a statement. */
gs_status gs_api_before_query_op(gs_api *api, const char *database_id, const char *operation,
                                 const char *sql, json_t *params, json_t *identity, int is_write,
                                 gs_error *err)
{
    char *params_json = NULL, *identity_json = NULL;
    int any = 0;
    for (size_t i = 0; i < api->hook_count; i++) {
        const gs_api_hook *h = &api->hooks[i];
        if (GS_HAS_MEMBER(gs_hook_vtable, before_query, h->vt->struct_size) && h->vt->before_query)
            any = 1;
    }
    if (!any)
        return GS_OK;
    if (params)
        params_json = json_dumps(params, JSON_COMPACT | JSON_ENCODE_ANY);
    if (identity)
        identity_json = json_dumps(identity, JSON_COMPACT);
    gs_query_context ctx = {.struct_size = sizeof ctx,
                            .database_id = database_id,
                            .sql = sql,
                            .params_json = params_json,
                            .identity_json = identity_json,
                            .is_write = is_write,
                            .operation = operation};
    gs_status result = GS_OK;
    for (size_t i = 0; i < api->hook_count && result == GS_OK; i++) {
        const gs_api_hook *h = &api->hooks[i];
        if (!GS_HAS_MEMBER(gs_hook_vtable, before_query, h->vt->struct_size) ||
            !h->vt->before_query)
            continue;
        gs_error_init(err);
        if (h->vt->before_query(h->instance, &ctx, err) == GS_ERROR) {
            if (!err->code[0])
                gs_error_set(err, 0, "HOOK_DENIED", "hook '%s' denied the statement", h->name);
            result = GS_ERROR;
        }
    }
    free(params_json);
    free(identity_json);
    return result;
}

/* ---- fixed routes ---- */

static void health_ready_one(void *user, gs_database *db)
{
    gs_buf *b = user;
    if (b->data[b->len - 1] != '[')
        gs_buf_putc(b, ',');
    const char *id = gs_db_id(db);
    gs_buf_puts(b, "{\"id\":");
    gs_buf_json_string(b, id, strlen(id));
    gs_buf_printf(b, ",\"readOnly\":%s,\"closed\":%s}", gs_db_is_read_only(db) ? "true" : "false",
                  gs_db_is_closed(db) ? "true" : "false");
}

static void health_closed_one(void *user, gs_database *db)
{
    if (gs_db_is_closed(db))
        *(int *)user = 1;
}

typedef struct health_repl {
    gs_buf section; /* the "replication" object of the replicated database */
    const char *state;
} health_repl;

static void health_repl_one(void *user, gs_database *db)
{
    health_repl *h = user;
    gs_repl_engine *e = gs_db_repl(db);
    if (!e || h->section.len)
        return;
    gs_repl_status_json(e, &h->section);
    h->state = gs_repl_health_state(e);
}

static void serve_health_ready(api_call *c)
{
    int any_closed = 0;
    gs_registry_each(c->api->reg, health_closed_one, &any_closed);
    health_repl h;
    gs_buf_init(&h.section);
    h.state = "healthy";
    gs_registry_each(c->api->reg, health_repl_one, &h);
    /* spec 05: the status is NodeHealth.state with healthy as ok; closed gives degraded */
    const char *status = strcmp(h.state, "healthy") == 0 ? "ok" : h.state;
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_printf(&b, "{\"status\":\"%s\",\"databases\":[",
                  any_closed && strcmp(status, "ok") == 0 ? "degraded" : status);
    gs_registry_each(c->api->reg, health_ready_one, &b);
    gs_buf_puts(&b, "]");
    if (h.section.len) {
        gs_buf_puts(&b, ",\"replication\":");
        gs_buf_append(&b, h.section.data, h.section.len);
    }
    if (c->api->sources_json) {
        /* the node's replication sources (issue 8): state, position and last error of each */
        gs_buf_puts(&b, ",\"sources\":");
        c->api->sources_json(c->api->sources_user, NULL, &b);
    }
    gs_buf_puts(&b, "}");
    if (b.oom || h.section.oom)
        respond_code(c, "INTERNAL_ERROR", "out of memory%s", "");
    else
        respond(c, 200, b.data, b.len, NULL);
    gs_buf_free(&b);
    gs_buf_free(&h.section);
}

static void serve_capabilities(api_call *c)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_buf_puts(&b, "{\"capabilities\":[");
    int first = 1;
    if (gs_operations_count(c->api->ops)) {
        gs_buf_puts(&b, "\"query.named\"");
        first = 0;
    }
    if (c->api->accept_sql)
        gs_buf_puts(&b, first ? "\"query.sql\"" : ",\"query.sql\"");
    gs_buf_putc(&b, ']');
    if (gs_operations_count(c->api->ops))
        gs_buf_printf(&b, ",\"registry\":{\"digest\":\"%s\"}", gs_operations_digest(c->api->ops));
    gs_buf_putc(&b, '}');
    respond(c, 200, b.data, b.len, NULL);
    gs_buf_free(&b);
}

static void serve_preflight(api_call *c, const gs_request *req)
{
    gs_header h[8];
    size_t n = cors_headers(c->api, c->origin, h, 4);
    char max_age[24];
    snprintf(max_age, sizeof max_age, "%lld", (long long)c->api->cors.max_age);
    h[n].name = "Access-Control-Allow-Methods";
    h[n++].value = c->api->cors.methods;
    h[n].name = "Access-Control-Allow-Headers";
    h[n++].value = c->api->cors.headers;
    h[n].name = "Access-Control-Max-Age";
    h[n++].value = max_age;
    gs_response r = {.struct_size = sizeof r,
                     .status = 204,
                     .headers = h,
                     .header_count = n,
                     .content_type = "application/json",
                     .body = "",
                     .body_len = 0};
    (void)req;
    gs_api *api = c->api;
    c->complete(c->user, &r);
    call_free(c);
    gs_api_inflight_done(api);
}

/* ---- /db/{id} routes ---- */

/* ---- the statement runner (HTTP routes and WebSocket messages) ---- */

/* One statement operation between submit and the database's answer. */
typedef struct stmt_run {
    gs_api *api;
    gs_database *acquired; /* released after the answer; NULL when the caller lent db */
    gs_api_wrap wrap;
    gs_api_result_fn done;
    void *user;
    gs_api_after *after; /* the after_query hooks' record, or NULL */
} stmt_run;

static void stmt_run_done(void *user, const gs_db_reply *reply)
{
    stmt_run *r = user;
    /* Before the answer: once it is sent, the api (and its hooks) may be shutting down. */
    gs_api_after_end(r->api, r->after, reply->status != GS_OK);
    if (reply->status != GS_OK)
        r->done(r->user, GS_ERROR, &reply->err, r->wrap, NULL, 0, reply->retry_after_s);
    else
        r->done(r->user, GS_OK, NULL, r->wrap, reply->json, reply->json_len, 0);
    if (r->acquired)
        gs_registry_release(r->api->reg, r->acquired);
    gs_free(r);
}

static int is_named(gs_route_action a)
{
    return a == GS_ROUTE_QUERY_NAMED || a == GS_ROUTE_EXECUTE_NAMED;
}

/* WebSocket flavour of a validation error: INVALID_MESSAGE (spec 05 Value Encoding). */
static gs_status ws_flavour(int ws, gs_error *err)
{
    if (ws && (strcmp(err->code, "INVALID_REQUEST") == 0 ||
               strcmp(err->code, "INVALID_DURABILITY") == 0)) {
        char msg[sizeof err->message];
        memcpy(msg, err->message, sizeof msg);
        gs_error_set(err, 0, "INVALID_MESSAGE", "%s", msg);
    }
    return GS_ERROR;
}

gs_status gs_api_check_statement(gs_api *api, gs_route_action action, const char *database_id,
                                 const char *name, const gs_operation **op, gs_error *err)
{
    *op = NULL;
    if (!is_named(action)) {
        if (!api->accept_sql)
            return gs_error_set(err, 0, "SQL_NOT_ACCEPTED",
                                "this server accepts registered operations only, not SQL "
                                "(server.accept_sql is false)");
        return GS_OK;
    }
    *op = gs_operations_find(api->ops, database_id, name,
                             action == GS_ROUTE_QUERY_NAMED ? GS_OP_READ : GS_OP_WRITE);
    if (!*op)
        return gs_error_set(err, 0, "UNKNOWN_QUERY",
                            action == GS_ROUTE_QUERY_NAMED
                                ? "no registered read named '%s' for this database"
                                : "no registered write named '%s' for this database",
                            name);
    return GS_OK;
}

gs_status gs_api_run_statement(gs_api *api, const gs_api_stmt_call *call, gs_error *err)
{
    int named = is_named(call->action);
    const gs_operation *op = call->op;
    if (!named || !op) {
        const char *name = named ? json_string_value(json_object_get(call->body, "name")) : NULL;
        if (named && !name)
            return gs_error_set(err, 0, call->ws ? "INVALID_MESSAGE" : "INVALID_REQUEST",
                                "a registered operation needs a string 'name'");
        if (gs_api_check_statement(api, call->action, call->database_id, name, &op, err))
            return GS_ERROR;
    }

    gs_db_request dreq;
    gs_db_stmt *stmts = NULL;
    json_t *resolved = NULL;
    if (gs_body_to_db_request(call->action, call->body, &dreq, &stmts, err) != GS_OK)
        return ws_flavour(call->ws, err);

    if (named) {
        json_t *args = json_object_get(call->body, "args");
        resolved = gs_operation_resolve_args(op, args, call->identity, err);
        if (!resolved) {
            gs_free(stmts);
            return ws_flavour(call->ws, err);
        }
        gs_free(stmts);
        stmts = gs_calloc(op->statement_count, sizeof *stmts);
        if (!stmts) {
            json_decref(resolved);
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        }
        for (size_t i = 0; i < op->statement_count; i++) {
            stmts[i].sql = op->statements[i];
            stmts[i].params = resolved;
        }
        dreq.stmts = stmts;
        dreq.stmt_count = op->statement_count;
        dreq.kind = op->kind == GS_OP_READ ? GS_DB_QUERY : GS_DB_TRANSACTION;
    }

    gs_status st = GS_OK;
    for (size_t i = 0; i < dreq.stmt_count && st == GS_OK; i++) {
        json_t *params = dreq.stmts[i].params;
        if (!params && dreq.params_batch)
            params = dreq.params_batch;
        st = gs_api_before_query_op(api, call->database_id, named ? op->name : NULL,
                                    dreq.stmts[i].sql, params, call->identity,
                                    dreq.kind != GS_DB_QUERY, err);
    }

    stmt_run *r = NULL;
    if (st == GS_OK && !(r = gs_malloc(sizeof *r)))
        st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    gs_database *db = call->db;
    if (st == GS_OK) {
        r->api = api;
        r->acquired = NULL;
        r->done = call->done;
        r->user = call->user;
        r->after = NULL;
        switch (dreq.kind) {
        case GS_DB_QUERY: r->wrap = GS_API_WRAP_ROWS; break;
        case GS_DB_TRANSACTION:
        case GS_DB_BATCH: r->wrap = GS_API_WRAP_RESULTS; break;
        default: r->wrap = GS_API_WRAP_RAW; break;
        }
        if (!db && !(db = r->acquired = gs_registry_acquire(api->reg, call->database_id, err)))
            st = GS_ERROR;
    }
    if (st == GS_OK) {
        dreq.done = stmt_run_done;
        dreq.user = r;
        r->after = gs_api_after_begin(api, call->database_id, named ? op->name : NULL, dreq.stmts,
                                      dreq.stmt_count, call->identity, dreq.kind != GS_DB_QUERY);
        /* The database copies the request: stmts and resolved go once this returns. */
        if ((dreq.kind == GS_DB_QUERY &&
             gs_api_repl_check_read(db, json_object_get(call->body, "readConcern"), err) !=
                 GS_OK) ||
            gs_api_repl_submit(db, &dreq, json_object_get(call->body, "writeConcern"), err) !=
                GS_OK) {
            st = ws_flavour(call->ws, err);
            gs_api_after_drop(r->after);
            if (r->acquired)
                gs_registry_release(api->reg, r->acquired);
            gs_free(r);
        }
    } else {
        gs_free(r);
    }
    gs_free(stmts);
    json_decref(resolved);
    return st;
}

/* The answer of a backup route (api_backup.c), on whichever thread it finished. */
static void backup_answer(void *user, int status, const char *body, size_t len)
{
    respond(user, status, body, len, NULL);
}

static void serve_db(api_call *c, const gs_request *req, const gs_route *rt)
{
    gs_api *api = c->api;
    gs_error err;
    gs_error_init(&err);

    gs_auth_context actx = {.struct_size = sizeof actx,
                            .method = req->method,
                            .path = rt->path,
                            .database_id = rt->database_id,
                            .headers = req->headers,
                            .header_count = req->header_count,
                            .remote_address = req->remote_address};
    if (gs_api_authenticate(api, &actx, &c->identity, &err) != GS_OK) {
        respond_error(c, &err);
        return;
    }

    switch (rt->action) {
    case GS_ROUTE_CLUSTER: {
        /* authorizeClusterStatus is server.cluster_status; a refusal, an unconfigured server
         * and a database without replication all give the same 404 (spec 05) */
        int allowed = api->cluster_status == 2 || (api->cluster_status == 1 && c->identity);
        if (!allowed) {
            respond_code(c, "NOT_FOUND", "no route for this path%s", "");
            return;
        }
        gs_database *db = gs_registry_acquire(api->reg, rt->database_id, &err);
        if (!db) {
            respond_error(c, &err);
            return;
        }
        struct gs_repl_engine *e = gs_db_repl(db);
        if (!e) {
            gs_registry_release(api->reg, db);
            respond_code(c, "NOT_FOUND", "no route for this path%s", "");
            return;
        }
        gs_buf b;
        gs_buf_init(&b);
        gs_repl_cluster_json(e, rt->database_id, &b);
        gs_registry_release(api->reg, db);
        respond_json(c, 200, b.data ? b.data : "{}");
        gs_buf_free(&b);
        return;
    }
    case GS_ROUTE_BACKUP_RESTORE_STATUS:
    case GS_ROUTE_BACKUP_RESTORE:
    case GS_ROUTE_BACKUP:
    case GS_ROUTE_BACKUP_STATUS:
    case GS_ROUTE_BACKUP_CHAIN:
    case GS_ROUTE_BACKUP_VERIFY:
    case GS_ROUTE_BACKUP_SAFE_TO_DELETE:
        gs_api_backup_serve(api, rt->action, rt->database_id, req->body, req->body_len,
                            backup_answer, c);
        return;
    case GS_ROUTE_CHANGES:
    case GS_ROUTE_MIGRATIONS:
    case GS_ROUTE_SNAPSHOT:
    case GS_ROUTE_SNAPSHOT_PAGE:
        c->db = gs_registry_acquire(api->reg, rt->database_id, &err);
        if (!c->db) {
            respond_error(c, &err);
            return;
        }
        respond_code(c, "SYNC_UNSUPPORTED",
                     "device sync is not available on this server (database '%s')",
                     rt->database_id);
        return;
    default: break;
    }

    const gs_operation *op = NULL;
    if (gs_api_check_statement(api, rt->action, rt->database_id, rt->name, &op, &err) != GS_OK) {
        respond_error(c, &err);
        return;
    }

    json_t *body = NULL;
    if (gs_body_parse(req->body, req->body_len, is_named(rt->action), &body, &err) != GS_OK) {
        respond_error(c, &err);
        return;
    }
    gs_api_stmt_call call = {.action = rt->action,
                             .database_id = rt->database_id,
                             .op = op,
                             .body = body,
                             .identity = c->identity,
                             .done = http_stmt_done,
                             .user = c};
    gs_status st = gs_api_run_statement(api, &call, &err);
    json_decref(body);
    if (st != GS_OK)
        respond_error(c, &err);
}

/* ---- GET /metrics ---- */

static int is_metrics_request(const gs_request *req)
{
    return req->method && req->path && strcmp(req->method, "GET") == 0 &&
           strcspn(req->path, "?#") == 8 && strncmp(req->path, "/metrics", 8) == 0;
}

static void serve_metrics(api_call *c, const gs_request *req)
{
    gs_api *api = c->api;
    gs_error err;
    gs_error_init(&err);
    if (gs_metrics_authenticate(api->metrics)) {
        gs_auth_context actx = {.struct_size = sizeof actx,
                                .method = req->method,
                                .path = "/metrics",
                                .headers = req->headers,
                                .header_count = req->header_count,
                                .remote_address = req->remote_address};
        if (gs_api_authenticate(api, &actx, &c->identity, &err) != GS_OK) {
            respond_error(c, &err);
            return;
        }
    }
    gs_buf b;
    gs_buf_init(&b);
    if (gs_metrics_render(api->metrics, api->reg, &b, &err) != GS_OK)
        respond_error(c, &err);
    else
        respond_as(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, NULL);
    gs_buf_free(&b);
}

/* ---- GET /status and /status.json (server.status_page) ---- */

#ifndef GS_VERSION
#define GS_VERSION "unknown"
#endif

/* The page may run its own inline script and style and reach this origin only. */
static const char status_csp[] =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'";

static void serve_status(api_call *c, const gs_request *req, gs_route_action action)
{
    gs_api *api = c->api;
    if (!api->status_page) {
        c->m_route = GS_METRICS_ROUTE_UNMATCHED; /* exactly like a path no route matches */
        respond_code(c, "NOT_FOUND", "no route for this path%s", "");
        return;
    }
    gs_error err;
    gs_error_init(&err);
    /* the authentication of the data routes: the same hook chain, no database named */
    gs_auth_context actx = {.struct_size = sizeof actx,
                            .method = req->method,
                            .path = action == GS_ROUTE_STATUS_PAGE ? "/status" : "/status.json",
                            .headers = req->headers,
                            .header_count = req->header_count,
                            .remote_address = req->remote_address};
    if (gs_api_authenticate(api, &actx, &c->identity, &err) != GS_OK) {
        respond_error(c, &err);
        return;
    }
    if (action == GS_ROUTE_STATUS_JSON) {
        gs_status_node node = {.id = api->node_id,
                               .version = GS_VERSION,
                               .started_unix_ms = api->started_unix_ms,
                               .sources_json = api->sources_json,
                               .sources_user = api->sources_user};
        gs_buf b;
        gs_buf_init(&b);
        if (gs_status_json(api->reg, &node, api->metrics, &b, &err) != GS_OK)
            respond_error(c, &err);
        else
            respond(c, 200, b.data, b.len, NULL);
        gs_buf_free(&b);
        return;
    }
    size_t len;
    const char *page = gs_status_page_html(&len);
    gs_header h[8];
    size_t n = cors_headers(api, c->origin, h, 4);
    h[n].name = "Content-Security-Policy";
    h[n++].value = status_csp;
    h[n].name = "Cache-Control";
    h[n++].value = "no-store";
    h[n].name = "X-Content-Type-Options";
    h[n++].value = "nosniff";
    gs_response r = {.struct_size = sizeof r,
                     .status = 200,
                     .headers = h,
                     .header_count = n,
                     .content_type = "text/html; charset=utf-8",
                     .body = page,
                     .body_len = len};
    if (api->metrics)
        gs_metrics_http(api->metrics, c->m_route, c->m_method, 200,
                        gs_metrics_now_ns() - c->started_ns);
    c->complete(c->user, &r);
    call_free(c);
    gs_api_inflight_done(api);
}

static const char *header_get(const gs_request *req, const char *name)
{
    for (size_t i = 0; i < req->header_count; i++)
        if (req->headers[i].name && strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

gs_status gs_api_submit(gs_api *api, const gs_request *req)
{
    api_call *c = gs_calloc(1, sizeof *c);
    if (!c) {
        static const char oom[] =
            "{\"error\":{\"code\":\"INTERNAL_ERROR\",\"message\":\"out of memory\"}}";
        gs_response r = {.struct_size = sizeof r,
                         .status = 500,
                         .content_type = "application/json",
                         .body = oom,
                         .body_len = sizeof oom - 1};
        req->complete(req->user, &r);
        return GS_ERROR;
    }
    c->api = api;
    c->complete = req->complete;
    c->user = req->user;
    if (api->metrics) {
        c->started_ns = gs_metrics_now_ns();
        c->m_method = gs_metrics_method(req->method);
    }
    const char *origin = header_get(req, "origin");
    if (origin && api->cors.enabled)
        c->origin = gs_strdup(origin);
    gs_api_inflight_add(api);

    if (atomic_load(&api->shutting_down)) {
        respond_code(c, "SHUTDOWN", "the server is shutting down; retry on another node%s", "");
        return GS_ERROR;
    }
    if (req->method && strcmp(req->method, "OPTIONS") == 0 && api->cors.enabled) {
        c->m_route = GS_METRICS_ROUTE_PREFLIGHT;
        serve_preflight(c, req);
        return GS_OK;
    }
    if (req->body_too_large) {
        char msg[64];
        snprintf(msg, sizeof msg, "%llu", (unsigned long long)api->max_body_bytes);
        respond_code(c, "PAYLOAD_TOO_LARGE", "the request body exceeds max_body_bytes (%s bytes)",
                     msg);
        return GS_OK;
    }

    gs_route rt;
    gs_error err;
    gs_error_init(&err);
    if (api->metrics_route && is_metrics_request(req)) {
        c->m_route = GS_METRICS_ROUTE_METRICS;
        serve_metrics(c, req);
        return GS_OK;
    }
    if (gs_route_match(req->method, req->path, &rt) != GS_OK) {
        respond_code(c, "NOT_FOUND", "no route for this path%s", "");
        return GS_OK;
    }
    c->m_route = (int)rt.action;
    switch (rt.action) {
    case GS_ROUTE_HEALTH: respond_json(c, 200, "{\"status\":\"ok\"}"); break;
    case GS_ROUTE_HEALTH_READY: serve_health_ready(c); break;
    case GS_ROUTE_CAPABILITIES: serve_capabilities(c); break;
    case GS_ROUTE_STATUS_PAGE:
    case GS_ROUTE_STATUS_JSON: serve_status(c, req, rt.action); break;
    default: serve_db(c, req, &rt); break;
    }
    gs_route_clear(&rt);
    return GS_OK;
}

gs_status gs_api_new(const gs_api_options *opts, gs_registry *registry, gs_api **out, gs_error *err)
{
    gs_api *api = gs_calloc(1, sizeof *api);
    if (!api)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    api->reg = registry;
    api->ops = opts->operations;
    api->accept_sql = opts->accept_sql;
    api->accept_backup_restore = opts->accept_backup_restore;
    api->cluster_status = opts->cluster_status;
    api->max_body_bytes = opts->max_body_bytes;
    api->cors.enabled = opts->cors.enabled;
    api->cors.max_age = opts->cors.max_age;
    api->cors.origin_count = 0;
    int oom = 0;
    /* the status page shows request rates from the same counters */
    if ((opts->metrics_enabled || opts->status_page) &&
        !(api->metrics = gs_metrics_new(opts->metrics_authenticate)))
        oom = 1;
    api->metrics_route = opts->metrics_enabled;
    api->status_page = opts->status_page;
    api->sources_json = opts->sources_json;
    api->sources_user = opts->sources_user;
    api->started_unix_ms = gs_status_now_unix_ms();
    if (!(api->node_id = gs_strdup(opts->node_id ? opts->node_id : "")))
        oom = 1;
    if (opts->cors.origin_count &&
        !(opts->cors.origin_count == 1 && strcmp(opts->cors.origins[0], "*") == 0)) {
        char **o = gs_calloc(opts->cors.origin_count, sizeof *o);
        if (!o)
            oom = 1;
        for (size_t i = 0; o && i < opts->cors.origin_count; i++)
            if (!(o[i] = gs_strdup(opts->cors.origins[i])))
                oom = 1;
        api->cors.origins = (const char *const *)o;
        api->cors.origin_count = o ? opts->cors.origin_count : 0;
    }
    api->cors.methods = gs_strdup(opts->cors.methods ? opts->cors.methods : "GET, POST, OPTIONS");
    api->cors.headers =
        gs_strdup(opts->cors.headers ? opts->cors.headers : "Content-Type, Authorization");
    if (opts->hook_count) {
        api->hooks = gs_calloc(opts->hook_count, sizeof *api->hooks);
        if (api->hooks) {
            memcpy(api->hooks, opts->hooks, opts->hook_count * sizeof *api->hooks);
            api->hook_count = opts->hook_count;
        } else {
            oom = 1;
        }
    }
    pthread_mutex_init(&api->mu, NULL);
    pthread_cond_init(&api->idle, NULL);
    gs_error berr;
    gs_error_init(&berr);
    if (gs_api_backup_new(api, opts, &berr) != GS_OK)
        oom = 1;
    if (oom || !api->cors.methods || !api->cors.headers) {
        gs_api_free(api);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    *out = api;
    return GS_OK;
}

void gs_api_begin_shutdown(gs_api *api)
{
    atomic_store(&api->shutting_down, 1);
    pthread_mutex_lock(&api->mu);
    void (*ws_shutdown)(gs_api *) = api->ws_shutdown;
    pthread_mutex_unlock(&api->mu);
    if (ws_shutdown)
        ws_shutdown(api);
    gs_api_backup_shutdown(api); /* restores finish before the node tears down */
}

int gs_api_wait_idle(gs_api *api, int64_t timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&api->mu);
    while (api->inflight > 0)
        if (pthread_cond_timedwait(&api->idle, &api->mu, &deadline) != 0)
            break;
    int left = (int)api->inflight;
    pthread_mutex_unlock(&api->mu);
    return left;
}

void gs_api_free(gs_api *api)
{
    if (!api)
        return;
    if (api->ws_free)
        api->ws_free(api); /* every session has ended: the node stopped its transports */
    for (size_t i = 0; i < api->cors.origin_count; i++)
        gs_free((void *)api->cors.origins[i]);
    gs_free((void *)api->cors.origins);
    gs_free(api->cors.methods);
    gs_free(api->cors.headers);
    gs_free(api->hooks);
    gs_metrics_free(api->metrics);
    gs_free(api->node_id);
    gs_api_backup_free(api);
    gs_operations_free(api->ops);
    pthread_mutex_destroy(&api->mu);
    pthread_cond_destroy(&api->idle);
    gs_free(api);
}
