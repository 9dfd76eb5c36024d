/*
 * acl.c - channel permission rules (SPEC §3).
 *
 * Every subscribe/publish decision in Herald goes through these functions,
 * so the rules live in one place and are unit tested without sockets.
 */
#include "auth/auth.h"

#include <string.h>

int auth_channel_matches(const char *pattern, const char *channel)
{
    size_t n = strlen(pattern);
    if (n && pattern[n - 1] == '*')
        return strncmp(pattern, channel, n - 1) == 0;
    return strcmp(pattern, channel) == 0;
}

const char *auth_personal_owner(const char *channel)
{
    return strncmp(channel, "user:", 5) == 0 ? channel + 5 : NULL;
}

/* Evaluates a rule that does not depend on channel membership. */
static int rule_allows(const auth_rule *r, const auth_identity *id)
{
    switch (r->kind) {
    case AUTH_RULE_ANONYMOUS:
        return 1;
    case AUTH_RULE_AUTHENTICATED:
        return !id->anonymous && (id->sub != NULL || id->backend);
    case AUTH_RULE_ROLE:
        return r->role && auth_has_role(id, r->role);
    case AUTH_RULE_SUBSCRIBERS:
    case AUTH_RULE_NONE:
        return 0;
    }
    return 0;
}

int auth_can_subscribe(const auth_namespace *ns, const auth_identity *id, const char *channel)
{
    const char *owner = auth_personal_owner(channel);
    if (owner)
        return id->sub && !id->anonymous && strcmp(owner, id->sub) == 0;
    for (size_t i = 0; i < id->nchannels; i++)
        if (auth_channel_matches(id->channels[i], channel))
            return 1;
    return rule_allows(&ns->subscribe, id);
}

int auth_can_publish(const auth_namespace *ns, const auth_identity *id, const char *channel,
                     int subscribed)
{
    if (auth_is_backend(id))
        return 1;
    if (auth_personal_owner(channel))
        return 0; /* personal channels are written by backends only */
    if (ns->publish.kind == AUTH_RULE_SUBSCRIBERS)
        return subscribed;
    return rule_allows(&ns->publish, id);
}
