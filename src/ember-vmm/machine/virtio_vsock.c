/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-vsock, stream sockets only, bridged to host Unix sockets the way
 * Firecracker does it (docs/vsock.md).
 *
 * Queues: 0 rx (device -> driver packets), 1 tx (driver -> device), 2
 * event (transport reset). Every packet starts with the 44-byte
 * struct virtio_vsock_hdr; RW packets carry hdr.len bytes of payload.
 *
 * Threads and locking. All state of the device, its transport and its
 * queues is guarded by one lock, the bus lock of the device's MMIO window
 * (the vCPU thread holds it while the driver touches a register). Two
 * threads use it:
 *   - the vCPU thread writing QueueNotify: tx packets are handled there
 *     (host sockets are non-blocking), rx is refilled from what is pending;
 *   - the device thread: epoll over the listening socket and every host
 *     connection (edge-triggered; readiness is kept in the connection and
 *     cleared on EAGAIN), plus timeouts; it takes the lock for each batch.
 *
 * Flow control (virtio 1.2, 5.10.6.3). Towards the host: each connection
 * advertises buf_alloc = VSOCK_CONN_BUF and fwd_cnt = bytes written to the
 * host socket; what the host socket does not take at once waits in the
 * connection's ring of that size, so a guest that keeps to its credit never
 * overflows it (one that does not is reset). Towards the guest: the host
 * socket is read only while the guest's credit (peer buf_alloc minus bytes
 * in flight) is positive and the rx queue has buffers; otherwise the data
 * stays in the host socket and its writer blocks.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_vsock.h>

#include "ember/log.h"
#include "ember/util.h"
#include "virtio_mmio.h"
#include "virtio_vsock.h"

#define VSOCK_RXQ 0
#define VSOCK_TXQ 1
#define VSOCK_EVQ 2
#define VSOCK_HDR_LEN 44

#define VSOCK_MAX_CONNS 256
#define VSOCK_CONN_BUF (256u * 1024)  /* our buf_alloc per connection */
#define VSOCK_MAX_PKT (64u * 1024)    /* payload of one rx packet */
/* The ring also holds the "OK <port>\n" line, which is not guest credit. */
#define VSOCK_RING_SIZE (VSOCK_CONN_BUF + 64)
#define VSOCK_LINE_MAX 64	      /* "CONNECT <port>\n" */
#define VSOCK_LOCAL_PORT_BASE (1u << 30)
#define VSOCK_MAX_ORPHAN_RST 64
/* Timeouts: a client that sends no CONNECT line, a guest that does not
 * answer a REQUEST, and a close the guest does not finish with RST. */
#define VSOCK_LINE_TIMEOUT_NS (5ULL * 1000000000)
#define VSOCK_CONNECT_TIMEOUT_NS (5ULL * 1000000000)
#define VSOCK_CLOSE_TIMEOUT_NS (2ULL * 1000000000)
#define VSOCK_TICK_MS 250

#define EV_LISTEN UINT64_MAX
#define EV_STOP (UINT64_MAX - 1)

_Static_assert(sizeof(struct virtio_vsock_hdr) == VSOCK_HDR_LEN,
	       "virtio_vsock_hdr is 44 bytes");

enum conn_state {
	CONN_HOST_LINE,	  /* host client connected, reading CONNECT line */
	CONN_REQUESTING,  /* REQUEST sent (or queued) to the guest */
	CONN_ESTABLISHED,
	CONN_CLOSING,	  /* we sent SHUTDOWN, waiting for the guest's RST */
	CONN_DEAD,	  /* host side closed, an RST is still to be sent */
};

/* Packets a connection still has to send to the guest. */
enum {
	P_REQUEST = 1u << 0,
	P_RESPONSE = 1u << 1,
	P_RST = 1u << 2,
	P_SHUTDOWN = 1u << 3,
	P_CREDIT_UPDATE = 1u << 4,
	P_CREDIT_REQUEST = 1u << 5,
};

struct vsock_conn {
	unsigned slot;
	uint32_t gen;
	enum conn_state state;
	int fd;
	bool host_initiated;
	uint32_t local_port; /* the host's port */
	uint32_t peer_port;  /* the guest's port */
	unsigned pending;    /* P_* */
	uint64_t deadline_ns; /* 0: none */

	bool readable, writable; /* host socket readiness (edge-triggered) */
	bool host_eof;		 /* the host socket's read side ended */
	bool guest_shut_send;	 /* the guest will send no more */
	bool guest_shut_rcv;	 /* the guest takes no more */

	/* Guest -> host. */
	uint32_t fwd_cnt;	  /* bytes written to the host socket */
	uint32_t fwd_cnt_sent;	  /* fwd_cnt the guest last heard of */
	uint8_t *ring;		  /* VSOCK_CONN_BUF bytes, when needed */
	uint32_t ring_head, ring_len;

	/* Host -> guest. */
	uint32_t rx_cnt;	  /* payload bytes sent to the guest */
	uint32_t peer_buf_alloc, peer_fwd_cnt;
	bool credit_asked; /* CREDIT_REQUEST sent since fwd_cnt last moved */

	char line[VSOCK_LINE_MAX];
	size_t line_len;
};

struct orphan_rst {
	uint32_t src_port, dst_port; /* as seen from the host */
};

