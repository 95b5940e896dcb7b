#include "fs.h"

#include "alloc.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int gs_mkdir_p(const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

char *gs_path_join(const char *dir, const char *file)
{
    if (file[0] == '/' || !dir || !*dir)
        return gs_strdup(file);
    size_t len = strlen(dir) + strlen(file) + 2;
    char *p = gs_malloc(len);
    if (p)
        snprintf(p, len, "%s/%s", dir, file);
    return p;
}
