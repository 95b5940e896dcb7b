/*
 * The feed thread: reads `_sirannon_changes` in seq order on a read connection of its own and
 * offers each change to the subscriptions of its table. The writer wakes it after every commit
 * that changed rows while anyone subscribes; a slow fallback poll catches other processes'
 * writes; it queues the retention prune. A subscription resuming from a cursor is first
 * caught up from the log (its table only) to the feed's position, then joins the live reads.
 * Everything below runs under feed_lock (see cdc_internal.h).
 */
#include "cdc_internal.h"

#include "base/alloc.h"
#include "base/error.h"
#include "base/log.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* How often retention runs: every PRUNE_READS feed reads or PRUNE_INTERVAL_MS. */
#define PRUNE_READS 100
#define PRUNE_INTERVAL_MS 60000
/* Live reads (and catch-up chunks per subscription) per hold of feed_lock. */
#define READS_PER_CYCLE 8

static const char LIVE_SQL[] =
    "SELECT seq, table_name, operation, row_id, changed_at, old_data, new_data, node_id, tx_id, "
    "hlc FROM _sirannon_changes WHERE seq > ?1 ORDER BY seq LIMIT 1000";
static const char CATCHUP_SQL[] =
    "SELECT seq, table_name, operation, row_id, changed_at, old_data, new_data, node_id, tx_id, "
    "hlc FROM _sirannon_changes WHERE table_name = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq "
    "LIMIT 1000";

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int gs_cdc_on_feed_thread(gs_cdc *cdc)
{
    /* feed_self is written by the feed thread before it publishes feed_running */
    return atomic_load_explicit(&cdc->feed_running, memory_order_acquire) &&
           pthread_equal(pthread_self(), cdc->feed_self);
}

void gs_cdc_wake(gs_cdc *cdc)
{
    pthread_mutex_lock(&cdc->wake_mu);
    cdc->wake = 1;
    pthread_cond_signal(&cdc->wake_cond);
    pthread_mutex_unlock(&cdc->wake_mu);
}

/* ---- rows to changes ---- */

/* Copy s replacing bytes that are not valid UTF-8 with U+FFFD (a TEXT value SQLite stored
 * unchecked), so the JSON parser accepts it. */
static char *utf8_clean(const char *s, size_t len)
{
    char *out = gs_malloc(len * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        int ok = n > 0 && i + n <= len;
        for (size_t k = 1; ok && k < n; k++)
            ok = ((unsigned char)s[i + k] >> 6) == 2;
        if (ok) {
            memcpy(out + o, s + i, n);
            o += n;
            i += n;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    out[o] = '\0';
    return out;
}

static json_t *parse_row(const char *text, size_t len, uint64_t seq)
{
    if (!text)
        return NULL;
    json_error_t je;
    json_t *v = json_loadb(text, len, JSON_ALLOW_NUL, &je);
    if (!v) {
        char *clean = utf8_clean(text, len);
        if (clean) {
            v = json_loadb(clean, strlen(clean), JSON_ALLOW_NUL, &je);
            gs_free(clean);
        }
    }
    if (!v || !json_is_object(v)) {
        gs_log(GS_LOG_WARN, "cdc", "change %llu holds a row image that is not a JSON object",
               (unsigned long long)seq);
        json_decref(v);
        return json_object();
    }
    return v;
}

/* Render a stored row image under the tagged encoding: envelopes are kept, reals take their
 * shortest round-trip form (the log stores 17 digits). */
static void render(gs_buf *b, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *x;
        int first = 1;
        gs_buf_putc(b, '{');
        json_object_foreach((json_t *)v, k, x)
        {
            if (!first)
                gs_buf_putc(b, ',');
            first = 0;
            gs_buf_json_string(b, k, strlen(k));
            gs_buf_putc(b, ':');
            render(b, x);
        }
        gs_buf_putc(b, '}');
        return;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *x;
        gs_buf_putc(b, '[');
        json_array_foreach(v, i, x)
        {
            if (i)
                gs_buf_putc(b, ',');
            render(b, x);
        }
        gs_buf_putc(b, ']');
        return;
    }
    case JSON_STRING: gs_buf_json_string(b, json_string_value(v), json_string_length(v)); return;
    case JSON_INTEGER: gs_buf_json_int(b, (int64_t)json_integer_value(v)); return;
    case JSON_REAL: gs_buf_json_double(b, json_real_value(v)); return;
    case JSON_TRUE: gs_buf_puts(b, "true"); return;
    case JSON_FALSE: gs_buf_puts(b, "false"); return;
    case JSON_NULL: gs_buf_puts(b, "null"); return;
    }
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    return t ? t : "";
}

