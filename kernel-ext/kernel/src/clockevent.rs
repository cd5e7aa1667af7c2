//! Per-CPU alarms on the local APIC timer, tickless: the timer is armed for
//! the earliest alarm of its CPU and disarmed when there is none, so an idle
//! CPU takes no timer interrupts at all.
//!
//! An alarm's callback runs in hard-IRQ context on the alarm's CPU; it must
//! be short and must not block or allocate.

use rtedge_arch::apic;
use rtedge_engine::timerqueue::{TimerId, TimerQueue};

use crate::cpu_local::{self, CpuLocal, MAX_CPUS};
use crate::sync::IrqSpinLock;
use crate::time;

/// What to do when an alarm fires.
#[derive(Clone, Copy, Debug)]
pub struct Alarm {
    pub callback: fn(AlarmId, u64),
    pub data: u64,
}

/// Each CPU's alarms, earliest first; the CPU's local APIC timer is armed
/// for the head.
static ALARMS: [IrqSpinLock<TimerQueue<Alarm>>; MAX_CPUS] = [const { IrqSpinLock::new(TimerQueue::new()) }; MAX_CPUS];

#[inline(always)]
fn alarms_of(cpu: &CpuLocal) -> &'static IrqSpinLock<TimerQueue<Alarm>> {
    &ALARMS[cpu.index() as usize]
}

/// Alarms armed on this CPU now.
pub fn armed_here() -> usize {
    alarms_of(cpu_local::current()).lock().armed_count()
}

/// A registered alarm: its CPU and its handle there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlarmId {
    cpu: u32,
    timer: TimerId,
}

impl AlarmId {
    /// The CPU whose timer serves this alarm.
    pub fn cpu(self) -> u32 {
        self.cpu
    }
}

/// Registers a disarmed alarm on the current CPU (may allocate).
pub fn register(callback: fn(AlarmId, u64), data: u64) -> AlarmId {
    let cpu = cpu_local::current();
    let timer = alarms_of(cpu).lock().register(Alarm { callback, data });
    AlarmId { cpu: cpu.index(), timer }
}

/// Registers a disarmed alarm on CPU `cpu` (may allocate).
pub fn register_on(cpu: u32, callback: fn(AlarmId, u64), data: u64) -> AlarmId {
    match cpu_local::get(cpu as usize) {
        Some(local) => {
            let timer = alarms_of(local).lock().register(Alarm { callback, data });
            AlarmId { cpu: local.index(), timer }
        }
        None => register(callback, data),
    }
}

/// Removes an alarm, cancelling it.
pub fn unregister(id: AlarmId) {
    if let Some(cpu) = cpu_local::get(id.cpu as usize) {
        alarms_of(cpu).lock().unregister(id.timer);
        reprogram_if_local(cpu);
    }
}

/// Arms `id` to fire at `deadline_ns` (clock time), re-arming if armed.
/// Never allocates.
pub fn arm(id: AlarmId, deadline_ns: u64) {
    if let Some(cpu) = cpu_local::get(id.cpu as usize) {
        alarms_of(cpu).lock().arm(id.timer, deadline_ns);
        reprogram_if_local(cpu);
    }
}

/// Disarms `id`; returns whether it was armed.
pub fn cancel(id: AlarmId) -> bool {
    match cpu_local::get(id.cpu as usize) {
        Some(cpu) => {
            let was = alarms_of(cpu).lock().cancel(id.timer);
            reprogram_if_local(cpu);
            was
        }
        None => false,
    }
}

/// Whether `id` is armed.
pub fn is_armed(id: AlarmId) -> bool {
    cpu_local::get(id.cpu as usize).is_some_and(|cpu| alarms_of(cpu).lock().is_armed(id.timer))
}

/// Alarms armed or cancelled from another CPU than their own: each takes
/// that CPU's alarm lock, which its timer interrupt needs too, and sends it
/// an interrupt (the `remote_alarm_changes` of `INFO cpu`).
static REMOTE_CHANGES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// See [`REMOTE_CHANGES`].
pub fn remote_changes() -> u64 {
    REMOTE_CHANGES.load(core::sync::atomic::Ordering::Relaxed)
}

fn reprogram_if_local(cpu: &CpuLocal) {
    if cpu.index() == cpu_local::current().index() {
        reprogram(cpu);
    } else {
        REMOTE_CHANGES.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        // Another CPU's timer: let it re-arm itself for its new head.
        apic::send_ipi(cpu.apic_id(), apic::Ipi::Fixed(crate::vectors::TIMER));
    }
}

/// Programs this CPU's timer for its earliest alarm. The APIC is written
/// after the alarm lock is released (under an emulator that write can
/// wait for the hypervisor, and another CPU arming an alarm here would
/// spin on the lock meanwhile); interrupts stay off from the read to the
/// write, so nothing on this CPU changes its alarms in between, and a
/// change from another CPU after the read sends the interrupt that
/// programs the timer again.
fn reprogram(cpu: &CpuLocal) {
    let interrupts_were_enabled = rtedge_arch::cpu::interrupts_save();
    let next = alarms_of(cpu).lock().next_deadline();
    match next {
        Some(deadline) => apic::arm_at_tsc(time::ns_to_tsc_deadline(deadline)),
        None => apic::disarm(),
    }
    rtedge_arch::cpu::interrupts_restore(interrupts_were_enabled);
}

/// The local timer interrupt: runs every due alarm, then re-arms the timer
/// for the next one.
pub fn handle_interrupt() {
    let cpu = cpu_local::current();
    loop {
        let now = time::now_ns();
        let due = {
            let mut alarms = alarms_of(cpu).lock();
            alarms.pop_expired(now).and_then(|(timer, _)| alarms.data(timer).map(|alarm| (timer, *alarm)))
        };
        let Some((timer, alarm)) = due else { break };
        (alarm.callback)(AlarmId { cpu: cpu.index(), timer }, alarm.data);
    }
    reprogram(cpu);
}
