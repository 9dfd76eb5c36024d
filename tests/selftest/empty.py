"""An integration test file without test_* functions: run_tests must fail
it. Registered in CTest with WILL_FAIL (selftest/empty_py): if this ever
passes, a file whose tests ran nothing would pass too."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

from harness import run_tests  # noqa: E402


def helper_that_is_no_test():
    pass


if __name__ == "__main__":
    run_tests(globals())
