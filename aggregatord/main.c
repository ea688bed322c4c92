/* muster-aggregatord: the daemon's start-up, configuration and loop.
 *
 * Start-up reads the config and the profiles (every error reported as
 * path:line: message), opens and migrates the history database, restores
 * what it holds for each agent spool, then hands the database to the writer
 * thread. The sd-event loop thread then owns the live model and the agent
 * streams; HTTP runs on libmicrohttpd's thread pool and reads the views the
 * loop publishes. Without ZooKeeper the aggregator leads alone; each start is
 * a new leader epoch, stamped on every row written and every Welcome. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "aggr.h"
#include "config_keys.h"
#include "election.h"
#include "serve/dcos.h"
#include "serve/history.h"
#include "serve/metrics.h"
#include "serve/http.h"
#include "mst/auth.h"
#include "mst/config.h"
#include "mst/hash.h"
#include "mst/log.h"
#include "mst/net.h"
#include "mst/store.h"
#include "mst/time.h"
#include "mst/tls.h"
#include "ingest/replica.h"
#include "serve/view.h"
#include "ingest/writer.h"

extern const struct mst_migration aggr_schema_migrations[];
extern const size_t aggr_schema_migrations_count;

#define PUBLISH_MIN_SPACING_USEC (5 * USEC_PER_MSEC)
#define PUBLISH_LAZY_USEC        (1 * USEC_PER_SEC)
#define LONGPOLL_TICK_USEC       (50 * USEC_PER_MSEC)

static uint64_t spool_hash(const char *node_id, const char *spool_id) {
  return mst_hash_str(mst_hash_str(MST_HASH_INIT, node_id), spool_id);
}

static int spools_grow(struct aggr_spools *t) {
  size_t n = t->n_buckets ? t->n_buckets * 2 : 256;
  struct aggr_spool **b = calloc(n, sizeof(*b));
  if (!b)
    return -ENOMEM;
  for (size_t i = 0; i < t->n_buckets; i++)
    while (t->buckets[i]) {
      struct aggr_spool *s = t->buckets[i];
      t->buckets[i] = s->next;
      size_t k = spool_hash(s->node_id, s->spool_id) & (n - 1);
      s->next = b[k];
      b[k] = s;
    }
  free(t->buckets);
  t->buckets = b;
  t->n_buckets = n;
  return 0;
}

struct aggr_spool *aggr_spool_get(struct aggr *a, const char *node_id, const char *spool_id) {
  struct aggr_spools *t = &a->spools;
  struct aggr_spool *s;

  if (t->n_buckets) {
    size_t k = spool_hash(node_id, spool_id) & (t->n_buckets - 1);
    for (s = t->buckets[k]; s; s = s->next)
      if (strcmp(s->node_id, node_id) == 0 && strcmp(s->spool_id, spool_id) == 0)
        return s;
  }
  if (t->n >= t->n_buckets && spools_grow(t) < 0)
    return NULL;
  s = calloc(1, sizeof(*s));
  if (!s)
    return NULL;
  s->node_id = strdup(node_id);
  s->spool_id = strdup(spool_id);
  if (!s->node_id || !s->spool_id) {
    free(s->node_id);
    free(s->spool_id);
    free(s);
    return NULL;
  }
  size_t k = spool_hash(node_id, spool_id) & (t->n_buckets - 1);
  s->next = t->buckets[k];
  t->buckets[k] = s;
  t->n++;
  return s;
}

static void spools_free(struct aggr *a) {
  struct aggr_spools *t = &a->spools;
  for (size_t i = 0; i < t->n_buckets; i++)
    while (t->buckets[i]) {
      struct aggr_spool *next = t->buckets[i]->next;
      free(t->buckets[i]->node_id);
      free(t->buckets[i]->spool_id);
      free(t->buckets[i]);
      t->buckets[i] = next;
    }
  free(t->buckets);
  *t = (struct aggr_spools){0};
}

/* Arms the stale timer at the moment the next node turns unreachable. */
static void stale_timer_rearm(struct aggr *a) {
  uint64_t at = aggr_model_next_stale_usec(&a->model);
  if (at == UINT64_MAX) {
    sd_event_source_set_enabled(a->stale_timer, SD_EVENT_OFF);
    return;
  }
  sd_event_source_set_time(a->stale_timer, at);
  sd_event_source_set_enabled(a->stale_timer, SD_EVENT_ONESHOT);
}

