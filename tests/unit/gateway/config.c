/* tests/unit/gateway/config.c - defaults, precedence (file < env < flags), value
 * validation, the JSON file and namespaces of gateway/config.c. */
#include "gateway/config.h"
#include "testing.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

static char err[512];

/* Writes text to a fresh file in /tmp; returns its malloc'ed path, which the
 * caller passes to drop_file(). */
static char *temp_file(const char *text)
{
    char *path = strdup("/tmp/herald_test_config_XXXXXX");
    int fd = path ? mkstemp(path) : -1;
    if (fd < 0) {
        free(path);
        return NULL;
    }
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len)
        fprintf(stderr, "temp_file: short write\n");
    close(fd);
    return path;
}

static void drop_file(char *path)
{
    if (path)
        unlink(path);
    free(path);
}

/* Defaults, then load; the caller clears cfg. Returns hr_config_load's rc. */
static int load(hr_config *cfg, int argc, char **argv, char **env)
{
    err[0] = 0;
    hr_config_defaults(cfg);
    return hr_config_load(cfg, argc, argv, env, err, sizeof(err));
}

/* Loads with the file text given as --config and returns the rc. */
static int load_json(hr_config *cfg, const char *json, char *path_out, size_t path_len)
{
    char *path = temp_file(json);
    char flag[128];
    snprintf(flag, sizeof(flag), "--config=%s", path ? path : "");
    char *argv[] = {flag};
    int rc = load(cfg, 1, argv, NULL);
    if (path_out)
        snprintf(path_out, path_len, "%s", path ? path : "");
    drop_file(path);
    return rc;
}

/* Loads a config where only one environment variable is set; expects failure
 * with an error that mentions want. */
static void env_fails(const char *var, const char *want)
{
    hr_config cfg;
    char *env[] = {(char *)var, NULL};
    int rc = load(&cfg, 0, NULL, env);
    CHECK(rc == -EINVAL);
    if (rc != -EINVAL || !strstr(err, want))
        fprintf(stderr, "  %s -> rc %d, err \"%s\" (want \"%s\")\n", var, rc, err, want);
    hr_config_clear(&cfg);
}

/* Same with flags. */
static void flags_fail(int argc, char **argv, const char *want)
{
    hr_config cfg;
    int rc = load(&cfg, argc, argv, NULL);
    CHECK(rc == -EINVAL);
    if (rc != -EINVAL || !strstr(err, want))
        fprintf(stderr, "  %s -> rc %d, err \"%s\" (want \"%s\")\n", argv[0], rc, err, want);
    hr_config_clear(&cfg);
}

/* A config file that must be refused with an error containing want. */
static void file_fails(const char *json, const char *want)
{
    hr_config cfg;
    char path[128];
    int rc = load_json(&cfg, json, path, sizeof(path));
    CHECK(rc == -EINVAL);
    CHECK(strstr(err, path) != NULL);
    if (rc != -EINVAL || !strstr(err, want))
        fprintf(stderr, "  %s -> rc %d, err \"%s\" (want \"%s\")\n", json, rc, err, want);
    hr_config_clear(&cfg);
}

static void test_defaults(void)
{
    hr_config cfg;
    char host[256] = {0};
    CHECK(load(&cfg, 0, NULL, NULL) == 0);
    CHECK_STR(cfg.listen_host, "127.0.0.1");
    CHECK(cfg.listen_port == 8080);
    CHECK(cfg.redis_url == NULL);
    CHECK_STR(cfg.redis_prefix, "herald");
    CHECK_STR(cfg.db_path, "./herald.db");
    gethostname(host, sizeof(host) - 1);
    CHECK_STR(cfg.node_id, host);
    CHECK(cfg.napi_keys == 0 && cfg.api_keys == NULL);
    CHECK(cfg.nallowed_origins == 0);
    CHECK(cfg.log_format == (isatty(STDERR_FILENO) ? HR_LOG_TEXT : HR_LOG_JSON));
    CHECK(cfg.log_level == 1);
    CHECK(cfg.jwt_secret == NULL && cfg.jwt_public_key == NULL && cfg.jwt_alg == NULL);
    CHECK(cfg.token_ttl == 3600);
    CHECK(cfg.max_message == 65536);
    CHECK(cfg.max_channel_len == 255);
    CHECK(cfg.max_subscriptions == 512);
    CHECK(cfg.out_queue_bytes == 1048576);
    CHECK(cfg.ws_compression == 0 && cfg.ws_compression_min == 256);
    CHECK(cfg.rate_per_sec == 200);
    CHECK(cfg.rate_burst == 400);
    CHECK(cfg.connect_timeout == 10);
    CHECK(cfg.allow_anonymous == 0);
    CHECK(cfg.max_body == 1048576);
    CHECK(cfg.shutdown_grace_ms == 2000);
    CHECK(cfg.config_path == NULL);
    CHECK(cfg.nnamespaces == 1);
    CHECK_STR(cfg.namespaces[0].name, "");
    CHECK(cfg.namespaces[0].subscribe.kind == AUTH_RULE_AUTHENTICATED);
    CHECK(cfg.namespaces[0].publish.kind == AUTH_RULE_NONE);
    CHECK(cfg.namespaces[0].presence == 0 && cfg.namespaces[0].history_size == 0);
    hr_config_clear(&cfg);
    CHECK(cfg.listen_host == NULL && cfg.namespaces == NULL);
    hr_config_clear(&cfg); /* twice is harmless */
}

