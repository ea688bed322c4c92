/* muster-loadgen: N simulated agents of M components each, in one process,
 * for the aggregator's ingest, storm, freshness and scale benchmarks
 * (bench/README.md, "Load generator and ingest ceiling").
 *
 * DESIGN. One epoll loop owns everything; it never blocks except in
 * epoll_wait. Each simulated node is one non-blocking TCP connection that
 * speaks the real agent protocol (proto/muster.proto, varint-delimited
 * Envelopes, common/frame.c): Hello; after the Welcome the node's first
 * changes (every component from starting to healthy, seq 1..M, as a freshly
 * installed agent sends them) and a Snapshot; then ChangeBatch frames and a
 * Heartbeat every Welcome.heartbeat_ms. Connections are opened at most
 * --connect-batch at a time (a node counts until its Welcome), so the
 * aggregator's accept backlog is never overrun; a connection that fails
 * before its Welcome is retried with backoff, one that fails after it ends
 * the run.
 *
 * The benchmark itself is sequential code on top of the loop: each phase
 * runs the loop until a condition holds (loop_run_until), so the simulated
 * nodes keep heartbeating and answering while a phase waits. Modes:
 *
 *   connect    connect all, wait for every initial change to be acked, hold
 *   ingest     changes at --rate (0: as fast as the aggregator acks, each
 *              node keeping --window changes unacked) for --duration
 *   storm      every component of every node flips at once
 *   freshness  a blocking read parked on one node, then a change on it:
 *              change written -> read answered with the new state
 *
 * Latency of a change is measured from the moment the last byte of the
 * frame carrying it left for the socket to the arrival of an Ack covering
 * its seq (Acks follow the aggregator's commit). Figures go to stdout (one
 * JSON object with --json); progress goes to stderr. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mst/auth.h"
#include "mst/diag.h"
#include "mst/frame.h"
#include "mst/macro.h"
#include "mst/addr.h"
#include "mst/profile.h"
#include "mst/time.h"

#define LOADGEN_VERSION      "muster-loadgen " MUSTER_VERSION
#define NODE_OUTBUF_MAX      (16u * 1024 * 1024)
#define READ_CHUNK           (64 * 1024)
#define HTTP_RESPONSE_MAX    (256u * 1024 * 1024)
#define CONNECT_ATTEMPTS_MAX 30
#define RETRY_BASE_USEC      (50 * USEC_PER_MSEC)
#define RETRY_MAX_USEC       (2 * USEC_PER_SEC)
#define HEARTBEAT_MIN_USEC   (10 * USEC_PER_MSEC)
#define HEARTBEAT_SCAN_USEC  (20 * USEC_PER_MSEC)
#define PROGRESS_USEC        (1 * USEC_PER_SEC)
#define GEN_TICK_MSEC        1
#define IDLE_TICK_MSEC       10
#define BATCH_MAX            4096
#define OUTPUT_MAX           128
#define PARK_SETTLE_USEC     (20 * USEC_PER_MSEC)
#define FRESH_WAIT_SEC       10
#define DRAIN_TIMEOUT_USEC   (30 * USEC_PER_SEC)
#define READY_TIMEOUT_USEC   (600 * USEC_PER_SEC)
#define PICK_TRIES           8
#define LAT_EXACT            128 /* histogram: values below are exact (usec) */
#define LAT_SUB_BITS         6   /* then 64 sub-buckets per power of two */
#define LAT_BUCKETS          (LAT_EXACT + (64 - 7) * (1 << LAT_SUB_BITS))

/* --- options ------------------------------------------------------------- */

enum mode { MODE_CONNECT, MODE_INGEST, MODE_STORM, MODE_FRESHNESS };

static const char *const mode_names[] = {
    [MODE_CONNECT] = "connect",
    [MODE_INGEST] = "ingest",
    [MODE_STORM] = "storm",
    [MODE_FRESHNESS] = "freshness",
};

struct options {
  const char *stream_arg, *http_arg;
  struct mst_addr stream, http;
  unsigned nodes, components;
  bool components_set;
  const char *token_file, *role, *profile_path, *write_profile, *node_prefix;
  enum mode mode;
  double rate;     /* changes/s over all nodes; 0: as fast as acked */
  unsigned window; /* unacked changes per node */
  unsigned batch;  /* changes per ChangeBatch frame at most */
  double duration; /* seconds */
  unsigned samples;
  unsigned connect_batch;
  unsigned unhealthy_pct; /* ingest: target share of failing components */
  pid_t pid;              /* the aggregator's, for RSS; 0: not measured */
  bool metrics;
  bool json;
  uint64_t seed;
};

/* --- latency histogram ------------------------------------------------------
 * Log-linear buckets in microseconds: exact below 128 us, then 64 buckets per
 * power of two (at most 1.6% off). Cheap enough to add a sample per change. */

struct latency_hist {
  uint64_t counts[LAT_BUCKETS];
  uint64_t total;
  uint64_t max_usec;
  double sum_usec;
};

static size_t lat_bucket(uint64_t v) {
  if (v < LAT_EXACT)
    return (size_t)v;
  unsigned e = 63 - (unsigned)__builtin_clzll(v); /* >= 7 */
  uint64_t sub = (v >> (e - LAT_SUB_BITS)) & ((1u << LAT_SUB_BITS) - 1);
  return LAT_EXACT + (size_t)(e - 7) * (1u << LAT_SUB_BITS) + (size_t)sub;
}

/* The smallest value that falls in bucket b. */
static uint64_t lat_bucket_floor(size_t b) {
  if (b < LAT_EXACT)
    return b;
  size_t k = b - LAT_EXACT;
  unsigned e = (unsigned)(k >> LAT_SUB_BITS) + 7;
  uint64_t sub = k & ((1u << LAT_SUB_BITS) - 1);
  return (1ULL << e) | (sub << (e - LAT_SUB_BITS));
}

static void lat_add(struct latency_hist *h, uint64_t usec, uint64_t n) {
  h->counts[lat_bucket(usec)] += n;
  h->total += n;
  h->sum_usec += (double)usec * (double)n;
  if (usec > h->max_usec)
    h->max_usec = usec;
}

/* The q-quantile (0..1) in milliseconds: the middle of its bucket. */
static double lat_quantile_ms(const struct latency_hist *h, double q) {
  uint64_t want, seen = 0;
  if (h->total == 0)
    return 0;
  want = (uint64_t)ceil(q * (double)h->total);
  if (want == 0)
    want = 1;
  for (size_t b = 0; b < LAT_BUCKETS; b++) {
    seen += h->counts[b];
    if (seen >= want) {
      uint64_t lo = lat_bucket_floor(b);
      uint64_t hi = b + 1 < LAT_BUCKETS ? lat_bucket_floor(b + 1) : lo + 1;
      double mid = b < LAT_EXACT ? (double)lo : ((double)lo + (double)hi) / 2;
      return MST_MIN(mid, (double)h->max_usec) / 1000.0;
    }
  }
  return (double)h->max_usec / 1000.0;
}

static json_t *lat_json(const struct latency_hist *h) {
  return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f}", "count", (json_int_t)h->total, "mean",
                   h->total ? h->sum_usec / (double)h->total / 1000.0 : 0.0, "p50",
                   lat_quantile_ms(h, 0.50), "p90", lat_quantile_ms(h, 0.90), "p99",
                   lat_quantile_ms(h, 0.99), "max", (double)h->max_usec / 1000.0);
}

/* --- simulated nodes --------------------------------------------------------- */

enum io_kind { IO_NODE, IO_HTTP };

enum node_state {
  NODE_IDLE,       /* not started yet */
  NODE_RETRY,      /* failed before its Welcome; waits for retry_at_usec */
  NODE_CONNECTING, /* connect() in progress */
  NODE_HELLO,      /* Hello sent, waiting for the Welcome */
  NODE_STREAMING,  /* welcomed */
};

/* A ChangeBatch frame queued on a node, until an Ack covers its last seq. */
struct sent_frame {
  uint64_t first_seq, last_seq;
  uint64_t end_offset;   /* node->queued_bytes right after the frame */
  uint64_t written_usec; /* its last byte went to the socket; 0 not yet */
};

struct node {
  enum io_kind kind; /* first member: what epoll's data.ptr points to */
  unsigned idx;
  int fd;
  enum node_state state;
  uint32_t events; /* registered with epoll; 0 when not registered */
  struct mst_frame_reader rd;
  struct mst_buf wr;
  uint64_t queued_bytes; /* ever queued into wr */

  struct sent_frame *frames; /* ring, oldest at frames_head */
  size_t frames_head, n_frames, frames_cap;
  size_t n_stamped; /* the oldest n_stamped frames carry written_usec */

  uint64_t last_seq;  /* highest seq sent */
  uint64_t acked_seq; /* highest seq acknowledged */
  uint64_t heartbeat_usec, next_heartbeat_usec;
  uint64_t retry_at_usec;
  unsigned attempts;
  unsigned want;        /* changes due in this generator tick */
  bool reserved;        /* a freshness sample owns it: no background changes */
  uint8_t *states;      /* per component: enum mst_state as last sent */
  unsigned n_unhealthy; /* components in states[] that are not healthy */
  struct node *next;    /* in the generator's touched list */
};

/* --- a tiny HTTP/1.1 client (one request per connection) ------------------- */

struct http_req {
  enum io_kind kind; /* IO_HTTP */
  int fd;
  bool connecting, done, failed;
  char error[160];
  char out[1024];
  size_t out_len, out_off;
  char *in;
  size_t in_len, in_cap;
  size_t head_len; /* bytes of the head with its blank line; 0 until seen */
  int status;
  int64_t content_length; /* -1: until EOF */
  bool chunked;
  bool have_index;
  uint64_t muster_index;
  const char *body; /* into in, once done */
  size_t body_len;
  uint64_t done_usec;
};

/* --- the run ---------------------------------------------------------------- */

struct loadgen {
  struct options opt;
  int epfd;
  uint64_t rng;
  uint64_t nonce; /* makes spool and boot ids unique per run */
  char *token;
  char *owned_role;  /* the profile's role, when --role was not given */
  char **comp_names; /* M names */
  char profile_digest[65];
  bool fatal;
  uint64_t t0_usec; /* start of the run, for progress lines */

  struct node *nodes;
  unsigned next_to_start;
  unsigned n_pending;  /* connecting or waiting for a Welcome */
  unsigned n_welcomed; /* streaming */
  unsigned n_behind;   /* streaming with unacked changes */
  uint64_t connect_retries;

