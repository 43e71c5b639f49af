/* vCPU threads: KVM_RUN loop, exit dispatch, and parking for pause/capture. */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "vmm_internal.h"

/* A signal whose only job is to make KVM_RUN return with EINTR. */
#define SIG_VCPU_KICK (SIGRTMIN + 1)

static void kick_handler(int sig)
{
	(void)sig;
}

static pthread_once_t kick_once = PTHREAD_ONCE_INIT;
static void install_kick(void)
{
	struct sigaction sa = {.sa_handler = kick_handler};
	sigemptyset(&sa.sa_mask);
	sigaction(SIG_VCPU_KICK, &sa, NULL);
}

int vmm_vcpu_create(struct vmm_vm *vm, unsigned index, sl_error_t *err)
{
	struct vmm_vcpu *v = &vm->vcpus[index];
	memset(v, 0, sizeof(*v));
	v->vm = vm;
	v->index = index;
	v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, index);
	if (v->fd < 0)
		return sl_error_sys(err, "KVM_CREATE_VCPU %u", index);
	int sz = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (sz <= 0)
		return sl_error_sys(err, "KVM_GET_VCPU_MMAP_SIZE");
	v->run_size = (size_t)sz;
	v->run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		v->run = NULL;
		return sl_error_sys(err, "mmap kvm_run of vcpu %u", index);
	}
	return 0;
}

void vmm_vcpu_destroy(struct vmm_vcpu *v)
{
	if (v->run)
		munmap(v->run, v->run_size);
	if (v->fd > 0)
		close(v->fd);
	v->run = NULL;
	v->fd = -1;
}

void vmm_vcpu_kick(struct vmm_vcpu *v)
{
	/* immediate_exit covers the window before the thread enters KVM_RUN;
	 * the signal covers a thread already inside it. */
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (v->thread_started)
		pthread_kill(v->thread, SIG_VCPU_KICK);
}

/* Parks until the VM runs again; returns false when the VM is exiting. */
static bool park(struct vmm_vcpu *v)
{
	struct vmm_vm *vm = v->vm;
	pthread_mutex_lock(&vm->lock);
	v->parked = true;
	vm->parked++;
	pthread_cond_broadcast(&vm->cond);
	while (atomic_load(&vm->run_state) == VCPU_PAUSE)
		pthread_cond_wait(&vm->cond, &vm->lock);
	vm->parked--;
	v->parked = false;
	bool go = atomic_load(&vm->run_state) == VCPU_RUN;
	pthread_mutex_unlock(&vm->lock);
	__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
	return go;
}

static void fail(struct vmm_vcpu *v, int kind, const char *what)
{
	vmm_post_event(v->vm, kind, 0, "vcpu %u: %s", v->index, what);
}

static void *vcpu_thread(void *arg)
{
	struct vmm_vcpu *v = arg;
	struct vmm_vm *vm = v->vm;
	struct kvm_run *run = v->run;
	/* Named by the thread itself (prctl): naming another thread goes
	 * through /proc, which a jailed VMM does not have. */
	char name[16];
	snprintf(name, sizeof(name), "vcpu%u", v->index);
	pthread_setname_np(pthread_self(), name);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIG_VCPU_KICK);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);

	for (;;) {
		if (atomic_load(&vm->run_state) != VCPU_RUN) {
			/* Re-enter once with immediate_exit so KVM completes any
			 * in-flight I/O or MMIO before the state is looked at. */
			__atomic_store_n(&run->immediate_exit, 1, __ATOMIC_SEQ_CST);
			ioctl(v->fd, KVM_RUN, 0);
			if (!park(v))
				return NULL;
			continue;
		}
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			char msg[96];
			snprintf(msg, sizeof(msg), "KVM_RUN: %s", strerror(errno));
			fail(v, VMM_EV_ERROR, msg);
			atomic_store(&vm->run_state, VCPU_PAUSE);
			continue;
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			vmm_pio_dispatch(vm, run);
			break;
		case KVM_EXIT_MMIO:
			vmm_mmio_dispatch(vm, run);
			break;
		case KVM_EXIT_HLT:
			/* Only without an in-kernel LAPIC; treat as idle. */
			break;
		case KVM_EXIT_INTR:
			break;
		case KVM_EXIT_SHUTDOWN:
			fail(v, VMM_EV_SHUTDOWN, "guest shut down (triple fault)");
			atomic_store(&vm->run_state, VCPU_PAUSE);
			break;
		case KVM_EXIT_SYSTEM_EVENT:
			fail(v, VMM_EV_SHUTDOWN, "guest requested a system reset or power-off");
			atomic_store(&vm->run_state, VCPU_PAUSE);
			break;
		case KVM_EXIT_FAIL_ENTRY: {
			char msg[96];
			snprintf(msg, sizeof(msg), "VM entry failed, reason 0x%llx",
				 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
			fail(v, VMM_EV_ERROR, msg);
			atomic_store(&vm->run_state, VCPU_PAUSE);
			break;
		}
		case KVM_EXIT_INTERNAL_ERROR: {
			char msg[96];
			snprintf(msg, sizeof(msg), "KVM internal error, suberror %u",
				 run->internal.suberror);
			fail(v, VMM_EV_ERROR, msg);
			atomic_store(&vm->run_state, VCPU_PAUSE);
			break;
		}
		default: {
			char msg[64];
			snprintf(msg, sizeof(msg), "unexpected exit reason %u", run->exit_reason);
			fail(v, VMM_EV_ERROR, msg);
			atomic_store(&vm->run_state, VCPU_PAUSE);
			break;
		}
		}
	}
}

int vmm_vcpu_start_thread(struct vmm_vcpu *v, sl_error_t *err)
{
	pthread_once(&kick_once, install_kick);
	/* Threads start with the kick signal blocked and unblock it themselves,
	 * so it can only interrupt KVM_RUN, never the creating thread. */
	sigset_t set, old;
	sigemptyset(&set);
	sigaddset(&set, SIG_VCPU_KICK);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	int rc = pthread_create(&v->thread, NULL, vcpu_thread, v);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		return sl_error_errno(err, rc, "start vcpu %u thread", v->index);
	v->thread_started = true;
	return 0;
}
