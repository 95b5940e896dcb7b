/* Requests and responses of spec 05: validate a gs_client_request, build the members its
 * HTTP body and WebSocket message share, and decode a result's data per operation. Pure. */
#include "cl_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int valid_read_concern(const char *rc)
{
    return !strcmp(rc, "local") || !strcmp(rc, "majority") || !strcmp(rc, "linearizable");
}

static void put_key(gs_buf *b, const char *key)
{
    if (b->len)
        gs_buf_putc(b, ',');
    gs_buf_printf(b, "\"%s\":", key);
}

static gs_status put_params(gs_buf *b, const char *key, const gs_client_params *p, gs_error *err)
{
    if (!p || (!p->count && !p->names))
        return GS_OK;
    put_key(b, key);
    return cl_params_encode(b, p, err);
}

static void put_write_concern(gs_buf *b, const gs_client_call_opts *o)
{
    if (!o || !o->write_concern)
        return;
    put_key(b, "writeConcern");
    gs_buf_puts(b, "{\"level\":");
    gs_buf_json_string(b, o->write_concern, strlen(o->write_concern));
    if (o->write_concern_timeout_ms > 0)
        gs_buf_printf(b, ",\"timeoutMs\":%lld", (long long)o->write_concern_timeout_ms);
    gs_buf_putc(b, '}');
}

static gs_status need_sql(const gs_client_request *req, gs_error *err)
{
    if (!req->sql || !req->sql[0])
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "this call needs an SQL statement");
    return GS_OK;
}

static gs_status need_named(const gs_client_params *p, const char *what, gs_error *err)
{
    if (p->count && !p->names)
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "%s are named: build them with gs_client_named()", what);
    return GS_OK;
}

