/*
 * gatestream-cli internals: the shell's state, statement splitting, output modes and dot
 * commands. The shell runs on the main thread; subscription events print from the client
 * library's I/O thread, so every write to stdout goes through cli_out_lock/unlock.
 */
#ifndef GS_CLI_H
#define GS_CLI_H

#include <gatestream/client.h>

#include <stddef.h>
#include <stdio.h>

typedef enum cli_mode { CLI_MODE_TABLE = 0, CLI_MODE_JSON = 1, CLI_MODE_CSV = 2 } cli_mode;

typedef struct cli {
    gs_client *client;
    gs_client_db *db;
    const char *url;
    const char *db_id;
    cli_mode mode;
    int timer;
    int changes;
    int interactive;
    int64_t timeout_ms;
} cli;

/* cli_split.c: statement boundaries */
/** Length of the first complete statement in s[0..len) (through its ';'), or 0 when s holds
 * none yet. Quotes, comments and trigger bodies are honoured (sqlite3_complete). */
size_t cli_statement_end(const char *s, size_t len);
/** 1 when s holds only whitespace, comments and semicolons. */
int cli_blank(const char *s);
/** 1 when the statement returns rows (SELECT, WITH, VALUES, PRAGMA, EXPLAIN). */
int cli_is_query(const char *sql);

/* cli_output.c */
void cli_out_lock(void);
void cli_out_unlock(void);
void cli_print_rows(cli *c, const gs_client_rows *rows);
void cli_print_exec(cli *c, const gs_client_exec *ex);
void cli_print_error(const gs_error *err);
/** Parse "table", "json" or "csv"; -1 when unknown. */
int cli_mode_parse(const char *s);
const char *cli_mode_name(cli_mode m);

/* cli_commands.c */
/** Run one line starting with '.'. Returns 0 ok, 1 error (printed), 2 quit. */
int cli_dot_command(cli *c, const char *line);
/** Run one SQL statement and print its result. 0 ok, 1 error (printed). */
int cli_run_sql(cli *c, const char *sql);

/* cli_main.c */
/** Wait until SIGINT (or SIGTERM) arrives, or cli_wait_interrupt_wake is called. Used by
 * .subscribe. */
void cli_wait_interrupt(void);
/** End a cli_wait_interrupt from another thread (async-signal-safe). */
void cli_wait_interrupt_wake(void);

#endif