static void record_cluster_verdict(struct aggr *a) {
  _cleanup_free_ char *reasons = aggr_reasons_to_json(&a->model.reasons);
  const char *verdict = mst_verdict_to_string(a->model.verdict);
  struct aggr_write *j =
      aggr_write_new_verdict(AGGR_WRITE_CLUSTER_VERDICT, a->epoch, verdict,
                             (int64_t)(a->model.verdict_since_usec / USEC_PER_MSEC), reasons);
  if (!j)
    return;
  log_info("cluster verdict: %s (%zu reasons)", verdict, a->model.reasons.n);
  aggr_writer_submit(a->writer, j);
}

/* Stores the stage completions the last evaluation reached. Only the
 * leader writes; a follower forgets them (its model has no live agents). */
static void store_stage_completions(struct aggr *a) {
  size_t n = 0;
  struct aggr_stage_completion *c = aggr_model_take_completions(&a->model, &n);
  for (size_t i = 0; i < n && a->leading; i++) {
    struct aggr_write *j =
        aggr_write_new_stage(a->epoch, c[i].node_id, c[i].boot_id, c[i].role, c[i].stage,
                             (int64_t)(c[i].reached_usec / USEC_PER_MSEC),
                             (int64_t)(c[i].duration_usec / USEC_PER_MSEC));
    if (!j) {
      log_error("out of memory storing a stage completion, ignoring");
      break;
    }
    aggr_writer_submit(a->writer, j);
  }
  aggr_stage_completions_free(c, n);
}

/* Evaluates the model at now; returns whether the cluster verdict changed.
 * Tests run every aggregator with MUSTER_CHECK_EVALUATE=1, which derives the
 * whole model again after each evaluation and logs what the incremental one
 * missed. */
static bool evaluate(struct aggr *a, uint64_t now) {
  bool changed = aggr_model_evaluate(&a->model, now);
  if (a->check_evaluate)
    (void)aggr_model_check(&a->model, now);
  return changed;
}

static int publish_now(sd_event_source *s, uint64_t usec, void *userdata) {
  struct aggr *a = userdata;
  uint64_t now = mst_now_realtime_usec();

  a->publish_armed = false;
  a->last_publish_usec = mst_now_monotonic_usec();
  /* Only the leader records verdict history; a new leader starts its term
   * with the verdict as it stands. */
  if ((evaluate(a, now) || a->record_verdict) && a->leading) {
    record_cluster_verdict(a);
    a->record_verdict = false;
  }
  store_stage_completions(a);
  if (aggr_view_publish(a->views, &a->model, a->ready) < 0)
    log_error("cannot publish a new view (out of memory?), ignoring");
  aggr_http_wake(a->http); /* blocking reads whose resource moved */
  a->publish_cost_usec = mst_now_monotonic_usec() - a->last_publish_usec;
  a->dcos_dirty = true;
  stale_timer_rearm(a);
  return 0;
}

