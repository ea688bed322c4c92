/* Prometheus exposition of the aggregator's counters and of the cluster
 * state; see metrics.h. The text follows the Prometheus text format 0.0.4:
 * HELP and TYPE for every family, counters ending in _total, label values
 * escaped, and it is checked with `promtool check metrics` in the tests. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "model/model.h"
#include "mst/dynbuf.h"
#include "mst/macro.h"
#include "mst/time.h"
#include "serve/metrics.h"
#include "serve/view.h"

/* The text grows with the cluster: about 90 bytes per component. */
#define METRICS_TEXT_MAX (1024u * 1024 * 1024)

struct aggr_counters aggr_counters;

static const unsigned batch_bounds[AGGR_BATCH_BUCKETS] = {1, 10, 50, 100, 500, 1000, 5000, 20000};

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
    [AGGR_LIMIT_STREAM_COMPONENTS_PER_NODE] = "stream_components_per_node",
    [AGGR_LIMIT_STREAM_SEQ_ORDER] = "stream_seq_order",
    [AGGR_LIMIT_STREAM_SPOOL_BEHIND] = "stream_spool_behind",
    [AGGR_LIMIT_STREAM_NODE_CONFLICT] = "stream_node_conflict",
    [AGGR_LIMIT_HTTP_URL_LENGTH] = "http_url_length",
    [AGGR_LIMIT_HTTP_PARKED_READS] = "http_parked_reads",
    [AGGR_LIMIT_HTTP_TIMEOUT] = "http_timeout",
    [AGGR_LIMIT_HTTP_UNAUTHORIZED] = "http_unauthorized",
    [AGGR_LIMIT_HTTP_CONNECTIONS] = "http_connections",
    [AGGR_LIMIT_HTTP_IDLE_EVICTED] = "http_idle_evicted",
};

void aggr_metrics_limit(enum aggr_limit limit) {
  if ((unsigned)limit < _AGGR_LIMIT_MAX)
    atomic_fetch_add(&aggr_counters.limit_hits[limit], 1);
}

void aggr_metrics_http(enum aggr_http_route route, unsigned status) {
  size_t k = status < 300    ? 0
             : status < 400  ? 1
             : status == 400 ? 2
             : status == 404 ? 3
             : status < 500  ? 4
                             : 5;
  if ((unsigned)route >= _AGGR_HTTP_ROUTE_MAX)
    route = AGGR_HTTP_ROUTE_NONE;
  atomic_fetch_add(&aggr_counters.http_requests[route][k], 1);
}

void aggr_metrics_agents_connected(size_t n) {
  atomic_store(&aggr_counters.agents_connected, n);
}

void aggr_metrics_storage_failing(bool failing) {
  atomic_store(&aggr_counters.storage_failing, failing ? 1 : 0);
}

/* Appends v as a label value: backslash, quote and newline escaped. */
static void text_label(struct mst_dynbuf *t, const char *v) {
  const char *p = v ? v : "";
  for (;;) {
    size_t run = strcspn(p, "\\\"\n");
    mst_dynbuf_add(t, p, run);
    p += run;
    if (!*p)
      return;
    mst_dynbuf_add(t, *p == '\n' ? "\\n" : *p == '"' ? "\\\"" : "\\\\", 2);
    p++;
  }
}

/* Starts a line of node n: name{node="...",role="..." (the caller adds
 * its own labels and closes the braces). */
static void node_line_start(struct mst_dynbuf *t, const char *name, const struct aggr_node *n) {
  mst_dynbuf_addf(t, "%s{node=\"", name);
  text_label(t, n->id);
  mst_dynbuf_adds(t, "\",role=\"");
  text_label(t, n->role);
  mst_dynbuf_addc(t, '"');
}

/* The startup lines: how far this boot's stages are (what GET /v1/nodes
 * shows as startup.percent) and the stage waited on (the last once all are
 * reached) with its state. None before the node reported, or without a
 * profile. */
static void node_startup_lines(struct mst_dynbuf *t, const struct aggr_node *n,
                               size_t ends[_AGGR_NODE_FAMILY_MAX]) {
  const struct aggr_startup *s = n->reported ? n->startup : NULL;
  size_t total = s ? s->profile->n_stages : 0;
  if (s) {
    node_line_start(t, "muster_node_startup_percent", n);
    mst_dynbuf_addf(t, "} %zu\n", total ? 100 * s->n_reached / total : (size_t)100);
  }
  ends[AGGR_NODE_FAMILY_STARTUP] = t->len;
  if (s && total > 0) {
    size_t k = MST_MIN(s->waiting, total - 1);
    node_line_start(t, "muster_node_startup_stage", n);
    mst_dynbuf_adds(t, ",stage=\"");
    text_label(t, s->profile->stages[k].name);
    mst_dynbuf_addf(t, "\",state=\"%s\"} 1\n",
                    s->n_reached == total ? "done"
                    : s->waiting < total  ? aggr_stage_state_to_string(s->stages[k].state)
                                          : "pending");
  }
  ends[AGGR_NODE_FAMILY_STARTUP_STAGE] = t->len;
}

