/* Startup profiles: one INI file per node role listing its components (what
 * is checked and how) and its stages (the startup order). Both daemons load
 * the same directory: the agent to know what to check, the aggregator to know
 * the roles and, later, the stage graph.
 *
 *   [profile]              role, startup_grace, restart_window,
 *                          leader_component
 *   [component "NAME"]     check = systemd|exec|http|tcp, unit, command, url,
 *                          expect_status, expect_body, address, interval,
 *                          timeout, rise, fall, description, name
 *   [stage "NAME"]         components, milestones, after, requires
 *
 * Every error is reported as "path:line: message". The digest is the hex
 * SHA-256 of the file's bytes, carried in the Hello to detect drift. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "mst/diag.h"
#include "mst/state.h"

#define MST_PROFILE_DEFAULT_GRACE_USEC (15ULL * 60 * 1000000)
/* How close together the restarted units of a stack restart start (see
 * agentd/startup.c and docs/profiles.md "When a startup begins"). */
#define MST_PROFILE_DEFAULT_RESTART_WINDOW_USEC (30ULL * 1000000)
#define MST_PROFILE_DEFAULT_INTERVAL_USEC       (10ULL * 1000000)
#define MST_PROFILE_DEFAULT_TIMEOUT_USEC        (5ULL * 1000000)

struct mst_component {
  char *name;
  enum mst_check_kind check;
  char *unit;             /* systemd */
  char *command;          /* exec: run through /bin/sh -c */
  char *url;              /* http */
  unsigned expect_status; /* http, default 200 */
  char *expect_body;      /* http, optional substring */
  char *address;          /* tcp: host:port */
  uint64_t interval_usec;
  uint64_t timeout_usec;
  unsigned rise, fall;
  unsigned line; /* where it was declared */
  /* What DC/OS shows of the component (docs/profiles.md "Descriptions and
   * names"): they win over what systemd's Description= says. NULL: not set.
   * UTF-8 without control characters, at most MST_DESCRIPTION_MAX and
   * MST_DISPLAY_NAME_MAX bytes (mst/frame.h). */
  char *description;
  char *display_name; /* the `name` key, e.g. "Mesos Agent" */
};

struct mst_stage {
  char *name;
  char **components;                  /* NULL-terminated, names of components */
  char **milestones;                  /* NULL-terminated; components counting for progress only */
  char **after;                       /* NULL-terminated stage names; default: the previous stage */
  char **requires;                    /* NULL-terminated: ROLE:STAGE[@quorum|@all] */
  unsigned line;                      /* where it was declared */
  unsigned after_line, requires_line; /* where those keys were set; 0: not set */
};

struct mst_profile {
  char *path;
  char *role;
  uint64_t startup_grace_usec;
  struct mst_component *components;
  size_t n_components;
  struct mst_stage *stages;
  size_t n_stages;
  char digest[65];              /* hex SHA-256 of the file */
  uint64_t restart_window_usec; /* a stack restart's units start within it (agentd/startup.c) */
  /* The component whose being healthy says this node leads (the Mesos
   * leader: DC/OS's `Leader` in /report), or NULL. It counts for neither the
   * node's health nor its startup progress, so it is in no stage. */
  char *leader_component;
};

/* Loads one profile file. The role defaults to the file name without ".ini".
 * A dependency cycle among its own stages (through `after`, or `requires` of
 * its own role, a stage requiring itself included) is an error; requires of
 * other roles are checked by mst_profile_set_load().
 * Returns 0, or -EINVAL with every problem in diag, or -errno. */
int mst_profile_load(const char *path, struct mst_profile **ret, struct mst_diag *diag);
void mst_profile_free(struct mst_profile *p);

const struct mst_component *mst_profile_find_component(const struct mst_profile *p,
                                                       const char *name);

/* All profiles of a directory ("*.ini"), one per role. */
struct mst_profile_set {
  struct mst_profile **profiles;
  size_t n;
};

/* Loads every *.ini file in dir; a duplicate role, a requires naming a role
 * or stage that no profile has, and a dependency cycle across roles
 * (master:s1 requires agent:x, which requires master:s1) are errors, at the
 * line of the requires key. Returns 0 or -EINVAL/-errno with diag lines. */
int mst_profile_set_load(const char *dir, struct mst_profile_set **ret, struct mst_diag *diag);
void mst_profile_set_free(struct mst_profile_set *s);
const struct mst_profile *mst_profile_set_find(const struct mst_profile_set *s, const char *role);
