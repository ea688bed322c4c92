/* The agent's durable spool: an SQLite file holding every state change with
 * its sequence number until the aggregator has acknowledged it and the
 * retention period has passed, the last state of every component (so that a
 * restart does not invent changes), the boots this agent has seen, and the
 * spool's identity (spool_id) and acknowledgement mark (acked_seq).
 *
 * Sequence numbers are per spool, start at 1 and grow by one per change,
 * without gaps, across restarts. Everything here is synchronous and runs on
 * the agent's loop; with synchronous=FULL a commit costs one fsync, which is
 * paid only for state changes, never for plain results. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "mst/frame.h"
#include "mst/state.h"

struct agent_spool;

/* One change as stored; strings are borrowed. */
struct agent_change {
  uint64_t seq;
  const char *component;
  enum mst_check_kind check;
  enum mst_state from, to;
  int64_t at_ms;
  const char *output;
  const char *boot_id;
  unsigned health, rise, fall;
};

/* One row of the components table; strings are borrowed (may be NULL). */
struct agent_spool_component {
  const char *name;
  const char *check_kind;
  const char *state;
  int64_t since_ms;
  const char *output;
  unsigned health;
  const char *ever_healthy_boot;
};

/* Opens (creating) the spool at path, takes an exclusive lock on it so that
 * two agents never share one, applies the migrations and loads spool_id,
 * last_seq and acked_seq. Returns 0 or -errno (logged). */
int agent_spool_open(const char *path, struct agent_spool **ret);
/* Flushes a pending acked_seq and closes. Accepts NULL. */
void agent_spool_free(struct agent_spool *s);

/* Starts the periodic pruning of acknowledged changes older than retention
 * and the batched persistence of acked_seq, on event. */
int agent_spool_attach_event(struct agent_spool *s, sd_event *event, uint64_t retention_usec);

const char *agent_spool_id(const struct agent_spool *s);
const char *agent_spool_path(const struct agent_spool *s);
/* SQLite's text for the last write to the spool that failed ("database or
 * disk is full", "disk I/O error", "attempt to write a readonly database"),
 * or "" when none has; owned by the spool, valid until its next write. */
const char *agent_spool_write_error(const struct agent_spool *s);
/* Commits one small write (meta 'last_seq' rewritten as it is), to learn
 * whether the spool can record again while no change waits to be. Returns
 * 0 or -errno (logged). */
int agent_spool_check_writable(struct agent_spool *s);
uint64_t agent_spool_last_seq(const struct agent_spool *s);
uint64_t agent_spool_acked_seq(const struct agent_spool *s);

/* Records boot_id as seen. *ret_first_seen_ms is when this spool first saw
 * it; *ret_new is true when that is now. */
int agent_spool_note_boot(struct agent_spool *s, const char *boot_id, int64_t now_ms,
                          int64_t *ret_first_seen_ms, bool *ret_new);

/* The node's current startup (agentd/startup.c), kept in meta so that it
 * survives agent restarts. Strings are NUL-terminated copies. */
struct agent_spool_startup {
  char id[MST_BOOT_ID_MAX + 1];        /* what Hellos and changes carry as boot_id */
  char host_boot[MST_BOOT_ID_MAX + 1]; /* the kernel boot (boot id file) it began in */
  char cause[16];                      /* boot, install, restart */
  int64_t start_ms;                    /* Unix ms */
  uint64_t number;                     /* 1 for a boot or an install, then +1 per restart */
};

/* Whether this open created the spool (no spool id was there). */
bool agent_spool_created(const struct agent_spool *s);
/* Reads the current startup into *ret. Returns 1, 0 when none is recorded
 * (a new spool, or one from an agent that did not keep it), or -errno. */
int agent_spool_startup_load(struct agent_spool *s, struct agent_spool_startup *ret);
/* Records st as the current startup, in one transaction. Returns 0 or
 * -errno (logged; nothing changed). */
int agent_spool_startup_save(struct agent_spool *s, const struct agent_spool_startup *st);

/* Calls cb for every row of the components table. A negative return from
 * cb stops the walk and is returned. */
typedef int (*agent_spool_component_cb)(void *userdata, const struct agent_spool_component *row);
int agent_spool_load_components(struct agent_spool *s, agent_spool_component_cb cb, void *userdata);

/* Writes one components row (insert or replace) outside of a change. */
int agent_spool_put_component(struct agent_spool *s, const struct agent_spool_component *row,
                              enum mst_check_kind check);
int agent_spool_forget_component(struct agent_spool *s, const char *name);

/* Commits ch with seq = last_seq + 1 together with the component's new row
 * (state = ch->to, since = ch->at_ms, ever_healthy_boot may be NULL), in one
 * transaction. Sets *ret_seq. On failure nothing is changed. */
int agent_spool_record_change(struct agent_spool *s, const struct agent_change *ch,
                              const char *ever_healthy_boot, uint64_t *ret_seq);

/* Calls cb for the changes with seq > after_seq in order, at most limit of
 * them. cb returns 0 to go on, 1 to stop before consuming this row (it will
 * come again next time), or a negative errno to abort. Returns the number
 * of rows consumed, or -errno. */
typedef int (*agent_spool_change_cb)(void *userdata, const struct agent_change *ch);
int agent_spool_read_changes(struct agent_spool *s, uint64_t after_seq, unsigned limit,
                             agent_spool_change_cb cb, void *userdata);

/* The fingerprint of the change at seq (mst_change_fingerprint(), as the
 * aggregator computes it of its copy) in *ret_fp. Returns 0, -ENOENT when
 * the spool has no row at seq (pruned, or never written), or -errno. */
int agent_spool_fingerprint(struct agent_spool *s, uint64_t seq, uint64_t *ret_fp);

/* The aggregator acknowledged everything <= seq. Values above last_seq are
 * clamped, lower ones than the current mark ignored. Persisted shortly after
 * (batched) and on agent_spool_free(). */
void agent_spool_ack(struct agent_spool *s, uint64_t seq);

/* Moves the spool to a new random spool id, for a reason that is logged and
 * kept in meta (previous_spool_id, spool_roll_reason, spool_rolls): the
 * aggregator holds more of the old id than the spool has (it was restored
 * from a backup), or the id was lost. The acknowledged changes leave the
 * spool (they are in the aggregator's history); the others are renumbered
 * from 1 and go out under the new id, so none is dropped as already held.
 * acked_seq becomes 0. Returns 0 or -errno (logged; nothing changed). */
int agent_spool_roll(struct agent_spool *s, const char *reason);

/* Deletes at most limit acknowledged changes older than cutoff_ms. Returns
 * the number deleted or -errno. */
int agent_spool_prune(struct agent_spool *s, int64_t cutoff_ms, unsigned limit);
