/* ACPI tables for Linux guests on a hardware-reduced platform, and the AML emitter behind the DSDT. */
#ifndef VMM_ACPI_H
#define VMM_ACPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sl/error.h"

/*
 * What acpi_build() lays out, from the start of the buffer (all offsets are
 * from buf_gpa; every table starts 8-byte aligned):
 *
 *   +0x00  RSDP v2 (36 bytes) -> XSDT
 *   +0x30  VMGenID generation id (16 bytes), when cfg->vmgenid_gpa == 0
 *   ...    XSDT -> FADT, MADT
 *          FADT (rev 6.3, HW_REDUCED_ACPI) -> X_DSDT
 *          MADT: one enabled local APIC per vCPU (APIC id = vCPU index),
 *                one IOAPIC (id 0, GSI base 0) at 0xfec00000
 *          DSDT: \_S5_, \_SB_.Vnnn (virtio-mmio), \_SB_.VGEN, \_SB_.GED0
 *
 * The guest must see the whole range as reserved (not RAM) in its e820 map;
 * below 1 MiB, ACPI_TABLES_GPA_DEFAULT is found by Linux's RSDP scan of
 * 0xe0000-0xfffff even without boot_params.acpi_rsdp_addr.
 */
#define ACPI_TABLES_GPA_DEFAULT 0xe0000ull
#define ACPI_TABLES_ALIGN 16u      /* buf_gpa alignment: RSDP scan granule */
#define ACPI_TABLES_MAX_SIZE 8192u /* bound for any valid config (tested) */

#define ACPI_MAX_VCPUS 255u /* xAPIC ids 0..254; 0xff is the broadcast id */
#define ACPI_IOAPIC_GPA 0xfec00000ull
#define ACPI_LAPIC_GPA 0xfee00000ull
#define ACPI_IOAPIC_PINS 24u /* KVM's in-kernel IOAPIC */
/* Device GSIs live in [ACPI_GSI_MIN, ACPI_IOAPIC_PINS): 0-4 are the PIT
 * (KVM routes GSI 0 to pin 2), keyboard and the serial ports. */
#define ACPI_GSI_MIN 5u
/* One exclusive GSI each: 19 devices (18 with the VMGenID notification). */
#define ACPI_MAX_VIRTIO (ACPI_IOAPIC_PINS - ACPI_GSI_MIN)

/*
 * Power off and reboot go through one 1-byte I/O port, described in the
 * FADT as SLEEP_CONTROL_REG, SLEEP_STATUS_REG and RESET_REG:
 *   - Linux powers off with SLP_EN | SLP_TYP(S5) = 0x20 | (5 << 2) = 0x34,
 *     the SLP_TYP being the first element of \_S5_ (ACPI_S5_SLP_TYP);
 *   - Linux reboots (reboot=acpi, its first choice) by writing RESET_VALUE
 *     (0x01: only a reserved bit of the sleep control layout, so it can never
 *     be mistaken for a sleep request);
 *   - before sleeping Linux writes WAK_STS (0x80) to clear it: ignored.
 * Reads return 0 (WAK_STS never set: after S5 the vCPUs are simply stopped).
 */
#define ACPI_SLEEP_PORT_DEFAULT 0x3c0u
#define ACPI_S5_SLP_TYP 5u
#define ACPI_SLP_TYP_SHIFT 2u
#define ACPI_SLP_TYP_MASK 0x1cu
#define ACPI_SLP_EN 0x20u
#define ACPI_WAK_STS 0x80u
#define ACPI_RESET_VALUE 0x01u

/* The VMGenID generation id is 16 bytes (Microsoft's VM Generation ID spec). */
#define ACPI_VMGENID_SIZE 16u

struct acpi_virtio_mmio {
	uint64_t base;  /* below 4 GiB (Memory32Fixed) */
	uint64_t size;  /* usually 0x1000 */
	uint32_t gsi;   /* [ACPI_GSI_MIN, ACPI_IOAPIC_PINS), one per device */
	bool level;     /* false: edge (pulse the line), true: level */
};

struct acpi_config {
	unsigned vcpus; /* 1..ACPI_MAX_VCPUS */
	const struct acpi_virtio_mmio *virtio;
	unsigned nvirtio; /* 0..ACPI_MAX_VIRTIO */
	bool vmgenid;     /* describe a VMGenID device (\_SB_.VGEN) */
	/* Where the 16-byte generation id lives: 0 puts it inside the table
	 * buffer (reported in acpi_layout.vmgenid_gpa); otherwise 8-byte
	 * aligned, not crossing a 4 KiB page, outside the tables. */
	uint64_t vmgenid_gpa;
	/* 0: no notification device. Otherwise a GED (ACPI0013) on this
	 * edge-triggered GSI whose _EVT does Notify(\_SB_.VGEN, 0x80). */
	uint32_t vmgenid_gsi;
	uint16_t sleep_port; /* 0: ACPI_SLEEP_PORT_DEFAULT */
};

