/* SQLite helpers shared by the aggregator's history and the agent's spool:
 * opening a connection with muster's settings (WAL, the chosen durability, a
 * busy timeout, foreign keys), applying numbered migrations atomically, and
 * the one place where SQLite result codes become -errno. SQLite's own error
 * text is logged here, once, at the boundary. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "mst/log.h"
#include "mst/store.h"

#define STORE_BUSY_TIMEOUT_MS 5000

int mst_store_errno(int sqlite_rc) {
  switch (sqlite_rc & 0xff) {
  case SQLITE_OK:
  case SQLITE_ROW:
  case SQLITE_DONE:
    return 0;
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    return -EBUSY;
  case SQLITE_FULL:
    return -ENOSPC;
  case SQLITE_NOMEM:
    return -ENOMEM;
  case SQLITE_CONSTRAINT:
    return -EEXIST;
  default:
    return -EIO;
  }
}

int mst_store_exec(sqlite3 *db, const char *sql) {
  char *errmsg = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &errmsg);

  if (rc != SQLITE_OK) {
    log_error("sqlite: %s", errmsg ? errmsg : sqlite3_errstr(rc));
    sqlite3_free(errmsg);
    return -EIO;
  }
  return 0;
}

/* Runs a PRAGMA that answers one text row and returns a copy of it. */
static int store_pragma_text(sqlite3 *db, const char *sql, char *out, size_t size) {
  _cleanup_stmt_ sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);

  if (rc != SQLITE_OK) {
    log_error("sqlite: %s: %s", sql, sqlite3_errmsg(db));
    return mst_store_errno(rc);
  }
  rc = sqlite3_step(stmt);
  if (rc != SQLITE_ROW) {
    log_error("sqlite: %s: %s", sql, sqlite3_errmsg(db));
    return rc == SQLITE_DONE ? -EIO : mst_store_errno(rc);
  }
  const unsigned char *text = sqlite3_column_text(stmt, 0);
  snprintf(out, size, "%s", text ? (const char *)text : "");
  return 0;
}

int mst_store_open(const char *path, unsigned flags, sqlite3 **ret) {
  _cleanup_db_ sqlite3 *db = NULL;
  bool readonly = flags & MST_STORE_READONLY;
  int open_flags = readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  int rc, r;

  rc = sqlite3_open_v2(path, &db, open_flags, NULL);
  if (rc != SQLITE_OK) {
    log_error("sqlite: cannot open %s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    return mst_store_errno(rc);
  }

  /* Before anything that may need a lock. */
  rc = sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
  if (rc != SQLITE_OK) {
    log_error("sqlite: %s: busy_timeout: %s", path, sqlite3_errmsg(db));
    return mst_store_errno(rc);
  }

  if (!readonly) {
    char mode[16];

    r = store_pragma_text(db, "PRAGMA journal_mode=WAL", mode, sizeof(mode));
    if (r < 0)
      return r;
    /* In-memory and some special files cannot use WAL; they still work. */
    if (strcmp(mode, "wal") != 0)
      log_debug("sqlite: %s: journal_mode is %s, not wal, ignoring", path, mode);

    r = mst_store_exec(db, (flags & MST_STORE_SYNC_NORMAL) ? "PRAGMA synchronous=NORMAL"
                                                           : "PRAGMA synchronous=FULL");
    if (r < 0)
      return r;
  }

  r = mst_store_exec(db, "PRAGMA foreign_keys=ON");
  if (r < 0)
    return r;

  *ret = TAKE_PTR(db);
  return 0;
}

static int store_user_version(sqlite3 *db, int64_t *ret) {
  _cleanup_stmt_ sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, NULL);

  if (rc != SQLITE_OK || (rc = sqlite3_step(stmt)) != SQLITE_ROW) {
    log_error("sqlite: reading user_version: %s", sqlite3_errmsg(db));
    return rc == SQLITE_DONE ? -EIO : mst_store_errno(rc);
  }
  *ret = sqlite3_column_int64(stmt, 0);
  return 0;
}

static void store_rollback(sqlite3 *db) {
  /* A failed statement may already have rolled the transaction back. */
  if (!sqlite3_get_autocommit(db))
    (void)mst_store_exec(db, "ROLLBACK");
}

int mst_store_migrate(sqlite3 *db, const struct mst_migration *migrations, size_t n) {
  char *errmsg = NULL;
  int64_t version = 0;
  int rc, r;

  if (n > INT32_MAX)
    return -EINVAL;

  rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &errmsg);
  if (rc != SQLITE_OK) {
    log_error("sqlite: migrations: BEGIN: %s", errmsg ? errmsg : sqlite3_errstr(rc));
    sqlite3_free(errmsg);
    return mst_store_errno(rc);
  }

  r = store_user_version(db, &version);
  if (r < 0)
    goto fail;
  if (version < 0 || (uint64_t)version > n) {
    log_error("sqlite: database schema version %" PRId64 " is newer than this program's %zu, "
              "refusing to use it",
              version, n);
    r = -EPROTO;
    goto fail;
  }

  for (size_t i = (size_t)version; i < n; i++) {
    rc = sqlite3_exec(db, migrations[i].sql, NULL, NULL, &errmsg);
    if (rc != SQLITE_OK) {
      log_error("sqlite: migration %s failed: %s", migrations[i].name,
                errmsg ? errmsg : sqlite3_errstr(rc));
      sqlite3_free(errmsg);
      r = mst_store_errno(rc);
      goto fail;
    }
    log_info("sqlite: applied migration %s", migrations[i].name);
  }

  if ((uint64_t)version < n) {
    char sql[64];

    snprintf(sql, sizeof(sql), "PRAGMA user_version=%zu", n);
    r = mst_store_exec(db, sql);
    if (r < 0)
      goto fail;
  }

  rc = sqlite3_exec(db, "COMMIT", NULL, NULL, &errmsg);
  if (rc != SQLITE_OK) {
    log_error("sqlite: migrations: COMMIT: %s", errmsg ? errmsg : sqlite3_errstr(rc));
    sqlite3_free(errmsg);
    r = mst_store_errno(rc);
    goto fail;
  }
  return 0;

fail:
  store_rollback(db);
  return r;
}
