/*
 * Live queries: open (shape, table, probe, positioned read, subscription), the per-query
 * worker that turns each transaction of change events into splices of the held rows, the
 * re-read, and close. See live.h.
 *
 * Threads. The caller's thread runs open and close. The feed thread runs on_event, which only
 * copies the event into the query's queue and wakes its worker (it must not block). The
 * worker thread owns the probe connection and the held result: it groups events into
 * transactions, evaluates them in the probe table, computes the ops, runs re-reads, and calls
 * fn — so fn is called from one thread at a time, in order, and never after close returns
 * (close joins the worker).
 *
 * Connections. The probe table lives on an in-memory connection of the query's own (a TEMP
 * table there), so probe work never touches the database file or its locks. Every read of
 * the base table (at open and on each re-read) takes a read-only connection to the file,
 * opened for that read and closed after it, and reads the rows and the change log's position
 * in one transaction.
 */
#include "live_internal.h"

#include "database_internal.h"

#include "base/alloc.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/log.h"
#include "base/text.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Buffered change bytes (one transaction, or the feed queue) past which the query re-reads
 * instead of evaluating the changes. */
#define LIVE_MAX_BUFFER_BYTES ((size_t)32 << 20)
/* Events queued for the worker past which it re-reads instead (the worker is far behind). */
#define LIVE_MAX_QUEUED_EVENTS ((size_t)1000000)

/* One row's net change in a transaction. */
typedef struct live_net {
    char *key;
    size_t keylen;
    json_t *before; /* the row before the transaction (NULL: it did not exist) */
    json_t *after;  /* after it (NULL: gone) */
    int64_t before_rowid, after_rowid;
    int unseen_before; /* created by an insert: the row before it is unknown */
    gs_live_row *before_match, *after_match;
} live_net;

static atomic_uint probe_counter; /* probe table names: unique within the process */
static atomic_int alive;          /* live queries not yet freed (metrics, tests) */

/* ---- small helpers ---- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t next_rand(gs_live *lv)
{
    /* xorshift64*: jitter only, no secrecy needed */
    uint64_t x = lv->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    lv->rng = x;
    return x * 2685821657736338717ULL;
}

gs_status gs_live_oom(gs_error *err)
{
    return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory in a live query");
}

static void emit(gs_live *lv, const char *text, size_t len)
{
    if (!atomic_load(&lv->stop)) /* closing: fn is not called again */
        lv->fn(lv->user, text, len);
}

/* ---- reads ---- */

/* Read and replace the held rows. */
static gs_status read_into_result(gs_live *lv, gs_error *err)
{
    gs_live_row **rows;
    size_t n;
    uint64_t seq;
    if (gs_live_positioned_read(lv, &rows, &n, &seq, err) != GS_OK)
        return GS_ERROR;
    int rc = gs_live_result_reset_take(lv->result, rows, n);
    gs_free(rows);
    if (rc != 0)
        return gs_live_oom(err);
    lv->applied_seq = seq;
    return GS_OK;
}

/* ---- the worker: transactions of events ---- */

static void fail(gs_live *lv, const gs_error *e)
{
    if (lv->failed)
        return;
    lv->failed = 1;
    gs_log(GS_LOG_WARN, "live", "a live query on table '%s' stopped: %s", lv->shape.table,
           e->message);
    gs_buf_reset(&lv->out);
    gs_error_to_json(e, &lv->out);
    static const char OOM[] =
        "{\"error\":{\"code\":\"INTERNAL_ERROR\",\"message\":\"out of memory\"}}";
    if (!lv->out.oom)
        emit(lv, lv->out.data, lv->out.len);
    else
        emit(lv, OOM, sizeof OOM - 1);
}

static void tx_clear(gs_live *lv)
{
    for (size_t i = 0; i < lv->ntx; i++)
        json_decref(lv->tx[i]);
    lv->ntx = 0;
    lv->txbytes = 0;
    lv->txover = 0;
}

/* Wait up to ms, or until close. Returns 1 when closing. */
static int nap(gs_live *lv, int64_t ms)
{
    int64_t deadline = now_ms() + ms;
    pthread_mutex_lock(&lv->mu);
    while (!atomic_load(&lv->stop)) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += left / 1000;
        ts.tv_nsec += (left % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&lv->cond, &lv->mu, &ts);
    }
    pthread_mutex_unlock(&lv->mu);
    return atomic_load(&lv->stop);
}

