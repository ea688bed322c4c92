/* musterctl: the operators' command line for muster (docs/cli.md). It reads
 * the leader's HTTP API (docs/api.md) and prints it for people, or passes the
 * server's JSON through with --json. The exit code follows the verdict so
 * that scripts and Nagios can call it: 0 healthy, 1 degraded or starting,
 * 2 unhealthy, 3 unknown or unreachable; 64 for bad usage.
 *
 * One request at a time through libcurl's easy interface (http.c); `watch`
 * loops on blocking reads (?index=&wait=) until SIGINT. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "http.h"
#include "mst/auth.h"
#include "mst/duration.h"
#include "mst/macro.h"
#include "mst/time.h"
#include "render.h"

#define EXIT_UNREACHABLE 3
#define EXIT_USAGE       64 /* sysexits.h's EX_USAGE */

#define DEFAULT_SERVER        "http://127.0.0.1:7611"
#define REQUEST_TIMEOUT_SEC   30L
#define WATCH_WAIT_SEC        30L
#define HISTORY_DEFAULT_LIMIT 100L
#define HISTORY_PAGE_MAX      1000L

struct ctl_options {
  const char *server;
  const char *token_file; /* --token-file, else $MUSTER_TOKEN_FILE */
  const char *cacert;     /* --cacert, else $MUSTER_CACERT */
  bool json;
  const char *command;
  const char *node_id; /* `node ID` */
  /* history */
  const char *f_node, *f_component;
  char *since, *until; /* RFC 3339, owned */
  long limit;          /* 0: the default */
  bool all;
  /* maint, ack, forget (issue 19) */
  const char *component; /* maint NODE [COMPONENT], ack NODE COMPONENT */
  const char *reason;
  const char *for_duration; /* maint --for 2h */
  const char *until_raw;    /* maint --until T, as given */
  bool clear;
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
  interrupted = 1;
}

static void usage(FILE *f) {
  fprintf(f,
          "Usage: musterctl [--server URL] [--json] COMMAND [ARGS]\n"
          "\n"
          "Commands:\n"
          "  status                 the cluster verdict, its reasons and root causes (the\n"
          "                         first line is a Nagios plugin's, with perfdata)\n"
          "  nodes                  every node with its verdict and startup progress\n"
          "  node ID                one node: components and startup stages\n"
          "  history [--node N] [--component C] [--since T] [--until T]\n"
          "          [--limit N | --all]\n"
          "                         state changes, newest first (default: the last %ld)\n"
          "  watch                  follow the cluster verdict live (Ctrl-C stops)\n"
          "  maint NODE [COMPONENT] --reason R [--for 2h | --until T]\n"
          "                         put a node or component in maintenance\n"
          "  maint --clear NODE [COMPONENT]   end it\n"
          "  ack NODE COMPONENT --reason R    acknowledge a failing component\n"
          "  ack --clear NODE COMPONENT       clear the acknowledgement\n"
          "  forget NODE            remove a node that is gone (its history stays)\n"
          "\n"
          "Options (before or after the command):\n"
          "  --server URL   the aggregator, http:// or https:// (default $MUSTER_SERVER,\n"
          "                 then %s)\n"
          "  --token-file PATH  send the API's bearer token read from PATH (a file only\n"
          "                 its owner can read; default $MUSTER_TOKEN_FILE)\n"
          "  --cacert PATH  verify an https:// server against the CA certificates in\n"
          "                 PATH (default $MUSTER_CACERT, then the system's)\n"
          "  --json         print the server's JSON\n"
          "  -h, --help     this text;  --version  the version\n"
          "T is an RFC 3339 time (2026-11-25T01:00:00Z) or a duration ago (90s, 15m, 2h).\n"
          "\n"
          "Exit codes: 0 healthy, 1 degraded or starting, 2 unhealthy or late,\n"
          "3 unknown, unreachable, refused (401) or not found, 64 bad usage (status and\n"
          "node ID follow the verdict; other commands exit 0 on success).\n",
          HISTORY_DEFAULT_LIMIT, DEFAULT_SERVER);
}

