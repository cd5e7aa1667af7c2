//! The control plane over a lossy, corrupting link (issue 12): smoltcp's
//! `FaultInjector` drops and corrupts 10 % of the packets each way, and
//! every command still completes, in order, with the right reply (TCP
//! retransmits; checksums reject the corrupted segments).

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

mod support;

use std::cell::Cell;
use std::rc::Rc;

use rtedge_control::{Config, Dispatcher, Job, NetServer};
use smoltcp::iface::{Config as InterfaceConfig, Interface, SocketSet};
use smoltcp::phy::{ChecksumCapabilities, Device, DeviceCapabilities, FaultInjector, Loopback, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use support::{FakeBackend, TOKEN, command};

/// The loopback device with checksums computed and verified, as a real NIC
/// path has them (`Loopback` skips them, so corruption would go unseen).
struct Checked(Loopback);

impl Device for Checked {
    type RxToken<'a> = <Loopback as Device>::RxToken<'a>;
    type TxToken<'a> = <Loopback as Device>::TxToken<'a>;

    fn receive(&mut self, timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        self.0.receive(timestamp)
    }

    fn transmit(&mut self, timestamp: Instant) -> Option<Self::TxToken<'_>> {
        self.0.transmit(timestamp)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = self.0.capabilities();
        capabilities.checksum = ChecksumCapabilities::default();
        capabilities
    }
}

fn run_with_faults(drop_pct: u8, corrupt_pct: u8, clients: usize, commands: usize) -> (usize, u64) {
    let clock = Rc::new(Cell::new(0u64));
    let mut device = FaultInjector::new(Checked(Loopback::new(Medium::Ip)), 0x1234_5678);
    device.set_drop_chance(drop_pct);
    device.set_corrupt_chance(corrupt_pct);
    let mut iface = Interface::new(InterfaceConfig::new(HardwareAddress::Ip), &mut device, Instant::from_millis(0));
    iface.update_ip_addrs(|addresses| {
        addresses.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8)).unwrap();
    });
    let mut sockets = SocketSet::new(Vec::new());
    let config = Config::DEFAULT;
    let mut server = NetServer::new(config, &mut sockets).unwrap();
    let mut dispatcher = Dispatcher::new(FakeBackend::new(clock.clone(), TOKEN), &config);
    dispatcher.set_memory_budget(server.memory());

    struct Client {
        handle: smoltcp::iface::SocketHandle,
        expected: Vec<u8>,
        received: Vec<u8>,
        outgoing: Vec<u8>,
    }
    let mut all = Vec::new();
    for index in 0..clients {
        let mut socket = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 64 * 1024]), tcp::SocketBuffer::new(vec![0; 64 * 1024]));
        socket.connect(iface.context(), (IpAddress::v4(127, 0, 0, 1), config.port), 41_000 + index as u16).unwrap();
        let mut outgoing = command(&["AUTH", "s3cret"]);
        let mut expected = b"+OK\r\n".to_vec();
        for number in 0..commands {
            let message = format!("c{index}-{number}");
            outgoing.extend(command(&["ECHO", &message]));
            expected.extend(format!("${}\r\n{message}\r\n", message.len()).bytes());
        }
        all.push(Client { handle: sockets.add(socket), expected, received: Vec::new(), outgoing });
    }
    // 1 ms per step: TCP's retransmission timers run on this clock.
    let mut steps = 0u64;
    for millisecond in 1..600_000i64 {
        steps += 1;
        clock.set(millisecond as u64);
        let now = Instant::from_millis(millisecond);
        iface.poll(now, &mut device, &mut sockets);
        for client in &mut all {
            let socket = sockets.get_mut::<tcp::Socket>(client.handle);
            if socket.can_send() && !client.outgoing.is_empty() {
                let sent = socket.send_slice(&client.outgoing).unwrap_or(0);
                client.outgoing.drain(..sent);
            }
            while socket.can_recv() {
                let data = socket.recv(|data| (data.len(), data.to_vec())).unwrap_or_default();
                if data.is_empty() {
                    break;
                }
                client.received.extend(data);
            }
        }
        let mut jobs: Vec<Job> = Vec::new();
        server.poll(millisecond as u64, &mut sockets, &mut jobs);
        let mut queue: std::collections::VecDeque<Job> = jobs.into();
        while let Some(job) = queue.pop_front() {
            let completion = dispatcher.execute(job);
            if let Some(next) = server.complete(millisecond as u64, completion) {
                queue.push_back(next);
            }
        }
        iface.poll(now, &mut device, &mut sockets);
        if all.iter().all(|client| client.received.len() >= client.expected.len()) {
            break;
        }
    }
    let mut completed = 0;
    for client in &all {
        let received = String::from_utf8_lossy(&client.received);
        let expected = String::from_utf8_lossy(&client.expected);
        let common = received.chars().zip(expected.chars()).take_while(|(a, b)| a == b).count();
        assert_eq!(
            received,
            expected,
            "a client's replies differ under faults from byte {common}: got {:?}, want {:?} ({} of {} bytes)",
            received.get(common..).unwrap_or(""),
            expected.get(common..).unwrap_or(""),
            received.len(),
            expected.len()
        );
        completed += commands + 1;
    }
    (completed, steps)
}

#[test]
fn every_command_completes_with_ten_percent_drop_and_corruption() {
    let (completed, steps) = run_with_faults(10, 10, 4, 50);
    println!("faults: {completed} commands completed with 10 % drop + 10 % corruption in {steps} simulated ms");
    assert_eq!(completed, 4 * 51);
}

#[test]
fn every_command_completes_on_a_clean_link_too() {
    let (completed, _) = run_with_faults(0, 0, 4, 50);
    assert_eq!(completed, 4 * 51);
}