struct virtio_vsock {
	struct machine *m;
	struct virtio_mmio *t;
	pthread_mutex_t *lock; /* the bus lock of the MMIO window */
	uint64_t guest_cid;
	char uds_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int listen_fd, epoll_fd, stop_fd;
	pthread_t thread;
	bool thread_started;

	struct vsock_conn *conns[VSOCK_MAX_CONNS];
	unsigned n_conns;
	unsigned rr; /* round-robin start for rx */
	uint32_t next_gen;
	uint32_t next_local_port;

	struct orphan_rst orphans[VSOCK_MAX_ORPHAN_RST];
	unsigned n_orphans;

	bool reset_event_pending;
	/* The VM is paused (virtio_vsock_quiesce): the device writes nothing
	 * to guest memory and raises no interrupt; host sockets still come
	 * and go, and their data waits in them. */
	bool quiesced;
};

/* ---- helpers ---------------------------------------------------------- */

static uint32_t peer_credit(const struct vsock_conn *c)
{
	uint32_t in_flight = c->rx_cnt - c->peer_fwd_cnt;

	return in_flight >= c->peer_buf_alloc ? 0
					      : c->peer_buf_alloc - in_flight;
}

static bool driver_ready(const struct virtio_vsock *v)
{
	const struct virtio_mmio *t = v->t;

	return t && (t->status & VIRTIO_CONFIG_S_DRIVER_OK) &&
	       !(t->status & VIRTIO_CONFIG_S_NEEDS_RESET);
}

static struct vsock_conn *conn_find(struct virtio_vsock *v,
				    uint32_t local_port, uint32_t peer_port)
{
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = v->conns[i];

		if (c && c->state != CONN_HOST_LINE &&
		    c->local_port == local_port && c->peer_port == peer_port)
			return c;
	}
	return NULL;
}

static bool local_port_used(struct virtio_vsock *v, uint32_t port)
{
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		if (v->conns[i] && v->conns[i]->state != CONN_HOST_LINE &&
		    v->conns[i]->local_port == port)
			return true;
	return false;
}

static struct vsock_conn *conn_new(struct virtio_vsock *v, int fd)
{
	struct vsock_conn *c;
	struct epoll_event ev;

	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		if (v->conns[i])
			continue;
		c = calloc(1, sizeof(*c));
		if (!c)
			return NULL;
		c->slot = i;
		c->gen = ++v->next_gen;
		c->fd = fd;
		ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
		ev.data.u64 = ((uint64_t)c->gen << 32) | i;
		if (epoll_ctl(v->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			olog_error(v->m->id, "vsock: epoll_ctl: %s",
				   strerror(errno));
			free(c);
			return NULL;
		}
		v->conns[i] = c;
		v->n_conns++;
		return c;
	}
	olog_warn(v->m->id, "vsock: %d connections open; refusing another",
		  VSOCK_MAX_CONNS);
	return NULL;
}

/* Closes the host side; the connection lives on while it has an RST to
 * send. */
static void conn_close_host(struct vsock_conn *c)
{
	ember_close(&c->fd); /* closing removes it from the epoll set */
	free(c->ring);
	c->ring = NULL;
	c->ring_len = 0;
}

static void conn_free(struct virtio_vsock *v, struct vsock_conn *c)
{
	conn_close_host(c);
	v->conns[c->slot] = NULL;
	v->n_conns--;
	free(c);
}

/* Ends a connection: the host socket is closed and the guest gets RST
 * (unless send_rst is false: the guest already dropped it). */
static void conn_reset(struct virtio_vsock *v, struct vsock_conn *c,
		       bool send_rst)
{
	if (!send_rst || c->state == CONN_HOST_LINE) {
		conn_free(v, c);
		return;
	}
	conn_close_host(c);
	c->state = CONN_DEAD;
	c->pending = P_RST;
	c->deadline_ns = 0;
}

static void orphan_rst(struct virtio_vsock *v, uint32_t src_port,
		       uint32_t dst_port)
{
	if (v->n_orphans == VSOCK_MAX_ORPHAN_RST) {
		memmove(v->orphans, v->orphans + 1,
			sizeof(v->orphans[0]) * (VSOCK_MAX_ORPHAN_RST - 1));
		v->n_orphans--;
	}
	v->orphans[v->n_orphans++] =
		(struct orphan_rst){ .src_port = src_port,
				     .dst_port = dst_port };
}

/* ---- guest-bound packets (rx queue) ------------------------------------ */

/* The iovecs of the device-writable bytes of a chain from offset off, at
 * most max bytes. Returns the iovec count. */
static int chain_iov(struct virtq_chain *ch, size_t off, size_t max,
		     struct iovec *iov)
{
	int n = 0;

	for (unsigned i = 0; i < ch->n && max; i++) {
		struct virtq_buf *b = &ch->bufs[i];
		size_t len;

		if (!b->device_writes)
			continue;
		if (off >= b->len) {
			off -= b->len;
			continue;
		}
		len = EMBER_MIN(b->len - off, max);
		iov[n].iov_base = b->hva + off;
		iov[n].iov_len = len;
		n++;
		max -= len;
		off = 0;
	}
	return n;
}

