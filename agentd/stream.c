/* The stream to the aggregator: one non-blocking TCP connection on the
 * agent's loop, speaking proto/muster.proto in varint-delimited Envelopes.
 *
 *   WAITING ──retry timer──▶ CONNECTING ──connected──▶ HELLO (Hello sent)
 *      ▲                            │ [tls] ca set         ▲   │ Welcome
 *      │                            └──▶ TLS ──handshake───┘   ▼
 *      │ EOF, error, silence, Reject, Redirect               REPLAY ──▶ LIVE
 *      └─────────────────────────────────────────────────────────┘
 *
 * With [tls] ca set, the stream is TLS (GnuTLS, non-blocking on the loop):
 * the aggregator's certificate must be signed by that CA and carry the
 * name (or IP address) the agent connects to, or [tls] server_name; with
 * [tls] cert and key the agent presents its own certificate. The Hello,
 * and the token in it, only go out once the handshake is done.
 *
 * Targets are the configured aggregators in turn; a Redirect names the one
 * to try next, after which the list goes on where it was. Every failure
 * and every refusal (a connect error, a TLS error, the connection closed or
 * silent, a Reject of any code) goes through one back-off: the n-th attempt
 * in a row waits a uniform draw between half and all of 100ms·2^n, capped
 * at 30s, so that agents spread out and the gaps grow. A Reject raises that
 * bound to at least 30s (60s for an unknown role), except "not leader": an
 * election is going on, and the agent asks again within 200ms (20 times,
 * then with the back-off) to find the new leader soon after it.
 *
 * A Welcome alone does not reset the count: an aggregator that welcomes
 * the agent and then drops it (its disk is full, every commit fails) would
 * otherwise be asked again, with the whole backlog, every 50ms. Only a
 * stable connection does: one that got an Ack, or that lasted
 * STREAM_STABLE_USEC.
 *
 * After a Welcome the spool is the send queue: everything with seq above
 * the aggregator's held_seq goes out in ChangeBatch frames read from SQLite
 * (at most STREAM_BATCH_MAX changes and max_frame/2 bytes each), then one
 * Snapshot of every component, then each new change as it is committed
 * (agent_stream_changes_pending() arms a deferred "pump"). The pump stops
 * filling the output buffer above STREAM_LOW_WATER and goes on when the
 * socket has drained, so a long replay never holds much memory; the buffer's
 * hard cap (STREAM_OUT_MAX) cuts off an aggregator that stops reading, and
 * the replay after reconnecting re-sends whatever was lost.
 *
 * A component whose output changes while its state stays the same makes no
 * change (nothing is spooled), but for systemd components the new reason
 * matters to operators (a unit that was not found and now fails, a restart
 * count that grows): agent_stream_outputs_changed() asks for a fresh
 * Snapshot, which the aggregator applies like the one after a replay. It is
 * sent while LIVE, only once every change committed so far has been queued
 * (so it is never older than a change that follows it), and at most once per
 * STREAM_REFRESH_MIN_USEC.
 *
 * Heartbeats carry the agent's fault (fault.c: why it cannot record its
 * state). A fault, or a new cause of it, goes out in a heartbeat at once,
 * and right after a Welcome; its end only from the pump, once every change
 * committed so far is queued (the changes that could not be recorded
 * before), so the aggregator never holds the old states without the fault.
 * They also carry the node's Mesos id (dcos_facts.c), which can change
 * while the stream is up; a new one goes out in a heartbeat at once. The
 * Hello carries it and the DC/OS version.
 *
 * Acks are cumulative and go to the spool, which persists them in batches.
 * Any frame resets the silence timer; three heartbeat intervals without one
 * drop the connection. */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "agent.h"
#include "boot.h"
#include "component.h"
#include "mst/addr.h"
#include "mst/config.h"
#include "mst/duration.h"
#include "mst/frame.h"
#include "mst/hash.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/time.h"
#include "mst/tls.h"
#include "netaddr.h"
#include "mst/utf8.h"
#include "spool.h"
#include "stream.h"
#include "util.h"

#define STREAM_PROTOCOL_VERSION          1
#define STREAM_CONNECT_TIMEOUT_USEC      (3 * USEC_PER_SEC)
#define STREAM_HANDSHAKE_MIN_USEC        (5 * USEC_PER_SEC)
#define STREAM_BACKOFF_MIN_USEC          (100 * USEC_PER_MSEC)
#define STREAM_BACKOFF_MAX_USEC          (30 * USEC_PER_SEC)
#define STREAM_STABLE_USEC               (10 * USEC_PER_SEC) /* then the back-off starts over */
#define STREAM_REJECT_RETRY_USEC         (30 * USEC_PER_SEC)
#define STREAM_UNKNOWN_ROLE_RETRY_USEC   (60 * USEC_PER_SEC)
#define STREAM_NOT_LEADER_RETRY_MAX_USEC (200 * USEC_PER_MSEC)
#define STREAM_NOT_LEADER_FAST_MAX       20 /* fast retries after "not leader", then backoff */
/* After a Redirect or "not leader", failures are retried within 200ms for
 * this long instead of backing off: the named leader may be coming up. */
#define STREAM_ELECTION_WINDOW_USEC (30 * USEC_PER_SEC)
#define STREAM_REDIRECTS_MAX        3 /* in a row without a Welcome, before backing off */
#define STREAM_OUT_MAX              (8 * 1024 * 1024)
#define STREAM_LOW_WATER            (1024 * 1024)
#define STREAM_BATCH_MAX            256
#define STREAM_READS_PER_EVENT      16
#define STREAM_READ_CHUNK           (4 * 1024)
#define STREAM_HEARTBEAT_MIN_USEC   (100 * USEC_PER_MSEC)
#define STREAM_REFRESH_MIN_USEC     (1 * USEC_PER_SEC) /* between snapshots for outputs */

enum stream_phase {
  STREAM_WAITING,    /* for the retry timer */
  STREAM_CONNECTING, /* non-blocking connect in flight */
  STREAM_TLS,        /* TLS handshake in flight */
  STREAM_HELLO,      /* Hello sent; waiting for Welcome, Redirect or Reject */
  STREAM_REPLAY,     /* sending the spool after held_seq, then the snapshot */
  STREAM_LIVE,       /* sending changes as they are committed */
};

struct agent_stream {
  struct agent *agent;
  char **targets;
  size_t n_targets;
  size_t next_target;
  char *redirect; /* one-shot next target, from a Redirect */
  char *peer;     /* the target of the current attempt */

  enum stream_phase phase;
  int fd;
  struct mst_tls *tls; /* NULL for plain TCP */
  sd_event_source *io;
  sd_event_source *deadline; /* connect timeout, handshake timeout, silence */
  sd_event_source *heartbeat;
  sd_event_source *retry;
  sd_event_source *pump;
  sd_event_source *refresh; /* a snapshot for changed outputs */
  struct mst_frame_reader reader;
  struct mst_buf out;

