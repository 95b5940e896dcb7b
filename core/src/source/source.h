/*
 * Sources: a database of this node follows tables of remote nodes (databases[].sources[]).
 *
 * Promise: each source runs on its own thread, so sources start in parallel and one that
 * cannot reach its remote never holds up another. A source is a client of the remote node's
 * public API through libgatestream-client (WebSocket): it lists the remote tables its
 * patterns name (sqlite_master over POST query), creates each missing local table from the
 * remote CREATE TABLE under the local name (prefix + remote name), subscribes to each table
 * (`subscribe` with `table`, and `sinceSeq` + `epoch` when it holds a position), copies the
 * rows of a table it holds no position for in keyset pages over the primary key, then applies
 * every change event as a full-row upsert or a delete by primary key. Changes are applied on
 * the database's writer thread (gs_db_writer_call) in transactions that also store the
 * table's position (seq + epoch) in `_sirannon_gs_sources`, so a restart resumes where it
 * stopped without copying again; a `resync` from the remote (cursor outside its history,
 * epoch changed) copies that table again. Applied changes are ordinary local writes: this
 * node's own change feed reports them. On a lost connection the client library reconnects
 * and resumes; a source that fails to start (remote down, refused) retries with exponential
 * backoff (retry_initial_ms doubling to retry_max_ms, +/-20% jitter), logging each change of
 * state once, not each attempt.
 *
 * Why not the device-sync routes (POST /db/{id}/snapshot, subscribe with `tables`): this
 * server answers them with SYNC_UNSUPPORTED, so a source built on them could follow no
 * gatestream node. The query route and per-table subscriptions are served by gatestream
 * and Sirannon alike; the remote must accept SQL (server.accept_sql) for the source's
 * reads.
 *
 * Ownership: gs_sources borrows the settings (they outlive it) and holds one registry
 * reference per database it writes. Status snapshots are the caller's (free them).
 * Threads: start, stop and free on the main thread; gs_sources_status and
 * gs_sources_status_json from any thread.
 */
#ifndef GS_SOURCE_SOURCE_H
#define GS_SOURCE_SOURCE_H

#include "../base/buf.h"
#include "../db/registry.h"

#include <gatestream/abi.h>
#include <stdint.h>

typedef struct gs_sources gs_sources;

/** One source's configuration (strings borrowed for the life of the gs_sources). */
typedef struct gs_source_config {
    const char *database; /**< local database id */
    const char *id;
    const char *url;
    const char *remote_database;
    const char *const *tables; /**< patterns */
    size_t table_count;
    const char *prefix;
    const char *token;       /**< NULL = none */
    const char *tls_ca_cert; /**< NULL = system default */
    int64_t page_rows;
    int64_t retry_initial_ms;
    int64_t retry_max_ms;
} gs_source_config;

typedef enum gs_source_state {
    GS_SOURCE_CONNECTING = 0,
    GS_SOURCE_BOOTSTRAPPING = 1,
    GS_SOURCE_FOLLOWING = 2,
    GS_SOURCE_RETRYING = 3,
    GS_SOURCE_FAILED = 4, /**< refused for a reason a retry will not fix (auth, config); it
                             still retries at retry_max_ms */
} gs_source_state;

/** "connecting" | "bootstrapping" | "following" | "retrying" | "failed". */
const char *gs_source_state_name(gs_source_state s);

/** A copy of one source's state. */
typedef struct gs_source_status {
    char database[128];
    char id[128];
    char url[512];
    char tables[512]; /**< the configured patterns, comma-separated */
    gs_source_state state;
    uint64_t position_seq;     /**< highest remote seq applied (over the source's tables) */
    int64_t lag_ms;            /**< ms since the last change applied; -1 before any */
    char last_error[600];      /**< "CODE: message" of the last failure, "" when none; kept
                                    after the source recovers (state says whether it did) */
    int64_t last_error_at_ms;  /**< when that failure happened (Unix ms), 0 when none */
    int64_t rows_bootstrapped; /**< rows copied by bootstraps since start */
    int64_t bootstraps;        /**< table copies since start (0 after a clean resume) */
    int64_t changes_applied;   /**< change events applied since start */
} gs_source_status;

/** Start one thread per source. The databases must be open in `reg`. INVALID_CONFIG when a
 * source names a database that is not open; nothing runs then. */
gs_status gs_sources_start(gs_registry *reg, const gs_source_config *configs, size_t n,
                           gs_sources **out, gs_error *err);
/** Stop every source (join its thread, close its connection); idempotent. NULL is a no-op. */
void gs_sources_stop(gs_sources *s);
/** Stop and free. NULL is a no-op. */
void gs_sources_free(gs_sources *s);

/** The state of every source: *out (gs_free it) holds *count entries. NULL/0 when none. */
gs_status gs_sources_status(gs_sources *s, gs_source_status **out, size_t *count, gs_error *err);
/** The same as a JSON array of {database,id,endpoint,tables,state,positionSeq,lagChanges
 * (null: the remote reports no head),lagMs,lastError,lastErrorAtMs (Unix ms or null),
 * rowsBootstrapped,bootstraps,
 * changesApplied}, only the sources of database db_id (NULL: all). */
void gs_sources_status_json(gs_sources *s, const char *db_id, gs_buf *out);

#endif
