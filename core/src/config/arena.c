/* The fill arena: every string, list and JSON text gs_cfg_fill hands out, released at once
 * by gs_cfg_arena_free. */
#include "config_internal.h"

#include "../base/alloc.h"

#include <string.h>

int gs_cfg_arena_keep(gs_cfg_arena *arena, void *p)
{
    if (!p)
        return -1;
    if (arena->count == arena->cap) {
        size_t cap = arena->cap ? arena->cap * 2 : 16;
        void **ptrs =
            cap > ((size_t)-1) / sizeof *ptrs ? NULL : gs_realloc(arena->ptrs, cap * sizeof *ptrs);
        if (!ptrs) {
            gs_free(p);
            return -1;
        }
        arena->ptrs = ptrs;
        arena->cap = cap;
    }
    arena->ptrs[arena->count++] = p;
    return 0;
}

void *gs_cfg_arena_calloc(gs_cfg_arena *arena, size_t size)
{
    void *p = gs_calloc(1, size);
    if (!p || gs_cfg_arena_keep(arena, p))
        return NULL;
    return p;
}

char *gs_cfg_arena_strdup(gs_cfg_arena *arena, const char *s)
{
    char *p = gs_strdup(s ? s : "");
    if (!p || gs_cfg_arena_keep(arena, p))
        return NULL;
    return p;
}

void gs_cfg_arena_free(gs_cfg_arena *arena)
{
    if (!arena)
        return;
    for (size_t i = 0; i < arena->count; i++)
        gs_free(arena->ptrs[i]);
    gs_free(arena->ptrs);
    memset(arena, 0, sizeof *arena);
}
