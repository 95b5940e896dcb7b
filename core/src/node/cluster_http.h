/*
 * A small blocking HTTP/1.1 GET for the operator commands (`gatestream cluster status --url`):
 * one request on a fresh connection with `Connection: close`, the whole answer read into
 * memory (at most GS_CLUSTER_HTTP_MAX_BODY bytes), Content-Length and chunked bodies decoded.
 * Only http:// URLs: the server's own TLS (server.tls_cert_file) is for clients that carry a
 * TLS stack; this tool talks to a node over loopback or a trusted network.
 *
 * Errors use the client codes of spec 07: INVALID_ARGUMENT (a URL this client cannot use),
 * CONNECTION_ERROR (resolve, connect, send or receive failed), TIMEOUT (the whole exchange
 * took longer than timeout_ms), INVALID_RESPONSE (not an HTTP/1.x answer, a bad chunk, a body
 * over the limit). An HTTP error status is not an error here: the caller reads it.
 *
 * Ownership: the caller owns what it passes; the response body is gs_malloc'd and freed with
 * gs_cluster_http_response_free. Threads: any thread; no shared state.
 */
#ifndef GS_NODE_CLUSTER_HTTP_H
#define GS_NODE_CLUSTER_HTTP_H

#include "../base/buf.h"

#include <gatestream/abi.h>
#include <stddef.h>

#define GS_CLUSTER_HTTP_MAX_BODY (4u * 1024u * 1024u)

typedef struct gs_cluster_http_response {
    int status; /**< the HTTP status code */
    char *body; /**< NUL-terminated; body_len excludes the NUL */
    size_t body_len;
} gs_cluster_http_response;

/**
 * GET base_url + path. base_url is "http://host[:port][/prefix]" (host may be [IPv6]); path
 * starts with '/'. headers: NULL or `nheaders` complete "Name: value" lines (no CR/LF inside).
 */
gs_status gs_cluster_http_get(const char *base_url, const char *path, const char *const *headers,
                              size_t nheaders, int timeout_ms, gs_cluster_http_response *out,
                              gs_error *err);
void gs_cluster_http_response_free(gs_cluster_http_response *r);

/** Append `s` percent-encoded as one path segment (RFC 3986 unreserved characters stay). */
void gs_cluster_http_path_segment(gs_buf *b, const char *s);

#endif
