/* The stream to the aggregator (stream.c): one connection at a time to the
 * configured aggregators, the Hello, the replay of the spool after a
 * Welcome, then each change as it is committed. struct agent_stream is
 * owned by a->stream, from agent_stream_new() to agent_stream_free(). Loop
 * thread. */
#pragma once

struct agent;
struct agent_stream;

/* Creates the stream and starts connecting to the aggregators. Needs
 * a->spool, a->components and the boot facts. Returns 0 or -errno. */
int agent_stream_new(struct agent *a, struct agent_stream **ret);
/* Closes the connection at once. Accepts NULL. */
void agent_stream_free(struct agent_stream *s);
/* A change was committed to the spool: send it when streaming. Accepts NULL. */
void agent_stream_changes_pending(struct agent_stream *s);
/* Tries to connect at once when the stream waits for its next attempt
 * (new credentials were loaded). Accepts NULL. */
void agent_stream_retry_now(struct agent_stream *s);
/* A new startup began (startup.c): a connection past its Hello starts over
 * at once, so that the aggregator learns the startup's id from a Hello
 * before any change of it. Accepts NULL. */
void agent_stream_hello_again(struct agent_stream *s);

/* Holds the first attempt to connect until agent_stream_release_first(), or
 * at most at_most_usec: an agent whose startup is decided by its first read
 * of the systemd units (a stack restarted while it was down) must not say
 * Hello with the startup before it, and send that startup's states as the
 * node's current ones. No-op once an attempt was made. */
void agent_stream_hold_first(struct agent_stream *s, uint64_t at_most_usec);
void agent_stream_release_first(struct agent_stream *s);
/* Some component's output changed without a state change: send a fresh
 * snapshot soon (rate-limited; see stream.c). Accepts NULL. */
void agent_stream_outputs_changed(struct agent_stream *s);
/* The agent's fault (a->fault) began, changed or ended: a beginning or a
 * change goes out in a heartbeat at once, an end once every committed
 * change is queued (see stream.c). Accepts NULL. */
void agent_stream_fault_changed(struct agent_stream *s);
/* The node's Mesos id (a->mesos_id) changed: it goes out in a heartbeat at
 * once (every heartbeat carries it). Accepts NULL. */
void agent_stream_mesos_id_changed(struct agent_stream *s);
