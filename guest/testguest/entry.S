/* Test guest ring-0 code and static tables: entries, interrupt stubs, GDT/TSS/IDT, page tables. */
	.file "entry.S"
#include "layout.h"

/* Everything here is built at assembly/link time: ring-0 code is emulated
 * (slowly) on PVM hosts, so ring 0 only loads tables and drops to ring 3. */

/* ------------------------------------------------------------------ */
/* .text.boot is linked at TG_LOAD_ADDR; stubs sit at fixed offsets.   */
/* ------------------------------------------------------------------ */
	.section .text.boot, "ax"
	.code64

/* Exceptions 0..31: push a dummy error code where the CPU pushes none. */
	.set vec, 0
	.rept 32
	.org TG_STUB_EXC(vec)
	.if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
	pushq $vec
	.else
	pushq $0
	pushq $vec
	.endif
	jmp tg_fault_common
	.set vec, vec + 1
	.endr

/* Vector 32: LAPIC timer. Count the tick in the per-CPU struct found at the
 * base of the (size-aligned) kernel stack, then EOI. */
	.org TG_STUB_TIMER
	pushq %rax
	movq %rsp, %rax
	andq $-TG_KSTACK_SIZE, %rax
	incq TG_PERCPU_TICKS(%rax)
	movl $(TG_LAPIC + 0xb0), %eax
	movl $0, (%rax)
	popq %rax
	iretq

/* Vector 33: wake-up IPI (a check round started). */
	.org TG_STUB_WAKE
	pushq %rax
	movl $(TG_LAPIC + 0xb0), %eax
	movl $0, (%rax)
	popq %rax
	iretq

/* int3 / int 0x80 (DPL 3 interrupt gates, IF=0 on entry): halt until the
 * next interrupt; sti's one-instruction shadow makes sti;hlt race free.
 * A device interrupt taken since the last halt (wake flag) returns at once:
 * ring 3 looks at its rings again instead of missing that wake-up. */
	.org TG_STUB_HALT
	pushq %rax
	movq %rsp, %rax
	andq $-TG_KSTACK_SIZE, %rax
	cmpq $0, TG_PERCPU_WAKE(%rax)
	jne 1f
	sti
	hlt
	cli
1:	movq $0, TG_PERCPU_WAKE(%rax)
	popq %rax
	iretq

/* Vector TG_VEC_VIRTIO: the vsock device (edge-triggered at the IOAPIC, so
 * ring 3 acknowledges the device whenever it likes). */
	.org TG_STUB_VIRTIO
	pushq %rax
	movq %rsp, %rax
	andq $-TG_KSTACK_SIZE, %rax
	incq TG_PERCPU_VIRQ(%rax)
	movq $1, TG_PERCPU_WAKE(%rax)
	movl $(TG_LAPIC + 0xb0), %eax
	movl $0, (%rax)
	popq %rax
	iretq

/* Vector 0xff: LAPIC spurious interrupt, no EOI. */
	.org TG_STUB_SPURIOUS
	iretq

/* Per-CPU 64-bit TSSes at a fixed address: only RSP0 is used. */
	.org TG_TSS_OFF
	.set cpu, 0
	.rept TG_MAX_CPUS
	.long 0                                       /* reserved */
	.quad tg_kstacks + (cpu + 1) * TG_KSTACK_SIZE /* RSP0 */
	.fill 90, 1, 0                                /* RSP1, RSP2, IST1-7, reserved */
	.short TG_IOBITMAP_OFF - TG_TSS_OFF - cpu * TG_TSS_STRIDE /* I/O map base */
	.fill TG_TSS_STRIDE - 104, 1, 0
	.set cpu, cpu + 1
	.endr

/* The shared I/O permission bitmap (1 = denied). */
	.org TG_IOBITMAP_OFF
	.set b, 0
	.rept TG_IOBITMAP_SIZE
	.if (b == 0x3f8 / 8) || ((b >= 0x5100 / 8) && (b <= 0x511f / 8))
	.byte 0
	.else
	.byte 0xff
	.endif
	.set b, b + 1
	.endr

	.org TG_CODE_OFF
