/* libFuzzer target: the state files' payloads (vcpu-<n>.state, vm.state) decoded and checked as a restore does before KVM sees them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm_internal.h"
#include "vmm_state.h"

#define RAM_BYTES (4u << 20)

/* The first byte picks the file and, for a vCPU, the host's XSAVE size;
 * the rest is the file. Whatever is accepted must be what the file said,
 * within the documented caps (SECURITY.md, state files). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t *ram;
	static struct vmm_vm vm;
	if (!ram) {
		ram = calloc(1, RAM_BYTES);
		if (!ram)
			abort();
		vm.mem = ram;
		vm.mem_size = RAM_BYTES;
	}
	if (size < 1 || size > (4u << 20))
		return 0;
	sl_error_t err = NULL;
	if (data[0] & 1) {
		struct vmm_vm_state st;
		if (vmm_vm_state_decode(&vm, data + 1, size - 1, "vm.state", &st, &err) == 0) {
			if (st.chips[0].chip_id != KVM_IRQCHIP_PIC_MASTER || st.chips[1].chip_id != KVM_IRQCHIP_PIC_SLAVE ||
			    st.chips[2].chip_id != KVM_IRQCHIP_IOAPIC || st.clock.flags || st.clock.realtime ||
			    st.clock.host_tsc)
				__builtin_trap();
			uint64_t gpa;
			memcpy(&gpa, st.spore_dev, sizeof(gpa));
			if (gpa && ((gpa & 7) || gpa + 32 > RAM_BYTES))
				__builtin_trap(); /* a generation buffer outside RAM was accepted */
		} else if (!err || !sl_error_msg(err)[0]) {
			__builtin_trap(); /* a refusal must say why */
		}
	} else {
		static const int xsave_sizes[] = {4096, 8192, 11008};
		int xs = xsave_sizes[(data[0] >> 1) % 3];
		struct vmm_vcpu_state st;
		if (vmm_vcpu_state_decode(data + 1, size - 1, xs, "vcpu-0.state", &st, &err) == 0) {
			if (!st.xsave || !st.msrs || st.msrs->nmsrs > 1024)
				__builtin_trap();
			/* Every byte of the host-sized XSAVE buffer is addressable. */
			volatile uint8_t sink = ((uint8_t *)st.xsave)[xs - 1];
			(void)sink;
			vmm_vcpu_state_free(&st);
		} else if (!err || !sl_error_msg(err)[0]) {
			__builtin_trap();
		}
	}
	sl_error_free(&err);
	return 0;
}
