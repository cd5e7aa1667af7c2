//! Per-CPU identity, reached through GS (one load, no lock): the CPU's
//! dense index, its local APIC ID and the block's own address.
//!
//! A leaf: the state a subsystem keeps per CPU lives in that subsystem, in
//! an array indexed by [`CpuLocal::index`] (the softirq pending word and
//! counts in `softirq`, the run queue and running thread in the scheduler,
//! the alarm queue in `clockevent`, the interrupt and real-time depth in
//! `context`), as Hermit's `core_local` keeps only what every CPU is.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rtedge_arch::switch;

/// Most CPUs rtedge brings up.
pub const MAX_CPUS: usize = 16;

/// One CPU's identity. The first field must stay the block's own address
/// (read through `gs:[0]`); `index` is below `MAX_CPUS` (checked by
/// [`CpuLocal::new`]), so per-CPU arrays are indexed without a miss.
#[repr(C)]
pub struct CpuLocal {
    self_address: u64,
    index: u32,
    apic_id: AtomicU32,
}

impl CpuLocal {
    /// The block of CPU `index` (panics at boot for an index past `MAX_CPUS`).
    pub const fn new(index: u32) -> Self {
        assert!((index as usize) < MAX_CPUS, "cpu index past MAX_CPUS");
        Self { self_address: 0, index, apic_id: AtomicU32::new(0) }
    }

    /// Dense index, 0 for the boot CPU; always below `MAX_CPUS`.
    #[inline(always)]
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Local APIC ID (0 until the CPU has recorded it).
    pub fn apic_id(&self) -> u32 {
        self.apic_id.load(Ordering::Relaxed)
    }

    /// Records the local APIC ID; the CPU does it once it runs.
    pub fn set_apic_id(&self, apic_id: u32) {
        self.apic_id.store(apic_id, Ordering::Relaxed);
    }
}

static CPUS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static ONLINE: AtomicU32 = AtomicU32::new(0);

/// Makes `local` the current CPU's block.
///
/// # Safety
/// Call once per CPU, with a block that lives forever and is used by no
/// other CPU.
pub unsafe fn install(local: &'static mut CpuLocal) {
    let address = local as *mut CpuLocal as u64;
    local.self_address = address;
    let index = local.index as usize;
    if let Some(slot) = CPUS.get(index) {
        slot.store(address, Ordering::Release);
    }
    ONLINE.fetch_add(1, Ordering::AcqRel);
    // SAFETY: the block's first word is its address and it lives forever.
    unsafe { switch::set_cpu_local_base(address) };
}

/// The running CPU's block.
#[inline(always)]
pub fn current() -> &'static CpuLocal {
    // SAFETY: `install` ran on every CPU before any code calls this; the
    // block lives forever.
    unsafe { &*(switch::cpu_local_base() as *const CpuLocal) }
}

/// Whether this CPU has a block yet (early boot code must not call `current`).
pub fn is_installed() -> bool {
    CPUS[0].load(Ordering::Acquire) != 0
}

/// The block of CPU `index`.
pub fn get(index: usize) -> Option<&'static CpuLocal> {
    let address = CPUS.get(index)?.load(Ordering::Acquire);
    // SAFETY: only `install` stores non-zero addresses of 'static blocks.
    (address != 0).then(|| unsafe { &*(address as *const CpuLocal) })
}

/// The running CPU's index, to index a subsystem's per-CPU array (the
/// caller knows the block is installed).
#[inline(always)]
pub fn current_index() -> usize {
    // `index < MAX_CPUS` (checked by `CpuLocal::new`), so the mask changes
    // nothing; it lets the compiler drop the bounds checks of the per-CPU
    // arrays on the hot paths (the trap entry, the switch).
    const _: () = assert!(MAX_CPUS.is_power_of_two());
    current().index as usize & (MAX_CPUS - 1)
}

/// Number of CPUs online.
pub fn online_count() -> u32 {
    ONLINE.load(Ordering::Acquire)
}