int aggr_metrics_node_lines(const struct aggr_node *n, char **ret, size_t *ret_len,
                            size_t ret_ends[_AGGR_NODE_FAMILY_MAX]) {
  struct mst_dynbuf t = MST_DYNBUF_INIT(METRICS_TEXT_MAX);
  size_t ends[_AGGR_NODE_FAMILY_MAX];

  node_line_start(&t, "muster_node_verdict", n);
  mst_dynbuf_addf(&t, ",verdict=\"%s\"} 1\n", mst_verdict_to_string(n->verdict));
  ends[AGGR_NODE_FAMILY_VERDICT] = t.len;
  node_line_start(&t, "muster_node_connected", n);
  mst_dynbuf_addf(&t, "} %d\n", n->conn ? 1 : 0);
  ends[AGGR_NODE_FAMILY_CONNECTED] = t.len;
  if (n->reported) {
    node_line_start(&t, "muster_node_last_seen_timestamp_seconds", n);
    mst_dynbuf_addf(&t, "} %.3f\n", (double)n->last_seen_usec / 1e6);
  }
  ends[AGGR_NODE_FAMILY_LAST_SEEN] = t.len;
  node_startup_lines(&t, n, ends);
  for (size_t k = 0; k < n->n_components; k++) {
    const char *st = mst_state_to_string(n->components[k].state);
    node_line_start(&t, "muster_component_state", n);
    mst_dynbuf_adds(&t, ",component=\"");
    text_label(&t, n->components[k].name);
    mst_dynbuf_addf(&t, "\",state=\"%s\"} 1\n", st ? st : "unspecified");
  }
  ends[AGGR_NODE_FAMILY_COMPONENTS] = t.len;
  int r = mst_dynbuf_take(&t, ret, ret_len);
  if (r < 0)
    return r;
  memcpy(ret_ends, ends, sizeof(ends));
  return 0;
}

int aggr_metrics_operator_lines(const struct aggr_model *m, char **ret, size_t *ret_len) {
  static const struct {
    enum aggr_op_kind kind;
    bool component;
    const char *family, *help;
  } families[] = {
      {AGGR_OP_MAINTENANCE, false, "muster_node_maintenance",
       "Nodes an operator put in maintenance (1 while it holds)."},
      {AGGR_OP_MAINTENANCE, true, "muster_component_maintenance",
       "Components an operator put in maintenance (1 while it holds)."},
      {AGGR_OP_ACK, true, "muster_component_acknowledged",
       "Failing components an operator acknowledged (1 until they recover or it is cleared)."},
  };
  struct mst_dynbuf t = MST_DYNBUF_INIT(METRICS_TEXT_MAX);
  /* What held at the last evaluation, as the other views show it. */
  uint64_t now = m->evaluated_usec;

  for (size_t f = 0; f < ELEMENTSOF(families); f++) {
    mst_dynbuf_addf(&t, "# HELP %s %s\n# TYPE %s gauge\n", families[f].family, families[f].help,
                    families[f].family);
    for (size_t i = 0; i < m->operator.n; i++) {
      const struct aggr_op_entry *e = &m->operator.v[i];
      if (e->kind != families[f].kind || !e->component != !families[f].component ||
          !aggr_op_active(e, now) || !aggr_model_find(m, e->node))
        continue;
      mst_dynbuf_addf(&t, "%s{node=\"", families[f].family);
      text_label(&t, e->node);
      if (e->component) {
        mst_dynbuf_adds(&t, "\",component=\"");
        text_label(&t, e->component);
      }
      mst_dynbuf_adds(&t, "\"} 1\n");
    }
  }
  return mst_dynbuf_take(&t, ret, ret_len);
}

/* The open descriptors of this process, or -1 when /proc cannot say. */
static long process_open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return -1;
  long n = 0;
  for (struct dirent *e; (e = readdir(d));)
    n += e->d_name[0] != '.';
  closedir(d);
  return n - 1; /* the directory's own descriptor */
}

/* The resident set in bytes and the start time in seconds since the epoch
 * (/proc/self/statm and stat, with the boot time of /proc/stat); 0 for
 * what /proc cannot say. */
