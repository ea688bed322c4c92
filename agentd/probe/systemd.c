/* systemd checks: units read over systemd's D-Bus API on the agent's loop,
 * driven by systemd's change signals instead of polling, and never by
 * running systemctl.
 *
 * One sd-bus connection, attached to the sd-event loop, carries everything,
 * and every call on it is asynchronous. The bus is the one the `systemd` key
 * names: the system bus, the user bus, or a direct connection to a manager's
 * private socket (an address such as unix:path=/run/user/0/systemd/private;
 * such a socket has no bus driver, so no Hello is sent). On connecting, the
 * agent calls the manager's Subscribe, so that systemd emits signals, and
 * then watches each unit:
 *   - a match on PropertiesChanged for the unit's object path, installed
 *     before the first read so that no change falls between the two;
 *   - LoadUnit, which gives the object path even for a unit that does not
 *     exist (LoadState then says not-found) and resolves aliases; the match
 *     moves to the real path when it differs;
 *   - GetAll of org.freedesktop.systemd1.Unit and, for services, of
 *     org.freedesktop.systemd1.Service, sent together; the state is mapped
 *     (systemd_map.c) once both replies are in.
 * A signal is only a cue: its properties may be partial or merely
 * invalidated, so it triggers a fresh GetAll. Reads never overlap: a signal
 * during a read marks the unit for one more read when it ends, so a burst of
 * signals (systemd sends each of them twice here) costs at most two reads,
 * and what is reported is always a complete, current read. A repeated read
 * of an unchanged unit changes nothing: agent_component_observed() records a
 * change only when the mapped state differs from the recorded one.
 *
 * A unit that is down with a job queued is asked for the job's JobType too
 * (an operator's restart is starting, a stop is not: systemd_map.c). After
 * every read the startup rule looks for a stack restart (startup.c).
 *
 * A slow safety re-check (every `interval` of the component) covers a lost
 * signal, and the end of a daemon-reload (the manager's Reloading signal)
 * reloads every unit, since aliases and unit files may have changed. The
 * manager's UnitNew and UnitRemoved are not used: reading a unit that is not
 * loaded loads it, which would emit UnitNew again, and so on.
 *
 * When the connection drops (the manager died, the socket went away) or
 * cannot be made, every systemd component is reported unknown with the
 * reason, and the agent reconnects with backoff (100 ms doubling to 5 s,
 * reset once a Subscribe succeeds); a new connection subscribes, matches and
 * reads everything again. All slots (calls and matches) are owned here and
 * released with the connection, so no callback of an old connection ever
 * runs. Callbacks always return 0: a negative return would make sd-bus close
 * the connection. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>

#include "agent.h"
#include "component.h"
#include "mst/frame.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/time.h"
#include "mst/utf8.h"
#include "probe/systemd.h"
#include "startup.h"
#include "stream.h"
#include "util.h"

#define SYSTEMD_DESTINATION     "org.freedesktop.systemd1"
#define SYSTEMD_PATH            "/org/freedesktop/systemd1"
#define SYSTEMD_UNIT_PREFIX     "/org/freedesktop/systemd1/unit"
#define SYSTEMD_MANAGER_IFACE   "org.freedesktop.systemd1.Manager"
#define SYSTEMD_UNIT_IFACE      "org.freedesktop.systemd1.Unit"
#define SYSTEMD_SERVICE_IFACE   "org.freedesktop.systemd1.Service"
#define SYSTEMD_JOB_IFACE       "org.freedesktop.systemd1.Job"
#define DBUS_PROPERTIES_IFACE   "org.freedesktop.DBus.Properties"
#define DBUS_LOCAL_PATH         "/org/freedesktop/DBus/Local"
#define DBUS_LOCAL_IFACE        "org.freedesktop.DBus.Local"
#define SYSTEMD_CALL_TIMEOUT    (5 * USEC_PER_SEC) /* Subscribe */
#define SYSTEMD_BACKOFF_MIN     (100 * USEC_PER_MSEC)
#define SYSTEMD_BACKOFF_MAX     (5 * USEC_PER_SEC)
#define SYSTEMD_REASON_MAX      512
#define SYSTEMD_DESCRIPTION_MAX 1024
#define SYSTEMD_UNIT_ID_MAX     256

/* A read in progress: LoadUnit (when needed) then the GetAll calls. */
struct unit_read {
  struct agent_unit_props props;
  char id[SYSTEMD_UNIT_ID_MAX];
  char description[SYSTEMD_DESCRIPTION_MAX];
  char job_path[SYSTEMD_UNIT_ID_MAX]; /* the queued job's object, from Job */
  unsigned pending;                   /* GetAll replies still to come */
  bool failed;
  char error[SYSTEMD_REASON_MAX];
};

