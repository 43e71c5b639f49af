/* Where the API server is and how to authenticate: a kubeconfig file (libyaml) or the in-cluster service account. */
#ifndef SOP_KUBECONFIG_H
#define SOP_KUBECONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include "sl/error.h"

#define SOP_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define SOP_KUBECONFIG_MAX (1u << 20)

struct sop_kube_config {
	char *server;           /* "https://host:port" (no trailing '/') */
	char *ca_file;          /* CA bundle path, or NULL */
	char *ca_pem;           /* CA bundle bytes (certificate-authority-data), or NULL */
	size_t ca_pem_len;
	bool insecure;          /* insecure-skip-tls-verify */
	char *token;            /* a fixed bearer token, or NULL */
	char *token_file;       /* a bearer token file, re-read when it changes (projected tokens rotate) */
	char *client_cert_file, *client_key_file;
	char *client_cert_pem, *client_key_pem;
	size_t client_cert_pem_len, client_key_pem_len;
	char *namespace_;       /* the context's (or service account's) namespace; "default" if none */
	char *context;          /* the context used (kubeconfig) */
};

/* Parses kubeconfig text. context NULL: current-context. Relative file
 * paths are taken relative to dir (the kubeconfig's directory), as kubectl
 * does. Refuses exec and auth-provider users (SL_E_UNSUPPORTED), and names
 * the missing or malformed entry otherwise (SL_E_INVALID). */
int sop_kubeconfig_parse(const char *buf, size_t len, const char *dir, const char *context,
			 struct sop_kube_config *out, sl_error_t *err);
/* Reads the file at path and parses it. */
int sop_kubeconfig_load(const char *path, const char *context, struct sop_kube_config *out, sl_error_t *err);

/* In-cluster: the server from host and port (KUBERNETES_SERVICE_HOST and
 * _PORT), token, CA and namespace from sa_dir (SOP_SA_DIR). */
int sop_incluster_load(const char *host, const char *port, const char *sa_dir, struct sop_kube_config *out,
		       sl_error_t *err);

void sop_kube_config_free(struct sop_kube_config *c);

/* Strict base64 (RFC 4648, padding required, whitespace skipped) for the
 * *-data fields. *out is NUL-terminated; free() it. */
int sop_base64_decode(const char *in, size_t len, char **out, size_t *out_len, sl_error_t *err);

#endif
