/*
 * Coordinator-mode authority of one replication group on this node (spec 03
 * "Coordinator-Backed Failover", "Node Health", "Conformance Invariants"), on top of a
 * coordinator plugin (coordinator.h: a linearisable store with leases, CAS and watches).
 *
 * What it does, on one thread of its own ("coordination thread"):
 *  - keeps this node's session: a lease of session_ttl_ms and the record nodes/{node}
 *    attached to it (endpoint, voting, compatibility, a progress marker), renewed every
 *    session_ttl_ms / 3; a restarted node waits for its previous session to expire;
 *  - reads and watches the group state groups/{group}; registers the group from the
 *    configured voters when it does not exist yet (the node configured `role: primary` becomes
 *    the primary of term 1);
 *  - runs the controller when enabled: holds clusters/{cluster}/controller on a lease, and
 *    while it holds it promotes when the primary's session is gone (or the primary is
 *    draining, repairing or faulted): only a voter with a live session that is in the in-sync
 *    set, not draining / repairing / faulted, of a compatible protocol major, with at least
 *    three voters configured; the most advanced candidate by its progress marker; the term is
 *    advanced with the new primary in one CAS, the displaced primary leaves the in-sync set and
 *    joins the repairing set. No candidate: NO_SAFE_PRIMARY is logged and nothing changes;
 *  - as the primary of a term: publishes termStart (its committed seq and how much of the
 *    previous primary's log it had applied) before it accepts a write, and admits / evicts
 *    in-sync members when the engine asks;
 *  - as a former primary that sees a newer term: gives up authority at once; the engine then
 *    either follows the new primary or, holding local-only writes, is quarantined (faulted).
 *
 * Write authority is proven, not assumed: gs_authority_can_write holds only while this node
 * is the recorded primary of the current term, termStart of that term is published, and its
 * session lease is known to be alive by its own clock (the last keepalive's send time plus
 * the ttl the store granted, less a margin: the store's expiry is always later).
 *
 * Threads: every public function is thread-safe; none blocks on the coordinator except
 * gs_authority_start / _stop. The on_change callback runs on the coordination thread with no
 * lock held and must not block (the engine queues work for its own threads).
 * Ownership: the authority copies the strings of its options; it borrows the coordinator
 * instance (the node owns it) and the callbacks' user pointer.
 */
#ifndef GS_REPL_AUTHORITY_H
#define GS_REPL_AUTHORITY_H

#include "base/buf.h"
#include "repl/group.h"

#include <gatestream/coordinator.h>
#include <stdint.h>

typedef struct gs_authority gs_authority;

typedef struct gs_authority_options {
    const char *node_id;
    const char *cluster_id;
    const char *group_id;
    const char *endpoint; /**< this node's client URL (currentPrimary / readEndpoints) or NULL */
    const char *const *voters; /**< votingDataBearingNodeIds, used to register the group */
    size_t nvoters;
    int bootstrap_primary;  /**< this node is the first primary when the group is registered */
    int64_t session_ttl_ms; /**< 10000 (normative default) */
    int controller;         /**< 1 */
    int64_t controller_lease_ttl_ms; /**< 10000 */
    int64_t controller_tick_ms;      /**< 1000 */
    const gs_coordinator_vtable *vt;
    void *inst;
    const char *package_version, *spec_version, *protocol_version;
    /** Engine callbacks (coordination thread). */
    void (*on_change)(void *user); /**< the view changed (term, primary, sets, authority) */
    /** This node's committed seq and its applied position of `source`'s log; for `source` ==
     * this node: the highest seq of a change this node originated. */
    int64_t (*committed_seq)(void *user);
    int64_t (*position_of)(void *user, const char *source);
    /** The source this node follows now ("" = none) and its position (progress marker). */
    void (*progress)(void *user, char *source, size_t cap, int64_t *seq);
    void *user;
} gs_authority_options;

/** Check options without starting anything (--check-config): INVALID_CONFIG. */
gs_status gs_authority_options_check(const gs_authority_options *o, gs_error *err);

