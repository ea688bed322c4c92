/* common/tls.c: loading credentials (and refusing what cannot be used, with
 * the file named), telling a ClientHello from a frame, and a real
 * handshake and transfer between a server and a client session over a
 * non-blocking socketpair, stepped by hand as a loop would, with buffers
 * small enough that sends meet -EAGAIN. Certificates are made with the
 * openssl command line in a private directory. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mst/frame.h"
#include "mst/macro.h"
#include "mst/tls.h"
#include "unit-helpers.h"

static char *dir;
static char *ca, *cert, *key, *other_ca, *empty, *huge;

static char *path_in(const char *name) {
  char *p = NULL;
  cr_assert_geq(asprintf(&p, "%s/%s", dir, name), 0);
  return p;
}

static void run(const char *cmd) {
  char *full = NULL;
  cr_assert_geq(asprintf(&full, "cd %s && (%s) >/dev/null 2>&1", dir, cmd), 0);
  cr_assert_eq(system(full), 0, "failed: %s", cmd);
  free(full);
}

static void make_pki(void) {
  dir = unit_tmpdir();
  run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
      "-out ca.pem -days 2 -subj /CN=unit-ca -addext basicConstraints=critical,CA:TRUE");
  run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout o.key "
      "-out other.pem -days 2 -subj /CN=other-ca -addext basicConstraints=critical,CA:TRUE");
  run("printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > ext && "
      "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout srv.key "
      "-out srv.csr -subj /CN=srv && openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key "
      "-CAcreateserial -out srv.pem -days 2 -extfile ext && chmod 600 srv.key");
  ca = path_in("ca.pem");
  cert = path_in("srv.pem");
  key = path_in("srv.key");
  other_ca = path_in("other.pem");
  /* A regular file without PEM, and one a byte over the 4 MiB cap (sparse). */
  run("touch empty.pem && truncate -s 4194305 huge.pem");
  empty = path_in("empty.pem");
  huge = path_in("huge.pem");
}

static void drop_pki(void) {
  free(ca);
  free(cert);
  free(key);
  free(other_ca);
  free(empty);
  free(huge);
  unit_rmtree(dir);
}

TestSuite(tls, .init = make_pki, .fini = drop_pki);

struct load_case {
  const char *what;
  int cert, key, ca; /* 0 unset, 1 the good file, 2 a missing file, 3 a file with no PEM */
  int want;
  const char *message; /* in the error */
};

static const char *pick(int which, const char *good) {
  static char missing[] = "/nonexistent/muster.pem";
  if (which == 1)
    return good;
  if (which == 2)
    return missing;
  if (which == 3)
    return empty;
  return NULL;
}

Test(tls, load_refuses_what_cannot_be_used) {
  static const struct load_case cases[] = {
      {"all good", 1, 1, 1, 0, NULL},
      {"ca only", 0, 0, 1, 0, NULL},
      {"cert without key", 1, 0, 0, -EINVAL, "cert and key must be set together"},
      {"key without cert", 0, 1, 0, -EINVAL, "cert and key must be set together"},
      {"missing cert", 2, 1, 0, -ENOENT, "cert: cannot read /nonexistent/muster.pem"},
      {"missing key", 1, 2, 0, -ENOENT, "key: cannot read /nonexistent/muster.pem"},
      {"missing ca", 0, 0, 2, -ENOENT, "ca: cannot read /nonexistent/muster.pem"},
      {"ca without a certificate", 0, 0, 3, -EINVAL, "no certificate in it"},
      {"cert without a certificate", 3, 1, 0, -EINVAL, "cert: cannot load "},
  };
  for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
    const struct load_case *c = &cases[i];
    struct mst_tls_files f = {pick(c->cert, cert), pick(c->key, key), pick(c->ca, ca)};
    struct mst_tls_creds *creds = NULL;
    char err[512] = "";
    int r = mst_tls_creds_load(&f, &creds, err, sizeof(err));
    cr_expect_eq(r, c->want, "%s: got %d (%s)", c->what, r, err);
    if (c->message)
      cr_expect(strstr(err, c->message), "%s: error '%s' lacks '%s'", c->what, err, c->message);
    mst_tls_creds_unref(creds);
  }
}

