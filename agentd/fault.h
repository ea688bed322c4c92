/* The agent's fault (fault.c): why it cannot record its state right now.
 * The fault lives in struct agent (a->fault, a->fault_since_usec,
 * a->fault_timer) and goes to the aggregator in every heartbeat (stream.c).
 * Loop thread. */
#pragma once

struct agent;

/* A write to the spool failed with r (-errno): the fault begins, or names
 * the new cause (SQLite's text for it, agent_spool_write_error(), else r),
 * and the retries start. Logs a fault's beginning and any change of its
 * cause. */
void agent_fault_spool_failed(struct agent *a, int r);
/* A write to the spool succeeded: the fault, if any, ends. Cheap without
 * one. */
void agent_fault_clear(struct agent *a);
/* Disarms and frees the retry timer. Safe when there never was a fault. */
void agent_fault_done(struct agent *a);
