//! The parts without a network: configuration checks, the pub/sub hub,
//! the kernel command line's network items, and the interface addressing.

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use rtedge_control::stack::interface_config;
use rtedge_control::{
    Config, ConfigError, ConnectionId, Hub, NetConfig, NetConfigError, NetServer, NetStats, ServerError, Stack, SubscriptionChange,
    parse_net_config,
};
use rtedge_proto::ProtocolVersion;
use smoltcp::iface::{Interface, SocketSet};
use smoltcp::phy::{Loopback, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpCidr, Ipv4Address, Ipv4Cidr};

fn id(slot: u32, generation: u64) -> ConnectionId {
    ConnectionId { slot, generation }
}

#[test]
fn the_defaults_are_control_md_and_valid() {
    let config = Config::DEFAULT;
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(config.port, 6379);
    assert_eq!(config.max_connections, 64);
    assert_eq!(config.limits.max_frame_bytes, 64 * 1024);
    assert_eq!(config.limits.max_args, 1024);
    assert_eq!(config.limits.max_bulk_bytes, 32 * 1024);
    assert_eq!(config.output_limit_bytes, 1024 * 1024);
    assert_eq!(config.idle_timeout_ms, 300_000);
    assert_eq!(config.rate_limit_per_second, 100_000);
}

#[test]
fn bad_configurations_are_refused_with_the_field_named() {
    let port = Config { port: 0, ..Config::DEFAULT };
    assert_eq!(port.validate(), Err(ConfigError::OutOfRange { field: "port", min: 1, max: 65535 }));
    assert_eq!(port.validate().unwrap_err().to_string(), "config: port must be between 1 and 65535");
    let pause = Config { output_pause_bytes: 2 * 1024 * 1024, ..Config::DEFAULT };
    assert_eq!(pause.validate().unwrap_err().to_string(), "config: output_pause_bytes must not exceed output_limit_bytes");
    let none = Config { max_connections: 0, ..Config::DEFAULT };
    let mut sockets = SocketSet::new(Vec::new());
    let error = NetServer::new(none, &mut sockets).unwrap_err();
    assert!(matches!(error, ServerError::Config(ConfigError::OutOfRange { field: "max_connections", .. })));
    assert_eq!(sockets.iter().count(), 0);
}

#[test]
fn the_server_adds_one_listening_socket_per_slot_plus_a_spare() {
    let mut sockets = SocketSet::new(Vec::new());
    let config = Config { max_connections: 3, ..Config::DEFAULT };
    let server = NetServer::new(config, &mut sockets).unwrap();
    assert_eq!(sockets.iter().count(), 4);
    assert_eq!(server.connection_count(), 0);
    assert_eq!(server.next_timeout(0), None);
    // Polling with a different (empty) socket set is harmless.
    let mut server = server;
    let mut other = SocketSet::new(Vec::new());
    let mut jobs = Vec::new();
    server.poll(0, &mut other, &mut jobs);
    assert!(jobs.is_empty());
}

#[test]
fn net_stats_render_as_info_lines() {
    let stats = NetStats { connected: 2, accepted: 5, rejected: 1, ..NetStats::default() };
    let mut text = String::new();
    stats.write_info(&mut text);
    assert!(text.starts_with("connected_clients:2\r\ntotal_connections_received:5\r\nrejected_connections:1\r\n"));
    assert_eq!(text.lines().count(), 24);
    assert!(text.ends_with("slots:listening=0,open=0,rejecting=0,closing=0,aborting=0\r\n"));
}

#[test]
fn the_hub_delivers_channel_then_pattern_messages_per_protocol() {
    let mut hub = Hub::new();
    let (a, b) = (id(0, 1), id(1, 2));
    assert!(hub.subscribe(a, ProtocolVersion::Resp2, b"rtpool"));
    assert!(!hub.subscribe(a, ProtocolVersion::Resp2, b"rtpool"));
    assert!(hub.psubscribe(b, ProtocolVersion::Resp3, b"rt*"));
    assert!(hub.psubscribe(b, ProtocolVersion::Resp3, b"r[st]pool"));
    let messages = hub.publish(b"rtpool", b"{}");
    assert_eq!(
        messages,
        vec![
            (a, b"*3\r\n$7\r\nmessage\r\n$6\r\nrtpool\r\n$2\r\n{}\r\n".to_vec()),
            (b, b">4\r\n$8\r\npmessage\r\n$9\r\nr[st]pool\r\n$6\r\nrtpool\r\n$2\r\n{}\r\n".to_vec()),
            (b, b">4\r\n$8\r\npmessage\r\n$3\r\nrt*\r\n$6\r\nrtpool\r\n$2\r\n{}\r\n".to_vec()),
        ]
    );
    assert!(hub.publish(b"", b"x").is_empty());
    assert_eq!(hub.stats().published, 2);
    assert_eq!(hub.stats().matched, 3);

    assert!(hub.unsubscribe(a, b"rtpool"));
    assert!(!hub.unsubscribe(a, b"rtpool"));
    assert_eq!(hub.subscription_count(a), 0);
    hub.apply(
        a,
        ProtocolVersion::Resp3,
        &[
            SubscriptionChange::Subscribe(b"x".to_vec()),
            SubscriptionChange::PatternSubscribe(b"y*".to_vec()),
            SubscriptionChange::PatternUnsubscribe(b"y*".to_vec()),
        ],
    );
    assert_eq!(hub.subscription_count(a), 1);
    assert_eq!(hub.publish(b"x", b"1"), vec![(a, b">3\r\n$7\r\nmessage\r\n$1\r\nx\r\n$1\r\n1\r\n".to_vec())]);
    hub.remove_connection(b);
    hub.remove_connection(b);
    assert_eq!(hub.subscriber_count(), 1);
    assert_eq!(hub.channel_and_pattern_count(), (1, 0));
    assert!(!hub.punsubscribe(id(9, 9), b"rt*"));
}

