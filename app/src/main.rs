//! The rtedge appliance image. For now it shows that the machine is alive:
//! a heartbeat line once a second from the timer, until the hypervisor is
//! stopped (Ctrl-A X under QEMU, Ctrl-C under uhyve).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use rtedge_kernel::{clockevent, console_line, time};

static BEATS: AtomicU64 = AtomicU64::new(0);
const PERIOD_NS: u64 = 1_000_000_000;

fn heartbeat(alarm: clockevent::AlarmId, _: u64) {
    let beat = BEATS.fetch_add(1, Ordering::Relaxed) + 1;
    console_line!("heartbeat {beat}: uptime {} ms, jiffies {}", time::now_ns() / 1_000_000, time::jiffies());
    clockevent::arm(alarm, beat * PERIOD_NS + PERIOD_NS);
}

fn run() -> u8 {
    console_line!("rtedge appliance: heartbeat every second; quit with Ctrl-A X (QEMU) or Ctrl-C (uhyve)");
    let alarm = clockevent::register(heartbeat, 0);
    clockevent::arm(alarm, time::now_ns() + PERIOD_NS);
    loop {
        rtedge_kernel::idle();
    }
}

rtedge_kernel::main!(run);
