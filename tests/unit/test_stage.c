/* Unit tests for the stage engine (aggregatord/model/stage.c) and the root causes
 * across the dependency graph (aggregatord/model/cause.c), through the live model:
 * profiles are loaded from files like the daemons load them, nodes report
 * through the model's apply calls as conn.c does, aggr_model_evaluate()
 * runs at chosen times. Covered:
 * "after" defaults and cycles, requires conditions (any, @quorum, @all),
 * percent and the stage waited on, completions and learned durations, the
 * estimate from a known history, lateness as a verdict, restoring stored
 * completions, and root-cause selection on tricky graphs (a diamond, two
 * independent failures, cross-node chains). */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <jansson.h>
#include <string.h>

#include "model/evaluate.h"
#include "model/model.h"
#include "model/stage.h"
#include "mst/diag.h"
#include "mst/macro.h"
#include "unit-helpers.h"
#include "serve/view.h"

#define T0  (1700000000ULL * USEC_PER_SEC)
#define SEC USEC_PER_SEC

/* Masters: ZooKeeper first; the Mesos master needs a quorum of ZooKeepers
 * and its leader elected (a milestone); then a web stage. */
static const char master_ini[] =
    "[profile]\n"
    "role = master\n"
    "[component \"zk\"]\ncheck = exec\ncommand = true\ninterval = 500ms\n"
    "[component \"mm\"]\ncheck = exec\ncommand = true\ninterval = 500ms\n"
    "[component \"leader\"]\ncheck = exec\ncommand = true\ninterval = 500ms\n"
    "[component \"web\"]\ncheck = exec\ncommand = true\ninterval = 500ms\n"
    "[stage \"zookeeper\"]\ncomponents = zk\n"
    "[stage \"mesos-master\"]\ncomponents = mm\n"
    "milestones = leader\n"
    "requires = master:zookeeper@quorum\n"
    "[stage \"web\"]\ncomponents = web\n";

/* Agents: diagnostics, then the Mesos agent once some master has its
 * mesos-master stage, then networking. */
static const char agent_ini[] =
    "[profile]\n"
    "role = agent\n"
    "[component \"diag\"]\ncheck = exec\ncommand = true\ninterval = 500ms\n"
    "[component \"ma\"]\ncheck = exec\ncommand = true\ninterval = 500ms\n"
    "[component \"net\"]\ncheck = exec\ncommand = true\ninterval = 500ms\n"
    "[stage \"diagnostics\"]\ncomponents = diag\n"
    "[stage \"mesos-agent\"]\ncomponents = ma\n"
    "requires = master:mesos-master\n"
    "[stage \"networking\"]\ncomponents = net\n";

/* Waits for every master's ZooKeeper. */
static const char strict_ini[] =
    "[profile]\n"
    "role = strict\n"
    "[component \"s\"]\ncheck = exec\ncommand = true\ninterval = 500ms\n"
    "[stage \"after-all-zk\"]\ncomponents = s\n"
    "requires = master:zookeeper@all\n";

/* A diamond: b and c after a, d after both. */
static const char diamond_ini[] =
    "[profile]\n"
    "role = diamond\n"
    "[component \"ca\"]\ncheck = exec\ncommand = true\ninterval = 500ms\n"
    "[component \"cb\"]\ncheck = exec\ncommand = true\ninterval = 500ms\n"
    "[component \"cc\"]\ncheck = exec\ncommand = true\ninterval = 500ms\n"
    "[component \"cd\"]\ncheck = exec\ncommand = true\ninterval = 500ms\n"
    "[stage \"a\"]\ncomponents = ca\n"
    "[stage \"b\"]\ncomponents = cb\nafter = a\n"
    "[stage \"c\"]\ncomponents = cc\nafter = a\n"
    "[stage \"d\"]\ncomponents = cd\nafter = b c\n";

static char *dir;
static struct mst_profile_set *profiles;
static struct aggr_model model;
static struct aggr_stage engine;

static void load_profiles(void) {
  struct mst_diag diag = {0};
  dir = unit_tmpdir();
  free(unit_write_file(dir, "master.ini", master_ini));
  free(unit_write_file(dir, "agent.ini", agent_ini));
  free(unit_write_file(dir, "strict.ini", strict_ini));
  free(unit_write_file(dir, "diamond.ini", diamond_ini));
  int r = mst_profile_set_load(dir, &profiles, &diag);
  if (r < 0)
    mst_diag_print(&diag);
  cr_assert_eq(r, 0);
  mst_diag_done(&diag);
}

static void setup_masters(char *const *masters) {
  load_profiles();
  cr_assert_eq(aggr_model_init(&model, profiles, masters, 30 * SEC), 0);
  cr_assert_geq(aggr_model_set_leader(&model, true, "aggr1", "127.0.0.1:7611", 1), 0);
}

static void setup_three_masters(void) {
  static char *masters[] = {"m1", "m2", "m3", NULL};
  setup_masters(masters);
}

static void setup_none(void) {
  setup_masters(NULL);
}

static void teardown(void) {
  aggr_stage_done(&engine);
  aggr_model_done(&model);
  mst_profile_set_free(profiles);
  unit_rmtree(dir);
}

/* A node's agent says Hello in boot boot_id (which began at `boot`) as
 * the model hears it from conn.c; the same boot again keeps what the node
 * had. */
static struct aggr_node *hello_in(struct aggr_model *m, const char *id, const char *role,
                                  const char *boot_id, uint64_t boot) {
  struct aggr_node *n = aggr_model_get(m, id);
  cr_assert_not_null(n);
  const struct mst_profile *p = mst_profile_set_find(m->profiles, role);
  const struct aggr_hello_report h = {
      .role = role,
      .hostname = id,
      .boot_id = boot_id,
      .boot_time_usec = boot,
      .profile_digest = p ? p->digest : "",
  };
  uint64_t seen = MST_MAX(n->last_seen_usec, boot);
  /* Any non-NULL pointer: connected. */
  cr_assert_eq(aggr_model_apply_hello(m, n, &h, (struct aggr_conn *)n, seen), 0);
  return n;
}

/* A node whose agent said Hello (boot at `boot`) and sent its snapshot: on
 * a new boot an empty one, the components then coming as changes. */
static struct aggr_node *report(const char *id, const char *role, const char *boot_id,
                                uint64_t boot) {
  struct aggr_node *n = hello_in(&model, id, role, boot_id, boot);
  if (!n->have_snapshot)
    cr_assert_eq(aggr_node_apply_snapshot(n, NULL, 0), 0);
  return n;
}

static void set_comp(struct aggr_node *n, const char *name, enum mst_state state, uint64_t since) {
  const struct aggr_component_report r = {
      .name = name,
      .check = MST_CHECK_EXEC,
      .state = state,
      .since_usec = since,
      .output = state == MST_STATE_HEALTHY ? "ok" : "not ok",
      .rise = 1,
      .fall = 1,
  };
  cr_assert_eq(aggr_node_apply_change(n, NULL, &r), 0);
  aggr_node_apply_seen(n, MST_MAX(n->last_seen_usec, since));
}