/* 64-bit entry from the Sporelet VMM: rdi = CPU index, rsi = tg_boot_info,
 * rsp = 0, interrupts off. */
	.globl tg_entry64
	.type tg_entry64, @function
tg_entry64:
	cli
	xorl %edx, %edx                /* boot kind 0: Sporelet */
	jmp tg_common64

/* 32-bit PVH entry from QEMU: protected mode, paging off, ebx = hvm_start_info. */
	.code32
	.globl tg_pvh_entry
tg_pvh_entry:
	cli
	movl %ebx, %esi
	lgdt tg_gdtr
	movl $TG_SEL_KDATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %cr4, %eax
	orl $0x20, %eax                /* PAE */
	movl %eax, %cr4
	movl $tg_pml4, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx         /* EFER */
	rdmsr
	orl $0x100, %eax               /* LME */
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax          /* PG | PE */
	movl %eax, %cr0
	ljmp $TG_SEL_KCODE, $tg_pvh64

	.code64
tg_pvh64:
	movl %esi, %esi
	xorl %edi, %edi                /* CPU 0 */
	movl $1, %edx                  /* boot kind 1: PVH */

tg_common64:
	cmpq $TG_MAX_CPUS, %rdi
	jae tg_park
	leaq 1(%rdi), %rax
	shlq $TG_KSTACK_SHIFT, %rax
	leaq tg_kstacks(%rax), %rsp
	movq %rdi, TG_PERCPU_CPU - TG_KSTACK_SIZE(%rsp)
	lgdt tg_gdtr(%rip)
	pushq $TG_SEL_KCODE
	leaq 1f(%rip), %rax
	pushq %rax
	lretq
1:	movl $TG_SEL_KDATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	xorl %eax, %eax
	movl %eax, %fs
	movl %eax, %gs
	movl %edi, %eax
	shll $4, %eax
	addl $TG_SEL_TSS0, %eax
	ltr %ax
	lidt tg_idtr(%rip)
	movl $tg_pml4, %eax
	movq %rax, %cr3
	movl $TG_LAPIC, %eax
	movl $(0x100 | TG_VEC_SPURIOUS), 0xf0(%rax) /* SVR: APIC on, spurious vector */
	movl $0x10000, 0x350(%rax)     /* LINT0 masked (no ExtINT from the PIC) */
	movl $0x10000, 0x360(%rax)     /* LINT1 masked */
	/* To ring 3: IF=1, IOPL=3; rdi/rsi/rdx are tg_user_main's arguments. */
	leaq 1(%rdi), %rax
	shlq $TG_USTACK_SHIFT, %rax
	leaq tg_ustacks - 8(%rax), %rax
	pushq $TG_SEL_UDATA
	pushq %rax
	pushq $0x3202
	pushq $TG_SEL_UCODE
	pushq $tg_user_main
	iretq

tg_park:
	cli
	hlt
	jmp tg_park

/* Stack: vector, error code, rip, cs, rflags, rsp, ss. Reports in C (rare,
 * so the slow ring-0 printing does not matter) and exits with status 3. */
tg_fault_common:
	movq (%rsp), %rdi
	movq 8(%rsp), %rsi
	movq 16(%rsp), %rdx
	movq %rsp, %rcx
	andq $-TG_KSTACK_SIZE, %rcx
	cmpq $0, TG_PERCPU_FAULT(%rcx)
	jne tg_park                    /* fault while reporting a fault */
	movq $1, TG_PERCPU_FAULT(%rcx)
	movq TG_PERCPU_CPU(%rcx), %rcx
	andq $-16, %rsp
	call tg_fault
	jmp tg_park

/* ------------------------------------------------------------------ */
/* Descriptor tables                                                   */
/* ------------------------------------------------------------------ */
	.section .data.tables, "aw"
	.balign 16
