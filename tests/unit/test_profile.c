/* Unit tests for mst/profile.h: a complete profile with its defaults, every
 * validation error at its line, the digest, and loading a directory of
 * profiles (order, duplicate roles, cross-role requirements and the
 * dependency cycles they can make). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "mst/config.h"
#include "mst/frame.h"
#include "mst/macro.h"
#include "mst/profile.h"
#include "unit-helpers.h"

static char *tmpdir;

static void setup(void) {
  tmpdir = unit_tmpdir();
}

static void teardown(void) {
  unit_rmtree(tmpdir);
}

TestSuite(profile, .init = setup, .fini = teardown);

/* The SPEC's example profile. */
static const char spec_agent[] =
    "[profile]\n"
    "role = agent\n"
    "startup_grace = 15m\n"
    "\n"
    "[component \"mesos-agent\"]\n"
    "check = systemd                 ; systemd | exec | http | tcp\n"
    "unit = dcos-mesos-slave.service\n"
    "[component \"agent-http\"]\n"
    "check = http\n"
    "url = http://127.0.0.1:5051/health\n"
    "expect_status = 200\n"
    "interval = 5s\n"
    "timeout = 2s\n"
    "rise = 2\n"
    "fall = 3\n"
    "[component \"fw\"]\n"
    "check = exec\n"
    "command = /usr/lib/nagios/plugins/check_tcp -H 127.0.0.1 -p 5051\n"
    "[component \"dns\"]\n"
    "check = tcp\n"
    "address = 127.0.0.1:53\n"
    "\n"
    "[stage \"diagnostics\"]\n"
    "components = fw\n"
    "[stage \"mesos-agent\"]\n"
    "components = mesos-agent agent-http\n"
    "after = diagnostics\n"
    "requires = master:mesos-master\n";

/* sha256sum of spec_agent */
static const char spec_agent_sha256[] =
    "ed86fe83d3b269664163f2d1effc2993dcdab97407d73c7f9c4cfa31cb1f5f93";

static void strv_assert(char **v, const char *const *want, size_t n) {
  cr_assert_not_null(v);
  cr_assert_eq(mst_strv_length(v), n);
  for (size_t i = 0; i < n; i++)
    cr_assert_str_eq(v[i], want[i]);
}

Test(profile, spec_example) {
  _cleanup_free_ char *path = unit_write_file(tmpdir, "whatever.ini", spec_agent);
  struct mst_profile *p = NULL;
  struct mst_diag diag = {0};

  cr_assert_eq(mst_profile_load(path, &p, &diag), 0, "%s", diag.n ? diag.lines[0] : "");
  cr_assert_eq(diag.n, 0);
  cr_assert_str_eq(p->path, path);
  cr_assert_str_eq(p->role, "agent", "[profile] role beats the file name");
  cr_assert_eq(p->startup_grace_usec, 15ULL * 60 * USEC_PER_SEC);
  cr_assert_str_eq(p->digest, spec_agent_sha256);

  cr_assert_eq(p->n_components, 4);
  const struct mst_component *c = mst_profile_find_component(p, "mesos-agent");
  cr_assert_not_null(c);
  cr_assert_eq(c->check, MST_CHECK_SYSTEMD);
  cr_assert_str_eq(c->unit, "dcos-mesos-slave.service");
  cr_assert_eq(c->line, 5);
  cr_assert_eq(c->interval_usec, MST_PROFILE_DEFAULT_INTERVAL_USEC);
  cr_assert_eq(c->timeout_usec, MST_PROFILE_DEFAULT_TIMEOUT_USEC);
  cr_assert_eq(c->rise, 2);
  cr_assert_eq(c->fall, 3);

  c = mst_profile_find_component(p, "agent-http");
  cr_assert_eq(c->check, MST_CHECK_HTTP);
  cr_assert_str_eq(c->url, "http://127.0.0.1:5051/health");
  cr_assert_eq(c->expect_status, 200);
  cr_assert_null(c->expect_body);
  cr_assert_eq(c->interval_usec, 5 * USEC_PER_SEC);
  cr_assert_eq(c->timeout_usec, 2 * USEC_PER_SEC);

  c = mst_profile_find_component(p, "fw");
  cr_assert_eq(c->check, MST_CHECK_EXEC);
  cr_assert_str_eq(c->command, "/usr/lib/nagios/plugins/check_tcp -H 127.0.0.1 -p 5051");

  c = mst_profile_find_component(p, "dns");
  cr_assert_eq(c->check, MST_CHECK_TCP);
  cr_assert_str_eq(c->address, "127.0.0.1:53");
  cr_assert_null(mst_profile_find_component(p, "nope"));

  cr_assert_eq(p->n_stages, 2);
  const struct mst_stage *s = &p->stages[0];
  cr_assert_str_eq(s->name, "diagnostics");
  cr_assert_eq(s->line, 23);
  strv_assert(s->components, (const char *[]){"fw"}, 1);
  strv_assert(s->milestones, NULL, 0);
  strv_assert(s->after, NULL, 0);
  strv_assert(s->requires, NULL, 0);
  s = &p->stages[1];
  cr_assert_str_eq(s->name, "mesos-agent");
  strv_assert(s->components, (const char *[]){"mesos-agent", "agent-http"}, 2);
  strv_assert(s->after, (const char *[]){"diagnostics"}, 1);
  strv_assert(s->requires, (const char *[]){"master:mesos-master"}, 1);

  mst_profile_free(p);
  mst_diag_done(&diag);
}

