/* Unit tests for aggregatord/model/model.c, aggregatord/model/evaluate.c and
 * aggregatord/serve/view.c: what the apply calls record and mark, node and
 * cluster verdicts derived from component states (including silence and
 * missing expected masters), the reasons and root causes users read, and the
 * views:
 * the JSON bodies, index semantics (unchanged bytes keep their index), the
 * election's fields a follower answers from, and acquire/release/reap, also
 * under concurrent readers. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "model/evaluate.h"
#include "model/model.h"
#include "model/stage.h"
#include "mst/macro.h"
#include "serve/view.h"

#define T0            (1700000000ULL * USEC_PER_SEC) /* some realtime */
#define STALE         (30 * USEC_PER_SEC)
#define DIGEST_MASTER "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* --- fixtures: profiles built in memory ----------------------------------- */

static char *svc_names[] = {"svc", NULL};
static char *web_names[] = {"web", NULL};
static char *wsvc_names[] = {"wsvc", NULL};
static char *after_base[] = {"base", NULL};
static char *no_names[] = {NULL};

static struct mst_stage master_stages[] = {
    {.name = "base", .components = svc_names, .milestones = no_names, .after = no_names},
    {.name = "serve", .components = web_names, .milestones = no_names, .after = after_base},
};
static struct mst_stage agent_stages[] = {
    {.name = "work", .components = wsvc_names, .milestones = no_names, .after = no_names},
};
static struct mst_profile master_profile = {
    .role = "master", .stages = master_stages, .n_stages = 2, .digest = DIGEST_MASTER};
static struct mst_profile agent_profile = {
    .role = "agent", .stages = agent_stages, .n_stages = 1, .digest = "feedface"};
static struct mst_profile *profile_list[] = {&master_profile, &agent_profile};
static const struct mst_profile_set profiles = {.profiles = profile_list, .n = 2};

static struct aggr_model model;
static struct aggr_stage engine;

static void model_setup(char *const *masters) {
  cr_assert_eq(aggr_model_init(&model, &profiles, masters, STALE), 0);
  cr_assert_eq(aggr_model_set_leader(&model, true, "aggr1", "127.0.0.1:7611", 7), 1);
}

static void setup_none(void) {
  model_setup(NULL);
}

static void setup_m1(void) {
  static char *masters[] = {"m1", NULL};
  model_setup(masters);
}

static void teardown(void) {
  aggr_stage_done(&engine);
  aggr_model_done(&model);
}

/* Starts over with these expected masters (a suite's init already ran). */
static void reset_with_masters(char *const *masters) {
  teardown();
  model_setup(masters);
}

/* A node whose agent said Hello at `at` as this host, with this profile
 * digest (NULL: its role's, no drift). */
static struct aggr_node *hello_as(const char *id, const char *role, const char *hostname,
                                  const char *digest, uint64_t at) {
  struct aggr_node *n = aggr_model_get(&model, id);
  cr_assert_not_null(n);
  const struct mst_profile *p = mst_profile_set_find(&profiles, role);
  const struct aggr_hello_report h = {
      .role = role,
      .hostname = hostname,
      .boot_id = "boot-1",
      .boot_time_usec = at - 100 * USEC_PER_SEC,
      .profile_digest = digest ? digest
                        : p    ? p->digest
                               : "",
  };
  /* Any non-NULL pointer: connected. */
  cr_assert_eq(aggr_model_apply_hello(&model, n, &h, (struct aggr_conn *)n, at), 0);
  cr_assert(n->dirty);
  return n;
}

static struct aggr_node *hello(const char *id, const char *role, uint64_t at) {
  return hello_as(id, role, "host-of-node", NULL, at);
}

/* A node whose agent said Hello at `at` and sent its snapshot (still empty
 * on a new node; the components come as changes, set_comp). */
static struct aggr_node *report(const char *id, const char *role, uint64_t at) {
  struct aggr_node *n = hello(id, role, at);
  if (!n->have_snapshot)
    cr_assert_eq(aggr_node_apply_snapshot(n, NULL, 0), 0);
  return n;
}

static void set_comp(struct aggr_node *n, const char *name, enum mst_state state,
                     const char *output, uint64_t since) {
  const struct aggr_component_report r = {
      .name = name,
      .check = MST_CHECK_EXEC,
      .state = state,
      .since_usec = since,
      .output = output,
      .health = state == MST_STATE_HEALTHY ? 4 : 0,
      .rise = 2,
      .fall = 3,
  };
  n->dirty = false;
  cr_assert_eq(aggr_node_apply_change(n, NULL, &r), 0);
  cr_assert(n->dirty, "a change marks the node dirty");
  cr_assert_eq(aggr_node_find_component(n, name)->state, state);
}

static const struct aggr_reason *find_reason(const struct aggr_reasons *r, const char *node,
                                             const char *component) {
  for (size_t i = 0; i < r->n; i++)
    if ((!node || (r->v[i].node && strcmp(r->v[i].node, node) == 0)) &&
        (component ? r->v[i].component && strcmp(r->v[i].component, component) == 0
                   : !r->v[i].component))
      return &r->v[i];
  return NULL;
}

/* A healthy master m1 (svc, web) and a healthy agent w1 (wsvc) at T0. */
static void healthy_cluster(void) {
  struct aggr_node *m1 = report("m1", "master", T0);
  set_comp(m1, "svc", MST_STATE_HEALTHY, "svc says 0", T0);
  set_comp(m1, "web", MST_STATE_HEALTHY, "HTTP 200", T0);
  struct aggr_node *w1 = report("w1", "agent", T0);
  set_comp(w1, "wsvc", MST_STATE_HEALTHY, "ok", T0);
}

/* --- model ---------------------------------------------------------------- */

TestSuite(model, .init = setup_none, .fini = teardown);

Test(model, nodes_sorted_and_found) {
  const char *ids[] = {"n5", "a1", "m3", "zz", "b0", "m1", "a0"};
  for (size_t i = 0; i < ELEMENTSOF(ids); i++)
    cr_assert_not_null(aggr_model_get(&model, ids[i]));
  cr_assert_eq(model.n_nodes, ELEMENTSOF(ids));
  for (size_t i = 1; i < model.n_nodes; i++)
    cr_assert_lt(strcmp(model.nodes[i - 1]->id, model.nodes[i]->id), 0);
  struct aggr_node *m3 = aggr_model_find(&model, "m3");
  cr_assert_not_null(m3);
  cr_assert_str_eq(m3->id, "m3");
  cr_assert_eq(aggr_model_get(&model, "m3"), m3, "get must not duplicate a node");
  cr_assert_eq(model.n_nodes, ELEMENTSOF(ids));
  cr_assert_null(aggr_model_find(&model, "m2"));
  cr_assert_null(aggr_model_find(&model, ""));
}

Test(model, components_change_and_snapshot) {
  struct aggr_node *n = report("n1", "agent", T0);
  const char *names[] = {"a", "b", "c", "d", "e", "f"};
  for (size_t i = 0; i < ELEMENTSOF(names); i++)
    set_comp(n, names[i], MST_STATE_HEALTHY, names[i], T0);
  cr_assert_eq(n->n_components, 6);
  struct aggr_component *c = aggr_node_find_component(n, "c");
  set_comp(n, "c", MST_STATE_UNHEALTHY, "exit 2", T0 + 1);
  cr_assert_eq(n->n_components, 6, "a change of a known component adds none");
  cr_assert_eq(aggr_node_find_component(n, "c"), c);
  cr_assert_str_eq(c->output, "exit 2");
  cr_assert_eq(c->since_usec, T0 + 1);

  /* A change of another boot is history only. */
  const struct aggr_component_report old = {.name = "g", .state = MST_STATE_UNHEALTHY};
  n->dirty = false;
  cr_assert_eq(aggr_node_apply_change(n, "boot-0", &old), 0);
  cr_assert_null(aggr_node_find_component(n, "g"));
  cr_assert_not(n->dirty);

  /* A snapshot is the truth: what it does not list is gone. */
  const struct aggr_component_report snap[] = {
      {.name = "f", .state = MST_STATE_HEALTHY, .output = "f"},
      {.name = "a", .state = MST_STATE_HEALTHY, .output = "a"},
      {.name = "c", .state = MST_STATE_HEALTHY, .output = "c again"},
  };
  n->dirty = false;
  cr_assert_eq(aggr_node_apply_snapshot(n, snap, ELEMENTSOF(snap)), 0);
  cr_assert_eq(n->n_components, 3);
  cr_assert(n->dirty, "a snapshot must mark the node dirty");
  cr_assert(n->have_snapshot);
  cr_assert_str_eq(n->components[0].name, "a");
  cr_assert_str_eq(n->components[1].name, "c");
  cr_assert_str_eq(n->components[2].name, "f");
  cr_assert_str_eq(n->components[1].output, "c again");
  cr_assert_null(aggr_node_find_component(n, "b"));
  cr_assert_eq(aggr_node_find_component(n, "f"), &n->components[2]);
  /* Appending after a shrink still works (capacity bookkeeping). */
  for (int i = 0; i < 20; i++) {
    char name[16];
    snprintf(name, sizeof(name), "x%d", i);
    set_comp(n, name, MST_STATE_HEALTHY, NULL, T0);
  }
  cr_assert_eq(n->n_components, 23);
  cr_assert_str_eq(n->components[22].name, "x19");
}

