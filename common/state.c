/* String tables for component states and check kinds. The names are the ones
 * the API, the profiles and the logs use; the numeric values are the wire
 * enums, so a table lookup is the whole conversion. */
#include <errno.h>
#include <string.h>

#include "mst/macro.h"
#include "mst/state.h"
#include "mst/str.h"

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

/* The name at index i, or NULL when there is none. */
static const char *table_name(const char *const *table, size_t n, int i) {
  return i >= 0 && (size_t)i < n ? table[i] : NULL;
}

/* Index 0 ("unspecified") is never a valid input. */
static int table_find(const char *const *table, size_t n, const char *s) {
  int r = mst_str_table_find(table, n, s);
  return r == 0 ? -EINVAL : r;
}

const char *mst_state_to_string(enum mst_state s) {
  return table_name(state_names, ELEMENTSOF(state_names), (int)s);
}

const char *mst_state_name(int s) {
  const char *name = table_name(state_names, ELEMENTSOF(state_names), s);
  return name ? name : state_names[MST_STATE_UNSPECIFIED];
}

int mst_state_from_string(const char *s) {
  return table_find(state_names, ELEMENTSOF(state_names), s);
}

const char *mst_check_kind_to_string(enum mst_check_kind k) {
  return table_name(check_kind_names, ELEMENTSOF(check_kind_names), (int)k);
}

const char *mst_check_kind_name(int k) {
  const char *name = table_name(check_kind_names, ELEMENTSOF(check_kind_names), k);
  return name ? name : check_kind_names[MST_CHECK_UNSPECIFIED];
}

int mst_check_kind_from_string(const char *s) {
  return table_find(check_kind_names, ELEMENTSOF(check_kind_names), s);
}
