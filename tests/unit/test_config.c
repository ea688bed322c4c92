/* Unit tests for mst/config.h: the line-tracking INI layer (section
 * announcements, line numbers, syntax errors, comments, quoting), the
 * table-driven loader (defaults, every error path, bounds, all errors of a
 * file collected with their lines), and the section and list splitters. */
#include <criterion/criterion.h>
#include <stddef.h>
#include <string.h>

#include "mst/config.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "unit-helpers.h"

static char *tmpdir;

static void setup(void) {
  tmpdir = unit_tmpdir();
}

static void teardown(void) {
  unit_rmtree(tmpdir);
}

TestSuite(config, .init = setup, .fini = teardown);

/* --- the table-driven loader ------------------------------------------------ */

struct test_config {
  char *name;
  char *listen;
  uint64_t count;
  uint64_t heartbeat;
  uint64_t max_frame;
  uint64_t anything;
  bool tls;
  int level;
};

#define MS  1000ULL
#define SEC 1000000ULL

static const struct mst_conf_key table[] = {
    {"agent", "name", MST_CONF_STRING, offsetof(struct test_config, name), 0, 0, NULL, NULL},
    {"agent", "listen", MST_CONF_STRING, offsetof(struct test_config, listen), 0, 0, "0.0.0.0:7610",
     NULL},
    {"agent", "count", MST_CONF_UINT, offsetof(struct test_config, count), 1, 10, "5", NULL},
    {"agent", "heartbeat", MST_CONF_DURATION, offsetof(struct test_config, heartbeat), 100 * MS,
     3600 * SEC, "5s", NULL},
    {"agent", "max_frame", MST_CONF_SIZE, offsetof(struct test_config, max_frame), 1024, 16 << 20,
     "1MiB", NULL},
    {"agent", "anything", MST_CONF_UINT, offsetof(struct test_config, anything), 0, 0, NULL, NULL},
    {"agent", "tls", MST_CONF_BOOL, offsetof(struct test_config, tls), 0, 0, "no", NULL},
    {"log", "level", MST_CONF_LOGLEVEL, offsetof(struct test_config, level), 0, 0, "info", NULL},
};

struct loaded {
  struct test_config cfg;
  struct mst_diag diag;
  int ret;
};

static void load(struct loaded *l, const char *content) {
  _cleanup_free_ char *path = content ? unit_write_file(tmpdir, "test.conf", content) : NULL;

  memset(l, 0, sizeof(*l));
  l->ret = mst_conf_load(path, table, ELEMENTSOF(table), &l->cfg, &l->diag);
}

static void unload(struct loaded *l) {
  mst_conf_free(table, ELEMENTSOF(table), &l->cfg);
  cr_assert_null(l->cfg.name);
  cr_assert_null(l->cfg.listen);
  mst_diag_done(&l->diag);
}

static void assert_diag_has(const struct loaded *l, const char *needle) {
  if (!mst_diag_contains(&l->diag, needle)) {
    for (size_t i = 0; i < l->diag.n; i++)
      cr_log_error("diag: %s", l->diag.lines[i]);
    cr_assert_fail("no diagnostic contains \"%s\"", needle);
  }
}

Test(config, defaults_without_a_file) {
  struct loaded l;

  load(&l, NULL);
  cr_assert_eq(l.ret, 0);
  cr_assert_eq(l.diag.n, 0);
  cr_assert_null(l.cfg.name, "no default leaves it zero");
  cr_assert_str_eq(l.cfg.listen, "0.0.0.0:7610");
  cr_assert_eq(l.cfg.count, 5);
  cr_assert_eq(l.cfg.heartbeat, 5 * SEC);
  cr_assert_eq(l.cfg.max_frame, 1 << 20);
  cr_assert_eq(l.cfg.tls, false);
  cr_assert_eq(l.cfg.level, MST_LOG_INFO);
  unload(&l);
}

