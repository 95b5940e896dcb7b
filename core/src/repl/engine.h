/*
 * The replication engine of one database in static mode (spec 03 "Primary-Replica
 * Topology", "Replication Engine", "Write Concern", "Write Forwarding", "Peer Tracking",
 * "First Sync"; spec 04 "Replication Transport Interface").
 *
 * Promise: a primary sends the changes of its change log to every connected replica in
 * order, in checksummed batches of at most batch_size changes, keeping at most
 * max_pending_batches unacknowledged per peer and retransmitting from a batch that is not
 * acknowledged within ack_timeout_ms; a replica checks every batch (state, source, known peer,
 * topology, max_batch_changes, clock drift, checksum), applies it atomically, and answers with
 * its applied position. Writes wait for their write concern; a replica forwards execute and
 * batch to the primary when write_forwarding is on and refuses other writes with
 * TOPOLOGY_ERROR. A replica that has never synced copies a snapshot first (sync.c).
 *
 * Threads: the transport reports on its own threads; the engine copies each message into a
 * queue served by its inbound thread (batches are applied there, on the database's writer),
 * and a timer thread runs the sender loop, the ack and forward deadlines and the write-concern
 * timeouts. Every public function is thread-safe. Completion callbacks run on engine or
 * database threads and must not block.
 *
 * Ownership: the engine borrows the database, the transport and the resolvers (the node owns
 * them and stops the engine first); it copies the strings of its options.
 */
#ifndef GS_REPL_ENGINE_H
#define GS_REPL_ENGINE_H

#include "db/database.h"
#include "repl/apply.h"
#include "repl/authority.h"
#include "repl/table_mode.h"

#include <gatestream/repl_transport.h>
#include <gatestream/resolver.h>

#include <jansson.h>
#include <stdint.h>

typedef struct gs_repl_engine gs_repl_engine;

/** The replication protocol this engine speaks (Hello.protocol_version). */
#define GS_REPL_PROTOCOL_VERSION "1.0"

typedef struct gs_repl_peer_cfg {
    const char *id;
    const char *role; /**< "primary" | "replica" */
} gs_repl_peer_cfg;

typedef struct gs_repl_table_resolver {
    const char *table;
    gs_repl_resolver_ref ref;
} gs_repl_table_resolver;

typedef struct gs_repl_options {
    const char *node_id;
    const char *role; /**< "primary" | "replica" */
    const gs_repl_peer_cfg *peers;
    size_t npeers;
    const gs_repl_transport_vtable *transport;
    void *transport_instance;
    gs_repl_resolver_ref default_resolver;
    const gs_repl_table_resolver *resolvers;
    size_t nresolvers;
    int keep_column_versions; /**< some table resolves by field merge */

    int64_t batch_size;          /**< 100 */
    int64_t batch_interval_ms;   /**< 100 */
    int64_t max_pending_batches; /**< 10 */
    int64_t max_batch_changes;   /**< 1000 (normative) */
    int64_t max_clock_drift_ms;  /**< 60000 (normative) */
    int64_t ack_timeout_ms;      /**< 5000 (normative) */

    int initial_sync;                  /**< 1 */
    int64_t sync_batch_size;           /**< 10000 */
    int64_t sync_batch_max_bytes;      /**< 4 MiB: a page's bound in bytes (one row may pass it) */
    int64_t max_concurrent_syncs;      /**< 2 */
    int64_t max_sync_duration_ms;      /**< 1800000 */
    int64_t max_sync_lag_before_ready; /**< 100 */
    int64_t sync_ack_timeout_ms;       /**< 30000 */
    int64_t catch_up_deadline_ms;      /**< 600000 */

    int write_forwarding;             /**< 0 */
    int64_t forward_deadline_ms;      /**< 30000 */
    const char *write_concern;        /**< default level when a write states none: "local" */
    int64_t write_concern_timeout_ms; /**< 5000 */
    int64_t resume_from_seq;          /**< < 0: none */
    double flow_max_lag_seconds;      /**< <= 0: off */

    /** Coordinator mode when set (authority.h; the engine fills the callbacks and starts it):
     * roles, terms and the in-sync set come from the coordinator; NULL = static mode. */
    const gs_authority_options *coordinator;
    /** Coordinator mode: an in-sync replica that leaves a waiting write unacknowledged this
     * long is removed from the in-sync set (then the write completes without it). */
    int64_t in_sync_timeout_ms;

    /** flowControl: a peer's lag passed flow_max_lag_seconds (timer thread). */
    void (*on_lag_exceeded)(void *user, const char *peer, double lag_seconds);
    /** onBeforeForwardedQuery: may refuse a forwarded statement (inbound thread). */
    gs_status (*before_forwarded)(void *user, const char *sql, json_t *params, gs_error *err);
    void *user;

    /** Per-table replication modes (table_mode.h; static mode only, refused with a
     * coordinator). With rules, every node sends its peers the changes of the tables it emits
     * and applies from any configured peer only the tables it pulls, and writes are routed per
     * table (gs_repl_route_request). No rules (0): the single-primary behaviour. */
    const gs_table_mode_rule *table_modes;
    size_t ntable_modes;
    /** With table modes: a local write to a `replica` table is refused (TOPOLOGY_ERROR)
     * instead of forwarded to the primary. */
    int write_proxy_reject;
} gs_repl_options;

