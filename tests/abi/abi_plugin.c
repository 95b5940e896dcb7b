/*
 * Plugins built wrong on purpose, one shared object per case: tests/abi/CMakeLists.txt
 * compiles this file once per ABI_CASE_* definition. run_abi_tests.py loads each through
 * `gatestream --check-config` and `--config` and expects one refusal line and exit status 2;
 * ABI_CASE_GOOD is the control that must load.
 *
 * Everything here is compiled against today's headers; each case then lies in exactly one
 * place of its descriptor or vtable, the way a plugin built against other headers, for
 * another platform, or with a bug would.
 */
#include <gatestream/client_transport.h>
#include <gatestream/hook.h>

#include <stddef.h>
#include <string.h>

/* ---- a real hook: the control, and the base every hook case breaks ---- */

typedef struct abi_hook_config {
    const char *greeting;
} abi_hook_config;

typedef struct abi_hook {
    const gs_host *host;
} abi_hook;

/* The hook functions and vtable go unused only in the null-vtable case. */
#define ABI_MAYBE_UNUSED __attribute__((unused))

ABI_MAYBE_UNUSED static gs_status abi_hook_create(const gs_host *host, const void *config,
                                                  void **instance, gs_error *err)
{
    abi_hook *h = host->alloc(sizeof *h);
    if (!h) {
        host->error_set(err, 500, "INTERNAL_ERROR", "abi test hook: out of memory");
        return GS_ERROR;
    }
    h->host = host;
    const abi_hook_config *cfg = config;
    host->log(host, GS_LOG_DEBUG, "abi_test", "created (%s)",
              cfg && cfg->greeting ? cfg->greeting : "no greeting");
    *instance = h;
    return GS_OK;
}

ABI_MAYBE_UNUSED static void abi_hook_destroy(void *instance)
{
    abi_hook *h = instance;
    if (h)
        h->host->free(h);
}

ABI_MAYBE_UNUSED static gs_status abi_hook_authenticate(void *instance, const gs_auth_context *ctx,
                                                        char **identity_json, gs_error *err)
{
    *identity_json = NULL;
    return GS_DECLINED;
}

static const gs_config_key abi_hook_keys[] = {
    {.name = "greeting",
     .type = GS_CFG_STRING,
     .default_value = "hello",
     .offset = offsetof(abi_hook_config, greeting),
     .help = "a word logged at create, to give the table one key"},
};

#if defined(ABI_CASE_SHORT_VTABLE)
/* The size a plugin written against a one-member draft of the vtable would report. */
#define ABI_HOOK_VTABLE_SIZE 8
#else
#define ABI_HOOK_VTABLE_SIZE sizeof(gs_hook_vtable)
#endif

ABI_MAYBE_UNUSED static const gs_hook_vtable abi_hook_vtable = {
    .struct_size = ABI_HOOK_VTABLE_SIZE,
#if defined(ABI_CASE_MISSING_CREATE)
    .create = NULL, /* the required callback this case forgets */
#else
    .create = abi_hook_create,
#endif
    .destroy = abi_hook_destroy,
    .authenticate = abi_hook_authenticate,
};

/* ---- a client transport, loaded with `kind: hook` by the kind-mismatch case ---- */

#if defined(ABI_CASE_KIND_MISMATCH)
/* The loader must refuse this plugin before any of it runs; if create is ever reached, it
 * fails loudly instead of pretending to serve. */
static gs_status abi_ct_create(const gs_host *host, const void *config, void **instance,
                               gs_error *err)
{
    host->error_set(err, 500, "INTERNAL_ERROR",
                    "abi test transport: this plugin exists only to be refused by kind");
    return GS_ERROR;
}

static gs_status abi_ct_start(void *instance, gs_error *err)
{
    return GS_ERROR;
}

static void abi_ct_stop(void *instance)
{
}

static void abi_ct_destroy(void *instance)
{
}

