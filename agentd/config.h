/* The agent's configuration (config.c): the [agent], [tls] and [log]
 * sections of its config file, the token file, and the profile of its role.
 * Loaded once at start (and for --check-config); only the TLS files are read
 * again, on SIGHUP (agent_tls_reload()). Loop thread. */
#pragma once

#include <stdint.h>

#define AGENT_DEFAULT_BOOT_ID_FILE "/proc/sys/kernel/random/boot_id"

struct agent;
struct mst_diag;
struct mst_tls_creds;

/* [agent], [tls] and [log] of the config file; strings owned (mst_conf_free,
 * through agent_config_done()). The keys are config_keys.c's table. */
struct agent_config {
  char *node_id;
  char *role;
  char *profiles;
  char *spool;
  char *aggregators;
  char *token_file;
  char *systemd;
  char *boot_id_file;
  uint64_t heartbeat_usec;
  uint64_t retention_usec;
  uint64_t max_frame;
  char *tls_ca;   /* [tls] ca: set, the stream is TLS and the aggregator is verified */
  char *tls_cert; /* [tls] cert and key: the agent's client certificate (mTLS) */
  char *tls_key;
  char *tls_server_name; /* [tls] server_name: the name to verify instead of the host */
  int log_level;
  /* node_id_command: run at start, its output is the node id (node_id.h);
   * exclusive with node_id. node_id_timeout bounds it. */
  char *node_id_command;
  uint64_t node_id_timeout_usec;
  /* DC/OS's facts of the node (dcos_facts.h): the version file, read at
   * load; the Mesos state URL ("{node_id}" replaced by the node id at
   * load), fetched every mesos_state_interval. */
  char *dcos_version_file;
  char *mesos_state_url;
  uint64_t mesos_state_interval_usec;
};

/* Loads and validates the config file into a->cfg, reads the token file, and
 * loads the profile set and this role's profile (a->profiles, a->profile,
 * a->token, a->tls_creds, all owned by a). Every problem goes to diag as
 * "path:line: message". Returns 0 or a negative errno (-EINVAL when diag
 * has the reasons). The caller frees with agent_config_done() either way. */
int agent_config_load(struct agent *a, const char *path, struct mst_diag *diag);
void agent_config_done(struct agent *a);

/* Loads the [tls] files named in a->cfg: *ret (a new reference, the
 * caller's) is NULL when TLS is off ([tls] ca unset). Problems go to diag
 * as "path:line: message". Returns 0 or a negative errno. Loop thread
 * (start-up and SIGHUP). */
int agent_tls_load(const struct agent *a, const char *path, struct mst_tls_creds **ret,
                   struct mst_diag *diag);

/* SIGHUP: loads the [tls] files again and, when they can be used, puts them
 * in a->tls_creds for the next connection (the old reference is dropped;
 * a stream already up keeps its session). Logs what it did, once. Returns
 * 1 when new credentials are in place, 0 when nothing changed (TLS is off,
 * or the files cannot be used and the ones in use are kept). Loop thread. */
int agent_tls_reload(struct agent *a);
