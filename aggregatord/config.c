/* The aggregator's configuration (config.h). The table in config_keys.c
 * checks each key alone; what is checked here needs several keys, the
 * network or other files. Errors found after the file was parsed are
 * reported at the line of the key that set the value, so every message
 * reads path:line. The connection caps are fitted here into the open file
 * limit the process has (see fit_fd_limit()). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "aggr.h"
#include "config.h"
#include "config_keys.h"
#include "mst/addr.h"
#include "mst/auth.h"
#include "mst/config.h"
#include "mst/diag.h"
#include "mst/log.h"
#include "mst/profile.h"
#include "mst/tls.h"
#include "notify/notify.h"
#include "serve/http.h"

int aggr_config_stream_tls(const char *path, const struct aggr_config *cfg,
                           struct mst_tls_creds **ret, struct mst_diag *diag) {
  const struct mst_tls_files files = {cfg->tls_cert, cfg->tls_key, cfg->tls_ca};
  return mst_tls_creds_load_config(path, &files, ret, diag);
}

/* The line of [section] key in path; for a key left at its default, the line
 * of the key that made the default matter (fallback_key), if set. */
static unsigned key_line(const char *path, const char *section, const char *key,
                         const char *fallback_section, const char *fallback_key) {
  unsigned line = mst_conf_key_line(path, section, key);
  if (line == 0 && fallback_key)
    line = mst_conf_key_line(path, fallback_section, fallback_key);
  return line;
}

/* listen_stream, listen_http: host:port, [IPv6]:port, *:port. */
static void check_listen(const char *path, const char *key, const char *value,
                         struct mst_diag *diag) {
  struct mst_addr addr;
  char err[256];
  if (mst_addr_parse(value, MST_ADDR_LISTEN, &addr, err, sizeof(err)) < 0)
    mst_diag_add(diag, path, mst_conf_key_line(path, "aggregator", key), "[aggregator] %s %s", key,
                 err);
}

/* With ZooKeeper, redirects name the advertised addresses: others must be
 * able to reach them. */
static void check_advertised(const char *path, const char *key, const char *value,
                             struct mst_diag *diag) {
  struct mst_addr addr;
  char err[256];
  if (mst_addr_parse(value, 0, &addr, err, sizeof(err)) == 0 &&
      !mst_addr_is_any((struct sockaddr *)&addr.ss))
    return;
  /* Defaulted from listen_*: point at that key, or at [zookeeper] hosts. */
  const char *listen_key = strcmp(key, "advertise_stream") == 0 ? "listen_stream" : "listen_http";
  unsigned line = key_line(path, "aggregator", key, "aggregator", listen_key);
  if (line == 0)
    line = mst_conf_key_line(path, "zookeeper", "hosts");
  mst_diag_add(diag, path, line,
               "[aggregator] %s '%s' must be an address other aggregators and agents can reach "
               "(with [zookeeper] hosts set, redirects name it)",
               key, value);
}

static int default_string(char **field, const char *value) {
  if (*field)
    return 0;
  *field = strdup(value);
  return *field ? 0 : -ENOMEM;
}

/* File descriptors the daemon needs besides its connections: stdio, the
 * loop's own, the listeners, SQLite's writer, ZooKeeper and the replica, a
 * connection refused at accept; and per HTTP thread its poll set, its wake-up
 * pipe and its read-only SQLite connection (database, WAL, shared memory). */
#define FD_RESERVE            64
#define FD_RESERVE_PER_THREAD 8
/* The fewest connections of each kind the daemon is worth running with. */
#define FD_MIN_CONNECTIONS 8

/* Every agent stream and every HTTP connection (a parked read is one) holds a
 * descriptor. Caps that do not fit in RLIMIT_NOFILE let a crowd of idle
 * clients take the last descriptors: then nothing is accepted, /healthz
 * included, and SQLite cannot open its files. So when the two caps do not
 * fit, both are lowered in proportion, with one warning: a default config
 * runs wherever the limit is not huge, and an operator who wants the caps
 * raises LimitNOFILE=. A limit too small even for the reserve is an error.
 * http_max_parked cannot be above http_max_connections. */
