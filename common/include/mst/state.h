/* Component states and check kinds shared by the agent, the aggregator and
 * the API. The numeric values equal the wire enums in proto/muster.proto. */
#pragma once

#include <stdbool.h>

enum mst_state {
  MST_STATE_UNSPECIFIED = 0,
  MST_STATE_STARTING = 1,
  MST_STATE_HEALTHY = 2,
  MST_STATE_WARNING = 3,
  MST_STATE_UNHEALTHY = 4,
  MST_STATE_UNKNOWN = 5,
};

enum mst_check_kind {
  MST_CHECK_UNSPECIFIED = 0,
  MST_CHECK_SYSTEMD = 1,
  MST_CHECK_EXEC = 2,
  MST_CHECK_HTTP = 3,
  MST_CHECK_TCP = 4,
};

/* One probe result, in the Nagios plugin convention. */
enum mst_result {
  MST_RESULT_OK = 0,
  MST_RESULT_WARNING = 1,
  MST_RESULT_CRITICAL = 2,
  MST_RESULT_UNKNOWN = 3,
};

/* "starting", "healthy", ...; "unspecified" for 0; NULL for out of range. */
const char *mst_state_to_string(enum mst_state s);
/* The same, but never NULL: "unspecified" for anything that is no state,
 * such as an unchecked wire value or a failed mst_state_from_string(). For
 * logs, JSON and journal rows. */
const char *mst_state_name(int s);
/* Returns the state or -EINVAL. */
int mst_state_from_string(const char *s);
const char *mst_check_kind_to_string(enum mst_check_kind k);
/* Never NULL, like mst_state_name(). */
const char *mst_check_kind_name(int k);
int mst_check_kind_from_string(const char *s);
