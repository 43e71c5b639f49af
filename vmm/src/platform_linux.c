/* The Linux platform: device layout, ACPI description, power-off port, VMGenID, and device state. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acpi.h"
#include "platform_linux.h"
#include "state_file.h"
#include "virtio.h"
#include "virtio_vsock.h"
#include "vmm_internal.h"

/*
 * Device slots, fixed by the machine shape so a restore rebuilds the very
 * layout the guest saw at capture: slot 0 virtio-rng, then virtio-vsock (if
 * the machine has a CID), then the disks in order. Slot i sits at
 * VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE on GSI VIRTIO_MMIO_GSI_BASE + i;
 * the VMGenID notification (GED) takes the last IOAPIC pin.
 */
#define LINUX_GED_GSI (ACPI_IOAPIC_PINS - 1u)
#define LINUX_MAX_SLOTS (2u + VMM_MAX_DISKS)
_Static_assert(VIRTIO_MMIO_GSI_BASE + LINUX_MAX_SLOTS <= LINUX_GED_GSI, "device GSIs collide with the GED");

enum slot_kind { SLOT_RNG = 1, SLOT_VSOCK, SLOT_BLK };

struct linux_slot {
	enum slot_kind kind;
	struct virtio_mmio *t;
	struct virtio_rng *rng;
	struct virtio_vsock *vsock;
	struct virtio_blk *blk;
};

struct vmm_linux {
	struct linux_slot slot[LINUX_MAX_SLOTS];
	unsigned nslots;
	/* A bare machine (the test guest) asked for a vsock device: it gets
	 * that one slot and nothing else of the platform (no ACPI, no rng, no
	 * power-off port), so its slot 0 is the vsock device. */
	bool bare;
	uint16_t sleep_port;
	uint64_t vmgenid_gpa; /* 0 until the tables are built or restored */
};

/* What travels in vm.state (SF_PLATFORM), checked against the rebuilt
 * machine at restore. Version 1. */
struct platform_state_v1 {
	uint32_t version;
	uint32_t nslots;
	uint64_t vmgenid_gpa;
	uint32_t ged_gsi;
	uint16_t sleep_port;
	uint16_t pad;
	uint32_t slot_device_id[LINUX_MAX_SLOTS];
};
#define PLATFORM_STATE_VERSION 1u

/* The GED pin this machine's state records: a bare machine has none. */
static uint32_t ged_gsi(const struct vmm_linux *l)
{
	return l->bare ? 0 : LINUX_GED_GSI;
}

static uint64_t slot_base(unsigned i)
{
	return VIRTIO_MMIO_BASE + (uint64_t)i * VIRTIO_MMIO_SIZE;
}

static uint32_t slot_gsi(unsigned i)
{
	return VIRTIO_MMIO_GSI_BASE + i;
}

/* The ACPI sleep/reset register: Linux powers off by writing SLP_EN|S5 and
 * reboots through the FADT reset register. Both end the VM: a power-off is
 * a normal exit (status 0), a reboot is reported like a triple fault. */
static void sleep_out(struct vmm_vm *vm, void *dev, uint16_t port, const uint8_t *data, unsigned size)
{
	struct vmm_linux *l = dev;
	switch (acpi_sleep_port_write(l->sleep_port, port, data, size)) {
	case ACPI_SLEEP_POWEROFF:
		vmm_post_event(vm, VMM_EV_EXIT, 0, "ACPI power off");
		break;
	case ACPI_SLEEP_REBOOT:
		vmm_post_event(vm, VMM_EV_SHUTDOWN, 0, "guest asked for a reboot (ACPI reset)");
		break;
	case ACPI_SLEEP_UNSUPPORTED:
		vmm_post_event(vm, VMM_EV_ERROR, 0, "guest asked for an ACPI sleep state this VM does not offer");
		break;
	case ACPI_SLEEP_NONE:
		break;
	}
}

static void sleep_in(struct vmm_vm *vm, void *dev, uint16_t port, uint8_t *data, unsigned size)
{
	(void)vm;
	acpi_sleep_port_read(((struct vmm_linux *)dev)->sleep_port, port, data, size);
}

static const struct vmm_pio_ops sleep_ops = {.in = sleep_in, .out = sleep_out};

static vmm_notice_fn notice_hook;

void vmm_set_notice(vmm_notice_fn fn)
{
	__atomic_store_n(&notice_hook, fn, __ATOMIC_RELEASE);
}