/* Every component of the node's profile at state, since `since`. */
static void set_all(struct aggr_node *n, enum mst_state state, uint64_t since) {
  const struct mst_profile *p = mst_profile_set_find(profiles, n->role);
  for (size_t i = 0; i < p->n_components; i++)
    set_comp(n, p->components[i].name, state, since);
}

/* Evaluates as the loop does, then derives the whole model again: the
 * incremental evaluation must have missed nothing. The publish that follows
 * an evaluation in the loop clears the nodes' dirty marks; so does this. */
static size_t last_derived, last_explained; /* by the incremental evaluation */

static void evaluate_checked(uint64_t now) {
  aggr_model_evaluate(&model, &engine, now);
  last_derived = model.n_derived;
  last_explained = model.n_explained;
  cr_assert_eq(aggr_model_check(&model, now), 0,
               "the incremental evaluation at T0+%" PRIu64 " ms differs from a full one",
               (uint64_t)((now - T0) / 1000));
  for (size_t i = 0; i < model.n_nodes; i++)
    model.nodes[i]->dirty = false;
}

static void evaluate(uint64_t now) {
  /* Keep everyone speaking, as heartbeats do (they do not mark a node
   * dirty): silence is not what these tests are about. */
  for (size_t i = 0; i < model.n_nodes; i++)
    if (model.nodes[i]->reported)
      aggr_node_apply_seen(model.nodes[i], MST_MAX(model.nodes[i]->last_seen_usec, now));
  evaluate_checked(now);
}

static const struct aggr_stage_progress *stage_of(const char *node, const char *stage) {
  const struct aggr_node *n = aggr_model_find(&model, node);
  cr_assert_not_null(n);
  cr_assert_not_null(n->startup, "%s has no startup", node);
  size_t k = aggr_stage_index(n->startup->profile, stage);
  cr_assert_neq(k, SIZE_MAX, "%s has no stage %s", node, stage);
  return &n->startup->stages[k];
}

static const char *state_of(const char *node, const char *stage) {
  return aggr_stage_state_to_string(stage_of(node, stage)->state);
}

static unsigned percent_of(const char *node) {
  const struct aggr_startup *s = aggr_model_find(&model, node)->startup;
  return (unsigned)(100 * s->n_reached / s->profile->n_stages);
}

static const char *waiting_of(const char *node) {
  const struct aggr_startup *s = aggr_model_find(&model, node)->startup;
  return s->waiting < s->profile->n_stages ? s->profile->stages[s->waiting].name : NULL;
}

static const struct aggr_reason *find(const struct aggr_reasons *r, const char *node,
                                      const char *component) {
  for (size_t i = 0; i < r->n; i++)
    if (r->v[i].node && strcmp(r->v[i].node, node) == 0 &&
        (component ? r->v[i].component && strcmp(r->v[i].component, component) == 0
                   : !r->v[i].component))
      return &r->v[i];
  return NULL;
}

static const struct aggr_reason *reason_of(const char *node, const char *component) {
  const struct aggr_reason *r = find(&aggr_model_find(&model, node)->reasons, node, component);
  cr_assert_not_null(r, "no reason for %s %s", node, component ? component : "(node)");
  return r;
}

/* Brings masters m1..m3 through every stage, ZooKeeper at T0+1s, the Mesos
 * master at T0+2s, web at T0+3s. */
static void masters_up(void) {
  const char *ids[] = {"m1", "m2", "m3"};
  for (size_t i = 0; i < 3; i++) {
    struct aggr_node *n = report(ids[i], "master", "boot-1", T0);
    set_comp(n, "zk", MST_STATE_HEALTHY, T0 + 1 * SEC);
    set_comp(n, "mm", MST_STATE_HEALTHY, T0 + 2 * SEC);
    set_comp(n, "leader", MST_STATE_HEALTHY, T0 + 2 * SEC);
    set_comp(n, "web", MST_STATE_HEALTHY, T0 + 3 * SEC);
  }
}

/* --- the graph from the profile --------------------------------------------- */

TestSuite(stage, .init = setup_three_masters, .fini = teardown);
/* No expected masters: the masters are those that reported. */
TestSuite(unconfigured, .init = setup_none, .fini = teardown);

Test(stage, after_defaults_to_the_previous_stage) {
  const struct mst_profile *p = mst_profile_set_find(profiles, "master");
  cr_assert_str_eq(p->stages[1].after[0], "zookeeper");
  cr_assert_null(p->stages[1].after[1]);
  cr_assert_null(p->stages[0].after[0], "the first stage comes after nothing");

  const struct aggr_stage_graph *g = aggr_stage_graph_get(&engine.graphs, p);
  cr_assert_not_null(g);
  cr_assert_eq(g->stages[2].n_upstream, 2, "web comes after both, transitively");
  cr_assert(g->has_requires);
  cr_assert_str_eq(g->stages[1].requires[0].role, "master");
  cr_assert_str_eq(g->stages[1].requires[0].stage, "zookeeper");
  cr_assert_eq(g->stages[1].requires[0].mode, AGGR_REQUIRE_QUORUM);

  /* The engine follows the default: mm up before zk does not reach its
   * stage before zookeeper is reached. */
  struct aggr_node *m1 = report("m1", "master", "boot-1", T0);
  set_comp(m1, "zk", MST_STATE_STARTING, T0);
  set_comp(m1, "mm", MST_STATE_HEALTHY, T0 + SEC);
  set_comp(m1, "leader", MST_STATE_HEALTHY, T0 + SEC);
  set_comp(m1, "web", MST_STATE_HEALTHY, T0 + SEC);
  evaluate(T0 + 5 * SEC);
  cr_assert_str_eq(state_of("m1", "zookeeper"), "in_progress");
  cr_assert_str_eq(state_of("m1", "mesos-master"), "pending");
  cr_assert_str_eq(state_of("m1", "web"), "pending");
  cr_assert_str_eq(waiting_of("m1"), "zookeeper");
  cr_assert_eq(percent_of("m1"), 0);
}

Test(stage, a_cycle_is_refused_with_its_line) {
  struct mst_diag diag = {0};
  struct mst_profile *p = NULL;
  _cleanup_free_ char *path = unit_write_file(
      dir, "cyclic.txt",
      "[profile]\nrole = c\n[component \"x\"]\ncheck = exec\ncommand = true\ninterval = 500ms\n"
      "[stage \"one\"]\ncomponents = x\nafter = two\n"
      "[stage \"two\"]\ncomponents = x\n");
  cr_assert_eq(mst_profile_load(path, &p, &diag), -EINVAL);
  cr_assert(mst_diag_contains(&diag, ":9: stage 'one': dependency cycle one -> two -> one"));
  mst_diag_done(&diag);
}