Test(profile, defaults_and_after_default) {
  _cleanup_free_ char *path = unit_write_file(tmpdir, "agent_public.ini",
                                              "[component \"a\"]\n"
                                              "check = http\n"
                                              "url = https://localhost/x\n"
                                              "expect_body = \"ok ; really\"\n"
                                              "[component \"b\"]\n"
                                              "check = exec\n"
                                              "command = true\n"
                                              "rise = 1\n"
                                              "fall = 100\n"
                                              "[stage \"one\"]\n"
                                              "components = a\n"
                                              "[stage \"two\"]\n"
                                              "milestones = b\n"
                                              "[stage \"three\"]\n"
                                              "components = a, b\n"
                                              "requires = master:x@quorum, agent:y@all\n"
                                              "[stage \"four\"]\n"
                                              "after = one, two\n"
                                              "[stage \"five\"]\n"
                                              "after =\n");
  struct mst_profile *p = NULL;
  struct mst_diag diag = {0};

  cr_assert_eq(mst_profile_load(path, &p, &diag), 0, "%s", diag.n ? diag.lines[0] : "");
  cr_assert_str_eq(p->role, "agent_public", "the role defaults to the file name");
  cr_assert_eq(p->startup_grace_usec, MST_PROFILE_DEFAULT_GRACE_USEC);
  cr_assert_eq(p->restart_window_usec, MST_PROFILE_DEFAULT_RESTART_WINDOW_USEC);
  cr_assert_eq(p->components[0].expect_status, 200);
  cr_assert_str_eq(p->components[0].expect_body, "ok ; really");
  cr_assert_eq(p->components[1].rise, 1);
  cr_assert_eq(p->components[1].fall, 100);

  cr_assert_eq(p->n_stages, 5);
  strv_assert(p->stages[0].after, NULL, 0);
  strv_assert(p->stages[1].after, (const char *[]){"one"}, 1);
  strv_assert(p->stages[1].milestones, (const char *[]){"b"}, 1);
  strv_assert(p->stages[2].after, (const char *[]){"two"}, 1);
  strv_assert(p->stages[2].requires, (const char *[]){"master:x@quorum", "agent:y@all"}, 2);
  strv_assert(p->stages[3].after, (const char *[]){"one", "two"}, 2);
  strv_assert(p->stages[4].after, NULL, 0);
  mst_profile_free(p);
  mst_diag_done(&diag);
}

struct error_case {
  const char *content;
  const char *diag; /* expected line after "<path>:" */
};

#define SYSD "check = systemd\nunit = x.service\n"

/* Names at the aggregator's cap (MST_COMPONENT_NAME_MAX, 256 bytes). */
#define X16  "xxxxxxxxxxxxxxxx"
#define X256 X16 X16 X16 X16 X16 X16 X16 X16 X16 X16 X16 X16 X16 X16 X16 X16
/* Ten times e-acute: 20 bytes. */
#define E10 "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"