static void reread(gs_live *lv)
{
    static const char REVALIDATING[] = "{\"revalidating\":true}";
    emit(lv, REVALIDATING, sizeof REVALIDATING - 1);
    if (lv->jitter_ms > 0 && nap(lv, (int64_t)(next_rand(lv) % (uint64_t)(lv->jitter_ms + 1))))
        return;
    gs_error err;
    gs_error_init(&err);
    if (gs_db_is_closed(lv->db)) {
        gs_error_set(&err, 0, "DATABASE_CLOSED", "database '%s' is closed", gs_db_id(lv->db));
        fail(lv, &err);
        return;
    }
    if (read_into_result(lv, &err) != GS_OK) {
        fail(lv, &err);
        return;
    }
    tx_clear(lv); /* a partial transaction was committed before the read: it is in the rows */
    gs_buf_reset(&lv->out);
    gs_buf_puts(&lv->out, "{\"rows\":");
    gs_live_result_rows_json(lv->result, &lv->out);
    gs_buf_putc(&lv->out, '}');
    if (lv->out.oom) {
        gs_live_oom(&err);
        fail(lv, &err);
        return;
    }
    emit(lv, lv->out.data, lv->out.len);
}

/* The identity of an image: key columns from the row, or the rowid from the event. */
static int image_key(gs_live *lv, const json_t *row, const json_t *row_id, gs_buf *key,
                     int64_t *rowid)
{
    gs_buf_reset(key);
    *rowid = 0;
    if (lv->mode == GS_LIVE_KEY_ROWID) {
        if (gs_live_parse_rowid(row_id, rowid) != 0)
            return -1;
        gs_live_key_int(key, *rowid);
        return key->oom ? -1 : 0;
    }
    for (size_t i = 0; i < lv->npk; i++) {
        const json_t *v = json_object_get(row, lv->cols[lv->pkcols[i]].name);
        if (gs_live_key_from_json(key, v) != 0)
            return -1;
    }
    if (lv->mode == GS_LIVE_KEY_ALIAS) {
        const json_t *v = json_object_get(row, lv->cols[lv->pkcols[0]].name);
        if (json_is_integer(v))
            *rowid = (int64_t)json_integer_value(v);
        else if (!v || gs_live_parse_rowid(json_object_get(v, "__sirannon_int"), rowid) != 0)
            return -1;
    }
    return key->oom ? -1 : 0;
}

/* A small open-addressing index from identity to net-change slot. */
typedef struct net_index {
    size_t *slot; /* slot + 1; 0 = empty */
    size_t mask;
} net_index;

static live_net *net_get(live_net *nets, size_t *nnets, net_index *ix, const char *key,
                         size_t keylen, int *created)
{
    size_t i = gs_hash_bytes(key, keylen) & ix->mask;
    while (ix->slot[i]) {
        live_net *n = &nets[ix->slot[i] - 1];
        if (n->keylen == keylen && memcmp(n->key, key, keylen) == 0) {
            *created = 0;
            return n;
        }
        i = (i + 1) & ix->mask;
    }
    char *k = gs_strndup(key, keylen);
    if (!k)
        return NULL;
    live_net *n = &nets[*nnets];
    memset(n, 0, sizeof *n);
    n->key = k;
    n->keylen = keylen;
    ix->slot[i] = ++*nnets;
    *created = 1;
    return n;
}

