/*
 * Request heads for the ws transport.
 *
 * An adopted connection (host->upgrade_handoff from the http transport) still has its
 * request head unread in the socket: adopt_upgrade peeks it and gs_ws_head_parse keeps the
 * target exactly as sent (percent-encoding intact, which the core needs: a database id may
 * hold %2F) and every header; libwebsockets is then given a short head (ws.c).
 *
 * On our own port nobody peeks (it may be TLS), so the head comes from what libwebsockets
 * parsed: its known headers, plus the custom names configured in `headers` (libwebsockets
 * keeps unknown headers but cannot list them), and the path it decoded, percent-encoded
 * again (an id's '/' survives as %2F; libwebsockets folds "//" and "/./" first).
 *
 * Ownership: a gs_ws_head owns its text and header array (host->alloc); headers point into
 * the text. Threads: any (parse), the service thread (gs_ws_head_from_lws).
 */
#include "ws_internal.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

void gs_ws_head_free(const gs_host *host, gs_ws_head *h)
{
    if (h->text)
        host->free(h->text);
    if (h->headers)
        host->free(h->headers);
    memset(h, 0, sizeof *h);
}

const char *gs_ws_head_get(const gs_ws_head *h, const char *name)
{
    for (size_t i = 0; i < h->header_count; i++)
        if (!strcasecmp(h->headers[i].name, name))
            return h->headers[i].value;
    return NULL;
}

int gs_ws_token_in(const char *value, const char *token)
{
    size_t tl = strlen(token);
    for (const char *p = value; p && *p;) {
        while (is_ows(*p) || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *z = e;
        while (z > p && is_ows(z[-1]))
            z--;
        if ((size_t)(z - p) == tl && !strncasecmp(p, token, tl))
            return 1;
        p = e;
    }
    return 0;
}

int gs_ws_offer_has(const char *offer, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = offer; p && *p;) {
        while (is_ows(*p) || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',' && !is_ows(*e))
            e++;
        if ((size_t)(e - p) == nl && !strncmp(p, name, nl))
            return 1;
        p = e;
    }
    return 0;
}

gs_status gs_ws_head_parse(const gs_host *host, const char *data, size_t n, gs_ws_head *out,
                           size_t *used)
{
    memset(out, 0, sizeof *out);
    *used = 0;
    /* The head ends at the first empty line (CRLF CRLF, or bare LF LF). */
    size_t end = 0;
    size_t lines = 0;
    for (size_t i = 0; i < n; i++) {
        if (data[i] != '\n')
            continue;
        lines++;
        size_t j = i + 1;
        if (j < n && data[j] == '\r')
            j++;
        if (j < n && data[j] == '\n') {
            end = j + 1;
            break;
        }
    }
    if (!end)
        return GS_AGAIN;

    char *t = host->alloc(end + 1);
    gs_header *hs = host->alloc((lines ? lines : 1) * sizeof *hs);
    if (!t || !hs) {
        if (t)
            host->free(t);
        if (hs)
            host->free(hs);
        return GS_ERROR;
    }
    memcpy(t, data, end);
    t[end] = '\0';

    /* Request line: GET SP origin-form-target SP HTTP/x.y */
    char *line = t;
    char *nl = strchr(line, '\n');
    *nl = '\0';
    if (nl > line && nl[-1] == '\r')
        nl[-1] = '\0';
    char *sp1 = strchr(line, ' ');
    char *target = sp1 ? sp1 + 1 : NULL;
    char *sp2 = target ? strchr(target, ' ') : NULL;
    if (!sp1 || !sp2 || target[0] != '/') {
        host->free(t);
        host->free(hs);
        return GS_ERROR;
    }
    *sp2 = '\0';
    target[strcspn(target, "?#")] = '\0';

    size_t count = 0;
    for (line = nl + 1; *line;) {
        nl = strchr(line, '\n');
        if (!nl)
            break;
        *nl = '\0';
        if (nl > line && nl[-1] == '\r')
            nl[-1] = '\0';
        char *colon = strchr(line, ':');
        if (colon && colon > line && !is_ows(line[0]) && count < lines) {
            char *ne = colon;
            while (ne > line && is_ows(ne[-1]))
                ne--;
            *ne = '\0';
            char *v = colon + 1;
            while (is_ows(*v))
                v++;
            char *ve = v + strlen(v);
            while (ve > v && is_ows(ve[-1]))
                ve--;
            *ve = '\0';
            hs[count].name = line;
            hs[count].value = v;
            count++;
        }
        line = nl + 1;
    }
    out->text = t;
    out->headers = hs;
    out->header_count = count;
    out->target = target;
    *used = end;
    return GS_OK;
}

int gs_ws_path_ok(const char *path)
{
    if (!path || strncmp(path, "/db/", 4) != 0)
        return 0;
    const char *id = path + 4;
    return id[0] != '\0' && strchr(id, '/') == NULL;
}

