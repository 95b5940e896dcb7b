/*
 * The WebSocket connection's state, shared by cl_ws.c (socket, frames, requests) and
 * cl_ws_sub.c (subscriptions and live queries). Not installed.
 *
 * Threads: members under "mu" are read and written with ws->mu held; members marked
 * "I/O thread" are touched by the connection's I/O thread only. A callback never runs with
 * mu held; while one runs for a subscription, cb_running names it, so gs_client_unsubscribe
 * can wait for it to return (ws->cv is broadcast when cb_running changes).
 *
 * A subscription moves between connections when routing changes (coordinator mode): only
 * the I/O thread of the connection it leaves moves it (so none of its callbacks runs then),
 * holding both connections' mu (address order); sub->ws changes only under both. A thread
 * outside the I/O threads reads sub->ws, locks that connection, and re-reads sub->ws before
 * trusting it (cl_ws_sub.c lock_sub).
 */
#ifndef GS_CLIENT_WS_INTERNAL_H
#define GS_CLIENT_WS_INTERNAL_H

#include "cl_ws.h"

#include <gnutls/gnutls.h>

typedef struct cl_pending {
    uint64_t key; /**< 0 = empty slot */
    cl_call *call;
} cl_pending;

typedef struct cl_tmo {
    int64_t deadline;
    uint64_t key;
} cl_tmo;

enum {
    CL_SUB_WAITING = 1,   /**< first subscribe sent; a caller waits for `subscribed` */
    CL_SUB_ACTIVE = 2,    /**< confirmed on the current connection */
    CL_SUB_DOWN = 3,      /**< connection lost; resubscribed on reconnect */
    CL_SUB_RESTORING = 4, /**< resubscribe sent */
    CL_SUB_DEAD = 5,      /**< ended; no longer on the list */
};

struct gs_client_sub {
    cl_ws *ws; /**< changes only with both connections' mu held (atomic loads outside) */
    struct gs_client_sub *next; /**< mu */
    uint64_t serial;
    int live;
    char id[48];
    char *fields; /**< "table":...,"filter":... or "name":...,"args":... */
    int state;    /**< mu */
    /* cursor (mu) */
    char seq[24];
    char epoch[128];
    /* the caller waiting in subscribe / live_open (mu) */
    int wait_done;
    gs_status wait_st;
    gs_error wait_err;
    int free_after_cb; /**< unsubscribed from its own callback */
    int migrated;      /**< mu: moved by a routing change, not yet confirmed by `subscribed` */
    gs_client_event_fn fn;
    gs_client_live_fn lfn;
    void *user;
    /* live query */
    gs_client_rows *rows; /**< mu (replaced and edited by the I/O thread under mu) */
    char digest[96];
    int digest_retried;
};

struct gs_client_live {
    struct gs_client_sub sub;
};

enum { CL_WS_IDLE = 0, CL_WS_OPEN = 1, CL_WS_REFUSED = 2 };

struct cl_ws {
    gs_client *c;
    cl_endpoint *ep;
    gs_client_db *db;
    char *path; /**< "/prefix/db/<id>" */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int wake_fd;
    pthread_t th;
    int th_started;
    atomic_uint_fast64_t counter;
    /* mu */
    int stopping;
    int state;
    gs_error refused;
    gs_buf out;       /**< frames waiting for the I/O thread */
    int want_connect; /**< a request waits for a connection */
    cl_pending *pending;
    size_t pcap, pcount;
    cl_tmo *heap;
    size_t nheap, capheap;
    struct gs_client_sub *subs;
    struct gs_client_sub *cb_running;
    uint64_t next_serial;
    int64_t reconnect_at;
    int backoff_step;
    unsigned route_seen; /**< I/O thread: the db's route_gen last checked */
    /* I/O thread */
    int fd;
    gnutls_session_t tls;
    gnutls_certificate_credentials_t cred;
    size_t tls_pending; /**< a gnutls_record_send that returned E_AGAIN, retried as is */
    gs_buf wbuf;
    size_t wpos;
    gs_buf rbuf;
    int unparsed; /**< rbuf holds frames that came with the upgrade response */
    gs_buf msg;
    int msg_opcode;
    int in_msg;
};

/* cl_ws.c, for cl_ws_sub.c */
/** Append a frame of JSON text to ws->out and wake the I/O thread. Call with mu held. */
void cl_ws_queue_locked(cl_ws *ws, const char *text, size_t len);
/** Wake the I/O thread. */
void cl_ws_wake(cl_ws *ws);
/** Run fn(sub, arg) for a subscription still on the list, without mu, marking it running.
 * Returns 0 when it ran. */
int cl_ws_run_callback(cl_ws *ws, struct gs_client_sub *sub, uint64_t serial,
                       void (*fn)(struct gs_client_sub *, void *), void *arg);

/* cl_ws_sub.c, for cl_ws.c (I/O thread) */
/** A server message for a subscription (subscribed, unsubscribed, change, changes, live,
 * or an error whose id is a subscription's). */
void cl_ws_sub_message(cl_ws *ws, const char *type, const char *id, json_t *m);
/** The connection opened: queue the resubscribe of every subscription that is down. Call
 * with mu held. */
void cl_ws_subs_on_open_locked(cl_ws *ws);
/** The connection dropped (refused: for good, with why). */
void cl_ws_subs_on_close(cl_ws *ws, const gs_error *why, int refused);
/** 1 when some subscription waits to be restored (mu held). */
int cl_ws_subs_down_locked(cl_ws *ws);
/** 1 when a caller waits for a first `subscribed` (mu held). */
int cl_ws_subs_waiting_locked(cl_ws *ws);
/** Free every subscription (the client closes; no callback runs). */
void cl_ws_subs_free_all(cl_ws *ws);
/** I/O thread, no lock held: when the database's routing changed since the last check (or
 * force), move the subscriptions and live queries of ws to the endpoint routing now names
 * if ws's endpoint is no longer listed (live from there; RESYNC with migrated = 1 once it
 * confirms), or end them with an ERROR event when no endpoint can serve them. */
void cl_ws_subs_reroute(cl_ws *ws, int force);

#endif
