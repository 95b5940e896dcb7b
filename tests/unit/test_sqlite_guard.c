/* The reserved-identifier guard: the lexical rules and the authorizer, through a real
 * connection. */
#include "base/error.h"
#include "sqlite/connection.h"
#include "sqlite/guard.h"
#include "test_support.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int lexical_forbidden(const char *sql)
{
    gs_error err;
    gs_error_init(&err);
    gs_status st = gs_guard_check_sql(sql, strlen(sql), NULL, &err);
    if (st != GS_OK)
        cr_assert_str_eq(err.code, "FORBIDDEN_SQL");
    return st != GS_OK;
}

Test(guard, lexical_sirannon_in_every_quoting_form)
{
    cr_assert(lexical_forbidden("SELECT * FROM _sirannon_changes"));
    cr_assert(lexical_forbidden("select * from _SIRANNON_META"));
    cr_assert(lexical_forbidden("SELECT * FROM \"_sirannon_changes\""));
    cr_assert(lexical_forbidden("SELECT * FROM `_Sirannon_changes`"));
    cr_assert(lexical_forbidden("SELECT * FROM [_sirannon_changes]"));
    cr_assert(lexical_forbidden("SELECT * FROM main._sirannon_changes"));
    cr_assert(lexical_forbidden("DELETE FROM _sirannon"));
    cr_assert(lexical_forbidden("CREATE TABLE t AS SELECT * FROM _sirannon_x"));
    cr_assert(lexical_forbidden("SELECT 1; DROP TABLE _sirannon_changes"));
}

Test(guard, lexical_false_positives_pass)
{
    cr_assert_not(lexical_forbidden("SELECT * FROM t WHERE name = '_sirannon_changes'"));
    cr_assert_not(lexical_forbidden("SELECT 'it''s _sirannon' AS x"));
    cr_assert_not(lexical_forbidden("SELECT x_sirannon FROM t"));
    cr_assert_not(lexical_forbidden("SELECT * FROM orders_sirannon_archive"));
    cr_assert_not(lexical_forbidden("SELECT 1 /* _sirannon_changes */"));
    cr_assert_not(lexical_forbidden("SELECT 1 -- _sirannon_changes\n"));
    cr_assert_not(lexical_forbidden("SELECT * FROM sqlite_master"));
    cr_assert_not(lexical_forbidden("SELECT :_sirannon_param"));
    cr_assert_not(lexical_forbidden("SELECT attach FROM attachments"));
    cr_assert_not(lexical_forbidden("SELECT * FROM my_sqlite_backup"));
}

Test(guard, lexical_attach_detach_and_writable_schema)
{
    cr_assert(lexical_forbidden("ATTACH DATABASE 'x.db' AS x"));
    cr_assert(lexical_forbidden("  \n /* c */ attach 'x' AS y"));
    cr_assert(lexical_forbidden("DETACH x"));
    cr_assert(lexical_forbidden("SELECT 1; ATTACH 'x' AS y"));
    cr_assert(lexical_forbidden("SELECT * FROM pragma_writable_schema"));
    cr_assert(lexical_forbidden("REINDEX sqlite_autoindex_t_1"));
    cr_assert(lexical_forbidden("VACUUM sqlite_x"));
    cr_assert_not(lexical_forbidden("REINDEX t"));
    cr_assert(lexical_forbidden("CREATE INDEX i ON sqlite_stat1(tbl)"));
    cr_assert(lexical_forbidden("CREATE INDEX i ON main.\"sqlite_stat1\" (tbl)"));
    cr_assert(lexical_forbidden("DROP TABLE IF EXISTS sqlite_stat1"));
    cr_assert(lexical_forbidden("ALTER TABLE sqlite_sequence RENAME TO s"));
    cr_assert(
        lexical_forbidden("CREATE TRIGGER x AFTER INSERT ON sqlite_stat1 BEGIN SELECT 1; END"));
    cr_assert(lexical_forbidden("DELETE FROM sqlite_master"));
    cr_assert(lexical_forbidden("UPDATE sqlite_sequence SET seq = 0"));
    cr_assert(lexical_forbidden("update OR replace main.sqlite_sequence SET seq = 0"));
    cr_assert(lexical_forbidden("INSERT INTO sqlite_stat1 VALUES (1, 2, 3)"));
    cr_assert(lexical_forbidden("INSERT OR IGNORE INTO \"sqlite_stat1\"(tbl) VALUES (1)"));
    cr_assert(lexical_forbidden("REPLACE INTO sqlite_sequence VALUES ('t', 1)"));
    cr_assert(lexical_forbidden("WITH x(n) AS (SELECT 1) DELETE FROM sqlite_sequence"));
    cr_assert(lexical_forbidden("SELECT 1; DELETE FROM sqlite_sequence"));
    cr_assert_not(lexical_forbidden("INSERT INTO t SELECT name FROM sqlite_master"));
    cr_assert_not(
        lexical_forbidden("INSERT INTO t(a) VALUES ((SELECT count(*) FROM sqlite_master))"));
    cr_assert_not(lexical_forbidden("UPDATE t SET a = (SELECT 1 FROM sqlite_master)"));
    cr_assert_not(lexical_forbidden("DELETE FROM t WHERE a IN (SELECT name FROM sqlite_master)"));
    cr_assert_not(lexical_forbidden(
        "WITH s AS (SELECT name FROM sqlite_master) INSERT INTO t SELECT * FROM s"));
    cr_assert_not(lexical_forbidden("SELECT replace(name, 'a', 'b') FROM sqlite_master"));
    cr_assert_not(lexical_forbidden("CREATE VIEW v AS SELECT * FROM sqlite_master"));
    cr_assert_not(lexical_forbidden("CREATE TABLE t AS SELECT * FROM sqlite_master"));
    cr_assert_not(lexical_forbidden("CREATE TABLE t(a DEFAULT 'sqlite_x', b)"));
    cr_assert_not(lexical_forbidden("CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO l "
                                    "SELECT name FROM sqlite_master; END"));
    cr_assert_not(lexical_forbidden("VACUUM"));
}

