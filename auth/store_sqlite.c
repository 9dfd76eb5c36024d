/*
 * store_sqlite.c - the user store of embedded mode: one SQLite file (see
 * auth_store_ops in auth.h).
 *
 * Each worker thread owns one connection. WAL mode lets readers run while
 * one writer commits; busy_timeout makes a writer wait for another
 * connection (or another Herald process on the same file) instead of
 * failing at once. Every query is a constant statement with bound
 * parameters, prepared once per connection and cached.
 *
 * Herald creates and migrates the schema itself: herald_meta holds a
 * "schema_version" row, and init() applies the missing steps of
 * `migrations` in one BEGIN IMMEDIATE transaction, so processes starting
 * together on a fresh file serialise instead of racing.
 */
#include "auth/auth.h"
#include "common/common.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*---- Schema ----------------------------------------------------------------*/

typedef struct sqlite_store sqlite_store;

/* Step i brings the schema from version i to i+1, with SQL or with C code
 * (data SQL cannot compute). Never edit a released step: append a new one.
 * herald_meta is created separately (with the exact definition
 * auth/secret.c uses) because it predates the steps. */
typedef struct migration {
    const char *sql;
    int (*run)(sqlite_store *s, char *err, size_t errlen);
} migration;

static int rekey_usernames(sqlite_store *s, char *err, size_t errlen);

static const migration migrations[] = {
    /* 1: users, refresh tokens (by SHA-256, never in clear), revocations */
    {"CREATE TABLE users ("
     " id TEXT PRIMARY KEY,"
     " username TEXT NOT NULL,"
     " username_key TEXT NOT NULL UNIQUE,"
     " password_hash TEXT NOT NULL,"
     " roles TEXT NOT NULL,"
     " created_at INTEGER NOT NULL);"
     "CREATE TABLE refresh_tokens ("
     " token_hash TEXT PRIMARY KEY,"
     " user_id TEXT NOT NULL,"
     " expires_at INTEGER NOT NULL);"
     "CREATE INDEX refresh_tokens_user ON refresh_tokens(user_id);"
     "CREATE INDEX refresh_tokens_expiry ON refresh_tokens(expires_at);"
     "CREATE TABLE revoked (user_id TEXT PRIMARY KEY, at INTEGER NOT NULL);",
     NULL},
    /* 2: username_key is the RFC 8265 key (auth_username_key), no longer
     * the ASCII-only fold */
    {NULL, rekey_usernames},
};
#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

/*---- Statements ------------------------------------------------------------*/

enum {
    Q_USER_INSERT,
    Q_USER_BY_ID,
    Q_USER_BY_KEY,
    Q_USER_DELETE,
    Q_USER_TOKENS_DELETE,
    Q_REFRESH_PUT,
    Q_REFRESH_TAKE,
    Q_REFRESH_PRUNE,
    Q_REVOKED_PUT,
    Q_REVOKED_LIST,
    Q_META_GET,
    Q_META_PUT_NEW,
    Q_META_SET,
    Q_COUNT
};

#define USER_COLUMNS "id, username, password_hash, roles, created_at"

static const char *const queries[Q_COUNT] = {
    [Q_USER_INSERT] = "INSERT INTO users (id, username, username_key, password_hash, roles,"
                      " created_at) VALUES (?, ?, ?, ?, ?, ?)",
    [Q_USER_BY_ID] = "SELECT " USER_COLUMNS " FROM users WHERE id = ?",
    [Q_USER_BY_KEY] = "SELECT " USER_COLUMNS " FROM users WHERE username_key = ?",
    [Q_USER_DELETE] = "DELETE FROM users WHERE id = ?",
    [Q_USER_TOKENS_DELETE] = "DELETE FROM refresh_tokens WHERE user_id = ?",
    [Q_REFRESH_PUT] = "INSERT INTO refresh_tokens (token_hash, user_id, expires_at)"
                      " VALUES (?, ?, ?)",
    [Q_REFRESH_TAKE] = "DELETE FROM refresh_tokens WHERE token_hash = ?"
                       " RETURNING user_id, expires_at",
    [Q_REFRESH_PRUNE] = "DELETE FROM refresh_tokens WHERE expires_at <= ?",
    [Q_REVOKED_PUT] = "INSERT INTO revoked (user_id, at) VALUES (?, ?)"
                      " ON CONFLICT (user_id) DO UPDATE SET at = excluded.at",
    [Q_REVOKED_LIST] = "SELECT user_id, at FROM revoked",
    [Q_META_GET] = "SELECT value FROM herald_meta WHERE key = ?",
    [Q_META_PUT_NEW] = "INSERT OR IGNORE INTO herald_meta (key, value) VALUES (?, ?)",
    [Q_META_SET] = "INSERT INTO herald_meta (key, value) VALUES (?, ?)"
                   " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
};

