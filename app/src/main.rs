//! The rtedge appliance image: the seeds' RTLinux programs rebuilt as
//! loadable modules (`programs/`), steered over the control plane.
//!
//! At boot it reads its configuration (`config=/path`, through the kernel's
//! file API), registers every program as a module, loads the chosen set
//! (all by default: `modules=all|none|a,b,...`), prints how to connect and
//! then stays quiet: a heartbeat line every 10 s (`heartbeat=N`: every N
//! seconds, 0: never), and each program logs at most a short line now and then,
//! the rest at debug level (`log=debug` shows every period). `MODULE LIST |
//! LOAD | UNLOAD` drive the modules over the control plane.
//!
//! What it must never do: its real-time threads never touch the general
//! heap after creation (no `String`, `Vec`, `Box` or `format!` in an RT
//! thread body: they use statics, atomics, fixed buffers and the rt-pool;
//! the kernel panics on a violation); interrupt and softirq handlers never
//! block or allocate; nothing here uses `rtedge-arch` or writes `unsafe`
//! (the raw region is reached through `RawPod` views).
//!
//! `selftest_modules=N` runs the in-image self-checks instead
//! (`selftest.rs`) and shuts down with 0 or 1.
#![no_std]
#![no_main]

extern crate alloc;

mod config;
mod programs;
mod selftest;

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use rtedge_engine::cmdline;
use rtedge_kernel::shared::{self, Access, SharedInt};
use rtedge_kernel::timer::Timer;
use rtedge_kernel::{boot, console_line, modules, thread, time};

/// The control plane's guest port when the command line sets none.
const DEFAULT_PORT: u16 = 6379;
/// The host port `make run` forwards to it when the runner does not say
/// (it passes `hostport=` when it forwards one).
const FORWARDED_PORT: u16 = 6380;

/// The appliance's own heartbeat: a jiffies timer, registered by name, that
/// counts in `appliance.heartbeats` and re-arms itself once a second. It is
/// always there (modules come and go), so `TIMER MOD|DEL heartbeat` always
/// has a timer to act on; after a `TIMER DEL` it stays quiet until a
/// `TIMER MOD` arms it again.
static HEARTBEAT: Timer = Timer::new("heartbeat", heartbeat, 0);
static HEARTBEATS: SharedInt = SharedInt::new("appliance.heartbeats", Access::ReadOnly, 0);
const HEARTBEAT_JIFFIES: u64 = time::HZ;

/// Every how many heartbeats a console line is printed (`heartbeat=N`;
/// 1: a line a second; 0: silent). The default keeps the console quiet
/// enough to type on beside the programs' own lines.
const HEARTBEAT_LINE_DEFAULT: u64 = 10;
static HEARTBEAT_LINE_EVERY: AtomicU64 = AtomicU64::new(HEARTBEAT_LINE_DEFAULT);

/// The timer callback (TIMER softirq): count, say so, re-arm.
fn heartbeat(_: usize) {
    let beats = HEARTBEATS.add(1);
    let every = HEARTBEAT_LINE_EVERY.load(Ordering::Relaxed);
    if every != 0 && (beats as u64).is_multiple_of(every) {
        log::info!("heartbeat {beats}: up {} s", time::now_ns() / 1_000_000_000);
    }
    let _ = HEARTBEAT.modify_in(HEARTBEAT_JIFFIES);
}

fn start_heartbeat() {
    HEARTBEAT_LINE_EVERY.store(programs::setting_u64("heartbeat", HEARTBEAT_LINE_DEFAULT), Ordering::Relaxed);
    shared::register(&HEARTBEATS);
    HEARTBEAT.register();
    if let Err(error) = HEARTBEAT.modify_in(HEARTBEAT_JIFFIES) {
        log::warn!("heartbeat timer: {error}");
    }
}

/// The modules to load at boot: every one unless `modules=` says otherwise.
fn chosen_modules() -> Vec<&'static str> {
    let all: Vec<&'static str> = programs::all().iter().map(|module| module.name()).collect();
    let Some(choice) = programs::setting("modules") else { return all };
    match choice.trim() {
        "" | "all" => all,
        "none" => Vec::new(),
        list => {
            let mut chosen = Vec::new();
            for name in list.split(',').map(str::trim).filter(|name| !name.is_empty()) {
                match all.iter().find(|known| **known == name) {
                    Some(known) => chosen.push(*known),
                    None => log::warn!("modules=: no module '{name}' (known: {})", all.join(", ")),
                }
            }
            chosen
        }
    }
}

fn load_modules(names: &[&'static str]) {
    let mut loaded: Vec<&str> = Vec::new();
    for name in names {
        match modules::load(name) {
            Ok(()) => loaded.push(name),
            Err(error) => log::warn!("module {name}: {error}"),
        }
    }
    console_line!(
        "modules: loaded {} of {}: {}",
        loaded.len(),
        programs::all().len(),
        if loaded.is_empty() { String::from("none") } else { loaded.join(", ") }
    );
}

fn print_connection_help() {
    let line = boot::command_line();
    let port = cmdline::get(line, "port").and_then(|value| value.parse::<u16>().ok()).unwrap_or(DEFAULT_PORT);
    let host_port = cmdline::get(line, "hostport").and_then(|value| value.parse::<u16>().ok()).unwrap_or(FORWARDED_PORT);
    if boot::hypervisor() == boot::Hypervisor::Uhyve {
        // No host port is forwarded under uhyve: no connect line to follow.
        console_line!(
            "control plane: guest port {port} (uhyve: reachable only with a tap device, uhyve --net tap:NAME; no host port is forwarded)"
        );
        return;
    }
    console_line!("control plane: guest port {port}; `make run` forwards 127.0.0.1:{host_port} to it");
    console_line!("  redis-cli -p {host_port} -a \"$(cat target/rtedge/dev.token)\" --no-auth-warning MODULE LIST");
    console_line!("  rtctl threads | rtctl watch softirq.latency | rtctl wake rt-sleeper | rtctl get rtalloc.buffers");
}

fn run() -> u8 {
    console_line!("rtedge appliance: the seeds' RTLinux programs as modules (quit: Ctrl-A X under QEMU, Ctrl-C under uhyve)");
    if let Some(path) = cmdline::get(boot::command_line(), "config") {
        config::load(path);
    }
    programs::register_all();
    if let Some(value) = cmdline::get(boot::command_line(), "selftest_modules") {
        return match cmdline::parse_u64(value) {
            Ok(cycles) => selftest::run(cycles),
            Err(_) => {
                console_line!("selftest_modules= needs a number of cycles");
                1
            }
        };
    }
    start_heartbeat();
    load_modules(&chosen_modules());
    print_connection_help();
    // The appliance runs until the control plane's SHUTDOWN or the hypervisor stops it.
    loop {
        let _ = thread::sleep_ns(1_000_000_000);
    }
}

// The command line keys the appliance reads besides the kernel's own
// (`file`, `config`, `port` and `reserve` are kernel keys; `hostport` is
// the host port the runner forwards, only shown in the connection help).
// The plane (network and control plane) starts as a service at the end of
// boot, where the kernel started it before it was a crate of its own.
rtedge_kernel::main!(
    run,
    keys = [
        "heartbeat",
        "hostport",
        "modules",
        "selftest_modules",
        "selftest_dwell_ms",
        "selftest_heap_slack",
        "tasklet_disable_at",
        "rtalloc_period_ms"
    ],
    services = [rtedge_plane::start]
);
