/*
 * The WebSocket transport: one connection per (database, endpoint), our own RFC 6455
 * client over a socket (GnuTLS for wss), driven by one I/O thread per connection.
 *
 * Promise: requests from any thread are framed on the submitting thread and queued; the
 * I/O thread connects lazily on the first request, writes, reads, answers pings, matches
 * replies to requests by the id it echoes (c_{counter}_{timestamp}), fails a request with
 * TIMEOUT at its deadline, and with CONNECTION_ERROR when the connection drops. Close codes
 * 4401 / 4403 / 4000-4099 refuse the connection for good (UNAUTHORIZED, FORBIDDEN). While
 * subscriptions or live queries exist it reconnects with exponential backoff and restores
 * them (cl_ws_sub.c). In coordinator mode it reads routing again after a connection with
 * subscriptions closed (not refused), and whenever the database's routing changed it moves
 * its subscriptions to the endpoint routing now names when its own is no longer listed
 * (cl_ws_subs_reroute). Completions and events run on the I/O thread.
 *
 * Ownership: cl_ws_submit takes the call on GS_OK (it is finished exactly once); on an
 * error return the call is still the caller's. cl_ws_free fails what is pending (callbacks
 * run before it returns) and frees every subscription on the connection.
 */
#ifndef GS_CLIENT_WS_H
#define GS_CLIENT_WS_H

#include "cl_internal.h"

/* ---- cl_ws_frame.c: the pure parts ---- */
typedef struct cl_ws_frame_hdr {
    int fin;
    int opcode;
    int masked;
    uint64_t len;
    size_t header_len;
    uint8_t mask[4];
} cl_ws_frame_hdr;

enum {
    CL_WS_CONT = 0,
    CL_WS_TEXT = 1,
    CL_WS_BINARY = 2,
    CL_WS_CLOSE = 8,
    CL_WS_PING = 9,
    CL_WS_PONG = 10,
};

/** Standard base64 of n bytes into out (room for 4*ceil(n/3)+1); returns its length. */
size_t cl_base64(const uint8_t *in, size_t n, char *out);
/** A random value for masking keys (per-thread xorshift seeded from getrandom). */
uint32_t cl_ws_random32(void);
/** A fresh Sec-WebSocket-Key (16 random bytes, base64). */
int cl_ws_make_key(char out[25]);
/** The Sec-WebSocket-Accept a server must answer for key. */
int cl_ws_accept_for(const char *key, char out[29]);
/** Append one masked client frame (FIN set). */
void cl_ws_frame_append(gs_buf *b, int opcode, const void *payload, size_t len);
/** Parse a frame header: 1 parsed, 0 need more bytes, -1 protocol error. */
int cl_ws_frame_parse(const uint8_t *p, size_t n, cl_ws_frame_hdr *h);

/* ---- cl_ws.c ---- */
cl_ws *cl_ws_new(gs_client *c, cl_endpoint *ep, gs_client_db *db, gs_error *err);
/** Stop the I/O thread and wait for it (idempotent; cl_ws_free does it too). Pending calls
 * fail with CONNECTION_ERROR; subscriptions stay on the connection until cl_ws_free. */
void cl_ws_stop(cl_ws *ws);
void cl_ws_free(cl_ws *ws);
/** Wake the I/O thread (any thread, no lock needed). */
void cl_ws_wake(cl_ws *ws);
gs_status cl_ws_submit(cl_ws *ws, cl_call *call, gs_error *err);
/** The wait before reconnect attempt `step` (0 first): base doubled per step, capped. */
int64_t cl_ws_backoff_delay(int64_t base_ms, int64_t max_ms, int step);
/** 1 when the calling thread is ws's I/O thread. */
int cl_ws_on_io_thread(cl_ws *ws);

#endif
