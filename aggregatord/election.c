/* Leader election through ZooKeeper and the leader's lease; see election.h
 * for the recipe.
 *
 * DESIGN. libzookeeper-mt runs its own I/O and completion threads. Every
 * watcher and completion here does one thing: it copies what it got into an
 * event, appends it to a queue under a mutex and writes to an eventfd. The
 * loop thread drains the queue and runs the state machine, so no election
 * state is ever touched by two threads. Each request carries the session
 * generation it was sent in; events from an older session (before an
 * expiry forced a new handle) are dropped.
 *
 * Only writes extend the lease (to send time + 2T/3): the ZooKeeper leader
 * checks the session of every write and commits it with a quorum, so a
 * write that succeeds proves the session was alive after it was sent. A
 * read proves nothing: a ZooKeeper server cut off from its quorum goes on
 * answering reads from its own stale state for up to syncLimit ticks, while
 * the quorum expires our session and elects another aggregator (the nemesis
 * found this: with the leader and one ZooKeeper server on the minority
 * side, the deposed leader went on answering as leader for a second after
 * its successor had). So the lease ping rewrites our znode's data. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#include "election.h"
#include "mst/addr.h"
#include "mst/log.h"
#include "mst/str.h"
#include "mst/time.h"

#define REFRESH_USEC    (250 * USEC_PER_MSEC)
#define ELECTION_PREFIX "n_"

enum el_kind {
  EV_SESSION,
  EV_WATCH,
  EV_PARENT,
  EV_CREATED,
  EV_CHILDREN,
  EV_PRED_EXISTS,
  EV_LEADER_DATA,
  EV_PING,
  EV_OP_CREATE, /* the operator znode exists (issue 19) */
  EV_OP_DATA,   /* its document, read with a watch */
  EV_OP_SET,    /* a write of it completed */
};

/* What a request remembers; becomes the event when it completes. */
struct el_event {
  struct el_event *next;
  struct aggr_election *el;
  enum el_kind kind;
  unsigned gen;
  uint64_t sent_usec; /* monotonic */
  int rc;
  int type, state; /* EV_SESSION, EV_WATCH */
  int step;        /* EV_PARENT: which path level */
  char *path;
  char *value;
  int64_t czxid;
  char **children;
  int n_children;
  size_t value_len;
  int64_t version;               /* EV_OP_DATA, EV_OP_SET: the znode's */
  aggr_election_written_fn done; /* EV_OP_SET */
  void *done_userdata;
};

struct aggr_election {
  sd_event *event;
  sd_event_source *efd_source, *ping_timer, *lease_timer;
  int efd;
  pthread_mutex_t lock;
  struct el_event *head, *tail;

  char *hosts, *id, *stream_address, *http_address, *base;
  uint64_t session_timeout_usec;
  aggr_election_changed_fn cb;
  void *userdata;

  zhandle_t *zh;
  _Atomic unsigned gen; /* session generation; written by the loop only */
  bool connected;
  bool creating;
  bool lead_after_ping; /* first in line with no lease: lead once a ping proves it */
  char *my_path;        /* full path of our znode, or NULL */
  int64_t my_czxid;
  char *watched; /* predecessor being watched */

  _Atomic bool leader;
  _Atomic uint64_t lease_until_usec; /* monotonic */
  char *leader_id, *leader_stream, *leader_http;
  uint64_t epoch;

  /* Operator state (issue 19): /muster/<cluster>/operator. */
  char *op_path;
  void (*operator_changed)(struct aggr_election *el, const char *data, size_t len, int64_t version,
                           void *userdata);
};

static FILE *zk_log_stream;

static void event_free(struct el_event *ev) {
  if (!ev)
    return;
  free(ev->path);
  free(ev->value);
  for (int i = 0; i < ev->n_children; i++)
    free(ev->children[i]);
  free(ev->children);
  free(ev);
}

static struct el_event *event_new(struct aggr_election *el, enum el_kind kind) {
  struct el_event *ev = calloc(1, sizeof(*ev));
  if (!ev)
    return NULL;
  ev->el = el;
  ev->kind = kind;
  ev->gen = el->gen;
  ev->sent_usec = mst_now_monotonic_usec();
  return ev;
}

