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
 * before_query may deny a statement; after_query, database_open and database_close only
 * observe; before_connect may deny a database open. Every hook of each event runs, in config
 * order, until one denies. All hooks are registry-level: they see every database.
 *
 * Threads: called on any core thread, often a transport's I/O thread or a database thread;
 * must not block.
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
    /** The registered operation whose statement this is, or NULL for SQL sent in the
     * request. @since 1.2 */
    const char *operation;
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
    /**
     * Optional. After a statement operation answered (one call per operation: a transaction,
     * batch or registered operation is one call). ctx->sql is the operation's statements
     * joined by ";\n" when there are several; ctx->params_json is NULL. duration_ms runs from
     * submission to the database's answer; failed is 1 when it answered with an error.
     * Called on a database thread: must not block. Cannot deny.
     * @since 1.2
     */
    void (*after_query)(void *instance, const gs_query_context *ctx, double duration_ms,
                        int failed);
    /**
     * Optional. Before a database file opens (configured databases and tenant auto-opens).
     * GS_ERROR denies the open (the caller gets err, HOOK_DENIED by default); GS_OK or
     * GS_DECLINED lets it open. Called on the opening thread, without registry locks held.
     * @since 1.2
     */
    gs_status (*before_connect)(void *instance, const char *database_id, const char *path,
                                gs_error *err);
    /** Optional. After a database opened (and ran its migrations), just before it is
     * registered: no request reaches it before this returns. Cannot deny. @since 1.2 */
    void (*database_open)(void *instance, const char *database_id, const char *path);
    /** Optional. After a database closed (close, eviction, shutdown). Cannot deny.
     * @since 1.2 */
    void (*database_close)(void *instance, const char *database_id, const char *path);
} gs_hook_vtable;

#ifdef __cplusplus
}
#endif
#endif
