/* Opening and closing rabbitmq-c connections, error translation, and the two
 * blocking one-shot helpers (wr_amqp_check, wr_amqp_publish_once). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <unistd.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "amqp/amqp_int.h"
#include "config/log.h"

int64_t wr_amqp_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t wr_amqp_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int64_t wr_amqp_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int status_errno(int status) {
  switch (status) {
  case AMQP_STATUS_NO_MEMORY:
    return -ENOMEM;
  case AMQP_STATUS_TIMEOUT:
  case AMQP_STATUS_HEARTBEAT_TIMEOUT:
    return -ETIMEDOUT;
  case AMQP_STATUS_CONNECTION_CLOSED:
  case AMQP_STATUS_SOCKET_CLOSED:
    return -ECONNRESET;
  case AMQP_STATUS_HOSTNAME_RESOLUTION_FAILED:
    return -EHOSTUNREACH;
  case AMQP_STATUS_INVALID_PARAMETER:
  case AMQP_STATUS_BAD_URL:
    return -EINVAL;
  default:
    return -EPROTO;
  }
}

int wr_amqp_reply_err(amqp_rpc_reply_t r, const char *what, char *err, size_t errlen) {
  switch (r.reply_type) {
  case AMQP_RESPONSE_NORMAL:
    return 0;
  case AMQP_RESPONSE_NONE:
    snprintf(err, errlen, "%s: no reply (missing RPC reply type)", what);
    return -EPROTO;
  case AMQP_RESPONSE_LIBRARY_EXCEPTION:
    snprintf(err, errlen, "%s: %s", what, amqp_error_string2(r.library_error));
    return status_errno(r.library_error);
  case AMQP_RESPONSE_SERVER_EXCEPTION:
    if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
      const amqp_connection_close_t *m = r.reply.decoded;
      snprintf(err, errlen, "%s: connection closed by broker: %u %.*s", what, m->reply_code,
               (int)m->reply_text.len, (const char *)m->reply_text.bytes);
      return m->reply_code == AMQP_ACCESS_REFUSED ? -EACCES : -ECONNRESET;
    }
    if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
      const amqp_channel_close_t *m = r.reply.decoded;
      snprintf(err, errlen, "%s: %u %.*s", what, m->reply_code, (int)m->reply_text.len,
               (const char *)m->reply_text.bytes);
      switch (m->reply_code) {
      case AMQP_ACCESS_REFUSED:
        return -EACCES;
      case AMQP_NOT_FOUND:
        return -ENOENT;
      case AMQP_PRECONDITION_FAILED:
        return -EEXIST;
      default:
        return -EPROTO;
      }
    }
    snprintf(err, errlen, "%s: unexpected server method 0x%08x", what, r.reply.id);
    return -EPROTO;
  }
  snprintf(err, errlen, "%s: unknown reply", what);
  return -EPROTO;
}

int wr_amqp_channel_open(amqp_connection_state_t conn, amqp_channel_t ch, char *err,
                         size_t errlen) {
  char what[64];
  amqp_channel_open(conn, ch);
  snprintf(what, sizeof(what), "cannot open channel %u", ch);
  return wr_amqp_reply_err(amqp_get_rpc_reply(conn), what, err, errlen);
}

static void socket_tune(amqp_connection_state_t conn, uint32_t heartbeat_s) {
  int fd = amqp_get_sockfd(conn);
  int one = 1;

  if (fd < 0)
    return;
  /* Acks and publishes are small frames that must leave now. */
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  /* rabbitmq-c 0.11 can wait forever in a send to a broker that stopped
   * reading; with a user timeout the kernel fails the socket instead. */
  unsigned int ut = (heartbeat_s > 0 ? heartbeat_s : 30) * 2u * 1000u;
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
}

/* rabbitmq-c's own connect reports every failure as "a socket error
 * occurred"; connecting ourselves keeps the reason (refused, unreachable,
 * timed out) for the operator. Returns a non-blocking connected fd or a
 * negative errno. */