  unsigned attempt;               /* failed attempts since the last stable connection */
  uint64_t welcomed_usec;         /* monotonic: this connection's Welcome, or 0 */
  bool acked;                     /* this connection got an Ack */
  unsigned redirects;             /* Redirects since the last Welcome */
  uint64_t cluster_answered_usec; /* monotonic: last Redirect or "not leader" */
  unsigned not_leader;            /* "not leader" Rejects since the last Welcome */
  uint64_t sent_seq;              /* highest seq queued on this connection */
  uint64_t replay_from;
  uint64_t heartbeat_usec;
  uint64_t silence_usec;
  bool refresh_wanted;    /* outputs changed since the last snapshot */
  uint64_t snapshot_usec; /* monotonic time of the last snapshot queued */
  /* The fault the heartbeats carry: the agent's (a->fault) once announced.
   * It outlives a connection, so that a fault's end is announced on the
   * next one too only after the replay. */
  char fault_sent[MST_AGENT_FAULT_MAX + 1];
  uint64_t fault_sent_since_usec;
  /* The first attempt waits for what the Hello must say (the startup, which
   * the first read of the systemd units decides): agent_stream_hold_first()
   * and agent_stream_release_first(); at most until the retry timer. */
  bool held;
  bool tried; /* an attempt was made */
};

static void stream_drop(struct agent_stream *s, int64_t delay_usec, const char *fmt, ...)
    _printf_(3, 4);
static int stream_queue(struct agent_stream *s, const Muster__Envelope *env);

static const char *phase_name(enum stream_phase p) {
  switch (p) {
  case STREAM_WAITING:
    return "waiting";
  case STREAM_CONNECTING:
    return "connecting";
  case STREAM_TLS:
    return "tls";
  case STREAM_HELLO:
    return "hello";
  case STREAM_REPLAY:
    return "replay";
  case STREAM_LIVE:
    return "live";
  }
  return "?";
}

/* The next wait of the back-off, at least floor_usec, and counts the
 * attempt. */
static uint64_t stream_backoff(struct agent_stream *s, uint64_t floor_usec) {
  unsigned shift = MST_MIN(s->attempt, 20u);
  uint64_t bound = MST_MIN(STREAM_BACKOFF_MIN_USEC << shift, STREAM_BACKOFF_MAX_USEC);

  bound = MST_MAX(bound, floor_usec);
  s->attempt++;
  /* Half of it fixed, so that the waits grow; the other half drawn, so that
   * agents refused together spread out. */
  return bound / 2 + agent_random_below(s->agent, bound / 2 + 1);
}

/* A stream_drop() delay: the back-off, but at least usec. */
#define STREAM_BACKOFF_AT_LEAST(usec) (-(int64_t)(usec))

static void set_deadline(struct agent_stream *s, uint64_t usec) {
  (void)sd_event_source_set_time_relative(s->deadline, usec);
  (void)sd_event_source_set_enabled(s->deadline, SD_EVENT_ONESHOT);
}

static void stream_update_io(struct agent_stream *s) {
  uint32_t events;

  if (!s->io)
    return;
  if (s->phase == STREAM_CONNECTING)
    events = EPOLLOUT;
  else if (s->phase == STREAM_TLS)
    events = mst_tls_events(s->tls);
  else
    events = EPOLLIN | (mst_buf_pending(&s->out) > 0 ? EPOLLOUT : 0);
  (void)sd_event_source_set_io_events(s->io, events);
}

static void stream_close(struct agent_stream *s) {
  s->io = sd_event_source_disable_unref(s->io);
  mst_tls_free(s->tls);
  s->tls = NULL;
  if (s->fd >= 0) {
    close(s->fd);
    s->fd = -1;
  }
  if (s->deadline)
    (void)sd_event_source_set_enabled(s->deadline, SD_EVENT_OFF);
  if (s->heartbeat)
    (void)sd_event_source_set_enabled(s->heartbeat, SD_EVENT_OFF);
  if (s->pump)
    (void)sd_event_source_set_enabled(s->pump, SD_EVENT_OFF);
  if (s->refresh)
    (void)sd_event_source_set_enabled(s->refresh, SD_EVENT_OFF);
  mst_frame_reader_done(&s->reader);
  mst_buf_done(&s->out);
  s->phase = STREAM_WAITING;
}

static void stream_schedule_retry(struct agent_stream *s, uint64_t delay) {
  (void)sd_event_source_set_time_relative(s->retry, delay);
  (void)sd_event_source_set_enabled(s->retry, SD_EVENT_ONESHOT);
}

/* Closes the connection (if any) and schedules the next attempt: after
 * delay_usec when it is 0 or more, else after the back-off, of at least
 * -delay_usec (-1: the plain back-off; STREAM_BACKOFF_AT_LEAST()). */
static void stream_drop(struct agent_stream *s, int64_t delay_usec, const char *fmt, ...) {
  char reason[512], when[32];
  uint64_t delay;
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(reason, sizeof(reason), fmt, ap);
  va_end(ap);

  /* A connection that proved stable starts the back-off over. */
  if (s->welcomed_usec &&
      (s->acked || mst_now_monotonic_usec() - s->welcomed_usec >= STREAM_STABLE_USEC))
    s->attempt = 0;
  s->welcomed_usec = 0;
  s->acked = false;
  stream_close(s);
  if (delay_usec == -1 && s->cluster_answered_usec &&
      mst_now_monotonic_usec() - s->cluster_answered_usec < STREAM_ELECTION_WINDOW_USEC) {
    /* A failure (not a refusal) while some aggregator answered lately with
     * a Redirect or "not leader": an election is under way or just done,
     * and the leader it names may not be up yet. Look again soon rather
     * than backing off for seconds. */
    delay = agent_random_below(s->agent, STREAM_NOT_LEADER_RETRY_MAX_USEC + 1);
  } else if (delay_usec < 0) {
    delay = stream_backoff(s, (uint64_t)-delay_usec);
  } else {
    delay = (uint64_t)delay_usec;
  }
  /* Milliseconds are precise enough to read. */
  mst_duration_format(delay / USEC_PER_MSEC * USEC_PER_MSEC, when, sizeof(when));
  log_info("stream: %s; next attempt in %s", reason, delay < USEC_PER_MSEC ? "0ms" : when);
  (void)sd_notifyf(false, "STATUS=Not connected: %s", reason);
  stream_schedule_retry(s, delay);
}

/* --- sending ------------------------------------------------------------------------ */

static int stream_flush(struct agent_stream *s) {
  int r = s->tls ? mst_buf_flush_with(&s->out, mst_tls_write_cb, s->tls)
                 : mst_buf_flush(&s->out, s->fd);

  if (r == -EAGAIN)
    r = 0;
  if (r < 0) {
    stream_drop(s, -1, "writing to %s failed: %s", s->peer,
                r == -EPROTO ? mst_tls_error(s->tls) : strerror(-r));
    return r;
  }
  stream_update_io(s);
  return 0;
}

