/* ELF64 kernel loading and the initial long-mode vCPU state (test guest boot). */
#include <elf.h>
#include <string.h>
#include <sys/ioctl.h>

#include "platform_linux.h"
#include "sl/file.h"
#include "vmm_internal.h"

#define KERNEL_MAX (64u << 20)

/* Boot information handed to the guest in rsi (docs/testguest.md).
 * Version 2 adds the vsock device; a machine without one still gets
 * version 1, byte for byte what it got before. */
struct boot_info {
	uint32_t magic, version, ncpus, reserved0;
	uint64_t mem_bytes, cmdline_gpa;
	uint32_t cmdline_len, reserved1;
	/* version 2 */
	uint64_t vsock_mmio_gpa; /* virtio-mmio vsock registers (one page) */
	uint32_t vsock_gsi;      /* its IOAPIC pin (level-triggered line) */
	uint32_t reserved2;
};
#define BOOT_INFO_MAGIC 0x524f5053u

static int load_elf(struct vmm_vm *vm, const uint8_t *img, size_t len, const char *path, uint64_t *entry,
		    sl_error_t *err)
{
	/* Copied out: the image need not be aligned. */
	Elf64_Ehdr ehdr;
	if (len < sizeof(ehdr))
		return sl_error_set(err, SL_E_INVALID, "kernel %s: not an ELF file", path);
	memcpy(&ehdr, img, sizeof(ehdr));
	const Elf64_Ehdr *eh = &ehdr;
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
		return sl_error_set(err, SL_E_INVALID, "kernel %s: not an ELF file", path);
	if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh->e_machine != EM_X86_64 || eh->e_type != ET_EXEC)
		return sl_error_set(err, SL_E_INVALID,
				    "kernel %s: need a little-endian x86_64 ELF64 executable", path);
	if (eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phoff > len ||
	    (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr) > len - eh->e_phoff)
		return sl_error_set(err, SL_E_INVALID, "kernel %s: program headers out of bounds", path);
	unsigned loaded = 0;
	for (unsigned i = 0; i < eh->e_phnum; i++) {
		/* Copied out: a crafted e_phoff need not be aligned. */
		Elf64_Phdr ph;
		memcpy(&ph, img + eh->e_phoff + (size_t)i * sizeof(ph), sizeof(ph));
		if (ph.p_type != PT_LOAD)
			continue;
		uint64_t pa = ph.p_paddr, fsz = ph.p_filesz, msz = ph.p_memsz;
		if (fsz > msz || ph.p_offset > len || fsz > len - ph.p_offset)
			return sl_error_set(err, SL_E_INVALID, "kernel %s: segment %u out of file bounds",
					    path, i);
		if (pa < VMM_LOW_RESERVED || !vmm_gpa(vm, pa, msz))
			return sl_error_set(err, SL_E_INVALID,
					    "kernel %s: segment %u at 0x%llx+0x%llx does not fit in RAM above 1 MiB",
					    path, i, (unsigned long long)pa, (unsigned long long)msz);
		memcpy(vmm_gpa(vm, pa, msz), img + ph.p_offset, fsz);
		memset((uint8_t *)vmm_gpa(vm, pa, msz) + fsz, 0, msz - fsz);
		loaded++;
	}
	if (!loaded)
		return sl_error_set(err, SL_E_INVALID, "kernel %s: no loadable segment", path);
	*entry = eh->e_entry;
	return 0;
}

static void setup_tables(struct vmm_vm *vm)
{
	uint64_t *gdt = vmm_gpa(vm, VMM_GDT_GPA, 24);
	gdt[0] = 0;
	gdt[1] = 0x00af9a000000ffffull; /* 0x08: 64-bit code, DPL 0 */
	gdt[2] = 0x00cf92000000ffffull; /* 0x10: data, DPL 0 */
	uint64_t *pml4 = vmm_gpa(vm, VMM_PML4_GPA, 4096);
	uint64_t *pdpt = vmm_gpa(vm, VMM_PDPT_GPA, 4096);
	uint64_t *pd = vmm_gpa(vm, VMM_PD_GPA, 4096);
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	pml4[0] = VMM_PDPT_GPA | 0x3; /* present, writable */
	pdpt[0] = VMM_PD_GPA | 0x3;
	for (uint64_t i = 0; i < 512; i++)
		pd[i] = (i << 21) | 0x83; /* 2 MiB page, present, writable */
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code)
{
	*s = (struct kvm_segment){.base = 0, .limit = 0xfffff, .selector = sel, .type = type,
				  .present = 1, .dpl = 0, .db = code ? 0 : 1, .s = 1,
				  .l = code ? 1 : 0, .g = 1};
}

