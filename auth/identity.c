/*
 * identity.c - identities (who is connected) and the permission rules of
 * namespaces (see auth.h). No I/O; everything here is plain data handling.
 */
#include "auth/auth.h"
#include "common/common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*---- Identities ------------------------------------------------------------*/

/* Frees a vector of n malloc'ed strings and the vector itself. NULL ok. */
static void ident_strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* Deep-copies n strings into a new malloc'ed vector (NULL when n is 0). */
static char **ident_strv_copy(char *const *src, size_t n)
{
    if (!n)
        return NULL;
    char **v = hr_calloc(n, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        v[i] = hr_strdup(src[i] ? src[i] : "");
    return v;
}

/* hr_strdup that passes NULL through. */
static char *ident_str_copy(const char *src)
{
    return src ? hr_strdup(src) : NULL;
}

/* Releases everything the identity owns and zeroes it, so clearing twice or
 * clearing a zeroed identity is safe. NULL ok. */
void auth_identity_clear(auth_identity *id)
{
    if (!id)
        return;
    free(id->sub);
    free(id->name);
    ident_strv_free(id->roles, id->nroles);
    ident_strv_free(id->channels, id->nchannels);
    json_decref(id->info);
    free(id->jti);
    memset(id, 0, sizeof(*id));
}

/* Deep copy, including a deep copy of info, so the copy can move to another
 * thread without sharing a jansson object. dst must not own anything yet. */
void auth_identity_copy(auth_identity *dst, const auth_identity *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->sub = ident_str_copy(src->sub);
    dst->name = ident_str_copy(src->name);
    dst->jti = ident_str_copy(src->jti);
    dst->roles = ident_strv_copy(src->roles, src->nroles);
    dst->nroles = src->nroles;
    dst->channels = ident_strv_copy(src->channels, src->nchannels);
    dst->nchannels = src->nchannels;
    /* jansson allocates through hr_malloc (hr_alloc_init): it aborts too */
    dst->info = src->info ? json_deep_copy(src->info) : NULL;
    dst->exp = src->exp;
    dst->iat = src->iat;
    dst->anonymous = src->anonymous;
    dst->backend = src->backend;
}

/* 1 when the identity holds `role` (exact, case-sensitive match), else 0. */
int auth_has_role(const auth_identity *id, const char *role)
{
    if (!id || !role)
        return 0;
    for (size_t i = 0; i < id->nroles; i++) {
        if (id->roles[i] && !strcmp(id->roles[i], role))
            return 1;
    }
    return 0;
}

/* 1 for callers that may publish anywhere (SPEC §3): API-key callers and
 * tokens holding role "admin" or "publisher". */
int auth_is_backend(const auth_identity *id)
{
    if (!id)
        return 0;
    return id->backend || auth_has_role(id, "admin") || auth_has_role(id, "publisher");
}

/*---- Namespaces and permissions -------------------------------------------*/

/* On success out->role (for role:<r>) is malloc'ed and owned by the rule; it
 * is released by auth_namespace_clear() or free(). On -EINVAL, out is left
 * as {AUTH_RULE_NONE, NULL}. Matching is exact and case-sensitive. */
int auth_rule_parse(const char *s, auth_rule *out)
{
    static const struct {
        const char *name;
        auth_rule_kind kind;
    } names[] = {
        {"none", AUTH_RULE_NONE},
        {"anonymous", AUTH_RULE_ANONYMOUS},
        {"authenticated", AUTH_RULE_AUTHENTICATED},
        {"subscribers", AUTH_RULE_SUBSCRIBERS},
    };

    out->kind = AUTH_RULE_NONE;
    out->role = NULL;
    if (!s)
        return -EINVAL;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (!strcmp(s, names[i].name)) {
            out->kind = names[i].kind;
            return 0;
        }
    }
    if (strncmp(s, "role:", 5) || !s[5])
        return -EINVAL;
    out->role = hr_strdup(s + 5);
    out->kind = AUTH_RULE_ROLE;
    return 0;
}

/* Frees the name and rule roles the namespace owns and zeroes it. NULL ok. */
void auth_namespace_clear(auth_namespace *ns)
{
    if (!ns)
        return;
    free(ns->name);
    free(ns->subscribe.role);
    free(ns->publish.role);
    free(ns->django_channel);
    memset(ns, 0, sizeof(*ns));
}

void auth_namespace_default(auth_namespace *ns)
{
    memset(ns, 0, sizeof(*ns));
    ns->name = hr_strdup("");
    ns->subscribe.kind = AUTH_RULE_AUTHENTICATED;
    ns->publish.kind = AUTH_RULE_NONE;
}
