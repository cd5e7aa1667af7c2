//! Program 5: an application handler on a hardware interrupt (the seeds'
//! `rtlinux_sigaction`).
//!
//! The module attaches its own handler to the serial console's receive
//! interrupt (`irq::attach_app`): every key typed on the console raises it,
//! and the handler drains the UART (or the line would fire again) and
//! counts interrupts and bytes in shared statics, which the control plane
//! reads. A jiffies timer reports the counts on the console once a second
//! when they changed. Unloading deletes the timer (`delete_sync`) and
//! detaches the handler, which gives the line back to the kernel's own
//! console handler.
//!
//! Under uhyve the console is not a UART and there is no receive line: the
//! module loads, says so, and attaches nothing (`serial.attached` false).
//!
//! Observe: `GET serial.irqs`, `GET serial.bytes`, `GET serial.attached`,
//! `IRQS` (the line's vector is named `serial-irq (app)` while attached).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use core::pin::Pin;
use core::sync::atomic::{AtomicI64, Ordering};

use rtedge_kernel::modules::Module;
use rtedge_kernel::shared::{Access, SharedBool, SharedInt, SharedValue};
use rtedge_kernel::sync::IrqSpinLock;
use rtedge_kernel::timer::Timer;
use rtedge_kernel::{irq, serial_input, time};

const HANDLER_NAME: &str = "serial-irq (app)";
/// The reporting timer's period, in jiffies.
const REPORT_JIFFIES: u64 = time::HZ;
/// The serial console's ISA IRQ (COM1).
const COM1_IRQ: u8 = 4;

static IRQS: SharedInt = SharedInt::new("serial.irqs", Access::ReadOnly, 0);
static BYTES: SharedInt = SharedInt::new("serial.bytes", Access::ReadOnly, 0);
static ATTACHED: SharedBool = SharedBool::new("serial.attached", Access::ReadOnly, false);
static STATICS: [&dyn SharedValue; 3] = [&IRQS, &BYTES, &ATTACHED];

/// The line the handler is attached to.
static LINE: IrqSpinLock<Option<u32>> = IrqSpinLock::new(None);
/// The reporting timer; boxed so that unloading drops it, which deletes
/// it synchronously and unregisters it from the timer base.
static REPORT_TIMER: IrqSpinLock<Option<Pin<Box<Timer>>>> = IrqSpinLock::new(None);
static LAST_REPORTED: AtomicI64 = AtomicI64::new(0);

/// The hard-IRQ handler: drain the UART, count. Never allocates or blocks.
fn handler(_vector: u8) {
    let bytes = serial_input::drain_serial_input();
    IRQS.add(1);
    BYTES.add(bytes as i64);
}

/// The timer callback (TIMER softirq): report a change, re-arm.
fn report(_: usize) {
    let irqs = IRQS.load();
    if LAST_REPORTED.swap(irqs, Ordering::AcqRel) != irqs {
        log::info!("serial-irq: {irqs} interrupts, {} bytes seen by the application handler", BYTES.load());
        super::event("serial-irqs", &[("irqs", irqs), ("bytes", BYTES.load())], "", "");
    }
    if let Some(timer) = REPORT_TIMER.lock().as_ref() {
        let _ = timer.as_ref().modify_in_pinned(REPORT_JIFFIES);
    }
}

pub struct SerialIrqProgram;

pub static MODULE: SerialIrqProgram = SerialIrqProgram;

impl SerialIrqProgram {
    fn attach() -> Result<(), String> {
        let Some(gsi) = serial_input::serial_gsi() else {
            log::info!("serial-irq: the console has no UART receive interrupt here (uhyve): loaded, nothing attached");
            return Ok(());
        };
        let (_, trigger, polarity) = irq::isa_line(COM1_IRQ);
        let vector = irq::attach_app(gsi, HANDLER_NAME, handler, trigger, polarity)
            .map_err(|error| format!("cannot attach to GSI {gsi}: {error}"))?;
        *LINE.lock() = Some(gsi);
        ATTACHED.set(true);
        let timer = Box::pin(Timer::new("serial-irq-report", report, 0));
        timer.as_ref().modify_in_pinned(REPORT_JIFFIES).map_err(|error| format!("cannot arm the report timer: {error}"))?;
        *REPORT_TIMER.lock() = Some(timer);
        log::info!("serial-irq: application handler on GSI {gsi} (vector {vector:#x}): keys typed on the console count in serial.irqs");
        Ok(())
    }
}

impl Module for SerialIrqProgram {
    fn name(&self) -> &'static str {
        "serial-irq"
    }

    fn description(&self) -> &'static str {
        "application handler on the serial receive interrupt counts keys typed on the console"
    }

    fn init(&'static self) -> Result<(), String> {
        IRQS.set(0);
        BYTES.set(0);
        ATTACHED.set(false);
        LAST_REPORTED.store(0, Ordering::Release);
        super::register_statics(&STATICS);
        Self::attach().inspect_err(|_| self.exit())
    }

    fn exit(&'static self) {
        // Dropped outside the lock: the callback may be waiting for it.
        let timer = REPORT_TIMER.lock().take();
        drop(timer);
        let line = LINE.lock().take();
        if let Some(gsi) = line {
            match irq::detach_app(gsi) {
                Ok(()) => log::info!(
                    "serial-irq: detached after {} interrupts ({} bytes); the kernel's console handler is back",
                    IRQS.load(),
                    BYTES.load()
                ),
                Err(error) => log::warn!("serial-irq: detaching GSI {gsi}: {error}"),
            }
        }
        ATTACHED.set(false);
        super::unregister_statics(&STATICS);
    }
}
