//! What happens on every trap: CPU exceptions get a readable report and a
//! distinct exit code; device and timer interrupts are counted, acknowledged
//! and dispatched to their handlers (top halves: acknowledge, record, wake).

use core::sync::atomic::{AtomicU64, Ordering};

use rtedge_arch::traps::{self, TrapFrame};
use rtedge_arch::{apic, cpu};
use rtedge_engine::handler::HandlerSlot;

use crate::shutdown::{self, ExitCode};
use crate::sync::IrqSpinLock;
use crate::{console_line, context, cpu_local, memory, thread, vectors};

type IrqHandler = fn(u8);

/// Interrupt handlers by vector, typed slots: a hard IRQ enters the slot,
/// calls and leaves without a lock; `unregister` waits for a handler that
/// runs on another CPU.
static HANDLERS: [HandlerSlot<IrqHandler>; 256] = [const { HandlerSlot::new() }; 256];
static NAMES: IrqSpinLock<[Option<&'static str>; 256]> = IrqSpinLock::new([None; 256]);

/// Static guard pages (boot and exception stacks) for overflow reports.
static STATIC_GUARDS: IrqSpinLock<[u64; 8]> = IrqSpinLock::new([0; 8]);

/// Records a static stack's guard page so a hit is reported as overflow.
pub fn add_static_guard(page: u64) {
    let mut guards = STATIC_GUARDS.lock();
    if let Some(slot) = guards.iter_mut().find(|slot| **slot == 0) {
        *slot = page;
    }
}

/// Errors when attaching handlers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqError {
    /// The vector is a CPU exception or reserved by the kernel.
    Reserved,
    /// Another handler owns the vector.
    Busy,
}

/// Attaches `handler` to `vector` under `name` (shown in the interrupt list).
pub fn register(vector: u8, name: &'static str, handler: IrqHandler) -> Result<(), IrqError> {
    if vector < traps::FIRST_EXTERNAL_VECTOR || vector == apic::SPURIOUS_VECTOR {
        return Err(IrqError::Reserved);
    }
    let mut names = NAMES.lock();
    HANDLERS[usize::from(vector)].install(handler).map_err(|_| IrqError::Busy)?;
    names[usize::from(vector)] = Some(name);
    Ok(())
}

/// Detaches whatever handler `vector` has. On return it runs on no CPU and
/// never starts again: it waits for one running elsewhere, so call it
/// from thread context, never from the vector's own handler, and not
/// while holding a lock that handler takes.
pub fn unregister(vector: u8) {
    let slot = &HANDLERS[usize::from(vector)];
    // Waits outside the name lock: a handler may read its name meanwhile.
    slot.remove(None, cpu::pause);
    let mut names = NAMES.lock();
    if !slot.is_live() {
        names[usize::from(vector)] = None;
    }
}

/// The name attached to `vector`.
pub fn name(vector: u8) -> Option<&'static str> {
    NAMES.lock()[usize::from(vector)]
}

/// Installs the trap handler (boot CPU, before interrupts are enabled).
pub fn init() {
    static HANDLER: traps::TrapHandler = handle;
    traps::set_handler(&HANDLER);
}

/// Registers the kernel's own interrupt handlers.
pub fn register_kernel_handlers() {
    let _ = register(vectors::TIMER, "local-timer", |_| crate::clockevent::handle_interrupt());
    let _ = register(vectors::RESCHEDULE, "reschedule-ipi", crate::thread::reschedule_interrupt);
    let _ = register(vectors::APIC_ERROR, "apic-error", |_| {
        log::warn!("local APIC error, status {:#x}", apic::error_status());
    });
}

