/* Seeded random numbers and the Zipfian chooser: see rng.h. */
#include "rng.h"

#include "base/error.h"

#include <math.h>

uint64_t gs_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void gs_rng_seed(gs_rng *r, uint64_t seed)
{
    uint64_t st = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = gs_splitmix64(&st);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t gs_rng_next(gs_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t gs_rng_below(gs_rng *r, uint64_t n)
{
    if (n == 0)
        return 0;
    /* Lemire's multiply-and-reject: unbiased, one multiplication in the common case. */
    unsigned __int128 m = (unsigned __int128)gs_rng_next(r) * n;
    uint64_t low = (uint64_t)m;
    if (low < n) {
        uint64_t threshold = (0 - n) % n;
        while (low < threshold) {
            m = (unsigned __int128)gs_rng_next(r) * n;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

double gs_rng_fraction(gs_rng *r)
{
    return (double)(gs_rng_next(r) >> 11) * 0x1.0p-53;
}

void gs_rng_text(gs_rng *r, char *out, size_t len)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    for (size_t i = 0; i < len; i++)
        out[i] = alphabet[gs_rng_below(r, sizeof alphabet - 1)];
}

double gs_zeta(uint64_t n, double theta)
{
    double sum = 0;
    for (uint64_t i = 1; i <= n; i++)
        sum += 1.0 / pow((double)i, theta);
    return sum;
}

gs_status gs_zipf_init(gs_zipf *z, uint64_t items, double theta, gs_error *err)
{
    if (items < 1)
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "a Zipfian chooser needs at least one item (got 0 rows)");
    if (!(theta > 0 && theta < 1))
        return gs_error_set(err, 0, "INVALID_ARGUMENT",
                            "Zipfian skew theta must be in (0, 1), got %g", theta);
    z->items = items;
    z->theta = theta;
    z->zetan = gs_zeta(items, theta);
    double zeta2 = gs_zeta(2, theta);
    z->alpha = 1.0 / (1.0 - theta);
    z->half_pow_theta = pow(0.5, theta);
    /* With one or two items the closed form divides by zero; the first two branches of
     * gs_zipf_next cover those cases exactly, so eta is unused there. */
    z->eta =
        items > 2 ? (1.0 - pow(2.0 / (double)items, 1.0 - theta)) / (1.0 - zeta2 / z->zetan) : 0.0;
    return GS_OK;
}

uint64_t gs_zipf_next(const gs_zipf *z, gs_rng *r)
{
    double u = gs_rng_fraction(r);
    double uz = u * z->zetan;
    if (uz < 1.0)
        return 0;
    if (z->items < 2)
        return 0;
    if (uz < 1.0 + z->half_pow_theta || z->items == 2)
        return 1;
    double v = (double)z->items * pow(z->eta * u - z->eta + 1.0, z->alpha);
    uint64_t k = v <= 0 ? 0 : (uint64_t)v;
    return k >= z->items ? z->items - 1 : k;
}
