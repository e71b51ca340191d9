/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An 8250/16550A UART at 0x3f8, IRQ 4: the guest's console. Output goes to
 * the VMM's stdout or a file; each byte is written as the guest sends it.
 * Registers (offset from 0x3f8; DLAB is LCR bit 7):
 *
 *   0 RBR (read) / THR (write) / DLL (DLAB)   4 MCR
 *   1 IER / DLM (DLAB)                        5 LSR
 *   2 IIR (read) / FCR (write)                6 MSR
 *   3 LCR                                     7 SCR
 *
 * The interrupt line follows "an interrupt is pending"; the IOAPIC sees
 * its rising edges.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ember/log.h"
#include "ember/util.h"
#include "machine.h"

enum {
	IER_RDI = 0x01, /* received data available */
	IER_THRI = 0x02, /* transmitter holding register empty */
	IIR_NO_INT = 0x01,
	IIR_THRI = 0x02,
	IIR_RDI = 0x04,
	IIR_FIFO_BITS = 0xc0,
	FCR_FIFO_ENABLE = 0x01,
	LCR_DLAB = 0x80,
	LSR_DR = 0x01,
	LSR_THRE = 0x20,
	LSR_TEMT = 0x40,
	MCR_LOOP = 0x10,
	MSR_CTS = 0x10,
	MSR_DSR = 0x20,
	MSR_RI = 0x40,
	MSR_DCD = 0x80,
};

struct serial {
	struct machine *m;
	int out_fd;
	bool own_fd;
	uint8_t ier, lcr, mcr, scr, fcr, dll, dlm;
	bool thr_interrupt; /* THR-empty interrupt pending */
	bool irq_level;
	/* TODO(vmm-machine): guest console input (stdin when it is a tty)
	 * is not wired; the receive buffer stays empty. */
};

static uint8_t iir(const struct serial *s)
{
	uint8_t fifo = (s->fcr & FCR_FIFO_ENABLE) ? IIR_FIFO_BITS : 0;

	if ((s->ier & IER_THRI) && s->thr_interrupt)
		return IIR_THRI | fifo;
	return IIR_NO_INT | fifo;
}

static void update_irq(struct serial *s)
{
	bool level = !(iir(s) & IIR_NO_INT);

	if (level != s->irq_level) {
		s->irq_level = level;
		machine_set_irq(s->m, SERIAL_IRQ, level);
	}
}

static uint8_t msr(const struct serial *s)
{
	if (s->mcr & MCR_LOOP) {
		uint8_t v = 0;

		if (s->mcr & 0x01)
			v |= MSR_DSR;
		if (s->mcr & 0x02)
			v |= MSR_CTS;
		if (s->mcr & 0x04)
			v |= MSR_RI;
		if (s->mcr & 0x08)
			v |= MSR_DCD;
		return v;
	}
	return MSR_DCD | MSR_DSR | MSR_CTS;
}

static void serial_write(struct serial *s, uint64_t off, uint8_t v)
{
	bool dlab = s->lcr & LCR_DLAB;

	switch (off) {
	case 0:
		if (dlab) {
			s->dll = v;
			break;
		}
		if (!(s->mcr & MCR_LOOP) && s->out_fd >= 0 &&
		    ember_write_full(s->out_fd, &v, 1) < 0)
			olog_debug(s->m->id, "serial output: %s",
				   strerror(errno));
		/* Sent at once: the holding register is empty again. */
		s->thr_interrupt = true;
		break;
	case 1:
		if (dlab) {
			s->dlm = v;
			break;
		}
		if ((v & IER_THRI) && !(s->ier & IER_THRI))
			s->thr_interrupt = true;
		s->ier = v & 0x0f;
		break;
	case 2:
		s->fcr = v;
		break;
	case 3:
		s->lcr = v;
		break;
	case 4:
		s->mcr = v & 0x1f;
		break;
	case 7:
		s->scr = v;
		break;
	default:
		break; /* LSR, MSR: read-only */
	}
}

static uint8_t serial_read(struct serial *s, uint64_t off)
{
	bool dlab = s->lcr & LCR_DLAB;
	uint8_t v;

	switch (off) {
	case 0:
		return dlab ? s->dll : 0;
	case 1:
		return dlab ? s->dlm : s->ier;
	case 2:
		v = iir(s);
		/* Reading IIR acknowledges a THR-empty interrupt. */
		if ((v & 0x0f) == IIR_THRI)
			s->thr_interrupt = false;
		return v;
	case 3:
		return s->lcr;
	case 4:
		return s->mcr;
	case 5:
		return LSR_THRE | LSR_TEMT;
	case 6:
		return msr(s);
	case 7:
		return s->scr;
	default:
		return 0xff;
	}
}

static void serial_io(void *opaque, uint64_t off, uint8_t *data, unsigned len,
		      bool is_write)
{
	struct serial *s = opaque;

	if (len != 1)
		return;
	if (is_write)
		serial_write(s, off, data[0]);
	else
		data[0] = serial_read(s, off);
	update_irq(s);
}

static void serial_teardown(void *opaque)
{
	struct serial *s = opaque;

	if (s->own_fd)
		close(s->out_fd);
	free(s);
}

/* Snapshot state: the registers (the line level lives in the irqchip). */
enum { SERIAL_STATE_SIZE = 9 };

static int serial_save(void *opaque, uint8_t **buf, size_t *len)
{
	struct serial *s = opaque;
	uint8_t *b = malloc(SERIAL_STATE_SIZE);

	if (!b)
		return -ENOMEM;
	b[0] = s->ier;
	b[1] = s->lcr;
	b[2] = s->mcr;
	b[3] = s->scr;
	b[4] = s->fcr;
	b[5] = s->dll;
	b[6] = s->dlm;
	b[7] = s->thr_interrupt;
	b[8] = s->irq_level;
	*buf = b;
	*len = SERIAL_STATE_SIZE;
	return 0;
}

static int serial_restore(void *opaque, const uint8_t *b, size_t len)
{
	struct serial *s = opaque;

	if (len != SERIAL_STATE_SIZE)
		return -EINVAL;
	s->ier = b[0];
	s->lcr = b[1];
	s->mcr = b[2];
	s->scr = b[3];
	s->fcr = b[4];
	s->dll = b[5];
	s->dlm = b[6];
	s->thr_interrupt = b[7];
	s->irq_level = b[8];
	return 0;
}

int serial_setup(struct machine *m, const char *out_path)
{
	struct serial *s = calloc(1, sizeof(*s));
	int ret;

	if (!s)
		return -ENOMEM;
	s->m = m;
	s->out_fd = STDOUT_FILENO;
	if (out_path && out_path[0]) {
		s->out_fd = open(out_path,
				 O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
				 0644);
		if (s->out_fd < 0) {
			ret = -errno; /* the caller names the file */
			free(s);
			return ret;
		}
		s->own_fd = true;
	}
	s->lcr = 0x03; /* 8N1 */
	s->mcr = 0x08; /* OUT2 */
	s->thr_interrupt = false;
	ret = machine_add_device(m, "serial", MACHINE_BUS_PIO, SERIAL_PORT, 8,
				 serial_io, serial_teardown, s);
	if (ret)
		serial_teardown(s);
	else
		machine_set_dev_state(m, serial_save, serial_restore);
	return ret;
}
