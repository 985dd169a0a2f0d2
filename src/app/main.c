#include <stdio.h>

int main(void) {
  puts("qsens " QSENS_VERSION);
  return 0;
}
