/* libFuzzer target: MMIO registration and exit dispatch (vmm_mmio_register, vmm_mmio_dispatch), unclaimed addresses included. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_ram.h"
#include "fuzz_vm.h"
#include "platform_linux.h"
#include "virtio.h"
#include "vmm_internal.h"

/* A VM without KVM (vm_fd -1), 1 MiB of RAM ending at a guard page; on the
 * Linux platform its real virtio-mmio devices (vmm_linux_create), plus up
 * to three recording devices at fuzzed ranges.
 *
 * Input: [0] bit 0: Linux platform; bits 1-2: recording devices to add.
 *   Each: [s][off:4][len:2] - base = anchor[s % 4] + (int32)off, anchors
 *   just above RAM, the virtio-mmio window, the IOAPIC page and the top of
 *   the address space; len = the 16 bits (<< 16 if s & 0x80).
 * Then accesses as KVM delivers a KVM_EXIT_MMIO: [a][off:2][data:8 if a
 *   write] - a bits 0-1: length 1, 2, 4, 8; bit 2: write; bits 3-5: the
 *   address anchor (a recording device, the first virtio-mmio slot, the end
 *   of RAM, a later slot, or 8 more bytes of raw address), plus (int16)off.
 * Checked:
 *  - registration accepts exactly the ranges that are non-empty, do not
 *    wrap, lie above RAM, overlap nothing registered and fit the table;
 *  - an access wholly inside a registered range reaches that device once,
 *    with its offset and length and the guest's data; one that is not
 *    (unclaimed, or running past the range's end) reaches no device; an
 *    unclaimed read returns all ones in all 8 data bytes;
 *  - a virtio-mmio slot's MagicValue reads "virt". */

#define RAM (1u << 20)
#define NREC 3u

static struct fuzz_ram ram;

struct rec_dev {
	unsigned id;
	uint64_t base, len;
	bool registered;
};

static struct {
	int calls;
	unsigned id;
	uint64_t off;
	unsigned size;
	bool write;
	const uint8_t *data;
	uint8_t wdata[8];
} seen;

static void rec_read(struct vmm_vm *vm, void *dev, uint64_t off, uint8_t *data, unsigned size)
{
	(void)vm;
	const struct rec_dev *d = dev;
	seen.calls++;
	seen.id = d->id;
	seen.off = off;
	seen.size = size;
	seen.write = false;
	seen.data = data;
	for (unsigned i = 0; i < size; i++)
		data[i] = (uint8_t)(off + i + d->id);
}

static void rec_write(struct vmm_vm *vm, void *dev, uint64_t off, const uint8_t *data, unsigned size)
{
	(void)vm;
	const struct rec_dev *d = dev;
	seen.calls++;
	seen.id = d->id;
	seen.off = off;
	seen.size = size;
	seen.write = true;
	seen.data = data;
	memcpy(seen.wdata, data, size);
}

static const struct vmm_mmio_ops rec_ops = {.read = rec_read, .write = rec_write};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	fuzz_ram_init(&ram, RAM);
	return 0;
}