Test(stage, a_cycle_that_slipped_through_does_not_hang) {
  /* Profiles built in memory skip the loader: the engine must cope. */
  static char *xs[] = {"x", NULL}, *ys[] = {"y", NULL}, *none[] = {NULL};
  static char *after_y[] = {"y", NULL}, *after_x[] = {"x", NULL};
  static struct mst_stage stages[] = {
      {.name = "x", .components = xs, .milestones = none, .after = after_y},
      {.name = "y", .components = ys, .milestones = none, .after = after_x},
  };
  static struct mst_profile cyclic = {.role = "cyclic", .stages = stages, .n_stages = 2};
  static struct mst_profile *list[] = {&cyclic};
  static const struct mst_profile_set set = {.profiles = list, .n = 1};
  struct aggr_model m;
  struct aggr_stage st = {0};
  cr_assert_eq(aggr_model_init(&m, &set, NULL, 30 * SEC), 0);
  struct aggr_node *n = hello_in(&m, "n1", "cyclic", "b", T0);
  const struct aggr_component_report snap[] = {
      {.name = "x", .state = MST_STATE_UNHEALTHY},
      {.name = "y", .state = MST_STATE_UNHEALTHY},
  };
  cr_assert_eq(aggr_node_apply_snapshot(n, snap, ELEMENTSOF(snap)), 0);
  aggr_model_evaluate(&m, &st, T0 + SEC);
  cr_assert_eq(n->verdict, MST_VERDICT_UNHEALTHY);
  cr_assert_eq(n->startup->n_reached, 0);
  /* Each problem of the cycle reaches the other and no root: both stand
   * as roots rather than vanish. */
  cr_assert_eq(n->root_causes.n, 2);
  aggr_stage_done(&st);
  aggr_model_done(&m);
}

Test(stage, a_requires_cycle_that_slipped_through_does_not_hang) {
  /* The loader refuses requires cycles (test_profile.c); built in memory,
   * one across roles (m:s1 needs a:x, which needs m:s1) and a stage that
   * requires itself @quorum must leave the engine and the root causes
   * ending, with those stages pending and the rest reached. */
  static char *ms[] = {"ms", NULL}, *ax[] = {"ax", NULL}, *none[] = {NULL};
  static char *after_s0[] = {"s0", NULL}, *after_s1[] = {"s1", NULL};
  static char *needs_x[] = {"a:x@quorum", NULL}, *needs_s1[] = {"m:s1", NULL};
  static char *needs_self[] = {"m:s2@quorum", NULL};
  static struct mst_stage m_stages[] = {
      {.name = "s0", .components = ms, .milestones = none, .after = none, .requires = none},
      {.name = "s1", .components = ms, .milestones = none, .after = after_s0, .requires = needs_x},
      {.name = "s2",
       .components = ms,
       .milestones = none,
       .after = after_s1,
       .requires = needs_self},
  };
  static struct mst_stage a_stages[] = {
      {.name = "x", .components = ax, .milestones = none, .after = none, .requires = needs_s1},
  };
  static struct mst_profile m_prof = {.role = "m", .stages = m_stages, .n_stages = 3};
  static struct mst_profile a_prof = {.role = "a", .stages = a_stages, .n_stages = 1};
  static struct mst_profile *list[] = {&a_prof, &m_prof};
  static const struct mst_profile_set set = {.profiles = list, .n = 2};
  struct aggr_model m;
  struct aggr_stage st = {0};
  cr_assert_eq(aggr_model_init(&m, &set, NULL, 30 * SEC), 0);
  struct aggr_node *m1 = hello_in(&m, "m1", "m", "b", T0);
  struct aggr_node *a1 = hello_in(&m, "a1", "a", "b", T0);
  const struct aggr_component_report m_snap[] = {{.name = "ms", .state = MST_STATE_HEALTHY}};
  const struct aggr_component_report a_snap[] = {{.name = "ax", .state = MST_STATE_HEALTHY}};
  cr_assert_eq(aggr_node_apply_snapshot(m1, m_snap, 1), 0);
  cr_assert_eq(aggr_node_apply_snapshot(a1, a_snap, 1), 0);
  for (uint64_t t = T0 + SEC; t <= T0 + 100 * SEC; t += 33 * SEC) {
    aggr_node_apply_seen(m1, t);
    aggr_node_apply_seen(a1, t);
    aggr_model_evaluate(&m, &st, t);
  }
  cr_assert_eq(m1->startup->n_reached, 1, "s0 reached, s1 and s2 wait on the cycle");
  cr_assert_eq(m1->startup->stages[1].state, AGGR_STAGE_PENDING);
  cr_assert_eq(m1->startup->stages[2].state, AGGR_STAGE_PENDING);
  cr_assert_eq(a1->startup->n_reached, 0);
  cr_assert_eq(a1->startup->stages[0].state, AGGR_STAGE_PENDING);
  aggr_stage_done(&st);
  aggr_model_done(&m);
}

/* --- requires conditions ------------------------------------------------------ */

Test(stage, quorum_needs_a_majority_of_the_expected_masters) {
  struct aggr_node *m1 = report("m1", "master", "boot-1", T0);
  struct aggr_node *m2 = report("m2", "master", "boot-1", T0);
  set_all(m1, MST_STATE_STARTING, T0);
  set_all(m2, MST_STATE_STARTING, T0);
  /* m1's ZooKeeper and its Mesos master are up; one of three is no quorum. */
  set_comp(m1, "zk", MST_STATE_HEALTHY, T0 + 2 * SEC);
  set_comp(m1, "mm", MST_STATE_HEALTHY, T0 + 3 * SEC);
  set_comp(m1, "leader", MST_STATE_HEALTHY, T0 + 3 * SEC);
  evaluate(T0 + 4 * SEC);
  cr_assert_str_eq(state_of("m1", "zookeeper"), "done");
  cr_assert_eq(stage_of("m1", "zookeeper")->reached_usec, T0 + 2 * SEC);
  cr_assert_str_eq(state_of("m1", "mesos-master"), "pending", "1 of 3 is no quorum");
  cr_assert_str_eq(waiting_of("m1"), "mesos-master", "waiting on the cluster condition");
  cr_assert_eq(stage_of("m1", "mesos-master")->reached_usec, 0);

  /* m2's ZooKeeper makes two of three: m1's Mesos master stage is reached,
   * started when the quorum formed. */
  set_comp(m2, "zk", MST_STATE_HEALTHY, T0 + 6 * SEC);
  evaluate(T0 + 7 * SEC);
  cr_assert_str_eq(state_of("m1", "mesos-master"), "done");
  cr_assert_eq(stage_of("m1", "mesos-master")->started_usec, T0 + 6 * SEC);
  cr_assert_eq(stage_of("m1", "mesos-master")->reached_usec, T0 + 6 * SEC,
               "reached no earlier than it could start");
  cr_assert_str_eq(state_of("m2", "mesos-master"), "in_progress");
  /* m3 never reported: its stages stay pending; the quorum counted it. */
  cr_assert_str_eq(state_of("m3", "zookeeper"), "pending");
}