static int tcp_connect(const char *host, int port, int timeout_ms, char *why, size_t whylen) {
  struct addrinfo hints, *res = NULL;
  char portstr[16];
  int last = ECONNREFUSED;

  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  snprintf(portstr, sizeof(portstr), "%d", port);
  int g = getaddrinfo(host, portstr, &hints, &res);
  if (g != 0) {
    snprintf(why, whylen, "cannot resolve host: %s", gai_strerror(g));
    return -EHOSTUNREACH;
  }
  int64_t deadline = wr_amqp_now_ms() + timeout_ms;
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last = errno;
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      freeaddrinfo(res);
      return fd;
    }
    if (errno == EINPROGRESS) {
      struct pollfd pfd = {.fd = fd, .events = POLLOUT};
      int64_t left = deadline - wr_amqp_now_ms();
      int pr = poll(&pfd, 1, left > 0 ? (int)left : 0);
      if (pr > 0) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0) {
          freeaddrinfo(res);
          return fd;
        }
        last = soerr != 0 ? soerr : errno;
      } else {
        last = pr == 0 ? ETIMEDOUT : errno;
      }
    } else {
      last = errno;
    }
    close(fd);
  }
  freeaddrinfo(res);
  snprintf(why, whylen, "%s", strerror(last));
  return -last;
}

/* Why a TLS handshake failed, filled by the certificate verify callback:
 * rabbitmq-c only says "SSL connection failed", which leaves an operator
 * guessing between a wrong CA, an expired certificate and a host name that the
 * certificate does not name. */
struct tls_why {
  int depth; /* depth of the first certificate that failed, -1 = none */
  char text[160];
};

static int tls_why_index(void) {
  /* One index for the process; CRYPTO_get_ex_new_index is thread-safe and a
   * race here would only waste an index. */
  static int idx = -1;
  if (idx < 0)
    idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
  return idx;
}

static int tls_verify_cb(int ok, X509_STORE_CTX *xs) {
  SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
  struct tls_why *why = ssl ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_why_index()) : NULL;
  if (!ok && why != NULL && why->depth < 0) {
    int e = X509_STORE_CTX_get_error(xs);
    why->depth = X509_STORE_CTX_get_error_depth(xs);
    snprintf(why->text, sizeof(why->text), "%s", X509_verify_cert_error_string(e));
  }
  return ok;
}

static int tls_setup(const wr_config_t *cfg, amqp_socket_t *s, const char *host,
                     struct tls_why *why, char *err, size_t errlen) {
  SSL_CTX *ctx = amqp_ssl_socket_get_context(s);
  if (ctx == NULL) {
    snprintf(err, errlen, "cannot create a TLS context for amqps://");
    return -EPROTO;
  }
  if (cfg->tls_ca_file != NULL) {
    if (amqp_ssl_socket_set_cacert(s, cfg->tls_ca_file) != AMQP_STATUS_OK) {
      snprintf(err, errlen, "amqp.tls_ca_file: cannot load CA certificates from %s (expected PEM)",
               cfg->tls_ca_file);
      return -EINVAL;
    }
  } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
    /* rabbitmq-c loads no CA store by default: use the system one. */
    snprintf(err, errlen, "cannot load the system CA store for amqps:// (set amqp.tls_ca_file)");
    return -EPROTO;
  }
  if (cfg->tls_cert_file != NULL &&
      amqp_ssl_socket_set_key(s, cfg->tls_cert_file, cfg->tls_key_file) != AMQP_STATUS_OK) {
    snprintf(err, errlen,
             "amqp.tls_cert_file / amqp.tls_key_file: cannot load the client certificate %s with "
             "key %s (expected PEM, unencrypted key, matching pair)",
             cfg->tls_cert_file, cfg->tls_key_file);
    return -EINVAL;
  }
  why->depth = -1;
  why->text[0] = '\0';
  SSL_CTX_set_ex_data(ctx, tls_why_index(), why);
  X509_STORE_set_verify_cb(SSL_CTX_get_cert_store(ctx), tls_verify_cb);
  amqp_ssl_socket_set_verify_peer(s, cfg->tls_verify ? 1 : 0);
  amqp_ssl_socket_set_verify_hostname(s, cfg->tls_verify ? 1 : 0);
  if (!cfg->tls_verify)
    wr_warn("amqp",
            "amqp.tls_verify = false: the certificate of %s is not checked, so anyone on the "
            "path can impersonate the broker",
            host);
  return 0;
}

