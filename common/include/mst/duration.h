/* Durations as written in config files: an unsigned integer followed by a
 * unit, "200ms", "5s", "15m", "2h", "7d", also "us". Several terms may be
 * concatenated ("1m30s"). A bare number is refused: the unit is required. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Parses s into microseconds. Returns 0, -EINVAL on bad syntax or unit, or
 * -ERANGE on overflow. *ret_usec is set only on success. */
int mst_duration_parse(const char *s, uint64_t *ret_usec);

/* Formats usec in the largest exact unit ("1500ms", "5s", "7d"). Returns buf. */
char *mst_duration_format(uint64_t usec, char *buf, size_t size);
