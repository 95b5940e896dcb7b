/*
 * Backup chains at a destination (spec 02 "Chain records", "Restore selection", "Verifying a
 * stored backup"): the records, reading and appending them, choosing what a restore to a
 * moment reads, what is safe to delete, verifying one stored backup, and moving whole files
 * in and out of pieces.
 *
 * Layout at the destination (the spec's, so a chain written by any Sirannon implementation
 * reads here and the other way round): the list of chains under `chain_name`, one JSON record
 * {chainId, startedAt, previousChainId?} per piece, oldest at index 0; each chain's own records
 * under "<chain_name>.<chainId>", its full copy at index 0 and change piece n at index n. A
 * record is stored once and never changed. A full copy's record is stored before its chain
 * joins the list; a place in the list is claimed with write_piece_if_absent where the
 * destination offers it, else written and read back.
 *
 * Ownership: every struct handed out is owned by the caller and released with its _free
 * function; destinations are borrowed. Threads: any thread but a writer or an I/O thread
 * (destination calls block).
 */
#ifndef GS_DB_BACKUP_CHAIN_H
#define GS_DB_BACKUP_CHAIN_H

#include "backup_dest.h"

#include <jansson.h>
#include <stdint.h>

#define GS_BACKUP_DEFAULT_CHAIN_NAME "sirannon-backup-chain"
#define GS_BACKUP_DEFAULT_NAME_PREFIX "sirannon-backup"
#define GS_BACKUP_DEFAULT_PIECE_BYTES (16 * 1024 * 1024)

typedef enum { GS_CHAIN_FULL = 1, GS_CHAIN_CHANGE = 2 } gs_chain_kind;

typedef struct gs_chain_position {
    int64_t log_sequence, salt1, salt2, first_frame, last_frame;
} gs_chain_position;

/** BackupChainBase or BackupChainChange. */
typedef struct gs_chain_record {
    gs_chain_kind kind;
    char *chain_id;
    char *name;
    char *run_id;
    int64_t finished_at; /**< full */
    int64_t sequence;    /**< change: from 1 */
    gs_chain_position position;
    int64_t captured_at, frame_count;
    int checkpointed;
    int64_t piece_count, piece_bytes, bytes_written;
    char *fingerprint; /**< lowercase hex SHA-256, or NULL */
} gs_chain_record;

typedef struct gs_chain {
    char *chain_id;
    int64_t started_at;
    char *previous_chain_id;  /**< or NULL */
    gs_chain_record *base;    /**< or NULL when the destination lost it */
    gs_chain_record *changes; /**< sorted by sequence */
    size_t change_count;
} gs_chain;

/** Every chain at a destination, newest first. */
typedef struct gs_chain_list {
    gs_chain *items;
    size_t count;
} gs_chain_list;

void gs_chain_record_clear(gs_chain_record *r);
/** Deep copy (dst is overwritten). */
gs_status gs_chain_record_copy(gs_chain_record *dst, const gs_chain_record *src, gs_error *err);
/** The record as the spec's JSON object (new reference; NULL when out of memory). */
json_t *gs_chain_record_to_json(const gs_chain_record *r);
/** Parse and check a record (every field Sirannon writes, whole numbers, frames forward).
 * GS_DECLINED: a JSON object of another kind (not a record this layout reads). */
gs_status gs_chain_record_from_json(const json_t *j, gs_chain_record *out, gs_error *err);

void gs_chain_list_free(gs_chain_list *l);
/** {"chains":[...]} newest first (new reference). */
json_t *gs_chain_list_to_json(const gs_chain_list *l);

/** The name one chain stores its records under: "<chain_name>.<chain_id>" (gs_malloc'd). */
char *gs_chain_log_name(const char *chain_name, const char *chain_id);

/** Read every chain under chain_name. BACKUP_DESTINATION_ERROR when the destination fails or
 * a record is missing fields. */
gs_status gs_chain_read_all(gs_backup_dest *d, const char *chain_name, gs_chain_list *out,
                            gs_error *err);

/** Store one record of a chain at index (0 for the full copy, sequence for a change). */
gs_status gs_chain_append_record(gs_backup_dest *d, const char *chain_name,
                                 const gs_chain_record *r, int64_t index, gs_error *err);
/** Add a chain to the list past the highest index listed; *index is where it went. */
gs_status gs_chain_append_head(gs_backup_dest *d, const char *chain_name, const char *chain_id,
                               int64_t started_at, const char *previous_chain_id, int64_t *index,
                               gs_error *err);
