/* The aggregator's config keys; see config_keys.h. */
#include <stddef.h>

#include "aggr.h"
#include "config_keys.h"
#include "mst/frame.h"
#include "mst/macro.h"

#define KEY(sec, name, type, field, min, max, dflt)                                                \
  { sec, name, type, offsetof(struct aggr_config, field), min, max, dflt, NULL }

/* A default taken from a constant of mst/ (which the agent shares). */
#define DEFAULT_OF(x)  DEFAULT_OF_(x)
#define DEFAULT_OF_(x) #x

#define ENUM_KEY(sec, name, field, names, dflt)                                                    \
  { sec, name, MST_CONF_ENUM, offsetof(struct aggr_config, field), 0, 0, dflt, names }

/* In the order of enum aggr_synchronous. */
static const char *const synchronous_names[] = {"full", "normal", NULL};

const struct mst_conf_key aggr_config_keys[] = {
    KEY("aggregator", "id", MST_CONF_STRING, id, 0, 0, NULL),
    KEY("aggregator", "cluster", MST_CONF_STRING, cluster, 0, 0, "default"),
    KEY("aggregator", "listen_stream", MST_CONF_STRING, listen_stream, 0, 0, "0.0.0.0:7610"),
    KEY("aggregator", "listen_http", MST_CONF_STRING, listen_http, 0, 0, "0.0.0.0:7611"),
    KEY("aggregator", "advertise_stream", MST_CONF_STRING, advertise_stream, 0, 0, NULL),
    KEY("aggregator", "advertise_http", MST_CONF_STRING, advertise_http, 0, 0, NULL),
    KEY("aggregator", "database", MST_CONF_STRING, database, 0, 0, "/var/lib/muster/aggregator.db"),
    KEY("aggregator", "profiles", MST_CONF_STRING, profiles, 0, 0, "/etc/muster/profiles"),
    KEY("aggregator", "expected_masters", MST_CONF_STRING, expected_masters, 0, 0, NULL),
    KEY("aggregator", "stale_timeout", MST_CONF_DURATION, stale_timeout_usec, 200 * USEC_PER_MSEC,
        3600 * USEC_PER_SEC, "30s"),
    KEY("aggregator", "retention", MST_CONF_DURATION, retention_usec, USEC_PER_SEC,
        3650ULL * 86400 * USEC_PER_SEC, "7d"),
    KEY("aggregator", "token_file", MST_CONF_STRING, token_file, 0, 0, NULL),
    KEY("aggregator", "max_frame", MST_CONF_SIZE, max_frame, 1024, 64 * 1024 * 1024, "1MiB"),
    KEY("aggregator", "http_threads", MST_CONF_UINT, http_threads, 1, 64, "2"),
    ENUM_KEY("aggregator", "synchronous", synchronous, synchronous_names, "full"),
    KEY("aggregator", "hello_timeout", MST_CONF_DURATION, hello_timeout_usec, 100 * USEC_PER_MSEC,
        600 * USEC_PER_SEC, "10s"),
    KEY("aggregator", "max_connections", MST_CONF_UINT, max_connections, 1, 1000000, "20000"),
    KEY("aggregator", "max_connections_per_address", MST_CONF_UINT, max_connections_per_address, 1,
        1000000, "64"),
    KEY("aggregator", "max_frames_per_second", MST_CONF_UINT, max_frames_per_second, 1, 1000000,
        "1000"),
    KEY("aggregator", "max_components_per_node", MST_CONF_UINT, max_components_per_node, 1, 1000000,
        DEFAULT_OF(MST_COMPONENTS_PER_NODE_MAX)),
    KEY("aggregator", "node_conflict_window", MST_CONF_DURATION, node_conflict_window_usec,
        200 * USEC_PER_MSEC, 3600 * USEC_PER_SEC, "2m"),
    KEY("aggregator", "first_contact_window", MST_CONF_DURATION, first_contact_window_usec, 0,
        3600 * USEC_PER_SEC, "30s"),
    KEY("aggregator", "http_timeout", MST_CONF_DURATION, http_timeout_usec, USEC_PER_SEC,
        3600 * USEC_PER_SEC, "60s"),
    KEY("aggregator", "http_max_parked", MST_CONF_UINT, http_max_parked, 1, 1000000, "20000"),
    KEY("aggregator", "http_max_connections", MST_CONF_UINT, http_max_connections, 1, 1000000,
        "20000"),
    KEY("aggregator", "http_max_connections_per_address", MST_CONF_UINT,
        http_max_connections_per_address, 1, 1000000, "64"),
    KEY("aggregator", "http_max_url", MST_CONF_SIZE, http_max_url, 256, 64 * 1024, "4KiB"),
    KEY("aggregator", "http_token_file", MST_CONF_STRING, http_token_file, 0, 0, NULL),
    KEY("aggregator", "http_admin_token_file", MST_CONF_STRING, http_admin_token_file, 0, 0, NULL),
    KEY("aggregator", "forget_after", MST_CONF_DURATION, forget_after_usec, 0,
        3650ULL * 24 * 3600 * USEC_PER_SEC, "0s"),
    KEY("tls", "cert", MST_CONF_STRING, tls_cert, 0, 0, NULL),
    KEY("tls", "key", MST_CONF_STRING, tls_key, 0, 0, NULL),
    KEY("tls", "ca", MST_CONF_STRING, tls_ca, 0, 0, NULL),
    KEY("tls", "require_client_cert", MST_CONF_BOOL, tls_require_client_cert, 0, 0, "no"),
    KEY("tls", "http", MST_CONF_BOOL, tls_http, 0, 0, "yes"),
    KEY("zookeeper", "hosts", MST_CONF_STRING, zk_hosts, 0, 0, NULL),
    KEY("zookeeper", "session_timeout", MST_CONF_DURATION, zk_session_timeout_usec, USEC_PER_SEC,
        60 * USEC_PER_SEC, "4s"),
    KEY("log", "level", MST_CONF_LOGLEVEL, log_level, 0, 0, "info"),
    KEY("alertmanager", "urls", MST_CONF_STRING, am_urls, 0, 0, NULL),
    KEY("alertmanager", "external_url", MST_CONF_STRING, am_external_url, 0, 0, NULL),
    KEY("alertmanager", "resend_interval", MST_CONF_DURATION, am_resend_interval_usec, USEC_PER_SEC,
        3600 * USEC_PER_SEC, "1m"),
    KEY("alertmanager", "timeout", MST_CONF_DURATION, am_timeout_usec, 100 * USEC_PER_MSEC,
        300 * USEC_PER_SEC, "10s"),
    KEY("alertmanager", "max_alerts", MST_CONF_UINT, am_max_alerts, 1, 100000, "1000"),
};

const size_t aggr_config_keys_count = ELEMENTSOF(aggr_config_keys);
