/* DDL safety (spec 03 "DDL Safety"): every allowed form, every refusal reason, the dropped
 * table of a DROP TABLE, DDL detection and the primary's normalisation. */
#include "base/alloc.h"
#include "base/error.h"
#include "repl/ddl.h"

#include <criterion/criterion.h>
#include <string.h>

static const char *const ALLOWED[] = {
    "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)",
    "create table t (a)",
    "  \n\tCREATE   TABLE\nt(a)",
    "CREATE TABLE IF NOT EXISTS t (a INTEGER NOT NULL DEFAULT 0, b TEXT CHECK (length(b) < 9))",
    "CREATE TABLE \"orders\" (id INTEGER PRIMARY KEY)",
    "CREATE TABLE main.orders (id INTEGER PRIMARY KEY)",
    "CREATE TABLE t (a, b, PRIMARY KEY (a, b)) WITHOUT ROWID",
    "CREATE TABLE t (a TEXT DEFAULT 'x -- y')",
    "ALTER TABLE t ADD COLUMN c TEXT",
    "alter table \"t\" add column c integer default 7",
    "ALTER TABLE main.t ADD COLUMN c",
    "DROP TABLE t",
    "DROP TABLE IF EXISTS t",
    "drop table if exists \"t\"",
    "DROP TABLE t -- gone",
    "CREATE INDEX idx_t_a ON t (a)",
    "CREATE INDEX IF NOT EXISTS idx_t_a ON t (a, b DESC)",
    "CREATE UNIQUE INDEX idx_t_b ON t (b)",
    "create unique index if not exists u on t(b) where b is not null",
    "DROP INDEX idx_t_a",
    "DROP INDEX IF EXISTS idx_t_a",
    "CREATE TABLE attach_log (attached_at REAL, selection TEXT)",
};

Test(repl_ddl, allowed_forms)
{
    for (size_t i = 0; i < sizeof ALLOWED / sizeof ALLOWED[0]; i++) {
        gs_error err;
        gs_error_init(&err);
        cr_expect_eq(gs_repl_ddl_check(ALLOWED[i], &err), GS_OK, "%s: %s", ALLOWED[i], err.message);
    }
}

typedef struct refusal {
    const char *sql;
    const char *reason; /* a piece of the message */
} refusal;

static const refusal REFUSED[] = {
    {"", "empty"},
    {"   -- only a comment", "empty"},
    {"CREATE TABLE t (a);", "';'"},
    {"CREATE TABLE t (a); DROP TABLE u", "';'"},
    {"CREATE TABLE t (a TEXT DEFAULT ';')", "';'"},
    {"CREATE TABLE t AS SELECT * FROM u", "AS SELECT"},
    {"create table t as\n  select 1", "AS SELECT"},
    {"CREATE TABLE t AS /* c */ SELECT 1", "AS SELECT"},
    {"CREATE INDEX i ON t (a) WHERE a IN (SELECT 1)", "SELECT"},
    {"CREATE TABLE t (a DEFAULT (load_extension('x')))", "load_extension"},
    {"CREATE TABLE t (a TEXT DEFAULT 'ATTACH')", "ATTACH"},
    {"CREATE TABLE t (a BLOB DEFAULT (randomblob(4)))", "randomblob"},
    {"CREATE TABLE t (a BLOB DEFAULT (ZEROBLOB(4)))", "zeroblob"},
    {"CREATE TABLE t (a CHECK (writefile('x', a)))", "writefile"},
    {"CREATE TABLE t (a DEFAULT (readfile('/etc/passwd')))", "readfile"},
    {"CREATE TABLE t (a DEFAULT (fts3_tokenizer('x')))", "fts3_tokenizer"},
    {"CREATE VIEW v AS SELECT 1", "CREATE VIEW"},
    {"CREATE TEMP TABLE t (a)", "CREATE TEMP"},
    {"CREATE VIRTUAL TABLE f USING fts5(a)", "CREATE VIRTUAL"},
    {"CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1 END", "CREATE TRIGGER"},
    {"CREATE UNIQUE TABLE t (a)", "UNIQUE"},
    {"ALTER TABLE t RENAME TO u", "ADD COLUMN"},
    {"ALTER TABLE t ADD c TEXT", "ADD COLUMN"},
    {"ALTER TABLE t DROP COLUMN c", "ADD COLUMN"},
    {"DROP VIEW v", "DROP VIEW"},
    {"DROP TRIGGER tr", "DROP TRIGGER"},
    {"DROP TABLE t extra", "unexpected text"},
    {"INSERT INTO t VALUES (1)", "not a replicable"},
    {"PRAGMA writable_schema = 1", "not a replicable"},
    {"-- leading\nCREATE TABLE t (a)", "must begin"},
    {"/* c */ CREATE TABLE t (a)", "must begin"},
    {"CREATE TABLE _sirannon_changes (a)", "internal"},
    {"CREATE TABLE _SIRANNON_x (a)", "internal"},
    {"CREATE TABLE sqlite_evil (a)", "internal"},
    {"DROP TABLE _sirannon_meta", "internal"},
    {"DROP INDEX sqlite_autoindex_t_1", "internal"},
    {"CREATE INDEX i ON sqlite_master (name)", "internal"},
    {"CREATE INDEX i ON _sirannon_changes (hlc)", "internal"},
    {"ALTER TABLE _sirannon_peer_state ADD COLUMN x", "internal"},
    {"CREATE TABLE t (a REFERENCES _sirannon_changes (seq))", "_sirannon"},
    {"CREATE TABLE temp.t (a)", "schema"},
    {"ALTER TABLE aux.t ADD COLUMN c", "schema"},
    {"CREATE TABLE \"my table\" (a)", "letters, digits"},
    {"CREATE TABLE", "does not name"},
    {"CREATE INDEX i t (a)", "ON <table>"},
    {"CREATE TABLE IF EXISTS t (a)", "IF NOT EXISTS"},
};