static int setup_vcpu(struct vmm_vcpu *v, uint64_t entry, sl_error_t *err)
{
	struct kvm_sregs sr;
	if (ioctl(v->fd, KVM_GET_SREGS, &sr) < 0)
		return sl_error_sys(err, "KVM_GET_SREGS");
	seg(&sr.cs, 0x08, 0xb, true);
	seg(&sr.ds, 0x10, 0x3, false);
	sr.es = sr.fs = sr.gs = sr.ss = sr.ds;
	sr.gdt.base = VMM_GDT_GPA;
	sr.gdt.limit = 23;
	sr.idt.base = 0;
	sr.idt.limit = 0;
	sr.cr0 = 0x80000033ull; /* PG | NE | ET | MP | PE */
	sr.cr3 = VMM_PML4_GPA;
	sr.cr4 = 0x620;         /* OSXMMEXCPT | OSFXSR | PAE */
	sr.efer = 0x500;        /* LMA | LME */
	if (ioctl(v->fd, KVM_SET_SREGS, &sr) < 0)
		return sl_error_sys(err, "KVM_SET_SREGS (vcpu %u)", v->index);
	struct kvm_regs r = {.rip = entry, .rdi = v->index, .rsi = VMM_BOOTINFO_GPA, .rflags = 2};
	if (ioctl(v->fd, KVM_SET_REGS, &r) < 0)
		return sl_error_sys(err, "KVM_SET_REGS (vcpu %u)", v->index);
	struct kvm_fpu fpu = {.fcw = 0x37f, .mxcsr = 0x1f80};
	if (ioctl(v->fd, KVM_SET_FPU, &fpu) < 0)
		return sl_error_sys(err, "KVM_SET_FPU (vcpu %u)", v->index);
	/* LINT0 as ExtINT and LINT1 as NMI, as a PC's BIOS leaves them. */
	struct kvm_lapic_state la;
	if (ioctl(v->fd, KVM_GET_LAPIC, &la) < 0)
		return sl_error_sys(err, "KVM_GET_LAPIC");
	uint32_t *lint0 = (uint32_t *)&la.regs[0x350], *lint1 = (uint32_t *)&la.regs[0x360];
	*lint0 = (*lint0 & ~0x700u) | 0x700u;
	*lint1 = (*lint1 & ~0x700u) | 0x400u;
	if (ioctl(v->fd, KVM_SET_LAPIC, &la) < 0)
		return sl_error_sys(err, "KVM_SET_LAPIC");
	/* Every vCPU starts at the entry together; no INIT/SIPI dance in the
	 * (emulated, slow) real mode of application processors. */
	struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_RUNNABLE};
	if (ioctl(v->fd, KVM_SET_MP_STATE, &mp) < 0)
		return sl_error_sys(err, "KVM_SET_MP_STATE (vcpu %u)", v->index);
	return 0;
}

int vmm_boot_elf_load(struct vmm_vm *vm, const uint8_t *img, size_t len, const char *name, const char *cmdline,
		      uint64_t *entry, sl_error_t *err)
{
	size_t clen = cmdline ? strlen(cmdline) : 0;
	if (clen >= VMM_CMDLINE_MAX)
		return sl_error_set(err, SL_E_LIMIT, "command line is %zu bytes, the limit is %u", clen,
				    VMM_CMDLINE_MAX - 1);
	if (load_elf(vm, img, len, name, entry, err) < 0)
		return -1;
	setup_tables(vm);
	char *cl = vmm_gpa(vm, VMM_CMDLINE_GPA, VMM_CMDLINE_MAX);
	memcpy(cl, cmdline ? cmdline : "", clen);
	cl[clen] = 0;
	struct boot_info *bi = vmm_gpa(vm, VMM_BOOTINFO_GPA, sizeof(*bi));
	*bi = (struct boot_info){.magic = BOOT_INFO_MAGIC, .version = 1, .ncpus = vm->machine.vcpus,
				 .mem_bytes = vm->mem_size, .cmdline_gpa = VMM_CMDLINE_GPA,
				 .cmdline_len = (uint32_t)clen};
	if (vmm_linux_vsock_slot(vm, &bi->vsock_mmio_gpa, &bi->vsock_gsi))
		bi->version = 2;
	return 0;
}

int vmm_boot_elf(struct vmm_vm *vm, const char *kernel_path, const char *cmdline, sl_error_t *err)
{
	_cleanup_free_ char *img = NULL;
	size_t len;
	uint64_t entry = 0;
	if (sl_read_path(kernel_path, KERNEL_MAX, &img, &len, err) < 0)
		return sl_error_wrap(err, "kernel %s", kernel_path);
	if (vmm_boot_elf_load(vm, (const uint8_t *)img, len, kernel_path, cmdline, &entry, err) < 0)
		return -1;
	for (unsigned i = 0; i < vm->machine.vcpus; i++)
		if (setup_vcpu(&vm->vcpus[i], entry, err) < 0)
			return -1;
	return 0;
}
