/* Root causes across the cluster (cause.h): the vertices that are not up,
 * what each of them depends on, and which problems explain the others.
 *
 * DESIGN
 *   What a vertex reaches is a set of problems. Computing it per vertex by
 *   walking the graph would repeat the same walks for every component of a
 *   stage (and of every agent requiring the same master stage), so the sets
 *   are memoized where they are shared: per (node, stage), everything the
 *   stages it comes after and its unmet conditions lead to; per requirement,
 *   what the nodes failing it lead to. A vertex's set is the union over the
 *   stages it belongs to. Sets are sorted arrays of vertex indices: problems
 *   are few even when vertices are many (a mass boot has thousands of
 *   components starting and, usually, no problem at all, in which case
 *   nothing beyond listing the vertices is done). Memo entries on the stack
 *   of the walk count as empty, which is how a dependency cycle (the loader
 *   refuses them within a profile; across roles they are possible) ends. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "model/cause.h"
#include "model/model.h"
#include "mst/dynbuf.h"
#include "mst/macro.h"
#include "model/stage.h"

struct set {
  size_t *v;
  size_t n, cap;
};

enum { MEMO_NONE, MEMO_BUSY, MEMO_DONE };

struct req_memo {
  const struct aggr_requirement *rq;
  unsigned char state;
  bool holds;
  struct set reach;
};

struct analysis {
  const struct aggr_model *m;
  uint64_t now;
  struct aggr_cause *c;
  bool masters_configured;
  bool oom;
  struct set *reach; /* per vertex */
  unsigned char *reach_state;
  size_t *stage_first; /* per node: first (node, stage) slot, SIZE_MAX without startup */
  struct set *stage_reach;
  unsigned char *stage_state;
  struct req_memo *reqs;
  size_t n_reqs;
};

static const struct set empty_set;

static void set_done(struct set *s) {
  free(s->v);
  *s = (struct set){0};
}

static void set_add(struct analysis *a, struct set *s, size_t x) {
  size_t lo = 0, hi = s->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (s->v[mid] == x)
      return;
    if (s->v[mid] < x)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 4;
    size_t *v = realloc(s->v, cap * sizeof(size_t));
    if (!v) {
      a->oom = true;
      return;
    }
    s->v = v;
    s->cap = cap;
  }
  memmove(&s->v[lo + 1], &s->v[lo], (s->n - lo) * sizeof(size_t));
  s->v[lo] = x;
  s->n++;
}

static void set_union(struct analysis *a, struct set *dst, const struct set *src) {
  for (size_t i = 0; i < src->n; i++)
    set_add(a, dst, src->v[i]);
}

static bool failing_state(enum mst_state s) {
  return s != MST_STATE_HEALTHY && s != MST_STATE_STARTING && s != MST_STATE_WARNING;
}

static bool up_state(enum mst_state s) {
  return s == MST_STATE_HEALTHY || s == MST_STATE_WARNING;
}

static bool strv_has(char *const *v, const char *s) {
  for (size_t i = 0; v && v[i]; i++)
    if (strcmp(v[i], s) == 0)
      return true;
  return false;
}

size_t aggr_cause_find(const struct aggr_cause *c, size_t node_index, const char *component) {
  if (!c->first)
    return SIZE_MAX;
  for (size_t k = c->first[node_index]; k < c->first[node_index] + c->count[node_index]; k++) {
    const struct aggr_cause_vertex *v = &c->v[k];
    if (component ? v->comp && strcmp(v->comp->name, component) == 0 : !v->comp)
      return k;
  }
  return SIZE_MAX;
}

void aggr_cause_done(struct aggr_cause *c) {
  for (size_t i = 0; i < c->n; i++) {
    free(c->v[i].roots);
    free(c->v[i].via);
    free(c->v[i].blocked);
  }
  free(c->v);
  free(c->first);
  free(c->count);
  *c = (struct aggr_cause){0};
}

