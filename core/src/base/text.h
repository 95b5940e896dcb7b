/*
 * Small text helpers shared across the core: hex digits. Pure functions, any thread.
 */
#ifndef GS_BASE_TEXT_H
#define GS_BASE_TEXT_H

/** The value of one hexadecimal digit (either case), or -1. */
static inline int gs_hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