int wr_amqp_conn_open(const wr_config_t *cfg, amqp_connection_state_t *out, char *err,
                      size_t errlen) {
  struct amqp_connection_info ci;
  amqp_connection_state_t conn = NULL;
  amqp_socket_t *s;
  char *url = strdup(cfg->amqp_url != NULL ? cfg->amqp_url : "");
  int rc;

  *out = NULL;
  if (url == NULL)
    return -ENOMEM;
  /* amqp_parse_url writes into its argument and points ci into it. */
  if (amqp_parse_url(url, &ci) != AMQP_STATUS_OK) {
    /* Never echo the URL: it carries the password. */
    snprintf(err, errlen,
             "amqp.url is not a valid AMQP URL (expected amqp://user:pass@host:port/vhost)");
    rc = -EINVAL;
    goto fail_url;
  }
  /* By the AMQP URI spec "amqp://host/" names the empty vhost, but every
   * operator who writes it (and our own default) means "/". */
  if (ci.vhost == NULL || ci.vhost[0] == '\0')
    ci.vhost = "/";
  conn = amqp_new_connection();
  if (conn == NULL) {
    rc = -ENOMEM;
    goto fail_url;
  }
  s = ci.ssl ? amqp_ssl_socket_new(conn) : amqp_tcp_socket_new(conn);
  if (s == NULL) {
    snprintf(err, errlen, "cannot create %s socket", ci.ssl ? "TLS" : "TCP");
    rc = -ENOMEM;
    goto fail_conn;
  }
  struct tls_why tlsw = {.depth = -1};
  /* Errors of an earlier attempt must not explain this one. */
  ERR_clear_error();
  if (ci.ssl && (rc = tls_setup(cfg, s, ci.host, &tlsw, err, errlen)) < 0)
    goto fail_conn;

  struct timeval tv = {.tv_sec = WR_AMQP_RPC_TIMEOUT_S, .tv_usec = 0};
  if (ci.ssl) {
    rc = amqp_socket_open_noblock(s, ci.host, ci.port, &tv);
    if (rc != AMQP_STATUS_OK) {
      if (tlsw.depth >= 0)
        snprintf(err, errlen,
                 "cannot connect to %s:%d: TLS certificate verification failed: %s (%s "
                 "certificate; check amqp.tls_ca_file and that the certificate names %s)",
                 ci.host, ci.port, tlsw.text, tlsw.depth == 0 ? "broker" : "issuer", ci.host);
      else if (rc == AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED)
        snprintf(err, errlen,
                 "cannot connect to %s:%d: TLS certificate verification failed: the broker "
                 "certificate does not name %s (connect by a name it lists)",
                 ci.host, ci.port, ci.host);
      else
        snprintf(err, errlen, "cannot connect to %s:%d: %s", ci.host, ci.port,
                 amqp_error_string2(rc));
      rc = rc == AMQP_STATUS_SSL_PEER_VERIFY_FAILED ||
                   rc == AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED || tlsw.depth >= 0
               ? -EPERM
               : status_errno(rc);
      goto fail_conn;
    }
    /* The verify callback's context points at this stack frame. */
    SSL_CTX_set_ex_data(amqp_ssl_socket_get_context(s), tls_why_index(), NULL);
  } else {
    char why[128];
    int fd = tcp_connect(ci.host, ci.port, WR_AMQP_RPC_TIMEOUT_S * 1000, why, sizeof(why));
    if (fd < 0) {
      snprintf(err, errlen, "cannot connect to %s:%d: %s", ci.host, ci.port, why);
      rc = fd;
      goto fail_conn;
    }
    /* The fd stays non-blocking: rabbitmq-c's zero-timeout reads rely on it.
     * The connection owns it from here and closes it when destroyed. */
    amqp_tcp_socket_set_sockfd(s, fd);
  }
  socket_tune(conn, cfg->heartbeat_s);
  amqp_set_rpc_timeout(conn, &tv);

  amqp_table_entry_t caps[3];
  caps[0].key = amqp_cstring_bytes("consumer_cancel_notify");
  caps[0].value.kind = AMQP_FIELD_KIND_BOOLEAN;
  caps[0].value.value.boolean = 1;
  caps[1].key = amqp_cstring_bytes("publisher_confirms");
  caps[1].value.kind = AMQP_FIELD_KIND_BOOLEAN;
  caps[1].value.value.boolean = 1;
  caps[2].key = amqp_cstring_bytes("basic.nack");
  caps[2].value.kind = AMQP_FIELD_KIND_BOOLEAN;
  caps[2].value.value.boolean = 1;
  amqp_table_entry_t props[2];
  props[0].key = amqp_cstring_bytes("connection_name");
  props[0].value.kind = AMQP_FIELD_KIND_UTF8;
  props[0].value.value.bytes = amqp_cstring_bytes("warren");
  props[1].key = amqp_cstring_bytes("capabilities");
  props[1].value.kind = AMQP_FIELD_KIND_TABLE;
  props[1].value.value.table.num_entries = 3;
  props[1].value.value.table.entries = caps;
  amqp_table_t ptable = {.num_entries = 2, .entries = props};

  amqp_rpc_reply_t r =
      amqp_login_with_properties(conn, ci.vhost, 0, WR_AMQP_FRAME_MAX, (int)cfg->heartbeat_s,
                                 &ptable, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    char why[256];
    rc = wr_amqp_reply_err(r, "login", why, sizeof(why));
    /* RabbitMQ answers bad credentials by closing the socket, which
     * rabbitmq-c reports as a closed connection. */
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        r.library_error == AMQP_STATUS_CONNECTION_CLOSED) {
      snprintf(err, errlen,
               "login to %s:%d as %s refused (wrong credentials in amqp.url, or no access "
               "to vhost %s)",
               ci.host, ci.port, ci.user, ci.vhost);
      rc = -EACCES;
    } else if (ci.ssl && r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
               r.library_error == AMQP_STATUS_SSL_ERROR) {
      /* With TLS 1.3 the broker judges our certificate after our side of
       * the handshake is done, so its refusal only shows up here, as an
       * alert that OpenSSL left in this thread's error queue. */
      const char *alert = ERR_reason_error_string(ERR_peek_last_error());
      snprintf(err, errlen,
               "cannot connect to %s:%d: the broker closed the TLS connection (%s; check "
               "amqp.tls_cert_file / amqp.tls_key_file: the broker may require a client "
               "certificate signed by a CA it trusts)",
               ci.host, ci.port, alert != NULL ? alert : "no reason given");
      rc = -EPERM;
    } else {
      snprintf(err, errlen, "%s:%d %s", ci.host, ci.port, why);
    }
    goto fail_conn;
  }
  free(url);
  *out = conn;
  return 0;