/* --- vertices ------------------------------------------------------------ */

static int vertex_add(struct aggr_cause *c, size_t *cap, struct aggr_node *n, size_t node_index,
                      const struct aggr_component *comp, bool problem) {
  if (c->n == *cap) {
    size_t ncap = *cap ? *cap * 2 : 16;
    struct aggr_cause_vertex *v = realloc(c->v, ncap * sizeof(*v));
    if (!v)
      return -ENOMEM;
    c->v = v;
    *cap = ncap;
  }
  c->v[c->n++] = (struct aggr_cause_vertex){
      .node = n, .node_index = node_index, .comp = comp, .problem = problem};
  return 0;
}

/* The stage of the node's profile that is late and lists name, or SIZE_MAX. */
static size_t late_stage_of(const struct aggr_startup *s, const char *name) {
  if (!s || !s->late)
    return SIZE_MAX;
  for (size_t k = 0; k < s->profile->n_stages; k++) {
    const struct mst_stage *st = &s->profile->stages[k];
    if (s->stages[k].state == AGGR_STAGE_LATE &&
        (strv_has(st->components, name) || strv_has(st->milestones, name)))
      return k;
  }
  return SIZE_MAX;
}

static int vertices_build(struct analysis *a) {
  const struct aggr_model *m = a->m;
  struct aggr_cause *c = a->c;
  size_t cap = 0;

  for (size_t i = 0; i < m->n_nodes; i++) {
    struct aggr_node *n = m->nodes[i];
    const struct aggr_startup *s = n->startup;
    c->first[i] = c->n;
    if (!n->reported || aggr_node_silent(m, n, a->now)) {
      /* Missing, or silent: its component states are stale; the node
       * itself is the problem. An expected master still within the
       * first-contact window is none: it is starting. */
      if ((n->reported || (n->expected_master && !aggr_node_awaited(m, n, a->now))) &&
          vertex_add(c, &cap, n, i, NULL, true) < 0)
        return -ENOMEM;
      c->count[i] = c->n - c->first[i];
      continue;
    }
    for (size_t k = 0; n->n_down > 0 && k < n->n_components; k++) {
      const struct aggr_component *comp = &n->components[k];
      if (up_state(comp->state))
        continue;
      size_t late = late_stage_of(s, comp->name);
      if (late == SIZE_MAX && s && aggr_stage_milestone_only(s->graph, comp->name))
        continue; /* progress only: not a health problem */
      if (vertex_add(c, &cap, n, i, comp, late != SIZE_MAX || failing_state(comp->state)) < 0)
        return -ENOMEM;
      c->v[c->n - 1].late = late != SIZE_MAX;
      c->v[c->n - 1].late_stage = late;
    }
    /* An agent that cannot record its state: what it last reported may be
     * stale, so the node itself is a problem, as if silent; its vertex
     * comes after its components', which keep the components' order. */
    if (n->agent_fault && vertex_add(c, &cap, n, i, NULL, true) < 0)
      return -ENOMEM;
    c->count[i] = c->n - c->first[i];
  }
  return 0;
}

/* --- what each vertex reaches -------------------------------------------- */

static const struct set *vertex_reach(struct analysis *a, size_t v);

/* Adds the vertices of stage k of node i (and what they reach) to out. */
static void stage_vertices_add(struct analysis *a, size_t i, size_t k, struct set *out) {
  const struct aggr_node *n = a->m->nodes[i];
  const struct mst_stage *st = &n->startup->profile->stages[k];
  char *const *lists[] = {st->components, st->milestones};
  for (size_t l = 0; l < ELEMENTSOF(lists); l++)
    for (size_t j = 0; lists[l] && lists[l][j]; j++) {
      size_t u = aggr_cause_find(a->c, i, lists[l][j]);
      if (u == SIZE_MAX)
        continue;
      if (a->c->v[u].problem)
        set_add(a, out, u);
      set_union(a, out, vertex_reach(a, u));
    }
}

