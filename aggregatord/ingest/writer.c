/* The SQLite writer thread: the only code that writes the history database.
 *
 * DESIGN. The loop thread appends jobs to an in-memory queue under a mutex
 * and signals a condition variable; it never waits on SQLite. The writer
 * thread takes the whole queue at once (up to a cap), writes it in a single
 * transaction and commits: every job that arrived while the previous commit
 * was being fsync'd rides in the next one (group commit). For each spool the
 * transaction touched it then reports the highest committed seq through a
 * result queue and an eventfd. The loop collects those and only then sends
 * Acks. If a commit fails, the spools are reported as failed, so the loop can
 * drop the streams and let the agents replay: nothing unacknowledged is lost
 * and nothing is acknowledged that is not on disk.
 *
 * STORAGE STATE. A failed commit (a full disk, an I/O error) also marks the
 * storage as failing, with SQLite's message and the path. It is healthy
 * again once commits succeed and none failed for STORAGE_RECOVERED_USEC: on
 * a disk that is nearly full, small commits that fit between large ones
 * that do not would otherwise make /readyz flap. The writer reports each change of
 * that state through the same eventfd (aggr_writer_storage()), and the loop
 * puts it in the model: /readyz, /v1/health and /metrics say so.
 *
 * A DELETED DATABASE. SQLite goes on writing into a database file that was
 * unlinked while open, and every commit into it would be acknowledged and
 * then lost at the next restart. So the writer keeps a descriptor of the
 * file it opened and, before each commit and once a second while idle,
 * checks that the file still has a link and that the path still names it.
 * Once it does not, every transaction is rolled back (the agents keep their
 * spools) and the storage stays failing until a restart: no later commit can
 * make the unlinked file durable.
 *
 * No lock is held across I/O: the mutex only guards the two list heads.
 *
 * WAL checkpoints run on a thread of their own with its own connection
 * (PASSIVE, a few times a second while commits come). Left to SQLite's
 * automatic checkpoint, the commit that crosses 1,000 WAL pages would copy
 * them into the database and fsync it before it returns, holding every Ack
 * behind it for hundreds of milliseconds under load. A passive checkpoint
 * never blocks the writer.
 *
 * But the WAL starts over from its beginning only at a write transaction
 * that finds all of it copied into the database, and with commits coming
 * back to back a pass running beside them never gets there: under sustained
 * ingest the WAL grew without bound (1 GB in 10 s at full speed, with the
 * kernel zeroing and allocating every new page of it). So the checkpointer
 * runs a pass after every commit, and once the WAL holds WAL_RESTART_FRAMES
 * the writer waits for the pass in progress, copies the little that is left
 * (what that pass could not see) itself, and its next transaction starts the
 * WAL over. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "election.h"
#include "ingest/spools.h"
#include "ingest/writer.h"
#include "mst/hash.h"
#include "mst/log.h"
#include "mst/store.h"
#include "mst/time.h"
#include "serve/metrics.h"

/* Rows per transaction at most (a CHANGES job counts its rows, and is never
 * split). */
#define WRITER_MAX_ROWS_PER_TXN 20000

/* What the database holds per spool (spools.held_seq), kept by the writer:
 * every row of `spools` is written by this thread, so after a commit the
 * cache is exact, and the guard against storing a change twice costs a hash
 * lookup instead of a B-tree lookup per row. A spool is read from the
 * database the first time it is seen. A spool table of the writer's own
 * (spools.h), where only held_seq is used. */
/* The writer's statements, prepared when it starts (persistent: they live
 * as long as the writer) and finalized when it stops. */
enum writer_stmt {
  STMT_INSERT_CHANGE,
  STMT_SELECT_HELD,
  STMT_UPSERT_SPOOL,
  STMT_UPSERT_NODE,
  STMT_INSERT_BOOT,
  STMT_INSERT_VERDICT,
  STMT_INSERT_STAGE,
  STMT_INSERT_NODE_EVENT,
  STMT_UPSERT_OPERATOR,
  _STMT_MAX,
};

struct aggr_writer {
  sqlite3 *db;
  const struct aggr_election *fence;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool stop;
  bool waiting; /* the writer waits on cond for jobs (guarded by lock) */
  int efd;
  _Atomic uint64_t retention_usec; /* 0: keep everything */
  uint64_t next_prune_usec;        /* monotonic; writer thread only */

  struct aggr_write *head, *tail; /* queued jobs, guarded by lock */
  struct aggr_commit *done;       /* finished commits, guarded by lock */
  size_t n_done, cap_done;

  sqlite3_stmt *stmt[_STMT_MAX]; /* writer_sql[] */
  struct aggr_spools held;       /* writer thread only */

  /* The checkpointer: its own connection and thread. */
  sqlite3 *ckpt_db;
  pthread_cond_t ckpt_cond; /* with lock; signalled only to stop */
  pthread_t ckpt_thread;
  bool ckpt_running;
  _Atomic uint64_t commits; /* committed transactions, for the checkpointer */
  bool ckpt_pass;           /* a pass is running (guarded by lock) */
  bool ckpt_hold;           /* the writer catches the WAL up: no pass starts (lock) */
  pthread_cond_t ckpt_idle; /* with lock: a pass ended */
  int wal_frames;           /* frames in the WAL after the last commit (writer thread) */
  int wal_catch_up_at;      /* catch up once wal_frames reaches this (writer thread) */

  /* The database file (see A DELETED DATABASE): its path, a descriptor of
   * the file as opened, and whether it has gone (sticky). Writer thread,
   * but for path, set before it starts. */
  char *path; /* NULL for an in-memory database: nothing to watch */
  int file_fd;
  bool file_gone;
  char failure[512]; /* why the last transaction failed (writer thread) */

  /* The storage state as last reported (see STORAGE STATE), guarded by
   * lock: NULL while healthy, else why it fails. storage_news: changed
   * since the loop last read it. */
  char *storage;
  bool storage_lost; /* the file was deleted: for good */
  bool storage_news;
  /* Writer thread: the last failure (monotonic), and whether a commit
   * succeeded since. */
  uint64_t failed_usec;
  bool committed_since;
};

#define STORAGE_RECOVERED_USEC (2 * USEC_PER_SEC)

/* 32 MiB of 4 KiB pages: a few of the largest transactions. */
#define WAL_RESTART_FRAMES 8192

#define CHECKPOINT_PERIOD_NSEC (200 * 1000 * 1000L)

/* The room a copy of s takes after a job (NULL is copied as ""). */
static size_t string_size(const char *s) {
  return (s ? strlen(s) : 0) + 1;
}

