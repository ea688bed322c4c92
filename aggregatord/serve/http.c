/* The HTTP API server: libmicrohttpd with an internal thread pool (epoll,
 * with suspend/resume for the blocking reads), routing GET and HEAD
 * requests (the routes are listed once, in httpparse.h) to bodies
 * pre-rendered in the current view. The operator writes (PUT and DELETE
 * under /v1/nodes/, issue 19) are checked here and handed to the loop; see
 * "writes" below.
 *
 * Each request acquires the current view, hands MHD a response that points
 * into the view's body, and releases the view from the response's free
 * callback, when MHD is done sending. So the hot path takes no lock, copies
 * no body, and never waits for the loop thread. /metrics and DC/OS's
 * routes render their bodies from the view they hold (metrics.h, dcos.h).
 * Error bodies are static.
 *
 * A view that is not the leader's serves no data: every GET or HEAD under
 * /v1/ is answered 307 with a Location at the leader's HTTP address and the
 * request target exactly as the client sent it (query included), or 503
 * no_leader with Retry-After: 1 when no leader is known. /healthz and
 * /readyz answer locally and say which role this aggregator has.
 *
 * A leader's view is believed only while the leader's lease holds
 * (view_leads()): a leader paused past its lease (SIGSTOP, a VM freeze) may
 * have been replaced while its view still says "leader", and its loop has
 * not run yet to step down. So every answer that would come from a leader's
 * view checks the lease first, on the answering thread, just before the
 * response is queued: the clock against the election's atomic deadline, no
 * lock, no wait for the loop. Without it the answer is a follower's that
 * knows no leader: 503 lease_expired with Retry-After, /readyz 503, /healthz
 * "follower", muster_leader 0. Requests that arrived during the pause, and
 * parked reads resumed after it, are all answered after the check.
 *
 * HTTPS (when [tls] cert and key are set) is MHD's GnuTLS, with the
 * certificate handed over per handshake by a callback from a store that
 * aggr_http_tls_reload() swaps (see "TLS material" below), so a reload on
 * SIGHUP drops no connection and no parked read. With a bearer token every
 * route but /healthz, /readyz and the dashboard's own files (which hold no
 * data) answers 401 to a request without "Authorization: Bearer <token>";
 * the check is a constant-time compare, cheap enough for the hot path.
 *
 * Connections are capped in all (http_max_connections, fitted into the open
 * file limit by config.c) and per client address (..._per_address), so a
 * crowd from a few addresses leaves room for /healthz and everyone else.
 * libmicrohttpd's timeout only closes a connection that stays silent: one
 * byte every few seconds keeps it open for ever. So every connection is on
 * a waiting list, oldest first, from its start (or the end of its previous
 * request) until its whole request is in, and the loop's tick shuts down the
 * socket of any still waiting after http_timeout (aggr_http_expire()); MHD
 * then sees the end of the stream and closes it. Parked reads have their
 * request in: they are not on the list.
 *
 * Idle connections from many addresses could still fill the cap in all and
 * shut /healthz out until http_timeout. So the cap keeps room (per MHD
 * worker thread: MHD splits the cap among them, and each refuses what is
 * over its share): once a worker has more connections open than its share
 * less that room, each new one closes the worker's oldest connection still
 * waiting for its request (counted as
 * http_idle_evicted). A client that sends its request at once is never the
 * oldest; a crowd that sends nothing makes way for it.
 *
 * Threads: aggr_http_start/free and aggr_http_tls_reload on the main or loop
 * thread; everything else here runs on MHD's threads and reads only views,
 * the clock, the lease (aggr_election_lease_valid(), atomics) and (under a
 * short lock, once per connection) the TLS store. */
#include <netinet/in.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aggr.h"
#include "election.h"
#include "serve/dashboard.h"
#include "serve/dcos.h"
#include "serve/history.h"
#include "serve/http.h"
#include "serve/httpparse.h"
#include "serve/metrics.h"
#include "model/operator.h"
#include "mst/addr.h"
#include "mst/auth.h"
#include "mst/config.h"
#include "mst/diag.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/time.h"
#include "mst/tls.h"

#define HTTP_DEFAULT_THREADS 2
#define HTTP_MAX_THREADS     64
/* Per connection, caps the request line and headers (MHD answers 414/431). */
#define HTTP_CONNECTION_MEMORY (32 * 1024)

/* TLS 1.2 and 1.3 only. */
#define HTTP_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
/* Certificates in one chain file, and the bytes read from a PEM file. */
#define TLS_CHAIN_MAX 16
#define TLS_FILE_MAX  (1024 * 1024)
/* libmicrohttpd's messages: at most this many a second, then a count. */
#define MHD_LOG_BURST          5
#define HTTP_LOG_INTERVAL_USEC (1 * USEC_PER_SEC)

#define ERROR_JSON(code, message) "{\"error\":{\"code\":\"" code "\",\"message\":\"" message "\"}}"

static const char error_no_resource[] = ERROR_JSON("not_found", "no such resource");
static const char error_no_node[] = ERROR_JSON("not_found", "no such node");
static const char error_method[] =
    ERROR_JSON("method_not_allowed", "only GET and HEAD are allowed here");
static const char error_not_ready[] = ERROR_JSON("not_ready", "the aggregator is not ready");
static const char error_internal[] = ERROR_JSON("internal", "out of memory");
static const char error_history[] =
    ERROR_JSON("internal", "reading the history database failed (the aggregator's log says why)");
static const char error_busy[] =
    ERROR_JSON("busy", "too many blocking reads are waiting (http_max_parked); retry");
static const char error_url[] =
    ERROR_JSON("uri_too_long", "the request target is longer than http_max_url");
static const char error_no_leader[] =
    ERROR_JSON("no_leader", "this aggregator is a follower and no leader is known; retry later");
static const char error_no_leader_http[] =
    ERROR_JSON("no_leader", "this aggregator is a follower and the leader's HTTP address is "
                            "unknown; retry later");
static const char error_no_token[] =
    ERROR_JSON("unauthorized", "this API needs a bearer token: send Authorization: Bearer <token> "
                               "(the token in the aggregator's http_token_file)");
static const char error_bad_token[] = ERROR_JSON("unauthorized", "the bearer token was refused");
static const char body_healthz_leader[] = "{\"status\":\"ok\",\"role\":\"leader\"}";
static const char body_healthz_follower[] = "{\"status\":\"ok\",\"role\":\"follower\"}";
static const char body_healthz_none[] = "{\"status\":\"ok\",\"role\":\"none\"}";
static const char body_not_started[] = "{\"ready\":false,\"role\":\"none\",\"leader\":null}";
#define LEASE_EXPIRED "leadership lease expired; an election may be under way"
static const char error_lease_expired[] = ERROR_JSON("lease_expired", LEASE_EXPIRED);
static const char body_readyz_lease_expired[] =
    "{\"ready\":false,\"role\":\"follower\",\"leader\":null,\"reason\":\"" LEASE_EXPIRED "\"}";

static const char error_bad_after[] =
    "{\"error\":{\"code\":\"bad_parameter\",\"message\":\"after must be a row "
    "id\"}}";
static const char error_bad_limit[] =
    "{\"error\":{\"code\":\"bad_parameter\",\"message\":\"limit must be 1 to "
    "10000\"}}";

/* A blocking read parked until its resource's index moves or its wait ends.
 * Guarded by aggr_http.lock. */
struct waiter {
  struct waiter *prev, *next;
  struct MHD_Connection *c;
  struct request *rq;
  int route;
  uint64_t index;    /* the index the client has seen */
  uint64_t deadline; /* monotonic usec */
  char node[];       /* for AGGR_HTTP_ROUTE_NODE */
};

/* One certificate chain and its key, as GnuTLS takes them from the
 * certificate callback. A generation serves the handshakes of the
 * connections accepted while it was current (and of older ones still in
 * their handshake), so it is freed once it is retired and no connection of
 * it or of an older generation is open. Guarded by aggr_http.tls_lock. */
struct tls_material {
  gnutls_pcert_st pcerts[TLS_CHAIN_MAX];
  unsigned n_pcerts;
  gnutls_privkey_t key;
  size_t conns;               /* open connections accepted while it was current */
  struct tls_material *newer; /* the next generation, NULL for the current one */
};

/* What the server keeps of a connection (MHD's socket context), from MHD's
 * start notification to its close notification. */
struct http_conn {
  struct tls_material *tls; /* the generation it counts on; NULL for plain HTTP */
  int fd;
  uint64_t since_usec; /* monotonic: when it began waiting for its request */
  bool waiting;        /* on the waiting list: its request is not all in */
  bool evicted;        /* closed to make room: no longer counted */
  unsigned worker;     /* the index of MHD's worker thread serving it */
  struct http_conn *prev, *next;
};

struct aggr_http {
  struct MHD_Daemon *daemon;
  struct aggr_views *views;
  const struct aggr_election *fence; /* whose lease a leader's view needs; NULL standalone */
  uint16_t port;
  char *token;       /* the bearer token every data route needs, or NULL */
  char *admin_token; /* the bearer token writes need, or NULL (issue 19) */
  /* Writes handed to the loop (aggr_http_take_writes), oldest first. */
  pthread_mutex_t write_lock; /* never held across I/O */
  struct aggr_http_write *writes_head, *writes_tail;
  int writes_efd;
  /* HTTPS: the files, and the generations from the oldest still in use to
   * the current one. */
  char *cert_file, *key_file;
  pthread_mutex_t tls_lock; /* never held across I/O */
  struct tls_material *tls_oldest, *tls_current;
  pthread_mutex_t lock; /* guards the parked list; never held across I/O */
  struct waiter *parked;
  size_t n_parked;
  struct aggr_http_limits limits;
  /* Connections whose request is not all in, oldest first. The lock is
   * never held across more than a shutdown(). */
  pthread_mutex_t conn_lock;
  struct http_conn *waiting_head, *waiting_tail;
  size_t n_waiting; /* on the list */
  /* MHD splits http_max_connections among its worker threads, each of which
   * refuses what is over its share: so room is kept per worker. */
  const struct MHD_Daemon *workers[HTTP_MAX_THREADS];
  size_t worker_conns[HTTP_MAX_THREADS]; /* open, from MHD's start notification to its close */
  unsigned n_workers;
  size_t evict_above;     /* a worker with more open: a new one closes its oldest waiting */
  uint64_t evicted_held;  /* closed so since the last message */
  uint64_t late_log_usec; /* monotonic: when late requests may be logged next */
  uint64_t late_held;     /* closed since the last message */
  /* libmicrohttpd's own messages (on_mhd_log), under conn_lock too. */
  uint64_t mhd_log_window_usec; /* monotonic: the current second began */
  unsigned mhd_log_lines;       /* logged in it */
  uint64_t mhd_log_held;        /* held back since the last line */
};

