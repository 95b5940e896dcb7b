/*
 * Small text helpers shared across the core: hex digits, a byte-string hash. Pure functions,
 * any thread.
 */
#ifndef GS_BASE_TEXT_H
#define GS_BASE_TEXT_H

#include <stddef.h>
#include <stdint.h>

/** FNV-1a 64 of n bytes: for hash tables (not a checksum anybody else reads). */
static inline uint64_t gs_hash_bytes(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/** The value of one hexadecimal digit (either case), or -1. */
static inline int gs_hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
