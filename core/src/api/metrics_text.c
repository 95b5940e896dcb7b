/* The Prometheus text exposition writer (metrics.h, gs_prom_*). */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>

void gs_prom_escape_label(gs_buf *b, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '\\': gs_buf_puts(b, "\\\\"); break;
        case '"': gs_buf_puts(b, "\\\""); break;
        case '\n': gs_buf_puts(b, "\\n"); break;
        default: gs_buf_putc(b, *s); break;
        }
    }
}

void gs_prom_family(gs_buf *b, const char *name, const char *type, const char *help)
{
    gs_buf_printf(b, "# HELP %s ", name);
    for (const char *s = help; s && *s; s++) {
        if (*s == '\\')
            gs_buf_puts(b, "\\\\");
        else if (*s == '\n')
            gs_buf_puts(b, "\\n");
        else
            gs_buf_putc(b, *s);
    }
    gs_buf_printf(b, "\n# TYPE %s %s\n", name, type);
}

/* The shortest decimal that reads back as v; integers without a fraction or exponent. */
static void format_value(char *out, size_t size, double v)
{
    if (isnan(v)) {
        snprintf(out, size, "NaN");
    } else if (isinf(v)) {
        snprintf(out, size, "%s", v > 0 ? "+Inf" : "-Inf");
    } else if (v == floor(v) && fabs(v) < 9.007199254740992e15) {
        snprintf(out, size, "%lld", (long long)v);
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(out, size, "%.*g", prec, v);
            if (strtod(out, NULL) == v)
                return;
        }
    }
}

static void put_value(gs_buf *b, double v)
{
    char t[40];
    format_value(t, sizeof t, v);
    gs_buf_puts(b, t);
}

/* name{labels[,extra_key="extra_val"]} value */
static void sample(gs_buf *b, const char *name, const char *suffix, const char *const *keys,
                   const char *const *vals, size_t n, const char *extra_key, const char *extra_val,
                   double value)
{
    gs_buf_puts(b, name);
    if (suffix)
        gs_buf_puts(b, suffix);
    if (n || extra_key) {
        gs_buf_putc(b, '{');
        for (size_t i = 0; i < n; i++) {
            gs_buf_printf(b, "%s%s=\"", i ? "," : "", keys[i]);
            gs_prom_escape_label(b, vals[i]);
            gs_buf_putc(b, '"');
        }
        if (extra_key) {
            gs_buf_printf(b, "%s%s=\"", n ? "," : "", extra_key);
            gs_prom_escape_label(b, extra_val);
            gs_buf_putc(b, '"');
        }
        gs_buf_putc(b, '}');
    }
    gs_buf_putc(b, ' ');
    put_value(b, value);
    gs_buf_putc(b, '\n');
}

void gs_prom_sample(gs_buf *b, const char *name, const char *const *keys, const char *const *vals,
                    size_t n, double value)
{
    sample(b, name, NULL, keys, vals, n, NULL, NULL, value);
}

void gs_prom_histogram(gs_buf *b, const char *name, const char *const *keys,
                       const char *const *vals, size_t n, const double *bounds,
                       const uint64_t *counts, size_t nb, double sum)
{
    uint64_t cum = 0;
    char le[40];
    for (size_t i = 0; i < nb; i++) {
        cum += counts[i];
        format_value(le, sizeof le, bounds[i]);
        sample(b, name, "_bucket", keys, vals, n, "le", le, (double)cum);
    }
    cum += counts[nb];
    sample(b, name, "_bucket", keys, vals, n, "le", "+Inf", (double)cum);
    sample(b, name, "_sum", keys, vals, n, NULL, NULL, sum);
    sample(b, name, "_count", keys, vals, n, NULL, NULL, (double)cum);
}
