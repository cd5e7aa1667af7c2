//! DHCPv4 through [`Stack`]: a fake DHCP server behind a test device
//! offers a lease; the stack applies address and gateway, and takes them
//! away when the lease runs out unanswered.

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use std::collections::VecDeque;

use rtedge_control::stack::interface_config;
use rtedge_control::{NetConfig, Stack, StackEvent};
use smoltcp::iface::{Interface, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{
    DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpAddress, IpCidr, IpProtocol, Ipv4Address, Ipv4Cidr, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x15];
const SERVER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x02]);
const SERVER_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
const LEASED_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);

/// Frames the interface sends are kept; frames queued in `inbound` are
/// received.
#[derive(Default)]
struct FakeNet {
    sent: Vec<Vec<u8>>,
    inbound: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, length: usize, f: F) -> R {
        let mut frame = vec![0; length];
        let result = f(&mut frame);
        self.0.push(frame);
        result
    }
}

impl Device for FakeNet {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.inbound.pop_front()?;
        Some((Rx(frame), Tx(&mut self.sent)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.sent))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ethernet;
        capabilities.max_transmission_unit = 1514;
        capabilities
    }
}

/// The DHCP message type and transaction id of a frame the client sent,
/// if it is DHCP.
fn client_message(frame: &[u8]) -> Option<(DhcpMessageType, u32)> {
    let ethernet = EthernetFrame::new_checked(frame).ok()?;
    let ip = Ipv4Packet::new_checked(ethernet.payload()).ok()?;
    if ip.next_header() != IpProtocol::Udp {
        return None;
    }
    let udp = UdpPacket::new_checked(ip.payload()).ok()?;
    if udp.dst_port() != DHCP_SERVER_PORT {
        return None;
    }
    let dhcp = DhcpPacket::new_checked(udp.payload()).ok()?;
    let repr = DhcpRepr::parse(&dhcp).ok()?;
    Some((repr.message_type, repr.transaction_id))
}

/// A server reply (OFFER or ACK) leasing `LEASED_IP` for `lease_s`.
fn server_reply(message_type: DhcpMessageType, transaction_id: u32, lease_s: u32) -> Vec<u8> {
    let dhcp = DhcpRepr {
        message_type,
        transaction_id,
        secs: 0,
        client_hardware_address: EthernetAddress(CLIENT_MAC),
        client_ip: Ipv4Address::UNSPECIFIED,
        your_ip: LEASED_IP,
        server_ip: SERVER_IP,
        router: Some(SERVER_IP),
        subnet_mask: Some(Ipv4Address::new(255, 255, 255, 0)),
        relay_agent_ip: Ipv4Address::UNSPECIFIED,
        broadcast: false,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(SERVER_IP),
        parameter_request_list: None,
        dns_servers: None,
        max_size: None,
        lease_duration: Some(lease_s),
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let udp = UdpRepr { src_port: DHCP_SERVER_PORT, dst_port: DHCP_CLIENT_PORT };
    let ip = Ipv4Repr {
        src_addr: SERVER_IP,
        dst_addr: Ipv4Address::BROADCAST,
        next_header: IpProtocol::Udp,
        payload_len: 8 + dhcp.buffer_len(),
        hop_limit: 64,
    };
    let ethernet = EthernetRepr { src_addr: SERVER_MAC, dst_addr: EthernetAddress::BROADCAST, ethertype: EthernetProtocol::Ipv4 };
    let mut frame = vec![0; 14 + 20 + ip.payload_len];
    let mut ethernet_frame = EthernetFrame::new_unchecked(&mut frame);
    ethernet.emit(&mut ethernet_frame);
    let mut ip_packet = Ipv4Packet::new_unchecked(ethernet_frame.payload_mut());
    ip.emit(&mut ip_packet, &ChecksumCapabilities::default());
    let mut udp_packet = UdpPacket::new_unchecked(ip_packet.payload_mut());
    udp.emit(
        &mut udp_packet,
        &IpAddress::Ipv4(SERVER_IP),
        &IpAddress::Ipv4(Ipv4Address::BROADCAST),
        dhcp.buffer_len(),
        |payload| {
            dhcp.emit(&mut DhcpPacket::new_unchecked(payload)).unwrap();
        },
        &ChecksumCapabilities::default(),
    );
    frame
}

#[test]
fn a_lease_sets_address_and_gateway_and_its_expiry_removes_them() {
    let mut device = FakeNet::default();
    let mut iface = Interface::new(interface_config(CLIENT_MAC), &mut device, Instant::from_millis(0));
    let mut sockets = SocketSet::new(Vec::new());
    let mut stack = Stack::new(NetConfig::Dhcp, &mut iface, &mut sockets);
    let mut events = Vec::new();
    let mut answered = Vec::new();
    let mut now_ms = 0;
    // The server answers DISCOVER and the first REQUEST, then goes silent.
    while now_ms < 400_000 {
        iface.poll(Instant::from_millis(now_ms), &mut device, &mut sockets);
        if let Some(event) = stack.poll(&mut iface, &mut sockets) {
            events.push((now_ms, event));
        }
        for frame in std::mem::take(&mut device.sent) {
            let Some((message_type, transaction_id)) = client_message(&frame) else {
                continue;
            };
            answered.push(message_type);
            let reply = match message_type {
                DhcpMessageType::Discover => DhcpMessageType::Offer,
                DhcpMessageType::Request if answered.len() == 2 => DhcpMessageType::Ack,
                _ => continue,
            };
            device.inbound.push_back(server_reply(reply, transaction_id, 120));
        }
        now_ms += 10;
    }
    let address = Ipv4Cidr::new(LEASED_IP, 24);
    let configured = StackEvent::Configured { address, gateway: Some(SERVER_IP) };
    let sequence: Vec<StackEvent> = events.iter().map(|(_, event)| *event).collect();
    // smoltcp reports "deconfigured" once at start, then the lease, then
    // its loss after 120 s without an answer to the renewals.
    assert_eq!(sequence, [StackEvent::Deconfigured, configured, StackEvent::Deconfigured]);
    let lost_at = events[2].0;
    let leased_at = events[1].0;
    assert!(lost_at - leased_at >= 120_000, "{events:?}");
    assert_eq!(answered[..2], [DhcpMessageType::Discover, DhcpMessageType::Request]);
    assert_eq!(stack.address(), None);
    assert!(iface.ip_addrs().is_empty());

    // While it was leased the interface held it: replay to that point.
    let mut device = FakeNet::default();
    let mut iface = Interface::new(interface_config(CLIENT_MAC), &mut device, Instant::from_millis(0));
    let mut sockets = SocketSet::new(Vec::new());
    let mut stack = Stack::new(NetConfig::Dhcp, &mut iface, &mut sockets);
    let mut now_ms = 0;
    while stack.address().is_none() && now_ms < 10_000 {
        iface.poll(Instant::from_millis(now_ms), &mut device, &mut sockets);
        stack.poll(&mut iface, &mut sockets);
        for frame in std::mem::take(&mut device.sent) {
            if let Some((message_type, transaction_id)) = client_message(&frame) {
                let reply = match message_type {
                    DhcpMessageType::Discover => DhcpMessageType::Offer,
                    _ => DhcpMessageType::Ack,
                };
                device.inbound.push_back(server_reply(reply, transaction_id, 120));
            }
        }
        now_ms += 10;
    }
    assert_eq!(stack.address(), Some(address));
    assert_eq!(iface.ip_addrs(), &[IpCidr::Ipv4(address)]);
    assert_eq!(stack.gateway(), Some(SERVER_IP));
}
