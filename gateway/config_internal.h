/*
 * config_internal.h - what config.c, config_ns.c and config_check.c share;
 * not part of the configuration's interface (config.h).
 */
#ifndef HR_CONFIG_INTERNAL_H
#define HR_CONFIG_INTERNAL_H

#include "gateway/config.h"

#include <jansson.h>

/* Formats a message into buf (when there is one) and returns -EINVAL, so
 * every error path reads `return hr_config_say(...)`. */
int hr_config_say(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Replaces a string member with a copy of val (NULL allowed). */
void hr_config_set_str(char **slot, const char *val);

/* Replaces cfg's namespaces with those of the file's "namespaces" object
 * obj, adding the default namespace when it does not define "". Returns 0,
 * or -EINVAL with err naming the offending key (cfg unchanged). */
int hr_config_load_namespaces(hr_config *cfg, const char *path, json_t *obj, char *err,
                              size_t errlen);
/* Clears n namespaces and frees the array (NULL allowed). */
void hr_config_free_namespaces(auth_namespace *ns, size_t n);

/*---- Value parsers and checks (config_check.c) -----------------------------*/

/* A Channels channel Herald may send to (namespaces' django_channel,
 * HERALD_EVENTS_DJANGO_CHANNEL). Returns 1 if so. Pure. */
int hr_config_django_channel_ok(const char *s);

/* Each returns 0, or -EINVAL with the reason in why (when why is given).
 * Strict decimal in [min, max] into *out. */
int hr_config_parse_uint(const char *s, unsigned long long min, unsigned long long max,
                         unsigned long long *out, char *why, size_t whylen);
/* true/1/yes/on or false/0/no/off (any case) into *out. */
int hr_config_parse_bool(const char *s, int *out, char *why, size_t whylen);
/* "host:port", "[v6]:port" or ":port" (all interfaces). On success *host
 * is a malloc'ed string the caller owns. */
int hr_config_parse_listen(const char *s, char **host, int *port, char *why, size_t whylen);

/* The checks an option names in its table row: each takes the value's text
 * and allocates nothing that outlives the call. */
int hr_config_check_redis_url(const char *val, char *why, size_t whylen);
int hr_config_check_jwt_alg(const char *val, char *why, size_t whylen);
int hr_config_check_node_id(const char *val, char *why, size_t whylen);
int hr_config_check_dir(const char *val, char *why, size_t whylen);
int hr_config_check_swagger_ui(const char *val, char *why, size_t whylen);
int hr_config_check_url(const char *val, char *why, size_t whylen);
int hr_config_check_rpc_method(const char *val, char *why, size_t whylen);
int hr_config_check_proxy_header(const char *val, char *why, size_t whylen);
int hr_config_check_header_value(const char *val, char *why, size_t whylen);
int hr_config_check_file(const char *val, char *why, size_t whylen);
int hr_config_check_django_channel(const char *val, char *why, size_t whylen);

#endif
