/* The muster-notify thread and its door (notify.h): what the loop hands
 * over, what has been sent to each Alertmanager, and the posts. */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aggr.h"
#include "model/model.h"
#include "mst/config.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/time.h"
#include "notify/alerts.h"
#include "notify/notify.h"
#include "serve/metrics.h"

#define BACKOFF_MIN_USEC (500 * USEC_PER_MSEC)
/* A firing alert's endsAt is this many resend intervals ahead. */
#define ENDS_AHEAD 4
/* Alertmanager answers a post with a short body: what is read of it. */
#define ANSWER_MAX (64u * 1024)

/* An alert as sent: firing (resolved_usec 0) or resolved and not yet
 * delivered to every Alertmanager (delivered: a bit per URL). */
struct entry {
  struct aggr_alert a;
  uint64_t resolved_usec; /* realtime */
  uint32_t delivered;
};

struct target {
  char *url; /* .../api/v2/alerts */
  CURL *curl;
  bool need;              /* the set changed since the last delivery here */
  uint64_t last_ok_usec;  /* monotonic; 0: never */
  uint64_t next_try_usec; /* monotonic: not before (back-off) */
  uint64_t backoff_usec;  /* 0 while posts succeed */
  bool failing;           /* the last post failed */
  uint64_t next_log_usec; /* monotonic: failures are logged once per resend interval */
  uint64_t held;          /* failures not logged since */
};

struct aggr_notify {
  /* Set at start, read-only after. */
  struct target targets[AGGR_NOTIFY_URLS_MAX];
  size_t n_targets;
  char *cluster, *external_url;
  uint64_t resend_usec, timeout_usec;
  size_t max_alerts;
  pthread_t thread;

  /* The loop's side. */
  bool loop_leading;
  bool loop_built; /* loop_digest is that of the last set handed over */
  uint64_t loop_digest;

  /* The door, under lock. */
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool stop;
  bool have_set; /* set holds a set not taken yet */
  bool leading;  /* what the loop said last */
  struct aggr_alert_set set;

  /* The thread's own. */
  bool sending;          /* leading, as the thread last took it */
  struct entry *entries; /* sorted by key */
  size_t n_entries;
};

/* Alertmanager's answer is read and thrown away; a flood of bytes ends the
 * post. */
static size_t answer_sink(char *p, size_t size, size_t n, void *userdata) {
  size_t *got = userdata;
  *got += size * n;
  return *got > ANSWER_MAX ? 0 : size * n;
}

static uint64_t now_mono(void) {
  return mst_now_monotonic_usec();
}

/* Takes the set the loop handed over (the thread owns it then): each alert
 * of it is firing; each firing entry not in it is resolved now. */
static void take_set(struct aggr_notify *n, struct aggr_alert_set *set) {
  uint64_t now = mst_now_realtime_usec();
  struct entry *v = calloc(set->n + n->n_entries + 1, sizeof(*v));
  size_t k = 0, i = 0, j = 0, resolved = 0;
  if (!v) {
    log_error("alertmanager: out of memory taking a new alert set, ignoring");
    aggr_alert_set_done(set);
    return;
  }
  /* Both sorted by key: merge. */
  while (i < n->n_entries || j < set->n) {
    int c = i == n->n_entries ? 1 : j == set->n ? -1 : strcmp(n->entries[i].a.key, set->v[j].key);
    if (c < 0) {
      v[k] = n->entries[i++];
      if (!v[k].resolved_usec) {
        v[k].resolved_usec = now;
        v[k].delivered = 0;
      }
      resolved++;
      k++;
    } else {
      if (c == 0)
        aggr_alert_done(&n->entries[i++].a);
      v[k++] = (struct entry){.a = set->v[j]};
      set->v[j++] = (struct aggr_alert){0};
    }
  }
  /* Past the cap, the oldest resolutions go (Alertmanager resolves those
   * alerts itself at their endsAt). */
  while (resolved > n->max_alerts) {
    size_t oldest = SIZE_MAX;
    for (size_t e = 0; e < k; e++)
      if (v[e].resolved_usec &&
          (oldest == SIZE_MAX || v[e].resolved_usec < v[oldest].resolved_usec))
        oldest = e;
    aggr_alert_done(&v[oldest].a);
    memmove(&v[oldest], &v[oldest + 1], (k - oldest - 1) * sizeof(*v));
    k--;
    resolved--;
    atomic_fetch_add(&aggr_counters.notify_dropped, 1);
  }
  free(n->entries);
  n->entries = v;
  n->n_entries = k;
  free(set->v);
  *set = (struct aggr_alert_set){0};
  atomic_store(&aggr_counters.notify_alerts, k - resolved);
  for (size_t t = 0; t < n->n_targets; t++)
    n->targets[t].need = true;
}

