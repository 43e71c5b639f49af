/* Saving and loading VM-wide state: CPUID, irqchips, PIT, clock, devices. */
#include <string.h>
#include <sys/ioctl.h>

#include "platform_linux.h"
#include "state_file.h"
#include "vmm_internal.h"
#include "vmm_state.h"

/* Device state layouts, version 1 (docs/spore-format.md). */
struct serial_state_v1 {
	uint8_t ier, lcr, mcr, scr, dll, dlm, fcr, pad;
};
struct spore_dev_state_v1 {
	uint64_t gen_gpa;
	uint64_t counter;
	uint8_t id[16];
	uint32_t gen_lo;
	uint32_t pad;
};

int vmm_vm_save(struct vmm_vm *vm, uint8_t **out, size_t *len, sl_error_t *err)
{
	struct sf_writer w;
	sf_writer_init(&w, SF_KIND_VM);
	sf_add(&w, SF_CPUID, vm->cpuid->entries, vm->cpuid->nent * sizeof(struct kvm_cpuid_entry2));
	static const uint32_t chips[] = {KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC};
	static const uint32_t tags[] = {SF_PIC_MASTER, SF_PIC_SLAVE, SF_IOAPIC};
	for (int i = 0; i < 3; i++) {
		struct kvm_irqchip c = {.chip_id = chips[i]};
		if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &c) < 0) {
			free(w.buf);
			return sl_error_sys(err, "KVM_GET_IRQCHIP %u", chips[i]);
		}
		sf_add(&w, tags[i], &c, sizeof(c));
	}
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock = {0};
	if (ioctl(vm->vm_fd, KVM_GET_PIT2, &pit) < 0 || ioctl(vm->vm_fd, KVM_GET_CLOCK, &clock) < 0) {
		free(w.buf);
		return sl_error_sys(err, "read PIT or clock state");
	}
	sf_add(&w, SF_PIT2, &pit, sizeof(pit));
	/* Only the clock value travels; host-specific flags and realtime do not. */
	struct kvm_clock_data c = {.clock = clock.clock};
	sf_add(&w, SF_CLOCK, &c, sizeof(c));
	struct vmm_serial *s = &vm->serial;
	pthread_mutex_lock(&s->lock);
	struct serial_state_v1 ss = {s->ier, s->lcr, s->mcr, s->scr, s->dll, s->dlm, s->fcr, 0};
	pthread_mutex_unlock(&s->lock);
	sf_add(&w, SF_SERIAL, &ss, sizeof(ss));
	struct spore_dev_state_v1 ds = {.gen_gpa = vm->sdev.gen_gpa, .counter = vm->sdev.counter,
					.gen_lo = vm->sdev.gen_lo};
	memcpy(ds.id, vm->sdev.id, sizeof(ds.id));
	sf_add(&w, SF_SPORE_DEV, &ds, sizeof(ds));
	if (vmm_linux_save(vm, &w, err) < 0) {
		free(w.buf);
		return -1;
	}
	*out = sf_finish(&w, len, err);
	return *out ? 0 : -1;
}

int vmm_vm_load_cpuid(struct vmm_vm *vm, const uint8_t *buf, size_t len, const char *what,
		      sl_error_t *err)
{
	struct sf_file f;
	const struct sf_section *cs;
	if (sf_parse(buf, len, SF_KIND_VM, what, &f, err) < 0 || sf_get(&f, SF_CPUID, 0, what, &cs, err) < 0)
		return -1;
	size_t ent = sizeof(struct kvm_cpuid_entry2);
	if (cs->len == 0 || cs->len % ent || cs->len / ent > 256)
		return sl_error_set(err, SL_E_INVALID, "%s: malformed CPUID section", what);
	size_t n = cs->len / ent;
	/* Usually the spore was captured on a host like this one, so its table
	 * is the very one this VM was created with: this host meets it by
	 * construction and every vCPU already has it (0.5 ms of ioctls saved). */
	if (vm->cpuid && vm->cpuid->nent == n && memcmp(vm->cpuid->entries, cs->data, cs->len) == 0)
		return 0;
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + cs->len);
	if (!c)
		return sl_error_set(err, SL_E_NOMEM, "cpuid table");
	c->nent = (uint32_t)n;
	memcpy(c->entries, cs->data, cs->len);
	if (vmm_cpuid_check_host(vm->kvm_fd, c, err) < 0) {
		free(c);
		return -1;
	}
	free(vm->cpuid);
	vm->cpuid = c;
	for (unsigned i = 0; i < vm->machine.vcpus; i++)
		if (vmm_cpuid_set_vcpu(vm, &vm->vcpus[i], err) < 0)
			return -1;
	return 0;
}

