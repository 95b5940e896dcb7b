/* Fuzz target: the replication codec's decoders (ReplicationMessage, SyncMessage, Forward
 * request and response) on arbitrary bytes. Nothing may crash, leak or read out of bounds;
 * whatever decodes must re-encode, and a second decode-encode round must give the same bytes
 * (the codec is stable once a message is normalised). Decoded batches are also checksummed. */
#include "base/alloc.h"
#include "base/error.h"
#include "repl/checksum.h"
#include "repl/codec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* enc(dec(bytes)) must be a fixed point of enc(dec(.)). */
#define STABLE(type, decode, encode, release)                                                      \
    static void stable_##type(const uint8_t *data, size_t size)                                    \
    {                                                                                              \
        gs_error err;                                                                              \
        gs_error_init(&err);                                                                       \
        type m;                                                                                    \
        if (decode(data, size, &m, &err) != GS_OK)                                                 \
            return;                                                                                \
        uint8_t *a = NULL, *b = NULL;                                                              \
        size_t alen = 0, blen = 0;                                                                 \
        if (encode(&m, &a, &alen, &err) != GS_OK)                                                  \
            abort(); /* only memory can fail, and the replay has plenty */                         \
        release(&m);                                                                               \
        if (decode(a, alen, &m, &err) != GS_OK)                                                    \
            abort();                                                                               \
        if (encode(&m, &b, &blen, &err) != GS_OK)                                                  \
            abort();                                                                               \
        release(&m);                                                                               \
        if (alen != blen || memcmp(a, b, alen) != 0)                                               \
            abort();                                                                               \
        gs_free(a);                                                                                \
        gs_free(b);                                                                                \
    }

STABLE(gs_repl_message, gs_repl_message_decode, gs_repl_message_encode, gs_repl_message_free)
STABLE(gs_sync_message, gs_sync_message_decode, gs_sync_message_encode, gs_sync_message_free)
STABLE(gs_fwd_request, gs_fwd_request_decode, gs_fwd_request_encode, gs_fwd_request_free)
STABLE(gs_fwd_response, gs_fwd_response_decode, gs_fwd_response_encode, gs_fwd_response_free)

static void checksums(const uint8_t *data, size_t size)
{
    gs_error err;
    gs_error_init(&err);
    char sum[65];
    gs_repl_message m;
    if (gs_repl_message_decode(data, size, &m, &err) == GS_OK) {
        if (m.kind == GS_RMSG_BATCH)
            gs_repl_changes_checksum(m.batch.changes, m.batch.nchanges, sum, &err);
        gs_repl_message_free(&m);
    }
    gs_sync_message s;
    if (gs_sync_message_decode(data, size, &s, &err) == GS_OK) {
        if (s.kind == GS_SMSG_BATCH) {
            gs_repl_rows_checksum(s.batch.rows, s.batch.nrows, sum, &err);
            gs_repl_strings_checksum(s.batch.schema, s.batch.nschema, sum, &err);
        }
        gs_sync_message_free(&s);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    stable_gs_repl_message(data, size);
    stable_gs_sync_message(data, size);
    stable_gs_fwd_request(data, size);
    stable_gs_fwd_response(data, size);
    checksums(data, size);
    return 0;
}
