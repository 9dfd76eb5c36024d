/*
 * static.c - files of --web-root (see static.h). Reads are synchronous on
 * the loop thread: meant for a handful of small assets (a demo, an app's
 * pages) that sit in the page cache, not for bulk downloads.
 */
#include "gateway/static.h"

#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

int hr_static_path(const char *urlpath, char *out, size_t outlen)
{
    size_t n = strcspn(urlpath, "?#");
    size_t o = 0, seg = 0;
    if (n == 0 || urlpath[0] != '/' || outlen < 16)
        return -1;
    for (size_t i = 1; i < n; i++) {
        char ch = urlpath[i];
        if (ch == '/') {
            if (seg == 0)
                return -1; /* "//" */
            seg = 0;
        } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                   (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.') {
            if (seg == 0 && ch == '.')
                return -1; /* ".", "..", hidden files */
            if (++seg > 255)
                return -1;
        } else {
            return -1;
        }
        if (o + 1 >= outlen)
            return -1;
        out[o++] = ch;
    }
    if (o == 0 || out[o - 1] == '/') {
        static const char idx[] = "index.html";
        if (o + sizeof(idx) > outlen)
            return -1;
        memcpy(out + o, idx, sizeof(idx));
        return 0;
    }
    out[o] = 0;
    return 0;
}

const char *hr_static_ctype(const char *name)
{
    static const struct {
        const char *ext, *ctype;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "application/javascript; charset=utf-8"},
        {".mjs", "application/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".map", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
        {".webmanifest", "application/manifest+json"},
    };
    const char *dot = strrchr(name, '.');
    const char *slash = strrchr(name, '/');
    if (dot && (!slash || dot > slash))
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
            if (!strcasecmp(dot, types[i].ext))
                return types[i].ctype;
    return "application/octet-stream";
}

int hr_static_read(const char *root, const char *urlpath, hr_static_file *f)
{
    char rel[1024], full[2048];
    struct stat st;
    memset(f, 0, sizeof(*f));
    if (!root || hr_static_path(urlpath, rel, sizeof(rel)) < 0)
        return -1;
    if ((size_t)snprintf(full, sizeof(full), "%s/%s", root, rel) >= sizeof(full))
        return -1;
    int fd = open(full, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -1;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > HR_STATIC_MAX_FILE) {
        close(fd);
        return -1;
    }
    f->len = (size_t)st.st_size;
    f->data = hr_malloc(f->len ? f->len : 1);
    size_t got = 0;
    while (got < f->len) {
        ssize_t r = read(fd, f->data + got, f->len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != f->len) {
        hr_static_free(f);
        return -1;
    }
    f->ctype = hr_static_ctype(rel);
    snprintf(f->etag, sizeof(f->etag), "\"%llx-%llx\"", (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtim.tv_sec * 1000000000ULL +
                 (unsigned long long)st.st_mtim.tv_nsec);
    return 0;
}

void hr_static_free(hr_static_file *f)
{
    free(f->data);
    f->data = NULL;
    f->len = 0;
}