/* The concrete store behind the opaque auth_store pointer. */
struct sqlite_store {
    sqlite3 *db;
    sqlite3_stmt *q[Q_COUNT]; /* prepared on first use, finalized by close */
};

static sqlite_store *sq(auth_store *s)
{
    return (sqlite_store *)s;
}

/* Returns the cached statement, preparing it on first use (the schema may
 * not exist when the connection opens), or NULL on error. */
static sqlite3_stmt *query(sqlite_store *s, int which)
{
    if (!s->q[which] && sqlite3_prepare_v3(s->db, queries[which], -1, SQLITE_PREPARE_PERSISTENT,
                                           &s->q[which], NULL) != SQLITE_OK)
        return NULL;
    return s->q[which];
}

/* Makes a cached statement reusable; bindings are SQLITE_TRANSIENT copies,
 * so nothing of the caller's outlives the call. */
static void release(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Lock contention that outlasted busy_timeout, or a disk that went away, is
 * "try later"; anything else is a bug or corruption. */
static auth_status failure(sqlite_store *s)
{
    switch (sqlite3_errcode(s->db) & 0xff) { /* primary code of an extended one */
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
        return AUTH_UNAVAILABLE;
    default:
        return AUTH_INTERNAL;
    }
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
}

/* Runs a statement that returns no rows. */
static auth_status run(sqlite_store *s, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    auth_status res = rc == SQLITE_DONE ? AUTH_OK : failure(s);
    release(st);
    return res;
}

/*---- Open, close, init -----------------------------------------------------*/

static int exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return 0;
    snprintf(err, errlen, "sqlite: %s (%.40s)", msg ? msg : sqlite3_errmsg(db), sql);
    sqlite3_free(msg);
    return -1;
}

static void sqlite_close(auth_store *st)
{
    sqlite_store *s = sq(st);
    if (!s)
        return;
    for (int i = 0; i < Q_COUNT; i++)
        sqlite3_finalize(s->q[i]);
    sqlite3_close(s->db);
    free(s);
}

/*
 * File permissions. The store holds password hashes and the generated JWT
 * secret, so its files must be readable by Herald's user only. SQLite
 * creates a database as 0644 (less the umask), and creates the -wal and -shm
 * files with the database file's mode (unix VFS; checked with SQLite 3.40:
 * a 0600 or 0640 database gets 0600 or 0640 -wal and -shm files, whatever
 * the umask). So the database file is created 0600 before SQLite sees it,
 * and existing files that others may read are tightened: databases made by
 * older versions, and -wal and -shm files, which keep their mode when they
 * survive a crash.
 */

/* Creates path as an empty 0600 file when it does not exist yet, so no
 * other user can ever open it (chmod after creation would leave a window in
 * which they could keep a descriptor). Names SQLite interprets itself
 * ("" = temporary, ":memory:", "file:" URIs) are left to it.
 *
 * No descriptor of path itself is ever opened here: closing any descriptor
 * of a file drops every POSIX lock this process holds on it, so opening and
 * closing the database while another connection of this process (another
 * worker, even one that opened it a moment ago) has it open would silently
 * release that connection's SQLite locks; another process would then see no
 * readers, checkpoint and delete the WAL under it. So a private file is
 * made under a temporary name, closed while nobody can know it, and
 * link(2)ed into place - atomically, and only if path does not exist. */
