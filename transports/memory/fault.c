/*
 * memory transport: seeded fault streams and the control command parser.
 *
 * Promise: a pair's stream depends only on (seed, sender id, receiver id) and on how many
 * messages the pair has drawn for, so the same seed and the same per-pair send order give
 * the same fates whatever other pairs and threads do. The parser accepts exactly the
 * commands README.md lists and says what is wrong with anything else.
 *
 * Threads: pure functions; the caller guards the stream (the receiver's queue lock).
 */
#include "memory_internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- random streams ---- */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

void gs_mt_rng_seed(gs_mt_rng *r, uint64_t seed, const char *from, const char *to)
{
    r->state = mix64(mix64(seed ^ fnv1a(from)) ^ fnv1a(to));
}

uint64_t gs_mt_rng_next(gs_mt_rng *r)
{
    r->state += UINT64_C(0x9e3779b97f4a7c15);
    return mix64(r->state);
}

double gs_mt_rng_unit(gs_mt_rng *r)
{
    return (double)(gs_mt_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

void gs_mt_fate_draw(const gs_mt_faults *f, gs_mt_rng *r, gs_repl_msg_type type, gs_mt_fate *out)
{
    memset(out, 0, sizeof *out);
    if (type == GS_REPL_MSG_REPLICATION || type == GS_REPL_MSG_SYNC) {
        double u_drop = gs_mt_rng_unit(r);
        double u_dup = gs_mt_rng_unit(r);
        double u_reorder = gs_mt_rng_unit(r);
        out->drop = u_drop < f->drop;
        out->duplicate = !out->drop && u_dup < f->duplicate;
        out->reorder = !out->drop && u_reorder < f->reorder;
    }
    out->delay_ms = f->delay_min;
    if (f->delay_max > f->delay_min)
        out->delay_ms += gs_mt_rng_next(r) % (f->delay_max - f->delay_min + 1);
}

/* ---- control commands ---- */

#define MAX_WORDS 4

static int parse_rate(const char *w, double *out, char *why, size_t n)
{
    char *end;
    errno = 0;
    double v = strtod(w, &end);
    if (errno || end == w || *end || isnan(v) || v < 0.0 || v > 1.0) {
        snprintf(why, n, "'%s' is not a probability: give a number from 0 to 1", w);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_uint(const char *w, uint64_t max, const char *what, uint64_t *out, char *why,
                      size_t n)
{
    char *end;
    errno = 0;
    if (*w == '-' || *w == '+' || !isdigit((unsigned char)*w)) {
        snprintf(why, n, "%s '%s' is not a whole number from 0 to %llu", what, w,
                 (unsigned long long)max);
        return -1;
    }
    unsigned long long v = strtoull(w, &end, 10);
    if (errno || *end || v > max) {
        snprintf(why, n, "%s '%s' is not a whole number from 0 to %llu", what, w,
                 (unsigned long long)max);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_seed(const char *w, uint64_t *out, char *why, size_t n)
{
    char *end;
    errno = 0;
    long long v = strtoll(w, &end, 10);
    if (errno || end == w || *end) {
        snprintf(why, n, "seed '%s' is not a 64-bit integer", w);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

static const struct {
    const char *name;
    gs_mt_cmd_kind kind;
    int min_args, max_args;
    const char *usage;
} commands[] = {
    {"partition", GS_MT_CMD_PARTITION, 2, 2, "partition NODE_A NODE_B"},
    {"heal", GS_MT_CMD_HEAL, 0, 2, "heal [NODE_A NODE_B]"},
    {"drop", GS_MT_CMD_DROP, 1, 2, "drop RATE [NODE]"},
    {"duplicate", GS_MT_CMD_DUPLICATE, 1, 2, "duplicate RATE [NODE]"},
    {"reorder", GS_MT_CMD_REORDER, 1, 2, "reorder RATE [NODE]"},
    {"delay", GS_MT_CMD_DELAY, 2, 3, "delay MIN_MS MAX_MS [NODE]"},
    {"hold", GS_MT_CMD_HOLD, 1, 2, "hold MS [NODE]"},
    {"seed", GS_MT_CMD_SEED, 1, 2, "seed N [NODE]"},
    {"clear", GS_MT_CMD_CLEAR, 0, 1, "clear [NODE]"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

int gs_mt_command_parse(const uint8_t *text, size_t len, gs_mt_command *cmd, char *why,
                        size_t why_size)
{
    memset(cmd, 0, sizeof *cmd);
    char buf[1024];
    if (!text || len == 0) {
        snprintf(why, why_size, "empty control command; see the memory transport's README");
        return -1;
    }
    if (len >= sizeof buf) {
        snprintf(why, why_size, "control command of %zu bytes is too long (at most %zu)", len,
                 sizeof buf - 1);
        return -1;
    }
    for (size_t i = 0; i < len; i++)
        if (text[i] == '\0' || (text[i] < 0x20 && !isspace(text[i]))) {
            snprintf(why, why_size, "control command holds a control byte at offset %zu", i);
            return -1;
        }
    memcpy(buf, text, len);
    buf[len] = '\0';

    char *words[MAX_WORDS + 1];
    size_t nw = 0;
    char *save = NULL;
    for (char *w = strtok_r(buf, " \t\r\n", &save); w; w = strtok_r(NULL, " \t\r\n", &save)) {
        if (nw == MAX_WORDS + 1) {
            snprintf(why, why_size, "too many words in control command '%.*s'", (int)len,
                     (const char *)text);
            return -1;
        }
        words[nw++] = w;
    }
    if (nw == 0) {
        snprintf(why, why_size, "empty control command; see the memory transport's README");
        return -1;
    }
    size_t c = 0;
    while (c < NCOMMANDS && strcmp(commands[c].name, words[0]) != 0)
        c++;
    if (c == NCOMMANDS) {
        snprintf(why, why_size,
                 "unknown control command '%s': use partition, heal, drop, duplicate, reorder, "
                 "delay, hold, seed or clear",
                 words[0]);
        return -1;
    }
    int nargs = (int)nw - 1;
    if (nargs < commands[c].min_args || nargs > commands[c].max_args ||
        (commands[c].kind == GS_MT_CMD_HEAL && nargs == 1)) {
        snprintf(why, why_size, "usage: %s", commands[c].usage);
        return -1;
    }
    for (size_t i = 1; i < nw; i++)
        if (strlen(words[i]) > GS_MT_ID_MAX) {
            snprintf(why, why_size, "word %zu of the control command is longer than %d bytes", i,
                     GS_MT_ID_MAX);
            return -1;
        }
    cmd->kind = commands[c].kind;
    switch (cmd->kind) {
    case GS_MT_CMD_PARTITION:
    case GS_MT_CMD_HEAL:
        if (nargs == 2) {
            if (strcmp(words[1], words[2]) == 0) {
                snprintf(why, why_size, "%s needs two different nodes, got '%s' twice", words[0],
                         words[1]);
                return -1;
            }
            snprintf(cmd->a, sizeof cmd->a, "%s", words[1]);
            snprintf(cmd->b, sizeof cmd->b, "%s", words[2]);
        }
        return 0;
    case GS_MT_CMD_DROP:
    case GS_MT_CMD_DUPLICATE:
    case GS_MT_CMD_REORDER:
        if (parse_rate(words[1], &cmd->rate, why, why_size))
            return -1;
        if (nargs == 2)
            snprintf(cmd->scope, sizeof cmd->scope, "%s", words[2]);
        return 0;
    case GS_MT_CMD_DELAY:
        if (parse_uint(words[1], 3600000, "delay", &cmd->n1, why, why_size) ||
            parse_uint(words[2], 3600000, "delay", &cmd->n2, why, why_size))
            return -1;
        if (cmd->n1 > cmd->n2) {
            snprintf(why, why_size, "delay minimum %llu ms is above the maximum %llu ms",
                     (unsigned long long)cmd->n1, (unsigned long long)cmd->n2);
            return -1;
        }
        if (nargs == 3)
            snprintf(cmd->scope, sizeof cmd->scope, "%s", words[3]);
        return 0;
    case GS_MT_CMD_HOLD:
        if (parse_uint(words[1], 600000, "hold", &cmd->n1, why, why_size))
            return -1;
        if (cmd->n1 == 0) {
            snprintf(why, why_size, "hold must be at least 1 ms");
            return -1;
        }
        if (nargs == 2)
            snprintf(cmd->scope, sizeof cmd->scope, "%s", words[2]);
        return 0;
    case GS_MT_CMD_SEED:
        if (parse_seed(words[1], &cmd->n1, why, why_size))
            return -1;
        if (nargs == 2)
            snprintf(cmd->scope, sizeof cmd->scope, "%s", words[2]);
        return 0;
    case GS_MT_CMD_CLEAR:
        if (nargs == 1)
            snprintf(cmd->scope, sizeof cmd->scope, "%s", words[1]);
        return 0;
    }
    snprintf(why, why_size, "unknown control command '%s'", words[0]);
    return -1;
}
