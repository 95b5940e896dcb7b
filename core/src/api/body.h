/*
 * Request bodies of the statement routes (spec 05-server): parse the JSON object and check
 * each field's shape (sql, params, statements, paramsBatch, durability, checkpoint,
 * readConcern, writeConcern) before anything reaches a database. Errors: EMPTY_BODY,
 * INVALID_JSON, INVALID_REQUEST, INVALID_DURABILITY. Pure; any thread.
 */
#ifndef GS_API_BODY_H
#define GS_API_BODY_H

#include <jansson.h>

#include "../db/database.h"
#include "route.h"

/** Parse a body into a JSON object. allow_empty: an empty body is {} (registered operations). */
gs_status gs_body_parse(const uint8_t *body, size_t len, int allow_empty, json_t **out,
                        gs_error *err);

/**
 * Check the body of a statement route and describe the work in *dreq (pointers borrow from
 * body; *stmts is gs_malloc'd and owned by the caller). For the named routes only the
 * concern fields and args' shape are checked; the caller fills the statements.
 */
gs_status gs_body_to_db_request(gs_route_action action, json_t *body, gs_db_request *dreq,
                                gs_db_stmt **stmts, gs_error *err);

/** readConcern / writeConcern shape checks (also used by the WebSocket messages). */
gs_status gs_body_check_read_concern(json_t *rc, gs_error *err);
gs_status gs_body_check_write_concern(json_t *wc, gs_error *err);

#endif