/* Evaluate one transaction and hand its ops to fn (or re-read). */
static void finish_tx(gs_live *lv)
{
    gs_error err;
    gs_error_init(&err);
    size_t n = lv->ntx;
    uint64_t last_seq = lv->applied_seq;
    if (lv->txover) {
        reread(lv);
        tx_clear(lv);
        return;
    }
    live_net *nets = gs_calloc(n ? n * 2 : 1, sizeof *nets);
    net_index ix = {0};
    size_t cap = 16;
    while (cap < n * 4)
        cap *= 2;
    ix.slot = gs_calloc(cap, sizeof *ix.slot);
    ix.mask = cap - 1;
    gs_live_img *imgs = gs_calloc(n * 2 + 1, sizeof *imgs);
    live_net **owners = gs_calloc(n * 2 + 1, sizeof *owners); /* the net change of imgs[i] */
    gs_live_change *changes = gs_calloc(n * 2 + 1, sizeof *changes);
    size_t nnets = 0;
    gs_buf key;
    gs_buf_init(&key);
    if (!nets || !ix.slot || !imgs || !owners || !changes) {
        gs_live_oom(&err);
        goto failed;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *ev = lv->tx[i];
        const char *type = json_string_value(json_object_get(ev, "type"));
        json_t *row = json_object_get(ev, "row");
        json_t *old = json_object_get(ev, "oldRow");
        const json_t *row_id = json_object_get(ev, "rowId");
        const char *seq = json_string_value(json_object_get(ev, "seq"));
        if (seq)
            last_seq = strtoull(seq, NULL, 10);
        if (!type) {
            gs_error_set(&err, 0, "CDC_ERROR", "a change event has no type");
            goto failed;
        }
        int is_insert = strcmp(type, "insert") == 0, is_delete = strcmp(type, "delete") == 0;
        json_t *before = is_insert ? NULL : (old ? old : (is_delete ? row : NULL));
        json_t *after = is_delete ? NULL : row;
        int created;
        int64_t rowid;
        if (before) {
            if (image_key(lv, before, row_id, &key, &rowid) != 0) {
                gs_error_set(&err, 0, "CDC_ERROR",
                             "a change event does not identify its row (no key or rowId)");
                goto failed;
            }
            live_net *net = net_get(nets, &nnets, &ix, key.data, key.len, &created);
            if (!net) {
                gs_live_oom(&err);
                goto failed;
            }
            if (created) {
                net->before = before;
                net->before_rowid = rowid;
            }
            net->after = NULL;
        }
        if (after) {
            if (image_key(lv, after, row_id, &key, &rowid) != 0) {
                gs_error_set(&err, 0, "CDC_ERROR",
                             "a change event does not identify its row (no key or rowId)");
                goto failed;
            }
            live_net *net = net_get(nets, &nnets, &ix, key.data, key.len, &created);
            if (!net) {
                gs_live_oom(&err);
                goto failed;
            }
            if (created)
                net->unseen_before = is_insert;
            net->after = after;
            net->after_rowid = rowid;
        }
    }
    /* two passes: images of one row share its rowid, so before and after go in turn */
    for (int pass = 0; pass < 2; pass++) {
        size_t m = 0;
        for (size_t i = 0; i < nnets; i++) {
            json_t *img = pass == 0 ? nets[i].before : nets[i].after;
            if (!img)
                continue;
            imgs[m].row = img;
            imgs[m].rowid = pass == 0 ? nets[i].before_rowid : nets[i].after_rowid;
            imgs[m].match = NULL;
            imgs[m].key = nets[i].key;
            imgs[m].keylen = nets[i].keylen;
            owners[m] = &nets[i];
            m++;
        }
        if (gs_live_probe_pass(lv, imgs, m, &err) != GS_OK) {
            for (size_t i = 0; i < m; i++)
                gs_live_row_free(imgs[i].match);
            goto failed;
        }
        for (size_t i = 0; i < m; i++) {
            if (pass == 0)
                owners[i]->before_match = imgs[i].match;
            else
                owners[i]->after_match = imgs[i].match;
        }
    }
    for (size_t i = 0; i < nnets; i++) {
        changes[i].key = nets[i].key;
        changes[i].keylen = nets[i].keylen;
        changes[i].before = nets[i].before_match;
        changes[i].after = nets[i].after_match;
        changes[i].unseen_before = nets[i].unseen_before;
        nets[i].before_match = nets[i].after_match = NULL;
    }
    gs_buf_reset(&lv->out);
    gs_buf_puts(&lv->out, "{\"ops\":[");
    size_t nops = 0;
    int rc = gs_live_result_apply_take(lv->result, changes, nnets, &lv->out, &nops);
    if (rc == GS_LIVE_APPLIED) {
        lv->applied_seq = last_seq;
        gs_buf_puts(&lv->out, "]}");
        if (nops > 0 && !lv->out.oom)
            emit(lv, lv->out.data, lv->out.len);
        else if (lv->out.oom)
            reread(lv);
    } else {
        reread(lv);
    }
    goto done;
failed:
    fail(lv, &err);
done:
    for (size_t i = 0; i < nnets && nets; i++) {
        gs_free(nets[i].key);
        gs_live_row_free(nets[i].before_match);
        gs_live_row_free(nets[i].after_match);
    }
    gs_free(nets);
    gs_free(ix.slot);
    gs_free(imgs);
    gs_free(owners);
    gs_free(changes);
    gs_buf_free(&key);
    tx_clear(lv);
}