/* One watched unit: the plumbing around a component's struct agent_unit. */
struct unit_watch {
  struct agent_systemd *sd;
  struct agent_component *c;
  struct agent_unit unit; /* what c->unit points to */
  const char *name;       /* c->conf->unit */
  bool is_service;
  char *path;         /* object path being matched and read; NULL before */
  bool need_load;     /* the next read starts with LoadUnit */
  bool reading;       /* a read is in flight */
  bool read_again;    /* a signal came during the read */
  sd_bus_slot *match; /* PropertiesChanged on path */
  sd_bus_slot *load_call;
  sd_bus_slot *unit_call;
  sd_bus_slot *service_call;
  sd_bus_slot *job_call; /* JobType of the queued job */
  struct unit_read cur;
  sd_event_source *recheck; /* the slow safety re-read */
  sd_event_source *settle;  /* re-read when a restarted unit has been up long enough */
  uint64_t n_signals, n_reads;
};

struct agent_systemd {
  struct agent *agent;
  char *bus_name; /* for messages: "the system bus", or the address */
  sd_bus *bus;    /* NULL while disconnected */
  bool connected; /* Subscribe succeeded on bus */
  sd_bus_slot *disconnected;
  sd_bus_slot *reloading;
  sd_bus_slot *subscribe_call;
  sd_event_source *reconnect;
  uint64_t backoff_usec;
  struct unit_watch *watches;
  size_t n_watches;
  bool all_read; /* every unit was read once: the stream may say Hello */
};

static void systemd_lost(struct agent_systemd *sd, const char *fmt, ...) _printf_(2, 3);
static void watch_read(struct unit_watch *w);

/* --- calls ------------------------------------------------------------------------- */

/* Sends one asynchronous method call to the manager. If this fails, cb is
 * never called. */
static int systemd_call(struct agent_systemd *sd, sd_bus_slot **slot, const char *path,
                        const char *interface, const char *member, uint64_t timeout_usec,
                        sd_bus_message_handler_t cb, void *userdata, const char *types, ...) {
  sd_bus_message *m = NULL;
  va_list ap;
  int r;

  r = sd_bus_message_new_method_call(sd->bus, &m, SYSTEMD_DESTINATION, path, interface, member);
  if (r < 0)
    return r;
  if (types) {
    va_start(ap, types);
    r = sd_bus_message_appendv(m, types, ap);
    va_end(ap);
    if (r < 0)
      goto out;
  }
  r = sd_bus_call_async(sd->bus, slot, m, cb, userdata, timeout_usec);
out:
  sd_bus_message_unref(m);
  return r;
}

/* An error reply of a dying connection: the Disconnected signal follows
 * and reports it once, for everything. */
static bool reply_from_dying_bus(sd_bus_message *m) {
  return sd_bus_message_is_method_error(m, NULL) && !sd_bus_is_open(sd_bus_message_get_bus(m));
}

static void error_text(const sd_bus_error *e, char *buf, size_t size) {
  if (e && e->message)
    snprintf(buf, size, "%s", e->message);
  else if (e && e->name)
    snprintf(buf, size, "%s", e->name);
  else
    snprintf(buf, size, "unknown error");
}

/* --- reading a unit's properties -------------------------------------------------- */

enum prop_kind { PROP_STRING, PROP_U64, PROP_U32, PROP_I32, PROP_JOB };

struct prop_field {
  const char *name;
  enum prop_kind kind;
  size_t offset; /* in struct unit_read */
  size_t size;   /* of a string buffer */
};

#define FIELD_STR(n, f)                                                                            \
  { n, PROP_STRING, offsetof(struct unit_read, f), sizeof(((struct unit_read *)0)->f) }
#define FIELD(n, kind, f)                                                                          \
  { n, kind, offsetof(struct unit_read, f), 0 }

static const struct prop_field unit_fields[] = {
    FIELD_STR("Id", id),
    FIELD_STR("Description", description),
    FIELD_STR("LoadState", props.load_state),
    FIELD_STR("ActiveState", props.active_state),
    FIELD_STR("SubState", props.sub_state),
    FIELD("ActiveEnterTimestampMonotonic", PROP_U64, props.active_enter_usec),
    FIELD("ActiveExitTimestampMonotonic", PROP_U64, props.active_exit_usec),
    FIELD("InactiveEnterTimestampMonotonic", PROP_U64, props.inactive_enter_usec),
    FIELD("InactiveExitTimestampMonotonic", PROP_U64, props.inactive_exit_usec),
    FIELD("StateChangeTimestamp", PROP_U64, props.state_change_usec),
    FIELD("ActiveExitTimestamp", PROP_U64, props.active_exit_realtime_usec),
    FIELD("InactiveExitTimestamp", PROP_U64, props.inactive_exit_realtime_usec),
    FIELD("Job", PROP_JOB, props.job_id),
};

