/*
 * config_internal.h - what config.c and config_ns.c share; not part of
 * the configuration's interface (config.h).
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
/* A Channels channel Herald may send to (namespaces' django_channel,
 * HERALD_EVENTS_DJANGO_CHANNEL). Returns 1 if so. */
int hr_config_django_channel_ok(const char *s);

#endif
