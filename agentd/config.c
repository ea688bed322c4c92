/* The agent's configuration: the table of [agent] and [log] keys with their
 * bounds and defaults, and the checks a table cannot express (required keys,
 * the aggregator list, the token file, the role's profile and what the agent
 * needs of its components). Every problem goes into one diag as
 * "path:line: message", so `--check-config` and a refused start print all
 * of them at once. A key's line is found by a second, silent pass over the
 * file, so that errors found after parsing still point at their line. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "boot.h"
#include "config.h"
#include "config_keys.h"
#include "dcos_facts.h"
#include "mst/addr.h"
#include "mst/auth.h"
#include "mst/config.h"
#include "mst/diag.h"
#include "mst/duration.h"
#include "mst/dynbuf.h"
#include "mst/frame.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/profile.h"
#include "mst/tls.h"
#include "mst/utf8.h"
#include "netaddr.h"
#include "node_id.h"
#include "probe/http_url.h"
#include "util.h"

/* Lines where the [agent] keys that get later checks were set (0: unset). */
struct key_lines {
  unsigned node_id, role, profiles, spool, aggregators, token_file, systemd;
  unsigned node_id_command;
  unsigned dcos_version_file, mesos_state_url;
};

static int record_key_line(void *user, const char *section, const char *name, const char *value,
                           unsigned line) {
  struct key_lines *kl = user;
  static const struct {
    const char *name;
    size_t offset;
  } keys[] = {
      {"node_id", offsetof(struct key_lines, node_id)},
      {"role", offsetof(struct key_lines, role)},
      {"profiles", offsetof(struct key_lines, profiles)},
      {"spool", offsetof(struct key_lines, spool)},
      {"aggregators", offsetof(struct key_lines, aggregators)},
      {"token_file", offsetof(struct key_lines, token_file)},
      {"systemd", offsetof(struct key_lines, systemd)},
      {"node_id_command", offsetof(struct key_lines, node_id_command)},
      {"dcos_version_file", offsetof(struct key_lines, dcos_version_file)},
      {"mesos_state_url", offsetof(struct key_lines, mesos_state_url)},
  };

  if (!name || strcmp(section, "agent") != 0)
    return 0;
  for (size_t i = 0; i < ELEMENTSOF(keys); i++)
    if (strcmp(keys[i].name, name) == 0) {
      unsigned *slot = (unsigned *)((char *)kl + keys[i].offset);
      if (*slot == 0)
        *slot = line;
    }
  return 0;
}

static void check_required(const char *path, const char *value, const char *key,
                           struct mst_diag *diag) {
  if (!value || !*value)
    mst_diag_add(diag, path, 0, "[agent] %s is required", key);
}

/* The node id from node_id_command, as DC/OS's detect_ip gives a node's IP.
 * What goes wrong is said at the key's line, with what the command did. */
static void node_id_from_command(struct agent *a, const char *path, const struct key_lines *kl,
                                 struct mst_diag *diag) {
  unsigned line = kl->node_id_command;
  char err[512];
  char *id = NULL;

  if (a->cfg.node_id) {
    mst_diag_add(diag, path, line,
                 "[agent] node_id_command: node_id is set too (line %u): set one of them",
                 kl->node_id);
    return;
  }
  if (!*a->cfg.node_id_command) {
    mst_diag_add(diag, path, line, "[agent] node_id_command: empty");
    return;
  }
  if (agent_node_id_run(a->cfg.node_id_command, a->cfg.node_id_timeout_usec, &id, err,
                        sizeof(err)) < 0) {
    mst_diag_add(diag, path, line, "[agent] node_id_command: '%s' %s", a->cfg.node_id_command, err);
    return;
  }
  log_info("node id %s, from node_id_command '%s'", id, a->cfg.node_id_command);
  a->cfg.node_id = id;
}

