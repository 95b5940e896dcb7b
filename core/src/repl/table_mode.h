/*
 * Per-table replication modes (static mode only): which tables a node sends to its peers,
 * which it takes from them, and what it does with a local write to each.
 *
 * Promise: gs_table_modes_create checks a list of rules {match, mode} and builds an immutable
 * lookup. A pattern is an exact table name or a prefix ending in a single `*` (`audit_*`);
 * names compare without regard to ASCII case (as SQLite's do). A table resolves to the mode
 * of its longest matching pattern, an exact name beating a prefix of the same length; an
 * unlisted table follows the node's role (primary node: primary, replica node: replica). A
 * `_sirannon...` table is always excluded. Errors (INVALID_CONFIG, naming the rule by its
 * index): an unknown mode, an empty pattern, a `*` anywhere but at the end, the same pattern
 * twice, a pattern that could match a `_sirannon` table.
 *
 * The modes, from this node's side:
 *   primary    this node is authoritative: it emits, pulls nothing, writes run here;
 *   replica    a peer is authoritative: pulled, never emitted, writes forwarded (or refused
 *              when the database sets write_proxy: reject);
 *   sync       both directions, conflicts through the table's resolver, writes run here;
 *   readonly   pulled only, local writes refused;
 *   writeonly  emitted only, remote changes ignored, writes run here;
 *   excluded   never replicated in either direction, writes run here.
 *
 * Ownership: the rules are copied; a gs_table_modes is freed with gs_table_modes_free.
 * Threads: create/free at start-up; every lookup is read-only and may run on any thread.
 */
#ifndef GS_REPL_TABLE_MODE_H
#define GS_REPL_TABLE_MODE_H

#include <gatestream/abi.h>
#include <stddef.h>

typedef enum gs_table_mode {
    GS_TABLE_PRIMARY = 1,
    GS_TABLE_REPLICA,
    GS_TABLE_SYNC,
    GS_TABLE_READONLY,
    GS_TABLE_WRITEONLY,
    GS_TABLE_EXCLUDED,
} gs_table_mode;

/** What a local write to a table becomes. */
typedef enum gs_table_write {
    GS_TABLE_WRITE_ALLOW = 0,   /**< runs on this node */
    GS_TABLE_WRITE_FORWARD = 1, /**< goes to the node that owns the table */
    GS_TABLE_WRITE_REFUSE = 2,  /**< refused (readonly) */
} gs_table_write;

typedef struct gs_table_mode_rule {
    const char *match; /**< exact name or prefix ending in '*' */
    const char *mode;  /**< primary | replica | sync | readonly | writeonly | excluded */
} gs_table_mode_rule;

typedef struct gs_table_modes gs_table_modes;

/** Check rules and build the lookup. node_is_primary picks what unlisted tables follow. */
gs_status gs_table_modes_create(const gs_table_mode_rule *rules, size_t n, int node_is_primary,
                                gs_table_modes **out, gs_error *err);
void gs_table_modes_free(gs_table_modes *tm);

/** Check one mode name ("primary", ...); GS_OK and *out, or INVALID_CONFIG. */
gs_status gs_table_mode_parse(const char *name, gs_table_mode *out, gs_error *err);
/** The mode's name ("primary", ...). */
const char *gs_table_mode_name(gs_table_mode m);

/** The effective mode of a table (never 0). */
gs_table_mode gs_table_modes_resolve(const gs_table_modes *tm, const char *table);
/** The mode of tables no rule matches (the node's role). */
gs_table_mode gs_table_modes_unlisted(const gs_table_modes *tm);
/** The pattern that decided (NULL: unlisted or the catalogue). For messages. */
const char *gs_table_modes_pattern(const gs_table_modes *tm, const char *table);

/** The rules, in the order given: count, and the i-th pattern (NULL past the end) with
 * whether it is a prefix. */
size_t gs_table_modes_count(const gs_table_modes *tm);
const char *gs_table_modes_rule(const gs_table_modes *tm, size_t i, int *prefix,
                                gs_table_mode *mode);

/** Does this node send the table's changes to its peers? (primary, sync, writeonly) */
int gs_table_mode_emits(gs_table_mode m);
/** Does this node apply the table's changes from its peers? (replica, sync, readonly) */
int gs_table_mode_pulls(gs_table_mode m);
/** Does a first sync copy the table? (replica, readonly: sync tables take the stream only) */
int gs_table_mode_bootstraps(gs_table_mode m);
gs_table_write gs_table_mode_local_write(gs_table_mode m);

/** Shorthands over gs_table_modes_resolve. */
int gs_table_modes_emits(const gs_table_modes *tm, const char *table);
int gs_table_modes_pulls(const gs_table_modes *tm, const char *table);

#endif
