/* Fuzz target: the WebSocket message parser and validator (core/src/api/ws_message.c), run
 * alone with no database or session. Both acceptSql settings run on every input; nothing may
 * crash, leak or read out of bounds, and every outcome is either a well-formed message or an
 * error with one of the protocol's codes. */
#include "api/ws_message.h"
#include "base/error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const codes[] = {"INVALID_JSON",     "INVALID_MESSAGE", "UNKNOWN_TYPE",
                                    "SQL_NOT_ACCEPTED", "INTERNAL_ERROR",  NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int accept_sql = 0; accept_sql <= 1; accept_sql++) {
        gs_ws_msg m;
        gs_error err;
        gs_error_init(&err);
        gs_status st = gs_ws_msg_parse((const char *)data, size, accept_sql, &m, &err);
        if (st == GS_OK) {
            /* a well-formed message has a known type and a string id */
            if (m.type < GS_WS_QUERY || m.type > GS_WS_ACK || !m.id || !m.root)
                abort();
        } else {
            int known = 0;
            for (size_t i = 0; codes[i]; i++)
                known |= strcmp(err.code, codes[i]) == 0;
            if (!known || !m.id)
                abort();
        }
        gs_ws_msg_clear(&m);
    }
    return 0;
}
