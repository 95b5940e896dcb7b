/*
 * The live status page (server.status_page): GET /status answers one self-contained HTML page
 * (core/src/api/status_page.html, embedded at build time) that fetches GET /status.json every
 * 2 s and draws it; this module builds that JSON and hands out the page. The JSON shape is
 * documented at the top of status.c and is kept stable: fields are only ever added.
 *
 * Promise: gs_status_json reads only memory (registry, replication engines, request counters),
 * runs no SQL and does no I/O, so it may run on a transport's I/O thread; a database that is
 * closing is still listed (closed: true).
 *
 * Threads: any thread. Ownership: everything passed in is borrowed for the call; the page is a
 * static constant.
 */
#ifndef GS_API_STATUS_H
#define GS_API_STATUS_H

#include "../base/buf.h"
#include "../db/registry.h"
#include "metrics.h"

#include <gatestream/abi.h>
#include <stddef.h>
#include <stdint.h>

/** Who answers: the node's identity for the "node" object. */
typedef struct gs_status_node {
    const char *id;          /* node.id; NULL or "" when unset */
    const char *version;     /* the gatestream version */
    int64_t started_unix_ms; /* wall clock when the api started */
    /* the node's sources of one database as a JSON array (NULL: "[]") */
    void (*sources_json)(void *user, const char *db_id, gs_buf *out);
    void *sources_user;
} gs_status_node;

/**
 * Append the status document to b. reg may be NULL (no databases); m may be NULL (no request
 * counters: "requests" is null). GS_ERROR with INTERNAL_ERROR when out of memory.
 */
gs_status gs_status_json(gs_registry *reg, const gs_status_node *node, gs_metrics *m, gs_buf *b,
                         gs_error *err);

/** The page (UTF-8 HTML, no external resource), and its length. */
const char *gs_status_page_html(size_t *len);

/** Milliseconds since the Unix epoch (wall clock). */
int64_t gs_status_now_unix_ms(void);

#endif
