/*
 * DDL safety for replication (spec 03 "DDL Safety"): which schema statements a node sends in a
 * batch and accepts from one.
 *
 * Promise: gs_repl_ddl_check accepts exactly one statement that begins (after whitespace) with
 * CREATE TABLE, ALTER TABLE <table> ADD COLUMN, DROP TABLE, CREATE INDEX, CREATE UNIQUE INDEX
 * or DROP INDEX, IF [NOT] EXISTS allowed, and refuses with BATCH_VALIDATION_ERROR, naming the
 * reason, a statement that
 *   - contains ';' anywhere, a trailing terminator included (the reference receiver refuses
 *     any ';', so a node must never send one; the primary strips a client's terminator with
 *     gs_repl_ddl_normalize before checking and recording the statement),
 *   - contains AS SELECT, or SELECT anywhere (the reference refuses a SELECT in the body too),
 *   - mentions load_extension, ATTACH, randomblob, zeroblob, writefile, readfile or
 *     fts3_tokenizer as a word, in any case (string literals and comments included: the check
 *     is deliberately lexical and conservative, as the reference's is),
 *   - names a _sirannon or sqlite_ object, a schema other than main, or a table whose name is
 *     not a plain identifier ^[A-Za-z_][A-Za-z0-9_]*$ (change capture needs one).
 * Words are matched case-insensitively on word boundaries ([A-Za-z0-9_] on neither side).
 *
 * Ownership: returned strings are gs_malloc'd and the caller frees them with gs_free.
 * Threads: pure functions, any thread.
 */
#ifndef GS_REPL_DDL_H
#define GS_REPL_DDL_H

#include <gatestream/abi.h>

/** 1 when the first keyword, after whitespace and comments, is CREATE, ALTER or DROP. */
int gs_repl_is_ddl(const char *sql);

/** GS_OK when sql may be replicated; BATCH_VALIDATION_ERROR with the reason otherwise. */
gs_status gs_repl_ddl_check(const char *sql, gs_error *err);

/** Skip whitespace, -- line comments and block comments (an unterminated one: to the end). */
const char *gs_repl_ddl_skip_blank(const char *p);

/** The table a `DROP TABLE [IF EXISTS] [main.]name` statement drops, unquoted; NULL for any
 * other statement (or when memory runs out). A single trailing ';' is tolerated here. */
char *gs_repl_ddl_dropped_table(const char *sql);

/** A copy of sql without leading whitespace and comments and without trailing whitespace and
 * one trailing ';' (the form the primary checks and records). NULL when memory runs out or
 * sql is NULL. */
char *gs_repl_ddl_normalize(const char *sql);

#endif
