/* Parsing of HTTP request paths and query parameters, and the history
 * cursors; see httpparse.h. Kept apart from http.c (libmicrohttpd) and
 * history.c (SQLite) so that it can be tested on its own: everything here
 * reads strings and writes into the caller's structs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "serve/httpparse.h"
#include "mst/duration.h"
#include "mst/macro.h"
#include "mst/time.h"

#define WAIT_DEFAULT_USEC (60 * USEC_PER_SEC)
#define WAIT_MAX_USEC     (300 * USEC_PER_SEC)
#define HISTORY_LIMIT_MAX 1000

/* --- routes ------------------------------------------------------------------ */

static const struct {
  const char *path; /* matched exactly, or NULL */
  const char *label;
} routes[_AGGR_HTTP_ROUTE_MAX] = {
#define ROUTE_ENTRY(route, p, l) [AGGR_HTTP_ROUTE_##route] = {.path = p, .label = l},
    AGGR_HTTP_ROUTES(ROUTE_ENTRY)
#undef ROUTE_ENTRY
};

static bool has_prefix(const char *s, const char *prefix) {
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

enum aggr_http_route aggr_http_route_of(const char *url) {
  for (size_t r = 0; r < _AGGR_HTTP_ROUTE_MAX; r++)
    if (routes[r].path && strcmp(url, routes[r].path) == 0)
      return (enum aggr_http_route)r;
  if (has_prefix(url, AGGR_HTTP_NODES_PREFIX) && url[strlen(AGGR_HTTP_NODES_PREFIX)])
    return AGGR_HTTP_ROUTE_NODE;
  if (has_prefix(url, AGGR_DCOS_PREFIX) &&
      (url[strlen(AGGR_DCOS_PREFIX)] == '\0' || url[strlen(AGGR_DCOS_PREFIX)] == '/'))
    return AGGR_HTTP_ROUTE_DCOS;
  if (has_prefix(url, "/v1/"))
    return AGGR_HTTP_ROUTE_V1_UNKNOWN;
  return AGGR_HTTP_ROUTE_NONE;
}

const char *aggr_http_route_label(enum aggr_http_route route) {
  return (unsigned)route < _AGGR_HTTP_ROUTE_MAX ? routes[route].label : "other";
}

const char *aggr_http_route_node(const char *path) {
  return path + strlen(AGGR_HTTP_NODES_PREFIX);
}

/* --- query parameters -------------------------------------------------------- */

void aggr_http_query_init(struct aggr_http_query *q, const char *const *allowed) {
  static const char *const blocking_only[] = {"index", "wait", NULL};

  *q = (struct aggr_http_query){
      .allowed = allowed ? allowed : blocking_only,
      .wait_usec = WAIT_DEFAULT_USEC,
  };
}

bool aggr_http_query_check_param(struct aggr_http_query *q, const char *key, const char *value) {
  bool known = false;
  if (q->error[0])
    return false;
  for (const char *const *a = q->allowed; *a; a++)
    known = known || strcmp(*a, key) == 0;
  if (!known) {
    snprintf(q->error, sizeof(q->error), "unknown parameter '%.64s'", key);
    return false;
  }
  if (value && strlen(value) > AGGR_HTTP_QUERY_VALUE_MAX)
    snprintf(q->error, sizeof(q->error), "parameter '%s' is longer than %d bytes", key,
             AGGR_HTTP_QUERY_VALUE_MAX);
  return !q->error[0];
}

/* Parses a decimal uint64 with nothing else around it. */
static bool parse_u64(const char *s, uint64_t *ret) {
  char *end;
  if (!s || *s < '0' || *s > '9')
    return false;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end)
    return false;
  *ret = v;
  return true;
}