static int create_private(const char *path, char *err, size_t errlen)
{
    char tmp[4096];
    if (!path[0] || !strcmp(path, ":memory:") || !strncmp(path, "file:", 5))
        return 0;
    if (access(path, F_OK) == 0)
        return 0;
    if (snprintf(tmp, sizeof(tmp), "%s.new-%ld-%lx", path, (long)getpid(),
                 (unsigned long)(uintptr_t)&tmp) >= (int)sizeof(tmp)) {
        snprintf(err, errlen, "database path too long: %s", path);
        return -1;
    }
    /* O_NONBLOCK: nothing here may hang start-up */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NONBLOCK, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    close(fd);
    int rc = link(tmp, path) < 0 && errno != EEXIST ? -1 : 0;
    if (rc < 0)
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
    unlink(tmp);
    return rc;
}

/* Makes one existing regular file owner-only, with a warning; a missing one
 * is fine (-wal and -shm exist only while the database is in use). */
static int tighten(const char *file, char *err, size_t errlen)
{
    struct stat st;
    if (stat(file, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot check the permissions of %s: %s", file, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode) || !(st.st_mode & 077))
        return 0;
    unsigned mode = (unsigned)st.st_mode & 07777;
    if (chmod(file, 0600) < 0) {
        snprintf(err, errlen,
                 "%s is accessible to other users (mode %04o) and cannot be made private: %s", file,
                 mode, strerror(errno));
        return -1;
    }
    hr_warn("store_permissions",
            "%s was accessible to other users (mode %04o); changed to 0600: it holds password "
            "hashes and may hold the JWT secret",
            file, mode);
    return 0;
}

/* Tightens the database file SQLite actually opened (a URI or symlink
 * resolved) and its -wal and -shm files. */
static int tighten_all(sqlite3 *db, char *err, size_t errlen)
{
    const char *main_file = sqlite3_db_filename(db, "main");
    if (!main_file || !main_file[0]) /* in memory or temporary */
        return 0;
    char side[4096];
    if (tighten(main_file, err, errlen) < 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        if (snprintf(side, sizeof(side), "%s%s", main_file, i ? "-shm" : "-wal") >=
            (int)sizeof(side))
            continue; /* too long for the kernel too, so SQLite cannot use it */
        if (tighten(side, err, errlen) < 0)
            return -1;
    }
    return 0;
}

/* Switching a fresh file to WAL needs the exclusive lock after reading the
 * header under a shared one. When several connections switch at once, SQLite
 * sees a possible deadlock and answers SQLITE_BUSY at once, without calling
 * the busy handler, so busy_timeout alone does not help: retry, bounded.
 * Runs at startup, never on a loop thread. */
static int enable_wal(sqlite3 *db, char *err, size_t errlen)
{
    for (int attempt = 0;; attempt++) {
        int rc = sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            return 0;
        if ((rc & 0xff) != SQLITE_BUSY || attempt == 500)
            return exec(db, "PRAGMA journal_mode = WAL", err, errlen);
        sqlite3_sleep(10);
    }
}

/* The prefix is a Redis notion; SQLite ignores it. */
static auth_store *sqlite_open(const char *path, const char *prefix, char *err, size_t errlen)
{
    (void)prefix;
    sqlite_store *s = hr_calloc(1, sizeof(*s));
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    if (create_private(path, err, errlen) < 0) {
        free(s);
        return NULL;
    }
    if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", path,
                 s->db ? sqlite3_errmsg(s->db) : "out of memory");
        sqlite_close((auth_store *)s);
        return NULL;
    }
    /* Before WAL mode is set: a -wal or -shm created from here on copies the
     * database file's (now private) mode. */
    if (tighten_all(s->db, err, errlen) < 0) {
        sqlite_close((auth_store *)s);
        return NULL;
    }
    sqlite3_extended_result_codes(s->db, 1);
    /* busy_timeout first: switching to WAL itself may wait for a lock. */
    sqlite3_busy_timeout(s->db, 5000);
    if (exec(s->db, "PRAGMA foreign_keys = ON", err, errlen) < 0 ||
        enable_wal(s->db, err, errlen) < 0 ||
        exec(s->db, "PRAGMA synchronous = NORMAL", err, errlen) < 0) {
        sqlite_close((auth_store *)s);
        return NULL;
    }
    return (auth_store *)s;
}

