/*
 * The rows a live query holds, in the statement's order, and the splices one transaction
 * makes to them (spec 02 "Live Queries": ops insert/update/delete applied in order).
 *
 * Order: rows are kept sorted by the ORDER BY terms (live_order.h) and, among rows that
 * compare equal, by their identity, so every row has one place. SQLite leaves ties in no
 * particular order, so a result read fresh may hold equal rows in another order; the held
 * order is always one a read could have returned.
 *
 * Windows: with LIMIT L (and OFFSET O) the held rows are a window of a longer result. The
 * result knows whether rows exist beyond the window (it held fewer than L after the read:
 * none) and a lower bound on their sort keys. A change places a row inside the window only
 * when it sorts at or before that bound; a window left short of L rows at the end of a
 * transaction, while rows may exist beyond it, cannot be refilled: the transaction asks for
 * a re-read. With OFFSET, a change that may fall before the window (at or before the first
 * row held at the read, or a replace whose old row is unknown) asks for a re-read too, and so
 * does a transaction with more changes than the result has rows.
 *
 * Ownership: the result owns its rows; gs_live_result_apply_take and
 * gs_live_result_reset_take take the rows they are given, even when they fail. Threads: one
 * owner (the live query's worker); nothing here locks.
 */
#ifndef GS_DB_LIVE_RESULT_H
#define GS_DB_LIVE_RESULT_H

#include "base/buf.h"
#include "live_order.h"

#include <stddef.h>
#include <stdint.h>

/** One row: identity, the row object as JSON text, and its sort values. One allocation. */
typedef struct gs_live_row {
    struct gs_live_row *hnext; /**< the result's key index */
    const char *key;
    size_t keylen;
    const char *json;
    size_t jsonlen;
    gs_live_val *vals;
    size_t nvals;
} gs_live_row;

/** Copy key, JSON and values (their bytes too) into a new row; NULL on OOM. */
gs_live_row *gs_live_row_new(const char *key, size_t keylen, const char *json, size_t jsonlen,
                             const gs_live_val *vals, size_t nvals);
void gs_live_row_free(gs_live_row *r);

typedef struct gs_live_result gs_live_result;

/** limit < 0: no LIMIT. keys are copied. NULL on OOM. */
gs_live_result *gs_live_result_new(const gs_live_sortkey *keys, size_t nkeys, int64_t limit,
                                   int64_t offset);
void gs_live_result_free(gs_live_result *r);

/** Replace the rows with those of a read (rows[0..n), in any order; the array stays the
 * caller's, the rows become the result's). Returns 0, or -1 on OOM (the rows are freed and
 * the result is empty). */
int gs_live_result_reset_take(gs_live_result *r, gs_live_row **rows, size_t n);

size_t gs_live_result_count(const gs_live_result *r);
const gs_live_row *gs_live_result_at(const gs_live_result *r, size_t i);
/** Append the held rows as a JSON array. */
void gs_live_result_rows_json(const gs_live_result *r, gs_buf *out);

/** One row's net change in a transaction: before/after are its images that match the
 * statement's WHERE (NULL when the row did not exist or did not match). */
typedef struct gs_live_change {
    const char *key;
    size_t keylen;
    gs_live_row *before;
    gs_live_row *after;
    int unseen_before; /**< an insert with no image before it: the key may have existed
                            (INSERT OR REPLACE logs no delete), so its old row is unknown */
} gs_live_change;

enum {
    GS_LIVE_APPLIED = 0, /**< ops hold the splices (none when nothing changed) */
    GS_LIVE_REREAD = 1,  /**< the rows cannot be kept from these changes: read again */
};

/** Apply one transaction's changes in order, appending each op object (comma-separated,
 * no brackets) to ops and counting them in *nops. Takes every before/after row. Returns
 * GS_LIVE_APPLIED or GS_LIVE_REREAD (also on OOM); after GS_LIVE_REREAD the held rows are
 * undefined until the next reset. */
int gs_live_result_apply_take(gs_live_result *r, gs_live_change *ch, size_t n, gs_buf *ops,
                              size_t *nops);

#endif
