/* The properties of a ladder or park copy, built and checked before anything
 * is sent: a copy that rabbitmq-c would refuse halfway through a publish
 * becomes that message's outcome, not a broken channel. Pure: no I/O, no
 * logs. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "amqp/amqp_int.h"

/* Whether the properties encode within props_max, exactly as
 * amqp_basic_publish would encode them into the content header frame. */
static bool props_fit(amqp_basic_properties_t *p, uint8_t *scratch, size_t props_max) {
  /* amqp_encode_table truncates a key's length to one byte without an error:
   * check what it would not (keys, field kinds, depth). */
  if ((p->_flags & AMQP_BASIC_HEADERS_FLAG) &&
      wr_amqp_table_copy(&p->headers, NULL, NULL, 0, NULL) < 0)
    return false;
  int n = amqp_encode_properties(AMQP_BASIC_CLASS, p,
                                 (amqp_bytes_t){.len = props_max, .bytes = scratch});
  return n >= 0 && (size_t)n <= props_max;
}

/* Whether t holds headers of the publisher's (not x-warren-*). */
static bool has_own_headers(const amqp_table_t *t) {
  if (t == NULL || t->entries == NULL)
    return false;
  for (int i = 0; i < t->num_entries; i++) {
    if (!wr_amqp_key_is_warren(t->entries[i].key))
      return true;
  }
  return false;
}

int wr_amqp_copy_build(wr_amqp_copy_t *c, const amqp_basic_properties_t *orig,
                       const wr_amqp_pub_t *pub, const char *exchange, const char *routing_key,
                       int64_t now_ms, uint8_t *scratch, size_t props_max) {
  amqp_basic_properties_t *p = &c->props;
  int rc;

  memset(c, 0, sizeof(*c));
  /* Both go into the basic.publish method frame, which rabbitmq-c encodes
   * before sending anything; checked here all the same. */
  if (strlen(exchange) > 255 || strlen(routing_key) > 255)
    return -ENAMETOOLONG;

  p->_flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_HEADERS_FLAG;
  p->delivery_mode = AMQP_DELIVERY_PERSISTENT;
  if (orig->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) {
    p->_flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
    p->content_type = orig->content_type;
  }
  if (orig->_flags & AMQP_BASIC_TIMESTAMP_FLAG) {
    p->_flags |= AMQP_BASIC_TIMESTAMP_FLAG;
    p->timestamp = orig->timestamp;
  }
  /* A mailbox keeps a copy no longer than the envelope lets it live: the
   * broker expires it at the head of the mailbox (then dead-letters it to
   * Q.parked), and warren parks one it reads too late. */
  if (pub->kind == WR_PUB_MAILBOX && pub->expires_at_ms != 0) {
    int64_t left = pub->expires_at_ms > now_ms ? pub->expires_at_ms - now_ms : 0;
    snprintf(c->expiration, sizeof(c->expiration), "%lld", (long long)left);
    p->_flags |= AMQP_BASIC_EXPIRATION_FLAG;
    p->expiration = amqp_cstring_bytes(c->expiration);
  }
  amqp_bytes_t mid = amqp_empty_bytes;
  bool has_mid = true;
  if (pub->id != NULL)
    mid = amqp_cstring_bytes(pub->id);
  else if (orig->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
    mid = orig->message_id;
  else
    has_mid = false;
  /* The envelope allows longer ids than an AMQP short string; the id is in
   * the body too, and the loop reads it from there. */
  if (has_mid && mid.len > 255) {
    c->dropped |= WR_COPY_NO_MESSAGE_ID;
  } else if (has_mid) {
    p->_flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    p->message_id = mid;
  }

  const amqp_table_t *oh = (orig->_flags & AMQP_BASIC_HEADERS_FLAG) ? &orig->headers : NULL;
  if ((rc = wr_amqp_headers_build(oh, pub, &p->headers)) < 0)
    return rc;
  if (props_fit(p, scratch, props_max))
    return 0;
  if (!has_own_headers(oh))
    goto refused;
  /* Headers that cannot be encoded, or that fill the frame once warren's own
   * are added: the copy goes without them rather than not at all. */
  wr_amqp_headers_release(&p->headers);
  if ((rc = wr_amqp_headers_build(NULL, pub, &p->headers)) < 0)
    return rc;
  c->dropped |= WR_COPY_NO_HEADERS;
  if (props_fit(p, scratch, props_max))
    return 0;

refused:
  wr_amqp_copy_release(c);
  return -EMSGSIZE;
}

void wr_amqp_copy_release(wr_amqp_copy_t *c) {
  wr_amqp_headers_release(&c->props.headers);
}
