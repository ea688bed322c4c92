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

/* What a job writes, and which member of its union holds it. Every job but
 * the copies from the leader needs the lease to commit. */
enum aggr_write_kind {
  AGGR_WRITE_CHANGES,         /* changes: a frame's changes of one agent's spool */
  AGGR_WRITE_REPLICA,         /* changes: one change copied from the leader's history */
  AGGR_WRITE_NODE,            /* node: a node as it connected */
  AGGR_WRITE_BOOT,            /* boot: a boot of a node, as it connected */
  AGGR_WRITE_CLUSTER_VERDICT, /* verdict: the cluster verdict changed */
  AGGR_WRITE_REPLICA_VERDICT, /* verdict: a cluster verdict copied from the leader */
  AGGR_WRITE_STAGE,           /* stage: the first per (node, boot, stage) wins */
  AGGR_WRITE_NODE_EVENT,      /* node_event: a change of a node's reachability */
  AGGR_WRITE_OPERATOR,        /* operator: the operator state document (issue 19, standalone) */
};

/* One change of a changes job. Its strings live in the job's allocation,
 * with their lengths; the state and check names are static strings. */
struct aggr_change_row {
  uint64_t seq;
  int64_t at_ms;
  const char *component, *output, *boot_id;
  const char *check_kind, *from_state, *to_state; /* static strings */
  uint32_t component_len, output_len, boot_id_len;
  uint32_t health, rise, fall;
};

/* Changes of one spool, in rising seq. Rows at or below what the database
 * holds for the spool are not stored again. */
struct aggr_write_changes {
  /* CHANGES: the agent's spool record, reported back on commit (never
   * dereferenced), and node_id, spool_id its own strings, borrowed: the
   * record outlives the writer and never changes. REPLICA: NULL, and the
   * ids in the job's allocation. */
  struct aggr_spool *spool;
  const char *node_id, *spool_id;
  int64_t received_ms;
  size_t n_rows;
  struct aggr_change_row *rows; /* in the job's allocation */
};

/* A node's row: created, or its role and hostname updated. */
struct aggr_write_node {
  const char *node_id, *role, *hostname;
  int64_t seen_ms; /* first seen if new; last seen */
};

/* A boot of a node: kept the first time it is seen. */
struct aggr_write_boot {
  const char *node_id, *boot_id;
  int64_t boot_time_ms; /* when the node booted, by its clock */
  int64_t seen_ms;      /* first seen */
};

/* A change of the cluster verdict. */
struct aggr_write_verdict {
  const char *verdict;      /* its name, as the API spells it */
  const char *reasons_json; /* the reasons, a JSON array */
  int64_t at_ms;
};

/* A stage completion of a boot (model/stage.h). */
struct aggr_write_stage {
  const char *node_id, *boot_id, *role, *stage;
  int64_t reached_ms, duration_ms;
};

/* A change of a node's reachability (schema/0005_node_events.sql): event is
 * "connected", "disconnected", "unreachable" or "reachable". */
struct aggr_write_node_event {
  const char *node_id, *event, *peer, *boot_id, *detail;
  int64_t at_ms;
};

struct aggr_write_operator {
  const char *document; /* model/operator.h's aggr_operator_to_json() */
  uint64_t ticket;      /* reported back with the commit (aggr_commit.operator_ticket) */
};

/* One job for the writer: a tagged union. Each job is a single allocation
 * holding its strings (but for the borrowed ids of CHANGES); free it with
 * aggr_write_free() when it was never submitted. */
struct aggr_write {
  struct aggr_write *next; /* the queue; submit links after it */
  enum aggr_write_kind kind;
  uint64_t epoch; /* the leader's term the rows belong to */
  union {
    struct aggr_write_changes changes;       /* CHANGES, REPLICA */
    struct aggr_write_node node;             /* NODE */
    struct aggr_write_boot boot;             /* BOOT */
    struct aggr_write_verdict verdict;       /* CLUSTER_VERDICT, REPLICA_VERDICT */
    struct aggr_write_stage stage;           /* STAGE */
    struct aggr_write_node_event node_event; /* NODE_EVENT */
    struct aggr_write_operator operator;     /* OPERATOR */
  };
};

