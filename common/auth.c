/* Agent credentials: the shared token file and a constant-time comparison,
 * so that the time a Hello takes to be refused says nothing about how much
 * of the token was right. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mst/auth.h"
#include "mst/macro.h"

#define TOKEN_MAX 4096

int mst_token_read(const char *path, char **ret) {
  _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  struct stat st;
  char buf[TOKEN_MAX + 1];
  ssize_t n;
  size_t len;

  if (fd < 0)
    return -errno;
  if (fstat(fd, &st) < 0)
    return -errno;
  if (!S_ISREG(st.st_mode))
    return -EINVAL;
  if (st.st_mode & (S_IRWXG | S_IRWXO))
    return -EPERM;
  n = read(fd, buf, TOKEN_MAX);
  if (n < 0)
    return -errno;
  buf[n] = '\0';
  len = strcspn(buf, "\r\n");
  buf[len] = '\0';
  while (len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == '\t'))
    buf[--len] = '\0';
  if (len == 0)
    return -EINVAL;
  *ret = strdup(buf);
  return *ret ? 0 : -ENOMEM;
}

bool mst_token_equal(const char *expected, const char *given) {
  size_t el = expected ? strlen(expected) : 0;
  size_t gl = given ? strlen(given) : 0;
  unsigned char diff = el != gl;

  /* Walk the whole expected token whatever the given one looks like. */
  for (size_t i = 0; i < el; i++) {
    unsigned char g = i < gl ? (unsigned char)given[i] : 0;
    diff |= (unsigned char)expected[i] ^ g;
  }
  return diff == 0;
}