static const struct error_case error_cases[] = {
    {"[component \"" X256 "\"]\n" SYSD, NULL},
    {"[component \"" X256 "x\"]\n" SYSD,
     "1: component name '" X16 X16 "xxxxxxxx...' is longer than 256 bytes"},
    /* The quote is cut on a character boundary: 39 bytes, not 40. */
    {"[component \"x" E10 E10 E10 E10 E10 E10 E10 E10 E10 E10 E10 E10 E10 "\"]\n" SYSD,
     "1: component name "
     "'x\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9" E10
     "...' is longer than 256 bytes"},
    {"[component \"caf\xc3\xa9\"]\n" SYSD, NULL},
    {"[component \"caf\xc3\"]\n" SYSD, "1: invalid component name: not UTF-8"},
    {"[stage \"\xed\xa0\x80\"]\n", "1: invalid stage name: not UTF-8"},
    {"[profile]\nrole = r\xff\n", "2: [profile] role: invalid role 'r\xff'"},
    {"[profile]\nrole = " X16 X16 X16 X16 X16 X16 X16 X16 "x\n",
     "2: [profile] role: longer than 128 bytes"},
    {"[profile]\n[nodes]\n", "2: unknown section [nodes]"},
    {"[component]\n", "1: section [component] needs a name: [component \"NAME\"]"},
    {"[component \"a b\"]\n" SYSD,
     "1: invalid component name 'a b' (no spaces, commas, quotes, ':' or '@')"},
    {"[component open\n",
     "1: syntax error: section header '[component open' does not end with ']'"},
    {"[component \"a\" x]\n",
     "1: bad section header [component \"a\" x] (write [component \"NAME\"])"},
    {"[profile]\ncolour = red\n", "2: unknown key 'colour' in section [profile]"},
    {"[component \"a\"]\n" SYSD "colour = red\n",
     "4: unknown key 'colour' in section [component \"a\"]"},
    {"[stage \"s\"]\ncolour = red\n", "2: unknown key 'colour' in section [stage \"s\"]"},
    {"role = x\n", "1: key 'role' is outside of any section"},
    {"[component \"a\"]\nunit = x.service\n",
     "1: component 'a': missing 'check' (systemd, exec, http or tcp)"},
    {"[component \"a\"]\ncheck = ping\n",
     "2: component 'a': check: unknown check 'ping' (systemd, exec, http or tcp)"},
    {"\n[component \"a\"]\ncheck = systemd\n", "2: component 'a': check = systemd needs 'unit'"},
    {"[component \"a\"]\ncheck = exec\n", "1: component 'a': check = exec needs 'command'"},
    {"[component \"a\"]\ncheck = http\n", "1: component 'a': check = http needs 'url'"},
    {"[component \"a\"]\ncheck = tcp\n", "1: component 'a': check = tcp needs 'address'"},
    {"[component \"a\"]\n" SYSD "url = http://x/\n",
     "4: component 'a': 'url' does not apply to check = systemd"},
    {"[component \"a\"]\n" SYSD "expect_status = 204\n",
     "4: component 'a': 'expect_status' does not apply to check = systemd"},
    {"[component \"a\"]\n" SYSD "check = exec\n",
     "4: duplicate key 'check' in section [component \"a\"] (first set on line 2)"},
    {"[component \"a\"]\n" SYSD "[component \"a\"]\n" SYSD,
     "4: duplicate component 'a' (first declared on line 1)"},
    {"[stage \"s\"]\n[stage \"s\"]\n", "2: duplicate stage 's' (first declared on line 1)"},
    {"[component \"a\"]\n" SYSD "interval = 50ms\n",
     "4: component 'a': interval: '50ms' is out of range: must be between 100ms and 1d"},
    {"[component \"a\"]\n" SYSD "interval = 2d\n",
     "4: component 'a': interval: '2d' is out of range: must be between 100ms and 1d"},
    {"[component \"a\"]\n" SYSD "interval = 10\n",
     "4: component 'a': interval: invalid duration '10' (write e.g. 500ms, 5s, 15m)"},
    {"[component \"a\"]\n" SYSD "timeout = 5ms\n",
     "4: component 'a': timeout: '5ms' is out of range: must be between 10ms and 1h"},
    {"[component \"a\"]\n" SYSD "rise = 0\n",
     "4: component 'a': rise: '0' is out of range: must be between 1 and 100"},
    {"[component \"a\"]\n" SYSD "fall = 101\n",
     "4: component 'a': fall: '101' is out of range: must be between 1 and 100"},
    {"[component \"a\"]\n" SYSD "fall = 99999999999999999999999\n",
     "4: component 'a': fall: '99999999999999999999999' is out of range: must be between 1 and "
     "100"},
    {"[component \"a\"]\n" SYSD "rise = two\n", "4: component 'a': rise: invalid number 'two'"},
    {"[component \"a\"]\ncheck = http\nurl = http://x/\nexpect_status = 600\n",
     "4: component 'a': expect_status: '600' is out of range: must be between 100 and 599"},
    {"[component \"a\"]\ncheck = http\nurl = ftp://x/\n",
     "3: component 'a': url: 'ftp://x/' is not an http:// or https:// URL"},
    {"[component \"a\"]\ncheck = tcp\naddress = localhost\n",
     "3: component 'a': address: 'localhost' is not host:port"},
    {"[component \"a\"]\ncheck = tcp\naddress = localhost:0\n",
     "3: component 'a': address port: '0' is out of range: must be between 1 and 65535"},
    {"[profile]\nstartup_grace = forever\n",
     "2: [profile] startup_grace: invalid duration 'forever' (write e.g. 500ms, 5s, 15m)"},
    {"[profile]\nrestart_window = 2h\n",
     "2: [profile] restart_window: '2h' is out of range: must be between 100ms and 1h"},
    {"[profile]\nrestart_window = 5s\nrestart_window = 6s\n",
     "3: duplicate key 'restart_window' in section [profile] (first set on line 2)"},
    {"[profile]\nrole = a b\n", "2: [profile] role: invalid role 'a b'"},
    {"[profile]\nrole = a\nrole = b\n",
     "3: duplicate key 'role' in section [profile] (first set on line 2)"},
    {"[stage \"s\"]\ncomponents = ghost\n", "2: stage 's': unknown component 'ghost'"},
    {"[stage \"s\"]\nmilestones = ghost\n", "2: stage 's': unknown component 'ghost'"},
    {"[stage \"s\"]\nafter = nowhere\n", "2: stage 's': 'after' names unknown stage 'nowhere'"},
    {"[stage \"s\"]\nrequires = master\n",
     "2: stage 's': bad requires 'master' (write ROLE:STAGE, ROLE:STAGE@quorum or "
     "ROLE:STAGE@all)"},
    {"[stage \"s\"]\nrequires = master:x@most\n",
     "2: stage 's': bad requires 'master:x@most' (write ROLE:STAGE, ROLE:STAGE@quorum or "
     "ROLE:STAGE@all)"},
    {"[stage \"s\"]\nrequires = :x\n",
     "2: stage 's': bad requires ':x' (write ROLE:STAGE, ROLE:STAGE@quorum or ROLE:STAGE@all)"},
    {"[stage \"s\"]\nrequires = master:\n",
     "2: stage 's': bad requires 'master:' (write ROLE:STAGE, ROLE:STAGE@quorum or "
     "ROLE:STAGE@all)"},
    {"[stage \"s\"]\nafter = s\n", "2: stage 's': dependency cycle s -> s"},
    {"[stage \"x\"]\nafter = y\n[stage \"y\"]\n", "2: stage 'x': dependency cycle x -> y -> x"},
    {"[stage \"a\"]\n[stage \"b\"]\n[stage \"c\"]\n[stage \"a2\"]\nafter = c\n[stage \"d\"]\n"
     "[stage \"z\"]\n",
     NULL},
    /* What DC/OS shows of a unit: capped, UTF-8, printable. */
    {"[component \"c\"]\n" SYSD "description = distributed systems kernel\nname = Mesos "
     "Master\n",
     NULL},
    {"[component \"c\"]\n" SYSD "description = caf\xc3\xa9 \xc3\n",
     "4: component 'c': description: not UTF-8"},
    {"[component \"c\"]\n" SYSD "name = " X16 X16 X16 X16 X16 X16 X16 X16 "x\n",
     "4: component 'c': name: must be 1 to 128 bytes (is 129)"},
    {"[component \"c\"]\n" SYSD "description = " X256 X256 "x\n",
     "4: component 'c': description: must be 1 to 512 bytes (is 513)"},
    {"[component \"c\"]\n" SYSD "name = a\tb\n",
     "4: component 'c': name: contains a control character"},
    {"[component \"c\"]\n" SYSD "name = a\nname = b\n",
     "5: duplicate key 'name' in section [component \"c\"] (first set on line 4)"},
    /* The leader component: a component of the file, in no stage. */
    {"[profile]\nleader_component = lead\n[component \"lead\"]\n" SYSD, NULL},
    {"[profile]\nleader_component = nope\n[component \"lead\"]\n" SYSD,
     "2: [profile] leader_component: unknown component 'nope'"},
    {"[profile]\nleader_component = lead\n[component \"lead\"]\n" SYSD
     "[stage \"s\"]\nmilestones = lead\n",
     "2: [profile] leader_component: 'lead' is in stage 's' (line 6): the leader component "
     "counts for neither health nor progress, so it is in no stage"},
};

