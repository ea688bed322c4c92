/* Agent streams on the aggregator: the listening socket and one non-blocking,
 * framed connection per agent, all on the loop thread.
 *
 * A connection starts in HELLO: the first frame must be a Hello, within the
 * hello timeout. A good Hello binds it to a node and to that node's spool
 * record and is answered by a Welcome carrying what is already held. From
 * then on ChangeBatch, Snapshot and Heartbeat frames update the live model at
 * once (so the API is fresh) and hand the changes to the writer thread; the
 * Ack for a seq goes out only when the writer reports it committed.
 *
 * Anything that breaks the rules (an undecodable, oversized or endless frame,
 * a report before Hello, a second Hello, a Hello without node id, an unknown
 * role, a bad token) gets a Reject with the reason, a log line, and the
 * connection is closed after the Reject is flushed. Other connections are
 * not affected.
 *
 * With [tls] cert and key, a connection starts in TLS instead: its first
 * bytes must be a TLS handshake (a plain frame gets a plain Reject saying
 * that TLS is required, so the token of a misconfigured agent is never
 * read), then the GnuTLS handshake runs on the loop within the same hello
 * timeout, and from then on every frame goes through the session. A
 * handshake that fails on the agent's certificate counts as a failed
 * credential for the address's back-off, like a wrong token. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "aggr.h"
#include "ingest/conn.h"
#include "publish.h"
#include "election.h"
#include "ingest/envelope.h"
#include "serve/metrics.h"
#include "mst/auth.h"
#include "mst/addr.h"
#include "mst/frame.h"
#include "mst/hash.h"
#include "mst/log.h"
#include "mst/time.h"
#include "mst/tls.h"
#include "ingest/writer.h"

#define CONN_OUTBUF_MAX           (8u * 1024 * 1024)
#define CONN_LINGER_USEC          (1 * USEC_PER_SEC)
#define CONN_MAX_FRAMES_PER_WAKE  256
#define ADDR_BUCKETS              1024
#define AUTH_PENALTY_FIRST_USEC   (100 * USEC_PER_MSEC)
#define AUTH_PENALTY_MAX_USEC     (60 * USEC_PER_SEC)
#define ACCEPT_BACKOFF_FIRST_USEC (100 * USEC_PER_MSEC)
#define ACCEPT_BACKOFF_MAX_USEC   (1 * USEC_PER_SEC)
#define ACCEPT_LOG_INTERVAL_USEC  (1 * USEC_PER_SEC)

/* Per peer address: how many streams it has open (max_connections_per_address)
 * and, against guessing the token, its failed Hellos in a row and until when
 * its new connections are closed at accept (100 ms after the first failure,
 * doubling up to a minute). An entry stays while it has streams or a
 * penalty. */
struct aggr_addr_count {
  uint8_t key[17]; /* family, then the address's 4 or 16 bytes */
  size_t n;
  unsigned auth_failures;
  uint64_t penalty_until_usec; /* monotonic */
  struct aggr_addr_count *next;
};

enum conn_state {
  CONN_HELLO,
  CONN_TLS, /* before HELLO when TLS is on: sniffing, then the handshake */
  CONN_STREAMING,
  CONN_CLOSING, /* a Reject is being flushed; input is discarded */
};

struct aggr_conn {
  struct aggr *aggr;
  int fd;
  struct mst_tls *tls;    /* NULL for plain TCP (and before the handshake starts) */
  uint32_t events;        /* what the connection set (a->conn_epfd) waits for */
  sd_event_source *timer; /* hello deadline, idle timeout, or linger */
  struct mst_frame_reader rd;
  struct mst_buf wr;
  enum conn_state state;
  char peer[MST_ADDR_STRLEN];
  struct aggr_node *node;
  struct aggr_spool *spool;
  uint64_t last_heard_usec; /* monotonic */
  struct aggr_addr_count *addr;
  double frame_tokens;  /* max_frames_per_second's bucket */
  uint64_t tokens_usec; /* monotonic: when it was last filled */
  bool dead;            /* to be freed once the current event handler returns */
  bool freed;           /* closed; its memory goes once the batch of events is done */
  bool backlogged;      /* on a->backlog: whole frames wait in rd */
  bool changes_seen;    /* a ChangeBatch came: the next may not skip seqs */
  struct aggr_conn *prev, *next;
  struct aggr_conn *backlog_next;
  /* Why the stream closes, for the node's reachability history (the first
   * reason given wins), and whether it was for silence. */
  char close_why[160];
  bool closed_silent;
};

static void conn_free(struct aggr_conn *c);
static int conn_update_events(struct aggr_conn *c);

/* Records why c closes, unless a reason was given already. */
static void conn_close_why(struct aggr_conn *c, const char *fmt, ...) _printf_(2, 3);
static void conn_close_why(struct aggr_conn *c, const char *fmt, ...) {
  va_list ap;
  if (c->close_why[0])
    return;
  va_start(ap, fmt);
  vsnprintf(c->close_why, sizeof(c->close_why), fmt, ap);
  va_end(ap);
}

/* A change of c's node's reachability for history (schema/0005): every
 * one, whatever the cluster verdict. */
static void conn_record_event(struct aggr_conn *c, const char *event, uint64_t now,
                              const char *detail) {
  struct aggr *a = c->aggr;
  if (!a->writer)
    return;
  struct aggr_write *j =
      aggr_write_new_node_event(a->epoch, c->node->id, event, (int64_t)(now / USEC_PER_MSEC),
                                c->peer, c->node->boot_id, detail);
  if (!j) {
    log_error("out of memory recording that node %s %s, ignoring", c->node->id, event);
    return;
  }
  aggr_writer_submit(a->writer, j);
}

