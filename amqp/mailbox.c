/* Per-user mailboxes on the AMQP thread (docs/mailboxes.md): which users
 * have one, consuming the mailboxes of online users on channel 4, creating a
 * mailbox for a copy that found none, and the janitor that deletes mailboxes
 * left empty and unused. Probes, declares, binds and deletes run on channel
 * 3, which a refusal (404, 406) closes and which is then reopened. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/log.h"
#include "amqp/amqp_int.h"

/* The janitor looks at no more than this many mailboxes per pass, so one
 * pass never holds the thread for long; the next pass goes on from there. */
#define JANITOR_BATCH 200
/* Index entries read per step (each a get, a probe, maybe a put, an ack):
 * deliveries and verdicts get their turn in between. */
#define INDEX_BATCH 16
/* An index entry longer than this is not a user id warren wrote. */
#define INDEX_USER_MAX 4096

enum { INDEX_KEPT, INDEX_GONE, INDEX_DUP, INDEX_BAD };

wr_amqp_cmd_t *wr_amqp_mbox_cmd_new(wr_amqp_cmd_kind_t kind, const char *user) {
  size_t n = strlen(user);
  wr_amqp_mbox_cmd_t *c = malloc(sizeof(*c) + n + 1);
  if (c == NULL)
    return NULL;
  c->cmd.kind = kind;
  memcpy(c->user, user, n + 1);
  return &c->cmd;
}

static wr_mbox_t *find(wr_amqp_t *a, const char *key, size_t len) {
  wr_mboxes_t *t = &a->mboxes;
  if (t->nbuckets == 0)
    return NULL;
  uint64_t h = wr_amqp_hash(key, len);
  for (wr_mbox_t *m = t->buckets[h & (t->nbuckets - 1)]; m != NULL; m = m->hnext)
    if (m->hash == h && strlen(m->key) == len && memcmp(m->key, key, len) == 0)
      return m;
  return NULL;
}

static void set_known(wr_amqp_t *a, wr_mbox_t *m, wr_mbox_state_t st) {
  if (m->state == WR_MBOX_EXISTS && st != WR_MBOX_EXISTS)
    WR_AMQP_STAT_SUB(a, mailboxes_known, 1);
  else if (m->state != WR_MBOX_EXISTS && st == WR_MBOX_EXISTS)
    WR_AMQP_STAT_ADD(a, mailboxes_known, 1);
  m->state = st;
}

static int grow(wr_mboxes_t *t) {
  size_t n = t->nbuckets ? t->nbuckets * 2 : 256;
  wr_mbox_t **b = calloc(n, sizeof(*b));
  if (b == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < t->nbuckets; i++) {
    for (wr_mbox_t *m = t->buckets[i], *next; m != NULL; m = next) {
      next = m->hnext;
      m->hnext = b[m->hash & (n - 1)];
      b[m->hash & (n - 1)] = m;
    }
  }
  free(t->buckets);
  t->buckets = b;
  t->nbuckets = n;
  return 0;
}

/* The entry of user, created (UNKNOWN) when absent. NULL when out of memory. */
static wr_mbox_t *get(wr_amqp_t *a, const char *user) {
  char key[WR_AMQP_USER_KEY_MAX];
  int klen = wr_amqp_user_key(user, key, sizeof(key));
  wr_mboxes_t *t = &a->mboxes;
  wr_mbox_t *m;

  if (klen < 0)
    return NULL;
  if ((m = find(a, key, (size_t)klen)) != NULL)
    return m;
  if (t->n >= t->nbuckets && grow(t) < 0 && t->nbuckets == 0)
    return NULL;
  m = calloc(1, sizeof(*m) + (size_t)klen + 1);
  if (m == NULL || (m->user = strdup(user)) == NULL) {
    free(m);
    return NULL;
  }
  memcpy(m->key, key, (size_t)klen + 1);
  m->hash = wr_amqp_hash(key, (size_t)klen);
  m->hnext = t->buckets[m->hash & (t->nbuckets - 1)];
  t->buckets[m->hash & (t->nbuckets - 1)] = m;
  t->n++;
  return m;
}