Test(stage, all_needs_every_expected_master) {
  struct aggr_node *s1 = report("s1", "strict", "boot-1", T0);
  set_comp(s1, "s", MST_STATE_HEALTHY, T0 + SEC);
  const char *ids[] = {"m1", "m2", "m3"};
  for (size_t i = 0; i < 3; i++) {
    struct aggr_node *n = report(ids[i], "master", "boot-1", T0);
    set_all(n, MST_STATE_STARTING, T0);
    if (i < 2)
      set_comp(n, "zk", MST_STATE_HEALTHY, T0 + (i + 1) * SEC);
  }
  evaluate(T0 + 5 * SEC);
  cr_assert_str_eq(state_of("s1", "after-all-zk"), "pending", "two of three is not all");
  set_comp(aggr_model_find(&model, "m3"), "zk", MST_STATE_HEALTHY, T0 + 9 * SEC);
  evaluate(T0 + 10 * SEC);
  cr_assert_str_eq(state_of("s1", "after-all-zk"), "done");
  cr_assert_eq(stage_of("s1", "after-all-zk")->started_usec, T0 + 9 * SEC, "the last one");
}

Test(stage, any_needs_one_node_of_the_role) {
  struct aggr_node *a1 = report("a1", "agent", "boot-1", T0);
  set_all(a1, MST_STATE_HEALTHY, T0 + SEC);
  evaluate(T0 + 2 * SEC);
  cr_assert_str_eq(state_of("a1", "diagnostics"), "done");
  cr_assert_str_eq(state_of("a1", "mesos-agent"), "pending");
  cr_assert_str_eq(state_of("a1", "networking"), "pending");
  cr_assert_eq(percent_of("a1"), 33);
  cr_assert_str_eq(waiting_of("a1"), "mesos-agent");

  /* The masters come up: within the same evaluation the agent follows. */
  masters_up();
  evaluate(T0 + 4 * SEC);
  cr_assert_str_eq(state_of("a1", "mesos-agent"), "done");
  cr_assert_str_eq(state_of("a1", "networking"), "done");
  cr_assert_eq(percent_of("a1"), 100);
  cr_assert_null(waiting_of("a1"));
  cr_assert_eq(stage_of("a1", "mesos-agent")->started_usec, T0 + 2 * SEC,
               "the first master's mesos-master stage");
  cr_assert_eq(aggr_model_find(&model, "a1")->verdict, MST_VERDICT_HEALTHY);
  cr_assert_eq(model.verdict, MST_VERDICT_HEALTHY);
}

/* --- progress, completions, what is learned ------------------------------------ */

Test(stage, done_is_sticky_and_a_failure_after_it_is_failed) {
  masters_up();
  evaluate(T0 + 4 * SEC);
  cr_assert_str_eq(state_of("m1", "web"), "done");
  cr_assert_eq(percent_of("m1"), 100);
  set_comp(aggr_model_find(&model, "m1"), "mm", MST_STATE_UNHEALTHY, T0 + 5 * SEC);
  evaluate(T0 + 6 * SEC);
  cr_assert_str_eq(state_of("m1", "mesos-master"), "failed");
  cr_assert_eq(stage_of("m1", "mesos-master")->reached_usec, T0 + 2 * SEC, "reached stays");
  cr_assert_eq(percent_of("m1"), 100, "progress does not go back within a boot");
  cr_assert_str_eq(state_of("m1", "web"), "done");
  /* A stage not reached whose component fails is failed too. */
  struct aggr_node *m4 = report("m4", "master", "boot-1", T0);
  set_all(m4, MST_STATE_STARTING, T0);
  set_comp(m4, "zk", MST_STATE_UNHEALTHY, T0 + SEC);
  evaluate(T0 + 7 * SEC);
  cr_assert_str_eq(state_of("m4", "zookeeper"), "failed");
  cr_assert_str_eq(state_of("m4", "mesos-master"), "pending");
}

Test(stage, completions_are_queued_and_learned) {
  masters_up();
  evaluate(T0 + 4 * SEC);
  size_t n = 0;
  struct aggr_stage_completion *c = aggr_stage_take_completions(&engine, &n);
  cr_assert_eq(n, 9, "three stages on three masters");
  bool seen = false;
  for (size_t i = 0; i < n; i++)
    if (strcmp(c[i].node_id, "m2") == 0 && strcmp(c[i].stage, "mesos-master") == 0) {
      seen = true;
      cr_assert_str_eq(c[i].role, "master");
      cr_assert_str_eq(c[i].boot_id, "boot-1");
      cr_assert_eq(c[i].reached_usec, T0 + 2 * SEC);
      cr_assert_eq(c[i].duration_usec, 1 * SEC, "from the quorum at T0+1s");
    }
  cr_assert(seen);
  aggr_stage_completions_free(c, n);
  cr_assert_null(aggr_stage_take_completions(&engine, &n));
  cr_assert_eq(n, 0);

  /* Nothing new: nothing is queued again. */
  evaluate(T0 + 5 * SEC);
  cr_assert_null(aggr_stage_take_completions(&engine, &n));

  /* Boots under way teach nothing yet: a node is judged by earlier boots
   * only. m1 boots again: its first boot's durations are learned. */
  const struct aggr_stage_samples *zk =
      aggr_stage_history_get(&engine.history, "master", "zookeeper");
  cr_assert_eq(zk->n, 0);
  set_all(report("m1", "master", "boot-2", T0 + 100 * SEC), MST_STATE_STARTING, T0 + 100 * SEC);
  evaluate(T0 + 101 * SEC);
  cr_assert_eq(zk->n, 1);
  cr_assert_eq(zk->p50_usec, 1 * SEC, "reached at T0+1s, a second after the boot");
  cr_assert_eq(aggr_stage_history_get(&engine.history, "master", "web")->n, 1);
}

Test(stage, percentiles_are_nearest_rank) {
  struct aggr_stage_history h = {0};
  for (uint64_t s = 1; s <= 20; s++)
    cr_assert_eq(aggr_stage_history_add(&h, "r", "s", s * SEC), 0);
  const struct aggr_stage_samples *x = aggr_stage_history_get(&h, "r", "s");
  cr_assert_eq(x->p50_usec, 10 * SEC);
  cr_assert_eq(x->p95_usec, 19 * SEC);
  /* Only the most recent samples are kept. */
  for (size_t i = 0; i < AGGR_STAGE_SAMPLES_MAX; i++)
    aggr_stage_history_add(&h, "r", "s", 100 * SEC);
  cr_assert_eq(x->n, AGGR_STAGE_SAMPLES_MAX);
  cr_assert_eq(x->p50_usec, 100 * SEC);
  aggr_stage_history_done(&h);
}

/* A history: zookeeper 10s 20s 30s, mesos-master 5s 5s, web 7s 7s. */
static void learn_master_history(void) {
  static const struct {
    const char *stage;
    uint64_t secs;
  } rows[] = {{"zookeeper", 10},   {"zookeeper", 20}, {"zookeeper", 30}, {"mesos-master", 5},
              {"mesos-master", 5}, {"web", 7},        {"web", 7}};
  for (size_t i = 0; i < ELEMENTSOF(rows); i++)
    cr_assert_eq(
        aggr_stage_history_add(&engine.history, "master", rows[i].stage, rows[i].secs * SEC), 0);
}