static void fill_hdr(struct virtio_vsock *v, struct virtio_vsock_hdr *h,
		     uint32_t src_port, uint32_t dst_port, uint16_t op)
{
	memset(h, 0, sizeof(*h));
	h->src_cid = VSOCK_HOST_CID;
	h->dst_cid = v->guest_cid;
	h->src_port = src_port;
	h->dst_port = dst_port;
	h->type = VIRTIO_VSOCK_TYPE_STREAM;
	h->op = op;
}

static void conn_hdr(struct virtio_vsock *v, struct vsock_conn *c,
		     struct virtio_vsock_hdr *h, uint16_t op)
{
	fill_hdr(v, h, c->local_port, c->peer_port, op);
	h->buf_alloc = VSOCK_CONN_BUF;
	h->fwd_cnt = c->fwd_cnt;
	c->fwd_cnt_sent = c->fwd_cnt;
}

/* The guest's next connection that can send: 1 control packet or data.
 * Reads host data into the chain. Returns the bytes of the packet written
 * into ch (0: nothing to send on c). */
static size_t conn_rx(struct virtio_vsock *v, struct vsock_conn *c,
		      struct virtq_chain *ch)
{
	struct virtio_vsock_hdr h;
	struct iovec iov[VIRTQ_MAX_CHAIN];
	size_t room = virtq_chain_writable(ch);
	uint32_t want;
	ssize_t got;
	int niov;

	if (c->pending & P_RST) {
		conn_hdr(v, c, &h, VIRTIO_VSOCK_OP_RST);
		virtq_chain_write(ch, 0, &h, sizeof(h));
		conn_free(v, c);
		return sizeof(h);
	}
	if (c->pending & (P_REQUEST | P_RESPONSE)) {
		uint16_t op = (c->pending & P_REQUEST) ? VIRTIO_VSOCK_OP_REQUEST
						       : VIRTIO_VSOCK_OP_RESPONSE;

		c->pending &= ~(P_REQUEST | P_RESPONSE);
		conn_hdr(v, c, &h, op);
		virtq_chain_write(ch, 0, &h, sizeof(h));
		return sizeof(h);
	}
	if (c->pending & P_SHUTDOWN) {
		c->pending &= ~P_SHUTDOWN;
		conn_hdr(v, c, &h, VIRTIO_VSOCK_OP_SHUTDOWN);
		h.flags = VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND;
		virtq_chain_write(ch, 0, &h, sizeof(h));
		return sizeof(h);
	}
	if (c->pending & (P_CREDIT_UPDATE | P_CREDIT_REQUEST)) {
		uint16_t op = (c->pending & P_CREDIT_UPDATE)
				      ? VIRTIO_VSOCK_OP_CREDIT_UPDATE
				      : VIRTIO_VSOCK_OP_CREDIT_REQUEST;

		c->pending &= op == VIRTIO_VSOCK_OP_CREDIT_UPDATE
				      ? ~(unsigned)P_CREDIT_UPDATE
				      : ~(unsigned)P_CREDIT_REQUEST;
		conn_hdr(v, c, &h, op);
		virtq_chain_write(ch, 0, &h, sizeof(h));
		return sizeof(h);
	}
	/* Data: only when established, the host socket may have some, the
	 * guest still reads and has credit for it. */
	if (c->state != CONN_ESTABLISHED || !c->readable || c->host_eof ||
	    c->guest_shut_rcv || c->fd < 0)
		return 0;
	want = peer_credit(c);
	if (!want) {
		/* Out of credit. The end of the stream needs none (read it
		 * below); data waiting: ask once for an update (the guest
		 * also sends them as its reader consumes). */
		uint8_t b;
		ssize_t peek = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

		if (peek < 0 && errno == EAGAIN) {
			c->readable = false;
			return 0;
		}
		if (peek <= 0) {
			want = 1;
			goto read;
		}
		if (c->credit_asked)
			return 0;
		c->credit_asked = true;
		conn_hdr(v, c, &h, VIRTIO_VSOCK_OP_CREDIT_REQUEST);
		virtq_chain_write(ch, 0, &h, sizeof(h));
		return sizeof(h);
	}
read:
	if (room <= sizeof(h))
		return 0;
	want = (uint32_t)EMBER_MIN((size_t)want, room - sizeof(h));
	want = EMBER_MIN(want, VSOCK_MAX_PKT);
	niov = chain_iov(ch, sizeof(h), want, iov);
	do
		got = readv(c->fd, iov, niov);
	while (got < 0 && errno == EINTR);
	if (got < 0 && errno == EAGAIN) {
		c->readable = false;
		return 0;
	}
	if (got <= 0) {
		/* End of the host's stream (or an error): tell the guest we
		 * are done both ways, wait for its RST. */
		if (got < 0)
			olog_debug(v->m->id, "vsock %u->%u: read: %s",
				   c->local_port, c->peer_port,
				   strerror(errno));
		c->host_eof = true;
		c->readable = false;
		c->state = CONN_CLOSING;
		c->deadline_ns = ember_now_ns() + VSOCK_CLOSE_TIMEOUT_NS;
		conn_hdr(v, c, &h, VIRTIO_VSOCK_OP_SHUTDOWN);
		h.flags = VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND;
		virtq_chain_write(ch, 0, &h, sizeof(h));
		return sizeof(h);
	}
	conn_hdr(v, c, &h, VIRTIO_VSOCK_OP_RW);
	h.len = (uint32_t)got;
	c->rx_cnt += (uint32_t)got;
	virtq_chain_write(ch, 0, &h, sizeof(h));
	return sizeof(h) + (size_t)got;
}

