/*
 * gs_resolver_example_highest_version.so (plugins/example/example_resolver.c) against the
 * test host: the higher integer `version` wins whatever the HLCs say, ties and rows without
 * one fall back to last-writer-wins, a delete wins, the `column` key, malformed rows and
 * allocation failures.
 */
#include "resolver_host.h"

#define EXR_SO "gs_resolver_example_highest_version.so"
#define EXR_NAME "example_highest_version"
#define OLD_HLC "018bcfe56800-0001-node-a"
#define NEW_HLC "018bcfe56800-0002-node-b"

TestSuite(example_resolver, .init = rh_setup, .fini = rh_teardown);

/* A conflict where the incoming stamp is newer than the local one (LWW would accept). */
static gs_conflict conflict(const char *local_row, const char *incoming_row)
{
    gs_conflict c = rh_conflict(OLD_HLC, "node-a", NEW_HLC, "node-b");
    c.local_row_json = local_row;
    c.incoming_new_json = incoming_row;
    return c;
}

Test(example_resolver, descriptor_and_keys)
{
    rh_plugin p = rh_load(EXR_SO, EXR_NAME);
    const gs_config_key *k = rh_key(&p, "column");
    cr_assert_eq(k->type, GS_CFG_STRING);
    cr_assert_str_eq(k->default_value, "version");
    cr_assert_not(k->required);
    cr_assert_eq(p.desc->config_key_count, 1u);
    rh_close(&p);
}

Test(example_resolver, higher_version_wins_against_the_clock)
{
    rh_plugin p = rh_load(EXR_SO, EXR_NAME);
    rh_create_ok(&p, NULL, 0);
    /* Local version 5 beats incoming 4 although the incoming HLC is newer. */
    gs_conflict c = conflict("{\"id\":42,\"version\":5}", "{\"id\":42,\"version\":4}");
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_KEEP_LOCAL);
    /* Incoming 6 beats local 5 although the incoming HLC is older. */
    c = rh_conflict(NEW_HLC, "node-b", OLD_HLC, "node-a");
    c.local_row_json = "{\"id\":42,\"version\":5}";
    c.incoming_new_json = "{\"id\":42,\"version\":6}";
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING);
    /* Versions beyond 2^53 travel as tagged envelopes; negative versions order too. */
    c = conflict("{\"version\":{\"__sirannon_int\":\"9007199254740993\"}}",
                 "{\"version\":9007199254740991}");
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_KEEP_LOCAL);
    c = conflict("{\"version\":-3}", "{\"version\":{\"__sirannon_int\":\"-2\"}}");
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING);
    rh_close(&p);
}

Test(example_resolver, ties_and_missing_versions_fall_back_to_lww)
{
    rh_plugin p = rh_load(EXR_SO, EXR_NAME);
    rh_create_ok(&p, NULL, 0);
    const char *rows[][2] = {
        {"{\"version\":5}", "{\"version\":5}"},                          /* tie */
        {"{\"id\":1}", "{\"version\":1}"},                               /* absent locally */
        {"{\"version\":9}", "{\"id\":1}"},                               /* absent remotely */
        {"{\"version\":9}", "{\"version\":\"10\"}"},                     /* text, not an integer */
        {"{\"version\":9}", "{\"version\":10.0}"},                       /* REAL, not an integer */
        {"{\"version\":{\"__sirannon_int\":\"x\"}}", "{\"version\":1}"}, /* bad envelope */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        gs_conflict c = conflict(rows[i][0], rows[i][1]);
        cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING, "case %zu: newer HLC wins", i);
        c = rh_conflict(NEW_HLC, "node-b", OLD_HLC, "node-a");
        c.local_row_json = rows[i][0];
        c.incoming_new_json = rows[i][1];
        cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_KEEP_LOCAL, "case %zu: older HLC loses", i);
    }
    /* Equal HLCs: the greater node id. */
    gs_conflict c = rh_conflict(OLD_HLC, "node-a", OLD_HLC, "node-b");
    c.local_row_json = c.incoming_new_json = "{\"version\":1}";
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING);
    c.local_node_id = "node-c";
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_KEEP_LOCAL);
    /* No local stamp: accept. */
    c.local_hlc = NULL;
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING);
    rh_close(&p);
}

