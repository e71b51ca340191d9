/*
 * The snapshot tests' guest: counts in a register (RBX) and in memory
 * (0x200000), touches pages at 0x400000 (and, with HIGH, the same pages
 * above the 32-bit hole at 4 GiB + 2 MiB), writes a letter to the serial
 * port every 32 steps, and ends with "done" and HLT (interrupts off), so
 * that its final registers can be read. Two passes over the pages, so
 * later snapshot generations overwrite pages earlier ones stored.
 * Entered in long mode with 0-4 GiB identity-mapped (PDPT at 0xa000).
 */
#define PAGES 300
#define STEPS (2 * PAGES)
#define DELAY 150
#define DATA 0x200000
#define LOW_PAGES 0x400000
#define HIGH_PD 0x300000
#define HIGH_PAGES 0x100200000

	.code64
	.text
	.globl start
start:
	cli
#ifdef HIGH
	/* Map 4-5 GiB with 2 MiB pages: a page directory at HIGH_PD in
	 * PDPT entry 4. */
	mov $HIGH_PD, %rdi
	xor %ecx, %ecx
1:	mov %rcx, %rax
	shl $21, %rax
	bts $32, %rax
	or $0x83, %rax
	mov %rax, (%rdi,%rcx,8)
	inc %ecx
	cmp $512, %ecx
	jne 1b
	mov $(HIGH_PD | 3), %rax
	mov %rax, 0xa000 + 4 * 8
	mov %cr3, %rax
	mov %rax, %cr3
#endif
	xor %ebx, %ebx
	xor %r12d, %r12d
	mov $DATA, %r13
step:
	imul $31, %rbx, %rbx
	lea 1(%rbx,%r12), %rbx
	add %rbx, (%r13)
	incq 8(%r13)
	/* page (i mod PAGES) */
	mov %r12, %rax
	cmp $PAGES, %rax
	jb 2f
	sub $PAGES, %rax
2:	shl $12, %rax
	lea LOW_PAGES(%rax), %rdi
	mov %rbx, (%rdi)
	add %r12, 8(%rdi)
#ifdef HIGH
	mov $HIGH_PAGES, %rdi
	add %rax, %rdi
	mov %rbx, (%rdi)
	add %r12, 8(%rdi)
#endif
	test $31, %r12
	jnz 3f
	mov %r12, %rax
	shr $5, %rax
	add $'a', %al
	mov $0x3f8, %dx
	out %al, %dx
3:	mov $DELAY, %ecx
4:	dec %ecx
	jnz 4b
	inc %r12
	cmp $STEPS, %r12
	jne step
	mov %rbx, 16(%r13)
	lea done(%rip), %rsi
	mov $0x3f8, %dx
5:	lodsb
	test %al, %al
	jz 6f
	out %al, %dx
	jmp 5b
6:	hlt
	jmp 6b
done:	.asciz "\ndone\n"