/* --- responses ------------------------------------------------------------ */

struct headers {
  bool indexed; /* /v1/...: carries X-Muster-Index */
  uint64_t index;
  bool etag;
  bool weak; /* the bytes may differ under one index (live fields) */
  bool allow;
  bool retry_after;     /* Retry-After: 1 */
  bool authenticate;    /* WWW-Authenticate: Bearer (a 401) */
  const char *location; /* Location, or NULL */
  bool cors_any;        /* Access-Control-Allow-Origin: * (/readyz, no data) */
};

static bool add_headers(struct MHD_Response *r, const struct headers *h) {
  char buf[48];
  if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") != MHD_YES)
    return false;
  if (h->indexed) {
    snprintf(buf, sizeof(buf), "%" PRIu64, h->index);
    if (MHD_add_response_header(r, "X-Muster-Index", buf) != MHD_YES)
      return false;
  }
  if (h->etag) {
    snprintf(buf, sizeof(buf), "%s\"%" PRIu64 "\"", h->weak ? "W/" : "", h->index);
    if (MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, buf) != MHD_YES)
      return false;
  }
  if (h->allow && MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD") != MHD_YES)
    return false;
  if (h->retry_after && MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1") != MHD_YES)
    return false;
  if (h->location && MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, h->location) != MHD_YES)
    return false;
  if (h->cors_any && MHD_add_response_header(r, "Access-Control-Allow-Origin", "*") != MHD_YES)
    return false;
  if (h->authenticate && MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                                 "Bearer realm=\"muster\"") != MHD_YES)
    return false;
  return true;
}

/* The route of the request this thread is answering, for the metrics. */
static _Thread_local enum aggr_http_route current_route = AGGR_HTTP_ROUTE_NONE;

/* Queues r (which it consumes) with headers h. */
static enum MHD_Result queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *r,
                             const struct headers *h) {
  if (!r)
    return MHD_NO;
  aggr_metrics_http(current_route, status);
  enum MHD_Result ret = add_headers(r, h) ? MHD_queue_response(c, status, r) : MHD_NO;
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result queue_static(struct MHD_Connection *c, unsigned status, const char *body,
                                    const struct headers *h) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
  return queue(c, status, r, h);
}

static void release_view(void *cls) {
  aggr_view_release(cls);
}

/* Serves len bytes at data, which v holds, and takes over the caller's
 * reference on v: it is released when MHD frees the response. */
static enum MHD_Result queue_held(struct MHD_Connection *c, unsigned status, struct aggr_view *v,
                                  const char *data, size_t len, const struct headers *h) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer_with_free_callback_cls(len, (void *)data, release_view, v);
  if (!r) {
    /* MHD calls the free callback only for a response it created. */
    aggr_view_release(v);
    return MHD_NO;
  }
  return queue(c, status, r, h);
}

/* Serves b, a body of v, and takes over the caller's reference on v: it is
 * released when MHD frees the response. */
static enum MHD_Result queue_body(struct MHD_Connection *c, struct aggr_view *v,
                                  const struct aggr_body *b) {
  struct headers h = {.indexed = true, .index = b->index, .etag = true};
  struct MHD_Response *r;
  char *live;
  size_t live_len;

  int k = aggr_body_live_copy(b, mst_now_realtime_usec(), &live, &live_len);
  if (k < 0) {
    aggr_view_release(v);
    h.etag = false;
    return queue_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR, error_internal, &h);
  }
  if (k > 0) {
    /* The copy stands alone: the view can go now. */
    aggr_view_release(v);
    h.weak = true;
    r = MHD_create_response_from_buffer_with_free_callback(live_len, live, free);
    if (!r)
      free(live);
    return queue(c, MHD_HTTP_OK, r, &h);
  }
  return queue_held(c, MHD_HTTP_OK, v, b->data, b->len, &h);
}

/* --- routes --------------------------------------------------------------- */

/* Whether v may be answered from as the leader's, now: it says this
 * aggregator leads, and the lease still holds (a paused leader's view goes
 * on saying "leader" until its loop runs). Any thread; takes no lock. */
static bool view_leads(const struct aggr_http *h, const struct aggr_view *v) {
  return v && v->is_leader && aggr_election_lease_valid(h->fence);
}

static enum MHD_Result serve_healthz(struct aggr_http *h, struct MHD_Connection *c) {
  struct headers none = {0};
  struct aggr_view *v = aggr_view_acquire(h->views);
  const char *body = !v                 ? body_healthz_none
                     : view_leads(h, v) ? body_healthz_leader
                                        : body_healthz_follower;
  aggr_view_release(v);
  return queue_static(c, MHD_HTTP_OK, body, &none);
}

/* /readyz holds no data and needs no token: any page may read it, so that a
 * dashboard whose aggregator died can ask the others where the leader is. */
static enum MHD_Result serve_readyz(struct aggr_http *h, struct MHD_Connection *c) {
  struct headers none = {.cors_any = true};
  struct aggr_view *v = aggr_view_acquire(h->views);
  if (!v)
    return queue_static(c, MHD_HTTP_SERVICE_UNAVAILABLE, body_not_started, &none);
  if (v->is_leader && !view_leads(h, v)) {
    aggr_view_release(v);
    return queue_static(c, MHD_HTTP_SERVICE_UNAVAILABLE, body_readyz_lease_expired, &none);
  }
  bool ready = v->ready && !v->storage_failing;
  return queue_held(c, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, v, v->readyz,
                    v->readyz_len, &none);
}

/* A follower's answer to a data request: 307 to the leader with target (the
 * request target as sent; NULL when it could not be kept), or 503 when no
 * leader is known. Also the answer from a leader's view whose lease ran out
 * (view_leads()): 503 lease_expired, as it knows no newer leader. Takes over
 * the caller's reference on v. */
static enum MHD_Result serve_follower(struct aggr_http *h, struct MHD_Connection *c,
                                      struct aggr_view *v, const char *target) {
  /* The leader serves as this aggregator does: the cluster shares [tls]. */
  const char *scheme = h->cert_file ? "https://" : "http://";
  struct headers hd = {0};
  enum MHD_Result ret;

  if (v->is_leader) {
    atomic_fetch_add(&aggr_counters.http_lease_expired, 1);
    hd.retry_after = true;
    ret = queue_static(c, MHD_HTTP_SERVICE_UNAVAILABLE, error_lease_expired, &hd);
  } else if (!v->not_leader) {
    hd.retry_after = true;
    ret = queue_static(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                       v->have_leader ? error_no_leader_http : error_no_leader, &hd);
  } else if (!target) {
    ret = queue_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR, error_internal, &hd);
  } else {
    size_t len = strlen(scheme) + strlen(v->leader_http) + strlen(target) + 1;
    _cleanup_free_ char *location = malloc(len);
    if (location) {
      snprintf(location, len, "%s%s%s", scheme, v->leader_http, target);
      hd.location = location;
      ret = queue(
          c, MHD_HTTP_TEMPORARY_REDIRECT,
          MHD_create_response_from_buffer(v->not_leader_len, v->not_leader, MHD_RESPMEM_MUST_COPY),
          &hd);
    } else
      ret = queue_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR, error_internal, &hd);
  }
  aggr_view_release(v);
  return ret;
}

/* GET /v1/internal/replicate?after=ID&limit=N: rows of the leader's history
 * for a follower's warm copy (see replica.c), read on this HTTP thread's own
 * read-only connection. */
static enum MHD_Result serve_replicate(struct MHD_Connection *c, bool verdicts) {
  struct headers none = {0};
  const char *after_s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after");
  const char *limit_s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
  uint64_t after = 0;
  unsigned limit = 1000;
  char *body = NULL;
  size_t len = 0;

  if (!aggr_http_replicate_after_parse(after_s, &after))
    return queue_static(c, MHD_HTTP_BAD_REQUEST, error_bad_after, &none);
  if (!aggr_http_replicate_limit_parse(limit_s, &limit))
    return queue_static(c, MHD_HTTP_BAD_REQUEST, error_bad_limit, &none);
  if ((verdicts ? aggr_history_replicate_verdicts_json(after, limit, &body, &len)
                : aggr_history_replicate_json(after, limit, &body, &len)) < 0)
    return queue_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR, error_internal, &none);
  return queue(c, MHD_HTTP_OK, MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE),
               &none);
}

/* --- the request deadline --------------------------------------------------
 */

/* Puts hc at the tail of the waiting list, from now. Called with conn_lock
 * held. */
static void conn_wait(struct aggr_http *h, struct http_conn *hc) {
  hc->since_usec = mst_now_monotonic_usec();
  hc->waiting = true;
  h->n_waiting++;
  hc->next = NULL;
  hc->prev = h->waiting_tail;
  if (h->waiting_tail)
    h->waiting_tail->next = hc;
  else
    h->waiting_head = hc;
  h->waiting_tail = hc;
}

/* Takes hc off the waiting list, if it is on it. Called with conn_lock
 * held. */
static void conn_unwait(struct aggr_http *h, struct http_conn *hc) {
  if (!hc->waiting)
    return;
  if (hc->prev)
    hc->prev->next = hc->next;
  else
    h->waiting_head = hc->next;
  if (hc->next)
    hc->next->prev = hc->prev;
  else
    h->waiting_tail = hc->prev;
  hc->prev = hc->next = NULL;
  hc->waiting = false;
  h->n_waiting--;
}

/* The index of c's worker thread (its MHD daemon). Called with conn_lock
 * held. */
static unsigned worker_of(struct aggr_http *h, struct MHD_Connection *c) {
  const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_DAEMON);
  const struct MHD_Daemon *d = info ? info->daemon : NULL;
  for (unsigned i = 0; i < h->n_workers; i++)
    if (h->workers[i] == d)
      return i;
  if (h->n_workers < HTTP_MAX_THREADS) {
    h->workers[h->n_workers] = d;
    return h->n_workers++;
  }
  return 0; /* cannot happen: no more workers than threads */
}

static struct http_conn *conn_of(struct MHD_Connection *c) {
  const union MHD_ConnectionInfo *info =
      MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return info ? info->socket_context : NULL;
}

