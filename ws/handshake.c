/* Request head parsing on llhttp and WebSocket handshake validation. Pure:
 * bytes in, a parsed request or an HTTP status out. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "ws/handshake_int.h"

/* Duplicated list headers are joined into a fresh copy, so the arena needs
 * more room than the head itself; going over it is answered like an
 * oversized head. */
#define ARENA_SIZE (2 * WR_WS_HEAD_MAX)

struct wr_ws_hs_s {
  llhttp_t parser;
  wr_ws_request_t req;
  wr_ws_hs_state_t state;
  int status;         /* error status decided inside a callback, 0 = none */
  size_t total;       /* bytes given to llhttp so far */
  bool headers_done;  /* on_headers_complete ran */
  int cur;            /* header whose value is being read, -1 = ignored */
  bool value_open;    /* a value of cur has started and is not terminated */
  size_t value_start; /* arena offset of the value being read */
  char name[32];      /* header name being read (longer names are ignored) */
  size_t name_len;
  bool name_long;
  bool url_open;
  size_t url_len;            /* the URL is always first in the arena */
  long hoff[WR_WS_NHEADERS]; /* arena offset of each header value, -1 = absent */
  size_t len;                /* arena bytes used */
  char arena[ARENA_SIZE];
};

static const char *const header_names[WR_WS_NHEADERS] = {
    [WR_WS_H_HOST] = "host",
    [WR_WS_H_UPGRADE] = "upgrade",
    [WR_WS_H_CONNECTION] = "connection",
    [WR_WS_H_KEY] = "sec-websocket-key",
    [WR_WS_H_VERSION] = "sec-websocket-version",
    [WR_WS_H_PROTOCOL] = "sec-websocket-protocol",
    [WR_WS_H_ORIGIN] = "origin",
    [WR_WS_H_AUTHORIZATION] = "authorization",
    [WR_WS_H_COOKIE] = "cookie",
};

static wr_ws_hs_t *hs_of(llhttp_t *p) {
  return p->data;
}

static int arena_append(wr_ws_hs_t *hs, const char *at, size_t n) {
  if (n > ARENA_SIZE - hs->len) {
    hs->status = 431;
    return -1;
  }
  memcpy(hs->arena + hs->len, at, n);
  hs->len += n;
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n) {
  wr_ws_hs_t *hs = hs_of(p);
  hs->url_open = true;
  hs->url_len += n;
  return arena_append(hs, at, n);
}

static int on_url_complete(llhttp_t *p) {
  wr_ws_hs_t *hs = hs_of(p);
  hs->url_open = false;
  return arena_append(hs, "", 1);
}

/* Terminates the value being read. llhttp may skip the value callbacks for
 * an empty value, so this also runs when the next header starts. */
static int close_value(wr_ws_hs_t *hs) {
  if (hs->cur < 0 || !hs->value_open)
    return 0;
  if (arena_append(hs, "", 1) != 0)
    return -1;
  hs->hoff[hs->cur] = (long)hs->value_start;
  hs->value_open = false;
  hs->cur = -1;
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n) {
  wr_ws_hs_t *hs = hs_of(p);
  if (close_value(hs) != 0)
    return -1;
  hs->cur = -1;
  if (hs->name_long || n >= sizeof(hs->name) - hs->name_len) {
    hs->name_long = true;
    return 0;
  }
  memcpy(hs->name + hs->name_len, at, n);
  hs->name_len += n;
  return 0;
}

static bool is_list_header(int h) {
  return h == WR_WS_H_CONNECTION || h == WR_WS_H_PROTOCOL || h == WR_WS_H_UPGRADE ||
         h == WR_WS_H_COOKIE;
}

static int on_header_field_complete(llhttp_t *p) {
  wr_ws_hs_t *hs = hs_of(p);
  int h = -1;
  if (!hs->name_long) {
    hs->name[hs->name_len] = '\0';
    for (int i = 0; i < WR_WS_NHEADERS; i++) {
      if (strcasecmp(hs->name, header_names[i]) == 0) {
        h = i;
        break;
      }
    }
  }
  hs->name_len = 0;
  hs->name_long = false;
  hs->cur = h;
  if (h < 0)
    return 0;
  hs->value_start = hs->len;
  hs->value_open = true;
  if (hs->hoff[h] >= 0) {
    /* RFC 6455 forbids repeating the key or the version; repeating any other
     * single-valued header we rely on is just as ambiguous. */
    if (!is_list_header(h)) {
      hs->status = 400;
      return -1;
    }
    const char *old = hs->arena + hs->hoff[h];
    size_t oldlen = strlen(old);
    const char *sep = h == WR_WS_H_COOKIE ? "; " : ", ";
    /* old lives in the arena: copy through a bounded append. */
    if (oldlen + 2 > ARENA_SIZE - hs->len) {
      hs->status = 431;
      return -1;
    }
    memmove(hs->arena + hs->len, old, oldlen);
    hs->len += oldlen;
    if (arena_append(hs, sep, 2) != 0)
      return -1;
  }
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n) {
  wr_ws_hs_t *hs = hs_of(p);
  if (hs->cur < 0)
    return 0;
  return arena_append(hs, at, n);
}

