/* libFuzzer target: guest port I/O (serial, spore device, ACPI sleep port, unclaimed ports) through vmm_pio_dispatch. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "acpi.h"
#include "fuzz_ram.h"
#include "fuzz_vm.h"
#include "platform_linux.h"
#include "vmm_internal.h"

/* The machine is the VMM's own port map, registered by the production init
 * functions on a VM without KVM (vm_fd -1: no interrupt is injected):
 * COM1 0x3f8-0x3ff, the spore device 0x5100-0x511f and, on the Linux
 * platform, the ACPI sleep register 0x3c0 (plus its virtio-mmio devices,
 * which port I/O does not reach). Guest RAM is 1 MiB ending at a guard page.
 *
 * Input: [0] console prefix length (% 64); [1] bit 0: Linux platform;
 * then accesses, each as KVM delivers a KVM_EXIT_IO:
 *   a   bits 0-1: size 1, 2, 4, or 3 = a host action instead (a new
 *       generation, as a restore makes); bit 2: in (else out); bits 3-4:
 *       port near COM1, near the spore device, near the sleep register, or
 *       any port (two more bytes); bit 5: `rep` (one more byte: count - 1)
 *   b   port offset (near a device: COM1 - 4 + b % 16, ...)
 *   out data: count * size bytes (zeros once the input runs out)
 * Checked after every access:
 *  - the data page: only count * size bytes are touched; out data is
 *    never changed;
 *  - unclaimed ports read all ones, writes do nothing;
 *  - COM1 behaves as a 16550 register file that transmits at once (a model
 *    of the registers in this file); its line buffer stays under 512 bytes;
 *  - the spore device: PRESENT reads the magic, other registers all ones;
 *    EXIT posts an EXIT event whose code is the written value's low byte
 *    (only the first of a `rep` is kept); READY posts READY; a generation
 *    buffer is taken only 8-aligned and 32 bytes inside RAM (else an ERROR
 *    event), and it then holds counter, id and seq == counter;
 *  - the sleep register reads zero; writes post at most a power-off
 *    (EXIT 0), a reboot (SHUTDOWN) or an ERROR;
 *  - every event carries a message; no other event appears.
 * At the end, the serial output is exactly the bytes written to the
 * transmitter, cut into lines of at most 512 bytes, each written whole
 * behind the prefix; guest RAM was written only at generation buffers. */

#define RAM (1u << 20)
#define PAGE 4096u
#define COM1 0x3f8
#define SDEV 0x5100
#define SDEV_MAGIC 0x524f5053u
#define LINE 512u
#define MAX_INPUT (64u << 10)

static struct fuzz_ram ram;
static int out_fd;
static uint8_t *runbuf; /* struct kvm_run, then the data page KVM uses */
static uint8_t canary[PAGE]; /* 0xcc: what the data page holds before an access */
static uint8_t gen_seen[RAM / 8 / 8]; /* bit per 8-aligned gpa registered as a generation buffer */

/* ---- the model ---- */
struct uart_model {
	uint8_t ier, lcr, mcr, scr, dll, dlm, fcr;
	bool thri, output_seen;
};

struct model {
	struct uart_model u;
	uint8_t *stream; /* every byte written to the transmitter */
	size_t stream_len, stream_cap;
	uint32_t gen_lo;
	uint64_t gen_gpa, counter;
	/* events expected from the current access */
	bool want_output, want_exit, want_ready, want_error, sleep_port;
	int exit_code;
};

static void stream_put(struct model *m, uint8_t v)
{
	if (m->stream_len == m->stream_cap) {
		m->stream_cap = m->stream_cap ? 2 * m->stream_cap : 4096;
		m->stream = realloc(m->stream, m->stream_cap);
		if (!m->stream)
			abort();
	}
	m->stream[m->stream_len++] = v;
}

