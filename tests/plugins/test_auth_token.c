/*
 * gs_hook_auth_token.so against the test host (hook_host.h): descriptor and key table,
 * configuration refusals, every authenticate answer, allocation failures, concurrent use,
 * and that no token ever reaches a log line or a message.
 */
#include "hook_host.h"

#define AT_FILE "gs_hook_auth_token.so"
#define MAX_ENTRIES 8

/* What one `tokens` entry holds, in test terms. */
typedef struct entry {
    const char *token;
    const char *token_env;
    const char *name;
    const char *dbs[4]; /* NULL-terminated */
    const char *claims;
} entry;

/* The plugin, its config struct filled through its key table, and one instance. */
typedef struct fixture {
    th_plugin p;
    void *cfg;
    void *items;
    void *instance;
    gs_error err;
} fixture;

static size_t dbs_count(const entry *e)
{
    size_t n = 0;
    while (n < 4 && e->dbs[n])
        n++;
    return n;
}

/*
 * Fill a config struct for `entries` using only the descriptor's key table. header/scheme
 * NULL apply the table's defaults, as the core would.
 */
static void fill(fixture *f, const entry *entries, size_t n, const char *header, const char *scheme)
{
    const gs_plugin_descriptor *d = f->p.desc;
    f->cfg = calloc(1, d->config_struct_size);
    cr_assert_not_null(f->cfg);
    const gs_config_key *k_tokens =
        th_key(d->config_keys, d->config_key_count, d->config_key_size, "tokens");
    const gs_config_key *k_header =
        th_key(d->config_keys, d->config_key_count, d->config_key_size, "header");
    const gs_config_key *k_scheme =
        th_key(d->config_keys, d->config_key_count, d->config_key_size, "scheme");
    size_t stride = k_tokens->child_struct_size;
    f->items = calloc(n ? n : 1, stride);
    cr_assert_not_null(f->items);
    for (size_t i = 0; i < n; i++) {
        char *item = (char *)f->items + i * stride;
        const gs_config_key *ck = k_tokens->children;
        size_t cc = k_tokens->child_count;
        size_t cs = d->config_key_size;
        if (entries[i].token)
            th_set_string(item, th_key(ck, cc, cs, "token"), entries[i].token);
        if (entries[i].token_env)
            th_set_string(item, th_key(ck, cc, cs, "token_env"), entries[i].token_env);
        if (entries[i].name)
            th_set_string(item, th_key(ck, cc, cs, "name"), entries[i].name);
        th_set_strings(item, th_key(ck, cc, cs, "databases"), entries[i].dbs,
                       dbs_count(&entries[i]));
        if (entries[i].claims)
            th_set_json(item, th_key(ck, cc, cs, "claims"), entries[i].claims);
    }
    th_set_list(f->cfg, k_tokens, f->items, n);
    th_set_string(f->cfg, k_header, header ? header : k_header->default_value);
    th_set_string(f->cfg, k_scheme, scheme ? scheme : k_scheme->default_value);
}

static void release_config(fixture *f)
{
    free(f->items);
    free(f->cfg);
    f->items = f->cfg = NULL;
}

static gs_status create(fixture *f, const entry *entries, size_t n, const char *header,
                        const char *scheme)
{
    f->p = th_load(AT_FILE);
    fill(f, entries, n, header, scheme);
    f->err = th_error();
    f->instance = (void *)0x1; /* create must reset it */
    gs_status st = f->p.vt->create(&th_host, f->cfg, &f->instance, &f->err);
    if (st != GS_OK)
        cr_assert_null(f->instance, "a failed create leaves *instance NULL");
    /* The core may free the config struct as soon as create returns: so do we. */
    release_config(f);
    return st;
}

static void teardown(fixture *f)
{
    th_finish(&f->p, &f->instance);
}