/* The DC/OS version, from dcos_version_file, at the key's line. */
static void dcos_version_load(struct agent *a, const char *path, unsigned line,
                              struct mst_diag *diag) {
  char err[512];

  if (agent_dcos_version_read(a->cfg.dcos_version_file, &a->dcos_version, err, sizeof(err)) < 0)
    mst_diag_add(diag, path, line, "[agent] dcos_version_file: %s", err);
}

/* mesos_state_url with every "{node_id}" replaced by the node id (DC/OS's
 * Mesos listens on the node's IP, which node_id_command gives), then
 * checked as an http check's URL is. */
static void mesos_state_url_load(struct agent *a, const char *path, unsigned line,
                                 struct mst_diag *diag) {
  static const char mark[] = "{node_id}";
  const char *url = a->cfg.mesos_state_url, *id = a->cfg.node_id ? a->cfg.node_id : "";
  struct mst_dynbuf b;
  struct agent_http_url u;
  char err[512], *expanded = NULL;
  int r = 0;

  mst_dynbuf_init(&b, 4096);
  for (const char *at; r >= 0 && (at = strstr(url, mark)); url = at + strlen(mark)) {
    r = mst_dynbuf_add(&b, url, (size_t)(at - url));
    if (r >= 0)
      r = mst_dynbuf_adds(&b, id);
  }
  if (r >= 0)
    r = mst_dynbuf_adds(&b, url);
  if (r >= 0)
    r = mst_dynbuf_take(&b, &expanded, NULL);
  mst_dynbuf_reset(&b);
  if (r < 0) {
    mst_diag_add(diag, path, line, "[agent] mesos_state_url: too long once {node_id} is in it");
    return;
  }
  free(a->cfg.mesos_state_url);
  a->cfg.mesos_state_url = expanded;
  r = agent_http_url_parse(expanded, &u, err, sizeof(err));
  if (r == -EINVAL)
    mst_diag_add(diag, path, line, "[agent] mesos_state_url: %s", err);
  else if (r >= 0)
    agent_http_url_done(&u);
}

static void check_aggregators(const char *path, unsigned line, const char *list,
                              struct mst_diag *diag) {
  char **v = NULL;
  int n = mst_strv_split(list, &v);

  if (n < 0) {
    mst_diag_add(diag, path, line, "[agent] aggregators: out of memory");
    return;
  }
  if (n == 0)
    mst_diag_add(diag, path, line, "[agent] aggregators: the list is empty");
  for (char **i = v; *i; i++) {
    struct mst_addr addr;
    char err[256];

    if (mst_addr_parse(*i, 0, &addr, err, sizeof(err)) < 0)
      mst_diag_add(diag, path, line, "[agent] aggregators: %s", err);
  }
  mst_strv_free(v);
}

static void check_systemd(const char *path, unsigned line, const char *value,
                          struct mst_diag *diag) {
  if (strcmp(value, "system") == 0 || strcmp(value, "user") == 0 || strchr(value, '='))
    return;
  mst_diag_add(diag, path, line,
               "[agent] systemd: '%s' is not 'system', 'user' or a bus address "
               "(such as unix:path=/run/user/0/systemd/private)",
               value);
}

static void read_token(struct agent *a, const char *path, unsigned line, struct mst_diag *diag) {
  const char *file = a->cfg.token_file;
  int r = mst_token_read(file, &a->token);

  if (r >= 0)
    return;
  if (r == -EPERM)
    mst_diag_add(diag, path, line,
                 "[agent] token_file: %s is readable by group or others; make it private "
                 "(chmod 600)",
                 file);
  else if (r == -EINVAL)
    mst_diag_add(diag, path, line, "[agent] token_file: %s is empty or not a regular file", file);
  else
    mst_diag_add(diag, path, line, "[agent] token_file: cannot read %s: %s", file, strerror(-r));
}

/* A systemd unit name: NAME.TYPE, at most 255 bytes, of the characters
 * systemd allows (unit_name_is_valid()), so that a typo stops the start
 * rather than showing up later as a LoadUnit error. */