static void drop(wr_amqp_t *a, wr_mbox_t *m) {
  wr_mboxes_t *t = &a->mboxes;
  set_known(a, m, WR_MBOX_UNKNOWN);
  for (wr_mbox_t **pp = &t->buckets[m->hash & (t->nbuckets - 1)]; *pp != NULL; pp = &(*pp)->hnext) {
    if (*pp == m) {
      *pp = m->hnext;
      t->n--;
      break;
    }
  }
  free(m->user);
  free(m);
}

const char *wr_amqp_mbox_owner(wr_amqp_t *a, amqp_bytes_t tag, bool *backlog) {
  wr_mbox_t *m = find(a, tag.bytes, tag.len);
  if (m == NULL)
    return NULL;
  *backlog = m->backlog;
  m->backlog = false;
  return m->user;
}

static int mailbox_name(wr_amqp_t *a, const wr_mbox_t *m, char *name, size_t len) {
  return wr_amqp_mailbox_name(a->cfg->queue, m->key, name, len) < 0 ? -ENAMETOOLONG : 0;
}

/* Passive declare: 0 when the mailbox exists (its depth and consumers in
 * the out parameters, when given), 1 when it does not, or a negative errno. */
static int probe(wr_amqp_t *a, wr_mbox_t *m, uint32_t *messages, uint32_t *consumers) {
  char name[WR_AMQP_NAME_MAX];
  int rc, refusal = 0;
  if ((rc = mailbox_name(a, m, name, sizeof(name))) < 0 || (rc = wr_amqp_poll_open(a)) < 0)
    return rc;
  WR_AMQP_STAT_ADD(a, mailbox_probes, 1);
  amqp_queue_declare_ok_t *ok = amqp_queue_declare(
      a->conn, WR_AMQP_CH_POLL, amqp_cstring_bytes(name), 1, 0, 0, 0, amqp_empty_table);
  rc = wr_amqp_poll_reply(a, "mailbox probe", &refusal);
  if (rc < 0)
    return rc;
  if (rc == 0 && ok != NULL) {
    set_known(a, m, WR_MBOX_EXISTS);
    if (messages != NULL)
      *messages = ok->message_count;
    if (consumers != NULL)
      *consumers = ok->consumer_count;
    return 0;
  }
  set_known(a, m, WR_MBOX_ABSENT);
  return 1;
}

static int bind_rpc(wr_amqp_t *a, wr_mbox_t *m, bool bind) {
  char name[WR_AMQP_NAME_MAX], x[WR_AMQP_NAME_MAX];
  int rc;
  if ((rc = mailbox_name(a, m, name, sizeof(name))) < 0 ||
      (rc = wr_amqp_name_fmt(x, sizeof(x), a->cfg->queue, ".mailbox")) < 0)
    return rc;
  return wr_amqp_bind_rpc(a, amqp_cstring_bytes(name), x, m->key, bind,
                          bind ? "mailbox bind" : "mailbox unbind");
}

/* basic.consume of an existing mailbox on channel 4, tagged with its key. A
 * refusal there closes channel 4 with every unacked mailbox delivery on it:
 * treated as a lost connection (the broker requeues them). */
