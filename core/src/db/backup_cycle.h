/*
 * The change-capture backup cycle of one database (spec 02 "Change capture", "Chain records",
 * "Cycle status"): a full copy starts a chain; then, every interval_ms, the frames written to
 * the write-ahead log since the previous turn are staged under the writer, the log is
 * checkpointed under that same hold, and the staged capture goes to the destination as the
 * chain's next change piece with its record. A chain older than full_copy_interval_ms is
 * replaced by a fresh one on the next turn.
 *
 * Promise:
 *  - A database opened with backups runs with wal_autocheckpoint=0 and no checkpoint after a
 *    bulk load (database.c, writer.c): only the cycle checkpoints, right after a capture, so no
 *    frame leaves the log before it is staged. A capture that fails stops the checkpoint behind
 *    it. A staged capture reaches the destination before the next capture runs.
 *  - Each turn: send a capture still waiting; check once per chain that the list of chains
 *    still names it (else BACKUP_CHAIN_BROKEN and a fresh chain); start a fresh chain when due;
 *    capture and checkpoint; send. A log restarted under the chain (BACKUP_LOG_REWOUND) or a
 *    staged capture gone from disk (BACKUP_CHAIN_BROKEN) starts a fresh chain at once.
 *  - max_uncaptured_log_bytes (> 0): after a turn that captured nothing, a log past it is
 *    emptied, the chain dropped and BACKUP_CHAIN_BROKEN reported; between turns the log is
 *    measured every second and a turn runs early when it has grown past the figure.
 *  - The cycle's state (chain, cursor into the log, a capture waiting to be sent) lives in
 *    "<staging_dir>/cycle.json" (written to a temporary name, fsynced, renamed), so a database
 *    reopening onto a chain takes an ordinary turn at once and continues it.
 *  - At close: the scheduler stops (a full copy or transfer in flight is cancelled at its next
 *    step or piece), the writes drain, the log is captured a last time on the writer before
 *    its final checkpoint (a failed capture keeps the log: the next open captures it), and the
 *    capture is sent before the database finishes closing.
 *  - POST /backup queues a turn behind the one running; later triggers join the queued one.
 *    A scheduled turn falling due while one runs is reported as a 'previous-run-active' skip.
 *
 * Not here: the preferred backup node of a replication group (BackupGroupSource): gatestream
 * has no replication group yet, and the spec runs every turn without one.
 *
 * Ownership: the config is copied at start. Threads: one scheduler thread per cycle
 * ("gs-backup"), which, like the worker of the cycle's destination handle, runs in the
 * background (backup_priority.h: SCHED_BATCH, nice +10) so the writer and the transports take
 * a core before the backup does; the copy's steps and the captures run on the writer at its
 * own priority.
 * The public functions are thread-safe; the close hooks are called by database.c / writer.c
 * only.
 */
#ifndef GS_DB_BACKUP_CYCLE_H
#define GS_DB_BACKUP_CYCLE_H

#include "../sqlite/connection.h"
#include "backup_dest.h"
#include "database.h"

#include <jansson.h>
#include <stdint.h>

/** BackupCycleOptions as the core takes them. */
typedef struct gs_backup_cycle_config {
    const gs_backup_destination_vtable *vt; /**< the destination plugin (borrowed) */
    void *instance;                         /**< its instance (borrowed; outlives the db) */
    const char *destination_name;           /**< for messages */
    int64_t interval_ms;                    /**< default 60000 */
    int64_t full_copy_interval_ms;          /**< default 86400000 */
    const char *chain_name;                 /**< default sirannon-backup-chain */
    const char *name_prefix;                /**< default sirannon-backup */
    const char *staging_dir;                /**< default "<database file>-backup" */
    int64_t piece_bytes;                    /**< default 16 MiB */
    int fingerprint;                        /**< default 1 */
    int64_t max_uncaptured_log_bytes;       /**< 0 = unbounded */
    int pages_per_step, restart_limit, no_progress_step_limit;
    int64_t stall_timeout_ms, destination_timeout_ms;
} gs_backup_cycle_config;

