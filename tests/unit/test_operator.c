/* Unit tests for model/operator.h (issue 19): the table's keys and order,
 * the document's round trip and its refusals, the HTTP write bodies, the
 * write routes (httpparse.h), and the model's hooks: maintenance making a
 * node "maintenance" and a component a warning, forgetting a node. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/evaluate.h"
#include "model/model.h"
#include "model/operator.h"
#include "serve/httpparse.h"
#include "mst/macro.h"

#define NOW  (1800000000ULL * 1000000)
#define HOUR (3600ULL * 1000000)

static struct aggr_op_entry entry(enum aggr_op_kind kind, const char *node, const char *comp) {
  return (struct aggr_op_entry){.kind = kind,
                                .node = (char *)node,
                                .component = (char *)comp,
                                .reason = "why",
                                .by = "alice",
                                .since_usec = NOW,
                                .until_usec = kind == AGGR_OP_MAINTENANCE ? NOW + HOUR : 0};
}

Test(operator, table_keys_and_round_trip) {
  struct aggr_operator op, back;
  aggr_operator_init(&op);
  const struct aggr_op_entry v[] = {
      entry(AGGR_OP_ACK, "a1", "svc"),         entry(AGGR_OP_MAINTENANCE, "m1", NULL),
      entry(AGGR_OP_MAINTENANCE, "a1", "svc"), entry(AGGR_OP_MAINTENANCE, "a1", NULL),
      entry(AGGR_OP_FORGOTTEN, "z9", NULL),
  };
  for (size_t i = 0; i < ELEMENTSOF(v); i++)
    cr_assert_eq(aggr_operator_put(&op, &v[i]), 0);
  cr_assert_eq(aggr_operator_put(&op, &v[1]), 0, "a second put replaces");
  cr_assert_eq(op.n, 5);
  /* node, then component (the node itself first), then kind */
  cr_assert_str_eq(op.v[0].node, "a1");
  cr_assert_null(op.v[0].component);
  cr_assert_eq(op.v[1].kind, AGGR_OP_MAINTENANCE);
  cr_assert_eq(op.v[2].kind, AGGR_OP_ACK);
  cr_assert_not_null(aggr_operator_find(&op, AGGR_OP_ACK, "a1", "svc"));
  cr_assert_null(aggr_operator_find(&op, AGGR_OP_ACK, "a1", NULL));
  cr_assert_null(aggr_operator_find(&op, AGGR_OP_ACK, "a2", "svc"));
  size_t first, n = aggr_operator_node_range(&op, "a1", &first);
  cr_assert(first == 0 && n == 3);

  char *doc = aggr_operator_to_json(&op), err[160];
  cr_assert_not_null(doc);
  cr_assert_eq(aggr_operator_from_json(doc, strlen(doc), &back, err, sizeof(err)), 0, "%s", err);
  cr_assert(aggr_operator_equal(&op, &back));
  free(doc);

  cr_assert_eq(aggr_operator_remove_node(&back, "a1"), 3);
  cr_assert_eq(aggr_operator_remove_node(&back, "z9"), 0, "a forgotten entry stays");
  cr_assert(aggr_operator_remove(&back, AGGR_OP_MAINTENANCE, "m1", NULL));
  cr_assert_not(aggr_operator_remove(&back, AGGR_OP_MAINTENANCE, "m1", NULL));
  cr_assert_eq(back.n, 1);
  aggr_operator_done(&back);
  aggr_operator_done(&op);
}

