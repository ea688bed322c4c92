/* SQLite helpers both daemons use: opening a database in WAL mode with the
 * chosen durability, applying numbered migrations inside one transaction
 * (recorded in PRAGMA user_version), and cleanup helpers. SQLite error codes
 * are converted to -errno here, and their text logged once. */
#pragma once

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>

struct mst_migration {
  const char *name; /* "0001_initial.sql" */
  const char *sql;
};

enum mst_store_open_flags {
  MST_STORE_READONLY = 1 << 0,
  MST_STORE_SYNC_NORMAL = 1 << 1, /* default is synchronous=FULL */
};

/* Opens (creating when writable) path in WAL mode with a busy timeout.
 * Returns 0 and *ret, or -errno. Thread: the caller's; the connection then
 * belongs to the thread that uses it. */
int mst_store_open(const char *path, unsigned flags, sqlite3 **ret);

/* Applies migrations[user_version..n-1] in one transaction and sets
 * user_version = n. A database newer than n is refused (-EPROTO). */
int mst_store_migrate(sqlite3 *db, const struct mst_migration *migrations, size_t n);

/* Runs sql (no results). Returns 0 or -EIO (logged). */
int mst_store_exec(sqlite3 *db, const char *sql);

/* Maps an SQLite result code to -errno: BUSY/LOCKED -> -EBUSY, FULL ->
 * -ENOSPC, NOMEM -> -ENOMEM, CONSTRAINT -> -EEXIST, otherwise -EIO. */
int mst_store_errno(int sqlite_rc);

static inline void mst_stmt_finalizep(sqlite3_stmt **s) {
  if (*s)
    sqlite3_finalize(*s);
}
static inline void mst_db_closep(sqlite3 **db) {
  if (*db)
    sqlite3_close_v2(*db);
}
#define _cleanup_stmt_ __attribute__((cleanup(mst_stmt_finalizep)))
#define _cleanup_db_   __attribute__((cleanup(mst_db_closep)))
