/* Clocks and RFC 3339 timestamps. All times inside muster are microseconds:
 * realtime (Unix epoch) for what is stored and shown, monotonic for timers.
 * The API prints UTC with milliseconds: "2026-11-25T01:37:10.123Z". */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define MST_RFC3339_MAX 32

uint64_t mst_now_realtime_usec(void);
uint64_t mst_now_monotonic_usec(void);

/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" into buf (at least MST_RFC3339_MAX).
 * Returns buf. */
char *mst_time_format_rfc3339(uint64_t realtime_usec, char *buf, size_t size);

/* Parses RFC 3339 ("2026-11-25T01:37:10Z", fractional seconds optional, "Z"
 * or "+HH:MM"/"-HH:MM" offset). Returns 0 or -EINVAL. */
int mst_time_parse_rfc3339(const char *s, uint64_t *ret_realtime_usec);
