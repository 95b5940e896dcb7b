/*
 * gs_hook_sql_allowlist.so against the test host (hook_host.h): normalisation of listed and
 * incoming statements, sha256 entries, the "*" entry, FORBIDDEN_SQL without the SQL echoed,
 * config refusals and allocation failures.
 */
#include "hook_host.h"

#define AL_FILE "gs_hook_sql_allowlist.so"

typedef struct db_entry {
    const char *database;
    const char *const *statements;
    size_t count;
} db_entry;

typedef struct fixture {
    th_plugin p;
    void *instance;
    gs_error err;
} fixture;

static gs_status create_opts(fixture *f, const db_entry *dbs, size_t n, int allow_registered);

static gs_status create(fixture *f, const db_entry *dbs, size_t n)
{
    return create_opts(f, dbs, n, 0);
}

static gs_status create_opts(fixture *f, const db_entry *dbs, size_t n, int allow_registered)
{
    f->p = th_load(AL_FILE);
    const gs_plugin_descriptor *d = f->p.desc;
    const gs_config_key *k_dbs =
        th_key(d->config_keys, d->config_key_count, d->config_key_size, "databases");
    void *cfg = calloc(1, d->config_struct_size);
    char *items = calloc(n ? n : 1, k_dbs->child_struct_size);
    cr_assert(cfg && items);
    for (size_t i = 0; i < n; i++) {
        void *item = items + i * k_dbs->child_struct_size;
        th_set_string(item,
                      th_key(k_dbs->children, k_dbs->child_count, d->config_key_size, "database"),
                      dbs[i].database);
        th_set_strings(
            item, th_key(k_dbs->children, k_dbs->child_count, d->config_key_size, "statements"),
            dbs[i].statements, dbs[i].count);
    }
    th_set_list(cfg, k_dbs, items, n);
    const gs_config_key *k_reg =
        th_key(d->config_keys, d->config_key_count, d->config_key_size, "allow_registered");
    cr_assert_eq(k_reg->type, GS_CFG_BOOL);
    memcpy((char *)cfg + k_reg->offset, &allow_registered, sizeof allow_registered);
    f->err = th_error();
    gs_status st = f->p.vt->create(&th_host, cfg, &f->instance, &f->err);
    free(items); /* the instance must not point into the config */
    free(cfg);
    if (st != GS_OK)
        cr_assert_null(f->instance);
    return st;
}

static void teardown(fixture *f)
{
    th_finish(&f->p, &f->instance);
}

static gs_status query(fixture *f, const char *db, const char *sql)
{
    gs_query_context q = {.struct_size = sizeof q, .database_id = db, .sql = sql};
    f->err = th_error();
    return f->p.vt->before_query(f->instance, &q, &f->err);
}

static void assert_forbidden(fixture *f, const char *db, const char *sql)
{
    cr_assert_eq(query(f, db, sql), GS_ERROR, "'%s' on %s should be refused", sql, db);
    cr_assert_eq(f->err.status, 403);
    cr_assert_str_eq(f->err.code, "FORBIDDEN_SQL");
    cr_assert(strstr(f->err.message, db), "the message names the database: %s", f->err.message);
    cr_assert_null(strstr(f->err.message, sql), "the message never echoes the SQL");
}

static const char *const main_list[] = {
    "SELECT id, name FROM users WHERE id = ?",
    "  insert INTO users(name)\n\tVALUES (?);  ",
};

Test(sql_allowlist, descriptor_and_keys)
{
    th_plugin p = th_load(AL_FILE);
    cr_assert_str_eq(p.desc->name, "sql_allowlist");
    cr_assert_not_null(p.vt->before_query);
    cr_assert_null(p.vt->authenticate);
    for (size_t i = 0; i < p.desc->config_key_count; i++)
        cr_assert(p.desc->config_keys[i].help && *p.desc->config_keys[i].help);
    th_unload(&p);
}

