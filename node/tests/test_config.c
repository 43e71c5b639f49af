/* Unit tests of sporelet-node's containerd config.toml editing (ctrd_config.c, toml_scan.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sporelet_node.h"
#include "toml_scan.h"

#define CC "[plugins.\"io.containerd.grpc.v1.cri\".containerd]"
#define RS "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.spore]"
#define RUNC "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]"

/* A typical `containerd config default`-style user file (shortened). */
static const char user_v2[] =
	"version = 2\n"
	"root = \"/var/lib/containerd\"\n"
	"\n"
	"[plugins]\n"
	"  [plugins.\"io.containerd.grpc.v1.cri\"]\n"
	"    sandbox_image = \"registry.k8s.io/pause:3.6\" # pinned\n"
	"    [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n"
	"      snapshotter = \"overlayfs\"\n"
	"      default_runtime_name = \"runc\"\n"
	"      disable_snapshot_annotations = true\n"
	"      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n"
	"        runtime_type = \"io.containerd.runc.v2\"\n"
	"        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n"
	"          SystemdCgroup = true\n"
	"[proxy_plugins]\n"
	"  [proxy_plugins.stargz]\n"
	"    type = \"snapshot\"\n"
	"    address = \"/run/stargz.sock\"\n";

static struct node_ctrd_opts opts(void)
{
	struct node_ctrd_opts o;

	node_ctrd_opts_default(&o);
	return o;
}

/* install must succeed; returns the new bytes. */
static char *install_ok(const char *in, size_t len, bool exists, const struct node_ctrd_opts *o, size_t *outlen,
			bool *changed)
{
	char *out = NULL;
	sl_error_t err = NULL;
	int rc = node_config_install(in, len, exists, o, &out, outlen, changed, &err);

	if (rc < 0)
		fail_msg("install refused: %s", sl_error_msg(err));
	assert_non_null(out);
	assert_int_equal(strlen(out), *outlen);
	return out;
}

/* install must be refused with code and a message containing needle. */
static void install_refused(const char *in, int code, const char *needle)
{
	struct node_ctrd_opts o = opts();
	char *out = NULL;
	size_t outlen;
	bool changed;
	sl_error_t err = NULL;

	assert_int_equal(node_config_install(in, strlen(in), true, &o, &out, &outlen, &changed, &err), -1);
	assert_null(out);
	assert_non_null(err);
	if (!strstr(sl_error_msg(err), needle))
		fail_msg("error \"%s\" does not contain \"%s\"", sl_error_msg(err), needle);
	assert_int_equal(err->code, code);
	sl_error_free(&err);
}

/* The round trip every accepted input must pass: install is idempotent and
 * uninstall gives back the exact bytes. Returns install's output. */