struct verdict_case {
  const char *what;
  bool have_snapshot;
  enum mst_state states[3]; /* 0-terminated */
  enum mst_verdict want;
};

Test(model, node_verdicts_from_component_states) {
  static const struct verdict_case cases[] = {
      {"all healthy", true, {MST_STATE_HEALTHY, MST_STATE_HEALTHY}, MST_VERDICT_HEALTHY},
      {"a warning", true, {MST_STATE_HEALTHY, MST_STATE_WARNING}, MST_VERDICT_DEGRADED},
      {"a starting", true, {MST_STATE_STARTING, MST_STATE_WARNING}, MST_VERDICT_STARTING},
      {"an unhealthy", true, {MST_STATE_STARTING, MST_STATE_UNHEALTHY}, MST_VERDICT_UNHEALTHY},
      {"an unknown", true, {MST_STATE_HEALTHY, MST_STATE_UNKNOWN}, MST_VERDICT_UNHEALTHY},
      {"no snapshot yet", false, {MST_STATE_HEALTHY}, MST_VERDICT_STARTING},
      {"no components", true, {0}, MST_VERDICT_HEALTHY},
  };
  for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
    const struct verdict_case *c = &cases[i];
    char id[16];
    snprintf(id, sizeof(id), "n%zu", i);
    struct aggr_node *n = c->have_snapshot ? report(id, "agent", T0) : hello(id, "agent", T0);
    for (size_t k = 0; c->states[k]; k++) {
      char comp[16];
      snprintf(comp, sizeof(comp), "c%zu", k);
      set_comp(n, comp, c->states[k], "out", T0);
    }
    aggr_model_evaluate(&model, &engine, T0 + USEC_PER_SEC);
    cr_expect_eq(n->verdict, c->want, "%s: got %s, want %s", c->what,
                 mst_verdict_to_string(n->verdict), mst_verdict_to_string(c->want));
    if (c->want == MST_VERDICT_HEALTHY)
      cr_expect_eq(n->reasons.n, 0, "%s: a healthy node has no reasons", c->what);
    else
      cr_expect_gt(n->reasons.n, 0, "%s: a %s node needs reasons", c->what,
                   mst_verdict_to_string(c->want));
    if (!c->have_snapshot)
      cr_expect_not_null(find_reason(&n->reasons, id, NULL));
  }
  const struct aggr_reason *r = find_reason(&aggr_model_find(&model, "n5")->reasons, "n5", NULL);
  cr_assert_str_eq(r->message, "n5: waiting for the agent's first snapshot");
}

Test(model, reason_and_root_cause_text) {
  model.have_leader = true;
  struct aggr_node *m1 = report("m1", "master", T0);
  set_comp(m1, "svc", MST_STATE_UNHEALTHY, "exit code 2", T0 + 5);
  set_comp(m1, "web", MST_STATE_HEALTHY, "ok", T0);
  aggr_model_evaluate(&model, &engine, T0 + 10);

  cr_assert_eq(m1->verdict, MST_VERDICT_UNHEALTHY);
  cr_assert_eq(m1->reasons.n, 1);
  cr_assert_str_eq(m1->reasons.v[0].message, "m1: svc is unhealthy: exit code 2");
  cr_assert_str_eq(m1->reasons.v[0].node, "m1");
  cr_assert_str_eq(m1->reasons.v[0].component, "svc");
  cr_assert_str_eq(m1->reasons.v[0].state, "unhealthy");
  cr_assert_eq(m1->root_causes.n, 1);
  cr_assert_str_eq(m1->root_causes.v[0].component, "svc");
  cr_assert_str_eq(m1->root_causes.v[0].message, "exit code 2", "a root cause carries the output");

  /* Warnings and starting components are reasons, never root causes. */
  set_comp(m1, "svc", MST_STATE_WARNING, "slow", T0 + 20);
  set_comp(m1, "web", MST_STATE_STARTING, NULL, T0 + 20);
  aggr_model_evaluate(&model, &engine, T0 + 30);
  cr_assert_eq(m1->verdict, MST_VERDICT_STARTING);
  cr_assert_eq(m1->reasons.n, 2);
  cr_assert_str_eq(m1->reasons.v[0].message, "m1: svc has a warning: slow");
  cr_assert_str_eq(m1->reasons.v[1].message, "m1: web is starting");
  cr_assert_eq(m1->root_causes.n, 0);
}

Test(model, long_output_is_cut_in_reasons) {
  char out[3000];
  memset(out, 'x', sizeof(out) - 1);
  out[sizeof(out) - 1] = 0;
  memcpy(out + 1023, "\xC3\xA9", 2); /* é straddling the 1024-byte cut */
  struct aggr_node *n = report("n1", "agent", T0);
  set_comp(n, "c", MST_STATE_UNHEALTHY, out, T0);
  aggr_model_evaluate(&model, &engine, T0);
  const char *msg = n->reasons.v[0].message;
  const char *prefix = "n1: c is unhealthy: ";
  cr_assert_eq(strncmp(msg, prefix, strlen(prefix)), 0);
  /* Cut back to 1023 bytes rather than split the character. */
  cr_assert_eq(strlen(msg), strlen(prefix) + 1023 + strlen("…"), "%zu", strlen(msg));
  cr_assert_str_eq(msg + strlen(msg) - strlen("x…"), "x…");
  cr_assert_str_eq(n->root_causes.v[0].message, out, "the root cause keeps the whole output");
}

Test(model, root_causes_follow_stage_graph) {
  struct aggr_node *m1 = report("m1", "master", T0);
  set_comp(m1, "svc", MST_STATE_UNHEALTHY, "exit 2", T0);
  set_comp(m1, "web", MST_STATE_UNHEALTHY, "HTTP 503", T0);
  aggr_model_evaluate(&model, &engine, T0);
  cr_assert_eq(m1->root_causes.n, 1);
  cr_assert_str_eq(m1->root_causes.v[0].component, "svc");
  const struct aggr_reason *web = find_reason(&m1->reasons, "m1", "web");
  cr_assert_not_null(web);
  cr_assert_str_eq(web->message, "m1: web is unhealthy: HTTP 503 (blocked by svc)");

  /* With its dependency healthy, web is its own root cause. */
  set_comp(m1, "svc", MST_STATE_HEALTHY, "ok", T0);
  aggr_model_evaluate(&model, &engine, T0);
  cr_assert_eq(m1->root_causes.n, 1);
  cr_assert_str_eq(m1->root_causes.v[0].component, "web");
  cr_assert_str_eq(find_reason(&m1->reasons, "m1", "web")->message,
                   "m1: web is unhealthy: HTTP 503");

  /* A component in no stage is never blocked. */
  set_comp(m1, "svc", MST_STATE_UNKNOWN, NULL, T0);
  set_comp(m1, "extra", MST_STATE_UNHEALTHY, NULL, T0);
  aggr_model_evaluate(&model, &engine, T0);
  cr_assert_eq(m1->root_causes.n, 2);
  cr_assert_not_null(find_reason(&m1->root_causes, "m1", "svc"));
  cr_assert_not_null(find_reason(&m1->root_causes, "m1", "extra"));
  cr_assert_null(find_reason(&m1->root_causes, "m1", "web"));
}

Test(model, cluster_lists_are_bounded_with_totals) {
  /* 150 failing agents: each is a reason and a root cause of the cluster,
   * which lists the first AGGR_CLUSTER_REASONS_MAX and counts them all. */
  healthy_cluster();
  for (int i = 0; i < 150; i++) {
    char id[16];
    snprintf(id, sizeof(id), "w%03d", i);
    struct aggr_node *w = report(id, "agent", T0);
    set_comp(w, "wsvc", MST_STATE_UNHEALTHY, "exit 2", T0);
  }
  aggr_model_evaluate(&model, &engine, T0);
  cr_assert_eq(model.reasons.n, AGGR_CLUSTER_REASONS_MAX);
  cr_assert_eq(model.reasons.n_total, 150);
  cr_assert_eq(model.root_causes.n, AGGR_CLUSTER_REASONS_MAX);
  cr_assert_eq(model.root_causes.n_total, 150);
  cr_assert_str_eq(model.root_causes.v[0].node, "w000");

  /* Back under the bound: everything is listed again. */
  for (int i = 0; i < 100; i++) {
    char id[16];
    snprintf(id, sizeof(id), "w%03d", i);
    set_comp(aggr_model_find(&model, id), "wsvc", MST_STATE_HEALTHY, "ok", T0);
  }
  aggr_model_evaluate(&model, &engine, T0);
  cr_assert_eq(model.reasons.n, 50);
  cr_assert_eq(model.reasons.n_total, 50);
  cr_assert_eq(model.root_causes.n_total, 50);
}

