/*
 * Schema migrations (spec 02-core "Migrations"): migration sets built from memory or from a
 * directory of `<version>_<name>.up.sql` / `.down.sql` files, the tracking table
 * `_sirannon_migrations`, applying pending migrations, rolling back, and reporting status.
 *
 * Promise:
 * - A set is validated when it is built: versions 1..2147483647, names matching ^\w+$,
 *   non-empty up SQL (and down SQL when given), no duplicate version, and the baseline rules
 *   (through >= 1 and below its own version, no other migration inside (through, version)).
 *   Failures are MIGRATION_VALIDATION_ERROR or MIGRATION_DUPLICATE_VERSION. A built set is
 *   sorted ascending and immutable.
 * - The checksum of an up script is the normative one: FNV-1a 64 over the UTF-8 bytes with
 *   CRLF and lone CR turned into LF and surrounding whitespace trimmed, as 16 lowercase hex
 *   digits.
 * - Applying runs each pending migration in its own write transaction (BEGIN IMMEDIATE) that
 *   runs the up SQL, inserts the tracking row with the checksum and mirrors the highest
 *   applied version into PRAGMA user_version. The plan is re-read inside every transaction,
 *   so two appliers on one file never apply a version twice. A failing migration is rolled
 *   back alone and fails MIGRATION_ERROR with {"version":N} in details; the migrations
 *   before it stay committed, so the database is left at the previous version. A stored
 *   checksum that differs from the set's fails MIGRATION_CHECKSUM_MISMATCH before anything
 *   runs; a NULL stored checksum is backfilled. A history below a baseline's `through`
 *   without the bridging migrations fails MIGRATION_BASELINE_GAP. A step that meets a lock
 *   held by another connection past busy_timeout (or a tracking row inserted under it) is
 *   retried once, then fails MIGRATION_CONCURRENT.
 * - Rolling back reverses applied versions in descending order, one transaction each (the
 *   down SQL, removing the tracking row, re-mirroring user_version): with no target only
 *   the latest, with target N every version above N. Every down is checked before any runs
 *   (MIGRATION_NO_DOWN); a failing down fails MIGRATION_ROLLBACK_ERROR with the version.
 * - Migration SQL may hold many statements but no transaction control (BEGIN, COMMIT, END,
 *   ROLLBACK, SAVEPOINT, RELEASE): the runner owns the transaction.
 * - applied_at is written explicitly as Unix seconds with a fraction: the spec's column default
 *   unixepoch('subsec') needs SQLite 3.42, so the table is created here with an equivalent
 *   julianday() default that works on older SQLite too.
 *
 * Ownership: sets, reports and rows are owned by whoever received them and freed with the
 * matching *_free. Nothing keeps a pointer to its arguments after it returns.
 *
 * Threads: a set is immutable once built and may be shared by any threads. The *_conn
 * functions run on the thread that owns the connection. gs_db_migrate may be called from any
 * thread except the database's own writer thread (it runs the work there and waits).
 */
#ifndef GS_DB_MIGRATIONS_H
#define GS_DB_MIGRATIONS_H

#include "database.h"

#include <gatestream/abi.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

/** The highest version: PRAGMA user_version is a signed 32-bit value. */
#define GS_MIGRATION_VERSION_MAX 2147483647LL
/** A target meaning "none": apply everything / roll back only the latest. */
#define GS_MIGRATION_NO_TARGET (-1)
/** Checksum text: 16 lowercase hex digits plus NUL. */
#define GS_MIGRATION_CHECKSUM_SIZE 17

/** One migration as the caller describes it (borrowed strings). */
typedef struct gs_migration_def {
    int64_t version;
    const char *name;
    const char *up;           /**< SQL, one or more statements */
    const char *down;         /**< SQL, or NULL when the migration cannot be rolled back */
    int64_t baseline_through; /**< > 0: this migration squashes history up to this version */
} gs_migration_def;

/** One migration of a built set. */
typedef struct gs_migration {
    int64_t version;
    char *name;
    char *up;
    char *down; /**< NULL: no down */
    int64_t baseline_through;
    char checksum[GS_MIGRATION_CHECKSUM_SIZE]; /**< of `up` */
} gs_migration;

/** A validated set, sorted by ascending version. Read-only once built. */
typedef struct gs_migration_set {
    gs_migration *items;
    size_t count;
} gs_migration_set;

/** A file handed to gs_migrations_from_files: only the final path segment of `name` is
 * parsed. `sql` holds `len` bytes (it need not be NUL-terminated). */
typedef struct gs_migration_file {
    const char *name;
    const char *sql;
    size_t len;
} gs_migration_file;

/** FNV-1a 64 of the normalised SQL (see above), written as 16 lowercase hex digits. */
void gs_migration_checksum(const char *sql, size_t len, char out[GS_MIGRATION_CHECKSUM_SIZE]);

/** Validate, copy and sort an in-memory list. */
gs_status gs_migration_set_new(const gs_migration_def *defs, size_t count, gs_migration_set **out,
                               gs_error *err);
