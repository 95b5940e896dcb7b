/*
 * DDL safety (spec 03 "DDL Safety"): a small tokenizer (whitespace, comments, bare and quoted
 * identifiers, string literals, punctuation) reads the head of a schema statement; the
 * refusal rules are word scans over the raw text. See ddl.h for the contract.
 */
#include "ddl.h"

#include "base/alloc.h"
#include "base/error.h"
#include "sqlite/guard.h"

#include <stdarg.h>
#include <string.h>
#include <strings.h>

#define NAME_MAX_LEN 255

enum { T_END = 0, T_WORD, T_QUOTED, T_STRING, T_PUNCT };

typedef struct tok {
    int kind;
    const char *p; /* raw text */
    size_t n;
    char name[NAME_MAX_LEN + 1]; /* T_WORD / T_QUOTED: the decoded identifier */
    int too_long;
} tok;

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int is_word_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static int is_ident_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static int is_ident_char(unsigned char c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

const char *gs_repl_ddl_skip_blank(const char *p)
{
    for (;;) {
        while (is_space((unsigned char)*p))
            p++;
        if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n')
                p++;
        } else if (p[0] == '/' && p[1] == '*') {
            const char *e = strstr(p + 2, "*/");
            p = e ? e + 2 : p + strlen(p);
        } else {
            return p;
        }
    }
}

static void put_name(tok *t, size_t *len, char c)
{
    if (*len < NAME_MAX_LEN)
        t->name[(*len)++] = c;
    else
        t->too_long = 1;
}

/* The next token at *pp; *pp moves past it. */
static void next_tok(const char **pp, tok *t)
{
    const char *p = gs_repl_ddl_skip_blank(*pp);
    memset(t, 0, sizeof *t);
    t->p = p;
    size_t len = 0;
    unsigned char c = (unsigned char)*p;
    if (!c) {
        t->kind = T_END;
    } else if (is_ident_start(c)) {
        t->kind = T_WORD;
        while (is_ident_char((unsigned char)*p))
            put_name(t, &len, *p++);
    } else if (c == '"' || c == '`' || c == '[') {
        char close = c == '[' ? ']' : (char)c;
        t->kind = T_QUOTED;
        p++;
        while (*p) {
            if (*p == close) {
                if (close != ']' && p[1] == close) { /* a doubled quote stands for itself */
                    put_name(t, &len, close);
                    p += 2;
                    continue;
                }
                p++;
                break;
            }
            put_name(t, &len, *p++);
        }
    } else if (c == '\'') {
        t->kind = T_STRING;
        p++;
        while (*p) {
            if (*p == '\'') {
                if (p[1] == '\'') {
                    p += 2;
                    continue;
                }
                p++;
                break;
            }
            p++;
        }
    } else {
        t->kind = T_PUNCT;
        p++;
    }
    t->name[len] = '\0';
    t->n = (size_t)(p - t->p);
    *pp = p;
}

static int is_kw(const tok *t, const char *kw)
{
    return t->kind == T_WORD && strcasecmp(t->name, kw) == 0;
}

static int is_name(const tok *t)
{
    return t->kind == T_WORD || t->kind == T_QUOTED;
}

static int is_punct(const tok *t, char c)
{
    return t->kind == T_PUNCT && t->p[0] == c;
}

/* Read [schema.]name at *pp into *name (schema into *schema, "" when absent). 0 when the
 * tokens are not a name. */
static int read_qualified(const char **pp, tok *schema, tok *name)
{
    tok a;
    next_tok(pp, &a);
    if (!is_name(&a))
        return 0;
    const char *save = *pp;
    tok dot;
    next_tok(pp, &dot);
    if (is_punct(&dot, '.')) {
        next_tok(pp, name);
        if (!is_name(name))
            return 0;
        *schema = a;
        return 1;
    }
    *pp = save;
    memset(schema, 0, sizeof *schema);
    *name = a;
    return 1;
}

/* Consume IF [NOT] EXISTS when it follows (not_too: NOT is required). */
static int skip_if_exists(const char **pp, int with_not)
{
    const char *save = *pp;
    tok t;
    next_tok(pp, &t);
    if (!is_kw(&t, "IF")) {
        *pp = save;
        return 1;
    }
    if (with_not) {
        next_tok(pp, &t);
        if (!is_kw(&t, "NOT"))
            return 0;
    }
    next_tok(pp, &t);
    return is_kw(&t, "EXISTS");
}

