/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vmstate file: a round trip keeps every field; every corrupt file
 * (any byte changed, truncated anywhere, wrong magic, version, checksum,
 * a section disagreeing with the config) is refused with a reason, and
 * an atomic write leaves no file behind when it fails.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "ember/vmstate.h"
#include "test.h"

static struct vmstate *sample(unsigned vcpus, unsigned devices)
{
	struct vmstate *s = vmstate_new();
	struct vmstate_config *c;

	if (!s)
		return NULL;
	c = &s->config;
	c->vcpu_count = vcpus;
	c->mem_size = 0xd0000000ULL + (256ULL << 20);
	c->track_dirty_pages = true;
	c->entropy = true;
	c->n_regions = 2;
	c->regions[0] = (struct vmstate_region){ 0, 0xd0000000ULL, 0 };
	c->regions[1] = (struct vmstate_region){ 1ULL << 32, 256ULL << 20,
						 0xd0000000ULL };
	c->n_drives = 1;
	snprintf(c->drives[0].drive_id, sizeof(c->drives[0].drive_id),
		 "rootfs");
	snprintf(c->drives[0].path, sizeof(c->drives[0].path),
		 "/var/lib/ember/rootfs.ext4");
	c->drives[0].is_root_device = true;
	c->vsock = true;
	c->vsock_cid = 3;
	snprintf(c->vsock_uds_path, sizeof(c->vsock_uds_path), "/run/v.sock");
	for (unsigned i = 0; i < vcpus; i++) {
		struct vmstate_vcpu *v = &s->vcpus[i];

		v->regs.rax = 0x1111 * (i + 1);
		v->regs.rip = 0x10000 + i;
		v->sregs.cr3 = 0x9000;
		v->fpu.mxcsr = 0x1f80;
		v->xsave.region[7] = 0xabcd + i;
		v->xcrs.nr_xcrs = 1;
		v->xcrs.xcrs[0].value = 7;
		v->lapic.regs[0x20] = (char)i;
		v->mp_state.mp_state = KVM_MP_STATE_RUNNABLE;
		v->events.nmi.pending = 1;
		v->debugregs.dr7 = 0x400;
		v->n_msrs = 3 + i;
		v->msrs = calloc(v->n_msrs, sizeof(*v->msrs));
		for (unsigned j = 0; j < v->n_msrs; j++) {
			v->msrs[j].index = 0x10 + j;
			v->msrs[j].data = 0x123456789ULL * (j + 1);
		}
	}
	s->clock.clock = 987654321;
	s->pic_master.chip_id = 0;
	s->pic_master.chip.pic.irq_base = 0x20;
	s->pic_slave.chip_id = 1;
	s->pic_slave.chip.pic.irq_base = 0x28;
	s->ioapic.chip_id = 2;
	s->ioapic.chip.ioapic.base_address = 0xfec00000;
	s->pit.channels[0].count = 0x10000;
	s->n_devices = devices;
	for (unsigned i = 0; i < devices; i++) {
		uint8_t st[40];
		char name[16];

		memset(st, (int)i + 1, sizeof(st));
		snprintf(name, sizeof(name), "dev%u", i);
		vmstate_device_set(&s->devices[i], name, 0x3f8 + i, st,
				   i == 1 ? 0 : sizeof(st) - i);
	}
	return s;
}

