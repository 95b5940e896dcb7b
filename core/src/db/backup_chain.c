/*
 * Chain records, chain queries and stored files: see backup_chain.h.
 */
#include "backup_chain.h"

#include "../base/alloc.h"
#include "../base/error.h"
#include "../base/sha256.h"
#include "backup_wal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Places in the list of chains tried before giving up (another group took them all). */
#define HEAD_APPEND_ATTEMPTS 8

int64_t gs_backup_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void gs_backup_random_hex(char *out, size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t b[64];
    if (nbytes > sizeof b)
        nbytes = sizeof b;
    gs_backup_random_bytes(b, nbytes);
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[2 * nbytes] = 0;
}

char *gs_chain_log_name(const char *chain_name, const char *chain_id)
{
    size_t n = strlen(chain_name) + strlen(chain_id) + 2;
    char *s = gs_malloc(n);
    if (s)
        snprintf(s, n, "%s.%s", chain_name, chain_id);
    return s;
}

/* ---- records ---- */

void gs_chain_record_clear(gs_chain_record *r)
{
    if (!r)
        return;
    gs_free(r->chain_id);
    gs_free(r->name);
    gs_free(r->run_id);
    gs_free(r->fingerprint);
    memset(r, 0, sizeof *r);
}

gs_status gs_chain_record_copy(gs_chain_record *dst, const gs_chain_record *src, gs_error *err)
{
    *dst = *src;
    dst->chain_id = gs_strdup(src->chain_id);
    dst->name = gs_strdup(src->name);
    dst->run_id = gs_strdup(src->run_id);
    dst->fingerprint = src->fingerprint ? gs_strdup(src->fingerprint) : NULL;
    if (!dst->chain_id || !dst->name || !dst->run_id || (src->fingerprint && !dst->fingerprint)) {
        gs_chain_record_clear(dst);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    return GS_OK;
}

json_t *gs_chain_record_to_json(const gs_chain_record *r)
{
    json_t *j = json_object();
    if (!j)
        return NULL;
    int bad = 0;
#define SET(k, v) bad |= json_object_set_new(j, k, v)
    SET("kind", json_string(r->kind == GS_CHAIN_FULL ? "full" : "change"));
    SET("chainId", json_string(r->chain_id));
    SET("name", json_string(r->name));
    SET("runId", json_string(r->run_id));
    if (r->kind == GS_CHAIN_FULL) {
        SET("finishedAt", json_integer(r->finished_at));
    } else {
        SET("sequence", json_integer(r->sequence));
        json_t *p = json_pack(
            "{sIsIsIsIsI}", "logSequence", (json_int_t)r->position.log_sequence, "salt1",
            (json_int_t)r->position.salt1, "salt2", (json_int_t)r->position.salt2, "firstFrame",
            (json_int_t)r->position.first_frame, "lastFrame", (json_int_t)r->position.last_frame);
        SET("position", p);
        SET("capturedAt", json_integer(r->captured_at));
        SET("frameCount", json_integer(r->frame_count));
    }
    SET("pieceCount", json_integer(r->piece_count));
    SET("pieceBytes", json_integer(r->piece_bytes));
    SET("bytesWritten", json_integer(r->bytes_written));
    if (r->kind == GS_CHAIN_CHANGE)
        SET("checkpointed", json_boolean(r->checkpointed));
    if (r->fingerprint)
        SET("fingerprint", json_string(r->fingerprint));
#undef SET
    if (bad) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static int whole(const json_t *v, int64_t min, int64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < min)
        return 0;
    *out = json_integer_value(v);
    return 1;
}

static int text(const json_t *obj, const char *key, char **out)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        return 0;
    *out = gs_strdup(json_string_value(v));
    return *out != NULL;
}