Test(sql_allowlist, listed_statements_run_normalised)
{
    fixture f = {0};
    db_entry dbs[] = {{"main", main_list, 2}};
    cr_assert_eq(create(&f, dbs, 1), GS_OK, "%s", f.err.message);
    cr_assert_eq(query(&f, "main", "SELECT id, name FROM users WHERE id = ?"), GS_OK);
    cr_assert_eq(query(&f, "main", "select   ID,\nNAME from USERS where id = ?;"), GS_OK);
    cr_assert_eq(query(&f, "main", "INSERT INTO users(name) VALUES (?)"), GS_OK);
    cr_assert_eq(query(&f, "main", "insert into users(name) values (?) ;;"), GS_OK);
    /* Whitespace is collapsed, never removed: "id=?" is another statement. */
    assert_forbidden(&f, "main", "SELECT id, name FROM users WHERE id=?");
    assert_forbidden(&f, "main", "SELECT * FROM users");
    assert_forbidden(&f, "main", "DROP TABLE users");
    teardown(&f);
}

Test(sql_allowlist, quoted_text_is_kept_exactly)
{
    static const char *const list[] = {"SELECT * FROM t WHERE name = 'A  b' AND \"Col\" = 1"};
    fixture f = {0};
    db_entry dbs[] = {{"main", list, 1}};
    cr_assert_eq(create(&f, dbs, 1), GS_OK, "%s", f.err.message);
    cr_assert_eq(query(&f, "main", "select * from T where NAME = 'A  b' and \"Col\" = 1"), GS_OK);
    assert_forbidden(&f, "main", "select * from t where name = 'a  b' and \"Col\" = 1");
    assert_forbidden(&f, "main", "select * from t where name = 'A b' and \"Col\" = 1");
    assert_forbidden(&f, "main", "select * from t where name = 'A  b' and \"col\" = 1");
    teardown(&f);
}

Test(sql_allowlist, sha256_entries)
{
    /* The digest of the normal form "select 1", computed independently by sha256sum. */
    char expected[] = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    FILE *pp = popen("printf %s 'select 1' | sha256sum", "r");
    cr_assert_not_null(pp);
    char line[128] = "";
    cr_assert_not_null(fgets(line, sizeof line, pp));
    pclose(pp);
    cr_assert_geq(strlen(line), 64);
    for (int i = 0; i < 64; i++) /* upper case too: accepted either way */
        expected[7 + i] = (char)(line[i] >= 'a' && line[i] <= 'f' ? line[i] - 32 : line[i]);
    const char *const entries[] = {expected};
    fixture f = {0};
    db_entry dbs[] = {{"main", entries, 1}};
    cr_assert_eq(create(&f, dbs, 1), GS_OK, "%s", f.err.message);
    cr_assert_eq(query(&f, "main", "SELECT 1;"), GS_OK);
    cr_assert_eq(query(&f, "main", "  select\n1 "), GS_OK);
    assert_forbidden(&f, "main", "select 2");
    teardown(&f);
}

Test(sql_allowlist, sha256_of_a_long_statement)
{
    /* Past one SHA-256 block (and past the plugin's stack buffer): text and digest agree. */
    char sql[3000];
    size_t n = 0;
    n += (size_t)snprintf(sql + n, sizeof sql - n, "select 1");
    while (n < 2500)
        n += (size_t)snprintf(sql + n, sizeof sql - n, " + %zu", n);
    char cmd[3200];
    snprintf(cmd, sizeof cmd, "printf %%s '%s' | sha256sum", sql);
    FILE *pp = popen(cmd, "r");
    cr_assert_not_null(pp);
    char line[128] = "";
    cr_assert_not_null(fgets(line, sizeof line, pp));
    pclose(pp);
    char entry[80];
    snprintf(entry, sizeof entry, "sha256:%.64s", line);
    const char *const entries[] = {entry};
    fixture f = {0};
    db_entry dbs[] = {{"main", entries, 1}};
    cr_assert_eq(create(&f, dbs, 1), GS_OK, "%s", f.err.message);
    cr_assert_eq(query(&f, "main", sql), GS_OK);
    sql[n - 1] = sql[n - 1] == '1' ? '2' : '1';
    assert_forbidden(&f, "main", sql);
    teardown(&f);
}

Test(sql_allowlist, lists_are_per_database_and_star_covers_the_rest)
{
    static const char *const a[] = {"select 1"};
    static const char *const star[] = {"select 2"};
    fixture f = {0};
    db_entry dbs[] = {{"main", a, 1}, {"*", star, 1}};
    cr_assert_eq(create(&f, dbs, 2), GS_OK, "%s", f.err.message);
    cr_assert_eq(query(&f, "main", "select 1"), GS_OK);
    assert_forbidden(&f, "main", "select 2"); /* a named list replaces "*", never adds to it */
    cr_assert_eq(query(&f, "tenant7", "select 2"), GS_OK);
    assert_forbidden(&f, "tenant7", "select 1");
    teardown(&f);
}

