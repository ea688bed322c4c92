/* Reading the history database back at start (restore.h). Nodes known from
 * an earlier run show what is known of them until their agents return, and
 * turn unreachable stale_timeout after this aggregator began to lead
 * (aggr_node_silent_from); spools resume at what was committed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/restore.h"
#include "ingest/spools.h"
#include "model/model.h"
#include "model/stage.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/store.h"
#include "mst/time.h"

int aggr_restore(sqlite3 *db, struct aggr_spools *spools, struct aggr_model *model,
                 struct aggr_stage *stage, uint64_t *ret_epoch) {
  _cleanup_stmt_ sqlite3_stmt *st = NULL;
  uint64_t epoch = 1;
  char buf[32];
  int rc;

  rc = sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'epoch'", -1, &st, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  if (sqlite3_step(st) == SQLITE_ROW)
    epoch = strtoull((const char *)sqlite3_column_text(st, 0), NULL, 10) + 1;
  sqlite3_finalize(TAKE_PTR(st));
  snprintf(buf, sizeof(buf), "%llu", (unsigned long long)epoch);
  rc = sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', ?)", -1,
                          &st, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  sqlite3_bind_text(st, 1, buf, -1, SQLITE_STATIC);
  if (sqlite3_step(st) != SQLITE_DONE)
    goto fail;
  sqlite3_finalize(TAKE_PTR(st));

  rc = sqlite3_prepare_v2(db, "SELECT node_id, spool_id, held_seq, held_fp FROM spools", -1, &st,
                          NULL);
  if (rc != SQLITE_OK)
    goto fail;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct aggr_spool *sp = aggr_spools_get(spools, (const char *)sqlite3_column_text(st, 0),
                                            (const char *)sqlite3_column_text(st, 1));
    if (!sp)
      return -ENOMEM;
    sp->held_seq = sp->received_seq = (uint64_t)sqlite3_column_int64(st, 2);
    sp->held_fp = (uint64_t)sqlite3_column_int64(st, 3);
  }
  if (rc != SQLITE_DONE)
    goto fail;
  sqlite3_finalize(TAKE_PTR(st));

  /* Known nodes, with their last contact, until they return. A node whose
   * reachability history ends in "unreachable" is still unreachable as far
   * as history knows: its return is recorded as "reachable", and silence
   * going on is not recorded a second time. */
  rc = sqlite3_prepare_v2(db,
                          "SELECT n.node_id, n.role, n.hostname, n.first_seen_ms, n.last_seen_ms,"
                          " e.at_ms FROM nodes n LEFT JOIN node_events e ON e.id ="
                          " (SELECT max(id) FROM node_events WHERE node_id = n.node_id"
                          " AND event IN ('connected', 'disconnected', 'unreachable',"
                          " 'reachable'))"
                          " AND e.event = 'unreachable'",
                          -1, &st, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct aggr_node *n = aggr_model_get(model, (const char *)sqlite3_column_text(st, 0));
    if (!n)
      return -ENOMEM;
    if (aggr_node_apply_restored(n, (const char *)sqlite3_column_text(st, 1),
                                 (const char *)sqlite3_column_text(st, 2),
                                 (uint64_t)sqlite3_column_int64(st, 3) * USEC_PER_MSEC,
                                 (uint64_t)sqlite3_column_int64(st, 4) * USEC_PER_MSEC) < 0)
      return -ENOMEM;
    if (sqlite3_column_type(st, 5) != SQLITE_NULL)
      n->unreachable_usec = (uint64_t)MST_MAX(sqlite3_column_int64(st, 5), 1) * USEC_PER_MSEC;
  }
  if (rc != SQLITE_DONE)
    goto fail;
  sqlite3_finalize(TAKE_PTR(st));

  /* Stage completions, oldest first: the durations the estimates learn
   * from, and the stages each node's latest boot already reached. */
  rc = sqlite3_prepare_v2(db,
                          "SELECT c.node_id, c.role, c.boot_id, coalesce(b.boot_time_ms, 0),"
                          " c.stage, c.reached_ms, c.duration_ms FROM stage_completions c"
                          " LEFT JOIN boots b USING (node_id, boot_id) ORDER BY c.reached_ms",
                          -1, &st, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    int64_t boot_ms = sqlite3_column_int64(st, 3), reached_ms = sqlite3_column_int64(st, 5),
            duration_ms = sqlite3_column_int64(st, 6);
    if (aggr_stage_restore(
            stage, model, (const char *)sqlite3_column_text(st, 0),
            (const char *)sqlite3_column_text(st, 1), (const char *)sqlite3_column_text(st, 2),
            (uint64_t)MST_MAX(boot_ms, 0) * USEC_PER_MSEC, (const char *)sqlite3_column_text(st, 4),
            (uint64_t)MST_MAX(reached_ms, 0) * USEC_PER_MSEC,
            (uint64_t)MST_MAX(duration_ms, 0) * USEC_PER_MSEC) < 0)
      return -ENOMEM;
  }
  if (rc != SQLITE_DONE)
    goto fail;
  sqlite3_finalize(TAKE_PTR(st));

  /* Operator state (issue 19), as a standalone aggregator stored it; with
   * ZooKeeper the znode's replaces it once read. A document that does not
   * parse is logged and left out: the cluster is then watched as if no
   * operator had said anything, which is safe. */
  rc = sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'operator'", -1, &st, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct aggr_operator op;
    char err[160];
    int k = aggr_operator_from_json((const char *)sqlite3_column_text(st, 0),
                                    (size_t)sqlite3_column_bytes(st, 0), &op, err, sizeof(err));
    if (k == -ENOMEM)
      return k;
    if (k < 0)
      log_error("the operator state in the database is not readable: %s, ignoring", err);
    else
      (void)aggr_model_set_operator(model, &op);
  } else if (rc != SQLITE_DONE)
    goto fail;
  *ret_epoch = epoch;
  return 0;

fail:
  log_error("cannot read the history database: %s", sqlite3_errmsg(db));
  return -EIO;
}