static void vsock_refused(void *arg, const char *path, uint32_t uid, unsigned more)
{
	(void)arg;
	vmm_notice_fn fn = __atomic_load_n(&notice_hook, __ATOMIC_ACQUIRE);
	if (!fn)
		return;
	char msg[128];
	if (more)
		snprintf(msg, sizeof(msg), "vsock: refused peer uid %u (and %u more in the second before)", uid, more);
	else
		snprintf(msg, sizeof(msg), "vsock: refused peer uid %u", uid);
	fn(msg, path);
}

static int add_slot(struct vmm_vm *vm, struct vmm_linux *l, enum slot_kind kind, unsigned disk, sl_error_t *err)
{
	const struct vmm_machine *m = &vm->machine;
	unsigned i = l->nslots;
	struct linux_slot *s = &l->slot[i];
	s->kind = kind;
	switch (kind) {
	case SLOT_RNG:
		if (virtio_rng_create(vm, slot_base(i), slot_gsi(i), &s->rng, err) < 0)
			return -1;
		s->t = virtio_rng_transport(s->rng);
		break;
	case SLOT_VSOCK: {
		struct virtio_vsock_opts o = {.guest_cid = m->vsock_cid, .uds_path = m->vsock_path,
					      .refused = vsock_refused};
		if (!m->vsock_path)
			return sl_error_set(err, SL_E_INVALID, "vsock CID %u needs a host socket path", m->vsock_cid);
		if (virtio_vsock_create(vm, slot_base(i), slot_gsi(i), &o, &s->vsock, err) < 0)
			return -1;
		s->t = virtio_vsock_transport(s->vsock);
		break;
	}
	case SLOT_BLK: {
		const struct vmm_disk *d = &m->disks[disk];
		char serial[VIRTIO_BLK_ID_BYTES + 1];
		snprintf(serial, sizeof(serial), "spore-disk%u", disk);
		struct virtio_blk_opts o = {.path = d->path ? d->path : "(spore disk)", .read_only = d->read_only,
					    .serial = serial, .have_fd = d->have_fd, .fd = d->fd};
		if (virtio_blk_create(vm, slot_base(i), slot_gsi(i), &o, &s->blk, err) < 0)
			return sl_error_wrap(err, "disk %u", disk);
		s->t = virtio_blk_transport(s->blk);
		break;
	}
	}
	l->nslots++;
	return 0;
}

int vmm_linux_create(struct vmm_vm *vm, sl_error_t *err)
{
	const struct vmm_machine *m = &vm->machine;
	if (m->ndisks > VMM_MAX_DISKS)
		return sl_error_set(err, SL_E_INVALID, "%u disks, the limit is %d", m->ndisks, VMM_MAX_DISKS);
	if (m->vsock_cid && (m->vsock_cid < 3 || m->vsock_cid == UINT32_MAX))
		return sl_error_set(err, SL_E_INVALID, "vsock CID %u: guests take 3..2^32-2", m->vsock_cid);
	if (m->vcpus > ACPI_MAX_VCPUS)
		return sl_error_set(err, SL_E_INVALID, "%u vCPUs: ACPI describes at most %u", m->vcpus, ACPI_MAX_VCPUS);
	struct vmm_linux *l = calloc(1, sizeof(*l));
	if (!l)
		return sl_error_set(err, SL_E_NOMEM, "Linux platform");
	vm->lnx = l;
	if (m->platform == VMM_PLATFORM_BARE) {
		l->bare = true;
		if (!m->vsock_cid)
			return sl_error_set(err, SL_E_INVALID, "a bare machine takes a vsock device only");
		return add_slot(vm, l, SLOT_VSOCK, 0, err);
	}
	l->sleep_port = ACPI_SLEEP_PORT_DEFAULT;
	if (vmm_pio_register(vm, l->sleep_port, 1, &sleep_ops, l, err) < 0)
		return sl_error_wrap(err, "ACPI sleep register");
	if (add_slot(vm, l, SLOT_RNG, 0, err) < 0)
		return -1;
	if (m->vsock_cid && add_slot(vm, l, SLOT_VSOCK, 0, err) < 0)
		return -1;
	for (unsigned d = 0; d < m->ndisks; d++)
		if (add_slot(vm, l, SLOT_BLK, d, err) < 0)
			return -1;
	return 0;
}

void vmm_linux_free(struct vmm_vm *vm)
{
	struct vmm_linux *l = vm->lnx;
	if (!l)
		return;
	for (unsigned i = 0; i < l->nslots; i++) {
		virtio_rng_free(l->slot[i].rng);
		virtio_vsock_free(l->slot[i].vsock);
		virtio_blk_free(l->slot[i].blk);
	}
	free(l);
	vm->lnx = NULL;
}