static bool stage_failing_now(const struct aggr_node *n, size_t k) {
  char *const *names = n->startup->profile->stages[k].components;
  for (size_t j = 0; names && names[j]; j++) {
    const struct aggr_component *comp = aggr_node_find_component(n, names[j]);
    if (comp && failing_state(comp->state))
      return true;
  }
  return false;
}

/* Whether node n has stage k now: reached in this boot, speaking, nothing
 * of it or before it failing. */
static bool stage_holds_now(const struct analysis *a, const struct aggr_node *n, size_t k) {
  const struct aggr_startup *s = n->startup;
  if (!n->reported || aggr_node_silent(a->m, n, a->now) || n->agent_fault ||
      s->stages[k].reached_usec == 0 || stage_failing_now(n, k))
    return false;
  const struct aggr_stage_node *sn = &s->graph->stages[k];
  for (size_t j = 0; j < sn->n_upstream; j++)
    if (stage_failing_now(n, sn->upstream[j]))
      return false;
  return true;
}

static bool role_member(const struct analysis *a, const struct aggr_node *n) {
  if (a->masters_configured && strcmp(n->role, "master") == 0)
    return n->expected_master;
  return n->reported;
}

static const struct set *requirement_reach(struct analysis *a, const struct aggr_requirement *rq) {
  struct req_memo *memo = NULL;
  for (size_t k = 0; k < a->n_reqs; k++)
    if (a->reqs[k].rq == rq)
      memo = &a->reqs[k];
  if (!memo) {
    memo = MST_ARRAY_APPEND(a->reqs, a->n_reqs);
    if (!memo) {
      a->oom = true;
      return &empty_set;
    }
    a->n_reqs++;
    *memo = (struct req_memo){.rq = rq};
  }
  if (memo->state != MEMO_NONE)
    return &memo->reach;
  memo->state = MEMO_BUSY;

  size_t total = 0, ok = 0, need;
  for (size_t i = 0; i < a->m->n_nodes; i++) {
    const struct aggr_node *y = a->m->nodes[i];
    if (!y->role || strcmp(y->role, rq->role) != 0 || !role_member(a, y))
      continue;
    total++;
    size_t t = y->startup ? aggr_stage_index(y->startup->profile, rq->stage) : SIZE_MAX;
    if (t != SIZE_MAX && stage_holds_now(a, y, t))
      ok++;
  }
  need = rq->mode == AGGR_REQUIRE_QUORUM ? total / 2 + 1 : rq->mode == AGGR_REQUIRE_ALL ? total : 1;
  memo->holds = total > 0 && need > 0 && ok >= need;

  /* Unmet: what stands in the way on every node that does not hold it. The
   * memo entry may move while the walk grows the array: keep its index. */
  size_t idx = (size_t)(memo - a->reqs);
  struct set reach = {0};
  for (size_t i = 0; !a->reqs[idx].holds && i < a->m->n_nodes; i++) {
    const struct aggr_node *y = a->m->nodes[i];
    if (!y->role || strcmp(y->role, rq->role) != 0 || !role_member(a, y))
      continue;
    size_t nv = aggr_cause_find(a->c, i, NULL);
    if (nv != SIZE_MAX) {
      set_add(a, &reach, nv);
      continue;
    }
    size_t t = y->startup ? aggr_stage_index(y->startup->profile, rq->stage) : SIZE_MAX;
    if (t == SIZE_MAX || stage_holds_now(a, y, t))
      continue;
    stage_vertices_add(a, i, t, &reach);
    const struct aggr_stage_node *sn = &y->startup->graph->stages[t];
    for (size_t j = 0; j < sn->n_upstream; j++)
      stage_vertices_add(a, i, sn->upstream[j], &reach);
  }
  memo = &a->reqs[idx];
  memo->reach = reach;
  memo->state = MEMO_DONE;
  return &memo->reach;
}

