/* When a startup begins (startup.c): a kernel boot, an install (the first
 * start with a new spool) or a restart of the profile's systemd units. The
 * current startup lives in struct agent (boot_id, boot_start_usec,
 * startup_cause, startup_number) and in the spool's meta. Loop thread. */
#pragma once

struct agent;

/* Decides the current startup at agent start: needs a->spool and the boot
 * facts (agent_boot_setup()); sets the startup fields of a and records a new
 * startup in the spool. Returns 0 or -errno (logged by the spool, or
 * -ENOMEM). Runs before the components are restored: a new startup
 * (a->boot_is_new) makes them begin from no state there. */
int agent_startup_setup(struct agent *a);

/* A systemd unit was read (probe/systemd.c): begins a restart startup when
 * the profile's units say the stack was restarted. Logs its own errors. */
void agent_startup_units_read(struct agent *a);
