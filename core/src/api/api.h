/*
 * The api layer: the Sirannon request model every client transport shares (spec 05-server).
 * It routes a gs_request (GET /health, /health/ready, /capabilities; POST /db/{id}/query,
 * /execute, /transaction, /batch, /load, /query/{name}, /execute/{name}; OPTIONS for CORS),
 * authenticates it through the hook chain, validates the body, submits the work to the
 * database's pool and answers through request->complete with the spec's JSON and errors.
 *
 * Threads: gs_api_submit runs on a transport's I/O thread and runs no SQL; completions run on
 * database threads. Ownership: the api copies what it keeps of a request.
 */
#ifndef GS_API_API_H
#define GS_API_API_H

#include <gatestream/host.h>
#include <gatestream/hook.h>

#include "../base/buf.h"
#include "../db/registry.h"
#include "operations.h"

typedef struct gs_api gs_api;

typedef struct gs_api_hook {
    const char *name; /* instance name, for messages */
    const gs_hook_vtable *vt;
    void *instance;
} gs_api_hook;

typedef struct gs_api_cors {
    int enabled;
    const char *const *origins; /* NULL or empty = "*" */
    size_t origin_count;
    char *methods; /* "GET, POST, OPTIONS" */
    char *headers; /* "Content-Type, Authorization" */
    int64_t max_age;
} gs_api_cors;

typedef struct gs_api_options {
    int accept_sql;
    int accept_backup_restore;
    int cluster_status; /* 0 off, 1 an authenticated identity, 2 any request */
    uint64_t max_body_bytes;
    gs_api_cors cors;
    const gs_api_hook *hooks; /* chained in order */
    size_t hook_count;
    gs_operations *operations; /* may be NULL; the api takes it */
    int metrics_enabled;       /* serve GET /metrics (else it is 404 NOT_FOUND) */
    int metrics_authenticate;  /* run the authenticate hook chain before answering it */
    int status_page;           /* serve GET /status and /status.json (else 404 NOT_FOUND) */
    const char *node_id;       /* node.id, shown by the status page (copied; NULL = "") */
    /* The node's replication sources as a JSON array, those of database db_id (NULL: every
     * database), for /status.json and /health/ready (any thread, no I/O; NULL: none) */
    void (*sources_json)(void *user, const char *db_id, gs_buf *out);
    void *sources_user;
    /* POST /db/{id}/backup/restore: open database `id` again with the settings it was
     * configured with, after its file was rebuilt (any thread; NULL: restores cannot reopen) */
    gs_status (*reopen)(void *user, const char *id, gs_error *err);
    void *reopen_user;
} gs_api_options;

/** Build the api over a registry (borrowed; it must outlive the api). Copies opts. */
gs_status gs_api_new(const gs_api_options *opts, gs_registry *registry, gs_api **out,
                     gs_error *err);
/** Answer one request; see host.h api_submit. */
gs_status gs_api_submit(gs_api *api, const gs_request *req);
/** From now on new requests get 503 SHUTDOWN. */
void gs_api_begin_shutdown(gs_api *api);
/** Wait until no request is in flight, at most timeout_ms. Returns the number still running. */
int gs_api_wait_idle(gs_api *api, int64_t timeout_ms);
void gs_api_free(gs_api *api);

#endif