/* GnuTLS reads the files whole: a device it would read without end, or a
 * file over the cap, is refused before, as cert, key or CA alike. */
Test(tls, load_refuses_devices_and_files_over_the_cap) {
  const char *bad[] = {"/dev/zero", huge};
  static const char *const names[] = {"cert", "key", "ca"};
  for (size_t b = 0; b < ELEMENTSOF(bad); b++)
    for (size_t k = 0; k < ELEMENTSOF(names); k++) {
      struct mst_tls_files f = {cert, key, ca};
      const char **slot = k == 0 ? &f.cert : k == 1 ? &f.key : &f.ca;
      struct mst_tls_creds *creds = NULL;
      char err[512] = "", want[512];
      *slot = bad[b];
      snprintf(want, sizeof(want), "%s: %s %s", names[k], bad[b],
               b == 0 ? "is not a regular file" : "has 4194305 bytes, over the cap of 4 MiB");
      int r = mst_tls_creds_load(&f, &creds, err, sizeof(err));
      cr_expect_eq(r, b == 0 ? -EINVAL : -EFBIG, "%s %s: got %d (%s)", names[k], bad[b], r, err);
      cr_expect(strstr(err, want), "%s: error '%s' lacks '%s'", names[k], err, want);
      cr_expect_null(creds);
    }
}

Test(tls, key_readable_by_others_refused) {
  struct mst_tls_files f = {cert, key, NULL};
  struct mst_tls_creds *creds = NULL;
  char err[512] = "";

  cr_assert_eq(chmod(key, 0644), 0);
  cr_expect_eq(mst_tls_creds_load(&f, &creds, err, sizeof(err)), -EPERM);
  cr_expect(strstr(err, "readable by others"), "%s", err);
  cr_assert_eq(chmod(key, 0600), 0);
}

Test(tls, client_hello_told_from_a_frame) {
  static const struct {
    uint8_t bytes[2];
    bool hello;
  } cases[] = {
      {{0x16, 0x03}, true},  /* handshake record, TLS 1.x */
      {{0x16, 0x0a}, false}, /* a 22-byte frame: field 1, varint */
      {{0x0a, 0x03}, false}, /* a 10-byte frame */
      {{0x15, 0x03}, false}, /* an alert record is no ClientHello */
  };
  for (size_t i = 0; i < ELEMENTSOF(cases); i++)
    cr_expect_eq(mst_tls_looks_like_hello(cases[i].bytes, 2), cases[i].hello, "case %zu", i);
  cr_expect_not(mst_tls_looks_like_hello((const uint8_t *)"\x16", 1));
}

struct pair {
  int fds[2];
  struct mst_tls_creds *server_creds, *client_creds;
  struct mst_tls *server, *client;
};

static void pair_open(struct pair *p, const char *client_ca, const char *name) {
  struct mst_tls_files sf = {cert, key, NULL}, cf = {NULL, NULL, client_ca};
  char err[512];

  cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p->fds), 0);
  /* Small socket buffers, so that a large send meets -EAGAIN. */
  for (int i = 0; i < 2; i++)
    (void)setsockopt(p->fds[i], SOL_SOCKET, SO_SNDBUF, &(int){4096}, sizeof(int));
  cr_assert_eq(mst_tls_creds_load(&sf, &p->server_creds, err, sizeof(err)), 0, "%s", err);
  cr_assert_eq(mst_tls_creds_load(&cf, &p->client_creds, err, sizeof(err)), 0, "%s", err);
  cr_assert_eq(
      mst_tls_new(p->server_creds, MST_TLS_SERVER, p->fds[0], NULL, &p->server, err, sizeof(err)),
      0, "%s", err);
  cr_assert_eq(
      mst_tls_new(p->client_creds, MST_TLS_CLIENT, p->fds[1], name, &p->client, err, sizeof(err)),
      0, "%s", err);
}