int vmm_linux_build_acpi(struct vmm_vm *vm, uint8_t *buf, size_t cap, uint64_t gpa, struct acpi_layout *lay,
			 sl_error_t *err)
{
	struct vmm_linux *l = vm->lnx;
	if (!l || l->bare)
		return sl_error_set(err, SL_E_INVALID, "a Linux kernel needs a machine of the Linux platform");
	struct acpi_virtio_mmio dev[LINUX_MAX_SLOTS];
	for (unsigned i = 0; i < l->nslots; i++)
		dev[i] = (struct acpi_virtio_mmio){
			.base = slot_base(i), .size = VIRTIO_MMIO_SIZE, .gsi = slot_gsi(i), .level = true};
	struct acpi_config cfg = {.vcpus = vm->machine.vcpus,
				  .virtio = dev,
				  .nvirtio = vm->machine.virtio_cmdline ? 0 : l->nslots,
				  .vmgenid = true,
				  .vmgenid_gsi = LINUX_GED_GSI,
				  .sleep_port = l->sleep_port};
	if (acpi_build(&cfg, buf, cap, gpa, lay, err) < 0)
		return -1;
	l->vmgenid_gpa = lay->vmgenid_gpa;
	vmm_linux_publish_generation(vm, false);
	return 0;
}

void vmm_linux_publish_generation(struct vmm_vm *vm, bool notify)
{
	struct vmm_linux *l = vm->lnx;
	if (!l || !l->vmgenid_gpa)
		return;
	uint8_t *p = vmm_gpa(vm, l->vmgenid_gpa, ACPI_VMGENID_SIZE);
	if (!p)
		return;
	memcpy(p, vm->sdev.id, ACPI_VMGENID_SIZE);
	if (!notify)
		return;
	/* The GED's _EVT does Notify(VGEN, 0x80): Linux's vmgenid driver
	 * rereads the id and reseeds its CRNG before userspace runs on. The
	 * line is edge-triggered, so a pulse. */
	sl_error_t err = NULL;
	if (vmm_irq_line(vm, LINUX_GED_GSI, 1, &err) == 0)
		vmm_irq_line(vm, LINUX_GED_GSI, 0, &err);
	sl_error_free(&err);
}

int vmm_linux_start_io(struct vmm_vm *vm, sl_error_t *err)
{
	for (unsigned i = 0; vm->lnx && i < vm->lnx->nslots; i++)
		if (vm->lnx->slot[i].vsock && virtio_vsock_start(vm->lnx->slot[i].vsock, err) < 0)
			return -1;
	return 0;
}

void vmm_linux_pause_io(struct vmm_vm *vm)
{
	for (unsigned i = 0; vm->lnx && i < vm->lnx->nslots; i++)
		if (vm->lnx->slot[i].vsock)
			virtio_vsock_pause(vm->lnx->slot[i].vsock);
}

void vmm_linux_resume_io(struct vmm_vm *vm)
{
	for (unsigned i = 0; vm->lnx && i < vm->lnx->nslots; i++)
		if (vm->lnx->slot[i].vsock)
			virtio_vsock_resume(vm->lnx->slot[i].vsock);
}

int vmm_linux_save(struct vmm_vm *vm, struct sf_writer *w, sl_error_t *err)
{
	struct vmm_linux *l = vm->lnx;
	if (!l)
		return 0;
	struct platform_state_v1 ps = {.version = PLATFORM_STATE_VERSION,
				       .nslots = l->nslots,
				       .vmgenid_gpa = l->vmgenid_gpa,
				       .ged_gsi = ged_gsi(l),
				       .sleep_port = l->sleep_port};
	for (unsigned i = 0; i < l->nslots; i++) {
		struct virtio_mmio_state_v1 s;
		if (virtio_mmio_save(l->slot[i].t, &s, err) < 0)
			return sl_error_wrap(err, "device slot %u", i);
		ps.slot_device_id[i] = s.device_id;
		sf_add(w, SF_VIRTIO_FIRST + i, &s, sizeof(s));
	}
	sf_add(w, SF_PLATFORM, &ps, sizeof(ps));
	return 0;
}