void aggr_request_publish(struct aggr *a, bool urgent) {
  uint64_t now = mst_now_monotonic_usec(), at, cur = 0;

  if (!a->publish_timer)
    return;
  if (urgent) {
    /* Spaced by at least twice what the last one cost: with 10,000 nodes
     * all changing at once a publish takes a while, and the loop must keep
     * at least half its time for reading frames and sending Acks. */
    at = a->last_publish_usec + MST_MAX(PUBLISH_MIN_SPACING_USEC, 2 * a->publish_cost_usec);
    if (at < now)
      at = now;
  } else {
    at = now + PUBLISH_LAZY_USEC;
  }
  if (a->publish_armed && sd_event_source_get_time(a->publish_timer, &cur) >= 0 && cur <= at)
    return;
  sd_event_source_set_time(a->publish_timer, at);
  sd_event_source_set_enabled(a->publish_timer, SD_EVENT_ONESHOT);
  a->publish_armed = true;
}

/* Ends the blocking reads whose wait is over. */
static int longpoll_tick(sd_event_source *s, uint64_t usec, void *userdata) {
  struct aggr *a = userdata;
  aggr_http_expire(a->http);
  /* The metrics' cluster gauges and DC/OS's view of the model: rendered
   * from the model while they are being read (demand.h), once a second and
   * a few times a second at most. */
  uint64_t now = mst_now_monotonic_usec();
  if (aggr_metrics_model_due(now))
    aggr_metrics_update_model(&a->model, a->n_conns, a->model.epoch);
  if (aggr_dcos_due(now, a->dcos_dirty)) {
    a->dcos_dirty = false;
    aggr_dcos_update(&a->model);
  }
  sd_event_source_set_time(s, usec + LONGPOLL_TICK_USEC);
  sd_event_source_set_enabled(s, SD_EVENT_ON);
  return 0;
}

static int stale_fired(sd_event_source *s, uint64_t usec, void *userdata) {
  aggr_request_publish(userdata, true);
  return 0;
}

static int writer_done(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
  struct aggr *a = userdata;
  size_t n = 0;
  struct aggr_commit *done = aggr_writer_collect(a->writer, &n);
  for (size_t i = 0; i < n; i++) {
    struct aggr_spool *sp = done[i].spool;
    if (!sp) {
      /* Copied from the leader: what this aggregator holds grew. */
      if (!done[i].ok || !done[i].node_id || !done[i].spool_id)
        continue;
      sp = aggr_spool_get(a, done[i].node_id, done[i].spool_id);
      if (sp && done[i].seq > sp->held_seq) {
        sp->held_seq = done[i].seq;
        sp->received_seq = MST_MAX(sp->received_seq, sp->held_seq);
      }
      continue;
    }
    aggr_conn_committed(a, sp, done[i].seq, done[i].ok);
  }
  aggr_commits_free(done, n);
  return 0;
}

/* Loads the agent stream's TLS credentials from [tls]: cert and key turn
 * TLS on; ca verifies the agents' certificates. A file that cannot be used
 * is reported at the line of its key. Returns 0 or a negative errno. */
static int load_stream_tls(const char *path, const struct aggr_config *cfg,
                           struct mst_tls_creds **ret, struct mst_diag *diag) {
  const struct mst_tls_files files = {cfg->tls_cert, cfg->tls_key, cfg->tls_ca};
  return mst_tls_creds_load_config(path, &files, ret, diag);
}

/* SIGHUP: new certificates, keys and CAs for new connections; the open
 * ones keep theirs. Files that cannot be used leave the old ones in use. */
static int on_reload(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
  struct aggr *a = userdata;
  struct mst_tls_creds *creds = NULL;
  struct mst_diag diag = {0};

  if (!a->tls_creds) {
    log_info("received SIGHUP: TLS is off ([tls] cert and key are not set), nothing to reload");
    return 0;
  }
  if (load_stream_tls(a->config_path, &a->cfg, &creds, &diag) < 0) {
    mst_diag_print(&diag);
    log_error("received SIGHUP: the TLS files cannot be used; keeping the ones in use");
  } else {
    mst_tls_creds_unref(a->tls_creds);
    a->tls_creds = creds;
    log_notice("received SIGHUP: reloaded the agent stream's TLS certificate, key and CA");
  }
  mst_diag_done(&diag);
  /* HTTPS serves the same files; it logs for itself. */
  (void)aggr_http_tls_reload(a->http);
  return 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
  log_info("received %s, shutting down", strsignal((int)si->ssi_signo));
  sd_notify(0, "STOPPING=1");
  return sd_event_exit(sd_event_source_get_event(s), 0);
}

