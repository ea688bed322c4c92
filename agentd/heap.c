/* The agent's heap: malloc's options and the trim timer. The heap is small
 * (a few hundred KiB) and lives for months. glibc's defaults suit a busy
 * program better: one arena per thread that ever mallocs (the resolver's
 * threads would each get one), and a threshold for mmap()ing large blocks
 * that rises to the largest block ever freed, after which such blocks stay
 * in the heap for good. Fixed thresholds keep large transient buffers out
 * of the heap, and malloc_trim() gives back the pages that start-up and
 * bursts of changes leave free inside it: 30 s after the start, 5 s after a
 * state change (agent_heap_trim_soon(), from component.c), and every 10 min. */
#include <malloc.h>

#include "agent.h"
#include "heap.h"
#include "mst/time.h"

#define HEAP_MMAP_THRESHOLD         (64 * 1024)
#define HEAP_TRIM_THRESHOLD         (64 * 1024)
#define HEAP_TRIM_FIRST_USEC        (30 * USEC_PER_SEC)
#define HEAP_TRIM_EVERY_USEC        (10 * 60 * USEC_PER_SEC)
#define HEAP_TRIM_AFTER_CHANGE_USEC (5 * USEC_PER_SEC)
#define HEAP_TRIM_ACCURACY_USEC     (5 * USEC_PER_SEC)

void agent_heap_setup(void) {
  (void)mallopt(M_ARENA_MAX, 1);
  (void)mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD);
  (void)mallopt(M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD);
}

static int heap_on_trim_timer(sd_event_source *source, uint64_t usec, void *userdata) {
  (void)malloc_trim(0);
  (void)sd_event_source_set_time_relative(source, HEAP_TRIM_EVERY_USEC);
  return 0;
}

int agent_heap_trim_start(struct agent *a) {
  int r;

  r = sd_event_add_time_relative(a->event, &a->trim_timer, CLOCK_MONOTONIC, HEAP_TRIM_FIRST_USEC,
                                 HEAP_TRIM_ACCURACY_USEC, heap_on_trim_timer, a);
  if (r < 0)
    return r;
  (void)sd_event_source_set_description(a->trim_timer, "malloc-trim");
  (void)sd_event_source_set_enabled(a->trim_timer, SD_EVENT_ON);
  return 0;
}

void agent_heap_trim_stop(struct agent *a) {
  a->trim_timer = sd_event_source_disable_unref(a->trim_timer);
}

void agent_heap_trim_soon(struct agent *a) {
  uint64_t now, at;

  if (!a->trim_timer || sd_event_now(a->event, CLOCK_MONOTONIC, &now) < 0 ||
      sd_event_source_get_time(a->trim_timer, &at) < 0)
    return;
  if (at > now + HEAP_TRIM_AFTER_CHANGE_USEC)
    (void)sd_event_source_set_time(a->trim_timer, now + HEAP_TRIM_AFTER_CHANGE_USEC);
}
