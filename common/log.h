/*
 * log.h - structured logging: one line per event, JSON or text, on stderr.
 *
 * Every line carries a timestamp, level, node id and an event name (a short
 * stable identifier such as "listening" or "slow_consumer") followed by a
 * human-readable message. JSON lines are machine-parsable; text lines are for
 * a terminal. Every module logs through hr_log - the gateway, the channel
 * layer and the user store alike - so an operator gets one format.
 *
 * A line is formatted on the stack and written with one write, without
 * allocating: lines from different threads never interleave, and the
 * out-of-memory abort (alloc.c) can still say why. Any thread.
 */
#ifndef HR_LOG_H
#define HR_LOG_H

typedef enum hr_log_format { HR_LOG_TEXT = 0, HR_LOG_JSON } hr_log_format;

enum { HR_LOG_DEBUG = 0, HR_LOG_INFO = 1, HR_LOG_WARN = 2, HR_LOG_ERROR = 3 };

/* Sets format, minimum level and node id (copied, at most 127 bytes) for
 * later lines. Before it is called: text, info and up, no node id. */
void hr_log_init(hr_log_format fmt, int min_level, const char *node);
void hr_log(int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Logs at error level and aborts: for the conditions no caller can do
 * anything about (out of memory, no randomness), where Herald stops rather
 * than grow untested recovery branches (see CONTRIBUTING.md, "Errors"). */
void hr_fatal(const char *event, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

/* Where lines go instead of stderr (tests that check a warning was
 * logged); NULL restores stderr. The sink gets the level, the event and the
 * formatted message (valid during the call only), on the logging thread. */
typedef void (*hr_log_sink)(int level, const char *event, const char *msg);
void hr_log_set_sink(hr_log_sink sink);

#define hr_debug(...) hr_log(HR_LOG_DEBUG, __VA_ARGS__)
#define hr_info(...) hr_log(HR_LOG_INFO, __VA_ARGS__)
#define hr_warn(...) hr_log(HR_LOG_WARN, __VA_ARGS__)
#define hr_error(...) hr_log(HR_LOG_ERROR, __VA_ARGS__)

#endif
