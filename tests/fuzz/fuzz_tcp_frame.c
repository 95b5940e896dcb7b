/* Fuzz target: the tcp transport's frame and hello decoders (transports/tcp/frame.c) on
 * arbitrary bytes read as a stream of frames, under a small and the default max_frame_bytes.
 *
 * The decoder lives in the plugin, which gs_core does not contain: frame.c is pure (libc only,
 * no host, no gnutls), so this target compiles it in directly with the #include below rather
 * than linking it. Nothing may crash or read out of bounds, and:
 *   - a decoded frame lies inside the buffer, its header re-encodes to the same 14 bytes, and
 *     every shorter prefix of it decodes as "need more" with a need that grows toward the
 *     frame's size (a reader that waits for *need bytes never waits forever);
 *   - "need more" never asks for more than max_frame_bytes + 4, and the length field is judged
 *     from its first four bytes (so no reader allocates for an oversized claim);
 *   - a hello payload that decodes re-encodes to exactly the same bytes. */
#include "../../transports/tcp/frame.c"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static void check_prefixes(const uint8_t *p, const gs_tcp_frame *f, uint64_t max)
{
    size_t cuts[] = {0, 1, 3, 4, 5, 13, GS_TCP_FRAME_HEADER, f->total_len / 2, f->total_len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        size_t k = cuts[i];
        if (k >= f->total_len)
            continue;
        gs_tcp_frame g;
        size_t need = 0;
        gs_tcp_decode_result r = gs_tcp_frame_decode(p, k, max, &g, &need, NULL, 0);
        CHECK(r == GS_TCP_DECODE_NEED_MORE);
        CHECK(need > k && need <= f->total_len);
    }
}

static void check_hello(const gs_tcp_frame *f)
{
    gs_tcp_hello h;
    char why[128];
    if (gs_tcp_hello_decode(f->payload, f->payload_len, &h, why, sizeof why) != 0) {
        CHECK(why[0] != '\0');
        return;
    }
    uint8_t out[GS_TCP_HELLO_MAX];
    size_t n = gs_tcp_hello_encode(&h, out, sizeof out);
    CHECK(n == f->payload_len);
    CHECK(memcmp(out, f->payload, n) == 0);
}

static void stream(const uint8_t *data, size_t size, uint64_t max)
{
    size_t off = 0;
    while (off < size) {
        gs_tcp_frame f;
        size_t need = 0;
        char why[256];
        why[0] = '\0';
        gs_tcp_decode_result r =
            gs_tcp_frame_decode(data + off, size - off, max, &f, &need, why, sizeof why);
        if (r == GS_TCP_DECODE_ERROR) {
            CHECK(why[0] != '\0');
            return;
        }
        if (r == GS_TCP_DECODE_NEED_MORE) {
            CHECK(need > size - off);
            CHECK(need <= max + 4);
            return;
        }
        CHECK(f.total_len >= GS_TCP_FRAME_HEADER && f.total_len <= size - off);
        CHECK(f.total_len <= max + 4);
        CHECK(f.payload == data + off + GS_TCP_FRAME_HEADER);
        CHECK(f.payload_len == f.total_len - GS_TCP_FRAME_HEADER);
        uint8_t hdr[GS_TCP_FRAME_HEADER];
        CHECK(gs_tcp_frame_header(hdr, (gs_tcp_frame_type)f.frame_type, f.msg_type, f.call_id,
                                  f.payload_len) == f.total_len);
        CHECK(memcmp(hdr, data + off, GS_TCP_FRAME_HEADER) == 0);
        check_prefixes(data + off, &f, max);
        if (f.frame_type == GS_TCP_FRAME_HELLO)
            check_hello(&f);
        off += f.total_len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    stream(data, size, GS_TCP_FRAME_LIMIT_MIN);
    stream(data, size, 67108864);
    /* The whole input as a hello payload too. */
    gs_tcp_frame f = {.frame_type = GS_TCP_FRAME_HELLO, .payload = data, .payload_len = size};
    check_hello(&f);
    return 0;
}
