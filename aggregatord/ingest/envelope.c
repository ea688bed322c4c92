/* What an agent may send, checked without a connection: see envelope.h.
 *
 * Everything here only reads the decoded message, so the same checks serve
 * conn.c (which then applies the frame to the model) and the fuzz target
 * (which feeds it arbitrary bytes). The reasons are the texts the Reject
 * carries and the log quotes. */
#include <errno.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/envelope.h"
#include "mst/frame.h"
#include "mst/macro.h"
#include "mst/state.h"
#include "mst/utf8.h"

_printf_(3, 4) static int refuse(struct aggr_reject *rej, Muster__RejectCode code, const char *fmt,
                                 ...) {
  va_list ap;

  rej->code = code;
  va_start(ap, fmt);
  vsnprintf(rej->reason, sizeof(rej->reason), fmt, ap);
  va_end(ap);
  return code == MUSTER__REJECT_CODE__REJECT_PROTOCOL ? -EPROTO : -EBADMSG;
}

static bool state_valid(int s) {
  return s >= MST_STATE_STARTING && s <= MST_STATE_UNKNOWN;
}

static bool component_name_valid(const char *name) {
  return name && name[0] && strlen(name) <= MST_COMPONENT_NAME_MAX;
}

/* --- the decoder's memory --------------------------------------------------- */

/* A chunk of at least this much; one of at most DECODER_KEEP_MAX is kept
 * between frames (a larger frame's memory goes back after it). */
#define DECODER_CHUNK_MIN (64u * 1024)
#define DECODER_KEEP_MAX  (1024u * 1024)
#define DECODER_ALIGN     alignof(max_align_t)

struct aggr_decoder_chunk {
  struct aggr_decoder_chunk *next;
  size_t cap, used;
  alignas(max_align_t) unsigned char data[];
};

static void *decoder_alloc(void *userdata, size_t size) {
  struct aggr_decoder *d = userdata;
  struct aggr_decoder_chunk *c = d->chunks;
  if (size > SIZE_MAX / 2) {
    d->oom = true;
    return NULL;
  }
  size = (size + DECODER_ALIGN - 1) & ~(DECODER_ALIGN - 1);
  if (!c || c->cap - c->used < size) {
    size_t cap = MST_MAX(MST_MAX(d->next_cap, (size_t)DECODER_CHUNK_MIN), size);
    c = malloc(sizeof(*c) + cap);
    if (!c) {
      d->oom = true;
      return NULL;
    }
    c->cap = cap;
    c->used = 0;
    c->next = d->chunks;
    d->chunks = c;
    d->next_cap = cap * 2; /* a frame that needs more grows geometrically */
  }
  void *p = c->data + c->used;
  c->used += size;
  return p;
}

static void decoder_free(void *userdata, void *p) {
  (void)userdata;
  (void)p; /* everything goes at once, in decoder_reset() */
}

/* Forgets the last frame. When it took more than one chunk, the next frame
 * gets one chunk as large as all of them (up to DECODER_KEEP_MAX). */
static void decoder_reset(struct aggr_decoder *d) {
  struct aggr_decoder_chunk *c = d->chunks;
  d->oom = false;
  if (!c)
    return;
  if (!c->next && c->cap <= DECODER_KEEP_MAX) {
    c->used = 0;
    return;
  }
  size_t total = 0;
  while (c) {
    struct aggr_decoder_chunk *next = c->next;
    total += c->cap;
    free(c);
    c = next;
  }
  d->chunks = NULL;
  d->next_cap = MST_MIN(total, (size_t)DECODER_KEEP_MAX);
}

int aggr_decoder_decode(struct aggr_decoder *d, const uint8_t *data, size_t len,
                        Muster__Envelope **ret_env, struct aggr_reject *ret_reject) {
  static const uint8_t empty[1];
  ProtobufCAllocator allocator = {
      .alloc = decoder_alloc,
      .free = decoder_free,
      .allocator_data = d,
  };
  decoder_reset(d);
  Muster__Envelope *env = muster__envelope__unpack(&allocator, len, data ? data : empty);
  if (!env && d->oom) {
    refuse(ret_reject, MUSTER__REJECT_CODE__REJECT_OVERLOADED, "out of memory");
    return -ENOMEM;
  }
  if (!env || env->body_case == MUSTER__ENVELOPE__BODY__NOT_SET)
    return refuse(ret_reject, MUSTER__REJECT_CODE__REJECT_MALFORMED,
                  "a %zu-byte frame that does not decode as an Envelope", len);
  *ret_env = env;
  return 0;
}

