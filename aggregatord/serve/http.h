/* The aggregator's HTTP API on libmicrohttpd's thread pool (HTTPS with
 * GnuTLS when configured, and an optional bearer token): every route of
 * AGGR_HTTP_ROUTES (httpparse.h), DC/OS's health API (dcos.h) and the
 * dashboard's files (dashboard.h). Handlers serve the bodies of the current
 * published view (view.h), without copying those pre-rendered, and never
 * touch the live model; the loop thread is never blocked by a request.
 * History pages are read from SQLite on the HTTP thread (history.h).
 *
 * Threads: aggr_http_start and aggr_http_free on the main or loop thread;
 * requests run on the server's own threads. The views are borrowed: they must
 * outlive the server (free the server first). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "serve/httpparse.h"
#include "serve/view.h"

struct aggr_http;
struct aggr_election;

struct aggr_http_limits {
  /* An idle connection is closed after this, and so is one whose request
   * (headers and body) has not all arrived this long after the connection
   * or its previous request ended, however slowly its bytes trickle. */
  unsigned timeout_sec;
  unsigned max_connections;             /* open at once; more are closed at accept */
  unsigned max_connections_per_address; /* the same, from one client address */
  size_t max_parked;                    /* blocking reads waiting at once; more get 503 */
  size_t max_url;                       /* longest request target; longer ones get 414 */
};

struct aggr_http_options {
  const char *listen; /* "HOST:PORT" */
  unsigned threads;   /* 0: the default, 2 */
  struct aggr_http_limits limits;
  /* Both set: HTTPS with this certificate chain and key (PEM; the key not
   * readable by others), reloadable with aggr_http_tls_reload(). */
  const char *cert_file;
  const char *key_file;
  /* Set: every route but /healthz, /readyz and the dashboard's files needs
   * "Authorization: Bearer <the token in this file>" (mst_token_read()). */
  const char *token_file;
  /* The election whose lease fences the leader's answers: a view that says
   * "leader" is answered from only while aggr_election_lease_valid(fence)
   * holds at the time of the answer. NULL (standalone): no lease, always
   * holds. Borrowed: it must outlive the server. */
  const struct aggr_election *fence;
  /* Set: the API's writes (issue 19) need "Authorization: Bearer <the token
   * in this file>" instead of token_file's. Neither set: writes come from
   * loopback only (403 from elsewhere). */
  const char *admin_token_file;
};

/* Starts serving on o->listen (an IPv4 address, "localhost", "*" or empty
 * for any, or "[IPv6]"; port 0 picks a free port) with a pool of threads.
 * The strings of o are copied. On success stores the server in *ret.
 * Returns 0, -EINVAL for a bad address or a bad certificate or key, -EPERM
 * for a key or token file others can read, or -errno (EADDRINUSE, ENOENT,
 * ...) with the cause logged, naming the file. At most one HTTPS server per
 * process (GnuTLS's certificate callback has no closure). */
int aggr_http_start(const struct aggr_http_options *o, struct aggr_views *vs,
                    struct aggr_http **ret);

/* Reads the certificate and key files again and serves them to the
 * handshakes from now on; open connections and parked reads go on
 * undisturbed. Returns 0 (also when serving plain HTTP: nothing to do), or
 * -errno with the reason logged, and the material in use kept, when the
 * files are bad. Loop thread (on SIGHUP). */
int aggr_http_tls_reload(struct aggr_http *h);

/* Checks what aggr_http_start() will read from cfg that the agent stream
 * does not: the http_token_file; adds "path:line: [aggregator]
 * http_token_file: cannot use X: ..." to diag. For load_config (and
 * --check-config). */
struct aggr_config;
struct mst_diag;
void aggr_http_config_check(const char *path, const struct aggr_config *cfg, struct mst_diag *diag);

/* Stops the server, waiting for its threads, and frees it. Accepts NULL. */
void aggr_http_free(struct aggr_http *h);
/* Blocking reads (GET /v1/...?index=N&wait=D) park until the index of
 * their resource differs from N, or the wait (plus up to wait/16 of jitter)
 * ends. aggr_http_wake() resumes the readers whose resource moved in the
 * current view: the loop calls it after every publish. aggr_http_expire()
 * resumes those whose wait is over, and closes the connections whose request
 * did not arrive within the timeout: the loop calls it on a short tick. Both
 * take only the server's short locks. */
void aggr_http_wake(struct aggr_http *h);
void aggr_http_expire(struct aggr_http *h);
/* Reads parked right now. */
size_t aggr_http_parked(struct aggr_http *h);

/* The port actually bound (useful after port 0). */
uint16_t aggr_http_port(const struct aggr_http *h);

/* --- writes (issue 19) ---------------------------------------------------------
 *
 * The API's writes change operator state, which the loop owns: an HTTP thread
 * checks the request (route, credentials, leadership, body), hands it to the
 * loop as a struct aggr_http_write and suspends the connection; the loop
 * answers it with aggr_http_write_answer(), which resumes the connection.
 * The door is a queue under a mutex and an eventfd (aggr_http_writes_fd). */

struct aggr_http_write {
  enum aggr_http_write_kind kind;
  char *node;
  char *component;     /* NULL: the node itself */
  char *reason;        /* the SET kinds */
  uint64_t until_usec; /* MAINTENANCE_SET: 0 until cleared */
  char *by;            /* who: "<operator> (<credential>, from <address>)" */
  /* The loop's answer while it waits for the publish that shows it. */
  unsigned status;
  char *answer;
  /* The server's, until answered. */
  struct aggr_http *server;
  void *request;
  struct aggr_http_write *next;
};

/* The eventfd the loop watches for writes (readable when some wait). */
int aggr_http_writes_fd(struct aggr_http *h);
/* Takes the writes waiting, oldest first (a list through ->next). Loop thread. */
struct aggr_http_write *aggr_http_take_writes(struct aggr_http *h);
/* Answers w with status and body (a JSON document, taken over; NULL: an
 * internal error), resumes its connection and frees w. Loop thread. */
void aggr_http_write_answer(struct aggr_http_write *w, unsigned status, char *body);
/* Frees w without answering (only for one never taken from the server). */
void aggr_http_write_free(struct aggr_http_write *w);
