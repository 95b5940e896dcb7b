/*
 * Per-table replication modes: rule checks and the longest-match lookup (see table_mode.h).
 * The rule list is short (a handful of patterns per database), so a lookup is a scan of the
 * rules with their lengths precomputed: no allocation and no lock on any thread.
 */
#include "table_mode.h"

#include "base/alloc.h"
#include "base/error.h"

#include <string.h>
#include <strings.h>

#define CATALOGUE_PREFIX "_sirannon"

typedef struct rule {
    char *pattern; /* as written, for messages */
    size_t len;    /* characters compared: the whole name, or the prefix before '*' */
    int prefix;
    gs_table_mode mode;
} rule;

struct gs_table_modes {
    rule *rules;
    size_t n;
    gs_table_mode unlisted;
};

static const char *const NAMES[] = {
    [GS_TABLE_PRIMARY] = "primary",     [GS_TABLE_REPLICA] = "replica",
    [GS_TABLE_SYNC] = "sync",           [GS_TABLE_READONLY] = "readonly",
    [GS_TABLE_WRITEONLY] = "writeonly", [GS_TABLE_EXCLUDED] = "excluded",
};

const char *gs_table_mode_name(gs_table_mode m)
{
    if (m < GS_TABLE_PRIMARY || m > GS_TABLE_EXCLUDED)
        return "unknown";
    return NAMES[m];
}

gs_status gs_table_mode_parse(const char *name, gs_table_mode *out, gs_error *err)
{
    for (int m = GS_TABLE_PRIMARY; m <= GS_TABLE_EXCLUDED; m++)
        if (name && strcmp(name, NAMES[m]) == 0) {
            *out = (gs_table_mode)m;
            return GS_OK;
        }
    return gs_error_set(err, 0, "INVALID_CONFIG",
                        "unknown table mode '%s': use primary, replica, sync, readonly, "
                        "writeonly or excluded",
                        name ? name : "");
}

static int is_catalogue(const char *table)
{
    return strncasecmp(table, CATALOGUE_PREFIX, sizeof CATALOGUE_PREFIX - 1) == 0;
}

/* Could the pattern match a _sirannon table? An exact name that is one, or a prefix that is
 * itself a prefix of "_sirannon" or begins with it. */
static int matches_catalogue(const rule *r)
{
    if (!r->prefix)
        return is_catalogue(r->pattern);
    size_t cl = sizeof CATALOGUE_PREFIX - 1;
    size_t k = r->len < cl ? r->len : cl;
    return strncasecmp(r->pattern, CATALOGUE_PREFIX, k) == 0;
}

static gs_status check_rule(const gs_table_mode_rule *in, size_t i, rule *r, gs_error *err)
{
    const char *p = in->match;
    if (!p || !p[0])
        return gs_error_set(err, 0, "INVALID_CONFIG", "tables[%zu].match: the pattern is empty", i);
    const char *star = strchr(p, '*');
    size_t len = strlen(p);
    if (star && star != p + len - 1)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "tables[%zu].match: '%s': '*' may only end a pattern (a prefix such "
                            "as audit_*)",
                            i, p);
    if (gs_table_mode_parse(in->mode, &r->mode, err) != GS_OK) {
        gs_error_prefix(err, "tables[%zu].mode", i);
        return GS_ERROR;
    }
    r->prefix = star != NULL;
    r->len = r->prefix ? len - 1 : len;
    r->pattern = (char *)p; /* copied by the caller once the rule is accepted */
    if (matches_catalogue(r))
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "tables[%zu].match: '%s' would match the _sirannon catalogue tables, "
                            "which never replicate; name the tables (or a narrower prefix)",
                            i, p);
    return GS_OK;
}