/* c's whole request is in (its answer or its parking follows): its
 * deadline no longer applies. */
static void request_arrived(struct aggr_http *h, struct MHD_Connection *c) {
  struct http_conn *hc = conn_of(c);
  if (!hc)
    return;
  pthread_mutex_lock(&h->conn_lock);
  conn_unwait(h, hc);
  pthread_mutex_unlock(&h->conn_lock);
}

/* c's request is answered: its next request (keep-alive) must arrive within
 * the timeout from now. */
static void request_ended(struct aggr_http *h, struct MHD_Connection *c) {
  struct http_conn *hc = conn_of(c);
  if (!hc)
    return;
  pthread_mutex_lock(&h->conn_lock);
  conn_unwait(h, hc);
  if (!hc->evicted) /* closing already */
    conn_wait(h, hc);
  pthread_mutex_unlock(&h->conn_lock);
}

/* Shuts down the sockets of the connections whose request did not arrive
 * within the timeout. MHD frees a connection (and closes its socket) only
 * after its close notification, which takes conn_lock: so a socket on the
 * list is still the connection's own. Loop thread. */
static void reap_late_requests(struct aggr_http *h) {
  uint64_t now = mst_now_monotonic_usec(), timeout = h->limits.timeout_sec * USEC_PER_SEC;
  uint64_t closed = 0;

  pthread_mutex_lock(&h->conn_lock);
  while (h->waiting_head && h->waiting_head->since_usec + timeout <= now) {
    struct http_conn *hc = h->waiting_head;
    conn_unwait(h, hc);
    (void)shutdown(hc->fd, SHUT_RDWR);
    closed++;
  }
  h->late_held += closed;
  if ((h->late_held > 0 || h->evicted_held > 0) && now >= h->late_log_usec) {
    if (h->late_held > 0)
      log_warning("HTTP: closed %llu connections whose request did not all arrive within "
                  "http_timeout (%u s)",
                  (unsigned long long)h->late_held, h->limits.timeout_sec);
    if (h->evicted_held > 0)
      log_warning("HTTP: closed the %llu oldest connections still waiting for their request, "
                  "to make room for new ones (near http_max_connections, %zu waiting)",
                  (unsigned long long)h->evicted_held, h->n_waiting);
    h->late_held = h->evicted_held = 0;
    h->late_log_usec = now + HTTP_LOG_INTERVAL_USEC;
  }
  pthread_mutex_unlock(&h->conn_lock);
  while (closed-- > 0)
    aggr_metrics_limit(AGGR_LIMIT_HTTP_TIMEOUT);
}

/* --- per-request state ---------------------------------------------------- */

/* A follower's redirect needs the request target as the client sent it,
 * while the handler gets the path decoded and the query parsed apart. The
 * URI-log callback sees the raw target first; it is kept only when it can
 * differ from the path the handler gets (it has a query or an escape), so
 * the hot path allocates nothing. *con_cls is one of the marks below, or a
 * struct request; either way it tells the handler's first call for a
 * request from the later ones. */
struct request {
  bool seen;                 /* the handler was called for it */
  bool woken;                /* it was parked and has been resumed: answer now */
  struct waiter *parked;     /* while suspended in a blocking read */
  struct write_state *write; /* a PUT or DELETE of operator state (issue 19) */
  char target[];             /* the raw request target */
};

static char mark_fresh, mark_seen;           /* the target is the handler's url */
static char mark_lost_fresh, mark_lost_seen; /* keeping the target ran out of memory */

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c) {
  if (!strpbrk(uri, "?%"))
    return &mark_fresh;
  size_t len = strlen(uri);
  struct request *rq = malloc(sizeof(*rq) + len + 1);
  if (!rq)
    return &mark_lost_fresh;
  rq->seen = false;
  rq->woken = false;
  rq->parked = NULL;
  rq->write = NULL;
  memcpy(rq->target, uri, len + 1);
  return rq;
}

static bool is_mark(const void *p) {
  return p == &mark_fresh || p == &mark_seen || p == &mark_lost_fresh || p == &mark_lost_seen;
}

/* --- query parameters ------------------------------------------------------
 */

static enum MHD_Result query_check_one(void *cls, enum MHD_ValueKind kind, const char *key,
                                       const char *value) {
  return aggr_http_query_check_param(cls, key, value) ? MHD_YES : MHD_NO;
}

static const char *query_lookup(void *user, const char *key) {
  return MHD_lookup_connection_value(user, MHD_GET_ARGUMENT_KIND, key);
}

/* Checks the query of a /v1/ read (httpparse.c): only the route's
 * parameters, each well-formed. Returns false with q->error set. */
static bool query_parse_blocking(struct MHD_Connection *c, struct aggr_http_query *q) {
  MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, query_check_one, q);
  return aggr_http_query_parse_blocking(q, query_lookup, c);
}

/* An error body {"error":{"code","message"}} with a message made at run time. */
static enum MHD_Result queue_error(struct MHD_Connection *c, unsigned status, const char *code,
                                   const char *message, struct headers *hd) {
  char *body = NULL;
  json_t *j = json_pack("{s{ssss}}", "error", "code", code, "message", message);
  if (j)
    body = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  if (!body)
    return queue_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR, error_internal, hd);
  return queue(c, status,
               MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE), hd);
}

static enum MHD_Result queue_bad_parameter(struct MHD_Connection *c, const char *message) {
  struct headers none = {0};
  return queue_error(c, MHD_HTTP_BAD_REQUEST, "bad_parameter", message, &none);
}

/* --- blocking reads ----------------------------------------------------------
 */

/* The index of the resource a route names, in view v. */
static uint64_t resource_index(const struct aggr_view *v, int route, const char *node) {
  const struct aggr_view_node *n;
  if (route == AGGR_HTTP_ROUTE_HEALTH)
    return v->health->index;
  if (route == AGGR_HTTP_ROUTE_HISTORY || route == AGGR_HTTP_ROUTE_HISTORY_CLUSTER ||
      route == AGGR_HTTP_ROUTE_HISTORY_NODES)
    return v->index; /* history grows with every published change */
  if (route == AGGR_HTTP_ROUTE_NODE && (n = aggr_view_find_node(v, node)))
    return n->detail->index;
  return v->nodes->index; /* the list, or a node not (yet) in it */
}

/* Takes w off the parked list. Called with h->lock held. */
static void waiter_unlink(struct aggr_http *h, struct waiter *w) {
  if (w->prev)
    w->prev->next = w->next;
  else
    h->parked = w->next;
  if (w->next)
    w->next->prev = w->prev;
  h->n_parked--;
  atomic_fetch_sub(&aggr_counters.parked_reads, 1);
}

/* Resumes w's connection and forgets w. Called with h->lock held. */
static void waiter_wake(struct aggr_http *h, struct waiter *w) {
  waiter_unlink(h, w);
  w->rq->parked = NULL;
  w->rq->woken = true;
  MHD_resume_connection(w->c);
  free(w);
}

/* Puts w (its c, rq and deadline set) on the parked list and suspends its
 * connection. Called with h->lock held. */
static void waiter_park(struct aggr_http *h, struct waiter *w) {
  w->next = h->parked;
  if (h->parked)
    h->parked->prev = w;
  h->parked = w;
  h->n_parked++;
  atomic_fetch_add(&aggr_counters.parked_reads, 1);
  w->rq->parked = w;
  MHD_suspend_connection(w->c);
}

/* Parks the request until the resource moves past q->index or the wait
 * ends. Returns true when parked; false when it should be answered now
 * (the index already moved, or the request cannot be parked). Sets *full
 * when http_max_parked reads wait already. */
static bool park(struct aggr_http *h, struct MHD_Connection *c, void **con_cls, int route,
                 const char *node, const struct aggr_http_query *q, bool *full) {
  struct request *rq = *con_cls;
  struct aggr_view *v;
  struct waiter *w;
  uint64_t wait = q->wait_usec, now = mst_now_monotonic_usec();
  bool parked = false;

  if (is_mark(rq) || rq->woken)
    return false; /* resumed already, or no per-request state to park with */
  /* Consul's stagger: up to wait/16 more, so parked readers do not all
   * return in the same instant. */
  if (wait >= 16)
    wait += (uint64_t)random() % (wait / 16);
  pthread_mutex_lock(&h->lock);
  /* Compare under the lock against the newest view: a publish after this
   * point runs aggr_http_wake() after it, and finds this waiter. */
  v = aggr_view_acquire(h->views);
  bool same = view_leads(h, v) && v->ready && resource_index(v, route, node) == q->index;
  if (same && h->n_parked >= h->limits.max_parked) {
    *full = true;
  } else if (same) {
    size_t nl = node ? strlen(node) : 0;
    w = calloc(1, sizeof(*w) + nl + 1);
    if (w) {
      w->c = c;
      w->rq = rq;
      w->route = route;
      w->index = q->index;
      w->deadline = now + wait;
      if (node)
        memcpy(w->node, node, nl + 1);
      waiter_park(h, w);
      parked = true;
    }
  }
  aggr_view_release(v);
  pthread_mutex_unlock(&h->lock);
  return parked;
}

void aggr_http_wake(struct aggr_http *h) {
  struct aggr_view *v;
  if (!h)
    return;
  pthread_mutex_lock(&h->lock);
  if (h->n_parked > 0 && (v = aggr_view_acquire(h->views))) {
    for (struct waiter *w = h->parked, *next; w; w = next) {
      next = w->next;
      /* Wake only for a change of that resource; also when the index went
       * backwards, or this aggregator stopped leading (the reader must go
       * to the new leader). */
      if (w->route == AGGR_HTTP_ROUTE_DCOS
              ? v->is_leader || v->not_leader != NULL
              : !view_leads(h, v) || resource_index(v, w->route, w->node) != w->index)
        waiter_wake(h, w);
    }
    aggr_view_release(v);
  }
  pthread_mutex_unlock(&h->lock);
}

void aggr_http_expire(struct aggr_http *h) {
  uint64_t now = mst_now_monotonic_usec();
  if (!h)
    return;
  /* A lease run out ends every wait: the readers learn it at once. */
  bool fenced = !aggr_election_lease_valid(h->fence);
  pthread_mutex_lock(&h->lock);
  for (struct waiter *w = h->parked, *next; w; w = next) {
    next = w->next;
    /* A DC/OS read waiting for a leader waits on a follower: no lease. */
    if (w->deadline <= now || (fenced && w->route != AGGR_HTTP_ROUTE_DCOS))
      waiter_wake(h, w);
  }
  pthread_mutex_unlock(&h->lock);
  reap_late_requests(h);
}