static void process_memory_and_start(double *ret_rss, double *ret_start) {
  long page = sysconf(_SC_PAGESIZE), ticks = sysconf(_SC_CLK_TCK);
  unsigned long long size, resident, start_ticks = 0, btime = 0;
  char line[256];
  *ret_rss = *ret_start = 0;
  FILE *f = fopen("/proc/self/statm", "re");
  if (f) {
    if (fscanf(f, "%llu %llu", &size, &resident) == 2 && page > 0)
      *ret_rss = (double)resident * (double)page;
    fclose(f);
  }
  /* Field 22 of stat, counted after the command's closing parenthesis (the
   * command may hold spaces). */
  char stat[1024];
  f = fopen("/proc/self/stat", "re");
  if (f) {
    size_t k = fread(stat, 1, sizeof(stat) - 1, f);
    stat[k] = 0;
    fclose(f);
    const char *p = strrchr(stat, ')');
    for (int field = 2; p && field < 22; field++)
      p = strchr(p + 1, ' ');
    if (p)
      start_ticks = strtoull(p + 1, NULL, 10);
  }
  f = fopen("/proc/stat", "re");
  while (f && fgets(line, sizeof(line), f))
    if (sscanf(line, "btime %llu", &btime) == 1)
      break;
  if (f)
    fclose(f);
  if (btime > 0 && ticks > 0)
    *ret_start = (double)btime + (double)start_ticks / (double)ticks;
}

/* The standard process metrics of Prometheus' client libraries, and the
 * build: what every aggregator exports, leading or not. */
static void process_gauges(struct mst_dynbuf *t) {
  struct rusage ru;
  double cpu = 0, rss, start;
  if (getrusage(RUSAGE_SELF, &ru) == 0)
    cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
          ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
  process_memory_and_start(&rss, &start);
  mst_dynbuf_addf(t,
                  "# HELP process_cpu_seconds_total Total user and system CPU time spent in "
                  "seconds.\n# TYPE process_cpu_seconds_total counter\n"
                  "process_cpu_seconds_total %.6f\n"
                  "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                  "# TYPE process_resident_memory_bytes gauge\n"
                  "process_resident_memory_bytes %.0f\n"
                  "# HELP process_start_time_seconds Start time of the process since unix epoch "
                  "in seconds.\n# TYPE process_start_time_seconds gauge\n"
                  "process_start_time_seconds %.2f\n",
                  cpu, rss, start);
  long fds = process_open_fds();
  if (fds >= 0)
    mst_dynbuf_addf(t,
                    "# HELP process_open_fds Number of open file descriptors.\n"
                    "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n",
                    fds);
  mst_dynbuf_addf(t,
                  "# HELP muster_build_info The aggregator's version (always 1).\n"
                  "# TYPE muster_build_info gauge\nmuster_build_info{version=\"%s\"} 1\n",
                  MUSTER_VERSION);
}

/* The election as this aggregator sees it (v may be NULL before the first
 * publish), on leaders and followers alike; leads as for
 * aggr_metrics_render(). */
static void election_gauges(struct mst_dynbuf *t, const struct aggr_view *v, bool leads) {
  mst_dynbuf_addf(t,
                  "# HELP muster_leader Whether this aggregator leads (1) or follows (0).\n"
                  "# TYPE muster_leader gauge\nmuster_leader %d\n",
                  leads ? 1 : 0);
  mst_dynbuf_addf(t,
                  "# HELP muster_leader_epoch Epoch of the current leader as known here.\n"
                  "# TYPE muster_leader_epoch gauge\nmuster_leader_epoch %llu\n",
                  (unsigned long long)(v ? v->epoch : 0));
  mst_dynbuf_addf(t,
                  "# HELP muster_agents_connected Agent streams connected to this aggregator.\n"
                  "# TYPE muster_agents_connected gauge\nmuster_agents_connected %llu\n",
                  (unsigned long long)atomic_load(&aggr_counters.agents_connected));
}

/* The gauges of the cluster as view v shows it: only a leader holds the
 * cluster's state, so only it exports them (a follower's view knows no
 * live agent: its verdict would be a false alarm on every follower). */
