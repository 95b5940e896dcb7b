/* Config tree nodes: construction, lookup, release, and the message helpers every config
 * file shares. */
#include "config_internal.h"

#include "../base/alloc.h"

#include <stdio.h>
#include <string.h>

gs_cfg_node *gs_cfg_node_new(gs_cfg_node_type type, int line, int col)
{
    gs_cfg_node *n = gs_calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->type = type;
    n->line = line;
    n->col = col;
    return n;
}

void gs_cfg_node_clear(gs_cfg_node *node)
{
    if (!node)
        return;
    for (size_t i = 0; i < node->count; i++)
        gs_cfg_node_free(node->children[i]);
    gs_free(node->children);
    node->children = NULL;
    node->count = 0;
    gs_free(node->value);
    node->value = NULL;
}

void gs_cfg_node_free(gs_cfg_node *node)
{
    if (!node)
        return;
    gs_cfg_node_clear(node);
    gs_free(node->key);
    gs_free(node);
}

int gs_cfg_node_append(gs_cfg_node *parent, gs_cfg_node *child)
{
    /* Grow by doubling; the capacity is implied by count (powers of two from 4). */
    size_t n = parent->count;
    if (n == 0 || (n >= 4 && (n & (n - 1)) == 0)) {
        size_t cap = n == 0 ? 4 : n * 2;
        if (cap > ((size_t)-1) / sizeof *parent->children)
            return -1;
        gs_cfg_node **p = gs_realloc(parent->children, cap * sizeof *p);
        if (!p)
            return -1;
        parent->children = p;
    }
    parent->children[parent->count++] = child;
    return 0;
}

int gs_cfg_text_is_null(const char *text, size_t len)
{
    if (len == 0)
        return 1;
    if (len == 1)
        return text[0] == '~';
    if (len == 4)
        return memcmp(text, "null", 4) == 0 || memcmp(text, "Null", 4) == 0 ||
               memcmp(text, "NULL", 4) == 0;
    return 0;
}

void gs_cfg_free(gs_cfg_doc *doc)
{
    if (!doc)
        return;
    gs_cfg_node_free(doc->root);
    gs_free(doc->file);
    gs_free(doc);
}

const gs_cfg_node *gs_cfg_get(const gs_cfg_node *map, const char *key)
{
    if (!map || map->type != GS_CFG_NODE_MAP || !key)
        return NULL;
    for (size_t i = 0; i < map->count; i++)
        if (map->children[i]->key && strcmp(map->children[i]->key, key) == 0)
            return map->children[i];
    return NULL;
}

void gs_cfg_location(char *buf, size_t size, const char *file, int line)
{
    if (line > 0)
        snprintf(buf, size, "%s:%d: ", file ? file : "<config>", line);
    else
        snprintf(buf, size, "<command line>: ");
}

void gs_cfg_excerpt(char *dst, size_t size, const char *text, size_t max)
{
    if (size == 0)
        return;
    if (!text)
        text = "";
    size_t len = strlen(text);
    size_t keep = len > max ? max : len;
    size_t room = size > 4 ? size - 4 : 0; /* leave space for "..." and the NUL */
    if (keep > room)
        keep = room;
    /* never cut inside a UTF-8 sequence */
    while (keep > 0 && keep < len && ((unsigned char)text[keep] & 0xC0) == 0x80)
        keep--;
    size_t o = 0;
    for (size_t i = 0; i < keep; i++) {
        unsigned char c = (unsigned char)text[i];
        dst[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    dst[o] = '\0';
    if (keep < len && o + 4 <= size)
        memcpy(dst + o, "...", 4);
}
