/* The aggregator's live cluster model: the container. It holds what the
 * agents last reported (nodes, their Hello fields and components), the
 * election's outcome, and the fields that evaluation derives from them
 * (evaluate.h: verdicts, reasons, root causes; stage.h: each node's startup
 * progress), which the views render. Owned and mutated only by the loop
 * thread; HTTP threads never see it, they read immutable views rendered from
 * it (view.h).
 *
 * Evaluation is incremental: it derives again only the nodes marked dirty
 * (and those whose silence turned or that the cause graph may link). So
 * whatever changes a node goes through the calls here, which mark it:
 * aggr_model_apply_hello() and aggr_node_apply_change(), _snapshot(),
 * _seen(), _conflict(), _fault(), _disconnect(), _restored(). Nothing else writes
 * what a node reported. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mst/profile.h"
#include "mst/state.h"
#include "mst/verdict.h"
/* For struct aggr_startup, which a node holds; the views read it through
 * this header. stage.h does not include this one. */
#include "model/stage.h"
#include "model/operator.h"

struct aggr_conn;

struct aggr_component {
  char *name;
  enum mst_check_kind check;
  enum mst_state state;
  uint64_t since_usec; /* realtime of the last state change */
  char *output;
  unsigned health, rise, fall;
  char *description; /* systemd's Description= or the profile's description; NULL: not known */
  char *
      display_name; /* the profile's name = (a human name such as "Mesos Agent"); NULL: not known */
};

/* A (node, component) named by a reason: what a root cause blocks, or what
 * a blocked component is blocked by. component is NULL for a node itself. */
struct aggr_reason_ref {
  char *node;
  char *component;
};

/* One reason for a verdict that is not healthy, such as
 * "m1: component mesos-master is unhealthy: exit code 2". As a root cause,
 * message holds the component's output (or the node's reason), summary the
 * sentence an operator reads ("mesos-master on m2 has been unhealthy since
 * ...; blocked: marathon on m2, mesos-agent on a1..a5") and refs what it
 * blocks. As a reason, refs are the root causes it is blocked by. */
struct aggr_reason {
  char *node;      /* NULL for cluster-wide reasons */
  char *component; /* NULL when the reason is the node itself */
  char *state;     /* component state or node verdict, as a string */
  char *message;
  char *summary; /* root causes only, else NULL */
  struct aggr_reason_ref *refs;
  size_t n_refs;       /* at most AGGR_REFS_MAX */
  size_t n_refs_total; /* how many there are: refs names the first n_refs */
};

/* Bounds that keep a cluster-wide failure (a master down blocking every
 * agent's components, or every component of 10,000 nodes failing at once)
 * from making bodies of hundreds of megabytes: what a reason names, and how
 * many reasons and root causes the cluster lists. Each list keeps its total;
 * the full detail is on each node. */
#define AGGR_REFS_MAX            64
#define AGGR_CLUSTER_REASONS_MAX 100

struct aggr_reasons {
  struct aggr_reason *v;
  size_t n;
  size_t n_total; /* cluster lists: how many there are, of which v holds n */
};

struct aggr_node {
  char *id;
  char *role;
  char *hostname;
  char *boot_id;
  uint64_t boot_time_usec;
  char *profile_digest;
  bool profile_drift;       /* digest differs from the aggregator's profile */
  bool expected_master;     /* listed in expected_masters */
  bool reported;            /* an agent has ever said Hello for it */
  bool have_snapshot;       /* the component list is the agent's truth */
  uint64_t first_seen_usec; /* realtime */
  uint64_t last_seen_usec;  /* realtime of the last frame from its agent */
  struct aggr_conn *conn;   /* the live stream, or NULL */
  /* Two agents report as this node: a Hello from another agent (another
   * spool id) came while the node streamed and was refused (conn.c keeps
   * the first). A reason, and the node degraded, until conflict_until. */
  char *conflict_kept;          /* the streaming agent's spool id */
  char *conflict_refused;       /* the refused agent's spool id */
  char *conflict_from;          /* and its address (no port) */
  uint64_t conflict_until_usec; /* realtime; 0: never in conflict */

