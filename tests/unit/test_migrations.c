/* Schema migrations: the normative checksum, sets from memory, files and directories, applying,
 * failing half way, checksums (mismatch and backfill), baselines, rollback, status, the
 * user_version mirror, the writer path (deadlines, read-only) and two appliers at once.
 * Every wait is bounded. */
#include "base/alloc.h"
#include "base/error.h"
#include "db/database.h"
#include "db/database_internal.h"
#include "db/migrations.h"
#include "db/registry.h"
#include "test_support.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[64];
static char dbpath[128];

static void setup(void)
{
    gs_test_mkdtemp(tmpdir, sizeof tmpdir, "mig");
    snprintf(dbpath, sizeof dbpath, "%s/m.db", tmpdir);
}

static void teardown(void)
{
    gs_test_rmtree(tmpdir);
}

TestSuite(migrations, .init = setup, .fini = teardown);

/* ---- helpers ---- */

static sqlite3 *open_raw(void)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
                 SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
    return db;
}

static int64_t scalar(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    int64_t v = -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int table_exists(sqlite3 *db, const char *name)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='%s'",
             name);
    return scalar(db, sql) == 1;
}

static gs_migration_set *make_set(const gs_migration_def *defs, size_t n)
{
    gs_migration_set *set = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_migration_set_new(defs, n, &set, &err), GS_OK, "%s: %s", err.code, err.message);
    return set;
}

static const char *set_error(const gs_migration_def *defs, size_t n, gs_error *err)
{
    gs_migration_set *set = NULL;
    gs_error_init(err);
    cr_assert_eq(gs_migration_set_new(defs, n, &set, err), GS_ERROR);
    cr_assert_null(set);
    return err->code;
}

static const gs_migration_def three[] = {
    {1, "create_users", "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);",
     "DROP TABLE users;", 0},
    {2, "seed_users",
     "INSERT INTO users (name) VALUES ('ada');\nINSERT INTO users (name) VALUES "
     "('alan');",
     "DELETE FROM users;", 0},
    {3, "create_orders", "CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER);",
     "DROP TABLE orders;", 0},
};

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

/* ---- checksum ---- */

static void ck(const char *sql, const char *want)
{
    char out[GS_MIGRATION_CHECKSUM_SIZE];
    gs_migration_checksum(sql, strlen(sql), out);
    cr_assert_str_eq(out, want, "checksum of \"%s\"", sql);
}

Test(migrations, checksum_vectors)
{
    /* FNV-1a 64 computed by hand from the definition (offset basis cbf29ce484222325, prime
     * 100000001b3); "foobar" is also the published FNV-1a 64 test vector. */
    ck("", "cbf29ce484222325");
    ck("a", "af63dc4c8601ec8c");
    ck("foobar", "85944171f73967e8");
    ck("SELECT 1;", "72d121e7c77fa18b");
    ck("CREATE TABLE users (id INTEGER PRIMARY KEY);", "6a8f4358b233fe97");
    ck("a\nb", "e5beb1190415e670");
}

Test(migrations, checksum_normalisation)
{
    ck("a\r\nb", "e5beb1190415e670");               /* CRLF -> LF */
    ck("a\rb", "e5beb1190415e670");                 /* lone CR -> LF */
    ck("  \t\na\nb\r\n\r\n  ", "e5beb1190415e670"); /* surrounding whitespace */
    ck("\xef\xbb\xbf"
       "a\xc2\xa0",
       "af63dc4c8601ec8c");             /* BOM and no-break space trim */
    ck(" \r\n\t ", "cbf29ce484222325"); /* only whitespace: the empty hash */
    ck("a \nb", "c1d20582ab6d3e38");    /* inner whitespace is kept */
    char out[GS_MIGRATION_CHECKSUM_SIZE];
    gs_migration_checksum("a\r\r\nb", 5, out); /* CR then CRLF: two line ends */
    char want[GS_MIGRATION_CHECKSUM_SIZE];
    gs_migration_checksum("a\n\nb", 4, want);
    cr_assert_str_eq(out, want);
    /* the length is honoured (no NUL needed) */
    gs_migration_checksum("ab", 1, out);
    cr_assert_str_eq(out, "af63dc4c8601ec8c");
}

/* ---- sets ---- */

Test(migrations, set_sorts_and_copies)
{
    gs_migration_def d[] = {
        {3, "c", "SELECT 3", NULL, 0},
        {1, "a", "SELECT 1", "SELECT 0", 0},
        {2, "b", "SELECT 2", NULL, 0},
    };
    gs_migration_set *set = make_set(d, 3);
    cr_assert_eq(set->count, 3);
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(set->items[i].version, (int64_t)i + 1);
    cr_assert_str_eq(set->items[0].down, "SELECT 0");
    cr_assert_null(set->items[1].down);
    cr_assert_neq(set->items[0].up, d[1].up); /* copied */
    char want[GS_MIGRATION_CHECKSUM_SIZE];
    gs_migration_checksum("SELECT 1", 8, want);
    cr_assert_str_eq(set->items[0].checksum, want);
    gs_migration_set_free(set);
}

