/*
 * tcp transport wire format (see frame.h): frame header and hello payload, encode and
 * decode. Pure: libc only, no allocation, no state.
 */
#include "frame.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

static void say(char *why, size_t why_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(char *why, size_t why_size, const char *fmt, ...)
{
    if (!why || !why_size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_size, fmt, ap);
    va_end(ap);
}

static const char *frame_type_name(unsigned t)
{
    switch (t) {
    case GS_TCP_FRAME_HELLO: return "hello";
    case GS_TCP_FRAME_MESSAGE: return "message";
    case GS_TCP_FRAME_HEARTBEAT: return "heartbeat";
    case GS_TCP_FRAME_CLOSE: return "close";
    }
    return "unknown";
}

gs_tcp_decode_result gs_tcp_frame_decode(const uint8_t *buf, size_t len, uint64_t max_frame_bytes,
                                         gs_tcp_frame *out, size_t *need, char *why,
                                         size_t why_size)
{
    if (max_frame_bytes < GS_TCP_FRAME_MIN_LENGTH)
        max_frame_bytes = GS_TCP_FRAME_MIN_LENGTH;
    if (max_frame_bytes > GS_TCP_FRAME_LIMIT_MAX)
        max_frame_bytes = GS_TCP_FRAME_LIMIT_MAX;
    if (len < 4 || !buf) {
        if (need)
            *need = 4;
        return GS_TCP_DECODE_NEED_MORE;
    }
    uint32_t length = get_u32(buf);
    if (length < GS_TCP_FRAME_MIN_LENGTH) {
        say(why, why_size, "frame length %" PRIu32 " is below the %d-byte header", length,
            GS_TCP_FRAME_MIN_LENGTH);
        return GS_TCP_DECODE_ERROR;
    }
    if (length > max_frame_bytes) {
        say(why, why_size, "frame of %" PRIu32 " bytes exceeds max_frame_bytes (%" PRIu64 ")",
            length, max_frame_bytes);
        return GS_TCP_DECODE_ERROR;
    }
    size_t total = (size_t)length + 4;
    if (len < GS_TCP_FRAME_HEADER) {
        if (need)
            *need = total;
        return GS_TCP_DECODE_NEED_MORE;
    }
    /* The header is complete: refuse a bad one before waiting for its payload. */
    uint8_t ft = buf[4], mt = buf[5];
    uint64_t call_id = get_u64(buf + 6);
    size_t plen = (size_t)length - GS_TCP_FRAME_MIN_LENGTH;
    switch (ft) {
    case GS_TCP_FRAME_MESSAGE:
        if (mt < 1 || mt > 4) {
            say(why, why_size, "message frame with unknown message type %u (expected 1..4)", mt);
            return GS_TCP_DECODE_ERROR;
        }
        break;
    case GS_TCP_FRAME_HELLO:
    case GS_TCP_FRAME_HEARTBEAT:
    case GS_TCP_FRAME_CLOSE:
        if (mt != 0 || call_id != 0) {
            say(why, why_size, "%s frame with a message type or call id (both must be 0)",
                frame_type_name(ft));
            return GS_TCP_DECODE_ERROR;
        }
        if (ft == GS_TCP_FRAME_HEARTBEAT && plen != 0) {
            say(why, why_size, "heartbeat frame with a %zu-byte payload (must be empty)", plen);
            return GS_TCP_DECODE_ERROR;
        }
        if (ft == GS_TCP_FRAME_HELLO && plen > GS_TCP_HELLO_MAX) {
            say(why, why_size, "hello frame of %zu bytes (at most %d)", plen, GS_TCP_HELLO_MAX);
            return GS_TCP_DECODE_ERROR;
        }
        if (ft == GS_TCP_FRAME_CLOSE && plen > GS_TCP_CLOSE_REASON_MAX) {
            say(why, why_size, "close frame with a %zu-byte reason (at most %d)", plen,
                GS_TCP_CLOSE_REASON_MAX);
            return GS_TCP_DECODE_ERROR;
        }
        break;
    default: say(why, why_size, "unknown frame type %u", ft); return GS_TCP_DECODE_ERROR;
    }
    if (len < total) {
        if (need)
            *need = total;
        return GS_TCP_DECODE_NEED_MORE;
    }
    out->frame_type = ft;
    out->msg_type = mt;
    out->call_id = call_id;
    out->payload = buf + GS_TCP_FRAME_HEADER;
    out->payload_len = plen;
    out->total_len = total;
    return GS_TCP_DECODE_FRAME;
}

size_t gs_tcp_frame_header(uint8_t out[GS_TCP_FRAME_HEADER], gs_tcp_frame_type frame_type,
                           uint8_t msg_type, uint64_t call_id, size_t payload_len)
{
    if (payload_len > (size_t)UINT32_MAX - GS_TCP_FRAME_MIN_LENGTH)
        return 0;
    put_u32(out, (uint32_t)(payload_len + GS_TCP_FRAME_MIN_LENGTH));
    out[4] = (uint8_t)frame_type;
    out[5] = msg_type;
    put_u64(out + 6, call_id);
    return payload_len + GS_TCP_FRAME_HEADER;
}

/* ---- hello ---- */

/* Text a hello may carry: no control bytes (C0, DEL); spaces only when allowed. */
static int text_ok(const char *s, size_t len, int spaces)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || (!spaces && c == ' '))
            return 0;
    }
    return 1;
}

