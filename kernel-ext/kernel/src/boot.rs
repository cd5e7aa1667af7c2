//! Bringing the boot CPU up: console, traps, page tables and heap, local
//! APIC and clock, then the banner and the application's main.

use rtedge_arch::boot::{self, BootInfo, BootPath};
use rtedge_arch::tables::{CpuTables, GuardedStack, IST_COUNT};
use rtedge_arch::{apic, calibrate, console as arch_console, cpu, traps as arch_traps};
use rtedge_engine::cmdline;

use crate::cpu_local::{self, CpuLocal};
use crate::shutdown::{self, ExitCode};
use crate::{console, console_line, memory, smp, thread, time, trap, vectors};

/// Size of each exception (IST) stack.
const EXCEPTION_STACK_SIZE: usize = 16 * 1024;

static mut BOOT_CPU_TABLES: CpuTables = CpuTables::new();
static mut BOOT_CPU_EXCEPTION_STACKS: [GuardedStack<EXCEPTION_STACK_SIZE>; IST_COUNT] = [const { GuardedStack::new() }; IST_COUNT];
static mut BOOT_CPU_LOCAL: CpuLocal = CpuLocal::new(0);

static mut BOOT_INFO: Option<&'static BootInfo> = None;

/// The loader's information, once boot has started.
pub fn info() -> &'static BootInfo {
    // SAFETY: written once at the very start of boot, read-only afterwards.
    unsafe { BOOT_INFO }.unwrap_or_else(|| shutdown::shutdown_with(ExitCode::BootFailure))
}

/// The hypervisor the kernel runs under, as far as the way in tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hypervisor {
    /// QEMU, through PVH (`-kernel`; machines microvm and q35).
    Qemu,
    /// uhyve, through the Hermit boot protocol: no ACPI, no forwarded
    /// host port, files and exit through hypercalls.
    Uhyve,
    /// Firmware (BIOS or UEFI, then GRUB through Multiboot2) booted a disk
    /// image, under QEMU or libvirt: the way in does not name the hypervisor.
    Firmware,
}

impl Hypervisor {
    /// Its name in `INFO` and logs.
    pub fn name(self) -> &'static str {
        match self {
            Hypervisor::Qemu => "qemu",
            Hypervisor::Uhyve => "uhyve",
            Hypervisor::Firmware => "firmware",
        }
    }
}

/// The hypervisor this kernel was booted by (from the boot path).
pub fn hypervisor() -> Hypervisor {
    match info().path {
        BootPath::Pvh => Hypervisor::Qemu,
        BootPath::Hermit => Hypervisor::Uhyve,
        BootPath::Multiboot2 => Hypervisor::Firmware,
    }
}

/// The kernel command line.
pub fn command_line() -> &'static str {
    info().command_line()
}

/// Command line keys the kernel and its subsystems understand.
const KERNEL_KEYS: &[&str] = &[
    "log",
    "boot_only",
    "x2apic",
    "reserve",
    "isolcpus",
    "rt_idle",
    "irqsoff",
    "ip",
    "gw",
    "dns",
    "auth",
    "port",
    "net",
    "file",
    "config",
    "quiet",
    "test",
    "max_clients",
    "idle_timeout",
    "rate_limit",
    // The control plane's admission, time and memory limits (issue 12; net/CONTROL.md).
    "reserved_clients",
    "auth_timeout_ms",
    "preauth_input_bytes",
    "send_timeout",
    "auth_failures_per_second",
    "max_subscription_bytes",
    "max_transaction_bytes",
    "control_memory",
    "net_faults",
];

unsafe extern "Rust" {
    /// The application's entry, defined by `rtedge_kernel::main!`.
    fn __rtedge_main() -> u8;
    /// Command line keys the application understands.
    static __RTEDGE_APP_KEYS: &'static [&'static str];
    /// The services the application wires in (its control plane), started
    /// at the end of boot.
    static __RTEDGE_SERVICES: &'static [fn()];
}

fn report_unknown_keys(line: &str) {
    // SAFETY: defined by the `main!` macro in the binary as a plain static.
    let app_keys: &[&str] = unsafe { __RTEDGE_APP_KEYS };
    for item in cmdline::items(line) {
        if !KERNEL_KEYS.contains(&item.key) && !app_keys.contains(&item.key) {
            log::warn!("command line: unknown key '{}' ignored", item.key);
        }
    }
}