gs_status gs_chain_record_from_json(const json_t *j, gs_chain_record *out, gs_error *err)
{
    memset(out, 0, sizeof *out);
    const char *kind = json_string_value(json_object_get(j, "kind"));
    if (!json_is_object(j) || !kind || (strcmp(kind, "full") && strcmp(kind, "change")))
        return GS_DECLINED;
    out->kind = strcmp(kind, "full") == 0 ? GS_CHAIN_FULL : GS_CHAIN_CHANGE;
    int ok = text(j, "chainId", &out->chain_id) && text(j, "name", &out->name) &&
             text(j, "runId", &out->run_id) &&
             whole(json_object_get(j, "pieceCount"), 0, &out->piece_count) &&
             whole(json_object_get(j, "pieceBytes"), 1, &out->piece_bytes) &&
             whole(json_object_get(j, "bytesWritten"), 0, &out->bytes_written);
    const json_t *fp = json_object_get(j, "fingerprint");
    if (ok && fp && !json_is_null(fp))
        ok = text(j, "fingerprint", &out->fingerprint);
    if (ok && out->kind == GS_CHAIN_FULL) {
        ok = whole(json_object_get(j, "finishedAt"), 0, &out->finished_at);
    } else if (ok) {
        const json_t *p = json_object_get(j, "position");
        const json_t *cp = json_object_get(j, "checkpointed");
        gs_chain_position *pos = &out->position;
        ok = whole(json_object_get(j, "sequence"), 1, &out->sequence) &&
             whole(json_object_get(j, "capturedAt"), 0, &out->captured_at) &&
             whole(json_object_get(j, "frameCount"), 1, &out->frame_count) && json_is_boolean(cp) &&
             json_is_object(p) && whole(json_object_get(p, "logSequence"), 0, &pos->log_sequence) &&
             whole(json_object_get(p, "salt1"), 0, &pos->salt1) &&
             whole(json_object_get(p, "salt2"), 0, &pos->salt2) &&
             whole(json_object_get(p, "firstFrame"), 1, &pos->first_frame) &&
             whole(json_object_get(p, "lastFrame"), 1, &pos->last_frame) &&
             pos->last_frame >= pos->first_frame;
        out->checkpointed = ok && json_is_true(cp);
    }
    if (!ok) {
        int full = out->kind == GS_CHAIN_FULL;
        gs_chain_record_clear(out);
        return gs_error_set(err, 0, "BACKUP_DESTINATION_ERROR",
                            "a %s record is missing fields every chain record holds, so no "
                            "restore can use its chain until that record is put back",
                            full ? "full copy" : "change piece");
    }
    return GS_OK;
}

/* ---- reading chains ---- */

static void chain_clear(gs_chain *c)
{
    gs_free(c->chain_id);
    gs_free(c->previous_chain_id);
    if (c->base) {
        gs_chain_record_clear(c->base);
        gs_free(c->base);
    }
    for (size_t i = 0; i < c->change_count; i++)
        gs_chain_record_clear(&c->changes[i]);
    gs_free(c->changes);
    memset(c, 0, sizeof *c);
}

void gs_chain_list_free(gs_chain_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->count; i++)
        chain_clear(&l->items[i]);
    gs_free(l->items);
    l->items = NULL;
    l->count = 0;
}

/* Read one piece and parse it as JSON (NULL with err set). */
static json_t *read_json(gs_backup_dest *d, const char *name, int64_t index, gs_error *err)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    gs_status st = gs_backup_dest_read(d, name, (uint64_t)index, &bytes, &len, err);
    if (st != GS_OK)
        return NULL;
    json_error_t je;
    json_t *j = json_loadb((const char *)bytes, len, 0, &je);
    gs_free(bytes);
    if (!j)
        gs_error_set(err, 0, "BACKUP_DESTINATION_ERROR",
                     "record %lld of '%s' is not a record a backup wrote (%s)", (long long)index,
                     name, je.text);
    return j;
}

/* A line of the list of chains: {chainId, startedAt, previousChainId?}. */
static int parse_head(const json_t *j, gs_chain *c)
{
    const char *id = json_string_value(json_object_get(j, "chainId"));
    const json_t *prev = json_object_get(j, "previousChainId");
    if (!id || !whole(json_object_get(j, "startedAt"), 0, &c->started_at) ||
        (prev && !json_is_string(prev) && !json_is_null(prev)))
        return 0;
    c->chain_id = gs_strdup(id);
    if (json_is_string(prev))
        c->previous_chain_id = gs_strdup(json_string_value(prev));
    return 1;
}

static int change_cmp(const void *a, const void *b)
{
    const gs_chain_record *x = a, *y = b;
    return x->sequence < y->sequence ? -1 : x->sequence > y->sequence;
}