fn handle(frame: &mut TrapFrame) {
    let vector = frame.vector as u8;
    if vector < traps::FIRST_EXTERNAL_VECTOR {
        exception(frame);
    }
    if vector == apic::SPURIOUS_VECTOR {
        // Spurious interrupts are not acknowledged.
        if cpu_local::is_installed() {
            COUNTS[cpu_local::current_index()][usize::from(vector)].fetch_add(1, Ordering::Relaxed);
        }
        return;
    }
    let cpu = cpu_local::current_index();
    let here = context::on(cpu);
    COUNTS[cpu][usize::from(vector)].fetch_add(1, Ordering::Relaxed);
    here.irq_enter();
    HANDLERS[usize::from(vector)].call(|handler| handler(vector));
    apic::end_of_interrupt();
    if here.irq_exit() {
        // Back to thread level: bottom halves first (unless an RT thread
        // was interrupted), then a pending reschedule.
        // Not on a thread caught between a state change and its switch
        // (it is neither running nor parked yet).
        if !here.in_realtime_thread() && thread::try_current().is_none_or(|thread| thread.state() == thread::State::Running) {
            crate::softirq::run_pending();
        }
        if thread::reschedule_pending(cpu) {
            thread::preempt_from_interrupt();
        }
    }
}

fn exception(frame: &TrapFrame) -> ! {
    let vector = frame.vector as u8;
    let name = traps::exception_name(vector).unwrap_or("unknown exception");
    crate::console::enter_panic();
    let cpu = context::cpu_index();
    let thread = thread::current_name();
    let mut code = shutdown::exception_exit_code(vector);
    if vector == vectors::PAGE_FAULT {
        let address = cpu::read_cr2();
        let overflow = memory::stacks::guard_hit(address).is_some()
            || STATIC_GUARDS.lock().iter().any(|&guard| guard != 0 && (guard..guard + 4096).contains(&address));
        if overflow {
            code = ExitCode::StackOverflow as u8;
            console_line!("rtedge: STACK OVERFLOW on cpu {cpu} in thread '{thread}': guard page {:#x} hit", address & !0xfff);
        }
        console_line!("rtedge: CPU EXCEPTION {name} on cpu {cpu} in thread '{thread}'");
        console_line!("rtedge:   error code {:#x} ({})", frame.error_code, traps::describe_page_fault(frame.error_code));
        console_line!("rtedge:   faulting address (CR2) {address:#018x}");
    } else {
        if vector == vectors::DOUBLE_FAULT {
            code = ExitCode::DoubleFault as u8;
        }
        console_line!("rtedge: CPU EXCEPTION {name} on cpu {cpu} in thread '{thread}'");
        if traps::has_error_code(vector) {
            console_line!("rtedge:   error code {:#x}", frame.error_code);
        }
    }
    console_line!("rtedge:   at rip {:#018x}, rsp {:#018x}", frame.rip, frame.rsp);
    console_line!("{}", frame);
    shutdown::shutdown(code)
}

/// Interrupts taken per CPU and vector (only that CPU adds to its row).
static COUNTS: [[AtomicU64; 256]; cpu_local::MAX_CPUS] = [const { [const { AtomicU64::new(0) }; 256] }; cpu_local::MAX_CPUS];

/// Interrupts CPU `cpu` took on `vector` (0 for a CPU past `MAX_CPUS`).
pub fn interrupt_count(cpu: usize, vector: u8) -> u64 {
    COUNTS.get(cpu).map_or(0, |counts| counts[usize::from(vector)].load(Ordering::Relaxed))
}

/// One line of the `/proc/interrupts` view.
#[derive(Clone, Debug)]
pub struct InterruptLine {
    pub vector: u8,
    pub name: &'static str,
    pub per_cpu: alloc::vec::Vec<u64>,
    pub total: u64,
}

/// Counts per vector and CPU for every vector with a handler or a count.
pub fn interrupt_lines() -> alloc::vec::Vec<InterruptLine> {
    let cpus: alloc::vec::Vec<_> = (0..cpu_local::MAX_CPUS).filter(|&cpu| cpu_local::get(cpu).is_some()).map(|cpu| &COUNTS[cpu]).collect();
    let names = *NAMES.lock();
    let mut lines = alloc::vec::Vec::new();
    for vector in traps::FIRST_EXTERNAL_VECTOR..=255u8 {
        let per_cpu: alloc::vec::Vec<u64> = cpus.iter().map(|counts| counts[usize::from(vector)].load(Ordering::Relaxed)).collect();
        let total = per_cpu.iter().sum();
        let name = if vector == apic::SPURIOUS_VECTOR { Some("spurious") } else { names[usize::from(vector)] };
        if name.is_some() || total > 0 {
            lines.push(InterruptLine { vector, name: name.unwrap_or("unnamed"), per_cpu, total });
        }
    }
    lines
}