size_t aggr_http_parked(struct aggr_http *h) {
  size_t n;
  pthread_mutex_lock(&h->lock);
  n = h->n_parked;
  pthread_mutex_unlock(&h->lock);
  return n;
}

/* If-None-Match naming the current ETag (weak or strong, or *) → 304. */
static bool not_modified(struct MHD_Connection *c, uint64_t index) {
  const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
  return aggr_http_etag_matches(inm, index);
}

static enum MHD_Result queue_not_modified(struct MHD_Connection *c, uint64_t index) {
  struct headers hd = {.indexed = true, .index = index, .etag = true};
  return queue(c, MHD_HTTP_NOT_MODIFIED,
               MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT), &hd);
}

/* GET /v1/history and /v1/history/cluster: filters, limit, order and an
 * opaque cursor, each checked; the page is read on this thread's read-only
 * connection. Takes over the caller's reference on v. While the storage
 * fails (view.h), a read that fails says why, with 503; once the database
 * file is gone, nothing is read from it: what it holds is not what a
 * restart will find. */
static enum MHD_Result serve_history(struct MHD_Connection *c, struct aggr_view *v,
                                     enum aggr_history_table table, uint64_t index) {
  struct aggr_history_query hq;
  struct headers hd = {.indexed = true, .index = index};
  char msg[160];
  char *body = NULL;
  size_t len = 0;
  int r;

  if (aggr_http_history_parse(&hq, table, query_lookup, c, msg, sizeof(msg)) < 0) {
    aggr_view_release(v);
    return queue_bad_parameter(c, msg);
  }
  r = v->storage_lost                 ? -ENOENT
      : table == AGGR_HISTORY_CLUSTER ? aggr_history_cluster_json(&hq, &body, &len)
      : table == AGGR_HISTORY_NODES   ? aggr_history_nodes_json(&hq, &body, &len)
                                      : aggr_history_changes_json(&hq, &body, &len);
  if (r < 0 && v->storage_failing) {
    _cleanup_free_ char *why = NULL;
    hd.retry_after = !v->storage_lost; /* a lost file waits for a restart */
    if (asprintf(&why, "the history database is failing: %s", v->storage_failing) < 0)
      why = NULL;
    aggr_view_release(v);
    return why ? queue_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "storage_failing", why, &hd)
               : queue_static(c, MHD_HTTP_SERVICE_UNAVAILABLE, error_not_ready, &hd);
  }
  aggr_view_release(v);
  if (r < 0)
    return queue_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                        r == -ENOMEM ? error_internal : error_history, &hd);
  return queue(c, MHD_HTTP_OK, MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE),
               &hd);
}

static enum MHD_Result serve_v1(struct aggr_http *h, struct MHD_Connection *c, void **con_cls,
                                enum aggr_http_route route, const char *url, const char *target,
                                bool method_ok) {
  struct aggr_view *v = aggr_view_acquire(h->views);
  struct headers hd = {.indexed = true, .index = v ? v->index : 0};
  const struct aggr_view_node *node;
  const char *node_id = route == AGGR_HTTP_ROUTE_NODE ? aggr_http_route_node(url) : NULL;
  enum MHD_Result ret;

  if (v && !view_leads(h, v) && method_ok)
    return serve_follower(h, c, v, target);
  if (route == AGGR_HTTP_ROUTE_V1_UNKNOWN)
    ret = queue_static(c, MHD_HTTP_NOT_FOUND, error_no_resource, &hd);
  else if (!method_ok) {
    hd.allow = true;
    ret = queue_static(c, MHD_HTTP_METHOD_NOT_ALLOWED, error_method, &hd);
  } else if (!v || !v->ready)
    ret = queue_static(c, MHD_HTTP_SERVICE_UNAVAILABLE, error_not_ready, &hd);
  else if (route == AGGR_HTTP_ROUTE_REPLICATE || route == AGGR_HTTP_ROUTE_REPLICATE_VERDICTS)
    ret = serve_replicate(c, route == AGGR_HTTP_ROUTE_REPLICATE_VERDICTS);
  else {
    static const char *const history_params[] = {"node",  "component", "since", "until", "limit",
                                                 "order", "cursor",    "index", "wait",  NULL};
    static const char *const cluster_params[] = {"since",  "until", "limit", "order",
                                                 "cursor", "index", "wait",  NULL};
    static const char *const nodes_params[] = {"node",   "since", "until", "limit", "order",
                                               "cursor", "index", "wait",  NULL};
    struct aggr_http_query q;
    aggr_http_query_init(&q, route == AGGR_HTTP_ROUTE_HISTORY           ? history_params
                             : route == AGGR_HTTP_ROUTE_HISTORY_CLUSTER ? cluster_params
                             : route == AGGR_HTTP_ROUTE_HISTORY_NODES   ? nodes_params
                                                                        : NULL);
    if (!query_parse_blocking(c, &q)) {
      aggr_view_release(v);
      return queue_bad_parameter(c, q.error);
    }
    bool full = false;
    if (q.have_index && park(h, c, con_cls, route, node_id, &q, &full)) {
      aggr_view_release(v);
      return MHD_YES;
    }
    if (full) {
      aggr_view_release(v);
      aggr_metrics_limit(AGGR_LIMIT_HTTP_PARKED_READS);
      struct headers busy = {.retry_after = true};
      return queue_static(c, MHD_HTTP_SERVICE_UNAVAILABLE, error_busy, &busy);
    }
    /* Answer from the newest view (a resumed read wants what woke it),
     * with the lease checked now: the read may have been parked across a
     * pause. */
    aggr_view_release(v);
    v = aggr_view_acquire(h->views);
    if (!view_leads(h, v))
      return v ? serve_follower(h, c, v, target) : MHD_NO;
    uint64_t index = resource_index(v, route, node_id);
    if (route == AGGR_HTTP_ROUTE_HISTORY)
      return serve_history(c, v, AGGR_HISTORY_CHANGES, index);
    if (route == AGGR_HTTP_ROUTE_HISTORY_CLUSTER)
      return serve_history(c, v, AGGR_HISTORY_CLUSTER, index);
    if (route == AGGR_HTTP_ROUTE_HISTORY_NODES)
      return serve_history(c, v, AGGR_HISTORY_NODES, index);
    if (not_modified(c, index)) {
      aggr_view_release(v);
      return queue_not_modified(c, index);
    }
    if (route == AGGR_HTTP_ROUTE_HEALTH)
      return queue_body(c, v, v->health);
    if (route == AGGR_HTTP_ROUTE_NODES)
      return queue_body(c, v, v->nodes);
    if ((node = aggr_view_find_node(v, node_id)))
      return queue_body(c, v, node->detail);
    /* A node that does not exist yet appears in the node list first. */
    hd.index = v->nodes->index;
    ret = queue_static(c, MHD_HTTP_NOT_FOUND, error_no_node, &hd);
  }
  aggr_view_release(v);
  return ret;
}

/* Queues a malloc'd body (which it takes) with its own content type, for
 * the bodies that are not JSON of the API: /metrics. */
static enum MHD_Result queue_text(struct MHD_Connection *c, unsigned status, char *body, size_t len,
                                  const char *content_type) {
  struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
  enum MHD_Result ret;
  if (!r) {
    free(body);
    return MHD_NO;
  }
  aggr_metrics_http(current_route, status);
  ret = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) == MHD_YES
            ? MHD_queue_response(c, status, r)
            : MHD_NO;
  MHD_destroy_response(r);
  return ret;
}

/* The dashboard's embedded files (dashboard.c), answered locally, on
 * followers too. The page may change with the binary, so it is revalidated;
 * its script and styles may be kept a few minutes. */
static enum MHD_Result serve_dashboard(struct MHD_Connection *c, const char *url, bool method_ok) {
  struct headers none = {0}, allow = {.allow = true};
  const char *type;
  const unsigned char *data;
  size_t len;

  if (aggr_dashboard_find(url, &type, &data, &len) < 0)
    return queue_static(c, MHD_HTTP_NOT_FOUND, error_no_resource, &none);
  if (!method_ok)
    return queue_static(c, MHD_HTTP_METHOD_NOT_ALLOWED, error_method, &allow);
  struct MHD_Response *r =
      MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_PERSISTENT);
  if (!r)
    return MHD_NO;
  aggr_metrics_http(current_route, MHD_HTTP_OK);
  enum MHD_Result ret =
      MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type) == MHD_YES &&
              MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL,
                                      strcmp(url, "/") == 0 ? "no-cache" : "max-age=300") ==
                  MHD_YES &&
              MHD_add_response_header(r, "X-Content-Type-Options", "nosniff") == MHD_YES &&
              MHD_add_response_header(r, "Content-Security-Policy", AGGR_DASHBOARD_CSP) == MHD_YES
          ? MHD_queue_response(c, MHD_HTTP_OK, r)
          : MHD_NO;
  MHD_destroy_response(r);
  return ret;
}

/* Queues a DC/OS answer (dcos.h) with the headers DC/OS's server sends. */
static enum MHD_Result queue_dcos(struct MHD_Connection *c, struct aggr_dcos_reply *r) {
  struct MHD_Response *resp =
      MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_MUST_FREE);
  enum MHD_Result ret;
  if (!resp) {
    aggr_dcos_reply_done(r);
    return MHD_NO;
  }
  r->body = NULL; /* the response has it */
  aggr_metrics_http(current_route, r->status);
  bool ok = (!r->content_type || MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                                         r->content_type) == MHD_YES) &&
            (!r->location ||
             MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, r->location) == MHD_YES) &&
            (!r->nosniff ||
             MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff") == MHD_YES) &&
            (!r->attachment ||
             MHD_add_response_header(resp, "Content-disposition",
                                     "attachment; filename=health-report.json") == MHD_YES) &&
            (!r->last_modified[0] ||
             MHD_add_response_header(resp, "Last-Modified-3DT", r->last_modified) == MHD_YES);
  ret = ok ? MHD_queue_response(c, r->status, resp) : MHD_NO;
  MHD_destroy_response(resp);
  aggr_dcos_reply_done(r);
  return ret;
}

/* The address the connection came in on, as text: on a DC/OS node, its IP,
 * the node id DC/OS knows it by (detect_ip). Returns false when unknown. */
