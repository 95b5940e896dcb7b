#include "ws_message.h"

#include "../base/alloc.h"
#include "../base/error.h"
#include "../sqlite/value.h"
#include "body.h"

#include <stdio.h>
#include <string.h>

static gs_status invalid(gs_error *err, const char *fmt, const char *arg)
{
    return gs_error_set(err, 0, "INVALID_MESSAGE", fmt, arg ? arg : "");
}

int gs_ws_parse_seq(const char *s, uint64_t *out)
{
    if (!s || !*s)
        return -1;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* A field that is absent or JSON null counts as absent. */
static json_t *field(json_t *root, const char *key)
{
    json_t *v = json_object_get(root, key);
    return json_is_null(v) ? NULL : v;
}

/* Tagged-value envelopes in one params value (array, object or absent). */
static gs_status check_values(json_t *params, const char *label, gs_error *err)
{
    size_t count = 0, bytes = 0;
    if (gs_params_check(params, label, &count, &bytes, err) != GS_OK) {
        char msg[sizeof err->message];
        memcpy(msg, err->message, sizeof msg);
        return gs_error_set(err, 0, "INVALID_MESSAGE", "%s", msg);
    }
    return GS_OK;
}

/* A statement message: the body checks HTTP uses, then every bound value's envelope. */
static gs_status check_statement(gs_ws_msg *m, gs_error *err)
{
    gs_db_request dreq;
    gs_db_stmt *stmts = NULL;
    json_t *root = m->root;
    if (gs_body_to_db_request(m->action, root, &dreq, &stmts, err) != GS_OK) {
        char msg[sizeof err->message];
        memcpy(msg, err->message, sizeof msg);
        if (strcmp(err->code, "INTERNAL_ERROR") == 0)
            return GS_ERROR;
        return gs_error_set(err, 0, "INVALID_MESSAGE", "%s", msg);
    }
    gs_free(stmts);
    switch (m->action) {
    case GS_ROUTE_QUERY:
    case GS_ROUTE_EXECUTE: return check_values(field(root, "params"), "params", err);
    case GS_ROUTE_TRANSACTION: {
        json_t *list = json_object_get(root, "statements");
        for (size_t i = 0; i < json_array_size(list); i++) {
            char label[48];
            snprintf(label, sizeof label, "statements[%zu].params", i);
            if (check_values(field(json_array_get(list, i), "params"), label, err))
                return GS_ERROR;
        }
        return GS_OK;
    }
    case GS_ROUTE_BATCH:
    case GS_ROUTE_LOAD: {
        json_t *pb = json_object_get(root, "paramsBatch");
        for (size_t i = 0; i < json_array_size(pb); i++) {
            char label[32];
            snprintf(label, sizeof label, "paramsBatch[%zu]", i);
            if (check_values(json_array_get(pb, i), label, err))
                return GS_ERROR;
        }
        return GS_OK;
    }
    case GS_ROUTE_QUERY_NAMED:
    case GS_ROUTE_EXECUTE_NAMED:
        m->args = field(root, "args");
        return check_values(m->args, "args", err);
    default: return GS_OK;
    }
}

/* Fields a live query leaves to the server (spec 05 Live Queries). */
static const char *const live_forbidden[] = {"table", "tables",   "filter",        "sinceSeq",
                                             "epoch", "deviceId", "schemaVersion", NULL};

static gs_status check_live_subscribe(gs_ws_msg *m, gs_error *err)
{
    for (size_t i = 0; live_forbidden[i]; i++)
        if (json_object_get(m->root, live_forbidden[i]))
            return invalid(err,
                           "a subscription naming a registered read carries no '%s'; the "
                           "server holds the result (subscribe again to resume)",
                           live_forbidden[i]);
    json_t *digest = field(m->root, "registryDigest");
    if (digest && !json_is_string(digest))
        return invalid(err, "registryDigest must be a string%s", "");
    m->registry_digest = json_string_value(digest);
    m->args = field(m->root, "args");
    if (m->args && !json_is_object(m->args))
        return invalid(err, "args must be an object%s", "");
    return check_values(m->args, "args", err);
}

static gs_status check_subscribe(gs_ws_msg *m, gs_error *err)
{
    json_t *root = m->root;
    if (m->name)
        return check_live_subscribe(m, err);
    json_t *tables = field(root, "tables");
    if (tables) {
        if (!json_is_array(tables) || json_array_size(tables) == 0)
            return invalid(err, "tables must be a non-empty array of table names%s", "");
        if (json_array_size(tables) > GS_WS_MAX_TABLES)
            return gs_error_set(err, 0, "INVALID_MESSAGE",
                                "tables holds %zu names; at most %d are allowed",
                                json_array_size(tables), GS_WS_MAX_TABLES);
        for (size_t i = 0; i < json_array_size(tables); i++) {
            json_t *t = json_array_get(tables, i);
            if (!json_is_string(t) || json_string_length(t) == 0)
                return invalid(err, "tables must hold non-empty table names%s", "");
        }
        m->tables = tables;
    } else {
        json_t *table = field(root, "table");
        if (!json_is_string(table) || json_string_length(table) == 0)
            return invalid(err,
                           "a subscribe message needs a 'table' string (or 'name' for a live "
                           "query)%s",
                           "");
        m->table = json_string_value(table);
    }
    json_t *filter = field(root, "filter");
    if (filter) {
        if (!json_is_object(filter))
            return invalid(err, "filter must be an object of column -> value%s", "");
        if (check_values(filter, "filter", err))
            return GS_ERROR;
        m->filter = filter;
    }
    json_t *since = field(root, "sinceSeq");
    if (since) {
        if (!json_is_string(since) || gs_ws_parse_seq(json_string_value(since), &m->since_seq))
            return invalid(err,
                           "sinceSeq must be a decimal string of a non-negative sequence "
                           "number%s",
                           "");
        m->has_since = 1;
    }
    json_t *epoch = field(root, "epoch");
    if (epoch && !json_is_string(epoch))
        return invalid(err, "epoch must be a string%s", "");
    m->epoch = json_string_value(epoch);
    json_t *device = field(root, "deviceId");
    if (device && (!json_is_string(device) || json_string_length(device) == 0))
        return invalid(err, "deviceId must be a non-empty string%s", "");
    m->device_id = json_string_value(device);
    json_t *sv = field(root, "schemaVersion");
    if (sv && (!json_is_integer(sv) || json_integer_value(sv) < 0))
        return invalid(err, "schemaVersion must be a non-negative integer%s", "");
    json_t *staged = field(root, "stagedStream");
    if (staged && !json_is_boolean(staged))
        return invalid(err, "stagedStream must be a boolean%s", "");
    if (!m->device_id && staged)
        return invalid(err, "stagedStream requires a deviceId%s", "");
    if (!m->device_id && m->tables)
        return invalid(err, "tables requires a deviceId (device sync); subscribe with 'table'%s",
                       "");
    return GS_OK;
}

static gs_status check_ack(gs_ws_msg *m, gs_error *err)
{
    json_t *device = field(m->root, "deviceId");
    if (!json_is_string(device) || json_string_length(device) == 0)
        return invalid(err, "an ack needs a deviceId string%s", "");
    m->device_id = json_string_value(device);
    json_t *seq = field(m->root, "seq");
    uint64_t v;
    if (!json_is_string(seq) || gs_ws_parse_seq(json_string_value(seq), &v))
        return invalid(err, "an ack needs seq as a decimal string%s", "");
    return GS_OK;
}

static const struct {
    const char *name;
    gs_ws_type type;
    gs_route_action sql_action, named_action; /* 0: the type takes no such form */
} types[] = {
    {"query", GS_WS_QUERY, GS_ROUTE_QUERY, GS_ROUTE_QUERY_NAMED},
    {"execute", GS_WS_EXECUTE, GS_ROUTE_EXECUTE, GS_ROUTE_EXECUTE_NAMED},
    {"transaction", GS_WS_TRANSACTION, GS_ROUTE_TRANSACTION, 0},
    {"batch", GS_WS_BATCH, GS_ROUTE_BATCH, 0},
    {"load", GS_WS_LOAD, GS_ROUTE_LOAD, 0},
    {"subscribe", GS_WS_SUBSCRIBE, 0, 0},
    {"unsubscribe", GS_WS_UNSUBSCRIBE, 0, 0},
    {"ack", GS_WS_ACK, 0, 0},
};

gs_status gs_ws_msg_parse(const char *data, size_t len, int accept_sql, gs_ws_msg *m, gs_error *err)
{
    memset(m, 0, sizeof *m);
    m->id = "";
    json_error_t je;
    m->root = json_loadb(data, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!m->root)
        return gs_error_set(err, 0, "INVALID_JSON",
                            "the message is not valid JSON (line %d, column %d: %s)", je.line,
                            je.column, je.text);
    json_t *root = m->root;
    if (!json_is_object(root))
        return invalid(err, "a message must be a JSON object%s", "");
    json_t *type = json_object_get(root, "type");
    json_t *id = json_object_get(root, "id");
    if (json_is_string(id)) {
        m->id = json_string_value(id);
        m->id_len = json_string_length(id);
    } else if (json_is_integer(id)) {
        snprintf(m->id_text, sizeof m->id_text, "%lld", (long long)json_integer_value(id));
        m->id = m->id_text;
        m->id_len = strlen(m->id_text);
    }
    if (!json_is_string(type))
        return invalid(err, "a message needs a string 'type'%s", "");
    if (!json_is_string(id))
        return invalid(err, "a message needs a string 'id'%s", "");
    const char *t = json_string_value(type);
    size_t k = 0;
    while (k < sizeof types / sizeof types[0] && strcmp(types[k].name, t) != 0)
        k++;
    if (k == sizeof types / sizeof types[0])
        return gs_error_set(err, 0, "UNKNOWN_TYPE",
                            "unknown message type '%.64s' (expected query, execute, transaction, "
                            "batch, load, subscribe, unsubscribe or ack)",
                            t);
    m->type = types[k].type;
    json_t *name = field(root, "name");
    if (name) {
        if (!json_is_string(name) || json_string_length(name) == 0)
            return invalid(err, "name must be a non-empty string%s", "");
        if (!types[k].named_action && m->type != GS_WS_SUBSCRIBE)
            return invalid(err, "a '%s' message names no registered operation", t);
        m->name = json_string_value(name);
    }
    if (types[k].sql_action) {
        m->action = m->name ? types[k].named_action : types[k].sql_action;
        if (!m->name && !accept_sql)
            return gs_error_set(err, 0, "SQL_NOT_ACCEPTED",
                                "this server accepts registered operations only, not SQL "
                                "(server.accept_sql is false); send 'name' and 'args'");
        return check_statement(m, err);
    }
    switch (m->type) {
    case GS_WS_SUBSCRIBE: return check_subscribe(m, err);
    case GS_WS_ACK: return check_ack(m, err);
    default: return GS_OK;
    }
}

void gs_ws_msg_clear(gs_ws_msg *m)
{
    json_decref(m->root);
    memset(m, 0, sizeof *m);
    m->id = "";
}