Test(model, unreachable_after_stale_timeout) {
  healthy_cluster();
  struct aggr_node *w1 = aggr_model_find(&model, "w1");
  aggr_model_evaluate(&model, &engine, T0);
  cr_assert_eq(aggr_model_next_stale_usec(&model), T0 + STALE + USEC_PER_MSEC);

  aggr_model_evaluate(&model, &engine, T0 + STALE);
  cr_assert_eq(w1->verdict, MST_VERDICT_HEALTHY, "silent exactly stale_timeout is not silent");

  aggr_node_apply_seen(aggr_model_find(&model, "m1"), T0 + STALE); /* m1 keeps talking */
  aggr_model_evaluate(&model, &engine, T0 + STALE + 1);
  cr_assert_eq(w1->verdict, MST_VERDICT_UNREACHABLE);
  cr_assert_eq(w1->verdict_since_usec, T0 + STALE + 1);
  cr_assert(w1->dirty);
  cr_assert_eq(w1->reasons.n, 1, "the stale components are not reasons of their own");
  cr_assert_str_eq(w1->reasons.v[0].state, "unreachable");
  cr_assert_not_null(strstr(w1->reasons.v[0].message, "w1: unreachable (last seen "), "%s",
                     w1->reasons.v[0].message);
  cr_assert_not_null(strstr(w1->reasons.v[0].message, "30s stale timeout"));
  cr_assert_eq(w1->root_causes.n, 1);
  cr_assert_null(w1->root_causes.v[0].component, "the node itself is the root cause");
  cr_assert_eq(model.verdict, MST_VERDICT_DEGRADED);
  cr_assert_not_null(find_reason(&model.reasons, "w1", NULL));

  /* The reason text does not change while the silence goes on. */
  char *before = strdup(w1->reasons.v[0].message);
  w1->dirty = false;
  aggr_node_apply_seen(aggr_model_find(&model, "m1"), T0 + 10 * STALE);
  aggr_model_evaluate(&model, &engine, T0 + 10 * STALE);
  cr_assert_str_eq(w1->reasons.v[0].message, before);
  cr_assert_not(w1->dirty);
  free(before);

  /* Only m1 can still turn silent. */
  cr_assert_eq(aggr_model_next_stale_usec(&model), T0 + 11 * STALE + USEC_PER_MSEC);

  /* A frame brings it back, without marking the node: evaluation follows
   * the silence turning by itself. */
  aggr_node_apply_seen(w1, T0 + 10 * STALE);
  cr_assert_not(w1->dirty);
  aggr_model_evaluate(&model, &engine, T0 + 10 * STALE);
  cr_assert_eq(w1->verdict, MST_VERDICT_HEALTHY);
}

Test(model, hello_disconnect_restored) {
  struct aggr_node *n = report("n1", "agent", T0);
  set_comp(n, "wsvc", MST_STATE_HEALTHY, "ok", T0);
  cr_assert(n->reported);
  cr_assert_eq(n->first_seen_usec, T0);
  cr_assert_eq(n->conn, (struct aggr_conn *)n);
  cr_assert_str_eq(n->hostname, "host-of-node");

  /* The same boot again keeps the snapshot and the first contact. */
  n->dirty = false;
  hello("n1", "agent", T0 + 5);
  cr_assert(n->have_snapshot);
  cr_assert_eq(n->first_seen_usec, T0);
  cr_assert_eq(n->last_seen_usec, T0 + 5);

  /* A new boot: the components known belong to the old one. */
  const struct aggr_hello_report h = {
      .role = "agent", .hostname = "h2", .boot_id = "boot-2", .profile_digest = "feedface"};
  cr_assert_eq(aggr_model_apply_hello(&model, n, &h, NULL, T0 + 10), 0);
  cr_assert_not(n->have_snapshot);
  cr_assert_str_eq(n->boot_id, "boot-2");
  cr_assert_str_eq(n->hostname, "h2");
  cr_assert_eq(n->boot_time_usec, 0);
  cr_assert_not(n->profile_drift);

  /* Only the stream the node is on disconnects it. */
  hello("n1", "agent", T0 + 20);
  n->dirty = false;
  aggr_node_apply_disconnect(n, (struct aggr_conn *)&model, T0 + 25, false);
  cr_assert_eq(n->conn, (struct aggr_conn *)n);
  cr_assert_not(n->dirty);
  aggr_node_apply_disconnect(n, (struct aggr_conn *)n, T0 + 30, false);
  cr_assert_null(n->conn);
  cr_assert_eq(n->last_seen_usec, T0 + 20, "last_seen stays the last frame's time");
  cr_assert_eq(n->disconnected_usec, T0 + 30);
  cr_assert(n->dirty);

  /* What the database knows of a node from an earlier run. */
  struct aggr_node *r = aggr_model_get(&model, "r1");
  r->dirty = false;
  cr_assert_eq(aggr_node_apply_restored(r, "agent", "h-r1", T0 - 100, T0 - 50), 0);
  cr_assert(r->reported);
  cr_assert(r->dirty);
  cr_assert_str_eq(r->role, "agent");
  cr_assert_str_eq(r->hostname, "h-r1");
  cr_assert_eq(r->first_seen_usec, T0 - 100);
  cr_assert_eq(r->last_seen_usec, T0 - 50);
  aggr_model_evaluate(&model, &engine, T0 + STALE);
  cr_assert_eq(r->verdict, MST_VERDICT_STARTING,
               "silence counts from when this aggregator began to lead, not its old last contact");
  cr_assert_eq(r->last_seen_usec, T0 - 50, "last_seen still shows the last frame known");
  cr_assert_not_null(find_reason(&r->reasons, "r1", NULL));
  aggr_model_evaluate(&model, &engine, 2 * STALE + T0 + 1);
  cr_assert_eq(r->verdict, MST_VERDICT_UNREACHABLE, "silent since the lead began");
}

Test(model, disconnected_is_degraded_then_unreachable_and_history_follows) {
  healthy_cluster();
  struct aggr_node *w1 = aggr_model_find(&model, "w1"), *m1 = aggr_model_find(&model, "m1");
  aggr_model_evaluate(&model, &engine, T0);
  cr_assert_eq(w1->verdict, MST_VERDICT_HEALTHY);

  /* The stream closes: last_seen stays, the node is degraded and says until when. */
  aggr_node_apply_disconnect(w1, w1->conn, T0 + 10, false);
  aggr_model_evaluate(&model, &engine, T0 + 10);
  cr_assert_eq(w1->last_seen_usec, T0);
  cr_assert_eq(w1->verdict, MST_VERDICT_DEGRADED);
  cr_assert_eq(model.verdict, MST_VERDICT_DEGRADED, "the cluster is not plainly healthy");
  const struct aggr_reason *r = find_reason(&w1->reasons, "w1", NULL);
  cr_assert_not_null(r);
  cr_assert_not_null(strstr(r->message, "unless it reconnects"), "%s", r->message);
  cr_assert_eq(aggr_model_next_stale_usec(&model), T0 + STALE + USEC_PER_MSEC);
  size_t n_ev;
  struct aggr_reach_event *ev = aggr_model_take_reach_events(&model, &n_ev);
  cr_assert_eq(n_ev, 0);
  aggr_reach_events_free(ev, n_ev);

  /* Unreachable at last frame + stale_timeout, recorded at that time. */
  aggr_node_apply_seen(m1, T0 + STALE);
  aggr_model_evaluate(&model, &engine, T0 + STALE + USEC_PER_MSEC);
  cr_assert_eq(w1->verdict, MST_VERDICT_UNREACHABLE);
  ev = aggr_model_take_reach_events(&model, &n_ev);
  cr_assert_eq(n_ev, 1);
  cr_assert_eq(ev[0].kind, AGGR_REACH_UNREACHABLE);
  cr_assert_str_eq(ev[0].node_id, "w1");
  cr_assert_eq(ev[0].at_usec, T0 + STALE);
  aggr_reach_events_free(ev, n_ev);

  /* Back with a Hello: reachable again at that frame. */
  hello("w1", "agent", T0 + 2 * STALE);
  aggr_node_apply_seen(m1, T0 + 2 * STALE);
  aggr_model_evaluate(&model, &engine, T0 + 2 * STALE);
  cr_assert_eq(w1->verdict, MST_VERDICT_HEALTHY);
  ev = aggr_model_take_reach_events(&model, &n_ev);
  cr_assert_eq(n_ev, 1);
  cr_assert_eq(ev[0].kind, AGGR_REACH_REACHABLE);
  cr_assert_eq(ev[0].at_usec, T0 + 2 * STALE);
  aggr_reach_events_free(ev, n_ev);

  /* A stream closed for silence is unreachable at once. */
  aggr_node_apply_disconnect(w1, w1->conn, T0 + 2 * STALE + 5, true);
  aggr_model_evaluate(&model, &engine, T0 + 2 * STALE + 5);
  cr_assert_eq(w1->verdict, MST_VERDICT_UNREACHABLE);
}

Test(model, stale_timeout_zero_disables_silence) {
  model.stale_timeout_usec = 0;
  healthy_cluster();
  aggr_model_evaluate(&model, &engine, T0 + 1000 * STALE);
  cr_assert_eq(aggr_model_find(&model, "w1")->verdict, MST_VERDICT_HEALTHY);
  cr_assert_eq(aggr_model_next_stale_usec(&model), UINT64_MAX);
}

