/* A unit test whose one case makes no CHECK: RUN must count it as a
 * failure. Registered in CTest with WILL_FAIL (selftest/empty_case_c). */
#include "testing.h"

static void checks_nothing(void) {}

int main(void)
{
    RUN(checks_nothing);
    return TEST_DONE();
}