/* Reads what the database already holds: the epoch of the previous leader
 * (this start takes the next one), every spool's held seq and the node
 * registry. Runs before the writer thread owns the connection. */
static int restore_from_database(struct aggr *a, sqlite3 *db) {
  _cleanup_stmt_ sqlite3_stmt *st = NULL;
  char buf[32];
  int rc;

  rc = sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'epoch'", -1, &st, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  a->epoch = 1;
  if (sqlite3_step(st) == SQLITE_ROW)
    a->epoch = strtoull((const char *)sqlite3_column_text(st, 0), NULL, 10) + 1;
  sqlite3_finalize(TAKE_PTR(st));
  snprintf(buf, sizeof(buf), "%llu", (unsigned long long)a->epoch);
  rc = sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', ?)", -1,
                          &st, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  sqlite3_bind_text(st, 1, buf, -1, SQLITE_STATIC);
  if (sqlite3_step(st) != SQLITE_DONE)
    goto fail;
  sqlite3_finalize(TAKE_PTR(st));

  rc = sqlite3_prepare_v2(db, "SELECT node_id, spool_id, held_seq FROM spools", -1, &st, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct aggr_spool *sp = aggr_spool_get(a, (const char *)sqlite3_column_text(st, 0),
                                           (const char *)sqlite3_column_text(st, 1));
    if (!sp)
      return -ENOMEM;
    sp->held_seq = sp->received_seq = (uint64_t)sqlite3_column_int64(st, 2);
  }
  if (rc != SQLITE_DONE)
    goto fail;
  sqlite3_finalize(TAKE_PTR(st));

  /* Known nodes show as silent since their last contact until they return. */
  rc = sqlite3_prepare_v2(
      db, "SELECT node_id, role, hostname, first_seen_ms, last_seen_ms FROM nodes", -1, &st, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct aggr_node *n = aggr_model_get(&a->model, (const char *)sqlite3_column_text(st, 0));
    if (!n)
      return -ENOMEM;
    free(n->role);
    n->role = strdup((const char *)sqlite3_column_text(st, 1));
    free(n->hostname);
    n->hostname = strdup((const char *)sqlite3_column_text(st, 2));
    n->first_seen_usec = (uint64_t)sqlite3_column_int64(st, 3) * USEC_PER_MSEC;
    n->last_seen_usec = (uint64_t)sqlite3_column_int64(st, 4) * USEC_PER_MSEC;
    n->reported = true;
    n->dirty = true;
  }
  if (rc != SQLITE_DONE)
    goto fail;
  sqlite3_finalize(TAKE_PTR(st));

  /* Stage completions, oldest first: the durations the estimates learn
   * from, and the stages each node's latest boot already reached. */
  rc = sqlite3_prepare_v2(db,
                          "SELECT c.node_id, c.role, c.boot_id, coalesce(b.boot_time_ms, 0),"
                          " c.stage, c.reached_ms, c.duration_ms FROM stage_completions c"
                          " LEFT JOIN boots b USING (node_id, boot_id) ORDER BY c.reached_ms",
                          -1, &st, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    int64_t boot_ms = sqlite3_column_int64(st, 3), reached_ms = sqlite3_column_int64(st, 5),
            duration_ms = sqlite3_column_int64(st, 6);
    if (aggr_stage_restore(
            &a->model, (const char *)sqlite3_column_text(st, 0),
            (const char *)sqlite3_column_text(st, 1), (const char *)sqlite3_column_text(st, 2),
            (uint64_t)MST_MAX(boot_ms, 0) * USEC_PER_MSEC, (const char *)sqlite3_column_text(st, 4),
            (uint64_t)MST_MAX(reached_ms, 0) * USEC_PER_MSEC,
            (uint64_t)MST_MAX(duration_ms, 0) * USEC_PER_MSEC) < 0)
      return -ENOMEM;
  }
  if (rc != SQLITE_DONE)
    goto fail;
  return 0;

fail:
  log_error("cannot read the history database: %s", sqlite3_errmsg(db));
  return -EIO;
}