static const struct prop_field service_fields[] = {
    FIELD_STR("Result", props.result),
    FIELD("NRestarts", PROP_U32, props.n_restarts),
    FIELD("RestartUSec", PROP_U64, props.restart_usec),
    FIELD("ExecMainCode", PROP_I32, props.exec_main_code),
    FIELD("ExecMainStatus", PROP_I32, props.exec_main_status),
};

/* Reads the variant of one known property; a type other than expected is
 * skipped (left at its zero value). */
static int read_field(sd_bus_message *m, const struct prop_field *f, struct unit_read *rd) {
  static const char *const signature[] = {[PROP_STRING] = "s",
                                          [PROP_U64] = "t",
                                          [PROP_U32] = "u",
                                          [PROP_I32] = "i",
                                          [PROP_JOB] = "(uo)"};
  void *dest = (char *)rd + f->offset;
  const char *s;
  int r;

  r = sd_bus_message_enter_container(m, 'v', signature[f->kind]);
  if (r == -ENXIO)
    return sd_bus_message_skip(m, "v");
  if (r < 0)
    return r;
  switch (f->kind) {
  case PROP_STRING:
    r = sd_bus_message_read(m, "s", &s);
    if (r >= 0)
      snprintf(dest, f->size, "%s", s); /* capped: systemd is trusted, not unbounded */
    break;
  case PROP_U64:
    r = sd_bus_message_read(m, "t", (uint64_t *)dest);
    break;
  case PROP_U32:
    r = sd_bus_message_read(m, "u", (uint32_t *)dest);
    break;
  case PROP_I32:
    r = sd_bus_message_read(m, "i", (int32_t *)dest);
    break;
  case PROP_JOB:
    r = sd_bus_message_read(m, "(uo)", (uint32_t *)dest, &s);
    if (r >= 0)
      snprintf(rd->job_path, sizeof(rd->job_path), "%s", s);
    break;
  }
  if (r < 0)
    return r;
  return sd_bus_message_exit_container(m);
}

/* Parses a GetAll reply (a{sv}) into rd, picking the fields it knows. */
static int read_properties(sd_bus_message *m, const struct prop_field *fields, size_t n_fields,
                           struct unit_read *rd) {
  int r;

  r = sd_bus_message_enter_container(m, 'a', "{sv}");
  if (r < 0)
    return r;
  while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
    const struct prop_field *f = NULL;
    const char *name;

    r = sd_bus_message_read(m, "s", &name);
    if (r < 0)
      return r;
    for (size_t i = 0; i < n_fields && !f; i++)
      if (strcmp(fields[i].name, name) == 0)
        f = &fields[i];
    r = f ? read_field(m, f, rd) : sd_bus_message_skip(m, "v");
    if (r < 0)
      return r;
    r = sd_bus_message_exit_container(m);
    if (r < 0)
      return r;
  }
  if (r < 0)
    return r;
  return sd_bus_message_exit_container(m);
}

/* --- one unit ---------------------------------------------------------------------- */

static void watch_cancel_read(struct unit_watch *w) {
  w->load_call = sd_bus_slot_unref(w->load_call);
  w->unit_call = sd_bus_slot_unref(w->unit_call);
  w->service_call = sd_bus_slot_unref(w->service_call);
  w->job_call = sd_bus_slot_unref(w->job_call);
  w->reading = false;
  w->read_again = false;
}

/* Forgets everything tied to the connection (called when it goes). */
static void watch_detach(struct unit_watch *w) {
  watch_cancel_read(w);
  if (w->settle)
    (void)sd_event_source_set_enabled(w->settle, SD_EVENT_OFF);
  w->match = sd_bus_slot_unref(w->match);
  free(w->path);
  w->path = NULL;
  w->need_load = true;
}

static int on_settled(sd_event_source *source, uint64_t usec, void *userdata) {
  watch_read(userdata);
  return 0;
}

/* Arms the re-read at a time when the mapping changes by itself (0: none). */
static void watch_settle_at(struct unit_watch *w, uint64_t at_usec) {
  int r;

  if (at_usec == 0) {
    (void)sd_event_source_set_enabled(w->settle, SD_EVENT_OFF);
    return;
  }
  /* The manager's monotonic timestamps and ours share the host's clock. */
  r = sd_event_source_set_time(w->settle, at_usec + USEC_PER_MSEC);
  if (r >= 0)
    r = sd_event_source_set_enabled(w->settle, SD_EVENT_ONESHOT);
  if (r < 0)
    log_error("component %s: cannot schedule the re-read of %s: %s", w->c->conf->name, w->name,
              strerror(-r));
}