static bool local_address(struct MHD_Connection *c, char *buf, size_t size) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  if (!ci || getsockname(ci->connect_fd, (struct sockaddr *)&ss, &len) < 0)
    return false;
  return mst_addr_format_host((struct sockaddr *)&ss, buf, size) == 0;
}

/* A follower that knows no leader holds a DC/OS read until one is known,
 * for at most this long: DC/OS's clients (wait_for_dcos) retry a
 * connection error but abort on any HTTP error, and an election takes a
 * few seconds. */
#define DCOS_LEADER_WAIT_USEC (15 * USEC_PER_SEC)

/* Parks a DC/OS read on a follower until a view knows a leader or
 * DCOS_LEADER_WAIT_USEC passes (aggr_http_wake, aggr_http_expire). Returns
 * whether it is parked. */
static bool park_for_leader(struct aggr_http *h, struct MHD_Connection *c, void **con_cls) {
  struct request *rq = *con_cls;
  struct waiter *w;
  bool parked = false;

  if (is_mark(rq) || rq->woken)
    return false;
  pthread_mutex_lock(&h->lock);
  struct aggr_view *v = aggr_view_acquire(h->views);
  if (v && !v->is_leader && !v->not_leader && h->n_parked < h->limits.max_parked &&
      (w = calloc(1, sizeof(*w) + 1))) {
    w->c = c;
    w->rq = rq;
    w->route = AGGR_HTTP_ROUTE_DCOS;
    w->deadline = mst_now_monotonic_usec() + DCOS_LEADER_WAIT_USEC;
    waiter_park(h, w);
    parked = true;
  }
  aggr_view_release(v);
  pthread_mutex_unlock(&h->lock);
  return parked;
}

/* DC/OS diagnostics' routes (dcos.c). The router's own answers (301, 404,
 * 405) need no data and are given here, on followers too. The data routes
 * are the leader's: followers redirect like for /v1/ (the local route with
 * ?node= naming the node this follower runs on, so that the leader shows
 * that node), and one that knows no leader first waits for one. */
static enum MHD_Result serve_dcos(struct aggr_http *h, struct MHD_Connection *c, void **con_cls,
                                  const char *path, const char *target, bool get) {
  struct headers none = {0};
  struct aggr_dcos_reply reply;
  const char *query = target ? strchr(target, '?') : NULL;
  char here[INET6_ADDRSTRLEN];
  const char *local = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "node");

  enum aggr_dcos_route route = aggr_dcos_route(path, query ? query + 1 : NULL, get, &reply);
  if (route == AGGR_DCOS_FAILED)
    return queue_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR, error_internal, &none);
  if (route == AGGR_DCOS_ANSWERED)
    return queue_dcos(c, &reply);
  if (route == AGGR_DCOS_LOCAL && !local && local_address(c, here, sizeof(here)))
    local = here;
  struct aggr_view *v = aggr_view_acquire(h->views);
  if (v && !view_leads(h, v)) {
    if (!v->is_leader && !v->not_leader && park_for_leader(h, c, con_cls)) {
      aggr_view_release(v);
      return MHD_YES;
    }
    _cleanup_free_ char *to = NULL;
    if (route == AGGR_DCOS_LOCAL && local == here && target) {
      /* The leader shows the node this follower runs on. */
      if (asprintf(&to, "%s?node=%s%s%s", AGGR_DCOS_PREFIX, here, query ? "&" : "",
                   query ? query + 1 : "") < 0)
        to = NULL;
      if (!to) {
        aggr_view_release(v);
        return queue_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR, error_internal, &none);
      }
    }
    return serve_follower(h, c, v, to ? to : target);
  }
  int r = aggr_dcos_answer(v, path, route == AGGR_DCOS_LOCAL ? local : NULL, &reply);
  aggr_view_release(v);
  if (r < 0) {
    aggr_dcos_reply_done(&reply);
    return queue_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR, error_internal, &none);
  }
  return queue_dcos(c, &reply);
}

/* Whether a request for url (of route) is answered without the bearer
 * token: liveness, readiness and the dashboard's files, none of which
 * carries cluster data. */
static bool route_is_open(enum aggr_http_route route, const char *url) {
  return route == AGGR_HTTP_ROUTE_HEALTHZ || route == AGGR_HTTP_ROUTE_READYZ ||
         (route == AGGR_HTTP_ROUTE_NONE && (strcmp(url, "/") == 0 || strncmp(url, "/ui/", 4) == 0));
}

/* With a token configured: whether the request carries it. If not, queues
 * the 401 into *ret. */
static bool authorized(struct aggr_http *h, struct MHD_Connection *c, enum MHD_Result *ret) {
  struct headers hd = {.authenticate = true};
  const char *given = aggr_http_bearer_token(
      MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION));

  if (given && mst_token_equal(h->token, given))
    return true;
  aggr_metrics_limit(AGGR_LIMIT_HTTP_UNAUTHORIZED);
  *ret = queue_static(c, MHD_HTTP_UNAUTHORIZED, given ? error_bad_token : error_no_token, &hd);
  return false;
}

/* Answers a request whose headers are in. target is the request target as
 * the client sent it, or NULL when it could not be kept. */
static enum MHD_Result answer(struct aggr_http *h, struct MHD_Connection *c, void **con_cls,
                              const char *url, const char *target, bool method_ok, bool get) {
  struct headers none = {0}, allow = {.allow = true};
  enum aggr_http_route route = aggr_http_route_of(url);

  current_route = route;
  if (strlen(target ? target : url) > h->limits.max_url) {
    aggr_metrics_limit(AGGR_LIMIT_HTTP_URL_LENGTH);
    return queue_static(c, MHD_HTTP_URI_TOO_LONG, error_url, &none);
  }
  enum MHD_Result refused;
  if (h->token && !route_is_open(route, url) && !authorized(h, c, &refused))
    return refused;
  if (route == AGGR_HTTP_ROUTE_DCOS)
    return serve_dcos(h, c, con_cls, url + strlen(AGGR_DCOS_PREFIX), target, get);
  if (route == AGGR_HTTP_ROUTE_NONE && route_is_open(route, url))
    return serve_dashboard(c, url, method_ok);
  switch (route) {
  case AGGR_HTTP_ROUTE_METRICS: {
    /* Answered locally, on followers too. */
    char *body;
    size_t len;
    if (!method_ok)
      return queue_static(c, MHD_HTTP_METHOD_NOT_ALLOWED, error_method, &allow);
    struct aggr_view *v = aggr_view_acquire(h->views);
    int r = aggr_metrics_render(v, view_leads(h, v), &body, &len);
    aggr_view_release(v);
    if (r < 0)
      return queue_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR, error_internal, &none);
    return queue_text(c, MHD_HTTP_OK, body, len, "text/plain; version=0.0.4; charset=utf-8");
  }
  case AGGR_HTTP_ROUTE_NONE:
    return queue_static(c, MHD_HTTP_NOT_FOUND, error_no_resource, &none);
  case AGGR_HTTP_ROUTE_HEALTHZ:
    if (!method_ok)
      return queue_static(c, MHD_HTTP_METHOD_NOT_ALLOWED, error_method, &allow);
    return serve_healthz(h, c);
  case AGGR_HTTP_ROUTE_READYZ:
    if (!method_ok)
      return queue_static(c, MHD_HTTP_METHOD_NOT_ALLOWED, error_method, &allow);
    return serve_readyz(h, c);
  default:
    return serve_v1(h, c, con_cls, route, url, target, method_ok);
  }
}

/* --- writes (issue 19) ------------------------------------------------------
 *
 * A PUT or DELETE under /v1/nodes/ is checked on its first call (route,
 * credentials, leadership: a follower redirects it with 307, which keeps
 * the method and body), its body read up to WRITE_BODY_MAX, then handed to
 * the loop while the connection is suspended; the loop's answer resumes it
 * and the next call queues the answer. */

#define WRITE_BODY_MAX     4096
#define WRITE_OPERATOR_MAX 64

static const char error_forbidden[] =
    ERROR_JSON("forbidden", "writes come from loopback only when no token is configured: set "
                            "http_admin_token_file (or http_token_file) to write from elsewhere");
static const char error_not_admin[] =
    ERROR_JSON("unauthorized", "writes need the admin bearer token (http_admin_token_file)");
static const char error_too_large[] =
    ERROR_JSON("too_large", "the request body is longer than 4096 bytes");
static const char error_no_write[] =
    ERROR_JSON("method_not_allowed", "no such write: PUT or DELETE .../maintenance, PUT or DELETE "
                                     ".../components/{name}/ack, DELETE /v1/nodes/{id}");
static const char error_stopping[] =
    ERROR_JSON("not_ready", "the aggregator is stopping; retry at the leader");

struct write_state {
  struct aggr_http_write *w;    /* checked; handed to the loop once the body is in */
  struct aggr_http_write *sent; /* with the loop, not answered yet (under write_lock) */
  char *body;
  size_t body_len;
  bool too_large;
  struct MHD_Connection *conn;
  bool answered; /* the loop answered: queue status and answer */
  unsigned status;
  char *answer;
};

static void write_free(struct aggr_http_write *w) {
  if (!w)
    return;
  free(w->answer);
  free(w->node);
  free(w->component);
  free(w->reason);
  free(w->by);
  free(w);
}

void aggr_http_write_free(struct aggr_http_write *w) {
  write_free(w);
}

/* The request ended (completed or closed): a write still with the loop is
 * answered into nothing. */
static void write_state_end(struct aggr_http *h, struct write_state *ws) {
  pthread_mutex_lock(&h->write_lock);
  if (ws->sent)
    ws->sent->request = NULL;
  pthread_mutex_unlock(&h->write_lock);
  write_free(ws->w);
  free(ws->body);
  free(ws->answer);
  free(ws);
}

int aggr_http_writes_fd(struct aggr_http *h) {
  return h->writes_efd;
}

struct aggr_http_write *aggr_http_take_writes(struct aggr_http *h) {
  uint64_t count;
  (void)!read(h->writes_efd, &count, sizeof(count));
  pthread_mutex_lock(&h->write_lock);
  struct aggr_http_write *list = h->writes_head;
  h->writes_head = h->writes_tail = NULL;
  pthread_mutex_unlock(&h->write_lock);
  return list;
}