Test(operator, bad_documents) {
  static const char *const docs[] = {
      "[]",
      "{\"entries\":{}}",
      "{\"entries\":[{\"kind\":\"holiday\",\"node\":\"a\",\"since\":0,\"until\":0}]}",
      "{\"entries\":[{\"kind\":\"ack\",\"since\":0,\"until\":0}]}",
      "{\"entries\":[{\"kind\":\"ack\",\"node\":\"a\",\"since\":-1,\"until\":0}]}",
      "not json",
  };
  struct aggr_operator op;
  char err[160];
  for (size_t i = 0; i < ELEMENTSOF(docs); i++)
    cr_assert_eq(aggr_operator_from_json(docs[i], strlen(docs[i]), &op, err, sizeof(err)), -EINVAL,
                 "%s", docs[i]);
  cr_assert_eq(aggr_operator_from_json("", 0, &op, err, sizeof(err)), 0, "empty: no entries");
  cr_assert_eq(op.n, 0);
}

Test(operator, full_table) {
  struct aggr_operator op;
  char node[32];
  aggr_operator_init(&op);
  for (int i = 0; i < AGGR_OP_ENTRIES_MAX; i++) {
    snprintf(node, sizeof(node), "n%05d", i);
    struct aggr_op_entry e = entry(AGGR_OP_MAINTENANCE, node, NULL);
    cr_assert_eq(aggr_operator_put(&op, &e), 0);
  }
  struct aggr_op_entry e = entry(AGGR_OP_MAINTENANCE, "zz", NULL);
  cr_assert_eq(aggr_operator_put(&op, &e), -ENOSPC);
  e = entry(AGGR_OP_MAINTENANCE, "n00000", NULL);
  cr_assert_eq(aggr_operator_put(&op, &e), 0, "a replacement fits");
  aggr_operator_done(&op);
}

struct body_case {
  enum aggr_op_kind kind;
  const char *body;
  int want;
  uint64_t until;
};

Test(operator, write_bodies) {
  static const struct body_case cases[] = {
      {AGGR_OP_MAINTENANCE, "{\"reason\":\"kernel\"}", 0, 0},
      {AGGR_OP_MAINTENANCE, "{\"reason\":\"kernel\",\"duration\":\"2h\"}", 0, NOW + 2 * HOUR},
      {AGGR_OP_MAINTENANCE, "{\"reason\":\"k\",\"until\":\"2027-01-15T16:00:00Z\"}", 0,
       NOW + 8 * HOUR},
      {AGGR_OP_MAINTENANCE, "{\"reason\":\"k\",\"until\":\"2027-01-15T08:00:00Z\"}", -EINVAL, 0},
      {AGGR_OP_ACK, "{\"reason\":\"JIRA-1\"}", 0, 0},
      {AGGR_OP_ACK, "{\"reason\":\"x\",\"duration\":\"2h\"}", -EINVAL, 0},
      {AGGR_OP_MAINTENANCE, "{}", -EINVAL, 0},
      {AGGR_OP_MAINTENANCE, "{\"reason\":\"\"}", -EINVAL, 0},
      {AGGR_OP_MAINTENANCE, "{\"reason\":\"a\\nb\"}", -EINVAL, 0},
      {AGGR_OP_MAINTENANCE, "{\"reason\":\"a\\u0000b\"}", -EINVAL, 0},
      {AGGR_OP_MAINTENANCE, "{\"reason\":3}", -EINVAL, 0},
      {AGGR_OP_MAINTENANCE, "{\"reason\":\"x\",\"reason\":\"y\"}", -EINVAL, 0},
      {AGGR_OP_MAINTENANCE, "{\"reason\":\"x\",\"duration\":\"0s\"}", -EINVAL, 0},
      {AGGR_OP_MAINTENANCE, "{\"reason\":\"x\",\"duration\":\"400d\"}", -EINVAL, 0},
      {AGGR_OP_MAINTENANCE, "{\"reason\":\"x\",\"until\":\"2020-01-01T00:00:00Z\"}", -EINVAL, 0},
      {AGGR_OP_MAINTENANCE, "{\"reason\":\"x\",\"until\":\"tomorrow\"}", -EINVAL, 0},
      {AGGR_OP_MAINTENANCE,
       "{\"reason\":\"x\",\"until\":\"2027-01-15T08:00:00Z\",\"duration\":\"1h\"}", -EINVAL, 0},
      {AGGR_OP_MAINTENANCE, "[\"reason\"]", -EINVAL, 0},
      {AGGR_OP_MAINTENANCE, "", -EINVAL, 0},
  };
  for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
    char *reason = NULL, err[256] = "";
    uint64_t until = 1;
    int r = aggr_operator_parse_body(cases[i].kind, cases[i].body, strlen(cases[i].body), NOW,
                                     &reason, &until, err, sizeof(err));
    cr_assert_eq(r, cases[i].want, "%s: %d %s", cases[i].body, r, err);
    if (r == 0)
      cr_assert_eq(until, cases[i].until, "%s", cases[i].body);
    else
      cr_assert(err[0], "%s: no message", cases[i].body);
    free(reason);
  }
  char big[600];
  memset(big, 'x', sizeof(big));
  memcpy(big, "{\"reason\":\"", 11);
  memcpy(big + sizeof(big) - 3, "\"}", 3);
  char *reason = NULL, err[256];
  uint64_t until;
  cr_assert_eq(aggr_operator_parse_body(AGGR_OP_ACK, big, strlen(big), NOW, &reason, &until, err,
                                        sizeof(err)),
               -EINVAL);
}