/* authenticate with one header; returns the status, identity in *id (caller frees). */
static gs_status auth(fixture *f, const char *hname, const char *hvalue, const char *db, char **id)
{
    gs_header h = {hname, hvalue};
    gs_auth_context c = th_ctx(&h, hname ? 1 : 0, db, "127.0.0.1:40000");
    f->err = th_error();
    *id = (char *)0x1;
    gs_status st = f->p.vt->authenticate(f->instance, &c, id, &f->err);
    if (st != GS_OK)
        cr_assert_null(*id, "identity must stay NULL unless GS_OK");
    return st;
}

static void expect_identity(fixture *f, const char *hvalue, const char *db, const char *want)
{
    char *id = NULL;
    gs_status st = auth(f, "Authorization", hvalue, db, &id);
    cr_assert_eq(st, GS_OK, "expected GS_OK, got %d: %s %s", st, f->err.code, f->err.message);
    cr_assert_str_eq(id, want);
    th_host.free(id);
}

static void expect_refusal(fixture *f, const char *hname, const char *hvalue, const char *db,
                           int status, const char *code, const char *phrase)
{
    char *id = NULL;
    gs_status st = auth(f, hname, hvalue, db, &id);
    cr_assert_eq(st, GS_ERROR);
    cr_assert_eq(f->err.status, status, "status %d, want %d (%s)", f->err.status, status,
                 f->err.message);
    cr_assert_str_eq(f->err.code, code);
    cr_assert(strstr(f->err.message, phrase), "message '%s' lacks '%s'", f->err.message, phrase);
}

static void expect_config_error(fixture *f, const char *phrase, const char *secret)
{
    cr_assert_str_eq(f->err.code, "INVALID_CONFIG", "code %s: %s", f->err.code, f->err.message);
    cr_assert(strstr(f->err.message, phrase), "message '%s' lacks '%s'", f->err.message, phrase);
    if (secret)
        cr_assert_null(strstr(f->err.message, secret), "message reveals the token: %s",
                       f->err.message);
    cr_assert_eq(th_live_blocks(), 0, "a failed create leaked %ld block(s)", th_live_blocks());
}

static const entry two[] = {
    {.token = "alpha-secret-123", .name = "alice", .dbs = {"main", "logs"}},
    {.token = "beta-secret-456",
     .name = "svc",
     .dbs = {"*"},
     .claims = "{\"tenant\":7,\"roles\":[\"reader\"]}"},
};

Test(auth_token, descriptor_and_key_table)
{
    th_plugin p = th_load(AT_FILE);
    const gs_plugin_descriptor *d = p.desc;
    cr_assert_str_eq(d->name, "auth_token");
    cr_assert_not_null(d->description);
    cr_assert_not_null(p.vt->authenticate);
    const gs_config_key *t =
        th_key(d->config_keys, d->config_key_count, d->config_key_size, "tokens");
    cr_assert_eq(t->type, GS_CFG_LIST);
    cr_assert(t->required);
    cr_assert_gt(t->child_struct_size, 0);
    const char *children[] = {"token", "token_env", "name", "databases", "claims"};
    for (size_t i = 0; i < 5; i++) {
        const gs_config_key *c =
            th_key(t->children, t->child_count, d->config_key_size, children[i]);
        cr_assert(c->help && *c->help, "%s has no help", children[i]);
        cr_assert_lt(c->offset, t->child_struct_size);
    }
    cr_assert(th_key(t->children, t->child_count, d->config_key_size, "name")->required);
    cr_assert(th_key(t->children, t->child_count, d->config_key_size, "databases")->required);
    cr_assert_str_eq(
        th_key(d->config_keys, d->config_key_count, d->config_key_size, "header")->default_value,
        "authorization");
    cr_assert_str_eq(
        th_key(d->config_keys, d->config_key_count, d->config_key_size, "scheme")->default_value,
        "Bearer");
    for (size_t i = 0; i < d->config_key_count; i++)
        cr_assert_lt(d->config_keys[i].offset, d->config_struct_size);
    th_unload(&p);
}