/* A profile of n components c0, c1, ... (three lines each: the section, its
 * check and unit): component k is declared on line 3k + 1. */
static char *profile_of(size_t n) {
  char *text = NULL;
  size_t size = 0;
  FILE *f = open_memstream(&text, &size);
  cr_assert_not_null(f);
  for (size_t k = 0; k < n; k++)
    fprintf(f, "[component \"c%zu\"]\n" SYSD, k);
  cr_assert_eq(fclose(f), 0);
  return text;
}

/* As many components as an aggregator takes of a node by default, and not
 * one more: the one over is named at its line, once. */
Test(profile, components_capped) {
  for (size_t n = MST_COMPONENTS_PER_NODE_MAX; n <= MST_COMPONENTS_PER_NODE_MAX + 50; n += 50) {
    _cleanup_free_ char *content = profile_of(n);
    _cleanup_free_ char *path = unit_write_file(tmpdir, "master.ini", content);
    _cleanup_free_ char *want = NULL;
    struct mst_profile *p = NULL;
    struct mst_diag diag = {0};
    int r = mst_profile_load(path, &p, &diag);
    if (n == MST_COMPONENTS_PER_NODE_MAX) {
      cr_assert_eq(r, 0, "%s", diag.n ? diag.lines[0] : "");
      cr_assert_eq(p->n_components, n);
      mst_profile_free(p);
      continue;
    }
    cr_assert_eq(r, -EINVAL);
    cr_assert_eq(diag.n, 1, "%zu diagnostics", diag.n);
    cr_assert_geq(asprintf(&want,
                           "%s:%d: component 'c%d': more than %d components (an aggregator "
                           "refuses a node with more than its max_components_per_node, %d by "
                           "default)",
                           path, 3 * MST_COMPONENTS_PER_NODE_MAX + 1, MST_COMPONENTS_PER_NODE_MAX,
                           MST_COMPONENTS_PER_NODE_MAX, MST_COMPONENTS_PER_NODE_MAX),
                  0);
    cr_assert_str_eq(diag.lines[0], want);
    mst_diag_done(&diag);
  }
}

