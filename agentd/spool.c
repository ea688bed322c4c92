/* The agent's spool (see spool.h): the SQLite schema as a C array of
 * migrations, the identity and marks kept in `meta`, the one transaction that
 * commits a state change together with its component row, the replay reads
 * of the stream, and the housekeeping timers (acked_seq persistence, pruning).
 *
 * The schema is read by the system tests, so its tables and columns are part
 * of the contract. `meta` also holds 'last_seq': the highest seq ever
 * assigned, so that pruning every row cannot make a restart reuse numbers.
 *
 * An exclusive flock() on the database file keeps a second agent away from a
 * spool in use. It is independent of SQLite's own fcntl() locks, and the
 * descriptor holding it is closed only after SQLite's connection, because
 * closing any descriptor of a file drops the process's fcntl() locks on it. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>

#include "mst/hash.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/store.h"
#include "mst/time.h"
#include "spool.h"
#include "util.h"

#define SPOOL_ACK_FLUSH_DELAY_USEC    (250 * USEC_PER_MSEC)
#define SPOOL_PRUNE_BATCH             500
#define SPOOL_PRUNE_MAX_INTERVAL_USEC (3600 * USEC_PER_SEC)
#define SPOOL_PRUNE_MIN_INTERVAL_USEC (1 * USEC_PER_SEC)
#define SPOOL_PRUNE_AGAIN_USEC        (10 * USEC_PER_MSEC)

static const struct mst_migration spool_migrations[] = {
    {
        "0001_spool.sql",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);\n"
        "CREATE TABLE changes (seq INTEGER PRIMARY KEY, component TEXT NOT NULL,"
        " check_kind TEXT NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL,"
        " at_ms INTEGER NOT NULL, output TEXT NOT NULL, boot_id TEXT NOT NULL,"
        " health INTEGER NOT NULL, rise INTEGER NOT NULL, fall INTEGER NOT NULL);\n"
        "CREATE TABLE components (name TEXT PRIMARY KEY, check_kind TEXT, state TEXT,"
        " since_ms INTEGER, output TEXT, health INTEGER, ever_healthy_boot TEXT);\n"
        "CREATE TABLE boots (boot_id TEXT PRIMARY KEY, first_seen_ms INTEGER NOT NULL);\n",
    },
};

struct agent_spool {
  char *path;
  sqlite3 *db;
  int lock_fd;
  char spool_id[33];
  uint64_t last_seq;
  uint64_t acked_seq;           /* as acknowledged (memory) */
  uint64_t acked_seq_persisted; /* as in meta */
  bool created;                 /* this open made the spool id */

  sqlite3_stmt *insert_change;
  sqlite3_stmt *put_component;
  sqlite3_stmt *set_meta;
  sqlite3_stmt *select_changes;

  sd_event_source *ack_timer;
  sd_event_source *prune_timer;
  uint64_t retention_usec;
  uint64_t prune_interval_usec;

  /* SQLite's text for the last write that failed ("database or disk is
   * full"): what the agent's fault names (agent_spool_write_error()). */
  char write_error[128];
};

/* Keeps SQLite's text for the write that just failed, before a rollback
 * replaces it. */
static void spool_note_write_error(struct agent_spool *s) {
  snprintf(s->write_error, sizeof(s->write_error), "%s", sqlite3_errmsg(s->db));
}

static int spool_prepare(struct agent_spool *s, const char *sql, sqlite3_stmt **ret) {
  int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, ret, NULL);

  if (rc != SQLITE_OK) {
    log_error("spool %s: preparing statement: %s", s->path, sqlite3_errmsg(s->db));
    return mst_store_errno(rc);
  }
  return 0;
}