/* Whether two texts, either of which may be NULL, differ. */
static bool text_differs(const char *a, const char *b) {
  return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

/* Keeps the display name and description of the read's Description, as
 * DC/OS splits it; a text that does not split keeps no name (DC/OS shows the
 * unit id, which the aggregator knows). Both are cut to what the wire
 * carries (mst/frame.h), on a character boundary. When they changed (the
 * first read, or a daemon-reload of an edited unit), the aggregator gets
 * them in a fresh snapshot: they are no state change. */
static void watch_keep_description(struct unit_watch *w) {
  struct agent_unit *u = &w->unit;
  const char *id = w->cur.id[0] ? w->cur.id : w->name;
  _cleanup_free_ char *text = NULL, *name = NULL, *description = NULL;

  /* snprintf() may have cut the text inside a character. */
  text = mst_utf8_clean(w->cur.description, strlen(w->cur.description), MST_DESCRIPTION_MAX, NULL,
                        false);
  if (!text || agent_unit_split_description(id, text, &name, &description) < 0) {
    log_warning("component %s: out of memory keeping the unit's description, ignoring",
                w->c->conf->name);
    return;
  }
  if (strcmp(name, id) == 0)
    free(TAKE_PTR(name));
  else
    (void)mst_utf8_truncate(name, name, MST_DISPLAY_NAME_MAX, NULL);
  if (!description[0])
    free(TAKE_PTR(description));
  bool changed = text_differs(u->display_name, name) || text_differs(u->description, description);
  free(u->display_name);
  free(u->description);
  u->display_name = TAKE_PTR(name);
  u->description = TAKE_PTR(description);
  if (changed)
    agent_stream_outputs_changed(w->sd->agent->stream);
}

/* Keeps the read as the unit's state and hands the mapped state on. */
static void watch_take_read(struct unit_watch *w) {
  struct agent_unit *u = &w->unit;
  struct unit_read *rd = &w->cur;
  uint64_t now = mst_now_monotonic_usec(), recheck_at;
  char text[AGENT_OUTPUT_MAX];
  enum mst_state state;

  rd->props.is_service = w->is_service;
  state = agent_unit_map(&rd->props, now, text, sizeof(text), &recheck_at);
  watch_settle_at(w, recheck_at);

  u->props = rd->props;
  u->read = true;
  u->read_usec = now;
  watch_keep_description(w);
  log_debug("component %s: unit %s read #%" PRIu64 " (%" PRIu64 " signals): %s/%s, "
            "NRestarts=%u, \"%s\" -> %s",
            w->c->conf->name, w->name, w->n_reads, w->n_signals, rd->props.active_state,
            rd->props.sub_state, rd->props.n_restarts, u->display_name ? u->display_name : w->name,
            mst_state_to_string(state));
  agent_component_observed(w->c, state, text);
}

/* Once every unit was read (or failed to be) once, the startup is decided
 * (startup.c): the stream's first Hello, held until now, may go. */
static void systemd_note_all_read(struct agent_systemd *sd) {
  if (sd->all_read)
    return;
  for (size_t i = 0; i < sd->n_watches; i++)
    if (sd->watches[i].n_reads == 0)
      return;
  sd->all_read = true;
  agent_stream_release_first(sd->agent->stream);
}

/* Ends a read (all its replies are in): reports it, then reads again when a
 * signal came in the meantime. */
static void watch_read_done(struct unit_watch *w) {
  char text[SYSTEMD_REASON_MAX + 128];

  w->reading = false;
  w->n_reads++;
  if (w->cur.failed) {
    snprintf(text, sizeof(text), "cannot read unit %s: %s", w->name, w->cur.error);
    log_debug("component %s: %s", w->c->conf->name, text);
    agent_component_observed(w->c, MST_STATE_UNKNOWN, text);
  } else {
    watch_take_read(w);
  }
  if (w->read_again) {
    w->read_again = false;
    watch_read(w);
  }
  /* Last: a new startup reads every unit again. */
  agent_startup_units_read(w->sd->agent);
  systemd_note_all_read(w->sd);
}

static void watch_read_failed(struct unit_watch *w, const char *what, const char *error) {
  if (!w->cur.failed) {
    w->cur.failed = true;
    /* Both are short; the precisions keep the sum inside the buffer. */
    snprintf(w->cur.error, sizeof(w->cur.error), "%.64s: %.400s", what, error);
  }
}

static void watch_get_job(struct unit_watch *w);

static int on_get_all(sd_bus_message *m, void *userdata, sd_bus_error *ret_error,
                      sd_bus_slot **slot, const struct prop_field *fields, size_t n_fields,
                      const char *interface) {
  struct unit_watch *w = userdata;
  int r;

  *slot = sd_bus_slot_unref(*slot);
  if (reply_from_dying_bus(m))
    return 0;
  if (sd_bus_message_is_method_error(m, NULL)) {
    char err[SYSTEMD_REASON_MAX];

    error_text(sd_bus_message_get_error(m), err, sizeof(err));
    watch_read_failed(w, interface, err);
  } else {
    r = read_properties(m, fields, n_fields, &w->cur);
    if (r < 0)
      watch_read_failed(w, interface, strerror(-r));
    else if (fields == unit_fields)
      watch_get_job(w);
  }
  if (--w->cur.pending == 0)
    watch_read_done(w);
  return 0;
}

static int on_job_type(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
  struct unit_watch *w = userdata;
  const char *type;

  w->job_call = sd_bus_slot_unref(w->job_call);
  if (reply_from_dying_bus(m))
    return 0;
  /* An error is a job that ended meanwhile: no job, and a signal follows. */
  if (!sd_bus_message_is_method_error(m, NULL) && sd_bus_message_read(m, "v", "s", &type) >= 0)
    snprintf(w->cur.props.job_type, sizeof(w->cur.props.job_type), "%s", type);
  if (--w->cur.pending == 0)
    watch_read_done(w);
  return 0;
}

/* A unit that is down with a job queued: what kind of job tells an
 * operator's restart from a stop (systemd_map.c). Part of the read. */
static void watch_get_job(struct unit_watch *w) {
  const struct agent_unit_props *p = &w->cur.props;
  int r;

  bool down =
      strcmp(p->active_state, "inactive") == 0 || strcmp(p->active_state, "deactivating") == 0;

  if (p->job_id == 0 || !w->cur.job_path[0] || !down)
    return;
  r = systemd_call(w->sd, &w->job_call, w->cur.job_path, DBUS_PROPERTIES_IFACE, "Get",
                   w->c->conf->timeout_usec, on_job_type, w, "ss", SYSTEMD_JOB_IFACE, "JobType");
  if (r >= 0)
    w->cur.pending++;
}

static int on_get_all_unit(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
  struct unit_watch *w = userdata;
  return on_get_all(m, w, ret_error, &w->unit_call, unit_fields, ELEMENTSOF(unit_fields),
                    "GetAll(Unit)");
}

static int on_get_all_service(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
  struct unit_watch *w = userdata;
  return on_get_all(m, w, ret_error, &w->service_call, service_fields, ELEMENTSOF(service_fields),
                    "GetAll(Service)");
}

/* Sends the GetAll calls of one read. */
static void watch_get_all(struct unit_watch *w) {
  struct agent_systemd *sd = w->sd;
  uint64_t timeout = w->c->conf->timeout_usec;
  int r;

  r = systemd_call(sd, &w->unit_call, w->path, DBUS_PROPERTIES_IFACE, "GetAll", timeout,
                   on_get_all_unit, w, "s", SYSTEMD_UNIT_IFACE);
  if (r < 0) {
    watch_read_failed(w, "GetAll(Unit)", strerror(-r));
    watch_read_done(w);
    return;
  }
  w->cur.pending = 1;
  if (!w->is_service)
    return;
  r = systemd_call(sd, &w->service_call, w->path, DBUS_PROPERTIES_IFACE, "GetAll", timeout,
                   on_get_all_service, w, "s", SYSTEMD_SERVICE_IFACE);
  if (r < 0)
    watch_read_failed(w, "GetAll(Service)", strerror(-r)); /* the Unit reply ends the read */
  else
    w->cur.pending++;
}

static int on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
  struct unit_watch *w = userdata;

  w->n_signals++;
  watch_read(w);
  return 0;
}