/* Loop thread: an event for a request about to be sent, or NULL (no memory,
 * or no session to send it on). The loop learns of an expiry through the
 * queue, after the client library's own thread: a request sent on a handle
 * that has expired meanwhile is never completed, not even by
 * zookeeper_close(), and the library leaks it with our event. So nothing is
 * sent unless the handle itself says it is connected; what is not sent is
 * sent again by the state machine once a new session is up. */
static struct el_event *request_new(struct aggr_election *el, enum el_kind kind) {
  if (!el->zh || zoo_state(el->zh) != ZOO_CONNECTED_STATE)
    return NULL;
  return event_new(el, kind);
}

/* ZooKeeper threads: hand an event to the loop. */
static void post(struct el_event *ev) {
  struct aggr_election *el = ev->el;
  uint64_t one = 1;
  pthread_mutex_lock(&el->lock);
  ev->next = NULL;
  if (el->tail)
    el->tail->next = ev;
  else
    el->head = ev;
  el->tail = ev;
  pthread_mutex_unlock(&el->lock);
  (void)!write(el->efd, &one, sizeof(one));
}

/* ZooKeeper's log lines go through our logger at debug level: while the
 * servers are away the library complains every few milliseconds. */
static ssize_t zk_log_write(void *cookie, const char *buf, size_t size) {
  int n = (int)size;
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
    n--;
  if (n > 0)
    log_debug("zookeeper: %.*s", n, buf);
  return (ssize_t)size;
}

static void session_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx) {
  struct aggr_election *el = ctx;
  /* Watchers of a closed handle cannot fire after zookeeper_close() joined
   * its threads, so the current generation is the one this event is from. */
  struct el_event *ev = event_new(el, type == ZOO_SESSION_EVENT ? EV_SESSION : EV_WATCH);
  if (!ev)
    return;
  ev->type = type;
  ev->state = state;
  ev->path = path ? strdup(path) : NULL;
  post(ev);
}

static void string_done(int rc, const char *value, const void *data) {
  struct el_event *ev = (struct el_event *)data;
  ev->rc = rc;
  ev->value = value ? strdup(value) : NULL;
  post(ev);
}

static void string_stat_done(int rc, const char *value, const struct Stat *stat, const void *data) {
  struct el_event *ev = (struct el_event *)data;
  ev->rc = rc;
  ev->value = value ? strdup(value) : NULL;
  if (rc == ZOK && stat)
    ev->czxid = stat->czxid;
  post(ev);
}

static void strings_done(int rc, const struct String_vector *sv, const void *data) {
  struct el_event *ev = (struct el_event *)data;
  ev->rc = rc;
  if (rc == ZOK && sv && sv->count > 0) {
    ev->children = calloc((size_t)sv->count, sizeof(char *));
    if (ev->children) {
      for (int i = 0; i < sv->count; i++)
        if ((ev->children[ev->n_children] = strdup(sv->data[i])))
          ev->n_children++;
    } else {
      ev->rc = ZSYSTEMERROR;
    }
  }
  post(ev);
}

static void stat_done(int rc, const struct Stat *stat, const void *data) {
  struct el_event *ev = (struct el_event *)data;
  ev->rc = rc;
  post(ev);
}

static void data_done(int rc, const char *value, int len, const struct Stat *stat,
                      const void *data) {
  struct el_event *ev = (struct el_event *)data;
  ev->rc = rc;
  if (rc == ZOK && value && len > 0) {
    ev->value = malloc((size_t)len + 1);
    if (ev->value) {
      memcpy(ev->value, value, (size_t)len);
      ev->value[len] = 0;
      ev->value_len = (size_t)len;
    } else
      ev->rc = ZSYSTEMERROR;
  }
  if (rc == ZOK && stat) {
    ev->czxid = stat->czxid;
    ev->version = stat->version;
  }
  post(ev);
}

static void set_done(int rc, const struct Stat *stat, const void *data) {
  struct el_event *ev = (struct el_event *)data;
  ev->rc = rc;
  if (rc == ZOK && stat)
    ev->version = stat->version;
  post(ev);
}

static void notify(struct aggr_election *el) {
  if (el->cb)
    el->cb(el, el->userdata);
}

/* Out of memory, a leader field becomes unknown rather than stale. */
static void set_str(char **dst, const char *v) {
  if (mst_str_replace(dst, v) < 0) {
    free(*dst);
    *dst = NULL;
  }
}

