/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The i8042 keyboard controller at 0x60 (data) and 0x64 (status/command),
 * IRQ 1: enough for Linux's probe, reset through command 0xfe (how a guest
 * with reboot=k reboots; the VM then ends with status 0) and Ctrl-Alt-Del
 * pressed by the host. There is no keyboard behind it beyond ACKs.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ember/log.h"
#include "machine.h"

enum {
	STATUS_OBF = 0x01,     /* output buffer full */
	STATUS_SYS = 0x04,     /* system flag: self-test passed */
	STATUS_CMD = 0x08,     /* last write was a command */
	STATUS_KBD_EN = 0x10,  /* keyboard not inhibited */
	CTR_KBD_INT = 0x01,
	CTR_SYS = 0x04,
	CMD_READ_CTR = 0x20,
	CMD_WRITE_CTR = 0x60,
	CMD_AUX_DISABLE = 0xa7,
	CMD_AUX_ENABLE = 0xa8,
	CMD_AUX_TEST = 0xa9,
	CMD_SELF_TEST = 0xaa,
	CMD_KBD_TEST = 0xab,
	CMD_KBD_DISABLE = 0xad,
	CMD_KBD_ENABLE = 0xae,
	CMD_READ_OUTPORT = 0xd0,
	CMD_WRITE_OUTPORT = 0xd1,
	CMD_WRITE_AUX = 0xd4,
	CMD_PULSE_RESET = 0xfe,
	KBD_ACK = 0xfa,
	KBD_RESET = 0xff,
	KBD_GET_ID = 0xf2,
	BUF_SIZE = 16,
};

struct i8042 {
	struct machine *m;
	uint8_t status, ctr, outport;
	uint8_t pending_cmd; /* a command waiting for its data byte */
	uint8_t buf[BUF_SIZE];
	unsigned head, count;
};

static void push(struct i8042 *k, uint8_t v)
{
	if (k->count == BUF_SIZE)
		return;
	k->buf[(k->head + k->count) % BUF_SIZE] = v;
	k->count++;
}

/* Raises IRQ 1 for the byte at the head of the buffer. */
static void notify(struct i8042 *k)
{
	if (k->count && (k->ctr & CTR_KBD_INT))
		machine_pulse_irq(k->m, I8042_IRQ);
}

static uint8_t pop(struct i8042 *k)
{
	uint8_t v;

	if (!k->count)
		return 0;
	v = k->buf[k->head];
	k->head = (k->head + 1) % BUF_SIZE;
	k->count--;
	return v;
}

static void reset_guest(struct i8042 *k)
{
	olog_info(k->m->id, "guest reset through the i8042 controller");
	machine_end(k->m, MACHINE_END_RESET);
}

static void command(struct i8042 *k, uint8_t cmd)
{
	k->status |= STATUS_CMD;
	switch (cmd) {
	case CMD_READ_CTR:
		push(k, k->ctr);
		break;
	case CMD_WRITE_CTR:
	case CMD_WRITE_OUTPORT:
	case CMD_WRITE_AUX:
		k->pending_cmd = cmd;
		break;
	case CMD_SELF_TEST:
		push(k, 0x55);
		break;
	case CMD_KBD_TEST:
	case CMD_AUX_TEST:
		push(k, 0x00);
		break;
	case CMD_KBD_DISABLE:
		k->ctr |= 0x10;
		break;
	case CMD_KBD_ENABLE:
		k->ctr &= ~0x10;
		break;
	case CMD_AUX_DISABLE:
		k->ctr |= 0x20;
		break;
	case CMD_AUX_ENABLE:
		k->ctr &= ~0x20;
		break;
	case CMD_READ_OUTPORT:
		push(k, k->outport);
		break;
	case CMD_PULSE_RESET:
		reset_guest(k);
		break;
	default:
		olog_debug(k->m->id, "i8042: command 0x%02x ignored", cmd);
		break;
	}
}

