/*
 * `gatestream migrate`: apply, roll back or show the schema migrations of one database named
 * in a node's config file, without starting the node (no plugins are loaded, no transport
 * listens). Exit status: 0 done, 1 a migration failure (or a status showing that `migrate`
 * would fail), 2 a usage or config error.
 *
 * Threads: runs on the main thread; the database it opens has its own writer thread.
 */
#ifndef GS_NODE_MIGRATE_CMD_H
#define GS_NODE_MIGRATE_CMD_H

/** argv[0] is "migrate"; the rest are its options. Returns the exit status. */
int gs_migrate_command(int argc, char **argv);

#endif