  /* Scratch space for building ChangeBatch frames. */
  Muster__Change *scratch;
  Muster__Change **scratch_ptrs;
  char (*scratch_out)[OUTPUT_MAX];
  unsigned *spec_comp; /* changes to make: component index, old and new state */
  uint8_t *spec_from, *spec_to;
  unsigned unhealthy_target; /* per node: --unhealthy percent of M */

  /* Generator. */
  bool generating;
  double gen_rate; /* 0: fill windows as acks come */
  uint64_t gen_start_usec;
  uint64_t gen_due; /* changes the rate asked for so far */
  uint64_t gen_skipped;
  struct node *touched;

  /* Measurements. */
  uint64_t sent_changes, acked_changes;
  uint64_t win_start_usec, win_end_usec; /* acks inside count */
  uint64_t acked_in_window;
  struct latency_hist ack_lat;
  struct node *fresh_node; /* freshness: the change being timed */
  uint64_t fresh_seq, fresh_written_usec;

  /* Loop housekeeping. */
  uint64_t next_hb_scan_usec, next_retry_scan_usec, next_progress_usec;
  uint64_t last_progress_acked;
  const char *phase;
};

static void fail(struct loadgen *lg, const char *fmt, ...) _printf_(2, 3);
static void fail(struct loadgen *lg, const char *fmt, ...) {
  va_list ap;
  if (lg->fatal)
    return; /* the first error is the one to read */
  lg->fatal = true;
  fprintf(stderr, "muster-loadgen: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static void progress(struct loadgen *lg, const char *fmt, ...) _printf_(2, 3);
static void progress(struct loadgen *lg, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "[%7.2fs] ", (double)(mst_now_monotonic_usec() - lg->t0_usec) / 1e6);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

/* xorshift64*: fast, and reproducible with --seed. */
static uint64_t rnd(struct loadgen *lg) {
  lg->rng ^= lg->rng >> 12;
  lg->rng ^= lg->rng << 25;
  lg->rng ^= lg->rng >> 27;
  return lg->rng * 0x2545F4914F6CDD1DULL;
}

static unsigned rnd_below(struct loadgen *lg, unsigned n) {
  return (unsigned)(rnd(lg) % n);
}

static void node_id(const struct loadgen *lg, const struct node *nd, char *buf, size_t size) {
  snprintf(buf, size, "%s-%05u", lg->opt.node_prefix, nd->idx);
}

static void node_spool_id(const struct loadgen *lg, const struct node *nd, char buf[static 33]) {
  snprintf(buf, 33, "%016" PRIx64 "%016" PRIx64, lg->nonce, (uint64_t)nd->idx);
}

static void node_boot_id(const struct loadgen *lg, const struct node *nd, char buf[static 37]) {
  snprintf(buf, 37, "%08" PRIx32 "-%04x-4%03x-8%03x-%012" PRIx64, (uint32_t)(lg->nonce >> 32),
           (unsigned)(lg->nonce >> 16) & 0xffff, (unsigned)lg->nonce & 0xfff,
           (unsigned)(lg->nonce >> 20) & 0xfff, (uint64_t)nd->idx);
}

static int64_t now_ms(void) {
  return (int64_t)(mst_now_realtime_usec() / USEC_PER_MSEC);
}

/* --- node I/O ------------------------------------------------------------------ */

static void node_set_events(struct loadgen *lg, struct node *nd, uint32_t ev) {
  struct epoll_event e = {.events = ev, .data.ptr = nd};
  if (nd->events == ev)
    return;
  if (epoll_ctl(lg->epfd, nd->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, nd->fd, &e) < 0) {
    fail(lg, "epoll_ctl: %s", strerror(errno));
    return;
  }
  nd->events = ev;
}

static void node_close(struct loadgen *lg, struct node *nd) {
  if (nd->fd >= 0) {
    if (nd->events)
      (void)epoll_ctl(lg->epfd, EPOLL_CTL_DEL, nd->fd, NULL);
    close(nd->fd);
  }
  nd->fd = -1;
  nd->events = 0;
  mst_frame_reader_done(&nd->rd);
  mst_buf_done(&nd->wr);
  nd->queued_bytes = 0;
  nd->frames_head = nd->n_frames = nd->n_stamped = 0;
}

/* A connection that broke before its Welcome: try again later, with
 * exponential backoff and full jitter. */
static void node_retry(struct loadgen *lg, struct node *nd, const char *why) {
  char id[64];
  uint64_t bound;

  node_close(lg, nd);
  lg->n_pending--;
  lg->connect_retries++;
  if (++nd->attempts >= CONNECT_ATTEMPTS_MAX) {
    node_id(lg, nd, id, sizeof(id));
    fail(lg, "node %s: gave up connecting to %s after %u attempts: %s", id, lg->opt.stream_arg,
         nd->attempts, why);
    return;
  }
  bound = MST_MIN(RETRY_BASE_USEC << MST_MIN(nd->attempts, 10u), RETRY_MAX_USEC);
  nd->retry_at_usec = mst_now_monotonic_usec() + rnd(lg) % bound;
  nd->state = NODE_RETRY;
}

/* A welcomed stream broke: the run cannot measure what it meant to. */
static void node_broken(struct loadgen *lg, struct node *nd, const char *why) {
  char id[64];
  node_id(lg, nd, id, sizeof(id));
  fail(lg, "node %s: stream to %s broken: %s", id, lg->opt.stream_arg, why);
  node_close(lg, nd);
}

/* Marks queued frames whose last byte has gone to the socket. */
static void node_stamp_written(struct loadgen *lg, struct node *nd) {
  uint64_t written = nd->queued_bytes - mst_buf_pending(&nd->wr);
  uint64_t now = 0;

  while (nd->n_stamped < nd->n_frames) {
    struct sent_frame *f = &nd->frames[(nd->frames_head + nd->n_stamped) % nd->frames_cap];
    if (f->end_offset > written)
      break;
    if (!now)
      now = mst_now_monotonic_usec();
    f->written_usec = now;
    if (nd == lg->fresh_node && f->first_seq <= lg->fresh_seq && lg->fresh_seq <= f->last_seq)
      lg->fresh_written_usec = now;
    nd->n_stamped++;
  }
}

static void node_flush(struct loadgen *lg, struct node *nd) {
  int r = mst_buf_flush(&nd->wr, nd->fd);
  node_stamp_written(lg, nd);
  if (r == -EAGAIN) {
    node_set_events(lg, nd, EPOLLIN | EPOLLOUT);
    return;
  }
  if (r < 0) {
    node_broken(lg, nd, strerror(-r));
    return;
  }
  node_set_events(lg, nd, EPOLLIN);
}

static int node_queue(struct loadgen *lg, struct node *nd, const Muster__Envelope *env) {
  size_t before = mst_buf_pending(&nd->wr);
  int r = mst_frame_write_envelope(&nd->wr, env, MST_FRAME_DEFAULT_MAX);
  if (r < 0) {
    node_broken(lg, nd,
                r == -EMSGSIZE ? "frame over 1 MiB (lower --batch)"
                               : "output buffer full: the aggregator does not read");
    return r;
  }
  nd->queued_bytes += mst_buf_pending(&nd->wr) - before;
  return 0;
}

static int frames_push(struct node *nd, uint64_t first, uint64_t last, uint64_t end) {
  if (nd->n_frames == nd->frames_cap) {
    size_t ncap = nd->frames_cap ? nd->frames_cap * 2 : 8;
    struct sent_frame *v = malloc(ncap * sizeof(*v));
    if (!v)
      return -ENOMEM;
    for (size_t i = 0; i < nd->n_frames; i++)
      v[i] = nd->frames[(nd->frames_head + i) % nd->frames_cap];
    free(nd->frames);
    nd->frames = v;
    nd->frames_cap = ncap;
    nd->frames_head = 0;
  }
  nd->frames[(nd->frames_head + nd->n_frames) % nd->frames_cap] =
      (struct sent_frame){.first_seq = first, .last_seq = last, .end_offset = end};
  nd->n_frames++;
  return 0;
}

static const char *state_word(uint8_t s) {
  const char *w = mst_state_to_string((enum mst_state)s);
  return w ? w : "unspecified";
}

/* Sends n changes (made with spec_add()) as the node's next seqs, in ChangeBatch frames of at most
 * --batch changes, and flushes. Each output line is about as long as a real check's first line. */
static int node_send_changes(struct loadgen *lg, struct node *nd, unsigned n) {
  char boot_id[37];
  int64_t at = now_ms();

  if (n == 0 || nd->state != NODE_STREAMING)
    return 0;
  node_boot_id(lg, nd, boot_id);
  if (nd->acked_seq == nd->last_seq)
    lg->n_behind++;
  for (unsigned done = 0; done < n;) {
    unsigned k = MST_MIN(n - done, lg->opt.batch);
    uint64_t first = nd->last_seq + 1;
    for (unsigned i = 0; i < k; i++) {
      Muster__Change *c = &lg->scratch[i];
      unsigned comp = lg->spec_comp[done + i];
      uint8_t to = lg->spec_to[done + i];
      uint8_t from = lg->spec_from[done + i];
      muster__change__init(c);
      c->seq = ++nd->last_seq;
      c->component = lg->comp_names[comp];
      c->check = MUSTER__CHECK_KIND__CHECK_EXEC;
      c->from = (Muster__State)from;
      c->to = (Muster__State)to;
      c->at_ms = at;
      snprintf(lg->scratch_out[i], OUTPUT_MAX, "%s %s: load %u.%02u, %u tasks (seq %" PRIu64 ")",
               lg->comp_names[comp], state_word(to), (unsigned)(c->seq % 8),
               (unsigned)(c->seq % 100), 100 + (unsigned)(c->seq % 900), c->seq);
      c->output = lg->scratch_out[i];
      c->boot_id = boot_id;
      c->health = to == MST_STATE_HEALTHY ? 4 : 0;
      c->rise = 2;
      c->fall = 3;
      lg->scratch_ptrs[i] = c;
    }
    Muster__ChangeBatch batch = MUSTER__CHANGE_BATCH__INIT;
    Muster__Envelope env = MUSTER__ENVELOPE__INIT;
    batch.n_changes = k;
    batch.changes = lg->scratch_ptrs;
    env.body_case = MUSTER__ENVELOPE__BODY_CHANGES;
    env.changes = &batch;
    if (node_queue(lg, nd, &env) < 0)
      return -1;
    if (frames_push(nd, first, nd->last_seq, nd->queued_bytes) < 0) {
      fail(lg, "out of memory");
      return -1;
    }
    lg->sent_changes += k;
    done += k;
  }
  node_flush(lg, nd);
  return lg->fatal ? -1 : 0;
}

/* Makes change i: component comp of node nd goes to state to. The node's
 * states follow at once, so that the next change made builds on this one. */
static void spec_add(struct loadgen *lg, struct node *nd, unsigned i, unsigned comp, uint8_t to) {
  uint8_t from = nd->states[comp];
  lg->spec_comp[i] = comp;
  lg->spec_from[i] = from;
  lg->spec_to[i] = to;
  nd->states[comp] = to;
  nd->n_unhealthy += (to != MST_STATE_HEALTHY) - (from != MST_STATE_HEALTHY);
}

/* A random component whose healthiness is as asked. One exists: the caller
 * checked the count. */
static unsigned pick_component(struct loadgen *lg, const struct node *nd, bool healthy) {
  unsigned m = lg->opt.components, start = rnd_below(lg, m);
  for (unsigned t = 0; t < 8; t++) {
    unsigned c = rnd_below(lg, m);
    if ((nd->states[c] == MST_STATE_HEALTHY) == healthy)
      return c;
  }
  for (unsigned k = 0; k < m; k++) {
    unsigned c = (start + k) % m;
    if ((nd->states[c] == MST_STATE_HEALTHY) == healthy)
      return c;
  }
  return start;
}

/* A random change that keeps the node's failing components near
 * --unhealthy percent: above the target a failing component recovers, below
 * it a healthy one fails (warning or unhealthy), at the target either. With
 * a target of 0 components fail and recover in turn. */
static void spec_random(struct loadgen *lg, struct node *nd, unsigned i) {
  unsigned bad = nd->n_unhealthy, target = lg->unhealthy_target;
  bool recover;

  if (bad == lg->opt.components)
    recover = true;
  else if (bad != target)
    recover = bad > target;
  else
    recover = bad > 0 && (rnd(lg) & 1);
  if (recover)
    spec_add(lg, nd, i, pick_component(lg, nd, false), MST_STATE_HEALTHY);
  else
    spec_add(lg, nd, i, pick_component(lg, nd, true),
             (rnd(lg) & 1) ? MST_STATE_WARNING : MST_STATE_UNHEALTHY);
}

static int node_send_random(struct loadgen *lg, struct node *nd, unsigned n) {
  n = MST_MIN(n, lg->opt.window);
  for (unsigned i = 0; i < n; i++)
    spec_random(lg, nd, i);
  return node_send_changes(lg, nd, n);
}

static unsigned node_room(const struct loadgen *lg, const struct node *nd) {
  uint64_t unacked = nd->last_seq - nd->acked_seq;
  return unacked >= lg->opt.window ? 0 : lg->opt.window - (unsigned)unacked;
}

static int node_send_heartbeat(struct loadgen *lg, struct node *nd) {
  Muster__Heartbeat hb = MUSTER__HEARTBEAT__INIT;
  Muster__Envelope env = MUSTER__ENVELOPE__INIT;
  hb.sent_ms = now_ms();
  hb.seq = nd->last_seq;
  env.body_case = MUSTER__ENVELOPE__BODY_HEARTBEAT;
  env.heartbeat = &hb;
  if (node_queue(lg, nd, &env) < 0)
    return -1;
  node_flush(lg, nd);
  return 0;
}

static void node_send_hello(struct loadgen *lg, struct node *nd) {
  Muster__Hello h = MUSTER__HELLO__INIT;
  Muster__Envelope env = MUSTER__ENVELOPE__INIT;
  char id[64], host[80], spool[33], boot[37];

  node_id(lg, nd, id, sizeof(id));
  snprintf(host, sizeof(host), "%s.loadgen.invalid", id);
  node_spool_id(lg, nd, spool);
  node_boot_id(lg, nd, boot);
  h.node_id = id;
  h.role = (char *)lg->opt.role;
  h.profile_digest = lg->profile_digest;
  h.hostname = host;
  h.boot_id = boot;
  h.boot_time_ms = now_ms() - 60000;
  h.agent_version = (char *)LOADGEN_VERSION;
  h.token = lg->token ? lg->token : (char *)"";
  h.spool_id = spool;
  h.last_seq = nd->last_seq;
  h.protocol_version = 1;
  env.body_case = MUSTER__ENVELOPE__BODY_HELLO;
  env.hello = &h;
  if (node_queue(lg, nd, &env) < 0)
    return;
  nd->state = NODE_HELLO;
  node_flush(lg, nd);
}

/* Welcomed: the first changes of a fresh agent (every component from
 * starting to healthy), then the Snapshot they add up to. */
static void node_on_welcome(struct loadgen *lg, struct node *nd, const Muster__Welcome *w) {
  uint64_t hb = (uint64_t)w->heartbeat_ms * USEC_PER_MSEC;
  char id[64];

  if (w->held_seq > nd->last_seq) {
    node_id(lg, nd, id, sizeof(id));
    fail(lg, "node %s: the aggregator holds seq %" PRIu64 " of a spool id made for this run", id,
         w->held_seq);
    return;
  }
  nd->state = NODE_STREAMING;
  nd->attempts = 0;
  lg->n_pending--;
  lg->n_welcomed++;
  nd->heartbeat_usec = MST_MAX(hb ? hb : 10 * USEC_PER_SEC, HEARTBEAT_MIN_USEC);
  /* Spread the heartbeats of nodes welcomed together. */
  nd->next_heartbeat_usec = mst_now_monotonic_usec() + rnd(lg) % nd->heartbeat_usec;

  for (unsigned i = 0; i < lg->opt.components; i++)
    spec_add(lg, nd, i, i, MST_STATE_HEALTHY);
  if (node_send_changes(lg, nd, lg->opt.components) < 0)
    return;

  Muster__Snapshot snap = MUSTER__SNAPSHOT__INIT;
  Muster__Envelope env = MUSTER__ENVELOPE__INIT;
  Muster__ComponentStatus *st = calloc(lg->opt.components, sizeof(*st));
  Muster__ComponentStatus **ptrs = calloc(lg->opt.components, sizeof(*ptrs));
  int64_t at = now_ms();
  if (!st || !ptrs) {
    free(st);
    free(ptrs);
    fail(lg, "out of memory");
    return;
  }
  for (unsigned i = 0; i < lg->opt.components; i++) {
    muster__component_status__init(&st[i]);
    st[i].component = lg->comp_names[i];
    st[i].check = MUSTER__CHECK_KIND__CHECK_EXEC;
    st[i].state = (Muster__State)nd->states[i];
    st[i].since_ms = at;
    st[i].output = (char *)"ok";
    st[i].health = 4;
    st[i].rise = 2;
    st[i].fall = 3;
    ptrs[i] = &st[i];
  }
  snap.seq = nd->last_seq;
  snap.at_ms = at;
  snap.n_components = lg->opt.components;
  snap.components = ptrs;
  env.body_case = MUSTER__ENVELOPE__BODY_SNAPSHOT;
  env.snapshot = &snap;
  if (node_queue(lg, nd, &env) == 0)
    node_flush(lg, nd);
  free(st);
  free(ptrs);
}

/* A cumulative Ack: everything up to seq is committed. */
static void node_on_ack(struct loadgen *lg, struct node *nd, uint64_t seq) {
  uint64_t now = mst_now_monotonic_usec();
  bool in_window = now >= lg->win_start_usec && now < lg->win_end_usec;
  char id[64];

  if (seq > nd->last_seq) {
    node_id(lg, nd, id, sizeof(id));
    fail(lg, "node %s: Ack %" PRIu64 " beyond the last seq sent, %" PRIu64, id, seq, nd->last_seq);
    return;
  }
  if (seq <= nd->acked_seq)
    return;
  lg->acked_changes += seq - nd->acked_seq;
  while (nd->n_frames > 0) {
    struct sent_frame *f = &nd->frames[nd->frames_head];
    if (f->first_seq > seq)
      break;
    uint64_t last = MST_MIN(f->last_seq, seq);
    uint64_t count = last - f->first_seq + 1;
    if (in_window) {
      lat_add(&lg->ack_lat, f->written_usec ? now - f->written_usec : 0, count);
      lg->acked_in_window += count;
    }
    if (last < f->last_seq) {
      f->first_seq = seq + 1; /* a frame split over two commits */
      break;
    }
    nd->frames_head = (nd->frames_head + 1) % nd->frames_cap;
    nd->n_frames--;
    if (nd->n_stamped)
      nd->n_stamped--;
  }
  nd->acked_seq = seq;
  if (seq == nd->last_seq)
    lg->n_behind--;
  if (lg->generating && lg->gen_rate == 0 && !nd->reserved)
    (void)node_send_random(lg, nd, node_room(lg, nd));
}

static void node_on_frame(struct loadgen *lg, struct node *nd, const Muster__Envelope *env) {
  char id[64];

  node_id(lg, nd, id, sizeof(id));
  switch (env->body_case) {
  case MUSTER__ENVELOPE__BODY_WELCOME:
    if (nd->state != NODE_HELLO) {
      fail(lg, "node %s: a second Welcome", id);
      return;
    }
    node_on_welcome(lg, nd, env->welcome);
    return;
  case MUSTER__ENVELOPE__BODY_REJECT:
    fail(lg, "node %s: rejected by %s: %s (code %d)", id, lg->opt.stream_arg,
         env->reject->reason ? env->reject->reason : "", (int)env->reject->code);
    return;
  case MUSTER__ENVELOPE__BODY_REDIRECT:
    fail(lg, "node %s: %s is a follower; the leader streams at %s (http %s)", id,
         lg->opt.stream_arg, env->redirect->stream_address ? env->redirect->stream_address : "?",
         env->redirect->http_address ? env->redirect->http_address : "?");
    return;
  case MUSTER__ENVELOPE__BODY_ACK:
    if (nd->state != NODE_STREAMING) {
      fail(lg, "node %s: an Ack before the Welcome", id);
      return;
    }
    node_on_ack(lg, nd, env->ack->seq);
    return;
  case MUSTER__ENVELOPE__BODY_HEARTBEAT:
    return;
  default:
    fail(lg, "node %s: unexpected message %d from the aggregator", id, (int)env->body_case);
  }
}

static void node_on_readable(struct loadgen *lg, struct node *nd) {
  static uint8_t chunk[READ_CHUNK];

  for (;;) {
    ssize_t n = read(nd->fd, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return;
    if (n <= 0) {
      const char *why = n == 0 ? "closed by the aggregator" : strerror(errno);
      if (nd->state == NODE_HELLO)
        node_retry(lg, nd, why);
      else
        node_broken(lg, nd, why);
      return;
    }
    if (mst_frame_reader_feed(&nd->rd, chunk, (size_t)n) < 0) {
      node_broken(lg, nd, "cannot buffer input");
      return;
    }
    for (;;) {
      const uint8_t *data;
      size_t len;
      int r = mst_frame_reader_next(&nd->rd, &data, &len);
      if (r == 0)
        break;
      if (r < 0) {
        node_broken(lg, nd, "malformed frame from the aggregator");
        return;
      }
      _cleanup_envelope_ Muster__Envelope *env = NULL;
      if (mst_envelope_decode(data, len, &env) < 0) {
        node_broken(lg, nd, "undecodable frame from the aggregator");
        return;
      }
      node_on_frame(lg, nd, env);
      if (lg->fatal || nd->fd < 0)
        return;
    }
    if ((size_t)n < sizeof(chunk))
      return;
  }
}

static void node_start_connect(struct loadgen *lg, struct node *nd) {
  int one = 1, fd;

  fd = socket(lg->opt.stream.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    fail(lg, "socket: %s (raise ulimit -n?)", strerror(errno));
    return;
  }
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  nd->fd = fd;
  mst_frame_reader_init(&nd->rd, MST_FRAME_DEFAULT_MAX);
  mst_buf_init(&nd->wr, NODE_OUTBUF_MAX);
  lg->n_pending++;
  if (connect(fd, (const struct sockaddr *)&lg->opt.stream.ss, lg->opt.stream.len) == 0) {
    node_send_hello(lg, nd);
    return;
  }
  if (errno == EINPROGRESS) {
    nd->state = NODE_CONNECTING;
    node_set_events(lg, nd, EPOLLOUT);
    return;
  }
  /* ECONNREFUSED, EAGAIN (no local port free yet) and the like. */
  node_retry(lg, nd, strerror(errno));
}

static void node_on_event(struct loadgen *lg, struct node *nd, uint32_t ev) {
  if (nd->state == NODE_CONNECTING) {
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(nd->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
      err = errno;
    if (err) {
      node_retry(lg, nd, strerror(err));
      return;
    }
    node_send_hello(lg, nd);
    return;
  }
  if (ev & EPOLLOUT)
    node_flush(lg, nd);
  if (nd->fd >= 0 && !lg->fatal && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)))
    node_on_readable(lg, nd);
}

/* --- HTTP client --------------------------------------------------------------- */

static void http_finish(struct loadgen *lg, struct http_req *q, const char *error) {
  if (q->fd >= 0) {
    (void)epoll_ctl(lg->epfd, EPOLL_CTL_DEL, q->fd, NULL);
    close(q->fd);
    q->fd = -1;
  }
  q->done_usec = mst_now_monotonic_usec();
  if (error) {
    q->failed = true;
    snprintf(q->error, sizeof(q->error), "%s", error);
  } else {
    q->done = true;
  }
}

/* Frees what q holds; ends the request first if it is still running. */
static void http_req_done(struct loadgen *lg, struct http_req *q) {
  if (q->fd >= 0) {
    (void)epoll_ctl(lg->epfd, EPOLL_CTL_DEL, q->fd, NULL);
    close(q->fd);
    q->fd = -1;
  }
  free(q->in);
  q->in = NULL;
}

/* Finds header name (case-insensitive) in the head; returns its value. */
static const char *http_header(const struct http_req *q, const char *name, size_t *ret_len) {
  size_t nl = strlen(name);
  const char *p = memchr(q->in, '\n', q->head_len);
  const char *end = q->in + q->head_len;

  while (p && p + 1 < end) {
    const char *line = p + 1;
    const char *eol = memchr(line, '\n', (size_t)(end - line));
    if (!eol)
      break;
    if ((size_t)(eol - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
      const char *v = line + nl + 1;
      while (v < eol && (*v == ' ' || *v == '\t'))
        v++;
      const char *ve = eol;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
        ve--;
      *ret_len = (size_t)(ve - v);
      return v;
    }
    p = eol;
  }
  return NULL;
}

static bool http_parse_head(struct http_req *q) {
  const char *v;
  size_t vl;
  char num[32];
  const char *blank = NULL;

  for (size_t i = 3; i < q->in_len; i++)
    if (q->in[i] == '\n' && q->in[i - 1] == '\r' && q->in[i - 2] == '\n' && q->in[i - 3] == '\r') {
      blank = q->in + i + 1;
      break;
    }
  if (!blank)
    return false;
  q->head_len = (size_t)(blank - q->in);
  if (sscanf(q->in, "HTTP/1.%*d %d", &q->status) != 1)
    q->status = -1;
  q->content_length = -1;
  if ((v = http_header(q, "Content-Length", &vl)) && vl < sizeof(num)) {
    memcpy(num, v, vl);
    num[vl] = '\0';
    q->content_length = strtoll(num, NULL, 10);
  }
  if ((v = http_header(q, "Transfer-Encoding", &vl)))
    q->chunked = vl >= 7 && strncasecmp(v, "chunked", 7) == 0;
  if ((v = http_header(q, "X-Muster-Index", &vl)) && vl < sizeof(num)) {
    memcpy(num, v, vl);
    num[vl] = '\0';
    q->muster_index = strtoull(num, NULL, 10);
    q->have_index = true;
  }
  return true;
}

/* Decodes a chunked body in place. Returns false when it is malformed. */
static bool http_dechunk(struct http_req *q) {
  char *src = q->in + q->head_len, *end = q->in + q->in_len, *dst = src;
  for (;;) {
    char *eol = memchr(src, '\n', (size_t)(end - src));
    if (!eol)
      return false;
    unsigned long long n = strtoull(src, NULL, 16);
    src = eol + 1;
    if (n == 0)
      break;
    if ((unsigned long long)(end - src) < n + 2)
      return false;
    memmove(dst, src, n);
    dst += n;
    src += n + 2;
  }
  q->body = q->in + q->head_len;
  q->body_len = (size_t)(dst - q->body);
  return true;
}

/* The response is complete when Content-Length bytes are in, or at EOF. */
static void http_on_input(struct loadgen *lg, struct http_req *q, bool eof) {
  size_t have;

  if (!q->head_len && !http_parse_head(q)) {
    if (eof)
      http_finish(lg, q, "connection closed before a complete response head");
    return;
  }
  have = q->in_len - q->head_len;
  if (!q->chunked && q->content_length >= 0 && have >= (uint64_t)q->content_length) {
    q->body = q->in + q->head_len;
    q->body_len = (size_t)q->content_length;
    http_finish(lg, q, NULL);
    return;
  }
  if (!eof)
    return;
  if (q->chunked) {
    if (!http_dechunk(q)) {
      http_finish(lg, q, "malformed chunked body");
      return;
    }
  } else if (q->content_length >= 0) {
    http_finish(lg, q, "connection closed before the whole body");
    return;
  } else {
    q->body = q->in + q->head_len;
    q->body_len = have;
  }
  http_finish(lg, q, NULL);
}

static void http_on_event(struct loadgen *lg, struct http_req *q, uint32_t ev) {
  if (q->connecting) {
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(q->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
      err = errno;
    if (err) {
      char msg[128];
      snprintf(msg, sizeof(msg), "connect to %s: %s", lg->opt.http_arg, strerror(err));
      http_finish(lg, q, msg);
      return;
    }
    q->connecting = false;
  }
  if (q->out_off < q->out_len) {
    while (q->out_off < q->out_len) {
      ssize_t n = send(q->fd, q->out + q->out_off, q->out_len - q->out_off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
      if (n < 0) {
        http_finish(lg, q, strerror(errno));
        return;
      }
      q->out_off += (size_t)n;
    }
    /* All sent: from now on only the answer matters. */
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = q};
    (void)epoll_ctl(lg->epfd, EPOLL_CTL_MOD, q->fd, &e);
  }
  if (!(ev & (EPOLLIN | EPOLLHUP | EPOLLERR)))
    return;
  for (;;) {
    if (q->in_cap - q->in_len < READ_CHUNK) {
      size_t ncap = MST_MAX(q->in_cap * 2, (size_t)READ_CHUNK * 2);
      char *p;
      if (ncap > HTTP_RESPONSE_MAX) {
        http_finish(lg, q, "response over the size cap");
        return;
      }
      p = realloc(q->in, ncap);
      if (!p) {
        http_finish(lg, q, "out of memory");
        return;
      }
      q->in = p;
      q->in_cap = ncap;
    }
    ssize_t n = read(q->fd, q->in + q->in_len, q->in_cap - q->in_len - 1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return;
    if (n < 0) {
      http_finish(lg, q, strerror(errno));
      return;
    }
    q->in_len += (size_t)n;
    q->in[q->in_len] = '\0';
    http_on_input(lg, q, n == 0);
    if (q->done || q->failed)
      return;
  }
}

/* Starts GET path on its own connection. The result lands in q (done or
 * failed) while the loop runs; q must stay put until then. */
static void http_start(struct loadgen *lg, struct http_req *q, const char *path) {
  struct epoll_event e = {.events = EPOLLIN | EPOLLOUT, .data.ptr = q};
  int one = 1;

  *q = (struct http_req){.kind = IO_HTTP, .fd = -1, .content_length = -1};
  q->out_len = (size_t)snprintf(q->out, sizeof(q->out),
                                "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\n"
                                "Connection: close\r\n\r\n",
                                path, lg->opt.http_arg, LOADGEN_VERSION);
  if (q->out_len >= sizeof(q->out)) {
    http_finish(lg, q, "request too long");
    return;
  }
  q->fd = socket(lg->opt.http.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (q->fd < 0) {
    http_finish(lg, q, strerror(errno));
    return;
  }
  (void)setsockopt(q->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (connect(q->fd, (const struct sockaddr *)&lg->opt.http.ss, lg->opt.http.len) < 0) {
    if (errno != EINPROGRESS) {
      char msg[128];
      snprintf(msg, sizeof(msg), "connect to %s: %s", lg->opt.http_arg, strerror(errno));
      http_finish(lg, q, msg);
      return;
    }
    q->connecting = true;
  }
  if (epoll_ctl(lg->epfd, EPOLL_CTL_ADD, q->fd, &e) < 0)
    http_finish(lg, q, strerror(errno));
}

/* --- the loop -------------------------------------------------------------------- */

/* Opens connections up to --connect-batch pending ones, and retries due. */
static void loop_connect_more(struct loadgen *lg, uint64_t now) {
  if (now >= lg->next_retry_scan_usec && lg->connect_retries > 0) {
    lg->next_retry_scan_usec = now + IDLE_TICK_MSEC * USEC_PER_MSEC;
    for (unsigned i = 0; i < lg->next_to_start && lg->n_pending < lg->opt.connect_batch; i++) {
      struct node *nd = &lg->nodes[i];
      if (nd->state == NODE_RETRY && now >= nd->retry_at_usec)
        node_start_connect(lg, nd);
      if (lg->fatal)
        return;
    }
  }
  while (lg->next_to_start < lg->opt.nodes && lg->n_pending < lg->opt.connect_batch && !lg->fatal)
    node_start_connect(lg, &lg->nodes[lg->next_to_start++]);
}

static void loop_heartbeats(struct loadgen *lg, uint64_t now) {
  if (now < lg->next_hb_scan_usec)
    return;
  lg->next_hb_scan_usec = now + HEARTBEAT_SCAN_USEC;
  for (unsigned i = 0; i < lg->next_to_start && !lg->fatal; i++) {
    struct node *nd = &lg->nodes[i];
    if (nd->state == NODE_STREAMING && now >= nd->next_heartbeat_usec) {
      nd->next_heartbeat_usec = now + nd->heartbeat_usec;
      (void)node_send_heartbeat(lg, nd);
    }
  }
}

/* With --rate: the changes due since the last tick, each to a random node
 * that has room in its window; a node's changes of one tick share frames. */
static void loop_generate(struct loadgen *lg, uint64_t now) {
  uint64_t due;
  if (!lg->generating || lg->gen_rate <= 0)
    return;
  due = (uint64_t)((double)(now - lg->gen_start_usec) * lg->gen_rate / 1e6);
  for (; lg->gen_due < due; lg->gen_due++) {
    struct node *pick = NULL;
    for (int t = 0; t < PICK_TRIES && !pick; t++) {
      struct node *nd = &lg->nodes[rnd_below(lg, lg->opt.nodes)];
      if (nd->state == NODE_STREAMING && !nd->reserved && node_room(lg, nd) > nd->want)
        pick = nd;
    }
    if (!pick) {
      lg->gen_skipped++;
      continue;
    }
    if (pick->want++ == 0) {
      pick->next = lg->touched;
      lg->touched = pick;
    }
  }
  while (lg->touched) {
    struct node *nd = lg->touched;
    unsigned n = nd->want;
    lg->touched = nd->next;
    nd->next = NULL;
    nd->want = 0;
    if (!lg->fatal)
      (void)node_send_random(lg, nd, n);
  }
}

static void loop_progress(struct loadgen *lg, uint64_t now) {
  if (now < lg->next_progress_usec)
    return;
  lg->next_progress_usec = now + PROGRESS_USEC;
  progress(lg,
           "%s: welcomed %u/%u, sent %" PRIu64 ", acked %" PRIu64 " (+%" PRIu64
           "), nodes behind %u, retries %" PRIu64,
           lg->phase, lg->n_welcomed, lg->opt.nodes, lg->sent_changes, lg->acked_changes,
           lg->acked_changes - lg->last_progress_acked, lg->n_behind, lg->connect_retries);
  lg->last_progress_acked = lg->acked_changes;
}

static void loop_once(struct loadgen *lg) {
  struct epoll_event ev[1024];
  int timeout = lg->generating && lg->gen_rate > 0 ? GEN_TICK_MSEC : IDLE_TICK_MSEC;
  int n = epoll_wait(lg->epfd, ev, (int)ELEMENTSOF(ev), timeout);

  if (n < 0 && errno != EINTR) {
    fail(lg, "epoll_wait: %s", strerror(errno));
    return;
  }
  for (int i = 0; i < n && !lg->fatal; i++) {
    enum io_kind *kind = ev[i].data.ptr;
    if (*kind == IO_NODE)
      node_on_event(lg, (struct node *)kind, ev[i].events);
    else
      http_on_event(lg, (struct http_req *)kind, ev[i].events);
  }
  uint64_t now = mst_now_monotonic_usec();
  if (!lg->fatal)
    loop_connect_more(lg, now);
  if (!lg->fatal)
    loop_heartbeats(lg, now);
  if (!lg->fatal)
    loop_generate(lg, now);
  loop_progress(lg, now);
}

/* Runs the loop until done(lg, ctx) holds (true) or the deadline passes or
 * the run fails (false). done may be NULL: run until the deadline. */
static bool loop_run_until(struct loadgen *lg, uint64_t deadline_usec,
                           bool (*done)(struct loadgen *, void *), void *ctx) {
  for (;;) {
    if (lg->fatal)
      return false;
    if (done && done(lg, ctx))
      return true;
    if (mst_now_monotonic_usec() >= deadline_usec)
      return !done;
    loop_once(lg);
  }
}

static bool all_ready(struct loadgen *lg, void *ctx) {
  return lg->n_welcomed == lg->opt.nodes && lg->n_behind == 0;
}

static bool all_welcomed(struct loadgen *lg, void *ctx) {
  return lg->n_welcomed == lg->opt.nodes;
}

static bool all_acked(struct loadgen *lg, void *ctx) {
  return lg->n_behind == 0;
}

static bool node_acked(struct loadgen *lg, void *ctx) {
  const struct node *nd = ctx;
  return nd->acked_seq == nd->last_seq;
}

static bool http_ended(struct loadgen *lg, void *ctx) {
  const struct http_req *q = ctx;
  return q->done || q->failed;
}

/* GET path, running the loop meanwhile. Returns 0, or -1 (logged). */
static int http_get_sync(struct loadgen *lg, const char *path, struct http_req *q) {
  http_start(lg, q, path);
  if (!loop_run_until(lg, mst_now_monotonic_usec() + 30 * USEC_PER_SEC, http_ended, q)) {
    if (!lg->fatal)
      fail(lg, "GET %s: no answer within 30 s", path);
    return -1;
  }
  if (q->failed) {
    fail(lg, "GET http://%s%s: %s", lg->opt.http_arg, path, q->error);
    return -1;
  }
  return 0;
}

/* --- phases -------------------------------------------------------------------------- */

static long rss_kb(pid_t pid) {
  char path[64], line[256];
  long kb = -1;
  FILE *f;
  snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
  f = fopen(path, "re");
  if (!f)
    return -1;
  while (fgets(line, sizeof(line), f))
    if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
      break;
  fclose(f);
  return kb;
}

static double ms_between(uint64_t a, uint64_t b) {
  return (double)(b - a) / 1000.0;
}

/* Connects every node and waits until each one's first changes are acked. */
static int phase_connect(struct loadgen *lg, json_t *out) {
  uint64_t t0 = mst_now_monotonic_usec(), t_welcomed, t_ready;

  lg->phase = "connect";
  progress(lg, "connecting %u nodes x %u components to %s (%u at a time)", lg->opt.nodes,
           lg->opt.components, lg->opt.stream_arg, lg->opt.connect_batch);
  if (!loop_run_until(lg, t0 + READY_TIMEOUT_USEC, all_welcomed, NULL)) {
    if (!lg->fatal)
      fail(lg, "only %u of %u nodes welcomed within %llu s", lg->n_welcomed, lg->opt.nodes,
           (unsigned long long)(READY_TIMEOUT_USEC / USEC_PER_SEC));
    return -1;
  }
  t_welcomed = mst_now_monotonic_usec();
  if (!loop_run_until(lg, t0 + READY_TIMEOUT_USEC, all_ready, NULL)) {
    if (!lg->fatal)
      fail(lg, "%u nodes still wait for the Ack of their first changes", lg->n_behind);
    return -1;
  }
  t_ready = mst_now_monotonic_usec();
  progress(lg, "all %u nodes welcomed in %.0f ms, first changes acked in %.0f ms", lg->opt.nodes,
           ms_between(t0, t_welcomed), ms_between(t0, t_ready));
  json_object_set_new(out, "connect_ms", json_real(ms_between(t0, t_welcomed)));
  json_object_set_new(out, "ready_ms", json_real(ms_between(t0, t_ready)));
  json_object_set_new(out, "initial_changes", json_integer((json_int_t)lg->acked_changes));
  json_object_set_new(out, "connect_retries", json_integer((json_int_t)lg->connect_retries));
  return 0;
}

/* The value of a metric line "name value" in Prometheus text, or -1. */
static double metric_value(const char *text, const char *name) {
  size_t nl = strlen(name);
  for (const char *p = strstr(text, name); p; p = strstr(p + 1, name))
    if ((p == text || p[-1] == '\n') && p[nl] == ' ')
      return strtod(p + nl + 1, NULL);
  return -1;
}

/* Reads muster_commit_batch_rows_{sum,count} and muster_commit_seconds_total
 * from /metrics. Returns 0, or -1 (logged). */
static int scrape_commits(struct loadgen *lg, double *ret_rows, double *ret_commits,
                          double *ret_seconds) {
  struct http_req q;
  int r = -1;

  if (http_get_sync(lg, "/metrics", &q) < 0)
    goto out;
  if (q.status != 200) {
    fail(lg, "GET /metrics: status %d", q.status);
    goto out;
  }
  *ret_rows = metric_value(q.body, "muster_commit_batch_rows_sum");
  *ret_commits = metric_value(q.body, "muster_commit_batch_rows_count");
  *ret_seconds = metric_value(q.body, "muster_commit_seconds_total");
  if (*ret_rows < 0 || *ret_commits < 0 || *ret_seconds < 0) {
    fail(lg, "GET /metrics: no muster_commit_batch_rows or muster_commit_seconds_total");
    goto out;
  }
  r = 0;
out:
  http_req_done(lg, &q);
  return r;
}

static int phase_hold(struct loadgen *lg, json_t *out) {
  lg->phase = "hold";
  progress(lg, "holding %u idle streams for %.1f s", lg->opt.nodes, lg->opt.duration);
  if (!loop_run_until(lg, mst_now_monotonic_usec() + (uint64_t)(lg->opt.duration * 1e6), NULL,
                      NULL))
    return -1;
  json_object_set_new(out, "held_s", json_real(lg->opt.duration));
  return 0;
}

static void start_generator(struct loadgen *lg, double rate) {
  lg->generating = true;
  lg->gen_rate = rate;
  lg->gen_start_usec = mst_now_monotonic_usec();
  lg->gen_due = 0;
  if (rate == 0)
    for (unsigned i = 0; i < lg->opt.nodes && !lg->fatal; i++)
      if (!lg->nodes[i].reserved)
        (void)node_send_random(lg, &lg->nodes[i], node_room(lg, &lg->nodes[i]));
}

static int phase_ingest(struct loadgen *lg, json_t *out) {
  uint64_t dur = (uint64_t)(lg->opt.duration * 1e6), warm = MST_MIN(USEC_PER_SEC, dur / 4);
  uint64_t sent0 = lg->sent_changes, acked0 = lg->acked_changes, t_start, t_end, t_drained;
  double rows0 = 0, commits0 = 0, secs0 = 0, rows1, commits1, secs1;

  if (lg->opt.metrics && scrape_commits(lg, &rows0, &commits0, &secs0) < 0)
    return -1;
  lg->phase = "ingest";
  progress(lg, "ingest for %.1f s at %s (window %u, batch %u)", lg->opt.duration,
           lg->opt.rate > 0 ? "the --rate" : "full speed", lg->opt.window, lg->opt.batch);
  start_generator(lg, lg->opt.rate);
  t_start = lg->gen_start_usec;
  lg->win_start_usec = t_start + warm;
  lg->win_end_usec = t_start + dur;
  lg->acked_in_window = 0;
  memset(&lg->ack_lat, 0, sizeof(lg->ack_lat));
  if (!loop_run_until(lg, t_start + dur, NULL, NULL))
    return -1;
  lg->generating = false;
  t_end = mst_now_monotonic_usec();
  lg->phase = "drain";
  if (!loop_run_until(lg, t_end + DRAIN_TIMEOUT_USEC, all_acked, NULL)) {
    if (!lg->fatal)
      fail(lg, "%u nodes still have unacked changes %llu s after the end", lg->n_behind,
           (unsigned long long)(DRAIN_TIMEOUT_USEC / USEC_PER_SEC));
    return -1;
  }
  t_drained = mst_now_monotonic_usec();
  double steady_s = (double)(lg->win_end_usec - lg->win_start_usec) / 1e6;
  json_object_set_new(out, "rate_target", json_real(lg->opt.rate));
  json_object_set_new(out, "window", json_integer(lg->opt.window));
  json_object_set_new(out, "unhealthy_pct", json_integer(lg->opt.unhealthy_pct));
  json_object_set_new(out, "batch", json_integer(lg->opt.batch));
  json_object_set_new(out, "duration_s", json_real(ms_between(t_start, t_end) / 1000.0));
  json_object_set_new(out, "sent", json_integer((json_int_t)(lg->sent_changes - sent0)));
  json_object_set_new(out, "acked", json_integer((json_int_t)(lg->acked_changes - acked0)));
  json_object_set_new(out, "rate_skipped", json_integer((json_int_t)lg->gen_skipped));
  json_object_set_new(out, "steady_s", json_real(steady_s));
  json_object_set_new(out, "acked_per_s", json_real((double)lg->acked_in_window / steady_s));
  json_object_set_new(out, "drain_ms", json_real(ms_between(t_end, t_drained)));
  json_object_set_new(out, "latency_ms", lat_json(&lg->ack_lat));
  if (lg->opt.metrics) {
    if (scrape_commits(lg, &rows1, &commits1, &secs1) < 0)
      return -1;
    double commits = commits1 - commits0;
    json_object_set_new(out, "aggregator_commits",
                        json_pack("{s:f, s:f, s:f}", "count", commits, "rows_per_commit",
                                  commits > 0 ? (rows1 - rows0) / commits : 0.0, "mean_commit_ms",
                                  commits > 0 ? (secs1 - secs0) * 1000.0 / commits : 0.0));
  }
  progress(lg, "ingest: %.0f changes acked/s over %.1f s; latency p50 %.2f ms, p99 %.2f ms",
           (double)lg->acked_in_window / steady_s, steady_s, lat_quantile_ms(&lg->ack_lat, 0.5),
           lat_quantile_ms(&lg->ack_lat, 0.99));
  return 0;
}

static int phase_storm(struct loadgen *lg, json_t *out) {
  uint64_t sent0 = lg->sent_changes, t_start, t_written, t_done;

  lg->phase = "settle";
  if (!loop_run_until(lg, mst_now_monotonic_usec() + USEC_PER_SEC, NULL, NULL))
    return -1;
  lg->phase = "storm";
  progress(lg, "storm: all %u components of all %u nodes flip at once", lg->opt.components,
           lg->opt.nodes);
  memset(&lg->ack_lat, 0, sizeof(lg->ack_lat));
  t_start = mst_now_monotonic_usec();
  lg->win_start_usec = t_start;
  lg->win_end_usec = UINT64_MAX;
  for (unsigned i = 0; i < lg->opt.nodes && !lg->fatal; i++) {
    struct node *nd = &lg->nodes[i];
    for (unsigned c = 0; c < lg->opt.components; c++)
      spec_add(lg, nd, c, c,
               nd->states[c] == MST_STATE_HEALTHY ? MST_STATE_UNHEALTHY : MST_STATE_HEALTHY);
    (void)node_send_changes(lg, nd, lg->opt.components);
  }
  t_written = mst_now_monotonic_usec();
  if (!loop_run_until(lg, t_start + READY_TIMEOUT_USEC, all_acked, NULL)) {
    if (!lg->fatal)
      fail(lg, "storm: %u nodes never got their Ack", lg->n_behind);
    return -1;
  }
  t_done = mst_now_monotonic_usec();
  json_object_set_new(out, "changes", json_integer((json_int_t)(lg->sent_changes - sent0)));
  json_object_set_new(out, "batch", json_integer(lg->opt.batch));
  json_object_set_new(out, "write_ms", json_real(ms_between(t_start, t_written)));
  json_object_set_new(out, "storm_ms", json_real(ms_between(t_start, t_done)));
  json_object_set_new(
      out, "changes_per_s",
      json_real((double)(lg->sent_changes - sent0) / (ms_between(t_start, t_done) / 1000.0)));
  json_object_set_new(out, "latency_ms", lat_json(&lg->ack_lat));
  progress(lg, "storm: %" PRIu64 " changes acked in %.0f ms", lg->sent_changes - sent0,
           ms_between(t_start, t_done));
  return 0;
}

/* Whether the node body shows component comp with state and output. */
static bool body_shows(const struct http_req *q, const char *comp, const char *state,
                       const char *output, char *why, size_t why_size) {
  json_error_t err;
  json_t *root = json_loadb(q->body, q->body_len, 0, &err), *comps, *c;
  size_t i;
  bool ok = false;

  if (!root) {
    snprintf(why, why_size, "body is not JSON: %s", err.text);
    return false;
  }
  comps = json_object_get(root, "components");
  snprintf(why, why_size, "component %s missing", comp);
  json_array_foreach(comps, i, c) {
    const char *name = json_string_value(json_object_get(c, "name"));
    if (!name || strcmp(name, comp) != 0)
      continue;
    const char *st = json_string_value(json_object_get(c, "state"));
    const char *o = json_string_value(json_object_get(c, "output"));
    ok = st && o && strcmp(st, state) == 0 && strcmp(o, output) == 0;
    if (!ok)
      snprintf(why, why_size, "%s is %s (output '%.60s'), want %s", comp, st ? st : "?",
               o ? o : "?", state);
    break;
  }
  json_decref(root);
  return ok;
}

enum sample_result { SAMPLE_OK, SAMPLE_ERROR, SAMPLE_EARLY, SAMPLE_FOLLOWER, SAMPLE_FATAL };

/* One freshness sample on node nd: read the node's index, park a blocking
 * read at it, let it settle, change one component, and time the change's
 * write to the read's complete answer, which must show the new state. */
static enum sample_result fresh_sample(struct loadgen *lg, struct node *nd, struct latency_hist *h,
                                       char *why, size_t why_size) {
  struct http_req plain = {.fd = -1}, parked = {.fd = -1};
  char id[64], path[160], expect_out[OUTPUT_MAX];
  unsigned comp = rnd_below(lg, lg->opt.components);
  enum sample_result res = SAMPLE_FATAL;
  uint8_t to;

  node_id(lg, nd, id, sizeof(id));
  /* Earlier changes of this node must have arrived, or they would wake the
   * read before the timed one. */
  if (!loop_run_until(lg, mst_now_monotonic_usec() + 10 * USEC_PER_SEC, node_acked, nd)) {
    if (!lg->fatal)
      fail(lg, "node %s: earlier changes not acked within 10 s", id);
    return SAMPLE_FATAL;
  }
  snprintf(path, sizeof(path), "/v1/nodes/%s", id);
  if (http_get_sync(lg, path, &plain) < 0)
    goto out;
  if (plain.status == 307) {
    fail(lg, "GET %s: 307: %s is a follower, not the leader", path, lg->opt.http_arg);
    goto out;
  }
  if (plain.status != 200 || !plain.have_index) {
    fail(lg, "GET %s: status %d%s", path, plain.status,
         plain.have_index ? "" : ", no X-Muster-Index");
    goto out;
  }
  snprintf(path, sizeof(path), "/v1/nodes/%s?index=%" PRIu64 "&wait=%ds", id, plain.muster_index,
           FRESH_WAIT_SEC);
  http_start(lg, &parked, path);
  if (!loop_run_until(lg, mst_now_monotonic_usec() + PARK_SETTLE_USEC, NULL, NULL))
    goto out;
  if (parked.done || parked.failed) {
    /* The node moved on its own between the two reads: no sample. */
    res = SAMPLE_EARLY;
    goto out;
  }

  to = nd->states[comp] == MST_STATE_HEALTHY ? MST_STATE_WARNING : MST_STATE_HEALTHY;
  spec_add(lg, nd, 0, comp, to);
  lg->fresh_node = nd;
  lg->fresh_seq = nd->last_seq + 1;
  lg->fresh_written_usec = 0;
  if (node_send_changes(lg, nd, 1) < 0)
    goto out;
  snprintf(expect_out, sizeof(expect_out), "%s", lg->scratch_out[0]);
  if (!loop_run_until(lg, mst_now_monotonic_usec() + (FRESH_WAIT_SEC + 5) * USEC_PER_SEC,
                      http_ended, &parked)) {
    if (!lg->fatal)
      fail(lg, "freshness: the parked read of %s never answered", id);
    goto out;
  }

  res = SAMPLE_ERROR;
  if (parked.failed)
    snprintf(why, why_size, "%s", parked.error);
  else if (parked.status == 307) {
    snprintf(why, why_size, "307: %s is a follower", lg->opt.http_arg);
    res = SAMPLE_FOLLOWER;
  } else if (parked.status != 200)
    snprintf(why, why_size, "status %d", parked.status);
  else if (!lg->fresh_written_usec)
    snprintf(why, why_size, "answered before the change was written");
  else if (body_shows(&parked, lg->comp_names[comp], state_word(to), expect_out, why, why_size)) {
    lat_add(h, parked.done_usec - lg->fresh_written_usec, 1);
    res = SAMPLE_OK;
  }
out:
  lg->fresh_node = NULL;
  http_req_done(lg, &plain);
  http_req_done(lg, &parked);
  return res;
}

static int phase_freshness(struct loadgen *lg, json_t *out) {
  struct latency_hist *h = calloc(1, sizeof(*h));
  unsigned ok = 0, errors = 0, early = 0, follower = 0;

  if (!h) {
    fail(lg, "out of memory");
    return -1;
  }
  if (lg->opt.rate > 0)
    start_generator(lg, lg->opt.rate);
  lg->phase = "freshness";
  progress(lg, "freshness: %u samples%s", lg->opt.samples,
           lg->opt.rate > 0 ? " with background ingest" : "");
  for (unsigned s = 0; s < lg->opt.samples;) {
    struct node *nd = &lg->nodes[rnd_below(lg, lg->opt.nodes)];
    char why[256] = "";

    nd->reserved = true;
    enum sample_result r = fresh_sample(lg, nd, h, why, sizeof(why));
    nd->reserved = false;
    if (r == SAMPLE_FATAL) {
      free(h);
      return -1;
    }
    if (r == SAMPLE_EARLY) {
      if (++early > 10 * lg->opt.samples + 10) {
        fail(lg, "freshness: parked reads keep returning before any change (%u times)", early);
        free(h);
        return -1;
      }
      continue;
    }
    if (r == SAMPLE_OK)
      ok++;
    else {
      errors++;
      follower += r == SAMPLE_FOLLOWER;
      progress(lg, "freshness sample %u: error: %s", s, why);
    }
    s++;
  }
  lg->generating = false;
  json_object_set_new(out, "samples", json_integer(lg->opt.samples));
  json_object_set_new(out, "ok", json_integer(ok));
  json_object_set_new(out, "errors", json_integer(errors));
  json_object_set_new(out, "follower_answers", json_integer(follower));
  json_object_set_new(out, "early_wakes", json_integer(early));
  json_object_set_new(out, "background_rate", json_real(lg->opt.rate));
  json_object_set_new(out, "latency_ms", lat_json(h));
  progress(lg, "freshness: %u ok, %u errors; p50 %.2f ms, p99 %.2f ms, max %.2f ms", ok, errors,
           lat_quantile_ms(h, 0.5), lat_quantile_ms(h, 0.99), (double)h->max_usec / 1000);
  free(h);
  return 0;
}

/* --- set-up ---------------------------------------------------------------------------- */

static int raise_nofile(unsigned need) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
    return -errno;
  if (rl.rlim_cur >= need)
    return 0;
  if (rl.rlim_max < need) {
    struct rlimit up = {.rlim_cur = need, .rlim_max = need};
    if (setrlimit(RLIMIT_NOFILE, &up) == 0)
      return 0; /* privileged: the hard limit could be raised too */
    fprintf(stderr,
            "muster-loadgen: %u nodes need about %u file descriptors, but the hard limit is %llu:"
            " raise it (ulimit -Hn)\n",
            need - 64, need, (unsigned long long)rl.rlim_max);
    return -EMFILE;
  }
  rl.rlim_cur = need;
  return setrlimit(RLIMIT_NOFILE, &rl) < 0 ? -errno : 0;
}

/* Writes a profile for --role with the component names the simulated nodes
 * use, in stages of ten, for the aggregator's profiles directory. */
static int write_profile(const struct options *o, char **names) {
  FILE *f = fopen(o->write_profile, "we");
  if (!f) {
    fprintf(stderr, "muster-loadgen: %s: %s\n", o->write_profile, strerror(errno));
    return -1;
  }
  fprintf(f,
          "; Written by muster-loadgen: %u components of simulated nodes. They never run:\n"
          "; the load generator reports their states.\n"
          "[profile]\nrole = %s\nstartup_grace = 0s\n\n",
          o->components, o->role);
  for (unsigned i = 0; i < o->components; i++)
    fprintf(f, "[component \"%s\"]\ncheck = exec\ncommand = true\n\n", names[i]);
  for (unsigned s = 0; s * 10 < o->components; s++) {
    fprintf(f, "[stage \"stage-%u\"]\ncomponents =", s + 1);
    for (unsigned i = s * 10; i < MST_MIN(o->components, s * 10 + 10); i++)
      fprintf(f, " %s", names[i]);
    fprintf(f, "\n\n");
  }
  if (fclose(f) != 0) {
    fprintf(stderr, "muster-loadgen: %s: %s\n", o->write_profile, strerror(errno));
    return -1;
  }
  return 0;
}

static void usage(FILE *f) {
  fprintf(f, "Usage: muster-loadgen --stream HOST:PORT [options]\n"
             "Simulates N agents x M components on the real agent protocol.\n\n"
             "  --stream HOST:PORT     the aggregator's agent stream (listen_stream)\n"
             "  --http HOST:PORT       its HTTP API (freshness, --metrics)\n"
             "  --mode MODE            connect | ingest | storm | freshness (default ingest)\n"
             "  --nodes N              simulated nodes (default 1000)\n"
             "  --components M         components per node (default 50, or the profile's)\n"
             "  --role ROLE            the nodes' role (default agent, or the profile's)\n"
             "  --profile PATH         take role, digest and component names from this profile\n"
             "  --write-profile PATH   write a profile for --role and --components, and exit\n"
             "  --token-file PATH      the agents' shared token\n"
             "  --rate R               changes/s over all nodes; 0: as fast as acked (default 0)\n"
             "  --window W             unacked changes per node at most (default 64)\n"
             "  --unhealthy PCT        failing components per node kept near PCT%% of M\n"
             "                         while changes are generated (default 2)\n"
             "  --batch K              changes per ChangeBatch frame at most (default 256)\n"
             "  --duration S           seconds of ingest, or of holding in connect (default 10)\n"
             "  --samples N            freshness samples (default 50)\n"
             "  --connect-batch C      connections waiting for a Welcome at most (default 256)\n"
             "  --node-prefix P        node ids are P-00000... (default lg)\n"
             "  --pid PID              the aggregator's pid: report its RSS (connect mode)\n"
             "  --metrics              ingest: read commit sizes from /metrics (needs --http)\n"
             "  --seed N               random seed (default: from the clock)\n"
             "  --json                 print one JSON object of results\n"
             "  --help\n");
}

static int parse_uint(const char *s, unsigned min, unsigned max, unsigned *ret) {
  char *end;
  unsigned long v;
  errno = 0;
  v = strtoul(s, &end, 10);
  if (errno || end == s || *end || v < min || v > max)
    return -EINVAL;
  *ret = (unsigned)v;
  return 0;
}

static int parse_double(const char *s, double min, double max, double *ret) {
  char *end;
  double v;
  errno = 0;
  v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= min && v <= max))
    return -EINVAL;
  *ret = v;
  return 0;
}

static int parse_options(int argc, char **argv, struct options *o) {
  enum {
    OPT_STREAM = 256,
    OPT_HTTP,
    OPT_NODES,
    OPT_COMPONENTS,
    OPT_TOKEN_FILE,
    OPT_ROLE,
    OPT_MODE,
    OPT_RATE,
    OPT_WINDOW,
    OPT_DURATION,
    OPT_BATCH,
    OPT_SAMPLES,
    OPT_JSON,
    OPT_PROFILE,
    OPT_WRITE_PROFILE,
    OPT_CONNECT_BATCH,
    OPT_NODE_PREFIX,
    OPT_PID,
    OPT_METRICS,
    OPT_SEED,
    OPT_UNHEALTHY,
    OPT_HELP,
  };
  static const struct option longopts[] = {
      {"stream", required_argument, NULL, OPT_STREAM},
      {"http", required_argument, NULL, OPT_HTTP},
      {"nodes", required_argument, NULL, OPT_NODES},
      {"components", required_argument, NULL, OPT_COMPONENTS},
      {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
      {"role", required_argument, NULL, OPT_ROLE},
      {"mode", required_argument, NULL, OPT_MODE},
      {"rate", required_argument, NULL, OPT_RATE},
      {"window", required_argument, NULL, OPT_WINDOW},
      {"duration", required_argument, NULL, OPT_DURATION},
      {"batch", required_argument, NULL, OPT_BATCH},
      {"samples", required_argument, NULL, OPT_SAMPLES},
      {"json", no_argument, NULL, OPT_JSON},
      {"profile", required_argument, NULL, OPT_PROFILE},
      {"write-profile", required_argument, NULL, OPT_WRITE_PROFILE},
      {"connect-batch", required_argument, NULL, OPT_CONNECT_BATCH},
      {"node-prefix", required_argument, NULL, OPT_NODE_PREFIX},
      {"pid", required_argument, NULL, OPT_PID},
      {"metrics", no_argument, NULL, OPT_METRICS},
      {"seed", required_argument, NULL, OPT_SEED},
      {"unhealthy", required_argument, NULL, OPT_UNHEALTHY},
      {"help", no_argument, NULL, OPT_HELP},
      {0},
  };
  unsigned u;
  int c;

  *o = (struct options){
      .nodes = 1000,
      .components = 50,
      .role = NULL,
      .mode = MODE_INGEST,
      .window = 64,
      .batch = 256,
      .duration = 10,
      .samples = 50,
      .connect_batch = 256,
      .unhealthy_pct = 2,
      .node_prefix = "lg",
  };
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    char addr_err[256];
    int r = 0;
    switch (c) {
    case OPT_STREAM:
      o->stream_arg = optarg;
      r = mst_addr_parse(optarg, 0, &o->stream, addr_err, sizeof(addr_err));
      break;
    case OPT_HTTP:
      o->http_arg = optarg;
      r = mst_addr_parse(optarg, 0, &o->http, addr_err, sizeof(addr_err));
      break;
    case OPT_NODES:
      r = parse_uint(optarg, 1, 1000000, &o->nodes);
      break;
    case OPT_COMPONENTS:
      r = parse_uint(optarg, 1, 10000, &o->components);
      o->components_set = true;
      break;
    case OPT_TOKEN_FILE:
      o->token_file = optarg;
      break;
    case OPT_ROLE:
      o->role = optarg;
      break;
    case OPT_MODE:
      r = -EINVAL;
      for (size_t i = 0; i < ELEMENTSOF(mode_names); i++)
        if (strcmp(optarg, mode_names[i]) == 0) {
          o->mode = (enum mode)i;
          r = 0;
        }
      break;
    case OPT_RATE:
      r = parse_double(optarg, 0, 1e9, &o->rate);
      break;
    case OPT_WINDOW:
      r = parse_uint(optarg, 1, 1000000, &o->window);
      break;
    case OPT_DURATION:
      r = parse_double(optarg, 0.1, 86400, &o->duration);
      break;
    case OPT_BATCH:
      r = parse_uint(optarg, 1, BATCH_MAX, &o->batch);
      break;
    case OPT_SAMPLES:
      r = parse_uint(optarg, 1, 1000000, &o->samples);
      break;
    case OPT_JSON:
      o->json = true;
      break;
    case OPT_PROFILE:
      o->profile_path = optarg;
      break;
    case OPT_WRITE_PROFILE:
      o->write_profile = optarg;
      break;
    case OPT_CONNECT_BATCH:
      r = parse_uint(optarg, 1, 100000, &o->connect_batch);
      break;
    case OPT_NODE_PREFIX:
      o->node_prefix = optarg;
      r = strlen(optarg) > 64 ? -EINVAL : 0;
      break;
    case OPT_PID:
      r = parse_uint(optarg, 1, INT32_MAX, &u);
      o->pid = (pid_t)u;
      break;
    case OPT_METRICS:
      o->metrics = true;
      break;
    case OPT_SEED: {
      char *end;
      o->seed = strtoull(optarg, &end, 0);
      r = *end || end == optarg ? -EINVAL : 0;
      break;
    }
    case OPT_UNHEALTHY:
      r = parse_uint(optarg, 0, 100, &o->unhealthy_pct);
      break;
    case OPT_HELP:
      usage(stdout);
      exit(0);
    default:
      usage(stderr);
      return -EINVAL;
    }
    if (r < 0) {
      fprintf(stderr, "muster-loadgen: invalid value '%s' for --%s\n", optarg,
              longopts[c - OPT_STREAM].name);
      return -EINVAL;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "muster-loadgen: unexpected argument '%s'\n", argv[optind]);
    return -EINVAL;
  }
  if (o->write_profile)
    return 0;
  if (!o->stream_arg) {
    fprintf(stderr, "muster-loadgen: --stream HOST:PORT is required\n");
    return -EINVAL;
  }
  if ((o->mode == MODE_FRESHNESS || o->metrics) && !o->http_arg) {
    fprintf(stderr, "muster-loadgen: %s needs --http HOST:PORT\n",
            o->metrics ? "--metrics" : "freshness");
    return -EINVAL;
  }
  return 0;
}

/* Component names and role: from --profile, or made up ("unit-000.service",
 * as long as typical systemd unit names). */
static int setup_components(struct loadgen *lg) {
  struct options *o = &lg->opt;
  struct mst_profile *p = NULL;

  if (o->profile_path) {
    struct mst_diag diag = {0};
    if (mst_profile_load(o->profile_path, &p, &diag) < 0) {
      mst_diag_print(&diag);
      mst_diag_done(&diag);
      fprintf(stderr, "muster-loadgen: cannot load profile %s\n", o->profile_path);
      return -1;
    }
    mst_diag_done(&diag);
    if (o->role && strcmp(o->role, p->role) != 0) {
      fprintf(stderr, "muster-loadgen: --role %s, but %s is the profile of role %s\n", o->role,
              o->profile_path, p->role);
      mst_profile_free(p);
      return -1;
    }
    if (!o->components_set)
      o->components = (unsigned)p->n_components;
    if (o->components > p->n_components || o->components == 0) {
      fprintf(stderr, "muster-loadgen: --components %u, but %s has %zu\n", o->components,
              o->profile_path, p->n_components);
      mst_profile_free(p);
      return -1;
    }
    snprintf(lg->profile_digest, sizeof(lg->profile_digest), "%s", p->digest);
  }
  lg->comp_names = calloc(o->components, sizeof(char *));
  if (!lg->comp_names)
    goto oom;
  for (unsigned i = 0; i < o->components; i++) {
    if (p)
      lg->comp_names[i] = strdup(p->components[i].name);
    else if (asprintf(&lg->comp_names[i], "unit-%03u.service", i) < 0)
      lg->comp_names[i] = NULL;
    if (!lg->comp_names[i])
      goto oom;
  }
  if (p) {
    if (!o->role) {
      lg->owned_role = strdup(p->role);
      o->role = lg->owned_role;
    }
    mst_profile_free(p);
    if (!o->role)
      goto oom;
  } else if (!o->role) {
    o->role = "agent";
  }
  return 0;
oom:
  mst_profile_free(p);
  fprintf(stderr, "muster-loadgen: out of memory\n");
  return -1;
}

static int setup_run(struct loadgen *lg) {
  unsigned scratch = MST_MAX(MST_MAX(lg->opt.batch, lg->opt.components), lg->opt.window);

  if (lg->opt.token_file) {
    int r = mst_token_read(lg->opt.token_file, &lg->token);
    if (r < 0) {
      fprintf(stderr, "muster-loadgen: cannot read token file %s: %s\n", lg->opt.token_file,
              r == -EPERM ? "readable by group or others" : strerror(-r));
      return -1;
    }
  }
  lg->unhealthy_target = lg->opt.unhealthy_pct * lg->opt.components / 100;
  if (raise_nofile(lg->opt.nodes + 64) < 0)
    return -1;
  lg->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (lg->epfd < 0) {
    fprintf(stderr, "muster-loadgen: epoll_create1: %s\n", strerror(errno));
    return -1;
  }
  lg->nodes = calloc(lg->opt.nodes, sizeof(*lg->nodes));
  lg->scratch = calloc(scratch, sizeof(*lg->scratch));
  lg->scratch_ptrs = calloc(scratch, sizeof(*lg->scratch_ptrs));
  lg->scratch_out = calloc(scratch, sizeof(*lg->scratch_out));
  lg->spec_comp = calloc(scratch, sizeof(*lg->spec_comp));
  lg->spec_from = calloc(scratch, sizeof(*lg->spec_from));
  lg->spec_to = calloc(scratch, sizeof(*lg->spec_to));
  if (!lg->nodes || !lg->scratch || !lg->scratch_ptrs || !lg->scratch_out || !lg->spec_comp ||
      !lg->spec_from || !lg->spec_to) {
    fprintf(stderr, "muster-loadgen: out of memory\n");
    return -1;
  }
  for (unsigned i = 0; i < lg->opt.nodes; i++) {
    struct node *nd = &lg->nodes[i];
    nd->kind = IO_NODE;
    nd->idx = i;
    nd->fd = -1;
    nd->states = malloc(lg->opt.components);
    if (!nd->states) {
      fprintf(stderr, "muster-loadgen: out of memory\n");
      return -1;
    }
    memset(nd->states, MST_STATE_STARTING, lg->opt.components);
    nd->n_unhealthy = lg->opt.components;
  }
  return 0;
}

static void teardown_run(struct loadgen *lg) {
  if (lg->nodes)
    for (unsigned i = 0; i < lg->opt.nodes; i++) {
      node_close(lg, &lg->nodes[i]);
      free(lg->nodes[i].frames);
      free(lg->nodes[i].states);
    }
  free(lg->nodes);
  if (lg->comp_names)
    for (unsigned i = 0; i < lg->opt.components; i++)
      free(lg->comp_names[i]);
  free(lg->comp_names);
  free(lg->scratch);
  free(lg->scratch_ptrs);
  free(lg->scratch_out);
  free(lg->spec_comp);
  free(lg->spec_from);
  free(lg->spec_to);
  free(lg->token);
  free(lg->owned_role);
  if (lg->epfd >= 0)
    close(lg->epfd);
}

/* Prints the results: the JSON object, or one "key: value" line each. */
static void print_results(json_t *res, bool as_json) {
  const char *key;
  json_t *v;

  if (as_json) {
    json_dumpf(res, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    return;
  }
  json_object_foreach(res, key, v) {
    if (json_is_object(v)) {
      const char *k2;
      json_t *v2;
      printf("%s:", key);
      json_object_foreach(v, k2, v2) {
        if (json_is_real(v2))
          printf(" %s %.3f", k2, json_real_value(v2));
        else if (json_is_integer(v2))
          printf(" %s %" JSON_INTEGER_FORMAT, k2, json_integer_value(v2));
      }
      printf("\n");
    } else if (json_is_real(v)) {
      printf("%s: %.3f\n", key, json_real_value(v));
    } else if (json_is_integer(v)) {
      printf("%s: %" JSON_INTEGER_FORMAT "\n", key, json_integer_value(v));
    } else if (json_is_string(v)) {
      printf("%s: %s\n", key, json_string_value(v));
    }
  }
}

int main(int argc, char **argv) {
  struct loadgen *lg = calloc(1, sizeof(*lg));
  json_t *res = NULL;
  long rss0 = -1, rss1 = -1, rss2 = -1;
  int r = -1;

  if (!lg)
    return 1;
  lg->epfd = -1;
  if (parse_options(argc, argv, &lg->opt) < 0 || setup_components(lg) < 0)
    goto out;
  if (lg->opt.write_profile) {
    r = write_profile(&lg->opt, lg->comp_names);
    goto out;
  }
  signal(SIGPIPE, SIG_IGN);
  lg->t0_usec = mst_now_monotonic_usec();
  lg->nonce = lg->opt.seed ? lg->opt.seed : (mst_now_realtime_usec() ^ ((uint64_t)getpid() << 40));
  lg->rng = lg->nonce | 1;
  if (setup_run(lg) < 0)
    goto out;

  res = json_pack("{s:s, s:s, s:s, s:I, s:I}", "mode", mode_names[lg->opt.mode], "stream",
                  lg->opt.stream_arg, "role", lg->opt.role, "nodes", (json_int_t)lg->opt.nodes,
                  "components", (json_int_t)lg->opt.components);
  if (!res)
    goto out;
  if (lg->opt.pid)
    rss0 = rss_kb(lg->opt.pid);
  if (phase_connect(lg, res) < 0)
    goto out;
  if (lg->opt.pid)
    rss1 = rss_kb(lg->opt.pid);
  switch (lg->opt.mode) {
  case MODE_CONNECT:
    r = phase_hold(lg, res);
    if (lg->opt.pid) {
      rss2 = rss_kb(lg->opt.pid);
      json_object_set_new(
          res, "aggregator_rss",
          json_pack("{s:I, s:I, s:I, s:f, s:f}", "before_kb", (json_int_t)rss0, "ready_kb",
                    (json_int_t)rss1, "end_kb", (json_int_t)rss2, "per_node_kb",
                    (double)(rss2 - rss0) / lg->opt.nodes, "per_component_b",
                    (double)(rss2 - rss0) * 1024.0 / ((double)lg->opt.nodes * lg->opt.components)));
    }
    break;
  case MODE_INGEST:
    r = phase_ingest(lg, res);
    break;
  case MODE_STORM:
    r = phase_storm(lg, res);
    break;
  case MODE_FRESHNESS:
    r = phase_freshness(lg, res);
    break;
  }
  if (r == 0 && !lg->fatal)
    print_results(res, lg->opt.json);

out:
  json_decref(res);
  teardown_run(lg);
  r = (r == 0 && !lg->fatal) ? 0 : 1;
  free(lg);
  return r;
}
