/* Unit tests for mst/verdict.h: every row of the node and cluster verdict
 * tables, their precedence, and the names and exit codes musterctl uses. */
#include <criterion/criterion.h>
#include <string.h>

#include "mst/macro.h"
#include "mst/verdict.h"

#define H   MST_VERDICT_HEALTHY
#define D   MST_VERDICT_DEGRADED
#define S   MST_VERDICT_STARTING
#define L   MST_VERDICT_LATE
#define U   MST_VERDICT_UNHEALTHY
#define R   MST_VERDICT_UNREACHABLE
#define M   MST_VERDICT_MISSING
#define K   MST_VERDICT_UNKNOWN
#define MT  MST_VERDICT_MAINTENANCE
#define END _MST_VERDICT_MAX

struct node_case {
  const char *what;
  struct mst_node_facts facts;
  enum mst_verdict want;
};

static const struct node_case node_cases[] = {
    {"silent beats everything",
     {.silent = true, .have_snapshot = true, .n_unhealthy = 1, .late = true},
     R},
    {"silent without a snapshot", {.silent = true}, R},
    {"an unhealthy component", {.have_snapshot = true, .n_healthy = 3, .n_unhealthy = 1}, U},
    {"an unknown component", {.have_snapshot = true, .n_healthy = 3, .n_unknown = 1}, U},
    {"unhealthy beats late and starting",
     {.have_snapshot = true, .late = true, .n_starting = 2, .n_unhealthy = 1},
     U},
    {"late beats starting", {.have_snapshot = true, .late = true, .n_starting = 2}, L},
    {"late beats warnings",
     {.have_snapshot = true, .late = true, .n_starting = 1, .n_warning = 1},
     L},
    {"a starting component", {.have_snapshot = true, .n_healthy = 5, .n_starting = 1}, S},
    {"starting beats warnings", {.have_snapshot = true, .n_warning = 1, .n_starting = 1}, S},
    {"no snapshot yet", {.have_snapshot = false}, S},
    {"no snapshot yet, counts ignored", {.have_snapshot = false, .n_healthy = 4}, S},
    {"only warnings", {.have_snapshot = true, .n_healthy = 5, .n_warning = 2}, D},
    {"all healthy", {.have_snapshot = true, .n_healthy = 5}, H},
    {"no components", {.have_snapshot = true}, H},
    {"disconnected, all healthy", {.have_snapshot = true, .n_healthy = 5, .disconnected = true}, D},
    {"disconnected with warnings",
     {.have_snapshot = true, .n_warning = 1, .disconnected = true},
     D},
    {"disconnected stays starting",
     {.have_snapshot = true, .n_starting = 1, .disconnected = true},
     S},
    {"disconnected without a snapshot stays starting", {.disconnected = true}, S},
    {"disconnected stays unhealthy",
     {.have_snapshot = true, .n_unhealthy = 1, .disconnected = true},
     U},
    {"disconnected stays late", {.have_snapshot = true, .late = true, .disconnected = true}, L},
    {"silent beats disconnected", {.silent = true, .have_snapshot = true, .disconnected = true}, R},
    /* Issue 17: an agent that cannot record its state (its spool's disk is
     * full) reports states that may be stale. */
    {"a fault on an all-healthy node", {.have_snapshot = true, .n_healthy = 5, .fault = true}, U},
    {"a fault beats late, starting and warnings",
     {.have_snapshot = true, .late = true, .n_starting = 1, .n_warning = 1, .fault = true},
     U},
    {"a fault before the first snapshot", {.have_snapshot = false, .fault = true}, U},
    {"a fault without components", {.have_snapshot = true, .fault = true}, U},
    {"silent beats a fault", {.silent = true, .have_snapshot = true, .fault = true}, R},
    /* Issue 19: operator state. */
    {"maintenance beats silence",
     {.maintenance = true, .silent = true, .have_snapshot = true, .n_unhealthy = 1},
     MT},
    {"maintenance beats a fault and late", {.maintenance = true, .fault = true, .late = true}, MT},
    {"maintenance of a healthy node",
     {.maintenance = true, .have_snapshot = true, .n_healthy = 3},
     MT},
    {"maintenance before the first snapshot", {.maintenance = true}, MT},
    {"a component in maintenance, the rest healthy",
     {.have_snapshot = true, .n_healthy = 3, .n_maintenance = 1},
     D},
    {"a component in maintenance does not hide an unhealthy one",
     {.have_snapshot = true, .n_unhealthy = 1, .n_maintenance = 1},
     U},
    {"a component in maintenance does not hide starting",
     {.have_snapshot = true, .n_starting = 1, .n_maintenance = 1},
     S},
    {"silent beats a component in maintenance",
     {.silent = true, .have_snapshot = true, .n_maintenance = 1},
     R},
};

Test(verdict, node) {
  for (size_t i = 0; i < ELEMENTSOF(node_cases); i++) {
    const struct node_case *c = &node_cases[i];
    enum mst_verdict v = mst_node_verdict(&c->facts);
    cr_assert_eq(v, c->want, "%s: got %s, want %s", c->what, mst_verdict_to_string(v),
                 mst_verdict_to_string(c->want));
  }
}