static gs_status read_chain_records(gs_backup_dest *d, const char *chain_name, gs_chain *c,
                                    gs_error *err)
{
    char *log = gs_chain_log_name(chain_name, c->chain_id);
    if (!log)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    gs_backup_piece *pieces = NULL;
    size_t n = 0;
    gs_status st = gs_backup_dest_list(d, log, &pieces, &n, err);
    if (st == GS_OK && n && !(c->changes = gs_calloc(n, sizeof *c->changes)))
        st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    for (size_t i = 0; st == GS_OK && i < n; i++) {
        if (i && pieces[i].index == pieces[i - 1].index)
            continue;
        json_t *j = read_json(d, log, (int64_t)pieces[i].index, err);
        if (!j) {
            st = GS_ERROR;
            break;
        }
        gs_chain_record r;
        gs_status rs = gs_chain_record_from_json(j, &r, err);
        json_decref(j);
        if (rs == GS_DECLINED)
            continue;
        if (rs != GS_OK) {
            gs_error_prefix(err, "'%s' piece %llu", log, (unsigned long long)pieces[i].index);
            st = GS_ERROR;
            break;
        }
        if (r.kind == GS_CHAIN_FULL && !c->base) {
            c->base = gs_malloc(sizeof *c->base);
            if (!c->base) {
                gs_chain_record_clear(&r);
                st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
                break;
            }
            *c->base = r;
        } else if (r.kind == GS_CHAIN_CHANGE) {
            c->changes[c->change_count++] = r;
        } else {
            gs_chain_record_clear(&r);
        }
    }
    if (c->change_count > 1)
        qsort(c->changes, c->change_count, sizeof *c->changes, change_cmp);
    gs_free(pieces);
    gs_free(log);
    return st;
}

gs_status gs_chain_read_all(gs_backup_dest *d, const char *chain_name, gs_chain_list *out,
                            gs_error *err)
{
    memset(out, 0, sizeof *out);
    gs_backup_piece *pieces = NULL;
    size_t n = 0;
    if (gs_backup_dest_list(d, chain_name, &pieces, &n, err) != GS_OK)
        return GS_ERROR;
    gs_status st = GS_OK;
    if (n && !(out->items = gs_calloc(n, sizeof *out->items)))
        st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    /* newest first: walk the list from its highest index */
    for (size_t k = n; st == GS_OK && k-- > 0;) {
        if (k + 1 < n && pieces[k].index == pieces[k + 1].index)
            continue;
        json_t *j = read_json(d, chain_name, (int64_t)pieces[k].index, err);
        if (!j) {
            st = GS_ERROR;
            break;
        }
        gs_chain *c = &out->items[out->count];
        int ok = parse_head(j, c);
        json_decref(j);
        if (!ok) {
            chain_clear(c);
            continue;
        }
        out->count++;
        if (!c->chain_id || read_chain_records(d, chain_name, c, err) != GS_OK) {
            if (!c->chain_id)
                gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
            st = GS_ERROR;
        }
    }
    gs_free(pieces);
    if (st != GS_OK)
        gs_chain_list_free(out);
    return st;
}

json_t *gs_chain_list_to_json(const gs_chain_list *l)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < l->count; i++) {
        const gs_chain *c = &l->items[i];
        json_t *o = json_object();
        json_t *changes = json_array();
        if (!o || !changes) {
            json_decref(o);
            json_decref(changes);
            json_decref(arr);
            return NULL;
        }
        json_object_set_new(o, "chainId", json_string(c->chain_id));
        json_object_set_new(o, "startedAt", json_integer(c->started_at));
        if (c->previous_chain_id)
            json_object_set_new(o, "previousChainId", json_string(c->previous_chain_id));
        if (c->base)
            json_object_set_new(o, "base", gs_chain_record_to_json(c->base));
        for (size_t k = 0; k < c->change_count; k++)
            json_array_append_new(changes, gs_chain_record_to_json(&c->changes[k]));
        json_object_set_new(o, "changes", changes);
        json_array_append_new(arr, o);
    }
    return arr ? json_pack("{so}", "chains", arr) : NULL;
}

/* ---- appending ---- */