Test(stage, eta_follows_the_p50_along_the_critical_path) {
  learn_master_history();
  const char *ids[] = {"m1", "m2", "m3"};
  for (size_t i = 0; i < 3; i++)
    set_all(report(ids[i], "master", "boot-1", T0), MST_STATE_STARTING, T0);
  evaluate(T0 + 4 * SEC);
  const struct aggr_startup *s = aggr_model_find(&model, "m1")->startup;
  cr_assert(s->eta_known);
  /* zookeeper due at T0+20s (its p50), then 5s and 7s: 28s left at +4s. */
  cr_assert_eq(aggr_startup_eta_seconds(s, T0 + 4 * SEC), 28);
  cr_assert_eq(aggr_startup_eta_seconds(s, T0 + 10 * SEC), 22, "it counts down by itself");
  /* Overdue: zookeeper is due now; what remains is the rest of the path. */
  cr_assert_eq(aggr_startup_eta_seconds(s, T0 + 25 * SEC), 12);

  /* ZooKeeper up on all three at T0+12s: the Mesos master stage is due at
   * T0+17s, web at T0+24s. */
  for (size_t i = 0; i < 3; i++)
    set_comp(aggr_model_find(&model, ids[i]), "zk", MST_STATE_HEALTHY, T0 + 12 * SEC);
  evaluate(T0 + 13 * SEC);
  s = aggr_model_find(&model, "m1")->startup;
  cr_assert_eq(aggr_startup_eta_seconds(s, T0 + 13 * SEC), 11);
  cr_assert_eq(s->n_reached, 1);
}

Test(stage, no_estimate_without_history) {
  set_all(report("m1", "master", "boot-1", T0), MST_STATE_STARTING, T0);
  evaluate(T0 + SEC);
  const struct aggr_startup *s = aggr_model_find(&model, "m1")->startup;
  cr_assert_not(s->eta_known);
  cr_assert_not(s->late, "nothing is late without a history");
  cr_assert_eq(s->next_usec, UINT64_MAX);
}

Test(unconfigured, late_past_the_p95_is_a_verdict_not_a_failure) {
  learn_master_history();
  struct aggr_node *m1 = report("m1", "master", "boot-1", T0);
  set_all(m1, MST_STATE_STARTING, T0);
  evaluate(T0 + 10 * SEC);
  cr_assert_eq(m1->verdict, MST_VERDICT_STARTING);
  /* p95 of zookeeper is 30s, the tolerance 1s (the checks' interval is
   * shorter): late strictly after 31s. The loop's timer is armed there. */
  cr_assert_eq(stage_of("m1", "zookeeper")->late_at_usec, T0 + 31 * SEC + USEC_PER_MSEC);
  cr_assert_leq(aggr_model_next_stale_usec(&model), T0 + 31 * SEC + USEC_PER_MSEC);
  evaluate(T0 + 31 * SEC);
  cr_assert_eq(m1->verdict, MST_VERDICT_STARTING);

  evaluate(T0 + 32 * SEC);
  cr_assert_str_eq(state_of("m1", "zookeeper"), "late");
  cr_assert_eq(m1->verdict, MST_VERDICT_LATE);
  cr_assert_eq(model.verdict, MST_VERDICT_UNHEALTHY, "a late master makes the cluster unhealthy");
  cr_assert_not_null(find(&model.reasons, "m1", NULL));
  const struct aggr_reason *r = reason_of("m1", NULL);
  cr_assert_str_eq(r->state, "late");
  cr_assert(strstr(r->message, "m1: startup is late: stage zookeeper in progress since "
                               "2023-11-14T22:13:20.000Z, past the p95 of 30s"),
            "%s", r->message);
  /* The late component is the root cause; what waits behind it on the node
   * is blocked by it. */
  const struct aggr_reason *root = find(&m1->root_causes, "m1", "zk");
  cr_assert_not_null(root);
  cr_assert_str_eq(root->state, "late");
  cr_assert(strstr(root->summary,
                   "zk on m1 has been starting since 2023-11-14T22:13:20.000Z, "
                   "past the p95 of 30s for stage zookeeper; blocked: mm on m1, web on m1"),
            "%s", root->summary);
  cr_assert_eq(m1->root_causes.n, 1);
  cr_assert(strstr(reason_of("m1", "mm")->message, "(blocked by zk)"), "%s",
            reason_of("m1", "mm")->message);
  cr_assert(strstr(reason_of("m1", "zk")->message, "(late for stage zookeeper)"));

  /* Up at last: done, and the next stage starts with no lateness. */
  set_comp(m1, "zk", MST_STATE_HEALTHY, T0 + 33 * SEC);
  evaluate(T0 + 34 * SEC);
  cr_assert_str_eq(state_of("m1", "zookeeper"), "done");
  cr_assert_eq(m1->verdict, MST_VERDICT_STARTING);
}

Test(stage, a_new_boot_starts_over) {
  masters_up();
  evaluate(T0 + 4 * SEC);
  cr_assert_eq(percent_of("m1"), 100);
  struct aggr_node *m1 = report("m1", "master", "boot-2", T0 + 100 * SEC);
  set_all(m1, MST_STATE_STARTING, T0 + 100 * SEC);
  evaluate(T0 + 101 * SEC);
  cr_assert_str_eq(m1->startup->boot_id, "boot-2");
  cr_assert_eq(percent_of("m1"), 0);
  cr_assert_str_eq(state_of("m1", "zookeeper"), "in_progress");
  cr_assert_eq(m1->startup->boot_usec, T0 + 100 * SEC);
  /* The other masters still have their ZooKeeper: the quorum holds. */
  set_comp(m1, "zk", MST_STATE_HEALTHY, T0 + 102 * SEC);
  evaluate(T0 + 103 * SEC);
  cr_assert_str_eq(state_of("m1", "mesos-master"), "in_progress");
}

Test(stage, restored_completions_keep_the_boot_and_teach_durations) {
  /* A restart: the node is known from the registry, not yet back. */
  struct aggr_node *m1 = aggr_model_get(&model, "m1");
  cr_assert_eq(aggr_node_apply_restored(m1, "master", "m1", 0, T0 + 3 * SEC), 0);
  cr_assert_eq(aggr_stage_restore(&engine, &model, "m1", "master", "boot-0", T0 - 50 * SEC,
                                  "zookeeper", T0 - 40 * SEC, 10 * SEC),
               0);
  cr_assert_eq(
      aggr_stage_restore(&engine, &model, "m1", "master", "boot-1", T0, "zookeeper", T0 + SEC, SEC),
      0);
  cr_assert_eq(
      aggr_stage_restore(&engine, &model, "gone", "master", "boot-9", T0, "zookeeper", T0, SEC), 0,
      "an unknown node only teaches");
  /* boot-0 is over and teaches; so does the unknown node; boot-1 is the
   * node's current boot and goes on. */
  const struct aggr_stage_samples *zk =
      aggr_stage_history_get(&engine.history, "master", "zookeeper");
  cr_assert_eq(zk->n, 2);
  cr_assert_str_eq(m1->startup->boot_id, "boot-1", "the latest boot");

  evaluate(T0 + 4 * SEC);
  cr_assert_str_eq(state_of("m1", "zookeeper"), "done", "kept until the agent says otherwise");
  /* The agent returns in the same boot: nothing is counted twice. */
  report("m1", "master", "boot-1", T0);
  set_comp(m1, "zk", MST_STATE_HEALTHY, T0 + SEC);
  evaluate(T0 + 5 * SEC);
  cr_assert_str_eq(state_of("m1", "zookeeper"), "done");
  size_t n;
  struct aggr_stage_completion *c = aggr_stage_take_completions(&engine, &n);
  for (size_t i = 0; i < n; i++)
    cr_assert_str_neq(c[i].stage, "zookeeper", "a restored stage was counted again");
  aggr_stage_completions_free(c, n);
  cr_assert_eq(zk->n, 2);
}