static void process_event(gs_live *lv, gs_live_ev *ev)
{
    if (lv->failed || ev->seq <= lv->applied_seq)
        return;
    json_error_t je;
    json_t *obj = json_loadb(ev->json, ev->len, 0, &je);
    if (!obj || !json_is_object(obj)) {
        json_decref(obj);
        gs_error err;
        gs_error_set(&err, 0, "CDC_ERROR", "a change event is not a JSON object");
        fail(lv, &err);
        return;
    }
    int end = json_is_true(json_object_get(obj, "txEnd"));
    if (!lv->txover) {
        lv->txbytes += ev->len;
        if ((int64_t)lv->ntx >= lv->max_changes || lv->txbytes > LIVE_MAX_BUFFER_BYTES) {
            /* too big to evaluate change by change: drop it and read again at its end */
            tx_clear(lv);
            lv->txover = 1;
        } else {
            if (lv->ntx == lv->captx) {
                size_t nc = lv->captx ? lv->captx * 2 : 16;
                json_t **t = gs_realloc(lv->tx, nc * sizeof *t);
                if (!t) {
                    tx_clear(lv);
                    lv->txover = 1;
                } else {
                    lv->tx = t;
                    lv->captx = nc;
                }
            }
            if (!lv->txover) {
                lv->tx[lv->ntx++] = obj;
                obj = NULL;
            }
        }
    }
    json_decref(obj);
    if (end)
        finish_tx(lv);
}

static void free_events(gs_live_ev *e)
{
    while (e) {
        gs_live_ev *next = e->next;
        gs_free(e);
        e = next;
    }
}

static void live_destroy(gs_live *lv);

static void *worker_main(void *arg)
{
    gs_live *lv = arg;
    pthread_mutex_lock(&lv->mu);
    while (!lv->ready && !atomic_load(&lv->stop)) /* fn waits until open has returned */
        pthread_cond_wait(&lv->cond, &lv->mu);
    for (;;) {
        while (!atomic_load(&lv->stop) && !lv->qhead && !lv->overflow)
            pthread_cond_wait(&lv->cond, &lv->mu);
        if (atomic_load(&lv->stop))
            break;
        gs_live_ev *list = lv->qhead;
        int ov = lv->overflow;
        lv->qhead = lv->qtail = NULL;
        lv->qbytes = lv->qcount = 0;
        lv->overflow = 0;
        pthread_mutex_unlock(&lv->mu);
        if (ov && !lv->failed) {
            /* events were dropped: everything delivered so far is in the next read */
            tx_clear(lv);
            reread(lv);
        }
        if (ov)
            atomic_store(&lv->published_seq, lv->applied_seq);
        while (list) {
            gs_live_ev *next = list->next;
            if (!atomic_load(&lv->stop)) {
                process_event(lv, list);
                /* what went out covers applied_seq (a failed query covers everything) */
                uint64_t pub =
                    lv->failed && list->seq > lv->applied_seq ? list->seq : lv->applied_seq;
                if (pub > atomic_load(&lv->published_seq))
                    atomic_store(&lv->published_seq, pub);
            }
            gs_free(list);
            list = next;
        }
        pthread_mutex_lock(&lv->mu);
    }
    int self = lv->self_close;
    pthread_mutex_unlock(&lv->mu);
    if (self)
        live_destroy(lv);
    return NULL;
}

