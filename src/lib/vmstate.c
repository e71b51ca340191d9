/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vmstate file (layout table in include/ember/vmstate.h): encode,
 * validate and decode. The decoder trusts nothing: every length is checked
 * against what is left of the buffer before it is read, and the whole
 * state is decoded before the caller touches KVM with any of it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "ember/util.h"
#include "ember/vmstate.h"

#define CHECKSUM_OFFSET 24
#define SECTION_HEADER_SIZE 16
#define MAX_FILE_SIZE (64u << 20)

#define VCPU_FIXED_SIZE                                                       \
	(sizeof(struct kvm_regs) + sizeof(struct kvm_sregs) +                 \
	 sizeof(struct kvm_fpu) + sizeof(struct kvm_xsave) +                  \
	 sizeof(struct kvm_xcrs) + sizeof(struct kvm_lapic_state) +           \
	 sizeof(struct kvm_mp_state) + sizeof(struct kvm_vcpu_events) +       \
	 sizeof(struct kvm_debugregs) + 8)
#define MSR_SIZE 16

struct vmstate *vmstate_new(void)
{
	return calloc(1, sizeof(struct vmstate));
}

void vmstate_free(struct vmstate *s)
{
	if (!s)
		return;
	for (unsigned i = 0; i < VMSTATE_MAX_VCPUS; i++)
		free(s->vcpus[i].msrs);
	for (unsigned i = 0; i < VMSTATE_MAX_DEVICES; i++)
		free(s->devices[i].data);
	free(s);
}

int vmstate_device_set(struct vmstate_device *d, const char *name,
		       uint64_t base, const void *data, size_t len)
{
	if (strlen(name) >= VMSTATE_NAME_MAX || len > VMSTATE_MAX_DEVICE_STATE)
		return -EINVAL;
	free(d->data);
	memset(d, 0, sizeof(*d));
	snprintf(d->name, sizeof(d->name), "%s", name);
	d->base = base;
	if (len) {
		d->data = malloc(len);
		if (!d->data)
			return -ENOMEM;
		memcpy(d->data, data, len);
	}
	d->len = (uint32_t)len;
	return 0;
}

/* ---- writer ---- */

struct wbuf {
	uint8_t *p;
	size_t len, cap;
	bool oom;
};

static void put(struct wbuf *w, const void *data, size_t len)
{
	if (w->oom)
		return;
	if (w->len + len > w->cap) {
		size_t cap = w->cap ? w->cap : 65536;
		uint8_t *p;

		while (cap < w->len + len)
			cap *= 2;
		p = realloc(w->p, cap);
		if (!p) {
			w->oom = true;
			return;
		}
		w->p = p;
		w->cap = cap;
	}
	if (len)
		memcpy(w->p + w->len, data, len);
	w->len += len;
}

static void put_u8(struct wbuf *w, uint8_t v) { put(w, &v, 1); }
static void put_u16(struct wbuf *w, uint16_t v) { put(w, &v, 2); }
static void put_u32(struct wbuf *w, uint32_t v) { put(w, &v, 4); }
static void put_u64(struct wbuf *w, uint64_t v) { put(w, &v, 8); }

static void put_str(struct wbuf *w, const char *s)
{
	size_t n = strnlen(s, VMSTATE_PATH_MAX - 1);

	put_u16(w, (uint16_t)n);
	put(w, s, n);
}

/* Starts a section; returns where its length goes. */
static size_t begin_section(struct wbuf *w, uint32_t type, uint32_t index)
{
	size_t at;

	put_u32(w, type);
	put_u32(w, index);
	at = w->len;
	put_u64(w, 0);
	return at;
}

static void end_section(struct wbuf *w, size_t at)
{
	uint64_t len = w->len - at - 8;

	if (!w->oom)
		memcpy(w->p + at, &len, 8);
}

