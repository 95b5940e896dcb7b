/* Config module: YAML -> tree, ${ENV} expansion, validation/filling against key tables,
 * overrides, JSON rendering, describe, and allocation-failure injection. */
#include <criterion/criterion.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "config/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a sample table covering every type ------------------------------------------------ */

typedef struct limits_cfg {
    int64_t max_body;
    double ratio;
} limits_cfg;

typedef struct server_cfg {
    const char *host;
    int64_t port;
    int accept_sql;
    const char *mode;
    limits_cfg limits;
} server_cfg;

typedef struct db_cfg {
    const char *id;
    const char *path;
    int64_t readers;
    gs_config_strings cdc;
} db_cfg;

typedef struct root_cfg {
    const char *name;
    server_cfg server;
    gs_config_list databases;
    gs_config_strings tags;
    const char *extra;
    double weight;
    int debug;
} root_cfg;

static const char *const modes[] = {"ro", "rw", "admin", NULL};

static const gs_config_key limits_keys[] = {
    {.name = "max_body",
     .type = GS_CFG_INT,
     .default_value = "1048576",
     .offset = offsetof(limits_cfg, max_body),
     .help = "largest request body",
     .min = 1,
     .max = 1 << 30},
    {.name = "ratio",
     .type = GS_CFG_DOUBLE,
     .default_value = "0.5",
     .offset = offsetof(limits_cfg, ratio),
     .help = "a ratio",
     .min = 0,
     .max = 1},
};

static const gs_config_key server_keys[] = {
    {.name = "host",
     .type = GS_CFG_STRING,
     .default_value = "127.0.0.1",
     .offset = offsetof(server_cfg, host),
     .help = "address to bind"},
    {.name = "port",
     .type = GS_CFG_INT,
     .default_value = "9876",
     .offset = offsetof(server_cfg, port),
     .help = "TCP port",
     .min = 0,
     .max = 65535},
    {.name = "accept_sql",
     .type = GS_CFG_BOOL,
     .default_value = "false",
     .offset = offsetof(server_cfg, accept_sql),
     .help = "accept raw SQL"},
    {.name = "mode",
     .type = GS_CFG_STRING,
     .default_value = "rw",
     .offset = offsetof(server_cfg, mode),
     .help = "access mode",
     .choices = modes},
    {.name = "limits",
     .type = GS_CFG_SECTION,
     .offset = offsetof(server_cfg, limits),
     .help = "request limits",
     .children = limits_keys,
     .child_count = 2},
};

static const gs_config_key db_keys[] = {
    {.name = "id",
     .type = GS_CFG_STRING,
     .required = 1,
     .offset = offsetof(db_cfg, id),
     .help = "database id"},
    {.name = "path",
     .type = GS_CFG_STRING,
     .required = 1,
     .offset = offsetof(db_cfg, path),
     .help = "SQLite file"},
    {.name = "readers",
     .type = GS_CFG_INT,
     .default_value = "4",
     .offset = offsetof(db_cfg, readers),
     .help = "reader connections",
     .min = 1,
     .max = 64},
    {.name = "cdc",
     .type = GS_CFG_STRING_LIST,
     .offset = offsetof(db_cfg, cdc),
     .help = "tables to watch"},
};

static const gs_config_key root_keys[] = {
    {.name = "name",
     .type = GS_CFG_STRING,
     .offset = offsetof(root_cfg, name),
     .help = "node name"},
    {.name = "server",
     .type = GS_CFG_SECTION,
     .offset = offsetof(root_cfg, server),
     .help = "HTTP server",
     .children = server_keys,
     .child_count = 5},
    {.name = "databases",
     .type = GS_CFG_LIST,
     .offset = offsetof(root_cfg, databases),
     .help = "databases served",
     .children = db_keys,
     .child_count = 4,
     .child_struct_size = sizeof(db_cfg)},
    {.name = "tags",
     .type = GS_CFG_STRING_LIST,
     .default_value = "a, b",
     .offset = offsetof(root_cfg, tags),
     .help = "labels"},
    {.name = "extra",
     .type = GS_CFG_JSON,
     .offset = offsetof(root_cfg, extra),
     .help = "free-form settings"},
    {.name = "weight",
     .type = GS_CFG_DOUBLE,
     .offset = offsetof(root_cfg, weight),
     .help = "unbounded number"},
    {.name = "debug", .type = GS_CFG_BOOL, .offset = offsetof(root_cfg, debug), .help = "debug"},
};
#define ROOT_COUNT (sizeof root_keys / sizeof root_keys[0])

/* ---- helpers ------------------------------------------------------------------------------- */

static gs_status load(const char *text, gs_cfg_doc **doc, gs_error *err)
{
    gs_error_init(err);
    return gs_cfg_load_string(text, strlen(text), "config.yaml", doc, err);
}

/* Load, fill the root table, free the doc. The arena stays with the caller. */
static gs_status load_fill(const char *text, root_cfg *out, gs_cfg_arena *arena, gs_error *err)
{
    gs_cfg_doc *doc = NULL;
    memset(out, 0xA5, sizeof *out); /* fill must write every key */
    gs_status st = load(text, &doc, err);
    if (st)
        return st;
    st = gs_cfg_fill(doc, doc->root, "", root_keys, ROOT_COUNT, sizeof(gs_config_key), out, arena,
                     err);
    gs_cfg_free(doc);
    return st;
}

/* Expect load_fill to fail with INVALID_CONFIG and a message containing each of the
 * NULL-terminated needles. */
static void expect_fail(const char *text, const char *const *needles)
{
    root_cfg c;
    gs_cfg_arena a = {0};
    gs_error err;
    gs_status st = load_fill(text, &c, &a, &err);
    gs_cfg_arena_free(&a);
    cr_assert_lt(st, 0, "expected failure for:\n%s", text);
    cr_assert_str_eq(err.code, "INVALID_CONFIG", "code %s: %s", err.code, err.message);
    cr_assert_eq(err.status, 0);
    for (size_t i = 0; needles[i]; i++)
        cr_assert(strstr(err.message, needles[i]), "message lacks '%s': %s", needles[i],
                  err.message);
}
#define EXPECT_FAIL(text, ...)                                                                     \
    do {                                                                                           \
        const char *const needles_[] = {__VA_ARGS__, NULL};                                        \
        expect_fail(text, needles_);                                                               \
    } while (0)

static const char *FULL = "name: node-a\n"                /* 1 */
                          "server:\n"                     /* 2 */
                          "  host: 0.0.0.0\n"             /* 3 */
                          "  port: 8080\n"                /* 4 */
                          "  accept_sql: yes\n"           /* 5 */
                          "  mode: admin\n"               /* 6 */
                          "  limits:\n"                   /* 7 */
                          "    max_body: 2048\n"          /* 8 */
                          "    ratio: 0.25\n"             /* 9 */
                          "databases:\n"                  /* 10 */
                          "  - id: main\n"                /* 11 */
                          "    path: /tmp/main.db\n"      /* 12 */
                          "    cdc: [users, orders]\n"    /* 13 */
                          "  - id: logs\n"                /* 14 */
                          "    path: /tmp/logs.db\n"      /* 15 */
                          "    readers: 2\n"              /* 16 */
                          "tags:\n"                       /* 17 */
                          "  - x\n"                       /* 18 */
                          "  - \"y z\"\n"                 /* 19 */
                          "extra:\n"                      /* 20 */
                          "  a: 1\n"                      /* 21 */
                          "  b: [true, null, \"2\", x]\n" /* 22 */
                          "weight: -1.5e3\n"              /* 23 */
                          "debug: On\n";                  /* 24 */

