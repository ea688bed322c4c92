/* Text rendering for musterctl (see render.h). Tables are aligned by
 * measuring each column first; long outputs are left as they are (a terminal
 * wraps them, and scripts use --json). */
#include <stdio.h>
#include <string.h>

#include "mst/macro.h"
#include "mst/time.h"
#include "mst/verdict.h"
#include "render.h"

#define C_RESET  "\033[0m"
#define C_BOLD   "\033[1m"
#define C_RED    "\033[31m"
#define C_GREEN  "\033[32m"
#define C_YELLOW "\033[33m"
#define C_BLUE   "\033[34m"
#define C_GREY   "\033[90m"

static bool use_color;

void ctl_render_set_color(bool on) {
  use_color = on;
}

int ctl_verdict_exit_code(const char *verdict) {
  int v = mst_verdict_from_string(verdict);
  if (v < 0)
    return 3;
  return mst_verdict_exit_code((enum mst_verdict)v);
}

/* The colour of a verdict, a component state or a stage state. */
static const char *word_color(const char *w) {
  if (!w)
    return C_GREY;
  if (strcmp(w, "healthy") == 0 || strcmp(w, "done") == 0)
    return C_GREEN;
  if (strcmp(w, "degraded") == 0 || strcmp(w, "warning") == 0 || strcmp(w, "starting") == 0 ||
      strcmp(w, "in_progress") == 0)
    return C_YELLOW;
  if (strcmp(w, "unhealthy") == 0 || strcmp(w, "late") == 0 || strcmp(w, "failed") == 0)
    return C_RED;
  if (strcmp(w, "pending") == 0)
    return C_BLUE;
  return C_GREY; /* unknown, unreachable, missing */
}

static const char *str_or(json_t *o, const char *key, const char *dflt) {
  const char *s = json_string_value(json_object_get(o, key));
  return s ? s : dflt;
}

/* A state as a person reads it: the API's words, but "in progress" for
 * in_progress (the only one with an underscore). */
static const char *human(const char *w) {
  return w && strcmp(w, "in_progress") == 0 ? "in progress" : w;
}

/* Prints w padded to width, coloured by its meaning. */
static void put_word(FILE *f, const char *w, int width) {
  const char *s = w ? human(w) : "-";
  int pad = width > (int)strlen(s) ? width - (int)strlen(s) : 0;
  if (use_color)
    fprintf(f, "%s%s%s%*s", word_color(w), s, C_RESET, pad, "");
  else
    fprintf(f, "%s%*s", s, pad, "");
}

static void put_heading(FILE *f, const char *s) {
  if (use_color)
    fprintf(f, C_BOLD "%s" C_RESET "\n", s);
  else
    fprintf(f, "%s\n", s);
}

static int max_width(json_t *arr, const char *key, int minimum) {
  size_t i;
  json_t *it;
  int w = minimum;
  json_array_foreach(arr, i, it) {
    const char *s = json_string_value(json_object_get(it, key));
    if (s)
      w = MST_MAX(w, (int)strlen(s));
  }
  return w;
}

/* "m1/svc", "m1", or "cluster" for a reason or cause without node. */
static void put_subject(FILE *f, json_t *o) {
  const char *node = json_string_value(json_object_get(o, "node"));
  const char *comp = json_string_value(json_object_get(o, "component"));
  if (node && comp)
    fprintf(f, "%s/%s", node, comp);
  else
    fprintf(f, "%s", node ? node : "cluster");
}

static void render_reasons(FILE *f, json_t *reasons) {
  size_t i;
  json_t *r;
  if (json_array_size(reasons) == 0)
    return;
  put_heading(f, "reasons:");
  json_array_foreach(reasons, i, r) {
    const char *msg = json_string_value(json_object_get(r, "message"));
    fprintf(f, "  ");
    put_word(f, str_or(r, "state", NULL), 12);
    fprintf(f, "%s\n", msg ? msg : "-");
  }
}

static void render_root_causes(FILE *f, json_t *causes) {
  size_t i;
  json_t *c;
  if (json_array_size(causes) == 0)
    return;
  put_heading(f, "root causes:");
  json_array_foreach(causes, i, c) {
    const char *msg = json_string_value(json_object_get(c, "message"));
    const char *out = json_string_value(json_object_get(c, "output"));
    fprintf(f, "  ");
    put_word(f, str_or(c, "state", NULL), 12);
    if (msg) {
      fprintf(f, "%s\n", msg); /* the message already quotes the output */
      continue;
    }
    put_subject(f, c);
    fprintf(f, " since %s%s%s\n", str_or(c, "since", "-"), out && *out ? ": " : "", out ? out : "");
  }
}