Test(migrations, set_validation)
{
    gs_error err;
    gs_migration_def v0[] = {{0, "a", "SELECT 1", NULL, 0}};
    cr_assert_str_eq(set_error(v0, 1, &err), "MIGRATION_VALIDATION_ERROR");
    gs_migration_def vbig[] = {{2147483648LL, "a", "SELECT 1", NULL, 0}};
    cr_assert_str_eq(set_error(vbig, 1, &err), "MIGRATION_VALIDATION_ERROR");
    gs_migration_def vmax[] = {{2147483647LL, "a", "SELECT 1", NULL, 0}};
    gs_migration_set_free(make_set(vmax, 1));
    gs_migration_def badname[] = {{1, "bad-name", "SELECT 1", NULL, 0}};
    cr_assert_str_eq(set_error(badname, 1, &err), "MIGRATION_VALIDATION_ERROR");
    cr_assert(strstr(err.details, "\"version\":1"));
    gs_migration_def noname[] = {{1, "", "SELECT 1", NULL, 0}};
    cr_assert_str_eq(set_error(noname, 1, &err), "MIGRATION_VALIDATION_ERROR");
    gs_migration_def emptyup[] = {{1, "a", " \n\t", NULL, 0}};
    cr_assert_str_eq(set_error(emptyup, 1, &err), "MIGRATION_VALIDATION_ERROR");
    gs_migration_def nullup[] = {{1, "a", NULL, NULL, 0}};
    cr_assert_str_eq(set_error(nullup, 1, &err), "MIGRATION_VALIDATION_ERROR");
    gs_migration_def emptydown[] = {{1, "a", "SELECT 1", "  ", 0}};
    cr_assert_str_eq(set_error(emptydown, 1, &err), "MIGRATION_VALIDATION_ERROR");
    gs_migration_def dup[] = {{1, "a", "SELECT 1", NULL, 0}, {1, "b", "SELECT 2", NULL, 0}};
    cr_assert_str_eq(set_error(dup, 2, &err), "MIGRATION_DUPLICATE_VERSION");
    cr_assert(strstr(err.message, "'a'") && strstr(err.message, "'b'"), "%s", err.message);
    /* baselines */
    gs_migration_def b_high[] = {{5, "base", "SELECT 1", NULL, 5}};
    cr_assert_str_eq(set_error(b_high, 1, &err), "MIGRATION_VALIDATION_ERROR");
    gs_migration_def b_neg[] = {{5, "base", "SELECT 1", NULL, -2}};
    cr_assert_str_eq(set_error(b_neg, 1, &err), "MIGRATION_VALIDATION_ERROR");
    gs_migration_def b_inside[] = {{2, "a", "SELECT 1", NULL, 0},
                                   {4, "inside", "SELECT 1", NULL, 0},
                                   {5, "base", "SELECT 1", NULL, 3}};
    cr_assert_str_eq(set_error(b_inside, 3, &err), "MIGRATION_VALIDATION_ERROR");
    cr_assert(strstr(err.details, "\"version\":4"), "%s", err.details);
    gs_migration_def b_ok[] = {{2, "a", "SELECT 1", NULL, 0},
                               {3, "b", "SELECT 1", NULL, 0},
                               {5, "base", "SELECT 1", NULL, 3},
                               {6, "c", "SELECT 1", NULL, 0}};
    gs_migration_set_free(make_set(b_ok, 4));
}

Test(migrations, set_baseline_option)
{
    gs_migration_def d[] = {{1, "a", "SELECT 1", NULL, 0},
                            {2, "b", "SELECT 1", NULL, 0},
                            {3, "base", "SELECT 1", NULL, 0}};
    gs_migration_set *set = make_set(d, 3);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_migration_set_baseline(set, 9, 1, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_VALIDATION_ERROR");
    cr_assert_eq(gs_migration_set_baseline(set, 3, 1, &err), GS_ERROR); /* 2 lies inside */
    cr_assert_eq(set->items[2].baseline_through, 0);                    /* unchanged */
    cr_assert_eq(gs_migration_set_baseline(set, 3, 2, &err), GS_OK);
    cr_assert_eq(set->items[2].baseline_through, 2);
    gs_migration_set_free(set);
}

/* ---- files ---- */

static const char *files_error(const gs_migration_file *f, size_t n, gs_error *err)
{
    gs_migration_set *set = NULL;
    gs_error_init(err);
    cr_assert_eq(gs_migrations_from_files(f, n, &set, err), GS_ERROR);
    cr_assert_null(set);
    return err->code;
}

#define F(name, sql)                                                                               \
    {                                                                                              \
        name, sql, sizeof(sql) - 1                                                                 \
    }

Test(migrations, from_files)
{
    gs_migration_file f[] = {
        F("migrations/002_add_orders.up.sql", "CREATE TABLE orders (id INTEGER);"),
        F("C:\\sql\\001_create_users.up.sql", "CREATE TABLE users (id INTEGER);"),
        F("001_create_users.down.sql", "DROP TABLE users;"),
        F("/abs/path/10_later.up.sql", "SELECT 10;"),
    };
    gs_migration_set *set = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_migrations_from_files(f, 4, &set, &err), GS_OK, "%s", err.message);
    cr_assert_eq(set->count, 3);
    cr_assert_eq(set->items[0].version, 1);
    cr_assert_str_eq(set->items[0].name, "create_users");
    cr_assert_str_eq(set->items[0].down, "DROP TABLE users;");
    cr_assert_eq(set->items[1].version, 2);
    cr_assert_null(set->items[1].down);
    cr_assert_eq(set->items[2].version, 10);
    cr_assert_str_eq(set->items[2].name, "later");
    gs_migration_set_free(set);
}

Test(migrations, from_files_errors)
{
    gs_error err;
    gs_migration_file nomatch[] = {F("create_users.up.sql", "SELECT 1")};
    cr_assert_str_eq(files_error(nomatch, 1, &err), "MIGRATION_VALIDATION_ERROR");
    gs_migration_file nomatch2[] = {F("001_create-users.up.sql", "SELECT 1")};
    cr_assert_str_eq(files_error(nomatch2, 1, &err), "MIGRATION_VALIDATION_ERROR");
    gs_migration_file nomatch3[] = {F("001_x.sideways.sql", "SELECT 1")};
    cr_assert_str_eq(files_error(nomatch3, 1, &err), "MIGRATION_VALIDATION_ERROR");
    gs_migration_file noname[] = {F("001_.up.sql", "SELECT 1")};
    cr_assert_str_eq(files_error(noname, 1, &err), "MIGRATION_VALIDATION_ERROR");
    gs_migration_file zero[] = {F("000_zero.up.sql", "SELECT 1")};
    cr_assert_str_eq(files_error(zero, 1, &err), "MIGRATION_VALIDATION_ERROR");
    gs_migration_file huge[] = {F("99999999999_big.up.sql", "SELECT 1")};
    cr_assert_str_eq(files_error(huge, 1, &err), "MIGRATION_VALIDATION_ERROR");
    gs_migration_file empty[] = {F("001_a.up.sql", " \r\n ")};
    cr_assert_str_eq(files_error(empty, 1, &err), "MIGRATION_VALIDATION_ERROR");
    gs_migration_file nul[] = {{"001_a.up.sql", "SELECT\0 1", 9}};
    cr_assert_str_eq(files_error(nul, 1, &err), "MIGRATION_VALIDATION_ERROR");
    gs_migration_file noup[] = {F("001_a.up.sql", "SELECT 1"), F("002_b.down.sql", "SELECT 2")};
    cr_assert_str_eq(files_error(noup, 2, &err), "MIGRATION_VALIDATION_ERROR");
    cr_assert(strstr(err.message, "up"), "%s", err.message);
    cr_assert(strstr(err.details, "\"version\":2"), "%s", err.details);
    gs_migration_file collide[] = {F("001_a.up.sql", "SELECT 1"), F("1_b.up.sql", "SELECT 2")};
    cr_assert_str_eq(files_error(collide, 2, &err), "MIGRATION_DUPLICATE_VERSION");
    gs_migration_file twice[] = {F("x/001_a.up.sql", "SELECT 1"), F("y/001_a.up.sql", "SELECT 1")};
    cr_assert_str_eq(files_error(twice, 2, &err), "MIGRATION_DUPLICATE_VERSION");
    gs_migration_file nullname[] = {{NULL, "SELECT 1", 8}};
    cr_assert_str_eq(files_error(nullname, 1, &err), "MIGRATION_VALIDATION_ERROR");
}

