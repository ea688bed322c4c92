/* Unit tests for agentd/probe/systemd_map.c: the systemd mapping, one table row
 * per unit situation as systemd 252 reports it (the property values are
 * those seen on a real user manager), and DC/OS's Description split.
 * Links agent_core. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "mst/macro.h"
#include "probe/systemd_map.h"

struct map_case {
  const char *load, *active, *sub, *result;
  uint32_t n_restarts;
  int32_t code, status;
  uint64_t active_enter, inactive_enter;
  enum mst_state want;
  const char *text;
};

/* Every read of the table is made at this time (CLOCK_MONOTONIC usec), long
 * after the table's timestamps, so no restarted unit is still settling. */
#define READ_AT 100000000ULL

#define H MST_STATE_HEALTHY
#define S MST_STATE_STARTING
#define U MST_STATE_UNHEALTHY
#define Q MST_STATE_UNKNOWN

static const struct map_case map_cases[] = {
    /* active is healthy; a history of restarts is shown */
    {"loaded", "active", "running", "success", 0, CLD_EXITED, 0, 100, 0, H, "active (running)"},
    {"loaded", "active", "exited", "success", 0, CLD_EXITED, 0, 100, 0, H, "active (exited)"},
    {"loaded", "active", "running", "success", 2, CLD_EXITED, 0, 300, 250, H,
     "active (running, NRestarts=2)"},
    /* reloading is starting */
    {"loaded", "reloading", "reload", "success", 0, 0, 0, 100, 0, S, "reloading (reload)"},
    /* activating is starting: first start, and a start after a stop */
    {"loaded", "activating", "start-pre", "success", 0, 0, 0, 0, 0, S, "activating (start-pre)"},
    {"loaded", "activating", "start", "success", 0, 0, 0, 100, 200, S, "activating (start)"},
    /* auto-restart after the unit was once active, or after a restart */
    {"loaded", "activating", "auto-restart", "exit-code", 5, CLD_EXITED, 1, 100, 200, U,
     "auto-restart (NRestarts=5, Result=exit-code, ExecMainStatus=1)"},
    {"loaded", "activating", "auto-restart", "exit-code", 1, CLD_EXITED, 1, 0, 200, U,
     "auto-restart (NRestarts=1, Result=exit-code, ExecMainStatus=1)"},
    {"loaded", "activating", "auto-restart", "exit-code", 0, CLD_EXITED, 1, 100, 200, U,
     "auto-restart (Result=exit-code, ExecMainStatus=1)"},
    /* never active and never restarted: still starting */
    {"loaded", "activating", "auto-restart", "success", 0, 0, 0, 0, 0, S,
     "activating (auto-restart)"},
    /* restarted, but up for longer than the settling time */
    {"loaded", "active", "running", "success", 1, CLD_EXITED, 0, READ_AT - 1000000, 200, H,
     "active (running, NRestarts=1)"},
    /* restarted and up for a moment only: a restart loop's turn */
    {"loaded", "active", "running", "success", 4, CLD_EXITED, 0, READ_AT - 999999, 200, U,
     "flapping: active (running, NRestarts=4)"},
    /* a restart loop's start-pre phase is flapping, not starting */
    {"loaded", "activating", "start-pre", "success", 3, 0, 0, 100, 200, U,
     "flapping: activating (start-pre, NRestarts=3)"},
    /* ... but not when it last became active after the last stop */
    {"loaded", "activating", "start-pre", "success", 3, 0, 0, 300, 200, S,
     "activating (start-pre, NRestarts=3)"},
    /* failed, with the reason; killed by a signal */
    {"loaded", "failed", "failed", "exit-code", 0, CLD_EXITED, 1, 100, 200, U,
     "failed (Result=exit-code, ExecMainStatus=1)"},
    {"loaded", "failed", "failed", "signal", 0, CLD_KILLED, 9, 100, 200, U,
     "failed (Result=signal, ExecMainStatus=9/KILL)"},
    {"loaded", "failed", "failed", "start-limit-hit", 5, CLD_EXITED, 1, 100, 200, U,
     "failed (NRestarts=5, Result=start-limit-hit, ExecMainStatus=1)"},
    /* inactive and deactivating are unhealthy (the grace is applied later) */
    {"loaded", "inactive", "dead", "success", 0, 0, 0, 100, 200, U, "inactive (dead)"},
    {"loaded", "deactivating", "stop-sigterm", "success", 0, 0, 0, 100, 0, U,
     "deactivating (stop-sigterm)"},
    /* states newer than the code are unhealthy, and named */
    {"loaded", "maintenance", "cleaning", "", 0, 0, 0, 0, 0, U, "maintenance (cleaning)"},
    /* not loaded */
    {"not-found", "inactive", "dead", "success", 0, 0, 0, 0, 0, U, "unit not found"},
    {"not-found", "active", "running", "success", 0, 0, 0, 100, 0, U,
     "unit not found, active (running)"},
    {"masked", "inactive", "dead", "", 0, 0, 0, 0, 0, U, "unit not loaded (LoadState=masked)"},
    {"error", "inactive", "dead", "", 0, 0, 0, 0, 0, U, "unit not loaded (LoadState=error)"},
    /* a read without the basic states */
    {"", "", "", "", 0, 0, 0, 0, 0, Q, "systemd did not report the unit's LoadState"},
    {"loaded", "", "", "", 0, 0, 0, 0, 0, Q, "systemd did not report the unit's ActiveState"},
};

