//! The control plane in the kernel: the `control-plane` kernel thread that
//! executes requests (the seeds' kthread event-list pattern: NET_RX puts
//! jobs on a list and ups a semaphore; this thread drains the list), the
//! command backend (`backend`), and the publisher that turns kernel events
//! into pub/sub messages.

pub(crate) mod backend;
mod info;
pub mod listings;
pub(crate) mod metrics;

use alloc::string::String;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rtedge_control::{Config, Dispatcher};

use crate::net;
use rtedge_kernel::thread::{self, Builder, ThreadId};
use rtedge_kernel::{events, time};

pub use backend::KernelBackend;

static STARTED: AtomicBool = AtomicBool::new(false);
static PUBLISHED: AtomicU64 = AtomicU64::new(0);

/// Starts the network (if a device is found) and the control-plane thread.
/// Returns the thread, or `None` without a network.
pub fn start() -> Option<ThreadId> {
    let info = rtedge_kernel::boot::info();
    if rtedge_engine::cmdline::get(info.command_line(), "net").is_some_and(|value| value == "off" || value == "0") {
        log::info!("control plane: off (net=off)");
        return None;
    }
    net::set_metrics_renderer(metrics::render);
    match net::device::start(info) {
        Ok(()) => {}
        Err(net::device::NetError::NoDevice) => {
            log::info!("control plane: no network device; running without it");
            return None;
        }
        Err(error) => {
            log::warn!("control plane: network unavailable ({error}); running without it");
            return None;
        }
    }
    let token = String::from(net::device::auth_token(info.command_line()));
    let thread = Builder::new("control-plane").stack_size(256 * 1024).spawn(move || control_main(token));
    match thread {
        Ok(id) => {
            STARTED.store(true, Ordering::Release);
            Some(id)
        }
        Err(error) => {
            log::error!("control plane: cannot start its thread: {error}");
            None
        }
    }
}

/// Whether the control plane runs.
pub fn is_running() -> bool {
    STARTED.load(Ordering::Acquire)
}

/// How often queued events are published when no request arrives.
const PUBLISH_INTERVAL_NS: u64 = 50_000_000;

fn control_main(token: String) -> i32 {
    // The server's limits and memory budget: sessions are charged to the
    // same budget, and freed when the server says their connection ended.
    let (config, memory) = match net::control_parts() {
        Some((config, memory)) => (config, Some(memory)),
        None => (Config::DEFAULT, None),
    };
    let mut dispatcher = Dispatcher::new(KernelBackend::new(token), &config);
    if let Some(memory) = memory {
        dispatcher.set_memory_budget(memory);
    }
    loop {
        let _ = net::WORK_READY.down_timeout(PUBLISH_INTERVAL_NS);
        if thread::should_stop() {
            return 0;
        }
        dispatcher.reap();
        while let Some(mut job) = net::next_job() {
            loop {
                let completion = dispatcher.execute(job);
                let connection = completion.connection;
                let shutdown = completion.shutdown;
                let next = net::complete(completion);
                if let Some(code) = shutdown {
                    shut_down(connection, code);
                }
                match next {
                    Some(next_job) => job = next_job,
                    None => break,
                }
            }
            publish_events();
        }
        publish_events();
    }
}

/// `SHUTDOWN [code]`: let the `+OK` leave, release the application's
/// resources, stop.
fn shut_down(connection: rtedge_control::ConnectionId, code: i64) -> ! {
    let deadline = time::now_ns() + 1_000_000_000;
    while time::now_ns() < deadline {
        match net::queued_output(connection) {
            Some(0) | None => break,
            Some(_) => {
                let _ = thread::sleep_ns(1_000_000);
            }
        }
    }
    // Give the TCP stack a moment to see the ACK of the last segment.
    let _ = thread::sleep_ns(20_000_000);
    log::info!("control plane: SHUTDOWN {code} requested");
    // The same orderly path as the power button (modules' exit, goodbye,
    // rt-pool), ending in S5 on a machine without the test exit device.
    rtedge_kernel::power::orderly_shutdown("SHUTDOWN", code.clamp(0, 127) as u8)
}

/// Turns queued kernel events into JSON messages on their channels. Events
/// are dropped (after counting) when nobody is subscribed.
fn publish_events() {
    let listening = net::subscribers() > 0;
    events::set_streaming(listening);
    crate::logs::publish_pending(|| net::subscribers() > 0, |payload| net::publish(crate::logs::CHANNEL, payload) > 0);
    let mut payload = String::new();
    while let Some(event) = events::pop() {
        if !listening {
            continue;
        }
        payload.clear();
        let _ = write!(payload, "{{\"t\":{},\"kind\":\"{}\"", event.time_ns, event.kind);
        if !event.text_key.is_empty() {
            payload.push_str(",\"");
            payload.push_str(event.text_key);
            payload.push_str("\":");
            json_string(&mut payload, event.text());
        }
        for (key, value) in event.fields() {
            let _ = write!(payload, ",\"{key}\":{value}");
        }
        payload.push('}');
        let mut channel = String::from(event.channel);
        if event.channel == "latency" {
            // Per-thread latency streams: latency.<thread>.
            channel.push('.');
            channel.push_str(event.text());
        }
        net::publish(&channel, &payload);
        PUBLISHED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Appends `text` as a JSON string.
pub(crate) fn json_string(out: &mut String, text: &str) {
    rtedge_engine::value::push_json_string(out, text);
}

/// Messages published since boot.
pub fn published() -> u64 {
    PUBLISHED.load(Ordering::Relaxed)
}
