/* The MSRs a capture saves: KVM's save list plus the KVM paravirtual range. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmm_internal.h"

#define MSR_IA32_TSC 0x10
#define MSR_IA32_TSC_DEADLINE 0x6e0

static pthread_mutex_t msr_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t *msr_cache;
static unsigned msr_count;

static int cmp_msr(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	/* TSC first and TSC_DEADLINE last: KVM applies MSRs in array order and
	 * a deadline is only meaningful relative to the restored TSC. */
	int rx = x == MSR_IA32_TSC ? 0 : x == MSR_IA32_TSC_DEADLINE ? 2 : 1;
	int ry = y == MSR_IA32_TSC ? 0 : y == MSR_IA32_TSC_DEADLINE ? 2 : 1;
	if (rx != ry)
		return rx - ry;
	return x < y ? -1 : x > y;
}

/* An MSR is saved only if KVM both reads it and accepts the value back:
 * some paravirtual MSRs (PVM's, for one) are readable but not settable,
 * and a capture that could never be restored is worse than useless. */
static bool saveable(struct vmm_vcpu *v, uint32_t index)
{
	union {
		struct kvm_msrs h;
		uint8_t raw[sizeof(struct kvm_msrs) + sizeof(struct kvm_msr_entry)];
	} m;
	memset(&m, 0, sizeof(m));
	m.h.nmsrs = 1;
	m.h.entries[0].index = index;
	if (ioctl(v->fd, KVM_GET_MSRS, &m) != 1)
		return false;
	/* The probe may run on a live vCPU at its first capture: writing the
	 * time-stamp counter back would step the guest's clock. */
	if (index == MSR_IA32_TSC || index == MSR_IA32_TSC_DEADLINE)
		return true;
	return ioctl(v->fd, KVM_SET_MSRS, &m) == 1;
}

int vmm_msr_list(struct vmm_vm *vm, struct vmm_vcpu *probe, const uint32_t **list, unsigned *n,
		 sl_error_t *err)
{
	pthread_mutex_lock(&msr_lock);
	if (msr_cache) {
		*list = msr_cache;
		*n = msr_count;
		pthread_mutex_unlock(&msr_lock);
		return 0;
	}
	struct kvm_msr_list probe_hdr = {.nmsrs = 0};
	if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe_hdr) < 0 && errno != E2BIG) {
		pthread_mutex_unlock(&msr_lock);
		return sl_error_sys(err, "KVM_GET_MSR_INDEX_LIST");
	}
	unsigned cap = probe_hdr.nmsrs + 256;
	_cleanup_free_ struct kvm_msr_list *l = calloc(1, sizeof(*l) + cap * sizeof(uint32_t));
	uint32_t *out = calloc(cap, sizeof(uint32_t));
	if (!l || !out) {
		free(out);
		pthread_mutex_unlock(&msr_lock);
		return sl_error_set(err, SL_E_NOMEM, "MSR list");
	}
	l->nmsrs = probe_hdr.nmsrs;
	if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, l) < 0) {
		free(out);
		pthread_mutex_unlock(&msr_lock);
		return sl_error_sys(err, "KVM_GET_MSR_INDEX_LIST");
	}
	unsigned k = 0;
	for (unsigned i = 0; i < l->nmsrs; i++)
		if (saveable(probe, l->indices[i]))
			out[k++] = l->indices[i];
	/* The whole KVM paravirtual range (async PF, steal time, PV EOI, ...),
	 * some of which older kernels leave out of the index list. */
	for (uint32_t idx = 0x4b564d00; idx <= 0x4b564dff && k < cap; idx++) {
		bool dup = false;
		for (unsigned j = 0; j < k && !dup; j++)
			dup = out[j] == idx;
		if (!dup && saveable(probe, idx))
			out[k++] = idx;
	}
	qsort(out, k, sizeof(uint32_t), cmp_msr);
	msr_cache = out;
	msr_count = k;
	*list = out;
	*n = k;
	pthread_mutex_unlock(&msr_lock);
	return 0;
}
