#include "rowsql.h"

#include <string.h>

void gs_repl_quote_ident(gs_buf *b, const char *name)
{
    gs_buf_putc(b, '"');
    for (const char *p = name; *p; p++) {
        if (*p == '"')
            gs_buf_putc(b, '"');
        gs_buf_putc(b, *p);
    }
    gs_buf_putc(b, '"');
}

int gs_repl_bind_rval(sqlite3_stmt *st, int idx, const gs_rval *v)
{
    switch (v->type) {
    case GS_RVAL_INT:
    case GS_RVAL_BOOL: return sqlite3_bind_int64(st, idx, v->i);
    case GS_RVAL_DOUBLE: return sqlite3_bind_double(st, idx, v->d);
    case GS_RVAL_TEXT:
        return sqlite3_bind_text(st, idx, v->p ? (const char *)v->p : "", (int)v->len,
                                 SQLITE_STATIC);
    case GS_RVAL_BLOB:
        if (v->len == 0)
            return sqlite3_bind_zeroblob(st, idx, 0);
        return sqlite3_bind_blob(st, idx, v->p, (int)v->len, SQLITE_STATIC);
    default: return sqlite3_bind_null(st, idx);
    }
}

gs_status gs_repl_column_rval(sqlite3_stmt *st, int c, gs_rval *out, gs_error *err)
{
    gs_value v;
    memset(&v, 0, sizeof v);
    switch (sqlite3_column_type(st, c)) {
    case SQLITE_INTEGER:
        v.type = GS_VALUE_INT;
        v.u.i = sqlite3_column_int64(st, c);
        break;
    case SQLITE_FLOAT:
        v.type = GS_VALUE_DOUBLE;
        v.u.d = sqlite3_column_double(st, c);
        break;
    case SQLITE_TEXT:
        v.type = GS_VALUE_TEXT;
        v.u.text.ptr = (const char *)sqlite3_column_text(st, c);
        v.u.text.len = (size_t)sqlite3_column_bytes(st, c);
        break;
    case SQLITE_BLOB:
        v.type = GS_VALUE_BLOB;
        v.u.blob.ptr = sqlite3_column_blob(st, c);
        v.u.blob.len = (size_t)sqlite3_column_bytes(st, c);
        break;
    default: v.type = GS_VALUE_NULL; break;
    }
    return gs_rval_from_value(out, &v, err);
}