/* Everything stage k of node i depends on reaches. */
static const struct set *stage_reach(struct analysis *a, size_t i, size_t k) {
  size_t slot = a->stage_first[i] + k;
  if (a->stage_state[slot] != MEMO_NONE)
    return a->stage_state[slot] == MEMO_DONE ? &a->stage_reach[slot] : &empty_set;
  a->stage_state[slot] = MEMO_BUSY;

  const struct aggr_node *n = a->m->nodes[i];
  const struct aggr_stage_node *sn = &n->startup->graph->stages[k];
  struct set out = {0};
  for (size_t j = 0; j < sn->n_upstream; j++)
    stage_vertices_add(a, i, sn->upstream[j], &out);
  for (size_t j = 0; j <= sn->n_upstream; j++) {
    const struct aggr_stage_node *w =
        j < sn->n_upstream ? &n->startup->graph->stages[sn->upstream[j]] : sn;
    for (size_t q = 0; q < w->n_requires; q++) {
      const struct set *r = requirement_reach(a, &w->requires[q]);
      set_union(a, &out, r);
    }
  }
  a->stage_reach[slot] = out;
  a->stage_state[slot] = MEMO_DONE;
  return &a->stage_reach[slot];
}

static const struct set *vertex_reach(struct analysis *a, size_t v) {
  if (a->reach_state[v] != MEMO_NONE)
    return a->reach_state[v] == MEMO_DONE ? &a->reach[v] : &empty_set;
  a->reach_state[v] = MEMO_BUSY;

  const struct aggr_cause_vertex *x = &a->c->v[v];
  const struct aggr_startup *s = x->node->startup;
  struct set out = {0};
  if (x->comp && s && a->stage_first[x->node_index] != SIZE_MAX)
    for (size_t k = 0; k < s->profile->n_stages; k++) {
      const struct mst_stage *st = &s->profile->stages[k];
      if (strv_has(st->components, x->comp->name) || strv_has(st->milestones, x->comp->name))
        set_union(a, &out, stage_reach(a, x->node_index, k));
    }
  /* A component listed in a stage and in one before it reaches itself. */
  for (size_t j = 0; j < out.n; j++)
    if (out.v[j] == v) {
      memmove(&out.v[j], &out.v[j + 1], (out.n - j - 1) * sizeof(size_t));
      out.n--;
      break;
    }
  a->reach[v] = out;
  a->reach_state[v] = MEMO_DONE;
  return &a->reach[v];
}

/* --- roots and blocked ------------------------------------------------------ */

static int push_index(size_t **v, size_t *n, size_t x) {
  size_t *slot = MST_ARRAY_APPEND(*v, *n);
  if (!slot)
    return -ENOMEM;
  *slot = x;
  (*n)++;
  return 0;
}

static int roots_assign(struct analysis *a) {
  struct aggr_cause *c = a->c;

  for (size_t v = 0; v < c->n; v++)
    c->v[v].root = c->v[v].problem && a->reach[v].n == 0;
  /* Problems in a cycle reach problems but no root: each is its own
   * (decided on the roots found so far, so the order does not matter). */
  _cleanup_free_ bool *promote = calloc(c->n ? c->n : 1, sizeof(bool));
  if (!promote)
    return -ENOMEM;
  for (size_t v = 0; v < c->n; v++) {
    if (!c->v[v].problem || c->v[v].root)
      continue;
    bool any = false;
    for (size_t j = 0; j < a->reach[v].n && !any; j++)
      any = c->v[a->reach[v].v[j]].root;
    promote[v] = !any;
  }
  for (size_t v = 0; v < c->n; v++)
    c->v[v].root = c->v[v].root || promote[v];
  for (size_t v = 0; v < c->n; v++) {
    struct aggr_cause_vertex *x = &c->v[v];
    if (x->root)
      continue;
    for (size_t j = 0; j < a->reach[v].n; j++) {
      size_t u = a->reach[v].v[j];
      int r =
          c->v[u].root ? push_index(&x->roots, &x->n_roots, u) : push_index(&x->via, &x->n_via, u);
      if (r < 0)
        return r;
    }
    for (size_t j = 0; j < x->n_roots; j++)
      if (push_index(&c->v[x->roots[j]].blocked, &c->v[x->roots[j]].n_blocked, v) < 0)
        return -ENOMEM;
  }
  return 0;
}

