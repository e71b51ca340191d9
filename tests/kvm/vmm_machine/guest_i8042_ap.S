/* Linux's keyboard-controller reboot (reboot=k) done by a vCPU other than
 * the first, as after a panic on that CPU: the vCPU with APIC id 0 is
 * parked with interrupts off (stopped, as the panicking CPU leaves the
 * others); the one with APIC id 1 reports, then ten times waits for the
 * input buffer to be empty (port 0x64 bit 1) and writes 0xfe to port
 * 0x64, as the kernel does; if the VM is still running after that it falls
 * through to a triple fault, as the kernel's next method does. */
#include "guest.h"
	.code64
	.text
	.globl start
start:
	mov $1, %eax
	cpuid
	shr $24, %ebx
	cmp $1, %ebx
	je reboot
park:
	cli
	hlt
	jmp park
reboot:
	PUTS msg
	mov $10, %ecx
attempt:
	mov $0x10000, %edx
kb_wait:
	inb $0x64, %al
	test $2, %al
	jz send
	dec %edx
	jnz kb_wait
send:
	mov $0xfe, %al
	outb %al, $0x64
	dec %ecx
	jnz attempt
	ud2
msg:	.asciz "vCPU 1 resets\n"
