/* History reads for the HTTP threads; see history.h. Each HTTP thread opens
 * its own read-only connection the first time it needs one (thread-specific
 * data, closed by its destructor when the thread ends), so handlers neither
 * share a connection nor take a lock around SQLite. */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "serve/history.h"
#include "mst/log.h"
#include "mst/store.h"
#include "mst/time.h"

static char *history_path;
static pthread_key_t history_key;
static pthread_once_t history_once = PTHREAD_ONCE_INIT;

static void history_db_close(void *db) {
  sqlite3_close_v2(db);
}

static void history_key_make(void) {
  (void)pthread_key_create(&history_key, history_db_close);
}

void aggr_history_init(const char *database) {
  pthread_once(&history_once, history_key_make);
  free(history_path);
  history_path = database ? strdup(database) : NULL;
}

void aggr_history_done(void) {
  free(history_path);
  history_path = NULL;
}

static int history_db(sqlite3 **ret) {
  sqlite3 *db = pthread_getspecific(history_key);
  if (!db) {
    int r;
    if (!history_path)
      return -ENOENT;
    r = mst_store_open(history_path, MST_STORE_READONLY, &db);
    if (r < 0)
      return r;
    if (pthread_setspecific(history_key, db) != 0) {
      sqlite3_close_v2(db);
      return -ENOMEM;
    }
  }
  *ret = db;
  return 0;
}

static const char *col_text(sqlite3_stmt *st, int i) {
  const unsigned char *t = sqlite3_column_text(st, i);
  return t ? (const char *)t : "";
}

/* A page's object {key:[]}, with the array in *ret_rows (owned by the
 * object). NULL on ENOMEM. */
static json_t *page_root_new(const char *key, json_t **ret_rows) {
  json_t *root = json_object(), *rows = json_array();
  if (!root || !rows) {
    json_decref(root);
    json_decref(rows);
    return NULL;
  }
  if (json_object_set_new(root, key, rows) < 0) { /* it took rows, failing or not */
    json_decref(root);
    return NULL;
  }
  *ret_rows = rows;
  return root;
}

/* One page of a table for a follower's warm copy: the rows with id > after,
 * oldest first, as {"rows":[...],"last_id":N}. row_json turns the current
 * row into its object (column 0 is always the id). */
static int replicate_page_json(const char *sql, json_t *(*row_json)(sqlite3_stmt *st),
                               uint64_t after, unsigned limit, char **ret_body, size_t *ret_len) {
  _cleanup_stmt_ sqlite3_stmt *st = NULL;
  json_t *root, *rows;
  sqlite3 *db;
  uint64_t last = after;
  int rc, r;

  r = history_db(&db);
  if (r < 0)
    return r;
  rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc != SQLITE_OK) {
    log_error("history: cannot query for a follower: %s", sqlite3_errmsg(db));
    return mst_store_errno(rc);
  }
  sqlite3_bind_int64(st, 1, (sqlite3_int64)after);
  sqlite3_bind_int(st, 2, (int)limit);
  if (!(root = page_root_new("rows", &rows)))
    return -ENOMEM;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    json_t *row = row_json(st);
    if (!row || json_array_append_new(rows, row) < 0) {
      json_decref(root);
      return -ENOMEM;
    }
    last = (uint64_t)sqlite3_column_int64(st, 0);
  }
  if (rc != SQLITE_DONE) {
    log_error("history: reading for a follower failed: %s", sqlite3_errmsg(db));
    json_decref(root);
    return mst_store_errno(rc);
  }
  json_object_set_new(root, "last_id", json_integer((json_int_t)last));
  *ret_body = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  if (!*ret_body)
    return -ENOMEM;
  *ret_len = strlen(*ret_body);
  return 0;
}

static json_t *change_row_json(sqlite3_stmt *st) {
  return json_pack("{sI ss ss sI ss ss ss ss sI ss ss si si si sI sI}", "id",
                   (json_int_t)sqlite3_column_int64(st, 0), "node_id", col_text(st, 1), "spool_id",
                   col_text(st, 2), "seq", (json_int_t)sqlite3_column_int64(st, 3), "component",
                   col_text(st, 4), "check", col_text(st, 5), "from", col_text(st, 6), "to",
                   col_text(st, 7), "at_ms", (json_int_t)sqlite3_column_int64(st, 8), "output",
                   col_text(st, 9), "boot_id", col_text(st, 10), "health",
                   sqlite3_column_int(st, 11), "rise", sqlite3_column_int(st, 12), "fall",
                   sqlite3_column_int(st, 13), "epoch", (json_int_t)sqlite3_column_int64(st, 14),
                   "received_ms", (json_int_t)sqlite3_column_int64(st, 15));
}