/* The feed thread: queue and wake, never block on the worker. */
static void on_event(void *user, const char *json, size_t len, uint64_t seq)
{
    gs_live *lv = user;
    gs_live_ev *ev = gs_malloc(sizeof *ev + len + 1);
    pthread_mutex_lock(&lv->mu);
    if (atomic_load(&lv->stop)) {
        pthread_mutex_unlock(&lv->mu);
        gs_free(ev);
        return;
    }
    if (!ev || lv->qbytes + len > LIVE_MAX_BUFFER_BYTES || lv->qcount >= LIVE_MAX_QUEUED_EVENTS) {
        /* the worker is far behind: drop the queue and have it read again */
        free_events(lv->qhead);
        lv->qhead = lv->qtail = NULL;
        lv->qbytes = lv->qcount = 0;
        lv->overflow = 1;
        pthread_cond_signal(&lv->cond);
        pthread_mutex_unlock(&lv->mu);
        gs_free(ev);
        return;
    }
    ev->next = NULL;
    ev->seq = seq;
    ev->len = len;
    memcpy(ev->json, json, len);
    ev->json[len] = '\0';
    if (lv->qtail)
        lv->qtail->next = ev;
    else
        lv->qhead = ev;
    lv->qtail = ev;
    lv->qbytes += len;
    lv->qcount++;
    pthread_cond_signal(&lv->cond);
    pthread_mutex_unlock(&lv->mu);
}

/* ---- open and close ---- */

static void live_destroy(gs_live *lv)
{
    free_events(lv->qhead);
    tx_clear(lv);
    gs_free(lv->tx);
    if (lv->probe) {
        char sql[96];
        gs_error e;
        snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS temp.\"%s\"", lv->probe_name);
        gs_conn_exec(lv->probe, sql, &e);
        gs_conn_close(lv->probe);
    }
    gs_live_result_free(lv->result);
    for (size_t i = 0; i < lv->ncols; i++) {
        gs_free(lv->cols[i].name);
        gs_free(lv->cols[i].type);
        gs_free(lv->cols[i].coll);
    }
    gs_free(lv->cols);
    gs_free(lv->pkcols);
    for (size_t i = 0; i < lv->nterms && lv->terms; i++)
        gs_free(lv->terms[i].expr);
    gs_free(lv->terms);
    gs_free(lv->keys);
    gs_free(lv->source);
    gs_free(lv->read_sql);
    gs_free(lv->probe_sql);
    gs_free(lv->insert_sql);
    gs_free(lv->param_items);
    gs_free(lv->param_arena);
    gs_live_shape_free(&lv->shape);
    gs_buf_free(&lv->out);
    gs_row_keys_free(&lv->rkeys);
    gs_free(lv->path);
    if (lv->sync_inited) {
        pthread_mutex_destroy(&lv->mu);
        pthread_cond_destroy(&lv->cond);
    }
    gs_free(lv);
    atomic_fetch_sub(&alive, 1);
}

