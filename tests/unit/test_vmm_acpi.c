/* Unit tests for the ACPI tables (vmm/src/acpi.c, acpi_aml.c), checked by hand and by iasl's disassembler. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "acpi.h"
#include "test_util.h"

#ifndef IASL
#define IASL "/usr/bin/iasl" /* the path scripts/setup installs (acpica-tools) */
#endif
#define GPA 0xe0000ull

static const struct acpi_virtio_mmio three[] = {
	{.base = 0xd0000000, .size = 0x1000, .gsi = 5, .level = false},
	{.base = 0xd0001000, .size = 0x1000, .gsi = 6, .level = true},
	{.base = 0xd0002000, .size = 0x1000, .gsi = 7, .level = false},
};

static struct acpi_config default_cfg(void)
{
	return (struct acpi_config){
		.vcpus = 2,
		.virtio = three,
		.nvirtio = 3,
		.vmgenid = true,
		.vmgenid_gsi = 9,
	};
}

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return le32(p) | (uint64_t)le32(p + 4) << 32;
}

static unsigned sum8(const uint8_t *p, size_t n)
{
	unsigned s = 0;
	for (size_t i = 0; i < n; i++)
		s += p[i];
	return s & 0xff;
}

static void build(const struct acpi_config *cfg, uint8_t *buf, size_t cap, struct acpi_layout *l)
{
	sl_error_t err = NULL;
	if (acpi_build(cfg, buf, cap, GPA, l, &err) < 0)
		fail_msg("acpi_build: %s", sl_error_msg(err));
	assert_null(err);
	assert_true(l->size <= cap);
}

/* The table at gpa, checked: signature, revision, length inside the used
 * area, checksum 0 mod 256. Returns its length through *len. */
static const uint8_t *table(const uint8_t *buf, const struct acpi_layout *l, uint64_t gpa, const char *sig,
			    uint8_t rev, uint32_t *len)
{
	const uint8_t *t;

	assert_true(gpa >= GPA && gpa - GPA + 36 <= l->size);
	assert_int_equal(gpa % 8, 0);
	t = buf + (gpa - GPA);
	if (memcmp(t, sig, 4) != 0)
		fail_msg("table at 0x%llx is %.4s, want %s", (unsigned long long)gpa, (const char *)t, sig);
	*len = le32(t + 4);
	assert_true(*len >= 36 && gpa - GPA + *len <= l->size);
	assert_int_equal(t[8], rev);
	if (sum8(t, *len) != 0)
		fail_msg("%s checksum: bytes sum to 0x%02x", sig, sum8(t, *len));
	assert_memory_equal(t + 10, "SPORE ", 6);
	return t;
}

static void assert_layout_equal(const struct acpi_layout *a, const struct acpi_layout *b)
{
	assert_int_equal(a->size, b->size);
	assert_int_equal(a->rsdp_gpa, b->rsdp_gpa);
	assert_int_equal(a->xsdt_gpa, b->xsdt_gpa);
	assert_int_equal(a->fadt_gpa, b->fadt_gpa);
	assert_int_equal(a->madt_gpa, b->madt_gpa);
	assert_int_equal(a->dsdt_gpa, b->dsdt_gpa);
	assert_int_equal(a->vmgenid_gpa, b->vmgenid_gpa);
	assert_int_equal(a->sleep_port, b->sleep_port);
}

static bool contains(const uint8_t *p, size_t n, const char *s)
{
	return memmem(p, n, s, strlen(s)) != NULL;
}

/* ---- structure, checksums, pointers ---- */

static void test_rsdp_xsdt(void **state)
{
	(void)state;
	static uint8_t buf[ACPI_TABLES_MAX_SIZE];
	struct acpi_config cfg = default_cfg();
	struct acpi_layout l;
	const uint8_t *x;
	uint32_t len;

	build(&cfg, buf, sizeof(buf), &l);
	assert_int_equal(l.rsdp_gpa, GPA);
	assert_memory_equal(buf, "RSD PTR ", 8);
	assert_int_equal(sum8(buf, 20), 0);
	assert_int_equal(sum8(buf, 36), 0);
	assert_int_equal(buf[15], 2);
	assert_memory_equal(buf + 9, "SPORE ", 6);
	assert_int_equal(le32(buf + 16), 0);
	assert_int_equal(le32(buf + 20), 36);
	assert_int_equal(le64(buf + 24), l.xsdt_gpa);

	x = table(buf, &l, l.xsdt_gpa, "XSDT", 1, &len);
	assert_int_equal(len, 36 + 2 * 8);
	assert_int_equal(le64(x + 36), l.fadt_gpa);
	assert_int_equal(le64(x + 44), l.madt_gpa);
	table(buf, &l, le64(x + 36), "FACP", 6, &len);
	table(buf, &l, le64(x + 44), "APIC", 5, &len);
	/* The tables do not overlap and the DSDT ends the area. */
	assert_true(l.xsdt_gpa + 52 <= l.fadt_gpa);
	assert_true(l.fadt_gpa + 276 <= l.madt_gpa);
	table(buf, &l, l.dsdt_gpa, "DSDT", 2, &len);
	assert_int_equal(l.dsdt_gpa + len, GPA + l.size);
	assert_true(l.size <= ACPI_TABLES_MAX_SIZE);
}

