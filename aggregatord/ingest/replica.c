/* The warm copy: a follower tails the leader's committed history.
 *
 * DESIGN. A background thread, muster-replica (blocking HTTP has no place on the loop),
 * asks the current leader for the rows of its changes table after a cursor
 * (GET /v1/internal/replicate?after=ID&limit=N), and hands each row to the
 * writer thread as a REPLICA job. The writer stores a row only if its seq is
 * above what this aggregator already holds for that (node, spool), so rows
 * copied twice, or already ingested here in an earlier term, are not stored
 * twice; it then raises the spool's held seq and reports it to the loop.
 * When this aggregator is elected, its Welcome therefore already holds most
 * of history, agents replay little, and the history of nodes whose agents
 * are gone survives the failover.
 *
 * The loop tells the thread whom to follow through aggr_replica_follow()
 * (under a mutex; the thread copies the address). A new leader epoch resets
 * the cursor, since row ids are per database. Over HTTPS the leader's
 * certificate is verified (against [tls] ca, or the system's CAs) and the
 * bearer token, when the cluster has one, goes with every request. */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mst/auth.h"
#include "mst/dynbuf.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/state.h"
#include "mst/verdict.h"
#include "ingest/replica.h"
#include "ingest/writer.h"

#define REPLICA_PAGE      2000
#define REPLICA_IDLE_MSEC 500
#define REPLICA_BODY_MAX  (64u * 1024 * 1024)

struct aggr_replica {
  struct aggr_writer *writer;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool stop;
  char *leader_http; /* guarded by lock; NULL: not following */
  uint64_t leader_epoch;
  bool started;
  /* Read by the thread only, set before it starts. */
  bool https;
  char *ca_file;
  struct curl_slist *headers; /* Authorization: Bearer, or NULL */
};

/* A page's bytes go into a dynbuf capped at REPLICA_BODY_MAX; past it (or
 * out of memory) the buffer is freed and curl fails the transfer. */
static size_t body_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
  size_t n = size * nmemb;
  return mst_dynbuf_add(userdata, ptr, n) < 0 ? 0 : n;
}

/* A string member of a row, or NULL, which the writer stores as "". */
static const char *row_str(json_t *row, const char *key) {
  return json_string_value(json_object_get(row, key));
}

static int64_t row_int(json_t *row, const char *key) {
  return json_integer_value(json_object_get(row, key));
}

/* A change row of the leader's history as a REPLICA job, or NULL when the
 * row has no seq (or memory ran out). */
static struct aggr_write *change_job(json_t *row) {
  const struct aggr_change_row change = {
      .seq = (uint64_t)row_int(row, "seq"),
      .at_ms = row_int(row, "at_ms"),
      .component = row_str(row, "component"),
      .output = row_str(row, "output"),
      .boot_id = row_str(row, "boot_id"),
      .check_kind = mst_check_kind_name(mst_check_kind_from_string(row_str(row, "check"))),
      .from_state = mst_state_name(mst_state_from_string(row_str(row, "from"))),
      .to_state = mst_state_name(mst_state_from_string(row_str(row, "to"))),
      .health = (uint32_t)row_int(row, "health"),
      .rise = (uint32_t)row_int(row, "rise"),
      .fall = (uint32_t)row_int(row, "fall"),
  };
  if (change.seq == 0)
    return NULL;
  return aggr_write_new_replica((uint64_t)row_int(row, "epoch"), row_str(row, "node_id"),
                                row_str(row, "spool_id"), row_int(row, "received_ms"), &change);
}

/* A cluster verdict row as a REPLICA_VERDICT job, or NULL. */
static struct aggr_write *verdict_job(json_t *row) {
  int v = mst_verdict_from_string(row_str(row, "verdict"));
  if (v < 0)
    return NULL;
  return aggr_write_new_verdict(AGGR_WRITE_REPLICA_VERDICT, (uint64_t)row_int(row, "epoch"),
                                mst_verdict_to_string((enum mst_verdict)v), row_int(row, "at_ms"),
                                row_str(row, "reasons"));
}

/* Hands every row of one page to the writer as the job row_job makes of it.
 * Returns the number of rows on the page, with the last id in *cursor, or
 * -EBADMSG. */
