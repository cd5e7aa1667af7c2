//! Power like a real machine: ACPI fixed hardware found through the FADT,
//! the power button, an orderly shutdown, S5 power-off and reset.
//!
//! - q35 (and any PC with ACPI): the machine is switched to ACPI mode
//!   (SMI_CMD ← ACPI_ENABLE when SCI_EN is clear), the power button's PM1
//!   event is enabled and the SCI is routed through the I/O APIC like any
//!   other line. General-purpose events stay disabled: nothing here would
//!   run their AML handlers, and an unhandled level-triggered SCI would storm.
//! - microvm (hardware-reduced ACPI): the generic event device's interrupt,
//!   its event selector read and cleared by the handler; sleep through the
//!   FADT's sleep control register.
//!
//! The button's top half only acknowledges the event and queues work; the
//! work item runs [`orderly_shutdown`] in process context: modules' `exit`,
//! the control plane's goodbye to subscribers, the rt-pool freed, logs
//! written, then S5. `SHUTDOWN` takes the same path; it and the
//! application's exit end in S5 when the test runner's `isa-debug-exit`
//! device is absent. `REBOOT` (the plane registers it when the FADT has
//! a reset register; [`schedule_reboot`]) takes it too and ends in the ACPI reset register.
//!
//! Invariant: [`STATE`] is written once, at boot on the boot CPU before the
//! SCI is unmasked, and only read afterwards.

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use rtedge_arch::boot::{BootInfo, BootPath};
use rtedge_arch::{acpi as tables, cpu};
use rtedge_engine::acpi::{self, AddressSpace, Fadt, GenericAddress, GenericEventDevice};

use crate::hook::Hook;
use crate::irq::{self, Polarity, Trigger};
use crate::workqueue::{self, FnDelayedWork, FnWork};
use crate::{console_line, shutdown, thread, time};

/// What boot found.
#[derive(Clone, Copy, Debug)]
struct Power {
    fadt: Fadt,
    /// SLP_TYPa and SLP_TYPb of `\_S5`.
    s5: Option<(u8, u8)>,
    ged: Option<GenericEventDevice>,
    /// The SCI's (or the GED's) global system interrupt, once attached.
    event_gsi: Option<u32>,
}

static mut STATE: Option<Power> = None;
/// 0: not yet, 1: `STATE` is final.
static READY: AtomicU8 = AtomicU8::new(0);
/// Set by the first power-button press; later presses are ignored.
static PRESSED: AtomicBool = AtomicBool::new(false);

static BUTTON_WORK: FnWork = FnWork::new(button_work, 0);
/// `REBOOT` runs this a moment after its `+OK` left.
static REBOOT_WORK: FnDelayedWork = FnDelayedWork::new(reboot_work, 0);
/// Jiffies between `REBOOT`'s reply and the orderly reboot.
const REBOOT_DELAY_JIFFIES: u64 = 100;

/// Tells the subscribers that the machine goes: called with the JSON
/// goodbye message, returns how many it reached. Set by the plane.
static GOODBYE: Hook<fn(&str) -> usize> = Hook::new();

/// Sets who says goodbye at an orderly shutdown or reboot.
pub fn set_goodbye(announce: fn(&str) -> usize) {
    GOODBYE.set(announce);
}

/// Whether the machine has an ACPI reset register (what `REBOOT` needs).
pub fn can_reset() -> bool {
    state().and_then(|power| power.fadt.reset).is_some()
}

/// Why [`schedule_reboot`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebootError {
    /// The FADT names no reset register.
    NoResetRegister,
    /// The events workqueue could not take the reboot.
    NoWorkqueue,
}

impl core::fmt::Display for RebootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RebootError::NoResetRegister => "this machine has no ACPI reset register",
            RebootError::NoWorkqueue => "no workqueue to run the reboot",
        })
    }
}

/// An orderly shutdown that ends in the ACPI reset register, started a
/// moment from now (so that `REBOOT`'s reply leaves first). Thread context.
pub fn schedule_reboot() -> Result<(), RebootError> {
    if !can_reset() {
        return Err(RebootError::NoResetRegister);
    }
    match workqueue::schedule_delayed_work(&REBOOT_WORK, REBOOT_DELAY_JIFFIES) {
        Ok(_) => Ok(()),
        Err(_) => Err(RebootError::NoWorkqueue),
    }
}

fn reboot_work(_work: &'static FnDelayedWork) {
    orderly_stop("REBOOT", 0, Then::Reset)
}

fn state() -> Option<&'static Power> {
    if READY.load(Ordering::Acquire) == 0 {
        return None;
    }
    // SAFETY: written once before READY was set (module invariant).
    unsafe { (*(&raw const STATE)).as_ref() }
}