static int consume(wr_amqp_t *a, wr_mbox_t *m) {
  char name[WR_AMQP_NAME_MAX], err[512];
  int rc;
  if (m->consuming || !a->mbox_channel_open)
    return 0;
  if ((rc = mailbox_name(a, m, name, sizeof(name))) < 0)
    return rc;
  amqp_basic_consume(a->conn, WR_AMQP_CH_MAILBOX, amqp_cstring_bytes(name),
                     amqp_cstring_bytes(m->key), 0, 0, 0, amqp_empty_table);
  rc = wr_amqp_reply_err(amqp_get_rpc_reply(a->conn), "consuming a mailbox", err, sizeof(err));
  if (rc < 0) {
    wr_warn("amqp", "%s (%s); reconnecting", err, name);
    return rc == -ENOENT || rc == -EEXIST || rc == -EACCES ? -EPROTO : rc;
  }
  m->consuming = true;
  WR_AMQP_STAT_ADD(a, mailbox_consumers, 1);
  wr_debug("amqp", "consuming mailbox %s for user %s", name, m->user);
  return 0;
}

static int cancel(wr_amqp_t *a, wr_mbox_t *m) {
  char err[512];
  if (!m->consuming)
    return 0;
  m->consuming = false;
  m->backlog = false;
  WR_AMQP_STAT_SUB(a, mailbox_consumers, 1);
  if (a->conn == NULL || !a->mbox_channel_open)
    return 0;
  amqp_basic_cancel(a->conn, WR_AMQP_CH_MAILBOX, amqp_cstring_bytes(m->key));
  int rc = wr_amqp_reply_err(amqp_get_rpc_reply(a->conn), "cancelling a mailbox consumer", err,
                             sizeof(err));
  if (rc < 0)
    wr_warn("amqp", "%s", err);
  return rc == -ENOENT ? 0 : rc;
}

/* The user is online: consume their mailbox if it exists. The probe says
 * whether it does (a mailbox deleted behind warren's back would make the
 * basic.consume fail, and take channel 4 down with it) and whether a
 * backlog waits in it: its first item then carries the backlog flag, which
 * times the replay. */
static int want(wr_amqp_t *a, wr_mbox_t *m) {
  uint32_t messages = 0;
  int rc;
  if (a->conn == NULL || m->consuming || !a->mbox_channel_open)
    return 0;
  m->want_gen = a->generation;
  if ((rc = probe(a, m, &messages, NULL)) < 0)
    return rc;
  if (m->state != WR_MBOX_EXISTS)
    return 0;
  m->backlog = messages > 0;
  if (m->unbound_ms != 0) {
    /* The janitor was about to delete it: it is in use again. */
    if ((rc = bind_rpc(a, m, true)) < 0)
      return rc;
    m->unbound_ms = 0;
  }
  return consume(a, m);
}

int wr_amqp_mbox_command(wr_amqp_t *a, wr_amqp_cmd_t *c) {
  wr_amqp_mbox_cmd_t *mc = (wr_amqp_mbox_cmd_t *)c;
  int rc = 0;
  wr_mbox_t *m = get(a, mc->user);

  if (m == NULL) {
    wr_error("amqp", "out of memory for the mailbox of user %s", mc->user);
  } else if (c->kind == WR_CMD_MAILBOX_OPEN) {
    m->wanted = true;
    m->used_ms = wr_amqp_now_ms();
    rc = want(a, m);
  } else {
    m->wanted = false;
    m->used_ms = wr_amqp_now_ms();
    rc = cancel(a, m);
    /* Only mailboxes that exist are worth remembering (for the janitor). */
    if (m->state != WR_MBOX_EXISTS)
      drop(a, m);
  }
  free(c);
  return rc;
}

/* Declares the mailbox with its arguments; a mailbox declared before the
 * mailbox.* settings changed keeps its old arguments (the broker refuses to
 * change them): it is used as it is. */
