/*
 * A test host for hook plugins: dlopen a plugin from $GS_PLUGIN_DIR exactly as the core
 * does (RTLD_NOW | RTLD_LOCAL), hand it a complete gs_host table, and fill its config
 * struct by hand through the plugin's own key table (names -> offsets), as the core's
 * config layer would.
 *
 * The host's allocator counts live blocks (a test checks that create failures and destroy
 * leave none) and can fail the n-th allocation from now (th_fail_after). Log lines are kept
 * so a test can check what a plugin logs (never a secret). Header-only: each test binary is
 * one translation unit. Thread-safe where the gs_host contract says so (alloc, free, log).
 */
#ifndef GS_TESTS_PLUGINS_HOOK_HOST_H
#define GS_TESTS_PLUGINS_HOOK_HOST_H

#include <gatestream/hook.h>

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- allocator with live count and failure injection ---- */

static long th_live;                /* blocks handed out and not yet freed */
static long th_fail_countdown = -1; /* fail when it reaches 0; -1 = never */

static inline void th_fail_after(long n)
{
    __atomic_store_n(&th_fail_countdown, n, __ATOMIC_SEQ_CST);
}

static long th_live_blocks(void)
{
    return __atomic_load_n(&th_live, __ATOMIC_SEQ_CST);
}

static inline void *th_alloc(size_t size)
{
    long c = __atomic_load_n(&th_fail_countdown, __ATOMIC_SEQ_CST);
    if (c >= 0) {
        if (__atomic_sub_fetch(&th_fail_countdown, 1, __ATOMIC_SEQ_CST) < 0)
            return NULL; /* sticky: every allocation after the n-th fails too */
    }
    void *p = malloc(size ? size : 1);
    if (p)
        __atomic_add_fetch(&th_live, 1, __ATOMIC_SEQ_CST);
    return p;
}

static inline void *th_realloc(void *ptr, size_t size)
{
    if (!ptr)
        return th_alloc(size);
    long c = __atomic_load_n(&th_fail_countdown, __ATOMIC_SEQ_CST);
    if (c >= 0 && __atomic_sub_fetch(&th_fail_countdown, 1, __ATOMIC_SEQ_CST) < 0)
        return NULL;
    return realloc(ptr, size ? size : 1);
}

static inline void th_free(void *ptr)
{
    if (!ptr)
        return;
    __atomic_sub_fetch(&th_live, 1, __ATOMIC_SEQ_CST);
    free(ptr);
}

/* ---- log capture ---- */

static pthread_mutex_t th_log_lock = PTHREAD_MUTEX_INITIALIZER;
static char th_log_text[16384];
static size_t th_log_len;

static inline void th_log(const gs_host *host, gs_log_level level, const char *component,
                          const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(line, sizeof line, "%d %s: ", (int)level, component);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&th_log_lock);
    size_t len = strlen(line);
    if (th_log_len + len + 2 < sizeof th_log_text) {
        memcpy(th_log_text + th_log_len, line, len);
        th_log_len += len;
        th_log_text[th_log_len++] = '\n';
        th_log_text[th_log_len] = '\0';
    }
    pthread_mutex_unlock(&th_log_lock);
}

/* ---- the rest of the table ---- */

static inline uint64_t th_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline const char *th_node_id(const gs_host *host)
{
    return "test-node";
}

/* This host runs no workers: GS_AGAIN is the contract's "shutting down" answer. */
static inline gs_status th_post(const gs_host *host, void (*fn)(void *arg), void *arg)
{
    return GS_AGAIN;
}

static inline const gs_server_settings *th_server_settings(const gs_host *host)
{
    return NULL; /* hooks are not client transports */
}

/* Hooks never submit requests; answer like a core that is shutting down. */
static inline gs_status th_api_submit(const gs_host *host, const gs_request *request)
{
    static const char body[] = "{\"error\":{\"code\":\"SHUTDOWN\",\"message\":\"test host\"}}";
    gs_response r = {.struct_size = sizeof r,
                     .status = 503,
                     .content_type = "application/json",
                     .body = body,
                     .body_len = sizeof body - 1};
    request->complete(request->user, &r);
    return GS_ERROR;
}

