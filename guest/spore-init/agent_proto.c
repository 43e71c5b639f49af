/* Strict, allocation-bounded codec of agent frames; pure functions shared by the agent and the host client. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "agent_proto.h"

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

const char *agent_msg_type_name(uint8_t type)
{
	switch (type) {
	case AGENT_MSG_HELLO: return "HELLO";
	case AGENT_MSG_READY: return "READY";
	case AGENT_MSG_ERROR: return "ERROR";
	case AGENT_MSG_EXEC: return "EXEC";
	case AGENT_MSG_STDIN: return "STDIN";
	case AGENT_MSG_STDIN_EOF: return "STDIN_EOF";
	case AGENT_MSG_STDOUT: return "STDOUT";
	case AGENT_MSG_STDERR: return "STDERR";
	case AGENT_MSG_SIGNAL: return "SIGNAL";
	case AGENT_MSG_EXIT: return "EXIT";
	case AGENT_MSG_STARTED: return "STARTED";
	case AGENT_MSG_GENERATION: return "GENERATION";
	case AGENT_MSG_SHUTDOWN: return "SHUTDOWN";
	default: return NULL;
	}
}

int agent_frame_hdr_decode(const uint8_t hdr[AGENT_HDR_SIZE], struct agent_frame_hdr *h, sl_error_t *err)
{
	uint32_t len = get_u32(hdr);
	if (!agent_msg_type_name(hdr[4]))
		return sl_error_set(err, SL_E_INVALID, "agent frame: unknown type 0x%02x", hdr[4]);
	if (hdr[5] || hdr[6] || hdr[7])
		return sl_error_set(err, SL_E_INVALID, "agent frame: nonzero flags or reserved bytes");
	/* Checked on the header alone so an oversize frame is refused before
	 * any of its payload is read or buffered. */
	if (len > AGENT_MAX_PAYLOAD)
		return sl_error_set(err, SL_E_LIMIT, "agent frame: payload of %u bytes exceeds %u", len,
				    AGENT_MAX_PAYLOAD);
	h->len = len;
	h->type = hdr[4];
	return 0;
}

int agent_frame_decode(const uint8_t *buf, size_t len, size_t *consumed, struct agent_msg *m, sl_error_t *err)
{
	struct agent_frame_hdr h = {0};
	if (len < AGENT_HDR_SIZE)
		return 0;
	if (agent_frame_hdr_decode(buf, &h, err) < 0)
		return -1;
	if (len - AGENT_HDR_SIZE < h.len)
		return 0;
	if (agent_msg_decode(h.type, buf + AGENT_HDR_SIZE, h.len, m, err) < 0)
		return -1;
	*consumed = AGENT_HDR_SIZE + (size_t)h.len;
	return 1;
}

/* ---- decoding ---- */

struct rd {
	const uint8_t *p, *end;
	uint8_t *mem, *mem_end; /* bump arena for copies */
	const char *what;       /* failure reason, static string */
};

static bool rd_u32(struct rd *r, uint32_t *v)
{
	if (r->end - r->p < 4) {
		r->what = "truncated";
		return false;
	}
	*v = get_u32(r->p);
	r->p += 4;
	return true;
}

static void *arena(struct rd *r, size_t n, size_t align)
{
	uintptr_t a = ((uintptr_t)r->mem + (align - 1)) & ~(uintptr_t)(align - 1);
	if (a > (uintptr_t)r->mem_end || (uintptr_t)r->mem_end - a < n) {
		r->what = "internal arena bound"; /* unreachable by construction */
		return NULL;
	}
	r->mem = (uint8_t *)(a + n);
	return (void *)a;
}

/* bytes: u32 length then that many bytes; copied into the arena. */
static bool rd_bytes(struct rd *r, uint8_t **out, uint32_t *out_len, uint32_t max)
{
	uint32_t n;
	if (!rd_u32(r, &n))
		return false;
	if (n > max) {
		r->what = "field too long";
		return false;
	}
	if ((size_t)(r->end - r->p) < n) {
		r->what = "truncated";
		return false;
	}
	uint8_t *d = arena(r, (size_t)n + 1, 1);
	if (!d)
		return false;
	if (n)
		memcpy(d, r->p, n);
	d[n] = 0;
	r->p += n;
	*out = d;
	*out_len = n;
	return true;
}

/* string: bytes without NUL, handed out NUL-terminated. */
static bool rd_str(struct rd *r, char **out, uint32_t max)
{
	uint8_t *d;
	uint32_t n;
	if (!rd_bytes(r, &d, &n, max))
		return false;
	if (memchr(d, 0, n)) {
		r->what = "NUL inside a string";
		return false;
	}
	*out = (char *)d;
	return true;
}

