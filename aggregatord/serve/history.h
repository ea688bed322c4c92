/* Reads of the history database for HTTP handlers, on read-only SQLite
 * connections: one per HTTP thread, opened on first use and kept, so a query
 * never runs on the loop or writer threads and never waits for a writer
 * (WAL readers do not block). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Sets the database path (once, at start, before HTTP threads run). */
void aggr_history_init(const char *database);

/* Forgets the path (at exit, after the HTTP threads have ended; their
 * connections are closed as each thread ends). */
void aggr_history_done(void);

/* Renders up to limit rows of the changes table with id > after, oldest
 * first, as {"rows":[...],"last_id":N} for followers to copy. Returns 0 with
 * a malloc'd body, or -errno. Any thread. */
int aggr_history_replicate_json(uint64_t after, unsigned limit, char **ret_body, size_t *ret_len);

/* The same for the cluster verdict changes. */
int aggr_history_replicate_verdicts_json(uint64_t after, unsigned limit, char **ret_body,
                                         size_t *ret_len);

/* Which history a query reads. */
enum aggr_history_table {
  AGGR_HISTORY_CHANGES, /* GET /v1/history: component state changes */
  AGGR_HISTORY_CLUSTER, /* GET /v1/history/cluster: cluster verdict changes */
  AGGR_HISTORY_NODES,   /* GET /v1/history/nodes: nodes' reachability events */
};

/* A history query, already validated by the HTTP layer. */
struct aggr_history_query {
  const char *node;            /* NULL: every node (changes and node events) */
  const char *component;       /* NULL: every component (changes only) */
  uint64_t since_ms, until_ms; /* 0: unbounded */
  unsigned limit;
  bool ascending;
  uint64_t after_id; /* from the cursor; 0: first page */
};

/* Parses an opaque cursor made by a previous page of the same query.
 * Returns 0 and the row id to continue after, or -EINVAL when it is not
 * one of ours or belongs to other filters. (httpparse.c, with _make.) */
int aggr_history_cursor_parse(const char *cursor, const struct aggr_history_query *q,
                              enum aggr_history_table table, uint64_t *ret_id);

/* The cursor of the page after row id for query q: malloc'd, or NULL. */
char *aggr_history_cursor_make(const struct aggr_history_query *q, enum aggr_history_table table,
                               uint64_t id);

/* GET /v1/history: {"changes":[...],"next_cursor":...}. Returns 0 with a
 * malloc'd body, or -errno. Any thread (its own read-only connection). */
int aggr_history_changes_json(const struct aggr_history_query *q, char **ret_body, size_t *ret_len);

/* GET /v1/history/cluster: cluster verdict changes, same paging. */
int aggr_history_cluster_json(const struct aggr_history_query *q, char **ret_body, size_t *ret_len);

/* GET /v1/history/nodes: {"events":[...],"next_cursor":...}, the nodes'
 * reachability events (connected, disconnected, unreachable, reachable),
 * same paging. */
int aggr_history_nodes_json(const struct aggr_history_query *q, char **ret_body, size_t *ret_len);
