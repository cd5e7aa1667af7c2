//! Per-CPU data, reached through GS (one load, no lock): the CPU's index,
//! its alarm queue, interrupt counts and the context it is running in.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use rtedge_arch::switch;
use rtedge_engine::timerqueue::TimerQueue;

use crate::clockevent::Alarm;
use crate::sync::IrqSpinLock;
use crate::thread::scheduler_state::CpuScheduler;

/// Most CPUs rtedge brings up.
pub const MAX_CPUS: usize = 16;

/// One CPU's local data. The first field must stay the block's own address
/// (read through `gs:[0]`).
#[repr(C)]
pub struct CpuLocal {
    self_address: u64,
    /// Dense index, 0 for the boot CPU.
    pub index: u32,
    /// Local APIC ID.
    pub apic_id: AtomicU32,
    /// Hard-IRQ nesting depth (0 = not in an interrupt handler).
    pub irq_depth: AtomicU32,
    /// Non-zero while a real-time thread runs on this CPU.
    pub realtime: AtomicU32,
    /// Timers of this CPU, earliest first; the local APIC timer is armed
    /// for the head.
    pub alarms: IrqSpinLock<TimerQueue<Alarm>>,
    /// Interrupts taken per vector.
    pub interrupt_counts: [AtomicU64; 256],
    /// The thread running here (a `&'static Thread`, 0 before scheduling).
    pub current_thread: AtomicUsize,
    /// The thread just switched away from, until its registers are saved.
    pub previous_thread: AtomicUsize,
    /// Set when a more urgent thread is ready here.
    pub need_resched: AtomicBool,
    /// A non-RT thread preempted (by an RT thread) inside softirq work or a
    /// `bh_disable` section: it is kept out of the run queue and resumed
    /// before any other non-RT thread, as Linux runs under RTLinux (0 = none).
    pub bh_owner: AtomicUsize,
    /// What runs here: 0 idle, 1 kernel thread, 2 RT thread.
    pub running_class: AtomicU32,
    /// Threads queued here (runnable, not running).
    pub queued: AtomicU32,
    /// This CPU's run queue.
    pub scheduler: IrqSpinLock<Option<CpuScheduler>>,
    /// Pending soft interrupts (bit n = vector n).
    pub softirq_pending: AtomicU64,
    /// Softirq processing / bottom-half disable depth.
    pub softirq_depth: AtomicU32,
    /// Set while ksoftirqd owns a flood on this CPU.
    pub softirq_deferred: AtomicBool,
    /// Softirqs run per vector.
    pub softirq_counts: [AtomicU64; crate::softirq::MAX_VECTORS],
    /// Context switches on this CPU.
    pub switches: AtomicU64,
}

impl CpuLocal {
    pub const fn new(index: u32) -> Self {
        Self {
            self_address: 0,
            index,
            apic_id: AtomicU32::new(0),
            irq_depth: AtomicU32::new(0),
            realtime: AtomicU32::new(0),
            alarms: IrqSpinLock::new(TimerQueue::new()),
            interrupt_counts: [const { AtomicU64::new(0) }; 256],
            current_thread: AtomicUsize::new(0),
            previous_thread: AtomicUsize::new(0),
            need_resched: AtomicBool::new(false),
            bh_owner: AtomicUsize::new(0),
            running_class: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            scheduler: IrqSpinLock::new(None),
            softirq_pending: AtomicU64::new(0),
            softirq_depth: AtomicU32::new(0),
            softirq_deferred: AtomicBool::new(false),
            softirq_counts: [const { AtomicU64::new(0) }; crate::softirq::MAX_VECTORS],
            switches: AtomicU64::new(0),
        }
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

/// Number of CPUs online.
pub fn online_count() -> u32 {
    ONLINE.load(Ordering::Acquire)
}