Test(profile, each_error_at_its_line) {
  for (size_t i = 0; i < ELEMENTSOF(error_cases); i++) {
    const struct error_case *c = &error_cases[i];
    _cleanup_free_ char *path = unit_write_file(tmpdir, "master.ini", c->content);
    _cleanup_free_ char *want = NULL;
    struct mst_profile *p = NULL;
    struct mst_diag diag = {0};
    int r = mst_profile_load(path, &p, &diag);

    if (!c->diag) {
      /* a control case: valid */
      cr_assert_eq(r, 0, "case %zu: %s", i, diag.n ? diag.lines[0] : "");
      mst_profile_free(p);
      continue;
    }
    cr_assert_geq(asprintf(&want, "%s:%s", path, c->diag), 0);
    cr_assert_eq(r, -EINVAL, "case %zu: ret %d", i, r);
    cr_assert_null(p);
    cr_assert_eq(diag.n, 1, "case %zu (%s): %zu diagnostics, first: %s", i, c->diag, diag.n,
                 diag.n ? diag.lines[0] : "none");
    cr_assert_str_eq(diag.lines[0], want, "case %zu", i);
    mst_diag_done(&diag);
  }
}

Test(profile, several_errors_and_a_longer_cycle) {
  _cleanup_free_ char *path = unit_write_file(tmpdir, "m.ini",
                                              "[component \"a\"]\n"    /* 1 */
                                              "check = systemd\n"      /* 2 */
                                              "[stage \"s1\"]\n"       /* 3 */
                                              "after = s3\n"           /* 4 */
                                              "components = a ghost\n" /* 5 */
                                              "[stage \"s2\"]\n"       /* 6 */
                                              "[stage \"s3\"]\n"       /* 7 */
                                              "bogus = 1\n");          /* 8 */
  struct mst_profile *p = NULL;
  struct mst_diag diag = {0};
  static const char *const want[] = {
      "8: unknown key 'bogus' in section [stage \"s3\"]",
      "1: component 'a': check = systemd needs 'unit'",
      "5: stage 's1': unknown component 'ghost'",
      "4: stage 's1': dependency cycle s1 -> s3 -> s2 -> s1",
  };

  cr_assert_eq(mst_profile_load(path, &p, &diag), -EINVAL);
  cr_assert_eq(diag.n, ELEMENTSOF(want));
  for (size_t i = 0; i < ELEMENTSOF(want); i++) {
    _cleanup_free_ char *line = NULL;
    cr_assert_geq(asprintf(&line, "%s:%s", path, want[i]), 0);
    cr_assert_str_eq(diag.lines[i], line);
  }
  mst_diag_done(&diag);
}

Test(profile, digest_is_stable_and_follows_the_bytes) {
  _cleanup_free_ char *path = unit_write_file(tmpdir, "agent.ini", spec_agent);
  struct mst_profile *a = NULL, *b = NULL, *c = NULL;
  struct mst_diag diag = {0};

  cr_assert_eq(mst_profile_load(path, &a, &diag), 0);
  cr_assert_eq(mst_profile_load(path, &b, &diag), 0);
  cr_assert_str_eq(a->digest, b->digest);
  cr_assert_eq(strlen(a->digest), 64);
  cr_assert_str_eq(a->digest, spec_agent_sha256);

  /* A comment changes nothing but the bytes: the digest still changes. */
  size_t n = strlen(spec_agent);
  char *changed = malloc(n + 16);
  cr_assert_not_null(changed);
  memcpy(changed, spec_agent, n);
  strcpy(changed + n, "; edited\n");
  free(unit_write_file(tmpdir, "agent.ini", changed));
  free(changed);
  cr_assert_eq(mst_profile_load(path, &c, &diag), 0);
  cr_assert_str_neq(c->digest, a->digest);

  mst_profile_free(a);
  mst_profile_free(b);
  mst_profile_free(c);
  mst_diag_done(&diag);
}

Test(profile, missing_file) {
  _cleanup_free_ char *path = NULL;
  struct mst_profile *p = NULL;
  struct mst_diag diag = {0};

  cr_assert_geq(asprintf(&path, "%s/none.ini", tmpdir), 0);
  cr_assert_eq(mst_profile_load(path, &p, &diag), -ENOENT);
  cr_assert_null(p);
  cr_assert_eq(diag.n, 1);
  mst_diag_done(&diag);
}

/* A profile is read under the INI reader's caps: /dev/zero (size 0 to
 * fstat) stops at the file cap, a large file is refused before reading, and
 * a long line is refused at its line. */
