/* Node labelling through the Kubernetes API: one JSON merge patch of metadata.labels with the operator's client. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node_int.h"
#include "sl/json.h"
#include "sop_kube.h"
#include "sporelet_node.h"

/* RFC 1123 subdomain (Node names, label key prefixes): lowercase letters,
 * digits, '-' and '.', alphanumeric at both ends. */
static bool dns_subdomain(const char *s, size_t n)
{
	if (n == 0 || n > 253 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-' || s[i] == '.'))
			return false;
	return true;
}

/* A label name or value: at most 63 of [A-Za-z0-9-_.], alphanumeric at
 * both ends (a value may also be empty). */
static bool label_part(const char *s, size_t n, bool may_be_empty)
{
	if (n == 0)
		return may_be_empty;
	if (n > 63 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_' || s[i] == '.'))
			return false;
	return true;
}

static bool label_key(const char *k)
{
	const char *slash = strchr(k, '/');

	if (!slash)
		return label_part(k, strlen(k), false);
	return dns_subdomain(k, (size_t)(slash - k)) && label_part(slash + 1, strlen(slash + 1), false);
}

int node_label(const struct node_label_opts *o, sl_error_t *err)
{
	if (!o->node_name || !dns_subdomain(o->node_name, strlen(o->node_name)))
		return sl_error_set(err, SL_E_INVALID, "node name \"%s\": not a DNS subdomain name",
				    o->node_name ? o->node_name : "");
	if (!o->key || !label_key(o->key))
		return sl_error_set(err, SL_E_INVALID, "label key \"%s\": not a Kubernetes label key", o->key ? o->key : "");
	if (o->value && !label_part(o->value, strlen(o->value), true))
		return sl_error_set(err, SL_E_INVALID, "label value \"%s\": not a Kubernetes label value", o->value);
	if (!o->api_server || strncmp(o->api_server, "http", 4) != 0)
		return sl_error_set(err, SL_E_INVALID, "API server \"%s\": an http(s) URL is needed",
				    o->api_server ? o->api_server : "");
	if (!o->token_file)
		return sl_error_set(err, SL_E_INVALID, "service account token: no token file");

	/* The operator's Kubernetes client: bearer token (re-read on a 401),
	 * CA bundle, the API's Status message in errors. */
	size_t bl = strlen(o->api_server);
	while (bl > 0 && o->api_server[bl - 1] == '/')
		bl--;
	struct sop_kube_config cfg = {
		.server = strndup(o->api_server, bl),
		.token_file = strdup(o->token_file),
		.ca_file = o->ca_file && *o->ca_file ? strdup(o->ca_file) : NULL,
	};
	if (!cfg.server || !cfg.token_file || (o->ca_file && *o->ca_file && !cfg.ca_file)) {
		sop_kube_config_free(&cfg);
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	}
	struct sop_kube *k = NULL;
	if (sop_kube_new(&cfg, &k, err) < 0) {
		sop_kube_config_free(&cfg);
		return sl_error_wrap(err, "service account token");
	}
	_cleanup_json_ json_t *patch = json_pack("{s:{s:{s:o}}}", "metadata", "labels", o->key,
						 o->value ? json_string(o->value) : json_null());
	char path[300];
	snprintf(path, sizeof(path), "/api/v1/nodes/%s", o->node_name);
	long status = 0;
	int rc = patch ? sop_kube_merge_patch(k, path, patch, &status, NULL, err)
		       : sl_error_set(err, SL_E_NOMEM, "out of memory");
	sop_kube_free(k);
	if (rc < 0 && status == 404 && !o->value) {
		/* The node is gone: so is its label. */
		sl_error_free(err);
		return 0;
	}
	if (rc < 0 && status)
		return sl_error_wrap(err, "label node %s: HTTP %ld", o->node_name, status);
	return rc;
}
