/*
 * Subscriptions: subscribe (watching the table when allowed, turning on write stamping,
 * positioning the cursor, deciding replay or resync), unsubscribe, and what a subscription
 * does with each change the feed offers it: the filter table of spec 02 "Change Events and
 * Subscriptions" and the txEnd marking of spec 05 "Transaction Boundaries".
 */
#include "base/text.h"
#include "cdc_internal.h"

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- filters ---- */

/* An integer envelope payload: -?[0-9]{1,19} within int64. */
static int parse_int(const char *s, size_t len, int64_t *out)
{
    size_t i = 0;
    int neg = len > 0 && s[0] == '-';
    i = (size_t)neg;
    if (len - i < 1 || len - i > 19)
        return -1;
    uint64_t mag = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        mag = mag * 10 + (uint64_t)(s[i] - '0');
    }
    if (neg ? mag > (uint64_t)INT64_MAX + 1 : mag > (uint64_t)INT64_MAX)
        return -1;
    *out = neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
    return 0;
}

/* A double equals an int64 only when it is that exact integer. */
static int double_is_int(double d, int64_t i)
{
    if (!isfinite(d) || d != floor(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0)
        return 0;
    return (int64_t)d == i;
}

static int match_int(const gs_value *f, int64_t i)
{
    if (f->type == GS_VALUE_INT)
        return f->u.i == i;
    if (f->type == GS_VALUE_DOUBLE)
        return double_is_int(f->u.d, i);
    return 0;
}

/* A row value against a filter value, both under the tagged encoding: numbers compare
 * numerically (1 == 1.0; an __sirannon_int is that exact 64-bit integer), true/false are 1/0
 * as when bound, text and blobs compare byte for byte, null matches null. */
static int value_matches(const gs_value *f, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL: return f->type == GS_VALUE_NULL;
    case JSON_TRUE: return match_int(f, 1);
    case JSON_FALSE: return match_int(f, 0);
    case JSON_INTEGER: return match_int(f, (int64_t)json_integer_value(v));
    case JSON_REAL: {
        double d = json_real_value(v);
        if (f->type == GS_VALUE_DOUBLE)
            return f->u.d == d;
        if (f->type == GS_VALUE_INT)
            return double_is_int(d, f->u.i);
        return 0;
    }
    case JSON_STRING:
        return f->type == GS_VALUE_TEXT && f->u.text.len == json_string_length(v) &&
               memcmp(f->u.text.ptr, json_string_value(v), f->u.text.len) == 0;
    case JSON_ARRAY: return 0;
    case JSON_OBJECT: break;
    }
    if (json_object_size(v) != 1)
        return 0;
    void *it = json_object_iter((json_t *)v);
    const char *key = json_object_iter_key(it);
    json_t *payload = json_object_iter_value(it);
    if (!json_is_string(payload))
        return 0;
    const char *s = json_string_value(payload);
    size_t len = json_string_length(payload);
    if (strcmp(key, "__sirannon_int") == 0) {
        int64_t i;
        return parse_int(s, len, &i) == 0 && match_int(f, i);
    }
    if (strcmp(key, "__sirannon_blob") == 0) {
        if (f->type != GS_VALUE_BLOB || len != f->u.blob.len * 2)
            return 0;
        for (size_t k = 0; k < f->u.blob.len; k++) {
            int hi = gs_hex_value((unsigned char)s[2 * k]),
                lo = gs_hex_value((unsigned char)s[2 * k + 1]);
            if (hi < 0 || lo < 0 || (uint8_t)(hi << 4 | lo) != f->u.blob.ptr[k])
                return 0;
        }
        return 1;
    }
    return 0;
}

static int row_matches(const gs_cdc_sub *s, const json_t *row)
{
    if (!row)
        return 0;
    for (size_t i = 0; i < s->nconds; i++) {
        const json_t *v = json_object_get(row, s->conds[i].key);
        if (!v || !value_matches(&s->conds[i].value, v))
            return 0;
    }
    return 1;
}

