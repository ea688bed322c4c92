/* What DC/OS shows of a node beyond its units (dcos_facts.c): the DC/OS
 * version and the node's Mesos id, which DC/OS's diagnostics report as
 * dcos_version and mesos_id (docs/dcos.md). The version is read once, at
 * config load, from [agent] dcos_version_file; the Mesos id is fetched from
 * the local Mesos state ([agent] mesos_state_url) on the loop, every
 * mesos_state_interval, since a Mesos agent that registers again gets a
 * new one. Both go to the aggregator in the Hello, the id also in every
 * heartbeat (stream.c). Loop thread, but for the pure calls. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct agent;

/* What DC/OS's dcos-version.json may weigh: it holds a few short keys. */
#define AGENT_DCOS_VERSION_FILE_MAX (64 * 1024)
/* How long one fetch of the Mesos state may take. */
#define AGENT_MESOS_STATE_TIMEOUT_USEC (10 * USEC_PER_SEC)

/* Reads the DC/OS version: the "version" string of the JSON object in
 * path (DC/OS's /opt/mesosphere/etc/dcos-version.json), at most
 * AGENT_DCOS_VERSION_FILE_MAX bytes, a word of at most
 * MST_DCOS_VERSION_MAX bytes (agent_word_valid()). On success *ret is malloc'd (the caller's)
 * and 0 returned; else a sentence for operators goes to err ("has no
 * \"version\" string", "cannot be read: No such file or directory") and
 * -errno is returned. Pure: any thread. */
int agent_dcos_version_read(const char *path, char **ret, char *err, size_t errsize);

/* The Mesos id in a Mesos state body (its first bytes: text[0..len)):
 * the top-level "id". Returns 0 with *ret malloc'd, or -errno with a
 * sentence in err: -ENOENT when the state has no "id" (a Mesos agent that
 * has not registered), -EBADMSG when it is no JSON object or the id is
 * not a word of at most MST_MESOS_ID_MAX bytes (agent_word_valid()). Pure. */
int agent_mesos_id_parse(const char *text, size_t len, char **ret, char *err, size_t errsize);

/* Starts fetching the Mesos id when a->cfg.mesos_state_url is set: at
 * once, then every mesos_state_interval after each fetch ends. Needs
 * a->http and a->stream. Returns 0 or -errno. */
int agent_mesos_state_start(struct agent *a);
/* Stops fetching and frees a->mesos_state. Accepts none started. */
void agent_mesos_state_stop(struct agent *a);
