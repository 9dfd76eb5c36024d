/* warn.c - where the auth module's warnings go (see auth.h, "Warnings"). */
#include "auth.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

/* Atomic so a store opening on a worker thread never reads a torn pointer,
 * even if the gateway sets it late. */
static _Atomic(auth_warn_fn) warn_fn;

void auth_set_warn(auth_warn_fn fn)
{
    atomic_store(&warn_fn, fn);
}

void auth_warn(const char *event, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    auth_warn_fn fn = atomic_load(&warn_fn);
    if (fn)
        fn(event, msg);
    else
        fprintf(stderr, "herald: warning: %s\n", msg);
}
