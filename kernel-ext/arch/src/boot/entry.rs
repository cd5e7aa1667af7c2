//! The first instructions: the PVH entry (32-bit, paging off), the
//! Multiboot2 entry (32-bit, paging off; GRUB from a disk image), and the
//! Hermit entry (64-bit, paging on), and the ELF notes and the Multiboot2
//! header that name them.
//!
//! Both paths read the time stamp counter first (so that "ready in N µs"
//! counts from the very first instruction), zero `.bss` (in 64-bit mode,
//! paging on: the PVH path does no loop with paging off), switch to the boot
//! stack, enable SSE state handling (CR0.MP, CR4.OSFXSR/OSXMMEXCPT, no lazy
//! FPU traps) and call Rust with the loader's boot information.

use core::arch::global_asm;

/// Size of the boot CPU's stack, used until the scheduler gives it a thread.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

/// The Hermit ABI level this image speaks (the `.note.ABI-tag` version).
/// uhyve 0.10 gates virtio-net on a kernel of 0.13.2 or newer; rtedge
/// implements that interface (modern virtio-net PCI), so it declares it.
pub const HERMIT_ABI_VERSION: (u32, u32, u32) = (0, 13, 2);

/// uhyve interface version 1: console and exit through I/O ports 0x800/0x880
/// and 0x540 with 32-bit parameter addresses, guest memory from physical 0,
/// and a non-relocatable image at its link address. Version 2/3 would put
/// guest memory above 4 GiB, which a PVH image loaded by QEMU at 2 MiB cannot
/// share. The virtio-net device is the same PCI device under both versions.
pub const UHYVE_INTERFACE_VERSION: u32 = 1;

#[repr(C, align(4))]
struct Note<const NAME: usize, const DESC: usize> {
    name_size: u32,
    desc_size: u32,
    kind: u32,
    name: [u8; NAME],
    desc: [u8; DESC],
}

const fn abi_tag_desc() -> [u8; 16] {
    let mut desc = [0u8; 16];
    let words = [6u32 /* ELF_NOTE_OS_HERMIT */, HERMIT_ABI_VERSION.0, HERMIT_ABI_VERSION.1, HERMIT_ABI_VERSION.2];
    let mut i = 0;
    while i < 4 {
        let bytes = words[i].to_le_bytes();
        desc[i * 4] = bytes[0];
        desc[i * 4 + 1] = bytes[1];
        desc[i * 4 + 2] = bytes[2];
        desc[i * 4 + 3] = bytes[3];
        i += 1;
    }
    desc
}

#[used]
#[unsafe(link_section = ".note.hermit.entry-version")]
static HERMIT_ENTRY_VERSION: Note<8, 4> = Note { name_size: 7, desc_size: 1, kind: 0x5a00, name: *b"HERMIT\0\0", desc: [4, 0, 0, 0] };

#[used]
#[unsafe(link_section = ".note.hermit.uhyve-interface-version")]
static HERMIT_UHYVE_INTERFACE: Note<8, 4> =
    Note { name_size: 8, desc_size: 4, kind: 0x5b00, name: *b"UHYVEIF\0", desc: UHYVE_INTERFACE_VERSION.to_be_bytes() };

#[used]
#[unsafe(link_section = ".note.ABI-tag")]
static HERMIT_ABI_TAG: Note<4, 16> = Note { name_size: 4, desc_size: 16, kind: 1, name: *b"GNU\0", desc: abi_tag_desc() };

/// The magic a Multiboot2 loader leaves in `eax`.
pub const MULTIBOOT2_BOOTLOADER_MAGIC: u32 = 0x36d7_6289;

// The Multiboot2 header (in the first 32 KiB of the file, 8-byte aligned:
// the linker script puts it first in .text). Tags: the information wanted
// (command line, modules, memory maps, ACPI RSDP; all optional so that a
// loader without one still boots us), the 32-bit entry address (the ELF
// entry is the Hermit one), and page-aligned modules. No EFI boot-services
// tag: GRUB then exits the boot services and enters in 32-bit protected
// mode under UEFI as under BIOS (Multiboot2 spec, 3.1.13 and 3.3).
global_asm!(
    r#"
    .pushsection .multiboot2, "a"
    .p2align 3
multiboot2_header:
    .long 0xe85250d6
    .long 0
    .long multiboot2_header_end - multiboot2_header
    .long 0x100000000 - (0xe85250d6 + (multiboot2_header_end - multiboot2_header))
    /* information request: cmdline 1, module 3, mmap 6, ACPI old 14,
       ACPI new 15, EFI mmap 17 */
    .p2align 3
    .short 1
    .short 1
    .long 8 + 6 * 4
    .long 1, 3, 6, 14, 15, 17
    /* entry address */
    .p2align 3
    .short 3
    .short 0
    .long 12
    .long multiboot2_start32
    /* module alignment */
    .p2align 3
    .short 6
    .short 0
    .long 8
    /* end */
    .p2align 3
    .short 0
    .short 0
    .long 8
multiboot2_header_end:
    .popsection
    "#,
    options(att_syntax)
);

