/*
 * The hybrid logical clock (spec 03 "Hybrid Logical Clock", normative encoding; test vectors
 * in tests/vectors/hlc.json).
 *
 * Promise: a timestamp is encoded as {wallMs: 12 lowercase hex digits}-{logical: 4 lowercase
 * hex digits}-{nodeId} and decoded by splitting on '-': at least three parts, the node id
 * being every part from the third on. Encoded stamps order by plain byte comparison.
 * gs_hlc_now and gs_hlc_receive follow the spec's algorithms exactly; they fail, leaving the
 * clock unchanged, with REPLICATION_ERROR when the logical counter would pass 65535, and
 * gs_hlc_receive fails with BATCH_VALIDATION_ERROR when the remote wall clock runs more than
 * max_drift_ms ahead of this node's physical clock (a peer must not drag the clock forward).
 *
 * Persistence: the clock lives in `_sirannon_meta` under `hlc_clock`. gs_hlc_load seeds a
 * clock from that value and from the highest `hlc` in `_sirannon_changes` and
 * `_sirannon_column_versions` (when present), so it never moves backwards across restarts;
 * gs_hlc_persist writes a stamp back. Both run internal statements on a connection the
 * caller owns (normally the writer, inside its transaction).
 *
 * Ownership: the clock copies its node id. Threads: a gs_hlc may be used from any thread
 * (one mutex); the pure functions are thread-safe.
 */
#ifndef GS_REPL_HLC_H
#define GS_REPL_HLC_H

#include "sqlite/connection.h"

#include <gatestream/abi.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define GS_HLC_MAX_LOGICAL 0xffff
/** The longest node id a clock accepts. */
#define GS_HLC_MAX_NODE_ID 200
/** A buffer large enough for any stamp of a clock: 12 + 1 + 4 + 1 + node id + NUL. */
#define GS_HLC_MAX_LEN (18 + GS_HLC_MAX_NODE_ID + 1)
/** The spec's default maxClockDriftMs. */
#define GS_HLC_DEFAULT_MAX_DRIFT_MS 60000

/** A decoded stamp; node_id points into the decoded string (node_len bytes, no NUL). */
typedef struct gs_hlc_ts {
    int64_t wall_ms;
    uint32_t logical;
    const char *node_id;
    size_t node_len;
} gs_hlc_ts;

/** Encode into out (cap bytes). Returns the length of the full stamp (like snprintf): the
 * result is complete only when that is < cap. The fields are zero-padded to 12 and 4 hex
 * digits (a larger value takes more digits, as the reference does). */
size_t gs_hlc_encode(int64_t wall_ms, uint32_t logical, const char *node_id, char *out, size_t cap);

/** Decode. REPLICATION_ERROR for fewer than three parts or a wall/logical part that is not
 * 1 to 13 / 1 to 4 hex digits. */
gs_status gs_hlc_decode(const char *s, gs_hlc_ts *out, gs_error *err);

/** Byte-wise comparison: -1, 0 or 1. */
int gs_hlc_compare(const char *a, const char *b);

/** Wall-clock milliseconds since the Unix epoch (the default time source). */
int64_t gs_hlc_physical_ms(void);

typedef int64_t (*gs_hlc_time_fn)(void *user);

typedef struct gs_hlc {
    pthread_mutex_t mu;
    int64_t wall_ms;
    uint32_t logical;
    int64_t max_drift_ms; /**< <= 0: no drift check */
    gs_hlc_time_fn time_fn;
    void *time_user;
    char node_id[GS_HLC_MAX_NODE_ID + 1];
} gs_hlc;

/** Start a clock at zero for node_id (NULL = ""). REPLICATION_ERROR when the node id is
 * longer than GS_HLC_MAX_NODE_ID bytes. */
gs_status gs_hlc_init(gs_hlc *c, const char *node_id, int64_t max_drift_ms, gs_error *err);
void gs_hlc_destroy(gs_hlc *c);
/** Replace the time source (tests); NULL restores the wall clock. */
void gs_hlc_set_time_source(gs_hlc *c, gs_hlc_time_fn fn, void *user);
void gs_hlc_set_max_drift(gs_hlc *c, int64_t max_drift_ms);

/** A new local timestamp (the spec's now()). out needs GS_HLC_MAX_LEN bytes. */
gs_status gs_hlc_now(gs_hlc *c, char out[GS_HLC_MAX_LEN], gs_error *err);
/** Merge a remote stamp (the spec's receive()) and return the new local timestamp. */
gs_status gs_hlc_receive(gs_hlc *c, const char *remote, char out[GS_HLC_MAX_LEN], gs_error *err);
/** Move the clock up to an observed stamp without ticking (seeding at start): the state
 * becomes the larger of the two (wall, logical) pairs. REPLICATION_ERROR when malformed. */
gs_status gs_hlc_observe(gs_hlc *c, const char *stamp, gs_error *err);
/** The current state, encoded with this clock's node id (no tick). */
void gs_hlc_current(gs_hlc *c, char out[GS_HLC_MAX_LEN]);
/** |remote wall - physical| in ms (the receiver's drift check on a batch's hlcRange.max);
 * -1 when remote is malformed. */
int64_t gs_hlc_drift_ms(gs_hlc *c, const char *remote);

/** Seed from `_sirannon_meta.hlc_clock`, the change log and the column version table, each
 * when present (a malformed persisted value is ignored). QUERY_ERROR on a SQLite failure. */
gs_status gs_hlc_load(gs_hlc *c, gs_conn *conn, gs_error *err);
/** Upsert `_sirannon_meta.hlc_clock` = stamp (the meta table must exist). QUERY_ERROR. */
gs_status gs_hlc_persist(gs_conn *conn, const char *stamp, gs_error *err);

#endif
