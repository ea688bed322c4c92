/* Unit tests for mst/damp.h: HAProxy-style rise/fall sequences with the
 * state and counter after every result, the first-failure rule, restoring
 * counters after a restart, and the startup-grace rule. */
#include <criterion/criterion.h>
#include <string.h>

#include "mst/damp.h"
#include "mst/macro.h"

/* Results: O ok, W warning, C critical, U unknown.
 * States: s starting, h healthy, w warning, u unhealthy, ? unknown. */
struct damp_case {
  unsigned rise, fall;
  const char *results;
  const char *states;
  unsigned health[12];
};

static const struct damp_case damp_cases[] = {
    /* coming up needs rise successes; the counter jumps to the max */
    {2, 3, "OO", "sh", {1, 4}},
    /* an up component needs fall failures in a row to go down */
    {2, 3, "OOCCC", "shhhu", {1, 4, 3, 2, 0}},
    /* a success in between resets the way down */
    {2, 3, "OOCCOCC", "shhhhhh", {1, 4, 3, 2, 4, 3, 2}},
    /* the first failure from the initial state takes it down at once */
    {2, 3, "C", "u", {0}},
    {2, 3, "U", "?", {0}},
    {2, 3, "OC", "su", {1, 0}},
    /* down needs rise successes again; a failure restarts the count */
    {2, 3, "COO", "uuh", {0, 1, 4}},
    {2, 3, "COCOO", "uuuuh", {0, 1, 0, 1, 4}},
    /* WARNING is a success and shows as warning while up */
    {2, 3, "OOW", "shw", {1, 4, 4}},
    {2, 3, "WW", "sw", {1, 4}},
    {2, 3, "OOWO", "shwh", {1, 4, 4, 4}},
    /* a failure that does not take it down leaves the visible state */
    {2, 3, "OOWC", "shww", {1, 4, 4, 3}},
    {2, 3, "OOUU", "shhh", {1, 4, 3, 2}},
    /* while down: unknown after UNKNOWN, unhealthy otherwise */
    {2, 3, "CU", "u?", {0, 0}},
    {2, 3, "UC", "?u", {0, 0}},
    {2, 3, "UO", "?u", {0, 1}},
    {2, 3, "OOCCU", "shhh?", {1, 4, 3, 2, 0}},
    /* rise 1, fall 1: every result flips it */
    {1, 1, "OCOCW", "huhuw", {1, 0, 1, 0, 1}},
    {1, 1, "C", "u", {0}},
    /* rise 3, fall 1 */
    {3, 1, "OOOC", "sshu", {1, 2, 3, 0}},
    /* rise 1, fall 4 */
    {1, 4, "OCCCOCCCC", "hhhhhhhhu", {4, 3, 2, 1, 4, 3, 2, 1, 0}},
};

static char state_char(enum mst_state s) {
  switch (s) {
  case MST_STATE_STARTING:
    return 's';
  case MST_STATE_HEALTHY:
    return 'h';
  case MST_STATE_WARNING:
    return 'w';
  case MST_STATE_UNHEALTHY:
    return 'u';
  case MST_STATE_UNKNOWN:
    return '?';
  default:
    return 'x';
  }
}

static enum mst_result result_of(char c) {
  switch (c) {
  case 'O':
    return MST_RESULT_OK;
  case 'W':
    return MST_RESULT_WARNING;
  case 'C':
    return MST_RESULT_CRITICAL;
  default:
    return MST_RESULT_UNKNOWN;
  }
}