_printf_(1, 2) static int usage_error(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "musterctl: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nTry 'musterctl --help'.\n");
  return -EINVAL;
}

/* An RFC 3339 time as given, or a duration ago. Returns a malloc'd RFC 3339
 * string, or NULL when s is neither. */
static char *parse_time_arg(const char *s) {
  uint64_t t, ago;
  char buf[MST_RFC3339_MAX];

  if (mst_time_parse_rfc3339(s, &t) >= 0)
    return strdup(s);
  if (mst_duration_parse(s, &ago) < 0)
    return NULL;
  uint64_t now = mst_now_realtime_usec();
  return strdup(mst_time_format_rfc3339(now > ago ? now - ago : 0, buf, sizeof(buf)));
}

enum {
  OPT_SERVER = 0x100,
  OPT_JSON,
  OPT_NODE,
  OPT_COMPONENT,
  OPT_SINCE,
  OPT_UNTIL,
  OPT_LIMIT,
  OPT_ALL,
  OPT_VERSION,
  OPT_TOKEN_FILE,
  OPT_CACERT,
  OPT_REASON,
  OPT_FOR,
  OPT_CLEAR,
};

/* Parses argv into o. Options may come before or after the command word.
 * Returns 0, 1 when --help or --version was answered, or -EINVAL after
 * printing why. */
