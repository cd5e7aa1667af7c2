//! The serial console's receive side: the UART's receive interrupt (ISA
//! IRQ 4, routed through the I/O APIC) fills a small ring that readers
//! take bytes from. Kept apart from `console` (the output side, which every
//! floor writes to) because it needs interrupt routing, a floor above.

use core::sync::atomic::{AtomicU64, Ordering};

use rtedge_arch::console;

use crate::sync::IrqSpinLock;

/// Bytes received on the serial console and not yet read.
static INPUT: IrqSpinLock<InputRing> = IrqSpinLock::new(InputRing { bytes: [0; 256], head: 0, len: 0 });
static INPUT_TOTAL: AtomicU64 = AtomicU64::new(0);

struct InputRing {
    bytes: [u8; 256],
    head: usize,
    len: usize,
}

/// Reads every byte waiting in the UART into the input ring (oldest bytes
/// dropped when full). Returns how many arrived. Safe in a hard-IRQ handler.
pub fn drain_serial_input() -> usize {
    let mut count = 0;
    while let Some(byte) = console::serial_read_byte() {
        count += 1;
        let mut ring = INPUT.lock();
        if ring.len == ring.bytes.len() {
            ring.head = (ring.head + 1) % ring.bytes.len();
            ring.len -= 1;
        }
        let tail = (ring.head + ring.len) % ring.bytes.len();
        ring.bytes[tail] = byte;
        ring.len += 1;
        if count > 64 {
            break;
        }
    }
    INPUT_TOTAL.fetch_add(count as u64, Ordering::Relaxed);
    count
}

/// Takes the oldest received console byte.
pub fn read_input() -> Option<u8> {
    let mut ring = INPUT.lock();
    if ring.len == 0 {
        return None;
    }
    let byte = ring.bytes[ring.head];
    ring.head = (ring.head + 1) % ring.bytes.len();
    ring.len -= 1;
    Some(byte)
}

/// Console bytes received since boot.
pub fn input_total() -> u64 {
    INPUT_TOTAL.load(Ordering::Relaxed)
}

/// The kernel's own serial receive handler (ISA IRQ 4).
fn serial_interrupt(_: u8) {
    drain_serial_input();
}

/// The GSI of the serial console's receive interrupt, if the console is a UART.
pub fn serial_gsi() -> Option<u32> {
    (console::kind() == console::Console::Serial).then(|| crate::irq::isa_line(4).0)
}

/// Routes the UART's receive interrupt to the kernel's handler (QEMU only).
pub fn enable_input() {
    if console::kind() != console::Console::Serial || crate::irq::controllers() == 0 {
        return;
    }
    let (gsi, trigger, polarity) = crate::irq::isa_line(4);
    match crate::irq::attach(gsi, "serial-console", serial_interrupt, trigger, polarity) {
        Ok(_) => console::serial_receive_interrupt(true),
        Err(error) => log::warn!("console: no receive interrupt: {error}"),
    }
}