static inline void th_error_set(gs_error *err, int status, const char *code, const char *fmt, ...)
{
    err->struct_size = sizeof *err;
    err->status = status;
    snprintf(err->code, sizeof err->code, "%s", code);
    err->details[0] = '\0';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

static const gs_host th_host = {
    .struct_size = sizeof(gs_host),
    .abi_major = GS_ABI_MAJOR,
    .abi_minor = GS_ABI_MINOR,
    .core = NULL,
    .log = th_log,
    .alloc = th_alloc,
    .realloc = th_realloc,
    .free = th_free,
    .now_ms = th_now_ms,
    .node_id = th_node_id,
    .post = th_post,
    .server_settings = th_server_settings,
    .api_submit = th_api_submit,
    .error_set = th_error_set,
};

static inline gs_error th_error(void)
{
    gs_error e;
    memset(&e, 0, sizeof e);
    e.struct_size = sizeof e;
    return e;
}

/* ---- loading ---- */

typedef struct th_plugin {
    void *handle;
    const gs_plugin_descriptor *desc;
    const gs_hook_vtable *vt;
} th_plugin;

/* dlopen $GS_PLUGIN_DIR/<file> and check it is a 1.0 hook. Fails the test otherwise. */
static inline th_plugin th_load(const char *file)
{
    const char *dir = getenv("GS_PLUGIN_DIR");
    cr_assert(dir && *dir, "GS_PLUGIN_DIR must name the folder holding %s", file);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    th_plugin p;
    p.handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    cr_assert_not_null(p.handle, "dlopen %s: %s", path, dlerror());
    void *sym = dlsym(p.handle, GS_PLUGIN_ENTRY_SYMBOL);
    cr_assert_not_null(sym, "%s exports no gs_plugin_entry", path);
    gs_plugin_entry_fn entry;
    memcpy(&entry, &sym, sizeof entry);
    cr_assert_null(entry(GS_ABI_MAJOR + 1), "the entry must refuse another major");
    p.desc = entry(GS_ABI_MAJOR);
    cr_assert_not_null(p.desc);
    cr_assert_eq(p.desc->kind, GS_KIND_HOOK);
    cr_assert_eq(p.desc->abi_major, GS_ABI_MAJOR);
    cr_assert_leq(p.desc->abi_minor, GS_ABI_MINOR);
    cr_assert_str_eq(p.desc->build_signature, GS_BUILD_SIGNATURE);
    cr_assert_geq(p.desc->struct_size, sizeof(gs_plugin_descriptor));
    cr_assert_eq(p.desc->config_key_size, sizeof(gs_config_key));
    p.vt = p.desc->vtable;
    cr_assert_geq(p.vt->struct_size, sizeof(gs_hook_vtable));
    cr_assert_not_null(p.vt->create);
    cr_assert_not_null(p.vt->destroy);
    return p;
}

static inline void th_unload(th_plugin *p)
{
    if (p->handle)
        dlclose(p->handle);
    p->handle = NULL;
}

/* The end of every hook test: destroy the instance (if create made one), check the plugin
 * left no host allocation behind, and unload it. */
static inline void th_finish(th_plugin *p, void **instance)
{
    if (*instance)
        p->vt->destroy(*instance);
    *instance = NULL;
    cr_assert_eq(th_live_blocks(), 0, "%ld block(s) leaked", th_live_blocks());
    th_unload(p);
}

/* ---- filling config structs through a key table ---- */

static inline const gs_config_key *th_key(const gs_config_key *keys, size_t count, size_t stride,
                                          const char *name)
{
    for (size_t i = 0; i < count; i++) {
        const gs_config_key *k = (const gs_config_key *)((const char *)keys + i * stride);
        if (strcmp(k->name, name) == 0)
            return k;
    }
    cr_assert_fail("no config key '%s'", name);
    return NULL;
}

static inline void th_set_string(void *base, const gs_config_key *k, const char *value)
{
    cr_assert_eq(k->type, GS_CFG_STRING, "key %s is not a STRING", k->name);
    memcpy((char *)base + k->offset, &value, sizeof value);
}

static inline void th_set_json(void *base, const gs_config_key *k, const char *value)
{
    cr_assert_eq(k->type, GS_CFG_JSON, "key %s is not JSON", k->name);
    memcpy((char *)base + k->offset, &value, sizeof value);
}

static inline void th_set_strings(void *base, const gs_config_key *k, const char *const *items,
                                  size_t count)
{
    cr_assert_eq(k->type, GS_CFG_STRING_LIST, "key %s is not a STRING_LIST", k->name);
    gs_config_strings s = {.items = items, .count = count};
    memcpy((char *)base + k->offset, &s, sizeof s);
}

static inline void th_set_list(void *base, const gs_config_key *k, void *items, size_t count)
{
    cr_assert_eq(k->type, GS_CFG_LIST, "key %s is not a LIST", k->name);
    gs_config_list l = {.items = items, .count = count};
    memcpy((char *)base + k->offset, &l, sizeof l);
}

/* An auth context with one optional header. */
static inline gs_auth_context th_ctx(const gs_header *headers, size_t count,
                                     const char *database_id, const char *remote)
{
    gs_auth_context c = {.struct_size = sizeof c,
                         .method = "POST",
                         .path = "/db/x/query",
                         .database_id = database_id,
                         .headers = headers,
                         .header_count = count,
                         .remote_address = remote};
    return c;
}

#endif
