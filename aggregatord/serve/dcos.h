/* DC/OS compatibility: the routes of DC/OS diagnostics' health API under
 * /system/health/v1 (AGGR_DCOS_PREFIX), with its exact keys, key counts and
 * encodings, so that existing DC/OS tooling reads muster unchanged.
 *
 * What DC/OS shows of a node is part of the published view (view.h), like
 * every other body: the loop builds it when it renders the node's bodies
 * (aggr_dcos_node_new, dcos_node.h), and clean nodes share it with the
 * previous view.
 * HTTP threads answer from the view they hold (aggr_dcos_answer), never
 * touching the model and never waiting for the loop; the units across all
 * nodes are indexed once per view, by the first reader that needs them. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "serve/httpparse.h"

struct aggr_view;

/* An answer: status, body and the headers DC/OS's server sends with it. */
struct aggr_dcos_reply {
  unsigned status;
  char *body; /* malloc'd */
  size_t len;
  const char *content_type; /* NULL: none (an empty 405) */
  char *location;           /* a 301's Location (malloc'd), or NULL */
  bool nosniff;             /* X-Content-Type-Options: nosniff (Go's http.Error) */
  bool attachment;          /* /report/download: Content-disposition */
  char last_modified[40];   /* Last-Modified-3DT, or "" for none */
};

enum aggr_dcos_route {
  AGGR_DCOS_FAILED = -1, /* out of memory */
  AGGR_DCOS_ANSWERED,    /* *ret holds the answer: 301, 404 or 405, no data needed */
  AGGR_DCOS_LOCAL,       /* GET /system/health/v1: the local node's health */
  AGGR_DCOS_DATA,        /* GET of an aggregated route */
};

/* Routes path (under AGGR_DCOS_PREFIX, as decoded; query: the raw query
 * string without '?', or NULL) as DC/OS's router does: an unclean path or a
 * trailing slash is redirected (301, query kept), a path no route has gets
 * 404 "404 page not found", a method other than GET (get false) 405. Those
 * answers need no view: they are put in *ret. Any thread. */
enum aggr_dcos_route aggr_dcos_route(const char *path, const char *query, bool get,
                                     struct aggr_dcos_reply *ret);

/* Answers a GET of path, a route aggr_dcos_route() found, from view v
 * (NULL before the first publish: 503 "health not found"). local_node is
 * the node id the local route (/system/health/v1 itself) shows, or NULL
 * when none is known. Fills *ret (aggr_dcos_reply_done() frees it).
 * Returns 0, or -ENOMEM. Any thread holding v. */
int aggr_dcos_answer(const struct aggr_view *v, const char *path, const char *local_node,
                     struct aggr_dcos_reply *ret);

/* Frees what *r holds. Accepts NULL. */
void aggr_dcos_reply_done(struct aggr_dcos_reply *r);
