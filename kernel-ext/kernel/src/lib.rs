//! The rtedge kernel: puts the portable policy (`rtedge-engine`) on the
//! x86_64 layer (`rtedge-arch`). It owns the console and log, memory (page
//! tables, heap, guarded stacks), time and the local timer, interrupt
//! dispatch, and the public API applications use.
//!
//! Rules it keeps: hard-IRQ handlers never allocate or block; real-time
//! threads never touch the general heap (checked on every allocation);
//! nothing here writes inline assembly (that is `rtedge-arch`'s job).
#![no_std]

extern crate alloc;

pub mod boot;
pub mod clockevent;
pub mod console;
pub mod context;
pub mod cpu_local;
pub mod events;
pub mod files;
pub mod firmware;
pub mod hook;
pub mod irq;
pub mod ktest;
pub mod latency;
pub mod logs;
pub mod memory;
pub mod modules;
pub mod power;
pub mod rtpool;
pub mod serial_input;
pub mod shared;
pub mod shutdown;
pub mod smp;
pub mod softirq;
pub mod sync;
pub mod tasklet;
pub mod thread;
pub mod time;
pub mod timer;
pub mod trap;
pub mod vectors;
pub mod workqueue;

#[cfg(feature = "ktest")]
pub mod bench;
#[cfg(feature = "ktest")]
pub mod selftest;

pub use shutdown::{ExitCode, shutdown};

/// Waits for the next interrupt with interrupts enabled (the idle loop body).
pub fn idle() {
    rtedge_arch::cpu::enable_and_halt();
}

/// Declares the application's entry point: `main!(run)` makes the kernel
/// call `run() -> u8` after boot and shut down with its result. An optional
/// list names the command line keys the application reads, so the kernel
/// does not warn about them: `main!(run, keys = ["file"])`. An optional
/// list of services names functions the kernel calls at the end of its
/// boot, before the `ready` banner and before `run` (in the boot thread;
/// they may spawn threads): the appliance wires its control plane in with
/// `main!(run, keys = [..], services = [rtedge_plane::start])`. An image
/// without services runs without a network.
#[macro_export]
macro_rules! main {
    ($entry:path) => {
        $crate::main!($entry, keys = [], services = []);
    };
    ($entry:path, keys = [$($key:expr),* $(,)?]) => {
        $crate::main!($entry, keys = [$($key),*], services = []);
    };
    ($entry:path, services = [$($service:path),* $(,)?]) => {
        $crate::main!($entry, keys = [], services = [$($service),*]);
    };
    ($entry:path, keys = [$($key:expr),* $(,)?], services = [$($service:path),* $(,)?]) => {
        #[unsafe(no_mangle)]
        fn __rtedge_main() -> u8 {
            $entry()
        }
        #[unsafe(no_mangle)]
        static __RTEDGE_APP_KEYS: &[&str] = &[$($key),*];
        #[unsafe(no_mangle)]
        static __RTEDGE_SERVICES: &[fn()] = &[$($service),*];
    };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    rtedge_arch::cpu::interrupts_disable();
    if console::enter_panic() {
        // A panic while reporting a panic: stop without more output.
        rtedge_arch::exit::exit(ExitCode::Panic as u8);
    }
    let cpu = context::cpu_index();
    let thread = thread::current_name();
    let location = info.location();
    let message = info.message();
    match location {
        Some(location) => {
            console_line!("rtedge: PANIC on cpu {cpu} in thread '{thread}' at {}:{}: {message}", location.file(), location.line())
        }
        None => console_line!("rtedge: PANIC on cpu {cpu} in thread '{thread}': {message}"),
    }
    let out_of_memory = memory::heap::last_allocation_failed();
    if out_of_memory {
        console_line!("rtedge: the heap could not satisfy an allocation (out of memory)");
    }
    shutdown(if out_of_memory { ExitCode::OutOfMemory as u8 } else { ExitCode::Panic as u8 })
}
