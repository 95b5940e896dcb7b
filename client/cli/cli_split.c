/* Statement boundaries for the shell: a statement ends at a ';' that SQLite itself calls
 * complete (so quotes, comments and CREATE TRIGGER bodies are honoured). Pure. */
#include "cli.h"

#include <ctype.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

size_t cli_statement_end(const char *s, size_t len)
{
    char quote = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (quote) {
            if (ch == quote)
                quote = 0;
            continue;
        }
        if (ch == '\'' || ch == '"' || ch == '`') {
            quote = ch;
        } else if (ch == '[') {
            quote = ']';
        } else if (ch == '-' && i + 1 < len && s[i + 1] == '-') {
            while (i < len && s[i] != '\n')
                i++;
        } else if (ch == '/' && i + 1 < len && s[i + 1] == '*') {
            const char *e = NULL;
            for (size_t k = i + 2; k + 1 < len; k++)
                if (s[k] == '*' && s[k + 1] == '/') {
                    e = s + k;
                    break;
                }
            if (!e)
                return 0;
            i = (size_t)(e - s) + 1;
        } else if (ch == ';') {
            char *prefix = malloc(i + 2);
            if (!prefix)
                return 0;
            memcpy(prefix, s, i + 1);
            prefix[i + 1] = '\0';
            int done = sqlite3_complete(prefix);
            free(prefix);
            if (done)
                return i + 1;
        }
    }
    return 0;
}

int cli_blank(const char *s)
{
    size_t len = strlen(s);
    for (size_t i = 0; i < len; i++) {
        if (isspace((unsigned char)s[i]) || s[i] == ';')
            continue;
        if (s[i] == '-' && i + 1 < len && s[i + 1] == '-') {
            while (i < len && s[i] != '\n')
                i++;
            continue;
        }
        if (s[i] == '/' && i + 1 < len && s[i + 1] == '*') {
            const char *e = strstr(s + i + 2, "*/");
            if (!e)
                return 1;
            i = (size_t)(e - s) + 1;
            continue;
        }
        return 0;
    }
    return 1;
}

int cli_is_query(const char *sql)
{
    while (*sql && (isspace((unsigned char)*sql) || *sql == '('))
        sql++;
    static const char *kw[] = {"SELECT", "WITH", "VALUES", "PRAGMA", "EXPLAIN"};
    for (size_t i = 0; i < sizeof kw / sizeof kw[0]; i++) {
        size_t n = strlen(kw[i]);
        if (strncasecmp(sql, kw[i], n) == 0 && !isalnum((unsigned char)sql[n]) && sql[n] != '_')
            return 1;
    }
    return 0;
}
