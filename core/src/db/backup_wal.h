/*
 * The write-ahead log as the backup chain sees it (spec 02 "Change capture"): reading the
 * frames a database committed since the previous capture out of its -wal file into a staged
 * file, and writing the log a restore replays change pieces through.
 *
 * Format facts (SQLite's WAL format, https://sqlite.org/fileformat.html#the_write_ahead_log):
 * a 32-byte header (magic, version 3007000, page size, checkpoint sequence, salt-1, salt-2,
 * checksum over its first 24 bytes), then frames of a 24-byte header (page number, database
 * size in pages after a commit or 0, the two salts, a running checksum) and one page. A frame
 * is live while its salts match the header and its checksum continues the chain; a capture
 * stops at the last live frame that commits, so it never takes half a transaction.
 *
 * Promise: gs_wal_capture copies the frames after the cursor up to the last committed frame,
 * starting with the 32-byte header when it starts at frame one, so pieces of one run of the
 * log concatenate into a log SQLite recovers from. A log restarted under a cursor that did not
 * see it emptied fails BACKUP_LOG_REWOUND. The restore writer stamps fresh salts and checksums
 * over the frames it is handed, so a batch may start anywhere down a chain and may span several
 * runs of the log.
 *
 * Ownership: paths are borrowed; the staged file belongs to the caller. Threads: gs_wal_capture
 * runs where the caller holds the writer (nothing else may write or checkpoint meanwhile); the
 * restore writer belongs to one thread.
 */
#ifndef GS_DB_BACKUP_WAL_H
#define GS_DB_BACKUP_WAL_H

#include <gatestream/abi.h>

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#define GS_WAL_HEADER_BYTES 32
#define GS_WAL_FRAME_HEADER_BYTES 24

/** Where the previous capture stopped in the log. */
typedef struct gs_wal_cursor {
    uint32_t log_sequence;
    uint32_t salt1, salt2;
    uint32_t last_frame;           /**< the last frame taken, from 1 */
    uint32_t checksum1, checksum2; /**< the running checksum at last_frame */
    int checkpointed; /**< the checkpoint after that capture emptied (fully backfilled) the log */
} gs_wal_cursor;

/** What one capture took. */
typedef struct gs_wal_capture {
    int captured; /**< 0: the log holds no committed frame after the cursor (nothing staged) */
    uint32_t log_sequence, salt1, salt2;
    uint32_t first_frame, last_frame;
    uint32_t page_size;
    int64_t byte_length;  /**< bytes staged (32 header bytes included when first_frame is 1) */
    gs_wal_cursor cursor; /**< where this capture stopped (checkpointed = 0) */
} gs_wal_capture;

/**
 * Stage the frames of `wal_path` committed after `cursor` (NULL at the head of a chain) into
 * `staged_path` (created or truncated, fsynced). expect_new_log: the database closed with its
 * whole log captured, so a log with other salts is expected. BACKUP_LOG_REWOUND when the log
 * restarted (or lost frames) under a cursor that did not expect it; BACKUP_ERROR on I/O.
 */
gs_status gs_wal_capture_frames(const char *wal_path, const gs_wal_cursor *cursor,
                                int expect_new_log, const char *staged_path, gs_wal_capture *out,
                                gs_error *err);

/** Size of the -wal file (0 when absent). */
int64_t gs_wal_file_bytes(const char *db_path);

/**
 * A TRUNCATE checkpoint on `db` (the writer): *emptied = every frame is in the database file
 * (the log may restart). One attempt; a reader pinning the log leaves it partial, which is not
 * an error. With busy_timeout_ms >= 0 the checkpoint never waits for readers (SQLite's busy
 * handler is off during the call, then set back to busy_timeout_ms), so it holds the writer
 * for the copy of the frames alone; < 0 leaves the connection's handler as it is.
 * BACKUP_ERROR when SQLite fails otherwise.
 */
gs_status gs_wal_checkpoint(sqlite3 *db, int busy_timeout_ms, int *emptied, gs_error *err);

/* ---- the restore side ---- */

typedef struct gs_wal_writer gs_wal_writer;

/** What a change piece's record says the log it came from looked like (checked against the
 * 32 header bytes a piece starting at frame one carries). */
typedef struct gs_wal_expect {
    uint32_t page_size;
    uint32_t log_sequence, salt1, salt2;
} gs_wal_expect;

/** Create `wal_path` (replacing it) with a fresh header for pages of page_size bytes. */
gs_status gs_wal_writer_open(const char *wal_path, uint32_t page_size, uint32_t log_sequence,
                             gs_wal_writer **out, gs_error *err);
/** The bytes added next begin a new change piece with header_bytes of log header in front of
 * its frames (checked against *expect when given). BACKUP_CHAIN_BROKEN when the previous piece
 * ended part-way through a frame. */
gs_status gs_wal_writer_begin_piece(gs_wal_writer *w, uint32_t header_bytes,
                                    const gs_wal_expect *expect, gs_error *err);
/** Append the next run of bytes of the current piece (restamped frame by frame). */
gs_status gs_wal_writer_add(gs_wal_writer *w, const uint8_t *bytes, size_t len, gs_error *err);
/** Close the log: *frames written and *db_pages the last frame commits to. BACKUP_CHAIN_BROKEN
 * when the pieces end part-way through a frame or the last frame commits nothing. The writer is
 * freed either way. */
gs_status gs_wal_writer_finish(gs_wal_writer *w, uint32_t *frames, uint32_t *db_pages,
                               gs_error *err);
/** Close and free without checking (a failed batch); the caller removes the file. */
void gs_wal_writer_abandon(gs_wal_writer *w);

/** Fill buf with n random bytes (getrandom; falls back to the clock mixed with the pid). */
void gs_backup_random_bytes(void *buf, size_t n);

#endif
