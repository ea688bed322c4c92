/* The aggregator daemon's shared state: its configuration, the sd-event loop
 * that owns the live model and the agent streams, the SQLite writer thread,
 * the published views and the HTTP server. Everything here belongs to the
 * loop thread unless a field says otherwise. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "model/model.h"
#include "mst/profile.h"

struct aggr_writer;
struct aggr_views;
struct aggr_http;
struct aggr_conn;
struct aggr_election;
struct aggr_replica;
struct mst_tls_creds;

struct aggr_config {
  char *id;
  char *cluster;
  char *listen_stream;
  char *listen_http;
  char *advertise_stream; /* published for redirects; default listen_stream */
  char *advertise_http;   /* default listen_http */
  char *database;
  char *profiles;
  char *expected_masters; /* comma list */
  uint64_t stale_timeout_usec;
  uint64_t retention_usec;
  char *token_file;
  uint64_t max_frame;
  uint64_t http_threads;
  char *synchronous; /* "full" or "normal" */
  uint64_t hello_timeout_usec;
  uint64_t max_connections;
  uint64_t max_connections_per_address;
  uint64_t max_frames_per_second;
  uint64_t http_timeout_usec;
  uint64_t http_max_parked;
  uint64_t http_max_url;
  char *http_token_file; /* bearer token for the HTTP API (not /healthz, /readyz) */
  char *tls_cert;        /* [tls] cert and key: set, the agent stream is TLS */
  char *tls_key;
  char *tls_ca;                 /* [tls] ca: verifies agents' certificates and the leader's */
  bool tls_require_client_cert; /* [tls] require_client_cert: agents must present one */
  bool tls_http;                /* [tls] http: HTTPS on listen_http too (default yes) */
  char *zk_hosts;
  uint64_t zk_session_timeout_usec;
  int log_level;
};

/* What the aggregator holds for one (node, spool id): everything up to
 * held_seq is committed; received_seq is the highest seq handed to the
 * writer. Never freed while the daemon runs, so writer completions can refer
 * to it by pointer. */
struct aggr_spool {
  char *node_id;
  char *spool_id;
  uint64_t held_seq;
  uint64_t received_seq;
  struct aggr_conn *conn;  /* the stream currently feeding it, or NULL */
  struct aggr_spool *next; /* in its hash bucket */
};

/* Every spool record, hashed by (node id, spool id): a Hello or a warm-copy
 * commit finds its record in O(1) with 10,000 nodes as with 10. */
struct aggr_spools {
  struct aggr_spool **buckets;
  size_t n_buckets; /* a power of two, or 0 */
  size_t n;
};

struct aggr {
  struct aggr_config cfg;
  const char *config_path;         /* for reloads */
  char *token;                     /* contents of token_file, or NULL */
  struct mst_tls_creds *tls_creds; /* the agent stream's, when [tls] cert and key are set */
  sd_event *event;
  struct mst_profile_set *profiles;
  struct aggr_model model;
  struct aggr_stage stage; /* the stage engine's state, next to the model it evaluates */
  struct aggr_views *views;
  struct aggr_http *http;
  struct aggr_writer *writer;
  struct aggr_election *election; /* NULL when standalone */
  struct aggr_replica *replica;   /* the follower's warm copy; NULL when standalone */

  int listen_fd;
  sd_event_source *listen_source;
  int conn_epfd; /* the agent streams' epoll set (conn.c) */
  sd_event_source *conns_source;
  bool dispatching;            /* handling a batch of ready streams */
  struct aggr_conn *graveyard; /* streams closed during that batch */
  struct aggr_conn *backlog;   /* streams with whole frames left to handle */
  sd_event_source *backlog_source;
  sd_event_source *publish_timer;
  sd_event_source *stale_timer;
  sd_event_source *longpoll_timer;
  sd_event_source *writer_source;
  uint64_t last_publish_usec; /* monotonic: when the last publish started */
  uint64_t publish_cost_usec; /* how long it took */
  bool dcos_dirty;            /* the model changed since that snapshot */
  bool publish_armed;

  struct aggr_addr_count **addr_counts; /* streams per peer address (conn.c) */
  struct aggr_conn *conns;              /* doubly linked */
  size_t n_conns;
  struct aggr_spools spools;

  uint64_t epoch;      /* of the current leadership term */
  bool leading;        /* this aggregator is the leader */
  bool record_verdict; /* record the cluster verdict at the next publish */
  bool ready;
  bool check_evaluate; /* MUSTER_CHECK_EVALUATE=1: aggr_model_check() after each evaluation */
};

/* Asks for the model to be evaluated and a view published: at once (spaced
 * by a few ms under load) when urgent, else within a second. Loop thread. */
void aggr_request_publish(struct aggr *a, bool urgent);

/* Finds or creates the spool record for (node, spool id). Loop thread. */
struct aggr_spool *aggr_spool_get(struct aggr *a, const char *node_id, const char *spool_id);

/* conn.c: the agent stream listener and connections. Loop thread. */
int aggr_stream_listen(struct aggr *a);
void aggr_stream_close_all(struct aggr *a);
/* Closes every agent stream but keeps listening (on losing leadership). */
void aggr_stream_close_conns(struct aggr *a);
/* Called by the loop when the writer committed a spool up to seq (or failed). */
void aggr_conn_committed(struct aggr *a, struct aggr_spool *spool, uint64_t seq, bool ok);
