/* kubeconfig (clusters, users, contexts, current-context) and in-cluster service account configuration. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sl/file.h"
#include "sl/json.h"
#include "sl/yaml.h"
#include "oci/auth.h"
#include "sop_kubeconfig.h"

void sop_kube_config_free(struct sop_kube_config *c)
{
	free(c->server);
	free(c->ca_file);
	free(c->ca_pem);
	free(c->token);
	free(c->token_file);
	free(c->client_cert_file);
	free(c->client_key_file);
	free(c->client_cert_pem);
	free(c->client_key_pem);
	free(c->namespace_);
	free(c->context);
	memset(c, 0, sizeof(*c));
}

/* kubeconfig's *-data fields: base64 as Go's decoder takes it (line breaks
 * and blanks between characters ignored), otherwise strict RFC 4648. */
int sop_base64_decode(const char *in, size_t len, char **out, size_t *out_len, sl_error_t *err)
{
	_cleanup_free_ char *clean = malloc(len + 1);
	char *o = malloc(len / 4 * 3 + 4);
	if (!clean || !o) {
		free(o);
		return sl_error_set(err, SL_E_NOMEM, "base64: out of memory");
	}
	size_t m = 0, n = 0;
	for (size_t i = 0; i < len; i++)
		if (!strchr(" \t\r\n", in[i]) || !in[i])
			clean[m++] = in[i];
	if (m && !oci_base64_decode(clean, m, (unsigned char *)o, len / 4 * 3 + 3, &n)) {
		free(o);
		return sl_error_set(err, SL_E_INVALID,
				    "base64: not valid (standard alphabet, padded to a multiple of 4, zero pad bits)");
	}
	o[n] = 0;
	*out = o;
	*out_len = n;
	return 0;
}

/* The entry named name in a kubeconfig list ([{name, <field>: {...}}]). */
static int find_named(json_t *root, const char *list, const char *field, const char *name, json_t **out,
		      sl_error_t *err)
{
	json_t *arr = json_object_get(root, list);
	size_t i;
	json_t *e;
	if (arr && !json_is_array(arr))
		return sl_error_set(err, SL_E_INVALID, "kubeconfig: %s is not a list", list);
	json_array_foreach(arr, i, e) {
		const char *n = json_string_value(json_object_get(e, "name"));
		if (n && strcmp(n, name) == 0) {
			json_t *v = json_object_get(e, field);
			if (!json_is_object(v))
				return sl_error_set(err, SL_E_INVALID, "kubeconfig: %s[%zu] (%s) has no %s mapping", list, i,
						    name, field);
			*out = v;
			return 0;
		}
	}
	char show[SL_SHOW_BUF];
	sl_show(name, strlen(name), show);
	return sl_error_set(err, SL_E_INVALID, "kubeconfig: no entry \"%s\" in %s", show, list);
}

static int get_str(json_t *o, const char *key, const char *where, char **out, sl_error_t *err)
{
	json_t *v = json_object_get(o, key);
	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return sl_error_set(err, SL_E_INVALID, "kubeconfig: %s.%s is not a string", where, key);
	if (!(*out = strdup(json_string_value(v))))
		return sl_error_set(err, SL_E_NOMEM, "kubeconfig: out of memory");
	return 0;
}

static int get_path(json_t *o, const char *key, const char *where, const char *dir, char **out, sl_error_t *err)
{
	if (get_str(o, key, where, out, err) < 0)
		return -1;
	if (*out && **out != '/' && dir && *dir) {
		char *abs = NULL;
		if (asprintf(&abs, "%s/%s", dir, *out) < 0)
			return sl_error_set(err, SL_E_NOMEM, "kubeconfig: out of memory");
		free(*out);
		*out = abs;
	}
	return 0;
}

static int get_data(json_t *o, const char *key, const char *where, char **out, size_t *len, sl_error_t *err)
{
	_cleanup_free_ char *b64 = NULL;
	if (get_str(o, key, where, &b64, err) < 0)
		return -1;
	if (!b64)
		return 0;
	if (sop_base64_decode(b64, strlen(b64), out, len, err) < 0)
		return sl_error_wrap(err, "kubeconfig: %s.%s", where, key);
	return 0;
}

