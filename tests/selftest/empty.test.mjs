// A node:test file that registers no test: the CTest properties every
// tests/js and tests/browser file gets must fail it. Registered with
// WILL_FAIL (selftest/empty_js): if this ever passes, a test file that
// runs nothing would pass too.
import "node:test";