static void extend_lease(struct aggr_election *el, uint64_t sent_usec) {
  uint64_t until = sent_usec + el->session_timeout_usec * 2 / 3;
  uint64_t cur = atomic_load(&el->lease_until_usec);
  if (until > cur) {
    atomic_store(&el->lease_until_usec, until);
    if (atomic_load(&el->leader)) {
      sd_event_source_set_time(el->lease_timer, until);
      sd_event_source_set_enabled(el->lease_timer, SD_EVENT_ONESHOT);
    }
  }
}

static void step_down(struct aggr_election *el, const char *why) {
  if (!atomic_load(&el->leader))
    return;
  atomic_store(&el->leader, false);
  sd_event_source_set_enabled(el->lease_timer, SD_EVENT_OFF);
  log_warning("election: stepping down: %s", why);
  set_str(&el->leader_id, NULL);
  set_str(&el->leader_stream, NULL);
  set_str(&el->leader_http, NULL);
  notify(el);
}

static void list_children(struct aggr_election *el);
static void create_node(struct aggr_election *el);
static void send_ping(struct aggr_election *el);

static int zk_connect(struct aggr_election *el) {
  el->gen++;
  el->connected = false;
  el->creating = false;
  el->zh = zookeeper_init(el->hosts, session_watcher, (int)(el->session_timeout_usec / 1000), NULL,
                          el, 0);
  if (!el->zh) {
    int r = -errno;
    log_error("election: cannot create a ZooKeeper handle for '%s': %m", el->hosts);
    return r < 0 ? r : -EINVAL;
  }
  return 0;
}

/* Creates /muster, /muster/<cluster>, .../election, then our znode. */
/* Our znode's data: who we are and where we listen. */
static int znode_data(const struct aggr_election *el, char *buf, size_t size) {
  return snprintf(buf, size, "id=%s\nstream=%s\nhttp=%s\n", el->id, el->stream_address,
                  el->http_address);
}

static void create_step(struct aggr_election *el, int step) {
  struct el_event *ev;
  char path[512];
  const char *p = el->base;
  int depth = 0, rc;

  if (step < 3) {
    /* The prefix of base with step+1 components. */
    for (const char *c = el->base + 1; *c; c++)
      if (*c == '/' && ++depth == step + 1) {
        snprintf(path, sizeof(path), "%.*s", (int)(c - el->base), el->base);
        p = path;
        break;
      }
    if (p == el->base)
      snprintf(path, sizeof(path), "%s", el->base), p = path;
    ev = request_new(el, EV_PARENT);
    if (!ev) {
      el->creating = false; /* the next ping tries again */
      return;
    }
    ev->step = step;
    rc = zoo_acreate(el->zh, p, "", 0, &ZOO_OPEN_ACL_UNSAFE, 0, string_done, ev);
  } else {
    char data[768];
    snprintf(path, sizeof(path), "%s/" ELECTION_PREFIX, el->base);
    znode_data(el, data, sizeof(data));
    ev = request_new(el, EV_CREATED);
    if (!ev) {
      el->creating = false;
      return;
    }
    rc = zoo_acreate2(el->zh, path, data, (int)strlen(data), &ZOO_OPEN_ACL_UNSAFE,
                      ZOO_EPHEMERAL_SEQUENTIAL, string_stat_done, ev);
  }
  if (rc != ZOK) {
    log_warning("election: cannot create %s: %s, will retry", p, zerror(rc));
    event_free(ev);
    el->creating = false;
  }
}

static void create_node(struct aggr_election *el) {
  if (el->creating || el->my_path || !el->connected)
    return;
  el->creating = true;
  create_step(el, 0);
}

/* Lists the candidates, and leaves a watch on the list: any candidate that
 * comes or goes makes every aggregator look again at once, so a follower
 * redirects agents to a new leader as soon as it is elected instead of at
 * its next refresh. There are a handful of aggregators, so this is no herd.
 * (The client library keeps one registration per path and watcher, however
 * often the list is read.) */
static void list_children(struct aggr_election *el) {
  struct el_event *ev;
  if (!el->connected || !el->my_path)
    return;
  ev = request_new(el, EV_CHILDREN);
  if (!ev)
    return;
  if (zoo_awget_children(el->zh, el->base, session_watcher, el, strings_done, ev) != ZOK)
    event_free(ev);
}