_Static_assert(sizeof(struct serial_state_v1) == sizeof(((struct vmm_vm_state *)0)->serial), "serial state size");
_Static_assert(sizeof(struct spore_dev_state_v1) == sizeof(((struct vmm_vm_state *)0)->spore_dev), "spore device state size");

int vmm_vm_state_decode(const struct vmm_vm *vm, const uint8_t *buf, size_t len, const char *what,
			struct vmm_vm_state *st, sl_error_t *err)
{
	memset(st, 0, sizeof(*st));
	if (sf_parse(buf, len, SF_KIND_VM, what, &st->f, err) < 0)
		return -1;
	static const uint32_t chips[] = {KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC};
	static const uint32_t tags[] = {SF_PIC_MASTER, SF_PIC_SLAVE, SF_IOAPIC};
	const struct sf_section *s;
	for (int i = 0; i < 3; i++) {
		if (sf_get(&st->f, tags[i], sizeof(struct kvm_irqchip), what, &s, err) < 0)
			return -1;
		memcpy(&st->chips[i], s->data, sizeof(st->chips[i]));
		if (st->chips[i].chip_id != chips[i])
			return sl_error_set(err, SL_E_INVALID, "%s: irqchip section %u has chip id %u",
					    what, tags[i], st->chips[i].chip_id);
	}
	if (sf_get(&st->f, SF_PIT2, sizeof(struct kvm_pit_state2), what, &s, err) < 0)
		return -1;
	memcpy(&st->pit, s->data, sizeof(st->pit));
	if (sf_get(&st->f, SF_CLOCK, sizeof(struct kvm_clock_data), what, &s, err) < 0)
		return -1;
	memcpy(&st->clock, s->data, sizeof(st->clock));
	st->clock.flags = 0;
	st->clock.realtime = 0;
	st->clock.host_tsc = 0;
	if (sf_get(&st->f, SF_SERIAL, sizeof(struct serial_state_v1), what, &s, err) < 0)
		return -1;
	memcpy(st->serial, s->data, sizeof(st->serial));
	if (sf_get(&st->f, SF_SPORE_DEV, sizeof(struct spore_dev_state_v1), what, &s, err) < 0)
		return -1;
	memcpy(st->spore_dev, s->data, sizeof(st->spore_dev));
	struct spore_dev_state_v1 ds;
	memcpy(&ds, st->spore_dev, sizeof(ds));
	if (ds.gen_gpa && ((ds.gen_gpa & 7) || !vmm_gpa((struct vmm_vm *)vm, ds.gen_gpa, 32)))
		return sl_error_set(err, SL_E_INVALID, "%s: generation buffer 0x%llx outside RAM", what,
				    (unsigned long long)ds.gen_gpa);
	return 0;
}

int vmm_vm_load(struct vmm_vm *vm, const uint8_t *buf, size_t len, const char *what, sl_error_t *err)
{
	struct vmm_vm_state st;
	if (vmm_vm_state_decode(vm, buf, len, what, &st, err) < 0)
		return -1;
	for (int i = 0; i < 3; i++)
		if (ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &st.chips[i]) < 0)
			return sl_error_sys(err, "%s: KVM_SET_IRQCHIP %u", what, st.chips[i].chip_id);
	if (ioctl(vm->vm_fd, KVM_SET_PIT2, &st.pit) < 0)
		return sl_error_sys(err, "%s: KVM_SET_PIT2", what);
	if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &st.clock) < 0)
		return sl_error_sys(err, "%s: KVM_SET_CLOCK", what);
	struct serial_state_v1 ss;
	memcpy(&ss, st.serial, sizeof(ss));
	struct vmm_serial *se = &vm->serial;
	se->ier = ss.ier & 0x0f;
	se->lcr = ss.lcr;
	se->mcr = ss.mcr & 0x1f;
	se->scr = ss.scr;
	se->dll = ss.dll;
	se->dlm = ss.dlm;
	se->fcr = ss.fcr;
	/* The transmitter is empty after a restore: a guest that waits for the
	 * transmitter-empty interrupt must get one, or its tty stalls. */
	se->thri = (se->ier & 0x02) != 0;
	if (se->thri) {
		sl_error_t ierr = NULL;
		if (vmm_irq_line(vm, 4, 1, &ierr) == 0)
			vmm_irq_line(vm, 4, 0, &ierr);
		sl_error_free(&ierr);
	}
	struct spore_dev_state_v1 ds;
	memcpy(&ds, st.spore_dev, sizeof(ds));
	vm->sdev.gen_gpa = ds.gen_gpa;
	vm->sdev.gen_lo = ds.gen_lo;
	vm->sdev.counter = ds.counter;
	memcpy(vm->sdev.id, ds.id, sizeof(ds.id));
	return vmm_linux_load(vm, &st.f, what, err);
}
