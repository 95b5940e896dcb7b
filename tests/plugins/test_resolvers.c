/*
 * The three conflict resolvers (gs_resolver_lww.so, gs_resolver_primary_wins.so,
 * gs_resolver_field_merge.so) against the test host: every vector of
 * tests/vectors/conflict-resolution.json (read at run time), then the cases the vectors
 * leave out: deletes, absent local rows, per-column ties, type-exact comparison, the
 * primary_wins config key, malformed conflicts, allocation failures and concurrent calls.
 */
#include "resolver_host.h"

#define LWW_SO "gs_resolver_lww.so"
#define PW_SO "gs_resolver_primary_wins.so"
#define FM_SO "gs_resolver_field_merge.so"

#define HLC(n) "018bcfe56800-000" #n
#define A1 HLC(1) "-node-a"
#define B1 HLC(1) "-node-b"
#define A2 HLC(2) "-node-a"
#define B2 HLC(2) "-node-b"

TestSuite(resolvers, .init = rh_setup, .fini = rh_teardown);

/* ---- the spec's vectors ---- */

static const char *vec_str(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    cr_assert(!v || json_is_string(v) || json_is_null(v), "vector field %s is no string", key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The gs_conflict of one vector input; texts it needs are kept in t. */
static gs_conflict vec_conflict(const json_t *in, rh_texts *t)
{
    const json_t *local = json_object_get(in, "localChange");
    const json_t *remote = json_object_get(in, "remoteChange");
    cr_assert(json_is_object(remote), "a vector without remoteChange");
    const json_t *local_data = NULL;
    if (json_is_object(local)) {
        local_data = json_object_get(local, "newData");
        if (!local_data || json_is_null(local_data))
            local_data = json_object_get(local, "oldData");
    }
    const char *op = vec_str(remote, "operation");
    gs_conflict c = {
        .struct_size = sizeof c,
        .table = vec_str(in, "table"),
        .row_id = vec_str(in, "rowId"),
        .local_row_json = rh_dump(t, local_data),
        .local_hlc = vec_str(in, "localHlc"),
        .local_node_id = json_is_object(local) ? vec_str(local, "nodeId") : NULL,
        /* The vectors leave the operation out: a conflict on an existing row is an update. */
        .incoming_operation = op ? op : "update",
        .incoming_new_json = rh_dump(t, json_object_get(remote, "newData")),
        .incoming_old_json = rh_dump(t, json_object_get(remote, "oldData")),
        .incoming_hlc = vec_str(in, "remoteHlc"),
        .incoming_node_id = vec_str(remote, "nodeId"),
        .column_versions_json = rh_dump(t, json_object_get(in, "columnVersions")),
        .primary_node_id = vec_str(in, "primaryNodeId"),
    };
    return c;
}

static gs_resolution_kind vec_kind(const char *action)
{
    if (strcmp(action, "accept_remote") == 0)
        return GS_RESOLVE_TAKE_INCOMING;
    if (strcmp(action, "keep_local") == 0)
        return GS_RESOLVE_KEEP_LOCAL;
    cr_assert_str_eq(action, "merge", "unknown expected action");
    return GS_RESOLVE_MERGED;
}

/* Run one vector through p; with config_primary, primary_wins gets the primary through its
 * config key instead of the conflict. */
static void run_vector(const rh_plugin *p, const json_t *vec, int config_primary)
{
    const char *name = vec_str(vec, "name");
    const json_t *expected = json_object_get(vec, "expected");
    rh_texts t = {0};
    gs_conflict c = vec_conflict(json_object_get(vec, "input"), &t);
    if (config_primary)
        c.primary_node_id = NULL;
    gs_resolution res;
    gs_error err;
    gs_status st = rh_resolve(p, &c, &res, &err);
    cr_assert_eq(st, GS_OK, "%s / %s: %s %s", p->desc->name, name, err.code, err.message);
    gs_resolution_kind want = vec_kind(vec_str(expected, "action"));
    cr_assert_eq(res.kind, want, "%s / %s: kind %d, expected %d", p->desc->name, name, res.kind,
                 want);
    if (want == GS_RESOLVE_MERGED) {
        const char *merged = rh_dump(&t, json_object_get(expected, "mergedData"));
        cr_assert(rh_json_equal_text(res.merged_row_json, merged), "%s / %s: merged %s, want %s",
                  p->desc->name, name, res.merged_row_json, merged);
        fh_free(res.merged_row_json);
    }
    rh_texts_free(&t);
}

static json_t *load_vectors(void)
{
    json_error_t jerr;
    json_t *doc = json_load_file(GS_VECTORS_DIR "/conflict-resolution.json", 0, &jerr);
    cr_assert_not_null(doc, "%s: %s line %d", GS_VECTORS_DIR "/conflict-resolution.json", jerr.text,
                       jerr.line);
    /* A section added to the vectors must get a resolver here, not be skipped. */
    const char *key;
    json_t *v;
    json_object_foreach(doc, key, v)
    {
        cr_assert(strcmp(key, "description") == 0 || strcmp(key, "lww") == 0 ||
                      strcmp(key, "primary_wins") == 0 || strcmp(key, "field_merge") == 0,
                  "conflict-resolution.json has a section '%s' this test does not run", key);
    }
    return doc;
}

/* Every vector of a section through one resolver; returns how many ran. */
static size_t run_section(const json_t *doc, const char *section, const char *so, const char *name,
                          const char *const *keys, size_t nkeys, int config_primary)
{
    const json_t *vectors = json_object_get(doc, section);
    cr_assert(json_is_array(vectors) && json_array_size(vectors) > 0, "section %s", section);
    rh_plugin p = rh_load(so, name);
    rh_create_ok(&p, keys, nkeys);
    size_t i;
    const json_t *vec;
    json_array_foreach(vectors, i, vec) run_vector(&p, vec, config_primary);
    rh_close(&p);
    return json_array_size(vectors);
}

Test(resolvers, every_vector)
{
    json_t *doc = load_vectors();
    size_t ran = run_section(doc, "lww", LWW_SO, "lww", NULL, 0, 0);
    ran += run_section(doc, "primary_wins", PW_SO, "primary_wins", NULL, 0, 0);
    ran += run_section(doc, "field_merge", FM_SO, "field_merge", NULL, 0, 0);
    cr_assert_eq(ran, json_array_size(json_object_get(doc, "lww")) +
                          json_array_size(json_object_get(doc, "primary_wins")) +
                          json_array_size(json_object_get(doc, "field_merge")));
    cr_assert_geq(ran, 11u, "the spec ships 11 conflict vectors");
    json_decref(doc);
}

/* The primary_wins vectors again, with the primary named by the config key instead of the
 * core (every vector there names the same primary). */
Test(resolvers, primary_wins_vectors_through_config_key)
{
    json_t *doc = load_vectors();
    const json_t *vec;
    size_t i;
    json_array_foreach(json_object_get(doc, "primary_wins"), i, vec)
    {
        const char *primary = vec_str(json_object_get(vec, "input"), "primaryNodeId");
        cr_assert_str_eq(primary, "node-primary");
    }
    static const char *const keys[] = {"primary_node_id", "node-primary"};
    run_section(doc, "primary_wins", PW_SO, "primary_wins", keys, 1, 1);
    json_decref(doc);
}

/* LWW is the fallback of the other two: with no primary known and no column versions,
 * both answer every LWW vector as lww does. */
Test(resolvers, lww_vectors_through_the_fallbacks)
{
    json_t *doc = load_vectors();
    run_section(doc, "lww", PW_SO, "primary_wins", NULL, 0, 0);
    run_section(doc, "lww", FM_SO, "field_merge", NULL, 0, 0);
    json_decref(doc);
}

/* ---- LWW ---- */

Test(resolvers, lww_remote_delete_wins_whatever_the_stamps)
{
    rh_plugin p = rh_load(LWW_SO, "lww");
    rh_create_ok(&p, NULL, 0);
    gs_conflict c = rh_conflict(B2, "node-b", A1, "node-a");
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_KEEP_LOCAL, "the older update loses");
    c.incoming_operation = "delete";
    c.incoming_new_json = NULL;
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING, "the older delete still wins");
    c.incoming_operation = "DELETE"; /* the change log's spelling */
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING);
    c.incoming_hlc = NULL; /* a delete needs no stamp to win */
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING);
    rh_close(&p);
}