int gs_tcp_node_id_ok(const char *s, size_t len)
{
    return s && len >= 1 && len <= 255 && text_ok(s, len, 0);
}

static int role_ok(const char *s, size_t len)
{
    return (len == 7 && memcmp(s, "primary", 7) == 0) || (len == 7 && memcmp(s, "replica", 7) == 0);
}

size_t gs_tcp_hello_encode(const gs_tcp_hello *h, uint8_t *out, size_t cap)
{
    size_t nid = strnlen(h->node_id, sizeof h->node_id);
    size_t nrole = strnlen(h->role, sizeof h->role);
    size_t ngroup = strnlen(h->group_id, sizeof h->group_id);
    size_t nproto = strnlen(h->protocol_version, sizeof h->protocol_version);
    if (h->version != GS_TCP_HELLO_VERSION || h->heartbeat_ms == 0 || h->primary_term < 0 ||
        !gs_tcp_node_id_ok(h->node_id, nid) || !role_ok(h->role, nrole) || ngroup > 255 ||
        !text_ok(h->group_id, ngroup, 1) || nproto > 63 || !text_ok(h->protocol_version, nproto, 1))
        return 0;
    size_t total = 1 + 4 + 8 + 4 + nid + nrole + ngroup + nproto;
    if (!out || cap < total)
        return 0;
    uint8_t *p = out;
    *p++ = h->version;
    put_u32(p, h->heartbeat_ms);
    p += 4;
    put_u64(p, (uint64_t)h->primary_term);
    p += 8;
    const struct {
        const char *s;
        size_t n;
    } fields[] = {
        {h->node_id, nid}, {h->role, nrole}, {h->group_id, ngroup}, {h->protocol_version, nproto}};
    for (size_t i = 0; i < 4; i++) {
        *p++ = (uint8_t)fields[i].n;
        memcpy(p, fields[i].s, fields[i].n);
        p += fields[i].n;
    }
    return total;
}

/* Read a u8-length string into dst (cap bytes, NUL-terminated). 0 or -1. */
static int get_str(const uint8_t *buf, size_t len, size_t *pos, char *dst, size_t cap,
                   size_t *out_len)
{
    if (*pos >= len)
        return -1;
    size_t n = buf[(*pos)++];
    if (n >= cap || len - *pos < n)
        return -1;
    memcpy(dst, buf + *pos, n);
    dst[n] = '\0';
    *pos += n;
    *out_len = n;
    return 0;
}

int gs_tcp_hello_decode(const uint8_t *buf, size_t len, gs_tcp_hello *h, char *why, size_t why_size)
{
    memset(h, 0, sizeof *h);
    if (!buf || len < 13) {
        say(why, why_size, "hello of %zu bytes is too short", len);
        return -1;
    }
    h->version = buf[0];
    if (h->version != GS_TCP_HELLO_VERSION) {
        say(why, why_size, "hello wire version %u is not supported (this node speaks %d)",
            h->version, GS_TCP_HELLO_VERSION);
        return -1;
    }
    h->heartbeat_ms = get_u32(buf + 1);
    uint64_t term = get_u64(buf + 5);
    if (h->heartbeat_ms == 0) {
        say(why, why_size, "hello with heartbeat_ms 0");
        return -1;
    }
    if (term > (uint64_t)INT64_MAX) {
        say(why, why_size, "hello with a negative primary term");
        return -1;
    }
    h->primary_term = (int64_t)term;
    size_t pos = 13, nid = 0, nrole = 0, ngroup = 0, nproto = 0;
    if (get_str(buf, len, &pos, h->node_id, sizeof h->node_id, &nid) ||
        get_str(buf, len, &pos, h->role, sizeof h->role, &nrole) ||
        get_str(buf, len, &pos, h->group_id, sizeof h->group_id, &ngroup) ||
        get_str(buf, len, &pos, h->protocol_version, sizeof h->protocol_version, &nproto)) {
        say(why, why_size, "hello fields are truncated or too long");
        return -1;
    }
    if (pos != len) {
        say(why, why_size, "hello carries %zu bytes after its last field", len - pos);
        return -1;
    }
    if (!gs_tcp_node_id_ok(h->node_id, nid)) {
        say(why, why_size, "hello node id is empty or holds spaces or control bytes");
        return -1;
    }
    if (!role_ok(h->role, nrole)) {
        say(why, why_size, "hello role is not 'primary' or 'replica'");
        return -1;
    }
    if (!text_ok(h->group_id, ngroup, 1) || !text_ok(h->protocol_version, nproto, 1)) {
        say(why, why_size, "hello group id or protocol version holds control bytes");
        return -1;
    }
    return 0;
}
