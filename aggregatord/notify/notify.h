/* Notifications through Alertmanager ([alertmanager] in the config): the
 * leader posts the alert set of its model (alerts.h) to every configured
 * Alertmanager's API v2, POST /api/v2/alerts.
 *
 * DESIGN. One thread, muster-notify, does every HTTP request (libcurl,
 * blocking, with a timeout): the loop never waits on an Alertmanager. The
 * door between them is one slot under a mutex: at each publish the loop
 * builds the current alert set when what it would say changed (a digest of
 * the model's verdicts and reasons) and puts it in the slot, replacing a
 * set the thread has not taken yet (the newest set is the truth; nothing
 * is lost, since the thread compares each set with what it has sent). The
 * thread keeps what it has sent:
 *   - every alert of the current set is firing: it is posted when the set
 *     changes and again every resend_interval, with endsAt four resend
 *     intervals ahead (as Prometheus does), so an alert no leader re-sends
 *     any more (every aggregator gone) resolves by itself at Alertmanager;
 *   - an alert that left the set is resolved: posted once with endsAt, to
 *     each Alertmanager, then forgotten. At most max_alerts wait so; past
 *     that the oldest are dropped and counted.
 * A failed post is retried with a back-off (0.5 s doubling up to the resend
 * interval), counted in /metrics, and logged at most once per resend
 * interval per Alertmanager. Only the leader sends: the loop tells the
 * thread when it stops leading (the thread forgets its alerts without
 * resolving them: the next leader holds them) and when it starts (the
 * thread posts the whole set at once; Alertmanager deduplicates by labels,
 * so a failover neither loses nor doubles a notification). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aggr_config;
struct aggr_model;
struct aggr_notify;

/* Alertmanagers one aggregator posts to, at most. */
#define AGGR_NOTIFY_URLS_MAX 16

/* Loop thread, at start: starts the thread with cfg's [alertmanager] keys
 * and cluster (copied). Returns 0 with *ret, or -errno. Without urls it
 * starts nothing: *ret is NULL, and the other calls accept NULL. */
int aggr_notify_start(const struct aggr_config *cfg, struct aggr_notify **ret);

/* Loop thread, at each publish after evaluation: hands the thread model
 * m's alert set when this aggregator leads, or tells it that it does not. */
void aggr_notify_publish(struct aggr_notify *n, const struct aggr_model *m, bool leading);

/* Loop thread, at exit: stops the thread (a post under way ends within its
 * timeout) and frees everything. Accepts NULL. */
void aggr_notify_free(struct aggr_notify *n);