/* Steps a statement that returns no rows and resets it. */
static int spool_step_done(struct agent_spool *s, sqlite3_stmt *stmt, const char *what) {
  int rc = sqlite3_step(stmt);

  if (rc != SQLITE_DONE) {
    log_error("spool %s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
    spool_note_write_error(s);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return mst_store_errno(rc);
  }
  sqlite3_reset(stmt);
  sqlite3_clear_bindings(stmt);
  return 0;
}

static int spool_begin(struct agent_spool *s) {
  int r = mst_store_exec(s->db, "BEGIN IMMEDIATE");

  if (r < 0)
    spool_note_write_error(s);
  return r;
}

static int spool_commit(struct agent_spool *s) {
  int r = mst_store_exec(s->db, "COMMIT");

  if (r < 0)
    spool_note_write_error(s);
  if (r < 0 && !sqlite3_get_autocommit(s->db))
    (void)mst_store_exec(s->db, "ROLLBACK");
  return r;
}

static void spool_rollback(struct agent_spool *s) {
  if (!sqlite3_get_autocommit(s->db))
    (void)mst_store_exec(s->db, "ROLLBACK");
}

static int spool_set_meta(struct agent_spool *s, const char *key, const char *value) {
  sqlite3_bind_text(s->set_meta, 1, key, -1, SQLITE_STATIC);
  sqlite3_bind_text(s->set_meta, 2, value, -1, SQLITE_STATIC);
  return spool_step_done(s, s->set_meta, "writing meta");
}

static int spool_set_meta_u64(struct agent_spool *s, const char *key, uint64_t value) {
  char buf[32];

  snprintf(buf, sizeof(buf), "%" PRIu64, value);
  return spool_set_meta(s, key, buf);
}

/* Reads meta[key] into buf. Returns 1 when present, 0 when absent, -errno. */
static int spool_get_meta(struct agent_spool *s, const char *key, char *buf, size_t size) {
  _cleanup_stmt_ sqlite3_stmt *stmt = NULL;
  int rc;

  rc = sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key = ?", -1, &stmt, NULL);
  if (rc != SQLITE_OK) {
    log_error("spool %s: reading meta: %s", s->path, sqlite3_errmsg(s->db));
    return mst_store_errno(rc);
  }
  sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
  rc = sqlite3_step(stmt);
  if (rc == SQLITE_DONE)
    return 0;
  if (rc != SQLITE_ROW) {
    log_error("spool %s: reading meta: %s", s->path, sqlite3_errmsg(s->db));
    return mst_store_errno(rc);
  }
  const unsigned char *v = sqlite3_column_text(stmt, 0);
  snprintf(buf, size, "%s", v ? (const char *)v : "");
  return 1;
}

static int parse_u64(const char *s, uint64_t *ret) {
  char *end;

  if (!s || *s < '0' || *s > '9')
    return -EINVAL;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0')
    return -EINVAL;
  *ret = v;
  return 0;
}

static int spool_get_meta_u64(struct agent_spool *s, const char *key, uint64_t *ret) {
  char buf[64];
  int r = spool_get_meta(s, key, buf, sizeof(buf));

  if (r <= 0) {
    if (r == 0)
      *ret = 0;
    return r;
  }
  if (parse_u64(buf, ret) < 0) {
    log_error("spool %s: meta '%s' is not a number: '%s'", s->path, key, buf);
    return -EBADMSG;
  }
  return 1;
}

/* How many rows the changes table has (capped at one: is it empty?). */
static int spool_has_changes(struct agent_spool *s) {
  _cleanup_stmt_ sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(s->db, "SELECT EXISTS (SELECT 1 FROM changes)", -1, &stmt, NULL);
  if (rc != SQLITE_OK || (rc = sqlite3_step(stmt)) != SQLITE_ROW) {
    log_error("spool %s: reading the changes: %s", s->path, sqlite3_errmsg(s->db));
    return mst_store_errno(rc);
  }
  return sqlite3_column_int(stmt, 0);
}

static int spool_new_id(struct agent_spool *s, char id[static 33]) {
  uint8_t raw[16];
  int r = agent_random_bytes(raw, sizeof(raw));
  if (r < 0) {
    log_error("spool %s: cannot get random bytes for the spool id: %s", s->path, strerror(-r));
    return r;
  }
  for (size_t i = 0; i < sizeof(raw); i++)
    snprintf(id + 2 * i, 3, "%02x", raw[i]);
  return 0;
}

static bool spool_id_valid(const char *id) {
  size_t n = strlen(id);

  if (n != 32)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!strchr("0123456789abcdef", id[i]))
      return false;
  return true;
}

/* Creates spool_id on the spool's first open and loads the marks. A spool
 * with content but no valid spool_id is corrupted: its rows must not go out
 * again under a new id as if none had been acknowledged (they would be
 * stored twice). When acked_seq says what was acknowledged, *ret_lost_id is
 * set and the caller moves the rest to a new id (spool_roll()); without it,
 * the spool is refused. */
