//! The boot console: a 16550 UART under QEMU, uhyve's console hypercall
//! under uhyve. Output only here; the kernel adds locking and line framing.

use crate::cpu;

/// COM1.
const COM1: u16 = 0x3f8;
/// uhyve interface v1: write one byte (the low byte of a 32-bit OUT).
const UHYVE_PORT_UART: u16 = 0x800;
/// uhyve interface v1: write a buffer (32-bit OUT of a parameter block address).
const UHYVE_PORT_SERIAL_BUFFER: u16 = 0x880;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Console {
    Serial,
    Uhyve,
}

static mut CONSOLE: Console = Console::Serial;

/// Chooses and initialises the console for the boot path.
///
/// # Safety
/// Call once on the boot CPU before any other CPU or interrupt uses the console.
pub unsafe fn init(kind: Console) {
    // SAFETY: single-threaded boot, per the caller.
    unsafe { CONSOLE = kind };
    if kind == Console::Serial {
        // SAFETY: COM1 belongs to the console.
        unsafe {
            cpu::outb(COM1 + 1, 0x00); // no interrupts (the receive IRQ is enabled by its user)
            cpu::outb(COM1 + 3, 0x80); // DLAB
            cpu::outb(COM1, 0x01); // 115200 baud
            cpu::outb(COM1 + 1, 0x00);
            cpu::outb(COM1 + 3, 0x03); // 8N1
            cpu::outb(COM1 + 2, 0xc7); // FIFO on, cleared, 14-byte threshold
            cpu::outb(COM1 + 4, 0x0b); // DTR, RTS, OUT2 (OUT2 gates the IRQ line)
        }
    }
}

/// The console in use.
pub fn kind() -> Console {
    // SAFETY: written once during boot before any reader exists.
    unsafe { CONSOLE }
}

#[repr(C)]
struct UhyveBuffer {
    address: u64,
    len: u64,
}

static mut UHYVE_BUFFER_BLOCK: UhyveBuffer = UhyveBuffer { address: 0, len: 0 };

/// Writes bytes to the console. Callers serialise (the kernel's console lock).
pub fn write(bytes: &[u8]) {
    match kind() {
        Console::Serial => {
            // One status read per 16 bytes: THRE set means the 16-byte FIFO
            // is empty. Under a hypervisor every port access is an exit, so
            // this halves the cost of console output.
            for chunk in bytes.chunks(16) {
                // SAFETY: COM1 belongs to the console; the caller serialises.
                unsafe {
                    let mut spins = 0u32;
                    // Wait for the transmitter, but never forever.
                    while cpu::inb(COM1 + 5) & 0x20 == 0 && spins < 100_000 {
                        spins += 1;
                        cpu::pause();
                    }
                    for &byte in chunk {
                        cpu::outb(COM1, byte);
                    }
                }
            }
        }
        Console::Uhyve => {
            // The hypervisor reads guest-physical memory: the buffer may live
            // on a stack in the (non-identity) stack window, so each page's
            // part is translated; the parameter block is a static in the
            // identity-mapped image, its address below 4 GiB (interface v1).
            let space = crate::paging::AddressSpace::active();
            let mut rest = bytes;
            while !rest.is_empty() {
                let address = rest.as_ptr() as u64;
                let in_page = (crate::paging::PAGE_SIZE - (address % crate::paging::PAGE_SIZE)) as usize;
                let (chunk, tail) = rest.split_at(in_page.min(rest.len()));
                match space.translate(address) {
                    Some(translation) if translation.physical >> 32 == 0 => {
                        // SAFETY: the caller serialises console output, so
                        // the static block has one user at a time.
                        unsafe {
                            let block = &raw mut UHYVE_BUFFER_BLOCK;
                            core::ptr::write_volatile(block, UhyveBuffer { address: translation.physical, len: chunk.len() as u64 });
                            cpu::outl(UHYVE_PORT_SERIAL_BUFFER, block as u64 as u32);
                        }
                    }
                    _ => {
                        for &byte in chunk {
                            // SAFETY: the uhyve UART hypercall takes the byte in the low bits.
                            unsafe { cpu::outl(UHYVE_PORT_UART, u32::from(byte)) };
                        }
                    }
                }
                rest = tail;
            }
        }
    }
}

/// Reads one received byte from the UART if one is waiting (QEMU only).
pub fn serial_read_byte() -> Option<u8> {
    if kind() != Console::Serial {
        return None;
    }
    // SAFETY: COM1 belongs to the console.
    unsafe { (cpu::inb(COM1 + 5) & 1 != 0).then(|| cpu::inb(COM1)) }
}

/// Enables or disables the UART's receive-data interrupt (IRQ 4).
pub fn serial_receive_interrupt(enable: bool) {
    if kind() == Console::Serial {
        // SAFETY: COM1 belongs to the console; IER bit 0 is receive-data.
        unsafe { cpu::outb(COM1 + 1, u8::from(enable)) };
    }
}
