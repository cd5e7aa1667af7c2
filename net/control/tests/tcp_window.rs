//! The TCP behaviour the control plane relies on from smoltcp, over a
//! loopback wire the test controls (virtual time, 1 ms per step).
//!
//! - `stalled_sender_resumes_after_a_lost_window_update` (issue 12 item 8):
//!   the client stops reading until the server is blocked by a zero window,
//!   then reads everything while its window updates are lost. The server
//!   must probe the window (smoltcp 0.12 did not: nothing moved for 30 s,
//!   and rtedge carried a keep-alive workaround; 0.13 has a persist timer).
//! - `bytes_beyond_the_advertised_window_are_refused` (CI, stop 16: the
//!   guest panicked in `isolation::replies_resume_at_once_after_a_20_s_pause`
//!   with smoltcp's "attempt to subtract sequence numbers with underflow"):
//!   the server advertised a zero window, then its reader emptied the
//!   buffer, and a segment beyond the advertised window arrived before the
//!   window update went out. smoltcp 0.12 accepted the byte and panicked on
//!   its next window computation; 0.13 refuses it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "test scaffolding: a failure is a test failure")]

use std::collections::VecDeque;

use smoltcp::iface::{Config as InterfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Packet, Ipv4Repr, TcpPacket, TcpRepr};

const SERVER_PORT: u16 = 6379;
const CLIENT_PORT: u16 = 50_000;
/// More than the test can move: the server always has bytes to send.
const TOTAL: usize = 64 * 1024 * 1024;

/// A loopback wire that drops the client's pure ACKs while `dropping`,
/// and keeps the client's last data segment.
struct LossyWire {
    queue: VecDeque<Vec<u8>>,
    dropping: bool,
    dropped: usize,
    last_client_data: Option<Vec<u8>>,
}

impl LossyWire {
    fn deliver(&mut self, frame: Vec<u8>) {
        if self.dropping && is_client_pure_ack(&frame) {
            self.dropped += 1;
            return;
        }
        if is_client_data(&frame) {
            self.last_client_data = Some(frame.clone());
        }
        self.queue.push_back(frame);
    }
}

fn is_client_data(frame: &[u8]) -> bool {
    let Ok(ip) = Ipv4Packet::new_checked(frame) else { return false };
    let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else { return false };
    tcp.src_port() == CLIENT_PORT && !tcp.payload().is_empty()
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
    to_send: usize,
    sent: usize,
    received: usize,
}

impl Link {
    /// A server socket with `server_rx` bytes of receive buffer that sends
    /// `to_send` bytes, and a client with a 4 KiB receive buffer.
    fn new(server_rx: usize, to_send: usize) -> Link {
        let mut wire = LossyWire { queue: VecDeque::new(), dropping: false, dropped: 0, last_client_data: None };
        let mut iface = Interface::new(InterfaceConfig::new(HardwareAddress::Ip), &mut wire, Instant::from_millis(0));
        iface.update_ip_addrs(|addresses| addresses.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8)).unwrap());
        let mut sockets = SocketSet::new(Vec::new());
        let mut server = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; server_rx]), tcp::SocketBuffer::new(vec![0; 16384]));
        server.set_nagle_enabled(false);
        // The appliance's configuration: a 60 s keep-alive.
        server.set_keep_alive(Some(smoltcp::time::Duration::from_millis(60_000)));
        server.listen(SERVER_PORT).unwrap();
        let server = sockets.add(server);
        let mut client = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 4096]), tcp::SocketBuffer::new(vec![0; 1024]));
        client.connect(iface.context(), (IpAddress::v4(127, 0, 0, 1), SERVER_PORT), CLIENT_PORT).unwrap();
        let client = sockets.add(client);
        Link { wire, iface, sockets, server, client, now_ms: 0, to_send, sent: 0, received: 0 }
    }

    fn poll(&mut self) {
        let now = Instant::from_millis(self.now_ms);
        self.iface.poll(now, &mut self.wire, &mut self.sockets);
    }

    /// One millisecond: the server writes what fits, the client reads if
    /// `reading`, the interface moves packets.
    fn step(&mut self, reading: bool) {
        self.now_ms += 1;
        self.poll();
        let server = self.sockets.get_mut::<tcp::Socket>(self.server);
        if server.can_send() && self.sent < self.to_send {
            let chunk = vec![b'x'; (self.to_send - self.sent).min(4096)];
            self.sent += server.send_slice(&chunk).unwrap();
        }
        if reading {
            let client = self.sockets.get_mut::<tcp::Socket>(self.client);
            while client.can_recv() {
                self.received += client.recv(|data| (data.len(), data.len())).unwrap();
            }
        }
        self.poll();
    }

    fn run(&mut self, milliseconds: i64, reading: bool) {
        for _ in 0..milliseconds {
            self.step(reading);
        }
    }

    fn server(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.server)
    }
}

