//! Fault image: recurses until the stack hits its guard page; must end with
//! the stack overflow exit code (3).
#![no_std]
#![no_main]

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 32]);
    if core::hint::black_box(depth) == u64::MAX {
        return frame[0];
    }
    recurse(depth + 1) + frame[1]
}

fn run() -> u8 {
    rtedge_kernel::console_line!("fault-stack: recursing without bound");
    let total = recurse(0);
    rtedge_kernel::console_line!("fault-stack: returned {total} (the guard page did not stop it)");
    0
}

rtedge_kernel::main!(run);