Test(resolvers, lww_local_absent_insert_is_accepted)
{
    rh_plugin p = rh_load(LWW_SO, "lww");
    rh_create_ok(&p, NULL, 0);
    gs_conflict c = rh_conflict(NULL, NULL, A1, "node-a");
    c.incoming_operation = "insert";
    c.local_row_json = NULL;
    c.incoming_old_json = NULL;
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING);
    rh_close(&p);
}

Test(resolvers, lww_order_is_bytewise_and_ties_go_to_the_greater_node)
{
    rh_plugin p = rh_load(LWW_SO, "lww");
    rh_create_ok(&p, NULL, 0);
    /* Wall clock decides before the logical counter; hex digits order as text. */
    gs_conflict c =
        rh_conflict("018bcfe56801-0000-node-a", "node-a", "018bcfe56800-ffff-node-b", "node-b");
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_KEEP_LOCAL);
    c = rh_conflict("018bcfe56800-0009-node-a", "node-a", "018bcfe56800-000a-node-b", "node-b");
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING, "'a' > '9' byte-wise");
    /* Identical stamps: the node ids decide, byte-wise (uppercase sorts before lowercase). */
    c = rh_conflict(A1, "node-a", A1, "node-B");
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_KEEP_LOCAL);
    c = rh_conflict(A1, "node-a", A1, "node-a");
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_KEEP_LOCAL, "the same node: keep local");
    c = rh_conflict(A1, NULL, A1, "node-a");
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING, "an unknown local node is \"\"");
    c = rh_conflict(A1, "node-a", A1, NULL);
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_KEEP_LOCAL);
    c = rh_conflict(A1, "node-\xc3\xa9", A1, "node-z"); /* UTF-8 bytes sort after ASCII */
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_KEEP_LOCAL);
    rh_close(&p);
}

