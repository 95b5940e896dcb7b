/*
 * A node: everything one gatestream process serves, built from one YAML file. Loading reads
 * and validates the config, loads and checks every plugin and creates its instances (so
 * --check-config proves a file fully); starting opens the databases, builds the api layer
 * and starts the client transports; stopping answers new requests 503 SHUTDOWN, lets
 * in-flight ones finish, stops transports, then drains, checkpoints and closes every database.
 *
 * Threads: load/start/stop/free on the main thread. No global state: one process may hold
 * several nodes.
 */
#ifndef GS_NODE_NODE_H
#define GS_NODE_NODE_H

#include <gatestream/abi.h>

typedef struct gs_node gs_node;

typedef struct gs_overrides {
    const char *host;     /* --host */
    const char *port;     /* --port */
    const char *data_dir; /* --data-dir */
} gs_overrides;

/** Load and validate. Plugin refusals come back with code PLUGIN_REFUSED, config errors
 * with INVALID_CONFIG; the message is one line a person can act on. */
gs_status gs_node_load(const char *config_path, const gs_overrides *ov, gs_node **out,
                       gs_error *err);
gs_status gs_node_start(gs_node *node, gs_error *err);
/** Graceful stop; idempotent. */
void gs_node_stop(gs_node *node);
void gs_node_free(gs_node *node);

/** The port the first client transport bound, or -1. */
int gs_node_bound_port(const gs_node *node);

/** The node's sources (databases[].sources; see source/source.h for
 * gs_sources_status / gs_sources_status_json), or NULL when it has none or is not started.
 * Valid until gs_node_free. */
struct gs_sources *gs_node_sources(gs_node *node);

/** Print a plugin's description and key table (for --describe-plugin). */
gs_status gs_describe_plugin(const char *name, char **text, gs_error *err);

#endif
