/*
 * config_ns.c - the namespaces of the JSON config file (SPEC §3): who may
 * subscribe and publish, presence, join/leave, history, the Django channel
 * and the proxies of each, parsed against a small key table of their own
 * (ns_table[]); and finding a channel's namespace. Pure, like config.c.
 */
#include "gateway/config.h"
#include "gateway/config_internal.h"
#include "common/common.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/*---- Parsing ---------------------------------------------------------------*/

typedef enum ns_type { NS_RULE, NS_BOOL, NS_COUNT, NS_DJANGO } ns_type;

typedef struct ns_def {
    const char *key;
    ns_type type;
    size_t off; /* into auth_namespace */
} ns_def;

static const ns_def ns_table[] = {
    {"subscribe", NS_RULE, offsetof(auth_namespace, subscribe)},
    {"publish", NS_RULE, offsetof(auth_namespace, publish)},
    {"presence", NS_BOOL, offsetof(auth_namespace, presence)},
    {"join_leave", NS_BOOL, offsetof(auth_namespace, join_leave)},
    {"history_size", NS_COUNT, offsetof(auth_namespace, history_size)},
    {"history_ttl", NS_COUNT, offsetof(auth_namespace, history_ttl)},
    {"django_channel", NS_DJANGO, offsetof(auth_namespace, django_channel)},
    {"subscribe_proxy", NS_BOOL, offsetof(auth_namespace, subscribe_proxy)},
    {"publish_proxy", NS_BOOL, offsetof(auth_namespace, publish_proxy)},
};

#define NNS_KEYS (sizeof(ns_table) / sizeof(ns_table[0]))

void hr_config_free_namespaces(auth_namespace *ns, size_t n)
{
    for (size_t i = 0; i < n; i++)
        auth_namespace_clear(&ns[i]);
    free(ns);
}

/* Namespace names are channel-name characters without ':' (the separator). */
static int ns_name_ok(const char *name)
{
    size_t len = strlen(name);
    if (len > 255)
        return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("_.@=,-", *p)))
            return 0;
    return 1;
}

/* Parses a rule string into the auth_rule at slot, replacing what was there.
 * "subscribers" only makes sense for publishing. */
static int ns_set_rule(auth_rule *slot, const ns_def *d, json_t *v, char *why, size_t whylen)
{
    auth_rule r = {0};
    if (!json_is_string(v))
        return hr_config_say(why, whylen, "expected a rule string");
    const char *s = json_string_value(v);
    if (auth_rule_parse(s, &r) < 0)
        return hr_config_say(
            why, whylen,
            "unknown rule \"%s\" (anonymous, authenticated, subscribers, role:<name> or "
            "none)",
            s);
    if (r.kind == AUTH_RULE_ROLE && (!r.role || !*r.role)) {
        free(r.role);
        return hr_config_say(why, whylen, "rule \"%s\" names no role", s);
    }
    if (r.kind == AUTH_RULE_SUBSCRIBERS && strcmp(d->key, "publish")) {
        free(r.role);
        return hr_config_say(why, whylen, "rule \"subscribers\" is only valid for publish");
    }
    free(slot->role); /* auth_rule owns its role */
    *slot = r;
    return 0;
}

/* Sets one key of a namespace from its JSON value. */
static int ns_apply(auth_namespace *ns, const ns_def *d, json_t *v, char *why, size_t whylen)
{
    void *slot = (char *)ns + d->off;
    switch (d->type) {
    case NS_RULE:
        return ns_set_rule(slot, d, v, why, whylen);
    case NS_BOOL:
        if (!json_is_boolean(v))
            return hr_config_say(why, whylen, "expected true or false");
        *(int *)slot = json_is_true(v);
        return 0;
    case NS_COUNT:
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT_MAX)
            return hr_config_say(why, whylen, "expected a whole number from 0 to %d", INT_MAX);
        *(int *)slot = (int)json_integer_value(v);
        return 0;
    case NS_DJANGO:
        if (json_is_null(v)) {
            hr_config_set_str(slot, NULL);
            return 0;
        }
        if (!json_is_string(v) || !hr_config_django_channel_ok(json_string_value(v)))
            return hr_config_say(
                why, whylen,
                "expected a Django Channels channel name (1 to 99 of A-Z a-z 0-9 _ . -)");
        hr_config_set_str(slot, json_string_value(v));
        return 0;
    }
    return hr_config_say(why, whylen, "internal error: unknown namespace key type");
}