static uint8_t *json_bytes(const json_t *j, size_t *len)
{
    char *s = json_dumps(j, JSON_COMPACT);
    if (!s)
        return NULL;
    *len = strlen(s);
    uint8_t *b = gs_malloc(*len ? *len : 1);
    if (b)
        memcpy(b, s, *len);
    free(s);
    return b;
}

gs_status gs_chain_append_record(gs_backup_dest *d, const char *chain_name,
                                 const gs_chain_record *r, int64_t index, gs_error *err)
{
    char *log = gs_chain_log_name(chain_name, r->chain_id);
    json_t *j = gs_chain_record_to_json(r);
    size_t len = 0;
    uint8_t *b = j ? json_bytes(j, &len) : NULL;
    json_decref(j);
    if (!log || !b) {
        gs_free(log);
        gs_free(b);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    gs_status st = gs_backup_dest_write_take(d, log, (uint64_t)index, b, len, err);
    gs_free(log);
    return st;
}

static gs_status head_id_at(gs_backup_dest *d, const char *chain_name, int64_t index, char **id,
                            gs_error *err)
{
    *id = NULL;
    json_t *j = read_json(d, chain_name, index, err);
    if (!j)
        return GS_ERROR;
    gs_chain c;
    memset(&c, 0, sizeof c);
    if (parse_head(j, &c)) {
        *id = c.chain_id;
        c.chain_id = NULL;
    }
    chain_clear(&c);
    json_decref(j);
    return GS_OK;
}

gs_status gs_chain_append_head(gs_backup_dest *d, const char *chain_name, const char *chain_id,
                               int64_t started_at, const char *previous_chain_id, int64_t *index,
                               gs_error *err)
{
    gs_backup_piece *pieces = NULL;
    size_t n = 0;
    if (gs_backup_dest_list(d, chain_name, &pieces, &n, err) != GS_OK)
        return GS_ERROR;
    int64_t next = n ? (int64_t)pieces[n - 1].index + 1 : 0;
    gs_free(pieces);
    json_t *j = json_pack("{sssI}", "chainId", chain_id, "startedAt", (json_int_t)started_at);
    if (j && previous_chain_id)
        json_object_set_new(j, "previousChainId", json_string(previous_chain_id));
    size_t len = 0;
    uint8_t *tmpl = j ? json_bytes(j, &len) : NULL;
    json_decref(j);
    if (!tmpl)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    int claim = gs_backup_dest_can_claim(d);
    gs_status st = GS_ERROR;
    for (int attempt = 0; attempt < HEAD_APPEND_ATTEMPTS; attempt++, next++) {
        uint8_t *b = gs_malloc(len ? len : 1);
        if (!b) {
            st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
            break;
        }
        memcpy(b, tmpl, len);
        if (claim) {
            int stored = 0;
            if (gs_backup_dest_claim_take(d, chain_name, (uint64_t)next, b, len, &stored, err) !=
                GS_OK)
                break;
            if (stored) {
                st = GS_OK;
                break;
            }
            continue;
        }
        if (gs_backup_dest_write_take(d, chain_name, (uint64_t)next, b, len, err) != GS_OK)
            break;
        char *id = NULL;
        if (head_id_at(d, chain_name, next, &id, err) != GS_OK)
            break;
        int mine = id && strcmp(id, chain_id) == 0;
        gs_free(id);
        if (mine) {
            st = GS_OK;
            break;
        }
    }
    gs_free(tmpl);
    if (st == GS_OK) {
        *index = next;
        return GS_OK;
    }
    if (!err->code[0])
        gs_error_set(err, 0, "BACKUP_DESTINATION_ERROR",
                     "another chain took every one of the %d places tried for chain '%s' in "
                     "'%s'; point one replication group at this chain name and give any other "
                     "group a chain_name of its own",
                     HEAD_APPEND_ATTEMPTS, chain_id, chain_name);
    return GS_ERROR;
}

gs_status gs_chain_is_listed(gs_backup_dest *d, const char *chain_name, const char *chain_id,
                             int64_t head_index, int *listed, gs_error *err)
{
    *listed = 0;
    if (head_index >= 0) {
        char *id = NULL;
        gs_error e;
        gs_error_init(&e);
        if (head_id_at(d, chain_name, head_index, &id, &e) == GS_OK && id) {
            *listed = strcmp(id, chain_id) == 0;
            gs_free(id);
            return GS_OK; /* that place holds a chain: one read settles it */
        }
        gs_free(id);
    }
    gs_backup_piece *pieces = NULL;
    size_t n = 0;
    if (gs_backup_dest_list(d, chain_name, &pieces, &n, err) != GS_OK)
        return GS_ERROR;
    gs_status st = GS_OK;
    for (size_t i = 0; i < n && !*listed; i++) {
        char *id = NULL;
        if (head_id_at(d, chain_name, (int64_t)pieces[i].index, &id, err) != GS_OK) {
            st = GS_ERROR;
            break;
        }
        *listed = id && strcmp(id, chain_id) == 0;
        gs_free(id);
    }
    gs_free(pieces);
    return st;
}

/* ---- restore selection ---- */

void gs_chain_plan_free(gs_chain_plan *p)
{
    if (!p)
        return;
    gs_free(p->chain_id);
    gs_chain_record_clear(&p->base);
    for (size_t i = 0; i < p->change_count; i++)
        gs_chain_record_clear(&p->changes[i]);
    gs_free(p->changes);
    memset(p, 0, sizeof *p);
}

static void iso_time(int64_t ms, char *buf, size_t cap)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, cap, "%s.%03dZ", base, (int)(ms % 1000));
}

