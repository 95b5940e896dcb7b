/*
 * SQLite's ORDER BY comparison, reproduced for a live query's held rows: value ordering
 * (NULL < numbers < text < blobs, integers and reals compared exactly), the built-in
 * collations BINARY, NOCASE and RTRIM, DESC and NULLS FIRST/LAST, so a row changed by a
 * transaction is placed where a read of the base table would put it.
 *
 * Which collation and direction each ORDER BY term has is SQLite's to say: the live query
 * reads them from the sorter SQLite builds for the statement (the KeyInfo of its SorterOpen,
 * shown by EXPLAIN as "k(N,[-][N.]COLL,...)"), and gs_live_keyinfo_parse decodes that text.
 *
 * Ownership: values point into storage their owner keeps. Threads: pure functions.
 */
#ifndef GS_DB_LIVE_ORDER_H
#define GS_DB_LIVE_ORDER_H

#include <stddef.h>
#include <stdint.h>

typedef enum gs_live_coll {
    GS_LIVE_COLL_BINARY = 0,
    GS_LIVE_COLL_NOCASE = 1,
    GS_LIVE_COLL_RTRIM = 2,
} gs_live_coll;

typedef struct gs_live_sortkey {
    gs_live_coll coll;
    int desc;    /**< DESC */
    int bignull; /**< NULLs sort as the largest value (ASC NULLS LAST, DESC NULLS FIRST) */
} gs_live_sortkey;

/** A value as SQLite holds it: type is SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB
 * or SQLITE_NULL; text and blob bytes at p (n bytes). */
typedef struct gs_live_val {
    int type;
    int64_t i;
    double d;
    const unsigned char *p;
    size_t n;
} gs_live_val;

/** "BINARY" / "NOCASE" / "RTRIM" (any case) -> 0 and *out; -1 for any other name. */
int gs_live_coll_parse(const char *name, size_t len, gs_live_coll *out);

/** sqlite3MemCompare: <0, 0, >0. */
int gs_live_val_cmp(const gs_live_val *a, const gs_live_val *b, gs_live_coll coll);

/** Compare two sort keys of n terms under keys[]: <0, 0, >0. */
int gs_live_sort_cmp(const gs_live_sortkey *keys, size_t n, const gs_live_val *a,
                     const gs_live_val *b);

/** Decode the P4 text of a sorter's KeyInfo ("k(N,...)") into exactly n keys. Returns 0,
 * -1 when the text has another shape or field count, -2 when a collation is not one of the
 * built-in three (its name is copied to unknown, up to cap bytes). */
int gs_live_keyinfo_parse(const char *p4, gs_live_sortkey *keys, size_t n, char *unknown,
                          size_t cap);

#endif
