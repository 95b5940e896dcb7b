/*
 * The core's allocator. Every core and plugin allocation goes through it, so tests can
 * inject failures (gs_alloc_fail_after). Thread-safe. gs_malloc(0) returns a valid pointer.
 */
#ifndef GS_BASE_ALLOC_H
#define GS_BASE_ALLOC_H

#include <stddef.h>

void *gs_malloc(size_t size);
void *gs_calloc(size_t n, size_t size);
void *gs_realloc(void *ptr, size_t size);
void gs_free(void *ptr);
char *gs_strdup(const char *s);
char *gs_strndup(const char *s, size_t n);

/** Tests: make the n-th allocation from now fail (and every later one when sticky);
 * n < 0 turns injection off. */
void gs_alloc_fail_after(long n, int sticky);

#endif