/* Fills rx buffers with whatever is pending, round robin over the
 * connections. Called with the lock held. */
static void rx_pump(struct virtio_vsock *v)
{
	struct virtio_mmio *t = v->t;
	struct virtq *q = &t->queues[VSOCK_RXQ];
	bool used = false;

	if (v->quiesced || !driver_ready(v) || !q->ready)
		return;
	for (;;) {
		struct virtq_chain ch;
		size_t written = 0;

		if (v->n_orphans == 0 && v->n_conns == 0)
			break;
		if (virtq_pop(t, q, &ch) != 1)
			break;
		if (virtq_chain_writable(&ch) < VSOCK_HDR_LEN) {
			virtq_push(t, q, ch.head, 0);
			used = true;
			continue;
		}
		if (v->n_orphans) {
			struct virtio_vsock_hdr h;

			fill_hdr(v, &h, v->orphans[0].src_port,
				 v->orphans[0].dst_port, VIRTIO_VSOCK_OP_RST);
			memmove(v->orphans, v->orphans + 1,
				sizeof(v->orphans[0]) * --v->n_orphans);
			written = virtq_chain_write(&ch, 0, &h, sizeof(h));
		}
		for (unsigned k = 0; !written && k < VSOCK_MAX_CONNS; k++) {
			unsigned i = (v->rr + k) % VSOCK_MAX_CONNS;

			if (v->conns[i])
				written = conn_rx(v, v->conns[i], &ch);
			if (written)
				v->rr = i + 1;
		}
		if (!written) {
			virtq_unpop(q);
			break;
		}
		virtq_push(t, q, ch.head, (uint32_t)written);
		used = true;
	}
	if (used)
		virtio_mmio_signal_used(t);
}

/* ---- host-bound data ----------------------------------------------------- */

/* Writes the ring to the host socket. 0, or -EPIPE etc. on a dead host
 * socket. */
static int ring_flush(struct vsock_conn *c)
{
	while (c->ring_len && c->writable) {
		uint32_t first = EMBER_MIN(c->ring_len,
					   VSOCK_RING_SIZE - c->ring_head);
		ssize_t n = send(c->fd, c->ring + c->ring_head, first,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			c->writable = false;
			break;
		}
		if (n < 0)
			return -errno;
		c->ring_head = (c->ring_head + (uint32_t)n) % VSOCK_RING_SIZE;
		c->ring_len -= (uint32_t)n;
		c->fwd_cnt += (uint32_t)n;
	}
	return 0;
}

/* Tells the guest about freed space once a quarter of its window has
 * been consumed (every packet we send carries fwd_cnt as well). */
static void maybe_credit_update(struct vsock_conn *c)
{
	if (c->fwd_cnt - c->fwd_cnt_sent >= VSOCK_CONN_BUF / 4)
		c->pending |= P_CREDIT_UPDATE;
}

/* Guest payload for the host: straight to the socket when nothing waits,
 * the rest into the ring. */
static int host_write(struct virtio_vsock *v, struct vsock_conn *c,
		      const struct iovec *iov, int niov, size_t len)
{
	size_t off = 0;
	int ret;

	ret = ring_flush(c);
	if (ret)
		return ret;
	if (!c->ring_len && c->writable) {
		struct msghdr msg = { .msg_iov = (struct iovec *)iov,
				      .msg_iovlen = (size_t)niov };
		ssize_t n;

		do
			n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		while (n < 0 && errno == EINTR);
		if (n < 0 && errno != EAGAIN)
			return -errno;
		if (n < 0)
			c->writable = false;
		else
			off = (size_t)n;
		c->fwd_cnt += n > 0 ? (uint32_t)n : 0;
		if (off < len)
			c->writable = false;
	}
	if (off == len)
		return 0;
	if (len - off > VSOCK_RING_SIZE - c->ring_len) {
		olog_warn(v->m->id,
			  "vsock %u->%u: the guest sent past its credit; "
			  "resetting the connection",
			  c->peer_port, c->local_port);
		return -ENOBUFS;
	}
	if (!c->ring) {
		c->ring = malloc(VSOCK_RING_SIZE);
		if (!c->ring)
			return -ENOMEM;
		c->ring_head = 0;
	}
	/* Copy the unsent tail of the iovecs into the ring. */
	for (int i = 0; i < niov; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t l = iov[i].iov_len;

		if (off >= l) {
			off -= l;
			continue;
		}
		p += off;
		l -= off;
		off = 0;
		while (l) {
			uint32_t tail = (c->ring_head + c->ring_len) %
					VSOCK_RING_SIZE;
			uint32_t n = (uint32_t)EMBER_MIN(
				l, (size_t)(VSOCK_RING_SIZE - tail));

			memcpy(c->ring + tail, p, n);
			c->ring_len += n;
			p += n;
			l -= n;
		}
	}
	return 0;
}

/* After the guest's SHUTDOWN(SEND) and a drained ring: EOF to the host
 * client; after both directions: RST and done. */
