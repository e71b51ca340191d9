/* Writes a line to the serial port, tells the boot timer, resets. */
#include "guest.h"
	.code64
	.text
	.globl start
start:
	PUTS msg
	mov $0x3f0, %dx
	mov $123, %al
	outb %al, %dx
	RESET
msg:	.asciz "hello from the guest\n"
