/*
 * memory: the in-process replication transport. Many nodes of one process meet on a named
 * bus and exchange the core's replication messages without a socket; a seeded fault mode
 * (loss, duplication, reordering, delay, partitions) makes failure tests reproducible.
 *
 * What it does: create() joins the instance to its bus (config `bus`), start() links it to
 * the started nodes it or they list in `peers` and starts its delivery thread, send() copies
 * the message into the receiver's queue (or GS_AGAIN when that queue holds max_queue_bytes),
 * and the receiver's delivery thread hands it to the core. The node id "$control" takes
 * fault commands (README.md). The bus machinery is in bus.c, the queue and the delivery
 * thread in queue.c, the fault streams and the command parser in fault.c; this file is the
 * plugin and its lifecycle.
 *
 * Ownership: the instance copies its config and node id at create(); the events are copied
 * at start(). Bytes passed to send() are copied before it returns.
 *
 * Threads: create/start/stop/destroy on the core's main thread (stop and destroy must not be
 * called from this transport's event callbacks); send from any thread, never blocking on a
 * receiver. Events arrive on the receiving instance's delivery thread, one at a time.
 */
#include "memory_internal.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MT_FAIL(host, err, code, ...) ((host)->error_set((err), 0, (code), __VA_ARGS__), GS_ERROR)

/* ------------------------------------------------------------------------------------------ */
/* Config keys                                                                                */

#define MT_INT_KEY(key, def, field, lo, hi, text)                                                  \
    {                                                                                              \
        .name = (key), .type = GS_CFG_INT, .default_value = (def),                                 \
        .offset = offsetof(gs_mt_config, field), .help = (text), .min = (lo), .max = (hi)          \
    }
#define MT_RATE_KEY(key, field, text)                                                              \
    {                                                                                              \
        .name = (key), .type = GS_CFG_DOUBLE, .default_value = "0",                                \
        .offset = offsetof(gs_mt_config, field), .help = (text), .min = 0, .max = 1                \
    }

#define MT_MAX_DELAY_MS 3600000
#define MT_MAX_HOLD_MS 600000
#define MT_MAX_QUEUE_BYTES INT64_C(1099511627776)

static const gs_config_key mt_keys[] = {
    {.name = "bus",
     .type = GS_CFG_STRING,
     .default_value = "default",
     .offset = offsetof(gs_mt_config, bus),
     .help = "bus name: only nodes of one process on the same bus can link"},
    {.name = "peers",
     .type = GS_CFG_STRING_LIST,
     .offset = offsetof(gs_mt_config, peers),
     .help = "node ids this node links to (a link needs either side to list the other); "
             "\"*\" = every node on the bus"},
    MT_INT_KEY("max_queue_bytes", "67108864", max_queue_bytes, 1, MT_MAX_QUEUE_BYTES,
               "bytes of undelivered messages this node accepts; a send past it returns "
               "GS_AGAIN"),
    {.name = "seed",
     .type = GS_CFG_INT,
     .default_value = "0",
     .offset = offsetof(gs_mt_config, seed),
     .help = "seed of the fault draws of this node's outbound messages (same seed, same "
             "faults)"},
    MT_RATE_KEY("drop_rate", drop_rate,
                "probability that an outbound replication or sync message is lost"),
    MT_RATE_KEY("duplicate_rate", duplicate_rate,
                "probability that an outbound replication or sync message is delivered twice"),
    MT_RATE_KEY("reorder_rate", reorder_rate,
                "probability that an outbound replication or sync message swaps places with "
                "the next one to the same peer"),
    MT_INT_KEY("delay_ms_min", "0", delay_ms_min, 0, MT_MAX_DELAY_MS,
               "least delivery delay of an outbound message, in ms"),
    MT_INT_KEY("delay_ms_max", "0", delay_ms_max, 0, MT_MAX_DELAY_MS,
               "greatest delivery delay (uniform between min and max; order per peer is kept)"),
    MT_INT_KEY("reorder_hold_ms", "100", reorder_hold_ms, 1, MT_MAX_HOLD_MS,
               "how long a reordered message waits for the next one before it is delivered "
               "in place"),
};

#define MT_KEY_COUNT (sizeof mt_keys / sizeof mt_keys[0])

/** Defaults from the key table, for a host that passes no config struct. */
static void mt_config_defaults(gs_mt_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->bus = "default";
    cfg->max_queue_bytes = 67108864;
    cfg->reorder_hold_ms = 100;
}

/* ------------------------------------------------------------------------------------------ */
/* Create and destroy                                                                         */

