/*
 * secret.c - the generated JWT secret of a node that was given none.
 *
 * SPEC §1: with HERALD_JWT_SECRET unset, Herald generates a random secret
 * once and keeps it in the store (SQLite file, or Redis in cluster mode),
 * so tokens survive restarts and every node of a cluster agrees. Runs at
 * start-up, before the event loop exists, so blocking store calls are fine.
 */
#include "auth/auth.h"
#include "common/common.h"

#include <stdio.h>
#include <stdlib.h>

/* 32 random bytes (256 bits, HS256's hash size) as 64 hex characters,
 * which also meets auth_jwt_setup's length rule for HS384 and HS512.
 * Changing the encoding must keep it that long. Caller frees. */
static char *random_secret(void)
{
    char *hex = hr_malloc(32 * 2 + 1);
    hr_random_hex(hex, 32);
    return hex;
}

int auth_secret_load_or_create(const auth_store_ops *ops, const char *target, const char *prefix,
                               char **secret, int *created, char *err, size_t errlen)
{
    *secret = NULL;
    *created = 0;
    auth_store *st = ops->open(target, prefix, err, errlen);
    if (!st)
        return -1;
    if (ops->init(st, err, errlen) != AUTH_OK)
        goto out;
    *secret = ops->meta_get(st, "jwt_secret");
    if (!*secret) {
        /* put_new keeps a value another node stored first; re-read it. */
        char *fresh = random_secret();
        if (fresh && ops->meta_put_new(st, "jwt_secret", fresh) == AUTH_OK) {
            *secret = ops->meta_get(st, "jwt_secret");
            *created = 1;
        }
        free(fresh);
    }
    if (!*secret)
        snprintf(err, errlen, "cannot keep the generated JWT secret in the %s store", ops->name);
out:
    ops->close(st);
    return *secret ? 0 : -1;
}