// The PVH note (Xen ELF note type 18, PHYS32_ENTRY). QEMU reads its value as
// 8 bytes for an ELF64 image, so the 32-bit entry address is stored as a quad.
global_asm!(
    r#"
    .pushsection .note.Xen, "a", @note
    .p2align 2
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .p2align 2
    .quad pvh_start32
    .popsection
    "#,
    options(att_syntax)
);

global_asm!(
    r#"
    .pushsection .text.boot, "ax"

    /* Zeroes .bss (64-bit mode; clobbers rax, rcx, rdi). */
    .macro zero_bss
    leaq __bss_start(%rip), %rdi
    leaq __bss_end(%rip), %rcx
    subq %rdi, %rcx
    shrq $3, %rcx
    xorl %eax, %eax
    rep stosq
    .endm

    /* ------- PVH and Multiboot2: 32-bit protected mode, paging off ------- */
    .code32
    /* Multiboot2 (GRUB): eax = magic, ebx = the boot information. Both
       32-bit entries then run the same code; edi tells them apart (0 for
       PVH) and survives up to 64-bit mode. */
    .global multiboot2_start32
multiboot2_start32:
    cli
    cld
    movl %eax, %edi
    /* Firmware and option ROMs (SeaBIOS, iPXE) leave the 8259s routing
       the PIT at vectors that are exception vectors for us, and may leave
       I/O APIC lines unmasked: mask the 8259s and the 24 lines of the
       standard I/O APIC (0xfec00000; paging is off) before anything else.
       The kernel programs both properly later. */
    movb $0xff, %al
    outb %al, $0xa1
    outb %al, $0x21
    movl $0x10, %ecx
2:  movl %ecx, 0xfec00000
    movl $0x10000, 0xfec00010
    addl $2, %ecx
    cmpl $0x40, %ecx
    jb 2b
    jmp boot32_common

    .global pvh_start32
pvh_start32:
    cli
    cld
    xorl %edi, %edi
boot32_common:
    /* ebx = physical address of hvm_start_info or the Multiboot2
       information; keep it in ebx. */
    rdtsc
    movl %eax, %esi
    movl %edx, %ebp

    /* Paging is off here, and some hypervisors (the nested KVM of the build
       machines) emulate every instruction of that mode: a loop over .bss
       took 26 s there. So this path only switches modes: the boot page
       tables (the first 4 GiB identity-mapped with 2 MiB pages, for the jump
       to 64-bit; the kernel builds its own right after) are assembled into
       .data, and .bss is zeroed once paging is on. */
    /* CR4: PAE, OSFXSR, OSXMMEXCPT */
    movl %cr4, %eax
    orl $((1 << 5) | (1 << 9) | (1 << 10)), %eax
    movl %eax, %cr4
    movl $BOOT_PML4, %eax
    movl %eax, %cr3
    /* EFER: LME, NXE */
    movl $0xC0000080, %ecx
    rdmsr
    orl $((1 << 8) | (1 << 11)), %eax
    wrmsr
    /* CR0: PG, PE, MP; clear EM and TS so SSE never traps */
    movl %cr0, %eax
    andl $~((1 << 2) | (1 << 3)), %eax
    orl $((1 << 31) | (1 << 1) | 1), %eax
    movl %eax, %cr0

    lgdt BOOT_GDT_POINTER
    ljmp $0x08, $pvh_start64

    .code64
pvh_start64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    /* The first TSC reading is in ebp:esi, the start info address in ebx,
       the Multiboot2 magic (or 0) in edi. */
    shlq $32, %rbp
    movl %esi, %esi
    orq %rbp, %rsi
    movl %edi, %r15d
    zero_bss
    movq %rsi, BOOT_TSC(%rip)
    leaq BOOT_STACK_TOP(%rip), %rsp
    movl %ebx, %edi
    xorl %ebp, %ebp
    testl %r15d, %r15d
    jnz 1f
    call rtedge_pvh_entry
    ud2
1:  movl %r15d, %edx
    call rtedge_multiboot2_entry
    ud2

    /* ------------- Hermit: 64-bit long mode, paging on (uhyve) ----------- */
    .global _start
_start:
    cli
    cld
    /* rdi = &RawBootInfo, esi = cpu_id. Every vCPU starts here at once. */
    movq %rdi, %r12
    movl %esi, %r13d
    rdtsc
    shlq $32, %rdx
    orq %rdx, %rax
    movq %rax, %r14
    testl %r13d, %r13d
    jnz hermit_secondary

    zero_bss
    movq %r14, BOOT_TSC(%rip)

    movq %cr4, %rax
    orq $((1 << 9) | (1 << 10)), %rax
    movq %rax, %cr4
    movq %cr0, %rax
    andq $~((1 << 2) | (1 << 3)), %rax
    orq $(1 << 1), %rax
    movq %rax, %cr0

    leaq BOOT_STACK_TOP(%rip), %rsp
    movq %r12, %rdi
    movq %r14, %rsi
    xorl %ebp, %ebp
    call rtedge_hermit_entry
    ud2

    /* Secondary vCPUs under uhyve: wait, without touching .bss (the boot CPU
       is zeroing it), until the boot CPU publishes a stack for this CPU. */
hermit_secondary:
    movq %cr4, %rax
    orq $((1 << 9) | (1 << 10)), %rax
    movq %rax, %cr4
    movq %cr0, %rax
    andq $~((1 << 2) | (1 << 3)), %rax
    orq $(1 << 1), %rax
    movq %rax, %cr0
3:  pause
    movl HERMIT_AP_RELEASE(%rip), %eax
    cmpl %eax, %r13d
    jne 3b
    /* Our page tables first: the stack lives in the kernel's stack window. */
    movq HERMIT_AP_CR3(%rip), %rax
    movq %rax, %cr3
    movq HERMIT_AP_STACK(%rip), %rsp
    movl %r13d, %edi
    xorl %ebp, %ebp
    call rtedge_hermit_secondary_entry
    ud2

    .popsection

    .pushsection .rodata.boot, "a"
    .p2align 3
BOOT_GDT:
    .quad 0
    .quad 0x00AF9A000000FFFF  /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF  /* 0x10: data */
BOOT_GDT_END:
    .p2align 3
BOOT_GDT_POINTER:
    .word BOOT_GDT_END - BOOT_GDT - 1
    .quad BOOT_GDT
    .popsection

    /* The PVH path's boot page tables, complete in the image (see above). */
    .pushsection .data.boot.tables, "aw"
    .p2align 12
BOOT_PML4:
    .quad BOOT_PDPT + 0x3
    .fill 511, 8, 0
BOOT_PDPT:
    .quad BOOT_PD + 0x3
    .quad BOOT_PD + 0x1003
    .quad BOOT_PD + 0x2003
    .quad BOOT_PD + 0x3003
    .fill 508, 8, 0
BOOT_PD:
    .set boot_pd_entry, 0
    .rept 2048
    .quad (boot_pd_entry << 21) | 0x83
    .set boot_pd_entry, boot_pd_entry + 1
    .endr
    .popsection

    .pushsection .bss.boot, "aw", @nobits
    .p2align 12
    .global BOOT_STACK_GUARD
BOOT_STACK_GUARD:
    .space 4096
    .global BOOT_STACK_BOTTOM
BOOT_STACK_BOTTOM:
    .space {stack_size}
    .global BOOT_STACK_TOP
BOOT_STACK_TOP:
    .p2align 3
    .global BOOT_TSC
BOOT_TSC:
    .quad 0
    .popsection

    /* In .data, not .bss: secondary CPUs read these while .bss is zeroed. */
    .pushsection .data.boot, "aw"
    .p2align 3
    .global HERMIT_AP_STACK
HERMIT_AP_STACK:
    .quad 0
    .global HERMIT_AP_CR3
HERMIT_AP_CR3:
    .quad 0
    .global HERMIT_AP_RELEASE
HERMIT_AP_RELEASE:
    .long 0xffffffff
    .popsection
    "#,
    stack_size = const BOOT_STACK_SIZE,
    options(att_syntax)
);

