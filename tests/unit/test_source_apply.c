/*
 * The local side of a source (core/src/source/source_apply.c) against a real database: the
 * catalogue is created and read back, a local table is created from the remote CREATE under
 * its local name and its primary key read, a batch applies upserts and deletes atomically
 * with its positions, a failing batch leaves nothing behind, and user SQL cannot reach the
 * catalogue.
 */
#include "base/alloc.h"
#include "base/error.h"
#include "db/database.h"
#include "source/source_apply.h"

#include "test_support.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <string.h>

static char dir[256];
static char path[512];
static gs_database *db;

static void setup(void)
{
    gs_test_mkdtemp(dir, sizeof dir, "source-apply");
    snprintf(path, sizeof path, "%s/main.db", dir);
    gs_db_options o;
    gs_db_options_default(&o);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_db_open("main", path, &o, &db, &err), GS_OK, "%s", err.message);
}

static void teardown(void)
{
    if (db) {
        gs_db_close(db);
        gs_db_free(db);
        db = NULL;
    }
    gs_test_rmtree(dir);
}

TestSuite(source_apply, .init = setup, .fini = teardown);

/* One integer from the file (a separate read connection). */
static long long scalar(const char *sql)
{
    sqlite3 *c;
    cr_assert_eq(sqlite3_open_v2(path, &c, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(c, sql, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(c));
    long long v = -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(c);
    return v;
}

typedef struct answer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    gs_db_reply r;
    char code[64];
} answer;

static void on_answer(void *user, const gs_db_reply *r)
{
    answer *a = user;
    pthread_mutex_lock(&a->mu);
    a->r.status = r->status;
    snprintf(a->code, sizeof a->code, "%s", r->status == GS_OK ? "" : r->err.code);
    a->done = 1;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

Test(source_apply, catalogue_table_and_batches)
{
    gs_error err;
    gs_error_init(&err);
    gs_source_position *pos = NULL;
    size_t npos = 99;
    cr_assert_eq(gs_source_catalogue_load(db, "eu", &pos, &npos, &err), GS_OK, "%s", err.message);
    cr_assert_eq(npos, 0);
    cr_assert_null(pos);

    int created = 0;
    char **pk = NULL;
    size_t npk = 0;
    cr_assert_eq(gs_source_table_prepare(db, "eu_users",
                                         "CREATE TABLE IF NOT EXISTS \"eu_users\" (org TEXT, id "
                                         "INTEGER, name TEXT, PRIMARY KEY (org, id))",
                                         &created, &pk, &npk, &err),
                 GS_OK, "%s", err.message);
    cr_assert_eq(created, 1);
    cr_assert_eq(npk, 2);
    cr_assert_str_eq(pk[0], "org");
    cr_assert_str_eq(pk[1], "id");

    const char *cols[] = {"org", "id", "name"};
    gs_value r1[] = {{.type = GS_VALUE_TEXT, .u.text = {"a", 1}},
                     {.type = GS_VALUE_INT, .u.i = 1},
                     {.type = GS_VALUE_TEXT, .u.text = {"ada", 3}}};
    gs_value r2[] = {{.type = GS_VALUE_TEXT, .u.text = {"a", 1}},
                     {.type = GS_VALUE_INT, .u.i = 2},
                     {.type = GS_VALUE_NULL}};
    gs_value r1b[] = {{.type = GS_VALUE_TEXT, .u.text = {"a", 1}},
                      {.type = GS_VALUE_INT, .u.i = 1},
                      {.type = GS_VALUE_TEXT, .u.text = {"ada l", 5}}};
    gs_source_op ops[] = {
        {"eu_users", (const char *const *)pk, npk, 0, 3, cols, r1},
        {"eu_users", (const char *const *)pk, npk, 0, 3, cols, r2},
        {"eu_users", (const char *const *)pk, npk, 0, 3, cols, r1b}, /* an update: upsert */
        {"eu_users", (const char *const *)pk, npk, 1, 3, cols, r2},  /* a delete by key */
    };
    gs_source_position p = {.remote_table = "users",
                            .local_table = "eu_users",
                            .seq = "42",
                            .epoch = "e1",
                            .rows_bootstrapped = 2};
    const char *clear[] = {"eu_users"};
    gs_source_batch b = {.source_id = "eu",
                         .clear = clear,
                         .nclear = 1,
                         .ops = ops,
                         .nops = 4,
                         .positions = &p,
                         .npositions = 1};
    cr_assert_eq(gs_source_apply(db, &b, &err), GS_OK, "%s", err.message);
    cr_assert_eq(scalar("SELECT count(*) FROM eu_users"), 1);
    cr_assert_eq(scalar("SELECT count(*) FROM eu_users WHERE name = 'ada l'"), 1);

    cr_assert_eq(gs_source_catalogue_load(db, "eu", &pos, &npos, &err), GS_OK);
    cr_assert_eq(npos, 1);
    cr_assert_str_eq(pos[0].remote_table, "users");
    cr_assert_str_eq(pos[0].local_table, "eu_users");
    cr_assert_str_eq(pos[0].seq, "42");
    cr_assert_str_eq(pos[0].epoch, "e1");
    cr_assert_eq(pos[0].rows_bootstrapped, 2);
    gs_free(pos);

    /* a batch that fails half way leaves neither its rows nor its position */
    gs_value bad[] = {{.type = GS_VALUE_TEXT, .u.text = {"b", 1}},
                      {.type = GS_VALUE_INT, .u.i = 9},
                      {.type = GS_VALUE_TEXT, .u.text = {"x", 1}}};
    const char *badcols[] = {"org", "id", "no_such_column"};
    gs_source_op ops2[] = {
        {"eu_users", (const char *const *)pk, npk, 0, 3, cols, bad},
        {"eu_users", (const char *const *)pk, npk, 0, 3, badcols, bad},
    };
    gs_source_position p2 = {
        .remote_table = "users", .local_table = "eu_users", .seq = "50", .epoch = "e1"};
    gs_source_batch b2 = {
        .source_id = "eu", .ops = ops2, .nops = 2, .positions = &p2, .npositions = 1};
    cr_assert_eq(gs_source_apply(db, &b2, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "QUERY_ERROR", "%s", err.code);
    cr_assert(strstr(err.message, "eu_users"), "%s", err.message);
    cr_assert_eq(scalar("SELECT count(*) FROM eu_users WHERE org = 'b'"), 0);
    cr_assert_eq(scalar("SELECT CAST(seq AS INTEGER) FROM _sirannon_gs_sources"), 42);

    /* an existing table is kept and its key read; a table without one is refused */
    for (size_t i = 0; i < npk; i++)
        gs_free(pk[i]);
    gs_free(pk);
    cr_assert_eq(gs_source_table_prepare(db, "eu_users", "CREATE TABLE nothing_to_do (a)", &created,
                                         &pk, &npk, &err),
                 GS_OK, "%s", err.message);
    cr_assert_eq(created, 0);
    cr_assert_eq(npk, 2);
    for (size_t i = 0; i < npk; i++)
        gs_free(pk[i]);
    gs_free(pk);
    /* the remote table gained columns: the local one gains them, with type and default */
    cr_assert_eq(gs_source_table_prepare(db, "eu_users",
                                         "CREATE TABLE IF NOT EXISTS \"eu_users\" (org TEXT, id "
                                         "INTEGER, name TEXT, email TEXT DEFAULT 'none' NOT NULL, "
                                         "score REAL, PRIMARY KEY (org, id))",
                                         &created, &pk, &npk, &err),
                 GS_OK, "%s", err.message);
    cr_assert_eq(created, 0);
    cr_assert_eq(npk, 2);
    for (size_t i = 0; i < npk; i++)
        gs_free(pk[i]);
    gs_free(pk);
    cr_assert_eq(scalar("SELECT count(*) FROM pragma_table_info('eu_users')"), 5);
    cr_assert_eq(scalar("SELECT count(*) FROM pragma_table_info('eu_users') WHERE name = 'email' "
                        "AND type = 'TEXT' AND dflt_value = '''none''' AND \"notnull\" = 1"),
                 1);
    cr_assert_eq(scalar("SELECT count(*) FROM pragma_table_info('eu_users') WHERE name = 'score' "
                        "AND type = 'REAL' AND dflt_value IS NULL"),
                 1);
    cr_assert_gt(scalar("SELECT count(*) FROM eu_users"), 0);
    cr_assert_eq(scalar("SELECT count(*) FROM eu_users WHERE email = 'none'"),
                 scalar("SELECT count(*) FROM eu_users"), "older rows take the default");
    cr_assert_eq(gs_source_table_prepare(db, "nokey", "CREATE TABLE \"nokey\" (a, b)", &created,
                                         &pk, &npk, &err),
                 GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_REQUEST");
    cr_assert(strstr(err.message, "PRIMARY KEY"), "%s", err.message);

    /* user SQL cannot read or write the catalogue */
    answer a;
    memset(&a, 0, sizeof a);
    pthread_mutex_init(&a.mu, NULL);
    pthread_cond_init(&a.cv, NULL);
    gs_db_stmt st = {"DELETE FROM _sirannon_gs_sources", NULL};
    gs_db_request req = {
        .kind = GS_DB_EXECUTE, .stmts = &st, .stmt_count = 1, .done = on_answer, .user = &a};
    gs_status rc = gs_db_submit(db, &req, &err);
    if (rc == GS_OK) {
        pthread_mutex_lock(&a.mu);
        while (!a.done) {
            struct timespec ts = gs_test_realtime_in(10000);
            cr_assert_neq(pthread_cond_timedwait(&a.cv, &a.mu, &ts), ETIMEDOUT);
        }
        pthread_mutex_unlock(&a.mu);
        cr_assert_str_eq(a.code, "FORBIDDEN_SQL");
    } else {
        cr_assert_str_eq(err.code, "FORBIDDEN_SQL");
    }
    pthread_cond_destroy(&a.cv);
    pthread_mutex_destroy(&a.mu);
}
