/*
 * Route matching for the Sirannon HTTP surface (spec 05-server): method + raw path ->
 * action, with the database id and operation name percent-decoded. Pure; any thread.
 */
#ifndef GS_API_ROUTE_H
#define GS_API_ROUTE_H

#include <gatestream/abi.h>

typedef enum gs_route_action {
    GS_ROUTE_HEALTH = 1,
    GS_ROUTE_HEALTH_READY,
    GS_ROUTE_CAPABILITIES,
    GS_ROUTE_QUERY,
    GS_ROUTE_EXECUTE,
    GS_ROUTE_TRANSACTION,
    GS_ROUTE_BATCH,
    GS_ROUTE_LOAD,
    GS_ROUTE_QUERY_NAMED,
    GS_ROUTE_EXECUTE_NAMED,
    GS_ROUTE_CHANGES,
    GS_ROUTE_MIGRATIONS,
    GS_ROUTE_SNAPSHOT,
    GS_ROUTE_SNAPSHOT_PAGE,
    GS_ROUTE_BACKUP,                /* POST /backup */
    GS_ROUTE_BACKUP_STATUS,         /* GET /backup */
    GS_ROUTE_BACKUP_CHAIN,          /* GET /backup/chain */
    GS_ROUTE_BACKUP_VERIFY,         /* POST /backup/verify */
    GS_ROUTE_BACKUP_SAFE_TO_DELETE, /* POST /backup/safe-to-delete */
    GS_ROUTE_BACKUP_RESTORE,        /* POST /backup/restore */
    GS_ROUTE_BACKUP_RESTORE_STATUS, /* GET /backup/restore */
    GS_ROUTE_CLUSTER,               /* GET /cluster */
    GS_ROUTE_STATUS_PAGE,           /* GET /status (server.status_page) */
    GS_ROUTE_STATUS_JSON,           /* GET /status.json (server.status_page) */
} gs_route_action;

typedef struct gs_route {
    gs_route_action action;
    char *database_id; /* decoded; NULL for the fixed routes */
    char *name;        /* decoded operation name for *_NAMED */
    char *path;        /* the decoded path, for hooks */
} gs_route;

/** GS_ERROR when nothing matches (the caller answers 404 NOT_FOUND). */
gs_status gs_route_match(const char *method, const char *path, gs_route *out);
void gs_route_clear(gs_route *r);
/** Percent-decode s[0..len) into a new string; NULL on a bad escape or %00. */
char *gs_percent_decode(const char *s, size_t len);

#endif
