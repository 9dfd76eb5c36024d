/*
 * log.h - structured logging: one line per event, JSON or text.
 *
 * Every line carries a timestamp, level, node id and an event name (a short
 * stable identifier such as "listening" or "slow_consumer") followed by a
 * human-readable message. JSON lines are machine-parsable; text lines are for
 * a terminal.
 */
#ifndef HR_LOG_H
#define HR_LOG_H

#include "config.h"

enum { HR_LOG_DEBUG = 0, HR_LOG_INFO = 1, HR_LOG_WARN = 2, HR_LOG_ERROR = 3 };

/* Sets format, minimum level and node id (copied) for later lines; also
 * routes libwebsockets' own warnings and errors through hr_log. */
void hr_log_init(hr_log_format fmt, int min_level, const char *node);
/* Releases what hr_log_init copied. */
void hr_log_shutdown(void);
void hr_log(int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define hr_debug(...) hr_log(HR_LOG_DEBUG, __VA_ARGS__)
#define hr_info(...) hr_log(HR_LOG_INFO, __VA_ARGS__)
#define hr_warn(...) hr_log(HR_LOG_WARN, __VA_ARGS__)
#define hr_error(...) hr_log(HR_LOG_ERROR, __VA_ARGS__)

#endif