Test(model, missing_expected_master) {
  static char *masters[] = {"m1", "m9", NULL};
  reset_with_masters(masters);
  struct aggr_node *m9 = aggr_model_find(&model, "m9");
  cr_assert_not_null(m9);
  cr_assert_str_eq(m9->role, "master");
  cr_assert(m9->expected_master);
  cr_assert_not(m9->reported);

  cr_assert(aggr_model_evaluate(&model, &engine, T0),
            "the first evaluation establishes the verdict");
  cr_assert_eq(m9->verdict, MST_VERDICT_MISSING);
  cr_assert_eq(model.verdict, MST_VERDICT_UNKNOWN, "no agent has reported: no data");
  cr_assert_not_null(find_reason(&model.reasons, NULL, NULL));
  cr_assert_eq(aggr_model_next_stale_usec(&model), UINT64_MAX);

  struct aggr_node *m1 = report("m1", "master", T0);
  set_comp(m1, "svc", MST_STATE_HEALTHY, NULL, T0);
  set_comp(m1, "web", MST_STATE_HEALTHY, NULL, T0);
  cr_assert(aggr_model_evaluate(&model, &engine, T0 + 1));
  cr_assert_eq(m1->verdict, MST_VERDICT_HEALTHY);
  cr_assert_eq(model.verdict, MST_VERDICT_UNHEALTHY);
  const struct aggr_reason *r = find_reason(&model.reasons, "m9", NULL);
  cr_assert_not_null(r);
  cr_assert_str_eq(r->message, "m9: expected master has never reported");
  cr_assert_str_eq(r->state, "missing");
  cr_assert_not_null(find_reason(&model.root_causes, "m9", NULL));
}

Test(model, masters_by_role_when_none_configured) {
  healthy_cluster();
  cr_assert(aggr_model_evaluate(&model, &engine, T0));
  cr_assert_eq(model.verdict, MST_VERDICT_HEALTHY);
  set_comp(aggr_model_find(&model, "m1"), "svc", MST_STATE_UNHEALTHY, "down", T0);
  cr_assert(aggr_model_evaluate(&model, &engine, T0));
  cr_assert_eq(model.verdict, MST_VERDICT_UNHEALTHY, "a reported master counts as expected");
}

Test(model, cluster_verdict_changes) {
  static char *masters[] = {"m1", NULL};
  reset_with_masters(masters);
  healthy_cluster();
  cr_assert(aggr_model_evaluate(&model, &engine, T0 + 1));
  cr_assert_eq(model.verdict, MST_VERDICT_HEALTHY);
  cr_assert_eq(model.verdict_since_usec, T0 + 1);
  cr_assert_eq(model.reasons.n, 0);
  cr_assert_not(aggr_model_evaluate(&model, &engine, T0 + 2), "nothing changed");
  cr_assert_eq(model.verdict_since_usec, T0 + 1);

  struct aggr_node *w1 = aggr_model_find(&model, "w1");
  set_comp(w1, "wsvc", MST_STATE_UNHEALTHY, "exit 2", T0 + 3);
  cr_assert(aggr_model_evaluate(&model, &engine, T0 + 3));
  cr_assert_eq(model.verdict, MST_VERDICT_DEGRADED);
  cr_assert_eq(model.verdict_since_usec, T0 + 3);
  cr_assert_not_null(find_reason(&model.reasons, "w1", "wsvc"));
  cr_assert_not_null(find_reason(&model.root_causes, "w1", "wsvc"));

  /* A different failure with the same verdict is no change. */
  set_comp(w1, "wsvc", MST_STATE_UNKNOWN, "timeout", T0 + 4);
  cr_assert_not(aggr_model_evaluate(&model, &engine, T0 + 4));
  cr_assert_eq(model.verdict_since_usec, T0 + 3);
  cr_assert_str_eq(find_reason(&model.reasons, "w1", "wsvc")->message,
                   "w1: wsvc is in an unknown state: timeout");

  model.have_leader = false;
  cr_assert(aggr_model_evaluate(&model, &engine, T0 + 5));
  cr_assert_eq(model.verdict, MST_VERDICT_UNKNOWN);
  cr_assert_str_eq(model.reasons.v[0].message, "no leader elected");
  cr_assert_null(model.reasons.v[0].node);
}

Test(model, profile_drift_is_a_reason_not_a_verdict) {
  struct aggr_node *m1 = report("m1", "master", T0);
  set_comp(m1, "svc", MST_STATE_HEALTHY, NULL, T0);
  cr_assert_not(m1->profile_drift);
  hello_as("m1", "master", "host-of-node", "abcdef0123456789abcdef", T0);
  cr_assert(m1->profile_drift);
  aggr_model_evaluate(&model, &engine, T0);
  cr_assert_eq(m1->verdict, MST_VERDICT_HEALTHY);
  cr_assert_eq(m1->reasons.n, 1);
  cr_assert_str_eq(m1->reasons.v[0].message,
                   "m1: profile drift: agent digest abcdef012345… differs from aggregator's "
                   "0123456789ab…");
  cr_assert_eq(m1->root_causes.n, 0);
}

Test(model, dirty_only_on_change) {
  healthy_cluster();
  aggr_model_evaluate(&model, &engine, T0);
  struct aggr_node *m1 = aggr_model_find(&model, "m1");
  struct aggr_node *w1 = aggr_model_find(&model, "w1");
  m1->dirty = w1->dirty = false;
  aggr_model_evaluate(&model, &engine, T0 + 1);
  cr_assert_not(m1->dirty, "an evaluation that changed nothing leaves the node clean");
  cr_assert_eq(model.n_derived, 0, "no node changed: none is derived again");
  cr_assert_eq(model.n_explained, 0);
  set_comp(m1, "svc", MST_STATE_UNHEALTHY, "down", T0 + 2);
  aggr_model_evaluate(&model, &engine, T0 + 2);
  cr_assert(m1->dirty, "a verdict change marks the node dirty");
  cr_assert_eq(m1->verdict_since_usec, T0 + 2);
  cr_assert_eq(model.n_derived, 1, "only the changed node is derived again");
  cr_assert_not(w1->dirty);
}

Test(model, check_finds_a_change_not_marked_dirty) {
  healthy_cluster();
  aggr_model_evaluate(&model, &engine, T0);
  cr_assert_eq(aggr_model_check(&model, T0), 0, "a first evaluation derives everything");
  struct aggr_node *m1 = aggr_model_find(&model, "m1");
  m1->dirty = aggr_model_find(&model, "w1")->dirty = false;
  m1->components[0].state = MST_STATE_UNHEALTHY; /* as if the loop forgot to mark it */
  aggr_model_evaluate(&model, &engine, T0 + 1);
  cr_assert_eq(m1->verdict, MST_VERDICT_HEALTHY, "an unmarked change is not seen");
  cr_assert_eq(aggr_model_check(&model, T0 + 1), 1, "but the check finds it");
  cr_assert_eq(m1->verdict, MST_VERDICT_UNHEALTHY, "and corrects the node");
  cr_assert(m1->dirty);
  cr_assert_eq(aggr_model_check(&model, T0 + 1), 0);
}

Test(model, node_conflict_is_a_reason_for_its_window) {
  healthy_cluster();
  aggr_model_evaluate(&model, &engine, T0);
  struct aggr_node *w1 = aggr_model_find(&model, "w1");
  w1->dirty = aggr_model_find(&model, "m1")->dirty = false;

  const uint64_t until = T0 + 10 * USEC_PER_SEC;
  cr_assert_eq(aggr_node_apply_conflict(w1, "aaaa", "bbbb", "127.0.0.2", T0 + 1, until), 1);
  cr_assert(w1->dirty, "a conflict that begins marks the node");
  aggr_model_evaluate(&model, &engine, T0 + 1);
  cr_assert_eq(w1->verdict, MST_VERDICT_DEGRADED, "half of what reports as w1 is not seen");
  cr_assert_eq(model.verdict, MST_VERDICT_DEGRADED);
  cr_assert_eq(w1->reasons.n, 1);
  cr_assert_str_eq(w1->reasons.v[0].message,
                   "w1: two agents report as w1 (spools aaaa and bbbb from 127.0.0.2); keeping "
                   "the first, refusing the other: give each agent its own node_id");
  cr_assert_eq(model.reasons.n, 1, "the cluster names it");
  cr_assert_eq(aggr_model_next_stale_usec(&model), until, "the loop wakes when it runs out");

  /* The same agent retrying: only the window moves, nothing to render. */
  w1->dirty = false;
  cr_assert_eq(aggr_node_apply_conflict(w1, "aaaa", "bbbb", "127.0.0.2", T0 + 2, until + 1), 0);
  cr_assert_not(w1->dirty);
  aggr_model_evaluate(&model, &engine, until);
  cr_assert_eq(w1->verdict, MST_VERDICT_DEGRADED, "still within the moved window");
  cr_assert_eq(aggr_model_check(&model, until), 0);

  /* It runs out by the clock alone, as silence does. */
  w1->dirty = false;
  aggr_model_evaluate(&model, &engine, until + 1);
  cr_assert_eq(w1->verdict, MST_VERDICT_HEALTHY);
  cr_assert_eq(w1->reasons.n, 0);
  cr_assert_eq(model.verdict, MST_VERDICT_HEALTHY);
  cr_assert_eq(aggr_model_check(&model, until + 1), 0, "the incremental evaluation followed it");
}

