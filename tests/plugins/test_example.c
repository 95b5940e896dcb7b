/*
 * gs_hook_example.so against the test host (hook_host.h): the allow list on authenticate,
 * deny_words on before_query, config refusals and allocation failures.
 */
#include "hook_host.h"

#define EX_FILE "gs_hook_example.so"

typedef struct fixture {
    th_plugin p;
    void *instance;
    gs_error err;
} fixture;

static gs_status create(fixture *f, const char *const *allow, size_t nallow,
                        const char *const *deny, size_t ndeny)
{
    f->p = th_load(EX_FILE);
    const gs_plugin_descriptor *d = f->p.desc;
    void *cfg = calloc(1, d->config_struct_size);
    cr_assert_not_null(cfg);
    th_set_strings(cfg, th_key(d->config_keys, d->config_key_count, d->config_key_size, "allow"),
                   allow, nallow);
    th_set_strings(cfg,
                   th_key(d->config_keys, d->config_key_count, d->config_key_size, "deny_words"),
                   deny, ndeny);
    f->err = th_error();
    gs_status st = f->p.vt->create(&th_host, cfg, &f->instance, &f->err);
    free(cfg); /* the instance must not point into it */
    if (st != GS_OK)
        cr_assert_null(f->instance);
    return st;
}

static void teardown(fixture *f)
{
    th_finish(&f->p, &f->instance);
}

static gs_status from(fixture *f, const char *remote)
{
    gs_auth_context c = th_ctx(NULL, 0, "main", remote);
    char *id = (char *)0x1;
    f->err = th_error();
    gs_status st = f->p.vt->authenticate(f->instance, &c, &id, &f->err);
    cr_assert_null(id, "the example hook never names an identity");
    return st;
}

static gs_status query(fixture *f, const char *sql)
{
    gs_query_context q = {.struct_size = sizeof q, .database_id = "main", .sql = sql};
    f->err = th_error();
    return f->p.vt->before_query(f->instance, &q, &f->err);
}

Test(example, descriptor_and_keys)
{
    th_plugin p = th_load(EX_FILE);
    cr_assert_str_eq(p.desc->name, "example");
    cr_assert_not_null(p.vt->authenticate);
    cr_assert_not_null(p.vt->before_query);
    cr_assert_not_null(p.vt->after_query);
    cr_assert_not_null(p.vt->before_connect);
    cr_assert_not_null(p.vt->database_open);
    cr_assert_not_null(p.vt->database_close);
    for (size_t i = 0; i < p.desc->config_key_count; i++) {
        const gs_config_key *k = &p.desc->config_keys[i];
        cr_assert(k->help && *k->help);
        if (strcmp(k->name, "log_queries") == 0)
            cr_assert(k->type == GS_CFG_BOOL && strcmp(k->default_value, "false") == 0);
        else
            cr_assert_eq(k->type, GS_CFG_STRING_LIST);
        cr_assert_not(k->required);
    }
    th_unload(&p);
}

Test(example, empty_config_passes_everything_on)
{
    fixture f = {0};
    cr_assert_eq(create(&f, NULL, 0, NULL, 0), GS_OK, "%s", f.err.message);
    cr_assert_eq(from(&f, "203.0.113.9:1000"), GS_DECLINED);
    cr_assert_eq(query(&f, "DROP TABLE t"), GS_DECLINED);
    teardown(&f);
}