static bool env_entry_ok(const char *s)
{
	const char *eq = strchr(s, '=');
	return eq && eq != s;
}

/* string list: u32 count then strings. */
static bool rd_strlist(struct rd *r, char ***out, uint32_t *count, uint32_t min, bool env)
{
	uint32_t n;
	if (!rd_u32(r, &n))
		return false;
	if (n < min || n > AGENT_MAX_STRLIST) {
		r->what = "bad list length";
		return false;
	}
	if ((size_t)(r->end - r->p) / 4 < n) {
		r->what = "truncated";
		return false;
	}
	char **v = arena(r, ((size_t)n + 1) * sizeof(char *), _Alignof(char *));
	if (!v)
		return false;
	for (uint32_t i = 0; i < n; i++) {
		if (!rd_str(r, &v[i], AGENT_MAX_PAYLOAD))
			return false;
		if (env && !env_entry_ok(v[i])) {
			r->what = "env entry is not KEY=VALUE";
			return false;
		}
	}
	v[n] = NULL;
	*out = v;
	*count = n;
	return true;
}

/* The semantic checks shared by decoder and encoder, so both accept exactly
 * the same set of messages. */
static const char *msg_check(const struct agent_msg *m)
{
	switch (m->type) {
	case AGENT_MSG_HELLO:
	case AGENT_MSG_SHUTDOWN:
		return NULL;
	case AGENT_MSG_READY:
		return m->u.ready.reason > AGENT_READY_GENERATION ? "unknown READY reason" : NULL;
	case AGENT_MSG_ERROR:
		if (m->u.error.code == 0)
			return "ERROR code 0";
		if (m->u.error.flags & ~AGENT_ERROR_FATAL)
			return "unknown ERROR flags";
		return NULL;
	case AGENT_MSG_EXEC: {
		const struct agent_exec *e = &m->u.exec;
		if (e->flags & ~AGENT_EXEC_STDIN)
			return "unknown EXEC flags";
		if (e->cwd[0] && e->cwd[0] != '/')
			return "EXEC cwd is not absolute";
		if (!e->argv[0][0])
			return "EXEC argv[0] is empty";
		return NULL;
	}
	case AGENT_MSG_STDIN:
	case AGENT_MSG_STDOUT:
	case AGENT_MSG_STDERR:
		return m->u.data.len == 0 ? "empty data frame" : NULL;
	case AGENT_MSG_STDIN_EOF:
	case AGENT_MSG_STARTED:
		return NULL;
	case AGENT_MSG_SIGNAL:
		return m->u.signal.signo == 0 || m->u.signal.signo > AGENT_MAX_SIGNO ? "bad signal number" : NULL;
	case AGENT_MSG_EXIT:
		if (m->u.exit.kind == AGENT_EXIT_CODE)
			return m->u.exit.value > 255 ? "exit code above 255" : NULL;
		if (m->u.exit.kind == AGENT_EXIT_SIGNAL)
			return m->u.exit.value == 0 || m->u.exit.value > AGENT_MAX_SIGNO ? "bad signal number" : NULL;
		return "unknown EXIT kind";
	case AGENT_MSG_GENERATION:
		return m->u.gen.nsec >= 1000000000u ? "nanoseconds out of range" : NULL;
	default:
		return "unknown type";
	}
}

