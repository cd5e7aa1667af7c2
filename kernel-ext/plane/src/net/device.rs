//! Finding the virtio-net device and its interrupt line on each platform:
//! - QEMU `microvm`: virtio-mmio. QEMU names the devices on the command line
//!   only for Linux-format kernels, so `virtio_mmio.device=` items are used
//!   when present and otherwise microvm's fixed window is probed (512-byte
//!   slots at 0xfeb00000; slot `i` raises GSI `base + i`, base 24 with the
//!   second I/O APIC, 16 with ACPI, else 5).
//! - QEMU `q35`: modern virtio-net PCI; INTx of bus-0 slot `s`, pin `p`
//!   arrives on I/O APIC pin 16 + PIRQ, where q35 routes slots to PIRQ E..H
//!   as `(s + p - 1) % 4 + 4`.
//! - uhyve: its virtio-net PCI device; the interrupt line register (11)
//!   names the I/O APIC pin, edge-triggered.

use alloc::boxed::Box;
use alloc::format;
use core::ptr::NonNull;

use rtedge_arch::boot::{BootInfo, BootPath};
use rtedge_control::{Config, NetConfig};
use rtedge_engine::cmdline;
use rtedge_virtio::pci::find_net_devices;
use rtedge_virtio::{MmioTransport, PciTransport, Transport, VirtioNet, parse_mmio_devices};

use super::hal::{KernelHal, PortPciConfig};
use super::{Net, device_interrupt, install};
use rtedge_kernel::irq::{self, Polarity, Trigger};
use rtedge_kernel::memory;

const MICROVM_WINDOW: u64 = 0xfeb0_0000;
const MICROVM_SLOT: u64 = 512;
const MICROVM_SLOTS: u64 = 24;

/// Why the network did not come up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetError {
    NoDevice,
    Driver(alloc::string::String),
    Interrupt(alloc::string::String),
    Config(alloc::string::String),
}

impl core::fmt::Display for NetError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NetError::NoDevice => f.write_str("no virtio-net device"),
            NetError::Driver(text) => write!(f, "driver: {text}"),
            NetError::Interrupt(text) => write!(f, "interrupt: {text}"),
            NetError::Config(text) => write!(f, "configuration: {text}"),
        }
    }
}

fn control_config(line: &str) -> Result<Config, NetError> {
    let mut config = Config::DEFAULT;
    if let Some(port) = cmdline::get(line, "port") {
        config.port = port.parse().map_err(|_| NetError::Config(format!("port={port} is not a port number")))?;
    }
    let number = |key: &str| -> Result<Option<u64>, NetError> {
        cmdline::get(line, key)
            .map(|value| value.parse::<u64>().map_err(|_| NetError::Config(format!("{key}={value} is not a number"))))
            .transpose()
    };
    if let Some(clients) = number("max_clients")? {
        config.max_connections = clients as usize;
    }
    if let Some(seconds) = number("idle_timeout")? {
        config.idle_timeout_ms = seconds.saturating_mul(1000);
    }
    if let Some(rate) = number("rate_limit")? {
        config.rate_limit_per_second = u32::try_from(rate).unwrap_or(u32::MAX);
    }
    // Issue 12's limits (net/CONTROL.md, "Sessions"); INFO net and CONFIG GET show them.
    if let Some(reserved) = number("reserved_clients")? {
        config.reserved_clients = reserved as usize;
    }
    if let Some(ms) = number("auth_timeout_ms")? {
        config.auth_timeout_ms = ms;
    }
    if let Some(bytes) = number("preauth_input_bytes")? {
        config.preauth_input_bytes = bytes as usize;
    }
    if let Some(seconds) = number("send_timeout")? {
        config.send_timeout_ms = seconds.saturating_mul(1000);
    }
    if let Some(rate) = number("auth_failures_per_second")? {
        config.auth_failures_per_second = u32::try_from(rate).unwrap_or(u32::MAX);
    }
    if let Some(bytes) = number("max_subscription_bytes")? {
        config.max_subscription_bytes_per_client = bytes as usize;
    }
    if let Some(bytes) = number("max_transaction_bytes")? {
        config.max_transaction_bytes = bytes as usize;
    }
    // The budget stays under the heap: at most a quarter of it by default.
    let heap = rtedge_kernel::memory::heap::statistics().claimed_bytes;
    if heap > 0 {
        config.memory_limit_bytes = config.memory_limit_bytes.min((heap / 4).max(64 * 1024));
    }
    if let Some(bytes) = number("control_memory")? {
        config.memory_limit_bytes = bytes as usize;
    }
    config.validate().map_err(|error| NetError::Config(format!("{error}")))?;
    Ok(config)
}