Test(example, allow_list_refuses_other_addresses)
{
    static const char *const allow[] = {"127.0.0.1", "::1", "fe80::1"};
    fixture f = {0};
    cr_assert_eq(create(&f, allow, 3, NULL, 0), GS_OK);
    cr_assert_eq(from(&f, "127.0.0.1:53122"), GS_DECLINED);
    cr_assert_eq(from(&f, "[::1]:53122"), GS_DECLINED);
    cr_assert_eq(from(&f, "127.0.0.1"), GS_DECLINED);
    cr_assert_eq(from(&f, "FE80::1"), GS_DECLINED);
    const char *refused[] = {
        "10.0.0.1:80", "127.0.0.10:80", "127.0.0.1x:1", "[::2]:1", "", "[" /* malformed */};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        cr_assert_eq(from(&f, refused[i]), GS_ERROR, "%s was let through", refused[i]);
        cr_assert_eq(f.err.status, 403);
        cr_assert_str_eq(f.err.code, "FORBIDDEN");
    }
    cr_assert(strstr(f.err.message, "allow list"), "%s", f.err.message);
    cr_assert_eq(from(&f, NULL), GS_ERROR, "an unknown address is not on the list");
    teardown(&f);
}

Test(example, deny_words_match_whole_words_outside_literals)
{
    static const char *const deny[] = {"drop", "ATTACH"};
    fixture f = {0};
    cr_assert_eq(create(&f, NULL, 0, deny, 2), GS_OK);
    const char *denied[] = {"DROP TABLE t",           "drop table t",
                            "select 1; Drop table t", "attach database 'x' as y",
                            "SELECT 1 /**/drop",      "x(drop)"};
    for (size_t i = 0; i < sizeof denied / sizeof denied[0]; i++) {
        cr_assert_eq(query(&f, denied[i]), GS_ERROR, "'%s' was let through", denied[i]);
        cr_assert_eq(f.err.status, 403);
        cr_assert_str_eq(f.err.code, "HOOK_DENIED");
        cr_assert(strstr(f.err.message, "'main'"), "%s", f.err.message);
    }
    const char *allowed[] = {"SELECT * FROM dropbox", "SELECT drop_count FROM t",
                             "SELECT 'drop' AS word", "SELECT 'it''s drop time'",
                             "INSERT INTO t VALUES ('unterminated drop"};
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        cr_assert_eq(query(&f, allowed[i]), GS_OK, "'%s' was refused: %s", allowed[i],
                     f.err.message);
    /* After a literal closes, words count again. */
    cr_assert_eq(query(&f, "SELECT 'x''y' ; DROP TABLE t"), GS_ERROR);
    teardown(&f);
}

Test(example, config_is_validated)
{
    static const char *const empty_addr[] = {"127.0.0.1", ""};
    fixture f = {0};
    cr_assert_eq(create(&f, empty_addr, 2, NULL, 0), GS_ERROR);
    cr_assert_str_eq(f.err.code, "INVALID_CONFIG");
    cr_assert(strstr(f.err.message, "allow[1]"), "%s", f.err.message);
    th_unload(&f.p);

    static const char *const phrase[] = {"drop table"};
    fixture g = {0};
    cr_assert_eq(create(&g, NULL, 0, phrase, 1), GS_ERROR);
    cr_assert_str_eq(g.err.code, "INVALID_CONFIG");
    cr_assert(strstr(g.err.message, "deny_words[0]"), "%s", g.err.message);
    th_unload(&g.p);
    cr_assert_eq(th_live_blocks(), 0);
}

Test(example, every_allocation_failure_in_create_is_clean)
{
    static const char *const allow[] = {"127.0.0.1", "::1"};
    static const char *const deny[] = {"drop", "attach", "detach"};
    int succeeded = 0;
    for (long n = 0; n < 50 && !succeeded; n++) {
        fixture f = {0};
        th_fail_after(n);
        gs_status st = create(&f, allow, 2, deny, 3);
        th_fail_after(-1);
        if (st == GS_OK) {
            succeeded = 1;
            cr_assert_eq(query(&f, "detach x"), GS_ERROR);
            cr_assert_eq(from(&f, "[::1]:9"), GS_DECLINED);
        } else {
            cr_assert_str_eq(f.err.code, "INTERNAL_ERROR");
        }
        teardown(&f);
    }
    cr_assert(succeeded);
}