static uint8_t *addr_key(const struct sockaddr_storage *ss, uint8_t key[17]) {
  memset(key, 0, 17);
  key[0] = (uint8_t)ss->ss_family;
  if (ss->ss_family == AF_INET)
    memcpy(key + 1, &((const struct sockaddr_in *)ss)->sin_addr, 4);
  else if (ss->ss_family == AF_INET6)
    memcpy(key + 1, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
  return key;
}

static size_t addr_bucket(const uint8_t key[17]) {
  uint64_t h = MST_HASH_INIT;
  for (size_t i = 0; i < 17; i++)
    h = (h ^ key[i]) * 1099511628211ULL;
  return h % ADDR_BUCKETS;
}

/* Counts one more stream from ss; NULL when the address has its maximum
 * (or on no memory). */
static struct aggr_addr_count *addr_take(struct aggr *a, const struct sockaddr_storage *ss) {
  uint8_t key[17];
  if (!a->addr_counts && !(a->addr_counts = calloc(ADDR_BUCKETS, sizeof(*a->addr_counts))))
    return NULL;
  addr_key(ss, key);
  uint64_t now = mst_now_monotonic_usec();
  struct aggr_addr_count **b = &a->addr_counts[addr_bucket(key)], *e, **p = b;
  while ((e = *p)) {
    if (memcmp(e->key, key, sizeof(key)) == 0)
      break;
    if (e->n == 0 && now >= e->penalty_until_usec) { /* a penalty that ran out */
      *p = e->next;
      free(e);
      continue;
    }
    p = &e->next;
  }
  if (e && e->n >= a->cfg.max_connections_per_address)
    return NULL;
  if (e && mst_now_monotonic_usec() < e->penalty_until_usec) {
    aggr_metrics_limit(AGGR_LIMIT_STREAM_AUTH_BACKOFF);
    return NULL;
  }
  if (!e) {
    if (!(e = calloc(1, sizeof(*e))))
      return NULL;
    memcpy(e->key, key, sizeof(key));
    e->next = *b;
    *b = e;
  }
  e->n++;
  return e;
}

static void addr_give_back(struct aggr *a, struct aggr_addr_count *e) {
  if (!e || --e->n > 0 || mst_now_monotonic_usec() < e->penalty_until_usec)
    return;
  for (struct aggr_addr_count **p = &a->addr_counts[addr_bucket(e->key)]; *p; p = &(*p)->next)
    if (*p == e) {
      *p = e->next;
      free(e);
      return;
    }
}

static void conn_release(struct aggr_conn *c) {
  mst_frame_reader_done(&c->rd);
  mst_buf_done(&c->wr);
  free(c);
}

/* Detaches the connection from its node and spool, closes it and frees it.
 * While a batch of ready connections is being handled (conns_io), another
 * connection of the batch may be closed (a new stream of the same spool
 * replaces the old one): its memory is then kept until the batch is done. */
static void conn_free(struct aggr_conn *c) {
  struct aggr *a;
  if (!c)
    return;
  a = c->aggr;
  if (c->node && c->node->conn == c) {
    uint64_t now = mst_now_realtime_usec();
    conn_record_event(c, "disconnected", now, c->close_why[0] ? c->close_why : "the stream closed");
    /* The registry keeps the last frame's time for a restart (restore.c). */
    struct aggr_write *jn =
        aggr_write_new_node(a->epoch, c->node->id, c->node->role, c->node->hostname,
                            (int64_t)(c->node->last_seen_usec / USEC_PER_MSEC));
    if (jn && a->writer)
      aggr_writer_submit(a->writer, jn);
    else
      aggr_write_free(jn);
    aggr_node_apply_disconnect(c->node, c, now, c->closed_silent);
    aggr_request_publish(a, true);
  }
  if (c->spool && c->spool->conn == c)
    c->spool->conn = NULL;
  if (c->prev)
    c->prev->next = c->next;
  else
    a->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  a->n_conns--;
  aggr_metrics_agents_connected(a->n_conns);
  addr_give_back(a, c->addr);
  c->addr = NULL;
  sd_event_source_disable_unref(c->timer);
  c->timer = NULL;
  if (c->fd >= 0) {
    (void)epoll_ctl(a->conn_epfd, EPOLL_CTL_DEL, c->fd, NULL);
    mst_tls_free(c->tls);
    c->tls = NULL;
    close(c->fd);
    c->fd = -1;
  }
  if (c->backlogged) {
    c->freed = true; /* released when the backlog comes to it */
    return;
  }
  if (a->dispatching) {
    c->freed = true;
    c->next = a->graveyard;
    a->graveyard = c;
    return;
  }
  conn_release(c);
}

static int conn_send(struct aggr_conn *c, const Muster__Envelope *env) {
  int r = mst_frame_write_envelope(&c->wr, env, c->aggr->cfg.max_frame);
  if (r < 0) {
    log_warning("stream %s: cannot queue frame: %s; closing", c->peer, strerror(-r));
    conn_close_why(c, "cannot queue a frame: %s", strerror(-r));
    return r;
  }
  return conn_update_events(c);
}

static int linger_expired(sd_event_source *s, uint64_t usec, void *userdata) {
  conn_free(userdata);
  return 0;
}

/* Queues a last frame (a Reject or a Redirect) and closes the connection
 * once it is flushed, or after a short linger if the peer does not read. */
static void conn_send_last(struct aggr_conn *c, const Muster__Envelope *env) {
  c->state = CONN_CLOSING;
  /* Stop feeding the model from this connection at once. */
  if (c->spool && c->spool->conn == c)
    c->spool->conn = NULL;
  if (mst_frame_write_envelope(&c->wr, env, c->aggr->cfg.max_frame) < 0 ||
      conn_update_events(c) < 0) {
    c->dead = true;
    return;
  }
  sd_event_source_disable_unref(c->timer);
  c->timer = NULL;
  if (sd_event_add_time_relative(c->aggr->event, &c->timer, CLOCK_MONOTONIC, CONN_LINGER_USEC, 0,
                                 linger_expired, c) < 0)
    c->dead = true;
}

/* Sends a Reject and closes once it is flushed (or after a short linger if
 * the peer does not read); the caller logs. */
static void conn_send_reject(struct aggr_conn *c, Muster__RejectCode code, char *reason) {
  Muster__Envelope env = MUSTER__ENVELOPE__INIT;
  Muster__Reject rej = MUSTER__REJECT__INIT;

  atomic_fetch_add(&aggr_counters.rejects, 1);
  rej.code = code;
  rej.reason = reason;
  env.body_case = MUSTER__ENVELOPE__BODY_REJECT;
  env.reject = &rej;
  conn_send_last(c, &env);
}

/* Sends a Reject, logs why, and closes once it is flushed (or after a short
 * linger if the peer does not read). */
static void conn_reject(struct aggr_conn *c, Muster__RejectCode code, const char *fmt, ...)
    _printf_(3, 4);
static void conn_reject(struct aggr_conn *c, Muster__RejectCode code, const char *fmt, ...) {
  char reason[512];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(reason, sizeof(reason), fmt, ap);
  va_end(ap);

  log_warning("stream %s%s%s: rejected: %s", c->peer, c->node ? " node " : "",
              c->node ? c->node->id : "", reason);
  conn_close_why(c, "refused: %s", reason);
  conn_send_reject(c, code, reason);
}

/* A wrong credential (token or certificate): the address's new connections
 * are refused at accept for a while, doubling with each failure in a row.
 * Returns how many in a row. */
static unsigned conn_auth_failed(struct aggr_conn *c) {
  struct aggr_addr_count *e = c->addr;
  if (!e)
    return 1;
  unsigned shift = MST_MIN(e->auth_failures, 10u);
  e->auth_failures++;
  e->penalty_until_usec =
      mst_now_monotonic_usec() + MST_MIN(AUTH_PENALTY_FIRST_USEC << shift, AUTH_PENALTY_MAX_USEC);
  return e->auth_failures;
}

static int conn_send_ack(struct aggr_conn *c, uint64_t seq) {
  Muster__Envelope env = MUSTER__ENVELOPE__INIT;
  Muster__Ack ack = MUSTER__ACK__INIT;
  ack.seq = seq;
  atomic_fetch_add(&aggr_counters.acks_sent, 1);
  env.body_case = MUSTER__ENVELOPE__BODY_ACK;
  env.ack = &ack;
  return conn_send(c, &env);
}

void aggr_conn_committed(struct aggr *a, struct aggr_spool *spool, uint64_t seq, bool ok) {
  struct aggr_conn *c = spool->conn;
  if (!ok) {
    /* Nothing of this batch is durable: forget what was received beyond what
     * is held and make the agent replay it. */
    spool->received_seq = spool->held_seq;
    if (c && c->state == CONN_STREAMING) {
      log_error("stream %s node %s: history commit failed; closing so the agent replays", c->peer,
                spool->node_id);
      conn_free(c);
    }
    return;
  }
  /* held_seq (and its fingerprint) already moved: aggr_spool_held(). The
   * writer committed under the lease; acknowledge only while it holds. */
  if (!a->leading || !aggr_election_lease_valid(a->election))
    return;
  if (c && c->state == CONN_STREAMING && conn_send_ack(c, spool->held_seq) < 0)
    conn_free(c);
}

/* The interval at which the aggregator asks agents to send heartbeats (in
 * the Welcome): a third of the stale timeout keeps a live node fresh. */
static uint64_t conn_heartbeat_usec(const struct aggr *a) {
  return MST_MAX(a->cfg.stale_timeout_usec / 3 / USEC_PER_MSEC, 1) * USEC_PER_MSEC;
}

/* Whether the node's stream held keeps the node from a Hello for spool
 * spool_id. Two agents with one node id would otherwise take it from each
 * other on every reconnect, the node's boot id and components flipping
 * many times a second. The same spool id is the same agent coming back
 * (after a network blip its old stream may linger): it takes over at once.
 * A stream that missed two heartbeats, or whose peer has hung up (the
 * close not yet read: the agent closed and connected again), gives way. */
static bool conn_holds_node(const struct aggr_conn *held, const char *spool_id) {
  if (!held || held->state != CONN_STREAMING || !held->spool ||
      strcmp(held->spool->spool_id, spool_id) == 0)
    return false;
  if (mst_now_monotonic_usec() - held->last_heard_usec > 2 * conn_heartbeat_usec(held->aggr))
    return false;
  struct pollfd p = {.fd = held->fd, .events = POLLIN | POLLRDHUP};
  return poll(&p, 1, 0) >= 0 && !(p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static bool log_interval_due(struct aggr_log_interval *li, uint64_t *held);

/* A second agent said Hello as node, which streams from another: refused,
 * named as a reason on the node (aggr_node_apply_conflict) for the conflict
 * window after the last such Hello, counted, and logged at most once a
 * second. The agent backs off on the Reject (agentd/stream.c). */
static void conn_refuse_conflict(struct aggr_conn *c, struct aggr_node *node,
                                 const char *spool_id) {
  struct aggr *a = c->aggr;
  const struct aggr_conn *held = node->conn;
  uint64_t now = mst_now_realtime_usec(), n_held;
  char from[sizeof(c->peer)], reason[512];

  /* The address alone, without the port: the same on every retry. */
  snprintf(from, sizeof(from), "%s", c->peer);
  char *colon = strrchr(from, ':');
  if (colon && strncmp(from, "fd ", 3) != 0)
    *colon = '\0';

  aggr_metrics_limit(AGGR_LIMIT_STREAM_NODE_CONFLICT);
  int r = aggr_node_apply_conflict(node, held->spool->spool_id, spool_id, from, now,
                                   now + a->cfg.node_conflict_window_usec);
  if (r < 0)
    log_error("stream %s: out of memory naming node %s's conflict, ignoring", c->peer, node->id);
  else if (r > 0)
    aggr_request_publish(a, true);
  snprintf(reason, sizeof(reason),
           "node id %s is already reported by another agent (spool %.16s from %s); two agents "
           "share a node id: give each its own node_id",
           node->id, held->spool->spool_id, held->peer);
  if (log_interval_due(&a->log_node_conflict, &n_held))
    log_warning("stream %s: rejected a Hello as node %s from spool %.16s: %s (%llu more such "
                "Hellos refused since the last line)",
                c->peer, node->id, spool_id, reason, (unsigned long long)n_held);
  conn_send_reject(c, MUSTER__REJECT_CODE__REJECT_NODE_CONFLICT, reason);
}

/* The Hello: identify the node, check role and credentials, bind the spool
 * and answer with a Welcome. Returns 0, or -1 after the connection was
 * rejected or freed. */
static int conn_on_hello(struct aggr_conn *c, const Muster__Hello *h) {
  struct aggr *a = c->aggr;
  const struct mst_profile *profile;
  struct aggr_node *node;
  struct aggr_spool *spool;
  uint64_t now = mst_now_realtime_usec();

  /* Its fields were checked by aggr_envelope_check(). */
  if (!a->leading) {
    const char *leader = a->election ? aggr_election_leader_stream(a->election) : NULL;
    if (leader) {
      Muster__Envelope env = MUSTER__ENVELOPE__INIT;
      Muster__Redirect rd = MUSTER__REDIRECT__INIT;
      rd.stream_address = (char *)leader;
      rd.http_address =
          (char *)(aggr_election_leader_http(a->election) ? aggr_election_leader_http(a->election)
                                                          : "");
      rd.leader_id =
          (char *)(aggr_election_leader_id(a->election) ? aggr_election_leader_id(a->election)
                                                        : "");
      rd.epoch = aggr_election_epoch(a->election);
      env.body_case = MUSTER__ENVELOPE__BODY_REDIRECT;
      env.redirect = &rd;
      log_info("stream %s: node %.64s redirected to the leader at %s", c->peer, h->node_id, leader);
      conn_send_last(c, &env);
      return -1;
    }
    conn_reject(c, MUSTER__REJECT_CODE__REJECT_NOT_LEADER,
                "this aggregator is not the leader and no leader is known");
    return -1;
  }
  if (a->token && !mst_token_equal(a->token, h->token)) {
    log_warning("stream %s: wrong or missing token (%u in a row from this address)", c->peer,
                conn_auth_failed(c));
    conn_reject(c, MUSTER__REJECT_CODE__REJECT_UNAUTHORIZED, "wrong or missing token");
    return -1;
  }
  if (c->addr)
    c->addr->auth_failures = 0;
  profile = mst_profile_set_find(a->profiles, h->role);
  if (!profile) {
    conn_reject(c, MUSTER__REJECT_CODE__REJECT_UNKNOWN_ROLE, "unknown role '%.64s'",
                h->role ? h->role : "");
    return -1;
  }

  /* Before anything of the refused agent is bound or recorded. */
  node = aggr_model_find(&a->model, h->node_id);
  if (node && node->conn != c && conn_holds_node(node->conn, h->spool_id)) {
    conn_refuse_conflict(c, node, h->spool_id);
    return -1;
  }
  node = aggr_model_get(&a->model, h->node_id);
  spool = node ? aggr_spools_get(&a->spools, h->node_id, h->spool_id) : NULL;
  if (!node || !spool) {
    conn_reject(c, MUSTER__REJECT_CODE__REJECT_OVERLOADED, "out of memory");
    return -1;
  }
  /* The agent's spool never gives a seq back, so one that has less than
   * what is held here went back in time (restored from a backup or a VM
   * snapshot): its next changes would reuse seqs held here and be dropped
   * as already held. Refused before anything is bound; the agent moves to a
   * new spool id (agentd/stream.c). */
  if (h->last_seq < spool->held_seq) {
    aggr_metrics_limit(AGGR_LIMIT_STREAM_SPOOL_BEHIND);
    conn_reject(c, MUSTER__REJECT_CODE__REJECT_SPOOL_BEHIND,
                "spool %.32s is behind: the agent has seq %llu, this aggregator holds %llu "
                "(restored from a backup?); start a new spool",
                h->spool_id, (unsigned long long)h->last_seq, (unsigned long long)spool->held_seq);
    return -1;
  }
  if (node->conn && node->conn != c) {
    log_info("stream %s: node %s reconnected; closing its previous stream %s", c->peer, node->id,
             node->conn->peer);
    conn_close_why(node->conn, "replaced by a new stream from %s", c->peer);
    conn_free(node->conn);
  }
  if (spool->conn && spool->conn != c)
    conn_free(spool->conn);

  /* Record who the node is. */
  const struct aggr_hello_report hello = {
      .role = h->role,
      .hostname = h->hostname,
      .boot_id = h->boot_id,
      .boot_time_usec = h->boot_time_ms > 0 ? (uint64_t)h->boot_time_ms * USEC_PER_MSEC : 0,
      .profile_digest = h->profile_digest,
      .startup_cause = h->startup_cause,
      .dcos_version = h->dcos_version,
      .mesos_id = h->mesos_id,
  };
  if (aggr_model_apply_hello(&a->model, node, &hello, c, now) < 0) {
    conn_reject(c, MUSTER__REJECT_CODE__REJECT_OVERLOADED, "out of memory");
    return -1;
  }
  c->node = node;
  c->spool = spool;
  spool->conn = c;
  conn_record_event(c, "connected", now, "");
  /* Anything received but not yet committed will be re-sent by the agent. */
  spool->received_seq = spool->held_seq;
  c->state = CONN_STREAMING;
  /* From now on the timer is the idle one: due stale_timeout after the last
   * frame, not at the hello deadline, which may be later. */
  sd_event_source_set_time(c->timer, c->last_heard_usec + a->cfg.stale_timeout_usec);
  if (node->profile_drift)
    log_warning("stream %s node %s: profile drift: agent digest %.12s, aggregator %.12s", c->peer,
                node->id, node->profile_digest, profile->digest);

  int64_t now_ms = (int64_t)(now / USEC_PER_MSEC);
  struct aggr_write *jn =
      aggr_write_new_node(a->epoch, node->id, node->role, node->hostname, now_ms);
  struct aggr_write *jb = aggr_write_new_boot(
      a->epoch, node->id, node->boot_id, (int64_t)(node->boot_time_usec / USEC_PER_MSEC), now_ms);
  if (jn)
    aggr_writer_submit(a->writer, jn);
  if (jb)
    aggr_writer_submit(a->writer, jb);

  Muster__Envelope env = MUSTER__ENVELOPE__INIT;
  Muster__Welcome w = MUSTER__WELCOME__INIT;
  w.epoch = a->epoch;
  w.held_seq = spool->held_seq;
  w.held_fingerprint = spool->held_fp; /* the agent checks its row there (agentd/stream.c) */
  w.leader_id = a->cfg.id;
  w.heartbeat_ms = (uint32_t)(conn_heartbeat_usec(a) / USEC_PER_MSEC);
  env.body_case = MUSTER__ENVELOPE__BODY_WELCOME;
  env.welcome = &w;
  log_info("stream %s: node %s (role %s, spool %.16s) welcomed; holding seq %llu, agent has %llu",
           c->peer, node->id, node->role, spool->spool_id, (unsigned long long)spool->held_seq,
           (unsigned long long)h->last_seq);
  aggr_request_publish(a, true);
  if (conn_send(c, &env) < 0) {
    c->dead = true;
    return -1;
  }
  return 0;
}

/* What a Change or a Snapshot entry says of a component, for the model. */
static struct aggr_component_report component_report(const char *name, int check, int state,
                                                     int64_t since_ms, const char *output,
                                                     unsigned health, unsigned rise,
                                                     unsigned fall) {
  return (struct aggr_component_report){
      .name = name,
      .check = (enum mst_check_kind)check,
      .state = (enum mst_state)state,
      .since_usec = since_ms > 0 ? (uint64_t)since_ms * USEC_PER_MSEC : 0,
      .output = output ? output : "",
      .health = health,
      .rise = rise,
      .fall = fall,
  };
}

/* Whether the batch's new changes (seq from `from` on: aggr_spool_new_from())
 * of the current boot leave the node within
 * max_components_per_node; refuses the stream when not. Nothing of the
 * batch is taken then: a stream cannot grow a node without bound by
 * inventing names (aggr_node_fits_components()). */
static bool conn_changes_fit(struct aggr_conn *c, const Muster__ChangeBatch *b, uint64_t from) {
  uint64_t max = c->aggr->cfg.max_components_per_node;
  _cleanup_free_ const char **names = calloc(b->n_changes + 1, sizeof(*names));
  int r = -ENOMEM;
  if (names) {
    for (size_t i = 0; i < b->n_changes; i++) {
      const Muster__Change *ch = b->changes[i];
      if (ch->seq >= from && !aggr_node_other_boot(c->node, ch->boot_id))
        names[i] = ch->component;
    }
    r = aggr_node_fits_components(c->node, names, b->n_changes, max);
  }
  if (r > 0)
    return true;
  if (r < 0) {
    conn_reject(c, MUSTER__REJECT_CODE__REJECT_OVERLOADED, "out of memory");
    return false;
  }
  aggr_metrics_limit(AGGR_LIMIT_STREAM_COMPONENTS_PER_NODE);
  conn_reject(c, MUSTER__REJECT_CODE__REJECT_TOO_LARGE,
              "a batch naming new components over max_components_per_node (%llu): the node has "
              "%zu",
              (unsigned long long)max, c->node->n_components);
  return false;
}

static int conn_on_changes(struct aggr_conn *c, const Muster__ChangeBatch *b) {
  struct aggr *a = c->aggr;
  struct aggr_spool *spool = c->spool;
  uint64_t now = mst_now_realtime_usec();
  size_t n_new = 0, bytes = 0;
  uint64_t from = 1;
  bool may_skip = !c->changes_seen;

  if (b->n_changes == 0)
    return 0;
  /* The seqs go up by one (aggr_envelope_check()); the batch must follow
   * what was received, so that the Ack never covers a seq not committed. */
  if (aggr_spool_new_from(spool, b->changes[0]->seq, may_skip, &from) < 0) {
    aggr_metrics_limit(AGGR_LIMIT_STREAM_SEQ_ORDER);
    conn_reject(c, MUSTER__REJECT_CODE__REJECT_PROTOCOL,
                "change seq %llu after seq %llu of spool %.32s (seqs must go up by one, without "
                "gaps)",
                (unsigned long long)b->changes[0]->seq, (unsigned long long)spool->received_seq,
                spool->spool_id);
    return -1;
  }
  c->changes_seen = true;
  if (from > spool->received_seq + 1)
    log_notice("stream %s node %s: seq jumps from %llu to %llu (agent pruned its spool?)", c->peer,
               c->node->id, (unsigned long long)spool->received_seq, (unsigned long long)from);

  if (!conn_changes_fit(c, b, from))
    return -1;

  /* Every change was checked by aggr_envelope_check(): its strings are
   * capped by the frame size. The new ones (from `from` on) go to the writer
   * as one job, in one allocation with their strings. */
  for (size_t i = 0; i < b->n_changes; i++) {
    const Muster__Change *ch = b->changes[i];
    if (ch->seq < from)
      continue;
    n_new++;
    bytes += strlen(ch->component) + strlen(ch->output ? ch->output : "") +
             strlen(ch->boot_id ? ch->boot_id : "") + 3;
  }
  atomic_fetch_add(&aggr_counters.changes_duplicate, b->n_changes - n_new);
  atomic_fetch_add(&aggr_counters.changes_received, n_new);

  if (n_new > 0) {
    char *room;
    struct aggr_write *j =
        aggr_write_new_changes(a->epoch, spool, spool->node_id, spool->spool_id,
                               (int64_t)(now / USEC_PER_MSEC), n_new, bytes, &room);
    if (!j) {
      /* Nothing of the frame is taken: the agent replays it. */
      conn_reject(c, MUSTER__REJECT_CODE__REJECT_OVERLOADED, "out of memory");
      return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < b->n_changes; i++) {
      const Muster__Change *ch = b->changes[i];
      if (ch->seq < from)
        continue;
      spool->received_seq = ch->seq;
      struct aggr_change_row *row = &j->changes.rows[k++];
      row->seq = ch->seq;
      row->at_ms = ch->at_ms;
      row->component = aggr_write_put_string(&room, ch->component, &row->component_len);
      row->output = aggr_write_put_string(&room, ch->output, &row->output_len);
      row->boot_id = aggr_write_put_string(&room, ch->boot_id, &row->boot_id_len);
      row->check_kind = mst_check_kind_name(ch->check);
      row->from_state = mst_state_name(ch->from);
      row->to_state = mst_state_name(ch->to);
      row->health = ch->health;
      row->rise = ch->rise;
      row->fall = ch->fall;

      /* The live model follows at once (a change of an earlier boot is
       * history only); the Ack waits for the commit. Without memory the
       * model misses this change: the next snapshot brings it back. */
      const struct aggr_component_report cr = component_report(
          ch->component, ch->check, ch->to, ch->at_ms, ch->output, ch->health, ch->rise, ch->fall);
      (void)aggr_node_apply_change(c->node, ch->boot_id, &cr);
    }
    aggr_writer_submit(a->writer, j);
    aggr_request_publish(a, true);
  }
  if (n_new < b->n_changes && spool->held_seq > 0 && conn_send_ack(c, spool->held_seq) < 0) {
    c->dead = true;
    return -1;
  }
  return 0;
}

static int conn_on_snapshot(struct aggr_conn *c, const Muster__Snapshot *s) {
  /* Every entry was checked by aggr_envelope_check(). The snapshot is the
   * truth: the model drops the components missing from it. One over the cap
   * is refused before anything is applied (a real agent's profile cannot
   * exceed it, common/profile.c). */
  uint64_t max = c->aggr->cfg.max_components_per_node;
  if (s->n_components > max) {
    aggr_metrics_limit(AGGR_LIMIT_STREAM_COMPONENTS_PER_NODE);
    conn_reject(c, MUSTER__REJECT_CODE__REJECT_TOO_LARGE,
                "snapshot of %zu components: over max_components_per_node (%llu)", s->n_components,
                (unsigned long long)max);
    return -1;
  }
  _cleanup_free_ struct aggr_component_report *v = calloc(s->n_components + 1, sizeof(v[0]));
  if (!v) {
    conn_reject(c, MUSTER__REJECT_CODE__REJECT_OVERLOADED, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < s->n_components; i++) {
    const Muster__ComponentStatus *cs = s->components[i];
    v[i] = component_report(cs->component, cs->check, cs->state, cs->since_ms, cs->output,
                            cs->health, cs->rise, cs->fall);
    /* Only a snapshot describes a component: "" says it is not known. */
    v[i].description = cs->description ? cs->description : "";
    v[i].display_name = cs->display_name ? cs->display_name : "";
  }
  if (aggr_node_apply_snapshot(c->node, v, s->n_components) < 0) {
    conn_reject(c, MUSTER__REJECT_CODE__REJECT_OVERLOADED, "out of memory");
    return -1;
  }
  aggr_request_publish(c->aggr, true);
  return 0;
}

/* The agent's fault, from every heartbeat: a node whose agent cannot record
 * its state is unhealthy, with the fault as its reason. Returns whether it
 * changed (then the verdict is due at once). */
static bool conn_apply_fault(struct aggr_conn *c, const Muster__Heartbeat *hb) {
  uint64_t since = hb->fault_since_ms > 0 ? (uint64_t)hb->fault_since_ms * USEC_PER_MSEC : 0;
  int r = aggr_node_apply_fault(c->node, hb->fault, since, mst_now_realtime_usec());

  if (r < 0)
    log_error("stream %s: out of memory keeping node %s's fault, ignoring", c->peer, c->node->id);
  else if (r > 0 && hb->fault && *hb->fault)
    log_warning("node %s: its agent cannot record its state: %s", c->node->id, hb->fault);
  else if (r > 0)
    log_info("node %s: its agent records its state again", c->node->id);
  return r > 0;
}

/* The node's Mesos id, from every heartbeat (DC/OS's MesosID). Returns
 * whether it changed. */
static bool conn_apply_mesos_id(struct aggr_conn *c, const Muster__Heartbeat *hb) {
  int r = aggr_node_apply_mesos_id(c->node, hb->mesos_id);

  if (r < 0)
    log_error("stream %s: out of memory keeping node %s's Mesos id, ignoring", c->peer,
              c->node->id);
  else if (r > 0)
    log_info("node %s: Mesos id %s", c->node->id, hb->mesos_id);
  return r > 0;
}

static int conn_on_heartbeat(struct aggr_conn *c, const Muster__Heartbeat *hb) {
  Muster__Envelope env = MUSTER__ENVELOPE__INIT;
  Muster__Heartbeat reply = MUSTER__HEARTBEAT__INIT;
  reply.sent_ms = (int64_t)(mst_now_realtime_usec() / USEC_PER_MSEC);
  reply.seq = c->spool->held_seq;
  env.body_case = MUSTER__ENVELOPE__BODY_HEARTBEAT;
  env.heartbeat = &reply;
  return conn_send(c, &env);
}

/* Checks one decoded frame (envelope.c) and dispatches it. Returns 0, or -1
 * when c is gone or closing. */
static int conn_on_frame(struct aggr_conn *c, const Muster__Envelope *env) {
  bool streaming = c->state == CONN_STREAMING;
  struct aggr_reject rej;

  if (streaming && env->body_case != MUSTER__ENVELOPE__BODY_HELLO)
    aggr_node_apply_seen(c->node, mst_now_realtime_usec());
  int r = aggr_envelope_check(env, streaming, &rej);
  if (r < 0) {
    if (r == -ERANGE)
      aggr_metrics_limit(AGGR_LIMIT_STREAM_SEQ_ORDER);
    conn_reject(c, rej.code, "%s", rej.reason);
    return -1;
  }
  switch (env->body_case) {
  case MUSTER__ENVELOPE__BODY_HELLO:
    return conn_on_hello(c, env->hello);
  case MUSTER__ENVELOPE__BODY_CHANGES:
    return conn_on_changes(c, env->changes);
  case MUSTER__ENVELOPE__BODY_SNAPSHOT:
    return conn_on_snapshot(c, env->snapshot);
  case MUSTER__ENVELOPE__BODY_HEARTBEAT: {
    /* Both are applied, whichever changed. */
    bool fault = conn_apply_fault(c, env->heartbeat);
    bool mesos_id = conn_apply_mesos_id(c, env->heartbeat);
    aggr_request_publish(c->aggr, fault || mesos_id);
    if (conn_on_heartbeat(c, env->heartbeat) < 0) {
      c->dead = true;
      return -1;
    }
    return 0;
  }
  default: /* refused by aggr_envelope_check() */
    return -1;
  }
}

static int conn_set_events(struct aggr_conn *c, uint32_t ev) {
  if (ev == c->events)
    return 0;
  struct epoll_event e = {.events = ev, .data.ptr = c};
  if (epoll_ctl(c->aggr->conn_epfd, EPOLL_CTL_MOD, c->fd, &e) < 0)
    return -errno;
  c->events = ev;
  return 0;
}

static int conn_update_events(struct aggr_conn *c) {
  uint32_t ev = EPOLLIN;
  if (c->state == CONN_TLS)
    return 0; /* the handshake sets its own */
  if (mst_buf_pending(&c->wr) > 0) {
    int r = c->tls ? mst_buf_flush_with(&c->wr, mst_tls_write_cb, c->tls)
                   : mst_buf_flush(&c->wr, c->fd);
    if (r == -EAGAIN)
      ev |= EPOLLOUT;
    else if (r < 0)
      return r;
  }
  if (c->state == CONN_CLOSING && mst_buf_pending(&c->wr) == 0)
    /* The Reject is out: stop sending and wait for the peer to hang up (or
     * the linger timer), so the Reject is not lost to a reset. */
    (void)shutdown(c->fd, SHUT_WR);
  return conn_set_events(c, ev);
}

/* Frames beyond one turn's budget wait in the buffer, and the socket may
 * have nothing more to say: the backlog makes sure they are handled, after
 * the other connections had their turn. */
static void conn_backlog(struct aggr_conn *c) {
  struct aggr *a = c->aggr;
  if (c->backlogged)
    return;
  c->backlogged = true;
  c->backlog_next = a->backlog;
  a->backlog = c;
  sd_event_source_set_enabled(a->backlog_source, SD_EVENT_ONESHOT);
}

/* Every frame of every stream is decoded into this one decoder's memory
 * (envelope.h): a frame is handled before the next is decoded, and nothing
 * keeps pointers into it. Loop thread only. */
static struct aggr_decoder frame_decoder = AGGR_DECODER_INIT;

/* Handles the whole frames buffered, up to a budget per turn. Stops when the
 * connection is closing or dead; the caller frees a dead one. */
static void conn_read_frames(struct aggr_conn *c) {
  for (int budget = CONN_MAX_FRAMES_PER_WAKE;; budget--) {
    if (c->dead || c->state == CONN_CLOSING)
      return;
    if (budget == 0) {
      conn_backlog(c);
      return;
    }
    if (mst_frame_reader_pending(&c->rd) == 0)
      return;
    /* max_frames_per_second: a token bucket holding a second's worth. */
    uint64_t now = mst_now_monotonic_usec();
    double rate = (double)c->aggr->cfg.max_frames_per_second;
    c->frame_tokens = MST_MIN(rate, c->frame_tokens + (double)(now - c->tokens_usec) * rate / 1e6);
    c->tokens_usec = now;
    const uint8_t *data;
    size_t len;
    int r = mst_frame_reader_next(&c->rd, &data, &len);
    if (r == 0)
      return;
    if (r == -EMSGSIZE) {
      aggr_metrics_limit(AGGR_LIMIT_STREAM_FRAME_SIZE);
      conn_reject(c, MUSTER__REJECT_CODE__REJECT_TOO_LARGE,
                  "frame larger than the maximum of %llu bytes",
                  (unsigned long long)c->aggr->cfg.max_frame);
      return;
    }
    if (r < 0) {
      conn_reject(c, MUSTER__REJECT_CODE__REJECT_MALFORMED, "malformed frame length");
      return;
    }
    if (c->state == CONN_HELLO && !c->tls && mst_tls_looks_like_hello(data - 1, len + 1)) {
      /* A 22-byte "frame" that is a TLS ClientHello: name the mistake. */
      conn_reject(c, MUSTER__REJECT_CODE__REJECT_PROTOCOL,
                  "the agent speaks TLS, but this aggregator has no [tls] cert and key");
      return;
    }
    if (c->frame_tokens < 1.0) {
      aggr_metrics_limit(AGGR_LIMIT_STREAM_FRAMES_PER_SECOND);
      conn_reject(c, MUSTER__REJECT_CODE__REJECT_OVERLOADED, "more than %llu frames per second",
                  (unsigned long long)c->aggr->cfg.max_frames_per_second);
      return;
    }
    c->frame_tokens -= 1.0;
    Muster__Envelope *env = NULL;
    struct aggr_reject rej;
    if (aggr_decoder_decode(&frame_decoder, data, len, &env, &rej) < 0) {
      conn_reject(c, rej.code, "%s", rej.reason);
      return;
    }
    c->last_heard_usec = mst_now_monotonic_usec();
    if (conn_on_frame(c, env) < 0)
      return;
  }
}

/* Reads what there is and handles the whole frames. Through TLS, GnuTLS
 * may hold decrypted bytes that the socket's readiness does not show: the
 * backlog comes back for them. */
static void conn_fill_and_read(struct aggr_conn *c) {
  ssize_t n = c->tls ? mst_frame_reader_fill_with(&c->rd, mst_tls_read_cb, c->tls)
                     : mst_frame_reader_fill(&c->rd, c->fd);
  bool gone = n == 0 || (n < 0 && n != -EAGAIN && n != -ENOBUFS);
  if (c->state == CONN_CLOSING) {
    /* Discard input; the peer hanging up ends the linger. */
    c->rd.start = c->rd.len = 0;
    c->dead = gone;
    return;
  }
  /* Frames complete in the buffer count even when the peer is gone. */
  conn_read_frames(c);
  if (gone && c->state != CONN_CLOSING) {
    if (c->node) {
      log_info("stream %s: node %s disconnected%s%s", c->peer, c->node->id, n < 0 ? ": " : "",
               n == -EPROTO ? mst_tls_error(c->tls)
               : n < 0      ? strerror((int)-n)
                            : "");
      if (n < 0)
        conn_close_why(c, "%s", n == -EPROTO ? mst_tls_error(c->tls) : strerror((int)-n));
      else
        conn_close_why(c, "the agent closed the stream");
    } else if (n == -EPROTO)
      log_info("stream %s: TLS error: %s; closing", c->peer, mst_tls_error(c->tls));
    c->dead = true;
    return;
  }
  if (c->tls && !c->dead && c->state != CONN_CLOSING && mst_tls_pending(c->tls) > 0)
    conn_backlog(c);
}

/* Before the Hello when TLS is on: the first bytes must open a TLS
 * handshake, which then runs step by step as the socket allows. */
static void conn_tls_step(struct aggr_conn *c) {
  struct aggr *a = c->aggr;
  char err[512];
  int r;

  if (!c->tls) {
    uint8_t first[2];
    ssize_t n = recv(c->fd, first, sizeof(first), MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
      return;
    if (n <= 0) {
      c->dead = true;
      return;
    }
    if (n == 1 && first[0] == 0x16)
      return; /* the rest of the record header is on its way */
    if (!mst_tls_looks_like_hello(first, (size_t)n)) {
      /* A plain agent: tell it in its own terms, before it sends a token
       * anyone on the path could read. */
      c->state = CONN_HELLO;
      conn_reject(c, MUSTER__REJECT_CODE__REJECT_TLS_REQUIRED,
                  "this aggregator requires TLS on the agent stream (set [tls] ca on the agent)");
      return;
    }
    r = mst_tls_new(a->tls_creds,
                    a->cfg.tls_require_client_cert ? MST_TLS_SERVER_REQUIRE_CLIENT_CERT
                                                   : MST_TLS_SERVER,
                    c->fd, NULL, &c->tls, err, sizeof(err));
    if (r < 0) {
      log_warning("stream %s: %s; closing", c->peer, err);
      c->dead = true;
      return;
    }
  }
  r = mst_tls_handshake(c->tls, err, sizeof(err));
  if (r == 0) {
    if (conn_set_events(c, mst_tls_events(c->tls)) < 0)
      c->dead = true;
    return;
  }
  if (r < 0) {
    if (r == -EACCES)
      log_warning("stream %s: TLS handshake refused: %s (%u in a row from this address); closing",
                  c->peer, err, conn_auth_failed(c));
    else
      log_warning("stream %s: TLS handshake failed: %s; closing", c->peer, err);
    atomic_fetch_add(&aggr_counters.tls_failures, 1);
    c->dead = true;
    return;
  }
  if (MST_LOG_DEBUG <= mst_log_max_level) {
    char desc[256];
    mst_tls_describe(c->tls, desc, sizeof(desc));
    log_debug("stream %s: TLS established: %s", c->peer, desc);
  }
  c->state = CONN_HELLO;
  if (conn_update_events(c) < 0) {
    c->dead = true;
    return;
  }
  /* The Hello may have come with the handshake's last flight. */
  conn_fill_and_read(c);
}

static void conn_io(struct aggr_conn *c, uint32_t revents) {
  if (c->state == CONN_TLS) {
    conn_tls_step(c);
  } else {
    if ((revents & EPOLLOUT) && conn_update_events(c) < 0)
      c->dead = true;
    if (!c->dead && (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
      conn_fill_and_read(c);
  }
  if (c->dead)
    conn_free(c);
}

/* The connections are watched by an epoll set of their own, itself one
 * source of the loop. sd-event dispatches one source per iteration and
 * polls its epoll set again before each, which costs O(ready connections)
 * per dispatch and O(n^2) per round once thousands of agents send at once;
 * here one dispatch handles a whole batch of ready connections. */
/* Ends a batch: the streams closed during it are released now that nothing
 * of the batch can still point at them. */
static void dispatch_end(struct aggr *a) {
  a->dispatching = false;
  while (a->graveyard) {
    struct aggr_conn *c = a->graveyard;
    a->graveyard = c->next;
    conn_release(c);
  }
}

static int conns_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
  struct aggr *a = userdata;
  struct epoll_event ev[512];
  int n = epoll_wait(fd, ev, (int)ELEMENTSOF(ev), 0);

  if (n < 0 && errno != EINTR)
    log_warning("stream: epoll_wait failed: %m, ignoring");
  a->dispatching = true;
  for (int i = 0; i < n; i++) {
    struct aggr_conn *c = ev[i].data.ptr;
    if (!c->freed)
      conn_io(c, ev[i].events);
  }
  dispatch_end(a);
  return 0;
}

static int backlog_run(sd_event_source *s, void *userdata) {
  struct aggr *a = userdata;
  struct aggr_conn *list = a->backlog;

  a->backlog = NULL;
  a->dispatching = true;
  while (list) {
    struct aggr_conn *c = list;
    list = c->backlog_next;
    c->backlogged = false;
    if (c->freed) {
      conn_release(c);
      continue;
    }
    if (c->tls && mst_frame_reader_pending(&c->rd) == 0 && mst_tls_pending(c->tls) > 0)
      conn_fill_and_read(c);
    else
      conn_read_frames(c);
    if (c->dead)
      conn_free(c);
  }
  dispatch_end(a);
  return 0;
}

static int conn_timer(sd_event_source *s, uint64_t usec, void *userdata) {
  struct aggr_conn *c = userdata;
  struct aggr *a = c->aggr;
  uint64_t now = mst_now_monotonic_usec();

  if (c->state == CONN_TLS) {
    aggr_metrics_limit(AGGR_LIMIT_STREAM_HELLO_TIMEOUT);
    log_warning("stream %s: no TLS handshake within %llu ms; closing", c->peer,
                (unsigned long long)(a->cfg.hello_timeout_usec / USEC_PER_MSEC));
    conn_free(c);
    return 0;
  }
  if (c->state == CONN_HELLO) {
    aggr_metrics_limit(AGGR_LIMIT_STREAM_HELLO_TIMEOUT);
    conn_reject(c, MUSTER__REJECT_CODE__REJECT_PROTOCOL, "no Hello within %llu ms",
                (unsigned long long)(a->cfg.hello_timeout_usec / USEC_PER_MSEC));
    if (c->dead)
      conn_free(c);
    return 0;
  }
  if (now - c->last_heard_usec >= a->cfg.stale_timeout_usec) {
    aggr_metrics_limit(AGGR_LIMIT_STREAM_IDLE_TIMEOUT);
    log_warning("stream %s: node %s silent for %llu ms; closing", c->peer,
                c->node ? c->node->id : "?",
                (unsigned long long)((now - c->last_heard_usec) / USEC_PER_MSEC));
    conn_close_why(c, "silent for %llu ms",
                   (unsigned long long)((now - c->last_heard_usec) / USEC_PER_MSEC));
    c->closed_silent = true;
    conn_free(c);
    return 0;
  }
  sd_event_source_set_time(s, c->last_heard_usec + a->cfg.stale_timeout_usec);
  sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
  return 0;
}

/* Whether an occurrence is logged now; if so, *held is how many were held
 * back since the last one logged. A crowd of connections refused at accept
 * must not become a crowd of log lines. */
static bool log_interval_due(struct aggr_log_interval *li, uint64_t *held) {
  uint64_t now = mst_now_monotonic_usec();
  if (now < li->next_usec) {
    li->held++;
    return false;
  }
  *held = li->held;
  li->held = 0;
  li->next_usec = now + ACCEPT_LOG_INTERVAL_USEC;
  return true;
}

static int listen_unpause(sd_event_source *s, uint64_t usec, void *userdata) {
  struct aggr *a = userdata;
  sd_event_source_set_enabled(a->listen_source, SD_EVENT_ON);
  return 0;
}

/* accept() failed for want of descriptors or memory (EMFILE, ENFILE,
 * ENOBUFS, ENOMEM) or for a reason that will not pass by itself. The pending
 * connection stays in the backlog, so the listener would be ready again at
 * once and the loop would spin: it is switched off for a pause that doubles,
 * 100 ms up to 1 s, while accepts keep failing. Agents that are connected go
 * on being served meanwhile. */
static void listen_pause(struct aggr *a, int error) {
  uint64_t held;
  a->listen_backoff_usec = a->listen_backoff_usec == 0
                               ? ACCEPT_BACKOFF_FIRST_USEC
                               : MST_MIN(2 * a->listen_backoff_usec, ACCEPT_BACKOFF_MAX_USEC);
  if (log_interval_due(&a->log_accept_failed, &held))
    log_warning("stream: cannot accept connections: %s (%llu more failures since the last "
                "message, %zu streams open); pausing the listener for %llu ms",
                strerror(error), (unsigned long long)held, a->n_conns,
                (unsigned long long)(a->listen_backoff_usec / USEC_PER_MSEC));
  sd_event_source_set_enabled(a->listen_source, SD_EVENT_OFF);
  uint64_t when = mst_now_monotonic_usec() + a->listen_backoff_usec;
  if (!a->listen_resume) {
    if (sd_event_add_time(a->event, &a->listen_resume, CLOCK_MONOTONIC, when, 0, listen_unpause,
                          a) < 0)
      sd_event_source_set_enabled(a->listen_source, SD_EVENT_ON); /* spinning beats deafness */
    return;
  }
  sd_event_source_set_time(a->listen_resume, when);
  sd_event_source_set_enabled(a->listen_resume, SD_EVENT_ONESHOT);
}

static int listen_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
  struct aggr *a = userdata;
  uint64_t held;

  for (int i = 0; i < 64; i++) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0) {
      if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
        listen_pause(a, errno);
      return 0;
    }
    a->listen_backoff_usec = 0;
    if (a->n_conns >= a->cfg.max_connections) {
      aggr_metrics_limit(AGGR_LIMIT_STREAM_CONNECTIONS);
      if (log_interval_due(&a->log_over_cap, &held))
        log_warning("stream: connection limit %llu reached (max_connections); refusing a "
                    "connection (%llu more refused since the last message)",
                    (unsigned long long)a->cfg.max_connections, (unsigned long long)held);
      close(cfd);
      continue;
    }
    struct aggr_addr_count *addr = addr_take(a, &ss);
    if (!addr) {
      aggr_metrics_limit(AGGR_LIMIT_STREAM_CONNECTIONS_PER_ADDRESS);
      if (log_interval_due(&a->log_over_address, &held))
        log_warning("stream: %llu streams from one address already (max_connections_per_address); "
                    "refusing a connection (%llu more refused since the last message)",
                    (unsigned long long)a->cfg.max_connections_per_address,
                    (unsigned long long)held);
      close(cfd);
      continue;
    }
    struct aggr_conn *c = calloc(1, sizeof(*c));
    if (!c) {
      addr_give_back(a, addr);
      close(cfd);
      continue;
    }
    int one = 1;
    (void)setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->aggr = a;
    c->fd = cfd;
    c->state = a->tls_creds ? CONN_TLS : CONN_HELLO;
    c->addr = addr;
    c->frame_tokens = (double)a->cfg.max_frames_per_second;
    c->tokens_usec = mst_now_monotonic_usec();
    mst_frame_reader_init(&c->rd, a->cfg.max_frame);
    mst_buf_init(&c->wr, CONN_OUTBUF_MAX);
    c->last_heard_usec = mst_now_monotonic_usec();
    /* A dual-stack listener's IPv4 peers are IPv4-mapped: shown as IPv4. */
    if (mst_addr_format((struct sockaddr *)&ss, c->peer, sizeof(c->peer)) < 0)
      snprintf(c->peer, sizeof(c->peer), "fd %d", cfd);
    c->next = a->conns;
    if (a->conns)
      a->conns->prev = c;
    a->conns = c;
    a->n_conns++;
    aggr_metrics_agents_connected(a->n_conns);
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
    c->events = EPOLLIN;
    /* 10 ms, not sd-event's default 250: a silent stream closes when the
     * node turns unreachable, and its history says it went silent. */
    if (epoll_ctl(a->conn_epfd, EPOLL_CTL_ADD, cfd, &e) < 0 ||
        sd_event_add_time(a->event, &c->timer, CLOCK_MONOTONIC,
                          c->last_heard_usec + a->cfg.hello_timeout_usec, 10 * USEC_PER_MSEC,
                          conn_timer, c) < 0) {
      conn_free(c);
      continue;
    }
    log_debug("stream %s: connected", c->peer);
  }
  return 0;
}

int aggr_stream_listen(struct aggr *a) {
  struct mst_addr addr;
  char err[256];
  int r;
  _cleanup_close_ int fd = -1;

  r = mst_addr_parse(a->cfg.listen_stream, MST_ADDR_LISTEN, &addr, err, sizeof(err));
  if (r < 0) {
    log_error("listen_stream %s", err);
    return r;
  }
  fd = mst_addr_listen(&addr, 1024);
  if (fd < 0) {
    log_error("cannot listen for agents on %s: %s", a->cfg.listen_stream, strerror(-fd));
    return fd;
  }
  a->conn_epfd = epoll_create1(EPOLL_CLOEXEC);
  if (a->conn_epfd < 0)
    return -errno;
  r = sd_event_add_io(a->event, &a->conns_source, a->conn_epfd, EPOLLIN, conns_io, a);
  if (r < 0)
    return r;
  r = sd_event_add_defer(a->event, &a->backlog_source, backlog_run, a);
  if (r < 0)
    return r;
  sd_event_source_set_enabled(a->backlog_source, SD_EVENT_OFF);
  r = sd_event_add_io(a->event, &a->listen_source, fd, EPOLLIN, listen_io, a);
  if (r < 0)
    return r;
  a->listen_fd = TAKE_FD(fd);
  log_info("listening for agents on %s", a->cfg.listen_stream);
  return 0;
}

void aggr_stream_close_conns(struct aggr *a) {
  while (a->conns) {
    conn_close_why(a->conns, "this aggregator stopped leading");
    conn_free(a->conns);
  }
}

void aggr_stream_close_all(struct aggr *a) {
  for (struct aggr_conn *c = a->conns; c; c = c->next)
    conn_close_why(c, "the aggregator is shutting down");
  aggr_stream_close_conns(a);
  sd_event_source_disable_unref(a->listen_source);
  a->listen_source = NULL;
  a->listen_resume = sd_event_source_disable_unref(a->listen_resume);
  if (a->listen_fd >= 0)
    close(a->listen_fd);
  a->listen_fd = -1;
  sd_event_source_disable_unref(a->conns_source);
  a->conns_source = NULL;
  sd_event_source_disable_unref(a->backlog_source);
  a->backlog_source = NULL;
  while (a->backlog) { /* closed above: every one is freed */
    struct aggr_conn *c = a->backlog;
    a->backlog = c->backlog_next;
    conn_release(c);
  }
  if (a->conn_epfd >= 0)
    close(a->conn_epfd);
  a->conn_epfd = -1;
  for (size_t i = 0; a->addr_counts && i < ADDR_BUCKETS; i++)
    while (a->addr_counts[i]) { /* only penalties are left: every stream is closed */
      struct aggr_addr_count *e = a->addr_counts[i];
      a->addr_counts[i] = e->next;
      free(e);
    }
  free(a->addr_counts);
  a->addr_counts = NULL;
}
