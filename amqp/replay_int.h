/* Internals of amqp/replay.c shared with its unit tests only: the pure parts
 * of a replay (where a message goes, and the properties of its copy). */
#ifndef WARREN_AMQP_REPLAY_INT_H
#define WARREN_AMQP_REPLAY_INT_H

#include "amqp/amqp_int.h"

/* The routing key of copies sent to amqp.exchange as new originals. */
#define WR_AMQP_REPLAY_KEY "replay"

/* Where one message goes. */
typedef struct wr_amqp_replay_plan_s {
  wr_amqp_replay_outcome_t outcome; /* MAILBOX, LADDER, EXCHANGE or SKIPPED */
  char *user;                       /* x-warren-user of a parked message (malloc'd),
                                       NULL when absent or replaying Q.dead */
  int64_t deadline_ms;              /* its x-warren-expires-at, 0 when absent */
  bool expires_again;               /* the copy will carry a deadline already passed */
  char exchange[WR_AMQP_NAME_MAX];
  char key[WR_AMQP_NAME_MAX];
  wr_amqp_pub_t pub; /* what wr_amqp_copy_build adds (user borrows plan->user) */
} wr_amqp_replay_plan_t;

/* Decides where a message of o->from with headers h (may be NULL) goes at
 * now_ms (wall clock):
 * - Q.dead: to amqp.exchange as a new original (its x-warren-* headers, the
 *   publisher's, are never read);
 * - Q.parked with x-warren-user: SKIPPED when o->user names someone else, else
 *   that user's mailbox (mailbox.enabled) or the retry ladder (not), with its
 *   x-warren-expires-at, or now + mailbox.ttl_ms with o->ignore_expiry;
 * - Q.parked without one (parked whole): SKIPPED when o->user is set, else to
 *   amqp.exchange as a new original; its body holds its deadline, which no
 *   header can extend, so expires_again is set whenever that has passed.
 * Returns 0 (free with wr_amqp_replay_plan_free), -ENOMEM or -ENAMETOOLONG. */
int wr_amqp_replay_plan(wr_amqp_replay_plan_t *p, const wr_config_t *cfg,
                        const wr_amqp_replay_opts_t *o, const amqp_table_t *h, int64_t now_ms);
void wr_amqp_replay_plan_free(wr_amqp_replay_plan_t *p);

/* Whether a header is the broker's record of a dead-lettering: x-death,
 * x-first-death-*, x-last-death-*. */
bool wr_amqp_replay_key_is_death(amqp_bytes_t key);

/* The headers of in (may be NULL) a replayed copy starts from: every entry
 * but the broker's dead-letter records and warren's x-warren-* (the plan puts
 * back x-warren-user and x-warren-expires-at where they belong). out->entries
 * is malloc'd (wr_amqp_headers_release), values borrowed from in. Returns 0
 * or -ENOMEM. */
int wr_amqp_replay_headers_reset(const amqp_table_t *in, amqp_table_t *out);

/* A replayed copy's properties and what they borrow. */
typedef struct wr_amqp_replay_copy_s {
  wr_amqp_copy_t copy;          /* copy.props is what to publish */
  amqp_basic_properties_t kept; /* the message's content_type, message_id,
                                   timestamp and reset headers; copy borrows it */
} wr_amqp_replay_copy_t;

/* Builds the properties of the copy of a message whose properties are msg
 * (content_type, message_id, timestamp and headers are kept; expiration and
 * the rest are not), as the plan says: wr_amqp_copy_build on the reset
 * headers, so every short string and header is checked and the properties
 * encode within frame_max (less WR_AMQP_DEADLETTER_RESERVE for a mailbox or
 * ladder copy, which may be dead-lettered again), without x-warren-attempt.
 * A mailbox copy with a deadline gets the time left as its expiration, as
 * warren's own mailbox copies do. Borrows msg, plan and scratch (frame_max
 * bytes). Returns 0 (release with wr_amqp_replay_copy_release), -ENOMEM,
 * -ENAMETOOLONG, or -EMSGSIZE when it cannot carry the message's headers
 * whole within the frame (a replay never drops them). */
int wr_amqp_replay_copy_build(wr_amqp_replay_copy_t *rc, const amqp_basic_properties_t *msg,
                              const wr_amqp_replay_plan_t *plan, int64_t now_ms, uint8_t *scratch,
                              size_t frame_max);
void wr_amqp_replay_copy_release(wr_amqp_replay_copy_t *rc);

#endif
