/* Operator state (issue 19): what operators said of nodes and components,
 * as opposed to what agents report. Three kinds of entry, keyed by node id
 * (never by boot or startup: a node keeps its maintenance across reboots):
 *   maintenance   of a node (component NULL) or of one of its components,
 *                 with a reason, who set it, since when, and an end (0: until
 *                 cleared)
 *   ack           an acknowledged failing component (Icinga's sense): it
 *                 stays failing in every verdict, marked with who and why;
 *                 cleared when the component is healthy again
 *   forgotten     a node an operator removed from the live model, with the
 *                 last contact it had then: a row of an older run (or of an
 *                 aggregator that followed) seen no later than that is not
 *                 brought back; a Hello brings the node back and drops this
 *
 * The table is one small document (aggr_operator_to_json), stored whole: in
 * the znode /muster/<cluster>/operator with ZooKeeper (election.c), where
 * every aggregator watches it, or in the history database's meta table when
 * standalone (ingest/writer.c). The loop owns the live table (model.h's
 * aggr_model.operator); everything here is pure and runs on any thread on
 * tables it owns. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bounds of what operators may store: the document must stay far below
 * ZooKeeper's 1 MiB znode limit. */
#define AGGR_OP_ENTRIES_MAX 2000
#define AGGR_OP_REASON_MAX  256
#define AGGR_OP_BY_MAX      128
#define AGGR_OP_NAME_MAX    256
/* A maintenance ends at most this far ahead. */
#define AGGR_OP_UNTIL_MAX_USEC (366ULL * 24 * 3600 * 1000000)

enum aggr_op_kind {
  AGGR_OP_MAINTENANCE,
  AGGR_OP_ACK,
  AGGR_OP_FORGOTTEN,
  _AGGR_OP_KIND_MAX,
};

struct aggr_op_entry {
  enum aggr_op_kind kind;
  char *node;
  char *component; /* NULL: the node itself (maintenance, forgotten) */
  char *reason;
  char *by; /* who: the token's name or the peer address */
  uint64_t since_usec;
  uint64_t until_usec; /* maintenance: its end (0: until cleared); forgotten: the node's
                        * last contact when it was forgotten */
};

struct aggr_operator {
  struct aggr_op_entry *v; /* sorted by node, component (NULL first), kind */
  size_t n;
  int64_t version; /* the znode version this was read or written at; -1: none */
};

const char *aggr_op_kind_name(enum aggr_op_kind k);

void aggr_operator_init(struct aggr_operator *op);
void aggr_operator_done(struct aggr_operator *op);
void aggr_op_entry_done(struct aggr_op_entry *e);

/* The entry, or NULL. component NULL names the node itself. */
const struct aggr_op_entry *aggr_operator_find(const struct aggr_operator *op,
                                               enum aggr_op_kind kind, const char *node,
                                               const char *component);
/* The entries of node: [*ret_first, *ret_first + return value). */
size_t aggr_operator_node_range(const struct aggr_operator *op, const char *node,
                                size_t *ret_first);

/* Copies e in, replacing the entry with its key. Returns 0, -ENOSPC past
 * AGGR_OP_ENTRIES_MAX, or -ENOMEM (the table unchanged). */
int aggr_operator_put(struct aggr_operator *op, const struct aggr_op_entry *e);
/* Removes the entry; returns whether there was one. */
bool aggr_operator_remove(struct aggr_operator *op, enum aggr_op_kind kind, const char *node,
                          const char *component);
/* Removes every maintenance and ack of node (not its forgotten entry);
 * returns how many. */
size_t aggr_operator_remove_node(struct aggr_operator *op, const char *node);
/* A deep copy into *ret. Returns 0 or -ENOMEM. */
int aggr_operator_copy(const struct aggr_operator *op, struct aggr_operator *ret);
/* Whether a and b hold the same entries. */
bool aggr_operator_equal(const struct aggr_operator *a, const struct aggr_operator *b);

/* The document: {"version":1,"entries":[{"kind","node","component","reason",
 * "by","since","until"},...]} with times in milliseconds. Returns a malloc'd
 * string or NULL on ENOMEM. */
char *aggr_operator_to_json(const struct aggr_operator *op);
/* Parses a document into *ret (version -1). An empty one (len 0) is an
 * empty table. Returns 0, -EINVAL (with why in err) or -ENOMEM. */
int aggr_operator_from_json(const char *s, size_t len, struct aggr_operator *ret, char *err,
                            size_t errsize);

/* A write's body, as the HTTP API takes it (pure, any thread):
 *   maintenance: {"reason": "...", "until": "RFC 3339"} or
 *                {"reason": "...", "duration": "2h"} or just {"reason": "..."}
 *   ack:         {"reason": "..."}
 * reason is required, 1 to AGGR_OP_REASON_MAX bytes of UTF-8 without control
 * characters; the end lies after now and at most AGGR_OP_UNTIL_MAX_USEC
 * ahead. Sets *ret_reason (malloc'd) and *ret_until_usec (0: until cleared).
 * Returns 0, -EINVAL with the 400's message in err, or -ENOMEM. */
int aggr_operator_parse_body(enum aggr_op_kind kind, const char *body, size_t len,
                             uint64_t now_usec, char **ret_reason, uint64_t *ret_until_usec,
                             char *err, size_t errsize);

/* Whether a maintenance entry holds at now (its end not reached). */
bool aggr_op_active(const struct aggr_op_entry *e, uint64_t now_usec);