Test(example_resolver, deletes_and_absent_rows_take_the_incoming_change)
{
    rh_plugin p = rh_load(EXR_SO, EXR_NAME);
    rh_create_ok(&p, NULL, 0);
    gs_conflict c = rh_conflict(NEW_HLC, "node-b", OLD_HLC, "node-a");
    c.local_row_json = "{\"version\":99}";
    c.incoming_operation = "delete";
    c.incoming_new_json = NULL;
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING, "a delete wins");
    c.incoming_operation = "insert";
    c.incoming_new_json = "{\"version\":1}";
    c.local_row_json = NULL;
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING, "nothing local to keep");
    rh_close(&p);
}

Test(example_resolver, column_key_names_the_compared_column)
{
    rh_plugin p = rh_load(EXR_SO, EXR_NAME);
    static const char *const keys[] = {"column", "rev"};
    rh_create_ok(&p, keys, 1);
    gs_conflict c = conflict("{\"rev\":3,\"version\":1}", "{\"rev\":2,\"version\":9}");
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_KEEP_LOCAL, "rev decides, not version");
    rh_close(&p);

    rh_plugin q = rh_load(EXR_SO, EXR_NAME);
    static const char *const empty[] = {"column", ""};
    gs_error err;
    cr_assert_eq(rh_create(&q, empty, 1, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "column"), "%s", err.message);
    rh_close(&q);
}

Test(example_resolver, malformed_conflicts_are_refused)
{
    rh_plugin p = rh_load(EXR_SO, EXR_NAME);
    rh_create_ok(&p, NULL, 0);
    const char *bad[][3] = {
        {"[1]", "{\"version\":1}", "local row image is not a JSON object"},
        {"{\"version\":1}", "{\"version\":", "incoming row image is not a JSON object"},
    };
    for (size_t i = 0; i < 2; i++) {
        gs_conflict c = conflict(bad[i][0], bad[i][1]);
        gs_resolution res;
        gs_error err;
        cr_assert_eq(rh_resolve(&p, &c, &res, &err), GS_ERROR);
        cr_assert_str_eq(err.code, "CONFLICT_ERROR");
        cr_assert(strstr(err.message, bad[i][2]), "%s", err.message);
        cr_assert(strstr(err.message, "table 'orders' row '42'"), "%s", err.message);
    }
    gs_conflict c = conflict("{}", "{}");
    c.incoming_operation = "ddl";
    gs_resolution res;
    gs_error err;
    cr_assert_eq(rh_resolve(&p, &c, &res, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "CONFLICT_ERROR");
    c = conflict("{}", "{}");
    c.incoming_hlc = NULL;
    cr_assert_eq(rh_resolve(&p, &c, &res, &err), GS_ERROR);
    cr_assert(strstr(err.message, "no HLC"), "%s", err.message);
    c = conflict("{}", "{}");
    c.struct_size = offsetof(gs_conflict, incoming_node_id);
    cr_assert_eq(rh_resolve(&p, &c, &res, &err), GS_ERROR);
    cr_assert(strstr(err.message, "too old"), "%s", err.message);
    rh_close(&p);
}

Test(example_resolver, allocation_failures_in_create_are_clean)
{
    rh_plugin p = rh_load(EXR_SO, EXR_NAME);
    static const char *const keys[] = {"column", "a_column_name_longer_than_the_instance_struct"};
    gs_error err;
    /* Every allocation fails, then only the copy of the long column name. */
    size_t limits[] = {1, 32};
    for (size_t i = 0; i < 2; i++) {
        atomic_store(&PT.fail_size_min, limits[i]);
        cr_assert_eq(rh_create(&p, keys, 1, &err), GS_ERROR);
        atomic_store(&PT.fail_size_min, 0);
        cr_assert_str_eq(err.code, "INTERNAL_ERROR");
        cr_assert_eq(rh_live(), 0);
    }
    rh_create_ok(&p, keys, 1);
    rh_close(&p);
}