static void encode_config(struct wbuf *w, const struct vmstate_config *c)
{
	uint32_t flags = (c->smt ? 1u : 0) | (c->track_dirty_pages ? 2u : 0) |
			 (c->entropy ? 4u : 0) | (c->vsock ? 8u : 0) |
			 (c->n_nets ? 16u : 0);

	put_u32(w, c->vcpu_count);
	put_u32(w, flags);
	put_u64(w, c->mem_size);
	put_u32(w, c->n_regions);
	for (unsigned i = 0; i < c->n_regions; i++) {
		put_u64(w, c->regions[i].gpa);
		put_u64(w, c->regions[i].size);
		put_u64(w, c->regions[i].file_offset);
	}
	put_u32(w, c->n_drives);
	for (unsigned i = 0; i < c->n_drives; i++) {
		put_str(w, c->drives[i].drive_id);
		put_str(w, c->drives[i].path);
		put_u8(w, c->drives[i].is_root_device);
		put_u8(w, c->drives[i].is_read_only);
	}
	put_u32(w, c->vsock_cid);
	put_str(w, c->vsock_uds_path);
	if (!c->n_nets)
		return; /* the layout of files written before interfaces */
	put_u32(w, c->n_nets);
	for (unsigned i = 0; i < c->n_nets; i++) {
		put_str(w, c->nets[i].iface_id);
		put_str(w, c->nets[i].host_dev_name);
		put_str(w, c->nets[i].guest_mac);
	}
}

static void encode_vcpu(struct wbuf *w, const struct vmstate_vcpu *v)
{
	put(w, &v->regs, sizeof(v->regs));
	put(w, &v->sregs, sizeof(v->sregs));
	put(w, &v->fpu, sizeof(v->fpu));
	put(w, &v->xsave, sizeof(v->xsave));
	put(w, &v->xcrs, sizeof(v->xcrs));
	put(w, &v->lapic, sizeof(v->lapic));
	put(w, &v->mp_state, sizeof(v->mp_state));
	put(w, &v->events, sizeof(v->events));
	put(w, &v->debugregs, sizeof(v->debugregs));
	put_u32(w, v->n_msrs);
	put_u32(w, 0);
	for (unsigned i = 0; i < v->n_msrs; i++) {
		put_u32(w, v->msrs[i].index);
		put_u32(w, 0);
		put_u64(w, v->msrs[i].data);
	}
}

static uint64_t checksum(const uint8_t *buf, size_t len)
{
	static const uint8_t zero[8];
	XXH3_state_t st;

	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, buf, CHECKSUM_OFFSET);
	XXH3_64bits_update(&st, zero, 8);
	XXH3_64bits_update(&st, buf + VMSTATE_HEADER_SIZE,
			   len - VMSTATE_HEADER_SIZE);
	return XXH3_64bits_digest(&st);
}

int vmstate_encode(const struct vmstate *s, uint8_t **buf, size_t *len)
{
	const struct vmstate_config *c = &s->config;
	struct wbuf w = { 0 };
	uint32_t n_sections = 0;
	uint64_t total, sum;
	size_t at;

	*buf = NULL;
	*len = 0;
	if (c->vcpu_count > VMSTATE_MAX_VCPUS ||
	    c->n_regions > VMSTATE_MAX_REGIONS ||
	    c->n_drives > VMSTATE_MAX_DRIVES || c->n_nets > VMSTATE_MAX_NETS ||
	    s->n_devices > VMSTATE_MAX_DEVICES)
		return -EINVAL;
	for (unsigned i = 0; i < c->vcpu_count; i++)
		if (s->vcpus[i].n_msrs > VMSTATE_MAX_MSRS ||
		    (s->vcpus[i].n_msrs && !s->vcpus[i].msrs))
			return -EINVAL;
	put(&w, VMSTATE_MAGIC, 8);
	put_u32(&w, VMSTATE_VERSION);
	put_u32(&w, 0); /* sections, below */
	put_u64(&w, 0); /* length, below */
	put_u64(&w, 0); /* checksum, below */

	at = begin_section(&w, VMSTATE_SEC_CONFIG, 0);
	encode_config(&w, c);
	end_section(&w, at);
	n_sections++;
	for (unsigned i = 0; i < c->vcpu_count; i++) {
		at = begin_section(&w, VMSTATE_SEC_VCPU, i);
		encode_vcpu(&w, &s->vcpus[i]);
		end_section(&w, at);
		n_sections++;
	}
	at = begin_section(&w, VMSTATE_SEC_CLOCK, 0);
	put(&w, &s->clock, sizeof(s->clock));
	end_section(&w, at);
	n_sections++;
	for (unsigned i = 0; i < 3; i++) {
		const struct kvm_irqchip *ic = i == 0   ? &s->pic_master
					       : i == 1 ? &s->pic_slave
							: &s->ioapic;

		at = begin_section(&w, VMSTATE_SEC_IRQCHIP, i);
		put(&w, ic, sizeof(*ic));
		end_section(&w, at);
		n_sections++;
	}
	at = begin_section(&w, VMSTATE_SEC_PIT, 0);
	put(&w, &s->pit, sizeof(s->pit));
	end_section(&w, at);
	n_sections++;
	for (unsigned i = 0; i < s->n_devices; i++) {
		const struct vmstate_device *d = &s->devices[i];
		size_t n = strnlen(d->name, VMSTATE_NAME_MAX - 1);

		at = begin_section(&w, VMSTATE_SEC_DEVICE, i);
		put_u16(&w, (uint16_t)n);
		put(&w, d->name, n);
		put_u64(&w, d->base);
		put_u32(&w, d->len);
		put(&w, d->data, d->len);
		end_section(&w, at);
		n_sections++;
	}
	if (w.oom) {
		free(w.p);
		return -ENOMEM;
	}
	total = w.len;
	memcpy(w.p + 12, &n_sections, 4);
	memcpy(w.p + 16, &total, 8);
	sum = checksum(w.p, w.len);
	memcpy(w.p + CHECKSUM_OFFSET, &sum, 8);
	*buf = w.p;
	*len = w.len;
	return 0;
}