/* ---- every type --------------------------------------------------------------------------- */

Test(config, fills_every_type)
{
    root_cfg c;
    gs_cfg_arena a = {0};
    gs_error err;
    cr_assert_eq(load_fill(FULL, &c, &a, &err), GS_OK, "%s", err.message);
    cr_assert_str_eq(c.name, "node-a");
    cr_assert_str_eq(c.server.host, "0.0.0.0");
    cr_assert_eq(c.server.port, 8080);
    cr_assert_eq(c.server.accept_sql, 1);
    cr_assert_str_eq(c.server.mode, "admin");
    cr_assert_eq(c.server.limits.max_body, 2048);
    cr_assert_float_eq(c.server.limits.ratio, 0.25, 1e-12);
    cr_assert_eq(c.databases.count, 2);
    db_cfg *d = c.databases.items;
    cr_assert_str_eq(d[0].id, "main");
    cr_assert_str_eq(d[0].path, "/tmp/main.db");
    cr_assert_eq(d[0].readers, 4); /* default */
    cr_assert_eq(d[0].cdc.count, 2);
    cr_assert_str_eq(d[0].cdc.items[0], "users");
    cr_assert_str_eq(d[0].cdc.items[1], "orders");
    cr_assert_null(d[0].cdc.items[2]);
    cr_assert_str_eq(d[1].id, "logs");
    cr_assert_eq(d[1].readers, 2);
    cr_assert_eq(d[1].cdc.count, 0);
    cr_assert_eq(c.tags.count, 2);
    cr_assert_str_eq(c.tags.items[0], "x");
    cr_assert_str_eq(c.tags.items[1], "y z");
    cr_assert_null(c.tags.items[2]);
    cr_assert_str_eq(c.extra, "{\"a\":1,\"b\":[true,null,\"2\",\"x\"]}");
    cr_assert_float_eq(c.weight, -1500.0, 1e-9);
    cr_assert_eq(c.debug, 1);
    gs_cfg_arena_free(&a);
    cr_assert_eq(a.count, 0);
    cr_assert_null(a.ptrs);
}

Test(config, defaults_and_zero_values)
{
    root_cfg c;
    gs_cfg_arena a = {0};
    gs_error err;
    cr_assert_eq(load_fill("", &c, &a, &err), GS_OK, "%s", err.message);
    cr_assert_null(c.name);
    cr_assert_str_eq(c.server.host, "127.0.0.1");
    cr_assert_eq(c.server.port, 9876);
    cr_assert_eq(c.server.accept_sql, 0);
    cr_assert_str_eq(c.server.mode, "rw");
    cr_assert_eq(c.server.limits.max_body, 1048576);
    cr_assert_float_eq(c.server.limits.ratio, 0.5, 1e-12);
    cr_assert_eq(c.databases.count, 0);
    cr_assert_null(c.databases.items);
    cr_assert_eq(c.tags.count, 2);
    cr_assert_str_eq(c.tags.items[0], "a");
    cr_assert_str_eq(c.tags.items[1], "b");
    cr_assert_null(c.tags.items[2]);
    cr_assert_null(c.extra);
    cr_assert_eq(c.weight, 0.0);
    cr_assert_eq(c.debug, 0);
    gs_cfg_arena_free(&a);
}

Test(config, null_values_count_as_absent)
{
    root_cfg c;
    gs_cfg_arena a = {0};
    gs_error err;
    const char *y = "name: ~\n"
                    "server:\n"
                    "  host: null\n"
                    "  port:\n"
                    "  mode: NULL\n"
                    "  limits: ~\n"
                    "tags: ~\n"
                    "extra: Null\n"
                    "databases:\n";
    cr_assert_eq(load_fill(y, &c, &a, &err), GS_OK, "%s", err.message);
    cr_assert_null(c.name);
    cr_assert_str_eq(c.server.host, "127.0.0.1");
    cr_assert_eq(c.server.port, 9876);
    cr_assert_str_eq(c.server.mode, "rw");
    cr_assert_eq(c.server.limits.max_body, 1048576);
    cr_assert_eq(c.tags.count, 2);
    cr_assert_null(c.extra);
    cr_assert_eq(c.databases.count, 0);
    gs_cfg_arena_free(&a);
}

Test(config, quoted_null_is_a_string)
{
    root_cfg c;
    gs_cfg_arena a = {0};
    gs_error err;
    cr_assert_eq(load_fill("name: \"null\"\nserver: {host: ''}\n", &c, &a, &err), GS_OK, "%s",
                 err.message);
    cr_assert_str_eq(c.name, "null");
    cr_assert_str_eq(c.server.host, "");
    gs_cfg_arena_free(&a);
}

/* ---- integers, bounds ------------------------------------------------------------------------ */

Test(config, int_message_format)
{
    root_cfg c;
    gs_cfg_arena a = {0};
    gs_error err;
    cr_assert_lt(load_fill("# comment\nserver:\n  port: abc\n", &c, &a, &err), 0);
    cr_assert_str_eq(err.message,
                     "config.yaml:3: server.port: expected an integer from 0 to 65535, got 'abc'");
    gs_cfg_arena_free(&a);
}

Test(config, int_bounds_and_forms)
{
    EXPECT_FAIL("server: {port: 65536}", "config.yaml:1:", "server.port", "got '65536'");
    EXPECT_FAIL("server: {port: -1}", "from 0 to 65535", "got '-1'");
    EXPECT_FAIL("server: {port: 1.5}", "server.port", "got '1.5'");
    EXPECT_FAIL("server: {port: 0x10}", "got '0x10'");
    EXPECT_FAIL("server: {port: ''}", "got ''");
    EXPECT_FAIL("server: {port: [1]}", "server.port", "expected an integer", "got a list");
    EXPECT_FAIL("server:\n  port:\n    a: 1\n", "config.yaml:2:", "got a map");

    root_cfg c;
    gs_cfg_arena a = {0};
    gs_error err;
    cr_assert_eq(load_fill("server: {port: +0}", &c, &a, &err), GS_OK, "%s", err.message);
    cr_assert_eq(c.server.port, 0);
    cr_assert_eq(load_fill("server: {port: \"65535\"}", &c, &a, &err), GS_OK, "%s", err.message);
    cr_assert_eq(c.server.port, 65535);
    gs_cfg_arena_free(&a);
}

static const gs_config_key int64_keys[] = {
    {.name = "v", .type = GS_CFG_INT, .offset = 0},
};

