//! Per-CPU alarms on the local APIC timer, tickless: the timer is armed for
//! the earliest alarm of its CPU and disarmed when there is none, so an idle
//! CPU takes no timer interrupts at all. The APIC is written only when that
//! changes what is armed (each write is an exit to the hypervisor).
//!
//! A CPU whose idle loop polls the clock (`rt_idle=poll`, the isolated
//! CPUs) runs its due alarms from that loop ([`run_due_here`]): a release
//! does not wait for the timer interrupt's delivery, and its timer is armed
//! only while a thread runs there, for the alarm that must interrupt it.
//!
//! An alarm's callback runs in hard-IRQ context on the alarm's CPU; it must
//! be short and must not block or allocate.

use rtedge_arch::apic;
use rtedge_engine::tickless::{self, Write};
pub use rtedge_engine::tickless::{LEVEL_ORDINARY, Running, realtime_level};
use rtedge_engine::timerqueue::{TimerId, TimerQueue};

use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use crate::cpu_local::{self, CpuLocal, MAX_CPUS};
use crate::sync::IrqSpinLock;
use crate::time;

/// What to do when an alarm fires.
#[derive(Clone, Copy, Debug)]
pub struct Alarm {
    pub callback: fn(AlarmId, u64),
    pub data: u64,
    /// How urgent it is on a polling CPU: it must interrupt a running
    /// thread only if its level is above that thread's
    /// ([`set_polling_here`]). [`LEVEL_ORDINARY`] unless armed with
    /// [`arm_with_level`].
    pub level: u8,
}

/// Each CPU's alarms, earliest first; the CPU's local APIC timer is armed
/// for the head.
static ALARMS: [IrqSpinLock<TimerQueue<Alarm>>; MAX_CPUS] = [const { IrqSpinLock::new(TimerQueue::new()) }; MAX_CPUS];

/// The deadline (clock ns) each CPU's timer was last armed for, 0 when it
/// is disarmed or has fired. Only its CPU writes it, interrupts off: an
/// unchanged head is not written to the APIC again (each write is an exit
/// to the hypervisor; under QEMU's TCG one that takes its global lock).
static PROGRAMMED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Each CPU's earliest alarm (clock ns, 0: none), for an idle loop that
/// polls the clock instead of waiting for the timer ([`run_due_here`]).
static NEXT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// For the CPUs whose idle loop polls the clock, what runs there now
/// ([`Running`]); 0 on the others. Only its CPU writes it.
static POLLING: [PollingState; MAX_CPUS] = [const { PollingState(AtomicU16::new(0)) }; MAX_CPUS];

/// 0: the CPU does not poll; 1: idle; 2 + level: a thread.
struct PollingState(AtomicU16);

impl PollingState {
    fn get(&self) -> Option<Running> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            1 => Some(Running::Idle),
            state => Some(Running::Thread { level: (state - 2) as u8 }),
        }
    }

    fn set(&self, running: Option<Running>) {
        let encoded = match running {
            None => 0,
            Some(Running::Idle) => 1,
            Some(Running::Thread { level }) => 2 + u16::from(level),
        };
        self.0.store(encoded, Ordering::Relaxed);
    }
}

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
    let timer = alarms_of(cpu).lock().register(Alarm { callback, data, level: LEVEL_ORDINARY });
    AlarmId { cpu: cpu.index(), timer }
}

