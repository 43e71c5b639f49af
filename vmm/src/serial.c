/* 8250/16550 UART at COM1 (0x3f8): transmit to the host, nothing received. */
#include <string.h>
#include <unistd.h>

#include "vmm_internal.h"

#define COM1 0x3f8

enum { UART_RBR_THR = 0, UART_IER, UART_IIR_FCR, UART_LCR, UART_MCR, UART_LSR, UART_MSR, UART_SCR };
#define LCR_DLAB 0x80
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define IER_THRI 0x02
#define IIR_NO_INT 0x01
#define IIR_THRI 0x02
#define COM1_IRQ 4

/* The transmitter is always empty again at once (bytes go straight out),
 * so with IER_THRI set every write (and the enabling itself) leaves a
 * transmitter-empty interrupt pending. Linux's 8250 driver writes from user
 * space (a tty) only from that interrupt: without it, kernel messages (which
 * poll) appear and a program's output does not. ISA IRQ 4 is edge
 * triggered: pulse it. Called with the lock held. */
static void thri_raise(struct vmm_vm *vm, struct vmm_serial *s)
{
	if (!(s->ier & IER_THRI))
		return;
	s->thri = true;
	if (vm->vm_fd >= 0) {
		sl_error_t err = NULL;
		if (vmm_irq_line(vm, COM1_IRQ, 1, &err) == 0)
			vmm_irq_line(vm, COM1_IRQ, 0, &err);
		sl_error_free(&err);
	}
}

static void write_line(struct vmm_serial *s)
{
	if (s->out_fd < 0 || s->line_len == 0) {
		s->line_len = 0;
		return;
	}
	char buf[sizeof(s->prefix) + sizeof(s->line)];
	memcpy(buf, s->prefix, s->prefix_len);
	memcpy(buf + s->prefix_len, s->line, s->line_len);
	size_t len = s->prefix_len + s->line_len, off = 0;
	/* Best effort: a closed or full console must never stall a vCPU forever. */
	while (off < len) {
		ssize_t n = write(s->out_fd, buf + off, len - off);
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	s->line_len = 0;
}

static void serial_out(struct vmm_vm *vm, void *dev, uint16_t port, const uint8_t *data, unsigned size)
{
	struct vmm_serial *s = dev;
	(void)size;
	uint8_t v = data[0];
	pthread_mutex_lock(&s->lock);
	switch (port - COM1) {
	case UART_RBR_THR:
		if (s->lcr & LCR_DLAB) {
			s->dll = v;
			break;
		}
		if (!s->output_seen) {
			s->output_seen = true;
			vmm_post_event(vm, VMM_EV_OUTPUT, 0, "first serial byte");
		}
		s->line[s->line_len++] = (char)v;
		/* Lines are written whole, so fanout prefixes and concurrent
		 * children's output never split a line. */
		if (v == '\n' || s->line_len == sizeof(s->line))
			write_line(s);
		thri_raise(vm, s);
		break;
	case UART_IER:
		if (s->lcr & LCR_DLAB) {
			s->dlm = v;
		} else {
			uint8_t was = s->ier;
			s->ier = v & 0x0f;
			if (!(s->ier & IER_THRI))
				s->thri = false;
			else if (!(was & IER_THRI))
				thri_raise(vm, s);
		}
		break;
	case UART_IIR_FCR: s->fcr = v; break;
	case UART_LCR: s->lcr = v; break;
	case UART_MCR: s->mcr = v & 0x1f; break;
	case UART_SCR: s->scr = v; break;
	default: break;
	}
	pthread_mutex_unlock(&s->lock);
}

static void serial_in(struct vmm_vm *vm, void *dev, uint16_t port, uint8_t *data, unsigned size)
{
	struct vmm_serial *s = dev;
	(void)vm;
	uint8_t v = 0;
	pthread_mutex_lock(&s->lock);
	switch (port - COM1) {
	case UART_RBR_THR: v = (s->lcr & LCR_DLAB) ? s->dll : 0; break;
	case UART_IER: v = (s->lcr & LCR_DLAB) ? s->dlm : s->ier; break;
	case UART_IIR_FCR:
		/* Reading IIR with THRI as the source clears it (16550). */
		v = (s->thri && (s->ier & IER_THRI) ? IIR_THRI : IIR_NO_INT) | ((s->fcr & 1) ? 0xc0 : 0);
		s->thri = false;
		break;
	case UART_LCR: v = s->lcr; break;
	case UART_MCR: v = s->mcr; break;
	case UART_LSR: v = LSR_THRE | LSR_TEMT; break; /* transmitter always empty */
	case UART_MSR: v = 0xb0; break;                /* DCD, DSR, CTS */
	case UART_SCR: v = s->scr; break;
	}
	pthread_mutex_unlock(&s->lock);
	memset(data, 0, size);
	data[0] = v;
}

static const struct vmm_pio_ops serial_ops = {.in = serial_in, .out = serial_out};

int vmm_set_console(struct vmm_vm *vm, const struct vmm_console *con, sl_error_t *err)
{
	struct vmm_serial *s = &vm->serial;
	size_t n = con && con->prefix ? strlen(con->prefix) : 0;
	if (n >= sizeof(s->prefix))
		return sl_error_set(err, SL_E_INVALID, "console prefix longer than %zu bytes", sizeof(s->prefix) - 1);
	pthread_mutex_lock(&s->lock);
	s->out_fd = con ? con->fd : -1;
	memcpy(s->prefix, n ? con->prefix : "", n);
	s->prefix_len = n;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int vmm_serial_init(struct vmm_vm *vm, const struct vmm_console *con, sl_error_t *err)
{
	struct vmm_serial *s = &vm->serial;
	pthread_mutex_init(&s->lock, NULL);
	if (vmm_set_console(vm, con, err) < 0)
		return -1;
	return vmm_pio_register(vm, COM1, 8, &serial_ops, s, err);
}
void vmm_serial_flush(struct vmm_vm *vm)
{
	/* Only at the end of the VM: a pause keeps a half-written line, so a
	 * resumed guest finishes it and lines of concurrent VMs never merge. */
	pthread_mutex_lock(&vm->serial.lock);
	struct vmm_serial *s = &vm->serial;
	if (s->line_len && s->line_len < sizeof(s->line))
		s->line[s->line_len++] = '\n';
	write_line(s);
	pthread_mutex_unlock(&vm->serial.lock);
}