/* ---- primary_wins ---- */

Test(resolvers, primary_wins_config_key_beats_the_core_primary)
{
    rh_plugin p = rh_load(PW_SO, "primary_wins");
    const gs_config_key *k = rh_key(&p, "primary_node_id");
    cr_assert_eq(k->type, GS_CFG_STRING);
    cr_assert_not(k->required);
    cr_assert_null(k->default_value);
    static const char *const keys[] = {"primary_node_id", "node-x"};
    rh_create_ok(&p, keys, 1);

    /* The configured primary's older change wins over a newer local one. */
    gs_conflict c = rh_conflict(B2, "node-y", A1, "node-x");
    c.primary_node_id = "node-y"; /* the core's view; the config key overrides it */
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING);
    /* The configured primary wrote the local row: a newer change from node-y is kept out. */
    c = rh_conflict(A1, "node-x", B2, "node-y");
    c.primary_node_id = "node-y";
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_KEEP_LOCAL);
    /* A delete from a non-primary against the primary's row: the primary rule comes first. */
    c.incoming_operation = "delete";
    c.incoming_new_json = NULL;
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_KEEP_LOCAL);
    /* Neither side is the configured primary: LWW, including the delete rule. */
    c = rh_conflict(B2, "node-b", A1, "node-a");
    c.primary_node_id = "node-a";
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_KEEP_LOCAL);
    c.incoming_operation = "delete";
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING);
    rh_close(&p);
}

