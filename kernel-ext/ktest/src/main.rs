//! The kernel test image: runs every kernel test and exits 0 only if all pass.
#![no_std]
#![no_main]

fn run() -> u8 {
    rtedge_kernel::ktest::run(&rtedge_kernel::selftest::groups())
}

rtedge_kernel::main!(run);
