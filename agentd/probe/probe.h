/* Probe scheduling and what every probe kind shares (probe.c): one timer per
 * probed component (c->schedule, owned here), the dispatch to the kinds
 * (exec.h, http.h, tcp.h) and the cleaning of output text. systemd units
 * are not probed (systemd.h). Loop thread, except the two pure text
 * functions, which any thread may call. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "mst/state.h"

struct agent;
struct agent_component;

/* Schedules every probed component: the first run at a random point within
 * min(interval, 200ms), then every interval. Returns 0 or -errno (logged). */
int agent_probes_start(struct agent *a);
/* Cancels in-flight probes and timers (kills exec children). */
void agent_probes_stop(struct agent *a);

/* Called by a probe kind when its run is over (after it cleared c->run).
 * text is preformatted by the kind and perfdata may be NULL (both copied);
 * the text is sanitized and capped again here. Schedules the next run. */
void agent_probe_done(struct agent_component *c, enum mst_result r, const char *text,
                      const char *perfdata);

/* Parses raw output: the first line, split at '|' into text and perfdata,
 * both trimmed, made printable UTF-8, the text capped at AGENT_OUTPUT_MAX
 * with AGENT_TRUNCATED_MARK appended when cut (also when was_cut says the
 * caller already dropped part of the line). *ret_text and *ret_perfdata
 * (NULL when there is none) are malloc'd, the caller's, set only on
 * success. Returns 0 or -ENOMEM. */
int agent_output_parse(const char *raw, size_t len, bool was_cut, char **ret_text,
                       char **ret_perfdata);

/* Makes text printable UTF-8 and caps it like agent_output_parse().
 * Returns a malloc'd string (the caller's), or NULL when out of memory. */
char *agent_output_clean(const char *text);
