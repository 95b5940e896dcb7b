/*
 * The replication codec: msg.h values to the protobuf bytes of spec 04 "gRPC Wire Protocol"
 * (proto/replication.proto) and back. Every replication transport carries these bytes.
 *
 * Promise (spec 04 "Value Encoding on the Wire"):
 *   - A value travels as a ColumnValue: null (null_value = true), text, 64-bit integer,
 *     double (NaN and infinities pass unchanged), blob or bool. Any integer decodes as a
 *     64-bit integer; a ColumnValue with no kind set decodes as null, as the reference does.
 *     Text keeps every byte, U+0000 included.
 *   - A NULL row is an absent RowData, an empty row a present empty one; both round trip.
 *     A change's primary key decodes to an empty row when absent (never NULL after decode).
 *     A RowData key sent twice keeps its last value (protobuf map semantics).
 *   - Absent group_id / primary_term encode as "" / 0 and decode back to absent (NULL /
 *     has_term = 0); likewise ddl_statement, a sync ack's error, a forward response's error
 *     and a manifest's pk_hash / batch_digest ("" = absent, decoded as NULL). Other strings
 *     decode non-NULL ("" when empty); a NULL one encodes as "".
 *   - A Statement encodes named and positional parameters as given; on decode, named ones win
 *     when both are present (positional are then dropped), and none gives named = NULL and
 *     npositional = 0.
 *   - Decoding rejects, with REPLICATION_ERROR and a message naming the message type, bytes
 *     that are not such a protobuf message and a ReplicationMessage / SyncMessage whose
 *     payload oneof is unset. No input makes it crash or read out of bounds.
 *   - The change's seq is local: it is not sent and decodes as 0.
 *
 * Ownership: encode leaves the message alone and hands back *out (gs_malloc'd; the caller
 * gs_frees it; an empty message may give *len == 0 with a valid *out). Decode fills *out
 * (overwritten, not freed first) with owned contents the caller releases with the type's
 * *_free; on failure *out is left empty (all zero) and needs no release.
 * Threads: pure functions, callable from any thread.
 */
#ifndef GS_REPL_CODEC_H
#define GS_REPL_CODEC_H

#include "repl/msg.h"

#include <gatestream/abi.h>
#include <stddef.h>
#include <stdint.h>

gs_status gs_repl_message_encode(const gs_repl_message *m, uint8_t **out, size_t *len,
                                 gs_error *err);
gs_status gs_repl_message_decode(const uint8_t *p, size_t len, gs_repl_message *out, gs_error *err);

gs_status gs_sync_message_encode(const gs_sync_message *m, uint8_t **out, size_t *len,
                                 gs_error *err);
gs_status gs_sync_message_decode(const uint8_t *p, size_t len, gs_sync_message *out, gs_error *err);

gs_status gs_fwd_request_encode(const gs_fwd_request *r, uint8_t **out, size_t *len, gs_error *err);
gs_status gs_fwd_request_decode(const uint8_t *p, size_t len, gs_fwd_request *out, gs_error *err);

gs_status gs_fwd_response_encode(const gs_fwd_response *r, uint8_t **out, size_t *len,
                                 gs_error *err);
gs_status gs_fwd_response_decode(const uint8_t *p, size_t len, gs_fwd_response *out, gs_error *err);

#endif