/* Fill ch from the current row of st (valid until the statement steps again). */
static void change_from_row(gs_cdc_change *ch, sqlite3_stmt *st)
{
    ch->seq = (uint64_t)sqlite3_column_int64(st, 0);
    ch->table = col_text(st, 1);
    const char *op = col_text(st, 2);
    ch->op = strcasecmp(op, "INSERT") == 0   ? "insert"
             : strcasecmp(op, "UPDATE") == 0 ? "update"
                                             : "delete";
    ch->row_id = col_text(st, 3);
    ch->changed_at = sqlite3_column_double(st, 4);
    ch->node_id = col_text(st, 7);
    ch->tx_id = col_text(st, 8);
    ch->hlc = col_text(st, 9);
    json_decref(ch->old_row);
    json_decref(ch->new_row);
    ch->old_row = ch->new_row = NULL;
    if (sqlite3_column_type(st, 5) != SQLITE_NULL)
        ch->old_row = parse_row((const char *)sqlite3_column_text(st, 5),
                                (size_t)sqlite3_column_bytes(st, 5), ch->seq);
    if (sqlite3_column_type(st, 6) != SQLITE_NULL && strcmp(ch->op, "delete") != 0)
        ch->new_row = parse_row((const char *)sqlite3_column_text(st, 6),
                                (size_t)sqlite3_column_bytes(st, 6), ch->seq);
    if (strcmp(ch->op, "insert") == 0 && ch->old_row) {
        json_decref(ch->old_row);
        ch->old_row = NULL;
    }
    gs_buf_reset(&ch->new_text);
    gs_buf_reset(&ch->old_text);
    gs_buf_reset(&ch->tail);
    if (ch->new_row)
        render(&ch->new_text, ch->new_row);
    else
        gs_buf_puts(&ch->new_text, "{}");
    if (ch->old_row)
        render(&ch->old_text, ch->old_row);
    gs_buf_printf(&ch->tail, ",\"seq\":\"%llu\",\"timestamp\":", (unsigned long long)ch->seq);
    /* changed_at as stored: seconds since the epoch with a fraction, as the reference sends */
    if (isfinite(ch->changed_at))
        gs_buf_json_double(&ch->tail, ch->changed_at);
    else
        gs_buf_puts(&ch->tail, "0");
    if (ch->hlc[0]) {
        gs_buf_puts(&ch->tail, ",\"hlc\":");
        gs_buf_json_string(&ch->tail, ch->hlc, strlen(ch->hlc));
    }
    if (ch->node_id[0]) {
        gs_buf_puts(&ch->tail, ",\"origin\":");
        gs_buf_json_string(&ch->tail, ch->node_id, strlen(ch->node_id));
    }
    gs_buf_puts(&ch->tail, ",\"rowId\":");
    gs_buf_json_string(&ch->tail, ch->row_id, strlen(ch->row_id));
    if (ch->tx_id[0]) {
        gs_buf_puts(&ch->tail, ",\"txId\":");
        gs_buf_json_string(&ch->tail, ch->tx_id, strlen(ch->tx_id));
    }
}

static void change_init(gs_cdc_change *ch)
{
    memset(ch, 0, sizeof *ch);
    gs_buf_init(&ch->new_text);
    gs_buf_init(&ch->old_text);
    gs_buf_init(&ch->tail);
}

static void change_free(gs_cdc_change *ch)
{
    json_decref(ch->old_row);
    json_decref(ch->new_row);
    gs_buf_free(&ch->new_text);
    gs_buf_free(&ch->old_text);
    gs_buf_free(&ch->tail);
}

/* ---- reading (feed_lock held) ---- */

static gs_status prepare(gs_cdc *cdc, const char *sql, size_t len, gs_stmt **st, gs_error *err)
{
    if (!cdc->feed_conn)
        return gs_error_set(err, 0, "DATABASE_CLOSED", "database '%s' is closed", cdc->db->id);
    return gs_conn_prepare(cdc->feed_conn, sql, len, GS_PREP_TRUSTED, st, err);
}

