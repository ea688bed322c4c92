/* The aggregator's HTTP API on libmicrohttpd's thread pool: /v1/health,
 * /v1/nodes, /v1/nodes/{id}, /healthz and /readyz. Handlers serve the bodies
 * of the current published view (view.h) without copying them and without
 * touching the live model; the loop thread is never blocked by a request.
 *
 * Threads: aggr_http_start and aggr_http_free on the main or loop thread;
 * requests run on the server's own threads. The views are borrowed: they must
 * outlive the server (free the server first). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "view.h"

struct aggr_http;

/* Starts serving on listen_addr, "HOST:PORT" (an IPv4 address, "localhost",
 * "*" or empty for any, or "[IPv6]"; port 0 picks a free port) with a pool
 * of threads (0 means the default, 2). On success stores the server in *ret.
 * Returns 0, -EINVAL for a bad address, or -errno (EADDRINUSE, ...) with
 * the cause logged. */
struct aggr_http_limits {
  unsigned timeout_sec; /* an idle or slow connection is closed after this */
  size_t max_parked;    /* blocking reads waiting at once; more get 503 */
  size_t max_url;       /* longest request target; longer ones get 414 */
};

int aggr_http_start(const char *listen_addr, unsigned threads,
                    const struct aggr_http_limits *limits, struct aggr_views *vs,
                    struct aggr_http **ret);
/* Stops the server, waiting for its threads, and frees it. Accepts NULL. */
void aggr_http_free(struct aggr_http *h);
/* Blocking reads (GET /v1/...?index=N&wait=D) park until the index of
 * their resource differs from N, or the wait (plus up to wait/16 of jitter)
 * ends. aggr_http_wake() resumes the readers whose resource moved in the
 * current view: the loop calls it after every publish. aggr_http_expire()
 * resumes those whose wait is over: the loop calls it on a short tick. Both
 * take only the server's parked-list lock. */
void aggr_http_wake(struct aggr_http *h);
void aggr_http_expire(struct aggr_http *h);
/* Reads parked right now. */
size_t aggr_http_parked(struct aggr_http *h);

/* The port actually bound (useful after port 0). */
uint16_t aggr_http_port(const struct aggr_http *h);
