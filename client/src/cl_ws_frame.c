/* RFC 6455 client side, the pure parts: the handshake key and its accept value, masked
 * frame encoding, frame header parsing. Any thread (the masking RNG is per thread). */
#include "cl_ws.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <string.h>
#include <sys/random.h>

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t cl_base64(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? b64[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

static __thread uint64_t rng_state;

uint32_t cl_ws_random32(void)
{
    if (!rng_state) {
        uint64_t seed = 0;
        if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed || !seed)
            seed = (uint64_t)(uintptr_t)&seed ^ 0x9E3779B97F4A7C15ULL;
        rng_state = seed | 1;
    }
    /* xorshift64*: masking keys only need to be unpredictable to intermediaries. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

int cl_ws_make_key(char out[25])
{
    uint8_t nonce[16];
    if (getrandom(nonce, sizeof nonce, 0) != (ssize_t)sizeof nonce)
        return -1;
    cl_base64(nonce, sizeof nonce, out);
    return 0;
}

int cl_ws_accept_for(const char *key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char buf[64 + sizeof guid];
    size_t kl = strlen(key);
    if (kl > 64)
        return -1;
    memcpy(buf, key, kl);
    memcpy(buf + kl, guid, sizeof guid - 1);
    uint8_t digest[20];
    if (gnutls_hash_fast(GNUTLS_DIG_SHA1, buf, kl + sizeof guid - 1, digest) != 0)
        return -1;
    cl_base64(digest, sizeof digest, out);
    return 0;
}

void cl_ws_frame_append(gs_buf *b, int opcode, const void *payload, size_t len)
{
    uint8_t h[14];
    size_t hl = 0;
    h[hl++] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        h[hl++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xffff) {
        h[hl++] = 0x80 | 126;
        h[hl++] = (uint8_t)(len >> 8);
        h[hl++] = (uint8_t)len;
    } else {
        h[hl++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[hl++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint32_t key = cl_ws_random32();
    uint8_t mask[4] = {(uint8_t)(key >> 24), (uint8_t)(key >> 16), (uint8_t)(key >> 8),
                       (uint8_t)key};
    memcpy(h + hl, mask, 4);
    hl += 4;
    if (gs_buf_reserve(b, hl + len))
        return;
    memcpy(b->data + b->len, h, hl);
    b->len += hl;
    uint8_t *dst = (uint8_t *)b->data + b->len;
    const uint8_t *src = payload;
    size_t i = 0;
    uint32_t m32;
    memcpy(&m32, mask, 4);
    for (; i + 4 <= len; i += 4) {
        uint32_t w;
        memcpy(&w, src + i, 4);
        w ^= m32;
        memcpy(dst + i, &w, 4);
    }
    for (; i < len; i++)
        dst[i] = src[i] ^ mask[i & 3];
    b->len += len;
    b->data[b->len] = '\0';
}

int cl_ws_frame_parse(const uint8_t *p, size_t n, cl_ws_frame_hdr *h)
{
    if (n < 2)
        return 0;
    memset(h, 0, sizeof *h);
    h->fin = p[0] >> 7;
    if (p[0] & 0x70)
        return -1; /* no extension was negotiated: RSV bits must be 0 */
    h->opcode = p[0] & 0x0f;
    h->masked = p[1] >> 7;
    uint64_t len = p[1] & 0x7f;
    size_t hl = 2;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = (uint64_t)p[2] << 8 | p[3];
        hl = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        if (len >> 63)
            return -1;
        hl = 10;
    }
    if (h->masked) {
        if (n < hl + 4)
            return 0;
        memcpy(h->mask, p + hl, 4);
        hl += 4;
    }
    if (h->opcode >= 8 && (len > 125 || !h->fin))
        return -1; /* control frames are short and never fragmented */
    if ((h->opcode > 2 && h->opcode < 8) || h->opcode > 10)
        return -1;
    h->len = len;
    h->header_len = hl;
    return 1;
}
