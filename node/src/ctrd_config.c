/* containerd config.toml editing: sporelet-node's fenced, reversible edits of a version 2 config. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node_int.h"
#include "sporelet_node.h"
#include "toml_scan.h"

/* Our edits are whole lines: blocks fenced by these markers, and user lines
 * turned into comments with the DISABLED prefix. Uninstall needs nothing
 * but the file itself to undo them, so it keeps whatever the administrator
 * changed elsewhere in the meantime (a backup copy would throw that away). */
#define BEGIN_MARK "# >>> sporelet-node"
#define BEGIN_TEXT BEGIN_MARK ": managed block, `sporelet-node uninstall` removes it"
#define FLAG_CREATED "[created the file]"
#define FLAG_NEWLINE "[newline added before it]"
#define END_MARK "# <<< sporelet-node"
#define DISABLED "# sporelet-node disabled: "

#define CRI_PLUGIN "io.containerd.grpc.v1.cri"

void node_ctrd_opts_default(struct node_ctrd_opts *o)
{
	o->runtime_name = "spore";
	o->runtime_type = "io.containerd.spore.v2";
	o->snapshotter = "spore";
	o->proxy_name = "spore";
	o->proxy_address = "/run/sporelet/snapshotter.sock";
	o->shim_config = NULL;
	o->cri_snapshotter = NULL;
}

/* ---- growable output -------------------------------------------------- */

int nbuf_add(struct nbuf *b, const char *s, size_t n)
{
	if (b->failed)
		return -1;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;

		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);

		if (!p) {
			b->failed = true;
			return -1;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

int nbuf_addf(struct nbuf *b, const char *fmt, ...)
{
	char tmp[8192];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		b->failed = true;
		return -1;
	}
	return nbuf_add(b, tmp, (size_t)n);
}