/* Matches PropertiesChanged on path (replacing an earlier match). */
static int watch_match(struct unit_watch *w, const char *path) {
  sd_bus_slot *slot = NULL;
  char *copy = strdup(path);
  int r;

  if (!copy)
    return -ENOMEM;
  /* No sender: a direct connection's signals carry none. */
  r = sd_bus_match_signal_async(w->sd->bus, &slot, NULL, path, DBUS_PROPERTIES_IFACE,
                                "PropertiesChanged", on_properties_changed, NULL, w);
  if (r < 0) {
    free(copy);
    return r;
  }
  sd_bus_slot_unref(w->match);
  w->match = slot;
  free(w->path);
  w->path = copy;
  return 0;
}

static int on_load_unit(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
  struct unit_watch *w = userdata;
  const char *path;
  int r;

  w->load_call = sd_bus_slot_unref(w->load_call);
  if (reply_from_dying_bus(m))
    return 0;
  if (sd_bus_message_is_method_error(m, NULL)) {
    char err[SYSTEMD_REASON_MAX];

    error_text(sd_bus_message_get_error(m), err, sizeof(err));
    watch_read_failed(w, "LoadUnit", err);
    watch_read_done(w);
    return 0;
  }
  r = sd_bus_message_read(m, "o", &path);
  if (r < 0) {
    watch_read_failed(w, "LoadUnit", strerror(-r));
    watch_read_done(w);
    return 0;
  }
  /* An alias resolves to the real unit, whose object sends the signals.
   * The match goes first, so that no change slips between it and the read. */
  if (!w->path || strcmp(path, w->path) != 0) {
    log_debug("component %s: unit %s is %s", w->c->conf->name, w->name, path);
    r = watch_match(w, path);
    if (r < 0) {
      watch_read_failed(w, "matching PropertiesChanged", strerror(-r));
      watch_read_done(w);
      return 0;
    }
  }
  w->need_load = false;
  watch_get_all(w);
  return 0;
}