static void forget_entries(struct aggr_notify *n) {
  for (size_t i = 0; i < n->n_entries; i++)
    aggr_alert_done(&n->entries[i].a);
  free(n->entries);
  n->entries = NULL;
  n->n_entries = 0;
  atomic_store(&aggr_counters.notify_alerts, 0);
}

/* The body of a post: every entry, firing or resolved. NULL on ENOMEM. */
static char *body_build(const struct aggr_notify *n) {
  uint64_t now = mst_now_realtime_usec();
  _cleanup_(json_decrefp) json_t *arr = json_array();
  char starts[MST_RFC3339_MAX], ends[MST_RFC3339_MAX];
  if (!arr)
    return NULL;
  for (size_t i = 0; i < n->n_entries; i++) {
    const struct entry *e = &n->entries[i];
    uint64_t ends_usec = e->resolved_usec ? e->resolved_usec : now + ENDS_AHEAD * n->resend_usec;
    /* Alertmanager refuses an alert that ends before it starts. */
    uint64_t starts_usec = MST_MIN(e->a.starts_usec ? e->a.starts_usec : ends_usec, ends_usec);
    json_t *o = json_pack("{sOsOssss}", "labels", e->a.labels, "annotations", e->a.annotations,
                          "startsAt", mst_time_format_rfc3339(starts_usec, starts, sizeof(starts)),
                          "endsAt", mst_time_format_rfc3339(ends_usec, ends, sizeof(ends)));
    if (!o || (e->a.link && json_object_set_new(o, "generatorURL", json_string(e->a.link)) < 0) ||
        json_array_append_new(arr, o) < 0)
      return NULL;
  }
  return json_dumps(arr, JSON_COMPACT);
}

