/*
 * Table names of a source (databases[].sources[]): which remote tables a source follows, what
 * each is called locally, and the CREATE TABLE statement that makes the local copy.
 *
 * Promise: a pattern is an exact table name or a prefix ending in one '*'; a local name is the
 * source's prefix followed by the remote name, and is refused when it would be a reserved name
 * (`_sirannon*` or `sqlite_*`, in any case: the core's own tables, never replicated, never
 * written by users). Overlap tells whether two (prefix, pattern) pairs can name the same local
 * table, so two sources of one database never write one table. Names compare without case, as
 * SQLite compares them.
 *
 * Ownership: nothing is kept; gs_source_create_sql appends to the caller's buffer.
 * Threads: pure functions, callable from any thread.
 */
#ifndef GS_SOURCE_NAMES_H
#define GS_SOURCE_NAMES_H

#include "../base/buf.h"

#include <gatestream/abi.h>
#include <stddef.h>

/** A pattern is non-empty and holds no '*' except one at its end ("*" alone names every
 * table the remote serves, its reserved ones left out). */
int gs_source_pattern_valid(const char *pattern);

/** 1 when remote table `name` is one the pattern names. */
int gs_source_pattern_matches(const char *pattern, const char *name);

/** 1 for a name the core reserves: `_sirannon...` or `sqlite_...` (any case). */
int gs_source_reserved_name(const char *name);

/** out = prefix + remote. INVALID_CONFIG when the result is reserved or longer than cap-1. */
gs_status gs_source_local_name(const char *prefix, const char *remote, char *out, size_t cap,
                               gs_error *err);

/** 1 when some remote table name could land on one local table through both
 * (prefix_a, pattern_a) and (prefix_b, pattern_b). */
int gs_source_patterns_overlap(const char *prefix_a, const char *pattern_a, const char *prefix_b,
                               const char *pattern_b);

/** Rewrite the remote table's `CREATE TABLE name ...` (its sqlite_master text) into
 * `CREATE TABLE IF NOT EXISTS "local" ...`: the name (bare, quoted, bracketed, backticked, or
 * schema-qualified) is replaced and the rest is kept. INVALID_REQUEST when the text is not a
 * CREATE TABLE statement (a virtual table, a view). */
gs_status gs_source_create_sql(const char *remote_sql, const char *local_name, gs_buf *out,
                               gs_error *err);

/** The source URL is http:// or https:// with a host. INVALID_CONFIG otherwise. */
gs_status gs_source_url_check(const char *url, gs_error *err);

#endif