static void pair_close(struct pair *p) {
  mst_tls_free(p->server);
  mst_tls_free(p->client);
  /* The sessions hold their own references. */
  mst_tls_creds_unref(p->server_creds);
  mst_tls_creds_unref(p->client_creds);
  close(p->fds[0]);
  close(p->fds[1]);
}

/* Steps both handshakes until both are done or one fails; returns the
 * client's result. */
static int pair_handshake(struct pair *p, char *err, size_t errsize) {
  int rs = 0, rc = 0;
  char serr[512];

  for (int i = 0; i < 1000 && (rs == 0 || rc == 0); i++) {
    if (rs == 0)
      rs = mst_tls_handshake(p->server, serr, sizeof(serr));
    if (rc == 0)
      rc = mst_tls_handshake(p->client, err, errsize);
    if (rs < 0 || rc < 0)
      break;
  }
  return rc;
}

Test(tls, handshake_and_transfer_through_eagain) {
  struct pair p = {0};
  char err[512] = "";

  pair_open(&p, ca, "127.0.0.1");
  cr_assert_eq(pair_handshake(&p, err, sizeof(err)), 1, "%s", err);
  uint32_t ev = mst_tls_events(p.client);
  cr_expect(ev == EPOLLIN || ev == EPOLLOUT);

  /* 256 KiB through a buffer of a few KiB: the sender sees -EAGAIN and
   * must go on with the same bytes; the receiver gets them all in order. */
  enum { TOTAL = 256 * 1024 };
  struct mst_buf out;
  struct mst_frame_reader in;
  mst_buf_init(&out, TOTAL);
  mst_frame_reader_init(&in, TOTAL);
  uint8_t *payload = malloc(TOTAL);
  cr_assert_not_null(payload);
  for (size_t i = 0; i < TOTAL; i++)
    payload[i] = (uint8_t)(i * 7 + i / 251);
  cr_assert_eq(mst_buf_append(&out, payload, TOTAL), 0);
  size_t received = 0;
  unsigned again = 0;
  for (int round = 0; round < 100000 && received < TOTAL; round++) {
    int r = mst_buf_flush_with(&out, mst_tls_write_cb, p.client);
    cr_assert(r == 0 || r == -EAGAIN, "flush: %d", r);
    again += r == -EAGAIN;
    ssize_t n;
    while ((n = mst_frame_reader_fill_with(&in, mst_tls_read_cb, p.server)) > 0 ||
           mst_tls_pending(p.server) > 0) {
      cr_assert_eq(memcmp(in.buf + in.start, payload + received, mst_frame_reader_pending(&in)), 0,
                   "bytes differ at %zu", received);
      received += mst_frame_reader_pending(&in);
      in.start = in.len = 0;
    }
    cr_assert_eq(n, -EAGAIN, "fill: %zd", n);
  }
  cr_expect_eq(received, TOTAL);
  cr_expect_gt(again, 0, "the sends never met a full socket");

  /* The client goes: the server sees the end of the stream. */
  mst_tls_free(p.client);
  p.client = NULL;
  uint8_t byte;
  ssize_t n;
  while ((n = mst_tls_recv(p.server, &byte, 1)) == -EAGAIN)
    (void)poll(&(struct pollfd){.fd = p.fds[0], .events = POLLIN}, 1, 100);
  cr_expect_eq(n, 0);

  free(payload);
  mst_buf_done(&out);
  mst_frame_reader_done(&in);
  pair_close(&p);
}

Test(tls, client_refuses_an_unknown_ca_or_a_wrong_name) {
  static const struct {
    const char *what;
    int other_ca;
    const char *name;
  } cases[] = {
      {"another CA", 1, "127.0.0.1"},
      {"a name the certificate lacks", 0, "aggr.example"},
      {"an address the certificate lacks", 0, "127.0.0.2"},
  };
  for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
    struct pair p = {0};
    char err[512] = "";
    pair_open(&p, cases[i].other_ca ? other_ca : ca, cases[i].name);
    cr_expect_eq(pair_handshake(&p, err, sizeof(err)), -EACCES, "%s: %s", cases[i].what, err);
    cr_expect(strstr(err, "not valid"), "%s: %s", cases[i].what, err);
    pair_close(&p);
  }
}
