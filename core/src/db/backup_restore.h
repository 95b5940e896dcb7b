/*
 * Restore to a moment from a backup chain (spec 02 "Restore selection"; the restore the
 * server's POST /db/{id}/backup/restore and `gatestream restore --from DIR --moment MS` run).
 *
 * Promise: reads the chains at the destination, selects the newest full copy finished at or
 * before the moment and every change piece of its chain captured at or before it, and checks
 * the selection before touching any file (no full copy that old, a gap in the sequence, frames
 * that do not join up: BACKUP_CHAIN_BROKEN). It then assembles the full copy beside dest_path
 * under "<dest_path>.restoring" (each piece written at index * pieceBytes), replays the change
 * pieces in batches of batch_size through a write-ahead log it writes with fresh salts and
 * checksums (SQLite recovers it, the page count proves it read the frames, a TRUNCATE
 * checkpoint folds it in), checks the result with PRAGMA quick_check, and only then renames it
 * onto dest_path. A stored piece that is missing, extra, of another length or another
 * fingerprint than its record states means the chain lacks a piece the restore needs:
 * BACKUP_CHAIN_BROKEN naming it; a destination that fails a call is BACKUP_DESTINATION_ERROR.
 * A failure removes the build files and leaves dest_path as it was.
 *
 * Memory: one stored piece and one batch buffer at a time, whatever the database size. Disk:
 * the database, plus the write-ahead log of one batch.
 *
 * Ownership: everything is borrowed; the report's strings are the caller's to free with
 * gs_restore_report_clear. Threads: blocks the calling thread (never a writer or an I/O
 * thread); the progress callback runs on it.
 */
#ifndef GS_DB_BACKUP_RESTORE_H
#define GS_DB_BACKUP_RESTORE_H

#include "backup_chain.h"

#define GS_RESTORE_DEFAULT_BATCH 16
#define GS_RESTORE_MAX_BATCH 4096

/** BackupRestoreProgress. */
typedef struct gs_restore_progress {
    const char *phase; /**< "full-copy" | "changes" */
    int64_t pieces_fetched, bytes_fetched;
    int64_t changes_applied, changes_total;
} gs_restore_progress;

typedef void (*gs_restore_progress_fn)(void *user, const gs_restore_progress *p);

/** BackupRestoreReport. */
typedef struct gs_restore_report {
    char *chain_id;
    char *dest_path;
    char *base_name;
    int64_t restores_to;
    int64_t piece_count, bytes_fetched;
    int64_t changes_applied, frames_applied, batch_count;
    int64_t started_at, finished_at, duration_ms;
} gs_restore_report;

typedef struct gs_restore_options {
    const char *chain_name; /**< default sirannon-backup-chain */
    int has_moment;         /**< 0: the newest moment the destination holds (now) */
    int64_t moment;         /**< epoch ms */
    int replace;            /**< dest_path may exist (its -wal/-shm are removed) */
    int batch_size;         /**< 1..4096, default 16 */
    gs_restore_progress_fn on_progress;
    void *progress_user;
    const int *cancel; /**< may be NULL; read between pieces: once set, BACKUP_ERROR */
} gs_restore_options;

gs_status gs_backup_restore_chain(gs_backup_dest *d, const gs_restore_options *o,
                                  const char *dest_path, gs_restore_report *rep, gs_error *err);

void gs_restore_report_clear(gs_restore_report *r);
/** The report / progress as the spec's JSON objects (new references). */
json_t *gs_restore_report_to_json(const gs_restore_report *r);
json_t *gs_restore_progress_to_json(const gs_restore_progress *p);

#endif