static int declare(wr_amqp_t *a, wr_mbox_t *m) {
  char name[WR_AMQP_NAME_MAX], parked[WR_AMQP_NAME_MAX];
  amqp_table_entry_t e[WR_AMQP_MAILBOX_ARGS];
  int rc, n, refusal = 0;
  if ((rc = mailbox_name(a, m, name, sizeof(name))) < 0 || (rc = wr_amqp_poll_open(a)) < 0)
    return rc;
  if ((n = wr_amqp_mailbox_args(a->cfg, e, parked, sizeof(parked))) < 0)
    return n;
  amqp_queue_declare(a->conn, WR_AMQP_CH_POLL, amqp_cstring_bytes(name), 0, 1, 0, 0,
                     (amqp_table_t){.num_entries = n, .entries = e});
  rc = wr_amqp_poll_reply(a, "mailbox declare", &refusal);
  if (rc == 1 && refusal == -EEXIST) {
    wr_warn("amqp",
            "mailbox %s exists with other arguments (mailbox.ttl_ms or max_messages changed "
            "since it was made); using it as it is",
            name);
    rc = probe(a, m, NULL, NULL);
  } else if (rc == 1) {
    wr_warn("amqp", "cannot declare mailbox %s: %s", name, strerror(-refusal));
  }
  if (rc == 0)
    set_known(a, m, WR_MBOX_EXISTS);
  return rc;
}

int wr_amqp_mbox_create(wr_amqp_t *a, const char *user, bool known_ok) {
  wr_mbox_t *m = get(a, user);
  int rc;
  if (m == NULL)
    return -ENOMEM;
  if (known_ok && m->state == WR_MBOX_EXISTS && m->unbound_ms == 0) {
    m->used_ms = wr_amqp_now_ms();
    return 0;
  }
  if ((rc = declare(a, m)) != 0 || (rc = bind_rpc(a, m, true)) != 0)
    return rc;
  /* The index lets the janitor of a later process find the mailbox. */
  if (!m->indexed) {
    if ((rc = wr_amqp_mbox_index_put(a->conn, WR_AMQP_CH_POLL, a->cfg, user)) < 0)
      return rc;
    m->indexed = true;
  }
  m->unbound_ms = 0;
  m->used_ms = wr_amqp_now_ms();
  WR_AMQP_STAT_ADD(a, mailboxes_created, 1);
  wr_debug("amqp", "mailbox of user %s declared and bound", user);
  /* Cluster mode: the nodes where the user is connected looked for a
   * mailbox when they joined and found none; tell them (docs/cluster.md). */
  if (a->cfg->cluster_node_id != NULL && (rc = wr_amqp_node_mailbox_made(a, m->key, user)) < 0)
    return rc;
  return m->wanted ? consume(a, m) : 0;
}

int wr_amqp_mbox_made_elsewhere(wr_amqp_t *a, const char *user) {
  wr_mbox_t *m = get(a, user);
  if (m == NULL)
    return -ENOMEM;
  if (!m->wanted || m->consuming)
    return 0;
  wr_debug("amqp", "another node made the mailbox of user %s: consuming it", user);
  return want(a, m);
}

char *wr_amqp_mbox_new_owner(const amqp_table_t *h, amqp_bytes_t rk) {
  char key[WR_AMQP_USER_KEY_MAX];
  const amqp_field_value_t *u = wr_amqp_table_get(h, "x-warren-user");
  if (u != NULL && (u->kind == AMQP_FIELD_KIND_UTF8 || u->kind == AMQP_FIELD_KIND_BYTES) &&
      u->value.bytes.len > 0 && memchr(u->value.bytes.bytes, '\0', u->value.bytes.len) == NULL) {
    char *user = wr_amqp_bytes_strdup(u->value.bytes);
    int n = user != NULL ? wr_amqp_user_key(user, key, sizeof(key)) : -1;
    if (n >= 0 && (size_t)n == rk.len && memcmp(key, rk.bytes, rk.len) == 0)
      return user;
    free(user);
  }
  /* "u.<id>" names its user; a digest key does not. */
  if (rk.len > 2 && rk.len <= 2 + WR_AMQP_USER_KEY_PLAIN_MAX && memcmp(rk.bytes, "u.", 2) == 0 &&
      ((const char *)rk.bytes)[2] != '~') {
    char *user =
        wr_amqp_bytes_strdup((amqp_bytes_t){.len = rk.len - 2, .bytes = (char *)rk.bytes + 2});
    int n = user != NULL ? wr_amqp_user_key(user, key, sizeof(key)) : -1;
    if (n >= 0 && (size_t)n == rk.len && memcmp(key, rk.bytes, rk.len) == 0)
      return user;
    free(user);
  }
  return NULL;
}