static int child_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void on_children(struct aggr_election *el, struct el_event *ev) {
  const char *mine;
  int pos = -1, n = 0;
  char path[512];

  if (ev->rc != ZOK) {
    log_debug("election: listing candidates failed: %s", zerror(ev->rc));
    return;
  }
  if (!el->my_path)
    return;
  mine = strrchr(el->my_path, '/') + 1;
  /* Keep only election nodes, sorted by sequence (zero-padded). */
  for (int i = 0; i < ev->n_children; i++)
    if (strncmp(ev->children[i], ELECTION_PREFIX, strlen(ELECTION_PREFIX)) == 0)
      ev->children[n++] = ev->children[i];
    else
      free(ev->children[i]);
  ev->n_children = n;
  qsort(ev->children, (size_t)n, sizeof(char *), child_cmp);
  for (int i = 0; i < n; i++)
    if (strcmp(ev->children[i], mine) == 0)
      pos = i;

  if (pos < 0) {
    /* Our znode is gone: the session ended under us. Campaign again. */
    log_warning("election: our znode %s vanished; campaigning again", el->my_path);
    free(el->my_path);
    el->my_path = NULL;
    step_down(el, "znode vanished");
    create_node(el);
    return;
  }
  if (pos == 0) {
    if (!atomic_load(&el->leader) &&
        mst_now_monotonic_usec() >= atomic_load(&el->lease_until_usec)) {
      /* A listing is a read: lead only with a lease a write proved. */
      el->lead_after_ping = true;
      send_ping(el);
      return;
    }
    if (!atomic_load(&el->leader)) {
      el->epoch = (uint64_t)el->my_czxid;
      set_str(&el->leader_id, el->id);
      set_str(&el->leader_stream, el->stream_address);
      set_str(&el->leader_http, el->http_address);
      atomic_store(&el->leader, true);
      /* The lease of the last ping or of the create. */
      sd_event_source_set_time(el->lease_timer, atomic_load(&el->lease_until_usec));
      sd_event_source_set_enabled(el->lease_timer, SD_EVENT_ONESHOT);
      log_notice("election: elected leader (epoch %llu, znode %s)", (unsigned long long)el->epoch,
                 el->my_path);
      notify(el);
    }
    return;
  }
  step_down(el, "another candidate is first");

  /* Watch only the predecessor. */
  snprintf(path, sizeof(path), "%s/%s", el->base, ev->children[pos - 1]);
  if (!el->watched || strcmp(el->watched, path) != 0) {
    struct el_event *w = request_new(el, EV_PRED_EXISTS);
    if (w && zoo_awexists(el->zh, path, session_watcher, el, stat_done, w) == ZOK)
      set_str(&el->watched, path);
    else
      event_free(w);
  }
  /* Learn where the leader is. */
  struct el_event *d = request_new(el, EV_LEADER_DATA);
  if (!d)
    return;
  snprintf(path, sizeof(path), "%s/%s", el->base, ev->children[0]);
  d->path = strdup(path);
  if (zoo_aget(el->zh, path, 0, data_done, d) != ZOK)
    event_free(d);
}

static void on_leader_data(struct aggr_election *el, struct el_event *ev) {
  char *id = NULL, *stream = NULL, *http = NULL;
  if (ev->rc != ZOK || !ev->value || atomic_load(&el->leader))
    return;
  for (char *save = NULL, *line = strtok_r(ev->value, "\n", &save); line;
       line = strtok_r(NULL, "\n", &save)) {
    if (strncmp(line, "id=", 3) == 0)
      id = line + 3;
    else if (strncmp(line, "stream=", 7) == 0)
      stream = line + 7;
    else if (strncmp(line, "http=", 5) == 0)
      http = line + 5;
  }
  if ((uint64_t)ev->czxid != el->epoch) {
    el->epoch = (uint64_t)ev->czxid;
    set_str(&el->leader_id, NULL); /* a new term, even if the same id */
  }
  if ((el->leader_id && id && strcmp(el->leader_id, id) == 0) &&
      (el->leader_http && http && strcmp(el->leader_http, http) == 0) &&
      (el->leader_stream && stream && strcmp(el->leader_stream, stream) == 0))
    return;
  set_str(&el->leader_id, id);
  set_str(&el->leader_stream, stream);
  set_str(&el->leader_http, http);
  log_info("election: following leader %s (stream %s, http %s)", id ? id : "?",
           stream ? stream : "?", http ? http : "?");
  notify(el);
}

/* --- operator state (issue 19) ----------------------------------------------
 *
 * One znode beside the election's, created empty by the first aggregator to
 * get there, read with a watch by every one: each change reaches every
 * aggregator, so a new leader has the state its predecessor wrote. */

