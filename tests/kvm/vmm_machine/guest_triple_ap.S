/* vCPU 1 triple-faults (an exception with the empty IDT) once vCPU 0 has
 * said (a byte at GUEST_DATA) that it spins on one jump: the crash dump
 * must also show where vCPU 0 was. */
#include "guest.h"
	.code64
	.text
	.globl start
start:
	mov $1, %eax
	cpuid
	shr $24, %ebx
	cmp $1, %ebx
	je fault
	movb $1, GUEST_DATA
spin:
	jmp spin
fault:
	cmpb $0, GUEST_DATA
	je fault
	PUTS msg
	ud2
msg:	.asciz "vCPU 1 faults\n"
