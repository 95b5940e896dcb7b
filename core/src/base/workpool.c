#include "workpool.h"

#include "alloc.h"
#include "error.h"

#include <pthread.h>

typedef struct work {
    void (*fn)(void *);
    void *arg;
    struct work *next;
} work;

struct gs_workpool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    work *head, *tail;
    int stopping;
    int nthreads;
    pthread_t *threads;
};

static void *worker(void *arg)
{
    gs_workpool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        work *w = p->head;
        if (!w)
            break; /* stopping and drained */
        p->head = w->next;
        if (!p->head)
            p->tail = NULL;
        pthread_mutex_unlock(&p->mu);
        w->fn(w->arg);
        gs_free(w);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

gs_workpool *gs_workpool_new(int threads, gs_error *err)
{
    gs_workpool *p = gs_calloc(1, sizeof *p);
    if (!p || !(p->threads = gs_calloc((size_t)threads, sizeof(pthread_t)))) {
        gs_free(p);
        gs_error_set(err, 0, "INTERNAL_ERROR", "out of memory creating the worker pool");
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0) {
            gs_error_set(err, 0, "INTERNAL_ERROR", "cannot start a worker thread");
            p->nthreads = i;
            gs_workpool_free(p);
            return NULL;
        }
    }
    p->nthreads = threads;
    return p;
}

gs_status gs_workpool_post(gs_workpool *p, void (*fn)(void *), void *arg)
{
    work *w = gs_malloc(sizeof *w);
    if (!w)
        return GS_ERROR;
    w->fn = fn;
    w->arg = arg;
    w->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        pthread_mutex_unlock(&p->mu);
        gs_free(w);
        return GS_AGAIN;
    }
    if (p->tail)
        p->tail->next = w;
    else
        p->head = w;
    p->tail = w;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return GS_OK;
}

void gs_workpool_free(gs_workpool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    gs_free(p->threads);
    gs_free(p);
}