Test(damp, sequences) {
  for (size_t i = 0; i < ELEMENTSOF(damp_cases); i++) {
    const struct damp_case *c = &damp_cases[i];
    struct mst_damp d;

    cr_assert_eq(strlen(c->results), strlen(c->states), "case %zu is malformed", i);
    mst_damp_init(&d, c->rise, c->fall);
    cr_assert_eq(d.state, MST_STATE_STARTING);
    cr_assert_eq(d.health, 0);
    cr_assert_not(d.seen);

    for (size_t k = 0; c->results[k]; k++) {
      enum mst_state s = mst_damp_feed(&d, result_of(c->results[k]));
      cr_assert_eq(state_char(s), c->states[k],
                   "rise %u fall %u \"%s\": after result %zu state '%c', want '%c'", c->rise,
                   c->fall, c->results, k + 1, state_char(s), c->states[k]);
      cr_assert_eq(s, d.state);
      cr_assert_eq(d.health, c->health[k],
                   "rise %u fall %u \"%s\": after result %zu health %u, want %u", c->rise, c->fall,
                   c->results, k + 1, d.health, c->health[k]);
      cr_assert_eq(d.up, s == MST_STATE_HEALTHY || s == MST_STATE_WARNING);
      cr_assert(d.seen);
    }
  }
}

Test(damp, counter_bounds) {
  struct mst_damp d;

  mst_damp_init(&d, MST_DAMP_DEFAULT_RISE, MST_DAMP_DEFAULT_FALL);
  cr_assert_eq(mst_damp_max(&d), 4, "shown as health n/4");
  for (int i = 0; i < 50; i++)
    mst_damp_feed(&d, MST_RESULT_OK);
  cr_assert_eq(d.health, 4, "never above rise + fall - 1");
  for (int i = 0; i < 50; i++)
    mst_damp_feed(&d, MST_RESULT_CRITICAL);
  cr_assert_eq(d.health, 0, "never below 0");

  /* Out-of-range counts are clamped to 1..100. */
  mst_damp_init(&d, 0, 500);
  cr_assert_eq(d.rise, 1);
  cr_assert_eq(d.fall, 100);
  cr_assert_eq(mst_damp_max(&d), 100);
  mst_damp_init(&d, 100, 100);
  cr_assert_eq(mst_damp_max(&d), 199);
  for (int i = 0; i < 99; i++)
    cr_assert_eq(mst_damp_feed(&d, MST_RESULT_OK), MST_STATE_STARTING);
  cr_assert_eq(mst_damp_feed(&d, MST_RESULT_OK), MST_STATE_HEALTHY);
  cr_assert_eq(d.health, 199);
}

Test(damp, restore_up) {
  struct mst_damp d;

  /* A leader resumes an up component at health 4/4: it still needs three
   * failures to go down, not one. */
  mst_damp_restore(&d, 2, 3, 4, MST_STATE_HEALTHY);
  cr_assert(d.up);
  cr_assert(d.seen);
  cr_assert_eq(d.state, MST_STATE_HEALTHY);
  cr_assert_eq(mst_damp_feed(&d, MST_RESULT_CRITICAL), MST_STATE_HEALTHY);
  cr_assert_eq(mst_damp_feed(&d, MST_RESULT_CRITICAL), MST_STATE_HEALTHY);
  cr_assert_eq(mst_damp_feed(&d, MST_RESULT_CRITICAL), MST_STATE_UNHEALTHY);

  /* Restored part-way down (health 2 of 4): one more failure... */
  mst_damp_restore(&d, 2, 3, 3, MST_STATE_WARNING);
  cr_assert_eq(d.state, MST_STATE_WARNING);
  cr_assert_eq(mst_damp_feed(&d, MST_RESULT_CRITICAL), MST_STATE_WARNING);
  cr_assert_eq(d.health, 2);
  cr_assert_eq(mst_damp_feed(&d, MST_RESULT_CRITICAL), MST_STATE_UNHEALTHY);
}

Test(damp, restore_down) {
  struct mst_damp d;

  mst_damp_restore(&d, 2, 3, 1, MST_STATE_UNHEALTHY);
  cr_assert_not(d.up);
  cr_assert_eq(d.health, 1);
  cr_assert_eq(mst_damp_feed(&d, MST_RESULT_OK), MST_STATE_HEALTHY, "one more success to rise");

  mst_damp_restore(&d, 2, 3, 0, MST_STATE_UNKNOWN);
  cr_assert_eq(d.state, MST_STATE_UNKNOWN);
  cr_assert_eq(mst_damp_feed(&d, MST_RESULT_OK), MST_STATE_UNHEALTHY);
  cr_assert_eq(mst_damp_feed(&d, MST_RESULT_OK), MST_STATE_HEALTHY);
}