static void cluster_gauges(struct mst_dynbuf *t, const struct aggr_view *v) {
  mst_dynbuf_adds(t, "# HELP muster_cluster_verdict The cluster verdict (1 for the current one).\n"
                     "# TYPE muster_cluster_verdict gauge\n");
  for (int k = 0; k < _MST_VERDICT_MAX; k++) {
    if (k == MST_VERDICT_MISSING || k == MST_VERDICT_UNREACHABLE || k == MST_VERDICT_LATE ||
        k == MST_VERDICT_MAINTENANCE)
      continue; /* node-only verdicts */
    mst_dynbuf_addf(t, "muster_cluster_verdict{verdict=\"%s\"} %d\n",
                    mst_verdict_to_string((enum mst_verdict)k), v->verdict == (enum mst_verdict)k);
  }
  /* A family's lines go together: every node's verdict line, then every
   * node's connected line, and so on. */
  static const char *const families[_AGGR_NODE_FAMILY_MAX] = {
      [AGGR_NODE_FAMILY_VERDICT] = "# HELP muster_node_verdict Each node's verdict (1 for the "
                                   "current one).\n# TYPE muster_node_verdict gauge\n",
      [AGGR_NODE_FAMILY_CONNECTED] =
          "# HELP muster_node_connected Whether the node's agent streams "
          "to this aggregator now.\n"
          "# TYPE muster_node_connected gauge\n",
      [AGGR_NODE_FAMILY_LAST_SEEN] =
          "# HELP muster_node_last_seen_timestamp_seconds When the node's agent was last heard "
          "from (refreshed at least every 5 s while it streams).\n"
          "# TYPE muster_node_last_seen_timestamp_seconds gauge\n",
      [AGGR_NODE_FAMILY_STARTUP] = "# HELP muster_node_startup_percent How much of its current "
                                   "startup's stages the node has reached.\n"
                                   "# TYPE muster_node_startup_percent gauge\n",
      [AGGR_NODE_FAMILY_STARTUP_STAGE] =
          "# HELP muster_node_startup_stage The startup stage the node waits on (its last once "
          "every stage is reached), with its state.\n# TYPE muster_node_startup_stage gauge\n",
      [AGGR_NODE_FAMILY_COMPONENTS] = "# HELP muster_component_state Each component's current "
                                      "state, as its state label.\n"
                                      "# TYPE muster_component_state gauge\n",
  };
  for (size_t f = 0; f < _AGGR_NODE_FAMILY_MAX; f++) {
    mst_dynbuf_adds(t, families[f]);
    for (size_t i = 0; i < v->n_nodes; i++) {
      const struct aggr_view_node *n = &v->node_v[i];
      size_t from = f > 0 ? n->metrics_ends[f - 1] : 0;
      mst_dynbuf_add(t, n->metrics->data + from, n->metrics_ends[f] - from);
    }
  }
  if (v->operator_metrics)
    mst_dynbuf_add(t, v->operator_metrics, v->operator_metrics_len);
}

/* The notifications to Alertmanager (notify/notify.h), on every
 * aggregator: only the leader posts, but a follower says it is configured. */
static void notify_gauges(struct mst_dynbuf *t) {
  struct aggr_counters *c = &aggr_counters;
  const struct {
    const char *name, *type, *help;
    atomic_uint_fast64_t *value;
  } families[] = {
      {"configured", "gauge", "Alertmanagers this aggregator notifies when it leads.",
       &c->notify_configured},
      {"sent_total", "counter", "Posts of the alert set an Alertmanager accepted.",
       &c->notify_posts},
      {"failed_total", "counter", "Posts of the alert set that failed (retried).",
       &c->notify_failures},
      {"dropped_total", "counter", "Alerts left out past [alertmanager] max_alerts.",
       &c->notify_dropped},
      {"alerts", "gauge", "Alerts firing in the set this aggregator sends.", &c->notify_alerts},
      {"failing", "gauge", "Alertmanagers whose last post failed.", &c->notify_failing},
  };
  for (size_t i = 0; i < ELEMENTSOF(families); i++)
    mst_dynbuf_addf(t,
                    "# HELP muster_notifications_%s %s\n# TYPE muster_notifications_%s %s\n"
                    "muster_notifications_%s %llu\n",
                    families[i].name, families[i].help, families[i].name, families[i].type,
                    families[i].name, (unsigned long long)atomic_load(families[i].value));
  mst_dynbuf_addf(t,
                  "# HELP muster_notifications_last_success_timestamp_seconds When an "
                  "Alertmanager last accepted a post (0: never).\n"
                  "# TYPE muster_notifications_last_success_timestamp_seconds gauge\n"
                  "muster_notifications_last_success_timestamp_seconds %.3f\n",
                  (double)atomic_load(&c->notify_last_success_usec) / 1e6);
}

