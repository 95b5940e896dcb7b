/*
 * The null target: answers every request at once, inside submit, touching no engine. It
 * measures the load generator's own ceiling (its headroom): a rate the null target cannot
 * hold is a rate at which no engine's figure would mean anything.
 *
 * Threads: everything runs on the scheduler thread.
 */
#include "target.h"

#include "base/alloc.h"
#include "base/error.h"

#include <stdio.h>

typedef struct nul {
    gs_bench_done_fn done;
    void *ctx;
} nul;

static gs_status nul_open(const gs_bench_target_cfg *cfg, void **self, gs_error *err)
{
    (void)cfg;
    nul *n = gs_calloc(1, sizeof *n);
    if (!n)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    *self = n;
    return GS_OK;
}

static gs_status nul_load(void *self, const gs_bench_workload *w, int64_t rows, uint64_t seed,
                          gs_error *err)
{
    (void)self, (void)w, (void)rows, (void)seed, (void)err;
    return GS_OK;
}

static gs_status nul_start(void *self, const gs_bench_workload *w, gs_bench_done_fn done, void *ctx,
                           gs_error *err)
{
    (void)w, (void)err;
    nul *n = self;
    n->done = done;
    n->ctx = ctx;
    return GS_OK;
}

static void nul_submit(void *self, gs_bench_op *op)
{
    nul *n = self;
    n->done(n->ctx, op, GS_OK, NULL);
}

static void nul_stop(void *self)
{
    nul *n = self;
    n->done = NULL;
}

static void nul_describe(void *self, char *buf, size_t size)
{
    (void)self;
    snprintf(buf, size, "no engine: every request answered at once (the generator's ceiling)");
}

static void nul_close(void *self)
{
    gs_free(self);
}

const gs_bench_target_vt gs_bench_target_null = {
    .name = "null",
    .open = nul_open,
    .load = nul_load,
    .start = nul_start,
    .submit = nul_submit,
    .stop = nul_stop,
    .describe = nul_describe,
    .close = nul_close,
};
