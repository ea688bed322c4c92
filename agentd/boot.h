/* Facts about this host and this boot (boot.c): the kernel's boot id, the
 * start of the boot, the host name and the host's
 * addresses, all read from the kernel without blocking. Loop thread, except
 * the readers that take no struct agent, which touch nothing shared. */
#pragma once

#include <stdint.h>

struct agent;

/* Reads the boot id (first line of path, trimmed, at most 128 printable
 * bytes; else -EBADMSG). *ret is malloc'd, the caller's. */
int agent_boot_id_read(const char *path, char **ret);
/* The kernel's boot time (btime of /proc/stat) as realtime usec. */
int agent_boot_kernel_time(uint64_t *ret_usec);
/* The host name (gethostname), malloc'd, the caller's. */
int agent_hostname(char **ret);
/* Non-loopback, non-link-local addresses of this host as strings
 * (getifaddrs). Returns the count and a NULL-terminated strv (the
 * caller's, mst_strv_free). */
int agent_host_addresses(char ***ret);

/* Sets a->host_boot_id (owned by a), notes the boot in the spool (a->spool
 * must be open) and sets a->host_boot_is_new and a->host_boot_start_usec:
 * the kernel's boot time for the real boot id, else when this spool first
 * saw the boot (the tests simulate reboots with another file). Logs the
 * boot, and its own errors. Returns 0 or -errno. Loop thread, at start-up. */
int agent_boot_setup(struct agent *a);