Test(sql_allowlist, unlisted_database_runs_nothing)
{
    static const char *const a[] = {"select 1"};
    fixture f = {0};
    db_entry dbs[] = {{"main", a, 1}};
    cr_assert_eq(create(&f, dbs, 1), GS_OK, "%s", f.err.message);
    assert_forbidden(&f, "other", "select 1");
    /* A database with an empty list runs nothing either. */
    teardown(&f);
    db_entry empty[] = {{"main", NULL, 0}};
    cr_assert_eq(create(&f, empty, 1), GS_OK, "%s", f.err.message);
    assert_forbidden(&f, "main", "select 1");
    teardown(&f);
}

Test(sql_allowlist, bad_config_is_refused)
{
    static const char *const bad_hex[] = {"sha256:abc"};
    static const char *const blank[] = {" ;; "};
    static const char *const ok[] = {"select 1"};
    fixture f = {0};
    cr_assert_eq(create(&f, NULL, 0), GS_ERROR);
    cr_assert_str_eq(f.err.code, "INVALID_CONFIG");
    teardown(&f);
    db_entry d1[] = {{"main", bad_hex, 1}};
    cr_assert_eq(create(&f, d1, 1), GS_ERROR);
    cr_assert_str_eq(f.err.code, "INVALID_CONFIG");
    cr_assert(strstr(f.err.message, "statements[0]"), "%s", f.err.message);
    teardown(&f);
    db_entry d2[] = {{"main", blank, 1}};
    cr_assert_eq(create(&f, d2, 1), GS_ERROR);
    cr_assert_str_eq(f.err.code, "INVALID_CONFIG");
    teardown(&f);
    db_entry d3[] = {{"main", ok, 1}, {"main", ok, 1}};
    cr_assert_eq(create(&f, d3, 2), GS_ERROR);
    cr_assert(strstr(f.err.message, "twice"), "%s", f.err.message);
    teardown(&f);
}

Test(sql_allowlist, allocation_failures_leave_nothing)
{
    static const char *const a[] = {"select 1", "select 2"};
    static const char *const b[] = {"select 3"};
    db_entry dbs[] = {{"main", a, 2}, {"other", b, 1}};
    for (long n = 0; n < 12; n++) {
        fixture f = {0};
        th_fail_after(n);
        gs_status st = create(&f, dbs, 2);
        th_fail_after(-1);
        if (st == GS_OK) {
            cr_assert_eq(query(&f, "main", "select 2"), GS_OK);
        } else {
            cr_assert_str_eq(f.err.code, "INTERNAL_ERROR");
        }
        teardown(&f);
    }
}

static gs_status query_op(fixture *f, const char *db, const char *op, const char *sql)
{
    gs_query_context q = {.struct_size = sizeof q, .database_id = db, .sql = sql, .operation = op};
    f->err = th_error();
    return f->p.vt->before_query(f->instance, &q, &f->err);
}

Test(sql_allowlist, registered_operations_are_checked_unless_allowed)
{
    static const char *const a[] = {"select 1"};
    db_entry dbs[] = {{"main", a, 1}};
    fixture f = {0};
    cr_assert_eq(create(&f, dbs, 1), GS_OK, "%s", f.err.message);
    cr_assert_eq(query_op(&f, "main", "one", "SELECT 1"), GS_OK);
    cr_assert_eq(query_op(&f, "main", "two", "SELECT 2"), GS_ERROR);
    cr_assert_str_eq(f.err.code, "FORBIDDEN_SQL");
    teardown(&f);
    cr_assert_eq(create_opts(&f, dbs, 1, 1), GS_OK, "%s", f.err.message);
    cr_assert_eq(query_op(&f, "main", "two", "SELECT 2"), GS_OK);
    cr_assert_eq(query_op(&f, "other", "two", "SELECT 2"), GS_OK);
    /* SQL sent in the request is still checked */
    assert_forbidden(&f, "main", "SELECT 2");
    /* a 1.0/1.1 core's context has no operation member: checked like SQL */
    gs_query_context old = {.struct_size = offsetof(gs_query_context, operation),
                            .database_id = "main",
                            .sql = "SELECT 2"};
    f.err = th_error();
    cr_assert_eq(f.p.vt->before_query(f.instance, &old, &f.err), GS_ERROR);
    teardown(&f);
}