Test(model, starts_with_no_leader) {
  struct aggr_model m;
  cr_assert_eq(aggr_model_init(&m, &profiles, NULL, STALE), 0);
  cr_assert_not(m.is_leader, "nothing leads before the election says so");
  cr_assert_not(m.have_leader);
  cr_assert_null(m.leader_id);
  cr_assert_null(m.leader_http);
  aggr_model_done(&m);
}

Test(model, set_leader) {
  /* model_setup made this aggregator the leader. */
  cr_assert(model.is_leader);
  cr_assert(model.have_leader);
  cr_assert_str_eq(model.leader_id, "aggr1");
  cr_assert_str_eq(model.leader_http, "127.0.0.1:7611");
  cr_assert_eq(model.epoch, 7);
  cr_assert_eq(aggr_model_set_leader(&model, true, "aggr1", "127.0.0.1:7611", 7), 0,
               "the same again changes nothing");

  /* Another aggregator leads. The strings are copied. */
  char id[] = "aggr2", http[] = "[fe80::1%eth0]:7611";
  cr_assert_eq(aggr_model_set_leader(&model, false, id, http, 8), 1);
  id[0] = http[0] = 'X';
  cr_assert_not(model.is_leader);
  cr_assert(model.have_leader);
  cr_assert_str_eq(model.leader_id, "aggr2");
  cr_assert_str_eq(model.leader_http, "[fe80::1%eth0]:7611");
  cr_assert_eq(model.epoch, 8);

  /* The model's own strings may be passed back in. */
  cr_assert_eq(aggr_model_set_leader(&model, false, model.leader_id, model.leader_http, 9), 1);
  cr_assert_str_eq(model.leader_id, "aggr2");
  cr_assert_str_eq(model.leader_http, "[fe80::1%eth0]:7611");

  /* Each field alone is a change. */
  cr_assert_eq(aggr_model_set_leader(&model, false, "aggr2", "h:1", 9), 1);
  cr_assert_eq(aggr_model_set_leader(&model, false, "aggr3", "h:1", 9), 1);
  cr_assert_eq(aggr_model_set_leader(&model, false, "aggr3", "h:1", 10), 1);
  cr_assert_eq(aggr_model_set_leader(&model, false, "aggr3", "h:1", 10), 0);

  /* What cannot go in a Location header is recorded as unknown. */
  static const char *const bad[] = {"",       "h:1/x", "h:1\r\nX-Evil: 1", "h :1",  "h\"1",
                                    "*:7611", ":7611", "user@h:1",         "h:1?q", "h\xc3\xbc:1"};
  for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
    cr_assert_geq(aggr_model_set_leader(&model, false, "aggr3", bad[i], 10), 0);
    cr_assert_null(model.leader_http, "\"%s\" was taken", bad[i]);
    cr_assert(model.have_leader, "the leader's id is still known");
    cr_assert_eq(aggr_model_set_leader(&model, false, "aggr3", "h:1", 10), 1);
  }

  /* No leader known: a candidate, or ZooKeeper unreachable. */
  cr_assert_eq(aggr_model_set_leader(&model, false, NULL, NULL, 0), 1);
  cr_assert_not(model.is_leader);
  cr_assert_not(model.have_leader);
  cr_assert_null(model.leader_id);
  cr_assert_null(model.leader_http);
  aggr_model_evaluate(&model, &engine, T0);
  cr_assert_eq(model.verdict, MST_VERDICT_UNKNOWN);
  const struct aggr_reason *why = find_reason(&model.reasons, NULL, NULL);
  cr_assert_not_null(why);
  cr_assert_str_eq(why->message, "no leader elected");

  /* A leader with nothing to advertise (standalone, no HTTP address). */
  cr_assert_eq(aggr_model_set_leader(&model, true, "aggr1", NULL, 11), 1);
  cr_assert(model.is_leader);
  cr_assert(model.have_leader);
  cr_assert_null(model.leader_http);
}

/* --- views ---------------------------------------------------------------- */

static struct aggr_views *views;

static void view_setup(void) {
  setup_m1();
  views = aggr_views_new();
  cr_assert_not_null(views);
}

static void view_teardown(void) {
  aggr_views_free(views);
  teardown();
}

TestSuite(view, .init = view_setup, .fini = view_teardown);

/* Parses a body; checks its "index" equals the body's index. */
static json_t *parse_body(const struct aggr_body *b) {
  json_error_t err;
  cr_assert_eq(strlen(b->data), b->len);
  json_t *j = json_loadb(b->data, b->len, 0, &err);
  cr_assert_not_null(j, "body is not JSON: %s: %s", err.text, b->data);
  cr_assert_eq((uint64_t)json_integer_value(json_object_get(j, "index")), b->index);
  return j;
}

static const struct aggr_view_node *view_node(const struct aggr_view *v, const char *id) {
  const struct aggr_view_node *e = aggr_view_find_node(v, id);
  cr_assert_not_null(e, "no node %s in the view", id);
  return e;
}

static struct aggr_view *publish(bool ready, int want) {
  aggr_model_evaluate(&model, &engine, T0 + 1);
  int r = aggr_view_publish(views, &model, ready);
  cr_assert_eq(r, want, "publish returned %d, want %d", r, want);
  struct aggr_view *v = aggr_view_acquire(views);
  cr_assert_not_null(v);
  return v;
}

Test(view, nothing_before_first_publish) {
  cr_assert_null(aggr_view_acquire(views));
  aggr_view_release(NULL);
}

Test(view, index_semantics) {
  /* Every view is held to the end: comparing with a released one would read
   * freed memory once a publish reaps it. */
  healthy_cluster();
  struct aggr_view *v1 = publish(true, 1);
  uint64_t i1 = v1->index;
  cr_assert_eq(v1->health->index, i1);
  cr_assert_eq(v1->nodes->index, i1);
  cr_assert_eq(view_node(v1, "m1")->detail->index, i1);
  cr_assert_eq(aggr_model_find(&model, "m1")->index, i1);
  cr_assert_not(aggr_model_find(&model, "m1")->dirty, "publish clears dirty");

  /* Nothing changed: no new view, no index moved. */
  struct aggr_view *v2 = publish(true, 0);
  cr_assert_eq(v2, v1);

  /* Dirty but the same bytes: still nothing. */
  aggr_model_find(&model, "m1")->dirty = true;
  aggr_model_find(&model, "w1")->dirty = true;
  struct aggr_view *v3 = publish(true, 0);
  cr_assert_eq(v3, v1);
  cr_assert_eq(aggr_model_find(&model, "m1")->index, i1);

  /* A change only the node's own body shows (a healthy component's output):
   * that node's index moves; the list, the health and w1 keep theirs. */
  set_comp(aggr_model_find(&model, "m1"), "svc", MST_STATE_HEALTHY, "svc says 0 again", T0);
  struct aggr_view *v4 = publish(true, 1);
  cr_assert_gt(v4->index, i1);
  cr_assert_eq(view_node(v4, "m1")->detail->index, v4->index);
  cr_assert_eq(aggr_model_find(&model, "m1")->index, v4->index);
  cr_assert_eq(view_node(v4, "w1")->detail->index, i1);
  cr_assert_eq(view_node(v4, "w1")->detail, view_node(v1, "w1")->detail, "clean nodes share");
  cr_assert_eq(v4->nodes->index, i1, "the list's bytes did not change");
  cr_assert_eq(v4->health->index, i1, "the health's bytes did not change");

  /* A verdict change moves the node, the list and the health. */
  set_comp(aggr_model_find(&model, "w1"), "wsvc", MST_STATE_UNHEALTHY, "exit 2", T0);
  struct aggr_view *v5 = publish(true, 1);
  cr_assert_eq(v5->index, v4->index + 1, "one increment per publish");
  cr_assert_eq(view_node(v5, "w1")->detail->index, v5->index);
  cr_assert_eq(view_node(v5, "m1")->detail->index, v4->index);
  cr_assert_eq(v5->nodes->index, v5->index);
  cr_assert_eq(v5->health->index, v5->index);

  /* Readiness alone makes a new view but moves no index. */
  struct aggr_view *v6 = publish(false, 1);
  cr_assert_not(v6->ready);
  cr_assert_eq(v6->index, v5->index);
  cr_assert_eq(v6->health, v5->health);

  /* A new node moves the list and the health (counts). */
  report("w2", "agent", T0);
  struct aggr_view *v7 = publish(false, 1);
  cr_assert_eq(v7->index, v5->index + 1);
  cr_assert_eq(v7->nodes->index, v7->index);
  cr_assert_eq(v7->n_nodes, 3);

  /* Held views stay intact until released (v2 and v3 are v1). */
  struct aggr_view *held[] = {v1, v2, v3, v4, v5, v6, v7};
  for (size_t i = 0; i < ELEMENTSOF(held); i++)
    aggr_view_release(held[i]);
}

