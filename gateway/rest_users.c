/*
 * rest_users.c - the user routes (SPEC §4): registration, the user itself,
 * an admin's reads and deletions, and the OAuth2 token endpoint (password
 * and refresh-token grants, failed logins throttled). The user store
 * answers on a worker thread (auth_service), the loop never waits.
 */
#include "gateway/rest.h"
#include "gateway/api.h"
#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*---- Users -----------------------------------------------------------------*/

/* Maps a store status to an HTTP problem (for non-OK statuses). */
static void user_problem(hr_http_req *req, auth_status st, const char *message)
{
    switch (st) {
    case AUTH_NOT_FOUND:
        hr_http_problem(req, 404, "no such user");
        break;
    case AUTH_TAKEN:
        hr_http_problem(req, 409, "that username is taken");
        break;
    case AUTH_INVALID:
        hr_http_problem(req, 422, message ? message : "invalid user");
        break;
    case AUTH_UNAVAILABLE:
        hr_http_problem(req, 503, message ? message : "the user store is unavailable");
        break;
    default:
        hr_http_problem(req, 500, message ? message : "internal error");
        break;
    }
}

/* Completion of get/register: the user as JSON with `status`. */
static void user_done(void *ud, auth_status st, const auth_user *user, const char *message,
                      int ok_status)
{
    hr_http_req *req = ud;
    if (st == AUTH_OK) {
        json_t *o = auth_user_json(user);
        hr_http_respond_json(req, ok_status, o);
        json_decref(o);
    } else {
        user_problem(req, st, message);
    }
    hr_http_unref(req);
}

static void user_created(void *ud, auth_status st, const auth_user *u, const char *msg)
{
    user_done(ud, st, u, msg, 201);
}

static void user_found(void *ud, auth_status st, const auth_user *u, const char *msg)
{
    user_done(ud, st, u, msg, 200);
}

/* Reads the optional "roles" array into a NULL-terminated borrowed list. */
static int read_roles(json_t *arr, char **roles, size_t max, size_t *n)
{
    *n = 0;
    if (!arr)
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) > max)
        return -1;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *jr = json_array_get(arr, i);
        const char *r = json_string_value(jr);
        if (!r || strlen(r) != json_string_length(jr))
            return -1;
        roles[(*n)++] = (char *)r;
    }
    return 0;
}

void hr_rest_user_create(hr_http_req *req)
{
    char *roles[32];
    size_t nroles;
    if (!req->node->cfg->open_registration && !hr_http_is_admin(req)) {
        hr_http_problem(req, req->cred == -ENOENT ? 401 : 403,
                        "registration is closed: an admin or API key must create users");
        return;
    }
    json_t *o = hr_rest_body(req);
    if (!o)
        return;
    json_t *ju = json_object_get(o, "username"), *jp = json_object_get(o, "password");
    const char *username = json_string_value(ju), *password = json_string_value(jp);
    json_t *jroles = json_object_get(o, "roles");
    if (!username || !password) {
        hr_http_problem(req, 422, "\"username\" and \"password\" must be strings");
    } else if (strlen(username) != json_string_length(ju) ||
               strlen(password) != json_string_length(jp)) {
        hr_http_problem(req, 422, "\"username\" and \"password\" must not contain NUL characters");
    } else if (read_roles(jroles, roles, 32, &nroles) < 0) {
        hr_http_problem(req, 422, "\"roles\" must be an array of at most 32 strings");
    } else if (nroles && !hr_http_is_admin(req)) {
        hr_http_problem(req, 403, "only admins and API keys may set roles");
    } else {
        hr_http_ref(req);
        auth_register(req->node->users, &req->w->auth_to, username, password, roles, nroles,
                      user_created, req);
    }
    json_decref(o);
}

void hr_rest_me(hr_http_req *req)
{
    hr_http_ref(req);
    auth_get_user(req->node->users, &req->w->auth_to, req->id.sub, user_found, req);
}

