/*
 * A gs_host for plugins used outside a node (tests, benchmarks, tools): logging through the
 * core log, the core allocator, the wall clock, error_set; node_id answers "" and the
 * members that need a running node (post, api_submit, WebSocket sessions) are NULL.
 * The table is filled in place; it holds no state. Any thread.
 */
#ifndef GS_PLUGIN_HOST_STANDALONE_H
#define GS_PLUGIN_HOST_STANDALONE_H

#include <gatestream/host.h>

void gs_host_init_standalone(gs_host *h);

#endif
