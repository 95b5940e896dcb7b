/*
 * The core's side of a backup destination plugin (gatestream/backup_destination.h): every
 * call goes through here so it gets a deadline, the spec's error code and a message naming
 * the piece and the name it belongs to.
 *
 * Promise: each call runs on the handle's own worker thread while the caller waits at most
 * timeout_ms (<= 0: no deadline). A call that does not return in time fails
 * BACKUP_DESTINATION_ERROR; the plugin call keeps running on the worker, which releases its
 * buffers when it returns, so nothing the caller owns is touched after the deadline. A refusal
 * by the plugin is BACKUP_DESTINATION_ERROR whatever code the plugin set. Calls on one handle
 * run one at a time, in order.
 *
 * Ownership: a handle borrows the vtable and the plugin instance (both must outlive it).
 * *_take functions consume the bytes (gs_malloc'd) even when they fail. Buffers and lists
 * handed back are gs_malloc'd and owned by the caller.
 *
 * Threads: every function is thread-safe except gs_backup_dest_free, which the owner calls
 * once no call is in flight; none may run on a transport's I/O thread or a writer.
 */
#ifndef GS_DB_BACKUP_DEST_H
#define GS_DB_BACKUP_DEST_H

#include <gatestream/backup_destination.h>

#include <stddef.h>
#include <stdint.h>

typedef struct gs_backup_dest gs_backup_dest;

/** One stored piece, as list_pieces reported it. */
typedef struct gs_backup_piece {
    uint64_t index;
    uint64_t byte_length;
} gs_backup_piece;

/** The spec's recommended destinationTimeoutMs. */
#define GS_BACKUP_DEST_TIMEOUT_MS 600000

gs_status gs_backup_dest_new(const gs_backup_destination_vtable *vt, void *instance,
                             int64_t timeout_ms, gs_backup_dest **out, gs_error *err);
void gs_backup_dest_free(gs_backup_dest *d);

/** Run the handle's worker thread in the background (backup_priority.h) from its next call
 * on: for the handle a backup cycle sends through, so the destination's own work (copying,
 * writing and syncing pieces) yields to the database's writer. Handles that answer a person
 * (verify, restore) are left at normal priority. */
void gs_backup_dest_set_background(gs_backup_dest *d);

/** The destination offers write_piece_if_absent. */
int gs_backup_dest_can_claim(const gs_backup_dest *d);
int64_t gs_backup_dest_timeout_ms(const gs_backup_dest *d);

/** write_piece; consumes bytes. */
gs_status gs_backup_dest_write_take(gs_backup_dest *d, const char *name, uint64_t index,
                                    uint8_t *bytes, size_t len, gs_error *err);
/** write_piece_if_absent (the destination must offer it); consumes bytes. */
gs_status gs_backup_dest_claim_take(gs_backup_dest *d, const char *name, uint64_t index,
                                    uint8_t *bytes, size_t len, int *stored, gs_error *err);
/** read_piece: *bytes gs_malloc'd (the plugin allocated it with host->alloc, which is
 * gs_malloc in the core; may be NULL when *len is 0). A piece the destination does not hold:
 * GS_DECLINED with *bytes NULL and err filled (BACKUP_DESTINATION_ERROR). */
gs_status gs_backup_dest_read(gs_backup_dest *d, const char *name, uint64_t index, uint8_t **bytes,
                              size_t *len, gs_error *err);
/** list_pieces, sorted by index: *pieces gs_malloc'd (NULL when *count is 0). */
gs_status gs_backup_dest_list(gs_backup_dest *d, const char *name, gs_backup_piece **pieces,
                              size_t *count, gs_error *err);

#endif