/// `net_faults=<drop %>[,<corrupt %>]`: packet loss and corruption for
/// tests (each 0..=100; corruption defaults to the drop rate).
fn fault_injection(line: &str) -> Result<Option<(u8, u8)>, NetError> {
    let Some(value) = cmdline::get(line, "net_faults") else {
        return Ok(None);
    };
    let percent = |text: &str| -> Result<u8, NetError> {
        text.parse::<u8>()
            .ok()
            .filter(|percent| *percent <= 100)
            .ok_or_else(|| NetError::Config(format!("net_faults={value}: percentages 0..100 expected")))
    };
    let (drop_text, corrupt_text) = value.split_once(',').unwrap_or((value, value));
    Ok(Some((percent(drop_text)?, percent(corrupt_text)?)))
}

/// The control-plane token from the command line (`auth=`), empty if none.
pub fn auth_token(line: &str) -> &str {
    cmdline::get(line, "auth").unwrap_or("")
}

/// Finds the device, starts the stack and routes the interrupt.
pub fn start(info: &BootInfo) -> Result<(), NetError> {
    let line = info.command_line();
    let config = control_config(line)?;
    let net_config: NetConfig = rtedge_control::parse_net_config(line).map_err(|error| NetError::Config(format!("{error}")))?;
    let auth_required = !auth_token(line).is_empty();
    if !auth_required {
        log::warn!("net: no auth= token on the command line; the control plane is open to anyone who can reach it");
    }
    // PCI first (q35, uhyve), then virtio-mmio (microvm).
    let pci = find_net_devices(&PortPciConfig).next();
    if let Some(function) = pci {
        assign_bars(function.address);
        // SAFETY: the function was found by enumeration; the kernel's Hal
        // maps its BARs uncached; one driver per device.
        let transport = unsafe { PciTransport::new::<_, KernelHal>(&PortPciConfig, &function) }
            .map_err(|error| NetError::Driver(format!("{error}")))?;
        let (gsi, trigger, polarity) = match info.path {
            BootPath::Hermit => (u32::from(transport.interrupt_line()), Trigger::Edge, Polarity::High),
            BootPath::Pvh | BootPath::Multiboot2 => {
                let slot = u32::from(function.address.device);
                let pin = u32::from(function.interrupt_pin.max(1));
                (16 + ((slot + pin - 1) % 4 + 4), Trigger::Level, Polarity::Low)
            }
        };
        let description = format!("virtio-net pci {:?} gsi {gsi}", function.address);
        // uhyve 0.10's queue threads can miss a buffer added while they
        // re-enable notifications (they ignore virtio-queue's "more
        // arrived" answer): notify for every buffer there. It also receives
        // host frames into MTU + 12 bytes, truncating full-size Ethernet
        // frames: the stack assumes 1500-byte frames, so TCP peers send
        // segments that fit.
        let always_notify = info.path == BootPath::Hermit;
        return finish(transport, description, gsi, trigger, polarity, config, net_config, auth_required, always_notify);
    }
    // virtio-mmio: from the command line, else microvm's window.
    if let Some(device) = parse_mmio_devices(line).next() {
        // SAFETY: the command line names a virtio-mmio register block.
        let transport = unsafe { MmioTransport::map::<KernelHal>(&device) }.map_err(|error| NetError::Driver(format!("{error}")))?;
        let description = format!("virtio-mmio {:#x} gsi {}", device.base, device.irq);
        return finish(transport, description, device.irq, Trigger::Level, Polarity::High, config, net_config, auth_required, false);
    }
    if info.path.is_acpi_pc() {
        let base_gsi = match rtedge_kernel::firmware::madt() {
            Some(madt) if madt.io_apics().iter().any(|chip| chip.gsi_base == 24) => 24,
            Some(_) => 16,
            None => 5,
        };
        if memory::map_device(MICROVM_WINDOW, MICROVM_SLOT * MICROVM_SLOTS).is_ok() {
            for slot in 0..MICROVM_SLOTS {
                let base = MICROVM_WINDOW + slot * MICROVM_SLOT;
                // SAFETY: the window is mapped uncached; reading the magic and
                // device id of an empty slot returns zeros.
                let (magic, device_id) =
                    unsafe { (core::ptr::read_volatile(base as *const u32), core::ptr::read_volatile((base + 8) as *const u32)) };
                if magic != 0x7472_6976 || device_id != 1 {
                    continue;
                }
                let Some(pointer) = NonNull::new(base as *mut u8) else { continue };
                // SAFETY: a virtio-mmio net device answers at this mapped block.
                let transport =
                    unsafe { MmioTransport::new(pointer, MICROVM_SLOT as usize) }.map_err(|error| NetError::Driver(format!("{error}")))?;
                let gsi = base_gsi + slot as u32;
                let description = format!("virtio-mmio {base:#x} (slot {slot}) gsi {gsi}");
                return finish(transport, description, gsi, Trigger::Level, Polarity::High, config, net_config, auth_required, false);
            }
        }
    }
    Err(NetError::NoDevice)
}

/// Memory window for BARs the firmware left unassigned (qboot assigns
/// none of a device's 64-bit BARs): q35's PCI hole above its ECAM window,
/// below the I/O APIC.
const BAR_WINDOW: core::ops::Range<u64> = 0xc000_0000..0xfe00_0000;
static NEXT_BAR: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(BAR_WINDOW.start);

