/* Python-compatible number text. YAML dumps (PyYAML/OmegaConf) and the JSON
 * artifacts (json.dumps) print floats as Python's repr: the shortest digits
 * that round-trip, in exponent form when the exponent is < -4 or >= 16. */
#ifndef QSENS_CORE_PYFMT_H
#define QSENS_CORE_PYFMT_H

#include <stddef.h>

/* repr(float(v)): "0.1", "1e-05", "24903680.0", "1e+16", "inf", "nan", "-0.0".
 * buf must hold at least 32 bytes. Returns buf. */
char *qs_py_float_repr(double v, char *buf, size_t size);

#endif
