/*
 * The normative checksum of replication payloads (spec 03 "Checksum (Normative)"; vectors in
 * tests/vectors/checksum.json): the lowercase SHA-256 hex digest of a payload's canonical
 * form, and the batchDigest chain of first-sync manifests.
 *
 * Promise: the canonical text is byte for byte what the reference canonicaliser (JavaScript)
 * produces for the same decoded values, so checksums agree across implementations:
 *   - null -> null; BOOL -> true / false; TEXT -> its JSON.stringify form;
 *   - INT, and a DOUBLE with an integral value (3.0, -0.0, 1e20, 1e300) -> {"__sint":"<dec>"}
 *     (exact decimal for INT; for a DOUBLE what JavaScript's Number toString prints:
 *     "0" for -0.0, "100000000000000000000" for 1e20, "1e+21" for 1e21);
 *   - a finite non-integral DOUBLE -> the shortest round-trip JavaScript number form
 *     (0.1, 1.5e-7, 1.2e+21); NaN and +/-Inf -> null;
 *   - BLOB -> {"__blob":"<standard base64 with padding>"};
 *   - an object (a change, a row) -> its keys sorted ascending, "key":value joined by ',';
 *   - a list -> its elements in order.
 * A change renders the keys ddlStatement (only when non-NULL), hlc, newData, nodeId, oldData,
 * operation, primaryKey, rowId, table, txId; NULL newData / oldData render as null and a NULL
 * primaryKey (a DDL change) as {} (what a reference peer decodes an absent key map to), and
 * a NULL string as "". A row naming a column twice renders the later value once (a
 * JavaScript object cannot hold both).
 *
 * Ownership: the caller owns every input and the gs_buf appended to; nothing is kept.
 * Threads: pure functions, callable from any thread.
 */
#ifndef GS_REPL_CHECKSUM_H
#define GS_REPL_CHECKSUM_H

#include "base/buf.h"
#include "repl/msg.h"

#include <gatestream/abi.h>
#include <stddef.h>

/** Append the canonical form of a batch's changes list (a JSON array) to b. */
void gs_repl_canonical_changes(gs_buf *b, const gs_repl_change *c, size_t n);
/** Append the canonical form of a sync batch's rows (an array of objects) to b. */
void gs_repl_canonical_rows(gs_buf *b, const gs_rrow *rows, size_t n);
/** Append the canonical form of a list of strings (the schema batch) to b. */
void gs_repl_canonical_strings(gs_buf *b, char *const *s, size_t n);
/** Append the canonical form of one value to b. */
void gs_repl_canonical_value(gs_buf *b, const gs_rval *v);

/**
 * The checksum (64 lowercase hex digits and a NUL) of each payload's canonical form.
 * REPLICATION_ERROR only when memory runs out building the canonical text.
 */
gs_status gs_repl_changes_checksum(const gs_repl_change *c, size_t n, char out[65], gs_error *err);
gs_status gs_repl_rows_checksum(const gs_rrow *rows, size_t n, char out[65], gs_error *err);
gs_status gs_repl_strings_checksum(char *const *s, size_t n, char out[65], gs_error *err);

/**
 * One step of a table's batchDigest chain: digest = sha256_hex(digest + batch_checksum),
 * where the chain starts from the empty string (the caller sets digest[0] = 0 before the
 * first batch). digest is read and overwritten in place.
 */
void gs_repl_digest_step(char digest[65], const char *batch_checksum);

#endif