/// Registers a disarmed alarm on CPU `cpu` (may allocate).
pub fn register_on(cpu: u32, callback: fn(AlarmId, u64), data: u64) -> AlarmId {
    match cpu_local::get(cpu as usize) {
        Some(local) => {
            let timer = alarms_of(local).lock().register(Alarm { callback, data, level: LEVEL_ORDINARY });
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

/// [`arm`] with the alarm's level ([`Alarm::level`]): a thread's alarm
/// carries the level of the thread it wakes.
pub fn arm_with_level(id: AlarmId, deadline_ns: u64, level: u8) {
    if let Some(cpu) = cpu_local::get(id.cpu as usize) {
        queue_with_level(cpu, id, deadline_ns, level);
        reprogram_if_local(cpu);
    }
}

/// Arms `id` in `cpu`'s queue with `level`, the timer left as it is.
fn queue_with_level(cpu: &CpuLocal, id: AlarmId, deadline_ns: u64, level: u8) {
    let mut alarms = alarms_of(cpu).lock();
    if let Some(alarm) = alarms.data_mut(id.timer) {
        alarm.level = level;
    }
    alarms.arm(id.timer, deadline_ns);
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
static REMOTE_CHANGES: AtomicU64 = AtomicU64::new(0);

/// See [`REMOTE_CHANGES`].
pub fn remote_changes() -> u64 {
    REMOTE_CHANGES.load(Ordering::Relaxed)
}

fn reprogram_if_local(cpu: &CpuLocal) {
    if cpu.index() == cpu_local::current().index() {
        reprogram(cpu);
    } else {
        REMOTE_CHANGES.fetch_add(1, Ordering::Relaxed);
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
/// programs the timer again. What is written, if anything, is
/// `tickless::decide`'s: nothing when that changes nothing, and on a
/// polling CPU only what preempts the running thread.
fn reprogram(cpu: &CpuLocal) {
    let interrupts_were_enabled = rtedge_arch::cpu::interrupts_save();
    let index = cpu.index() as usize;
    let polling = POLLING[index].get();
    let (next, needed) = {
        let alarms = alarms_of(cpu).lock();
        (alarms.next_deadline(), tickless::needed(&alarms, polling, |alarm| alarm.level))
    };
    NEXT[index].store(next.map_or(0, |deadline| deadline.max(1)), Ordering::Relaxed);
    let decision = tickless::decide(polling.is_some(), needed, PROGRAMMED[index].load(Ordering::Relaxed), time::now_ns());
    match decision.write {
        Write::Nothing => {}
        Write::Arm(deadline) => apic::arm_at_tsc(time::ns_to_tsc_deadline(deadline)),
        Write::Disarm => apic::disarm(),
    }
    PROGRAMMED[index].store(decision.armed, Ordering::Relaxed);
    rtedge_arch::cpu::interrupts_restore(interrupts_were_enabled);
}

/// Runs every due alarm of `cpu`.
fn run_expired(cpu: &CpuLocal) {
    loop {
        let now = time::now_ns();
        let due = {
            let mut alarms = alarms_of(cpu).lock();
            alarms.pop_expired(now).and_then(|(timer, _)| alarms.data(timer).map(|alarm| (timer, *alarm)))
        };
        let Some((timer, alarm)) = due else { break };
        (alarm.callback)(AlarmId { cpu: cpu.index(), timer }, alarm.data);
    }
}

/// The local timer interrupt: runs every due alarm, then re-arms the timer
/// for the next one.
pub fn handle_interrupt() {
    let cpu = cpu_local::current();
    // The timer has fired (or another CPU asks for a re-arm): whatever the
    // head is now gets written.
    PROGRAMMED[cpu.index() as usize].store(0, Ordering::Relaxed);
    run_expired(cpu);
    reprogram(cpu);
}

/// For the scheduler, on a CPU whose idle loop polls the clock
/// (`rt_idle=poll`): at each switch, what runs next ([`Running`]); `None`
/// when the CPU stops polling (its timer is armed for the earliest alarm
/// again).
pub fn set_polling_here(running: Option<Running>) {
    let cpu = cpu_local::current();
    POLLING[cpu.index() as usize].set(running);
    reprogram(cpu);
}

/// Whether this CPU's timer is in the polling CPU's mode
/// ([`set_polling_here`]).
pub fn polling_here() -> bool {
    POLLING[cpu_local::current().index() as usize].get().is_some()
}

/// [`arm`] for a thread about to switch away on a polling CPU: the alarm
/// is queued and the timer left as it is, for the switch to program
/// ([`set_polling_here`]); arming it first and disarming it at the
/// switch to idle would be two writes to the APIC per sleep, each of which
/// can wait for the emulator.
pub fn arm_before_switch(id: AlarmId, deadline_ns: u64, level: u8) {
    match cpu_local::get(id.cpu as usize) {
        Some(cpu) if cpu.index() == cpu_local::current().index() => {
            let interrupts_were_enabled = rtedge_arch::cpu::interrupts_save();
            queue_with_level(cpu, id, deadline_ns, level);
            rtedge_arch::cpu::interrupts_restore(interrupts_were_enabled);
        }
        _ => arm_with_level(id, deadline_ns, level),
    }
}

/// For an idle loop that polls the clock (`rt_idle=poll`), interrupts off:
/// if this CPU's earliest alarm is due, runs the due alarms as the timer
/// interrupt would, without waiting for it, and returns true.
pub fn run_due_here() -> bool {
    let cpu = cpu_local::current();
    let next = NEXT[cpu.index() as usize].load(Ordering::Relaxed);
    if next == 0 || next > time::now_ns() {
        return false;
    }
    let context = crate::context::here();
    context.irq_enter();
    run_expired(cpu);
    reprogram(cpu);
    context.irq_exit();
    true
}