Test(auth_token, valid_token_gives_identity)
{
    fixture f = {0};
    cr_assert_eq(create(&f, two, 2, NULL, NULL), GS_OK, "%s", f.err.message);
    expect_identity(&f, "Bearer alpha-secret-123", "main", "{\"name\":\"alice\"}");
    expect_identity(&f, "Bearer alpha-secret-123", "logs", "{\"name\":\"alice\"}");
    teardown(&f);
}

Test(auth_token, claims_are_merged_into_identity)
{
    fixture f = {0};
    cr_assert_eq(create(&f, two, 2, NULL, NULL), GS_OK, "%s", f.err.message);
    expect_identity(&f, "Bearer beta-secret-456", "anything",
                    "{\"name\":\"svc\",\"tenant\":7,\"roles\":[\"reader\"]}");
    teardown(&f);
}

Test(auth_token, header_and_scheme_are_case_insensitive_and_spacing_tolerant)
{
    fixture f = {0};
    cr_assert_eq(create(&f, two, 2, NULL, NULL), GS_OK);
    char *id = NULL;
    cr_assert_eq(auth(&f, "AUTHORIZATION", "bearer alpha-secret-123", "main", &id), GS_OK);
    th_host.free(id);
    cr_assert_eq(auth(&f, "authorization", "  BEARER \t alpha-secret-123  ", "main", &id), GS_OK);
    th_host.free(id);
    teardown(&f);
}

Test(auth_token, missing_or_malformed_credential_is_401)
{
    fixture f = {0};
    cr_assert_eq(create(&f, two, 2, NULL, NULL), GS_OK);
    const char *hint = "send Authorization: Bearer <token>";
    expect_refusal(&f, NULL, NULL, "main", 401, "UNAUTHORIZED", hint);
    expect_refusal(&f, "X-Other", "Bearer alpha-secret-123", "main", 401, "UNAUTHORIZED", hint);
    expect_refusal(&f, "Authorization", "", "main", 401, "UNAUTHORIZED", hint);
    expect_refusal(&f, "Authorization", "Bearer", "main", 401, "UNAUTHORIZED", hint);
    expect_refusal(&f, "Authorization", "Bearer   ", "main", 401, "UNAUTHORIZED", hint);
    expect_refusal(&f, "Authorization", "Bearertoken", "main", 401, "UNAUTHORIZED", hint);
    expect_refusal(&f, "Authorization", "Basic YWxpY2U6cHc=", "main", 401, "UNAUTHORIZED", hint);
    expect_refusal(&f, "Authorization", "alpha-secret-123", "main", 401, "UNAUTHORIZED", hint);
    teardown(&f);
}

Test(auth_token, unknown_token_is_401)
{
    fixture f = {0};
    cr_assert_eq(create(&f, two, 2, NULL, NULL), GS_OK);
    expect_refusal(&f, "Authorization", "Bearer nope", "main", 401, "UNAUTHORIZED", "unknown");
    /* Prefixes, extensions and case changes of a real token are different tokens. */
    expect_refusal(&f, "Authorization", "Bearer alpha-secret-12", "main", 401, "UNAUTHORIZED",
                   "unknown");
    expect_refusal(&f, "Authorization", "Bearer alpha-secret-1234", "main", 401, "UNAUTHORIZED",
                   "unknown");
    expect_refusal(&f, "Authorization", "Bearer ALPHA-SECRET-123", "main", 401, "UNAUTHORIZED",
                   "unknown");
    expect_refusal(&f, "Authorization", "Bearer alpha-secret-123alpha-secret-123", "main", 401,
                   "UNAUTHORIZED", "unknown");
    cr_assert_null(strstr(f.err.message, "alpha"), "the message echoes the presented token");
    teardown(&f);
}

