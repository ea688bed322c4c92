/* Unit tests for mst/duration.h: the duration syntax of config files and
 * profiles, its refusals, overflow, and formatting that parses back. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>

#include "mst/duration.h"
#include "mst/macro.h"

struct parse_case {
  const char *in;
  int ret;
  uint64_t usec;
};

static const struct parse_case parse_cases[] = {
    {"0s", 0, 0},
    {"1us", 0, 1},
    {"200ms", 0, 200000},
    {"5s", 0, 5000000},
    {"15m", 0, 900000000},
    {"2h", 0, 7200000000},
    {"7d", 0, 604800000000},
    {"1m30s", 0, 90000000},
    {"1h 30m", 0, 5400000000},
    {"1s500ms", 0, 1500000},
    {"18446744073709551615us", 0, UINT64_MAX},
    /* refusals */
    {"", -EINVAL, 0},
    {"   ", -EINVAL, 0},
    {"5", -EINVAL, 0},
    {"1m30", -EINVAL, 0},
    {"s", -EINVAL, 0},
    {"5x", -EINVAL, 0},
    {"5 s", -EINVAL, 0},
    {"5sec", -EINVAL, 0},
    {"5S", -EINVAL, 0},
    {"-5s", -EINVAL, 0},
    {"+5s", -EINVAL, 0},
    {"1.5s", -EINVAL, 0},
    {"5s,", -EINVAL, 0},
    /* overflow */
    {"18446744073709551616us", -ERANGE, 0},
    {"18446744073709551615ms", -ERANGE, 0},
    {"213503982d", 0, 213503982ULL * 86400000000ULL},
    {"213503983d", -ERANGE, 0},
    {"18446744073709551615us 1us", -ERANGE, 0},
};

Test(duration, parse) {
  for (size_t i = 0; i < ELEMENTSOF(parse_cases); i++) {
    const struct parse_case *c = &parse_cases[i];
    uint64_t v = 0xdeadbeef;
    int r = mst_duration_parse(c->in, &v);

    cr_assert_eq(r, c->ret, "parse('%s') = %d, want %d", c->in, r, c->ret);
    if (c->ret == 0)
      cr_assert_eq(v, c->usec, "parse('%s') = %llu, want %llu", c->in, (unsigned long long)v,
                   (unsigned long long)c->usec);
    else
      cr_assert_eq(v, 0xdeadbeef, "'%s': output written on failure", c->in);
  }
}

Test(duration, null_is_invalid) {
  uint64_t v;
  cr_assert_eq(mst_duration_parse(NULL, &v), -EINVAL);
}

struct format_case {
  uint64_t usec;
  const char *out;
};

static const struct format_case format_cases[] = {
    {0, "0s"},
    {1, "1us"},
    {1500, "1500us"},
    {1500000, "1500ms"},
    {5000000, "5s"},
    {90000000, "90s"},
    {900000000, "15m"},
    {7200000000, "2h"},
    {604800000000, "7d"},
    {90000000000, "25h"},
};

Test(duration, format) {
  for (size_t i = 0; i < ELEMENTSOF(format_cases); i++) {
    const struct format_case *c = &format_cases[i];
    char buf[32];
    uint64_t back;

    cr_assert_str_eq(mst_duration_format(c->usec, buf, sizeof(buf)), c->out);
    cr_assert_eq(mst_duration_parse(buf, &back), 0);
    cr_assert_eq(back, c->usec, "'%s' does not parse back to %llu", buf,
                 (unsigned long long)c->usec);
  }
}

Test(duration, format_truncates_to_buffer) {
  char buf[3];
  cr_assert_str_eq(mst_duration_format(1500000, buf, sizeof(buf)), "15");
}
