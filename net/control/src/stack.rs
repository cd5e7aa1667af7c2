//! The interface's addressing: static IPv4 from the kernel command line
//! (`ip=10.0.2.15/24 gw=10.0.2.2`) or DHCPv4 (the default), applied to a
//! smoltcp [`Interface`].

use core::fmt;

use smoltcp::iface::{self, Interface, SocketHandle, SocketSet};
use smoltcp::socket::AnySocket as _;
use smoltcp::socket::dhcpv4;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};

/// Result of reading the network configuration.
pub type Result<T> = core::result::Result<T, NetConfigError>;

/// A bad `ip=` or `gw=` item on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetConfigError {
    /// `ip=` is neither `dhcp` nor `a.b.c.d/prefix`.
    BadAddress,
    /// The prefix is missing or above 32.
    BadPrefix,
    /// `gw=` is not `a.b.c.d`.
    BadGateway,
    /// `gw=` without a static `ip=`.
    GatewayWithoutAddress,
}

impl fmt::Display for NetConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::BadAddress => "net: ip= must be dhcp or a.b.c.d/prefix",
            Self::BadPrefix => "net: ip= needs a prefix length of 0 to 32",
            Self::BadGateway => "net: gw= must be a.b.c.d",
            Self::GatewayWithoutAddress => "net: gw= needs a static ip=",
        })
    }
}

/// How the interface gets its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NetConfig {
    /// Ask a DHCPv4 server (the default).
    #[default]
    Dhcp,
    /// A fixed address and optional default gateway.
    Static {
        /// Address and prefix.
        address: Ipv4Cidr,
        /// Default route.
        gateway: Option<Ipv4Address>,
    },
}

/// Reads `ip=` and `gw=` from a kernel command line (space-separated
/// `key=value` items; others are ignored; the last of each wins).
/// `ip=dhcp` or no `ip=` means DHCP.
pub fn parse_net_config(cmdline: &str) -> Result<NetConfig> {
    let mut address = None;
    let mut gateway = None;
    for item in cmdline.split_ascii_whitespace() {
        if let Some(value) = item.strip_prefix("ip=") {
            address = if value.eq_ignore_ascii_case("dhcp") { None } else { Some(parse_cidr(value)?) };
        } else if let Some(value) = item.strip_prefix("gw=") {
            gateway = Some(parse_ipv4(value).ok_or(NetConfigError::BadGateway)?);
        }
    }
    match (address, gateway) {
        (Some(address), gateway) => Ok(NetConfig::Static { address, gateway }),
        (None, Some(_)) => Err(NetConfigError::GatewayWithoutAddress),
        (None, None) => Ok(NetConfig::Dhcp),
    }
}

fn parse_cidr(text: &str) -> Result<Ipv4Cidr> {
    let (address, prefix) = text.split_once('/').ok_or(NetConfigError::BadPrefix)?;
    let address = parse_ipv4(address).ok_or(NetConfigError::BadAddress)?;
    let prefix = parse_decimal(prefix).filter(|&prefix| prefix <= 32).ok_or(NetConfigError::BadPrefix)?;
    let prefix = u8::try_from(prefix).map_err(|_| NetConfigError::BadPrefix)?;
    Ok(Ipv4Cidr::new(address, prefix))
}

/// Dotted quad, each part 0 to 255 without a sign.
fn parse_ipv4(text: &str) -> Option<Ipv4Address> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        *octet = u8::try_from(parse_decimal(parts.next()?)?).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    let [a, b, c, d] = octets;
    Some(Ipv4Address::new(a, b, c, d))
}

/// 1 to 3 decimal digits.
fn parse_decimal(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 3 || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The interface configuration for an Ethernet device with `mac`.
pub fn interface_config(mac: [u8; 6]) -> iface::Config {
    iface::Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)))
}

/// An address change worth logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackEvent {
    /// The interface has this address (and gateway).
    Configured {
        /// Address and prefix.
        address: Ipv4Cidr,
        /// Default route.
        gateway: Option<Ipv4Address>,
    },
    /// The DHCP lease was lost: no address.
    Deconfigured,
}

/// Keeps the interface's address: set once for a static configuration,
/// or from a DHCPv4 socket's leases.
#[derive(Debug)]
pub struct Stack {
    dhcp: Option<SocketHandle>,
    address: Option<Ipv4Cidr>,
    gateway: Option<Ipv4Address>,
}

impl Stack {
    /// Applies a static configuration to `iface` at once, or adds a DHCPv4
    /// socket to `sockets` (poll it with [`Stack::poll`]).
    pub fn new(config: NetConfig, iface: &mut Interface, sockets: &mut SocketSet<'_>) -> Stack {
        match config {
            NetConfig::Static { address, gateway } => {
                let mut stack = Stack { dhcp: None, address: None, gateway: None };
                stack.configure(iface, address, gateway);
                stack
            }
            NetConfig::Dhcp => Stack { dhcp: Some(sockets.add(dhcpv4::Socket::new())), address: None, gateway: None },
        }
    }

    /// After each `Interface::poll`: applies a new DHCP lease or its loss
    /// to `iface`.
    pub fn poll(&mut self, iface: &mut Interface, sockets: &mut SocketSet<'_>) -> Option<StackEvent> {
        let handle = self.dhcp?;
        // Found by iteration rather than `get_mut`, which panics when the
        // caller passes another set.
        let socket =
            sockets.iter_mut().find(|(candidate, _)| *candidate == handle).and_then(|(_, socket)| dhcpv4::Socket::downcast_mut(socket))?;
        let lease = match socket.poll()? {
            dhcpv4::Event::Configured(config) => Some((config.address, config.router)),
            dhcpv4::Event::Deconfigured => None,
        };
        Some(match lease {
            Some((address, gateway)) => {
                self.configure(iface, address, gateway);
                StackEvent::Configured { address, gateway }
            }
            None => {
                self.deconfigure(iface);
                StackEvent::Deconfigured
            }
        })
    }

    /// The address in force.
    pub fn address(&self) -> Option<Ipv4Cidr> {
        self.address
    }

    /// The default gateway in force.
    pub fn gateway(&self) -> Option<Ipv4Address> {
        self.gateway
    }

    /// Whether addresses come from DHCP.
    pub fn is_dhcp(&self) -> bool {
        self.dhcp.is_some()
    }

    fn configure(&mut self, iface: &mut Interface, address: Ipv4Cidr, gateway: Option<Ipv4Address>) {
        iface.update_ip_addrs(|addresses| {
            addresses.clear();
            // The list was just emptied and holds at least one entry.
            let _ = addresses.push(IpCidr::Ipv4(address));
        });
        let routes = iface.routes_mut();
        routes.remove_default_ipv4_route();
        if let Some(gateway) = gateway {
            // Fails only when the route table is full, which it is not
            // after the removal.
            let _ = routes.add_default_ipv4_route(gateway);
        }
        self.address = Some(address);
        self.gateway = gateway;
    }

    fn deconfigure(&mut self, iface: &mut Interface) {
        iface.update_ip_addrs(|addresses| addresses.clear());
        iface.routes_mut().remove_default_ipv4_route();
        self.address = None;
        self.gateway = None;
    }
}
