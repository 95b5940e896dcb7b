/*
 * Conflict resolver plugins: a pure function from a conflict to a decision. No I/O, no
 * state between calls. Row images and primary keys are JSON objects under the tagged value
 * encoding; HLCs are the spec's encoded strings.
 *
 * Threads: resolve runs on the replication apply thread of a database; it must not block.
 */
#ifndef GATESTREAM_RESOLVER_H
#define GATESTREAM_RESOLVER_H

#include <gatestream/host.h>

#ifdef __cplusplus
extern "C" {
#endif

/** One conflict. Every pointer is valid for the call only; NULL when unknown. @since 1.0 */
typedef struct gs_conflict {
    uint32_t struct_size;
    const char *table;
    const char *primary_key_json;   /**< {"id": 7} */
    const char *operation_local;    /**< "insert" | "update" | "delete" */
    const char *operation_incoming; /**< "insert" | "update" | "delete" */
    const char *local_row_json;     /**< the local row image, NULL when deleted */
    const char *incoming_row_json;  /**< the incoming row image, NULL for a delete */
    const char *local_hlc;
    const char *incoming_hlc;
    const char *local_node_id;
    const char *incoming_node_id;
    const char *local_column_hlcs_json;    /**< {"col": "<hlc>"} when kept, else NULL */
    const char *incoming_column_hlcs_json; /**< likewise for the incoming change */
    const char *primary_node_id;           /**< the group's primary, when known */
} gs_conflict;

typedef enum gs_resolution_kind {
    GS_RESOLVE_KEEP_LOCAL = 1,
    GS_RESOLVE_TAKE_INCOMING = 2,
    GS_RESOLVE_MERGED = 3, /**< merged_row_json holds the row to write */
} gs_resolution_kind;

/** @since 1.0 */
typedef struct gs_resolution {
    uint32_t struct_size;
    gs_resolution_kind kind;
    char *merged_row_json; /**< GS_RESOLVE_MERGED: allocated with host->alloc; core frees */
} gs_resolution;

/** @since 1.0 */
typedef struct gs_resolver_vtable {
    uint32_t struct_size;
    /** Required. */
    gs_status (*create)(const gs_host *host, const void *config, void **instance, gs_error *err);
    /** Required. */
    void (*destroy)(void *instance);
    /** Required. Decide one conflict; GS_ERROR gives CONFLICT_ERROR. */
    gs_status (*resolve)(void *instance, const gs_conflict *conflict, gs_resolution *out,
                         gs_error *err);
} gs_resolver_vtable;

#ifdef __cplusplus
}
#endif
#endif
