/*
 * alloc.c - allocation that cannot fail (see common.h, "Memory").
 *
 * Herald follows Redis' zmalloc and h2o: when malloc fails the process is
 * already in trouble that no request-level recovery fixes, and dozens of
 * untested "return -1 on OOM" branches are more dangerous than a clean
 * abort with a message. jansson is pointed at the same functions.
 */
#include "common/common.h"
#include "common/log.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t n)
{
    hr_fatal("out_of_memory", "out of memory allocating %zu bytes", n);
}

void *hr_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *hr_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        oom(count * size);
    return p;
}

void *hr_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *hr_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(hr_malloc(n), s, n);
}

char *hr_strndup(const char *s, size_t n)
{
    char *d = hr_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

void hr_alloc_init(void)
{
    json_set_alloc_funcs(hr_malloc, free);
}
