/* Connections: open with the spec's pragmas, open failures told apart, the statement cache,
 * the one-statement rule. */
#include "base/error.h"
#include "sqlite/connection.h"
#include "test_support.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[64];
static char dbpath[128];

static void setup(void)
{
    gs_test_mkdtemp(tmpdir, sizeof tmpdir, "conn");
    snprintf(dbpath, sizeof dbpath, "%s/c.db", tmpdir);
}

static void teardown(void)
{
    chmod(dbpath, 0600);
    gs_test_rmtree(tmpdir);
}

TestSuite(connection, .init = setup, .fini = teardown);

static gs_conn_options writer_opts(void)
{
    gs_conn_options o = gs_test_writer_options(dbpath, 5000, 128);
    return o;
}

static gs_conn *open_ok(const gs_conn_options *o)
{
    gs_conn *c = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_conn_open(o, &c, &err), GS_OK, "%s: %s", err.code, err.message);
    return c;
}

/* The first column of a one-row trusted query, as an integer. */
static long long scalar(gs_conn *c, const char *sql)
{
    gs_stmt *st;
    gs_error err;
    cr_assert_eq(gs_conn_prepare(c, sql, strlen(sql), GS_PREP_TRUSTED, &st, &err), GS_OK, "%s",
                 err.message);
    cr_assert_eq(gs_conn_step(c, st, &err), SQLITE_ROW, "%s", err.message);
    long long v = sqlite3_column_int64(gs_stmt_sqlite(st), 0);
    gs_conn_release(c, st);
    return v;
}

static void text_of(gs_conn *c, const char *sql, char *out, size_t cap)
{
    gs_stmt *st;
    gs_error err;
    cr_assert_eq(gs_conn_prepare(c, sql, strlen(sql), GS_PREP_TRUSTED, &st, &err), GS_OK);
    cr_assert_eq(gs_conn_step(c, st, &err), SQLITE_ROW);
    snprintf(out, cap, "%s", (const char *)sqlite3_column_text(gs_stmt_sqlite(st), 0));
    gs_conn_release(c, st);
}

