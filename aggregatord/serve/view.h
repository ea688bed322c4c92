/* Immutable, refcounted views of the live model, for the HTTP threads: the
 * only way from an HTTP thread to the loop's data.
 *
 * After each change the loop thread publishes a view: the /v1/health and
 * /v1/nodes bodies, and one /v1/nodes/{id} body per node, all pre-rendered
 * JSON; per node too its lines of /metrics (metrics.h) and what DC/OS's
 * health API shows of it (dcos.h). Each body carries its resource index: the global index of the
 * publish at which its bytes last changed. A body that renders to the same bytes as before keeps
 * its index (Consul's rule), so blocking reads wake only for real changes. Clean nodes share their
 * bodies with the previous view.
 *
 * Threads:
 *   - aggr_views_new/free, aggr_view_publish, aggr_views_reap and
 *     aggr_views_n_retired: the loop thread only (free: after the HTTP
 *     server is stopped);
 *   - aggr_view_acquire, aggr_view_release, aggr_view_find_node and
 *     aggr_body_live_copy, and reading a held view: any thread. Acquire takes no lock: it loads the
 *     current pointer and bumps the view's atomic refcount inside a reader
 *     gate, and the loop frees a retired view only once the gate has been
 *     seen empty after its retirement and its refcount is 0.
 * A view and its bodies never change after publication; readers may use
 * them without synchronization until they release the view. The one
 * exception is dcos_units, an index built from the view's own data on first
 * need by whichever reader needs it and set once, atomically (dcos.c). */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "serve/metrics.h"

struct aggr_dcos_node;
struct aggr_dcos_units;

/* One rendered resource. Shared between consecutive views; its refcount is
 * touched only by the loop thread, which is the only one that creates and
 * frees views. */
struct aggr_body {
  unsigned refs;  /* views holding it (loop thread only) */
  uint64_t index; /* the resource's index: when these bytes appeared */
  char *data;     /* the bytes served; NUL-terminated, len excludes it */
  size_t len;
  size_t content_len;      /* prefix compared between publishes (without ,"index":N}) */
  size_t live_at;          /* offset of the live "elapsed" placeholder, or SIZE_MAX */
  uint64_t live_from_usec; /* realtime the live elapsed counts from */
  size_t eta_at;           /* offset of the live "eta_seconds" placeholder, or SIZE_MAX */
  uint64_t eta_deadline_usec, eta_floor_usec; /* eta = max(floor, deadline - now) */
  char *id;                                   /* node bodies: the node's id; NULL otherwise */
};

struct aggr_view_node {
  const char *id;            /* points into detail->id */
  struct aggr_body *detail;  /* GET /v1/nodes/{id} */
  struct aggr_body *summary; /* this node's element of GET /v1/nodes (no index) */
  /* Its lines of /metrics (no index), family after family: family k
   * ends at metrics_ends[k] (metrics.h, enum aggr_node_family). */
  struct aggr_body *metrics;
  size_t metrics_ends[_AGGR_NODE_FAMILY_MAX];
  struct aggr_dcos_node *dcos; /* what DC/OS's health API shows of it */
  uint64_t last_seen_usec;     /* the node's last_seen when its bodies were rendered */
};

/* Heartbeats move a node's last_seen without marking it dirty. A clean node
 * is re-rendered anyway once its last_seen has moved this far past what its
 * bodies show, so "last_seen" in the API lags by at most this much while
 * heartbeats do not re-render (and re-index) every node every time. */
#define AGGR_VIEW_LAST_SEEN_REFRESH_USEC (5ULL * 1000000)

struct aggr_view {
  atomic_uint refs;              /* readers holding it */
  uint64_t index;                /* global index at publication */
  bool ready;                    /* /readyz answers 200 */
  struct aggr_body *health;      /* GET /v1/health */
  struct aggr_body *nodes;       /* GET /v1/nodes */
  struct aggr_view_node *node_v; /* sorted by id */
  size_t n_nodes;
  enum mst_verdict verdict; /* the cluster's, for /metrics */
  uint64_t published_usec;  /* realtime of publication, for DC/OS's timestamps */
  /* DC/OS's units across the nodes: NULL until a reader needs it (dcos.c). */
  _Atomic(struct aggr_dcos_units *) dcos_units;

