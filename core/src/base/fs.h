/*
 * Filesystem helpers shared by the node runtime and the CLI commands. Any thread.
 */
#ifndef GS_BASE_FS_H
#define GS_BASE_FS_H

/** mkdir -p with mode 0755; 0 on success, -1 with errno set. */
int gs_mkdir_p(const char *path);
/** `file` when absolute, else "dir/file"; gs_malloc'd, NULL when out of memory. */
char *gs_path_join(const char *dir, const char *file);

#endif