Test(config, a_valid_file) {
  struct loaded l;

  load(&l, "; muster agent\n"
           "# another comment style\n"
           "  # an indented comment = not a key\n"
           "\t; and another\n"
           "\n"
           "[agent]\n"
           "name = \"node one\"\n"
           "listen=127.0.0.1:9000   ; trailing comment\n"
           "  count = 10\n"
           "heartbeat = 1m30s\n"
           "max_frame = 512KiB\n"
           "tls: yes\n"
           "anything = 18446744073709551615\n"
           "[log]\n"
           "level = debug\n");
  cr_assert_eq(l.ret, 0);
  cr_assert_eq(l.diag.n, 0, "unexpected: %s", l.diag.n ? l.diag.lines[0] : "");
  cr_assert_str_eq(l.cfg.name, "node one", "quotes are removed");
  cr_assert_str_eq(l.cfg.listen, "127.0.0.1:9000", "the inline comment is cut");
  cr_assert_eq(l.cfg.count, 10);
  cr_assert_eq(l.cfg.heartbeat, 90 * SEC);
  cr_assert_eq(l.cfg.max_frame, 512 * 1024);
  cr_assert_eq(l.cfg.tls, true);
  cr_assert_eq(l.cfg.anything, UINT64_MAX, "0,0 bounds mean unbounded");
  cr_assert_eq(l.cfg.level, MST_LOG_DEBUG);
  unload(&l);
}

Test(config, quoting_and_comments) {
  struct loaded l;

  load(&l, "[agent]\n"
           "name = \"a ; b\" ; the ';' inside quotes stays\n"
           "listen = x;y\n");
  cr_assert_eq(l.ret, 0);
  cr_assert_str_eq(l.cfg.name, "a ; b");
  cr_assert_str_eq(l.cfg.listen, "x;y", "';' not after whitespace is not a comment");
  unload(&l);

  load(&l, "[agent]\n"
           "name = \"say \\\"hi\\\"\"\n"
           "listen = \"/opt/check\" --fast \"x\"\n");
  cr_assert_eq(l.ret, 0);
  cr_assert_str_eq(l.cfg.name, "say \"hi\"", "escaped quotes");
  cr_assert_str_eq(l.cfg.listen, "\"/opt/check\" --fast \"x\"",
                   "several quoted parts are kept as written");
  unload(&l);

  load(&l, "[agent]\nname = \"\"\n");
  cr_assert_eq(l.ret, 0);
  cr_assert_str_eq(l.cfg.name, "");
  unload(&l);
}

Test(config, crlf_and_bom) {
  struct loaded l;

  load(&l, "\xef\xbb\xbf[agent]\r\ncount = 7\r\n[log]\r\nlevel = err\r\n");
  cr_assert_eq(l.ret, 0, "%s", l.diag.n ? l.diag.lines[0] : "");
  cr_assert_eq(l.cfg.count, 7);
  cr_assert_eq(l.cfg.level, MST_LOG_ERR);
  unload(&l);
}

struct error_case {
  const char *content;
  const char *diag; /* the full expected line, after "<path>:" */
};

