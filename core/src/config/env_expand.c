/* ${NAME} / ${NAME:-default} expansion of config scalars from the process environment. */
#include "config_internal.h"

#include "../base/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int name_start(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int name_char(char c)
{
    return name_start(c) || (c >= '0' && c <= '9');
}

/* Parse the reference starting at in[i] == '$', in[i+1] == '{'. On success append its
 * expansion to b and return the index after the closing '}'; on error return 0 with
 * *res and detail set. */
static size_t expand_ref(const char *in, size_t len, size_t i, gs_buf *b, gs_cfg_env_result *res,
                         char *detail, size_t detail_size)
{
    size_t start = i + 2, p = start;
    while (p < len && name_char(in[p]))
        p++;
    size_t name_len = p - start;
    char name[128];
    if (name_len == 0 || !name_start(in[start])) {
        *res = GS_CFG_ENV_SYNTAX;
        snprintf(detail, detail_size,
                 "'${' must be followed by a variable name ([A-Za-z_][A-Za-z0-9_]*); "
                 "write $$ for a literal '$'");
        return 0;
    }
    if (name_len >= sizeof name) {
        *res = GS_CFG_ENV_SYNTAX;
        snprintf(detail, detail_size, "variable name longer than %zu characters", sizeof name - 1);
        return 0;
    }
    memcpy(name, in + start, name_len);
    name[name_len] = '\0';

    const char *def = NULL;
    size_t def_len = 0;
    if (p < len && in[p] == '}') {
        p++;
    } else if (p + 1 < len && in[p] == ':' && in[p + 1] == '-') {
        def = in + p + 2;
        const char *close = memchr(def, '}', len - (p + 2));
        if (!close) {
            *res = GS_CFG_ENV_SYNTAX;
            snprintf(detail, detail_size, "unterminated '${%s:-' (missing '}')", name);
            return 0;
        }
        def_len = (size_t)(close - def);
        p = (size_t)(close - in) + 1;
    } else {
        *res = GS_CFG_ENV_SYNTAX;
        if (p >= len)
            snprintf(detail, detail_size, "unterminated '${%s' (missing '}')", name);
        else
            snprintf(detail, detail_size,
                     "unexpected '%c' after '${%s': write ${%s} or ${%s:-default}",
                     (unsigned char)in[p] >= 0x20 ? in[p] : '?', name, name, name);
        return 0;
    }

    const char *val = getenv(name);
    if (def && (!val || !*val)) {
        gs_buf_append(b, def, def_len);
    } else if (val) {
        gs_buf_puts(b, val);
    } else {
        *res = GS_CFG_ENV_UNSET;
        snprintf(detail, detail_size, "%s", name);
        return 0;
    }
    return p;
}

gs_cfg_env_result gs_cfg_env_expand(const char *in, size_t len, char **out, size_t *out_len,
                                    char *detail, size_t detail_size)
{
    *out = NULL;
    if (out_len)
        *out_len = 0;
    if (detail_size)
        detail[0] = '\0';
    if (!memchr(in, '$', len)) {
        *out = gs_strndup(in, len);
        if (!*out)
            return GS_CFG_ENV_NOMEM;
        if (out_len)
            *out_len = len;
        return GS_CFG_ENV_OK;
    }

    gs_buf b;
    gs_buf_init(&b);
    if (gs_buf_reserve(&b, len))
        return GS_CFG_ENV_NOMEM;
    size_t i = 0, run = 0;
    while (i < len) {
        if (in[i] != '$' || i + 1 >= len || (in[i + 1] != '$' && in[i + 1] != '{')) {
            i++;
            continue;
        }
        gs_buf_append(&b, in + run, i - run);
        if (in[i + 1] == '$') {
            gs_buf_putc(&b, '$');
            i += 2;
        } else {
            gs_cfg_env_result res = GS_CFG_ENV_OK;
            size_t next = expand_ref(in, len, i, &b, &res, detail, detail_size);
            if (!next) {
                gs_buf_free(&b);
                return res;
            }
            i = next;
        }
        run = i;
    }
    gs_buf_append(&b, in + run, len - run);
    if (b.oom) {
        gs_buf_free(&b);
        return GS_CFG_ENV_NOMEM;
    }
    *out = gs_buf_take(&b, out_len);
    return GS_CFG_ENV_OK;
}