static int parse_args(int argc, char **argv, struct ctl_options *o) {
  static const struct option longopts[] = {
      {"server", required_argument, NULL, OPT_SERVER},
      {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
      {"cacert", required_argument, NULL, OPT_CACERT},
      {"json", no_argument, NULL, OPT_JSON},
      {"node", required_argument, NULL, OPT_NODE},
      {"component", required_argument, NULL, OPT_COMPONENT},
      {"since", required_argument, NULL, OPT_SINCE},
      {"until", required_argument, NULL, OPT_UNTIL},
      {"limit", required_argument, NULL, OPT_LIMIT},
      {"all", no_argument, NULL, OPT_ALL},
      {"reason", required_argument, NULL, OPT_REASON},
      {"for", required_argument, NULL, OPT_FOR},
      {"clear", no_argument, NULL, OPT_CLEAR},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, OPT_VERSION},
      {},
  };
  bool history_opts = false, until_seen = false, write_opts = false;
  int c;

  opterr = 0;
  /* getopt_long permutes, so options after the command word are found too */
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) >= 0) {
    switch (c) {
    case OPT_SERVER:
      o->server = optarg;
      break;
    case OPT_TOKEN_FILE:
      o->token_file = optarg;
      break;
    case OPT_CACERT:
      o->cacert = optarg;
      break;
    case OPT_JSON:
      o->json = true;
      break;
    case OPT_NODE:
      o->f_node = optarg;
      history_opts = true;
      break;
    case OPT_COMPONENT:
      o->f_component = optarg;
      history_opts = true;
      break;
    case OPT_REASON:
      o->reason = optarg;
      write_opts = true;
      break;
    case OPT_FOR:
      o->for_duration = optarg;
      write_opts = true;
      break;
    case OPT_CLEAR:
      o->clear = true;
      write_opts = true;
      break;
    case OPT_SINCE:
    case OPT_UNTIL: {
      if (c == OPT_UNTIL) {
        o->until_raw = optarg; /* maint's end, as given */
        until_seen = true;
      }
      char *t = parse_time_arg(optarg);
      if (!t)
        return usage_error("not an RFC 3339 time or a duration: '%s'", optarg);
      char **slot = c == OPT_SINCE ? &o->since : &o->until;
      free(*slot);
      *slot = t;
      history_opts = history_opts || c == OPT_SINCE;
      break;
    }
    case OPT_LIMIT: {
      char *end;
      errno = 0;
      long v = strtol(optarg, &end, 10);
      if (errno || end == optarg || *end || v < 1)
        return usage_error("--limit wants a positive number, not '%s'", optarg);
      o->limit = v;
      history_opts = true;
      break;
    }
    case OPT_ALL:
      o->all = true;
      history_opts = true;
      break;
    case 'h':
      usage(stdout);
      return 1;
    case OPT_VERSION:
      printf("musterctl %s\n", MUSTER_VERSION);
      return 1;
    case ':':
      return usage_error("option '%s' needs a value", argv[optind - 1]);
    default:
      return usage_error("unknown option '%s'", argv[optind - 1]);
    }
  }

  if (optind >= argc)
    return usage_error("%s", "no command given");
  o->command = argv[optind++];
  if (strcmp(o->command, "node") == 0) {
    if (optind >= argc)
      return usage_error("%s", "'node' needs a node ID");
    o->node_id = argv[optind++];
    if (!*o->node_id)
      return usage_error("%s", "the node ID is empty");
  } else if (strcmp(o->command, "maint") == 0 || strcmp(o->command, "ack") == 0 ||
             strcmp(o->command, "forget") == 0) {
    bool maint = strcmp(o->command, "maint") == 0, ack = strcmp(o->command, "ack") == 0;
    bool forget = !maint && !ack;
    if (optind >= argc || !*argv[optind])
      return usage_error("'%s' needs a node ID", o->command);
    o->node_id = argv[optind++];
    if (!forget && optind < argc)
      o->component = argv[optind++];
    if (ack && !o->component)
      return usage_error("%s", "'ack' needs a node ID and a component name");
    if (!maint && (o->for_duration || until_seen))
      return usage_error("--for and --until are options of 'maint', not of '%s'", o->command);
    if (o->for_duration && until_seen)
      return usage_error("%s", "--for and --until exclude each other");
    if (maint && until_seen && mst_time_parse_rfc3339(o->until_raw, &(uint64_t){0}) < 0)
      return usage_error("--until wants an RFC 3339 time such as 2026-11-25T01:00:00Z, not '%s'",
                         o->until_raw);
    if (forget && (o->reason || o->clear))
      return usage_error("%s", "'forget' takes no --reason or --clear");
    if (!forget && !o->clear && !o->reason)
      return usage_error("'%s' needs --reason R (or --clear)", o->command);
    if (o->clear && (o->reason || o->for_duration || until_seen))
      return usage_error("%s", "--clear takes no --reason, --for or --until");
    write_opts = false;
    until_seen = false;
  } else if (strcmp(o->command, "status") != 0 && strcmp(o->command, "nodes") != 0 &&
             strcmp(o->command, "history") != 0 && strcmp(o->command, "watch") != 0)
    return usage_error("unknown command '%s'", o->command);
  if (optind < argc)
    return usage_error("unexpected argument '%s'", argv[optind]);
  if (write_opts)
    return usage_error("--reason, --for and --clear are options of 'maint' and 'ack', not of '%s'",
                       o->command);
  history_opts = history_opts || (until_seen && strcmp(o->command, "history") != 0);
  if (history_opts && strcmp(o->command, "history") != 0)
    return usage_error("--node, --component, --since, --until, --limit and --all are options of "
                       "'history', not of '%s'",
                       o->command);
  if (o->all && o->limit)
    return usage_error("%s", "--all and --limit exclude each other");
  return 0;
}

/* The server: --server, then $MUSTER_SERVER, then the default. */
static const char *server_arg(const char *opt) {
  const char *s = opt;
  if (!s || !*s)
    s = getenv("MUSTER_SERVER");
  if (!s || !*s)
    s = DEFAULT_SERVER;
  return s;
}

/* A bare IPv6 address with a port ("fd00::1:7611"): nobody can tell where
 * the port starts, as in a URL it goes in brackets. */
static bool server_is_bare_ipv6(const char *s) {
  const char *colon = strchr(s, ':');
  return !strstr(s, "://") && s[0] != '[' && colon && strchr(colon + 1, ':');
}

