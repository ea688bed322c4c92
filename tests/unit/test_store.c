/* Unit tests for mst/store.h on real SQLite files: connection settings,
 * migrations applied once and atomically, user_version bookkeeping, refusal
 * of a database newer than the program, and the error-code mapping. */
#include <criterion/criterion.h>
#include <string.h>

#include "mst/log.h"
#include "mst/macro.h"
#include "mst/store.h"
#include "unit-helpers.h"

static char *tmpdir;
static char *db_path;

static void setup(void) {
  tmpdir = unit_tmpdir();
  cr_assert_geq(asprintf(&db_path, "%s/test.db", tmpdir), 0);
  mst_log_set_level(MST_LOG_ERR - 1); /* keep expected SQLite errors quiet */
}

static void teardown(void) {
  free(db_path);
  unit_rmtree(tmpdir);
}

TestSuite(store, .init = setup, .fini = teardown);

static int64_t query_int(sqlite3 *db, const char *sql) {
  _cleanup_stmt_ sqlite3_stmt *stmt = NULL;
  cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK, "%s: %s", sql,
               sqlite3_errmsg(db));
  cr_assert_eq(sqlite3_step(stmt), SQLITE_ROW, "%s", sql);
  return sqlite3_column_int64(stmt, 0);
}

static bool table_exists(sqlite3 *db, const char *name) {
  _cleanup_stmt_ sqlite3_stmt *stmt = NULL;
  cr_assert_eq(sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                                  -1, &stmt, NULL),
               SQLITE_OK);
  sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
  return sqlite3_step(stmt) == SQLITE_ROW;
}

static const struct mst_migration migrations[] = {
    {"0001_nodes.sql", "CREATE TABLE nodes (id TEXT PRIMARY KEY, role TEXT NOT NULL);"},
    {"0002_seed.sql", "INSERT INTO nodes VALUES ('n1', 'master');"},
    {"0003_changes.sql",
     "CREATE TABLE changes (node TEXT NOT NULL REFERENCES nodes(id), seq INTEGER NOT NULL);"
     "CREATE INDEX changes_node_seq ON changes(node, seq);"},
};

Test(store, open_settings) {
  _cleanup_db_ sqlite3 *db = NULL;

  cr_assert_eq(mst_store_open(db_path, 0, &db), 0);
  cr_assert_not_null(db);
  cr_assert_eq(access(db_path, F_OK), 0, "the file is created");
  cr_assert_eq(query_int(db, "PRAGMA synchronous"), 2, "FULL by default");
  cr_assert_eq(query_int(db, "PRAGMA foreign_keys"), 1);
  cr_assert_eq(query_int(db, "PRAGMA busy_timeout"), 5000);

  _cleanup_stmt_ sqlite3_stmt *stmt = NULL;
  cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, NULL), SQLITE_OK);
  cr_assert_eq(sqlite3_step(stmt), SQLITE_ROW);
  cr_assert_str_eq((const char *)sqlite3_column_text(stmt, 0), "wal");
}

Test(store, open_sync_normal) {
  _cleanup_db_ sqlite3 *db = NULL;

  cr_assert_eq(mst_store_open(db_path, MST_STORE_SYNC_NORMAL, &db), 0);
  cr_assert_eq(query_int(db, "PRAGMA synchronous"), 1);
}

Test(store, open_readonly) {
  _cleanup_db_ sqlite3 *rw = NULL;
  _cleanup_db_ sqlite3 *ro = NULL;
  sqlite3 *missing = (sqlite3 *)0x1;

  /* A read-only open never creates the file, and leaves *ret alone. */
  cr_assert_lt(mst_store_open(db_path, MST_STORE_READONLY, &missing), 0);
  cr_assert_eq(missing, (sqlite3 *)0x1);
  cr_assert_neq(access(db_path, F_OK), 0);

  cr_assert_eq(mst_store_open(db_path, 0, &rw), 0);
  cr_assert_eq(mst_store_migrate(rw, migrations, 2), 0);
  cr_assert_eq(mst_store_open(db_path, MST_STORE_READONLY, &ro), 0);
  cr_assert_eq(query_int(ro, "SELECT count(*) FROM nodes"), 1);
  cr_assert_eq(mst_store_exec(ro, "INSERT INTO nodes VALUES ('n2', 'agent')"), -EIO);
  cr_assert_eq(query_int(rw, "SELECT count(*) FROM nodes"), 1);
}

Test(store, open_failure) {
  sqlite3 *db = NULL;
  char *bad = NULL;

  cr_assert_geq(asprintf(&bad, "%s/no/such/dir/x.db", tmpdir), 0);
  cr_assert_lt(mst_store_open(bad, 0, &db), 0);
  cr_assert_null(db);
  free(bad);
}

