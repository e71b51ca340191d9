/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Intel MultiProcessor Specification 1.4 tables Linux reads (without
 * ACPI) to find the vCPUs, the IOAPIC and the ISA interrupt routing:
 *
 *   floating pointer "_MP_" (16 bytes) -> configuration table "PCMP":
 *     header (44 bytes), then entries:
 *       processor (20) x ncpus, bus "ISA" (8), IOAPIC (8),
 *       I/O interrupt (8) x (16 ISA IRQs + extra irqs),
 *       local interrupt (8) x 2 (LINT0 ExtINT, LINT1 NMI)
 *
 * Each structure's bytes sum to 0 mod 256.
 */
#include <errno.h>
#include <string.h>

#include "x86.h"

struct mpf {
	char signature[4];
	uint32_t physptr;
	uint8_t length; /* in 16-byte units */
	uint8_t specification;
	uint8_t checksum;
	uint8_t feature[5];
} __attribute__((packed));

struct mpc_header {
	char signature[4];
	uint16_t length;
	uint8_t spec;
	uint8_t checksum;
	char oem[8];
	char product[12];
	uint32_t oemptr;
	uint16_t oemsize;
	uint16_t oemcount;
	uint32_t lapic;
	uint16_t ext_length;
	uint8_t ext_checksum;
	uint8_t reserved;
} __attribute__((packed));

struct mpc_cpu {
	uint8_t type;
	uint8_t apicid;
	uint8_t apicver;
	uint8_t cpuflag;
	uint32_t cpufeature;
	uint32_t featureflag;
	uint32_t reserved[2];
} __attribute__((packed));

struct mpc_bus {
	uint8_t type;
	uint8_t busid;
	char bustype[6];
} __attribute__((packed));

struct mpc_ioapic {
	uint8_t type;
	uint8_t apicid;
	uint8_t apicver;
	uint8_t flags;
	uint32_t apicaddr;
} __attribute__((packed));

struct mpc_intsrc {
	uint8_t type;
	uint8_t irqtype;
	uint16_t irqflag;
	uint8_t srcbus;
	uint8_t srcbusirq;
	uint8_t dstapic;
	uint8_t dstirq;
} __attribute__((packed));

enum {
	MP_PROCESSOR = 0,
	MP_BUS = 1,
	MP_IOAPIC = 2,
	MP_INTSRC = 3,
	MP_LINTSRC = 4,
	MP_INT = 0,
	MP_NMI = 1,
	MP_EXTINT = 3,
	CPU_ENABLED = 1,
	CPU_BOOTPROCESSOR = 2,
	APIC_VERSION = 0x14,
	IOAPIC_VERSION = 0x11,
	ISA_BUS_ID = 0,
	ISA_IRQS = 16,
};

static uint8_t checksum(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;

	for (size_t i = 0; i < len; i++)
		sum += b[i];
	return (uint8_t)-sum;
}

size_t mptable_size(unsigned ncpus, unsigned n_irqs)
{
	return sizeof(struct mpf) + sizeof(struct mpc_header) +
	       ncpus * sizeof(struct mpc_cpu) + sizeof(struct mpc_bus) +
	       sizeof(struct mpc_ioapic) +
	       (ISA_IRQS + n_irqs + 2) * sizeof(struct mpc_intsrc);
}

int mptable_build(uint8_t *buf, size_t len, uint64_t gpa, unsigned ncpus,
		  const unsigned *irqs, unsigned n_irqs)
{
	size_t need = mptable_size(ncpus, n_irqs);
	struct mpf *mpf = (struct mpf *)buf;
	struct mpc_header *hdr;
	uint8_t *p;
	uint16_t count = 0;
	uint8_t ioapic_id = (uint8_t)ncpus;

	if (ncpus == 0 || ncpus > 254)
		return -EINVAL;
	if (len < need)
		return -ENOSPC;
	memset(buf, 0, need);

	memcpy(mpf->signature, "_MP_", 4);
	mpf->physptr = (uint32_t)(gpa + sizeof(*mpf));
	mpf->length = 1;
	mpf->specification = 4;

	hdr = (struct mpc_header *)(buf + sizeof(*mpf));
	memcpy(hdr->signature, "PCMP", 4);
	hdr->spec = 4;
	memcpy(hdr->oem, "EMBER   ", 8);
	memcpy(hdr->product, "MICROVM     ", 12);
	hdr->lapic = (uint32_t)LAPIC_GPA;
	p = (uint8_t *)(hdr + 1);

	for (unsigned i = 0; i < ncpus; i++) {
		struct mpc_cpu *c = (struct mpc_cpu *)p;

		c->type = MP_PROCESSOR;
		c->apicid = (uint8_t)i;
		c->apicver = APIC_VERSION;
		c->cpuflag = CPU_ENABLED | (i == 0 ? CPU_BOOTPROCESSOR : 0);
		c->cpufeature = 0x600; /* family 6 */
		c->featureflag = (1u << 0) | (1u << 9); /* FPU, APIC */
		p += sizeof(*c);
		count++;
	}

	struct mpc_bus *bus = (struct mpc_bus *)p;
	bus->type = MP_BUS;
	bus->busid = ISA_BUS_ID;
	memcpy(bus->bustype, "ISA   ", 6);
	p += sizeof(*bus);
	count++;

	struct mpc_ioapic *io = (struct mpc_ioapic *)p;
	io->type = MP_IOAPIC;
	io->apicid = ioapic_id;
	io->apicver = IOAPIC_VERSION;
	io->flags = 1; /* enabled */
	io->apicaddr = (uint32_t)IOAPIC_GPA;
	p += sizeof(*io);
	count++;

	for (unsigned i = 0; i < ISA_IRQS + n_irqs; i++) {
		struct mpc_intsrc *s = (struct mpc_intsrc *)p;
		unsigned irq = i < ISA_IRQS ? i : irqs[i - ISA_IRQS];

		s->type = MP_INTSRC;
		s->irqtype = MP_INT;
		s->irqflag = 0; /* conforms to the bus: edge, active high */
		s->srcbus = ISA_BUS_ID;
		s->srcbusirq = (uint8_t)irq;
		s->dstapic = ioapic_id;
		s->dstirq = (uint8_t)irq;
		p += sizeof(*s);
		count++;
	}

	for (unsigned lint = 0; lint < 2; lint++) {
		struct mpc_intsrc *s = (struct mpc_intsrc *)p;

		s->type = MP_LINTSRC;
		s->irqtype = lint == 0 ? MP_EXTINT : MP_NMI;
		s->srcbus = ISA_BUS_ID;
		s->dstapic = 0xff; /* every local APIC */
		s->dstirq = (uint8_t)lint;
		p += sizeof(*s);
		count++;
	}

	hdr->length = (uint16_t)(p - (uint8_t *)hdr);
	hdr->oemcount = count;
	hdr->checksum = checksum(hdr, hdr->length);
	mpf->checksum = checksum(mpf, sizeof(*mpf));
	return (int)need;
}