/** The spec's defaults (pointers NULL, role "primary", write concern "local"). */
void gs_repl_options_default(gs_repl_options *o);

/** Check options without starting anything (--check-config): INVALID_CONFIG naming the
 * problem (role, peers, limits, write concern). */
gs_status gs_repl_options_check(const gs_repl_options *o, gs_error *err);

/**
 * Create the replication tables, turn on change capture for every table, start the
 * transport and the engine's threads, and attach the engine to db (gs_db_repl). Errors:
 * INVALID_CONFIG for a bad role/peer list, REPLICATION_ERROR, TRANSPORT_ERROR.
 */
gs_status gs_repl_engine_start(gs_database *db, const gs_repl_options *o, gs_repl_engine **out,
                               gs_error *err);
/** Detach from the database, fail waiting writes and forwards with SHUTDOWN, stop the
 * transport and the threads. Idempotent. */
void gs_repl_engine_stop(gs_repl_engine *e);
void gs_repl_engine_free(gs_repl_engine *e);

/** What the api does with a write: run it here, forward it, or refuse it. */
typedef enum gs_repl_write_route {
    GS_REPL_WRITE_LOCAL = 0,
    GS_REPL_WRITE_FORWARD = 1,
} gs_repl_write_route;

/** GS_OK with *route, or GS_ERROR with TOPOLOGY_ERROR (a replica without forwarding, a
 * transaction or load on a replica). `statements` is how many statements the write holds. */
gs_status gs_repl_route_write(gs_repl_engine *e, gs_db_job_kind kind, size_t statements,
                              gs_repl_write_route *route, gs_error *err);

/** Route a whole request: gs_repl_route_write without table modes; with them, by the tables the
 * request writes (found by preparing its statements, never running them): every table
 * written here (primary, sync, writeonly, excluded) runs locally, every table owned by the
 * primary (replica) is forwarded (TOPOLOGY_ERROR with write_proxy: reject), a readonly table
 * or a request mixing local and forwarded tables is refused with TOPOLOGY_ERROR naming the
 * table and its mode. A request that names no table (DDL) routes as without table modes.
 * Any thread. */
gs_status gs_repl_route_request(gs_repl_engine *e, const gs_db_request *req,
                                gs_repl_write_route *route, gs_error *err);

/** Forward an EXECUTE or BATCH request to the primary; req->done is called exactly once
 * with the primary's answer shaped as the local database would give it. GS_ERROR
 * (TOPOLOGY_ERROR with no primary connected) means done is never called. */
gs_status gs_repl_forward(gs_repl_engine *e, const gs_db_request *req, gs_error *err);

/** The level used when a write states none. */
const char *gs_repl_default_concern(const gs_repl_engine *e);

