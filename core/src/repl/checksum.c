/* The canonical form of replication payloads and its SHA-256 checksum (contract in
 * checksum.h). The reference canonicaliser is JavaScript, so numbers are printed the way
 * JavaScript prints them and strings the way JSON.stringify escapes them. */
#include "checksum.h"

#include "base/alloc.h"
#include "base/error.h"
#include "base/sha256.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- numbers as JavaScript prints them ---- */

/*
 * The shortest decimal digits that read back as d (d finite and > 0), per ECMA-262
 * Number::toString: the fewest digits k, and among k-digit candidates the one closest to d.
 * printf's "%.*e" gives the closest k-digit decimal; when it does not read back, the k-digit
 * neighbour on the other side of d may (the round-trip interval is lopsided at powers of
 * two), so both neighbours are tried before adding a digit. 17 digits always read back.
 * Out: digits (no trailing zeros, NUL-terminated) and n, with d = 0.digits * 10^n.
 */
static void js_digits(double d, char digits[24], int *n_out)
{
    char tmp[48];
    unsigned long long best = 0;
    int best_q = 0;
    for (int p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*e", p - 1, d);
        /* tmp is "D.DDDDe[+-]XX": collect the mantissa digits and the exponent */
        unsigned long long m = 0;
        const char *s = tmp;
        for (; *s && *s != 'e'; s++)
            if (*s >= '0' && *s <= '9')
                m = m * 10 + (unsigned long long)(*s - '0');
        int e = atoi(s + 1);
        int q = e - (p - 1); /* d ~ m * 10^q */
        if (strtod(tmp, NULL) == d) {
            best = m;
            best_q = q;
            break;
        }
        int found = 0;
        for (int delta = -1; delta <= 1 && !found; delta += 2) {
            unsigned long long c = delta < 0 ? m - 1 : m + 1;
            if (c == 0)
                continue;
            snprintf(tmp, sizeof tmp, "%llue%d", c, q);
            if (strtod(tmp, NULL) == d) {
                best = c;
                best_q = q;
                found = 1;
            }
        }
        if (found)
            break;
    }
    int len = snprintf(digits, 24, "%llu", best);
    while (len > 1 && digits[len - 1] == '0') {
        digits[--len] = '\0';
        best_q++;
    }
    *n_out = len + best_q;
}

/* Number::toString(d) for a finite d (ECMA-262 6.1.6.1.20, radix 10). */
static void js_number(gs_buf *b, double d)
{
    if (d == 0) { /* both zeros print "0" */
        gs_buf_putc(b, '0');
        return;
    }
    if (d < 0) {
        gs_buf_putc(b, '-');
        d = -d;
    }
    char digits[24];
    int n;
    js_digits(d, digits, &n);
    int k = (int)strlen(digits);
    if (k <= n && n <= 21) { /* an integer: the digits, then n - k zeros */
        gs_buf_append(b, digits, (size_t)k);
        for (int i = 0; i < n - k; i++)
            gs_buf_putc(b, '0');
    } else if (0 < n && n <= 21) { /* a point inside the digits */
        gs_buf_append(b, digits, (size_t)n);
        gs_buf_putc(b, '.');
        gs_buf_append(b, digits + n, (size_t)(k - n));
    } else if (-6 < n && n <= 0) { /* 0.000ddd */
        gs_buf_puts(b, "0.");
        for (int i = 0; i < -n; i++)
            gs_buf_putc(b, '0');
        gs_buf_append(b, digits, (size_t)k);
    } else { /* exponent form: d[.ddd]e+X / e-X */
        gs_buf_putc(b, digits[0]);
        if (k > 1) {
            gs_buf_putc(b, '.');
            gs_buf_append(b, digits + 1, (size_t)(k - 1));
        }
        gs_buf_printf(b, "e%c%d", n - 1 >= 0 ? '+' : '-', abs(n - 1));
    }
}

/* ---- values ---- */

