//! The interrupt vector map: which IDT vector means what in this kernel.
//!
//! A leaf: it imports nothing from the kernel, so every floor may name a
//! vector (the clock event sends `TIMER`, the scheduler `RESCHEDULE`,
//! boot programs the local APIC) without an arrow up to the trap
//! dispatcher. Vectors 0..32 are the CPU's exceptions; the local APIC's
//! spurious vector (0xff) is `rtedge_arch::apic::SPURIOUS_VECTOR`, which
//! arch programs itself.

/// Double fault (#DF): the kernel reports it with its own exit code.
pub const DOUBLE_FAULT: u8 = 8;
/// Page fault (#PF): a guard-page hit is reported as a stack overflow.
pub const PAGE_FAULT: u8 = 14;

/// First vector handed to device lines (I/O APIC routes, `irq::attach`).
pub const FIRST_DEVICE: u8 = 0x30;
/// Last vector handed to device lines.
pub const LAST_DEVICE: u8 = 0xdf;

/// The local APIC timer (the tickless clock event).
pub const TIMER: u8 = 0xf0;
/// Reschedule request from another CPU; its exit also runs softirqs
/// raised there for this CPU.
pub const RESCHEDULE: u8 = 0xf1;
/// Local APIC internal error.
pub const APIC_ERROR: u8 = 0xfe;
