/* vCPU 1 triple-faults (an exception with the empty IDT) while vCPU 0
 * spins on one jump: the crash dump must also show where vCPU 0 was. */
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
spin:
	jmp spin
fault:
	PUTS msg
	ud2
msg:	.asciz "vCPU 1 faults\n"