static void op_read(struct aggr_election *el) {
  struct el_event *ev;
  if (!el->operator_changed || !el->connected || !(ev = request_new(el, EV_OP_DATA)))
    return;
  if (zoo_awget(el->zh, el->op_path, session_watcher, el, data_done, ev) != ZOK)
    event_free(ev);
}

static void op_create(struct aggr_election *el) {
  struct el_event *ev;
  if (!el->operator_changed || !(ev = request_new(el, EV_OP_CREATE)))
    return;
  if (zoo_acreate(el->zh, el->op_path, "", 0, &ZOO_OPEN_ACL_UNSAFE, 0, string_done, ev) != ZOK)
    event_free(ev);
}

static void op_data(struct aggr_election *el, struct el_event *ev) {
  if (ev->rc == ZNONODE) {
    op_create(el);
    return;
  }
  if (ev->rc != ZOK) {
    log_warning("election: cannot read %s: %s, will retry", el->op_path, zerror(ev->rc));
    return;
  }
  extend_lease(el, ev->sent_usec);
  el->operator_changed(el, ev->value, ev->value_len, ev->version, el->userdata);
}

static void op_set_done(struct aggr_election *el, struct el_event *ev) {
  int r = ev->rc == ZOK ? 0 : ev->rc == ZBADVERSION ? -ESTALE : ev->rc == ZNONODE ? -ESTALE : -EIO;
  if (ev->rc == ZOK)
    extend_lease(el, ev->sent_usec);
  else
    log_warning("election: cannot write %s: %s", el->op_path, zerror(ev->rc));
  ev->done(r, ev->version, ev->done_userdata);
}

int aggr_election_operator_write(struct aggr_election *el, const char *data, size_t len,
                                 int64_t version, aggr_election_written_fn done, void *userdata) {
  if (len > INT32_MAX)
    return -E2BIG;
  struct el_event *ev = request_new(el, EV_OP_SET);
  if (!ev)
    return el->zh && zoo_state(el->zh) == ZOO_CONNECTED_STATE ? -ENOMEM : -ENOTCONN;
  ev->done = done;
  ev->done_userdata = userdata;
  int rc = zoo_aset(el->zh, el->op_path, data, (int)len, (int)version, set_done, ev);
  if (rc != ZOK) {
    log_warning("election: cannot write %s: %s", el->op_path, zerror(rc));
    event_free(ev);
    return -ENOTCONN;
  }
  return 0;
}

static void handle(struct aggr_election *el, struct el_event *ev) {
  if (ev->gen != el->gen) {
    /* From a session we have abandoned; a write's caller hears of it. */
    if (ev->kind == EV_OP_SET)
      ev->done(-EIO, -1, ev->done_userdata);
    return;
  }

  switch (ev->kind) {
  case EV_SESSION:
    if (ev->state == ZOO_CONNECTED_STATE) {
      el->connected = true;
      log_info("election: connected to ZooKeeper");
      if (el->my_path) {
        list_children(el);
        op_read(el);
      } else
        create_node(el);
    } else if (ev->state == ZOO_EXPIRED_SESSION_STATE) {
      log_warning("election: ZooKeeper session expired; starting a new one");
      step_down(el, "session expired");
      free(el->my_path);
      el->my_path = NULL;
      free(el->watched);
      el->watched = NULL;
      zookeeper_close(el->zh);
      el->zh = NULL;
      (void)zk_connect(el);
    } else {
      if (el->connected)
        log_warning("election: lost the ZooKeeper connection; the lease runs out in %llu ms",
                    (unsigned long long)({
                      uint64_t now = mst_now_monotonic_usec(),
                               until = atomic_load(&el->lease_until_usec);
                      until > now ? (until - now) / 1000 : 0;
                    }));
      el->connected = false;
    }
    break;
  case EV_WATCH:
    if (ev->path && el->op_path && strcmp(ev->path, el->op_path) == 0) {
      op_read(el);
      break;
    }
    if (ev->path && el->watched && strcmp(ev->path, el->watched) == 0) {
      free(el->watched);
      el->watched = NULL;
    }
    list_children(el);
    break;
  case EV_PARENT:
    if (ev->rc != ZOK && ev->rc != ZNODEEXISTS) {
      log_warning("election: cannot create the election path: %s, will retry", zerror(ev->rc));
      el->creating = false;
      break;
    }
    create_step(el, ev->step + 1);
    break;
  case EV_CREATED:
    el->creating = false;
    if (ev->rc != ZOK) {
      log_warning("election: cannot create our znode: %s, will retry", zerror(ev->rc));
      break;
    }
    extend_lease(el, ev->sent_usec);
    free(el->my_path);
    el->my_path = TAKE_PTR(ev->value);
    el->my_czxid = ev->czxid;
    log_info("election: candidate %s", el->my_path);
    list_children(el);
    op_create(el);
    break;
  case EV_CHILDREN:
    on_children(el, ev);
    break;
  case EV_PRED_EXISTS:
    if (ev->rc == ZNONODE) {
      free(el->watched);
      el->watched = NULL;
      list_children(el);
    }
    break;
  case EV_LEADER_DATA:
    on_leader_data(el, ev);
    break;
  case EV_OP_CREATE:
    if (ev->rc == ZOK || ev->rc == ZNODEEXISTS)
      op_read(el);
    else
      log_warning("election: cannot create %s: %s, will retry", el->op_path, zerror(ev->rc));
    break;
  case EV_OP_DATA:
    op_data(el, ev);
    break;
  case EV_OP_SET:
    op_set_done(el, ev);
    break;
  case EV_PING:
    if (ev->rc == ZOK) {
      extend_lease(el, ev->sent_usec);
      if (el->lead_after_ping) {
        el->lead_after_ping = false;
        list_children(el);
      }
    } else if (ev->rc == ZNONODE)
      list_children(el);
    break;
  }
}

