/* Machine lifecycle: create, start, pause, resume, events, destroy. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>

#include "platform_linux.h"
#include "vmm_internal.h"

uint64_t vmm_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

const char *vmm_version(void)
{
	return SPORELET_VERSION;
}

void vmm_post_event(struct vmm_vm *vm, int kind, int code, const char *fmt, ...)
{
	pthread_mutex_lock(&vm->lock);
	/* One pending event per kind: a guest hammering READY or a burst of
	 * output can never push an EXIT or ERROR out of the queue. */
	for (unsigned i = 0; i < vm->evq_len; i++) {
		if (vm->evq[(vm->evq_head + i) % VMM_EVQ].kind == kind) {
			pthread_mutex_unlock(&vm->lock);
			return;
		}
	}
	if (vm->evq_len < VMM_EVQ) {
		struct vmm_event *ev = &vm->evq[(vm->evq_head + vm->evq_len) % VMM_EVQ];
		ev->kind = kind;
		ev->code = code;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(ev->msg, sizeof(ev->msg), fmt, ap);
		va_end(ap);
		vm->evq_len++;
	}
	pthread_mutex_unlock(&vm->lock);
	uint64_t one = 1;
	ssize_t n = write(vm->event_fd, &one, sizeof(one));
	(void)n;
}

int vmm_event_fd(struct vmm_vm *vm)
{
	return vm->event_fd;
}

int vmm_next_event(struct vmm_vm *vm, struct vmm_event *ev)
{
	uint64_t v;
	ssize_t n = read(vm->event_fd, &v, sizeof(v));
	(void)n;
	pthread_mutex_lock(&vm->lock);
	if (vm->evq_len == 0) {
		ev->kind = VMM_EV_NONE;
	} else {
		*ev = vm->evq[vm->evq_head];
		vm->evq_head = (vm->evq_head + 1) % VMM_EVQ;
		vm->evq_len--;
		if (vm->evq_len) {
			uint64_t one = 1;
			n = write(vm->event_fd, &one, sizeof(one));
		}
	}
	pthread_mutex_unlock(&vm->lock);
	return 0;
}

static int check_machine(const struct vmm_machine *m, sl_error_t *err)
{
	if (m->vcpus < 1 || m->vcpus > VMM_MAX_VCPUS)
		return sl_error_set(err, SL_E_INVALID, "vcpus must be 1..%d, got %u", VMM_MAX_VCPUS,
				    m->vcpus);
	if (m->platform != VMM_PLATFORM_BARE && m->platform != VMM_PLATFORM_LINUX)
		return sl_error_set(err, SL_E_INVALID, "unknown machine platform %d", (int)m->platform);
	if (m->platform == VMM_PLATFORM_BARE && m->ndisks)
		return sl_error_set(err, SL_E_INVALID, "disks need the Linux platform (a bzImage kernel)");
	if (m->mem_mib < 2 || m->mem_mib > VMM_MAX_MEM_MIB || m->mem_mib % 2)
		return sl_error_set(err, SL_E_INVALID,
				    "memory must be an even number of MiB in 2..%u, got %llu",
				    VMM_MAX_MEM_MIB, (unsigned long long)m->mem_mib);
	return 0;
}

int vmm_create(const struct vmm_machine *m, const struct vmm_console *con, struct vmm_vm **out,
	       sl_error_t *err)
{
	if (check_machine(m, err) < 0)
		return -1;
	struct vmm_vm *vm = calloc(1, sizeof(*vm));
	if (!vm)
		return sl_error_set(err, SL_E_NOMEM, "VM context");
	vm->machine = *m;
	vm->kvm_fd = vm->vm_fd = -1;
	vm->src_dirfd = -1;
	vm->pagemap_fd = -1;
	for (unsigned i = 0; i < VMM_MAX_VCPUS; i++)
		vm->vcpus[i].fd = -1;
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->cond, NULL);
	atomic_store(&vm->run_state, VCPU_PAUSE);
	vm->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->event_fd < 0) {
		sl_error_sys(err, "eventfd");
		goto fail;
	}
	/* The RAM slot goes in before the irqchip: on the hosts we measured, a
	 * VM's first memory slot added after KVM_CREATE_IRQCHIP costs 5-11 ms,
	 * added before it 0.1-0.2 ms (docs/performance.md). */
	if (vmm_kvm_open(&vm->kvm_fd, err) < 0 || vmm_kvm_check_caps(vm->kvm_fd, err) < 0 ||
	    vmm_kvm_create_vm(vm, err) < 0 || vmm_mem_alloc(vm, err) < 0 ||
	    vmm_kvm_set_memory(vm, err) < 0 || vmm_kvm_create_irqchip(vm, err) < 0)
		goto fail;
	for (unsigned i = 0; i < m->vcpus; i++)
		if (vmm_vcpu_create(vm, i, err) < 0)
			goto fail;
	int khz = ioctl(vm->vcpus[0].fd, KVM_GET_TSC_KHZ, 0);
	if (khz <= 0) {
		sl_error_sys(err, "KVM_GET_TSC_KHZ");
		goto fail;
	}
	vm->tsc_khz = (uint32_t)khz;
	if (vmm_cpuid_normalise(vm, err) < 0)
		goto fail;
	for (unsigned i = 0; i < m->vcpus; i++)
		if (vmm_cpuid_set_vcpu(vm, &vm->vcpus[i], err) < 0)
			goto fail;
	if (vmm_serial_init(vm, con, err) < 0 || vmm_spore_dev_init(vm, err) < 0)
		goto fail;
	/* A bare machine has no platform devices unless it asked for vsock. */
	if ((m->platform == VMM_PLATFORM_LINUX || m->vsock_cid) && vmm_linux_create(vm, err) < 0)
		goto fail;
	*out = vm;
	return 0;
