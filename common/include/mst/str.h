/* Small string helpers that every part of muster needs the same way: a
 * NULL-aware comparison, replacing an owned string field, and finding a
 * name in a table of names (the string tables of states, verdicts and
 * config keys). Pure functions: any thread, on the caller's data. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* True when a and b are both NULL or are equal strings. */
static inline bool mst_str_eq(const char *a, const char *b) {
  if (!a || !b)
    return a == b;
  return strcmp(a, b) == 0;
}

/* Makes the malloc'd string *field a copy of value (NULL: no string), and
 * frees what it held; when it already holds an equal string, nothing is
 * copied. Returns 0, or -ENOMEM with *field unchanged. */
int mst_str_replace(char **field, const char *value);

/* The index of s among the n names of table (NULL entries are skipped), or
 * -EINVAL when s is NULL or not there. */
int mst_str_table_find(const char *const *table, size_t n, const char *s);