/* Counts the entries of Q.mailbox.index at the start of a connection, before
 * anything is put in it there: the read takes that many, and what is put
 * from then on (put back, or for a mailbox made meanwhile) lies behind
 * them. A read cut short by a lost connection starts again from the top;
 * an entry put on the old connection may not have reached the broker, so
 * none counts as a duplicate of it any more. */
static int index_count(wr_amqp_t *a) {
  char q[WR_AMQP_NAME_MAX];
  int rc, refusal = 0;
  for (size_t i = 0; i < a->mboxes.nbuckets; i++)
    for (wr_mbox_t *m = a->mboxes.buckets[i]; m != NULL; m = m->hnext)
      m->indexed = false;
  memset(a->index_counts, 0, sizeof(a->index_counts));
  a->index_left = 0;
  if (wr_amqp_name_fmt(q, sizeof(q), a->cfg->queue, ".mailbox.index") < 0)
    return 0;
  if ((rc = wr_amqp_poll_open(a)) < 0)
    return rc;
  amqp_queue_declare_ok_t *ok = amqp_queue_declare(a->conn, WR_AMQP_CH_POLL, amqp_cstring_bytes(q),
                                                   1, 0, 0, 0, amqp_empty_table);
  rc = wr_amqp_poll_reply(a, "counting Q.mailbox.index", &refusal);
  if (rc < 0)
    return rc;
  if (rc == 0 && ok != NULL)
    a->index_left = ok->message_count;
  return 0;
}

int wr_amqp_mbox_session_open(wr_amqp_t *a, char *err, size_t errlen) {
  wr_mboxes_t *t = &a->mboxes;
  int rc;
  if ((rc = wr_amqp_channel_open(a->conn, WR_AMQP_CH_MAILBOX, err, errlen)) < 0)
    return rc;
  /* Each consumer gets its own window (global = false). */
  amqp_basic_qos(a->conn, WR_AMQP_CH_MAILBOX, 0, (uint16_t)a->cfg->mailbox_prefetch, 0);
  if ((rc = wr_amqp_reply_err(amqp_get_rpc_reply(a->conn), "basic.qos on the mailbox channel", err,
                              errlen)) < 0)
    return rc;
  a->mbox_channel_open = true;
  a->next_janitor_ms = wr_amqp_now_ms() + a->cfg->mailbox_janitor_ms;
  a->index_channel_open = false;
  if (!a->index_done && (rc = index_count(a)) < 0)
    return rc;
  /* The online users' mailboxes are sought again in steps between
   * deliveries (wr_amqp_mbox_resume_step): with thousands online, a probe
   * each would hold the first delivery back for seconds. */
  t->resume_bucket = 0;
  t->resume_nbuckets = t->nbuckets;
  t->resuming = t->n > 0;
  return 0;
}

int wr_amqp_mbox_resume_step(wr_amqp_t *a) {
  wr_mboxes_t *t = &a->mboxes;
  int budget = WR_AMQP_RPC_BUDGET;
  if (!t->resuming)
    return 0;
  if (a->conn == NULL || !a->mbox_channel_open) {
    t->resuming = false; /* cancelled: nothing is consumed any more */
    return 0;
  }
  if (t->resume_nbuckets != t->nbuckets) {
    t->resume_bucket = 0; /* rehashed: again (those sought are skipped) */
    t->resume_nbuckets = t->nbuckets;
  }
  for (; t->resume_bucket < t->nbuckets; t->resume_bucket++) {
    for (wr_mbox_t *m = t->buckets[t->resume_bucket]; m != NULL; m = m->hnext) {
      if (!m->wanted || m->consuming || m->want_gen == a->generation)
        continue;
      if (budget-- == 0)
        return 0;
      int rc = want(a, m);
      if (rc < 0) {
        wr_warn("amqp", "cannot consume the mailbox of user %s again", m->user);
        return rc;
      }
    }
  }
  t->resuming = false;
  return 0;
}

