/* Touches an I/O port and an MMIO address that no device owns: reads must
 * return all ones, writes must vanish, and the VM must go on. */
#include "guest.h"
	.code64
	.text
	.globl start
start:
	mov $0x1234, %dx
	mov $0x5a, %al
	outb %al, %dx
	inb %dx, %al
	cmp $0xff, %al
	jne bad
	mov $0xd8000000, %ebx
	movl $0x12345678, (%rbx)
	movl (%rbx), %eax
	cmp $0xffffffff, %eax
	jne bad
	PUTS ok
	RESET
bad:
	PUTS fail
	RESET
ok:	.asciz "still running\n"
fail:	.asciz "unexpected value\n"
