/* Unit tests for login throttling: attempts counted at admission, windows,
 * release and reset, bounded memory, and one throttle shared by threads. */
#include "auth/auth.h"
#include "testing.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

/* max_attempts admissions pass, the next is refused until the window that
 * the first one opened ends: no failure has to be reported for that. */
static void admit_then_refuse(void)
{
    auth_throttle *t = auth_throttle_new(3, 60, 100);
    for (int i = 0; i < 3; i++)
        CHECK(auth_throttle_admit(t, "bob", 1000 + i) == 0);
    CHECK(auth_throttle_admit(t, "bob", 1010) == 50); /* window opened at 1000 */
    CHECK(auth_throttle_admit(t, "bob", 1059) == 1);  /* refusals count nothing */
    CHECK(auth_throttle_admit(t, "alice", 1010) == 0);
    CHECK(auth_throttle_admit(t, "bob", 1060) == 0); /* window over: a new one */
    CHECK(auth_throttle_admit(t, "bob", 1061) == 0);
    CHECK(auth_throttle_admit(t, "bob", 1062) == 0);
    CHECK(auth_throttle_admit(t, "bob", 1063) == 57);
    auth_throttle_free(t);
}

/* A success resets the username key; release gives back one attempt (the
 * address key of a successful login) but nothing of a closed window. */
static void reset_and_release(void)
{
    auth_throttle *t = auth_throttle_new(2, 60, 100);
    CHECK(auth_throttle_admit(t, "u", 1000) == 0);
    CHECK(auth_throttle_admit(t, "u", 1000) == 0);
    CHECK(auth_throttle_admit(t, "u", 1001) > 0);
    auth_throttle_reset(t, "u");
    CHECK(auth_throttle_admit(t, "u", 1002) == 0);

    CHECK(auth_throttle_admit(t, "a", 1000) == 0);
    CHECK(auth_throttle_admit(t, "a", 1000) == 0);
    auth_throttle_release(t, "a", 1001);
    CHECK(auth_throttle_admit(t, "a", 1002) == 0);
    CHECK(auth_throttle_admit(t, "a", 1003) > 0);
    auth_throttle_release(t, "a", 1060); /* that window closed at 1060 */
    CHECK(auth_throttle_admit(t, "a", 1060) == 0);
    CHECK(auth_throttle_admit(t, "a", 1061) == 0);
    CHECK(auth_throttle_admit(t, "a", 1062) > 0);
    auth_throttle_release(t, "nobody", 1000); /* unknown keys: no effect */
    auth_throttle_reset(t, "nobody");
    auth_throttle_free(t);
}

/* Past max_keys, expired entries are pruned and live ones kept; a table
 * full of live keys admits new keys uncounted rather than growing. */
static void bounded(void)
{
    auth_throttle *t = auth_throttle_new(1, 60, 4);
    char k[8];
    for (int i = 0; i < 4; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        CHECK(auth_throttle_admit(t, k, 1000) == 0);
    }
    CHECK(auth_throttle_admit(t, "k0", 1001) > 0); /* live and kept */
    for (int i = 0; i < 3; i++)
        CHECK(auth_throttle_admit(t, "new", 1001) == 0); /* full: fail open */
    /* k0..k3 expire at 1060: a new key then finds room and is counted */
    CHECK(auth_throttle_admit(t, "late", 1060) == 0);
    CHECK(auth_throttle_admit(t, "late", 1061) > 0);
    CHECK(auth_throttle_admit(t, "k0", 1061) == 0);
    auth_throttle_free(t);
}

/*---- Concurrency -----------------------------------------------------------*/

#define THREADS 8
#define TRIES 500
#define LIMIT 40

typedef struct racer {
    auth_throttle *t;
    atomic_int *go;
    int admitted;
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    while (!atomic_load(r->go))
        ; /* start together, to overlap as much as possible */
    for (int i = 0; i < TRIES; i++) {
        if (auth_throttle_admit(r->t, "u:victim", 5000) == 0)
            r->admitted++;
        /* churn of other keys, so the map grows and rehashes meanwhile */
        char k[24];
        snprintf(k, sizeof(k), "a:%p:%d", (void *)r, i);
        auth_throttle_admit(r->t, k, 5000);
    }
    return NULL;
}

/* Eight threads guessing at once get LIMIT attempts in total, not LIMIT
 * each and not more through a check-then-count race. */
static void concurrent_admits(void)
{
    auth_throttle *t = auth_throttle_new(LIMIT, 300, 100000);
    atomic_int go = 0;
    racer r[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        r[i] = (racer){.t = t, .go = &go};
        CHECK(pthread_create(&th[i], NULL, race, &r[i]) == 0);
    }
    atomic_store(&go, 1);
    int total = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        total += r[i].admitted;
    }
    if (total != LIMIT)
        fprintf(stderr, "  admitted %d, limit %d\n", total, LIMIT);
    CHECK(total == LIMIT);
    auth_throttle_free(t);
}

int main(void)
{
    RUN(admit_then_refuse);
    RUN(reset_and_release);
    RUN(bounded);
    RUN(concurrent_admits);
    return TEST_DONE();
}
