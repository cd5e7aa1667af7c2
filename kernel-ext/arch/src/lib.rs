//! rtedge's x86_64 layer: boot entries (PVH and the Hermit protocol), CPU
//! tables and traps, the local APIC and TSC, paging, and the context switch.
//!
//! This is the one place with inline assembly. It knows nothing of thread
//! policy: it switches when told to, delivers traps to a handler the kernel
//! installs, and reports what the hardware says.
#![no_std]

pub mod acpi;
pub mod apic;
pub mod boot;
pub mod calibrate;
pub mod console;
pub mod cpu;
pub mod exit;
pub mod ioapic;
pub mod paging;
pub mod rtc;
pub mod smp;
pub mod switch;
pub mod tables;
pub mod traps;