/* Starts a read, or asks for one more when a read is in flight. */
static void watch_read(struct unit_watch *w) {
  struct agent_systemd *sd = w->sd;
  int r;

  if (!sd->connected)
    return; /* the connection's (re)start reads everything */
  if (w->reading) {
    w->read_again = true;
    return;
  }
  w->reading = true;
  w->cur = (struct unit_read){0};
  if (!w->need_load && w->path) {
    watch_get_all(w);
    return;
  }
  r = systemd_call(sd, &w->load_call, SYSTEMD_PATH, SYSTEMD_MANAGER_IFACE, "LoadUnit",
                   w->c->conf->timeout_usec, on_load_unit, w, "s", w->name);
  if (r < 0) {
    watch_read_failed(w, "LoadUnit", strerror(-r));
    watch_read_done(w);
  }
}

static uint64_t recheck_accuracy(const struct unit_watch *w) {
  return MST_MIN(MST_MAX(w->c->conf->interval_usec / 50, USEC_PER_MSEC), 100 * USEC_PER_MSEC);
}

static int on_recheck(sd_event_source *source, uint64_t usec, void *userdata) {
  struct unit_watch *w = userdata;
  int r;

  watch_read(w);
  r = sd_event_source_set_time_relative(source, w->c->conf->interval_usec);
  if (r >= 0)
    r = sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
  if (r < 0)
    log_error("component %s: cannot schedule the next re-check of %s: %s", w->c->conf->name,
              w->name, strerror(-r));
  return 0;
}

/* --- the connection ---------------------------------------------------------------- */

static void systemd_report_all(struct agent_systemd *sd, enum mst_state state, const char *text) {
  for (size_t i = 0; i < sd->n_watches; i++)
    agent_component_observed(sd->watches[i].c, state, text);
}

/* Releases every slot (calls in flight, matches) of the connection: none
 * of its callbacks runs after this. */
static void systemd_release_slots(struct agent_systemd *sd) {
  for (size_t i = 0; i < sd->n_watches; i++)
    watch_detach(&sd->watches[i]);
  sd->disconnected = sd_bus_slot_unref(sd->disconnected);
  sd->reloading = sd_bus_slot_unref(sd->reloading);
  sd->subscribe_call = sd_bus_slot_unref(sd->subscribe_call);
  sd->connected = false;
}

/* Closes the connection without flushing (the peer may be gone or hung). */
static void systemd_close_bus(struct agent_systemd *sd) {
  systemd_release_slots(sd);
  if (sd->bus) {
    (void)sd_bus_detach_event(sd->bus);
    sd->bus = sd_bus_close_unref(sd->bus);
  }
}

static void systemd_schedule_reconnect(struct agent_systemd *sd) {
  uint64_t delay = sd->backoff_usec;
  int r;

  /* A little jitter keeps a fleet of agents from reconnecting in step. */
  delay += agent_random_below(sd->agent, delay / 10 + 1);
  sd->backoff_usec = MST_MIN(sd->backoff_usec * 2, SYSTEMD_BACKOFF_MAX);
  r = sd_event_source_set_time_relative(sd->reconnect, delay);
  if (r >= 0)
    r = sd_event_source_set_enabled(sd->reconnect, SD_EVENT_ONESHOT);
  if (r < 0)
    log_error("systemd: cannot schedule a reconnect: %s", strerror(-r));
}

/* The connection is gone or could not be made: every unit is unknown. The
 * bus itself is released by the reconnect timer, outside of its own
 * callbacks; its slots are released now, so nothing of it runs again. */
