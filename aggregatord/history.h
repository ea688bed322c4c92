/* Reads of the history database for HTTP handlers, on read-only SQLite
 * connections: one per HTTP thread, opened on first use and kept, so a query
 * never runs on the loop or writer threads and never waits for a writer
 * (WAL readers do not block). */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Sets the database path (once, at start, before HTTP threads run). */
void aggr_history_init(const char *database);

/* Forgets the path (at exit, after the HTTP threads have ended; their
 * connections are closed as each thread ends). */
void aggr_history_done(void);

/* Renders up to limit rows of the changes table with id > after, oldest
 * first, as {"rows":[...],"last_id":N} for followers to copy. Returns 0 with
 * a malloc'd body, or -errno. Any thread. */
int aggr_history_replicate_json(uint64_t after, unsigned limit, char **ret_body, size_t *ret_len);