static const struct error_case error_cases[] = {
    {"[agent]\n[nope]\ncount = 3\n", "2: unknown section [nope]"},
    {"[agent]\ncolour = blue\n", "2: unknown key 'colour' in section [agent]"},
    {"[agent]\ncount = 3\ncount = 4\n",
     "3: duplicate key 'count' in section [agent] (first set on line 2)"},
    {"[agent]\ncount = 3\n[log]\nlevel = info\n[agent]\ncount = 4\n",
     "6: duplicate key 'count' in section [agent] (first set on line 2)"},
    {"count = 3\n[agent]\n", "1: key 'count' is outside of any section"},
    {"[agent]\nheartbeat = abc\n",
     "2: [agent] heartbeat: invalid duration 'abc' (write e.g. 500ms, 5s, 15m, 2h, 7d)"},
    {"[agent]\nheartbeat = 5\n",
     "2: [agent] heartbeat: invalid duration '5' (write e.g. 500ms, 5s, 15m, 2h, 7d)"},
    {"[agent]\nheartbeat = 2h\n",
     "2: [agent] heartbeat: '2h' is out of range: must be between 100ms and 1h"},
    {"[agent]\nheartbeat = 99ms\n",
     "2: [agent] heartbeat: '99ms' is out of range: must be between 100ms and 1h"},
    {"[agent]\nheartbeat = 99999999999999999999d\n",
     "2: [agent] heartbeat: duration '99999999999999999999d' is too large"},
    {"[agent]\ncount = ten\n", "2: [agent] count: invalid number 'ten'"},
    {"[agent]\ncount = -1\n", "2: [agent] count: invalid number '-1'"},
    {"[agent]\ncount = 5x\n", "2: [agent] count: invalid number '5x'"},
    {"[agent]\ncount = 11\n", "2: [agent] count: '11' is out of range: must be between 1 and 10"},
    {"[agent]\ncount = 0\n", "2: [agent] count: '0' is out of range: must be between 1 and 10"},
    {"[agent]\ncount = 99999999999999999999\n",
     "2: [agent] count: number '99999999999999999999' is too large"},
    {"[agent]\nmax_frame = 1TiB\n",
     "2: [agent] max_frame: invalid size '1TiB' (bytes, or with K, KiB, M, MiB, G, GiB)"},
    {"[agent]\nmax_frame = 32MiB\n",
     "2: [agent] max_frame: '32MiB' is out of range: must be between 1KiB and 16MiB"},
    {"[agent]\nmax_frame = 1023\n",
     "2: [agent] max_frame: '1023' is out of range: must be between 1KiB and 16MiB"},
    {"[agent]\ntls = maybe\n",
     "2: [agent] tls: invalid boolean 'maybe' (yes/no, true/false, on/off, 1/0)"},
    {"[log]\nlevel = loud\n",
     "2: [log] level: invalid log level 'loud' (err, warning, notice, info, debug)"},
    {"[agent]\njust some words\n",
     "2: syntax error: 'just some words' is not a [section], a key = value or a comment"},
    {"[agent\ncount = 3\n", "1: syntax error: section header '[agent' does not end with ']'"},
    {"[agent]\n[log\ncount = 3\n[agent]\ncount = 4\n",
     "2: syntax error: section header '[log' does not end with ']'"},
    {"[]\n", "1: syntax error: bad section header '[]'"},
    {"[agent]\n= 3\n", "2: syntax error: missing key name in '= 3'"},
};

Test(config, each_error) {
  for (size_t i = 0; i < ELEMENTSOF(error_cases); i++) {
    const struct error_case *c = &error_cases[i];
    _cleanup_free_ char *want = NULL;
    struct loaded l;

    load(&l, c->content);
    cr_assert_geq(asprintf(&want, "%s/test.conf:%s", tmpdir, c->diag), 0);
    cr_assert_eq(l.ret, -EINVAL, "case %zu: ret %d", i, l.ret);
    cr_assert_eq(l.diag.n, 1, "case %zu (%s): %zu diagnostics, first: %s", i, c->diag, l.diag.n,
                 l.diag.n ? l.diag.lines[0] : "none");
    cr_assert_str_eq(l.diag.lines[0], want, "case %zu", i);
    unload(&l);
  }
}

Test(config, bad_value_keeps_the_default) {
  struct loaded l;

  load(&l, "[agent]\ncount = 99\nheartbeat = soon\nlisten = 1.2.3.4:5\n");
  cr_assert_eq(l.ret, -EINVAL);
  cr_assert_eq(l.cfg.count, 5);
  cr_assert_eq(l.cfg.heartbeat, 5 * SEC);
  cr_assert_str_eq(l.cfg.listen, "1.2.3.4:5", "good keys are still applied");
  assert_diag_has(&l, "test.conf:2: [agent] count: '99' is out of range");
  assert_diag_has(&l, "test.conf:3: [agent] heartbeat: invalid duration 'soon'");
  unload(&l);
}

