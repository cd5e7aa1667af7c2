//! Fault image: panics; must end with the panic exit code (2).
#![no_std]
#![no_main]

fn run() -> u8 {
    let answer = core::hint::black_box(41);
    panic!("fault-panic: deliberate panic, answer was {answer}");
}

rtedge_kernel::main!(run);
