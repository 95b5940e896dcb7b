/*
 * memory transport: the process-global registry of named buses, links between the nodes of a
 * bus, partitions, peer events, send routing and the "$control" commands.
 *
 * Promise: two instances are linked while both are started on the same bus, either lists the
 * other in `peers` (or lists "*"), their node ids differ and no partition separates them.
 * Whenever a link comes up both sides get on_peer(other, 1) before any message of the link;
 * whenever it goes down the side(s) still running get on_peer(other, 0) after the messages
 * of the link they will still see. A stopping node's messages already queued to a peer are
 * still delivered (a graceful close); a partition drops everything in flight between the
 * two nodes, both ways. Every allocation a link needs (pair states, its up events and its
 * future down events) is made before the link counts as up, so a link that is up can always
 * go down without allocating.
 *
 * Ownership: the registry owns the buses; a bus is freed by the last instance leaving it,
 * with the free function of the host that created it.
 *
 * Threads: join/leave/start/stop on the core's main thread, send and control from any thread.
 * Lock order: registry -> bus -> a queue lock (one at a time).
 */
#include "memory_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MT_FAIL(host, err, code, ...) ((host)->error_set((err), 0, (code), __VA_ARGS__), GS_ERROR)

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static gs_mt_bus *registry; /* registry_lock */