fail_conn:
  amqp_destroy_connection(conn);
fail_url:
  free(url);
  return rc;
}

void wr_amqp_conn_close(amqp_connection_state_t conn, bool graceful) {
  if (conn == NULL)
    return;
  /* amqp_destroy_connection does not say goodbye; the broker would log an
   * abrupt close. Closing the connection closes its channels too. */
  if (graceful)
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn);
}

int wr_amqp_check(const wr_config_t *cfg, char *err, size_t errlen) {
  amqp_connection_state_t conn;
  int rc = wr_amqp_conn_open(cfg, &conn, err, errlen);
  if (rc < 0)
    return rc;
  rc = wr_amqp_channel_open(conn, WR_AMQP_CH_CONSUME, err, errlen);
  if (rc == 0)
    rc = wr_amqp_topology_declare(conn, WR_AMQP_CH_CONSUME, cfg, err, errlen);
  wr_amqp_conn_close(conn, true);
  return rc;
}

/* Waits for the confirm of publish 1 on channel 1; a basic.return before it
 * means unroutable. */
static int wait_confirm(amqp_connection_state_t conn, uint32_t timeout_ms, char *err,
                        size_t errlen) {
  int64_t deadline = wr_amqp_now_ms() + timeout_ms;
  bool returned = false;

  for (;;) {
    int64_t left = deadline - wr_amqp_now_ms();
    if (left <= 0) {
      snprintf(err, errlen, "no publisher confirm within %u ms", timeout_ms);
      return -ETIMEDOUT;
    }
    struct timeval tv = {.tv_sec = left / 1000, .tv_usec = (left % 1000) * 1000};
    amqp_frame_t f;
    int st = amqp_simple_wait_frame_noblock(conn, &f, &tv);
    if (st == AMQP_STATUS_TIMEOUT)
      continue;
    if (st != AMQP_STATUS_OK) {
      snprintf(err, errlen, "waiting for the confirm: %s", amqp_error_string2(st));
      return status_errno(st);
    }
    if (f.frame_type != AMQP_FRAME_METHOD)
      continue;
    switch (f.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD:
      if (returned) {
        snprintf(err, errlen, "message returned: unroutable (no queue bound for this key)");
        return -EPROTO;
      }
      return 0;
    case AMQP_BASIC_NACK_METHOD:
      snprintf(err, errlen, "message nacked by the broker");
      return -EPROTO;
    case AMQP_BASIC_RETURN_METHOD: {
      amqp_message_t m;
      amqp_rpc_reply_t r = amqp_read_message(conn, f.channel, &m, 0);
      if (r.reply_type != AMQP_RESPONSE_NORMAL)
        return wr_amqp_reply_err(r, "reading a returned message", err, errlen);
      amqp_destroy_message(&m);
      returned = true;
      break;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
      amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION,
                            .reply = f.payload.method};
      return wr_amqp_reply_err(r, "publish", err, errlen);
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
      amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION,
                            .reply = f.payload.method};
      return wr_amqp_reply_err(r, "publish", err, errlen);
    }
    default:
      break;
    }
  }
}

