/*
 * Rows and SQLite statements, for the replication modules that read and write user rows
 * (apply.c, sync.c): quoting identifiers, binding a gs_rval, reading a column into one.
 * Pure helpers; the caller owns the statement and the buffers. Any thread.
 */
#ifndef GS_REPL_ROWSQL_H
#define GS_REPL_ROWSQL_H

#include "base/buf.h"
#include "repl/msg.h"

#include <sqlite3.h>

/** Append "name" with embedded quotes doubled. */
void gs_repl_quote_ident(gs_buf *b, const char *name);
/** Bind v at idx (BOOL as 0/1; an empty blob stays a blob). Borrows v's bytes until the
 * statement is reset. Returns the sqlite3_bind_* result. */
int gs_repl_bind_rval(sqlite3_stmt *st, int idx, const gs_rval *v);
/** Copy column c of the current row into out. REPLICATION_ERROR only when memory runs out. */
gs_status gs_repl_column_rval(sqlite3_stmt *st, int c, gs_rval *out, gs_error *err);

#endif