static gs_status build_filter(gs_cdc_sub *s, json_t *filter, gs_error *err)
{
    if (!filter || json_is_null(filter))
        return GS_OK;
    if (!json_is_object(filter))
        return gs_error_set(err, 0, "INVALID_REQUEST",
                            "a filter is an object of column names to values");
    size_t n = json_object_size(filter), bytes = 0;
    const char *k;
    json_t *v;
    json_object_foreach(filter, k, v)
    {
        if (gs_value_check(v, &bytes, err) != GS_OK) {
            gs_error_prefix(err, "filter value of '%.100s'", k);
            return GS_ERROR;
        }
    }
    if (n == 0)
        return GS_OK;
    s->conds = gs_calloc(n, sizeof *s->conds);
    s->arena = gs_malloc(bytes + 1);
    if (!s->conds || !s->arena)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory storing a filter");
    char *arena = s->arena;
    json_object_foreach(filter, k, v)
    {
        gs_cdc_cond *c = &s->conds[s->nconds];
        c->key = gs_strdup(k);
        if (!c->key)
            return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory storing a filter");
        gs_value_from_json(v, &c->value, &arena);
        s->nconds++;
    }
    return GS_OK;
}

void gs_cdc_sub_free(gs_cdc_sub *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nconds; i++)
        gs_free(s->conds[i].key);
    gs_free(s->conds);
    gs_free(s->arena);
    gs_free(s->table);
    gs_buf_free(&s->held);
    gs_free(s);
}

/* ---- delivery (feed_lock held, feed thread or a subscriber positioning itself) ---- */

static void call(gs_cdc *cdc, gs_cdc_sub *s, gs_buf *b, uint64_t seq)
{
    if (b->oom) {
        gs_log(GS_LOG_ERROR, "cdc",
               "out of memory building change %llu for table '%s'; it was not delivered",
               (unsigned long long)seq, s->table);
        return;
    }
    pthread_mutex_lock(&cdc->deliver_mu);
    if (atomic_load(&s->dead)) {
        pthread_mutex_unlock(&cdc->deliver_mu);
        return;
    }
    cdc->in_cb = s;
    pthread_mutex_unlock(&cdc->deliver_mu);
    s->on_event(s->user, b->data, b->len, seq);
    pthread_mutex_lock(&cdc->deliver_mu);
    cdc->in_cb = NULL;
    pthread_cond_broadcast(&cdc->deliver_cond);
    pthread_mutex_unlock(&cdc->deliver_mu);
}

static void emit_held(gs_cdc *cdc, gs_cdc_sub *s, int tx_end)
{
    s->has_held = 0;
    gs_buf_puts(&s->held, tx_end ? ",\"txEnd\":true}" : "}");
    call(cdc, s, &s->held, s->held_seq);
    gs_buf_reset(&s->held);
}

enum { AS_IS, AS_INSERT, AS_DELETE };

void gs_cdc_sub_offer(gs_cdc *cdc, gs_cdc_sub *s, const gs_cdc_change *ch)
{
    if (atomic_load(&s->dead))
        return;
    if (ch->seq > s->cursor)
        s->cursor = ch->seq;
    int shape = AS_IS;
    if (s->nconds > 0) {
        int is_insert = ch->op[0] == 'i', is_delete = ch->op[0] == 'd';
        int before = !is_insert && row_matches(s, ch->old_row);
        int after = !is_delete && row_matches(s, ch->new_row);
        if (!before && !after)
            return;
        if (before && !after)
            shape = is_delete ? AS_IS : AS_DELETE;
        else if (!before && after)
            shape = is_insert ? AS_IS : AS_INSERT;
    }
    const char *type = shape == AS_INSERT ? "insert" : shape == AS_DELETE ? "delete" : ch->op;
    gs_buf *b = &cdc->scratch;
    gs_buf_reset(b);
    gs_buf_printf(b, "{\"type\":\"%s\",\"table\":", type);
    gs_buf_json_string(b, ch->table, strlen(ch->table));
    gs_buf_puts(b, ",\"row\":");
    if (shape == AS_DELETE || !ch->new_row)
        gs_buf_puts(b, "{}");
    else
        gs_buf_append(b, ch->new_text.data, ch->new_text.len);
    if (shape != AS_INSERT && ch->old_row) {
        gs_buf_puts(b, ",\"oldRow\":");
        gs_buf_append(b, ch->old_text.data, ch->old_text.len);
    }
    gs_buf_append(b, ch->tail.data, ch->tail.len);

    if (!s->mark_tx_end) {
        gs_buf_putc(b, '}');
        call(cdc, s, b, ch->seq);
        return;
    }
    /* hold one change: it is the last of its transaction once a change of another
     * transaction arrives, or the read reaches a transaction boundary (end_read) */
    if (s->has_held) {
        emit_held(cdc, s, strcmp(s->held_tx, ch->tx_id) != 0);
        if (atomic_load(&s->dead))
            return;
    }
    if (!ch->tx_id[0]) {
        gs_buf_puts(b, ",\"txEnd\":true}"); /* no txId: its own transaction */
        call(cdc, s, b, ch->seq);
        return;
    }
    gs_buf tmp = s->held;
    s->held = *b;
    *b = tmp;
    s->has_held = 1;
    s->held_seq = ch->seq;
    snprintf(s->held_tx, sizeof s->held_tx, "%s", ch->tx_id);
}