gs_status gs_db_live_open(gs_database *db, const char *sql, json_t *params,
                          const gs_live_options *opts, gs_live_fn fn, void *user, gs_live **out,
                          char **rows_json, gs_error *err)
{
    if (out)
        *out = NULL;
    if (rows_json)
        *rows_json = NULL;
    if (!db || !sql || !fn || !out || !rows_json)
        return gs_error_set(err, 0, "INVALID_REQUEST",
                            "a live query needs a database, a statement, a callback and "
                            "somewhere to put its rows");
    if (gs_db_is_closed(db))
        return gs_error_set(err, 0, "DATABASE_CLOSED", "database '%s' is closed", gs_db_id(db));
    if (gs_db_is_read_only(db))
        return gs_error_set(err, 0, "READ_ONLY",
                            "database '%s' is read-only: a live query watches its table, which "
                            "installs triggers",
                            gs_db_id(db));
    if (db->memory || strcmp(gs_db_path(db), ":memory:") == 0)
        return gs_error_set(err, 0, "CDC_UNSUPPORTED",
                            "live queries need change capture, which needs a file database; "
                            "'%s' is in memory",
                            gs_db_id(db));
    if (gs_guard_check_sql(sql, strlen(sql), NULL, err) != GS_OK)
        return GS_ERROR;

    gs_live *lv = gs_calloc(1, sizeof *lv);
    if (!lv)
        return gs_live_oom(err);
    atomic_fetch_add(&alive, 1);
    gs_buf_init(&lv->out);
    gs_row_keys_init(&lv->rkeys);
    pthread_mutex_init(&lv->mu, NULL);
    {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&lv->cond, &ca);
        pthread_condattr_destroy(&ca);
    }
    lv->sync_inited = 1;
    atomic_init(&lv->stop, 0);
    lv->db = db;
    lv->fn = fn;
    lv->user = user;
    lv->jitter_ms = opts && opts->reread_jitter_ms >= 0 ? opts->reread_jitter_ms : 25;
    lv->max_changes =
        opts && opts->max_transaction_changes > 0 ? opts->max_transaction_changes : 10000;
    lv->busy_timeout_ms = db->opts.busy_timeout_ms > 0 ? db->opts.busy_timeout_ms : 5000;
    lv->rng = (uint64_t)now_ms() ^ (uint64_t)(uintptr_t)lv ^ 0x9E3779B97F4A7C15ULL;
    if (!lv->rng)
        lv->rng = 1;
    snprintf(lv->probe_name, sizeof lv->probe_name, "_sirannon_live_%u",
             atomic_fetch_add(&probe_counter, 1) + 1);
    lv->path = gs_strdup(gs_db_path(db));
    if (!lv->path) {
        gs_live_oom(err);
        goto fail;
    }

    if (gs_live_plan_open(lv, sql, params, err) != GS_OK)
        goto fail;
    lv->result = gs_live_result_new(lv->keys, lv->nterms, lv->limit, lv->offset);
    if (!lv->result) {
        gs_live_oom(err);
        goto fail;
    }

    /* watch, read at a position, subscribe from it */
    if (gs_db_cdc_watch(db, lv->shape.table, err) != GS_OK)
        goto fail;
    if (read_into_result(lv, err) != GS_OK)
        goto fail;
    gs_cdc_subscribe_request req = {
        .table = lv->shape.table,
        .has_since = 1,
        .since_seq = lv->applied_seq,
        .mark_tx_end = 1,
        .on_event = on_event,
        .user = lv,
    };
    gs_cdc_subscribed info;
    if (gs_db_cdc_subscribe(db, &req, &lv->sub, &info, err) != GS_OK)
        goto fail;
    if (info.resync && read_into_result(lv, err) != GS_OK) {
        /* the changes after the read were pruned: read again, now that delivery is live */
        goto fail;
    }
    gs_buf_reset(&lv->out);
    gs_live_result_rows_json(lv->result, &lv->out);
    if (lv->out.oom) {
        gs_live_oom(err);
        goto fail;
    }
    char *rows = gs_buf_take(&lv->out, NULL);
    if (!rows) {
        gs_live_oom(err);
        goto fail;
    }
    atomic_store(&lv->published_seq, lv->applied_seq);
    /* the worker runs SQLite on a small in-memory table and parses events: 1 MiB of stack
     * is plenty, and many live queries then cost little address space */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, (size_t)1 << 20);
    int trc = pthread_create(&lv->thread, &attr, worker_main, lv);
    pthread_attr_destroy(&attr);
    if (trc != 0) {
        gs_free(rows);
        gs_error_set(err, 0, "INTERNAL_ERROR", "cannot start the live query's thread: %s",
                     strerror(trc));
        goto fail;
    }
    lv->started = 1;
    *rows_json = rows;
    *out = lv;
    pthread_mutex_lock(&lv->mu);
    lv->ready = 1;
    pthread_cond_broadcast(&lv->cond);
    pthread_mutex_unlock(&lv->mu);
    return GS_OK;
fail:
    if (lv->sub)
        gs_db_cdc_unsubscribe(db, lv->sub);
    live_destroy(lv);
    return GS_ERROR;
}

void gs_db_live_close(gs_database *db, gs_live *lv)
{
    if (!lv)
        return;
    if (lv->sub)
        gs_db_cdc_unsubscribe(db ? db : lv->db, lv->sub);
    lv->sub = NULL;
    pthread_mutex_lock(&lv->mu);
    atomic_store(&lv->stop, 1);
    pthread_cond_broadcast(&lv->cond);
    int self = lv->started && pthread_equal(pthread_self(), lv->thread);
    if (self)
        lv->self_close = 1; /* called from fn: the worker frees the query when fn returns */
    pthread_mutex_unlock(&lv->mu);
    if (self) {
        pthread_detach(lv->thread);
        return;
    }
    if (lv->started)
        pthread_join(lv->thread, NULL);
    live_destroy(lv);
}

uint64_t gs_db_live_position(gs_live *lv)
{
    return lv ? atomic_load(&lv->published_seq) : 0;
}

int gs_db_live_alive(void)
{
    return atomic_load(&alive);
}
