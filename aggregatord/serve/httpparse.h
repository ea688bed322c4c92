/* The HTTP API's parsing of what a client sends, apart from libmicrohttpd and
 * SQLite: which route a path names (and the node id in /v1/nodes/{id}), the
 * query parameters of blocking reads (?index=&wait=), of /v1/history (filters,
 * limit, order, cursor) and of the followers' replication reads, the
 * If-None-Match check, and the token of an Authorization header. http.c
 * calls these with the values MHD has decoded; the fuzz target
 * tests/fuzz/fuzz_http.c calls them with its own.
 *
 * Parameters are read through a lookup function (key → value or NULL), so
 * the same code serves MHD's connection and a plain list. The history
 * cursors (history.h) are made and read here too. Pure functions: any
 * thread; nothing here allocates but aggr_history_cursor_make(). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "serve/history.h"

#define AGGR_HTTP_NODES_PREFIX "/v1/nodes/"
/* DC/OS diagnostics' health API (dcos.h) lives under this. */
#define AGGR_DCOS_PREFIX "/system/health/v1"

/* Every route of the API, in one list: X(ROUTE, path, label) names
 * AGGR_HTTP_ROUTE_<ROUTE>, the path it is matched by exactly (NULL: by a
 * prefix, in aggr_http_route_of()), and the route label its answers are
 * counted under in muster_http_requests_total (metrics.h). Routes that
 * share a label stand next to each other; their counts are summed. */
#define AGGR_HTTP_ROUTES(X)                                                                        \
  X(HEALTH, "/v1/health", "/v1/health")                                                            \
  X(NODES, "/v1/nodes", "/v1/nodes")                                                               \
  X(NODE, NULL, "/v1/nodes/{id}")                                                                  \
  X(HISTORY, "/v1/history", "/v1/history")                                                         \
  X(HISTORY_CLUSTER, "/v1/history/cluster", "/v1/history/cluster")                                 \
  X(HISTORY_NODES, "/v1/history/nodes", "/v1/history/nodes")                                       \
  X(METRICS, "/metrics", "/metrics")                                                               \
  X(HEALTHZ, "/healthz", "/healthz")                                                               \
  X(READYZ, "/readyz", "/readyz")                                                                  \
  /* a follower copying the leader's history, and its cluster verdicts */                          \
  X(REPLICATE, "/v1/internal/replicate", "/v1/internal")                                           \
  X(REPLICATE_VERDICTS, "/v1/internal/replicate/verdicts", "/v1/internal")                         \
  X(DCOS, NULL, AGGR_DCOS_PREFIX)                                                                  \
  X(V1_UNKNOWN, NULL, "other") /* under /v1/ but no such resource */                               \
  X(NONE, NULL, "other")       /* the dashboard's files, or no such resource */

enum aggr_http_route {
#define AGGR_HTTP_ROUTE_ENUM(route, path, label) AGGR_HTTP_ROUTE_##route,
  AGGR_HTTP_ROUTES(AGGR_HTTP_ROUTE_ENUM)
#undef AGGR_HTTP_ROUTE_ENUM
      _AGGR_HTTP_ROUTE_MAX,
};

/* The route of a decoded request path. */
enum aggr_http_route aggr_http_route_of(const char *path);

/* The route label of muster_http_requests_total for route ("other" for
 * anything out of range). */
const char *aggr_http_route_label(enum aggr_http_route route);

/* The node id of a path whose route is AGGR_HTTP_ROUTE_NODE (points into
 * path). */
const char *aggr_http_route_node(const char *path);

/* Returns the value of query parameter key, or NULL when it is absent (or
 * has no value). */
typedef const char *(*aggr_http_lookup)(void *user, const char *key);

#define AGGR_HTTP_QUERY_VALUE_MAX 256

/* The query of a /v1/ read: the parameters its route takes, and the
 * blocking-read ones every route takes. */
struct aggr_http_query {
  const char *const *allowed; /* NULL-terminated names this route takes */
  char error[192];            /* the first problem, for a 400 */
  bool have_index;
  uint64_t index;
  uint64_t wait_usec;
};

/* Starts checking a query; allowed NULL means only index and wait. */
void aggr_http_query_init(struct aggr_http_query *q, const char *const *allowed);

/* Checks one parameter as it comes (name allowed, value not too long).
 * Returns false once q->error is set; then stop. */
bool aggr_http_query_check_param(struct aggr_http_query *q, const char *key, const char *value);

/* After every parameter passed aggr_http_query_check_param(): parses index
 * and wait. Returns false with q->error set. */
bool aggr_http_query_parse_blocking(struct aggr_http_query *q, aggr_http_lookup lookup, void *user);

/* Parses the filters of GET /v1/history, /v1/history/cluster or
 * /v1/history/nodes (table) into *hq, whose strings then point at the
 * lookup's values. Returns 0, or -EINVAL with the message for the 400 in
 * err. */
int aggr_http_history_parse(struct aggr_history_query *hq, enum aggr_history_table table,
                            aggr_http_lookup lookup, void *user, char *err, size_t errsize);

/* The follower's replication read: after=ID and limit=N (1 to 10000). A
 * NULL value keeps the default. Return false when the value is bad. */
bool aggr_http_replicate_after_parse(const char *s, uint64_t *ret_after);
bool aggr_http_replicate_limit_parse(const char *s, unsigned *ret_limit);

/* Whether an If-None-Match header names the ETag of index (weak or strong,
 * in a list, or "*"). */
bool aggr_http_etag_matches(const char *if_none_match, uint64_t index);

/* The token of an Authorization header value "Bearer <token>" (the scheme in
 * any case, RFC 6750 section 2.1), pointing into header; NULL when header is
 * NULL, names another scheme, or carries no token. */
const char *aggr_http_bearer_token(const char *header);

/* The API's writes (issue 19), by method and path. */
enum aggr_http_write_kind {
  AGGR_HTTP_WRITE_MAINTENANCE_SET,   /* PUT .../maintenance */
  AGGR_HTTP_WRITE_MAINTENANCE_CLEAR, /* DELETE .../maintenance */
  AGGR_HTTP_WRITE_ACK_SET,           /* PUT .../components/{name}/ack */
  AGGR_HTTP_WRITE_ACK_CLEAR,         /* DELETE .../components/{name}/ack */
  AGGR_HTTP_WRITE_FORGET,            /* DELETE /v1/nodes/{id} */
};

/* The write a PUT (put) or DELETE names by its decoded path under
 * /v1/nodes/: {id} (DELETE: forget), {id}/maintenance,
 * {id}/components/{name}/maintenance or {id}/components/{name}/ack. Sets
 * *ret_kind and the node id and component name (malloc'd; component NULL
 * for the node). Returns 0, -ENOENT when the path names no write (404 or
 * 405), -EINVAL when a name is empty or longer than 256 bytes, or -ENOMEM. */
int aggr_http_write_route(const char *path, bool put, enum aggr_http_write_kind *ret_kind,
                          char **ret_node, char **ret_component);