struct cluster_case {
  const char *what;
  bool have_leader, have_data;
  enum mst_verdict masters[4]; /* terminated by END */
  enum mst_verdict others[4];
  enum mst_verdict want;
};

static const struct cluster_case cluster_cases[] = {
    {"no leader", false, true, {H, END}, {H, END}, K},
    {"no data yet", true, false, {END}, {END}, K},
    {"no leader beats a failed master", false, true, {U, END}, {END}, K},

    {"a master missing", true, true, {H, M, END}, {H, END}, U},
    {"a master unhealthy", true, true, {H, U, H, END}, {H, END}, U},
    {"a master unreachable", true, true, {R, H, END}, {H, END}, U},
    {"a master late", true, true, {L, H, END}, {H, END}, U},
    {"a failed master beats a starting one", true, true, {S, U, END}, {END}, U},

    {"a master starting", true, true, {S, H, END}, {H, END}, S},
    {"master starting while an agent failed => starting", true, true, {S, H, END}, {U, END}, S},
    {"master starting while an agent is unreachable", true, true, {S, END}, {R, L, END}, S},
    {"masters healthy, agents starting", true, true, {H, H, END}, {S, H, S, END}, S},
    {"masters healthy, only agents, all starting", true, true, {H, END}, {S, END}, S},

    {"masters healthy, an agent starting and one failed", true, true, {H, END}, {S, U, END}, D},
    {"a master degraded", true, true, {H, D, END}, {H, END}, D},
    {"a master degraded, an agent starting", true, true, {D, END}, {S, END}, D},
    {"an agent unhealthy", true, true, {H, END}, {H, U, END}, D},
    {"an agent unreachable", true, true, {H, END}, {R, END}, D},
    {"an agent late", true, true, {H, END}, {L, END}, D},
    {"an agent degraded", true, true, {H, END}, {D, H, END}, D},

    {"everything healthy", true, true, {H, H, H, END}, {H, H, END}, H},
    {"healthy masters, no agents", true, true, {H, END}, {END}, H},
    {"no expected masters, healthy agents", true, true, {END}, {H, END}, H},

    {"a master in maintenance => degraded", true, true, {H, MT, H, END}, {H, END}, D},
    {"every master in maintenance => degraded", true, true, {MT, MT, END}, {H, END}, D},
    {"a master in maintenance, agents failing behind it", true, true, {MT, END}, {U, R, END}, D},
    {"a master in maintenance, agents starting", true, true, {MT, H, END}, {S, END}, D},
    {"a master in maintenance does not hide a failed one", true, true, {MT, U, END}, {H, END}, U},
    {"a master in maintenance does not hide a starting one", true, true, {MT, S, END}, {H, END}, S},
    {"an agent in maintenance => degraded", true, true, {H, END}, {MT, H, END}, D},
    {"no leader beats maintenance", false, true, {MT, END}, {H, END}, K},
};

static size_t count_until_end(const enum mst_verdict *v) {
  size_t n = 0;
  while (v[n] != END)
    n++;
  return n;
}

Test(verdict, cluster) {
  for (size_t i = 0; i < ELEMENTSOF(cluster_cases); i++) {
    const struct cluster_case *c = &cluster_cases[i];
    struct mst_cluster_facts f = {
        .have_leader = c->have_leader,
        .have_data = c->have_data,
        .masters = c->masters,
        .n_masters = count_until_end(c->masters),
        .others = c->others,
        .n_others = count_until_end(c->others),
    };
    enum mst_verdict v = mst_cluster_verdict(&f);
    cr_assert_eq(v, c->want, "%s: got %s, want %s", c->what, mst_verdict_to_string(v),
                 mst_verdict_to_string(c->want));
  }
}

Test(verdict, names_round_trip) {
  static const char *const names[] = {"unknown",   "healthy",     "degraded", "starting",   "late",
                                      "unhealthy", "unreachable", "missing",  "maintenance"};
  for (int v = 0; v < _MST_VERDICT_MAX; v++) {
    cr_assert_str_eq(mst_verdict_to_string((enum mst_verdict)v), names[v]);
    cr_assert_eq(mst_verdict_from_string(names[v]), v);
  }
  cr_assert_null(mst_verdict_to_string(_MST_VERDICT_MAX));
  cr_assert_eq(mst_verdict_from_string("fine"), -EINVAL);
  cr_assert_eq(mst_verdict_from_string(""), -EINVAL);
  cr_assert_eq(mst_verdict_from_string(NULL), -EINVAL);
  cr_assert_str_eq(mst_verdict_name(MST_VERDICT_LATE), "late");
  cr_assert_str_eq(mst_verdict_name(_MST_VERDICT_MAX), "unknown");
  cr_assert_str_eq(mst_verdict_name(-1), "unknown");
}

Test(verdict, exit_codes) {
  static const struct {
    enum mst_verdict v;
    int code;
  } codes[] = {
      {H, 0}, {D, 1}, {S, 1}, {U, 2}, {L, 2}, {K, 3}, {R, 3}, {M, 3}, {MT, 1},
  };
  for (size_t i = 0; i < ELEMENTSOF(codes); i++)
    cr_assert_eq(mst_verdict_exit_code(codes[i].v), codes[i].code, "%s",
                 mst_verdict_to_string(codes[i].v));
}
