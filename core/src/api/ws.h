/*
 * WebSocket sessions: the Sirannon WebSocket protocol (spec 05-server, "WebSocket Protocol")
 * over the same api layer the HTTP routes use. A client transport (transports/ws) hands the
 * core an upgrade (gs_ws_open), each complete client message (gs_ws_message), an oversized
 * message it discarded (gs_ws_too_large) and the end of the connection (gs_ws_close); the
 * core answers through the gs_ws_sink the transport filled in the upgrade.
 *
 * Promise: every request message is answered exactly once ({"type":"result"} or
 * {"type":"error"}), in order of completion; subscriptions push {"type":"change"} and
 * {"type":"live"} frames until unsubscribed or closed. After gs_ws_close returns the core
 * never calls the sink again. A sink->send that answers GS_AGAIN (backpressure: the
 * transport closes with 4290) ends all sending on that session and releases its
 * subscriptions.
 *
 * Ownership: the core copies the sink and anything it keeps from a request; the session
 * pointer returned through gs_ws_open_result belongs to the core and stays valid until
 * gs_ws_close returns.
 *
 * Threads: gs_ws_open, gs_ws_message, gs_ws_too_large and gs_ws_close run on the transport's
 * thread and run no SQL and no blocking work (statements go to the database pools, live-query
 * opens and feed closes to a core worker). The sink is called from any core thread.
 */
#ifndef GS_API_WS_H
#define GS_API_WS_H

#include <gatestream/host.h>

#include "api.h"

/** An upgrade: authenticate, check path/database/subprotocol, open a session (see host.h). */
gs_status gs_ws_open(gs_api *api, const gs_ws_open_request *req, gs_ws_open_result *res,
                     gs_error *err);
/** One complete client message (data valid for the call only). */
void gs_ws_message(gs_api *api, void *session, const char *data, size_t len);
/** The client sent a message over max_body_bytes; the transport discarded it. */
void gs_ws_too_large(gs_api *api, void *session);
/** The connection is gone; after this returns the sink is never called again. */
void gs_ws_close(gs_api *api, void *session);

#endif