Test(config, every_error_of_a_file_with_its_line) {
  struct loaded l;
  static const char *const want[] = {
      "2: [agent] count: '0' is out of range: must be between 1 and 10",
      "3: syntax error: 'garbage line' is not a [section], a key = value or a comment",
      "4: unknown key 'colour' in section [agent]",
      "6: [agent] heartbeat: invalid duration 'abc' (write e.g. 500ms, 5s, 15m, 2h, 7d)",
      "7: duplicate key 'count' in section [agent] (first set on line 2)",
      "8: unknown section [zookeeper]",
      "11: [log] level: invalid log level 'chatty' (err, warning, notice, info, debug)",
      "12: syntax error: section header '[broken' does not end with ']'",
  };

  load(&l, "[agent]\n"         /* 1 */
           "count = 0\n"       /* 2 */
           "garbage line\n"    /* 3 */
           "colour = blue\n"   /* 4 */
           "; fine\n"          /* 5 */
           "heartbeat = abc\n" /* 6 */
           "count = 3\n"       /* 7 */
           "[zookeeper]\n"     /* 8 */
           "hosts = zk:2181\n" /* 9: inside an unknown section, not reported again */
           "[log]\n"           /* 10 */
           "level = chatty\n"  /* 11 */
           "[broken\n"         /* 12 */
           "tls = yes\n");     /* 13: under the broken header: skipped */
  cr_assert_eq(l.ret, -EINVAL);
  cr_assert_eq(l.diag.n, ELEMENTSOF(want), "got %zu diagnostics", l.diag.n);
  for (size_t i = 0; i < ELEMENTSOF(want); i++) {
    _cleanup_free_ char *line = NULL;
    cr_assert_geq(asprintf(&line, "%s/test.conf:%s", tmpdir, want[i]), 0);
    cr_assert_str_eq(l.diag.lines[i], line);
  }
  cr_assert_eq(l.cfg.tls, false, "a key under a broken header is not applied");
  unload(&l);
}

Test(config, missing_file) {
  struct mst_diag diag = {0};
  struct test_config cfg = {0};
  _cleanup_free_ char *path = NULL;

  cr_assert_geq(asprintf(&path, "%s/nope.conf", tmpdir), 0);
  cr_assert_eq(mst_conf_load(path, table, ELEMENTSOF(table), &cfg, &diag), -ENOENT);
  cr_assert_eq(diag.n, 1);
  cr_assert(mst_diag_contains(&diag, "nope.conf: cannot open: No such file or directory"));
  cr_assert_str_eq(cfg.listen, "0.0.0.0:7610", "defaults are applied even so");
  mst_conf_free(table, ELEMENTSOF(table), &cfg);
  mst_diag_done(&diag);
}

Test(config, bad_default_is_reported) {
  static const struct mst_conf_key bad[] = {
      {"x", "d", MST_CONF_DURATION, offsetof(struct test_config, heartbeat), 0, 0, "5", NULL},
  };
  struct mst_diag diag = {0};
  struct test_config cfg = {0};

  cr_assert_eq(mst_conf_load(NULL, bad, ELEMENTSOF(bad), &cfg, &diag), -EINVAL);
  cr_assert(mst_diag_contains(&diag, "built-in default of [x] d: invalid duration '5'"));
  mst_diag_done(&diag);
}

struct value_case {
  enum mst_conf_type type;
  const char *in;
  int ret;
  uint64_t want;
};

static const struct value_case value_cases[] = {
    {MST_CONF_SIZE, "0", 0, 0},
    {MST_CONF_SIZE, "1048576", 0, 1048576},
    {MST_CONF_SIZE, "1K", 0, 1024},
    {MST_CONF_SIZE, "512KiB", 0, 512 * 1024},
    {MST_CONF_SIZE, "3M", 0, 3 << 20},
    {MST_CONF_SIZE, "1MiB", 0, 1 << 20},
    {MST_CONF_SIZE, "2G", 0, 2ULL << 30},
    {MST_CONF_SIZE, "1GiB", 0, 1ULL << 30},
    {MST_CONF_SIZE, "1 MiB", 0, 1 << 20},
    {MST_CONF_SIZE, "1KB", -EINVAL, 0},
    {MST_CONF_SIZE, "1k", -EINVAL, 0},
    {MST_CONF_SIZE, "MiB", -EINVAL, 0},
    {MST_CONF_SIZE, "1.5MiB", -EINVAL, 0},
    {MST_CONF_SIZE, "", -EINVAL, 0},
    {MST_CONF_SIZE, "17179869184GiB", -EINVAL, 0},
    {MST_CONF_BOOL, "yes", 0, 1},
    {MST_CONF_BOOL, "no", 0, 0},
    {MST_CONF_BOOL, "true", 0, 1},
    {MST_CONF_BOOL, "false", 0, 0},
    {MST_CONF_BOOL, "on", 0, 1},
    {MST_CONF_BOOL, "off", 0, 0},
    {MST_CONF_BOOL, "1", 0, 1},
    {MST_CONF_BOOL, "0", 0, 0},
    {MST_CONF_BOOL, "YES", 0, 1},
    {MST_CONF_BOOL, "2", -EINVAL, 0},
    {MST_CONF_BOOL, "", -EINVAL, 0},
    {MST_CONF_UINT, "0", 0, 0},
    {MST_CONF_UINT, "007", 0, 7},
    {MST_CONF_UINT, "18446744073709551615", 0, UINT64_MAX},
    {MST_CONF_UINT, "18446744073709551616", -EINVAL, 0},
    {MST_CONF_UINT, " 5", -EINVAL, 0},
    {MST_CONF_UINT, "0x10", -EINVAL, 0},
    {MST_CONF_DURATION, "250ms", 0, 250000},
    {MST_CONF_DURATION, "0s", 0, 0},
    {MST_CONF_LOGLEVEL, "err", 0, MST_LOG_ERR},
    {MST_CONF_LOGLEVEL, "warning", 0, MST_LOG_WARNING},
    {MST_CONF_LOGLEVEL, "notice", 0, MST_LOG_NOTICE},
    {MST_CONF_LOGLEVEL, "debug", 0, MST_LOG_DEBUG},
    {MST_CONF_LOGLEVEL, "error", -EINVAL, 0},
};