/* Appends one frame. On failure the connection is dropped. */
static int stream_queue(struct agent_stream *s, const Muster__Envelope *env) {
  int r = mst_frame_write_envelope(&s->out, env, s->agent->cfg.max_frame);

  if (r == -ENOBUFS)
    stream_drop(s, -1, "more than %d MiB unsent to %s (it does not read), dropping the connection",
                STREAM_OUT_MAX / (1024 * 1024), s->peer);
  else if (r == -EMSGSIZE)
    stream_drop(s, STREAM_BACKOFF_AT_LEAST(STREAM_REJECT_RETRY_USEC),
                "a frame for %s is over max_frame (%" PRIu64 " bytes)", s->peer,
                s->agent->cfg.max_frame);
  else if (r < 0)
    stream_drop(s, -1, "queueing a frame for %s: %s", s->peer, strerror(-r));
  return r;
}

static int stream_send_hello(struct agent_stream *s) {
  struct agent *a = s->agent;
  Muster__Hello hello = MUSTER__HELLO__INIT;
  Muster__Envelope env = MUSTER__ENVELOPE__INIT;
  char **addresses = NULL;
  int n, r;

  n = agent_host_addresses(&addresses);
  hello.node_id = a->cfg.node_id;
  hello.role = a->profile->role;
  hello.profile_digest = (char *)a->profile->digest;
  hello.hostname = a->hostname;
  hello.n_addresses = n > 0 ? (size_t)n : 0;
  hello.addresses = n > 0 ? addresses : NULL;
  hello.boot_id = a->boot_id;
  hello.boot_time_ms = (int64_t)(a->boot_start_usec / USEC_PER_MSEC);
  hello.startup_cause = a->startup_cause;
  hello.agent_version = (char *)MUSTER_VERSION;
  hello.token = a->token;
  hello.spool_id = (char *)agent_spool_id(a->spool);
  hello.last_seq = agent_spool_last_seq(a->spool);
  hello.protocol_version = STREAM_PROTOCOL_VERSION;
  hello.dcos_version = a->dcos_version ? a->dcos_version : "";
  hello.mesos_id = a->mesos_id;
  env.body_case = MUSTER__ENVELOPE__BODY_HELLO;
  env.hello = &hello;

  r = stream_queue(s, &env);
  mst_strv_free(addresses);
  if (r < 0)
    return r;
  return stream_flush(s);
}

static int stream_queue_heartbeat(struct agent_stream *s) {
  Muster__Heartbeat hb = MUSTER__HEARTBEAT__INIT;
  Muster__Envelope env = MUSTER__ENVELOPE__INIT;

  hb.sent_ms = (int64_t)(mst_now_realtime_usec() / USEC_PER_MSEC);
  hb.seq = agent_spool_last_seq(s->agent->spool);
  hb.fault = s->fault_sent;
  hb.fault_since_ms = (int64_t)(s->fault_sent_since_usec / USEC_PER_MSEC);
  hb.mesos_id = s->agent->mesos_id;
  env.body_case = MUSTER__ENVELOPE__BODY_HEARTBEAT;
  env.heartbeat = &hb;
  return stream_queue(s, &env);
}

static void stream_send_heartbeat(struct agent_stream *s) {
  if (stream_queue_heartbeat(s) >= 0)
    (void)stream_flush(s);
}

/* The agent's fault as the heartbeats will carry it from now on. */
static void stream_fault_take(struct agent_stream *s) {
  snprintf(s->fault_sent, sizeof(s->fault_sent), "%s", s->agent->fault);
  s->fault_sent_since_usec = s->agent->fault_since_usec;
}

/* A fault goes out at once: whatever is queued before it, the aggregator
 * then knows not to trust the states it has. */
static void stream_announce_fault(struct agent_stream *s) {
  stream_fault_take(s);
  if (s->phase == STREAM_REPLAY || s->phase == STREAM_LIVE)
    stream_send_heartbeat(s);
}

struct batch {
  Muster__Change items[STREAM_BATCH_MAX];
  Muster__Change *ptrs[STREAM_BATCH_MAX];
  size_t n;
  size_t bytes;
  size_t budget;
  uint64_t last_seq;
};

static void change_strings_free(Muster__Change *m) {
  free(m->component);
  free(m->output);
  free(m->boot_id);
}

static int batch_add(void *userdata, const struct agent_change *ch) {
  struct batch *b = userdata;
  Muster__Change *m = &b->items[b->n];
  size_t size;

  if (b->n >= STREAM_BATCH_MAX)
    return 1;
  *m = (Muster__Change)MUSTER__CHANGE__INIT;
  m->seq = ch->seq;
  m->check = (Muster__CheckKind)ch->check;
  m->from = (Muster__State)ch->from;
  m->to = (Muster__State)ch->to;
  m->at_ms = ch->at_ms;
  m->health = ch->health;
  m->rise = ch->rise;
  m->fall = ch->fall;
  m->component = strdup(ch->component);
  m->output = strdup(ch->output);
  m->boot_id = strdup(ch->boot_id);
  if (!m->component || !m->output || !m->boot_id) {
    change_strings_free(m);
    return -ENOMEM;
  }

  /* The field's tag and length prefix come on top of the message. */
  size = muster__change__get_packed_size(m) + 1 + MST_VARINT_MAX_BYTES;
  if (b->n > 0 && b->bytes + size > b->budget) {
    change_strings_free(m);
    return 1; /* next batch */
  }
  if (size > b->budget) {
    size_t fixed = size - strlen(m->output);
    mst_utf8_truncate(m->output, m->output, b->budget > fixed ? b->budget - fixed : 0,
                      AGENT_TRUNCATED_MARK);
    log_warning("stream: change %" PRIu64 " of %s is too big for one frame, sending its output "
                "cut",
                ch->seq, ch->component);
    size = muster__change__get_packed_size(m) + 1 + MST_VARINT_MAX_BYTES;
  }
  b->ptrs[b->n++] = m;
  b->bytes += size;
  b->last_seq = ch->seq;
  return 0;
}

/* Queues one ChangeBatch of spooled changes after sent_seq. Returns the
 * number of changes queued (0: none left) or -errno (connection dropped). */
