/* Server URLs: http(s) / ws(s) scheme, host (IPv6 in brackets), port, path prefix; and
 * encodeURIComponent for database ids and operation names. Pure; any thread. */
#include "cl_internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

void cl_url_clear(cl_url *u)
{
    gs_free(u->host);
    gs_free(u->prefix);
    memset(u, 0, sizeof *u);
}

gs_status cl_url_parse(const char *url, cl_url *out, gs_error *err)
{
    memset(out, 0, sizeof *out);
    if (!url || !*url)
        return gs_error_set(err, 0, "INVALID_ARGUMENT", "an empty server URL was given");
    const char *p = strstr(url, "://");
    if (!p)
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "server URL '%s' has no scheme: write http://host:port", url);
    size_t slen = (size_t)(p - url);
    int defport;
    if (slen == 4 && strncasecmp(url, "http", 4) == 0) {
        defport = 80;
    } else if (slen == 5 && strncasecmp(url, "https", 5) == 0) {
        out->tls = 1;
        defport = 443;
    } else if (slen == 2 && strncasecmp(url, "ws", 2) == 0) {
        out->ws = 1;
        defport = 80;
    } else if (slen == 3 && strncasecmp(url, "wss", 3) == 0) {
        out->ws = 1;
        out->tls = 1;
        defport = 443;
    } else {
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "server URL '%s': the scheme must be http, https, ws or wss", url);
    }
    const char *h = p + 3;
    const char *hend;
    const char *rest;
    if (*h == '[') {
        hend = strchr(h, ']');
        if (!hend)
            return gs_error_set(err, 0, "INVALID_ARGUMENT",
                                "server URL '%s': an IPv6 address lacks its ']'", url);
        out->host = gs_strndup(h + 1, (size_t)(hend - h - 1));
        rest = hend + 1;
    } else {
        hend = h + strcspn(h, ":/?#");
        out->host = gs_strndup(h, (size_t)(hend - h));
        rest = hend;
    }
    if (!out->host)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    if (!out->host[0] || strchr(out->host, '@')) {
        cl_url_clear(out);
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "server URL '%s': no host (user info is not supported)", url);
    }
    out->port = defport;
    if (*rest == ':') {
        char *end;
        long port = strtol(rest + 1, &end, 10);
        if (end == rest + 1 || port < 1 || port > 65535 || (*end && *end != '/')) {
            cl_url_clear(out);
            return gs_error_set(err, 0, "INVALID_ARGUMENT",
                                "server URL '%s': the port must be 1 to 65535", url);
        }
        out->port = (int)port;
        rest = end;
    }
    if (*rest && *rest != '/') {
        cl_url_clear(out);
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "server URL '%s': a query or fragment is not allowed", url);
    }
    size_t plen = strlen(rest);
    while (plen > 0 && rest[plen - 1] == '/')
        plen--;
    if (strcspn(rest, "?#") < plen) {
        cl_url_clear(out);
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "server URL '%s': a query or fragment is not allowed", url);
    }
    out->prefix = gs_strndup(rest, plen);
    if (!out->prefix) {
        cl_url_clear(out);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    return GS_OK;
}

void cl_url_encode(gs_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            strchr("-_.!~*'()", c)) {
            gs_buf_putc(b, (char)c);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            gs_buf_append(b, e, 3);
        }
    }
}