void aggr_decoder_done(struct aggr_decoder *d) {
  decoder_reset(d);
  free(d->chunks);
  *d = (struct aggr_decoder)AGGR_DECODER_INIT;
}

/* The Hello's own fields; whether it may come at all is checked before.
 * Every text is capped (frame.h): what is stored, logged and served of a
 * node is never larger than a DNS name or a hash however large the frame. */
static int hello_check(const Muster__Hello *h, struct aggr_reject *rej) {
  const struct {
    const char *name, *value;
    size_t max;
  } texts[] = {
      {"node_id", h->node_id, MST_NODE_ID_MAX},
      {"spool_id", h->spool_id, MST_SPOOL_ID_MAX},
      {"hostname", h->hostname, MST_HOSTNAME_MAX},
      {"role", h->role, MST_ROLE_MAX},
      {"boot_id", h->boot_id, MST_BOOT_ID_MAX},
      {"profile_digest", h->profile_digest, MST_PROFILE_DIGEST_MAX},
      {"agent_version", h->agent_version, MST_AGENT_VERSION_MAX},
      {"startup_cause", h->startup_cause, MST_STARTUP_CAUSE_MAX},
      {"dcos_version", h->dcos_version, MST_DCOS_VERSION_MAX},
      {"mesos_id", h->mesos_id, MST_MESOS_ID_MAX},
  };

  if (!h->node_id || !h->node_id[0])
    return refuse(rej, MUSTER__REJECT_CODE__REJECT_BAD_HELLO, "Hello without node_id");
  for (size_t i = 0; i < ELEMENTSOF(texts); i++) {
    size_t len = texts[i].value ? strlen(texts[i].value) : 0;
    if (len > texts[i].max)
      return refuse(rej, MUSTER__REJECT_CODE__REJECT_BAD_HELLO,
                    "Hello with an overlong %s (%zu bytes, at most %zu)", texts[i].name, len,
                    texts[i].max);
    if (!mst_utf8_valid(texts[i].value))
      return refuse(rej, MUSTER__REJECT_CODE__REJECT_BAD_HELLO, "Hello with a %s that is not UTF-8",
                    texts[i].name);
  }
  if (!h->spool_id || !h->spool_id[0])
    return refuse(rej, MUSTER__REJECT_CODE__REJECT_BAD_HELLO, "Hello without spool_id");
  /* Seqs are stored as SQLite integers: one above INT64_MAX would come back
   * negative (in the Welcome, in the history). */
  if (h->last_seq > INT64_MAX)
    return refuse(rej, MUSTER__REJECT_CODE__REJECT_BAD_HELLO,
                  "Hello with last_seq %llu, above the largest seq (2^63-1)",
                  (unsigned long long)h->last_seq);
  return 0;
}

/* A component's output as the agent cuts it: at most MST_OUTPUT_MAX bytes
 * of text and the mark. */
static bool output_valid(const char *output) {
  return !output || strlen(output) <= MST_OUTPUT_WIRE_MAX;
}

/* Every change of a batch, before any of it is applied: one bad change
 * refuses the whole batch. The seqs must go up by one and stay below 2^63:
 * where the batch may start is the spool's business (spools.h). */
static int changes_check(const Muster__ChangeBatch *b, struct aggr_reject *rej) {
  for (size_t i = 0; i < b->n_changes; i++) {
    const Muster__Change *ch = b->changes[i];
    if (ch->seq > INT64_MAX) {
      refuse(rej, MUSTER__REJECT_CODE__REJECT_PROTOCOL,
             "change seq %llu is above the largest seq (2^63-1)", (unsigned long long)ch->seq);
      return -ERANGE;
    }
    if (i > 0 && ch->seq != b->changes[i - 1]->seq + 1) {
      refuse(rej, MUSTER__REJECT_CODE__REJECT_PROTOCOL,
             "change seq %llu follows seq %llu in one batch (seqs must go up by one)",
             (unsigned long long)ch->seq, (unsigned long long)b->changes[i - 1]->seq);
      return -ERANGE;
    }
    if (!component_name_valid(ch->component) || !state_valid(ch->to) || ch->seq == 0)
      return refuse(rej, MUSTER__REJECT_CODE__REJECT_MALFORMED,
                    "change seq %llu has no component, an overlong name or an invalid state",
                    (unsigned long long)ch->seq);
    if (!output_valid(ch->output) || (ch->boot_id && strlen(ch->boot_id) > MST_BOOT_ID_MAX))
      return refuse(rej, MUSTER__REJECT_CODE__REJECT_MALFORMED,
                    "change seq %llu has an overlong output or boot_id (at most %zu and %d bytes)",
                    (unsigned long long)ch->seq, MST_OUTPUT_WIRE_MAX, MST_BOOT_ID_MAX);
    if (!mst_utf8_valid(ch->component) || !mst_utf8_valid(ch->output) ||
        !mst_utf8_valid(ch->boot_id))
      return refuse(rej, MUSTER__REJECT_CODE__REJECT_MALFORMED,
                    "change seq %llu has a string that is not UTF-8", (unsigned long long)ch->seq);
  }
  return 0;
}