static int replica_apply(struct aggr_replica *r, const char *data,
                         struct aggr_write *(*row_job)(json_t *row), uint64_t *cursor) {
  json_error_t err;
  json_t *root = json_loads(data, 0, &err), *rows, *row;
  size_t i;
  int n = 0;

  if (!root || !json_is_array(rows = json_object_get(root, "rows"))) {
    json_decref(root);
    return -EBADMSG;
  }
  json_array_foreach(rows, i, row) {
    struct aggr_write *j = row_job(row);
    if (j)
      aggr_writer_submit(r->writer, j);
    n++;
  }
  json_t *last = json_object_get(root, "last_id");
  if (json_is_integer(last) && (uint64_t)json_integer_value(last) > *cursor)
    *cursor = (uint64_t)json_integer_value(last);
  json_decref(root);
  return n;
}

/* GETs url into a malloc'd body. Returns 0, or -EIO with a reason in why. */
static int replica_fetch(struct aggr_replica *r, CURL *curl, const char *url, struct mst_dynbuf *b,
                         char *why, size_t why_size) {
  char errbuf[CURL_ERROR_SIZE] = "";
  long status = 0;
  curl_easy_reset(curl);
  curl_easy_setopt(curl, CURLOPT_URL, url);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, r->https ? "https" : "http");
  if (r->https && r->ca_file)
    curl_easy_setopt(curl, CURLOPT_CAINFO, r->ca_file);
  if (r->headers)
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, r->headers);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 5000L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, body_write);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, b);
  CURLcode cc = curl_easy_perform(curl);
  if (cc != CURLE_OK) {
    snprintf(why, why_size, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
    return -EIO;
  }
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  if (status == 401) {
    snprintf(why, why_size,
             "the leader refused %s (401): the aggregators' http_token_file "
             "must hold the same token",
             r->headers ? "this aggregator's bearer token" : "a request without a bearer token");
    return -EIO;
  }
  if (status != 200 || !b->buf) {
    snprintf(why, why_size, "unexpected HTTP status %ld", status);
    return -EIO;
  }
  return 0;
}

/* Waits up to msec, or until stopped or told to follow someone else. */
static void replica_sleep(struct aggr_replica *r, unsigned msec) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_nsec += (long)(msec % 1000) * 1000000L;
  ts.tv_sec += msec / 1000 + ts.tv_nsec / 1000000000L;
  ts.tv_nsec %= 1000000000L;
  pthread_mutex_lock(&r->lock);
  if (!r->stop)
    pthread_cond_timedwait(&r->cond, &r->lock, &ts);
  pthread_mutex_unlock(&r->lock);
}

static void *replica_main(void *userdata) {
  struct aggr_replica *r = userdata;
  CURL *curl = curl_easy_init();
  uint64_t cursor = 0, verdict_cursor = 0, epoch = 0;
  char leader_addr[256];
  const char *scheme = r->https ? "https" : "http";
  bool failing = false;

  if (!curl) {
    log_error("replica: cannot initialise libcurl; no warm copy will be kept");
    return NULL;
  }
  for (;;) {
    char *leader = NULL, url[512];
    uint64_t e;
    pthread_mutex_lock(&r->lock);
    while (!r->stop && !r->leader_http)
      pthread_cond_wait(&r->cond, &r->lock);
    if (r->stop) {
      pthread_mutex_unlock(&r->lock);
      break;
    }
    leader = strdup(r->leader_http);
    e = r->leader_epoch;
    pthread_mutex_unlock(&r->lock);
    if (!leader) {
      replica_sleep(r, REPLICA_IDLE_MSEC);
      continue;
    }
    if (e != epoch) {
      epoch = e;
      cursor = verdict_cursor = 0; /* row ids belong to the leader's own database */
      log_info("replica: copying the history of the leader at %s (epoch %llu)", leader,
               (unsigned long long)epoch);
    }
    snprintf(url, sizeof(url), "%s://%s/v1/internal/replicate?after=%llu&limit=%u", scheme, leader,
             (unsigned long long)cursor, REPLICA_PAGE);
    snprintf(leader_addr, sizeof(leader_addr), "%s", leader);
    free(leader);

    struct mst_dynbuf b = MST_DYNBUF_INIT(REPLICA_BODY_MAX);
    char why[CURL_ERROR_SIZE + 128] = "malformed page";
    int n = replica_fetch(r, curl, url, &b, why, sizeof(why));
    if (n >= 0)
      n = replica_apply(r, b.buf, change_job, &cursor);
    mst_dynbuf_reset(&b);
    if (n >= 0 && n < REPLICA_PAGE) {
      /* Caught up with the changes: copy the verdict history too. */
      struct mst_dynbuf bv = MST_DYNBUF_INIT(REPLICA_BODY_MAX);
      char vurl[512];
      snprintf(vurl, sizeof(vurl), "%s://%s/v1/internal/replicate/verdicts?after=%llu&limit=%u",
               scheme, leader_addr, (unsigned long long)verdict_cursor, REPLICA_PAGE);
      if (replica_fetch(r, curl, vurl, &bv, why, sizeof(why)) >= 0)
        (void)replica_apply(r, bv.buf, verdict_job, &verdict_cursor);
      mst_dynbuf_reset(&bv);
    }
    if (n < 0) {
      if (!failing)
        log_warning("replica: cannot copy from %s: %s, will retry", url, why);
      failing = true;
      replica_sleep(r, REPLICA_IDLE_MSEC);
      continue;
    }
    failing = false;
    if (n < REPLICA_PAGE)
      replica_sleep(r, REPLICA_IDLE_MSEC);
  }
  curl_easy_cleanup(curl);
  return NULL;
}