Test(view, heartbeats_refresh_last_seen_coarsely) {
  healthy_cluster();
  struct aggr_view *v1 = publish(true, 1);
  struct aggr_node *w1 = aggr_model_find(&model, "w1");

  /* Heartbeats move last_seen without marking the node dirty. */
  aggr_node_apply_seen(w1, T0 + AGGR_VIEW_LAST_SEEN_REFRESH_USEC);
  cr_assert_not(w1->dirty);
  struct aggr_view *v2 = publish(true, 0);
  cr_assert_eq(v2, v1, "a small last_seen move re-renders nothing");

  aggr_node_apply_seen(w1, T0 + AGGR_VIEW_LAST_SEEN_REFRESH_USEC + 1000);
  struct aggr_view *v3 = publish(true, 1);
  cr_assert_eq(view_node(v3, "w1")->detail->index, v3->index);
  cr_assert_eq(view_node(v3, "m1")->detail->index, v1->index);
  cr_assert_eq(v3->nodes->index, v3->index, "the list shows last_seen too");
  json_t *j = parse_body(view_node(v3, "w1")->detail);
  cr_assert_str_eq(json_string_value(json_object_get(j, "last_seen")), "2023-11-14T22:13:25.001Z");
  json_decref(j);
  aggr_view_release(v1);
  aggr_view_release(v2);
  aggr_view_release(v3);
}

Test(view, health_body) {
  healthy_cluster();
  set_comp(aggr_model_find(&model, "w1"), "wsvc", MST_STATE_UNHEALTHY, "exit 2", T0 + 3);
  struct aggr_view *v = publish(true, 1);
  json_t *h = parse_body(v->health);
  cr_assert_str_eq(json_string_value(json_object_get(h, "verdict")), "degraded");
  cr_assert_str_eq(json_string_value(json_object_get(h, "since")), "2023-11-14T22:13:20.000Z");
  json_t *reasons = json_object_get(h, "reasons");
  cr_assert_eq(json_array_size(reasons), 1);
  json_t *r0 = json_array_get(reasons, 0);
  cr_assert_str_eq(json_string_value(json_object_get(r0, "node")), "w1");
  cr_assert_str_eq(json_string_value(json_object_get(r0, "component")), "wsvc");
  cr_assert_str_eq(json_string_value(json_object_get(r0, "state")), "unhealthy");
  cr_assert_str_eq(json_string_value(json_object_get(r0, "message")),
                   "w1: wsvc is unhealthy: exit 2");
  json_t *roots = json_object_get(h, "root_causes");
  cr_assert_eq(json_array_size(roots), 1);
  json_t *rc = json_array_get(roots, 0);
  cr_assert_str_eq(json_string_value(json_object_get(rc, "output")), "exit 2");
  cr_assert_str_eq(json_string_value(json_object_get(rc, "since")), "2023-11-14T22:13:20.000Z");
  json_t *counts = json_object_get(h, "counts");
  cr_assert_eq(json_integer_value(json_object_get(json_object_get(counts, "master"), "healthy")),
               1);
  cr_assert_eq(json_integer_value(json_object_get(json_object_get(counts, "agent"), "unhealthy")),
               1);
  cr_assert_null(json_object_get(json_object_get(counts, "agent"), "healthy"));
  json_t *leader = json_object_get(h, "leader");
  cr_assert_str_eq(json_string_value(json_object_get(leader, "id")), "aggr1");
  cr_assert_eq(json_integer_value(json_object_get(leader, "epoch")), 7);
  json_decref(h);
  aggr_view_release(v);
}

Test(view, node_list_body) {
  static char *masters[] = {"m1", "m9", NULL};
  reset_with_masters(masters);
  healthy_cluster();
  struct aggr_view *v = publish(true, 1);
  json_t *j = parse_body(v->nodes);
  json_t *nodes = json_object_get(j, "nodes");
  cr_assert_eq(json_array_size(nodes), 3);
  const char *want_ids[] = {"m1", "m9", "w1"};
  for (size_t i = 0; i < 3; i++)
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(nodes, i), "id")),
                     want_ids[i]);

  json_t *m1 = json_array_get(nodes, 0);
  cr_assert_str_eq(json_string_value(json_object_get(m1, "verdict")), "healthy");
  cr_assert_str_eq(json_string_value(json_object_get(m1, "role")), "master");
  cr_assert_str_eq(json_string_value(json_object_get(m1, "hostname")), "host-of-node");
  cr_assert_str_eq(json_string_value(json_object_get(m1, "boot_id")), "boot-1");
  cr_assert_str_eq(json_string_value(json_object_get(m1, "last_seen")), "2023-11-14T22:13:20.000Z");
  cr_assert(json_is_true(json_object_get(m1, "connected")));
  cr_assert(json_is_false(json_object_get(m1, "profile_drift")));
  json_t *st = json_object_get(m1, "startup");
  cr_assert_eq(json_integer_value(json_object_get(st, "percent")), 100);
  cr_assert_str_eq(json_string_value(json_object_get(st, "stage")), "serve");
  cr_assert_str_eq(json_string_value(json_object_get(st, "state")), "done");

  json_t *m9 = json_array_get(nodes, 1);
  cr_assert_str_eq(json_string_value(json_object_get(m9, "verdict")), "missing");
  cr_assert(json_is_false(json_object_get(m9, "connected")));
  cr_assert(json_is_null(json_object_get(m9, "last_seen")));
  cr_assert_str_eq(json_string_value(json_object_get(json_object_get(m9, "startup"), "state")),
                   "unknown");
  json_decref(j);
  aggr_view_release(v);
}

Test(view, node_detail_body_and_live_elapsed) {
  struct aggr_node *m1 = report("m1", "master", T0);
  set_comp(m1, "svc", MST_STATE_HEALTHY, "svc says 0", m1->boot_time_usec + 10 * USEC_PER_SEC);
  set_comp(m1, "web", MST_STATE_STARTING, NULL, T0);
  struct aggr_view *v = publish(true, 1);
  const struct aggr_body *b = view_node(v, "m1")->detail;
  cr_assert_neq(b->live_at, SIZE_MAX, "a starting node's elapsed is live");

  char *live;
  size_t live_len;
  cr_assert_eq(aggr_body_live_copy(b, m1->boot_time_usec + 42 * USEC_PER_SEC + 5, &live, &live_len),
               1);
  json_error_t err;
  json_t *j = json_loadb(live, live_len, 0, &err);
  cr_assert_not_null(j, "%s: %s", err.text, live);
  free(live);

  cr_assert_str_eq(json_string_value(json_object_get(j, "id")), "m1");
  cr_assert_str_eq(json_string_value(json_object_get(j, "verdict")), "starting");
  json_t *comps = json_object_get(j, "components");
  cr_assert_eq(json_array_size(comps), 2);
  json_t *svc = json_array_get(comps, 0);
  cr_assert_str_eq(json_string_value(json_object_get(svc, "name")), "svc");
  cr_assert_str_eq(json_string_value(json_object_get(svc, "check")), "exec");
  cr_assert_str_eq(json_string_value(json_object_get(svc, "state")), "healthy");
  cr_assert_str_eq(json_string_value(json_object_get(svc, "health")), "4/4");
  cr_assert_eq(json_integer_value(json_object_get(svc, "rise")), 2);
  cr_assert_eq(json_integer_value(json_object_get(svc, "fall")), 3);
  cr_assert(json_is_null(json_object_get(json_array_get(comps, 1), "output")));

  json_t *st = json_object_get(j, "startup");
  cr_assert_eq(json_integer_value(json_object_get(st, "percent")), 50);
  cr_assert_eq(json_integer_value(json_object_get(st, "elapsed")), 42);
  cr_assert(json_is_null(json_object_get(st, "eta_seconds")));
  cr_assert_str_eq(json_string_value(json_object_get(st, "waiting_on")), "serve");
  cr_assert_str_eq(json_string_value(json_object_get(st, "boot_id")), "boot-1");
  json_t *stages = json_object_get(st, "stages");
  cr_assert_eq(json_array_size(stages), 2);
  cr_assert_str_eq(json_string_value(json_object_get(json_array_get(stages, 0), "state")), "done");
  cr_assert_str_eq(json_string_value(json_object_get(json_array_get(stages, 1), "state")),
                   "in_progress");
  cr_assert_eq(json_array_size(json_object_get(j, "reasons")), 1);
  cr_assert_eq(json_array_size(json_object_get(j, "root_causes")), 0);
  json_decref(j);
  aggr_view_release(v);

  /* Once done, elapsed is fixed: boot to the last stage's completion. */
  set_comp(m1, "web", MST_STATE_HEALTHY, "ok", m1->boot_time_usec + 70 * USEC_PER_SEC);
  v = publish(true, 1);
  b = view_node(v, "m1")->detail;
  cr_assert_eq(b->live_at, SIZE_MAX);
  cr_assert_eq(aggr_body_live_copy(b, T0, &live, &live_len), 0);
  j = parse_body(b);
  cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "startup"), "elapsed")), 70);
  json_decref(j);
  aggr_view_release(v);
}