void gs_cdc_sub_end_read(gs_cdc *cdc, gs_cdc_sub *s)
{
    if (atomic_load(&s->dead) || !s->has_held)
        return;
    /* The log holds each transaction's rows contiguously and a read sees only committed
     * transactions: the held transaction is over when the feed has read past it, or read
     * to the log's end. A read cut by the row limit inside it is no boundary. */
    if (cdc->feed_drained || strcmp(cdc->feed_last_tx, s->held_tx) != 0)
        emit_held(cdc, s, 1);
}

/* ---- subscribe / unsubscribe ---- */

gs_status gs_db_cdc_subscribe(gs_database *db, const gs_cdc_subscribe_request *req,
                              gs_cdc_sub **out, gs_cdc_subscribed *info, gs_error *err)
{
    if (out)
        *out = NULL;
    if (info)
        memset(info, 0, sizeof *info);
    if (!db || !req || !out || !req->on_event || !req->table)
        return gs_error_set(err, 0, "INVALID_REQUEST",
                            "a subscription needs a database, a table and a callback");
    if (atomic_load(&db->closed))
        return gs_error_set(err, 0, "DATABASE_CLOSED", "database '%s' is closed", db->id);
    if (db->memory)
        return gs_error_set(err, 0, "CDC_UNSUPPORTED",
                            "subscriptions need a file database; '%s' is in memory", db->id);
    if (db->opts.read_only || !db->cdc)
        return gs_error_set(err, 0, "READ_ONLY",
                            "database '%s' is read-only: subscriptions need change capture, "
                            "which installs triggers",
                            db->id);
    gs_cdc *cdc = db->cdc;
    if (!gs_cdc_identifier_ok(req->table))
        return gs_error_set(err, 0, "CDC_ERROR",
                            "invalid table name '%.100s': use letters, digits and underscores, "
                            "starting with a letter or underscore",
                            req->table);
    if (gs_cdc_on_feed_thread(cdc))
        return gs_error_set(err, 0, "CDC_ERROR", "cannot subscribe from a change callback");

    gs_cdc_sub *s = gs_calloc(1, sizeof *s);
    if (!s)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory subscribing");
    gs_buf_init(&s->held);
    s->mark_tx_end = req->mark_tx_end;
    s->on_event = req->on_event;
    s->user = req->user;
    if (build_filter(s, req->filter, err) != GS_OK)
        goto fail;

    s->table = gs_cdc_watched_name(cdc, req->table);
    if (!s->table) {
        if (!db->opts.cdc_watch_on_subscribe && !gs_cdc_is_configured(cdc, req->table)) {
            gs_error_set(err, 0, "CDC_ERROR",
                         "table %s is not tracked; add it to databases[].cdc.tables", req->table);
            goto fail;
        }
        if (gs_db_cdc_watch(db, req->table, err) != GS_OK)
            goto fail;
        s->table = gs_cdc_watched_name(cdc, req->table);
        if (!s->table) {
            gs_error_set(err, 0, "CDC_ERROR",
                         "table '%s' stopped being watched while subscribing; retry", req->table);
            goto fail;
        }
    }
    /* spec 05: subscribing turns on write stamping, for good */
    atomic_store(&cdc->stamping, 1);
    if (gs_cdc_feed_start(cdc, err) != GS_OK)
        goto fail;

    pthread_mutex_lock(&cdc->feed_lock);
    if (cdc->closing || !cdc->feed_conn) {
        pthread_mutex_unlock(&cdc->feed_lock);
        gs_error_set(err, 0, "DATABASE_CLOSED", "database '%s' is closed", db->id);
        goto fail;
    }
    gs_cdc_reap(cdc); /* a subscription unsubscribed mid-read must not keep a stale position */
    if (gs_cdc_feed_position(cdc, err) != GS_OK) {
        pthread_mutex_unlock(&cdc->feed_lock);
        gs_error_prefix(err, "positioning the subscription");
        goto fail;
    }
    uint64_t boundary = cdc->feed_last;
    char epoch[64];
    pthread_mutex_lock(&cdc->mu);
    snprintf(epoch, sizeof epoch, "%s", cdc->epoch);
    pthread_mutex_unlock(&cdc->mu);
    int resync = 0;
    s->cursor = boundary;
    if (req->has_since) {
        if (req->epoch && req->epoch[0] && strcmp(req->epoch, epoch) != 0) {
            resync = 1; /* a cursor from another file's seq space */
        } else if (req->since_seq < boundary) {
            /* hold retention below the cursor before looking, so nothing it needs is pruned
             * between the look and the replay */
            pthread_mutex_lock(&cdc->prune_mu);
            if (atomic_load(&cdc->hold) > req->since_seq)
                atomic_store(&cdc->hold, req->since_seq);
            uint64_t max_seq, min_seq;
            int has_min;
            gs_status rc = gs_cdc_feed_bounds(cdc, &max_seq, &has_min, &min_seq, err);
            uint64_t pruned = atomic_load(&cdc->pruned_seq);
            uint64_t compacted = atomic_load(&cdc->compacted_seq);
            pthread_mutex_unlock(&cdc->prune_mu);
            if (rc != GS_OK) {
                pthread_mutex_unlock(&cdc->feed_lock);
                gs_error_prefix(err, "checking the resume cursor");
                goto fail;
            }
            if (req->since_seq < pruned || !has_min || min_seq > req->since_seq + 1 ||
                req->since_seq < compacted) {
                /* changes after the cursor were pruned, or superseded changes after it were
                 * compacted away (a replay would skip them) */
                resync = 1;
            } else {
                s->cursor = req->since_seq;
                s->catching_up = 1;
            }
        }
    }
    s->next = cdc->subs;
    cdc->subs = s;
    atomic_fetch_add(&cdc->nsubs, 1);
    if (atomic_load(&cdc->hold) > s->cursor)
        atomic_store(&cdc->hold, s->cursor);
    pthread_mutex_unlock(&cdc->feed_lock);
    /* the feed may be asleep for a long while (nobody listened): let it start replaying and
     * take up the fallback poll */
    gs_cdc_wake(cdc);

    if (info) {
        info->live_seq = boundary;
        snprintf(info->epoch, sizeof info->epoch, "%s", epoch);
        info->resync = resync;
    }
    *out = s;
    return GS_OK;
fail:
    gs_cdc_sub_free(s);
    return GS_ERROR;
}