static void fit_fd_limit(const char *path, struct aggr_config *cfg, struct mst_diag *diag) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
    return;
  uint64_t reserve = FD_RESERVE + FD_RESERVE_PER_THREAD * cfg->http_threads;
  uint64_t nofile = rl.rlim_cur;
  if (nofile < reserve + 2 * FD_MIN_CONNECTIONS) {
    mst_diag_add(diag, path, 0,
                 "the open file limit (RLIMIT_NOFILE) is %llu: the aggregator needs at least %llu "
                 "(raise LimitNOFILE= or ulimit -n)",
                 (unsigned long long)nofile,
                 (unsigned long long)(reserve + 2 * FD_MIN_CONNECTIONS));
    return;
  }
  uint64_t budget = nofile - reserve;
  uint64_t stream = cfg->max_connections, http = cfg->http_max_connections;
  if (stream + http > budget) {
    /* A cap that fits in half the budget is kept, and the other takes the
     * rest; when neither does, they share it in proportion. */
    uint64_t half = budget / 2, s;
    if (http <= half)
      s = budget - http;
    else if (stream <= half)
      s = stream;
    else
      s = MST_MAX(budget * stream / (stream + http), (uint64_t)FD_MIN_CONNECTIONS);
    s = MST_MIN(s, budget - FD_MIN_CONNECTIONS);
    cfg->max_connections = s;
    cfg->http_max_connections = budget - s;
    /* Only what changed is named. */
    char what[160] = "", *at = what;
    if (cfg->max_connections != stream)
      at += snprintf(at, sizeof(what), "max_connections from %llu to %llu",
                     (unsigned long long)stream, (unsigned long long)cfg->max_connections);
    if (cfg->http_max_connections != http)
      snprintf(at, sizeof(what) - (size_t)(at - what), "%shttp_max_connections from %llu to %llu",
               at > what ? " and " : "", (unsigned long long)http,
               (unsigned long long)cfg->http_max_connections);
    log_warning("the open file limit (RLIMIT_NOFILE) is %llu: lowering %s so that connections "
                "cannot take every descriptor (raise LimitNOFILE= to keep them)",
                (unsigned long long)nofile, what);
  }
  cfg->http_max_parked = MST_MIN(cfg->http_max_parked, cfg->http_max_connections);
}

/* An http:// or https:// URL with a host, of printable ASCII without
 * spaces: what [alertmanager] takes. */
static bool http_url_valid(const char *u) {
  const char *rest = strncmp(u, "http://", 7) == 0    ? u + 7
                     : strncmp(u, "https://", 8) == 0 ? u + 8
                                                      : NULL;
  if (!rest || !*rest || *rest == '/' || strlen(u) > 2048)
    return false;
  for (const char *p = u; *p; p++)
    if (*p <= ' ' || *p >= 0x7f)
      return false;
  return true;
}

/* [alertmanager]: each URL of urls, at most AGGR_NOTIFY_URLS_MAX of them,
 * external_url, and a timeout within the resend interval. */
static void check_alertmanager(const char *path, const struct aggr_config *cfg,
                               struct mst_diag *diag) {
  unsigned urls_line = mst_conf_key_line(path, "alertmanager", "urls");
  char **urls = NULL;
  int n = cfg->am_urls ? mst_strv_split(cfg->am_urls, &urls) : 0;
  if (n < 0) {
    mst_diag_add(diag, path, urls_line, "out of memory");
    return;
  }
  if (n > AGGR_NOTIFY_URLS_MAX)
    mst_diag_add(diag, path, urls_line, "[alertmanager] urls lists %d Alertmanagers: at most %d", n,
                 AGGR_NOTIFY_URLS_MAX);
  for (int i = 0; i < n; i++)
    if (!http_url_valid(urls[i]))
      mst_diag_add(diag, path, urls_line,
                   "[alertmanager] urls: '%.80s' is not an http:// or https:// URL "
                   "(such as http://alertmanager:9093)",
                   urls[i]);
  mst_strv_free(urls);
  if (cfg->am_external_url && !http_url_valid(cfg->am_external_url))
    mst_diag_add(diag, path, mst_conf_key_line(path, "alertmanager", "external_url"),
                 "[alertmanager] external_url '%.80s' is not an http:// or https:// URL",
                 cfg->am_external_url);
  if (cfg->am_timeout_usec > cfg->am_resend_interval_usec)
    mst_diag_add(diag, path,
                 key_line(path, "alertmanager", "timeout", "alertmanager", "resend_interval"),
                 "[alertmanager] timeout must not be longer than resend_interval");
}

