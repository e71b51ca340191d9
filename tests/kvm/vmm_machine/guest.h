/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Macros for the kvm tests' guest programs. Each guest is position
 * independent 64-bit code, loaded at 0x10000 and entered in long mode with
 * 0-4 GiB identity-mapped, interrupts off and an empty IDT (so any
 * exception is a triple fault). The test harness is guest_run.h.
 */
#define GUEST_DATA 0x30000 /* results the test reads back */

	.macro PUTS label
	lea \label(%rip), %rsi
	mov $0x3f8, %dx
.Lputs_loop\@:
	lodsb
	test %al, %al
	jz .Lputs_done\@
	outb %al, %dx
	jmp .Lputs_loop\@
.Lputs_done\@:
	.endm

	/* Pulse the CPU reset line through the i8042: the VM ends, status 0. */
	.macro RESET
	mov $0xfe, %al
	outb %al, $0x64
.Lreset_wait\@:
	hlt
	jmp .Lreset_wait\@
	.endm
