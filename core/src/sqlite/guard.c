#include "guard.h"

#include "base/error.h"

#include <sqlite3.h>
#include <string.h>
#include <strings.h>

static const char SIRANNON_MSG[] =
    "identifiers beginning with '_sirannon' are reserved for gatestream's internal tables";
static const char CATALOGUE_MSG[] =
    "the sqlite_ schema catalogue is read-only: statements that modify a sqlite_ object are "
    "not permitted";
static const char ATTACH_MSG[] = "ATTACH and DETACH are not permitted";
static const char WRITABLE_SCHEMA_MSG[] = "PRAGMA writable_schema is not permitted";
static const char TXN_MSG[] =
    "transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE) is not permitted in a "
    "statement; send the statements as one transaction request instead";

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

static int prefix_ci(const char *s, size_t n, const char *prefix)
{
    size_t pl = strlen(prefix);
    return n >= pl && strncasecmp(s, prefix, pl) == 0;
}

static int equal_ci(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

static const struct {
    const char *word;
    gs_sql_verb verb;
} verbs[] = {
    {"select", GS_SQL_SELECT},   {"values", GS_SQL_VALUES}, {"with", GS_SQL_WITH},
    {"insert", GS_SQL_INSERT},   {"update", GS_SQL_UPDATE}, {"delete", GS_SQL_DELETE},
    {"replace", GS_SQL_REPLACE}, {"create", GS_SQL_CREATE}, {"drop", GS_SQL_DROP},
    {"alter", GS_SQL_ALTER},     {"pragma", GS_SQL_PRAGMA}, {"reindex", GS_SQL_REINDEX},
    {"vacuum", GS_SQL_VACUUM},   {"attach", GS_SQL_ATTACH}, {"detach", GS_SQL_DETACH},
    {"analyze", GS_SQL_ANALYZE},
};

static gs_sql_verb verb_of(const char *w, size_t n)
{
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (equal_ci(w, n, verbs[i].word))
            return verbs[i].verb;
    return GS_SQL_OTHER;
}

/* Scanner state for the statement being read. */
typedef struct scan_state {
    gs_sql_verb cur; /* verb of the current statement */
    int head;        /* inside a statement's head: the object it writes (0, or the verb) */
    int depth;       /* parenthesis depth within the statement */
} scan_state;

/* Classify an identifier whose (decoded) text starts at w. For quoted forms the caller
 * passes the first bytes decoded into a small buffer; that is all the prefixes need. */
static void note_ident(gs_sql_info *out, const scan_state *ss, const char *w, size_t n)
{
    if (prefix_ci(w, n, "_sirannon"))
        out->sirannon = 1;
    else if (prefix_ci(w, n, "sqlite_")) {
        /* A sqlite_ name in the head of CREATE/DROP/ALTER or INSERT/UPDATE/DELETE/REPLACE is
         * the object being changed. SQLite refuses some of these itself before the authorizer
         * sees them ("may not be modified", "no such table"), so this rule is lexical and the
         * authorizer is the second layer. REINDEX and VACUUM
         * name their object in the text; the authorizer reports REINDEX per index (including
         * a table's automatic sqlite_autoindex_ ones) and VACUUM not at all. */
        if (ss->head || ss->cur == GS_SQL_REINDEX || ss->cur == GS_SQL_VACUUM)
            out->catalogue = 1;
    } else if (equal_ci(w, n, "pragma_writable_schema"))
        out->writable_schema = 1;
}

/* Keywords that end a head: what follows is a definition, a query or an expression, which
 * may read the catalogue. A DDL head runs past ON (CREATE INDEX i ON table). */
static int ends_head(gs_sql_verb head, const char *w, size_t n)
{
    static const char *const ddl[] = {"as", "begin", "when", "select", "using", "for"};
    static const char *const dml[] = {"set",       "values", "select",  "default",
                                      "where",     "as",     "indexed", "not",
                                      "returning", "on",     "order",   "limit"};
    const char *const *list = gs_sql_verb_ddl(head) ? ddl : dml;
    size_t count = gs_sql_verb_ddl(head) ? sizeof ddl / sizeof ddl[0] : sizeof dml / sizeof dml[0];
    for (size_t i = 0; i < count; i++)
        if (equal_ci(w, n, list[i]))
            return 1;
    return 0;
}

/* Decode a quoted identifier starting at sql[i] (the opening quote) into buf (at most cap
 * bytes kept, enough for the prefix rules); returns the index after the closing quote. */
static size_t read_quoted(const char *sql, size_t len, size_t i, char close, char *buf, size_t cap,
                          size_t *kept)
{
    size_t k = 0;
    i++;
    while (i < len) {
        char c = sql[i];
        if (c == close) {
            /* "" and `` escape the quote; ] has no escape */
            if (close != ']' && i + 1 < len && sql[i + 1] == close) {
                if (k < cap)
                    buf[k++] = c;
                i += 2;
                continue;
            }
            i++;
            break;
        }
        if (k < cap)
            buf[k++] = c;
        i++;
    }
    *kept = k;
    return i;
}

void gs_sql_scan(const char *sql, size_t len, gs_sql_info *out)
{
    memset(out, 0, sizeof *out);
    out->verb = GS_SQL_EMPTY;
    int stmt_start = 1; /* the next token starts a statement */
    int first = 1;      /* ... and that statement is the first one */
    scan_state ss = {.cur = GS_SQL_EMPTY, .head = 0, .depth = 0};
    size_t i = 0;
    char qbuf[32];
    size_t kept;
    while (i < len) {
        unsigned char c = (unsigned char)sql[i];
        if (is_space(c)) {
            i++;
            continue;
        }
        if (c == '-' && i + 1 < len && sql[i + 1] == '-') {
            while (i < len && sql[i] != '\n')
                i++;
            continue;
        }
        if (c == '/' && i + 1 < len && sql[i + 1] == '*') {
            i += 2;
            while (i < len && !(sql[i] == '*' && i + 1 < len && sql[i + 1] == '/'))
                i++;
            i = i + 2 <= len ? i + 2 : len;
            continue;
        }
        if (c == ';') {
            /* A top-level semicolon ends a statement (inside a CREATE TRIGGER body this is a
             * false boundary, which only makes the scan stricter). */
            i++;
            stmt_start = 1;
            ss.head = 0;
            ss.depth = 0;
            continue;
        }
        if (stmt_start) {
            stmt_start = 0;
            ss.cur = GS_SQL_OTHER;
            if (is_ident_start(c)) {
                size_t j = i + 1;
                while (j < len && is_ident_char((unsigned char)sql[j]))
                    j++;
                ss.cur = verb_of(sql + i, j - i);
            }
            ss.head = gs_sql_verb_ddl(ss.cur) || gs_sql_verb_groupable(ss.cur) ? (int)ss.cur : 0;
            if (first) {
                out->verb = ss.cur;
                first = 0;
            }
            if (ss.cur == GS_SQL_ATTACH || ss.cur == GS_SQL_DETACH)
                out->attach = 1;
        }
        if (c == '\'') {
            /* string literal; '' escapes a quote */
            i++;
            while (i < len) {
                if (sql[i] == '\'') {
                    if (i + 1 < len && sql[i + 1] == '\'') {
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                i++;
            }
            continue;
        }
        if (c == '"' || c == '`' || c == '[') {
            char close = c == '[' ? ']' : (char)c;
            i = read_quoted(sql, len, i, close, qbuf, sizeof qbuf, &kept);
            note_ident(out, &ss, qbuf, kept);
            continue;
        }
        if (c == '?' || c == ':' || c == '@' || c == '$') {
            /* a bind parameter: its name is not an identifier */
            i++;
            while (i < len && (is_ident_char((unsigned char)sql[i]) || sql[i] == ':'))
                i++;
            continue;
        }
        if (c >= '0' && c <= '9') {
            while (i < len && (is_ident_char((unsigned char)sql[i]) || sql[i] == '.'))
                i++;
            continue;
        }
        if (is_ident_start(c)) {
            size_t j = i + 1;
            while (j < len && is_ident_char((unsigned char)sql[j]))
                j++;
            if (ss.head && ends_head((gs_sql_verb)ss.head, sql + i, j - i)) {
                ss.head = 0;
            } else if (ss.cur == GS_SQL_WITH && ss.depth == 0 && !ss.head) {
                /* the statement a WITH clause leads to: its target is a head too */
                gs_sql_verb v = verb_of(sql + i, j - i);
                if (gs_sql_verb_groupable(v)) {
                    ss.head = (int)v;
                    i = j;
                    continue;
                }
            }
            note_ident(out, &ss, sql + i, j - i);
            i = j;
            continue;
        }
        if (c == '(') {
            ss.head = 0;
            ss.depth++;
        } else if (c == ')' && ss.depth > 0) {
            ss.depth--;
        }
        i++;
    }
}

int gs_sql_verb_groupable(gs_sql_verb verb)
{
    return verb == GS_SQL_INSERT || verb == GS_SQL_UPDATE || verb == GS_SQL_DELETE ||
           verb == GS_SQL_REPLACE;
}

int gs_sql_verb_ddl(gs_sql_verb verb)
{
    return verb == GS_SQL_CREATE || verb == GS_SQL_DROP || verb == GS_SQL_ALTER;
}

gs_status gs_guard_check(const gs_sql_info *info, gs_error *err)
{
    if (info->sirannon)
        return gs_error_set(err, 0, "FORBIDDEN_SQL", "%s", SIRANNON_MSG);
    if (info->writable_schema)
        return gs_error_set(err, 0, "FORBIDDEN_SQL", "%s", WRITABLE_SCHEMA_MSG);
    if (info->attach)
        return gs_error_set(err, 0, "FORBIDDEN_SQL", "%s", ATTACH_MSG);
    if (info->catalogue)
        return gs_error_set(err, 0, "FORBIDDEN_SQL", "%s", CATALOGUE_MSG);
    return GS_OK;
}

gs_status gs_guard_check_sql(const char *sql, size_t len, gs_sql_info *info, gs_error *err)
{
    gs_sql_info local;
    if (!info)
        info = &local;
    gs_sql_scan(sql, len, info);
    return gs_guard_check(info, err);
}

void gs_guard_auth_begin(gs_guard_auth *a, int active, gs_sql_verb verb)
{
    a->active = active;
    a->ddl = gs_sql_verb_ddl(verb) || verb == GS_SQL_ANALYZE;
    a->seen_ddl = verb == GS_SQL_ANALYZE;
    a->code = NULL;
    a->reason = NULL;
}

static int deny(gs_guard_auth *a, const char *code, const char *reason)
{
    if (!a->code) {
        a->code = code;
        a->reason = reason;
    }
    return SQLITE_DENY;
}

static int is_sqlite_name(const char *s)
{
    return s && strncasecmp(s, "sqlite_", 7) == 0;
}

int gs_guard_authorizer(void *ctx, int action, const char *arg1, const char *arg2,
                        const char *dbname, const char *trigger)
{
    gs_guard_auth *a = ctx;
    (void)dbname;
    if (!a->active)
        return SQLITE_OK;
    if (trigger && strncmp(trigger, "_sirannon_trg_", 14) == 0)
        return SQLITE_OK; /* CDC triggers write the change log from inside user statements */
    switch (action) {
    case SQLITE_ATTACH:
    case SQLITE_DETACH: return deny(a, "FORBIDDEN_SQL", ATTACH_MSG);
    case SQLITE_PRAGMA:
        if (arg1 && strcasecmp(arg1, "writable_schema") == 0)
            return deny(a, "FORBIDDEN_SQL", WRITABLE_SCHEMA_MSG);
        return SQLITE_OK;
    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT: return deny(a, "QUERY_ERROR", TXN_MSG);
    case SQLITE_CREATE_TABLE:
    case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_CREATE_VIEW:
    case SQLITE_CREATE_TEMP_VIEW:
    case SQLITE_DROP_TABLE:
    case SQLITE_DROP_TEMP_TABLE:
    case SQLITE_DROP_VIEW:
    case SQLITE_DROP_TEMP_VIEW:
    case SQLITE_CREATE_VTABLE:
    case SQLITE_DROP_VTABLE:
        /* Only the statement's own object is checked: SQLite runs nested DDL of its own
         * (creating sqlite_sequence for AUTOINCREMENT, dropping a table's triggers). */
        if (a->seen_ddl)
            return SQLITE_OK;
        a->seen_ddl = 1;
        if (is_sqlite_name(arg1))
            return deny(a, "FORBIDDEN_SQL", CATALOGUE_MSG);
        return SQLITE_OK;
    case SQLITE_CREATE_INDEX:
    case SQLITE_CREATE_TEMP_INDEX:
    case SQLITE_CREATE_TRIGGER:
    case SQLITE_CREATE_TEMP_TRIGGER:
    case SQLITE_DROP_INDEX:
    case SQLITE_DROP_TEMP_INDEX:
    case SQLITE_DROP_TRIGGER:
    case SQLITE_DROP_TEMP_TRIGGER:
        if (a->seen_ddl)
            return SQLITE_OK;
        a->seen_ddl = 1;
        /* arg1 is the index or trigger, arg2 the table it belongs to */
        if (is_sqlite_name(arg1) || is_sqlite_name(arg2))
            return deny(a, "FORBIDDEN_SQL", CATALOGUE_MSG);
        return SQLITE_OK;
    case SQLITE_ALTER_TABLE:
        if (a->seen_ddl)
            return SQLITE_OK;
        a->seen_ddl = 1;
        if (is_sqlite_name(arg2))
            return deny(a, "FORBIDDEN_SQL", CATALOGUE_MSG);
        return SQLITE_OK;
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE:
        /* A CREATE/DROP/ALTER writes sqlite_master (and sqlite_sequence) through SQLite's own
         * code; any other write to a sqlite_ table, or one made by a user trigger, is the
         * user modifying the catalogue. */
        if (is_sqlite_name(arg1) && (trigger || !a->ddl))
            return deny(a, "FORBIDDEN_SQL", CATALOGUE_MSG);
        return SQLITE_OK;
    default: return SQLITE_OK;
    }
}
