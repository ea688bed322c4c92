/* muster-aggregatord: start-up only. It reads the config and the profiles
 * (config.c; every error as path:line: message), opens and migrates the
 * history database and reads back what it holds (ingest/restore.c), hands
 * the database to the writer thread, wires the writer's commits
 * (ingest/committed.c), publishing (publish.c), the agent streams
 * (ingest/conn.c) and HTTP (serve/http.c) to the sd-event loop, and runs
 * it. What happens when a signal arrives or the election changes this
 * aggregator's role is here too, since it touches all of them. Without
 * ZooKeeper the aggregator leads alone; each start is a new leader epoch,
 * stamped on every row written and every Welcome. aggr.h's DESIGN block
 * lists the threads. */
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
#include "config.h"
#include "election.h"
#include "ingest/committed.h"
#include "ingest/conn.h"
#include "ingest/replica.h"
#include "ingest/restore.h"
#include "operate.h"
#include "ingest/writer.h"
#include "mst/config.h"
#include "mst/log.h"
#include "mst/addr.h"
#include "mst/store.h"
#include "mst/time.h"
#include "mst/tls.h"
#include "notify/notify.h"
#include "publish.h"
#include "serve/history.h"
#include "serve/http.h"

extern const struct mst_migration aggr_schema_migrations[];
extern const size_t aggr_schema_migrations_count;

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
  if (aggr_config_stream_tls(a->config_path, &a->cfg, &creds, &diag) < 0) {
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
    aggr_spools_rewind(&a->spools);
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

/* The operator state in ZooKeeper moved (issue 19). */
static void on_operator_changed(struct aggr_election *el, const char *data, size_t len,
                                int64_t version, void *userdata) {
  aggr_operate_zk_changed(userdata, data, len, version);
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
  if (aggr_config_load(&a, config_path) < 0)
    goto out;
  if (check_only) {
    printf("%s: configuration OK (%zu profiles)\n", config_path, a.profiles->n);
    ret = EXIT_SUCCESS;
    goto out;
  }
  mst_log_set_level(a.cfg.log_level);
  {
    struct mst_addr addr;
    char err[256];
    bool exposed =
        mst_addr_parse(a.cfg.listen_stream, MST_ADDR_LISTEN, &addr, err, sizeof(err)) == 0 &&
        !mst_addr_is_loopback((struct sockaddr *)&addr.ss);
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
  a.model.first_contact_window_usec = a.cfg.first_contact_window_usec;

  r = mst_store_open(a.cfg.database,
                     a.cfg.synchronous == AGGR_SYNCHRONOUS_NORMAL ? MST_STORE_SYNC_NORMAL : 0, &db);
  if (r < 0) {
    log_error("cannot open database %s: %s", a.cfg.database, strerror(-r));
    goto out;
  }
  r = mst_store_migrate(db, aggr_schema_migrations, aggr_schema_migrations_count);
  if (r < 0) {
    log_error("cannot migrate database %s: %s", a.cfg.database, strerror(-r));
    goto out;
  }
  r = aggr_restore(db, &a.spools, &a.model, &a.stage, &a.epoch);
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
        .operator_changed = on_operator_changed,
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
  r = aggr_committed_watch(&a);
  if (r < 0)
    goto out;
  /* A first view before HTTP starts, so no reader ever sees none. */
  r = aggr_publish_start(&a);
  if (r < 0)
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
              .max_connections = (unsigned)a.cfg.http_max_connections,
              .max_connections_per_address = (unsigned)a.cfg.http_max_connections_per_address,
              .max_parked = a.cfg.http_max_parked,
              .max_url = a.cfg.http_max_url,
          },
      .cert_file = a.cfg.tls_http ? a.cfg.tls_cert : NULL,
      .key_file = a.cfg.tls_http ? a.cfg.tls_key : NULL,
      .token_file = a.cfg.http_token_file,
      .fence = a.election,
      .admin_token_file = a.cfg.http_admin_token_file,
  };
  r = aggr_http_start(&ho, a.views, &a.http);
  if (r < 0) {
    log_error("cannot serve HTTP on %s: %s", a.cfg.listen_http, strerror(-r));
    goto out;
  }
  r = aggr_operate_start(&a);
  if (r < 0) {
    log_error("cannot take the API's writes: %s", strerror(-r));
    goto out;
  }
  r = aggr_publish_serve(&a);
  if (r < 0)
    goto out;
  r = aggr_notify_start(&a.cfg, &a.notify);
  if (r < 0) {
    log_error("cannot start notifying Alertmanager: %s", strerror(-r));
    goto out;
  }
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
  aggr_operate_stop(&a);
  aggr_notify_free(a.notify);
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
  aggr_publish_stop(&a);
  aggr_history_done();
  aggr_stage_done(&a.stage);
  aggr_model_done(&a.model);
  aggr_spools_done(&a.spools);
  mst_strv_free(masters);
  aggr_config_done(&a);
  sd_event_unref(a.event);
  curl_global_cleanup();
  return ret;
}