static void test_fadt(void **state)
{
	(void)state;
	static uint8_t buf[ACPI_TABLES_MAX_SIZE];
	struct acpi_config cfg = default_cfg();
	struct acpi_layout l;
	const uint8_t *f;
	uint32_t len, flags;

	cfg.sleep_port = 0x600;
	build(&cfg, buf, sizeof(buf), &l);
	assert_int_equal(l.sleep_port, 0x600);
	f = table(buf, &l, l.fadt_gpa, "FACP", 6, &len);
	assert_int_equal(len, 276);
	assert_int_equal(f[131], 3); /* FADT minor version: ACPI 6.3 */
	flags = le32(f + 112);
	assert_true(flags & (1u << 20)); /* HW_REDUCED_ACPI */
	assert_true(flags & (1u << 10)); /* RESET_REG_SUP */
	/* IAPC_BOOT_ARCH: no legacy devices, no 8042 */
	assert_int_equal(le16(f + 109) & 3, 0);
	assert_int_equal(le64(f + 140), l.dsdt_gpa); /* X_DSDT */
	assert_int_equal(le32(f + 36), 0);           /* no FACS */
	/* RESET_REG, SLEEP_CONTROL_REG, SLEEP_STATUS_REG: 8-bit I/O at the port */
	static const unsigned gas[] = {116, 244, 256};
	for (unsigned i = 0; i < 3; i++) {
		const uint8_t *g = f + gas[i];
		assert_int_equal(g[0], 1);
		assert_int_equal(g[1], 8);
		assert_int_equal(g[2], 0);
		assert_int_equal(g[3], 1);
		assert_int_equal(le64(g + 4), 0x600);
	}
	assert_int_equal(f[128], ACPI_RESET_VALUE);

	cfg.sleep_port = 0;
	build(&cfg, buf, sizeof(buf), &l);
	assert_int_equal(l.sleep_port, ACPI_SLEEP_PORT_DEFAULT);
	f = table(buf, &l, l.fadt_gpa, "FACP", 6, &len);
	assert_int_equal(le64(f + 244 + 4), ACPI_SLEEP_PORT_DEFAULT);
}

static void test_madt(void **state)
{
	(void)state;
	static uint8_t buf[ACPI_TABLES_MAX_SIZE];
	static const unsigned counts[] = {1, 2, 7, 16, ACPI_MAX_VCPUS};
	struct acpi_config cfg = default_cfg();
	struct acpi_layout l;

	for (unsigned c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
		const uint8_t *m, *e;
		uint32_t len;
		unsigned lapics = 0, ioapics = 0, isos = 0;

		cfg.vcpus = counts[c];
		build(&cfg, buf, sizeof(buf), &l);
		m = table(buf, &l, l.madt_gpa, "APIC", 5, &len);
		assert_int_equal(le32(m + 36), 0xfee00000);
		for (e = m + 44; e < m + len; e += e[1]) {
			assert_true(e[1] >= 2 && e + e[1] <= m + len);
			switch (e[0]) {
			case 0: /* processor local APIC */
				assert_int_equal(e[1], 8);
				assert_int_equal(e[2], lapics); /* UID */
				assert_int_equal(e[3], lapics); /* APIC id = vCPU index */
				assert_int_equal(le32(e + 4) & 1, 1);
				lapics++;
				break;
			case 1: /* IOAPIC */
				assert_int_equal(e[1], 12);
				assert_int_equal(e[2], 0);
				assert_int_equal(le32(e + 4), 0xfec00000);
				assert_int_equal(le32(e + 8), 0);
				ioapics++;
				break;
			case 2: /* interrupt source override: COM1's IRQ 4, edge, high */
				assert_int_equal(e[1], 10);
				assert_int_equal(e[2], 0);
				assert_int_equal(e[3], 4);
				assert_int_equal(le32(e + 4), 4);
				assert_int_equal(e[8] | (e[9] << 8), 0x5);
				isos++;
				break;
			default:
				fail_msg("unexpected MADT entry type %u", e[0]);
			}
		}
		assert_ptr_equal(e, m + len);
		assert_int_equal(lapics, counts[c]);
		assert_int_equal(ioapics, 1);
		assert_int_equal(isos, 1);
	}
}

/* ---- DSDT ---- */