void wr_amqp_mbox_session_closed(wr_amqp_t *a) {
  wr_mboxes_t *t = &a->mboxes;
  a->mbox_channel_open = false;
  for (size_t i = 0; i < t->nbuckets; i++)
    for (wr_mbox_t *m = t->buckets[i]; m != NULL; m = m->hnext) {
      m->consuming = false;
      m->backlog = false;
    }
  WR_AMQP_STAT_SET(a, mailbox_consumers, 0);
}

void wr_amqp_mbox_cancelled(wr_amqp_t *a, amqp_bytes_t tag) {
  wr_mbox_t *m = find(a, tag.bytes, tag.len);
  if (m == NULL)
    return;
  wr_warn("amqp", "the broker cancelled the consumer of mailbox %.*s (deleted?)", (int)tag.len,
          (const char *)tag.bytes);
  if (m->consuming) {
    m->consuming = false;
    WR_AMQP_STAT_SUB(a, mailbox_consumers, 1);
  }
  m->backlog = false;
  /* The next copy for the user finds the mailbox unknown and declares it
   * again (consuming it if the user is online). */
  set_known(a, m, WR_MBOX_UNKNOWN);
}

/* One mailbox's turn: unbind it once it has been empty and unused for
 * mailbox.idle_ms; delete it (if still empty and unused) once
 * mailbox.unbind_grace_ms has let every publish routed before the unbind
 * arrive; bind it again if one did. Returns 1 when m was freed. */
static int janitor_one(wr_amqp_t *a, wr_mbox_t *m, int64_t now) {
  uint32_t messages = 0, consumers = 0;
  int rc;
  if (m->unbound_ms == 0) {
    if (now - m->used_ms < (int64_t)a->cfg->mailbox_idle_ms)
      return 0;
    if ((rc = probe(a, m, &messages, &consumers)) < 0)
      return rc;
    if (rc == 1) {
      drop(a, m);
      return 1;
    }
    if (messages > 0 || consumers > 0) {
      m->used_ms = now;
      return 0;
    }
    if ((rc = bind_rpc(a, m, false)) < 0)
      return rc;
    m->unbound_ms = now;
    return 0;
  }
  if (now - m->unbound_ms < (int64_t)a->cfg->mailbox_unbind_grace_ms)
    return 0;
  char name[WR_AMQP_NAME_MAX];
  int refusal = 0;
  if ((rc = mailbox_name(a, m, name, sizeof(name))) < 0 || (rc = wr_amqp_poll_open(a)) < 0)
    return rc;
  amqp_queue_delete(a->conn, WR_AMQP_CH_POLL, amqp_cstring_bytes(name), 1, 1);
  rc = wr_amqp_poll_reply(a, "mailbox delete", &refusal);
  if (rc < 0)
    return rc;
  if (rc == 0 || refusal == -ENOENT) {
    WR_AMQP_STAT_ADD(a, mailboxes_deleted, 1);
    wr_debug("amqp", "janitor: deleted mailbox %s, empty and unused", name);
    drop(a, m);
    return 1;
  }
  /* Not empty or not unused any more: a copy got in before the unbind took
   * effect, or the user came back. Keep it, bound. */
  WR_AMQP_STAT_ADD(a, mailbox_rebinds, 1);
  if ((rc = bind_rpc(a, m, true)) < 0)
    return rc;
  m->unbound_ms = 0;
  m->used_ms = now;
  return 0;
}