static int spool_load_meta(struct agent_spool *s, bool *ret_lost_id) {
  uint64_t max_seq = 0, meta_last = 0;
  int r, acked;

  r = spool_begin(s);
  if (r < 0)
    return r;

  r = spool_get_meta(s, "spool_id", s->spool_id, sizeof(s->spool_id));
  if (r < 0)
    goto fail;
  if (r == 0 || !spool_id_valid(s->spool_id)) {
    bool present = r > 0;
    int has = spool_has_changes(s);
    if (has < 0) {
      r = has;
      goto fail;
    }
    acked = spool_get_meta_u64(s, "acked_seq", &s->acked_seq);
    if (acked < 0) {
      r = acked;
      goto fail;
    }
    r = spool_get_meta_u64(s, "last_seq", &meta_last);
    if (r < 0)
      goto fail;
    if (has || acked > 0 || r > 0) {
      /* Not a new spool: what is left of a corrupted one. */
      if (present)
        log_error("spool %s is corrupted: meta 'spool_id' is not 32 hex digits: '%.64s'", s->path,
                  s->spool_id);
      else
        log_error("spool %s is corrupted: it holds changes but meta 'spool_id' is missing",
                  s->path);
      if (acked <= 0) {
        log_error("spool %s: meta 'acked_seq' is missing too, so which changes the aggregator "
                  "holds is unknown; refusing to resend or drop them. Move the file aside to "
                  "start a new spool (docs/runbook.md)",
                  s->path);
        r = -EBADMSG;
        goto fail;
      }
      s->spool_id[0] = '\0';
      *ret_lost_id = true;
    } else {
      r = spool_new_id(s, s->spool_id);
      if (r < 0)
        goto fail;
      r = spool_set_meta(s, "spool_id", s->spool_id);
      if (r < 0)
        goto fail;
      r = spool_set_meta(s, "acked_seq", "0");
      if (r < 0)
        goto fail;
      log_info("spool %s: created with spool id %s", s->path, s->spool_id);
      s->created = true;
    }
  }

  r = spool_get_meta_u64(s, "acked_seq", &s->acked_seq);
  if (r < 0)
    goto fail;
  r = spool_get_meta_u64(s, "last_seq", &meta_last);
  if (r < 0)
    goto fail;

  {
    _cleanup_stmt_ sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(s->db, "SELECT MAX(seq) FROM changes", -1, &stmt, NULL);
    if (rc != SQLITE_OK || (rc = sqlite3_step(stmt)) != SQLITE_ROW) {
      log_error("spool %s: reading the last seq: %s", s->path, sqlite3_errmsg(s->db));
      r = mst_store_errno(rc);
      goto fail;
    }
    int64_t v = sqlite3_column_int64(stmt, 0);
    max_seq = v > 0 ? (uint64_t)v : 0;
  }
  s->last_seq = MST_MAX(max_seq, meta_last);

  if (s->acked_seq > s->last_seq) {
    log_warning("spool %s: acked_seq %" PRIu64 " is above the last seq %" PRIu64 ", lowering it",
                s->path, s->acked_seq, s->last_seq);
    s->acked_seq = s->last_seq;
    r = spool_set_meta_u64(s, "acked_seq", s->acked_seq);
    if (r < 0)
      goto fail;
  }
  s->acked_seq_persisted = s->acked_seq;

  return spool_commit(s);

fail:
  spool_rollback(s);
  return r;
}

