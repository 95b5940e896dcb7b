/*
 * auth_token: a hook plugin that authenticates requests by bearer token.
 *
 * Promise: every token is configured with the identity name it stands for and the databases
 * it may reach. authenticate() refuses a request without a well-formed credential header
 * (401 UNAUTHORIZED), with an unknown token (401 UNAUTHORIZED), or with a known token for a
 * database it does not grant (403 FORBIDDEN); otherwise it answers GS_OK with the identity
 * {"name": ..., <claims>} allocated with host->alloc (the core frees it).
 *
 * Secrets: a token value never appears in a log line or an error message; configuration
 * errors name the entry by its index (tokens[2]) and its identity name. Tokens are compared
 * in time that depends on the presented credential's length only, and every configured
 * token is compared on every request.
 *
 * Ownership: create() copies everything it keeps (the config struct may die after create),
 * reads token_env variables once, and renders each identity once, so authenticate() only
 * reads immutable instance data.
 *
 * Threads: create/destroy run on the core's main thread. authenticate runs on any core
 * thread, concurrently; it takes no lock, never blocks and allocates only the identity it
 * returns.
 */
#include <gatestream/hook.h>

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define AT_COMPONENT "auth_token"

/* host->error_set fills err and returns nothing; this also yields GS_ERROR. */
#define AT_FAIL(host, err, ...) ((host)->error_set((err), __VA_ARGS__), GS_ERROR)

/* ---- configuration: the struct the core fills from YAML, and its key table ---- */

/** One entry of `tokens`. */
typedef struct at_entry_config {
    const char *token;           /**< the token itself, or NULL */
    const char *token_env;       /**< name of an environment variable holding it, or NULL */
    const char *name;            /**< identity name */
    gs_config_strings databases; /**< database ids, or "*" */
    const char *claims;          /**< JSON object text merged into the identity, or NULL */
} at_entry_config;

typedef struct at_config {
    gs_config_list tokens; /**< at_entry_config items */
    const char *header;    /**< request header carrying the credential */
    const char *scheme;    /**< auth scheme before the token; "" = the header is the token */
} at_config;

static const gs_config_key at_entry_keys[] = {
    {.name = "token",
     .type = GS_CFG_STRING,
     .offset = offsetof(at_entry_config, token),
     .help = "the token; exactly one of token and token_env (prefer token_env or ${VAR})"},
    {.name = "token_env",
     .type = GS_CFG_STRING,
     .offset = offsetof(at_entry_config, token_env),
     .help = "name of an environment variable holding the token, read at start-up"},
    {.name = "name",
     .type = GS_CFG_STRING,
     .required = 1,
     .offset = offsetof(at_entry_config, name),
     .help = "identity name of requests bearing this token"},
    {.name = "databases",
     .type = GS_CFG_STRING_LIST,
     .required = 1,
     .offset = offsetof(at_entry_config, databases),
     .help = "database ids this token may reach, or \"*\" for every database"},
    {.name = "claims",
     .type = GS_CFG_JSON,
     .offset = offsetof(at_entry_config, claims),
     .help = "JSON object merged into the identity (fields for operations' from_identity)"},
};

static const gs_config_key at_keys[] = {
    {.name = "tokens",
     .type = GS_CFG_LIST,
     .required = 1,
     .offset = offsetof(at_config, tokens),
     .help = "accepted tokens, each with name, databases and optional claims",
     .children = at_entry_keys,
     .child_count = sizeof at_entry_keys / sizeof at_entry_keys[0],
     .child_struct_size = sizeof(at_entry_config)},
    {.name = "header",
     .type = GS_CFG_STRING,
     .default_value = "authorization",
     .offset = offsetof(at_config, header),
     .help = "request header carrying the credential (case-insensitive)"},
    {.name = "scheme",
     .type = GS_CFG_STRING,
     .default_value = "Bearer",
     .offset = offsetof(at_config, scheme),
     .help = "scheme word before the token (case-insensitive); \"\" = the whole value"},
};

/* ---- instance ---- */

typedef struct at_token {
    char *secret;
    size_t secret_len;
    char *name;
    char *identity; /**< rendered identity JSON */
    size_t identity_len;
    char **databases;
    size_t database_count;
    int all_databases; /**< "*" was listed */
} at_token;