unsafe extern "C" {
    static BOOT_TSC: u64;
    static BOOT_STACK_GUARD: u8;
    static BOOT_STACK_BOTTOM: u8;
    static BOOT_STACK_TOP: u8;
    static mut HERMIT_AP_STACK: u64;
    static mut HERMIT_AP_CR3: u64;
    static mut HERMIT_AP_RELEASE: u32;
}

/// The time stamp counter read by the first instruction of the boot CPU.
pub fn boot_tsc() -> u64 {
    // SAFETY: written once by the entry code before any Rust runs, read-only after.
    unsafe { core::ptr::read_volatile(&raw const BOOT_TSC) }
}

/// The boot CPU's stack, as `(lowest address, top)`.
pub fn boot_stack() -> (u64, u64) {
    (&raw const BOOT_STACK_BOTTOM as u64, &raw const BOOT_STACK_TOP as u64)
}

/// The page below the boot stack, to be left unmapped.
pub fn boot_stack_guard() -> u64 {
    &raw const BOOT_STACK_GUARD as u64
}

/// Lets the uhyve secondary CPU `cpu_id` leave its wait loop on `stack_top`
/// with page tables `cr3`.
///
/// # Safety
/// `stack_top` must be the top of a stack that belongs to that CPU alone,
/// `cr3` must map the kernel and that stack, and the previous secondary CPU
/// must already have taken its stack (the words are shared by all waiting
/// CPUs).
pub unsafe fn release_hermit_secondary(cpu_id: u32, stack_top: u64, cr3: u64) {
    // SAFETY: the caller serialises releases; the waiting CPUs only read.
    unsafe {
        core::ptr::write_volatile(&raw mut HERMIT_AP_CR3, cr3);
        core::ptr::write_volatile(&raw mut HERMIT_AP_STACK, stack_top);
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        core::ptr::write_volatile(&raw mut HERMIT_AP_RELEASE, cpu_id);
    }
}
