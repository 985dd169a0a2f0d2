/* Python repr of floats: values checked against CPython's repr(). */
#include "check.h"
#include "core/pyfmt.h"

static void expect(double v, const char *want) {
  char buf[40];
  CHECK_STR(qs_py_float_repr(v, buf, sizeof buf), want);
}

int main(void) {
  expect(0.1, "0.1");
  expect(1e-05, "1e-05");
  expect(1e-3, "0.001");
  expect(0.0001, "0.0001");
  expect(24903680.0, "24903680.0");
  expect(1e16, "1e+16");
  expect(1e15, "1000000000000000.0");
  expect(6.414685052025249e-07, "6.414685052025249e-07");
  expect(0.00011332546546327649, "0.00011332546546327649");
  expect(63.30435574054718, "63.30435574054718");
  expect(-0.5, "-0.5");
  expect(0.7000000000000001, "0.7000000000000001");
  expect(-0.0, "-0.0");
  expect(1.0 / 0.0, "inf");
  expect(-1.0 / 0.0, "-inf");
  expect(1.5e300, "1.5e+300");
  expect(123456789012345678.0, "1.2345678901234568e+17");
  expect(5e-324, "5e-324");
  return check_summary("test_pyfmt");
}