gs_status gs_table_modes_create(const gs_table_mode_rule *rules, size_t n, int node_is_primary,
                                gs_table_modes **out, gs_error *err)
{
    *out = NULL;
    gs_table_modes *tm = gs_calloc(1, sizeof *tm);
    if (!tm)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory building the table modes");
    tm->unlisted = node_is_primary ? GS_TABLE_PRIMARY : GS_TABLE_REPLICA;
    if (n && !(tm->rules = gs_calloc(n, sizeof *tm->rules))) {
        gs_free(tm);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory building the table modes");
    }
    for (size_t i = 0; i < n; i++) {
        rule r;
        memset(&r, 0, sizeof r);
        if (check_rule(&rules[i], i, &r, err) != GS_OK) {
            gs_table_modes_free(tm);
            return GS_ERROR;
        }
        for (size_t j = 0; j < tm->n; j++)
            if (strcasecmp(tm->rules[j].pattern, r.pattern) == 0) {
                gs_error_set(err, 0, "INVALID_CONFIG",
                             "tables[%zu].match: '%s' is listed twice (also tables[%zu])", i,
                             r.pattern, j);
                gs_table_modes_free(tm);
                return GS_ERROR;
            }
        if (!(r.pattern = gs_strdup(r.pattern))) {
            gs_table_modes_free(tm);
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory building the table modes");
        }
        tm->rules[tm->n++] = r;
    }
    *out = tm;
    return GS_OK;
}

void gs_table_modes_free(gs_table_modes *tm)
{
    if (!tm)
        return;
    for (size_t i = 0; i < tm->n; i++)
        gs_free(tm->rules[i].pattern);
    gs_free(tm->rules);
    gs_free(tm);
}

/* The deciding rule, or NULL. */
static const rule *best(const gs_table_modes *tm, const char *table)
{
    const rule *b = NULL;
    size_t tl = strlen(table);
    for (size_t i = 0; i < tm->n; i++) {
        const rule *r = &tm->rules[i];
        if (r->prefix ? tl < r->len || strncasecmp(table, r->pattern, r->len) != 0
                      : tl != r->len || strcasecmp(table, r->pattern) != 0)
            continue;
        /* longer wins; at the same length an exact name beats a prefix */
        if (!b || r->len > b->len || (r->len == b->len && b->prefix && !r->prefix))
            b = r;
    }
    return b;
}

gs_table_mode gs_table_modes_resolve(const gs_table_modes *tm, const char *table)
{
    if (!table || is_catalogue(table))
        return GS_TABLE_EXCLUDED;
    const rule *r = best(tm, table);
    return r ? r->mode : tm->unlisted;
}

const char *gs_table_modes_pattern(const gs_table_modes *tm, const char *table)
{
    if (!table || is_catalogue(table))
        return NULL;
    const rule *r = best(tm, table);
    return r ? r->pattern : NULL;
}

int gs_table_mode_emits(gs_table_mode m)
{
    return m == GS_TABLE_PRIMARY || m == GS_TABLE_SYNC || m == GS_TABLE_WRITEONLY;
}

int gs_table_mode_pulls(gs_table_mode m)
{
    return m == GS_TABLE_REPLICA || m == GS_TABLE_SYNC || m == GS_TABLE_READONLY;
}

int gs_table_mode_bootstraps(gs_table_mode m)
{
    return m == GS_TABLE_REPLICA || m == GS_TABLE_READONLY;
}

gs_table_write gs_table_mode_local_write(gs_table_mode m)
{
    if (m == GS_TABLE_REPLICA)
        return GS_TABLE_WRITE_FORWARD;
    if (m == GS_TABLE_READONLY)
        return GS_TABLE_WRITE_REFUSE;
    return GS_TABLE_WRITE_ALLOW;
}

int gs_table_modes_emits(const gs_table_modes *tm, const char *table)
{
    return gs_table_mode_emits(gs_table_modes_resolve(tm, table));
}

int gs_table_modes_pulls(const gs_table_modes *tm, const char *table)
{
    return gs_table_mode_pulls(gs_table_modes_resolve(tm, table));
}

size_t gs_table_modes_count(const gs_table_modes *tm)
{
    return tm ? tm->n : 0;
}

const char *gs_table_modes_rule(const gs_table_modes *tm, size_t i, int *prefix,
                                gs_table_mode *mode)
{
    if (!tm || i >= tm->n)
        return NULL;
    if (prefix)
        *prefix = tm->rules[i].prefix;
    if (mode)
        *mode = tm->rules[i].mode;
    return tm->rules[i].pattern;
}

gs_table_mode gs_table_modes_unlisted(const gs_table_modes *tm)
{
    return tm->unlisted;
}