int agent_msg_decode(uint8_t type, const uint8_t *payload, size_t len, struct agent_msg *m, sl_error_t *err)
{
	const char *name = agent_msg_type_name(type);
	memset(m, 0, sizeof(*m));
	if (!name)
		return sl_error_set(err, SL_E_INVALID, "agent frame: unknown type 0x%02x", type);
	if (len > AGENT_MAX_PAYLOAD)
		return sl_error_set(err, SL_E_LIMIT, "agent %s: payload too large", name);
	/* Every copied byte costs at most three arena bytes (a string of n
	 * bytes takes 4+n on the wire and n+1 plus an 8-byte slot here), plus
	 * two list terminators and alignment. */
	size_t cap = len * 3 + 64;
	uint8_t *mem = malloc(cap);
	if (!mem)
		return sl_error_set(err, SL_E_NOMEM, "agent %s: out of memory", name);
	struct rd r = {.p = payload, .end = payload + len, .mem = mem, .mem_end = mem + cap};
	m->type = type;
	bool ok = true;
	switch (type) {
	case AGENT_MSG_HELLO:
		ok = rd_u32(&r, &m->u.hello.version);
		break;
	case AGENT_MSG_READY:
		ok = rd_u32(&r, &m->u.ready.reason);
		break;
	case AGENT_MSG_ERROR:
		ok = rd_u32(&r, &m->u.error.code) && rd_u32(&r, &m->u.error.id) && rd_u32(&r, &m->u.error.flags) &&
		     rd_str(&r, &m->u.error.message, AGENT_MAX_ERROR_MSG);
		break;
	case AGENT_MSG_EXEC: {
		struct agent_exec *e = &m->u.exec;
		ok = rd_u32(&r, &e->id) && rd_u32(&r, &e->flags) && rd_u32(&r, &e->uid) && rd_u32(&r, &e->gid) &&
		     rd_str(&r, &e->cwd, AGENT_MAX_PATH) && rd_strlist(&r, &e->argv, &e->argc, 1, false) &&
		     rd_strlist(&r, &e->env, &e->envc, 0, true);
		break;
	}
	case AGENT_MSG_STDIN:
	case AGENT_MSG_STDOUT:
	case AGENT_MSG_STDERR:
		ok = rd_u32(&r, &m->u.data.id) && rd_bytes(&r, &m->u.data.data, &m->u.data.len, AGENT_MAX_PAYLOAD);
		break;
	case AGENT_MSG_STDIN_EOF:
		ok = rd_u32(&r, &m->u.eof.id);
		break;
	case AGENT_MSG_SIGNAL:
		ok = rd_u32(&r, &m->u.signal.id) && rd_u32(&r, &m->u.signal.signo);
		break;
	case AGENT_MSG_EXIT:
		ok = rd_u32(&r, &m->u.exit.id) && rd_u32(&r, &m->u.exit.kind) && rd_u32(&r, &m->u.exit.value);
		break;
	case AGENT_MSG_STARTED:
		ok = rd_u32(&r, &m->u.started.id) && rd_u32(&r, &m->u.started.pid);
		break;
	case AGENT_MSG_GENERATION: {
		struct agent_generation *g = &m->u.gen;
		uint32_t lo = 0, hi = 0;
		if (len < AGENT_ENTROPY_SIZE) {
			ok = false;
			r.what = "truncated";
			break;
		}
		memcpy(g->entropy, r.p, AGENT_ENTROPY_SIZE);
		r.p += AGENT_ENTROPY_SIZE;
		ok = rd_u32(&r, &lo) && rd_u32(&r, &hi) && rd_u32(&r, &g->nsec) &&
		     rd_str(&r, &g->hostname, AGENT_MAX_HOSTNAME) && rd_strlist(&r, &g->env, &g->envc, 0, true);
		g->sec = (uint64_t)hi << 32 | lo;
		break;
	}
	case AGENT_MSG_SHUTDOWN:
		break;
	}
	if (ok && r.p != r.end) {
		ok = false;
		r.what = "trailing bytes";
	}
	m->mem_ = mem;
	const char *bad = ok ? msg_check(m) : r.what;
	if (bad) {
		agent_msg_free(m);
		return sl_error_set(err, SL_E_INVALID, "agent %s: %s", name, bad);
	}
	return 0;
}

void agent_msg_free(struct agent_msg *m)
{
	free(m->mem_);
	memset(m, 0, sizeof(*m));
}

/* ---- encoding ---- */

struct wr {
	uint8_t *p;   /* NULL while sizing */
	size_t n;
	bool toolong; /* a field exceeded its wire limit */
};

static void wr_raw(struct wr *w, const void *d, size_t n)
{
	if (w->p && n)
		memcpy(w->p + w->n, d, n);
	w->n += n;
}

static void wr_u32(struct wr *w, uint32_t v)
{
	uint8_t b[4];
	put_u32(b, v);
	wr_raw(w, b, 4);
}

static void wr_bytes(struct wr *w, const void *d, size_t n, size_t max)
{
	if (n > max) {
		w->toolong = true;
		n = 0;
	}
	wr_u32(w, (uint32_t)n);
	wr_raw(w, d, n);
}

static void wr_str(struct wr *w, const char *s, size_t max)
{
	wr_bytes(w, s ? s : "", s ? strlen(s) : 0, max);
}

static bool wr_strlist(struct wr *w, char *const *v, uint32_t n, uint32_t min, bool env)
{
	if (n < min || n > AGENT_MAX_STRLIST || (n && !v))
		return false;
	wr_u32(w, n);
	for (uint32_t i = 0; i < n; i++) {
		if (!v[i] || (env && !env_entry_ok(v[i])))
			return false;
		wr_str(w, v[i], AGENT_MAX_PAYLOAD);
	}
	return true;
}

