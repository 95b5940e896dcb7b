#include "loader.h"
#include "static_registry.h"

#include <gatestream/backup_destination.h>
#include <gatestream/client_transport.h>
#include <gatestream/coordinator.h>
#include <gatestream/hook.h>
#include <gatestream/repl_transport.h>
#include <gatestream/resolver.h>

#include "../base/alloc.h"
#include "../base/error.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef GS_PLUGIN_REL_DIR
#define GS_PLUGIN_REL_DIR "../lib/gatestream/plugins"
#endif
#ifndef GS_PLUGIN_INSTALL_DIR
#define GS_PLUGIN_INSTALL_DIR "/usr/local/lib/gatestream/plugins"
#endif

static const struct {
    gs_plugin_kind kind;
    const char *name;
    const char *prefix;
} kinds[] = {
    {GS_KIND_CLIENT_TRANSPORT, "client_transport", "transport"},
    {GS_KIND_REPL_TRANSPORT, "repl_transport", "transport"},
    {GS_KIND_RESOLVER, "resolver", "resolver"},
    {GS_KIND_COORDINATOR, "coordinator", "coordinator"},
    {GS_KIND_HOOK, "hook", "hook"},
    {GS_KIND_BACKUP_DESTINATION, "backup_destination", "backup"},
};
#define NKINDS (sizeof kinds / sizeof kinds[0])

const char *gs_plugin_kind_name(gs_plugin_kind kind)
{
    for (size_t i = 0; i < NKINDS; i++)
        if (kinds[i].kind == kind)
            return kinds[i].name;
    return NULL;
}

gs_plugin_kind gs_plugin_kind_parse(const char *name)
{
    for (size_t i = 0; name && i < NKINDS; i++)
        if (strcmp(kinds[i].name, name) == 0)
            return kinds[i].kind;
    return (gs_plugin_kind)0;
}

const char *gs_plugin_kind_prefix(gs_plugin_kind kind)
{
    for (size_t i = 0; i < NKINDS; i++)
        if (kinds[i].kind == kind)
            return kinds[i].prefix;
    return NULL;
}

size_t gs_plugin_min_vtable_size(gs_plugin_kind kind)
{
    switch (kind) {
    case GS_KIND_CLIENT_TRANSPORT:
        return offsetof(gs_client_transport_vtable, destroy) + sizeof(void *);
    case GS_KIND_REPL_TRANSPORT:
        return offsetof(gs_repl_transport_vtable, destroy) + sizeof(void *);
    case GS_KIND_RESOLVER: return offsetof(gs_resolver_vtable, resolve) + sizeof(void *);
    case GS_KIND_COORDINATOR: return offsetof(gs_coordinator_vtable, unwatch) + sizeof(void *);
    case GS_KIND_HOOK: return offsetof(gs_hook_vtable, destroy) + sizeof(void *);
    case GS_KIND_BACKUP_DESTINATION:
        return offsetof(gs_backup_destination_vtable, list_pieces) + sizeof(void *);
    }
    return 0;
}

static gs_status refuse(gs_error *err, const char *instance, const char *path, const char *problem,
                        const char *fix)
{
    return gs_error_set(err, 0, "PLUGIN_REFUSED", "plugin '%s' (%s): %s. Fix: %s", instance, path,
                        problem, fix);
}

