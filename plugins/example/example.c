/*
 * example: the hook plugin to copy when you write your own.
 *
 * What it does (small, but real):
 *   - authenticate: when `allow` lists addresses, a request to /db/{id}/... from any other
 *     remote address is refused with 403 FORBIDDEN. A request from a listed address is
 *     passed on (GS_DECLINED), so a later hook in the chain, such as auth_token, still
 *     decides who the caller is.
 *   - before_query: a statement containing one of the `deny_words` as a whole word
 *     (case-insensitive, outside '...' string literals) is refused with 403 HOOK_DENIED.
 *     This shows the hook point; it is no SQL firewall (use SQLite's authorizer for that).
 *   - before_connect: a database whose id is in `deny_open` is never opened (403 FORBIDDEN).
 *   - after_query, database_open, database_close (ABI 1.2): with `log_queries: true`, one
 *     info line per finished operation (database, read/write, ok/failed, duration; never
 *     the SQL or its parameters) and one per database opened or closed.
 *
 * Promise: the plugin reads its immutable instance only, so both callbacks run
 * concurrently on any core thread without a lock.
 * Ownership: create() copies what it keeps from the config struct (the struct may be freed
 * after create returns); memory comes from host->alloc and goes back through host->free.
 * Threads: create/destroy run on the core's main thread; authenticate and before_query run
 * on any core thread (often a transport's I/O thread) and must never block.
 *
 * Rules every plugin follows (see abi.h):
 *   - include only <gatestream/...> headers and call the core only through the gs_host table;
 *   - export exactly one symbol, gs_plugin_entry (GS_PLUGIN_DEFINE below); build with
 *     -fvisibility=hidden so everything else stays private;
 *   - start every struct you hand the core with its size (struct_size).
 */
#include <gatestream/hook.h>

#include <stddef.h>
#include <string.h>
#include <strings.h>

/*
 * 1. The config struct. The core parses the YAML `config:` map of this plugin's entry,
 * validates it against the key table below, and fills one of these for create().
 */
typedef struct example_config {
    gs_config_strings allow;      /**< remote addresses allowed; empty = everyone */
    gs_config_strings deny_words; /**< words refused in SQL; empty = none */
    gs_config_strings deny_open;  /**< database ids never opened; empty = none */
    int log_queries;              /**< log finished operations and database open/close */
} example_config;

/*
 * 2. The key table: name, type, default, required, offset into the struct, help. Unknown
 * YAML keys are refused by the core with file:line, and `gatestream --describe-plugin
 * example` prints this table, so the help text is the plugin's reference documentation.
 */
static const gs_config_key example_keys[] = {
    {.name = "allow",
     .type = GS_CFG_STRING_LIST,
     .offset = offsetof(example_config, allow),
     .help = "remote IP addresses that may reach /db routes, e.g. [127.0.0.1, ::1]; "
             "empty = any"},
    {.name = "deny_words",
     .type = GS_CFG_STRING_LIST,
     .offset = offsetof(example_config, deny_words),
     .help = "SQL words refused as whole words, case-insensitive, e.g. [drop, attach]"},
    {.name = "deny_open",
     .type = GS_CFG_STRING_LIST,
     .offset = offsetof(example_config, deny_open),
     .help = "database ids that are never opened (configured or tenant), e.g. [archive]"},
    {.name = "log_queries",
     .type = GS_CFG_BOOL,
     .default_value = "false",
     .offset = offsetof(example_config, log_queries),
     .help = "log one line per finished operation (duration, never SQL) and per database "
             "open/close"},
};

/* 3. The instance: what create() builds from one YAML entry. One .so may back several. */
typedef struct example_instance {
    const gs_host *host; /* kept for alloc/free/log/error_set */
    char **allow;
    size_t allow_count;
    char **deny_words;
    size_t deny_count;
    char **deny_open;
    size_t deny_open_count;
    int log_queries;
} example_instance;

/* host->error_set returns nothing; this macro fills err and yields GS_ERROR. */
#define EXAMPLE_FAIL(host, err, ...) ((host)->error_set((err), __VA_ARGS__), GS_ERROR)

static void example_free_list(const gs_host *host, char **list, size_t count)
{
    for (size_t i = 0; i < count; i++)
        host->free(list[i]);
    host->free(list);
}

static void example_destroy(void *instance)
{
    example_instance *ex = instance;
    if (!ex)
        return;
    example_free_list(ex->host, ex->allow, ex->allow_count);
    example_free_list(ex->host, ex->deny_words, ex->deny_count);
    example_free_list(ex->host, ex->deny_open, ex->deny_open_count);
    ex->host->free(ex);
}

/* Copy a string list into host memory. *count tracks what is filled, for cleanup. */
static gs_status example_copy_list(const gs_host *host, const gs_config_strings *in, char ***out,
                                   size_t *count)
{
    *out = NULL;
    *count = 0;
    if (in->count == 0)
        return GS_OK;
    *out = host->alloc(in->count * sizeof **out);
    if (!*out)
        return GS_ERROR;
    for (size_t i = 0; i < in->count; i++) {
        size_t n = strlen(in->items[i]);
        (*out)[i] = host->alloc(n + 1);
        if (!(*out)[i])
            return GS_ERROR;
        memcpy((*out)[i], in->items[i], n + 1);
        *count = i + 1;
    }
    return GS_OK;
}