gs_status gs_cdc_feed_bounds(gs_cdc *cdc, uint64_t *max_seq, int *has_min, uint64_t *min_seq,
                             gs_error *err)
{
    static const char sql[] =
        "SELECT (SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = "
        "'_sirannon_changes'), (SELECT coalesce(max(seq), 0) FROM _sirannon_changes), "
        "(SELECT min(seq) FROM _sirannon_changes)";
    gs_stmt *st;
    if (prepare(cdc, sql, sizeof sql - 1, &st, err) != GS_OK)
        return GS_ERROR;
    int rc = gs_conn_step(cdc->feed_conn, st, err);
    if (rc == SQLITE_ROW) {
        sqlite3_stmt *ss = gs_stmt_sqlite(st);
        uint64_t a = (uint64_t)sqlite3_column_int64(ss, 0);
        uint64_t b = (uint64_t)sqlite3_column_int64(ss, 1);
        *max_seq = a > b ? a : b;
        *has_min = sqlite3_column_type(ss, 2) != SQLITE_NULL;
        *min_seq = *has_min ? (uint64_t)sqlite3_column_int64(ss, 2) : 0;
    }
    gs_conn_release(cdc->feed_conn, st);
    return rc == SQLITE_ROW ? GS_OK : GS_ERROR;
}

