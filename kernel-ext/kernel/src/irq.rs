//! Device interrupt lines: the I/O APICs (from ACPI's MADT, or the standard
//! one under uhyve), a vector per attached line, and handlers that an
//! application may attach to a line and detach again (RTLinux's
//! `rtlinux_sigaction`: detaching restores the kernel's own handling).
//!
//! Device interrupts are delivered to the first online CPU that is not
//! isolated (`isolcpus=`), so an isolated RT CPU sees only its own timer.

use alloc::vec::Vec;

use rtedge_arch::boot::BootPath;
use rtedge_arch::ioapic::IoApic;
pub use rtedge_arch::ioapic::{Polarity, Trigger};

use crate::sync::IrqSpinLock;
use crate::vectors::{FIRST_DEVICE, LAST_DEVICE};
use crate::{cpu_local, memory, thread, trap};

struct Line {
    gsi: u32,
    vector: u8,
    name: &'static str,
    trigger: Trigger,
    polarity: Polarity,
    /// The kernel's own handler and name, restored when an application
    /// handler detaches.
    kernel_handler: Option<fn(u8)>,
    kernel_name: &'static str,
    attached_by_app: bool,
}

static CHIPS: IrqSpinLock<Vec<IoApic>> = IrqSpinLock::new(Vec::new());
static LINES: IrqSpinLock<Vec<Line>> = IrqSpinLock::new(Vec::new());
/// Device vectors in use, one bit per vector number. A vector returns to
/// the pool when its line is detached, so attach/detach cycles never run
/// out (`irq::detach_returns_the_vector`).
static USED_VECTORS: IrqSpinLock<[u64; 4]> = IrqSpinLock::new([0; 4]);

/// Takes the lowest free device vector.
fn allocate_vector() -> Option<u8> {
    let mut used = USED_VECTORS.lock();
    let vector = (FIRST_DEVICE..=LAST_DEVICE).find(|&vector| used[usize::from(vector / 64)] & (1 << (vector % 64)) == 0)?;
    used[usize::from(vector / 64)] |= 1 << (vector % 64);
    Some(vector)
}

/// Returns `vector` to the pool.
fn release_vector(vector: u8) {
    USED_VECTORS.lock()[usize::from(vector / 64)] &= !(1 << (vector % 64));
}

/// Device vectors in use (for tests and views).
pub fn vectors_in_use() -> u32 {
    USED_VECTORS.lock().iter().map(|word| word.count_ones()).sum()
}

/// Errors of interrupt line management.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqError {
    /// No I/O APIC serves the line.
    NoController,
    /// No free vector.
    NoVector,
    /// The line has a handler already.
    Busy,
    /// The line has no handler.
    NotAttached,
}

impl core::fmt::Display for IrqError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            IrqError::NoController => "no I/O APIC serves this line",
            IrqError::NoVector => "no free interrupt vector",
            IrqError::Busy => "the line already has a handler",
            IrqError::NotAttached => "the line has no handler",
        })
    }
}

/// Finds and maps the I/O APICs, masking every line. Boot, after SMP.
pub fn init(path: BootPath) {
    let controllers: Vec<(u64, u32)> = match crate::firmware::madt() {
        Some(madt) if !madt.io_apics().is_empty() => madt.io_apics().iter().map(|chip| (chip.address, chip.gsi_base)).collect(),
        // uhyve has no ACPI; KVM's in-kernel I/O APIC sits at the standard address.
        _ if path == BootPath::Hermit => alloc::vec![(0xfec0_0000, 0)],
        _ => Vec::new(),
    };
    let mut chips = CHIPS.lock();
    for (address, gsi_base) in controllers {
        if let Err(error) = memory::map_device(address, 4096) {
            log::warn!("irq: cannot map the I/O APIC at {address:#x}: {error}");
            continue;
        }
        // SAFETY: the window is mapped uncached and each chip gets one driver.
        let chip = unsafe { IoApic::new(address, gsi_base) };
        chip.mask_all();
        log::debug!("irq: I/O APIC at {address:#x}, GSIs {}..{}", gsi_base, gsi_base + chip.lines());
        chips.push(chip);
    }
}

/// Number of I/O APICs found.
pub fn controllers() -> usize {
    CHIPS.lock().len()
}

/// The APIC ID of the CPU that takes device interrupts.
fn target_apic_id() -> u32 {
    let candidates = thread::online_mask() & !thread::isolated_mask();
    let cpu = if candidates != 0 { candidates.trailing_zeros() } else { 0 };
    cpu_local::get(cpu as usize).map_or(0, |local| local.apic_id())
}