/* The first sequence missing from changes 1..n (0 when none). */
static int64_t first_missing(const gs_chain_record *changes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (changes[i].sequence != (int64_t)i + 1)
            return (int64_t)i + 1;
    return 0;
}

gs_status gs_chain_plan_restore(const gs_chain_list *l, int64_t moment, gs_chain_plan *out,
                                gs_error *err)
{
    memset(out, 0, sizeof *out);
    const gs_chain *best = NULL;
    int64_t earliest = -1;
    for (size_t i = 0; i < l->count; i++) {
        const gs_chain *c = &l->items[i];
        if (!c->base)
            continue;
        if (earliest < 0 || c->base->finished_at < earliest)
            earliest = c->base->finished_at;
        if (c->base->finished_at <= moment &&
            (!best || c->base->finished_at > best->base->finished_at))
            best = c;
    }
    if (!best) {
        char when[40], first[40];
        iso_time(moment, when, sizeof when);
        if (earliest < 0)
            return gs_error_set(err, 0, "BACKUP_CHAIN_BROKEN",
                                "the destination holds no full copy, so no moment can be "
                                "restored");
        iso_time(earliest, first, sizeof first);
        return gs_error_set(err, 0, "BACKUP_CHAIN_BROKEN",
                            "the destination holds no full copy finished at or before %s; the "
                            "earliest moment it can restore is %s",
                            when, first);
    }
    /* changes are sorted by sequence; select by capture time */
    size_t sel = 0;
    for (size_t i = 0; i < best->change_count; i++)
        sel += best->changes[i].captured_at <= moment;
    gs_chain_record *pick = sel ? gs_calloc(sel, sizeof *pick) : NULL;
    if (sel && !pick)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    out->changes = pick;
    size_t k = 0;
    for (size_t i = 0; i < best->change_count; i++) {
        if (best->changes[i].captured_at > moment)
            continue;
        if (gs_chain_record_copy(&pick[k], &best->changes[i], err) != GS_OK) {
            gs_chain_plan_free(out);
            return GS_ERROR;
        }
        out->change_count = ++k;
    }
    int64_t missing = first_missing(out->changes, out->change_count);
    if (missing) {
        gs_chain_plan_free(out);
        return gs_error_set(err, 0, "BACKUP_CHAIN_BROKEN",
                            "chain '%s' is missing change piece %lld, so it cannot be applied "
                            "past piece %lld",
                            best->chain_id, (long long)missing, (long long)missing - 1);
    }
    if (!(out->chain_id = gs_strdup(best->chain_id)) ||
        gs_chain_record_copy(&out->base, best->base, err) != GS_OK) {
        gs_chain_plan_free(out);
        return err->code[0] ? GS_ERROR : gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    out->restores_to = out->change_count ? out->changes[out->change_count - 1].captured_at
                                         : best->base->finished_at;
    return GS_OK;
}

gs_status gs_chain_plan_check_frames(const gs_chain_plan *p, gs_error *err)
{
    const gs_chain_record *prev = NULL;
    for (size_t i = 0; i < p->change_count; i++) {
        const gs_chain_record *c = &p->changes[i];
        int64_t expected = 1;
        if (prev && prev->position.log_sequence == c->position.log_sequence &&
            prev->position.salt1 == c->position.salt1 && prev->position.salt2 == c->position.salt2)
            expected = prev->position.last_frame + 1;
        if (c->position.first_frame != expected) {
            char follows[120];
            if (prev)
                snprintf(follows, sizeof follows, "change piece %lld, which ends at frame %lld",
                         (long long)prev->sequence, (long long)prev->position.last_frame);
            else
                snprintf(follows, sizeof follows, "the full copy underneath it");
            return gs_error_set(err, 0, "BACKUP_CHAIN_BROKEN",
                                "change piece %lld of chain '%s' starts at frame %lld where it "
                                "has to start at frame %lld to follow %s, so the frames in "
                                "between are in no backup",
                                (long long)c->sequence, p->chain_id,
                                (long long)c->position.first_frame, (long long)expected, follows);
        }
        prev = c;
    }
    return GS_OK;
}

json_t *gs_chain_safe_to_delete(const gs_chain_list *l, int has_restorable_from,
                                int64_t restorable_from)
{
    const gs_chain *superseded = NULL;
    if (has_restorable_from)
        for (size_t i = 0; i < l->count; i++) {
            const gs_chain *c = &l->items[i];
            if (c->base && c->base->finished_at <= restorable_from &&
                (!superseded || c->base->finished_at > superseded->base->finished_at))
                superseded = c;
        }
    /* oldest first by startedAt (the list is newest first; a stable walk from its end) */
    size_t *order = l->count ? gs_calloc(l->count, sizeof *order) : NULL;
    json_t *arr = json_array();
    if ((l->count && !order) || !arr) {
        gs_free(order);
        json_decref(arr);
        return NULL;
    }
    for (size_t i = 0; i < l->count; i++)
        order[i] = l->count - 1 - i;
    for (size_t i = 1; i < l->count; i++) { /* insertion sort: lists are short */
        size_t v = order[i], k = i;
        while (k > 0 && l->items[order[k - 1]].started_at > l->items[v].started_at) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = v;
    }
    for (size_t i = 0; i < l->count; i++) {
        const gs_chain *c = &l->items[order[i]];
        if (!c->base) {
            for (size_t k = 0; k < c->change_count; k++)
                json_array_append_new(arr, gs_chain_record_to_json(&c->changes[k]));
            continue;
        }
        if (superseded && c->base->finished_at < superseded->base->finished_at) {
            json_array_append_new(arr, gs_chain_record_to_json(c->base));
            for (size_t k = 0; k < c->change_count; k++)
                json_array_append_new(arr, gs_chain_record_to_json(&c->changes[k]));
            continue;
        }
        int64_t missing = first_missing(c->changes, c->change_count);
        for (size_t k = 0; missing && k < c->change_count; k++)
            if (c->changes[k].sequence > missing)
                json_array_append_new(arr, gs_chain_record_to_json(&c->changes[k]));
    }
    gs_free(order);
    return arr;
}

/* ---- stored files ---- */

/* The pieces of f, refused (mismatch_code) when one is missing or one is past the count. */
static gs_status list_checked(gs_backup_dest *d, const gs_stored_file *f, const char *mismatch_code,
                              gs_backup_piece **pieces, size_t *count, gs_error *err)
{
    gs_backup_piece *p = NULL;
    size_t n = 0;
    *pieces = NULL;
    *count = 0;
    if (gs_backup_dest_list(d, f->name, &p, &n, err) != GS_OK)
        return GS_ERROR;
    gs_status st = GS_OK;
    if (n == 0 && f->piece_count > 0) {
        st = gs_error_set(err, 0, mismatch_code,
                          "the destination is missing piece 0 of '%s': it holds no pieces under "
                          "that name",
                          f->name);
    } else {
        for (int64_t i = 0; i < f->piece_count && st == GS_OK; i++)
            if ((size_t)i >= n || p[i].index != (uint64_t)i)
                st = gs_error_set(err, 0, mismatch_code,
                                  "the destination is missing piece %lld of '%s', so the file "
                                  "cannot be assembled",
                                  (long long)i, f->name);
        if (st == GS_OK && (int64_t)n > f->piece_count)
            st = gs_error_set(err, 0, mismatch_code,
                              "the destination holds %zu pieces of '%s' where the run wrote "
                              "%lld, so a later piece belongs to a different run",
                              n, f->name, (long long)f->piece_count);
        uint64_t listed = 0;
        for (size_t i = 0; i < n; i++)
            listed += p[i].byte_length;
        if (st == GS_OK && listed != (uint64_t)f->bytes_written)
            st = gs_error_set(err, 0, mismatch_code,
                              "the pieces of '%s' hold %llu bytes where the run wrote %lld",
                              f->name, (unsigned long long)listed, (long long)f->bytes_written);
    }
    if (st != GS_OK) {
        gs_free(p);
        return GS_ERROR;
    }
    *pieces = p;
    *count = n;
    return GS_OK;
}

gs_status gs_stored_check(gs_backup_dest *d, const gs_stored_file *f, const char *mismatch_code,
                          gs_error *err)
{
    gs_backup_piece *pieces = NULL;
    size_t n = 0;
    gs_status st = list_checked(d, f, mismatch_code, &pieces, &n, err);
    gs_free(pieces);
    return st;
}

gs_status gs_stored_fetch(gs_backup_dest *d, const gs_stored_file *f, const char *mismatch_code,
                          gs_piece_sink sink, void *user, gs_fetch_result *res, gs_error *err)
{
    memset(res, 0, sizeof *res);
    gs_backup_piece *pieces = NULL;
    size_t n = 0;
    if (list_checked(d, f, mismatch_code, &pieces, &n, err) != GS_OK)
        return GS_ERROR;
    gs_status st = GS_OK;
    gs_sha256 sha;
    gs_sha256_init(&sha);
    for (size_t i = 0; i < n; i++) {
        uint8_t *bytes = NULL;
        size_t len = 0;
        gs_status rs = gs_backup_dest_read(d, f->name, pieces[i].index, &bytes, &len, err);
        if (rs == GS_DECLINED) { /* listed, then gone */
            gs_error_set(err, 0, mismatch_code,
                         "the destination listed piece %llu of '%s' but no longer holds it",
                         (unsigned long long)pieces[i].index, f->name);
            st = GS_ERROR;
            goto out;
        }
        if (rs != GS_OK) {
            st = GS_ERROR;
            goto out;
        }
        if (f->fingerprint)
            gs_sha256_update(&sha, bytes, len);
        res->pieces++;
        res->bytes += (int64_t)len;
        rs = sink ? sink(user, (int64_t)pieces[i].index, bytes, len, err) : GS_OK;
        gs_free(bytes);
        if (rs != GS_OK) {
            st = GS_ERROR;
            goto out;
        }
    }
    if (res->bytes != f->bytes_written) {
        st = gs_error_set(err, 0, mismatch_code,
                          "the pieces of '%s' hold %lld bytes where the run wrote %lld", f->name,
                          (long long)res->bytes, (long long)f->bytes_written);
        goto out;
    }
    if (f->fingerprint) {
        uint8_t dg[32];
        gs_sha256_final(&sha, dg);
        static const char hex[] = "0123456789abcdef";
        for (int i = 0; i < 32; i++) {
            res->fingerprint[2 * i] = hex[dg[i] >> 4];
            res->fingerprint[2 * i + 1] = hex[dg[i] & 15];
        }
        res->fingerprint[64] = 0;
        if (strcmp(res->fingerprint, f->fingerprint) != 0)
            st = gs_error_set(err, 0, mismatch_code,
                              "the pieces of '%s' do not match the fingerprint the run "
                              "recorded (SHA-256 %.12s... where the record says %.12s...)",
                              f->name, res->fingerprint, f->fingerprint);
    }
out:
    gs_free(pieces);
    return st;
}

gs_status gs_stored_send(gs_backup_dest *d, const char *path, const char *name, int64_t piece_bytes,
                         int fingerprint, const int *cancel, gs_send_progress progress, void *user,
                         int64_t *pieces, int64_t *bytes, char fingerprint_out[65], gs_error *err)
{
    *pieces = 0;
    *bytes = 0;
    fingerprint_out[0] = 0;
    if (piece_bytes < 1)
        return gs_error_set(err, 0, "BACKUP_ERROR", "piece_bytes must be at least 1");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return gs_error_set(err, 0, "BACKUP_ERROR", "cannot read the staged file '%s': %s", path,
                            strerror(errno));
    gs_sha256 sha;
    gs_sha256_init(&sha);
    gs_status st = GS_OK;
    for (int64_t index = 0;; index++) {
        if (cancel && __atomic_load_n(cancel, __ATOMIC_ACQUIRE)) {
            st = gs_error_set(err, 0, "BACKUP_ERROR",
                              "the transfer of '%s' stopped after %lld pieces: the database is "
                              "closing",
                              name, (long long)index);
            break;
        }
        uint8_t *buf = gs_malloc((size_t)piece_bytes);
        if (!buf) {
            st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory for a %lld-byte piece",
                              (long long)piece_bytes);
            break;
        }
        size_t got = 0;
        while (got < (size_t)piece_bytes) {
            ssize_t k = read(fd, buf + got, (size_t)piece_bytes - got);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                if (k < 0)
                    st = gs_error_set(err, 0, "BACKUP_ERROR", "cannot read '%s': %s", path,
                                      strerror(errno));
                break;
            }
            got += (size_t)k;
        }
        if (st != GS_OK || (got == 0 && index > 0)) {
            gs_free(buf);
            break;
        }
        if (fingerprint)
            gs_sha256_update(&sha, buf, got);
        /* an empty file still stores one (empty) piece, so the name exists */
        if (gs_backup_dest_write_take(d, name, (uint64_t)index, buf, got, err) != GS_OK) {
            st = GS_ERROR;
            break;
        }
        (*pieces)++;
        *bytes += (int64_t)got;
        if (progress)
            progress(user, *pieces, *bytes);
        if (got < (size_t)piece_bytes)
            break;
    }
    close(fd);
    if (st == GS_OK && fingerprint) {
        uint8_t dg[32];
        gs_sha256_final(&sha, dg);
        static const char hex[] = "0123456789abcdef";
        for (int i = 0; i < 32; i++) {
            fingerprint_out[2 * i] = hex[dg[i] >> 4];
            fingerprint_out[2 * i + 1] = hex[dg[i] & 15];
        }
        fingerprint_out[64] = 0;
    }
    return st;
}

