/* The aggregator daemon's shared state: its configuration and what the
 * loop thread owns. Everything here belongs to the loop thread unless a
 * field says otherwise.
 *
 * DESIGN. One sd-event loop thread owns every mutable thing: the live model,
 * the agent streams, the spool table and the timers. Every other thread has
 * exactly one door to it, and none of them ever reads the loop's data:
 *
 *   thread                 door to the loop
 *   ---------------------  -------------------------------------------------
 *   loop (main)            (owns the state; never waits on SQLite, ZooKeeper
 *                          or HTTP)
 *   muster-writer          ingest/writer.c: takes jobs from a queue the loop
 *                          fills; reports commits on a result queue and an
 *                          eventfd that ingest/committed.c reads on the loop
 *   muster-ckpt            ingest/writer.c: talks to the writer thread only
 *                          (WAL checkpoints on its own connection)
 *   muster-replica         ingest/replica.c (followers): copies the leader's
 *                          history into writer jobs; the loop learns of them
 *                          through the writer's commits. The loop tells it
 *                          whom to follow (aggr_replica_follow, a mutex)
 *   libmicrohttpd's pool   serve/view.h: reads only immutable published
 *                          views (refcounted, swapped by the loop at each
 *                          publish, publish.c), history from SQLite on its
 *                          own read-only connections (serve/history.c),
 *                          atomic counters (serve/metrics.h), and the lease
 *                          (aggr_election_lease_valid: atomics the election
 *                          writes on the loop), checked before answering
 *                          from a leader's view. The loop wakes parked
 *                          blocking reads (aggr_http_wake)
 *   ZooKeeper's threads    election.c: each watcher or completion copies its
 *                          event into a queue under a mutex and writes an
 *                          eventfd; the loop runs the state machine
 *   libmicrohttpd (writes) serve/http.c: a checked PUT or DELETE of operator
 *                          state is queued under a mutex with an eventfd
 *                          that operate.c reads; the loop answers it with
 *                          aggr_http_write_answer (MHD_resume_connection)
 *   muster-notify          notify/notify.c (the leader, with [alertmanager]
 *                          urls): posts alerts to Alertmanager. At each
 *                          publish the loop puts the alert set it derived
 *                          in one slot under a mutex (the newest replaces
 *                          one not taken yet) and signals a condition; the
 *                          thread never reads the model
 *
 * The data path: a probe result on a node becomes a change in the agent's
 * spool, a frame on its stream (ingest/conn.c, ingest/envelope.c), a
 * change applied to the model (model/model.c) and a job for the writer;
 * once committed, an Ack to the agent; at the next publish (publish.c) an
 * evaluation (model/evaluate.c, stage.c, cause.c) and a new view that HTTP
 * serves (serve/). docs/internals.md says more. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "ingest/spools.h"
#include "model/model.h"
#include "mst/profile.h"

struct aggr_writer;
struct aggr_views;
struct aggr_http;
struct aggr_conn;
struct aggr_election;
struct aggr_replica;
struct mst_tls_creds;
struct aggr_operate;
struct aggr_notify;

/* [aggregator] synchronous: SQLite's synchronous setting for the history. */
enum aggr_synchronous {
  AGGR_SYNCHRONOUS_FULL, /* an fsync at every commit: nothing acknowledged is lost on power loss */
  AGGR_SYNCHRONOUS_NORMAL, /* WAL without fsync per commit: survives a crash, not a power cut */
};

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
  int synchronous; /* enum aggr_synchronous */
  uint64_t hello_timeout_usec;
  uint64_t max_connections;
  uint64_t max_connections_per_address;
  uint64_t max_frames_per_second;
  uint64_t max_components_per_node; /* a snapshot or batch going over it is refused */
  uint64_t
      node_conflict_window_usec; /* a node id refused to a second agent is a reason this long */
  uint64_t http_timeout_usec;
  uint64_t http_max_parked;
  uint64_t http_max_connections;
  uint64_t http_max_connections_per_address;
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
  uint64_t first_contact_window_usec; /* an expected master not reported yet is starting this
                                       * long after the first Hello, then missing */
  char *http_admin_token_file;        /* bearer token for the API's writes (issue 19) */
  uint64_t forget_after_usec; /* forget nodes silent this long (not expected masters); 0: never */
  /* [alertmanager] (notify/notify.h): no urls, no notifications. */
  char *am_urls;         /* comma list of base URLs */
  char *am_external_url; /* the dashboard's URL, for the alerts' links */
  uint64_t am_resend_interval_usec;
  uint64_t am_timeout_usec;
  uint64_t am_max_alerts;
};

/* A message logged at most once per interval, with a count of the
 * occurrences held back in between (conn.c's refusals at accept). */
struct aggr_log_interval {
  uint64_t next_usec; /* monotonic: the next one may be logged from then on */
  uint64_t held;      /* occurrences since the last one logged */
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
  sd_event_source *listen_resume; /* re-enables the listener after a failed accept */
  uint64_t listen_backoff_usec;   /* the current pause; 0 while accepts succeed */
  struct aggr_log_interval log_accept_failed, log_over_cap, log_over_address;
  struct aggr_log_interval
      log_node_conflict; /* Hellos refused: the node streams from another agent */
  int conn_epfd;         /* the agent streams' epoll set (conn.c) */
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
  bool publish_armed;

  struct aggr_addr_count **addr_counts; /* streams per peer address (conn.c) */
  struct aggr_conn *conns;              /* doubly linked */
  size_t n_conns;
  struct aggr_spools spools; /* ingest/spools.h */

  uint64_t epoch;      /* of the current leadership term */
  bool leading;        /* this aggregator is the leader */
  bool record_verdict; /* record the cluster verdict at the next publish */
  bool ready;
  bool check_evaluate; /* MUSTER_CHECK_EVALUATE=1: aggr_model_check() after each evaluation */
  struct aggr_operate *operate; /* the API's writes of operator state (operate.h) */
  struct aggr_notify *notify;   /* the muster-notify thread; NULL without [alertmanager] urls */
};
