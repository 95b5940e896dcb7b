/*
 * HTTP through libcurl. Blocking requests run on the caller's thread with a handle from a
 * pool (each keeps its keep-alive connection); asynchronous requests run on one worker
 * thread driving a curl multi handle (connection cache shared by its transfers, at most
 * http_max_connections per host, more calls wait in curl's queue). The worker is started on
 * the first asynchronous call and woken with curl_multi_wakeup.
 */
#include "cl_internal.h"

#include <curl/curl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define CL_POOL_MAX 64

typedef struct cl_job {
    struct cl_job *next;
    struct cl_job *prev_active, *next_active; /**< the worker's running transfers */
    CURL *easy;
    char *url;
    char *body;
    size_t len;
    int64_t timeout_ms;
    gs_buf resp;
    int json_type;
    char errbuf[CURL_ERROR_SIZE];
    cl_http_done_fn done;
    void *ctx;
} cl_job;

struct cl_http {
    gs_client *c;
    struct curl_slist *hdrs; /**< shared, read-only once built */
    struct curl_slist *get_hdrs;
    pthread_mutex_t mu;
    CURL *pool[CL_POOL_MAX];
    size_t npool;
    /* asynchronous worker */
    CURLM *multi;
    pthread_t th;
    int started;
    int stopping;
    cl_job *queue, *queue_tail;
    cl_job *active; /**< worker thread only */
    CURL *free_easy[CL_POOL_MAX];
    size_t nfree_easy;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_ALL);
}

void cl_http_reply_clear(cl_http_reply *r)
{
    if (!r)
        return;
    gs_free(r->body);
    memset(r, 0, sizeof *r);
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    gs_buf *b = ud;
    gs_buf_append(b, p, size * n);
    return b->oom ? 0 : size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    int *json = ud;
    size_t len = size * n;
    if (len > 13 && strncasecmp(p, "content-type:", 13) == 0) {
        char v[128];
        size_t k = len - 13 < sizeof v - 1 ? len - 13 : sizeof v - 1;
        memcpy(v, p + 13, k);
        v[k] = '\0';
        *json = strstr(v, "json") != NULL;
    }
    return len;
}

cl_http *cl_http_new(gs_client *c, gs_error *err)
{
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) {
        gs_error_set(err, 0, "CONNECTION_ERROR", "libcurl failed to initialise: %s",
                     curl_easy_strerror(curl_init_rc));
        return NULL;
    }
    cl_http *h = gs_calloc(1, sizeof *h);
    if (!h) {
        gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        return NULL;
    }
    h->c = c;
    pthread_mutex_init(&h->mu, NULL);
    struct curl_slist *l = curl_slist_append(NULL, "Content-Type: application/json");
    l = l ? curl_slist_append(l, "Accept: application/json") : NULL;
    l = l ? curl_slist_append(l, "Expect:") : NULL;
    struct curl_slist *g = curl_slist_append(NULL, "Accept: application/json");
    for (size_t i = 0; i < c->nheaders; i++) {
        l = l ? curl_slist_append(l, c->headers[i]) : NULL;
        g = g ? curl_slist_append(g, c->headers[i]) : NULL;
    }
    h->hdrs = l;
    h->get_hdrs = g;
    if (!l || !g) {
        cl_http_free(h);
        gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
        return NULL;
    }
    return h;
}

static void job_free(cl_job *j)
{
    if (!j)
        return;
    gs_free(j->url);
    gs_free(j->body);
    gs_buf_free(&j->resp);
    gs_free(j);
}

static void fail_job(cl_job *j, const char *code, const char *msg)
{
    gs_error e;
    gs_error_init(&e);
    gs_error_set(&e, 0, code, "%s", msg);
    j->done(j->ctx, GS_ERROR, NULL, &e);
}

void cl_http_free(cl_http *h)
{
    if (!h)
        return;
    if (h->started) {
        pthread_mutex_lock(&h->mu);
        h->stopping = 1;
        pthread_mutex_unlock(&h->mu);
        curl_multi_wakeup(h->multi);
        pthread_join(h->th, NULL);
    }
    /* Jobs queued but never started. */
    while (h->queue) {
        cl_job *j = h->queue;
        h->queue = j->next;
        fail_job(j, "CONNECTION_ERROR", "the client was closed before the request was sent");
        job_free(j);
    }
    if (h->multi)
        curl_multi_cleanup(h->multi);
    for (size_t i = 0; i < h->npool; i++)
        curl_easy_cleanup(h->pool[i]);
    for (size_t i = 0; i < h->nfree_easy; i++)
        curl_easy_cleanup(h->free_easy[i]);
    curl_slist_free_all(h->hdrs);
    curl_slist_free_all(h->get_hdrs);
    pthread_mutex_destroy(&h->mu);
    gs_free(h);
}