Test(profile, file_and_line_caps) {
  struct mst_profile *p = NULL;
  struct mst_diag diag = {0};

  cr_assert_eq(mst_profile_load("/dev/zero", &p, &diag), -EFBIG);
  cr_assert_null(p);
  cr_assert(mst_diag_contains(&diag, "/dev/zero: file is larger than 4194304 bytes"));
  mst_diag_done(&diag);

  char *content = malloc(MST_INI_FILE_MAX + 2);
  cr_assert_not_null(content);
  memset(content, '#', MST_INI_FILE_MAX + 1);
  content[MST_INI_FILE_MAX + 1] = '\0';
  _cleanup_free_ char *large = unit_write_file(tmpdir, "large.ini", content);
  cr_assert_eq(mst_profile_load(large, &p, &diag), -EFBIG);
  cr_assert(mst_diag_contains(&diag, "large.ini: file is larger than 4194304 bytes"));
  mst_diag_done(&diag);

  strcpy(content, "[component \"zk\"]\ncheck = systemd\nunit = ");
  size_t n = strlen(content);
  memset(content + n, 'u', 100000);
  strcpy(content + n + 100000, "\n");
  _cleanup_free_ char *long_line = unit_write_file(tmpdir, "agent.ini", content);
  free(content);
  cr_assert_eq(mst_profile_load(long_line, &p, &diag), -EINVAL);
  cr_assert(mst_diag_contains(&diag, "agent.ini:3: line too long (over 4096 bytes)"));
  mst_diag_done(&diag);
}

static const char master_profile[] = "[component \"zk\"]\n"
                                     "check = systemd\n"
                                     "unit = dcos-exhibitor.service\n"
                                     "[stage \"zookeeper\"]\n"
                                     "components = zk\n"
                                     "[stage \"mesos-master\"]\n";

Test(profile, set_load) {
  struct mst_profile_set *set = NULL;
  struct mst_diag diag = {0};

  free(unit_write_file(tmpdir, "master.ini", master_profile));
  free(unit_write_file(tmpdir, "agent.ini", spec_agent));
  free(unit_write_file(tmpdir, "README.txt", "not a profile"));
  free(unit_write_file(tmpdir, ".hidden.ini", "garbage"));

  cr_assert_eq(mst_profile_set_load(tmpdir, &set, &diag), 0, "%s", diag.n ? diag.lines[0] : "");
  cr_assert_eq(set->n, 2);
  cr_assert_str_eq(set->profiles[0]->role, "agent", "sorted by file name");
  cr_assert_str_eq(set->profiles[1]->role, "master");
  cr_assert_eq(mst_profile_set_find(set, "master"), set->profiles[1]);
  cr_assert_null(mst_profile_set_find(set, "agent_public"));
  mst_profile_set_free(set);
  mst_diag_done(&diag);
}

Test(profile, set_load_duplicate_role) {
  struct mst_profile_set *set = NULL;
  struct mst_diag diag = {0};
  _cleanup_free_ char *a = unit_write_file(tmpdir, "a.ini", "[profile]\nrole = master\n");
  _cleanup_free_ char *m = unit_write_file(tmpdir, "master.ini", master_profile);
  _cleanup_free_ char *want = NULL;

  cr_assert_eq(mst_profile_set_load(tmpdir, &set, &diag), -EINVAL);
  cr_assert_null(set);
  cr_assert_geq(asprintf(&want, "%s: duplicate role 'master' (already defined by %s)", m, a), 0);
  cr_assert_eq(diag.n, 1);
  cr_assert_str_eq(diag.lines[0], want);
  mst_diag_done(&diag);
}

Test(profile, set_load_collects_errors_and_checks_requires) {
  struct mst_profile_set *set = NULL;
  struct mst_diag diag = {0};
  _cleanup_free_ char *agent = unit_write_file(tmpdir, "agent.ini", spec_agent);
  _cleanup_free_ char *pub = unit_write_file(tmpdir, "public.ini",
                                             "[stage \"s\"]\n"
                                             "requires = master:zookeeper@all, nobody:x\n");
  _cleanup_free_ char *bad = unit_write_file(tmpdir, "broken.ini", "[stage \"x\"]\nafter = y\n");
  _cleanup_free_ char *m = unit_write_file(tmpdir, "master.ini", master_profile);
  (void)agent, (void)pub, (void)m; /* written for the loader; only freed here */

  cr_assert_eq(mst_profile_set_load(tmpdir, &set, &diag), -EINVAL);
  cr_assert_null(set);
  cr_assert(mst_diag_contains(&diag, "broken.ini:2: stage 'x': 'after' names unknown stage 'y'"));
  cr_assert(mst_diag_contains(&diag, "public.ini:2: stage 's': requires 'nobody:x' names unknown "
                                     "role 'nobody'"));
  cr_assert_eq(diag.n, 2, "agent's master:mesos-master and master:zookeeper@all are fine");

  mst_diag_done(&diag);
  free(unit_write_file(tmpdir, "public.ini", "[stage \"s\"]\nrequires = master:dns\n"));
  cr_assert_eq(unlink(bad), 0);
  cr_assert_eq(mst_profile_set_load(tmpdir, &set, &diag), -EINVAL);
  cr_assert_eq(diag.n, 1);
  cr_assert(mst_diag_contains(&diag, "public.ini:2: stage 's': requires 'master:dns' names stage "
                                     "'dns', which role 'master' does not have"));
  mst_diag_done(&diag);
}

