/* Prometheus exposition of the aggregator's counters and of the cluster
 * state; see metrics.h. The text follows the Prometheus text format 0.0.4:
 * HELP and TYPE for every family, counters ending in _total, label values
 * escaped, and it is checked with `promtool check metrics` in the tests. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/demand.h"
#include "serve/metrics.h"
#include "model/model.h"
#include "mst/macro.h"
#include "mst/time.h"

struct aggr_counters aggr_counters;

static pthread_mutex_t model_lock = PTHREAD_MUTEX_INITIALIZER;
static char *model_text; /* guarded by model_lock */
static size_t model_len;
/* The cluster gauges are rendered only while /metrics is being scraped. */
static struct aggr_demand model_demand = AGGR_DEMAND_INIT;

static const unsigned batch_bounds[AGGR_BATCH_BUCKETS] = {1, 10, 50, 100, 500, 1000, 5000, 20000};

static const char *const route_names[_AGGR_ROUTE_MAX] = {
    [AGGR_ROUTE_HEALTH] = "/v1/health",
    [AGGR_ROUTE_NODES] = "/v1/nodes",
    [AGGR_ROUTE_NODE] = "/v1/nodes/{id}",
    [AGGR_ROUTE_HISTORY] = "/v1/history",
    [AGGR_ROUTE_HISTORY_CLUSTER] = "/v1/history/cluster",
    [AGGR_ROUTE_METRICS] = "/metrics",
    [AGGR_ROUTE_HEALTHZ] = "/healthz",
    [AGGR_ROUTE_READYZ] = "/readyz",
    [AGGR_ROUTE_INTERNAL] = "/v1/internal",
    [AGGR_ROUTE_DCOS] = "/system/health/v1",
    [AGGR_ROUTE_OTHER] = "other",
};

static const char *const code_classes[6] = {"2xx", "3xx", "400", "404", "4xx", "5xx"};

void aggr_metrics_commit(size_t rows, uint64_t usec) {
  size_t b = 0;
  atomic_fetch_add(&aggr_counters.commits, 1);
  atomic_fetch_add(&aggr_counters.commit_rows_sum, rows);
  atomic_fetch_add(&aggr_counters.commit_usec_sum, usec);
  while (b < AGGR_BATCH_BUCKETS && rows > batch_bounds[b])
    b++;
  atomic_fetch_add(&aggr_counters.commit_rows_bucket[b], 1);
}

static const char *const limit_names[_AGGR_LIMIT_MAX] = {
    [AGGR_LIMIT_STREAM_CONNECTIONS] = "stream_connections",
    [AGGR_LIMIT_STREAM_CONNECTIONS_PER_ADDRESS] = "stream_connections_per_address",
    [AGGR_LIMIT_STREAM_FRAME_SIZE] = "stream_frame_size",
    [AGGR_LIMIT_STREAM_FRAMES_PER_SECOND] = "stream_frames_per_second",
    [AGGR_LIMIT_STREAM_HELLO_TIMEOUT] = "stream_hello_timeout",
    [AGGR_LIMIT_STREAM_IDLE_TIMEOUT] = "stream_idle_timeout",
    [AGGR_LIMIT_STREAM_AUTH_BACKOFF] = "stream_auth_backoff",
    [AGGR_LIMIT_HTTP_URL_LENGTH] = "http_url_length",
    [AGGR_LIMIT_HTTP_PARKED_READS] = "http_parked_reads",
    [AGGR_LIMIT_HTTP_TIMEOUT] = "http_timeout",
    [AGGR_LIMIT_HTTP_UNAUTHORIZED] = "http_unauthorized",
};

void aggr_metrics_limit(enum aggr_limit limit) {
  if ((unsigned)limit < _AGGR_LIMIT_MAX)
    atomic_fetch_add(&aggr_counters.limit_hits[limit], 1);
}

void aggr_metrics_http(enum aggr_metric_route route, unsigned status) {
  size_t k = status < 300    ? 0
             : status < 400  ? 1
             : status == 400 ? 2
             : status == 404 ? 3
             : status < 500  ? 4
                             : 5;
  if ((unsigned)route >= _AGGR_ROUTE_MAX)
    route = AGGR_ROUTE_OTHER;
  atomic_fetch_add(&aggr_counters.http_requests[route][k], 1);
}

/* A growable text buffer; out of memory makes it fail as a whole. */
struct text {
  char *s;
  size_t len, cap;
  bool failed;
};

static void text_printf(struct text *t, const char *fmt, ...) _printf_(2, 3);
static void text_printf(struct text *t, const char *fmt, ...) {
  va_list ap;
  int n;
  if (t->failed)
    return;
  for (;;) {
    va_start(ap, fmt);
    n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
      t->failed = true;
      return;
    }
    if (t->s && t->len + (size_t)n < t->cap) {
      t->len += (size_t)n;
      return;
    }
    size_t ncap = MST_MAX(t->cap * 2, t->len + (size_t)n + 4096);
    char *p = realloc(t->s, ncap);
    if (!p) {
      t->failed = true;
      return;
    }
    t->s = p;
    t->cap = ncap;
  }
}