/* The directory holding the running executable, or "" when unknown. */
static void exe_dir(char *out, size_t n)
{
    char buf[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", buf, sizeof buf - 1);
    out[0] = '\0';
    if (len <= 0)
        return;
    buf[len] = '\0';
    char *slash = strrchr(buf, '/');
    if (!slash)
        return;
    *slash = '\0';
    snprintf(out, n, "%s", buf);
}

static int file_exists(const char *p)
{
    return access(p, R_OK) == 0;
}

gs_status gs_plugin_find(const char *instance, const char *plugin_name, gs_plugin_kind kind,
                         const char *explicit_path, const char *config_dir, char **path_out,
                         gs_error *err)
{
    char path[PATH_MAX];
    if (explicit_path && *explicit_path) {
        if (explicit_path[0] == '/' || !config_dir || !*config_dir)
            snprintf(path, sizeof path, "%s", explicit_path);
        else
            snprintf(path, sizeof path, "%s/%s", config_dir, explicit_path);
        if (!file_exists(path))
            return refuse(err, instance, path, "file not found or not readable",
                          "correct the plugin's 'path' (relative paths start at the config "
                          "file's folder)");
        *path_out = gs_strdup(path);
        return *path_out ? GS_OK : gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    char exe[PATH_MAX];
    exe_dir(exe, sizeof exe);
    char dirs[4][PATH_MAX];
    int nd = 0;
    const char *env = getenv("GS_PLUGIN_DIR");
    if (env && *env)
        snprintf(dirs[nd++], PATH_MAX, "%s", env);
    if (*exe) {
        snprintf(dirs[nd++], PATH_MAX, "%s/plugins", exe);
        snprintf(dirs[nd++], PATH_MAX, "%s/%s", exe, GS_PLUGIN_REL_DIR);
    }
    snprintf(dirs[nd++], PATH_MAX, "%s", GS_PLUGIN_INSTALL_DIR);
    for (int d = 0; d < nd; d++) {
        for (size_t k = 0; k < NKINDS; k++) {
            if (kind && kinds[k].kind != kind)
                continue;
            snprintf(path, sizeof path, "%s/gs_%s_%s.so", dirs[d], kinds[k].prefix, plugin_name);
            if (file_exists(path)) {
                *path_out = gs_strdup(path);
                return *path_out ? GS_OK : gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
            }
        }
    }
    char searched[1024];
    size_t off = 0;
    searched[0] = '\0';
    for (int d = 0; d < nd && off < sizeof searched; d++)
        off +=
            (size_t)snprintf(searched + off, sizeof searched - off, "%s%s", d ? ", " : "", dirs[d]);
    char problem[1400];
    snprintf(problem, sizeof problem, "no gs_%s_%s.so in %s",
             kind ? gs_plugin_kind_prefix(kind) : "*", plugin_name, searched);
    return refuse(err, instance, plugin_name, problem,
                  "install the plugin there, set GS_PLUGIN_DIR, or give its 'path'");
}

/* Required callbacks of each kind at ABI 1.0: name and offset in the vtable. */
typedef struct {
    const char *name;
    size_t offset;
} required_cb;

#define REQ(type, m)                                                                               \
    {                                                                                              \
#m, offsetof(type, m)                                                                      \
    }
static const required_cb req_client[] = {
    REQ(gs_client_transport_vtable, create), REQ(gs_client_transport_vtable, start),
    REQ(gs_client_transport_vtable, stop), REQ(gs_client_transport_vtable, destroy)};
static const required_cb req_repl[] = {
    REQ(gs_repl_transport_vtable, create), REQ(gs_repl_transport_vtable, start),
    REQ(gs_repl_transport_vtable, send), REQ(gs_repl_transport_vtable, stop),
    REQ(gs_repl_transport_vtable, destroy)};
static const required_cb req_resolver[] = {REQ(gs_resolver_vtable, create),
                                           REQ(gs_resolver_vtable, destroy),
                                           REQ(gs_resolver_vtable, resolve)};
static const required_cb req_coord[] = {
    REQ(gs_coordinator_vtable, create),       REQ(gs_coordinator_vtable, start),
    REQ(gs_coordinator_vtable, stop),         REQ(gs_coordinator_vtable, destroy),
    REQ(gs_coordinator_vtable, range),        REQ(gs_coordinator_vtable, txn),
    REQ(gs_coordinator_vtable, lease_grant),  REQ(gs_coordinator_vtable, lease_keepalive),
    REQ(gs_coordinator_vtable, lease_revoke), REQ(gs_coordinator_vtable, watch),
    REQ(gs_coordinator_vtable, unwatch)};
static const required_cb req_hook[] = {REQ(gs_hook_vtable, create), REQ(gs_hook_vtable, destroy)};
static const required_cb req_backup_dest[] = {
    REQ(gs_backup_destination_vtable, create), REQ(gs_backup_destination_vtable, destroy),
    REQ(gs_backup_destination_vtable, write_piece), REQ(gs_backup_destination_vtable, read_piece),
    REQ(gs_backup_destination_vtable, list_pieces)};
#undef REQ

static const required_cb *required_for(gs_plugin_kind kind, size_t *n)
{
    switch (kind) {
    case GS_KIND_CLIENT_TRANSPORT: *n = 4; return req_client;
    case GS_KIND_REPL_TRANSPORT: *n = 5; return req_repl;
    case GS_KIND_RESOLVER: *n = 3; return req_resolver;
    case GS_KIND_COORDINATOR: *n = 11; return req_coord;
    case GS_KIND_HOOK: *n = 2; return req_hook;
    case GS_KIND_BACKUP_DESTINATION: *n = 5; return req_backup_dest;
    }
    *n = 0;
    return NULL;
}

static gs_status check_descriptor(const char *instance, const char *path,
                                  const gs_plugin_descriptor *d, gs_plugin_kind expected_kind,
                                  gs_error *err)
{
    char problem[512];
    if (d->struct_size < offsetof(gs_plugin_descriptor, description)) {
        snprintf(problem, sizeof problem,
                 "its descriptor is %u bytes, a 1.0 descriptor has at least %zu", d->struct_size,
                 offsetof(gs_plugin_descriptor, description));
        return refuse(err, instance, path, problem,
                      "rebuild the plugin against the gatestream-plugin headers");
    }
    if (d->abi_major != GS_ABI_MAJOR) {
        snprintf(problem, sizeof problem,
                 "it was built for ABI %u.%u and this gatestream speaks ABI %d.%d "
                 "(the major must match)",
                 d->abi_major, d->abi_minor, GS_ABI_MAJOR, GS_ABI_MINOR);
        return refuse(err, instance, path, problem,
                      "rebuild the plugin against this gatestream's headers "
                      "(pkg-config --cflags gatestream-plugin)");
    }
    if (d->abi_minor > GS_ABI_MINOR) {
        /* A newer minor may call host members this host does not have. */
        snprintf(problem, sizeof problem,
                 "it needs ABI %u.%u and this gatestream provides %d.%d (plugin minor is newer)",
                 d->abi_major, d->abi_minor, GS_ABI_MAJOR, GS_ABI_MINOR);
        return refuse(err, instance, path, problem,
                      "upgrade gatestream, or rebuild the plugin against this gatestream's "
                      "headers");
    }
    if (d->kind == GS_KIND_RESOLVER && d->abi_minor < 3) {
        /* The resolver structs were reshaped in 1.3, before the core ever called one. */
        snprintf(problem, sizeof problem,
                 "it is a resolver built for ABI %u.%u; resolvers need ABI 1.3 or later",
                 d->abi_major, d->abi_minor);
        return refuse(err, instance, path, problem,
                      "rebuild the resolver against this gatestream's headers");
    }
    if (d->kind == GS_KIND_BACKUP_DESTINATION && d->abi_minor < 3) {
        /* The kind appeared in 1.3: an older minor cannot have been built against it. */
        snprintf(problem, sizeof problem,
                 "it declares a backup_destination plugin built for ABI %u.%u; that kind "
                 "exists since ABI 1.3",
                 d->abi_major, d->abi_minor);
        return refuse(err, instance, path, problem,
                      "rebuild the plugin against this gatestream's headers");
    }
    if (d->kind == GS_KIND_COORDINATOR && d->abi_minor < 4) {
        /* The coordinator contract (watch loss, lease compare, key prefix) was settled in 1.4,
         * before the core ever called a coordinator. */
        snprintf(problem, sizeof problem,
                 "it is a coordinator built for ABI %u.%u; coordinators need ABI 1.4 or later",
                 d->abi_major, d->abi_minor);
        return refuse(err, instance, path, problem,
                      "rebuild the coordinator against this gatestream's headers");
    }
    if (!d->build_signature || strcmp(d->build_signature, GS_BUILD_SIGNATURE) != 0) {
        snprintf(problem, sizeof problem,
                 "its build signature '%s' differs from this gatestream's '%s'",
                 d->build_signature ? d->build_signature : "(none)", GS_BUILD_SIGNATURE);
        return refuse(err, instance, path, problem,
                      "rebuild the plugin for this platform with the same compiler settings");
    }
    const char *kname = gs_plugin_kind_name(d->kind);
    if (!kname) {
        snprintf(problem, sizeof problem, "its kind %d is not a kind this gatestream knows",
                 (int)d->kind);
        return refuse(err, instance, path, problem, "check the plugin's descriptor");
    }
    if (expected_kind && d->kind != expected_kind) {
        snprintf(problem, sizeof problem, "it is a %s plugin but the config declares kind '%s'",
                 kname, gs_plugin_kind_name(expected_kind));
        char fix[256];
        snprintf(fix, sizeof fix, "set 'kind: %s' for this plugin or point 'path' at a %s plugin",
                 kname, gs_plugin_kind_name(expected_kind));
        return refuse(err, instance, path, problem, fix);
    }
    if (!d->name || !*d->name)
        return refuse(err, instance, path, "its descriptor has no name",
                      "set the descriptor's name");
    if (!d->vtable)
        return refuse(err, instance, path, "its descriptor has no vtable",
                      "point the descriptor's vtable at the kind's vtable");
    uint32_t vsize = *(const uint32_t *)d->vtable;
    size_t minv = gs_plugin_min_vtable_size(d->kind);
    if (vsize < minv) {
        snprintf(problem, sizeof problem,
                 "its vtable is %u bytes; a 1.0 %s vtable needs at least %zu", vsize, kname, minv);
        return refuse(err, instance, path, problem,
                      "set the vtable's struct_size to sizeof of the kind's vtable and rebuild");
    }
    size_t nreq;
    const required_cb *req = required_for(d->kind, &nreq);
    for (size_t i = 0; i < nreq; i++) {
        void *fn;
        memcpy(&fn, (const char *)d->vtable + req[i].offset, sizeof fn);
        if (!fn) {
            snprintf(problem, sizeof problem, "its %s vtable lacks the required callback '%s'",
                     kname, req[i].name);
            return refuse(err, instance, path, problem,
                          "implement the callback and set it in the vtable");
        }
    }
    if (d->config_key_count && (!d->config_keys || d->config_key_size < sizeof(gs_config_key))) {
        snprintf(problem, sizeof problem,
                 "its config key table has entries of %zu bytes; ABI 1.0 needs %zu",
                 d->config_key_size, sizeof(gs_config_key));
        return refuse(err, instance, path, problem,
                      "set config_key_size to sizeof(gs_config_key) and rebuild");
    }
    return GS_OK;
}

gs_status gs_plugin_load(const char *instance, const char *path, gs_plugin_kind expected_kind,
                         gs_plugin **out, gs_error *err)
{
    *out = NULL;
    dlerror();
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        char problem[512];
        const char *e = dlerror();
        snprintf(problem, sizeof problem, "cannot be loaded: %s", e ? e : "unknown error");
        /* dlerror repeats the path; keep the line readable but complete. */
        return refuse(err, instance, path, problem,
                      "check that it is a shared object built for this machine and that the "
                      "libraries it needs are installed");
    }
    gs_plugin_entry_fn entry;
    void *sym = dlsym(h, GS_PLUGIN_ENTRY_SYMBOL);
    memcpy(&entry, &sym, sizeof entry);
    if (!sym) {
        dlclose(h);
        return refuse(err, instance, path, "it exports no gs_plugin_entry symbol",
                      "define the entry with GS_PLUGIN_DEFINE(descriptor) and build with "
                      "-fvisibility=hidden so only it is exported");
    }
    const gs_plugin_descriptor *d = entry(GS_ABI_MAJOR);
    if (!d) {
        dlclose(h);
        char problem[128];
        snprintf(problem, sizeof problem,
                 "its gs_plugin_entry returned no descriptor for ABI major %d", GS_ABI_MAJOR);
        return refuse(err, instance, path, problem,
                      "rebuild the plugin against this gatestream's headers");
    }
    if (check_descriptor(instance, path, d, expected_kind, err) != GS_OK) {
        dlclose(h);
        return GS_ERROR;
    }
    gs_plugin *p = gs_calloc(1, sizeof *p);
    if (!p || !(p->path = gs_strdup(path))) {
        gs_free(p);
        dlclose(h);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory loading plugin '%s'",
                            instance);
    }
    p->handle = h;
    p->desc = d;
    *out = p;
    return GS_OK;
}

