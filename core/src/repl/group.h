/*
 * Coordinator-mode records (spec 03 "Coordinator-Backed Failover"): the replication group
 * state, a node's session record and the controller record, their JSON form in the
 * coordinator, and the keys they live under.
 *
 * Keys, relative to the coordinator plugin's key prefix (an operator reads them with
 * `etcdctl get --prefix <prefix>clusters/`):
 *   clusters/{cluster}/controller       the controller lease holder
 *   clusters/{cluster}/nodes/{node}     a node's session (attached to its session lease)
 *   clusters/{cluster}/groups/{group}   the group state (no lease; every change is a CAS)
 * Components are percent-encoded (RFC 3986 unreserved characters stay as they are).
 *
 * Group state JSON (the reference implementation's field names, so either implementation's
 * operator tooling reads it): clusterId, groupId, votingDataBearingNodeIds[],
 * currentPrimary {nodeId, endpoint?} | null, primaryTerm (decimal string),
 * durabilityPointSeq (decimal string), inSyncNodeIds[], drainingNodeIds[], repairingNodeIds[],
 * faultedNodeIds[], updatedAtMs; gatestream adds termStart {term, seq, previousPrimary,
 * previousPrimarySeq} (decimal strings): the new primary's own log position when its term
 * began and how much of the previous primary's log it had applied, which tells every other
 * node whether it can follow the new primary from its log or must sync again.
 *
 * Promise: parse accepts what format writes and anything with the same fields in any order;
 * unknown fields are ignored; a missing list is empty; a malformed record fails with
 * COORDINATOR_UNAVAILABLE naming the field (the store holds something this node cannot trust).
 * Threads: pure functions. Ownership: a gs_group_state is plain data (fixed arrays), copied by
 * assignment; format returns gs_malloc'd text.
 */
#ifndef GS_REPL_GROUP_H
#define GS_REPL_GROUP_H

#include "base/buf.h"

#include <gatestream/abi.h>
#include <stddef.h>
#include <stdint.h>

#define GS_GROUP_MAX_NODES 16
#define GS_GROUP_ID_MAX 128

typedef struct gs_id_set {
    size_t n;
    char id[GS_GROUP_MAX_NODES][GS_GROUP_ID_MAX];
} gs_id_set;

int gs_id_set_has(const gs_id_set *s, const char *id);
/** Append the set as a JSON array of strings. */
void gs_id_set_json(gs_buf *b, const gs_id_set *s);
/** Add id when absent; 0 when the set is full (id not added). */
int gs_id_set_add(gs_id_set *s, const char *id);
void gs_id_set_remove(gs_id_set *s, const char *id);

typedef struct gs_group_state {
    char cluster_id[GS_GROUP_ID_MAX];
    char group_id[GS_GROUP_ID_MAX];
    gs_id_set voters;
    int has_primary;
    char primary[GS_GROUP_ID_MAX];
    char primary_endpoint[256]; /**< "" = none */
    int64_t term;
    int64_t durability_seq;
    gs_id_set in_sync, draining, repairing, faulted;
    int64_t updated_at_ms;
    /* termStart: set by the primary of `term` before it accepts its first write */
    int64_t ts_term; /**< the term termStart describes (0 = none) */
    int64_t ts_seq;  /**< the primary's committed seq when the term began */
    char ts_prev[GS_GROUP_ID_MAX];
    int64_t ts_prev_seq; /**< its applied position of ts_prev's log then */
} gs_group_state;

/** A node's session record (the value under nodes/{node}). */
typedef struct gs_node_record {
    char node_id[GS_GROUP_ID_MAX];
    char endpoint[256];
    int64_t lease;
    int64_t ttl_ms;
    int voting;
    char package_version[32], spec_version[32], protocol_version[32];
    /* progress marker: this node's applied position of `progress_source`'s log */
    char progress_source[GS_GROUP_ID_MAX];
    int64_t progress_seq;
    int64_t progress_term;
} gs_node_record;

gs_status gs_group_state_parse(const char *json, size_t len, gs_group_state *out, gs_error *err);
/** The JSON text (gs_free it), or NULL when out of memory. */
char *gs_group_state_format(const gs_group_state *s, size_t *len);
/** Append the state as a JSON object (the form stored, for status output). */
void gs_group_state_json(gs_buf *b, const gs_group_state *s);

gs_status gs_node_record_parse(const char *json, size_t len, gs_node_record *out, gs_error *err);
char *gs_node_record_format(const gs_node_record *r, const char *cluster_id, size_t *len);

/** The live node sessions of a cluster, as gs_group_read_node_list reads them. */
typedef struct gs_node_list {
    size_t n;
    gs_node_record r[GS_GROUP_MAX_NODES * 2];
} gs_node_list;

/** The record of node `id` in the list, or NULL. */
const gs_node_record *gs_node_list_find(const gs_node_list *l, const char *id);

/** Key builders: write the key into out (size cap); 0 when it does not fit. */
int gs_group_key(char *out, size_t cap, const char *cluster, const char *group);
int gs_node_key(char *out, size_t cap, const char *cluster, const char *node);
int gs_node_prefix(char *out, size_t cap, const char *cluster);
int gs_controller_key(char *out, size_t cap, const char *cluster);

#endif
