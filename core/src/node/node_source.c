/*
 * databases[].sources in a node: checking the lists at load time (with the file and line of
 * the offending entry), and starting / stopping the sources (core/src/source) with the node.
 *
 * Decisions: in a database this node replicates (replication.database), a source's local
 * tables must have the per-table replication mode `excluded` (databases[].tables): any other
 * mode would let replication write them too (a replica taking the primary's rows, a primary
 * sending its copy on) and the two writers would fight. Two sources of one database may not be able
 * to name the same local table: their (prefix + pattern) spaces must not overlap, so patterns are
 * checked before the remote tables are known. Threads: the main thread.
 */
#include "node_internal.h"

#include "../base/alloc.h"
#include "../base/error.h"
#include "../source/source.h"
#include "../source/source_apply.h"
#include "../source/source_names.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static int entry_line(const gs_cfg_node *dbs, size_t i, size_t j)
{
    const gs_cfg_node *db = dbs && i < dbs->count ? dbs->children[i] : NULL;
    const gs_cfg_node *list = db ? gs_cfg_get(db, "sources") : NULL;
    if (!list)
        return 0;
    if (j < list->count && list->children[j])
        return list->children[j]->line;
    return list->line;
}

/* The database this node replicates, or NULL. */
static const char *replicated_db(gs_node *n)
{
    const gs_settings_repl *r = &n->s.replication;
    if (!r->role) /* the role turns replication on */
        return NULL;
    if (r->database)
        return r->database;
    const gs_settings_db *dbs = n->s.databases.items;
    return n->s.databases.count == 1 ? dbs[0].id : NULL;
}

/* Does rule `match` name every table of the local space prefix + pattern? */
static int rule_covers(const char *match, const char *prefix, const char *pattern)
{
    char local[1024];
    size_t plen = strlen(pattern), mlen = strlen(match);
    int lp = plen && pattern[plen - 1] == '*', mp = mlen && match[mlen - 1] == '*';
    snprintf(local, sizeof local, "%s%.*s", prefix, (int)(lp ? plen - 1 : plen), pattern);
    if (!mp)
        return !lp && strcasecmp(match, local) == 0;
    return strncasecmp(local, match, mlen - 1) == 0;
}

/* A database this node replicates may hold source tables only where its per-table modes
 * (databases[].tables) make them `excluded`: neither sent to peers nor taken from them, so
 * the source is their only writer. Checked on the patterns, before the remote tables are
 * known: an `excluded` rule must cover the whole local space, and no rule of another mode may
 * reach into it. */
static gs_status replicated_table_check(const char *file, int line, size_t i, size_t j,
                                        const gs_settings_db *d, const char *prefix,
                                        const char *pattern, gs_error *err)
{
    const gs_settings_table_mode *rules = d->tables.items;
    int covered = 0;
    for (size_t r = 0; r < d->tables.count; r++) {
        int excluded = rules[r].mode && strcmp(rules[r].mode, "excluded") == 0;
        if (excluded && rule_covers(rules[r].match, prefix, pattern))
            covered = 1;
        if (!excluded && gs_source_patterns_overlap("", rules[r].match, prefix, pattern))
            return gs_error_set(err, 0, "INVALID_CONFIG",
                                "%s:%d: databases[%zu].sources[%zu].tables: '%s%s' lands in "
                                "tables that databases[%zu].tables rule '%s' replicates (mode "
                                "%s); a source table must have mode excluded, or the source "
                                "and replication would both write it",
                                file, line, i, j, prefix, pattern, i, rules[r].match,
                                rules[r].mode);
    }
    if (!covered)
        return gs_error_set(err, 0, "INVALID_CONFIG",
                            "%s:%d: databases[%zu].sources[%zu].tables: database '%s' is "
                            "replicated and '%s%s' would be replicated too; add a rule "
                            "{ match: \"%s%s\", mode: excluded } to databases[%zu].tables, or "
                            "follow the remote tables into another database",
                            file, line, i, j, d->id, prefix, pattern, prefix, pattern, i);
    return GS_OK;
}