static void text_append(struct text *t, const char *s, size_t n) {
  if (t->failed)
    return;
  if (t->len + n + 1 > t->cap) {
    size_t ncap = MST_MAX(t->cap * 2, t->len + n + 4096);
    char *p = realloc(t->s, ncap);
    if (!p) {
      t->failed = true;
      return;
    }
    t->s = p;
    t->cap = ncap;
  }
  memcpy(t->s + t->len, s, n);
  t->len += n;
  t->s[t->len] = 0;
}

/* Appends v as a label value: backslash, quote and newline escaped. */
static void text_label(struct text *t, const char *v) {
  const char *p = v ? v : "";
  for (;;) {
    size_t run = strcspn(p, "\\\"\n");
    text_append(t, p, run);
    p += run;
    if (!*p)
      return;
    text_append(t, *p == '\n' ? "\\n" : *p == '"' ? "\\\"" : "\\\\", 2);
    p++;
  }
}

/* Renders n's lines again when its rendering moved since the last time. */
static int node_lines(struct aggr_node *n) {
  struct text t = {0};

  if (n->metrics_text && n->metrics_index == n->index)
    return 0;
  text_printf(&t, "muster_node_verdict{node=\"");
  text_label(&t, n->id);
  text_printf(&t, "\",role=\"");
  text_label(&t, n->role);
  text_printf(&t, "\",verdict=\"%s\"} 1\n", mst_verdict_to_string(n->verdict));
  size_t verdict_len = t.len;
  for (size_t k = 0; k < n->n_components; k++) {
    const char *st = mst_state_to_string(n->components[k].state);
    text_printf(&t, "muster_component_state{node=\"");
    text_label(&t, n->id);
    text_printf(&t, "\",component=\"");
    text_label(&t, n->components[k].name);
    text_printf(&t, "\",state=\"%s\"} 1\n", st ? st : "unspecified");
  }
  if (t.failed) {
    free(t.s);
    return -ENOMEM;
  }
  free(n->metrics_text);
  n->metrics_text = t.s;
  n->metrics_verdict_len = verdict_len;
  n->metrics_len = t.len;
  n->metrics_index = n->index;
  return 0;
}

bool aggr_metrics_model_due(uint64_t now_usec) {
  return aggr_demand_due(&model_demand, now_usec, USEC_PER_SEC, true);
}

void aggr_metrics_update_model(struct aggr_model *m, size_t connected_agents, uint64_t epoch) {
  struct text t = {0};

  text_printf(&t,
              "# HELP muster_leader Whether this aggregator leads (1) or follows (0).\n"
              "# TYPE muster_leader gauge\nmuster_leader %d\n",
              m->is_leader ? 1 : 0);
  text_printf(&t,
              "# HELP muster_leader_epoch Epoch of the current leader as known here.\n"
              "# TYPE muster_leader_epoch gauge\nmuster_leader_epoch %llu\n",
              (unsigned long long)epoch);
  text_printf(&t,
              "# HELP muster_agents_connected Agent streams connected to this aggregator.\n"
              "# TYPE muster_agents_connected gauge\nmuster_agents_connected %zu\n",
              connected_agents);
  text_printf(&t, "# HELP muster_cluster_verdict The cluster verdict (1 for the current one).\n"
                  "# TYPE muster_cluster_verdict gauge\n");
  for (int v = 0; v < _MST_VERDICT_MAX; v++) {
    if (v == MST_VERDICT_MISSING || v == MST_VERDICT_UNREACHABLE || v == MST_VERDICT_LATE)
      continue; /* node-only verdicts */
    text_printf(&t, "muster_cluster_verdict{verdict=\"%s\"} %d\n",
                mst_verdict_to_string((enum mst_verdict)v), m->verdict == (enum mst_verdict)v);
  }
  for (size_t i = 0; i < m->n_nodes; i++)
    if (node_lines(m->nodes[i]) < 0)
      t.failed = true;
  /* A family's lines go together: every node's verdict line, then every
   * node's component lines. */
  text_printf(&t, "# HELP muster_node_verdict Each node's verdict (1 for the current one).\n"
                  "# TYPE muster_node_verdict gauge\n");
  for (size_t i = 0; i < m->n_nodes && !t.failed; i++)
    text_append(&t, m->nodes[i]->metrics_text, m->nodes[i]->metrics_verdict_len);
  text_printf(&t, "# HELP muster_component_state Each component's current state, as its state "
                  "label.\n# TYPE muster_component_state gauge\n");
  for (size_t i = 0; i < m->n_nodes && !t.failed; i++) {
    const struct aggr_node *n = m->nodes[i];
    text_append(&t, n->metrics_text + n->metrics_verdict_len,
                n->metrics_len - n->metrics_verdict_len);
  }
  aggr_demand_done(&model_demand, mst_now_monotonic_usec());
  if (t.failed) {
    free(t.s);
    return; /* keep the previous text */
  }
  pthread_mutex_lock(&model_lock);
  free(model_text);
  model_text = t.s;
  model_len = t.len;
  pthread_mutex_unlock(&model_lock);
}

