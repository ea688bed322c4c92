/* Unit tests for mst/time.h: RFC 3339 formatting (UTC, milliseconds) and
 * parsing with offsets and fractions, plus sanity of the two clocks. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>

#include "mst/macro.h"
#include "mst/time.h"

struct format_case {
  uint64_t usec;
  const char *out;
};

static const struct format_case format_cases[] = {
    {0, "1970-01-01T00:00:00.000Z"},
    {999, "1970-01-01T00:00:00.000Z"}, /* microseconds are cut, not rounded */
    {1000, "1970-01-01T00:00:00.001Z"},
    {1795570630123456ULL, "2026-11-25T01:37:10.123Z"},
    {951782400000000ULL, "2000-02-29T00:00:00.000Z"},
    {4102444799999000ULL, "2099-12-31T23:59:59.999Z"},
};

Test(time, format) {
  for (size_t i = 0; i < ELEMENTSOF(format_cases); i++) {
    const struct format_case *c = &format_cases[i];
    char buf[MST_RFC3339_MAX];
    cr_assert_str_eq(mst_time_format_rfc3339(c->usec, buf, sizeof(buf)), c->out);
  }
}

struct parse_case {
  const char *in;
  int ret;
  uint64_t usec;
};

static const struct parse_case parse_cases[] = {
    {"1970-01-01T00:00:00Z", 0, 0},
    {"2026-11-25T01:37:10Z", 0, 1795570630000000ULL},
    {"2026-11-25T01:37:10.123Z", 0, 1795570630123000ULL},
    {"2026-11-25T01:37:10.123456Z", 0, 1795570630123456ULL},
    {"2026-11-25T01:37:10.1234567Z", 0, 1795570630123456ULL},
    {"2026-11-25T01:37:10.5Z", 0, 1795570630500000ULL},
    {"2026-11-25t01:37:10z", 0, 1795570630000000ULL},
    {"2026-11-25 01:37:10Z", 0, 1795570630000000ULL},
    {"2026-11-25T02:37:10+01:00", 0, 1795570630000000ULL},
    {"2026-11-24T20:07:10-05:30", 0, 1795570630000000ULL},
    {"2026-11-25T01:37:10+00:00", 0, 1795570630000000ULL},
    {"2000-02-29T00:00:00Z", 0, 951782400000000ULL},
    {"1970-01-01T01:00:00+01:00", 0, 0},
    /* refusals */
    {"", -EINVAL, 0},
    {"2026-11-25", -EINVAL, 0},
    {"2026-11-25T01:37:10", -EINVAL, 0},
    {"2026-11-25T01:37Z", -EINVAL, 0},
    {"2026-13-01T00:00:00Z", -EINVAL, 0},
    {"2026-00-01T00:00:00Z", -EINVAL, 0},
    {"2026-02-29T00:00:00Z", -EINVAL, 0},
    {"1900-02-29T00:00:00Z", -EINVAL, 0},
    {"2026-04-31T00:00:00Z", -EINVAL, 0},
    {"2026-11-25T24:00:00Z", -EINVAL, 0},
    {"2026-11-25T23:60:00Z", -EINVAL, 0},
    {"2026-11-25T01:37:10.Z", -EINVAL, 0},
    {"2026-11-25T01:37:10Zjunk", -EINVAL, 0},
    {"2026-11-25T01:37:10+0100", -EINVAL, 0},
    {"2026-11-25T01:37:10+24:00", -EINVAL, 0},
    {"2026-1-25T01:37:10Z", -EINVAL, 0},
    {" 2026-11-25T01:37:10Z", -EINVAL, 0},
    {"1969-12-31T23:59:59Z", -EINVAL, 0},
    {"1970-01-01T00:30:00+01:00", -EINVAL, 0},
};

Test(time, parse) {
  for (size_t i = 0; i < ELEMENTSOF(parse_cases); i++) {
    const struct parse_case *c = &parse_cases[i];
    uint64_t v = 42;
    int r = mst_time_parse_rfc3339(c->in, &v);

    cr_assert_eq(r, c->ret, "parse('%s') = %d, want %d", c->in, r, c->ret);
    if (c->ret == 0)
      cr_assert_eq(v, c->usec, "parse('%s') = %llu, want %llu", c->in, (unsigned long long)v,
                   (unsigned long long)c->usec);
    else
      cr_assert_eq(v, 42, "'%s': output written on failure", c->in);
  }
}

Test(time, round_trip_at_millisecond_precision) {
  char buf[MST_RFC3339_MAX];
  uint64_t now = mst_now_realtime_usec(), back;

  mst_time_format_rfc3339(now, buf, sizeof(buf));
  cr_assert_eq(mst_time_parse_rfc3339(buf, &back), 0, "cannot parse '%s'", buf);
  cr_assert_eq(back, now - now % USEC_PER_MSEC);
}

Test(time, clocks) {
  /* Realtime is after 2020; monotonic does not go back. */
  cr_assert_gt(mst_now_realtime_usec(), 1577836800ULL * USEC_PER_SEC);
  uint64_t a = mst_now_monotonic_usec(), b = mst_now_monotonic_usec();
  cr_assert_gt(a, 0);
  cr_assert_geq(b, a);
}
