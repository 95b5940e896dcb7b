/* Background CPU priority for backup threads: see backup_priority.h. */
#include "backup_priority.h"

#include "../base/error.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

gs_status gs_backup_thread_background(gs_error *err)
{
    /* On Linux, PRIO_PROCESS with a thread id addresses that one thread (the nice value is a
     * per-thread attribute there, unlike POSIX's per-process one). */
    id_t tid = (id_t)gettid();
    int policy = sched_getscheduler(0); /* 0: the calling thread */
    if (policy < 0)
        return gs_error_set(err, 0, "BACKUP_ERROR",
                            "cannot read the scheduling policy of the backup thread: %s",
                            strerror(errno));
    if (policy != SCHED_OTHER && policy != SCHED_BATCH)
        return GS_OK; /* idle (already below everything) or real-time (the operator's choice) */
    if (policy == SCHED_OTHER) {
        struct sched_param sp;
        memset(&sp, 0, sizeof sp);
        /* SCHED_BATCH keeps the thread's nice value; the step below raises it */
        int rc = pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
        if (rc != 0)
            return gs_error_set(err, 0, "BACKUP_ERROR",
                                "cannot move the backup thread to SCHED_BATCH: %s; it keeps "
                                "competing with the writer for the CPU",
                                strerror(rc));
    }
    /* The target is counted from the process's nice value (its main thread's, whose id is the
     * process id), not from this thread's: a thread started by a background thread inherits
     * its nice value, and counting from that would push it on towards 19. */
    errno = 0;
    int base = getpriority(PRIO_PROCESS, (id_t)getpid());
    if (base == -1 && errno != 0)
        return gs_error_set(err, 0, "BACKUP_ERROR", "cannot read the nice value of the process: %s",
                            strerror(errno));
    errno = 0;
    int nice_now = getpriority(PRIO_PROCESS, tid);
    if (nice_now == -1 && errno != 0)
        return gs_error_set(err, 0, "BACKUP_ERROR",
                            "cannot read the nice value of the backup thread: %s", strerror(errno));
    int target = base + GS_BACKUP_NICE_STEP;
    if (target > 19)
        target = 19;
    if (nice_now < target && setpriority(PRIO_PROCESS, tid, target) != 0)
        return gs_error_set(err, 0, "BACKUP_ERROR",
                            "cannot raise the nice value of the backup thread to %d: %s; it "
                            "competes with the writer for the CPU",
                            target, strerror(errno));
    return GS_OK;
}
