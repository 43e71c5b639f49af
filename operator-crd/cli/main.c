/* sporelet-operator: command line, configuration source, signals; the work is in libsporelet-operator. */
#include <curl/curl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sl/error.h"
#include "sl/log.h"
#include "sop_controller.h"
#include "sop_kube.h"
#include "sop_sporelet.h"

static volatile int stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: sporelet-operator [options]\n"
		"  --kubeconfig PATH        API server and credentials from a kubeconfig (default: $KUBECONFIG,\n"
		"                           else the in-cluster service account)\n"
		"  --context NAME           kubeconfig context (default: current-context)\n"
		"  --namespace NS           watch only NS (default: all namespaces)\n"
		"  --http-addr HOST:PORT    serve /healthz, /readyz, /metrics (default :8081; \"\" for none)\n"
		"  --leader-elect           elect a leader with a coordination.k8s.io Lease\n"
		"  --lease-name NAME        (default sporelet-operator)\n"
		"  --lease-namespace NS     (default: the configuration's namespace)\n"
		"  --lease-duration S       leaseDurationSeconds (default 15)\n"
		"  --renew-deadline S       give up leadership after renewals failed this long (default 10)\n"
		"  --retry-period S         between lease attempts (default 2)\n"
		"  --identity ID            holder identity (default: $POD_NAME, else hostname_pid)\n"
		"  --no-resolve             do not resolve spore tags to digests\n"
		"  --registry-insecure      plain HTTP to non-loopback registries when resolving\n"
		"  --registry-ca FILE       extra CA bundle for registries\n"
		"  --resolve-ttl S          look a resolved tag up again after S seconds (default 300)\n"
		"  --resync S               reconcile every Sporelet at least every S seconds (default 300)\n"
		"  --watch-timeout S        timeoutSeconds of each watch (default 300)\n"
		"  --log-level LEVEL        debug, info, warn, error (default info)\n"
		"  --runtime-class NAME     the pods' runtimeClassName (default sporelet)\n"
		"  --version\n");
}

static unsigned num(const char *flag, const char *v)
{
	char *end;
	unsigned long n = strtoul(v, &end, 10);
	if (!*v || *end || n == 0 || n > 86400) {
		fprintf(stderr, "sporelet-operator: %s: want seconds in 1..86400, got \"%s\"\n", flag, v);
		exit(2);
	}
	return (unsigned)n;
}