#[test]
fn net_config_reads_ip_and_gw_and_defaults_to_dhcp() {
    assert_eq!(parse_net_config(""), Ok(NetConfig::Dhcp));
    assert_eq!(parse_net_config("console=ttyS0 ip=dhcp quiet"), Ok(NetConfig::Dhcp));
    assert_eq!(
        parse_net_config("virtio_mmio.device=512@0xfeb00e00:12 ip=10.0.2.15/24 gw=10.0.2.2"),
        Ok(NetConfig::Static { address: Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 15), 24), gateway: Some(Ipv4Address::new(10, 0, 2, 2)) })
    );
    assert_eq!(
        parse_net_config("ip=192.168.1.9/32"),
        Ok(NetConfig::Static { address: Ipv4Cidr::new(Ipv4Address::new(192, 168, 1, 9), 32), gateway: None })
    );
    for (line, error) in [
        ("ip=10.0.2.15", NetConfigError::BadPrefix),
        ("ip=10.0.2.15/33", NetConfigError::BadPrefix),
        ("ip=10.0.2.15/", NetConfigError::BadPrefix),
        ("ip=10.0.2/24", NetConfigError::BadAddress),
        ("ip=10.0.2.256/24", NetConfigError::BadAddress),
        ("ip=10.0.2.1.1/24", NetConfigError::BadAddress),
        ("ip=+1.0.2.1/24", NetConfigError::BadAddress),
        ("ip=10.0.2.15/24 gw=10.0.2", NetConfigError::BadGateway),
        ("gw=10.0.2.2", NetConfigError::GatewayWithoutAddress),
        ("ip=dhcp gw=10.0.2.2", NetConfigError::GatewayWithoutAddress),
    ] {
        assert_eq!(parse_net_config(line), Err(error), "{line}");
    }
    assert_eq!(NetConfigError::BadPrefix.to_string(), "net: ip= needs a prefix length of 0 to 32");
}

#[test]
fn a_static_configuration_sets_address_and_default_route() {
    let mut device = Loopback::new(Medium::Ethernet);
    let mut iface = Interface::new(interface_config([0x02, 0, 0, 0, 0, 1]), &mut device, Instant::from_millis(0));
    let mut sockets = SocketSet::new(Vec::new());
    let config = parse_net_config("ip=10.0.2.15/24 gw=10.0.2.2").unwrap();
    let mut stack = Stack::new(config, &mut iface, &mut sockets);
    assert!(!stack.is_dhcp());
    assert_eq!(sockets.iter().count(), 0);
    assert_eq!(iface.ip_addrs(), &[IpCidr::new(IpAddress::v4(10, 0, 2, 15), 24)]);
    assert_eq!(iface.ipv4_addr(), Some(Ipv4Address::new(10, 0, 2, 15)));
    assert_eq!(stack.gateway(), Some(Ipv4Address::new(10, 0, 2, 2)));
    let mut routed = false;
    iface.routes_mut().update(|routes| {
        routed = routes.iter().any(|route| route.via_router == IpAddress::v4(10, 0, 2, 2));
    });
    assert!(routed);
    assert_eq!(stack.poll(&mut iface, &mut sockets), None);
}

#[test]
fn dhcp_adds_a_client_socket_and_starts_without_an_address() {
    let mut device = Loopback::new(Medium::Ethernet);
    let mut iface = Interface::new(interface_config([0x02, 0, 0, 0, 0, 2]), &mut device, Instant::from_millis(0));
    let mut sockets = SocketSet::new(Vec::new());
    let mut stack = Stack::new(NetConfig::Dhcp, &mut iface, &mut sockets);
    assert!(stack.is_dhcp());
    assert_eq!(sockets.iter().count(), 1);
    // Leases themselves are proved in tests/dhcp.rs.
    assert_eq!(stack.address(), None);
    assert!(iface.ip_addrs().is_empty());
    // Polling with another set is harmless.
    let mut other = SocketSet::new(Vec::new());
    assert_eq!(stack.poll(&mut iface, &mut other), None);
}
