//! What the firmware's ACPI tables told boot: the MADT (the CPUs, the I/O
//! APICs and the ISA interrupt overrides).
//!
//! A leaf: it imports nothing from the kernel, so the interrupt routing,
//! power and SMP code read these facts without importing one another.
//! Boot stores them once (SMP bring-up on the boot CPU); readers see
//! nothing until then, and the whole table after.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};

use rtedge_arch::acpi::Madt;

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

/// The MADT and whether it is stored: written once (the `state` claim),
/// read only once `state` is `READY`.
struct Facts {
    state: AtomicU8,
    madt: UnsafeCell<Option<Madt>>,
}

// SAFETY: `madt` is written only by the one caller that moved `state` from
// EMPTY to WRITING, and read only after `state` is READY (stored with
// Release after the write, loaded with Acquire before the read); it is
// never written again.
unsafe impl Sync for Facts {}

static FACTS: Facts = Facts { state: AtomicU8::new(EMPTY), madt: UnsafeCell::new(None) };

/// Stores what the MADT says (`None`: no MADT found). Only the first call
/// stores; boot makes it once.
pub fn set_madt(madt: Option<Madt>) {
    if FACTS.state.compare_exchange(EMPTY, WRITING, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return;
    }
    // SAFETY: this caller won the EMPTY -> WRITING claim: no other writer,
    // and no reader before READY.
    unsafe { *FACTS.madt.get() = madt };
    FACTS.state.store(READY, Ordering::Release);
}

/// What the MADT says, once boot has read it (`None` before, on uhyve, or
/// when the firmware has none).
pub fn madt() -> Option<Madt> {
    if FACTS.state.load(Ordering::Acquire) != READY {
        return None;
    }
    // SAFETY: READY: written once before the Release this load acquired,
    // never written again.
    unsafe { *FACTS.madt.get() }
}