static int on_header_value_complete(llhttp_t *p) {
  return close_value(hs_of(p));
}

static int on_headers_complete(llhttp_t *p) {
  wr_ws_hs_t *hs = hs_of(p);
  if (close_value(hs) != 0)
    return -1;
  hs->headers_done = true;
  /* Stop right after the head: a request that is not an upgrade is
   * answered and closed, so its body (if any) is never read, and an upgrade
   * must not wait for a body either. The bytes that follow are the first
   * WebSocket bytes. */
  return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
};

wr_ws_hs_t *wr_ws_hs_new(void) {
  wr_ws_hs_t *hs = calloc(1, sizeof(*hs));
  if (hs == NULL)
    return NULL;
  llhttp_init(&hs->parser, HTTP_REQUEST, &settings);
  hs->parser.data = hs;
  hs->cur = -1;
  for (int i = 0; i < WR_WS_NHEADERS; i++)
    hs->hoff[i] = -1;
  return hs;
}

void wr_ws_hs_free(wr_ws_hs_t *hs) {
  free(hs);
}

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t')
    s++;
  size_t n = strlen(s);
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
    s[--n] = '\0';
  return s;
}

static void finish_request(wr_ws_hs_t *hs) {
  wr_ws_request_t *r = &hs->req;
  llhttp_t *p = &hs->parser;
  r->method = llhttp_method_name((llhttp_method_t)llhttp_get_method(p));
  r->is_get = llhttp_get_method(p) == HTTP_GET;
  r->http_major = llhttp_get_http_major(p);
  r->http_minor = llhttp_get_http_minor(p);
  r->upgrade = llhttp_get_upgrade(p) != 0;
  /* The URL is NUL-terminated at arena[url_len] by on_url_complete. */
  char *url = hs->arena;
  url[hs->url_len] = '\0';
  char *q = memchr(url, '?', hs->url_len);
  if (q != NULL) {
    *q = '\0';
    r->query = q + 1;
  } else {
    r->query = "";
  }
  r->path = url;
  for (int i = 0; i < WR_WS_NHEADERS; i++)
    r->headers[i] = hs->hoff[i] >= 0 ? trim(hs->arena + hs->hoff[i]) : NULL;
}

wr_ws_hs_state_t wr_ws_hs_feed(wr_ws_hs_t *hs, const uint8_t *data, size_t len, size_t *consumed,
                               int *status) {
  *consumed = 0;
  *status = hs->status;
  if (hs->state != WR_WS_HS_MORE)
    return hs->state;
  size_t room = WR_WS_HEAD_MAX - hs->total;
  size_t n = len < room ? len : room;
  if (n == 0 && len > 0)
    goto too_large;
  llhttp_errno_t err = llhttp_execute(&hs->parser, (const char *)data, n);
  if (hs->headers_done && (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE)) {
    *consumed = (size_t)((const uint8_t *)llhttp_get_error_pos(&hs->parser) - data);
    finish_request(hs);
    hs->state = WR_WS_HS_DONE;
    return hs->state;
  }
  if (err != HPE_OK) {
    hs->state = WR_WS_HS_ERROR;
    if (hs->status == 0)
      hs->status = 400;
    *status = hs->status;
    *consumed = n;
    return hs->state;
  }
  hs->total += n;
  *consumed = n;
  if (hs->total < WR_WS_HEAD_MAX)
    return WR_WS_HS_MORE;
too_large:
  hs->state = WR_WS_HS_ERROR;
  hs->status = 431;
  *status = 431;
  return hs->state;
}

const wr_ws_request_t *wr_ws_hs_request(const wr_ws_hs_t *hs) {
  return hs->state == WR_WS_HS_DONE ? &hs->req : NULL;
}

bool wr_ws_list_next(const char **s, const char **start, size_t *len) {
  const char *p = *s;
  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == ',')
      p++;
    if (*p == '\0') {
      *s = p;
      return false;
    }
    const char *b = p;
    while (*p != '\0' && *p != ',')
      p++;
    const char *e = p;
    while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
      e--;
    if (e > b) {
      *s = p;
      *start = b;
      *len = (size_t)(e - b);
      return true;
    }
  }
}

bool wr_ws_hs_has_token(const char *value, const char *token) {
  const char *item;
  size_t n, tlen;
  if (value == NULL)
    return false;
  tlen = strlen(token);
  while (wr_ws_list_next(&value, &item, &n))
    if (n == tlen && strncasecmp(item, token, tlen) == 0)
      return true;
  return false;
}

const char *wr_ws_format_name(wr_ws_format_t f) {
  return f == WR_WS_FORMAT_MSGPACK ? "warren.msgpack" : "warren.json";
}