static void test_dsdt_contents(void **state)
{
	(void)state;
	static uint8_t buf[ACPI_TABLES_MAX_SIZE];
	struct acpi_config cfg = default_cfg();
	struct acpi_layout l;
	const uint8_t *d;
	uint32_t len;
	/* Memory32Fixed(ReadWrite, 0xd0001000, 0x1000) then Interrupt(Level) {6} */
	static const uint8_t crs1[] = {0x86, 0x09, 0x00, 0x01, 0x00, 0x10, 0x00, 0xd0, 0x00, 0x10, 0x00, 0x00,
				       0x89, 0x06, 0x00, 0x01, 0x01, 0x06, 0x00, 0x00, 0x00, 0x79, 0x00};
	/* the same device 2 is edge-triggered: flags 0x03 */
	static const uint8_t irq2[] = {0x89, 0x06, 0x00, 0x03, 0x01, 0x07, 0x00, 0x00, 0x00};

	build(&cfg, buf, sizeof(buf), &l);
	d = table(buf, &l, l.dsdt_gpa, "DSDT", 2, &len);
	static const char *const want[] = {"_S5_", "_SB_", "V000", "V001", "V002", "LNRO0005", "_CRS",
					   "VGEN", "QEMUVGID", "VM_GEN_COUNTER", "ADDR", "GED0", "ACPI0013",
					   "_EVT", "COM1", "PNP0501"};
	for (unsigned i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (!contains(d, len, want[i]))
			fail_msg("DSDT lacks %s", want[i]);
	assert_false(contains(d, len, "V003"));
	assert_non_null(memmem(d, len, crs1, sizeof(crs1)));
	assert_non_null(memmem(d, len, irq2, sizeof(irq2)));
	/* \_S5_ = Package(4){5, 0, 0, 0}: NameOp, name, PackageOp, len, count, ByteConst 5 */
	static const uint8_t s5[] = {0x08, '_', 'S', '5', '_', 0x12, 0x07, 0x04, 0x0a, ACPI_S5_SLP_TYP, 0, 0, 0};
	assert_non_null(memmem(d, len, s5, sizeof(s5)));
}

/* ADDR returns Package(2){DWord low, DWord high}. */
static uint64_t dsdt_vmgenid_addr(const uint8_t *d, uint32_t len)
{
	static const uint8_t pre[] = {'A', 'D', 'D', 'R', 0x00, 0xa4, 0x12, 0x0c, 0x02, 0x0c};
	const uint8_t *p = memmem(d, len, pre, sizeof(pre));
	assert_non_null(p);
	p += sizeof(pre);
	assert_int_equal(p[4], 0x0c);
	return le32(p) | (uint64_t)le32(p + 5) << 32;
}

static void test_vmgenid(void **state)
{
	(void)state;
	static uint8_t buf[ACPI_TABLES_MAX_SIZE];
	struct acpi_config cfg = default_cfg();
	struct acpi_layout l;
	const uint8_t *d;
	uint32_t len;
	static const uint8_t zero[16];

	/* In the table buffer: 16 zero bytes outside every table. */
	build(&cfg, buf, sizeof(buf), &l);
	assert_true(l.vmgenid_gpa >= GPA + 36 && l.vmgenid_gpa + 16 <= l.xsdt_gpa);
	assert_int_equal(l.vmgenid_gpa % 16, 0);
	assert_memory_equal(buf + (l.vmgenid_gpa - GPA), zero, 16);
	d = table(buf, &l, l.dsdt_gpa, "DSDT", 2, &len);
	assert_int_equal(dsdt_vmgenid_addr(d, len), l.vmgenid_gpa);

	/* Elsewhere, above 4 GiB: both halves are used. */
	cfg.vmgenid_gpa = 0x123456789ff0ull;
	build(&cfg, buf, sizeof(buf), &l);
	assert_int_equal(l.vmgenid_gpa, 0x123456789ff0ull);
	d = table(buf, &l, l.dsdt_gpa, "DSDT", 2, &len);
	assert_int_equal(dsdt_vmgenid_addr(d, len), 0x123456789ff0ull);

	/* No notification GSI: no GED. */
	cfg.vmgenid_gsi = 0;
	build(&cfg, buf, sizeof(buf), &l);
	d = table(buf, &l, l.dsdt_gpa, "DSDT", 2, &len);
	assert_true(contains(d, len, "VM_GEN_COUNTER"));
	assert_false(contains(d, len, "ACPI0013"));

	/* No VMGenID at all. */
	cfg = default_cfg();
	cfg.vmgenid = false;
	cfg.vmgenid_gsi = 0;
	build(&cfg, buf, sizeof(buf), &l);
	assert_int_equal(l.vmgenid_gpa, 0);
	d = table(buf, &l, l.dsdt_gpa, "DSDT", 2, &len);
	assert_false(contains(d, len, "VM_GEN_COUNTER"));
	assert_false(contains(d, len, "ACPI0013"));
	assert_true(contains(d, len, "LNRO0005"));
}

static void test_deterministic_and_measure(void **state)
{
	(void)state;
	static uint8_t a[ACPI_TABLES_MAX_SIZE], b[ACPI_TABLES_MAX_SIZE];
	struct acpi_config cfg = default_cfg();
	struct acpi_layout la, lb, lm;
	sl_error_t err = NULL;

	memset(a, 0x5a, sizeof(a));
	memset(b, 0xa5, sizeof(b));
	build(&cfg, a, sizeof(a), &la);
	build(&cfg, b, sizeof(b), &lb);
	assert_layout_equal(&la, &lb);
	assert_memory_equal(a, b, la.size);

	assert_int_equal(acpi_build(&cfg, NULL, 0, GPA, &lm, &err), 0);
	assert_layout_equal(&lm, &la);

	/* One byte short: refused, nothing past cap touched, size reported. */
	memset(b, 0xa5, sizeof(b));
	assert_int_equal(acpi_build(&cfg, b, la.size - 1, GPA, &lm, &err), -1);
	assert_int_equal(err->code, SL_E_LIMIT);
	assert_non_null(strstr(sl_error_msg(err), "need"));
	assert_int_equal(lm.size, la.size);
	sl_error_free(&err);
	for (size_t i = la.size - 1; i < sizeof(b); i++)
		assert_int_equal(b[i], 0xa5);
}

/* The largest configs: every GSI used by a device, or all but one with the
 * VMGenID notification on the last. */
static struct acpi_config max_cfg(struct acpi_virtio_mmio *v)
{
	for (unsigned i = 0; i < ACPI_MAX_VIRTIO; i++)
		v[i] = (struct acpi_virtio_mmio){
			.base = 0xd0000000ull + 0x1000ull * i, .size = 0x1000, .gsi = ACPI_GSI_MIN + i, .level = i % 2};
	return (struct acpi_config){
		.vcpus = ACPI_MAX_VCPUS, .virtio = v, .nvirtio = ACPI_MAX_VIRTIO, .vmgenid = true, .vmgenid_gsi = 0};
}

static void test_max_config(void **state)
{
	(void)state;
	static uint8_t buf[ACPI_TABLES_MAX_SIZE];
	struct acpi_virtio_mmio v[ACPI_MAX_VIRTIO];
	struct acpi_config cfg = max_cfg(v);
	struct acpi_layout l;
	sl_error_t err = NULL;
	const uint8_t *d;
	uint32_t len;

	build(&cfg, buf, sizeof(buf), &l);
	d = table(buf, &l, l.dsdt_gpa, "DSDT", 2, &len);
	assert_true(contains(d, len, "V012"));
	assert_false(contains(d, len, "V013"));

	/* No GSI left for the notification... */
	cfg.vmgenid_gsi = ACPI_IOAPIC_PINS - 1;
	assert_int_equal(acpi_build(&cfg, buf, sizeof(buf), GPA, &l, &err), -1);
	assert_non_null(strstr(sl_error_msg(err), "already used"));
	sl_error_free(&err);
	/* ...unless one device gives its GSI up. */
	cfg.nvirtio--;
	build(&cfg, buf, sizeof(buf), &l);
	d = table(buf, &l, l.dsdt_gpa, "DSDT", 2, &len);
	assert_true(contains(d, len, "ACPI0013"));
}

/* ---- bad input ---- */

struct bad_case {
	const char *what;
	void (*mutate)(struct acpi_config *c, struct acpi_virtio_mmio *v);
	int code;
	const char *needle;
};

static void m_vcpus0(struct acpi_config *c, struct acpi_virtio_mmio *v) { (void)v; c->vcpus = 0; }
static void m_vcpus_max(struct acpi_config *c, struct acpi_virtio_mmio *v) { (void)v; c->vcpus = ACPI_MAX_VCPUS + 1; }
static void m_nvirtio(struct acpi_config *c, struct acpi_virtio_mmio *v) { (void)v; c->nvirtio = ACPI_MAX_VIRTIO + 1; }
static void m_nolist(struct acpi_config *c, struct acpi_virtio_mmio *v) { (void)v; c->virtio = NULL; }
static void m_size0(struct acpi_config *c, struct acpi_virtio_mmio *v) { (void)c; v[1].size = 0; }
static void m_high(struct acpi_config *c, struct acpi_virtio_mmio *v) { (void)c; v[1].base = 0xfffff800; }
static void m_ioapic(struct acpi_config *c, struct acpi_virtio_mmio *v) { (void)c; v[1].base = 0xfec00000; }
static void m_overlap(struct acpi_config *c, struct acpi_virtio_mmio *v) { (void)c; v[2].base = 0xd0000800; }
static void m_gsi_low(struct acpi_config *c, struct acpi_virtio_mmio *v) { (void)c; v[0].gsi = 2; }
static void m_gsi_high(struct acpi_config *c, struct acpi_virtio_mmio *v) { (void)c; v[0].gsi = 24; }
static void m_gsi_dup(struct acpi_config *c, struct acpi_virtio_mmio *v) { (void)c; v[2].gsi = 5; }
static void m_gen_gsi_dup(struct acpi_config *c, struct acpi_virtio_mmio *v) { (void)v; c->vmgenid_gsi = 6; }
static void m_gen_unaligned(struct acpi_config *c, struct acpi_virtio_mmio *v) { (void)v; c->vmgenid_gpa = 0x100004; }
static void m_gen_crosses(struct acpi_config *c, struct acpi_virtio_mmio *v) { (void)v; c->vmgenid_gpa = 0x100ff8; }
static void m_gen_in_tables(struct acpi_config *c, struct acpi_virtio_mmio *v) { (void)v; c->vmgenid_gpa = GPA + 0x40; }
static void m_gen_off(struct acpi_config *c, struct acpi_virtio_mmio *v) { (void)v; c->vmgenid = false; }

static void test_bad_config(void **state)
{
	(void)state;
	static const struct bad_case cases[] = {
		{"no vCPU", m_vcpus0, SL_E_INVALID, "vCPUs"},
		{"too many vCPUs", m_vcpus_max, SL_E_INVALID, "vCPUs"},
		{"too many devices", m_nvirtio, SL_E_LIMIT, "at most"},
		{"no device list", m_nolist, SL_E_INVALID, "no list"},
		{"empty window", m_size0, SL_E_INVALID, "virtio-mmio 1: window"},
		{"window above 4 GiB", m_high, SL_E_INVALID, "below 4 GiB"},
		{"window on the IOAPIC", m_ioapic, SL_E_INVALID, "IOAPIC"},
		{"overlapping windows", m_overlap, SL_E_INVALID, "overlaps device 0"},
		{"legacy GSI", m_gsi_low, SL_E_INVALID, "GSI 2 outside"},
		{"GSI past the IOAPIC", m_gsi_high, SL_E_INVALID, "GSI 24 outside"},
		{"shared GSI", m_gsi_dup, SL_E_INVALID, "already used by device 0"},
		{"VMGenID GSI shared", m_gen_gsi_dup, SL_E_INVALID, "already used by virtio-mmio 1"},
		{"VMGenID unaligned", m_gen_unaligned, SL_E_INVALID, "8-byte aligned"},
		{"VMGenID across a page", m_gen_crosses, SL_E_INVALID, "8-byte aligned"},
		{"VMGenID inside tables", m_gen_in_tables, SL_E_INVALID, "inside the tables"},
		{"VMGenID GSI without VMGenID", m_gen_off, SL_E_INVALID, "without VMGenID"},
	};
	static uint8_t buf[ACPI_TABLES_MAX_SIZE];

	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct acpi_virtio_mmio v[3];
		struct acpi_config cfg = default_cfg();
		struct acpi_layout l;
		sl_error_t err = NULL;

		memcpy(v, three, sizeof(v));
		cfg.virtio = v;
		cases[i].mutate(&cfg, v);
		if (acpi_build(&cfg, buf, sizeof(buf), GPA, &l, &err) == 0)
			fail_msg("%s: accepted", cases[i].what);
		assert_non_null(err);
		if (err->code != cases[i].code || !strstr(sl_error_msg(err), cases[i].needle))
			fail_msg("%s: got %s \"%s\", want %s containing \"%s\"", cases[i].what,
				 sl_error_code_name(err->code), sl_error_msg(err), sl_error_code_name(cases[i].code),
				 cases[i].needle);
		sl_error_free(&err);
	}

	/* Arguments. */
	{
		struct acpi_config cfg = default_cfg();
		struct acpi_layout l;
		sl_error_t err = NULL;
		assert_int_equal(acpi_build(&cfg, buf, sizeof(buf), GPA + 8, &l, &err), -1);
		assert_non_null(strstr(sl_error_msg(err), "aligned"));
		sl_error_free(&err);
		assert_int_equal(acpi_build(&cfg, NULL, 64, GPA, &l, &err), -1);
		sl_error_free(&err);
		assert_int_equal(acpi_build(NULL, buf, sizeof(buf), GPA, &l, &err), -1);
		sl_error_free(&err);
		assert_int_equal(acpi_build(&cfg, buf, sizeof(buf), UINT64_MAX & ~0xfull, &l, &err), -1);
		assert_non_null(strstr(sl_error_msg(err), "wrap"));
		sl_error_free(&err);
	}
}