void aggr_http_write_answer(struct aggr_http_write *w, unsigned status, char *body) {
  struct aggr_http *h = w->server;
  pthread_mutex_lock(&h->write_lock);
  struct request *rq = w->request;
  if (rq) {
    struct write_state *ws = rq->write;
    ws->sent = NULL;
    ws->answered = true;
    ws->status = body ? status : MHD_HTTP_INTERNAL_SERVER_ERROR;
    ws->answer = body;
    body = NULL;
    MHD_resume_connection(ws->conn);
  }
  pthread_mutex_unlock(&h->write_lock);
  free(body);
  write_free(w);
}

static bool addr_is_loopback(const struct sockaddr *sa) {
  if (!sa)
    return false;
  if (sa->sa_family == AF_INET)
    return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
  if (sa->sa_family == AF_INET6) {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
  }
  return false;
}

/* Who writes: "<operator> via <credential> from <address>", the operator
 * being the X-Muster-Operator header (a name such as alice, else
 * "anonymous"). Returns NULL on ENOMEM. */
static char *write_by(struct MHD_Connection *c, const char *credential) {
  const union MHD_ConnectionInfo *info =
      MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  const struct sockaddr *sa = info ? info->client_addr : NULL;
  char addr[INET6_ADDRSTRLEN] = "?";
  if (sa && sa->sa_family == AF_INET)
    inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, addr, sizeof(addr));
  else if (sa && sa->sa_family == AF_INET6)
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, addr, sizeof(addr));
  const char *name = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Muster-Operator");
  bool name_ok = name && *name && strlen(name) <= WRITE_OPERATOR_MAX;
  for (const char *p = name; name_ok && *p; p++)
    name_ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("._@-", *p);
  char *by = NULL;
  if (asprintf(&by, "%s via %s from %s", name_ok ? name : "anonymous", credential, addr) < 0)
    return NULL;
  return by;
}

/* Whether c may write; if not, queues the 401 or 403 into *ret. Sets
 * *ret_by to who writes. */
static bool write_authorized(struct aggr_http *h, struct MHD_Connection *c, enum MHD_Result *ret,
                             char **ret_by) {
  struct headers hd = {.authenticate = true}, none = {0};
  const char *given = aggr_http_bearer_token(
      MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION));
  const char *need = h->admin_token ? h->admin_token : h->token;
  const char *credential = h->admin_token ? "admin token" : h->token ? "token" : "loopback";

  if (need && !(given && mst_token_equal(need, given))) {
    aggr_metrics_limit(AGGR_LIMIT_HTTP_UNAUTHORIZED);
    *ret = queue_static(c, MHD_HTTP_UNAUTHORIZED,
                        !given           ? error_no_token
                        : h->admin_token ? error_not_admin
                                         : error_bad_token,
                        &hd);
    return false;
  }
  if (!need) {
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!addr_is_loopback(info ? info->client_addr : NULL)) {
      *ret = queue_static(c, MHD_HTTP_FORBIDDEN, error_forbidden, &none);
      return false;
    }
  }
  *ret_by = write_by(c, credential);
  if (!*ret_by) {
    *ret = queue_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR, error_internal, &none);
    return false;
  }
  return true;
}

/* The first call of a write: the route, the credentials and the
 * leadership, before its body is read. Returns MHD_YES with rq->write set
 * to read the body, or the answer queued. */
static enum MHD_Result write_begin(struct aggr_http *h, struct MHD_Connection *c,
                                   struct request *rq, const char *url, bool put) {
  struct headers none = {0};
  enum aggr_http_write_kind kind;
  char *node = NULL, *component = NULL, *by = NULL;
  enum MHD_Result ret;

  if (strlen(rq->target) > h->limits.max_url) {
    aggr_metrics_limit(AGGR_LIMIT_HTTP_URL_LENGTH);
    return queue_static(c, MHD_HTTP_URI_TOO_LONG, error_url, &none);
  }
  int r = aggr_http_write_route(url, put, &kind, &node, &component);
  if (r == -ENOENT)
    return queue_static(c, MHD_HTTP_METHOD_NOT_ALLOWED, error_no_write, &none);
  if (r == -EINVAL)
    return queue_bad_parameter(c, "a node id or component name is empty, holds a '/' or is "
                                  "longer than 256 bytes");
  if (r < 0)
    return queue_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR, error_internal, &none);
  if (!write_authorized(h, c, &ret, &by)) {
    free(node);
    free(component);
    return ret;
  }
  struct aggr_view *v = aggr_view_acquire(h->views);
  if (v && !view_leads(h, v)) {
    free(node);
    free(component);
    free(by);
    return serve_follower(h, c, v, rq->target); /* 307 keeps the method and body */
  }
  bool ready = v && v->ready;
  aggr_view_release(v);
  struct write_state *ws = ready ? calloc(1, sizeof(*ws)) : NULL;
  struct aggr_http_write *w = ws ? calloc(1, sizeof(*w)) : NULL;
  if (!w) {
    free(ws);
    free(node);
    free(component);
    free(by);
    return ready ? queue_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR, error_internal, &none)
                 : queue_static(c, MHD_HTTP_SERVICE_UNAVAILABLE, error_not_ready, &none);
  }
  *w = (struct aggr_http_write){
      .kind = kind, .node = node, .component = component, .by = by, .server = h};
  ws->w = w;
  rq->write = ws;
  return MHD_YES;
}

/* The body is in: checks it and hands the write to the loop, suspending
 * the connection until aggr_http_write_answer(). */
static enum MHD_Result write_send(struct aggr_http *h, struct MHD_Connection *c,
                                  struct request *rq) {
  struct write_state *ws = rq->write;
  struct aggr_http_write *w = ws->w;
  struct headers none = {0};
  char err[256];
  uint64_t one = 1;

  if (ws->too_large)
    return queue_static(c, 413, error_too_large, &none);
  if (w->kind == AGGR_HTTP_WRITE_MAINTENANCE_SET || w->kind == AGGR_HTTP_WRITE_ACK_SET) {
    int r = aggr_operator_parse_body(
        w->kind == AGGR_HTTP_WRITE_ACK_SET ? AGGR_OP_ACK : AGGR_OP_MAINTENANCE, ws->body,
        ws->body_len, mst_now_realtime_usec(), &w->reason, &w->until_usec, err, sizeof(err));
    if (r == -EINVAL)
      return queue_error(c, MHD_HTTP_BAD_REQUEST, "bad_body", err, &none);
    if (r < 0)
      return queue_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR, error_internal, &none);
  }
  MHD_suspend_connection(c);
  pthread_mutex_lock(&h->write_lock);
  ws->conn = c;
  w->request = rq;
  ws->sent = w;
  ws->w = NULL;
  if (h->writes_tail)
    h->writes_tail->next = w;
  else
    h->writes_head = w;
  h->writes_tail = w;
  pthread_mutex_unlock(&h->write_lock);
  (void)!write(h->writes_efd, &one, sizeof(one));
  return MHD_YES;
}

static enum MHD_Result on_write(struct aggr_http *h, struct MHD_Connection *c, const char *url,
                                bool put, const char *upload_data, size_t *upload_data_size,
                                void **con_cls) {
  struct request *rq = *con_cls;
  struct headers none = {0};

  current_route = AGGR_HTTP_ROUTE_NODE;
  if (!rq || is_mark(rq)) {
    /* Every write keeps state of its own: its body and its answer. */
    size_t len = strlen(url);
    bool lost = (void *)rq == &mark_lost_fresh || (void *)rq == &mark_lost_seen;
    rq = lost ? NULL : malloc(sizeof(*rq) + len + 1);
    if (!rq)
      return MHD_NO;
    *rq = (struct request){0};
    memcpy(rq->target, url, len + 1);
    *con_cls = rq;
  }
  if (!rq->seen) {
    rq->seen = true;
    return write_begin(h, c, rq, url, put);
  }
  struct write_state *ws = rq->write;
  if (!ws)
    return MHD_YES; /* answered already at its first call */
  if (*upload_data_size != 0) {
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    if (ws->too_large || ws->body_len + n > WRITE_BODY_MAX) {
      ws->too_large = true;
      return MHD_YES;
    }
    char *b = realloc(ws->body, ws->body_len + n + 1);
    if (!b)
      return MHD_NO;
    memcpy(b + ws->body_len, upload_data, n);
    ws->body = b;
    ws->body_len += n;
    b[ws->body_len] = 0;
    return MHD_YES;
  }
  if (ws->answered) {
    char *body = TAKE_PTR(ws->answer);
    if (!body)
      return queue_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR, error_internal, &none);
    ws->answered = false;
    return queue(c, ws->status,
                 MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE), &none);
  }
  if (ws->sent || !ws->w)
    return MHD_YES; /* with the loop */
  request_arrived(h, c);
  return write_send(h, c, rq);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  struct aggr_http *h = cls;
  if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED)
    aggr_metrics_limit(AGGR_LIMIT_HTTP_TIMEOUT);
  request_ended(h, c);
  if (*con_cls && !is_mark(*con_cls)) {
    struct request *rq = *con_cls;
    if (rq->write)
      write_state_end(h, rq->write);
    if (rq->parked) {
      /* Ended while parked (the server is stopping): forget the waiter. */
      pthread_mutex_lock(&h->lock);
      struct waiter *w = rq->parked;
      waiter_unlink(h, w);
      pthread_mutex_unlock(&h->lock);
      free(w);
    }
    free(*con_cls);
  }
  *con_cls = NULL;
}

/* Marks the request seen by the handler. Returns whether it was not yet,
 * and the raw target (or NULL when it was lost) in *target. */
static bool request_first_seen(void **con_cls, const char *url, const char **target) {
  void *p = *con_cls;
  *target = url;
  if (!p || p == &mark_fresh) {
    *con_cls = &mark_seen;
    return true;
  }
  if (p == &mark_seen)
    return false;
  if (p == &mark_lost_fresh || p == &mark_lost_seen) {
    *target = NULL;
    *con_cls = &mark_lost_seen;
    return p == &mark_lost_fresh;
  }
  struct request *rq = p;
  bool first = !rq->seen;
  rq->seen = true;
  *target = rq->target;
  return first;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
  struct aggr_http *h = cls;
  bool method_ok =
      strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
  const char *target;

  if ((strcmp(method, MHD_HTTP_METHOD_PUT) == 0 || strcmp(method, MHD_HTTP_METHOD_DELETE) == 0) &&
      aggr_http_route_of(url) == AGGR_HTTP_ROUTE_NODE)
    return on_write(h, c, url, strcmp(method, MHD_HTTP_METHOD_PUT) == 0, upload_data,
                    upload_data_size, con_cls);
  if (request_first_seen(con_cls, url, &target)) {
    /* Other methods are refused before their body is read: MHD then closes
     * the connection instead of reading the upload. */
    if (!method_ok) {
      request_arrived(h, c);
      return answer(h, c, con_cls, url, target, false, false);
    }
    /* Answering a GET on the first call would make MHD close every
     * connection (no keep-alive); the first call only marks the request. */
    return MHD_YES;
  }
  if (*upload_data_size != 0) {
    /* A body on a GET means nothing: it is dropped as it arrives (MHD can
     * only answer once it is all in; the connection timeout bounds it). */
    *upload_data_size = 0;
    return MHD_YES;
  }
  request_arrived(h, c);
  return answer(h, c, con_cls, url, target, true, strcmp(method, MHD_HTTP_METHOD_GET) == 0);
}

