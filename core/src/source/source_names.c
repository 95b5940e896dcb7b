/*
 * Source table names: patterns, local names, overlap, and the local CREATE TABLE text.
 */
#include "source_names.h"

#include "../base/error.h"
#include "../repl/ddl.h"
#include "../repl/rowsql.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int gs_source_pattern_valid(const char *pattern)
{
    if (!pattern || !pattern[0])
        return 0;
    const char *star = strchr(pattern, '*');
    return !star || star[1] == '\0';
}

static int is_pattern(const char *p, size_t *stem)
{
    size_t n = strlen(p);
    *stem = n;
    if (n && p[n - 1] == '*') {
        *stem = n - 1;
        return 1;
    }
    return 0;
}

int gs_source_pattern_matches(const char *pattern, const char *name)
{
    size_t stem;
    if (is_pattern(pattern, &stem))
        return strncasecmp(pattern, name, stem) == 0;
    return strcasecmp(pattern, name) == 0;
}

int gs_source_reserved_name(const char *name)
{
    return strncasecmp(name, "_sirannon", 9) == 0 || strncasecmp(name, "sqlite_", 7) == 0;
}

gs_status gs_source_local_name(const char *prefix, const char *remote, char *out, size_t cap,
                               gs_error *err)
{
    int n = snprintf(out, cap, "%s%s", prefix ? prefix : "", remote);
    if (n < 0 || (size_t)n >= cap)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "local table name '%s%s' is longer than %zu bytes; use a shorter "
                            "prefix",
                            prefix ? prefix : "", remote, cap - 1);
    if (gs_source_reserved_name(out))
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "remote table '%s' would land in local table '%s', a name reserved "
                            "for the core (_sirannon*, sqlite_*); choose another prefix",
                            remote, out);
    return GS_OK;
}

/* Does every name starting with `a` (a pattern) or equal to it share a member with `b`? Both are
 * already the local spaces: prefix + stem, and whether a '*' followed. */
int gs_source_patterns_overlap(const char *prefix_a, const char *pattern_a, const char *prefix_b,
                               const char *pattern_b)
{
    char a[1024], b[1024];
    size_t sa, sb;
    int pa = is_pattern(pattern_a, &sa), pb = is_pattern(pattern_b, &sb);
    snprintf(a, sizeof a, "%s%.*s", prefix_a ? prefix_a : "", (int)sa, pattern_a);
    snprintf(b, sizeof b, "%s%.*s", prefix_b ? prefix_b : "", (int)sb, pattern_b);
    size_t la = strlen(a), lb = strlen(b);
    if (!pa && !pb)
        return strcasecmp(a, b) == 0;
    if (pa && !pb)
        return lb >= la && strncasecmp(a, b, la) == 0;
    if (!pa && pb)
        return la >= lb && strncasecmp(a, b, lb) == 0;
    size_t m = la < lb ? la : lb;
    return strncasecmp(a, b, m) == 0;
}

/* The keyword `kw` at p (any case, followed by a non-identifier byte): the byte after it. */
static const char *keyword(const char *p, const char *kw)
{
    size_t n = strlen(kw);
    if (strncasecmp(p, kw, n) != 0)
        return NULL;
    unsigned char c = (unsigned char)p[n];
    if (isalnum(c) || c == '_' || c == '$' || c >= 0x80)
        return NULL;
    return p + n;
}

/* One identifier token at p: the byte after it, or NULL. */
static const char *ident_end(const char *p)
{
    char close = 0;
    if (*p == '"')
        close = '"';
    else if (*p == '`')
        close = '`';
    else if (*p == '[')
        close = ']';
    if (close) {
        for (const char *q = p + 1; *q; q++) {
            if (*q == close) {
                if (close != ']' && q[1] == close) {
                    q++;
                    continue;
                }
                return q + 1;
            }
        }
        return NULL;
    }
    const char *q = p;
    while (isalnum((unsigned char)*q) || *q == '_' || *q == '$' || (unsigned char)*q >= 0x80)
        q++;
    return q == p ? NULL : q;
}

gs_status gs_source_create_sql(const char *remote_sql, const char *local_name, gs_buf *out,
                               gs_error *err)
{
    const char *p = remote_sql ? gs_repl_ddl_skip_blank(remote_sql) : NULL;
    const char *q = p ? keyword(p, "CREATE") : NULL;
    if (q)
        q = keyword(gs_repl_ddl_skip_blank(q), "TABLE");
    if (!q)
        return gs_error_set(err, 0, "INVALID_REQUEST",
                            "the remote table's schema is not a CREATE TABLE statement (a "
                            "virtual table cannot be followed): %.200s",
                            remote_sql ? remote_sql : "(none)");
    q = gs_repl_ddl_skip_blank(q);
    const char *r = keyword(q, "IF");
    if (r) {
        r = keyword(gs_repl_ddl_skip_blank(r), "NOT");
        r = r ? keyword(gs_repl_ddl_skip_blank(r), "EXISTS") : NULL;
        if (!r)
            return gs_error_set(err, 0, "INVALID_REQUEST",
                                "cannot read the remote CREATE TABLE statement: %.200s",
                                remote_sql);
        q = gs_repl_ddl_skip_blank(r);
    }
    const char *end = ident_end(q);
    if (end && *gs_repl_ddl_skip_blank(end) == '.') /* schema-qualified: main.users */
        end = ident_end(gs_repl_ddl_skip_blank(gs_repl_ddl_skip_blank(end) + 1));
    if (!end)
        return gs_error_set(err, 0, "INVALID_REQUEST",
                            "cannot find the table name in the remote CREATE TABLE statement: "
                            "%.200s",
                            remote_sql);
    gs_buf_puts(out, "CREATE TABLE IF NOT EXISTS ");
    gs_repl_quote_ident(out, local_name);
    gs_buf_puts(out, end);
    if (out->oom)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    return GS_OK;
}

gs_status gs_source_url_check(const char *url, gs_error *err)
{
    const char *host = NULL;
    if (url && strncasecmp(url, "http://", 7) == 0)
        host = url + 7;
    else if (url && strncasecmp(url, "https://", 8) == 0)
        host = url + 8;
    if (!host || !host[0] || host[0] == '/' || host[0] == ':')
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "url '%s' is not http://host:port or https://host:port",
                            url ? url : "");
    return GS_OK;
}