Test(auth_token, database_outside_grant_is_403)
{
    fixture f = {0};
    cr_assert_eq(create(&f, two, 2, NULL, NULL), GS_OK);
    expect_refusal(&f, "Authorization", "Bearer alpha-secret-123", "billing", 403, "FORBIDDEN",
                   "'billing'");
    cr_assert(strstr(f.err.message, "alice"));
    /* A database id that merely starts like a granted one is not granted. */
    expect_refusal(&f, "Authorization", "Bearer alpha-secret-123", "mainx", 403, "FORBIDDEN",
                   "'mainx'");
    /* "*" grants every database. */
    expect_identity(&f, "Bearer beta-secret-456", "billing",
                    "{\"name\":\"svc\",\"tenant\":7,\"roles\":[\"reader\"]}");
    /* A route naming no database has nothing to restrict. */
    expect_identity(&f, "Bearer alpha-secret-123", NULL, "{\"name\":\"alice\"}");
    teardown(&f);
}

Test(auth_token, custom_header_and_empty_scheme)
{
    static const entry e[] = {{.token = "k-1", .name = "robot", .dbs = {"main"}}};
    fixture f = {0};
    cr_assert_eq(create(&f, e, 1, "x-api-key", ""), GS_OK, "%s", f.err.message);
    char *id = NULL;
    cr_assert_eq(auth(&f, "X-API-Key", "k-1", "main", &id), GS_OK);
    cr_assert_str_eq(id, "{\"name\":\"robot\"}");
    th_host.free(id);
    expect_refusal(&f, "Authorization", "Bearer k-1", "main", 401, "UNAUTHORIZED",
                   "send X-Api-Key: <token>");
    expect_refusal(&f, "x-api-key", "Bearer k-1", "main", 401, "UNAUTHORIZED", "unknown");
    teardown(&f);
}

Test(auth_token, custom_scheme)
{
    static const entry e[] = {{.token = "t0k", .name = "n", .dbs = {"*"}}};
    fixture f = {0};
    cr_assert_eq(create(&f, e, 1, NULL, "Token"), GS_OK, "%s", f.err.message);
    char *id = NULL;
    cr_assert_eq(auth(&f, "Authorization", "token t0k", "main", &id), GS_OK);
    th_host.free(id);
    expect_refusal(&f, "Authorization", "Bearer t0k", "main", 401, "UNAUTHORIZED",
                   "send Authorization: Token <token>");
    teardown(&f);
}

Test(auth_token, token_from_environment)
{
    cr_assert_eq(setenv("GS_TEST_AT_TOKEN", "from-env-789", 1), 0);
    static const entry e[] = {{.token_env = "GS_TEST_AT_TOKEN", .name = "envy", .dbs = {"*"}}};
    fixture f = {0};
    cr_assert_eq(create(&f, e, 1, NULL, NULL), GS_OK, "%s", f.err.message);
    /* The value is read once at create: changing the variable later changes nothing. */
    cr_assert_eq(setenv("GS_TEST_AT_TOKEN", "changed", 1), 0);
    expect_identity(&f, "Bearer from-env-789", "main", "{\"name\":\"envy\"}");
    expect_refusal(&f, "Authorization", "Bearer changed", "main", 401, "UNAUTHORIZED", "unknown");
    teardown(&f);
}

Test(auth_token, unset_or_empty_environment_variable_is_refused)
{
    unsetenv("GS_TEST_AT_UNSET");
    static const entry e[] = {
        {.token = "first", .name = "a", .dbs = {"*"}},
        {.token_env = "GS_TEST_AT_UNSET", .name = "b", .dbs = {"*"}},
    };
    fixture f = {0};
    cr_assert_eq(create(&f, e, 2, NULL, NULL), GS_ERROR);
    expect_config_error(&f, "tokens[1]", NULL);
    cr_assert(strstr(f.err.message, "GS_TEST_AT_UNSET"), "%s", f.err.message);
    cr_assert(strstr(f.err.message, "not set"), "%s", f.err.message);
    th_unload(&f.p);

    cr_assert_eq(setenv("GS_TEST_AT_UNSET", "", 1), 0);
    fixture g = {0};
    cr_assert_eq(create(&g, e, 2, NULL, NULL), GS_ERROR);
    expect_config_error(&g, "tokens[1]", NULL);
    cr_assert(strstr(g.err.message, "empty"), "%s", g.err.message);
    th_unload(&g.p);
}

