/*
 * memory transport internals, shared by its four files:
 *   memory.c  the plugin: descriptor, config keys, create/start/stop/destroy, send;
 *   bus.c     the process-global registry of named buses, which instances are linked,
 *             partitions, peer events and the "$control" commands;
 *   queue.c   one instance's inbound queue (ordered by delivery time), the per-sender pair
 *             state it keeps, and the delivery thread that calls the core's events;
 *   fault.c   the seeded random streams, the fault draws and the control command parser.
 *
 * Promise: every message an instance accepts is delivered at most once per copy to the
 * receiver's on_message, on the receiver's own delivery thread, in send order per (sender,
 * receiver) pair unless reorder is on; peer events are ordered with the messages of their
 * pair (a peer's up event before its first message, its down event after its last).
 *
 * Ownership: the registry owns the buses (a bus lives while instances created on it exist);
 * a bus lists its instances but does not own them (the core does, create..destroy). A
 * receiver owns its queue entries and pair states; an entry carries the free function of
 * the host that allocated it, so hosts with different allocators can share a bus.
 *
 * Threads and locks: create/start/stop/destroy on the core's main thread; send from any
 * thread; each started instance runs one delivery thread. Lock order: registry lock ->
 * bus lock -> an instance's queue lock. The delivery thread takes only its own queue lock
 * and never holds it while calling the core.
 */
#ifndef GS_TRANSPORT_MEMORY_INTERNAL_H
#define GS_TRANSPORT_MEMORY_INTERNAL_H

#include <gatestream/repl_transport.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define GS_MT_COMPONENT "memory"
/** The node id that send() treats as the control channel (type 0, text payload). */
#define GS_MT_CONTROL_NODE "$control"
/** Longest node id a control command accepts. */
#define GS_MT_ID_MAX 255

/** The plugin's config struct, filled by the core from the key table in memory.c. */
typedef struct gs_mt_config {
    const char *bus;         /**< bus name; instances on the same bus can link */
    gs_config_strings peers; /**< node ids this node links to; "*" = every node on the bus */
    int64_t max_queue_bytes; /**< bound on undelivered message bytes queued to this node */
    int64_t seed;            /**< seed of the fault streams of this node's outbound pairs */
    double drop_rate;        /**< probability a type 1/2 message is lost */
    double duplicate_rate;   /**< probability a type 1/2 message is delivered twice */
    double reorder_rate;     /**< probability a type 1/2 message swaps with the next one */
    int64_t delay_ms_min;    /**< delivery delay, uniform in [min, max] ms */
    int64_t delay_ms_max;    /**< ... */
    int64_t reorder_hold_ms; /**< how long a reordered message waits for a next one */
} gs_mt_config;

/** Fault settings of one sender's outbound pairs. Guarded by the bus lock. */
typedef struct gs_mt_faults {
    uint64_t seed;
    double drop, duplicate, reorder;
    uint64_t delay_min, delay_max;
    uint64_t hold_ms;
} gs_mt_faults;

/** A random stream (splitmix64). */
typedef struct gs_mt_rng {
    uint64_t state;
} gs_mt_rng;

/** What the fault draws decided for one message. */
typedef struct gs_mt_fate {
    int drop;
    int duplicate;
    int reorder;
    uint64_t delay_ms;
} gs_mt_fate;

typedef enum gs_mt_entry_kind {
    GS_MT_MESSAGE = 0,
    GS_MT_PEER_UP = 1,
    GS_MT_PEER_DOWN = 2,
} gs_mt_entry_kind;

struct gs_mt_pair;

/** One item of a receiver's queue: a message (bytes follow) or a peer event. */
typedef struct gs_mt_entry {
    struct gs_mt_entry *prev, *next;
    struct gs_mt_pair *pair; /**< the sender's pair state at the receiver */
    void (*free_fn)(void *); /**< the allocating host's free */
    uint64_t deliver_at;     /**< monotonic ms; the queue is sorted on it, stable */
    gs_mt_entry_kind kind;
    gs_repl_msg_type type;
    uint64_t call_id;
    int copies; /**< 1, or 2 when duplicated: delivered twice in a row */
    size_t len;
    uint8_t bytes[];
} gs_mt_entry;