/* ---- verify ---- */

gs_status gs_chain_verify(gs_backup_dest *d, const gs_chain_list *l, const char *name, json_t **out,
                          gs_error *err)
{
    *out = NULL;
    const gs_chain_record *r = NULL;
    for (size_t i = 0; i < l->count && !r; i++) {
        const gs_chain *c = &l->items[i];
        if (c->base && strcmp(c->base->name, name) == 0)
            r = c->base;
        for (size_t k = 0; k < c->change_count && !r; k++)
            if (strcmp(c->changes[k].name, name) == 0)
                r = &c->changes[k];
    }
    if (!r)
        return gs_error_set(err, 0, "BACKUP_CHAIN_BROKEN",
                            "no backup named '%s' is recorded in any chain at this destination",
                            name);
    gs_stored_file f = {.name = r->name,
                        .piece_count = r->piece_count,
                        .piece_bytes = r->piece_bytes,
                        .bytes_written = r->bytes_written,
                        .fingerprint = r->fingerprint};
    gs_fetch_result res;
    if (gs_stored_fetch(d, &f, "BACKUP_DESTINATION_ERROR", NULL, NULL, &res, err) != GS_OK)
        return GS_ERROR;
    json_t *j = json_pack("{sssssssIsI}", "name", r->name, "chainId", r->chain_id, "kind",
                          r->kind == GS_CHAIN_FULL ? "full" : "change", "pieceCount",
                          (json_int_t)res.pieces, "bytesRead", (json_int_t)res.bytes);
    if (j && res.fingerprint[0])
        json_object_set_new(j, "fingerprint", json_string(res.fingerprint));
    if (!j)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    *out = j;
    return GS_OK;
}