/* The ABI 1.2 events: before_connect refuses deny_open ids; with log_queries the observers
 * log one line each, with the duration and never the SQL. */
static gs_status create_events(fixture *f, const char *const *deny_open, size_t n, int log)
{
    f->p = th_load(EX_FILE);
    const gs_plugin_descriptor *d = f->p.desc;
    void *cfg = calloc(1, d->config_struct_size);
    cr_assert_not_null(cfg);
    th_set_strings(cfg,
                   th_key(d->config_keys, d->config_key_count, d->config_key_size, "deny_open"),
                   deny_open, n);
    const gs_config_key *k =
        th_key(d->config_keys, d->config_key_count, d->config_key_size, "log_queries");
    memcpy((char *)cfg + k->offset, &log, sizeof log);
    f->err = th_error();
    gs_status st = f->p.vt->create(&th_host, cfg, &f->instance, &f->err);
    free(cfg);
    return st;
}

Test(example, before_connect_refuses_deny_open)
{
    static const char *const deny[] = {"archive"};
    fixture f = {0};
    cr_assert_eq(create_events(&f, deny, 1, 0), GS_OK, "%s", f.err.message);
    f.err = th_error();
    cr_assert_eq(f.p.vt->before_connect(f.instance, "main", "/d/main.db", &f.err), GS_OK);
    cr_assert_eq(f.p.vt->before_connect(f.instance, "archive", "/d/archive.db", &f.err), GS_ERROR);
    cr_assert_eq(f.err.status, 403);
    cr_assert_str_eq(f.err.code, "FORBIDDEN");
    cr_assert(strstr(f.err.message, "archive"));
    teardown(&f);
}

Test(example, log_queries_logs_events_without_sql)
{
    fixture f = {0};
    cr_assert_eq(create_events(&f, NULL, 0, 1), GS_OK, "%s", f.err.message);
    gs_query_context q = {.struct_size = sizeof q,
                          .database_id = "main",
                          .sql = "SELECT secret_column FROM t",
                          .is_write = 0};
    f.p.vt->after_query(f.instance, &q, 1.25, 0);
    q.is_write = 1;
    f.p.vt->after_query(f.instance, &q, 2.5, 1);
    f.p.vt->database_open(f.instance, "t7", "/d/t7.db");
    f.p.vt->database_close(f.instance, "t7", "/d/t7.db");
    pthread_mutex_lock(&th_log_lock);
    char text[sizeof th_log_text];
    memcpy(text, th_log_text, sizeof text);
    pthread_mutex_unlock(&th_log_lock);
    cr_assert(strstr(text, "after_query database=main kind=read result=ok duration_ms=1.250"), "%s",
              text);
    cr_assert(strstr(text, "after_query database=main kind=write result=failed duration_ms=2.500"),
              "%s", text);
    cr_assert(strstr(text, "database_open database=t7"), "%s", text);
    cr_assert(strstr(text, "database_close database=t7"), "%s", text);
    cr_assert_null(strstr(text, "secret_column"), "the SQL is never logged");
    teardown(&f);
}

Test(example, events_are_quiet_without_log_queries)
{
    fixture f = {0};
    cr_assert_eq(create_events(&f, NULL, 0, 0), GS_OK, "%s", f.err.message);
    pthread_mutex_lock(&th_log_lock);
    size_t before = th_log_len;
    pthread_mutex_unlock(&th_log_lock);
    gs_query_context q = {.struct_size = sizeof q, .database_id = "main", .sql = "SELECT 1"};
    f.p.vt->after_query(f.instance, &q, 1.0, 0);
    f.p.vt->database_open(f.instance, "t7", "/d/t7.db");
    f.p.vt->database_close(f.instance, "t7", "/d/t7.db");
    pthread_mutex_lock(&th_log_lock);
    size_t after = th_log_len;
    pthread_mutex_unlock(&th_log_lock);
    cr_assert_eq(before, after, "nothing logged");
    teardown(&f);
}