static bool unit_name_valid(const char *name) {
  static const char *const types[] = {"service", "socket", "target", "device", "mount", "automount",
                                      "swap",    "timer",  "path",   "slice",  "scope"};
  const char *dot = strrchr(name, '.');
  size_t n = strlen(name);

  if (n == 0 || n > 255 || !dot || dot == name)
    return false;
  for (const char *c = name; *c; c++)
    if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\@", *c))
      return false;
  for (size_t i = 0; i < ELEMENTSOF(types); i++)
    if (strcmp(dot + 1, types[i]) == 0)
      return true;
  return false;
}

/* What the agent itself needs of its components beyond the profile rules. */
static void check_components(const struct mst_profile *p, struct mst_diag *diag) {
  for (size_t i = 0; i < p->n_components; i++) {
    const struct mst_component *c = &p->components[i];

    if (c->check == MST_CHECK_SYSTEMD && c->unit && !unit_name_valid(c->unit))
      mst_diag_add(diag, p->path, c->line,
                   "component '%s': unit '%s' is not a unit name (such as NAME.service or "
                   "NAME.socket)",
                   c->name, c->unit);

    if (c->check == MST_CHECK_TCP && c->address) {
      struct mst_addr addr;
      char err[256];

      if (mst_addr_parse(c->address, 0, &addr, err, sizeof(err)) < 0)
        mst_diag_add(diag, p->path, c->line, "component '%s': address %s", c->name, err);
    }

    if (c->check == MST_CHECK_HTTP && c->url) {
      struct agent_http_url u;
      char err[512];
      int r = agent_http_url_parse(c->url, &u, err, sizeof(err));

      if (r == -EINVAL)
        mst_diag_add(diag, p->path, c->line, "component '%s': url %s", c->name, err);
      else if (r >= 0)
        agent_http_url_done(&u);
    }
  }
}

int agent_tls_load(const struct agent *a, const char *path, struct mst_tls_creds **ret,
                   struct mst_diag *diag) {
  const struct mst_tls_files files = {a->cfg.tls_cert, a->cfg.tls_key, a->cfg.tls_ca};
  const char *orphan = a->cfg.tls_cert          ? "cert"
                       : a->cfg.tls_key         ? "key"
                       : a->cfg.tls_server_name ? "server_name"
                                                : NULL;

  *ret = NULL;
  if (a->cfg.tls_ca)
    return mst_tls_creds_load_config(path, &files, ret, diag);
  if (!orphan)
    return 0; /* TLS is off */
  mst_diag_add(diag, path, mst_conf_key_line(path, "tls", orphan),
               "[tls] ca is required to use TLS: the CA that signs the aggregators' certificates");
  return -EINVAL;
}

int agent_tls_reload(struct agent *a) {
  struct mst_tls_creds *creds = NULL;
  struct mst_diag diag = {0};
  int reloaded = 0;

  if (!a->tls_creds) {
    log_notice("received HUP: TLS is off, and reloading the rest of the config is not supported "
               "(restart instead), ignoring");
    return 0;
  }
  if (agent_tls_load(a, a->config_path, &creds, &diag) < 0 || !creds) {
    mst_diag_print(&diag);
    log_error("received HUP: the TLS files cannot be used; keeping the ones in use");
  } else {
    mst_tls_creds_unref(a->tls_creds);
    a->tls_creds = creds;
    log_notice("received HUP: reloaded the TLS certificate, key and CA for the next connection "
               "(the rest of the config needs a restart)");
    reloaded = 1;
  }
  mst_diag_done(&diag);
  return reloaded;
}

static void check_role(struct agent *a, const char *path, unsigned line, struct mst_diag *diag) {
  char known[512] = "";
  size_t off = 0;

  a->profile = mst_profile_set_find(a->profiles, a->cfg.role);
  if (a->profile) {
    check_components(a->profile, diag);
    return;
  }
  for (size_t i = 0; i < a->profiles->n && off < sizeof(known); i++) {
    int n = snprintf(known + off, sizeof(known) - off, "%s%s", i ? ", " : "",
                     a->profiles->profiles[i]->role);
    if (n < 0)
      break;
    off += (size_t)n;
  }
  mst_diag_add(diag, path, line, "[agent] role: no profile for role '%s' in %s (known roles: %s)",
               a->cfg.role, a->cfg.profiles, off ? known : "none");
}