Test(guard, verbs_and_groupability)
{
    gs_sql_info info;
    gs_sql_scan(" -- c\n /* d */ insert into t values (1)", 39, &info);
    cr_assert_eq(info.verb, GS_SQL_INSERT);
    cr_assert(gs_sql_verb_groupable(info.verb));
    const char *s = "Replace INTO t VALUES (1)";
    gs_sql_scan(s, strlen(s), &info);
    cr_assert_eq(info.verb, GS_SQL_REPLACE);
    s = "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x";
    gs_sql_scan(s, strlen(s), &info);
    cr_assert_eq(info.verb, GS_SQL_WITH);
    cr_assert_not(gs_sql_verb_groupable(info.verb));
    s = "CREATE TABLE t(x)";
    gs_sql_scan(s, strlen(s), &info);
    cr_assert(gs_sql_verb_ddl(info.verb));
    s = "  ;; -- nothing\n";
    gs_sql_scan(s, strlen(s), &info);
    cr_assert_eq(info.verb, GS_SQL_EMPTY);
    s = "UPDATEX t";
    gs_sql_scan(s, strlen(s), &info);
    cr_assert_eq(info.verb, GS_SQL_OTHER);
}

/* ---- the authorizer, through a connection ---- */

static char tmpdir[64];
static gs_conn *conn;

static void setup(void)
{
    gs_test_mkdtemp(tmpdir, sizeof tmpdir, "guard");
    char path[128];
    snprintf(path, sizeof path, "%s/g.db", tmpdir);
    gs_conn_options o = gs_test_writer_options(path, 1000, 16);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_conn_open(&o, &conn, &err), GS_OK, "%s", err.message);
}

static void teardown(void)
{
    gs_conn_close(conn);
    conn = NULL;
    gs_test_rmtree(tmpdir);
}

/* Run a statement as a user (guarded) or internally; return GS_OK or the error code. */
static gs_status run(const char *sql, int trusted, gs_error *err)
{
    gs_stmt *st;
    gs_error_init(err);
    if (gs_conn_prepare(conn, sql, strlen(sql), trusted ? GS_PREP_TRUSTED : 0, &st, err) != GS_OK)
        return GS_ERROR;
    int rc;
    while ((rc = gs_conn_step(conn, st, err)) == SQLITE_ROW)
        ;
    gs_conn_release(conn, st);
    return rc == SQLITE_DONE ? GS_OK : GS_ERROR;
}

static void ok(const char *sql)
{
    gs_error err;
    cr_assert_eq(run(sql, 0, &err), GS_OK, "'%s' refused: %s %s", sql, err.code, err.message);
}

static void forbidden(const char *sql)
{
    gs_error err;
    cr_assert_eq(run(sql, 0, &err), GS_ERROR, "'%s' was allowed", sql);
    cr_assert_str_eq(err.code, "FORBIDDEN_SQL", "'%s' -> %s: %s", sql, err.code, err.message);
}

TestSuite(authorizer, .init = setup, .fini = teardown);

Test(authorizer, ordinary_ddl_and_dml_pass)
{
    ok("CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT UNIQUE, x_sirannon INT)");
    ok("INSERT INTO t(v, x_sirannon) VALUES ('_sirannon', 1)");
    ok("CREATE INDEX t_x ON t(x_sirannon)");
    ok("SELECT * FROM sqlite_master");
    ok("SELECT name FROM sqlite_schema WHERE type = 'table'");
    ok("SELECT * FROM sqlite_sequence");
    ok("INSERT INTO t(v) SELECT name FROM sqlite_master WHERE name = 't_x'");
    ok("ALTER TABLE t ADD COLUMN w");
    ok("ALTER TABLE t RENAME TO t2");
    ok("REINDEX t2");
    ok("ANALYZE");
    ok("PRAGMA table_info(t2)");
    ok("CREATE TRIGGER trg AFTER INSERT ON t2 BEGIN UPDATE t2 SET w = 1 WHERE id = new.id; END");
    ok("INSERT INTO t2(v) VALUES ('b')");
    ok("DROP TABLE t2");
}

