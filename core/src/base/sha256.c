/* SHA-256 through nettle: see sha256.h. */
#include "sha256.h"

_Static_assert(SHA256_DIGEST_SIZE == 32, "nettle's SHA-256 digest is 32 bytes");

void gs_sha256_init(gs_sha256 *c)
{
    sha256_init(&c->ctx);
}

void gs_sha256_update(gs_sha256 *c, const void *data, size_t len)
{
    if (len) /* data may be NULL for an empty update */
        sha256_update(&c->ctx, len, data);
}

void gs_sha256_final(gs_sha256 *c, uint8_t out[32])
{
    sha256_digest(&c->ctx, SHA256_DIGEST_SIZE, out);
}

void gs_sha256_hex(const void *data, size_t len, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    gs_sha256 c;
    uint8_t d[SHA256_DIGEST_SIZE];
    gs_sha256_init(&c);
    gs_sha256_update(&c, data, len);
    gs_sha256_final(&c, d);
    for (int i = 0; i < SHA256_DIGEST_SIZE; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[64] = 0;
}