#[test]
fn stalled_sender_resumes_after_a_lost_window_update() {
    let mut link = Link::new(8192, TOTAL);
    link.run(20, true);
    assert!(link.received > 0, "the connection carries data");
    // The client stops reading: the server fills the window and stalls.
    link.run(3_000, false);
    assert!(link.sent > link.received, "the server has bytes it cannot send");
    // The client reads again (what it had buffered), and its window
    // updates are lost.
    link.wire.dropping = true;
    link.run(5, true);
    link.wire.dropping = false;
    assert!(link.wire.dropped > 0, "no window update was sent to lose");
    // Virtual time, 1 ms a step: the server's zero-window probe must find
    // the open window well before the 60 s keep-alive would.
    let resumed_at = link.received;
    let mut waited_ms = 0;
    while link.received - resumed_at < 64 * 1024 {
        assert!(
            waited_ms < 10_000,
            "{} bytes in {waited_ms} ms after the pause ({} window updates lost): the server does not probe a zero window",
            link.received - resumed_at,
            link.wire.dropped
        );
        link.step(true);
        waited_ms += 1;
    }
    println!("64 KiB flowed again {waited_ms} ms (virtual) after the lost window updates");
}

#[test]
fn bytes_beyond_the_advertised_window_are_refused() {
    const WINDOW: usize = 64;
    let mut link = Link::new(WINDOW, 0);
    link.run(20, true);
    assert!(link.server().is_active(), "the connection is up");
    // The client sends exactly one window: the server (not reading)
    // acknowledges it with a zero window.
    let client = link.sockets.get_mut::<tcp::Socket>(link.client);
    assert_eq!(client.send_slice(&[b'r'; WINDOW]).unwrap(), WINDOW);
    link.run(200, true);
    assert_eq!(link.server().recv_queue(), WINDOW, "the server holds a full window");
    let data = link.wire.last_client_data.clone().expect("the client sent its window");
    // The server's reader empties the buffer; before the window update is
    // sent, a segment one byte beyond the advertised (zero) window arrives.
    let read = link.server().recv(|data| (data.len(), data.len())).unwrap();
    assert_eq!(read, WINDOW);
    link.wire.queue.push_back(beyond_the_window(&data, b"!"));
    // smoltcp 0.12 took the byte here and panicked in its next window
    // computation ("attempt to subtract sequence numbers with underflow").
    link.poll();
    assert_eq!(link.server().recv_queue(), 0, "the server accepted a byte beyond the window it advertised");
    // The connection goes on: the client's next bytes arrive.
    let client = link.sockets.get_mut::<tcp::Socket>(link.client);
    assert_eq!(client.send_slice(b"PING").unwrap(), 4);
    link.run(200, true);
    let mut got = Vec::new();
    link.server()
        .recv(|data| {
            got.extend_from_slice(data);
            (data.len(), ())
        })
        .unwrap();
    assert_eq!(got, b"PING", "the connection carries data after the refused segment");
}

/// The client segment that follows `data` (a client data frame) carrying
/// `payload`: the next sequence number, the same acknowledgement.
fn beyond_the_window(data: &[u8], payload: &[u8]) -> Vec<u8> {
    let caps = ChecksumCapabilities::default();
    let ip = Ipv4Packet::new_checked(data).unwrap();
    let ip_repr = Ipv4Repr::parse(&ip, &caps).unwrap();
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    let (src, dst) = (IpAddress::Ipv4(ip_repr.src_addr), IpAddress::Ipv4(ip_repr.dst_addr));
    let mut repr = TcpRepr::parse(&tcp, &src, &dst, &caps).unwrap();
    repr.seq_number += repr.payload.len();
    repr.payload = payload;
    let ip_out = Ipv4Repr { payload_len: repr.buffer_len(), ..ip_repr };
    let mut frame = vec![0; ip_out.buffer_len() + repr.buffer_len()];
    let mut ip_packet = Ipv4Packet::new_unchecked(&mut frame[..]);
    ip_out.emit(&mut ip_packet, &caps);
    let mut tcp_packet = TcpPacket::new_unchecked(ip_packet.payload_mut());
    repr.emit(&mut tcp_packet, &src, &dst, &caps);
    frame
}