static void uart_out(struct model *m, unsigned reg, uint8_t v)
{
	struct uart_model *u = &m->u;
	bool dlab = u->lcr & 0x80;
	switch (reg) {
	case 0:
		if (dlab) {
			u->dll = v;
			break;
		}
		if (!u->output_seen)
			u->output_seen = m->want_output = true;
		stream_put(m, v);
		if (u->ier & 2)
			u->thri = true;
		break;
	case 1:
		if (dlab) {
			u->dlm = v;
		} else {
			bool was = u->ier & 2;
			u->ier = v & 0x0f;
			if (!(u->ier & 2))
				u->thri = false;
			else if (!was)
				u->thri = true;
		}
		break;
	case 2: u->fcr = v; break;
	case 3: u->lcr = v; break;
	case 4: u->mcr = v & 0x1f; break;
	case 7: u->scr = v; break;
	default: break; /* LSR, MSR: read-only */
	}
}

static uint8_t uart_in(struct model *m, unsigned reg)
{
	struct uart_model *u = &m->u;
	bool dlab = u->lcr & 0x80;
	uint8_t v = 0;
	switch (reg) {
	case 0: v = dlab ? u->dll : 0; break;
	case 1: v = dlab ? u->dlm : u->ier; break;
	case 2:
		v = (uint8_t)((u->thri && (u->ier & 2) ? 0x02 : 0x01) | ((u->fcr & 1) ? 0xc0 : 0));
		u->thri = false;
		break;
	case 3: v = u->lcr; break;
	case 4: v = u->mcr; break;
	case 5: v = 0x60; break; /* THRE | TEMT: always empty */
	case 6: v = 0xb0; break; /* DCD, DSR, CTS */
	case 7: v = u->scr; break;
	}
	return v;
}

