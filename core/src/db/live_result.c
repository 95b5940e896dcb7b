/*
 * A live query's held rows and the splices of one transaction. See live_result.h.
 */
#include "live_result.h"

#include "base/alloc.h"
#include "base/text.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

struct gs_live_result {
    gs_live_sortkey *keys;
    size_t nkeys;
    int64_t limit; /* < 0: none */
    int64_t offset;
    gs_live_row **rows;
    size_t n, cap;
    gs_live_row **buckets;
    size_t nbuckets;     /* power of two */
    int complete;        /* no matching row exists beyond the window */
    gs_live_row *ubound; /* !complete: rows beyond the window sort at or after it */
    gs_live_row *pbound; /* offset > 0: rows before the window sort at or before it */
};

/* ---- rows ---- */

gs_live_row *gs_live_row_new(const char *key, size_t keylen, const char *json, size_t jsonlen,
                             const gs_live_val *vals, size_t nvals)
{
    size_t bytes = sizeof(gs_live_row) + nvals * sizeof(gs_live_val) + keylen + 1 + jsonlen + 1;
    for (size_t i = 0; i < nvals; i++)
        if (vals[i].type == SQLITE_TEXT || vals[i].type == SQLITE_BLOB)
            bytes += vals[i].n;
    gs_live_row *r = gs_malloc(bytes);
    if (!r)
        return NULL;
    r->hnext = NULL;
    r->vals = (gs_live_val *)(r + 1);
    r->nvals = nvals;
    char *p = (char *)(r->vals + nvals);
    memcpy(p, key, keylen);
    p[keylen] = '\0';
    r->key = p;
    r->keylen = keylen;
    p += keylen + 1;
    if (jsonlen)
        memcpy(p, json, jsonlen);
    p[jsonlen] = '\0';
    r->json = p;
    r->jsonlen = jsonlen;
    p += jsonlen + 1;
    for (size_t i = 0; i < nvals; i++) {
        r->vals[i] = vals[i];
        if (vals[i].type == SQLITE_TEXT || vals[i].type == SQLITE_BLOB) {
            if (vals[i].n)
                memcpy(p, vals[i].p, vals[i].n);
            r->vals[i].p = (const unsigned char *)p;
            p += vals[i].n;
        } else {
            r->vals[i].p = NULL;
            r->vals[i].n = 0;
        }
    }
    return r;
}

void gs_live_row_free(gs_live_row *r)
{
    gs_free(r);
}

static gs_live_row *row_clone(const gs_live_row *r)
{
    return gs_live_row_new(r->key, r->keylen, "", 0, r->vals, r->nvals);
}

/* ---- the key index ---- */

static gs_live_row *find(const gs_live_result *r, const char *key, size_t keylen)
{
    gs_live_row *p = r->buckets[gs_hash_bytes(key, keylen) & (r->nbuckets - 1)];
    for (; p; p = p->hnext)
        if (p->keylen == keylen && memcmp(p->key, key, keylen) == 0)
            return p;
    return NULL;
}

static void index_add(gs_live_result *r, gs_live_row *row)
{
    gs_live_row **b = &r->buckets[gs_hash_bytes(row->key, row->keylen) & (r->nbuckets - 1)];
    row->hnext = *b;
    *b = row;
}

static void index_remove(gs_live_result *r, gs_live_row *row)
{
    gs_live_row **pp = &r->buckets[gs_hash_bytes(row->key, row->keylen) & (r->nbuckets - 1)];
    while (*pp && *pp != row)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = row->hnext;
    row->hnext = NULL;
}

/* Make room for `want` rows: the row array and (at half load) the key index. */
static int reserve(gs_live_result *r, size_t want)
{
    if (want > r->cap) {
        size_t nc = r->cap ? r->cap : 16;
        while (nc < want)
            nc *= 2;
        gs_live_row **rows = gs_realloc(r->rows, nc * sizeof *rows);
        if (!rows)
            return -1;
        r->rows = rows;
        r->cap = nc;
    }
    if (want * 2 > r->nbuckets) {
        size_t nb = r->nbuckets;
        while (want * 2 > nb)
            nb *= 2;
        gs_live_row **b = gs_calloc(nb, sizeof *b);
        if (!b)
            return -1;
        gs_free(r->buckets);
        r->buckets = b;
        r->nbuckets = nb;
        for (size_t i = 0; i < r->n; i++)
            index_add(r, r->rows[i]);
    }
    return 0;
}

/* ---- order ---- */

static int sort_cmp(const gs_live_result *r, const gs_live_row *a, const gs_live_row *b)
{
    return gs_live_sort_cmp(r->keys, r->nkeys, a->vals, b->vals);
}

/* The total order: the ORDER BY terms, then the identity. */
static int total_cmp(const gs_live_result *r, const gs_live_row *a, const gs_live_row *b)
{
    int c = sort_cmp(r, a, b);
    if (c)
        return c;
    size_t n = a->keylen < b->keylen ? a->keylen : b->keylen;
    c = n ? memcmp(a->key, b->key, n) : 0;
    if (c)
        return c;
    return a->keylen < b->keylen ? -1 : (a->keylen > b->keylen ? 1 : 0);
}

