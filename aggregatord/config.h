/* The aggregator's configuration: the file (config_keys.c's table, then the
 * checks that need several keys or other files), the profiles it names, the
 * agents' token and the agent stream's TLS credentials. Every problem is
 * reported as "path:line: message", all of them, not only the first.
 * Start-up and SIGHUP, on the loop thread. */
#pragma once

struct aggr;
struct aggr_config;
struct mst_diag;
struct mst_tls_creds;

/* Loads path into a->cfg, a->profiles, a->token and a->tls_creds, and prints
 * every error. Returns 0, or -EINVAL (or another -errno) after printing.
 * Call aggr_config_done() afterwards in every case. */
int aggr_config_load(struct aggr *a, const char *path);

/* Frees what aggr_config_load() set. */
void aggr_config_done(struct aggr *a);

/* Loads the agent stream's TLS credentials from [tls] of cfg: cert and key
 * turn TLS on; ca verifies the agents' certificates. A file that cannot be
 * used is reported in diag at the line of its key. Returns 0 with *ret set
 * (a new reference), or a negative errno. */
int aggr_config_stream_tls(const char *path, const struct aggr_config *cfg,
                           struct mst_tls_creds **ret, struct mst_diag *diag);
