/* Saving and loading one vCPU's architectural state (KVM UAPI structures). */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "state_file.h"
#include "vmm_internal.h"
#include "vmm_state.h"

static int xsave_size(struct vmm_vm *vm)
{
	int sz = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	return sz > (int)sizeof(struct kvm_xsave) ? sz : (int)sizeof(struct kvm_xsave);
}

int vmm_vcpu_save(struct vmm_vm *vm, struct vmm_vcpu *v, uint8_t **out, size_t *out_len,
		  sl_error_t *err)
{
	struct sf_writer w;
	sf_writer_init(&w, SF_KIND_VCPU);
	struct kvm_mp_state mp;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events ev;
	struct kvm_debugregs dr;
	if (ioctl(v->fd, KVM_GET_MP_STATE, &mp) < 0 || ioctl(v->fd, KVM_GET_REGS, &regs) < 0 ||
	    ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0 || ioctl(v->fd, KVM_GET_XCRS, &xcrs) < 0 ||
	    ioctl(v->fd, KVM_GET_LAPIC, &lapic) < 0 || ioctl(v->fd, KVM_GET_VCPU_EVENTS, &ev) < 0 ||
	    ioctl(v->fd, KVM_GET_DEBUGREGS, &dr) < 0) {
		free(w.buf);
		return sl_error_sys(err, "read state of vcpu %u", v->index);
	}
	int xs = xsave_size(vm);
	_cleanup_free_ struct kvm_xsave *xsave = calloc(1, (size_t)xs);
	if (!xsave) {
		free(w.buf);
		return sl_error_set(err, SL_E_NOMEM, "xsave buffer");
	}
	unsigned long req = xs > (int)sizeof(struct kvm_xsave) ? KVM_GET_XSAVE2 : KVM_GET_XSAVE;
	if (ioctl(v->fd, req, xsave) < 0) {
		free(w.buf);
		return sl_error_sys(err, "KVM_GET_XSAVE (vcpu %u)", v->index);
	}
	const uint32_t *list;
	unsigned n;
	if (vmm_msr_list(vm, v, &list, &n, err) < 0) {
		free(w.buf);
		return -1;
	}
	_cleanup_free_ struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + n * sizeof(struct kvm_msr_entry));
	if (!msrs) {
		free(w.buf);
		return sl_error_set(err, SL_E_NOMEM, "MSR buffer");
	}
	msrs->nmsrs = n;
	for (unsigned i = 0; i < n; i++)
		msrs->entries[i].index = list[i];
	int got = ioctl(v->fd, KVM_GET_MSRS, msrs);
	if (got != (int)n) {
		free(w.buf);
		return sl_error_set(err, SL_E_KVM, "KVM_GET_MSRS (vcpu %u): read %d of %u MSRs, stopped at 0x%x",
				    v->index, got, n, got >= 0 && got < (int)n ? list[got] : 0);
	}
	int khz = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
	if (khz <= 0) {
		free(w.buf);
		return sl_error_sys(err, "KVM_GET_TSC_KHZ (vcpu %u)", v->index);
	}
	uint32_t tsc_khz = (uint32_t)khz;
	sf_add(&w, SF_MP_STATE, &mp, sizeof(mp));
	sf_add(&w, SF_REGS, &regs, sizeof(regs));
	sf_add(&w, SF_SREGS, &sregs, sizeof(sregs));
	sf_add(&w, SF_XSAVE, xsave, (size_t)xs);
	sf_add(&w, SF_XCRS, &xcrs, sizeof(xcrs));
	sf_add(&w, SF_DEBUGREGS, &dr, sizeof(dr));
	sf_add(&w, SF_LAPIC, &lapic, sizeof(lapic));
	sf_add(&w, SF_MSRS, msrs->entries, n * sizeof(struct kvm_msr_entry));
	sf_add(&w, SF_EVENTS, &ev, sizeof(ev));
	sf_add(&w, SF_TSC_KHZ, &tsc_khz, sizeof(tsc_khz));
	*out = sf_finish(&w, out_len, err);
	return *out ? 0 : -1;
}

/* Loads in the order KVM needs: mp_state, regs, sregs, xsave, xcrs,
 * debugregs, LAPIC, MSRs (TSC before TSC_DEADLINE), events. */
