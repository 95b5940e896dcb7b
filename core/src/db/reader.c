/*
 * Reader threads: each owns one read-only connection and takes QUERY jobs from the
 * database's shared reader queue (so work spreads over the pool as threads free up), runs
 * them and answers with the rows as JSON.
 */
#include "database_internal.h"

#include "base/alloc.h"
#include "base/error.h"

#include <string.h>

void gs_db_run_query(gs_conn *conn, gs_job *job, gs_buf *out, gs_row_keys *keys,
                     int require_readonly)
{
    gs_error err;
    gs_stmt *st;
    const gs_job_stmt *js = &job->stmts[0];
    if (gs_conn_prepare(conn, js->sql, js->len, 0, &st, &err) != GS_OK) {
        gs_job_answer_error(job, &err, 0);
        return;
    }
    sqlite3_stmt *ss = gs_stmt_sqlite(st);
    if (require_readonly && !sqlite3_stmt_readonly(ss)) {
        gs_conn_release(conn, st);
        gs_error_set(&err, 0, "QUERY_ERROR",
                     "a query must not modify the database; send it as an execute");
        gs_job_answer_error(job, &err, 0);
        return;
    }
    if (gs_params_bind(ss, &js->params, &err) != GS_OK) {
        gs_conn_release(conn, st);
        gs_job_answer_error(job, &err, 0);
        return;
    }
    gs_buf_reset(out);
    gs_buf_putc(out, '[');
    int rc, rows = 0;
    while ((rc = gs_conn_step(conn, st, &err)) == SQLITE_ROW) {
        if (rows++ == 0) {
            /* the column list is final once the statement has run (a re-prepare after a
             * schema change may alter it) */
            if (gs_row_keys_build(keys, ss) != 0)
                out->oom = 1;
        } else {
            gs_buf_putc(out, ',');
        }
        if (out->oom)
            break;
        gs_value_append_row(out, ss, keys);
    }
    /* reset now: the read transaction ends before the caller sees the answer */
    gs_conn_release(conn, st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        gs_job_answer_error(job, &err, 0);
        return;
    }
    gs_buf_putc(out, ']');
    if (out->oom) {
        gs_error_set(&err, 0, "INTERNAL_ERROR", "out of memory building the query result");
        gs_job_answer_error(job, &err, 0);
        return;
    }
    gs_job_answer_ok(job, out->data, out->len);
}

void *gs_db_reader_main(void *arg)
{
    gs_reader_arg ra = *(gs_reader_arg *)arg;
    gs_free(arg);
    gs_database *db = ra.db;
    gs_buf out;
    gs_row_keys keys;
    gs_buf_init(&out);
    gs_row_keys_init(&keys);
    for (;;) {
        pthread_mutex_lock(&db->rlock);
        while (!db->rq_head && !db->readers_stop)
            pthread_cond_wait(&db->reader_cond, &db->rlock);
        gs_job *job = db->rq_head;
        if (!job) {
            pthread_mutex_unlock(&db->rlock);
            break;
        }
        db->rq_head = job->next;
        if (!db->rq_head)
            db->rq_tail = NULL;
        pthread_mutex_unlock(&db->rlock);

        gs_db_run_query(ra.conn, job, &out, &keys, 0);
        gs_job_free(job);
        if (out.cap > (1u << 20))
            gs_buf_free(&out); /* do not keep a huge result buffer forever */
    }
    gs_buf_free(&out);
    gs_row_keys_free(&keys);
    gs_conn_close(ra.conn);
    return NULL;
}
