/* String tables for component states and check kinds. The names are the ones
 * the API, the profiles and the logs use; the numeric values are the wire
 * enums, so a table lookup is the whole conversion. */
#include <string.h>

#include "mst/macro.h"
#include "mst/state.h"

static const char *const state_names[] = {
    [MST_STATE_UNSPECIFIED] = "unspecified", [MST_STATE_STARTING] = "starting",
    [MST_STATE_HEALTHY] = "healthy",         [MST_STATE_WARNING] = "warning",
    [MST_STATE_UNHEALTHY] = "unhealthy",     [MST_STATE_UNKNOWN] = "unknown",
};

static const char *const check_kind_names[] = {
    [MST_CHECK_UNSPECIFIED] = "unspecified",
    [MST_CHECK_SYSTEMD] = "systemd",
    [MST_CHECK_EXEC] = "exec",
    [MST_CHECK_HTTP] = "http",
    [MST_CHECK_TCP] = "tcp",
};

static int table_lookup(const char *const *table, size_t n, const char *s) {
  if (!s)
    return -EINVAL;
  /* Index 0 ("unspecified") is never a valid input. */
  for (size_t i = 1; i < n; i++)
    if (strcmp(table[i], s) == 0)
      return (int)i;
  return -EINVAL;
}

const char *mst_state_to_string(enum mst_state s) {
  if ((unsigned)s >= ELEMENTSOF(state_names))
    return NULL;
  return state_names[s];
}

int mst_state_from_string(const char *s) {
  return table_lookup(state_names, ELEMENTSOF(state_names), s);
}

const char *mst_check_kind_to_string(enum mst_check_kind k) {
  if ((unsigned)k >= ELEMENTSOF(check_kind_names))
    return NULL;
  return check_kind_names[k];
}

int mst_check_kind_from_string(const char *s) {
  return table_lookup(check_kind_names, ELEMENTSOF(check_kind_names), s);
}
