/* DC/OS compatibility: the routes of DC/OS diagnostics' health API under
 * /system/health/v1, with its exact keys, key counts and encodings, so that
 * existing DC/OS tooling reads muster unchanged.
 *
 * The loop thread takes a compact, immutable snapshot of the model
 * (aggr_dcos_update) a few times a second at most, and only while the API is
 * being read (demand.h); HTTP threads render the
 * DC/OS bodies from the current snapshot (aggr_dcos_answer) under a
 * reference, never touching the model. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aggr_model;

#define AGGR_DCOS_PREFIX "/system/health/v1"

/* Loop thread: whether to take a snapshot now; changed: the model changed
 * since the last one. */
bool aggr_dcos_due(uint64_t now_usec, bool changed);

/* Replaces the snapshot with the model's current state. Loop thread. */
void aggr_dcos_update(const struct aggr_model *m);

/* Answers GET path (under AGGR_DCOS_PREFIX). Sets *ret_status, *ret_body
 * (malloc'd) and *ret_json (false: a text/plain DC/OS error body). Returns 0,
 * or -ENOMEM. Any thread. */
int aggr_dcos_answer(const char *path, unsigned *ret_status, char **ret_body, size_t *ret_len,
                     bool *ret_json);

void aggr_dcos_done(void);