/// Identity maps `[address, +len)` read-only where nothing is mapped yet
/// (firmware tables outside the kernel's RAM mapping); pages already
/// mapped keep their mapping. Installed as the ACPI reader's mapper.
pub fn map_firmware_table(address: u64, len: u64) {
    use rtedge_arch::paging::Access;
    const PAGE: u64 = 4096;
    let start = address & !(PAGE - 1);
    let end = address.saturating_add(len.max(1)).next_multiple_of(PAGE);
    let mut page = start;
    while page < end {
        let unmapped = crate::memory::kernel_space().is_some_and(|space| space.translate(page).is_none());
        if unmapped && let Err(error) = crate::memory::map_identity(page, PAGE, Access::ReadOnly) {
            log::warn!("acpi: cannot map firmware memory at {page:#x}: {error}");
        }
        page += PAGE;
    }
}

/// Reads the FADT and DSDT, enables ACPI mode and arms the power button.
/// Boot, after the I/O APICs and the `events` workqueue are up.
pub fn init(info: &BootInfo) {
    let _ = shutdown::test_exit_device_present();
    shutdown::set_power_off(&POWER_OFF);
    if info.path == BootPath::Hermit {
        log::debug!("acpi: uhyve offers no ACPI; power through the hypervisor's exit");
        return;
    }
    // SAFETY: the firmware's ACPI tables are in identity-mapped RAM (the same
    // precondition the MADT reader relies on); the BIOS area is scanned only
    // when the loader gave no RSDP.
    let Some(fadt) = (unsafe { tables::find_table(info.rsdp, b"FACP") }).and_then(Fadt::parse) else {
        log::info!("acpi: no FADT; power-off through the exit device only");
        return;
    };
    // SAFETY: as above; the DSDT sits with the other tables.
    let dsdt = unsafe { tables::table_at(fadt.dsdt) };
    let s5 = dsdt.and_then(acpi::s5_sleep_types);
    let ged = if fadt.is_hardware_reduced() { dsdt.and_then(acpi::generic_event_device) } else { None };
    let mut power = Power { fadt, s5, ged, event_gsi: None };
    for register in [fadt.sleep_control, fadt.reset.map(|(register, _)| register)].into_iter().flatten() {
        if register.space == AddressSpace::Memory
            && let Err(error) = crate::memory::map_device(register.address, 8)
        {
            log::warn!("acpi: cannot map the register at {:#x}: {error}", register.address);
        }
    }
    if fadt.is_hardware_reduced() {
        power.event_gsi = arm_generic_event_device(ged);
    } else {
        enable_acpi_mode(&fadt);
        power.event_gsi = arm_power_button(&fadt);
    }
    console_line!(
        "acpi: {}, power button {}, S5 {}, reset {}",
        if fadt.is_hardware_reduced() { "hardware-reduced" } else { "PM1 fixed hardware" },
        match power.event_gsi {
            Some(gsi) if fadt.is_hardware_reduced() => alloc::format!("on GED GSI {gsi}"),
            Some(gsi) => alloc::format!("on SCI GSI {gsi}"),
            None => alloc::string::String::from("not armed"),
        },
        match s5 {
            Some((a, _)) => alloc::format!("SLP_TYP {a}"),
            None => alloc::string::String::from("unknown (no \\_S5)"),
        },
        match fadt.reset {
            Some((register, value)) => alloc::format!("{value:#x} to {:#x}", register.address),
            None => alloc::string::String::from("none"),
        }
    );
    // SAFETY: boot CPU, before READY is set: no reader yet.
    unsafe { *(&raw mut STATE) = Some(power) };
    READY.store(1, Ordering::Release);
}

/// SMI_CMD ← ACPI_ENABLE when the firmware left the machine in legacy
/// mode, then waits (bounded) for SCI_EN.
fn enable_acpi_mode(fadt: &Fadt) {
    let Ok(control) = u16::try_from(fadt.pm1a_control) else { return };
    // SAFETY: PM1a_CNT is the FADT's fixed-hardware port; reading has no side effect.
    let sci_enabled = unsafe { cpu::inw(control) } & acpi::PM1_CONTROL_SCI_ENABLE != 0;
    if sci_enabled || fadt.smi_command == 0 || fadt.acpi_enable == 0 {
        return;
    }
    let Ok(smi) = u16::try_from(fadt.smi_command) else { return };
    // SAFETY: the FADT names this port and value as the switch to ACPI mode.
    unsafe { cpu::outb(smi, fadt.acpi_enable) };
    let deadline = time::now_ns() + 300_000_000;
    // SAFETY: as above.
    while unsafe { cpu::inw(control) } & acpi::PM1_CONTROL_SCI_ENABLE == 0 {
        if time::now_ns() > deadline {
            log::warn!("acpi: SCI_EN still clear 300 ms after ACPI_ENABLE; the power button may not work");
            return;
        }
        cpu::pause();
    }
    log::info!("acpi: switched to ACPI mode (SMI_CMD {smi:#x} <- {:#x})", fadt.acpi_enable);
}

