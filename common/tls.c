/* TLS sessions and credentials for the agent stream; see mst/tls.h. GnuTLS
 * errors are turned into a negative errno here, with GnuTLS's own text (and
 * for certificates, the verification status it prints) in the caller's
 * err buffer, so the daemons log one clear line per failed handshake. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/x509.h>

#include "mst/config.h"
#include "mst/macro.h"
#include "mst/tls.h"

/* The most plaintext sealed into one record. */
#define TLS_RECORD_MAX 16384

struct mst_tls {
  gnutls_session_t session;
  struct mst_tls_creds *creds;
  size_t send_inflight; /* bytes of a record GnuTLS sealed but could not send */
  bool handshaken;
  int last_error;    /* GnuTLS's code, for mst_tls_error() */
  char *server_name; /* GnuTLS keeps the pointer for the session's life */
};

/* The largest cert, key or CA file taken: a CA bundle of every public root
 * is under 300 KiB. */
#define TLS_FILE_MAX (4 * 1024 * 1024)

/* GnuTLS reads cert, key and CA files whole, by path, with no cap of its
 * own: a path to /dev/zero, a FIFO or a huge file would grow memory without
 * limit (or block) while the daemon starts. So only a readable regular file
 * of at most TLS_FILE_MAX bytes goes to GnuTLS. (Checked by path just
 * before GnuTLS opens it: a file replaced in between is the operator's own
 * doing.) */
static int readable_file(const char *what, const char *path, char *err, size_t errsize) {
  struct stat st;

  if (access(path, R_OK) < 0 || stat(path, &st) < 0) {
    int r = -errno;
    snprintf(err, errsize, "%s: cannot read %s: %s", what, path, strerror(-r));
    return r;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, errsize, "%s: %s is not a regular file", what, path);
    return -EINVAL;
  }
  if (st.st_size > TLS_FILE_MAX) {
    snprintf(err, errsize, "%s: %s has %lld bytes, over the cap of %d MiB for a PEM file", what,
             path, (long long)st.st_size, TLS_FILE_MAX / (1024 * 1024));
    return -EFBIG;
  }
  return 0;
}

int mst_tls_key_file_check(const char *path, char *err, size_t errsize) {
  struct stat st;

  if (stat(path, &st) == 0 && (st.st_mode & (S_IROTH | S_IWOTH))) {
    snprintf(err, errsize, "key: %s is readable by others; make it private (chmod 600)", path);
    return -EPERM;
  }
  return 0;
}

int mst_tls_creds_load(const struct mst_tls_files *files, struct mst_tls_creds **ret, char *err,
                       size_t errsize) {
  struct mst_tls_creds *c;
  int r;

  if (!files->cert != !files->key) {
    snprintf(err, errsize, "cert and key must be set together");
    return -EINVAL;
  }
  if (files->key) {
    r = readable_file("key", files->key, err, errsize);
    if (r < 0)
      return r;
    r = mst_tls_key_file_check(files->key, err, errsize);
    if (r < 0)
      return r;
    r = readable_file("cert", files->cert, err, errsize);
    if (r < 0)
      return r;
  }
  if (files->ca) {
    r = readable_file("ca", files->ca, err, errsize);
    if (r < 0)
      return r;
  }

  c = calloc(1, sizeof(*c));
  if (!c)
    return -ENOMEM;
  c->refs = 1;
  r = gnutls_certificate_allocate_credentials(&c->cred);
  if (r < 0) {
    free(c);
    snprintf(err, errsize, "cannot allocate TLS credentials: %s", gnutls_strerror(r));
    return -ENOMEM;
  }
  if (files->cert) {
    r = gnutls_certificate_set_x509_key_file(c->cred, files->cert, files->key, GNUTLS_X509_FMT_PEM);
    if (r < 0) {
      snprintf(err, errsize, "cert: cannot load %s with key %s: %s", files->cert, files->key,
               gnutls_strerror(r));
      goto fail;
    }
    c->has_cert = true;
  }
  if (files->ca) {
    r = gnutls_certificate_set_x509_trust_file(c->cred, files->ca, GNUTLS_X509_FMT_PEM);
    if (r <= 0) {
      snprintf(err, errsize, "ca: %s: %s", files->ca,
               r < 0 ? gnutls_strerror(r) : "no certificate in it");
      goto fail;
    }
    c->has_ca = true;
  }
  *ret = c;
  return 0;

fail:
  gnutls_certificate_free_credentials(c->cred);
  free(c);
  return -EINVAL;
}

