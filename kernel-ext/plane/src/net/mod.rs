//! The network: the virtio-net device found at boot, the smoltcp
//! interface and sockets, and the network half of the control-plane
//! server, all behind one bottom-half spinlock.
//!
//! Everything runs from the NET_RX softirq: the device interrupt's top
//! half only acknowledges the device and raises NET_RX; smoltcp's next
//! deadline (retransmits, DHCP, idle timeouts) arms an hrtimer that raises
//! NET_RX again. Nothing polls while idle. Complete requests go through an
//! event list to the control-plane thread (`control`), which may block.
//!
//! Publishing only queues: [`publish`] puts the message on its channel's
//! queue in a [`Backlog`] (its own lock, never the network's) and arms a
//! short timer; NET_RX then fans out at most [`FAN_OUT_BUDGET`] messages
//! per poll. The cost of subscribers is paid in softirq context in
//! bounded steps, batched, never in the publisher's call.

pub mod device;
pub mod hal;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rtedge_control::hub::Backlog;
use rtedge_control::{
    Completion, Config, ConnectionId, HttpConfig, HttpServer, HttpStats, Job, MemoryBudget, NetServer, NetStats, PublishReport, Stack,
    StackEvent,
};
use rtedge_virtio::{InterruptAck, NetStats as DeviceStats};
use smoltcp::iface::{Interface, SocketSet};
use smoltcp::phy::Device;
use smoltcp::time::Instant;

use rtedge_kernel::hook::Hook;
use rtedge_kernel::softirq::{self, Vector};
use rtedge_kernel::sync::{IrqSpinLock, SpinLock};
use rtedge_kernel::thread::Semaphore;
use rtedge_kernel::timer::{HrTimer, Mode, Restart};
use rtedge_kernel::workqueue::{self, FnWork};
use rtedge_kernel::{cpu_local, time};

/// What the softirq and the control thread ask of the network, whatever
/// the device type.
pub trait NetOps {
    /// Polls the interface and the server; returns ms until the next
    /// deadline, if any.
    fn poll(&mut self, now_ms: u64, jobs: &mut Vec<Job>) -> Option<u64>;
    fn complete(&mut self, now_ms: u64, completion: Completion) -> Option<Job>;
    fn publish(&mut self, channel: &[u8], payload: &[u8]) -> PublishReport;
    fn queued_output(&self, connection: ConnectionId) -> Option<usize>;
    fn subscribers(&self) -> usize;
    fn write_info(&self, out: &mut String);
    fn client_list(&self, now_ms: u64, out: &mut String);
    /// The server's limits and memory budget, for the dispatcher.
    fn control_parts(&self) -> (Config, Arc<MemoryBudget>);
    /// The RESP server's counters, and the metrics server's (if it runs).
    fn server_stats(&self) -> (NetStats, Option<HttpStats>);
    /// Whether a `GET /metrics` waits for its body.
    fn metrics_wanted(&self) -> bool;
    /// Answers the waiting `GET /metrics` requests with `body`.
    fn provide_metrics(&mut self, now_ms: u64, body: &[u8]);
    /// The device's counters (zero behind the fault injector).
    fn device_stats(&self) -> DeviceStats;
}

/// One device with its interface, sockets, address keeper and server.
pub struct Net<D: Device> {
    device: D,
    iface: Interface,
    sockets: SocketSet<'static>,
    stack: Stack,
    server: NetServer,
    /// `GET /metrics` on the metrics port (`control::metrics`).
    http: Option<HttpServer>,
    mac: [u8; 6],
    description: String,
    stats: fn(&D) -> DeviceStats,
    /// Before a poll: asks the device not to interrupt while the poll runs
    /// (NAPI: the poll sees what arrives; [`Self::reclaim`] re-enables).
    quiesce: fn(&mut D),
    /// After a poll: notifies the device of the frames sent, reclaims,
    /// re-enables interrupts; true if work arrived meanwhile.
    reclaim: fn(&mut D) -> bool,
}