const char *aggr_write_put_string(char **room, const char *s, uint32_t *ret_len) {
  size_t n = s ? strlen(s) : 0;
  char *p = *room;
  memcpy(p, s ? s : "", n + 1);
  *room += n + 1;
  if (ret_len)
    *ret_len = (uint32_t)n;
  return p;
}

/* A job of kind with n_rows change rows after it, then string_bytes of room
 * for strings at *ret_room. The rows are aligned since the job's size is a
 * multiple of its alignment, which covers theirs. */
static struct aggr_write *job_new(enum aggr_write_kind kind, uint64_t epoch, size_t n_rows,
                                  size_t string_bytes, char **ret_room) {
  if (n_rows >
      (SIZE_MAX - sizeof(struct aggr_write) - string_bytes) / sizeof(struct aggr_change_row))
    return NULL;
  struct aggr_write *j =
      malloc(sizeof(struct aggr_write) + n_rows * sizeof(struct aggr_change_row) + string_bytes);
  if (!j)
    return NULL;
  *j = (struct aggr_write){.kind = kind, .epoch = epoch};
  *ret_room = (char *)(j + 1) + n_rows * sizeof(struct aggr_change_row);
  return j;
}

struct aggr_write *aggr_write_new_changes(uint64_t epoch, struct aggr_spool *spool,
                                          const char *node_id, const char *spool_id,
                                          int64_t received_ms, size_t n_rows, size_t string_bytes,
                                          char **ret_strings) {
  struct aggr_write *j = job_new(AGGR_WRITE_CHANGES, epoch, n_rows, string_bytes, ret_strings);
  if (j)
    j->changes = (struct aggr_write_changes){.spool = spool,
                                             .node_id = node_id,
                                             .spool_id = spool_id,
                                             .received_ms = received_ms,
                                             .n_rows = n_rows,
                                             .rows = (struct aggr_change_row *)(j + 1)};
  return j;
}

struct aggr_write *aggr_write_new_replica(uint64_t epoch, const char *node_id, const char *spool_id,
                                          int64_t received_ms, const struct aggr_change_row *row) {
  char *room;
  struct aggr_write *j =
      job_new(AGGR_WRITE_REPLICA, epoch, 1,
              string_size(node_id) + string_size(spool_id) + string_size(row->component) +
                  string_size(row->output) + string_size(row->boot_id),
              &room);
  if (!j)
    return NULL;
  struct aggr_change_row *copy = (struct aggr_change_row *)(j + 1);
  *copy = *row;
  copy->component = aggr_write_put_string(&room, row->component, &copy->component_len);
  copy->output = aggr_write_put_string(&room, row->output, &copy->output_len);
  copy->boot_id = aggr_write_put_string(&room, row->boot_id, &copy->boot_id_len);
  j->changes = (struct aggr_write_changes){.node_id = aggr_write_put_string(&room, node_id, NULL),
                                           .spool_id = aggr_write_put_string(&room, spool_id, NULL),
                                           .received_ms = received_ms,
                                           .n_rows = 1,
                                           .rows = copy};
  return j;
}

struct aggr_write *aggr_write_new_node(uint64_t epoch, const char *node_id, const char *role,
                                       const char *hostname, int64_t seen_ms) {
  char *room;
  struct aggr_write *j =
      job_new(AGGR_WRITE_NODE, epoch, 0,
              string_size(node_id) + string_size(role) + string_size(hostname), &room);
  if (j)
    j->node = (struct aggr_write_node){.node_id = aggr_write_put_string(&room, node_id, NULL),
                                       .role = aggr_write_put_string(&room, role, NULL),
                                       .hostname = aggr_write_put_string(&room, hostname, NULL),
                                       .seen_ms = seen_ms};
  return j;
}

struct aggr_write *aggr_write_new_boot(uint64_t epoch, const char *node_id, const char *boot_id,
                                       int64_t boot_time_ms, int64_t seen_ms) {
  char *room;
  struct aggr_write *j =
      job_new(AGGR_WRITE_BOOT, epoch, 0, string_size(node_id) + string_size(boot_id), &room);
  if (j)
    j->boot = (struct aggr_write_boot){.node_id = aggr_write_put_string(&room, node_id, NULL),
                                       .boot_id = aggr_write_put_string(&room, boot_id, NULL),
                                       .boot_time_ms = boot_time_ms,
                                       .seen_ms = seen_ms};
  return j;
}

struct aggr_write *aggr_write_new_verdict(enum aggr_write_kind kind, uint64_t epoch,
                                          const char *verdict, int64_t at_ms,
                                          const char *reasons_json) {
  char *room;
  struct aggr_write *j =
      job_new(kind, epoch, 0, string_size(verdict) + string_size(reasons_json), &room);
  if (j)
    j->verdict = (struct aggr_write_verdict){.verdict = aggr_write_put_string(&room, verdict, NULL),
                                             .reasons_json =
                                                 aggr_write_put_string(&room, reasons_json, NULL),
                                             .at_ms = at_ms};
  return j;
}

struct aggr_write *aggr_write_new_stage(uint64_t epoch, const char *node_id, const char *boot_id,
                                        const char *role, const char *stage, int64_t reached_ms,
                                        int64_t duration_ms) {
  char *room;
  struct aggr_write *j = job_new(
      AGGR_WRITE_STAGE, epoch, 0,
      string_size(node_id) + string_size(boot_id) + string_size(role) + string_size(stage), &room);
  if (j)
    j->stage = (struct aggr_write_stage){.node_id = aggr_write_put_string(&room, node_id, NULL),
                                         .boot_id = aggr_write_put_string(&room, boot_id, NULL),
                                         .role = aggr_write_put_string(&room, role, NULL),
                                         .stage = aggr_write_put_string(&room, stage, NULL),
                                         .reached_ms = reached_ms,
                                         .duration_ms = duration_ms};
  return j;
}

struct aggr_write *aggr_write_new_node_event(uint64_t epoch, const char *node_id, const char *event,
                                             int64_t at_ms, const char *peer, const char *boot_id,
                                             const char *detail) {
  char *room;
  struct aggr_write *j = job_new(AGGR_WRITE_NODE_EVENT, epoch, 0,
                                 string_size(node_id) + string_size(event) + string_size(peer) +
                                     string_size(boot_id) + string_size(detail),
                                 &room);
  if (j)
    j->node_event =
        (struct aggr_write_node_event){.node_id = aggr_write_put_string(&room, node_id, NULL),
                                       .event = aggr_write_put_string(&room, event, NULL),
                                       .peer = aggr_write_put_string(&room, peer, NULL),
                                       .boot_id = aggr_write_put_string(&room, boot_id, NULL),
                                       .detail = aggr_write_put_string(&room, detail, NULL),
                                       .at_ms = at_ms};
  return j;
}

