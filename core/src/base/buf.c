#include "buf.h"

#include "alloc.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void gs_buf_init(gs_buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}

void gs_buf_free(gs_buf *b)
{
    gs_free(b->data);
    gs_buf_init(b);
}

void gs_buf_reset(gs_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

int gs_buf_reserve(gs_buf *b, size_t extra)
{
    if (b->oom)
        return -1;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = gs_realloc(b->data, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void gs_buf_append(gs_buf *b, const void *data, size_t len)
{
    if (gs_buf_reserve(b, len))
        return;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void gs_buf_puts(gs_buf *b, const char *s)
{
    gs_buf_append(b, s, strlen(s));
}

void gs_buf_putc(gs_buf *b, char c)
{
    if (gs_buf_reserve(b, 1))
        return;
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}

void gs_buf_printf(gs_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) {
        va_end(ap2);
        return;
    }
    if ((size_t)n < sizeof tmp) {
        gs_buf_append(b, tmp, (size_t)n);
    } else if (!gs_buf_reserve(b, (size_t)n)) {
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when invalid. */
static size_t utf8_seq(const unsigned char *p, size_t left)
{
    unsigned char c = p[0];
    size_t n;
    unsigned int cp;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0) {
        n = 2;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3;
        cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

void gs_buf_json_string(gs_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    if (gs_buf_reserve(b, len + 2))
        return;
    b->data[b->len++] = '"';
    size_t run = 0; /* start of a run of bytes copied as-is */
    size_t i = 0;
    while (i < len) {
        unsigned char c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++;
            continue;
        }
        size_t n = c >= 0x80 ? utf8_seq(p + i, len - i) : 0;
        if (n > 1) {
            i += n;
            continue;
        }
        gs_buf_append(b, s + run, i - run);
        switch (c) {
        case '"': gs_buf_append(b, "\\\"", 2); break;
        case '\\': gs_buf_append(b, "\\\\", 2); break;
        case '\n': gs_buf_append(b, "\\n", 2); break;
        case '\r': gs_buf_append(b, "\\r", 2); break;
        case '\t': gs_buf_append(b, "\\t", 2); break;
        case '\b': gs_buf_append(b, "\\b", 2); break;
        case '\f': gs_buf_append(b, "\\f", 2); break;
        default:
            if (c < 0x20) {
                char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                gs_buf_append(b, e, 6);
            } else {
                gs_buf_append(b, "\xEF\xBF\xBD", 3); /* invalid UTF-8 byte -> U+FFFD */
            }
        }
        i++;
        run = i;
    }
    gs_buf_append(b, s + run, len - run);
    gs_buf_putc(b, '"');
}

void gs_buf_json_double(gs_buf *b, double d)
{
    if (!isfinite(d)) {
        gs_buf_append(b, "null", 4);
        return;
    }
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    /* JSON has no leading '+', and "%g" never gives one; keep "1e+20" as is (valid JSON). */
    gs_buf_puts(b, tmp);
}

void gs_buf_json_int(gs_buf *b, int64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
    gs_buf_append(b, tmp, (size_t)n);
}

void gs_buf_hex_upper(gs_buf *b, const uint8_t *p, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    if (gs_buf_reserve(b, len * 2))
        return;
    for (size_t i = 0; i < len; i++) {
        b->data[b->len++] = hex[p[i] >> 4];
        b->data[b->len++] = hex[p[i] & 15];
    }
    b->data[b->len] = '\0';
}

char *gs_buf_take(gs_buf *b, size_t *len)
{
    char *p = b->data;
    if (len)
        *len = b->len;
    gs_buf_init(b);
    return p;
}
