/*
 * The reserved-identifier guard (spec 02, Query Execution / Reserved Identifiers) and the
 * lexical facts the core needs about a statement before running it.
 *
 * Promise: a user statement that names an identifier beginning with `_sirannon` (bare,
 * "quoted", `backticked` or [bracketed], in any case; string literals, comments and bind
 * parameter names do not count) fails with FORBIDDEN_SQL, and so does one that modifies the
 * `sqlite_` catalogue, uses ATTACH or DETACH, or touches PRAGMA writable_schema in any form.
 * Reading the catalogue is allowed.
 *
 * Two layers do this. gs_sql_scan is a lexical pass over the text: it finds `_sirannon`
 * identifiers, the first statement's verb (for group commit), ATTACH/DETACH at the start of
 * any statement, DDL and DML whose target is a sqlite_ object, and the REINDEX/VACUUM and
 * pragma_writable_schema forms. gs_guard_authorizer is the sqlite3_set_authorizer callback
 * that sees what SQLite resolved: ATTACH, DETACH, PRAGMA writable_schema, DDL naming a
 * sqlite_ object, and INSERT/UPDATE/DELETE on a sqlite_ table (allowed when SQLite itself
 * maintains its catalogue on behalf of a CREATE, DROP or ALTER). It also refuses
 * transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE) in user statements with
 * QUERY_ERROR, because the core owns every transaction on its connections.
 *
 * Internal statements bypass the authorizer (gs_guard_auth.active = 0), and an access made
 * by a trigger whose name begins with `_sirannon_trg_` (the CDC triggers) is allowed.
 *
 * Ownership: nothing is allocated. Threads: gs_sql_scan is pure and thread-safe; a
 * gs_guard_auth belongs to one connection and is used by that connection's thread only.
 */
#ifndef GS_SQLITE_GUARD_H
#define GS_SQLITE_GUARD_H

#include <gatestream/abi.h>
#include <stddef.h>

/** The first keyword of the first statement. */
typedef enum gs_sql_verb {
    GS_SQL_EMPTY = 0, /**< only whitespace, comments and semicolons */
    GS_SQL_OTHER,
    GS_SQL_SELECT,
    GS_SQL_VALUES,
    GS_SQL_WITH,
    GS_SQL_INSERT,
    GS_SQL_UPDATE,
    GS_SQL_DELETE,
    GS_SQL_REPLACE,
    GS_SQL_CREATE,
    GS_SQL_DROP,
    GS_SQL_ALTER,
    GS_SQL_PRAGMA,
    GS_SQL_REINDEX,
    GS_SQL_VACUUM,
    GS_SQL_ATTACH,
    GS_SQL_DETACH,
    GS_SQL_ANALYZE,
} gs_sql_verb;

typedef struct gs_sql_info {
    gs_sql_verb verb;
    int sirannon;        /**< an identifier beginning with _sirannon appears */
    int attach;          /**< a statement begins with ATTACH or DETACH */
    int catalogue;       /**< a sqlite_ object is written: named in the head of CREATE/DROP/
                              ALTER (before "(", AS, BEGIN, WHEN, SELECT, USING, FOR) or of
                              INSERT/UPDATE/DELETE/REPLACE (before "(", SET, VALUES, SELECT,
                              WHERE, ...; also after WITH), or by REINDEX/VACUUM */
    int writable_schema; /**< the identifier pragma_writable_schema appears */
} gs_sql_info;

/** Lexical scan of `len` bytes of SQL. Never fails. */
void gs_sql_scan(const char *sql, size_t len, gs_sql_info *out);

/** INSERT, UPDATE, DELETE or REPLACE: the statements group commit may coalesce. */
int gs_sql_verb_groupable(gs_sql_verb verb);

/** The statement is DDL (CREATE, DROP, ALTER): SQLite maintains its catalogue for it. */
int gs_sql_verb_ddl(gs_sql_verb verb);

/** Apply the lexical rules to a scanned statement: FORBIDDEN_SQL, or GS_OK. */
gs_status gs_guard_check(const gs_sql_info *info, gs_error *err);

/** Scan and check in one call (info may be NULL). */
gs_status gs_guard_check_sql(const char *sql, size_t len, gs_sql_info *info, gs_error *err);

/** Per-connection authorizer state. Set active/ddl before preparing or stepping a user
 * statement; the callback records why it denied. */
typedef struct gs_guard_auth {
    int active;   /**< 1: the statement being prepared or stepped is a user statement */
    int ddl;      /**< the verb is CREATE, DROP, ALTER or ANALYZE: SQLite writes its catalogue */
    int seen_ddl; /**< the statement's own DDL action was seen (later ones are nested); ANALYZE
                       starts with it set, since every table it creates is sqlite_stat* */
    const char *code;   /**< when denied: "FORBIDDEN_SQL" or "QUERY_ERROR"; else NULL */
    const char *reason; /**< when denied: a message for a person */
} gs_guard_auth;

/** Reset the per-prepare record (call before sqlite3_prepare / sqlite3_step) for a statement
 * whose first keyword is `verb`. */
void gs_guard_auth_begin(gs_guard_auth *a, int active, gs_sql_verb verb);

/** The sqlite3_set_authorizer callback; ctx is a gs_guard_auth. */
int gs_guard_authorizer(void *ctx, int action, const char *arg1, const char *arg2,
                        const char *dbname, const char *trigger);

#endif
