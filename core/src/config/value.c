/* Scalar text -> typed config values (integers, booleans, numbers, choices), shared by the
 * validator for YAML values and for the text defaults of key tables. */
#include "config_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void gs_cfg_key_at(const gs_config_key *keys, size_t i, size_t key_size, gs_config_key *k)
{
    memset(k, 0, sizeof *k);
    size_t n = key_size < sizeof *k ? key_size : sizeof *k;
    memcpy(k, (const char *)keys + i * key_size, n);
}

static int bounded(const gs_config_key *k)
{
    return k->min < k->max;
}

int gs_cfg_parse_int(const char *s, const gs_config_key *k, int64_t *v, char *why, size_t n)
{
    const char *p = s;
    int neg = 0;
    if (*p == '+' || *p == '-')
        neg = *p++ == '-';
    /* Accumulate as a negative number so INT64_MIN parses too. */
    int64_t acc = 0;
    int ok = *p != '\0';
    for (; ok && *p; p++) {
        if (*p < '0' || *p > '9') {
            ok = 0;
            break;
        }
        int d = *p - '0';
        if (acc < (INT64_MIN + d) / 10) {
            ok = 0;
            break;
        }
        acc = acc * 10 - d;
    }
    if (ok && !neg && acc == INT64_MIN)
        ok = 0;
    if (ok) {
        int64_t val = neg ? acc : -acc;
        if (!bounded(k) || (val >= k->min && val <= k->max)) {
            *v = val;
            return 0;
        }
    }
    if (bounded(k))
        snprintf(why, n, "expected an integer from %lld to %lld", (long long)k->min,
                 (long long)k->max);
    else
        snprintf(why, n, "expected an integer from %lld to %lld", (long long)INT64_MIN,
                 (long long)INT64_MAX);
    return -1;
}

int gs_cfg_parse_bool(const char *s, int *v, char *why, size_t n)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *v = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *v = 0;
            return 0;
        }
    }
    snprintf(why, n, "expected true or false");
    return -1;
}

int gs_cfg_parse_double(const char *s, const gs_config_key *k, double *v, char *why, size_t n)
{
    char *end = NULL;
    double d = 0;
    int ok =
        *s && !(*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == '\v');
    if (ok) {
        d = strtod(s, &end);
        ok = end && *end == '\0' && isfinite(d);
    }
    if (ok && (!bounded(k) || (d >= (double)k->min && d <= (double)k->max))) {
        *v = d;
        return 0;
    }
    if (bounded(k))
        snprintf(why, n, "expected a number from %lld to %lld", (long long)k->min,
                 (long long)k->max);
    else
        snprintf(why, n, "expected a finite number");
    return -1;
}

void gs_cfg_choices_text(const gs_config_key *k, char *buf, size_t n)
{
    size_t o = 0;
    buf[0] = '\0';
    if (!k->choices)
        return;
    for (size_t i = 0; k->choices[i]; i++) {
        const char *sep = i ? ", " : "";
        size_t need = strlen(sep) + strlen(k->choices[i]);
        /* keep room for ", ..." and the NUL */
        if (o + need + 6 > n) {
            if (o + 6 <= n)
                snprintf(buf + o, n - o, "%s...", i ? ", " : "");
            return;
        }
        o += (size_t)snprintf(buf + o, n - o, "%s%s", sep, k->choices[i]);
    }
}

int gs_cfg_check_choice(const char *s, const gs_config_key *k, char *why, size_t n)
{
    if (!k->choices)
        return 0;
    for (size_t i = 0; k->choices[i]; i++)
        if (strcmp(s, k->choices[i]) == 0)
            return 0;
    char list[300];
    gs_cfg_choices_text(k, list, sizeof list);
    snprintf(why, n, "expected one of (%s)", list);
    return -1;
}