Test(repl_ddl, refusals_name_their_reason)
{
    for (size_t i = 0; i < sizeof REFUSED / sizeof REFUSED[0]; i++) {
        gs_error err;
        gs_error_init(&err);
        cr_expect_eq(gs_repl_ddl_check(REFUSED[i].sql, &err), GS_ERROR, "accepted: %s",
                     REFUSED[i].sql);
        cr_expect_str_eq(err.code, "BATCH_VALIDATION_ERROR", "%s: %s", REFUSED[i].sql, err.code);
        cr_expect_not_null(strstr(err.message, REFUSED[i].reason), "%s: message '%s' lacks '%s'",
                           REFUSED[i].sql, err.message, REFUSED[i].reason);
    }
    gs_error err;
    gs_error_init(&err);
    cr_expect_eq(gs_repl_ddl_check(NULL, &err), GS_ERROR);
    cr_expect_str_eq(err.code, "BATCH_VALIDATION_ERROR");
}

Test(repl_ddl, dropped_table)
{
    static const struct {
        const char *sql;
        const char *table; /* NULL: none */
    } cases[] = {
        {"DROP TABLE t", "t"},
        {"drop table if exists orders", "orders"},
        {"DROP TABLE \"Orders\"", "Orders"},
        {"DROP TABLE [odd]", "odd"},
        {"DROP TABLE `q\"\"x`", "q\"\"x"},
        {"DROP TABLE \"a\"\"b\"", "a\"b"},
        {"DROP TABLE main.t", "t"},
        {"DROP TABLE t;", "t"},
        {"  DROP TABLE t ; ", "t"},
        {"DROP TABLE temp.t", NULL},
        {"DROP TABLE t; DROP TABLE u", NULL},
        {"DROP INDEX t", NULL},
        {"CREATE TABLE t (a)", NULL},
        {"DROP TABLE", NULL},
        {"DROP TABLE t junk", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *t = gs_repl_ddl_dropped_table(cases[i].sql);
        if (cases[i].table) {
            cr_expect_not_null(t, "%s", cases[i].sql);
            if (t)
                cr_expect_str_eq(t, cases[i].table, "%s", cases[i].sql);
        } else {
            cr_expect_null(t, "%s gave %s", cases[i].sql, t ? t : "");
        }
        gs_free(t);
    }
    cr_expect_null(gs_repl_ddl_dropped_table(NULL));
}

Test(repl_ddl, is_ddl)
{
    cr_expect(gs_repl_is_ddl("CREATE TABLE t (a)"));
    cr_expect(gs_repl_is_ddl("  -- c\n /* d */ alter TABLE t ADD COLUMN b"));
    cr_expect(gs_repl_is_ddl("drop index i"));
    cr_expect(gs_repl_is_ddl("CREATE VIEW v AS SELECT 1"));
    cr_expect_not(gs_repl_is_ddl("INSERT INTO t VALUES (1)"));
    cr_expect_not(gs_repl_is_ddl("SELECT 'CREATE TABLE'"));
    cr_expect_not(gs_repl_is_ddl("-- CREATE TABLE t\nSELECT 1"));
    cr_expect_not(gs_repl_is_ddl(""));
    cr_expect_not(gs_repl_is_ddl(NULL));
}

Test(repl_ddl, normalize_strips_comments_and_one_terminator)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"CREATE TABLE t (a)", "CREATE TABLE t (a)"},
        {"  CREATE TABLE t (a);  \n", "CREATE TABLE t (a)"},
        {"-- why\n/* what */ CREATE TABLE t (a) ;", "CREATE TABLE t (a)"},
        {"CREATE TABLE t (a);;", "CREATE TABLE t (a);"},
        {";", ""},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *n = gs_repl_ddl_normalize(cases[i].in);
        cr_assert_not_null(n);
        cr_expect_str_eq(n, cases[i].out, "'%s' -> '%s'", cases[i].in, n);
        gs_free(n);
    }
    cr_expect_null(gs_repl_ddl_normalize(NULL));
    /* a normalised client statement passes; the doubled terminator still does not */
    char *n = gs_repl_ddl_normalize("CREATE TABLE t (a);\n");
    gs_error err;
    gs_error_init(&err);
    cr_expect_eq(gs_repl_ddl_check(n, &err), GS_OK, "%s", err.message);
    gs_free(n);
    n = gs_repl_ddl_normalize("CREATE TABLE t (a);;");
    cr_expect_eq(gs_repl_ddl_check(n, &err), GS_ERROR);
    gs_free(n);
}