  struct aggr_component *components;
  size_t n_components;
  /* Finds a component by name without a scan (every change looks one up):
   * open addressing over components[], slot = index + 1, 0 = empty;
   * n_comp_slots is 0 or a power of two at least twice n_components. Kept
   * by model.c. */
  uint32_t *comp_slots;
  size_t n_comp_slots;

  /* Derived by aggr_model_evaluate() (evaluate.h). */
  struct aggr_startup *startup; /* this boot's progress (stage.h): set by the stage engine,
                                 * one allocation freed with the node; NULL without a profile */
  enum mst_verdict verdict;
  uint64_t verdict_since_usec;
  struct aggr_reasons reasons;     /* why the verdict is not healthy */
  struct aggr_reasons root_causes; /* the components at the root */

  uint64_t index; /* model index at which this node's rendering last changed */
  bool dirty;     /* changed since the last publish: set by the apply calls and
                   * by evaluation, cleared by aggr_view_publish() */

  /* What aggr_model_evaluate() last found of the node itself. It holds
   * until the node is dirty again or its silence turns: a clean node is not
   * derived again (evaluate.c). */
  bool evaluated;     /* derived at least once */
  bool eval_silent;   /* silent at that evaluation */
  bool eval_conflict; /* in conflict at that evaluation (aggr_node_conflicted) */
  size_t n_down;      /* components neither healthy nor warning */
  size_t n_failing;   /* of those, unhealthy or unknown, counting for health */

  char *startup_cause; /* what began the current startup, from the Hello; NULL: not said */
  /* Reachability (issue 17). last_seen stays the last frame's time when the
   * stream closes; these say how it closed. */
  uint64_t disconnected_usec; /* realtime its last stream closed; 0: none closed */
  bool closed_silent;         /* that stream was closed for silence (conn.c's idle
                               * timer, stale_timeout after the last frame): silent
                               * already, by the stream's clock */
  uint64_t unreachable_usec;  /* realtime it turned unreachable, as history recorded it
                               * (AGGR_REACH_UNREACHABLE); 0: reachable */
  /* Why the node's agent cannot record or send its state, as its last
   * heartbeat said (aggr_node_apply_fault); NULL when it can. It stays
   * while the agent is away (a disconnected agent with a full disk is
   * still at fault) until a heartbeat says otherwise. */
  char *agent_fault;
  uint64_t agent_fault_since_usec; /* realtime, as the agent says */
  /* An expected master that has not reported yet, within the first-contact
   * window at that evaluation (aggr_node_awaited): its turning missing is
   * followed by evaluation, like silence. */
  bool eval_awaited;
  /* Set by the stage engine (stage.c): when the stage waited on is held
   * back by a "requires" that does not hold, the (node, component) pairs
   * standing in its way on the required role's nodes ("mesos-master on
   * m1"): the first AGGR_REFS_MAX of n_waiting_for_total; else none. */
  struct aggr_reason_ref *waiting_for;
  size_t n_waiting_for;
  size_t n_waiting_for_total;
  /* Derived by evaluation: the stage waited on as operators read it,
   * "mesos-agent, waiting for mesos-master on m1" (just "mesos-agent" when
   * nothing on another node is awaited); NULL when no stage is waited on. */
  char *waiting_on;
  /* Derived by evaluation: DC/OS's `Leader` in /report. The node's profile
   * names a leader component ([profile] leader_component, e.g. the Mesos
   * leader check of the shipped master profile), the node reports it
   * healthy, and the node is not silent (what it said may be stale). */
  bool dcos_leader;
  /* How many maintenance entries of the node (itself or its components)
   * held at the last evaluation: one that ends by the clock is followed by
   * evaluation, like silence (aggr_node_maintenances). */
  size_t eval_maint;
  /* What DC/OS shows of the node beyond its units (docs/dcos.md): its
   * DC/OS version, from the Hello, and its Mesos id, from the Hello and
   * every heartbeat (aggr_node_apply_mesos_id); NULL: not known. They stay
   * while the agent is away, like the hostname. */
  char *dcos_version;
  char *mesos_id;
};

