/*
 * secret.c - the generated JWT secret of a node that was given none.
 *
 * SPEC §1: with HERALD_JWT_SECRET unset, Herald generates a random secret
 * once and keeps it in the store, so tokens survive restarts. In embedded
 * mode the store is the SQLite file at HERALD_DB. Runs at start-up, before
 * the event loop exists, so the blocking SQLite calls are harmless here.
 */
#include "auth.h"

#include <openssl/rand.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: %s", msg ? msg : "error");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* Returns the stored value for key (malloc'ed) or NULL if absent. */
static char *meta_get(sqlite3 *db, const char *key)
{
    sqlite3_stmt *st;
    char *val = NULL;
    if (sqlite3_prepare_v2(db, "SELECT value FROM herald_meta WHERE key = ?", -1, &st, NULL) !=
        SQLITE_OK)
        return NULL;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        val = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return val;
}

static int meta_put_new(sqlite3 *db, const char *key, const char *val)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO herald_meta(key, value) VALUES (?, ?)", -1,
                           &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, val, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    sqlite3_finalize(st);
    return rc;
}

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

int auth_secret_load_or_create(const char *db_path, char **secret, int *created, char *err,
                               size_t errlen)
{
    sqlite3 *db = NULL;
    int rc = -1;
    *secret = NULL;
    *created = 0;
    if (sqlite3_open(db_path, &db) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", db_path, db ? sqlite3_errmsg(db) : "oom");
        goto out;
    }
    if (exec(db, "CREATE TABLE IF NOT EXISTS herald_meta (key TEXT PRIMARY KEY, value TEXT)", err,
             errlen) < 0)
        goto out;
    *secret = meta_get(db, "jwt_secret");
    if (!*secret) {
        char *fresh = random_secret();
        /* INSERT OR IGNORE + re-read: two nodes starting at once agree. */
        if (!fresh || meta_put_new(db, "jwt_secret", fresh) < 0) {
            free(fresh);
            snprintf(err, errlen, "cannot store the generated JWT secret in %s", db_path);
            goto out;
        }
        free(fresh);
        *secret = meta_get(db, "jwt_secret");
        *created = 1;
    }
    rc = *secret ? 0 : -1;
    if (rc < 0)
        snprintf(err, errlen, "cannot read the JWT secret from %s", db_path);
out:
    sqlite3_close(db);
    return rc;
}