static int parse_tree(json_t *root, const char *dir, const char *context, struct sop_kube_config *c,
		      sl_error_t *err)
{
	if (!json_is_object(root))
		return sl_error_set(err, SL_E_INVALID, "kubeconfig: not a mapping");
	const char *ctxname = context;
	if (!ctxname) {
		ctxname = json_string_value(json_object_get(root, "current-context"));
		if (!ctxname || !*ctxname)
			return sl_error_set(err, SL_E_INVALID, "kubeconfig: no current-context and no context given");
	}
	json_t *ctx, *cluster, *user;
	if (find_named(root, "contexts", "context", ctxname, &ctx, err) < 0)
		return -1;
	const char *cname = json_string_value(json_object_get(ctx, "cluster"));
	const char *uname = json_string_value(json_object_get(ctx, "user"));
	if (!cname)
		return sl_error_set(err, SL_E_INVALID, "kubeconfig: context %s names no cluster", ctxname);
	if (find_named(root, "clusters", "cluster", cname, &cluster, err) < 0)
		return -1;
	if (!(c->context = strdup(ctxname)))
		return sl_error_set(err, SL_E_NOMEM, "kubeconfig: out of memory");
	if (get_str(ctx, "namespace", "context", &c->namespace_, err) < 0)
		return -1;

	if (get_str(cluster, "server", "cluster", &c->server, err) < 0)
		return -1;
	if (!c->server || (strncmp(c->server, "https://", 8) != 0 && strncmp(c->server, "http://", 7) != 0))
		return sl_error_set(err, SL_E_INVALID, "kubeconfig: cluster %s: server must be an http(s):// URL", cname);
	size_t sl = strlen(c->server);
	while (sl > 8 && c->server[sl - 1] == '/')
		c->server[--sl] = 0;
	json_t *ins = json_object_get(cluster, "insecure-skip-tls-verify");
	if (ins && !json_is_boolean(ins))
		return sl_error_set(err, SL_E_INVALID, "kubeconfig: cluster %s: insecure-skip-tls-verify is not a boolean",
				    cname);
	c->insecure = json_is_true(ins);
	if (get_path(cluster, "certificate-authority", "cluster", dir, &c->ca_file, err) < 0 ||
	    get_data(cluster, "certificate-authority-data", "cluster", &c->ca_pem, &c->ca_pem_len, err) < 0)
		return -1;

	if (!uname)
		return 0; /* anonymous */
	if (find_named(root, "users", "user", uname, &user, err) < 0)
		return -1;
	if (json_object_get(user, "exec") || json_object_get(user, "auth-provider"))
		return sl_error_set(err, SL_E_UNSUPPORTED,
				    "kubeconfig: user %s: exec and auth-provider plugins are not supported; use a token "
				    "or a client certificate", uname);
	if (get_str(user, "token", "user", &c->token, err) < 0 ||
	    get_path(user, "tokenFile", "user", dir, &c->token_file, err) < 0 ||
	    get_path(user, "client-certificate", "user", dir, &c->client_cert_file, err) < 0 ||
	    get_path(user, "client-key", "user", dir, &c->client_key_file, err) < 0 ||
	    get_data(user, "client-certificate-data", "user", &c->client_cert_pem, &c->client_cert_pem_len, err) < 0 ||
	    get_data(user, "client-key-data", "user", &c->client_key_pem, &c->client_key_pem_len, err) < 0)
		return -1;
	bool cert = c->client_cert_file || c->client_cert_pem;
	bool key = c->client_key_file || c->client_key_pem;
	if (cert != key)
		return sl_error_set(err, SL_E_INVALID, "kubeconfig: user %s: a client certificate needs its key and back",
				    uname);
	return 0;
}

int sop_kubeconfig_parse(const char *buf, size_t len, const char *dir, const char *context,
			 struct sop_kube_config *out, sl_error_t *err)
{
	memset(out, 0, sizeof(*out));
	_cleanup_json_ json_t *root = NULL;
	if (sl_yaml_parse(buf, len, "kubeconfig", &root, err) < 0)
		return -1;
	if (parse_tree(root, dir, context, out, err) < 0) {
		sop_kube_config_free(out);
		return -1;
	}
	if (!out->namespace_ && !(out->namespace_ = strdup("default"))) {
		sop_kube_config_free(out);
		return sl_error_set(err, SL_E_NOMEM, "kubeconfig: out of memory");
	}
	return 0;
}

int sop_kubeconfig_load(const char *path, const char *context, struct sop_kube_config *out, sl_error_t *err)
{
	_cleanup_free_ char *buf = NULL;
	size_t len;
	if (sl_read_path(path, SOP_KUBECONFIG_MAX, &buf, &len, err) < 0)
		return sl_error_wrap(err, "kubeconfig %s", path);
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = 0;
	else
		snprintf(dir, sizeof(dir), ".");
	if (sop_kubeconfig_parse(buf, len, dir, context, out, err) < 0)
		return sl_error_wrap(err, "%s", path);
	return 0;
}

int sop_incluster_load(const char *host, const char *port, const char *sa_dir, struct sop_kube_config *out,
		       sl_error_t *err)
{
	memset(out, 0, sizeof(*out));
	if (!host || !*host || !port || !*port)
		return sl_error_set(err, SL_E_INVALID,
				    "in-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set "
				    "(not in a pod? pass --kubeconfig)");
	int rc = strchr(host, ':') ? asprintf(&out->server, "https://[%s]:%s", host, port)
				   : asprintf(&out->server, "https://%s:%s", host, port);
	if (rc < 0)
		return sl_error_set(err, SL_E_NOMEM, "in-cluster: out of memory");
	if (asprintf(&out->token_file, "%s/token", sa_dir) < 0 || asprintf(&out->ca_file, "%s/ca.crt", sa_dir) < 0) {
		sop_kube_config_free(out);
		return sl_error_set(err, SL_E_NOMEM, "in-cluster: out of memory");
	}
	/* The token must be readable now: a missing mount is a deployment error to report at start. */
	_cleanup_free_ char *tok = NULL, *ns = NULL, *nspath = NULL;
	size_t len;
	if (sl_read_path(out->token_file, 64 * 1024, &tok, &len, err) < 0) {
		sop_kube_config_free(out);
		return sl_error_wrap(err, "in-cluster service account token");
	}
	if (asprintf(&nspath, "%s/namespace", sa_dir) < 0) {
		sop_kube_config_free(out);
		return sl_error_set(err, SL_E_NOMEM, "in-cluster: out of memory");
	}
	sl_error_t nerr = NULL;
	if (sl_read_path(nspath, 1024, &ns, &len, &nerr) == 0) {
		while (len && (ns[len - 1] == '\n' || ns[len - 1] == ' '))
			ns[--len] = 0;
		out->namespace_ = len ? sl_steal_ptr(ns) : NULL;
	}
	sl_error_free(&nerr);
	if (!out->namespace_ && !(out->namespace_ = strdup("default"))) {
		sop_kube_config_free(out);
		return sl_error_set(err, SL_E_NOMEM, "in-cluster: out of memory");
	}
	return 0;
}