Test(damp, restore_starting_and_clamping) {
  struct mst_damp d;

  mst_damp_restore(&d, 3, 3, 2, MST_STATE_STARTING);
  cr_assert_eq(d.state, MST_STATE_STARTING);
  cr_assert_eq(mst_damp_feed(&d, MST_RESULT_OK), MST_STATE_HEALTHY, "progress kept");

  mst_damp_restore(&d, 2, 3, 0, MST_STATE_UNSPECIFIED);
  cr_assert_eq(d.state, MST_STATE_STARTING);
  cr_assert_not(d.seen);
  cr_assert_eq(mst_damp_feed(&d, MST_RESULT_CRITICAL), MST_STATE_UNHEALTHY);

  /* A counter from a profile with a larger fall is clamped to the new max. */
  mst_damp_restore(&d, 2, 2, 9, MST_STATE_HEALTHY);
  cr_assert_eq(d.health, 3);
  cr_assert_eq(mst_damp_feed(&d, MST_RESULT_CRITICAL), MST_STATE_HEALTHY);
  cr_assert_eq(mst_damp_feed(&d, MST_RESULT_CRITICAL), MST_STATE_UNHEALTHY);
}

/* A forced state (a systemd unit's) bypasses rise and fall, from any
 * counter, and is up exactly for healthy and warning. */
struct force_case {
  unsigned rise, fall;
  const char *before; /* results fed first */
  enum mst_state forced;
  bool up;
  unsigned health;
  const char *after; /* results fed after, and the states they give */
  const char *after_states;
};

static const struct force_case force_cases[] = {
    /* rise 1, fall 1 as systemd components use: 1/1 up, 0/1 down */
    {1, 1, "", MST_STATE_HEALTHY, true, 1, "", ""},
    {1, 1, "", MST_STATE_UNHEALTHY, false, 0, "", ""},
    {1, 1, "", MST_STATE_STARTING, false, 0, "", ""},
    {1, 1, "", MST_STATE_UNKNOWN, false, 0, "", ""},
    {1, 1, "", MST_STATE_WARNING, true, 1, "", ""},
    /* up at once, whatever rise says; then the usual fall */
    {2, 3, "", MST_STATE_HEALTHY, true, 4, "CCC", "hhu"},
    /* down at once from fully up; then the usual rise */
    {2, 3, "OO", MST_STATE_UNHEALTHY, false, 0, "OO", "uh"},
    /* a forced starting stays starting until the next result decides */
    {2, 3, "C", MST_STATE_STARTING, false, 0, "C", "u"},
};

Test(damp, force) {
  for (size_t i = 0; i < ELEMENTSOF(force_cases); i++) {
    const struct force_case *c = &force_cases[i];
    struct mst_damp d;

    mst_damp_init(&d, c->rise, c->fall);
    for (const char *r = c->before; *r; r++)
      (void)mst_damp_feed(&d, result_of(*r));
    mst_damp_force(&d, c->forced);
    cr_assert_eq(d.state, c->forced, "case %zu", i);
    cr_assert_eq(d.up, c->up, "case %zu", i);
    cr_assert_eq(d.health, c->health, "case %zu", i);
    cr_assert(d.seen, "case %zu", i);
    for (size_t k = 0; c->after[k]; k++)
      cr_assert_eq(state_char(mst_damp_feed(&d, result_of(c->after[k]))), c->after_states[k],
                   "case %zu, result %zu", i, k);
  }
}

struct grace_case {
  enum mst_state damped;
  bool ever_healthy, in_grace;
  enum mst_state want;
};

