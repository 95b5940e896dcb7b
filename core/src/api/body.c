#include "body.h"

#include "../base/alloc.h"
#include "../base/error.h"

#include <math.h>
#include <string.h>

gs_status gs_body_parse(const uint8_t *body, size_t len, int allow_empty, json_t **out,
                        gs_error *err)
{
    *out = NULL;
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
        i++;
    if (i == len) {
        if (allow_empty) {
            *out = json_object();
            return *out ? GS_OK : gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        }
        return gs_error_set(err, 0, "EMPTY_BODY", "the request body is empty; send a JSON object");
    }
    json_error_t je;
    /* text values may hold U+0000 (the spec's value encoding allows it); SQL may not */
    json_t *v = json_loadb((const char *)body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!v)
        return gs_error_set(err, 0, "INVALID_JSON",
                            "the request body is not valid JSON (line %d, column %d: %s)", je.line,
                            je.column, je.text);
    if (!json_is_object(v)) {
        json_decref(v);
        return gs_error_set(err, 0, "INVALID_REQUEST", "the request body must be a JSON object");
    }
    *out = v;
    return GS_OK;
}

static gs_status check_sql(json_t *sql, const char *where, gs_error *err)
{
    if (!json_is_string(sql) || json_string_length(sql) == 0)
        return gs_error_set(err, 0, "INVALID_REQUEST", "%s must be a non-empty string", where);
    if (strlen(json_string_value(sql)) != json_string_length(sql))
        return gs_error_set(err, 0, "INVALID_REQUEST",
                            "%s holds a NUL character; bind text that holds one as a parameter",
                            where);
    return GS_OK;
}

static gs_status check_params(json_t *p, const char *where, gs_error *err)
{
    if (!p || json_is_null(p) || json_is_array(p) || json_is_object(p))
        return GS_OK;
    return gs_error_set(err, 0, "INVALID_REQUEST", "%s must be an array or an object", where);
}

gs_status gs_body_check_read_concern(json_t *rc, gs_error *err)
{
    if (!rc || json_is_null(rc))
        return GS_OK;
    json_t *level = json_object_get(rc, "level");
    if (!json_is_object(rc) || !json_is_string(level))
        return gs_error_set(err, 0, "INVALID_REQUEST",
                            "readConcern must be {\"level\": \"local\"|\"majority\"|"
                            "\"linearizable\"}");
    const char *l = json_string_value(level);
    if (strcmp(l, "local") && strcmp(l, "majority") && strcmp(l, "linearizable"))
        return gs_error_set(err, 0, "INVALID_REQUEST",
                            "readConcern.level '%s' is not local, majority or linearizable", l);
    return GS_OK;
}

gs_status gs_body_check_write_concern(json_t *wc, gs_error *err)
{
    if (!wc || json_is_null(wc))
        return GS_OK;
    json_t *level = json_object_get(wc, "level");
    if (!json_is_object(wc) || !json_is_string(level))
        return gs_error_set(err, 0, "INVALID_REQUEST",
                            "writeConcern must be {\"level\": \"local\"|\"majority\"|\"all\", "
                            "\"timeoutMs\"?: number}");
    const char *l = json_string_value(level);
    if (strcmp(l, "local") && strcmp(l, "majority") && strcmp(l, "all"))
        return gs_error_set(err, 0, "INVALID_REQUEST",
                            "writeConcern.level '%s' is not local, majority or all", l);
    json_t *t = json_object_get(wc, "timeoutMs");
    if (t && !json_is_null(t)) {
        double v = json_is_integer(t) ? (double)json_integer_value(t)
                   : json_is_real(t)  ? json_real_value(t)
                                      : -1;
        if (!json_is_number(t) || !(v > 0) || !isfinite(v))
            return gs_error_set(err, 0, "INVALID_REQUEST",
                                "writeConcern.timeoutMs must be a positive number");
    }
    return GS_OK;
}

static gs_status check_params_batch(json_t *pb, gs_error *err)
{
    if (!json_is_array(pb) || json_array_size(pb) == 0)
        return gs_error_set(err, 0, "INVALID_REQUEST",
                            "paramsBatch must be an array with at least one parameter set");
    size_t i;
    json_t *p;
    json_array_foreach(pb, i, p)
    {
        if (!json_is_array(p) && !json_is_object(p))
            return gs_error_set(err, 0, "INVALID_REQUEST",
                                "paramsBatch[%zu] must be an array or an object", i);
    }
    return GS_OK;
}