static int qsort_cmp(const void *a, const void *b, void *ctx)
{
    return total_cmp(ctx, *(gs_live_row *const *)a, *(gs_live_row *const *)b);
}

/* The first index whose row sorts at or after `row`. */
static size_t lower_bound(const gs_live_result *r, const gs_live_row *row)
{
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (total_cmp(r, r->rows[mid], row) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ---- lifecycle ---- */

gs_live_result *gs_live_result_new(const gs_live_sortkey *keys, size_t nkeys, int64_t limit,
                                   int64_t offset)
{
    gs_live_result *r = gs_calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->keys = gs_malloc((nkeys ? nkeys : 1) * sizeof *keys);
    r->nbuckets = 16;
    r->buckets = gs_calloc(r->nbuckets, sizeof *r->buckets);
    if (!r->keys || !r->buckets) {
        gs_free(r->keys);
        gs_free(r->buckets);
        gs_free(r);
        return NULL;
    }
    if (nkeys)
        memcpy(r->keys, keys, nkeys * sizeof *keys);
    r->nkeys = nkeys;
    r->limit = limit;
    r->offset = offset > 0 ? offset : 0;
    r->complete = 1;
    return r;
}

static void clear(gs_live_result *r)
{
    for (size_t i = 0; i < r->n; i++)
        gs_live_row_free(r->rows[i]);
    r->n = 0;
    memset(r->buckets, 0, r->nbuckets * sizeof *r->buckets);
    gs_live_row_free(r->ubound);
    gs_live_row_free(r->pbound);
    r->ubound = r->pbound = NULL;
    r->complete = 1;
}

void gs_live_result_free(gs_live_result *r)
{
    if (!r)
        return;
    clear(r);
    gs_free(r->rows);
    gs_free(r->buckets);
    gs_free(r->keys);
    gs_free(r);
}

int gs_live_result_reset_take(gs_live_result *r, gs_live_row **rows, size_t n)
{
    clear(r);
    if (reserve(r, n) != 0) {
        for (size_t i = 0; i < n; i++)
            gs_live_row_free(rows[i]);
        return -1;
    }
    if (n) {
        memcpy(r->rows, rows, n * sizeof *rows);
        qsort_r(r->rows, n, sizeof *r->rows, qsort_cmp, r);
    }
    r->n = n;
    for (size_t i = 0; i < n; i++)
        index_add(r, r->rows[i]);
    r->complete = r->limit < 0 || (int64_t)n < r->limit;
    if (!r->complete && n > 0) {
        r->ubound = row_clone(r->rows[n - 1]);
        if (!r->ubound)
            goto oom;
    }
    if (r->offset > 0 && n > 0) {
        r->pbound = row_clone(r->rows[0]);
        if (!r->pbound)
            goto oom;
    }
    return 0;
oom:
    clear(r);
    return -1;
}

size_t gs_live_result_count(const gs_live_result *r)
{
    return r->n;
}

const gs_live_row *gs_live_result_at(const gs_live_result *r, size_t i)
{
    return i < r->n ? r->rows[i] : NULL;
}

void gs_live_result_rows_json(const gs_live_result *r, gs_buf *out)
{
    gs_buf_putc(out, '[');
    for (size_t i = 0; i < r->n; i++) {
        if (i)
            gs_buf_putc(out, ',');
        gs_buf_append(out, r->rows[i]->json, r->rows[i]->jsonlen);
    }
    gs_buf_putc(out, ']');
}

/* ---- one transaction ---- */

static void emit(gs_buf *ops, size_t *nops, const char *op, size_t index, const gs_live_row *row)
{
    if (*nops)
        gs_buf_putc(ops, ',');
    gs_buf_printf(ops, "{\"op\":\"%s\",\"index\":%zu", op, index);
    if (row) {
        gs_buf_puts(ops, ",\"row\":");
        gs_buf_append(ops, row->json, row->jsonlen);
    }
    gs_buf_putc(ops, '}');
    (*nops)++;
}

static void remove_at(gs_live_result *r, size_t i, gs_buf *ops, size_t *nops)
{
    gs_live_row *h = r->rows[i];
    memmove(&r->rows[i], &r->rows[i + 1], (r->n - i - 1) * sizeof *r->rows);
    r->n--;
    index_remove(r, h);
    gs_live_row_free(h);
    emit(ops, nops, "delete", i, NULL);
}

/* A row known to lie beyond the window: lower the bound when it sorts before it. */
static void beyond(gs_live_result *r, gs_live_row *row)
{
    if (r->complete) {
        r->complete = 0;
        gs_live_row_free(r->ubound);
        r->ubound = row;
        return;
    }
    if (!r->ubound || sort_cmp(r, row, r->ubound) < 0) {
        gs_live_row_free(r->ubound);
        r->ubound = row;
        return;
    }
    gs_live_row_free(row);
}

/* Place a matching row: inside the window, or beyond it. Takes row. */
static int place(gs_live_result *r, gs_live_row *row, gs_buf *ops, size_t *nops)
{
    gs_live_row *dup = find(r, row->key, row->keylen);
    if (dup) {
        size_t i = lower_bound(r, dup);
        remove_at(r, i, ops, nops);
    }
    if (r->limit >= 0 && !r->complete && r->ubound && sort_cmp(r, row, r->ubound) > 0) {
        gs_live_row_free(row); /* it belongs among the rows beyond the window */
        return 0;
    }
    size_t j = lower_bound(r, row);
    if (r->limit >= 0 && (int64_t)j >= r->limit) {
        beyond(r, row);
        return 0;
    }
    if (reserve(r, r->n + 1) != 0) {
        gs_live_row_free(row);
        return -1;
    }
    memmove(&r->rows[j + 1], &r->rows[j], (r->n - j) * sizeof *r->rows);
    r->rows[j] = row;
    r->n++;
    index_add(r, row);
    emit(ops, nops, "insert", j, row);
    if (r->limit >= 0 && (int64_t)r->n > r->limit) {
        gs_live_row *last = r->rows[r->n - 1];
        r->n--;
        index_remove(r, last);
        emit(ops, nops, "delete", r->n, NULL);
        beyond(r, last);
    }
    return 0;
}

static void free_changes(gs_live_change *ch, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        gs_live_row_free(ch[i].before);
        gs_live_row_free(ch[i].after);
        ch[i].before = ch[i].after = NULL;
    }
}

int gs_live_result_apply_take(gs_live_result *r, gs_live_change *ch, size_t n, gs_buf *ops,
                              size_t *nops)
{
    *nops = 0;
    if (r->limit == 0) { /* LIMIT 0: always empty */
        free_changes(ch, n);
        return GS_LIVE_APPLIED;
    }
    size_t relevant = 0;
    for (size_t i = 0; i < n; i++)
        if (ch[i].before || ch[i].after || find(r, ch[i].key, ch[i].keylen) ||
            (r->offset > 0 && ch[i].unseen_before))
            relevant++;
    if (relevant == 0) {
        free_changes(ch, n);
        return GS_LIVE_APPLIED;
    }
    int rc = GS_LIVE_APPLIED;
    if (relevant > r->n) {
        rc = GS_LIVE_REREAD;
        goto out;
    }
    if (r->offset > 0) {
        /* a row at or before the first row of the window may sit among the rows the
         * offset skips: the window would shift by an unknown row */
        for (size_t i = 0; i < n; i++) {
            int held = find(r, ch[i].key, ch[i].keylen) != NULL;
            if (ch[i].before && !held && (!r->pbound || sort_cmp(r, ch[i].before, r->pbound) <= 0))
                rc = GS_LIVE_REREAD;
            if (ch[i].after && (!r->pbound || sort_cmp(r, ch[i].after, r->pbound) <= 0))
                rc = GS_LIVE_REREAD;
            if (ch[i].unseen_before && !held)
                rc = GS_LIVE_REREAD; /* a replaced row may have left the skipped rows */
        }
        if (rc != GS_LIVE_APPLIED)
            goto out;
    }
    /* rows the transaction touched leave first (or change in place), so a window the
     * transaction both shrinks and refills stays whole */
    for (size_t i = 0; i < n; i++) {
        gs_live_row *h = find(r, ch[i].key, ch[i].keylen);
        if (!h)
            continue;
        size_t at = lower_bound(r, h);
        gs_live_row *a = ch[i].after;
        if (a && (r->complete || !r->ubound || sort_cmp(r, a, r->ubound) <= 0) &&
            (at == 0 || total_cmp(r, r->rows[at - 1], a) < 0) &&
            (at + 1 == r->n || total_cmp(r, a, r->rows[at + 1]) < 0)) {
            int same = h->jsonlen == a->jsonlen && memcmp(h->json, a->json, a->jsonlen) == 0;
            index_remove(r, h);
            gs_live_row_free(h);
            r->rows[at] = a;
            index_add(r, a);
            ch[i].after = NULL;
            if (!same) /* a change to columns the statement does not show: nothing to send */
                emit(ops, nops, "update", at, a);
            continue;
        }
        remove_at(r, at, ops, nops);
    }
    for (size_t i = 0; i < n; i++) {
        if (!ch[i].after)
            continue;
        gs_live_row *a = ch[i].after;
        ch[i].after = NULL;
        if (place(r, a, ops, nops) != 0) {
            rc = GS_LIVE_REREAD;
            goto out;
        }
    }
    if (r->limit >= 0 && !r->complete && (int64_t)r->n < r->limit)
        rc = GS_LIVE_REREAD; /* the window lost a row only a read can refill */
    if (ops->oom)
        rc = GS_LIVE_REREAD;
out:
    free_changes(ch, n);
    return rc;
}