static int stream_queue_batch(struct agent_stream *s) {
  struct agent *a = s->agent;
  struct batch *b;
  int r;

  b = malloc(sizeof(*b));
  if (!b) {
    stream_drop(s, -1, "out of memory building a batch");
    return -ENOMEM;
  }
  b->n = 0;
  b->bytes = 0;
  b->budget = a->cfg.max_frame / 2;
  b->last_seq = s->sent_seq;

  r = agent_spool_read_changes(a->spool, s->sent_seq, STREAM_BATCH_MAX, batch_add, b);
  if (r < 0) {
    for (size_t i = 0; i < b->n; i++)
      change_strings_free(b->ptrs[i]);
    free(b);
    stream_drop(s, -1, "reading the spool failed: %s", strerror(-r));
    return r;
  }
  if (b->n > 0) {
    Muster__ChangeBatch batch = MUSTER__CHANGE_BATCH__INIT;
    Muster__Envelope env = MUSTER__ENVELOPE__INIT;

    batch.n_changes = b->n;
    batch.changes = b->ptrs;
    env.body_case = MUSTER__ENVELOPE__BODY_CHANGES;
    env.changes = &batch;
    r = stream_queue(s, &env);
    if (r >= 0) {
      log_debug("stream: queued changes %" PRIu64 "..%" PRIu64 " for %s", b->ptrs[0]->seq,
                b->last_seq, s->peer);
      s->sent_seq = b->last_seq;
      r = (int)b->n;
    }
  } else if (b->last_seq == s->sent_seq && s->sent_seq < agent_spool_last_seq(a->spool)) {
    /* A gap (rows pruned, or the aggregator holds less than what we kept):
     * nothing more is stored below last_seq. */
    log_warning("stream: spool has no changes after seq %" PRIu64 " up to %" PRIu64
                " (pruned), skipping them",
                s->sent_seq, agent_spool_last_seq(a->spool));
    s->sent_seq = agent_spool_last_seq(a->spool);
    r = 0;
  }
  for (size_t i = 0; i < b->n; i++)
    change_strings_free(b->ptrs[i]);
  free(b);
  return r;
}

static int stream_queue_snapshot(struct agent_stream *s) {
  struct agent *a = s->agent;
  size_t n = a->n_components;
  _cleanup_free_ Muster__ComponentStatus *items = calloc(MST_MAX(n, (size_t)1), sizeof(*items));
  _cleanup_free_ Muster__ComponentStatus **ptrs = calloc(MST_MAX(n, (size_t)1), sizeof(*ptrs));
  _cleanup_free_ char *scratch = NULL;
  Muster__Snapshot snap = MUSTER__SNAPSHOT__INIT;
  Muster__Envelope env = MUSTER__ENVELOPE__INIT;
  size_t limit = a->cfg.max_frame - MST_MIN(a->cfg.max_frame, (uint64_t)64);

  if (!items || !ptrs) {
    stream_drop(s, -1, "out of memory building a snapshot");
    return -ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    const struct agent_component *c = &a->components[i];
    Muster__ComponentStatus *m = &items[i];

    *m = (Muster__ComponentStatus)MUSTER__COMPONENT_STATUS__INIT;
    m->component = c->conf->name;
    m->check = (Muster__CheckKind)c->conf->check;
    m->state = (Muster__State)c->state;
    m->since_ms = (int64_t)(c->since_usec / USEC_PER_MSEC);
    m->output = c->output;
    m->health = c->damp.health;
    m->rise = c->damp.rise;
    m->fall = c->damp.fall;
    m->description = (char *)agent_component_description(c);
    m->display_name = (char *)agent_component_display_name(c);
    if (!m->description)
      m->description = (char *)"";
    if (!m->display_name)
      m->display_name = (char *)"";
    ptrs[i] = m;
  }
  snap.seq = agent_spool_last_seq(a->spool);
  snap.at_ms = (int64_t)(mst_now_realtime_usec() / USEC_PER_MSEC);
  snap.n_components = n;
  snap.components = ptrs;
  env.body_case = MUSTER__ENVELOPE__BODY_SNAPSHOT;
  env.snapshot = &snap;

  /* A snapshot cannot be split (what it lacks is gone from the node), so
   * when it does not fit, the outputs are shortened, and dropped at last,
   * and then the descriptions. */
  if (n > 0 && muster__envelope__get_packed_size(&env) > limit) {
    size_t each = a->cfg.max_frame / 2 / n;
    size_t total = 0;

    for (size_t i = 0; i < n; i++)
      total += MST_MIN(strlen(items[i].output), each) + 1;
    scratch = malloc(total + 1);
    if (!scratch) {
      stream_drop(s, -1, "out of memory building a snapshot");
      return -ENOMEM;
    }
    char *p = scratch;
    for (size_t i = 0; i < n; i++) {
      size_t len = mst_utf8_truncate(p, items[i].output, each, AGENT_TRUNCATED_MARK);
      items[i].output = p;
      p += len + 1;
    }
    if (muster__envelope__get_packed_size(&env) > limit)
      for (size_t i = 0; i < n; i++)
        items[i].output = (char *)"";
    /* Then what describes them: the states must get through. */
    if (muster__envelope__get_packed_size(&env) > limit)
      for (size_t i = 0; i < n; i++)
        items[i].description = items[i].display_name = (char *)"";
    log_warning("stream: snapshot of %zu components is over max_frame, sending shortened outputs",
                n);
  }

  int r = stream_queue(s, &env);
  if (r < 0)
    return r;
  s->refresh_wanted = false;
  s->snapshot_usec = mst_now_monotonic_usec();
  log_debug("stream: queued snapshot of %zu components at seq %" PRIu64 " for %s", n, snap.seq,
            s->peer);
  return 0;
}

/* Fills the output buffer from the spool while it is below the low water
 * mark; the snapshot follows the replay. Runs from the pump source and after
 * the socket drained. */
static void stream_pump(struct agent_stream *s) {
  struct agent *a = s->agent;
  int r;

  if (s->phase != STREAM_REPLAY && s->phase != STREAM_LIVE)
    return;
  while (mst_buf_pending(&s->out) < STREAM_LOW_WATER) {
    if (s->sent_seq < agent_spool_last_seq(a->spool)) {
      r = stream_queue_batch(s);
      if (r < 0)
        return;
      continue;
    }
    if (s->phase == STREAM_REPLAY) {
      if (stream_queue_snapshot(s) < 0)
        return;
      s->phase = STREAM_LIVE;
      if (s->sent_seq > s->replay_from)
        log_info("stream: replayed changes %" PRIu64 "..%" PRIu64 " to %s, then a snapshot of "
                 "%zu components",
                 s->replay_from + 1, s->sent_seq, s->peer, a->n_components);
      else
        log_info("stream: nothing to replay to %s, sent a snapshot of %zu components", s->peer,
                 a->n_components);
    }
    break;
  }
  /* A fault's end only once every change committed before it is queued:
   * the aggregator must never see the states from before the fault
   * without the fault. */
  if (s->phase == STREAM_LIVE && s->sent_seq >= agent_spool_last_seq(a->spool) && !a->fault[0] &&
      s->fault_sent[0]) {
    stream_fault_take(s);
    if (stream_queue_heartbeat(s) < 0)
      return;
  }
  if (stream_flush(s) < 0)
    return;
  /* The socket may have taken everything: go on in the next iteration
   * rather than waiting for an EPOLLOUT that will not come. */
  if ((s->sent_seq < agent_spool_last_seq(a->spool) || s->phase == STREAM_REPLAY) &&
      mst_buf_pending(&s->out) < STREAM_LOW_WATER)
    (void)sd_event_source_set_enabled(s->pump, SD_EVENT_ONESHOT);
}