Test(stage, milestones_count_for_progress_only) {
  struct aggr_node *m1 = report("m1", "master", "boot-1", T0);
  set_all(m1, MST_STATE_HEALTHY, T0 + SEC);
  set_comp(m1, "leader", MST_STATE_UNHEALTHY, T0 + SEC);
  report("m2", "master", "boot-1", T0);
  set_all(aggr_model_find(&model, "m2"), MST_STATE_HEALTHY, T0 + SEC);
  evaluate(T0 + 2 * SEC);
  cr_assert_eq(m1->verdict, MST_VERDICT_HEALTHY, "a milestone is not health");
  cr_assert_str_eq(state_of("m1", "mesos-master"), "in_progress", "but it is progress");
  cr_assert_eq(percent_of("m1"), 33);
  cr_assert_eq(m1->reasons.n, 0);
}

/* --- root causes ------------------------------------------------------------------- */

TestSuite(cause, .init = setup_three_masters, .fini = teardown);

static size_t n_roots(void) {
  return model.root_causes.n;
}

static const struct aggr_reason *root_of(const char *node, const char *component) {
  return find(&model.root_causes, node, component);
}

Test(cause, diamond) {
  struct aggr_node *d = report("d1", "diamond", "boot-1", T0);
  set_all(d, MST_STATE_UNHEALTHY, T0 + SEC);
  masters_up();
  evaluate(T0 + 5 * SEC);
  /* a fails: b and c wait on it, d on both; a is the only root. */
  cr_assert_eq(n_roots(), 1);
  cr_assert_not_null(root_of("d1", "ca"));
  cr_assert_str_eq(reason_of("d1", "cb")->message, "d1: cb is unhealthy: not ok (blocked by ca)");
  cr_assert_str_eq(reason_of("d1", "cd")->message,
                   "d1: cd is unhealthy: not ok (blocked by ca via cb, cc)");
  const struct aggr_reason *root = root_of("d1", "ca");
  cr_assert_eq(root->n_refs, 3, "it blocks cb, cc and cd");
  cr_assert(strstr(root->summary, "; blocked: cb on d1, cc on d1, cd on d1"), "%s", root->summary);
  cr_assert_str_eq(reason_of("d1", "cd")->refs[0].component, "ca");

  /* a up (and reached): b and c are two roots, d is blocked by both. */
  set_comp(d, "ca", MST_STATE_HEALTHY, T0 + 6 * SEC);
  evaluate(T0 + 7 * SEC);
  cr_assert_eq(n_roots(), 2);
  cr_assert_not_null(root_of("d1", "cb"));
  cr_assert_not_null(root_of("d1", "cc"));
  cr_assert_str_eq(reason_of("d1", "cd")->message,
                   "d1: cd is unhealthy: not ok (blocked by cb, cc)");
  cr_assert_eq(reason_of("d1", "cd")->n_refs, 2);

  /* Only c fails: b's branch is fine, d waits on c alone. */
  set_comp(d, "cb", MST_STATE_HEALTHY, T0 + 8 * SEC);
  evaluate(T0 + 9 * SEC);
  cr_assert_eq(n_roots(), 1);
  cr_assert_str_eq(reason_of("d1", "cd")->message, "d1: cd is unhealthy: not ok (blocked by cc)");
}

Test(cause, two_independent_failures) {
  masters_up();
  struct aggr_node *a1 = report("a1", "agent", "boot-1", T0);
  set_all(a1, MST_STATE_HEALTHY, T0 + 3 * SEC);
  evaluate(T0 + 4 * SEC);
  set_comp(aggr_model_find(&model, "m2"), "web", MST_STATE_UNHEALTHY, T0 + 5 * SEC);
  set_comp(a1, "diag", MST_STATE_UNHEALTHY, T0 + 5 * SEC);
  evaluate(T0 + 6 * SEC);
  cr_assert_eq(n_roots(), 2);
  cr_assert_not_null(root_of("m2", "web"));
  cr_assert_not_null(root_of("a1", "diag"));
  cr_assert_eq(root_of("m2", "web")->n_refs, 0, "it blocks nothing");
  cr_assert_str_eq(root_of("m2", "web")->summary,
                   "web on m2 has been unhealthy since 2023-11-14T22:13:25.000Z: not ok");
  cr_assert_eq(aggr_model_find(&model, "m2")->verdict, MST_VERDICT_UNHEALTHY);
  cr_assert_eq(a1->verdict, MST_VERDICT_UNHEALTHY);
}

/* Five agents whose Mesos agent fails. */
static void agents_up_then_failing(uint64_t fail_at) {
  for (int i = 1; i <= 5; i++) {
    char id[8];
    snprintf(id, sizeof(id), "a%d", i);
    set_all(report(id, "agent", "boot-1", T0), MST_STATE_HEALTHY, T0 + 3 * SEC);
  }
  evaluate(fail_at - SEC);
  for (int i = 1; i <= 5; i++) {
    char id[8];
    snprintf(id, sizeof(id), "a%d", i);
    set_comp(aggr_model_find(&model, id), "ma", MST_STATE_UNHEALTHY, fail_at);
  }
}

Test(cause, a_failing_master_blocks_every_agent) {
  masters_up();
  agents_up_then_failing(T0 + 10 * SEC);
  /* Every master's Mesos master fails after having been up. */
  const char *ids[] = {"m1", "m2", "m3"};
  for (size_t i = 0; i < 3; i++)
    set_comp(aggr_model_find(&model, ids[i]), "mm", MST_STATE_UNHEALTHY, T0 + 10 * SEC);
  evaluate(T0 + 11 * SEC);
  cr_assert_eq(n_roots(), 3, "one per master");
  const struct aggr_reason *root = root_of("m1", "mm");
  cr_assert_not_null(root);
  cr_assert_str_eq(root->summary, "mm on m1 has been unhealthy since 2023-11-14T22:13:30.000Z: "
                                  "not ok; blocked: ma on a1..a5");
  cr_assert_eq(root->n_refs, 5);
  cr_assert_str_eq(reason_of("a3", "ma")->message,
                   "a3: ma is unhealthy: not ok (blocked by mm on m1..m3)");
  /* The agent's own view names the root causes elsewhere. */
  const struct aggr_node *a3 = aggr_model_find(&model, "a3");
  cr_assert_eq(a3->root_causes.n, 3);
  cr_assert_not_null(find(&a3->root_causes, "m2", "mm"));
  cr_assert_eq(model.verdict, MST_VERDICT_UNHEALTHY);

  /* One master recovers: the condition holds again, so the agents' Mesos
   * agents are failures of their own. */
  set_comp(aggr_model_find(&model, "m2"), "mm", MST_STATE_HEALTHY, T0 + 12 * SEC);
  evaluate(T0 + 13 * SEC);
  cr_assert_not_null(root_of("a3", "ma"));
  cr_assert_str_eq(reason_of("a3", "ma")->message, "a3: ma is unhealthy: not ok");
}

