/* tests/unit/gateway/static.c - --web-root: which URL paths name a file, content types,
 * reading a file (static.c). */
#include "gateway/static.h"
#include "testing.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *rel(const char *url)
{
    static char out[512];
    return hr_static_path(url, out, sizeof(out)) == 0 ? out : NULL;
}

static void paths(void)
{
    CHECK_STR(rel("/"), "index.html");
    CHECK_STR(rel("/app.js"), "app.js");
    CHECK_STR(rel("/css/chat.css"), "css/chat.css");
    CHECK_STR(rel("/rooms/"), "rooms/index.html");
    CHECK_STR(rel("/app.js?v=3"), "app.js");
    CHECK_STR(rel("/?token=x"), "index.html");
    CHECK_STR(rel("/a-b_c.1.min.js"), "a-b_c.1.min.js");
    CHECK(rel("") == NULL);
    CHECK(rel("app.js") == NULL);
    CHECK(rel("/../etc/passwd") == NULL);
    CHECK(rel("/a/../../x") == NULL);
    CHECK(rel("/..") == NULL);
    CHECK(rel("/.git/config") == NULL);
    CHECK(rel("/a/.hidden") == NULL);
    CHECK(rel("//etc/passwd") == NULL);
    CHECK(rel("/a//b") == NULL);
    CHECK(rel("/a%2e%2e/b") == NULL);
    CHECK(rel("/a\\b") == NULL);
    CHECK(rel("/a b") == NULL);
    char small[8];
    CHECK(hr_static_path("/index.html", small, sizeof(small)) < 0);
}

static void ctypes(void)
{
    CHECK_STR(hr_static_ctype("index.html"), "text/html; charset=utf-8");
    CHECK_STR(hr_static_ctype("a/app.JS"), "application/javascript; charset=utf-8");
    CHECK_STR(hr_static_ctype("chat.css"), "text/css; charset=utf-8");
    CHECK_STR(hr_static_ctype("x.svg"), "image/svg+xml");
    CHECK_STR(hr_static_ctype("README"), "application/octet-stream");
    CHECK_STR(hr_static_ctype("dir.js/file"), "application/octet-stream");
}

static void reads(void)
{
    char dir[] = "/tmp/herald-static-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof(path), "%s/index.html", dir);
    FILE *f = fopen(path, "w");
    fputs("<h1>hi</h1>", f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/sub", dir);
    CHECK(mkdir(path, 0700) == 0);

    hr_static_file sf;
    CHECK(hr_static_read(dir, "/", &sf) == 0);
    CHECK(sf.len == 11 && !memcmp(sf.data, "<h1>hi</h1>", 11));
    CHECK_STR(sf.ctype, "text/html; charset=utf-8");
    CHECK(sf.etag[0] == '"' && sf.etag[strlen(sf.etag) - 1] == '"');
    hr_static_free(&sf);
    CHECK(hr_static_read(dir, "/missing.js", &sf) < 0);
    CHECK(hr_static_read(dir, "/sub", &sf) < 0); /* a directory is not a file */
    CHECK(hr_static_read(dir, "/sub/", &sf) < 0);
    CHECK(hr_static_read(NULL, "/", &sf) < 0);

    snprintf(path, sizeof(path), "%s/index.html", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/sub", dir);
    rmdir(path);
    rmdir(dir);
}

int main(void)
{
    RUN(paths);
    RUN(ctypes);
    RUN(reads);
    return TEST_DONE();
}
