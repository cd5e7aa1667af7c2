//! Per-CPU descriptor tables: a GDT with one 64-bit code and one data
//! segment and a TSS whose interrupt stack table gives the double fault, NMI,
//! machine check and page fault handlers stacks of their own (a page fault on
//! a guard page must not run on the overflowed stack).

use core::mem::size_of;

/// Kernel code segment selector.
pub const KERNEL_CODE: u16 = 0x08;
/// Kernel data segment selector.
pub const KERNEL_DATA: u16 = 0x10;
const TSS_SELECTOR: u16 = 0x18;

/// Interrupt stack table slots (1-based, as the IDT encodes them).
pub const IST_DOUBLE_FAULT: u8 = 1;
pub const IST_NMI: u8 = 2;
pub const IST_MACHINE_CHECK: u8 = 3;
pub const IST_PAGE_FAULT: u8 = 4;
/// How many IST slots rtedge uses.
pub const IST_COUNT: usize = 4;

#[repr(C, packed(4))]
#[derive(Clone, Copy)]
pub struct TaskStateSegment {
    reserved0: u32,
    privilege_stacks: [u64; 3],
    reserved1: u64,
    interrupt_stacks: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    io_map_base: u16,
}

impl TaskStateSegment {
    const fn new() -> Self {
        Self {
            reserved0: 0,
            privilege_stacks: [0; 3],
            reserved1: 0,
            interrupt_stacks: [0; 7],
            reserved2: 0,
            reserved3: 0,
            io_map_base: size_of::<TaskStateSegment>() as u16,
        }
    }
}

/// One CPU's GDT and TSS. Must not move once loaded.
#[repr(C, align(16))]
pub struct CpuTables {
    gdt: [u64; 5],
    tss: TaskStateSegment,
}

impl CpuTables {
    pub const fn new() -> Self {
        Self {
            gdt: [
                0,
                0x00af_9a00_0000_ffff, // 64-bit code, ring 0
                0x00cf_9200_0000_ffff, // data, ring 0
                0,                     // TSS low (filled by `load`)
                0,                     // TSS high
            ],
            tss: TaskStateSegment::new(),
        }
    }

    /// Sets the top of interrupt stack `slot` (1-based).
    pub fn set_interrupt_stack(&mut self, slot: u8, top: u64) {
        let index = usize::from(slot - 1);
        let mut stacks = self.tss.interrupt_stacks;
        stacks[index] = top;
        self.tss.interrupt_stacks = stacks;
    }

    /// Loads the GDT and TSS on this CPU and reloads the segment registers.
    ///
    /// # Safety
    /// `self` must stay at this address, unmodified except through
    /// `set_interrupt_stack`, for as long as this CPU runs; the IST slots must
    /// hold valid stacks before the first exception that uses them.
    pub unsafe fn load(&'static mut self) {
        let tss_address = &raw const self.tss as u64;
        let limit = (size_of::<TaskStateSegment>() - 1) as u64;
        let low = (limit & 0xffff)
            | ((tss_address & 0xff_ffff) << 16)
            | (0x89 << 40) // present, 64-bit TSS (available)
            | (((limit >> 16) & 0xf) << 48)
            | (((tss_address >> 24) & 0xff) << 56);
        self.gdt[3] = low;
        self.gdt[4] = tss_address >> 32;
        #[repr(C, packed)]
        struct Pointer {
            limit: u16,
            base: u64,
        }
        let pointer = Pointer { limit: (size_of::<[u64; 5]>() - 1) as u16, base: self.gdt.as_ptr() as u64 };
        // SAFETY: the GDT is valid and 'static; the selectors name its entries;
        // reloading CS with a far return keeps executing the next instruction.
        unsafe {
            core::arch::asm!(
                "lgdt [{pointer}]",
                "push {code}",
                "lea {tmp}, [rip + 2f]",
                "push {tmp}",
                "retfq",
                "2:",
                "mov ds, {data:x}",
                "mov es, {data:x}",
                "mov ss, {data:x}",
                "ltr {tss:x}",
                pointer = in(reg) &raw const pointer,
                code = in(reg) u64::from(KERNEL_CODE),
                data = in(reg) u64::from(KERNEL_DATA),
                tss = in(reg) u64::from(TSS_SELECTOR),
                tmp = lateout(reg) _,
            );
        }
    }
}

impl Default for CpuTables {
    fn default() -> Self {
        Self::new()
    }
}

/// A statically allocated stack with a guard page below it (the kernel
/// unmaps the guard when it builds its page tables).
#[repr(C, align(4096))]
pub struct GuardedStack<const SIZE: usize> {
    guard: [u8; 4096],
    stack: [u8; SIZE],
}

impl<const SIZE: usize> GuardedStack<SIZE> {
    pub const fn new() -> Self {
        Self { guard: [0; 4096], stack: [0; SIZE] }
    }

    /// The guard page's address.
    pub fn guard_page(&self) -> u64 {
        self.guard.as_ptr() as u64
    }

    /// The stack's top (initial stack pointer), 16-byte aligned.
    pub fn top(&self) -> u64 {
        (self.stack.as_ptr() as u64 + SIZE as u64) & !15
    }

    /// The stack's lowest address.
    pub fn bottom(&self) -> u64 {
        self.stack.as_ptr() as u64
    }
}

impl<const SIZE: usize> Default for GuardedStack<SIZE> {
    fn default() -> Self {
        Self::new()
    }
}
