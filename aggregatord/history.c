/* History reads for the HTTP threads; see history.h. Each HTTP thread opens
 * its own read-only connection the first time it needs one (thread-specific
 * data, closed by its destructor when the thread ends), so handlers neither
 * share a connection nor take a lock around SQLite. */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "history.h"
#include "mst/log.h"
#include "mst/store.h"

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

int aggr_history_replicate_json(uint64_t after, unsigned limit, char **ret_body, size_t *ret_len) {
  _cleanup_stmt_ sqlite3_stmt *st = NULL;
  json_t *root = NULL, *rows;
  sqlite3 *db;
  uint64_t last = after;
  int rc, r;

  r = history_db(&db);
  if (r < 0)
    return r;
  rc = sqlite3_prepare_v2(db,
                          "SELECT id, node_id, spool_id, seq, component, check_kind, from_state,"
                          " to_state, at_ms, output, boot_id, health, rise, fall, epoch,"
                          " received_ms FROM changes WHERE id > ? ORDER BY id LIMIT ?",
                          -1, &st, NULL);
  if (rc != SQLITE_OK) {
    log_error("history: cannot query changes: %s", sqlite3_errmsg(db));
    return mst_store_errno(rc);
  }
  sqlite3_bind_int64(st, 1, (sqlite3_int64)after);
  sqlite3_bind_int(st, 2, (int)limit);
  root = json_object();
  rows = json_array();
  if (!root || !rows) {
    json_decref(root);
    json_decref(rows);
    return -ENOMEM;
  }
  json_object_set_new(root, "rows", rows);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    json_t *row = json_pack(
        "{sI ss ss sI ss ss ss ss sI ss ss si si si sI sI}", "id",
        (json_int_t)sqlite3_column_int64(st, 0), "node_id", col_text(st, 1), "spool_id",
        col_text(st, 2), "seq", (json_int_t)sqlite3_column_int64(st, 3), "component",
        col_text(st, 4), "check", col_text(st, 5), "from", col_text(st, 6), "to", col_text(st, 7),
        "at_ms", (json_int_t)sqlite3_column_int64(st, 8), "output", col_text(st, 9), "boot_id",
        col_text(st, 10), "health", sqlite3_column_int(st, 11), "rise", sqlite3_column_int(st, 12),
        "fall", sqlite3_column_int(st, 13), "epoch", (json_int_t)sqlite3_column_int64(st, 14),
        "received_ms", (json_int_t)sqlite3_column_int64(st, 15));
    if (!row || json_array_append_new(rows, row) < 0) {
      json_decref(root);
      return -ENOMEM;
    }
    last = (uint64_t)sqlite3_column_int64(st, 0);
  }
  if (rc != SQLITE_DONE) {
    log_error("history: reading changes failed: %s", sqlite3_errmsg(db));
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
