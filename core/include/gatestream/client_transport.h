/*
 * Client transport plugins (HTTP, WebSocket): they move bytes. A transport accepts
 * connections, turns each request into a gs_request for host->api_submit, and sends the
 * answer the core completes. Routing, value encoding, acceptSql, errors and subscriptions
 * are the core's. The transport owns sockets, TLS, limits and its I/O threads.
 *
 * Threads: create/start/stop/destroy run on the core's main thread, in that order.
 * request->complete may run on any core thread; it must not block.
 */
#ifndef GATESTREAM_CLIENT_TRANSPORT_H
#define GATESTREAM_CLIENT_TRANSPORT_H

#include <gatestream/host.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @since 1.0 */
typedef struct gs_client_transport_vtable {
    uint32_t struct_size;
    /** Required. Build an instance from the filled config struct (valid until destroy). */
    gs_status (*create)(const gs_host *host, const void *config, void **instance, gs_error *err);
    /** Required. Bind and begin serving; fail with a message naming address and cause. */
    gs_status (*start)(void *instance, gs_error *err);
    /** Required. Stop accepting; finish or answer in-flight requests; return when quiet. */
    void (*stop)(void *instance);
    /** Required. Free the instance. */
    void (*destroy)(void *instance);
    /** Optional. The port actually bound (useful with port 0), or -1. */
    int (*bound_port)(void *instance);

    /* ---- ABI 1.1 ---- */

    /**
     * @since 1.1 Optional. Take over an accepted connection whose first bytes (an HTTP
     * WebSocket upgrade request) are still unread: they were peeked, not consumed. The
     * transport owns fd from the call on, also when it fails (it closes fd). Called on any
     * thread; must not block. A transport that sets this serves WebSocket upgrades handed
     * over by another transport listening on the same port.
     */
    gs_status (*adopt_upgrade)(void *instance, int fd, const struct sockaddr *addr,
                               socklen_t addrlen, gs_error *err);
} gs_client_transport_vtable;

#ifdef __cplusplus
}
#endif
#endif