/* Options every handle gets (again after curl_easy_reset). */
static void setup_easy(cl_http *h, CURL *e, const char *url, int64_t timeout_ms)
{
    gs_client *c = h->c;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->cfg.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout_ms > 0 ? timeout_ms : 0));
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (c->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
    if (c->cfg.tls_insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
}

static CURL *pool_take(cl_http *h)
{
    CURL *e = NULL;
    pthread_mutex_lock(&h->mu);
    if (h->npool)
        e = h->pool[--h->npool];
    pthread_mutex_unlock(&h->mu);
    return e ? e : curl_easy_init();
}

static void pool_put(cl_http *h, CURL *e)
{
    pthread_mutex_lock(&h->mu);
    if (h->npool < CL_POOL_MAX) {
        h->pool[h->npool++] = e;
        e = NULL;
    }
    pthread_mutex_unlock(&h->mu);
    if (e)
        curl_easy_cleanup(e);
}

static gs_status curl_failure(CURLcode rc, const char *errbuf, const char *url, gs_error *err)
{
    const char *why = errbuf && errbuf[0] ? errbuf : curl_easy_strerror(rc);
    if (rc == CURLE_OPERATION_TIMEDOUT)
        return gs_error_set(err, 0, "TIMEOUT", "no answer from %s in time: %s", url, why);
    return gs_error_set(err, 0, "CONNECTION_ERROR", "request to %s failed: %s", url, why);
}

gs_status cl_http_perform(cl_http *h, const char *method, const char *url, const char *body,
                          size_t len, int64_t timeout_ms, cl_http_reply *out, gs_error *err)
{
    memset(out, 0, sizeof *out);
    CURL *e = pool_take(h);
    if (!e)
        return gs_error_set(err, 0, "INTERNAL_ERROR", "curl_easy_init failed (out of memory)");
    curl_easy_reset(e);
    setup_easy(h, e, url, timeout_ms);
    gs_buf resp;
    gs_buf_init(&resp);
    char errbuf[CURL_ERROR_SIZE] = "";
    int json_type = 0;
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &resp);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &json_type);
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->hdrs);
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? len : 0));
    } else {
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->get_hdrs);
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    }
    CURLcode rc = curl_easy_perform(e);
    gs_status st = GS_OK;
    if (rc != CURLE_OK) {
        st = curl_failure(rc, errbuf, url, err);
        gs_buf_free(&resp);
    } else if (resp.oom) {
        st = gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory reading the answer");
        gs_buf_free(&resp);
    } else {
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->status);
        out->len = resp.len;
        out->body = gs_buf_take(&resp, NULL);
        out->json_type = json_type;
    }
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, NULL);
    pool_put(h, e);
    return st;
}

/* ---- asynchronous worker ---- */

static void unlink_active(cl_http *h, cl_job *j)
{
    if (j->prev_active)
        j->prev_active->next_active = j->next_active;
    else if (h->active == j)
        h->active = j->next_active;
    if (j->next_active)
        j->next_active->prev_active = j->prev_active;
    j->prev_active = j->next_active = NULL;
}

static void finish_job(cl_http *h, cl_job *j, CURLcode rc)
{
    unlink_active(h, j);
    if (rc != CURLE_OK) {
        gs_error e;
        gs_error_init(&e);
        curl_failure(rc, j->errbuf, j->url, &e);
        j->done(j->ctx, GS_ERROR, NULL, &e);
    } else if (j->resp.oom) {
        fail_job(j, "INTERNAL_ERROR", "out of memory reading the answer");
    } else {
        cl_http_reply r;
        memset(&r, 0, sizeof r);
        curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &r.status);
        r.len = j->resp.len;
        r.body = gs_buf_take(&j->resp, NULL);
        r.json_type = j->json_type;
        j->done(j->ctx, GS_OK, &r, NULL);
        cl_http_reply_clear(&r);
    }
    if (j->easy) {
        curl_multi_remove_handle(h->multi, j->easy);
        pthread_mutex_lock(&h->mu);
        if (h->nfree_easy < CL_POOL_MAX) {
            h->free_easy[h->nfree_easy++] = j->easy;
            j->easy = NULL;
        }
        pthread_mutex_unlock(&h->mu);
        if (j->easy)
            curl_easy_cleanup(j->easy);
    }
    job_free(j);
}

static void start_job(cl_http *h, cl_job *j)
{
    pthread_mutex_lock(&h->mu);
    j->easy = h->nfree_easy ? h->free_easy[--h->nfree_easy] : NULL;
    pthread_mutex_unlock(&h->mu);
    if (!j->easy)
        j->easy = curl_easy_init();
    else
        curl_easy_reset(j->easy);
    if (!j->easy) {
        fail_job(j, "INTERNAL_ERROR", "curl_easy_init failed (out of memory)");
        job_free(j);
        return;
    }
    CURL *e = j->easy;
    setup_easy(h, e, j->url, j->timeout_ms);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, j->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &j->resp);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &j->json_type);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->hdrs);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, j->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->len);
    curl_easy_setopt(e, CURLOPT_PRIVATE, j);
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        j->easy = NULL;
        fail_job(j, "INTERNAL_ERROR", "curl_multi_add_handle failed");
        job_free(j);
        return;
    }
    j->next_active = h->active;
    if (h->active)
        h->active->prev_active = j;
    h->active = j;
}

