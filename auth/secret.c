/*
 * secret.c - the generated JWT secret of a node that was given none.
 *
 * SPEC §1: with HERALD_JWT_SECRET unset, Herald generates a random secret
 * once and keeps it in the store (SQLite file, or Redis in cluster mode),
 * so tokens survive restarts and every node of a cluster agrees. Runs at
 * start-up, before the event loop exists, so blocking store calls are fine.
 */
#include "auth.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>

/* 32 random bytes as hex. Caller frees. */
static char *random_secret(void)
{
    unsigned char raw[32];
    char *hex = malloc(sizeof(raw) * 2 + 1);
    if (!hex || RAND_bytes(raw, sizeof(raw)) != 1) {
        free(hex);
        return NULL;
    }
    for (size_t i = 0; i < sizeof(raw); i++)
        sprintf(hex + 2 * i, "%02x", raw[i]);
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