/// Disables every general-purpose event, enables only the power button's
/// PM1 event, and routes the SCI. Returns its GSI.
fn arm_power_button(fadt: &Fadt) -> Option<u32> {
    for (block, length) in [(fadt.gpe0_block, fadt.gpe0_block_length), (fadt.gpe1_block, fadt.gpe1_block_length)] {
        let Ok(block) = u16::try_from(block) else { continue };
        if block == 0 || length < 2 {
            continue;
        }
        let half = u16::from(length / 2);
        for offset in 0..half {
            // SAFETY: the GPE block's enable half, then its status half
            // (write-one-to-clear), as the FADT places them.
            unsafe {
                cpu::outb(block + half + offset, 0);
                cpu::outb(block + offset, 0xff);
            }
        }
    }
    let status = u16::try_from(fadt.pm1a_event).ok().filter(|&port| port != 0)?;
    let enable = u16::try_from(fadt.pm1a_enable()?).ok()?;
    // SAFETY: PM1a status (write-one-to-clear) and enable registers.
    unsafe {
        cpu::outw(status, 0xffff);
        cpu::outw(enable, acpi::PM1_POWER_BUTTON);
    }
    // The SCI is a shareable, level-triggered, active-low ISA interrupt
    // unless the MADT overrides it (QEMU: level, active high).
    let irq = u8::try_from(fadt.sci_interrupt).ok()?;
    let (gsi, flags) = crate::firmware::madt().map_or((u32::from(irq), 0), |madt| madt.isa_irq(irq));
    let polarity = if flags & 0b11 == 0b01 { Polarity::High } else { Polarity::Low };
    let trigger = if (flags >> 2) & 0b11 == 0b01 { Trigger::Edge } else { Trigger::Level };
    match irq::attach(gsi, "acpi-sci", sci_interrupt, trigger, polarity) {
        Ok(_) => Some(gsi),
        Err(error) => {
            log::warn!("acpi: cannot attach the SCI (GSI {gsi}): {error}");
            None
        }
    }
}

/// Maps the GED's event selector and attaches its interrupt.
fn arm_generic_event_device(ged: Option<GenericEventDevice>) -> Option<u32> {
    let Some(ged) = ged else {
        log::info!("acpi: hardware-reduced machine without a generic event device; no power button");
        return None;
    };
    if let Err(error) = crate::memory::map_device(ged.event_register, 4) {
        log::warn!("acpi: cannot map the GED at {:#x}: {error}", ged.event_register);
        return None;
    }
    let trigger = if ged.edge { Trigger::Edge } else { Trigger::Level };
    let polarity = if ged.active_high { Polarity::High } else { Polarity::Low };
    match irq::attach(ged.interrupt, "acpi-ged", ged_interrupt, trigger, polarity) {
        Ok(_) => Some(ged.interrupt),
        Err(error) => {
            log::warn!("acpi: cannot attach the GED (GSI {}): {error}", ged.interrupt);
            None
        }
    }
}

/// SCI top half: acknowledge the power button's status bit, queue the work.
fn sci_interrupt(_vector: u8) {
    let Some(power) = state() else { return };
    let Ok(status) = u16::try_from(power.fadt.pm1a_event) else { return };
    // SAFETY: PM1a status register; writing the bit back clears it.
    let pending = unsafe { cpu::inw(status) };
    if pending & acpi::PM1_POWER_BUTTON != 0 {
        // SAFETY: as above.
        unsafe { cpu::outw(status, acpi::PM1_POWER_BUTTON) };
        button_pressed();
    }
}

/// GED top half: reading the event selector returns and clears the events.
fn ged_interrupt(_vector: u8) {
    let Some(ged) = state().and_then(|power| power.ged) else { return };
    // SAFETY: the selector was mapped at boot (device memory); a 32-bit read
    // is its access width.
    let events = unsafe { core::ptr::read_volatile(ged.event_register as *const u32) };
    if events & acpi::GED_POWER_DOWN_EVENT != 0 {
        button_pressed();
    }
}

fn button_pressed() {
    if PRESSED.swap(true, Ordering::AcqRel) {
        return;
    }
    crate::events::emit("power", "button", &[], "", "");
    if !workqueue::schedule_work(&BUTTON_WORK) {
        // No workqueue (too early): nothing orderly is possible yet.
        power_off();
    }
}

fn button_work(_work: &'static FnWork) {
    orderly_shutdown("power button", 0)
}

/// How an orderly stop ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    PowerOff,
    Reset,
}

