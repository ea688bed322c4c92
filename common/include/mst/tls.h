/* TLS for the agent stream, with GnuTLS, on non-blocking sockets driven by
 * a loop: the aggregator is the server, the agent the client.
 *
 * Credentials (struct mst_tls_creds) are loaded from PEM files and
 * refcounted: each session holds a reference, so a reload (SIGHUP) swaps
 * in new credentials for new connections while the open ones go on with
 * what they started with.
 *
 * A session (struct mst_tls) wraps one connected socket. The caller drives
 * the handshake with mst_tls_handshake() and waits for mst_tls_events()
 * between steps; then mst_tls_recv() and mst_tls_send() work like a
 * non-blocking read() and send(): bytes, 0 at EOF, -EAGAIN, or -errno. The
 * socket stays the caller's to close. Everything here runs on the thread
 * that owns the connection; credentials may be shared between threads
 * only through references taken on one thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <gnutls/gnutls.h>

#include "mst/diag.h"

/* What a daemon's [tls] section names. Any of the paths may be NULL. */
struct mst_tls_files {
  const char *cert; /* our certificate chain (PEM) */
  const char *key;  /* its private key (PEM), not readable by others */
  const char *ca;   /* the CAs that sign the peer's certificate (PEM) */
};

struct mst_tls_creds {
  gnutls_certificate_credentials_t cred;
  bool has_cert; /* cert and key were loaded */
  bool has_ca;
  unsigned refs;
};

/* Loads the files. cert and key go together; a key readable by others is
 * refused. Returns 0 and *ret (one reference), or a negative errno with the
 * reason in err: the file and what is wrong with it. */
int mst_tls_creds_load(const struct mst_tls_files *files, struct mst_tls_creds **ret, char *err,
                       size_t errsize);
/* The same for the [tls] section of the config file path: a problem goes to
 * diag as "path:line: [tls] KEY: ...", at the line of the key it is about. */
int mst_tls_creds_load_config(const char *path, const struct mst_tls_files *files,
                              struct mst_tls_creds **ret, struct mst_diag *diag);
/* The rule for private key files, shared with HTTPS: refused (-EPERM, with
 * "key: PATH is readable by others; ..." in err) when others may read or
 * write it. 0 otherwise, also when it cannot be stat'ed (reading it says
 * why). */
int mst_tls_key_file_check(const char *path, char *err, size_t errsize);
struct mst_tls_creds *mst_tls_creds_ref(struct mst_tls_creds *c);
/* Drops a reference; NULL is fine. */
void mst_tls_creds_unref(struct mst_tls_creds *c);

enum mst_tls_role {
  MST_TLS_SERVER,                     /* no client certificate asked for */
  MST_TLS_SERVER_REQUIRE_CLIENT_CERT, /* one signed by the creds' CA, or the handshake fails */
  MST_TLS_CLIENT,                     /* verifies the server against the CA and server_name */
};

struct mst_tls;

/* Starts a session on the connected, non-blocking socket fd. server_name
 * (client only) is the name or IP address the server's certificate must
 * carry; a DNS name is also sent as SNI. Returns 0 and *ret, or a negative
 * errno with the reason in err. */
int mst_tls_new(struct mst_tls_creds *creds, enum mst_tls_role role, int fd,
                const char *server_name, struct mst_tls **ret, char *err, size_t errsize);
/* Frees the session without a closing alert (the socket is not touched). */
void mst_tls_free(struct mst_tls *t);

/* One handshake step. Returns 1 when it is done, 0 when it waits for the
 * socket (mst_tls_events() says which way), or -EPROTO (-EACCES when the
 * peer's certificate was refused, -ECONNRESET when the peer hung up) with
 * the reason in err. */
int mst_tls_handshake(struct mst_tls *t, char *err, size_t errsize);

/* EPOLLIN or EPOLLOUT: what the last step that could not go on waits for. */
uint32_t mst_tls_events(const struct mst_tls *t);

/* Like recv(): bytes (> 0), 0 at the peer's end of stream, -EAGAIN, or
 * -EPROTO (mst_tls_error() says why). */
ssize_t mst_tls_recv(struct mst_tls *t, void *buf, size_t n);
/* Like send(): bytes taken (> 0), -EAGAIN, or -EPROTO. After -EAGAIN the
 * next call must pass the same bytes again (at least as many): a record
 * was sealed and waits in GnuTLS for the socket. */
ssize_t mst_tls_send(struct mst_tls *t, const void *buf, size_t n);
/* Decrypted bytes GnuTLS holds that the socket's readiness does not show. */
size_t mst_tls_pending(const struct mst_tls *t);

/* The text of the last error of recv or send. */
const char *mst_tls_error(const struct mst_tls *t);
/* A short description of the session for logs: the protocol, the cipher and
 * the peer certificate's subject when there is one. */
void mst_tls_describe(const struct mst_tls *t, char *buf, size_t size);

/* Read and write callbacks for mst_frame_reader_fill_with() and
 * mst_buf_flush_with(); ctx is a struct mst_tls. */
ssize_t mst_tls_read_cb(void *ctx, void *buf, size_t n);
ssize_t mst_tls_write_cb(void *ctx, const void *buf, size_t n);

/* True when the first bytes a client sent look like a TLS handshake record
 * (a ClientHello) rather than a varint-delimited frame. n >= 2. */
bool mst_tls_looks_like_hello(const uint8_t *data, size_t n);