/* A unit that is down with a job queued: an operator's restart (a start or
 * restart job after a run that did not fail) is starting; a stop, or a
 * restart of a unit that failed, is not. */
Test(systemd_map, queued_job) {
  static const struct {
    const char *active, *sub, *result, *job;
    enum mst_state want;
    const char *text;
  } cases[] = {
      {"deactivating", "stop-sigterm", "success", "restart", S,
       "deactivating (stop-sigterm, restart job queued)"},
      {"inactive", "dead", "success", "start", S, "inactive (dead, start job queued)"},
      {"inactive", "dead", "success", "try-restart", S, "inactive (dead, try-restart job queued)"},
      {"deactivating", "stop-sigterm", "success", "stop", U, "deactivating (stop-sigterm)"},
      {"inactive", "dead", "exit-code", "restart", U, "inactive (dead, Result=exit-code)"},
      {"failed", "failed", "success", "start", U, "failed"},
      {"inactive", "dead", "success", "", U, "inactive (dead)"},
  };

  for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
    struct agent_unit_props p = {.is_service = true, .job_id = 7};
    char text[256];
    uint64_t recheck;

    snprintf(p.load_state, sizeof(p.load_state), "loaded");
    snprintf(p.active_state, sizeof(p.active_state), "%s", cases[i].active);
    snprintf(p.sub_state, sizeof(p.sub_state), "%s", cases[i].sub);
    snprintf(p.result, sizeof(p.result), "%s", cases[i].result);
    snprintf(p.job_type, sizeof(p.job_type), "%s", cases[i].job);
    cr_expect_eq(agent_unit_map(&p, READ_AT, text, sizeof(text), &recheck), cases[i].want,
                 "case %zu", i);
    cr_expect_str_eq(text, cases[i].text, "case %zu", i);
  }
}

static struct agent_unit_props props_of(const struct map_case *c) {
  struct agent_unit_props p = {
      .is_service = true,
      .n_restarts = c->n_restarts,
      .exec_main_code = c->code,
      .exec_main_status = c->status,
      .active_enter_usec = c->active_enter,
      .inactive_enter_usec = c->inactive_enter,
  };
  snprintf(p.load_state, sizeof(p.load_state), "%s", c->load);
  snprintf(p.active_state, sizeof(p.active_state), "%s", c->active);
  snprintf(p.sub_state, sizeof(p.sub_state), "%s", c->sub);
  snprintf(p.result, sizeof(p.result), "%s", c->result);
  return p;
}