static void analysis_done(struct analysis *a) {
  for (size_t v = 0; a->reach && v < a->c->n; v++)
    set_done(&a->reach[v]);
  free(a->reach);
  free(a->reach_state);
  if (a->stage_reach) {
    size_t slots = 0;
    for (size_t i = 0; i < a->m->n_nodes; i++)
      if (a->stage_first[i] != SIZE_MAX)
        slots = a->stage_first[i] + a->m->nodes[i]->startup->profile->n_stages;
    for (size_t k = 0; k < slots; k++)
      set_done(&a->stage_reach[k]);
  }
  free(a->stage_reach);
  free(a->stage_state);
  free(a->stage_first);
  for (size_t k = 0; k < a->n_reqs; k++)
    set_done(&a->reqs[k].reach);
  free(a->reqs);
}

/* Whether anything at all is a problem: most evaluations find nothing, and
 * then no graph is built. */
static bool any_problem_at_all(const struct aggr_model *m, uint64_t now) {
  for (size_t i = 0; i < m->n_nodes; i++) {
    const struct aggr_node *n = m->nodes[i];
    if (!n->reported ? n->expected_master && !aggr_node_awaited(m, n, now)
                     : aggr_node_silent(m, n, now))
      return true;
    if ((n->startup && n->startup->late) || n->n_failing > 0 || n->agent_fault)
      return true;
  }
  return false;
}

int aggr_cause_analyze(const struct aggr_model *m, uint64_t now_usec, struct aggr_cause *ret) {
  struct aggr_cause c = {0};
  struct analysis a = {.m = m, .now = now_usec, .c = &c};
  bool any_problem = false;
  size_t slots = 0;
  int r = -ENOMEM;

  *ret = (struct aggr_cause){0};
  if (m->n_nodes == 0 || !any_problem_at_all(m, now_usec))
    return 0;
  c.first = calloc(m->n_nodes, sizeof(size_t));
  c.count = calloc(m->n_nodes, sizeof(size_t));
  a.stage_first = calloc(m->n_nodes, sizeof(size_t));
  if (!c.first || !c.count || !a.stage_first)
    goto fail;
  for (size_t i = 0; i < m->n_nodes; i++) {
    const struct aggr_node *n = m->nodes[i];
    a.masters_configured = a.masters_configured || n->expected_master;
    a.stage_first[i] = n->startup ? slots : SIZE_MAX;
    if (n->startup)
      slots += n->startup->profile->n_stages;
  }
  if (vertices_build(&a) < 0)
    goto fail;
  for (size_t v = 0; v < c.n; v++)
    any_problem = any_problem || c.v[v].problem;
  if (!any_problem) {
    /* Nothing failing: nothing is blocked and nothing is a root. */
    free(a.stage_first);
    *ret = c;
    return 0;
  }

  a.reach = calloc(c.n, sizeof(a.reach[0]));
  a.reach_state = calloc(c.n, 1);
  a.stage_reach = calloc(slots ? slots : 1, sizeof(a.stage_reach[0]));
  a.stage_state = calloc(slots ? slots : 1, 1);
  if (!a.reach || !a.reach_state || !a.stage_reach || !a.stage_state)
    goto fail;
  for (size_t v = 0; v < c.n; v++)
    (void)vertex_reach(&a, v);
  if (a.oom || roots_assign(&a) < 0)
    goto fail;
  analysis_done(&a);
  *ret = c;
  return 0;

fail:
  analysis_done(&a);
  aggr_cause_done(&c);
  return r;
}