/* The server URL; a bare "host:port" or "[v6]:port" gets "http://".
 * Returns a malloc'd string or NULL on OOM. */
static char *server_url(const char *s) {
  char *url;
  if (strstr(s, "://"))
    return strdup(s);
  if (asprintf(&url, "http://%s", s) < 0)
    return NULL;
  return url;
}

/* jansson's own json_decrefp() */
#define _cleanup_json_ _cleanup_(json_decrefp)

/* The client's token file, for the message of a 401 (set in main). */
static const char *token_file_used;

/* Prints why the server refused a request with 401. */
static void print_unauthorized(void) {
  if (token_file_used)
    fprintf(stderr,
            "musterctl: the server refused the token in %s (401 unauthorized): it is not the "
            "token of the aggregators' http_token_file\n",
            token_file_used);
  else
    fprintf(stderr, "musterctl: the server needs a bearer token (401 unauthorized): give it with "
                    "--token-file PATH or $MUSTER_TOKEN_FILE\n");
}

/* Checks the result r of GET path and parses the answer. On failure prints one message to stderr
 * and returns the exit code (3 unreachable, server error or not found; 64 for
 * a parameter the server refused); on success returns 0 with *ret_json set
 * (owned by the caller) and resp holding the body. */
static int decode(const char *path, int r, struct ctl_response *resp, json_t **ret_json) {
  json_error_t jerr;
  if (r == -EINTR)
    return 130;
  if (r < 0) {
    fprintf(stderr, "musterctl: %s\n", resp->error);
    return r == -EINVAL ? EXIT_USAGE : EXIT_UNREACHABLE;
  }
  if (resp->status == 401) {
    print_unauthorized();
    return EXIT_UNREACHABLE;
  }
  json_t *j = json_loadb(resp->body, resp->size, 0, &jerr);
  if (resp->status != 200) {
    json_t *err = json_object_get(j, "error");
    const char *code = json_string_value(json_object_get(err, "code"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    fprintf(stderr, "musterctl: the server answered %ld%s%s%s%s\n", resp->status, code ? " " : "",
            code ? code : "", msg ? ": " : "", msg ? msg : "");
    json_decref(j);
    return resp->status == 400 ? EXIT_USAGE : EXIT_UNREACHABLE;
  }
  if (!j) {
    fprintf(stderr, "musterctl: the answer to %s is not JSON: %s (line %d)\n", path, jerr.text,
            jerr.line);
    return EXIT_UNREACHABLE;
  }
  *ret_json = j;
  return 0;
}

static int fetch(struct ctl_http *h, const char *path, long timeout, struct ctl_response *resp,
                 json_t **ret_json) {
  return decode(path, ctl_http_get(h, path, timeout, resp), resp, ret_json);
}

static void print_body(const struct ctl_response *resp) {
  fwrite(resp->body, 1, resp->size, stdout);
  if (resp->size == 0 || resp->body[resp->size - 1] != '\n')
    fputc('\n', stdout);
}

static int cmd_status(struct ctl_http *h, const struct ctl_options *o) {
  struct ctl_response resp;
  _cleanup_json_ json_t *health = NULL;
  int r = fetch(h, "/v1/health", REQUEST_TIMEOUT_SEC, &resp, &health);
  if (r == 0) {
    if (o->json)
      print_body(&resp);
    else {
      /* A Nagios plugin's first line, then the detail as its long text. */
      ctl_render_status_line(stdout, health);
      ctl_render_health(stdout, health);
    }
    r = ctl_verdict_exit_code(json_string_value(json_object_get(health, "verdict")));
  } else if (r == EXIT_UNREACHABLE && !o->json) {
    /* Nagios reads stdout: why is on stderr. */
    printf("MUSTER UNKNOWN - no cluster verdict from the aggregator\n");
  }
  ctl_response_done(&resp);
  return r;
}

static int cmd_nodes(struct ctl_http *h, const struct ctl_options *o) {
  struct ctl_response resp;
  _cleanup_json_ json_t *nodes = NULL;
  int r = fetch(h, "/v1/nodes", REQUEST_TIMEOUT_SEC, &resp, &nodes);
  if (r == 0) {
    if (o->json)
      print_body(&resp);
    else
      ctl_render_nodes(stdout, nodes);
  }
  ctl_response_done(&resp);
  return r;
}

static int cmd_node(struct ctl_http *h, const struct ctl_options *o) {
  struct ctl_response resp;
  _cleanup_json_ json_t *node = NULL;
  _cleanup_free_ char *id = ctl_http_escape(h, o->node_id), *path = NULL;
  if (!id || asprintf(&path, "/v1/nodes/%s", id) < 0) {
    path = NULL;
    fprintf(stderr, "musterctl: out of memory\n");
    return EXIT_UNREACHABLE;
  }
  int r = ctl_http_get(h, path, REQUEST_TIMEOUT_SEC, &resp);
  if (r >= 0 && resp.status == 404) {
    fprintf(stderr, "musterctl: no node '%s' is known to the server\n", o->node_id);
    ctl_response_done(&resp);
    return EXIT_UNREACHABLE;
  }
  r = decode(path, r, &resp, &node);
  if (r == 0) {
    if (o->json)
      print_body(&resp);
    else
      ctl_render_node(stdout, node);
    r = ctl_verdict_exit_code(json_string_value(json_object_get(node, "verdict")));
  }
  ctl_response_done(&resp);
  return r;
}

/* Appends "&key=escaped(value)" to *q. */
static int query_add(struct ctl_http *h, char **q, const char *key, const char *value) {
  _cleanup_free_ char *e = NULL;
  char *n;
  if (!value)
    return 0;
  e = ctl_http_escape(h, value);
  if (!e || asprintf(&n, "%s&%s=%s", *q, key, e) < 0)
    return -ENOMEM;
  free(*q);
  *q = n;
  return 0;
}

/* Pages through /v1/history with next_cursor until the limit (or, with
 * --all, the last page). Text is printed page by page; --json gathers the
 * changes into one {"changes":[...],"next_cursor":...} object. */
static int cmd_history(struct ctl_http *h, const struct ctl_options *o) {
  long want = o->all ? -1 : (o->limit ? o->limit : HISTORY_DEFAULT_LIMIT), got = 0;
  _cleanup_free_ char *filters = strdup(""), *cursor = NULL;
  _cleanup_json_ json_t *all = json_array();
  json_t *next = json_null();
  bool more = false;

  if (!filters || !all || query_add(h, &filters, "node", o->f_node) < 0 ||
      query_add(h, &filters, "component", o->f_component) < 0 ||
      query_add(h, &filters, "since", o->since) < 0 ||
      query_add(h, &filters, "until", o->until) < 0) {
    fprintf(stderr, "musterctl: out of memory\n");
    return EXIT_UNREACHABLE;
  }

  for (;;) {
    long page = want < 0 ? HISTORY_PAGE_MAX : MST_MIN(HISTORY_PAGE_MAX, want - got);
    _cleanup_free_ char *path = NULL, *ecursor = cursor ? ctl_http_escape(h, cursor) : NULL;
    _cleanup_json_ json_t *body = NULL;
    struct ctl_response resp;
    size_t i;
    json_t *c;

    if (asprintf(&path, "/v1/history?limit=%ld%s%s%s", page, filters, ecursor ? "&cursor=" : "",
                 ecursor ? ecursor : "") < 0) {
      path = NULL;
      fprintf(stderr, "musterctl: out of memory\n");
      return EXIT_UNREACHABLE;
    }
    int r = fetch(h, path, REQUEST_TIMEOUT_SEC, &resp, &body);
    ctl_response_done(&resp);
    if (r != 0)
      return r;
    json_t *changes = json_object_get(body, "changes");
    json_array_foreach(changes, i, c) {
      if (o->json)
        json_array_append(all, c);
      else
        ctl_render_change(stdout, c);
      got++;
    }
    const char *nc = json_string_value(json_object_get(body, "next_cursor"));
    free(cursor);
    cursor = nc ? strdup(nc) : NULL;
    if (nc && !cursor) {
      fprintf(stderr, "musterctl: out of memory\n");
      return EXIT_UNREACHABLE;
    }
    if (!cursor || json_array_size(changes) == 0)
      break;
    if (want >= 0 && got >= want) {
      more = true;
      break;
    }
  }

  if (o->json) {
    if (cursor)
      next = json_string(cursor);
    json_t *out = json_pack("{s:O,s:o}", "changes", all, "next_cursor", next);
    if (!out) {
      fprintf(stderr, "musterctl: out of memory\n");
      return EXIT_UNREACHABLE;
    }
    json_dumpf(out, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    json_decref(out);
  } else if (got == 0)
    printf("(no changes)\n");
  if (more && !o->json)
    fprintf(stderr, "musterctl: showing the newest %ld; more with --limit N or --all\n", got);
  return 0;
}

/* Sleeps up to sec seconds, waking early on SIGINT. */
static void pause_interruptible(unsigned sec) {
  for (unsigned i = 0; i < sec * 10 && !interrupted; i++) {
    struct timespec ts = {.tv_nsec = 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

static void watch_redraw(struct ctl_http *h, json_t *health) {
  struct ctl_response resp;
  json_t *nodes = NULL;
  char now[MST_RFC3339_MAX];

  fputs("\033[H\033[2J", stdout);
  ctl_render_health(stdout, health);
  fputc('\n', stdout);
  if (ctl_http_get(h, "/v1/nodes", REQUEST_TIMEOUT_SEC, &resp) >= 0 && resp.status == 200)
    nodes = json_loadb(resp.body, resp.size, 0, NULL);
  if (nodes)
    ctl_render_nodes(stdout, nodes);
  json_decref(nodes);
  ctl_response_done(&resp);
  mst_time_format_rfc3339(mst_now_realtime_usec(), now, sizeof(now));
  printf("\nupdated %s; Ctrl-C stops\n", now);
}

/* Blocking reads of /v1/health: each answer that moved the index is shown,
 * redrawn in place on a tty, one line otherwise (one JSON line with --json).
 * A lost server is retried every second once the first read succeeded. */
static int cmd_watch(struct ctl_http *h, const struct ctl_options *o) {
  bool tty = isatty(STDOUT_FILENO), have_index = false, connected = false, lost = false;
  uint64_t index = 0;

  while (!interrupted) {
    char path[96];
    struct ctl_response resp;
    json_error_t jerr;

    if (have_index)
      snprintf(path, sizeof(path), "/v1/health?index=%" PRIu64 "&wait=%lds", index, WATCH_WAIT_SEC);
    else
      snprintf(path, sizeof(path), "/v1/health");
    /* the server may add up to wait/16 of jitter */
    int r = ctl_http_get(h, path, WATCH_WAIT_SEC + WATCH_WAIT_SEC / 8 + 10, &resp);
    if (r == -EINTR)
      break;
    if (r < 0 || resp.status != 200) {
      if (!connected) {
        if (r < 0)
          fprintf(stderr, "musterctl: %s\n", resp.error);
        else if (resp.status == 401)
          print_unauthorized();
        else
          fprintf(stderr, "musterctl: the server answered %ld\n", resp.status);
        ctl_response_done(&resp);
        return r == -EINVAL ? EXIT_USAGE : EXIT_UNREACHABLE;
      }
      if (!lost && r < 0)
        fprintf(stderr, "musterctl: %s; retrying every second\n", resp.error);
      else if (!lost)
        fprintf(stderr, "musterctl: the server answered %ld%s; retrying every second\n",
                resp.status,
                resp.status == 503 ? " (no leader for now: an election or a failover)" : "");
      lost = true;
      have_index = false;
      ctl_response_done(&resp);
      pause_interruptible(1);
      continue;
    }
    connected = true;
    if (lost)
      fprintf(stderr, "musterctl: connected again (%s)\n", ctl_http_server(h));
    lost = false;
    if (have_index && resp.has_index && resp.index == index) {
      ctl_response_done(&resp); /* the wait ended without a change */
      continue;
    }
    have_index = resp.has_index;
    index = resp.index;
    json_t *health = json_loadb(resp.body, resp.size, 0, &jerr);
    if (!health)
      fprintf(stderr, "musterctl: the answer is not JSON: %s, ignoring\n", jerr.text);
    else if (o->json) {
      json_dumpf(health, stdout, JSON_COMPACT);
      fputc('\n', stdout);
    } else if (tty)
      watch_redraw(h, health);
    else
      ctl_render_health_line(stdout, health);
    fflush(stdout);
    json_decref(health);
    ctl_response_done(&resp);
    if (!have_index) /* an old server without blocking reads: do not spin */
      pause_interruptible(1);
  }
  return 0;
}

/* The token file and CA file: the options, then the environment. Returns 0,
 * or an exit code after saying why. */
static int setup_credentials(struct ctl_http *h, const struct ctl_options *o) {
  const char *token_file = o->token_file, *cacert = o->cacert;
  if (!token_file || !*token_file)
    token_file = getenv("MUSTER_TOKEN_FILE");
  if (!cacert || !*cacert)
    cacert = getenv("MUSTER_CACERT");
  if (cacert && *cacert) {
    if (access(cacert, R_OK) < 0) {
      fprintf(stderr, "musterctl: cannot read the CA file %s: %s\n", cacert, strerror(errno));
      return EXIT_USAGE;
    }
    if (ctl_http_set_cacert(h, cacert) < 0) {
      fprintf(stderr, "musterctl: out of memory\n");
      return EXIT_UNREACHABLE;
    }
  }
  if (token_file && *token_file) {
    _cleanup_free_ char *token = NULL;
    int r = mst_token_read(token_file, &token);
    if (r < 0) {
      fprintf(stderr, "musterctl: cannot use the token file %s: %s%s\n", token_file, strerror(-r),
              r == -EPERM ? " (it must be readable by its owner only)" : "");
      return EXIT_USAGE;
    }
    r = ctl_http_set_token(h, token);
    memset(token, 0, strlen(token));
    if (r < 0) {
      fprintf(stderr, "musterctl: out of memory\n");
      return EXIT_UNREACHABLE;
    }
    token_file_used = token_file;
  }
  return 0;
}

/* The user's name for X-Muster-Operator: $MUSTER_OPERATOR, then $USER. */
static const char *operator_name(void) {
  const char *n = getenv("MUSTER_OPERATOR");
  if (!n || !*n)
    n = getenv("USER");
  return n && *n ? n : NULL;
}

/* maint, ack and forget: one PUT or DELETE on the leader (followers
 * redirect), the resulting state printed. */
static int cmd_write(struct ctl_http *h, const struct ctl_options *o) {
  bool maint = strcmp(o->command, "maint") == 0, forget = strcmp(o->command, "forget") == 0;
  _cleanup_free_ char *id = ctl_http_escape(h, o->node_id), *path = NULL, *body = NULL;
  _cleanup_free_ char *comp = o->component ? ctl_http_escape(h, o->component) : NULL;
  _cleanup_json_ json_t *req = NULL, *answer = NULL;
  struct ctl_response resp;
  const char *method = forget || o->clear ? "DELETE" : "PUT";

  if (!id || (o->component && !comp) ||
      asprintf(&path, "/v1/nodes/%s%s%s%s", id, comp ? "/components/" : "", comp ? comp : "",
               forget  ? ""
               : maint ? "/maintenance"
                       : "/ack") < 0) {
    path = NULL;
    fprintf(stderr, "musterctl: out of memory\n");
    return EXIT_UNREACHABLE;
  }
  if (!forget && !o->clear) {
    req = json_pack("{ss}", "reason", o->reason);
    if (req && o->for_duration)
      json_object_set_new(req, "duration", json_string(o->for_duration));
    if (req && o->until_raw)
      json_object_set_new(req, "until", json_string(o->until_raw));
    body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    if (!body) {
      fprintf(stderr, "musterctl: out of memory\n");
      return EXIT_UNREACHABLE;
    }
  }
  int r = ctl_http_request(h, method, path, body, operator_name(), REQUEST_TIMEOUT_SEC, &resp);
  if (r >= 0 && resp.status == 403) {
    fprintf(stderr, "musterctl: the server refused the write (403): without a token configured "
                    "it takes writes from its own host only\n");
    ctl_response_done(&resp);
    return EXIT_UNREACHABLE;
  }
  r = decode(path, r, &resp, &answer);
  if (r == 0) {
    json_t *m = json_object_get(answer, "maintenance"),
           *a = json_object_get(answer, "acknowledged");
    const char *what = o->component ? o->component : o->node_id;
    if (o->json)
      print_body(&resp);
    else if (forget)
      printf("%s: forgotten (its history is kept)\n", o->node_id);
    else if (maint && json_is_object(m))
      printf("%s%s%s: in maintenance until %s: %s\n", what, o->component ? " on " : "",
             o->component ? o->node_id : "",
             json_is_string(json_object_get(m, "until"))
                 ? json_string_value(json_object_get(m, "until"))
                 : "cleared",
             json_string_value(json_object_get(m, "reason")));
    else if (!maint && json_is_object(a))
      printf("%s on %s: acknowledged: %s\n", what, o->node_id,
             json_string_value(json_object_get(a, "reason")));
    else
      printf("%s%s%s: %s cleared\n", what, o->component ? " on " : "",
             o->component ? o->node_id : "", maint ? "maintenance" : "acknowledgement");
  }
  ctl_response_done(&resp);
  return r;
}

int main(int argc, char **argv) {
  struct ctl_options o = {};
  struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: sleeps wake */
  int r;

  r = parse_args(argc, argv, &o);
  if (r != 0) {
    free(o.since);
    free(o.until);
    return r > 0 ? 0 : EXIT_USAGE;
  }

  const char *no_color = getenv("NO_COLOR");
  ctl_render_set_color(isatty(STDOUT_FILENO) && !(no_color && *no_color));
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  const char *server = server_arg(o.server);
  if (server_is_bare_ipv6(server)) {
    usage_error("server '%s': write an IPv6 address in brackets, as [address]:port or "
                "http://[address]:port",
                server);
    return EXIT_USAGE;
  }
  _cleanup_free_ char *url = server_url(server);
  struct ctl_http *h = url ? ctl_http_new(url, &interrupted) : NULL;
  if (!h) {
    fprintf(stderr, "musterctl: out of memory\n");
    r = EXIT_UNREACHABLE;
  } else if ((r = setup_credentials(h, &o)) != 0)
    ;
  else if (strcmp(o.command, "status") == 0)
    r = cmd_status(h, &o);
  else if (strcmp(o.command, "nodes") == 0)
    r = cmd_nodes(h, &o);
  else if (strcmp(o.command, "node") == 0)
    r = cmd_node(h, &o);
  else if (strcmp(o.command, "history") == 0)
    r = cmd_history(h, &o);
  else if (strcmp(o.command, "maint") == 0 || strcmp(o.command, "ack") == 0 ||
           strcmp(o.command, "forget") == 0)
    r = cmd_write(h, &o);
  else
    r = cmd_watch(h, &o);

  ctl_http_free(h);
  free(o.since);
  free(o.until);
  if (fflush(stdout) != 0 && r == 0) {
    fprintf(stderr, "musterctl: writing the output failed\n");
    r = 1;
  }
  return r;
}
