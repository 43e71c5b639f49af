/* Unit tests for virtio-mmio, split virtqueues, virtio-rng and virtio-blk, with the test as the guest driver. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_fake_vm.h"

#include "virtio.h"
#include "vmm_internal.h"

#define MEM_SIZE (4u << 20)
#define BASE VIRTIO_MMIO_BASE
#define GSI 5u
#define DESC 0x1000u
#define AVAIL 0x2000u
#define USED 0x3000u
#define BUF 0x10000u

/* What the injected hooks saw. */
struct seen {
	int level;
	int raises;
	int reports;
	char report[256];
};

struct ctx {
	struct vmm_vm *vm;
	struct seen seen;
	struct virtio_mmio *t;
	struct virtio_rng *rng;
	struct virtio_blk *blk;
	char img[64];
	uint16_t num;
	uint16_t avail_idx; /* the driver's next available index */
};

static void hook_irq(void *arg, uint32_t gsi, int level)
{
	struct seen *s = arg;
	assert_int_equal(gsi, GSI);
	if (level && !s->level)
		s->raises++;
	s->level = level;
}

static void hook_report(void *arg, const char *device, const char *msg)
{
	struct seen *s = arg;
	s->reports++;
	snprintf(s->report, sizeof(s->report), "%s: %s", device, msg);
}

static void set_hooks(struct ctx *c)
{
	struct virtio_mmio_hooks h = {.irq = hook_irq, .report = hook_report, .arg = &c->seen};
	virtio_mmio_set_hooks(c->t, &h);
}

static uint32_t rd(struct ctx *c, uint64_t off) { return (uint32_t)mmio_rd(c->vm, BASE + off, 4); }
static void wr(struct ctx *c, uint64_t off, uint32_t v) { mmio_wr(c->vm, BASE + off, v, 4); }

static uint8_t *g(struct ctx *c, uint64_t gpa) { return c->vm->mem + gpa; }

