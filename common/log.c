/* log.c - structured log lines on stderr (see log.h). */
#include "common/log.h"
#include "common/common.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Set once at start-up, before the threads that log exist. */
static hr_log_format log_fmt = HR_LOG_TEXT;
static int log_min = HR_LOG_INFO;
static char log_node[128];
static _Atomic(hr_log_sink) log_sink;

static const char *level_name[] = {"debug", "info", "warn", "error"};

void hr_log_init(hr_log_format fmt, int min_level, const char *node)
{
    log_fmt = fmt;
    log_min = min_level;
    snprintf(log_node, sizeof(log_node), "%s", node ? node : "");
}

void hr_log_set_sink(hr_log_sink sink)
{
    atomic_store(&log_sink, sink);
}

/* RFC 3339 UTC timestamp with milliseconds. */
static void timestamp(char *out, size_t n)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, n - k, ".%03dZ", (int)(tv.tv_usec / 1000));
}

/* Appends s as the body of a JSON string (RFC 8259 escapes) at out[*k],
 * never past cap - 1 bytes; an escape that does not fit is left out whole.
 * A byte that is not part of well-formed UTF-8 becomes U+FFFD, so a line
 * stays valid JSON whatever a message quotes. */
static void json_escape(char *out, size_t cap, size_t *k, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[7];
        size_t n = 0;
        if (c >= 0x80) {
            /* 4: a sequence's most; the NUL ends a short one before it is passed */
            size_t seq = hr_utf8_decode((const unsigned char *)s, 4, NULL);
            if (!seq) {
                memcpy(esc, "\\ufffd", 6);
                n = 6;
            } else {
                if (*k + seq >= cap)
                    return;
                memcpy(out + *k, s, seq);
                *k += seq;
                s += seq - 1;
                continue;
            }
        } else if (c == '"' || c == '\\') {
            esc[n++] = '\\', esc[n++] = (char)c;
        } else if (c == '\n') {
            esc[n++] = '\\', esc[n++] = 'n';
        } else if (c == '\r') {
            esc[n++] = '\\', esc[n++] = 'r';
        } else if (c == '\t') {
            esc[n++] = '\\', esc[n++] = 't';
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(esc, "\\u00", 4);
            n = 4;
            esc[n++] = hex[c >> 4], esc[n++] = hex[c & 15];
        } else {
            esc[n++] = (char)c;
        }
        if (*k + n >= cap)
            return;
        memcpy(out + *k, esc, n);
        *k += n;
    }
}

static void append(char *out, size_t cap, size_t *k, const char *s)
{
    size_t n = strlen(s);
    if (*k + n >= cap)
        n = cap - 1 - *k;
    memcpy(out + *k, s, n);
    *k += n;
}

static void vlog(int level, const char *event, const char *fmt, va_list ap);

void hr_log(int level, const char *event, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, event, fmt, ap);
    va_end(ap);
}

void hr_fatal(const char *event, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(HR_LOG_ERROR, event, fmt, ap);
    va_end(ap);
    abort();
}

/* The whole line is formatted on the stack first and written with one
 * write(2), so lines from different threads never interleave. */
static void vlog(int level, const char *event, const char *fmt, va_list ap)
{
    if (level < log_min || level < 0 || level > HR_LOG_ERROR)
        return;
    char msg[1024], ts[40], line[2600];
    size_t k = 0;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    hr_log_sink sink = atomic_load(&log_sink);
    if (sink) {
        sink(level, event, msg);
        return;
    }
    timestamp(ts, sizeof(ts));
    if (log_fmt == HR_LOG_JSON) {
        /* room is kept for the closing "} and the newline */
        const size_t cap = sizeof(line) - 3;
        append(line, cap, &k, "{\"ts\":\"");
        append(line, cap, &k, ts);
        append(line, cap, &k, "\",\"level\":\"");
        append(line, cap, &k, level_name[level]);
        append(line, cap, &k, "\",\"node\":\"");
        json_escape(line, cap, &k, log_node);
        append(line, cap, &k, "\",\"event\":\"");
        json_escape(line, cap, &k, event);
        append(line, cap, &k, "\",\"msg\":\"");
        json_escape(line, cap, &k, msg);
        memcpy(line + k, "\"}\n", 3);
        k += 3;
    } else {
        int n = snprintf(line, sizeof(line), "%s %-5s %s: %s\n", ts, level_name[level], event, msg);
        k = n < 0 ? 0 : (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
        if (k > 0 && line[k - 1] != '\n')
            line[k - 1] = '\n'; /* a cut line still ends one */
    }
    ssize_t w = write(STDERR_FILENO, line, k);
    (void)w; /* nothing to do when stderr is gone */
}
