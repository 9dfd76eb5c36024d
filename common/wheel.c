/* wheel.c - a timer wheel of intrusive entries (see wheel.h). */
#include "common/wheel.h"
#include "common/common.h"

#include <stdlib.h>

void hr_wheel_init(hr_wheel *w, uint32_t nslots, uint32_t now)
{
    uint32_t n = 2;
    while (n < nslots && n < (1u << 30))
        n <<= 1;
    w->slots = hr_calloc(n, sizeof(*w->slots));
    w->mask = n - 1;
    w->now = now;
    w->count = 0;
}

void hr_wheel_fini(hr_wheel *w)
{
    free(w->slots);
    w->slots = NULL;
    w->count = 0;
}

static void unlink_entry(hr_wheel_entry *e)
{
    if (e->next)
        e->next->pprev = e->pprev;
    *e->pprev = e->next;
    e->next = NULL;
    e->pprev = NULL;
}

static void push(hr_wheel_entry **head, hr_wheel_entry *e)
{
    e->next = *head;
    if (e->next)
        e->next->pprev = &e->next;
    e->pprev = head;
    *head = e;
}

void hr_wheel_disarm(hr_wheel *w, hr_wheel_entry *e)
{
    if (!e->pprev)
        return;
    unlink_entry(e);
    w->count--;
}

void hr_wheel_arm(hr_wheel *w, hr_wheel_entry *e, uint32_t due)
{
    hr_wheel_disarm(w, e);
    /* differences, so that the tick count may wrap */
    int64_t ahead = (int32_t)(due - w->now);
    if (ahead < 1)
        ahead = 1;
    if (ahead > (int64_t)w->mask)
        ahead = w->mask;
    e->due = w->now + (uint32_t)ahead;
    push(&w->slots[e->due & w->mask], e);
    w->count++;
}

size_t hr_wheel_advance(hr_wheel *w, uint32_t now, void (*fire)(hr_wheel_entry *e, void *ud),
                        void *ud)
{
    size_t fired = 0;
    int64_t behind = (int32_t)(now - w->now);
    if (behind <= 0)
        return 0;
    if (w->count == 0) { /* nothing to fire: only the clock moves */
        w->now = now;
        return 0;
    }
    /* more than a turn late: every slot once, each entry in it is due */
    uint32_t t = behind > (int64_t)w->mask + 1 ? now - w->mask : w->now + 1;
    for (;; t++) {
        /* Take the slot's list out first: what fire() arms lands at
         * w->now + 1 or later, never on the list being drained, and an
         * entry fire() cancels unlinks from `due` through its pprev. */
        w->now = t;
        hr_wheel_entry *due = w->slots[t & w->mask];
        w->slots[t & w->mask] = NULL;
        if (due)
            due->pprev = &due;
        while (due) {
            hr_wheel_entry *e = due;
            unlink_entry(e);
            if ((int32_t)(e->due - t) > 0) { /* not due yet: cannot happen, kept safe */
                push(&w->slots[e->due & w->mask], e);
                continue;
            }
            w->count--;
            fired++;
            fire(e, ud);
        }
        if (t == now)
            break;
    }
    return fired;
}
