/* Prometheus metrics of the aggregator, served at GET /metrics.
 *
 * Counters are process-wide atomics that any thread bumps without a lock.
 * The gauges that describe the cluster (node verdicts, component states,
 * connected agents, leadership) are rendered by the loop thread from its
 * model, once a second while /metrics is being scraped (demand.h), into a
 * text block that HTTP threads copy under a short mutex. Each node's lines
 * are kept with the node and rendered again only when the node changed. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aggr_model;

enum aggr_metric_route {
  AGGR_ROUTE_HEALTH,
  AGGR_ROUTE_NODES,
  AGGR_ROUTE_NODE,
  AGGR_ROUTE_HISTORY,
  AGGR_ROUTE_HISTORY_CLUSTER,
  AGGR_ROUTE_METRICS,
  AGGR_ROUTE_HEALTHZ,
  AGGR_ROUTE_READYZ,
  AGGR_ROUTE_INTERNAL,
  AGGR_ROUTE_DCOS,
  AGGR_ROUTE_OTHER,
  _AGGR_ROUTE_MAX,
};

/* The limits on what arrives from outside (docs/configuration.md), each
 * counted when hit: muster_limit_hits_total{limit="..."}. */
enum aggr_limit {
  AGGR_LIMIT_STREAM_CONNECTIONS,
  AGGR_LIMIT_STREAM_CONNECTIONS_PER_ADDRESS,
  AGGR_LIMIT_STREAM_FRAME_SIZE,
  AGGR_LIMIT_STREAM_FRAMES_PER_SECOND,
  AGGR_LIMIT_STREAM_HELLO_TIMEOUT,
  AGGR_LIMIT_STREAM_IDLE_TIMEOUT,
  AGGR_LIMIT_STREAM_AUTH_BACKOFF,
  AGGR_LIMIT_HTTP_URL_LENGTH,
  AGGR_LIMIT_HTTP_PARKED_READS,
  AGGR_LIMIT_HTTP_TIMEOUT,
  AGGR_LIMIT_HTTP_UNAUTHORIZED, /* a request without the right bearer token (401) */
  _AGGR_LIMIT_MAX,
};

/* Commit batch size buckets (rows per transaction). */
#define AGGR_BATCH_BUCKETS 8

struct aggr_counters {
  atomic_uint_fast64_t changes_received;  /* changes accepted from agents */
  atomic_uint_fast64_t changes_duplicate; /* replayed changes already held */
  atomic_uint_fast64_t acks_sent;
  atomic_uint_fast64_t rejects;         /* connections refused with a Reject */
  atomic_uint_fast64_t tls_failures;    /* agent streams whose TLS handshake failed */
  atomic_uint_fast64_t commits;         /* transactions committed */
  atomic_uint_fast64_t commit_failures; /* rolled back (error or no lease) */
  atomic_uint_fast64_t commit_rows_sum;
  atomic_uint_fast64_t commit_rows_bucket[AGGR_BATCH_BUCKETS + 1]; /* +Inf last */
  atomic_uint_fast64_t commit_usec_sum;
  atomic_uint_fast64_t replicated_rows;                   /* rows copied from the leader */
  atomic_uint_fast64_t http_requests[_AGGR_ROUTE_MAX][6]; /* by class: 2xx 3xx 400 404 4xx 5xx */
  atomic_uint_fast64_t parked_reads;                      /* gauge, kept by the HTTP server */
  atomic_uint_fast64_t limit_hits[_AGGR_LIMIT_MAX];
};

extern struct aggr_counters aggr_counters;

/* Notes one committed transaction of rows rows that took usec. Any thread. */
void aggr_metrics_commit(size_t rows, uint64_t usec);
/* Notes one hit of a limit. Any thread. */
void aggr_metrics_limit(enum aggr_limit limit);

/* Notes one HTTP answer. Any thread. */
void aggr_metrics_http(enum aggr_metric_route route, unsigned status);

/* Loop thread: whether the cluster gauges are to be rendered now. */
bool aggr_metrics_model_due(uint64_t now_usec);

/* Renders the cluster gauges from the model (loop thread) and keeps them
 * for the HTTP threads. Updates each node's cached lines. */
void aggr_metrics_update_model(struct aggr_model *m, size_t connected_agents, uint64_t epoch);

/* The whole exposition text. Returns 0 with a malloc'd body, or -ENOMEM.
 * Any thread. */
int aggr_metrics_render(char **ret, size_t *ret_len);

void aggr_metrics_done(void);
