/* The agent's config keys; see config_keys.h. */
#include <stddef.h>

#include "config.h"
#include "config_keys.h"
#include "mst/macro.h"

#define KEY(sec, name, type, field, lo, hi, dflt)                                                  \
  { sec, name, type, offsetof(struct agent_config, field), lo, hi, dflt, NULL }

const struct mst_conf_key agent_config_keys[] = {
    KEY("agent", "node_id", MST_CONF_STRING, node_id, 0, 0, NULL),
    KEY("agent", "node_id_command", MST_CONF_STRING, node_id_command, 0, 0, NULL),
    KEY("agent", "node_id_timeout", MST_CONF_DURATION, node_id_timeout_usec, 100 * USEC_PER_MSEC,
        60 * USEC_PER_SEC, "5s"),
    KEY("agent", "role", MST_CONF_STRING, role, 0, 0, NULL),
    KEY("agent", "profiles", MST_CONF_STRING, profiles, 0, 0, NULL),
    KEY("agent", "spool", MST_CONF_STRING, spool, 0, 0, NULL),
    KEY("agent", "aggregators", MST_CONF_STRING, aggregators, 0, 0, NULL),
    KEY("agent", "token_file", MST_CONF_STRING, token_file, 0, 0, NULL),
    KEY("agent", "heartbeat", MST_CONF_DURATION, heartbeat_usec, 100 * USEC_PER_MSEC,
        300 * USEC_PER_SEC, "5s"),
    KEY("agent", "systemd", MST_CONF_STRING, systemd, 0, 0, "system"),
    KEY("agent", "boot_id_file", MST_CONF_STRING, boot_id_file, 0, 0, AGENT_DEFAULT_BOOT_ID_FILE),
    KEY("agent", "retention", MST_CONF_DURATION, retention_usec, USEC_PER_SEC,
        3650ULL * 24 * 3600 * USEC_PER_SEC, "7d"),
    KEY("agent", "max_frame", MST_CONF_SIZE, max_frame, 1024, 64ULL * 1024 * 1024, "1MiB"),
    KEY("agent", "dcos_version_file", MST_CONF_STRING, dcos_version_file, 0, 0, NULL),
    KEY("agent", "mesos_state_url", MST_CONF_STRING, mesos_state_url, 0, 0, NULL),
    KEY("agent", "mesos_state_interval", MST_CONF_DURATION, mesos_state_interval_usec,
        100 * USEC_PER_MSEC, 3600 * USEC_PER_SEC, "5s"),
    KEY("tls", "ca", MST_CONF_STRING, tls_ca, 0, 0, NULL),
    KEY("tls", "cert", MST_CONF_STRING, tls_cert, 0, 0, NULL),
    KEY("tls", "key", MST_CONF_STRING, tls_key, 0, 0, NULL),
    KEY("tls", "server_name", MST_CONF_STRING, tls_server_name, 0, 0, NULL),
    KEY("log", "level", MST_CONF_LOGLEVEL, log_level, 0, 0, "info"),
};

const size_t agent_config_keys_count = ELEMENTSOF(agent_config_keys);