int mst_tls_creds_load_config(const char *path, const struct mst_tls_files *files,
                              struct mst_tls_creds **ret, struct mst_diag *diag) {
  static const char *const keys[] = {"cert", "key", "ca"};
  char err[512];
  int r = mst_tls_creds_load(files, ret, err, sizeof(err));

  if (r < 0) {
    /* Each message starts with the key it is about ("key: ..."). */
    const char *key = "cert";
    for (size_t i = 0; i < ELEMENTSOF(keys); i++)
      if (strncmp(err, keys[i], strlen(keys[i])) == 0 && err[strlen(keys[i])] == ':')
        key = keys[i];
    mst_diag_add(diag, path, mst_conf_key_line(path, "tls", key), "[tls] %s", err);
  }
  return r;
}

struct mst_tls_creds *mst_tls_creds_ref(struct mst_tls_creds *c) {
  if (c)
    c->refs++;
  return c;
}

void mst_tls_creds_unref(struct mst_tls_creds *c) {
  if (!c || --c->refs > 0)
    return;
  gnutls_certificate_free_credentials(c->cred);
  free(c);
}

static bool is_ip_literal(const char *s) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

int mst_tls_new(struct mst_tls_creds *creds, enum mst_tls_role role, int fd,
                const char *server_name, struct mst_tls **ret, char *err, size_t errsize) {
  bool server = role != MST_TLS_CLIENT;
  struct mst_tls *t;
  int r;

  if (server && !creds->has_cert) {
    snprintf(err, errsize, "a TLS server needs a certificate and its key");
    return -EINVAL;
  }
  if ((role == MST_TLS_CLIENT || role == MST_TLS_SERVER_REQUIRE_CLIENT_CERT) && !creds->has_ca) {
    snprintf(err, errsize, "verifying the peer needs a CA");
    return -EINVAL;
  }
  t = calloc(1, sizeof(*t));
  if (!t)
    return -ENOMEM;
  if (server_name && !(t->server_name = strdup(server_name))) {
    free(t);
    return -ENOMEM;
  }
  r = gnutls_init(&t->session,
                  (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
  if (r < 0) {
    free(t->server_name);
    free(t);
    snprintf(err, errsize, "cannot start a TLS session: %s", gnutls_strerror(r));
    return -ENOMEM;
  }
  r = gnutls_set_default_priority(t->session);
  if (r >= 0)
    r = gnutls_credentials_set(t->session, GNUTLS_CRD_CERTIFICATE, creds->cred);
  if (r >= 0 && role == MST_TLS_CLIENT && server_name && *server_name &&
      !is_ip_literal(server_name))
    r = gnutls_server_name_set(t->session, GNUTLS_NAME_DNS, server_name, strlen(server_name));
  if (r < 0) {
    snprintf(err, errsize, "cannot set up the TLS session: %s", gnutls_strerror(r));
    gnutls_deinit(t->session);
    free(t->server_name);
    free(t);
    return -EINVAL;
  }
  if (role == MST_TLS_SERVER_REQUIRE_CLIENT_CERT) {
    gnutls_certificate_server_set_request(t->session, GNUTLS_CERT_REQUIRE);
    gnutls_session_set_verify_cert(t->session, NULL, 0);
  } else if (role == MST_TLS_CLIENT) {
    /* The chain against the CA, and the name (or an IP address SAN). */
    gnutls_session_set_verify_cert(t->session, t->server_name, 0);
  }
  /* The daemons' own timers bound the handshake. */
  gnutls_handshake_set_timeout(t->session, GNUTLS_INDEFINITE_TIMEOUT);
  gnutls_transport_set_int(t->session, fd);
  t->creds = mst_tls_creds_ref(creds);
  *ret = t;
  return 0;
}

void mst_tls_free(struct mst_tls *t) {
  if (!t)
    return;
  /* One non-blocking try at a closing alert, so that the peer sees a clean
   * end of stream rather than a truncation. */
  if (t->handshaken)
    (void)gnutls_bye(t->session, GNUTLS_SHUT_WR);
  gnutls_deinit(t->session);
  mst_tls_creds_unref(t->creds);
  free(t->server_name);
  free(t);
}

static void verify_status_text(struct mst_tls *t, char *err, size_t errsize) {
  unsigned status = gnutls_session_get_verify_cert_status(t->session);
  gnutls_datum_t out = {};

  if (gnutls_certificate_verification_status_print(status, gnutls_certificate_type_get(t->session),
                                                   &out, 0) == 0) {
    snprintf(err, errsize, "the peer's certificate is not valid: %s", (const char *)out.data);
    gnutls_free(out.data);
    return;
  }
  snprintf(err, errsize, "the peer's certificate is not valid");
}

int mst_tls_handshake(struct mst_tls *t, char *err, size_t errsize) {
  for (;;) {
    int r = gnutls_handshake(t->session);

    if (r == GNUTLS_E_SUCCESS) {
      t->handshaken = true;
      return 1;
    }
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
      return 0;
    if (!gnutls_error_is_fatal(r))
      continue; /* a warning alert: go on */
    switch (r) {
    case GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR:
      verify_status_text(t, err, errsize);
      return -EACCES;
    case GNUTLS_E_NO_CERTIFICATE_FOUND:
    case GNUTLS_E_CERTIFICATE_REQUIRED:
      snprintf(err, errsize, "the peer sent no certificate, and one is required");
      return -EACCES;
    case GNUTLS_E_FATAL_ALERT_RECEIVED: {
      gnutls_alert_description_t a = gnutls_alert_get(t->session);
      const char *name = gnutls_alert_get_name(a);
      snprintf(err, errsize, "the peer refused the handshake: %s", name ? name : "alert");
      return a == GNUTLS_A_BAD_CERTIFICATE || a == GNUTLS_A_UNKNOWN_CA ||
                     a == GNUTLS_A_CERTIFICATE_REQUIRED || a == GNUTLS_A_ACCESS_DENIED ||
                     a == GNUTLS_A_CERTIFICATE_UNKNOWN
                 ? -EACCES
                 : -EPROTO;
    }
    case GNUTLS_E_PULL_ERROR:
    case GNUTLS_E_PUSH_ERROR:
    case GNUTLS_E_PREMATURE_TERMINATION:
      snprintf(err, errsize, "the peer closed the connection during the handshake (%s)",
               gnutls_strerror(r));
      return -ECONNRESET;
    default:
      snprintf(err, errsize, "%s", gnutls_strerror(r));
      return -EPROTO;
    }
  }
}

uint32_t mst_tls_events(const struct mst_tls *t) {
  return gnutls_record_get_direction(t->session) ? EPOLLOUT : EPOLLIN;
}

ssize_t mst_tls_recv(struct mst_tls *t, void *buf, size_t n) {
  for (;;) {
    ssize_t r = gnutls_record_recv(t->session, buf, n);

    if (r >= 0)
      return r;
    if (r == GNUTLS_E_AGAIN)
      return -EAGAIN;
    if (r == GNUTLS_E_INTERRUPTED)
      continue;
    if (r == GNUTLS_E_PREMATURE_TERMINATION)
      return 0; /* the peer closed without a closing alert: an end all the same */
    t->last_error = (int)r;
    return -EPROTO;
  }
}

ssize_t mst_tls_send(struct mst_tls *t, const void *buf, size_t n) {
  size_t len = t->send_inflight ? t->send_inflight : MST_MIN(n, (size_t)TLS_RECORD_MAX);

  for (;;) {
    ssize_t r = gnutls_record_send(t->session, buf, len);

    if (r >= 0) {
      t->send_inflight = 0;
      return r;
    }
    if (r == GNUTLS_E_AGAIN) {
      t->send_inflight = len;
      return -EAGAIN;
    }
    if (r == GNUTLS_E_INTERRUPTED)
      continue;
    t->last_error = (int)r;
    return -EPROTO;
  }
}

size_t mst_tls_pending(const struct mst_tls *t) {
  return gnutls_record_check_pending(t->session);
}

const char *mst_tls_error(const struct mst_tls *t) {
  return gnutls_strerror(t->last_error);
}

void mst_tls_describe(const struct mst_tls *t, char *buf, size_t size) {
  char *desc = gnutls_session_get_desc(t->session);
  unsigned n = 0;
  const gnutls_datum_t *peers = gnutls_certificate_get_peers(t->session, &n);
  gnutls_x509_crt_t crt = NULL;
  gnutls_datum_t dn = {};

  if (n > 0 && gnutls_x509_crt_init(&crt) >= 0 &&
      gnutls_x509_crt_import(crt, &peers[0], GNUTLS_X509_FMT_DER) >= 0)
    (void)gnutls_x509_crt_get_dn3(crt, &dn, 0);
  snprintf(buf, size, "%s%s%s", desc ? desc : "TLS", dn.data ? ", peer " : "",
           dn.data ? (const char *)dn.data : "");
  gnutls_free(dn.data);
  if (crt)
    gnutls_x509_crt_deinit(crt);
  gnutls_free(desc);
}

ssize_t mst_tls_read_cb(void *ctx, void *buf, size_t n) {
  return mst_tls_recv(ctx, buf, n);
}

ssize_t mst_tls_write_cb(void *ctx, const void *buf, size_t n) {
  return mst_tls_send(ctx, buf, n);
}

bool mst_tls_looks_like_hello(const uint8_t *data, size_t n) {
  /* A handshake record (22) of TLS 1.x (major version 3). As a frame that
   * would be a 22-byte message whose first tag is field 0: not protobuf. */
  return n >= 2 && data[0] == 0x16 && data[1] == 0x03;
}
