/* log.c - structured log lines on stderr (see log.h). */
#include "log.h"

#include <jansson.h>
#include <libwebsockets.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static hr_log_format log_fmt = HR_LOG_TEXT;
static int log_min = HR_LOG_INFO;
static char *log_node;

static const char *level_name[] = {"debug", "info", "warn", "error"};

/* libwebsockets logs through this hook; its lines end with '\n'. */
static void lws_emit(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    hr_log(level == LLL_ERR ? HR_LOG_ERROR : HR_LOG_WARN, "lws", "%.*s", (int)n, line);
}

void hr_log_init(hr_log_format fmt, int min_level, const char *node)
{
    log_fmt = fmt;
    log_min = min_level;
    free(log_node);
    log_node = node ? strdup(node) : NULL;
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_emit);
}

void hr_log_shutdown(void)
{
    free(log_node);
    log_node = NULL;
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

/* The whole line is formatted first and written with one fputs so lines from
 * different threads never interleave. */
void hr_log(int level, const char *event, const char *fmt, ...)
{
    if (level < log_min || level < 0 || level > HR_LOG_ERROR)
        return;
    char msg[1024], ts[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    timestamp(ts, sizeof(ts));

    if (log_fmt == HR_LOG_JSON) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "ts", ts, "level", level_name[level],
                              "node", log_node ? log_node : "", "event", event, "msg", msg);
        char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (line) {
            fprintf(stderr, "%s\n", line);
            free(line);
        }
        json_decref(o);
    } else {
        fprintf(stderr, "%s %-5s %s: %s\n", ts, level_name[level], event, msg);
    }
}
