/*
 * The operator commands' HTTP GET: see cluster_http.h. Non-blocking socket driven by poll()
 * against one deadline, so a node that accepts and never answers cannot hang the command.
 */
#include "cluster_http.h"

#include "../base/alloc.h"
#include "../base/error.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct url_parts {
    char host[256];
    char port[8];
    char prefix[512]; /* the URL's path without a trailing '/' ("" for none) */
} url_parts;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static gs_status parse_url(const char *url, url_parts *u, gs_error *err)
{
    memset(u, 0, sizeof *u);
    if (strncasecmp(url, "https://", 8) == 0)
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "'%s': https is not supported by this command; reach the node over "
                            "http (loopback or a trusted network), or read the group from the "
                            "coordinator with --config",
                            url);
    if (strncasecmp(url, "http://", 7) != 0)
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "'%s' is not an http:// URL (expected http://host:port)", url);
    const char *p = url + 7;
    const char *host_end;
    const char *h0 = p;
    if (*p == '[') { /* [IPv6] */
        host_end = strchr(p, ']');
        if (!host_end)
            return gs_error_set(err, 0, "INVALID_ARGUMENT", "'%s': unclosed '[' in the host", url);
        h0 = p + 1;
        p = host_end + 1;
    } else {
        host_end = p + strcspn(p, ":/?#");
        p = host_end;
    }
    size_t hl = (size_t)(host_end - h0);
    if (hl == 0 || hl >= sizeof u->host)
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "'%s': missing or over-long host", url);
    memcpy(u->host, h0, hl);
    snprintf(u->port, sizeof u->port, "80");
    if (*p == ':') {
        p++;
        size_t pl = strspn(p, "0123456789");
        long port = pl && pl < 6 ? strtol(p, NULL, 10) : -1;
        if (port < 1 || port > 65535 || (p[pl] && p[pl] != '/'))
            return gs_error_set(err, 0, "INVALID_ARGUMENT",
                                "'%s': the port must be a number from 1 to 65535", url);
        snprintf(u->port, sizeof u->port, "%ld", port);
        p += pl;
    }
    if (*p == '?' || *p == '#')
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "'%s': give the node's base URL without a query or fragment", url);
    size_t plen = strlen(p);
    while (plen && p[plen - 1] == '/')
        plen--;
    if (plen >= sizeof u->prefix || memchr(p, '?', plen) || memchr(p, '#', plen))
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "'%s': unusable path", url);
    memcpy(u->prefix, p, plen);
    return GS_OK;
}

void gs_cluster_http_path_segment(gs_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if ((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
            *c == '-' || *c == '.' || *c == '_' || *c == '~') {
            gs_buf_putc(b, (char)*c);
        } else {
            gs_buf_putc(b, '%');
            gs_buf_putc(b, hex[*c >> 4]);
            gs_buf_putc(b, hex[*c & 15]);
        }
    }
}