/* ---- reader ---- */

struct rbuf {
	const uint8_t *p;
	size_t len, pos;
	bool short_read;
};

static bool get(struct rbuf *r, void *out, size_t len)
{
	if (r->short_read || len > r->len - r->pos) {
		r->short_read = true;
		if (out)
			memset(out, 0, len);
		return false;
	}
	if (out)
		memcpy(out, r->p + r->pos, len);
	r->pos += len;
	return true;
}

static uint8_t get_u8(struct rbuf *r) { uint8_t v; get(r, &v, 1); return v; }
static uint16_t get_u16(struct rbuf *r) { uint16_t v; get(r, &v, 2); return v; }
static uint32_t get_u32(struct rbuf *r) { uint32_t v; get(r, &v, 4); return v; }
static uint64_t get_u64(struct rbuf *r) { uint64_t v; get(r, &v, 8); return v; }

static bool get_str(struct rbuf *r, char *out, size_t cap)
{
	uint16_t n = get_u16(r);

	if (n >= cap) {
		r->short_read = true;
		return false;
	}
	if (!get(r, out, n))
		return false;
	out[n] = '\0';
	return memchr(out, '\0', n) == NULL;
}

static int fail(char *why, size_t why_size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *why, size_t why_size, const char *fmt, ...)
{
	va_list ap;

	if (why && why_size) {
		va_start(ap, fmt);
		vsnprintf(why, why_size, fmt, ap);
		va_end(ap);
	}
	return -EBADMSG;
}