struct aggr_write *aggr_write_new_operator(uint64_t epoch, const char *document, uint64_t ticket) {
  char *room;
  struct aggr_write *j = job_new(AGGR_WRITE_OPERATOR, epoch, 0, string_size(document), &room);
  if (j) {
    j->operator.document = aggr_write_put_string(&room, document, NULL);
    j->operator.ticket = ticket;
  }
  return j;
}

void aggr_write_free(struct aggr_write *j) {
  free(j); /* its strings and rows are in the same allocation */
}

/* The SQL of each statement. Those that write_params() binds take their
 * strings first, then their integers. */
static const char *const writer_sql[_STMT_MAX] = {
    /* Not guarded here: a change at or below what is held for its spool
     * (replayed, or already copied from an earlier leader) is skipped
     * before (stored_seq()). */
    [STMT_INSERT_CHANGE] =
        "INSERT INTO changes (node_id, spool_id, seq, component, check_kind, from_state,"
        " to_state, at_ms, output, boot_id, health, rise, fall, epoch, received_ms)"
        " VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)",
    [STMT_SELECT_HELD] = "SELECT held_seq FROM spools WHERE node_id = ?1 AND spool_id = ?2",
    [STMT_UPSERT_SPOOL] =
        "INSERT INTO spools (node_id, spool_id, held_seq, epoch, held_fp) VALUES (?,?,?,?,?)"
        " ON CONFLICT (node_id, spool_id) DO UPDATE SET"
        " held_fp = CASE WHEN excluded.held_seq >= held_seq THEN excluded.held_fp ELSE held_fp END,"
        " held_seq = max(held_seq, excluded.held_seq), epoch = max(epoch, excluded.epoch)",
    [STMT_UPSERT_NODE] = "INSERT INTO nodes (node_id, role, hostname, first_seen_ms, last_seen_ms)"
                         " VALUES (?1,?2,?3,?4,?4) ON CONFLICT (node_id) DO UPDATE SET"
                         " role = excluded.role, hostname = excluded.hostname,"
                         " last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
    [STMT_INSERT_BOOT] = "INSERT INTO boots (node_id, boot_id, boot_time_ms, first_seen_ms)"
                         " VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
    /* Copies from a leader may come twice: (epoch, at, verdict) is unique. */
    [STMT_INSERT_VERDICT] =
        "INSERT OR IGNORE INTO cluster_verdicts (verdict, at_ms, reasons, epoch)"
        " VALUES (?1,?3,?2,?4)",
    /* A boot's stage is reached once; a second report (another leader's
     * term, a restart) keeps the first. */
    [STMT_INSERT_STAGE] =
        "INSERT INTO stage_completions (node_id, boot_id, stage, role, reached_ms,"
        " duration_ms, epoch) VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
    [STMT_INSERT_NODE_EVENT] = "INSERT INTO node_events (node_id, event, peer, boot_id, detail,"
                               " at_ms, epoch) VALUES (?,?,?,?,?,?,?)",
    [STMT_UPSERT_OPERATOR] = "INSERT INTO meta (key, value) VALUES ('operator', ?1)"
                             " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
};

static int writer_prepare(struct aggr_writer *w) {
  for (size_t i = 0; i < _STMT_MAX; i++) {
    int rc =
        sqlite3_prepare_v3(w->db, writer_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &w->stmt[i], NULL);
    if (rc != SQLITE_OK) {
      log_error("writer: cannot prepare statement: %s", sqlite3_errmsg(w->db));
      return mst_store_errno(rc);
    }
  }
  return 0;
}

static void bind_text(sqlite3_stmt *s, int i, const char *v) {
  sqlite3_bind_text(s, i, v ? v : "", -1, SQLITE_STATIC);
}

/* A string whose length is known (the hot insert): SQLite need not scan it. */
static void bind_text_len(sqlite3_stmt *s, int i, const char *v, size_t len) {
  sqlite3_bind_text(s, i, v, (int)len, SQLITE_STATIC);
}

static int step_reset(sqlite3 *db, sqlite3_stmt *s) {
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  if (rc != SQLITE_DONE) {
    log_error("writer: write failed: %s", sqlite3_errmsg(db));
    return mst_store_errno(rc);
  }
  return 0;
}

static bool job_has_changes(const struct aggr_write *j) {
  return j->kind == AGGR_WRITE_CHANGES || j->kind == AGGR_WRITE_REPLICA;
}

/* One row of a changes job. Every parameter is bound on every row, so the
 * bindings need no clearing in between (the next row replaces them all). */
static int write_change_row(struct aggr_writer *w, const struct aggr_write *j,
                            const struct aggr_change_row *row, size_t node_id_len,
                            size_t spool_id_len) {
  sqlite3_stmt *s = w->stmt[STMT_INSERT_CHANGE];
  bind_text_len(s, 1, j->changes.node_id, node_id_len);
  bind_text_len(s, 2, j->changes.spool_id, spool_id_len);
  sqlite3_bind_int64(s, 3, (sqlite3_int64)row->seq);
  bind_text_len(s, 4, row->component, row->component_len);
  bind_text(s, 5, row->check_kind);
  bind_text(s, 6, row->from_state);
  bind_text(s, 7, row->to_state);
  sqlite3_bind_int64(s, 8, row->at_ms);
  bind_text_len(s, 9, row->output, row->output_len);
  bind_text_len(s, 10, row->boot_id, row->boot_id_len);
  sqlite3_bind_int(s, 11, (int)row->health);
  sqlite3_bind_int(s, 12, (int)row->rise);
  sqlite3_bind_int(s, 13, (int)row->fall);
  sqlite3_bind_int64(s, 14, (sqlite3_int64)j->epoch);
  sqlite3_bind_int64(s, 15, j->changes.received_ms);
  int rc = sqlite3_step(s);
  sqlite3_reset(s);
  if (rc != SQLITE_DONE) {
    log_error("writer: write failed: %s", sqlite3_errmsg(w->db));
    return mst_store_errno(rc);
  }
  return 0;
}

/* The parameters of one row: its strings bind to ?1 onwards, up to the
 * first NULL, and its integers to the statement's parameters after them. */