/* Wait for `events` on fd until the deadline: 1 ready, 0 timed out, -1 poll failed. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd pfd = {.fd = fd, .events = events};
        int r = poll(&pfd, 1, (int)left);
        if (r > 0)
            return 1;
        if (r == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

static int connect_to(const url_parts *u, int64_t deadline, const char *url, gs_error *err)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(u->host, u->port, &hints, &res);
    if (rc != 0) {
        gs_error_set(err, 0, "CONNECTION_ERROR", "cannot resolve '%s' (%s): %s", u->host, url,
                     gai_strerror(rc));
        return -1;
    }
    int fd = -1, last_errno = 0, timed_out = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        if (errno == EINPROGRESS) {
            int w = wait_fd(fd, POLLOUT, deadline);
            int so = 0;
            socklen_t sl = sizeof so;
            if (w == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) == 0 && so == 0)
                break;
            if (w == 0)
                timed_out = 1;
            last_errno = w == 1 ? so : errno;
        } else {
            last_errno = errno;
        }
        close(fd);
        fd = -1;
        if (timed_out)
            break;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        if (timed_out)
            gs_error_set(err, 0, "TIMEOUT", "connecting to %s timed out", url);
        else
            gs_error_set(err, 0, "CONNECTION_ERROR",
                         "cannot connect to %s: %s (is the node running and is server.host/"
                         "server.port right?)",
                         url, strerror(last_errno));
    }
    return fd;
}

static gs_status send_all(int fd, const char *p, size_t n, int64_t deadline, const char *url,
                          gs_error *err)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_fd(fd, POLLOUT, deadline);
            if (r == 0)
                return gs_error_set(err, 0, "TIMEOUT", "sending the request to %s timed out", url);
            if (r < 0)
                return gs_error_set(err, 0, "CONNECTION_ERROR", "poll: %s", strerror(errno));
            continue;
        }
        return gs_error_set(err, 0, "CONNECTION_ERROR", "sending the request to %s: %s", url,
                            strerror(errno));
    }
    return GS_OK;
}

static gs_status recv_all(int fd, gs_buf *in, int64_t deadline, const char *url, gs_error *err)
{
    char chunk[16384];
    for (;;) {
        ssize_t r = recv(fd, chunk, sizeof chunk, 0);
        if (r > 0) {
            if (in->len + (size_t)r > GS_CLUSTER_HTTP_MAX_BODY + 65536)
                return gs_error_set(err, 0, "INVALID_RESPONSE",
                                    "the answer of %s is larger than %u bytes", url,
                                    GS_CLUSTER_HTTP_MAX_BODY);
            gs_buf_append(in, chunk, (size_t)r);
            continue;
        }
        if (r == 0)
            return GS_OK;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int w = wait_fd(fd, POLLIN, deadline);
            if (w == 0)
                return gs_error_set(err, 0, "TIMEOUT",
                                    "%s did not finish its answer in time (%zu bytes so far)", url,
                                    in->len);
            if (w < 0)
                return gs_error_set(err, 0, "CONNECTION_ERROR", "poll: %s", strerror(errno));
            continue;
        }
        return gs_error_set(err, 0, "CONNECTION_ERROR", "reading the answer of %s: %s", url,
                            strerror(errno));
    }
}

/* Case-insensitive header lookup in the head block [h, end): value copied into out. */
static int header_value(const char *h, const char *end, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *line = h;
    while (line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            eol = end;
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            size_t vl = (size_t)(ve - v) < cap - 1 ? (size_t)(ve - v) : cap - 1;
            memcpy(out, v, vl);
            out[vl] = 0;
            return 1;
        }
        line = eol + 1;
    }
    return 0;
}

static gs_status dechunk(const char *p, size_t n, gs_buf *body, const char *url, gs_error *err)
{
    size_t i = 0;
    for (;;) {
        const char *eol = i < n ? memchr(p + i, '\n', n - i) : NULL;
        if (!eol)
            return gs_error_set(err, 0, "INVALID_RESPONSE", "%s: truncated chunked body", url);
        char *end;
        errno = 0;
        unsigned long long sz = strtoull(p + i, &end, 16);
        if (end == p + i || errno || sz > GS_CLUSTER_HTTP_MAX_BODY)
            return gs_error_set(err, 0, "INVALID_RESPONSE", "%s: bad chunk size", url);
        i = (size_t)(eol - p) + 1;
        if (sz == 0)
            return GS_OK; /* trailers, if any, are ignored */
        if (n - i < sz + 2 || body->len + sz > GS_CLUSTER_HTTP_MAX_BODY)
            return gs_error_set(err, 0, "INVALID_RESPONSE",
                                "%s: truncated or over-large chunked body", url);
        gs_buf_append(body, p + i, (size_t)sz);
        i += (size_t)sz;
        if (p[i] == '\r')
            i++;
        if (i >= n || p[i] != '\n')
            return gs_error_set(err, 0, "INVALID_RESPONSE", "%s: chunk not followed by CRLF", url);
        i++;
    }
}