int vmm_vcpu_state_decode(const uint8_t *buf, size_t len, int xsave_max, const char *what,
			  struct vmm_vcpu_state *st, sl_error_t *err)
{
	memset(st, 0, sizeof(*st));
	struct sf_file f;
	if (sf_parse(buf, len, SF_KIND_VCPU, what, &f, err) < 0)
		return -1;
	const struct sf_section *mp, *regs, *sregs, *xsave, *xcrs, *dr, *lapic, *msrs, *ev, *khz;
	if (sf_get(&f, SF_MP_STATE, sizeof(struct kvm_mp_state), what, &mp, err) < 0 ||
	    sf_get(&f, SF_REGS, sizeof(struct kvm_regs), what, &regs, err) < 0 ||
	    sf_get(&f, SF_SREGS, sizeof(struct kvm_sregs), what, &sregs, err) < 0 ||
	    sf_get(&f, SF_XSAVE, 0, what, &xsave, err) < 0 ||
	    sf_get(&f, SF_XCRS, sizeof(struct kvm_xcrs), what, &xcrs, err) < 0 ||
	    sf_get(&f, SF_DEBUGREGS, sizeof(struct kvm_debugregs), what, &dr, err) < 0 ||
	    sf_get(&f, SF_LAPIC, sizeof(struct kvm_lapic_state), what, &lapic, err) < 0 ||
	    sf_get(&f, SF_MSRS, 0, what, &msrs, err) < 0 ||
	    sf_get(&f, SF_EVENTS, sizeof(struct kvm_vcpu_events), what, &ev, err) < 0 ||
	    sf_get(&f, SF_TSC_KHZ, sizeof(uint32_t), what, &khz, err) < 0)
		return -1;
	if (xsave->len < sizeof(struct kvm_xsave) || xsave->len > (uint64_t)xsave_max)
		return sl_error_set(err, SL_E_UNSUPPORTED,
				    "%s: xsave area of %llu bytes does not fit this host (%d)", what,
				    (unsigned long long)xsave->len, xsave_max);
	if (msrs->len % sizeof(struct kvm_msr_entry) || msrs->len / sizeof(struct kvm_msr_entry) > 1024)
		return sl_error_set(err, SL_E_INVALID, "%s: malformed MSR section", what);
	/* Copies keep the KVM structures aligned whatever the file's layout. */
	memcpy(&st->tsc_khz, khz->data, sizeof(st->tsc_khz));
	memcpy(&st->mp, mp->data, sizeof(st->mp));
	memcpy(&st->regs, regs->data, sizeof(st->regs));
	memcpy(&st->sregs, sregs->data, sizeof(st->sregs));
	memcpy(&st->xcrs, xcrs->data, sizeof(st->xcrs));
	memcpy(&st->dr, dr->data, sizeof(st->dr));
	memcpy(&st->lapic, lapic->data, sizeof(st->lapic));
	memcpy(&st->ev, ev->data, sizeof(st->ev));
	st->xsave = calloc(1, (size_t)xsave_max);
	st->msrs = calloc(1, sizeof(*st->msrs) + msrs->len);
	if (!st->xsave || !st->msrs) {
		vmm_vcpu_state_free(st);
		return sl_error_set(err, SL_E_NOMEM, "vcpu state buffers");
	}
	memcpy(st->xsave, xsave->data, xsave->len);
	st->msrs->nmsrs = (uint32_t)(msrs->len / sizeof(struct kvm_msr_entry));
	memcpy(st->msrs->entries, msrs->data, msrs->len);
	return 0;
}

void vmm_vcpu_state_free(struct vmm_vcpu_state *st)
{
	free(st->xsave);
	free(st->msrs);
	st->xsave = NULL;
	st->msrs = NULL;
}

static void state_freep(struct vmm_vcpu_state *st)
{
	vmm_vcpu_state_free(st);
}

int vmm_vcpu_load(struct vmm_vm *vm, struct vmm_vcpu *v, const uint8_t *buf, size_t len,
		  const char *what, sl_error_t *err)
{
	__attribute__((cleanup(state_freep))) struct vmm_vcpu_state st = {0};
	if (vmm_vcpu_state_decode(buf, len, xsave_size(vm), what, &st, err) < 0)
		return -1;
	if (st.tsc_khz != vm->tsc_khz && ioctl(v->fd, KVM_SET_TSC_KHZ, st.tsc_khz) < 0)
		return sl_error_set(err, SL_E_UNSUPPORTED,
				    "platform contract not met: spore TSC runs at %u kHz, host at %u kHz and cannot scale",
				    st.tsc_khz, vm->tsc_khz);
	size_t nmsr = st.msrs->nmsrs;
	if (ioctl(v->fd, KVM_SET_MP_STATE, &st.mp) < 0)
		return sl_error_sys(err, "%s: KVM_SET_MP_STATE", what);
	if (ioctl(v->fd, KVM_SET_REGS, &st.regs) < 0)
		return sl_error_sys(err, "%s: KVM_SET_REGS", what);
	if (ioctl(v->fd, KVM_SET_SREGS, &st.sregs) < 0)
		return sl_error_sys(err, "%s: KVM_SET_SREGS", what);
	if (ioctl(v->fd, KVM_SET_XSAVE, st.xsave) < 0)
		return sl_error_sys(err, "%s: KVM_SET_XSAVE", what);
	if (ioctl(v->fd, KVM_SET_XCRS, &st.xcrs) < 0)
		return sl_error_sys(err, "%s: KVM_SET_XCRS", what);
	if (ioctl(v->fd, KVM_SET_DEBUGREGS, &st.dr) < 0)
		return sl_error_sys(err, "%s: KVM_SET_DEBUGREGS", what);
	if (ioctl(v->fd, KVM_SET_LAPIC, &st.lapic) < 0)
		return sl_error_sys(err, "%s: KVM_SET_LAPIC", what);
	int set = ioctl(v->fd, KVM_SET_MSRS, st.msrs);
	if (set != (int)nmsr)
		return sl_error_set(err, SL_E_UNSUPPORTED,
				    "%s: host KVM refused MSR 0x%x (%d of %zu set)", what,
				    set >= 0 && set < (int)nmsr ? st.msrs->entries[set].index : 0, set, nmsr);
	if (ioctl(v->fd, KVM_SET_VCPU_EVENTS, &st.ev) < 0)
		return sl_error_sys(err, "%s: KVM_SET_VCPU_EVENTS", what);
	/* Tell a kvmclock guest it was stopped, so its watchdogs do not fire;
	 * EINVAL just means the guest does not use kvmclock. */
	if (ioctl(v->fd, KVM_KVMCLOCK_CTRL, 0) < 0 && errno != EINVAL)
		return sl_error_sys(err, "%s: KVM_KVMCLOCK_CTRL", what);
	return 0;
}