Test(view, invalid_utf8_is_repaired) {
  struct aggr_node *n = hello_as("n1", "agent", "h\x80st\"quote", NULL, T0);
  set_comp(n, "wsvc", MST_STATE_UNHEALTHY, "bad \xff\xfe bytes \xC3", T0);
  struct aggr_view *v = publish(true, 1);
  json_t *j = parse_body(view_node(v, "n1")->detail);
  cr_assert_str_eq(json_string_value(json_object_get(j, "hostname")), "h\xEF\xBF\xBDst\"quote");
  cr_assert_str_eq(json_string_value(json_object_get(
                       json_array_get(json_object_get(j, "components"), 0), "output")),
                   "bad \xEF\xBF\xBD\xEF\xBF\xBD bytes \xEF\xBF\xBD");
  json_decref(j);
  json_decref(parse_body(v->health));
  json_decref(parse_body(v->nodes));
  aggr_view_release(v);
}

Test(view, control_characters_are_escaped) {
  struct aggr_node *n = report("n1", "agent", T0);
  set_comp(n, "wsvc", MST_STATE_UNHEALTHY, "a\"b\\c\n\t\x01\x1f\x7f/", T0);
  struct aggr_view *v = publish(true, 1);
  cr_assert_not_null(strstr(view_node(v, "n1")->detail->data,
                            "\"output\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\x7f/\""),
                     "%s", view_node(v, "n1")->detail->data);
  json_decref(parse_body(view_node(v, "n1")->detail));
  aggr_view_release(v);
}

/* Whatever bytes agents send, every body stays valid JSON. */
Test(view, random_agent_text_gives_valid_json) {
  unsigned seed = 12345;
  for (int round = 0; round < 200; round++) {
    char text[4][64];
    for (int t = 0; t < 4; t++) {
      size_t len = 1 + (size_t)rand_r(&seed) % 63;
      for (size_t i = 0; i < len; i++)
        text[t][i] = (char)(1 + rand_r(&seed) % 255); /* any byte but NUL */
      text[t][len] = 0;
    }
    struct aggr_node *n = hello_as(text[0], text[1], text[2], NULL, T0);
    set_comp(n, text[3], MST_STATE_UNHEALTHY, text[2], T0);
  }
  struct aggr_view *v = publish(true, 1);
  json_decref(parse_body(v->health));
  json_t *list = parse_body(v->nodes);
  cr_assert_eq(json_array_size(json_object_get(list, "nodes")), model.n_nodes);
  json_decref(list);
  for (size_t i = 0; i < v->n_nodes; i++)
    json_decref(parse_body(v->node_v[i].detail));
  for (size_t i = 0; i < model.n_nodes; i++) {
    char *s = aggr_reasons_to_json(&model.nodes[i]->reasons);
    json_error_t err;
    json_t *j = json_loads(s, 0, &err);
    cr_assert_not_null(j, "%s: %s", err.text, s);
    json_decref(j);
    free(s);
  }
  aggr_view_release(v);
}

Test(view, reasons_to_json) {
  struct aggr_reasons empty = {0};
  char *s = aggr_reasons_to_json(&empty);
  cr_assert_str_eq(s, "[]");
  free(s);
  struct aggr_reason r = {
      .node = "m1", .component = NULL, .state = "missing", .message = "m1: \"x\""};
  struct aggr_reasons one = {.v = &r, .n = 1};
  s = aggr_reasons_to_json(&one);
  cr_assert_str_eq(s,
                   "[{\"node\":\"m1\",\"component\":null,\"state\":\"missing\",\"message\":\"m1: "
                   "\\\"x\\\"\",\"blocked_by\":[],\"blocked_by_total\":0}]");
  free(s);
}

Test(view, retired_views_live_until_released) {
  healthy_cluster();
  struct aggr_view *v1 = publish(true, 1);
  char *copy = strdup(v1->health->data);

  set_comp(aggr_model_find(&model, "w1"), "wsvc", MST_STATE_UNHEALTHY, "exit 2", T0);
  struct aggr_view *v2 = publish(true, 1);
  cr_assert_neq(v1, v2);
  cr_assert_eq(aggr_views_n_retired(views), 1, "v1 is still held");
  aggr_views_reap(views);
  cr_assert_eq(aggr_views_n_retired(views), 1);
  cr_assert_str_eq(v1->health->data, copy, "a held view does not change");

  aggr_view_release(v1);
  aggr_views_reap(views);
  cr_assert_eq(aggr_views_n_retired(views), 0);
  aggr_view_release(v2);
  free(copy);
}

/* Parses a body with no index (readyz, a follower's 307). */
static json_t *parse_plain(const char *data, size_t len) {
  json_error_t err;
  cr_assert_eq(strlen(data), len);
  json_t *j = json_loadb(data, len, 0, &err);
  cr_assert_not_null(j, "not JSON: %s: %s", err.text, data);
  return j;
}

static void assert_readyz(const struct aggr_view *v, bool ready, const char *role,
                          const char *leader_id, const char *leader_http, uint64_t epoch) {
  json_t *j = parse_plain(v->readyz, v->readyz_len);
  cr_assert_eq(json_is_true(json_object_get(j, "ready")), ready);
  cr_assert_str_eq(json_string_value(json_object_get(j, "role")), role);
  json_t *leader = json_object_get(j, "leader");
  if (!leader_id) {
    cr_assert(json_is_null(leader), "leader: %s", v->readyz);
  } else {
    cr_assert_str_eq(json_string_value(json_object_get(leader, "id")), leader_id);
    if (leader_http)
      cr_assert_str_eq(json_string_value(json_object_get(leader, "http")), leader_http);
    else
      cr_assert(json_is_null(json_object_get(leader, "http")));
    cr_assert_eq((uint64_t)json_integer_value(json_object_get(leader, "epoch")), epoch);
    cr_assert_eq(json_object_size(leader), 3);
  }
  cr_assert_eq(json_object_size(j), 3);
  json_decref(j);
}

Test(view, leader_carries_election) {
  healthy_cluster();
  struct aggr_view *v = publish(true, 1);
  cr_assert(v->is_leader);
  cr_assert(v->have_leader);
  cr_assert_str_eq(v->leader_id, "aggr1");
  cr_assert_str_eq(v->leader_http, "127.0.0.1:7611");
  cr_assert_eq(v->epoch, 7);
  cr_assert_null(v->not_leader, "a leader redirects nowhere");
  assert_readyz(v, true, "leader", "aggr1", "127.0.0.1:7611", 7);
  aggr_view_release(v);

  v = publish(false, 1);
  assert_readyz(v, false, "leader", "aggr1", "127.0.0.1:7611", 7);
  aggr_view_release(v);
}

Test(view, follower_carries_election) {
  healthy_cluster();
  struct aggr_view *v1 = publish(true, 1);

  /* Stepping down to a known leader: a new view. The health body shows the
   * leader's id and epoch, so its index moves; node bodies do not show the
   * leader and are shared. */
  cr_assert_eq(aggr_model_set_leader(&model, false, "aggr2", "10.0.0.2:7611", 8), 1);
  struct aggr_view *v2 = publish(true, 1);
  cr_assert_not(v2->is_leader);
  cr_assert(v2->have_leader);
  cr_assert_str_eq(v2->leader_id, "aggr2");
  cr_assert_str_eq(v2->leader_http, "10.0.0.2:7611");
  cr_assert_eq(v2->epoch, 8);
  cr_assert_eq(v2->index, v1->index + 1);
  cr_assert_eq(v2->health->index, v2->index);
  cr_assert_eq(view_node(v2, "m1")->detail, view_node(v1, "m1")->detail);
  cr_assert_eq(v2->nodes, v1->nodes);
  assert_readyz(v2, true, "follower", "aggr2", "10.0.0.2:7611", 8);
  json_t *j = parse_plain(v2->not_leader, v2->not_leader_len);
  json_t *e = json_object_get(j, "error");
  cr_assert_str_eq(json_string_value(json_object_get(e, "code")), "not_leader");
  cr_assert_str_eq(json_string_value(json_object_get(e, "message")),
                   "this aggregator is a follower; the leader is at 10.0.0.2:7611");
  json_decref(j);
  /* The leader's own view is untouched. */
  cr_assert(v1->is_leader);
  cr_assert_str_eq(v1->leader_id, "aggr1");

  /* Only the leader's HTTP address moves: a new view, no index moved. */
  cr_assert_eq(aggr_model_set_leader(&model, false, "aggr2", "10.0.0.3:7611", 8), 1);
  struct aggr_view *v3 = publish(true, 1);
  cr_assert_neq(v3, v2);
  cr_assert_eq(v3->index, v2->index);
  cr_assert_eq(v3->health, v2->health);
  cr_assert_str_eq(v3->leader_http, "10.0.0.3:7611");
  cr_assert_not_null(strstr(v3->not_leader, "the leader is at 10.0.0.3:7611"));
  cr_assert_str_eq(v2->leader_http, "10.0.0.2:7611", "a held view does not change");

  /* Nothing changed: no new view. */
  struct aggr_view *v4 = publish(true, 0);
  cr_assert_eq(v4, v3);

  /* A known leader without an HTTP address: nowhere to redirect to. */
  cr_assert_eq(aggr_model_set_leader(&model, false, "aggr2", NULL, 8), 1);
  struct aggr_view *v5 = publish(true, 1);
  cr_assert(v5->have_leader);
  cr_assert_null(v5->leader_http);
  cr_assert_null(v5->not_leader);
  assert_readyz(v5, true, "follower", "aggr2", NULL, 8);

  /* No leader known: the health body says so, readyz has leader null. */
  cr_assert_eq(aggr_model_set_leader(&model, false, NULL, NULL, 0), 1);
  struct aggr_view *v6 = publish(true, 1);
  cr_assert_not(v6->is_leader);
  cr_assert_not(v6->have_leader);
  cr_assert_null(v6->leader_id);
  cr_assert_null(v6->leader_http);
  cr_assert_null(v6->not_leader);
  assert_readyz(v6, true, "follower", NULL, NULL, 0);
  j = parse_body(v6->health);
  cr_assert_str_eq(json_string_value(json_object_get(j, "verdict")), "unknown");
  cr_assert(json_is_null(json_object_get(json_object_get(j, "leader"), "id")));
  json_decref(j);

  /* Leading again. */
  cr_assert_eq(aggr_model_set_leader(&model, true, "aggr1", "127.0.0.1:7611", 9), 1);
  struct aggr_view *v7 = publish(true, 1);
  cr_assert(v7->is_leader);
  cr_assert_null(v7->not_leader);
  assert_readyz(v7, true, "leader", "aggr1", "127.0.0.1:7611", 9);

  struct aggr_view *held[] = {v1, v2, v3, v4, v5, v6, v7};
  for (size_t i = 0; i < ELEMENTSOF(held); i++)
    aggr_view_release(held[i]);
}

