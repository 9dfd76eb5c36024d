/* msg.c - refcounted, pre-framed messages and channel-name rules. */
#include "channels.h"
#include "common/common.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Writes the header of an unmasked, final text frame carrying len bytes so
 * that it ends exactly where the payload starts. The same bytes then go to
 * every subscriber: the frame is built once per publication, not per socket. */
static void frame_header(chan_msg *m)
{
    unsigned char h[CHAN_FRAME_HDR_MAX];
    size_t n = 0;
    uint64_t len = m->len;

    h[n++] = 0x81; /* FIN | text */
    if (len < 126) {
        h[n++] = (unsigned char)len;
    } else if (len <= 0xffff) {
        h[n++] = 126;
        h[n++] = (unsigned char)(len >> 8);
        h[n++] = (unsigned char)len;
    } else {
        h[n++] = 127;
        for (int shift = 56; shift >= 0; shift -= 8)
            h[n++] = (unsigned char)(len >> shift);
    }
    m->hdr = n;
    memcpy(m->_b + CHAN_FRAME_HDR_MAX - n, h, n);
}

/* Allocates a message with room for len payload bytes and `extra` bytes
 * after them; the caller fills the payload and then calls frame_header().
 * One reference, owned by the caller. */
static chan_msg *msg_alloc(size_t len, size_t extra)
{
    chan_msg *m = hr_malloc(sizeof(*m) + CHAN_FRAME_HDR_MAX + len + extra);
    atomic_init(&m->refs, 1);
    m->len = len;
    m->channel = NULL;
    return m;
}

chan_msg *chan_msg_new(const char *json, size_t len)
{
    chan_msg *m = msg_alloc(len, 0);
    memcpy(m->_b + CHAN_FRAME_HDR_MAX, json, len);
    frame_header(m);
    return m;
}

chan_msg *chan_msg_ref(chan_msg *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void chan_msg_unref(chan_msg *m)
{
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        free(m);
}

/* Channel names are restricted to characters that never need JSON escaping,
 * which lets the publication envelope be assembled with plain copies. */
chan_msg *chan_msg_publication(const char *channel, const char *data_json, size_t data_len,
                               uint64_t offset)
{
    static const char p1[] = "{\"push\":\"message\",\"channel\":\"";
    static const char p2[] = "\",\"data\":";
    char tail[40];
    int tl = offset ? snprintf(tail, sizeof(tail), ",\"offset\":%" PRIu64 "}", offset)
                    : snprintf(tail, sizeof(tail), "}");
    size_t clen = strlen(channel);
    size_t len = sizeof(p1) - 1 + clen + sizeof(p2) - 1 + data_len + (size_t)tl;

    chan_msg *m = msg_alloc(len, clen + 1);
    char *name = (char *)m->_b + CHAN_FRAME_HDR_MAX + len;
    memcpy(name, channel, clen + 1);
    m->channel = name;
    char *w = (char *)m->_b + CHAN_FRAME_HDR_MAX;
    memcpy(w, p1, sizeof(p1) - 1), w += sizeof(p1) - 1;
    memcpy(w, channel, clen), w += clen;
    memcpy(w, p2, sizeof(p2) - 1), w += sizeof(p2) - 1;
    memcpy(w, data_json, data_len), w += data_len;
    memcpy(w, tail, (size_t)tl);
    frame_header(m);
    return m;
}

int chan_name_valid(const char *name, size_t len, size_t max_len)
{
    if (len == 0 || len > max_len)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("_.:@=,-", c)) ||
            c == '\0')
            return 0;
    }
    return 1;
}
