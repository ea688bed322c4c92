/* How musterctl shows the API's JSON to people: the cluster verdict, the node
 * list, one node, history lines and the one-line summaries of `watch`.
 * Colours only when enabled (a tty, and NO_COLOR unset); words always carry
 * the meaning, colour only underlines it. Everything here prints to the
 * FILE given and never fails the command: a field the server left out is
 * shown as "-". */
#pragma once

#include <stdbool.h>
#include <stdio.h>

#include <jansson.h>

/* Turns colours on or off for every function below. Main thread, at start. */
void ctl_render_set_color(bool on);

/* The exit code a verdict word maps to (mst_verdict_exit_code); 3 for a word
 * that is not a verdict or NULL. */
int ctl_verdict_exit_code(const char *verdict);

/* GET /v1/health: the verdict, counts, reasons and root causes. */
void ctl_render_health(FILE *f, json_t *health);

/* The first line of `musterctl status`, as a Nagios plugin's: the verdict
 * and the top root cause (the one blocking the most; else the first
 * reason), then perfdata with the
 * nodes by verdict ("MUSTER UNHEALTHY - mesos-master on m1 has been ... |
 * healthy=4 degraded=0 ..."). Never coloured. */
void ctl_render_status_line(FILE *f, json_t *health);

/* GET /v1/nodes: one row per node. */
void ctl_render_nodes(FILE *f, json_t *nodes);

/* GET /v1/nodes/{id}: the node, its startup stages and its components. */
void ctl_render_node(FILE *f, json_t *node);

/* One entry of GET /v1/history's changes[], on one line. */
void ctl_render_change(FILE *f, json_t *change);

/* One line for `watch` when the output is not a tty: the time, the verdict
 * and its reasons, joined. */
void ctl_render_health_line(FILE *f, json_t *health);
