//! Fault image: a softirq handler tries to block on a semaphore. Softirq
//! handlers may not block; the kernel's check must stop it with a panic
//! (exit code 2) naming the rule, instead of deadlocking.
#![no_std]
#![no_main]

use rtedge_kernel::thread::Semaphore;

static NEVER: Semaphore = Semaphore::new(0);

fn blocking_handler(_: usize) {
    let _ = NEVER.down();
    rtedge_kernel::console_line!("fault-softirq-block: the handler blocked and came back (the check failed)");
}

fn run() -> u8 {
    rtedge_kernel::console_line!("fault-softirq-block: raising a soft IRQ whose handler blocks");
    match rtedge_kernel::softirq::register("blocking handler", blocking_handler, 0) {
        Ok(irq) => irq.raise(),
        Err(_) => return 1,
    }
    rtedge_kernel::softirq::run_pending();
    let _ = rtedge_kernel::thread::sleep_ns(100_000_000);
    0
}

rtedge_kernel::main!(run);