Test(config, parse_value) {
  for (size_t i = 0; i < ELEMENTSOF(value_cases); i++) {
    const struct value_case *c = &value_cases[i];
    struct {
      uint64_t u;
      bool b;
      int level;
    } target = {.u = 4242, .b = true, .level = -1};
    struct mst_conf_key k = {.section = "s", .name = "k", .type = c->type};
    char err[256] = "";

    k.offset = c->type == MST_CONF_BOOL       ? offsetof(__typeof__(target), b)
               : c->type == MST_CONF_LOGLEVEL ? offsetof(__typeof__(target), level)
                                              : offsetof(__typeof__(target), u);
    int r = mst_conf_parse_value(&k, c->in, &target, err, sizeof(err));
    cr_assert_eq(r, c->ret, "case %zu '%s': ret %d", i, c->in, r);
    if (r < 0) {
      cr_assert_neq(err[0], '\0', "case %zu: an error message", i);
      cr_assert(target.u == 4242 && target.b && target.level == -1, "case %zu: no write", i);
      continue;
    }
    uint64_t got = c->type == MST_CONF_BOOL       ? (uint64_t)target.b
                   : c->type == MST_CONF_LOGLEVEL ? (uint64_t)target.level
                                                  : target.u;
    cr_assert_eq(got, c->want, "case %zu '%s': got %llu", i, c->in, (unsigned long long)got);
  }
}

/* An ENUM key takes one of its names, in any case, as that name's index;
 * anything else is refused with the names listed, and nothing is written. */
Test(config, enum_values) {
  static const char *const names[] = {"full", "normal", NULL};
  static const struct {
    const char *in;
    int ret, want;
  } cases[] = {
      {"full", 0, 0},       {"normal", 0, 1},          {"NORMAL", 0, 1},
      {"", -EINVAL, 0},     {"sometimes", -EINVAL, 0}, {"full ", -EINVAL, 0},
      {"norm", -EINVAL, 0},
  };
  for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
    int target = 42;
    struct mst_conf_key k = {.section = "s", .name = "k", .type = MST_CONF_ENUM, .names = names};
    char err[256] = "";
    int r = mst_conf_parse_value(&k, cases[i].in, &target, err, sizeof(err));
    cr_assert_eq(r, cases[i].ret, "case '%s': ret %d", cases[i].in, r);
    if (r < 0) {
      cr_assert(strstr(err, "(full, normal)"), "case '%s': names listed: %s", cases[i].in, err);
      cr_assert_eq(target, 42, "case '%s': no write", cases[i].in);
    } else {
      cr_assert_eq(target, cases[i].want, "case '%s': got %d", cases[i].in, target);
    }
  }
}

