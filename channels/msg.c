/* msg.c - refcounted, pre-framed messages and channel-name rules. */
#include "channels.h"
#include "common/common.h"
#include "common/ws_frame.h"
#include "layer_internal.h"

#include <jansson.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Writes the header of an unmasked, final text frame carrying len bytes so
 * that it ends exactly where the payload starts. The same bytes then go to
 * every subscriber: the frame is built once per publication, not per socket. */
static void frame_header(chan_msg *m)
{
    unsigned char h[HR_WS_HDR_MAX];
    size_t n = hr_ws_frame_header(h, HR_WS_OP_TEXT, m->len, NULL);
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
    m->offset = 0;
    m->hash = 0;
    m->born_us = hr_now_us();
    atomic_init(&m->tag, -1);
    atomic_init(&m->zframe, NULL);
    return m;
}

chan_msg *chan_msg_new(const char *json, size_t len)
{
    chan_msg *m = msg_alloc(len, 0);
    memcpy(m->_b + CHAN_FRAME_HDR_MAX, json, len);
    frame_header(m);
    return m;
}

chan_msg *chan_msg_for_channel_h(const char *json, size_t len, const char *channel, uint64_t h,
                                 uint64_t offset)
{
    size_t clen = strlen(channel);
    chan_msg *m = msg_alloc(len, clen + 1);
    memcpy(m->_b + CHAN_FRAME_HDR_MAX, json, len);
    char *name = (char *)m->_b + CHAN_FRAME_HDR_MAX + len;
    memcpy(name, channel, clen + 1);
    m->channel = name;
    m->offset = offset;
    m->hash = h;
    frame_header(m);
    return m;
}

chan_msg *chan_msg_for_channel(const char *json, size_t len, const char *channel, uint64_t offset)
{
    return chan_msg_for_channel_h(json, len, channel, chan_hash(channel, strlen(channel)), offset);
}

chan_msg *chan_msg_ref(chan_msg *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void chan_msg_unref(chan_msg *m)
{
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1) {
        free(atomic_load_explicit(&m->zframe, memory_order_relaxed));
        free(m);
    }
}

/* Channel names are restricted to characters that never need JSON escaping,
 * which lets the publication envelope be assembled with plain copies:
 * {"push":"message","channel":C,"data":D[,"offset":O][,"from":F]}. With w
 * NULL only measures. */
static size_t publication_write(char *w, const char *channel, size_t clen, const char *data_json,
                                size_t data_len, uint64_t offset, const char *from)
{
    static const char p1[] = "{\"push\":\"message\",\"channel\":\"";
    static const char p2[] = "\",\"data\":";
    static const char p3[] = ",\"from\":";
    char off[40] = "";
    size_t ol = offset ? (size_t)snprintf(off, sizeof(off), ",\"offset\":%" PRIu64, offset) : 0;
    size_t fl = from ? strlen(from) : 0;
    size_t len = sizeof(p1) - 1 + clen + sizeof(p2) - 1 + data_len + ol +
                 (from ? sizeof(p3) - 1 + fl : 0) + 1;
    if (!w)
        return len;
    memcpy(w, p1, sizeof(p1) - 1), w += sizeof(p1) - 1;
    memcpy(w, channel, clen), w += clen;
    memcpy(w, p2, sizeof(p2) - 1), w += sizeof(p2) - 1;
    memcpy(w, data_json, data_len), w += data_len;
    memcpy(w, off, ol), w += ol;
    if (from) {
        memcpy(w, p3, sizeof(p3) - 1), w += sizeof(p3) - 1;
        memcpy(w, from, fl), w += fl;
    }
    *w = '}';
    return len;
}

size_t chan_publication_offset_at(size_t clen, size_t data_len)
{
    return sizeof("{\"push\":\"message\",\"channel\":\"") - 1 + clen +
           sizeof("\",\"data\":") - 1 + data_len;
}

chan_msg *chan_msg_publication(const char *channel, const char *data_json, size_t data_len,
                               uint64_t offset, const char *from)
{
    return chan_msg_publication_h(channel, chan_hash(channel, strlen(channel)), data_json,
                                  data_len, offset, from);
}

chan_msg *chan_msg_publication_h(const char *channel, uint64_t h, const char *data_json,
                                 size_t data_len, uint64_t offset, const char *from)
{
    size_t clen = strlen(channel);
    size_t len = publication_write(NULL, channel, clen, data_json, data_len, offset, from);
    chan_msg *m = msg_alloc(len, clen + 1);
    char *name = (char *)m->_b + CHAN_FRAME_HDR_MAX + len;
    memcpy(name, channel, clen + 1);
    m->channel = name;
    m->offset = offset;
    m->hash = h;
    publication_write((char *)m->_b + CHAN_FRAME_HDR_MAX, channel, clen, data_json, data_len,
                      offset, from);
    frame_header(m);
    return m;
}

char *chan_publication_text(const char *channel, const char *data_json, size_t data_len,
                            uint64_t offset, const char *from, size_t *len)
{
    size_t clen = strlen(channel);
    size_t n = publication_write(NULL, channel, clen, data_json, data_len, offset, from);
    char *s = hr_malloc(n + 1);
    publication_write(s, channel, clen, data_json, data_len, offset, from);
    s[n] = '\0';
    *len = n;
    return s;
}

char *chan_join_leave_text(int join, const char *channel, const char *client, const char *user,
                           size_t *len)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "push", join ? "join" : "leave", "channel",
                          channel, "client", client, "user", user ? user : "");
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        abort(); /* out of memory: common.h's policy */
    *len = strlen(s);
    return s;
}

/* One parse per publication per node (not per delivery): what Redis hands
 * us came from a backend we trust to publish, but not to be right. */
chan_msg *chan_msg_parse_push(const char *json, size_t len, const char *channel, char *err,
                              size_t errlen)
{
    return chan_msg_parse_push_h(json, len, channel, chan_hash(channel, strlen(channel)), err,
                                 errlen);
}

chan_msg *chan_msg_parse_push_h(const char *json, size_t len, const char *channel, uint64_t h,
                                char *err, size_t errlen)
{
    json_error_t jerr;
    /* \u0000 in data is delivered (Herald accepts it everywhere) */
    json_t *o = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    chan_msg *m = NULL;
    const char *push = json_string_value(json_object_get(o, "push"));
    const char *ch = json_string_value(json_object_get(o, "channel"));
    json_t *off = json_object_get(o, "offset");
    json_t *from = json_object_get(o, "from");
    if (!o) {
        snprintf(err, errlen, "invalid JSON: %s", jerr.text);
    } else if (!push ||
               (strcmp(push, "message") && strcmp(push, "join") && strcmp(push, "leave"))) {
        snprintf(err, errlen, "\"push\" must be message, join or leave");
    } else if (!ch || strcmp(ch, channel)) {
        snprintf(err, errlen, "\"channel\" does not name the topic's channel");
    } else if (!strcmp(push, "message") && !json_object_get(o, "data")) {
        snprintf(err, errlen, "a message without \"data\"");
    } else if (off && (!json_is_integer(off) || json_integer_value(off) <= 0)) {
        snprintf(err, errlen, "\"offset\" must be a positive integer");
    } else if (from && !json_is_object(from)) {
        snprintf(err, errlen, "\"from\" must be an object");
    } else {
        m = chan_msg_for_channel_h(json, len, channel, h,
                                   off ? (uint64_t)json_integer_value(off) : 0);
    }
    json_decref(o);
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