static gs_status fill_int64(const char *text, int64_t *v, gs_error *err)
{
    gs_cfg_doc *doc = NULL;
    gs_status st = load(text, &doc, err);
    if (st)
        return st;
    gs_cfg_arena a = {0};
    st = gs_cfg_fill(doc, doc->root, "", int64_keys, 1, sizeof(gs_config_key), v, &a, err);
    gs_cfg_arena_free(&a);
    gs_cfg_free(doc);
    return st;
}

Test(config, int64_limits)
{
    int64_t v = 0;
    gs_error err;
    cr_assert_eq(fill_int64("v: 9223372036854775807", &v, &err), GS_OK, "%s", err.message);
    cr_assert_eq(v, INT64_MAX);
    cr_assert_eq(fill_int64("v: -9223372036854775808", &v, &err), GS_OK, "%s", err.message);
    cr_assert_eq(v, INT64_MIN);
    cr_assert_lt(fill_int64("v: 9223372036854775808", &v, &err), 0);
    cr_assert(strstr(err.message, "config.yaml:1: v: expected an integer"), "%s", err.message);
    cr_assert_lt(fill_int64("v: -9223372036854775809", &v, &err), 0);
    cr_assert_lt(fill_int64("v: 99999999999999999999999999999", &v, &err), 0);
    cr_assert_lt(fill_int64("v: '-'", &v, &err), 0);
    cr_assert_lt(fill_int64("v: ' 5'", &v, &err), 0);
}

/* ---- booleans, doubles ---------------------------------------------------------------------- */

Test(config, bools)
{
    const char *yes[] = {"true", "True", "TRUE", "yes", "Yes", "on", "ON"};
    const char *no[] = {"false", "FALSE", "no", "No", "off", "Off"};
    char y[64];
    root_cfg c;
    gs_cfg_arena a = {0};
    gs_error err;
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        snprintf(y, sizeof y, "debug: %s\n", yes[i]);
        cr_assert_eq(load_fill(y, &c, &a, &err), GS_OK, "%s: %s", yes[i], err.message);
        cr_assert_eq(c.debug, 1, "%s", yes[i]);
    }
    for (size_t i = 0; i < sizeof no / sizeof *no; i++) {
        snprintf(y, sizeof y, "debug: %s\n", no[i]);
        cr_assert_eq(load_fill(y, &c, &a, &err), GS_OK, "%s: %s", no[i], err.message);
        cr_assert_eq(c.debug, 0, "%s", no[i]);
    }
    gs_cfg_arena_free(&a);
    EXPECT_FAIL("name: x\ndebug: maybe\n", "config.yaml:2: debug: expected true or false",
                "got 'maybe'");
    EXPECT_FAIL("debug: 1\n", "got '1'");
    EXPECT_FAIL("server:\n  accept_sql: [yes]\n", "config.yaml:2:", "server.accept_sql",
                "got a list");
}

Test(config, doubles)
{
    root_cfg c;
    gs_cfg_arena a = {0};
    gs_error err;
    cr_assert_eq(load_fill("weight: 1e300\nserver: {limits: {ratio: 1}}\n", &c, &a, &err), GS_OK,
                 "%s", err.message);
    cr_assert_float_eq(c.weight, 1e300, 1e290);
    cr_assert_float_eq(c.server.limits.ratio, 1.0, 1e-12);
    gs_cfg_arena_free(&a);
    EXPECT_FAIL("server:\n  limits:\n    ratio: 1.01\n",
                "config.yaml:3: server.limits.ratio: expected a number from 0 to 1, got '1.01'");
    EXPECT_FAIL("weight: nan\n", "config.yaml:1: weight: expected a finite number, got 'nan'");
    EXPECT_FAIL("weight: inf\n", "got 'inf'");
    EXPECT_FAIL("weight: 1e999\n", "got '1e999'");
    EXPECT_FAIL("weight: 1.5x\n", "got '1.5x'");
    EXPECT_FAIL("weight: ' 1'\n", "got ' 1'");
    EXPECT_FAIL("weight: \n  - 1\n", "weight", "got a list");
}

/* ---- strings, choices, string lists ---------------------------------------------------------- */

Test(config, strings_and_choices)
{
    EXPECT_FAIL("name:\n  first: a\n", "config.yaml:1: name: expected a string, got a map");
    EXPECT_FAIL("name: [a]\n", "name: expected a string, got a list");
    EXPECT_FAIL("server:\n  mode: wr\n",
                "config.yaml:2: server.mode: expected one of (ro, rw, admin), got 'wr'");
    root_cfg c;
    gs_cfg_arena a = {0};
    gs_error err;
    cr_assert_eq(load_fill("name: 12\nserver: {mode: ro}\n", &c, &a, &err), GS_OK, "%s",
                 err.message);
    cr_assert_str_eq(c.name, "12");
    cr_assert_str_eq(c.server.mode, "ro");
    gs_cfg_arena_free(&a);
}

Test(config, string_lists)
{
    EXPECT_FAIL("tags: x\n", "config.yaml:1: tags: expected a list", "got the single value 'x'");
    EXPECT_FAIL("tags: {a: 1}\n", "tags: expected a list of strings, got a map");
    EXPECT_FAIL("tags:\n  - a\n  - [b]\n", "config.yaml:3: tags[1]: expected a string, got a list");
    EXPECT_FAIL("tags:\n  - a\n  -\n", "tags[1]: expected a string, got an empty value");
    root_cfg c;
    gs_cfg_arena a = {0};
    gs_error err;
    cr_assert_eq(load_fill("tags: []\n", &c, &a, &err), GS_OK, "%s", err.message);
    cr_assert_eq(c.tags.count, 0);
    cr_assert_not_null(c.tags.items);
    cr_assert_null(c.tags.items[0]);
    cr_assert_eq(load_fill("tags: [1, true, 'q']\n", &c, &a, &err), GS_OK, "%s", err.message);
    cr_assert_eq(c.tags.count, 3);
    cr_assert_str_eq(c.tags.items[0], "1");
    cr_assert_str_eq(c.tags.items[1], "true");
    cr_assert_str_eq(c.tags.items[2], "q");
    gs_cfg_arena_free(&a);
}

/* ---- required, unknown ------------------------------------------------------------------------
 */

Test(config, required_keys)
{
    EXPECT_FAIL("name: a\ndatabases:\n  - id: main\n",
                "config.yaml:3: databases[0]: missing required key 'path'");
    EXPECT_FAIL("databases:\n  - id: main\n    path: a\n  - path: b\n",
                "config.yaml:4: databases[1]: missing required key 'id'");
    EXPECT_FAIL("databases:\n  - id: main\n    path:\n",
                "config.yaml:3: databases[0].path:", "required", "empty");
}