void ctl_render_health(FILE *f, json_t *health) {
  json_t *leader = json_object_get(health, "leader");
  json_t *counts = json_object_get(health, "counts");
  const char *role;
  json_t *by_verdict;

  fprintf(f, "cluster: ");
  put_word(f, str_or(health, "verdict", NULL), 0);
  fprintf(f, " since %s\n", str_or(health, "since", "-"));
  if (json_is_object(leader))
    fprintf(f, "leader:  %s (epoch %lld)\n", str_or(leader, "id", "-"),
            (long long)json_integer_value(json_object_get(leader, "epoch")));
  else
    fprintf(f, "leader:  none\n");
  if (json_object_size(counts) > 0) {
    bool first_role = true;
    fprintf(f, "nodes:   ");
    json_object_foreach(counts, role, by_verdict) {
      const char *verdict;
      json_t *n;
      bool first = true;
      fprintf(f, "%s%s", first_role ? "" : "; ", role);
      first_role = false;
      json_object_foreach(by_verdict, verdict, n) {
        fprintf(f, "%s%lld ", first ? " " : ", ", (long long)json_integer_value(n));
        put_word(f, verdict, 0);
        first = false;
      }
    }
    fprintf(f, "\n");
  }
  render_reasons(f, json_object_get(health, "reasons"));
  render_root_causes(f, json_object_get(health, "root_causes"));
}

/* A Nagios plugin's text must not hold '|' (perfdata follows it) nor a
 * line break, and monitoring UIs cut long first lines: the sentence is
 * kept to this many bytes, cut at a character's start. */
#define STATUS_TEXT_MAX 300

static void put_plugin_text(FILE *f, const char *s) {
  size_t n = strlen(s);
  if (n > STATUS_TEXT_MAX) {
    n = STATUS_TEXT_MAX;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
      n--;
  }
  for (size_t i = 0; i < n; i++)
    fputc(s[i] == '|' ? '/' : (unsigned char)s[i] < ' ' ? ' ' : s[i], f);
  if (n < strlen(s))
    fputs("...", f);
}

void ctl_render_status_line(FILE *f, json_t *health) {
  static const char *const verdicts[] = {"healthy", "degraded",  "starting",
                                         "late",    "unhealthy", "unreachable",
                                         "missing", "unknown",   "maintenance"};
  const char *verdict = str_or(health, "verdict", "unknown");
  json_t *causes = json_object_get(health, "root_causes");
  json_t *reasons = json_object_get(health, "reasons");
  /* The top root cause: the one that blocks the most, the first listed
   * on a tie. */
  const char *top = NULL;
  long long most = -1;
  size_t i;
  json_t *c;
  json_array_foreach(causes, i, c) {
    long long blocked = json_integer_value(json_object_get(c, "blocked_total"));
    const char *msg = json_string_value(json_object_get(c, "message"));
    if (msg && blocked > most) {
      top = msg;
      most = blocked;
    }
  }
  if (!top)
    top = json_string_value(json_object_get(json_array_get(reasons, 0), "message"));

  fputs("MUSTER ", f);
  for (const char *p = verdict; *p; p++)
    fputc(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p, f);
  fputs(" - ", f);
  if (top)
    put_plugin_text(f, top);
  else
    fprintf(f, "cluster %s", verdict);
  long long total[ELEMENTSOF(verdicts)] = {0}, nodes = 0;
  const char *role, *v;
  json_t *by_verdict, *n;
  json_object_foreach(json_object_get(health, "counts"), role, by_verdict) {
    json_object_foreach(by_verdict, v, n) {
      nodes += json_integer_value(n);
      for (size_t k = 0; k < ELEMENTSOF(verdicts); k++)
        if (strcmp(v, verdicts[k]) == 0)
          total[k] += json_integer_value(n);
    }
  }
  fputs(" |", f);
  for (size_t k = 0; k < ELEMENTSOF(verdicts); k++)
    fprintf(f, " %s=%lld", verdicts[k], total[k]);
  fprintf(f, " nodes=%lld root_causes=%lld\n", nodes,
          (long long)json_integer_value(json_object_get(health, "root_causes_total")));
}

