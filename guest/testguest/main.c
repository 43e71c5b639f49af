/* Test guest ring-3 program: command line, workload, generation polling, self-checks, output. */
#include <stddef.h>
#include <stdint.h>

#include "agent.h"
#include "layout.h"

/* Everything below runs in ring 3 (IOPL=3, IF=1) except tg_fault(), which the
 * ring-0 exception path calls. Contract: docs/testguest.md. */

#define COM1 0x3f8
#define COM1_LSR (COM1 + 5)
#define LSR_THRE 0x20

#define SPORE_EXIT 0x5100
#define SPORE_READY 0x5104
#define SPORE_GEN_LO 0x5108
#define SPORE_GEN_HI 0x510c
#define SPORE_PRESENT 0x5110
#define SPORE_MAGIC 0x524f5053u

#define PVH_MAGIC 0x336ec578u
#define MIB (1ull << 20)
#define WORK_ALIGN (2ull << 20)
#define MEM_LIMIT 0xfe000000ull /* the identity map covers 4 GiB; MMIO above */

#define LAPIC_EOI 0xb0
#define LAPIC_ICR_LO 0x300
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_DIV 0x3e0

/* ---- low-level helpers ---- */

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint32_t inl(uint16_t port)
{
	uint32_t v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline void cpu_relax(void)
{
	__asm__ volatile("pause" : : : "memory");
}
/* Ask ring 0 to halt until the next interrupt (see TG_VEC_HALT). */
static inline void halt_until_irq(void)
{
	__asm__ volatile("int3" : : : "memory");
}
static inline void lapic_write(uint32_t reg, uint32_t v)
{
	*(volatile uint32_t *)(uintptr_t)(TG_LAPIC + reg) = v;
}

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n)
{
	void *r = d;
	__asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
	return r;
}
void *memcpy(void *d, const void *s, size_t n)
{
	void *r = d;
	__asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
	return r;
}

/* ---- boot interfaces ---- */

struct tg_boot_info {
	uint32_t magic;
	uint32_t version;
	uint32_t ncpus;
	uint32_t reserved0;
	uint64_t mem_bytes;
	uint64_t cmdline_gpa;
	uint32_t cmdline_len;
	uint32_t reserved1;
	/* version 2: the vsock device (absent in version 1) */
	uint64_t vsock_mmio_gpa;
	uint32_t vsock_gsi;
	uint32_t reserved2;
};

struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr; /* version >= 1 */
	uint32_t memmap_entries;
	uint32_t reserved;
};

struct hvm_memmap_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type; /* 1: RAM */
	uint32_t reserved;
};

struct tg_generation {
	uint64_t counter;
	uint8_t id[16];
	uint64_t seq;
};

/* Registered with the spore device; written by the VMM. */
static volatile struct tg_generation tg_gen __attribute__((aligned(64)));

extern char tg_kstacks[];
extern char _end[];

/* ---- configuration and shared state ---- */

enum { MODE_DEMO, MODE_BENCH, MODE_IDLE };
static const char *const mode_names[] = {"demo", "bench", "idle"};

static struct {
	uint32_t mode, hz, work_mib, warm_ms, exit_after_ms, exit_code, pulse_ms;
} cfg = {MODE_DEMO, 100, 2, 200, 0, 0, 0};

/* Written by CPU 0 before config_ready, read-only afterwards. */
static uint32_t ncpus;
static uint32_t spore_present;
static uint64_t mem_bytes;
static uint64_t work_base, work_stride, spin_limit;
static uint64_t vsock_mmio, agent_arena; /* 0: no vsock device, no agent */
static uint32_t vsock_gsi;

static struct {
	volatile uint32_t print_lock; /* 0 or owner CPU + 1 */
	volatile uint32_t config_ready;
	volatile uint32_t cpus_up;
	volatile uint32_t epoch;        /* check round number */
	volatile uint32_t checks_done;  /* CPUs done with the current round */
	volatile uint32_t round_active; /* cleared after "selfcheck" is printed */
	volatile uint32_t round_fail;   /* first failing CPU + 1 in this round */
	volatile uint32_t rounds_done;
	volatile uint32_t any_fail; /* a check ever failed: final status 1 */
	const char *volatile fail_reason[TG_MAX_CPUS];
} sh __attribute__((aligned(64)));