static void base64(gs_buf *b, const uint8_t *p, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        char q[4] = {tab[v >> 18], tab[(v >> 12) & 63], tab[(v >> 6) & 63], tab[v & 63]};
        gs_buf_append(b, q, 4);
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        char q[4] = {tab[v >> 18], tab[(v >> 12) & 63], '=', '='};
        gs_buf_append(b, q, 4);
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        char q[4] = {tab[v >> 18], tab[(v >> 12) & 63], tab[(v >> 6) & 63], '='};
        gs_buf_append(b, q, 4);
    }
}

/*
 * A string as JSON.stringify writes it: \" \\ \b \f \n \r \t, other controls as \u00xx
 * (lowercase hex), everything else (DEL, U+2028, any non-ASCII) raw. gs_buf_json_string is
 * exactly that. Text that is not valid UTF-8 cannot reach the reference as such: each
 * invalid byte becomes U+FFFD here, where a JavaScript UTF-8 decoder would fold a truncated
 * multi-byte sequence into one U+FFFD, so such text may checksum differently across
 * implementations (valid UTF-8 never does).
 */
static void canonical_string(gs_buf *b, const char *s, size_t len)
{
    gs_buf_json_string(b, s ? s : "", s ? len : 0);
}

void gs_repl_canonical_value(gs_buf *b, const gs_rval *v)
{
    switch (v->type) {
    case GS_RVAL_NULL: gs_buf_append(b, "null", 4); return;
    case GS_RVAL_BOOL: gs_buf_puts(b, v->i ? "true" : "false"); return;
    case GS_RVAL_INT: gs_buf_printf(b, "{\"__sint\":\"%lld\"}", (long long)v->i); return;
    case GS_RVAL_DOUBLE:
        if (!isfinite(v->d)) {
            gs_buf_append(b, "null", 4);
        } else if (floor(v->d) == v->d) { /* Number.isInteger */
            gs_buf_puts(b, "{\"__sint\":\"");
            js_number(b, v->d);
            gs_buf_puts(b, "\"}");
        } else {
            js_number(b, v->d);
        }
        return;
    case GS_RVAL_TEXT: canonical_string(b, (const char *)v->p, v->len); return;
    case GS_RVAL_BLOB:
        gs_buf_puts(b, "{\"__blob\":\"");
        base64(b, v->p, v->p ? v->len : 0);
        gs_buf_puts(b, "\"}");
        return;
    }
    gs_buf_append(b, "null", 4);
}

/* ---- rows: keys sorted ---- */

typedef struct col_ref {
    const char *name;
    size_t idx;
} col_ref;

/*
 * Byte order of the UTF-8 names. JavaScript sorts keys by UTF-16 code units, which agrees
 * with UTF-8 byte order except between a character above U+FFFF (a surrogate pair, 0xD800..)
 * and one in U+E000..U+FFFF; column names never mix those in practice. Ties (a name given
 * twice) keep their input order so the last one can win, as in a JavaScript object.
 */