static void test_usage(void)
{
    const char *u = hr_config_usage();
    CHECK(strstr(u, "herald [serve] [options]") != NULL);
    CHECK(strstr(u, "herald token --sub ID") != NULL);
    CHECK(strstr(u, "herald user add NAME") != NULL);
    CHECK(strstr(u, "herald --version") != NULL);
    CHECK(strstr(u, "redis://[[user]:password@]host:port[/db]") != NULL);
    CHECK(strstr(u, "--anonymous [BOOL]") != NULL);
    const char *names[] = {"--listen",          "HERALD_LISTEN",  "--redis-url",
                           "HERALD_REDIS_URL",  "--api-key",      "HERALD_API_KEY",
                           "--jwt-private-key", "HERALD_JWT_AUD", "--shutdown-grace-ms",
                           "--anonymous",       "HERALD_CONFIG",  "127.0.0.1:8080"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        CHECK(strstr(u, names[i]) != NULL);
    CHECK(strstr(u, "--ws-compression") != NULL);
    CHECK(strstr(u, "HERALD_WS_COMPRESSION_MIN") != NULL);
    CHECK(hr_config_usage() == u);
}

static void test_precedence(void)
{
    char *path = temp_file("{\"listen\": \"10.0.0.1:1001\", \"api_keys\": [\"f1\", \"f2\"],\n"
                           " \"max_message\": 1000, \"rate\": 5, \"db\": \"/tmp/f.db\"}\n");
    char cfgflag[128];
    snprintf(cfgflag, sizeof(cfgflag), "--config=%s", path);
    char envcfg[128];
    snprintf(envcfg, sizeof(envcfg), "HERALD_CONFIG=%s", path);
    hr_config cfg;

    /* file only, named by HERALD_CONFIG */
    char *env1[] = {envcfg, NULL};
    CHECK(load(&cfg, 0, NULL, env1) == 0);
    CHECK_STR(cfg.config_path, path);
    CHECK_STR(cfg.listen_host, "10.0.0.1");
    CHECK(cfg.listen_port == 1001);
    CHECK(cfg.napi_keys == 2);
    CHECK_STR(cfg.api_keys[1], "f2");
    CHECK(cfg.max_message == 1000);
    CHECK(cfg.rate_per_sec == 5);
    hr_config_clear(&cfg);

    /* env over file */
    char *env2[] = {envcfg, "HERALD_LISTEN=10.0.0.2:1002", "HERALD_API_KEY= e1, e2,,e3 ",
                    "HERALD_MAX_MESSAGE=2000", NULL};
    CHECK(load(&cfg, 0, NULL, env2) == 0);
    CHECK_STR(cfg.listen_host, "10.0.0.2");
    CHECK(cfg.listen_port == 1002);
    CHECK(cfg.napi_keys == 3);
    CHECK_STR(cfg.api_keys[0], "e1");
    CHECK_STR(cfg.api_keys[2], "e3");
    CHECK(cfg.max_message == 2000);
    CHECK(cfg.rate_per_sec == 5);
    CHECK_STR(cfg.db_path, "/tmp/f.db");
    hr_config_clear(&cfg);

    /* flags over env over file; --config named by flag */
    char *env3[] = {"HERALD_CONFIG=/nonexistent.json",
                    "HERALD_LISTEN=10.0.0.2:1002",
                    "HERALD_API_KEY=e1",
                    "HERALD_MAX_MESSAGE=2000",
                    "HERALD_RATE=7",
                    NULL};
    char *argv3[] = {"--config",           path,   "--listen", "10.0.0.3:1003", "--api-key=k1,k2",
                     "--max-message=3000", "--db", "/tmp/x.db"};
    CHECK(load(&cfg, ARGC(argv3), argv3, env3) == 0);
    CHECK_STR(cfg.config_path, path);
    CHECK_STR(cfg.listen_host, "10.0.0.3");
    CHECK(cfg.listen_port == 1003);
    CHECK(cfg.napi_keys == 2);
    CHECK_STR(cfg.api_keys[1], "k2");
    CHECK(cfg.max_message == 3000);
    CHECK(cfg.rate_per_sec == 7);
    CHECK_STR(cfg.db_path, "/tmp/x.db");
    hr_config_clear(&cfg);

    /* the last --config wins, in either form */
    char *argv4[] = {"--config=/nonexistent.json", cfgflag};
    CHECK(load(&cfg, ARGC(argv4), argv4, NULL) == 0);
    CHECK(cfg.rate_per_sec == 5);
    hr_config_clear(&cfg);
    drop_file(path);
}

static void test_flags(void)
{
    hr_config cfg;
    char *argv[] = {"--redis-url=redis://h:6379/2",
                    "--redis-prefix",
                    "hx",
                    "--node-id=node-1.a",
                    "--allowed-origins",
                    "https://a.example, https://b.example",
                    "--log-format=json",
                    "--log-level",
                    "debug",
                    "--jwt-secret=s3cret",
                    "--jwt-alg",
                    "HS512",
                    "--jwt-iss=iss",
                    "--jwt-aud",
                    "aud",
                    "--jwt-public-key=/k.pem",
                    "--jwt-private-key",
                    "/p.pem",
                    "--token-ttl=60",
                    "--max-channel-len=100",
                    "--max-subscriptions",
                    "9",
                    "--out-queue=4096",
                    "--rate-burst=11",
                    "--connect-timeout",
                    "3",
                    "--anonymous",
                    "--max-body=512",
                    "--shutdown-grace-ms=0"};
    CHECK(load(&cfg, ARGC(argv), argv, NULL) == 0);
    CHECK_STR(err, "");
    CHECK_STR(cfg.redis_url, "redis://h:6379/2");
    CHECK_STR(cfg.redis_prefix, "hx");
    CHECK_STR(cfg.node_id, "node-1.a");
    CHECK(cfg.nallowed_origins == 2);
    CHECK_STR(cfg.allowed_origins[1], "https://b.example");
    CHECK(cfg.log_format == HR_LOG_JSON);
    CHECK(cfg.log_level == 0);
    CHECK_STR(cfg.jwt_secret, "s3cret");
    CHECK_STR(cfg.jwt_alg, "HS512");
    CHECK_STR(cfg.jwt_iss, "iss");
    CHECK_STR(cfg.jwt_aud, "aud");
    CHECK_STR(cfg.jwt_public_key, "/k.pem");
    CHECK_STR(cfg.jwt_private_key, "/p.pem");
    CHECK(cfg.token_ttl == 60);
    CHECK(cfg.max_channel_len == 100);
    CHECK(cfg.max_subscriptions == 9);
    CHECK(cfg.out_queue_bytes == 4096);
    CHECK(cfg.rate_burst == 11);
    CHECK(cfg.connect_timeout == 3);
    CHECK(cfg.allow_anonymous == 1);
    CHECK(cfg.max_body == 512);
    CHECK(cfg.shutdown_grace_ms == 0);
    hr_config_clear(&cfg);

    /* booleans: env, then --anonymous=false overrides */
    char *env[] = {"HERALD_ANONYMOUS=true", "HERALD_LOG_LEVEL=warn", NULL};
    CHECK(load(&cfg, 0, NULL, env) == 0);
    CHECK(cfg.allow_anonymous == 1);
    CHECK(cfg.log_level == 2);
    hr_config_clear(&cfg);
    char *argv2[] = {"--anonymous=false"};
    CHECK(load(&cfg, 1, argv2, env) == 0);
    CHECK(cfg.allow_anonymous == 0);
    hr_config_clear(&cfg);
    char *envz[] = {"HERALD_WS_COMPRESSION=yes", "HERALD_WS_COMPRESSION_MIN=0", NULL};
    CHECK(load(&cfg, 0, NULL, envz) == 0);
    CHECK(cfg.ws_compression == 1 && cfg.ws_compression_min == 0);
    hr_config_clear(&cfg);
    char *argvz[] = {"--ws-compression", "--ws-compression-min", "1024"};
    CHECK(load(&cfg, 3, argvz, NULL) == 0);
    CHECK(cfg.ws_compression == 1 && cfg.ws_compression_min == 1024);
    hr_config_clear(&cfg);
    char *env3[] = {"HERALD_ANONYMOUS=1", NULL};
    char *argv3[] = {"--anonymous=0"};
    CHECK(load(&cfg, 1, argv3, env3) == 0);
    CHECK(cfg.allow_anonymous == 0);
    hr_config_clear(&cfg);
    /* --name VALUE works for booleans too (as --help says); a boolean flag
     * followed by another flag means true */
    char *argv5[] = {"--anonymous", "no", "--open-registration", "off"};
    CHECK(load(&cfg, ARGC(argv5), argv5, env3) == 0);
    CHECK(cfg.allow_anonymous == 0);
    CHECK(cfg.open_registration == 0);
    hr_config_clear(&cfg);
    char *argv6[] = {"--anonymous", "yes"};
    CHECK(load(&cfg, ARGC(argv6), argv6, NULL) == 0);
    CHECK(cfg.allow_anonymous == 1);
    hr_config_clear(&cfg);
    char *argv7[] = {"--open-registration", "--anonymous"};
    char *env7[] = {"HERALD_OPEN_REGISTRATION=false", NULL};
    CHECK(load(&cfg, ARGC(argv7), argv7, env7) == 0);
    CHECK(cfg.open_registration == 1);
    CHECK(cfg.allow_anonymous == 1);
    hr_config_clear(&cfg);

    /* empty values unset nullable strings and lists */
    char *env4[] = {"HERALD_REDIS_URL=", "HERALD_API_KEY=a,b", NULL};
    char *argv4[] = {"--api-key="};
    CHECK(load(&cfg, 1, argv4, env4) == 0);
    CHECK(cfg.redis_url == NULL);
    CHECK(cfg.napi_keys == 0);
    hr_config_clear(&cfg);
}

static void test_listen(void)
{
    static const struct {
        const char *in, *host;
        int port;
    } good[] = {
        {"[::1]:9000", "::1", 9000},         {"[fe80::1%eth0]:80", "fe80::1%eth0", 80},
        {":7000", "0.0.0.0", 7000},          {"localhost:1", "localhost", 1},
        {"0.0.0.0:65535", "0.0.0.0", 65535}, {"127.0.0.1:0", "127.0.0.1", 0}, /* 0: any free port */
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        hr_config cfg;
        char flag[64];
        snprintf(flag, sizeof(flag), "--listen=%s", good[i].in);
        char *argv[] = {flag};
        CHECK(load(&cfg, 1, argv, NULL) == 0);
        CHECK_STR(cfg.listen_host, good[i].host);
        CHECK(cfg.listen_port == good[i].port);
        hr_config_clear(&cfg);
    }

    static const char *const bad[] = {
        "",      "8080", "host:",  "host:-0", "host:65536", "::1:80",  "[::1]80",
        "[]:80", "h:8x", "a b:80", "h:+80",   "h:-1",       "[::1:80", "h:99999999999999999999",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char var[64], flag[64];
        snprintf(var, sizeof(var), "HERALD_LISTEN=%s", bad[i]);
        env_fails(var, "HERALD_LISTEN");
        snprintf(flag, sizeof(flag), "--listen=%s", bad[i]);
        char *argv[] = {flag};
        flags_fail(1, argv, "--listen");
    }
}

static void test_bad_values(void)
{
    env_fails("HERALD_MAX_MESSAGE=abc", "HERALD_MAX_MESSAGE");
    env_fails("HERALD_MAX_MESSAGE=-1", "HERALD_MAX_MESSAGE");
    env_fails("HERALD_MAX_MESSAGE=0", "out of range");
    env_fails("HERALD_MAX_MESSAGE=10 ", "HERALD_MAX_MESSAGE");
    env_fails("HERALD_MAX_MESSAGE= 10", "HERALD_MAX_MESSAGE");
    env_fails("HERALD_MAX_MESSAGE=", "HERALD_MAX_MESSAGE");
    env_fails("HERALD_MAX_MESSAGE=99999999999999999999999", "out of range");
    env_fails("HERALD_RATE=3000000000", "HERALD_RATE");
    env_fails("HERALD_RATE_BURST=1.5", "HERALD_RATE_BURST");
    env_fails("HERALD_TOKEN_TTL=0", "HERALD_TOKEN_TTL");
    env_fails("HERALD_CONNECT_TIMEOUT=0x10", "HERALD_CONNECT_TIMEOUT");
    env_fails("HERALD_ANONYMOUS=maybe", "HERALD_ANONYMOUS");
    env_fails("HERALD_WS_COMPRESSION=gzip", "HERALD_WS_COMPRESSION");
    env_fails("HERALD_WS_COMPRESSION_MIN=-1", "HERALD_WS_COMPRESSION_MIN");
    env_fails("HERALD_LOG_LEVEL=verbose", "HERALD_LOG_LEVEL");
    env_fails("HERALD_LOG_FORMAT=xml", "HERALD_LOG_FORMAT");
    env_fails("HERALD_JWT_ALG=none", "HERALD_JWT_ALG");
    env_fails("HERALD_REDIS_URL=http://h:6379", "HERALD_REDIS_URL");
    env_fails("HERALD_DB=", "HERALD_DB");
    env_fails("HERALD_NODE_ID=a b", "HERALD_NODE_ID");
    env_fails("HERALD_CONFIG=/nonexistent/herald.json", "/nonexistent/herald.json");

    /* the Redis URL may carry a password: never echoed */
    hr_config cfg;
    char *env[] = {"HERALD_REDIS_URL=rediss://:hunter2@h", NULL};
    CHECK(load(&cfg, 0, NULL, env) == -EINVAL);
    CHECK(strstr(err, "hunter2") == NULL);
    hr_config_clear(&cfg);

    char *a1[] = {"--max-subscriptions", "x"};
    flags_fail(2, a1, "--max-subscriptions");
    char *a2[] = {"--lisen", "1:1"};
    flags_fail(2, a2, "unknown option --lisen");
    char *a3[] = {"--listen"};
    flags_fail(1, a3, "--listen: missing value");
    char *a4[] = {"serve"};
    flags_fail(1, a4, "unexpected argument \"serve\"");
    char *a5[] = {"--listen", "--db", "x"};
    flags_fail(3, a5, "--listen: missing value");
    char *a6[] = {"--anonymous", "maybe"}; /* not a boolean: a stray argument */
    flags_fail(2, a6, "unexpected argument \"maybe\"");
    char *a7[] = {"--config"};
    flags_fail(1, a7, "--config: missing value");
    char *a8[] = {"-l", "x"};
    flags_fail(2, a8, "unexpected argument \"-l\"");
}

static void test_file(void)
{
    hr_config cfg;
    char path[128], want[256];

    /* every kind of value from the file */
    CHECK(load_json(&cfg,
                    "{\"listen\": \"[::]:81\", \"redis_url\": \"redis://r:1\", \"anonymous\": "
                    "true, \"allowed_origins\": \"https://a, https://b\", \"api_keys\": [],"
                    " \"log_level\": \"error\", \"token_ttl\": 5, \"jwt_secret\": null}",
                    NULL, 0) == 0);
    CHECK_STR(cfg.listen_host, "::");
    CHECK(cfg.listen_port == 81);
    CHECK_STR(cfg.redis_url, "redis://r:1");
    CHECK(cfg.allow_anonymous == 1);
    CHECK(cfg.nallowed_origins == 2);
    CHECK_STR(cfg.allowed_origins[0], "https://a");
    CHECK(cfg.napi_keys == 0);
    CHECK(cfg.log_level == 3);
    CHECK(cfg.token_ttl == 5);
    hr_config_clear(&cfg);

    /* unknown key: exact message */
    CHECK(load_json(&cfg, "{\"lisen\": \"x\"}", path, sizeof(path)) == -EINVAL);
    snprintf(want, sizeof(want), "config file %s: unknown key \"lisen\"", path);
    CHECK_STR(err, want);
    hr_config_clear(&cfg);

    file_fails("{\"config\": \"/x\"}", "unknown key \"config\"");
    file_fails("{\"max_message\": \"big\"}", "\"max_message\": expected a whole number");
    file_fails("{\"max_message\": 1.5}", "\"max_message\"");
    file_fails("{\"max_message\": -3}", "\"max_message\"");
    file_fails("{\"anonymous\": \"yes\"}", "\"anonymous\": expected true or false");
    file_fails("{\"listen\": 8080}", "\"listen\": expected a string");
    file_fails("{\"listen\": \"nope\"}", "\"listen\": invalid address");
    file_fails("{\"api_keys\": [\"a\", 1]}", "\"api_keys\": element 1 is not a string");
    file_fails("{\"db\": null}", "\"db\"");
    file_fails("[1, 2]", "JSON object");
    file_fails("{\n  \"listen\": \"a:1\",\n  \"db\": ,\n}", "line 3");
    file_fails("{\"rate\": 1, \"rate\": 2}", "duplicate");
    file_fails("", "line 1");
}

static void test_namespaces(void)
{
    hr_config cfg;
    const char *json =
        "{\"namespaces\": {\n"
        "  \"chat\": {\"subscribe\": \"authenticated\", \"publish\": \"subscribers\",\n"
        "            \"presence\": true, \"join_leave\": true, \"history_size\": 100,\n"
        "            \"history_ttl\": 300},\n"
        "  \"staff.room\": {\"subscribe\": \"role:staff\", \"publish\": \"role:admin\"},\n"
        "  \"pub\": {\"subscribe\": \"anonymous\"}\n"
        "}}";
    CHECK(load_json(&cfg, json, NULL, 0) == 0);
    CHECK(cfg.nnamespaces == 4);

    const auth_namespace *chat = hr_config_namespace(&cfg, "chat:room");
    CHECK(chat != NULL);
    if (chat) {
        CHECK_STR(chat->name, "chat");
        CHECK(chat->subscribe.kind == AUTH_RULE_AUTHENTICATED);
        CHECK(chat->publish.kind == AUTH_RULE_SUBSCRIBERS);
        CHECK(chat->presence == 1 && chat->join_leave == 1);
        CHECK(chat->history_size == 100 && chat->history_ttl == 300);
    }
    const auth_namespace *staff = hr_config_namespace(&cfg, "staff.room:x:y");
    CHECK(staff && staff->subscribe.kind == AUTH_RULE_ROLE);
    CHECK(staff && staff->publish.kind == AUTH_RULE_ROLE);
    CHECK_STR(staff ? staff->subscribe.role : NULL, "staff");
    CHECK_STR(staff ? staff->publish.role : NULL, "admin");
    CHECK(staff && staff->presence == 0 && staff->history_size == 0);
    const auth_namespace *pub = hr_config_namespace(&cfg, "pub:1");
    CHECK(pub && pub->subscribe.kind == AUTH_RULE_ANONYMOUS);
    CHECK(pub && pub->publish.kind == AUTH_RULE_NONE); /* default for a missing key */

    /* the default namespace was added */
    const char *defaults[] = {"room", "nope:x", "chat", ":x", "", NULL};
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
        const auth_namespace *ns = hr_config_namespace(&cfg, defaults[i]);
        CHECK(ns != NULL);
        CHECK_STR(ns ? ns->name : NULL, "");
        CHECK(ns && ns->subscribe.kind == AUTH_RULE_AUTHENTICATED);
        CHECK(ns && ns->publish.kind == AUTH_RULE_NONE);
    }
    CHECK_STR(hr_config_namespace(&cfg, "chat:")->name, "chat");
    hr_config_clear(&cfg);

    /* a default namespace defined in the file is used, not duplicated */
    CHECK(load_json(&cfg,
                    "{\"namespaces\": {\"\": {\"publish\": \"authenticated\", \"history_size\": "
                    "10}}}",
                    NULL, 0) == 0);
    CHECK(cfg.nnamespaces == 1);
    CHECK(hr_config_namespace(&cfg, "x:y")->publish.kind == AUTH_RULE_AUTHENTICATED);
    CHECK(hr_config_namespace(&cfg, "x")->history_size == 10);
    hr_config_clear(&cfg);

    /* invalid rule: exact message prefix from the brief */
    char path[128], want[256];
    CHECK(load_json(&cfg, "{\"namespaces\": {\"chat\": {\"publish\": \"everyone\"}}}", path,
                    sizeof(path)) == -EINVAL);
    snprintf(want, sizeof(want),
             "config file %s: \"namespaces.chat.publish\": unknown rule \"everyone\"", path);
    CHECK(!strncmp(err, want, strlen(want)));
    hr_config_clear(&cfg);

    file_fails("{\"namespaces\": {\"chat\": {\"histroy_size\": 1}}}",
               "unknown key \"namespaces.chat.histroy_size\"");
    file_fails("{\"namespaces\": {\"chat\": {\"history_size\": -1}}}",
               "\"namespaces.chat.history_size\"");
    file_fails("{\"namespaces\": {\"chat\": {\"history_ttl\": \"5\"}}}",
               "\"namespaces.chat.history_ttl\"");
    file_fails("{\"namespaces\": {\"chat\": {\"presence\": 1}}}", "\"namespaces.chat.presence\"");
    file_fails("{\"namespaces\": {\"chat\": {\"subscribe\": \"subscribers\"}}}",
               "\"namespaces.chat.subscribe\"");
    file_fails("{\"namespaces\": {\"chat\": {\"subscribe\": \"role:\"}}}",
               "\"namespaces.chat.subscribe\"");
    file_fails("{\"namespaces\": {\"chat\": {\"publish\": 3}}}", "\"namespaces.chat.publish\"");
    file_fails("{\"namespaces\": {\"a:b\": {}}}", "invalid namespace name \"a:b\"");
    file_fails("{\"namespaces\": {\"a b\": {}}}", "invalid namespace name");
    file_fails("{\"namespaces\": {\"chat\": true}}", "\"namespaces.chat\": expected an object");
    file_fails("{\"namespaces\": []}", "\"namespaces\": expected an object");
    file_fails("{\"namespaces\": {\"\": {\"bogus\": 1}}}", "namespaces.(default).bogus");
}

