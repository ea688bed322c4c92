/* Evaluation: what the model's nodes come to, derived into the container
 * (model.h). aggr_model_evaluate() drives the stage engine (stage.h), then
 * derives each node's verdict, its reasons and root causes over the cause
 * graph (cause.h), and the cluster verdict.
 *
 * Threads: the loop thread, on the live model. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aggr_model;
struct aggr_stage;

/* Brings every node's startup progress (the stage engine st), every node
 * verdict and the cluster verdict with their reasons and root causes up to
 * realtime now. Marks nodes whose rendering changed dirty. Queues the stage
 * completions reached on st (aggr_stage_take_completions). Returns true
 * when the cluster verdict changed (the caller records it).
 *
 * The work follows what changed, not the cluster's size: a node is derived
 * again only when it is dirty (the model's apply calls mark every change to
 * a node, and the publish that follows every evaluation clears the marks),
 * when its silence turned, or when it has something that is not up, which
 * the cause graph may link to other nodes. A change made without those
 * calls is therefore not seen: aggr_model_check() finds such omissions. */
bool aggr_model_evaluate(struct aggr_model *m, struct aggr_stage *st, uint64_t now_usec);

/* Derives every node again at now, as if none had been derived before, and
 * returns how many came out different from what aggr_model_evaluate() left
 * (their verdict, reasons or root causes): 0 when the incremental evaluation
 * missed nothing. Those nodes are corrected and marked dirty; the first one
 * is logged. For tests and debugging (MUSTER_CHECK_EVALUATE=1 runs it after
 * every evaluation): it costs a full walk of the model. */
size_t aggr_model_check(struct aggr_model *m, uint64_t now_usec);

/* The earliest realtime at which a verdict can change by the clock alone:
 * some node turns unreachable, a stage in progress turns late, or a node's
 * conflict (two agents, one node id) runs out. UINT64_MAX
 * when nothing will. The loop arms a timer there. */
uint64_t aggr_model_next_stale_usec(const struct aggr_model *m);