Test(resolvers, primary_wins_follows_the_core_primary_without_config)
{
    rh_plugin p = rh_load(PW_SO, "primary_wins");
    rh_create_ok(&p, NULL, 0);
    gs_conflict c = rh_conflict(B2, "node-b", A1, "node-a");
    c.primary_node_id = "node-a";
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING);
    c.primary_node_id = "node-b";
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_KEEP_LOCAL);
    c = rh_conflict(A1, "node-a", B2, "node-b");
    c.primary_node_id = "node-a"; /* local is the primary */
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_KEEP_LOCAL);
    c.primary_node_id = NULL; /* no primary known: plain LWW */
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING);
    c.primary_node_id = "";
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING);
    /* An unknown origin is never the primary. */
    c = rh_conflict(B2, NULL, A1, NULL);
    c.primary_node_id = "node-a";
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_KEEP_LOCAL);
    rh_close(&p);
}

Test(resolvers, primary_wins_refuses_an_empty_primary)
{
    rh_plugin p = rh_load(PW_SO, "primary_wins");
    static const char *const keys[] = {"primary_node_id", ""};
    gs_error err;
    cr_assert_eq(rh_create(&p, keys, 1, &err), GS_ERROR);
    cr_assert_str_eq(err.code, "INVALID_CONFIG");
    cr_assert(strstr(err.message, "primary_node_id"), "%s", err.message);
    rh_close(&p);
}

/* ---- field_merge ---- */

#define VERSIONS_A0                                                                                \
    "{\"name\":{\"hlc\":\"" HLC(0) "-node-a\",\"nodeId\":\"node-a\"},"                             \
                                   "\"email\":{\"hlc\":\"" HLC(                                    \
                                       0) "-node-a\",\"nodeId\":\"node-a\"}}"

/* A users/1 conflict between two updates of {name, email} from the same ancestor. */
static gs_conflict fm_conflict(const char *local, const char *remote, const char *old,
                               const char *versions)
{
    gs_conflict c = {
        .struct_size = sizeof c,
        .table = "users",
        .row_id = "1",
        .primary_key_json = "{\"id\":1}",
        .local_row_json = local,
        .local_hlc = A1,
        .local_node_id = "node-a",
        .incoming_operation = "update",
        .incoming_new_json = remote,
        .incoming_old_json = old,
        .incoming_hlc = B1,
        .incoming_node_id = "node-b",
        .column_versions_json = versions,
    };
    return c;
}

static void assert_merged(const rh_plugin *p, const gs_conflict *c, const char *want)
{
    json_t *got = rh_merged(p, c);
    json_t *w = json_loads(want, 0, NULL);
    cr_assert_not_null(w, "bad expectation %s", want);
    char *text = json_dumps(got, JSON_COMPACT);
    cr_assert(json_equal(got, w), "merged %s, want %s", text, want);
    free(text);
    json_decref(got);
    json_decref(w);
}

Test(resolvers, field_merge_accepts_a_delete_even_with_versions)
{
    rh_plugin p = rh_load(FM_SO, "field_merge");
    rh_create_ok(&p, NULL, 0);
    gs_conflict c = fm_conflict("{\"name\":\"L\",\"email\":\"e\"}", NULL,
                                "{\"name\":\"A\",\"email\":\"e\"}", VERSIONS_A0);
    c.incoming_operation = "delete";
    c.incoming_hlc = HLC(0) "-node-0"; /* older than everything local */
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING);
    c.column_versions_json = NULL;
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING);
    rh_close(&p);
}

Test(resolvers, field_merge_local_absent_insert)
{
    rh_plugin p = rh_load(FM_SO, "field_merge");
    rh_create_ok(&p, NULL, 0);
    gs_conflict c =
        fm_conflict(NULL, "{\"id\":1,\"name\":\"N\",\"email\":null}", NULL, VERSIONS_A0);
    c.incoming_operation = "insert";
    c.local_hlc = NULL;
    c.local_node_id = NULL;
    /* With versions left from an earlier life of the row: every column is a remote change. */
    assert_merged(&p, &c, "{\"id\":1,\"name\":\"N\",\"email\":null}");
    /* Without versions: LWW, and no local stamp accepts. */
    c.column_versions_json = "{}";
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING);
    c.column_versions_json = "";
    cr_assert_eq(rh_kind(&p, &c), GS_RESOLVE_TAKE_INCOMING);
    rh_close(&p);
}