struct route_case {
  const char *path;
  bool put;
  int want;
  enum aggr_http_write_kind kind;
  const char *node, *component;
};

Test(operator, write_routes) {
  static const struct route_case cases[] = {
      {"/v1/nodes/m1/maintenance", true, 0, AGGR_HTTP_WRITE_MAINTENANCE_SET, "m1", NULL},
      {"/v1/nodes/m1/maintenance", false, 0, AGGR_HTTP_WRITE_MAINTENANCE_CLEAR, "m1", NULL},
      {"/v1/nodes/a1/components/mesos-agent/maintenance", true, 0, AGGR_HTTP_WRITE_MAINTENANCE_SET,
       "a1", "mesos-agent"},
      {"/v1/nodes/a1/components/x.service/ack", true, 0, AGGR_HTTP_WRITE_ACK_SET, "a1",
       "x.service"},
      {"/v1/nodes/a1/components/x/ack", false, 0, AGGR_HTTP_WRITE_ACK_CLEAR, "a1", "x"},
      {"/v1/nodes/a1", false, 0, AGGR_HTTP_WRITE_FORGET, "a1", NULL},
      {"/v1/nodes/a1", true, -ENOENT, 0, NULL, NULL},
      {"/v1/nodes/a1/", false, -ENOENT, 0, NULL, NULL},
      {"/v1/nodes/a1/ack", true, -ENOENT, 0, NULL, NULL},
      {"/v1/nodes/a1/components/x", true, -ENOENT, 0, NULL, NULL},
      {"/v1/nodes/a1/components/x/y", true, -ENOENT, 0, NULL, NULL},
      {"/v1/nodes/a1/components//ack", true, -EINVAL, 0, NULL, NULL},
      {"/v1/nodes/a1/components/a/b/ack", true, -EINVAL, 0, NULL, NULL},
      {"/v1/nodes//maintenance", true, -EINVAL, 0, NULL, NULL},
      {"/v1/health", true, -ENOENT, 0, NULL, NULL},
  };
  for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
    enum aggr_http_write_kind kind;
    char *node = NULL, *comp = NULL;
    int r = aggr_http_write_route(cases[i].path, cases[i].put, &kind, &node, &comp);
    cr_assert_eq(r, cases[i].want, "%s: %d", cases[i].path, r);
    if (r < 0)
      continue;
    cr_assert_eq(kind, cases[i].kind, "%s", cases[i].path);
    cr_assert_str_eq(node, cases[i].node);
    if (cases[i].component)
      cr_assert_str_eq(comp, cases[i].component);
    else
      cr_assert_null(comp);
    free(node);
    free(comp);
  }
}