static const struct grace_case grace_cases[] = {
    /* never healthy, inside grace: failures count as starting */
    {MST_STATE_UNHEALTHY, false, true, MST_STATE_STARTING},
    {MST_STATE_UNKNOWN, false, true, MST_STATE_STARTING},
    {MST_STATE_STARTING, false, true, MST_STATE_STARTING},
    {MST_STATE_HEALTHY, false, true, MST_STATE_HEALTHY},
    {MST_STATE_WARNING, false, true, MST_STATE_WARNING},
    /* once healthy this boot, a failure is a failure */
    {MST_STATE_UNHEALTHY, true, true, MST_STATE_UNHEALTHY},
    {MST_STATE_UNKNOWN, true, true, MST_STATE_UNKNOWN},
    /* after the grace, nothing is masked */
    {MST_STATE_UNHEALTHY, false, false, MST_STATE_UNHEALTHY},
    {MST_STATE_UNKNOWN, false, false, MST_STATE_UNKNOWN},
    {MST_STATE_STARTING, false, false, MST_STATE_STARTING},
    {MST_STATE_HEALTHY, true, false, MST_STATE_HEALTHY},
};

Test(damp, startup_grace) {
  for (size_t i = 0; i < ELEMENTSOF(grace_cases); i++) {
    const struct grace_case *c = &grace_cases[i];
    cr_assert_eq(mst_state_with_grace(c->damped, c->ever_healthy, c->in_grace), c->want,
                 "case %zu: %s ever_healthy=%d in_grace=%d", i, mst_state_to_string(c->damped),
                 c->ever_healthy, c->in_grace);
  }
}

Test(damp, state_names) {
  static const struct {
    enum mst_state s;
    const char *name;
  } names[] = {
      {MST_STATE_STARTING, "starting"}, {MST_STATE_HEALTHY, "healthy"},
      {MST_STATE_WARNING, "warning"},   {MST_STATE_UNHEALTHY, "unhealthy"},
      {MST_STATE_UNKNOWN, "unknown"},
  };
  for (size_t i = 0; i < ELEMENTSOF(names); i++) {
    cr_assert_str_eq(mst_state_to_string(names[i].s), names[i].name);
    cr_assert_eq(mst_state_from_string(names[i].name), (int)names[i].s);
  }
  cr_assert_str_eq(mst_state_to_string(MST_STATE_UNSPECIFIED), "unspecified");
  cr_assert_null(mst_state_to_string((enum mst_state)6));
  cr_assert_eq(mst_state_from_string("unspecified"), -EINVAL);
  cr_assert_eq(mst_state_from_string("Healthy"), -EINVAL);
  cr_assert_eq(mst_state_from_string(NULL), -EINVAL);

  cr_assert_str_eq(mst_check_kind_to_string(MST_CHECK_SYSTEMD), "systemd");
  cr_assert_str_eq(mst_check_kind_to_string(MST_CHECK_TCP), "tcp");
  cr_assert_eq(mst_check_kind_from_string("exec"), MST_CHECK_EXEC);
  cr_assert_eq(mst_check_kind_from_string("http"), MST_CHECK_HTTP);
  cr_assert_eq(mst_check_kind_from_string("ping"), -EINVAL);
  cr_assert_null(mst_check_kind_to_string((enum mst_check_kind)5));

  /* The never-NULL names, for wire values nobody checked. */
  cr_assert_str_eq(mst_state_name(MST_STATE_WARNING), "warning");
  cr_assert_str_eq(mst_state_name(6), "unspecified");
  cr_assert_str_eq(mst_state_name(-EINVAL), "unspecified");
  cr_assert_str_eq(mst_state_name(mst_state_from_string("bogus")), "unspecified");
  cr_assert_str_eq(mst_check_kind_name(MST_CHECK_HTTP), "http");
  cr_assert_str_eq(mst_check_kind_name(99), "unspecified");
  cr_assert_str_eq(mst_check_kind_name(-1), "unspecified");
}
