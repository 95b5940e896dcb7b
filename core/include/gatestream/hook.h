/*
 * Hook plugins: request authentication (the spec's authenticate hook), SQL allowlists,
 * audit. Several hooks chain in config order.
 *
 * authenticate: the first hook that returns GS_OK with an identity decides; a hook that
 * refuses (GS_ERROR with err->status, e.g. 401 or 403) stops the chain and the request gets
 * that status, code and message; GS_DECLINED passes to the next hook. When every hook
 * declines, the request is anonymous. A hook that fails without a status gives 500
 * HOOK_ERROR.
 *
 * Threads: called on any core thread, often a transport's I/O thread; must not block.
 */
#ifndef GATESTREAM_HOOK_H
#define GATESTREAM_HOOK_H

#include <gatestream/host.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * What authenticate sees (the spec's RequestContext). Valid for the call only.
 * @since 1.0
 */
typedef struct gs_auth_context {
    uint32_t struct_size;
    const char *method;
    const char *path;        /**< decoded path */
    const char *database_id; /**< NULL when the route names none */
    const gs_header *headers;
    size_t header_count;
    const char *remote_address;
} gs_auth_context;

/**
 * What before_query sees. Valid for the call only.
 * @since 1.0
 */
typedef struct gs_query_context {
    uint32_t struct_size;
    const char *database_id;
    const char *sql;
    const char *params_json;   /**< bound parameters as JSON text, or NULL */
    const char *identity_json; /**< the request's identity, or NULL */
    int is_write;              /**< 1 for execute/transaction/batch/load */
} gs_query_context;

/** @since 1.0 */
typedef struct gs_hook_vtable {
    uint32_t struct_size;
    /** Required. */
    gs_status (*create)(const gs_host *host, const void *config, void **instance, gs_error *err);
    /** Required. */
    void (*destroy)(void *instance);
    /**
     * Optional. On GS_OK set *identity_json to a JSON object allocated with host->alloc
     * (the core frees it). See the chain rule above.
     */
    gs_status (*authenticate)(void *instance, const gs_auth_context *ctx, char **identity_json,
                              gs_error *err);
    /** Optional. GS_ERROR denies the statement (the core answers with err, HOOK_DENIED by
     * default); GS_OK or GS_DECLINED lets it run. */
    gs_status (*before_query)(void *instance, const gs_query_context *ctx, gs_error *err);
} gs_hook_vtable;

#ifdef __cplusplus
}
#endif
#endif