Test(auth_token, exactly_one_of_token_and_token_env)
{
    cr_assert_eq(setenv("GS_TEST_AT_BOTH", "env-value", 1), 0);
    static const entry both[] = {
        {.token = "ok-one", .name = "a", .dbs = {"*"}},
        {.token = "inline-secret", .token_env = "GS_TEST_AT_BOTH", .name = "b", .dbs = {"*"}},
    };
    fixture f = {0};
    cr_assert_eq(create(&f, both, 2, NULL, NULL), GS_ERROR);
    expect_config_error(&f, "tokens[1]", "inline-secret");
    cr_assert(strstr(f.err.message, "exactly one"), "%s", f.err.message);
    cr_assert_null(strstr(f.err.message, "env-value"));
    th_unload(&f.p);

    static const entry neither[] = {{.name = "c", .dbs = {"*"}}};
    fixture g = {0};
    cr_assert_eq(create(&g, neither, 1, NULL, NULL), GS_ERROR);
    expect_config_error(&g, "tokens[0]", NULL);
    cr_assert(strstr(g.err.message, "neither"), "%s", g.err.message);
    th_unload(&g.p);
}

Test(auth_token, empty_and_unsendable_tokens_are_refused)
{
    static const entry empty[] = {{.token = "", .name = "a", .dbs = {"*"}}};
    fixture f = {0};
    cr_assert_eq(create(&f, empty, 1, NULL, NULL), GS_ERROR);
    expect_config_error(&f, "tokens[0]", NULL);
    cr_assert(strstr(f.err.message, "empty"), "%s", f.err.message);
    th_unload(&f.p);

    static const entry spaced[] = {{.token = "has space-secret", .name = "a", .dbs = {"*"}}};
    fixture g = {0};
    cr_assert_eq(create(&g, spaced, 1, NULL, NULL), GS_ERROR);
    expect_config_error(&g, "tokens[0]", "has space-secret");
    th_unload(&g.p);
}

Test(auth_token, duplicate_tokens_are_refused_without_revealing_them)
{
    static const entry dup[] = {
        {.token = "same-secret-000", .name = "first", .dbs = {"*"}},
        {.token = "other", .name = "second", .dbs = {"*"}},
        {.token = "same-secret-000", .name = "third", .dbs = {"main"}},
    };
    fixture f = {0};
    cr_assert_eq(create(&f, dup, 3, NULL, NULL), GS_ERROR);
    expect_config_error(&f, "tokens[2]", "same-secret-000");
    cr_assert(strstr(f.err.message, "tokens[0]"), "%s", f.err.message);
    th_unload(&f.p);
}

Test(auth_token, entry_shape_is_validated)
{
    static const entry noname[] = {{.token = "x1", .dbs = {"*"}}};
    static const entry nodbs[] = {{.token = "x2", .name = "a"}};
    static const entry emptydb[] = {{.token = "x3", .name = "a", .dbs = {"main", ""}}};
    struct {
        const entry *e;
        const char *phrase;
    } cases[] = {{noname, "name"}, {nodbs, "databases"}, {emptydb, "databases[1]"}};
    for (size_t i = 0; i < 3; i++) {
        fixture f = {0};
        cr_assert_eq(create(&f, cases[i].e, 1, NULL, NULL), GS_ERROR);
        expect_config_error(&f, cases[i].phrase, NULL);
        cr_assert(strstr(f.err.message, "tokens[0]"), "%s", f.err.message);
        th_unload(&f.p);
    }
    fixture g = {0};
    cr_assert_eq(create(&g, NULL, 0, NULL, NULL), GS_ERROR);
    expect_config_error(&g, "tokens is empty", NULL);
    th_unload(&g.p);

    static const entry ok[] = {{.token = "x4", .name = "a", .dbs = {"*"}}};
    fixture h = {0};
    cr_assert_eq(create(&h, ok, 1, "bad header:", NULL), GS_ERROR);
    expect_config_error(&h, "header", NULL);
    th_unload(&h.p);
    fixture k = {0};
    cr_assert_eq(create(&k, ok, 1, NULL, "two words"), GS_ERROR);
    expect_config_error(&k, "scheme", NULL);
    th_unload(&k.p);
}