struct row_params {
  const char *text[5];
  int64_t integer[3];
};

static int write_params(struct aggr_writer *w, enum writer_stmt stmt, const struct row_params *p) {
  sqlite3_stmt *s = w->stmt[stmt];
  int n = sqlite3_bind_parameter_count(s), i = 0;
  for (; i < n && i < (int)ELEMENTSOF(p->text) && p->text[i]; i++)
    bind_text(s, i + 1, p->text[i]);
  for (size_t k = 0; i < n && k < ELEMENTSOF(p->integer); i++, k++)
    sqlite3_bind_int64(s, i + 1, p->integer[k]);
  return step_reset(w->db, s);
}

/* A job of one row that needs no guard: every kind but the changes. */
static int write_row(struct aggr_writer *w, const struct aggr_write *j) {
  switch (j->kind) {
  case AGGR_WRITE_CHANGES: /* written by write_changes() */
  case AGGR_WRITE_REPLICA:
    return -EINVAL;
  case AGGR_WRITE_NODE:
    return write_params(
        w, STMT_UPSERT_NODE,
        &(struct row_params){.text = {j->node.node_id, j->node.role, j->node.hostname},
                             .integer = {j->node.seen_ms}});
  case AGGR_WRITE_BOOT:
    return write_params(w, STMT_INSERT_BOOT,
                        &(struct row_params){.text = {j->boot.node_id, j->boot.boot_id},
                                             .integer = {j->boot.boot_time_ms, j->boot.seen_ms}});
  case AGGR_WRITE_CLUSTER_VERDICT:
  case AGGR_WRITE_REPLICA_VERDICT:
    return write_params(w, STMT_INSERT_VERDICT,
                        &(struct row_params){.text = {j->verdict.verdict, j->verdict.reasons_json},
                                             .integer = {j->verdict.at_ms, (int64_t)j->epoch}});
  case AGGR_WRITE_STAGE:
    return write_params(
        w, STMT_INSERT_STAGE,
        &(struct row_params){
            .text = {j->stage.node_id, j->stage.boot_id, j->stage.stage, j->stage.role},
            .integer = {j->stage.reached_ms, j->stage.duration_ms, (int64_t)j->epoch}});
  case AGGR_WRITE_NODE_EVENT:
    return write_params(w, STMT_INSERT_NODE_EVENT,
                        &(struct row_params){.text = {j->node_event.node_id, j->node_event.event,
                                                      j->node_event.peer, j->node_event.boot_id,
                                                      j->node_event.detail},
                                             .integer = {j->node_event.at_ms, (int64_t)j->epoch}});
  case AGGR_WRITE_OPERATOR:
    return write_params(w, STMT_UPSERT_OPERATOR,
                        &(struct row_params){.text = {j->operator.document}});
  }
  return -EINVAL;
}

/* Highest seq per spool touched by one transaction, found through a small
 * open-addressing hash of (node id, spool id): a transaction can touch
 * thousands of spools. A spool's copies from the leader (REPLICA) and its
 * agent's own stream (CHANGES) land on the same mark. */
struct spool_mark {
  const struct aggr_write *job; /* a job of that spool, for its ids */
  uint64_t seq;
  uint64_t fp;    /* mst_change_fingerprint() of the row at seq */
  uint64_t epoch; /* the newest epoch among its rows: the spool's writer */
};

struct marks {
  struct spool_mark *v;
  size_t n, cap;
  uint32_t *slots; /* index + 1, 0 = empty */
  size_t nslots;   /* a power of two, at least 2n */
};

static uint64_t mark_hash(const struct aggr_write *j) {
  return aggr_spools_hash(j->changes.node_id, j->changes.spool_id);
}

static bool mark_same(const struct aggr_write *a, const struct aggr_write *b) {
  return strcmp(a->changes.node_id, b->changes.node_id) == 0 &&
         strcmp(a->changes.spool_id, b->changes.spool_id) == 0;
}

/* Returns the mark of j's spool, or NULL. */
static struct spool_mark *marks_find(const struct marks *m, const struct aggr_write *j) {
  if (!m->nslots)
    return NULL;
  for (size_t i = mark_hash(j) & (m->nslots - 1);; i = (i + 1) & (m->nslots - 1)) {
    uint32_t s = m->slots[i];
    if (!s)
      return NULL;
    if (mark_same(m->v[s - 1].job, j))
      return &m->v[s - 1];
  }
}

static int marks_rehash(struct marks *m, size_t nslots) {
  uint32_t *slots = calloc(nslots, sizeof(*slots));
  if (!slots)
    return -ENOMEM;
  free(m->slots);
  m->slots = slots;
  m->nslots = nslots;
  for (size_t k = 0; k < m->n; k++) {
    size_t i = mark_hash(m->v[k].job) & (nslots - 1);
    while (slots[i])
      i = (i + 1) & (nslots - 1);
    slots[i] = (uint32_t)(k + 1);
  }
  return 0;
}

/* Forgets every mark (a new transaction), keeping the memory. */
static void marks_reset(struct marks *m) {
  m->n = 0;
  if (m->slots)
    memset(m->slots, 0, m->nslots * sizeof(*m->slots));
}

/* Notes that the transaction wrote up to seq of j's spool, under j's epoch;
 * fp is the fingerprint of the row at seq. */
static int marks_note(struct marks *m, const struct aggr_write *j, uint64_t seq, uint64_t fp) {
  struct spool_mark *k = marks_find(m, j);
  if (k) {
    if (seq > k->seq) {
      k->seq = seq;
      k->fp = fp;
    }
    if (j->epoch > k->epoch)
      k->epoch = j->epoch;
    return 0;
  }
  if (m->n == m->cap) {
    size_t ncap = m->cap ? m->cap * 2 : 64;
    struct spool_mark *v = realloc(m->v, ncap * sizeof(*v));
    if (!v)
      return -ENOMEM;
    m->v = v;
    m->cap = ncap;
  }
  m->v[m->n++] = (struct spool_mark){.job = j, .seq = seq, .fp = fp, .epoch = j->epoch};
  if (m->n * 2 > m->nslots)
    return marks_rehash(m, m->nslots ? m->nslots * 2 : 128);
  size_t i = mark_hash(j) & (m->nslots - 1);
  while (m->slots[i])
    i = (i + 1) & (m->nslots - 1);
  m->slots[i] = (uint32_t)m->n;
  return 0;
}

/* The highest seq the database holds for j's spool: from the cache, or read
 * once. */
