/* Unit tests for the SQLite store's files at rest: created owner-only (the
 * generated JWT secret and password hashes live there), and existing files
 * that others can read are tightened with a warning. */
#include "auth/auth.h"
#include "common/log.h"
#include "testing.h"

#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_dir[64];

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

/* Permission bits of path, or -1 when it does not exist. */
static int mode_of(const char *path)
{
    struct stat st;
    return stat(path, &st) < 0 ? -1 : (int)(st.st_mode & 07777);
}

static int g_warnings;
static char g_warned[512];

static void on_warn(int level, const char *event, const char *message)
{
    g_warnings += level == HR_LOG_WARN;
    snprintf(g_warned, sizeof(g_warned), "%s: %s", event, message);
}

/* A fresh store under umask 022 (SQLite's 0644 default would then stay
 * 0644): the database and, once WAL is in use, its -wal and -shm files are
 * private, including after the generated secret has been written. */
static void fresh_store_is_private(void)
{
    char db[128], wal[140], shm[140], err[256] = "";
    snprintf(db, sizeof(db), "%s/fresh.db", g_dir);
    snprintf(wal, sizeof(wal), "%s-wal", db);
    snprintf(shm, sizeof(shm), "%s-shm", db);
    mode_t old = umask(022);

    auth_store *s = auth_store_sqlite_ops.open(db, NULL, err, sizeof(err));
    CHECK(s != NULL);
    CHECK(s && auth_store_sqlite_ops.init(s, err, sizeof(err)) == AUTH_OK);
    CHECK(s && auth_store_sqlite_ops.meta_put_new(s, "jwt_secret", "x") == AUTH_OK);
    /* while the connection is open, all three files exist */
    int m_db = mode_of(db), m_wal = mode_of(wal), m_shm = mode_of(shm);
    fprintf(stderr, "  modes: db %04o, -wal %04o, -shm %04o\n", m_db, m_wal, m_shm);
    CHECK(m_db >= 0 && (m_db & 077) == 0);
    CHECK(m_wal >= 0 && (m_wal & 077) == 0);
    CHECK(m_shm >= 0 && (m_shm & 077) == 0);
    if (s)
        auth_store_sqlite_ops.close(s);

    /* the start-up path that generates the secret creates it private too */
    char *secret = NULL;
    int created = 0;
    snprintf(db, sizeof(db), "%s/secret.db", g_dir);
    CHECK(auth_secret_load_or_create(&auth_store_sqlite_ops, db, NULL, &secret, &created, err,
                                     sizeof(err)) == 0);
    CHECK(created == 1 && mode_of(db) == 0600);
    free(secret);
    CHECK(g_warnings == 0); /* nothing needed tightening */
    umask(old);
}

/* A database made world-readable by an older version, left with a -wal and
 * -shm by a crash: opening it makes all three 0600 and says so. */
static void existing_files_tightened(void)
{
    char db[128], wal[140], shm[140], err[256] = "";
    snprintf(db, sizeof(db), "%s/old.db", g_dir);
    snprintf(wal, sizeof(wal), "%s-wal", db);
    snprintf(shm, sizeof(shm), "%s-shm", db);
    mode_t old = umask(022);
    pid_t pid = fork();
    if (pid == 0) {
        /* what SQLite alone does; _exit leaves -wal and -shm behind */
        sqlite3 *h;
        sqlite3_open(db, &h);
        sqlite3_exec(h, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES(1)", NULL,
                     NULL, NULL);
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    CHECK(mode_of(db) == 0644 && mode_of(wal) == 0644 && mode_of(shm) == 0644);

    g_warnings = 0;
    hr_log_set_sink(on_warn);
    auth_store *s = auth_store_sqlite_ops.open(db, NULL, err, sizeof(err));
    CHECK(s != NULL);
    CHECK(mode_of(db) == 0600 && mode_of(wal) == 0600 && mode_of(shm) == 0600);
    CHECK(g_warnings == 3);
    CHECK(strstr(g_warned, "store_permissions") && strstr(g_warned, "0644"));
    if (s)
        auth_store_sqlite_ops.close(s);
    hr_log_set_sink(NULL);
    umask(old);
}

int main(void)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/herald-files-XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(fresh_store_is_private);
    RUN(existing_files_tightened);
    nftw(g_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return TEST_DONE();
}