/* The Django Channels bridge: defaults, values, what only goes together. */
static void test_django(void)
{
    hr_config cfg;
    CHECK(load(&cfg, 0, NULL, NULL) == 0);
    CHECK(cfg.django_channels == 0 && !strcmp(cfg.django_prefix, "asgi") &&
          cfg.django_group_expiry == 86400 && cfg.django_expiry == 60 &&
          cfg.django_capacity == 100 && !cfg.django_encrypted);
    hr_config_clear(&cfg);

    char *env[] = {"HERALD_REDIS_URL=redis://127.0.0.1:6379", "HERALD_DJANGO_CHANNELS=pubsub",
                   "HERALD_DJANGO_CHANNELS_PREFIX=proj", "HERALD_DJANGO_CHANNELS_CAPACITY=7", NULL};
    CHECK(load(&cfg, 0, NULL, env) == 0);
    CHECK(cfg.django_channels == 1 && !strcmp(cfg.django_prefix, "proj") &&
          cfg.django_capacity == 7);
    hr_config_clear(&cfg);
    char *flags[] = {"--redis-url=redis://h", "--django-channels", "redis"};
    CHECK(load(&cfg, ARGC(flags), flags, NULL) == 0 && cfg.django_channels == 2);
    hr_config_clear(&cfg);

    char *bad[] = {"HERALD_DJANGO_CHANNELS=rabbitmq", NULL};
    CHECK(load(&cfg, 0, NULL, bad) < 0 && strstr(err, "HERALD_DJANGO_CHANNELS"));
    hr_config_clear(&cfg);
    char *embedded[] = {"HERALD_DJANGO_CHANNELS=redis", NULL};
    CHECK(load(&cfg, 0, NULL, embedded) < 0 && strstr(err, "cluster mode"));
    hr_config_clear(&cfg);
    char *enc[] = {"HERALD_REDIS_URL=redis://h", "HERALD_DJANGO_CHANNELS=redis",
                   "HERALD_DJANGO_CHANNELS_ENCRYPTED=true", NULL};
    CHECK(load(&cfg, 0, NULL, enc) < 0 && strstr(err, "symmetric_encryption_keys"));
    hr_config_clear(&cfg);

    /* a namespace's django_channel: a Channels name, and the bridge on */
    CHECK(load_json(&cfg,
                    "{\"redis_url\":\"redis://h\",\"django_channels\":\"redis\","
                    "\"namespaces\":{\"chat\":{\"django_channel\":\"herald-events\"}}}",
                    NULL, 0) == 0);
    const auth_namespace *ns = hr_config_namespace(&cfg, "chat:x");
    CHECK(ns && ns->django_channel && !strcmp(ns->django_channel, "herald-events"));
    ns = hr_config_namespace(&cfg, "news");
    CHECK(ns && !ns->django_channel);
    hr_config_clear(&cfg);
    CHECK(load_json(&cfg, "{\"namespaces\":{\"chat\":{\"django_channel\":\"e\"}}}", NULL, 0) < 0 &&
          strstr(err, "HERALD_DJANGO_CHANNELS"));
    hr_config_clear(&cfg);
    const char *names[] = {"\"specific.x!y\"", "\"a:b\"", "\"\"", "7"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char json[256];
        snprintf(json, sizeof(json),
                 "{\"redis_url\":\"redis://h\",\"django_channels\":\"pubsub\","
                 "\"namespaces\":{\"chat\":{\"django_channel\":%s}}}",
                 names[i]);
        CHECK(load_json(&cfg, json, NULL, 0) < 0 && strstr(err, "namespaces.chat.django_channel"));
        hr_config_clear(&cfg);
    }
}

