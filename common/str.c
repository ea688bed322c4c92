/* The string helpers of mst/str.h. */
#include <errno.h>
#include <stdlib.h>

#include "mst/str.h"

int mst_str_replace(char **field, const char *value) {
  char *copy = NULL;

  if (mst_str_eq(*field, value))
    return 0;
  if (value) {
    copy = strdup(value);
    if (!copy)
      return -ENOMEM;
  }
  free(*field);
  *field = copy;
  return 0;
}

int mst_str_table_find(const char *const *table, size_t n, const char *s) {
  if (!s)
    return -EINVAL;
  for (size_t i = 0; i < n; i++)
    if (table[i] && strcmp(table[i], s) == 0)
      return (int)i;
  return -EINVAL;
}