static void conn_check_shutdown(struct virtio_vsock *v, struct vsock_conn *c)
{
	if (c->state != CONN_ESTABLISHED && c->state != CONN_CLOSING)
		return;
	if (c->guest_shut_send && !c->ring_len && c->fd >= 0)
		shutdown(c->fd, SHUT_WR);
	if (c->guest_shut_send && c->guest_shut_rcv && !c->ring_len)
		conn_reset(v, c, true);
}

/* ---- guest packets (tx queue) --------------------------------------------- */

static void connect_to_host(struct virtio_vsock *v,
			    const struct virtio_vsock_hdr *h)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct vsock_conn *c;
	int fd, n;

	n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", v->uds_path,
		     h->dst_port);
	if (n < 0 || (size_t)n >= sizeof(sa.sun_path)) {
		orphan_rst(v, h->dst_port, h->src_port);
		return;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		olog_debug(v->m->id, "vsock: guest port %u -> %s: %s",
			   h->src_port, sa.sun_path, strerror(errno));
		if (fd >= 0)
			close(fd);
		orphan_rst(v, h->dst_port, h->src_port);
		return;
	}
	c = conn_new(v, fd);
	if (!c) {
		close(fd);
		orphan_rst(v, h->dst_port, h->src_port);
		return;
	}
	c->local_port = h->dst_port;
	c->peer_port = h->src_port;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	c->state = CONN_ESTABLISHED;
	c->pending = P_RESPONSE;
	olog_debug(v->m->id, "vsock: guest port %u connected to %s",
		   h->src_port, sa.sun_path);
}

/* The established host client learns its port: "OK <port>\n". */
static void host_accepted(struct virtio_vsock *v, struct vsock_conn *c)
{
	char line[32];
	int n = snprintf(line, sizeof(line), "OK %u\n", c->local_port);
	struct iovec iov = { .iov_base = line, .iov_len = (size_t)n };

	c->state = CONN_ESTABLISHED;
	c->deadline_ns = 0;
	if (host_write(v, c, &iov, 1, (size_t)n) < 0) {
		conn_reset(v, c, true);
		return;
	}
	/* Not guest payload: keep fwd_cnt to what the guest sent. */
	c->fwd_cnt -= (uint32_t)n;
	c->fwd_cnt_sent = c->fwd_cnt;
}

static void tx_packet(struct virtio_vsock *v, struct virtq_chain *ch)
{
	struct virtio_vsock_hdr h;
	struct iovec iov[VIRTQ_MAX_CHAIN];
	struct vsock_conn *c;
	size_t got = 0, payload = 0;
	int niov = 0;

	/* Header, then payload, from the driver-readable buffers. */
	for (unsigned i = 0; i < ch->n; i++) {
		struct virtq_buf *b = &ch->bufs[i];
		size_t off = 0;

		if (b->device_writes)
			continue;
		if (got < sizeof(h)) {
			off = EMBER_MIN((size_t)b->len, sizeof(h) - got);
			memcpy((uint8_t *)&h + got, b->hva, off);
			got += off;
		}
		if (off < b->len && got == sizeof(h)) {
			iov[niov].iov_base = b->hva + off;
			iov[niov].iov_len = b->len - off;
			payload += b->len - off;
			niov++;
		}
	}
	if (got < sizeof(h)) {
		olog_debug(v->m->id, "vsock: short tx packet dropped");
		return;
	}
	if (h.src_cid != v->guest_cid || h.dst_cid != VSOCK_HOST_CID) {
		olog_debug(v->m->id, "vsock: packet %llu->%llu dropped",
			   (unsigned long long)h.src_cid,
			   (unsigned long long)h.dst_cid);
		return;
	}
	if (h.type != VIRTIO_VSOCK_TYPE_STREAM) {
		if (h.op != VIRTIO_VSOCK_OP_RST)
			orphan_rst(v, h.dst_port, h.src_port);
		return;
	}
	/* Trim the payload iovecs to hdr.len. */
	if (h.len > payload) {
		olog_debug(v->m->id, "vsock: packet shorter than its len");
		h.len = (uint32_t)payload;
	}
	{
		size_t left = h.len;

		for (int i = 0; i < niov; i++) {
			if (iov[i].iov_len > left)
				iov[i].iov_len = left;
			left -= iov[i].iov_len;
		}
	}

	c = conn_find(v, h.dst_port, h.src_port);
	if (!c) {
		if (h.op == VIRTIO_VSOCK_OP_REQUEST)
			connect_to_host(v, &h);
		else if (h.op != VIRTIO_VSOCK_OP_RST)
			orphan_rst(v, h.dst_port, h.src_port);
		return;
	}
	if (h.fwd_cnt != c->peer_fwd_cnt || h.buf_alloc != c->peer_buf_alloc)
		c->credit_asked = false;
	c->peer_buf_alloc = h.buf_alloc;
	c->peer_fwd_cnt = h.fwd_cnt;

	switch (h.op) {
	case VIRTIO_VSOCK_OP_RESPONSE:
		if (c->state == CONN_REQUESTING)
			host_accepted(v, c);
		else
			conn_reset(v, c, true);
		break;
	case VIRTIO_VSOCK_OP_RST:
		conn_reset(v, c, false);
		break;
	case VIRTIO_VSOCK_OP_REQUEST:
		/* A second REQUEST on a live pair: the guest lost track. */
		conn_reset(v, c, true);
		break;
	case VIRTIO_VSOCK_OP_SHUTDOWN:
		if (h.flags & VIRTIO_VSOCK_SHUTDOWN_SEND)
			c->guest_shut_send = true;
		if (h.flags & VIRTIO_VSOCK_SHUTDOWN_RCV)
			c->guest_shut_rcv = true;
		if (c->guest_shut_send && c->guest_shut_rcv &&
		    !c->deadline_ns)
			c->deadline_ns = ember_now_ns() + VSOCK_CLOSE_TIMEOUT_NS;
		if (c->state == CONN_CLOSING &&
		    c->guest_shut_send && c->guest_shut_rcv) {
			/* Both sides closed: our RST ends it. */
			conn_reset(v, c, true);
			break;
		}
		conn_check_shutdown(v, c);
		break;
	case VIRTIO_VSOCK_OP_RW:
		if (c->state != CONN_ESTABLISHED || c->guest_shut_send) {
			if (c->state != CONN_CLOSING)
				conn_reset(v, c, true);
			break;
		}
		if (h.len) {
			int ret = host_write(v, c, iov, niov, h.len);

			if (ret) {
				olog_debug(v->m->id, "vsock %u->%u: write: %s",
					   c->peer_port, c->local_port,
					   strerror(-ret));
				conn_reset(v, c, true);
				break;
			}
			maybe_credit_update(c);
		}
		break;
	case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
		break; /* the credit was taken above; rx_pump goes on */
	case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
		c->pending |= P_CREDIT_UPDATE;
		break;
	default:
		conn_reset(v, c, true);
		break;
	}
}