static void replica_free_options(struct aggr_replica *r) {
  free(r->ca_file);
  curl_slist_free_all(r->headers);
}

/* The Authorization header for the token in path. */
static int replica_auth_header(const char *path, struct curl_slist **ret) {
  _cleanup_free_ char *token = NULL, *line = NULL;
  int rc = mst_token_read(path, &token);
  if (rc < 0) {
    log_error("replica: cannot use http_token_file %s: %s", path, strerror(-rc));
    return rc;
  }
  if (asprintf(&line, "Authorization: Bearer %s", token) < 0) {
    line = NULL;
    return -ENOMEM;
  }
  *ret = curl_slist_append(NULL, line);
  memset(line, 0, strlen(line));
  memset(token, 0, strlen(token));
  return *ret ? 0 : -ENOMEM;
}

int aggr_replica_start(struct aggr_writer *w, const struct aggr_replica_options *o,
                       struct aggr_replica **ret) {
  struct aggr_replica *r = calloc(1, sizeof(*r));
  int rc;
  if (!r)
    return -ENOMEM;
  r->writer = w;
  r->https = o->https;
  rc = 0;
  if (o->ca_file && !(r->ca_file = strdup(o->ca_file)))
    rc = -ENOMEM;
  else if (o->token_file)
    rc = replica_auth_header(o->token_file, &r->headers);
  if (rc < 0) {
    replica_free_options(r);
    free(r);
    return rc;
  }
  pthread_mutex_init(&r->lock, NULL);
  pthread_cond_init(&r->cond, NULL);
  rc = pthread_create(&r->thread, NULL, replica_main, r);
  if (rc != 0) {
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    replica_free_options(r);
    free(r);
    return -rc;
  }
  (void)pthread_setname_np(r->thread, "muster-replica"); /* for top -H and perf */
  r->started = true;
  *ret = r;
  return 0;
}

void aggr_replica_follow(struct aggr_replica *r, const char *leader_http, uint64_t epoch) {
  if (!r)
    return;
  pthread_mutex_lock(&r->lock);
  if ((leader_http == NULL) != (r->leader_http == NULL) ||
      (leader_http && strcmp(leader_http, r->leader_http) != 0) || epoch != r->leader_epoch) {
    free(r->leader_http);
    r->leader_http = leader_http ? strdup(leader_http) : NULL;
    r->leader_epoch = epoch;
    pthread_cond_signal(&r->cond);
  }
  pthread_mutex_unlock(&r->lock);
}

void aggr_replica_free(struct aggr_replica *r) {
  if (!r)
    return;
  pthread_mutex_lock(&r->lock);
  r->stop = true;
  pthread_cond_signal(&r->cond);
  pthread_mutex_unlock(&r->lock);
  if (r->started)
    pthread_join(r->thread, NULL);
  pthread_mutex_destroy(&r->lock);
  pthread_cond_destroy(&r->cond);
  free(r->leader_http);
  replica_free_options(r);
  free(r);
}