fail:
	sl_error_wrap(err, "create VM (%u vcpus, %llu MiB)", m->vcpus,
		      (unsigned long long)m->mem_mib);
	vmm_destroy(vm);
	return -1;
}

int vmm_start(struct vmm_vm *vm, sl_error_t *err)
{
	if (vm->started)
		return vmm_resume(vm, err);
	if (vmm_linux_start_io(vm, err) < 0)
		return -1;
	atomic_store(&vm->run_state, VCPU_RUN);
	vm->started = true;
	for (unsigned i = 0; i < vm->machine.vcpus; i++)
		if (vmm_vcpu_start_thread(&vm->vcpus[i], err) < 0)
			return -1;
	return 0;
}

int vmm_pause(struct vmm_vm *vm, sl_error_t *err)
{
	(void)err;
	if (!vm->started)
		return 0;
	pthread_mutex_lock(&vm->lock);
	if (atomic_load(&vm->run_state) == VCPU_RUN)
		atomic_store(&vm->run_state, VCPU_PAUSE);
	pthread_mutex_unlock(&vm->lock);
	for (unsigned i = 0; i < vm->machine.vcpus; i++)
		vmm_vcpu_kick(&vm->vcpus[i]);
	pthread_mutex_lock(&vm->lock);
	while (vm->parked < vm->machine.vcpus)
		pthread_cond_wait(&vm->cond, &vm->lock);
	pthread_mutex_unlock(&vm->lock);
	return 0;
}

int vmm_resume(struct vmm_vm *vm, sl_error_t *err)
{
	(void)err;
	pthread_mutex_lock(&vm->lock);
	atomic_store(&vm->run_state, VCPU_RUN);
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	return 0;
}

void vmm_generation(struct vmm_vm *vm, uint64_t *counter, char id_hex[33])
{
	*counter = vm->sdev.counter;
	for (int i = 0; i < 16; i++)
		snprintf(id_hex + 2 * i, 3, "%02x", vm->sdev.id[i]);
}

void vmm_destroy(struct vmm_vm *vm)
{
	if (!vm)
		return;
	if (vm->started) {
		pthread_mutex_lock(&vm->lock);
		atomic_store(&vm->run_state, VCPU_EXIT);
		pthread_cond_broadcast(&vm->cond);
		pthread_mutex_unlock(&vm->lock);
		for (unsigned i = 0; i < vm->machine.vcpus; i++)
			if (vm->vcpus[i].thread_started)
				vmm_vcpu_kick(&vm->vcpus[i]);
		for (unsigned i = 0; i < vm->machine.vcpus; i++)
			if (vm->vcpus[i].thread_started)
				pthread_join(vm->vcpus[i].thread, NULL);
		vmm_serial_flush(vm);
	}
	/* Devices go before guest memory: an I/O thread may still touch it. */
	vmm_linux_free(vm);
	for (unsigned i = 0; i < VMM_MAX_VCPUS; i++)
		if (vm->vcpus[i].fd >= 0)
			vmm_vcpu_destroy(&vm->vcpus[i]);
	vmm_mem_free(vm);
	free(vm->cpuid);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	if (vm->event_fd >= 0)
		close(vm->event_fd);
	if (vm->src_dirfd >= 0 && vm->src_dirfd_valid)
		close(vm->src_dirfd);
	free(vm->src_path);
	if (vm->pagemap_fd >= 0)
		close(vm->pagemap_fd);
	pthread_mutex_destroy(&vm->lock);
	pthread_cond_destroy(&vm->cond);
	free(vm);
}
