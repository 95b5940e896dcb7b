/* gs_hist: see hist.h. */
#include "hist.h"

#include "base/alloc.h"
#include "base/error.h"

#include <string.h>

#define SUB (1u << GS_HIST_SUB_BITS) /* 128 */
#define EXACT (2u * SUB)             /* values below this have a bucket each */

gs_status gs_hist_init(gs_hist *h, gs_error *err)
{
    memset(h, 0, sizeof *h);
    h->counts = gs_calloc(GS_HIST_BUCKETS, sizeof *h->counts);
    if (!h->counts)
        return gs_error_set(err, 0, "INTERNAL_ERROR",
                            "out of memory allocating a latency histogram");
    h->min = UINT64_MAX;
    return GS_OK;
}

void gs_hist_free(gs_hist *h)
{
    gs_free(h->counts);
    memset(h, 0, sizeof *h);
}

void gs_hist_reset(gs_hist *h)
{
    if (h->counts)
        memset(h->counts, 0, GS_HIST_BUCKETS * sizeof *h->counts);
    h->count = 0;
    h->min = UINT64_MAX;
    h->max = 0;
    h->sum = 0;
}

size_t gs_hist_index(uint64_t v)
{
    if (v < EXACT)
        return (size_t)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v); /* >= 8 */
    unsigned shift = msb - GS_HIST_SUB_BITS;           /* >= 1 */
    uint64_t sub = v >> shift;                         /* in [128, 256) */
    return EXACT + (size_t)(shift - 1) * SUB + (size_t)(sub - SUB);
}

void gs_hist_bucket_range(size_t index, uint64_t *lo, uint64_t *hi)
{
    if (index < EXACT) {
        *lo = *hi = index;
        return;
    }
    size_t k = index - EXACT;
    unsigned shift = (unsigned)(k / SUB) + 1;
    uint64_t sub = SUB + (uint64_t)(k % SUB);
    *lo = sub << shift;
    /* The last bucket's upper end is UINT64_MAX; computing (sub + 1) << shift would wrap. */
    *hi = *lo + ((((uint64_t)1) << shift) - 1);
}

void gs_hist_record_n(gs_hist *h, uint64_t v, uint64_t n)
{
    if (n == 0)
        return;
    h->counts[gs_hist_index(v)] += n;
    h->count += n;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->sum += (long double)v * (long double)n;
}

void gs_hist_record(gs_hist *h, uint64_t v)
{
    gs_hist_record_n(h, v, 1);
}

void gs_hist_merge(gs_hist *dst, const gs_hist *src)
{
    if (src->count == 0)
        return;
    for (size_t i = 0; i < GS_HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->count += src->count;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    dst->sum += src->sum;
}

uint64_t gs_hist_percentile(const gs_hist *h, double p)
{
    if (h->count == 0)
        return 0;
    if (p <= 0)
        return h->min;
    if (p >= 100)
        return h->max;
    /* The rank of the wanted value, 1-based: ceil(p% of count), at least 1. */
    long double want = (long double)p / 100.0L * (long double)h->count;
    uint64_t rank = (uint64_t)want;
    if ((long double)rank < want)
        rank++;
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < GS_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t lo, hi;
            gs_hist_bucket_range(i, &lo, &hi);
            uint64_t mid = lo + (hi - lo) / 2;
            if (mid < h->min)
                mid = h->min;
            if (mid > h->max)
                mid = h->max;
            return mid;
        }
    }
    return h->max;
}

double gs_hist_mean(const gs_hist *h)
{
    return h->count ? (double)(h->sum / (long double)h->count) : 0.0;
}