/* A deny word must be a plain word, or it could never match a whole word. */
static int example_is_word_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/*
 * 4. create: validate the filled config, copy what we keep, hand back the instance. On
 * failure fill err (code INVALID_CONFIG, a message naming the key) and leave nothing behind.
 */
static gs_status example_create(const gs_host *host, const void *config, void **instance,
                                gs_error *err)
{
    const example_config *cfg = config;
    *instance = NULL;

    for (size_t i = 0; i < cfg->allow.count; i++)
        if (!cfg->allow.items[i] || !*cfg->allow.items[i])
            return EXAMPLE_FAIL(host, err, 0, "INVALID_CONFIG",
                                "allow[%zu] is empty; list IP addresses such as "
                                "127.0.0.1",
                                i);
    for (size_t i = 0; i < cfg->deny_words.count; i++) {
        const char *w = cfg->deny_words.items[i];
        if (!w || !*w)
            return EXAMPLE_FAIL(host, err, 0, "INVALID_CONFIG", "deny_words[%zu] is empty", i);
        for (const char *p = w; *p; p++)
            if (!example_is_word_char(*p))
                return EXAMPLE_FAIL(host, err, 0, "INVALID_CONFIG",
                                    "deny_words[%zu] '%s' is not one word (letters, "
                                    "digits, _)",
                                    i, w);
    }
    for (size_t i = 0; i < cfg->deny_open.count; i++)
        if (!cfg->deny_open.items[i] || !*cfg->deny_open.items[i])
            return EXAMPLE_FAIL(host, err, 0, "INVALID_CONFIG", "deny_open[%zu] is empty", i);

    example_instance *ex = host->alloc(sizeof *ex);
    if (!ex)
        return EXAMPLE_FAIL(host, err, 500, "INTERNAL_ERROR", "out of memory");
    memset(ex, 0, sizeof *ex);
    ex->host = host;
    ex->log_queries = cfg->log_queries;
    if (example_copy_list(host, &cfg->allow, &ex->allow, &ex->allow_count) != GS_OK ||
        example_copy_list(host, &cfg->deny_words, &ex->deny_words, &ex->deny_count) != GS_OK ||
        example_copy_list(host, &cfg->deny_open, &ex->deny_open, &ex->deny_open_count) != GS_OK) {
        example_destroy(ex);
        return EXAMPLE_FAIL(host, err, 500, "INTERNAL_ERROR", "out of memory");
    }
    host->log(host, GS_LOG_INFO, "example",
              "%zu allowed address(es), %zu denied word(s), %zu denied database(s)%s",
              ex->allow_count, ex->deny_count, ex->deny_open_count,
              ex->log_queries ? ", logging queries" : "");
    *instance = ex;
    return GS_OK;
}

/*
 * The address part of "127.0.0.1:53122" or "[::1]:53122" into out; a value without a port
 * is taken whole. Returns 0, or -1 when it does not fit.
 */
static int example_remote_ip(const char *remote, char *out, size_t cap)
{
    const char *start = remote, *end;
    if (*remote == '[') {
        start = remote + 1;
        end = strchr(start, ']');
        if (!end)
            end = start + strlen(start);
    } else {
        end = strchr(remote, ':');
        /* A second ':' means a bare IPv6 address without brackets or port. */
        if (!end || strchr(end + 1, ':'))
            end = remote + strlen(remote);
    }
    size_t n = (size_t)(end - start);
    if (n + 1 > cap)
        return -1;
    memcpy(out, start, n);
    out[n] = '\0';
    return 0;
}

/*
 * 5. authenticate: runs before every /db/{id} route. Three answers:
 *    GS_OK + identity (host->alloc'd JSON) = "I know who this is" (we never do that here);
 *    GS_ERROR with err->status             = refuse with that status, code and message;
 *    GS_DECLINED                           = no opinion; the next hook decides.
 */
static gs_status example_authenticate(void *instance, const gs_auth_context *ctx,
                                      char **identity_json, gs_error *err)
{
    const example_instance *ex = instance;
    *identity_json = NULL;
    if (ex->allow_count == 0)
        return GS_DECLINED;
    char ip[64];
    if (ctx->remote_address && example_remote_ip(ctx->remote_address, ip, sizeof ip) == 0)
        for (size_t i = 0; i < ex->allow_count; i++)
            if (strcasecmp(ex->allow[i], ip) == 0)
                return GS_DECLINED;
    return EXAMPLE_FAIL(ex->host, err, 403, "FORBIDDEN",
                        "address %s is not in this server's allow list; ask the operator to "
                        "add it to the example hook's allow",
                        ctx->remote_address ? ctx->remote_address : "(unknown)");
}