int aggr_metrics_render(const struct aggr_view *v, bool leads, char **ret, size_t *ret_len) {
  struct aggr_counters *c = &aggr_counters;
  struct mst_dynbuf t = MST_DYNBUF_INIT(METRICS_TEXT_MAX);
  uint64_t cum = 0;

  mst_dynbuf_addf(
      &t,
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
      "# HELP muster_storage_failing 1 while history commits fail (/v1/health says why).\n"
      "# TYPE muster_storage_failing gauge\nmuster_storage_failing %llu\n"
      "# HELP muster_commit_seconds_total Time spent committing history.\n"
      "# TYPE muster_commit_seconds_total counter\nmuster_commit_seconds_total %.6f\n",
      (unsigned long long)atomic_load(&c->changes_received),
      (unsigned long long)atomic_load(&c->changes_duplicate),
      (unsigned long long)atomic_load(&c->acks_sent), (unsigned long long)atomic_load(&c->rejects),
      (unsigned long long)atomic_load(&c->tls_failures),
      (unsigned long long)atomic_load(&c->replicated_rows),
      (unsigned long long)atomic_load(&c->commit_failures),
      (unsigned long long)atomic_load(&c->storage_failing),
      (double)atomic_load(&c->commit_usec_sum) / 1e6);
  mst_dynbuf_adds(&t, "# HELP muster_commit_batch_rows Rows per committed history transaction.\n"
                      "# TYPE muster_commit_batch_rows histogram\n");
  for (size_t b = 0; b <= AGGR_BATCH_BUCKETS; b++) {
    cum += atomic_load(&c->commit_rows_bucket[b]);
    if (b < AGGR_BATCH_BUCKETS)
      mst_dynbuf_addf(&t, "muster_commit_batch_rows_bucket{le=\"%u\"} %llu\n", batch_bounds[b],
                      (unsigned long long)cum);
    else
      mst_dynbuf_addf(&t, "muster_commit_batch_rows_bucket{le=\"+Inf\"} %llu\n",
                      (unsigned long long)cum);
  }
  mst_dynbuf_addf(&t, "muster_commit_batch_rows_sum %llu\nmuster_commit_batch_rows_count %llu\n",
                  (unsigned long long)atomic_load(&c->commit_rows_sum), (unsigned long long)cum);
  mst_dynbuf_adds(&t, "# HELP muster_http_requests_total HTTP answers by route and status class.\n"
                      "# TYPE muster_http_requests_total counter\n");
  /* Routes that share a label stand next to each other (httpparse.h). */
  for (size_t r = 0; r < _AGGR_HTTP_ROUTE_MAX;) {
    const char *label = aggr_http_route_label((enum aggr_http_route)r);
    uint64_t sum[6] = {0};
    for (; r < _AGGR_HTTP_ROUTE_MAX &&
           strcmp(aggr_http_route_label((enum aggr_http_route)r), label) == 0;
         r++)
      for (size_t k = 0; k < 6; k++)
        sum[k] += atomic_load(&c->http_requests[r][k]);
    for (size_t k = 0; k < 6; k++)
      if (sum[k])
        mst_dynbuf_addf(&t, "muster_http_requests_total{route=\"%s\",code=\"%s\"} %llu\n", label,
                        code_classes[k], (unsigned long long)sum[k]);
  }
  mst_dynbuf_addf(&t,
                  "# HELP muster_http_parked_reads Blocking reads waiting for a change.\n"
                  "# TYPE muster_http_parked_reads gauge\nmuster_http_parked_reads %llu\n",
                  (unsigned long long)atomic_load(&c->parked_reads));
  mst_dynbuf_addf(&t,
                  "# HELP muster_http_lease_expired_total Data requests a leader answered 503 "
                  "because its lease had run out.\n"
                  "# TYPE muster_http_lease_expired_total counter\n"
                  "muster_http_lease_expired_total %llu\n",
                  (unsigned long long)atomic_load(&c->http_lease_expired));
  mst_dynbuf_adds(&t, "# HELP muster_limit_hits_total Inputs refused or cut off by a configured "
                      "limit.\n# TYPE muster_limit_hits_total counter\n");
  for (size_t l = 0; l < _AGGR_LIMIT_MAX; l++)
    mst_dynbuf_addf(&t, "muster_limit_hits_total{limit=\"%s\"} %llu\n", limit_names[l],
                    (unsigned long long)atomic_load(&c->limit_hits[l]));
  process_gauges(&t);
  notify_gauges(&t);
  election_gauges(&t, v, leads);
  if (v && leads)
    cluster_gauges(&t, v);
  return mst_dynbuf_take(&t, ret, ret_len) < 0 ? -ENOMEM : 0;
}