/* Posts body to target t. Returns 0, or -EIO with a message in err. */
static int post(struct aggr_notify *n, struct target *t, const char *body, char *err,
                size_t err_size) {
  struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
  char curl_err[CURL_ERROR_SIZE] = "";
  size_t got = 0;
  long status = 0;
  if (!headers) {
    snprintf(err, err_size, "out of memory");
    return -ENOMEM;
  }
  curl_easy_setopt(t->curl, CURLOPT_URL, t->url);
  curl_easy_setopt(t->curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(t->curl, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(t->curl, CURLOPT_WRITEFUNCTION, answer_sink);
  curl_easy_setopt(t->curl, CURLOPT_WRITEDATA, &got);
  curl_easy_setopt(t->curl, CURLOPT_ERRORBUFFER, curl_err);
  CURLcode c = curl_easy_perform(t->curl);
  curl_slist_free_all(headers);
  curl_easy_setopt(t->curl, CURLOPT_ERRORBUFFER, NULL);
  if (c != CURLE_OK) {
    snprintf(err, err_size, "%s", curl_err[0] ? curl_err : curl_easy_strerror(c));
    return -EIO;
  }
  curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
  if (status < 200 || status > 299) {
    snprintf(err, err_size, "answered %ld", status);
    return -EIO;
  }
  return 0;
}

/* The monotonic time target t is next due, or UINT64_MAX when it has
 * nothing to send. */
static uint64_t due_at(const struct aggr_notify *n, const struct target *t) {
  if (!n->sending || n->n_entries == 0)
    return UINT64_MAX;
  uint64_t at = t->need || !t->last_ok_usec ? 0 : t->last_ok_usec + n->resend_usec;
  return MST_MAX(at, t->next_try_usec);
}

static void note_result(struct aggr_notify *n, struct target *t, size_t index, int r,
                        const char *err) {
  uint64_t now = now_mono();
  if (r >= 0) {
    if (t->failing)
      log_notice("alertmanager %s: posting again after %llu failures", t->url,
                 (unsigned long long)t->held + 1);
    t->need = t->failing = false;
    t->held = 0;
    t->backoff_usec = 0;
    t->next_try_usec = 0;
    t->last_ok_usec = now;
    atomic_fetch_add(&aggr_counters.notify_posts, 1);
    atomic_store(&aggr_counters.notify_last_success_usec, mst_now_realtime_usec());
    for (size_t i = 0; i < n->n_entries; i++)
      if (n->entries[i].resolved_usec)
        n->entries[i].delivered |= 1u << index;
    return;
  }
  atomic_fetch_add(&aggr_counters.notify_failures, 1);
  t->backoff_usec =
      t->backoff_usec ? MST_MIN(2 * t->backoff_usec, n->resend_usec) : BACKOFF_MIN_USEC;
  t->next_try_usec = now + t->backoff_usec;
  if (now >= t->next_log_usec) {
    log_warning("alertmanager %s: cannot post %zu alerts: %s (%llu more failures since the last "
                "message), retrying",
                t->url, n->n_entries, err, (unsigned long long)t->held);
    t->next_log_usec = now + n->resend_usec;
    t->held = 0;
  } else {
    t->held++;
  }
  t->failing = true;
}

/* Forgets the resolved entries every Alertmanager has taken. */
static void drop_delivered(struct aggr_notify *n) {
  uint32_t all = n->n_targets >= 32 ? UINT32_MAX : (1u << n->n_targets) - 1;
  size_t k = 0;
  for (size_t i = 0; i < n->n_entries; i++) {
    if (n->entries[i].resolved_usec && (n->entries[i].delivered & all) == all)
      aggr_alert_done(&n->entries[i].a);
    else
      n->entries[k++] = n->entries[i];
  }
  n->n_entries = k;
}

static void failing_gauge(const struct aggr_notify *n) {
  uint64_t failing = 0;
  for (size_t t = 0; t < n->n_targets; t++)
    failing += n->targets[t].failing;
  atomic_store(&aggr_counters.notify_failing, failing);
}

static void *notify_thread(void *userdata) {
  struct aggr_notify *n = userdata;
  pthread_mutex_lock(&n->lock);
  while (!n->stop) {
    if (n->have_set || n->leading != n->sending) {
      struct aggr_alert_set set = n->set;
      bool had = n->have_set, leading = n->leading;
      n->set = (struct aggr_alert_set){0};
      n->have_set = false;
      pthread_mutex_unlock(&n->lock);
      if (!leading) {
        /* The next leader holds the alerts: nothing is resolved. */
        aggr_alert_set_done(&set);
        forget_entries(n);
        for (size_t t = 0; t < n->n_targets; t++)
          n->targets[t].need = false;
      } else if (had) {
        take_set(n, &set);
      }
      n->sending = leading;
      pthread_mutex_lock(&n->lock);
      continue;
    }
    uint64_t now = now_mono(), next = UINT64_MAX;
    for (size_t t = 0; t < n->n_targets; t++)
      next = MST_MIN(next, due_at(n, &n->targets[t]));
    if (next > now) {
      if (next == UINT64_MAX) {
        pthread_cond_wait(&n->cond, &n->lock);
      } else {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t at =
            (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000 + (next - now);
        ts.tv_sec = (time_t)(at / USEC_PER_SEC);
        ts.tv_nsec = (long)(at % USEC_PER_SEC) * 1000;
        pthread_cond_timedwait(&n->cond, &n->lock, &ts);
      }
      continue;
    }
    pthread_mutex_unlock(&n->lock);
    _cleanup_free_ char *body = body_build(n);
    for (size_t t = 0; t < n->n_targets; t++) {
      struct target *tg = &n->targets[t];
      if (due_at(n, tg) > now)
        continue;
      char err[CURL_ERROR_SIZE + 64] = "out of memory";
      int r = body ? post(n, tg, body, err, sizeof(err)) : -ENOMEM;
      note_result(n, tg, t, r, err);
    }
    drop_delivered(n);
    failing_gauge(n);
    pthread_mutex_lock(&n->lock);
  }
  pthread_mutex_unlock(&n->lock);
  return NULL;
}

void aggr_notify_publish(struct aggr_notify *n, const struct aggr_model *m, bool leading) {
  if (!n)
    return;
  struct aggr_alert_set set = {0};
  if (leading) {
    uint64_t digest = aggr_alerts_digest(m);
    /* A new term hands its set over at once, the same or not. */
    if (n->loop_leading && n->loop_built && digest == n->loop_digest)
      return;
    const struct aggr_alert_options o = {
        .cluster = n->cluster, .external_url = n->external_url, .max = n->max_alerts};
    if (aggr_alerts_build(m, &o, &set) < 0) {
      log_error("alertmanager: out of memory building the alert set, ignoring");
      return;
    }
    n->loop_digest = digest;
    n->loop_built = true;
    atomic_fetch_add(&aggr_counters.notify_dropped, set.n_dropped);
  } else if (!n->loop_leading) {
    return;
  }
  n->loop_leading = leading;
  pthread_mutex_lock(&n->lock);
  aggr_alert_set_done(&n->set);
  n->set = set;
  n->have_set = leading;
  n->leading = leading;
  pthread_cond_signal(&n->cond);
  pthread_mutex_unlock(&n->lock);
}

static void targets_free(struct aggr_notify *n) {
  for (size_t t = 0; t < n->n_targets; t++) {
    if (n->targets[t].curl)
      curl_easy_cleanup(n->targets[t].curl);
    free(n->targets[t].url);
  }
  n->n_targets = 0;
}

/* One target per base URL of the list (checked by config.c). */
static int targets_add(struct aggr_notify *n, const char *urls) {
  char **v = NULL;
  int k = mst_strv_split(urls, &v);
  if (k < 0)
    return k;
  for (int i = 0; i < k; i++) {
    if (n->n_targets == AGGR_NOTIFY_URLS_MAX) {
      mst_strv_free(v);
      return -E2BIG;
    }
    struct target *t = &n->targets[n->n_targets];
    size_t len = strlen(v[i]);
    while (len > 0 && v[i][len - 1] == '/')
      len--;
    if (asprintf(&t->url, "%.*s/api/v2/alerts", (int)len, v[i]) < 0) {
      t->url = NULL;
      mst_strv_free(v);
      return -ENOMEM;
    }
    n->n_targets++;
    if (!(t->curl = curl_easy_init())) {
      mst_strv_free(v);
      return -ENOMEM;
    }
    curl_easy_setopt(t->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(t->curl, CURLOPT_TIMEOUT_MS, (long)(n->timeout_usec / USEC_PER_MSEC));
    curl_easy_setopt(t->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)(n->timeout_usec / USEC_PER_MSEC));
    curl_easy_setopt(t->curl, CURLOPT_PROTOCOLS_STR, "http,https");
  }
  mst_strv_free(v);
  return 0;
}

/* Frees n, whose thread is not running. */
static void notify_release(struct aggr_notify *n) {
  aggr_alert_set_done(&n->set);
  forget_entries(n);
  targets_free(n);
  free(n->cluster);
  free(n->external_url);
  pthread_cond_destroy(&n->cond);
  pthread_mutex_destroy(&n->lock);
  free(n);
}

int aggr_notify_start(const struct aggr_config *cfg, struct aggr_notify **ret) {
  *ret = NULL;
  if (!cfg->am_urls || cfg->am_urls[strspn(cfg->am_urls, " \t\n,")] == 0)
    return 0;
  struct aggr_notify *n = calloc(1, sizeof(*n));
  if (!n)
    return -ENOMEM;
  n->resend_usec = cfg->am_resend_interval_usec;
  n->timeout_usec = cfg->am_timeout_usec;
  n->max_alerts = (size_t)cfg->am_max_alerts;
  pthread_mutex_init(&n->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&n->cond, &ca);
  pthread_condattr_destroy(&ca);
  int r = -ENOMEM;
  if (!(n->cluster = strdup(cfg->cluster)) ||
      (cfg->am_external_url && !(n->external_url = strdup(cfg->am_external_url))) ||
      (r = targets_add(n, cfg->am_urls)) < 0 ||
      (r = -pthread_create(&n->thread, NULL, notify_thread, n)) < 0) {
    notify_release(n);
    return r;
  }
  pthread_setname_np(n->thread, "muster-notify");
  atomic_store(&aggr_counters.notify_configured, n->n_targets);
  log_info("notifying %zu Alertmanager%s, resending every %llus", n->n_targets,
           n->n_targets == 1 ? "" : "s", (unsigned long long)(n->resend_usec / USEC_PER_SEC));
  *ret = n;
  return 0;
}

void aggr_notify_free(struct aggr_notify *n) {
  if (!n)
    return;
  pthread_mutex_lock(&n->lock);
  n->stop = true;
  pthread_cond_signal(&n->cond);
  pthread_mutex_unlock(&n->lock);
  pthread_join(n->thread, NULL);
  notify_release(n);
}
