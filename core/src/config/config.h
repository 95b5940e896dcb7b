/*
 * Config: a YAML file (libyaml) parsed once into a tree of nodes that remember their line,
 * then validated and copied into C structs through typed key tables (gs_config_key, the
 * same tables plugins declare). Every error names file, line and key, e.g.
 *   "config/default.yaml:12: server.port: expected an integer from 0 to 65535, got 'abc'".
 * Unknown keys are refused. Scalars expand ${NAME} and ${NAME:-default} from the
 * environment (an unset variable without a default is an error naming it); $$ is a '$'.
 *
 * Ownership: a gs_cfg_doc owns its nodes. gs_cfg_fill allocates strings and lists into an
 * arena that the caller frees with gs_cfg_arena_free once the filled struct is dead.
 * Threads: single-threaded use (start-up), no global state.
 */
#ifndef GS_CONFIG_CONFIG_H
#define GS_CONFIG_CONFIG_H

#include <gatestream/abi.h>
#include "../base/buf.h"

typedef enum gs_cfg_node_type {
    GS_CFG_NODE_SCALAR = 1,
    GS_CFG_NODE_MAP = 2,
    GS_CFG_NODE_SEQ = 3,
} gs_cfg_node_type;

typedef struct gs_cfg_node {
    gs_cfg_node_type type;
    char *key;                     /**< for a map entry: its key; else NULL */
    char *value;                   /**< scalar text after ${ENV} expansion; NULL for map/seq */
    int quoted;                    /**< scalar was quoted ('..' or "..") in YAML: always a string */
    int is_null;                   /**< plain scalar ~, null, Null, NULL or empty */
    int line;                      /**< 1-based line of the node (the key's line for map entries) */
    int col;                       /**< 1-based column */
    struct gs_cfg_node **children; /**< map entries (each with key) or sequence items */
    size_t count;
} gs_cfg_node;

typedef struct gs_cfg_doc {
    char *file;        /**< the file name used in messages */
    gs_cfg_node *root; /**< a map; an empty file gives an empty map */
} gs_cfg_doc;

/** Parse a YAML file. Refuses anchors/aliases, multiple documents, duplicate keys and
 * non-scalar keys, each with file:line. */
gs_status gs_cfg_load_file(const char *path, gs_cfg_doc **out, gs_error *err);
/** Parse YAML text; `name` stands for the file in messages. */
gs_status gs_cfg_load_string(const char *text, size_t len, const char *name, gs_cfg_doc **out,
                             gs_error *err);
void gs_cfg_free(gs_cfg_doc *doc);

/** The entry `key` of a map node, or NULL. */
const gs_cfg_node *gs_cfg_get(const gs_cfg_node *map, const char *key);
/** Set (or add) scalar `key` = value in map node `map`, creating it; used by CLI overrides.
 * `dotted` like "server.port" walks/creates maps. */
gs_status gs_cfg_set(gs_cfg_doc *doc, const char *dotted, const char *value, gs_error *err);

/** Everything gs_cfg_fill allocated (strings, lists, JSON text). */
typedef struct gs_cfg_arena {
    void **ptrs;
    size_t count, cap;
} gs_cfg_arena;
void gs_cfg_arena_free(gs_cfg_arena *arena);

/**
 * Validate map node `map` against `keys` (count entries, stride key_size) and fill `out`.
 * Defaults apply to absent keys (text form parsed as the key's type); required keys must
 * be present; unknown keys fail; types and bounds are checked. `where` is the dotted path
 * of `map` for messages ("" at the root, "server", "databases[0]"...). A NULL map means
 * "absent": defaults fill and required keys fail.
 */
gs_status gs_cfg_fill(const gs_cfg_doc *doc, const gs_cfg_node *map, const char *where,
                      const gs_config_key *keys, size_t count, size_t key_size, void *out,
                      gs_cfg_arena *arena, gs_error *err);

/** Render a subtree as JSON text (scalars: numbers/bools/null when plain, else strings). */
void gs_cfg_to_json(const gs_cfg_node *node, gs_buf *out);

/** Print a key table for --describe-plugin: one line per key with type, default,
 * required and help; nested tables indented. */
void gs_cfg_describe(const gs_config_key *keys, size_t count, size_t key_size, int indent,
                     gs_buf *out);

#endif