tg_gdt:
	.quad 0
	.quad 0x00af9a000000ffff       /* 0x08 kernel code, 64-bit */
	.quad 0x00cf92000000ffff       /* 0x10 kernel data */
	.quad 0x00affa000000ffff       /* 0x18 user code, 64-bit, DPL 3 */
	.quad 0x00cff2000000ffff       /* 0x20 user data, DPL 3 */
	.set cpu, 0
	.rept TG_MAX_CPUS              /* 0x28 + 16 * cpu: available 64-bit TSS */
	.set tb, TG_LOAD_ADDR + TG_TSS_OFF + cpu * TG_TSS_STRIDE
	.set tl, TG_IOBITMAP_OFF + TG_IOBITMAP_SIZE - 1 - TG_TSS_OFF - cpu * TG_TSS_STRIDE
	.quad tl | ((tb & 0xffff) << 16) | (((tb >> 16) & 0xff) << 32) | (0x89 << 40) | (((tb >> 24) & 0xff) << 56)
	.quad tb >> 32
	.set cpu, cpu + 1
	.endr
tg_gdt_end:

	.balign 8
	.short 0, 0, 0
tg_gdtr:                               /* also read by lgdt in 32-bit mode */
	.short tg_gdt_end - tg_gdt - 1
	.quad tg_gdt

	.short 0, 0, 0
tg_idtr:
	.short 256 * 16 - 1
	.quad tg_idt

	.section .rodata.idt, "a"
	/* (page-aligned below: one page for the whole IDT) */
.macro gate addr, dpl
	.short (\addr) & 0xffff
	.short TG_SEL_KCODE
	.byte 0
	.byte 0x8e | ((\dpl) << 5)     /* present 64-bit interrupt gate */
	.short ((\addr) >> 16) & 0xffff
	.long (\addr) >> 32
	.long 0
.endm
	.balign 4096
tg_idt:
	.set vec, 0
	.rept 256
	.if vec == TG_VEC_HALT
	gate (TG_LOAD_ADDR+TG_STUB_HALT),3
	.elseif vec < 32
	gate (TG_LOAD_ADDR+TG_STUB_EXC(vec)),0
	.elseif vec == TG_VEC_TIMER
	gate (TG_LOAD_ADDR+TG_STUB_TIMER),0
	.elseif vec == TG_VEC_WAKE
	gate (TG_LOAD_ADDR+TG_STUB_WAKE),0
	.elseif vec == TG_VEC_VIRTIO
	gate (TG_LOAD_ADDR+TG_STUB_VIRTIO),0
	.elseif vec == TG_VEC_HALT_COMPAT
	gate (TG_LOAD_ADDR+TG_STUB_HALT),3
	.elseif vec == TG_VEC_SPURIOUS
	gate (TG_LOAD_ADDR+TG_STUB_SPURIOUS),0
	.else
	.quad 0, 0                     /* not present: #NP, reported as a fault */
	.endif
	.set vec, vec + 1
	.endr

/* ------------------------------------------------------------------ */
/* Page tables: 0-4 GiB identity, 2 MiB pages, user-accessible, the    */
/* top 32 MiB (LAPIC, IOAPIC, ...) uncached (PCD|PWT).                 */
/* ------------------------------------------------------------------ */
	.section .data.pagetables, "aw"
	.balign 4096
	.globl tg_pml4
tg_pml4:
	.quad tg_pdpt + 0x7
	.fill 511, 8, 0
tg_pdpt:
	.quad tg_pd + 0x0007
	.quad tg_pd + 0x1007
	.quad tg_pd + 0x2007
	.quad tg_pd + 0x3007
	.fill 508, 8, 0
tg_pd:
	.set i, 0
	.rept 2048
	.quad (i << 21) | 0x87 | ((i >= 2032) & 0x18)
	.set i, i + 1
	.endr

/* ------------------------------------------------------------------ */
/* Stacks                                                              */
/* ------------------------------------------------------------------ */
	.section .bss.stacks, "aw", @nobits
	.balign TG_KSTACK_SIZE
	.globl tg_kstacks
tg_kstacks:
	.skip TG_KSTACK_SIZE * TG_MAX_CPUS
	.balign 64
tg_ustacks:
	.skip TG_USTACK_SIZE * TG_MAX_CPUS

/* ------------------------------------------------------------------ */
/* PVH entry note for QEMU (-kernel testguest.elf)                     */
/* ------------------------------------------------------------------ */
	.section .note.Xen, "a", @note
	.balign 4
	.long 4                        /* namesz */
	.long 8                        /* descsz */
	.long 18                       /* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.balign 4
	.quad tg_pvh_entry

	.section .note.GNU-stack, "", @progbits
