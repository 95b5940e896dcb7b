/*
 * The CPU priority of a backup's own work. A turn's copy is stepped on the database's writer,
 * but everything around it (driving the steps, writing the copy back, reading, fingerprinting
 * and sending pieces, the destination's own writes) runs on the backup's threads, and on a
 * machine with few cores that work competes with the writer and the transports for a core. A
 * write must not wait behind a backup's hashing, so those threads run in the background.
 *
 * Promise: gs_backup_thread_background() moves the calling thread, and only it, to the
 * SCHED_BATCH policy (when it wakes up it does not preempt the running thread; it waits for
 * the scheduler tick) with a nice value GS_BACKUP_NICE_STEP above the process's (its main
 * thread's; at most 19). A thread already at or past that value keeps it, so the call can be
 * repeated, and a thread started by a background thread (which inherits its policy and nice
 * value) ends at the same place. Linux keeps the nice value per thread; an unprivileged
 * thread can raise its own nice but never lower it again, so the call is for threads that
 * only ever do backup work, made when they start. A SCHED_BATCH thread only has its nice
 * value raised; a SCHED_IDLE or real-time one is left alone.
 *
 * Nice, not SCHED_IDLE: an idle-policy thread gets a share of about 0.3% of a core beside one
 * busy thread, so on a loaded machine a backup could stall for seconds at a time (long enough
 * for BACKUP_STALLED) or never finish; at nice +10 it keeps about 10% beside each busy thread
 * and all the CPU that is idle.
 *
 * Limit: the priority orders threads within the process's share of the machine. A kernel that
 * groups threads by session (CONFIG_SCHED_AUTOGROUP) or by cgroup shares the CPUs between
 * groups first, so the backup's CPU still counts against the server's share when other
 * sessions keep every core busy (README, "Backups" benchmark). A cgroup of its own for the
 * backup threads would lift that; the server does not manage cgroups.
 *
 * Ownership: nothing is allocated. Threads: any thread, for itself.
 */
#ifndef GS_DB_BACKUP_PRIORITY_H
#define GS_DB_BACKUP_PRIORITY_H

#include <gatestream/abi.h>

/** How far a backup thread's nice value is raised above the process's. */
#define GS_BACKUP_NICE_STEP 10

/** Move the calling thread to background priority (see above). On failure (a sandbox refusing
 * the calls) err says why; the thread keeps running as it was, and the backup works, only
 * without yielding to the writer. */
gs_status gs_backup_thread_background(gs_error *err);

#endif