Test(config, required_at_root_and_absent_map)
{
    static const gs_config_key keys[] = {
        {.name = "id", .type = GS_CFG_STRING, .required = 1, .offset = 0},
    };
    const char *id = NULL;
    gs_cfg_doc *doc = NULL;
    gs_error err;
    gs_cfg_arena a = {0};
    cr_assert_eq(load("\n\nother: 1\n", &doc, &err), GS_OK);
    /* an unknown key is reported before the missing one (document order first) */
    cr_assert_lt(gs_cfg_fill(doc, doc->root, "", keys, 1, sizeof keys[0], &id, &a, &err), 0);
    cr_assert(strstr(err.message, "config.yaml:3: other: unknown key 'other'; known keys: id"),
              "%s", err.message);
    gs_cfg_free(doc);

    cr_assert_eq(load("", &doc, &err), GS_OK);
    cr_assert_lt(gs_cfg_fill(doc, doc->root, "", keys, 1, sizeof keys[0], &id, &a, &err), 0);
    cr_assert_str_eq(err.message, "config.yaml:1: missing required key 'id'");
    /* NULL map: absent, no line known */
    cr_assert_lt(
        gs_cfg_fill(doc, NULL, "plugins[2].config", keys, 1, sizeof keys[0], &id, &a, &err), 0);
    cr_assert_str_eq(err.message, "config.yaml: plugins[2].config: missing required key 'id'");
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    gs_cfg_free(doc);
    gs_cfg_arena_free(&a);
}

Test(config, null_node_as_map_is_absent)
{
    static const gs_config_key keys[] = {
        {.name = "id", .type = GS_CFG_STRING, .default_value = "x", .offset = 0},
    };
    static const gs_config_key req[] = {
        {.name = "id", .type = GS_CFG_STRING, .required = 1, .offset = 0},
    };
    const char *id = NULL;
    gs_cfg_doc *doc = NULL;
    gs_error err;
    gs_cfg_arena a = {0};
    cr_assert_eq(load("a: 1\nconfig:\nlist: [1]\n", &doc, &err), GS_OK);
    const gs_cfg_node *cfg = gs_cfg_get(doc->root, "config");
    cr_assert_eq(gs_cfg_fill(doc, cfg, "config", keys, 1, sizeof keys[0], &id, &a, &err), GS_OK,
                 "%s", err.message);
    cr_assert_str_eq(id, "x");
    cr_assert_lt(gs_cfg_fill(doc, cfg, "config", req, 1, sizeof req[0], &id, &a, &err), 0);
    cr_assert_str_eq(err.message, "config.yaml:2: config: missing required key 'id'");
    cr_assert_lt(gs_cfg_fill(doc, gs_cfg_get(doc->root, "list"), "list", keys, 1, sizeof keys[0],
                             &id, &a, &err),
                 0);
    cr_assert_str_eq(err.message, "config.yaml:3: list: expected a map of keys, got a list");
    gs_cfg_free(doc);
    gs_cfg_arena_free(&a);
}

Test(config, unknown_keys)
{
    EXPECT_FAIL("server:\n  host: x\n  prot: 1\n",
                "config.yaml:3: server.prot: unknown key 'prot'; known keys: host, port, "
                "accept_sql, mode, limits");
    EXPECT_FAIL("databases:\n  - id: a\n    path: b\n  - id: c\n    path: d\n    wat: 1\n",
                "config.yaml:6: databases[1].wat: unknown key 'wat'");
    EXPECT_FAIL("nmae: x\n", "config.yaml:1: nmae: unknown key 'nmae'; known keys: name, server");
}

Test(config, unknown_key_list_is_cut_politely)
{
    enum { N = 60 };
    static gs_config_key keys[N];
    static char names[N][24];
    static int64_t vals[N];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "a_rather_long_key_%02d", i);
        keys[i] = (gs_config_key){
            .name = names[i], .type = GS_CFG_INT, .offset = (size_t)i * sizeof(int64_t)};
    }
    char bigkey[400];
    memset(bigkey, 'k', sizeof bigkey - 1);
    bigkey[sizeof bigkey - 1] = '\0';
    char yaml[512];
    snprintf(yaml, sizeof yaml, "%s: 1\n", bigkey);
    gs_cfg_doc *doc = NULL;
    gs_error err;
    gs_cfg_arena a = {0};
    cr_assert_eq(load(yaml, &doc, &err), GS_OK, "%s", err.message);
    cr_assert_lt(gs_cfg_fill(doc, doc->root, "", keys, N, sizeof keys[0], vals, &a, &err), 0);
    cr_assert(strlen(err.message) < sizeof err.message);
    cr_assert(strstr(err.message, "config.yaml:1: "), "%s", err.message);
    cr_assert(strstr(err.message, "known keys: a_rather_long_key_00, "), "%s", err.message);
    cr_assert(strstr(err.message, "..."), "%s", err.message);
    gs_cfg_free(doc);
    gs_cfg_arena_free(&a);
}

/* ---- sections and lists -----------------------------------------------------------------------
 */

Test(config, nested_sections)
{
    EXPECT_FAIL("server:\n  limits:\n    max_body: 0\n",
                "config.yaml:3: server.limits.max_body: expected an integer from 1 to "
                "1073741824, got '0'");
    EXPECT_FAIL("server:\n  limits: 5\n", "config.yaml:2: server.limits: expected a map",
                "a single value");
    EXPECT_FAIL("server: [1]\n", "config.yaml:1: server: expected a map of keys, got a list");
    EXPECT_FAIL("server:\n  limits:\n    bogus: 1\n",
                "config.yaml:3: server.limits.bogus: unknown key 'bogus'; known keys: "
                "max_body, ratio");
}

Test(config, required_inside_absent_section)
{
    static const gs_config_key inner[] = {
        {.name = "dir", .type = GS_CFG_STRING, .required = 1, .offset = 0},
    };
    static const gs_config_key outer[] = {
        {.name = "node", .type = GS_CFG_SECTION, .offset = 0, .children = inner, .child_count = 1},
    };
    const char *dir = NULL;
    gs_cfg_doc *doc = NULL;
    gs_error err;
    gs_cfg_arena a = {0};
    cr_assert_eq(load("\n", &doc, &err), GS_OK);
    cr_assert_lt(gs_cfg_fill(doc, doc->root, "", outer, 1, sizeof outer[0], &dir, &a, &err), 0);
    cr_assert(strstr(err.message, "config.yaml:1: node: missing required key 'dir'"), "%s",
              err.message);
    gs_cfg_free(doc);
    gs_cfg_arena_free(&a);
}

Test(config, list_items_report_their_lines)
{
    EXPECT_FAIL("databases:\n"
                "  - id: a\n"
                "    path: x\n"
                "  - id: b\n"
                "    path: [1, 2]\n",
                "config.yaml:5: databases[1].path: expected a string, got a list");
    EXPECT_FAIL("databases:\n"
                "  - id: a\n"
                "    path: x\n"
                "    readers: 100\n",
                "config.yaml:4: databases[0].readers: expected an integer from 1 to 64, got "
                "'100'");
    EXPECT_FAIL("databases:\n  - just-a-string\n",
                "config.yaml:2: databases[0]: expected a map, got a single value");
    EXPECT_FAIL("databases: {id: a}\n", "databases: expected a list of maps, got a map");
    EXPECT_FAIL("databases:\n  - id: a\n    path: x\n    cdc: users\n",
                "config.yaml:4: databases[0].cdc: expected a list");
}