static int held_get(struct aggr_writer *w, const struct aggr_write *j, uint64_t *ret) {
  const char *node_id = j->changes.node_id, *spool_id = j->changes.spool_id;
  const struct aggr_spool *e = aggr_spools_find(&w->held, node_id, spool_id);
  if (e) {
    *ret = e->held_seq;
    return 0;
  }
  sqlite3_stmt *s = w->stmt[STMT_SELECT_HELD];
  uint64_t seq = 0;
  bind_text(s, 1, node_id);
  bind_text(s, 2, spool_id);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW)
    seq = (uint64_t)sqlite3_column_int64(s, 0);
  sqlite3_reset(s);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    log_error("writer: cannot read what a spool holds: %s", sqlite3_errmsg(w->db));
    return mst_store_errno(rc);
  }
  struct aggr_spool *added = aggr_spools_get(&w->held, node_id, spool_id);
  if (!added)
    return -ENOMEM;
  added->held_seq = seq;
  *ret = seq;
  return 0;
}

/* After a commit: the cache learns what the transaction stored. */
static void held_commit(struct aggr_writer *w, const struct marks *marks) {
  for (size_t i = 0; i < marks->n; i++) {
    const struct aggr_write_changes *c = &marks->v[i].job->changes;
    struct aggr_spool *e = aggr_spools_get(&w->held, c->node_id, c->spool_id);
    if (!e)
      /* Without the entry the next row of the spool reads it again. */
      log_warning("writer: out of memory caching a spool, ignoring");
    else if (marks->v[i].seq > e->held_seq) /* a new entry holds 0 */
      e->held_seq = marks->v[i].seq;
  }
}

/* What is stored for j's spool: what this transaction already wrote for it
 * (a copy from the old leader and the agent's own replay can meet in one
 * transaction), or else what earlier transactions hold (the held cache). A
 * change at or below it is stored already. */
static int stored_seq(struct aggr_writer *w, const struct marks *marks, const struct aggr_write *j,
                      uint64_t *ret) {
  const struct spool_mark *k = marks_find(marks, j);
  if (k) {
    *ret = k->seq;
    return 0;
  }
  return held_get(w, j, ret);
}

/* A changes job (CHANGES, REPLICA): one look-up of what its spool holds,
 * then its rows above that (they come in rising seq). The last row written
 * is fingerprinted for the spool's held_fp: once per job, not per row. */
static int write_changes(struct aggr_writer *w, const struct aggr_write *j, struct marks *marks) {
  const struct aggr_write_changes *c = &j->changes;
  const struct aggr_change_row *last = NULL;
  uint64_t held = 0, top = 0;
  int r = stored_seq(w, marks, j, &held);
  if (r < 0)
    return r;
  size_t node_id_len = strlen(c->node_id), spool_id_len = strlen(c->spool_id);
  for (size_t i = 0; i < c->n_rows; i++) {
    const struct aggr_change_row *row = &c->rows[i];
    if (row->seq <= held || row->seq <= top)
      continue;
    r = write_change_row(w, j, row, node_id_len, spool_id_len);
    if (r < 0)
      return r;
    top = row->seq;
    last = row;
  }
  if (!last)
    return 0;
  return marks_note(marks, j, top,
                    mst_change_fingerprint(last->seq, last->at_ms, last->component,
                                           last->from_state, last->to_state, last->boot_id));
}

static int write_transaction_locked(struct aggr_writer *w, struct aggr_write *jobs,
                                    struct marks *marks);

/* Sets the storage state that the loop reads (NULL: healthy) and wakes the
 * loop when it changed. Writer thread. */
