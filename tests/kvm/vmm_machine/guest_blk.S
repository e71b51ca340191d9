/* Drives the virtio-blk device at 0xd0000000 by hand: feature
 * negotiation, one queue of 8 descriptors, then four requests, each
 * polled to completion on the used ring:
 *   1. IN     sector 0 -> 0x44000 (512 bytes)   status at 0x45000
 *   2. OUT    0x46000 (the test's pattern) -> sector 1   status 0x45001
 *   3. GET_ID -> 0x47000 (20 bytes)             status 0x45002
 *   4. FLUSH                                    status 0x45003
 * The status bytes start as 0xff (the test fills them). */
#include "guest.h"

#define MMIO 0xd0000000
#define DESC 0x40000
#define AVAIL 0x41000
#define USED 0x42000
#define HDR 0x43000

	/* desc[i] = {addr, len, flags, next} */
	.macro DESC_SET i, addr, len, flags, next
	movq $\addr, DESC + 16 * \i
	movl $\len, DESC + 16 * \i + 8
	movw $\flags, DESC + 16 * \i + 12
	movw $\next, DESC + 16 * \i + 14
	.endm

	/* Offers chain head at avail slot n (0-based), notifies, and waits
	 * until the used index reaches n + 1. */
	.macro SUBMIT n, head
	movw $\head, AVAIL + 4 + 2 * \n
	movw $(\n + 1), AVAIL + 2
	movl $0, 0x50(%rbx)
.Lwait\@:
	movzwl USED + 2, %eax
	cmp $(\n + 1), %eax
	jne .Lwait\@
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
	cmpl $2, 0x8(%rbx)		/* block device */
	jne bad
	movl $0, 0x70(%rbx)		/* reset */
	movl $1, 0x70(%rbx)		/* ACKNOWLEDGE */
	movl $3, 0x70(%rbx)		/* DRIVER */
	movl $1, 0x14(%rbx)		/* device features, high word */
	testl $1, 0x10(%rbx)		/* VERSION_1 */
	jz bad
	movl $0, 0x24(%rbx)
	movl $0, 0x20(%rbx)
	movl $1, 0x24(%rbx)
	movl $1, 0x20(%rbx)		/* we take VERSION_1 only */
	movl $0xb, 0x70(%rbx)		/* FEATURES_OK */
	testl $8, 0x70(%rbx)
	jz bad
	movl $0, 0x30(%rbx)		/* queue 0 */
	cmpl $8, 0x34(%rbx)
	jb bad
	movl $8, 0x38(%rbx)
	movl $DESC, 0x80(%rbx)
	movl $0, 0x84(%rbx)
	movl $AVAIL, 0x90(%rbx)
	movl $0, 0x94(%rbx)
	movl $USED, 0xa0(%rbx)
	movl $0, 0xa4(%rbx)
	movl $1, 0x44(%rbx)		/* queue ready */
	movl $0xf, 0x70(%rbx)		/* DRIVER_OK */

	/* Request headers: {type, reserved, sector}. */
	movl $0, HDR			/* IN */
	movq $0, HDR + 8
	movl $1, HDR + 0x10		/* OUT */
	movq $1, HDR + 0x18
	movl $8, HDR + 0x20		/* GET_ID */
	movl $4, HDR + 0x30		/* FLUSH */

	DESC_SET 0, HDR, 16, 1, 1
	DESC_SET 1, 0x44000, 512, 3, 2
	DESC_SET 2, 0x45000, 1, 2, 0
	SUBMIT 0, 0
	DESC_SET 3, HDR + 0x10, 16, 1, 4
	DESC_SET 4, 0x46000, 512, 1, 5
	DESC_SET 5, 0x45001, 1, 2, 0
	SUBMIT 1, 3
	DESC_SET 6, HDR + 0x20, 16, 1, 7
	/* Request 2 is done: its descriptors are free again. */
	DESC_SET 7, 0x47000, 20, 3, 5
	DESC_SET 5, 0x45002, 1, 2, 0
	SUBMIT 2, 6
	DESC_SET 0, HDR + 0x30, 16, 1, 1
	DESC_SET 1, 0x45003, 1, 2, 0
	SUBMIT 3, 0
	PUTS ok
	RESET
bad:
	PUTS fail
	RESET
ok:	.asciz "requests done\n"
fail:	.asciz "device setup failed\n"
