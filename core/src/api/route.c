#include "route.h"

#include "../base/text.h"
#include "../base/alloc.h"

#include <string.h>

char *gs_percent_decode(const char *s, size_t len)
{
    char *out = gs_malloc(len + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            if (i + 2 >= len) {
                gs_free(out);
                return NULL;
            }
            int a = gs_hex_value(s[i + 1]), b = gs_hex_value(s[i + 2]);
            if (a < 0 || b < 0 || (a == 0 && b == 0)) {
                gs_free(out);
                return NULL;
            }
            out[o++] = (char)(a * 16 + b);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

typedef struct {
    const char *method;
    const char *tail; /* after /db/{id}/ */
    gs_route_action action;
} db_route;

static const db_route db_routes[] = {
    {"POST", "query", GS_ROUTE_QUERY},
    {"POST", "execute", GS_ROUTE_EXECUTE},
    {"POST", "transaction", GS_ROUTE_TRANSACTION},
    {"POST", "batch", GS_ROUTE_BATCH},
    {"POST", "load", GS_ROUTE_LOAD},
    {"POST", "changes", GS_ROUTE_CHANGES},
    {"POST", "migrations", GS_ROUTE_MIGRATIONS},
    {"POST", "snapshot", GS_ROUTE_SNAPSHOT},
    {"POST", "snapshot/page", GS_ROUTE_SNAPSHOT_PAGE},
    {"POST", "backup", GS_ROUTE_BACKUP},
    {"GET", "backup", GS_ROUTE_BACKUP_STATUS},
    {"GET", "backup/chain", GS_ROUTE_BACKUP_CHAIN},
    {"POST", "backup/verify", GS_ROUTE_BACKUP_VERIFY},
    {"POST", "backup/safe-to-delete", GS_ROUTE_BACKUP_SAFE_TO_DELETE},
    {"POST", "backup/restore", GS_ROUTE_BACKUP_RESTORE},
    {"GET", "backup/restore", GS_ROUTE_BACKUP_RESTORE_STATUS},
    {"GET", "cluster", GS_ROUTE_CLUSTER},
};

void gs_route_clear(gs_route *r)
{
    gs_free(r->database_id);
    gs_free(r->name);
    gs_free(r->path);
    r->database_id = r->name = r->path = NULL;
}

gs_status gs_route_match(const char *method, const char *path, gs_route *out)
{
    memset(out, 0, sizeof *out);
    if (!method || !path)
        return GS_ERROR;
    size_t plen = strcspn(path, "?#");
    int get = strcmp(method, "GET") == 0;
    if (get && plen == 7 && strncmp(path, "/health", 7) == 0) {
        out->action = GS_ROUTE_HEALTH;
        return GS_OK;
    }
    if (get && plen == 13 && strncmp(path, "/health/ready", 13) == 0) {
        out->action = GS_ROUTE_HEALTH_READY;
        return GS_OK;
    }
    if (get && plen == 13 && strncmp(path, "/capabilities", 13) == 0) {
        out->action = GS_ROUTE_CAPABILITIES;
        return GS_OK;
    }
    if (get && plen == 7 && strncmp(path, "/status", 7) == 0) {
        out->action = GS_ROUTE_STATUS_PAGE;
        return GS_OK;
    }
    if (get && plen == 12 && strncmp(path, "/status.json", 12) == 0) {
        out->action = GS_ROUTE_STATUS_JSON;
        return GS_OK;
    }
    if (plen <= 4 || strncmp(path, "/db/", 4) != 0)
        return GS_ERROR;
    const char *id = path + 4;
    const char *slash = memchr(id, '/', plen - 4);
    if (!slash || slash == id)
        return GS_ERROR;
    const char *tail = slash + 1;
    size_t tlen = (size_t)(path + plen - tail);
    gs_route_action action = 0;
    const char *name = NULL;
    size_t nlen = 0;
    for (size_t i = 0; i < sizeof db_routes / sizeof db_routes[0]; i++) {
        size_t l = strlen(db_routes[i].tail);
        if (l == tlen && strncmp(tail, db_routes[i].tail, l) == 0 &&
            strcmp(method, db_routes[i].method) == 0) {
            action = db_routes[i].action;
            break;
        }
    }
    if (!action && strcmp(method, "POST") == 0) {
        if (tlen > 6 && strncmp(tail, "query/", 6) == 0) {
            action = GS_ROUTE_QUERY_NAMED;
            name = tail + 6;
            nlen = tlen - 6;
        } else if (tlen > 8 && strncmp(tail, "execute/", 8) == 0) {
            action = GS_ROUTE_EXECUTE_NAMED;
            name = tail + 8;
            nlen = tlen - 8;
        }
        if (name && memchr(name, '/', nlen))
            action = 0;
    }
    if (!action)
        return GS_ERROR;
    out->action = action;
    out->database_id = gs_percent_decode(id, (size_t)(slash - id));
    out->path = gs_percent_decode(path, plen);
    if (name)
        out->name = gs_percent_decode(name, nlen);
    if (!out->database_id || !out->path || (name && !out->name) || !out->database_id[0]) {
        gs_route_clear(out);
        return GS_ERROR;
    }
    return GS_OK;
}