static int on_efd(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
  struct aggr_election *el = userdata;
  struct el_event *list;
  uint64_t count;

  (void)!read(fd, &count, sizeof(count));
  pthread_mutex_lock(&el->lock);
  list = el->head;
  el->head = el->tail = NULL;
  pthread_mutex_unlock(&el->lock);
  while (list) {
    struct el_event *next = list->next;
    handle(el, list);
    event_free(list);
    list = next;
  }
  return 0;
}

/* The lease ping: our znode's data written again (a write, see DESIGN). */
static void send_ping(struct aggr_election *el) {
  char data[768];
  int len = znode_data(el, data, sizeof(data));
  struct el_event *ev = request_new(el, EV_PING);
  if (ev && zoo_aset(el->zh, el->my_path, data, MST_MIN(len, (int)sizeof(data) - 1), -1, stat_done,
                     ev) != ZOK)
    event_free(ev);
}

/* Every T/3: the lease ping on our own znode; and, every second, a fresh
 * look at the candidates so followers know where the leader is. */
static int on_ping(sd_event_source *s, uint64_t usec, void *userdata) {
  struct aggr_election *el = userdata;
  uint64_t period = MST_MIN(el->session_timeout_usec / 3, REFRESH_USEC);
  static uint64_t last_refresh;

  if (el->connected && el->my_path) {
    send_ping(el);
    if (!atomic_load(&el->leader) && usec - last_refresh >= REFRESH_USEC) {
      last_refresh = usec;
      list_children(el);
    }
  } else if (el->connected) {
    create_node(el);
  }
  sd_event_source_set_time(s, usec + period);
  sd_event_source_set_enabled(s, SD_EVENT_ON);
  return 0;
}

static int on_lease(sd_event_source *s, uint64_t usec, void *userdata) {
  struct aggr_election *el = userdata;
  uint64_t until = atomic_load(&el->lease_until_usec);
  if (!atomic_load(&el->leader))
    return 0;
  if (mst_now_monotonic_usec() >= until) {
    step_down(el, "the lease ran out (no ZooKeeper answer within 2/3 of the session timeout)");
    return 0;
  }
  sd_event_source_set_time(s, until);
  sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
  return 0;
}