Test(resolvers, field_merge_column_tie_goes_to_the_greater_node)
{
    rh_plugin p = rh_load(FM_SO, "field_merge");
    rh_create_ok(&p, NULL, 0);
    const char *old = "{\"name\":\"A\",\"email\":\"e\"}";
    const char *local = "{\"name\":\"Local\",\"email\":\"e\"}";
    const char *remote = "{\"name\":\"Remote\",\"email\":\"e\"}";
    /* The column's version carries the incoming HLC itself: a tie. */
    gs_conflict c =
        fm_conflict(local, remote, old, "{\"name\":{\"hlc\":\"" B1 "\",\"nodeId\":\"node-a\"}}");
    assert_merged(&p, &c, "{\"name\":\"Remote\",\"email\":\"e\"}"); /* node-b > node-a */
    c.column_versions_json = "{\"name\":{\"hlc\":\"" B1 "\",\"nodeId\":\"node-z\"}}";
    assert_merged(&p, &c, "{\"name\":\"Local\",\"email\":\"e\"}"); /* node-b < node-z */
    c.column_versions_json = "{\"name\":{\"hlc\":\"" B1 "\",\"nodeId\":\"node-b\"}}";
    assert_merged(&p, &c, "{\"name\":\"Local\",\"email\":\"e\"}"); /* equal: local */
    c.column_versions_json = "{\"name\":{\"hlc\":\"" B1 "\"}}";    /* no nodeId: "" */
    assert_merged(&p, &c, "{\"name\":\"Remote\",\"email\":\"e\"}");
    /* A newer column version keeps the local value whatever the node ids. */
    c.column_versions_json = "{\"name\":{\"hlc\":\"" A2 "\",\"nodeId\":\"node-a\"}}";
    assert_merged(&p, &c, "{\"name\":\"Local\",\"email\":\"e\"}");
    rh_close(&p);
}

Test(resolvers, field_merge_overlap_without_a_column_version_uses_row_lww)
{
    rh_plugin p = rh_load(FM_SO, "field_merge");
    rh_create_ok(&p, NULL, 0);
    /* Versions exist, but not for `name`, which both sides changed. */
    gs_conflict c =
        fm_conflict("{\"name\":\"Local\",\"email\":\"e\"}",
                    "{\"name\":\"Remote\",\"email\":\"new\"}", "{\"name\":\"A\",\"email\":\"e\"}",
                    "{\"email\":{\"hlc\":\"" A1 "\",\"nodeId\":\"node-a\"}}");
    c.local_hlc = A2; /* the row's stamp is newer than the incoming B1: local keeps name */
    assert_merged(&p, &c, "{\"name\":\"Local\",\"email\":\"new\"}");
    c.local_hlc = A1; /* same stamp, node-b > node-a: remote takes name */
    assert_merged(&p, &c, "{\"name\":\"Remote\",\"email\":\"new\"}");
    rh_close(&p);
}