gs_status cl_request_build(gs_client_db *db, const gs_client_request *req, cl_call *call,
                           gs_error *err)
{
    const gs_client_call_opts *o = req->opts;
    gs_client *c = db->c;
    if (o && o->struct_size && o->struct_size < sizeof(gs_client_call_opts))
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "gs_client_call_opts.struct_size is too small: init the options "
                            "with gs_client_call_opts_init()");
    if (o && o->read_concern && !valid_read_concern(o->read_concern))
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "readConcern '%s' is not one of local, majority, linearizable",
                            o->read_concern);
    call->db = db;
    call->op = req->op;
    call->timeout_ms = c->cfg.request_timeout_ms;
    if (o && o->timeout_ms >= 0)
        call->timeout_ms = o->timeout_ms;
    gs_buf b, path;
    gs_buf_init(&b);
    gs_buf_init(&path);
    gs_status st = GS_OK;
    switch (req->op) {
    case GS_CLIENT_OP_QUERY:
    case GS_CLIENT_OP_EXECUTE:
        if ((st = need_sql(req, err)) != GS_OK)
            break;
        call->is_write = req->op == GS_CLIENT_OP_EXECUTE;
        call->uses_sql = 1;
        call->ws_type = call->is_write ? "execute" : "query";
        gs_buf_puts(&path, call->ws_type);
        put_key(&b, "sql");
        gs_buf_json_string(&b, req->sql, strlen(req->sql));
        st = put_params(&b, "params", &req->params, err);
        break;
    case GS_CLIENT_OP_TRANSACTION:
        if (!req->statements || !req->statement_count) {
            st = gs_error_set(err, 0, "INVALID_ARGUMENT",
                              "a transaction needs at least one statement");
            break;
        }
        call->is_write = call->uses_sql = 1;
        call->ws_type = "transaction";
        gs_buf_puts(&path, "transaction");
        put_key(&b, "statements");
        gs_buf_putc(&b, '[');
        for (size_t i = 0; i < req->statement_count && st == GS_OK; i++) {
            const gs_client_stmt *s = &req->statements[i];
            if (!s->sql || !s->sql[0]) {
                st = gs_error_set(err, 0, "INVALID_ARGUMENT",
                                  "statement %zu of the transaction has no SQL", i);
                break;
            }
            gs_buf_puts(&b, i ? ",{\"sql\":" : "{\"sql\":");
            gs_buf_json_string(&b, s->sql, strlen(s->sql));
            if (s->params.count || s->params.names) {
                gs_buf_puts(&b, ",\"params\":");
                st = cl_params_encode(&b, &s->params, err);
            }
            gs_buf_putc(&b, '}');
        }
        gs_buf_putc(&b, ']');
        break;
    case GS_CLIENT_OP_BATCH:
    case GS_CLIENT_OP_LOAD:
        if ((st = need_sql(req, err)) != GS_OK)
            break;
        if (!req->params_batch || !req->batch_count) {
            st = gs_error_set(err, 0, "INVALID_ARGUMENT", "a %s needs at least one parameter set",
                              req->op == GS_CLIENT_OP_BATCH ? "batch" : "load");
            break;
        }
        call->is_write = call->uses_sql = 1;
        call->ws_type = req->op == GS_CLIENT_OP_BATCH ? "batch" : "load";
        gs_buf_puts(&path, call->ws_type);
        put_key(&b, "sql");
        gs_buf_json_string(&b, req->sql, strlen(req->sql));
        put_key(&b, "paramsBatch");
        gs_buf_putc(&b, '[');
        for (size_t i = 0; i < req->batch_count && st == GS_OK; i++) {
            if (i)
                gs_buf_putc(&b, ',');
            st = cl_params_encode(&b, &req->params_batch[i], err);
        }
        gs_buf_putc(&b, ']');
        if (req->op == GS_CLIENT_OP_LOAD && o && o->durability) {
            put_key(&b, "durability");
            gs_buf_json_string(&b, o->durability, strlen(o->durability));
        }
        if (req->op == GS_CLIENT_OP_LOAD && o && o->checkpoint)
            gs_buf_puts(&b, ",\"checkpoint\":true");
        break;
    case GS_CLIENT_OP_QUERY_NAMED:
    case GS_CLIENT_OP_EXECUTE_NAMED:
        if (!req->name || !req->name[0]) {
            st = gs_error_set(err, 0, "INVALID_ARGUMENT",
                              "a registered operation is called by its name; none was given");
            break;
        }
        if ((st = need_named(&req->params, "a registered operation's args", err)) != GS_OK)
            break;
        call->is_write = req->op == GS_CLIENT_OP_EXECUTE_NAMED;
        call->ws_type = call->is_write ? "execute" : "query";
        call->name = gs_strdup(req->name);
        gs_buf_printf(&path, "%s/", call->ws_type);
        cl_url_encode(&path, req->name);
        st = put_params(&b, "args", &req->params, err);
        break;
    default:
        st = gs_error_set(err, 0, "INVALID_ARGUMENT", "unknown operation %d", (int)req->op);
        break;
    }
    if (st == GS_OK && !call->is_write && o && o->read_concern) {
        put_key(&b, "readConcern");
        gs_buf_puts(&b, "{\"level\":");
        gs_buf_json_string(&b, o->read_concern, strlen(o->read_concern));
        gs_buf_putc(&b, '}');
        call->read_concern = gs_strdup(o->read_concern);
    }
    if (st == GS_OK && call->is_write && req->op != GS_CLIENT_OP_LOAD)
        put_write_concern(&b, o);
    if (st == GS_OK && (b.oom || path.oom || (req->name && !call->name)))
        st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory building the request");
    if (st != GS_OK) {
        gs_buf_free(&b);
        gs_buf_free(&path);
        return st;
    }
    call->fields_len = b.len;
    call->fields = gs_buf_take(&b, NULL);
    if (!call->fields)
        call->fields = gs_strdup("");
    call->http_path = gs_buf_take(&path, NULL);
    if (!call->fields || !call->http_path)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory building the request");
    return GS_OK;
}

static int get_int(json_t *o, const char *key, int64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        *out = (int64_t)json_real_value(v);
        return 0;
    }
    return -1;
}

