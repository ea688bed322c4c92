/* Durations as written in config files and profiles: one or more terms of an
 * unsigned integer and a unit ("500ms", "1m30s"). The unit is mandatory so
 * that "interval = 5" never silently means five microseconds. Formatting
 * picks the largest unit that represents the value exactly, so a formatted
 * duration parses back to the same value. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "mst/duration.h"
#include "mst/macro.h"

struct duration_unit {
  const char *name;
  uint64_t usec;
};

/* Largest first: mst_duration_format() relies on the order. */
static const struct duration_unit duration_units[] = {
    {"d", 24ULL * 3600 * USEC_PER_SEC},
    {"h", 3600ULL * USEC_PER_SEC},
    {"m", 60ULL * USEC_PER_SEC},
    {"s", USEC_PER_SEC},
    {"ms", USEC_PER_MSEC},
    {"us", 1},
};

static bool is_space(char c) {
  return c == ' ' || c == '\t';
}

int mst_duration_parse(const char *s, uint64_t *ret_usec) {
  uint64_t total = 0;
  unsigned terms = 0;
  const char *p = s;

  if (!s)
    return -EINVAL;

  for (;;) {
    while (is_space(*p))
      p++;
    if (*p == '\0')
      break;

    if (*p < '0' || *p > '9')
      return -EINVAL;
    uint64_t n = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
      if (n > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
        return -ERANGE;
      n = n * 10 + (uint64_t)(*p - '0');
    }

    const char *unit = p;
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
      p++;
    size_t unit_len = (size_t)(p - unit);
    if (unit_len == 0)
      return -EINVAL; /* a bare number: the unit is required */

    const struct duration_unit *u = NULL;
    for (size_t i = 0; i < ELEMENTSOF(duration_units); i++)
      if (strlen(duration_units[i].name) == unit_len &&
          memcmp(duration_units[i].name, unit, unit_len) == 0) {
        u = &duration_units[i];
        break;
      }
    if (!u)
      return -EINVAL;

    if (n > UINT64_MAX / u->usec)
      return -ERANGE;
    n *= u->usec;
    if (total > UINT64_MAX - n)
      return -ERANGE;
    total += n;
    terms++;
  }

  if (terms == 0)
    return -EINVAL;
  *ret_usec = total;
  return 0;
}

char *mst_duration_format(uint64_t usec, char *buf, size_t size) {
  if (size == 0)
    return buf;
  if (usec == 0) {
    snprintf(buf, size, "0s");
    return buf;
  }
  for (size_t i = 0; i < ELEMENTSOF(duration_units); i++)
    if (usec % duration_units[i].usec == 0) {
      snprintf(buf, size, "%llu%s", (unsigned long long)(usec / duration_units[i].usec),
               duration_units[i].name);
      break;
    }
  return buf;
}