/**
 * What a receiver keeps about one sender. Created when the pair's link first comes up,
 * freed when the receiver stops. Guarded by the receiver's queue lock; created and
 * re-seeded under the bus lock too.
 */
typedef struct gs_mt_pair {
    struct gs_mt_pair *next;
    char *from;                /**< the sender's node id */
    gs_mt_rng rng;             /**< the pair's fault stream, seeded from the sender's seed */
    uint64_t last_at;          /**< latest deliver_at given to the pair: keeps it in order */
    gs_mt_entry *held;         /**< a reordered message waiting for the next one, or NULL */
    gs_mt_entry *down_reserve; /**< the down event, allocated when the link came up */
} gs_mt_pair;

struct gs_mt_bus;

/** One instance: one node on one bus. */
typedef struct gs_mt_inst {
    const gs_host *host;
    char *node_id;
    char **peers; /**< copied from config */
    size_t npeers;
    int peers_all; /**< "*" was listed */

    struct gs_mt_bus *bus;
    struct gs_mt_inst *bus_next; /**< the bus's member list (bus lock) */

    /* Guarded by the bus lock. */
    int started;
    gs_mt_faults faults;

    /* Guarded by qlock. */
    pthread_mutex_t qlock;
    pthread_cond_t qcond; /**< CLOCK_MONOTONIC; signalled on insert and stop */
    gs_mt_entry *head, *tail;
    uint64_t queued_bytes;
    uint64_t max_queue_bytes;
    gs_mt_pair *pairs;
    int stopping;

    /* Main thread only. */
    pthread_t thread;
    int thread_live; /**< a delivery thread exists and is not joined yet */
    gs_repl_events events;

    /* Counters for the stop log line. */
    atomic_ullong delivered, dropped, duplicated, reordered;
} gs_mt_inst;

/** A named bus: the instances created on it and the partitions cut between node ids. */
typedef struct gs_mt_partition {
    struct gs_mt_partition *next;
    char *a, *b;
} gs_mt_partition;

typedef struct gs_mt_bus {
    struct gs_mt_bus *next; /**< registry list */
    char *name;
    int refs; /**< instances created on it (registry lock) */
    pthread_mutex_t lock;
    gs_mt_inst *members;
    gs_mt_partition *partitions;
    void *(*alloc_fn)(size_t);
    void (*free_fn)(void *);
} gs_mt_bus;

/* ---- time ---- */

/** Monotonic milliseconds (the clock every deliver_at and queue wait uses). */
uint64_t gs_mt_now_ms(void);

/* ---- fault.c ---- */

/** Seed the stream of the pair from -> to with seed (same inputs, same stream). */
void gs_mt_rng_seed(gs_mt_rng *r, uint64_t seed, const char *from, const char *to);
uint64_t gs_mt_rng_next(gs_mt_rng *r);
/** Uniform in [0, 1). */
double gs_mt_rng_unit(gs_mt_rng *r);

/**
 * Draw the fate of one message of `type` from the pair's stream. Types 1 and 2 draw drop,
 * duplicate and reorder (always three draws, so a rate change does not shift the stream);
 * every type draws its delay when delay_max > delay_min.
 */
void gs_mt_fate_draw(const gs_mt_faults *f, gs_mt_rng *r, gs_repl_msg_type type, gs_mt_fate *out);

typedef enum gs_mt_cmd_kind {
    GS_MT_CMD_PARTITION = 1,
    GS_MT_CMD_HEAL,
    GS_MT_CMD_DROP,
    GS_MT_CMD_DUPLICATE,
    GS_MT_CMD_REORDER,
    GS_MT_CMD_DELAY,
    GS_MT_CMD_HOLD,
    GS_MT_CMD_SEED,
    GS_MT_CMD_CLEAR,
} gs_mt_cmd_kind;