static json_t *verdict_row_json(sqlite3_stmt *st) {
  return json_pack("{sI ss sI ss sI}", "id", (json_int_t)sqlite3_column_int64(st, 0), "verdict",
                   col_text(st, 1), "at_ms", (json_int_t)sqlite3_column_int64(st, 2), "reasons",
                   col_text(st, 3), "epoch", (json_int_t)sqlite3_column_int64(st, 4));
}

int aggr_history_replicate_json(uint64_t after, unsigned limit, char **ret_body, size_t *ret_len) {
  return replicate_page_json("SELECT id, node_id, spool_id, seq, component, check_kind, from_state,"
                             " to_state, at_ms, output, boot_id, health, rise, fall, epoch,"
                             " received_ms FROM changes WHERE id > ? ORDER BY id LIMIT ?",
                             change_row_json, after, limit, ret_body, ret_len);
}

int aggr_history_replicate_verdicts_json(uint64_t after, unsigned limit, char **ret_body,
                                         size_t *ret_len) {
  return replicate_page_json("SELECT id, verdict, at_ms, reasons, epoch FROM cluster_verdicts"
                             " WHERE id > ? ORDER BY id LIMIT ?",
                             verdict_row_json, after, limit, ret_body, ret_len);
}

/* --- paged history ----------------------------------------------------------- */

static json_t *time_json(int64_t ms) {
  char buf[MST_RFC3339_MAX];
  if (ms <= 0)
    return json_null();
  return json_string(mst_time_format_rfc3339((uint64_t)ms * 1000, buf, sizeof(buf)));
}

/* Builds "WHERE ..." for the filters; binds come in a fixed order. */
static int page_query(sqlite3 *db, const struct aggr_history_query *q,
                      enum aggr_history_table table, sqlite3_stmt **ret) {
  static const char *const select[] = {
      [AGGR_HISTORY_CHANGES] = "SELECT id, node_id, component, boot_id, seq, from_state, to_state,"
                               " at_ms, output, check_kind, epoch FROM changes",
      [AGGR_HISTORY_CLUSTER] = "SELECT id, verdict, at_ms, reasons, epoch FROM cluster_verdicts",
      [AGGR_HISTORY_NODES] = "SELECT id, node_id, event, at_ms, peer, boot_id, detail, epoch"
                             " FROM node_events",
  };
  char sql[1024];
  const char *time_col = "at_ms";
  int n = snprintf(sql, sizeof(sql), "%s WHERE 1", select[table]);
  if (table != AGGR_HISTORY_CLUSTER && q->node)
    n += snprintf(sql + n, sizeof(sql) - (size_t)n, " AND node_id = :node");
  if (table == AGGR_HISTORY_CHANGES && q->component)
    n += snprintf(sql + n, sizeof(sql) - (size_t)n, " AND component = :component");
  if (q->since_ms)
    n += snprintf(sql + n, sizeof(sql) - (size_t)n, " AND %s >= :since", time_col);
  if (q->until_ms)
    n += snprintf(sql + n, sizeof(sql) - (size_t)n, " AND %s < :until", time_col);
  if (q->after_id)
    n += snprintf(sql + n, sizeof(sql) - (size_t)n, " AND id %s :after", q->ascending ? ">" : "<");
  snprintf(sql + n, sizeof(sql) - (size_t)n, " ORDER BY id %s LIMIT :limit",
           q->ascending ? "ASC" : "DESC");
  int rc = sqlite3_prepare_v2(db, sql, -1, ret, NULL);
  if (rc != SQLITE_OK) {
    log_error("history: cannot query: %s", sqlite3_errmsg(db));
    return mst_store_errno(rc);
  }
  sqlite3_stmt *st = *ret;
  if (q->node)
    sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":node"), q->node, -1, SQLITE_STATIC);
  if (q->component)
    sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":component"), q->component, -1,
                      SQLITE_STATIC);
  if (q->since_ms)
    sqlite3_bind_int64(st, sqlite3_bind_parameter_index(st, ":since"), (int64_t)q->since_ms);
  if (q->until_ms)
    sqlite3_bind_int64(st, sqlite3_bind_parameter_index(st, ":until"), (int64_t)q->until_ms);
  if (q->after_id)
    sqlite3_bind_int64(st, sqlite3_bind_parameter_index(st, ":after"), (int64_t)q->after_id);
  /* One row more than asked tells whether there is a next page. */
  sqlite3_bind_int(st, sqlite3_bind_parameter_index(st, ":limit"), (int)q->limit + 1);
  return 0;
}

