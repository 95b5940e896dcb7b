/* GET /capabilities, read once per server (spec 06 "Refusing SQL Before It Is Sent"):
 * whether it announces query.sql, and its registry digest for live queries. A server that
 * answers 404 predates the route and accepts statements. Any thread; ep->mu is held while the
 * request runs so one server is asked once. */
#include "cl_internal.h"

#include <stdio.h>
#include <string.h>

/* Read the capabilities into ep (ep->mu held). */
static gs_status fetch_locked(gs_client *c, cl_endpoint *ep, gs_error *err)
{
    char url[1024];
    snprintf(url, sizeof url, "%s/capabilities", ep->base);
    int64_t timeout = c->cfg.request_timeout_ms > 0 ? c->cfg.request_timeout_ms : 30000;
    cl_http_reply r;
    if (cl_http_perform(c->http, "GET", url, NULL, 0, timeout, &r, err) != GS_OK)
        return GS_ERROR;
    if (r.status == 404) {
        cl_http_reply_clear(&r);
        ep->caps_known = 1;
        ep->accepts_sql = 1;
        ep->digest[0] = '\0';
        return GS_OK;
    }
    json_t *j;
    gs_status st = cl_http_json(&r, &j, err);
    cl_http_reply_clear(&r);
    if (st != GS_OK)
        return st;
    json_t *caps = json_object_get(j, "capabilities");
    if (!json_is_array(caps)) {
        json_decref(j);
        return gs_error_set(err, 0, "INVALID_RESPONSE",
                            "GET %s answered without a capabilities array", url);
    }
    ep->accepts_sql = 0;
    size_t i;
    json_t *t;
    json_array_foreach(caps, i, t)
    {
        if (json_is_string(t) && strcmp(json_string_value(t), "query.sql") == 0)
            ep->accepts_sql = 1;
    }
    const char *digest =
        json_string_value(json_object_get(json_object_get(j, "registry"), "digest"));
    snprintf(ep->digest, sizeof ep->digest, "%s", digest ? digest : "");
    ep->caps_known = 1;
    json_decref(j);
    return GS_OK;
}

gs_status cl_caps_check_sql(gs_client *c, cl_endpoint *ep, gs_error *err)
{
    if (!c->cfg.check_capabilities)
        return GS_OK;
    pthread_mutex_lock(&ep->mu);
    gs_status st = ep->caps_known ? GS_OK : fetch_locked(c, ep, err);
    int accepts = ep->accepts_sql;
    pthread_mutex_unlock(&ep->mu);
    if (st != GS_OK)
        return st;
    if (!accepts)
        return gs_error_set(err, 0, "SQL_NOT_ACCEPTED",
                            "the server at %s does not accept SQL statements (its "
                            "GET /capabilities lacks query.sql); call a registered operation "
                            "instead, or enable accept_sql on the server",
                            ep->base);
    return GS_OK;
}

gs_status cl_caps_digest(gs_client *c, cl_endpoint *ep, int refresh, char *out, size_t size,
                         gs_error *err)
{
    pthread_mutex_lock(&ep->mu);
    gs_status st = ep->caps_known && !refresh ? GS_OK : fetch_locked(c, ep, err);
    if (st == GS_OK)
        snprintf(out, size, "%s", ep->digest);
    pthread_mutex_unlock(&ep->mu);
    return st;
}
