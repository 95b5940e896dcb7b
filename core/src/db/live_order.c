/*
 * SQLite's ORDER BY comparison (sqlite3MemCompare, the built-in collating functions and the
 * record comparator's sort flags). See live_order.h.
 */
#include "live_order.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int gs_live_coll_parse(const char *name, size_t len, gs_live_coll *out)
{
    if ((len == 6 && strncasecmp(name, "BINARY", 6) == 0) || (len == 1 && name[0] == 'B') ||
        len == 0) {
        *out = GS_LIVE_COLL_BINARY;
        return 0;
    }
    if (len == 6 && strncasecmp(name, "NOCASE", 6) == 0) {
        *out = GS_LIVE_COLL_NOCASE;
        return 0;
    }
    if (len == 5 && strncasecmp(name, "RTRIM", 5) == 0) {
        *out = GS_LIVE_COLL_RTRIM;
        return 0;
    }
    return -1;
}

static unsigned char fold(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

static int binary_cmp(const unsigned char *a, size_t na, const unsigned char *b, size_t nb)
{
    size_t n = na < nb ? na : nb;
    int r = n ? memcmp(a, b, n) : 0;
    if (r == 0)
        return na < nb ? -1 : (na > nb ? 1 : 0);
    return r;
}

/* sqlite3StrNICmp then the length difference, as NOCASE does (it stops at a NUL in a). */
static int nocase_cmp(const unsigned char *a, size_t na, const unsigned char *b, size_t nb)
{
    size_t n = na < nb ? na : nb;
    size_t i = 0;
    while (i < n && a[i] != 0 && fold(a[i]) == fold(b[i]))
        i++;
    int r = i == n ? 0 : (int)fold(a[i]) - (int)fold(b[i]);
    if (r == 0)
        return na < nb ? -1 : (na > nb ? 1 : 0);
    return r;
}

static int rtrim_cmp(const unsigned char *a, size_t na, const unsigned char *b, size_t nb)
{
    while (na && a[na - 1] == ' ')
        na--;
    while (nb && b[nb - 1] == ' ')
        nb--;
    return binary_cmp(a, na, b, nb);
}

/* sqlite3IntFloatCompare without long double: exact for every int64 and double. */
static int int_float_cmp(int64_t i, double r)
{
    if (r != r) /* NaN is never stored (SQLite turns it into NULL) */
        return 1;
    if (r < -9223372036854775808.0)
        return 1;
    if (r >= 9223372036854775808.0)
        return -1;
    int64_t y = (int64_t)r;
    if (i < y)
        return -1;
    if (i > y)
        return 1;
    double s = (double)i;
    if (s < r)
        return -1;
    if (s > r)
        return 1;
    return 0;
}

static int is_num(int t)
{
    return t == SQLITE_INTEGER || t == SQLITE_FLOAT;
}

int gs_live_val_cmp(const gs_live_val *a, const gs_live_val *b, gs_live_coll coll)
{
    int ta = a->type, tb = b->type;
    if (ta == SQLITE_NULL || tb == SQLITE_NULL)
        return (tb == SQLITE_NULL) - (ta == SQLITE_NULL);
    if (is_num(ta) || is_num(tb)) {
        if (!is_num(ta))
            return 1;
        if (!is_num(tb))
            return -1;
        if (ta == SQLITE_INTEGER && tb == SQLITE_INTEGER)
            return a->i < b->i ? -1 : (a->i > b->i ? 1 : 0);
        if (ta == SQLITE_FLOAT && tb == SQLITE_FLOAT)
            return a->d < b->d ? -1 : (a->d > b->d ? 1 : 0);
        if (ta == SQLITE_INTEGER)
            return int_float_cmp(a->i, b->d);
        return -int_float_cmp(b->i, a->d);
    }
    if (ta == SQLITE_TEXT || tb == SQLITE_TEXT) {
        if (ta != SQLITE_TEXT)
            return 1;
        if (tb != SQLITE_TEXT)
            return -1;
        switch (coll) {
        case GS_LIVE_COLL_NOCASE: return nocase_cmp(a->p, a->n, b->p, b->n);
        case GS_LIVE_COLL_RTRIM: return rtrim_cmp(a->p, a->n, b->p, b->n);
        default: return binary_cmp(a->p, a->n, b->p, b->n);
        }
    }
    return binary_cmp(a->p, a->n, b->p, b->n);
}

int gs_live_sort_cmp(const gs_live_sortkey *keys, size_t n, const gs_live_val *a,
                     const gs_live_val *b)
{
    for (size_t i = 0; i < n; i++) {
        int an = a[i].type == SQLITE_NULL, bn = b[i].type == SQLITE_NULL;
        int c;
        if (an || bn) {
            c = an && bn ? 0 : (an ? -1 : 1);
            if (keys[i].bignull)
                c = -c;
        } else {
            c = gs_live_val_cmp(&a[i], &b[i], keys[i].coll);
        }
        if (keys[i].desc)
            c = -c;
        if (c)
            return c < 0 ? -1 : 1;
    }
    return 0;
}

int gs_live_keyinfo_parse(const char *p4, gs_live_sortkey *keys, size_t n, char *unknown,
                          size_t cap)
{
    if (!p4 || strncmp(p4, "k(", 2) != 0)
        return -1;
    const char *p = p4 + 2;
    char *end;
    long count = strtol(p, &end, 10);
    if (end == p || count < 0 || (size_t)count != n)
        return -1;
    p = end;
    for (size_t i = 0; i < n; i++) {
        if (*p != ',')
            return -1;
        p++;
        memset(&keys[i], 0, sizeof keys[i]);
        if (*p == '-') {
            keys[i].desc = 1;
            p++;
        }
        if (p[0] == 'N' && p[1] == '.') {
            keys[i].bignull = 1;
            p += 2;
        }
        const char *name = p;
        while (*p && *p != ',' && *p != ')')
            p++;
        if (gs_live_coll_parse(name, (size_t)(p - name), &keys[i].coll) != 0) {
            if (unknown && cap) {
                size_t l = (size_t)(p - name) < cap - 1 ? (size_t)(p - name) : cap - 1;
                memcpy(unknown, name, l);
                unknown[l] = '\0';
            }
            return -2;
        }
    }
    return *p == ')' ? 0 : -1;
}