bool aggr_http_query_parse_blocking(struct aggr_http_query *q, aggr_http_lookup lookup,
                                    void *user) {
  const char *v;

  if (q->error[0])
    return false;
  if ((v = lookup(user, "index"))) {
    if (!parse_u64(v, &q->index)) {
      snprintf(q->error, sizeof(q->error), "parameter 'index' must be a non-negative integer");
      return false;
    }
    q->have_index = true;
  }
  if ((v = lookup(user, "wait"))) {
    uint64_t secs;
    if (parse_u64(v, &secs) && secs <= WAIT_MAX_USEC / USEC_PER_SEC)
      q->wait_usec = secs * USEC_PER_SEC;
    else if (mst_duration_parse(v, &q->wait_usec) < 0 || q->wait_usec > WAIT_MAX_USEC) {
      snprintf(q->error, sizeof(q->error),
               "parameter 'wait' must be a duration such as 30s, at most 5m");
      return false;
    }
  }
  return true;
}

int aggr_http_history_parse(struct aggr_history_query *hq, enum aggr_history_table table,
                            aggr_http_lookup lookup, void *user, char *err, size_t errsize) {
  static const char *const times[] = {"since", "until"};
  const char *v;
  uint64_t u;

  *hq = (struct aggr_history_query){.limit = 100};
  if (table != AGGR_HISTORY_CLUSTER)
    hq->node = lookup(user, "node");
  if (table == AGGR_HISTORY_CHANGES)
    hq->component = lookup(user, "component");
  if ((v = lookup(user, "limit"))) {
    if (!parse_u64(v, &u) || u < 1 || u > HISTORY_LIMIT_MAX) {
      snprintf(err, errsize, "parameter 'limit' must be an integer from 1 to %d",
               HISTORY_LIMIT_MAX);
      return -EINVAL;
    }
    hq->limit = (unsigned)u;
  }
  for (size_t i = 0; i < ELEMENTSOF(times); i++) {
    if (!(v = lookup(user, times[i])))
      continue;
    if (mst_time_parse_rfc3339(v, &u) < 0 || u == 0) {
      snprintf(err, errsize,
               "parameter '%s' must be an RFC 3339 time such as "
               "2026-11-25T01:02:03Z",
               times[i]);
      return -EINVAL;
    }
    if (i == 0)
      hq->since_ms = u / 1000;
    else
      hq->until_ms = u / 1000;
  }
  if ((v = lookup(user, "order"))) {
    if (strcmp(v, "asc") != 0 && strcmp(v, "desc") != 0) {
      snprintf(err, errsize, "parameter 'order' must be 'asc' or 'desc'");
      return -EINVAL;
    }
    hq->ascending = strcmp(v, "asc") == 0;
  }
  if ((v = lookup(user, "cursor")) && aggr_history_cursor_parse(v, hq, table, &hq->after_id) < 0) {
    snprintf(err, errsize, "parameter 'cursor' is not a cursor of this query");
    return -EINVAL;
  }
  return 0;
}

bool aggr_http_replicate_after_parse(const char *s, uint64_t *ret_after) {
  return !s || parse_u64(s, ret_after);
}

bool aggr_http_replicate_limit_parse(const char *s, unsigned *ret_limit) {
  uint64_t v;
  if (!s)
    return true;
  if (!parse_u64(s, &v) || v < 1 || v > 10000)
    return false;
  *ret_limit = (unsigned)v;
  return true;
}

bool aggr_http_etag_matches(const char *inm, uint64_t index) {
  char tag[32];
  if (!inm)
    return false;
  if (strcmp(inm, "*") == 0)
    return true;
  snprintf(tag, sizeof(tag), "\"%llu\"", (unsigned long long)index);
  /* A list of tags, each possibly weak. */
  for (const char *p = strstr(inm, tag); p; p = strstr(p + 1, tag)) {
    bool start_ok = p == inm || p[-1] == ' ' || p[-1] == ',' || p[-1] == '/';
    if (start_ok)
      return true;
  }
  return false;
}

/* --- history cursors ---------------------------------------------------------- */

/* A cursor is "<row id>.<a|d>.<check>", all hex, where check is an FNV-1a
 * hash of the id, the order and the filters: a cursor edited by hand, or
 * reused with other filters, is refused rather than silently misread. Row
 * ids only grow, so paging by id is stable while new rows arrive. */