  /* The election as the model had it (aggr_model_set_leader). A view that
   * is not the leader's serves no data: HTTP redirects to leader_http. */
  bool is_leader;
  bool have_leader;
  char *leader_id;   /* NULL when unknown */
  char *leader_http; /* host:port of the leader's HTTP API, NULL when unknown */
  uint64_t epoch;
  /* The history database (aggr_model_set_storage): why commits fail, NULL
   * while they succeed; lost: the file was deleted while open. /readyz
   * answers 503 while it fails, the API goes on serving. */
  char *storage_failing;
  bool storage_lost;
  char *readyz; /* the /readyz body (200 when ready and storing, else 503) */
  size_t readyz_len;
  char *not_leader; /* a follower's 307 body, or NULL without leader_http */
  size_t not_leader_len;
  /* /metrics' lines of operator state (issue 19): muster_node_maintenance,
   * muster_component_maintenance and muster_component_acknowledged, with
   * their HELP and TYPE (aggr_metrics_operator_lines). */
  char *operator_metrics;
  size_t operator_metrics_len;

  /* Loop thread only: retirement. */
  struct aggr_view *next_retired;
  bool quiesced; /* no reader can still be between load and refcount bump */
};

struct aggr_views;

/* Returns NULL on ENOMEM. The global index starts at the realtime clock in
 * microseconds, so that indexes keep growing across restarts and failovers
 * (a client's old index is never ahead of a new leader's). */
struct aggr_views *aggr_views_new(void);
/* Frees every view, current and retired. Accepts NULL. Only when no reader
 * remains (the HTTP server is stopped). */
void aggr_views_free(struct aggr_views *vs);

/* Loop thread. Renders the model into a new view and makes it current:
 * the health and node-list bodies and the election's fields every time, a
 * node's own bodies (detail, summary, metrics lines, DC/OS) only when
 * node->dirty (which it clears) or its last_seen moved more than
 * AGGR_VIEW_LAST_SEEN_REFRESH_USEC. Sets node->index to the
 * node body's index. Then reaps retired views, also when nothing changed.
 * Returns 1 when a new view was published, 0 when nothing changed (the
 * current view stays; no index moved), or -ENOMEM / -EINVAL (nothing
 * published; dirty flags stay set for the next try). A change of ready or of
 * the election alone publishes a new view without moving the index unless
 * some body's bytes changed too (the health body shows the leader's id and
 * epoch). */
int aggr_view_publish(struct aggr_views *vs, struct aggr_model *m, bool ready);

/* Loop thread. Frees retired views that no reader can reach any more. Call
 * it periodically (say once a second): publish reaps too, but a view
 * released after the last publish is freed only by the next reap. */
void aggr_views_reap(struct aggr_views *vs);
/* Loop thread: how many retired views are still held (tests, metrics). */
size_t aggr_views_n_retired(const struct aggr_views *vs);

/* Any thread. The current view with a reference, or NULL before the first
 * publish. Pair with aggr_view_release(). */
struct aggr_view *aggr_view_acquire(struct aggr_views *vs);
/* Any thread. Accepts NULL. */
void aggr_view_release(struct aggr_view *v);

/* Any thread holding v. The node's entry, or NULL. */
const struct aggr_view_node *aggr_view_find_node(const struct aggr_view *v, const char *id);

/* Any thread holding the body's view. A body may carry fields that depend
 * on the time of the request (a node's startup "elapsed" and "eta_seconds"
 * while it is still starting). Returns 0 when b->data can be served as is; 1
 * with a malloc'd copy filled in for now_usec in *ret (owned by the caller)
 * and its length in *ret_len; -ENOMEM. */
int aggr_body_live_copy(const struct aggr_body *b, uint64_t now_usec, char **ret, size_t *ret_len);

/* Any thread, for the loop's cluster verdict rows: r as a compact JSON array
 * of {"node","component","state","message"}. Returns a malloc'd string, or
 * NULL on ENOMEM. */
char *aggr_reasons_to_json(const struct aggr_reasons *r);
