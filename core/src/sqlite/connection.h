/*
 * One SQLite connection: opened with the spec's pragmas (01-driver), guarded by the
 * reserved-identifier authorizer, with a statement cache keyed by SQL text.
 *
 * Promise: gs_conn_open applies, in order, busy_timeout, journal_mode=WAL (writer, when
 * asked), synchronous (from the allowlist), foreign_keys=ON and wal_autocheckpoint (when
 * >= 0), then reads the schema so a corrupt file fails at open. A failure is
 * DATABASE_OPEN_FAILED naming the path and telling a missing file, a permission failure and
 * a corrupt database apart (details: {"path":..,"reason":"missing"|"permission"|"corrupt"|
 * "other"}).
 *
 * Statements: gs_conn_prepare returns a cached statement (capacity stmt_cache_size, least
 * recently used evicted first; a failed prepare is not cached; <= 0 disables caching). A
 * user statement (flags without GS_PREP_TRUSTED) passes the lexical guard and is prepared
 * and stepped under the authorizer; SQL holding more than one statement is refused with
 * QUERY_ERROR "one statement per request", empty SQL with QUERY_ERROR. Every prepared
 * statement must be handed back with gs_conn_release (reset + clear bindings).
 *
 * Ownership: the connection owns its statements; a gs_stmt is valid from prepare to
 * release. Threads: a connection is opened with SQLITE_OPEN_NOMUTEX and used by exactly one
 * thread at a time (its owner); nothing here locks. The first gs_conn_open in a process
 * turns off SQLite's process-wide memory statistics (SQLITE_CONFIG_MEMSTATUS), whose mutex
 * every allocation of every connection would otherwise take; sqlite3_memory_used() and the
 * soft heap limit are then not available.
 */
#ifndef GS_SQLITE_CONNECTION_H
#define GS_SQLITE_CONNECTION_H

#include "guard.h"

#include <gatestream/abi.h>
#include <sqlite3.h>
#include <stdint.h>

typedef enum gs_conn_role {
    GS_CONN_WRITER = 1, /**< read-write; may create the file; sets WAL */
    GS_CONN_READER = 2, /**< read-only */
} gs_conn_role;

typedef struct gs_conn_options {
    const char *path; /**< a file path, or ":memory:" (writer only) */
    gs_conn_role role;
    int create;                 /**< writer: create the file when missing */
    int wal;                    /**< writer: PRAGMA journal_mode=WAL */
    int sync_level;             /**< 0 off, 1 normal, 2 full, 3 extra */
    int64_t wal_autocheckpoint; /**< < 0: leave SQLite's default */
    int busy_timeout_ms;
    int stmt_cache_size; /**< <= 0: no caching */
} gs_conn_options;

typedef struct gs_conn gs_conn;
typedef struct gs_stmt gs_stmt;

/** "off" | "normal" | "full" | "extra" (case-insensitive) -> 0..3; -1 when unknown. */
int gs_sync_level_parse(const char *name);
/** 0..3 -> "off" ... "extra". */
const char *gs_sync_level_name(int level);

gs_status gs_conn_open(const gs_conn_options *opts, gs_conn **out, gs_error *err);
/** Finalize every statement and close. NULL is a no-op. */
void gs_conn_close(gs_conn *c);

sqlite3 *gs_conn_db(const gs_conn *c);
/** The connection runs in WAL mode. */
int gs_conn_wal(const gs_conn *c);
/** The database is ":memory:". */
int gs_conn_memory(const gs_conn *c);

enum {
    GS_PREP_TRUSTED = 1, /**< internal statement: no guard, no authorizer */
};

/** Find or prepare `len` bytes of SQL. FORBIDDEN_SQL, QUERY_ERROR. */
gs_status gs_conn_prepare(gs_conn *c, const char *sql, size_t len, int flags, gs_stmt **out,
                          gs_error *err);
sqlite3_stmt *gs_stmt_sqlite(const gs_stmt *s);
gs_sql_verb gs_stmt_verb(const gs_stmt *s);
/** Step once: SQLITE_ROW or SQLITE_DONE, or -1 with err (QUERY_ERROR with SQLite's message,
 * or the guard's FORBIDDEN_SQL / QUERY_ERROR when the authorizer denied a re-prepare). */
int gs_conn_step(gs_conn *c, gs_stmt *s, gs_error *err);
/** Reset, clear bindings and hand the statement back to the cache. */
void gs_conn_release(gs_conn *c, gs_stmt *s);

/** Run one trusted statement to completion (rows are discarded). QUERY_ERROR. */
gs_status gs_conn_exec(gs_conn *c, const char *sql, gs_error *err);
/** PRAGMA synchronous = level. QUERY_ERROR. */
gs_status gs_conn_set_sync(gs_conn *c, int level, gs_error *err);
/** The current PRAGMA synchronous value, or -1. */
int gs_conn_get_sync(gs_conn *c);

/** Statements held by the cache (tests and metrics). */
size_t gs_conn_cache_count(const gs_conn *c);
/** 1 when the cache holds `sql` (tests). */
int gs_conn_cache_contains(const gs_conn *c, const char *sql);

#endif