/* A commit result for one spool, or for an OPERATOR job (operator_ticket
 * set, spool and ids NULL): the write it stored is answered only once it
 * is committed. */
struct aggr_commit {
  struct aggr_spool *spool; /* NULL for replicated changes */
  char *node_id, *spool_id; /* set (owned) when spool is NULL */
  uint64_t seq;
  uint64_t fp; /* mst_change_fingerprint() of the row at seq */
  uint64_t operator_ticket;
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

/* The storage state, when it changed since the last call (the eventfd
 * signals that too): returns 1 with *ret_failing NULL once commits succeed
 * again, or why they fail (malloc'd: "<SQLite's message> on <path>", or
 * that the database file was deleted while open, which lasts until a
 * restart, and *ret_lost says so); 0 when it did not change; -ENOMEM. Loop thread. */
int aggr_writer_storage(struct aggr_writer *w, char **ret_failing, bool *ret_lost);

/* The constructors below return a job in one allocation, with copies of
 * the strings they are given (NULL is taken as ""), or NULL without memory.
 * Any thread. */

/* A CHANGES job of spool, whose node_id and spool_id it borrows, with room
 * for n_rows rows and string_bytes bytes of their strings (NULs included),
 * so that a frame's changes cost one malloc on the loop and one free on the
 * writer. *ret_strings is where the strings go; the caller fills
 * rows[0..n_rows) and points their strings into that room. */
struct aggr_write *aggr_write_new_changes(uint64_t epoch, struct aggr_spool *spool,
                                          const char *node_id, const char *spool_id,
                                          int64_t received_ms, size_t n_rows, size_t string_bytes,
                                          char **ret_strings);

/* Copies s (NULL: "") to *room, moves *room past its NUL, and returns the
 * copy, with its length in *ret_len unless that is NULL: for filling the
 * room of aggr_write_new_changes(). */
const char *aggr_write_put_string(char **room, const char *s, uint32_t *ret_len);

/* A REPLICA job: one change of the leader's history, with copies of the
 * ids and of row's strings (their lengths are counted here). */
struct aggr_write *aggr_write_new_replica(uint64_t epoch, const char *node_id, const char *spool_id,
                                          int64_t received_ms, const struct aggr_change_row *row);

struct aggr_write *aggr_write_new_node(uint64_t epoch, const char *node_id, const char *role,
                                       const char *hostname, int64_t seen_ms);

struct aggr_write *aggr_write_new_boot(uint64_t epoch, const char *node_id, const char *boot_id,
                                       int64_t boot_time_ms, int64_t seen_ms);

/* kind: CLUSTER_VERDICT (this leader's) or REPLICA_VERDICT (a copy). */
struct aggr_write *aggr_write_new_verdict(enum aggr_write_kind kind, uint64_t epoch,
                                          const char *verdict, int64_t at_ms,
                                          const char *reasons_json);

struct aggr_write *aggr_write_new_stage(uint64_t epoch, const char *node_id, const char *boot_id,
                                        const char *role, const char *stage, int64_t reached_ms,
                                        int64_t duration_ms);

/* An OPERATOR job: the whole operator state, kept in meta under the key
 * "operator" (a standalone aggregator's store; restore.c reads it back). */
struct aggr_write *aggr_write_new_operator(uint64_t epoch, const char *document, uint64_t ticket);

/* A NODE_EVENT job (peer, boot_id, detail: NULL or "" when not known). */
struct aggr_write *aggr_write_new_node_event(uint64_t epoch, const char *node_id, const char *event,
                                             int64_t at_ms, const char *peer, const char *boot_id,
                                             const char *detail);

void aggr_write_free(struct aggr_write *job);