/** The spec's migrationsFromFiles: a map of file name to SQL text turned into a set. A name
 * that does not match `<version>_<name>.(up|down).sql`, empty SQL, a version with no up file
 * or SQL holding a NUL byte fail MIGRATION_VALIDATION_ERROR; two files for one version and
 * direction, or one version under two names, fail MIGRATION_DUPLICATE_VERSION. */
gs_status gs_migrations_from_files(const gs_migration_file *files, size_t count,
                                   gs_migration_set **out, gs_error *err);
/** Read every `*.sql` file of a directory (other files and subdirectories are ignored) and
 * build the set as gs_migrations_from_files does. A path with a control character or a `..`
 * segment, a missing or unreadable directory or file fail MIGRATION_VALIDATION_ERROR. */
gs_status gs_migrations_load_dir(const char *dir, gs_migration_set **out, gs_error *err);
/** Make version `version` of the set a baseline through `through` (the file form's option),
 * re-checking the baseline rules. MIGRATION_VALIDATION_ERROR. */
gs_status gs_migration_set_baseline(gs_migration_set *set, int64_t version, int64_t through,
                                    gs_error *err);
/** A deep copy, or NULL when out of memory (or when `set` is NULL). */
gs_migration_set *gs_migration_set_copy(const gs_migration_set *set);
void gs_migration_set_free(gs_migration_set *set);

/** How an applied or known version stands. */
typedef enum gs_migration_state {
    GS_MIG_APPLIED = 1,    /**< in the history, checksum matches (or the set has no such) */
    GS_MIG_PENDING = 2,    /**< in the set; migrate would apply it */
    GS_MIG_MODIFIED = 3,   /**< in the history, but the set's up SQL has another checksum */
    GS_MIG_NOT_IN_SET = 4, /**< in the history, absent from the set */
    GS_MIG_SUPERSEDED = 5, /**< in the set, not applied, covered by a baseline: never runs */
} gs_migration_state;

typedef struct gs_migration_row {
    int64_t version;
    char *name;
    gs_migration_state state;
    double applied_at;                         /**< Unix seconds; 0 when not applied */
    char checksum[GS_MIGRATION_CHECKSUM_SIZE]; /**< stored (applied) or the set's; "" = none */
    double duration_ms;                        /**< migrate/rollback: time the step took */
} gs_migration_row;

typedef struct gs_migration_report {
    gs_migration_row *done; /**< migrate: applied now; rollback: reversed now (in order) */
    size_t done_count;
    gs_migration_row *rows; /**< status: every version of the history and the set, ascending */
    size_t row_count;
    size_t pending_count; /**< status: rows in state PENDING */
    size_t skipped;       /**< migrate: members of the set not applied by this run */
    size_t backfilled;    /**< migrate: NULL stored checksums filled in */
    int64_t user_version; /**< PRAGMA user_version afterwards */
    int table_exists;     /**< status: the tracking table exists */
    int read_only;        /**< gs_db_migrate on a read-only database: nothing ran */
    gs_error pending_err; /**< status: why the pending list could not be planned (code "" if
                               it could), e.g. MIGRATION_BASELINE_GAP */
} gs_migration_report;

void gs_migration_report_init(gs_migration_report *r);
void gs_migration_report_free(gs_migration_report *r);

/** Apply pending migrations with version <= `to` (GS_MIGRATION_NO_TARGET: all) on a
 * read-write connection in autocommit mode. `label` names the database in log lines (one
 * INFO line per applied migration) and may be NULL. The report lists what was applied even
 * when a later migration failed. */
gs_status gs_migrate_conn(sqlite3 *db, const char *label, const gs_migration_set *set, int64_t to,
                          gs_migration_report *r, gs_error *err);
/** Roll back to `to` (>= 0), or only the latest with GS_MIGRATION_NO_TARGET. */
gs_status gs_rollback_conn(sqlite3 *db, const char *label, const gs_migration_set *set, int64_t to,
                           gs_migration_report *r, gs_error *err);
/** Read the history and plan against `set` (may be NULL) without writing anything; works on
 * a read-only connection and on a file with no tracking table. */
gs_status gs_migration_status_conn(sqlite3 *db, const gs_migration_set *set, gs_migration_report *r,
                                   gs_error *err);

typedef enum gs_migrate_op {
    GS_MIGRATE_UP = 1,
    GS_MIGRATE_ROLLBACK = 2,
    GS_MIGRATE_STATUS = 3,
} gs_migrate_op;

/** Run one of the above on the database's writer thread, serialised with every other write,
 * and wait for it. A read-only database skips UP (GS_OK, r->read_only = 1) and refuses
 * ROLLBACK and STATUS with READ_ONLY. DATABASE_CLOSED, WRITE_OVERLOADED (the writer could not
 * start it within write_timeout_ms) as for any write. A migration that outlives the write
 * deadline is waited for: its real outcome is reported, never WRITER_WORKER_TIMEOUT. */
gs_status gs_db_migrate(gs_database *db, gs_migrate_op op, const gs_migration_set *set, int64_t to,
                        gs_migration_report *r, gs_error *err);

/** "applied", "pending", ... for a state. */
const char *gs_migration_state_name(gs_migration_state s);

#endif