/**
 * Wait until the write just committed (every change up to the database's committed seq) has
 * met `level` ("local", "majority", "all"); timeout_ms <= 0 uses the configured default.
 * done(user, GS_OK, NULL) or done(user, GS_ERROR, err) with WRITE_CONCERN_ERROR / SHUTDOWN,
 * exactly once, possibly before this returns.
 */
void gs_repl_await_concern(gs_repl_engine *e, const char *level, int64_t timeout_ms,
                           void (*done)(void *user, gs_status st, const gs_error *err), void *user);

/** Coordinator mode: may a read with this readConcern level ("local", "majority",
 * "linearizable"; NULL = local: the client picks its default) run here? READ_CONCERN_ERROR
 * otherwise. Static mode: always GS_OK (the spec ignores read concern there). */
gs_status gs_repl_check_read(gs_repl_engine *e, const char *level, gs_error *err);
/** 1 in coordinator mode. */
int gs_repl_coordinated(const gs_repl_engine *e);
/** Append the GET /db/{id}/cluster body (ClusterStatusInfo, spec 05) for database db_id. */
void gs_repl_cluster_json(gs_repl_engine *e, const char *db_id, gs_buf *b);

/** Append the /health/ready "replication" object (spec 05 Health Endpoints). */
void gs_repl_status_json(gs_repl_engine *e, gs_buf *b);
/** The NodeHealth state outside coordinator mode: "healthy", "syncing" or "unavailable". */
const char *gs_repl_health_state(gs_repl_engine *e);

/* ---- for tests and the benchmark ---- */

typedef struct gs_repl_peer_info {
    char id[128];
    int connected;
    int64_t last_acked_seq, last_sent_seq;
    int pending_batches;
} gs_repl_peer_info;

typedef struct gs_repl_counters {
    uint64_t batches_sent, batches_received, batches_applied, batches_duplicate, batches_gap;
    uint64_t retransmits, rejected;
    uint64_t changes_applied, conflicts;
    uint64_t changes_filtered; /**< table modes: received changes of tables not pulled here */
} gs_repl_counters;

/** Copy up to max peers; returns how many the engine tracks. */
size_t gs_repl_peers(gs_repl_engine *e, gs_repl_peer_info *out, size_t max);
void gs_repl_get_counters(gs_repl_engine *e, gs_repl_counters *out);
/** "pending" | "syncing" | "catching-up" | "ready" */
const char *gs_repl_sync_phase(gs_repl_engine *e);

/** First-sync progress. Joiner fields describe the sync this replica runs (active = 1) or ran
 * last; the counters add up over the engine's life; pages_resent is the source side. */
typedef struct gs_sync_progress {
    int active;                        /**< 1 while this replica runs a first sync */
    char source[128];                  /**< the node it syncs from */
    int64_t tables_done, tables_total; /**< tables_total 0 = not known yet */
    int64_t rows;                      /**< rows held, resumed parts included */
    int64_t rows_total;                /**< rows the source announced; 0 = unknown */
    int64_t bytes;                     /**< row bytes received by this engine */
    int64_t elapsed_ms;                /**< since this engine's sync started */
    double rows_per_sec;               /**< rows received by this engine / elapsed */
    int64_t eta_seconds;               /**< -1 = unknown */
    uint64_t tables_resumed;           /**< tables continued after a persisted page */
    uint64_t tables_restarted;         /**< partly held tables the source sent again from page 0 */
    uint64_t pages_duplicate;          /**< pages received again: acknowledged, not applied */
    uint64_t pages_resent;             /**< source: pages sent again after an ack timeout */
} gs_sync_progress;

/** Copy the first-sync progress (any thread). */
void gs_repl_sync_progress(gs_repl_engine *e, gs_sync_progress *out);
/** The highest seq applied from the primary (replica), or the local committed seq (primary). */
int64_t gs_repl_position(gs_repl_engine *e);
/** The last error the engine recorded ("" when none): code and message. */
void gs_repl_last_error(gs_repl_engine *e, gs_error *out);

#endif
