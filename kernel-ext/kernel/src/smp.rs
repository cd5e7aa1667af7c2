//! Bringing up every CPU the hypervisor offers: from ACPI's MADT by
//! INIT/SIPI under QEMU, by releasing uhyve's waiting vCPUs under the Hermit
//! protocol. Each CPU gets its own GDT/TSS with guarded exception stacks,
//! per-CPU data, local APIC timer, idle thread and `ksoftirqd`. A CPU that
//! does not come up is reported and the system runs on the rest.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicU64, Ordering};

use rtedge_arch::boot::{self, BootInfo, BootPath};
use rtedge_arch::paging::{Access, PAGE_SIZE};
use rtedge_arch::tables::{CpuTables, IST_COUNT};
use rtedge_arch::{acpi, apic, cpu, smp, traps as arch_traps};

use crate::cpu_local::{self, CpuLocal, MAX_CPUS};
use crate::memory::{self, stacks};
use crate::sync::IrqSpinLock;
use crate::{firmware, thread, time, vectors};

/// Per-CPU structures prepared by the boot CPU for a secondary CPU.
struct Prepared {
    local: usize,
    tables: usize,
}

static PREPARED: IrqSpinLock<[Option<Prepared>; MAX_CPUS]> = IrqSpinLock::new([const { None }; MAX_CPUS]);
/// CPUs that finished their bring-up (bit n = CPU index n).
static ARRIVED: AtomicU64 = AtomicU64::new(0);
static REPORT: IrqSpinLock<SmpReport> = IrqSpinLock::new(SmpReport { offered: 1, online: 1, failed: 0 });

/// What bring-up found.
#[derive(Clone, Copy, Debug, Default)]
pub struct SmpReport {
    pub offered: u32,
    pub online: u32,
    pub failed: u32,
}

const EXCEPTION_STACK_SIZE: u64 = 16 * 1024;
const BOOT_STACK_SIZE: u64 = 64 * 1024;

fn prepare(index: u32) -> Option<u64> {
    let local: &'static mut CpuLocal = Box::leak(Box::new(CpuLocal::new(index)));
    let tables: &'static mut CpuTables = Box::leak(Box::new(CpuTables::new()));
    for slot in 1..=IST_COUNT as u8 {
        let stack = stacks::allocate(EXCEPTION_STACK_SIZE).ok()?;
        tables.set_interrupt_stack(slot, stack.top());
        // Exception stacks live as long as the CPU: never returned.
        core::mem::forget(stack);
    }
    let boot_stack = stacks::allocate(BOOT_STACK_SIZE).ok()?;
    let top = boot_stack.top();
    // The boot stack becomes the idle thread's stack: it lives forever.
    core::mem::forget(boot_stack);
    PREPARED.lock()[index as usize] = Some(Prepared { local: local as *mut CpuLocal as usize, tables: tables as *mut CpuTables as usize });
    Some(top)
}

/// First Rust code on a secondary CPU (INIT/SIPI trampoline path).
extern "C" fn secondary_entry(index: u64) -> ! {
    secondary_main(index as u32)
}

/// Entry of uhyve's secondary vCPUs (Hermit path), from `rtedge-arch`.
#[unsafe(no_mangle)]
fn __rtedge_secondary_entry(index: u32) -> ! {
    secondary_main(index)
}

fn secondary_main(index: u32) -> ! {
    let Some(prepared) = PREPARED.lock().get_mut(index as usize).and_then(Option::take) else {
        loop {
            cpu::interrupts_disable();
            cpu::halt();
        }
    };
    // SAFETY: the boot CPU prepared these blocks for this CPU alone and
    // leaked them: they live forever at fixed addresses.
    unsafe {
        let tables = &mut *(prepared.tables as *mut CpuTables);
        tables.load();
        arch_traps::load();
        cpu_local::install(&mut *(prepared.local as *mut CpuLocal));
        apic::init_local(vectors::TIMER, vectors::APIC_ERROR);
    }
    cpu_local::current().set_apic_id(apic::id());
    cpu::interrupts_enable();
    if let Err(error) = thread::prepare_secondary_cpu() {
        crate::console_line!("rtedge: cannot create the idle thread of cpu {index}: {error}");
        crate::shutdown::shutdown_with(crate::ExitCode::BootFailure);
    }
    crate::timer::init_cpu();
    ARRIVED.fetch_or(1 << index, Ordering::AcqRel);
    thread::idle_loop()
}

fn delay_us(us: u64) {
    time::spin_for_ns(us * 1000);
}

fn wait_arrival(index: u32) -> bool {
    let deadline = time::now_ns() + 1_000_000_000;
    while time::now_ns() < deadline {
        if ARRIVED.load(Ordering::Acquire) & (1 << index) != 0 && thread::online_mask() & (1 << index) != 0 {
            return true;
        }
        cpu::pause();
    }
    false
}