/* ---- AML emitter ---- */

/* Decodes a PkgLength; returns its byte count. */
static unsigned pkglen_decode(const uint8_t *p, size_t *value)
{
	unsigned k = (p[0] >> 6) + 1;
	if (k == 1) {
		*value = p[0] & 0x3f;
		return 1;
	}
	*value = p[0] & 0xf;
	for (unsigned i = 1; i < k; i++)
		*value |= (size_t)p[i] << (4 + 8 * (i - 1));
	return k;
}

static void test_aml_pkglength(void **state)
{
	(void)state;
	/* Body sizes around each encoding boundary: 1 byte up to 63 total,
	 * 2 up to 0xfff, 3 up to 0xfffff. */
	static const size_t bodies[] = {0, 1, 61, 62, 63, 64, 0xffc, 0xffd, 0xffe, 0x1000, 0xffffc, 0xffffd};
	static const unsigned want_k[] = {1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4};
	size_t cap = 0x100010;
	uint8_t *buf = malloc(cap);
	assert_non_null(buf);

	for (unsigned i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		struct acpi_aml a;
		size_t v;
		unsigned k;

		acpi_aml_init(&a, buf, cap);
		acpi_aml_pkg_begin(&a);
		for (size_t j = 0; j < bodies[i]; j++)
			acpi_aml_byte(&a, (uint8_t)(j * 7));
		acpi_aml_pkg_end(&a);
		assert_null(acpi_aml_error(&a));
		assert_false(a.overflow);
		k = pkglen_decode(buf, &v);
		if (k != want_k[i])
			fail_msg("body %zu: PkgLength of %u bytes, want %u", bodies[i], k, want_k[i]);
		assert_int_equal(v, bodies[i] + k);
		assert_int_equal(a.len, bodies[i] + k);
		for (size_t j = 0; j < bodies[i]; j++)
			if (buf[k + j] != (uint8_t)(j * 7))
				fail_msg("body %zu: byte %zu moved wrongly", bodies[i], j);
	}
	free(buf);
}

