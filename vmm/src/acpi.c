/* Builds RSDP, XSDT, FADT, MADT and DSDT for a hardware-reduced ACPI guest, and decodes the sleep port. */
#include <string.h>

#include "acpi.h"

/* Identity written in every table header (OEMID is exactly 6 bytes). */
#define ACPI_OEM_ID "SPORE "
#define ACPI_OEM_TABLE_ID "SPORELET"
#define ACPI_OEM_REVISION 1u
#define ACPI_CREATOR_ID "SPOR"
#define ACPI_CREATOR_REVISION 1u

#define HDR_LEN 36u
#define RSDP_LEN 36u
#define FADT_LEN 276u /* ACPI 6.x: up to Hypervisor Vendor Identity */
#define GAS_LEN 12u

/* Revisions as of ACPI 6.3. */
#define RSDP_REV 2u
#define XSDT_REV 1u
#define FADT_REV 6u
#define FADT_MINOR 3u
#define MADT_REV 5u
#define DSDT_REV 2u /* 64-bit AML integers */

/* FADT Flags (ACPI 6.3 table 5-34). */
#define FADT_F_PWR_BUTTON (1u << 4)  /* no fixed-feature power button */
#define FADT_F_SLP_BUTTON (1u << 5)  /* no fixed-feature sleep button */
#define FADT_F_RESET_REG_SUP (1u << 10)
#define FADT_F_HW_REDUCED_ACPI (1u << 20)
/* IA-PC boot architecture flags (table 5-35): no legacy devices, no 8042
 * (bits 0 and 1 clear), no VGA, no CMOS RTC, so Linux probes none of them. */
#define FADT_IAPC_VGA_NOT_PRESENT (1u << 2)
#define FADT_IAPC_CMOS_RTC_NOT_PRESENT (1u << 5)

#define GAS_SYSTEM_IO 1u
#define GAS_ACCESS_BYTE 1u

#define MADT_LAPIC 0u
#define MADT_IOAPIC 1u
#define MADT_ISO 2u /* interrupt source override */
#define MADT_LAPIC_ENABLED 1u

/* Large resource descriptors (ACPI 6.3, 6.4.3). */
#define RES_MEM32_FIXED 0x86u
#define RES_EXT_IRQ 0x89u
#define RES_END_TAG 0x79u
#define RES_IRQ_CONSUMER (1u << 0)
#define RES_IRQ_EDGE (1u << 1)
/* Polarity bit 2 (0: active high) and sharing bit 3 (0: exclusive) stay clear. */

/* Where the in-buffer generation id goes: right after the RSDP. */
#define VMGENID_OFF 0x30u