static void deliver_reset_event(struct virtio_vsock *v)
{
	struct virtio_mmio *t = v->t;
	struct virtq *q = &t->queues[VSOCK_EVQ];
	struct virtio_vsock_event ev = { .id = VIRTIO_VSOCK_EVENT_TRANSPORT_RESET };
	struct virtq_chain ch;

	if (!v->reset_event_pending || !driver_ready(v) || !q->ready)
		return;
	if (virtq_pop(t, q, &ch) != 1)
		return;
	virtq_push(t, q, ch.head,
		   (uint32_t)virtq_chain_write(&ch, 0, &ev, sizeof(ev)));
	v->reset_event_pending = false;
	virtio_mmio_signal_used(t);
}

/* vCPU thread, with the lock held. */
static void vsock_notify(void *dev, struct virtio_mmio *t, unsigned qi)
{
	struct virtio_vsock *v = dev;

	if (qi == VSOCK_TXQ) {
		struct virtq *q = &t->queues[VSOCK_TXQ];
		struct virtq_chain ch;
		bool used = false;

		while (virtq_pop(t, q, &ch) == 1) {
			tx_packet(v, &ch);
			virtq_push(t, q, ch.head, 0);
			used = true;
		}
		if (used)
			virtio_mmio_signal_used(t);
	} else if (qi == VSOCK_EVQ) {
		deliver_reset_event(v);
	}
	rx_pump(v);
}

static void drop_all(struct virtio_vsock *v)
{
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		if (v->conns[i])
			conn_free(v, v->conns[i]);
	v->n_orphans = 0;
}

/* The driver reset the device (status 0): its sockets are gone. */
static void vsock_reset(void *dev)
{
	struct virtio_vsock *v = dev;

	drop_all(v);
	v->reset_event_pending = false;
}

/*
 * The device's own snapshot state, after the transport's:
 *   u32 version (1), u32 flags (bit 0: a transport reset event still
 *   waits for an event buffer)
 * Connections are not saved: the guest was told of the transport reset
 * before its state was taken (virtio_vsock_transport_reset), so it holds
 * none that a restored VM would have to carry on.
 */
#define VSOCK_STATE_SIZE 8
#define VSOCK_STATE_RESET_PENDING 1u

static int vsock_save(void *dev, uint8_t **buf, size_t *len)
{
	struct virtio_vsock *v = dev;
	uint32_t words[2] = { 1, v->reset_event_pending
					 ? VSOCK_STATE_RESET_PENDING : 0 };
	uint8_t *b = malloc(VSOCK_STATE_SIZE);

	if (!b)
		return -ENOMEM;
	memcpy(b, words, sizeof(words));
	*buf = b;
	*len = VSOCK_STATE_SIZE;
	return 0;
}

static int vsock_restore(void *dev, const uint8_t *b, size_t len)
{
	struct virtio_vsock *v = dev;
	uint32_t words[2];

	if (len != VSOCK_STATE_SIZE)
		return -EINVAL;
	memcpy(words, b, sizeof(words));
	if (words[0] != 1 || (words[1] & ~VSOCK_STATE_RESET_PENDING))
		return -EINVAL;
	v->reset_event_pending = words[1] & VSOCK_STATE_RESET_PENDING;
	return 0;
}

static void vsock_config_read(void *dev, uint64_t off, uint8_t *data,
			      unsigned len)
{
	struct virtio_vsock *v = dev;
	struct virtio_vsock_config cfg = { .guest_cid = v->guest_cid };

	if (off < sizeof(cfg) && len <= sizeof(cfg) - off)
		memcpy(data, (uint8_t *)&cfg + off, len);
}

/* ---- host side (device thread) ---------------------------------------------- */