static const gs_client_transport_vtable abi_ct_vtable = {
    .struct_size = sizeof(gs_client_transport_vtable),
    .create = abi_ct_create,
    .start = abi_ct_start,
    .stop = abi_ct_stop,
    .destroy = abi_ct_destroy,
};
#endif

/* ---- the descriptor, with the one lie of each case ---- */

#if defined(ABI_CASE_OLD_MAJOR)
#define ABI_MAJOR_FIELD 0 /* built against ABI 0.x headers */
#else
#define ABI_MAJOR_FIELD GS_ABI_MAJOR
#endif

#if defined(ABI_CASE_NEWER_MINOR)
#define ABI_MINOR_FIELD (GS_ABI_MINOR + 5) /* built against headers five minors ahead */
#else
#define ABI_MINOR_FIELD GS_ABI_MINOR
#endif

#if defined(ABI_CASE_BAD_SIGNATURE)
/* What a 32-bit build would carry. */
#define ABI_SIGNATURE_FIELD "gs-abi" GS_STR(GS_ABI_MAJOR) ";ptr4;long4;size_t4;le"
#else
#define ABI_SIGNATURE_FIELD GS_BUILD_SIGNATURE
#endif

#if defined(ABI_CASE_KIND_MISMATCH)
#define ABI_KIND_FIELD GS_KIND_CLIENT_TRANSPORT
#define ABI_VTABLE_FIELD (&abi_ct_vtable)
#elif defined(ABI_CASE_NULL_VTABLE)
#define ABI_KIND_FIELD GS_KIND_HOOK
#define ABI_VTABLE_FIELD NULL
#else
#define ABI_KIND_FIELD GS_KIND_HOOK
#define ABI_VTABLE_FIELD (&abi_hook_vtable)
#endif

#if defined(ABI_CASE_SHORT_DESCRIPTOR)
#define ABI_DESCRIPTOR_SIZE 8 /* a descriptor from a truncated draft */
#else
#define ABI_DESCRIPTOR_SIZE sizeof(gs_plugin_descriptor)
#endif

#if defined(ABI_CASE_SHORT_CONFIG_KEY)
#define ABI_CONFIG_KEY_SIZE (sizeof(gs_config_key) / 2) /* a key table of a smaller struct */
#else
#define ABI_CONFIG_KEY_SIZE sizeof(gs_config_key)
#endif

static const gs_plugin_descriptor abi_descriptor = {
    .struct_size = ABI_DESCRIPTOR_SIZE,
    .abi_major = ABI_MAJOR_FIELD,
    .abi_minor = ABI_MINOR_FIELD,
    .kind = ABI_KIND_FIELD,
    .name = "abi_test",
    .version = "0.0.1",
    .build_signature = ABI_SIGNATURE_FIELD,
    .vtable = ABI_VTABLE_FIELD,
    .config_keys = abi_hook_keys,
    .config_key_count = sizeof abi_hook_keys / sizeof abi_hook_keys[0],
    .config_key_size = ABI_CONFIG_KEY_SIZE,
    .config_struct_size = sizeof(abi_hook_config),
    .description = "a plugin built wrong on purpose for tests/abi",
};

/* ---- the entry ---- */

#if defined(ABI_CASE_NO_ENTRY)
/* A misspelled entry: the loader looks for gs_plugin_entry and must not find it. */
GS_EXPORT const gs_plugin_descriptor *gs_plugin_entry_v1(uint32_t host_abi_major);
GS_EXPORT const gs_plugin_descriptor *gs_plugin_entry_v1(uint32_t host_abi_major)
{
    return &abi_descriptor;
}
#elif defined(ABI_CASE_ENTRY_NULL)
/* An entry that serves no major the host offers. */
GS_EXPORT const gs_plugin_descriptor *gs_plugin_entry(uint32_t host_abi_major);
GS_EXPORT const gs_plugin_descriptor *gs_plugin_entry(uint32_t host_abi_major)
{
    (void)abi_descriptor;
    return NULL;
}
#else
GS_PLUGIN_DEFINE(abi_descriptor)
#endif
