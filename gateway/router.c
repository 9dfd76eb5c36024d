/* router.c - matching a request to a route table (see router.h). */
#include "gateway/router.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Matches path against pattern segment by segment, copying {params}. */
static int path_matches(const char *pattern, const char *path, char params[][HR_ROUTE_PARAM_MAX],
                        size_t np)
{
    size_t pi = 0;
    while (*pattern && *path) {
        if (*pattern == '{') {
            const char *pe = strchr(pattern, '}');
            size_t n = strcspn(path, "/");
            if (!pe || n == 0 || n >= HR_ROUTE_PARAM_MAX || pi >= np)
                return 0;
            memcpy(params[pi], path, n);
            params[pi++][n] = '\0';
            pattern = pe + 1;
            path += n;
        } else if (*pattern++ != *path++) {
            return 0;
        }
    }
    return *pattern == '\0' && *path == '\0';
}

/* Is there a route whose pattern is exactly path, without parameters? Then
 * only such routes answer it: "/users/me" is not user "me" for any method
 * (DELETE /users/me is 405, not the deletion of a user called "me"). */
static int literal_route(const hr_routes *t, const char *path)
{
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->v[i].pattern, path))
            return 1;
    return 0;
}

int hr_router_match(const hr_routes *t, const char *method, const char *path,
                    char params[][HR_ROUTE_PARAM_MAX], size_t nparams, char *allow, size_t allowlen)
{
    int path_seen = 0, literal = literal_route(t, path);
    allow[0] = '\0';
    for (size_t i = 0; i < t->n; i++) {
        const hr_route *r = &t->v[i];
        if (literal ? strcmp(r->pattern, path) != 0
                    : !path_matches(r->pattern, path, params, nparams))
            continue;
        if (!strcmp(r->method, method)) {
            allow[0] = '\0'; /* Allow is only for 405 */
            return (int)i;
        }
        size_t al = strlen(allow);
        snprintf(allow + al, allowlen - al, "%s%s", path_seen ? ", " : "", r->method);
        path_seen = 1;
    }
    return path_seen ? -EOPNOTSUPP : -ENOENT;
}

void hr_router_label(const hr_route *r, char *out, size_t len)
{
    char *w = out, *end = out + len - 1;
    w += snprintf(w, len, "%s ", r->method);
    for (const char *p = r->pattern; *p && w < end; p++)
        if (*p != '}')
            *w++ = *p == '{' ? ':' : *p;
    *w = '\0';
}