Test(store, migrations_apply_once) {
  _cleanup_db_ sqlite3 *db = NULL;

  cr_assert_eq(mst_store_open(db_path, 0, &db), 0);
  cr_assert_eq(query_int(db, "PRAGMA user_version"), 0);

  cr_assert_eq(mst_store_migrate(db, migrations, 2), 0);
  cr_assert_eq(query_int(db, "PRAGMA user_version"), 2);
  cr_assert(table_exists(db, "nodes"));
  cr_assert_eq(query_int(db, "SELECT count(*) FROM nodes"), 1);

  /* Running again applies nothing: the seed row is not inserted twice. */
  cr_assert_eq(mst_store_migrate(db, migrations, 2), 0);
  cr_assert_eq(query_int(db, "SELECT count(*) FROM nodes"), 1);
  cr_assert_eq(query_int(db, "PRAGMA user_version"), 2);

  /* A newer program applies only what is new. */
  cr_assert_eq(mst_store_migrate(db, migrations, 3), 0);
  cr_assert_eq(query_int(db, "PRAGMA user_version"), 3);
  cr_assert(table_exists(db, "changes"));
  cr_assert_eq(query_int(db, "SELECT count(*) FROM nodes"), 1);
  cr_assert(sqlite3_get_autocommit(db), "no transaction left open");
}

Test(store, migrations_survive_reopen) {
  sqlite3 *db = NULL;

  cr_assert_eq(mst_store_open(db_path, 0, &db), 0);
  cr_assert_eq(mst_store_migrate(db, migrations, 3), 0);
  sqlite3_close_v2(db);

  db = NULL;
  cr_assert_eq(mst_store_open(db_path, 0, &db), 0);
  cr_assert_eq(query_int(db, "PRAGMA user_version"), 3);
  cr_assert_eq(mst_store_migrate(db, migrations, 3), 0);
  cr_assert_eq(query_int(db, "SELECT count(*) FROM nodes"), 1);
  /* Foreign keys are enforced on the new connection too. */
  cr_assert_eq(mst_store_exec(db, "INSERT INTO changes VALUES ('nope', 1)"), -EIO);
  sqlite3_close_v2(db);
}

Test(store, newer_database_is_refused) {
  _cleanup_db_ sqlite3 *db = NULL;

  cr_assert_eq(mst_store_open(db_path, 0, &db), 0);
  cr_assert_eq(mst_store_migrate(db, migrations, 3), 0);
  cr_assert_eq(mst_store_migrate(db, migrations, 2), -EPROTO);
  cr_assert_eq(query_int(db, "PRAGMA user_version"), 3, "left as it was");
  cr_assert(sqlite3_get_autocommit(db), "no transaction left open");
}

Test(store, failed_migration_rolls_back_everything) {
  _cleanup_db_ sqlite3 *db = NULL;
  static const struct mst_migration broken[] = {
      {"0001_nodes.sql", "CREATE TABLE nodes (id TEXT PRIMARY KEY);"},
      {"0002_broken.sql", "CREATE TABLE x (a INT); THIS IS NOT SQL;"},
  };

  cr_assert_eq(mst_store_open(db_path, 0, &db), 0);
  cr_assert_lt(mst_store_migrate(db, broken, 2), 0);
  cr_assert_eq(query_int(db, "PRAGMA user_version"), 0);
  cr_assert_not(table_exists(db, "nodes"), "the first migration is rolled back too");
  cr_assert_not(table_exists(db, "x"));
  cr_assert(sqlite3_get_autocommit(db), "no transaction left open");

  /* A constraint violation inside a migration maps to -EEXIST. */
  static const struct mst_migration dup[] = {
      {"0001_nodes.sql", "CREATE TABLE nodes (id TEXT PRIMARY KEY);"},
      {"0002_dup.sql", "INSERT INTO nodes VALUES ('a'); INSERT INTO nodes VALUES ('a');"},
  };
  cr_assert_eq(mst_store_migrate(db, dup, 2), -EEXIST);
  cr_assert_eq(query_int(db, "PRAGMA user_version"), 0);
}

Test(store, busy_database) {
  _cleanup_db_ sqlite3 *a = NULL;
  _cleanup_db_ sqlite3 *b = NULL;

  cr_assert_eq(mst_store_open(db_path, 0, &a), 0);
  cr_assert_eq(mst_store_open(db_path, 0, &b), 0);
  sqlite3_busy_timeout(b, 10); /* do not wait 5 s in a test */
  cr_assert_eq(mst_store_exec(a, "BEGIN IMMEDIATE"), 0);
  cr_assert_eq(mst_store_migrate(b, migrations, 1), -EBUSY);
  cr_assert_eq(mst_store_exec(a, "ROLLBACK"), 0);
  cr_assert_eq(mst_store_migrate(b, migrations, 1), 0);
}

Test(store, errno_mapping) {
  static const struct {
    int rc, want;
  } cases[] = {
      {SQLITE_OK, 0},
      {SQLITE_BUSY, -EBUSY},
      {SQLITE_LOCKED, -EBUSY},
      {SQLITE_BUSY_SNAPSHOT, -EBUSY},
      {SQLITE_FULL, -ENOSPC},
      {SQLITE_NOMEM, -ENOMEM},
      {SQLITE_CONSTRAINT, -EEXIST},
      {SQLITE_CONSTRAINT_UNIQUE, -EEXIST},
      {SQLITE_IOERR, -EIO},
      {SQLITE_CORRUPT, -EIO},
      {SQLITE_CANTOPEN, -EIO},
  };
  for (size_t i = 0; i < ELEMENTSOF(cases); i++)
    cr_assert_eq(mst_store_errno(cases[i].rc), cases[i].want, "rc %d", cases[i].rc);
}