Test(authorizer, catalogue_writes_are_forbidden)
{
    ok("CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, v UNIQUE)");
    ok("INSERT INTO t(v) VALUES (1)");
    forbidden("INSERT INTO sqlite_master VALUES ('table','x','x',0,'')");
    forbidden("UPDATE sqlite_sequence SET seq = 0");
    forbidden("DELETE FROM sqlite_sequence");
    forbidden("REPLACE INTO sqlite_sequence VALUES ('t', 5)");
    forbidden("WITH x AS (SELECT 1) DELETE FROM sqlite_sequence");
    ok("ANALYZE");
    forbidden("INSERT INTO sqlite_stat1 VALUES ('t', NULL, '1')");
    forbidden("DROP TABLE sqlite_stat1");
    forbidden("CREATE INDEX s1 ON sqlite_stat1(tbl)");
    forbidden("ALTER TABLE sqlite_stat1 RENAME TO st");
    forbidden("CREATE TRIGGER s AFTER INSERT ON sqlite_stat1 BEGIN SELECT 1; END");
    forbidden("REINDEX sqlite_autoindex_t_1");
    /* a user trigger that writes the catalogue trips when it fires */
    ok("CREATE TRIGGER evil AFTER INSERT ON t BEGIN DELETE FROM sqlite_sequence; END");
    forbidden("INSERT INTO t(v) VALUES (2)");
}

Test(authorizer, attach_detach_and_writable_schema)
{
    forbidden("ATTACH DATABASE ':memory:' AS other");
    forbidden("DETACH other");
    forbidden("PRAGMA writable_schema");
    forbidden("PRAGMA writable_schema = ON");
    forbidden("pragma main.WRITABLE_SCHEMA=1");
    forbidden("PRAGMA \"writable_schema\" = 1");
    forbidden("SELECT * FROM pragma_writable_schema");
    forbidden("SELECT * FROM _sirannon_changes");
}

Test(authorizer, transaction_control_is_refused)
{
    static const char *const stmts[] = {"BEGIN",    "BEGIN IMMEDIATE", "COMMIT",
                                        "ROLLBACK", "SAVEPOINT a",     "RELEASE a"};
    for (size_t i = 0; i < sizeof stmts / sizeof stmts[0]; i++) {
        gs_error err;
        cr_assert_eq(run(stmts[i], 0, &err), GS_ERROR, "%s allowed", stmts[i]);
        cr_assert_str_eq(err.code, "QUERY_ERROR");
        cr_assert(strstr(err.message, "transaction"), "%s", err.message);
    }
    gs_error err;
    cr_assert_eq(run("BEGIN", 1, &err), GS_OK, "internal statements are trusted");
    cr_assert_eq(run("ROLLBACK", 1, &err), GS_OK);
}

Test(authorizer, internal_work_and_cdc_triggers_bypass_the_guard)
{
    gs_error err;
    cr_assert_eq(run("CREATE TABLE _sirannon_changes(seq INTEGER PRIMARY KEY, t TEXT)", 1, &err),
                 GS_OK, "%s", err.message);
    ok("CREATE TABLE items(id INTEGER PRIMARY KEY, v)");
    cr_assert_eq(run("CREATE TRIGGER _sirannon_trg_items_insert AFTER INSERT ON items BEGIN "
                     "INSERT INTO _sirannon_changes(t) VALUES ('items'); END",
                     1, &err),
                 GS_OK, "%s", err.message);
    ok("INSERT INTO items(v) VALUES (1)");
    ok("INSERT INTO items(v) VALUES (2)");
    forbidden("SELECT count(*) FROM _sirannon_changes");
    gs_stmt *st;
    cr_assert_eq(gs_conn_prepare(conn, "SELECT count(*) FROM _sirannon_changes", 38,
                                 GS_PREP_TRUSTED, &st, &err),
                 GS_OK, "%s", err.message);
    cr_assert_eq(gs_conn_step(conn, st, &err), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(gs_stmt_sqlite(st), 0), 2);
    gs_conn_release(conn, st);
}

Test(authorizer, trusted_cached_statement_is_not_reused_unguarded)
{
    gs_error err;
    cr_assert_eq(run("PRAGMA writable_schema", 1, &err), GS_OK, "%s", err.message);
    cr_assert(gs_conn_cache_contains(conn, "PRAGMA writable_schema"));
    forbidden("PRAGMA writable_schema");
}
