/* The agent's heap (heap.c): malloc tuned for a small, long-lived daemon,
 * and malloc_trim() on a timer so that pages left free by start-up and by
 * bursts of changes go back to the kernel. a->trim_timer is owned here.
 * Loop thread. */
#pragma once

struct agent;

/* Sets glibc's malloc options. Call first, before anything allocates. */
void agent_heap_setup(void);

/* Arms the trim timer on a->event: 30 s after the start, then every 10 min.
 * Returns 0 or -errno. */
int agent_heap_trim_start(struct agent *a);
/* Disarms and frees the timer. Safe when it was never started. */
void agent_heap_trim_stop(struct agent *a);

/* Asks for a malloc_trim() within 5 s: something (a state change) has just
 * churned the heap. Cheap; does nothing before the timer is started. */
void agent_heap_trim_soon(struct agent *a);