/* The first occurrence of `word` in s on word boundaries, case-insensitive; NULL if none. */
static const char *find_word(const char *s, const char *word, const char *from)
{
    size_t wl = strlen(word);
    for (const char *p = from; (p = strcasestr(p, word)) != NULL; p++) {
        if (p > s && is_word_char((unsigned char)p[-1]))
            continue;
        if (is_word_char((unsigned char)p[wl]))
            continue;
        return p;
    }
    return NULL;
}

static gs_status refuse(gs_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static gs_status refuse(gs_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gs_error_setv(err, 0, "BATCH_VALIDATION_ERROR", fmt, ap);
    va_end(ap);
    return GS_ERROR;
}

static const char ALLOWED[] = "only CREATE TABLE, ALTER TABLE ... ADD COLUMN, DROP TABLE, CREATE "
                              "[UNIQUE] INDEX and DROP INDEX can be replicated";

static int reserved_name(const char *name)
{
    return strncasecmp(name, "_sirannon", 9) == 0 || strncasecmp(name, "sqlite_", 7) == 0;
}

static int plain_identifier(const char *s)
{
    if (!s[0] || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_'))
        return 0;
    for (const char *p = s + 1; *p; p++)
        if (!is_word_char((unsigned char)*p))
            return 0;
    return 1;
}

/* A target name of the statement: schema main only, not reserved, a plain identifier when it
 * is a table. */
static gs_status check_target(const tok *schema, const tok *name, int is_table, gs_error *err)
{
    if (schema->kind != T_END && strcasecmp(schema->name, "main") != 0)
        return refuse(err,
                      "the DDL statement names schema '%s'; only the main schema is "
                      "replicated",
                      schema->name);
    if (name->too_long)
        return refuse(err, "the DDL statement names an object longer than %d bytes", NAME_MAX_LEN);
    if (reserved_name(name->name))
        return refuse(err,
                      "the DDL statement touches '%s': _sirannon and sqlite_ objects are "
                      "internal and never replicated",
                      name->name);
    if (is_table && !plain_identifier(name->name))
        return refuse(err,
                      "table name '%s' cannot be replicated: change capture needs letters, "
                      "digits and underscores, starting with a letter or underscore",
                      name->name);
    return GS_OK;
}

/* The allowlisted head; the targets are checked. */
static gs_status check_head(const char *sql, gs_error *err)
{
    const char *p = sql;
    while (is_space((unsigned char)*p))
        p++;
    if (!is_ident_start((unsigned char)*p))
        return refuse(err,
                      "the DDL statement must begin with its keyword (no leading comment); "
                      "%s",
                      ALLOWED);
    tok t, schema, name;
    next_tok(&p, &t);
    if (is_kw(&t, "CREATE")) {
        next_tok(&p, &t);
        int index = is_kw(&t, "INDEX");
        if (is_kw(&t, "UNIQUE")) {
            next_tok(&p, &t);
            index = is_kw(&t, "INDEX");
            if (!index)
                return refuse(err, "CREATE UNIQUE must be followed by INDEX; %s", ALLOWED);
        }
        if (!index && !is_kw(&t, "TABLE"))
            return refuse(err, "CREATE %.40s cannot be replicated; %s", t.name, ALLOWED);
        if (!skip_if_exists(&p, 1))
            return refuse(err, "malformed IF NOT EXISTS in the DDL statement");
        if (!read_qualified(&p, &schema, &name))
            return refuse(err, "the DDL statement does not name the %s it creates",
                          index ? "index" : "table");
        if (check_target(&schema, &name, !index, err) != GS_OK)
            return GS_ERROR;
        if (!index)
            return GS_OK;
        next_tok(&p, &t);
        if (!is_kw(&t, "ON"))
            return refuse(err, "CREATE INDEX '%s' must be followed by ON <table>", name.name);
        tok tschema, table;
        if (!read_qualified(&p, &tschema, &table))
            return refuse(err, "CREATE INDEX '%s' does not name its table", name.name);
        return check_target(&tschema, &table, 1, err);
    }
    if (is_kw(&t, "ALTER")) {
        next_tok(&p, &t);
        if (!is_kw(&t, "TABLE"))
            return refuse(err, "ALTER %.40s cannot be replicated; %s", t.name, ALLOWED);
        if (!read_qualified(&p, &schema, &name))
            return refuse(err, "the ALTER TABLE statement does not name its table");
        if (check_target(&schema, &name, 1, err) != GS_OK)
            return GS_ERROR;
        next_tok(&p, &t);
        tok col;
        next_tok(&p, &col);
        if (!is_kw(&t, "ADD") || !is_kw(&col, "COLUMN"))
            return refuse(err,
                          "ALTER TABLE '%s' can be replicated only as ADD COLUMN (write ADD "
                          "COLUMN in full; RENAME and DROP COLUMN are not replicated)",
                          name.name);
        return GS_OK;
    }
    if (is_kw(&t, "DROP")) {
        next_tok(&p, &t);
        int index = is_kw(&t, "INDEX");
        if (!index && !is_kw(&t, "TABLE"))
            return refuse(err, "DROP %.40s cannot be replicated; %s", t.name, ALLOWED);
        if (!skip_if_exists(&p, 0))
            return refuse(err, "malformed IF EXISTS in the DDL statement");
        if (!read_qualified(&p, &schema, &name))
            return refuse(err, "the DROP statement does not name what it drops");
        if (check_target(&schema, &name, !index, err) != GS_OK)
            return GS_ERROR;
        next_tok(&p, &t);
        if (t.kind != T_END)
            return refuse(err, "unexpected text after DROP %s '%s'", index ? "INDEX" : "TABLE",
                          name.name);
        return GS_OK;
    }
    return refuse(err, "'%.40s' is not a replicable DDL statement; %s", t.name, ALLOWED);
}

int gs_repl_is_ddl(const char *sql)
{
    if (!sql)
        return 0;
    gs_sql_info info;
    gs_sql_scan(sql, strlen(sql), &info);
    return gs_sql_verb_ddl(info.verb);
}

gs_status gs_repl_ddl_check(const char *sql, gs_error *err)
{
    static const char *const denied[] = {"load_extension", "ATTACH",   "randomblob",    "zeroblob",
                                         "writefile",      "readfile", "fts3_tokenizer"};
    if (!sql || !*gs_repl_ddl_skip_blank(sql))
        return refuse(err, "the DDL statement is empty");
    if (strchr(sql, ';'))
        return refuse(err, "the DDL statement contains ';': exactly one statement, without a "
                           "terminator, can be replicated");
    if (check_head(sql, err) != GS_OK)
        return GS_ERROR;
    for (const char *as = find_word(sql, "AS", sql); as; as = find_word(sql, "AS", as + 2)) {
        tok t;
        const char *p = as + 2;
        next_tok(&p, &t);
        if (is_kw(&t, "SELECT"))
            return refuse(err, "the DDL statement contains AS SELECT, which cannot be replicated "
                               "(create the table, then insert the rows)");
    }
    if (find_word(sql, "SELECT", sql))
        return refuse(err, "the DDL statement contains SELECT; a replicated schema statement "
                           "cannot hold a query");
    for (size_t i = 0; i < sizeof denied / sizeof denied[0]; i++)
        if (find_word(sql, denied[i], sql))
            return refuse(err, "the DDL statement references %s, which replication refuses",
                          denied[i]);
    gs_sql_info info;
    gs_sql_scan(sql, strlen(sql), &info);
    if (info.sirannon)
        return refuse(err, "the DDL statement names a _sirannon object; they are internal and "
                           "never replicated");
    if (info.catalogue)
        return refuse(err, "the DDL statement modifies the sqlite_ catalogue");
    return GS_OK;
}

char *gs_repl_ddl_dropped_table(const char *sql)
{
    if (!sql)
        return NULL;
    const char *p = sql;
    tok t, schema, name;
    next_tok(&p, &t);
    if (!is_kw(&t, "DROP"))
        return NULL;
    next_tok(&p, &t);
    if (!is_kw(&t, "TABLE"))
        return NULL;
    if (!skip_if_exists(&p, 0) || !read_qualified(&p, &schema, &name) || name.too_long)
        return NULL;
    if (schema.kind != T_END && strcasecmp(schema.name, "main") != 0)
        return NULL;
    next_tok(&p, &t);
    if (is_punct(&t, ';'))
        next_tok(&p, &t);
    if (t.kind != T_END)
        return NULL;
    return gs_strdup(name.name);
}

char *gs_repl_ddl_normalize(const char *sql)
{
    if (!sql)
        return NULL;
    const char *p = gs_repl_ddl_skip_blank(sql);
    size_t n = strlen(p);
    while (n > 0 && is_space((unsigned char)p[n - 1]))
        n--;
    if (n > 0 && p[n - 1] == ';') {
        n--;
        while (n > 0 && is_space((unsigned char)p[n - 1]))
            n--;
    }
    return gs_strndup(p, n);
}