int agent_config_load(struct agent *a, const char *path, struct mst_diag *diag) {
  struct key_lines kl = {};
  struct mst_diag scratch = {};
  int r;

  r = mst_conf_load(path, agent_config_keys, agent_config_keys_count, &a->cfg, diag);
  if (r < 0 && r != -EINVAL)
    return r; /* the file could not be read; diag says so */

  /* Errors in the file were all reported above; this pass only finds lines. */
  (void)mst_ini_parse(path, record_key_line, &kl, &scratch);
  mst_diag_done(&scratch);

  check_required(path, a->cfg.role, "role", diag);
  check_required(path, a->cfg.profiles, "profiles", diag);
  check_required(path, a->cfg.spool, "spool", diag);
  check_required(path, a->cfg.aggregators, "aggregators", diag);

  if (a->cfg.node_id && !agent_node_id_valid(a->cfg.node_id))
    mst_diag_add(diag, path, kl.node_id,
                 "[agent] node_id: '%s' must be 1-%d bytes of printable UTF-8 without spaces",
                 a->cfg.node_id, MST_NODE_ID_MAX);
  if (a->cfg.aggregators)
    check_aggregators(path, kl.aggregators, a->cfg.aggregators, diag);
  if (a->cfg.systemd)
    check_systemd(path, kl.systemd, a->cfg.systemd, diag);
  if (a->cfg.token_file && *a->cfg.token_file)
    read_token(a, path, kl.token_file, diag);
  if (!a->cfg.boot_id_file || !*a->cfg.boot_id_file)
    mst_diag_add(diag, path, 0, "[agent] boot_id_file must not be empty");
  (void)agent_tls_load(a, path, &a->tls_creds, diag);
  a->config_path = path;

  if (a->cfg.profiles && *a->cfg.profiles) {
    r = mst_profile_set_load(a->cfg.profiles, &a->profiles, diag);
    if (r >= 0 && a->cfg.role && *a->cfg.role)
      check_role(a, path, kl.role, diag);
  }

  if (!a->token) {
    a->token = strdup("");
    if (!a->token)
      return -ENOMEM;
  }
  if (a->cfg.node_id_command) {
    node_id_from_command(a, path, &kl, diag);
    if (!a->cfg.node_id)
      return -EINVAL; /* no host name in its place: the id must be the command's */
  }
  if (a->cfg.dcos_version_file)
    dcos_version_load(a, path, kl.dcos_version_file, diag);
  if (!a->cfg.node_id) {
    r = agent_hostname(&a->cfg.node_id);
    if (r < 0) {
      mst_diag_add(diag, path, 0, "[agent] node_id: not set, and the host name is unknown: %s",
                   strerror(-r));
      return -EINVAL;
    }
    /* The aggregator would refuse every Hello: say so now. */
    if (!agent_node_id_valid(a->cfg.node_id))
      mst_diag_add(diag, path, 0,
                   "[agent] node_id: not set, and the host name cannot be one (1-%d bytes of "
                   "printable UTF-8 without spaces): set node_id",
                   MST_NODE_ID_MAX);
  }
  if (a->cfg.mesos_state_url)
    mesos_state_url_load(a, path, kl.mesos_state_url, diag);

  return diag->n > 0 ? -EINVAL : 0;
}

void agent_config_done(struct agent *a) {
  mst_conf_free(agent_config_keys, agent_config_keys_count, &a->cfg);
  mst_profile_set_free(a->profiles);
  a->profiles = NULL;
  a->profile = NULL;
  free(a->token);
  a->token = NULL;
  free(a->dcos_version);
  a->dcos_version = NULL;
  mst_tls_creds_unref(a->tls_creds);
  a->tls_creds = NULL;
}