void nbuf_free(struct nbuf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

/* ---- option checks ---------------------------------------------------- */

static bool bare_key(const char *s)
{
	if (!s || !*s || strlen(s) > 128)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
			return false;
	return true;
}

/* Values go into basic strings verbatim, so anything needing an escape is
 * refused rather than escaped: none of them has a reason to contain one. */
static bool plain_string(const char *s, size_t max)
{
	size_t n = 0;

	for (; *s; s++, n++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f || *s == '"' || *s == '\\')
			return false;
	return n <= max;
}

static int check_opts(const struct node_ctrd_opts *o, sl_error_t *err)
{
	if (!bare_key(o->runtime_name))
		return sl_error_set(err, SL_E_INVALID, "runtime name \"%s\": letters, digits, '-' and '_' only",
				    o->runtime_name ? o->runtime_name : "");
	if (!bare_key(o->proxy_name))
		return sl_error_set(err, SL_E_INVALID, "proxy plugin name \"%s\": letters, digits, '-' and '_' only",
				    o->proxy_name ? o->proxy_name : "");
	if (!o->runtime_type || !*o->runtime_type || !plain_string(o->runtime_type, 256))
		return sl_error_set(err, SL_E_INVALID, "runtime type: empty, too long or has quotes, backslashes or control characters");
	if (o->snapshotter && *o->snapshotter && !bare_key(o->snapshotter))
		return sl_error_set(err, SL_E_INVALID, "snapshotter \"%s\": letters, digits, '-' and '_' only", o->snapshotter);
	if (!o->proxy_address || o->proxy_address[0] != '/' || !plain_string(o->proxy_address, 107))
		return sl_error_set(err, SL_E_INVALID,
				    "snapshotter socket \"%s\": an absolute path of at most 107 bytes without quotes, backslashes or control characters",
				    o->proxy_address ? o->proxy_address : "");
	if (o->cri_snapshotter && *o->cri_snapshotter && !bare_key(o->cri_snapshotter))
		return sl_error_set(err, SL_E_INVALID, "CRI snapshotter \"%s\": letters, digits, '-' and '_' only",
				    o->cri_snapshotter);
	if (o->shim_config && *o->shim_config &&
	    (o->shim_config[0] != '/' || !plain_string(o->shim_config, 4096)))
		return sl_error_set(err, SL_E_INVALID,
				    "shim config \"%s\": an absolute path without quotes, backslashes or control characters",
				    o->shim_config);
	return 0;
}

/* ---- reverting our edits ---------------------------------------------- */

static bool line_starts(const char *in, const struct tscan_stmt *st, const char *prefix)
{
	size_t n = strlen(prefix);

	return st->kind == TS_BLANK && st->cstart == st->start && st->end - st->start >= n &&
	       memcmp(in + st->start, prefix, n) == 0;
}

static bool line_has(const char *in, const struct tscan_stmt *st, const char *flag)
{
	return memmem(in + st->start, st->end - st->start, flag, strlen(flag)) != NULL;
}

/* Where the root table's `version` is (-1: nowhere), and whether anything
 * in the file depends on it being 2 (plugin tables and plugin lists are
 * named differently in version 1). */
static void version_info(const struct tscan_doc *doc, int *version_stmt, bool *v1_signs)
{
	*version_stmt = -1;
	*v1_signs = false;
	for (size_t i = 0; i < doc->n; i++) {
		const struct tscan_stmt *st = &doc->stmts[i];
		const char *first;

		if (st->kind == TS_BLANK)
			continue;
		if (st->kind == TS_KEYVAL && st->table >= 0)
			first = doc->stmts[st->table].key[0];
		else
			first = st->key[0];
		if (strcmp(first, "plugins") == 0)
			*v1_signs = true;
		if (st->kind == TS_KEYVAL && st->table < 0 && st->nkey == 1) {
			if (strcmp(st->key[0], "version") == 0)
				*version_stmt = (int)i;
			if (strcmp(st->key[0], "disabled_plugins") == 0 ||
			    strcmp(st->key[0], "required_plugins") == 0)
				*v1_signs = true;
		}
	}
}

int node_config_uninstall(const char *in, size_t len, char **out, size_t *outlen,
			  bool *remove, bool *changed, sl_error_t *err)
{
	struct tscan_doc doc;
	struct nbuf b = {0};
	bool inblock = false, created = false, ours = false, our_version = false;
	size_t block_line = 0;

	*out = NULL;
	*outlen = 0;
	*remove = false;
	*changed = false;
	if (len > NODE_CONFIG_MAX)
		return sl_error_set(err, SL_E_LIMIT, "larger than %u bytes", NODE_CONFIG_MAX);
	if (tscan_parse(in, len, &doc, err) < 0)
		return -1;
	for (size_t i = 0; i < doc.n; i++) {
		const struct tscan_stmt *st = &doc.stmts[i];
		size_t line = st->line;

		if (line_starts(in, st, BEGIN_MARK)) {
			if (inblock) {
				tscan_free(&doc);
				nbuf_free(&b);
				return sl_error_set(err, SL_E_INVALID,
						    "line %zu: a sporelet-node block begins inside the one begun on line %zu",
						    line, block_line);
			}
			inblock = ours = true;
			block_line = line;
			if (line_has(in, st, FLAG_CREATED))
				created = true;
			if (line_has(in, st, FLAG_NEWLINE)) {
				/* We added a newline to end the line before the block. */
				if (b.len == 0 || b.p[b.len - 1] != '\n') {
					tscan_free(&doc);
					nbuf_free(&b);
					return sl_error_set(err, SL_E_INVALID,
							    "line %zu: the sporelet-node block says a newline was added before it, but none is there",
							    line);
				}
				b.p[--b.len] = '\0';
			}
			continue;
		}
		if (line_starts(in, st, END_MARK)) {
			if (!inblock) {
				tscan_free(&doc);
				nbuf_free(&b);
				return sl_error_set(err, SL_E_INVALID,
						    "line %zu: a sporelet-node block ends that never began", line);
			}
			inblock = false;
			continue;
		}
		if (inblock) {
			if (st->kind == TS_KEYVAL && st->table < 0 && st->nkey == 1 &&
			    strcmp(st->key[0], "version") == 0)
				our_version = true;
			continue;
		}
		if (line_starts(in, st, DISABLED)) {
			size_t n = strlen(DISABLED);
			struct tscan_doc one;
			sl_error_t e = NULL;
			bool keyval;

			/* We only ever disable one key/value line; anything else
			 * behind the prefix (a marker, a header, the start of a
			 * multi-line value) was not written by us and would
			 * change what the restored file means. */
			if (tscan_parse(in + st->start + n, st->end - st->start - n, &one, &e) < 0) {
				sl_error_free(&e);
				keyval = false;
			} else {
				keyval = one.n == 1 && one.stmts[0].kind == TS_KEYVAL;
				tscan_free(&one);
			}
			if (!keyval) {
				tscan_free(&doc);
				nbuf_free(&b);
				return sl_error_set(err, SL_E_INVALID,
						    "line %zu: a \"%s\" line that holds no single-line key/value: not written by sporelet-node",
						    line, DISABLED);
			}
			ours = true;
			nbuf_add(&b, in + st->start + n, st->end - st->start - n);
			continue;
		}
		nbuf_add(&b, in + st->start, st->end - st->start);
	}
	tscan_free(&doc);
	if (inblock) {
		nbuf_free(&b);
		return sl_error_set(err, SL_E_INVALID, "line %zu: the sporelet-node block begun here never ends (no \"%s\" line)",
				    block_line, END_MARK);
	}
	if (nbuf_add(&b, "", 0) < 0) {
		nbuf_free(&b);
		return sl_error_set(err, SL_E_NOMEM, "out of memory");
	}
	if (our_version && b.len > 0) {
		/* Tables the administrator added to a file whose `version = 2`
		 * was ours were written for version 2: keep the line for them
		 * (the only case in which uninstall does not give back the old
		 * bytes, since the old state, no file or no version, would now
		 * change what their tables mean). */
		int vs;
		bool v1;

		if (tscan_parse(b.p, b.len, &doc, err) < 0) {
			nbuf_free(&b);
			return sl_error_wrap(err, "after removing sporelet-node's blocks");
		}
		version_info(&doc, &vs, &v1);
		tscan_free(&doc);
		if (vs < 0 && v1) {
			struct nbuf v = {0};

			nbuf_add(&v, "version = 2\n", 12);
			nbuf_add(&v, b.p, b.len);
			nbuf_free(&b);
			if (v.failed) {
				nbuf_free(&v);
				return sl_error_set(err, SL_E_NOMEM, "out of memory");
			}
			b = v;
		}
	}
	*out = b.p;
	*outlen = b.len;
	*changed = ours;
	*remove = created && b.len == 0;
	return 0;
}

/* ---- applying our edits ----------------------------------------------- */

/* A key path under construction, up to 8 parts. */
struct kpath {
	const char *p[8];
	size_t n;
};

static struct kpath kp(size_t n, ...)
{
	struct kpath k = {.n = n};
	va_list ap;

	va_start(ap, n);
	for (size_t i = 0; i < n; i++)
		k.p[i] = va_arg(ap, const char *);
	va_end(ap);
	return k;
}

static struct kpath kp_add(struct kpath k, const char *part)
{
	k.p[k.n++] = part;
	return k;
}

/* The full path of a key/value statement: its table's path plus its key. */
static size_t full_path(const struct tscan_doc *doc, const struct tscan_stmt *st, const char **out, size_t cap)
{
	size_t n = 0;

	if (st->table >= 0) {
		const struct tscan_stmt *t = &doc->stmts[st->table];

		for (size_t i = 0; i < t->nkey && n < cap; i++)
			out[n++] = t->key[i];
	}
	for (size_t i = 0; i < st->nkey && n < cap; i++)
		out[n++] = st->key[i];
	return n;
}

static bool path_prefix(const char *const *a, size_t na, const char *const *b, size_t nb)
{
	if (na > nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (strcmp(a[i], b[i]) != 0)
			return false;
	return true;
}

static void path_str(const char *const *p, size_t n, char *out, size_t cap)
{
	size_t o = 0;

	out[0] = '\0';
	for (size_t i = 0; i < n && o + 4 < cap; i++) {
		char show[SL_SHOW_BUF];
		bool bare = bare_key(p[i]);

		sl_show(p[i], strlen(p[i]), show);
		o += (size_t)snprintf(out + o, cap - o, "%s%s%s%s", i ? "." : "", bare ? "" : "\"", show,
				      bare ? "" : "\"");
		if (o >= cap)
			o = cap - 1;
	}
}

struct plan {
	bool need_version;      /* add `version = 2` at the top */
	int cc_header;          /* index of the user's [..cri.containerd] header, -1 if none */
	int dsa_stmt;           /* the user's disable_snapshot_annotations in it, -1 if none */
	bool dsa_ok;            /* ... and it is already false */
	bool want_snap;         /* set the CRI plugin's global snapshotter (--cri-snapshotter) */
	int snap_stmt;          /* the user's snapshotter in [..cri.containerd], -1 if none */
	bool snap_ok;           /* ... and it is already the one asked for */
	bool add_runc;          /* no runtime of the user: ours would drop containerd's built-in runc */
};

/* Table paths our block writes as [headers], for the conflict checks. */
struct targets {
	struct kpath t[5];
	size_t n;
};

static int refuse_path(sl_error_t *err, size_t line, const char *const *p, size_t n, const char *why)
{
	char s[512];

	path_str(p, n, s, sizeof(s));
	return sl_error_set(err, SL_E_INVALID, "line %zu: %s %s", line, s, why);
}

static int analyse(const char *in, const struct tscan_doc *doc, const struct node_ctrd_opts *o,
		   struct plan *pl, sl_error_t *err)
{
	struct kpath cri = kp(2, "plugins", CRI_PLUGIN);
	struct kpath cc = kp_add(cri, "containerd");
	struct kpath rt = kp_add(cc, "runtimes");
	struct kpath rs = kp_add(rt, o->runtime_name);
	struct kpath ps = kp(2, "proxy_plugins", o->proxy_name);
	const char *fp[TSCAN_MAX_KEY_PARTS * 2];
	int version_stmt;
	bool v1_signs, user_runtimes = false;

	pl->need_version = false;
	pl->cc_header = pl->dsa_stmt = -1;
	pl->dsa_ok = false;
	pl->want_snap = o->cri_snapshotter && *o->cri_snapshotter;
	pl->snap_stmt = -1;
	pl->snap_ok = false;
	pl->add_runc = false;
	version_info(doc, &version_stmt, &v1_signs);

	for (size_t i = 0; i < doc->n; i++) {
		const struct tscan_stmt *st = &doc->stmts[i];
		size_t n;

		if (st->kind == TS_BLANK)
			continue;
		if (st->kind == TS_KEYVAL) {
			n = full_path(doc, st, fp, sizeof(fp) / sizeof(fp[0]));
		} else {
			n = st->nkey;
			for (size_t k = 0; k < n; k++)
				fp[k] = st->key[k];
		}
		if (path_prefix(rs.p, rs.n, fp, n))
			return refuse_path(err, st->line, fp, n,
					   "is already configured outside sporelet-node's block: remove that runtime (or run with another --runtime-name)");
		if (path_prefix(ps.p, ps.n, fp, n))
			return refuse_path(err, st->line, fp, n,
					   "is already configured outside sporelet-node's block: remove that proxy plugin (or run with another --proxy-name)");
		if (path_prefix(rt.p, rt.n, fp, n) && n > rt.n)
			user_runtimes = true;
		if (st->kind == TS_TABLE && tscan_key_eq(st->key, st->nkey, cc.p, cc.n)) {
			if (pl->cc_header >= 0)
				return refuse_path(err, st->line, fp, n, "is defined twice (also on an earlier line): containerd refuses such a file too");
			pl->cc_header = (int)i;
		}
		if (st->kind == TS_KEYVAL && st->table >= 0 && st->table == pl->cc_header && st->nkey == 1 &&
		    strcmp(st->key[0], "disable_snapshot_annotations") == 0) {
			pl->dsa_stmt = (int)i;
			pl->dsa_ok = st->vtype == TV_BOOL && st->vend - st->vstart == 5 &&
				     memcmp(in + st->vstart, "false", 5) == 0;
		}
		if (pl->want_snap && st->kind == TS_KEYVAL && st->table >= 0 && st->table == pl->cc_header &&
		    st->nkey == 1 && strcmp(st->key[0], "snapshotter") == 0) {
			size_t sn = strlen(o->cri_snapshotter);

			/* Only the plain "name" form counts as already right: any
			 * other spelling is disabled and written anew. */
			pl->snap_stmt = (int)i;
			pl->snap_ok = st->vtype == TV_STRING && st->vend - st->vstart == sn + 2 &&
				      in[st->vstart] == '"' && memcmp(in + st->vstart + 1, o->cri_snapshotter, sn) == 0 &&
				      in[st->vstart + sn + 1] == '"';
		}
	}

	if (version_stmt >= 0) {
		const struct tscan_stmt *st = &doc->stmts[version_stmt];
		size_t vn = st->vend - st->vstart;
		const char *v = in + st->vstart;

		if (vn == 1 && v[0] == '1')
			return sl_error_set(err, SL_E_UNSUPPORTED,
					    "line %zu: a version 1 config (plugins named like [plugins.cri]); sporelet-node edits version 2 configs: convert it first (containerd docs/PLUGINS.md, \"Version header\")",
					    st->line);
		if (!(vn == 1 && v[0] == '2')) {
			char show[SL_SHOW_BUF];

			sl_show(v, vn, show);
			return sl_error_set(err, SL_E_UNSUPPORTED,
					    "line %zu: config version %s: sporelet-node edits version 2 configs (containerd 1.5 to 1.7); containerd 2.x configs (version 3) are not supported yet",
					    st->line, show);
		}
	} else if (v1_signs) {
		return sl_error_set(err, SL_E_UNSUPPORTED,
				    "no `version = 2` line, so containerd reads this file as a version 1 config (plugins named like [plugins.cri]); sporelet-node edits version 2 configs: convert it first (containerd docs/PLUGINS.md, \"Version header\")");
	} else {
		pl->need_version = true;
	}
	pl->add_runc = !user_runtimes;

	/* The tables our block declares with [headers] must not be defined by
	 * the user's key/values: through a dotted key (TOML forbids a header
	 * for a table made by dotted keys) or an inline table (closed by
	 * definition). */
	struct targets tg = {.n = 0};

	tg.t[tg.n++] = rs;
	if (o->shim_config && *o->shim_config)
		tg.t[tg.n++] = kp_add(rs, "options");
	tg.t[tg.n++] = ps;
	if (pl->add_runc)
		tg.t[tg.n++] = kp_add(rt, "runc");
	if (pl->cc_header < 0)
		tg.t[tg.n++] = cc;
	for (size_t i = 0; i < doc->n; i++) {
		const struct tscan_stmt *st = &doc->stmts[i];

		if (st->kind == TS_ARRAY_TABLE) {
			for (size_t t = 0; t < tg.n; t++)
				if (path_prefix((const char *const *)st->key, st->nkey, tg.t[t].p, tg.t[t].n) ||
				    tscan_key_has_prefix(st->key, st->nkey, cc.p, cc.n))
					return refuse_path(err, st->line, (const char *const *)st->key, st->nkey,
							   "is an array of tables where containerd has a table: sporelet-node cannot edit this file");
			continue;
		}
		if (st->kind != TS_KEYVAL)
			continue;
		size_t n = full_path(doc, st, fp, sizeof(fp) / sizeof(fp[0]));
		size_t base = st->table >= 0 ? doc->stmts[st->table].nkey : 0;

		for (size_t t = 0; t < tg.n; t++) {
			/* the key itself names a target or a table above one */
			if (path_prefix(fp, n, tg.t[t].p, tg.t[t].n))
				return refuse_path(err, st->line, fp, n,
						   "is set by a key/value (or inline table); sporelet-node writes a [table] there and cannot edit this file: write it as [table] headers");
			/* a dotted key's intermediate tables */
			for (size_t k = base + 1; k < n; k++)
				if (path_prefix(fp, k, tg.t[t].p, tg.t[t].n))
					return refuse_path(err, st->line, fp, k,
							   "is made by a dotted key; sporelet-node writes [table] headers under it and cannot edit this file: write it as [table] headers");
		}
	}
	if (pl->dsa_stmt >= 0 && !pl->dsa_ok) {
		const struct tscan_stmt *st = &doc->stmts[pl->dsa_stmt];

		const char *nl = memchr(in + st->start, '\n', st->end - st->start);

		if (nl && nl != in + st->end - 1)
			return sl_error_set(err, SL_E_INVALID,
					    "line %zu: disable_snapshot_annotations spans several lines; sporelet-node replaces single lines only",
					    st->line);
	}
	if (pl->snap_stmt >= 0 && !pl->snap_ok) {
		const struct tscan_stmt *st = &doc->stmts[pl->snap_stmt];
		const char *nl = memchr(in + st->start, '\n', st->end - st->start);

		if (nl && nl != in + st->end - 1)
			return sl_error_set(err, SL_E_INVALID,
					    "line %zu: snapshotter spans several lines; sporelet-node replaces single lines only",
					    st->line);
	}
	return 0;
}

static void add_block(struct nbuf *b, const char *flags, const char *body)
{
	/* A block always starts on a line of its own. */
	bool nl = b->len > 0 && b->p[b->len - 1] != '\n';

	if (nl)
		nbuf_add(b, "\n", 1);
	nbuf_addf(b, "%s%s%s%s%s\n%s%s\n", BEGIN_TEXT, flags && *flags ? " " : "", flags ? flags : "",
		  nl ? " " : "", nl ? FLAG_NEWLINE : "", body, END_MARK);
}

static void tail_body(struct nbuf *b, const struct node_ctrd_opts *o, const struct plan *pl, bool version)
{
	const char *cc = "plugins.\"" CRI_PLUGIN "\".containerd";

	if (version)
		nbuf_add(b, "version = 2\n", 12);
	if (pl->cc_header < 0) {
		nbuf_addf(b, "[%s]\n  disable_snapshot_annotations = false\n", cc);
		if (pl->want_snap)
			nbuf_addf(b, "  snapshotter = \"%s\"\n", o->cri_snapshotter);
	}
	if (pl->add_runc)
		/* containerd's built-in default runtime, which a config naming
		 * any runtime replaces (measured with containerd 1.6.20). */
		nbuf_addf(b, "[%s.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n", cc);
	nbuf_addf(b, "[%s.runtimes.%s]\n  runtime_type = \"%s\"\n", cc, o->runtime_name, o->runtime_type);
	if (o->snapshotter && *o->snapshotter)
		nbuf_addf(b, "  snapshotter = \"%s\"\n", o->snapshotter);
	nbuf_addf(b, "  pod_annotations = [\"sporelet.ai/*\"]\n  container_annotations = [\"sporelet.ai/*\"]\n");
	if (o->shim_config && *o->shim_config)
		nbuf_addf(b, "[%s.runtimes.%s.options]\n  ConfigPath = \"%s\"\n", cc, o->runtime_name, o->shim_config);
	nbuf_addf(b, "[proxy_plugins.%s]\n  type = \"snapshot\"\n  address = \"%s\"\n", o->proxy_name, o->proxy_address);
}

static int apply(const char *in, size_t len, bool exists, const struct node_ctrd_opts *o,
		 struct nbuf *out, sl_error_t *err)
{
	struct tscan_doc doc = {0};
	struct plan pl = {.cc_header = -1, .dsa_stmt = -1, .snap_stmt = -1};
	struct nbuf body = {0};

	if (!exists) {
		pl.add_runc = true;
		pl.want_snap = o->cri_snapshotter && *o->cri_snapshotter;
		tail_body(&body, o, &pl, true);
		if (!body.failed)
			add_block(out, FLAG_CREATED, body.p);
		nbuf_free(&body);
		return 0;
	}
	if (tscan_parse(in, len, &doc, err) < 0)
		return -1;
	if (analyse(in, &doc, o, &pl, err) < 0) {
		tscan_free(&doc);
		return -1;
	}
	if (pl.need_version)
		add_block(out, NULL, "version = 2\n");
	for (size_t i = 0; i < doc.n; i++) {
		const struct tscan_stmt *st = &doc.stmts[i];

		if (((int)i == pl.dsa_stmt && !pl.dsa_ok) || ((int)i == pl.snap_stmt && !pl.snap_ok))
			nbuf_add(out, DISABLED, strlen(DISABLED));
		nbuf_add(out, in + st->start, st->end - st->start);
		if ((int)i == pl.cc_header && (!pl.dsa_ok || (pl.want_snap && !pl.snap_ok))) {
			/* TOML forbids a second [..cri.containerd]: our keys of
			 * that table go right under the user's header. */
			char keys[512];

			snprintf(keys, sizeof(keys), "%s%s%s%s", !pl.dsa_ok ? "  disable_snapshot_annotations = false\n" : "",
				 pl.want_snap && !pl.snap_ok ? "  snapshotter = \"" : "",
				 pl.want_snap && !pl.snap_ok ? o->cri_snapshotter : "",
				 pl.want_snap && !pl.snap_ok ? "\"\n" : "");
			add_block(out, NULL, keys);
		}
	}
	tail_body(&body, o, &pl, false);
	if (!body.failed)
		add_block(out, NULL, body.p);
	nbuf_free(&body);
	tscan_free(&doc);
	return 0;
}

int node_config_install(const char *in, size_t len, bool exists,
			const struct node_ctrd_opts *o, char **out, size_t *outlen,
			bool *changed, sl_error_t *err)
{
	_cleanup_free_ char *orig = NULL;
	size_t origlen = 0;
	bool remove = false, had = false;
	struct nbuf b = {0};

	*out = NULL;
	*outlen = 0;
	*changed = false;
	if (check_opts(o, err) < 0)
		return -1;
	if (exists && len > NODE_CONFIG_MAX)
		return sl_error_set(err, SL_E_LIMIT, "larger than %u bytes", NODE_CONFIG_MAX);
	if (exists) {
		/* Start from the user's own bytes, so a second run (or a run
		 * with other options) replaces our edit instead of stacking. */
		if (node_config_uninstall(in, len, &orig, &origlen, &remove, &had, err) < 0)
			return -1;
	}
	if (apply(orig, origlen, exists && !remove, o, &b, err) < 0) {
		nbuf_free(&b);
		return -1;
	}
	if (b.failed || nbuf_add(&b, "", 0) < 0) {
		nbuf_free(&b);
		return sl_error_set(err, SL_E_NOMEM, "out of memory (or an option too long)");
	}
	if (b.len > NODE_CONFIG_MAX) {
		nbuf_free(&b);
		return sl_error_set(err, SL_E_LIMIT, "the edited file would be larger than %u bytes", NODE_CONFIG_MAX);
	}
	*changed = !exists || b.len != len || (len > 0 && memcmp(b.p, in, len) != 0);
	*out = b.p;
	*outlen = b.len;
	return 0;
}
