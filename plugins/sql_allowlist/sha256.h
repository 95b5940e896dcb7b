/*
 * SHA-256 (FIPS 180-4) of a byte string, as 64 lowercase hex digits. Private to the
 * sql_allowlist plugin (hidden visibility); pure, thread-safe, allocates nothing.
 */
#ifndef SQL_ALLOWLIST_SHA256_H
#define SQL_ALLOWLIST_SHA256_H

#include <stddef.h>

/** Write the digest of data[0..len) as 64 hex digits and a NUL into hex (65 bytes). */
void sqlal_sha256_hex(const void *data, size_t len, char hex[65]);

#endif
