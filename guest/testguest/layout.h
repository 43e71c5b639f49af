/* Fixed layout shared by the test guest's assembly, C code and linker script checks. */
#ifndef TG_LAYOUT_H
#define TG_LAYOUT_H

#define TG_LOAD_ADDR 0x100000 /* physical = virtual load address */
#define TG_MAX_CPUS 16

/* Kernel stacks are aligned to their size; the per-CPU struct sits at the base. */
#define TG_KSTACK_SHIFT 12
#define TG_KSTACK_SIZE (1 << TG_KSTACK_SHIFT)
#define TG_USTACK_SHIFT 14
#define TG_USTACK_SIZE (1 << TG_USTACK_SHIFT)
#define TG_PERCPU_TICKS 0 /* uint64_t: timer interrupts taken by this CPU */
#define TG_PERCPU_CPU 8   /* uint64_t: CPU index */
#define TG_PERCPU_FAULT 16 /* uint64_t: nonzero once a fault is being reported */
/* uint64_t: set by a device interrupt, cleared by the halt stub: a device
 * interrupt that lands between ring 3's last look at its rings and its
 * `int3` makes that halt return at once instead of sleeping a timer tick. */
#define TG_PERCPU_WAKE 24
#define TG_PERCPU_VIRQ 32 /* uint64_t: device interrupts taken by this CPU */

/* GDT selectors. */
#define TG_SEL_KCODE 0x08
#define TG_SEL_KDATA 0x10
#define TG_SEL_UCODE 0x1b /* 0x18 | RPL 3 */
#define TG_SEL_UDATA 0x23 /* 0x20 | RPL 3 */
#define TG_SEL_TSS0 0x28  /* + 16 * cpu */

/* Interrupt vectors. */
#define TG_VEC_TIMER 32
#define TG_VEC_WAKE 33
/* "Halt until the next interrupt" from ring 3 is `int3` (vector 3, a DPL-3
 * gate): on PVM hosts `int3` is the one software interrupt that reaches the
 * guest's IDT from ring 3 (`int 0x80` arrives as #UD there, and any other
 * `int n` is a #GP the hypervisor cannot emulate in long mode). #BP is a
 * trap, so the handler just halts and returns. `int 0x80` is wired to the
 * same handler for hosts where it works. */
#define TG_VEC_HALT 3
#define TG_VEC_HALT_COMPAT 0x80
/* The vsock device's line (IOAPIC pin from the boot info, edge-triggered,
 * to CPU 0): counts the interrupt and sets the wake flag (the agent). */
#define TG_VEC_VIRTIO 34
#define TG_VEC_SPURIOUS 0xff

/* Offsets of the interrupt stubs inside .text.boot (which the linker places at
 * TG_LOAD_ADDR), so the IDT and the TSSes are plain constants at assembly time. */
#define TG_STUB_EXC(v) ((v) * 32)
#define TG_STUB_TIMER 0x400
#define TG_STUB_WAKE 0x440
#define TG_STUB_HALT 0x480
#define TG_STUB_VIRTIO 0x4c0
#define TG_STUB_SPURIOUS 0x500
#define TG_TSS_OFF 0x600 /* 16 TSSes of 128 bytes */
#define TG_TSS_STRIDE 128
/* One I/O permission bitmap shared by every TSS (each TSS's I/O map base
 * points at it): ring 3 may use COM1 (0x3f8-0x3ff) and the spore device
 * (0x5100-0x511f). IOPL=3 already allows that on hardware, but PVM hosts do
 * not honour the guest's IOPL and check the TSS bitmap when they emulate the
 * faulting in/out. Covers ports 0-0x513f; the last byte is all ones. */
#define TG_IOBITMAP_OFF 0x1000
#define TG_IOBITMAP_SIZE 0xa28
#define TG_CODE_OFF 0x1c00

#define TG_LAPIC 0xfee00000

#endif
