/* Config subtree -> JSON text: maps become objects, sequences arrays; a plain scalar that is
 * a JSON number, true/false or null keeps that type; every other scalar, and every quoted
 * one, becomes a string. */
#include "config_internal.h"

#include <string.h>

/* The JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int is_json_number(const char *s)
{
    const char *p = s;
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (*p >= '0' && *p <= '9')
            p++;
    else
        return 0;
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9'))
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return *p == '\0';
}

static const char *json_bool(const char *s)
{
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
        return "true";
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
        return "false";
    return NULL;
}

void gs_cfg_to_json(const gs_cfg_node *node, gs_buf *out)
{
    if (!node) {
        gs_buf_puts(out, "null");
        return;
    }
    switch (node->type) {
    case GS_CFG_NODE_MAP:
        gs_buf_putc(out, '{');
        for (size_t i = 0; i < node->count; i++) {
            const gs_cfg_node *c = node->children[i];
            if (i)
                gs_buf_putc(out, ',');
            const char *k = c->key ? c->key : "";
            gs_buf_json_string(out, k, strlen(k));
            gs_buf_putc(out, ':');
            gs_cfg_to_json(c, out);
        }
        gs_buf_putc(out, '}');
        return;
    case GS_CFG_NODE_SEQ:
        gs_buf_putc(out, '[');
        for (size_t i = 0; i < node->count; i++) {
            if (i)
                gs_buf_putc(out, ',');
            gs_cfg_to_json(node->children[i], out);
        }
        gs_buf_putc(out, ']');
        return;
    case GS_CFG_NODE_SCALAR:
    default: {
        const char *v = node->value ? node->value : "";
        if (!node->quoted) {
            const char *b;
            if (node->is_null) {
                gs_buf_puts(out, "null");
                return;
            }
            if ((b = json_bool(v)) != NULL) {
                gs_buf_puts(out, b);
                return;
            }
            if (is_json_number(v)) {
                gs_buf_puts(out, v);
                return;
            }
        }
        gs_buf_json_string(out, v, strlen(v));
        return;
    }
    }
}
