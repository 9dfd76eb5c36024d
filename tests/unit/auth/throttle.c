/* Unit tests for the rate limits per key (logins, handshakes): attempts
 * counted at admission, the token bucket's burst and refill (the boundary
 * of a second rewards nothing), release and reset, bounded memory, and one
 * throttle shared by threads. The clock is an argument: every time here is
 * exact. */
#include "auth/auth.h"
#include "testing.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

/* Times are milliseconds of the monotonic clock the caller passes. */
#define S(x) ((int64_t)(x)*1000)

/* burst admissions pass at once; then one every period/burst, and a
 * refusal tells the whole seconds (rounded up) until the next one. */
static void admit_then_refuse(void)
{
    auth_throttle *t = auth_throttle_new(3, S(60), 100); /* one back every 20 s */
    for (int i = 0; i < 3; i++)
        CHECK(auth_throttle_admit(t, "bob", S(1000)) == 0);
    CHECK(auth_throttle_admit(t, "bob", S(1000)) == 20);
    CHECK(auth_throttle_admit(t, "bob", S(1010)) == 10); /* refusals count nothing */
    CHECK(auth_throttle_admit(t, "bob", S(1019) + 1) == 1);
    CHECK(auth_throttle_admit(t, "alice", S(1010)) == 0); /* keys are independent */
    CHECK(auth_throttle_admit(t, "bob", S(1020)) == 0);   /* one came back */
    CHECK(auth_throttle_admit(t, "bob", S(1020)) == 20);
    /* a full bucket holds burst, not more: a long pause gives back 3 */
    for (int i = 0; i < 3; i++)
        CHECK(auth_throttle_admit(t, "bob", S(5000)) == 0);
    CHECK(auth_throttle_admit(t, "bob", S(5000)) > 0);
    auth_throttle_free(t);
}

/* The defect fixed windows had: a burst that straddles a boundary of the
 * clock's seconds got twice the rate (50 at x.990 s and 50 more at
 * x+1.000 s). A bucket gives 50, then one per 20 ms, wherever the burst
 * starts. */
static void boundary_burst(void)
{
    static const int64_t starts[] = {S(1000), S(1000) + 990, S(1000) + 999, S(1001) - 1, 7};
    for (size_t k = 0; k < sizeof(starts) / sizeof(starts[0]); k++) {
        auth_throttle *t = auth_throttle_new(50, 1000, 100);
        int64_t t0 = starts[k];
        int admitted = 0;
        /* 200 handshakes, one every 0.1 ms, over 20 ms around the boundary */
        for (int i = 0; i < 200; i++)
            admitted += auth_throttle_admit(t, "10.0.0.1", t0 + i / 10) == 0;
        /* 50 at once + one per 20 ms elapsed (19.9 ms: none yet) */
        if (admitted != 50)
            fprintf(stderr, "  start %lld ms: %d admitted, want 50\n", (long long)t0, admitted);
        CHECK(admitted == 50);
        CHECK(auth_throttle_admit(t, "10.0.0.1", t0 + 20) == 0); /* one back at 20 ms */
        CHECK(auth_throttle_admit(t, "10.0.0.1", t0 + 20) > 0);
        /* over a whole second: at most burst + rate * elapsed */
        admitted = 0;
        for (int64_t ms = t0 + 21; ms <= t0 + 1020; ms++)
            admitted += auth_throttle_admit(t, "10.0.0.1", ms) == 0;
        CHECK(admitted == 50); /* 1000 ms at 50/s */
        auth_throttle_free(t);
    }
}

/* Exact rates with a period that does not divide into whole milliseconds
 * per token (1000 / 3): the refill does not drift over a long run. */
static void no_drift(void)
{
    auth_throttle *t = auth_throttle_new(3, 1000, 100);
    int admitted = 0;
    for (int64_t ms = 0; ms < S(600); ms++) /* ten minutes, one try per ms */
        admitted += auth_throttle_admit(t, "k", ms) == 0;
    /* 3 at start + 3 per second for 599.999 s */
    CHECK(admitted == 3 + 1799);
    auth_throttle_free(t);
}

/* A success resets the username key; release gives back one attempt (the
 * address key of a successful login) but never beyond a full bucket. */
static void reset_and_release(void)
{
    auth_throttle *t = auth_throttle_new(2, S(60), 100);
    CHECK(auth_throttle_admit(t, "u", S(1000)) == 0);
    CHECK(auth_throttle_admit(t, "u", S(1000)) == 0);
    CHECK(auth_throttle_admit(t, "u", S(1001)) > 0);
    auth_throttle_reset(t, "u");
    CHECK(auth_throttle_admit(t, "u", S(1002)) == 0);
    CHECK(auth_throttle_admit(t, "u", S(1002)) == 0);
    CHECK(auth_throttle_admit(t, "u", S(1002)) > 0);

    CHECK(auth_throttle_admit(t, "a", S(1000)) == 0);
    CHECK(auth_throttle_admit(t, "a", S(1000)) == 0);
    auth_throttle_release(t, "a", S(1001));
    CHECK(auth_throttle_admit(t, "a", S(1002)) == 0);
    CHECK(auth_throttle_admit(t, "a", S(1003)) > 0);
    /* full again by 1062 (two tokens, 30 s each, from 1002): releasing
     * then adds nothing */
    auth_throttle_release(t, "a", S(1062));
    CHECK(auth_throttle_admit(t, "a", S(1062)) == 0);
    CHECK(auth_throttle_admit(t, "a", S(1062)) == 0);
    CHECK(auth_throttle_admit(t, "a", S(1062)) > 0);
    auth_throttle_release(t, "nobody", S(1000)); /* unknown keys: no effect */
    auth_throttle_reset(t, "nobody");
    auth_throttle_free(t);
}

/* Past max_keys, entries whose bucket is full again are pruned and live
 * ones kept; a table full of live keys admits new keys uncounted rather
 * than growing. */
static void bounded(void)
{
    auth_throttle *t = auth_throttle_new(1, S(60), 4);
    char k[8];
    for (int i = 0; i < 4; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        CHECK(auth_throttle_admit(t, k, S(1000)) == 0);
    }
    CHECK(auth_throttle_admit(t, "k0", S(1001)) > 0); /* live and kept */
    for (int i = 0; i < 3; i++)
        CHECK(auth_throttle_admit(t, "new", S(1001)) == 0); /* full: fail open */
    /* k0..k3 are full again at 1060: a new key then finds room and counts */
    CHECK(auth_throttle_admit(t, "late", S(1060)) == 0);
    CHECK(auth_throttle_admit(t, "late", S(1061)) > 0);
    CHECK(auth_throttle_admit(t, "k0", S(1061)) == 0);
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
        if (auth_throttle_admit(r->t, "u:victim", S(5000)) == 0)
            r->admitted++;
        /* churn of other keys, so the map grows and rehashes meanwhile */
        char k[24];
        snprintf(k, sizeof(k), "a:%p:%d", (void *)r, i);
        auth_throttle_admit(r->t, k, S(5000));
    }
    return NULL;
}

/* Eight threads guessing at once get LIMIT attempts in total, not LIMIT
 * each and not more through a check-then-count race. */
static void concurrent_admits(void)
{
    auth_throttle *t = auth_throttle_new(LIMIT, S(300), 100000);
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
    RUN(boundary_burst);
    RUN(no_drift);
    RUN(reset_and_release);
    RUN(bounded);
    RUN(concurrent_admits);
    return TEST_DONE();
}
