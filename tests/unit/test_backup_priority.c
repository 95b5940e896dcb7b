/* The background CPU priority of backup threads (db/backup_priority.h): the calling thread, and
 * only it, moves to SCHED_BATCH with a nice value GS_BACKUP_NICE_STEP above the process's (at
 * most 19); repeating the call, or calling it from a thread a background thread started, does
 * not push it further; a SCHED_BATCH thread only has its nice raised; SCHED_IDLE is left
 * alone. Each case runs in a thread of its own, since a thread cannot take its nice value back
 * down (and Criterion runs each test in a process of its own, so a test may raise the nice
 * value of its main thread). */
#include "base/error.h"
#include "db/backup_priority.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

typedef struct probe {
    int prepare_policy; /* -1: keep SCHED_OTHER */
    int prepare_nice;   /* -1: keep the nice value inherited from the test */
    int calls;          /* how many times the thread calls it (0 means 1) */
    struct probe
        *child;       /* a probe the thread runs, once in the background, in a thread of its own */
    char failed[200]; /* set by the thread (Criterion asserts only on the test's thread) */
    gs_status st;
    gs_error err;
    int nice_before, nice_after;
    int policy_after;
} probe;

/* The calling thread's nice value, or INT_MIN when it cannot be read. */
static int thread_nice(void)
{
    errno = 0;
    int n = getpriority(PRIO_PROCESS, (id_t)gettid());
    return n == -1 && errno != 0 ? INT_MIN : n;
}

static void *probe_main(void *arg)
{
    probe *p = arg;
    if (p->prepare_nice >= 0 && setpriority(PRIO_PROCESS, (id_t)gettid(), p->prepare_nice) != 0) {
        snprintf(p->failed, sizeof p->failed, "setpriority: %s", strerror(errno));
        return NULL;
    }
    if (p->prepare_policy >= 0) {
        struct sched_param sp;
        memset(&sp, 0, sizeof sp);
        int rc = pthread_setschedparam(pthread_self(), p->prepare_policy, &sp);
        if (rc != 0) {
            snprintf(p->failed, sizeof p->failed, "pthread_setschedparam: %s", strerror(rc));
            return NULL;
        }
    }
    p->nice_before = thread_nice();
    gs_error_init(&p->err);
    for (int i = 0; i < (p->calls > 0 ? p->calls : 1); i++)
        p->st = gs_backup_thread_background(&p->err);
    p->nice_after = thread_nice();
    p->policy_after = sched_getscheduler(0);
    if (p->child) {
        pthread_t t;
        if (pthread_create(&t, NULL, probe_main, p->child) != 0 || pthread_join(t, NULL) != 0)
            snprintf(p->failed, sizeof p->failed, "cannot run the child probe");
    }
    return NULL;
}

static void run_probe(probe *p)
{
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, probe_main, p), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert_eq(p->failed[0], 0, "preparing the thread: %s", p->failed);
    cr_assert_neq(p->nice_before, INT_MIN);
    cr_assert_neq(p->nice_after, INT_MIN);
}

static int expected_nice(int before)
{
    return before + GS_BACKUP_NICE_STEP > 19 ? 19 : before + GS_BACKUP_NICE_STEP;
}

Test(backup_priority, a_normal_thread_goes_to_batch_ten_nicer)
{
    int test_nice = thread_nice();
    int test_policy = sched_getscheduler(0);
    probe p = {.prepare_policy = -1, .prepare_nice = -1};
    run_probe(&p);
    cr_assert_eq(p.st, GS_OK, "%s: %s", p.err.code, p.err.message);
    cr_assert_eq(p.nice_before, test_nice, "a new thread starts at its creator's nice");
    cr_assert_eq(p.nice_after, expected_nice(p.nice_before));
    cr_assert_eq(p.policy_after, SCHED_BATCH);
    cr_assert_eq(thread_nice(), test_nice, "the calling thread alone moved, not the process");
    cr_assert_eq(sched_getscheduler(0), test_policy);
}

Test(backup_priority, repeated_and_inherited_calls_do_not_compound)
{
    int test_nice = thread_nice();
    probe child = {.prepare_policy = -1, .prepare_nice = -1};
    probe p = {.prepare_policy = -1, .prepare_nice = -1, .calls = 3, .child = &child};
    run_probe(&p);
    cr_assert_eq(p.st, GS_OK, "%s: %s", p.err.code, p.err.message);
    cr_assert_eq(p.nice_after, expected_nice(test_nice), "three calls, one step");
    cr_assert_eq(child.failed[0], 0, "%s", child.failed);
    cr_assert_eq(child.st, GS_OK, "%s: %s", child.err.code, child.err.message);
    cr_assert_eq(child.nice_before, expected_nice(test_nice), "a new thread inherits the step");
    cr_assert_eq(child.nice_after, expected_nice(test_nice), "counted from the process");
    cr_assert_eq(child.policy_after, SCHED_BATCH);
}

Test(backup_priority, a_thread_already_nicer_keeps_its_value)
{
    int test_nice = thread_nice();
    if (test_nice > 3)
        cr_skip_test("the test process itself runs at nice %d", test_nice);
    probe p = {.prepare_policy = -1, .prepare_nice = 15};
    run_probe(&p);
    cr_assert_eq(p.st, GS_OK, "%s: %s", p.err.code, p.err.message);
    cr_assert_eq(p.nice_before, 15);
    cr_assert_eq(p.nice_after, 15, "nothing ever lowers a nice value");
    cr_assert_eq(p.policy_after, SCHED_BATCH);
}

Test(backup_priority, the_nice_value_stops_at_19)
{
    /* this test's process runs at nice 12 from here on: the step would reach 22 */
    if (thread_nice() < 12)
        cr_assert_eq(setpriority(PRIO_PROCESS, (id_t)gettid(), 12), 0, "%s", strerror(errno));
    probe p = {.prepare_policy = -1, .prepare_nice = -1};
    run_probe(&p);
    cr_assert_eq(p.st, GS_OK, "%s: %s", p.err.code, p.err.message);
    cr_assert_geq(p.nice_before, 12);
    cr_assert_eq(p.nice_after, 19);
    cr_assert_eq(p.policy_after, SCHED_BATCH);
}

Test(backup_priority, a_batch_thread_only_gets_nicer)
{
    probe p = {.prepare_policy = SCHED_BATCH, .prepare_nice = -1};
    run_probe(&p);
    cr_assert_eq(p.st, GS_OK, "%s: %s", p.err.code, p.err.message);
    cr_assert_eq(p.policy_after, SCHED_BATCH);
    cr_assert_eq(p.nice_after, expected_nice(p.nice_before));
}

Test(backup_priority, an_idle_thread_is_left_alone)
{
    probe p = {.prepare_policy = SCHED_IDLE, .prepare_nice = -1};
    run_probe(&p);
    cr_assert_eq(p.st, GS_OK, "%s: %s", p.err.code, p.err.message);
    cr_assert_eq(p.policy_after, SCHED_IDLE);
    cr_assert_eq(p.nice_after, p.nice_before, "already below every normal thread");
}