int wr_amqp_mbox_janitor(wr_amqp_t *a) {
  wr_mboxes_t *t = &a->mboxes;
  int64_t now = wr_amqp_now_ms();
  int done = 0, rc;
  if (a->cfg->mailbox_janitor_ms == 0 || !a->cfg->mailbox_enabled || a->conn == NULL ||
      now < a->next_janitor_ms)
    return 0;
  a->next_janitor_ms = now + a->cfg->mailbox_janitor_ms;
  /* Whole buckets from where the last pass stopped, so every mailbox gets
   * its turn however many there are (a bucket holds one or two). */
  for (size_t k = 0; k < t->nbuckets && done < JANITOR_BATCH; k++) {
    size_t i = a->janitor_cursor++ & (t->nbuckets - 1);
    for (wr_mbox_t *m = t->buckets[i], *next; m != NULL; m = next) {
      next = m->hnext;
      if (m->state != WR_MBOX_EXISTS || m->wanted || m->consuming)
        continue;
      done++;
      if ((rc = janitor_one(a, m, now)) < 0)
        return rc;
    }
  }
  return 0;
}

static int index_publish(amqp_connection_state_t c, amqp_channel_t ch, const char *q,
                         amqp_bytes_t user) {
  amqp_basic_properties_t props = {._flags = AMQP_BASIC_DELIVERY_MODE_FLAG, .delivery_mode = 2};
  int st = amqp_basic_publish(c, ch, amqp_empty_bytes, amqp_cstring_bytes(q), 0, 0, &props, user);
  return st == AMQP_STATUS_OK ? 0 : -ECONNRESET;
}

int wr_amqp_mbox_index_put(amqp_connection_state_t c, amqp_channel_t ch, const wr_config_t *cfg,
                           const char *user) {
  char q[WR_AMQP_NAME_MAX];
  if (wr_amqp_name_fmt(q, sizeof(q), cfg->queue, ".mailbox.index") < 0)
    return -ENAMETOOLONG;
  return index_publish(c, ch, q, amqp_cstring_bytes(user));
}

/* The index read is over (done, or impossible on this broker). */
static void index_finish(wr_amqp_t *a) {
  const uint64_t *n = a->index_counts;
  a->index_done = true;
  a->index_left = 0;
  if (a->index_channel_open) {
    amqp_channel_close(a->conn, WR_AMQP_CH_INDEX, AMQP_REPLY_SUCCESS);
    a->index_channel_open = false;
  }
  wr_info("amqp",
          "mailbox index read: %llu mailbox(es) known from earlier runs, %llu entr(ies) of "
          "mailboxes gone, %llu duplicate(s), %llu malformed",
          (unsigned long long)n[INDEX_KEPT], (unsigned long long)n[INDEX_GONE],
          (unsigned long long)n[INDEX_DUP], (unsigned long long)n[INDEX_BAD]);
}

/* A reply on channel 5: 0 (normal), 1 when the broker closed the channel
 * (answered; the read ends), or a negative errno. */
static int index_reply(wr_amqp_t *a, amqp_rpc_reply_t r, const char *what) {
  char err[512];
  int rc = wr_amqp_reply_err(r, what, err, sizeof(err));
  if (rc == 0)
    return 0;
  if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    amqp_channel_close_ok_t ok = {0};
    a->index_channel_open = false;
    wr_warn("amqp", "%s; the janitor knows only the mailboxes this process makes or finds", err);
    if (amqp_send_method(a->conn, WR_AMQP_CH_INDEX, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) !=
        AMQP_STATUS_OK)
      return -ECONNRESET;
    index_finish(a);
    return 1;
  }
  wr_warn("amqp", "%s", err);
  return rc < 0 ? rc : -ECONNRESET;
}

/* One entry, its body the user id: returns 1 to put it back, 0 to drop it,
 * or a negative errno. */