/* ---- JSON ---------------------------------------------------------------------------------- */

static char *json_of(const char *yaml)
{
    gs_cfg_doc *doc = NULL;
    gs_error err;
    cr_assert_eq(load(yaml, &doc, &err), GS_OK, "%s", err.message);
    gs_buf b;
    gs_buf_init(&b);
    gs_cfg_to_json(doc->root, &b);
    gs_cfg_free(doc);
    cr_assert(!b.oom);
    return gs_buf_take(&b, NULL);
}

Test(config, to_json)
{
    char *j = json_of("a: 1\n"
                      "b: -2.5e3\n"
                      "c: 01\n"
                      "d: true\n"
                      "e: False\n"
                      "f: ~\n"
                      "g:\n"
                      "h: '1'\n"
                      "i: \"true\"\n"
                      "j: yes\n"
                      "k: \"quote \\\" back \\\\ tab \\t nl \\n\"\n"
                      "l: [1, [2, {m: n}], []]\n"
                      "o: {}\n"
                      "p: 1.\n"
                      "q: .5\n"
                      "r: |\n  block 1\n");
    cr_assert_str_eq(j, "{\"a\":1,\"b\":-2.5e3,\"c\":\"01\",\"d\":true,\"e\":false,\"f\":null,"
                        "\"g\":null,\"h\":\"1\",\"i\":\"true\",\"j\":\"yes\","
                        "\"k\":\"quote \\\" back \\\\ tab \\t nl \\n\","
                        "\"l\":[1,[2,{\"m\":\"n\"}],[]],\"o\":{},\"p\":\"1.\",\"q\":\".5\","
                        "\"r\":\"block 1\\n\"}");
    gs_free(j);
    j = json_of("");
    cr_assert_str_eq(j, "{}");
    gs_free(j);
    gs_buf b;
    gs_buf_init(&b);
    gs_cfg_to_json(NULL, &b);
    cr_assert_str_eq(b.data, "null");
    gs_buf_free(&b);
}

Test(config, to_json_escapes_invalid_utf8)
{
    /* libyaml refuses invalid UTF-8, so build the node by hand */
    gs_cfg_node n = {.type = GS_CFG_NODE_SCALAR,
                     .value = "a\xff"
                              "b",
                     .quoted = 1};
    gs_buf b;
    gs_buf_init(&b);
    gs_cfg_to_json(&n, &b);
    cr_assert_str_eq(b.data, "\"a\xEF\xBF\xBD"
                             "b\"");
    gs_buf_free(&b);
}

/* ---- environment --------------------------------------------------------------------------- */

Test(config, env_expansion)
{
    setenv("GS_T_HOST", "10.0.0.1", 1);
    setenv("GS_T_PORT", "7000", 1);
    setenv("GS_T_EMPTY", "", 1);
    unsetenv("GS_T_UNSET");
    root_cfg c;
    gs_cfg_arena a = {0};
    gs_error err;
    cr_assert_eq(load_fill("name: \"${GS_T_HOST}:${GS_T_PORT}/$$x/$/a$b/${GS_T_EMPTY}|\"\n"
                           "server:\n"
                           "  host: ${GS_T_UNSET:-fallback}\n"
                           "  port: ${GS_T_PORT}\n"
                           "  mode: ${GS_T_EMPTY:-ro}\n"
                           "tags: ['${GS_T_UNSET:-}', $$$$, cost$]\n",
                           &c, &a, &err),
                 GS_OK, "%s", err.message);
    cr_assert_str_eq(c.name, "10.0.0.1:7000/$x/$/a$b/|");
    cr_assert_str_eq(c.server.host, "fallback");
    cr_assert_eq(c.server.port, 7000);
    cr_assert_str_eq(c.server.mode, "ro");
    cr_assert_str_eq(c.tags.items[0], "");
    cr_assert_str_eq(c.tags.items[1], "$$");
    cr_assert_str_eq(c.tags.items[2], "cost$");
    gs_cfg_arena_free(&a);

    /* an expanded plain number is a JSON number */
    char *j = json_of("p: ${GS_T_PORT}\n");
    cr_assert_str_eq(j, "{\"p\":7000}");
    gs_free(j);
}

Test(config, env_errors)
{
    unsetenv("GS_T_UNSET");
    EXPECT_FAIL("name: a\nserver:\n  host: ${GS_T_UNSET}\n",
                "config.yaml:3: server.host: environment variable 'GS_T_UNSET' is not set");
    EXPECT_FAIL("databases:\n  - id: ${GS_T_UNSET}\n",
                "config.yaml:2: databases[0].id:", "GS_T_UNSET");
    EXPECT_FAIL("name: ${GS_T_UNSET\n", "config.yaml:1: name:", "unterminated");
    EXPECT_FAIL("name: ${}\n", "config.yaml:1: name:", "variable name");
    EXPECT_FAIL("name: ${1A}\n", "variable name");
    EXPECT_FAIL("name: ${A-b}\n", "unexpected '-'");
    EXPECT_FAIL("name: ${A:-b\n", "unterminated");
}

/* ---- YAML refusals ----------------------------------------------------------------------- */

Test(config, duplicates_refused)
{
    EXPECT_FAIL("name: a\nserver:\n  port: 1\n  port: 2\n",
                "config.yaml:4: server.port: duplicate key 'port' (first at line 3)");
    EXPECT_FAIL("name: a\nname: b\n",
                "config.yaml:2: name: duplicate key 'name' (first at line 1)");
}

Test(config, anchors_aliases_tags_refused)
{
    EXPECT_FAIL("base: &b {x: 1}\nother: *b\n", "config.yaml:1: base:", "anchors");
    EXPECT_FAIL("a: 1\nb: *x\n", "config.yaml:2:", "alias");
    EXPECT_FAIL("name: !!str 5\n", "config.yaml:1: name:", "tags");
    EXPECT_FAIL("server: !custom {port: 1}\n", "config.yaml:1: server:", "tags");
    EXPECT_FAIL("? &k a\n: 1\n", "config.yaml:1:", "anchors");
}

Test(config, syntax_errors_report_lines)
{
    EXPECT_FAIL("name: a\nserver:\n  port: 1\n bad: [\n", "config.yaml:", "YAML syntax error");
    EXPECT_FAIL("a: 1\nb: 2\nc: d: e\n", "config.yaml:3:", "YAML syntax error");
    EXPECT_FAIL("a: \"unterminated\n", "config.yaml:", "YAML syntax error");
    EXPECT_FAIL("a: 1\n\tb: 2\n", "config.yaml:2:");
}

Test(config, structure_refused)
{
    EXPECT_FAIL("a: 1\n---\nb: 2\n", "config.yaml:2:", "second YAML document");
    EXPECT_FAIL("? [a, b]\n: 1\n", "config.yaml:1:", "keys must be plain scalars");
    EXPECT_FAIL("- a\n- b\n", "config.yaml:1:", "top level must be a map", "sequence");
    EXPECT_FAIL("hello\n", "config.yaml:1:", "top level must be a map", "scalar");
    EXPECT_FAIL("a: \"x\\0y\"\n", "config.yaml:1: a:", "NUL");
    EXPECT_FAIL("a: 1\nb: \xff\xfe\n", "config.yaml:2:", "UTF-8");
}