Test(systemd_map, table) {
  for (size_t i = 0; i < ELEMENTSOF(map_cases); i++) {
    const struct map_case *c = &map_cases[i];
    struct agent_unit_props p = props_of(c);
    char text[256];
    uint64_t recheck;
    enum mst_state got = agent_unit_map(&p, READ_AT, text, sizeof(text), &recheck);

    cr_expect_eq(got, c->want, "case %zu (%s/%s/%s): state %s, want %s", i, c->load, c->active,
                 c->sub, mst_state_to_string(got), mst_state_to_string(c->want));
    cr_expect_str_eq(text, c->text, "case %zu: text", i);
    cr_expect_eq(recheck,
                 strncmp(c->text, "flapping: active", 16) == 0 ? c->active_enter + 1000000 : 0,
                 "case %zu: recheck at %llu", i, (unsigned long long)recheck);
  }
}

/* A restarted unit settles for its RestartSec, within 1 s and 30 s; once
 * that is over, the same properties read healthy. */
Test(systemd_map, restarted_unit_settles) {
  static const struct {
    uint64_t restart_usec, settle_usec;
  } cases[] = {{0, 1000000}, {100000, 1000000}, {5000000, 5000000}, {600000000, 30000000}};

  for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
    struct agent_unit_props p = props_of(&map_cases[0]);
    uint64_t enter = 50000000, recheck;
    char text[256];

    p.n_restarts = 2;
    p.active_enter_usec = enter;
    p.restart_usec = cases[i].restart_usec;
    cr_expect_eq(agent_unit_map(&p, enter, text, sizeof(text), &recheck), MST_STATE_UNHEALTHY);
    cr_expect_eq(recheck, enter + cases[i].settle_usec, "case %zu", i);
    cr_expect_eq(agent_unit_map(&p, enter + cases[i].settle_usec - 1, text, sizeof(text), &recheck),
                 MST_STATE_UNHEALTHY, "case %zu", i);
    cr_expect_eq(agent_unit_map(&p, enter + cases[i].settle_usec, text, sizeof(text), &recheck),
                 MST_STATE_HEALTHY, "case %zu", i);
    cr_expect_eq(recheck, 0);
    cr_expect_str_eq(text, "active (running, NRestarts=2)");
  }
}

Test(systemd_map, text_is_cut_and_terminated) {
  struct agent_unit_props p = props_of(&map_cases[6]);
  uint64_t recheck;
  char text[12];

  cr_assert_str_eq(map_cases[6].sub, "auto-restart");
  memset(text, 'x', sizeof(text));
  cr_expect_eq(agent_unit_map(&p, READ_AT, text, sizeof(text), &recheck), MST_STATE_UNHEALTHY);
  cr_expect_eq(strlen(text), sizeof(text) - 1);
  cr_expect_str_eq(text, "auto-restar");

  /* size 0 writes nothing at all */
  cr_expect_eq(agent_unit_map(&p, READ_AT, text, 0, &recheck), MST_STATE_UNHEALTHY);
}

struct split_case {
  const char *id, *description, *name, *rest;
};

static const struct split_case split_cases[] = {
    {"dcos-mesos-master.service", "Mesos Master: distributed systems kernel", "Mesos Master",
     "distributed systems kernel"},
    {"dcos-exhibitor.service", "Exhibitor and ZooKeeper", "dcos-exhibitor.service",
     "Exhibitor and ZooKeeper"},
    {"dcos-metronome.service", "DC/OS Jobs (Metronome): job orchestration",
     "DC/OS Jobs (Metronome)", "job orchestration"},
    /* more than two parts: not split (DC/OS #166) */
    {"x.service", "A: B: C", "x.service", "A: B: C"},
    {"x.service", "a: : b", "x.service", "a: : b"},
    /* a colon without the space does not split */
    {"x.service", "Time:12:00", "x.service", "Time:12:00"},
    /* two parts, one of them empty */
    {"x.service", "Name: ", "Name", ""},
    {"x.service", ": text", "", "text"},
    {"x.service", "", "x.service", ""},
    {"x.service", NULL, "x.service", ""},
};

Test(systemd_map, description_split) {
  for (size_t i = 0; i < ELEMENTSOF(split_cases); i++) {
    const struct split_case *c = &split_cases[i];
    char *name = NULL, *rest = NULL;

    cr_assert_eq(agent_unit_split_description(c->id, c->description, &name, &rest), 0);
    cr_expect_str_eq(name, c->name, "case %zu: name", i);
    cr_expect_str_eq(rest, c->rest, "case %zu: description", i);
    free(name);
    free(rest);
  }
}
