/* A small HTTP/1.1 responder for /healthz, /readyz and /metrics: GET and HEAD, one request per connection. */
#ifndef SOP_HTTPD_H
#define SOP_HTTPD_H

#include "sl/error.h"

struct sop_httpd;

/* Fills *status, *ctype (static) and *body (malloc'd, or NULL) for path
 * (query string removed). Called on the server thread. */
typedef void (*sop_http_handler)(void *arg, const char *path, int *status, const char **ctype, char **body);

/* addr "host:port" or ":port" (all addresses); port 0 picks a free one.
 * bound gets "host:port" as bound. */
int sop_httpd_start(const char *addr, sop_http_handler fn, void *arg, struct sop_httpd **out, char bound[80],
		    sl_error_t *err);
void sop_httpd_stop(struct sop_httpd *h);

/* Parses a request head: the method and path of "GET /x HTTP/1.1\r\n...".
 * Returns 0, or -1 when the request line is malformed. (For tests.) */
int sop_http_request_line(const char *buf, size_t len, char *method, size_t mcap, char *path, size_t pcap);

#endif
