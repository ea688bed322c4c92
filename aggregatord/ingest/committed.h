/* The writer's completions, back on the loop: an eventfd the writer thread
 * signals (writer.h) after each commit. A commit of an agent's changes
 * acknowledges them on its stream (conn.c); a commit copied from the leader
 * by a follower (replica.c) advances the spool table. Loop thread. */
#pragma once

struct aggr;

/* Watches the writer's completions on a->event. Returns 0 or -errno. */
int aggr_committed_watch(struct aggr *a);