Test(migrations, load_dir)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s/sql", tmpdir);
    cr_assert_eq(mkdir(dir, 0755), 0);
    write_file(dir, "001_create_users.up.sql", "CREATE TABLE users (id INTEGER);\n");
    write_file(dir, "001_create_users.down.sql", "DROP TABLE users;\n");
    write_file(dir, "002_add_name.up.sql", "ALTER TABLE users ADD COLUMN name TEXT;\r\n");
    write_file(dir, "README.md", "not a migration");
    write_file(dir, ".003_hidden.up.sql.swp", "editor junk");
    char sub[300];
    snprintf(sub, sizeof sub, "%s/old.sql", dir); /* a directory named like a file: ignored */
    cr_assert_eq(mkdir(sub, 0755), 0);
    gs_migration_set *set = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_migrations_load_dir(dir, &set, &err), GS_OK, "%s", err.message);
    cr_assert_eq(set->count, 2);
    cr_assert_str_eq(set->items[0].name, "create_users");
    cr_assert_not_null(set->items[0].down);
    cr_assert_null(set->items[1].down);
    char want[GS_MIGRATION_CHECKSUM_SIZE];
    gs_migration_checksum("ALTER TABLE users ADD COLUMN name TEXT;", 39, want);
    cr_assert_str_eq(set->items[1].checksum, want);
    gs_migration_set_free(set);

    /* a .sql file that does not follow the convention */
    write_file(dir, "notes.sql", "SELECT 1;");
    cr_assert_eq(gs_migrations_load_dir(dir, &set, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_VALIDATION_ERROR");
    cr_assert(strstr(err.message, "notes.sql"), "%s", err.message);
    char p[300];
    snprintf(p, sizeof p, "%s/notes.sql", dir);
    unlink(p);
    /* an empty file */
    write_file(dir, "003_empty.up.sql", "\n\n");
    cr_assert_eq(gs_migrations_load_dir(dir, &set, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_VALIDATION_ERROR");
    snprintf(p, sizeof p, "%s/003_empty.up.sql", dir);
    unlink(p);
    /* a down without its up */
    write_file(dir, "004_orphan.down.sql", "SELECT 1;");
    cr_assert_eq(gs_migrations_load_dir(dir, &set, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_VALIDATION_ERROR");
    snprintf(p, sizeof p, "%s/004_orphan.down.sql", dir);
    unlink(p);
    /* a version under two names */
    write_file(dir, "002_other.up.sql", "SELECT 1;");
    cr_assert_eq(gs_migrations_load_dir(dir, &set, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_DUPLICATE_VERSION");
}

Test(migrations, load_dir_path_rules)
{
    gs_migration_set *set = NULL;
    gs_error err;
    gs_error_init(&err);
    char dir[256];
    snprintf(dir, sizeof dir, "%s/../x", tmpdir);
    cr_assert_eq(gs_migrations_load_dir(dir, &set, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_VALIDATION_ERROR");
    cr_assert(strstr(err.message, ".."), "%s", err.message);
    cr_assert_eq(gs_migrations_load_dir("..", &set, &err), GS_ERROR);
    cr_assert_eq(gs_migrations_load_dir("a\\..\\b", &set, &err), GS_ERROR);
    cr_assert_eq(gs_migrations_load_dir("sql\n", &set, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_VALIDATION_ERROR");
    cr_assert_eq(gs_migrations_load_dir("a\x7f", &set, &err), GS_ERROR);
    cr_assert_eq(gs_migrations_load_dir("", &set, &err), GS_ERROR);
    snprintf(dir, sizeof dir, "%s/missing", tmpdir);
    cr_assert_eq(gs_migrations_load_dir(dir, &set, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_VALIDATION_ERROR");
    /* names with dots inside are fine ("a..b" is not a segment of its own) */
    snprintf(dir, sizeof dir, "%s/a..b", tmpdir);
    cr_assert_eq(mkdir(dir, 0755), 0);
    cr_assert_eq(gs_migrations_load_dir(dir, &set, &err), GS_OK, "%s", err.message);
    cr_assert_eq(set->count, 0);
    gs_migration_set_free(set);
}

/* ---- applying on a connection ---- */

Test(migrations, apply_all_then_nothing)
{
    sqlite3 *db = open_raw();
    gs_migration_set *set = make_set(three, 3);
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_migrate_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK, "%s",
                 err.message);
    cr_assert_eq(r.done_count, 3);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(r.done[i].version, (int64_t)i + 1);
        cr_assert_str_eq(r.done[i].checksum, set->items[i].checksum);
    }
    cr_assert_eq(r.user_version, 3);
    cr_assert_eq(scalar(db, "PRAGMA user_version"), 3);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM users"), 2);
    cr_assert(table_exists(db, "orders"));
    cr_assert_eq(scalar(db, "SELECT count(*) FROM _sirannon_migrations"), 3);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM _sirannon_migrations WHERE checksum IS NULL"), 0);
    /* applied_at is Unix seconds with a fraction, close to now */
    int64_t at = scalar(db, "SELECT CAST(applied_at AS INTEGER) FROM _sirannon_migrations "
                            "WHERE version = 1");
    cr_assert(llabs(at - (int64_t)time(NULL)) < 60, "applied_at %lld", (long long)at);
    gs_migration_report_free(&r);

    cr_assert_eq(gs_migrate_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK);
    cr_assert_eq(r.done_count, 0);
    cr_assert_eq(r.skipped, 3);
    cr_assert_eq(r.user_version, 3);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM users"), 2); /* nothing ran twice */
    gs_migration_report_free(&r);
    gs_migration_set_free(set);
    sqlite3_close(db);
}

Test(migrations, apply_to_target)
{
    sqlite3 *db = open_raw();
    gs_migration_set *set = make_set(three, 3);
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_error err;
    cr_assert_eq(gs_migrate_conn(db, "t", set, 2, &r, &err), GS_OK);
    cr_assert_eq(r.done_count, 2);
    cr_assert_eq(scalar(db, "PRAGMA user_version"), 2);
    cr_assert(!table_exists(db, "orders"));
    gs_migration_report_free(&r);
    cr_assert_eq(gs_migrate_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK);
    cr_assert_eq(r.done_count, 1);
    cr_assert_eq(r.done[0].version, 3);
    gs_migration_report_free(&r);
    gs_migration_set_free(set);
    sqlite3_close(db);
}

Test(migrations, failure_half_way_keeps_previous_version)
{
    sqlite3 *db = open_raw();
    gs_migration_def d[] = {
        three[0],
        three[1],
        {3, "broken",
         "CREATE TABLE half (x INTEGER);\nINSERT INTO users (name) VALUES ('ghost');\n"
         "INSERT INTO no_such_table VALUES (1);",
         NULL, 0},
        {4, "after", "CREATE TABLE after_broken (x);", NULL, 0},
    };
    gs_migration_set *set = make_set(d, 4);
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_migrate_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_ERROR");
    cr_assert(strstr(err.details, "\"version\":3"), "%s", err.details);
    cr_assert(strstr(err.message, "3_broken") && strstr(err.message, "no_such_table") &&
                  strstr(err.message, "statement 3") && strstr(err.message, "version 2"),
              "%s", err.message);
    /* 1 and 2 stay applied with their rows; nothing of 3 or 4 */
    cr_assert_eq(r.done_count, 2);
    cr_assert_eq(scalar(db, "PRAGMA user_version"), 2);
    cr_assert_eq(scalar(db, "SELECT max(version) FROM _sirannon_migrations"), 2);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM users"), 2);
    cr_assert(!table_exists(db, "half"));
    cr_assert(!table_exists(db, "after_broken"));
    cr_assert(sqlite3_get_autocommit(db));
    gs_migration_report_free(&r);
    gs_migration_set_free(set);
    sqlite3_close(db);
}

Test(migrations, transaction_control_refused)
{
    sqlite3 *db = open_raw();
    gs_migration_def d[] = {
        {1, "sneaky", "CREATE TABLE a (x);\n/* c */ COMMIT;\nCREATE TABLE b (x);", NULL, 0}};
    gs_migration_set *set = make_set(d, 1);
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_error err;
    cr_assert_eq(gs_migrate_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_ERROR");
    cr_assert(strstr(err.message, "transaction"), "%s", err.message);
    cr_assert(!table_exists(db, "a") && !table_exists(db, "b"));
    cr_assert(!table_exists(db, "_sirannon_migrations")); /* rolled back with it */
    gs_migration_report_free(&r);
    gs_migration_set_free(set);
    sqlite3_close(db);
}

Test(migrations, checksum_mismatch_and_line_endings)
{
    sqlite3 *db = open_raw();
    gs_migration_set *set = make_set(three, 2);
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_error err;
    cr_assert_eq(gs_migrate_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK);
    gs_migration_report_free(&r);
    gs_migration_set_free(set);

    /* the same SQL with CRLF line ends and extra surrounding space: no mismatch */
    gs_migration_def same[] = {three[0],
                               {2, "seed_users",
                                "\r\n  INSERT INTO users (name) VALUES ('ada');\r\nINSERT INTO "
                                "users (name) VALUES ('alan');  \r\n",
                                NULL, 0},
                               three[2]};
    set = make_set(same, 3);
    cr_assert_eq(gs_migrate_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK, "%s",
                 err.message);
    cr_assert_eq(r.done_count, 1);
    gs_migration_report_free(&r);
    gs_migration_set_free(set);

    /* an applied migration edited afterwards */
    gs_migration_def edited[] = {
        three[0],
        {2, "seed_users", "INSERT INTO users (name) VALUES ('grace');", NULL, 0},
        three[2],
        {4, "more", "CREATE TABLE more (x);", NULL, 0},
    };
    set = make_set(edited, 4);
    cr_assert_eq(gs_migrate_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_CHECKSUM_MISMATCH");
    cr_assert(strstr(err.details, "\"version\":2"), "%s", err.details);
    cr_assert(!table_exists(db, "more")); /* nothing ran */
    cr_assert_eq(r.done_count, 0);
    gs_migration_report_free(&r);
    gs_migration_set_free(set);
    sqlite3_close(db);
}

Test(migrations, null_checksum_backfilled)
{
    sqlite3 *db = open_raw();
    gs_migration_set *set = make_set(three, 3);
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_error err;
    cr_assert_eq(gs_migrate_conn(db, "t", set, 2, &r, &err), GS_OK);
    gs_migration_report_free(&r);
    /* a history written by a version that kept no checksum */
    cr_assert_eq(
        sqlite3_exec(db, "UPDATE _sirannon_migrations SET checksum = NULL", NULL, NULL, NULL),
        SQLITE_OK);
    cr_assert_eq(gs_migrate_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK);
    cr_assert_eq(r.backfilled, 2);
    cr_assert_eq(r.done_count, 1);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM _sirannon_migrations WHERE checksum IS NULL"), 0);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT checksum FROM _sirannon_migrations WHERE version=1",
                                    -1, &st, NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), set->items[0].checksum);
    sqlite3_finalize(st);
    gs_migration_report_free(&r);
    gs_migration_set_free(set);
    sqlite3_close(db);
}

Test(migrations, old_table_without_checksum_column)
{
    sqlite3 *db = open_raw();
    cr_assert_eq(sqlite3_exec(db,
                              "CREATE TABLE _sirannon_migrations (version INTEGER PRIMARY KEY, "
                              "name TEXT NOT NULL, applied_at REAL NOT NULL DEFAULT 0);"
                              "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);"
                              "INSERT INTO _sirannon_migrations (version, name) VALUES (1, "
                              "'create_users');",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    gs_migration_set *set = make_set(three, 3);
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_error err;
    cr_assert_eq(gs_migrate_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK, "%s",
                 err.message);
    cr_assert_eq(r.backfilled, 1);
    cr_assert_eq(r.done_count, 2);
    cr_assert_eq(scalar(db, "PRAGMA user_version"), 3);
    gs_migration_report_free(&r);
    gs_migration_set_free(set);
    sqlite3_close(db);
}

/* ---- baselines ---- */

static const gs_migration_def with_baseline[] = {
    {1, "a", "CREATE TABLE a (x);", "DROP TABLE a;", 0},
    {2, "b", "CREATE TABLE b (x);", "DROP TABLE b;", 0},
    {3, "c", "CREATE TABLE c (x);", "DROP TABLE c;", 0},
    {10, "squashed", "CREATE TABLE a (x); CREATE TABLE b (x); CREATE TABLE c (x);", NULL, 3},
    {11, "d", "CREATE TABLE d (x);", "DROP TABLE d;", 0},
};

Test(migrations, baseline_on_empty_history)
{
    sqlite3 *db = open_raw();
    gs_migration_set *set = make_set(with_baseline, 5);
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_error err;
    cr_assert_eq(gs_migrate_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK, "%s",
                 err.message);
    cr_assert_eq(r.done_count, 2);
    cr_assert_eq(r.done[0].version, 10);
    cr_assert_eq(r.done[1].version, 11);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM _sirannon_migrations"), 2);
    cr_assert(table_exists(db, "a") && table_exists(db, "c") && table_exists(db, "d"));
    cr_assert_eq(scalar(db, "PRAGMA user_version"), 11);
    gs_migration_report_free(&r);
    /* again: nothing; 1..3 are superseded, never pending */
    cr_assert_eq(gs_migrate_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK);
    cr_assert_eq(r.done_count, 0);
    gs_migration_report_free(&r);
    cr_assert_eq(gs_migration_status_conn(db, set, &r, &err), GS_OK);
    cr_assert_eq(r.pending_count, 0);
    cr_assert_eq(r.row_count, 5);
    cr_assert_eq(r.rows[0].state, GS_MIG_SUPERSEDED);
    cr_assert_eq(r.rows[3].state, GS_MIG_APPLIED);
    gs_migration_report_free(&r);
    gs_migration_set_free(set);
    sqlite3_close(db);
}

Test(migrations, baseline_on_history_at_through)
{
    sqlite3 *db = open_raw();
    gs_migration_set *old = make_set(with_baseline, 3); /* 1..3, the history before squashing */
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_error err;
    cr_assert_eq(gs_migrate_conn(db, "t", old, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK);
    gs_migration_report_free(&r);
    gs_migration_set_free(old);

    /* the new set drops nothing but squashes: the baseline is skipped, 11 applies */
    gs_migration_set *set = make_set(with_baseline, 5);
    cr_assert_eq(gs_migrate_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK, "%s",
                 err.message);
    cr_assert_eq(r.done_count, 1);
    cr_assert_eq(r.done[0].version, 11);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM _sirannon_migrations WHERE version = 10"), 0);
    cr_assert_eq(scalar(db, "PRAGMA user_version"), 11);
    gs_migration_report_free(&r);
    gs_migration_set_free(set);
    sqlite3_close(db);
}

Test(migrations, baseline_gap_and_bridge)
{
    sqlite3 *db = open_raw();
    gs_migration_set *old = make_set(with_baseline, 1); /* history at 1 */
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_error err;
    cr_assert_eq(gs_migrate_conn(db, "t", old, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK);
    gs_migration_report_free(&r);
    gs_migration_set_free(old);

    /* the squashed set without 2 and 3: a gap */
    gs_migration_def squashed_only[] = {with_baseline[0], with_baseline[3], with_baseline[4]};
    gs_migration_set *set = make_set(squashed_only, 3);
    cr_assert_eq(gs_migrate_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_BASELINE_GAP");
    cr_assert(strstr(err.details, "\"version\":10"), "%s", err.details);
    cr_assert_eq(r.done_count, 0);
    cr_assert(!table_exists(db, "d"));
    gs_migration_report_free(&r);
    /* status reports the gap instead of failing */
    cr_assert_eq(gs_migration_status_conn(db, set, &r, &err), GS_OK);
    cr_assert_str_eq(r.pending_err.code, "MIGRATION_BASELINE_GAP");
    gs_migration_report_free(&r);
    gs_migration_set_free(set);

    /* with the bridging migrations present: 2, 3, then 11; the baseline itself is skipped */
    set = make_set(with_baseline, 5);
    cr_assert_eq(gs_migrate_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK, "%s",
                 err.message);
    cr_assert_eq(r.done_count, 3);
    cr_assert_eq(r.done[0].version, 2);
    cr_assert_eq(r.done[1].version, 3);
    cr_assert_eq(r.done[2].version, 11);
    cr_assert_eq(scalar(db, "PRAGMA user_version"), 11);
    gs_migration_report_free(&r);
    gs_migration_set_free(set);
    sqlite3_close(db);
}

/* ---- rollback ---- */

Test(migrations, rollback_latest_and_to)
{
    sqlite3 *db = open_raw();
    gs_migration_set *set = make_set(three, 3);
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_error err;
    cr_assert_eq(gs_migrate_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK);
    gs_migration_report_free(&r);

    cr_assert_eq(gs_rollback_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK);
    cr_assert_eq(r.done_count, 1);
    cr_assert_eq(r.done[0].version, 3);
    cr_assert(!table_exists(db, "orders"));
    cr_assert_eq(scalar(db, "PRAGMA user_version"), 2);
    cr_assert_eq(r.user_version, 2);
    gs_migration_report_free(&r);

    cr_assert_eq(gs_migrate_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK);
    gs_migration_report_free(&r);
    cr_assert_eq(gs_rollback_conn(db, "t", set, 1, &r, &err), GS_OK);
    cr_assert_eq(r.done_count, 2);
    cr_assert_eq(r.done[0].version, 3); /* descending */
    cr_assert_eq(r.done[1].version, 2);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM users"), 0);
    cr_assert_eq(scalar(db, "PRAGMA user_version"), 1);
    gs_migration_report_free(&r);

    cr_assert_eq(gs_rollback_conn(db, "t", set, 0, &r, &err), GS_OK);
    cr_assert_eq(r.done_count, 1);
    cr_assert(!table_exists(db, "users"));
    cr_assert_eq(scalar(db, "PRAGMA user_version"), 0);
    cr_assert_eq(scalar(db, "SELECT count(*) FROM _sirannon_migrations"), 0);
    gs_migration_report_free(&r);
    /* nothing left */
    cr_assert_eq(gs_rollback_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK);
    cr_assert_eq(r.done_count, 0);
    gs_migration_report_free(&r);
    cr_assert_eq(gs_rollback_conn(db, "t", set, -5, &r, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_VALIDATION_ERROR");
    gs_migration_report_free(&r);
    gs_migration_set_free(set);
    sqlite3_close(db);
}

Test(migrations, rollback_no_down_and_failing_down)
{
    sqlite3 *db = open_raw();
    gs_migration_def d[] = {
        three[0],
        {2, "no_down", "CREATE TABLE x (a);", NULL, 0},
        {3, "bad_down", "CREATE TABLE y (a);", "DROP TABLE y; DROP TABLE not_there;", 0},
    };
    gs_migration_set *set = make_set(d, 3);
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_error err;
    cr_assert_eq(gs_migrate_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK);
    gs_migration_report_free(&r);

    /* reversing 3 and 2: 2 has no down, so nothing runs at all */
    cr_assert_eq(gs_rollback_conn(db, "t", set, 1, &r, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_NO_DOWN");
    cr_assert(strstr(err.details, "\"version\":2"), "%s", err.details);
    cr_assert(table_exists(db, "y"));
    cr_assert_eq(scalar(db, "PRAGMA user_version"), 3);
    gs_migration_report_free(&r);

    /* the latest has a down that fails half way: rolled back, still at 3 */
    cr_assert_eq(gs_rollback_conn(db, "t", set, GS_MIGRATION_NO_TARGET, &r, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_ROLLBACK_ERROR");
    cr_assert(strstr(err.details, "\"version\":3"), "%s", err.details);
    cr_assert(table_exists(db, "y"));
    cr_assert_eq(scalar(db, "SELECT max(version) FROM _sirannon_migrations"), 3);
    cr_assert_eq(scalar(db, "PRAGMA user_version"), 3);
    gs_migration_report_free(&r);

    /* a version applied but absent from the set has no down either */
    gs_migration_set *partial = make_set(d, 2);
    cr_assert_eq(gs_rollback_conn(db, "t", partial, GS_MIGRATION_NO_TARGET, &r, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_NO_DOWN");
    gs_migration_report_free(&r);
    cr_assert_eq(gs_rollback_conn(db, "t", NULL, GS_MIGRATION_NO_TARGET, &r, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_NO_DOWN");
    gs_migration_report_free(&r);
    gs_migration_set_free(partial);
    gs_migration_set_free(set);
    sqlite3_close(db);
}

/* ---- status ---- */

Test(migrations, status_reports_and_writes_nothing)
{
    sqlite3 *db = open_raw();
    gs_migration_set *set = make_set(three, 3);
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_error err;
    /* a fresh file: no table, everything pending, and status creates nothing */
    cr_assert_eq(gs_migration_status_conn(db, set, &r, &err), GS_OK);
    cr_assert_eq(r.table_exists, 0);
    cr_assert_eq(r.row_count, 3);
    cr_assert_eq(r.pending_count, 3);
    cr_assert_eq(r.rows[0].state, GS_MIG_PENDING);
    cr_assert_str_eq(r.rows[0].checksum, set->items[0].checksum);
    cr_assert(!table_exists(db, "_sirannon_migrations"));
    gs_migration_report_free(&r);

    cr_assert_eq(gs_migrate_conn(db, "t", set, 2, &r, &err), GS_OK);
    gs_migration_report_free(&r);
    cr_assert_eq(sqlite3_exec(db,
                              "INSERT INTO _sirannon_migrations (version, name, checksum) VALUES "
                              "(7, 'foreign', 'abc');"
                              "UPDATE _sirannon_migrations SET checksum = '0000000000000000' "
                              "WHERE version = 2",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    cr_assert_eq(gs_migration_status_conn(db, set, &r, &err), GS_OK);
    cr_assert_eq(r.table_exists, 1);
    cr_assert_eq(r.user_version, 2);
    cr_assert_eq(r.row_count, 4);
    cr_assert_eq(r.rows[0].state, GS_MIG_APPLIED);
    cr_assert(r.rows[0].applied_at > 1e9);
    cr_assert_eq(r.rows[1].state, GS_MIG_MODIFIED);
    cr_assert_eq(r.rows[2].state, GS_MIG_PENDING);
    cr_assert_eq(r.rows[3].version, 7);
    cr_assert_eq(r.rows[3].state, GS_MIG_NOT_IN_SET);
    cr_assert_str_eq(r.rows[3].name, "foreign");
    cr_assert_eq(r.pending_count, 1);
    cr_assert_str_eq(r.pending_err.code, "");
    gs_migration_report_free(&r);
    /* without a set: the history alone */
    cr_assert_eq(gs_migration_status_conn(db, NULL, &r, &err), GS_OK);
    cr_assert_eq(r.row_count, 3);
    cr_assert_eq(r.rows[0].state, GS_MIG_NOT_IN_SET);
    gs_migration_report_free(&r);
    cr_assert_str_eq(gs_migration_state_name(GS_MIG_SUPERSEDED), "superseded");
    gs_migration_set_free(set);
    sqlite3_close(db);
}

/* ---- through a database's writer ---- */

static void sleep_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    int ms = sqlite3_value_int(argv[0]);
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    sqlite3_result_int(ctx, ms);
}

/* Register test_sleep(ms) on the writer connection, on the writer thread. */
static gs_status add_sleep(void *user, gs_conn *conn, gs_buf *out, gs_error *err)
{
    (void)user;
    (void)out;
    if (sqlite3_create_function(gs_conn_db(conn), "test_sleep", 1, SQLITE_UTF8, NULL, sleep_fn,
                                NULL, NULL) != SQLITE_OK)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "create_function failed");
    return GS_OK;
}

typedef struct flag {
    pthread_mutex_t m;
    pthread_cond_t c;
    int done;
    gs_status st;
} flag;

static void flag_done(void *user, const gs_db_reply *reply)
{
    flag *f = user;
    pthread_mutex_lock(&f->m);
    f->done = 1;
    f->st = reply->status;
    pthread_cond_broadcast(&f->c);
    pthread_mutex_unlock(&f->m);
}

static void install_sleep(gs_database *db)
{
    flag f = {.m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER};
    gs_error err;
    cr_assert_eq(gs_db_writer_call(db, add_sleep, NULL, flag_done, &f, &err), GS_OK);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 20;
    pthread_mutex_lock(&f.m);
    while (!f.done && pthread_cond_timedwait(&f.c, &f.m, &until) == 0)
        ;
    int done = f.done;
    pthread_mutex_unlock(&f.m);
    cr_assert(done && f.st == GS_OK);
}

static gs_database *open_db(const gs_db_options *o)
{
    gs_db_options def;
    if (!o) {
        gs_db_options_default(&def);
        def.read_pool_size = 1;
        o = &def;
    }
    gs_database *db = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_open("m", dbpath, o, &db, &err), GS_OK, "%s", err.message);
    return db;
}

Test(migrations, db_migrate_status_rollback)
{
    gs_database *db = open_db(NULL);
    gs_migration_set *set = make_set(three, 3);
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_migrate(db, GS_MIGRATE_UP, set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK,
                 "%s", err.message);
    cr_assert_eq(r.done_count, 3);
    gs_migration_report_free(&r);
    cr_assert_eq(gs_db_migrate(db, GS_MIGRATE_STATUS, set, 0, &r, &err), GS_OK);
    cr_assert_eq(r.row_count, 3);
    cr_assert_eq(r.user_version, 3);
    gs_migration_report_free(&r);
    cr_assert_eq(gs_db_migrate(db, GS_MIGRATE_ROLLBACK, set, 1, &r, &err), GS_OK);
    cr_assert_eq(r.done_count, 2);
    gs_migration_report_free(&r);
    /* a failing migration through the writer carries its code and version */
    gs_migration_def bad[] = {three[0], {2, "bad", "SELECT * FROM nowhere;", NULL, 0}};
    gs_migration_set *bset = make_set(bad, 2);
    cr_assert_eq(gs_db_migrate(db, GS_MIGRATE_UP, bset, GS_MIGRATION_NO_TARGET, &r, &err),
                 GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_ERROR");
    cr_assert(strstr(err.details, "\"version\":2"), "%s", err.details);
    gs_migration_report_free(&r);
    gs_migration_set_free(bset);
    /* the database still serves writes afterwards: nothing was left open on the writer */
    cr_assert_eq(gs_db_migrate(db, GS_MIGRATE_UP, set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK);
    cr_assert_eq(r.done_count, 2);
    gs_migration_report_free(&r);
    gs_db_close(db);
    cr_assert_eq(gs_db_migrate(db, GS_MIGRATE_UP, set, GS_MIGRATION_NO_TARGET, &r, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "DATABASE_CLOSED");
    gs_migration_report_free(&r);
    gs_db_free(db);
    gs_migration_set_free(set);
}

Test(migrations, db_migrate_outlives_write_deadline)
{
    gs_db_options o;
    gs_db_options_default(&o);
    o.read_pool_size = 1;
    o.write_timeout_ms = 40; /* the reaper answers WRITER_WORKER_TIMEOUT after 80 ms */
    gs_database *db = open_db(&o);
    install_sleep(db);
    gs_migration_def d[] = {{1, "slow", "CREATE TABLE s (x); SELECT test_sleep(400);", NULL, 0}};
    gs_migration_set *set = make_set(d, 1);
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_migrate(db, GS_MIGRATE_UP, set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK,
                 "%s: %s", err.code, err.message);
    cr_assert_eq(r.done_count, 1);
    cr_assert(r.done[0].duration_ms >= 350, "%.1f ms", r.done[0].duration_ms);
    gs_migration_report_free(&r);
    gs_db_close(db);
    gs_db_free(db);
    sqlite3 *raw = open_raw();
    cr_assert_eq(scalar(raw, "PRAGMA user_version"), 1);
    sqlite3_close(raw);
    gs_migration_set_free(set);
}

Test(migrations, db_migrate_read_only_skips)
{
    sqlite3 *raw = open_raw(); /* the file must exist */
    sqlite3_exec(raw, "CREATE TABLE keep (x)", NULL, NULL, NULL);
    sqlite3_close(raw);
    gs_db_options o;
    gs_db_options_default(&o);
    o.read_only = 1;
    o.read_pool_size = 1;
    gs_database *db = open_db(&o);
    gs_migration_set *set = make_set(three, 3);
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_migrate(db, GS_MIGRATE_UP, set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK);
    cr_assert_eq(r.read_only, 1);
    cr_assert_eq(r.done_count, 0);
    cr_assert_eq(gs_db_migrate(db, GS_MIGRATE_ROLLBACK, set, 0, &r, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "READ_ONLY");
    gs_migration_report_free(&r);
    gs_db_close(db);
    gs_db_free(db);
    raw = open_raw();
    cr_assert(!table_exists(raw, "_sirannon_migrations"));
    sqlite3_close(raw);
    gs_migration_set_free(set);
}

/* ---- concurrency ---- */

typedef struct applier {
    gs_registry *reg;
    const gs_migration_set *set;
    gs_migration_report r;
    gs_error err;
    gs_status st;
} applier;

static void *apply_thread(void *arg)
{
    applier *a = arg;
    gs_database *db = gs_registry_acquire(a->reg, "m", &a->err);
    if (!db) {
        a->st = GS_ERROR;
        return NULL;
    }
    a->st = gs_db_migrate(db, GS_MIGRATE_UP, a->set, GS_MIGRATION_NO_TARGET, &a->r, &a->err);
    gs_registry_release(a->reg, db);
    return NULL;
}

static void join_bounded(pthread_t t)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30;
    cr_assert_eq(pthread_timedjoin_np(t, NULL, &until), 0, "an applier did not finish in 30 s");
}

Test(migrations, two_appliers_on_one_file)
{
    gs_migration_def d[] = {
        {1, "slow_users", "CREATE TABLE users (id INTEGER PRIMARY KEY); SELECT test_sleep(200);",
         NULL, 0},
        {2, "seed", "INSERT INTO users DEFAULT VALUES; SELECT test_sleep(50);", NULL, 0},
        {3, "more", "INSERT INTO users DEFAULT VALUES;", NULL, 0},
    };
    gs_migration_set *set = make_set(d, 3);
    applier a[2];
    pthread_t th[2];
    gs_db_options o;
    gs_db_options_default(&o);
    o.read_pool_size = 1;
    for (int i = 0; i < 2; i++) {
        memset(&a[i], 0, sizeof a[i]);
        gs_error_init(&a[i].err);
        gs_migration_report_init(&a[i].r);
        a[i].reg = gs_registry_new(NULL);
        a[i].set = set;
        cr_assert_eq(gs_registry_open(a[i].reg, "m", dbpath, &o, &a[i].err), GS_OK, "%s",
                     a[i].err.message);
        gs_database *db = gs_registry_acquire(a[i].reg, "m", &a[i].err);
        install_sleep(db);
        gs_registry_release(a[i].reg, db);
    }
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, apply_thread, &a[i]), 0);
    for (int i = 0; i < 2; i++)
        join_bounded(th[i]);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(a[i].st, GS_OK, "applier %d: %s: %s", i, a[i].err.code, a[i].err.message);
    /* every version ran exactly once, by one applier or the other */
    cr_assert_eq(a[0].r.done_count + a[1].r.done_count, 3);
    sqlite3 *raw = open_raw();
    cr_assert_eq(scalar(raw, "SELECT count(*) FROM _sirannon_migrations"), 3);
    cr_assert_eq(scalar(raw, "SELECT count(*) FROM users"), 2);
    cr_assert_eq(scalar(raw, "PRAGMA user_version"), 3);
    sqlite3_close(raw);
    for (int i = 0; i < 2; i++) {
        gs_migration_report_free(&a[i].r);
        gs_registry_free(a[i].reg);
    }
    gs_migration_set_free(set);
}

Test(migrations, lock_held_elsewhere_is_concurrent)
{
    gs_db_options o;
    gs_db_options_default(&o);
    o.read_pool_size = 1;
    o.busy_timeout_ms = 50;
    gs_database *db = open_db(&o);
    sqlite3 *holder = open_raw();
    cr_assert_eq(sqlite3_exec(holder, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    gs_migration_set *set = make_set(three, 3);
    gs_migration_report r;
    gs_migration_report_init(&r);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_migrate(db, GS_MIGRATE_UP, set, GS_MIGRATION_NO_TARGET, &r, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_CONCURRENT");
    cr_assert(strstr(err.message, "busy_timeout (50 ms)"), "%s", err.message);
    cr_assert_eq(r.done_count, 0);
    gs_migration_report_free(&r);
    /* the lock goes: the next attempt applies everything */
    cr_assert_eq(sqlite3_exec(holder, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    cr_assert_eq(gs_db_migrate(db, GS_MIGRATE_UP, set, GS_MIGRATION_NO_TARGET, &r, &err), GS_OK,
                 "%s", err.message);
    cr_assert_eq(r.done_count, 3);
    gs_migration_report_free(&r);
    sqlite3_close(holder);
    gs_db_close(db);
    gs_db_free(db);
    gs_migration_set_free(set);
}

/* ---- registry migrations ---- */

Test(migrations, registry_applies_on_every_open)
{
    char tenants[256], path[300];
    snprintf(tenants, sizeof tenants, "%s/tenants", tmpdir);
    cr_assert_eq(mkdir(tenants, 0755), 0);
    gs_migration_set *set = make_set(three, 3);
    gs_registry_options ro;
    gs_registry_options_default(&ro);
    ro.tenant_dir = tenants;
    ro.tenant_create = 1;
    ro.tenant_options.read_pool_size = 1;
    ro.migrations = set;
    gs_registry *reg = gs_registry_new(&ro);
    cr_assert_not_null(reg);
    gs_migration_set_free(set); /* the registry keeps its own copy */
    cr_assert_eq(gs_registry_migrations(reg)->count, 3);
    gs_error err;
    gs_error_init(&err);
    /* a tenant auto-opened through acquire */
    gs_database *db = gs_registry_acquire(reg, "acme", &err);
    cr_assert_not_null(db, "%s", err.message);
    gs_registry_release(reg, db);
    /* a direct open */
    gs_db_options o;
    gs_db_options_default(&o);
    o.read_pool_size = 1;
    cr_assert_eq(gs_registry_open(reg, "main", dbpath, &o, &err), GS_OK, "%s", err.message);
    gs_registry_free(reg);
    sqlite3 *raw = open_raw();
    cr_assert_eq(scalar(raw, "PRAGMA user_version"), 3);
    cr_assert_eq(scalar(raw, "SELECT count(*) FROM users"), 2);
    sqlite3_close(raw);
    snprintf(path, sizeof path, "%s/acme.db", tenants);
    cr_assert_eq(sqlite3_open_v2(path, &raw, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    cr_assert_eq(scalar(raw, "SELECT max(version) FROM _sirannon_migrations"), 3);
    sqlite3_close(raw);

    /* no set: no migration step, no tracking table */
    reg = gs_registry_new(NULL);
    cr_assert_null(gs_registry_migrations(reg));
    snprintf(path, sizeof path, "%s/plain.db", tmpdir);
    cr_assert_eq(gs_registry_open(reg, "plain", path, &o, &err), GS_OK);
    gs_registry_free(reg);
    cr_assert_eq(sqlite3_open_v2(path, &raw, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    cr_assert(!table_exists(raw, "_sirannon_migrations"));
    sqlite3_close(raw);
}

Test(migrations, registry_migration_failure_leaves_unregistered)
{
    gs_migration_def bad[] = {three[0], {2, "bad", "CREATE TABLE t (x); SELECT nope();", NULL, 0}};
    gs_migration_set *set = make_set(bad, 2);
    gs_registry_options ro;
    gs_registry_options_default(&ro);
    ro.migrations = set;
    gs_registry *reg = gs_registry_new(&ro);
    gs_migration_set_free(set);
    gs_db_options o;
    gs_db_options_default(&o);
    o.read_pool_size = 1;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_registry_open(reg, "main", dbpath, &o, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_ERROR"); /* unchanged */
    cr_assert(strstr(err.details, "\"version\":2"), "%s", err.details);
    cr_assert_null(gs_registry_acquire(reg, "main", &err));
    cr_assert_str_eq(err.code, "DATABASE_NOT_FOUND");
    /* the next open retries (and fails the same way): the id was left free */
    cr_assert_eq(gs_registry_open(reg, "main", dbpath, &o, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "MIGRATION_ERROR");
    /* a read-only open skips the set */
    o.read_only = 1;
    cr_assert_eq(gs_registry_open(reg, "main", dbpath, &o, &err), GS_OK, "%s", err.message);
    gs_registry_free(reg);
    sqlite3 *raw = open_raw();
    cr_assert_eq(scalar(raw, "PRAGMA user_version"), 1); /* 1 applied, 2 rolled back */
    cr_assert(!table_exists(raw, "t"));
    sqlite3_close(raw);
}