static void accept_clients(struct virtio_vsock *v)
{
	for (;;) {
		int fd = accept4(v->listen_fd, NULL, NULL,
				 SOCK_CLOEXEC | SOCK_NONBLOCK);
		struct vsock_conn *c;

		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR &&
			    errno != ECONNABORTED)
				olog_warn(v->m->id, "vsock: accept on %s: %s",
					  v->uds_path, strerror(errno));
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return;
		}
		c = conn_new(v, fd);
		if (!c) {
			close(fd);
			continue;
		}
		c->host_initiated = true;
		c->state = CONN_HOST_LINE;
		c->deadline_ns = ember_now_ns() + VSOCK_LINE_TIMEOUT_NS;
	}
}

/* Reads the CONNECT line a byte at a time, so that nothing after it is
 * taken before the guest accepts. */
static void read_connect_line(struct virtio_vsock *v, struct vsock_conn *c)
{
	while (c->readable) {
		char ch;
		ssize_t n = read(c->fd, &ch, 1);
		unsigned long port;
		char *end;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			c->readable = false;
			return;
		}
		if (n <= 0) {
			conn_free(v, c);
			return;
		}
		if (ch != '\n') {
			if (c->line_len + 1 >= sizeof(c->line)) {
				olog_debug(v->m->id, "vsock: CONNECT line too long");
				conn_free(v, c);
				return;
			}
			c->line[c->line_len++] = ch;
			continue;
		}
		c->line[c->line_len] = '\0';
		if (c->line_len && c->line[c->line_len - 1] == '\r')
			c->line[--c->line_len] = '\0';
		errno = 0;
		if (strncmp(c->line, "CONNECT ", 8) != 0 ||
		    !(c->line[8] >= '0' && c->line[8] <= '9') ||
		    (port = strtoul(c->line + 8, &end, 10), *end) || errno ||
		    port > UINT32_MAX) {
			olog_debug(v->m->id, "vsock: bad handshake line '%s'",
				   c->line);
			conn_free(v, c);
			return;
		}
		do {
			c->local_port = v->next_local_port++;
			if (v->next_local_port < VSOCK_LOCAL_PORT_BASE)
				v->next_local_port = VSOCK_LOCAL_PORT_BASE;
		} while (local_port_used(v, c->local_port));
		c->peer_port = (uint32_t)port;
		c->state = CONN_REQUESTING;
		c->pending = P_REQUEST;
		c->deadline_ns = ember_now_ns() + VSOCK_CONNECT_TIMEOUT_NS;
		/* The rest of the stream waits in the socket. */
		return;
	}
}

static void host_event(struct virtio_vsock *v, uint64_t key, uint32_t events)
{
	unsigned slot = (unsigned)(key & 0xffffffffu);
	struct vsock_conn *c;

	if (slot >= VSOCK_MAX_CONNS)
		return;
	c = v->conns[slot];
	if (!c || c->gen != (uint32_t)(key >> 32) || c->fd < 0)
		return;
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		c->readable = true;
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		c->writable = true;
	if (c->state == CONN_HOST_LINE) {
		read_connect_line(v, c);
		return;
	}
	if (c->writable && c->ring_len) {
		if (ring_flush(c) < 0) {
			conn_reset(v, c, true);
			return;
		}
		maybe_credit_update(c);
		if (!c->ring_len && c->fwd_cnt != c->fwd_cnt_sent)
			c->pending |= P_CREDIT_UPDATE;
		conn_check_shutdown(v, c);
	}
}

static void expire(struct virtio_vsock *v)
{
	uint64_t now = ember_now_ns();

	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = v->conns[i];

		if (!c || !c->deadline_ns || now < c->deadline_ns)
			continue;
		/* A paused guest cannot answer: its time runs from the
		 * resume (virtio_vsock_quiesce). */
		if (v->quiesced && c->state != CONN_HOST_LINE)
			continue;
		switch (c->state) {
		case CONN_HOST_LINE:
			conn_free(v, c);
			break;
		case CONN_REQUESTING:
			olog_debug(v->m->id, "vsock: the guest did not answer "
					     "a connection to port %u",
				   c->peer_port);
			conn_reset(v, c, true);
			break;
		default:
			conn_reset(v, c, true);
			break;
		}
	}
}

static void *vsock_thread(void *arg)
{
	struct virtio_vsock *v = arg;
	struct epoll_event evs[64];

	for (;;) {
		int n = epoll_wait(v->epoll_fd, evs, 64, VSOCK_TICK_MS);

		if (n < 0 && errno != EINTR) {
			olog_error(v->m->id, "vsock: epoll_wait: %s",
				   strerror(errno));
			return NULL;
		}
		pthread_mutex_lock(v->lock);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 == EV_STOP) {
				pthread_mutex_unlock(v->lock);
				return NULL;
			}
			if (evs[i].data.u64 == EV_LISTEN)
				accept_clients(v);
			else
				host_event(v, evs[i].data.u64, evs[i].events);
		}
		expire(v);
		if (v->t)
			rx_pump(v);
		pthread_mutex_unlock(v->lock);
	}
}

/* ---- setup and teardown ------------------------------------------------------ */