static void test_aml_names_and_errors(void **state)
{
	(void)state;
	uint8_t buf[64];
	struct acpi_aml a;

	acpi_aml_init(&a, buf, sizeof(buf));
	acpi_aml_namestring(&a, "\\_SB.VGEN");
	assert_null(acpi_aml_error(&a));
	assert_int_equal(a.len, 10);
	assert_memory_equal(buf, "\\\x2e_SB_VGEN", 10);

	acpi_aml_init(&a, buf, sizeof(buf));
	acpi_aml_namestring(&a, "\\A.B.C");
	assert_int_equal(a.len, 1 + 2 + 12);
	assert_memory_equal(buf, "\\\x2f\x03" "A___B___C___", 15);

	acpi_aml_init(&a, buf, sizeof(buf));
	acpi_aml_namestring(&a, "^^X1");
	assert_memory_equal(buf, "^^X1__", 6);

	static const char *const bad[] = {"", "1ABC", "ABCDE", "A..B", "AB.", "ab", "\\_SB_.V-00"};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		acpi_aml_init(&a, buf, sizeof(buf));
		acpi_aml_namestring(&a, bad[i]);
		if (!acpi_aml_error(&a))
			fail_msg("name \"%s\" accepted", bad[i]);
	}

	/* Integers take the shortest form. */
	acpi_aml_init(&a, buf, sizeof(buf));
	acpi_aml_integer(&a, 0);
	acpi_aml_integer(&a, 1);
	acpi_aml_integer(&a, 0xff);
	acpi_aml_integer(&a, 0x100);
	acpi_aml_integer(&a, 0x10000);
	acpi_aml_integer(&a, 0x100000000ull);
	static const uint8_t ints[] = {0x00, 0x01, 0x0a, 0xff, 0x0b, 0x00, 0x01, 0x0c, 0x00, 0x00, 0x01, 0x00,
				       0x0e, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00};
	assert_int_equal(a.len, sizeof(ints));
	assert_memory_equal(buf, ints, sizeof(ints));

	/* Unbalanced nesting and overflow. */
	acpi_aml_init(&a, buf, sizeof(buf));
	acpi_aml_scope_begin(&a, "\\_SB_");
	assert_non_null(acpi_aml_error(&a));
	acpi_aml_end(&a);
	assert_null(acpi_aml_error(&a));
	acpi_aml_end(&a);
	assert_non_null(acpi_aml_error(&a));

	acpi_aml_init(&a, buf, 4);
	acpi_aml_string(&a, "LNRO0005");
	assert_true(a.overflow);
	assert_int_equal(a.len, 10);
	acpi_aml_init(&a, NULL, 0);
	acpi_aml_device_begin(&a, "V000");
	acpi_aml_end(&a);
	assert_int_equal(a.len, 2 + 1 + 4);
}