static void *worker(void *arg)
{
    cl_http *h = arg;
    cl_mark_library_thread();
    for (;;) {
        pthread_mutex_lock(&h->mu);
        int stopping = h->stopping;
        cl_job *q = h->queue;
        h->queue = h->queue_tail = NULL;
        pthread_mutex_unlock(&h->mu);
        while (q) {
            cl_job *j = q;
            q = q->next;
            j->next = NULL;
            if (stopping) {
                fail_job(j, "CONNECTION_ERROR",
                         "the client was closed before the request was sent");
                job_free(j);
            } else {
                start_job(h, j);
            }
        }
        int running = 0;
        curl_multi_perform(h->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(h->multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            cl_job *j = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&j);
            if (j)
                finish_job(h, j, m->data.result);
        }
        if (stopping)
            break;
        curl_multi_poll(h->multi, NULL, 0, 1000, NULL);
    }
    /* Transfers still running when the client closes. */
    while (h->active) {
        cl_job *j = h->active;
        unlink_active(h, j);
        fail_job(j, "CONNECTION_ERROR", "the client was closed while the request ran");
        curl_multi_remove_handle(h->multi, j->easy);
        curl_easy_cleanup(j->easy);
        j->easy = NULL;
        job_free(j);
    }
    return NULL;
}

gs_status cl_http_submit(cl_http *h, const char *url, char *body, size_t len, int64_t timeout_ms,
                         cl_http_done_fn done, void *ctx, gs_error *err)
{
    cl_job *j = gs_calloc(1, sizeof *j);
    if (!j) {
        gs_free(body);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    gs_buf_init(&j->resp);
    j->url = gs_strdup(url);
    j->body = body;
    j->len = len;
    j->timeout_ms = timeout_ms;
    j->done = done;
    j->ctx = ctx;
    if (!j->url) {
        job_free(j);
        return gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory");
    }
    pthread_mutex_lock(&h->mu);
    if (h->stopping) {
        pthread_mutex_unlock(&h->mu);
        job_free(j);
        return gs_error_set(err, 0, "CONNECTION_ERROR", "the client is closing");
    }
    if (!h->started) {
        h->multi = curl_multi_init();
        if (h->multi) {
            long maxc = h->c->cfg.http_max_connections > 0 ? h->c->cfg.http_max_connections : 16;
            curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, maxc);
            curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
            curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, maxc * 4);
        }
        if (!h->multi || pthread_create(&h->th, NULL, worker, h) != 0) {
            if (h->multi)
                curl_multi_cleanup(h->multi);
            h->multi = NULL;
            pthread_mutex_unlock(&h->mu);
            job_free(j);
            return gs_error_set(err, 0, "INTERNAL_ERROR", "cannot start the HTTP worker thread");
        }
        h->started = 1;
    }
    if (h->queue_tail)
        h->queue_tail->next = j;
    else
        h->queue = j;
    h->queue_tail = j;
    pthread_mutex_unlock(&h->mu);
    curl_multi_wakeup(h->multi);
    return GS_OK;
}

int cl_error_from_envelope(json_t *errobj, int status, gs_error *err)
{
    if (!json_is_object(errobj))
        return -1;
    json_t *code = json_object_get(errobj, "code");
    json_t *msg = json_object_get(errobj, "message");
    if (!json_is_string(code))
        return -1;
    gs_error_set(err, status, json_string_value(code), "%s",
                 json_is_string(msg) ? json_string_value(msg) : "");
    json_t *details = json_object_get(errobj, "details");
    if (json_is_object(details) && json_object_size(details)) {
        char *t = json_dumps(details, JSON_COMPACT);
        if (t && strlen(t) < sizeof err->details)
            snprintf(err->details, sizeof err->details, "%s", t);
        free(t);
    }
    return 0;
}

gs_status cl_http_json(const cl_http_reply *r, json_t **out, gs_error *err)
{
    *out = NULL;
    json_error_t je;
    json_t *j = r->body && r->len ? json_loadb(r->body, r->len, JSON_ALLOW_NUL, &je) : NULL;
    if (r->status >= 200 && r->status < 300) {
        if (!j)
            return gs_error_set(err, (int)r->status, "INVALID_RESPONSE",
                                "the server answered %ld with a body that is not JSON", r->status);
        *out = j;
        return GS_OK;
    }
    if (j && cl_error_from_envelope(json_object_get(j, "error"), (int)r->status, err) == 0) {
        json_decref(j);
        return GS_ERROR;
    }
    json_decref(j);
    return gs_error_set(err, (int)r->status, "INVALID_RESPONSE",
                        "the server answered HTTP %ld without a JSON error body", r->status);
}
