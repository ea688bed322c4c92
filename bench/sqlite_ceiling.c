/* sqlite-ceiling: the ingest ceiling of SPEC.md's performance goals, "a
 * plain SQLite batched-insert loop with the same schema, node count and
 * table size" (bench/README.md, "Load generator and ingest ceiling").
 *
 * It creates a fresh database in --dir, opens it with the aggregator's own
 * helper (mst_store_open: WAL, synchronous=FULL unless --synchronous normal,
 * the same busy timeout), applies the schema/ migrations in order with
 * mst_store_migrate as the aggregator does at start, pre-fills `changes` to
 * --prefill rows spread over --nodes nodes, and then inserts rows with the
 * columns of the aggregator's INSERT (aggregatord/ingest/writer.c), from one
 * prepared statement, in transactions of --batch rows, for --duration
 * seconds or --rows rows. The values have the shapes muster-loadgen sends
 * (node ids, spool ids, component names, check output lines of the same
 * length). Nothing else happens in the loop: no network, no idempotency
 * check, no spool upsert. That is what makes it the ceiling.
 *
 * Figures go to stdout (one JSON object with --json); progress to stderr. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mst/macro.h"
#include "mst/state.h"
#include "mst/store.h"
#include "mst/time.h"

#ifndef MUSTER_SCHEMA_DIR
#define MUSTER_SCHEMA_DIR "schema"
#endif

#define SCHEMA_FILE_MAX     (1024 * 1024)
#define PREFILL_TXN_ROWS    50000
#define PREFILL_SPAN_MS     (7LL * 86400 * 1000) /* the default retention */
#define OUTPUT_MAX          128
#define PROGRESS_USEC       (1 * USEC_PER_SEC)
#define COMMIT_SAMPLES_INIT 1024

struct options {
  const char *dir, *schema_dir, *node_prefix;
  unsigned nodes, components, batch;
  uint64_t prefill, rows;
  double duration;
  bool sync_normal, keep, json;
  uint64_t seed;
};

/* One simulated node's identity and where its sequence stands. */
struct sim_node {
  char id[80];
  char spool_id[33];
  char boot_id[37];
  uint64_t seq;
  uint8_t *states; /* per component */
};

struct ceiling {
  struct options opt;
  sqlite3 *db;
  sqlite3_stmt *ins;
  struct sim_node *nodes;
  char **comp_names;
  uint64_t rng;
  int64_t epoch;
  double *commit_ms; /* one per timed commit */
  size_t n_commits, cap_commits;
};

static uint64_t rnd(struct ceiling *c) {
  c->rng ^= c->rng >> 12;
  c->rng ^= c->rng << 25;
  c->rng ^= c->rng >> 27;
  return c->rng * 0x2545F4914F6CDD1DULL;
}

static const char *state_word(uint8_t s) {
  const char *w = mst_state_to_string((enum mst_state)s);
  return w ? w : "unspecified";
}

/* --- schema ------------------------------------------------------------------ */

static int is_sql_file(const struct dirent *d) {
  size_t n = strlen(d->d_name);
  return n > 4 && strcmp(d->d_name + n - 4, ".sql") == 0;
}

static int read_file(const char *path, char **ret) {
  FILE *f = fopen(path, "re");
  _cleanup_free_ char *buf = NULL;
  size_t n;

  if (!f)
    return -errno;
  buf = malloc(SCHEMA_FILE_MAX + 1);
  if (!buf) {
    fclose(f);
    return -ENOMEM;
  }
  n = fread(buf, 1, SCHEMA_FILE_MAX + 1, f);
  if (ferror(f)) {
    fclose(f);
    return -EIO;
  }
  fclose(f);
  if (n > SCHEMA_FILE_MAX)
    return -EFBIG;
  buf[n] = '\0';
  *ret = TAKE_PTR(buf);
  return 0;
}

/* Applies every *.sql of dir in name order, as the aggregator applies its
 * embedded copies of the same files. Returns 0 or -errno (logged). */
