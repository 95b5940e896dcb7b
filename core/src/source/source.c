/*
 * Sources: one thread per source following remote tables (see source.h for the contract).
 *
 * A source's thread runs: connect (list the remote tables) -> prepare local tables ->
 * subscribe to each table -> copy the tables it holds no position for -> apply queued change
 * events, in order, in batches, each batch with its positions in one local transaction.
 * Events arrive on the client library's I/O thread (on_event), which only copies them into
 * the source's queue: applying them waits for the local writer, which an I/O thread must not.
 *
 * The position stored with a copy: the remote cursor read after subscribing, lowered to just
 * below the first change of that table already queued (a change delivered before the cursor
 * was read is then replayed on a restart, never skipped). Replaying a change is harmless:
 * every change is applied as a full-row upsert or a delete by key, so applying the stream
 * from any point at or below the copy's converges on the remote state.
 */
#include "source.h"
#include "source_apply.h"
#include "source_names.h"
#include "../repl/rowsql.h"

#include "../base/alloc.h"
#include "../base/error.h"
#include "../base/log.h"

#include <gatestream/client.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define APPLY_BATCH_MAX 500
#define REQUEST_TIMEOUT_MS 10000
#define CONNECT_TIMEOUT_MS 3000

enum { Q_CHANGE = 1, Q_RESYNC, Q_DISCONNECTED, Q_RESUMED, Q_ERROR };

typedef struct qitem {
    struct qitem *next;
    int kind;
    size_t table;
    int is_delete;
    uint64_t seq;
    char epoch[GS_SOURCE_EPOCH_MAX];
    size_t count;
    char **cols;
    gs_value *vals;
    gs_error err;
} qitem;

struct src;

typedef struct stable {
    struct src *owner;
    size_t index;
    char remote[GS_SOURCE_NAME_MAX];
    char local[GS_SOURCE_NAME_MAX];
    char **pk;
    size_t npk;
    gs_client_sub *sub;
    uint64_t seq; /* applied position (0 with has_position 0 = none) */
    char epoch[GS_SOURCE_EPOCH_MAX];
    int has_position;
    int need_copy;
} stable;

typedef struct src {
    gs_sources *all;
    gs_source_config cfg;
    gs_database *db;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    qitem *head, *tail;
    /* status (mu) */
    gs_source_state state;
    int state_logged; /* a state was logged once: the first `connecting` is logged too */
    char last_error[600];
    int64_t last_error_at_ms; /* wall clock, Unix ms; 0 = none */
    uint64_t position;
    int64_t last_apply_ms;
    int64_t rows_bootstrapped, bootstraps, changes_applied;
    /* the thread's own */
    gs_client *client;
    gs_client_db *cdb;
    stable *tables;
    size_t ntables;
    unsigned rng;
} src;

struct gs_sources {
    gs_registry *reg;
    src *items;
    size_t n;
    int stopped;
};