static int spool_lock(struct agent_spool *s) {
  _cleanup_close_ int fd = -1;

  fd = open(s->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
  if (fd < 0) {
    log_error("spool %s: cannot open: %m", s->path);
    return -errno;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    int r = -errno;
    if (r == -EWOULDBLOCK)
      log_error("spool %s is in use by another process (is another muster-agentd running?)",
                s->path);
    else
      log_error("spool %s: cannot lock: %m", s->path);
    return r;
  }
  s->lock_fd = TAKE_FD(fd);
  return 0;
}

int agent_spool_open(const char *path, struct agent_spool **ret) {
  struct agent_spool *s;
  int r;

  s = calloc(1, sizeof(*s));
  if (!s)
    return -ENOMEM;
  s->lock_fd = -1;
  s->path = strdup(path);
  if (!s->path) {
    r = -ENOMEM;
    goto fail;
  }

  r = spool_lock(s);
  if (r < 0)
    goto fail;
  /* Before SQLite initializes (it is the agent's only user): no bulk page
   * cache allocation at open. By default each connection takes 20 pages
   * (about 90 KiB) at once, more than the idle spool ever holds; pages now
   * come one by one, up to cache_size below. Refused, harmlessly, when
   * SQLite is already initialized. */
  (void)sqlite3_config(SQLITE_CONFIG_PAGECACHE, NULL, 0, 0);
  r = mst_store_open(path, 0, &s->db);
  if (r < 0)
    goto fail;
  /* The spool is small and read in order: a small page cache will do
   * (SQLite's default grows to 2 MiB). */
  r = mst_store_exec(s->db, "PRAGMA cache_size=-128");
  if (r < 0)
    goto fail;
  r = mst_store_migrate(s->db, spool_migrations, ELEMENTSOF(spool_migrations));
  if (r < 0)
    goto fail;

  /* The statements of every change, ack and replay, prepared once. */
  const struct {
    const char *sql;
    sqlite3_stmt **stmt;
  } statements[] = {
      {"INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", &s->set_meta},
      {"INSERT INTO changes (seq, component, check_kind, from_state, to_state, at_ms, output,"
       " boot_id, health, rise, fall) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
       &s->insert_change},
      {"INSERT OR REPLACE INTO components (name, check_kind, state, since_ms, output, health,"
       " ever_healthy_boot) VALUES (?,?,?,?,?,?,?)",
       &s->put_component},
      {"SELECT seq, component, check_kind, from_state, to_state, at_ms, output, boot_id, health,"
       " rise, fall FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
       &s->select_changes},
  };
  for (size_t i = 0; i < ELEMENTSOF(statements); i++) {
    r = spool_prepare(s, statements[i].sql, statements[i].stmt);
    if (r < 0)
      goto fail;
  }

  bool lost_id = false;
  r = spool_load_meta(s, &lost_id);
  if (r < 0)
    goto fail;
  if (lost_id) {
    r = agent_spool_roll(s, "meta 'spool_id' lost (corrupted file)");
    if (r < 0)
      goto fail;
  }

  *ret = s;
  return 0;

fail:
  agent_spool_free(s);
  return r;
}

static int spool_flush_ack(struct agent_spool *s) {
  int r;

  if (s->acked_seq == s->acked_seq_persisted)
    return 0;
  r = spool_set_meta_u64(s, "acked_seq", s->acked_seq);
  if (r < 0)
    return r;
  log_debug("spool: acked_seq %" PRIu64 " persisted", s->acked_seq);
  s->acked_seq_persisted = s->acked_seq;
  return 0;
}

void agent_spool_free(struct agent_spool *s) {
  if (!s)
    return;
  s->ack_timer = sd_event_source_disable_unref(s->ack_timer);
  s->prune_timer = sd_event_source_disable_unref(s->prune_timer);
  if (s->db && s->set_meta)
    (void)spool_flush_ack(s);
  sqlite3_finalize(s->insert_change);
  sqlite3_finalize(s->put_component);
  sqlite3_finalize(s->set_meta);
  sqlite3_finalize(s->select_changes);
  if (s->db)
    sqlite3_close_v2(s->db);
  /* Only now: see the comment at the top of the file. */
  if (s->lock_fd >= 0)
    close(s->lock_fd);
  free(s->path);
  free(s);
}

const char *agent_spool_path(const struct agent_spool *s) {
  return s->path;
}

const char *agent_spool_write_error(const struct agent_spool *s) {
  return s->write_error;
}

int agent_spool_check_writable(struct agent_spool *s) {
  char buf[32];
  int r;

  /* The smallest real commit: last_seq rewritten with its own value still
   * needs a page in the WAL and a sync, like a change. */
  snprintf(buf, sizeof(buf), "%" PRIu64, s->last_seq);
  r = spool_begin(s);
  if (r < 0)
    return r;
  r = spool_set_meta(s, "last_seq", buf);
  if (r < 0) {
    spool_rollback(s);
    return r;
  }
  return spool_commit(s);
}

const char *agent_spool_id(const struct agent_spool *s) {
  return s->spool_id;
}

uint64_t agent_spool_last_seq(const struct agent_spool *s) {
  return s->last_seq;
}

uint64_t agent_spool_acked_seq(const struct agent_spool *s) {
  return s->acked_seq;
}

bool agent_spool_created(const struct agent_spool *s) {
  return s->created;
}

int agent_spool_startup_load(struct agent_spool *s, struct agent_spool_startup *ret) {
  struct agent_spool_startup st = {};
  char start[32];
  int r;

  r = spool_get_meta(s, "startup_id", st.id, sizeof(st.id));
  if (r <= 0)
    return r;
  if ((r = spool_get_meta(s, "startup_host_boot", st.host_boot, sizeof(st.host_boot))) < 0 ||
      (r = spool_get_meta(s, "startup_cause", st.cause, sizeof(st.cause))) < 0 ||
      (r = spool_get_meta(s, "startup_start_ms", start, sizeof(start))) < 0 ||
      (r = spool_get_meta_u64(s, "startup_number", &st.number)) < 0)
    return r;
  uint64_t ms;
  if (!st.id[0] || !st.host_boot[0] || parse_u64(start, &ms) < 0 || ms > INT64_MAX) {
    log_warning("spool %s: the recorded startup is incomplete, ignoring it", s->path);
    return 0;
  }
  st.start_ms = (int64_t)ms;
  *ret = st;
  return 1;
}

int agent_spool_startup_save(struct agent_spool *s, const struct agent_spool_startup *st) {
  int r;

  r = spool_begin(s);
  if (r < 0)
    return r;
  if ((r = spool_set_meta(s, "startup_id", st->id)) < 0 ||
      (r = spool_set_meta(s, "startup_host_boot", st->host_boot)) < 0 ||
      (r = spool_set_meta(s, "startup_cause", st->cause)) < 0 ||
      (r = spool_set_meta_u64(s, "startup_start_ms", (uint64_t)MST_MAX(st->start_ms, 0))) < 0 ||
      (r = spool_set_meta_u64(s, "startup_number", st->number)) < 0) {
    spool_rollback(s);
    return r;
  }
  return spool_commit(s);
}

int agent_spool_note_boot(struct agent_spool *s, const char *boot_id, int64_t now_ms,
                          int64_t *ret_first_seen_ms, bool *ret_new) {
  _cleanup_stmt_ sqlite3_stmt *sel = NULL, *ins = NULL;
  int rc;

  rc = sqlite3_prepare_v2(s->db, "SELECT first_seen_ms FROM boots WHERE boot_id = ?", -1, &sel,
                          NULL);
  if (rc != SQLITE_OK)
    goto fail;
  sqlite3_bind_text(sel, 1, boot_id, -1, SQLITE_STATIC);
  rc = sqlite3_step(sel);
  if (rc == SQLITE_ROW) {
    *ret_first_seen_ms = sqlite3_column_int64(sel, 0);
    *ret_new = false;
    return 0;
  }
  if (rc != SQLITE_DONE)
    goto fail;

  rc = sqlite3_prepare_v2(s->db, "INSERT INTO boots (boot_id, first_seen_ms) VALUES (?, ?)", -1,
                          &ins, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  sqlite3_bind_text(ins, 1, boot_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(ins, 2, now_ms);
  rc = sqlite3_step(ins);
  if (rc != SQLITE_DONE)
    goto fail;
  *ret_first_seen_ms = now_ms;
  *ret_new = true;
  return 0;

fail:
  log_error("spool %s: recording boot %s: %s", s->path, boot_id, sqlite3_errmsg(s->db));
  return mst_store_errno(rc);
}

int agent_spool_load_components(struct agent_spool *s, agent_spool_component_cb cb,
                                void *userdata) {
  _cleanup_stmt_ sqlite3_stmt *stmt = NULL;
  int rc, r;

  rc = sqlite3_prepare_v2(s->db,
                          "SELECT name, check_kind, state, since_ms, output, health,"
                          " ever_healthy_boot FROM components ORDER BY name",
                          -1, &stmt, NULL);
  if (rc != SQLITE_OK)
    goto fail;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    int64_t health = sqlite3_column_int64(stmt, 5);
    struct agent_spool_component row = {
        .name = (const char *)sqlite3_column_text(stmt, 0),
        .check_kind = (const char *)sqlite3_column_text(stmt, 1),
        .state = (const char *)sqlite3_column_text(stmt, 2),
        .since_ms = sqlite3_column_int64(stmt, 3),
        .output = (const char *)sqlite3_column_text(stmt, 4),
        .health = health < 0     ? 0
                  : health > 255 ? 255
                                 : (unsigned)health,
        .ever_healthy_boot = (const char *)sqlite3_column_text(stmt, 6),
    };
    if (!row.name)
      continue;
    r = cb(userdata, &row);
    if (r < 0)
      return r;
  }
  if (rc != SQLITE_DONE)
    goto fail;
  return 0;

fail:
  log_error("spool %s: reading components: %s", s->path, sqlite3_errmsg(s->db));
  return mst_store_errno(rc);
}

static void bind_component(sqlite3_stmt *stmt, const struct agent_spool_component *row,
                           enum mst_check_kind check) {
  sqlite3_bind_text(stmt, 1, row->name, -1, SQLITE_STATIC);
  sqlite3_bind_text(stmt, 2, mst_check_kind_to_string(check), -1, SQLITE_STATIC);
  sqlite3_bind_text(stmt, 3, row->state, -1, SQLITE_STATIC);
  sqlite3_bind_int64(stmt, 4, row->since_ms);
  sqlite3_bind_text(stmt, 5, row->output ? row->output : "", -1, SQLITE_STATIC);
  sqlite3_bind_int64(stmt, 6, row->health);
  if (row->ever_healthy_boot)
    sqlite3_bind_text(stmt, 7, row->ever_healthy_boot, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(stmt, 7);
}

int agent_spool_put_component(struct agent_spool *s, const struct agent_spool_component *row,
                              enum mst_check_kind check) {
  bind_component(s->put_component, row, check);
  return spool_step_done(s, s->put_component, "writing a component");
}

int agent_spool_forget_component(struct agent_spool *s, const char *name) {
  _cleanup_stmt_ sqlite3_stmt *stmt = NULL;
  int rc;

  rc = sqlite3_prepare_v2(s->db, "DELETE FROM components WHERE name = ?", -1, &stmt, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(stmt);
  }
  if (rc != SQLITE_DONE) {
    log_error("spool %s: forgetting component %s: %s", s->path, name, sqlite3_errmsg(s->db));
    return mst_store_errno(rc);
  }
  return 0;
}

int agent_spool_record_change(struct agent_spool *s, const struct agent_change *ch,
                              const char *ever_healthy_boot, uint64_t *ret_seq) {
  uint64_t seq = s->last_seq + 1;
  const char *to = mst_state_to_string(ch->to);
  int r;

  if (seq > INT64_MAX)
    return -EOVERFLOW;

  r = spool_begin(s);
  if (r < 0)
    return r;

  sqlite3_stmt *ic = s->insert_change;
  sqlite3_bind_int64(ic, 1, (int64_t)seq);
  sqlite3_bind_text(ic, 2, ch->component, -1, SQLITE_STATIC);
  sqlite3_bind_text(ic, 3, mst_check_kind_to_string(ch->check), -1, SQLITE_STATIC);
  sqlite3_bind_text(ic, 4, mst_state_to_string(ch->from), -1, SQLITE_STATIC);
  sqlite3_bind_text(ic, 5, to, -1, SQLITE_STATIC);
  sqlite3_bind_int64(ic, 6, ch->at_ms);
  sqlite3_bind_text(ic, 7, ch->output ? ch->output : "", -1, SQLITE_STATIC);
  sqlite3_bind_text(ic, 8, ch->boot_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(ic, 9, ch->health);
  sqlite3_bind_int64(ic, 10, ch->rise);
  sqlite3_bind_int64(ic, 11, ch->fall);
  r = spool_step_done(s, ic, "inserting a change");
  if (r < 0)
    goto fail;

  struct agent_spool_component row = {
      .name = ch->component,
      .state = to,
      .since_ms = ch->at_ms,
      .output = ch->output,
      .health = ch->health,
      .ever_healthy_boot = ever_healthy_boot,
  };
  bind_component(s->put_component, &row, ch->check);
  r = spool_step_done(s, s->put_component, "updating a component");
  if (r < 0)
    goto fail;

  r = spool_set_meta_u64(s, "last_seq", seq);
  if (r < 0)
    goto fail;

  r = spool_commit(s);
  if (r < 0)
    return r;

  s->last_seq = seq;
  *ret_seq = seq;
  return 0;

fail:
  spool_rollback(s);
  return r;
}

int agent_spool_roll(struct agent_spool *s, const char *reason) {
  char id[33], old[33];
  uint64_t acked = s->acked_seq, last = s->last_seq - MST_MIN(s->acked_seq, s->last_seq);
  uint64_t rolls = 0;
  int r;

  r = spool_new_id(s, id);
  if (r < 0)
    return r;
  r = spool_begin(s);
  if (r < 0)
    return r;
  /* What was acknowledged is held under the old id: it leaves the spool.
   * The rest is renumbered from 1, through negative seqs so that no new
   * seq meets an old one on the way. */
  {
    _cleanup_stmt_ sqlite3_stmt *del = NULL;
    int rc = sqlite3_prepare_v2(s->db, "DELETE FROM changes WHERE seq <= ?", -1, &del, NULL);
    if (rc == SQLITE_OK) {
      sqlite3_bind_int64(del, 1, (int64_t)MST_MIN(acked, (uint64_t)INT64_MAX));
      rc = sqlite3_step(del);
    }
    if (rc != SQLITE_DONE) {
      log_error("spool %s: dropping acknowledged changes: %s", s->path, sqlite3_errmsg(s->db));
      r = mst_store_errno(rc);
      goto fail;
    }
  }
  if (acked > 0) {
    char sql[128];
    snprintf(sql, sizeof(sql), "UPDATE changes SET seq = %" PRId64 " - seq",
             (int64_t)MST_MIN(acked, (uint64_t)INT64_MAX));
    r = mst_store_exec(s->db, sql);
    if (r >= 0)
      r = mst_store_exec(s->db, "UPDATE changes SET seq = -seq");
    if (r < 0)
      goto fail;
  }
  r = spool_get_meta_u64(s, "spool_rolls", &rolls);
  if (r < 0)
    goto fail;
  snprintf(old, sizeof(old), "%s", s->spool_id);
  if ((r = spool_set_meta(s, "spool_id", id)) < 0 ||
      (r = spool_set_meta(s, "previous_spool_id", old[0] ? old : "(lost)")) < 0 ||
      (r = spool_set_meta(s, "spool_roll_reason", reason)) < 0 ||
      (r = spool_set_meta_u64(s, "spool_rolls", rolls + 1)) < 0 ||
      (r = spool_set_meta_u64(s, "acked_seq", 0)) < 0 ||
      (r = spool_set_meta_u64(s, "last_seq", last)) < 0)
    goto fail;
  r = spool_commit(s);
  if (r < 0)
    return r;

  log_warning("spool %s: new spool id %s replaces %s: %s; its %" PRIu64
              " unacknowledged changes are renumbered 1..%" PRIu64 " and sent under the new id, "
              "the %" PRIu64 " acknowledged ones stay in the aggregator's history only",
              s->path, id, old[0] ? old : "(lost)", reason, last, last, acked);
  memcpy(s->spool_id, id, sizeof(id));
  s->last_seq = last;
  s->acked_seq = s->acked_seq_persisted = 0;
  return 0;

fail:
  spool_rollback(s);
  return r;
}

static enum mst_state state_or_unspecified(const unsigned char *s) {
  int v = mst_state_from_string((const char *)s);
  return v < 0 ? MST_STATE_UNSPECIFIED : (enum mst_state)v;
}

int agent_spool_read_changes(struct agent_spool *s, uint64_t after_seq, unsigned limit,
                             agent_spool_change_cb cb, void *userdata) {
  sqlite3_stmt *stmt = s->select_changes;
  int consumed = 0, rc, r = 0;

  if (after_seq > INT64_MAX)
    return 0;
  sqlite3_bind_int64(stmt, 1, (int64_t)after_seq);
  sqlite3_bind_int64(stmt, 2, limit);
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    int kind = mst_check_kind_from_string((const char *)sqlite3_column_text(stmt, 2));
    const unsigned char *component = sqlite3_column_text(stmt, 1);
    const unsigned char *output = sqlite3_column_text(stmt, 6);
    const unsigned char *boot_id = sqlite3_column_text(stmt, 7);
    struct agent_change ch = {
        .seq = (uint64_t)sqlite3_column_int64(stmt, 0),
        .component = component ? (const char *)component : "",
        .check = kind < 0 ? MST_CHECK_UNSPECIFIED : (enum mst_check_kind)kind,
        .from = state_or_unspecified(sqlite3_column_text(stmt, 3)),
        .to = state_or_unspecified(sqlite3_column_text(stmt, 4)),
        .at_ms = sqlite3_column_int64(stmt, 5),
        .output = output ? (const char *)output : "",
        .boot_id = boot_id ? (const char *)boot_id : "",
        .health = (unsigned)sqlite3_column_int(stmt, 8),
        .rise = (unsigned)sqlite3_column_int(stmt, 9),
        .fall = (unsigned)sqlite3_column_int(stmt, 10),
    };
    r = cb(userdata, &ch);
    if (r != 0)
      break;
    consumed++;
  }
  if (r == 0 && rc != SQLITE_DONE) {
    log_error("spool %s: reading changes: %s", s->path, sqlite3_errmsg(s->db));
    r = mst_store_errno(rc);
  }
  sqlite3_reset(stmt);
  sqlite3_clear_bindings(stmt);
  return r < 0 ? r : consumed;
}

struct fingerprint_lookup {
  uint64_t seq, fp;
  bool found;
};

static int fingerprint_row(void *userdata, const struct agent_change *ch) {
  struct fingerprint_lookup *l = userdata;
  if (ch->seq == l->seq) {
    l->fp = mst_change_fingerprint(ch->seq, ch->at_ms, ch->component, mst_state_name(ch->from),
                                   mst_state_name(ch->to), ch->boot_id);
    l->found = true;
  }
  return 0;
}

int agent_spool_fingerprint(struct agent_spool *s, uint64_t seq, uint64_t *ret_fp) {
  struct fingerprint_lookup l = {.seq = seq};
  if (seq == 0)
    return -ENOENT;
  int r = agent_spool_read_changes(s, seq - 1, 1, fingerprint_row, &l);
  if (r < 0)
    return r;
  if (!l.found)
    return -ENOENT;
  *ret_fp = l.fp;
  return 0;
}

static int spool_on_ack_timer(sd_event_source *source, uint64_t usec, void *userdata) {
  struct agent_spool *s = userdata;
  int r = spool_flush_ack(s);

  if (r < 0)
    log_warning("spool %s: cannot persist acked_seq %" PRIu64 ": %s, retrying later", s->path,
                s->acked_seq, strerror(-r));
  if (s->acked_seq != s->acked_seq_persisted) {
    (void)sd_event_source_set_time_relative(source, 5 * USEC_PER_SEC);
    (void)sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
  }
  return 0;
}

void agent_spool_ack(struct agent_spool *s, uint64_t seq) {
  if (seq > s->last_seq) {
    log_warning("aggregator acknowledged seq %" PRIu64 " but the spool only has %" PRIu64
                ", using %" PRIu64,
                seq, s->last_seq, s->last_seq);
    seq = s->last_seq;
  }
  if (seq <= s->acked_seq)
    return;
  s->acked_seq = seq;

  if (!s->ack_timer) {
    (void)spool_flush_ack(s);
    return;
  }
  int enabled = SD_EVENT_OFF;
  (void)sd_event_source_get_enabled(s->ack_timer, &enabled);
  if (enabled == SD_EVENT_OFF) {
    (void)sd_event_source_set_time_relative(s->ack_timer, SPOOL_ACK_FLUSH_DELAY_USEC);
    (void)sd_event_source_set_enabled(s->ack_timer, SD_EVENT_ONESHOT);
  }
}

int agent_spool_prune(struct agent_spool *s, int64_t cutoff_ms, unsigned limit) {
  _cleanup_stmt_ sqlite3_stmt *stmt = NULL;
  int rc;

  /* Only what the aggregator has acknowledged; never anything newer. And
   * only the oldest rows, up to the first one inside the retention: a change
   * stamped earlier than one before it (the clock stepped back) must not
   * leave a hole, since a replay may skip seqs only at its start (the
   * aggregator refuses a gap in the middle). */
  rc = sqlite3_prepare_v2(s->db,
                          "DELETE FROM changes WHERE seq IN (SELECT seq FROM changes"
                          " WHERE seq <= ?1 AND at_ms < ?2 AND seq < (SELECT"
                          " COALESCE(MIN(seq), 9223372036854775807) FROM changes WHERE at_ms >= ?2)"
                          " ORDER BY seq LIMIT ?3)",
                          -1, &stmt, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(stmt, 1, (int64_t)MST_MIN(s->acked_seq, (uint64_t)INT64_MAX));
    sqlite3_bind_int64(stmt, 2, cutoff_ms);
    sqlite3_bind_int64(stmt, 3, limit);
    rc = sqlite3_step(stmt);
  }
  if (rc != SQLITE_DONE) {
    log_error("spool %s: pruning: %s", s->path, sqlite3_errmsg(s->db));
    return mst_store_errno(rc);
  }
  return sqlite3_changes(s->db);
}

static int spool_on_prune_timer(sd_event_source *source, uint64_t usec, void *userdata) {
  struct agent_spool *s = userdata;
  uint64_t now = mst_now_realtime_usec();
  int64_t cutoff_ms = (int64_t)((now - MST_MIN(s->retention_usec, now)) / USEC_PER_MSEC);
  uint64_t next = s->prune_interval_usec;
  int n;

  n = agent_spool_prune(s, cutoff_ms, SPOOL_PRUNE_BATCH);
  if (n > 0)
    log_debug("spool: pruned %d acknowledged changes older than the retention", n);
  /* A full batch means there may be more: go on soon, in small steps, so
   * that the loop is never held for long. */
  if (n >= SPOOL_PRUNE_BATCH)
    next = SPOOL_PRUNE_AGAIN_USEC;
  (void)sd_event_source_set_time_relative(source, next);
  (void)sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
  return 0;
}

int agent_spool_attach_event(struct agent_spool *s, sd_event *event, uint64_t retention_usec) {
  int r;

  s->retention_usec = retention_usec;
  s->prune_interval_usec = MST_MIN(MST_MAX(retention_usec / 4, SPOOL_PRUNE_MIN_INTERVAL_USEC),
                                   SPOOL_PRUNE_MAX_INTERVAL_USEC);

  r = sd_event_add_time_relative(event, &s->ack_timer, CLOCK_MONOTONIC, SPOOL_ACK_FLUSH_DELAY_USEC,
                                 10 * USEC_PER_MSEC, spool_on_ack_timer, s);
  if (r < 0)
    return r;
  (void)sd_event_source_set_description(s->ack_timer, "spool-ack");
  (void)sd_event_source_set_enabled(s->ack_timer, SD_EVENT_OFF);

  /* The first pruning right after start, then every interval. */
  r = sd_event_add_time_relative(event, &s->prune_timer, CLOCK_MONOTONIC, 0, USEC_PER_SEC,
                                 spool_on_prune_timer, s);
  if (r < 0)
    return r;
  (void)sd_event_source_set_description(s->prune_timer, "spool-prune");
  return 0;
}