int aggr_election_start(sd_event *e, const struct aggr_election_config *cfg,
                        aggr_election_changed_fn cb, void *userdata, struct aggr_election **ret) {
  struct aggr_election *el = calloc(1, sizeof(*el));
  int r;

  if (!el)
    return -ENOMEM;
  el->event = sd_event_ref(e);
  el->efd = -1;
  pthread_mutex_init(&el->lock, NULL);
  /* In libzookeeper's form ([v6]:port without brackets). The config check
   * refused a bad list, so only a lack of memory leaves el->hosts NULL. */
  char err[256];
  if (mst_addr_zk_hosts(cfg->hosts, &el->hosts, err, sizeof(err)) < 0)
    el->hosts = NULL;
  el->id = strdup(cfg->id);
  el->stream_address = strdup(cfg->stream_address);
  el->http_address = strdup(cfg->http_address);
  el->session_timeout_usec = cfg->session_timeout_usec;
  el->cb = cb;
  el->userdata = userdata;
  if (asprintf(&el->base, "/muster/%s/election", cfg->cluster) < 0)
    el->base = NULL;
  if (asprintf(&el->op_path, "/muster/%s/operator", cfg->cluster) < 0)
    el->op_path = NULL;
  el->operator_changed = cfg->operator_changed;
  if (!el->op_path || !el->hosts || !el->id || !el->stream_address || !el->http_address ||
      !el->base) {
    r = -ENOMEM;
    goto fail;
  }
  el->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (el->efd < 0) {
    r = -errno;
    goto fail;
  }
  r = sd_event_add_io(e, &el->efd_source, el->efd, EPOLLIN, on_efd, el);
  if (r < 0)
    goto fail;
  r = sd_event_add_time_relative(e, &el->ping_timer, CLOCK_MONOTONIC, 0, 0, on_ping, el);
  if (r < 0)
    goto fail;
  /* Accuracy 1 us: sd-event's default (0) lets a timer fire up to 250 ms
   * late, and a leader must step down when its lease ends, not after. */
  r = sd_event_add_time(e, &el->lease_timer, CLOCK_MONOTONIC, UINT64_MAX, 1, on_lease, el);
  if (r < 0)
    goto fail;
  sd_event_source_set_enabled(el->lease_timer, SD_EVENT_OFF);

  if (!zk_log_stream) {
    static const cookie_io_functions_t io = {.write = zk_log_write};
    zk_log_stream = fopencookie(NULL, "w", io);
    if (zk_log_stream) {
      setvbuf(zk_log_stream, NULL, _IOLBF, 0);
      zoo_set_log_stream(zk_log_stream);
    }
  }
  zoo_set_debug_level(mst_log_max_level >= MST_LOG_DEBUG ? ZOO_LOG_LEVEL_WARN
                                                         : ZOO_LOG_LEVEL_ERROR);
  r = zk_connect(el);
  if (r < 0)
    goto fail;
  log_info("election: campaigning under %s at %s (session timeout %llu ms)", el->base, el->hosts,
           (unsigned long long)(el->session_timeout_usec / 1000));
  *ret = el;
  return 0;

fail:
  el->cb = NULL;
  aggr_election_free(el);
  return r;
}

void aggr_election_free(struct aggr_election *el) {
  if (!el)
    return;
  el->cb = NULL;
  if (el->zh)
    zookeeper_close(el->zh); /* deletes our ephemeral znode at once */
  /* Completions of the closed handle may still have been queued; a
   * write's caller hears of it. */
  while (el->head) {
    struct el_event *next = el->head->next;
    if (el->head->kind == EV_OP_SET)
      el->head->done(-EIO, -1, el->head->done_userdata);
    event_free(el->head);
    el->head = next;
  }
  sd_event_source_disable_unref(el->efd_source);
  sd_event_source_disable_unref(el->ping_timer);
  sd_event_source_disable_unref(el->lease_timer);
  sd_event_unref(el->event);
  if (el->efd >= 0)
    close(el->efd);
  pthread_mutex_destroy(&el->lock);
  free(el->hosts);
  free(el->id);
  free(el->stream_address);
  free(el->http_address);
  free(el->base);
  free(el->op_path);
  free(el->my_path);
  free(el->watched);
  free(el->leader_id);
  free(el->leader_stream);
  free(el->leader_http);
  free(el);
}

bool aggr_election_is_leader(const struct aggr_election *el) {
  return !el || atomic_load(&el->leader);
}

const char *aggr_election_leader_id(const struct aggr_election *el) {
  return el->leader_id;
}

const char *aggr_election_leader_stream(const struct aggr_election *el) {
  return el->leader_stream;
}

const char *aggr_election_leader_http(const struct aggr_election *el) {
  return el->leader_http;
}

uint64_t aggr_election_epoch(const struct aggr_election *el) {
  return el->epoch;
}

bool aggr_election_lease_valid(const struct aggr_election *el) {
  if (!el)
    return true;
  return atomic_load(&el->leader) && mst_now_monotonic_usec() < atomic_load(&el->lease_until_usec);
}