struct aggr_model {
  struct aggr_node **nodes; /* sorted by id */
  size_t n_nodes;

  const struct mst_profile_set *profiles; /* borrowed */
  uint64_t stale_timeout_usec;

  /* Derived by aggr_model_evaluate() (evaluate.h). */
  enum mst_verdict verdict;
  uint64_t verdict_since_usec;
  struct aggr_reasons reasons;
  struct aggr_reasons root_causes;
  size_t n_derived;   /* nodes the last evaluation derived again */
  size_t n_explained; /* nodes whose reasons it listed again */

  /* The election's outcome, set by aggr_model_set_leader(). */
  bool is_leader;    /* this aggregator leads (also when standalone) */
  bool have_leader;  /* some leader is known: this one or another */
  char *leader_id;   /* the leader's id, or NULL when unknown */
  char *leader_http; /* host:port of the leader's HTTP API, or NULL when unknown */
  uint64_t epoch;    /* the leader's epoch, when known */

  /* The history database, set by aggr_model_set_storage(): why commits
   * fail (a cluster reason names it), NULL while they succeed; lost: the
   * file was deleted while open, until a restart. */
  char *storage_failing;
  bool storage_lost;

  /* When this aggregator began to lead (realtime), set by the first
   * evaluation after aggr_model_set_leader() made it leader: silence counts
   * from the later of a node's last frame and this (aggr_node_silent_from),
   * so a new leader or a restarted aggregator, which has heard nothing yet,
   * does not find every restored node unreachable at once. */
  uint64_t lead_since_usec;
  bool lead_began; /* leading, lead_since_usec not set yet */

  /* Reachability changes evaluation found (unreachable, reachable again),
   * oldest first, for history: publish.c drains them into the writer with
   * aggr_model_take_reach_events(). Only a leader queues them. */
  struct aggr_reach_event *reach_events;
  size_t n_reach_events;

  /* [aggregator] first_contact_window: an expected master that has not
   * reported is starting, not missing, for this long after the first Hello
   * this aggregator received (first_report_usec, realtime; 0: none yet).
   * 0 disables the window. Set by the caller after aggr_model_init(). */
  uint64_t first_contact_window_usec;
  uint64_t first_report_usec;
  /* The time of the last aggr_model_evaluate(): the views show what held
   * then (a maintenance ended by the clock is gone from them even before
   * the leader has stored its end). */
  uint64_t evaluated_usec;

  /* Operator state (operator.h): maintenance, acknowledgements, forgotten
   * nodes. The loop changes it only through aggr_model_set_operator(), which
   * marks the nodes whose entries moved. */
  struct aggr_operator operator;
};

/* A node turning unreachable or coming back, as history records it. */
enum aggr_reach_kind {
  AGGR_REACH_UNREACHABLE, /* at its last frame (or the start of the lead) + stale_timeout */
  AGGR_REACH_REACHABLE,   /* at the frame that ended the silence */
};

struct aggr_reach_event {
  enum aggr_reach_kind kind;
  char *node_id;
  char *boot_id;
  char *detail; /* a sentence: since when it was silent, or for how long */
  uint64_t at_usec;
};

/* The events queued since the last call, oldest first: the caller owns
 * them and frees them with aggr_reach_events_free(). Loop thread. */
struct aggr_reach_event *aggr_model_take_reach_events(struct aggr_model *m, size_t *ret_n);
void aggr_reach_events_free(struct aggr_reach_event *v, size_t n);
const char *aggr_reach_kind_name(enum aggr_reach_kind k);

/* expected_masters: NULL-terminated list of node ids that must exist. They
 * are created as never-reported nodes of role "master". */
int aggr_model_init(struct aggr_model *m, const struct mst_profile_set *profiles,
                    char *const *expected_masters, uint64_t stale_timeout_usec);
void aggr_model_done(struct aggr_model *m);