Test(config, empty_documents_are_empty_maps)
{
    const char *texts[] = {"", "\n\n", "# only a comment\n", "---\n", "---\n...\n", "~\n", "{}\n"};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        gs_cfg_doc *doc = NULL;
        gs_error err;
        cr_assert_eq(load(texts[i], &doc, &err), GS_OK, "'%s': %s", texts[i], err.message);
        cr_assert_eq(doc->root->type, GS_CFG_NODE_MAP);
        cr_assert_eq(doc->root->count, 0);
        cr_assert_str_eq(doc->file, "config.yaml");
        gs_cfg_free(doc);
    }
}

Test(config, deep_nesting_refused)
{
    char text[1024];
    size_t o = 0;
    o += (size_t)snprintf(text + o, sizeof text - o, "a: ");
    for (int i = 0; i < 100; i++)
        text[o++] = '[';
    for (int i = 0; i < 100; i++)
        text[o++] = ']';
    text[o] = '\0';
    EXPECT_FAIL(text, "config.yaml:1:", "nested deeper than 64 levels");
}

Test(config, tree_lines_and_columns)
{
    gs_cfg_doc *doc = NULL;
    gs_error err;
    cr_assert_eq(load(FULL, &doc, &err), GS_OK, "%s", err.message);
    const gs_cfg_node *server = gs_cfg_get(doc->root, "server");
    cr_assert_not_null(server);
    cr_assert_eq(server->type, GS_CFG_NODE_MAP);
    cr_assert_eq(server->line, 2);
    cr_assert_eq(server->col, 1);
    const gs_cfg_node *port = gs_cfg_get(server, "port");
    cr_assert_eq(port->line, 4);
    cr_assert_eq(port->col, 3);
    cr_assert_str_eq(port->key, "port");
    cr_assert_str_eq(port->value, "8080");
    cr_assert_eq(port->quoted, 0);
    const gs_cfg_node *dbs = gs_cfg_get(doc->root, "databases");
    cr_assert_eq(dbs->type, GS_CFG_NODE_SEQ);
    cr_assert_eq(dbs->count, 2);
    cr_assert_eq(dbs->children[1]->line, 14);
    cr_assert_null(dbs->children[1]->key);
    const gs_cfg_node *tags = gs_cfg_get(doc->root, "tags");
    cr_assert_eq(tags->children[1]->quoted, 1);
    cr_assert_null(gs_cfg_get(doc->root, "nope"));
    cr_assert_null(gs_cfg_get(port, "x"));
    cr_assert_null(gs_cfg_get(NULL, "x"));
    gs_cfg_free(doc);
    gs_cfg_free(NULL);
}

/* ---- files ------------------------------------------------------------------------------- */

Test(config, load_file)
{
    char dir[] = "/tmp/gs_config_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/gw.yaml", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("name: from-file\nserver:\n  port: nope\n", f);
    fclose(f);

    gs_cfg_doc *doc = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_cfg_load_file(path, &doc, &err), GS_OK, "%s", err.message);
    cr_assert_str_eq(doc->file, path);
    root_cfg c;
    gs_cfg_arena a = {0};
    cr_assert_lt(
        gs_cfg_fill(doc, doc->root, "", root_keys, ROOT_COUNT, sizeof(gs_config_key), &c, &a, &err),
        0);
    char want[400];
    snprintf(want, sizeof want, "%s:3: server.port: expected an integer", path);
    cr_assert(strstr(err.message, want), "%s", err.message);
    gs_cfg_arena_free(&a);
    gs_cfg_free(doc);

    char missing[300];
    snprintf(missing, sizeof missing, "%s/missing.yaml", dir);
    cr_assert_lt(gs_cfg_load_file(missing, &doc, &err), 0);
    cr_assert_null(doc);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, missing) && strstr(err.message, "cannot open"), "%s",
              err.message);

    unlink(path);
    rmdir(dir);
}

/* ---- overrides -------------------------------------------------------------------------- */

Test(config, set_overrides)
{
    gs_cfg_doc *doc = NULL;
    gs_error err;
    cr_assert_eq(load(FULL, &doc, &err), GS_OK, "%s", err.message);
    cr_assert_eq(gs_cfg_set(doc, "server.port", "9000", &err), GS_OK, "%s", err.message);
    cr_assert_eq(gs_cfg_set(doc, "server.limits.ratio", "0.75", &err), GS_OK, "%s", err.message);
    cr_assert_eq(gs_cfg_set(doc, "databases[1].readers", "8", &err), GS_OK, "%s", err.message);
    cr_assert_eq(gs_cfg_set(doc, "name", "over", &err), GS_OK, "%s", err.message);
    cr_assert_eq(gs_cfg_set(doc, "tags[0]", "first", &err), GS_OK, "%s", err.message);
    /* replace a whole map with a scalar, then fail on its type later */
    cr_assert_eq(gs_cfg_set(doc, "extra", "{not json", &err), GS_OK, "%s", err.message);
    const gs_cfg_node *port = gs_cfg_get(gs_cfg_get(doc->root, "server"), "port");
    cr_assert_eq(port->line, 0);
    cr_assert_str_eq(port->value, "9000");
    root_cfg c;
    gs_cfg_arena a = {0};
    cr_assert_eq(
        gs_cfg_fill(doc, doc->root, "", root_keys, ROOT_COUNT, sizeof(gs_config_key), &c, &a, &err),
        GS_OK, "%s", err.message);
    cr_assert_eq(c.server.port, 9000);
    cr_assert_float_eq(c.server.limits.ratio, 0.75, 1e-12);
    cr_assert_eq(((db_cfg *)c.databases.items)[1].readers, 8);
    cr_assert_str_eq(c.name, "over");
    cr_assert_str_eq(c.tags.items[0], "first");
    cr_assert_str_eq(c.extra, "\"{not json\"");
    gs_cfg_arena_free(&a);
    gs_cfg_free(doc);
}

Test(config, set_creates_maps)
{
    gs_cfg_doc *doc = NULL;
    gs_error err;
    cr_assert_eq(load("server:\n", &doc, &err), GS_OK);
    cr_assert_eq(gs_cfg_set(doc, "server.limits.max_body", "10", &err), GS_OK, "%s", err.message);
    cr_assert_eq(gs_cfg_set(doc, "name", "n", &err), GS_OK, "%s", err.message);
    cr_assert_eq(gs_cfg_set(doc, "server.host", "h", &err), GS_OK, "%s", err.message);
    gs_buf b;
    gs_buf_init(&b);
    gs_cfg_to_json(doc->root, &b);
    cr_assert_str_eq(b.data, "{\"server\":{\"limits\":{\"max_body\":10},\"host\":\"h\"},"
                             "\"name\":\"n\"}");
    gs_buf_free(&b);
    gs_cfg_free(doc);
}