/* --- TLS material ---------------------------------------------------------
 *
 * GnuTLS asks for the certificate in each handshake through a callback
 * without a closure, so the one HTTPS server of the process is found through
 * tls_server. MHD tells us when a connection starts (before its handshake)
 * and when it closes: a connection counts on the generation current at its
 * start, which keeps that generation and every newer one alive for it. */

static struct aggr_http *tls_server;

static void tls_material_free(struct tls_material *m) {
  if (!m)
    return;
  for (unsigned i = 0; i < m->n_pcerts; i++)
    gnutls_pcert_deinit(&m->pcerts[i]);
  if (m->key)
    gnutls_privkey_deinit(m->key);
  free(m);
}

/* Reads a whole PEM file of at most TLS_FILE_MAX bytes. The caller frees
 * ret->data with gnutls_free(). */
static int read_pem(const char *what, const char *path, gnutls_datum_t *ret, char *err,
                    size_t errsize) {
  _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  ssize_t n;

  if (fd < 0 || fstat(fd, &st) < 0) {
    int e = errno;
    snprintf(err, errsize, "[tls] %s: cannot read %s: %s", what, path, strerror(e));
    return -e;
  }
  if (!S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > TLS_FILE_MAX) {
    snprintf(err, errsize, "[tls] %s: %s is not a PEM file of 1 byte to %u KiB", what, path,
             TLS_FILE_MAX / 1024);
    return -EINVAL;
  }
  ret->data = gnutls_malloc((size_t)st.st_size + 1);
  if (!ret->data) {
    snprintf(err, errsize, "[tls] %s: out of memory reading %s", what, path);
    return -ENOMEM;
  }
  n = read(fd, ret->data, (size_t)st.st_size);
  if (n != st.st_size) {
    int e = n < 0 ? errno : EIO;
    gnutls_free(ret->data);
    ret->data = NULL;
    snprintf(err, errsize, "[tls] %s: cannot read %s: %s", what, path, strerror(e));
    return -e;
  }
  ret->data[n] = 0;
  ret->size = (unsigned)n;
  return 0;
}

/* Whether key is the private half of the certificate's public key. */
static bool key_matches(gnutls_privkey_t key, gnutls_pcert_st *pc) {
  gnutls_pubkey_t pub = NULL;
  gnutls_datum_t a = {0}, b = {0};
  bool same = false;

  if (gnutls_pubkey_init(&pub) >= 0 && gnutls_pubkey_import_privkey(pub, key, 0, 0) >= 0 &&
      gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, &a) >= 0 &&
      gnutls_pubkey_export2(pc->pubkey, GNUTLS_X509_FMT_DER, &b) >= 0)
    same = a.size == b.size && memcmp(a.data, b.data, a.size) == 0;
  gnutls_free(a.data);
  gnutls_free(b.data);
  if (pub)
    gnutls_pubkey_deinit(pub);
  return same;
}

/* Loads a certificate chain and its private key (which others must not be
 * able to read), checking that they belong together. Returns 0 and *ret, or
 * -errno with the file and the reason in err. */
static int tls_material_load(const char *cert_file, const char *key_file, struct tls_material **ret,
                             char *err, size_t errsize) {
  gnutls_datum_t cert = {0}, key = {0};
  struct tls_material *m = NULL;
  int r, g;

  char why[400]; /* room for the "[tls] " prefix in err */
  if ((r = mst_tls_key_file_check(key_file, why, sizeof(why))) < 0) {
    snprintf(err, errsize, "[tls] %s", why);
    return r;
  }
  if ((r = read_pem("cert", cert_file, &cert, err, errsize)) < 0 ||
      (r = read_pem("key", key_file, &key, err, errsize)) < 0)
    goto out;
  m = calloc(1, sizeof(*m));
  if (!m) {
    snprintf(err, errsize, "[tls] out of memory");
    r = -ENOMEM;
    goto out;
  }
  m->n_pcerts = TLS_CHAIN_MAX;
  g = gnutls_pcert_list_import_x509_raw(m->pcerts, &m->n_pcerts, &cert, GNUTLS_X509_FMT_PEM, 0);
  if (g < 0 || m->n_pcerts == 0) {
    m->n_pcerts = 0;
    snprintf(err, errsize, "[tls] cert: %s holds no usable PEM certificate chain (at most %d): %s",
             cert_file, TLS_CHAIN_MAX, g < 0 ? gnutls_strerror(g) : "empty");
    r = -EINVAL;
    goto out;
  }
  if ((g = gnutls_privkey_init(&m->key)) < 0 ||
      (g = gnutls_privkey_import_x509_raw(m->key, &key, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0) {
    snprintf(err, errsize, "[tls] key: %s holds no usable PEM private key: %s", key_file,
             gnutls_strerror(g));
    r = -EINVAL;
    goto out;
  }
  if (!key_matches(m->key, &m->pcerts[0])) {
    snprintf(err, errsize, "[tls] key: %s is not the key of the certificate in %s", key_file,
             cert_file);
    r = -EINVAL;
    goto out;
  }
  *ret = TAKE_PTR(m);
  r = 0;
out:
  tls_material_free(m);
  gnutls_free(cert.data);
  if (key.data) {
    memset(key.data, 0, key.size);
    gnutls_free(key.data);
  }
  return r;
}

/* The first certificate's subject and expiry, for the log. */
static void tls_describe(const struct tls_material *m, char *buf, size_t size) {
  gnutls_x509_crt_t crt;
  char dn[256] = "?";
  size_t dn_len = sizeof(dn);
  time_t exp = 0;

  snprintf(buf, size, "a certificate");
  if (gnutls_x509_crt_init(&crt) < 0)
    return;
  if (gnutls_x509_crt_import(crt, &m->pcerts[0].cert, GNUTLS_X509_FMT_DER) >= 0) {
    if (gnutls_x509_crt_get_dn(crt, dn, &dn_len) < 0)
      snprintf(dn, sizeof(dn), "?");
    exp = gnutls_x509_crt_get_expiration_time(crt);
    char when[MST_RFC3339_MAX];
    snprintf(buf, size, "%s, expires %s", dn,
             mst_time_format_rfc3339((uint64_t)MST_MAX(exp, 0) * USEC_PER_SEC, when, sizeof(when)));
  }
  gnutls_x509_crt_deinit(crt);
}

/* Frees the retired generations nothing can use any more. Called with
 * tls_lock held. */
static void tls_collect(struct aggr_http *h) {
  while (h->tls_oldest != h->tls_current && h->tls_oldest->conns == 0) {
    struct tls_material *m = h->tls_oldest;
    h->tls_oldest = m->newer;
    tls_material_free(m);
  }
}

static int tls_retrieve(gnutls_session_t session, const gnutls_datum_t *req_ca_dn, int nreqs,
                        const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                        gnutls_pcert_st **pcert, unsigned int *pcert_length,
                        gnutls_privkey_t *pkey) {
  struct aggr_http *h = tls_server;
  if (!h)
    return -1;
  pthread_mutex_lock(&h->tls_lock);
  *pcert = h->tls_current->pcerts;
  *pcert_length = h->tls_current->n_pcerts;
  *pkey = h->tls_current->key;
  pthread_mutex_unlock(&h->tls_lock);
  return 0;
}

/* A connection starts waiting for its request (see "the request deadline")
 * and, over HTTPS, counts on the current TLS generation; at its close it
 * leaves both. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
  struct aggr_http *h = cls;
  struct http_conn *hc;

  if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    hc = calloc(1, sizeof(*hc));
    *socket_context = hc;
    if (!hc)
      return; /* untracked: only MHD's idle timeout applies to it */
    hc->fd = info ? info->connect_fd : -1;
    size_t evicted = 0;
    pthread_mutex_lock(&h->conn_lock);
    hc->worker = worker_of(h, c);
    h->worker_conns[hc->worker]++;
    if (hc->fd >= 0)
      conn_wait(h, hc);
    for (struct http_conn *o = h->waiting_head;
         o && o != hc && h->worker_conns[hc->worker] > h->evict_above;) {
      struct http_conn *next = o->next;
      if (o->worker == hc->worker && !o->evicted) {
        conn_unwait(h, o);
        (void)shutdown(o->fd, SHUT_RDWR);
        h->worker_conns[hc->worker]--; /* closing: it no longer takes room */
        o->evicted = true;
        evicted++;
      }
      o = next;
    }
    h->evicted_held += evicted;
    pthread_mutex_unlock(&h->conn_lock);
    while (evicted-- > 0)
      aggr_metrics_limit(AGGR_LIMIT_HTTP_IDLE_EVICTED);
    if (h->cert_file) { /* HTTPS; set before MHD starts, never changed */
      pthread_mutex_lock(&h->tls_lock);
      h->tls_current->conns++;
      hc->tls = h->tls_current;
      pthread_mutex_unlock(&h->tls_lock);
    }
    return;
  }
  hc = *socket_context;
  *socket_context = NULL;
  if (!hc)
    return;
  pthread_mutex_lock(&h->conn_lock);
  conn_unwait(h, hc);
  if (!hc->evicted)
    h->worker_conns[hc->worker]--;
  pthread_mutex_unlock(&h->conn_lock);
  if (hc->tls) {
    pthread_mutex_lock(&h->tls_lock);
    hc->tls->conns--;
    tls_collect(h);
    pthread_mutex_unlock(&h->tls_lock);
  }
  free(hc);
}

