/*
 * `gatestream cluster status|drain|undrain|repair|rejoin`: the operator's view of, and hands
 * on, a coordinator-mode replication group (spec 03 "Coordinator-Backed Failover",
 * "Controller, Liveness, and Maintenance").
 *
 *  - With --config FILE: loads only the coordinator plugin instance that FILE's
 *    replication.coordinator.instance names (nothing listens, no database opens), starts it,
 *    and reads the group state and the live node sessions from the coordinator
 *    (gs_group_read, gs_group_read_nodes), or changes the group's maintenance sets
 *    (gs_group_maintenance, a compare-and-set, so it never overwrites a concurrent change).
 *  - With --url URL --db ID (status only): asks a running node, GET /db/{id}/cluster
 *    (ClusterStatusInfo of spec 05; the node must serve it: server.cluster_status).
 *
 * Output: a table for a person, or JSON with --json. Exit status: 0 done; 1 a failure (the
 * coordinator or the node cannot be reached, no such group, a refused request; one line on
 * stderr saying what and how to fix it); 2 a usage or config error.
 *
 * Threads: the main thread; the coordinator plugin runs its own threads between start and
 * stop. Ownership: everything it allocates is freed before it returns.
 */
#ifndef GS_NODE_CLUSTER_CMD_H
#define GS_NODE_CLUSTER_CMD_H

/** argv[0] is "cluster"; the rest are its verb and options. Returns the exit status. */
int gs_cluster_command(int argc, char **argv);

#endif
