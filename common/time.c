/* Clocks and RFC 3339 timestamps. muster keeps every time as microseconds:
 * realtime for what is stored and shown, monotonic for timers. Timestamps go
 * out as UTC with milliseconds; incoming ones may carry any offset and any
 * number of fractional digits (kept to the microsecond). */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mst/macro.h"
#include "mst/time.h"

static uint64_t clock_usec(clockid_t id) {
  struct timespec ts;

  if (clock_gettime(id, &ts) < 0)
    return 0;
  return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

uint64_t mst_now_realtime_usec(void) {
  return clock_usec(CLOCK_REALTIME);
}

uint64_t mst_now_monotonic_usec(void) {
  return clock_usec(CLOCK_MONOTONIC);
}

char *mst_time_format_rfc3339(uint64_t realtime_usec, char *buf, size_t size) {
  time_t secs = (time_t)(realtime_usec / USEC_PER_SEC);
  unsigned msec = (unsigned)((realtime_usec % USEC_PER_SEC) / USEC_PER_MSEC);
  struct tm tm;

  if (size == 0)
    return buf;
  if (!gmtime_r(&secs, &tm)) {
    buf[0] = '\0';
    return buf;
  }
  snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, msec);
  return buf;
}

/* Reads exactly n decimal digits. */
static bool parse_digits(const char **p, unsigned n, int *ret) {
  int v = 0;

  for (unsigned i = 0; i < n; i++) {
    char c = (*p)[i];
    if (c < '0' || c > '9')
      return false;
    v = v * 10 + (c - '0');
  }
  *p += n;
  *ret = v;
  return true;
}

static bool expect_char(const char **p, const char *accepted) {
  if (**p == '\0' || !strchr(accepted, **p))
    return false;
  (*p)++;
  return true;
}

static bool is_leap_year(int y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int year, int month) {
  static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (month == 2 && is_leap_year(year))
    return 29;
  return days[month - 1];
}

int mst_time_parse_rfc3339(const char *s, uint64_t *ret_realtime_usec) {
  int year, mon, mday, hour, min, sec;
  uint64_t frac_usec = 0;
  int64_t offset_sec = 0;
  const char *p = s;

  if (!s)
    return -EINVAL;

  if (!parse_digits(&p, 4, &year) || !expect_char(&p, "-") || !parse_digits(&p, 2, &mon) ||
      !expect_char(&p, "-") || !parse_digits(&p, 2, &mday) || !expect_char(&p, "Tt ") ||
      !parse_digits(&p, 2, &hour) || !expect_char(&p, ":") || !parse_digits(&p, 2, &min) ||
      !expect_char(&p, ":") || !parse_digits(&p, 2, &sec))
    return -EINVAL;

  if (mon < 1 || mon > 12 || mday < 1 || mday > days_in_month(year, mon) || hour > 23 || min > 59 ||
      sec > 60)
    return -EINVAL;

  if (*p == '.') {
    unsigned digits = 0;
    uint64_t scale = USEC_PER_SEC / 10;

    p++;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
      /* Digits past the microsecond are accepted and dropped. */
      frac_usec += (uint64_t)(*p - '0') * scale;
      scale /= 10;
    }
    if (digits == 0)
      return -EINVAL;
  }

  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int sign = *p == '-' ? -1 : 1, oh, om;

    p++;
    if (!parse_digits(&p, 2, &oh) || !expect_char(&p, ":") || !parse_digits(&p, 2, &om))
      return -EINVAL;
    if (oh > 23 || om > 59)
      return -EINVAL;
    offset_sec = sign * (oh * 3600 + om * 60);
  } else {
    return -EINVAL;
  }
  if (*p != '\0')
    return -EINVAL;

  struct tm tm = {
      .tm_year = year - 1900,
      .tm_mon = mon - 1,
      .tm_mday = mday,
      .tm_hour = hour,
      .tm_min = min,
      .tm_sec = sec, /* a leap second (60) rolls into the next minute */
  };
  time_t t = timegm(&tm);
  if (t == (time_t)-1)
    return -EINVAL; /* overflow, or one second before the epoch: refused below anyway */

  int64_t utc = (int64_t)t - offset_sec;
  if (utc < 0)
    return -EINVAL; /* before the epoch: not representable */

  *ret_realtime_usec = (uint64_t)utc * USEC_PER_SEC + frac_usec;
  return 0;
}