/* Percent-encode what is not unreserved (RFC 3986) and not '/' when keep_slash. */
static size_t pct_encode(const char *in, char *out, size_t size, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~' ||
                    (keep_slash && *p == '/');
        if (plain) {
            if (out && o + 1 < size)
                out[o] = (char)*p;
            o++;
        } else {
            if (out && o + 3 < size) {
                out[o] = '%';
                out[o + 1] = hex[*p >> 4];
                out[o + 2] = hex[*p & 15];
            }
            o += 3;
        }
    }
    if (out && size)
        out[o < size ? o : size - 1] = '\0';
    return o;
}

gs_status gs_ws_head_from_lws(gs_ws *ws, struct lws *wsi, gs_ws_head *out)
{
    const gs_host *host = ws->host;
    memset(out, 0, sizeof *out);

    /* Sizes first: one allocation for every name, value and the target. */
    int ulen = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI);
    if (ulen <= 0)
        return GS_ERROR;
    size_t total = 0, count = 0;
    for (int tok = 0; tok < (int)_WSI_TOKEN_CLIENT_SENT_PROTOCOLS; tok++) {
        const char *name = (const char *)lws_token_to_string((enum lws_token_indexes)tok);
        size_t nl = name ? strlen(name) : 0;
        if (nl < 2 || name[0] == ':' || name[nl - 1] != ':')
            continue; /* method tokens ("get "), h2 pseudo-headers */
        int vl = lws_hdr_total_length(wsi, (enum lws_token_indexes)tok);
        if (vl <= 0)
            continue;
        total += nl + (size_t)vl + 1;
        count++;
    }
    for (size_t i = 0; i < ws->custom_count; i++) {
        int vl = lws_hdr_custom_length(wsi, ws->custom_names[i], (int)strlen(ws->custom_names[i]));
        if (vl < 0)
            continue;
        total += strlen(ws->custom_names[i]) + (size_t)vl + 1;
        count++;
    }
    char *decoded = host->alloc((size_t)ulen + 1);
    if (!decoded)
        return GS_ERROR;
    if (lws_hdr_copy(wsi, decoded, ulen + 1, WSI_TOKEN_GET_URI) < 0) {
        host->free(decoded);
        return GS_ERROR;
    }
    /* /db/ + the id with '/' encoded too: the whole rest is one segment. */
    int db = !strncmp(decoded, "/db/", 4);
    size_t tlen = db ? 4 + pct_encode(decoded + 4, NULL, 0, 0) : pct_encode(decoded, NULL, 0, 1);
    total += tlen + 1;

    char *text = host->alloc(total + 1);
    gs_header *hs = host->alloc((count ? count : 1) * sizeof *hs);
    if (!text || !hs) {
        host->free(decoded);
        if (text)
            host->free(text);
        if (hs)
            host->free(hs);
        return GS_ERROR;
    }
    char *w = text, *lim = text + total + 1;
    out->target = w;
    if (db) {
        memcpy(w, "/db/", 4);
        pct_encode(decoded + 4, w + 4, tlen - 4 + 1, 0);
    } else {
        pct_encode(decoded, w, tlen + 1, 1);
    }
    w += tlen + 1;
    host->free(decoded);

    size_t k = 0;
    for (int tok = 0; tok < (int)_WSI_TOKEN_CLIENT_SENT_PROTOCOLS && k < count; tok++) {
        const char *name = (const char *)lws_token_to_string((enum lws_token_indexes)tok);
        size_t nl = name ? strlen(name) : 0;
        if (nl < 2 || name[0] == ':' || name[nl - 1] != ':')
            continue;
        int vl = lws_hdr_total_length(wsi, (enum lws_token_indexes)tok);
        if (vl <= 0 || (size_t)(lim - w) < nl + (size_t)vl + 1)
            continue;
        memcpy(w, name, nl - 1);
        w[nl - 1] = '\0';
        hs[k].name = w;
        w += nl;
        if (lws_hdr_copy(wsi, w, vl + 1, (enum lws_token_indexes)tok) < 0)
            continue;
        hs[k].value = w;
        w += strlen(w) + 1;
        k++;
    }
    for (size_t i = 0; i < ws->custom_count && k < count; i++) {
        const char *name = ws->custom_names[i];
        size_t nl = strlen(name);
        int vl = lws_hdr_custom_length(wsi, name, (int)nl);
        if (vl < 0 || (size_t)(lim - w) < nl + (size_t)vl + 1)
            continue;
        memcpy(w, name, nl - 1);
        w[nl - 1] = '\0';
        hs[k].name = w;
        w += nl;
        if (lws_hdr_custom_copy(wsi, w, vl + 1, name, (int)nl) < 0)
            continue;
        hs[k].value = w;
        w += strlen(w) + 1;
        k++;
    }
    out->text = text;
    out->headers = hs;
    out->header_count = k;
    return GS_OK;
}