static bool same(const struct vmstate *a, const struct vmstate *b)
{
	const struct vmstate_config *x = &a->config, *y = &b->config;

	if (x->vcpu_count != y->vcpu_count || x->mem_size != y->mem_size ||
	    x->smt != y->smt || x->track_dirty_pages != y->track_dirty_pages ||
	    x->entropy != y->entropy || x->vsock != y->vsock ||
	    x->vsock_cid != y->vsock_cid || x->n_regions != y->n_regions ||
	    x->n_drives != y->n_drives || x->n_nets != y->n_nets ||
	    strcmp(x->vsock_uds_path, y->vsock_uds_path) ||
	    memcmp(x->regions, y->regions, sizeof(x->regions)))
		return false;
	for (unsigned i = 0; i < x->n_drives; i++)
		if (strcmp(x->drives[i].drive_id, y->drives[i].drive_id) ||
		    strcmp(x->drives[i].path, y->drives[i].path) ||
		    x->drives[i].is_root_device != y->drives[i].is_root_device ||
		    x->drives[i].is_read_only != y->drives[i].is_read_only)
			return false;
	for (unsigned i = 0; i < x->n_nets; i++)
		if (strcmp(x->nets[i].iface_id, y->nets[i].iface_id) ||
		    strcmp(x->nets[i].host_dev_name,
			   y->nets[i].host_dev_name) ||
		    strcmp(x->nets[i].guest_mac, y->nets[i].guest_mac))
			return false;
	for (unsigned i = 0; i < x->vcpu_count; i++) {
		const struct vmstate_vcpu *v = &a->vcpus[i], *w = &b->vcpus[i];

		if (memcmp(&v->regs, &w->regs, sizeof(v->regs)) ||
		    memcmp(&v->sregs, &w->sregs, sizeof(v->sregs)) ||
		    memcmp(&v->fpu, &w->fpu, sizeof(v->fpu)) ||
		    memcmp(&v->xsave, &w->xsave, sizeof(v->xsave)) ||
		    memcmp(&v->xcrs, &w->xcrs, sizeof(v->xcrs)) ||
		    memcmp(&v->lapic, &w->lapic, sizeof(v->lapic)) ||
		    memcmp(&v->mp_state, &w->mp_state, sizeof(v->mp_state)) ||
		    memcmp(&v->events, &w->events, sizeof(v->events)) ||
		    memcmp(&v->debugregs, &w->debugregs,
			   sizeof(v->debugregs)) ||
		    v->n_msrs != w->n_msrs)
			return false;
		for (unsigned j = 0; j < v->n_msrs; j++)
			if (v->msrs[j].index != w->msrs[j].index ||
			    v->msrs[j].data != w->msrs[j].data)
				return false;
	}
	if (memcmp(&a->clock, &b->clock, sizeof(a->clock)) ||
	    memcmp(&a->pic_master, &b->pic_master, sizeof(a->pic_master)) ||
	    memcmp(&a->pic_slave, &b->pic_slave, sizeof(a->pic_slave)) ||
	    memcmp(&a->ioapic, &b->ioapic, sizeof(a->ioapic)) ||
	    memcmp(&a->pit, &b->pit, sizeof(a->pit)) ||
	    a->n_devices != b->n_devices)
		return false;
	for (unsigned i = 0; i < a->n_devices; i++) {
		const struct vmstate_device *d = &a->devices[i],
					    *e = &b->devices[i];

		if (strcmp(d->name, e->name) || d->base != e->base ||
		    d->len != e->len || (d->len && memcmp(d->data, e->data,
							   d->len)))
			return false;
	}
	return true;
}

/* Decodes buf and expects a refusal whose reason contains want. */
static bool refused(const uint8_t *buf, size_t len, const char *want)
{
	struct vmstate *out = (struct vmstate *)1;
	char why[256] = "";
	int ret = vmstate_decode(buf, len, &out, why, sizeof(why));

	if (ret != -EBADMSG || out != NULL || !why[0]) {
		fprintf(stderr, "accepted or wrong error %d\n", ret);
		return false;
	}
	if (want && !strstr(why, want)) {
		fprintf(stderr, "reason \"%s\" lacks \"%s\"\n", why, want);
		return false;
	}
	return true;
}

/* Re-seals a modified buffer (length and checksum right) so that the
 * structural checks behind the checksum are reached. */
static void reseal(uint8_t *buf, size_t len)
{
	uint64_t total = len, sum;
	static const uint8_t zero[8];
	XXH3_state_t st;

	memcpy(buf + 16, &total, 8);
	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, buf, 24);
	XXH3_64bits_update(&st, zero, 8);
	XXH3_64bits_update(&st, buf + 32, len - 32);
	sum = XXH3_64bits_digest(&st);
	memcpy(buf + 24, &sum, 8);
}

static void test_round_trip(void)
{
	for (unsigned vcpus = 1; vcpus <= 4; vcpus += 3) {
		struct vmstate *s = sample(vcpus, 3), *d = NULL;
		uint8_t *buf;
		size_t len;
		char why[256] = "";

		CHECK(vmstate_encode(s, &buf, &len) == 0);
		CHECK(vmstate_decode(buf, len, &d, why, sizeof(why)) == 0);
		CHECK(d && same(s, d));
		vmstate_free(d);
		free(buf);
		vmstate_free(s);
	}
}