Test(cause, a_chain_across_nodes_leads_to_zookeeper) {
  masters_up();
  agents_up_then_failing(T0 + 10 * SEC);
  /* ZooKeeper fails on two masters: no quorum, so every Mesos master
   * fails, and with them every agent. */
  const char *ids[] = {"m1", "m2", "m3"};
  for (size_t i = 0; i < 3; i++) {
    struct aggr_node *m = aggr_model_find(&model, ids[i]);
    if (i < 2)
      set_comp(m, "zk", MST_STATE_UNHEALTHY, T0 + 10 * SEC);
    set_comp(m, "mm", MST_STATE_UNHEALTHY, T0 + 10 * SEC);
  }
  evaluate(T0 + 11 * SEC);
  cr_assert_eq(n_roots(), 2);
  cr_assert_not_null(root_of("m1", "zk"));
  cr_assert_not_null(root_of("m2", "zk"));
  cr_assert_null(root_of("m3", "mm"), "m3's ZooKeeper is fine, but there is no quorum");
  cr_assert_str_eq(reason_of("m3", "mm")->message,
                   "m3: mm is unhealthy: not ok (blocked by zk on m1, m2)");
  cr_assert_str_eq(reason_of("a1", "ma")->message,
                   "a1: ma is unhealthy: not ok (blocked by zk on m1, m2 via mm on m1..m3)");
  cr_assert(strstr(root_of("m1", "zk")->summary, "; blocked: mm on m1..m3, ma on a1..a5"), "%s",
            root_of("m1", "zk")->summary);
}

Test(cause, an_unreachable_master_is_a_root) {
  masters_up();
  agents_up_then_failing(T0 + 10 * SEC);
  for (size_t i = 0; i < 3; i++) {
    const char *ids[] = {"m1", "m2", "m3"};
    struct aggr_node *m = aggr_model_find(&model, ids[i]);
    aggr_node_apply_seen(m, T0);
  }
  /* Past the stale timeout without the helper keeping them fresh. */
  for (int i = 1; i <= 5; i++) {
    char id[8];
    snprintf(id, sizeof(id), "a%d", i);
    aggr_node_apply_seen(aggr_model_find(&model, id), T0 + 40 * SEC);
  }
  aggr_model_evaluate(&model, &engine, T0 + 40 * SEC);
  cr_assert_eq(aggr_model_find(&model, "m1")->verdict, MST_VERDICT_UNREACHABLE);
  const struct aggr_reason *root = root_of("m1", NULL);
  cr_assert_not_null(root);
  cr_assert_str_eq(root->state, "unreachable");
  cr_assert(strstr(root->summary, "m1 is unreachable, last seen 2023-11-14T22:13:20.000Z; "
                                  "blocked: ma on a1..a5"),
            "%s", root->summary);
  cr_assert_str_eq(reason_of("a1", "ma")->message,
                   "a1: ma is unhealthy: not ok (blocked by node m1..m3)");
}

Test(unconfigured, starting_components_behind_a_root_are_blocked) {
  struct aggr_node *m1 = report("m1", "master", "boot-1", T0);
  set_all(m1, MST_STATE_STARTING, T0);
  set_comp(m1, "zk", MST_STATE_UNHEALTHY, T0 + SEC);
  evaluate(T0 + 2 * SEC);
  cr_assert_str_eq(reason_of("m1", "web")->message, "m1: web is starting: not ok (blocked by zk)");
  cr_assert_eq(m1->root_causes.n, 1);
  cr_assert(strstr(m1->root_causes.v[0].summary, "; blocked: mm on m1, web on m1"), "%s",
            m1->root_causes.v[0].summary);
}

/* --- the startup as the API shows it ------------------------------------------------ */

Test(unconfigured, node_detail_startup_json) {
  learn_master_history();
  struct aggr_node *m1 = report("m1", "master", "boot-2", T0 + 100 * SEC);
  set_all(m1, MST_STATE_STARTING, T0 + 100 * SEC);
  set_comp(m1, "zk", MST_STATE_HEALTHY, T0 + 110 * SEC);
  evaluate(T0 + 111 * SEC);
  struct aggr_views *views = aggr_views_new();
  cr_assert_eq(aggr_view_publish(views, &model, true), 1);
  struct aggr_view *v = aggr_view_acquire(views);
  const struct aggr_view_node *e = aggr_view_find_node(v, "m1");
  cr_assert_not_null(e);
  char *live;
  size_t len;
  cr_assert_eq(aggr_body_live_copy(e->detail, T0 + 113 * SEC, &live, &len), 1);
  json_error_t err;
  json_t *j = json_loadb(live, len, 0, &err);
  cr_assert_not_null(j, "%s: %s", err.text, live);
  free(live);
  json_t *st = json_object_get(j, "startup");
  cr_assert_str_eq(json_string_value(json_object_get(st, "boot_id")), "boot-2");
  cr_assert_eq(json_integer_value(json_object_get(st, "percent")), 33);
  cr_assert_eq(json_integer_value(json_object_get(st, "elapsed")), 13);
  cr_assert_str_eq(json_string_value(json_object_get(st, "waiting_on")), "mesos-master");
  cr_assert_str_eq(json_string_value(json_object_get(st, "state")), "in_progress");
  /* mesos-master (p50 5s, started at +110s) is due at +115s, web 7s later:
   * 9s left at +113s. */
  cr_assert_eq(json_integer_value(json_object_get(st, "eta_seconds")), 9);
  cr_assert(json_is_false(json_object_get(st, "late")));
  json_t *zk = json_array_get(json_object_get(st, "stages"), 0);
  cr_assert_str_eq(json_string_value(json_object_get(zk, "state")), "done");
  cr_assert_str_eq(json_string_value(json_object_get(zk, "reached")), "2023-11-14T22:15:10.000Z");
  cr_assert_str_eq(json_string_value(json_object_get(zk, "started")), "2023-11-14T22:15:00.000Z");
  cr_assert(json_real_value(json_object_get(zk, "duration")) == 10.0);
  cr_assert(json_is_null(json_object_get(zk, "typical_seconds")), "shown for stages to come");
  json_t *mm = json_array_get(json_object_get(st, "stages"), 1);
  cr_assert(json_real_value(json_object_get(mm, "typical_seconds")) == 5.0);
  cr_assert(json_real_value(json_object_get(mm, "late_after_seconds")) == 6.0,
            "the p95 plus the least tolerance");
  cr_assert_str_eq(json_string_value(json_array_get(json_object_get(mm, "requires"), 0)),
                   "master:zookeeper@quorum");
  json_decref(j);

  /* The node list shows the summary. */
  j = json_loadb(v->nodes->data, v->nodes->len, 0, &err);
  cr_assert_not_null(j);
  json_t *first = json_array_get(json_object_get(j, "nodes"), 0);
  cr_assert_str_eq(json_string_value(json_object_get(first, "id")), "m1");
  json_t *sum = json_object_get(first, "startup");
  cr_assert_eq(json_integer_value(json_object_get(sum, "percent")), 33);
  cr_assert_str_eq(json_string_value(json_object_get(sum, "stage")), "mesos-master");
  cr_assert_str_eq(json_string_value(json_object_get(sum, "state")), "in_progress");
  json_decref(j);
  aggr_view_release(v);
  aggr_views_free(views);
}