static int stream_on_pump(sd_event_source *source, void *userdata) {
  stream_pump(userdata);
  return 0;
}

void agent_stream_changes_pending(struct agent_stream *s) {
  /* In REPLAY the pump goes on by itself until it has caught up. */
  if (s && s->phase == STREAM_LIVE)
    (void)sd_event_source_set_enabled(s->pump, SD_EVENT_ONESHOT);
}

/* Arms the refresh timer for the earliest time a snapshot may go. */
static void stream_arm_refresh(struct agent_stream *s, uint64_t min_delay_usec) {
  uint64_t now = mst_now_monotonic_usec();
  uint64_t at = MST_MAX(s->snapshot_usec + STREAM_REFRESH_MIN_USEC, now + min_delay_usec);

  (void)sd_event_source_set_time(s->refresh, at);
  (void)sd_event_source_set_enabled(s->refresh, SD_EVENT_ONESHOT);
}

static int stream_on_refresh(sd_event_source *source, uint64_t usec, void *userdata) {
  struct agent_stream *s = userdata;

  if (s->phase != STREAM_LIVE || !s->refresh_wanted)
    return 0; /* the next replay's snapshot carries the outputs */
  if (s->sent_seq < agent_spool_last_seq(s->agent->spool) ||
      mst_buf_pending(&s->out) >= STREAM_LOW_WATER) {
    /* Changes are still going out: the snapshot must not overtake them. */
    stream_arm_refresh(s, 100 * USEC_PER_MSEC);
    return 0;
  }
  if (stream_queue_snapshot(s) < 0)
    return 0;
  (void)stream_flush(s);
  return 0;
}

void agent_stream_retry_now(struct agent_stream *s) {
  if (s && s->phase == STREAM_WAITING) {
    s->attempt = 0;
    stream_schedule_retry(s, 0);
  }
}

void agent_stream_hold_first(struct agent_stream *s, uint64_t at_most_usec) {
  if (s && s->phase == STREAM_WAITING && !s->tried) {
    s->held = true;
    stream_schedule_retry(s, at_most_usec);
  }
}

void agent_stream_release_first(struct agent_stream *s) {
  if (s && s->held) {
    s->held = false;
    if (s->phase == STREAM_WAITING)
      stream_schedule_retry(s, 0);
  }
}

void agent_stream_hello_again(struct agent_stream *s) {
  /* Before the Hello (connecting, TLS), the Hello to come names it already. */
  if (s && (s->phase == STREAM_HELLO || s->phase == STREAM_REPLAY || s->phase == STREAM_LIVE))
    stream_drop(s, 0, "a new startup began (%s); saying Hello again to %s", s->agent->boot_id,
                s->peer);
}

void agent_stream_mesos_id_changed(struct agent_stream *s) {
  /* Before the Welcome, the Hello said it or the next one will. */
  if (s && (s->phase == STREAM_REPLAY || s->phase == STREAM_LIVE))
    stream_send_heartbeat(s);
}

void agent_stream_fault_changed(struct agent_stream *s) {
  if (!s)
    return;
  if (s->agent->fault[0]) {
    if (strcmp(s->fault_sent, s->agent->fault) != 0 ||
        s->fault_sent_since_usec != s->agent->fault_since_usec)
      stream_announce_fault(s);
    return;
  }
  /* The end: announced by the pump, after the changes. In REPLAY it goes
   * on by itself. */
  if (s->phase == STREAM_LIVE)
    (void)sd_event_source_set_enabled(s->pump, SD_EVENT_ONESHOT);
}

void agent_stream_outputs_changed(struct agent_stream *s) {
  if (!s)
    return;
  s->refresh_wanted = true;
  if (s->phase == STREAM_LIVE)
    stream_arm_refresh(s, 0);
}

/* --- receiving ---------------------------------------------------------------------- */

static const char *reject_code_name(Muster__RejectCode code) {
  const ProtobufCEnumValue *v =
      protobuf_c_enum_descriptor_get_value(&muster__reject_code__descriptor, (int)code);
  return v ? v->name : "UNKNOWN_CODE";
}

/* The aggregator holds more of this spool than the spool has, or other
 * changes at the same seqs: the spool went back in time (restored from a
 * backup or a VM snapshot). Its next seqs, or those it wrote since, are
 * held there already and would be dropped as such: the spool
 * moves to a new id (the unacknowledged changes with it) and the stream
 * starts again at once with a Hello for that id. */
static void stream_spool_behind(struct agent_stream *s, const char *reason) {
  struct agent *a = s->agent;
  int r = agent_spool_roll(a->spool, reason);
  if (r < 0) {
    stream_drop(s, -1, "cannot move the spool to a new id: %s", strerror(-r));
    return;
  }
  stream_drop(s, 0, "the spool went back in time; streaming to %s again under spool id %s", s->peer,
              agent_spool_id(a->spool));
}

/* Whether the aggregator's row at held_seq (its fingerprint in the Welcome)
 * is another change than the spool's: a spool restored from a backup that
 * then went past what is held before it reconnected (restored at 17, wrote
 * 18..40 offline, the aggregator holds 34 of the old run). Its last_seq
 * passed the Hello's check, but its 18..34 are other changes than the
 * aggregator's and would be dropped as already held. Without a fingerprint
 * (an older aggregator, a spool held before it kept them) there is nothing
 * to compare. A row the spool no longer has was pruned, which only happens
 * once it is acknowledged: it is the aggregator's row already (acknowledged
 * rows came before the backup, or from a stream whose Welcome passed this
 * check), so nothing is wrong. A row missing although it was never
 * acknowledged cannot be checked: moving to a new id is the safe answer.
 * Returns 0 when the rows agree, or a negative errno when the spool cannot
 * be read; reason is set (and 1 returned) when they differ. */
static int stream_held_row_differs(struct agent_stream *s, const Muster__Welcome *w, char *reason,
                                   size_t size) {
  struct agent *a = s->agent;
  uint64_t fp = 0;

  if (w->held_seq == 0 || w->held_fingerprint == 0)
    return 0;
  int r = agent_spool_fingerprint(a->spool, w->held_seq, &fp);
  if (r == -ENOENT && w->held_seq <= agent_spool_acked_seq(a->spool))
    return 0;
  if (r == -ENOENT) {
    snprintf(reason, size,
             "%s holds seq %" PRIu64 " of spool %s, which the spool lost without an "
             "acknowledgement, so that it cannot tell whether its rows are the aggregator's",
             s->peer, w->held_seq, agent_spool_id(a->spool));
    return 1;
  }
  if (r < 0)
    return r;
  if (fp == w->held_fingerprint)
    return 0;
  snprintf(reason, size,
           "the row %s holds at seq %" PRIu64 " of spool %s differs from the spool's "
           "(restored from a backup?)",
           s->peer, w->held_seq, agent_spool_id(a->spool));
  return 1;
}

