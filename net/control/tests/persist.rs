//! The zero-window probe (`rtedge_control::persist`, issue 12 item 8): a
//! sender whose peer's window update is lost must still find out that the
//! window reopened. Two smoltcp TCP sockets over a loopback wire that can
//! drop the receiver's pure ACKs; virtual time, 1 ms per step.
//!
//! `stalled_sender_resumes_after_a_lost_window_update`: the receiver stops
//! reading until the sender is blocked by a zero window, then reads
//! everything; its window updates are lost. Without probing (what smoltcp
//! does alone), nothing more arrives for 30 virtual seconds; with
//! `persist` called at every poll, the rest arrives within a second.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test scaffolding: a failure is a test failure"
)]

use std::collections::VecDeque;

use rtedge_control::persist::{PERSIST_INTERVAL_MS, persist};
use smoltcp::iface::{Config as InterfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Packet, TcpPacket};

const SERVER_PORT: u16 = 6379;
const CLIENT_PORT: u16 = 50_000;
/// More than the test can move: the server always has bytes to send.
const TOTAL: usize = 64 * 1024 * 1024;

/// A loopback wire that drops the client's pure ACKs while `dropping`.
struct LossyWire {
    queue: VecDeque<Vec<u8>>,
    dropping: bool,
    dropped: usize,
}

impl LossyWire {
    fn deliver(&mut self, frame: Vec<u8>) {
        if self.dropping && is_client_pure_ack(&frame) {
            self.dropped += 1;
            return;
        }
        self.queue.push_back(frame);
    }
}

fn is_client_pure_ack(frame: &[u8]) -> bool {
    let Ok(ip) = Ipv4Packet::new_checked(frame) else { return false };
    let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else { return false };
    tcp.src_port() == CLIENT_PORT && tcp.payload().is_empty() && !tcp.syn() && !tcp.fin() && !tcp.rst()
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut LossyWire);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.0.deliver(frame);
        result
    }
}

impl Device for LossyWire {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.queue.pop_front()?;
        Some((Rx(frame), Tx(self)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ip;
        capabilities.max_transmission_unit = 1500;
        capabilities
    }
}

struct Link {
    wire: LossyWire,
    iface: Interface,
    sockets: SocketSet<'static>,
    server: SocketHandle,
    client: SocketHandle,
    now_ms: i64,
    sent: usize,
    received: usize,
}

impl Link {
    fn new() -> Link {
        let mut wire = LossyWire { queue: VecDeque::new(), dropping: false, dropped: 0 };
        let mut iface = Interface::new(InterfaceConfig::new(HardwareAddress::Ip), &mut wire, Instant::from_millis(0));
        iface.update_ip_addrs(|addresses| addresses.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8)).unwrap());
        let mut sockets = SocketSet::new(Vec::new());
        let mut server = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 8192]), tcp::SocketBuffer::new(vec![0; 16384]));
        server.set_nagle_enabled(false);
        // The server's configuration: a 60 s keep-alive.
        server.set_keep_alive(Some(smoltcp::time::Duration::from_millis(60_000)));
        server.listen(SERVER_PORT).unwrap();
        let server = sockets.add(server);
        // A small receive buffer, so that the window closes quickly.
        let mut client = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 4096]), tcp::SocketBuffer::new(vec![0; 1024]));
        client.connect(iface.context(), (IpAddress::v4(127, 0, 0, 1), SERVER_PORT), CLIENT_PORT).unwrap();
        let client = sockets.add(client);
        Link { wire, iface, sockets, server, client, now_ms: 0, sent: 0, received: 0 }
    }

    /// One millisecond: the server writes what fits, the client reads if
    /// `reading`, the interface moves packets; `probe` runs `persist`.
    fn step(&mut self, reading: bool, probe: bool) {
        self.now_ms += 1;
        let now = Instant::from_millis(self.now_ms);
        self.iface.poll(now, &mut self.wire, &mut self.sockets);
        let server = self.sockets.get_mut::<tcp::Socket>(self.server);
        if server.can_send() && self.sent < TOTAL {
            let chunk = vec![b'x'; (TOTAL - self.sent).min(4096)];
            self.sent += server.send_slice(&chunk).unwrap();
        }
        if reading {
            let client = self.sockets.get_mut::<tcp::Socket>(self.client);
            while client.can_recv() {
                self.received += client.recv(|data| (data.len(), data.len())).unwrap();
            }
        }
        if probe {
            persist(&mut self.sockets, 60_000);
        }
        self.iface.poll(now, &mut self.wire, &mut self.sockets);
    }

    fn run(&mut self, milliseconds: i64, reading: bool, probe: bool) {
        for _ in 0..milliseconds {
            self.step(reading, probe);
        }
    }
}

/// Bytes the client receives in `wait_ms` after a pause in reading that
/// ended with its window updates lost (and how many were lost).
fn after_lost_window_update(probe: bool, wait_ms: i64) -> (usize, usize) {
    let mut link = Link::new();
    link.run(20, true, probe);
    assert!(link.received > 0, "the connection carries data");
    // The client stops reading: the server fills the window and stalls.
    link.run(3_000, false, probe);
    assert!(link.sent > link.received, "the server has bytes it cannot send");
    // The client reads again (what it had buffered), and its window
    // updates are lost.
    link.wire.dropping = true;
    link.run(5, true, probe);
    link.wire.dropping = false;
    let dropped = link.wire.dropped;
    assert!(dropped > 0, "no window update was sent to lose");
    let resumed_at = link.received;
    link.run(wait_ms, true, probe);
    (link.received - resumed_at, dropped)
}

#[test]
fn stalled_sender_resumes_after_a_lost_window_update() {
    // Today's smoltcp alone: no probe, so no progress (until the 60 s
    // keep-alive, long after this window).
    let (without, lost) = after_lost_window_update(false, 30_000);
    assert_eq!(without, 0, "smoltcp recovered without probing: the scenario tests nothing");
    // With the persist probe: data flows again within a few intervals.
    let (with, dropped) = after_lost_window_update(true, 4 * PERSIST_INTERVAL_MS as i64);
    assert!(
        with >= 64 * 1024,
        "with probing, only {with} bytes in {} ms after the pause ({dropped} window updates lost; {lost} without probing)",
        4 * PERSIST_INTERVAL_MS
    );
}