/* Builds one namespace: SPEC defaults for missing keys, then the file's
 * values. On failure ns is left cleared and err names the offending key. */
static int ns_parse(const char *path, const char *name, json_t *obj, auth_namespace *ns, char *err,
                    size_t errlen)
{
    const char *label = *name ? name : "(default)";
    if (!json_is_object(obj))
        return hr_config_say(err, errlen, "config file %s: \"namespaces.%s\": expected an object",
                             path, label);
    auth_namespace_default(ns);
    hr_config_set_str(&ns->name, name);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        const ns_def *d = NULL;
        char why[256];
        for (size_t i = 0; i < NNS_KEYS && !d; i++)
            if (!strcmp(ns_table[i].key, key))
                d = &ns_table[i];
        int rc = d ? ns_apply(ns, d, v, why, sizeof(why)) : -1;
        if (rc < 0) {
            auth_namespace_clear(ns);
            if (!d)
                return hr_config_say(err, errlen,
                                     "config file %s: unknown key \"namespaces.%s.%s\"", path,
                                     label, key);
            return hr_config_say(err, errlen, "config file %s: \"namespaces.%s.%s\": %s", path,
                                 label, key, why);
        }
    }
    return 0;
}

/* Replaces cfg's namespaces with the file's, adding the default namespace
 * when the file does not define "". cfg is unchanged on failure. */
int hr_config_load_namespaces(hr_config *cfg, const char *path, json_t *obj, char *err,
                              size_t errlen)
{
    if (!json_is_object(obj))
        return hr_config_say(err, errlen, "config file %s: \"namespaces\": expected an object",
                             path);
    auth_namespace *arr = hr_calloc(json_object_size(obj) + 1, sizeof(*arr));
    size_t n = 0;
    int has_default = 0;
    const char *name;
    json_t *v;
    json_object_foreach(obj, name, v)
    {
        if (!ns_name_ok(name)) {
            hr_config_free_namespaces(arr, n);
            return hr_config_say(
                err, errlen,
                "config file %s: \"namespaces\": invalid namespace name \"%s\" (letters, "
                "digits and _.@=,- only)",
                path, name);
        }
        if (ns_parse(path, name, v, &arr[n], err, errlen) < 0) {
            hr_config_free_namespaces(arr, n);
            return -EINVAL;
        }
        has_default |= !*name;
        n++;
    }
    if (!has_default)
        auth_namespace_default(&arr[n++]);
    hr_config_free_namespaces(cfg->namespaces, cfg->nnamespaces);
    cfg->namespaces = arr;
    cfg->nnamespaces = n;
    return 0;
}

/*---- Lookup ---------------------------------------------------------------*/

/* Linear scan: a handful of namespaces, looked up once per subscribe or
 * publish. Returns a pointer into cfg (valid until hr_config_clear), or NULL
 * only for a cfg that never had defaults. */
const auth_namespace *hr_config_namespace(const hr_config *cfg, const char *channel)
{
    const char *colon = channel ? strchr(channel, ':') : NULL;
    size_t len = colon ? (size_t)(colon - channel) : 0;
    const auth_namespace *def = NULL;
    for (size_t i = 0; i < cfg->nnamespaces; i++) {
        const char *name = cfg->namespaces[i].name;
        if (!name || !*name)
            def = &cfg->namespaces[i];
        else if (colon && strlen(name) == len && !memcmp(name, channel, len))
            return &cfg->namespaces[i];
    }
    return def;
}