static void stream_on_welcome(struct agent_stream *s, const Muster__Welcome *w) {
  struct agent *a = s->agent;
  uint64_t last = agent_spool_last_seq(a->spool);
  uint64_t held = w->held_seq;
  char hb[32];

  /* An aggregator that predates REJECT_SPOOL_BEHIND says so in the Welcome. */
  if (held > last) {
    char reason[256];
    snprintf(reason, sizeof(reason),
             "%s holds seq %" PRIu64 " of spool %s, the spool only has %" PRIu64
             " (restored from a backup?)",
             s->peer, held, agent_spool_id(a->spool), last);
    stream_spool_behind(s, reason);
    return;
  }
  {
    char reason[320];
    int r = stream_held_row_differs(s, w, reason, sizeof(reason));
    if (r < 0) {
      stream_drop(s, -1, "cannot read the spool's row at seq %" PRIu64 ": %s", held, strerror(-r));
      return;
    }
    if (r > 0) {
      stream_spool_behind(s, reason);
      return;
    }
  }
  /* What the aggregator holds is committed there: as good as an Ack. */
  agent_spool_ack(a->spool, held);

  s->heartbeat_usec = a->cfg.heartbeat_usec;
  if (w->heartbeat_ms > 0)
    s->heartbeat_usec =
        MST_MAX(MST_MIN(s->heartbeat_usec, (uint64_t)w->heartbeat_ms * USEC_PER_MSEC),
                STREAM_HEARTBEAT_MIN_USEC);
  s->silence_usec = 3 * s->heartbeat_usec;
  s->welcomed_usec = mst_now_monotonic_usec(); /* the back-off starts over once stable */
  s->redirects = 0;
  s->cluster_answered_usec = 0;
  s->not_leader = 0;
  s->sent_seq = held;
  s->replay_from = held;
  s->phase = STREAM_REPLAY;

  log_info("stream: welcomed by %s (leader %s, epoch %" PRIu64 "): it holds seq %" PRIu64
           ", the spool has %" PRIu64 ", heartbeat %s",
           s->peer, w->leader_id && *w->leader_id ? w->leader_id : "?", w->epoch, w->held_seq, last,
           mst_duration_format(s->heartbeat_usec, hb, sizeof(hb)));
  (void)sd_notifyf(false, "STATUS=Streaming to %s (epoch %" PRIu64 ")", s->peer, w->epoch);

  set_deadline(s, s->silence_usec);
  (void)sd_event_source_set_time_relative(s->heartbeat, s->heartbeat_usec);
  (void)sd_event_source_set_enabled(s->heartbeat, SD_EVENT_ON);
  if (a->fault[0])
    stream_announce_fault(s);
  stream_pump(s);
}

static void stream_on_redirect(struct agent_stream *s, const Muster__Redirect *rd) {
  if (!rd->stream_address || !*rd->stream_address) {
    stream_drop(s, -1, "%s redirected without an address", s->peer);
    return;
  }
  free(s->redirect);
  s->redirect = strdup(rd->stream_address);
  s->redirects++;
  s->cluster_answered_usec = mst_now_monotonic_usec();
  /* A redirect names the leader: go there at once, unless redirects keep
   * coming without a Welcome. */
  stream_drop(s, s->redirects <= STREAM_REDIRECTS_MAX ? 0 : -1,
              "redirected by %s to %s (leader %s, epoch %" PRIu64 ")", s->peer, rd->stream_address,
              rd->leader_id && *rd->leader_id ? rd->leader_id : "?", rd->epoch);
}

static void stream_on_reject(struct agent_stream *s, const Muster__Reject *rj) {
  int64_t delay = STREAM_BACKOFF_AT_LEAST(STREAM_REJECT_RETRY_USEC);

  if (rj->code == MUSTER__REJECT_CODE__REJECT_SPOOL_BEHIND) {
    char reason[512];
    snprintf(reason, sizeof(reason), "rejected by %s: %.400s", s->peer,
             rj->reason && *rj->reason ? rj->reason : "the spool is behind");
    stream_spool_behind(s, reason);
    return;
  }
  if (rj->code == MUSTER__REJECT_CODE__REJECT_UNKNOWN_ROLE)
    delay = STREAM_BACKOFF_AT_LEAST(STREAM_UNKNOWN_ROLE_RETRY_USEC);
  else if (rj->code == MUSTER__REJECT_CODE__REJECT_NOT_LEADER) {
    /* A leader is being elected: ask again soon, so that the new leader is
     * found right after the election; a long election gets the backoff. */
    s->cluster_answered_usec = mst_now_monotonic_usec();
    delay = ++s->not_leader <= STREAM_NOT_LEADER_FAST_MAX
                ? (int64_t)agent_random_below(s->agent, STREAM_NOT_LEADER_RETRY_MAX_USEC + 1)
                : -1;
  }
  log_error("stream: rejected by %s: %s: %s", s->peer, reject_code_name(rj->code),
            rj->reason && *rj->reason ? rj->reason : "(no reason given)");
  stream_drop(s, delay, "rejected by %s (%s)", s->peer, reject_code_name(rj->code));
}

/* Returns 0, or -1 when the connection was dropped. */
static int stream_on_frame(struct agent_stream *s, const uint8_t *data, size_t len) {
  _cleanup_envelope_ Muster__Envelope *env = NULL;
  bool streaming = s->phase == STREAM_REPLAY || s->phase == STREAM_LIVE;

  if (mst_envelope_decode(data, len, &env) < 0) {
    stream_drop(s, -1, "malformed frame from %s", s->peer);
    return -1;
  }
  if (streaming)
    set_deadline(s, s->silence_usec);

  switch (env->body_case) {
  case MUSTER__ENVELOPE__BODY_WELCOME:
    if (s->phase != STREAM_HELLO)
      break;
    stream_on_welcome(s, env->welcome);
    return s->fd >= 0 ? 0 : -1;
  case MUSTER__ENVELOPE__BODY_REDIRECT:
    stream_on_redirect(s, env->redirect);
    return -1;
  case MUSTER__ENVELOPE__BODY_REJECT:
    stream_on_reject(s, env->reject);
    return -1;
  case MUSTER__ENVELOPE__BODY_ACK:
    if (!streaming)
      break;
    log_debug("stream: %s acknowledged seq %" PRIu64, s->peer, env->ack->seq);
    s->acked = true;
    agent_spool_ack(s->agent->spool, env->ack->seq);
    return 0;
  case MUSTER__ENVELOPE__BODY_HEARTBEAT:
    return 0;
  default:
    break;
  }
  stream_drop(s, -1, "unexpected frame (body %d) from %s in phase %s", (int)env->body_case, s->peer,
              phase_name(s->phase));
  return -1;
}

