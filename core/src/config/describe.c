/* --describe-plugin: a key table as aligned lines, one per key, nested tables indented:
 *   name  <type>  [required | default: X | optional]  help (one of: a, b)
 */
#include "config_internal.h"

#include <stdio.h>
#include <string.h>

/* Nested tables deeper than this are cut (a table that contains itself would never end). */
#define DESCRIBE_MAX_DEPTH 16

static void type_text(const gs_config_key *k, char *buf, size_t n)
{
    switch (k->type) {
    case GS_CFG_STRING: snprintf(buf, n, "<string>"); return;
    case GS_CFG_INT:
        if (k->min < k->max)
            snprintf(buf, n, "<int %lld..%lld>", (long long)k->min, (long long)k->max);
        else
            snprintf(buf, n, "<int>");
        return;
    case GS_CFG_BOOL: snprintf(buf, n, "<bool>"); return;
    case GS_CFG_DOUBLE:
        if (k->min < k->max)
            snprintf(buf, n, "<number %lld..%lld>", (long long)k->min, (long long)k->max);
        else
            snprintf(buf, n, "<number>");
        return;
    case GS_CFG_STRING_LIST: snprintf(buf, n, "<list of strings>"); return;
    case GS_CFG_SECTION: snprintf(buf, n, "<map>"); return;
    case GS_CFG_LIST: snprintf(buf, n, "<list of maps>"); return;
    case GS_CFG_JSON: snprintf(buf, n, "<any (JSON)>"); return;
    }
    snprintf(buf, n, "<type %d?>", (int)k->type);
}

static void describe(const gs_config_key *keys, size_t count, size_t key_size, int indent,
                     int depth, gs_buf *out)
{
    if (!keys || key_size == 0)
        return;
    if (indent < 0)
        indent = 0;
    size_t name_w = 0, type_w = 0;
    char type[64];
    for (size_t i = 0; i < count; i++) {
        gs_config_key k;
        gs_cfg_key_at(keys, i, key_size, &k);
        size_t l = k.name ? strlen(k.name) : 1;
        name_w = l > name_w ? l : name_w;
        type_text(&k, type, sizeof type);
        l = strlen(type);
        type_w = l > type_w ? l : type_w;
    }
    if (name_w > 28)
        name_w = 28;
    for (size_t i = 0; i < count; i++) {
        gs_config_key k;
        gs_cfg_key_at(keys, i, key_size, &k);
        type_text(&k, type, sizeof type);
        gs_buf_printf(out, "%*s%-*s  %-*s  ", indent, "", (int)name_w, k.name ? k.name : "?",
                      (int)type_w, type);
        if (k.required)
            gs_buf_puts(out, "[required]");
        else if (k.default_value && *k.default_value)
            gs_buf_printf(out, "[default: %s]", k.default_value);
        else if (k.default_value)
            gs_buf_puts(out, "[default: \"\"]");
        else
            gs_buf_puts(out, "[optional]");
        if (k.help && *k.help)
            gs_buf_printf(out, "  %s", k.help);
        if (k.choices) {
            char list[400];
            gs_cfg_choices_text(&k, list, sizeof list);
            gs_buf_printf(out, " (one of: %s)", list);
        }
        gs_buf_putc(out, '\n');
        if ((k.type == GS_CFG_SECTION || k.type == GS_CFG_LIST) && k.children) {
            if (depth + 1 >= DESCRIBE_MAX_DEPTH)
                gs_buf_printf(out, "%*s...\n", indent + 4, "");
            else
                describe(k.children, k.child_count, key_size, indent + 4, depth + 1, out);
        }
    }
}

void gs_cfg_describe(const gs_config_key *keys, size_t count, size_t key_size, int indent,
                     gs_buf *out)
{
    describe(keys, count, key_size, indent, 0, out);
}
