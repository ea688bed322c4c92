/* Unit tests for mst/addr.h: the one host:port parser (IPv4, bracketed IPv6,
 * localhost, the listen wildcards), its refusals, formatting that parses
 * back (IPv4-mapped shown as IPv4), and ZooKeeper connect strings rewritten
 * for libzookeeper. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mst/addr.h"
#include "mst/macro.h"

struct parse_case {
  const char *in;
  unsigned flags;
  int ret;
  const char *formatted; /* mst_addr_format() of the result */
};

static const struct parse_case parse_cases[] = {
    {"127.0.0.1:7610", 0, 0, "127.0.0.1:7610"},
    {"localhost:1", 0, 0, "127.0.0.1:1"},
    {"198.18.0.5:65535", 0, 0, "198.18.0.5:65535"},
    {"[::1]:7611", 0, 0, "[::1]:7611"},
    {"[fd00:6d75::1]:7610", 0, 0, "[fd00:6d75::1]:7610"},
    {"[FD00:6D75:0:0::2]:80", 0, 0, "[fd00:6d75::2]:80"},
    {"[::ffff:10.0.0.1]:80", 0, 0, "10.0.0.1:80"},
    {"[::]:7611", MST_ADDR_LISTEN, 0, "[::]:7611"},
    {"[::]:0", MST_ADDR_LISTEN, 0, "[::]:0"},
    {"*:7610", MST_ADDR_LISTEN, 0, "0.0.0.0:7610"},
    {":7610", MST_ADDR_LISTEN, 0, "0.0.0.0:7610"},
    {"0.0.0.0:0", MST_ADDR_LISTEN, 0, "0.0.0.0:0"},
    /* refusals */
    {"", 0, -EINVAL, NULL},
    {"127.0.0.1", 0, -EINVAL, NULL},
    {"127.0.0.1:", 0, -EINVAL, NULL},
    {"127.0.0.1:0", 0, -EINVAL, NULL},
    {"127.0.0.1:65536", 0, -EINVAL, NULL},
    {"127.0.0.1:-1", 0, -EINVAL, NULL},
    {"127.0.0.1:+80", 0, -EINVAL, NULL},
    {"127.0.0.1:80x", 0, -EINVAL, NULL},
    {"127.0.0.1:99999999999999999999", 0, -EINVAL, NULL},
    {"fd00::1:7610", 0, -EINVAL, NULL},
    {"::1:7610", MST_ADDR_LISTEN, -EINVAL, NULL},
    {"[::1]", 0, -EINVAL, NULL},
    {"[::1]7610", 0, -EINVAL, NULL},
    {"[::1:7610", 0, -EINVAL, NULL},
    {"[]:7610", 0, -EINVAL, NULL},
    {"[127.0.0.1]:7610", 0, -EINVAL, NULL},
    {"[fd00::zz]:7610", 0, -EINVAL, NULL},
    {"*:7610", 0, -EINVAL, NULL},
    {":7610", 0, -EINVAL, NULL},
    {"example.com:80", 0, -EINVAL, NULL},
    {"1.2.3:80", 0, -EINVAL, NULL},
    {"["
     "0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000"
     "]:80",
     0, -EINVAL, NULL},
};

Test(addr, parse_table) {
  for (size_t i = 0; i < ELEMENTSOF(parse_cases); i++) {
    const struct parse_case *t = &parse_cases[i];
    struct mst_addr a;
    char err[256] = "", buf[MST_ADDR_STRLEN];
    int r = mst_addr_parse(t->in, t->flags, &a, err, sizeof(err));
    cr_expect_eq(r, t->ret, "'%s': %d, expected %d (%s)", t->in, r, t->ret, err);
    if (r < 0) {
      cr_expect(err[0], "'%s' refused without a reason", t->in);
      continue;
    }
    cr_assert_eq(mst_addr_format((struct sockaddr *)&a.ss, buf, sizeof(buf)), 0);
    cr_expect_str_eq(buf, t->formatted, "'%s' formatted as '%s'", t->in, buf);
    /* What is formatted parses back to the same address. */
    struct mst_addr b;
    cr_expect_eq(mst_addr_parse(buf, t->flags, &b, err, sizeof(err)), 0, "'%s': %s", buf, err);
  }
}

Test(addr, messages_say_why) {
  struct mst_addr a;
  char err[256];
  cr_assert_eq(mst_addr_parse("fd00::1:7610", 0, &a, err, sizeof(err)), -EINVAL);
  cr_expect(strstr(err, "brackets"), "%s", err);
  cr_assert_eq(mst_addr_parse("muster.example:7610", 0, &a, err, sizeof(err)), -EINVAL);
  cr_expect(strstr(err, "not resolved"), "%s", err);
  cr_assert_eq(mst_addr_parse("[::1]:0", 0, &a, err, sizeof(err)), -EINVAL);
  cr_expect(strstr(err, "port"), "%s", err);
}