static int apply_schema(sqlite3 *db, const char *dir) {
  struct dirent **names = NULL;
  struct mst_migration *migs = NULL;
  int n = scandir(dir, &names, is_sql_file, alphasort), r = 0;

  if (n < 0) {
    r = -errno;
    fprintf(stderr, "sqlite-ceiling: %s: %s\n", dir, strerror(-r));
    return r;
  }
  if (n == 0) {
    fprintf(stderr, "sqlite-ceiling: no *.sql files in %s\n", dir);
    free(names);
    return -ENOENT;
  }
  migs = calloc((size_t)n, sizeof(*migs));
  if (!migs) {
    r = -ENOMEM;
    goto out;
  }
  for (int i = 0; i < n; i++) {
    char path[PATH_MAX];
    char *sql = NULL;
    snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
    r = read_file(path, &sql);
    if (r < 0) {
      fprintf(stderr, "sqlite-ceiling: %s: %s\n", path, strerror(-r));
      goto out;
    }
    migs[i].name = names[i]->d_name;
    migs[i].sql = sql;
  }
  r = mst_store_migrate(db, migs, (size_t)n);
  if (r < 0)
    fprintf(stderr, "sqlite-ceiling: applying the schema of %s failed\n", dir);
out:
  for (int i = 0; i < n; i++) {
    if (migs)
      free((char *)migs[i].sql);
    free(names[i]);
  }
  free(migs);
  free(names);
  return r;
}

/* --- the insert loop ---------------------------------------------------------- */

static int prepare_insert(struct ceiling *c) {
  /* The columns of the aggregator's INSERT (aggregatord/ingest/writer.c), without
   * its idempotency guard: the ceiling does only the insert. */
  int rc = sqlite3_prepare_v3(c->db,
                              "INSERT INTO changes (node_id, spool_id, seq, component, check_kind,"
                              " from_state, to_state, at_ms, output, boot_id, health, rise, fall,"
                              " epoch, received_ms)"
                              " VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)",
                              -1, SQLITE_PREPARE_PERSISTENT, &c->ins, NULL);
  if (rc != SQLITE_OK) {
    fprintf(stderr, "sqlite-ceiling: prepare: %s\n", sqlite3_errmsg(c->db));
    return mst_store_errno(rc);
  }
  return 0;
}

/* Inserts one change of a random component of node n, at at_ms. */
static int insert_change(struct ceiling *c, struct sim_node *n, int64_t at_ms, int64_t now_ms) {
  static const uint8_t cycle[] = {MST_STATE_HEALTHY, MST_STATE_WARNING, MST_STATE_UNHEALTHY};
  unsigned comp = (unsigned)(rnd(c) % c->opt.components);
  uint8_t from = n->states[comp], to;
  char output[OUTPUT_MAX];
  sqlite3_stmt *s = c->ins;
  int rc;

  do
    to = cycle[rnd(c) % ELEMENTSOF(cycle)];
  while (to == from);
  n->states[comp] = to;
  n->seq++;
  /* The same shape as muster-loadgen's output lines. */
  snprintf(output, sizeof(output), "%s %s: load %u.%02u, %u tasks (seq %" PRIu64 ")",
           c->comp_names[comp], state_word(to), (unsigned)(n->seq % 8), (unsigned)(n->seq % 100),
           100 + (unsigned)(n->seq % 900), n->seq);

  sqlite3_bind_text(s, 1, n->id, -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 2, n->spool_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 3, (sqlite3_int64)n->seq);
  sqlite3_bind_text(s, 4, c->comp_names[comp], -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 5, "exec", -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 6, state_word(from), -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 7, state_word(to), -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 8, at_ms);
  sqlite3_bind_text(s, 9, output, -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 10, n->boot_id, -1, SQLITE_STATIC);
  sqlite3_bind_int(s, 11, to == MST_STATE_HEALTHY ? 4 : 0);
  sqlite3_bind_int(s, 12, 2);
  sqlite3_bind_int(s, 13, 3);
  sqlite3_bind_int64(s, 14, c->epoch);
  sqlite3_bind_int64(s, 15, now_ms);
  rc = sqlite3_step(s);
  sqlite3_reset(s);
  if (rc != SQLITE_DONE) {
    fprintf(stderr, "sqlite-ceiling: insert: %s\n", sqlite3_errmsg(c->db));
    return mst_store_errno(rc);
  }
  return 0;
}