const char *gs_source_state_name(gs_source_state s)
{
    switch (s) {
    case GS_SOURCE_CONNECTING: return "connecting";
    case GS_SOURCE_BOOTSTRAPPING: return "bootstrapping";
    case GS_SOURCE_FOLLOWING: return "following";
    case GS_SOURCE_RETRYING: return "retrying";
    case GS_SOURCE_FAILED: return "failed";
    }
    return "unknown";
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- queue items ---- */

static void qitem_free(qitem *q)
{
    if (!q)
        return;
    for (size_t i = 0; i < q->count; i++) {
        gs_free(q->cols[i]);
        if (q->vals[i].type == GS_VALUE_TEXT)
            gs_free((void *)q->vals[i].u.text.ptr);
        else if (q->vals[i].type == GS_VALUE_BLOB)
            gs_free((void *)q->vals[i].u.blob.ptr);
    }
    gs_free(q->cols);
    gs_free(q->vals);
    gs_free(q);
}

static int copy_row(qitem *q, const gs_client_row *row)
{
    if (!row->count)
        return 0;
    q->cols = gs_calloc(row->count, sizeof *q->cols);
    q->vals = gs_calloc(row->count, sizeof *q->vals);
    if (!q->cols || !q->vals)
        return -1;
    for (size_t i = 0; i < row->count; i++) {
        q->count = i + 1;
        q->vals[i].type = GS_VALUE_NULL;
        q->cols[i] = gs_strdup(row->columns[i]);
        if (!q->cols[i])
            return -1;
        const gs_value *v = &row->values[i];
        q->vals[i] = *v;
        if (v->type == GS_VALUE_TEXT || v->type == GS_VALUE_BLOB) {
            size_t len = v->type == GS_VALUE_TEXT ? v->u.text.len : v->u.blob.len;
            const void *p = v->type == GS_VALUE_TEXT ? (const void *)v->u.text.ptr
                                                     : (const void *)v->u.blob.ptr;
            char *copy = gs_malloc(len + 1);
            if (!copy) {
                q->vals[i].type = GS_VALUE_NULL;
                return -1;
            }
            if (len)
                memcpy(copy, p, len);
            copy[len] = '\0';
            if (v->type == GS_VALUE_TEXT)
                q->vals[i].u.text.ptr = copy;
            else
                q->vals[i].u.blob.ptr = (const uint8_t *)copy;
        }
    }
    return 0;
}

static void push(src *s, qitem *q)
{
    pthread_mutex_lock(&s->mu);
    if (s->tail)
        s->tail->next = q;
    else
        s->head = q;
    s->tail = q;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void queue_clear(src *s)
{
    pthread_mutex_lock(&s->mu);
    qitem *q = s->head;
    s->head = s->tail = NULL;
    pthread_mutex_unlock(&s->mu);
    while (q) {
        qitem *next = q->next;
        qitem_free(q);
        q = next;
    }
}

/* The client library's I/O thread: copy the event into the queue and return. */
static void on_event(void *user, const gs_client_event *ev)
{
    stable *t = user;
    src *s = t->owner;
    qitem *q = gs_calloc(1, sizeof *q);
    if (!q) {
        /* a change that cannot be queued must not be skipped silently: end the session */
        gs_log(GS_LOG_ERROR, "source", "source '%s': out of memory queueing a change", s->cfg.id);
        return;
    }
    gs_error_init(&q->err);
    q->table = t->index;
    if (ev->epoch)
        snprintf(q->epoch, sizeof q->epoch, "%s", ev->epoch);
    switch (ev->kind) {
    case GS_CLIENT_EVENT_CHANGE:
        q->kind = Q_CHANGE;
        q->is_delete = ev->type && strcmp(ev->type, "delete") == 0;
        q->seq = ev->seq_num;
        /* a delete carries the old image; take whichever image the server sent */
        if (copy_row(q, ev->row.count || !q->is_delete ? &ev->row : &ev->old_row) != 0) {
            qitem_free(q);
            q = gs_calloc(1, sizeof *q);
            if (!q)
                return;
            q->kind = Q_ERROR;
            gs_error_set(&q->err, 0, "INTERNAL_ERROR", "out of memory copying a change");
        }
        break;
    case GS_CLIENT_EVENT_RESYNC: q->kind = Q_RESYNC; break;
    case GS_CLIENT_EVENT_DISCONNECTED:
        q->kind = Q_DISCONNECTED;
        if (ev->error)
            gs_error_copy(&q->err, ev->error);
        break;
    case GS_CLIENT_EVENT_RESUMED: q->kind = Q_RESUMED; break;
    default:
        q->kind = Q_ERROR;
        if (ev->error)
            gs_error_copy(&q->err, ev->error);
        else
            gs_error_set(&q->err, 0, "CONNECTION_ERROR", "the subscription ended");
        break;
    }
    push(s, q);
}

/* ---- state ---- */

static const char *state_hint(gs_source_state st, const gs_error *why)
{
    if (st == GS_SOURCE_FAILED)
        return "; fix the source's url, token or the remote's configuration (the remote must "
               "accept SQL); retrying at retry_max_ms";
    if (st != GS_SOURCE_RETRYING)
        return "";
    if (why && (strcmp(why->code, "CONNECTION_ERROR") == 0 || strcmp(why->code, "TIMEOUT") == 0))
        return "; retrying with backoff (check that the remote node is up and the url is right)";
    return "; retrying with backoff (reconnects, lists the remote tables again and resumes)";
}

/* Set the state; log it once per change (not once per retry). */
static void set_state(src *s, gs_source_state st, const gs_error *why)
{
    pthread_mutex_lock(&s->mu);
    int changed = s->state != st || !s->state_logged;
    s->state = st;
    s->state_logged = 1;
    if (why && why->code[0]) {
        snprintf(s->last_error, sizeof s->last_error, "%s: %s", why->code, why->message);
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        s->last_error_at_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    }
    pthread_mutex_unlock(&s->mu);
    if (!changed)
        return;
    gs_log_level lvl =
        st == GS_SOURCE_RETRYING || st == GS_SOURCE_FAILED ? GS_LOG_WARN : GS_LOG_INFO;
    if (why && why->code[0])
        gs_log(lvl, "source", "source '%s' of database '%s' (%s): %s: %s: %s%s", s->cfg.id,
               s->cfg.database, s->cfg.url, gs_source_state_name(st), why->code, why->message,
               state_hint(st, why));
    else
        gs_log(lvl, "source", "source '%s' of database '%s' (%s): %s", s->cfg.id, s->cfg.database,
               s->cfg.url, gs_source_state_name(st));
}

static int stopping(src *s)
{
    pthread_mutex_lock(&s->mu);
    int st = s->stop;
    pthread_mutex_unlock(&s->mu);
    return st;
}

/* ---- session: connect, tables, subscriptions ---- */

static void tables_free(src *s)
{
    for (size_t i = 0; i < s->ntables; i++) {
        for (size_t k = 0; k < s->tables[i].npk; k++)
            gs_free(s->tables[i].pk[k]);
        gs_free(s->tables[i].pk);
    }
    gs_free(s->tables);
    s->tables = NULL;
    s->ntables = 0;
}

static void session_end(src *s)
{
    /* closing the client ends every subscription: on_event does not run again afterwards */
    gs_client_close(s->client);
    s->client = NULL;
    s->cdb = NULL;
    queue_clear(s);
    tables_free(s);
}

static gs_status session_open(src *s, gs_error *err)
{
    gs_client_config cc;
    gs_client_config_init(&cc);
    cc.transport = GS_CLIENT_TRANSPORT_WEBSOCKET;
    cc.bearer_token = s->cfg.token;
    cc.ca_file = s->cfg.tls_ca_cert;
    cc.auto_reconnect = 1;
    cc.reconnect_interval_ms = s->cfg.retry_initial_ms;
    cc.reconnect_max_ms = s->cfg.retry_max_ms;
    cc.request_timeout_ms = REQUEST_TIMEOUT_MS;
    cc.connect_timeout_ms = CONNECT_TIMEOUT_MS;
    const char *urls[] = {s->cfg.url};
    if (gs_client_open(urls, 1, &cc, &s->client, err) != GS_OK)
        return GS_ERROR;
    s->cdb = gs_client_database(s->client, s->cfg.remote_database, err);
    return s->cdb ? GS_OK : GS_ERROR;
}

static int pattern_named(const src *s, const char *name)
{
    for (size_t i = 0; i < s->cfg.table_count; i++)
        if (gs_source_pattern_matches(s->cfg.tables[i], name))
            return 1;
    return 0;
}

static gs_status add_table(src *s, const char *remote, const char *create_remote,
                           const gs_source_position *stored, size_t nstored, gs_error *err)
{
    stable *grown = gs_realloc(s->tables, (s->ntables + 1) * sizeof *grown);
    if (!grown)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    s->tables = grown;
    stable *t = &s->tables[s->ntables];
    memset(t, 0, sizeof *t);
    t->owner = s;
    t->index = s->ntables;
    snprintf(t->remote, sizeof t->remote, "%s", remote);
    if (gs_source_local_name(s->cfg.prefix, remote, t->local, sizeof t->local, err) != GS_OK)
        return GS_ERROR;
    gs_buf create;
    gs_buf_init(&create);
    if (gs_source_create_sql(create_remote, t->local, &create, err) != GS_OK) {
        gs_buf_free(&create);
        gs_error_prefix(err, "remote table '%s'", remote);
        return GS_ERROR;
    }
    int created = 0;
    gs_status rc =
        gs_source_table_prepare(s->db, t->local, create.data, &created, &t->pk, &t->npk, err);
    gs_buf_free(&create);
    s->ntables++; /* owns its pk list from here */
    if (rc != GS_OK)
        return GS_ERROR;
    if (created)
        gs_log(GS_LOG_INFO, "source", "source '%s': created local table '%s' from remote '%s'",
               s->cfg.id, t->local, remote);
    for (size_t i = 0; i < nstored; i++)
        if (strcmp(stored[i].remote_table, remote) == 0 &&
            strcmp(stored[i].local_table, t->local) == 0 && stored[i].seq[0] &&
            !created) { /* a position without its table (dropped locally) is void */
            t->seq = strtoull(stored[i].seq, NULL, 10);
            snprintf(t->epoch, sizeof t->epoch, "%s", stored[i].epoch);
            t->has_position = 1;
        }
    t->need_copy = !t->has_position;
    return GS_OK;
}

/* List the remote tables the patterns name and prepare their local copies. */
static gs_status discover(src *s, gs_error *err)
{
    gs_source_position *stored = NULL;
    size_t nstored = 0;
    if (gs_source_catalogue_load(s->db, s->cfg.id, &stored, &nstored, err) != GS_OK) {
        gs_error_prefix(err, "reading the stored positions");
        return GS_ERROR;
    }
    gs_client_rows *rows = NULL;
    gs_status rc = gs_client_query(s->cdb,
                                   "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                                   "ORDER BY name",
                                   NULL, NULL, &rows, err);
    if (rc != GS_OK) {
        gs_error_prefix(err, "listing the tables of remote database '%s'", s->cfg.remote_database);
        gs_free(stored);
        return GS_ERROR;
    }
    size_t n = gs_client_rows_count(rows);
    for (size_t r = 0; rc == GS_OK && r < n; r++) {
        const gs_value *name = gs_client_rows_get(rows, r, 0);
        const gs_value *sql = gs_client_rows_get(rows, r, 1);
        if (name->type != GS_VALUE_TEXT || sql->type != GS_VALUE_TEXT)
            continue;
        char nm[GS_SOURCE_NAME_MAX];
        snprintf(nm, sizeof nm, "%.*s", (int)name->u.text.len, name->u.text.ptr);
        if (gs_source_reserved_name(nm) || !pattern_named(s, nm))
            continue;
        char *create = gs_strndup(sql->u.text.ptr, sql->u.text.len);
        if (!create) {
            rc = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
            break;
        }
        rc = add_table(s, nm, create, stored, nstored, err);
        gs_free(create);
    }
    gs_client_rows_free(rows);
    gs_free(stored);
    if (rc != GS_OK)
        return GS_ERROR;
    /* an exact name the remote does not have is a configuration error worth retrying on
     * (the table may be created later) */
    for (size_t i = 0; i < s->cfg.table_count; i++) {
        const char *p = s->cfg.tables[i];
        if (strchr(p, '*'))
            continue;
        int found = 0;
        for (size_t k = 0; k < s->ntables && !found; k++)
            found = strcasecmp(s->tables[k].remote, p) == 0;
        if (!found)
            return gs_error_set(err, 0, "TABLE_NOT_FOUND",
                                "remote database '%s' has no table '%s'; create it there or "
                                "remove it from the source's tables",
                                s->cfg.remote_database, p);
    }
    return GS_OK;
}

static gs_status subscribe_all(src *s, gs_error *err)
{
    for (size_t i = 0; i < s->ntables; i++) {
        stable *t = &s->tables[i];
        gs_client_sub_opts o;
        gs_client_sub_opts_init(&o);
        char since[GS_SOURCE_SEQ_MAX];
        if (t->has_position) {
            snprintf(since, sizeof since, "%" PRIu64, t->seq);
            o.since_seq = since;
            o.epoch = t->epoch[0] ? t->epoch : NULL;
        }
        if (gs_client_subscribe(s->cdb, t->remote, NULL, &o, on_event, t, &t->sub, err) != GS_OK) {
            gs_error_prefix(err, "subscribing to remote table '%s'", t->remote);
            return GS_ERROR;
        }
        if (t->has_position)
            gs_log(GS_LOG_INFO, "source", "source '%s': resuming table '%s' from seq %" PRIu64,
                   s->cfg.id, t->local, t->seq);
    }
    return GS_OK;
}

/* ---- copying a table ---- */

/* The position a copy of t stores: the cursor now, lowered below the first queued change of t
 * (after the queue item `after`, when given). */
static uint64_t copy_position(src *s, stable *t, const qitem *after, char *epoch, size_t cap)
{
    char seq[GS_SOURCE_SEQ_MAX] = "";
    char ep[GS_SOURCE_EPOCH_MAX] = "";
    gs_client_sub_cursor(t->sub, seq, sizeof seq, ep, sizeof ep);
    uint64_t pos = strtoull(seq, NULL, 10);
    pthread_mutex_lock(&s->mu);
    const qitem *q = after ? after->next : s->head;
    for (; q; q = q->next)
        if (q->kind == Q_CHANGE && q->table == t->index) {
            if (q->seq && q->seq - 1 < pos)
                pos = q->seq - 1;
            break;
        }
    pthread_mutex_unlock(&s->mu);
    snprintf(epoch, cap, "%s", ep);
    return pos;
}

static gs_status copy_table(src *s, stable *t, const qitem *after, gs_error *err)
{
    set_state(s, GS_SOURCE_BOOTSTRAPPING, NULL);
    char epoch[GS_SOURCE_EPOCH_MAX];
    uint64_t pos = copy_position(s, t, after, epoch, sizeof epoch);
    gs_log(GS_LOG_INFO, "source",
           "source '%s': copying remote table '%s' into '%s' (from seq %" PRIu64 ")", s->cfg.id,
           t->remote, t->local, pos);
    gs_buf sql;
    gs_buf_init(&sql);
    gs_client_rows *prev = NULL, *rows = NULL;
    gs_value *key = gs_calloc(t->npk, sizeof *key);
    gs_source_op *ops = gs_calloc((size_t)s->cfg.page_rows, sizeof *ops);
    const char *clear[] = {t->local};
    int64_t copied = 0;
    gs_status rc = key && ops ? GS_OK : gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    for (int first = 1; rc == GS_OK; first = 0) {
        if (stopping(s)) {
            rc = gs_error_set(err, 0, "SHUTTING_DOWN", "the node is stopping");
            break;
        }
        gs_buf_reset(&sql);
        gs_buf_puts(&sql, "SELECT * FROM ");
        gs_repl_quote_ident(&sql, t->remote);
        if (!first) {
            gs_buf_puts(&sql, " WHERE (");
            for (size_t k = 0; k < t->npk; k++) {
                if (k)
                    gs_buf_putc(&sql, ',');
                gs_repl_quote_ident(&sql, t->pk[k]);
            }
            gs_buf_puts(&sql, ") > (");
            for (size_t k = 0; k < t->npk; k++)
                gs_buf_puts(&sql, k ? ",?" : "?");
            gs_buf_putc(&sql, ')');
        }
        gs_buf_puts(&sql, " ORDER BY ");
        for (size_t k = 0; k < t->npk; k++) {
            if (k)
                gs_buf_putc(&sql, ',');
            gs_repl_quote_ident(&sql, t->pk[k]);
        }
        gs_buf_printf(&sql, " LIMIT %lld", (long long)s->cfg.page_rows);
        if (sql.oom) {
            rc = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
            break;
        }
        gs_client_params params = gs_client_positional(key, first ? 0 : t->npk);
        rc = gs_client_query(s->cdb, sql.data, first ? NULL : &params, NULL, &rows, err);
        if (rc != GS_OK) {
            gs_error_prefix(err, "copying remote table '%s'", t->remote);
            break;
        }
        gs_client_rows_free(prev); /* the key values pointed into it */
        prev = NULL;
        size_t n = gs_client_rows_count(rows);
        for (size_t r = 0; r < n; r++) {
            gs_client_row row = gs_client_rows_row(rows, r);
            ops[r] = (gs_source_op){.local = t->local,
                                    .pk = (const char *const *)t->pk,
                                    .npk = t->npk,
                                    .count = row.count,
                                    .cols = row.columns,
                                    .vals = row.values};
        }
        int last = n < (size_t)s->cfg.page_rows;
        gs_source_position p;
        memset(&p, 0, sizeof p);
        snprintf(p.remote_table, sizeof p.remote_table, "%s", t->remote);
        snprintf(p.local_table, sizeof p.local_table, "%s", t->local);
        snprintf(p.seq, sizeof p.seq, "%" PRIu64, pos);
        snprintf(p.epoch, sizeof p.epoch, "%s", epoch);
        p.rows_bootstrapped = copied + (int64_t)n;
        gs_source_batch b = {.source_id = s->cfg.id,
                             .clear = first ? clear : NULL,
                             .nclear = first ? 1 : 0,
                             .ops = ops,
                             .nops = n,
                             .positions = last ? &p : NULL,
                             .npositions = last ? 1 : 0};
        rc = gs_source_apply(s->db, &b, err);
        if (rc != GS_OK) {
            gs_error_prefix(err, "copying into local table '%s'", t->local);
            break;
        }
        copied += (int64_t)n;
        pthread_mutex_lock(&s->mu);
        s->rows_bootstrapped += (int64_t)n;
        pthread_mutex_unlock(&s->mu);
        if (last)
            break;
        /* the next page starts after this page's last key */
        gs_client_row lastrow = gs_client_rows_row(rows, n - 1);
        for (size_t k = 0; k < t->npk; k++) {
            key[k] = gs_client_val_null();
            for (size_t c = 0; c < lastrow.count; c++)
                if (strcasecmp(lastrow.columns[c], t->pk[k]) == 0)
                    key[k] = lastrow.values[c];
        }
        prev = rows;
        rows = NULL;
    }
    gs_client_rows_free(prev);
    gs_client_rows_free(rows);
    gs_buf_free(&sql);
    gs_free(key);
    gs_free(ops);
    if (rc != GS_OK)
        return GS_ERROR;
    t->seq = pos;
    snprintf(t->epoch, sizeof t->epoch, "%s", epoch);
    t->has_position = 1;
    t->need_copy = 0;
    pthread_mutex_lock(&s->mu);
    s->bootstraps++;
    if (pos > s->position)
        s->position = pos;
    pthread_mutex_unlock(&s->mu);
    gs_log(GS_LOG_INFO, "source", "source '%s': copied %lld rows of '%s' into '%s'", s->cfg.id,
           (long long)copied, t->remote, t->local);
    return GS_OK;
}

/* ---- following ---- */

/* Apply the changes items[0..n) in one transaction with their tables' positions. */
static gs_status apply_changes(src *s, qitem **items, size_t n, gs_error *err)
{
    if (n == 0)
        return GS_OK;
    gs_source_op *ops = gs_calloc(n, sizeof *ops);
    gs_source_position *pos = gs_calloc(s->ntables, sizeof *pos);
    size_t *slot = gs_calloc(s->ntables, sizeof *slot);
    if (!ops || !pos || !slot) {
        gs_free(ops);
        gs_free(pos);
        gs_free(slot);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    size_t npos = 0;
    uint64_t top = 0;
    for (size_t i = 0; i < n; i++) {
        qitem *q = items[i];
        stable *t = &s->tables[q->table];
        ops[i] = (gs_source_op){.local = t->local,
                                .pk = (const char *const *)t->pk,
                                .npk = t->npk,
                                .is_delete = q->is_delete,
                                .count = q->count,
                                .cols = (const char *const *)q->cols,
                                .vals = q->vals};
        if (!slot[q->table]) {
            slot[q->table] = ++npos;
            gs_source_position *p = &pos[npos - 1];
            snprintf(p->remote_table, sizeof p->remote_table, "%s", t->remote);
            snprintf(p->local_table, sizeof p->local_table, "%s", t->local);
        }
        gs_source_position *p = &pos[slot[q->table] - 1];
        snprintf(p->seq, sizeof p->seq, "%" PRIu64, q->seq);
        snprintf(p->epoch, sizeof p->epoch, "%s", q->epoch[0] ? q->epoch : t->epoch);
        if (q->seq > top)
            top = q->seq;
    }
    gs_source_batch b = {
        .source_id = s->cfg.id, .ops = ops, .nops = n, .positions = pos, .npositions = npos};
    gs_status rc = gs_source_apply(s->db, &b, err);
    if (rc == GS_OK) {
        for (size_t i = 0; i < npos; i++)
            for (size_t k = 0; k < s->ntables; k++)
                if (slot[k] == i + 1) {
                    s->tables[k].seq = strtoull(pos[i].seq, NULL, 10);
                    snprintf(s->tables[k].epoch, sizeof s->tables[k].epoch, "%s", pos[i].epoch);
                }
        pthread_mutex_lock(&s->mu);
        s->changes_applied += (int64_t)n;
        s->last_apply_ms = mono_ms();
        if (top > s->position)
            s->position = top;
        pthread_mutex_unlock(&s->mu);
    }
    gs_free(ops);
    gs_free(pos);
    gs_free(slot);
    return rc;
}

/* Take queued items: changes into items[] (up to max), stopping before a control item,
 * which is returned in *ctl (or NULL). Waits up to wait_ms when the queue is empty. */
static size_t take(src *s, qitem **items, size_t max, qitem **ctl, int64_t wait_ms)
{
    size_t n = 0;
    *ctl = NULL;
    pthread_mutex_lock(&s->mu);
    if (!s->head && !s->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += wait_ms / 1000;
        ts.tv_nsec += (wait_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    while (s->head && n < max) {
        qitem *q = s->head;
        if (q->kind != Q_CHANGE) {
            if (n == 0) {
                s->head = q->next;
                if (!s->head)
                    s->tail = NULL;
                q->next = NULL;
                *ctl = q;
            }
            break;
        }
        s->head = q->next;
        if (!s->head)
            s->tail = NULL;
        q->next = NULL;
        items[n++] = q;
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* Follow until the session fails or the node stops. *delay goes back to retry_initial_ms once
 * a batch applied: a session that fails before applying anything (a change that cannot be
 * applied, say) keeps backing off instead of spinning. */
static gs_status follow(src *s, int64_t *delay, gs_error *err)
{
    qitem *items[APPLY_BATCH_MAX];
    set_state(s, GS_SOURCE_FOLLOWING, NULL);
    while (!stopping(s)) {
        qitem *ctl;
        size_t n = take(s, items, APPLY_BATCH_MAX, &ctl, 1000);
        gs_status rc = apply_changes(s, items, n, err);
        for (size_t i = 0; i < n; i++)
            qitem_free(items[i]);
        if (rc != GS_OK) {
            qitem_free(ctl);
            return GS_ERROR;
        }
        if (n)
            *delay = s->cfg.retry_initial_ms;
        if (!ctl)
            continue;
        switch (ctl->kind) {
        case Q_RESYNC: {
            stable *t = &s->tables[ctl->table];
            gs_log(GS_LOG_WARN, "source",
                   "source '%s': the remote cannot resume table '%s' from seq %" PRIu64
                   " (history pruned or database replaced); copying it again",
                   s->cfg.id, t->remote, t->seq);
            /* ctl is out of the queue: changes after it are at the queue's head */
            rc = copy_table(s, t, NULL, err);
            if (rc == GS_OK)
                set_state(s, GS_SOURCE_FOLLOWING, NULL);
            break;
        }
        case Q_DISCONNECTED: set_state(s, GS_SOURCE_RETRYING, &ctl->err); break;
        case Q_RESUMED: set_state(s, GS_SOURCE_FOLLOWING, NULL); break;
        default:
            gs_error_copy(err, &ctl->err);
            rc = GS_ERROR;
            break;
        }
        qitem_free(ctl);
        if (rc != GS_OK)
            return GS_ERROR;
    }
    return GS_OK;
}

/* ---- the thread ---- */

static int permanent(const gs_error *e)
{
    static const char *const codes[] = {"UNAUTHORIZED",         "FORBIDDEN",
                                        "SQL_NOT_ACCEPTED",     "DATABASE_NOT_FOUND",
                                        "INVALID_ARGUMENT",     "INVALID_REQUEST",
                                        "FORBIDDEN_SQL",        "INVALID_CONFIG",
                                        "SNAPSHOT_UNSUPPORTED", NULL};
    for (size_t i = 0; codes[i]; i++)
        if (strcmp(e->code, codes[i]) == 0)
            return 1;
    return 0;
}

/* Sleep up to ms, woken early by stop. */
static void backoff_sleep(src *s, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&s->mu);
}

static void *source_main(void *arg)
{
    src *s = arg;
    int64_t delay = s->cfg.retry_initial_ms;
    while (!stopping(s)) {
        gs_error err;
        gs_error_init(&err);
        pthread_mutex_lock(&s->mu);
        int first_try = !s->state_logged;
        pthread_mutex_unlock(&s->mu);
        if (first_try)
            set_state(s, GS_SOURCE_CONNECTING, NULL);
        gs_status rc = session_open(s, &err);
        if (rc == GS_OK)
            rc = discover(s, &err);
        if (rc == GS_OK)
            rc = subscribe_all(s, &err);
        for (size_t i = 0; rc == GS_OK && i < s->ntables; i++)
            if (s->tables[i].need_copy)
                rc = copy_table(s, &s->tables[i], NULL, &err);
        if (rc == GS_OK)
            rc = follow(s, &delay, &err);
        session_end(s);
        if (rc == GS_OK || stopping(s))
            break;
        set_state(s, permanent(&err) ? GS_SOURCE_FAILED : GS_SOURCE_RETRYING, &err);
        int64_t wait = permanent(&err) ? s->cfg.retry_max_ms : delay;
        /* +/-20% jitter so sources retrying one remote do not arrive together */
        int64_t span = wait / 5;
        if (span > 0)
            wait += (int64_t)(rand_r(&s->rng) % (unsigned)(2 * span + 1)) - span;
        backoff_sleep(s, wait);
        delay = delay * 2 > s->cfg.retry_max_ms ? s->cfg.retry_max_ms : delay * 2;
    }
    return NULL;
}

/* ---- lifecycle and status ---- */

gs_status gs_sources_start(gs_registry *reg, const gs_source_config *configs, size_t n,
                           gs_sources **out, gs_error *err)
{
    *out = NULL;
    gs_sources *all = gs_calloc(1, sizeof *all);
    if (!all || (n && !(all->items = gs_calloc(n, sizeof *all->items)))) {
        gs_free(all);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    all->reg = reg;
    for (size_t i = 0; i < n; i++) {
        src *s = &all->items[i];
        s->all = all;
        s->cfg = configs[i];
        pthread_mutex_init(&s->mu, NULL);
        pthread_cond_init(&s->cv, NULL);
        s->last_apply_ms = -1;
        s->rng = (unsigned)(mono_ms() ^ (int64_t)(i * 2654435761u));
        all->n = i + 1;
        s->db = gs_registry_acquire(reg, s->cfg.database, err);
        if (!s->db) {
            gs_error_prefix(err, "source '%s'", s->cfg.id);
            gs_sources_free(all);
            return GS_ERROR;
        }
    }
    for (size_t i = 0; i < n; i++) {
        src *s = &all->items[i];
        if (pthread_create(&s->thread, NULL, source_main, s) != 0) {
            gs_error_set(err, 0, "INTERNAL_ERROR", "cannot start the thread of source '%s'",
                         s->cfg.id);
            gs_sources_free(all);
            return GS_ERROR;
        }
        s->thread_started = 1;
    }
    *out = all;
    return GS_OK;
}

void gs_sources_stop(gs_sources *all)
{
    if (!all || all->stopped)
        return;
    all->stopped = 1;
    for (size_t i = 0; i < all->n; i++) {
        src *s = &all->items[i];
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    for (size_t i = 0; i < all->n; i++) {
        src *s = &all->items[i];
        if (s->thread_started)
            pthread_join(s->thread, NULL);
        s->thread_started = 0;
        if (s->db)
            gs_registry_release(all->reg, s->db);
        s->db = NULL;
    }
}

void gs_sources_free(gs_sources *all)
{
    if (!all)
        return;
    gs_sources_stop(all);
    for (size_t i = 0; i < all->n; i++) {
        pthread_cond_destroy(&all->items[i].cv);
        pthread_mutex_destroy(&all->items[i].mu);
    }
    gs_free(all->items);
    gs_free(all);
}

gs_status gs_sources_status(gs_sources *all, gs_source_status **out, size_t *count, gs_error *err)
{
    *out = NULL;
    *count = 0;
    if (!all || !all->n)
        return GS_OK;
    gs_source_status *st = gs_calloc(all->n, sizeof *st);
    if (!st)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    int64_t now = mono_ms();
    for (size_t i = 0; i < all->n; i++) {
        src *s = &all->items[i];
        gs_source_status *o = &st[i];
        snprintf(o->database, sizeof o->database, "%s", s->cfg.database);
        snprintf(o->id, sizeof o->id, "%s", s->cfg.id);
        snprintf(o->url, sizeof o->url, "%s", s->cfg.url);
        size_t len = 0;
        for (size_t k = 0; k < s->cfg.table_count && len < sizeof o->tables; k++)
            len += (size_t)snprintf(o->tables + len, sizeof o->tables - len, "%s%s", k ? "," : "",
                                    s->cfg.tables[k]);
        pthread_mutex_lock(&s->mu);
        o->state = s->state;
        o->position_seq = s->position;
        o->lag_ms = s->last_apply_ms < 0 ? -1 : now - s->last_apply_ms;
        snprintf(o->last_error, sizeof o->last_error, "%s", s->last_error);
        o->last_error_at_ms = s->last_error_at_ms;
        o->rows_bootstrapped = s->rows_bootstrapped;
        o->bootstraps = s->bootstraps;
        o->changes_applied = s->changes_applied;
        pthread_mutex_unlock(&s->mu);
    }
    *out = st;
    *count = all->n;
    return GS_OK;
}

void gs_sources_status_json(gs_sources *all, const char *db_id, gs_buf *b)
{
    gs_source_status *st = NULL;
    size_t n = 0;
    gs_error err;
    gs_error_init(&err);
    gs_buf_putc(b, '[');
    if (gs_sources_status(all, &st, &n, &err) == GS_OK) {
        size_t shown = 0;
        for (size_t i = 0; i < n; i++) {
            const gs_source_status *o = &st[i];
            if (db_id && strcmp(db_id, o->database) != 0)
                continue;
            gs_buf_puts(b, shown++ ? ",{\"database\":" : "{\"database\":");
            gs_buf_json_string(b, o->database, strlen(o->database));
            gs_buf_puts(b, ",\"id\":");
            gs_buf_json_string(b, o->id, strlen(o->id));
            gs_buf_puts(b, ",\"endpoint\":");
            gs_buf_json_string(b, o->url, strlen(o->url));
            gs_buf_puts(b, ",\"tables\":");
            gs_buf_json_string(b, o->tables, strlen(o->tables));
            gs_buf_printf(b,
                          ",\"state\":\"%s\",\"positionSeq\":\"%" PRIu64
                          "\",\"lagChanges\":null,\"lagMs\":%lld",
                          gs_source_state_name(o->state), o->position_seq, (long long)o->lag_ms);
            gs_buf_puts(b, ",\"lastError\":");
            gs_buf_json_string(b, o->last_error, strlen(o->last_error));
            if (o->last_error_at_ms > 0)
                gs_buf_printf(b, ",\"lastErrorAtMs\":%lld", (long long)o->last_error_at_ms);
            else
                gs_buf_puts(b, ",\"lastErrorAtMs\":null");
            gs_buf_printf(b,
                          ",\"rowsBootstrapped\":%lld,\"bootstraps\":%lld,\"changesApplied\":%lld}",
                          (long long)o->rows_bootstrapped, (long long)o->bootstraps,
                          (long long)o->changes_applied);
        }
    }
    gs_buf_putc(b, ']');
    gs_free(st);
}