static void config_free(struct aggr_config *cfg) {
  mst_conf_free(aggr_config_keys, aggr_config_keys_count, cfg);
}

/* Loads and checks the config and the profiles. Prints every error. */
static int load_config(const char *path, struct aggr *a) {
  struct mst_diag diag = {0};
  int r = mst_conf_load(path, aggr_config_keys, aggr_config_keys_count, &a->cfg, &diag);

  if (r >= 0) {
    if (strcmp(a->cfg.synchronous, "full") != 0 && strcmp(a->cfg.synchronous, "normal") != 0)
      mst_diag_add(&diag, path, 0, "[aggregator] synchronous must be 'full' or 'normal', not '%s'",
                   a->cfg.synchronous);
    if (!a->cfg.advertise_stream)
      a->cfg.advertise_stream = strdup(a->cfg.listen_stream);
    if (!a->cfg.advertise_http)
      a->cfg.advertise_http = strdup(a->cfg.listen_http);
    /* Redirects must name an address others can reach. */
    if (a->cfg.zk_hosts) {
      struct sockaddr_in s1, s2;
      if (mst_parse_host_port(a->cfg.advertise_stream, &s1) < 0 ||
          mst_parse_host_port(a->cfg.advertise_http, &s2) < 0 ||
          s1.sin_addr.s_addr == htonl(INADDR_ANY) || s2.sin_addr.s_addr == htonl(INADDR_ANY))
        mst_diag_add(&diag, path, 0,
                     "[aggregator] with [zookeeper] hosts set, advertise_stream and advertise_http "
                     "must be addresses other aggregators and agents can reach (not %s, %s)",
                     a->cfg.advertise_stream, a->cfg.advertise_http);
    }
    if (!a->cfg.id) {
      char host[256] = "aggregator";
      (void)gethostname(host, sizeof(host) - 1);
      a->cfg.id = strdup(host);
    }
    struct sockaddr_in sin;
    if (mst_parse_host_port(a->cfg.listen_stream, &sin) < 0)
      mst_diag_add(&diag, path, 0, "[aggregator] listen_stream '%s' is not an IPv4 host:port",
                   a->cfg.listen_stream);
    if (mst_parse_host_port(a->cfg.listen_http, &sin) < 0)
      mst_diag_add(&diag, path, 0, "[aggregator] listen_http '%s' is not an IPv4 host:port",
                   a->cfg.listen_http);
    r = mst_profile_set_load(a->cfg.profiles, &a->profiles, &diag);
    if (r >= 0 && a->cfg.token_file) {
      r = mst_token_read(a->cfg.token_file, &a->token);
      if (r < 0)
        mst_diag_add(&diag, a->cfg.token_file, 0, "cannot use token file: %s%s", strerror(-r),
                     r == -EPERM ? " (it must be readable by its owner only)" : "");
    }
    if (a->cfg.tls_require_client_cert && !a->cfg.tls_ca)
      mst_diag_add(&diag, path, mst_conf_key_line(path, "tls", "require_client_cert"),
                   "[tls] require_client_cert needs ca, the CA that signs the agents' "
                   "certificates");
    if (a->cfg.tls_cert || a->cfg.tls_key)
      (void)load_stream_tls(path, &a->cfg, &a->tls_creds, &diag);
    else if (a->cfg.tls_require_client_cert)
      mst_diag_add(&diag, path, mst_conf_key_line(path, "tls", "require_client_cert"),
                   "[tls] require_client_cert needs cert and key: TLS is off without them");
    aggr_http_config_check(path, &a->cfg, &diag);
  }
  if (diag.n > 0) {
    mst_diag_print(&diag);
    r = -EINVAL;
  }
  mst_diag_done(&diag);
  return r;
}