/* ---- sleep port ---- */

static void test_sleep_port(void **state)
{
	(void)state;
	const uint16_t p = ACPI_SLEEP_PORT_DEFAULT;
	uint8_t d[4];

	d[0] = ACPI_SLP_EN | (ACPI_S5_SLP_TYP << ACPI_SLP_TYP_SHIFT);
	assert_int_equal(d[0], 0x34);
	assert_int_equal(acpi_sleep_port_write(p, p, d, 1), ACPI_SLEEP_POWEROFF);
	d[0] = ACPI_RESET_VALUE;
	assert_int_equal(acpi_sleep_port_write(p, p, d, 1), ACPI_SLEEP_REBOOT);
	d[0] = ACPI_WAK_STS; /* Linux clears WAK_STS before sleeping */
	assert_int_equal(acpi_sleep_port_write(p, p, d, 1), ACPI_SLEEP_NONE);
	d[0] = ACPI_SLP_EN | (3 << ACPI_SLP_TYP_SHIFT); /* S3: never offered */
	assert_int_equal(acpi_sleep_port_write(p, p, d, 1), ACPI_SLEEP_UNSUPPORTED);
	d[0] = ACPI_S5_SLP_TYP << ACPI_SLP_TYP_SHIFT; /* SLP_TYP without SLP_EN */
	assert_int_equal(acpi_sleep_port_write(p, p, d, 1), ACPI_SLEEP_NONE);
	d[0] = 0;
	assert_int_equal(acpi_sleep_port_write(p, p, d, 1), ACPI_SLEEP_NONE);
	/* A wider write: only the register's byte counts. */
	memcpy(d, "\x34\x01\x00\x00", 4);
	assert_int_equal(acpi_sleep_port_write(p, p, d, 4), ACPI_SLEEP_POWEROFF);
	memcpy(d, "\x00\x34\x00\x00", 4);
	assert_int_equal(acpi_sleep_port_write(p, p - 1, d, 2), ACPI_SLEEP_POWEROFF);
	assert_int_equal(acpi_sleep_port_write(p, p + 1, d, 1), ACPI_SLEEP_NONE);
	assert_int_equal(acpi_sleep_port_write(p, p - 2, d, 2), ACPI_SLEEP_NONE);
	assert_int_equal(acpi_sleep_port_write(p, p, d, 0), ACPI_SLEEP_NONE);

	memset(d, 0xff, sizeof(d));
	acpi_sleep_port_read(p, p, d, 4);
	assert_int_equal(le32(d), 0);
	assert_string_equal(acpi_sleep_action_name(ACPI_SLEEP_POWEROFF), "power off");
}