/* Network interfaces: kept through a round trip; a file without any has
 * the layout of files from before interfaces existed (no flag 16). */
static void test_nets(void)
{
	struct vmstate *s = sample(1, 2), *d = NULL;
	uint8_t *buf, *plain;
	size_t len, plain_len;
	uint32_t flags;
	char why[256] = "";

	CHECK(vmstate_encode(s, &plain, &plain_len) == 0);
	memcpy(&flags, plain + VMSTATE_HEADER_SIZE + 16 + 4, 4);
	CHECK((flags & 16) == 0);
	free(plain);
	s->config.n_nets = 2;
	snprintf(s->config.nets[0].iface_id, VMSTATE_ID_MAX, "eth0");
	snprintf(s->config.nets[0].host_dev_name, 16, "tap0");
	snprintf(s->config.nets[0].guest_mac, 18, "06:00:ac:1f:00:02");
	snprintf(s->config.nets[1].iface_id, VMSTATE_ID_MAX, "eth1");
	snprintf(s->config.nets[1].host_dev_name, 16, "tap1");
	CHECK(vmstate_encode(s, &buf, &len) == 0);
	CHECK(len > plain_len);
	memcpy(&flags, buf + VMSTATE_HEADER_SIZE + 16 + 4, 4);
	CHECK((flags & 16) == 16);
	CHECK(vmstate_decode(buf, len, &d, why, sizeof(why)) == 0);
	CHECK(d && same(s, d));
	CHECK(d && strcmp(d->config.nets[1].guest_mac, "") == 0);
	vmstate_free(d);
	s->config.n_nets = VMSTATE_MAX_NETS + 1;
	CHECK(vmstate_encode(s, &plain, &plain_len) == -EINVAL);
	free(buf);
	vmstate_free(s);
}

/* Offsets of every section boundary of an encoded file. */
static size_t boundaries(const uint8_t *buf, size_t len, size_t *out,
			 size_t max)
{
	size_t n = 0, pos = VMSTATE_HEADER_SIZE;

	out[n++] = VMSTATE_HEADER_SIZE;
	while (pos + 16 <= len && n < max) {
		uint64_t l;

		memcpy(&l, buf + pos + 8, 8);
		out[n++] = pos + 8; /* inside the section header */
		out[n++] = pos + 16; /* header done, payload missing */
		pos += 16 + l;
		if (pos < len)
			out[n++] = pos;
	}
	return n;
}

static void test_corrupt(void)
{
	struct vmstate *s = sample(2, 3);
	uint8_t *buf, *copy;
	size_t len, cuts[128], n;
	unsigned bad_flips = 0;

	if (vmstate_encode(s, &buf, &len) != 0) {
		CHECK(0);
		vmstate_free(s);
		return;
	}
	copy = malloc(len);

	/* Every byte changed (every 7th, to keep it short, plus all of the
	 * header): refused, never accepted. */
	for (size_t i = 0; i < len; i += i < 64 ? 1 : 7) {
		memcpy(copy, buf, len);
		copy[i] ^= 0x5a;
		if (!refused(copy, len, NULL))
			bad_flips++;
	}
	CHECK(bad_flips == 0);
	memcpy(copy, buf, len);
	copy[len / 2] ^= 1;
	CHECK(refused(copy, len, "bad checksum"));
	memcpy(copy, buf, len);
	copy[0] = 'X';
	CHECK(refused(copy, len, "bad magic"));
	memcpy(copy, buf, len);
	copy[8] = 2;
	CHECK(refused(copy, len, "unsupported format version 2"));

	/* Truncated at every section boundary, and within the header. */
	n = boundaries(buf, len, cuts, 128);
	CHECK(n > 10);
	for (size_t i = 0; i < n; i++)
		CHECK(refused(buf, cuts[i], "truncated"));
	for (size_t i = 0; i < VMSTATE_HEADER_SIZE; i++)
		CHECK(refused(buf, i, "truncated"));
	CHECK(refused(buf, len - 1, "truncated"));
	/* A truncated file whose header was rewritten to match: the
	 * structure check catches it. */
	for (size_t i = 0; i < n; i++) {
		memcpy(copy, buf, cuts[i]);
		if (cuts[i] >= VMSTATE_HEADER_SIZE) {
			reseal(copy, cuts[i]);
			CHECK(refused(copy, cuts[i], NULL));
		}
	}
	free(copy);
	copy = malloc(len + 8);
	memcpy(copy, buf, len);
	memset(copy + len, 0, 8);
	CHECK(refused(copy, len + 8, "trailing"));
	free(copy);
	free(buf);
	vmstate_free(s);
}