static int snapshot_check(const Muster__Snapshot *s, struct aggr_reject *rej) {
  for (size_t i = 0; i < s->n_components; i++) {
    const Muster__ComponentStatus *cs = s->components[i];
    if (!component_name_valid(cs->component) || !state_valid(cs->state) ||
        !mst_utf8_valid(cs->component) || !mst_utf8_valid(cs->output))
      return refuse(rej, MUSTER__REJECT_CODE__REJECT_MALFORMED,
                    "snapshot entry without component name or with an invalid state");
    if (!output_valid(cs->output))
      return refuse(rej, MUSTER__REJECT_CODE__REJECT_MALFORMED,
                    "snapshot entry with an output over %zu bytes", MST_OUTPUT_WIRE_MAX);
    /* Shown as they come, in every node body and DC/OS's unit lists. */
    if ((cs->description && strlen(cs->description) > MST_DESCRIPTION_MAX) ||
        (cs->display_name && strlen(cs->display_name) > MST_DISPLAY_NAME_MAX) ||
        !mst_utf8_valid(cs->description) || !mst_utf8_valid(cs->display_name))
      return refuse(rej, MUSTER__REJECT_CODE__REJECT_MALFORMED,
                    "snapshot entry %s with a description over %d bytes, a display_name over %d "
                    "bytes, or either not UTF-8",
                    cs->component, MST_DESCRIPTION_MAX, MST_DISPLAY_NAME_MAX);
  }
  return 0;
}

/* The fault is shown in reasons and bodies as it comes: capped and UTF-8
 * like every other text. */
static int heartbeat_check(const Muster__Heartbeat *hb, struct aggr_reject *rej) {
  if (hb->fault && (strlen(hb->fault) > MST_AGENT_FAULT_MAX || !mst_utf8_valid(hb->fault)))
    return refuse(rej, MUSTER__REJECT_CODE__REJECT_MALFORMED,
                  "heartbeat fault over %d bytes or not UTF-8", MST_AGENT_FAULT_MAX);
  /* Shown as it comes, as DC/OS's MesosID and mesos_id. */
  if (hb->mesos_id && (strlen(hb->mesos_id) > MST_MESOS_ID_MAX || !mst_utf8_valid(hb->mesos_id)))
    return refuse(rej, MUSTER__REJECT_CODE__REJECT_MALFORMED,
                  "heartbeat mesos_id over %d bytes or not UTF-8", MST_MESOS_ID_MAX);
  return 0;
}

int aggr_envelope_check(const Muster__Envelope *env, bool hello_done,
                        struct aggr_reject *ret_reject) {
  if (env->body_case == MUSTER__ENVELOPE__BODY_HELLO) {
    if (hello_done)
      return refuse(ret_reject, MUSTER__REJECT_CODE__REJECT_PROTOCOL,
                    "a second Hello on the same connection");
    return hello_check(env->hello, ret_reject);
  }
  if (!hello_done)
    return refuse(ret_reject, MUSTER__REJECT_CODE__REJECT_PROTOCOL, "a report before Hello");
  switch (env->body_case) {
  case MUSTER__ENVELOPE__BODY_CHANGES:
    return changes_check(env->changes, ret_reject);
  case MUSTER__ENVELOPE__BODY_SNAPSHOT:
    return snapshot_check(env->snapshot, ret_reject);
  case MUSTER__ENVELOPE__BODY_HEARTBEAT:
    return heartbeat_check(env->heartbeat, ret_reject);
  default:
    return refuse(ret_reject, MUSTER__REJECT_CODE__REJECT_PROTOCOL,
                  "unexpected message %d from an agent", (int)env->body_case);
  }
}