void gs_backup_cycle_config_default(gs_backup_cycle_config *c);

typedef struct gs_backup_cycle gs_backup_cycle;

/** The database's cycle, or NULL when it was opened without backups. */
gs_backup_cycle *gs_db_backup_cycle(gs_database *db);

/** Queue a turn (POST /backup) and return at once; joins a turn already queued.
 * DATABASE_CLOSED once the database is closing. */
gs_status gs_backup_cycle_trigger(gs_backup_cycle *c, gs_error *err);
/** Queue a turn and wait for it to finish: the turn's outcome (tests, tools). */
gs_status gs_backup_cycle_run_once(gs_backup_cycle *c, gs_error *err);

/** BackupCycleStatus (new reference). */
json_t *gs_backup_cycle_status(gs_backup_cycle *c);
/** {"chains":[...]} read from the destination (new reference in *out). */
gs_status gs_backup_cycle_chains(gs_backup_cycle *c, json_t **out, gs_error *err);
/** BackupVerifyResult of the stored backup `name`. */
gs_status gs_backup_cycle_verify(gs_backup_cycle *c, const char *name, json_t **out, gs_error *err);
/** {"records":[...]} no restore needs. */
gs_status gs_backup_cycle_safe_to_delete(gs_backup_cycle *c, int has_restorable_from,
                                         int64_t restorable_from, json_t **out, gs_error *err);

/** BackupChainLocation: where a restore of this database reads (strings gs_malloc'd). */
typedef struct gs_backup_location {
    const gs_backup_destination_vtable *vt;
    void *instance;
    char *chain_name;
    char *staging_dir;
    int64_t destination_timeout_ms;
} gs_backup_location;
gs_status gs_backup_cycle_location(gs_backup_cycle *c, gs_backup_location *out, gs_error *err);
void gs_backup_location_clear(gs_backup_location *l);
/** Forget the chain a staging folder was extending: remove the state file and every staged
 * capture and copy in it (a restore does this before it replaces the database file). */
void gs_backup_discard_staged(const char *staging_dir);

/** Counters for GET /metrics. */
#define GS_BACKUP_DURATION_BOUNDS 9
extern const double gs_backup_duration_bounds[GS_BACKUP_DURATION_BOUNDS];
typedef struct gs_backup_metrics {
    uint64_t runs[2];  /**< runs written: [0] full copies, [1] change pieces */
    uint64_t failures; /**< turns that ended with an error */
    uint64_t skips;    /**< turns skipped (previous-run-active) */
    uint64_t duration[2][GS_BACKUP_DURATION_BOUNDS + 1]; /**< run seconds per kind */
    double duration_sum[2];
    int64_t last_success_ms; /**< epoch ms of the last run written, 0 = none */
} gs_backup_metrics;
void gs_backup_cycle_metrics(gs_backup_cycle *c, gs_backup_metrics *out);

/* ---- lifecycle, called by database.c and writer.c ---- */

/** Start the cycle of a freshly opened database (its first turn runs at once, on the cycle's
 * thread). BACKUP_UNSUPPORTED for a database that is in memory, read-only or not in WAL mode;
 * BACKUP_ERROR when the staging folder cannot be made. */
gs_status gs_backup_cycle_start(gs_database *db, const gs_backup_cycle_config *cfg, gs_error *err);
/** gs_db_close, before writes stop: cancel the turn in flight and join the scheduler. */
void gs_backup_cycle_close_begin(gs_database *db);
/** The writer thread, after the queue drained and before its final checkpoint: capture the
 * log a last time and checkpoint it. Returns 1 when the final checkpoint must be skipped (the
 * cycle checkpointed, or the log must survive for the next open). */
int gs_backup_cycle_writer_closing(gs_database *db, gs_conn *conn);
/** gs_db_close, after the threads stopped: send the last capture and save the state. */
void gs_backup_cycle_close_end(gs_database *db);
/** Free the cycle (database destroy). */
void gs_backup_cycle_free(gs_backup_cycle *c);

#endif