static int decode_config(struct rbuf *r, struct vmstate_config *c, char *why,
			 size_t why_size)
{
	uint32_t flags;
	uint64_t sum = 0, file_off = 0;

	c->vcpu_count = get_u32(r);
	flags = get_u32(r);
	c->mem_size = get_u64(r);
	c->n_regions = get_u32(r);
	if (c->vcpu_count == 0 || c->vcpu_count > VMSTATE_MAX_VCPUS)
		return fail(why, why_size, "config section: %u vCPUs",
			    c->vcpu_count);
	if (flags & ~31u)
		return fail(why, why_size, "config section: unknown flags 0x%x",
			    flags);
	c->smt = flags & 1;
	c->track_dirty_pages = flags & 2;
	c->entropy = flags & 4;
	c->vsock = flags & 8;
	if (c->n_regions == 0 || c->n_regions > VMSTATE_MAX_REGIONS)
		return fail(why, why_size, "config section: %u memory slots",
			    c->n_regions);
	for (unsigned i = 0; i < c->n_regions; i++) {
		struct vmstate_region *g = &c->regions[i];

		g->gpa = get_u64(r);
		g->size = get_u64(r);
		g->file_offset = get_u64(r);
		if ((g->gpa | g->size | g->file_offset) & 4095 ||
		    g->size == 0 || g->file_offset != file_off ||
		    g->gpa + g->size < g->gpa)
			return fail(why, why_size,
				    "config section: memory slot %u (guest 0x%llx, %llu bytes, file offset %llu) does not follow the previous one",
				    i, (unsigned long long)g->gpa,
				    (unsigned long long)g->size,
				    (unsigned long long)g->file_offset);
		file_off += g->size;
		sum += g->size;
	}
	if (sum != c->mem_size)
		return fail(why, why_size,
			    "config section: memory slots add up to %llu bytes, memory size is %llu",
			    (unsigned long long)sum,
			    (unsigned long long)c->mem_size);
	c->n_drives = get_u32(r);
	if (c->n_drives > VMSTATE_MAX_DRIVES)
		return fail(why, why_size, "config section: %u drives",
			    c->n_drives);
	for (unsigned i = 0; i < c->n_drives; i++) {
		struct vmstate_drive *d = &c->drives[i];

		if (!get_str(r, d->drive_id, sizeof(d->drive_id)) ||
		    !get_str(r, d->path, sizeof(d->path)))
			return fail(why, why_size,
				    "config section: bad drive %u", i);
		d->is_root_device = get_u8(r);
		d->is_read_only = get_u8(r);
	}
	c->vsock_cid = get_u32(r);
	if (!get_str(r, c->vsock_uds_path, sizeof(c->vsock_uds_path)))
		return fail(why, why_size, "config section: bad vsock path");
	if (!(flags & 16))
		return 0;
	c->n_nets = get_u32(r);
	if (c->n_nets == 0 || c->n_nets > VMSTATE_MAX_NETS)
		return fail(why, why_size,
			    "config section: %u network interfaces", c->n_nets);
	for (unsigned i = 0; i < c->n_nets; i++) {
		struct vmstate_net *n = &c->nets[i];

		if (!get_str(r, n->iface_id, sizeof(n->iface_id)) ||
		    !get_str(r, n->host_dev_name, sizeof(n->host_dev_name)) ||
		    !get_str(r, n->guest_mac, sizeof(n->guest_mac)) ||
		    !n->host_dev_name[0])
			return fail(why, why_size,
				    "config section: bad network interface %u",
				    i);
	}
	return 0;
}

static int decode_vcpu(struct rbuf *r, uint64_t sec_len,
		       struct vmstate_vcpu *v, unsigned index, char *why,
		       size_t why_size)
{
	uint32_t pad;

	if (sec_len < VCPU_FIXED_SIZE)
		return fail(why, why_size,
			    "vCPU %u section: %llu bytes, at least %zu expected",
			    index, (unsigned long long)sec_len,
			    (size_t)VCPU_FIXED_SIZE);
	get(r, &v->regs, sizeof(v->regs));
	get(r, &v->sregs, sizeof(v->sregs));
	get(r, &v->fpu, sizeof(v->fpu));
	get(r, &v->xsave, sizeof(v->xsave));
	get(r, &v->xcrs, sizeof(v->xcrs));
	get(r, &v->lapic, sizeof(v->lapic));
	get(r, &v->mp_state, sizeof(v->mp_state));
	get(r, &v->events, sizeof(v->events));
	get(r, &v->debugregs, sizeof(v->debugregs));
	v->n_msrs = get_u32(r);
	pad = get_u32(r);
	if (pad || v->n_msrs > VMSTATE_MAX_MSRS ||
	    sec_len != VCPU_FIXED_SIZE + (uint64_t)v->n_msrs * MSR_SIZE)
		return fail(why, why_size,
			    "vCPU %u section: %llu bytes do not hold %u MSRs",
			    index, (unsigned long long)sec_len, v->n_msrs);
	if (v->xcrs.nr_xcrs > KVM_MAX_XCRS)
		return fail(why, why_size, "vCPU %u section: %u XCRs", index,
			    v->xcrs.nr_xcrs);
	if (v->n_msrs) {
		v->msrs = calloc(v->n_msrs, sizeof(*v->msrs));
		if (!v->msrs)
			return -ENOMEM;
	}
	for (unsigned i = 0; i < v->n_msrs; i++) {
		v->msrs[i].index = get_u32(r);
		get_u32(r);
		v->msrs[i].data = get_u64(r);
	}
	return 0;
}