Test(config, strings_are_replaced_not_leaked) {
  struct test_config cfg = {0};
  struct mst_conf_key k = table[1];
  char err[64];

  cr_assert_eq(mst_conf_parse_value(&k, "first", &cfg, err, sizeof(err)), 0);
  cr_assert_eq(mst_conf_parse_value(&k, "second", &cfg, err, sizeof(err)), 0);
  cr_assert_str_eq(cfg.listen, "second");
  mst_conf_free(table, ELEMENTSOF(table), &cfg);
  cr_assert_null(cfg.listen);
}

/* --- the INI layer ------------------------------------------------------------- */

struct ini_call {
  char section[128];
  char name[32];
  char value[64];
  bool header;
  unsigned line;
};

struct recorder {
  struct ini_call calls[32];
  size_t n;
  const char *fail_on; /* key whose handler call fails */
  struct mst_diag *diag;
};

static int record(void *user, const char *section, const char *name, const char *value,
                  unsigned line) {
  struct recorder *rec = user;
  cr_assert_lt(rec->n, ELEMENTSOF(rec->calls));
  struct ini_call *c = &rec->calls[rec->n++];

  snprintf(c->section, sizeof(c->section), "%s", section);
  c->header = !name;
  cr_assert_eq(!name, !value, "name and value are both set or both NULL");
  snprintf(c->name, sizeof(c->name), "%s", name ? name : "");
  snprintf(c->value, sizeof(c->value), "%s", value ? value : "");
  c->line = line;
  if (name && rec->fail_on && strcmp(name, rec->fail_on) == 0) {
    mst_diag_add(rec->diag, "handler", line, "refused %s", name);
    return -EINVAL;
  }
  return 0;
}

Test(config, ini_calls_with_lines) {
  _cleanup_free_ char *path =
      unit_write_file(tmpdir, "x.ini",
                      "top = 1\n"
                      "\n"
                      "[component \"a-very-long-component-name-that-is-longer-than-fifty-chars\"]\n"
                      "check = systemd ; comment\n"
                      "; comment\n"
                      "   [stage \"boot\"]   \n"
                      "after:  x y \n");
  struct mst_diag diag = {0};
  struct recorder rec = {.diag = &diag};
  static const struct ini_call want[] = {
      {"", "top", "1", false, 1},
      {"component \"a-very-long-component-name-that-is-longer-than-fifty-chars\"", "", "", true, 3},
      {"component \"a-very-long-component-name-that-is-longer-than-fifty-chars\"", "check",
       "systemd", false, 4},
      {"stage \"boot\"", "", "", true, 6},
      {"stage \"boot\"", "after", "x y", false, 7},
  };

  cr_assert_eq(mst_ini_parse(path, record, &rec, &diag), 0);
  cr_assert_eq(diag.n, 0);
  cr_assert_eq(rec.n, ELEMENTSOF(want));
  for (size_t i = 0; i < ELEMENTSOF(want); i++) {
    cr_assert_str_eq(rec.calls[i].section, want[i].section, "call %zu", i);
    cr_assert_str_eq(rec.calls[i].name, want[i].name, "call %zu", i);
    cr_assert_str_eq(rec.calls[i].value, want[i].value, "call %zu", i);
    cr_assert_eq(rec.calls[i].header, want[i].header, "call %zu", i);
    cr_assert_eq(rec.calls[i].line, want[i].line, "call %zu", i);
  }
  mst_diag_done(&diag);
}

Test(config, ini_handler_errors_and_syntax_errors) {
  _cleanup_free_ char *path = unit_write_file(tmpdir, "x.ini",
                                              "[a]\n"
                                              "k1 = v\n"
                                              "oops\n"
                                              "k2 = v\n"
                                              "k3 = v\n");
  struct mst_diag diag = {0};
  struct recorder rec = {.diag = &diag, .fail_on = "k2"};

  cr_assert_eq(mst_ini_parse(path, record, &rec, &diag), -EINVAL);
  cr_assert_eq(rec.n, 4, "parsing continues after both errors");
  cr_assert_str_eq(rec.calls[3].name, "k3");
  cr_assert_eq(rec.calls[3].line, 5);
  cr_assert_eq(diag.n, 2);
  cr_assert(mst_diag_contains(&diag, "x.ini:3: syntax error: 'oops'"));
  cr_assert_str_eq(diag.lines[1], "handler:4: refused k2");
  mst_diag_done(&diag);
}