/* The election changed this aggregator's role or the leader it knows. */
static void on_election_changed(struct aggr_election *el, void *userdata) {
  struct aggr *a = userdata;
  bool leader = aggr_election_is_leader(el);

  if (leader && !a->leading) {
    a->epoch = aggr_election_epoch(el);
    a->leading = true;
    a->record_verdict = true;
    sd_notify(0, "STATUS=leading");
    log_notice("leading the cluster, epoch %llu", (unsigned long long)a->epoch);
  } else if (!leader && a->leading) {
    a->leading = false;
    /* Agents reconnect and are redirected to whoever leads next. Anything
     * received but not committed will be replayed to the next leader. */
    aggr_stream_close_conns(a);
    for (size_t i = 0; i < a->spools.n_buckets; i++)
      for (struct aggr_spool *sp = a->spools.buckets[i]; sp; sp = sp->next)
        sp->received_seq = sp->held_seq;
    sd_notify(0, "STATUS=following");
    log_notice("no longer leading; following %s",
               aggr_election_leader_id(el) ? aggr_election_leader_id(el) : "(unknown)");
  }
  /* Followers keep a warm copy of the leader's history. */
  aggr_replica_follow(a->replica, leader ? NULL : aggr_election_leader_http(el),
                      aggr_election_epoch(el));
  aggr_model_set_leader(&a->model, leader, aggr_election_leader_id(el),
                        aggr_election_leader_http(el), leader ? a->epoch : aggr_election_epoch(el));
  aggr_request_publish(a, true);
}

/* Agent streams and parked HTTP reads each hold a descriptor: take the hard
 * limit rather than the default 1024. */
static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
      log_warning("cannot raise the open file limit: %m, ignoring");
  }
}