static int decode_device(struct rbuf *r, uint64_t sec_len,
			 struct vmstate_device *d, unsigned index, char *why,
			 size_t why_size)
{
	size_t start = r->pos;
	uint16_t n = get_u16(r);

	if (n == 0 || n >= VMSTATE_NAME_MAX || !get(r, d->name, n) ||
	    memchr(d->name, '\0', n))
		return fail(why, why_size, "device %u section: bad name",
			    index);
	d->name[n] = '\0';
	d->base = get_u64(r);
	d->len = get_u32(r);
	if (d->len > VMSTATE_MAX_DEVICE_STATE ||
	    sec_len != (r->pos - start) + (uint64_t)d->len)
		return fail(why, why_size,
			    "device %u (%s) section: %llu bytes do not hold a state of %u bytes",
			    index, d->name, (unsigned long long)sec_len,
			    d->len);
	if (d->len) {
		d->data = malloc(d->len);
		if (!d->data)
			return -ENOMEM;
		get(r, d->data, d->len);
	}
	return 0;
}

static const char *section_name(uint32_t type)
{
	switch (type) {
	case VMSTATE_SEC_CONFIG: return "config";
	case VMSTATE_SEC_VCPU: return "vCPU";
	case VMSTATE_SEC_CLOCK: return "clock";
	case VMSTATE_SEC_IRQCHIP: return "irqchip";
	case VMSTATE_SEC_PIT: return "PIT";
	case VMSTATE_SEC_DEVICE: return "device";
	default: return "unknown";
	}
}

/* The section type and index expected at position i of n sections, given
 * the config's vCPU count; the device sections come last. */
static void expected_section(uint32_t i, uint32_t vcpus, uint32_t *type,
			     uint32_t *index)
{
	if (i == 0) {
		*type = VMSTATE_SEC_CONFIG;
		*index = 0;
	} else if (i <= vcpus) {
		*type = VMSTATE_SEC_VCPU;
		*index = i - 1;
	} else if (i == vcpus + 1) {
		*type = VMSTATE_SEC_CLOCK;
		*index = 0;
	} else if (i <= vcpus + 4) {
		*type = VMSTATE_SEC_IRQCHIP;
		*index = i - vcpus - 2;
	} else if (i == vcpus + 5) {
		*type = VMSTATE_SEC_PIT;
		*index = 0;
	} else {
		*type = VMSTATE_SEC_DEVICE;
		*index = i - vcpus - 6;
	}
}

static int decode_fixed(struct rbuf *r, uint64_t sec_len, void *out,
			size_t size, const char *what, char *why,
			size_t why_size)
{
	if (sec_len != size)
		return fail(why, why_size,
			    "%s section: %llu bytes, %zu expected", what,
			    (unsigned long long)sec_len, size);
	get(r, out, size);
	return 0;
}

static int decode_sections(struct rbuf *r, uint32_t n_sections,
			   struct vmstate *s, char *why, size_t why_size)
{
	uint32_t vcpus = 0;
	int ret = 0;

