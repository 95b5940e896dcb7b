#include "host_standalone.h"

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"

#include <stdarg.h>
#include <string.h>
#include <time.h>

static void s_log(const gs_host *host, gs_log_level level, const char *component, const char *fmt,
                  ...)
{
    (void)host;
    va_list ap;
    va_start(ap, fmt);
    gs_logv(level, component, fmt, ap);
    va_end(ap);
}

static uint64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void s_error_set(gs_error *err, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gs_error_setv(err, status, code, fmt, ap);
    va_end(ap);
}

static const char *s_node_id(const gs_host *host)
{
    (void)host;
    return "";
}

void gs_host_init_standalone(gs_host *h)
{
    memset(h, 0, sizeof *h);
    h->struct_size = sizeof *h;
    h->abi_major = GS_ABI_MAJOR;
    h->abi_minor = GS_ABI_MINOR;
    h->log = s_log;
    h->alloc = gs_malloc;
    h->realloc = gs_realloc;
    h->free = gs_free;
    h->now_ms = s_now_ms;
    h->node_id = s_node_id;
    h->error_set = s_error_set;
}