#[unsafe(no_mangle)]
fn __rtedge_kernel_entry(info: &'static BootInfo) -> ! {
    // SAFETY: boot CPU, single-threaded, interrupts off.
    unsafe { BOOT_INFO = Some(info) };
    let console_kind = match info.path {
        BootPath::Pvh | BootPath::Multiboot2 => arch_console::Console::Serial,
        BootPath::Hermit => arch_console::Console::Uhyve,
    };
    // SAFETY: first use of the console, on the boot CPU.
    unsafe { arch_console::init(console_kind) };
    trap::init();

    // SAFETY: the boot CPU's tables and stacks are statics used only here.
    let (tables, exception_stacks) = unsafe { (&mut *(&raw mut BOOT_CPU_TABLES), &*(&raw const BOOT_CPU_EXCEPTION_STACKS)) };
    for (slot, stack) in exception_stacks.iter().enumerate() {
        tables.set_interrupt_stack(slot as u8 + 1, stack.top());
    }
    // SAFETY: the tables are static and their IST slots hold stacks.
    unsafe {
        tables.load();
        arch_traps::init();
        arch_traps::load();
    }
    // SAFETY: the boot CPU's block is a static used by this CPU only.
    unsafe { cpu_local::install(&mut *(&raw mut BOOT_CPU_LOCAL)) };

    let line = info.command_line();
    let level = cmdline::get(line, "log").map(|value| match console::parse_level(value) {
        Some(level) => level,
        None => log::LevelFilter::Info,
    });
    console::init_logger(level.unwrap_or(log::LevelFilter::Info));

    let mut guards = [0u64; 1 + IST_COUNT];
    guards[0] = boot::boot_stack_guard();
    for (i, stack) in exception_stacks.iter().enumerate() {
        guards[i + 1] = stack.guard_page();
    }
    for &guard in &guards {
        trap::add_static_guard(guard);
    }
    let reserve = match cmdline::get(line, "reserve").map(cmdline::parse_size) {
        Some(Ok(bytes)) => bytes,
        Some(Err(_)) => {
            log::warn!("command line: reserve= needs a size such as 4M; nothing reserved");
            0
        }
        None => 0,
    };
    let memory = match memory::init(info, &guards, reserve) {
        Ok(report) => report,
        Err(error) => {
            console_line!("rtedge: boot failed: memory: {error}");
            shutdown::shutdown_with(ExitCode::BootFailure);
        }
    };

    static MAPPER: rtedge_arch::acpi::Mapper = crate::power::map_firmware_table;
    rtedge_arch::acpi::set_mapper(&MAPPER);
    let prefer_x2apic = cmdline::get(line, "x2apic").map(|v| cmdline::parse_bool(v).unwrap_or(true)).unwrap_or(true);
    let apic_mode = apic::choose_mode(prefer_x2apic);
    if apic_mode == apic::Mode::XApic
        && let Err(error) = memory::map_device(apic::xapic_physical_base(), 4096)
    {
        console_line!("rtedge: boot failed: cannot map the local APIC: {error}");
        shutdown::shutdown_with(ExitCode::BootFailure);
    }
    // SAFETY: the APIC mode is chosen and its registers mapped; interrupts are off.
    unsafe { apic::init_local(vectors::TIMER, vectors::APIC_ERROR) };
    cpu_local::current().set_apic_id(apic::id());

    if info.path.is_acpi_pc() {
        calibrate::disable_legacy_pic();
    }
    let hint = info.uhyve.and_then(|facts| facts.cpu_khz);
    let calibration = match calibrate::calibrate(hint) {
        Ok(calibration) => calibration,
        Err(_) => {
            console_line!("rtedge: boot failed: no way to measure the TSC frequency (no hint, no CPUID leaf, no PIT)");
            shutdown::shutdown_with(ExitCode::BootFailure);
        }
    };
    time::init(calibration, info.boot_tsc);
    match info.uhyve {
        Some(facts) if facts.boot_time_unix_ns > 0 => time::set_wall_clock(facts.boot_time_unix_ns as u64, 0, time::WallSource::Hypervisor),
        _ => {
            if let Some(seconds) = rtedge_arch::rtc::read_unix_seconds() {
                time::set_wall_clock((seconds.max(0) as u64) * 1_000_000_000, time::now_ns(), time::WallSource::Rtc);
            } else if let Some(unix_ns) = calibrate::kvm_wall_clock_ns() {
                time::set_wall_clock(unix_ns, time::now_ns(), time::WallSource::Hypervisor);
            }
        }
    }
    trap::register_kernel_handlers();

    banner(info, &memory, calibration, apic_mode);
    report_unknown_keys(line);
    cpu::interrupts_enable();
    // The boot context becomes idle/0; then the other CPUs come up.
    if let Err(error) = thread::finish_boot_cpu() {
        console_line!("rtedge: cannot create the idle thread of cpu 0: {error}");
        shutdown::shutdown_with(ExitCode::BootFailure);
    }
    crate::tasklet::init();
    crate::timer::init_cpu();
    let smp = smp::bring_up(info);
    let isolated = match cmdline::get(line, "isolcpus").map(cmdline::parse_cpu_list) {
        Some(Ok(mask)) => mask & thread::online_mask() & !1,
        Some(Err(_)) => {
            log::warn!("command line: isolcpus= needs a CPU list such as 1 or 1-3; nothing isolated");
            0
        }
        None => 0,
    };
    thread::set_isolated(isolated);
    // `rt_idle=poll`: the isolated CPUs poll the clock when idle instead of
    // halting (a release then never waits for the timer interrupt's
    // delivery; each such CPU stays busy, a whole host core under a
    // hypervisor). `rt_idle=halt`, the default, halts.
    let polling = match cmdline::get(line, "rt_idle") {
        Some("poll") if isolated == 0 => {
            log::warn!("command line: rt_idle=poll applies to the isolated CPUs and there are none (isolcpus=); nothing polls");
            0
        }
        Some("poll") => isolated,
        Some("halt") | None => 0,
        Some(other) => {
            log::warn!("command line: rt_idle={other} is not poll or halt; isolated CPUs halt when idle");
            0
        }
    };
    thread::set_polling(polling);
    // `irqsoff=1`: time interrupts-off lock sections (INFO cpu irqs_off_*).
    crate::sync::set_irqs_off_timing(cmdline::get(line, "irqsoff").is_some_and(|value| value == "1"));
    crate::irq::init(info.path);
    crate::serial_input::enable_input();
    console_line!(
        "cpus: {} online of {} offered{} (online {}, isolated {}{})",
        smp.online,
        smp.offered,
        if smp.failed > 0 { alloc::format!(", {} failed to start", smp.failed) } else { alloc::string::String::new() },
        thread::format_cpu_mask(thread::online_mask(), u64::MAX),
        if isolated == 0 { alloc::string::String::from("none") } else { thread::format_cpu_mask(isolated, u64::MAX) },
        if polling == 0 { "" } else { ", polling when idle" }
    );
    if let Err(error) = thread::start_ksoftirqd(0) {
        console_line!("rtedge: boot failed: cannot start ksoftirqd/0: {error}");
        shutdown::shutdown_with(ExitCode::BootFailure);
    }
    smp::start_per_cpu_threads();
    if let Err(error) = crate::workqueue::init() {
        console_line!("rtedge: boot failed: cannot start the events workqueue: {error}");
        shutdown::shutdown_with(ExitCode::BootFailure);
    }
    crate::rtpool::init();
    if let Err(error) = console::start_drain() {
        console_line!("rtedge: no klogd ({error}): RT, softirq and IRQ log lines stay synchronous");
    }
    crate::power::init(info);
    // SAFETY: defined by the `main!` macro in the binary as a plain static.
    let services: &[fn()] = unsafe { __RTEDGE_SERVICES };
    for service in services {
        service();
    }
    console_line!("rtedge {} ready in {} us", env!("CARGO_PKG_VERSION"), time::now_ns() / 1000);
    if cmdline::get(line, "boot_only").is_some_and(|v| cmdline::parse_bool(v).unwrap_or(false)) {
        shutdown::shutdown_with(ExitCode::Success);
    }
    let main = thread::Builder::new("main").stack_size(256 * 1024).spawn(|| {
        // SAFETY: `__rtedge_main` is the application's entry (see `main!`).
        let code = unsafe { __rtedge_main() };
        shutdown::shutdown(code)
    });
    if let Err(error) = main {
        console_line!("rtedge: boot failed: cannot start the main thread: {error}");
        shutdown::shutdown_with(ExitCode::BootFailure);
    }
    thread::idle_loop()
}