static uint64_t cursor_check(const struct aggr_history_query *q, enum aggr_history_table table,
                             uint64_t id) {
  char buf[1024];
  uint64_t h = 0xcbf29ce484222325ULL;
  int n =
      snprintf(buf, sizeof(buf), "%d|%llu|%d|%s|%s|%llu|%llu", (int)table, (unsigned long long)id,
               q->ascending ? 1 : 0, q->node ? q->node : "", q->component ? q->component : "",
               (unsigned long long)q->since_ms, (unsigned long long)q->until_ms);
  for (int i = 0; i < n && i < (int)sizeof(buf); i++) {
    h ^= (unsigned char)buf[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

char *aggr_history_cursor_make(const struct aggr_history_query *q, enum aggr_history_table table,
                               uint64_t id) {
  char *c = NULL;
  if (asprintf(&c, "%llx.%c.%llx", (unsigned long long)id, q->ascending ? 'a' : 'd',
               (unsigned long long)cursor_check(q, table, id)) < 0)
    return NULL;
  return c;
}

int aggr_history_cursor_parse(const char *cursor, const struct aggr_history_query *q,
                              enum aggr_history_table table, uint64_t *ret_id) {
  unsigned long long id, check;
  char order, tail;
  if (sscanf(cursor, "%llx.%c.%llx%c", &id, &order, &check, &tail) != 3)
    return -EINVAL;
  if (order != (q->ascending ? 'a' : 'd') || id == 0 || check != cursor_check(q, table, id))
    return -EINVAL;
  *ret_id = id;
  return 0;
}

/* --- credentials ------------------------------------------------------------- */

const char *aggr_http_bearer_token(const char *header) {
  static const char scheme[] = "Bearer";
  const char *p = header;

  if (!p)
    return NULL;
  while (*p == ' ' || *p == '\t')
    p++;
  if (strncasecmp(p, scheme, strlen(scheme)) != 0)
    return NULL;
  p += strlen(scheme);
  if (*p != ' ' && *p != '\t')
    return NULL;
  while (*p == ' ' || *p == '\t')
    p++;
  return *p ? p : NULL;
}

/* --- writes ------------------------------------------------------------------ */

#define WRITE_NAME_MAX 256

static bool write_name_ok(const char *s, size_t len) {
  return len > 0 && len <= WRITE_NAME_MAX && !memchr(s, '/', len);
}

int aggr_http_write_route(const char *path, bool put, enum aggr_http_write_kind *ret_kind,
                          char **ret_node, char **ret_component) {
  static const char comp[] = "/components/";
  const char *id, *slash, *name = NULL, *tail;
  size_t id_len, name_len = 0;
  enum aggr_http_write_kind kind;

  if (!has_prefix(path, AGGR_HTTP_NODES_PREFIX))
    return -ENOENT;
  id = path + strlen(AGGR_HTTP_NODES_PREFIX);
  slash = strchr(id, '/');
  id_len = slash ? (size_t)(slash - id) : strlen(id);
  if (!slash) {
    if (put)
      return -ENOENT;
    kind = AGGR_HTTP_WRITE_FORGET;
  } else if (strcmp(slash, "/maintenance") == 0) {
    kind = put ? AGGR_HTTP_WRITE_MAINTENANCE_SET : AGGR_HTTP_WRITE_MAINTENANCE_CLEAR;
  } else if (has_prefix(slash, comp) && (tail = strrchr(slash, '/')) > slash + strlen(comp) - 1) {
    name = slash + strlen(comp);
    name_len = (size_t)(tail - name);
    if (strcmp(tail, "/maintenance") == 0)
      kind = put ? AGGR_HTTP_WRITE_MAINTENANCE_SET : AGGR_HTTP_WRITE_MAINTENANCE_CLEAR;
    else if (strcmp(tail, "/ack") == 0)
      kind = put ? AGGR_HTTP_WRITE_ACK_SET : AGGR_HTTP_WRITE_ACK_CLEAR;
    else
      return -ENOENT;
  } else
    return -ENOENT;
  if (!write_name_ok(id, id_len) || (name && !write_name_ok(name, name_len)))
    return -EINVAL;
  char *node = strndup(id, id_len), *component = name ? strndup(name, name_len) : NULL;
  if (!node || (name && !component)) {
    free(node);
    free(component);
    return -ENOMEM;
  }
  *ret_kind = kind;
  *ret_node = node;
  *ret_component = component;
  return 0;
}