int aggr_metrics_render(char **ret, size_t *ret_len) {
  struct aggr_counters *c = &aggr_counters;
  struct text t = {0};
  uint64_t cum = 0;

  text_printf(&t,
              "# HELP muster_ingest_changes_total State changes accepted from agents.\n"
              "# TYPE muster_ingest_changes_total counter\nmuster_ingest_changes_total %llu\n"
              "# HELP muster_ingest_duplicates_total Replayed changes that were already held.\n"
              "# TYPE muster_ingest_duplicates_total counter\n"
              "muster_ingest_duplicates_total %llu\n"
              "# HELP muster_ingest_acks_total Acks sent to agents after a commit.\n"
              "# TYPE muster_ingest_acks_total counter\nmuster_ingest_acks_total %llu\n"
              "# HELP muster_stream_rejects_total Agent connections refused with a Reject.\n"
              "# TYPE muster_stream_rejects_total counter\nmuster_stream_rejects_total %llu\n"
              "# HELP muster_stream_tls_failures_total Agent streams whose TLS handshake failed.\n"
              "# TYPE muster_stream_tls_failures_total counter\n"
              "muster_stream_tls_failures_total %llu\n"
              "# HELP muster_replicated_rows_total History rows copied from the leader.\n"
              "# TYPE muster_replicated_rows_total counter\nmuster_replicated_rows_total %llu\n"
              "# HELP muster_commit_failures_total Transactions rolled back.\n"
              "# TYPE muster_commit_failures_total counter\nmuster_commit_failures_total %llu\n"
              "# HELP muster_commit_seconds_total Time spent committing history.\n"
              "# TYPE muster_commit_seconds_total counter\nmuster_commit_seconds_total %.6f\n",
              (unsigned long long)atomic_load(&c->changes_received),
              (unsigned long long)atomic_load(&c->changes_duplicate),
              (unsigned long long)atomic_load(&c->acks_sent),
              (unsigned long long)atomic_load(&c->rejects),
              (unsigned long long)atomic_load(&c->tls_failures),
              (unsigned long long)atomic_load(&c->replicated_rows),
              (unsigned long long)atomic_load(&c->commit_failures),
              (double)atomic_load(&c->commit_usec_sum) / 1e6);
  text_printf(&t, "# HELP muster_commit_batch_rows Rows per committed history transaction.\n"
                  "# TYPE muster_commit_batch_rows histogram\n");
  for (size_t b = 0; b <= AGGR_BATCH_BUCKETS; b++) {
    cum += atomic_load(&c->commit_rows_bucket[b]);
    if (b < AGGR_BATCH_BUCKETS)
      text_printf(&t, "muster_commit_batch_rows_bucket{le=\"%u\"} %llu\n", batch_bounds[b],
                  (unsigned long long)cum);
    else
      text_printf(&t, "muster_commit_batch_rows_bucket{le=\"+Inf\"} %llu\n",
                  (unsigned long long)cum);
  }
  text_printf(&t, "muster_commit_batch_rows_sum %llu\nmuster_commit_batch_rows_count %llu\n",
              (unsigned long long)atomic_load(&c->commit_rows_sum), (unsigned long long)cum);
  text_printf(&t, "# HELP muster_http_requests_total HTTP answers by route and status class.\n"
                  "# TYPE muster_http_requests_total counter\n");
  for (size_t r = 0; r < _AGGR_ROUTE_MAX; r++)
    for (size_t k = 0; k < 6; k++) {
      uint64_t v = atomic_load(&c->http_requests[r][k]);
      if (v)
        text_printf(&t, "muster_http_requests_total{route=\"%s\",code=\"%s\"} %llu\n",
                    route_names[r], code_classes[k], (unsigned long long)v);
    }
  text_printf(&t,
              "# HELP muster_http_parked_reads Blocking reads waiting for a change.\n"
              "# TYPE muster_http_parked_reads gauge\nmuster_http_parked_reads %llu\n",
              (unsigned long long)atomic_load(&c->parked_reads));
  text_printf(&t, "# HELP muster_limit_hits_total Inputs refused or cut off by a configured "
                  "limit.\n# TYPE muster_limit_hits_total counter\n");
  for (size_t l = 0; l < _AGGR_LIMIT_MAX; l++)
    text_printf(&t, "muster_limit_hits_total{limit=\"%s\"} %llu\n", limit_names[l],
                (unsigned long long)atomic_load(&c->limit_hits[l]));
  aggr_demand_read(&model_demand, USEC_PER_SEC);
  pthread_mutex_lock(&model_lock);
  if (model_text)
    text_append(&t, model_text, model_len);
  pthread_mutex_unlock(&model_lock);
  if (t.failed) {
    free(t.s);
    return -ENOMEM;
  }
  *ret = t.s;
  *ret_len = t.len;
  return 0;
}

void aggr_metrics_done(void) {
  pthread_mutex_lock(&model_lock);
  free(model_text);
  model_text = NULL;
  pthread_mutex_unlock(&model_lock);
}