static void usage(FILE *f) {
  fputs("Usage: muster-aggregatord [--config PATH] [--check-config] [--version]\n"
        "  --config PATH    configuration file (default /etc/muster/aggregator.conf)\n"
        "  --check-config   check the configuration and the profiles, then exit\n",
        f);
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"config", required_argument, NULL, 'c'},
      {"check-config", no_argument, NULL, 'k'},
      {"version", no_argument, NULL, 'V'},
      {"help", no_argument, NULL, 'h'},
      {0},
  };
  const char *config_path = "/etc/muster/aggregator.conf";
  bool check_only = false;
  struct aggr a = {.listen_fd = -1, .conn_epfd = -1};
  char **masters = NULL;
  sqlite3 *db = NULL;
  int opt, r, ret = EXIT_FAILURE;

  while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
    switch (opt) {
    case 'c':
      config_path = optarg;
      break;
    case 'k':
      check_only = true;
      break;
    case 'V':
      printf("muster-aggregatord %s\n", MUSTER_VERSION);
      return EXIT_SUCCESS;
    case 'h':
      usage(stdout);
      return EXIT_SUCCESS;
    default:
      usage(stderr);
      return EXIT_FAILURE;
    }
  }
  if (optind < argc) {
    usage(stderr);
    return EXIT_FAILURE;
  }
  mst_log_set_ident("aggregatord: ");
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    fputs("muster-aggregatord: cannot initialise libcurl\n", stderr);
    return EXIT_FAILURE;
  }
  /* Block the signals the loop handles before any thread starts, so that
   * threads inherit the mask and only the loop's signalfd sees them. */
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();

  a.config_path = config_path;
  if (load_config(config_path, &a) < 0)
    goto out;
  if (check_only) {
    printf("%s: configuration OK (%zu profiles)\n", config_path, a.profiles->n);
    ret = EXIT_SUCCESS;
    goto out;
  }
  mst_log_set_level(a.cfg.log_level);
  {
    struct sockaddr_in sin;
    bool exposed = mst_parse_host_port(a.cfg.listen_stream, &sin) == 0 &&
                   sin.sin_addr.s_addr != htonl(INADDR_LOOPBACK);
    if (exposed && !a.token && !(a.tls_creds && a.cfg.tls_require_client_cert))
      log_warning("no token_file and no required client certificates, and the agent stream "
                  "listens on %s: any host that can reach it can report as any node",
                  a.cfg.listen_stream);
    else if (exposed && a.token && !a.tls_creds)
      log_warning("the agent stream on %s is plain TCP: agents' tokens travel in clear text "
                  "(set [tls] cert and key)",
                  a.cfg.listen_stream);
  }

  if (a.cfg.expected_masters && mst_strv_split(a.cfg.expected_masters, &masters) < 0)
    goto out;
  r = aggr_model_init(&a.model, a.profiles, masters, a.cfg.stale_timeout_usec);
  if (r < 0)
    goto out;

  r = mst_store_open(a.cfg.database,
                     strcmp(a.cfg.synchronous, "normal") == 0 ? MST_STORE_SYNC_NORMAL : 0, &db);
  if (r < 0) {
    log_error("cannot open database %s: %s", a.cfg.database, strerror(-r));
    goto out;
  }
  r = mst_store_migrate(db, aggr_schema_migrations, aggr_schema_migrations_count);
  if (r < 0) {
    log_error("cannot migrate database %s: %s", a.cfg.database, strerror(-r));
    goto out;
  }
  r = restore_from_database(&a, db);
  if (r < 0)
    goto out;

  r = sd_event_default(&a.event);
  if (r < 0)
    goto out;
  if (sd_event_add_signal(a.event, NULL, SIGTERM, on_signal, &a) < 0 ||
      sd_event_add_signal(a.event, NULL, SIGINT, on_signal, &a) < 0 ||
      sd_event_add_signal(a.event, NULL, SIGHUP, on_reload, &a) < 0)
    goto out;

  if (a.cfg.zk_hosts) {
    /* Campaign; until elected this aggregator answers as a follower. */
    struct aggr_election_config ec = {
        .hosts = a.cfg.zk_hosts,
        .session_timeout_usec = a.cfg.zk_session_timeout_usec,
        .cluster = a.cfg.cluster,
        .id = a.cfg.id,
        .stream_address = a.cfg.advertise_stream,
        .http_address = a.cfg.advertise_http,
    };
    r = aggr_election_start(a.event, &ec, on_election_changed, &a, &a.election);
    if (r < 0)
      goto out;
    aggr_model_set_leader(&a.model, false, NULL, NULL, 0);
  } else {
    /* Standalone: this aggregator leads alone, a new epoch per start. */
    a.leading = true;
    aggr_model_set_leader(&a.model, true, a.cfg.id, a.cfg.advertise_http, a.epoch);
  }

  r = aggr_writer_start(db, a.election, &a.writer);
  if (r < 0) {
    log_error("cannot start the writer thread: %s", strerror(-r));
    goto out;
  }
  db = NULL; /* the writer owns it now */
  aggr_writer_set_retention(a.writer, a.cfg.retention_usec);
  if (a.election) {
    struct aggr_replica_options ro = {
        .https = a.cfg.tls_http && a.tls_creds,
        .ca_file = a.cfg.tls_ca,
        .token_file = a.cfg.http_token_file,
    };
    r = aggr_replica_start(a.writer, &ro, &a.replica);
    if (r < 0) {
      log_error("cannot start the replica thread: %s", strerror(-r));
      goto out;
    }
  }
  r = sd_event_add_io(a.event, &a.writer_source, aggr_writer_fd(a.writer), EPOLLIN, writer_done,
                      &a);
  if (r < 0)
    goto out;
  r = sd_event_add_time(a.event, &a.publish_timer, CLOCK_MONOTONIC, 0, 0, publish_now, &a);
  if (r < 0)
    goto out;
  r = sd_event_add_time(a.event, &a.stale_timer, CLOCK_REALTIME, UINT64_MAX, 0, stale_fired, &a);
  if (r < 0)
    goto out;
  sd_event_source_set_enabled(a.stale_timer, SD_EVENT_OFF);

  a.views = aggr_views_new();
  if (!a.views)
    goto out;
  /* Publish a first view before HTTP starts, so no reader ever sees none. */
  const char *check = getenv("MUSTER_CHECK_EVALUATE");
  a.check_evaluate = check && strcmp(check, "1") == 0;
  if (evaluate(&a, mst_now_realtime_usec()) && a.leading)
    record_cluster_verdict(&a);
  store_stage_completions(&a);
  if (aggr_view_publish(a.views, &a.model, false) < 0)
    goto out;
  r = aggr_stream_listen(&a);
  if (r < 0)
    goto out;
  aggr_history_init(a.cfg.database);
  struct aggr_http_options ho = {
      .listen = a.cfg.listen_http,
      .threads = (unsigned)a.cfg.http_threads,
      .limits =
          {
              .timeout_sec = (unsigned)(a.cfg.http_timeout_usec / USEC_PER_SEC),
              .max_parked = a.cfg.http_max_parked,
              .max_url = a.cfg.http_max_url,
          },
      .cert_file = a.cfg.tls_http ? a.cfg.tls_cert : NULL,
      .key_file = a.cfg.tls_http ? a.cfg.tls_key : NULL,
      .token_file = a.cfg.http_token_file,
  };
  r = aggr_http_start(&ho, a.views, &a.http);
  if (r < 0) {
    log_error("cannot serve HTTP on %s: %s", a.cfg.listen_http, strerror(-r));
    goto out;
  }
  r = sd_event_add_time_relative(a.event, &a.longpoll_timer, CLOCK_MONOTONIC, LONGPOLL_TICK_USEC, 0,
                                 longpoll_tick, &a);
  if (r < 0)
    goto out;
  a.ready = true;
  aggr_request_publish(&a, true);
  (void)sd_event_set_watchdog(a.event, true);
  if (a.election) {
    sd_notify(0, "READY=1\nSTATUS=campaigning");
    log_info("aggregator %s ready: campaigning in cluster '%s'", a.cfg.id, a.cfg.cluster);
  } else {
    sd_notify(0, "READY=1\nSTATUS=leading (standalone)");
    log_info("aggregator %s ready: leader (standalone), epoch %llu, cluster '%s'", a.cfg.id,
             (unsigned long long)a.epoch, a.cfg.cluster);
  }

  r = sd_event_loop(a.event);
  ret = r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;

out:
  aggr_http_free(a.http);
  if (a.event)
    aggr_stream_close_all(&a);
  aggr_replica_free(a.replica);
  aggr_writer_free(a.writer); /* commits what is queued, while the lease holds */
  /* Closing the session deletes our znode at once: a successor takes over
   * within milliseconds instead of a session timeout. */
  aggr_election_free(a.election);
  if (db)
    sqlite3_close_v2(db);
  sd_event_source_disable_unref(a.writer_source);
  sd_event_source_disable_unref(a.publish_timer);
  sd_event_source_disable_unref(a.stale_timer);
  sd_event_source_disable_unref(a.longpoll_timer);
  aggr_views_free(a.views);
  aggr_history_done();
  aggr_metrics_done();
  aggr_dcos_done();
  aggr_model_done(&a.model);
  spools_free(&a);
  mst_strv_free(masters);
  mst_profile_set_free(a.profiles);
  free(a.token);
  mst_tls_creds_unref(a.tls_creds);
  config_free(&a.cfg);
  sd_event_unref(a.event);
  curl_global_cleanup();
  return ret;
}