int wr_amqp_publish_once(const wr_config_t *cfg, const char *routing_key, const uint8_t *body,
                         size_t len, const char *content_type, const char *message_id,
                         uint32_t timeout_ms, char *err, size_t errlen) {
  amqp_connection_state_t conn;
  const char *key = routing_key != NULL ? routing_key : "";
  /* Short strings: amqp_basic_publish would fail on them only after sending
   * part of the publish. */
  if (strlen(key) > 255 || (content_type != NULL && strlen(content_type) > 255)) {
    snprintf(err, errlen, "the routing key or content type is longer than 255 bytes");
    return -ENAMETOOLONG;
  }
  int rc = wr_amqp_conn_open(cfg, &conn, err, errlen);
  if (rc < 0)
    return rc;
  rc = wr_amqp_channel_open(conn, 1, err, errlen);
  if (rc < 0)
    goto out;
  amqp_confirm_select(conn, 1);
  rc = wr_amqp_reply_err(amqp_get_rpc_reply(conn), "confirm.select", err, errlen);
  if (rc < 0)
    goto out;

  amqp_basic_properties_t p;
  memset(&p, 0, sizeof(p));
  p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
  p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
  p.timestamp = (uint64_t)(wr_amqp_wall_ms() / 1000);
  if (content_type != NULL) {
    p._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.content_type = amqp_cstring_bytes(content_type);
  }
  /* An envelope id may be longer than a message_id; it is in the body. */
  if (message_id != NULL && strlen(message_id) <= 255) {
    p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    p.message_id = amqp_cstring_bytes(message_id);
  }
  amqp_bytes_t b = {.len = len, .bytes = (void *)body};
  int st = amqp_basic_publish(conn, 1, amqp_cstring_bytes(cfg->exchange), amqp_cstring_bytes(key),
                              1, 0, &p, b);
  if (st != AMQP_STATUS_OK) {
    snprintf(err, errlen, "publish to exchange %s: %s", cfg->exchange, amqp_error_string2(st));
    rc = status_errno(st);
    goto out;
  }
  rc = wait_confirm(conn, timeout_ms, err, errlen);
out:
  wr_amqp_conn_close(conn, rc != -ETIMEDOUT);
  return rc;
}