/* A node id usable on a bus and in control commands: 1..255 bytes, no whitespace or control
 * bytes, not starting with '$' (reserved for "$control"). NULL when fine, else why not. */
static const char *id_problem(const char *id)
{
    if (!id || !*id)
        return "it is empty";
    if (strlen(id) > GS_MT_ID_MAX)
        return "it is longer than 255 bytes";
    if (id[0] == '$')
        return "ids starting with '$' are reserved ($control)";
    for (const char *p = id; *p; p++)
        if (isspace((unsigned char)*p) || (unsigned char)*p < 0x20)
            return "it holds whitespace or a control character";
    return NULL;
}

static gs_status check_config(const gs_host *host, const gs_mt_config *cfg, const char *node_id,
                              gs_error *err)
{
    const char *why = id_problem(node_id);
    if (why)
        return MT_FAIL(host, err, "INVALID_CONFIG",
                       "memory transport: node id '%s' cannot be used: %s", node_id ? node_id : "",
                       why);
    if (!cfg->bus || !*cfg->bus)
        return MT_FAIL(host, err, "INVALID_CONFIG",
                       "memory transport: 'bus' is empty; name the bus (default \"default\")");
    if (cfg->max_queue_bytes < 1 || cfg->max_queue_bytes > MT_MAX_QUEUE_BYTES)
        return MT_FAIL(host, err, "INVALID_CONFIG",
                       "memory transport: max_queue_bytes = %" PRId64 " is outside 1..%" PRId64,
                       cfg->max_queue_bytes, MT_MAX_QUEUE_BYTES);
    const struct {
        const char *name;
        double v;
    } rates[] = {{"drop_rate", cfg->drop_rate},
                 {"duplicate_rate", cfg->duplicate_rate},
                 {"reorder_rate", cfg->reorder_rate}};
    for (size_t i = 0; i < 3; i++)
        if (isnan(rates[i].v) || rates[i].v < 0.0 || rates[i].v > 1.0)
            return MT_FAIL(host, err, "INVALID_CONFIG",
                           "memory transport: %s = %g is not a probability from 0 to 1",
                           rates[i].name, rates[i].v);
    if (cfg->delay_ms_min < 0 || cfg->delay_ms_max > MT_MAX_DELAY_MS ||
        cfg->delay_ms_min > cfg->delay_ms_max)
        return MT_FAIL(host, err, "INVALID_CONFIG",
                       "memory transport: delay_ms_min = %" PRId64 " and delay_ms_max = %" PRId64
                       " must satisfy 0 <= min <= max <= %d",
                       cfg->delay_ms_min, cfg->delay_ms_max, MT_MAX_DELAY_MS);
    if (cfg->reorder_hold_ms < 1 || cfg->reorder_hold_ms > MT_MAX_HOLD_MS)
        return MT_FAIL(host, err, "INVALID_CONFIG",
                       "memory transport: reorder_hold_ms = %" PRId64 " is outside 1..%d",
                       cfg->reorder_hold_ms, MT_MAX_HOLD_MS);
    if (cfg->peers.count && !cfg->peers.items)
        return MT_FAIL(host, err, "INVALID_CONFIG", "memory transport: 'peers' has no items");
    for (size_t i = 0; i < cfg->peers.count; i++) {
        const char *p = cfg->peers.items[i];
        if (p && strcmp(p, "*") == 0)
            continue;
        why = id_problem(p);
        if (why)
            return MT_FAIL(host, err, "INVALID_CONFIG",
                           "memory transport: peers[%zu] '%s' is not a node id: %s", i, p ? p : "",
                           why);
    }
    return GS_OK;
}