/* The checks that follow a parsed file. */
static void check_loaded(struct aggr *a, const char *path, struct mst_diag *diag) {
  struct aggr_config *cfg = &a->cfg;
  int r;

  if (default_string(&cfg->advertise_stream, cfg->listen_stream) < 0 ||
      default_string(&cfg->advertise_http, cfg->listen_http) < 0) {
    mst_diag_add(diag, path, 0, "out of memory");
    return;
  }
  if (!cfg->id) {
    char host[256] = "aggregator";
    (void)gethostname(host, sizeof(host) - 1);
    if (default_string(&cfg->id, host) < 0) {
      mst_diag_add(diag, path, 0, "out of memory");
      return;
    }
  }
  check_listen(path, "listen_stream", cfg->listen_stream, diag);
  check_listen(path, "listen_http", cfg->listen_http, diag);
  if (cfg->zk_hosts) {
    _cleanup_free_ char *zk = NULL;
    char err[256];
    r = mst_addr_zk_hosts(cfg->zk_hosts, &zk, err, sizeof(err));
    if (r == -ENOMEM)
      mst_diag_add(diag, path, 0, "out of memory");
    else if (r < 0)
      mst_diag_add(diag, path, mst_conf_key_line(path, "zookeeper", "hosts"),
                   "[zookeeper] hosts: %s", err);
    check_advertised(path, "advertise_stream", cfg->advertise_stream, diag);
    check_advertised(path, "advertise_http", cfg->advertise_http, diag);
  }

  /* The profiles report their own files' lines. */
  r = mst_profile_set_load(cfg->profiles, &a->profiles, diag);
  if (r >= 0 && cfg->token_file) {
    r = mst_token_read(cfg->token_file, &a->token);
    if (r < 0)
      mst_diag_add(diag, path, mst_conf_key_line(path, "aggregator", "token_file"),
                   "[aggregator] token_file: cannot use %s: %s%s", cfg->token_file, strerror(-r),
                   r == -EPERM ? " (it must be readable by its owner only)" : "");
  }

  unsigned require_line = mst_conf_key_line(path, "tls", "require_client_cert");
  if (cfg->tls_require_client_cert && !cfg->tls_ca)
    mst_diag_add(diag, path, require_line,
                 "[tls] require_client_cert needs ca, the CA that signs the agents' "
                 "certificates");
  if (cfg->tls_cert || cfg->tls_key)
    (void)aggr_config_stream_tls(path, cfg, &a->tls_creds, diag);
  else if (cfg->tls_require_client_cert)
    mst_diag_add(diag, path, require_line,
                 "[tls] require_client_cert needs cert and key: TLS is off without them");
  aggr_http_config_check(path, cfg, diag);
  check_alertmanager(path, cfg, diag);
  fit_fd_limit(path, cfg, diag);
}

int aggr_config_load(struct aggr *a, const char *path) {
  struct mst_diag diag = {0};
  int r = mst_conf_load(path, aggr_config_keys, aggr_config_keys_count, &a->cfg, &diag);

  /* A file that parsed with bad values is checked further too: the operator
   * sees every problem at once. */
  if (r >= 0 || r == -EINVAL)
    check_loaded(a, path, &diag);
  if (diag.n > 0) {
    mst_diag_print(&diag);
    r = -EINVAL;
  }
  mst_diag_done(&diag);
  return r;
}

void aggr_config_done(struct aggr *a) {
  mst_profile_set_free(TAKE_PTR(a->profiles));
  free(TAKE_PTR(a->token));
  mst_tls_creds_unref(TAKE_PTR(a->tls_creds));
  mst_conf_free(aggr_config_keys, aggr_config_keys_count, &a->cfg);
}