Test(resolvers, field_merge_compares_values_type_exactly)
{
    rh_plugin p = rh_load(FM_SO, "field_merge");
    rh_create_ok(&p, NULL, 0);
    const char *versions = "{\"n\":{\"hlc\":\"" A2 "\",\"nodeId\":\"node-a\"}}";
    /* 1 -> 1.0 and 1 -> "1" are remote changes; the local row did not change them. */
    gs_conflict c = fm_conflict("{\"n\":1,\"r\":1,\"s\":1}", "{\"n\":1,\"r\":1.0,\"s\":\"1\"}",
                                "{\"n\":1,\"r\":1,\"s\":1}", versions);
    gs_resolution res;
    gs_error err;
    cr_assert_eq(rh_resolve(&p, &c, &res, &err), GS_OK, "%s", err.message);
    cr_assert_eq(res.kind, GS_RESOLVE_MERGED);
    json_t *got = json_loads(res.merged_row_json, 0, NULL);
    cr_assert(json_is_integer(json_object_get(got, "n")), "%s", res.merged_row_json);
    cr_assert(json_is_real(json_object_get(got, "r")), "%s", res.merged_row_json);
    cr_assert(json_is_string(json_object_get(got, "s")), "%s", res.merged_row_json);
    cr_assert(strstr(res.merged_row_json, "\"r\":1.0"), "a REAL stays a REAL in the text: %s",
              res.merged_row_json);
    json_decref(got);
    fh_free(res.merged_row_json);

    /* Same values in other spellings are no change: an int envelope equals the plain integer,
     * blob hex compares case-insensitively, true is not 1. */
    c = fm_conflict("{\"i\":7,\"b\":{\"__sirannon_blob\":\"0A\"},\"t\":1}",
                    "{\"i\":{\"__sirannon_int\":\"7\"},\"b\":{\"__sirannon_blob\":\"0a\"},"
                    "\"t\":true}",
                    "{\"i\":7,\"b\":{\"__sirannon_blob\":\"0A\"},\"t\":1}", versions);
    assert_merged(&p, &c, "{\"i\":7,\"b\":{\"__sirannon_blob\":\"0A\"},\"t\":true}");

    /* Integers beyond 2^53 keep their envelopes, and distinct ones differ. */
    c = fm_conflict("{\"big\":{\"__sirannon_int\":\"9007199254740993\"},\"x\":\"L\"}",
                    "{\"big\":{\"__sirannon_int\":\"9007199254740994\"},\"x\":\"o\"}",
                    "{\"big\":{\"__sirannon_int\":\"9007199254740993\"},\"x\":\"o\"}", versions);
    assert_merged(&p, &c, "{\"big\":{\"__sirannon_int\":\"9007199254740994\"},\"x\":\"L\"}");

    /* null is a value: null -> absent in old counts as a change, and so does "" vs null. */
    c = fm_conflict("{\"a\":null}", "{\"a\":null,\"z\":null}", "{\"a\":\"\"}", versions);
    assert_merged(&p, &c, "{\"a\":null,\"z\":null}");
    rh_close(&p);
}

Test(resolvers, field_merge_merges_even_when_nothing_changed)
{
    rh_plugin p = rh_load(FM_SO, "field_merge");
    rh_create_ok(&p, NULL, 0);
    const char *row = "{\"id\":1,\"name\":\"A\",\"blob\":{\"__sirannon_blob\":\"\"},"
                      "\"u\":\"\\u00e9\\ud83d\\ude00\"}";
    gs_conflict c = fm_conflict(row, row, row, VERSIONS_A0);
    assert_merged(&p, &c, row);
    rh_close(&p);
}

/* ---- malformed conflicts: CONFLICT_ERROR naming the table, the row and the fault ---- */

static void assert_conflict_error(const rh_plugin *p, const gs_conflict *c, const char *needle)
{
    gs_resolution res;
    gs_error err;
    cr_assert_eq(rh_resolve(p, c, &res, &err), GS_ERROR, "%s accepted a bad conflict (%s)",
                 p->desc->name, needle);
    cr_assert_str_eq(err.code, "CONFLICT_ERROR");
    cr_assert(strstr(err.message, needle), "%s: %s", p->desc->name, err.message);
    if (c->struct_size >= sizeof(gs_conflict)) {
        cr_assert(strstr(err.message, c->table), "%s", err.message);
        json_t *d = json_loads(err.details, 0, NULL);
        cr_assert(json_is_object(d), "details: %s", err.details);
        cr_assert_str_eq(json_string_value(json_object_get(d, "table")), c->table);
        cr_assert_str_eq(json_string_value(json_object_get(d, "rowId")), c->row_id);
        json_decref(d);
    }
}

