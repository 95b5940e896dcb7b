/*
 * The statement shape of a live query (spec 02 "Live Queries"): a lexical analysis of one
 * SELECT that says whether its result can be kept current from single-row changes, and the
 * pieces the live query rebuilds it from (select list, table, WHERE, ORDER BY terms, LIMIT and
 * OFFSET).
 *
 * Promise: gs_live_shape_parse accepts exactly
 *     SELECT [ALL] list FROM [main.]table [[AS] alias] [INDEXED BY i | NOT INDEXED]
 *            [WHERE expr] [ORDER BY term, ...] [LIMIT n [OFFSET m | , m]] [;]
 * and refuses with CDC_ERROR, naming the reason: a statement that is not a SELECT, a CTE
 * (WITH), VALUES, joins (JOIN, comma joins, USING/ON), table-valued functions, DISTINCT,
 * GROUP BY, HAVING, aggregates (count, sum, avg, total, group_concat, one-argument min/max,
 * json_group_*), window functions (OVER, WINDOW, the window-only functions), compound
 * selects, subqueries (any nested SELECT), LIMIT without ORDER BY, an ORDER BY term that is
 * a bare parameter, and nondeterministic functions (random, randomblob, changes,
 * total_changes, last_insert_rowid, sqlite_offset, CURRENT_TIME/DATE/TIMESTAMP, and the
 * date/time functions called with no argument or with 'now'). The tokenizer skips string
 * literals, quoted identifiers and comments, so words inside them never count.
 *
 * Parameters: anonymous `?` are numbered the way SQLite numbers them, and
 * gs_live_shape_append writes them as `?N`, so a piece moved to another place in a rebuilt
 * statement keeps binding the same value.
 *
 * Ownership: the shape owns a copy of the SQL and everything it points to; free it with
 * gs_live_shape_free. Threads: pure; no shared state.
 */
#ifndef GS_DB_LIVE_SHAPE_H
#define GS_DB_LIVE_SHAPE_H

#include "base/buf.h"

#include <gatestream/abi.h>
#include <stddef.h>

typedef enum gs_ltok_kind {
    GS_LTOK_WORD = 1, /**< a bare identifier or keyword */
    GS_LTOK_QUOTED,   /**< "x", `x` or [x] */
    GS_LTOK_STRING,   /**< 'x' */
    GS_LTOK_BLOB,     /**< x'..' */
    GS_LTOK_NUMBER,
    GS_LTOK_PARAM, /**< ?, ?N, :name, @name, $name */
    GS_LTOK_PUNCT, /**< operators and ( ) , . ; */
} gs_ltok_kind;

typedef struct gs_ltok {
    gs_ltok_kind kind;
    size_t start, len;
    int depth; /**< parenthesis depth before the token */
    int param; /**< PARAM: the index SQLite gives it */
    int anon;  /**< PARAM: a bare `?` */
} gs_ltok;

/** One entry of the select list. */
typedef struct gs_live_item {
    size_t t0, t1; /**< tokens */
    int star;      /**< `*` or `name.*` */
    char *alias;   /**< AS alias (explicit or implicit), decoded; NULL when none */
} gs_live_item;

/** One ORDER BY term. */
typedef struct gs_live_term {
    size_t t0, t1; /**< the whole term */
    size_t e0, e1; /**< its expression, without COLLATE, ASC/DESC and NULLS FIRST/LAST */
    int desc;
    int nulls;   /**< 0 default, 1 NULLS FIRST, 2 NULLS LAST */
    int ordinal; /**< ORDER BY K: K (>= 1), else 0 */
    char *ident; /**< the expression is one identifier: its decoded text, else NULL */
} gs_live_term;

typedef struct gs_live_shape {
    char *sql;
    size_t len;
    gs_ltok *toks;
    size_t ntoks;
    char *table; /**< decoded table name */
    char *alias; /**< decoded alias, or NULL */
    int schema;  /**< the table was qualified with main. */
    size_t list0, list1;
    size_t from0, from1; /**< [schema.]table [AS] alias (no INDEXED BY) */
    size_t idx0, idx1;   /**< INDEXED BY x / NOT INDEXED, or empty */
    int has_where;
    size_t where0, where1;
    size_t order0, order1; /**< the ORDER BY terms (empty when none) */
    int has_limit, has_offset;
    size_t limit0, limit1, off0, off1;
    gs_live_item *items;
    size_t nitems;
    gs_live_term *terms;
    size_t nterms;
    int max_param;       /**< sqlite3_bind_parameter_count of the statement */
    size_t *date_params; /**< PARAM tokens passed to a date/time function */
    size_t ndate_params;
    int refs_rowid; /**< a rowid, oid or _rowid_ identifier appears */
} gs_live_shape;

/** Analyse `sql` (NUL-terminated). CDC_ERROR for a refused shape. */
gs_status gs_live_shape_parse(const char *sql, gs_live_shape *out, gs_error *err);
void gs_live_shape_free(gs_live_shape *s);

/** Append the text of tokens [t0, t1) (with what lies between them), anonymous parameters
 * written as ?N. Nothing when t0 >= t1. */
void gs_live_shape_append(const gs_live_shape *s, gs_buf *b, size_t t0, size_t t1);

/** The decoded text of an identifier token (quotes removed); gs_free it. NULL on OOM. */
char *gs_live_shape_ident(const gs_live_shape *s, size_t t);

/** The token is the bare word `word` (ASCII case-insensitive). */
int gs_live_shape_is_word(const gs_live_shape *s, size_t t, const char *word);

/** Append `name` as a double-quoted identifier. */
void gs_live_quote_ident(gs_buf *b, const char *name);

#endif