/* Takes failing (malloc'd; NULL: healthy again) as why the history
 * database's commits fail, and lost (the file was deleted while open). The
 * health body, /readyz and /metrics show it from the next publish. */
void aggr_model_set_storage(struct aggr_model *m, char *failing, bool lost);

/* Loop thread. Records the election's outcome; the model starts with no
 * leader and not leading, so every aggregator, standalone included, calls
 * this before it serves:
 *   - this aggregator leads (standalone too): is_leader, its own id, the
 *     host:port its HTTP API is reachable at (NULL when it has none to
 *     advertise), its epoch;
 *   - another one leads: !is_leader, that one's id, HTTP host:port and epoch
 *     (as read from its znode);
 *   - no leader known (a candidate, ZooKeeper unreachable, stepped down):
 *     !is_leader, NULL, NULL, and the last known epoch or 0.
 * have_leader becomes is_leader || leader_id. A leader_http that is not a
 * plain host:port (empty, no host, or a byte outside [A-Za-z0-9.:_~%[]-])
 * cannot go in a Location header: it is logged and recorded as unknown. A
 * wildcard such as 0.0.0.0:7611 passes but redirects nowhere useful:
 * advertise an address clients can reach.
 *
 * No node body shows the leader, and the health body, /readyz and the
 * follower answers are rendered on every publish, so nothing is marked dirty:
 * the next aggr_view_publish() reflects the change (it publishes a new view
 * even when no body's bytes changed). The cluster verdict depends on
 * have_leader; the evaluate before that publish takes it in.
 *
 * Returns 1 when something changed, 0 when nothing did, or -ENOMEM: then
 * is_leader and epoch are applied all the same (stepping down cannot fail),
 * and the leader's id and HTTP address are recorded as unknown. */
int aggr_model_set_leader(struct aggr_model *m, bool is_leader, const char *leader_id,
                          const char *leader_http, uint64_t epoch);

/* Returns the node, or NULL. */
struct aggr_node *aggr_model_find(const struct aggr_model *m, const char *id);
/* Returns the node, creating it (sorted in, marked dirty) when absent; NULL
 * on ENOMEM. A node is created for an expected master, a Hello or a row of
 * the database; until one of the apply calls below it has reported nothing. */
struct aggr_node *aggr_model_get(struct aggr_model *m, const char *id);

/* Finds a component by name through the node's index; NULL when absent. */
struct aggr_component *aggr_node_find_component(const struct aggr_node *n, const char *name);

/* Whether the node has been silent longer than the stale timeout at now:
 * since aggr_node_silent_from(), or its stream was closed for silence. */
bool aggr_node_silent(const struct aggr_model *m, const struct aggr_node *n, uint64_t now_usec);

/* Where the node's silence counts from: the later of its last frame and
 * when this aggregator began to lead. */
uint64_t aggr_node_silent_from(const struct aggr_model *m, const struct aggr_node *n);

/* Whether the node is disconnected but not yet silent: it has reported, has
 * no stream now, and the stale timeout has not passed (at least degraded). */
bool aggr_node_disconnected(const struct aggr_model *m, const struct aggr_node *n,
                            uint64_t now_usec);

/* Whether the node is an expected master that has not reported yet and is
 * within the first-contact window at now: starting, not yet missing. */
bool aggr_node_awaited(const struct aggr_model *m, const struct aggr_node *n, uint64_t now_usec);
/* When the first-contact window closes (realtime), or 0 while no agent has
 * said Hello yet. */
uint64_t aggr_model_first_contact_end(const struct aggr_model *m);

/* Whether two agents report as the node at now: a conflicting Hello was
 * refused less than the conflict window ago (aggr_node_apply_conflict). */
bool aggr_node_conflicted(const struct aggr_node *n, uint64_t now_usec);

/* --- changes: what the loop learns of a node ----------------------------------
 *
 * Loop thread. Each call sets the node's fields and marks it dirty (all but
 * aggr_node_apply_seen(), see there), so that the next aggr_model_evaluate()
 * derives it again. Strings are copied. */