/** Start the coordination thread. The coordinator need not be reachable: the node starts
 * without authority and keeps trying (COORDINATOR_UNAVAILABLE is logged). */
gs_status gs_authority_start(const gs_authority_options *o, gs_authority **out, gs_error *err);
/** Stop the thread, release the controller lease and deregister the session (bounded by the
 * coordinator's call timeout). Idempotent. */
void gs_authority_stop(gs_authority *a);
void gs_authority_free(gs_authority *a);

/** What this node knows now. */
typedef struct gs_authority_view {
    int known;               /**< the group state was read at least once */
    gs_group_state g;        /**< the last group state read */
    int can_write;           /**< gs_authority_can_write would succeed now */
    int coordinator_ok;      /**< the last coordinator call succeeded within session_ttl_ms */
    int session_live;        /**< this node's session lease is alive by its own clock */
    const char *controller;  /**< "disabled" | "standby" | "active" | "lost" */
    int64_t last_contact_ms; /**< monotonic ms of the last successful call (0 = never) */
    int64_t session_ttl_ms;
} gs_authority_view;

void gs_authority_view_get(gs_authority *a, gs_authority_view *out);

/**
 * May this node write now? GS_OK with *term = the term to stamp; otherwise GS_ERROR with:
 * COORDINATOR_UNAVAILABLE (never reached the coordinator, or its session cannot be proven),
 * AUTHORITY_LOST (it was the primary and can no longer prove it), STALE_PRIMARY (another node
 * is the primary; details carry currentPrimary and primaryTerm), NO_SAFE_PRIMARY (the group
 * has no primary), NODE_DRAINING (a draining primary hands over), UNSAFE_RECOVERY_REQUIRED
 * (this node is quarantined).
 */
gs_status gs_authority_can_write(gs_authority *a, int64_t *term, gs_error *err);

/** The current term and primary ("" = none) as last read; 0 when the group state is not
 * known. Cheap: the engine's fencing checks call it per message. */
int gs_authority_current(gs_authority *a, int64_t *term, char *primary, size_t cap);

/** Error details object text {"currentPrimary":..,"primaryTerm":".."} for an error. */
void gs_authority_error_details(gs_authority *a, gs_error *err);

/** Primary: ask the coordination thread to admit `node` to the in-sync set at durability
 * point `seq`, or to evict it (asynchronous; on_change reports the outcome). */
void gs_authority_admit(gs_authority *a, const char *node, int64_t seq);
void gs_authority_evict(gs_authority *a, const char *node, const char *why);
/** This node holds local-only writes after a failover: mark it faulted (asynchronous). */
void gs_authority_quarantine(gs_authority *a, const char *why);

/** Maintenance through the coordinator (the CLI and the node): CAS-update the group state.
 * op: "drain" | "undrain" | "repair" | "rejoin" (rejoin clears faulted and repairing so the
 * node syncs again). Synchronous; COORDINATOR_UNAVAILABLE, NOT_FOUND (no such group). */
gs_status gs_group_maintenance(const gs_coordinator_vtable *vt, void *inst, const char *cluster,
                               const char *group, const char *node, const char *op,
                               gs_group_state *out, gs_error *err);
/** Read the group state (GS_DECLINED when the group is not registered). */
gs_status gs_group_read(const gs_coordinator_vtable *vt, void *inst, const char *cluster,
                        const char *group, gs_group_state *out, int64_t *mod_revision,
                        gs_error *err);
/** Read the live node sessions of a cluster into a list (records past its capacity are
 * left out). */
gs_status gs_group_read_node_list(const gs_coordinator_vtable *vt, void *inst, const char *cluster,
                                  gs_node_list *out, gs_error *err);
/** Read the live node sessions of a cluster: calls each(user, record) per node. */
gs_status gs_group_read_nodes(const gs_coordinator_vtable *vt, void *inst, const char *cluster,
                              void (*each)(void *user, const gs_node_record *r), void *user,
                              gs_error *err);

#endif