/* The deny word found in sql as a whole word outside '...' literals, or NULL. */
static const char *example_find_denied(const example_instance *ex, const char *sql)
{
    const char *p = sql;
    while (*p) {
        if (*p == '\'') { /* skip a string literal; '' inside it is an escaped quote */
            p++;
            while (*p && !(*p == '\'' && p[1] != '\''))
                p += (*p == '\'') ? 2 : 1;
            if (*p)
                p++;
            continue;
        }
        if (!example_is_word_char(*p)) {
            p++;
            continue;
        }
        const char *w = p;
        while (example_is_word_char(*p))
            p++;
        size_t n = (size_t)(p - w);
        for (size_t i = 0; i < ex->deny_count; i++)
            if (strlen(ex->deny_words[i]) == n && strncasecmp(ex->deny_words[i], w, n) == 0)
                return ex->deny_words[i];
    }
    return NULL;
}

/*
 * 6. before_query: runs before each statement. GS_ERROR denies it (the client gets the
 * status and code we set); GS_OK or GS_DECLINED lets it run. ctx->sql is valid for the call
 * only: copy it if you keep it (an audit hook would hand a copy to host->post).
 */
static gs_status example_before_query(void *instance, const gs_query_context *ctx, gs_error *err)
{
    const example_instance *ex = instance;
    if (ex->deny_count == 0 || !ctx->sql)
        return GS_DECLINED;
    const char *word = example_find_denied(ex, ctx->sql);
    if (!word)
        return GS_OK;
    return EXAMPLE_FAIL(ex->host, err, 403, "HOOK_DENIED",
                        "statements using '%s' are refused on database '%s' by the example "
                        "hook's deny_words",
                        word, ctx->database_id ? ctx->database_id : "?");
}

/*
 * after_query (ABI 1.2): runs on a database thread once an operation answered; it only
 * observes. Logging is quick; anything slow (shipping to an audit store) goes to host->post.
 * Never log ctx->sql or ctx->params_json: they may hold personal data.
 */
static void example_after_query(void *instance, const gs_query_context *ctx, double duration_ms,
                                int failed)
{
    const example_instance *ex = instance;
    if (!ex->log_queries)
        return;
    ex->host->log(ex->host, GS_LOG_INFO, "example",
                  "after_query database=%s kind=%s result=%s duration_ms=%.3f",
                  ctx->database_id ? ctx->database_id : "?", ctx->is_write ? "write" : "read",
                  failed ? "failed" : "ok", duration_ms);
}

/* before_connect (ABI 1.2): GS_ERROR keeps a database from opening at all. */
static gs_status example_before_connect(void *instance, const char *database_id, const char *path,
                                        gs_error *err)
{
    const example_instance *ex = instance;
    (void)path;
    for (size_t i = 0; i < ex->deny_open_count; i++)
        if (strcmp(ex->deny_open[i], database_id) == 0)
            return EXAMPLE_FAIL(ex->host, err, 403, "FORBIDDEN",
                                "database '%s' may not be opened (the example hook's "
                                "deny_open lists it)",
                                database_id);
    return GS_OK;
}

/* database_open / database_close (ABI 1.2): notifications only. */
static void example_database_open(void *instance, const char *database_id, const char *path)
{
    const example_instance *ex = instance;
    (void)path;
    if (ex->log_queries)
        ex->host->log(ex->host, GS_LOG_INFO, "example", "database_open database=%s", database_id);
}

static void example_database_close(void *instance, const char *database_id, const char *path)
{
    const example_instance *ex = instance;
    (void)path;
    if (ex->log_queries)
        ex->host->log(ex->host, GS_LOG_INFO, "example", "database_close database=%s", database_id);
}

/* 7. The vtable of a hook (hook.h): create and destroy are required, the rest optional. */
static const gs_hook_vtable example_vtable = {
    .struct_size = sizeof(gs_hook_vtable),
    .create = example_create,
    .destroy = example_destroy,
    .authenticate = example_authenticate,
    .before_query = example_before_query,
    .after_query = example_after_query,
    .before_connect = example_before_connect,
    .database_open = example_database_open,
    .database_close = example_database_close,
};

/* 8. The descriptor: what the loader checks (ABI version, build signature, kind, vtable). */
static const gs_plugin_descriptor example_descriptor = {
    .struct_size = sizeof(gs_plugin_descriptor),
    .abi_major = GS_ABI_MAJOR,
    .abi_minor = GS_ABI_MINOR,
    .kind = GS_KIND_HOOK,
    .name = "example",
    .version = "1.0.0",
    .build_signature = GS_BUILD_SIGNATURE,
    .vtable = &example_vtable,
    .config_keys = example_keys,
    .config_key_count = sizeof example_keys / sizeof example_keys[0],
    .config_key_size = sizeof(gs_config_key),
    .config_struct_size = sizeof(example_config),
    .description = "example hook: allow-list remote addresses, deny SQL words and database "
                   "opens, log operations",
};

/* 9. The one exported symbol: gs_plugin_entry returns the descriptor for our ABI major. */
GS_PLUGIN_DEFINE(example_descriptor)