int main(int argc, char **argv)
{
	enum { O_KUBECONFIG = 256, O_CONTEXT, O_NAMESPACE, O_HTTP, O_LE, O_LNAME, O_LNS, O_LDUR, O_RENEW, O_RETRY,
	       O_ID, O_NORESOLVE, O_RINSECURE, O_RCA, O_RTTL, O_RESYNC, O_WTIMEOUT, O_LOG, O_VERSION, O_HELP, O_RTCLASS };
	static const struct option opts[] = {
		{ "kubeconfig", required_argument, 0, O_KUBECONFIG }, { "context", required_argument, 0, O_CONTEXT },
		{ "namespace", required_argument, 0, O_NAMESPACE },   { "http-addr", required_argument, 0, O_HTTP },
		{ "leader-elect", no_argument, 0, O_LE },             { "lease-name", required_argument, 0, O_LNAME },
		{ "lease-namespace", required_argument, 0, O_LNS },   { "lease-duration", required_argument, 0, O_LDUR },
		{ "renew-deadline", required_argument, 0, O_RENEW },  { "retry-period", required_argument, 0, O_RETRY },
		{ "identity", required_argument, 0, O_ID },           { "no-resolve", no_argument, 0, O_NORESOLVE },
		{ "registry-insecure", no_argument, 0, O_RINSECURE }, { "registry-ca", required_argument, 0, O_RCA },
		{ "resolve-ttl", required_argument, 0, O_RTTL },      { "resync", required_argument, 0, O_RESYNC },
		{ "watch-timeout", required_argument, 0, O_WTIMEOUT }, { "log-level", required_argument, 0, O_LOG },
		{ "version", no_argument, 0, O_VERSION },             { "help", no_argument, 0, O_HELP },
		{ "runtime-class", required_argument, 0, O_RTCLASS },
		{ 0, 0, 0, 0 },
	};
	const char *kubeconfig = getenv("KUBECONFIG"), *context = NULL, *lease_ns = NULL, *identity = NULL;
	struct sop_controller_opts o = { .http_addr = ":8081", .resolve = true, .resolve_ttl_s = 300, .resync_s = 300,
					 .watch_timeout_s = 300,
					 .lease = { .name = "sporelet-operator", .duration_s = 15, .renew_deadline_s = 10,
						    .retry_s = 2 } };
	int level = SL_LOG_INFO, c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case O_KUBECONFIG: kubeconfig = optarg; break;
		case O_CONTEXT: context = optarg; break;
		case O_NAMESPACE: o.namespace_ = optarg; break;
		case O_HTTP: o.http_addr = *optarg ? optarg : NULL; break;
		case O_LE: o.leader_elect = true; break;
		case O_RTCLASS:
			if (!sop_dns_label_ok(optarg)) {
				fprintf(stderr, "sporelet-operator: --runtime-class: \"%s\" is not a DNS-1123 label\n",
					optarg);
				return 2;
			}
			o.runtime_class = optarg;
			break;
		case O_LNAME: o.lease.name = optarg; break;
		case O_LNS: lease_ns = optarg; break;
		case O_LDUR: o.lease.duration_s = num("--lease-duration", optarg); break;
		case O_RENEW: o.lease.renew_deadline_s = num("--renew-deadline", optarg); break;
		case O_RETRY: o.lease.retry_s = num("--retry-period", optarg); break;
		case O_ID: identity = optarg; break;
		case O_NORESOLVE: o.resolve = false; break;
		case O_RINSECURE: o.registry_insecure = true; break;
		case O_RCA: o.registry_ca = optarg; break;
		case O_RTTL: o.resolve_ttl_s = num("--resolve-ttl", optarg); break;
		case O_RESYNC: o.resync_s = num("--resync", optarg); break;
		case O_WTIMEOUT: o.watch_timeout_s = num("--watch-timeout", optarg); break;
		case O_LOG:
			if ((level = sl_log_level_parse(optarg)) < 0) {
				fprintf(stderr, "sporelet-operator: --log-level: unknown level \"%s\"\n", optarg);
				return 2;
			}
			break;
		case O_VERSION: printf("sporelet-operator %s\n", SPORELET_VERSION); return 0;
		case O_HELP: usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	sl_log_init("sporelet-operator", level, 2);
	curl_global_init(CURL_GLOBAL_DEFAULT);

	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	sl_error_t err = NULL;
	struct sop_kube_config cfg;
	int rc = kubeconfig && *kubeconfig
			 ? sop_kubeconfig_load(kubeconfig, context, &cfg, &err)
			 : sop_incluster_load(getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT"),
					      SOP_SA_DIR, &cfg, &err);
	struct sop_kube *k = NULL;
	if (rc == 0)
		rc = sop_kube_new(&cfg, &k, &err);
	if (rc < 0) {
		sl_err("configuration failed", "err=\"%s\"", sl_error_msg(err));
		sl_error_free(&err);
		curl_global_cleanup();
		return 1;
	}
	char idbuf[300];
	if (!identity)
		identity = getenv("POD_NAME");
	if (!identity || !*identity) {
		char host[256] = "unknown";
		gethostname(host, sizeof(host) - 1);
		snprintf(idbuf, sizeof(idbuf), "%s_%ld", host, (long)getpid());
		identity = idbuf;
	}
	o.lease.identity = identity;
	o.lease.ns = lease_ns ? lease_ns : sop_kube_namespace(k);
	sl_info("starting", "server=%s namespace=%s leader_elect=%d identity=%s resolve=%d", sop_kube_server(k),
		o.namespace_ && *o.namespace_ ? o.namespace_ : "(all)", o.leader_elect, identity, o.resolve);
	rc = sop_controller_run(k, &o, &stop_flag, &err);
	if (rc < 0) {
		sl_err("controller failed", "err=\"%s\"", sl_error_msg(err));
		sl_error_free(&err);
	} else {
		sl_info("stopped", NULL);
	}
	sop_kube_free(k);
	curl_global_cleanup();
	return rc < 0 ? 1 : 0;
}
