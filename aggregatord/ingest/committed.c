/* The writer's completions on the loop (committed.h). */
#include "aggr.h"
#include "ingest/committed.h"
#include "ingest/conn.h"
#include "ingest/writer.h"
#include "operate.h"
#include "mst/log.h"
#include "publish.h"
#include "serve/metrics.h"

/* The writer's storage state into the model and the metrics (writer.h),
 * published at once: /readyz, /v1/health and /metrics say it. */
static void storage_update(struct aggr *a) {
  char *failing = NULL;
  bool lost = false;
  int r = aggr_writer_storage(a->writer, &failing, &lost);
  if (r < 0)
    log_error("out of memory reading the storage state, ignoring");
  if (r <= 0)
    return;
  aggr_model_set_storage(&a->model, failing, lost);
  aggr_metrics_storage_failing(failing != NULL);
  aggr_request_publish(a, true);
}

static int writer_done(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
  struct aggr *a = userdata;
  size_t n = 0;
  struct aggr_commit *done = aggr_writer_collect(a->writer, &n);
  for (size_t i = 0; i < n; i++) {
    if (done[i].operator_ticket) {
      aggr_operate_committed(a, done[i].operator_ticket, done[i].ok);
      continue;
    }
    if (done[i].spool) {
      if (done[i].ok)
        aggr_spool_held(done[i].spool, done[i].seq, done[i].fp);
      aggr_conn_committed(a, done[i].spool, done[i].seq, done[i].ok);
      continue;
    }
    /* Copied from the leader: what this aggregator holds grew. */
    if (done[i].ok && done[i].node_id && done[i].spool_id &&
        aggr_spools_copied(&a->spools, done[i].node_id, done[i].spool_id, done[i].seq, done[i].fp) <
            0)
      log_error("out of memory recording a copied commit of %s, ignoring", done[i].node_id);
  }
  aggr_commits_free(done, n);
  storage_update(a);
  return 0;
}

int aggr_committed_watch(struct aggr *a) {
  return sd_event_add_io(a->event, &a->writer_source, aggr_writer_fd(a->writer), EPOLLIN,
                         writer_done, a);
}