struct acpi_layout {
	size_t size; /* bytes used from the start of buf */
	uint64_t rsdp_gpa, xsdt_gpa, fadt_gpa, madt_gpa, dsdt_gpa;
	uint64_t vmgenid_gpa; /* the generation id (0 without VMGenID) */
	uint16_t sleep_port;  /* the port to register, 1 byte long */
};

/*
 * Validates cfg and writes all tables into buf, which the VMM then copies to
 * (or which already is) guest memory at buf_gpa (ACPI_TABLES_ALIGN aligned).
 * With buf == NULL and cap == 0 it only measures: out is filled, nothing is
 * written. A too small buffer fails with SL_E_LIMIT and out->size set to the
 * size needed. The output is a pure function of the arguments.
 */
int acpi_build(const struct acpi_config *cfg, uint8_t *buf, size_t cap, uint64_t buf_gpa,
	       struct acpi_layout *out, sl_error_t *err);

/* The byte that makes a table's bytes sum to zero mod 256. */
uint8_t acpi_checksum(const uint8_t *p, size_t len);

/* ---- sleep control/status/reset port ---- */
enum acpi_sleep_action {
	ACPI_SLEEP_NONE = 0,    /* nothing to do (WAK_STS clear, stray write) */
	ACPI_SLEEP_POWEROFF,    /* SLP_EN with SLP_TYP S5 */
	ACPI_SLEEP_REBOOT,      /* RESET_VALUE written (FADT RESET_REG) */
	ACPI_SLEEP_UNSUPPORTED, /* SLP_EN with a sleep type we never offered */
};

/* Decodes a guest write of `size` bytes at `port` (the register is the low
 * byte at sleep_port; other ports of a wider write are ignored). */
enum acpi_sleep_action acpi_sleep_port_write(uint16_t sleep_port, uint16_t port, const uint8_t *data,
					     unsigned size);
/* Fills a guest read: the status register reads as 0 (no wake event). */
void acpi_sleep_port_read(uint16_t sleep_port, uint16_t port, uint8_t *data, unsigned size);
const char *acpi_sleep_action_name(enum acpi_sleep_action a);

/* ---- AML emitter (acpi_aml.c), just the subset the DSDT needs ----
 * Writes go to [buf, buf + cap); past the end they are counted, not
 * written, so `len` is always the size the code needs (buf may be NULL to
 * measure). Errors are sticky: check acpi_aml_error() once at the end. */
#define ACPI_AML_DEPTH 8

struct acpi_aml {
	uint8_t *buf;
	size_t cap, len;
	size_t open[ACPI_AML_DEPTH]; /* starts of unfinished PkgLength bodies */
	unsigned depth;
	bool overflow;   /* len went past cap */
	const char *bad; /* first misuse (bad name, nesting), NULL if none */
};

void acpi_aml_init(struct acpi_aml *a, uint8_t *buf, size_t cap);
/* NULL when the code is complete and well-formed, else why not (overflow
 * is not an error here: compare len with cap). */
const char *acpi_aml_error(const struct acpi_aml *a);

void acpi_aml_byte(struct acpi_aml *a, uint8_t b);
void acpi_aml_bytes(struct acpi_aml *a, const void *p, size_t n);
/* "\_SB_.VGEN", "^PCI0", "_HID", "_SB.V000": segments padded with '_'. */
void acpi_aml_namestring(struct acpi_aml *a, const char *path);
void acpi_aml_integer(struct acpi_aml *a, uint64_t v); /* shortest encoding */
void acpi_aml_dword(struct acpi_aml *a, uint32_t v);   /* always DWordConst */
void acpi_aml_string(struct acpi_aml *a, const char *s);
/* Opens / closes a PkgLength-prefixed body; the length is encoded in the
 * fewest bytes once the body is known. */
void acpi_aml_pkg_begin(struct acpi_aml *a);
void acpi_aml_pkg_end(struct acpi_aml *a);

/* Name(path, <next object>) */
void acpi_aml_name(struct acpi_aml *a, const char *path);
/* Each *_begin is closed by acpi_aml_end(). */
void acpi_aml_scope_begin(struct acpi_aml *a, const char *path);
void acpi_aml_device_begin(struct acpi_aml *a, const char *path);
void acpi_aml_method_begin(struct acpi_aml *a, const char *path, unsigned nargs, bool serialized);
void acpi_aml_package_begin(struct acpi_aml *a, unsigned nelems);
void acpi_aml_if_begin(struct acpi_aml *a); /* predicate, then the terms */
void acpi_aml_end(struct acpi_aml *a);
/* Buffer(n){bytes} */
void acpi_aml_buffer(struct acpi_aml *a, const uint8_t *p, size_t n);
void acpi_aml_return(struct acpi_aml *a); /* Return(<next object>) */
void acpi_aml_lequal(struct acpi_aml *a); /* LEqual(<next>, <next>) */
void acpi_aml_arg(struct acpi_aml *a, unsigned n); /* Arg0..Arg6 */
void acpi_aml_notify(struct acpi_aml *a, const char *path, uint64_t value);

#endif
