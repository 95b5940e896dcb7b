/* Per-table replication modes (repl/table_mode.h): resolution (longest prefix, exact against
 * prefix, unlisted tables by role, the catalogue), the predicates of every mode, and every
 * config error. */
#include "base/error.h"
#include "repl/table_mode.h"

#include <criterion/criterion.h>
#include <string.h>

static const gs_table_mode_rule RULES[] = {
    {"files", "primary"},
    {"audit_*", "readonly"},
    {"audit_keep*", "sync"},
    {"audit_keep", "writeonly"},
};

static gs_table_modes *make(const gs_table_mode_rule *r, size_t n, int primary)
{
    gs_table_modes *tm = NULL;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_table_modes_create(r, n, primary, &tm, &err), GS_OK, "%s", err.message);
    cr_assert_not_null(tm);
    return tm;
}

static void refused(const gs_table_mode_rule *r, size_t n, const char *needle)
{
    gs_table_modes *tm = (gs_table_modes *)1;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_table_modes_create(r, n, 1, &tm, &err), GS_ERROR);
    cr_assert_null(tm);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert_not_null(strstr(err.message, needle), "message '%s' lacks '%s'", err.message, needle);
}

Test(table_mode, longest_prefix_wins)
{
    gs_table_modes *tm = make(RULES, 4, 1);
    cr_assert_eq(gs_table_modes_resolve(tm, "files"), GS_TABLE_PRIMARY);
    cr_assert_eq(gs_table_modes_resolve(tm, "audit_log"), GS_TABLE_READONLY);
    cr_assert_eq(gs_table_modes_resolve(tm, "audit_"), GS_TABLE_READONLY); /* empty rest */
    cr_assert_eq(gs_table_modes_resolve(tm, "audit_keeper"), GS_TABLE_SYNC);
    cr_assert_str_eq(gs_table_modes_pattern(tm, "audit_keeper"), "audit_keep*");
    /* exact beats the prefix of the same length */
    cr_assert_eq(gs_table_modes_resolve(tm, "audit_keep"), GS_TABLE_WRITEONLY);
    cr_assert_str_eq(gs_table_modes_pattern(tm, "audit_keep"), "audit_keep");
    /* names compare without regard to case, as SQLite's do */
    cr_assert_eq(gs_table_modes_resolve(tm, "AUDIT_Log"), GS_TABLE_READONLY);
    cr_assert_eq(gs_table_modes_resolve(tm, "Files"), GS_TABLE_PRIMARY);
    /* an exact name does not match longer names */
    cr_assert_eq(gs_table_modes_resolve(tm, "files2"), GS_TABLE_PRIMARY); /* unlisted, primary */
    cr_assert_null(gs_table_modes_pattern(tm, "files2"));
    gs_table_modes_free(tm);
}

