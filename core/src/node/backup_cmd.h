/*
 * `gatestream backup` and `gatestream restore`: a full copy of one database named in a node's
 * config file (while a node may be serving it), and the restore of such a copy or of a backup
 * chain stored in a filesystem destination folder, to a moment (the fs destination plugin,
 * built in, reads the folder). Nothing listens. Exit status: 0 done, 1 a backup or restore
 * failure, 2 a usage or config error.
 *
 * Threads: runs on the main thread.
 */
#ifndef GS_NODE_BACKUP_CMD_H
#define GS_NODE_BACKUP_CMD_H

/** argv[0] is "backup"; the rest are its options. Returns the exit status. */
int gs_backup_command(int argc, char **argv);
/** argv[0] is "restore"; the rest are its options. Returns the exit status. */
int gs_restore_command(int argc, char **argv);

#endif
