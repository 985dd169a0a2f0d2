/* Allocation that never returns NULL: running out of host memory is not a
 * recoverable condition for a batch tool, so these print one line and exit 1. */
#ifndef QSENS_CORE_MEM_H
#define QSENS_CORE_MEM_H

#include <stddef.h>

void *qs_malloc(size_t n);
void *qs_calloc(size_t count, size_t size);
void *qs_realloc(void *p, size_t n);
char *qs_strdup(const char *s);
char *qs_strndup(const char *s, size_t n);

/* Grows *items (of elem_size bytes each) so that at least `need` fit; *cap is updated. */
void qs_grow(void **items, size_t *cap, size_t need, size_t elem_size);

#endif