static char *round_trip(const char *in, size_t len, const struct node_ctrd_opts *o)
{
	size_t l1, l2, l3;
	bool ch1, ch2, ch3, remove;
	char *once = install_ok(in, len, true, o, &l1, &ch1);
	char *twice = install_ok(once, l1, true, o, &l2, &ch2);
	char *back = NULL;
	sl_error_t err = NULL;

	assert_true(ch1);
	assert_false(ch2);
	assert_int_equal(l1, l2);
	assert_memory_equal(once, twice, l1);
	assert_int_equal(node_config_uninstall(once, l1, &back, &l3, &remove, &ch3, &err), 0);
	assert_true(ch3);
	assert_false(remove);
	assert_int_equal(l3, len);
	assert_memory_equal(back, in, len);
	free(twice);
	free(back);
	return once;
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/* ---- tests ------------------------------------------------------------ */

static void t_no_file(void **state)
{
	(void)state;
	struct node_ctrd_opts o = opts();
	size_t len, l2, l3;
	bool changed, remove;
	char *out = install_ok(NULL, 0, false, &o, &len, &changed);
	char *again, *back = NULL;
	sl_error_t err = NULL;

	assert_true(changed);
	assert_non_null(strstr(out, "[created the file]"));
	assert_non_null(strstr(out, "\nversion = 2\n"));
	assert_non_null(strstr(out, CC "\n  disable_snapshot_annotations = false\n"));
	/* containerd's built-in runc is kept: a config naming any runtime
	 * replaces the built-in list (kata-containers#3229). */
	assert_non_null(strstr(out, RUNC "\n  runtime_type = \"io.containerd.runc.v2\"\n"));
	assert_non_null(strstr(out, RS "\n  runtime_type = \"io.containerd.spore.v2\"\n  snapshotter = \"spore\"\n"
				    "  pod_annotations = [\"sporelet.ai/*\"]\n"));
	assert_non_null(strstr(out, "[proxy_plugins.spore]\n  type = \"snapshot\"\n  address = \"/run/sporelet/snapshotter.sock\"\n"));
	assert_null(strstr(out, "ConfigPath"));
	/* idempotent on its own output */
	again = install_ok(out, len, true, &o, &l2, &changed);
	assert_false(changed);
	assert_string_equal(again, out);
	/* uninstall: the file goes */
	assert_int_equal(node_config_uninstall(out, len, &back, &l3, &remove, &changed, &err), 0);
	assert_true(remove);
	assert_true(changed);
	assert_int_equal(l3, 0);
	free(out);
	free(again);
	free(back);
}

static void t_v2_user_config(void **state)
{
	(void)state;
	struct node_ctrd_opts o = opts();
	char *out = round_trip(user_v2, strlen(user_v2), &o);

	/* the user's disable_snapshot_annotations = true is disabled, ours follows the header */
	assert_non_null(strstr(out, "\n# sporelet-node disabled:       disable_snapshot_annotations = true\n"));
	assert_non_null(strstr(out, "    " CC "\n# >>> sporelet-node"));
	assert_int_equal(count(out, "disable_snapshot_annotations = false"), 1);
	/* the user has runtimes: runc is theirs, not added */
	assert_int_equal(count(out, RUNC), 1);
	assert_int_equal(count(out, CC), 1);
	assert_non_null(strstr(out, RS));
	assert_non_null(strstr(out, "[proxy_plugins.spore]"));
	/* user lines untouched */
	assert_non_null(strstr(out, "SystemdCgroup = true\n"));
	assert_non_null(strstr(out, "sandbox_image = \"registry.k8s.io/pause:3.6\" # pinned\n"));
	assert_int_equal(count(out, "# >>> sporelet-node"), 2);
	assert_int_equal(count(out, "# <<< sporelet-node"), 2);
	free(out);
}

static void t_dsa_already_false(void **state)
{
	(void)state;
	const char *in = "version = 2\n" CC "\n  disable_snapshot_annotations = false\n";
	struct node_ctrd_opts o = opts();
	char *out = round_trip(in, strlen(in), &o);

	assert_int_equal(count(out, "disable_snapshot_annotations"), 1);
	assert_int_equal(count(out, "# >>> sporelet-node"), 1);
	/* no runtime of the user: runc added beside ours */
	assert_int_equal(count(out, RUNC), 1);
	free(out);
}

/* --cri-snapshotter: the CRI plugin's global snapshotter (containerd 1.6
 * ignores the runtime's). The user's own snapshotter line is disabled and
 * comes back byte for byte; a file without the table gets it in our block;
 * a line already right is left alone; without the option nothing changes. */
static void t_cri_snapshotter(void **state)
{
	(void)state;
	struct node_ctrd_opts o = opts();
	char *out;
	size_t len, l2;
	bool changed;

	o.cri_snapshotter = "spore";
	/* the user sets overlayfs (and disable_snapshot_annotations = true) */
	out = round_trip(user_v2, strlen(user_v2), &o);
	assert_non_null(strstr(out, "\n# sporelet-node disabled:       snapshotter = \"overlayfs\"\n"));
	assert_non_null(strstr(out, "    " CC "\n# >>> sporelet-node: managed block, `sporelet-node uninstall` removes it\n"
				    "  disable_snapshot_annotations = false\n  snapshotter = \"spore\"\n# <<< sporelet-node\n"));
	assert_int_equal(count(out, "snapshotter = \"spore\""), 2); /* the CRI plugin's and the runtime's */
	assert_int_equal(count(out, CC), 1);
	/* tscan sees exactly one snapshotter key in [..cri.containerd] */
	struct tscan_doc doc;
	sl_error_t err = NULL;
	size_t keys = 0;

	assert_int_equal(tscan_parse(out, strlen(out), &doc, &err), 0);
	for (size_t i = 0; i < doc.n; i++) {
		const struct tscan_stmt *st = &doc.stmts[i];

		if (st->kind == TS_KEYVAL && st->table >= 0 && st->nkey == 1 && strcmp(st->key[0], "snapshotter") == 0 &&
		    doc.stmts[st->table].nkey == 3 && strcmp(doc.stmts[st->table].key[2], "containerd") == 0)
			keys++;
	}
	tscan_free(&doc);
	assert_int_equal(keys, 1);
	/* the same file installed without the option: the line is the user's again */
	struct node_ctrd_opts plain = opts();
	char *without = install_ok(out, strlen(out), true, &plain, &l2, &changed);

	assert_true(changed);
	assert_non_null(strstr(without, "\n      snapshotter = \"overlayfs\"\n"));
	assert_null(strstr(without, "disabled:       snapshotter"));
	free(without);
	free(out);

	/* already "spore": nothing disabled, no second key */
	const char *right = "version = 2\n" CC "\n  snapshotter = \"spore\"\n  disable_snapshot_annotations = false\n"
			    RUNC "\n  runtime_type = \"io.containerd.runc.v2\"\n";

	out = round_trip(right, strlen(right), &o);
	assert_null(strstr(out, "disabled:"));
	assert_int_equal(count(out, "snapshotter = \"spore\""), 2);
	free(out);

	/* the table exists, dsa already false, no snapshotter: a block with the key only */
	const char *nosnap = "version = 2\n" CC "\n  disable_snapshot_annotations = false\n";

	out = round_trip(nosnap, strlen(nosnap), &o);
	assert_non_null(strstr(out, CC "\n# >>> sporelet-node: managed block, `sporelet-node uninstall` removes it\n"
					"  snapshotter = \"spore\"\n# <<< sporelet-node\n"));
	assert_int_equal(count(out, "disable_snapshot_annotations"), 1);
	free(out);

	/* no table: it goes into the tail block */
	const char *empty = "version = 2\n";

	out = round_trip(empty, strlen(empty), &o);
	assert_non_null(strstr(out, CC "\n  disable_snapshot_annotations = false\n  snapshotter = \"spore\"\n"));
	free(out);

	/* no file at all */
	out = install_ok(NULL, 0, false, &o, &len, &changed);
	assert_non_null(strstr(out, CC "\n  disable_snapshot_annotations = false\n  snapshotter = \"spore\"\n"));
	free(out);

	/* a multi-line snapshotter value is refused, as for disable_snapshot_annotations */
	const char *multi = "version = 2\n" CC "\n  snapshotter = \"\"\"\nover\"\"\"\n";
	char *o2 = NULL;
	size_t ol;

	assert_int_equal(node_config_install(multi, strlen(multi), true, &o, &o2, &ol, &changed, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "snapshotter spans several lines"));
	sl_error_free(&err);
	/* a name needing quotes is refused */
	o.cri_snapshotter = "sp\"ore";
	assert_int_equal(node_config_install(empty, strlen(empty), true, &o, &o2, &ol, &changed, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "CRI snapshotter"));
	sl_error_free(&err);
}

static void t_other_options(void **state)
{
	(void)state;
	struct node_ctrd_opts o = opts(), o2 = opts();
	size_t l1, l2, l3;
	bool ch;
	char *a, *b, *c;

	a = install_ok(user_v2, strlen(user_v2), true, &o, &l1, &ch);
	o2.proxy_address = "/var/run/other/snap.sock";
	o2.shim_config = "/etc/sporelet/shim.yaml";
	o2.snapshotter = "";
	b = install_ok(a, l1, true, &o2, &l2, &ch);
	assert_true(ch);
	assert_null(strstr(b, "/run/sporelet/snapshotter.sock"));
	assert_non_null(strstr(b, "address = \"/var/run/other/snap.sock\""));
	assert_non_null(strstr(b, "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.spore.options]\n"
				  "  ConfigPath = \"/etc/sporelet/shim.yaml\"\n"));
	assert_null(strstr(b, "snapshotter = \"spore\""));
	assert_int_equal(count(b, "# >>> sporelet-node"), 2);
	assert_int_equal(count(b, "# sporelet-node disabled:"), 1);
	/* and back to the first options: the first bytes again */
	c = install_ok(b, l2, true, &o, &l3, &ch);
	assert_true(ch);
	assert_string_equal(c, a);
	free(a);
	free(b);
	free(c);
}

static void t_no_trailing_newline(void **state)
{
	(void)state;
	struct node_ctrd_opts o = opts();
	const char *a = "version = 2\nroot = \"/x\"";                /* last line unterminated */
	const char *b = "version = 2\n" CC;                           /* ... and it is the header we insert after */
	const char *c = "version = 2\n" CC "\n  disable_snapshot_annotations = true"; /* ... and the line we disable */
	char *out;

	out = round_trip(a, strlen(a), &o);
	assert_non_null(strstr(out, "root = \"/x\"\n# >>> sporelet-node: managed block, `sporelet-node uninstall` removes it [newline added before it]\n"));
	free(out);
	free(round_trip(b, strlen(b), &o));
	out = round_trip(c, strlen(c), &o);
	assert_non_null(strstr(out, "# sporelet-node disabled:   disable_snapshot_annotations = true\n"));
	free(out);
}

static void t_crlf(void **state)
{
	(void)state;
	struct node_ctrd_opts o = opts();
	const char *in = "version = 2\r\n" CC "\r\n  disable_snapshot_annotations = true\r\n[x]\r\n  y = 1\r\n";

	free(round_trip(in, strlen(in), &o));
}

static void t_empty_and_comment_only(void **state)
{
	(void)state;
	struct node_ctrd_opts o = opts();
	const char *comments = "# managed by hand\n\n";
	const char *scalars = "root = \"/data/containerd\"\n[grpc]\n  address = \"/run/c.sock\"\n";
	char *out;

	out = round_trip("", 0, &o);
	assert_int_equal(strncmp(out, "# >>> sporelet-node", 19), 0);
	assert_non_null(strstr(out, "\nversion = 2\n# <<< sporelet-node\n"));
	assert_null(strstr(out, "[created the file]"));
	free(out);
	free(round_trip(comments, strlen(comments), &o));
	/* no version line but nothing named the version-1 way: version 2 added */
	out = round_trip(scalars, strlen(scalars), &o);
	assert_int_equal(count(out, "version = 2"), 1);
	free(out);
}

static void t_version_refused(void **state)
{
	(void)state;
	install_refused("version = 1\n[plugins.cri]\n  x = 1\n", SL_E_UNSUPPORTED, "line 1: a version 1 config");
	install_refused("[plugins.cri.containerd]\n  snapshotter = \"overlayfs\"\n", SL_E_UNSUPPORTED,
			"no `version = 2` line");
	install_refused("disabled_plugins = [\"cri\"]\n", SL_E_UNSUPPORTED, "version 1");
	install_refused("version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n", SL_E_UNSUPPORTED,
			"config version 3");
	install_refused("version = \"2\"\n", SL_E_UNSUPPORTED, "config version ?2?");
}

static void t_conflicts_refused(void **state)
{
	(void)state;
	install_refused("version = 2\n\n" RS "\n  runtime_type = \"x\"\n", SL_E_INVALID,
			"line 3: plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.spore is already configured");
	install_refused("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.spore.options]\n", SL_E_INVALID,
			"already configured outside");
	install_refused("version = 2\n[proxy_plugins]\n  spore = { type = \"snapshot\", address = \"/x\" }\n", SL_E_INVALID,
			"line 3: proxy_plugins.spore is already configured");
	/* dotted keys make tables TOML forbids a header for */
	install_refused("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  containerd.snapshotter = \"overlayfs\"\n",
			SL_E_INVALID, "line 3: plugins.\"io.containerd.grpc.v1.cri\".containerd is made by a dotted key");
	/* an inline table is closed */
	install_refused("version = 2\n" CC "\n  runtimes = { runc = { runtime_type = \"io.containerd.runc.v2\" } }\n",
			SL_E_INVALID, "line 3: plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes is set by a key/value");
	install_refused("version = 2\nplugins = 5\n", SL_E_INVALID, "line 2: plugins is set by a key/value");
	install_refused("version = 2\n" CC "\n" CC "\n", SL_E_INVALID, "is defined twice");
	install_refused("version = 2\n[[plugins.\"io.containerd.grpc.v1.cri\"]]\n", SL_E_INVALID, "array of tables");
	install_refused("version = 2\n" CC "\n  disable_snapshot_annotations = [\n true ]\n", SL_E_INVALID,
			"spans several lines");
}

static void t_bad_toml_refused(void **state)
{
	(void)state;
	install_refused("version = 2\nx = \"unterminated\n", SL_E_INVALID, "line 2: unterminated string");
	install_refused("version = 2\n[a\n", SL_E_INVALID, "line 2: table header not closed");
	install_refused("version = 2\nx = [1, 2\n", SL_E_INVALID, "line 2: unterminated array");
	install_refused("version = 2\nx = \"\"\"never closed\n\n", SL_E_INVALID, "line 2: unterminated multi-line string");
	install_refused("version = 2\nx = 1 y = 2\n", SL_E_INVALID, "line 2: unexpected 'y'");
	install_refused("version = 2\nx = { a = 1,\n b = 2 }\n", SL_E_INVALID, "inline table not closed on its line");
	install_refused("version = 2\nx\n", SL_E_INVALID, "line 2: expected '='");
	install_refused("version = 2\nx = \"\\q\"\n", SL_E_INVALID, "invalid escape");
	install_refused("version = 2\nx = \"\\uD800\"\n", SL_E_INVALID, "names no Unicode scalar value");
	install_refused("version = 2\nx = \"a\x01\"\n", SL_E_INVALID, "line 2: control character 0x01");
	install_refused("version = 2\r", SL_E_INVALID, "carriage return");
	install_refused("\xef\xbb\xbfversion = 2\n", SL_E_INVALID, "byte order mark");
	install_refused("version = 2\nx = \"\xc3\x28\"\n", SL_E_INVALID, "invalid UTF-8");
	install_refused("version = 2\nx = \"\xe0\x80\xaf\"\n", SL_E_INVALID, "overlong");
	install_refused("version = 2\nx = $\n", SL_E_INVALID, "expected a value");

	char deep[200] = "x = ";
	for (int i = 0; i < 40; i++)
		strcat(deep, "[");
	strcat(deep, "\n");
	install_refused(deep, SL_E_INVALID, "nested deeper than 32");
}

/* Brackets, '#', '=' and marker-like lines inside strings and arrays are
 * values, not structure. */
static void t_tricky_values(void **state)
{
	(void)state;
	struct node_ctrd_opts o = opts();
	const char *in =
		"version = 2\n"
		"a = \"\"\"\n"
		"[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.spore]\n"
		"# >>> sporelet-node\n"
		"\\\"\"\"\" # the end\n"
		"b = '''\n# <<< sporelet-node\n'''''\n"
		"c = [ # a comment with ] in it\n  \"]\", '[x]',\n  [1, 2], { k = \"v\" },\n]\n"
		"d = 'C:\\Users'\n"
		"e = 1979-05-27 07:32:00Z\n"
		"\"quoted key\".'lit' = +inf\n"
		"[ proxy_plugins . \"other\" ] # spaced header\n"
		"  type = \"snapshot\"\n"
		"[[array.of.tables]]\n  x = 1\n[[array.of.tables]]\n  x = 2\n"
		CC "\n  \"disable_snapshot_annotations\" = true\n";
	char *out = round_trip(in, strlen(in), &o);

	/* the quoted key is the same key */
	assert_non_null(strstr(out, "# sporelet-node disabled:   \"disable_snapshot_annotations\" = true\n"));
	assert_int_equal(count(out, "# sporelet-node disabled:"), 1);
	free(out);
}

static void t_uninstall_cases(void **state)
{
	(void)state;
	char *out = NULL;
	size_t len;
	bool remove, changed;
	sl_error_t err = NULL;

	/* nothing of ours: same bytes, unchanged */
	assert_int_equal(node_config_uninstall(user_v2, strlen(user_v2), &out, &len, &remove, &changed, &err), 0);
	assert_false(changed);
	assert_false(remove);
	assert_string_equal(out, user_v2);
	free(out);

	const char *bad[][2] = {
		{"version = 2\n# >>> sporelet-node: x\n[a]\n", "never ends"},
		{"version = 2\n# <<< sporelet-node\n", "ends that never began"},
		{"# >>> sporelet-node\n# >>> sporelet-node\n# <<< sporelet-node\n", "begins inside"},
		{"# >>> sporelet-node [newline added before it]\n# <<< sporelet-node\n", "none is there"},
		{"# sporelet-node disabled: # >>> sporelet-node\n", "holds no single-line key/value"},
		{"# sporelet-node disabled: x = \"\"\"\n", "holds no single-line key/value"},
		{"# sporelet-node disabled: [table]\n", "holds no single-line key/value"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		out = NULL;
		assert_int_equal(node_config_uninstall(bad[i][0], strlen(bad[i][0]), &out, &len, &remove, &changed, &err), -1);
		if (!strstr(sl_error_msg(err), bad[i][1]))
			fail_msg("\"%s\" not in \"%s\"", bad[i][1], sl_error_msg(err));
		sl_error_free(&err);
		assert_null(out);
	}
}

/* The administrator added tables to the file we created: uninstall keeps
 * the file and its `version = 2`, which their tables need. */
static void t_created_then_edited(void **state)
{
	(void)state;
	struct node_ctrd_opts o = opts();
	size_t len, l2;
	bool changed, remove;
	char *out = install_ok(NULL, 0, false, &o, &len, &changed);
	char *edited, *back = NULL, *again;
	sl_error_t err = NULL;

	assert_true(asprintf(&edited, "%s[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n", out) > 0);
	assert_int_equal(node_config_uninstall(edited, strlen(edited), &back, &l2, &remove, &changed, &err), 0);
	assert_false(remove);
	assert_string_equal(back, "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n");
	/* and install over the edited file keeps it usable */
	again = install_ok(edited, strlen(edited), true, &o, &l2, &changed);
	assert_non_null(strstr(again, "config_path = \"/etc/containerd/certs.d\""));
	assert_int_equal(count(again, "version = 2"), 1);
	free(out);
	free(edited);
	free(back);
	free(again);
}

static void bad_opts(struct node_ctrd_opts o, const char *needle)
{
	char *out = NULL;
	size_t len;
	bool changed;
	sl_error_t err = NULL;

	assert_int_equal(node_config_install(NULL, 0, false, &o, &out, &len, &changed, &err), -1);
	if (!strstr(sl_error_msg(err), needle))
		fail_msg("\"%s\" not in \"%s\"", needle, sl_error_msg(err));
	sl_error_free(&err);
}

static void t_bad_options(void **state)
{
	(void)state;
	struct node_ctrd_opts o;

	o = opts(); o.proxy_address = "run/x.sock"; bad_opts(o, "absolute path");
	o = opts(); o.proxy_address = "/run/\"x\".sock"; bad_opts(o, "without quotes");
	o = opts(); o.proxy_address = "/run/0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789.sock";
	bad_opts(o, "at most 107 bytes");
	o = opts(); o.runtime_name = "spore.v2"; bad_opts(o, "runtime name");
	o = opts(); o.proxy_name = ""; bad_opts(o, "proxy plugin name");
	o = opts(); o.snapshotter = "a b"; bad_opts(o, "snapshotter");
	o = opts(); o.shim_config = "shim.yaml"; bad_opts(o, "shim config");
	o = opts(); o.runtime_type = "io.containerd.spore.v2\n[x]"; bad_opts(o, "runtime type");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_no_file),
		cmocka_unit_test(t_v2_user_config),
		cmocka_unit_test(t_dsa_already_false),
		cmocka_unit_test(t_other_options),
		cmocka_unit_test(t_cri_snapshotter),
		cmocka_unit_test(t_no_trailing_newline),
		cmocka_unit_test(t_crlf),
		cmocka_unit_test(t_empty_and_comment_only),
		cmocka_unit_test(t_version_refused),
		cmocka_unit_test(t_conflicts_refused),
		cmocka_unit_test(t_bad_toml_refused),
		cmocka_unit_test(t_tricky_values),
		cmocka_unit_test(t_uninstall_cases),
		cmocka_unit_test(t_created_then_edited),
		cmocka_unit_test(t_bad_options),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