/* ---- iasl ---- */

/* Runs argv with stdout+stderr to `log`, bounded to 60 s; returns the exit
 * status, or -1 if it did not exit normally. */
static int run_logged(char *const argv[], const char *log)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(126);
		execv(argv[0], argv);
		_exit(127);
	}
	for (int waited = 0;; waited++) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		assert_true(r == 0);
		if (waited == 6000) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			fail_msg("%s did not finish in 60 s", argv[0]);
		}
		nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *s;
	long n;

	if (!f)
		fail_msg("cannot open %s", path);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	s = malloc((size_t)n + 1);
	assert_non_null(s);
	assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
	s[n] = '\0';
	fclose(f);
	return s;
}

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, n, f), n);
	assert_int_equal(fclose(f), 0);
}

static void require_iasl(void)
{
	if (access(IASL, X_OK) != 0)
		fail_msg("acpica-tools is missing: %s not found (scripts/setup installs acpica-tools); "
			 "the ACPI tables cannot be checked against iasl",
			 IASL);
}

/* Disassembles one table with `iasl -d`; fails on a non-zero exit, any
 * error, warning or bad checksum; returns the .dsl text (free it). */
static char *disassemble(const struct scratch *s, const char *name, const uint8_t *t, size_t len)
{
	char dat[128], prefix[128], dsl[140], log[140];
	char *text, *out;

	snprintf(dat, sizeof(dat), "%s/%s.dat", s->path, name);
	snprintf(prefix, sizeof(prefix), "%s/%s", s->path, name);
	snprintf(dsl, sizeof(dsl), "%s.dsl", prefix);
	snprintf(log, sizeof(log), "%s.log", prefix);
	write_file(dat, t, len);
	char *argv[] = {IASL, "-vs", "-p", prefix, "-d", dat, NULL};
	int rc = run_logged(argv, log);
	out = slurp(log);
	if (rc != 0)
		fail_msg("iasl -d %s exited %d:\n%s", name, rc, out);
	for (const char *bad = "Error\0Warning\0warning\0Incorrect checksum\0Invalid\0"; *bad; bad += strlen(bad) + 1)
		if (strstr(out, bad))
			fail_msg("iasl -d %s reported \"%s\":\n%s", name, bad, out);
	text = slurp(dsl);
	if (strstr(text, "Incorrect checksum") || strstr(text, "**** "))
		fail_msg("iasl -d %s flagged the table:\n%s", name, text);
	free(out);
	return text;
}

/* Recompiles a disassembled DSDT. 6035 ("_HID suffix must be all hex
 * digits") is QEMU's "QEMUVGID", which Linux and QEMU use as is. */
