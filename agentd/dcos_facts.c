/* The DC/OS version and the Mesos id of the node: see dcos_facts.h.
 *
 * DC/OS's diagnostics read the version from dcos-version.json's "version"
 * and the Mesos id from the local Mesos state's "id" (the master's on a
 * master, the agent's on an agent, port 5050 or 5051). The agent does the
 * same. The version is a file DC/OS installs with the node and changes only
 * with an upgrade, which restarts the agent: it is read once, at config
 * load, where a mistake stops the start at the key's line. The Mesos id
 * belongs to a process that may be down, not yet registered, or registered
 * again under a new id (its agent id changes when its host changes enough):
 * it is fetched on the loop (probe/http.c's client), at once and then every
 * mesos_state_interval after a fetch ends, so fetches never overlap. Only
 * the body's first AGENT_HTTP_BODY_MAX bytes are kept: the "id" comes near
 * the start, before the frameworks and tasks that make a master's state
 * large. What the node shows is the last id Mesos named: a failed fetch
 * (Mesos down), or a state without an id (an agent registering), keeps it,
 * since the node is still that Mesos node until Mesos names another. A
 * failure is logged once, and again only when its reason changes. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "dcos_facts.h"
#include "json_scan.h"
#include "mst/frame.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/time.h"
#include "probe/http.h"
#include "probe/http_response.h"
#include "stream.h"
#include "util.h"

struct agent_mesos_state {
  struct agent *agent;
  sd_event_source *timer;
  struct http_run *run; /* the fetch in flight, or NULL */
  char failure[256];    /* the last failure logged; "" after a success */
};

int agent_dcos_version_read(const char *path, char **ret, char *err, size_t errsize) {
  _cleanup_free_ char *text = NULL, *version = NULL;
  json_error_t jerr;
  json_t *doc, *v;
  int r;

  r = agent_read_file_trimmed(path, AGENT_DCOS_VERSION_FILE_MAX, &text);
  if (r == -EFBIG) {
    snprintf(err, errsize, "%s is over %d bytes: not DC/OS's version file", path,
             AGENT_DCOS_VERSION_FILE_MAX);
    return r;
  }
  if (r < 0) {
    snprintf(err, errsize, "cannot read %s: %s", path,
             r == -EBADMSG ? "a NUL byte in it" : strerror(-r));
    return r;
  }
  /* The whole file, unlike the Mesos state: it is small and must be JSON. */
  doc = json_loads(text, 0, &jerr);
  if (!doc) {
    snprintf(err, errsize, "%s is not JSON: %s at line %d", path, jerr.text, jerr.line);
    return -EBADMSG;
  }
  v = json_object_get(doc, "version");
  if (!json_is_object(doc) || !json_is_string(v)) {
    snprintf(err, errsize, "%s has no \"version\" string", path);
    json_decref(doc);
    return -EBADMSG;
  }
  version = strdup(json_string_value(v));
  json_decref(doc);
  if (!version) {
    snprintf(err, errsize, "out of memory");
    return -ENOMEM;
  }
  if (!agent_word_valid(version, MST_DCOS_VERSION_MAX)) {
    snprintf(err, errsize, "%s: \"version\" must be 1-%d bytes of printable UTF-8 without spaces",
             path, MST_DCOS_VERSION_MAX);
    return -EBADMSG;
  }
  *ret = TAKE_PTR(version);
  return 0;
}

int agent_mesos_id_parse(const char *text, size_t len, char **ret, char *err, size_t errsize) {
  _cleanup_free_ char *id = NULL;
  char why[128];
  int r;

  r = agent_json_find_string(text, len, "id", &id, why, sizeof(why));
  if (r == -ENOMEM) {
    snprintf(err, errsize, "out of memory");
    return r;
  }
  if (r == -ENOENT) {
    snprintf(err, errsize, "the state has no \"id\" (Mesos has not registered yet)");
    return r;
  }
  if (r == -EAGAIN) {
    snprintf(err, errsize, "no \"id\" in the state's first %d bytes", AGENT_HTTP_BODY_MAX);
    return -EBADMSG;
  }
  if (r < 0) {
    snprintf(err, errsize, "the state is not a JSON object with an \"id\" string: %s", why);
    return r;
  }
  if (!agent_word_valid(id, MST_MESOS_ID_MAX)) {
    snprintf(err, errsize, "its \"id\" is not 1-%d bytes of printable UTF-8 without spaces",
             MST_MESOS_ID_MAX);
    return -EBADMSG;
  }
  *ret = TAKE_PTR(id);
  return 0;
}

