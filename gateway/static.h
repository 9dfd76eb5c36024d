/*
 * static.h - files under --web-root, served for GET requests that no route
 * claims (the demo chat in web/demo, or an application's own pages), so a
 * page, its scripts and Herald's API share one origin.
 */
#ifndef HR_STATIC_H
#define HR_STATIC_H

#include <stddef.h>

#define HR_STATIC_MAX_FILE (8u << 20) /* larger files are not served (404) */

typedef struct hr_static_file {
    char *data; /* malloc'd, len bytes */
    size_t len;
    const char *ctype; /* static string */
    char etag[48];     /* quoted: size and modification time */
} hr_static_file;

/* The file a URL path names, relative to the web root, into out: "/" and
 * paths ending in "/" name index.html; every segment must be 1-255 bytes of
 * [A-Za-z0-9._-] not starting with "." (so no "..", no hidden files) and a
 * query string is ignored. Returns 0, or -1 for a path that names no file
 * Herald will serve. Pure. */
int hr_static_path(const char *urlpath, char *out, size_t outlen);

/* The Content-Type for a file name, by extension. Pure. */
const char *hr_static_ctype(const char *name);

/* Reads the file urlpath names under root (a regular file, at most
 * HR_STATIC_MAX_FILE bytes). Returns 0, or -1 (not found / not allowed). */
int hr_static_read(const char *root, const char *urlpath, hr_static_file *f);

void hr_static_free(hr_static_file *f);

#endif