Test(profile, set_load_missing_dir) {
  struct mst_profile_set *set = NULL;
  struct mst_diag diag = {0};
  _cleanup_free_ char *dir = NULL;

  cr_assert_geq(asprintf(&dir, "%s/none", tmpdir), 0);
  cr_assert_eq(mst_profile_set_load(dir, &set, &diag), -ENOENT);
  cr_assert_eq(diag.n, 1);
  mst_diag_done(&diag);
}

/* A profile set and the one diagnostic it must produce (NULL: it loads).
 * Files are loaded in name order, which fixes where a cycle is reported:
 * at the requires key that closes it in a depth-first walk from the first
 * file's first stage. */
struct set_case {
  const char *what;
  struct {
    const char *name, *content;
  } files[4];
  const char *diag; /* "file:line: message" */
};

static const struct set_case set_cases[] = {
    {"self-requirement",
     {{"master.ini", "[stage \"s1\"]\nrequires = master:s1\n"}},
     "master.ini:2: stage 's1': requires 'master:s1' closes a dependency cycle, which can never be "
     "met: master:s1 -> master:s1"},
    {"self-requirement @quorum",
     {{"master.ini", "[stage \"s0\"]\n[stage \"s1\"]\nrequires = master:s1@quorum\n"}},
     "master.ini:3: stage 's1': requires 'master:s1@quorum' closes a dependency cycle, which can "
     "never be met: master:s1 -> master:s1"},
    {"2-cycle within a role, through after",
     {{"master.ini", "[stage \"s1\"]\nrequires = master:s2@all\n[stage \"s2\"]\n"}},
     "master.ini:2: stage 's1': requires 'master:s2@all' closes a dependency cycle, which can "
     "never "
     "be met: master:s1 -> master:s2 -> master:s1"},
    {"2-cycle within a role, requires both ways",
     {{"master.ini",
       "[stage \"s1\"]\nrequires = master:s2\n[stage \"s2\"]\nafter =\nrequires = master:s1\n"}},
     "master.ini:5: stage 's2': requires 'master:s1' closes a dependency cycle, which can never be "
     "met: master:s2 -> master:s1 -> master:s2"},
    {"cross-role 2-cycle",
     {{"agent.ini", "[stage \"x\"]\nrequires = master:s1\n"},
      {"master.ini", "[stage \"s1\"]\nrequires = agent:x@quorum\n"}},
     "master.ini:2: stage 's1': requires 'agent:x@quorum' closes a dependency cycle, which can "
     "never "
     "be met: master:s1 -> agent:x -> master:s1"},
    {"3-cycle across three roles",
     {{"a.ini", "[stage \"s\"]\nrequires = b:s\n"},
      {"a0.ini", "; a role without stages\n"},
      {"b.ini", "[stage \"s\"]\nrequires = c:s\n"},
      {"c.ini", "; the last\n[stage \"s\"]\nrequires = a:s@all\n"}},
     "c.ini:3: stage 's': requires 'a:s@all' closes a dependency cycle, which can never be met: "
     "c:s -> a:s -> b:s -> c:s"},
    {"cross-role cycle through a stage order",
     {{"agent.ini", "[stage \"x\"]\nrequires = master:s2\n"},
      {"master.ini", "[stage \"s1\"]\nrequires = agent:x\n[stage \"s2\"]\n"}},
     "master.ini:2: stage 's1': requires 'agent:x' closes a dependency cycle, which can never be "
     "met: master:s1 -> agent:x -> master:s2 -> master:s1"},
    {"a diamond across roles, and within one",
     {{"a.ini", "[stage \"top\"]\n[stage \"s2\"]\n[stage \"s3\"]\nafter = top\n"
                "[stage \"s4\"]\nafter = s2 s3\nrequires = a:s3@quorum, a:top@all\n"},
      {"b.ini", "[stage \"l\"]\nrequires = a:top\n"},
      {"c.ini", "[stage \"r\"]\nrequires = a:top@all\n"},
      {"d.ini", "[stage \"bottom\"]\nrequires = b:l, c:r@quorum, a:s4\n"}},
     NULL},
    {"unknown role",
     {{"master.ini", "[stage \"s\"]\n\nrequires = nobody:x\n"}},
     "master.ini:3: stage 's': requires 'nobody:x' names unknown role 'nobody'"},
    {"unknown stage of its own role",
     {{"master.ini", "[stage \"s\"]\nrequires = master:ghost@quorum\n"}},
     "master.ini:2: stage 's': requires 'master:ghost@quorum' names stage 'ghost', which role "
     "'master' does not have"},
    {"unknown stage of another role",
     {{"agent.ini", "[stage \"x\"]\nrequires = master:ghost\n"}, {"master.ini", "[stage \"s\"]\n"}},
     "agent.ini:2: stage 'x': requires 'master:ghost' names stage 'ghost', which role 'master' "
     "does not have"},
};