/* Reads what the socket has into the frame reader. Through a small buffer
 * on the stack rather than mst_frame_reader_fill(), which reserves 64 KiB
 * in the reader: the aggregator sends small frames (Welcome, Acks,
 * heartbeats), so the reader stays at a page or two for the agent's life.
 * Returns bytes read, 0 at EOF, -EAGAIN, or -errno. */
static ssize_t stream_fill(struct agent_stream *s) {
  uint8_t buf[STREAM_READ_CHUNK];
  ssize_t n;
  int r;

  if (s->tls) {
    n = mst_tls_recv(s->tls, buf, sizeof(buf));
    if (n < 0)
      return n;
  } else {
    do
      n = read(s->fd, buf, sizeof(buf));
    while (n < 0 && errno == EINTR);
    if (n < 0)
      return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  }
  if (n > 0) {
    r = mst_frame_reader_feed(&s->reader, buf, (size_t)n);
    if (r < 0)
      return r;
  }
  return n;
}

static void stream_read(struct agent_stream *s) {
  /* Bytes GnuTLS already decrypted do not show as readiness: read them all. */
  for (int i = 0; i < STREAM_READS_PER_EVENT || (s->tls && mst_tls_pending(s->tls) > 0); i++) {
    ssize_t n = stream_fill(s);
    const uint8_t *data;
    size_t len;
    int r;

    if (n == -EAGAIN)
      return;
    if (n == 0) {
      stream_drop(s, -1, "%s closed the connection", s->peer);
      return;
    }
    if (n < 0) {
      stream_drop(s, -1, "reading from %s failed: %s", s->peer,
                  n == -EPROTO ? mst_tls_error(s->tls) : strerror((int)-n));
      return;
    }
    while ((r = mst_frame_reader_next(&s->reader, &data, &len)) == 1)
      if (stream_on_frame(s, data, len) < 0)
        return;
    if (r == -EMSGSIZE) {
      stream_drop(s, -1, "frame from %s is over max_frame (%" PRIu64 " bytes)", s->peer,
                  s->agent->cfg.max_frame);
      return;
    }
    if (r < 0) {
      stream_drop(s, -1, "malformed frame length from %s", s->peer);
      return;
    }
  }
}

/* --- connecting --------------------------------------------------------------------- */

static uint64_t stream_handshake_timeout(const struct agent_stream *s) {
  return MST_MAX(3 * s->agent->cfg.heartbeat_usec, STREAM_HANDSHAKE_MIN_USEC);
}

/* The TLS session is up (or there is none): say Hello. */
static void stream_on_secure(struct agent_stream *s) {
  char hs[32];
  uint64_t handshake = stream_handshake_timeout(s);

  s->phase = STREAM_HELLO;
  mst_frame_reader_init(&s->reader, s->agent->cfg.max_frame);
  mst_buf_init(&s->out, STREAM_OUT_MAX);
  stream_update_io(s);
  set_deadline(s, handshake);
  log_info("stream: connected to %s, sending Hello (spool %s, last seq %" PRIu64
           ", handshake timeout %s)",
           s->peer, agent_spool_id(s->agent->spool), agent_spool_last_seq(s->agent->spool),
           mst_duration_format(handshake, hs, sizeof(hs)));
  (void)stream_send_hello(s);
}

/* One step of the TLS handshake, as the socket allows. */
static void stream_tls_step(struct agent_stream *s) {
  char err[512];
  int r = mst_tls_handshake(s->tls, err, sizeof(err));

  if (r == 0) {
    stream_update_io(s);
    return;
  }
  if (r < 0) {
    log_error("stream: TLS handshake with %s failed: %s", s->peer, err);
    /* A certificate refused either way is a configuration problem that a
     * quick retry will not mend. */
    stream_drop(s, r == -EACCES ? STREAM_BACKOFF_AT_LEAST(STREAM_REJECT_RETRY_USEC) : -1,
                "TLS handshake with %s failed", s->peer);
    return;
  }
  if (MST_LOG_INFO <= mst_log_max_level) {
    char desc[256];
    mst_tls_describe(s->tls, desc, sizeof(desc));
    log_info("stream: TLS with %s: %s", s->peer, desc);
  }
  stream_on_secure(s);
}

/* The host part of "host:port" or "[v6]:port", for certificate checks. */
static void peer_host(const char *peer, char *buf, size_t size) {
  const char *end;

  if (peer[0] == '[' && (end = strchr(peer, ']'))) {
    snprintf(buf, size, "%.*s", (int)(end - peer - 1), peer + 1);
    return;
  }
  end = strrchr(peer, ':');
  snprintf(buf, size, "%.*s", end ? (int)(end - peer) : (int)strlen(peer), peer);
}

static void stream_on_connected(struct agent_stream *s) {
  struct agent *a = s->agent;
  char host[256], err[512];
  int r;

  if (!a->tls_creds) {
    stream_on_secure(s);
    return;
  }
  peer_host(s->peer, host, sizeof(host));
  r = mst_tls_new(a->tls_creds, MST_TLS_CLIENT, s->fd,
                  a->cfg.tls_server_name ? a->cfg.tls_server_name : host, &s->tls, err,
                  sizeof(err));
  if (r < 0) {
    stream_drop(s, -1, "TLS with %s: %s", s->peer, err);
    return;
  }
  s->phase = STREAM_TLS;
  set_deadline(s, stream_handshake_timeout(s));
  stream_tls_step(s);
}

static int stream_on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
  struct agent_stream *s = userdata;

  if (s->phase == STREAM_CONNECTING) {
    int r = agent_connect_result(fd);
    if (r < 0) {
      stream_drop(s, -1, "connecting to %s failed: %s", s->peer, strerror(-r));
      return 0;
    }
    stream_on_connected(s);
    return 0;
  }
  if (s->phase == STREAM_TLS) {
    stream_tls_step(s);
    return 0;
  }

  if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    stream_read(s);
    if (s->fd < 0)
      return 0;
  }
  if (revents & EPOLLOUT) {
    if (stream_flush(s) < 0)
      return 0;
    if (mst_buf_pending(&s->out) < STREAM_LOW_WATER)
      stream_pump(s);
  }
  return 0;
}

