/*
 * Full-copy backups (spec 02-core "Backups": full copy to a path, restarts and stalls) and
 * the restore of such a copy.
 *
 * Promise: the copy runs through SQLite's stepped backup interface. For a database this
 * process serves (gs_db_backup_to_path) every step runs on the writer thread with the writer
 * connection as the source (through gs_db_writer_call), so the node's own writes never
 * restart the copy and queued writes run between steps: the writer is held one step at a
 * time. gs_backup_file copies a file another process may be serving from a read-only
 * connection of its own. A WAL file is copied from one read snapshot held for the whole copy
 * (the file as it was when the copy began; the owner's writes go on and never restart it). A
 * rollback-journal file is not held (that would block its writer): its owner's writes restart
 * the copy (SQLite returns it to page one), which the restart rules below catch.
 *
 * Both count a fall in pages copied (total - remaining) as a restart and fail with
 * BACKUP_RESTARTED after restart_limit of them or after no_progress_step_limit steps that
 * reach no further than the furthest point so far; a step that does not arrive inside
 * stall_timeout_ms fails BACKUP_STALLED. A destination that exists, or a path holding control
 * characters or a `..` segment, fails BACKUP_ERROR before anything is written. Parent folders
 * are created. The copy is written under a temporary name in the destination folder, fsynced,
 * then renamed (and the folder fsynced), so the final name never holds a partial file; a
 * failure removes the temporary file.
 *
 * Ownership: the caller owns every argument. Threads: each function blocks its calling thread
 * (never call gs_db_backup_to_path from the writer thread or from a done() callback); the
 * progress callback runs on the calling thread between steps. For a served database the
 * sqlite3_backup object is only touched on the writer thread; if the database is closed in the
 * middle of a copy, the copy fails BACKUP_ERROR (DATABASE_CLOSED) and the half-done backup
 * object is released only if the writer still takes the releasing call.
 */
#ifndef GS_DB_BACKUP_H
#define GS_DB_BACKUP_H

#include "database.h"

#include <gatestream/abi.h>
#include <stdint.h>

typedef struct gs_backup_progress {
    int64_t total_pages;     /**< the source's page count at this step */
    int64_t remaining_pages; /**< pages still to copy */
    int64_t pages_copied;    /**< total - remaining */
    int64_t steps;           /**< steps so far */
    int restarts;            /**< falls in pages_copied so far */
} gs_backup_progress;

typedef void (*gs_backup_progress_fn)(void *user, const gs_backup_progress *p);

typedef struct gs_backup_options {
    int pages_per_step;                /**< default 256 (0 = default); < 0 copies all in one step */
    int restart_limit;                 /**< default 3 */
    int no_progress_step_limit;        /**< default 256 */
    int64_t stall_timeout_ms;          /**< default 30000 */
    int busy_timeout_ms;               /**< gs_backup_file's source connection (default 5000) */
    gs_backup_progress_fn on_progress; /**< may be NULL */
    void *progress_user;
    /** May be NULL. Read (atomically) before each step of gs_db_backup_to_path: once nonzero
     * the copy stops with BACKUP_ERROR (the backup cycle cancels a copy when its database
     * closes). */
    const int *cancel;
} gs_backup_options;

typedef struct gs_backup_result {
    int64_t pages;      /**< pages in the copy */
    int64_t bytes;      /**< size of the copy on disk */
    double duration_ms; /**< from the first step to the rename */
    int restarts;
    int64_t steps;
} gs_backup_result;

/** Fill with the spec's recommended defaults. */
void gs_backup_options_default(gs_backup_options *o);

/** BACKUP_ERROR when path is empty, holds a control character or a `..` segment. */
gs_status gs_backup_check_path(const char *path, gs_error *err);

/** The recommended file name, "backup-2026-01-02T03-04-05-678Z.db", for the time now. */
void gs_backup_default_name(char *buf, size_t cap);

/** Copy a database this process serves to dest_path (opts/res may be NULL). BACKUP_ERROR,
 * BACKUP_RESTARTED, BACKUP_STALLED; DATABASE_CLOSED; BACKUP_UNSUPPORTED for ":memory:". */
gs_status gs_db_backup_to_path(gs_database *db, const char *dest_path,
                               const gs_backup_options *opts, gs_backup_result *res, gs_error *err);

/** Copy the database file src_path (which another process may serve) to dest_path. */
gs_status gs_backup_file(const char *src_path, const char *dest_path, const gs_backup_options *opts,
                         gs_backup_result *res, gs_error *err);

/** Restore a full-copy backup: PRAGMA integrity_check on backup_path, copy it to a temporary
 * name beside dest_path, quick_check and fsync that, then put it at dest_path atomically.
 * dest_path must not exist unless replace (which also removes dest_path's -wal, -shm and
 * -journal, so stop whatever serves dest_path first). BACKUP_ERROR. */
gs_status gs_backup_restore(const char *backup_path, const char *dest_path, int replace,
                            gs_backup_result *res, gs_error *err);

#endif
