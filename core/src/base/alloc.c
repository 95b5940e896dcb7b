#include "alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Failure injection for tests: countdown < 0 means off. */
static _Atomic long fail_countdown = -1;
static _Atomic int fail_sticky = 0;

void gs_alloc_fail_after(long n, int sticky)
{
    atomic_store(&fail_sticky, sticky);
    atomic_store(&fail_countdown, n);
}

static int should_fail(void)
{
    long c = atomic_load(&fail_countdown);
    if (c < 0)
        return 0;
    if (c == 0) {
        if (!atomic_load(&fail_sticky))
            atomic_store(&fail_countdown, -1);
        return 1;
    }
    atomic_fetch_sub(&fail_countdown, 1);
    return 0;
}

void *gs_malloc(size_t size)
{
    if (should_fail())
        return NULL;
    return malloc(size ? size : 1);
}

void *gs_calloc(size_t n, size_t size)
{
    if (should_fail())
        return NULL;
    return calloc(n ? n : 1, size ? size : 1);
}

void *gs_realloc(void *ptr, size_t size)
{
    if (should_fail())
        return NULL;
    return realloc(ptr, size ? size : 1);
}

void gs_free(void *ptr)
{
    free(ptr);
}

char *gs_strndup(const char *s, size_t n)
{
    char *p = gs_malloc(n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *gs_strdup(const char *s)
{
    return s ? gs_strndup(s, strlen(s)) : NULL;
}