Test(connection, writer_and_reader_pragmas)
{
    gs_conn_options o = writer_opts();
    o.sync_level = 2;
    o.wal_autocheckpoint = 500;
    o.busy_timeout_ms = 1234;
    gs_conn *w = open_ok(&o);
    char mode[16];
    text_of(w, "PRAGMA journal_mode", mode, sizeof mode);
    cr_assert_str_eq(mode, "wal");
    cr_assert(gs_conn_wal(w));
    cr_assert_eq(scalar(w, "PRAGMA synchronous"), 2);
    cr_assert_eq(gs_conn_get_sync(w), 2);
    cr_assert_eq(scalar(w, "PRAGMA foreign_keys"), 1);
    cr_assert_eq(scalar(w, "PRAGMA busy_timeout"), 1234);
    cr_assert_eq(scalar(w, "PRAGMA wal_autocheckpoint"), 500);
    gs_error err;
    cr_assert_eq(gs_conn_exec(w, "CREATE TABLE t(x)", &err), GS_OK);
    cr_assert_eq(gs_conn_exec(w, "INSERT INTO t VALUES (1)", &err), GS_OK);

    o.role = GS_CONN_READER;
    gs_conn *r = open_ok(&o);
    cr_assert(gs_conn_wal(r));
    cr_assert_eq(scalar(r, "PRAGMA foreign_keys"), 1);
    cr_assert_eq(scalar(r, "PRAGMA synchronous"), 2);
    cr_assert_eq(scalar(r, "SELECT count(*) FROM t"), 1);
    cr_assert_eq(gs_conn_exec(r, "INSERT INTO t VALUES (2)", &err), GS_ERROR);
    cr_assert_str_eq(err.code, "QUERY_ERROR");
    cr_assert(strstr(err.message, "readonly"), "%s", err.message);

    cr_assert_eq(gs_conn_set_sync(w, 0, &err), GS_OK);
    cr_assert_eq(gs_conn_get_sync(w), 0);
    cr_assert_eq(gs_conn_set_sync(w, 9, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_SYNCHRONOUS");
    gs_conn_close(r);
    gs_conn_close(w);
}

Test(connection, synchronous_allowlist)
{
    cr_assert_eq(gs_sync_level_parse("off"), 0);
    cr_assert_eq(gs_sync_level_parse("NORMAL"), 1);
    cr_assert_eq(gs_sync_level_parse("full"), 2);
    cr_assert_eq(gs_sync_level_parse("extra"), 3);
    cr_assert_eq(gs_sync_level_parse("paranoid"), -1);
    cr_assert_eq(gs_sync_level_parse("1"), -1);
    cr_assert_eq(gs_sync_level_parse(NULL), -1);
    gs_conn_options o = writer_opts();
    o.sync_level = 7;
    gs_conn *c;
    gs_error err;
    cr_assert_eq(gs_conn_open(&o, &c, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_SYNCHRONOUS");
}

Test(connection, open_failures_are_told_apart)
{
    gs_conn_options o = writer_opts();
    gs_conn *c;
    gs_error err;
    /* missing file, creation off */
    o.create = 0;
    cr_assert_eq(gs_conn_open(&o, &c, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "DATABASE_OPEN_FAILED");
    cr_assert(strstr(err.message, dbpath), "%s", err.message);
    cr_assert(strstr(err.details, "\"missing\""), "%s", err.details);
    /* missing directory */
    char deep[192];
    snprintf(deep, sizeof deep, "%s/no/such/dir.db", tmpdir);
    o.path = deep;
    o.create = 1;
    cr_assert_eq(gs_conn_open(&o, &c, &err), GS_ERROR);
    cr_assert(strstr(err.details, "\"missing\""), "%s / %s", err.message, err.details);
    /* corrupt */
    int fd = open(dbpath, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    cr_assert(fd >= 0);
    char junk[4096];
    memset(junk, 'x', sizeof junk);
    cr_assert_eq(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    close(fd);
    o.path = dbpath;
    cr_assert_eq(gs_conn_open(&o, &c, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "DATABASE_OPEN_FAILED");
    cr_assert(strstr(err.details, "\"corrupt\""), "%s / %s", err.message, err.details);
    o.role = GS_CONN_READER;
    cr_assert_eq(gs_conn_open(&o, &c, &err), GS_ERROR);
    cr_assert(strstr(err.details, "\"corrupt\""), "%s / %s", err.message, err.details);
    /* permission: root reads anything, so as root check as the nobody user */
    unlink(dbpath);
    o.role = GS_CONN_WRITER;
    gs_conn *ok = open_ok(&o);
    gs_conn_close(ok);
    int as_root = geteuid() == 0;
    chmod(dbpath, 0);
    if (as_root) {
        chmod(tmpdir, 0755);
        cr_assert_eq(seteuid(65534), 0);
    }
    if (as_root)
        cr_assert_neq(euidaccess(dbpath, R_OK), 0, "chmod 0 must deny reading");
    cr_assert_eq(gs_conn_open(&o, &c, &err), GS_ERROR);
    cr_assert(strstr(err.details, "\"permission\""), "%s / %s", err.message, err.details);
    o.role = GS_CONN_READER;
    cr_assert_eq(gs_conn_open(&o, &c, &err), GS_ERROR);
    cr_assert(strstr(err.details, "\"permission\""), "%s / %s", err.message, err.details);
    if (as_root) {
        cr_assert_eq(seteuid(0), 0);
        chmod(dbpath, 0444);
        cr_assert_eq(seteuid(65534), 0);
    } else {
        chmod(dbpath, 0444);
    }
    o.role = GS_CONN_WRITER;
    cr_assert_eq(gs_conn_open(&o, &c, &err), GS_ERROR);
    cr_assert(strstr(err.details, "\"permission\""), "%s / %s", err.message, err.details);
    if (as_root)
        cr_assert_eq(seteuid(0), 0);
}

static gs_status prep(gs_conn *c, const char *sql, int flags, gs_error *err)
{
    gs_stmt *st;
    gs_status rc = gs_conn_prepare(c, sql, strlen(sql), flags, &st, err);
    if (rc == GS_OK)
        gs_conn_release(c, st);
    return rc;
}

Test(connection, cache_evicts_least_recently_used)
{
    gs_conn_options o = writer_opts();
    o.stmt_cache_size = 2;
    gs_conn *c = open_ok(&o);
    gs_error err;
    cr_assert_eq(prep(c, "SELECT 1", 0, &err), GS_OK);
    cr_assert_eq(prep(c, "SELECT 2", 0, &err), GS_OK);
    cr_assert_eq(gs_conn_cache_count(c), 2);
    cr_assert_eq(prep(c, "SELECT 1", 0, &err), GS_OK); /* 1 is now the most recent */
    cr_assert_eq(prep(c, "SELECT 3", 0, &err), GS_OK); /* evicts 2 */
    cr_assert_eq(gs_conn_cache_count(c), 2);
    cr_assert(gs_conn_cache_contains(c, "SELECT 1"));
    cr_assert(gs_conn_cache_contains(c, "SELECT 3"));
    cr_assert_not(gs_conn_cache_contains(c, "SELECT 2"));
    /* a failed prepare is not cached */
    cr_assert_eq(prep(c, "SELECT * FROM nowhere", 0, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "QUERY_ERROR");
    cr_assert(strstr(err.message, "no such table"), "%s", err.message);
    cr_assert_not(gs_conn_cache_contains(c, "SELECT * FROM nowhere"));
    cr_assert_eq(gs_conn_cache_count(c), 2);
    /* a cached statement gives correct results again and again */
    for (int i = 0; i < 5; i++)
        cr_assert_eq(scalar(c, "SELECT 3"), 3);
    gs_conn_close(c);
}

Test(connection, held_statement_is_not_evicted)
{
    gs_conn_options o = writer_opts();
    o.stmt_cache_size = 1;
    gs_conn *c = open_ok(&o);
    gs_error err;
    gs_stmt *a, *b;
    cr_assert_eq(gs_conn_prepare(c, "SELECT 10", 9, 0, &a, &err), GS_OK);
    cr_assert_eq(gs_conn_prepare(c, "SELECT 20", 9, 0, &b, &err), GS_OK);
    cr_assert_eq(gs_conn_step(c, a, &err), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(gs_stmt_sqlite(a), 0), 10);
    cr_assert_eq(gs_conn_step(c, b, &err), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(gs_stmt_sqlite(b), 0), 20);
    gs_conn_release(c, a);
    gs_conn_release(c, b);
    /* the same SQL held twice gets a private copy */
    cr_assert_eq(gs_conn_prepare(c, "SELECT 20", 9, 0, &a, &err), GS_OK);
    cr_assert_eq(gs_conn_prepare(c, "SELECT 20", 9, 0, &b, &err), GS_OK);
    cr_assert_neq(a, b);
    gs_conn_release(c, b);
    gs_conn_release(c, a);
    gs_conn_close(c);
}

Test(connection, caching_can_be_disabled)
{
    gs_conn_options o = writer_opts();
    o.stmt_cache_size = 0;
    gs_conn *c = open_ok(&o);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(scalar(c, "SELECT 7"), 7);
    cr_assert_eq(gs_conn_cache_count(c), 0);
    gs_conn_close(c);
}

Test(connection, one_statement_per_request)
{
    gs_conn *c = open_ok(&(gs_conn_options){.path = dbpath,
                                            .role = GS_CONN_WRITER,
                                            .create = 1,
                                            .wal = 1,
                                            .sync_level = 1,
                                            .wal_autocheckpoint = -1,
                                            .busy_timeout_ms = 1000,
                                            .stmt_cache_size = 8});
    gs_error err;
    cr_assert_eq(prep(c, "SELECT 1; SELECT 2", 0, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "QUERY_ERROR");
    cr_assert(strstr(err.message, "one statement per request"), "%s", err.message);
    cr_assert_eq(prep(c, "SELECT 1; -- trailing\n /* c */ ;  ", 0, &err), GS_OK, "%s", err.message);
    cr_assert_eq(prep(c, ";; SELECT 1", 0, &err), GS_OK, "%s", err.message);
    cr_assert_eq(prep(c, "", 0, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "QUERY_ERROR");
    cr_assert_eq(prep(c, "  -- only a comment", 0, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "QUERY_ERROR");
    cr_assert_eq(prep(c, ";", GS_PREP_TRUSTED, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "QUERY_ERROR");
    /* a trigger body holds semicolons but is one statement */
    cr_assert_eq(gs_conn_exec(c, "CREATE TABLE t(x)", &err), GS_OK);
    cr_assert_eq(
        prep(c, "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; SELECT 2; END", 0, &err),
        GS_OK, "%s", err.message);
    gs_conn_close(c);
}

Test(connection, memory_database)
{
    gs_conn_options o = writer_opts();
    o.path = ":memory:";
    gs_conn *c = open_ok(&o);
    cr_assert(gs_conn_memory(c));
    cr_assert_not(gs_conn_wal(c));
    gs_error err;
    cr_assert_eq(gs_conn_exec(c, "CREATE TABLE t(x)", &err), GS_OK);
    gs_conn_close(c);
    o.role = GS_CONN_READER;
    cr_assert_eq(gs_conn_open(&o, &c, &err), GS_ERROR);
}