static char *mt_strdup(const gs_host *host, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = host->alloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

static void free_strings(gs_mt_inst *mt)
{
    const gs_host *host = mt->host;
    for (size_t i = 0; mt->peers && i < mt->npeers; i++)
        host->free(mt->peers[i]);
    host->free(mt->peers);
    host->free(mt->node_id);
    mt->peers = NULL;
    mt->node_id = NULL;
}

static gs_status mt_create(const gs_host *host, const void *config, const char *local_node_id,
                           void **instance, gs_error *err)
{
    *instance = NULL;
    gs_mt_config defaults;
    const gs_mt_config *cfg = config;
    if (!cfg) {
        mt_config_defaults(&defaults);
        cfg = &defaults;
    }
    if (check_config(host, cfg, local_node_id, err) != GS_OK)
        return GS_ERROR;

    gs_mt_inst *mt = host->alloc(sizeof *mt);
    if (!mt)
        return MT_FAIL(host, err, "INTERNAL_ERROR", "out of memory creating the memory transport");
    memset(mt, 0, sizeof *mt);
    mt->host = host;
    mt->max_queue_bytes = (uint64_t)cfg->max_queue_bytes;
    mt->faults.seed = (uint64_t)cfg->seed;
    mt->faults.drop = cfg->drop_rate;
    mt->faults.duplicate = cfg->duplicate_rate;
    mt->faults.reorder = cfg->reorder_rate;
    mt->faults.delay_min = (uint64_t)cfg->delay_ms_min;
    mt->faults.delay_max = (uint64_t)cfg->delay_ms_max;
    mt->faults.hold_ms = (uint64_t)cfg->reorder_hold_ms;
    atomic_init(&mt->delivered, 0);
    atomic_init(&mt->dropped, 0);
    atomic_init(&mt->duplicated, 0);
    atomic_init(&mt->reordered, 0);

    int ok = (mt->node_id = mt_strdup(host, local_node_id)) != NULL;
    if (ok && cfg->peers.count) {
        ok = (mt->peers = host->alloc(cfg->peers.count * sizeof *mt->peers)) != NULL;
        for (size_t i = 0; ok && i < cfg->peers.count; i++) {
            if (strcmp(cfg->peers.items[i], "*") == 0)
                mt->peers_all = 1;
            ok = (mt->peers[i] = mt_strdup(host, cfg->peers.items[i])) != NULL;
            mt->npeers = i + ok;
        }
    }
    if (!ok) {
        free_strings(mt);
        host->free(mt);
        return MT_FAIL(host, err, "INTERNAL_ERROR", "out of memory creating the memory transport");
    }

    pthread_condattr_t ca;
    ok = pthread_mutex_init(&mt->qlock, NULL) == 0;
    if (ok) {
        int cond_ok = pthread_condattr_init(&ca) == 0;
        if (cond_ok) {
            pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
            cond_ok = pthread_cond_init(&mt->qcond, &ca) == 0;
            pthread_condattr_destroy(&ca);
        }
        if (!cond_ok) {
            pthread_mutex_destroy(&mt->qlock);
            ok = 0;
        }
    }
    if (!ok) {
        free_strings(mt);
        host->free(mt);
        return MT_FAIL(host, err, "INTERNAL_ERROR",
                       "cannot create the memory transport's lock (out of resources)");
    }
    if (gs_mt_bus_join(mt, cfg->bus, err) != GS_OK) {
        pthread_cond_destroy(&mt->qcond);
        pthread_mutex_destroy(&mt->qlock);
        free_strings(mt);
        host->free(mt);
        return GS_ERROR;
    }
    *instance = mt;
    return GS_OK;
}

static void mt_stop(void *instance);

static void mt_destroy(void *instance)
{
    gs_mt_inst *mt = instance;
    if (!mt)
        return;
    mt_stop(mt);
    if (gs_mt_on_delivery_thread(mt)) {
        /* Freeing the instance under its own running callback would pull the thread's
         * ground away: refuse loudly and leak instead. */
        mt->host->log(mt->host, GS_LOG_ERROR, GS_MT_COMPONENT,
                      "node '%s': destroy() called from its own event callback; the instance "
                      "is leaked. Destroy it from the core's main thread",
                      mt->node_id);
        return;
    }
    gs_mt_delivery_reap(mt);
    gs_mt_bus_leave(mt);
    pthread_cond_destroy(&mt->qcond);
    pthread_mutex_destroy(&mt->qlock);
    const gs_host *host = mt->host;
    free_strings(mt);
    host->free(mt);
}

/* ------------------------------------------------------------------------------------------ */
/* Start and stop                                                                             */

static gs_status mt_start(void *instance, const gs_repl_events *events, gs_error *err)
{
    gs_mt_inst *mt = instance;
    const gs_host *host = mt->host;
    if (!events ||
        events->struct_size < offsetof(gs_repl_events, on_message) + sizeof(events->on_message) ||
        !events->on_message)
        return MT_FAIL(host, err, "INTERNAL_ERROR",
                       "memory transport '%s': start() needs events with on_message", mt->node_id);
    if (gs_mt_on_delivery_thread(mt))
        return MT_FAIL(host, err, "INTERNAL_ERROR",
                       "memory transport '%s': start() called from its own event callback",
                       mt->node_id);
    pthread_mutex_lock(&mt->bus->lock);
    int started = mt->started;
    pthread_mutex_unlock(&mt->bus->lock);
    if (started)
        return MT_FAIL(host, err, "INTERNAL_ERROR", "memory transport '%s' is already started",
                       mt->node_id);
    /* A stop() that ran on the delivery thread left the thread to be joined here. */
    gs_mt_delivery_reap(mt);

    memset(&mt->events, 0, sizeof mt->events);
    size_t n = events->struct_size < sizeof mt->events ? events->struct_size : sizeof mt->events;
    memcpy(&mt->events, events, n);
    mt->events.struct_size = sizeof mt->events;
    atomic_store(&mt->delivered, 0);
    atomic_store(&mt->dropped, 0);
    atomic_store(&mt->duplicated, 0);
    atomic_store(&mt->reordered, 0);

    if (gs_mt_delivery_start(mt, err) != GS_OK)
        return GS_ERROR;
    if (gs_mt_bus_start(mt, err) != GS_OK) {
        gs_mt_delivery_reap(mt);
        return GS_ERROR;
    }
    return GS_OK;
}

static void mt_stop(void *instance)
{
    gs_mt_inst *mt = instance;
    if (!mt)
        return;
    int was_started = gs_mt_bus_stop(mt);
    if (gs_mt_on_delivery_thread(mt)) {
        /* Joining ourselves would hang: stop after this callback; start/destroy joins. */
        gs_mt_delivery_signal_stop(mt);
        mt->host->log(mt->host, GS_LOG_ERROR, GS_MT_COMPONENT,
                      "node '%s': stop() called from its own event callback; delivery stops "
                      "after this callback, but stop() cannot wait for it",
                      mt->node_id);
        return;
    }
    gs_mt_delivery_reap(mt);
    if (was_started)
        mt->host->log(mt->host, GS_LOG_INFO, GS_MT_COMPONENT,
                      "node '%s' stopped on bus '%s': %llu delivered, %llu dropped, %llu "
                      "duplicated, %llu reordered",
                      mt->node_id, mt->bus->name, (unsigned long long)atomic_load(&mt->delivered),
                      (unsigned long long)atomic_load(&mt->dropped),
                      (unsigned long long)atomic_load(&mt->duplicated),
                      (unsigned long long)atomic_load(&mt->reordered));
}

/* ------------------------------------------------------------------------------------------ */
/* Send                                                                                       */

static gs_status mt_send(void *instance, const char *to_node_id, gs_repl_msg_type type,
                         uint64_t call_id, const uint8_t *bytes, size_t len, gs_error *err)
{
    gs_mt_inst *mt = instance;
    const gs_host *host = mt->host;
    if (!to_node_id)
        return MT_FAIL(host, err, "TRANSPORT_ERROR", "send() needs a peer node id");
    if (len && !bytes)
        return MT_FAIL(host, err, "TRANSPORT_ERROR", "send() of %zu bytes with no buffer", len);
    if (strcmp(to_node_id, GS_MT_CONTROL_NODE) == 0) {
        if ((int)type != 0)
            return MT_FAIL(host, err, "TRANSPORT_ERROR",
                           "messages to %s are control commands and take type 0, not %d",
                           GS_MT_CONTROL_NODE, (int)type);
        return gs_mt_bus_control(mt, bytes, len, err);
    }
    if (type < GS_REPL_MSG_REPLICATION || type > GS_REPL_MSG_FORWARD_RESPONSE)
        return MT_FAIL(host, err, "TRANSPORT_ERROR",
                       "unknown replication message type %d (expected 1..4)", (int)type);
    return gs_mt_bus_send(mt, to_node_id, type, call_id, bytes, len, err);
}

/* ------------------------------------------------------------------------------------------ */
/* Descriptor                                                                                 */

static const gs_repl_transport_vtable mt_vtable = {
    .struct_size = sizeof(gs_repl_transport_vtable),
    .create = mt_create,
    .start = mt_start,
    .send = mt_send,
    .stop = mt_stop,
    .destroy = mt_destroy,
};

static const gs_plugin_descriptor mt_descriptor = {
    .struct_size = sizeof(gs_plugin_descriptor),
    .abi_major = GS_ABI_MAJOR,
    .abi_minor = GS_ABI_MINOR,
    .kind = GS_KIND_REPL_TRANSPORT,
    .name = "memory",
    .version = "0.1.0",
    .build_signature = GS_BUILD_SIGNATURE,
    .vtable = &mt_vtable,
    .config_keys = mt_keys,
    .config_key_count = MT_KEY_COUNT,
    .config_key_size = sizeof(gs_config_key),
    .config_struct_size = sizeof(gs_mt_config),
    .description = "in-process replication transport: nodes of one process on a named bus, "
                   "with seeded loss, duplication, reordering, delay and partitions for tests",
};

GS_PLUGIN_DEFINE(mt_descriptor)
