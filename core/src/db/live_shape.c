/*
 * The statement shape of a live query: tokenizer, parameter numbering and the single-table
 * SELECT grammar. See live_shape.h.
 */
#include "live_shape.h"

#include "base/alloc.h"
#include "base/error.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char REFUSE[] = "a live query keeps a single-table SELECT current";

/* ---- characters ---- */

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int is_ident_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static int is_ident_char(unsigned char c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* ---- tokenizer ---- */

static int push_tok(gs_live_shape *s, size_t *cap, gs_ltok_kind kind, size_t start, size_t len,
                    int depth)
{
    if (s->ntoks == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        gs_ltok *t = gs_realloc(s->toks, nc * sizeof *t);
        if (!t)
            return -1;
        s->toks = t;
        *cap = nc;
    }
    gs_ltok *t = &s->toks[s->ntoks++];
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->start = start;
    t->len = len;
    t->depth = depth;
    return 0;
}

/* The end of a quoted run starting at i (the opening quote); `close` ends it, doubled it
 * escapes (except for ]). Returns len when unterminated. */
static size_t quoted_end(const char *p, size_t len, size_t i, char close)
{
    i++;
    while (i < len) {
        if (p[i] == close) {
            if (close != ']' && i + 1 < len && p[i + 1] == close) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i++;
    }
    return len;
}

static gs_status tokenize(gs_live_shape *s, gs_error *err)
{
    const char *p = s->sql;
    size_t len = s->len, i = 0, cap = 0;
    int depth = 0;
    while (i < len) {
        unsigned char c = (unsigned char)p[i];
        size_t st = i;
        gs_ltok_kind kind;
        if (is_space(c)) {
            i++;
            continue;
        }
        if (c == '-' && i + 1 < len && p[i + 1] == '-') {
            while (i < len && p[i] != '\n')
                i++;
            continue;
        }
        if (c == '/' && i + 1 < len && p[i + 1] == '*') {
            i += 2;
            while (i < len && !(p[i] == '*' && i + 1 < len && p[i + 1] == '/'))
                i++;
            i = i + 2 <= len ? i + 2 : len;
            continue;
        }
        if ((c == 'x' || c == 'X') && i + 1 < len && p[i + 1] == '\'') {
            kind = GS_LTOK_BLOB;
            i = quoted_end(p, len, i + 1, '\'');
        } else if (c == '\'') {
            kind = GS_LTOK_STRING;
            i = quoted_end(p, len, i, '\'');
        } else if (c == '"' || c == '`' || c == '[') {
            kind = GS_LTOK_QUOTED;
            i = quoted_end(p, len, i, c == '[' ? ']' : (char)c);
        } else if (is_digit(c) || (c == '.' && i + 1 < len && is_digit((unsigned char)p[i + 1]))) {
            kind = GS_LTOK_NUMBER;
            if (c == '0' && i + 1 < len && (p[i + 1] == 'x' || p[i + 1] == 'X')) {
                i += 2;
                while (i < len && is_hex((unsigned char)p[i]))
                    i++;
            } else {
                while (i < len && is_digit((unsigned char)p[i]))
                    i++;
                if (i < len && p[i] == '.') {
                    i++;
                    while (i < len && is_digit((unsigned char)p[i]))
                        i++;
                }
                if (i < len && (p[i] == 'e' || p[i] == 'E')) {
                    size_t j = i + 1;
                    if (j < len && (p[j] == '+' || p[j] == '-'))
                        j++;
                    if (j < len && is_digit((unsigned char)p[j])) {
                        i = j;
                        while (i < len && is_digit((unsigned char)p[i]))
                            i++;
                    }
                }
            }
        } else if (c == '?') {
            kind = GS_LTOK_PARAM;
            i++;
            while (i < len && is_digit((unsigned char)p[i]))
                i++;
        } else if ((c == ':' || c == '@' || c == '$') && i + 1 < len &&
                   is_ident_char((unsigned char)p[i + 1])) {
            kind = GS_LTOK_PARAM;
            i++;
            for (;;) {
                while (i < len && is_ident_char((unsigned char)p[i]))
                    i++;
                if (c == '$' && i + 2 < len && p[i] == ':' && p[i + 1] == ':') {
                    i += 2;
                    continue;
                }
                break;
            }
            if (c == '$' && i < len && p[i] == '(') {
                while (i < len && p[i] != ')')
                    i++;
                if (i < len)
                    i++;
            }
        } else if (is_ident_start(c)) {
            kind = GS_LTOK_WORD;
            while (i < len && is_ident_char((unsigned char)p[i]))
                i++;
        } else {
            kind = GS_LTOK_PUNCT;
            static const char *const two[] = {"||", "<=", ">=", "<>", "!=", "==", "<<", ">>", "->"};
            i++;
            if (c == '-' && i + 1 < len && p[i] == '>' && p[i + 1] == '>') {
                i += 2;
            } else {
                for (size_t k = 0; k < sizeof two / sizeof two[0]; k++)
                    if (i < len && (char)c == two[k][0] && p[i] == two[k][1]) {
                        i++;
                        break;
                    }
            }
            if (c == ')' && depth > 0)
                depth--;
        }
        int d = depth;
        if (kind == GS_LTOK_PUNCT && c == ')')
            d = depth + 1; /* a closing paren belongs to the level it closes */
        if (push_tok(s, &cap, kind, st, i - st, d) != 0)
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory reading the statement");
        if (kind == GS_LTOK_PUNCT && c == '(')
            depth++;
    }
    return GS_OK;
}

/* Number parameters as SQLite does: ? takes the next index, ?N takes N, a name takes the
 * next index the first time it appears. */
static void number_params(gs_live_shape *s)
{
    int nvar = 0;
    for (size_t k = 0; k < s->ntoks; k++) {
        gs_ltok *t = &s->toks[k];
        if (t->kind != GS_LTOK_PARAM)
            continue;
        const char *p = s->sql + t->start;
        if (p[0] == '?') {
            if (t->len == 1) {
                t->param = ++nvar;
                t->anon = 1;
            } else {
                long n = strtol(p + 1, NULL, 10);
                t->param = n > 0 && n < 1000000 ? (int)n : 0;
                if (t->param > nvar)
                    nvar = t->param;
            }
            continue;
        }
        int found = 0;
        for (size_t j = 0; j < k && !found; j++) {
            const gs_ltok *u = &s->toks[j];
            if (u->kind == GS_LTOK_PARAM && u->len == t->len &&
                memcmp(s->sql + u->start, p, t->len) == 0) {
                t->param = u->param;
                found = 1;
            }
        }
        if (!found)
            t->param = ++nvar;
    }
    s->max_param = nvar;
}

/* ---- token helpers ---- */

static int tok_is(const gs_live_shape *s, size_t t, const char *word)
{
    if (t >= s->ntoks || s->toks[t].kind != GS_LTOK_WORD)
        return 0;
    size_t n = strlen(word);
    return s->toks[t].len == n && strncasecmp(s->sql + s->toks[t].start, word, n) == 0;
}

int gs_live_shape_is_word(const gs_live_shape *s, size_t t, const char *word)
{
    return tok_is(s, t, word);
}

static int tok_punct(const gs_live_shape *s, size_t t, const char *op)
{
    if (t >= s->ntoks || s->toks[t].kind != GS_LTOK_PUNCT)
        return 0;
    size_t n = strlen(op);
    return s->toks[t].len == n && memcmp(s->sql + s->toks[t].start, op, n) == 0;
}

static int tok_in(const gs_live_shape *s, size_t t, const char *const *words)
{
    for (size_t i = 0; words[i]; i++)
        if (tok_is(s, t, words[i]))
            return 1;
    return 0;
}

static int is_name_tok(const gs_live_shape *s, size_t t)
{
    return t < s->ntoks && (s->toks[t].kind == GS_LTOK_WORD || s->toks[t].kind == GS_LTOK_QUOTED);
}

char *gs_live_shape_ident(const gs_live_shape *s, size_t t)
{
    const gs_ltok *k = &s->toks[t];
    const char *p = s->sql + k->start;
    size_t n = k->len;
    if (k->kind != GS_LTOK_QUOTED && k->kind != GS_LTOK_STRING)
        return gs_strndup(p, n);
    char open = p[0];
    char close = open == '[' ? ']' : open;
    char *out = gs_malloc(n + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    size_t end = n >= 2 && p[n - 1] == close ? n - 1 : n;
    for (size_t i = 1; i < end; i++) {
        out[o++] = p[i];
        if (close != ']' && p[i] == close && i + 1 < end && p[i + 1] == close)
            i++;
    }
    out[o] = '\0';
    return out;
}

void gs_live_quote_ident(gs_buf *b, const char *name)
{
    gs_buf_putc(b, '"');
    for (const char *p = name; *p; p++) {
        if (*p == '"')
            gs_buf_putc(b, '"');
        gs_buf_putc(b, *p);
    }
    gs_buf_putc(b, '"');
}

void gs_live_shape_append(const gs_live_shape *s, gs_buf *b, size_t t0, size_t t1)
{
    if (t0 >= t1 || t1 > s->ntoks)
        return;
    size_t pos = s->toks[t0].start;
    for (size_t k = t0; k < t1; k++) {
        const gs_ltok *t = &s->toks[k];
        if (t->kind == GS_LTOK_PARAM && t->anon) {
            gs_buf_append(b, s->sql + pos, t->start - pos);
            gs_buf_printf(b, "?%d", t->param);
            pos = t->start + t->len;
        }
    }
    const gs_ltok *last = &s->toks[t1 - 1];
    gs_buf_append(b, s->sql + pos, last->start + last->len - pos);
}

/* ---- refusals ---- */

static gs_status refuse(gs_error *err, const char *what)
{
    return gs_error_set(err, 0, "CDC_ERROR", "%s: %s", REFUSE, what);
}

static const char *const AGGREGATES[] = {"count",
                                         "sum",
                                         "avg",
                                         "total",
                                         "group_concat",
                                         "string_agg",
                                         "json_group_array",
                                         "json_group_object",
                                         "jsonb_group_array",
                                         "jsonb_group_object",
                                         NULL};
static const char *const WINDOW_ONLY[] = {"row_number",  "rank",       "dense_rank", "percent_rank",
                                          "cume_dist",   "ntile",      "lag",        "lead",
                                          "first_value", "last_value", "nth_value",  NULL};
static const char *const NONDETERMINISTIC[] = {
    "random", "randomblob", "changes", "total_changes", "last_insert_rowid", "sqlite_offset", NULL};
static const char *const DATE_FUNCS[] = {"date",      "time",     "datetime", "julianday",
                                         "unixepoch", "strftime", "timediff", NULL};
static const char *const NOW_WORDS[] = {"current_time", "current_date", "current_timestamp", NULL};
static const char *const ROWID_WORDS[] = {"rowid", "oid", "_rowid_", NULL};
static const char *const JOIN_WORDS[] = {"join",  "natural", "left", "right", "full", "inner",
                                         "cross", "outer",   "on",   "using", NULL};
/* Words after which a select item's last identifier is not an alias, and words that are
 * never an alias. */
static const char *const NOT_ALIAS[] = {
    "and",     "or",       "not",  "is",     "in",   "like",   "glob",    "match",   "regexp",
    "between", "escape",   "case", "when",   "then", "else",   "end",     "collate", "cast",
    "as",      "distinct", "all",  "exists", "null", "isnull", "notnull", "from",    NULL};

/* The closing paren of the one opened at token t (t is "("); ntoks when unbalanced. */
static size_t close_of(const gs_live_shape *s, size_t t)
{
    int d = s->toks[t].depth;
    for (size_t k = t + 1; k < s->ntoks; k++)
        if (tok_punct(s, k, ")") && s->toks[k].depth == d + 1)
            return k;
    return s->ntoks;
}

/* Is the STRING token 'now' (any case)? */
static int string_is_now(const gs_live_shape *s, size_t t)
{
    const gs_ltok *k = &s->toks[t];
    return k->kind == GS_LTOK_STRING && k->len == 5 &&
           strncasecmp(s->sql + k->start + 1, "now", 3) == 0;
}

static gs_status check_calls(gs_live_shape *s, gs_error *err)
{
    size_t cap_dp = 0;
    for (size_t k = 0; k < s->ntoks; k++) {
        if (k > 0 && tok_is(s, k, "select"))
            return refuse(err, "subqueries (a nested SELECT) are not supported");
        if (tok_is(s, k, "values"))
            return refuse(err, "VALUES is not supported");
        if (tok_is(s, k, "distinct"))
            return refuse(err, "DISTINCT is not supported");
        if (tok_is(s, k, "over") || tok_is(s, k, "window"))
            return refuse(err, "window functions are not supported");
        if (tok_is(s, k, "union") || tok_is(s, k, "intersect") || tok_is(s, k, "except"))
            return refuse(err, "compound selects (UNION, INTERSECT, EXCEPT) are not supported");
        if (tok_is(s, k, "group"))
            return refuse(err, "GROUP BY is not supported");
        if (tok_is(s, k, "having"))
            return refuse(err, "HAVING is not supported");
        if (tok_is(s, k, "in") && is_name_tok(s, k + 1))
            return refuse(err, "subqueries are not supported (`IN table` reads another table)");
        if (tok_in(s, k, NOW_WORDS))
            return refuse(err, "CURRENT_TIME, CURRENT_DATE and CURRENT_TIMESTAMP are "
                               "nondeterministic");
        if (is_name_tok(s, k)) {
            char *w = NULL;
            if (s->toks[k].kind == GS_LTOK_QUOTED) {
                w = gs_live_shape_ident(s, k);
                if (!w)
                    return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
            }
            const char *name = w ? w : s->sql + s->toks[k].start;
            size_t nlen = w ? strlen(w) : s->toks[k].len;
            int rowid = 0;
            for (size_t i = 0; ROWID_WORDS[i]; i++)
                if (nlen == strlen(ROWID_WORDS[i]) && strncasecmp(name, ROWID_WORDS[i], nlen) == 0)
                    rowid = 1;
            if (rowid)
                s->refs_rowid = 1;
            if (!tok_punct(s, k + 1, "(")) {
                gs_free(w);
                continue;
            }
            /* a call: what is it? */
            size_t close = close_of(s, k + 1);
            int nargs = close == k + 2 ? 0 : 1;
            for (size_t j = k + 2; j < close; j++)
                if (tok_punct(s, j, ",") && s->toks[j].depth == s->toks[k + 1].depth + 1)
                    nargs++;
#define NAME_IS(word) (nlen == strlen(word) && strncasecmp(name, word, nlen) == 0)
            const char *why = NULL;
            int is_date = 0;
            for (size_t i = 0; AGGREGATES[i] && !why; i++)
                if (NAME_IS(AGGREGATES[i]))
                    why = "aggregate functions are not supported";
            if ((NAME_IS("min") || NAME_IS("max")) && nargs == 1)
                why = "aggregate functions are not supported (min and max with one argument)";
            if (NAME_IS("filter"))
                why = "aggregate functions are not supported (FILTER)";
            for (size_t i = 0; WINDOW_ONLY[i] && !why; i++)
                if (NAME_IS(WINDOW_ONLY[i]))
                    why = "window functions are not supported";
            for (size_t i = 0; NONDETERMINISTIC[i] && !why; i++)
                if (NAME_IS(NONDETERMINISTIC[i]))
                    why = "nondeterministic functions (random, randomblob, changes, "
                          "last_insert_rowid, ...) are not supported";
            for (size_t i = 0; DATE_FUNCS[i]; i++)
                if (NAME_IS(DATE_FUNCS[i]))
                    is_date = 1;
#undef NAME_IS
            gs_free(w);
            if (why)
                return refuse(err, why);
            if (!is_date)
                continue;
            if (nargs == 0)
                return refuse(err, "a date/time function without arguments reads the clock "
                                   "('now'), which is nondeterministic");
            for (size_t j = k + 2; j < close; j++) {
                if (string_is_now(s, j))
                    return refuse(err, "a date/time function of 'now' is nondeterministic");
                if (s->toks[j].kind == GS_LTOK_PARAM) {
                    if (s->ndate_params == cap_dp) {
                        size_t nc = cap_dp ? cap_dp * 2 : 8;
                        size_t *dp = gs_realloc(s->date_params, nc * sizeof *dp);
                        if (!dp)
                            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
                        s->date_params = dp;
                        cap_dp = nc;
                    }
                    s->date_params[s->ndate_params++] = j;
                }
            }
        }
    }
    return GS_OK;
}

/* ---- grammar ---- */

static gs_status add_item(gs_live_shape *s, size_t a, size_t b, size_t *cap, gs_error *err)
{
    if (a >= b)
        return refuse(err, "the select list has an empty entry");
    if (s->nitems == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        gs_live_item *it = gs_realloc(s->items, nc * sizeof *it);
        if (!it)
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        s->items = it;
        *cap = nc;
    }
    gs_live_item *it = &s->items[s->nitems++];
    memset(it, 0, sizeof *it);
    it->t0 = a;
    it->t1 = b;
    if ((b - a == 1 && tok_punct(s, a, "*")) ||
        (b - a == 3 && is_name_tok(s, a) && tok_punct(s, a + 1, ".") && tok_punct(s, a + 2, "*")))
        it->star = 1;
    size_t alias_tok = 0;
    int has_alias = 0;
    if (b - a >= 3 && tok_is(s, b - 2, "as") &&
        (is_name_tok(s, b - 1) || s->toks[b - 1].kind == GS_LTOK_STRING)) {
        alias_tok = b - 1;
        has_alias = 1;
    } else if (b - a >= 2 && is_name_tok(s, b - 1) && !tok_in(s, b - 1, NOT_ALIAS) &&
               !tok_punct(s, b - 2, ".")) {
        const gs_ltok *prev = &s->toks[b - 2];
        int end_of_expr = prev->kind == GS_LTOK_QUOTED || prev->kind == GS_LTOK_STRING ||
                          prev->kind == GS_LTOK_NUMBER || prev->kind == GS_LTOK_BLOB ||
                          prev->kind == GS_LTOK_PARAM || tok_punct(s, b - 2, ")") ||
                          (prev->kind == GS_LTOK_WORD && !tok_in(s, b - 2, NOT_ALIAS)) ||
                          tok_is(s, b - 2, "end") || tok_is(s, b - 2, "null");
        if (end_of_expr) {
            alias_tok = b - 1;
            has_alias = 1;
        }
    }
    if (has_alias) {
        it->alias = gs_live_shape_ident(s, alias_tok);
        if (!it->alias)
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    return GS_OK;
}

static gs_status add_term(gs_live_shape *s, size_t a, size_t b, size_t *cap, gs_error *err)
{
    if (a >= b)
        return refuse(err, "the ORDER BY clause has an empty term");
    if (s->nterms == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        gs_live_term *t = gs_realloc(s->terms, nc * sizeof *t);
        if (!t)
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        s->terms = t;
        *cap = nc;
    }
    gs_live_term *t = &s->terms[s->nterms++];
    memset(t, 0, sizeof *t);
    t->t0 = a;
    t->t1 = b;
    size_t e = b;
    if (e - a >= 3 && tok_is(s, e - 2, "nulls")) {
        if (tok_is(s, e - 1, "first"))
            t->nulls = 1;
        else if (tok_is(s, e - 1, "last"))
            t->nulls = 2;
        if (t->nulls)
            e -= 2;
    }
    if (e - a >= 2 && (tok_is(s, e - 1, "asc") || tok_is(s, e - 1, "desc"))) {
        t->desc = tok_is(s, e - 1, "desc");
        e--;
    }
    while (e - a >= 3 && tok_is(s, e - 2, "collate") && is_name_tok(s, e - 1))
        e -= 2;
    t->e0 = a;
    t->e1 = e;
    size_t n = e - a;
    const gs_ltok *first = &s->toks[a];
    if (n == 1 && first->kind == GS_LTOK_PARAM)
        return refuse(err, "an ORDER BY term that is a parameter (?) is not supported; name "
                           "the column instead");
    size_t num = n == 1 ? a : (n == 2 && tok_punct(s, a, "+") ? a + 1 : s->ntoks);
    if (num < s->ntoks && s->toks[num].kind == GS_LTOK_NUMBER) {
        const char *p = s->sql + s->toks[num].start;
        int digits = 1;
        for (size_t i = 0; i < s->toks[num].len; i++)
            if (!is_digit((unsigned char)p[i]))
                digits = 0;
        if (digits) {
            long v = strtol(p, NULL, 10);
            t->ordinal = v > 0 && v < 100000 ? (int)v : -1;
        }
    }
    if (n == 1 && is_name_tok(s, a)) {
        t->ident = gs_live_shape_ident(s, a);
        if (!t->ident)
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    return GS_OK;
}

/* The first token at index >= k, at depth `depth`, that is one of `words` (or the punct
 * `punct` when not NULL); ntoks when none. */
static size_t find_at_depth(const gs_live_shape *s, size_t k, int depth, const char *const *words,
                            const char *punct)
{
    for (; k < s->ntoks; k++) {
        if (s->toks[k].depth != depth)
            continue;
        if (words && tok_in(s, k, words))
            return k;
        if (punct && tok_punct(s, k, punct))
            return k;
    }
    return s->ntoks;
}

/* One statement, and a SELECT: *n becomes the token count without trailing ';'. */
static gs_status parse_prelude(gs_live_shape *s, size_t *n_out, gs_error *err)
{
    size_t n = s->ntoks;
    /* the statement ends at its first top-level ';': nothing may follow */
    for (size_t k = 0; k < n; k++)
        if (tok_punct(s, k, ";") && s->toks[k].depth == 0) {
            for (size_t j = k + 1; j < n; j++)
                if (!tok_punct(s, j, ";"))
                    return refuse(err, "the SQL holds more than one statement");
            n = k;
            break;
        }
    if (n == 0)
        return refuse(err, "the SQL text is empty");
    if (tok_is(s, 0, "with"))
        return refuse(err, "common table expressions (WITH) are not supported");
    if (tok_is(s, 0, "values"))
        return refuse(err, "VALUES is not supported");
    if (!tok_is(s, 0, "select"))
        return refuse(err, "the statement is not a SELECT");
    *n_out = n;
    return GS_OK;
}

static gs_status parse_grammar(gs_live_shape *s, size_t n, gs_error *err)
{
    size_t k = 1;
    if (tok_is(s, k, "all"))
        k++;
    static const char *const FROM[] = {"from", NULL};
    size_t f = find_at_depth(s, k, 0, FROM, NULL);
    if (f >= n)
        return refuse(err, "the statement reads no table (it has no FROM clause)");
    if (f == k)
        return refuse(err, "the select list is empty");
    s->list0 = k;
    s->list1 = f;
    size_t cap = 0, a = k;
    for (size_t j = k; j <= f; j++) {
        if (j == f || (tok_punct(s, j, ",") && s->toks[j].depth == 0)) {
            if (add_item(s, a, j, &cap, err) != GS_OK)
                return GS_ERROR;
            a = j + 1;
        }
    }

    /* FROM [main.]table [[AS] alias] [INDEXED BY x | NOT INDEXED] */
    k = f + 1;
    if (k >= n || !is_name_tok(s, k))
        return refuse(err, "FROM must name one table");
    s->from0 = k;
    size_t name = k;
    if (tok_punct(s, k + 1, ".")) {
        if (!tok_is(s, k, "main") && !(s->toks[k].kind == GS_LTOK_QUOTED && s->toks[k].len == 6 &&
                                       strncasecmp(s->sql + s->toks[k].start + 1, "main", 4) == 0))
            return refuse(err, "the table must belong to the main database");
        if (k + 2 >= n || !is_name_tok(s, k + 2))
            return refuse(err, "FROM must name one table");
        s->schema = 1;
        name = k + 2;
    }
    k = name + 1;
    s->table = gs_live_shape_ident(s, name);
    if (!s->table)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    if (k < n && tok_punct(s, k, "("))
        return refuse(err, "table-valued functions are not supported; FROM must name a table");
    static const char *const CLAUSES[] = {
        "where", "order",   "limit", "group",     "having", "window", "indexed", "not",
        "join",  "natural", "left",  "right",     "full",   "inner",  "cross",   "outer",
        "on",    "using",   "union", "intersect", "except", NULL};
    if (k < n && tok_is(s, k, "as")) {
        if (k + 1 >= n || !is_name_tok(s, k + 1))
            return refuse(err, "AS must be followed by an alias");
        s->alias = gs_live_shape_ident(s, k + 1);
        k += 2;
    } else if (k < n && is_name_tok(s, k) &&
               !(s->toks[k].kind == GS_LTOK_WORD && tok_in(s, k, CLAUSES))) {
        s->alias = gs_live_shape_ident(s, k);
        k++;
    }
    if (k > name + 1 && !s->alias)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    s->from1 = k;
    s->idx0 = s->idx1 = k;
    if (k < n && tok_is(s, k, "indexed")) {
        if (!tok_is(s, k + 1, "by") || k + 2 >= n || !is_name_tok(s, k + 2))
            return refuse(err, "INDEXED must be followed by BY and an index name");
        k += 3;
        s->idx1 = k;
    } else if (k < n && tok_is(s, k, "not") && tok_is(s, k + 1, "indexed")) {
        k += 2;
        s->idx1 = k;
    }
    if (k < n && (tok_punct(s, k, ",") || tok_in(s, k, JOIN_WORDS)))
        return refuse(err, "joins are not supported; a live query reads one table");
    if (k < n && tok_punct(s, k, "("))
        return refuse(err, "FROM must name one table");

    static const char *const AFTER_WHERE[] = {"order", "limit", NULL};
    if (k < n && tok_is(s, k, "where")) {
        size_t e = find_at_depth(s, k + 1, 0, AFTER_WHERE, NULL);
        if (e > n)
            e = n;
        if (e == k + 1)
            return refuse(err, "WHERE has no condition");
        s->has_where = 1;
        s->where0 = k + 1;
        s->where1 = e;
        k = e;
    }
    if (k < n && tok_is(s, k, "order")) {
        if (!tok_is(s, k + 1, "by"))
            return refuse(err, "ORDER must be followed by BY");
        static const char *const LIMIT[] = {"limit", NULL};
        size_t e = find_at_depth(s, k + 2, 0, LIMIT, NULL);
        if (e > n)
            e = n;
        s->order0 = k + 2;
        s->order1 = e;
        size_t tcap = 0;
        a = k + 2;
        for (size_t j = k + 2; j <= e; j++) {
            if (j == e || (tok_punct(s, j, ",") && s->toks[j].depth == 0)) {
                if (add_term(s, a, j, &tcap, err) != GS_OK)
                    return GS_ERROR;
                a = j + 1;
            }
        }
        k = e;
    }
    if (k < n && tok_is(s, k, "limit")) {
        if (s->nterms == 0)
            return refuse(err, "LIMIT without ORDER BY is not supported: the window it keeps "
                               "would be arbitrary");
        static const char *const OFFSET[] = {"offset", NULL};
        size_t off = find_at_depth(s, k + 1, 0, OFFSET, NULL);
        size_t comma = find_at_depth(s, k + 1, 0, NULL, ",");
        if (off > n)
            off = n;
        if (comma > n)
            comma = n;
        if (comma < off) {
            /* LIMIT offset, count */
            s->has_offset = 1;
            s->off0 = k + 1;
            s->off1 = comma;
            s->limit0 = comma + 1;
            s->limit1 = n;
        } else {
            s->limit0 = k + 1;
            s->limit1 = off;
            if (off < n) {
                s->has_offset = 1;
                s->off0 = off + 1;
                s->off1 = n;
            }
        }
        if (s->limit0 >= s->limit1 || (s->has_offset && s->off0 >= s->off1))
            return refuse(err, "LIMIT or OFFSET has no value");
        s->has_limit = 1;
        k = n;
    }
    if (k < n) {
        if (tok_in(s, k, JOIN_WORDS))
            return refuse(err, "joins are not supported; a live query reads one table");
        gs_error_set(err, 0, "CDC_ERROR", "%s: unsupported clause near '%.*s'", REFUSE,
                     (int)(s->toks[k].len > 40 ? 40 : s->toks[k].len), s->sql + s->toks[k].start);
        return GS_ERROR;
    }
    return GS_OK;
}

gs_status gs_live_shape_parse(const char *sql, gs_live_shape *out, gs_error *err)
{
    memset(out, 0, sizeof *out);
    if (!sql)
        return refuse(err, "no SQL was given");
    out->len = strlen(sql);
    out->sql = gs_strndup(sql, out->len);
    if (!out->sql)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory reading the statement");
    if (tokenize(out, err) != GS_OK)
        goto fail;
    number_params(out);
    size_t n = 0;
    if (parse_prelude(out, &n, err) != GS_OK)
        goto fail;
    out->ntoks = n; /* the trailing ';' (if any) is not part of the statement */
    if (check_calls(out, err) != GS_OK)
        goto fail;
    if (parse_grammar(out, n, err) != GS_OK)
        goto fail;
    return GS_OK;
fail:
    gs_live_shape_free(out);
    return GS_ERROR;
}

void gs_live_shape_free(gs_live_shape *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nitems; i++)
        gs_free(s->items[i].alias);
    for (size_t i = 0; i < s->nterms; i++)
        gs_free(s->terms[i].ident);
    gs_free(s->items);
    gs_free(s->terms);
    gs_free(s->toks);
    gs_free(s->sql);
    gs_free(s->table);
    gs_free(s->alias);
    gs_free(s->date_params);
    memset(s, 0, sizeof *s);
}
