/*
 * Config module internals shared by its files (not for use outside core/src/config/):
 * node construction, ${ENV} expansion, arena blocks, and the "file:line: where: ..." message
 * prefix.
 *
 * Ownership: a node owns its key, value and children; gs_cfg_node_free releases a whole
 * subtree. An arena owns every block kept in it until gs_cfg_arena_free. Threads: single-threaded
 * use (start-up); nothing here keeps state.
 */
#ifndef GS_CONFIG_CONFIG_INTERNAL_H
#define GS_CONFIG_CONFIG_INTERNAL_H

#include "config.h"

/** Deepest map/sequence nesting accepted, so every recursive walk has a bounded depth. */
#define GS_CFG_MAX_DEPTH 64

/** Code used for every parse and validation error. */
#define GS_CFG_ERR "INVALID_CONFIG"

/** A zeroed node of `type` at line/col (0 = command line); NULL when out of memory. */
gs_cfg_node *gs_cfg_node_new(gs_cfg_node_type type, int line, int col);
/** Free a node, its strings and its whole subtree. NULL is a no-op. */
void gs_cfg_node_free(gs_cfg_node *node);
/** Append `child` to map or sequence `parent`; on failure (out of memory) the child is not
 * taken and -1 is returned. */
int gs_cfg_node_append(gs_cfg_node *parent, gs_cfg_node *child);
/** Drop the children and value of `node` (keeps its key). */
void gs_cfg_node_clear(gs_cfg_node *node);
/** True for the plain-scalar spellings of YAML null: "", ~, null, Null, NULL. */
int gs_cfg_text_is_null(const char *text, size_t len);

/** Outcome of gs_cfg_env_expand. */
typedef enum gs_cfg_env_result {
    GS_CFG_ENV_OK = 0,
    GS_CFG_ENV_UNSET = 1,  /**< a variable without default is unset; `detail` = its name */
    GS_CFG_ENV_SYNTAX = 2, /**< malformed ${...}; `detail` says what */
    GS_CFG_ENV_NOMEM = 3,  /**< allocation failed */
} gs_cfg_env_result;

/**
 * Expand ${NAME} and ${NAME:-default} (default when unset or empty) from the environment
 * and turn $$ into $; any other '$' stays literal. On GS_CFG_ENV_OK *out is a new gs_malloc
 * string (NUL-terminated, *out_len bytes) the caller frees; otherwise *out is NULL and
 * `detail` (detail_size bytes) explains.
 */
gs_cfg_env_result gs_cfg_env_expand(const char *in, size_t len, char **out, size_t *out_len,
                                    char *detail, size_t detail_size);

/** Write "file:line: " (or "<command line>: " when line is 0) into buf. */
void gs_cfg_location(char *buf, size_t size, const char *file, int line);

/** Copy text into dst for a message: at most `max` bytes, control characters replaced by
 * '?', and "..." appended when cut. */
void gs_cfg_excerpt(char *dst, size_t size, const char *text, size_t max);

/*
 * Scalar text -> typed value for a key (value.c). Each returns 0 on success; on failure -1
 * with `why` holding what was expected, e.g. "expected an integer from 0 to 65535".
 */
int gs_cfg_parse_int(const char *s, const gs_config_key *k, int64_t *v, char *why, size_t n);
int gs_cfg_parse_bool(const char *s, int *v, char *why, size_t n);
int gs_cfg_parse_double(const char *s, const gs_config_key *k, double *v, char *why, size_t n);
/** Checks s against k->choices (any value passes when there are none). */
int gs_cfg_check_choice(const char *s, const gs_config_key *k, char *why, size_t n);
/** "a, b, c" for k->choices, cut politely to fit n bytes. */
void gs_cfg_choices_text(const gs_config_key *k, char *buf, size_t n);
/** Read entry i of a key table of stride key_size into *k (members past the stride zeroed). */
void gs_cfg_key_at(const gs_config_key *keys, size_t i, size_t key_size, gs_config_key *k);

/** Take ownership of `p` (a gs_malloc block) into the arena; on failure (out of memory)
 * `p` is freed and -1 returned. */
int gs_cfg_arena_keep(gs_cfg_arena *arena, void *p);
/** A zeroed block of `size` bytes owned by the arena; NULL when out of memory. */
void *gs_cfg_arena_calloc(gs_cfg_arena *arena, size_t size);
/** A copy of `s` owned by the arena; NULL when out of memory. */
char *gs_cfg_arena_strdup(gs_cfg_arena *arena, const char *s);

#endif