	for (uint32_t i = 0; i < n_sections && !ret; i++) {
		uint32_t type = get_u32(r), index = get_u32(r);
		uint64_t len = get_u64(r);
		uint32_t want_type, want_index;
		size_t start;

		if (r->short_read || len > r->len - r->pos)
			return fail(why, why_size,
				    "section %u runs past the end of the file",
				    i);
		if (i == 0 && type != VMSTATE_SEC_CONFIG)
			return fail(why, why_size,
				    "the first section is %s, not config",
				    section_name(type));
		expected_section(i, vcpus, &want_type, &want_index);
		if (type != want_type || index != want_index) {
			if (type == VMSTATE_SEC_VCPU ||
			    want_type == VMSTATE_SEC_VCPU)
				return fail(why, why_size,
					    "section %u is %s %u where %s %u was expected: the config has %u vCPUs",
					    i, section_name(type), index,
					    section_name(want_type),
					    want_index, vcpus);
			return fail(why, why_size,
				    "section %u is %s %u where %s %u was expected",
				    i, section_name(type), index,
				    section_name(want_type), want_index);
		}
		start = r->pos;
		switch (type) {
		case VMSTATE_SEC_CONFIG:
			ret = decode_config(r, &s->config, why, why_size);
			vcpus = s->config.vcpu_count;
			break;
		case VMSTATE_SEC_VCPU:
			ret = decode_vcpu(r, len, &s->vcpus[index], index, why,
					  why_size);
			break;
		case VMSTATE_SEC_CLOCK:
			ret = decode_fixed(r, len, &s->clock, sizeof(s->clock),
					   "clock", why, why_size);
			break;
		case VMSTATE_SEC_IRQCHIP: {
			struct kvm_irqchip *ic = index == 0   ? &s->pic_master
						 : index == 1 ? &s->pic_slave
							      : &s->ioapic;

			ret = decode_fixed(r, len, ic, sizeof(*ic), "irqchip",
					   why, why_size);
			if (!ret && ic->chip_id != index)
				ret = fail(why, why_size,
					   "irqchip section %u holds chip %u",
					   index, ic->chip_id);
			break;
		}
		case VMSTATE_SEC_PIT:
			ret = decode_fixed(r, len, &s->pit, sizeof(s->pit),
					   "PIT", why, why_size);
			break;
		case VMSTATE_SEC_DEVICE:
			if (index >= VMSTATE_MAX_DEVICES)
				return fail(why, why_size,
					    "more than %d devices",
					    VMSTATE_MAX_DEVICES);
			ret = decode_device(r, len, &s->devices[index], index,
					    why, why_size);
			s->n_devices = index + 1;
			break;
		}
		if (!ret && (r->short_read || r->pos - start != len))
			ret = fail(why, why_size,
				   "%s section %u: %llu bytes, %zu used",
				   section_name(type), index,
				   (unsigned long long)len, r->pos - start);
	}
	if (ret)
		return ret;
	if (n_sections < vcpus + 6)
		return fail(why, why_size,
			    "%u sections, a machine of %u vCPUs needs at least %u",
			    n_sections, vcpus, vcpus + 6);
	if (r->pos != r->len)
		return fail(why, why_size, "%zu bytes after the last section",
			    r->len - r->pos);
	return 0;
}

int vmstate_decode(const uint8_t *buf, size_t len, struct vmstate **out,
		   char *why, size_t why_size)
{
	struct rbuf r = { .p = buf, .len = len };
	struct vmstate *s;
	uint32_t version, n_sections;
	uint64_t total, sum;
	int ret;

	*out = NULL;
	if (len < VMSTATE_HEADER_SIZE)
		return fail(why, why_size,
			    "truncated: %zu bytes, the header alone is %d", len,
			    VMSTATE_HEADER_SIZE);
	if (memcmp(buf, VMSTATE_MAGIC, 8) != 0)
		return fail(why, why_size, "bad magic: not a vmstate file");
	memcpy(&version, buf + 8, 4);
	memcpy(&n_sections, buf + 12, 4);
	memcpy(&total, buf + 16, 8);
	memcpy(&sum, buf + CHECKSUM_OFFSET, 8);
	if (version != VMSTATE_VERSION)
		return fail(why, why_size,
			    "unsupported format version %u (this ember-vmm reads %d)",
			    version, VMSTATE_VERSION);
	if (total > len)
		return fail(why, why_size, "truncated: %zu of %llu bytes", len,
			    (unsigned long long)total);
	if (total < len)
		return fail(why, why_size,
			    "%llu trailing bytes after the recorded length",
			    (unsigned long long)(len - total));
	if (checksum(buf, len) != sum)
		return fail(why, why_size, "bad checksum");
	s = vmstate_new();
	if (!s)
		return -ENOMEM;
	r.pos = VMSTATE_HEADER_SIZE;
	ret = decode_sections(&r, n_sections, s, why, why_size);
	if (ret) {
		vmstate_free(s);
		return ret;
	}
	*out = s;
	return 0;
}

int vmstate_write_file(const char *path, const struct vmstate *s)
{
	uint8_t *buf;
	size_t len;
	int ret = vmstate_encode(s, &buf, &len);

	if (ret)
		return ret;
	ret = ember_write_file_atomic(path, buf, len, 0600);
	free(buf);
	return ret;
}

int vmstate_read_file(const char *path, struct vmstate **out, char *why,
		      size_t why_size)
{
	char *buf = NULL;
	size_t len = 0;
	int ret;

	*out = NULL;
	ret = ember_read_file(path, MAX_FILE_SIZE, &buf, &len);
	if (ret < 0) {
		if (why && why_size)
			snprintf(why, why_size, "%s", strerror(-ret));
		return ret;
	}
	ret = vmstate_decode((const uint8_t *)buf, len, out, why, why_size);
	free(buf);
	return ret;
}
