/* DC/OS compatibility: the routes of DC/OS diagnostics' health API under
 * /system/health/v1 (AGGR_DCOS_PREFIX), with its exact keys, key counts and
 * encodings, so that existing DC/OS tooling reads muster unchanged.
 *
 * What DC/OS shows of a node is part of the published view (view.h), like
 * every other body: the loop builds it when it renders the node's bodies
 * (aggr_dcos_node_new, dcos_node.h), and clean nodes share it with the
 * previous view.
 * HTTP threads answer from the view they hold (aggr_dcos_answer), never
 * touching the model and never waiting for the loop; the units across all
 * nodes are indexed once per view, by the first reader that needs them. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "serve/httpparse.h"

struct aggr_view;

/* Answers GET path (under AGGR_DCOS_PREFIX) from view v (NULL before the
 * first publish: 503 "health not found"). Sets *ret_status, *ret_body
 * (malloc'd) and *ret_json (false: a text/plain DC/OS error body). Returns
 * 0, or -ENOMEM. Any thread holding v. */
int aggr_dcos_answer(const struct aggr_view *v, const char *path, unsigned *ret_status,
                     char **ret_body, size_t *ret_len, bool *ret_json);
