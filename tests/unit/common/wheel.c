/* Unit tests for the timer wheel (common/wheel.c): when entries fire,
 * re-arming and cancelling (also from inside a firing), the one-turn cap,
 * late advances and a wrapping tick count. */
#include "common/common.h"
#include "common/wheel.h"
#include "testing.h"

#include <stdlib.h>

typedef struct item {
    hr_wheel_entry e; /* first: an entry is its item */
    int fired;
    uint32_t at;         /* the tick it last fired at */
    struct item *cancel; /* disarmed by this item's firing */
    int rearm;           /* re-armed this many ticks later by its firing */
} item;

typedef struct ctx {
    hr_wheel *w;
    uint32_t tick;
} ctx;

static void fire(hr_wheel_entry *e, void *ud)
{
    ctx *c = ud;
    item *it = (item *)e;
    it->fired++;
    it->at = c->w->now;
    if (it->cancel)
        hr_wheel_disarm(c->w, &it->cancel->e);
    if (it->rearm)
        hr_wheel_arm(c->w, e, c->w->now + (uint32_t)it->rearm);
}

/* Advances one tick at a time up to `to`. */
static size_t run_to(hr_wheel *w, uint32_t from, uint32_t to)
{
    ctx c = {w, 0};
    size_t n = 0;
    for (uint32_t t = from + 1; t != to + 1; t++)
        n += hr_wheel_advance(w, t, fire, &c);
    return n;
}

static void test_fires_when_due(void)
{
    hr_wheel w;
    item a = {0}, b = {0}, c = {0};
    hr_wheel_init(&w, 16, 100);
    hr_wheel_arm(&w, &a.e, 103);
    hr_wheel_arm(&w, &b.e, 103);
    hr_wheel_arm(&w, &c.e, 105);
    CHECK(w.count == 3 && hr_wheel_armed(&a.e));
    CHECK(run_to(&w, 100, 102) == 0);
    CHECK(run_to(&w, 102, 103) == 2);
    CHECK(a.fired == 1 && b.fired == 1 && c.fired == 0 && a.at == 103 && !hr_wheel_armed(&a.e));
    CHECK(run_to(&w, 103, 110) == 1 && c.at == 105 && w.count == 0);
    /* advancing to a past or the same tick does nothing */
    ctx x = {&w, 0};
    CHECK(hr_wheel_advance(&w, 110, fire, &x) == 0 && hr_wheel_advance(&w, 90, fire, &x) == 0);
    hr_wheel_fini(&w);
}

static void test_rearm_and_disarm(void)
{
    hr_wheel w;
    item a = {0}, b = {0};
    hr_wheel_init(&w, 8, 0);
    hr_wheel_arm(&w, &a.e, 2);
    hr_wheel_arm(&w, &a.e, 5); /* moved, not added twice */
    CHECK(w.count == 1);
    hr_wheel_arm(&w, &b.e, 3);
    hr_wheel_disarm(&w, &b.e);
    hr_wheel_disarm(&w, &b.e); /* twice: nothing */
    CHECK(w.count == 1 && !hr_wheel_armed(&b.e));
    CHECK(run_to(&w, 0, 4) == 0);
    CHECK(run_to(&w, 4, 5) == 1 && a.at == 5 && b.fired == 0);
    hr_wheel_fini(&w);
}

/* A due tick already past and a tick beyond one turn are brought into
 * range; a fire that re-arms its entry for the same tick waits a tick. */
static void test_range(void)
{
    hr_wheel w;
    item a = {0}, b = {0}, c = {0};
    hr_wheel_init(&w, 5, 50); /* rounded up to 8 slots */
    CHECK(w.mask == 7);
    hr_wheel_arm(&w, &a.e, 10);   /* in the past: next tick */
    hr_wheel_arm(&w, &b.e, 5000); /* too far: 7 ticks ahead */
    CHECK(a.e.due == 51 && b.e.due == 57);
    c.rearm = 1;
    hr_wheel_arm(&w, &c.e, 51);
    CHECK(run_to(&w, 50, 51) == 2 && a.fired == 1 && c.fired == 1 && hr_wheel_armed(&c.e));
    c.rearm = 0;
    CHECK(run_to(&w, 51, 57) == 2 && c.at == 52 && b.at == 57 && w.count == 0);
    hr_wheel_fini(&w);
}

/* An entry cancelled by another's firing, in the same slot, never fires. */
static void test_cancel_while_firing(void)
{
    hr_wheel w;
    item a = {0}, b = {0}, c = {0};
    hr_wheel_init(&w, 8, 0);
    hr_wheel_arm(&w, &a.e, 3);
    hr_wheel_arm(&w, &b.e, 3);
    hr_wheel_arm(&w, &c.e, 3);
    /* slots are stacks: c fires first; whichever fires first cancels the others */
    a.cancel = &b;
    b.cancel = &a;
    c.cancel = &b;
    ctx x = {&w, 0};
    CHECK(hr_wheel_advance(&w, 3, fire, &x) == 2);
    CHECK(c.fired == 1 && a.fired == 1 && b.fired == 0 && w.count == 0);
    hr_wheel_fini(&w);
}

/* A loop that was stalled for several turns fires everything once. */
static void test_late_advance(void)
{
    hr_wheel w;
    enum { N = 100 };
    item *it = hr_calloc(N, sizeof(*it));
    hr_wheel_init(&w, 16, 7);
    for (int i = 0; i < N; i++)
        hr_wheel_arm(&w, &it[i].e, 8 + (uint32_t)(i % 15));
    ctx x = {&w, 0};
    CHECK(hr_wheel_advance(&w, 7 + 1000, fire, &x) == N);
    int once = 1;
    for (int i = 0; i < N; i++)
        once &= it[i].fired == 1;
    CHECK(once && w.count == 0 && w.now == 1007);
    free(it);
    hr_wheel_fini(&w);
}

static void test_wrapping_ticks(void)
{
    hr_wheel w;
    item a = {0};
    hr_wheel_init(&w, 64, UINT32_MAX - 2);
    hr_wheel_arm(&w, &a.e, 3); /* 6 ticks ahead, across the wrap */
    CHECK(a.e.due == 3);
    CHECK(run_to(&w, UINT32_MAX - 2, 2) == 0);
    CHECK(run_to(&w, 2, 3) == 1 && a.at == 3);
    hr_wheel_fini(&w);
}

/* A wheel left empty (its owner stops ticking then) only moves its clock
 * when advanced; arming after that is relative to the present. Arming on
 * a clock left a turn behind would make the deadline due at once: the
 * owner advances first (gateway/conn.c, deadline_arm). */
static void test_idle_wheel_catches_up(void)
{
    hr_wheel w;
    item a = {0};
    ctx x = {&w, 0};
    hr_wheel_init(&w, 16, 0);
    CHECK(hr_wheel_advance(&w, 100000, fire, &x) == 0 && w.now == 100000);
    hr_wheel_arm(&w, &a.e, 100010);
    CHECK(a.e.due == 100010);
    CHECK(run_to(&w, 100000, 100009) == 0 && a.fired == 0);
    CHECK(run_to(&w, 100009, 100010) == 1 && a.at == 100010);
    hr_wheel_fini(&w);
}

int main(void)
{
    RUN(test_fires_when_due);
    RUN(test_rearm_and_disarm);
    RUN(test_range);
    RUN(test_cancel_while_firing);
    RUN(test_late_advance);
    RUN(test_wrapping_ticks);
    RUN(test_idle_wheel_catches_up);
    return TEST_DONE();
}