fn banner(info: &BootInfo, memory: &memory::MemoryReport, calibration: calibrate::Calibration, apic_mode: apic::Mode) {
    let mut brand = [0u8; 48];
    let model = cpu::brand_string(&mut brand);
    let layout = rtedge_arch::paging::image_layout();
    console_line!("rtedge {} booted via {} on '{}'", env!("CARGO_PKG_VERSION"), info.path.name(), model);
    console_line!(
        "memory: {} MiB usable, heap {} MiB in {} range{}, image {:#x}..{:#x} ({} KiB), {} page-table frames",
        memory.usable_bytes >> 20,
        memory.heap_bytes >> 20,
        memory.heap_ranges,
        if memory.heap_ranges == 1 { "" } else { "s" },
        layout.start,
        layout.end,
        (layout.end - layout.start) >> 10,
        memory.page_table_frames
    );
    if let Some((start, end)) = memory.reserved_region {
        console_line!("memory: reserved raw region {start:#x}..{end:#x} ({} KiB)", (end - start) >> 10);
    }
    let timer = match apic::timer_mode() {
        apic::TimerMode::TscDeadline => "TSC-deadline",
        apic::TimerMode::OneShot => "one-shot",
    };
    console_line!(
        "clock: TSC {}.{:03} MHz from {}; local APIC {} with {} timer (tickless), HZ={}",
        calibration.tsc_hz / 1_000_000,
        (calibration.tsc_hz / 1000) % 1000,
        calibration.source.name(),
        match apic_mode {
            apic::Mode::X2Apic => "x2APIC",
            apic::Mode::XApic => "xAPIC",
        },
        timer,
        time::HZ
    );
    if info.command_line_truncated {
        log::warn!("command line longer than 4096 bytes; the rest was dropped");
    }
    // The control-plane token stays secret: show only that it is set.
    console_line!("command line: '{}'", rtedge_engine::value::redact_command_line(info.command_line()));
}