Test(table_mode, order_does_not_matter)
{
    const gs_table_mode_rule r[] = {{"a*", "sync"}, {"abc*", "readonly"}, {"ab*", "excluded"}};
    const gs_table_mode_rule rr[] = {{"abc*", "readonly"}, {"ab*", "excluded"}, {"a*", "sync"}};
    gs_table_modes *x = make(r, 3, 0), *y = make(rr, 3, 0);
    const char *names[] = {"a", "ab", "abc", "abcd", "abz", "b"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        cr_assert_eq(gs_table_modes_resolve(x, names[i]), gs_table_modes_resolve(y, names[i]), "%s",
                     names[i]);
    cr_assert_eq(gs_table_modes_resolve(x, "abcd"), GS_TABLE_READONLY);
    cr_assert_eq(gs_table_modes_resolve(x, "abz"), GS_TABLE_EXCLUDED);
    cr_assert_eq(gs_table_modes_resolve(x, "a"), GS_TABLE_SYNC);
    cr_assert_eq(gs_table_modes_resolve(x, "b"), GS_TABLE_REPLICA); /* unlisted on a replica */
    gs_table_modes_free(x);
    gs_table_modes_free(y);
}

Test(table_mode, unlisted_follows_the_role)
{
    gs_table_modes *p = make(NULL, 0, 1), *r = make(NULL, 0, 0);
    cr_assert_eq(gs_table_modes_resolve(p, "t"), GS_TABLE_PRIMARY);
    cr_assert_eq(gs_table_modes_resolve(r, "t"), GS_TABLE_REPLICA);
    cr_assert(gs_table_modes_emits(p, "t"));
    cr_assert_not(gs_table_modes_pulls(p, "t"));
    cr_assert(gs_table_modes_pulls(r, "t"));
    cr_assert_not(gs_table_modes_emits(r, "t"));
    gs_table_modes_free(p);
    gs_table_modes_free(r);
}

Test(table_mode, catalogue_is_always_excluded)
{
    gs_table_modes *tm = make(RULES, 2, 1);
    cr_assert_eq(gs_table_modes_resolve(tm, "_sirannon_changes"), GS_TABLE_EXCLUDED);
    cr_assert_eq(gs_table_modes_resolve(tm, "_SIRANNON_meta"), GS_TABLE_EXCLUDED);
    cr_assert_eq(gs_table_modes_resolve(tm, NULL), GS_TABLE_EXCLUDED);
    cr_assert_not(gs_table_modes_emits(tm, "_sirannon_peer_state"));
    cr_assert_not(gs_table_modes_pulls(tm, "_sirannon_peer_state"));
    cr_assert_null(gs_table_modes_pattern(tm, "_sirannon_meta"));
    gs_table_modes_free(tm);
}

Test(table_mode, predicates_of_every_mode)
{
    struct {
        gs_table_mode m;
        int emits, pulls, boots;
        gs_table_write w;
    } want[] = {
        {GS_TABLE_PRIMARY, 1, 0, 0, GS_TABLE_WRITE_ALLOW},
        {GS_TABLE_REPLICA, 0, 1, 1, GS_TABLE_WRITE_FORWARD},
        {GS_TABLE_SYNC, 1, 1, 0, GS_TABLE_WRITE_ALLOW},
        {GS_TABLE_READONLY, 0, 1, 1, GS_TABLE_WRITE_REFUSE},
        {GS_TABLE_WRITEONLY, 1, 0, 0, GS_TABLE_WRITE_ALLOW},
        {GS_TABLE_EXCLUDED, 0, 0, 0, GS_TABLE_WRITE_ALLOW},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_assert_eq(gs_table_mode_emits(want[i].m), want[i].emits, "%zu", i);
        cr_assert_eq(gs_table_mode_pulls(want[i].m), want[i].pulls, "%zu", i);
        cr_assert_eq(gs_table_mode_local_write(want[i].m), want[i].w, "%zu", i);
        cr_assert_eq(gs_table_mode_bootstraps(want[i].m), want[i].boots, "%zu", i);
        gs_table_mode back;
        gs_error err;
        gs_error_init(&err);
        cr_assert_eq(gs_table_mode_parse(gs_table_mode_name(want[i].m), &back, &err), GS_OK);
        cr_assert_eq(back, want[i].m);
    }
    cr_assert_str_eq(gs_table_mode_name((gs_table_mode)0), "unknown");
}

Test(table_mode, config_errors)
{
    const gs_table_mode_rule unknown[] = {{"t", "mirror"}};
    refused(unknown, 1, "unknown table mode 'mirror'");
    const gs_table_mode_rule nomode[] = {{"t", NULL}};
    refused(nomode, 1, "tables[0].mode");
    const gs_table_mode_rule dup[] = {{"t", "sync"}, {"x*", "sync"}, {"T", "primary"}};
    refused(dup, 3, "'T' is listed twice (also tables[0])");
    const gs_table_mode_rule star[] = {{"a*b", "sync"}};
    refused(star, 1, "'*' may only end a pattern");
    const gs_table_mode_rule two[] = {{"a**", "sync"}};
    refused(two, 1, "'*' may only end a pattern");
    const gs_table_mode_rule empty[] = {{"", "sync"}};
    refused(empty, 1, "tables[0].match: the pattern is empty");
    const gs_table_mode_rule cat[] = {{"_sirannon_changes", "sync"}};
    refused(cat, 1, "_sirannon catalogue");
    const gs_table_mode_rule all[] = {{"ok", "sync"}, {"*", "excluded"}};
    refused(all, 2, "tables[1].match: '*' would match the _sirannon");
    const gs_table_mode_rule under[] = {{"_s*", "excluded"}};
    refused(under, 1, "_sirannon catalogue");
    const gs_table_mode_rule deeper[] = {{"_sirannon_x*", "excluded"}};
    refused(deeper, 1, "_sirannon catalogue");
    /* a prefix that cannot reach the catalogue is fine */
    const gs_table_mode_rule fine[] = {{"_t*", "excluded"}, {"_si", "sync"}};
    gs_table_modes *tm = make(fine, 2, 1);
    cr_assert_eq(gs_table_modes_resolve(tm, "_tmp"), GS_TABLE_EXCLUDED);
    cr_assert_eq(gs_table_modes_resolve(tm, "_si"), GS_TABLE_SYNC);
    gs_table_modes_free(tm);
}
