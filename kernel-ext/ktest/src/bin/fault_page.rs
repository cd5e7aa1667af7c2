//! Fault image: writes through a null-ish pointer; must end with the page
//! fault exit code (46 = 32 + vector 14).
#![no_std]
#![no_main]

fn run() -> u8 {
    rtedge_kernel::console_line!("fault-page: writing to address 0x8");
    let pointer = core::hint::black_box(8usize) as *mut u64;
    // SAFETY: deliberately unsound: this image exists to prove the fault report.
    unsafe { core::ptr::write_volatile(pointer, 1) };
    0
}

rtedge_kernel::main!(run);