static void vsock_teardown(void *dev)
{
	struct virtio_vsock *v = dev;

	if (v->thread_started) {
		uint64_t one = 1;

		if (write(v->stop_fd, &one, sizeof(one)) < 0)
			olog_warn(v->m->id, "vsock: stop: %s", strerror(errno));
		pthread_join(v->thread, NULL);
	}
	drop_all(v);
	if (v->listen_fd >= 0)
		unlink(v->uds_path);
	ember_close(&v->listen_fd);
	ember_close(&v->epoll_fd);
	ember_close(&v->stop_fd);
	if (v->m && v->m->vsock == v)
		v->m->vsock = NULL;
	free(v);
}

static const struct virtio_dev_ops vsock_ops = {
	.name = "virtio-vsock",
	.device_id = VIRTIO_ID_VSOCK,
	.features = 0,
	.num_queues = 3,
	.config_read = vsock_config_read,
	.queue_notify = vsock_notify,
	.reset = vsock_reset,
	.save = vsock_save,
	.restore = vsock_restore,
	.teardown = vsock_teardown,
};

static int vsock_listen(struct virtio_vsock *v)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", v->uds_path);
	/* As Firecracker: a stale socket file from an earlier run goes. */
	if (lstat(v->uds_path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(v->uds_path);
	v->listen_fd = socket(AF_UNIX,
			      SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (v->listen_fd < 0 ||
	    bind(v->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int ret = -errno;

		ember_close(&v->listen_fd);
		return ret;
	}
	if (listen(v->listen_fd, 128) < 0) {
		int ret = -errno;

		unlink(v->uds_path);
		ember_close(&v->listen_fd);
		return ret;
	}
	return 0;
}

int virtio_vsock_setup(struct machine *m, uint32_t guest_cid,
		       const char *uds_path)
{
	struct virtio_vsock *v;
	struct epoll_event ev = { .events = EPOLLIN };
	int ret;

	if (guest_cid < VSOCK_MIN_GUEST_CID || guest_cid == UINT32_MAX ||
	    !uds_path || !uds_path[0])
		return -EINVAL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->m = m;
	v->guest_cid = guest_cid;
	v->listen_fd = v->epoll_fd = v->stop_fd = -1;
	v->next_local_port = VSOCK_LOCAL_PORT_BASE;
	/* "<uds_path>_<port>" must fit a socket address too. */
	if (strlen(uds_path) + 12 >= sizeof(v->uds_path)) {
		free(v);
		return -ENAMETOOLONG;
	}
	snprintf(v->uds_path, sizeof(v->uds_path), "%s", uds_path);
	ret = vsock_listen(v);
	if (ret) {
		olog_error(m->id, "vsock: cannot listen on %s: %s", uds_path,
			   strerror(-ret));
		free(v);
		return ret;
	}
	v->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	v->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (v->epoll_fd < 0 || v->stop_fd < 0)
		goto fail_errno;
	ev.data.u64 = EV_LISTEN;
	if (epoll_ctl(v->epoll_fd, EPOLL_CTL_ADD, v->listen_fd, &ev) < 0)
		goto fail_errno;
	ev.data.u64 = EV_STOP;
	if (epoll_ctl(v->epoll_fd, EPOLL_CTL_ADD, v->stop_fd, &ev) < 0)
		goto fail_errno;

	/* From here the transport owns v (its teardown frees it). */
	ret = virtio_mmio_add(m, &vsock_ops, v, &v->t);
	if (ret)
		return ret;
	for (unsigned i = 0; i < m->n_devs; i++)
		if (m->devs[i]->opaque == v->t)
			v->lock = &m->devs[i]->lock;
	if (!v->lock)
		return -EFAULT; /* torn down with the machine */
	m->vsock = v;
	ret = pthread_create(&v->thread, NULL, vsock_thread, v);
	if (ret) {
		olog_error(m->id, "vsock: cannot start its thread: %s",
			   strerror(ret));
		return -ret;
	}
	v->thread_started = true;
	olog_debug(m->id, "vsock: guest CID %u, host socket %s", guest_cid,
		   uds_path);
	return 0;

fail_errno:
	ret = -errno;
	olog_error(m->id, "vsock: %s", strerror(-ret));
	vsock_teardown(v);
	return ret;
}

void virtio_vsock_transport_reset(struct machine *m)
{
	struct virtio_vsock *v = m->vsock;

	if (!v)
		return;
	pthread_mutex_lock(v->lock);
	drop_all(v);
	v->reset_event_pending = true;
	deliver_reset_event(v);
	pthread_mutex_unlock(v->lock);
	olog_debug(m->id, "vsock: transport reset");
}

void virtio_vsock_quiesce(struct machine *m, bool on)
{
	struct virtio_vsock *v = m->vsock;

	if (!v)
		return;
	pthread_mutex_lock(v->lock);
	v->quiesced = on;
	if (!on) {
		uint64_t now = ember_now_ns();

		/* A connection that waited through the pause for the guest
		 * (its answer to a CONNECT, its RST to a close) gets its
		 * whole time again. */
		for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
			struct vsock_conn *c = v->conns[i];

			if (!c || !c->deadline_ns)
				continue;
			if (c->state == CONN_REQUESTING)
				c->deadline_ns = now + VSOCK_CONNECT_TIMEOUT_NS;
			else if (c->state != CONN_HOST_LINE)
				c->deadline_ns = now + VSOCK_CLOSE_TIMEOUT_NS;
		}
		deliver_reset_event(v);
		rx_pump(v);
	}
	pthread_mutex_unlock(v->lock);
}