/// Gives every unassigned memory BAR of `address` an aligned place in the
/// PCI hole (sized the standard way: write all ones, read the mask back).
fn assign_bars(address: rtedge_virtio::PciAddress) {
    use rtedge_virtio::PciConfig;
    let config = PortPciConfig;
    let read = |offset: u16| config.read32(address.bus, address.device, address.function, offset);
    let write = |offset: u16, value: u32| config.write32(address.bus, address.device, address.function, offset, value);
    let mut bar = 0u16;
    while bar < 6 {
        let offset = 0x10 + bar * 4;
        let original = read(offset);
        if original & 1 != 0 {
            bar += 1; // I/O BAR: not used (modern devices need memory BARs)
            continue;
        }
        let is_64 = (original >> 1) & 0b11 == 0b10;
        let high = if is_64 { read(offset + 4) } else { 0 };
        let assigned = (u64::from(high) << 32) | u64::from(original & !0xf);
        // Size it with decoding off so the probe does not alias anything.
        let command = read(0x04);
        write(0x04, command & !0b11);
        write(offset, 0xffff_ffff);
        let mask_low = read(offset) & !0xf;
        write(offset, original);
        let size = if mask_low == 0 { 0 } else { u64::from(!mask_low) + 1 };
        write(0x04, command);
        if size > 0 && assigned == 0 {
            let start = NEXT_BAR.load(core::sync::atomic::Ordering::Relaxed).next_multiple_of(size);
            if start + size <= BAR_WINDOW.end {
                NEXT_BAR.store(start + size, core::sync::atomic::Ordering::Relaxed);
                write(offset, (start as u32) | (original & 0xf));
                if is_64 {
                    write(offset + 4, (start >> 32) as u32);
                }
                log::debug!("net: assigned BAR{bar} of {:?} at {start:#x} ({size} bytes)", address);
            }
        }
        bar += if is_64 { 2 } else { 1 };
    }
}

#[allow(clippy::too_many_arguments, reason = "one call site per transport")]
fn finish<T: Transport + 'static>(
    transport: T,
    description: alloc::string::String,
    gsi: u32,
    trigger: Trigger,
    polarity: Polarity,
    config: Config,
    net_config: NetConfig,
    auth_required: bool,
    always_notify: bool,
) -> Result<(), NetError> {
    let mut device = VirtioNet::<T, KernelHal>::new(transport).map_err(|error| NetError::Driver(format!("{error}")))?;
    if always_notify {
        // uhyve: see the call site.
        device.set_always_notify(true);
        device.set_max_frame(1500);
    }
    let mac = device.mac();
    let ack = device.interrupt_ack();
    let net: Box<dyn super::NetOps> = match fault_injection(rtedge_kernel::boot::command_line())? {
        Some((drop_pct, corrupt_pct)) => {
            // Test mode (issue 12): smoltcp's fault injector between the
            // stack and the NIC. It hides the device, so the device's
            // counters read zero and the re-check after enabling interrupts
            // is skipped (transmit reclaims by itself; interrupts stay on).
            log::warn!("net: fault injection (net_faults=): dropping {drop_pct} % and corrupting {corrupt_pct} % of the packets each way");
            let mut faulty = smoltcp::phy::FaultInjector::new(device, 0x5eed_2026);
            faulty.set_drop_chance(drop_pct);
            faulty.set_corrupt_chance(corrupt_pct);
            Box::new(
                Net::new(
                    faulty,
                    mac,
                    description.clone(),
                    config,
                    net_config,
                    auth_required,
                    |_| rtedge_virtio::NetStats::default(),
                    |_| {},
                    |_| false,
                )
                .map_err(|error| NetError::Config(format!("{error:?}")))?,
            )
        }
        None => Box::new(
            Net::new(
                {
                    // One notification per poll for all the frames it sent:
                    // each is a hypervisor exit (issue 12, RT isolation); the
                    // poll's end flushes. Not behind the fault injector, whose
                    // hooks cannot reach the device to flush, nor on uhyve,
                    // which keeps one per frame (see the call site).
                    let mut device = device;
                    device.set_batched_notifications(!always_notify);
                    device
                },
                mac,
                description.clone(),
                config,
                net_config,
                auth_required,
                |device| device.stats(),
                |device| device.disable_interrupts(),
                |device| {
                    device.flush_transmit();
                    device.reclaim_transmitted();
                    device.enable_interrupts()
                },
            )
            .map_err(|error| NetError::Config(format!("{error:?}")))?,
        ),
    };
    install(net, ack);
    irq::attach(gsi, "virtio-net", device_interrupt, trigger, polarity).map_err(|error| NetError::Interrupt(format!("{error}")))?;
    super::kick();
    log::info!(
        "net: {description}, mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, control plane on port {}",
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5],
        config.port
    );
    Ok(())
}