Test(auth_token, claims_are_validated)
{
    struct {
        const char *claims;
        const char *phrase;
    } cases[] = {
        {"{not json", "not valid JSON"},         {"[1,2]", "must be a map"},
        {"\"text\"", "must be a map"},           {"{\"name\":\"mallory\"}", "must not set 'name'"},
        {"{\"a\":1,\"a\":2}", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        entry e[] = {{.token = "claims-secret", .name = "a", .dbs = {"*"}, .claims = NULL}};
        e[0].claims = cases[i].claims;
        fixture f = {0};
        cr_assert_eq(create(&f, e, 1, NULL, NULL), GS_ERROR, "claims %s accepted", cases[i].claims);
        expect_config_error(&f, cases[i].phrase, "claims-secret");
        cr_assert(strstr(f.err.message, "tokens[0]"), "%s", f.err.message);
        th_unload(&f.p);
    }
}

Test(auth_token, name_is_escaped_in_identity)
{
    static const entry e[] = {{.token = "q", .name = "o\"brien\\x", .dbs = {"*"}}};
    fixture f = {0};
    cr_assert_eq(create(&f, e, 1, NULL, NULL), GS_OK, "%s", f.err.message);
    expect_identity(&f, "Bearer q", "main", "{\"name\":\"o\\\"brien\\\\x\"}");
    teardown(&f);
}

Test(auth_token, tokens_never_reach_the_log)
{
    cr_assert_eq(setenv("GS_TEST_AT_LOGGED", "env-secret-999", 1), 0);
    static const entry e[] = {
        {.token = "inline-secret-111", .name = "a", .dbs = {"main"}},
        {.token_env = "GS_TEST_AT_LOGGED", .name = "b", .dbs = {"*"}},
    };
    fixture f = {0};
    cr_assert_eq(create(&f, e, 2, NULL, NULL), GS_OK);
    char *id = NULL;
    cr_assert_eq(auth(&f, "Authorization", "Bearer inline-secret-111", "main", &id), GS_OK);
    th_host.free(id);
    auth(&f, "Authorization", "Bearer inline-secret-111", "other", &id);
    auth(&f, "Authorization", "Bearer guessed-secret-222", "main", &id);
    teardown(&f);
    cr_assert(th_log_len > 0, "create logs a summary line");
    cr_assert_null(strstr(th_log_text, "secret"), "log reveals a token:\n%s", th_log_text);
}

Test(auth_token, instance_outlives_its_config)
{
    /* Tokens and names live in buffers the test overwrites after create. */
    char tok[] = "mutable-token";
    char name[] = "mutable-name";
    char db[] = "main";
    entry e[] = {{.token = tok, .name = name, .dbs = {db}}};
    fixture f = {0};
    cr_assert_eq(create(&f, e, 1, NULL, NULL), GS_OK);
    memset(tok, 'x', sizeof tok - 1);
    memset(name, 'y', sizeof name - 1);
    memset(db, 'z', sizeof db - 1);
    expect_identity(&f, "Bearer mutable-token", "main", "{\"name\":\"mutable-name\"}");
    teardown(&f);
}

Test(auth_token, every_allocation_failure_in_create_is_clean)
{
    int succeeded = 0;
    for (long n = 0; n < 200 && !succeeded; n++) {
        fixture f = {0};
        f.p = th_load(AT_FILE);
        fill(&f, two, 2, NULL, NULL);
        f.err = th_error();
        th_fail_after(n);
        gs_status st = f.p.vt->create(&th_host, f.cfg, &f.instance, &f.err);
        th_fail_after(-1);
        release_config(&f);
        if (st == GS_OK) {
            succeeded = 1;
            expect_identity(&f, "Bearer alpha-secret-123", "main", "{\"name\":\"alice\"}");
        } else {
            cr_assert_null(f.instance);
            cr_assert_str_eq(f.err.code, "INTERNAL_ERROR", "allocation %ld: %s", n, f.err.message);
            cr_assert(strstr(f.err.message, "out of memory"));
        }
        teardown(&f);
    }
    cr_assert(succeeded, "create never succeeded within 200 allocations");
}

Test(auth_token, allocation_failure_in_authenticate_is_hook_error)
{
    fixture f = {0};
    cr_assert_eq(create(&f, two, 2, NULL, NULL), GS_OK);
    char *id = NULL;
    th_fail_after(0);
    gs_status st = auth(&f, "Authorization", "Bearer alpha-secret-123", "main", &id);
    th_fail_after(-1);
    cr_assert_eq(st, GS_ERROR);
    cr_assert_eq(f.err.status, 500);
    cr_assert_str_eq(f.err.code, "HOOK_ERROR");
    teardown(&f);
}

/* ---- concurrent authenticate calls on one instance ---- */

typedef struct worker {
    fixture *f;
    int index;
    int failures;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < 2000; i++) {
        int which = (i + w->index) % 3;
        const char *value = which == 0   ? "Bearer alpha-secret-123"
                            : which == 1 ? "Bearer beta-secret-456"
                                         : "Bearer wrong";
        gs_header h = {"Authorization", value};
        gs_auth_context c = th_ctx(&h, 1, "main", "127.0.0.1:1");
        gs_error err = th_error();
        char *id = NULL;
        gs_status st = w->f->p.vt->authenticate(w->f->instance, &c, &id, &err);
        int ok = which == 0   ? st == GS_OK && strcmp(id, "{\"name\":\"alice\"}") == 0
                 : which == 1 ? st == GS_OK && strncmp(id, "{\"name\":\"svc\"", 13) == 0
                              : st == GS_ERROR && err.status == 401;
        if (!ok)
            w->failures++;
        th_host.free(id);
    }
    return NULL;
}