/// Starts every other CPU; logs each one. Call on the boot CPU after the
/// scheduler runs there.
pub fn bring_up(info: &BootInfo) -> SmpReport {
    let mut report = SmpReport { offered: 1, online: 1, failed: 0 };
    match info.path {
        BootPath::Pvh | BootPath::Multiboot2 => bring_up_acpi(info, &mut report),
        BootPath::Hermit => bring_up_hermit(info, &mut report),
    }
    *REPORT.lock() = report;
    report
}

/// What the boot-time bring-up found.
pub fn last_report() -> SmpReport {
    *REPORT.lock()
}

fn bring_up_acpi(info: &BootInfo, report: &mut SmpReport) {
    // SAFETY: QEMU's ACPI tables and the BIOS area are in identity-mapped RAM.
    let madt = unsafe { acpi::read_madt(info.rsdp) };
    firmware::set_madt(madt);
    let Some(madt) = madt else {
        log::info!("smp: no ACPI MADT found; running on cpu 0 only");
        return;
    };
    let boot_apic = apic::id();
    let others = madt.cpus().iter().filter(|entry| entry.enabled && entry.apic_id != boot_apic).count();
    report.offered = 1 + others as u32;
    if others == 0 {
        return;
    }
    let cr3 = match memory::kernel_space() {
        Some(space) if space.root() >> 32 == 0 => space.root(),
        _ => {
            log::warn!("smp: page tables above 4 GiB; secondary CPUs cannot start");
            report.failed = others as u32;
            return;
        }
    };
    if let Err(error) = memory::map_identity(smp::TRAMPOLINE_ADDRESS, PAGE_SIZE, Access::Trampoline) {
        log::warn!("smp: cannot map the trampoline page: {error}");
        report.failed = others as u32;
        return;
    }
    // SAFETY: the trampoline page is mapped RWX and reserved for this.
    unsafe { smp::install_trampoline() };
    let mut index = 1u32;
    for entry in madt.cpus().iter().filter(|entry| entry.enabled && entry.apic_id != boot_apic) {
        if index as usize >= MAX_CPUS {
            log::warn!("smp: cpu with apic id {} ignored (more than {MAX_CPUS} CPUs)", entry.apic_id);
            report.failed += 1;
            continue;
        }
        let Some(stack_top) = prepare(index) else {
            log::warn!("smp: no memory to prepare cpu {index}");
            report.failed += 1;
            continue;
        };
        // SAFETY: the trampoline is installed; the stack belongs to the new
        // CPU; CPUs are started one at a time.
        let started = unsafe { smp::start_cpu(entry.apic_id, cr3, stack_top, secondary_entry, u64::from(index), &delay_us) };
        if started.is_ok() && wait_arrival(index) {
            log::info!("smp: cpu {index} (apic id {}) online", entry.apic_id);
            report.online += 1;
            index += 1;
        } else {
            log::warn!("smp: cpu with apic id {} did not start; continuing without it", entry.apic_id);
            PREPARED.lock()[index as usize] = None;
            report.failed += 1;
        }
    }
    // The trampoline is done: take away its execute right (W^X again).
    if let Err(error) = memory::map_identity(smp::TRAMPOLINE_ADDRESS, PAGE_SIZE, Access::Data) {
        log::warn!("smp: cannot remap the trampoline page: {error}");
    }
}

fn bring_up_hermit(info: &BootInfo, report: &mut SmpReport) {
    let count = info.uhyve.map_or(1, |facts| facts.cpu_count).min(MAX_CPUS as u64) as u32;
    report.offered = count;
    let Some(cr3) = memory::kernel_space().map(|space| space.root()) else { return };
    for index in 1..count {
        let Some(stack_top) = prepare(index) else {
            log::warn!("smp: no memory to prepare cpu {index}");
            report.failed += 1;
            continue;
        };
        // SAFETY: the stack belongs to that vCPU; releases are sequential
        // (we wait for each CPU to arrive before the next).
        unsafe { boot::release_hermit_secondary(index, stack_top, cr3) };
        if wait_arrival(index) {
            log::info!("smp: cpu {index} online");
            report.online += 1;
        } else {
            log::warn!("smp: cpu {index} did not come up; continuing without it");
            report.failed += 1;
        }
    }
}

/// Starts the per-CPU kernel threads of every online secondary CPU.
pub fn start_per_cpu_threads() {
    for index in 1..MAX_CPUS as u32 {
        if thread::online_mask() & (1 << index) != 0
            && let Err(error) = thread::start_ksoftirqd(index)
        {
            log::warn!("smp: cannot start ksoftirqd/{index}: {error}");
        }
    }
}

/// Sends a reschedule IPI to every other online CPU (tests, shutdown).
pub fn kick_others() {
    let me = cpu_local::current().index();
    for index in 0..MAX_CPUS {
        if index as u32 != me
            && let Some(local) = cpu_local::get(index)
        {
            apic::send_ipi(local.apic_id(), apic::Ipi::Fixed(vectors::RESCHEDULE));
        }
    }
}