/* Reads schema_version inside the init transaction; 0 for a fresh file. */
static int schema_version(sqlite_store *s)
{
    char *v = auth_store_sqlite_ops.meta_get((auth_store *)s, "schema_version");
    int n = v ? atoi(v) : 0;
    free(v);
    return n;
}

static int set_schema_version(sqlite_store *s, int version)
{
    sqlite3_stmt *st = query(s, Q_META_SET);
    char buf[16];
    if (!st)
        return -1;
    snprintf(buf, sizeof(buf), "%d", version);
    bind_text(st, 1, "schema_version");
    bind_text(st, 2, buf);
    return run(s, st) == AUTH_OK ? 0 : -1;
}

/* Applies the missing migration steps. Runs inside BEGIN IMMEDIATE. */
static int migrate(sqlite_store *s, char *err, size_t errlen)
{
    if (exec(s->db, "CREATE TABLE IF NOT EXISTS herald_meta (key TEXT PRIMARY KEY, value TEXT)",
             err, errlen) < 0)
        return -1;
    int version = schema_version(s);
    if (version > SCHEMA_VERSION) {
        snprintf(err, errlen, "the database has schema version %d, newer than this Herald (%d)",
                 version, SCHEMA_VERSION);
        return -1;
    }
    for (int v = version; v < SCHEMA_VERSION; v++) {
        if (migrations[v].sql && exec(s->db, migrations[v].sql, err, errlen) < 0)
            return -1;
        if (migrations[v].run && migrations[v].run(s, err, errlen) < 0)
            return -1;
    }
    if (version != SCHEMA_VERSION && set_schema_version(s, SCHEMA_VERSION) < 0) {
        snprintf(err, errlen, "sqlite: cannot record the schema version: %s",
                 sqlite3_errmsg(s->db));
        return -1;
    }
    return 0;
}

/* Migration step 2. Names registered with the ASCII-only fold get their
 * RFC 8265 key and display form: "JOSÉ" was filed under "josÉ" and is now
 * under "josé", the key every lookup computes; "Jose" + U+0301 is stored
 * precomposed. Valid ASCII names do not change. Names the new rules refuse
 * keep their old name and key (logins find them by the legacy key). Two
 * old accounts whose names now mean the same name (say "É" and "é", or
 * "alice" and "ａｌｉｃｅ") cannot share one key: the older keeps it, the
 * other stays under its old key (found by its exact old spelling only once
 * its new key finds nobody), and a warning names both for the operator to
 * settle. Rows are updated in passes, so a row whose new key
 * is still another row's old key waits until that row has moved. Runs in
 * init's transaction. */
