/*
 * A small pool of core worker threads behind host->post: a plugin with its own loop hands
 * work to the core here instead of running it on its I/O thread. FIFO; thread-safe.
 */
#ifndef GS_BASE_WORKPOOL_H
#define GS_BASE_WORKPOOL_H

#include <gatestream/abi.h>

typedef struct gs_workpool gs_workpool;

gs_workpool *gs_workpool_new(int threads, gs_error *err);
/** Queue fn(arg). GS_AGAIN once the pool is stopping. */
gs_status gs_workpool_post(gs_workpool *p, void (*fn)(void *), void *arg);
/** Run what is queued, then join the threads and free the pool. */
void gs_workpool_free(gs_workpool *p);

#endif