typedef struct at_instance {
    const gs_host *host;
    char *header;
    char *header_display; /**< header name as people write it, for messages */
    char *scheme;
    size_t scheme_len;
    at_token *tokens;
    size_t token_count;
} at_instance;

/* Fill err without the host (used only when the host table is too old to have error_set). */
static gs_status at_fail_raw(gs_error *err, int status, const char *code, const char *msg)
{
    err->status = status;
    snprintf(err->code, sizeof err->code, "%s", code);
    snprintf(err->message, sizeof err->message, "%s", msg);
    err->details[0] = '\0';
    return GS_ERROR;
}

static char *at_strndup(const gs_host *host, const char *s, size_t n)
{
    char *p = host->alloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static char *at_strdup(const gs_host *host, const char *s)
{
    return at_strndup(host, s, strlen(s));
}

static void at_destroy(void *instance)
{
    at_instance *at = instance;
    if (!at)
        return;
    const gs_host *host = at->host;
    for (size_t i = 0; i < at->token_count; i++) {
        at_token *t = &at->tokens[i];
        if (t->secret) {
            /* Do not leave the secret in freed memory. */
            memset(t->secret, 0, t->secret_len);
            __asm__ __volatile__("" : : "r"(t->secret) : "memory");
        }
        host->free(t->secret);
        host->free(t->name);
        host->free(t->identity);
        for (size_t d = 0; d < t->database_count; d++)
            host->free(t->databases[d]);
        host->free(t->databases);
    }
    host->free(at->tokens);
    host->free(at->header);
    host->free(at->header_display);
    host->free(at->scheme);
    host->free(at);
}

/* A token must be sendable in a header after the scheme: printable ASCII, no spaces. */
static int at_token_is_sendable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f)
            return 0;
    }
    return 1;
}

/* A header field name (RFC 9110 token characters). */
static int at_header_name_ok(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", c))
            return 0;
    }
    return 1;
}

/* "x-api-key" -> "X-Api-Key", for messages a person reads. */
static void at_capitalize_header(char *s)
{
    int start = 1;
    for (; *s; s++) {
        if (start && *s >= 'a' && *s <= 'z')
            *s = (char)(*s - 'a' + 'A');
        start = *s == '-';
    }
}

/*
 * Render {"name": name, ...claims} into host memory. claims is NULL or JSON object text that
 * must not set "name". jansson is used only here, at start-up; the rendered bytes are dumped
 * into a host->alloc buffer so no jansson-allocated memory leaves this function.
 */