static void storage_report(struct aggr_writer *w, const char *failing) {
  char *copy = failing ? strdup(failing) : NULL;
  bool changed;

  if (failing && !copy)
    return; /* reported at the next failure */
  pthread_mutex_lock(&w->lock);
  changed = (w->storage == NULL) != (copy == NULL) || (copy && strcmp(w->storage, copy) != 0);
  if (changed) {
    free(w->storage);
    w->storage = TAKE_PTR(copy);
    w->storage_lost = w->file_gone;
    w->storage_news = true;
  }
  pthread_mutex_unlock(&w->lock);
  free(copy);
  if (!changed)
    return;
  if (failing && w->file_gone)
    log_error("writer: %s; every commit is refused (nothing more is acknowledged) until the "
              "aggregator is restarted",
              failing);
  else if (failing)
    log_error("writer: storage failing: %s; no Acks until a commit succeeds", failing);
  else
    log_info("writer: storage healthy again: a commit succeeded");
  uint64_t one = 1;
  if (write(w->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
    log_error("writer: eventfd write failed: %m, ignoring");
}

/* Reports the storage healthy once commits succeed and none failed for
 * STORAGE_RECOVERED_USEC (see STORAGE STATE). Writer thread. */
static void storage_recovered(struct aggr_writer *w) {
  if (w->failed_usec && w->committed_since &&
      mst_now_monotonic_usec() - w->failed_usec >= STORAGE_RECOVERED_USEC) {
    w->failed_usec = 0;
    storage_report(w, NULL);
  }
}

/* Whether the database file is still the one the path names (see A DELETED
 * DATABASE): 0, or -ENOENT from the moment it is not (then for good, logged
 * once). Writer thread. */
static int writer_check_file(struct aggr_writer *w) {
  struct stat opened, named;

  if (w->file_gone)
    return -ENOENT;
  if (w->file_fd < 0 || fstat(w->file_fd, &opened) < 0)
    return 0; /* nothing to compare with */
  if (opened.st_nlink > 0 && stat(w->path, &named) == 0 && named.st_dev == opened.st_dev &&
      named.st_ino == opened.st_ino)
    return 0;
  w->file_gone = true;
  snprintf(w->failure, sizeof(w->failure),
           "database file %s was deleted while open: changes committed now would not survive a "
           "restart (the open file is /proc/%d/fd/%d until then)",
           w->path, (int)getpid(), w->file_fd);
  storage_report(w, w->failure); /* logs it */
  return -ENOENT;
}

/* Keeps why a transaction failed, for the storage state, before its
 * rollback replaces SQLite's message. Writer thread. */
static void writer_note_failure(struct aggr_writer *w, int r) {
  if (w->file_gone || r == -ESTALE)
    return;
  snprintf(w->failure, sizeof(w->failure), "%s on %s",
           sqlite3_errcode(w->db) != SQLITE_OK ? sqlite3_errmsg(w->db) : strerror(-r),
           w->path ? w->path : "the in-memory database");
}

/* The connection's own mutex is held across the whole transaction: only this
 * thread uses the connection, and SQLite takes that mutex in every call (15
 * binds, a step and a reset per row), which held here is a recursive
 * re-entry instead of two atomic operations each time. */
static int write_transaction(struct aggr_writer *w, struct aggr_write *jobs, struct marks *marks) {
  sqlite3_mutex *mx = sqlite3_db_mutex(w->db); /* NULL without mutexes: then a no-op */
  sqlite3_mutex_enter(mx);
  int r = write_transaction_locked(w, jobs, marks);
  sqlite3_mutex_leave(mx);
  return r;
}

static int write_transaction_locked(struct aggr_writer *w, struct aggr_write *jobs,
                                    struct marks *marks) {
  bool fenced = false;
  int r = mst_store_exec(w->db, "BEGIN IMMEDIATE");
  if (r < 0) {
    writer_note_failure(w, r);
    return r;
  }
  for (struct aggr_write *j = jobs; j; j = j->next) {
    /* Only copies of the leader's own history may be written without
     * leading; everything else needs the lease. */
    fenced = fenced || (j->kind != AGGR_WRITE_REPLICA && j->kind != AGGR_WRITE_REPLICA_VERDICT);
    if (job_has_changes(j))
      r = write_changes(w, j, marks);
    else
      r = write_row(w, j);
    if (r < 0)
      goto rollback;
  }
  for (size_t i = 0; i < marks->n; i++) {
    const struct aggr_write_changes *c = &marks->v[i].job->changes;
    r = write_params(
        w, STMT_UPSERT_SPOOL,
        &(struct row_params){.text = {c->node_id, c->spool_id},
                             .integer = {(int64_t)marks->v[i].seq, (int64_t)marks->v[i].epoch,
                                         (int64_t)marks->v[i].fp}});
    if (r < 0)
      goto rollback;
  }
  /* The fence: a leader whose lease ran out (paused, cut off from
   * ZooKeeper) may already have a successor. Checked last, right before the
   * commit, so that a pause anywhere earlier is caught. */
  if (fenced && !aggr_election_lease_valid(w->fence)) {
    r = -ESTALE;
    goto rollback;
  }
  r = writer_check_file(w);
  if (r < 0)
    goto rollback;
  r = mst_store_exec(w->db, "COMMIT");
  if (r < 0)
    goto rollback;
  held_commit(w, marks);
  return 0;

rollback:
  writer_note_failure(w, r);
  /* A failed COMMIT (a full disk) may have rolled back already. */
  if (!sqlite3_get_autocommit(w->db))
    (void)mst_store_exec(w->db, "ROLLBACK");
  return r;
}

static void report(struct aggr_writer *w, const struct aggr_write *jobs,
                   const struct spool_mark *marks, size_t n_marks, bool ok) {
  size_t n = n_marks;
  for (const struct aggr_write *j = jobs; j; j = j->next)
    n += j->kind == AGGR_WRITE_OPERATOR;
  if (n == 0)
    return;
  pthread_mutex_lock(&w->lock);
  if (w->n_done + n > w->cap_done) {
    size_t ncap = MST_MAX(w->cap_done * 2, w->n_done + n);
    struct aggr_commit *d = realloc(w->done, ncap * sizeof(*d));
    if (!d) {
      /* Without memory the loop cannot learn of this commit; the agents will
       * see no Ack and replay, which ingest treats idempotently. */
      pthread_mutex_unlock(&w->lock);
      log_error("writer: out of memory reporting commits, ignoring");
      return;
    }
    w->done = d;
    w->cap_done = ncap;
  }
  for (const struct aggr_write *j = jobs; j; j = j->next)
    if (j->kind == AGGR_WRITE_OPERATOR)
      w->done[w->n_done++] = (struct aggr_commit){.operator_ticket = j->operator.ticket, .ok = ok};
  for (size_t i = 0; i < n_marks; i++) {
    const struct aggr_write_changes *j = &marks[i].job->changes;
    struct aggr_commit *c = &w->done[w->n_done++];
    *c = (struct aggr_commit){.spool = j->spool, .seq = marks[i].seq, .fp = marks[i].fp, .ok = ok};
    if (!j->spool) {
      c->node_id = strdup(j->node_id);
      c->spool_id = strdup(j->spool_id);
    }
  }
  pthread_mutex_unlock(&w->lock);

  uint64_t one = 1;
  if (write(w->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
    log_error("writer: eventfd write failed: %m, ignoring");
}

#define PRUNE_BATCH             500
#define PRUNE_INTERVAL_MAX_USEC (60 * USEC_PER_SEC)

/* Deletes history older than the retention, in small transactions, and
 * stops as soon as rows are waiting to be written: ingest never waits for
 * more than one small batch of deletes. Writer thread. */
static void writer_prune(struct aggr_writer *w) {
  uint64_t retention = atomic_load(&w->retention_usec);
  uint64_t now = mst_now_monotonic_usec();
  if (!retention || now < w->next_prune_usec)
    return;
  w->next_prune_usec =
      now + MST_MIN(MST_MAX(retention / 10, USEC_PER_SEC), PRUNE_INTERVAL_MAX_USEC);
  int64_t cutoff = (int64_t)((mst_now_realtime_usec() - retention) / USEC_PER_MSEC);
  static const char *const sql[] = {
      "DELETE FROM changes WHERE id IN (SELECT id FROM changes WHERE at_ms < ? ORDER BY at_ms"
      " LIMIT 500)",
      "DELETE FROM cluster_verdicts WHERE id IN (SELECT id FROM cluster_verdicts"
      " WHERE at_ms < ? ORDER BY id LIMIT 500)",
      "DELETE FROM node_events WHERE id IN (SELECT id FROM node_events WHERE at_ms < ?"
      " ORDER BY at_ms LIMIT 500)",
  };
  size_t total = 0;
  for (size_t q = 0; q < ELEMENTSOF(sql); q++) {
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(w->db, sql[q], -1, &st, NULL) != SQLITE_OK) {
      log_error("writer: cannot prune: %s, ignoring", sqlite3_errmsg(w->db));
      return;
    }
    for (;;) {
      bool busy;
      sqlite3_bind_int64(st, 1, cutoff);
      int rc = sqlite3_step(st);
      sqlite3_reset(st);
      if (rc != SQLITE_DONE) {
        log_error("writer: pruning failed: %s, ignoring", sqlite3_errmsg(w->db));
        return;
      }
      int n = sqlite3_changes(w->db);
      total += (size_t)n;
      pthread_mutex_lock(&w->lock);
      busy = w->head != NULL || w->stop;
      pthread_mutex_unlock(&w->lock);
      if (n < PRUNE_BATCH)
        break;
      if (busy) {
        w->next_prune_usec = 0; /* more to do: right after the queue */
        break;
      }
    }
  }
  if (total)
    log_info("writer: pruned %zu rows older than the retention", total);
}

/* After each commit of the writer's connection (writer thread): how many
 * frames the WAL holds. */
static int wal_hook(void *userdata, sqlite3 *db, const char *name, int n_frames) {
  struct aggr_writer *w = userdata;
  (void)db;
  (void)name;
  w->wal_frames = n_frames;
  if (n_frames < WAL_RESTART_FRAMES)
    w->wal_catch_up_at = WAL_RESTART_FRAMES; /* it started over */
  return SQLITE_OK;
}

/* Copies what the checkpointer has not yet copied, with no pass running
 * beside it and no commit of ours in between, so that the next transaction
 * finds the whole WAL in the database and starts it over (see DESIGN).
 * Writer thread, between transactions. */
static void wal_catch_up(struct aggr_writer *w) {
  pthread_mutex_lock(&w->lock);
  w->ckpt_hold = true;
  while (w->ckpt_pass)
    pthread_cond_wait(&w->ckpt_idle, &w->lock);
  pthread_mutex_unlock(&w->lock);

  int log_frames = 0, done_frames = 0;
  int rc =
      sqlite3_wal_checkpoint_v2(w->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &done_frames);
  if (rc != SQLITE_OK && rc != SQLITE_BUSY)
    log_warning("writer: checkpoint failed: %s, ignoring", sqlite3_errmsg(w->db));

  pthread_mutex_lock(&w->lock);
  w->ckpt_hold = false;
  pthread_mutex_unlock(&w->lock);
  /* A reader still on old frames keeps the WAL from starting over: try
   * again once it has grown by as much again, not before every commit. */
  if (rc != SQLITE_OK || log_frames != done_frames)
    w->wal_catch_up_at = w->wal_frames + WAL_RESTART_FRAMES;
}

static size_t job_rows(const struct aggr_write *j) {
  return job_has_changes(j) ? j->changes.n_rows : 1;
}

static void *writer_main(void *userdata) {
  struct aggr_writer *w = userdata;
  struct marks marks = {0};

  for (;;) {
    writer_prune(w);
    pthread_mutex_lock(&w->lock);
    while (!w->head && !w->stop) {
      /* Wake up for the next prune and to look at the database file (see
       * A DELETED DATABASE) even when nothing is written. */
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_sec += 1;
      w->waiting = true;
      int rc = pthread_cond_timedwait(&w->cond, &w->lock, &ts);
      w->waiting = false;
      if (rc == ETIMEDOUT)
        break;
    }
    if (!w->head) {
      bool stop = w->stop;
      pthread_mutex_unlock(&w->lock);
      if (stop)
        break;
      if (writer_check_file(w) == 0)
        storage_recovered(w);
      continue;
    }
    if (!w->head && w->stop) {
      pthread_mutex_unlock(&w->lock);
      break;
    }
    /* Take up to the cap off the head of the queue. */
    struct aggr_write *jobs = w->head, *last = w->head;
    size_t n = job_rows(last);
    while (last->next && n < WRITER_MAX_ROWS_PER_TXN) {
      last = last->next;
      n += job_rows(last);
    }
    w->head = last->next;
    if (!w->head)
      w->tail = NULL;
    last->next = NULL;
    pthread_mutex_unlock(&w->lock);

    marks_reset(&marks);
    /* wal_frames moves only with a checkpointer (wal_hook). */
    if (w->wal_frames >= w->wal_catch_up_at)
      wal_catch_up(w);
    uint64_t t0 = mst_now_monotonic_usec();
    int r = write_transaction(w, jobs, &marks);
    if (r >= 0) {
      atomic_fetch_add(&w->commits, 1);
      pthread_mutex_lock(&w->lock);
      pthread_cond_signal(&w->ckpt_cond); /* a pass for what this commit added */
      pthread_mutex_unlock(&w->lock);
      aggr_metrics_commit(n, mst_now_monotonic_usec() - t0);
      for (struct aggr_write *j = jobs; j; j = j->next)
        if (j->kind == AGGR_WRITE_REPLICA)
          atomic_fetch_add(&aggr_counters.replicated_rows, 1);
    } else
      atomic_fetch_add(&aggr_counters.commit_failures, 1);
    if (r == -ESTALE)
      log_warning("writer: not leading (no valid lease); discarded %zu rows uncommitted", n);
    else if (r < 0)
      log_error("writer: transaction of %zu rows failed (%s); affected streams will replay", n,
                strerror(-r));
    report(w, jobs, marks.v, marks.n, r >= 0);
    if (r >= 0) {
      w->committed_since = true;
      storage_recovered(w);
    } else if (r != -ESTALE) {
      w->failed_usec = mst_now_monotonic_usec();
      w->committed_since = false;
      storage_report(w, w->failure);
    }

    while (jobs) {
      struct aggr_write *next = jobs->next;
      aggr_write_free(jobs);
      jobs = next;
    }
  }
  free(marks.v);
  free(marks.slots);
  return NULL;
}

static void *checkpointer_main(void *userdata) {
  struct aggr_writer *w = userdata;
  uint64_t seen = 0;

  pthread_mutex_lock(&w->lock);
  while (!w->stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += CHECKPOINT_PERIOD_NSEC;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    (void)pthread_cond_timedwait(&w->ckpt_cond, &w->lock, &ts);
    uint64_t commits = atomic_load(&w->commits);
    if (w->stop || commits == seen || w->ckpt_hold)
      continue;
    seen = commits;
    w->ckpt_pass = true;
    pthread_mutex_unlock(&w->lock);
    int log_frames = 0, done_frames = 0;
    int rc = sqlite3_wal_checkpoint_v2(w->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames,
                                       &done_frames);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
      log_warning("writer: checkpoint failed: %s", sqlite3_errmsg(w->ckpt_db));
    pthread_mutex_lock(&w->lock);
    w->ckpt_pass = false;
    pthread_cond_broadcast(&w->ckpt_idle);
  }
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

/* Hands checkpoints to a thread of their own (see DESIGN). Without it the
 * writer keeps SQLite's automatic checkpoints. */
static void checkpointer_start(struct aggr_writer *w) {
  const char *path = sqlite3_db_filename(w->db, "main");
  /* mst_store_open() reads the database in WAL mode, which a checkpoint
   * needs: a connection that has not looked at the WAL has none to copy. */
  if (!path || !*path || mst_store_open(path, 0, &w->ckpt_db) < 0 ||
      sqlite3_exec(w->ckpt_db, "PRAGMA wal_autocheckpoint=0", NULL, NULL, NULL) != SQLITE_OK)
    goto fail;
  if (sqlite3_exec(w->db, "PRAGMA wal_autocheckpoint=0", NULL, NULL, NULL) != SQLITE_OK)
    goto fail;
  if (pthread_create(&w->ckpt_thread, NULL, checkpointer_main, w) != 0) {
    (void)sqlite3_exec(w->db, "PRAGMA wal_autocheckpoint=1000", NULL, NULL, NULL);
    goto fail;
  }
  (void)pthread_setname_np(w->ckpt_thread, "muster-ckpt");
  /* After the pragma, which would replace it. The writer thread may be in
   * a transaction already: SQLite's connection mutex orders the two. */
  sqlite3_wal_hook(w->db, wal_hook, w);
  w->ckpt_running = true;
  return;

fail:
  log_warning("writer: no checkpoint thread (%s); commits checkpoint as they go",
              w->ckpt_db ? sqlite3_errmsg(w->ckpt_db) : "cannot open the database");
  sqlite3_close_v2(w->ckpt_db);
  w->ckpt_db = NULL;
}

/* Keeps the database's path and a descriptor of its file, to notice when it
 * is deleted (see A DELETED DATABASE). Without them (an in-memory database,
 * no memory, no descriptor left) the check is skipped. */
static void writer_open_file(struct aggr_writer *w) {
  const char *path = sqlite3_db_filename(w->db, "main");

  w->file_fd = -1;
  if (!path || !*path)
    return;
  w->path = strdup(path);
  if (w->path && (w->file_fd = open(w->path, O_RDONLY | O_CLOEXEC)) < 0)
    log_warning("writer: cannot open %s to watch it: %m; a deleted database will go unnoticed",
                w->path);
}

/* Undoes what aggr_writer_start() sets up before it starts the threads:
 * the statements, the lock and conditions, the eventfd. */
static void writer_release(struct aggr_writer *w) {
  for (size_t i = 0; i < _STMT_MAX; i++)
    sqlite3_finalize(w->stmt[i]);
  pthread_mutex_destroy(&w->lock);
  pthread_cond_destroy(&w->cond);
  pthread_cond_destroy(&w->ckpt_cond);
  pthread_cond_destroy(&w->ckpt_idle);
  close(w->efd);
  if (w->file_fd >= 0)
    close(w->file_fd);
  free(w->path);
  free(w->storage);
}

int aggr_writer_start(sqlite3 *db, const struct aggr_election *fence, struct aggr_writer **ret) {
  struct aggr_writer *w = calloc(1, sizeof(*w));
  int r;
  if (!w)
    return -ENOMEM;
  w->db = db;
  w->fence = fence;
  w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (w->efd < 0) {
    r = -errno;
    free(w);
    return r;
  }
  pthread_mutex_init(&w->lock, NULL);
  pthread_cond_init(&w->cond, NULL);
  pthread_cond_init(&w->ckpt_cond, NULL);
  pthread_cond_init(&w->ckpt_idle, NULL);
  w->wal_catch_up_at = WAL_RESTART_FRAMES;
  writer_open_file(w);
  r = writer_prepare(w);
  if (r < 0)
    goto fail;
  r = -pthread_create(&w->thread, NULL, writer_main, w);
  if (r < 0)
    goto fail;
  (void)pthread_setname_np(w->thread, "muster-writer"); /* for top -H and perf */
  checkpointer_start(w);
  *ret = w;
  return 0;

fail:
  writer_release(w);
  free(w);
  return r;
}

void aggr_writer_free(struct aggr_writer *w) {
  if (!w)
    return;
  pthread_mutex_lock(&w->lock);
  w->stop = true;
  pthread_cond_signal(&w->cond);
  pthread_cond_signal(&w->ckpt_cond);
  pthread_mutex_unlock(&w->lock);
  pthread_join(w->thread, NULL);
  if (w->ckpt_running)
    pthread_join(w->ckpt_thread, NULL);
  sqlite3_close_v2(w->ckpt_db);
  writer_release(w);
  sqlite3_close_v2(w->db);
  aggr_spools_done(&w->held);
  /* Commits the loop never collected (the last ones before shutdown) still
   * own the node and spool ids report() copied for them. */
  aggr_commits_free(w->done, w->n_done);
  free(w);
}

void aggr_commits_free(struct aggr_commit *c, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(c[i].node_id);
    free(c[i].spool_id);
  }
  free(c);
}

void aggr_writer_set_retention(struct aggr_writer *w, uint64_t usec) {
  atomic_store(&w->retention_usec, usec);
}

int aggr_writer_fd(const struct aggr_writer *w) {
  return w->efd;
}

void aggr_writer_submit(struct aggr_writer *w, struct aggr_write *job) {
  struct aggr_write *last = job;
  while (last->next)
    last = last->next;
  pthread_mutex_lock(&w->lock);
  if (w->tail)
    w->tail->next = job;
  else
    w->head = job;
  w->tail = last;
  /* Only a waiting writer needs the futex wake-up; a busy one takes the
   * whole queue when its commit is done. */
  if (w->waiting)
    pthread_cond_signal(&w->cond);
  pthread_mutex_unlock(&w->lock);
}

int aggr_writer_storage(struct aggr_writer *w, char **ret_failing, bool *ret_lost) {
  int r = 0;
  pthread_mutex_lock(&w->lock);
  if (w->storage_news) {
    *ret_failing = w->storage ? strdup(w->storage) : NULL;
    *ret_lost = w->storage_lost;
    r = w->storage && !*ret_failing ? -ENOMEM : 1;
    if (r > 0)
      w->storage_news = false;
  }
  pthread_mutex_unlock(&w->lock);
  return r;
}

struct aggr_commit *aggr_writer_collect(struct aggr_writer *w, size_t *ret_n) {
  uint64_t count;
  struct aggr_commit *out;

  (void)!read(w->efd, &count, sizeof(count));
  pthread_mutex_lock(&w->lock);
  out = w->done;
  *ret_n = w->n_done;
  w->done = NULL;
  w->n_done = w->cap_done = 0;
  pthread_mutex_unlock(&w->lock);
  return out;
}
