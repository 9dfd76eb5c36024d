/* Unit tests for the pure parts of gateway/http.c: form bodies
 * (application/x-www-form-urlencoded, the OAuth2 token endpoint) and
 * status lines' reason phrases. */
#include "gateway/http.h"
#include "testing.h"

#include <errno.h>
#include <string.h>

static void form_values(void)
{
    char out[32];
    const char *b = "grant_type=password&username=b%C3%B6b+x&password=p%26w%3D";
    size_t n = strlen(b);
    CHECK(hr_form_value(b, n, "grant_type", out, sizeof(out)) == 8);
    CHECK_STR(out, "password");
    CHECK(hr_form_value(b, n, "username", out, sizeof(out)) > 0);
    CHECK_STR(out, "b\xc3\xb6"
                   "b x");
    CHECK(hr_form_value(b, n, "password", out, sizeof(out)) == 4);
    CHECK_STR(out, "p&w=");
    CHECK(hr_form_value(b, n, "missing", out, sizeof(out)) == -ENOENT);
    CHECK(hr_form_value(b, n, "user", out, sizeof(out)) == -ENOENT);
    CHECK(hr_form_value("a=%4", 4, "a", out, sizeof(out)) == -EINVAL);
    CHECK(hr_form_value("a=%zz", 5, "a", out, sizeof(out)) == -EINVAL);
    CHECK(hr_form_value("a=%00", 5, "a", out, sizeof(out)) == -EINVAL);
    CHECK(hr_form_value("a=0123456789012345678901234567890123", 36, "a", out, sizeof(out)) ==
          -EINVAL);
    CHECK(hr_form_value("a=", 2, "a", out, sizeof(out)) == 0);
}

static void status_titles(void)
{
    CHECK_STR(hr_http_status_title(404), "Not Found");
    CHECK_STR(hr_http_status_title(422), "Unprocessable Content");
    CHECK_STR(hr_http_status_title(599), "Error");
}

int main(void)
{
    RUN(form_values);
    RUN(status_titles);
    return TEST_DONE();
}