/** A parsed control command. */
typedef struct gs_mt_command {
    gs_mt_cmd_kind kind;
    char a[GS_MT_ID_MAX + 1];     /**< partition/heal: first node ("" = heal all) */
    char b[GS_MT_ID_MAX + 1];     /**< partition/heal: second node */
    char scope[GS_MT_ID_MAX + 1]; /**< rate/delay/hold/seed/clear: one sender, "" = all */
    double rate;
    uint64_t n1, n2;
} gs_mt_command;

/** Parse a control payload. 0, or -1 with a reason for a person in why. */
int gs_mt_command_parse(const uint8_t *text, size_t len, gs_mt_command *cmd, char *why,
                        size_t why_size);

/* ---- queue.c (callers hold inst->qlock unless said otherwise) ---- */

/** Allocate an entry of `len` payload bytes with host's allocator; NULL when out of memory. */
gs_mt_entry *gs_mt_entry_new(const gs_host *host, gs_mt_entry_kind kind, size_t len);
void gs_mt_entry_free(gs_mt_entry *e);

gs_mt_pair *gs_mt_pair_find(gs_mt_inst *inst, const char *from);

/**
 * Queue a message of pair with its fate: delay, duplicate, hold for reorder, and release
 * a message the pair held before (it goes right after this one). Takes e.
 */
void gs_mt_queue_message(gs_mt_inst *inst, gs_mt_pair *pair, gs_mt_entry *e, const gs_mt_fate *fate,
                         uint64_t hold_ms);
/** Queue a peer event of pair after everything the pair has queued. Takes e. */
void gs_mt_queue_event(gs_mt_inst *inst, gs_mt_pair *pair, gs_mt_entry *e);
/** Put a held message of pair back in line (after what the pair queued before it). */
void gs_mt_queue_release_held(gs_mt_inst *inst, gs_mt_pair *pair);
/** Drop every message of pair still queued (held included); events stay. */
void gs_mt_queue_purge_pair(gs_mt_inst *inst, gs_mt_pair *pair);

/** Start the delivery thread. Called without locks. GS_OK or GS_ERROR (err filled). */
gs_status gs_mt_delivery_start(gs_mt_inst *inst, gs_error *err);
/** Tell the delivery thread to stop after the callback it is in. Called without locks. */
void gs_mt_delivery_signal_stop(gs_mt_inst *inst);
/** Join the delivery thread if there is one, then free the queue and the pairs. Called
 * without locks, not on the delivery thread, after the instance left the started set. */
void gs_mt_delivery_reap(gs_mt_inst *inst);
/** 1 when the caller runs on inst's delivery thread. */
int gs_mt_on_delivery_thread(const gs_mt_inst *inst);

/* ---- bus.c ---- */

/** Join (creating it if needed) the bus named name. Registry lock inside. */
gs_status gs_mt_bus_join(gs_mt_inst *inst, const char *name, gs_error *err);
/** Leave the bus; the last instance frees it. The instance must be stopped. */
void gs_mt_bus_leave(gs_mt_inst *inst);
/** Enter the started set and bring up its links (peer events both ways). */
gs_status gs_mt_bus_start(gs_mt_inst *inst, gs_error *err);
/** Leave the started set: every linked peer gets a down event after the messages this
 * instance sent it. 1 when the instance was started. */
int gs_mt_bus_stop(gs_mt_inst *inst);
/** send() for a peer node id. */
gs_status gs_mt_bus_send(gs_mt_inst *inst, const char *to, gs_repl_msg_type type, uint64_t call_id,
                         const uint8_t *bytes, size_t len, gs_error *err);
/** send() to "$control". */
gs_status gs_mt_bus_control(gs_mt_inst *inst, const uint8_t *text, size_t len, gs_error *err);

#endif