static void report(struct aggr_model *m, const char *id, const char *role, enum mst_state st) {
  struct aggr_node *n = aggr_model_get(m, id);
  struct aggr_hello_report h = {.role = role, .hostname = id, .boot_id = "b1"};
  cr_assert_eq(aggr_model_apply_hello(m, n, &h, NULL, NOW), 0);
  struct aggr_component_report c = {.name = "svc", .state = st, .since_usec = NOW};
  cr_assert_eq(aggr_node_apply_snapshot(n, &c, 1), 0);
  aggr_node_apply_seen(n, NOW);
}

static void set_table(struct aggr_model *m, const struct aggr_op_entry *v, size_t n) {
  struct aggr_operator op;
  aggr_operator_init(&op);
  for (size_t i = 0; i < n; i++)
    cr_assert_eq(aggr_operator_put(&op, &v[i]), 0);
  (void)aggr_model_set_operator(m, &op);
}

Test(operator, model_verdicts) {
  static char *const masters[] = {"m1", NULL};
  struct aggr_model m;
  struct aggr_stage st = {0};
  cr_assert_eq(aggr_model_init(&m, NULL, masters, 5 * 1000000), 0);
  cr_assert_eq(aggr_model_set_leader(&m, true, "x", NULL, 1), 1);
  report(&m, "m1", "master", MST_STATE_HEALTHY);
  report(&m, "a1", "agent", MST_STATE_UNHEALTHY);
  aggr_model_evaluate(&m, &st, NOW);
  cr_assert_eq(m.verdict, MST_VERDICT_DEGRADED);

  /* m1 in maintenance and silent: maintenance, the cluster degraded */
  struct aggr_op_entry v[] = {entry(AGGR_OP_MAINTENANCE, "m1", NULL),
                              entry(AGGR_OP_MAINTENANCE, "a1", "svc")};
  set_table(&m, v, 2);
  aggr_model_evaluate(&m, &st, NOW + 1000000);
  cr_assert_eq(aggr_model_find(&m, "m1")->verdict, MST_VERDICT_MAINTENANCE);
  cr_assert_eq(aggr_model_find(&m, "a1")->verdict, MST_VERDICT_DEGRADED,
               "a component in maintenance is a warning");
  cr_assert_eq(m.verdict, MST_VERDICT_DEGRADED);
  cr_assert_eq(aggr_model_check(&m, NOW + 1000000), 0);
  /* silent past the stale timeout: m1 stays in maintenance */
  aggr_model_evaluate(&m, &st, NOW + 10 * 1000000);
  cr_assert_eq(aggr_model_find(&m, "m1")->verdict, MST_VERDICT_MAINTENANCE);
  cr_assert_eq(aggr_model_find(&m, "a1")->verdict, MST_VERDICT_UNREACHABLE);
  cr_assert_eq(m.verdict, MST_VERDICT_DEGRADED, "never unhealthy for a master in maintenance");
  cr_assert_eq(aggr_model_check(&m, NOW + 10 * 1000000), 0);
  /* the ends by the clock are followed by evaluation */
  cr_assert_eq(aggr_model_next_stale_usec(&m) <= NOW + HOUR, true);
  aggr_model_evaluate(&m, &st, NOW + HOUR + 1);
  cr_assert_eq(aggr_model_find(&m, "m1")->verdict, MST_VERDICT_UNREACHABLE);
  cr_assert_eq(aggr_model_find(&m, "a1")->verdict, MST_VERDICT_UNREACHABLE);
  cr_assert_eq(m.verdict, MST_VERDICT_UNHEALTHY);
  cr_assert_eq(aggr_model_check(&m, NOW + HOUR + 1), 0);

  /* forgetting: a connected node stays; one not connected goes */
  struct aggr_op_entry f = entry(AGGR_OP_FORGOTTEN, "a1", NULL);
  f.until_usec = NOW;
  set_table(&m, &f, 1);
  cr_assert_null(aggr_model_find(&m, "a1"));
  cr_assert_eq(aggr_model_forget(&m, "a1"), -ENOENT);
  aggr_model_done(&m);
}
