/* Runs the i8042 self-test (0xaa -> 0x55), reports it, then resets. */
#include "guest.h"
	.code64
	.text
	.globl start
start:
	mov $0xaa, %al
	outb %al, $0x64
wait_obf:
	inb $0x64, %al
	test $1, %al
	jz wait_obf
	inb $0x60, %al
	cmp $0x55, %al
	jne bad
	PUTS ok
	RESET
bad:
	PUTS fail
	RESET
ok:	.asciz "self-test ok\n"
fail:	.asciz "self-test failed\n"
