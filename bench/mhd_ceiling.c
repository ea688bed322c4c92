/* The ceilings the HTTP benchmarks are measured against, in the same run:
 * a minimal libmicrohttpd server with the same thread pool and flags as the
 * aggregator's (internal polling threads, epoll, suspend/resume allowed).
 *
 *   GET /fixed   a fixed 30-byte body (the ceiling for any small GET here)
 *   GET /park    suspended until GET /wake (the bare MHD resume loop)
 *   GET /wake    resumes every parked request, each then gets the 30 bytes
 *
 * Usage: mhd-ceiling PORT [THREADS]. Runs until SIGINT/SIGTERM. */
#include <netinet/in.h>

#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char body[] = "{\"verdict\":\"healthy\",\"x\":123}"; /* 30 bytes */

struct parked {
  struct MHD_Connection *c;
  struct parked *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct parked *parked;
static char seen_mark, woken_mark;

static enum MHD_Result reply(struct MHD_Connection *c) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(sizeof(body) - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
  enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
  if (!*con_cls) {
    *con_cls = &seen_mark; /* queue on the second call: keep-alive */
    return MHD_YES;
  }
  if (strcmp(url, "/park") == 0 && *con_cls != &woken_mark) {
    struct parked *p = malloc(sizeof(*p));
    if (!p)
      return MHD_NO;
    *con_cls = &woken_mark;
    pthread_mutex_lock(&lock);
    p->c = c;
    p->next = parked;
    parked = p;
    MHD_suspend_connection(c);
    pthread_mutex_unlock(&lock);
    return MHD_YES;
  }
  if (strcmp(url, "/wake") == 0) {
    pthread_mutex_lock(&lock);
    while (parked) {
      struct parked *p = parked;
      parked = p->next;
      MHD_resume_connection(p->c);
      free(p);
    }
    pthread_mutex_unlock(&lock);
  }
  return reply(c);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  *con_cls = NULL;
}

int main(int argc, char **argv) {
  sigset_t mask;
  int sig;
  if (argc < 2) {
    fprintf(stderr, "usage: %s PORT [THREADS]\n", argv[0]);
    return 2;
  }
  unsigned threads = argc > 2 ? (unsigned)atoi(argv[2]) : 2;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &mask, NULL);
  struct MHD_Daemon *d = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME,
      (uint16_t)atoi(argv[1]), NULL, NULL, on_request, NULL, MHD_OPTION_NOTIFY_COMPLETED,
      on_completed, NULL, MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT, 20000u,
      MHD_OPTION_CONNECTION_TIMEOUT, 600u, MHD_OPTION_END);
  if (!d) {
    perror("MHD_start_daemon");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  sigwait(&mask, &sig);
  pthread_mutex_lock(&lock);
  while (parked) {
    struct parked *p = parked;
    parked = p->next;
    MHD_resume_connection(p->c);
    free(p);
  }
  pthread_mutex_unlock(&lock);
  MHD_stop_daemon(d);
  return 0;
}
