/* Operator state (operator.h): a sorted table of maintenance, ack and
 * forgotten entries keyed by (node, component, kind), its document form for
 * ZooKeeper and SQLite, and the parsing of the HTTP API's write bodies.
 * Pure: it neither logs nor reads the clock. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/operator.h"
#include "mst/duration.h"
#include "mst/macro.h"
#include "mst/str.h"
#include "mst/time.h"
#include "mst/utf8.h"

static const char *const kind_names[_AGGR_OP_KIND_MAX] = {
    [AGGR_OP_MAINTENANCE] = "maintenance",
    [AGGR_OP_ACK] = "ack",
    [AGGR_OP_FORGOTTEN] = "forgotten",
};

const char *aggr_op_kind_name(enum aggr_op_kind k) {
  return (unsigned)k < _AGGR_OP_KIND_MAX ? kind_names[k] : "unknown";
}

void aggr_operator_init(struct aggr_operator *op) {
  *op = (struct aggr_operator){.version = -1};
}

void aggr_op_entry_done(struct aggr_op_entry *e) {
  free(e->node);
  free(e->component);
  free(e->reason);
  free(e->by);
  *e = (struct aggr_op_entry){0};
}

void aggr_operator_done(struct aggr_operator *op) {
  if (!op)
    return;
  for (size_t i = 0; i < op->n; i++)
    aggr_op_entry_done(&op->v[i]);
  free(op->v);
  aggr_operator_init(op);
}

static int key_cmp(enum aggr_op_kind kind, const char *node, const char *component,
                   const struct aggr_op_entry *e) {
  int c = strcmp(node, e->node);
  if (c)
    return c;
  if (!component || !e->component) {
    if (component != e->component)
      return component ? 1 : -1;
  } else if ((c = strcmp(component, e->component)))
    return c;
  return (int)kind - (int)e->kind;
}

/* The position of the key, or where it would go; *found says which. */
static size_t lower_bound(const struct aggr_operator *op, enum aggr_op_kind kind, const char *node,
                          const char *component, bool *found) {
  size_t lo = 0, hi = op->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (key_cmp(kind, node, component, &op->v[mid]) > 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  *found = lo < op->n && key_cmp(kind, node, component, &op->v[lo]) == 0;
  return lo;
}

const struct aggr_op_entry *aggr_operator_find(const struct aggr_operator *op,
                                               enum aggr_op_kind kind, const char *node,
                                               const char *component) {
  bool found;
  if (!op || !node)
    return NULL;
  size_t i = lower_bound(op, kind, node, component, &found);
  return found ? &op->v[i] : NULL;
}

size_t aggr_operator_node_range(const struct aggr_operator *op, const char *node,
                                size_t *ret_first) {
  bool found;
  /* (node, NULL, 0) sorts before every entry of node. */
  size_t i = lower_bound(op, 0, node, NULL, &found), k = i;
  while (k < op->n && strcmp(op->v[k].node, node) == 0)
    k++;
  *ret_first = i;
  return k - i;
}

static int entry_copy(const struct aggr_op_entry *e, struct aggr_op_entry *ret) {
  struct aggr_op_entry c = {
      .kind = e->kind,
      .node = strdup(e->node),
      .component = e->component ? strdup(e->component) : NULL,
      .reason = strdup(e->reason ? e->reason : ""),
      .by = strdup(e->by ? e->by : ""),
      .since_usec = e->since_usec,
      .until_usec = e->until_usec,
  };
  if (!c.node || (e->component && !c.component) || !c.reason || !c.by) {
    aggr_op_entry_done(&c);
    return -ENOMEM;
  }
  *ret = c;
  return 0;
}

int aggr_operator_put(struct aggr_operator *op, const struct aggr_op_entry *e) {
  struct aggr_op_entry c;
  bool found;
  size_t i = lower_bound(op, e->kind, e->node, e->component, &found);

  if (!found && op->n >= AGGR_OP_ENTRIES_MAX)
    return -ENOSPC;
  if (entry_copy(e, &c) < 0)
    return -ENOMEM;
  if (found) {
    aggr_op_entry_done(&op->v[i]);
    op->v[i] = c;
    return 0;
  }
  struct aggr_op_entry *v = realloc(op->v, (op->n + 1) * sizeof(*v));
  if (!v) {
    aggr_op_entry_done(&c);
    return -ENOMEM;
  }
  op->v = v;
  memmove(&v[i + 1], &v[i], (op->n - i) * sizeof(*v));
  v[i] = c;
  op->n++;
  return 0;
}

static void remove_at(struct aggr_operator *op, size_t i) {
  aggr_op_entry_done(&op->v[i]);
  memmove(&op->v[i], &op->v[i + 1], (op->n - i - 1) * sizeof(op->v[0]));
  op->n--;
}

bool aggr_operator_remove(struct aggr_operator *op, enum aggr_op_kind kind, const char *node,
                          const char *component) {
  bool found;
  size_t i = lower_bound(op, kind, node, component, &found);
  if (found)
    remove_at(op, i);
  return found;
}

size_t aggr_operator_remove_node(struct aggr_operator *op, const char *node) {
  size_t first, n = aggr_operator_node_range(op, node, &first), removed = 0;
  for (size_t k = first + n; k-- > first;)
    if (op->v[k].kind != AGGR_OP_FORGOTTEN) {
      remove_at(op, k);
      removed++;
    }
  return removed;
}

int aggr_operator_copy(const struct aggr_operator *op, struct aggr_operator *ret) {
  struct aggr_operator c;
  aggr_operator_init(&c);
  c.version = op->version;
  if (op->n > 0 && !(c.v = calloc(op->n, sizeof(c.v[0]))))
    return -ENOMEM;
  for (; c.n < op->n; c.n++)
    if (entry_copy(&op->v[c.n], &c.v[c.n]) < 0) {
      aggr_operator_done(&c);
      return -ENOMEM;
    }
  *ret = c;
  return 0;
}

bool aggr_operator_equal(const struct aggr_operator *a, const struct aggr_operator *b) {
  if (a->n != b->n)
    return false;
  for (size_t i = 0; i < a->n; i++) {
    const struct aggr_op_entry *x = &a->v[i], *y = &b->v[i];
    if (x->kind != y->kind || !mst_str_eq(x->node, y->node) ||
        !mst_str_eq(x->component, y->component) || !mst_str_eq(x->reason, y->reason) ||
        !mst_str_eq(x->by, y->by) || x->since_usec != y->since_usec ||
        x->until_usec != y->until_usec)
      return false;
  }
  return true;
}

bool aggr_op_active(const struct aggr_op_entry *e, uint64_t now_usec) {
  return e && (e->kind != AGGR_OP_MAINTENANCE || e->until_usec == 0 || e->until_usec > now_usec);
}

/* --- the document ------------------------------------------------------------ */

char *aggr_operator_to_json(const struct aggr_operator *op) {
  json_t *entries = json_array(), *doc = NULL;
  char *s = NULL;

  if (!entries)
    return NULL;
  for (size_t i = 0; i < op->n; i++) {
    const struct aggr_op_entry *e = &op->v[i];
    json_t *j = json_pack("{ssssss?sssssIsI}", "kind", aggr_op_kind_name(e->kind), "node", e->node,
                          "component", e->component, "reason", e->reason ? e->reason : "", "by",
                          e->by ? e->by : "", "since", (json_int_t)(e->since_usec / 1000), "until",
                          (json_int_t)(e->until_usec / 1000));
    if (!j || json_array_append_new(entries, j) < 0)
      goto out;
  }
  doc = json_pack("{sisO}", "version", 1, "entries", entries);
  if (doc)
    s = json_dumps(doc, JSON_COMPACT);
out:
  json_decref(entries);
  json_decref(doc);
  return s;
}

/* A string member of at most max bytes of valid UTF-8, or NULL when absent
 * and optional. Returns 0 or -EINVAL. */
static int member_string(json_t *o, const char *key, size_t max, bool required, const char **ret) {
  json_t *v = json_object_get(o, key);
  *ret = NULL;
  if (!v || json_is_null(v))
    return required ? -EINVAL : 0;
  if (!json_is_string(v) || json_string_length(v) > max || !json_string_length(v) ||
      strlen(json_string_value(v)) != json_string_length(v))
    return -EINVAL;
  *ret = json_string_value(v);
  return 0;
}

int aggr_operator_from_json(const char *s, size_t len, struct aggr_operator *ret, char *err,
                            size_t errsize) {
  struct aggr_operator op;
  json_error_t jerr;
  json_t *doc, *entries;
  int r = 0;

  aggr_operator_init(&op);
  if (len == 0) {
    *ret = op;
    return 0;
  }
  doc = json_loadb(s, len, 0, &jerr);
  entries = doc ? json_object_get(doc, "entries") : NULL;
  if (!json_is_array(entries)) {
    snprintf(err, errsize, "not an operator document: %s", doc ? "no entries" : jerr.text);
    json_decref(doc);
    return -EINVAL;
  }
  for (size_t i = 0; i < json_array_size(entries) && r >= 0; i++) {
    json_t *j = json_array_get(entries, i), *since = json_object_get(j, "since"),
           *until = json_object_get(j, "until");
    const char *kind, *node, *component, *reason, *by;
    if (member_string(j, "kind", 32, true, &kind) < 0 ||
        member_string(j, "node", AGGR_OP_NAME_MAX, true, &node) < 0 ||
        member_string(j, "component", AGGR_OP_NAME_MAX, false, &component) < 0 ||
        member_string(j, "reason", AGGR_OP_REASON_MAX, false, &reason) < 0 ||
        member_string(j, "by", AGGR_OP_BY_MAX, false, &by) < 0 || !json_is_integer(since) ||
        !json_is_integer(until) || json_integer_value(since) < 0 || json_integer_value(until) < 0 ||
        mst_str_table_find(kind_names, _AGGR_OP_KIND_MAX, kind) < 0) {
      snprintf(err, errsize, "entry %zu is not well-formed", i);
      r = -EINVAL;
      break;
    }
    struct aggr_op_entry e = {
        .kind = (enum aggr_op_kind)mst_str_table_find(kind_names, _AGGR_OP_KIND_MAX, kind),
        .node = (char *)node,
        .component = (char *)component,
        .reason = (char *)reason,
        .by = (char *)by,
        .since_usec = (uint64_t)json_integer_value(since) * 1000,
        .until_usec = (uint64_t)json_integer_value(until) * 1000,
    };
    r = aggr_operator_put(&op, &e);
    if (r == -ENOSPC) {
      snprintf(err, errsize, "more than %d entries", AGGR_OP_ENTRIES_MAX);
      r = -EINVAL;
    }
  }
  json_decref(doc);
  if (r < 0) {
    aggr_operator_done(&op);
    return r;
  }
  *ret = op;
  return 0;
}

/* --- write bodies ------------------------------------------------------------ */

static bool reason_ok(const char *s) {
  if (!mst_utf8_valid(s))
    return false;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if (*p < 0x20 || *p == 0x7f)
      return false;
  return true;
}

int aggr_operator_parse_body(enum aggr_op_kind kind, const char *body, size_t len,
                             uint64_t now_usec, char **ret_reason, uint64_t *ret_until_usec,
                             char *err, size_t errsize) {
  json_error_t jerr;
  json_t *doc = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &jerr);
  const char *reason, *until_s, *duration_s, *key;
  uint64_t until = 0, d;
  json_t *v;
  int r = -EINVAL;

  if (!json_is_object(doc)) {
    snprintf(err, errsize, "the body must be a JSON object such as {\"reason\": \"...\"}%s%s",
             doc ? "" : ": ", doc ? "" : jerr.text);
    goto out;
  }
  json_object_foreach(doc, key, v) {
    bool known =
        strcmp(key, "reason") == 0 || (kind == AGGR_OP_MAINTENANCE &&
                                       (strcmp(key, "until") == 0 || strcmp(key, "duration") == 0));
    if (!known) {
      snprintf(err, errsize, "unknown member '%.64s'", key);
      goto out;
    }
  }
  if (member_string(doc, "reason", AGGR_OP_REASON_MAX, true, &reason) < 0 || !reason_ok(reason)) {
    snprintf(err, errsize,
             "'reason' is required: a string of 1 to %d bytes of UTF-8 without control "
             "characters",
             AGGR_OP_REASON_MAX);
    goto out;
  }
  if (member_string(doc, "until", 64, false, &until_s) < 0 ||
      member_string(doc, "duration", 64, false, &duration_s) < 0) {
    snprintf(err, errsize, "'until' and 'duration' must be strings");
    goto out;
  }
  if (until_s && duration_s) {
    snprintf(err, errsize, "give 'until' or 'duration', not both");
    goto out;
  }
  if (until_s && mst_time_parse_rfc3339(until_s, &until) < 0) {
    snprintf(err, errsize, "'until' must be an RFC 3339 time such as 2026-11-25T01:02:03Z");
    goto out;
  }
  if (duration_s) {
    if (mst_duration_parse(duration_s, &d) < 0 || d == 0 || d > AGGR_OP_UNTIL_MAX_USEC) {
      snprintf(err, errsize, "'duration' must be a duration such as 2h, at most 366 days");
      goto out;
    }
    until = now_usec + d;
  }
  if (until && (until <= now_usec || until - now_usec > AGGR_OP_UNTIL_MAX_USEC)) {
    snprintf(err, errsize, "'until' must lie in the future, at most 366 days ahead");
    goto out;
  }
  *ret_reason = strdup(reason);
  if (!*ret_reason) {
    r = -ENOMEM;
    goto out;
  }
  *ret_until_usec = until;
  r = 0;
out:
  json_decref(doc);
  return r;
}
