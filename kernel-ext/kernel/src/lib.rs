#![no_std]
use rtedge_arch::{boot::BootInfo, console, exit};

#[unsafe(no_mangle)]
fn __rtedge_kernel_entry(info: &'static BootInfo) -> ! {
    // SAFETY: boot CPU, first thing.
    unsafe { console::init(if info.path == rtedge_arch::boot::BootPath::Hermit { console::Console::Uhyve } else { console::Console::Serial }) };
    console::write(b"hello from rtedge\n");
    console::write(info.command_line().as_bytes());
    console::write(b"\n");
    exit::exit(0)
}

#[unsafe(no_mangle)]
fn __rtedge_secondary_entry(_cpu: u32) -> ! {
    loop { rtedge_arch::cpu::halt() }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    console::write(b"panic\n");
    exit::exit(3)
}