static uint32_t le(const uint8_t *p, unsigned size)
{
	uint32_t v = 0;
	for (unsigned i = 0; i < size; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static void sdev_out(struct model *m, unsigned reg, const uint8_t *p, unsigned size)
{
	uint32_t v = le(p, size);
	switch (reg) {
	case 0x0:
		if (!m->want_exit) /* one pending EXIT: the first one's code */
			m->exit_code = p[0];
		m->want_exit = true;
		break;
	case 0x4: m->want_ready = true; break;
	case 0x8: m->gen_lo = v; break;
	case 0xc: {
		uint64_t gpa = (uint64_t)v << 32 | m->gen_lo;
		if ((gpa & 7) || gpa > RAM - 32) {
			m->want_error = true;
			break;
		}
		m->gen_gpa = gpa;
		gen_seen[gpa / 64] |= (uint8_t)(1u << (gpa / 8 % 8));
		break;
	}
	default: break;
	}
}

/* ---- checks ---- */
static void check_gen_buf(struct vmm_vm *vm, const struct model *m)
{
	if (vm->sdev.gen_gpa != m->gen_gpa || vm->sdev.counter != m->counter)
		__builtin_trap();
	if (!m->gen_gpa)
		return; /* 0 means none: a buffer at guest physical 0 is never written */
	const uint8_t *g = ram.mem + m->gen_gpa;
	uint64_t counter, seq;
	memcpy(&counter, g, 8);
	memcpy(&seq, g + 24, 8);
	if (counter != m->counter || seq != m->counter || memcmp(g + 8, vm->sdev.id, 16))
		__builtin_trap();
}

static void check_events(struct vmm_vm *vm, struct model *m)
{
	struct vmm_event ev;
	bool exit = false, ready = false, error = false, output = false, shutdown = false;
	while (vmm_next_event(vm, &ev) == 0 && ev.kind != VMM_EV_NONE) {
		if (!ev.msg[0])
			__builtin_trap();
		switch (ev.kind) {
		case VMM_EV_EXIT:
			if (exit || ev.code < 0 || ev.code > 255)
				__builtin_trap();
			if (!m->sleep_port && ev.code != m->exit_code)
				__builtin_trap();
			if (m->sleep_port && ev.code != 0)
				__builtin_trap(); /* ACPI power off is a clean exit */
			exit = true;
			break;
		case VMM_EV_READY: ready = true; break;
		case VMM_EV_ERROR: error = true; break;
		case VMM_EV_OUTPUT: output = true; break;
		case VMM_EV_SHUTDOWN: shutdown = true; break;
		default: __builtin_trap();
		}
	}
	if (m->sleep_port) {
		if (ready || output)
			__builtin_trap();
	} else if (exit != m->want_exit || ready != m->want_ready || error != m->want_error ||
		   output != m->want_output || shutdown) {
		__builtin_trap();
	}
	m->want_exit = m->want_ready = m->want_error = m->want_output = m->sleep_port = false;
}

/* The serial output must be the transmitted stream cut into lines (a
 * newline or 512 bytes end one; the flush at the end adds a newline to an
 * unfinished line), each behind the prefix. */
static void check_output(const struct model *m, const char *prefix, size_t plen)
{
	off_t len = lseek(out_fd, 0, SEEK_END);
	if (len < 0)
		abort();
	uint8_t *got = malloc((size_t)len + 1);
	if (!got || pread(out_fd, got, (size_t)len, 0) != len)
		abort();
	size_t at = 0, line = 0;
	for (size_t i = 0; i < m->stream_len; i++) {
		if (line == 0) {
			if (at + plen > (size_t)len || memcmp(got + at, prefix, plen))
				__builtin_trap();
			at += plen;
		}
		if (at >= (size_t)len || got[at] != m->stream[i])
			__builtin_trap();
		at++;
		line++;
		if (m->stream[i] == '\n' || line == LINE)
			line = 0;
	}
	if (line) {
		if (at >= (size_t)len || got[at] != '\n')
			__builtin_trap();
		at++;
	}
	if (at != (size_t)len)
		__builtin_trap();
	free(got);
}

static bool gen_ok(void *ctx, uint64_t gpa, uint64_t len)
{
	(void)ctx;
	if (len != 1)
		return false;
	/* Some registered buffer [g, g + 32) covers gpa: g is 8-aligned, gpa - 31 <= g <= gpa. */
	for (uint64_t g = gpa & ~7ull, k = 0; k < 4; k++, g -= 8) {
		if (g < RAM && (gen_seen[g / 64] >> (g / 8 % 8) & 1))
			return true;
		if (g == 0)
			break;
	}
	return false;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	fuzz_ram_init(&ram, RAM);
	out_fd = memfd_create("fuzz-serial", MFD_CLOEXEC);
	runbuf = aligned_alloc(PAGE, 2 * PAGE);
	if (out_fd < 0 || !runbuf)
		abort();
	memset(canary, 0xcc, PAGE);
	return 0;
}

static size_t take(const uint8_t **p, const uint8_t *end, uint8_t *dst, size_t n)
{
	size_t k = (size_t)(end - *p) < n ? (size_t)(end - *p) : n;
	memcpy(dst, *p, k);
	memset(dst + k, 0, n - k);
	*p += k;
	return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2 || size > MAX_INPUT)
		return 0;
	char prefix[64];
	size_t plen = data[0] % 64;
	for (size_t i = 0; i < plen; i++)
		prefix[i] = (char)('A' + i % 26);
	prefix[plen] = 0;
	bool linux_platform = data[1] & 1;

	fuzz_ram_reset(&ram, RAM);
	memset(gen_seen, 0, sizeof(gen_seen));
	if (ftruncate(out_fd, 0) < 0 || lseek(out_fd, 0, SEEK_SET) < 0)
		abort();
	struct vmm_vm *vm = fuzz_vm_new(&ram, linux_platform);
	sl_error_t err = NULL;
	struct vmm_console con = {.fd = out_fd, .prefix = prefix};
	if (vmm_serial_init(vm, &con, &err) < 0 || vmm_spore_dev_init(vm, &err) < 0 ||
	    (linux_platform && vmm_linux_create(vm, &err) < 0))
		__builtin_trap();

	struct model m = {0};
	struct kvm_run *run = (struct kvm_run *)runbuf;
	uint8_t *page = runbuf + PAGE, shadow[PAGE];
	const uint8_t *p = data + 2, *end = data + size;
	while (p < end) {
		uint8_t a = *p++;
		if ((a & 3) == 3) {
			if (vmm_spore_dev_new_generation(vm, &err) < 0)
				__builtin_trap();
			m.counter++;
			check_gen_buf(vm, &m);
			continue;
		}
		unsigned sz = 1u << (a & 3);
		bool in = a & 4;
		uint8_t b = p < end ? *p++ : 0;
		uint16_t port;
		switch (a >> 3 & 3) {
		case 0: port = (uint16_t)(COM1 - 4 + b % 16); break;
		case 1: port = (uint16_t)(SDEV - 4 + b % 48); break;
		case 2: port = (uint16_t)(ACPI_SLEEP_PORT_DEFAULT - 4 + b % 8); break;
		default: {
			uint8_t hi = p < end ? *p++ : 0;
			port = (uint16_t)(b | hi << 8);
			break;
		}
		}
		uint32_t count = 1;
		if (a & 0x20)
			count = 1u + (p < end ? *p++ : 0);

		memset(runbuf, 0, sizeof(*run));
		memcpy(page, canary, PAGE);
		run->exit_reason = KVM_EXIT_IO;
		run->io.direction = in ? KVM_EXIT_IO_IN : KVM_EXIT_IO_OUT;
		run->io.size = (uint8_t)sz;
		run->io.port = port;
		run->io.count = count;
		run->io.data_offset = PAGE;
		if (!in)
			take(&p, end, page, count * sz);
		memcpy(shadow, page, PAGE);
		vmm_pio_dispatch(vm, run);

		if (memcmp(page + count * sz, canary, PAGE - count * sz))
			__builtin_trap(); /* past the access */
		if (!in && memcmp(page, shadow, PAGE))
			__builtin_trap(); /* a device changed out data */

		bool com1 = port >= COM1 && port < COM1 + 8;
		bool sdev = port >= SDEV && port < SDEV + 0x20;
		bool sleep = linux_platform && port == ACPI_SLEEP_PORT_DEFAULT;
		for (uint32_t n = 0; n < count; n++) {
			uint8_t *e = page + n * sz;
			if (com1 && in) {
				if (e[0] != uart_in(&m, port - COM1))
					__builtin_trap();
				for (unsigned i = 1; i < sz; i++)
					if (e[i])
						__builtin_trap();
			} else if (com1) {
				uart_out(&m, port - COM1, e[0]);
			} else if (sdev && in) {
				uint32_t want = port - SDEV == 0x10 ? SDEV_MAGIC : 0xffffffffu;
				if (le(e, sz) != (sz == 4 ? want : want & ((1u << (8 * sz)) - 1)))
					__builtin_trap();
			} else if (sdev) {
				sdev_out(&m, port - SDEV, e, sz);
			} else if (sleep) {
				m.sleep_port = true;
				for (unsigned i = 0; in && i < sz; i++)
					if (e[i])
						__builtin_trap(); /* the status register reads 0 */
			} else {
				for (unsigned i = 0; in && i < sz; i++)
					if (e[i] != 0xff)
						__builtin_trap(); /* an empty bus */
			}
		}
		if (vm->serial.line_len >= LINE)
			__builtin_trap();
		check_events(vm, &m);
		check_gen_buf(vm, &m);
	}

	vmm_serial_flush(vm);
	check_output(&m, prefix, plen);
	fuzz_ram_check_fn(&ram, gen_ok, NULL);

	if (linux_platform)
		vmm_linux_free(vm);
	pthread_mutex_destroy(&vm->serial.lock);
	pthread_mutex_destroy(&vm->lock);
	free(vm);
	free(m.stream);
	return 0;
}