/** Does the list still name chain_id? Reads only the place at head_index when >= 0 and that
 * place holds a chain record, else the whole list. */
gs_status gs_chain_is_listed(gs_backup_dest *d, const char *chain_name, const char *chain_id,
                             int64_t head_index, int *listed, gs_error *err);

/** BackupRestorePlan: records are deep copies. */
typedef struct gs_chain_plan {
    char *chain_id;
    gs_chain_record base;
    gs_chain_record *changes;
    size_t change_count;
    int64_t restores_to;
} gs_chain_plan;

/** The newest full copy finished at or before moment and its changes captured at or before it.
 * BACKUP_CHAIN_BROKEN when no full copy reaches back that far or the selection has a gap. */
gs_status gs_chain_plan_restore(const gs_chain_list *l, int64_t moment, gs_chain_plan *out,
                                gs_error *err);
/** The selected changes join up frame by frame (one run of the log continues at the next
 * frame; a new run starts at frame one). BACKUP_CHAIN_BROKEN naming the piece otherwise. */
gs_status gs_chain_plan_check_frames(const gs_chain_plan *p, gs_error *err);
void gs_chain_plan_free(gs_chain_plan *p);

/** backupPiecesSafeToDelete: a JSON array of records (new reference), oldest chain first. */
json_t *gs_chain_safe_to_delete(const gs_chain_list *l, int has_restorable_from,
                                int64_t restorable_from);

/* ---- stored files: one backup's pieces ---- */

/** What a run recorded about one stored file. */
typedef struct gs_stored_file {
    const char *name;
    int64_t piece_count, piece_bytes, bytes_written;
    const char *fingerprint; /**< or NULL */
} gs_stored_file;

typedef struct gs_fetch_result {
    int64_t pieces;
    int64_t bytes;
    char fingerprint[65]; /**< "" when the record states none */
} gs_fetch_result;

/** Called with each piece in index order, valid during the call. */
typedef gs_status (*gs_piece_sink)(void *user, int64_t index, const uint8_t *bytes, size_t len,
                                   gs_error *err);

/**
 * List the pieces of f (refusing a missing index or an extra piece before anything is read),
 * then read them in index order one at a time into sink, checking the byte total and the
 * fingerprint at the end. `mismatch_code` is the code of those refusals (the spec's
 * BACKUP_DESTINATION_ERROR for verify; restore reports BACKUP_CHAIN_BROKEN: the chain misses a
 * piece it needs); a destination that fails a call is BACKUP_DESTINATION_ERROR either way.
 */
gs_status gs_stored_fetch(gs_backup_dest *d, const gs_stored_file *f, const char *mismatch_code,
                          gs_piece_sink sink, void *user, gs_fetch_result *res, gs_error *err);

/** Only the listing check of gs_stored_fetch: every piece 0..pieceCount-1 there, none past it.
 * Cheap (one list call), so a restore refuses a chain missing a piece before it writes. */
gs_status gs_stored_check(gs_backup_dest *d, const gs_stored_file *f, const char *mismatch_code,
                          gs_error *err);

/** Progress of a send: pieces and bytes written so far. */
typedef void (*gs_send_progress)(void *user, int64_t pieces, int64_t bytes);

/**
 * Send the file at path to the destination under name in pieces of piece_bytes (one piece in
 * memory at a time). *fingerprint gets the SHA-256 hex when fingerprint is set, else "".
 * cancel (may be NULL): checked between pieces; when set the send stops with BACKUP_ERROR.
 */
gs_status gs_stored_send(gs_backup_dest *d, const char *path, const char *name, int64_t piece_bytes,
                         int fingerprint, const int *cancel, gs_send_progress progress, void *user,
                         int64_t *pieces, int64_t *bytes, char fingerprint_out[65], gs_error *err);

/** BackupVerifyResult as JSON (new reference in *out). BACKUP_CHAIN_BROKEN when no record
 * names `name`; BACKUP_DESTINATION_ERROR for a missing or extra piece, another byte count or
 * another fingerprint. */
gs_status gs_chain_verify(gs_backup_dest *d, const gs_chain_list *l, const char *name, json_t **out,
                          gs_error *err);

/** n random bytes as 2n lowercase hex digits into out (2n + 1 bytes). */
void gs_backup_random_hex(char *out, size_t nbytes);
/** Milliseconds since the epoch. */
int64_t gs_backup_now_ms(void);

#endif