/* One row of a page as the API shows it. */
static json_t *page_row_json(sqlite3_stmt *st, enum aggr_history_table table) {
  if (table == AGGR_HISTORY_CLUSTER) {
    json_error_t err;
    json_t *reasons = json_loads(col_text(st, 3), 0, &err);
    return json_pack("{ss so so sI}", "verdict", col_text(st, 1), "at",
                     time_json(sqlite3_column_int64(st, 2)), "reasons",
                     reasons ? reasons : json_array(), "epoch",
                     (json_int_t)sqlite3_column_int64(st, 4));
  }
  if (table == AGGR_HISTORY_NODES)
    return json_pack("{ss ss so ss ss ss sI}", "node", col_text(st, 1), "event", col_text(st, 2),
                     "at", time_json(sqlite3_column_int64(st, 3)), "peer", col_text(st, 4),
                     "boot_id", col_text(st, 5), "detail", col_text(st, 6), "epoch",
                     (json_int_t)sqlite3_column_int64(st, 7));
  return json_pack("{ss ss ss sI ss ss so ss ss sI}", "node", col_text(st, 1), "component",
                   col_text(st, 2), "boot_id", col_text(st, 3), "seq",
                   (json_int_t)sqlite3_column_int64(st, 4), "from", col_text(st, 5), "to",
                   col_text(st, 6), "at", time_json(sqlite3_column_int64(st, 7)), "output",
                   col_text(st, 8), "check", col_text(st, 9), "epoch",
                   (json_int_t)sqlite3_column_int64(st, 10));
}

static int history_page_json(const struct aggr_history_query *q, enum aggr_history_table table,
                             char **ret_body, size_t *ret_len) {
  _cleanup_stmt_ sqlite3_stmt *st = NULL;
  json_t *root, *rows;
  sqlite3 *db;
  uint64_t last_id = 0;
  unsigned count = 0;
  bool more = false;
  int rc, r;

  r = history_db(&db);
  if (r < 0)
    return r;
  r = page_query(db, q, table, &st);
  if (r < 0)
    return r;
  if (!(root = page_root_new(table == AGGR_HISTORY_NODES ? "events" : "changes", &rows)))
    return -ENOMEM;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    json_t *row;
    if (count == q->limit) {
      more = true;
      break;
    }
    row = page_row_json(st, table);
    if (!row || json_array_append_new(rows, row) < 0) {
      json_decref(root);
      return -ENOMEM;
    }
    last_id = (uint64_t)sqlite3_column_int64(st, 0);
    count++;
  }
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
    log_error("history: reading failed: %s", sqlite3_errmsg(db));
    json_decref(root);
    return mst_store_errno(rc);
  }
  if (more) {
    char *c = aggr_history_cursor_make(q, table, last_id);
    json_object_set_new(root, "next_cursor", c ? json_string(c) : json_null());
    free(c);
  } else
    json_object_set_new(root, "next_cursor", json_null());
  *ret_body = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  if (!*ret_body)
    return -ENOMEM;
  *ret_len = strlen(*ret_body);
  return 0;
}

int aggr_history_changes_json(const struct aggr_history_query *q, char **ret_body,
                              size_t *ret_len) {
  return history_page_json(q, AGGR_HISTORY_CHANGES, ret_body, ret_len);
}

int aggr_history_cluster_json(const struct aggr_history_query *q, char **ret_body,
                              size_t *ret_len) {
  return history_page_json(q, AGGR_HISTORY_CLUSTER, ret_body, ret_len);
}

int aggr_history_nodes_json(const struct aggr_history_query *q, char **ret_body, size_t *ret_len) {
  return history_page_json(q, AGGR_HISTORY_NODES, ret_body, ret_len);
}