Test(config, ini_long_lines) {
  char *content = malloc(10000);
  cr_assert_not_null(content);
  strcpy(content, "[a]\nok = ");
  size_t n = strlen(content);
  memset(content + n, 'v', 4000);
  strcpy(content + n + 4000, "\nbad = ");
  n = strlen(content);
  memset(content + n, 'w', 5000);
  strcpy(content + n + 5000, "\nafter = 1\n");
  _cleanup_free_ char *path = unit_write_file(tmpdir, "long.ini", content);
  free(content);
  struct mst_diag diag = {0};
  struct recorder rec = {.diag = &diag};

  cr_assert_eq(mst_ini_parse(path, record, &rec, &diag), -EINVAL);
  cr_assert_eq(diag.n, 1);
  cr_assert(mst_diag_contains(&diag, "long.ini:3: line too long (over 4096 bytes)"), "%s",
            diag.lines[0]);
  cr_assert_eq(rec.n, 3, "header, ok, after");
  cr_assert_str_eq(rec.calls[1].name, "ok");
  cr_assert_eq(strlen(rec.calls[1].value), sizeof(rec.calls[1].value) - 1, "recorded, cut");
  cr_assert_str_eq(rec.calls[2].name, "after");
  cr_assert_eq(rec.calls[2].line, 4);
  mst_diag_done(&diag);
}

/* A line far over the cap (but in a file under it) is refused at its line
 * and parsing goes on after it; a file over the cap is refused as a whole,
 * before reading when fstat sizes it and while reading when it cannot
 * (/dev/zero reports size 0). */
Test(config, ini_caps_on_line_and_file) {
  size_t big = 2 * 1024 * 1024;
  char *content = malloc(big + 64);
  cr_assert_not_null(content);
  strcpy(content, "[a]\nbad = ");
  size_t n = strlen(content);
  memset(content + n, 'w', big);
  strcpy(content + n + big, "\nafter = 1\n");
  _cleanup_free_ char *path = unit_write_file(tmpdir, "long.ini", content);
  struct mst_diag diag = {0};
  struct recorder rec = {.diag = &diag};

  cr_assert_eq(mst_ini_parse(path, record, &rec, &diag), -EINVAL);
  cr_assert_eq(diag.n, 1);
  cr_assert(mst_diag_contains(&diag, "long.ini:2: line too long (over 4096 bytes)"), "%s",
            diag.lines[0]);
  cr_assert_eq(rec.n, 2, "header, after");
  cr_assert_str_eq(rec.calls[1].name, "after");
  cr_assert_eq(rec.calls[1].line, 3);
  mst_diag_done(&diag);

  /* A '\r' early in the line does not hide its length. */
  content[n] = '\r';
  _cleanup_free_ char *cr = unit_write_file(tmpdir, "cr.ini", content);
  rec.n = 0;
  cr_assert_eq(mst_ini_parse(cr, record, &rec, &diag), -EINVAL);
  cr_assert(mst_diag_contains(&diag, "cr.ini:2: line too long (over 4096 bytes)"), "%s",
            diag.lines[0]);
  cr_assert_eq(rec.n, 2, "header, after");
  mst_diag_done(&diag);

  /* Over MST_INI_FILE_MAX: nothing is passed on. */
  content = realloc(content, MST_INI_FILE_MAX + 64);
  cr_assert_not_null(content);
  for (size_t i = 0; i < MST_INI_FILE_MAX + 32; i += 8)
    memcpy(content + i, "k = 12\n\n", 8);
  content[MST_INI_FILE_MAX + 32] = '\0';
  _cleanup_free_ char *large = unit_write_file(tmpdir, "large.ini", content);
  free(content);
  rec.n = 0;
  cr_assert_eq(mst_ini_parse(large, record, &rec, &diag), -EFBIG);
  cr_assert_eq(rec.n, 0, "refused before reading");
  cr_assert_eq(diag.n, 1);
  cr_assert(mst_diag_contains(&diag, "large.ini: file is larger than 4194304 bytes"), "%s",
            diag.lines[0]);
  mst_diag_done(&diag);

  cr_assert_eq(mst_ini_parse("/dev/zero", record, &rec, &diag), -EFBIG);
  cr_assert_eq(rec.n, 0);
  cr_assert(mst_diag_contains(&diag, "/dev/zero: file is larger than 4194304 bytes"), "%s",
            diag.lines[0]);
  mst_diag_done(&diag);
}