static int64_t now_ms(void) {
  return (int64_t)(mst_now_realtime_usec() / USEC_PER_MSEC);
}

/* Fills the table to --prefill rows, spread over every node round robin and
 * over the last week (the default retention), oldest first. Untimed. */
static int prefill(struct ceiling *c) {
  uint64_t total = c->opt.prefill;
  int64_t now = now_ms();
  int64_t step = total ? MST_MAX(PREFILL_SPAN_MS / (int64_t)total, 1) : 1;
  int r;

  for (uint64_t done = 0; done < total;) {
    uint64_t k = MST_MIN(total - done, (uint64_t)PREFILL_TXN_ROWS);
    r = mst_store_exec(c->db, "BEGIN IMMEDIATE");
    if (r < 0)
      return r;
    for (uint64_t i = 0; i < k; i++, done++) {
      int64_t at = now - (int64_t)(total - done) * step;
      r = insert_change(c, &c->nodes[done % c->opt.nodes], at, at);
      if (r < 0) {
        (void)mst_store_exec(c->db, "ROLLBACK");
        return r;
      }
    }
    r = mst_store_exec(c->db, "COMMIT");
    if (r < 0)
      return r;
    if (done % (PREFILL_TXN_ROWS * 20) == 0 || done == total)
      fprintf(stderr, "sqlite-ceiling: prefilled %" PRIu64 " of %" PRIu64 " rows\n", done, total);
  }
  return 0;
}

static int note_commit(struct ceiling *c, double ms) {
  if (c->n_commits == c->cap_commits) {
    size_t ncap = c->cap_commits ? c->cap_commits * 2 : COMMIT_SAMPLES_INIT;
    double *v = realloc(c->commit_ms, ncap * sizeof(*v));
    if (!v)
      return -ENOMEM;
    c->commit_ms = v;
    c->cap_commits = ncap;
  }
  c->commit_ms[c->n_commits++] = ms;
  return 0;
}

/* The timed loop: transactions of --batch rows from random nodes, until
 * --rows rows or --duration seconds. */
static int insert_loop(struct ceiling *c, uint64_t *ret_rows, double *ret_seconds) {
  uint64_t t0 = mst_now_monotonic_usec(), now = t0, rows = 0, next_progress = t0 + PROGRESS_USEC;
  uint64_t end = t0 + (uint64_t)(c->opt.duration * 1e6);
  int r;

  while (c->opt.rows ? rows < c->opt.rows : now < end) {
    uint64_t k = c->opt.batch;
    uint64_t t_txn = now;
    int64_t at = now_ms();
    if (c->opt.rows)
      k = MST_MIN(k, c->opt.rows - rows);
    r = mst_store_exec(c->db, "BEGIN IMMEDIATE");
    if (r < 0)
      return r;
    for (uint64_t i = 0; i < k; i++) {
      r = insert_change(c, &c->nodes[rnd(c) % c->opt.nodes], at, at);
      if (r < 0) {
        (void)mst_store_exec(c->db, "ROLLBACK");
        return r;
      }
    }
    r = mst_store_exec(c->db, "COMMIT");
    if (r < 0)
      return r;
    rows += k;
    now = mst_now_monotonic_usec();
    if (note_commit(c, (double)(now - t_txn) / 1000.0) < 0)
      return -ENOMEM;
    if (now >= next_progress) {
      next_progress = now + PROGRESS_USEC;
      fprintf(stderr, "sqlite-ceiling: %" PRIu64 " rows, %.0f rows/s\n", rows,
              (double)rows / ((double)(now - t0) / 1e6));
    }
  }
  *ret_rows = rows;
  *ret_seconds = (double)(now - t0) / 1e6;
  return 0;
}