int vmm_linux_load(struct vmm_vm *vm, const struct sf_file *f, const char *what, sl_error_t *err)
{
	struct vmm_linux *l = vm->lnx;
	const struct sf_section *s;
	bool has = false;
	for (uint32_t i = 0; i < f->nsec; i++)
		has |= f->sec[i].tag == SF_PLATFORM;
	if (!l) {
		if (has)
			return sl_error_set(err, SL_E_INVALID, "%s: Linux platform state, but the machine is bare", what);
		return 0;
	}
	if (!has)
		return sl_error_set(err, SL_E_INVALID, "%s: no Linux platform state for a Linux machine", what);
	if (sf_get(f, SF_PLATFORM, sizeof(struct platform_state_v1), what, &s, err) < 0)
		return -1;
	struct platform_state_v1 ps;
	memcpy(&ps, s->data, sizeof(ps));
	if (ps.version != PLATFORM_STATE_VERSION)
		return sl_error_set(err, SL_E_UNSUPPORTED, "%s: platform state version %u, this build reads %u", what,
				    ps.version, PLATFORM_STATE_VERSION);
	if (ps.nslots != l->nslots || ps.ged_gsi != ged_gsi(l) || ps.sleep_port != l->sleep_port)
		return sl_error_set(err, SL_E_INVALID,
				    "%s: device layout differs from this machine's (%u slots, GED %u, port 0x%x; "
				    "machine: %u, %u, 0x%x)",
				    what, ps.nslots, ps.ged_gsi, ps.sleep_port, l->nslots, ged_gsi(l), l->sleep_port);
	if (ps.vmgenid_gpa && ((ps.vmgenid_gpa & 7) || !vmm_gpa(vm, ps.vmgenid_gpa, ACPI_VMGENID_SIZE)))
		return sl_error_set(err, SL_E_INVALID, "%s: VMGenID at 0x%llx is outside RAM", what,
				    (unsigned long long)ps.vmgenid_gpa);
	for (unsigned i = 0; i < l->nslots; i++) {
		if (sf_get(f, SF_VIRTIO_FIRST + i, sizeof(struct virtio_mmio_state_v1), what, &s, err) < 0)
			return -1;
		struct virtio_mmio_state_v1 vs;
		memcpy(&vs, s->data, sizeof(vs));
		if (virtio_mmio_load(l->slot[i].t, &vs, err) < 0)
			return sl_error_wrap(err, "%s: device slot %u", what, i);
	}
	l->vmgenid_gpa = ps.vmgenid_gpa;
	return 0;
}

int vmm_linux_restored(struct vmm_vm *vm, sl_error_t *err)
{
	struct vmm_linux *l = vm->lnx;
	if (!l)
		return 0;
	for (unsigned i = 0; i < l->nslots; i++) {
		/* KVM keeps no per-source line levels in the irqchip state: a
		 * device with a pending interrupt raises its line again. */
		virtio_mmio_sync_irq(l->slot[i].t);
		if (l->slot[i].vsock && virtio_vsock_restored(l->slot[i].vsock, err) < 0)
			return sl_error_wrap(err, "vsock");
	}
	return 0;
}

int vmm_linux_virtio_cmdline(unsigned nslots, char *buf, size_t cap)
{
	size_t len = 0;
	if (cap)
		buf[0] = '\0';
	for (unsigned i = 0; i < nslots; i++) {
		/* Linux's format: <size>@<baseaddr>:<irq>, size with a K suffix. */
		int n = snprintf(buf + len, cap - len, "%svirtio_mmio.device=%uK@0x%llx:%u", i ? " " : "",
				 VIRTIO_MMIO_SIZE / 1024, (unsigned long long)slot_base(i), slot_gsi(i));
		if (n < 0 || (size_t)n >= cap - len)
			return -1;
		len += (size_t)n;
	}
	return (int)len;
}

unsigned vmm_linux_nslots(struct vmm_vm *vm)
{
	return vm->lnx ? vm->lnx->nslots : 0;
}

unsigned vmm_linux_ndisks(struct vmm_vm *vm)
{
	unsigned n = 0;
	for (unsigned i = 0; vm->lnx && i < vm->lnx->nslots; i++)
		n += vm->lnx->slot[i].kind == SLOT_BLK;
	return n;
}

bool vmm_linux_vsock_slot(struct vmm_vm *vm, uint64_t *base, uint32_t *gsi)
{
	for (unsigned i = 0; vm->lnx && i < vm->lnx->nslots; i++)
		if (vm->lnx->slot[i].kind == SLOT_VSOCK) {
			*base = slot_base(i);
			*gsi = slot_gsi(i);
			return true;
		}
	return false;
}

int vmm_linux_disk_fd(struct vmm_vm *vm, unsigned disk)
{
	for (unsigned i = 0, n = 0; vm->lnx && i < vm->lnx->nslots; i++)
		if (vm->lnx->slot[i].kind == SLOT_BLK && n++ == disk)
			return virtio_blk_fd(vm->lnx->slot[i].blk);
	return -1;
}