static uint64_t take(const uint8_t **p, const uint8_t *end, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)(*p < end ? *(*p)++ : 0) << (8 * i);
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > (64u << 10))
		return 0;
	const uint8_t *p = data + 1, *end = data + size;
	bool linux_platform = data[0] & 1;
	unsigned nrec = (data[0] >> 1) % 4;

	fuzz_ram_reset(&ram, RAM);
	struct vmm_vm *vm = fuzz_vm_new(&ram, linux_platform);
	sl_error_t err = NULL;
	if (linux_platform && vmm_linux_create(vm, &err) < 0)
		__builtin_trap();
	unsigned platform_ranges = vm->nmmio;

	/* Registration against its contract. */
	const uint64_t anchors[4] = {RAM, VIRTIO_MMIO_BASE, 0xfec00000ull, ~0ull - 0xffff};
	struct rec_dev rec[NREC] = {0};
	for (unsigned i = 0; i < nrec; i++) {
		uint8_t s = (uint8_t)take(&p, end, 1);
		int32_t off = (int32_t)(uint32_t)take(&p, end, 4);
		uint64_t len = take(&p, end, 2);
		if (s & 0x80)
			len <<= 16;
		uint64_t base = anchors[s % 4] + (uint64_t)(int64_t)off;
		bool want = len && base + len > base && base >= RAM && vm->nmmio < VMM_MMIO_MAX;
		for (unsigned k = 0; want && k < vm->nmmio; k++)
			want = !(base < vm->mmio[k].base + vm->mmio[k].len && vm->mmio[k].base < base + len);
		rec[i] = (struct rec_dev){.id = i + 1, .base = base, .len = len};
		int rc = vmm_mmio_register(vm, base, len, &rec_ops, &rec[i], &err);
		if ((rc == 0) != want)
			__builtin_trap();
		if (rc < 0) {
			if (!sl_error_msg(err)[0])
				__builtin_trap();
			sl_error_free(&err);
		}
		rec[i].registered = rc == 0;
	}

	struct kvm_run run;
	while (p < end) {
		uint8_t a = (uint8_t)take(&p, end, 1);
		unsigned len = 1u << (a & 3);
		bool write = a & 4;
		int16_t off = (int16_t)take(&p, end, 2);
		uint64_t addr;
		unsigned sel = a >> 3 & 7;
		if (sel < NREC)
			addr = rec[sel].base;
		else if (sel == 3 || sel == 4)
			addr = VIRTIO_MMIO_BASE + (sel == 4 ? VIRTIO_MMIO_SIZE : 0);
		else if (sel == 5)
			addr = RAM;
		else
			addr = take(&p, end, 8);
		addr += (uint64_t)(int64_t)off;

		memset(&run, 0, sizeof(run));
		run.exit_reason = KVM_EXIT_MMIO;
		run.mmio.phys_addr = addr;
		run.mmio.len = len;
		run.mmio.is_write = write;
		if (write) {
			uint64_t v = take(&p, end, 8);
			memcpy(run.mmio.data, &v, 8);
		} else {
			memset(run.mmio.data, 0x5a, 8);
		}
		uint8_t before[8];
		memcpy(before, run.mmio.data, 8);

		/* The model: the first range holding addr; claimed if the access fits. */
		const struct vmm_mmio_range *hit = NULL;
		for (unsigned k = 0; k < vm->nmmio && !hit; k++)
			if (addr >= vm->mmio[k].base && addr - vm->mmio[k].base < vm->mmio[k].len)
				hit = &vm->mmio[k];
		bool claimed = hit && hit->len - (addr - hit->base) >= len;
		bool recorded = claimed && hit->ops == &rec_ops;

		memset(&seen, 0, sizeof(seen));
		vmm_mmio_dispatch(vm, &run);

		if (recorded) {
			const struct rec_dev *d = hit->dev;
			if (seen.calls != 1 || seen.id != d->id || seen.off != addr - d->base || seen.size != len ||
			    seen.write != write || seen.data != run.mmio.data || seen.off + seen.size > d->len)
				__builtin_trap();
			if (write && memcmp(seen.wdata, before, len))
				__builtin_trap();
			for (unsigned i = 0; !write && i < len; i++)
				if (run.mmio.data[i] != (uint8_t)(seen.off + i + d->id))
					__builtin_trap();
		} else if (seen.calls) {
			__builtin_trap(); /* a recording device saw an access that is not its own */
		}
		if (!claimed && !write)
			for (unsigned i = 0; i < 8; i++)
				if (run.mmio.data[i] != 0xff)
					__builtin_trap();
		if (!claimed && write && memcmp(run.mmio.data, before, 8))
			__builtin_trap();
		if (claimed && !recorded && !write && len == 4 && addr >= VIRTIO_MMIO_BASE &&
		    (addr - VIRTIO_MMIO_BASE) % VIRTIO_MMIO_SIZE == VIRTIO_MMIO_MAGIC_VALUE &&
		    (addr - VIRTIO_MMIO_BASE) / VIRTIO_MMIO_SIZE < platform_ranges) {
			uint32_t magic;
			memcpy(&magic, run.mmio.data, 4);
			if (magic != VIRTIO_MMIO_MAGIC)
				__builtin_trap();
		}
	}

	if (linux_platform)
		vmm_linux_free(vm);
	pthread_mutex_destroy(&vm->lock);
	free(vm);
	return 0;
}