static int rekey_usernames(sqlite_store *s, char *err, size_t errlen)
{
    sqlite3_stmt *sel = NULL, *upd = NULL, *owner = NULL;
    struct rekey {
        char *id, *name, *key; /* key NULL once the row has moved */
    } *v = NULL;
    char why[200];
    size_t n = 0, cap = 0;
    int rc = -1, step;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT id, username, username_key FROM users"
                           " ORDER BY created_at, rowid",
                           -1, &sel, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db, "UPDATE users SET username = ?, username_key = ? WHERE id = ?",
                           -1, &upd, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db, "SELECT id FROM users WHERE username_key = ?", -1, &owner,
                           NULL) != SQLITE_OK)
        goto done;
    while ((step = sqlite3_step(sel)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(sel, 0);
        const char *name = (const char *)sqlite3_column_text(sel, 1);
        const char *old = (const char *)sqlite3_column_text(sel, 2);
        char *display = NULL, *key = NULL;
        if (!id || !name || !old ||
            auth_username_prepare(name, &display, &key, why, sizeof(why)) < 0)
            continue;
        if (!strcmp(key, old) && !strcmp(display, name)) {
            free(display);
            free(key);
            continue;
        }
        if (n == cap)
            v = hr_realloc(v, (cap = cap ? cap * 2 : 16) * sizeof(*v));
        v[n].name = display;
        v[n].key = key;
        v[n++].id = hr_strdup(id);
    }
    if (step != SQLITE_DONE)
        goto done;
    for (int moved = 1; moved;) {
        moved = 0;
        for (size_t i = 0; i < n; i++) {
            if (!v[i].key)
                continue;
            bind_text(upd, 1, v[i].name);
            bind_text(upd, 2, v[i].key);
            bind_text(upd, 3, v[i].id);
            int r = sqlite3_step(upd);
            int taken =
                r != SQLITE_DONE && sqlite3_extended_errcode(s->db) == SQLITE_CONSTRAINT_UNIQUE;
            release(upd);
            if (r != SQLITE_DONE && !taken)
                goto done;
            if (!taken) {
                free(v[i].key);
                v[i].key = NULL;
                moved = 1;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!v[i].key)
            continue;
        bind_text(owner, 1, v[i].key);
        const char *other =
            sqlite3_step(owner) == SQLITE_ROW ? (const char *)sqlite3_column_text(owner, 0) : NULL;
        hr_warn("username_collision",
                "users %s and %s have names that are now the same name (RFC 8265): %s keeps "
                "its old key and cannot log in by name while %s exists",
                v[i].id, other ? other : "?", v[i].id, other ? other : "the other");
        release(owner);
    }
    rc = 0;
done:
    if (rc < 0)
        snprintf(err, errlen, "sqlite: cannot migrate username keys: %s", sqlite3_errmsg(s->db));
    for (size_t i = 0; i < n; i++) {
        free(v[i].id);
        free(v[i].name);
        free(v[i].key);
    }
    free(v);
    sqlite3_finalize(sel);
    sqlite3_finalize(upd);
    sqlite3_finalize(owner);
    return rc;
}

/* BEGIN IMMEDIATE takes the write lock up front, so a second process
 * waits (busy_timeout) and then sees the finished schema. */
static auth_status sqlite_init(auth_store *st, char *err, size_t errlen)
{
    sqlite_store *s = sq(st);
    if (exec(s->db, "BEGIN IMMEDIATE", err, errlen) < 0)
        return failure(s);
    if (migrate(s, err, errlen) < 0) {
        auth_status res = failure(s);
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return res;
    }
    if (exec(s->db, "COMMIT", err, errlen) < 0) {
        auth_status res = failure(s);
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return res;
    }
    return AUTH_OK;
}

/*---- Users -----------------------------------------------------------------*/

static auth_status sqlite_create_user(auth_store *st, const auth_user *u)
{
    sqlite_store *s = sq(st);
    sqlite3_stmt *q = query(s, Q_USER_INSERT);
    char *key = auth_username_key(u->username);
    char *roles = auth_roles_encode(u->roles, u->nroles);
    auth_status res = AUTH_INTERNAL;
    if (q && key && roles) {
        bind_text(q, 1, u->id);
        bind_text(q, 2, u->username);
        bind_text(q, 3, key);
        bind_text(q, 4, u->password_hash);
        bind_text(q, 5, roles);
        sqlite3_bind_int64(q, 6, u->created_at);
        int rc = sqlite3_step(q);
        /* username_key is the only UNIQUE column (the random id is the
         * PRIMARY KEY, a different code) */
        res = rc == SQLITE_DONE                                             ? AUTH_OK
              : sqlite3_extended_errcode(s->db) == SQLITE_CONSTRAINT_UNIQUE ? AUTH_TAKEN
                                                                            : failure(s);
        release(q);
    }
    free(key);
    free(roles);
    return res;
}

static char *column_dup(sqlite3_stmt *q, int col)
{
    const unsigned char *v = sqlite3_column_text(q, col);
    return v ? hr_strdup((const char *)v) : NULL;
}

/* Fills out from the current row (USER_COLUMNS). */
static auth_status read_user(sqlite3_stmt *q, auth_user *out)
{
    out->id = column_dup(q, 0);
    out->username = column_dup(q, 1);
    out->password_hash = column_dup(q, 2);
    out->created_at = sqlite3_column_int64(q, 4);
    const char *roles = (const char *)sqlite3_column_text(q, 3);
    if (!out->id || !out->username || !out->password_hash || auth_roles_decode(roles, out) < 0) {
        auth_user_clear(out);
        return AUTH_INTERNAL;
    }
    return AUTH_OK;
}

static auth_status get_user(sqlite_store *s, int which, const char *arg, auth_user *out)
{
    sqlite3_stmt *q = query(s, which);
    memset(out, 0, sizeof(*out));
    if (!q || !arg)
        return AUTH_INTERNAL;
    bind_text(q, 1, arg);
    int rc = sqlite3_step(q);
    auth_status res = rc == SQLITE_ROW    ? read_user(q, out)
                      : rc == SQLITE_DONE ? AUTH_NOT_FOUND
                                          : failure(s);
    release(q);
    return res;
}

static auth_status sqlite_get_user_by_id(auth_store *st, const char *id, auth_user *out)
{
    return get_user(sq(st), Q_USER_BY_ID, id, out);
}

/* By the name's key; when that finds nobody, by its legacy key, which
 * only an account left there by the migration (see rekey_usernames) has. */
static auth_status sqlite_get_user_by_name(auth_store *st, const char *username, auth_user *out)
{
    char *key = username ? auth_username_key(username) : NULL;
    char *legacy = username ? auth_username_legacy_key(username) : NULL;
    auth_status res = key && legacy ? get_user(sq(st), Q_USER_BY_KEY, key, out) : AUTH_INTERNAL;
    if (res == AUTH_NOT_FOUND && strcmp(key, legacy))
        res = get_user(sq(st), Q_USER_BY_KEY, legacy, out);
    free(key);
    free(legacy);
    return res;
}

/* Deletes the user's refresh tokens and the user in one transaction, so a
 * concurrent refresh cannot slip between them. */
static auth_status delete_user_tx(sqlite_store *s, const char *id)
{
    sqlite3_stmt *tokens = query(s, Q_USER_TOKENS_DELETE);
    sqlite3_stmt *user = query(s, Q_USER_DELETE);
    if (!tokens || !user)
        return AUTH_INTERNAL;
    bind_text(tokens, 1, id);
    auth_status res = run(s, tokens);
    if (res != AUTH_OK)
        return res;
    bind_text(user, 1, id);
    res = run(s, user);
    if (res == AUTH_OK && sqlite3_changes(s->db) == 0)
        res = AUTH_NOT_FOUND;
    return res;
}

static auth_status sqlite_delete_user(auth_store *st, const char *id)
{
    sqlite_store *s = sq(st);
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return failure(s);
    auth_status res = delete_user_tx(s, id);
    if ((res == AUTH_OK || res == AUTH_NOT_FOUND) &&
        sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        res = failure(s);
    if (sqlite3_get_autocommit(s->db) == 0)
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return res;
}

/*---- Refresh tokens --------------------------------------------------------*/

static auth_status sqlite_put_refresh(auth_store *st, const char *token_hash, const char *user_id,
                                      int64_t expires_at)
{
    sqlite_store *s = sq(st);
    sqlite3_stmt *q = query(s, Q_REFRESH_PUT);
    if (!q)
        return AUTH_INTERNAL;
    bind_text(q, 1, token_hash);
    bind_text(q, 2, user_id);
    sqlite3_bind_int64(q, 3, expires_at);
    return run(s, q);
}

/* Expired tokens are deleted in passing, so the table holds only live
 * tokens plus those expired since the last refresh. */
static void prune_refresh(sqlite_store *s, int64_t now)
{
    sqlite3_stmt *q = query(s, Q_REFRESH_PRUNE);
    if (!q)
        return;
    sqlite3_bind_int64(q, 1, now);
    run(s, q);
}

/* DELETE ... RETURNING makes "read and consume" one statement: two
 * workers (or nodes) presenting the same token cannot both get a user. */
static auth_status sqlite_take_refresh(auth_store *st, const char *token_hash, int64_t now,
                                       char **user_id)
{
    sqlite_store *s = sq(st);
    sqlite3_stmt *q = query(s, Q_REFRESH_TAKE);
    *user_id = NULL;
    if (!q)
        return AUTH_INTERNAL;
    bind_text(q, 1, token_hash);
    int rc = sqlite3_step(q);
    auth_status res = rc == SQLITE_DONE ? AUTH_NOT_FOUND : failure(s);
    if (rc == SQLITE_ROW) {
        int live = sqlite3_column_int64(q, 1) > now;
        *user_id = live ? column_dup(q, 0) : NULL;
        res = !live ? AUTH_NOT_FOUND : *user_id ? AUTH_OK : AUTH_INTERNAL;
        /* step to the end so the autocommit transaction commits here */
        if (sqlite3_step(q) != SQLITE_DONE) {
            res = failure(s);
            free(*user_id);
            *user_id = NULL;
        }
    }
    release(q);
    prune_refresh(s, now);
    return res;
}

/*---- Revocations and metadata ----------------------------------------------*/

static auth_status sqlite_put_revoked(auth_store *st, const char *user_id, int64_t at)
{
    sqlite_store *s = sq(st);
    sqlite3_stmt *q = query(s, Q_REVOKED_PUT);
    if (!q)
        return AUTH_INTERNAL;
    bind_text(q, 1, user_id);
    sqlite3_bind_int64(q, 2, at);
    return run(s, q);
}

static auth_status sqlite_list_revoked(auth_store *st,
                                       void (*fn)(void *ud, const char *id, int64_t at), void *ud)
{
    sqlite_store *s = sq(st);
    sqlite3_stmt *q = query(s, Q_REVOKED_LIST);
    int rc;
    if (!q)
        return AUTH_INTERNAL;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(q, 0);
        if (id)
            fn(ud, id, sqlite3_column_int64(q, 1));
    }
    auth_status res = rc == SQLITE_DONE ? AUTH_OK : failure(s);
    release(q);
    return res;
}

static char *sqlite_meta_get(auth_store *st, const char *key)
{
    sqlite_store *s = sq(st);
    sqlite3_stmt *q = query(s, Q_META_GET);
    char *val = NULL;
    if (!q)
        return NULL;
    bind_text(q, 1, key);
    if (sqlite3_step(q) == SQLITE_ROW)
        val = column_dup(q, 0);
    release(q);
    return val;
}

/* INSERT OR IGNORE: of two nodes racing to store a generated value, the
 * first wins and both read it back. */
static auth_status sqlite_meta_put_new(auth_store *st, const char *key, const char *value)
{
    sqlite_store *s = sq(st);
    sqlite3_stmt *q = query(s, Q_META_PUT_NEW);
    if (!q)
        return AUTH_INTERNAL;
    bind_text(q, 1, key);
    bind_text(q, 2, value);
    return run(s, q);
}

const auth_store_ops auth_store_sqlite_ops = {
    .name = "sqlite",
    .open = sqlite_open,
    .close = sqlite_close,
    .init = sqlite_init,
    .create_user = sqlite_create_user,
    .get_user_by_id = sqlite_get_user_by_id,
    .get_user_by_name = sqlite_get_user_by_name,
    .delete_user = sqlite_delete_user,
    .put_refresh = sqlite_put_refresh,
    .take_refresh = sqlite_take_refresh,
    .put_revoked = sqlite_put_revoked,
    .list_revoked = sqlite_list_revoked,
    .meta_get = sqlite_meta_get,
    .meta_put_new = sqlite_meta_put_new,
};
