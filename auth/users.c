/*
 * users.c - the user record, its validation rules and password hashing
 * (see auth.h, "Users, stores and the worker service").
 *
 * Everything here is pure except auth_password_hash (reads randomness).
 * Argon2id is deliberately slow, so the hash and verify calls belong on the
 * service's worker threads, never on the event loop.
 */
#include "auth/auth.h"
#include "common/common.h"

#include <argon2.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

/*---- The user record -------------------------------------------------------*/

/* Frees everything the user owns and zeroes it, so clearing twice is safe. */
void auth_user_clear(auth_user *u)
{
    if (!u)
        return;
    free(u->id);
    free(u->username);
    for (size_t i = 0; u->roles && i < u->nroles; i++)
        free(u->roles[i]);
    free(u->roles);
    free(u->password_hash);
    memset(u, 0, sizeof(*u));
}

/* Builds the public view. json_object_set_new steals its value even when it
 * fails, so a NULL from any json_* constructor only needs the final check.
 * Returns NULL on allocation failure or if a stored string is not UTF-8. */
json_t *auth_user_json(const auth_user *u)
{
    json_t *o = json_object(), *roles = json_array();
    int rc = o && roles ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < u->nroles; i++)
        rc = json_array_append_new(roles, json_string(u->roles[i]));
    if (rc == 0 && o) {
        rc |= json_object_set_new(o, "id", json_string(u->id ? u->id : ""));
        rc |= json_object_set_new(o, "username", json_string(u->username ? u->username : ""));
        rc |= json_object_set_new(o, "roles", roles);
        roles = NULL;
        rc |= json_object_set_new(o, "created_at", json_integer(u->created_at));
    }
    json_decref(roles);
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/*---- Validation ------------------------------------------------------------*/

#define PASSWORD_MIN 8
#define PASSWORD_MAX 1024
#define ROLE_MAX 64

/* ASCII-only case folding, independent of the process locale. */
static int ascii_lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static int ascii_caseeq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (ascii_lower((unsigned char)*a) != ascii_lower((unsigned char)*b))
            return 0;
    return *a == *b;
}

/* The most common passwords of at least PASSWORD_MIN bytes (shorter ones
 * are refused by length anyway), from public breach-corpus top lists.
 * Compared case-insensitively, so "PassWord" is refused too. */
static const char *const common_passwords[] = {
    "password",      "password1",  "password12", "password123", "passw0rd",  "p@ssw0rd",
    "12345678",      "123456789",  "1234567890", "0123456789",  "87654321",  "11111111",
    "00000000",      "88888888",   "12341234",   "11223344",    "12344321",  "123123123",
    "qwertyuiop",    "qwerty123",  "qwertyui",   "1q2w3e4r",    "1qaz2wsx",  "zaq12wsx",
    "qazwsxedc",     "q1w2e3r4",   "1234qwer",   "asdfghjkl",   "abc12345",  "abcd1234",
    "letmein1",      "letmein123", "iloveyou",   "iloveyou1",   "sunshine",  "princess",
    "football",      "baseball",   "welcome1",   "welcome123",  "trustno1",  "superman",
    "starwars",      "whatever",   "computer",   "michelle",    "jennifer",  "admin123",
    "administrator", "changeme",   "aaaaaaaa",   "monkey123",   "dragon123", "master123",
    "secret123",     "football1",  "charlie1",
};

static int is_common_password(const char *password)
{
    for (size_t i = 0; i < sizeof(common_passwords) / sizeof(common_passwords[0]); i++)
        if (ascii_caseeq(password, common_passwords[i]))
            return 1;
    return 0;
}

/* Does the password spell the username, as the stores compare names? */
static int same_name(const char *password, const char *username)
{
    char *a = auth_username_key(password), *b = auth_username_key(username);
    int same = a && b && !strcmp(a, b);
    free(a);
    free(b);
    return same;
}

/* Length is counted in bytes: the upper bound only keeps a request from
 * feeding megabytes into Argon2id. */
const char *auth_password_weak(const char *password, const char *username)
{
    size_t n = password ? strlen(password) : 0;
    if (n < PASSWORD_MIN)
        return "password must be at least 8 bytes";
    if (n > PASSWORD_MAX)
        return "password must be at most 1024 bytes";
    if (username && (ascii_caseeq(password, username) || same_name(password, username)))
        return "password must not be the username";
    if (is_common_password(password))
        return "password is too common";
    return NULL;
}

const char *auth_role_invalid(const char *role)
{
    size_t n = role ? strlen(role) : 0;
    if (n == 0 || n > ROLE_MAX)
        return "role must be 1-64 bytes";
    if (strspn(role, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-") != n)
        return "role may contain only letters, digits and _ . : -";
    return NULL;
}

/*---- Store helpers ---------------------------------------------------------*/

char *auth_roles_encode(char *const *roles, size_t nroles)
{
    json_t *arr = json_array();
    int rc = arr ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < nroles; i++)
        rc = json_array_append_new(arr, json_string(roles[i]));
    char *text = rc == 0 ? json_dumps(arr, JSON_COMPACT) : NULL;
    json_decref(arr);
    return text;
}

int auth_roles_decode(const char *text, auth_user *u)
{
    json_t *arr = text ? json_loads(text, 0, NULL) : NULL;
    size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
    int rc = json_is_array(arr) ? 0 : -1;
    char **v = n ? hr_calloc(n, sizeof(char *)) : NULL;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        if (!s)
            rc = -1;
        else
            v[i] = hr_strdup(s);
    }
    json_decref(arr);
    if (rc < 0) {
        for (size_t i = 0; v && i < n; i++)
            free(v[i]);
        free(v);
        return -1;
    }
    u->roles = v;
    u->nroles = n;
    return 0;
}

/*---- Password hashing ------------------------------------------------------*/

/* OWASP's Argon2id recommendation: 19 MiB, 2 passes, 1 lane. */
#define ARGON_T 2
#define ARGON_M 19456
#define ARGON_P 1
#define ARGON_SALT 16
#define ARGON_HASH 32

char *auth_password_hash(const char *password)
{
    unsigned char salt[ARGON_SALT];
    size_t len = argon2_encodedlen(ARGON_T, ARGON_M, ARGON_P, ARGON_SALT, ARGON_HASH, Argon2_id);
    if (!password)
        return NULL;
    char *enc = hr_malloc(len);
    if (RAND_bytes(salt, sizeof(salt)) != 1 ||
        argon2id_hash_encoded(ARGON_T, ARGON_M, ARGON_P, password, strlen(password), salt,
                              sizeof(salt), ARGON_HASH, enc, len) != ARGON2_OK) {
        free(enc);
        return NULL;
    }
    return enc;
}

/* The parameters come from the encoded string, so hashes made with older
 * settings keep verifying after the constants above change. */
int auth_password_verify(const char *encoded, const char *password)
{
    if (!encoded || !password)
        return 0;
    return argon2id_verify(encoded, password, strlen(password)) == ARGON2_OK;
}
