/* Facts about this host that the Hello carries and the startup needs: the
 * boot id (normally the kernel's random boot_id; the config may point at
 * another file, which the tests use to simulate reboots), the kernel's boot
 * time (btime of /proc/stat), the host name and the host's addresses. All
 * of them are read from the kernel without blocking. Which startup the
 * node is in (a kernel boot is one kind) is startup.c's. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <ifaddrs.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "boot.h"
#include "mst/config.h"
#include "mst/frame.h"
#include "mst/log.h"
#include "mst/macro.h"
#include "mst/time.h"
#include "mst/utf8.h"
#include "spool.h"
#include "util.h"

#define HOST_ADDRESSES_MAX 64

static void file_closep(FILE **f) {
  if (*f)
    fclose(*f);
}

int agent_boot_id_read(const char *path, char **ret) {
  _cleanup_free_ char *id = NULL;
  int r;

  r = agent_read_file_trimmed(path, 4096, &id);
  if (r < 0)
    return r;
  /* Only the first line counts. */
  id[strcspn(id, "\r\n")] = '\0';
  if (id[0] == '\0' || strlen(id) > MST_BOOT_ID_MAX)
    return -EBADMSG;
  for (const char *p = id; *p; p++)
    if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
      return -EBADMSG;
  *ret = TAKE_PTR(id);
  return 0;
}

int agent_boot_kernel_time(uint64_t *ret_usec) {
  _cleanup_(file_closep) FILE *f = NULL;
  char line[256];

  f = fopen("/proc/stat", "re");
  if (!f)
    return -errno;
  while (fgets(line, sizeof(line), f)) {
    unsigned long long btime;
    if (sscanf(line, "btime %llu", &btime) == 1) {
      *ret_usec = (uint64_t)btime * USEC_PER_SEC;
      return 0;
    }
  }
  return -ENODATA;
}

int agent_hostname(char **ret) {
  char buf[HOST_NAME_MAX + 1];

  if (gethostname(buf, sizeof(buf)) < 0)
    return -errno;
  buf[sizeof(buf) - 1] = '\0';
  /* Reported in every Hello, which the aggregator refuses unless it is
   * UTF-8: a name that is not is cleaned, not sent as it is. */
  const char *name = buf[0] ? buf : "localhost";
  char *s = mst_utf8_clean(name, strlen(name), sizeof(buf), NULL, false);
  if (!s)
    return -ENOMEM;
  *ret = s;
  return 0;
}

static bool address_is_interesting(const struct sockaddr *sa) {
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    uint32_t a = ntohl(in->sin_addr.s_addr);
    /* loopback 127/8, link-local 169.254/16 */
    return (a >> 24) != 127 && (a >> 16) != 0xa9fe;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    return !IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) && !IN6_IS_ADDR_LINKLOCAL(&in6->sin6_addr) &&
           !IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr);
  }
  return false;
}

int agent_host_addresses(char ***ret) {
  struct ifaddrs *ifa = NULL;
  char **v;
  size_t n = 0;

  v = calloc(HOST_ADDRESSES_MAX + 1, sizeof(char *));
  if (!v)
    return -ENOMEM;
  if (getifaddrs(&ifa) < 0) {
    /* No addresses is a valid answer; the Hello field may be empty. */
    *ret = v;
    return 0;
  }
  for (struct ifaddrs *i = ifa; i && n < HOST_ADDRESSES_MAX; i = i->ifa_next) {
    char buf[INET6_ADDRSTRLEN];
    const void *src;

    if (!i->ifa_addr || !(i->ifa_flags & IFF_UP) || !address_is_interesting(i->ifa_addr))
      continue;
    if (i->ifa_addr->sa_family == AF_INET)
      src = &((const struct sockaddr_in *)i->ifa_addr)->sin_addr;
    else
      src = &((const struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
    if (!inet_ntop(i->ifa_addr->sa_family, src, buf, sizeof(buf)))
      continue;

    bool dup = false;
    for (size_t k = 0; k < n && !dup; k++)
      dup = strcmp(v[k], buf) == 0;
    if (dup)
      continue;
    v[n] = strdup(buf);
    if (!v[n]) {
      freeifaddrs(ifa);
      mst_strv_free(v);
      return -ENOMEM;
    }
    n++;
  }
  freeifaddrs(ifa);
  *ret = v;
  return (int)n;
}

int agent_boot_setup(struct agent *a) {
  int64_t now_ms = (int64_t)(mst_now_realtime_usec() / USEC_PER_MSEC), first_seen_ms;
  int r;

  r = agent_boot_id_read(a->cfg.boot_id_file, &a->host_boot_id);
  if (r < 0) {
    log_error("cannot read the boot id from %s: %s", a->cfg.boot_id_file,
              r == -EBADMSG ? "not a one-line printable id" : strerror(-r));
    return r;
  }
  r = agent_spool_note_boot(a->spool, a->host_boot_id, now_ms, &first_seen_ms,
                            &a->host_boot_is_new);
  if (r < 0)
    return r;

  /* The kernel knows when the real boot began; a simulated boot id (tests)
   * began when this spool first saw it. */
  if (strcmp(a->cfg.boot_id_file, AGENT_DEFAULT_BOOT_ID_FILE) == 0) {
    r = agent_boot_kernel_time(&a->host_boot_start_usec);
    if (r < 0) {
      log_warning("cannot read the boot time from /proc/stat: %s, using when the boot was "
                  "first seen",
                  strerror(-r));
      a->host_boot_start_usec = (uint64_t)first_seen_ms * USEC_PER_MSEC;
    }
  } else {
    a->host_boot_start_usec = (uint64_t)first_seen_ms * USEC_PER_MSEC;
  }
  uint64_t now = mst_now_realtime_usec();
  log_info("boot %s (%s), started %" PRIu64 " s ago", a->host_boot_id,
           a->host_boot_is_new ? "new to this spool" : "seen before",
           (uint64_t)((now - MST_MIN(a->host_boot_start_usec, now)) / USEC_PER_SEC));
  return 0;
}