gs_status gs_cdc_feed_position(gs_cdc *cdc, gs_error *err)
{
    if (cdc->positioned)
        return GS_OK;
    static const char sql[] = "SELECT seq, tx_id FROM _sirannon_changes ORDER BY seq DESC LIMIT 1";
    uint64_t max_seq, min_seq;
    int has_min;
    if (gs_cdc_feed_bounds(cdc, &max_seq, &has_min, &min_seq, err) != GS_OK)
        return GS_ERROR;
    gs_stmt *st;
    if (prepare(cdc, sql, sizeof sql - 1, &st, err) != GS_OK)
        return GS_ERROR;
    int rc = gs_conn_step(cdc->feed_conn, st, err);
    cdc->feed_last_tx[0] = '\0';
    if (rc == SQLITE_ROW) {
        sqlite3_stmt *ss = gs_stmt_sqlite(st);
        uint64_t seq = (uint64_t)sqlite3_column_int64(ss, 0);
        if (seq > max_seq)
            max_seq = seq;
        if (seq == max_seq)
            snprintf(cdc->feed_last_tx, sizeof cdc->feed_last_tx, "%s", col_text(ss, 1));
    }
    gs_conn_release(cdc->feed_conn, st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return GS_ERROR;
    /* the log's end was read in one statement: whatever transaction wrote it has committed */
    cdc->feed_last = max_seq;
    cdc->feed_drained = 1;
    cdc->positioned = 1;
    return GS_OK;
}

static int table_has_live_sub(gs_cdc *cdc, const char *table)
{
    for (gs_cdc_sub *s = cdc->subs; s; s = s->next)
        if (!atomic_load(&s->dead) && !s->catching_up && strcmp(s->table, table) == 0)
            return 1;
    return 0;
}

/* One live read. Returns the number of rows, or -1. */
static int live_read(gs_cdc *cdc, gs_cdc_change *ch, gs_error *err)
{
    gs_stmt *st;
    if (prepare(cdc, LIVE_SQL, sizeof LIVE_SQL - 1, &st, err) != GS_OK)
        return -1;
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    sqlite3_bind_int64(ss, 1, (sqlite3_int64)cdc->feed_last);
    int rc, n = 0;
    /* the position moves row by row, so a read that fails part way never offers a row twice */
    cdc->feed_drained = 0;
    while ((rc = gs_conn_step(cdc->feed_conn, st, err)) == SQLITE_ROW) {
        n++;
        cdc->feed_last = (uint64_t)sqlite3_column_int64(ss, 0);
        snprintf(cdc->feed_last_tx, sizeof cdc->feed_last_tx, "%s", col_text(ss, 8));
        if (!table_has_live_sub(cdc, col_text(ss, 1)))
            continue;
        change_from_row(ch, ss);
        for (gs_cdc_sub *s = cdc->subs; s; s = s->next)
            if (!atomic_load(&s->dead) && !s->catching_up && s->cursor < ch->seq &&
                strcmp(s->table, ch->table) == 0)
                gs_cdc_sub_offer(cdc, s, ch);
    }
    gs_conn_release(cdc->feed_conn, st);
    if (rc != SQLITE_DONE)
        return -1;
    cdc->feed_drained = n < GS_CDC_READ_LIMIT;
    for (gs_cdc_sub *s = cdc->subs; s; s = s->next)
        if (!atomic_load(&s->dead) && !s->catching_up) {
            s->cursor = cdc->feed_last;
            gs_cdc_sub_end_read(cdc, s);
        }
    return n;
}

/* Replay up to READS_PER_CYCLE chunks of a resuming subscription's table. Returns 1 when it
 * has caught up with the feed, 0 when more remains, -1 on error. */
static int catch_up(gs_cdc *cdc, gs_cdc_sub *s, gs_cdc_change *ch, gs_error *err)
{
    for (int chunk = 0; chunk < READS_PER_CYCLE; chunk++) {
        if (atomic_load(&s->dead))
            return 1;
        if (s->cursor >= cdc->feed_last)
            break;
        gs_stmt *st;
        if (prepare(cdc, CATCHUP_SQL, sizeof CATCHUP_SQL - 1, &st, err) != GS_OK)
            return -1;
        sqlite3_stmt *ss = gs_stmt_sqlite(st);
        sqlite3_bind_text(ss, 1, s->table, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ss, 2, (sqlite3_int64)s->cursor);
        sqlite3_bind_int64(ss, 3, (sqlite3_int64)cdc->feed_last);
        int rc, n = 0;
        uint64_t last = s->cursor;
        while ((rc = gs_conn_step(cdc->feed_conn, st, err)) == SQLITE_ROW) {
            n++;
            change_from_row(ch, ss);
            last = ch->seq;
            if (!atomic_load(&s->dead))
                gs_cdc_sub_offer(cdc, s, ch);
        }
        gs_conn_release(cdc->feed_conn, st);
        if (rc != SQLITE_DONE)
            return -1;
        s->cursor = n < GS_CDC_READ_LIMIT ? cdc->feed_last : last;
    }
    if (s->cursor < cdc->feed_last)
        return 0;
    /* level with the feed: the feed's own state says whether the held change's transaction
     * is over */
    s->catching_up = 0;
    gs_cdc_sub_end_read(cdc, s);
    return 1;
}

/* Lowest seq a retention prune must keep above. */
static void update_hold(gs_cdc *cdc)
{
    uint64_t hold = UINT64_MAX;
    if (cdc->subs) {
        hold = cdc->positioned ? cdc->feed_last : 0;
        for (gs_cdc_sub *s = cdc->subs; s; s = s->next)
            if (!atomic_load(&s->dead) && s->cursor < hold)
                hold = s->cursor;
    }
    atomic_store(&cdc->hold, hold);
}

void gs_cdc_reap(gs_cdc *cdc)
{
    gs_cdc_sub **pp = &cdc->subs;
    while (*pp) {
        gs_cdc_sub *s = *pp;
        if (atomic_load(&s->dead)) {
            *pp = s->next;
            gs_cdc_sub_free(s);
        } else {
            pp = &s->next;
        }
    }
    if (!cdc->subs) {
        /* nobody listens: the next subscriber starts from the log's end as it is then */
        cdc->positioned = 0;
        atomic_store(&cdc->hold, UINT64_MAX);
    }
}

/* One cycle under feed_lock. Returns 1 when more work is waiting, -1 when a read failed. */
static int feed_cycle(gs_cdc *cdc, gs_cdc_change *ch)
{
    gs_error err;
    gs_error_init(&err);
    int more = 0;
    pthread_mutex_lock(&cdc->feed_lock);
    gs_cdc_reap(cdc);
    if (!cdc->subs) {
        pthread_mutex_unlock(&cdc->feed_lock);
        return 0;
    }
    if (gs_cdc_feed_position(cdc, &err) != GS_OK)
        goto failed;
    for (gs_cdc_sub *s = cdc->subs; s; s = s->next) {
        if (!s->catching_up || atomic_load(&s->dead))
            continue;
        int r = catch_up(cdc, s, ch, &err);
        if (r < 0)
            goto failed;
        more |= r == 0;
    }
    for (int i = 0; i < READS_PER_CYCLE; i++) {
        int n = live_read(cdc, ch, &err);
        if (n < 0)
            goto failed;
        cdc->reads_since_prune++;
        if (n < GS_CDC_READ_LIMIT)
            break;
        if (i + 1 == READS_PER_CYCLE)
            more = 1;
    }
    gs_cdc_reap(cdc);
    update_hold(cdc);
    pthread_mutex_unlock(&cdc->feed_lock);
    return more;
failed:
    gs_cdc_reap(cdc);
    pthread_mutex_unlock(&cdc->feed_lock);
    if (strcmp(err.code, "DATABASE_CLOSED") != 0)
        gs_log(GS_LOG_WARN, "cdc", "database '%s': reading the change log failed: %s (retrying)",
               cdc->db->id, err.message);
    return -1;
}

static void *feed_main(void *arg)
{
    gs_cdc *cdc = arg;
    cdc->feed_self = pthread_self();
    atomic_store_explicit(&cdc->feed_running, 1, memory_order_release);
    gs_cdc_change ch;
    change_init(&ch);
    cdc->next_prune_ms = mono_ms() + PRUNE_INTERVAL_MS;
    int failures = 0;
    pthread_mutex_lock(&cdc->wake_mu);
    while (!cdc->stop) {
        if (!cdc->wake) {
            int64_t now = mono_ms();
            int64_t wait = cdc->next_prune_ms - now;
            int64_t poll = cdc->db->opts.cdc_fallback_poll_ms;
            if (atomic_load(&cdc->nsubs) > 0 && poll > 0 && poll < wait)
                wait = poll;
            if (failures > 0 && wait > 100 * failures)
                wait = 100 * (int64_t)failures; /* back off, then retry a failed read */
            if (wait > 0) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                int64_t ns = ts.tv_nsec + (wait % 1000) * 1000000LL;
                ts.tv_sec += wait / 1000 + ns / 1000000000LL;
                ts.tv_nsec = ns % 1000000000LL;
                pthread_cond_timedwait(&cdc->wake_cond, &cdc->wake_mu, &ts);
            }
            if (cdc->stop)
                break;
        }
        cdc->wake = 0;
        pthread_mutex_unlock(&cdc->wake_mu);

        int more = feed_cycle(cdc, &ch);
        if (more < 0) {
            if (failures < 50)
                failures++;
            more = 0;
        } else {
            failures = 0;
        }
        if (cdc->reads_since_prune >= PRUNE_READS || mono_ms() >= cdc->next_prune_ms) {
            cdc->reads_since_prune = 0;
            cdc->next_prune_ms = mono_ms() + PRUNE_INTERVAL_MS;
            gs_cdc_queue_prune(cdc);
        }

        pthread_mutex_lock(&cdc->wake_mu);
        if (more)
            cdc->wake = 1;
    }
    pthread_mutex_unlock(&cdc->wake_mu);
    change_free(&ch);
    return NULL;
}