static int stream_on_deadline(sd_event_source *source, uint64_t usec, void *userdata) {
  struct agent_stream *s = userdata;
  char d[32];

  switch (s->phase) {
  case STREAM_CONNECTING:
    stream_drop(s, -1, "connecting to %s timed out after %s", s->peer,
                mst_duration_format(STREAM_CONNECT_TIMEOUT_USEC, d, sizeof(d)));
    break;
  case STREAM_TLS:
    stream_drop(s, -1, "no TLS handshake with %s within %s", s->peer,
                mst_duration_format(stream_handshake_timeout(s), d, sizeof(d)));
    break;
  case STREAM_HELLO:
    stream_drop(s, -1, "no answer to Hello from %s", s->peer);
    break;
  case STREAM_REPLAY:
  case STREAM_LIVE:
    stream_drop(s, -1, "nothing heard from %s for %s (3 heartbeats), dropping the connection",
                s->peer, mst_duration_format(s->silence_usec, d, sizeof(d)));
    break;
  case STREAM_WAITING:
    break;
  }
  return 0;
}

static int stream_on_heartbeat(sd_event_source *source, uint64_t usec, void *userdata) {
  struct agent_stream *s = userdata;

  if (s->phase != STREAM_REPLAY && s->phase != STREAM_LIVE)
    return sd_event_source_set_enabled(source, SD_EVENT_OFF);
  (void)sd_event_source_set_time_relative(source, s->heartbeat_usec);
  stream_send_heartbeat(s);
  return 0;
}

static int stream_on_retry(sd_event_source *source, uint64_t usec, void *userdata) {
  struct agent_stream *s = userdata;
  struct mst_addr addr;
  char err[256];
  bool connected;
  int r;

  if (s->held) {
    log_warning("stream: the systemd units were not all read in time; saying Hello with the "
                "startup as it stands (%s)",
                s->agent->boot_id);
    s->held = false;
  }
  s->tried = true;
  free(s->peer);
  if (s->redirect)
    s->peer = TAKE_PTR(s->redirect);
  else
    s->peer = strdup(s->targets[s->next_target++ % s->n_targets]);
  if (!s->peer) {
    stream_drop(s, -1, "out of memory");
    return 0;
  }

  if (mst_addr_parse(s->peer, 0, &addr, err, sizeof(err)) < 0) {
    stream_drop(s, -1, "cannot connect to aggregator %s", err);
    return 0;
  }
  log_debug("stream: connecting to %s", s->peer);
  r = agent_connect_start((struct sockaddr *)&addr.ss, addr.len, &connected);
  if (r < 0) {
    stream_drop(s, -1, "connecting to %s failed: %s", s->peer, strerror(-r));
    return 0;
  }
  s->fd = r;
  s->phase = STREAM_CONNECTING;
  /* Frames are small and each one is due at once: without this, Nagle holds
   * a change back while a heartbeat waits for its (delayed) ACK, ~40 ms. */
  if (setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int)) < 0)
    log_debug("stream: cannot set TCP_NODELAY: %s, ignoring", strerror(errno));
  r = sd_event_add_io(s->agent->event, &s->io, s->fd, EPOLLOUT, stream_on_io, s);
  if (r < 0) {
    stream_drop(s, -1, "cannot watch the connection to %s: %s", s->peer, strerror(-r));
    return 0;
  }
  (void)sd_event_source_set_description(s->io, "stream");
  if (connected) {
    stream_on_connected(s);
    return 0;
  }
  set_deadline(s, STREAM_CONNECT_TIMEOUT_USEC);
  return 0;
}

/* --- life cycle --------------------------------------------------------------------- */

static bool target_is_loopback(const char *target) {
  struct mst_addr addr;
  char err[256];

  if (mst_addr_parse(target, 0, &addr, err, sizeof(err)) < 0)
    return false;
  return mst_addr_is_loopback((struct sockaddr *)&addr.ss);
}

int agent_stream_new(struct agent *a, struct agent_stream **ret) {
  struct agent_stream *s;
  int r;

  s = calloc(1, sizeof(*s));
  if (!s)
    return -ENOMEM;
  s->agent = a;
  s->fd = -1;
  mst_frame_reader_init(&s->reader, a->cfg.max_frame);
  mst_buf_init(&s->out, STREAM_OUT_MAX);

  r = mst_strv_split(a->cfg.aggregators, &s->targets);
  if (r <= 0) {
    agent_stream_free(s);
    return r < 0 ? r : -EINVAL;
  }
  s->n_targets = (size_t)r;
  if (*a->token && !a->tls_creds)
    for (size_t i = 0; i < s->n_targets; i++)
      if (!target_is_loopback(s->targets[i])) {
        log_warning("stream: the token goes to %s in clear text: the stream is plain TCP (set "
                    "[tls] ca, and TLS on the aggregators)",
                    s->targets[i]);
        break;
      }
  /* Agents of one cluster should not all start with the same aggregator. */
  s->next_target = agent_random_below(a, s->n_targets);

  r = sd_event_add_time_relative(a->event, &s->retry, CLOCK_MONOTONIC, 0, USEC_PER_MSEC,
                                 stream_on_retry, s);
  if (r >= 0)
    r = sd_event_add_time_relative(a->event, &s->deadline, CLOCK_MONOTONIC, 0, 10 * USEC_PER_MSEC,
                                   stream_on_deadline, s);
  if (r >= 0)
    r = sd_event_add_time_relative(a->event, &s->heartbeat, CLOCK_MONOTONIC, 0, 10 * USEC_PER_MSEC,
                                   stream_on_heartbeat, s);
  if (r >= 0)
    r = sd_event_add_defer(a->event, &s->pump, stream_on_pump, s);
  if (r >= 0)
    r = sd_event_add_time(a->event, &s->refresh, CLOCK_MONOTONIC, 0, 10 * USEC_PER_MSEC,
                          stream_on_refresh, s);
  if (r < 0) {
    agent_stream_free(s);
    return r;
  }
  (void)sd_event_source_set_description(s->retry, "stream-retry");
  (void)sd_event_source_set_description(s->deadline, "stream-deadline");
  (void)sd_event_source_set_description(s->heartbeat, "stream-heartbeat");
  (void)sd_event_source_set_description(s->pump, "stream-pump");
  (void)sd_event_source_set_description(s->refresh, "stream-refresh");
  (void)sd_event_source_set_enabled(s->refresh, SD_EVENT_OFF);
  (void)sd_event_source_set_enabled(s->deadline, SD_EVENT_OFF);
  (void)sd_event_source_set_enabled(s->heartbeat, SD_EVENT_OFF);
  (void)sd_event_source_set_enabled(s->pump, SD_EVENT_OFF);
  /* The retry timer fires at once: the first attempt. */
  *ret = s;
  return 0;
}

void agent_stream_free(struct agent_stream *s) {
  if (!s)
    return;
  stream_close(s);
  s->retry = sd_event_source_disable_unref(s->retry);
  s->deadline = sd_event_source_disable_unref(s->deadline);
  s->heartbeat = sd_event_source_disable_unref(s->heartbeat);
  s->pump = sd_event_source_disable_unref(s->pump);
  s->refresh = sd_event_source_disable_unref(s->refresh);
  mst_strv_free(s->targets);
  free(s->redirect);
  free(s->peer);
  free(s);
}