static gs_status decode_exec(json_t *o, gs_client_exec *e, gs_error *err)
{
    memset(e, 0, sizeof *e);
    if (!json_is_object(o) || get_int(o, "changes", &e->changes) != 0)
        return gs_error_set(err, 0, "INVALID_RESPONSE",
                            "an execute result lacks a numeric 'changes'");
    json_t *id = json_object_get(o, "lastInsertRowId");
    if (json_is_integer(id)) {
        e->last_insert_rowid = (int64_t)json_integer_value(id);
        snprintf(e->last_insert_rowid_text, sizeof e->last_insert_rowid_text, "%lld",
                 (long long)e->last_insert_rowid);
        return GS_OK;
    }
    const char *s = NULL;
    if (json_is_string(id))
        s = json_string_value(id);
    else if (json_is_object(id) && json_is_string(json_object_get(id, "__sirannon_int")))
        s = json_string_value(json_object_get(id, "__sirannon_int"));
    if (s) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (!errno && end != s && !*end) {
            e->last_insert_rowid = v;
            snprintf(e->last_insert_rowid_text, sizeof e->last_insert_rowid_text, "%s", s);
            return GS_OK;
        }
    }
    if (json_is_real(id)) {
        e->last_insert_rowid = (int64_t)json_real_value(id);
        snprintf(e->last_insert_rowid_text, sizeof e->last_insert_rowid_text, "%lld",
                 (long long)e->last_insert_rowid);
        return GS_OK;
    }
    return gs_error_set(err, 0, "INVALID_RESPONSE",
                        "an execute result's lastInsertRowId is neither a number nor a "
                        "decimal string");
}

static gs_status decode_results(json_t *data, gs_client_results *r, gs_error *err)
{
    json_t *arr = json_object_get(data, "results");
    if (!json_is_array(arr))
        return gs_error_set(err, 0, "INVALID_RESPONSE", "the result lacks a 'results' array");
    r->count = 0;
    r->items = gs_calloc(json_array_size(arr) + 1, sizeof *r->items);
    if (!r->items)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        if (decode_exec(e, &r->items[i], err) != GS_OK) {
            gs_client_results_free(r);
            return GS_ERROR;
        }
        r->count++;
    }
    return GS_OK;
}

gs_status cl_response_decode(gs_client_op op, json_t *data, gs_client_response *resp, gs_error *err)
{
    memset(resp, 0, sizeof *resp);
    resp->op = op;
    if (!json_is_object(data))
        return gs_error_set(err, 0, "INVALID_RESPONSE", "the server's result is not an object");
    switch (op) {
    case GS_CLIENT_OP_QUERY:
    case GS_CLIENT_OP_QUERY_NAMED:
        return cl_rows_from_json(json_object_get(data, "rows"), &resp->rows, err);
    case GS_CLIENT_OP_EXECUTE: return decode_exec(data, &resp->exec, err);
    case GS_CLIENT_OP_TRANSACTION:
    case GS_CLIENT_OP_BATCH:
    case GS_CLIENT_OP_EXECUTE_NAMED: return decode_results(data, &resp->results, err);
    case GS_CLIENT_OP_LOAD:
        if (get_int(data, "rowsLoaded", &resp->load.rows_loaded) != 0 ||
            get_int(data, "changes", &resp->load.changes) != 0)
            return gs_error_set(err, 0, "INVALID_RESPONSE",
                                "a load result lacks rowsLoaded or changes");
        return GS_OK;
    }
    return gs_error_set(err, 0, "INVALID_ARGUMENT", "unknown operation %d", (int)op);
}

void gs_client_results_free(gs_client_results *r)
{
    if (!r)
        return;
    gs_free(r->items);
    r->items = NULL;
    r->count = 0;
}

gs_client_rows *gs_client_response_take_rows(gs_client_response *resp)
{
    if (!resp)
        return NULL;
    gs_client_rows *r = resp->rows;
    resp->rows = NULL;
    return r;
}

void gs_client_response_clear(gs_client_response *resp)
{
    if (!resp)
        return;
    gs_client_rows_free(resp->rows);
    resp->rows = NULL;
    gs_client_results_free(&resp->results);
}
