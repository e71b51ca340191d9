/* Every vCPU starts here. Each writes its CPUID leaf 1 ECX to GUEST_DATA +
 * 0x200 + 4 * id, then (its APIC id + 1) to GUEST_DATA + id; the vCPU with
 * APIC id 0 waits until the count of vCPUs the test put at GUEST_DATA +
 * 0x100 have written, then resets. */
#include "guest.h"
	.code64
	.text
	.globl start
start:
	mov $1, %eax
	cpuid
	shr $24, %ebx
	lea 1(%rbx), %eax
	mov %ebx, %edi
	mov %ecx, GUEST_DATA + 0x200(,%rdi,4)
	movb %al, GUEST_DATA(%rdi)
	test %edi, %edi
	jnz park
	movzbl GUEST_DATA + 0x100, %ecx
wait_all:
	mov %ecx, %edx
check:
	dec %edx
	js all_done
	cmpb $0, GUEST_DATA(%rdx)
	je wait_all
	jmp check
all_done:
	PUTS ok
	RESET
park:
	hlt
	jmp park
ok:	.asciz "all vCPUs checked in\n"