int wr_ws_hs_select_protocol(const char *value, wr_ws_format_t *format, bool *echo) {
  *format = WR_WS_FORMAT_JSON;
  *echo = false;
  if (value == NULL)
    return 0;
  const char *item;
  size_t n;
  bool any = false;
  while (wr_ws_list_next(&value, &item, &n)) {
    /* A token offered as a subprotocol is a credential, not a protocol the
     * client can speak: it neither counts as one nor may ever be echoed. */
    if (n >= sizeof(WR_WS_BEARER_PROTOCOL) - 1 &&
        memcmp(item, WR_WS_BEARER_PROTOCOL, sizeof(WR_WS_BEARER_PROTOCOL) - 1) == 0)
      continue;
    any = true;
    for (int f = 0; f < WR_WS_NFORMATS; f++) {
      const char *name = wr_ws_format_name((wr_ws_format_t)f);
      if (n == strlen(name) && memcmp(item, name, n) == 0) {
        *format = (wr_ws_format_t)f;
        *echo = true;
        return 0;
      }
    }
  }
  /* An empty header (or one with only a token) asks for nothing in
   * particular: treat it as absent. */
  return any ? -EPROTO : 0;
}

int wr_ws_hs_accept_key(const char *key, char out[29]) {
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  uint8_t raw[24];
  /* A 16-byte nonce is exactly 24 base64 characters ending in "==";
   * EVP_DecodeBlock rejects any character outside the alphabet. */
  if (key == NULL || strlen(key) != 24 || key[22] != '=' || key[23] != '=')
    return -EINVAL;
  if (EVP_DecodeBlock(raw, (const unsigned char *)key, 24) != 18)
    return -EINVAL;
  char buf[24 + sizeof(guid)];
  memcpy(buf, key, 24);
  memcpy(buf + 24, guid, sizeof(guid));
  uint8_t digest[SHA_DIGEST_LENGTH];
  SHA1((const unsigned char *)buf, 24 + sizeof(guid) - 1, digest);
  EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
  return 0;
}

static int reject(wr_ws_upgrade_t *out, int status, const char *error, const char *extra) {
  out->status = status;
  out->error = error;
  out->extra_header = extra;
  return status;
}

int wr_ws_hs_validate(const wr_ws_request_t *req, wr_ws_upgrade_t *out) {
  memset(out, 0, sizeof(*out));
  if (!req->is_get)
    return reject(out, 405, "method_not_allowed", "Allow: GET\r\n");
  if (req->http_major != 1 || req->http_minor != 1)
    return reject(out, 400, "bad_http_version", NULL);
  if (!wr_ws_hs_has_token(req->headers[WR_WS_H_UPGRADE], "websocket") ||
      !wr_ws_hs_has_token(req->headers[WR_WS_H_CONNECTION], "upgrade"))
    return reject(out, 426, "upgrade_required", "Upgrade: websocket\r\n");
  const char *v = req->headers[WR_WS_H_VERSION];
  if (v == NULL || strcmp(v, "13") != 0)
    return reject(out, 426, "unsupported_version", "Sec-WebSocket-Version: 13\r\n");
  if (wr_ws_hs_accept_key(req->headers[WR_WS_H_KEY], out->accept) != 0)
    return reject(out, 400, "bad_key", NULL);
  if (wr_ws_hs_select_protocol(req->headers[WR_WS_H_PROTOCOL], &out->format, &out->echo_protocol) !=
      0)
    return reject(out, 400, "unsupported_protocol", NULL);
  out->status = 101;
  return 101;
}

const char *wr_ws_http_reason(int status) {
  switch (status) {
  case 101:
    return "Switching Protocols";
  case 200:
    return "OK";
  case 204:
    return "No Content";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 426:
    return "Upgrade Required";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  default:
    return "Unknown";
  }
}

ssize_t wr_ws_http_head_write(char *out, size_t cap, int status, const char *content_type,
                              const char *extra, size_t body_len) {
  int n = snprintf(out, cap,
                   "HTTP/1.1 %d %s\r\n"
                   "%s%s%s"
                   "Content-Length: %zu\r\n"
                   "Connection: close\r\n"
                   "Cache-Control: no-store\r\n"
                   "%s"
                   "\r\n",
                   status, wr_ws_http_reason(status), content_type ? "Content-Type: " : "",
                   content_type ? content_type : "", content_type ? "\r\n" : "", body_len,
                   extra ? extra : "");
  if (n < 0 || (size_t)n >= cap)
    return -ENOSPC;
  return n;
}

ssize_t wr_ws_hs_101_write(char *out, size_t cap, const char *accept, const char *protocol) {
  int n = snprintf(out, cap,
                   "HTTP/1.1 101 Switching Protocols\r\n"
                   "Upgrade: websocket\r\n"
                   "Connection: Upgrade\r\n"
                   "Sec-WebSocket-Accept: %s\r\n"
                   "%s%s%s"
                   "\r\n",
                   accept, protocol ? "Sec-WebSocket-Protocol: " : "", protocol ? protocol : "",
                   protocol ? "\r\n" : "");
  if (n < 0 || (size_t)n >= cap)
    return -ENOSPC;
  return n;
}
