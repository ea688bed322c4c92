/* libFuzzer target: what the aggregator's HTTP API parses of a request
 * (aggregatord/serve/httpparse.c): the route of the path (and the node id of
 * /v1/nodes/{id}), the query of the route as serve_v1() checks it (allowed
 * names, value caps, ?index=&wait=), the /v1/history filters and cursor,
 * the replication reads' after= and limit=, and If-None-Match.
 *
 * Input: line 1 is the request target as sent ("/v1/history?limit=5&..."),
 * percent-decoded here the way libmicrohttpd decodes it; line 2, if any, is
 * the If-None-Match header. Invariants: what is accepted is in range, a
 * cursor made for the parsed query reads back, and a parsed time prints and
 * reads back to the millisecond. DC/OS's paths (dcos.h): the router answers
 * only 301, 404 or 405 by itself, and a 301's target routes without another
 * redirect.
 * Seeds: typical targets (make_corpus.py). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "serve/dcos.h"
#include "serve/httpparse.h"
#include "mst/macro.h"
#include "mst/time.h"

#define MAX_PARAMS 64

struct params {
  size_t n;
  char *key[MAX_PARAMS];
  char *value[MAX_PARAMS]; /* NULL: "key" without '=' */
};

static int hex(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Decodes %XX in place (and '+' as a space in the query), like MHD. A %00
 * ends the string, as it does for MHD's C strings. */
static void unescape(char *s, bool plus) {
  char *o = s;
  for (char *i = s; *i; i++) {
    if (*i == '%' && hex(i[1]) >= 0 && hex(i[2]) >= 0) {
      *o++ = (char)(hex(i[1]) * 16 + hex(i[2]));
      i += 2;
    } else if (plus && *i == '+')
      *o++ = ' ';
    else
      *o++ = *i;
  }
  *o = '\0';
}

static void params_split(struct params *ps, char *query) {
  ps->n = 0;
  for (char *tok = strtok(query, "&"); tok && ps->n < MAX_PARAMS; tok = strtok(NULL, "&")) {
    char *eq = strchr(tok, '=');
    if (eq)
      *eq = '\0';
    unescape(tok, true);
    if (eq)
      unescape(eq + 1, true);
    ps->key[ps->n] = tok;
    ps->value[ps->n] = eq ? eq + 1 : NULL;
    ps->n++;
  }
}

static const char *params_lookup(void *user, const char *key) {
  const struct params *ps = user;
  for (size_t i = 0; i < ps->n; i++)
    if (strcmp(ps->key[i], key) == 0)
      return ps->value[i];
  return NULL;
}

static void check_time(const char *s) {
  uint64_t usec, again;
  char buf[MST_RFC3339_MAX];

  if (!s || mst_time_parse_rfc3339(s, &usec) < 0)
    return;
  mst_time_format_rfc3339(usec, buf, sizeof(buf));
  FUZZ_CHECK(mst_time_parse_rfc3339(buf, &again) == 0);
  FUZZ_CHECK(again == usec - usec % USEC_PER_MSEC);
}

static void check_history(struct params *ps, enum aggr_history_table table, uint64_t index) {
  struct aggr_history_query hq;
  char err[160] = "";

  check_time(params_lookup(ps, "since"));
  check_time(params_lookup(ps, "until"));
  if (aggr_http_history_parse(&hq, table, params_lookup, ps, err, sizeof(err)) < 0) {
    FUZZ_CHECK(err[0] && memchr(err, '\0', sizeof(err)));
    return;
  }
  FUZZ_CHECK(hq.limit >= 1 && hq.limit <= 1000);
  FUZZ_CHECK(table != AGGR_HISTORY_CLUSTER || (!hq.node && !hq.component));
  FUZZ_CHECK(table == AGGR_HISTORY_CHANGES || !hq.component);

  /* The cursor of the next page reads back to its row, and only for the
   * same query. */
  uint64_t id = index ? index : 1, got = 0;
  char *cursor = aggr_history_cursor_make(&hq, table, id);
  FUZZ_CHECK(cursor);
  FUZZ_CHECK(aggr_history_cursor_parse(cursor, &hq, table, &got) == 0 && got == id);
  hq.ascending = !hq.ascending;
  FUZZ_CHECK(aggr_history_cursor_parse(cursor, &hq, table, &got) < 0);
  free(cursor);
}

/* DC/OS's router (dcos.c) on path (after the prefix) and the raw query:
 * follows its redirects, of which there are at most two (a clean path, then
 * its trailing slash), as gorilla/mux's. */
static void check_dcos(const char *path, const char *query) {
  size_t n = strlen(AGGR_DCOS_PREFIX);
  char *cur = strdup(path);
  for (int hops = 0; cur; hops++) {
    struct aggr_dcos_reply r;
    enum aggr_dcos_route route = aggr_dcos_route(cur, query, true, &r);
    free(cur);
    cur = NULL;
    if (route == AGGR_DCOS_ANSWERED) {
      FUZZ_CHECK(r.status == 301 || r.status == 404 || r.status == 405);
      FUZZ_CHECK(r.body && strlen(r.body) == r.len);
      FUZZ_CHECK((r.status == 301) == (r.location != NULL));
      FUZZ_CHECK(r.status != 301 || hops < 2);
      if (r.location && strncmp(r.location, AGGR_DCOS_PREFIX, n) == 0 &&
          (r.location[n] == '\0' || r.location[n] == '/' || r.location[n] == '?')) {
        char *q;
        cur = strdup(r.location + n);
        if (cur && (q = strchr(cur, '?')))
          *q = '\0';
      }
    } else if (route != AGGR_DCOS_FAILED) {
      FUZZ_CHECK(!r.body && !r.location);
      /* Other methods on a route the path names: 405. */
      FUZZ_CHECK(aggr_dcos_route(path, query, false, &r) != AGGR_DCOS_ANSWERED || r.status == 405 ||
                 r.status == 301);
    }
    aggr_dcos_reply_done(&r);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *const history_params[] = {"node",  "component", "since", "until", "limit",
                                               "order", "cursor",    "index", "wait",  NULL};
  static const char *const cluster_params[] = {"since",  "until", "limit", "order",
                                               "cursor", "index", "wait",  NULL};
  static const char *const nodes_params[] = {"node",   "since", "until", "limit", "order",
                                             "cursor", "index", "wait",  NULL};
  struct params ps;
  struct aggr_http_query q;
  char *buf, *path, *query, *inm;

  buf = malloc(size + 1);
  if (!buf)
    return 0;
  memcpy(buf, data, size);
  buf[size] = '\0';
  path = buf;
  inm = strchr(buf, '\n');
  if (inm)
    *inm++ = '\0';
  query = strchr(path, '?');
  if (query)
    *query++ = '\0';
  unescape(path, false);
  char *raw_query = query ? strdup(query) : NULL;
  params_split(&ps, query ? query : (char[]){""});

  enum aggr_http_route route = aggr_http_route_of(path);
  if (route == AGGR_HTTP_ROUTE_NODE) {
    const char *node = aggr_http_route_node(path);
    FUZZ_CHECK(node > path && node[0] &&
               strncmp(path, AGGR_HTTP_NODES_PREFIX, strlen(AGGR_HTTP_NODES_PREFIX)) == 0);
    /* The writes' routes (issue 19): names are never empty, never hold a
     * '/', and the node id is a prefix of the path's tail. */
    for (int put = 0; put <= 1; put++) {
      enum aggr_http_write_kind kind;
      char *wnode = NULL, *wcomp = NULL;
      if (aggr_http_write_route(path, put, &kind, &wnode, &wcomp) == 0) {
        FUZZ_CHECK(wnode[0] && !strchr(wnode, '/') && strncmp(node, wnode, strlen(wnode)) == 0);
        FUZZ_CHECK(!wcomp || (wcomp[0] && !strchr(wcomp, '/')));
        FUZZ_CHECK(put || kind != AGGR_HTTP_WRITE_MAINTENANCE_SET);
      }
      free(wnode);
      free(wcomp);
    }
  }

  if (route == AGGR_HTTP_ROUTE_DCOS)
    check_dcos(path + strlen(AGGR_DCOS_PREFIX), raw_query);
  free(raw_query);

  if (route == AGGR_HTTP_ROUTE_REPLICATE || route == AGGR_HTTP_ROUTE_REPLICATE_VERDICTS) {
    uint64_t after = 0;
    unsigned limit = 1000;
    (void)aggr_http_replicate_after_parse(params_lookup(&ps, "after"), &after);
    if (aggr_http_replicate_limit_parse(params_lookup(&ps, "limit"), &limit))
      FUZZ_CHECK(limit >= 1 && limit <= 10000);
  } else {
    aggr_http_query_init(&q, route == AGGR_HTTP_ROUTE_HISTORY           ? history_params
                             : route == AGGR_HTTP_ROUTE_HISTORY_CLUSTER ? cluster_params
                             : route == AGGR_HTTP_ROUTE_HISTORY_NODES   ? nodes_params
                                                                        : NULL);
    for (size_t i = 0; i < ps.n; i++)
      if (!aggr_http_query_check_param(&q, ps.key[i], ps.value[i]))
        break;
    if (aggr_http_query_parse_blocking(&q, params_lookup, &ps)) {
      FUZZ_CHECK(!q.error[0]);
      FUZZ_CHECK(q.wait_usec <= 300 * USEC_PER_SEC);
      if (route == AGGR_HTTP_ROUTE_HISTORY)
        check_history(&ps, AGGR_HISTORY_CHANGES, q.index);
      else if (route == AGGR_HTTP_ROUTE_HISTORY_CLUSTER)
        check_history(&ps, AGGR_HISTORY_CLUSTER, q.index);
      else if (route == AGGR_HTTP_ROUTE_HISTORY_NODES)
        check_history(&ps, AGGR_HISTORY_NODES, q.index);
    } else {
      FUZZ_CHECK(q.error[0] && memchr(q.error, '\0', sizeof(q.error)));
    }
    (void)aggr_http_etag_matches(inm, q.index);
  }
  free(buf);
  return 0;
}
