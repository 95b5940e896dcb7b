/*
 * WebSocket client messages (spec 05-server "Client Messages"): parse one text message and
 * check its shape before anything reaches a database or the change feed. The order of the
 * checks is the protocol's: INVALID_JSON (not JSON), INVALID_MESSAGE (not an object, no string
 * `type` or `id`), UNKNOWN_TYPE, INVALID_MESSAGE (`name` on a type that takes none),
 * SQL_NOT_ACCEPTED (a SQL statement message while accept_sql is off), then INVALID_MESSAGE for
 * any field of the wrong type or shape, including a malformed tagged-value envelope in params,
 * paramsBatch, args or filter, and an invalid readConcern or writeConcern.
 *
 * What the checks do not cover is the session's to decide: duplicate subscription ids,
 * registered operation lookup, registry digest, device sync (SYNC_UNSUPPORTED).
 *
 * Pure (no database, no session): the fuzz target runs it alone. Any thread.
 * Ownership: a parsed message owns its JSON (root); every pointer in it borrows from root and
 * is valid until gs_ws_msg_clear.
 */
#ifndef GS_API_WS_MESSAGE_H
#define GS_API_WS_MESSAGE_H

#include "route.h"

#include <gatestream/abi.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef enum gs_ws_type {
    GS_WS_QUERY = 1,
    GS_WS_EXECUTE,
    GS_WS_TRANSACTION,
    GS_WS_BATCH,
    GS_WS_LOAD,
    GS_WS_SUBSCRIBE,
    GS_WS_UNSUBSCRIBE,
    GS_WS_ACK,
} gs_ws_type;

/** The most table names a `tables` list holds. */
#define GS_WS_MAX_TABLES 500

typedef struct gs_ws_msg {
    json_t *root;    /**< the message object; NULL when it was not JSON */
    gs_ws_type type; /**< 0 when the type was not recognised */
    const char *id;  /**< the id to echo: the message's, or "" when it carried none */
    size_t id_len;
    char id_text[24];       /**< storage for a numeric id echoed as text */
    const char *name;       /**< registered operation (query/execute) or live read (subscribe) */
    gs_route_action action; /**< statement messages: the matching HTTP route action */

    /* subscribe to the change feed */
    const char *table; /**< the table (NULL when `tables` names them) */
    json_t *tables;    /**< device sync: a list of 1..500 names */
    json_t *filter;    /**< NULL or an object of column -> tagged value */
    int has_since;     /**< sinceSeq was given */
    uint64_t since_seq;
    const char *epoch;     /**< NULL when absent */
    const char *device_id; /**< device sync (subscribe and ack): NULL when absent */

    /* subscribe to a live query */
    json_t *args;                /**< NULL or an object */
    const char *registry_digest; /**< NULL when absent */
} gs_ws_msg;

/**
 * Parse and check one message. GS_OK: *out describes a well-formed message. GS_ERROR: err
 * holds the code and out->id the id to echo in the error frame. Either way call
 * gs_ws_msg_clear(out) afterwards.
 */
gs_status gs_ws_msg_parse(const char *data, size_t len, int accept_sql, gs_ws_msg *out,
                          gs_error *err);
void gs_ws_msg_clear(gs_ws_msg *m);

/** Parse a sequence number: ASCII digits only, at most UINT64_MAX. Returns 0 on success. */
int gs_ws_parse_seq(const char *s, uint64_t *out);

#endif