impl<D: Device> Net<D> {
    #[allow(clippy::too_many_arguments, reason = "one call site, in device.rs; each part differs per transport")]
    pub fn new(
        mut device: D,
        mac: [u8; 6],
        description: String,
        config: rtedge_control::Config,
        net_config: rtedge_control::NetConfig,
        auth_required: bool,
        stats: fn(&D) -> DeviceStats,
        quiesce: fn(&mut D),
        reclaim: fn(&mut D) -> bool,
    ) -> Result<Self, rtedge_control::ServerError> {
        let iface_config = rtedge_control::stack::interface_config(mac);
        let mut iface = Interface::new(iface_config, &mut device, Instant::from_millis(time::now_ns() as i64 / 1_000_000));
        let mut sockets = SocketSet::new(Vec::new());
        let stack = Stack::new(net_config, &mut iface, &mut sockets);
        let mut server = NetServer::new(config, &mut sockets)?;
        server.set_auth_required(auth_required);
        let http = metrics_server(config.port, &mut sockets);
        if let Some(address) = stack.address() {
            log::info!("net: address {address} (static)");
        }
        Ok(Self { device, iface, sockets, stack, server, http, mac, description, stats, quiesce, reclaim })
    }
}

impl<D: Device> NetOps for Net<D> {
    fn poll(&mut self, now_ms: u64, jobs: &mut Vec<Job>) -> Option<u64> {
        let timestamp = Instant::from_millis(now_ms as i64);
        (self.quiesce)(&mut self.device);
        self.iface.poll(timestamp, &mut self.device, &mut self.sockets);
        match self.stack.poll(&mut self.iface, &mut self.sockets) {
            Some(StackEvent::Configured { address, gateway }) => {
                match gateway {
                    Some(gateway) => log::info!("net: address {address}, gateway {gateway} (DHCP)"),
                    None => log::info!("net: address {address} (DHCP)"),
                }
                ADDRESS_CHANGES.fetch_add(1, Ordering::Relaxed);
            }
            // The DHCP client reports "deconfigured" once at start too.
            Some(StackEvent::Deconfigured) if ADDRESS_CHANGES.load(Ordering::Relaxed) > 0 => log::warn!("net: DHCP lease lost"),
            Some(StackEvent::Deconfigured) => {}
            None => {}
        }
        self.server.poll(now_ms, &mut self.sockets, jobs);
        if let Some(http) = self.http.as_mut() {
            http.poll(now_ms, &mut self.sockets);
        }
        self.iface.poll(timestamp, &mut self.device, &mut self.sockets);
        if (self.reclaim)(&mut self.device) {
            // Work arrived while interrupts were off: poll again soon.
            return Some(0);
        }
        let interface_delay = self.iface.poll_delay(timestamp, &self.sockets).map(|delay| delay.total_millis());
        let server_delay = match (self.server.next_timeout(now_ms), self.http.as_ref().and_then(|http| http.next_timeout(now_ms))) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (interface_delay, server_delay) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn complete(&mut self, now_ms: u64, completion: Completion) -> Option<Job> {
        self.server.complete(now_ms, completion)
    }

    fn publish(&mut self, channel: &[u8], payload: &[u8]) -> PublishReport {
        self.server.publish(channel, payload)
    }

    fn queued_output(&self, connection: ConnectionId) -> Option<usize> {
        self.server.queued_output(connection)
    }

    fn subscribers(&self) -> usize {
        self.server.hub().subscriber_count()
    }

    fn client_list(&self, now_ms: u64, out: &mut String) {
        self.server.client_list(&self.sockets, now_ms, out);
    }

    fn control_parts(&self) -> (Config, Arc<MemoryBudget>) {
        (*self.server.config(), self.server.memory())
    }

    fn server_stats(&self) -> (NetStats, Option<HttpStats>) {
        (self.server.stats(), self.http.as_ref().map(HttpServer::stats))
    }

    fn metrics_wanted(&self) -> bool {
        self.http.as_ref().is_some_and(HttpServer::wants_body)
    }

    fn provide_metrics(&mut self, now_ms: u64, body: &[u8]) {
        if let Some(http) = self.http.as_mut() {
            http.provide_body(now_ms, &mut self.sockets, body);
            self.iface.poll(Instant::from_millis(now_ms as i64), &mut self.device, &mut self.sockets);
            // Notify the device of what was sent (the caller raises NET_RX,
            // which re-checks for work).
            let _ = (self.reclaim)(&mut self.device);
        }
    }

    fn device_stats(&self) -> DeviceStats {
        (self.stats)(&self.device)
    }

    fn write_info(&self, out: &mut String) {
        let mac = self.mac;
        let _ = write!(
            out,
            "device:{}\r\nmac:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}\r\n",
            self.description, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
        );
        match self.stack.address() {
            Some(address) => {
                let _ = write!(out, "address:{address}\r\n");
            }
            None => out.push_str("address:none\r\n"),
        }
        match self.stack.gateway() {
            Some(gateway) => {
                let _ = write!(out, "gateway:{gateway}\r\n");
            }
            None => out.push_str("gateway:none\r\n"),
        }
        let _ = write!(out, "dhcp:{}\r\nport:{}\r\n", if self.stack.is_dhcp() { "yes" } else { "no" }, self.server.config().port);
        let _ = write!(out, "metrics_port:{}\r\n", self.http.as_ref().map_or(0, |http| http.config().port));
        let stats = (self.stats)(&self.device);
        let _ = write!(
            out,
            "rx_packets:{}\r\nrx_bytes:{}\r\nrx_dropped:{}\r\nrx_errors:{}\r\ntx_packets:{}\r\ntx_bytes:{}\r\ntx_dropped:{}\r\ntx_errors:{}\r\ndevice_interrupts:{}\r\nrx_kicks:{}\r\ntx_kicks:{}\r\n",
            stats.rx_packets,
            stats.rx_bytes,
            stats.rx_dropped,
            stats.rx_errors,
            stats.tx_packets,
            stats.tx_bytes,
            stats.tx_dropped,
            stats.tx_errors,
            stats.interrupts,
            stats.rx_notifications,
            stats.tx_notifications
        );
        self.server.write_info(out);
    }
}

/// The network and its server, or `None` without a device. Taken with
/// `lock_bh` from threads and `lock` from the NET_RX softirq.
static NET: SpinLock<Option<NetBox>> = SpinLock::new(None);

/// The boxed network. The virtio device holds raw register and DMA
/// pointers, which makes it `!Send`; it is only ever used under `NET`'s
/// lock, from whichever CPU holds it.
struct NetBox(Box<dyn NetOps>);

// SAFETY: all access goes through the `NET` lock; the device's pointers
// name MMIO and DMA memory that is valid from every CPU.
unsafe impl Send for NetBox {}

/// The top half's device acknowledgement (no lock needed).
static ACK: IrqSpinLock<Option<InterruptAck>> = IrqSpinLock::new(None);
/// Requests waiting for the control-plane thread (the event list).
static JOBS: IrqSpinLock<VecDeque<Job>> = IrqSpinLock::new(VecDeque::new());
/// Counts jobs (and publish requests) for the control thread.
pub static WORK_READY: Semaphore = Semaphore::new(0);
static POLL_TIMER: HrTimer = HrTimer::new("net-poll", poll_timer_fired, 0);
/// Published messages waiting for fan-out, one bounded queue per channel.
/// Taken with `lock_bh` by publishers and `lock` in NET_RX.
static BACKLOG: SpinLock<Option<Backlog>> = SpinLock::new(None);
/// Fires a short while after the first message of a batch is published.
static FAN_OUT_TIMER: HrTimer = HrTimer::new("net-fan-out", poll_timer_fired, 0);
/// Messages fanned out per NET_RX poll (the bound on a poll's pub/sub cost).
pub const FAN_OUT_BUDGET: usize = 64;
/// Messages one channel's queue holds before its oldest are dropped.
const BACKLOG_PER_CHANNEL: usize = 256;
/// Channels the backlog tracks.
const BACKLOG_CHANNELS: usize = 64;
/// How long a published message may wait for the fan-out poll (batches
/// the messages of a burst into one poll).
const FAN_OUT_DELAY_NS: u64 = 1_000_000;
static DEVICE_INTERRUPTS: AtomicU64 = AtomicU64::new(0);
static ADDRESS_CHANGES: AtomicU64 = AtomicU64::new(0);
static NET_CPU: AtomicU32 = AtomicU32::new(0);

fn now_ms() -> u64 {
    time::now_ns() / 1_000_000
}

/// The device's interrupt: acknowledge, count, raise NET_RX. Never
/// allocates or blocks.
pub(crate) fn device_interrupt(_: u8) {
    DEVICE_INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    if let Some(ack) = *ACK.lock() {
        ack.ack();
    }
    softirq::raise(Vector::NetRx);
}

/// Called once the line is routed: acknowledges an interrupt the device
/// raised before that and polls. QEMU's I/O APIC latches a level line only
/// while its entry says level, so a line that went high earlier would stay
/// high unseen and no later event could raise it again.
pub(crate) fn kick() {
    if let Some(ack) = *ACK.lock() {
        ack.ack();
    }
    softirq::raise(Vector::NetRx);
}

fn poll_timer_fired(_: &HrTimer) -> Restart {
    softirq::raise(Vector::NetRx);
    Restart::NoRestart
}

/// The NET_RX softirq: poll everything, hand jobs to the control thread,
/// arm the timer for the next deadline.
fn net_rx(_: usize) {
    let started_ns = time::now_ns();
    let now = started_ns / 1_000_000;
    let mut jobs = Vec::new();
    let (messages, more_waiting) = {
        let mut backlog = BACKLOG.lock();
        match backlog.as_mut() {
            Some(backlog) => (backlog.take(FAN_OUT_BUDGET), !backlog.is_empty()),
            None => (Vec::new(), false),
        }
    };
    let delay = {
        let mut net = NET.lock();
        let Some(net) = net.as_mut() else { return };
        for (channel, payload) in &messages {
            let report = net.0.publish(channel, payload);
            FANNED_OUT.fetch_add(report.receivers as u64, Ordering::Relaxed);
        }
        let fanned_ns = time::now_ns();
        let delay = net.0.poll(now, &mut jobs);
        POLL_FIGURES.record(fanned_ns.saturating_sub(started_ns), time::now_ns().saturating_sub(fanned_ns));
        if net.0.metrics_wanted() {
            workqueue::schedule_work(&GATHER);
        }
        if more_waiting { Some(0) } else { delay }
    };
    if !jobs.is_empty() {
        let count = jobs.len();
        JOBS.lock().extend(jobs);
        for _ in 0..count {
            WORK_READY.up();
        }
    }
    match delay {
        Some(0) => softirq::raise(Vector::NetRx),
        Some(ms) => {
            let _ = POLL_TIMER.start(ms.saturating_mul(1_000_000), Mode::Relative);
        }
        None => {
            POLL_TIMER.try_cancel();
        }
    }
}

/// Installs a started network and starts polling it.
pub(crate) fn install(net: Box<dyn NetOps>, ack: InterruptAck) {
    *ACK.lock() = Some(ack);
    NET_CPU.store(if cpu_local::is_installed() { cpu_local::current().index() } else { 0 }, Ordering::Relaxed);
    softirq::open(Vector::NetRx, net_rx, 0);
    let _ = POLL_TIMER.setup();
    let _ = FAN_OUT_TIMER.setup();
    *BACKLOG.lock_bh() = Some(Backlog::new(BACKLOG_PER_CHANNEL, BACKLOG_CHANNELS));
    *NET.lock_bh() = Some(NetBox(net));
    softirq::raise(Vector::NetRx);
    softirq::run_pending();
}

/// Answers waiting `GET /metrics` requests with `body` and lets NET_RX
/// send it (thread context).
pub(crate) fn provide_metrics(body: &[u8]) {
    let mut net = NET.lock_bh();
    if let Some(net) = net.as_mut() {
        net.0.provide_metrics(now_ms(), body);
    }
    softirq::raise(Vector::NetRx);
}

/// The metrics port when the command line names none (node_exporter's).
pub const METRICS_DEFAULT_PORT: u16 = 9100;

/// Builds the metrics server on `metrics_port=` (None: turned off with
/// `metrics_port=0`, the same port as the control plane, a bad value, or
/// no sockets).
fn metrics_server(control_port: u16, sockets: &mut SocketSet<'static>) -> Option<HttpServer> {
    let line = rtedge_kernel::boot::info().command_line();
    let port = match rtedge_engine::cmdline::get(line, "metrics_port") {
        None => METRICS_DEFAULT_PORT,
        Some(value) => match value.parse::<u16>() {
            Ok(port) => port,
            Err(_) => {
                log::warn!("metrics: metrics_port={value} is not a port number; metrics off");
                return None;
            }
        },
    };
    if port == 0 {
        log::info!("metrics: off (metrics_port=0)");
        return None;
    }
    if port == control_port {
        log::warn!("metrics: metrics_port={port} is the control port; metrics off");
        return None;
    }
    match HttpServer::new(HttpConfig { port, ..HttpConfig::DEFAULT }, sockets) {
        Ok(server) => {
            log::info!("metrics: GET /metrics on port {port}");
            Some(server)
        }
        Err(error) => {
            log::warn!("metrics: {error}; metrics off");
            None
        }
    }
}

/// Renders the text for the waiting HTTP requests (system workqueue).
static GATHER: FnWork = FnWork::new(gather_and_reply, 0);

/// What renders the metrics text (process context; may take locks and
/// allocate): `control::metrics::render`, plugged in by the control plane.
static METRICS_RENDERER: Hook<fn() -> String> = Hook::new();

/// Plugs in the metrics renderer (before the device starts).
pub(crate) fn set_metrics_renderer(render: fn() -> String) {
    METRICS_RENDERER.set(render);
}

fn gather_and_reply(_: &'static FnWork) {
    let text = METRICS_RENDERER.get().map(|render| render()).unwrap_or_default();
    provide_metrics(text.as_bytes());
}

/// The RESP server's counters and the metrics server's (None: no network).
pub(crate) fn server_stats() -> Option<(NetStats, Option<HttpStats>)> {
    NET.lock_bh().as_ref().map(|net| net.0.server_stats())
}

/// Whether a network device is up.
pub fn is_up() -> bool {
    NET.lock_bh().is_some()
}

/// Takes the next request for the control thread.
pub(crate) fn next_job() -> Option<Job> {
    JOBS.lock().pop_front()
}

/// Hands a completion to the server and lets NET_RX send it.
pub(crate) fn complete(completion: Completion) -> Option<Job> {
    let mut net = NET.lock_bh();
    let next = net.as_mut().and_then(|net| net.0.complete(now_ms(), completion));
    softirq::raise(Vector::NetRx);
    // Dropping the guard re-enables bottom halves: NET_RX runs here now.
    drop(net);
    next
}

/// Publishes `payload` on `channel` to subscribers (thread or softirq
/// context; not RT threads or hard IRQs: it allocates — they use
/// `events::emit`). Only queues the message on its channel: NET_RX fans it
/// out within about a millisecond (see the module doc). Returns 1 if it
/// was queued, 0 if not (no network, or too many channels).
pub fn publish(channel: &str, payload: &str) -> usize {
    let (queued, first) = {
        let mut backlog = BACKLOG.lock_bh();
        let Some(backlog) = backlog.as_mut() else { return 0 };
        let first = backlog.is_empty();
        (backlog.push(channel.as_bytes(), payload.as_bytes()), first)
    };
    if queued && first && !FAN_OUT_TIMER.is_active() {
        let _ = FAN_OUT_TIMER.start(FAN_OUT_DELAY_NS, Mode::Relative);
    }
    usize::from(queued)
}

/// Subscriber deliveries made by the fan-out since boot.
static FANNED_OUT: AtomicU64 = AtomicU64::new(0);

/// What NET_RX polls cost, since the last [`reset_poll_figures`]: the
/// fan-out of a batch and the interface/server poll, each the longest and
/// the sum. Both run under `NET` (a bottom-half lock: an RT thread
/// preempts them, so they cost it CPU time only, never its wake-up).
struct PollFigures {
    polls: AtomicU64,
    fan_out_ns: AtomicU64,
    fan_out_max_ns: AtomicU64,
    poll_ns: AtomicU64,
    poll_max_ns: AtomicU64,
}

impl PollFigures {
    fn record(&self, fan_out_ns: u64, poll_ns: u64) {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.fan_out_ns.fetch_add(fan_out_ns, Ordering::Relaxed);
        self.fan_out_max_ns.fetch_max(fan_out_ns, Ordering::Relaxed);
        self.poll_ns.fetch_add(poll_ns, Ordering::Relaxed);
        self.poll_max_ns.fetch_max(poll_ns, Ordering::Relaxed);
    }
}

static POLL_FIGURES: PollFigures = PollFigures {
    polls: AtomicU64::new(0),
    fan_out_ns: AtomicU64::new(0),
    fan_out_max_ns: AtomicU64::new(0),
    poll_ns: AtomicU64::new(0),
    poll_max_ns: AtomicU64::new(0),
};

/// Starts a new window for the `net_rx_*` figures of `INFO net`.
pub fn reset_poll_figures() {
    for figure in
        [&POLL_FIGURES.polls, &POLL_FIGURES.fan_out_ns, &POLL_FIGURES.fan_out_max_ns, &POLL_FIGURES.poll_ns, &POLL_FIGURES.poll_max_ns]
    {
        figure.store(0, Ordering::Relaxed);
    }
    *WINDOW_START.lock() = window_counts();
}

/// What the device did, cumulative: the `net_rx_*` window's base.
#[derive(Clone, Copy, Default)]
struct WindowCounts {
    tx_kicks: u64,
    rx_kicks: u64,
    tx_packets: u64,
    rx_packets: u64,
    interrupts: u64,
}

/// The counts when the `net_rx_*` window began ([`reset_poll_figures`]).
static WINDOW_START: IrqSpinLock<WindowCounts> =
    IrqSpinLock::new(WindowCounts { tx_kicks: 0, rx_kicks: 0, tx_packets: 0, rx_packets: 0, interrupts: 0 });

fn window_counts() -> WindowCounts {
    let device = NET.lock_bh().as_ref().map(|net| net.0.device_stats()).unwrap_or_default();
    WindowCounts {
        tx_kicks: device.tx_notifications,
        rx_kicks: device.rx_notifications,
        tx_packets: device.tx_packets,
        rx_packets: device.rx_packets,
        interrupts: DEVICE_INTERRUPTS.load(Ordering::Relaxed),
    }
}

/// Connected subscribers (any channel).
pub fn subscribers() -> usize {
    NET.lock_bh().as_ref().map_or(0, |net| net.0.subscribers())
}

/// Bytes still queued for `connection` (None: gone).
pub(crate) fn queued_output(connection: ConnectionId) -> Option<usize> {
    NET.lock_bh().as_ref().and_then(|net| net.0.queued_output(connection))
}

/// The control-plane server's limits and memory budget (None: no network).
pub(crate) fn control_parts() -> Option<(Config, Arc<MemoryBudget>)> {
    NET.lock_bh().as_ref().map(|net| net.0.control_parts())
}

/// `CLIENT LIST`: one line per open connection.
pub fn client_list() -> String {
    let mut out = String::new();
    if let Some(net) = NET.lock_bh().as_ref() {
        net.0.client_list(now_ms(), &mut out);
    }
    out
}

/// The `INFO net` lines.
pub fn write_info(out: &mut String) {
    match NET.lock_bh().as_ref() {
        Some(net) => net.0.write_info(out),
        None => out.push_str("device:none\r\n"),
    }
    let _ = write!(out, "net_interrupts:{}\r\n", DEVICE_INTERRUPTS.load(Ordering::Relaxed));
    write_event_info(out);
}

/// Event rings and the fan-out backlog, per channel (`INFO net`).
fn write_event_info(out: &mut String) {
    let _ = write!(
        out,
        "events_emitted:{}\r\nevents_dropped:{}\r\nevents_queued:{}\r\nfan_out_deliveries:{}\r\nfan_out_budget:{}\r\n",
        rtedge_kernel::events::emitted(),
        rtedge_kernel::events::dropped(),
        rtedge_kernel::events::queued(),
        FANNED_OUT.load(Ordering::Relaxed),
        FAN_OUT_BUDGET
    );
    let _ = write!(
        out,
        "net_rx_polls:{}\r\nnet_rx_fan_out_ns:{}\r\nnet_rx_fan_out_max_ns:{}\r\nnet_rx_poll_ns:{}\r\nnet_rx_poll_max_ns:{}\r\n",
        POLL_FIGURES.polls.load(Ordering::Relaxed),
        POLL_FIGURES.fan_out_ns.load(Ordering::Relaxed),
        POLL_FIGURES.fan_out_max_ns.load(Ordering::Relaxed),
        POLL_FIGURES.poll_ns.load(Ordering::Relaxed),
        POLL_FIGURES.poll_max_ns.load(Ordering::Relaxed)
    );
    // The device's work in the same window: each kick and interrupt is a
    // hypervisor exit, each packet work for its network backend.
    let start = *WINDOW_START.lock();
    let now = window_counts();
    let _ = write!(
        out,
        "net_rx_tx_kicks:{}\r\nnet_rx_rx_kicks:{}\r\nnet_rx_tx_packets:{}\r\nnet_rx_rx_packets:{}\r\nnet_rx_interrupts:{}\r\n",
        now.tx_kicks.saturating_sub(start.tx_kicks),
        now.rx_kicks.saturating_sub(start.rx_kicks),
        now.tx_packets.saturating_sub(start.tx_packets),
        now.rx_packets.saturating_sub(start.rx_packets),
        now.interrupts.saturating_sub(start.interrupts)
    );
    for (channel, emitted, dropped) in rtedge_kernel::events::channel_counts() {
        let _ = write!(out, "events_channel_{channel}:emitted={emitted},dropped={dropped}\r\n");
    }
    let backlog = BACKLOG.lock_bh();
    let Some(backlog) = backlog.as_ref() else { return };
    let _ = write!(out, "backlog_waiting:{}\r\nbacklog_refused:{}\r\n", backlog.len(), backlog.refused());
    for (channel, stats) in backlog.channel_stats() {
        let name = core::str::from_utf8(channel).unwrap_or("?");
        let _ = write!(
            out,
            "backlog_channel_{name}:queued={},sent={},dropped={},waiting={}\r\n",
            stats.queued, stats.taken, stats.dropped, stats.waiting
        );
    }
}
