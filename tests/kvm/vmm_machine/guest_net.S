/* Drives the virtio-net device at 0xd0000000 by hand: takes VERSION_1 and
 * MAC, copies the MAC from the config space to GUEST_DATA, offers eight
 * 2 KiB rx buffers (queue 0), sends the one frame the test left at
 * TXBUF (its length, virtio_net_hdr included, at GUEST_DATA + 0x10) on
 * queue 1, then waits for a received ARP reply and writes the index of
 * its used-ring entry to GUEST_DATA + 0x20. */
#include "guest.h"

#define MMIO 0xd0000000
#define RXDESC 0x40000
#define RXAVAIL 0x41000
#define RXUSED 0x42000
#define TXDESC 0x43000
#define TXAVAIL 0x44000
#define TXUSED 0x45000
#define RXBUF 0x50000 /* 8 x 0x800 */
#define TXBUF 0x60000
#define NBUF 8

	/* Queue registers: QueueSel, QueueNum, the three ring addresses,
	 * QueueReady. */
	.macro QUEUE q, desc, avail, used
	movl $\q, 0x30(%rbx)
	cmpl $NBUF, 0x34(%rbx)
	jb bad
	movl $NBUF, 0x38(%rbx)
	movl $\desc, 0x80(%rbx)
	movl $0, 0x84(%rbx)
	movl $\avail, 0x90(%rbx)
	movl $0, 0x94(%rbx)
	movl $\used, 0xa0(%rbx)
	movl $0, 0xa4(%rbx)
	movl $1, 0x44(%rbx)
	.endm

	.code64
	.text
	.globl start
start:
	mov $MMIO, %ebx
	cmpl $0x74726976, 0x0(%rbx)	/* magic "virt" */
	jne bad
	cmpl $2, 0x4(%rbx)		/* version */
	jne bad
	cmpl $1, 0x8(%rbx)		/* network device */
	jne bad
	movl $0, 0x70(%rbx)		/* reset */
	movl $1, 0x70(%rbx)		/* ACKNOWLEDGE */
	movl $3, 0x70(%rbx)		/* DRIVER */
	movl $1, 0x14(%rbx)		/* device features, high word */
	testl $1, 0x10(%rbx)		/* VERSION_1 */
	jz bad
	movl $0, 0x14(%rbx)
	testl $0x20, 0x10(%rbx)		/* VIRTIO_NET_F_MAC */
	jz bad
	movl $0, 0x24(%rbx)
	movl $0x20, 0x20(%rbx)		/* MAC */
	movl $1, 0x24(%rbx)
	movl $1, 0x20(%rbx)		/* VERSION_1 */
	movl $0xb, 0x70(%rbx)		/* FEATURES_OK */
	testl $8, 0x70(%rbx)
	jz bad

	/* The MAC, one byte at a time from the config space. */
	xor %ecx, %ecx
1:	movb 0x100(%rbx,%rcx), %al
	movb %al, GUEST_DATA(%rcx)
	inc %ecx
	cmp $6, %ecx
	jne 1b

	QUEUE 0, RXDESC, RXAVAIL, RXUSED
	QUEUE 1, TXDESC, TXAVAIL, TXUSED

	/* rx: descriptor i = {RXBUF + i * 0x800, 0x800, WRITE}, avail i. */
	xor %ecx, %ecx
2:	mov %ecx, %eax
	shl $11, %eax
	add $RXBUF, %eax
	mov %ecx, %edx
	shl $4, %edx
	movq %rax, RXDESC(%rdx)
	movl $0x800, RXDESC + 8(%rdx)
	movw $2, RXDESC + 12(%rdx)
	movw $0, RXDESC + 14(%rdx)
	movw %cx, RXAVAIL + 4(%rcx,%rcx)
	inc %ecx
	cmp $NBUF, %ecx
	jne 2b
	movw $NBUF, RXAVAIL + 2

	/* tx: one descriptor, the test's frame. */
	movq $TXBUF, TXDESC
	movl GUEST_DATA + 0x10, %eax
	movl %eax, TXDESC + 8
	movw $0, TXDESC + 12
	movw $0, TXAVAIL + 4
	movw $1, TXAVAIL + 2

	movl $0xf, 0x70(%rbx)		/* DRIVER_OK */
	movl $0, 0x50(%rbx)		/* notify rx: buffers are there */
	movl $1, 0x50(%rbx)		/* notify tx */
3:	movzwl TXUSED + 2, %eax
	cmp $1, %eax
	jne 3b

	/* Each received frame in turn until an ARP reply: ethertype 0x0806
	 * at byte 12 of the frame, operation 2 at byte 20 (after the
	 * 12-byte virtio_net_hdr). */
	xor %ecx, %ecx			/* used entries looked at */
4:	movzwl RXUSED + 2, %eax
	cmp %ecx, %eax
	je 4b
	movl RXUSED + 4(,%rcx,8), %eax	/* used[k].id */
	shl $11, %eax
	add $RXBUF, %eax
	cmpw $0x0608, 24(%rax)
	jne 5f
	cmpw $0x0200, 32(%rax)
	jne 5f
	movl %ecx, GUEST_DATA + 0x20
	PUTS ok
	RESET
5:	inc %ecx
	cmp $NBUF, %ecx
	jne 4b
	PUTS noreply
	RESET
bad:
	PUTS fail
	RESET
ok:	.asciz "arp reply received\n"
noreply: .asciz "no arp reply in 8 frames\n"
fail:	.asciz "device setup failed\n"