static const char *wr_payload(struct wr *w, const struct agent_msg *m)
{
	switch (m->type) {
	case AGENT_MSG_HELLO:
		wr_u32(w, m->u.hello.version);
		break;
	case AGENT_MSG_READY:
		wr_u32(w, m->u.ready.reason);
		break;
	case AGENT_MSG_ERROR:
		wr_u32(w, m->u.error.code);
		wr_u32(w, m->u.error.id);
		wr_u32(w, m->u.error.flags);
		/* Messages are informative: cut rather than refuse. */
		wr_bytes(w, m->u.error.message ? m->u.error.message : "",
			 m->u.error.message ? strnlen(m->u.error.message, AGENT_MAX_ERROR_MSG) : 0,
			 AGENT_MAX_ERROR_MSG);
		break;
	case AGENT_MSG_EXEC: {
		const struct agent_exec *e = &m->u.exec;
		wr_u32(w, e->id);
		wr_u32(w, e->flags);
		wr_u32(w, e->uid);
		wr_u32(w, e->gid);
		wr_str(w, e->cwd, AGENT_MAX_PATH);
		if (!wr_strlist(w, e->argv, e->argc, 1, false) || !wr_strlist(w, e->env, e->envc, 0, true))
			return "bad argv or env list";
		break;
	}
	case AGENT_MSG_STDIN:
	case AGENT_MSG_STDOUT:
	case AGENT_MSG_STDERR:
		if (m->u.data.len && !m->u.data.data)
			return "data pointer missing";
		wr_u32(w, m->u.data.id);
		wr_bytes(w, m->u.data.data, m->u.data.len, AGENT_MAX_PAYLOAD);
		break;
	case AGENT_MSG_STDIN_EOF:
		wr_u32(w, m->u.eof.id);
		break;
	case AGENT_MSG_SIGNAL:
		wr_u32(w, m->u.signal.id);
		wr_u32(w, m->u.signal.signo);
		break;
	case AGENT_MSG_EXIT:
		wr_u32(w, m->u.exit.id);
		wr_u32(w, m->u.exit.kind);
		wr_u32(w, m->u.exit.value);
		break;
	case AGENT_MSG_STARTED:
		wr_u32(w, m->u.started.id);
		wr_u32(w, m->u.started.pid);
		break;
	case AGENT_MSG_GENERATION: {
		const struct agent_generation *g = &m->u.gen;
		wr_raw(w, g->entropy, AGENT_ENTROPY_SIZE);
		wr_u32(w, (uint32_t)g->sec);
		wr_u32(w, (uint32_t)(g->sec >> 32));
		wr_u32(w, g->nsec);
		wr_str(w, g->hostname, AGENT_MAX_HOSTNAME);
		if (!wr_strlist(w, g->env, g->envc, 0, true))
			return "bad env list";
		break;
	}
	case AGENT_MSG_SHUTDOWN:
		break;
	default:
		return "unknown type";
	}
	return w->toolong ? "field too long" : NULL;
}

int agent_msg_encode(const struct agent_msg *m, uint8_t **out, size_t *out_len, sl_error_t *err)
{
	const char *name = agent_msg_type_name(m->type);
	struct wr w = {0};
	const char *bad = wr_payload(&w, m);
	if (!bad && m->type == AGENT_MSG_EXEC && (!m->u.exec.cwd || !m->u.exec.argv || !m->u.exec.argv[0]))
		bad = "EXEC without cwd or argv";
	if (!bad && m->type == AGENT_MSG_GENERATION && !m->u.gen.hostname)
		bad = "GENERATION without hostname";
	if (!bad && m->type == AGENT_MSG_ERROR && !m->u.error.message)
		bad = "ERROR without message";
	if (!bad)
		bad = msg_check(m);
	if (!bad && m->type == AGENT_MSG_EXEC) {
		for (uint32_t i = 0; i < m->u.exec.argc; i++)
			if (!m->u.exec.argv[i])
				bad = "argv shorter than argc";
	}
	if (bad)
		return sl_error_set(err, SL_E_INVALID, "encode agent %s: %s", name ? name : "frame", bad);
	if (w.n > AGENT_MAX_PAYLOAD)
		return sl_error_set(err, SL_E_LIMIT, "encode agent %s: payload of %zu bytes exceeds %u", name, w.n,
				    AGENT_MAX_PAYLOAD);
	uint8_t *buf = malloc(AGENT_HDR_SIZE + w.n);
	if (!buf)
		return sl_error_set(err, SL_E_NOMEM, "encode agent %s: out of memory", name);
	put_u32(buf, (uint32_t)w.n);
	buf[4] = m->type;
	buf[5] = buf[6] = buf[7] = 0;
	struct wr w2 = {.p = buf + AGENT_HDR_SIZE};
	wr_payload(&w2, m);
	*out = buf;
	*out_len = AGENT_HDR_SIZE + w.n;
	return 0;
}