/* --- set-up and report -------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double quantile(const double *sorted, size_t n, double q) {
  size_t i;
  if (n == 0)
    return 0;
  i = (size_t)ceil(q * (double)n);
  return sorted[i ? i - 1 : 0];
}

static void usage(FILE *f) {
  fprintf(f,
          "Usage: sqlite-ceiling --dir DIR [options]\n"
          "The ingest ceiling: a plain batched-insert loop into the aggregator's schema.\n\n"
          "  --dir DIR             where to create the database (removed at the end)\n"
          "  --schema-dir DIR      the schema/*.sql migrations (default %s)\n"
          "  --nodes N             node ids the rows are spread over (default 1000)\n"
          "  --components M        component names per node (default 50)\n"
          "  --prefill ROWS        rows in `changes` before timing starts (default 0)\n"
          "  --batch ROWS          rows per transaction (default 1000)\n"
          "  --duration S          seconds to insert (default 10)\n"
          "  --rows R              insert R rows instead of for a duration\n"
          "  --synchronous MODE    full (the aggregator's default) or normal\n"
          "  --node-prefix P       node ids are P-00000... (default lg, as muster-loadgen)\n"
          "  --seed N              random seed\n"
          "  --keep                keep the database file\n"
          "  --json                print one JSON object of results\n",
          MUSTER_SCHEMA_DIR);
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret) {
  char *end;
  unsigned long long v;
  errno = 0;
  v = strtoull(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
    return -EINVAL;
  *ret = v;
  return 0;
}

static int parse_options(int argc, char **argv, struct options *o) {
  enum {
    OPT_DIR = 256,
    OPT_SCHEMA_DIR,
    OPT_NODES,
    OPT_COMPONENTS,
    OPT_PREFILL,
    OPT_BATCH,
    OPT_DURATION,
    OPT_ROWS,
    OPT_SYNCHRONOUS,
    OPT_NODE_PREFIX,
    OPT_SEED,
    OPT_KEEP,
    OPT_JSON,
    OPT_HELP,
  };
  static const struct option longopts[] = {
      {"dir", required_argument, NULL, OPT_DIR},
      {"schema-dir", required_argument, NULL, OPT_SCHEMA_DIR},
      {"nodes", required_argument, NULL, OPT_NODES},
      {"components", required_argument, NULL, OPT_COMPONENTS},
      {"prefill", required_argument, NULL, OPT_PREFILL},
      {"batch", required_argument, NULL, OPT_BATCH},
      {"duration", required_argument, NULL, OPT_DURATION},
      {"rows", required_argument, NULL, OPT_ROWS},
      {"synchronous", required_argument, NULL, OPT_SYNCHRONOUS},
      {"node-prefix", required_argument, NULL, OPT_NODE_PREFIX},
      {"seed", required_argument, NULL, OPT_SEED},
      {"keep", no_argument, NULL, OPT_KEEP},
      {"json", no_argument, NULL, OPT_JSON},
      {"help", no_argument, NULL, OPT_HELP},
      {0},
  };
  uint64_t v;
  int c;

  *o = (struct options){
      .schema_dir = MUSTER_SCHEMA_DIR,
      .node_prefix = "lg",
      .nodes = 1000,
      .components = 50,
      .batch = 1000,
      .duration = 10,
  };
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    int r = 0;
    switch (c) {
    case OPT_DIR:
      o->dir = optarg;
      break;
    case OPT_SCHEMA_DIR:
      o->schema_dir = optarg;
      break;
    case OPT_NODES:
      r = parse_u64(optarg, 1, 10000000, &v);
      o->nodes = (unsigned)v;
      break;
    case OPT_COMPONENTS:
      r = parse_u64(optarg, 1, 10000, &v);
      o->components = (unsigned)v;
      break;
    case OPT_PREFILL:
      r = parse_u64(optarg, 0, UINT64_MAX / 2, &o->prefill);
      break;
    case OPT_BATCH:
      r = parse_u64(optarg, 1, 10000000, &v);
      o->batch = (unsigned)v;
      break;
    case OPT_DURATION: {
      char *end;
      o->duration = strtod(optarg, &end);
      r = *end || end == optarg || !(o->duration > 0 && o->duration <= 86400) ? -EINVAL : 0;
      break;
    }
    case OPT_ROWS:
      r = parse_u64(optarg, 1, UINT64_MAX / 2, &o->rows);
      break;
    case OPT_SYNCHRONOUS:
      r = strcmp(optarg, "full") == 0 ? 0 : strcmp(optarg, "normal") == 0 ? 1 : -EINVAL;
      o->sync_normal = r == 1;
      r = r < 0 ? r : 0;
      break;
    case OPT_NODE_PREFIX:
      o->node_prefix = optarg;
      r = strlen(optarg) > 64 ? -EINVAL : 0;
      break;
    case OPT_SEED:
      r = parse_u64(optarg, 0, UINT64_MAX, &o->seed);
      break;
    case OPT_KEEP:
      o->keep = true;
      break;
    case OPT_JSON:
      o->json = true;
      break;
    case OPT_HELP:
      usage(stdout);
      exit(0);
    default:
      usage(stderr);
      return -EINVAL;
    }
    if (r < 0) {
      fprintf(stderr, "sqlite-ceiling: invalid value '%s' for --%s\n", optarg,
              longopts[c - OPT_DIR].name);
      return -EINVAL;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "sqlite-ceiling: unexpected argument '%s'\n", argv[optind]);
    return -EINVAL;
  }
  if (!o->dir) {
    fprintf(stderr, "sqlite-ceiling: --dir DIR is required\n");
    return -EINVAL;
  }
  return 0;
}

/* Node ids, spool ids and boot ids as muster-loadgen makes them. */
static int setup_nodes(struct ceiling *c) {
  uint64_t nonce = c->rng;
  c->nodes = calloc(c->opt.nodes, sizeof(*c->nodes));
  c->comp_names = calloc(c->opt.components, sizeof(*c->comp_names));
  if (!c->nodes || !c->comp_names)
    return -ENOMEM;
  for (unsigned i = 0; i < c->opt.components; i++)
    if (asprintf(&c->comp_names[i], "unit-%03u.service", i) < 0) {
      c->comp_names[i] = NULL;
      return -ENOMEM;
    }
  for (unsigned i = 0; i < c->opt.nodes; i++) {
    struct sim_node *n = &c->nodes[i];
    snprintf(n->id, sizeof(n->id), "%s-%05u", c->opt.node_prefix, i);
    snprintf(n->spool_id, sizeof(n->spool_id), "%016" PRIx64 "%016" PRIx64, nonce, (uint64_t)i);
    snprintf(n->boot_id, sizeof(n->boot_id), "%08" PRIx32 "-%04x-4%03x-8%03x-%012" PRIx64,
             (uint32_t)(nonce >> 32), (unsigned)(nonce >> 16) & 0xffff, (unsigned)nonce & 0xfff,
             (unsigned)(nonce >> 20) & 0xfff, (uint64_t)i);
    n->states = malloc(c->opt.components);
    if (!n->states)
      return -ENOMEM;
    memset(n->states, MST_STATE_HEALTHY, c->opt.components);
  }
  return 0;
}