static int index_entry(wr_amqp_t *a, amqp_bytes_t body) {
  wr_mbox_t *m;
  int rc;
  if (body.len == 0 || body.len > INDEX_USER_MAX || memchr(body.bytes, '\0', body.len) != NULL) {
    a->index_counts[INDEX_BAD]++;
    wr_warn("amqp", "a Q.mailbox.index entry of %zu byte(s) is no user id; dropping it",
            body.len);
    return 0;
  }
  char *user = wr_amqp_bytes_strdup(body);
  if (user == NULL || (m = get(a, user)) == NULL) {
    free(user);
    return 1; /* out of memory: keep it for the next process */
  }
  free(user);
  if (m->indexed) {
    a->index_counts[INDEX_DUP]++;
    return 0;
  }
  if ((rc = probe(a, m, NULL, NULL)) < 0)
    return rc;
  if (rc == 1) {
    a->index_counts[INDEX_GONE]++;
    if (!m->wanted)
      drop(a, m);
    return 0;
  }
  a->index_counts[INDEX_KEPT]++;
  m->indexed = true;
  /* Idle from now on: the janitor gives it mailbox.idle_ms like the rest. */
  if (m->used_ms == 0)
    m->used_ms = wr_amqp_now_ms();
  return 1;
}

int wr_amqp_mbox_index_step(wr_amqp_t *a) {
  char q[WR_AMQP_NAME_MAX], err[256];
  int rc;
  if (a->index_done || !a->cfg->mailbox_enabled || a->conn == NULL || !a->mbox_channel_open)
    return 0;
  if (a->index_left == 0) {
    index_finish(a);
    return 0;
  }
  if (wr_amqp_name_fmt(q, sizeof(q), a->cfg->queue, ".mailbox.index") < 0) {
    index_finish(a);
    return 0;
  }
  if (!a->index_channel_open) {
    if ((rc = wr_amqp_channel_open(a->conn, WR_AMQP_CH_INDEX, err, sizeof(err))) < 0) {
      wr_warn("amqp", "%s", err);
      return rc;
    }
    a->index_channel_open = true;
  }
  for (int i = 0; i < INDEX_BATCH && a->index_left > 0; i++) {
    amqp_rpc_reply_t r = amqp_basic_get(a->conn, WR_AMQP_CH_INDEX, amqp_cstring_bytes(q), 0);
    if ((rc = index_reply(a, r, "reading Q.mailbox.index")) != 0)
      return rc < 0 ? rc : 0;
    if (r.reply.id != AMQP_BASIC_GET_OK_METHOD) {
      a->index_left = 0; /* empty: someone else read the rest */
      break;
    }
    uint64_t tag = ((amqp_basic_get_ok_t *)r.reply.decoded)->delivery_tag;
    amqp_message_t msg;
    if ((rc = index_reply(a, amqp_read_message(a->conn, WR_AMQP_CH_INDEX, &msg, 0),
                          "reading a Q.mailbox.index entry")) != 0)
      return rc < 0 ? rc : 0;
    a->index_left--;
    rc = index_entry(a, msg.body);
    /* Put back before the ack, on the same channel: the broker takes them
     * in that order, so an entry is never lost between the two. */
    if (rc == 1)
      rc = index_publish(a->conn, WR_AMQP_CH_INDEX, q, msg.body);
    amqp_destroy_message(&msg);
    if (rc < 0)
      return rc;
    if (amqp_basic_ack(a->conn, WR_AMQP_CH_INDEX, tag, 0) != AMQP_STATUS_OK)
      return -ECONNRESET;
  }
  if (a->index_left > 0)
    return 1;
  index_finish(a);
  return 0;
}

void wr_amqp_mbox_free(wr_amqp_t *a) {
  wr_mboxes_t *t = &a->mboxes;
  for (size_t i = 0; i < t->nbuckets; i++) {
    for (wr_mbox_t *m = t->buckets[i], *next; m != NULL; m = next) {
      next = m->hnext;
      free(m->user);
      free(m);
    }
  }
  free(t->buckets);
  memset(t, 0, sizeof(*t));
}