static gs_status parse_response(const gs_buf *in, gs_cluster_http_response *out, const char *url,
                                gs_error *err)
{
    const char *p = in->data ? in->data : "";
    size_t n = in->len;
    int major = 0, minor = 0, status = 0, used = 0;
    if (n < 12 || sscanf(p, "HTTP/%d.%d %3d%n", &major, &minor, &status, &used) != 3 ||
        major != 1 || status < 100 || status > 599)
        return gs_error_set(err, 0, "INVALID_RESPONSE",
                            "%s did not answer with HTTP/1.x (got %zu bytes)", url, n);
    const char *head_end = NULL;
    for (size_t i = 0; i + 1 < n; i++) {
        if (p[i] == '\n' && p[i + 1] == '\n') {
            head_end = p + i + 2;
            break;
        }
        if (i + 3 < n && memcmp(p + i, "\r\n\r\n", 4) == 0) {
            head_end = p + i + 4;
            break;
        }
    }
    if (!head_end)
        return gs_error_set(err, 0, "INVALID_RESPONSE", "%s: the answer's headers never end", url);
    const char *first_eol = memchr(p, '\n', n);
    const char *hdrs = first_eol ? first_eol + 1 : head_end;
    size_t rest = n - (size_t)(head_end - p);
    char te[64] = "", cl[32] = "";
    gs_buf body;
    gs_buf_init(&body);
    gs_status st = GS_OK;
    if (header_value(hdrs, head_end, "Transfer-Encoding", te, sizeof te) &&
        strcasestr(te, "chunked")) {
        st = dechunk(head_end, rest, &body, url, err);
    } else if (header_value(hdrs, head_end, "Content-Length", cl, sizeof cl)) {
        char *end;
        errno = 0;
        unsigned long long want = strtoull(cl, &end, 10);
        if (end == cl || *end || errno || want > GS_CLUSTER_HTTP_MAX_BODY)
            st = gs_error_set(err, 0, "INVALID_RESPONSE", "%s: bad Content-Length '%s'", url, cl);
        else if (rest < want)
            st = gs_error_set(err, 0, "INVALID_RESPONSE",
                              "%s: the connection closed after %zu of %llu body bytes", url, rest,
                              want);
        else
            gs_buf_append(&body, head_end, (size_t)want);
    } else {
        if (rest > GS_CLUSTER_HTTP_MAX_BODY)
            st = gs_error_set(err, 0, "INVALID_RESPONSE", "%s: body over %u bytes", url,
                              GS_CLUSTER_HTTP_MAX_BODY);
        else
            gs_buf_append(&body, head_end, rest);
    }
    if (st == GS_OK && body.oom)
        st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    if (st != GS_OK) {
        gs_buf_free(&body);
        return st;
    }
    out->status = status;
    gs_buf_append(&body, "", 0); /* an empty body is still a NUL-terminated string */
    if (body.oom) {
        gs_buf_free(&body);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    out->body = gs_buf_take(&body, &out->body_len);
    return GS_OK;
}

gs_status gs_cluster_http_get(const char *base_url, const char *path, const char *const *headers,
                              size_t nheaders, int timeout_ms, gs_cluster_http_response *out,
                              gs_error *err)
{
    memset(out, 0, sizeof *out);
    url_parts u;
    if (parse_url(base_url, &u, err) != GS_OK)
        return GS_ERROR;
    if (!path || path[0] != '/')
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "the request path must start with '/'");
    for (size_t i = 0; i < nheaders; i++)
        if (strpbrk(headers[i], "\r\n") || !strchr(headers[i], ':'))
            return gs_error_set(err, 0, "INVALID_ARGUMENT",
                                "header '%s' must be one 'Name: value' line", headers[i]);
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 10000);
    gs_buf req;
    gs_buf_init(&req);
    int v6 = strchr(u.host, ':') != NULL;
    gs_buf_printf(&req, "GET %s%s HTTP/1.1\r\nHost: %s%s%s%s%s\r\n", u.prefix, path, v6 ? "[" : "",
                  u.host, v6 ? "]" : "", strcmp(u.port, "80") ? ":" : "",
                  strcmp(u.port, "80") ? u.port : "");
    gs_buf_puts(&req, "Accept: application/json\r\nConnection: close\r\n"
                      "User-Agent: gatestream-cluster\r\n");
    for (size_t i = 0; i < nheaders; i++)
        gs_buf_printf(&req, "%s\r\n", headers[i]);
    gs_buf_puts(&req, "\r\n");
    if (req.oom) {
        gs_buf_free(&req);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    int fd = connect_to(&u, deadline, base_url, err);
    if (fd < 0) {
        gs_buf_free(&req);
        return GS_ERROR;
    }
    gs_buf in;
    gs_buf_init(&in);
    gs_status st = send_all(fd, req.data, req.len, deadline, base_url, err);
    if (st == GS_OK)
        st = recv_all(fd, &in, deadline, base_url, err);
    close(fd);
    gs_buf_free(&req);
    if (st == GS_OK && in.oom)
        st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    if (st == GS_OK)
        st = parse_response(&in, out, base_url, err);
    gs_buf_free(&in);
    return st;
}

void gs_cluster_http_response_free(gs_cluster_http_response *r)
{
    if (!r)
        return;
    gs_free(r->body);
    r->body = NULL;
    r->body_len = 0;
}
