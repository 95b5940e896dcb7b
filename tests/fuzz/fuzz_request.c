/* Fuzz target: the JSON request decoder of the api layer. Every statement route's body
 * checks run on the input; nothing may crash, leak or read out of bounds. */
#include "api/body.h"
#include "base/alloc.h"
#include "base/error.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const gs_route_action actions[] = {GS_ROUTE_QUERY,       GS_ROUTE_EXECUTE,
                                              GS_ROUTE_TRANSACTION, GS_ROUTE_BATCH,
                                              GS_ROUTE_LOAD,        GS_ROUTE_QUERY_NAMED};
    gs_error err;
    gs_error_init(&err);
    json_t *body = NULL;
    if (gs_body_parse(data, size, size & 1, &body, &err) != GS_OK)
        return 0;
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++) {
        gs_db_request dreq;
        gs_db_stmt *stmts = NULL;
        gs_body_to_db_request(actions[i], body, &dreq, &stmts, &err);
        gs_free(stmts);
    }
    json_decref(body);
    return 0;
}