static void mesos_state_schedule(struct agent_mesos_state *m, uint64_t after_usec) {
  (void)sd_event_source_set_time_relative(m->timer, after_usec);
  (void)sd_event_source_set_enabled(m->timer, SD_EVENT_ONESHOT);
}

/* A fetch failed: said once per reason; the id stays. */
static void mesos_state_failed(struct agent_mesos_state *m, const char *why) {
  struct agent *a = m->agent;

  if (strcmp(m->failure, why) == 0)
    return;
  snprintf(m->failure, sizeof(m->failure), "%s", why);
  log_warning("the Mesos id from %s: %s; %s%s, ignoring", a->cfg.mesos_state_url, why,
              a->mesos_id[0] ? "keeping " : "none known yet", a->mesos_id);
}

static void mesos_state_done(void *userdata, unsigned status, const char *body, size_t len,
                             const char *error) {
  struct agent_mesos_state *m = userdata;
  struct agent *a = m->agent;
  _cleanup_free_ char *id = NULL;
  char why[256];

  m->run = NULL;
  mesos_state_schedule(m, a->cfg.mesos_state_interval_usec);
  if (!body) {
    mesos_state_failed(m, error);
    return;
  }
  if (status != 200) {
    snprintf(why, sizeof(why), "HTTP %u (expected 200)", status);
    mesos_state_failed(m, why);
    return;
  }
  if (agent_mesos_id_parse(body, len, &id, why, sizeof(why)) < 0) {
    mesos_state_failed(m, why);
    return;
  }
  if (m->failure[0])
    log_info("the Mesos id from %s: answered again", a->cfg.mesos_state_url);
  m->failure[0] = '\0';
  if (strcmp(a->mesos_id, id) == 0)
    return;
  if (a->mesos_id[0])
    log_notice("Mesos id %s, from %s (was %s: Mesos registered again)", id, a->cfg.mesos_state_url,
               a->mesos_id);
  else
    log_info("Mesos id %s, from %s", id, a->cfg.mesos_state_url);
  snprintf(a->mesos_id, sizeof(a->mesos_id), "%s", id);
  agent_stream_mesos_id_changed(a->stream);
}

static int mesos_state_on_timer(sd_event_source *source, uint64_t usec, void *userdata) {
  struct agent_mesos_state *m = userdata;
  struct agent *a = m->agent;
  uint64_t timeout = MST_MIN(AGENT_MESOS_STATE_TIMEOUT_USEC,
                             MST_MAX(a->cfg.mesos_state_interval_usec, USEC_PER_SEC));
  int r;

  r = agent_http_fetch(a->http, a->cfg.mesos_state_url, timeout, mesos_state_done, m, &m->run);
  if (r < 0) {
    char why[128];
    snprintf(why, sizeof(why), "cannot start a fetch: %s", strerror(-r));
    mesos_state_failed(m, why);
    mesos_state_schedule(m, a->cfg.mesos_state_interval_usec);
  }
  return 0;
}

int agent_mesos_state_start(struct agent *a) {
  struct agent_mesos_state *m;
  int r;

  if (!a->cfg.mesos_state_url)
    return 0;
  if (!a->http)
    return -EINVAL;
  m = calloc(1, sizeof(*m));
  if (!m)
    return -ENOMEM;
  m->agent = a;
  r = sd_event_add_time_relative(a->event, &m->timer, CLOCK_MONOTONIC, 0, USEC_PER_MSEC,
                                 mesos_state_on_timer, m);
  if (r < 0) {
    free(m);
    return r;
  }
  (void)sd_event_source_set_description(m->timer, "mesos-state");
  a->mesos_state = m;
  return 0;
}

void agent_mesos_state_stop(struct agent *a) {
  struct agent_mesos_state *m = TAKE_PTR(a->mesos_state);

  if (!m)
    return;
  if (m->run)
    agent_http_fetch_cancel(m->run);
  sd_event_source_disable_unref(m->timer);
  free(m);
}
