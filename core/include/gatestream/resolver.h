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

/**
 * One conflict: the spec's ConflictContext (03-replication "Conflict Resolution"). Every
 * pointer is valid for the call only; NULL when unknown or absent. Row images and keys are
 * JSON objects under the tagged value encoding (value.h).
 * @since 1.3 (the layout of 1.0-1.2 was never used by the core; resolvers must be built
 * against 1.3 or later, and the loader refuses older ones)
 */
typedef struct gs_conflict {
    uint32_t struct_size;
    const char *table;
    const char *row_id;           /**< the change's rowId */
    const char *primary_key_json; /**< {"id": 7} */
    /* the local side: the row as it is now, and who last wrote it */
    const char *local_row_json; /**< NULL when the row is absent locally */
    const char *local_hlc;      /**< highest stamp known for the row; NULL = none */
    const char *local_node_id;  /**< the node that wrote local_hlc; NULL = none */
    /* the incoming change */
    const char *incoming_operation; /**< "insert" | "update" | "delete" */
    const char *incoming_new_json;  /**< newData; NULL for a delete */
    const char *incoming_old_json;  /**< oldData (the common ancestor); NULL for an insert */
    const char *incoming_hlc;
    const char *incoming_node_id;
    /** Per-column versions kept for field merge: {"col": {"hlc": "...", "nodeId": "..."}};
     * NULL or "{}" when the row has none. */
    const char *column_versions_json;
    const char *primary_node_id; /**< the group's primary, when known */
} gs_conflict;

/** The spec's actions: keep_local, accept_remote, merge. */
typedef enum gs_resolution_kind {
    GS_RESOLVE_KEEP_LOCAL = 1,
    GS_RESOLVE_TAKE_INCOMING = 2, /**< accept_remote */
    GS_RESOLVE_MERGED = 3,        /**< merged_row_json holds the full row to write */
} gs_resolution_kind;

/** @since 1.3 */
typedef struct gs_resolution {
    uint32_t struct_size;
    gs_resolution_kind kind;
    char *merged_row_json; /**< GS_RESOLVE_MERGED: allocated with host->alloc; core frees */
} gs_resolution;

/** @since 1.3 */
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