Test(config, set_errors_and_command_line_messages)
{
    gs_cfg_doc *doc = NULL;
    gs_error err;
    cr_assert_eq(load("name: a\ndatabases:\n  - id: x\n    path: y\n", &doc, &err), GS_OK);
    cr_assert_lt(gs_cfg_set(doc, "name.sub", "1", &err), 0);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "<command line>: name.sub:"), "%s", err.message);
    cr_assert_lt(gs_cfg_set(doc, "databases.path", "1", &err), 0);
    cr_assert(strstr(err.message, "list"), "%s", err.message);
    cr_assert_lt(gs_cfg_set(doc, "databases[3].path", "1", &err), 0);
    cr_assert(strstr(err.message, "out of range; the list has 1 item"), "%s", err.message);
    cr_assert_lt(gs_cfg_set(doc, "server..port", "1", &err), 0);
    cr_assert(strstr(err.message, "empty key"), "%s", err.message);
    cr_assert_lt(gs_cfg_set(doc, "", "1", &err), 0);
    cr_assert_lt(gs_cfg_set(doc, "x[a]", "1", &err), 0);
    cr_assert_lt(gs_cfg_set(doc, "x[1", "1", &err), 0);
    cr_assert_lt(gs_cfg_set(doc, "nolist[0]", "1", &err), 0);
    cr_assert_lt(gs_cfg_set(doc, "a]b", "1", &err), 0);
    char deep[400] = "";
    for (int i = 0; i < 70; i++)
        strcat(deep, "a.");
    strcat(deep, "z");
    cr_assert_lt(gs_cfg_set(doc, deep, "1", &err), 0);
    cr_assert(strstr(err.message, "too deep"), "%s", err.message);
    /* nothing half-applied by the failures */
    gs_buf b;
    gs_buf_init(&b);
    gs_cfg_to_json(doc->root, &b);
    cr_assert_str_eq(b.data, "{\"name\":\"a\",\"databases\":[{\"id\":\"x\",\"path\":\"y\"}]}");
    gs_buf_free(&b);

    /* a bad override is reported as coming from the command line */
    cr_assert_eq(gs_cfg_set(doc, "server.port", "abc", &err), GS_OK);
    root_cfg c;
    gs_cfg_arena a = {0};
    cr_assert_lt(
        gs_cfg_fill(doc, doc->root, "", root_keys, ROOT_COUNT, sizeof(gs_config_key), &c, &a, &err),
        0);
    cr_assert_str_eq(err.message,
                     "<command line>: server.port: expected an integer from 0 to 65535, got 'abc'");
    cr_assert_eq(gs_cfg_set(doc, "server.port", "1", &err), GS_OK);
    cr_assert_eq(gs_cfg_set(doc, "databases[0].bogus", "1", &err), GS_OK);
    cr_assert_lt(
        gs_cfg_fill(doc, doc->root, "", root_keys, ROOT_COUNT, sizeof(gs_config_key), &c, &a, &err),
        0);
    cr_assert(strstr(err.message, "<command line>: databases[0].bogus: unknown key 'bogus'"), "%s",
              err.message);
    gs_cfg_arena_free(&a);
    gs_cfg_free(doc);
}

/* ---- table defects -------------------------------------------------------------------------- */

Test(config, bad_defaults_are_internal_errors)
{
    static const gs_config_key bad_int[] = {
        {.name = "n", .type = GS_CFG_INT, .default_value = "ten", .offset = 0},
    };
    static const gs_config_key bad_bound[] = {
        {.name = "n", .type = GS_CFG_INT, .default_value = "100", .offset = 0, .min = 1, .max = 10},
    };
    static const gs_config_key bad_choice[] = {
        {.name = "m", .type = GS_CFG_STRING, .default_value = "zz", .offset = 0, .choices = modes},
    };
    static const gs_config_key bad_json[] = {
        {.name = "j", .type = GS_CFG_JSON, .default_value = "{oops", .offset = 0},
    };
    static const gs_config_key bad_list[] = {
        {.name = "l", .type = GS_CFG_STRING_LIST, .default_value = "a,,b", .offset = 0},
    };
    static const gs_config_key bad_bool[] = {
        {.name = "b", .type = GS_CFG_BOOL, .default_value = "2", .offset = 0},
    };
    static const gs_config_key list_no_size[] = {
        {.name = "l", .type = GS_CFG_LIST, .offset = 0, .children = db_keys, .child_count = 4},
    };
    static const gs_config_key inner_bad[] = {
        {.name = "d", .type = GS_CFG_DOUBLE, .default_value = "x", .offset = 0},
    };
    static const gs_config_key nested_bad[] = {
        {.name = "s", .type = GS_CFG_SECTION, .offset = 0, .children = inner_bad, .child_count = 1},
    };
    struct {
        const gs_config_key *keys;
        const char *needle;
    } cases[] = {
        {bad_int, "'n'"},  {bad_bound, "'n'"}, {bad_choice, "'m'"},   {bad_json, "'j'"},
        {bad_list, "'l'"}, {bad_bool, "'b'"},  {list_no_size, "'l'"}, {nested_bad, "'s.d'"},
    };
    union {
        char bytes[64];
        int64_t align;
    } out;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        gs_cfg_doc *doc = NULL;
        gs_error err;
        gs_cfg_arena a = {0};
        cr_assert_eq(load("", &doc, &err), GS_OK);
        cr_assert_lt(gs_cfg_fill(doc, doc->root, "", cases[i].keys, 1, sizeof(gs_config_key), &out,
                                 &a, &err),
                     0, "case %zu", i);
        cr_assert_str_eq(err.code, "INTERNAL_ERROR", "case %zu: %s", i, err.message);
        cr_assert(strstr(err.message, cases[i].needle), "case %zu: %s", i, err.message);
        gs_cfg_arena_free(&a);
        gs_cfg_free(doc);
    }
}

Test(config, good_defaults_of_every_kind)
{
    typedef struct {
        gs_config_strings l;
        const char *j;
        double d;
        int b;
        const char *s;
    } t;
    static const gs_config_key keys[] = {
        {.name = "l",
         .type = GS_CFG_STRING_LIST,
         .default_value = "[x, y ,z]",
         .offset = offsetof(t, l)},
        {.name = "j",
         .type = GS_CFG_JSON,
         .default_value = "{\"k\": [1]}",
         .offset = offsetof(t, j)},
        {.name = "d", .type = GS_CFG_DOUBLE, .default_value = "2.5", .offset = offsetof(t, d)},
        {.name = "b", .type = GS_CFG_BOOL, .default_value = "yes", .offset = offsetof(t, b)},
        {.name = "s", .type = GS_CFG_STRING, .default_value = "", .offset = offsetof(t, s)},
    };
    t v;
    gs_cfg_arena a = {0};
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_cfg_fill(NULL, NULL, "", keys, 5, sizeof keys[0], &v, &a, &err), GS_OK, "%s",
                 err.message);
    cr_assert_eq(v.l.count, 3);
    cr_assert_str_eq(v.l.items[0], "x");
    cr_assert_str_eq(v.l.items[1], "y");
    cr_assert_str_eq(v.l.items[2], "z");
    cr_assert_null(v.l.items[3]);
    cr_assert_str_eq(v.j, "{\"k\": [1]}");
    cr_assert_float_eq(v.d, 2.5, 1e-12);
    cr_assert_eq(v.b, 1);
    cr_assert_str_eq(v.s, "");
    gs_cfg_arena_free(&a);
}