/// Whether the power button has been pressed.
pub fn button_was_pressed() -> bool {
    PRESSED.load(Ordering::Acquire)
}

/// The orderly shutdown (process context): the control plane says goodbye
/// to subscribers, modules' `exit` run, the rt-pool is freed, the last log
/// lines are written, then [`crate::shutdown::shutdown`] ends in S5 (or
/// the test exit device, under the test runner).
pub fn orderly_shutdown(reason: &str, code: u8) -> ! {
    orderly_stop(reason, code, Then::PowerOff)
}

fn orderly_stop(reason: &str, code: u8, then: Then) -> ! {
    log::info!("power: {reason}: orderly {}", if then == Then::Reset { "reboot" } else { "shutdown" });
    let mut goodbye = alloc::string::String::new();
    goodbye.push_str("{\"kind\":\"shutdown\",\"reason\":\"");
    goodbye.extend(reason.chars().filter(|c| *c != '"' && *c != '\\'));
    goodbye.push_str("\"}");
    if let Some(announce) = GOODBYE.get() {
        let told = announce(&goodbye);
        if told > 0 {
            // Let NET_RX send it before the machine goes.
            let _ = thread::sleep_ns(50_000_000);
        }
        log::info!("control plane: goodbye sent to {told} subscriber{}", if told == 1 { "" } else { "s" });
    }
    crate::modules::unload_all();
    let freed = crate::rtpool::free_all();
    if freed > 0 {
        log::info!("rtpool: {freed} buffers freed at shutdown");
    }
    match then {
        Then::PowerOff => crate::shutdown::shutdown(code),
        Then::Reset => reboot(),
    }
}

/// Enters S5 (soft off) through ACPI; returns only if that is impossible
/// (no FADT, no `\_S5`) or did not take.
/// Registered with `shutdown` at `init`: the ACPI S5 power-off.
static POWER_OFF: fn() = acpi_power_off;

pub fn acpi_power_off() {
    let Some(power) = state() else { return };
    let Some((type_a, type_b)) = power.s5 else { return };
    cpu::interrupts_disable();
    if let Some(control) = power.fadt.sleep_control {
        write_register(control, u64::from(acpi::sleep_control_value(type_a)));
    } else {
        for (block, sleep_type) in [(power.fadt.pm1a_control, type_a), (power.fadt.pm1b_control, type_b)] {
            let Ok(port) = u16::try_from(block) else { continue };
            if port == 0 {
                continue;
            }
            // SAFETY: the PM1 control port from the FADT; SLP_EN with the
            // S5 type powers the machine off.
            unsafe {
                let current = cpu::inw(port);
                cpu::outw(port, acpi::pm1_sleep_value(current, sleep_type));
            }
        }
    }
    // The write takes effect at once on QEMU; real chipsets may take a moment.
    for _ in 0..1_000_000 {
        cpu::pause();
    }
}

/// Powers off: ACPI S5, else the hypervisor's exit; never returns.
pub fn power_off() -> ! {
    acpi_power_off();
    rtedge_arch::exit::exit(0)
}

/// Resets through the FADT's reset register; returns if there is none or
/// the write did not take.
pub fn acpi_reset() {
    let Some((register, value)) = state().and_then(|power| power.fadt.reset) else { return };
    cpu::interrupts_disable();
    write_register(register, u64::from(value));
    for _ in 0..1_000_000 {
        cpu::pause();
    }
}

/// Reboots: logs, then the ACPI reset register; without one, stops as
/// [`power_off`] does.
pub fn reboot() -> ! {
    console_line!("rtedge: reboot (ACPI reset register)");
    acpi_reset();
    console_line!("rtedge: the reset register did not reset; powering off");
    power_off()
}

fn write_register(register: GenericAddress, value: u64) {
    match register.space {
        AddressSpace::Io => {
            let Ok(port) = u16::try_from(register.address) else { return };
            // SAFETY: an ACPI fixed-hardware register the FADT names, written
            // with the width it declares.
            unsafe {
                match register.width_bytes() {
                    1 => cpu::outb(port, value as u8),
                    2 => cpu::outw(port, value as u16),
                    _ => cpu::outl(port, value as u32),
                }
            }
        }
        AddressSpace::Memory => {
            // SAFETY: mapped as device memory at boot (`init`); the width is
            // the register's own.
            unsafe {
                match register.width_bytes() {
                    1 => core::ptr::write_volatile(register.address as *mut u8, value as u8),
                    2 => core::ptr::write_volatile(register.address as *mut u16, value as u16),
                    4 => core::ptr::write_volatile(register.address as *mut u32, value as u32),
                    _ => core::ptr::write_volatile(register.address as *mut u64, value),
                }
            }
        }
        AddressSpace::Other(_) => {}
    }
}