static int col_ref_cmp(const void *a, const void *b)
{
    const col_ref *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static void canonical_row(gs_buf *b, const gs_rrow *r)
{
    if (!r) {
        gs_buf_append(b, "null", 4);
        return;
    }
    col_ref local[32];
    col_ref *refs = local;
    if (r->n > sizeof local / sizeof local[0]) {
        refs = gs_malloc(r->n * sizeof *refs);
        if (!refs) {
            b->oom = 1;
            return;
        }
    }
    for (size_t i = 0; i < r->n; i++) {
        refs[i].name = r->names[i];
        refs[i].idx = i;
    }
    qsort(refs, r->n, sizeof *refs, col_ref_cmp);
    gs_buf_putc(b, '{');
    int first = 1;
    for (size_t i = 0; i < r->n; i++) {
        if (i + 1 < r->n && strcmp(refs[i].name, refs[i + 1].name) == 0)
            continue; /* a later value of the same name wins */
        if (!first)
            gs_buf_putc(b, ',');
        first = 0;
        canonical_string(b, refs[i].name, strlen(refs[i].name));
        gs_buf_putc(b, ':');
        gs_repl_canonical_value(b, &r->vals[refs[i].idx]);
    }
    gs_buf_putc(b, '}');
    if (refs != local)
        gs_free(refs);
}

/* ---- payloads ---- */

static void key(gs_buf *b, const char *k, int *first)
{
    if (!*first)
        gs_buf_putc(b, ',');
    *first = 0;
    gs_buf_putc(b, '"');
    gs_buf_puts(b, k); /* the change keys are plain ASCII */
    gs_buf_puts(b, "\":");
}

static void str_field(gs_buf *b, const char *s)
{
    canonical_string(b, s, s ? strlen(s) : 0);
}

static void canonical_change(gs_buf *b, const gs_repl_change *c)
{
    /* keys in ascending byte order */
    int first = 1;
    gs_buf_putc(b, '{');
    if (c->ddl_statement) {
        key(b, "ddlStatement", &first);
        str_field(b, c->ddl_statement);
    }
    key(b, "hlc", &first);
    str_field(b, c->hlc);
    key(b, "newData", &first);
    canonical_row(b, c->new_data);
    key(b, "nodeId", &first);
    str_field(b, c->node_id);
    key(b, "oldData", &first);
    canonical_row(b, c->old_data);
    key(b, "operation", &first);
    str_field(b, c->operation);
    key(b, "primaryKey", &first);
    if (c->primary_key)
        canonical_row(b, c->primary_key);
    else
        gs_buf_puts(b, "{}");
    key(b, "rowId", &first);
    str_field(b, c->row_id);
    key(b, "table", &first);
    str_field(b, c->table);
    key(b, "txId", &first);
    str_field(b, c->tx_id);
    gs_buf_putc(b, '}');
}

void gs_repl_canonical_changes(gs_buf *b, const gs_repl_change *c, size_t n)
{
    gs_buf_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        if (i)
            gs_buf_putc(b, ',');
        canonical_change(b, &c[i]);
    }
    gs_buf_putc(b, ']');
}

void gs_repl_canonical_rows(gs_buf *b, const gs_rrow *rows, size_t n)
{
    gs_buf_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        if (i)
            gs_buf_putc(b, ',');
        canonical_row(b, &rows[i]);
    }
    gs_buf_putc(b, ']');
}

void gs_repl_canonical_strings(gs_buf *b, char *const *s, size_t n)
{
    gs_buf_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        if (i)
            gs_buf_putc(b, ',');
        str_field(b, s[i]);
    }
    gs_buf_putc(b, ']');
}

static gs_status digest_of(gs_buf *b, const char *what, char out[65], gs_error *err)
{
    if (b->oom || !b->data) {
        gs_buf_free(b);
        out[0] = '\0';
        return gs_error_set(err, 0, "REPLICATION_ERROR",
                            "out of memory building the canonical form of %s for its checksum",
                            what);
    }
    gs_sha256_hex(b->data, b->len, out);
    gs_buf_free(b);
    return GS_OK;
}

gs_status gs_repl_changes_checksum(const gs_repl_change *c, size_t n, char out[65], gs_error *err)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_repl_canonical_changes(&b, c, n);
    return digest_of(&b, "a batch's changes", out, err);
}

gs_status gs_repl_rows_checksum(const gs_rrow *rows, size_t n, char out[65], gs_error *err)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_repl_canonical_rows(&b, rows, n);
    return digest_of(&b, "a sync batch's rows", out, err);
}

gs_status gs_repl_strings_checksum(char *const *s, size_t n, char out[65], gs_error *err)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_repl_canonical_strings(&b, s, n);
    return digest_of(&b, "a schema list", out, err);
}

void gs_repl_digest_step(char digest[65], const char *batch_checksum)
{
    gs_sha256 ctx;
    uint8_t raw[32];
    static const char hex[] = "0123456789abcdef";
    gs_sha256_init(&ctx);
    gs_sha256_update(&ctx, digest, strlen(digest));
    gs_sha256_update(&ctx, batch_checksum, strlen(batch_checksum));
    gs_sha256_final(&ctx, raw);
    for (int i = 0; i < 32; i++) {
        digest[2 * i] = hex[raw[i] >> 4];
        digest[2 * i + 1] = hex[raw[i] & 15];
    }
    digest[64] = '\0';
}
