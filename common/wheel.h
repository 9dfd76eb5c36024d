/*
 * wheel.h - a timer wheel: many deadlines in whole ticks, armed, moved and
 * cancelled in O(1), without I/O (the caller drives it with the time).
 *
 * Why. Every client connection holds one deadline (the connect timeout,
 * then its token's expiry). libwebsockets 4.1 keeps its timers in one
 * sorted list per thread and inserts by walking it from the head: a
 * token's expiry lies after nearly every timer already there, so each new
 * connection walked all of them (O(N) per connection, 82 % of the connect
 * CPU at 15,000 connections held; docs/benchmarks.md). A wheel has one
 * list per tick: arming is a push onto the list of the due tick's slot,
 * cancelling an unlink, and each tick looks at one slot.
 *
 * Range. A deadline lies at most nslots - 1 ticks ahead (hr_wheel_arm
 * caps it), so every entry of the slot of tick t is due at t: no rounds
 * to count, no entry looked at before it is due. Callers that need longer
 * waits re-arm when woken (gateway/conn.c caps a token's wait at an hour).
 *
 * Entries are intrusive (embedded in the caller's struct, found back with
 * a container_of); the wheel allocates only its slot array. Time is a
 * uint32_t tick count that may wrap (compared by difference).
 *
 * Threads: none; a wheel belongs to its caller's thread.
 */
#ifndef HR_WHEEL_H
#define HR_WHEEL_H

#include <stddef.h>
#include <stdint.h>

typedef struct hr_wheel_entry {
    struct hr_wheel_entry *next;
    struct hr_wheel_entry **pprev; /* NULL: not armed */
    uint32_t due;                  /* the tick it fires at */
} hr_wheel_entry;

typedef struct hr_wheel {
    hr_wheel_entry **slots; /* nslots list heads */
    uint32_t mask;          /* nslots - 1 (a power of two) */
    uint32_t now;           /* the last tick expired: every due <= now has fired */
    size_t count;           /* entries armed */
} hr_wheel;

/* Sets up w with at least nslots slots (rounded up to a power of two, at
 * least 2), the time being tick `now`. Allocates the slot array (freed by
 * hr_wheel_fini). */
void hr_wheel_init(hr_wheel *w, uint32_t nslots, uint32_t now);
/* Frees the slot array; entries still armed are forgotten (their memory
 * is the caller's). */
void hr_wheel_fini(hr_wheel *w);

/* Arms e (re-arming it if armed) to fire at tick `due`, brought into
 * [now + 1, now + nslots - 1]: never at a tick already expired, never
 * beyond one turn. */
void hr_wheel_arm(hr_wheel *w, hr_wheel_entry *e, uint32_t due);
/* Cancels e (nothing happens when it is not armed). */
void hr_wheel_disarm(hr_wheel *w, hr_wheel_entry *e);
static inline int hr_wheel_armed(const hr_wheel_entry *e)
{
    return e->pprev != NULL;
}

/* Expires every tick from the last one expired up to `now`: each entry
 * due is disarmed, then fire(e, ud) runs, which may arm or disarm any
 * entry (e included). A jump of more than one turn looks at every slot
 * once; on an empty wheel only the clock moves. Returns the entries fired.
 * A caller that stops advancing while the wheel is empty must advance it
 * to the present before arming again: arming is relative to the last tick
 * expired, and a clock left a turn behind would make a new deadline due
 * at once. */
size_t hr_wheel_advance(hr_wheel *w, uint32_t now, void (*fire)(hr_wheel_entry *e, void *ud),
                        void *ud);

#endif