static void teardown(struct ceiling *c) {
  if (c->nodes)
    for (unsigned i = 0; i < c->opt.nodes; i++)
      free(c->nodes[i].states);
  free(c->nodes);
  if (c->comp_names)
    for (unsigned i = 0; i < c->opt.components; i++)
      free(c->comp_names[i]);
  free(c->comp_names);
  free(c->commit_ms);
  sqlite3_finalize(c->ins);
  sqlite3_close_v2(c->db);
}

static void remove_db(const char *path) {
  static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
  char p[PATH_MAX];
  for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
    snprintf(p, sizeof(p), "%s%s", path, suffixes[i]);
    (void)unlink(p);
  }
}

static void print_results(const struct ceiling *c, uint64_t rows, double seconds,
                          double prefill_s) {
  double p50 = quantile(c->commit_ms, c->n_commits, 0.5);
  double p99 = quantile(c->commit_ms, c->n_commits, 0.99);
  double mx = c->n_commits ? c->commit_ms[c->n_commits - 1] : 0;
  double rate = seconds > 0 ? (double)rows / seconds : 0;

  if (c->opt.json) {
    json_t *o = json_pack(
        "{s:s, s:I, s:I, s:I, s:I, s:s, s:I, s:f, s:f, s:I, s:f, s:{s:f, s:f, s:f}}", "mode",
        "sqlite-ceiling", "nodes", (json_int_t)c->opt.nodes, "prefill", (json_int_t)c->opt.prefill,
        "table_rows", (json_int_t)(c->opt.prefill + rows), "batch", (json_int_t)c->opt.batch,
        "synchronous", c->opt.sync_normal ? "normal" : "full", "rows", (json_int_t)rows, "seconds",
        seconds, "rows_per_s", rate, "commits", (json_int_t)c->n_commits, "prefill_s", prefill_s,
        "commit_ms", "p50", p50, "p99", p99, "max", mx);
    if (o) {
      json_dumpf(o, stdout, JSON_COMPACT);
      fputc('\n', stdout);
      json_decref(o);
    }
    return;
  }
  printf("nodes: %u\nprefill: %" PRIu64 "\ntable_rows: %" PRIu64 "\nbatch: %u\n"
         "synchronous: %s\nrows: %" PRIu64 "\nseconds: %.3f\nrows_per_s: %.0f\ncommits: %zu\n"
         "commit_ms: p50 %.3f p99 %.3f max %.3f\n",
         c->opt.nodes, c->opt.prefill, c->opt.prefill + rows, c->opt.batch,
         c->opt.sync_normal ? "normal" : "full", rows, seconds, rate, c->n_commits, p50, p99, mx);
}