/* SPEC §8: the proxies and lifecycle events. */
static void test_proxy(void)
{
    hr_config cfg;
    CHECK(load(&cfg, 0, NULL, NULL) == 0);
    CHECK(!cfg.proxy_connect_url && !cfg.proxy_refresh_url && !cfg.proxy_subscribe_url &&
          !cfg.proxy_publish_url && !cfg.proxy_rpc_url && !cfg.nproxy_rpc_methods);
    CHECK(cfg.nproxy_headers == 6);
    if (cfg.nproxy_headers == 6) {
        CHECK_STR(cfg.proxy_headers[0], "Cookie");
        CHECK_STR(cfg.proxy_headers[5], "Accept-Language");
    }
    CHECK(!cfg.proxy_key && !cfg.proxy_ca_file && cfg.proxy_connect_first == 0);
    CHECK(cfg.proxy_timeout == 5 && cfg.proxy_max_inflight == 256 && cfg.proxy_max_queue == 4096 &&
          cfg.proxy_max_response == 262144);
    CHECK(!cfg.events_django_channel && !cfg.events_webhook_url && cfg.events_batch == 100 &&
          cfg.events_queue == 10000);
    CHECK(hr_config_rpc_url(&cfg, "anything") == NULL);
    hr_config_clear(&cfg);

    char *env[] = {"HERALD_PROXY_CONNECT_URL=http://127.0.0.1:8000/herald/connect",
                   "HERALD_PROXY_REFRESH_URL=https://app.example/herald/refresh",
                   "HERALD_PROXY_SUBSCRIBE_URL=http://app/sub",
                   "HERALD_PROXY_PUBLISH_URL=http://app/pub",
                   "HERALD_PROXY_RPC_URL=http://app/rpc",
                   "HERALD_PROXY_RPC_METHODS=billing.=http://billing/rpc, "
                   "billing.refunds.=http://refunds/rpc",
                   "HERALD_PROXY_HEADERS=Cookie, X-Request-Id",
                   "HERALD_PROXY_KEY=s3cret",
                   "HERALD_PROXY_TIMEOUT=2",
                   "HERALD_PROXY_MAX_INFLIGHT=16",
                   "HERALD_PROXY_MAX_QUEUE=0",
                   "HERALD_PROXY_MAX_RESPONSE=4096",
                   "HERALD_PROXY_CONNECT_PRECEDENCE=proxy",
                   "HERALD_EVENTS_WEBHOOK_URL=http://app/events",
                   "HERALD_EVENTS_BATCH=7",
                   "HERALD_EVENTS_QUEUE=50",
                   NULL};
    CHECK(load(&cfg, 0, NULL, env) == 0);
    CHECK_STR(cfg.proxy_connect_url, "http://127.0.0.1:8000/herald/connect");
    CHECK_STR(cfg.proxy_refresh_url, "https://app.example/herald/refresh");
    CHECK_STR(cfg.proxy_subscribe_url, "http://app/sub");
    CHECK_STR(cfg.proxy_publish_url, "http://app/pub");
    CHECK(cfg.nproxy_headers == 2 && !strcmp(cfg.proxy_headers[1], "X-Request-Id"));
    CHECK_STR(cfg.proxy_key, "s3cret");
    CHECK(cfg.proxy_timeout == 2 && cfg.proxy_max_inflight == 16 && cfg.proxy_max_queue == 0 &&
          cfg.proxy_max_response == 4096 && cfg.proxy_connect_first == 1);
    CHECK_STR(cfg.events_webhook_url, "http://app/events");
    CHECK(cfg.events_batch == 7 && cfg.events_queue == 50);
    /* the longest matching prefix wins; the rest go to HERALD_PROXY_RPC_URL */
    CHECK_STR(hr_config_rpc_url(&cfg, "billing.refunds.create"), "http://refunds/rpc");
    CHECK_STR(hr_config_rpc_url(&cfg, "billing.invoice"), "http://billing/rpc");
    CHECK_STR(hr_config_rpc_url(&cfg, "billing"), "http://app/rpc");
    CHECK_STR(hr_config_rpc_url(&cfg, "orders.list"), "http://app/rpc");
    hr_config_clear(&cfg);

    /* "" forwards no header at all */
    char *none[] = {"HERALD_PROXY_HEADERS=", NULL};
    CHECK(load(&cfg, 0, NULL, none) == 0 && cfg.nproxy_headers == 0);
    hr_config_clear(&cfg);

    /* the file: methods as an object (or an array of PREFIX=URL), namespaces' switches */
    CHECK(load_json(&cfg,
                    "{\"proxy_subscribe_url\":\"http://a/s\",\"proxy_publish_url\":\"http://a/p\","
                    "\"proxy_rpc_methods\":{\"chat.\":\"http://chat/rpc\"},"
                    "\"proxy_headers\":[\"Cookie\"],"
                    "\"namespaces\":{\"chat\":{\"subscribe_proxy\":true,\"publish_proxy\":true},"
                    "\"news\":{\"subscribe_proxy\":false}}}",
                    NULL, 0) == 0);
    CHECK_STR(hr_config_rpc_url(&cfg, "chat.history"), "http://chat/rpc");
    CHECK(hr_config_rpc_url(&cfg, "other") == NULL);
    CHECK(cfg.nproxy_headers == 1);
    const auth_namespace *ns = hr_config_namespace(&cfg, "chat:1");
    CHECK(ns && ns->subscribe_proxy && ns->publish_proxy);
    ns = hr_config_namespace(&cfg, "news:1");
    CHECK(ns && !ns->subscribe_proxy && !ns->publish_proxy);
    ns = hr_config_namespace(&cfg, "plain");
    CHECK(ns && !ns->subscribe_proxy && !ns->publish_proxy);
    hr_config_clear(&cfg);
    CHECK(load_json(&cfg, "{\"proxy_rpc_methods\":[\"a.=http://a/rpc\"]}", NULL, 0) == 0);
    CHECK_STR(hr_config_rpc_url(&cfg, "a.b"), "http://a/rpc");
    hr_config_clear(&cfg);
    CHECK(load_json(&cfg, "{\"proxy_rpc_methods\":{\"a.\":7}}", NULL, 0) < 0 &&
          strstr(err, "proxy_rpc_methods"));
    hr_config_clear(&cfg);
    CHECK(load_json(&cfg, "{\"proxy_rpc_methods\":{\"a b\":\"http://x\"}}", NULL, 0) < 0 &&
          strstr(err, "proxy_rpc_methods"));
    hr_config_clear(&cfg);
    CHECK(load_json(&cfg, "{\"namespaces\":{\"chat\":{\"publish_proxy\":\"yes\"}}}", NULL, 0) < 0 &&
          strstr(err, "namespaces.chat.publish_proxy"));
    hr_config_clear(&cfg);

    /* a switch without its URL, precedence without a connect proxy, ... */
    CHECK(load_json(&cfg, "{\"namespaces\":{\"chat\":{\"subscribe_proxy\":true}}}", NULL, 0) < 0 &&
          strstr(err, "HERALD_PROXY_SUBSCRIBE_URL") && strstr(err, "chat"));
    hr_config_clear(&cfg);
    CHECK(load_json(&cfg, "{\"namespaces\":{\"\":{\"publish_proxy\":true}}}", NULL, 0) < 0 &&
          strstr(err, "HERALD_PROXY_PUBLISH_URL") && strstr(err, "(default)"));
    hr_config_clear(&cfg);
    env_fails("HERALD_PROXY_CONNECT_PRECEDENCE=proxy", "HERALD_PROXY_CONNECT_URL");
    env_fails("HERALD_PROXY_CONNECT_PRECEDENCE=cookie", "HERALD_PROXY_CONNECT_PRECEDENCE");
    env_fails("HERALD_PROXY_REFRESH_URL=http://a/r", "HERALD_PROXY_CONNECT_URL");
    env_fails("HERALD_EVENTS_DJANGO_CHANNEL=herald-events", "HERALD_DJANGO_CHANNELS");
    env_fails("HERALD_EVENTS_DJANGO_CHANNEL=bad!name", "HERALD_EVENTS_DJANGO_CHANNEL");
    char *dj[] = {"HERALD_REDIS_URL=redis://h", "HERALD_DJANGO_CHANNELS=redis",
                  "HERALD_EVENTS_DJANGO_CHANNEL=herald-events", NULL};
    CHECK(load(&cfg, 0, NULL, dj) == 0 && !strcmp(cfg.events_django_channel, "herald-events"));
    hr_config_clear(&cfg);

    /* values */
    const char *bad_urls[] = {"HERALD_PROXY_CONNECT_URL=ftp://app/connect",
                              "HERALD_PROXY_CONNECT_URL=http://",
                              "HERALD_PROXY_CONNECT_URL=http:///path",
                              "HERALD_PROXY_CONNECT_URL=127.0.0.1:8000/connect",
                              "HERALD_PROXY_CONNECT_URL=http://app/a path",
                              "HERALD_EVENTS_WEBHOOK_URL=https://app/\x01"};
    for (size_t i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++) {
        char var[64];
        snprintf(var, sizeof(var), "%.*s", (int)(strchr(bad_urls[i], '=') - bad_urls[i]),
                 bad_urls[i]);
        env_fails(bad_urls[i], var);
    }
    env_fails("HERALD_PROXY_HEADERS=Cookie,Host", "\"Host\" cannot be forwarded");
    env_fails("HERALD_PROXY_HEADERS=Content-Length", "cannot be forwarded");
    env_fails("HERALD_PROXY_HEADERS=X-Herald-Proxy-Key", "cannot be forwarded");
    env_fails("HERALD_PROXY_HEADERS=Bad Name", "cannot be forwarded");
    env_fails("HERALD_PROXY_RPC_METHODS==http://a/rpc", "PREFIX=URL");
    env_fails("HERALD_PROXY_RPC_METHODS=billing.", "PREFIX=URL");
    env_fails("HERALD_PROXY_RPC_METHODS=billing.=ftp://a", "http://");
    env_fails("HERALD_PROXY_TIMEOUT=0", "HERALD_PROXY_TIMEOUT");
    env_fails("HERALD_PROXY_TIMEOUT=601", "HERALD_PROXY_TIMEOUT");
    env_fails("HERALD_PROXY_MAX_INFLIGHT=0", "HERALD_PROXY_MAX_INFLIGHT");
    env_fails("HERALD_EVENTS_BATCH=0", "HERALD_EVENTS_BATCH");
    env_fails("HERALD_PROXY_CA_FILE=/nonexistent/ca.pem", "not a readable file");
    char *key_env[] = {"HERALD_PROXY_KEY=line\nbreak", NULL};
    CHECK(load(&cfg, 0, NULL, key_env) < 0 && strstr(err, "HERALD_PROXY_KEY") &&
          !strstr(err, "line")); /* the key is not echoed */
    hr_config_clear(&cfg);
    char *ca = temp_file("-----BEGIN CERTIFICATE-----\n");
    char ca_var[128];
    snprintf(ca_var, sizeof(ca_var), "HERALD_PROXY_CA_FILE=%s", ca ? ca : "");
    char *ca_env[] = {ca_var, NULL};
    CHECK(load(&cfg, 0, NULL, ca_env) == 0 && cfg.proxy_ca_file && !strcmp(cfg.proxy_ca_file, ca));
    hr_config_clear(&cfg);
    drop_file(ca);
    /* flags */
    char *flags[] = {"--proxy-connect-url", "http://a/c", "--proxy-timeout=9", "--proxy-headers="};
    CHECK(load(&cfg, ARGC(flags), flags, NULL) == 0 && cfg.proxy_timeout == 9 &&
          !strcmp(cfg.proxy_connect_url, "http://a/c") && cfg.nproxy_headers == 0);
    hr_config_clear(&cfg);
    /* --help names them all, and is not cut short */
    const char *u = hr_config_usage();
    CHECK(strstr(u, "--proxy-connect-url URL") && strstr(u, "HERALD_PROXY_HEADERS") &&
          strstr(u, "HERALD_EVENTS_QUEUE, default: 10000\n"));
}

int main(void)
{
    RUN(test_defaults);
    RUN(test_usage);
    RUN(test_precedence);
    RUN(test_flags);
    RUN(test_listen);
    RUN(test_bad_values);
    RUN(test_file);
    RUN(test_namespaces);
    RUN(test_django);
    RUN(test_proxy);
    return TEST_DONE();
}
