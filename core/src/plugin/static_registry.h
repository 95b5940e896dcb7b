/*
 * The plugins built into the core (gs_add_plugin ... BUILTIN in CMakeLists.txt): the same
 * sources as their shared objects, with the entry renamed gs_plugin_entry_<prefix>_<name>.
 * The table is generated into the build folder and ends with a row of NULLs. Read-only.
 */
#ifndef GS_PLUGIN_STATIC_REGISTRY_H
#define GS_PLUGIN_STATIC_REGISTRY_H

#include <gatestream/abi.h>

typedef struct gs_static_plugin {
    const char *prefix; /**< "resolver", "transport", ... (the file prefix of its kind) */
    const char *name;
    gs_plugin_entry_fn entry;
} gs_static_plugin;

extern const gs_static_plugin gs_static_plugins[];

#endif
