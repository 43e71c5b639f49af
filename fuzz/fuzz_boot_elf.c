/* libFuzzer target: the ELF kernel loader (vmm_boot_elf_load) on a file's bytes, into guarded guest RAM. */
#include <elf.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_ram.h"
#include "vmm_internal.h"

/* The input is the kernel file. RAM is a fixed 4 MiB (the test guest needs
 * under 2 MiB; `--mem` is at least 2 MiB). The loader is held to its
 * documented contract, checked against this file's own reading of the ELF:
 *  - it accepts exactly the files whose header is a little-endian x86_64
 *    ELF64 ET_EXEC with in-file program headers and at least one PT_LOAD,
 *    and whose every PT_LOAD lies inside the file and inside RAM at or
 *    above 1 MiB;
 *  - it writes nothing but those segments (on failure: the valid segments
 *    before the bad one) and, on success, its fixed boot structures below
 *    1 MiB (GDT, boot information, page tables, command line);
 *  - the last segment holds the file's bytes, then zeros up to p_memsz;
 *  - the entry point is e_entry; a refusal says what and names the file. */

#define RAM (4u << 20)
#define NAME "fuzz.elf"
#define CMDLINE "console=ttyS0 fuzz"
#define MAX_RANGES 4096u

static struct fuzz_ram ram;
static struct vmm_vm *vm;
static struct fuzz_range allowed[MAX_RANGES + 4];
static uint8_t zeros[RAM]; /* never written: compared against */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	fuzz_ram_init(&ram, RAM);
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		abort();
	vm->kvm_fd = vm->vm_fd = vm->event_fd = -1;
	vm->machine.vcpus = 1;
	return 0;
}

/* What the contract says about one file: accept or not, and which segment
 * ranges may be written. */
static bool model(const uint8_t *d, size_t n, unsigned *nallowed, uint64_t *entry, int *last)
{
	Elf64_Ehdr eh;
	*nallowed = 0;
	*last = -1;
	if (n < sizeof(eh))
		return false;
	memcpy(&eh, d, sizeof(eh));
	if (memcmp(eh.e_ident, ELFMAG, SELFMAG) || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
	    eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_machine != EM_X86_64 || eh.e_type != ET_EXEC)
		return false;
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phoff > n || eh.e_phnum > (n - eh.e_phoff) / sizeof(Elf64_Phdr))
		return false;
	unsigned loads = 0;
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, d + eh.e_phoff + (size_t)i * sizeof(ph), sizeof(ph));
		if (ph.p_type != PT_LOAD)
			continue;
		bool in_file = ph.p_filesz <= ph.p_memsz && ph.p_offset <= n && ph.p_filesz <= n - ph.p_offset;
		bool in_ram = ph.p_paddr >= VMM_LOW_RESERVED && ph.p_paddr <= RAM && ph.p_memsz <= RAM - ph.p_paddr;
		if (!in_file || !in_ram)
			return false;
		if (*nallowed == MAX_RANGES)
			__builtin_trap(); /* e_phnum is 16 bits and inputs are bounded: cannot happen */
		allowed[(*nallowed)++] = (struct fuzz_range){ph.p_paddr, ph.p_memsz};
		*last = (int)i;
		loads++;
	}
	*entry = eh.e_entry;
	return loads > 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > (1u << 20))
		return 0;
	fuzz_ram_reset(&ram, RAM);
	vm->mem = ram.mem;
	vm->mem_size = ram.size;

	unsigned n;
	uint64_t want_entry = 0;
	int last;
	bool ok = model(data, size, &n, &want_entry, &last);

	uint64_t entry = ~0ull;
	sl_error_t err = NULL;
	int rc = vmm_boot_elf_load(vm, data, size, NAME, CMDLINE, &entry, &err);
	if ((rc == 0) != ok)
		__builtin_trap(); /* accepted what the contract refuses, or the reverse */
	if (rc < 0) {
		if (!err || !strstr(sl_error_msg(err), NAME))
			__builtin_trap();
		sl_error_free(&err);
		fuzz_ram_check(&ram, allowed, n); /* only earlier, valid segments */
		return 0;
	}
	if (entry != want_entry)
		__builtin_trap();
	/* The fixed structures, all below 1 MiB (docs/testguest.md). */
	allowed[n++] = (struct fuzz_range){VMM_GDT_GPA, 24};
	allowed[n++] = (struct fuzz_range){VMM_BOOTINFO_GPA, 64};
	allowed[n++] = (struct fuzz_range){VMM_PML4_GPA, VMM_PD_GPA + 4096 - VMM_PML4_GPA};
	allowed[n++] = (struct fuzz_range){VMM_CMDLINE_GPA, sizeof(CMDLINE)};
	for (unsigned i = n - 4; i < n; i++)
		if (allowed[i].gpa + allowed[i].len > VMM_LOW_RESERVED)
			__builtin_trap();
	fuzz_ram_check(&ram, allowed, n);

	/* The last PT_LOAD is written last: its bytes must be exactly there. */
	Elf64_Ehdr eh;
	Elf64_Phdr ph;
	memcpy(&eh, data, sizeof(eh));
	memcpy(&ph, data + eh.e_phoff + (size_t)last * sizeof(ph), sizeof(ph));
	const uint8_t *seg = ram.mem + ph.p_paddr;
	if (memcmp(seg, data + ph.p_offset, ph.p_filesz))
		__builtin_trap();
	if (memcmp(seg + ph.p_filesz, zeros, ph.p_memsz - ph.p_filesz))
		__builtin_trap();
	if (memcmp(ram.mem + VMM_CMDLINE_GPA, CMDLINE, sizeof(CMDLINE)))
		__builtin_trap();
	return 0;
}
