/* Unit tests for common/log.c: JSON lines stay valid JSON whatever a
 * message holds (quotes, control characters, bytes that are not UTF-8),
 * text lines are one line each, and the sink sees what would be written. */
#include "common/log.h"
#include "testing.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Runs fn with stderr sent to a temporary file; returns what was written
 * (malloc'ed). */
static char *capture(void (*fn)(void))
{
    FILE *tmp = tmpfile();
    int saved = dup(STDERR_FILENO);
    dup2(fileno(tmp), STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    long n = ftell(tmp);
    char *out = calloc(1, (size_t)n + 1);
    rewind(tmp);
    size_t got = fread(out, 1, (size_t)n, tmp);
    out[got] = '\0';
    fclose(tmp);
    return out;
}

static void log_awkward(void)
{
    hr_log_init(HR_LOG_JSON, HR_LOG_INFO, "node \"1\"");
    hr_info("ev\nt", "quote \" backslash \\ tab \t bell \a");
    hr_warn("utf8", "caf\xc3\xa9 bad \xff\xfe cut \xe2\x82");
    hr_debug("hidden", "below the minimum level");
}

static void json_lines(void)
{
    char *out = capture(log_awkward);
    char *nl = strchr(out, '\n');
    CHECK(nl != NULL);
    if (!nl) {
        free(out);
        return;
    }
    *nl = '\0';
    json_t *a = json_loads(out, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(a, "event")), "ev\nt");
    CHECK_STR(json_string_value(json_object_get(a, "msg")), "quote \" backslash \\ tab \t bell \a");
    CHECK_STR(json_string_value(json_object_get(a, "node")), "node \"1\"");
    CHECK_STR(json_string_value(json_object_get(a, "level")), "info");
    json_t *b = json_loads(nl + 1, 0, NULL); /* the debug line was not written */
    CHECK_STR(json_string_value(json_object_get(b, "msg")),
              "caf\xc3\xa9 bad \xef\xbf\xbd\xef\xbf\xbd cut \xef\xbf\xbd\xef\xbf\xbd");
    CHECK_STR(json_string_value(json_object_get(b, "level")), "warn");
    json_decref(a);
    json_decref(b);
    free(out);
}

static void log_long_text(void)
{
    char big[3000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    hr_log_init(HR_LOG_TEXT, HR_LOG_DEBUG, "n");
    hr_error("long", "%s", big);
    hr_debug("short", "two");
}

static void text_lines(void)
{
    char *out = capture(log_long_text);
    char *first = strchr(out, '\n');
    CHECK(first && strstr(out, " error long: xxx"));
    CHECK(first && strstr(first + 1, " debug short: two\n") &&
          !strchr(strchr(first + 1, '\n') + 1, '\n'));
    free(out);
}

static int g_sunk;
static void sink(int level, const char *event, const char *msg)
{
    g_sunk += level == HR_LOG_WARN && !strcmp(event, "e") && !strcmp(msg, "m 7");
}

static void log_to_sink(void)
{
    hr_log_set_sink(sink);
    hr_warn("e", "m %d", 7);
    hr_log_set_sink(NULL);
}

static void sink_gets_lines(void)
{
    hr_log_init(HR_LOG_JSON, HR_LOG_INFO, "n");
    char *out = capture(log_to_sink);
    CHECK(g_sunk == 1);
    CHECK(out[0] == '\0'); /* nothing reached stderr */
    free(out);
}

int main(void)
{
    RUN(json_lines);
    RUN(text_lines);
    RUN(sink_gets_lines);
    return TEST_DONE();
}
