/*
 * Backup destination plugins: where a database's backups go (spec 02-core "Backups",
 * BackupDestination). The core carries no storage client: a destination stores numbered
 * pieces of bytes under names, and the core builds everything else on top of that (full
 * copies, change pieces, the chain records, restore and verify). A filesystem destination
 * ships as backups/fs; object storage and the like are further plugins of this kind.
 *
 * Promise the core relies on (each one is normative in the spec):
 *  - a destination holds many names; each name holds pieces numbered from 0, each at most the
 *    run's piece size (16 MiB by default), arriving in any order;
 *  - write_piece replaces a piece already stored under that name and index, and is durable
 *    when it returns GS_OK; read_piece returns what the most recent write_piece stored;
 *  - write_piece_if_absent (optional) stores the piece only where that name and index hold
 *    none, reports whether this call stored it, and settles two calls racing for one place so
 *    that exactly one reports *stored = 1;
 *  - list_pieces reports every piece stored under a name (index and byte length) in any
 *    order; a name holding nothing lists nothing and succeeds.
 *
 * Errors: a refusal returns GS_ERROR and fills err (the core reports it to the operator as
 * BACKUP_DESTINATION_ERROR naming the piece and the name, whatever code the plugin set).
 * read_piece of a piece that is not stored returns GS_DECLINED.
 *
 * Ownership: the caller owns name and bytes; a plugin copies what it keeps. read_piece hands
 * the caller a buffer allocated with host->alloc, which the caller releases with host->free.
 *
 * Threads: every callback may be called from several core backup threads at once (one per
 * database cycle, plus restores and verifies) and may block on I/O; the core never calls one
 * from a transport's I/O thread or a database's writer. The core gives each call a deadline
 * (the database's destination_timeout_ms) and stops waiting past it, so a plugin should bound
 * its own network calls too; a call the core stopped waiting for must still finish cleanly.
 * create and destroy run on the core's main thread.
 */
#ifndef GATESTREAM_BACKUP_DESTINATION_H
#define GATESTREAM_BACKUP_DESTINATION_H

#include <gatestream/host.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Called once per stored piece by list_pieces, on the calling thread, during the call. */
typedef void (*gs_backup_piece_fn)(void *user, uint64_t index, uint64_t byte_length);

/** @since 1.3 */
typedef struct gs_backup_destination_vtable {
    uint32_t struct_size;
    /** Required. Make an instance from the plugin's filled config struct (one per YAML
     * entry). */
    gs_status (*create)(const gs_host *host, const void *config, void **instance, gs_error *err);
    /** Required. Release the instance; no call is in flight any more. */
    void (*destroy)(void *instance);
    /** Required. Store len bytes as piece `index` of `name`, replacing any piece there;
     * durable once it returns GS_OK. len may be 0. */
    gs_status (*write_piece)(void *instance, const char *name, uint64_t index, const uint8_t *bytes,
                             size_t len, gs_error *err);
    /** Optional (NULL when the storage cannot claim a place). Store the piece only where
     * `name`/`index` holds none: *stored = 1 when this call stored it, 0 when a piece was
     * already there (left as it was). Two concurrent calls for one place: exactly one
     * stores. */
    gs_status (*write_piece_if_absent)(void *instance, const char *name, uint64_t index,
                                       const uint8_t *bytes, size_t len, int *stored,
                                       gs_error *err);
    /** Required. The bytes of piece `index` of `name`: *bytes allocated with host->alloc
     * (the caller frees it with host->free; may be NULL when *len is 0). GS_DECLINED when no
     * such piece is stored. */
    gs_status (*read_piece)(void *instance, const char *name, uint64_t index, uint8_t **bytes,
                            size_t *len, gs_error *err);
    /** Required. Call each(user, index, byte_length) once for every piece stored under
     * `name`, in any order. A name holding nothing lists nothing and returns GS_OK. */
    gs_status (*list_pieces)(void *instance, const char *name, gs_backup_piece_fn each, void *user,
                             gs_error *err);
} gs_backup_destination_vtable;

#ifdef __cplusplus
}
#endif
#endif