gs_status gs_node_sources_check(gs_node *n, gs_error *err)
{
    const gs_settings_db *dbs = n->s.databases.items;
    const gs_cfg_node *dblist = gs_cfg_get(n->doc->root, "databases");
    const char *file = n->doc->file;
    const char *repl = replicated_db(n);
    for (size_t i = 0; i < n->s.databases.count; i++) {
        const gs_settings_db *d = &dbs[i];
        const gs_settings_source *src = d->sources.items;
        if (d->sources.count && d->read_only)
            return gs_error_set(err, 0, "INVALID_CONFIG",
                                "%s:%d: databases[%zu].sources: database '%s' is read_only; a "
                                "source writes the tables it follows",
                                file, entry_line(dblist, i, 0), i, d->id);
        for (size_t j = 0; j < d->sources.count; j++) {
            const gs_settings_source *s = &src[j];
            int line = entry_line(dblist, i, j);
            gs_error e;
            gs_error_init(&e);
            if (!s->id || !s->id[0])
                return gs_error_set(err, 0, "INVALID_CONFIG",
                                    "%s:%d: databases[%zu].sources[%zu].id is empty", file, line, i,
                                    j);
            for (size_t k = 0; k < j; k++)
                if (strcmp(src[k].id, s->id) == 0)
                    return gs_error_set(err, 0, "INVALID_CONFIG",
                                        "%s:%d: databases[%zu].sources[%zu].id: '%s' is "
                                        "declared twice in database '%s'",
                                        file, line, i, j, s->id, d->id);
            if (gs_source_url_check(s->url, &e) != GS_OK)
                return gs_error_set(err, 0, "INVALID_CONFIG",
                                    "%s:%d: databases[%zu].sources[%zu].url: %s", file, line, i, j,
                                    e.message);
            if (s->prefix[0] && gs_source_reserved_name(s->prefix))
                return gs_error_set(err, 0, "INVALID_CONFIG",
                                    "%s:%d: databases[%zu].sources[%zu].prefix: '%s' would make "
                                    "local names reserved for the core (_sirannon*, sqlite_*); "
                                    "choose another prefix",
                                    file, line, i, j, s->prefix);
            if (s->retry_max_ms < s->retry_initial_ms)
                return gs_error_set(err, 0, "INVALID_CONFIG",
                                    "%s:%d: databases[%zu].sources[%zu].retry_max_ms (%lld) is "
                                    "below retry_initial_ms (%lld)",
                                    file, line, i, j, (long long)s->retry_max_ms,
                                    (long long)s->retry_initial_ms);
            if (!s->tables.count)
                return gs_error_set(err, 0, "INVALID_CONFIG",
                                    "%s:%d: databases[%zu].sources[%zu].tables is empty: name "
                                    "the remote tables to follow",
                                    file, line, i, j);
            for (size_t t = 0; t < s->tables.count; t++) {
                const char *p = s->tables.items[t];
                char local[GS_SOURCE_NAME_MAX];
                if (!gs_source_pattern_valid(p))
                    return gs_error_set(err, 0, "INVALID_CONFIG",
                                        "%s:%d: databases[%zu].sources[%zu].tables: '%s' is "
                                        "not a table name or a prefix ending in '*'",
                                        file, line, i, j, p);
                if (!strchr(p, '*') &&
                    gs_source_local_name(s->prefix, p, local, sizeof local, &e) != GS_OK)
                    return gs_error_set(err, 0, "INVALID_CONFIG",
                                        "%s:%d: databases[%zu].sources[%zu].tables: %s", file, line,
                                        i, j, e.message);
                if (repl && strcmp(repl, d->id) == 0 &&
                    replicated_table_check(file, line, i, j, d, s->prefix, p, err) != GS_OK)
                    return GS_ERROR;
                for (size_t k = 0; k < j; k++)
                    for (size_t u = 0; u < src[k].tables.count; u++)
                        if (gs_source_patterns_overlap(src[k].prefix, src[k].tables.items[u],
                                                       s->prefix, p))
                            return gs_error_set(
                                err, 0, "INVALID_CONFIG",
                                "%s:%d: databases[%zu].sources[%zu]: tables '%s' (prefix "
                                "'%s') and source '%s' tables '%s' (prefix '%s') can land in "
                                "the same local table; give one of them a distinct prefix",
                                file, line, i, j, p, s->prefix, src[k].id, src[k].tables.items[u],
                                src[k].prefix);
            }
        }
    }
    return GS_OK;
}

gs_status gs_node_sources_start(gs_node *n, gs_error *err)
{
    const gs_settings_db *dbs = n->s.databases.items;
    size_t total = 0;
    for (size_t i = 0; i < n->s.databases.count; i++)
        total += dbs[i].sources.count;
    if (!total)
        return GS_OK;
    gs_source_config *cfg = gs_calloc(total, sizeof *cfg);
    if (!cfg)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n->s.databases.count; i++) {
        const gs_settings_source *src = dbs[i].sources.items;
        for (size_t j = 0; j < dbs[i].sources.count; j++, k++) {
            const gs_settings_source *s = &src[j];
            cfg[k] = (gs_source_config){.database = dbs[i].id,
                                        .id = s->id,
                                        .url = s->url,
                                        .remote_database = s->database ? s->database : dbs[i].id,
                                        .tables = s->tables.items,
                                        .table_count = s->tables.count,
                                        .prefix = s->prefix,
                                        .token = s->token,
                                        .tls_ca_cert = s->tls_ca_cert,
                                        .page_rows = s->page_rows,
                                        .retry_initial_ms = s->retry_initial_ms,
                                        .retry_max_ms = s->retry_max_ms};
        }
    }
    gs_status rc = gs_sources_start(n->reg, cfg, total, &n->sources, err);
    gs_free(cfg); /* the sources copied the struct; its strings are the settings' */
    return rc;
}

void gs_node_sources_stop(gs_node *n)
{
    gs_sources_stop(n->sources);
}

void gs_node_sources_free(gs_node *n)
{
    gs_sources_free(n->sources);
    n->sources = NULL;
}

struct gs_sources *gs_node_sources(gs_node *n)
{
    return n ? n->sources : NULL;
}

void gs_node_sources_json(void *user, const char *db_id, gs_buf *out)
{
    gs_node *n = user;
    if (n->sources)
        gs_sources_status_json(n->sources, db_id, out);
    else
        gs_buf_puts(out, "[]");
}