static void systemd_lost(struct agent_systemd *sd, const char *fmt, ...) {
  char reason[SYSTEMD_REASON_MAX], text[SYSTEMD_REASON_MAX + 64];
  bool was_connected = sd->connected;
  va_list ap;

  va_start(ap, fmt);
  (void)vsnprintf(reason, sizeof(reason), fmt, ap);
  va_end(ap);

  systemd_release_slots(sd);
  if (was_connected)
    log_warning("systemd bus disconnected: %s; reconnecting", reason);
  else
    log_debug("systemd bus disconnected: %s; retrying", reason);
  snprintf(text, sizeof(text), "systemd bus disconnected: %s", reason);
  systemd_report_all(sd, MST_STATE_UNKNOWN, text);
  systemd_schedule_reconnect(sd);
}

static int on_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
  struct agent_systemd *sd = userdata;

  systemd_lost(sd, "connection to %s lost", sd->bus_name);
  return 0;
}

static int on_reloading(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
  struct agent_systemd *sd = userdata;
  int active = 0;

  if (sd_bus_message_read(m, "b", &active) < 0 || active)
    return 0;
  /* A daemon-reload is over: unit files and aliases may have changed. */
  log_debug("systemd: daemon-reload finished, reading every unit again");
  for (size_t i = 0; i < sd->n_watches; i++) {
    sd->watches[i].need_load = true;
    watch_read(&sd->watches[i]);
  }
  return 0;
}

static int on_subscribed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
  struct agent_systemd *sd = userdata;

  sd->subscribe_call = sd_bus_slot_unref(sd->subscribe_call);
  if (reply_from_dying_bus(m))
    return 0;
  if (sd_bus_message_is_method_error(m, NULL)) {
    char err[SYSTEMD_REASON_MAX];

    error_text(sd_bus_message_get_error(m), err, sizeof(err));
    systemd_lost(sd, "Subscribe on %s failed: %s", sd->bus_name, err);
    return 0;
  }
  log_info("systemd: subscribed on %s, watching %zu units", sd->bus_name, sd->n_watches);
  sd->backoff_usec = SYSTEMD_BACKOFF_MIN;
  sd->connected = true;
  for (size_t i = 0; i < sd->n_watches; i++)
    watch_read(&sd->watches[i]);
  return 0;
}

static int systemd_open_bus(struct agent_systemd *sd, sd_bus **ret) {
  const char *which = sd->agent->cfg.systemd;
  sd_bus *bus = NULL;
  int r;

  if (strcmp(which, "system") == 0)
    return sd_bus_open_system(ret);
  if (strcmp(which, "user") == 0)
    return sd_bus_open_user(ret);

  /* A manager's private socket: a direct connection, no bus driver. */
  r = sd_bus_new(&bus);
  if (r < 0)
    return r;
  r = sd_bus_set_address(bus, which);
  if (r >= 0)
    r = sd_bus_start(bus);
  if (r < 0) {
    sd_bus_unref(bus);
    return r;
  }
  *ret = bus;
  return 0;
}

/* Opens the connection and sends Subscribe; then the per-unit matches (now,
 * so that they are in place before any read) and reads follow its reply. */
static int systemd_connect(struct agent_systemd *sd) {
  int r;

  r = systemd_open_bus(sd, &sd->bus);
  if (r < 0) {
    sd->bus = NULL;
    systemd_lost(sd, "cannot connect to %s: %s", sd->bus_name, strerror(-r));
    return 0;
  }
  /* The loop's exit must not flush into a manager that may hang. */
  r = sd_bus_set_close_on_exit(sd->bus, false);
  if (r >= 0)
    r = sd_bus_attach_event(sd->bus, sd->agent->event, SD_EVENT_PRIORITY_NORMAL);
  if (r >= 0)
    r = sd_bus_match_signal_async(sd->bus, &sd->disconnected, NULL, DBUS_LOCAL_PATH,
                                  DBUS_LOCAL_IFACE, "Disconnected", on_disconnected, NULL, sd);
  if (r >= 0)
    r = sd_bus_match_signal_async(sd->bus, &sd->reloading, NULL, SYSTEMD_PATH,
                                  SYSTEMD_MANAGER_IFACE, "Reloading", on_reloading, NULL, sd);
  for (size_t i = 0; r >= 0 && i < sd->n_watches; i++) {
    struct unit_watch *w = &sd->watches[i];
    _cleanup_free_ char *path = NULL;

    /* The path systemd gives the unit's own name; LoadUnit may move it. */
    r = sd_bus_path_encode(SYSTEMD_UNIT_PREFIX, w->name, &path);
    if (r >= 0)
      r = watch_match(w, path);
  }
  if (r >= 0)
    r = systemd_call(sd, &sd->subscribe_call, SYSTEMD_PATH, SYSTEMD_MANAGER_IFACE, "Subscribe",
                     SYSTEMD_CALL_TIMEOUT, on_subscribed, sd, NULL);
  if (r < 0) {
    systemd_lost(sd, "cannot set up %s: %s", sd->bus_name, strerror(-r));
    return 0;
  }
  log_debug("systemd: connecting to %s", sd->bus_name);
  return 0;
}

