/*
 * databases[].sources at load time (core/src/node/node_source.c through gs_node_load): every
 * refusal names the file, the line and the key, and a good list loads.
 */
#include "base/error.h"
#include "node/node.h"

#include "test_support.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static char dir[256];

static void setup(void)
{
    gs_test_mkdtemp(dir, sizeof dir, "source-config");
}

static void teardown(void)
{
    gs_test_rmtree(dir);
}

/* Write the YAML with `databases` as given and load it; returns the status, err filled. */
static gs_status load(const char *databases, const char *extra, gs_error *err, char *path,
                      size_t cap)
{
    snprintf(path, cap, "%s/gatestream.yaml", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "node: { id: n1, data_dir: %s/data }\n%sdatabases:\n%s", dir, extra ? extra : "",
            databases);
    fclose(f);
    gs_node *n = NULL;
    gs_error_init(err);
    gs_status st = gs_node_load(path, NULL, &n, err);
    gs_node_free(n);
    return st;
}

static void refused(const char *databases, const char *extra, int line, const char *needle)
{
    gs_error err;
    char path[512];
    cr_assert_eq(load(databases, extra, &err, path, sizeof path), GS_ERROR, "loaded: %s",
                 databases);
    cr_assert_str_eq(err.code, "INVALID_CONFIG", "%s: %s", err.code, err.message);
    char where[600];
    snprintf(where, sizeof where, "%s:%d:", path, line);
    cr_assert(strstr(err.message, where), "no '%s' in: %s", where, err.message);
    cr_assert(strstr(err.message, needle), "no '%s' in: %s", needle, err.message);
}

TestSuite(source_config, .init = setup, .fini = teardown);

Test(source_config, good_list_loads)
{
    gs_error err;
    char path[512];
    gs_status st = load("  - id: main\n"
                        "    sources:\n"
                        "      - { id: eu, url: \"http://127.0.0.1:9881\", tables: [users, "
                        "\"orders_*\"], prefix: eu_ }\n"
                        "      - { id: us, url: \"https://us.example:9443\", database: other, "
                        "tables: [users], prefix: us_, token: t, page_rows: 10 }\n"
                        "      - { id: plain, url: \"http://127.0.0.1:9882\", tables: [items] }\n",
                        NULL, &err, path, sizeof path);
    cr_assert_eq(st, GS_OK, "%s: %s", err.code, err.message);
}

Test(source_config, duplicate_id)
{
    refused("  - id: main\n"
            "    sources:\n"
            "      - { id: eu, url: \"http://a:1\", tables: [a], prefix: a_ }\n"
            "      - { id: eu, url: \"http://b:1\", tables: [b], prefix: b_ }\n",
            NULL, 6, "'eu' is declared twice");
}

Test(source_config, bad_url)
{
    refused("  - id: main\n"
            "    sources:\n"
            "      - { id: eu, url: \"ftp://a:1\", tables: [a] }\n",
            NULL, 5, "sources[0].url");
}

Test(source_config, reserved_prefix)
{
    refused("  - id: main\n"
            "    sources:\n"
            "      - { id: eu, url: \"http://a:1\", tables: [a], prefix: _sirannon_ }\n",
            NULL, 5, "sources[0].prefix");
    refused("  - id: main\n"
            "    sources:\n"
            "      - { id: eu, url: \"http://a:1\", tables: [a], prefix: SQLite_x }\n",
            NULL, 5, "reserved");
    /* no prefix, a reserved remote name */
    refused("  - id: main\n"
            "    sources:\n"
            "      - { id: eu, url: \"http://a:1\", tables: [_sirannon_meta] }\n",
            NULL, 5, "reserved");
}

Test(source_config, bad_patterns)
{
    refused("  - id: main\n"
            "    sources:\n"
            "      - { id: eu, url: \"http://a:1\", tables: [\"a*b\"] }\n",
            NULL, 5, "prefix ending in '*'");
    refused("  - id: main\n"
            "    sources:\n"
            "      - { id: eu, url: \"http://a:1\", tables: [] }\n",
            NULL, 5, "tables is empty");
}

Test(source_config, two_sources_one_local_table)
{
    refused("  - id: main\n"
            "    sources:\n"
            "      - { id: eu, url: \"http://a:1\", tables: [users], prefix: x_ }\n"
            "      - { id: us, url: \"http://b:1\", tables: [x_users] }\n",
            NULL, 6, "same local table");
    refused("  - id: main\n"
            "    sources:\n"
            "      - { id: eu, url: \"http://a:1\", tables: [\"*\"] }\n"
            "      - { id: us, url: \"http://b:1\", tables: [users], prefix: us_ }\n",
            NULL, 6, "source 'eu'");
    /* the same remote names under distinct prefixes are fine; so is another database */
    gs_error err;
    char path[512];
    cr_assert_eq(load("  - id: main\n"
                      "    sources:\n"
                      "      - { id: eu, url: \"http://a:1\", tables: [\"*\"], prefix: eu_ }\n"
                      "      - { id: us, url: \"http://b:1\", tables: [\"*\"], prefix: us_ }\n"
                      "  - id: other\n"
                      "    sources:\n"
                      "      - { id: eu, url: \"http://a:1\", tables: [\"*\"], prefix: eu_ }\n",
                      NULL, &err, path, sizeof path),
                 GS_OK, "%s", err.message);
}

Test(source_config, retry_bounds)
{
    refused("  - id: main\n"
            "    sources:\n"
            "      - { id: eu, url: \"http://a:1\", tables: [a], retry_initial_ms: 5000, "
            "retry_max_ms: 1000 }\n",
            NULL, 5, "retry_max_ms");
}

Test(source_config, read_only_database)
{
    refused("  - id: main\n"
            "    read_only: true\n"
            "    sources:\n"
            "      - { id: eu, url: \"http://a:1\", tables: [a] }\n",
            NULL, 6, "read_only");
}

/* A replicated database: source tables must be `excluded` from replication. */
static const char *const REPL = "plugins:\n"
                                "  - { name: mem, kind: repl_transport, plugin: memory }\n"
                                "replication:\n"
                                "  role: primary\n"
                                "  transport: mem\n";

Test(source_config, replicated_database_needs_excluded_tables)
{
    refused("  - id: main\n"
            "    sources:\n"
            "      - { id: eu, url: \"http://a:1\", tables: [users], prefix: eu_ }\n",
            REPL, 10, "would be replicated too");
    refused("  - id: main\n"
            "    tables:\n"
            "      - { match: \"eu_*\", mode: excluded }\n"
            "      - { match: eu_users, mode: replica }\n"
            "    sources:\n"
            "      - { id: eu, url: \"http://a:1\", tables: [\"*\"], prefix: eu_ }\n",
            REPL, 13, "rule 'eu_users'");
    gs_error err;
    char path[512];
    cr_assert_eq(load("  - id: main\n"
                      "    tables:\n"
                      "      - { match: \"eu_*\", mode: excluded }\n"
                      "    sources:\n"
                      "      - { id: eu, url: \"http://a:1\", tables: [users, \"orders_*\"], "
                      "prefix: eu_ }\n",
                      REPL, &err, path, sizeof path),
                 GS_OK, "%s: %s", err.code, err.message);
}