static gs_status at_render_identity(const gs_host *host, size_t index, const char *name,
                                    const char *claims, at_token *t, gs_error *err)
{
    json_t *obj = json_object();
    json_t *jname = json_string(name);
    gs_status st = GS_ERROR;
    if (!obj || !jname) {
        if (!jname && obj)
            host->error_set(err, 0, "INVALID_CONFIG", "tokens[%zu]: name '%s' is not valid UTF-8",
                            index, name);
        else
            host->error_set(err, 500, "INTERNAL_ERROR", "out of memory");
        json_decref(jname);
        goto done;
    }
    if (json_object_set_new(obj, "name", jname) != 0) {
        host->error_set(err, 500, "INTERNAL_ERROR", "out of memory");
        goto done;
    }
    if (claims) {
        json_error_t jerr;
        json_t *c = json_loads(claims, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
        if (!c) {
            host->error_set(err, 0, "INVALID_CONFIG",
                            "tokens[%zu] ('%s'): claims is not valid JSON (%s at "
                            "line %d column %d); write claims as a YAML map",
                            index, name, jerr.text, jerr.line, jerr.column);
            goto done;
        }
        if (!json_is_object(c)) {
            host->error_set(err, 0, "INVALID_CONFIG",
                            "tokens[%zu] ('%s'): claims must be a map of identity "
                            "fields, e.g. claims: { tenant: 7 }",
                            index, name);
            json_decref(c);
            goto done;
        }
        if (json_object_get(c, "name")) {
            host->error_set(err, 0, "INVALID_CONFIG",
                            "tokens[%zu] ('%s'): claims must not set 'name'; the "
                            "entry's name is the identity name",
                            index, name);
            json_decref(c);
            goto done;
        }
        int rc = json_object_update(obj, c);
        json_decref(c);
        if (rc != 0) {
            host->error_set(err, 500, "INTERNAL_ERROR", "out of memory");
            goto done;
        }
    }
    size_t need = json_dumpb(obj, NULL, 0, JSON_COMPACT);
    if (need == 0) {
        host->error_set(err, 500, "INTERNAL_ERROR",
                        "tokens[%zu] ('%s'): cannot render the identity", index, name);
        goto done;
    }
    t->identity = host->alloc(need + 1);
    if (!t->identity) {
        host->error_set(err, 500, "INTERNAL_ERROR", "out of memory");
        goto done;
    }
    json_dumpb(obj, t->identity, need, JSON_COMPACT);
    t->identity[need] = '\0';
    t->identity_len = need;
    st = GS_OK;
done:
    json_decref(obj);
    return st;
}

/* Validate entry `index` and copy it into t. Never puts the token value into a message. */
static gs_status at_load_entry(const gs_host *host, size_t index, const at_entry_config *e,
                               at_token *t, gs_error *err)
{
    const char *label = e->name ? e->name : "";
    if (!e->name || !*e->name)
        return AT_FAIL(host, err, 0, "INVALID_CONFIG",
                       "tokens[%zu]: name is required and must not be "
                       "empty; it becomes the identity name",
                       index);
    if ((e->token != NULL) == (e->token_env != NULL))
        return AT_FAIL(host, err, 0, "INVALID_CONFIG",
                       "tokens[%zu] ('%s'): set exactly one of token and "
                       "token_env (%s)",
                       index, label, e->token ? "both are set" : "neither is set");
    const char *secret = e->token;
    if (e->token_env) {
        if (!*e->token_env)
            return AT_FAIL(host, err, 0, "INVALID_CONFIG",
                           "tokens[%zu] ('%s'): token_env is empty; give "
                           "the name of an environment variable",
                           index, label);
        secret = getenv(e->token_env);
        if (!secret)
            return AT_FAIL(host, err, 0, "INVALID_CONFIG",
                           "tokens[%zu] ('%s'): environment variable '%s' "
                           "(token_env) is not set; export it before starting",
                           index, label, e->token_env);
    }
    size_t len = strlen(secret);
    if (len == 0)
        return AT_FAIL(host, err, 0, "INVALID_CONFIG",
                       "tokens[%zu] ('%s'): the token is empty%s%s%s", index, label,
                       e->token_env ? " (environment variable '" : "",
                       e->token_env ? e->token_env : "", e->token_env ? "')" : "");
    if (!at_token_is_sendable(secret, len))
        return AT_FAIL(host, err, 0, "INVALID_CONFIG",
                       "tokens[%zu] ('%s'): the token contains spaces or "
                       "non-printable characters, so no client can send it in a header",
                       index, label);
    if (e->databases.count == 0)
        return AT_FAIL(host, err, 0, "INVALID_CONFIG",
                       "tokens[%zu] ('%s'): databases is empty; list the "
                       "database ids this token may reach, or \"*\"",
                       index, label);
    for (size_t d = 0; d < e->databases.count; d++) {
        const char *id = e->databases.items[d];
        if (!id || !*id)
            return AT_FAIL(host, err, 0, "INVALID_CONFIG",
                           "tokens[%zu] ('%s'): databases[%zu] is empty", index, label, d);
    }

    t->secret = at_strndup(host, secret, len);
    t->secret_len = len;
    t->name = at_strdup(host, e->name);
    t->databases = host->alloc(e->databases.count * sizeof *t->databases);
    if (!t->secret || !t->name || !t->databases)
        return AT_FAIL(host, err, 500, "INTERNAL_ERROR", "out of memory");
    for (size_t d = 0; d < e->databases.count; d++) {
        const char *id = e->databases.items[d];
        if (strcmp(id, "*") == 0)
            t->all_databases = 1;
        t->databases[d] = at_strdup(host, id);
        if (!t->databases[d])
            return AT_FAIL(host, err, 500, "INTERNAL_ERROR", "out of memory");
        t->database_count = d + 1;
    }
    return at_render_identity(host, index, e->name, e->claims, t, err);
}

static gs_status at_create(const gs_host *host, const void *config, void **instance, gs_error *err)
{
    *instance = NULL;
    if (!host || host->abi_major != GS_ABI_MAJOR ||
        !GS_HAS_MEMBER(gs_host, error_set, host->struct_size))
        return at_fail_raw(err, 500, "INTERNAL_ERROR",
                           "the host table is older than ABI 1.0; rebuild the host");
    const at_config *cfg = config;
    if (!cfg)
        return AT_FAIL(host, err, 0, "INVALID_CONFIG", "no configuration given");
    if (cfg->tokens.count == 0 || !cfg->tokens.items)
        return AT_FAIL(host, err, 0, "INVALID_CONFIG",
                       "tokens is empty; configure at least one token, or "
                       "remove the auth_token hook to serve anonymous requests");
    const char *header = cfg->header ? cfg->header : "authorization";
    const char *scheme = cfg->scheme ? cfg->scheme : "Bearer";
    if (!at_header_name_ok(header))
        return AT_FAIL(host, err, 0, "INVALID_CONFIG", "header '%s' is not a valid header name",
                       header);
    if (*scheme && !at_token_is_sendable(scheme, strlen(scheme)))
        return AT_FAIL(host, err, 0, "INVALID_CONFIG",
                       "scheme '%s' must be one word without spaces, or \"\"", scheme);

    at_instance *at = host->alloc(sizeof *at);
    if (!at)
        return AT_FAIL(host, err, 500, "INTERNAL_ERROR", "out of memory");
    memset(at, 0, sizeof *at);
    at->host = host;
    at->header = at_strdup(host, header);
    at->header_display = at_strdup(host, header);
    at->scheme = at_strdup(host, scheme);
    at->tokens = host->alloc(cfg->tokens.count * sizeof *at->tokens);
    if (!at->header || !at->header_display || !at->scheme || !at->tokens) {
        at_destroy(at);
        return AT_FAIL(host, err, 500, "INTERNAL_ERROR", "out of memory");
    }
    memset(at->tokens, 0, cfg->tokens.count * sizeof *at->tokens);
    at_capitalize_header(at->header_display);
    at->scheme_len = strlen(scheme);

    const at_entry_config *entries = cfg->tokens.items;
    for (size_t i = 0; i < cfg->tokens.count; i++) {
        at->token_count = i + 1; /* so destroy frees a half-filled entry */
        if (at_load_entry(host, i, &entries[i], &at->tokens[i], err) != GS_OK) {
            at_destroy(at);
            return GS_ERROR;
        }
        for (size_t j = 0; j < i; j++) {
            const at_token *a = &at->tokens[j], *b = &at->tokens[i];
            if (a->secret_len == b->secret_len &&
                memcmp(a->secret, b->secret, a->secret_len) == 0) {
                host->error_set(err, 0, "INVALID_CONFIG",
                                "tokens[%zu] ('%s') has the same token as "
                                "tokens[%zu] ('%s'); each token must stand for one identity",
                                i, b->name, j, a->name);
                at_destroy(at);
                return GS_ERROR;
            }
        }
    }
    host->log(host, GS_LOG_INFO, AT_COMPONENT, "%zu token(s) accepted in header %s%s%s",
              at->token_count, at->header_display, *at->scheme ? " with scheme " : "", at->scheme);
    *instance = at;
    return GS_OK;
}

/* The first header named `name` (case-insensitive), or NULL. */
static const char *at_find_header(const gs_auth_context *ctx, const char *name)
{
    for (size_t i = 0; i < ctx->header_count; i++)
        if (ctx->headers[i].name && strcasecmp(ctx->headers[i].name, name) == 0)
            return ctx->headers[i].value ? ctx->headers[i].value : "";
    return NULL;
}

static int at_is_space(char c)
{
    return c == ' ' || c == '\t';
}

/*
 * Split "<scheme> <token>" (scheme case-insensitive, one or more spaces, surrounding
 * whitespace ignored). With an empty scheme the whole trimmed value is the token.
 * Returns 0 and sets tok/len, or -1 when the value carries no credential of our scheme.
 */
static int at_parse_credential(const at_instance *at, const char *value, const char **tok,
                               size_t *len)
{
    const char *p = value;
    while (at_is_space(*p))
        p++;
    if (at->scheme_len) {
        if (strncasecmp(p, at->scheme, at->scheme_len) != 0 || !at_is_space(p[at->scheme_len]))
            return -1;
        p += at->scheme_len;
        while (at_is_space(*p))
            p++;
    }
    const char *end = p + strlen(p);
    while (end > p && at_is_space(end[-1]))
        end--;
    if (end == p)
        return -1;
    *tok = p;
    *len = (size_t)(end - p);
    return 0;
}

/*
 * 1 when the presented bytes equal the secret. The loop runs over the presented length
 * whatever the secret is, and never exits early, so timing does not reveal how many leading
 * bytes matched (secret_len > 0 is guaranteed by create).
 */
static int at_ct_equal(const char *presented, size_t plen, const char *secret, size_t slen)
{
    unsigned diff = (unsigned)((plen ^ slen) != 0);
    size_t j = 0;
    for (size_t i = 0; i < plen; i++) {
        diff |= (unsigned char)presented[i] ^ (unsigned char)secret[j];
        j++;
        j = j == slen ? 0 : j;
    }
    return diff == 0;
}

static int at_may_reach(const at_token *t, const char *database_id)
{
    if (!database_id || t->all_databases)
        return 1;
    for (size_t d = 0; d < t->database_count; d++)
        if (strcmp(t->databases[d], database_id) == 0)
            return 1;
    return 0;
}

static gs_status at_authenticate(void *instance, const gs_auth_context *ctx, char **identity_json,
                                 gs_error *err)
{
    const at_instance *at = instance;
    const gs_host *host = at->host;
    *identity_json = NULL;

    const char *value = at_find_header(ctx, at->header);
    const char *tok = NULL;
    size_t tok_len = 0;
    if (!value || at_parse_credential(at, value, &tok, &tok_len) != 0) {
        if (at->scheme_len)
            return AT_FAIL(host, err, 401, "UNAUTHORIZED", "missing %s token: send %s: %s <token>",
                           at->scheme, at->header_display, at->scheme);
        return AT_FAIL(host, err, 401, "UNAUTHORIZED", "missing token: send %s: <token>",
                       at->header_display);
    }

    /* Compare against every token, keeping the match without branching on it. */
    const at_token *match = NULL;
    for (size_t i = 0; i < at->token_count; i++) {
        const at_token *t = &at->tokens[i];
        int eq = at_ct_equal(tok, tok_len, t->secret, t->secret_len);
        match = eq ? t : match;
    }
    if (!match) {
        host->log(host, GS_LOG_DEBUG, AT_COMPONENT, "refused %s %s from %s: unknown token",
                  ctx->method ? ctx->method : "?", ctx->path ? ctx->path : "?",
                  ctx->remote_address ? ctx->remote_address : "?");
        return AT_FAIL(host, err, 401, "UNAUTHORIZED",
                       "unknown token: check the token your client sends in %s",
                       at->header_display);
    }
    if (!at_may_reach(match, ctx->database_id))
        return AT_FAIL(host, err, 403, "FORBIDDEN",
                       "identity '%s' may not reach database '%s'; add it to this "
                       "token's databases to grant access",
                       match->name, ctx->database_id);

    char *identity = host->alloc(match->identity_len + 1);
    if (!identity)
        return AT_FAIL(host, err, 500, "HOOK_ERROR", "out of memory copying the identity");
    memcpy(identity, match->identity, match->identity_len + 1);
    *identity_json = identity;
    return GS_OK;
}

static const gs_hook_vtable at_vtable = {
    .struct_size = sizeof(gs_hook_vtable),
    .create = at_create,
    .destroy = at_destroy,
    .authenticate = at_authenticate,
    .before_query = NULL,
};

static const gs_plugin_descriptor at_descriptor = {
    .struct_size = sizeof(gs_plugin_descriptor),
    .abi_major = GS_ABI_MAJOR,
    .abi_minor = GS_ABI_MINOR,
    .kind = GS_KIND_HOOK,
    .name = "auth_token",
    .version = "1.0.0",
    .build_signature = GS_BUILD_SIGNATURE,
    .vtable = &at_vtable,
    .config_keys = at_keys,
    .config_key_count = sizeof at_keys / sizeof at_keys[0],
    .config_key_size = sizeof(gs_config_key),
    .config_struct_size = sizeof(at_config),
    .description = "authenticate requests by bearer token, each limited to listed databases",
};

GS_PLUGIN_DEFINE(at_descriptor)