Test(resolvers, malformed_conflicts_are_refused)
{
    static const char *const so[] = {LWW_SO, PW_SO, FM_SO};
    static const char *const names[] = {"lww", "primary_wins", "field_merge"};
    for (size_t i = 0; i < 3; i++) {
        rh_plugin p = rh_load(so[i], names[i]);
        rh_create_ok(&p, NULL, 0);
        gs_conflict c = fm_conflict("{}", "{}", "{}", VERSIONS_A0);
        c.incoming_operation = "ddl";
        assert_conflict_error(&p, &c, "'ddl' cannot conflict");
        c.incoming_operation = NULL;
        assert_conflict_error(&p, &c, "operation");
        c = fm_conflict("{}", "{}", "{}", VERSIONS_A0);
        c.incoming_hlc = NULL;
        assert_conflict_error(&p, &c, "no HLC");
        c.incoming_hlc = "";
        assert_conflict_error(&p, &c, "no HLC");
        /* Names that need escaping still give a valid details object. */
        c = fm_conflict("{}", "{}", "{}", VERSIONS_A0);
        c.table = "we\"ird\\table\n";
        c.row_id = NULL;
        c.incoming_operation = "merge";
        gs_resolution res;
        gs_error err;
        cr_assert_eq(rh_resolve(&p, &c, &res, &err), GS_ERROR);
        json_t *d = json_loads(err.details, 0, NULL);
        cr_assert_str_eq(json_string_value(json_object_get(d, "table")), "we\"ird\\table\n", "%s",
                         err.details);
        cr_assert_str_eq(json_string_value(json_object_get(d, "rowId")), "");
        json_decref(d);
        /* A 1.2-sized record (the layout before the reshape) is refused, not misread. */
        c = fm_conflict("{}", "{}", "{}", VERSIONS_A0);
        c.struct_size = offsetof(gs_conflict, primary_node_id);
        assert_conflict_error(&p, &c, "ABI 1.3");
        rh_close(&p);
    }
}

Test(resolvers, field_merge_refuses_bad_json)
{
    rh_plugin p = rh_load(FM_SO, "field_merge");
    rh_create_ok(&p, NULL, 0);
    const char *ok = "{\"name\":\"A\"}";
    gs_conflict c = fm_conflict(ok, ok, ok, "{\"name\":");
    assert_conflict_error(&p, &c, "column_versions_json is not valid JSON");
    c.column_versions_json = "[1]";
    assert_conflict_error(&p, &c, "column_versions_json is not a JSON object");
    c.column_versions_json = "{\"name\":{\"nodeId\":\"node-a\"}}";
    assert_conflict_error(&p, &c, "column 'name' needs");
    c.column_versions_json = "{\"name\":{\"hlc\":5}}";
    assert_conflict_error(&p, &c, "column 'name' needs");
    c.column_versions_json = "{\"name\":\"" A1 "\"}";
    assert_conflict_error(&p, &c, "column 'name' needs");
    c.column_versions_json = VERSIONS_A0;
    c.local_row_json = "[]";
    assert_conflict_error(&p, &c, "local_row_json is not a JSON object");
    c.local_row_json = ok;
    c.incoming_new_json = "{\"name\":\"A\",\"name\":\"B\"}";
    assert_conflict_error(&p, &c, "incoming_new_json is not valid JSON");
    c.incoming_new_json = ok;
    c.incoming_old_json = "{\"n\":123456789012345678901234567890}";
    assert_conflict_error(&p, &c, "incoming_old_json is not valid JSON");
    rh_close(&p);
}

/* ---- memory ---- */