int aggr_http_tls_reload(struct aggr_http *h) {
  struct tls_material *m;
  char err[512], desc[384];
  int r;

  if (!h || !h->cert_file)
    return 0; /* plain HTTP: nothing to reload */
  r = tls_material_load(h->cert_file, h->key_file, &m, err, sizeof(err));
  if (r < 0) {
    log_error("cannot reload the HTTPS certificate: %s; keeping the one in use", err);
    return r;
  }
  tls_describe(m, desc, sizeof(desc));
  pthread_mutex_lock(&h->tls_lock);
  h->tls_current->newer = m;
  h->tls_current = m;
  tls_collect(h);
  pthread_mutex_unlock(&h->tls_lock);
  log_info("HTTPS certificate reloaded from %s: %s", h->cert_file, desc);
  return 0;
}

void aggr_http_config_check(const char *path, const struct aggr_config *cfg,
                            struct mst_diag *diag) {
  _cleanup_free_ char *token = NULL;
  int r;

  /* [tls] cert, key and ca are checked with the agent stream's (main.c). */
  const struct {
    const char *key, *file;
  } files[] = {{"http_token_file", cfg->http_token_file},
               {"http_admin_token_file", cfg->http_admin_token_file}};
  for (size_t i = 0; i < ELEMENTSOF(files); i++) {
    if (!files[i].file)
      continue;
    r = mst_token_read(files[i].file, &token);
    if (r < 0)
      mst_diag_add(diag, path, mst_conf_key_line(path, "aggregator", files[i].key),
                   "[aggregator] %s: cannot use %s: %s%s", files[i].key, files[i].file,
                   strerror(-r), r == -EPERM ? " (it must be readable by its owner only)" : "");
    else
      memset(token, 0, strlen(token));
    free(TAKE_PTR(token));
  }
}

/* --- server --------------------------------------------------------------- */

/* libmicrohttpd's messages, from any of its threads, at most MHD_LOG_BURST
 * a second: it logs every connection it closes at accept, and a crowd must
 * not become a crowd of lines. The first line after a quiet spell says how
 * many were held back. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap) _printf_(2, 0);
static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
  struct aggr_http *h = cls;
  uint64_t now = mst_now_monotonic_usec(), held = 0;
  bool due;
  char buf[512];

  /* The only sign MHD gives of a connection refused at accept, for
   * http_max_connections or http_max_connections_per_address. */
  if (strstr(fmt, "connection limit"))
    aggr_metrics_limit(AGGR_LIMIT_HTTP_CONNECTIONS);
  pthread_mutex_lock(&h->conn_lock);
  if (now >= h->mhd_log_window_usec + HTTP_LOG_INTERVAL_USEC) {
    h->mhd_log_window_usec = now;
    h->mhd_log_lines = 0;
  }
  due = h->mhd_log_lines < MHD_LOG_BURST;
  if (due) {
    h->mhd_log_lines++;
    held = h->mhd_log_held;
    h->mhd_log_held = 0;
  } else
    h->mhd_log_held++;
  pthread_mutex_unlock(&h->conn_lock);
  if (!due)
    return;
  vsnprintf(buf, sizeof(buf), fmt, ap);
  size_t len = strlen(buf);
  while (len > 0 && buf[len - 1] == '\n')
    buf[--len] = 0;
  if (held > 0)
    log_warning("HTTP: %s (%llu more messages held back)", buf, (unsigned long long)held);
  else
    log_warning("HTTP: %s", buf);
}

static void http_free_state(struct aggr_http *h) {
  while (h->tls_oldest) {
    struct tls_material *m = h->tls_oldest;
    h->tls_oldest = m->newer;
    tls_material_free(m);
  }
  if (tls_server == h)
    tls_server = NULL;
  pthread_mutex_destroy(&h->tls_lock);
  pthread_mutex_destroy(&h->lock);
  pthread_mutex_destroy(&h->conn_lock);
  free(h->cert_file);
  free(h->key_file);
  if (h->token) {
    memset(h->token, 0, strlen(h->token));
    free(h->token);
  }
  if (h->admin_token) {
    memset(h->admin_token, 0, strlen(h->admin_token));
    free(h->admin_token);
  }
  pthread_mutex_destroy(&h->write_lock);
  if (h->writes_efd >= 0)
    close(h->writes_efd);
  free(h);
}

/* Reads the token and the certificate of o into h. Logs why not. */
static int http_load_credentials(struct aggr_http *h, const struct aggr_http_options *o) {
  char err[512];
  int r;

  if (o->token_file) {
    r = mst_token_read(o->token_file, &h->token);
    if (r < 0) {
      log_error("[aggregator] http_token_file: cannot use %s: %s%s", o->token_file, strerror(-r),
                r == -EPERM ? " (it must be readable by its owner only)" : "");
      return r;
    }
  }
  if (o->admin_token_file) {
    r = mst_token_read(o->admin_token_file, &h->admin_token);
    if (r < 0) {
      log_error("[aggregator] http_admin_token_file: cannot use %s: %s%s", o->admin_token_file,
                strerror(-r), r == -EPERM ? " (it must be readable by its owner only)" : "");
      return r;
    }
  }
  if (o->cert_file && o->key_file) {
    if (tls_server) {
      log_error("only one HTTPS server per process");
      return -EBUSY;
    }
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES ||
        MHD_is_feature_supported(MHD_FEATURE_HTTPS_CERT_CALLBACK) != MHD_YES) {
      log_error("this libmicrohttpd has no HTTPS with certificate callbacks");
      return -EOPNOTSUPP;
    }
    h->cert_file = strdup(o->cert_file);
    h->key_file = strdup(o->key_file);
    if (!h->cert_file || !h->key_file)
      return -ENOMEM;
    r = tls_material_load(o->cert_file, o->key_file, &h->tls_current, err, sizeof(err));
    if (r < 0) {
      log_error("%s", err);
      return r;
    }
    h->tls_oldest = h->tls_current;
    tls_server = h;
  }
  return 0;
}

int aggr_http_start(const struct aggr_http_options *o, struct aggr_views *vs,
                    struct aggr_http **ret) {
  const char *listen_addr = o->listen;
  unsigned threads = o->threads;
  struct mst_addr addr;
  char err[256];
  int r;

  if (mst_addr_parse(listen_addr, MST_ADDR_LISTEN, &addr, err, sizeof(err)) < 0) {
    log_error("listen_http %s", err);
    return -EINVAL;
  }
  bool ipv6 = addr.ss.ss_family == AF_INET6;
  if (threads == 0)
    threads = HTTP_DEFAULT_THREADS;
  threads = MST_MIN(threads, HTTP_MAX_THREADS);

  struct aggr_http *h = calloc(1, sizeof(*h));
  if (!h)
    return -ENOMEM;
  h->views = vs;
  h->fence = o->fence;
  h->limits = o->limits;
  {
    /* Each worker's share, as MHD makes it (the leftover goes to some). */
    size_t share = MST_MAX(o->limits.max_connections, threads) / threads;
    h->evict_above = share - MST_MIN((size_t)64 / threads + 1, share / 4); /* room for newcomers */
  }
  pthread_mutex_init(&h->lock, NULL);
  pthread_mutex_init(&h->tls_lock, NULL);
  pthread_mutex_init(&h->conn_lock, NULL);
  pthread_mutex_init(&h->write_lock, NULL);
  h->writes_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  r = h->writes_efd < 0 ? -errno : http_load_credentials(h, o);
  if (r < 0) {
    http_free_state(h);
    return r;
  }

  bool tls = h->cert_file != NULL;
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                   MHD_USE_ERROR_LOG | (tls ? MHD_USE_TLS : 0);
  /* [::] serves IPv4 clients too (IPV6_V6ONLY off), as the agent stream does. */
  if (ipv6)
    flags |= mst_addr_is_any((struct sockaddr *)&addr.ss) ? MHD_USE_DUAL_STACK : MHD_USE_IPv6;
  uint16_t port = mst_addr_port((struct sockaddr *)&addr.ss);
  /* The TLS options come last: MHD_OPTION_END ends the list early when
   * serving plain HTTP. A limit of 0 means none to MHD. */
  errno = 0;
  h->daemon = MHD_start_daemon(
      flags, port, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
      MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
      MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_THREAD_POOL_SIZE, threads,
      MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr.ss, MHD_OPTION_CONNECTION_TIMEOUT,
      o->limits.timeout_sec, MHD_OPTION_CONNECTION_LIMIT,
      MST_MAX(o->limits.max_connections, threads), MHD_OPTION_PER_IP_CONNECTION_LIMIT,
      o->limits.max_connections_per_address, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      (size_t)HTTP_CONNECTION_MEMORY, tls ? MHD_OPTION_HTTPS_CERT_CALLBACK : MHD_OPTION_END,
      tls_retrieve, MHD_OPTION_HTTPS_PRIORITIES, HTTP_TLS_PRIORITIES, MHD_OPTION_END);
  if (!h->daemon) {
    r = errno > 0 ? -errno : -EIO;
    log_error("Cannot serve HTTP%s on %s: %s", tls ? "S" : "", listen_addr, strerror(-r));
    http_free_state(h);
    return r;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
  h->port = info ? info->port : port;
  if (tls) {
    char desc[384];
    tls_describe(h->tls_current, desc, sizeof(desc));
    log_info("Serving HTTPS on %s (port %u, %u threads) with %s from %s%s", listen_addr, h->port,
             threads, desc, h->cert_file, h->token ? "; the API needs the bearer token" : "");
  } else
    log_info("Serving HTTP on %s (port %u, %u threads)%s", listen_addr, h->port, threads,
             h->token ? "; the API needs the bearer token" : "");
  *ret = h;
  return 0;
}

void aggr_http_free(struct aggr_http *h) {
  if (!h)
    return;
  if (h->daemon) {
    /* MHD cannot stop with connections suspended: let every parked read go
     * (it is answered, or closed, as the server stops). */
    /* Writes the loop has not taken: answered now (the loop answers those
     * it holds before the server stops, aggr_http_write_answer). */
    for (struct aggr_http_write *w = aggr_http_take_writes(h), *next; w; w = next) {
      next = w->next;
      aggr_http_write_answer(w, MHD_HTTP_SERVICE_UNAVAILABLE, strdup(error_stopping));
    }
    pthread_mutex_lock(&h->lock);
    while (h->parked)
      waiter_wake(h, h->parked);
    pthread_mutex_unlock(&h->lock);
    MHD_stop_daemon(h->daemon);
  }
  http_free_state(h);
}

uint16_t aggr_http_port(const struct aggr_http *h) {
  return h->port;
}