int main(int argc, char **argv) {
  struct ceiling c = {0};
  char path[PATH_MAX];
  uint64_t rows = 0, t0;
  double seconds = 0, prefill_s;
  int r;

  if (parse_options(argc, argv, &c.opt) < 0)
    return 1;
  c.rng = c.opt.seed ? c.opt.seed : mst_now_realtime_usec() ^ ((uint64_t)getpid() << 40);
  c.rng |= 1;
  c.epoch = 1;
  snprintf(path, sizeof(path), "%s/sqlite-ceiling-%d.db", c.opt.dir, (int)getpid());
  remove_db(path);

  r = setup_nodes(&c);
  if (r < 0) {
    fprintf(stderr, "sqlite-ceiling: out of memory\n");
    goto out;
  }
  r = mst_store_open(path, c.opt.sync_normal ? MST_STORE_SYNC_NORMAL : 0, &c.db);
  if (r < 0) {
    fprintf(stderr, "sqlite-ceiling: cannot open %s: %s\n", path, strerror(-r));
    goto out;
  }
  r = apply_schema(c.db, c.opt.schema_dir);
  if (r < 0)
    goto out;
  r = prepare_insert(&c);
  if (r < 0)
    goto out;

  t0 = mst_now_monotonic_usec();
  r = prefill(&c);
  if (r < 0)
    goto out;
  prefill_s = (double)(mst_now_monotonic_usec() - t0) / 1e6;

  fprintf(stderr, "sqlite-ceiling: inserting in transactions of %u rows into %s\n", c.opt.batch,
          path);
  r = insert_loop(&c, &rows, &seconds);
  if (r < 0)
    goto out;
  qsort(c.commit_ms, c.n_commits, sizeof(double), cmp_double);
  print_results(&c, rows, seconds, prefill_s);

out:
  teardown(&c);
  if (!c.opt.keep)
    remove_db(path);
  return r < 0 ? 1 : 0;
}