Test(addr, kinds) {
  static const struct {
    const char *in;
    bool any, loopback;
  } cases[] = {
      {"0.0.0.0:1", true, false},     {"[::]:1", true, false},
      {"127.0.0.1:1", false, true},   {"127.9.8.7:1", false, true},
      {"[::1]:1", false, true},       {"[::ffff:127.0.0.1]:1", false, true},
      {"198.18.0.1:1", false, false}, {"[fd00:6d75::1]:1", false, false},
  };
  for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
    struct mst_addr a;
    char err[256];
    cr_assert_eq(mst_addr_parse(cases[i].in, MST_ADDR_LISTEN, &a, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(mst_addr_is_any((struct sockaddr *)&a.ss), cases[i].any, "%s", cases[i].in);
    cr_expect_eq(mst_addr_is_loopback((struct sockaddr *)&a.ss), cases[i].loopback, "%s",
                 cases[i].in);
    cr_expect_eq(mst_addr_port((struct sockaddr *)&a.ss), 1);
  }
}

Test(addr, format_host_and_small_buffers) {
  struct mst_addr a;
  char err[256], buf[64];
  cr_assert_eq(mst_addr_parse("[fd00:6d75::2]:7610", 0, &a, err, sizeof(err)), 0);
  cr_assert_eq(mst_addr_format_host((struct sockaddr *)&a.ss, buf, sizeof(buf)), 0);
  cr_expect_str_eq(buf, "fd00:6d75::2");
  cr_expect_eq(mst_addr_format((struct sockaddr *)&a.ss, buf, 8), -EINVAL);
  struct sockaddr un = {.sa_family = AF_UNIX};
  cr_expect_eq(mst_addr_format(&un, buf, sizeof(buf)), -EINVAL);
}

/* A listener on [::] takes IPv4 clients too. */
Test(addr, dual_stack_listen) {
  struct mst_addr a, bound;
  char err[256];
  cr_assert_eq(mst_addr_parse("[::]:0", MST_ADDR_LISTEN, &a, err, sizeof(err)), 0);
  int fd = mst_addr_listen(&a, 4);
  if (fd == -EAFNOSUPPORT)
    cr_skip_test("no IPv6 here");
  cr_assert_geq(fd, 0, "%s", strerror(-fd));
  bound.len = sizeof(bound.ss);
  cr_assert_eq(getsockname(fd, (struct sockaddr *)&bound.ss, &bound.len), 0);
  struct sockaddr_in v4 = {.sin_family = AF_INET,
                           .sin_port = htons(mst_addr_port((struct sockaddr *)&bound.ss)),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int c = socket(AF_INET, SOCK_STREAM, 0);
  cr_assert_geq(c, 0);
  cr_expect_eq(connect(c, (struct sockaddr *)&v4, sizeof(v4)), 0, "%s", strerror(errno));
  close(c);
  close(fd);
}

struct zk_case {
  const char *in;
  int ret;
  const char *out;
};

static const struct zk_case zk_cases[] = {
    {"127.0.0.1:2181", 0, "127.0.0.1:2181"},
    {"127.0.0.1:2181,127.0.0.2:2182/muster", 0, "127.0.0.1:2181,127.0.0.2:2182/muster"},
    {"[fd00:6d75::1]:2181,[fd00:6d75::2]:2181", 0, "fd00:6d75::1:2181,fd00:6d75::2:2181"},
    {"[::1]:2181/chroot/x", 0, "::1:2181/chroot/x"},
    {"zk1.example:2181,198.18.0.1:2181", 0, "zk1.example:2181,198.18.0.1:2181"},
    {"localhost:2181", 0, "localhost:2181"},
    /* refusals */
    {"", -EINVAL, NULL},
    {"/chroot", -EINVAL, NULL},
    {"127.0.0.1:2181,", -EINVAL, NULL},
    {",127.0.0.1:2181", -EINVAL, NULL},
    {"127.0.0.1:2181,,127.0.0.2:2181", -EINVAL, NULL},
    {"fd00::1:2181", -EINVAL, NULL},
    {"127.0.0.1", -EINVAL, NULL},
    {"zk1.example:0", -EINVAL, NULL},
    {"zk_1.example:2181", -EINVAL, NULL},
    {"[fd00::1]:2181 ", -EINVAL, NULL},
};

Test(addr, zk_hosts_table) {
  for (size_t i = 0; i < ELEMENTSOF(zk_cases); i++) {
    const struct zk_case *t = &zk_cases[i];
    char err[256] = "", *out = NULL;
    int r = mst_addr_zk_hosts(t->in, &out, err, sizeof(err));
    cr_expect_eq(r, t->ret, "'%s': %d, expected %d (%s)", t->in, r, t->ret, err);
    if (r == 0)
      cr_expect_str_eq(out, t->out, "'%s' became '%s'", t->in, out);
    else
      cr_expect(err[0], "'%s' refused without a reason", t->in);
    free(out);
  }
}