void hr_rest_user_get(hr_http_req *req)
{
    hr_http_ref(req);
    auth_get_user(req->node->users, &req->w->auth_to, req->params[0], user_found, req);
}

/* Deletion revokes the user's tokens and closes the user's sockets with
 * 4003 on every node (the control channel); the store keeps the
 * revocation for restarts and for nodes that were away. */
static void user_deleted(void *ud, auth_status st, const auth_user *user, const char *message)
{
    hr_http_req *req = ud;
    (void)user;
    if (st == AUTH_OK && req->wsi) {
        hr_api_revoke(req->w, req->params[0], hr_rest_answer, hr_rest_hold(req));
    } else if (st != AUTH_OK) {
        user_problem(req, st, message);
    }
    hr_http_unref(req);
}

void hr_rest_user_delete(hr_http_req *req)
{
    hr_http_ref(req);
    auth_delete_user(req->node->users, &req->w->auth_to, req->params[0], user_deleted, req);
}

/*---- OAuth2 token endpoint (RFC 6749 §4.3, §6) -----------------------------*/

/* RFC 6749 §5.2 error body. */
static void oauth_error(hr_http_req *req, int status, const char *error, const char *desc)
{
    json_t *o = json_pack("{s:s, s:s}", "error", error, "error_description", desc);
    req->no_store = 1;
    hr_http_respond_json(req, status, o);
    json_decref(o);
}

/* Issues the access token for user and answers with both tokens. */
static void token_response(hr_http_req *req, const auth_user *user, const char *refresh)
{
    auth_identity id = {0};
    id.sub = user->id;
    id.name = user->username;
    id.roles = user->roles;
    id.nroles = user->nroles;
    /* info is what presence and a publication's "from" show of a client:
     * the username, so a chat can name who wrote what on the server's word */
    id.info = json_pack("{s:s}", "name", user->username);
    long ttl = req->node->cfg->token_ttl;
    char *access = auth_jwt_issue(&req->node->jwt, &id, time(NULL), ttl);
    json_decref(id.info);
    if (!access) {
        oauth_error(req, 500, "server_error",
                    "cannot sign tokens (RS256/ES256 need HERALD_JWT_PRIVATE_KEY)");
        return;
    }
    json_t *o = json_pack("{s:s, s:s, s:I, s:s}", "access_token", access, "token_type", "bearer",
                          "expires_in", (json_int_t)ttl, "refresh_token", refresh);
    free(access);
    req->no_store = 1;
    hr_http_respond_json(req, 200, o);
    json_decref(o);
}

/* The attempt was counted when it was admitted (login_allowed). A success
 * resets the username and gives the address its attempt back, so both
 * count failures only; an attempt that checked no password (the store was
 * unavailable) is given back on both. */
static void login_done(void *ud, auth_status st, const auth_user *user, const char *refresh,
                       const char *message)
{
    hr_http_req *req = ud;
    int64_t now = (int64_t)hr_now_ms();
    if (st == AUTH_OK) {
        auth_throttle_reset(req->node->logins, req->login_key);
        auth_throttle_release(req->node->login_addrs, req->peer, now);
        token_response(req, user, refresh);
    } else if (st == AUTH_BAD_CREDENTIALS || st == AUTH_NOT_FOUND) {
        oauth_error(req, 400, "invalid_grant", "invalid username or password");
    } else {
        auth_throttle_release(req->node->logins, req->login_key, now);
        auth_throttle_release(req->node->login_addrs, req->peer, now);
        oauth_error(req, 503, "temporarily_unavailable",
                    message ? message : "the user store is unavailable");
    }
    hr_http_unref(req);
}

static void refresh_done(void *ud, auth_status st, const auth_user *user, const char *refresh,
                         const char *message)
{
    hr_http_req *req = ud;
    if (st == AUTH_OK)
        token_response(req, user, refresh);
    else if (st == AUTH_NOT_FOUND || st == AUTH_BAD_CREDENTIALS || st == AUTH_INVALID)
        oauth_error(req, 400, "invalid_grant", "the refresh token is invalid, expired or used");
    else
        oauth_error(req, 503, "temporarily_unavailable",
                    message ? message : "the user store is unavailable");
    hr_http_unref(req);
}

