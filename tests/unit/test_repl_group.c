/* Coordinator-mode records: group state and node session JSON, keys (repl/group.h). */
#include "base/alloc.h"
#include "base/error.h"
#include "repl/group.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static gs_group_state sample(void)
{
    gs_group_state s;
    memset(&s, 0, sizeof s);
    snprintf(s.cluster_id, sizeof s.cluster_id, "prod");
    snprintf(s.group_id, sizeof s.group_id, "main");
    gs_id_set_add(&s.voters, "a");
    gs_id_set_add(&s.voters, "b");
    gs_id_set_add(&s.voters, "c");
    s.has_primary = 1;
    snprintf(s.primary, sizeof s.primary, "b");
    snprintf(s.primary_endpoint, sizeof s.primary_endpoint, "http://127.0.0.1:9882");
    s.term = 9007199254740993LL; /* beyond 2^53: must survive as a decimal string */
    s.durability_seq = 42;
    gs_id_set_add(&s.in_sync, "b");
    gs_id_set_add(&s.in_sync, "c");
    gs_id_set_add(&s.repairing, "a");
    s.ts_term = s.term;
    s.ts_seq = 17;
    snprintf(s.ts_prev, sizeof s.ts_prev, "a");
    s.ts_prev_seq = 15;
    s.updated_at_ms = 1700000000000LL;
    return s;
}

Test(repl_group, round_trip)
{
    gs_group_state s = sample(), back;
    size_t len = 0;
    char *json = gs_group_state_format(&s, &len);
    cr_assert_not_null(json);
    cr_expect(strstr(json, "\"primaryTerm\":\"9007199254740993\"") != NULL, "%s", json);
    cr_expect(strstr(json, "\"currentPrimary\":{\"nodeId\":\"b\"") != NULL, "%s", json);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_group_state_parse(json, len, &back, &err), GS_OK, "%s", err.message);
    cr_expect_eq(memcmp(&s, &back, sizeof s), 0, "the parsed state differs from the original");
    gs_free(json);
}

Test(repl_group, reference_shape_without_extensions)
{
    /* what the reference implementation writes: integers may come as numbers or strings,
     * currentPrimary null, termStart absent */
    const char *j =
        "{\"clusterId\":\"x\",\"groupId\":\"g\",\"votingDataBearingNodeIds\":[\"a\",\"b\","
        "\"c\"],\"currentPrimary\":null,\"primaryTerm\":\"3\",\"inSyncNodeIds\":[],"
        "\"drainingNodeIds\":[\"c\"],\"repairingNodeIds\":[],\"faultedNodeIds\":[],"
        "\"updatedAtMs\":5,\"unknownField\":true}";
    gs_group_state s;
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_group_state_parse(j, strlen(j), &s, &err), GS_OK, "%s", err.message);
    cr_expect_eq(s.has_primary, 0);
    cr_expect_eq(s.term, 3);
    cr_expect_eq(s.durability_seq, 0);
    cr_expect_eq(s.voters.n, 3);
    cr_expect(gs_id_set_has(&s.draining, "c"));
    cr_expect_eq(s.ts_term, 0);
}

Test(repl_group, malformed_is_refused_with_the_field)
{
    const char *cases[] = {
        "[]",
        "{\"primaryTerm\":\"x1\"}",
        "{\"primaryTerm\":\"-1\"}",
        "{\"inSyncNodeIds\":\"a\"}",
        "{\"inSyncNodeIds\":[1]}",
        "{\"currentPrimary\":{\"endpoint\":\"h\"}}",
        "{\"currentPrimary\":7}",
        "not json",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gs_group_state s;
        gs_error err;
        gs_error_init(&err);
        cr_expect_eq(gs_group_state_parse(cases[i], strlen(cases[i]), &s, &err), GS_ERROR, "%s",
                     cases[i]);
        cr_expect_str_eq(err.code, "COORDINATOR_UNAVAILABLE");
    }
}

Test(repl_group, id_sets)
{
    gs_id_set s;
    memset(&s, 0, sizeof s);
    cr_expect(gs_id_set_add(&s, "a"));
    cr_expect(gs_id_set_add(&s, "a"));
    cr_expect_eq(s.n, 1);
    for (int i = 0; i < GS_GROUP_MAX_NODES + 2; i++) {
        char id[16];
        snprintf(id, sizeof id, "n%d", i);
        gs_id_set_add(&s, id);
    }
    cr_expect_eq(s.n, GS_GROUP_MAX_NODES);
    gs_id_set_remove(&s, "a");
    cr_expect_not(gs_id_set_has(&s, "a"));
    cr_expect_eq(s.n, GS_GROUP_MAX_NODES - 1);
    cr_expect(gs_id_set_has(&s, "n0"));
}

Test(repl_group, node_record_round_trip)
{
    gs_node_record r, back;
    memset(&r, 0, sizeof r);
    snprintf(r.node_id, sizeof r.node_id, "node-a");
    snprintf(r.endpoint, sizeof r.endpoint, "http://127.0.0.1:9881");
    r.lease = 7587869131370364930LL;
    r.ttl_ms = 2000;
    r.voting = 1;
    snprintf(r.package_version, sizeof r.package_version, "0.1.0");
    snprintf(r.spec_version, sizeof r.spec_version, "1.0");
    snprintf(r.protocol_version, sizeof r.protocol_version, "1.0");
    snprintf(r.progress_source, sizeof r.progress_source, "node-b");
    r.progress_seq = 1234;
    r.progress_term = 4;
    size_t len = 0;
    char *json = gs_node_record_format(&r, "prod", &len);
    cr_assert_not_null(json);
    gs_error err;
    gs_error_init(&err);
    cr_assert_eq(gs_node_record_parse(json, len, &back, &err), GS_OK, "%s", err.message);
    cr_expect_eq(memcmp(&r, &back, sizeof r), 0, "%s", json);
    gs_free(json);
}

Test(repl_group, keys_are_percent_encoded)
{
    char k[128];
    cr_assert(gs_group_key(k, sizeof k, "prod", "main"));
    cr_expect_str_eq(k, "clusters/prod/groups/main");
    cr_assert(gs_node_key(k, sizeof k, "a b", "n/1"));
    cr_expect_str_eq(k, "clusters/a%20b/nodes/n%2F1");
    cr_assert(gs_node_prefix(k, sizeof k, "prod"));
    cr_expect_str_eq(k, "clusters/prod/nodes/");
    cr_assert(gs_controller_key(k, sizeof k, "prod"));
    cr_expect_str_eq(k, "clusters/prod/controller");
    char small[12];
    cr_expect_not(gs_group_key(small, sizeof small, "prod", "main"));
}
