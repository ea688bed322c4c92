/* Prometheus metrics of the aggregator, served at GET /metrics.
 *
 * Counters are process-wide atomics that any thread bumps without a lock,
 * rendered when /metrics is read, with the process metrics. The gauges that
 * describe the cluster (the cluster verdict, each node's verdict and
 * component states, exported by the leader only) and leadership come from
 * the published view (view.h), like every other body:
 * the loop renders each node's lines when it renders the node's bodies
 * (aggr_metrics_node_lines), and a scrape pastes the view's lines after the
 * counters. So a scrape never waits for the loop and never sees a lock. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "serve/httpparse.h"

struct aggr_model;
struct aggr_node;
struct aggr_view;

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
  AGGR_LIMIT_STREAM_COMPONENTS_PER_NODE, /* a frame over max_components_per_node (refused) */
  AGGR_LIMIT_STREAM_SEQ_ORDER,           /* a batch with a gap or seqs out of order (refused) */
  AGGR_LIMIT_STREAM_SPOOL_BEHIND,        /* a Hello whose spool is behind what is held (refused) */
  AGGR_LIMIT_STREAM_NODE_CONFLICT, /* a Hello for a node streaming from another agent (refused) */
  AGGR_LIMIT_HTTP_URL_LENGTH,
  AGGR_LIMIT_HTTP_PARKED_READS,
  AGGR_LIMIT_HTTP_TIMEOUT,
  AGGR_LIMIT_HTTP_UNAUTHORIZED, /* a request without the right bearer token (401) */
  AGGR_LIMIT_HTTP_CONNECTIONS,  /* closed at accept: http_max_connections(_per_address) */
  AGGR_LIMIT_HTTP_IDLE_EVICTED, /* the oldest waiting connection, closed to make room */
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
  atomic_uint_fast64_t replicated_rows; /* rows copied from the leader */
  atomic_uint_fast64_t http_requests[_AGGR_HTTP_ROUTE_MAX]
                                    [6]; /* by class: 2xx 3xx 400 404 4xx 5xx */
  atomic_uint_fast64_t parked_reads;     /* gauge, kept by the HTTP server */
  atomic_uint_fast64_t agents_connected; /* gauge, kept by the loop */
  atomic_uint_fast64_t storage_failing;  /* gauge, kept by the loop: 1 while commits fail */
  atomic_uint_fast64_t limit_hits[_AGGR_LIMIT_MAX];
  /* Data requests a leader answered 503 because its lease had run out. */
  atomic_uint_fast64_t http_lease_expired;
  /* Notifications (notify/notify.h), kept by the muster-notify thread and
   * the loop. */
  atomic_uint_fast64_t notify_posts;             /* posts an Alertmanager accepted */
  atomic_uint_fast64_t notify_failures;          /* posts that failed */
  atomic_uint_fast64_t notify_dropped;           /* alerts left out past max_alerts */
  atomic_uint_fast64_t notify_alerts;            /* gauge: alerts firing now */
  atomic_uint_fast64_t notify_failing;           /* gauge: Alertmanagers whose last post failed */
  atomic_uint_fast64_t notify_last_success_usec; /* gauge: realtime of the last accepted post */
  atomic_uint_fast64_t notify_configured;        /* gauge: Alertmanagers configured */
};

extern struct aggr_counters aggr_counters;

/* Notes one committed transaction of rows rows that took usec. Any thread. */
void aggr_metrics_commit(size_t rows, uint64_t usec);
/* Notes one hit of a limit. Any thread. */
void aggr_metrics_limit(enum aggr_limit limit);

/* Notes one HTTP answer. Any thread. */
void aggr_metrics_http(enum aggr_http_route route, unsigned status);

/* Notes how many agent streams are connected now. Loop thread. */
void aggr_metrics_agents_connected(size_t n);

/* Notes whether the history database's commits fail. Loop thread. */
void aggr_metrics_storage_failing(bool failing);

/* The families of a node's lines, in the order a scrape shows them. */
enum aggr_node_family {
  AGGR_NODE_FAMILY_VERDICT,       /* muster_node_verdict */
  AGGR_NODE_FAMILY_CONNECTED,     /* muster_node_connected */
  AGGR_NODE_FAMILY_LAST_SEEN,     /* muster_node_last_seen_timestamp_seconds */
  AGGR_NODE_FAMILY_STARTUP,       /* muster_node_startup_percent */
  AGGR_NODE_FAMILY_STARTUP_STAGE, /* muster_node_startup_stage */
  AGGR_NODE_FAMILY_COMPONENTS,    /* muster_component_state */
  _AGGR_NODE_FAMILY_MAX,
};

/* Loop thread, for view.c: node n's lines, family after family (enum
 * aggr_node_family), in *ret (malloc'd, owned by the caller) with their
 * length in *ret_len; family k's lines end at offset ret_ends[k] (and start
 * where family k-1's end, or at 0). Returns 0 or -ENOMEM. */
int aggr_metrics_node_lines(const struct aggr_node *n, char **ret, size_t *ret_len,
                            size_t ret_ends[_AGGR_NODE_FAMILY_MAX]);

/* The whole exposition text: the counters now, the process metrics and
 * muster_build_info, the election's gauges (muster_leader from leads), and
 * the cluster gauges of view v (the cluster, node and component series)
 * only when this aggregator leads: none when v is NULL or !leads. leads:
 * whether this aggregator leads now (v says so and the lease holds; http.c's
 * view_leads()).
 * Returns 0 with a malloc'd body, or -ENOMEM. Any thread holding v. */
int aggr_metrics_render(const struct aggr_view *v, bool leads, char **ret, size_t *ret_len);

/* Loop thread, for view.c: the operator state's families (issue 19), each
 * with HELP and TYPE, one line per node or component of the model in
 * maintenance or acknowledged, so alert rules can leave them out:
 *   muster_node_maintenance{node}                 1
 *   muster_component_maintenance{node,component}  1
 *   muster_component_acknowledged{node,component} 1
 * In *ret (malloc'd) with its length. Returns 0 or -ENOMEM. */
struct aggr_model;
int aggr_metrics_operator_lines(const struct aggr_model *m, char **ret, size_t *ret_len);
