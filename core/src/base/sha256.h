/*
 * SHA-256 (FIPS 180-4) for digests the spec defines (registry digest, later snapshot
 * checksums). Pure functions, no state beyond the caller's context.
 */
#ifndef GS_BASE_SHA256_H
#define GS_BASE_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct gs_sha256 {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t used;
} gs_sha256;

void gs_sha256_init(gs_sha256 *c);
void gs_sha256_update(gs_sha256 *c, const void *data, size_t len);
void gs_sha256_final(gs_sha256 *c, uint8_t out[32]);
/** Lowercase hex digest of data into out (65 bytes with the NUL). */
void gs_sha256_hex(const void *data, size_t len, char out[65]);

#endif
