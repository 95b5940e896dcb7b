/*
 * Source table names (core/src/source/source_names.c): patterns, local names with a prefix,
 * reserved names, overlap between sources, the local CREATE TABLE text, URLs.
 */
#include "base/buf.h"
#include "base/error.h"
#include "source/source_names.h"

#include <criterion/criterion.h>
#include <string.h>

Test(source_names, patterns)
{
    cr_assert(gs_source_pattern_valid("users"));
    cr_assert(gs_source_pattern_valid("orders_*"));
    cr_assert(gs_source_pattern_valid("*"));
    cr_assert_not(gs_source_pattern_valid(""));
    cr_assert_not(gs_source_pattern_valid(NULL));
    cr_assert_not(gs_source_pattern_valid("a*b"));
    cr_assert_not(gs_source_pattern_valid("**"));

    cr_assert(gs_source_pattern_matches("users", "users"));
    cr_assert(gs_source_pattern_matches("users", "USERS"), "names compare without case");
    cr_assert_not(gs_source_pattern_matches("users", "users2"));
    cr_assert(gs_source_pattern_matches("orders_*", "orders_2024"));
    cr_assert(gs_source_pattern_matches("orders_*", "orders_"));
    cr_assert_not(gs_source_pattern_matches("orders_*", "orders"));
    cr_assert(gs_source_pattern_matches("*", "anything"));
}

Test(source_names, local_names)
{
    char out[64];
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_source_local_name("eu_", "users", out, sizeof out, &err), GS_OK);
    cr_assert_str_eq(out, "eu_users");
    cr_assert_eq(gs_source_local_name("", "users", out, sizeof out, &err), GS_OK);
    cr_assert_str_eq(out, "users");
    cr_assert_eq(gs_source_local_name(NULL, "users", out, sizeof out, &err), GS_OK);
    cr_assert_str_eq(out, "users");

    cr_assert_eq(gs_source_local_name("_SIRANNON_", "users", out, sizeof out, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "reserved"), "%s", err.message);
    cr_assert_eq(gs_source_local_name("sqlite_", "x", out, sizeof out, &err), GS_ERROR);
    cr_assert_eq(gs_source_local_name("", "_sirannon_meta", out, sizeof out, &err), GS_ERROR);

    char tiny[6];
    cr_assert_eq(gs_source_local_name("eu_", "users", tiny, sizeof tiny, &err), GS_ERROR);
    cr_assert(strstr(err.message, "longer"), "%s", err.message);

    cr_assert(gs_source_reserved_name("_Sirannon_changes"));
    cr_assert(gs_source_reserved_name("SQLITE_sequence"));
    cr_assert_not(gs_source_reserved_name("sirannon"));
    cr_assert_not(gs_source_reserved_name("users"));
}

Test(source_names, overlap)
{
    /* exact names */
    cr_assert(gs_source_patterns_overlap("eu_", "users", "eu_", "USERS"));
    cr_assert_not(gs_source_patterns_overlap("eu_", "users", "us_", "users"));
    /* a prefix can make two different remote names the same local one */
    cr_assert(gs_source_patterns_overlap("eu_", "users", "", "eu_users"));
    /* a pattern against an exact name */
    cr_assert(gs_source_patterns_overlap("", "orders_*", "", "orders_eu"));
    cr_assert(gs_source_patterns_overlap("", "orders_eu", "", "orders_*"));
    cr_assert_not(gs_source_patterns_overlap("", "orders_*", "", "orders"));
    /* two patterns overlap when one stem starts the other */
    cr_assert(gs_source_patterns_overlap("", "o*", "", "orders_*"));
    cr_assert(gs_source_patterns_overlap("", "*", "eu_", "users"));
    cr_assert_not(gs_source_patterns_overlap("eu_", "*", "us_", "*"));
}

static void check_create(const char *remote, const char *local, const char *want)
{
    gs_buf b;
    gs_buf_init(&b);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_source_create_sql(remote, local, &b, &err), GS_OK, "%s: %s", remote,
                 err.message);
    cr_assert_str_eq(b.data, want);
    gs_buf_free(&b);
}

Test(source_names, create_sql)
{
    check_create("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)", "eu_users",
                 "CREATE TABLE IF NOT EXISTS \"eu_users\" (id INTEGER PRIMARY KEY, name TEXT)");
    check_create("create table \"my \"\"t\"\"\"(a)", "x", "CREATE TABLE IF NOT EXISTS \"x\"(a)");
    check_create("CREATE TABLE [orders](k TEXT PRIMARY KEY) WITHOUT ROWID", "eu_orders",
                 "CREATE TABLE IF NOT EXISTS \"eu_orders\"(k TEXT PRIMARY KEY) WITHOUT ROWID");
    check_create("CREATE TABLE IF NOT EXISTS `t` (a)", "p_t",
                 "CREATE TABLE IF NOT EXISTS \"p_t\" (a)");
    check_create("CREATE TABLE main.t(a)", "q\"t", "CREATE TABLE IF NOT EXISTS \"q\"\"t\"(a)");
    check_create("CREATE /* c */ TABLE\n t(a)", "u", "CREATE TABLE IF NOT EXISTS \"u\"(a)");

    gs_buf b;
    gs_buf_init(&b);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_source_create_sql("CREATE VIRTUAL TABLE f USING fts5(x)", "f", &b, &err),
                 GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_REQUEST");
    cr_assert_eq(gs_source_create_sql("CREATE TABLE \"unterminated(a)", "f", &b, &err), GS_ERROR);
    cr_assert_eq(gs_source_create_sql(NULL, "f", &b, &err), GS_ERROR);
    gs_buf_free(&b);
}

Test(source_names, urls)
{
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_source_url_check("http://127.0.0.1:9881", &err), GS_OK);
    cr_assert_eq(gs_source_url_check("https://eu.example.com", &err), GS_OK);
    cr_assert_eq(gs_source_url_check("ws://127.0.0.1:1", &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert_eq(gs_source_url_check("http://", &err), GS_ERROR);
    cr_assert_eq(gs_source_url_check("http://:80", &err), GS_ERROR);
    cr_assert_eq(gs_source_url_check("", &err), GS_ERROR);
    cr_assert_eq(gs_source_url_check(NULL, &err), GS_ERROR);
}