/* What a Hello says of the node (strings NULL for empty). */
struct aggr_hello_report {
  const char *role;
  const char *hostname;
  const char *boot_id;
  uint64_t boot_time_usec; /* 0: unknown */
  const char *profile_digest;
  const char *startup_cause; /* boot, install, restart; NULL or "": not said (older agents) */
  const char *dcos_version;  /* NULL or "": not known */
  const char *mesos_id;      /* NULL or "": not known yet, the node keeps its own */
};

/* An agent said Hello on stream conn at realtime now: records who the node
 * is, that it has reported and is connected, and whether its profile digest
 * differs from the aggregator's profile for its role (profile_drift). The
 * first Hello the model takes opens the first-contact window. A new
 * boot id drops the snapshot flag: what was known of the components belongs
 * to the old boot. Returns 0, or -ENOMEM with the node left as it was. */
int aggr_model_apply_hello(struct aggr_model *m, struct aggr_node *n,
                           const struct aggr_hello_report *h, struct aggr_conn *conn,
                           uint64_t now_usec);

/* What an agent reports of one component, in a Change or a Snapshot. */
struct aggr_component_report {
  const char *name;
  enum mst_check_kind check;
  enum mst_state state;
  uint64_t since_usec; /* realtime of the state change on the agent; 0 unknown */
  const char *output;  /* NULL: none (the views show null) */
  unsigned health, rise, fall;
  /* What the agent's snapshot says the component is ("": not known); NULL
   * (a Change): not said, the component keeps what it had. */
  const char *description;
  const char *display_name;
};

/* Whether boot_id (NULL: the current one) is not the node's current boot:
 * a change of it is history only. */
bool aggr_node_other_boot(const struct aggr_node *n, const char *boot_id);

/* Whether the node stays within max components once the components named
 * in names[] (NULL entries skipped, a name may repeat) are added: counts the
 * distinct names it does not have yet, and stops at the first beyond max,
 * so the work is linear in n_names and the memory bounded by max. Returns 1
 * (they fit), 0 (they do not) or -ENOMEM. A stream must not make the loop
 * walk an unbounded node (evaluation, the views and the cause graph each
 * walk its components): conn.c refuses a batch that does not fit
 * ([aggregator] max_components_per_node) before any of it is taken. */
int aggr_node_fits_components(const struct aggr_node *n, const char *const *names, size_t n_names,
                              size_t max);

/* A change of one component in boot boot_id (NULL: the current one). A
 * change of another boot is history only and leaves the node alone (returns
 * 0). Returns 0, or -ENOMEM (then the component may be missing or its
 * output left out; the node is marked all the same). */
int aggr_node_apply_change(struct aggr_node *n, const char *boot_id,
                           const struct aggr_component_report *r);

/* The agent's snapshot: every component it has, which is the truth: the
 * components are set to these, any other is removed, and the node's
 * component list becomes the agent's (have_snapshot). Returns 0, or -ENOMEM
 * with some of them applied and the snapshot not taken. */
int aggr_node_apply_snapshot(struct aggr_node *n, const struct aggr_component_report *v,
                             size_t n_v);

/* A frame from the node's agent at now. Only last_seen moves, and the node is
 * not marked: a heartbeat changes nothing a view shows until the silence
 * turns, which evaluation follows by itself (aggr_node.eval_silent), and
 * the views refresh last_seen on their own schedule (view.c). */
void aggr_node_apply_seen(struct aggr_node *n, uint64_t now_usec);

/* Another agent said Hello as this node while it streamed, and was
 * refused: refused (its spool id) from from (its address), while kept (the
 * streaming agent's spool id) keeps the node. The node is in conflict until
 * realtime until_usec (a later conflicting Hello moves it on): named as a
 * reason and counted as a warning. The node is marked only when what the
 * reason says changes or the conflict begins; its end is followed by
 * evaluation (aggr_node.eval_conflict), like silence. Returns 1 when the
 * node was marked (a view will change), 0 when only the window moved, or
 * -ENOMEM with the node left as it was. */