static int on_reconnect(sd_event_source *source, uint64_t usec, void *userdata) {
  struct agent_systemd *sd = userdata;

  systemd_close_bus(sd);
  (void)systemd_connect(sd);
  return 0;
}

void agent_systemd_read_all(struct agent_systemd *sd) {
  for (size_t i = 0; sd && i < sd->n_watches; i++)
    watch_read(&sd->watches[i]);
}

/* --- life cycle -------------------------------------------------------------------- */

int agent_systemd_new(struct agent *a, struct agent_systemd **ret) {
  struct agent_systemd *sd;
  size_t n = 0, k = 0;
  int r;

  for (size_t i = 0; i < a->n_components; i++)
    if (a->components[i].conf->check == MST_CHECK_SYSTEMD)
      n++;

  sd = calloc(1, sizeof(*sd));
  if (!sd)
    return -ENOMEM;
  sd->agent = a;
  sd->backoff_usec = SYSTEMD_BACKOFF_MIN;
  sd->watches = calloc(MST_MAX(n, (size_t)1), sizeof(*sd->watches));
  if (!sd->watches) {
    free(sd);
    return -ENOMEM;
  }
  if (strcmp(a->cfg.systemd, "system") == 0)
    r = asprintf(&sd->bus_name, "the system bus");
  else if (strcmp(a->cfg.systemd, "user") == 0)
    r = asprintf(&sd->bus_name, "the user bus");
  else
    r = asprintf(&sd->bus_name, "%s", a->cfg.systemd);
  if (r < 0) {
    sd->bus_name = NULL;
    r = -ENOMEM;
    goto fail;
  }

  for (size_t i = 0; i < a->n_components; i++) {
    struct agent_component *c = &a->components[i];
    struct unit_watch *w;
    const char *dot;

    if (c->conf->check != MST_CHECK_SYSTEMD)
      continue;
    w = &sd->watches[k++];
    sd->n_watches = k;
    w->sd = sd;
    w->c = c;
    w->name = c->conf->unit;
    dot = strrchr(w->name, '.');
    w->is_service = dot && strcmp(dot, ".service") == 0;
    w->need_load = true;
    c->unit = &w->unit;

    /* The first re-check comes one interval after the start. */
    r = sd_event_add_time_relative(a->event, &w->recheck, CLOCK_MONOTONIC, c->conf->interval_usec,
                                   recheck_accuracy(w), on_recheck, w);
    if (r < 0)
      goto fail;
    (void)sd_event_source_set_description(w->recheck, "systemd-recheck");
    r = sd_event_add_time(a->event, &w->settle, CLOCK_MONOTONIC, 0, 10 * USEC_PER_MSEC, on_settled,
                          w);
    if (r < 0)
      goto fail;
    (void)sd_event_source_set_enabled(w->settle, SD_EVENT_OFF);
    (void)sd_event_source_set_description(w->settle, "systemd-settle");
  }

  r = sd_event_add_time_relative(a->event, &sd->reconnect, CLOCK_MONOTONIC, SYSTEMD_BACKOFF_MIN,
                                 10 * USEC_PER_MSEC, on_reconnect, sd);
  if (r < 0)
    goto fail;
  (void)sd_event_source_set_enabled(sd->reconnect, SD_EVENT_OFF);
  (void)sd_event_source_set_description(sd->reconnect, "systemd-reconnect");

  (void)systemd_connect(sd);
  *ret = sd;
  return 0;

fail:
  agent_systemd_free(sd);
  return r;
}

void agent_systemd_free(struct agent_systemd *sd) {
  if (!sd)
    return;
  systemd_close_bus(sd);
  sd->reconnect = sd_event_source_disable_unref(sd->reconnect);
  for (size_t i = 0; i < sd->n_watches; i++) {
    struct unit_watch *w = &sd->watches[i];

    w->recheck = sd_event_source_disable_unref(w->recheck);
    w->settle = sd_event_source_disable_unref(w->settle);
    free(w->unit.display_name);
    free(w->unit.description);
    w->c->unit = NULL;
  }
  free(sd->watches);
  free(sd->bus_name);
  free(sd);
}