/* Files that are well formed but disagree with their own config. */
static void test_disagreeing(void)
{
	struct vmstate *s = sample(2, 1);
	uint8_t *buf;
	size_t len;
	uint32_t n_sections;

	/* The config says 2 vCPUs; the file holds one. */
	s->config.vcpu_count = 1;
	CHECK(vmstate_encode(s, &buf, &len) == 0);
	memcpy(&n_sections, buf + 12, 4);
	{
		/* Patch the config's vCPU count to 2 (first config field). */
		uint32_t two = 2;

		memcpy(buf + VMSTATE_HEADER_SIZE + 16, &two, 4);
		reseal(buf, len);
		CHECK(refused(buf, len, "the config has 2 vCPUs"));
	}
	free(buf);

	/* Memory slots that do not add up to the memory size. */
	s->config.vcpu_count = 2;
	s->config.mem_size += 4096;
	CHECK(vmstate_encode(s, &buf, &len) == 0);
	CHECK(refused(buf, len, "memory slots add up to"));
	free(buf);
	s->config.mem_size -= 4096;

	/* Slot 1 at the wrong file offset (its guest address). */
	s->config.regions[1].file_offset = 1ULL << 32;
	CHECK(vmstate_encode(s, &buf, &len) == 0);
	CHECK(refused(buf, len, "memory slot 1"));
	free(buf);
	s->config.regions[1].file_offset = 0xd0000000ULL;

	/* An MSR count that the section's size does not hold. */
	CHECK(vmstate_encode(s, &buf, &len) == 0);
	{
		size_t pos = VMSTATE_HEADER_SIZE, vcpu_payload;
		uint64_t l;

		memcpy(&l, buf + pos + 8, 8);
		pos += 16 + l; /* vCPU 0 section */
		memcpy(&l, buf + pos + 8, 8);
		vcpu_payload = pos + 16 + l - 3 * 16 - 8;
		buf[vcpu_payload] = 4; /* 3 MSRs stored, 4 claimed */
		reseal(buf, len);
		CHECK(refused(buf, len, "do not hold 4 MSRs"));
	}
	free(buf);
	vmstate_free(s);
}

static void test_atomic_write(void)
{
	char dir[] = "/tmp/ember-vmstate-XXXXXX", path[256], bad[300];
	struct vmstate *s = sample(1, 2), *d = NULL;
	char why[256];
	struct stat st;

	if (!mkdtemp(dir)) {
		CHECK(0);
		vmstate_free(s);
		return;
	}
	snprintf(path, sizeof(path), "%s/vmstate", dir);
	CHECK(vmstate_write_file(path, s) == 0);
	CHECK(vmstate_read_file(path, &d, why, sizeof(why)) == 0);
	CHECK(d && same(s, d));
	vmstate_free(d);
	/* A write that fails leaves nothing at its path. */
	snprintf(bad, sizeof(bad), "%s/missing/vmstate", dir);
	CHECK(vmstate_write_file(bad, s) < 0);
	CHECK(stat(bad, &st) < 0 && errno == ENOENT);
	/* A file cut short is refused when read back. */
	CHECK(truncate(path, 100) == 0);
	CHECK(vmstate_read_file(path, &d, why, sizeof(why)) == -EBADMSG);
	CHECK(strstr(why, "truncated") != NULL);
	CHECK(vmstate_read_file(bad, &d, why, sizeof(why)) == -ENOENT);
	unlink(path);
	rmdir(dir);
	vmstate_free(s);
}

int main(void)
{
	test_round_trip();
	test_nets();
	test_corrupt();
	test_disagreeing();
	test_atomic_write();
	return test_summary("vmstate");
}