Test(resolvers, allocation_failures_are_clean)
{
    static const char *const so[] = {LWW_SO, PW_SO, FM_SO};
    static const char *const names[] = {"lww", "primary_wins", "field_merge"};
    for (size_t i = 0; i < 3; i++) {
        rh_plugin p = rh_load(so[i], names[i]);
        gs_error err;
        atomic_store(&PT.fail_size_min, 1);
        cr_assert_eq(rh_create(&p, NULL, 0, &err), GS_ERROR);
        atomic_store(&PT.fail_size_min, 0);
        cr_assert_str_eq(err.code, "INTERNAL_ERROR");
        cr_assert_eq(rh_live(), 0);
        rh_close(&p);
    }
    /* primary_wins: the instance fits, the copy of a long primary id does not. */
    rh_plugin p = rh_load(PW_SO, "primary_wins");
    static const char *const keys[] = {"primary_node_id",
                                       "a-primary-node-id-longer-than-the-instance-struct"};
    gs_error err;
    atomic_store(&PT.fail_size_min, 40);
    cr_assert_eq(rh_create(&p, keys, 1, &err), GS_ERROR);
    atomic_store(&PT.fail_size_min, 0);
    cr_assert_str_eq(err.code, "INTERNAL_ERROR");
    cr_assert_eq(rh_live(), 0, "the instance was freed");
    rh_close(&p);

    /* field_merge: the merged row cannot be allocated. */
    rh_plugin f = rh_load(FM_SO, "field_merge");
    rh_create_ok(&f, NULL, 0);
    gs_conflict c = fm_conflict("{\"name\":\"L\"}", "{\"name\":\"A\",\"email\":\"x\"}",
                                "{\"name\":\"A\"}", VERSIONS_A0);
    atomic_store(&PT.fail_size_min, 1);
    gs_resolution res;
    cr_assert_eq(rh_resolve(&f, &c, &res, &err), GS_ERROR);
    atomic_store(&PT.fail_size_min, 0);
    cr_assert_str_eq(err.code, "INTERNAL_ERROR");
    cr_assert_eq(rh_live(), 1, "only the instance is live");
    assert_merged(&f, &c, "{\"name\":\"L\",\"email\":\"x\"}");
    rh_close(&f);
}

/* ---- resolvers are pure: one instance, many threads, the same answers ---- */

typedef struct worker {
    const rh_plugin *p;
    int failures;
} worker;

static void *resolve_many(void *arg)
{
    worker *w = arg;
    gs_conflict merge = fm_conflict("{\"name\":\"Alice Local\",\"email\":\"a@old\"}",
                                    "{\"name\":\"Alice\",\"email\":\"a@new\"}",
                                    "{\"name\":\"Alice\",\"email\":\"a@old\"}", VERSIONS_A0);
    gs_conflict lww = fm_conflict("{}", "{}", "{}", NULL);
    for (int i = 0; i < 400; i++) {
        gs_resolution res = {.struct_size = sizeof res};
        gs_error err;
        if (w->p->vt->resolve(w->p->inst, &merge, &res, &err) != GS_OK ||
            res.kind != GS_RESOLVE_MERGED ||
            !rh_json_equal_text(res.merged_row_json,
                                "{\"name\":\"Alice Local\",\"email\":\"a@new\"}"))
            w->failures++;
        fh_free(res.merged_row_json);
        res.merged_row_json = NULL;
        if (w->p->vt->resolve(w->p->inst, &lww, &res, &err) != GS_OK ||
            res.kind != GS_RESOLVE_TAKE_INCOMING || res.merged_row_json)
            w->failures++;
    }
    return NULL;
}

Test(resolvers, field_merge_is_thread_safe)
{
    rh_plugin p = rh_load(FM_SO, "field_merge");
    rh_create_ok(&p, NULL, 0);
    pthread_t t[4];
    worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){.p = &p};
        cr_assert_eq(pthread_create(&t[i], NULL, resolve_many, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(w[i].failures, 0, "thread %d saw %d wrong answers", i, w[i].failures);
    }
    rh_close(&p);
}
