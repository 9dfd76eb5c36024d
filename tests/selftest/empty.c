/* A unit test that checks nothing: TEST_DONE() must fail it. Registered in
 * CTest with WILL_FAIL (selftest/empty_c): if this ever passes, a unit test
 * that runs nothing would pass too. */
#include "testing.h"

int main(void)
{
    return TEST_DONE();
}