Test(config, self_containing_table_does_not_recurse_forever)
{
    static gs_config_key loop[1];
    loop[0] = (gs_config_key){
        .name = "again", .type = GS_CFG_SECTION, .offset = 0, .children = loop, .child_count = 1};
    char out[8];
    gs_cfg_arena a = {0};
    gs_error err;
    cr_assert_lt(gs_cfg_fill(NULL, NULL, "", loop, 1, sizeof loop[0], out, &a, &err), 0);
    cr_assert_str_eq(err.code, "INTERNAL_ERROR");
    gs_buf b;
    gs_buf_init(&b);
    gs_cfg_describe(loop, 1, sizeof loop[0], 0, &b);
    cr_assert(!b.oom);
    cr_assert(strstr(b.data, "..."), "%s", b.data);
    gs_buf_free(&b);
}

/* A larger stride (a newer plugin's table) is read by stride; the extra bytes are ignored. */
Test(config, key_stride_larger_than_struct)
{
    typedef struct {
        gs_config_key k;
        char future[24];
    } wide_key;
    static const wide_key keys[] = {
        {.k = {.name = "a", .type = GS_CFG_INT, .default_value = "7", .offset = 0}},
        {.k = {.name = "b", .type = GS_CFG_STRING, .offset = sizeof(int64_t)}},
    };
    struct {
        int64_t a;
        const char *b;
    } v;
    gs_cfg_doc *doc = NULL;
    gs_error err;
    gs_cfg_arena a = {0};
    cr_assert_eq(load("b: hi\n", &doc, &err), GS_OK);
    cr_assert_eq(gs_cfg_fill(doc, doc->root, "", &keys[0].k, 2, sizeof keys[0], &v, &a, &err),
                 GS_OK, "%s", err.message);
    cr_assert_eq(v.a, 7);
    cr_assert_str_eq(v.b, "hi");
    gs_cfg_arena_free(&a);
    gs_cfg_free(doc);
}

/* ---- describe ------------------------------------------------------------------------------ */

Test(config, describe)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_cfg_describe(root_keys, ROOT_COUNT, sizeof(gs_config_key), 2, &b);
    cr_assert(!b.oom);
    const char *s = b.data;
    cr_assert(strstr(s, "  name       <string>  "), "%s", s);
    cr_assert(strstr(s, "[optional]  node name\n"), "%s", s);
    cr_assert(strstr(s, "\n      port        <int 0..65535>  [default: 9876]  TCP port\n"), "%s",
              s);
    cr_assert(strstr(s, "[default: rw]  access mode (one of: ro, rw, admin)\n"), "%s", s);
    cr_assert(strstr(s, "\n          max_body  <int 1..1073741824>  [default: 1048576]"), "%s", s);
    cr_assert(strstr(s, "\n      id       <string>"), "%s", s);
    cr_assert(strstr(s, "[required]  database id\n"), "%s", s);
    cr_assert(strstr(s, "<list of maps>"), "%s", s);
    cr_assert(strstr(s, "<list of strings>"), "%s", s);
    cr_assert(strstr(s, "<number 0..1>"), "%s", s);
    cr_assert(strstr(s, "<any (JSON)>"), "%s", s);
    /* one line per key, nested included: 7 + 5 + 2 + 4 */
    size_t lines = 0;
    for (const char *p = s; *p; p++)
        lines += *p == '\n';
    cr_assert_eq(lines, 18, "%s", s);
    gs_buf_free(&b);
}

/* ---- allocation failures ---------------------------------------------------------------- */

static const char *MODERATE = "name: ${GS_T_NAME:-node}\n"
                              "server:\n"
                              "  host: \"$$h\"\n"
                              "  port: 1\n"
                              "  limits: {max_body: 5}\n"
                              "databases:\n"
                              "  - id: a\n"
                              "    path: /a\n"
                              "    cdc: [t1, t2, t3, t4, t5]\n"
                              "  - id: b\n"
                              "    path: /b\n"
                              "tags: [p, q, r, s, t, u, v, w, x, y, z, aa, bb, cc, dd, ee, ff, "
                              "gg, hh, ii]\n"
                              "extra: {deep: {deeper: [1, 2, {x: \"y\"}]}}\n";

/* One full pass: load, override, fill, render, describe. */
static gs_status moderate_pass(gs_error *err)
{
    gs_cfg_doc *doc = NULL;
    gs_status st = gs_cfg_load_string(MODERATE, strlen(MODERATE), "m.yaml", &doc, err);
    if (st)
        return st;
    st = gs_cfg_set(doc, "server.limits.ratio", "0.1", err);
    if (!st)
        st = gs_cfg_set(doc, "databases[1].cdc", "~", err);
    root_cfg c;
    gs_cfg_arena a = {0};
    if (!st)
        st = gs_cfg_fill(doc, doc->root, "", root_keys, ROOT_COUNT, sizeof(gs_config_key), &c, &a,
                         err);
    if (!st) {
        gs_buf b;
        gs_buf_init(&b);
        gs_cfg_to_json(doc->root, &b);
        gs_cfg_describe(root_keys, ROOT_COUNT, sizeof(gs_config_key), 0, &b);
        if (b.oom)
            st = gs_error_set(err, 0, "INTERNAL_ERROR", "buffer out of memory");
        gs_buf_free(&b);
    }
    if (!st) {
        cr_assert_str_eq(c.server.host, "$h");
        cr_assert_eq(c.tags.count, 20);
        cr_assert_str_eq(c.extra, "{\"deep\":{\"deeper\":[1,2,{\"x\":\"y\"}]}}");
    }
    gs_cfg_arena_free(&a);
    gs_cfg_free(doc);
    return st;
}

static void alloc_failures(int sticky)
{
    gs_error err;
    long n;
    int ok = 0;
    for (n = 0; n < 100000 && !ok; n++) {
        gs_error_init(&err);
        gs_alloc_fail_after(n, sticky);
        gs_status st = moderate_pass(&err);
        gs_alloc_fail_after(-1, 0);
        if (st == GS_OK) {
            ok = 1;
        } else {
            cr_assert_str_eq(err.code, "INTERNAL_ERROR", "n=%ld: %s: %s", n, err.code, err.message);
            cr_assert(err.message[0], "n=%ld: empty message", n);
        }
    }
    cr_assert(ok, "never succeeded");
    cr_assert_gt(n, 40, "too few allocations exercised (%ld)", n);
}

Test(config, allocation_failures_single)
{
    alloc_failures(0);
}

Test(config, allocation_failures_sticky)
{
    alloc_failures(1);
}
