/*
 * Scaffolding shared by the unit tests (tests/unit/test_*.c): a temp directory under /tmp made
 * with mkdtemp() and removed with everything in it, the monotonic clock in milliseconds, a
 * CLOCK_REALTIME deadline for pthread_cond_timedwait, JSON test input parsed or the test fails,
 * and the options of a writer connection.
 *
 * Header-only (static inline): each unit test binary is one translation unit, so nothing is
 * added to tests/CMakeLists.txt. The caller owns the directory buffer it passes; helpers that
 * assert do so with Criterion and so run on the test's own thread.
 */
#ifndef GS_TESTS_UNIT_TEST_SUPPORT_H
#define GS_TESTS_UNIT_TEST_SUPPORT_H

#include "sqlite/connection.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

/* dir = a fresh directory /tmp/gs-<tag>-XXXXXX; fails the test when it cannot be made. */
static inline void gs_test_mkdtemp(char *dir, size_t cap, const char *tag)
{
    snprintf(dir, cap, "/tmp/gs-%s-XXXXXX", tag);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp %s", dir);
}

static inline int gs_test_rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* Remove dir and everything below it (best effort: teardown must not fail a test). */
static inline void gs_test_rmtree(const char *dir)
{
    nftw(dir, gs_test_rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

static inline int64_t gs_test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The CLOCK_REALTIME time ms milliseconds from now (for pthread_cond_timedwait). */
static inline struct timespec gs_test_realtime_in(long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* text parsed as JSON (any value), NULL for NULL; a text that does not parse fails the test.
 * The caller owns the reference. */
static inline json_t *gs_test_parse_json(const char *text)
{
    if (!text)
        return NULL;
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
    cr_assert_not_null(j, "bad test JSON %s: %s", text, je.text);
    return j;
}

/* The options of a WAL writer connection that creates path, synchronous=NORMAL, no automatic
 * checkpoints; the busy timeout and statement cache size are the test's. */
static inline gs_conn_options gs_test_writer_options(const char *path, int busy_timeout_ms,
                                                     int stmt_cache_size)
{
    gs_conn_options o = {.path = path,
                         .role = GS_CONN_WRITER,
                         .create = 1,
                         .wal = 1,
                         .sync_level = 1,
                         .wal_autocheckpoint = -1,
                         .busy_timeout_ms = busy_timeout_ms,
                         .stmt_cache_size = stmt_cache_size};
    return o;
}

#endif