/* "100% done" or "40% in progress (base)" from a node's startup object. */
static void format_startup(json_t *startup, char *buf, size_t size) {
  if (!json_is_object(startup)) {
    snprintf(buf, size, "-");
    return;
  }
  json_t *pct = json_object_get(startup, "percent");
  const char *state = human(str_or(startup, "state", "-"));
  const char *stage = json_string_value(json_object_get(startup, "stage"));
  if (json_is_number(pct))
    snprintf(buf, size, "%3.0f%% %s%s%s%s", json_number_value(pct), state, stage ? " (" : "",
             stage ? stage : "", stage ? ")" : "");
  else
    snprintf(buf, size, "%s", state);
}

/* An operator's entry (issue 19) as one line: "  <what>: <reason> (by B
 * since S[, until U])". Nothing for null. */
static void render_operator(FILE *f, const char *indent, const char *what, json_t *e) {
  if (!json_is_object(e))
    return;
  json_t *until = json_object_get(e, "until");
  fprintf(f, "%s%s: %s (by %s since %s%s%s)\n", indent, what, str_or(e, "reason", "-"),
          str_or(e, "by", "-"), str_or(e, "since", "-"), json_is_string(until) ? ", until " : "",
          json_is_string(until) ? json_string_value(until) : "");
}

void ctl_render_nodes(FILE *f, json_t *nodes) {
  json_t *arr = json_object_get(nodes, "nodes");
  int wid = max_width(arr, "id", 2), wrole = max_width(arr, "role", 4);
  int wverdict = max_width(arr, "verdict", 7), wstart = 7;
  size_t i;
  json_t *n;
  char buf[160];

  json_array_foreach(arr, i, n) {
    format_startup(json_object_get(n, "startup"), buf, sizeof(buf));
    wstart = MST_MAX(wstart, (int)strlen(buf));
  }
  fprintf(f, "%-*s  %-*s  %-*s  %-*s  %-9s  %s\n", wid, "ID", wrole, "ROLE", wverdict, "VERDICT",
          wstart, "STARTUP", "CONNECTED", "LAST SEEN");
  json_array_foreach(arr, i, n) {
    format_startup(json_object_get(n, "startup"), buf, sizeof(buf));
    fprintf(f, "%-*s  %-*s  ", wid, str_or(n, "id", "-"), wrole, str_or(n, "role", "-"));
    put_word(f, str_or(n, "verdict", NULL), wverdict);
    fprintf(f, "  %-*s  %-9s  %s%s\n", wstart, buf,
            json_is_true(json_object_get(n, "connected")) ? "yes" : "no",
            str_or(n, "last_seen", "-"),
            json_is_true(json_object_get(n, "profile_drift")) ? "  (profile drift)" : "");
    render_operator(f, "    ", "maintenance", json_object_get(n, "maintenance"));
  }
  if (json_array_size(arr) == 0)
    fprintf(f, "(no nodes)\n");
}

static void format_seconds(json_t *v, char *buf, size_t size) {
  if (json_is_number(v))
    snprintf(buf, size, "%.1fs", json_number_value(v));
  else
    snprintf(buf, size, "-");
}

static void render_stages(FILE *f, json_t *stages) {
  int wname = max_width(stages, "name", 5), wstate = max_width(stages, "state", 5);
  size_t i;
  json_t *s;
  char dur[32], typ[32];

  if (json_array_size(stages) == 0)
    return;
  put_heading(f, "stages:");
  fprintf(f, "  %-*s  %-*s  %-9s  %-9s  %s\n", wname, "STAGE", wstate, "STATE", "DURATION",
          "TYPICAL", "REACHED");
  json_array_foreach(stages, i, s) {
    format_seconds(json_object_get(s, "duration"), dur, sizeof(dur));
    format_seconds(json_object_get(s, "typical_seconds"), typ, sizeof(typ));
    fprintf(f, "  %-*s  ", wname, str_or(s, "name", "-"));
    put_word(f, str_or(s, "state", NULL), wstate);
    fprintf(f, "  %-9s  %-9s  %s\n", dur, typ, str_or(s, "reached", "-"));
  }
}