Test(cause, root_cause_json_carries_the_sentence_and_what_it_blocks) {
  masters_up();
  agents_up_then_failing(T0 + 10 * SEC);
  const char *ids[] = {"m1", "m2", "m3"};
  for (size_t i = 0; i < 3; i++)
    set_comp(aggr_model_find(&model, ids[i]), "mm", MST_STATE_UNHEALTHY, T0 + 10 * SEC);
  evaluate(T0 + 11 * SEC);
  struct aggr_views *views = aggr_views_new();
  cr_assert_eq(aggr_view_publish(views, &model, true), 1);
  struct aggr_view *v = aggr_view_acquire(views);
  json_error_t err;
  json_t *h = json_loadb(v->health->data, v->health->len, 0, &err);
  cr_assert_not_null(h);
  json_t *roots = json_object_get(h, "root_causes");
  cr_assert_eq(json_array_size(roots), 3, "named once, though every agent lists them");
  json_t *r0 = json_array_get(roots, 0);
  cr_assert_str_eq(json_string_value(json_object_get(r0, "node")), "m1");
  cr_assert_str_eq(json_string_value(json_object_get(r0, "output")), "not ok");
  cr_assert_str_eq(json_string_value(json_object_get(r0, "since")), "2023-11-14T22:13:30.000Z");
  cr_assert(strstr(json_string_value(json_object_get(r0, "message")), "blocked: ma on a1..a5"));
  json_t *blocked = json_object_get(r0, "blocked");
  cr_assert_eq(json_array_size(blocked), 5);
  cr_assert_str_eq(json_string_value(json_object_get(json_array_get(blocked, 4), "node")), "a5");
  json_t *reasons = json_object_get(h, "reasons");
  bool seen = false;
  for (size_t i = 0; i < json_array_size(reasons); i++) {
    json_t *r = json_array_get(reasons, i);
    if (strcmp(json_string_value(json_object_get(r, "node")), "a1") == 0) {
      cr_assert_eq(json_array_size(json_object_get(r, "blocked_by")), 3);
      seen = true;
    }
  }
  cr_assert(seen);
  json_decref(h);
  aggr_view_release(v);
  aggr_views_free(views);
}

Test(unconfigured, roles_count_the_nodes_that_reported) {
  /* Without expected masters, a quorum is a majority of the masters seen. */
  struct aggr_node *m1 = report("m1", "master", "boot-1", T0);
  set_all(m1, MST_STATE_STARTING, T0);
  set_comp(m1, "zk", MST_STATE_HEALTHY, T0 + SEC);
  evaluate(T0 + 2 * SEC);
  cr_assert_str_eq(state_of("m1", "mesos-master"), "in_progress", "1 of 1 is a quorum");
  struct aggr_node *m2 = report("m2", "master", "boot-1", T0);
  set_all(m2, MST_STATE_STARTING, T0);
  evaluate(T0 + 3 * SEC);
  cr_assert_str_eq(state_of("m1", "mesos-master"), "pending", "1 of 2 is not");
}

/* --- incremental evaluation ------------------------------------------------------ */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static unsigned rnd(unsigned below) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (unsigned)(rng_state % below);
}

/* Random changes to a cluster of three masters, five agents, a strict node
 * and a diamond: components change state, nodes reboot, fall silent and
 * speak again, time moves on. After every evaluation, the nodes derived
 * again from scratch must come out exactly as the incremental evaluation
 * left them (evaluate_checked). */
Test(cause, incremental_evaluation_matches_a_full_one) {
  static const char *const ids[] = {"m1", "m2", "m3", "a1", "a2", "a3", "a4", "a5", "s1", "d1"};
  static const char *const roles[] = {"master", "master", "master", "agent",  "agent",
                                      "agent",  "agent",  "agent",  "strict", "diamond"};
  static const enum mst_state states[] = {MST_STATE_HEALTHY,   MST_STATE_HEALTHY,
                                          MST_STATE_WARNING,   MST_STATE_STARTING,
                                          MST_STATE_UNHEALTHY, MST_STATE_UNKNOWN};
  bool speaking[ELEMENTSOF(ids)];
  unsigned boots[ELEMENTSOF(ids)] = {0};
  uint64_t now = T0;
  size_t derived = 0, explained = 0, steps = 3000;

  for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
    set_all(report(ids[i], roles[i], "boot-0", T0), MST_STATE_STARTING, T0);
    speaking[i] = true;
  }
  for (size_t step = 0; step < steps; step++) {
    size_t i = rnd(ELEMENTSOF(ids));
    struct aggr_node *n = aggr_model_find(&model, ids[i]);
    const struct mst_profile *p = mst_profile_set_find(profiles, roles[i]);
    unsigned what = rnd(100);
    if (what < 70) {
      set_comp(n, p->components[rnd(p->n_components)].name, states[rnd(ELEMENTSOF(states))], now);
    } else if (what < 75) {
      char boot[16];
      snprintf(boot, sizeof(boot), "boot-%u", ++boots[i]);
      set_all(report(ids[i], roles[i], boot, now), MST_STATE_STARTING, now);
      speaking[i] = true;
    } else if (what < 85) {
      speaking[i] = !speaking[i];
    } else {
      now += rnd(20) * SEC; /* past the stale timeout of 30 s, some time */
    }
    now += 100 * USEC_PER_MSEC;
    /* A speaking node's frames move last_seen without marking it dirty. */
    for (size_t k = 0; k < ELEMENTSOF(ids); k++)
      if (speaking[k])
        aggr_node_apply_seen(aggr_model_find(&model, ids[k]), now);
    evaluate_checked(now);
    derived += last_derived;
    explained += last_explained;
  }
  /* It was incremental: most evaluations derived a node or two, not all. */
  cr_assert_lt(derived, steps * ELEMENTSOF(ids) / 3, "derived %zu node verdicts in %zu steps",
               derived, steps);
  cr_assert_lt(explained, steps * ELEMENTSOF(ids), "explained %zu nodes in %zu steps", explained,
               steps);
}