int aggr_node_apply_conflict(struct aggr_node *n, const char *kept, const char *refused,
                             const char *from, uint64_t now_usec, uint64_t until_usec);

/* A heartbeat's fault: why the agent cannot record or send its state,
 * since realtime since_usec (0: unknown, then now_usec); fault NULL or ""
 * when it can. Marks the node only when the fault begins, ends or changes
 * its text. Returns 1 when marked, 0 when nothing changed, or -ENOMEM with
 * the node left as it was. */
int aggr_node_apply_fault(struct aggr_node *n, const char *fault, uint64_t since_usec,
                          uint64_t now_usec);

/* A heartbeat's Mesos id: a Mesos agent that registered again has a new
 * one. NULL or "" (the agent has not learned it yet) leaves the node's as
 * it is, as does a Hello's. Marks the node only when it changes.
 * Returns 1 when marked, 0 when nothing changed, or -ENOMEM with the node
 * left as it was. */
int aggr_node_apply_mesos_id(struct aggr_node *n, const char *mesos_id);

/* The node's stream conn closed at now; nothing changes when the node has
 * another stream by then. last_seen stays the last frame's time. silent:
 * the stream was closed because the agent was silent for the stale timeout
 * (the node is unreachable from now on, until a frame). */
void aggr_node_apply_disconnect(struct aggr_node *n, struct aggr_conn *conn, uint64_t now_usec,
                                bool silent);

/* At start: what the database knows of a node from an earlier run (role,
 * hostname, first and last contact). It counts as reported, and silent
 * from the later of last_seen and the start of the lead
 * (aggr_node_silent_from) until its agent returns. Returns 0 or -ENOMEM (the node is left
 * as it was). */
int aggr_node_apply_restored(struct aggr_node *n, const char *role, const char *hostname,
                             uint64_t first_seen_usec, uint64_t last_seen_usec);

/* --- for evaluation ------------------------------------------------------------- */

/* Grows *array (of n elements of size bytes) for one more: the arrays of the
 * model (nodes, components, reasons) and of the stage engine grow in powers
 * of two computed from their length alone, so they need no capacity field.
 * Returns 0 or -ENOMEM (the array is left as it was). */
int aggr_model_grow_array(void *array, size_t n, size_t size);

void aggr_reason_done(struct aggr_reason *r);
void aggr_reasons_clear(struct aggr_reasons *r);

/* --- operator state (issue 19) ------------------------------------------------
 *
 * Loop thread. The hooks below are what every consumer asks (evaluation,
 * views, metrics, and notifications such as issue 20's Alertmanager): whether
 * a node or component is in maintenance or acknowledged. */

/* The node's maintenance (component NULL) or its component's, holding at
 * now; NULL when there is none or it ended. */
const struct aggr_op_entry *aggr_node_maintenance(const struct aggr_model *m,
                                                  const struct aggr_node *n, const char *component,
                                                  uint64_t now_usec);
/* The acknowledgement of the node's component, or NULL. */
const struct aggr_op_entry *aggr_node_acknowledged(const struct aggr_model *m,
                                                   const struct aggr_node *n,
                                                   const char *component);
/* How many maintenances of the node and its components hold at now. */
size_t aggr_node_maintenances(const struct aggr_model *m, const struct aggr_node *n,
                              uint64_t now_usec);
/* The earliest end of a maintenance after now, or UINT64_MAX. */
uint64_t aggr_model_next_maintenance_end(const struct aggr_model *m, uint64_t now_usec);

/* Replaces the operator table with *op (taken over; *op is left empty),
 * marking dirty every node whose entries differ, and removing from the
 * model every node the new table forgets (a forgotten entry whose last
 * contact is not older than the node's, and the node not connected).
 * Returns how many nodes it removed. */
size_t aggr_model_set_operator(struct aggr_model *m, struct aggr_operator *op);

/* Removes node id from the model (its history stays in the database).
 * Refused with -EBUSY while the node has a stream; -ENOENT when absent. */
int aggr_model_forget(struct aggr_model *m, const char *id);
