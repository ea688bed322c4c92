/* The SQLite writer thread. It alone owns the read-write connection to the
 * history database. The loop thread queues rows with aggr_writer_submit();
 * the writer commits everything queued so far in one transaction (group
 * commit) and reports each commit back through an eventfd, so that the loop
 * sends Acks only for what is durable. */
#pragma once

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

struct aggr_spool;
struct aggr_writer;
struct aggr_election;

enum aggr_write_kind {
  AGGR_WRITE_CHANGE,  /* one change, its strings in the job (agent streams use CHANGES) */
  AGGR_WRITE_CHANGES, /* a frame's changes of one spool, in one allocation */
  AGGR_WRITE_NODE,
  AGGR_WRITE_BOOT,
  AGGR_WRITE_CLUSTER_VERDICT,
  AGGR_WRITE_REPLICA,         /* a change copied from the leader's history (spool NULL) */
  AGGR_WRITE_REPLICA_VERDICT, /* a cluster verdict change copied from the leader */
  AGGR_WRITE_STAGE, /* a stage completion (stage.h); the first per (node, boot, stage) wins */
};

/* One change of a CHANGES job. Its strings live in the job's own allocation
 * (aggr_write_new_changes), with their lengths; the state and check names
 * are static strings. */
struct aggr_change_row {
  uint64_t seq;
  int64_t at_ms;
  const char *component, *output, *boot_id;
  const char *check_kind, *from_state, *to_state; /* static strings */
  uint32_t component_len, output_len, boot_id_len;
  uint32_t health, rise, fall;
};

/* One row to write, or (CHANGES) one spool's rows. Strings are owned by the
 * job. */
struct aggr_write {
  struct aggr_write *next;
  enum aggr_write_kind kind;
  uint64_t epoch;
  struct aggr_spool *spool; /* CHANGE: reported back on commit (not dereferenced) */
  /* With spool set, node_id and spool_id are the spool record's own strings,
   * borrowed: the record outlives the writer and never changes. */
  char *node_id, *spool_id, *component, *output, *boot_id;
  const char *check_kind, *from_state, *to_state; /* static strings */
  uint64_t seq;
  int64_t at_ms, received_ms;
  unsigned health, rise, fall;
  /* NODE */
  char *role, *hostname;
  int64_t seen_ms;
  /* BOOT */
  int64_t boot_time_ms;
  /* CLUSTER_VERDICT: verdict in to_state, reasons JSON in output */
  /* STAGE: node_id, boot_id, role, stage; reached in at_ms */
  char *stage;
  int64_t duration_ms;
  /* CHANGES: spool, node_id, spool_id, epoch and received_ms as for CHANGE,
   * and n_rows rows of rising seq in the same allocation as the job. */
  size_t n_rows;
  struct aggr_change_row *rows;
};

/* A commit result for one spool. */
struct aggr_commit {
  struct aggr_spool *spool; /* NULL for replicated changes */
  char *node_id, *spool_id; /* set (owned) when spool is NULL */
  uint64_t seq;
  bool ok;
};

/* Takes ownership of db (opened read-write, migrated). Starts the thread.
 * Every transaction is committed only while aggr_election_lease_valid(fence)
 * holds (a NULL fence, standalone, always holds); otherwise it is rolled
 * back and reported as failed. Returns 0 or -errno. Loop thread. */
int aggr_writer_start(sqlite3 *db, const struct aggr_election *fence, struct aggr_writer **ret);

/* History older than usec (0: none) is deleted by the writer thread in small
 * batches between transactions. Any thread. */
void aggr_writer_set_retention(struct aggr_writer *w, uint64_t usec);

/* Stops the thread after committing what is queued, and frees. */
void aggr_writer_free(struct aggr_writer *w);

/* The eventfd that becomes readable when commits are ready to collect. */
int aggr_writer_fd(const struct aggr_writer *w);

/* Queues a job and every job linked after it through next (ownership
 * passes to the writer), with one wake-up. Any thread. */
void aggr_writer_submit(struct aggr_writer *w, struct aggr_write *job);

/* Collects finished commits: returns a malloc'd array and its length in
 * *ret_n; free it with aggr_commits_free(). Loop thread. */
struct aggr_commit *aggr_writer_collect(struct aggr_writer *w, size_t *ret_n);

void aggr_commits_free(struct aggr_commit *c, size_t n);

struct aggr_write *aggr_write_new(enum aggr_write_kind kind);

/* A CHANGES job with room for n_rows rows and string_bytes bytes of their
 * strings (NULs included), all in one allocation, so that a frame's changes
 * cost one malloc on the loop and one free on the writer. *ret_strings is
 * where the strings go; the caller fills rows[0..n_rows) and points their
 * strings into that room. Returns NULL without memory. Any thread. */
struct aggr_write *aggr_write_new_changes(size_t n_rows, size_t string_bytes, char **ret_strings);

void aggr_write_free(struct aggr_write *job);