static void recompile(const struct scratch *s, const char *name)
{
	char dsl[128], prefix[128], log[140];
	char *out;

	snprintf(dsl, sizeof(dsl), "%s/%s.dsl", s->path, name);
	snprintf(prefix, sizeof(prefix), "%s/%s-re", s->path, name);
	snprintf(log, sizeof(log), "%s.log", prefix);
	char *argv[] = {IASL, "-vs", "-vw", "6035", "-p", prefix, dsl, NULL};
	int rc = run_logged(argv, log);
	out = slurp(log);
	if (rc != 0 || !strstr(out, "0 Errors, 0 Warnings"))
		fail_msg("iasl could not recompile the disassembled %s (exit %d):\n%s", name, rc, out);
	free(out);
}

/* The scratch directory lives in a fixture so a failed check (which
 * leaves the test by longjmp) still removes it. */
static int scratch_setup(void **state)
{
	struct scratch *s = calloc(1, sizeof(*s));
	if (!s || scratch_make(s) < 0) {
		free(s);
		return -1;
	}
	*state = s;
	return 0;
}

static int scratch_teardown(void **state)
{
	scratch_drop(*state);
	free(*state);
	return 0;
}

static void iasl_check(const struct scratch *sp, const struct acpi_config *cfg)
{
	static uint8_t buf[ACPI_TABLES_MAX_SIZE];
	const struct scratch s = *sp;
	struct acpi_layout l;
	uint32_t len;
	const uint8_t *t;
	char *dsl;

	require_iasl();
	build(cfg, buf, sizeof(buf), &l);

	t = table(buf, &l, l.dsdt_gpa, "DSDT", 2, &len);
	dsl = disassemble(&s, "dsdt", t, len);
	static const char *const want[] = {"LNRO0005", "_S5_", "Device (V000)", "Memory32Fixed (ReadWrite",
					   "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive",
					   "Device (COM1)", "PNP0501", "IO (Decode16,"};
	for (unsigned i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (!strstr(dsl, want[i]))
			fail_msg("iasl disassembly lacks \"%s\":\n%s", want[i], dsl);
	if (cfg->vmgenid && (!strstr(dsl, "VM_GEN_COUNTER") || !strstr(dsl, "Method (ADDR, 0")))
		fail_msg("iasl disassembly lacks the VMGenID device:\n%s", dsl);
	if (cfg->vmgenid_gsi && !strstr(dsl, "Notify (\\_SB.VGEN, 0x80)"))
		fail_msg("iasl disassembly lacks the GED notify:\n%s", dsl);
	free(dsl);
	recompile(&s, "dsdt");

	t = table(buf, &l, l.fadt_gpa, "FACP", 6, &len);
	dsl = disassemble(&s, "facp", t, len);
	if (!strstr(dsl, "Hardware Reduced (V5) : 1") || !strstr(dsl, "Sleep Control Register") ||
	    !strstr(dsl, "[SystemIO]"))
		fail_msg("iasl FADT disassembly:\n%s", dsl);
	free(dsl);

	t = table(buf, &l, l.madt_gpa, "APIC", 5, &len);
	dsl = disassemble(&s, "apic", t, len);
	if (!strstr(dsl, "[Processor Local APIC]") || !strstr(dsl, "[I/O APIC]"))
		fail_msg("iasl MADT disassembly:\n%s", dsl);
	free(dsl);

	t = table(buf, &l, l.xsdt_gpa, "XSDT", 1, &len);
	dsl = disassemble(&s, "xsdt", t, len);
	free(dsl);
}

static void test_iasl_default(void **state)
{
	struct acpi_config cfg = default_cfg();
	iasl_check(*state, &cfg);
}

static void test_iasl_large(void **state)
{
	struct acpi_virtio_mmio v[ACPI_MAX_VIRTIO];
	struct acpi_config cfg = max_cfg(v);
	/* 18 devices and the GED: the \_SB_ scope needs a 2-byte PkgLength. */
	cfg.nvirtio--;
	cfg.vmgenid_gsi = ACPI_IOAPIC_PINS - 1;
	cfg.vmgenid_gpa = 0x7fff0000ull;
	iasl_check(*state, &cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rsdp_xsdt),
		cmocka_unit_test(test_fadt),
		cmocka_unit_test(test_madt),
		cmocka_unit_test(test_dsdt_contents),
		cmocka_unit_test(test_vmgenid),
		cmocka_unit_test(test_deterministic_and_measure),
		cmocka_unit_test(test_max_config),
		cmocka_unit_test(test_bad_config),
		cmocka_unit_test(test_aml_pkglength),
		cmocka_unit_test(test_aml_names_and_errors),
		cmocka_unit_test(test_sleep_port),
		cmocka_unit_test_setup_teardown(test_iasl_default, scratch_setup, scratch_teardown),
		cmocka_unit_test_setup_teardown(test_iasl_large, scratch_setup, scratch_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