/* The driver side of section 3.1.1: reset, negotiate, set up queue 0, go. */
static void driver_init(struct ctx *c, uint64_t features, uint16_t num)
{
	wr(c, VIRTIO_MMIO_STATUS, 0);
	wr(c, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	wr(c, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)features);
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(features >> 32));
	uint32_t st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
	wr(c, VIRTIO_MMIO_STATUS, st);
	assert_true(rd(c, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK);
	memset(g(c, DESC), 0, 0x3000);
	wr(c, VIRTIO_MMIO_QUEUE_SEL, 0);
	assert_int_equal(rd(c, VIRTIO_MMIO_QUEUE_READY), 0);
	wr(c, VIRTIO_MMIO_QUEUE_NUM, num);
	wr(c, VIRTIO_MMIO_QUEUE_DESC_LOW, DESC);
	wr(c, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
	wr(c, VIRTIO_MMIO_QUEUE_DRIVER_LOW, AVAIL);
	wr(c, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, 0);
	wr(c, VIRTIO_MMIO_QUEUE_DEVICE_LOW, USED);
	wr(c, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, 0);
	wr(c, VIRTIO_MMIO_QUEUE_READY, 1);
	assert_int_equal(rd(c, VIRTIO_MMIO_QUEUE_READY), 1);
	wr(c, VIRTIO_MMIO_STATUS, st | VIRTIO_STATUS_DRIVER_OK);
	assert_int_equal(rd(c, VIRTIO_MMIO_STATUS), st | VIRTIO_STATUS_DRIVER_OK);
	c->num = num;
	c->avail_idx = 0;
}

static void set_desc(struct ctx *c, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	uint8_t *d = g(c, DESC + 16u * i);
	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

/* Makes `head` available and notifies queue 0. */
static void submit(struct ctx *c, uint16_t head)
{
	memcpy(g(c, AVAIL + 4 + 2u * (c->avail_idx % c->num)), &head, 2);
	c->avail_idx++;
	memcpy(g(c, AVAIL + 2), &c->avail_idx, 2);
	wr(c, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
}

static uint16_t used_idx(struct ctx *c)
{
	uint16_t v;
	memcpy(&v, g(c, USED + 2), 2);
	return v;
}

static void used_elem(struct ctx *c, uint16_t i, uint32_t *id, uint32_t *len)
{
	memcpy(id, g(c, USED + 4 + 8u * (i % c->num)), 4);
	memcpy(len, g(c, USED + 8 + 8u * (i % c->num)), 4);
}

/* ---- fixtures ---- */

static int setup_rng(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));
	sl_error_t err = NULL;
	assert_non_null(c);
	c->vm = fake_vm(MEM_SIZE);
	assert_int_equal(virtio_rng_create(c->vm, BASE, GSI, &c->rng, &err), 0);
	assert_null(err);
	c->t = virtio_rng_transport(c->rng);
	set_hooks(c);
	*state = c;
	return 0;
}

#define IMG_SECTORS 64u

static void make_image(struct ctx *c)
{
	snprintf(c->img, sizeof(c->img), "/tmp/sl-unit-blk-XXXXXX");
	int fd = mkstemp(c->img);
	assert_true(fd >= 0);
	uint8_t sec[512];
	for (unsigned s = 0; s < IMG_SECTORS; s++) {
		memset(sec, (int)s, sizeof(sec));
		assert_int_equal(write(fd, sec, sizeof(sec)), (ssize_t)sizeof(sec));
	}
	assert_int_equal(write(fd, "tail", 4), 4); /* partial sector: invisible */
	close(fd);
}

static int blk_common(void **state, bool ro)
{
	struct ctx *c = calloc(1, sizeof(*c));
	sl_error_t err = NULL;
	assert_non_null(c);
	c->vm = fake_vm(MEM_SIZE);
	make_image(c);
	struct virtio_blk_opts o = {.path = c->img, .read_only = ro, .serial = "disk-0"};
	assert_int_equal(virtio_blk_create(c->vm, BASE, GSI, &o, &c->blk, &err), 0);
	assert_null(err);
	c->t = virtio_blk_transport(c->blk);
	set_hooks(c);
	*state = c;
	return 0;
}

static int setup_blk(void **state) { return blk_common(state, false); }
static int setup_blk_ro(void **state) { return blk_common(state, true); }

static int teardown(void **state)
{
	struct ctx *c = *state;
	virtio_rng_free(c->rng);
	virtio_blk_free(c->blk);
	if (c->img[0])
		unlink(c->img);
	free_vm(c->vm);
	free(c);
	return 0;
}

/* ---- transport ---- */

static void test_probe_registers(void **state)
{
	struct ctx *c = *state;
	assert_int_equal(rd(c, VIRTIO_MMIO_MAGIC_VALUE), 0x74726976u);
	assert_int_equal(rd(c, VIRTIO_MMIO_VERSION), 2);
	assert_int_equal(rd(c, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_RNG);
	assert_int_equal(rd(c, VIRTIO_MMIO_VENDOR_ID), VIRTIO_MMIO_VENDOR);
	wr(c, VIRTIO_MMIO_QUEUE_SEL, 0);
	assert_int_equal(rd(c, VIRTIO_MMIO_QUEUE_NUM_MAX), 64);
	wr(c, VIRTIO_MMIO_QUEUE_SEL, 1); /* no such queue */
	assert_int_equal(rd(c, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
	assert_int_equal(rd(c, VIRTIO_MMIO_SHM_LEN_LOW), 0xffffffffu);
	/* Registers take 32-bit accesses only; a byte read yields zero. */
	assert_int_equal(mmio_rd(c->vm, BASE + VIRTIO_MMIO_MAGIC_VALUE, 1), 0);
	/* Past the device, the bus answers all ones. */
	assert_int_equal((uint32_t)mmio_rd(c->vm, BASE + VIRTIO_MMIO_SIZE, 4), 0xffffffffu);
}

static void test_blk_probe_config(void **state)
{
	struct ctx *c = *state;
	assert_int_equal(rd(c, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_BLK);
	assert_int_equal(mmio_rd(c->vm, BASE + VIRTIO_MMIO_CONFIG, 8), IMG_SECTORS);
	assert_int_equal(virtio_blk_capacity(c->blk), IMG_SECTORS);
	assert_int_equal(mmio_rd(c->vm, BASE + VIRTIO_MMIO_CONFIG + 8, 4), VIRTIO_BLK_SIZE_MAX);
	assert_int_equal(mmio_rd(c->vm, BASE + VIRTIO_MMIO_CONFIG + 12, 4), VIRTIO_BLK_SEG_MAX);
	assert_int_equal(mmio_rd(c->vm, BASE + VIRTIO_MMIO_CONFIG + 1, 1), 0); /* 64 = 0x40: high bytes 0 */
	assert_int_equal(mmio_rd(c->vm, BASE + VIRTIO_MMIO_CONFIG, 1), IMG_SECTORS);
	/* Beyond the config space: zeros, not a crash. */
	assert_int_equal(mmio_rd(c->vm, BASE + VIRTIO_MMIO_CONFIG + 22, 4), 0);
	wr(c, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	uint32_t lo = rd(c, VIRTIO_MMIO_DEVICE_FEATURES);
	assert_true(lo & (1u << VIRTIO_BLK_F_FLUSH));
	assert_false(lo & (1u << VIRTIO_BLK_F_RO));
	assert_false(lo & (1u << VIRTIO_F_INDIRECT_DESC));
}

static void test_feature_negotiation(void **state)
{
	struct ctx *c = *state;
	const uint32_t pre = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;

	wr(c, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	assert_int_equal(rd(c, VIRTIO_MMIO_DEVICE_FEATURES), 1); /* VERSION_1 only */
	wr(c, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	assert_int_equal(rd(c, VIRTIO_MMIO_DEVICE_FEATURES), 0);
	wr(c, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 7);
	assert_int_equal(rd(c, VIRTIO_MMIO_DEVICE_FEATURES), 0);

	/* Without VERSION_1 (a legacy driver): FEATURES_OK does not stick. */
	wr(c, VIRTIO_MMIO_STATUS, pre);
	wr(c, VIRTIO_MMIO_STATUS, pre | VIRTIO_STATUS_FEATURES_OK);
	assert_int_equal(rd(c, VIRTIO_MMIO_STATUS), pre);

	/* A feature that was not offered: refused too. */
	wr(c, VIRTIO_MMIO_STATUS, 0);
	wr(c, VIRTIO_MMIO_STATUS, pre);
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES, 1u << VIRTIO_F_INDIRECT_DESC);
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES, 1);
	wr(c, VIRTIO_MMIO_STATUS, pre | VIRTIO_STATUS_FEATURES_OK);
	assert_int_equal(rd(c, VIRTIO_MMIO_STATUS), pre);

	/* The offered subset: accepted, then frozen. */
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES, 0);
	wr(c, VIRTIO_MMIO_STATUS, pre | VIRTIO_STATUS_FEATURES_OK);
	assert_int_equal(rd(c, VIRTIO_MMIO_STATUS), pre | VIRTIO_STATUS_FEATURES_OK);
	assert_int_equal(virtio_mmio_driver_features(c->t), 1ull << VIRTIO_F_VERSION_1);
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES, 4);
	assert_int_equal(virtio_mmio_driver_features(c->t), 1ull << VIRTIO_F_VERSION_1);

	/* Reset clears everything. */
	wr(c, VIRTIO_MMIO_STATUS, 0);
	assert_int_equal(rd(c, VIRTIO_MMIO_STATUS), 0);
	assert_int_equal(virtio_mmio_driver_features(c->t), 0);
}

static void test_queue_setup_validation(void **state)
{
	struct ctx *c = *state;
	driver_init(c, 1ull << VIRTIO_F_VERSION_1, 16);
	/* Layout registers are frozen while ready. */
	wr(c, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x5000);
	wr(c, VIRTIO_MMIO_QUEUE_READY, 0);
	assert_int_equal(rd(c, VIRTIO_MMIO_QUEUE_READY), 0);
	assert_int_equal(c->seen.reports, 0);

	/* Not a power of two. */
	wr(c, VIRTIO_MMIO_QUEUE_NUM, 12);
	wr(c, VIRTIO_MMIO_QUEUE_READY, 1);
	assert_int_equal(rd(c, VIRTIO_MMIO_QUEUE_READY), 0);
	assert_true(rd(c, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
	assert_int_equal(c->seen.reports, 1);
	assert_non_null(strstr(c->seen.report, "power of two"));
	/* NEEDS_RESET with DRIVER_OK: a config change interrupt. */
	assert_int_equal(rd(c, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_INT_CONFIG);
	assert_int_equal(c->seen.level, 1);
	wr(c, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_INT_CONFIG);
	assert_int_equal(c->seen.level, 0);

	/* Larger than QueueNumMax. */
	driver_init(c, 1ull << VIRTIO_F_VERSION_1, 16);
	wr(c, VIRTIO_MMIO_QUEUE_READY, 0);
	wr(c, VIRTIO_MMIO_QUEUE_NUM, 128);
	wr(c, VIRTIO_MMIO_QUEUE_READY, 1);
	assert_int_equal(rd(c, VIRTIO_MMIO_QUEUE_READY), 0);
	assert_true(rd(c, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);

	/* Used ring past the end of RAM. */
	driver_init(c, 1ull << VIRTIO_F_VERSION_1, 16);
	wr(c, VIRTIO_MMIO_QUEUE_READY, 0);
	wr(c, VIRTIO_MMIO_QUEUE_DEVICE_LOW, MEM_SIZE - 64);
	wr(c, VIRTIO_MMIO_QUEUE_READY, 1);
	assert_int_equal(rd(c, VIRTIO_MMIO_QUEUE_READY), 0);
	assert_non_null(strstr(c->seen.report, "outside guest RAM"));

	/* Misaligned descriptor table. */
	driver_init(c, 1ull << VIRTIO_F_VERSION_1, 16);
	wr(c, VIRTIO_MMIO_QUEUE_READY, 0);
	wr(c, VIRTIO_MMIO_QUEUE_DESC_LOW, DESC + 8);
	wr(c, VIRTIO_MMIO_QUEUE_READY, 1);
	assert_int_equal(rd(c, VIRTIO_MMIO_QUEUE_READY), 0);
	assert_non_null(strstr(c->seen.report, "misaligned"));
	/* And after a reset the device works again. */
	driver_init(c, 1ull << VIRTIO_F_VERSION_1, 16);
	assert_false(rd(c, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
}

/* ---- virtio-rng ---- */

static void test_rng_fills_buffers(void **state)
{
	struct ctx *c = *state;
	driver_init(c, 1ull << VIRTIO_F_VERSION_1, 16);
	memset(g(c, BUF), 0, 256);
	set_desc(c, 3, BUF, 32, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 7);
	set_desc(c, 7, BUF + 64, 32, VIRTQ_DESC_F_WRITE, 0);
	submit(c, 3);
	assert_int_equal(used_idx(c), 1);
	uint32_t id, len;
	used_elem(c, 0, &id, &len);
	assert_int_equal(id, 3);
	assert_int_equal(len, 64);
	static const uint8_t zero[32];
	assert_memory_not_equal(g(c, BUF), zero, 32);
	assert_memory_not_equal(g(c, BUF + 64), zero, 32);
	assert_memory_equal(g(c, BUF + 32), zero, 32); /* between the buffers: untouched */
	assert_memory_not_equal(g(c, BUF), g(c, BUF + 64), 32);

	/* Level interrupt: up until acknowledged. */
	assert_int_equal(rd(c, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_INT_VRING);
	assert_int_equal(c->seen.level, 1);
	assert_int_equal(c->seen.raises, 1);
	wr(c, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_INT_VRING);
	assert_int_equal(rd(c, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
	assert_int_equal(c->seen.level, 0);

	/* The driver can suppress interrupts. */
	uint16_t no_int = VIRTQ_AVAIL_F_NO_INTERRUPT;
	memcpy(g(c, AVAIL), &no_int, 2);
	submit(c, 3);
	assert_int_equal(used_idx(c), 2);
	assert_int_equal(rd(c, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
	assert_int_equal(c->seen.raises, 1);
	assert_int_equal(c->seen.reports, 0);

	/* A kick before DRIVER_OK is ignored; DRIVER_OK picks the ring up. */
	const uint32_t st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
	wr(c, VIRTIO_MMIO_STATUS, st);
	submit(c, 3);
	assert_int_equal(used_idx(c), 2);
	wr(c, VIRTIO_MMIO_STATUS, st | VIRTIO_STATUS_DRIVER_OK);
	assert_int_equal(used_idx(c), 3);

	/* After a reset the queue is gone: kicks do nothing. */
	wr(c, VIRTIO_MMIO_STATUS, 0);
	assert_int_equal(rd(c, VIRTIO_MMIO_QUEUE_READY), 0);
	submit(c, 3);
	assert_int_equal(used_idx(c), 3);
}

/* Drives the chain in `setup` and expects NEEDS_RESET, a report naming
 * `what`, and no used element. */
static void expect_malformed(struct ctx *c, uint16_t head, const char *what)
{
	uint16_t before = used_idx(c);
	int reports = c->seen.reports;
	submit(c, head);
	assert_int_equal(used_idx(c), before);
	assert_true(rd(c, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
	assert_int_equal(c->seen.reports, reports + 1);
	if (!strstr(c->seen.report, what))
		fail_msg("report \"%s\" does not mention \"%s\"", c->seen.report, what);
	assert_true(rd(c, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_INT_CONFIG);
	assert_string_equal(virtio_mmio_last_error(c->t), strchr(c->seen.report, ':') + 2);
	/* Further notifications are ignored until the driver resets. */
	submit(c, 0);
	assert_int_equal(used_idx(c), before);
}

static void test_malformed_chains(void **state)
{
	struct ctx *c = *state;
	const uint64_t v1 = 1ull << VIRTIO_F_VERSION_1;

	/* A loop: 0 -> 1 -> 0. */
	driver_init(c, v1, 16);
	set_desc(c, 0, BUF, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	set_desc(c, 1, BUF, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0);
	expect_malformed(c, 0, "loops");

	/* A self loop. */
	driver_init(c, v1, 16);
	set_desc(c, 5, BUF, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 5);
	expect_malformed(c, 5, "loops");

	/* next out of range, head out of range. */
	driver_init(c, v1, 16);
	set_desc(c, 0, BUF, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 99);
	expect_malformed(c, 0, ">= queue size");
	driver_init(c, v1, 16);
	expect_malformed(c, 16, ">= queue size");

	/* Readable after writable. */
	driver_init(c, v1, 16);
	set_desc(c, 0, BUF, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	set_desc(c, 1, BUF + 8, 8, 0, 0);
	expect_malformed(c, 0, "readable after");

	/* Buffer beyond RAM, and one whose length wraps past it. */
	driver_init(c, v1, 16);
	set_desc(c, 0, MEM_SIZE - 4, 8, VIRTQ_DESC_F_WRITE, 0);
	expect_malformed(c, 0, "outside guest RAM");
	driver_init(c, v1, 16);
	set_desc(c, 0, UINT64_MAX - 2, 8, VIRTQ_DESC_F_WRITE, 0);
	expect_malformed(c, 0, "outside guest RAM");

	/* Too long: 17 x 1 MiB (aliasing the same RAM) > 16 MiB. */
	driver_init(c, v1, 32);
	for (uint16_t i = 0; i < 17; i++)
		set_desc(c, i, 0, 1u << 20, VIRTQ_DESC_F_WRITE | (i < 16 ? VIRTQ_DESC_F_NEXT : 0), i + 1);
	expect_malformed(c, 0, "exceeds");

	/* Indirect descriptors are not offered. */
	driver_init(c, v1, 16);
	set_desc(c, 0, BUF, 16, VIRTQ_DESC_F_INDIRECT, 0);
	expect_malformed(c, 0, "indirect");

	/* The driver claims more available buffers than the queue holds. */
	driver_init(c, v1, 16);
	c->avail_idx = 40;
	expect_malformed(c, 0, "ahead");

	/* After all that, a reset gives a working device. */
	driver_init(c, v1, 16);
	set_desc(c, 0, BUF, 16, VIRTQ_DESC_F_WRITE, 0);
	submit(c, 0);
	assert_int_equal(used_idx(c), 1);
}

/* ---- virtio-blk ---- */

enum { D_HDR = 0, D_DATA = 1, D_STATUS = 2 };
#define HDR_GPA BUF
#define DATA_GPA (BUF + 0x1000)
#define STATUS_GPA (BUF + 0x800)

/* One request as Linux builds it: header, optional data, status. Returns
 * the status byte, and the used length through *used_len. */
static uint8_t blk_req(struct ctx *c, uint32_t type, uint64_t sector, uint32_t data_len, bool data_writable,
		       uint32_t *used_len)
{
	uint8_t hdr[16] = {0};
	memcpy(hdr, &type, 4);
	memcpy(hdr + 8, &sector, 8);
	memcpy(g(c, HDR_GPA), hdr, 16);
	*g(c, STATUS_GPA) = 0xee;
	set_desc(c, D_HDR, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, data_len ? D_DATA : D_STATUS);
	if (data_len)
		set_desc(c, D_DATA, DATA_GPA, data_len, VIRTQ_DESC_F_NEXT | (data_writable ? VIRTQ_DESC_F_WRITE : 0),
			 D_STATUS);
	set_desc(c, D_STATUS, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	uint16_t before = used_idx(c);
	submit(c, D_HDR);
	assert_int_equal(used_idx(c), (uint16_t)(before + 1));
	uint32_t id;
	used_elem(c, before, &id, used_len);
	assert_int_equal(id, D_HDR);
	return *g(c, STATUS_GPA);
}

static void read_image(struct ctx *c, uint64_t sector, uint8_t *out, size_t len)
{
	int fd = open(c->img, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, out, len, (off_t)(sector * 512)), (ssize_t)len);
	close(fd);
}

static void test_blk_read_write_flush_id(void **state)
{
	struct ctx *c = *state;
	uint32_t len;
	uint8_t want[1024], got[1024];

	driver_init(c, (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_BLK_F_FLUSH), VIRTIO_BLK_QUEUE_SIZE);

	/* Read sectors 2-3. */
	assert_int_equal(blk_req(c, VIRTIO_BLK_T_IN, 2, 1024, true, &len), VIRTIO_BLK_S_OK);
	assert_int_equal(len, 1025);
	memset(want, 2, 512);
	memset(want + 512, 3, 512);
	assert_memory_equal(g(c, DATA_GPA), want, 1024);

	/* Write sector 5, read it back from the file. */
	for (unsigned i = 0; i < 512; i++)
		g(c, DATA_GPA)[i] = (uint8_t)(i * 7);
	assert_int_equal(blk_req(c, VIRTIO_BLK_T_OUT, 5, 512, false, &len), VIRTIO_BLK_S_OK);
	assert_int_equal(len, 1);
	read_image(c, 5, got, 512);
	assert_memory_equal(got, g(c, DATA_GPA), 512);

	/* The last sector is readable; one past it is not; nor a range that
	 * starts inside and ends outside. */
	assert_int_equal(blk_req(c, VIRTIO_BLK_T_IN, IMG_SECTORS - 1, 512, true, &len), VIRTIO_BLK_S_OK);
	assert_int_equal(blk_req(c, VIRTIO_BLK_T_IN, IMG_SECTORS, 512, true, &len), VIRTIO_BLK_S_IOERR);
	assert_int_equal(blk_req(c, VIRTIO_BLK_T_OUT, IMG_SECTORS - 1, 1024, false, &len), VIRTIO_BLK_S_IOERR);
	assert_int_equal(blk_req(c, VIRTIO_BLK_T_IN, UINT64_MAX, 512, true, &len), VIRTIO_BLK_S_IOERR);
	/* Data the wrong way round: a read with readable data, a write with
	 * writable data. */
	assert_int_equal(blk_req(c, VIRTIO_BLK_T_IN, 0, 512, false, &len), VIRTIO_BLK_S_IOERR);
	assert_int_equal(len, 1);
	assert_int_equal(blk_req(c, VIRTIO_BLK_T_OUT, 0, 512, true, &len), VIRTIO_BLK_S_IOERR);
	/* Not a whole number of sectors. */
	assert_int_equal(blk_req(c, VIRTIO_BLK_T_IN, 0, 100, true, &len), VIRTIO_BLK_S_IOERR);

	assert_int_equal(blk_req(c, VIRTIO_BLK_T_FLUSH, 0, 0, false, &len), VIRTIO_BLK_S_OK);
	assert_int_equal(len, 1);

	memset(g(c, DATA_GPA), 0x55, 20);
	assert_int_equal(blk_req(c, VIRTIO_BLK_T_GET_ID, 0, VIRTIO_BLK_ID_BYTES, true, &len), VIRTIO_BLK_S_OK);
	assert_int_equal(len, 21);
	uint8_t id[20] = "disk-0";
	assert_memory_equal(g(c, DATA_GPA), id, 20);

	/* Unknown request types (discard: not offered). */
	assert_int_equal(blk_req(c, 11, 0, 0, false, &len), VIRTIO_BLK_S_UNSUPP);

	/* A request split in odd places (header in two pieces, data in
	 * three) is the same request: framing is not meaning. */
	uint8_t hdr[16] = {0};
	uint64_t sector = 7;
	memcpy(hdr + 8, &sector, 8);
	memcpy(g(c, HDR_GPA), hdr, 16);
	set_desc(c, 10, HDR_GPA, 5, VIRTQ_DESC_F_NEXT, 11);
	set_desc(c, 11, HDR_GPA + 5, 11, VIRTQ_DESC_F_NEXT, 12);
	set_desc(c, 12, DATA_GPA, 100, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 13);
	set_desc(c, 13, DATA_GPA + 100, 400, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 14);
	set_desc(c, 14, DATA_GPA + 500, 13, VIRTQ_DESC_F_WRITE, 0); /* 12 data bytes + status */
	memset(g(c, DATA_GPA), 0, 1024);
	submit(c, 10);
	memset(want, 7, 512);
	assert_memory_equal(g(c, DATA_GPA), want, 512);
	assert_int_equal(*g(c, DATA_GPA + 512), VIRTIO_BLK_S_OK);
	assert_int_equal(c->seen.reports, 0);
}

static void test_blk_read_only(void **state)
{
	struct ctx *c = *state;
	uint32_t len;
	uint8_t before[512], after[512];

	wr(c, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	assert_true(rd(c, VIRTIO_MMIO_DEVICE_FEATURES) & (1u << VIRTIO_BLK_F_RO));
	driver_init(c, (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_BLK_F_RO), VIRTIO_BLK_QUEUE_SIZE);
	read_image(c, 4, before, 512);
	memset(g(c, DATA_GPA), 0xab, 512);
	assert_int_equal(blk_req(c, VIRTIO_BLK_T_OUT, 4, 512, false, &len), VIRTIO_BLK_S_IOERR);
	read_image(c, 4, after, 512);
	assert_memory_equal(before, after, 512);
	assert_int_equal(blk_req(c, VIRTIO_BLK_T_IN, 4, 512, true, &len), VIRTIO_BLK_S_OK);
	assert_memory_equal(g(c, DATA_GPA), before, 512);
}

static void test_blk_malformed_request(void **state)
{
	struct ctx *c = *state;
	driver_init(c, 1ull << VIRTIO_F_VERSION_1, VIRTIO_BLK_QUEUE_SIZE);
	/* A header of 8 bytes. */
	set_desc(c, 0, HDR_GPA, 8, VIRTQ_DESC_F_NEXT, 1);
	set_desc(c, 1, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	expect_malformed(c, 0, "readable");
	/* No status byte. */
	driver_init(c, 1ull << VIRTIO_F_VERSION_1, VIRTIO_BLK_QUEUE_SIZE);
	set_desc(c, 0, HDR_GPA, 16, 0, 0);
	expect_malformed(c, 0, "writable");
}

static void test_blk_create_errors(void **state)
{
	struct ctx *c = *state;
	sl_error_t err = NULL;
	struct virtio_blk *b = NULL;
	struct virtio_blk_opts o = {.path = "/nonexistent/sl-unit.img"};

	assert_int_equal(virtio_blk_create(c->vm, BASE + 0x1000, GSI + 1, &o, &b, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "/nonexistent/sl-unit.img"));
	sl_error_free(&err);
	/* The image is already held read-write by the fixture's device. */
	o.path = c->img;
	assert_int_equal(virtio_blk_create(c->vm, BASE + 0x1000, GSI + 1, &o, &b, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "lock"));
	sl_error_free(&err);
	o.read_only = true;
	assert_int_equal(virtio_blk_create(c->vm, BASE + 0x1000, GSI + 1, &o, &b, &err), -1);
	sl_error_free(&err);
	o.path = "/dev/null"; /* neither a file nor a block device */
	assert_int_equal(virtio_blk_create(c->vm, BASE + 0x1000, GSI + 1, &o, &b, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "not a regular file"));
	sl_error_free(&err);
	/* A serial longer than GET_ID can answer. */
	o.path = c->img;
	o.read_only = false;
	o.serial = "123456789012345678901";
	assert_int_equal(virtio_blk_create(c->vm, BASE + 0x2000, GSI + 1, &o, &b, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "longer than"));
	sl_error_free(&err);
}

/* ---- capture / restore ---- */

static void test_state_round_trip(void **state)
{
	struct ctx *c = *state;
	sl_error_t err = NULL;
	struct virtio_mmio_state_v1 s, s2;

	driver_init(c, 1ull << VIRTIO_F_VERSION_1, 16);
	set_desc(c, 0, BUF, 16, VIRTQ_DESC_F_WRITE, 0);
	for (int i = 0; i < 3; i++)
		submit(c, 0);
	assert_int_equal(used_idx(c), 3);
	assert_int_equal(virtio_mmio_save(c->t, &s, &err), 0);
	assert_int_equal(s.version, VIRTIO_MMIO_STATE_VERSION);
	assert_int_equal(s.queue[0].last_avail_idx, 3);
	assert_int_equal(s.queue[0].used_idx, 3);
	assert_int_equal(s.queue[0].num, 16);
	assert_int_equal(s.interrupt_status, VIRTIO_INT_VRING);

	/* A second VM: same RAM contents, a fresh device, the saved state. */
	struct ctx c2 = {.num = c->num, .avail_idx = c->avail_idx};
	c2.vm = fake_vm(MEM_SIZE);
	memcpy(c2.vm->mem, c->vm->mem, MEM_SIZE);
	assert_int_equal(virtio_rng_create(c2.vm, BASE, GSI, &c2.rng, &err), 0);
	c2.t = virtio_rng_transport(c2.rng);
	set_hooks(&c2);
	assert_int_equal(virtio_mmio_load(c2.t, &s, &err), 0);
	assert_null(err);
	assert_int_equal(virtio_mmio_save(c2.t, &s2, &err), 0);
	assert_memory_equal(&s, &s2, sizeof(s));
	/* The pending interrupt is re-asserted on request. */
	assert_int_equal(c2.seen.level, 0);
	virtio_mmio_sync_irq(c2.t);
	assert_int_equal(c2.seen.level, 1);
	/* And the restored queue carries on where it was. */
	submit(&c2, 0);
	assert_int_equal(used_idx(&c2), 4);
	assert_int_equal(rd(&c2, VIRTIO_MMIO_STATUS), s.status);

	/* Load validation: each of these is refused and changes nothing. */
	struct virtio_mmio_state_v1 bad;
	bad = s, bad.version = 2;
	assert_int_equal(virtio_mmio_load(c2.t, &bad, &err), -1);
	assert_int_equal(err->code, SL_E_UNSUPPORTED);
	sl_error_free(&err);
	bad = s, bad.device_id = VIRTIO_ID_BLK;
	assert_int_equal(virtio_mmio_load(c2.t, &bad, &err), -1);
	sl_error_free(&err);
	bad = s, bad.queue[0].num = 24;
	assert_int_equal(virtio_mmio_load(c2.t, &bad, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "power of two"));
	sl_error_free(&err);
	bad = s, bad.queue[0].num = 128; /* > QueueNumMax 64 */
	assert_int_equal(virtio_mmio_load(c2.t, &bad, &err), -1);
	sl_error_free(&err);
	bad = s, bad.queue[0].used = MEM_SIZE;
	assert_int_equal(virtio_mmio_load(c2.t, &bad, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "outside guest RAM"));
	sl_error_free(&err);
	bad = s, bad.driver_features |= 1; /* with FEATURES_OK: not offered */
	assert_int_equal(virtio_mmio_load(c2.t, &bad, &err), -1);
	sl_error_free(&err);
	bad = s, bad.queue[0].ready = 2;
	assert_int_equal(virtio_mmio_load(c2.t, &bad, &err), -1);
	sl_error_free(&err);
	bad = s, bad.status |= 0x20;
	assert_int_equal(virtio_mmio_load(c2.t, &bad, &err), -1);
	sl_error_free(&err);
	bad = s, bad.queue[1].num = 16; /* the rng has one queue */
	assert_int_equal(virtio_mmio_load(c2.t, &bad, &err), -1);
	sl_error_free(&err);
	assert_int_equal(virtio_mmio_save(c2.t, &s2, &err), 0);
	assert_int_equal(s2.queue[0].last_avail_idx, 4);

	virtio_rng_free(c2.rng);
	free_vm(c2.vm);
}

/* Whatever a guest can write must survive save + load: junk status bits,
 * unoffered features before FEATURES_OK, a bad size on a disabled queue,
 * a device in NEEDS_RESET. (The fuzzer found the first version refusing.) */
static void test_guest_reachable_states_load(void **state)
{
	struct ctx *c = *state;
	sl_error_t err = NULL;
	struct virtio_mmio_state_v1 s;

	wr(c, VIRTIO_MMIO_STATUS, 0xff);
	/* FEATURES_OK refused (no VERSION_1), undefined bits and NEEDS_RESET dropped */
	assert_int_equal(rd(c, VIRTIO_MMIO_STATUS), 0x87);
	wr(c, VIRTIO_MMIO_STATUS, 0);
	wr(c, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	wr(c, VIRTIO_MMIO_DRIVER_FEATURES, 0xffffffffu);
	wr(c, VIRTIO_MMIO_QUEUE_SEL, 0);
	wr(c, VIRTIO_MMIO_QUEUE_NUM, 1000);
	wr(c, VIRTIO_MMIO_QUEUE_DESC_LOW, 0xfffffff1u);
	wr(c, VIRTIO_MMIO_QUEUE_SEL, 77);
	assert_int_equal(virtio_mmio_save(c->t, &s, &err), 0);
	assert_int_equal(virtio_mmio_load(c->t, &s, &err), 0);
	assert_null(err);

	driver_init(c, 1ull << VIRTIO_F_VERSION_1, 16);
	set_desc(c, 0, BUF, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0);
	expect_malformed(c, 0, "loops");
	assert_int_equal(virtio_mmio_save(c->t, &s, &err), 0);
	assert_int_equal(virtio_mmio_load(c->t, &s, &err), 0);
	assert_true(rd(c, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
}

/* An asynchronous device (none exists yet) holding a request: save must
 * refuse until it completes. */
struct slow_dev {
	struct virtq_chain chain;
	bool held;
};

static void slow_notify(struct virtio_mmio *t, void *dev, unsigned queue)
{
	struct slow_dev *d = dev;
	if (virtio_mmio_pop(t, queue, &d->chain) == 1)
		d->held = true;
}

static const struct virtio_dev_ops slow_ops = {
	.name = "slow",
	.device_id = 42,
	.nqueues = 1,
	.queue_max = 16,
	.notify = slow_notify,
};

static void test_save_refuses_in_flight(void **state)
{
	(void)state;
	struct ctx c = {0};
	struct slow_dev d = {0};
	sl_error_t err = NULL;
	struct virtio_mmio_state_v1 s;

	c.vm = fake_vm(MEM_SIZE);
	assert_int_equal(virtio_mmio_register(c.vm, BASE, GSI, &slow_ops, &d, &c.t, &err), 0);
	set_hooks(&c);
	driver_init(&c, 1ull << VIRTIO_F_VERSION_1, 16);
	set_desc(&c, 0, BUF, 16, VIRTQ_DESC_F_WRITE, 0);
	submit(&c, 0);
	assert_true(d.held);
	assert_int_equal(virtio_mmio_save(c.t, &s, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "in flight"));
	sl_error_free(&err);
	virtio_mmio_lock(c.t);
	virtio_mmio_push(c.t, 0, d.chain.head, 0);
	virtio_mmio_unlock(c.t);
	assert_int_equal(used_idx(&c), 1);
	assert_int_equal(virtio_mmio_save(c.t, &s, &err), 0);

	/* Invalid device descriptions are refused at registration. */
	struct virtio_dev_ops bad = slow_ops;
	struct virtio_mmio *t2;
	bad.queue_max = 12;
	assert_int_equal(virtio_mmio_register(c.vm, BASE + 0x1000, GSI, &bad, &d, &t2, &err), -1);
	sl_error_free(&err);
	bad = slow_ops;
	bad.nqueues = VIRTIO_MMIO_MAX_QUEUES + 1;
	assert_int_equal(virtio_mmio_register(c.vm, BASE + 0x1000, GSI, &bad, &d, &t2, &err), -1);
	sl_error_free(&err);
	/* Inside RAM: the bus refuses. */
	assert_int_equal(virtio_mmio_register(c.vm, 0x1000, GSI, &slow_ops, &d, &t2, &err), -1);
	sl_error_free(&err);

	virtio_mmio_free(c.t);
	free_vm(c.vm);
}

/* ---- the pure chain parser, directly ---- */

static void *buf_map(void *ctx, uint64_t gpa, uint64_t len)
{
	struct vmm_vm *vm = ctx;
	return vmm_gpa(vm, gpa, len);
}

static void test_chain_helpers(void **state)
{
	(void)state;
	struct vmm_vm *vm = fake_vm(MEM_SIZE);
	struct virtio_gmem m = {.map = buf_map, .ctx = vm};
	struct virtq q = {.desc = DESC, .avail = AVAIL, .used = USED, .num = 8, .ready = true};
	static struct virtq_chain ch;
	sl_error_t err = NULL;
	struct ctx c = {.vm = vm, .num = 8};

	assert_int_equal(virtq_check_layout(&q, 8, &m, &err), 0);
	set_desc(&c, 0, BUF, 4, VIRTQ_DESC_F_NEXT, 1);
	set_desc(&c, 1, BUF + 100, 6, VIRTQ_DESC_F_NEXT, 2);
	set_desc(&c, 2, BUF + 200, 5, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 3);
	set_desc(&c, 3, BUF + 300, 0, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 4); /* zero length */
	set_desc(&c, 4, BUF + 400, 5, VIRTQ_DESC_F_WRITE, 0);
	assert_int_equal(virtq_walk(&q, &m, 0, &ch, &err), 0);
	assert_int_equal(ch.nread, 2);
	assert_int_equal(ch.nwrite, 3);
	assert_int_equal(ch.read_bytes, 10);
	assert_int_equal(ch.write_bytes, 10);

	memcpy(vm->mem + BUF, "abcd", 4);
	memcpy(vm->mem + BUF + 100, "efghij", 6);
	char out[16] = {0};
	assert_int_equal(virtq_chain_read(&ch, 2, out, sizeof(out)), 8);
	assert_string_equal(out, "cdefghij");
	assert_int_equal(virtq_chain_write(&ch, 3, "0123456789", 10), 7);
	assert_memory_equal(vm->mem + BUF + 203, "01", 2);
	assert_memory_equal(vm->mem + BUF + 400, "23456", 5);

	struct iovec iov[VIRTQ_MAX_SIZE];
	assert_int_equal(virtq_chain_iov(&ch, true, 4, 3, iov, VIRTQ_MAX_SIZE), 2);
	assert_ptr_equal(iov[0].iov_base, vm->mem + BUF + 204);
	assert_int_equal(iov[0].iov_len, 1);
	assert_int_equal(iov[1].iov_len, 2);
	assert_int_equal(virtq_chain_iov(&ch, false, 0, 11, iov, VIRTQ_MAX_SIZE), -1);
	assert_int_equal(virtq_chain_iov(&ch, false, 10, 0, iov, VIRTQ_MAX_SIZE), 0);

	/* Empty ring, then one chain, then push. */
	assert_int_equal(virtq_pop(&q, &m, &ch, &err), 0);
	uint16_t one = 1;
	memcpy(vm->mem + AVAIL + 2, &one, 2);
	assert_int_equal(virtq_pop(&q, &m, &ch, &err), 1);
	assert_int_equal(q.last_avail_idx, 1);
	assert_int_equal(virtq_push(&q, &m, ch.head, 10, &err), 0);
	assert_int_equal(virtq_push(&q, &m, 8, 10, &err), -1); /* head out of range */
	sl_error_free(&err);
	uint16_t uidx;
	memcpy(&uidx, vm->mem + USED + 2, 2);
	assert_int_equal(uidx, 1);
	free_vm(vm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_probe_registers, setup_rng, teardown),
		cmocka_unit_test_setup_teardown(test_feature_negotiation, setup_rng, teardown),
		cmocka_unit_test_setup_teardown(test_queue_setup_validation, setup_rng, teardown),
		cmocka_unit_test_setup_teardown(test_rng_fills_buffers, setup_rng, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_chains, setup_rng, teardown),
		cmocka_unit_test_setup_teardown(test_blk_probe_config, setup_blk, teardown),
		cmocka_unit_test_setup_teardown(test_blk_read_write_flush_id, setup_blk, teardown),
		cmocka_unit_test_setup_teardown(test_blk_read_only, setup_blk_ro, teardown),
		cmocka_unit_test_setup_teardown(test_blk_malformed_request, setup_blk, teardown),
		cmocka_unit_test_setup_teardown(test_blk_create_errors, setup_blk, teardown),
		cmocka_unit_test_setup_teardown(test_state_round_trip, setup_rng, teardown),
		cmocka_unit_test_setup_teardown(test_guest_reachable_states_load, setup_rng, teardown),
		cmocka_unit_test(test_save_refuses_in_flight),
		cmocka_unit_test(test_chain_helpers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