gs_status gs_cdc_feed_start(gs_cdc *cdc, gs_error *err)
{
    pthread_mutex_lock(&cdc->feed_lock);
    if (cdc->feed_started || cdc->closing) {
        int stopped = cdc->closing;
        pthread_mutex_unlock(&cdc->feed_lock);
        if (stopped)
            return gs_error_set(err, 0, "DATABASE_CLOSED", "database '%s' is closed", cdc->db->id);
        return GS_OK;
    }
    const gs_db_options *o = &cdc->db->opts;
    gs_conn_options co = {
        .path = cdc->db->path,
        .role = GS_CONN_READER,
        .create = 0,
        .wal = o->wal,
        .sync_level = cdc->db->sync_level,
        .wal_autocheckpoint = -1,
        .busy_timeout_ms = o->busy_timeout_ms,
        .stmt_cache_size = 16,
    };
    if (gs_conn_open(&co, &cdc->feed_conn, err) != GS_OK) {
        pthread_mutex_unlock(&cdc->feed_lock);
        gs_error_prefix(err, "starting the change feed");
        return GS_ERROR;
    }
    if (pthread_create(&cdc->feed_thread, NULL, feed_main, cdc) != 0) {
        gs_conn_close(cdc->feed_conn);
        cdc->feed_conn = NULL;
        pthread_mutex_unlock(&cdc->feed_lock);
        return gs_error_set(err, 0, "CDC_ERROR", "cannot start the change feed thread: %s",
                            strerror(errno));
    }
    cdc->feed_started = 1;
    pthread_mutex_unlock(&cdc->feed_lock);
    return GS_OK;
}

void gs_cdc_feed_stop(gs_cdc *cdc)
{
    if (!cdc)
        return;
    pthread_mutex_lock(&cdc->feed_lock);
    int started = cdc->feed_started;
    cdc->closing = 1;
    pthread_mutex_unlock(&cdc->feed_lock);
    pthread_mutex_lock(&cdc->wake_mu);
    cdc->stop = 1;
    pthread_cond_signal(&cdc->wake_cond);
    pthread_mutex_unlock(&cdc->wake_mu);
    if (started)
        pthread_join(cdc->feed_thread, NULL);
    pthread_mutex_lock(&cdc->feed_lock);
    cdc->feed_started = 0;
    atomic_store(&cdc->feed_running, 0);
    gs_conn_close(cdc->feed_conn);
    cdc->feed_conn = NULL;
    gs_cdc_reap(cdc);
    pthread_mutex_unlock(&cdc->feed_lock);
}