struct cpu_state {
	uint64_t *work;
	uint64_t nwords;
	uint64_t sum; /* sum of work[i] * (2i + 1), kept up to date */
	uint64_t iter;
	uint64_t rng;
	uint64_t last_ticks, last_iter;
	uint32_t checked, epoch;
} __attribute__((aligned(64)));
static struct cpu_state cst[TG_MAX_CPUS];

static inline uint64_t ticks_of(uint32_t cpu)
{
	return *(volatile uint64_t *)(tg_kstacks + (uint64_t)cpu * TG_KSTACK_SIZE + TG_PERCPU_TICKS);
}
static inline uint64_t now_ms(void)
{
	return ticks_of(0) * 1000 / cfg.hz;
}

/* ---- output: whole lines under a spinlock ---- */

struct line {
	char b[200];
	uint32_t n;
};

static void l_s(struct line *l, const char *s)
{
	while (*s && l->n < sizeof(l->b) - 1)
		l->b[l->n++] = *s++;
}
static void l_sn(struct line *l, const char *s, size_t n)
{
	for (size_t i = 0; i < n && s[i] && l->n < sizeof(l->b) - 1; i++)
		l->b[l->n++] = s[i];
}
static void l_u(struct line *l, uint64_t v)
{
	char t[20];
	int k = 0;
	do {
		t[k++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (k && l->n < sizeof(l->b) - 1)
		l->b[l->n++] = t[--k];
}
/* width 0: no leading zeros */
static void l_x(struct line *l, uint64_t v, int width)
{
	static const char hex[] = "0123456789abcdef";
	int digits = 16;
	if (!width) {
		while (digits > 1 && !(v >> ((digits - 1) * 4)))
			digits--;
	} else {
		digits = width;
	}
	for (int i = digits - 1; i >= 0 && l->n < sizeof(l->b) - 1; i--)
		l->b[l->n++] = hex[(v >> (i * 4)) & 0xf];
}

/* 16550 use: with the FIFO on, THRE means the 16-byte transmit FIFO is empty,
 * so LSR is polled once per 16 bytes, not per byte (every port access is a
 * VM exit, and on PVM hosts a ring-3 `in` is an expensive emulated one). */
#define UART_FIFO 16
static uint32_t uart_room; /* bytes the FIFO can take; only under print_lock */

static void uart_init(void)
{
	outb(COM1 + 2, 0x07); /* FCR: enable and clear the FIFOs */
}

static void uart_putc(char c)
{
	if (!uart_room) {
		for (uint32_t i = 0; i < 1000000 && !(inb(COM1_LSR) & LSR_THRE); i++)
			cpu_relax();
		uart_room = UART_FIFO;
	}
	uart_room--;
	outb(COM1, (uint8_t)c);
}

static void emit(struct line *l, uint32_t cpu)
{
	uint32_t me = cpu + 1, nested = 0;
	if (sh.print_lock == me) {
		nested = 1; /* a fault while this CPU was printing */
		uart_putc('\n');
	} else {
		uint32_t expect = 0;
		while (!__atomic_compare_exchange_n(&sh.print_lock, &expect, me, 0, __ATOMIC_ACQUIRE,
						    __ATOMIC_RELAXED)) {
			expect = 0;
			cpu_relax();
		}
	}
	uart_room = 0; /* THRE is only known after a fresh LSR read */
	for (uint32_t i = 0; i < l->n; i++)
		uart_putc(l->b[i]);
	uart_putc('\n');
	if (!nested)
		__atomic_store_n(&sh.print_lock, 0, __ATOMIC_RELEASE);
}

static void say(uint32_t cpu, const char *s)
{
	struct line l = {.n = 0};
	l_s(&l, "tg: ");
	l_s(&l, s);
	emit(&l, cpu);
}

/* Stop this CPU for good: timer off, then halt (int3) from ring 3, or
 * cli;hlt in ring 0 (the fault path). */
__attribute__((noreturn)) static void stop_cpu(void)
{
	uint16_t cs;
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	if ((cs & 3) == 0)
		for (;;)
			__asm__ volatile("cli; hlt" : : : "memory");
	lapic_write(LAPIC_LVT_TIMER, 0x10000 | TG_VEC_TIMER); /* masked */
	lapic_write(LAPIC_TIMER_INIT, 0);
	for (;;)
		halt_until_irq();
}

__attribute__((noreturn)) static void tg_exit(uint32_t cpu, uint32_t code)
{
	struct line l = {.n = 0};
	l_s(&l, "tg: exit code=");
	l_u(&l, code);
	emit(&l, cpu);
	if (inl(SPORE_PRESENT) == SPORE_MAGIC)
		outl(SPORE_EXIT, code);
	stop_cpu(); /* no spore device (QEMU), or the VMM has not stopped us yet */
}

/* Called in ring 0 by the exception stubs. */
__attribute__((noreturn)) void tg_fault(uint64_t vec, uint64_t err, uint64_t rip, uint64_t cpu);
__attribute__((noreturn)) void tg_fault(uint64_t vec, uint64_t err, uint64_t rip, uint64_t cpu)
{
	struct line l = {.n = 0};
	l_s(&l, "tg: fault vec=");
	l_u(&l, vec);
	l_s(&l, " err=");
	l_u(&l, err);
	l_s(&l, " rip=");
	l_x(&l, rip, 0);
	l_s(&l, " cpu=");
	l_u(&l, cpu);
	emit(&l, (uint32_t)cpu);
	tg_exit((uint32_t)cpu, 3);
}

/* ---- command line ---- */

static int streq_n(const char *a, size_t an, const char *b)
{
	size_t i = 0;
	for (; i < an; i++)
		if (a[i] != b[i])
			return 0;
	return b[i] == 0;
}

int tg_parse_dec(const char *s, uint32_t n, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	if (n == 0 || n > 10)
		return -1;
	for (uint32_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

__attribute__((noreturn)) static void cmdline_error(const char *what, const char *w, size_t n)
{
	struct line l = {.n = 0};
	l_s(&l, "tg: error ");
	l_s(&l, what);
	l_s(&l, " '");
	l_sn(&l, w, n > 64 ? 64 : n);
	l_s(&l, "'");
	emit(&l, 0);
	tg_exit(0, 2);
}

static void parse_cmdline(const char *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
			i++;
		if (i >= len || !s[i])
			break;
		size_t w = i;
		while (i < len && s[i] && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
			i++;
		const char *word = s + w;
		size_t wl = i - w, kl = 0;
		while (kl < wl && word[kl] != '=')
			kl++;
		if (kl == wl || kl == 0)
			cmdline_error("bad word", word, wl);
		const char *v = word + kl + 1;
		size_t vl = wl - kl - 1;
		uint32_t *num = NULL, max = 0, min = 0;
		if (streq_n(word, kl, "mode")) {
			if (streq_n(v, vl, "demo"))
				cfg.mode = MODE_DEMO;
			else if (streq_n(v, vl, "bench"))
				cfg.mode = MODE_BENCH;
			else if (streq_n(v, vl, "idle"))
				cfg.mode = MODE_IDLE;
			else
				cmdline_error("bad value", word, wl);
			continue;
		} else if (streq_n(word, kl, "hz")) {
			num = &cfg.hz, min = 1, max = 5000; /* KVM clamps periodic timers to >= 200 us */
		} else if (streq_n(word, kl, "work_mib")) {
			num = &cfg.work_mib, max = 1024;
		} else if (streq_n(word, kl, "warm_ms")) {
			num = &cfg.warm_ms, max = 3600000;
		} else if (streq_n(word, kl, "exit_after_ms")) {
			num = &cfg.exit_after_ms, max = 3600000;
		} else if (streq_n(word, kl, "exit")) {
			num = &cfg.exit_code, max = 255;
		} else if (streq_n(word, kl, "pulse_ms")) {
			num = &cfg.pulse_ms, max = 3600000;
		} else {
			cmdline_error("unknown key", word, kl);
		}
		uint64_t val;
		if (tg_parse_dec(v, (uint32_t)vl, max, &val) < 0 || val < min)
			cmdline_error("bad value", word, wl);
		*num = (uint32_t)val;
	}
}

/* ---- boot (CPU 0) ---- */

__attribute__((noreturn)) static void boot_error(const char *what)
{
	struct line l = {.n = 0};
	l_s(&l, "tg: error ");
	l_s(&l, what);
	emit(&l, 0);
	tg_exit(0, 2);
}

static uint64_t mem_bytes_of(const struct tg_boot_info *bi)
{
	return bi->mem_bytes;
}

static void boot_cpu0(uint64_t info, uint64_t kind)
{
	const char *cmd = "";
	size_t cmdlen = 0;
	uart_init();
	spore_present = inl(SPORE_PRESENT) == SPORE_MAGIC;
	if (kind == 0) {
		const struct tg_boot_info *bi = (const struct tg_boot_info *)(uintptr_t)info;
		if (!info || info >= MEM_LIMIT || bi->magic != SPORE_MAGIC || bi->version < 1 || bi->version > 2)
			boot_error("bad boot info");
		if (bi->version >= 2 && bi->vsock_mmio_gpa) {
			if (bi->vsock_mmio_gpa < mem_bytes_of(bi) || bi->vsock_mmio_gpa >= 0xfe000000ull ||
			    (bi->vsock_mmio_gpa & 0xfff))
				boot_error("bad vsock device address");
			vsock_mmio = bi->vsock_mmio_gpa;
			vsock_gsi = bi->vsock_gsi;
		}
		ncpus = bi->ncpus;
		mem_bytes = bi->mem_bytes;
		if (bi->cmdline_gpa && bi->cmdline_len) {
			if (bi->cmdline_gpa >= MEM_LIMIT || bi->cmdline_len > 65536)
				boot_error("bad command line address");
			cmd = (const char *)(uintptr_t)bi->cmdline_gpa;
			cmdlen = bi->cmdline_len;
		}
	} else {
		const struct hvm_start_info *si = (const struct hvm_start_info *)(uintptr_t)info;
		if (!info || info >= MEM_LIMIT || si->magic != PVH_MAGIC)
			boot_error("bad PVH start info");
		ncpus = 1;
		if (si->cmdline_paddr && si->cmdline_paddr < MEM_LIMIT) {
			cmd = (const char *)(uintptr_t)si->cmdline_paddr;
			while (cmdlen < 4096 && cmd[cmdlen])
				cmdlen++;
		}
		/* RAM size: the end of the RAM range holding the image. */
		if (si->version >= 1 && si->memmap_paddr && si->memmap_paddr < MEM_LIMIT) {
			const struct hvm_memmap_entry *e =
				(const struct hvm_memmap_entry *)(uintptr_t)si->memmap_paddr;
			for (uint32_t i = 0; i < si->memmap_entries && i < 128; i++)
				if (e[i].type == 1 && e[i].addr <= TG_LOAD_ADDR &&
				    e[i].addr + e[i].size > TG_LOAD_ADDR)
					mem_bytes = e[i].addr + e[i].size;
		}
		if (!mem_bytes)
			boot_error("no memory map in the PVH start info");
	}
	parse_cmdline(cmd, cmdlen);
	if (ncpus == 0 || ncpus > TG_MAX_CPUS)
		boot_error("unsupported cpu count (1-16)");

	struct line l = {.n = 0};
	l_s(&l, "tg: boot cpus=");
	l_u(&l, ncpus);
	l_s(&l, " mem_mib=");
	l_u(&l, mem_bytes >> 20);
	l_s(&l, " mode=");
	l_s(&l, mode_names[cfg.mode]);
	l_s(&l, " hz=");
	l_u(&l, cfg.hz);
	emit(&l, 0);

	work_base = ((uint64_t)(uintptr_t)_end + WORK_ALIGN - 1) & ~(WORK_ALIGN - 1);
	work_stride = ((uint64_t)cfg.work_mib * MIB + WORK_ALIGN - 1) & ~(WORK_ALIGN - 1);
	uint64_t limit = mem_bytes < MEM_LIMIT ? mem_bytes : MEM_LIMIT;
	if (work_base + work_stride * ncpus > limit)
		boot_error("work regions do not fit in RAM");
	if (vsock_mmio) {
		/* The agent's rings and buffers follow the work regions. */
		agent_arena = work_base + work_stride * ncpus;
		if (agent_arena + TG_AGENT_ARENA > limit)
			boot_error("the agent's memory does not fit in RAM (raise --mem)");
	}
	/* Bound for waiting on a timer tick: many timer periods of pause loops. */
	spin_limit = 4000000000ull / cfg.hz;
	if (spin_limit < 2000000)
		spin_limit = 2000000;
	__atomic_store_n(&sh.config_ready, 1, __ATOMIC_RELEASE);
}

/* ---- workload and checks ---- */

static inline uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t work_sum(const struct cpu_state *c)
{
	uint64_t s = 0;
	for (uint64_t i = 0; i < c->nwords; i++)
		s += c->work[i] * (2 * i + 1);
	return s;
}

static void cpu_init(uint32_t cpu)
{
	struct cpu_state *c = &cst[cpu];
	lapic_write(LAPIC_TIMER_DIV, 0x3); /* divide by 16 */
	lapic_write(LAPIC_LVT_TIMER, 0x20000 | TG_VEC_TIMER); /* periodic */
	lapic_write(LAPIC_TIMER_INIT, 62500000u / cfg.hz);  /* 1 GHz / 16 / hz */

	c->work = (uint64_t *)(uintptr_t)(work_base + work_stride * cpu);
	c->nwords = (uint64_t)cfg.work_mib * MIB / 8;
	c->rng = 0x5eed0000ull + cpu;
	for (uint64_t i = 0; i < c->nwords; i++)
		c->work[i] = splitmix(&c->rng);
	c->sum = work_sum(c);

	struct line l = {.n = 0};
	l_s(&l, "tg: cpu=");
	l_u(&l, cpu);
	l_s(&l, " up");
	emit(&l, cpu);
	__atomic_add_fetch(&sh.cpus_up, 1, __ATOMIC_ACQ_REL);
}

/* One demo iteration: rewrite a few words, keeping the checksum current. */
static void work_step(struct cpu_state *c)
{
	if (!c->nwords)
		return;
	for (int k = 0; k < 16; k++) {
		uint64_t r = splitmix(&c->rng);
		uint64_t i = r % c->nwords;
		uint64_t old = c->work[i], nw = old ^ (r | 1);
		c->work[i] = nw;
		c->sum += (nw - old) * (2 * i + 1);
	}
}

static void do_check(uint32_t cpu)
{
	struct cpu_state *c = &cst[cpu];
	const char *fail = NULL;
	c->epoch = __atomic_load_n(&sh.epoch, __ATOMIC_ACQUIRE);

	uint64_t t0 = ticks_of(cpu), t = t0;
	for (uint64_t n = 0; n < spin_limit && (t = ticks_of(cpu)) == t0; n++)
		cpu_relax();
	uint64_t got = work_sum(c);
	if (t == t0)
		fail = "timer stopped";
	else if (c->checked && t <= c->last_ticks)
		fail = "ticks did not advance";
	else if (c->checked && c->iter <= c->last_iter)
		fail = "iterations did not advance";
	else if (got != c->sum)
		fail = "checksum mismatch";

	struct line l = {.n = 0};
	l_s(&l, "tg: check cpu=");
	l_u(&l, cpu);
	l_s(&l, " ticks=");
	l_u(&l, t);
	l_s(&l, " iter=");
	l_u(&l, c->iter);
	l_s(&l, " sum=");
	l_x(&l, c->sum, 16);
	if (fail) {
		if (got != c->sum) {
			l_s(&l, " got=");
			l_x(&l, got, 16);
		}
		l_s(&l, " FAIL ");
		l_s(&l, fail);
	} else {
		l_s(&l, " ok");
	}
	emit(&l, cpu);
	c->last_ticks = t;
	c->last_iter = c->iter;
	c->checked = 1;

	if (fail) {
		sh.fail_reason[cpu] = fail;
		uint32_t expect = 0;
		__atomic_compare_exchange_n(&sh.round_fail, &expect, cpu + 1, 0, __ATOMIC_ACQ_REL,
					    __ATOMIC_RELAXED);
	}
	if (__atomic_add_fetch(&sh.checks_done, 1, __ATOMIC_ACQ_REL) == ncpus) {
		uint32_t f = __atomic_load_n(&sh.round_fail, __ATOMIC_ACQUIRE);
		struct line s = {.n = 0};
		if (f) {
			l_s(&s, "tg: selfcheck FAIL cpu=");
			l_u(&s, f - 1);
			l_s(&s, " ");
			l_s(&s, sh.fail_reason[f - 1]);
			sh.any_fail = 1;
		} else {
			l_s(&s, "tg: selfcheck ok");
		}
		emit(&s, cpu);
		__atomic_add_fetch(&sh.rounds_done, 1, __ATOMIC_ACQ_REL);
		__atomic_store_n(&sh.round_active, 0, __ATOMIC_RELEASE);
	}
}

/* CPU 0 starts a round; every CPU checks once, the last one reports. */
static void start_round(void)
{
	sh.round_fail = 0;
	sh.checks_done = 0;
	__atomic_store_n(&sh.round_active, 1, __ATOMIC_RELEASE);
	__atomic_add_fetch(&sh.epoch, 1, __ATOMIC_ACQ_REL);
	if (ncpus > 1) /* wake the others: fixed, assert, all excluding self */
		lapic_write(LAPIC_ICR_LO, 0x000c4000 | TG_VEC_WAKE);
}

/* ---- CPU 0 duties: generations, readiness, pulses, exit ---- */

static struct {
	uint32_t have_gen, ready_done, round_pending;
	uint64_t counter, seq;
	uint8_t id[16];
	uint64_t deadline_base, next_pulse, pulses;
} c0;

/* Returns 1 when a new generation was read (and announced). */
static int poll_generation(void)
{
	uint64_t seq = tg_gen.seq;
	if (c0.have_gen && seq == c0.seq) {
		/* the common case: same seq; a fork of the same parent gets a new id */
		int same = 1;
		for (int i = 0; i < 16; i++)
			same &= tg_gen.id[i] == c0.id[i];
		if (same)
			return 0;
	}
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	uint64_t counter = tg_gen.counter;
	uint8_t id[16], nz = 0;
	for (int i = 0; i < 16; i++)
		nz |= id[i] = tg_gen.id[i];
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	if (tg_gen.seq != seq || seq != counter || !nz)
		return 0; /* not written yet, or being written */
	c0.have_gen = 1;
	c0.seq = seq;
	c0.counter = counter;
	for (int i = 0; i < 16; i++)
		c0.id[i] = id[i];

	struct line l = {.n = 0};
	l_s(&l, "tg: gen counter=");
	l_u(&l, counter);
	l_s(&l, " id=");
	for (int i = 0; i < 16; i++)
		l_x(&l, id[i], 2);
	emit(&l, 0);
	return 1;
}

static void cpu0_duties(void)
{
	if (spore_present && poll_generation()) {
		c0.deadline_base = now_ms(); /* a restore (or the first registration) */
		if (sh.round_active)
			c0.round_pending = 1;
		else
			start_round();
	}
	if (c0.round_pending && !sh.round_active) {
		c0.round_pending = 0;
		start_round();
	}
	uint64_t now = now_ms();
	if (!c0.ready_done && sh.rounds_done && !sh.round_active && now >= cfg.warm_ms &&
	    (c0.have_gen || !spore_present)) {
		c0.ready_done = 1;
		say(0, "ready");
		if (spore_present)
			outl(SPORE_READY, 1);
	}
	if (cfg.pulse_ms && now >= c0.next_pulse) {
		struct line l = {.n = 0};
		l_s(&l, "tg: pulse n=");
		l_u(&l, ++c0.pulses);
		emit(&l, 0);
		c0.next_pulse += cfg.pulse_ms;
		if (c0.next_pulse <= now)
			c0.next_pulse = now + cfg.pulse_ms;
	}
	if (cfg.exit_after_ms && now >= c0.deadline_base + cfg.exit_after_ms) {
		if (sh.round_active || c0.round_pending) {
			if (now < c0.deadline_base + cfg.exit_after_ms + 2000)
				return; /* let the running check round finish first */
			say(0, "selfcheck FAIL check round did not finish");
			sh.any_fail = 1;
		}
		tg_exit(0, sh.any_fail ? 1 : cfg.exit_code);
	}
}

/* ---- services for the agent (agent.h); CPU 0 ---- */

uint64_t tg_now_ms(void)
{
	return now_ms();
}

void tg_gen_id(uint8_t id[16])
{
	/* Straight from the buffer, not c0's copy: a command that runs right
	 * after a restore must see the new id even before cpu0_duties has
	 * announced it. The VMM writes it before any vCPU runs. */
	for (int i = 0; i < 16; i++)
		id[i] = tg_gen.id[i];
}

void tg_log(const char *a, const char *b, uint64_t n)
{
	struct line l = {.n = 0};
	l_s(&l, "tg: agent ");
	l_s(&l, a);
	if (b[0]) {
		l_s(&l, b);
		l_u(&l, n);
	}
	emit(&l, 0);
}

void tg_poweroff(void)
{
	tg_exit(0, 0);
}

uint64_t tg_virq_count(void)
{
	return *(volatile uint64_t *)(tg_kstacks + TG_PERCPU_VIRQ);
}

/* ---- ring-3 entry (from entry.S) ---- */

__attribute__((noreturn)) void tg_user_main(uint64_t cpu, uint64_t info, uint64_t kind);
__attribute__((noreturn)) void tg_user_main(uint64_t cpu, uint64_t info, uint64_t kind)
{
	uint32_t me = (uint32_t)cpu;
	if (me == 0) {
		boot_cpu0(info, kind);
	} else {
		while (!__atomic_load_n(&sh.config_ready, __ATOMIC_ACQUIRE))
			cpu_relax();
		if (me >= ncpus)
			stop_cpu();
	}
	cpu_init(me);

	if (me == 0) {
		uint64_t t0 = now_ms();
		while (__atomic_load_n(&sh.cpus_up, __ATOMIC_ACQUIRE) < ncpus) {
			if (now_ms() - t0 > 10000) {
				struct line l = {.n = 0};
				l_s(&l, "tg: error only ");
				l_u(&l, sh.cpus_up);
				l_s(&l, " of ");
				l_u(&l, ncpus);
				l_s(&l, " cpus came up");
				emit(&l, 0);
				tg_exit(0, 2);
			}
			halt_until_irq();
		}
		c0.next_pulse = cfg.pulse_ms;
		if (spore_present) {
			uint64_t gpa = (uint64_t)(uintptr_t)&tg_gen;
			outl(SPORE_GEN_LO, (uint32_t)gpa);
			outl(SPORE_GEN_HI, (uint32_t)(gpa >> 32));
			poll_generation();
		}
		c0.deadline_base = 0; /* the first generation is boot, not a restore */
		if (vsock_mmio) {
			const char *why = tg_agent_init(vsock_mmio, vsock_gsi, agent_arena);
			if (why)
				boot_error(why);
		}
		start_round();
	}

	struct cpu_state *c = &cst[me];
	int busy = cfg.mode == MODE_BENCH && me == 0;
	for (;;) {
		if (me == 0)
			cpu0_duties();
		if (__atomic_load_n(&sh.epoch, __ATOMIC_ACQUIRE) != c->epoch)
			do_check(me);
		if (cfg.mode == MODE_DEMO)
			work_step(c);
		c->iter++;
		/* The agent works until it has nothing to do right now, then the
		 * CPU halts: its device interrupt (or the timer, for sleeps)
		 * ends the halt. Bounded, so the duties above still run. */
		if (me == 0 && vsock_mmio)
			for (int n = 0; n < 64 && tg_agent_poll(); n++)
				;
		if (busy)
			cpu_relax(); /* bench: poll the generation buffer continuously */
		else
			halt_until_irq();
	}
}