static void put8(uint8_t *p, uint8_t v)
{
	p[0] = v;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (unsigned i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (unsigned i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

uint8_t acpi_checksum(const uint8_t *p, size_t len)
{
	uint8_t sum = 0;
	for (size_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + p[i]);
	return (uint8_t)(0x100 - sum);
}

static size_t align8(size_t v)
{
	return (v + 7) & ~(size_t)7;
}

/* Standard 36-byte description header; the checksum is set by seal(). */
static void header(uint8_t *t, const char sig[4], uint32_t len, uint8_t rev)
{
	memcpy(t, sig, 4);
	put32(t + 4, len);
	put8(t + 8, rev);
	put8(t + 9, 0);
	memcpy(t + 10, ACPI_OEM_ID, 6);
	memcpy(t + 16, ACPI_OEM_TABLE_ID, 8);
	put32(t + 24, ACPI_OEM_REVISION);
	memcpy(t + 28, ACPI_CREATOR_ID, 4);
	put32(t + 32, ACPI_CREATOR_REVISION);
}

static void seal(uint8_t *t, size_t len)
{
	t[9] = 0;
	t[9] = acpi_checksum(t, len);
}

/* Generic Address Structure for a 1-byte I/O port register. */
static void gas_io8(uint8_t *p, uint16_t port)
{
	put8(p, GAS_SYSTEM_IO);
	put8(p + 1, 8);  /* register bit width */
	put8(p + 2, 0);  /* bit offset */
	put8(p + 3, GAS_ACCESS_BYTE);
	put64(p + 4, port);
}

static void build_rsdp(uint8_t *p, uint64_t xsdt_gpa)
{
	memset(p, 0, RSDP_LEN);
	memcpy(p, "RSD PTR ", 8);
	memcpy(p + 9, ACPI_OEM_ID, 6);
	put8(p + 15, RSDP_REV);
	put32(p + 16, 0); /* no RSDT: revision 2 guests use the XSDT */
	put32(p + 20, RSDP_LEN);
	put64(p + 24, xsdt_gpa);
	/* The v1 checksum covers the first 20 bytes, the extended one all 36. */
	p[8] = acpi_checksum(p, 20);
	p[32] = acpi_checksum(p, RSDP_LEN);
}

static void build_xsdt(uint8_t *t, const uint64_t *entries, unsigned n)
{
	uint32_t len = HDR_LEN + 8 * n;
	header(t, "XSDT", len, XSDT_REV);
	for (unsigned i = 0; i < n; i++)
		put64(t + HDR_LEN + 8 * i, entries[i]);
	seal(t, len);
}

static void build_fadt(uint8_t *t, uint64_t dsdt_gpa, uint16_t port)
{
	memset(t, 0, FADT_LEN);
	header(t, "FACP", FADT_LEN, FADT_REV);
	/* FIRMWARE_CTRL/X_FIRMWARE_CTRL stay 0: no FACS on a hardware-reduced
	 * platform. SCI_INT, SMI_CMD and every PM1/PM2/PM_TMR/GPE block stay 0
	 * for the same reason. DSDT (32-bit) stays 0 in favour of X_DSDT. */
	put16(t + 109, FADT_IAPC_VGA_NOT_PRESENT | FADT_IAPC_CMOS_RTC_NOT_PRESENT);
	put32(t + 112, FADT_F_HW_REDUCED_ACPI | FADT_F_RESET_REG_SUP | FADT_F_PWR_BUTTON | FADT_F_SLP_BUTTON);
	gas_io8(t + 116, port); /* RESET_REG */
	put8(t + 128, ACPI_RESET_VALUE);
	put8(t + 131, FADT_MINOR);
	put64(t + 140, dsdt_gpa); /* X_DSDT */
	gas_io8(t + 244, port);   /* SLEEP_CONTROL_REG */
	gas_io8(t + 256, port);   /* SLEEP_STATUS_REG */
	memcpy(t + 268, "SPORELET", 8); /* Hypervisor Vendor Identity */
	seal(t, FADT_LEN);
}

static size_t madt_len(unsigned vcpus)
{
	return HDR_LEN + 8 + 8 * (size_t)vcpus + 12 + 10;
}

static void build_madt(uint8_t *t, unsigned vcpus)
{
	size_t len = madt_len(vcpus);
	uint8_t *e;

	memset(t, 0, len);
	header(t, "APIC", (uint32_t)len, MADT_REV);
	put32(t + 36, (uint32_t)ACPI_LAPIC_GPA);
	/* Flags: PCAT_COMPAT clear. A hardware-reduced Linux ignores the 8259
	 * pair anyway; no interrupt source override either, since the PIT is
	 * not used (x86 HW-reduced skips timer_init), so IRQ0 -> GSI2 is moot. */
	put32(t + 40, 0);
	e = t + 44;
	for (unsigned i = 0; i < vcpus; i++, e += 8) {
		put8(e, MADT_LAPIC);
		put8(e + 1, 8);
		put8(e + 2, (uint8_t)i); /* ACPI processor UID */
		put8(e + 3, (uint8_t)i); /* APIC id = vCPU index (KVM's default) */
		put32(e + 4, MADT_LAPIC_ENABLED);
	}
	put8(e, MADT_IOAPIC);
	put8(e + 1, 12);
	put8(e + 2, 0); /* IOAPIC id */
	put8(e + 3, 0);
	put32(e + 4, (uint32_t)ACPI_IOAPIC_GPA);
	put32(e + 8, 0); /* GSI base */
	e += 12;
	/* COM1's IRQ 4 as GSI 4, edge, active high. Without it a hardware-
	 * reduced Linux (no legacy PIC, no ISA IRQ defaults) programs the pin
	 * with PCI defaults (level, active low), and our edge pulses never
	 * reach the 8250 driver: its tty output stalls after the first bytes. */
	put8(e, MADT_ISO);
	put8(e + 1, 10);
	put8(e + 2, 0);  /* bus: ISA */
	put8(e + 3, 4);  /* source IRQ */
	put32(e + 4, 4); /* GSI */
	put16(e + 8, 0x5); /* polarity active high (01), trigger edge (01 << 2) */
	seal(t, len);
}

/* Extended Interrupt Descriptor with one GSI, active high, exclusive. */
static size_t res_irq(uint8_t *p, uint32_t gsi, bool level)
{
	put8(p, RES_EXT_IRQ);
	put16(p + 1, 6);
	put8(p + 3, (uint8_t)(RES_IRQ_CONSUMER | (level ? 0 : RES_IRQ_EDGE)));
	put8(p + 4, 1); /* interrupt table length */
	put32(p + 5, gsi);
	return 9;
}

static size_t res_mem32_fixed(uint8_t *p, uint32_t base, uint32_t len)
{
	put8(p, RES_MEM32_FIXED);
	put16(p + 1, 9);
	put8(p + 3, 1); /* read/write */
	put32(p + 4, base);
	put32(p + 8, len);
	return 12;
}

static size_t res_end(uint8_t *p)
{
	put8(p, RES_END_TAG);
	put8(p + 1, 0); /* checksum 0: "treat as valid" */
	return 2;
}

static void dsdt_virtio(struct acpi_aml *a, unsigned idx, const struct acpi_virtio_mmio *v)
{
	uint8_t res[32];
	size_t n = 0;
	char name[5];
	static const char hex[] = "0123456789ABCDEF";

	/* V000..V01F: unique 4-character names, valid (letter first). */
	name[0] = 'V';
	name[1] = hex[(idx >> 8) & 0xf];
	name[2] = hex[(idx >> 4) & 0xf];
	name[3] = hex[idx & 0xf];
	name[4] = '\0';
	acpi_aml_device_begin(a, name);
	acpi_aml_name(a, "_HID");
	acpi_aml_string(a, "LNRO0005"); /* matched by Linux virtio_mmio.c */
	acpi_aml_name(a, "_UID");
	acpi_aml_integer(a, idx);
	n += res_mem32_fixed(res + n, (uint32_t)v->base, (uint32_t)v->size);
	n += res_irq(res + n, v->gsi, v->level);
	n += res_end(res + n);
	acpi_aml_name(a, "_CRS");
	acpi_aml_buffer(a, res, n);
	acpi_aml_end(a);
}

/* COM1 as a PNP0501 device: a hardware-reduced Linux maps only interrupts
 * that ACPI describes, so the 8250's legacy IRQ 4 has no Linux IRQ until
 * this _CRS names it; 8250_pnp then takes over ttyS0 with a working IRQ. */
static void dsdt_com1(struct acpi_aml *a)
{
	uint8_t res[32];
	size_t n = 0;

	acpi_aml_device_begin(a, "COM1");
	acpi_aml_name(a, "_HID");
	acpi_aml_string(a, "PNP0501");
	acpi_aml_name(a, "_UID");
	acpi_aml_integer(a, 0);
	/* I/O port descriptor: decode16, 0x3f8..0x3f8, align 1, 8 ports. */
	res[n++] = 0x47;
	res[n++] = 0x01;
	res[n++] = 0xf8;
	res[n++] = 0x03;
	res[n++] = 0xf8;
	res[n++] = 0x03;
	res[n++] = 0x01;
	res[n++] = 0x08;
	n += res_irq(res + n, 4, false);
	n += res_end(res + n);
	acpi_aml_name(a, "_CRS");
	acpi_aml_buffer(a, res, n);
	acpi_aml_end(a);
}

/*
 * VMGenID as QEMU describes it and Linux drivers/virt/vmgenid.c binds it
 * (it matches the _CID "VM_GEN_COUNTER", evaluates ADDR for a Package of
 * two integers, low then high 32 bits of the 16-byte id, and re-reads the
 * id on any Notify). The generation id bytes are the VMM's to write.
 */
static void dsdt_vmgenid(struct acpi_aml *a, uint64_t gpa)
{
	acpi_aml_device_begin(a, "VGEN");
	acpi_aml_name(a, "_HID");
	acpi_aml_string(a, "QEMUVGID");
	acpi_aml_name(a, "_CID");
	acpi_aml_string(a, "VM_GEN_COUNTER");
	acpi_aml_name(a, "_DDN");
	acpi_aml_string(a, "VM_GEN_COUNTER");
	acpi_aml_method_begin(a, "ADDR", 0, false);
	acpi_aml_return(a);
	acpi_aml_package_begin(a, 2);
	/* Fixed-width so the DSDT size does not depend on the address. */
	acpi_aml_dword(a, (uint32_t)gpa);
	acpi_aml_dword(a, (uint32_t)(gpa >> 32));
	acpi_aml_end(a);
	acpi_aml_end(a);
	acpi_aml_end(a);
}

/*
 * Generic Event Device (ACPI0013): how a hardware-reduced platform raises
 * notifications. When the VMM pulses `gsi`, Linux's evged.c runs
 * _EVT(gsi), which notifies VGEN with 0x80 ("generation changed").
 */
static void dsdt_ged(struct acpi_aml *a, uint32_t gsi)
{
	uint8_t res[16];
	size_t n = 0;

	acpi_aml_device_begin(a, "GED0");
	acpi_aml_name(a, "_HID");
	acpi_aml_string(a, "ACPI0013");
	acpi_aml_name(a, "_UID");
	acpi_aml_integer(a, 0);
	n += res_irq(res + n, gsi, false);
	n += res_end(res + n);
	acpi_aml_name(a, "_CRS");
	acpi_aml_buffer(a, res, n);
	acpi_aml_method_begin(a, "_EVT", 1, true);
	acpi_aml_if_begin(a);
	acpi_aml_lequal(a);
	acpi_aml_arg(a, 0);
	acpi_aml_integer(a, gsi);
	acpi_aml_notify(a, "\\_SB_.VGEN", 0x80);
	acpi_aml_end(a);
	acpi_aml_end(a);
	acpi_aml_end(a);
}

/* The DSDT's AML body (after the header), into a at its current position. */
static void dsdt_body(struct acpi_aml *a, const struct acpi_config *cfg, uint64_t vmgenid_gpa)
{
	/* \_S5_: SLP_TYPa = ACPI_S5_SLP_TYP is what Linux writes to the sleep
	 * control register to power off; the other elements are unused on a
	 * hardware-reduced platform. */
	acpi_aml_name(a, "_S5_");
	acpi_aml_package_begin(a, 4);
	acpi_aml_integer(a, ACPI_S5_SLP_TYP);
	acpi_aml_integer(a, 0);
	acpi_aml_integer(a, 0);
	acpi_aml_integer(a, 0);
	acpi_aml_end(a);

	acpi_aml_scope_begin(a, "\\_SB_");
	dsdt_com1(a);
	for (unsigned i = 0; i < cfg->nvirtio; i++)
		dsdt_virtio(a, i, &cfg->virtio[i]);
	if (cfg->vmgenid) {
		dsdt_vmgenid(a, vmgenid_gpa);
		if (cfg->vmgenid_gsi)
			dsdt_ged(a, cfg->vmgenid_gsi);
	}
	acpi_aml_end(a);
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

static int check_gsi(uint32_t gsi, const char *what, unsigned idx, sl_error_t *err)
{
	if (gsi < ACPI_GSI_MIN || gsi >= ACPI_IOAPIC_PINS)
		return sl_error_set(err, SL_E_INVALID, "acpi: %s %u: GSI %u outside [%u, %u)", what, idx, gsi,
				    ACPI_GSI_MIN, ACPI_IOAPIC_PINS);
	return 0;
}

static int check_config(const struct acpi_config *cfg, sl_error_t *err)
{
	if (cfg->vcpus < 1 || cfg->vcpus > ACPI_MAX_VCPUS)
		return sl_error_set(err, SL_E_INVALID, "acpi: %u vCPUs, need 1..%u", cfg->vcpus, ACPI_MAX_VCPUS);
	if (cfg->nvirtio > ACPI_MAX_VIRTIO)
		return sl_error_set(err, SL_E_LIMIT, "acpi: %u virtio-mmio devices, at most %u", cfg->nvirtio,
				    ACPI_MAX_VIRTIO);
	if (cfg->nvirtio && !cfg->virtio)
		return sl_error_set(err, SL_E_INVALID, "acpi: %u virtio-mmio devices but no list", cfg->nvirtio);
	for (unsigned i = 0; i < cfg->nvirtio; i++) {
		const struct acpi_virtio_mmio *v = &cfg->virtio[i];
		if (v->size == 0 || v->base > 0x100000000ull || v->size > 0x100000000ull - v->base)
			return sl_error_set(err, SL_E_INVALID,
					    "acpi: virtio-mmio %u: window 0x%llx+0x%llx is empty or not below 4 GiB",
					    i, (unsigned long long)v->base, (unsigned long long)v->size);
		if (ranges_overlap(v->base, v->size, ACPI_IOAPIC_GPA, 0x1000) ||
		    ranges_overlap(v->base, v->size, ACPI_LAPIC_GPA, 0x1000))
			return sl_error_set(err, SL_E_INVALID,
					    "acpi: virtio-mmio %u: window 0x%llx+0x%llx overlaps the IOAPIC or LAPIC", i,
					    (unsigned long long)v->base, (unsigned long long)v->size);
		if (check_gsi(v->gsi, "virtio-mmio", i, err) < 0)
			return -1;
		for (unsigned j = 0; j < i; j++) {
			const struct acpi_virtio_mmio *w = &cfg->virtio[j];
			if (ranges_overlap(v->base, v->size, w->base, w->size))
				return sl_error_set(err, SL_E_INVALID,
						    "acpi: virtio-mmio %u: window 0x%llx+0x%llx overlaps device %u", i,
						    (unsigned long long)v->base, (unsigned long long)v->size, j);
			/* Exclusive interrupts: sharing would need Shared in _CRS. */
			if (v->gsi == w->gsi)
				return sl_error_set(err, SL_E_INVALID, "acpi: virtio-mmio %u: GSI %u already used by device %u",
						    i, v->gsi, j);
		}
	}
	if (!cfg->vmgenid) {
		if (cfg->vmgenid_gpa || cfg->vmgenid_gsi)
			return sl_error_set(err, SL_E_INVALID, "acpi: VMGenID address or GSI given without VMGenID");
		return 0;
	}
	/* Microsoft's spec: 8-byte aligned; one page so a guest maps it whole. */
	if (cfg->vmgenid_gpa &&
	    (cfg->vmgenid_gpa % 8 || cfg->vmgenid_gpa / 4096 != (cfg->vmgenid_gpa + ACPI_VMGENID_SIZE - 1) / 4096 ||
	     cfg->vmgenid_gpa > UINT64_MAX - ACPI_VMGENID_SIZE))
		return sl_error_set(err, SL_E_INVALID,
				    "acpi: VMGenID address 0x%llx is not 8-byte aligned within one 4 KiB page",
				    (unsigned long long)cfg->vmgenid_gpa);
	if (cfg->vmgenid_gsi) {
		if (check_gsi(cfg->vmgenid_gsi, "VMGenID notification", 0, err) < 0)
			return -1;
		for (unsigned j = 0; j < cfg->nvirtio; j++)
			if (cfg->virtio[j].gsi == cfg->vmgenid_gsi)
				return sl_error_set(err, SL_E_INVALID,
						    "acpi: VMGenID notification GSI %u already used by virtio-mmio %u",
						    cfg->vmgenid_gsi, j);
	}
	return 0;
}

int acpi_build(const struct acpi_config *cfg, uint8_t *buf, size_t cap, uint64_t buf_gpa,
	       struct acpi_layout *out, sl_error_t *err)
{
	struct acpi_aml a;
	size_t off, xsdt_off, fadt_off, madt_off, dsdt_off, dsdt_len, end;
	uint64_t vmgenid_gpa = 0, entries[2];
	uint16_t port;
	const char *why;

	if (!cfg || !out)
		return sl_error_set(err, SL_E_INVALID, "acpi: no config or layout");
	if (!buf && cap)
		return sl_error_set(err, SL_E_INVALID, "acpi: no buffer for %zu bytes", cap);
	if (buf_gpa % ACPI_TABLES_ALIGN)
		return sl_error_set(err, SL_E_INVALID, "acpi: table address 0x%llx is not %u-byte aligned",
				    (unsigned long long)buf_gpa, ACPI_TABLES_ALIGN);
	if (check_config(cfg, err) < 0)
		return -1;
	port = cfg->sleep_port ? cfg->sleep_port : ACPI_SLEEP_PORT_DEFAULT;

	/* Fixed-size parts first; the DSDT is measured by emitting it with no
	 * buffer (its size does not depend on any address). */
	off = RSDP_LEN;
	if (cfg->vmgenid && !cfg->vmgenid_gpa) {
		vmgenid_gpa = buf_gpa + VMGENID_OFF;
		off = VMGENID_OFF + ACPI_VMGENID_SIZE;
	} else if (cfg->vmgenid) {
		vmgenid_gpa = cfg->vmgenid_gpa;
	}
	xsdt_off = align8(off);
	fadt_off = align8(xsdt_off + HDR_LEN + 8 * 2);
	madt_off = align8(fadt_off + FADT_LEN);
	dsdt_off = align8(madt_off + madt_len(cfg->vcpus));
	acpi_aml_init(&a, NULL, 0);
	dsdt_body(&a, cfg, vmgenid_gpa);
	if ((why = acpi_aml_error(&a)))
		return sl_error_set(err, SL_E_INVALID, "acpi: DSDT: %s", why);
	dsdt_len = HDR_LEN + a.len;
	end = dsdt_off + dsdt_len;

	if (buf_gpa > UINT64_MAX - end)
		return sl_error_set(err, SL_E_INVALID, "acpi: tables at 0x%llx wrap the address space",
				    (unsigned long long)buf_gpa);
	if (cfg->vmgenid_gpa && ranges_overlap(cfg->vmgenid_gpa, ACPI_VMGENID_SIZE, buf_gpa, end))
		return sl_error_set(err, SL_E_INVALID, "acpi: VMGenID address 0x%llx is inside the tables",
				    (unsigned long long)cfg->vmgenid_gpa);

	*out = (struct acpi_layout){
		.size = end,
		.rsdp_gpa = buf_gpa,
		.xsdt_gpa = buf_gpa + xsdt_off,
		.fadt_gpa = buf_gpa + fadt_off,
		.madt_gpa = buf_gpa + madt_off,
		.dsdt_gpa = buf_gpa + dsdt_off,
		.vmgenid_gpa = vmgenid_gpa,
		.sleep_port = port,
	};
	if (!buf)
		return 0;
	if (cap < end)
		return sl_error_set(err, SL_E_LIMIT, "acpi: tables need %zu bytes, buffer has %zu", end, cap);

	/* Padding and the in-buffer generation id start as zeros; the VMM
	 * writes the id itself. */
	memset(buf, 0, end);
	build_rsdp(buf, out->xsdt_gpa);
	entries[0] = out->fadt_gpa;
	entries[1] = out->madt_gpa;
	build_xsdt(buf + xsdt_off, entries, 2);
	build_fadt(buf + fadt_off, out->dsdt_gpa, port);
	build_madt(buf + madt_off, cfg->vcpus);

	header(buf + dsdt_off, "DSDT", (uint32_t)dsdt_len, DSDT_REV);
	acpi_aml_init(&a, buf + dsdt_off + HDR_LEN, dsdt_len - HDR_LEN);
	dsdt_body(&a, cfg, vmgenid_gpa);
	if ((why = acpi_aml_error(&a)) || a.overflow || a.len != dsdt_len - HDR_LEN)
		return sl_error_set(err, SL_E_INVALID, "acpi: DSDT changed size between passes%s%s", why ? ": " : "",
				    why ? why : "");
	seal(buf + dsdt_off, dsdt_len);
	return 0;
}

enum acpi_sleep_action acpi_sleep_port_write(uint16_t sleep_port, uint16_t port, const uint8_t *data,
					     unsigned size)
{
	uint8_t v;

	/* A wider access starting below the register still reaches it; only
	 * its byte counts. */
	if (port > sleep_port || size == 0 || (unsigned)(sleep_port - port) >= size)
		return ACPI_SLEEP_NONE;
	v = data[sleep_port - port];
	if (v & ACPI_SLP_EN) {
		if (((v & ACPI_SLP_TYP_MASK) >> ACPI_SLP_TYP_SHIFT) == ACPI_S5_SLP_TYP)
			return ACPI_SLEEP_POWEROFF;
		return ACPI_SLEEP_UNSUPPORTED;
	}
	if (v == ACPI_RESET_VALUE)
		return ACPI_SLEEP_REBOOT;
	return ACPI_SLEEP_NONE; /* WAK_STS clear or stray bits */
}

void acpi_sleep_port_read(uint16_t sleep_port, uint16_t port, uint8_t *data, unsigned size)
{
	(void)sleep_port;
	(void)port;
	memset(data, 0, size);
}

const char *acpi_sleep_action_name(enum acpi_sleep_action a)
{
	switch (a) {
	case ACPI_SLEEP_NONE:
		return "none";
	case ACPI_SLEEP_POWEROFF:
		return "power off";
	case ACPI_SLEEP_REBOOT:
		return "reboot";
	case ACPI_SLEEP_UNSUPPORTED:
		return "unsupported sleep state";
	}
	return "unknown";
}