static void render_components(FILE *f, json_t *comps) {
  int wname = max_width(comps, "name", 4), wcheck = max_width(comps, "check", 5);
  size_t i;
  json_t *c;

  put_heading(f, "components:");
  if (json_array_size(comps) == 0) {
    fprintf(f, "  (none reported)\n");
    return;
  }
  fprintf(f, "  %-*s  %-9s  %-*s  %-6s  %-24s  %s\n", wname, "NAME", "STATE", wcheck, "CHECK",
          "HEALTH", "SINCE", "OUTPUT");
  json_array_foreach(comps, i, c) {
    fprintf(f, "  %-*s  ", wname, str_or(c, "name", "-"));
    put_word(f, str_or(c, "state", NULL), 9);
    fprintf(f, "  %-*s  %-6s  %-24s  %s\n", wcheck, str_or(c, "check", "-"),
            str_or(c, "health", "-"), str_or(c, "since", "-"), str_or(c, "output", ""));
    render_operator(f, "      ", "maintenance", json_object_get(c, "maintenance"));
    render_operator(f, "      ", "acknowledged", json_object_get(c, "acknowledged"));
  }
}

void ctl_render_node(FILE *f, json_t *node) {
  json_t *startup = json_object_get(node, "startup");
  char buf[160], elapsed[32], eta[32];

  fprintf(f, "node:      %s (%s on %s)\n", str_or(node, "id", "-"), str_or(node, "role", "-"),
          str_or(node, "hostname", "-"));
  fprintf(f, "verdict:   ");
  put_word(f, str_or(node, "verdict", NULL), 0);
  fprintf(f, " since %s\n", str_or(node, "since", "-"));
  render_operator(f, "", "maintenance", json_object_get(node, "maintenance"));
  fprintf(f, "connected: %s, last seen %s%s\n",
          json_is_true(json_object_get(node, "connected")) ? "yes" : "no",
          str_or(node, "last_seen", "-"),
          json_is_true(json_object_get(node, "profile_drift")) ? ", profile drift" : "");
  fprintf(f, "boot:      %s\n", str_or(node, "boot_id", "-"));
  if (json_is_object(startup)) {
    json_t *waiting = json_object_get(startup, "waiting_on");
    format_startup(startup, buf, sizeof(buf));
    format_seconds(json_object_get(startup, "elapsed"), elapsed, sizeof(elapsed));
    format_seconds(json_object_get(startup, "eta_seconds"), eta, sizeof(eta));
    fprintf(f, "startup:   %s, elapsed %s, eta %s%s\n", buf, elapsed, eta,
            json_is_true(json_object_get(startup, "late")) ? ", LATE" : "");
    if (json_is_string(waiting))
      fprintf(f, "waiting:   %s\n", json_string_value(waiting));
    else if (json_is_array(waiting) && json_array_size(waiting) > 0) {
      size_t i;
      json_t *w;
      fprintf(f, "waiting:  ");
      json_array_foreach(waiting, i, w) {
        if (json_is_string(w))
          fprintf(f, " %s", json_string_value(w));
        else
          fprintf(f, " %s", str_or(w, "component", str_or(w, "name", "?")));
      }
      fprintf(f, "\n");
    }
    render_stages(f, json_object_get(startup, "stages"));
  }
  render_components(f, json_object_get(node, "components"));
  render_reasons(f, json_object_get(node, "reasons"));
  render_root_causes(f, json_object_get(node, "root_causes"));
}

void ctl_render_change(FILE *f, json_t *c) {
  fprintf(f, "%s  %s  %s  ", str_or(c, "at", "-"), str_or(c, "node", "-"),
          str_or(c, "component", "-"));
  put_word(f, str_or(c, "from", NULL), 0);
  fprintf(f, " -> ");
  put_word(f, str_or(c, "to", NULL), 0);
  const char *out = str_or(c, "output", "");
  if (*out)
    fprintf(f, "  %s", out);
  fprintf(f, "\n");
}

void ctl_render_health_line(FILE *f, json_t *health) {
  char now[MST_RFC3339_MAX];
  json_t *reasons = json_object_get(health, "reasons");
  size_t i;
  json_t *r;

  mst_time_format_rfc3339(mst_now_realtime_usec(), now, sizeof(now));
  fprintf(f, "%s ", now);
  put_word(f, str_or(health, "verdict", NULL), 0);
  json_array_foreach(reasons, i, r) {
    const char *msg = json_string_value(json_object_get(r, "message"));
    fprintf(f, "%s%s", i == 0 ? ": " : "; ", msg ? msg : "?");
  }
  fprintf(f, "\n");
}