/// The GSI, trigger and polarity of ISA IRQ `irq` (MADT overrides applied).
pub fn isa_line(irq: u8) -> (u32, Trigger, Polarity) {
    let (gsi, flags) = crate::firmware::madt().map_or((u32::from(irq), 0), |madt| madt.isa_irq(irq));
    let polarity = if flags & 0b11 == 0b11 { Polarity::Low } else { Polarity::High };
    let trigger = if (flags >> 2) & 0b11 == 0b11 { Trigger::Level } else { Trigger::Edge };
    (gsi, trigger, polarity)
}

/// Attaches the kernel's `handler` to line `gsi` and unmasks it. Returns
/// the vector. The handler runs as a top half: acknowledge, record, raise
/// a softirq or wake a thread; never allocate or block.
pub fn attach(gsi: u32, name: &'static str, handler: fn(u8), trigger: Trigger, polarity: Polarity) -> Result<u8, IrqError> {
    attach_inner(gsi, name, handler, trigger, polarity, false)
}

fn attach_inner(gsi: u32, name: &'static str, handler: fn(u8), trigger: Trigger, polarity: Polarity, by_app: bool) -> Result<u8, IrqError> {
    let mut lines = LINES.lock();
    if let Some(line) = lines.iter_mut().find(|line| line.gsi == gsi) {
        if by_app && !line.attached_by_app {
            // The application takes over a kernel line; remember the kernel's handler.
            trap::unregister(line.vector);
            trap::register(line.vector, name, handler).map_err(|_| IrqError::Busy)?;
            line.attached_by_app = true;
            line.name = name;
            return Ok(line.vector);
        }
        return Err(IrqError::Busy);
    }
    let chips = CHIPS.lock();
    let chip = chips.iter().find(|chip| chip.serves(gsi)).ok_or(IrqError::NoController)?;
    let vector = allocate_vector().ok_or(IrqError::NoVector)?;
    if trap::register(vector, name, handler).is_err() {
        release_vector(vector);
        return Err(IrqError::Busy);
    }
    chip.route(gsi, vector, target_apic_id(), trigger, polarity);
    lines.push(Line {
        gsi,
        vector,
        name,
        trigger,
        polarity,
        kernel_handler: if by_app { None } else { Some(handler) },
        kernel_name: name,
        attached_by_app: by_app,
    });
    Ok(vector)
}

/// Attaches an application handler to line `gsi` (rtlinux_sigaction): it
/// replaces the kernel's handler of that line, if any, until
/// [`detach_app`].
pub fn attach_app(gsi: u32, name: &'static str, handler: fn(u8), trigger: Trigger, polarity: Polarity) -> Result<u8, IrqError> {
    attach_inner(gsi, name, handler, trigger, polarity, true)
}

/// Detaches the application's handler of `gsi`: the kernel's own handler
/// (if there was one) is restored, otherwise the line is masked and its
/// vector returns to the pool.
pub fn detach_app(gsi: u32) -> Result<(), IrqError> {
    let mut lines = LINES.lock();
    let position = lines.iter().position(|line| line.gsi == gsi && line.attached_by_app).ok_or(IrqError::NotAttached)?;
    let line = &mut lines[position];
    trap::unregister(line.vector);
    match line.kernel_handler {
        Some(handler) => {
            let kernel_name = line.kernel_name;
            let _ = trap::register(line.vector, kernel_name, handler);
            line.attached_by_app = false;
            line.name = kernel_name;
        }
        None => {
            if let Some(chip) = CHIPS.lock().iter().find(|chip| chip.serves(gsi)) {
                chip.set_masked(gsi, true);
            }
            let vector = line.vector;
            lines.remove(position);
            release_vector(vector);
        }
    }
    Ok(())
}

/// Masks or unmasks a line.
pub fn set_masked(gsi: u32, masked: bool) {
    if let Some(chip) = CHIPS.lock().iter().find(|chip| chip.serves(gsi)) {
        chip.set_masked(gsi, masked);
    }
}

/// Re-routes every attached line to the current device CPU (after
/// isolation changes).
pub fn reroute_all() {
    let target = target_apic_id();
    let lines = LINES.lock();
    let chips = CHIPS.lock();
    for line in lines.iter() {
        if let Some(chip) = chips.iter().find(|chip| chip.serves(line.gsi)) {
            chip.route(line.gsi, line.vector, target, line.trigger, line.polarity);
        }
    }
}

/// Attached lines: (gsi, vector, name, by application).
pub fn lines() -> Vec<(u32, u8, &'static str, bool)> {
    LINES.lock().iter().map(|line| (line.gsi, line.vector, line.name, line.attached_by_app)).collect()
}
