/* Internals shared by the API client's files (kube_http.c, kube_client.c). */
#ifndef SOP_KUBE_INT_H
#define SOP_KUBE_INT_H

#include <curl/curl.h>
#include <pthread.h>
#include <sys/stat.h>
#include "sop_kube.h"

#define SOP_KUBE_BODY_MAX (256u << 20) /* a list response */
#define SOP_KUBE_TIMEOUT_S 30

struct sop_kube {
	struct sop_kube_config cfg;
	pthread_mutex_t lock; /* token and stats */
	char *token;          /* current bearer token (from cfg.token or cfg.token_file) */
	struct stat token_st; /* of token_file when it was read */
	uint64_t requests, errors, unauthorized;
};

/* A prepared easy handle: URL, TLS, auth, Accept; the caller adds the rest. */
struct kube_req {
	CURL *h;
	struct curl_slist *headers;
	char errbuf[CURL_ERROR_SIZE];
	char *url;
};
int kube_req_init(struct sop_kube *k, struct kube_req *r, const char *method, const char *path,
		  const char *content_type, sl_error_t *err);
void kube_req_free(struct kube_req *r);

/* Reads the token file again when it changed (or always with force). */
int kube_token_refresh(struct sop_kube *k, bool force, sl_error_t *err);
void kube_count(struct sop_kube *k, long status);

/* The error for a non-2xx answer: "METHOD URL: 404 (NotFound): <Status.message>". */
int kube_status_error(sl_error_t *err, const char *method, const char *url, long status, const char *body,
		      size_t len);

#endif