/* Returns 1 when the login may proceed; else answers 429 + Retry-After.
 * The attempt is counted here, when it is admitted, not when Argon2 has
 * finished: otherwise concurrent guesses would all be checked before the
 * first one counted. The address is admitted first, so a locked address
 * does not spend the username's budget. The username budget is keyed like
 * the stores key accounts (auth_username_key), so "Bob" and "bob" share one
 * budget as they share one account; the throttles are shared by every loop. */
static int login_allowed(hr_http_req *req, const char *username)
{
    int64_t now = (int64_t)hr_now_ms();
    char *key = auth_username_key(username);
    snprintf(req->login_key, sizeof(req->login_key), "%.64s", key ? key : username);
    free(key);
    int wait = auth_throttle_admit(req->node->login_addrs, req->peer, now);
    if (!wait && (wait = auth_throttle_admit(req->node->logins, req->login_key, now)))
        auth_throttle_release(req->node->login_addrs, req->peer, now);
    if (!wait)
        return 1;
    req->retry_after = wait;
    oauth_error(req, 429, "too_many_attempts", "too many failed logins; retry later");
    return 0;
}

/* Reads a token-request parameter from the form (or JSON) body, as
 * hr_form_value does: its length, -ENOENT or -EINVAL. */
static int token_param(hr_http_req *req, json_t *json, const char *key, char *out, size_t n)
{
    if (json) {
        const char *v = json_string_value(json_object_get(json, key));
        if (!v)
            return -ENOENT;
        if (strlen(v) >= n)
            return -EINVAL;
        snprintf(out, n, "%s", v);
        return (int)strlen(out);
    }
    return hr_form_value(req->body.data ? req->body.data : "", req->body.len, key, out, n);
}

/* grant_type=password or refresh_token. Form-encoded per RFC 6749; a JSON
 * body is accepted too for clients that cannot send forms. */
void hr_rest_token(hr_http_req *req)
{
    char grant[32], user[256], pass[1100], refresh[128];
    char ctype[64] = "";
    json_t *json = NULL;
    lws_hdr_copy(req->wsi, ctype, sizeof(ctype), WSI_TOKEN_HTTP_CONTENT_TYPE);
    if (!strncmp(ctype, "application/json", 16) &&
        !(json = json_loadb(req->body.data ? req->body.data : "", req->body.len, 0, NULL))) {
        oauth_error(req, 400, "invalid_request", "the body is not valid JSON");
        return;
    }
    if (token_param(req, json, "grant_type", grant, sizeof(grant)) < 0) {
        oauth_error(req, 400, "invalid_request", "grant_type is required");
    } else if (!strcmp(grant, "password")) {
        if (token_param(req, json, "username", user, sizeof(user)) < 0 ||
            token_param(req, json, "password", pass, sizeof(pass)) < 0)
            oauth_error(req, 400, "invalid_request", "username and password are required");
        else if (login_allowed(req, user)) {
            hr_http_ref(req);
            auth_login(req->node->users, &req->w->auth_to, user, pass, req->node->cfg->refresh_ttl,
                       login_done, req);
        }
    } else if (!strcmp(grant, "refresh_token")) {
        if (token_param(req, json, "refresh_token", refresh, sizeof(refresh)) <= 0) {
            oauth_error(req, 400, "invalid_request", "refresh_token is required");
        } else {
            hr_http_ref(req);
            auth_refresh(req->node->users, &req->w->auth_to, refresh, req->node->cfg->refresh_ttl,
                         refresh_done, req);
        }
    } else {
        oauth_error(req, 400, "unsupported_grant_type", "use password or refresh_token");
    }
    json_decref(json);
}
