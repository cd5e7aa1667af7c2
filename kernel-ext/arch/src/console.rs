//! The boot console: a 16550 UART under QEMU, uhyve's console hypercall
//! under uhyve. Output only here; the kernel adds locking and line framing.
//! [`write`] is sound from any context without the kernel's lock: its only
//! shared memory (uhyve's parameter block) is atomics behind its own
//! bounded try-lock, with byte-by-byte output as the fallback.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering, compiler_fence};

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

/// The console in use (a `Console` as a byte): written once at boot,
/// read by every writer.
static CONSOLE: AtomicU8 = AtomicU8::new(CONSOLE_SERIAL);
const CONSOLE_SERIAL: u8 = 0;
const CONSOLE_UHYVE: u8 = 1;

/// Chooses and initialises the console for the boot path.
///
/// # Safety
/// Call once on the boot CPU before any other CPU or interrupt uses the
/// console (it programs the UART, whose registers have no other owner).
pub unsafe fn init(kind: Console) {
    CONSOLE.store(if kind == Console::Uhyve { CONSOLE_UHYVE } else { CONSOLE_SERIAL }, Ordering::Release);
    if kind == Console::Serial {
        // SAFETY: COM1 belongs to the console; boot is single-threaded here.
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
    if CONSOLE.load(Ordering::Acquire) == CONSOLE_UHYVE { Console::Uhyve } else { Console::Serial }
}

/// uhyve's serial-buffer parameter block (interface v1): the guest-physical
/// address and length of the bytes to print. Atomics, so that concurrent
/// writers can never make a data race of it; [`BLOCK_OWNER`] makes one
/// writer at a time use it, so address and length always belong together.
#[repr(C)]
struct UhyveBuffer {
    address: AtomicU64,
    len: AtomicU64,
}

static UHYVE_BUFFER_BLOCK: UhyveBuffer = UhyveBuffer { address: AtomicU64::new(0), len: AtomicU64::new(0) };
/// Held while a writer uses [`UHYVE_BUFFER_BLOCK`].
static BLOCK_OWNER: AtomicBool = AtomicBool::new(false);
/// How long a writer tries for the block before printing byte by byte
/// (a CPU that panicked holding it, or a trap nested in a write).
const BLOCK_SPINS: u32 = 100_000;

/// Writes bytes to the console. Safe from any context: the kernel's
/// console lock keeps lines whole, and nothing here depends on it for
/// soundness (a panic that skips that lock at worst interleaves bytes).
pub fn write(bytes: &[u8]) {
    match kind() {
        Console::Serial => {
            // One status read per 16 bytes: THRE set means the 16-byte FIFO
            // is empty. Under a hypervisor every port access is an exit, so
            // this halves the cost of console output.
            for chunk in bytes.chunks(16) {
                // SAFETY: COM1 belongs to the console; port output touches
                // no memory, so concurrent writers only interleave bytes.
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
        Console::Uhyve => write_uhyve(bytes),
    }
}

/// Writes bytes to the console without any wait for another writer (a
/// panic): the same as [`write`], which never depends on a lock.
pub fn write_unlocked(bytes: &[u8]) {
    write(bytes);
}

fn take_block() -> bool {
    for _ in 0..BLOCK_SPINS {
        if BLOCK_OWNER.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            return true;
        }
        cpu::pause();
    }
    false
}

fn write_uhyve(bytes: &[u8]) {
    // The hypervisor reads guest-physical memory: the buffer may live
    // on a stack in the (non-identity) stack window, so each page's
    // part is translated; the parameter block is a static in the
    // identity-mapped image, its address below 4 GiB (interface v1).
    let have_block = take_block();
    let space = crate::paging::AddressSpace::active();
    let mut rest = bytes;
    while !rest.is_empty() {
        let address = rest.as_ptr() as u64;
        let in_page = (crate::paging::PAGE_SIZE - (address % crate::paging::PAGE_SIZE)) as usize;
        let (chunk, tail) = rest.split_at(in_page.min(rest.len()));
        match space.translate(address) {
            Some(translation) if have_block && translation.physical >> 32 == 0 => {
                UHYVE_BUFFER_BLOCK.address.store(translation.physical, Ordering::Relaxed);
                UHYVE_BUFFER_BLOCK.len.store(chunk.len() as u64, Ordering::Relaxed);
                // The hypervisor reads the block when the OUT exits.
                compiler_fence(Ordering::SeqCst);
                let block = &raw const UHYVE_BUFFER_BLOCK;
                // SAFETY: the block is ours (BLOCK_OWNER) and filled; the
                // hypercall only reads it and the bytes it names.
                unsafe { cpu::outl(UHYVE_PORT_SERIAL_BUFFER, block as u64 as u32) };
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
    if have_block {
        BLOCK_OWNER.store(false, Ordering::Release);
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