Test(view, election_text_is_escaped) {
  /* Ids come from znodes: whatever they hold, the bodies stay JSON. */
  cr_assert_eq(aggr_model_set_leader(&model, false, "a\"b\\c\n\xff", "h:1", 3), 1);
  struct aggr_view *v = publish(true, 1);
  json_t *j = parse_plain(v->readyz, v->readyz_len);
  cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "leader"), "id")),
                   "a\"b\\c\n\xef\xbf\xbd");
  json_decref(j);
  json_decref(parse_plain(v->not_leader, v->not_leader_len));
  aggr_view_release(v);
}

struct reader {
  pthread_t thread;
  atomic_bool *stop;
  struct aggr_views *views;
  unsigned long reads;
  bool bad;
};

static void *reader_run(void *arg) {
  struct reader *r = arg;
  uint64_t last = 0;
  while (!atomic_load(r->stop)) {
    struct aggr_view *v = aggr_view_acquire(r->views);
    if (!v)
      continue;
    /* Indexes never go backwards, and a body's bytes are intact. */
    if (v->index < last || v->health->len != strlen(v->health->data) ||
        v->health->data[v->health->len - 1] != '}')
      r->bad = true;
    last = v->index;
    const struct aggr_view_node *n = aggr_view_find_node(v, "w1");
    if (!n || n->detail->data[0] != '{')
      r->bad = true;
    aggr_view_release(v);
    r->reads++;
  }
  return NULL;
}

Test(view, concurrent_readers) {
  healthy_cluster();
  cr_assert_eq(aggr_view_publish(views, &model, true), 1);
  atomic_bool stop = false;
  struct reader readers[2] = {{.stop = &stop, .views = views}, {.stop = &stop, .views = views}};
  for (size_t i = 0; i < ELEMENTSOF(readers); i++)
    cr_assert_eq(pthread_create(&readers[i].thread, NULL, reader_run, &readers[i]), 0);

  struct aggr_node *w1 = aggr_model_find(&model, "w1");
  for (int i = 0; i < 3000; i++) {
    char out[32];
    snprintf(out, sizeof(out), "run %d", i);
    set_comp(w1, "wsvc", i % 2 ? MST_STATE_UNHEALTHY : MST_STATE_HEALTHY, out, T0 + i);
    aggr_model_evaluate(&model, &engine, T0 + (uint64_t)i);
    cr_assert_eq(aggr_view_publish(views, &model, true), 1);
  }
  atomic_store(&stop, true);
  for (size_t i = 0; i < ELEMENTSOF(readers); i++) {
    pthread_join(readers[i].thread, NULL);
    cr_expect_not(readers[i].bad, "reader %zu saw a broken view", i);
    cr_expect_gt(readers[i].reads, 0);
  }
  aggr_views_reap(views);
  cr_assert_eq(aggr_views_n_retired(views), 0, "every released view is freed");
}

/* --- descriptions and the leader component (issue 18) ------------------------ */

/* A healthy snapshot entry with this description and display name. */
static struct aggr_component_report described(const char *name, const char *description,
                                              const char *display_name) {
  return (struct aggr_component_report){.name = name,
                                        .state = MST_STATE_HEALTHY,
                                        .output = "",
                                        .description = description,
                                        .display_name = display_name};
}

Test(model, snapshot_describes_components_and_changes_keep_it) {
  struct aggr_node *n = report("n1", "agent", T0);
  const struct aggr_component_report snap[] = {
      described("mesos", "distributed systems kernel agent", "Mesos Agent"),
      described("plain", "", ""),
  };
  cr_assert_eq(aggr_node_apply_snapshot(n, snap, ELEMENTSOF(snap)), 0);
  struct aggr_component *c = aggr_node_find_component(n, "mesos");
  cr_assert_str_eq(c->description, "distributed systems kernel agent");
  cr_assert_str_eq(c->display_name, "Mesos Agent");
  cr_assert_null(aggr_node_find_component(n, "plain")->description, "\"\": not known");
  cr_assert_null(aggr_node_find_component(n, "plain")->display_name);

  /* A change says nothing of them: they stay. */
  set_comp(n, "mesos", MST_STATE_UNHEALTHY, "failed", T0 + 1);
  cr_assert_str_eq(c->description, "distributed systems kernel agent");
  cr_assert_str_eq(c->display_name, "Mesos Agent");

  /* A later snapshot without them (the profile lost its keys): not known. */
  const struct aggr_component_report again = described("mesos", "", "");
  cr_assert_eq(aggr_node_apply_snapshot(n, &again, 1), 0);
  c = aggr_node_find_component(n, "mesos");
  cr_assert_null(c->description);
  cr_assert_null(c->display_name);
}

Test(model, leader_component_says_who_leads_and_never_counts_for_health) {
  /* Each Criterion test runs in its own process: the fixture may change. */
  master_profile.leader_component = "leads";
  reset_with_masters(NULL);
  healthy_cluster();
  struct aggr_node *m1 = aggr_model_find(&model, "m1");
  struct aggr_node *m2 = report("m2", "master", T0);
  set_comp(m2, "svc", MST_STATE_HEALTHY, "", T0);
  set_comp(m2, "web", MST_STATE_HEALTHY, "", T0);
  set_comp(m1, "leads", MST_STATE_HEALTHY, "HTTP 200", T0);
  set_comp(m2, "leads", MST_STATE_UNHEALTHY, "HTTP 307 (expected 200)", T0);
  aggr_model_evaluate(&model, &engine, T0);
  cr_assert(m1->dcos_leader);
  cr_assert_not(m2->dcos_leader);
  cr_assert_eq(m2->verdict, MST_VERDICT_HEALTHY, "a follower is healthy: %s",
               mst_verdict_name(m2->verdict));
  cr_assert_eq(m2->reasons.n, 0);
  cr_assert_eq(model.verdict, MST_VERDICT_HEALTHY);
  cr_assert_not(aggr_model_find(&model, "w1")->dcos_leader, "its profile names no leader");

  /* A failover. */
  set_comp(m1, "leads", MST_STATE_UNHEALTHY, "HTTP 307 (expected 200)", T0 + 1);
  set_comp(m2, "leads", MST_STATE_HEALTHY, "HTTP 200", T0 + 1);
  aggr_model_evaluate(&model, &engine, T0 + 1);
  cr_assert_not(m1->dcos_leader);
  cr_assert(m2->dcos_leader);
  cr_assert(m2->dirty, "a new leader is a new rendering");
  cr_assert_eq(aggr_model_check(&model, T0 + 1), 0);

  /* A silent leader leads no more (what it said is stale), without a
   * change marking it: evaluation follows the silence. */
  aggr_node_apply_seen(m1, T0 + STALE + 2);
  aggr_node_apply_seen(aggr_model_find(&model, "w1"), T0 + STALE + 2);
  m2->dirty = false;
  aggr_model_evaluate(&model, &engine, T0 + STALE + 2);
  cr_assert_eq(m2->verdict, MST_VERDICT_UNREACHABLE);
  cr_assert_not(m2->dcos_leader);
  cr_assert(m2->dirty);
  cr_assert_eq(aggr_model_check(&model, T0 + STALE + 2), 0);
}