void gs_db_cdc_unsubscribe(gs_database *db, gs_cdc_sub *sub)
{
    if (!db || !sub || !db->cdc)
        return;
    gs_cdc *cdc = db->cdc;
    /* mark it dead and wait for a callback of it that is running (unless that callback is
     * the caller): from then on the feed never calls it */
    int on_feed = gs_cdc_on_feed_thread(cdc);
    pthread_mutex_lock(&cdc->deliver_mu);
    if (!atomic_load(&sub->dead)) {
        atomic_store(&sub->dead, 1);
        atomic_fetch_sub(&cdc->nsubs, 1);
    }
    while (!on_feed && cdc->in_cb == sub)
        pthread_cond_wait(&cdc->deliver_cond, &cdc->deliver_mu);
    pthread_mutex_unlock(&cdc->deliver_mu);
    /* free it now when the feed is between reads; otherwise the feed frees it after the
     * read it is delivering (or gs_db_free does) */
    if (!on_feed && pthread_mutex_trylock(&cdc->feed_lock) == 0) {
        gs_cdc_reap(cdc);
        pthread_mutex_unlock(&cdc->feed_lock);
    }
}

void gs_db_cdc_position(gs_database *db, char epoch[64], uint64_t *max_seq)
{
    if (epoch)
        epoch[0] = '\0';
    if (max_seq)
        *max_seq = 0;
    if (!db || !db->cdc)
        return;
    gs_cdc *cdc = db->cdc;
    pthread_mutex_lock(&cdc->mu);
    int init = cdc->initialised;
    if (epoch)
        snprintf(epoch, 64, "%s", cdc->epoch);
    pthread_mutex_unlock(&cdc->mu);
    if (!init || !max_seq)
        return;
    int locked = !gs_cdc_on_feed_thread(cdc);
    if (locked)
        pthread_mutex_lock(&cdc->feed_lock);
    if (cdc->feed_conn) {
        uint64_t min_seq;
        int has_min;
        gs_error e;
        if (gs_cdc_feed_bounds(cdc, max_seq, &has_min, &min_seq, &e) != GS_OK)
            *max_seq = 0;
    }
    if (locked)
        pthread_mutex_unlock(&cdc->feed_lock);
}

int gs_db_cdc_subscriber_count(gs_database *db)
{
    if (!db || !db->cdc)
        return 0;
    return atomic_load(&db->cdc->nsubs);
}
