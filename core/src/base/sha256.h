/*
 * SHA-256 (FIPS 180-4) for the digests the spec defines (registry digest, replication batch
 * checksums and digests, backup piece fingerprints).
 *
 * Promise: the same digests as any FIPS 180-4 implementation, byte for byte. The work is done
 * by nettle (libnettle8), whose x86-64 build picks the SHA extensions when the CPU has them
 * (about ten times the speed of a portable C loop), so fingerprinting a GiB-sized backup is
 * cheap next to the writes it runs beside.
 *
 * Ownership: the caller owns the context (no allocation, nothing to free). Threads: pure
 * functions; a context belongs to one thread at a time.
 */
#ifndef GS_BASE_SHA256_H
#define GS_BASE_SHA256_H

#include <nettle/sha2.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gs_sha256 {
    struct sha256_ctx ctx; /**< nettle's state; use only through the functions below */
} gs_sha256;

void gs_sha256_init(gs_sha256 *c);
void gs_sha256_update(gs_sha256 *c, const void *data, size_t len);
/** Write the digest of everything passed to update since init; c must be re-initialised
 * before it is used again. */
void gs_sha256_final(gs_sha256 *c, uint8_t out[32]);
/** Lowercase hex digest of data into out (65 bytes with the NUL). */
void gs_sha256_hex(const void *data, size_t len, char out[65]);

#endif
