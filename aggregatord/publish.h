/* Publishing: when the loop evaluates the model and hands HTTP a new view.
 *
 * Ingest asks for a publish after each change it applies (urgent: within
 * milliseconds, spaced by twice what the last publish cost so that the loop
 * keeps at least half its time for frames and Acks) or for a lazy one within
 * a second. A publish evaluates the model, records the cluster verdict and
 * the stage completions through the writer when this aggregator leads,
 * swaps in a new immutable view for the HTTP threads and wakes the blocking
 * reads whose resource moved. Timers here also turn silent nodes
 * unreachable on time and end blocking reads whose wait is over.
 * Loop thread only. */
#pragma once

#include <stdbool.h>

struct aggr;

/* Creates the views and the timers, and publishes a first view, so that
 * HTTP never serves none. Call before HTTP starts. Returns 0 or -errno. */
int aggr_publish_start(struct aggr *a);

/* Starts ending blocking reads on time; call once HTTP runs. */
int aggr_publish_serve(struct aggr *a);

/* Asks for the model to be evaluated and a view published: at once (spaced
 * by a few ms under load) when urgent, else within a second. */
void aggr_request_publish(struct aggr *a, bool urgent);

/* Stops the timers and frees the views (after HTTP stopped). */
void aggr_publish_stop(struct aggr *a);