Test(profile, set_refuses_dependency_cycles_at_the_requires_line) {
  for (size_t i = 0; i < ELEMENTSOF(set_cases); i++) {
    const struct set_case *c = &set_cases[i];
    _cleanup_free_ char *dir = NULL, *want = NULL;
    struct mst_profile_set *set = NULL;
    struct mst_diag diag = {0};

    cr_assert_geq(asprintf(&dir, "%s/case%zu", tmpdir, i), 0);
    cr_assert_eq(mkdir(dir, 0700), 0);
    for (size_t f = 0; f < ELEMENTSOF(c->files) && c->files[f].name; f++)
      free(unit_write_file(dir, c->files[f].name, c->files[f].content));

    int r = mst_profile_set_load(dir, &set, &diag);
    if (!c->diag) {
      cr_assert_eq(r, 0, "%s: %s", c->what, diag.n ? diag.lines[0] : "");
      mst_profile_set_free(set);
      continue;
    }
    cr_assert_geq(asprintf(&want, "%s/%s", dir, c->diag), 0);
    cr_assert_eq(r, -EINVAL, "%s: ret %d", c->what, r);
    cr_assert_null(set);
    cr_assert_eq(diag.n, 1, "%s: %zu diagnostics, first: %s", c->what, diag.n,
                 diag.n ? diag.lines[0] : "none");
    cr_assert_str_eq(diag.lines[0], want, "%s", c->what);
    mst_diag_done(&diag);
  }
}

/* Alone (as bench's load generator reads one), a profile refuses what it can
 * see: a cycle among its own role's stages; another role's requires wait for
 * the set. */
Test(profile, alone_refuses_its_own_cycles_only) {
  _cleanup_free_ char *own = unit_write_file(tmpdir, "master.ini",
                                             "[stage \"a\"]\n[stage \"b\"]\nafter = a\n"
                                             "[stage \"c\"]\nrequires = master:a@quorum, "
                                             "agent:x\n[stage \"d\"]\nrequires = master:d\n");
  _cleanup_free_ char *want = NULL;
  struct mst_profile *p = NULL;
  struct mst_diag diag = {0};

  cr_assert_eq(mst_profile_load(own, &p, &diag), -EINVAL);
  cr_assert_eq(diag.n, 1, "%s", diag.n ? diag.lines[0] : "");
  cr_assert_geq(asprintf(&want,
                         "%s:7: stage 'd': requires 'master:d' closes a dependency cycle, which "
                         "can never be met: master:d -> master:d",
                         own),
                0);
  cr_assert_str_eq(diag.lines[0], want);
  mst_diag_done(&diag);

  free(unit_write_file(tmpdir, "master.ini",
                       "[stage \"a\"]\n[stage \"c\"]\nrequires = master:a@quorum, agent:x\n"));
  cr_assert_eq(mst_profile_load(own, &p, &diag), 0, "%s", diag.n ? diag.lines[0] : "");
  cr_assert_eq(p->stages[1].requires_line, 3);
  mst_profile_free(p);
}

/* Many stages, each after every one before it, and the first requiring the
 * last: cycles through that requires are countless, yet the check stays fast
 * (no walk of every path) and reports the requires line once. */
Test(profile, cycle_check_is_not_exponential) {
  _cleanup_free_ char *path = NULL;
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  struct mst_profile *p = NULL;
  struct mst_diag diag = {0};
  enum { STAGES = 400 };

  cr_assert_not_null(f);
  for (int i = 0; i < STAGES; i++) {
    fprintf(f, "[stage \"s%d\"]\nafter =", i);
    for (int j = 0; j < i; j++)
      fprintf(f, " s%d", j);
    fprintf(f, "\n%s\n", i == 0 ? "requires = master:s399" : "");
  }
  cr_assert_eq(fclose(f), 0);
  path = unit_write_file(tmpdir, "master.ini", text);
  free(text);

  cr_assert_eq(mst_profile_load(path, &p, &diag), -EINVAL);
  cr_assert_eq(diag.n, 1, "%zu diagnostics: %s", diag.n, diag.lines[diag.n - 1]);
  cr_assert(mst_diag_contains(&diag, ":3: stage 's0': requires 'master:s399' closes a dependency "
                                     "cycle"));
  mst_diag_done(&diag);
}

Test(profile, restart_window) {
  _cleanup_free_ char *path =
      unit_write_file(tmpdir, "master.ini", "[profile]\nrestart_window = 5s\n");
  struct mst_profile *p = NULL;
  struct mst_diag diag = {0};

  cr_assert_eq(mst_profile_load(path, &p, &diag), 0, "%s", diag.n ? diag.lines[0] : "");
  cr_assert_eq(p->restart_window_usec, 5 * USEC_PER_SEC);
  mst_profile_free(p);
  mst_diag_done(&diag);
}