static char *bus_strdup(const gs_mt_bus *bus, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = bus->alloc_fn(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* ---- registry ---- */

gs_status gs_mt_bus_join(gs_mt_inst *inst, const char *name, gs_error *err)
{
    const gs_host *host = inst->host;
    pthread_mutex_lock(&registry_lock);
    gs_mt_bus *bus = registry;
    while (bus && strcmp(bus->name, name) != 0)
        bus = bus->next;
    if (!bus) {
        bus = host->alloc(sizeof *bus);
        if (!bus) {
            pthread_mutex_unlock(&registry_lock);
            return MT_FAIL(host, err, "INTERNAL_ERROR",
                           "out of memory creating memory transport bus '%s'", name);
        }
        memset(bus, 0, sizeof *bus);
        bus->alloc_fn = host->alloc;
        bus->free_fn = host->free;
        bus->name = bus_strdup(bus, name);
        if (!bus->name || pthread_mutex_init(&bus->lock, NULL) != 0) {
            host->free(bus->name);
            host->free(bus);
            pthread_mutex_unlock(&registry_lock);
            return MT_FAIL(host, err, "INTERNAL_ERROR",
                           "cannot create memory transport bus '%s' (out of resources)", name);
        }
        bus->next = registry;
        registry = bus;
    }
    bus->refs++;
    pthread_mutex_lock(&bus->lock);
    inst->bus_next = bus->members;
    bus->members = inst;
    inst->bus = bus;
    pthread_mutex_unlock(&bus->lock);
    pthread_mutex_unlock(&registry_lock);
    return GS_OK;
}

static void free_partition(const gs_mt_bus *bus, gs_mt_partition *p)
{
    bus->free_fn(p->a);
    bus->free_fn(p->b);
    bus->free_fn(p);
}

void gs_mt_bus_leave(gs_mt_inst *inst)
{
    gs_mt_bus *bus = inst->bus;
    if (!bus)
        return;
    pthread_mutex_lock(&registry_lock);
    pthread_mutex_lock(&bus->lock);
    for (gs_mt_inst **pp = &bus->members; *pp; pp = &(*pp)->bus_next)
        if (*pp == inst) {
            *pp = inst->bus_next;
            break;
        }
    pthread_mutex_unlock(&bus->lock);
    inst->bus = NULL;
    inst->bus_next = NULL;
    if (--bus->refs == 0) {
        for (gs_mt_bus **bp = &registry; *bp; bp = &(*bp)->next)
            if (*bp == bus) {
                *bp = bus->next;
                break;
            }
        gs_mt_partition *p = bus->partitions;
        while (p) {
            gs_mt_partition *next = p->next;
            free_partition(bus, p);
            p = next;
        }
        pthread_mutex_destroy(&bus->lock);
        void (*free_fn)(void *) = bus->free_fn;
        free_fn(bus->name);
        free_fn(bus);
    }
    pthread_mutex_unlock(&registry_lock);
}

/* ---- who is linked (bus lock held) ---- */

static int lists(const gs_mt_inst *a, const char *id)
{
    if (a->peers_all)
        return 1;
    for (size_t i = 0; i < a->npeers; i++)
        if (strcmp(a->peers[i], id) == 0)
            return 1;
    return 0;
}

static gs_mt_partition **find_partition(gs_mt_bus *bus, const char *a, const char *b)
{
    for (gs_mt_partition **pp = &bus->partitions; *pp; pp = &(*pp)->next) {
        const gs_mt_partition *p = *pp;
        if ((strcmp(p->a, a) == 0 && strcmp(p->b, b) == 0) ||
            (strcmp(p->a, b) == 0 && strcmp(p->b, a) == 0))
            return pp;
    }
    return NULL;
}

static int connected(gs_mt_bus *bus, const gs_mt_inst *a, const gs_mt_inst *b)
{
    return a != b && a->started && b->started && strcmp(a->node_id, b->node_id) != 0 &&
           (lists(a, b->node_id) || lists(b, a->node_id)) &&
           !find_partition(bus, a->node_id, b->node_id);
}

static gs_mt_inst *started_member(gs_mt_bus *bus, const char *id)
{
    for (gs_mt_inst *m = bus->members; m; m = m->bus_next)
        if (m->started && strcmp(m->node_id, id) == 0)
            return m;
    return NULL;
}

/* ---- links coming up and going down (bus lock held) ---- */

/* Everything one link needs, allocated before it counts as up. x and y are both started. */
typedef struct link_kit {
    gs_mt_inst *x, *y;
    gs_mt_pair *new_px, *new_py; /* pair state at x (from y), at y (from x), when missing */
    gs_mt_entry *up_x, *down_x, *up_y, *down_y;
} link_kit;

static gs_mt_pair *pair_new(gs_mt_inst *recv, const char *from)
{
    gs_mt_pair *p = recv->host->alloc(sizeof *p);
    if (!p)
        return NULL;
    memset(p, 0, sizeof *p);
    size_t n = strlen(from) + 1;
    p->from = recv->host->alloc(n);
    if (!p->from) {
        recv->host->free(p);
        return NULL;
    }
    memcpy(p->from, from, n);
    return p;
}

static void pair_free(gs_mt_inst *recv, gs_mt_pair *p)
{
    if (!p)
        return;
    recv->host->free(p->from);
    recv->host->free(p);
}

static int has_pair(gs_mt_inst *recv, const char *from)
{
    pthread_mutex_lock(&recv->qlock);
    int has = gs_mt_pair_find(recv, from) != NULL;
    pthread_mutex_unlock(&recv->qlock);
    return has;
}

static void kit_free(link_kit *k)
{
    pair_free(k->x, k->new_px);
    pair_free(k->y, k->new_py);
    gs_mt_entry_free(k->up_x);
    gs_mt_entry_free(k->down_x);
    gs_mt_entry_free(k->up_y);
    gs_mt_entry_free(k->down_y);
    memset(k, 0, sizeof *k);
}

static int kit_prepare(link_kit *k, gs_mt_inst *x, gs_mt_inst *y)
{
    memset(k, 0, sizeof *k);
    k->x = x;
    k->y = y;
    int ok = 1;
    if (!has_pair(x, y->node_id))
        ok = (k->new_px = pair_new(x, y->node_id)) != NULL;
    if (ok && !has_pair(y, x->node_id))
        ok = (k->new_py = pair_new(y, x->node_id)) != NULL;
    ok = ok && (k->up_x = gs_mt_entry_new(x->host, GS_MT_PEER_UP, 0));
    ok = ok && (k->down_x = gs_mt_entry_new(x->host, GS_MT_PEER_DOWN, 0));
    ok = ok && (k->up_y = gs_mt_entry_new(y->host, GS_MT_PEER_UP, 0));
    ok = ok && (k->down_y = gs_mt_entry_new(y->host, GS_MT_PEER_DOWN, 0));
    if (!ok)
        kit_free(k);
    return ok ? 0 : -1;
}

/* recv learns that sender is up. Consumes new_pair (when set), up and down. */
static void half_up(gs_mt_inst *recv, const gs_mt_inst *sender, gs_mt_pair *new_pair,
                    gs_mt_entry *up, gs_mt_entry *down)
{
    pthread_mutex_lock(&recv->qlock);
    gs_mt_pair *p = gs_mt_pair_find(recv, sender->node_id);
    if (!p) {
        p = new_pair;
        p->next = recv->pairs;
        recv->pairs = p;
    } else {
        pair_free(recv, new_pair);
    }
    /* A new link starts the pair's stream afresh: the same seed gives the same fates. */
    gs_mt_rng_seed(&p->rng, sender->faults.seed, sender->node_id, recv->node_id);
    gs_mt_entry_free(p->down_reserve);
    p->down_reserve = down;
    gs_mt_queue_event(recv, p, up);
    pthread_mutex_unlock(&recv->qlock);
}

static void kit_commit(link_kit *k)
{
    half_up(k->x, k->y, k->new_px, k->up_x, k->down_x);
    half_up(k->y, k->x, k->new_py, k->up_y, k->down_y);
    k->x->host->log(k->x->host, GS_LOG_DEBUG, GS_MT_COMPONENT, "bus '%s': link %s <-> %s is up",
                    k->x->bus->name, k->x->node_id, k->y->node_id);
    memset(k, 0, sizeof *k);
}

/* recv learns that the node `from` is gone, after the messages of `from` it still has queued
 * (a partition purges those first). */
static void half_down(gs_mt_inst *recv, const char *from)
{
    pthread_mutex_lock(&recv->qlock);
    gs_mt_pair *p = gs_mt_pair_find(recv, from);
    if (p) {
        gs_mt_queue_release_held(recv, p);
        if (p->down_reserve) {
            gs_mt_queue_event(recv, p, p->down_reserve);
            p->down_reserve = NULL;
        }
    }
    pthread_mutex_unlock(&recv->qlock);
}

/* Drop whatever `from` still has queued at recv (a partition). */
static void purge_from(gs_mt_inst *recv, const char *from)
{
    pthread_mutex_lock(&recv->qlock);
    gs_mt_pair *p = gs_mt_pair_find(recv, from);
    if (p)
        gs_mt_queue_purge_pair(recv, p);
    pthread_mutex_unlock(&recv->qlock);
}

/* ---- start and stop ---- */

gs_status gs_mt_bus_start(gs_mt_inst *inst, gs_error *err)
{
    gs_mt_bus *bus = inst->bus;
    const gs_host *host = inst->host;
    pthread_mutex_lock(&bus->lock);
    for (gs_mt_inst *m = bus->members; m; m = m->bus_next)
        if (m != inst && m->started && strcmp(m->node_id, inst->node_id) == 0) {
            pthread_mutex_unlock(&bus->lock);
            return MT_FAIL(host, err, "INVALID_CONFIG",
                           "memory transport: node id '%s' is already started on bus '%s'; "
                           "give each node its own id, or put them on different buses",
                           inst->node_id, bus->name);
        }
    inst->started = 1;
    size_t n = 0;
    for (gs_mt_inst *m = bus->members; m; m = m->bus_next)
        n += connected(bus, inst, m);
    link_kit *kits = NULL;
    int ok = 1;
    if (n) {
        kits = host->alloc(n * sizeof *kits);
        ok = kits != NULL;
    }
    size_t prepared = 0;
    for (gs_mt_inst *m = bus->members; ok && m; m = m->bus_next)
        if (connected(bus, inst, m)) {
            if (kit_prepare(&kits[prepared], inst, m) != 0)
                ok = 0;
            else
                prepared++;
        }
    if (!ok) {
        for (size_t i = 0; i < prepared; i++)
            kit_free(&kits[i]);
        host->free(kits);
        inst->started = 0;
        pthread_mutex_unlock(&bus->lock);
        return MT_FAIL(host, err, "INTERNAL_ERROR",
                       "out of memory linking memory transport node '%s' to its %zu peer%s",
                       inst->node_id, n, n == 1 ? "" : "s");
    }
    for (size_t i = 0; i < prepared; i++)
        kit_commit(&kits[i]);
    host->free(kits);
    pthread_mutex_unlock(&bus->lock);
    host->log(host, GS_LOG_INFO, GS_MT_COMPONENT,
              "node '%s' started on bus '%s', %zu peer%s linked", inst->node_id, bus->name, n,
              n == 1 ? "" : "s");
    return GS_OK;
}

int gs_mt_bus_stop(gs_mt_inst *inst)
{
    gs_mt_bus *bus = inst->bus;
    pthread_mutex_lock(&bus->lock);
    if (!inst->started) {
        pthread_mutex_unlock(&bus->lock);
        return 0;
    }
    for (gs_mt_inst *m = bus->members; m; m = m->bus_next)
        if (connected(bus, inst, m))
            half_down(m, inst->node_id);
    inst->started = 0;
    pthread_mutex_unlock(&bus->lock);
    return 1;
}

/* ---- send ---- */

gs_status gs_mt_bus_send(gs_mt_inst *inst, const char *to, gs_repl_msg_type type, uint64_t call_id,
                         const uint8_t *bytes, size_t len, gs_error *err)
{
    const gs_host *host = inst->host;
    gs_mt_bus *bus = inst->bus;
    gs_mt_entry *e = gs_mt_entry_new(host, GS_MT_MESSAGE, len);
    if (!e)
        return MT_FAIL(host, err, "INTERNAL_ERROR",
                       "out of memory queueing a %zu-byte message from '%s' to '%s'", len,
                       inst->node_id, to);
    e->type = type;
    e->call_id = call_id;
    if (len)
        memcpy(e->bytes, bytes, len);

    gs_status st = GS_OK;
    pthread_mutex_lock(&bus->lock);
    gs_mt_inst *peer = inst->started ? started_member(bus, to) : NULL;
    if (!inst->started) {
        st = MT_FAIL(host, err, "TRANSPORT_ERROR",
                     "memory transport '%s' is stopped: nothing can be sent until it starts",
                     inst->node_id);
    } else if (strcmp(to, inst->node_id) == 0) {
        st = MT_FAIL(host, err, "TRANSPORT_ERROR", "node '%s' cannot send to itself", to);
    } else if (!peer) {
        st = MT_FAIL(host, err, "TRANSPORT_ERROR",
                     "peer '%s' is not connected: no node of that id is started on bus '%s'", to,
                     bus->name);
    } else if (find_partition(bus, inst->node_id, to)) {
        st = MT_FAIL(host, err, "TRANSPORT_ERROR",
                     "peer '%s' is not connected: bus '%s' is partitioned between '%s' and '%s'",
                     to, bus->name, inst->node_id, to);
    } else if (!connected(bus, inst, peer)) {
        st = MT_FAIL(host, err, "TRANSPORT_ERROR",
                     "peer '%s' is not connected: neither '%s' nor '%s' lists the other in peers",
                     to, inst->node_id, to);
    }
    if (st != GS_OK) {
        pthread_mutex_unlock(&bus->lock);
        gs_mt_entry_free(e);
        return st;
    }
    gs_mt_faults faults = inst->faults;
    pthread_mutex_lock(&peer->qlock);
    gs_mt_pair *pair = gs_mt_pair_find(peer, inst->node_id);
    if (len > peer->max_queue_bytes) {
        st = MT_FAIL(host, err, "TRANSPORT_ERROR",
                     "a %zu-byte message can never fit the %llu-byte queue of '%s' "
                     "(its max_queue_bytes)",
                     len, (unsigned long long)peer->max_queue_bytes, to);
    } else if (peer->queued_bytes + len > peer->max_queue_bytes) {
        host->error_set(err, 0, "TRANSPORT_ERROR",
                        "the queue of '%s' is full (%llu of %llu bytes waiting): retry later", to,
                        (unsigned long long)peer->queued_bytes,
                        (unsigned long long)peer->max_queue_bytes);
        st = GS_AGAIN;
    } else if (!pair) {
        st = MT_FAIL(host, err, "INTERNAL_ERROR",
                     "memory transport: link %s -> %s is up without its pair state", inst->node_id,
                     to);
    }
    if (st != GS_OK) {
        pthread_mutex_unlock(&peer->qlock);
        pthread_mutex_unlock(&bus->lock);
        gs_mt_entry_free(e);
        return st;
    }
    gs_mt_fate fate;
    gs_mt_fate_draw(&faults, &pair->rng, type, &fate);
    if (fate.drop) {
        atomic_fetch_add(&inst->dropped, 1);
        gs_mt_entry_free(e);
    } else {
        if (fate.duplicate)
            atomic_fetch_add(&inst->duplicated, 1);
        if (fate.reorder && !pair->held)
            atomic_fetch_add(&inst->reordered, 1);
        gs_mt_queue_message(peer, pair, e, &fate, faults.hold_ms);
    }
    pthread_mutex_unlock(&peer->qlock);
    pthread_mutex_unlock(&bus->lock);
    return GS_OK;
}

/* ---- control ---- */

/* Heal the partitions matching a/b ("" = all). Bus lock held. Links that are now up come
 * up; when one cannot (out of memory) its partition stays and -1 is returned. */
static int heal(gs_mt_bus *bus, const char *a, const char *b)
{
    gs_mt_partition **pp = &bus->partitions;
    while (*pp) {
        gs_mt_partition *p = *pp;
        int match = !*a || (strcmp(p->a, a) == 0 && strcmp(p->b, b) == 0) ||
                    (strcmp(p->a, b) == 0 && strcmp(p->b, a) == 0);
        if (!match) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        gs_mt_inst *x = started_member(bus, p->a);
        gs_mt_inst *y = started_member(bus, p->b);
        if (x && y && connected(bus, x, y)) {
            link_kit k;
            if (kit_prepare(&k, x, y) != 0) {
                p->next = *pp;
                *pp = p;
                return -1;
            }
            kit_commit(&k);
        }
        free_partition(bus, p);
    }
    return 0;
}

static gs_status partition(gs_mt_inst *inst, gs_mt_bus *bus, const char *a, const char *b,
                           gs_error *err)
{
    if (find_partition(bus, a, b))
        return GS_OK;
    gs_mt_partition *p = bus->alloc_fn(sizeof *p);
    if (p) {
        memset(p, 0, sizeof *p);
        p->a = bus_strdup(bus, a);
        p->b = bus_strdup(bus, b);
    }
    if (!p || !p->a || !p->b) {
        if (p)
            free_partition(bus, p);
        return MT_FAIL(inst->host, err, "INTERNAL_ERROR", "out of memory partitioning %s and %s", a,
                       b);
    }
    gs_mt_inst *x = started_member(bus, a);
    gs_mt_inst *y = started_member(bus, b);
    int was_linked = x && y && connected(bus, x, y);
    p->next = bus->partitions;
    bus->partitions = p;
    /* In flight both ways is lost, including what a node that stopped left queued. */
    if (x)
        purge_from(x, b);
    if (y)
        purge_from(y, a);
    if (was_linked) {
        half_down(x, b);
        half_down(y, a);
    }
    return GS_OK;
}

/* Re-seed the streams of every pair sent by `from` (bus lock held). */
static void reseed_from(gs_mt_bus *bus, const char *from, uint64_t seed)
{
    for (gs_mt_inst *r = bus->members; r; r = r->bus_next) {
        if (!r->started)
            continue;
        pthread_mutex_lock(&r->qlock);
        gs_mt_pair *p = gs_mt_pair_find(r, from);
        if (p)
            gs_mt_rng_seed(&p->rng, seed, from, r->node_id);
        pthread_mutex_unlock(&r->qlock);
    }
}

static void apply_faults(gs_mt_bus *bus, gs_mt_inst *m, const gs_mt_command *c)
{
    gs_mt_faults *f = &m->faults;
    switch (c->kind) {
    case GS_MT_CMD_DROP: f->drop = c->rate; break;
    case GS_MT_CMD_DUPLICATE: f->duplicate = c->rate; break;
    case GS_MT_CMD_REORDER: f->reorder = c->rate; break;
    case GS_MT_CMD_DELAY:
        f->delay_min = c->n1;
        f->delay_max = c->n2;
        break;
    case GS_MT_CMD_HOLD: f->hold_ms = c->n1; break;
    case GS_MT_CMD_SEED:
        f->seed = c->n1;
        reseed_from(bus, m->node_id, c->n1);
        break;
    case GS_MT_CMD_CLEAR:
        f->drop = f->duplicate = f->reorder = 0.0;
        f->delay_min = f->delay_max = 0;
        break;
    case GS_MT_CMD_PARTITION:
    case GS_MT_CMD_HEAL: break;
    }
}

gs_status gs_mt_bus_control(gs_mt_inst *inst, const uint8_t *text, size_t len, gs_error *err)
{
    const gs_host *host = inst->host;
    gs_mt_command cmd;
    char why[384];
    if (gs_mt_command_parse(text, len, &cmd, why, sizeof why) != 0)
        return MT_FAIL(host, err, "TRANSPORT_ERROR", "memory transport control: %s", why);
    gs_mt_bus *bus = inst->bus;
    gs_status st = GS_OK;
    pthread_mutex_lock(&bus->lock);
    switch (cmd.kind) {
    case GS_MT_CMD_PARTITION: st = partition(inst, bus, cmd.a, cmd.b, err); break;
    case GS_MT_CMD_HEAL:
        if (heal(bus, cmd.a, cmd.b) != 0)
            st = MT_FAIL(host, err, "INTERNAL_ERROR",
                         "out of memory healing bus '%s': some partitions remain", bus->name);
        break;
    default: {
        size_t matched = 0;
        for (gs_mt_inst *m = bus->members; m; m = m->bus_next)
            if (!cmd.scope[0] || strcmp(m->node_id, cmd.scope) == 0) {
                apply_faults(bus, m, &cmd);
                matched++;
            }
        if (cmd.scope[0] && !matched)
            st =
                MT_FAIL(host, err, "TRANSPORT_ERROR",
                        "memory transport control: no node '%s' on bus '%s'", cmd.scope, bus->name);
        else if (cmd.kind == GS_MT_CMD_CLEAR && !cmd.scope[0] && heal(bus, "", "") != 0)
            st = MT_FAIL(host, err, "INTERNAL_ERROR",
                         "out of memory healing bus '%s': some partitions remain", bus->name);
        break;
    }
    }
    pthread_mutex_unlock(&bus->lock);
    if (st == GS_OK)
        host->log(host, GS_LOG_INFO, GS_MT_COMPONENT, "bus '%s': control from '%s': %.*s",
                  bus->name, inst->node_id, (int)len, (const char *)text);
    return st;
}