Test(auth_token, concurrent_authenticate)
{
    fixture f = {0};
    cr_assert_eq(create(&f, two, 2, NULL, NULL), GS_OK);
    pthread_t threads[4];
    worker workers[4];
    for (int i = 0; i < 4; i++) {
        workers[i] = (worker){.f = &f, .index = i};
        cr_assert_eq(pthread_create(&threads[i], NULL, worker_main, &workers[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        cr_assert_eq(workers[i].failures, 0, "thread %d saw %d wrong answers", i,
                     workers[i].failures);
    }
    teardown(&f);
}

Test(auth_token, several_instances_from_one_plugin)
{
    static const entry a[] = {{.token = "ta", .name = "a", .dbs = {"one"}}};
    static const entry b[] = {{.token = "tb", .name = "b", .dbs = {"two"}}};
    fixture fa = {0}, fb = {0};
    cr_assert_eq(create(&fa, a, 1, NULL, NULL), GS_OK);
    cr_assert_eq(create(&fb, b, 1, "x-token", ""), GS_OK);
    expect_identity(&fa, "Bearer ta", "one", "{\"name\":\"a\"}");
    expect_refusal(&fa, "Authorization", "Bearer tb", "two", 401, "UNAUTHORIZED", "unknown");
    char *id = NULL;
    cr_assert_eq(auth(&fb, "x-token", "tb", "two", &id), GS_OK);
    th_host.free(id);
    fb.p.vt->destroy(fb.instance);
    fb.instance = NULL;
    th_unload(&fb.p);
    teardown(&fa);
}