Test(config, ini_missing_file) {
  struct mst_diag diag = {0};
  struct recorder rec = {.diag = &diag};
  _cleanup_free_ char *path = NULL;

  cr_assert_geq(asprintf(&path, "%s/none.ini", tmpdir), 0);
  cr_assert_eq(mst_ini_parse(path, record, &rec, &diag), -ENOENT);
  cr_assert_eq(rec.n, 0);
  cr_assert_eq(diag.n, 1);
  mst_diag_done(&diag);
}

struct split_case {
  const char *in;
  int ret;
  const char *kind, *name;
};

static const struct split_case split_cases[] = {
    {"agent", 0, "agent", NULL},
    {"component \"mesos-agent\"", 1, "component", "mesos-agent"},
    {"component    \"with space\"  ", 1, "component", "with space"},
    {"stage\"x\"", 1, "stage", "x"},
    {"component \"\"", -EINVAL, NULL, NULL},
    {"component \"open", -EINVAL, NULL, NULL},
    {"component \"a\" extra", -EINVAL, NULL, NULL},
    {"component \"a\"\"b\"", -EINVAL, NULL, NULL},
    {"component name", -EINVAL, NULL, NULL},
    {"\"name\"", -EINVAL, NULL, NULL},
    {"", -EINVAL, NULL, NULL},
};

Test(config, section_split) {
  for (size_t i = 0; i < ELEMENTSOF(split_cases); i++) {
    const struct split_case *c = &split_cases[i];
    char *kind = (char *)"unset", *name = (char *)"unset";
    int r = mst_ini_section_split(c->in, &kind, &name);

    cr_assert_eq(r, c->ret, "'%s': %d", c->in, r);
    if (r < 0) {
      cr_assert_str_eq(kind, "unset", "'%s': nothing set on failure", c->in);
      continue;
    }
    cr_assert_str_eq(kind, c->kind);
    if (c->name)
      cr_assert_str_eq(name, c->name);
    else
      cr_assert_null(name);
    free(kind);
    free(name);
  }
}

struct strv_case {
  const char *in;
  const char *want[4];
};

static const struct strv_case strv_cases[] = {
    {"a b c", {"a", "b", "c", NULL}},
    {"a,b,c", {"a", "b", "c", NULL}},
    {" a ,\tb,, c ", {"a", "b", "c", NULL}},
    {"one", {"one", NULL}},
    {"", {NULL}},
    {" , ,", {NULL}},
    {NULL, {NULL}},
};

Test(config, strv_split) {
  for (size_t i = 0; i < ELEMENTSOF(strv_cases); i++) {
    const struct strv_case *c = &strv_cases[i];
    char **v = NULL;
    size_t n = 0;

    while (c->want[n])
      n++;
    cr_assert_eq(mst_strv_split(c->in, &v), (int)n, "'%s'", c->in ? c->in : "(null)");
    cr_assert_not_null(v, "an empty list is an empty array, not NULL");
    cr_assert_eq(mst_strv_length(v), n);
    for (size_t k = 0; k < n; k++)
      cr_assert_str_eq(v[k], c->want[k]);
    cr_assert_null(v[n]);
    mst_strv_free(v);
  }
  cr_assert_eq(mst_strv_length(NULL), 0);
  mst_strv_free(NULL);
}

Test(config, diag_lines) {
  struct mst_diag d = {0};

  mst_diag_add(&d, "f.ini", 3, "bad %s", "thing");
  mst_diag_add(&d, "f.ini", 0, "cannot open");
  cr_assert_eq(d.n, 2);
  cr_assert_str_eq(d.lines[0], "f.ini:3: bad thing");
  cr_assert_str_eq(d.lines[1], "f.ini: cannot open");
  cr_assert(mst_diag_contains(&d, "bad thing"));
  cr_assert_not(mst_diag_contains(&d, "good thing"));
  mst_diag_done(&d);
  cr_assert_eq(d.n, 0);
  cr_assert_null(d.lines);
  mst_diag_done(&d);
}