gs_status gs_plugin_load_builtin(const char *instance, const char *plugin_name, gs_plugin_kind kind,
                                 gs_plugin **out, gs_error *err)
{
    *out = NULL;
    for (const gs_static_plugin *sp = gs_static_plugins; sp->name; sp++) {
        if (strcmp(sp->name, plugin_name) != 0)
            continue;
        if (kind && strcmp(sp->prefix, gs_plugin_kind_prefix(kind)) != 0)
            continue;
        char path[256];
        snprintf(path, sizeof path, "built-in:%s_%s", sp->prefix, sp->name);
        const gs_plugin_descriptor *d = sp->entry(GS_ABI_MAJOR);
        if (!d)
            return refuse(err, instance, path, "the built-in entry returned no descriptor",
                          "rebuild gatestream");
        if (check_descriptor(instance, path, d, kind, err) != GS_OK)
            return GS_ERROR;
        gs_plugin *p = gs_calloc(1, sizeof *p);
        if (!p || !(p->path = gs_strdup(path))) {
            gs_free(p);
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory loading plugin '%s'",
                                instance);
        }
        p->desc = d;
        *out = p;
        return GS_OK;
    }
    return GS_OK;
}

void gs_plugin_unload(gs_plugin *p)
{
    if (!p)
        return;
    if (p->handle)
        dlclose(p->handle);
    gs_free(p->path);
    gs_free(p);
}
