/* The node id from a command (node_id.c): DC/OS knows its nodes by IP and
 * asks /opt/mesosphere/bin/detect_ip for it; `[agent] node_id_command` lets
 * the agent do the same. Run once, at start (and by --check-config), before
 * the loop exists: it blocks for at most the timeout. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a command may print: an id is at most MST_NODE_ID_MAX bytes, and
 * detect_ip prints one line; more is a mistake, not an id. */
#define AGENT_NODE_ID_OUTPUT_MAX 1024

/* Runs command through /bin/sh -c, with stdin from /dev/null, in its own
 * process group, and waits at most timeout_usec for it to exit. Its
 * standard output, with the white space around it removed, is the id: it
 * must exit 0 and print 1 to MST_NODE_ID_MAX bytes of printable UTF-8
 * without spaces (what a configured node_id must be). On success *ret_id
 * is malloc'd (the caller's) and 0 is returned. On failure a sentence for
 * operators goes to err ("exited with status 2: detect_ip: no route", "did
 * not exit within 5s (killed)", "printed 'a b' (...)") and -errno is
 * returned: -ETIMEDOUT, -EFBIG (printed over AGENT_NODE_ID_OUTPUT_MAX
 * bytes), -EBADMSG (failed or printed no valid id), or a system error. A
 * command past its timeout is killed with its whole process group. Any
 * thread, no event loop needed. */
int agent_node_id_run(const char *command, uint64_t timeout_usec, char **ret_id, char *err,
                      size_t errsize);

/* Whether s may be a node id: what the aggregator accepts in a Hello
 * (1 to MST_NODE_ID_MAX bytes of UTF-8), with no space or control
 * character. */
bool agent_node_id_valid(const char *s);