gs_status gs_body_to_db_request(gs_route_action action, json_t *body, gs_db_request *dreq,
                                gs_db_stmt **stmts, gs_error *err)
{
    *stmts = NULL;
    memset(dreq, 0, sizeof *dreq);
    switch (action) {
    case GS_ROUTE_QUERY:
    case GS_ROUTE_QUERY_NAMED:
        if (gs_body_check_read_concern(json_object_get(body, "readConcern"), err))
            return GS_ERROR;
        break;
    case GS_ROUTE_EXECUTE:
    case GS_ROUTE_EXECUTE_NAMED:
    case GS_ROUTE_TRANSACTION:
    case GS_ROUTE_BATCH:
        if (gs_body_check_write_concern(json_object_get(body, "writeConcern"), err))
            return GS_ERROR;
        break;
    default: break;
    }

    switch (action) {
    case GS_ROUTE_QUERY_NAMED:
    case GS_ROUTE_EXECUTE_NAMED: {
        json_t *args = json_object_get(body, "args");
        if (args && !json_is_null(args) && !json_is_object(args))
            return gs_error_set(err, 0, "INVALID_REQUEST", "args must be an object");
        return GS_OK;
    }
    case GS_ROUTE_QUERY:
    case GS_ROUTE_EXECUTE: {
        json_t *sql = json_object_get(body, "sql");
        json_t *params = json_object_get(body, "params");
        if (check_sql(sql, "sql", err) || check_params(params, "params", err))
            return GS_ERROR;
        gs_db_stmt *s = gs_calloc(1, sizeof *s);
        if (!s)
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        s->sql = json_string_value(sql);
        s->params = json_is_null(params) ? NULL : params;
        *stmts = s;
        dreq->kind = action == GS_ROUTE_QUERY ? GS_DB_QUERY : GS_DB_EXECUTE;
        dreq->stmts = s;
        dreq->stmt_count = 1;
        return GS_OK;
    }
    case GS_ROUTE_TRANSACTION: {
        json_t *list = json_object_get(body, "statements");
        if (!json_is_array(list) || json_array_size(list) == 0)
            return gs_error_set(err, 0, "INVALID_REQUEST",
                                "statements must be an array with at least one statement");
        size_t n = json_array_size(list);
        gs_db_stmt *s = gs_calloc(n, sizeof *s);
        if (!s)
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        for (size_t i = 0; i < n; i++) {
            json_t *st = json_array_get(list, i);
            char where[64];
            if (!json_is_object(st)) {
                gs_free(s);
                return gs_error_set(err, 0, "INVALID_REQUEST",
                                    "statements[%zu] must be an object {sql, params?}", i);
            }
            snprintf(where, sizeof where, "statements[%zu].sql", i);
            json_t *sql = json_object_get(st, "sql");
            json_t *params = json_object_get(st, "params");
            if (check_sql(sql, where, err)) {
                gs_free(s);
                return GS_ERROR;
            }
            snprintf(where, sizeof where, "statements[%zu].params", i);
            if (check_params(params, where, err)) {
                gs_free(s);
                return GS_ERROR;
            }
            s[i].sql = json_string_value(sql);
            s[i].params = json_is_null(params) ? NULL : params;
        }
        *stmts = s;
        dreq->kind = GS_DB_TRANSACTION;
        dreq->stmts = s;
        dreq->stmt_count = n;
        return GS_OK;
    }
    case GS_ROUTE_BATCH:
    case GS_ROUTE_LOAD: {
        json_t *sql = json_object_get(body, "sql");
        json_t *pb = json_object_get(body, "paramsBatch");
        if (check_sql(sql, "sql", err) || check_params_batch(pb, err))
            return GS_ERROR;
        if (action == GS_ROUTE_LOAD) {
            json_t *d = json_object_get(body, "durability");
            if (d && !json_is_null(d)) {
                const char *dv = json_is_string(d) ? json_string_value(d) : "";
                if (strcmp(dv, "off") && strcmp(dv, "normal"))
                    return gs_error_set(err, 0, "INVALID_DURABILITY",
                                        "durability must be \"off\" or \"normal\"");
                dreq->durability = dv;
            } else {
                dreq->durability = "off";
            }
            json_t *cp = json_object_get(body, "checkpoint");
            if (cp && !json_is_null(cp) && !json_is_boolean(cp))
                return gs_error_set(err, 0, "INVALID_REQUEST", "checkpoint must be a boolean");
            dreq->checkpoint = cp && !json_is_null(cp) ? json_is_true(cp) : 1;
        }
        gs_db_stmt *s = gs_calloc(1, sizeof *s);
        if (!s)
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        s->sql = json_string_value(sql);
        *stmts = s;
        dreq->kind = action == GS_ROUTE_BATCH ? GS_DB_BATCH : GS_DB_LOAD;
        dreq->stmts = s;
        dreq->stmt_count = 1;
        dreq->params_batch = pb;
        return GS_OK;
    }
    default: return gs_error_set(err, 0, "INTERNAL_ERROR", "route has no statement body");
    }
}
