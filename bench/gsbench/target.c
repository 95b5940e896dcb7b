/* The target table and the shared cancellation error: see target.h. */
#include "target.h"

#include "base/error.h"

#include <string.h>

const gs_bench_target_vt *gs_bench_target_find(const char *name)
{
    static const gs_bench_target_vt *const all[] = {
        &gs_bench_target_sqlite, &gs_bench_target_pg,      &gs_bench_target_null,
#ifdef GS_BENCH_HAVE_CLIENT
        &gs_bench_target_gs_ws,  &gs_bench_target_gs_http,
#endif
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(all[i]->name, name) == 0)
            return all[i];
    return NULL;
}

void gs_bench_cancelled(gs_error *err)
{
    gs_error_init(err);
    gs_error_set(err, 0, "CANCELLED",
                 "the run ended before this request was started (counted as a timeout)");
}