static void data_write(struct i8042 *k, uint8_t v)
{
	uint8_t cmd = k->pending_cmd;

	k->status &= ~STATUS_CMD;
	k->pending_cmd = 0;
	switch (cmd) {
	case CMD_WRITE_CTR:
		k->ctr = v;
		return;
	case CMD_WRITE_OUTPORT:
		k->outport = v;
		if (!(v & 0x01)) /* bit 0 low: the CPU is held in reset */
			reset_guest(k);
		return;
	case CMD_WRITE_AUX:
		return; /* no mouse */
	default:
		break;
	}
	/* A byte for the keyboard itself. */
	push(k, KBD_ACK);
	if (v == KBD_RESET)
		push(k, 0xaa); /* basic assurance test passed */
	else if (v == KBD_GET_ID) {
		push(k, 0xab);
		push(k, 0x83);
	}
	notify(k);
}

static void i8042_io(void *opaque, uint64_t off, uint8_t *data, unsigned len,
		     bool is_write)
{
	struct i8042 *k = opaque;

	if (len != 1)
		return;
	if (off == 0) { /* 0x60 */
		if (is_write) {
			data_write(k, data[0]);
		} else {
			data[0] = pop(k);
			notify(k);
		}
	} else if (off == 4) { /* 0x64 */
		if (is_write)
			command(k, data[0]);
		else
			data[0] = k->status | (k->count ? STATUS_OBF : 0);
	}
}

int i8042_ctrl_alt_del(struct machine *m)
{
	struct i8042 *k = m->i8042;
	struct machine_dev *d = NULL;

	if (!k)
		return -ENODEV;
	for (unsigned i = 0; i < m->n_devs; i++)
		if (m->devs[i]->opaque == k)
			d = m->devs[i];
	pthread_mutex_lock(&d->lock);
	/* Make codes of scan code set 2 (the controller does not
	 * translate): left Ctrl, left Alt, Delete. */
	push(k, 0x14);
	push(k, 0x11);
	push(k, 0xe0);
	push(k, 0x71);
	notify(k);
	pthread_mutex_unlock(&d->lock);
	return 0;
}

static void i8042_teardown(void *opaque)
{
	struct i8042 *k = opaque;

	k->m->i8042 = NULL;
	free(k);
}

/* Snapshot state: registers, pending command and the output buffer. */
enum { I8042_STATE_SIZE = 6 + BUF_SIZE };

static int i8042_save(void *opaque, uint8_t **buf, size_t *len)
{
	struct i8042 *k = opaque;
	uint8_t *b = malloc(I8042_STATE_SIZE);

	if (!b)
		return -ENOMEM;
	b[0] = k->status;
	b[1] = k->ctr;
	b[2] = k->outport;
	b[3] = k->pending_cmd;
	b[4] = (uint8_t)k->head;
	b[5] = (uint8_t)k->count;
	memcpy(b + 6, k->buf, BUF_SIZE);
	*buf = b;
	*len = I8042_STATE_SIZE;
	return 0;
}

static int i8042_restore(void *opaque, const uint8_t *b, size_t len)
{
	struct i8042 *k = opaque;

	if (len != I8042_STATE_SIZE || b[4] >= BUF_SIZE || b[5] > BUF_SIZE)
		return -EINVAL;
	k->status = b[0];
	k->ctr = b[1];
	k->outport = b[2];
	k->pending_cmd = b[3];
	k->head = b[4];
	k->count = b[5];
	memcpy(k->buf, b + 6, BUF_SIZE);
	return 0;
}

int i8042_setup(struct machine *m)
{
	struct i8042 *k = calloc(1, sizeof(*k));
	int ret;

	if (!k)
		return -ENOMEM;
	k->m = m;
	k->status = STATUS_SYS | STATUS_KBD_EN;
	k->ctr = CTR_KBD_INT | CTR_SYS;
	k->outport = 0x01;
	/* 0x60 to 0x64: one device, offsets 0 and 4. */
	ret = machine_add_device(m, "i8042", MACHINE_BUS_PIO, I8042_DATA_PORT,
				 5, i8042_io, i8042_teardown, k);
	if (ret) {
		free(k);
		return ret;
	}
	m->i8042 = k;
	machine_set_dev_state(m, i8042_save, i8042_restore);
	return 0;
}
