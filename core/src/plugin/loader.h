/*
 * Plugin loader: finds a plugin's shared object, opens it with RTLD_NOW | RTLD_LOCAL, calls
 * its gs_plugin_entry and checks the descriptor (ABI major and minor, build signature, kind,
 * vtable size, required callbacks, config key stride) before anything of it runs.
 *
 * A refusal fills err (code PLUGIN_REFUSED) with one line:
 *   "plugin '<instance>' (<file>): <problem>. Fix: <fix>"
 * which main prints as is before exiting with status 2.
 *
 * Ownership: a gs_plugin owns its dlopen handle; gs_plugin_unload closes it (after every
 * instance made from it is destroyed). Threads: start-up and shutdown only.
 */
#ifndef GS_PLUGIN_LOADER_H
#define GS_PLUGIN_LOADER_H

#include <gatestream/abi.h>

typedef struct gs_plugin {
    char *path;                       /**< the file opened */
    void *handle;                     /**< dlopen handle */
    const gs_plugin_descriptor *desc; /**< the plugin's static descriptor */
} gs_plugin;

/** "client_transport", "hook"...; NULL for an unknown kind. */
const char *gs_plugin_kind_name(gs_plugin_kind kind);
/** Parse a kind name; 0 when unknown. */
gs_plugin_kind gs_plugin_kind_parse(const char *name);
/** File prefix of a kind: "transport", "resolver", "coordinator", "hook". */
const char *gs_plugin_kind_prefix(gs_plugin_kind kind);

/**
 * Find the file of plugin `plugin_name`: `explicit_path` when set (relative paths are
 * resolved against `config_dir`), else gs_<prefix>_<name>.so in $GS_PLUGIN_DIR,
 * <exe dir>/plugins, <exe dir>/../<libdir>/gatestream/plugins, and the install dir.
 * kind 0 searches every prefix. *path_out is gs_malloc'd.
 */
gs_status gs_plugin_find(const char *instance, const char *plugin_name, gs_plugin_kind kind,
                         const char *explicit_path, const char *config_dir, char **path_out,
                         gs_error *err);

/** Open and check the plugin at path. expected_kind 0 accepts any kind. */
gs_status gs_plugin_load(const char *instance, const char *path, gs_plugin_kind expected_kind,
                         gs_plugin **out, gs_error *err);
/** The built-in plugin `plugin_name` of `kind` (0: any kind), checked like a loaded one:
 * GS_OK with *out NULL when there is none by that name. Unload it like any other. */
gs_status gs_plugin_load_builtin(const char *instance, const char *plugin_name, gs_plugin_kind kind,
                                 gs_plugin **out, gs_error *err);
void gs_plugin_unload(gs_plugin *p);

/** Minimum vtable size of a kind at ABI 1.0. */
size_t gs_plugin_min_vtable_size(gs_plugin_kind kind);

#endif
