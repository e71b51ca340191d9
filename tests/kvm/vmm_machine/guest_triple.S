/* An exception with an empty IDT: a triple fault, the VM ends status 1. */
#include "guest.h"
	.code64
	.text
	.globl start
start:
	PUTS msg
	ud2
msg:	.asciz "about to fault\n"
