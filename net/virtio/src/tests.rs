//! Host tests of the driver against the simulated device in `fake.rs`.
//!
//! Every test that brings a device up ends by checking that the device saw
//! no protocol violation (wrong status order, wrong register width, a
//! descriptor or address out of range, a notify before DRIVER_OK, ...).

#![allow(clippy::unwrap_used, reason = "tests: a panic is a failure report")]

use std::cell::RefCell;
use std::ptr::NonNull;
use std::rc::Rc;

use smoltcp::phy::{Device, RxToken, TxToken};
use smoltcp::time::Instant;

use crate::fake::{
    DeviceModel, FakeMmio, FakePciBus, FakePciNet, MMIO_SIZE, Model, Op, PciFlavour, TestHal, live_dma_pages, pci_header, set_dma_budget,
};
use crate::{MmioDeviceInfo, MmioTransport, NetConfig, PciTransport, VirtioError, VirtioNet, parse_mmio_devices, pci};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

const F_CSUM: u64 = 1 << 0;
const F_GUEST_CSUM: u64 = 1 << 1;
const F_MTU: u64 = 1 << 3;
const F_MAC: u64 = 1 << 5;
const F_HOST_TSO4: u64 = 1 << 11;
const F_MRG_RXBUF: u64 = 1 << 15;
const F_STATUS: u64 = 1 << 16;
const F_CTRL_VQ: u64 = 1 << 17;
const F_ANY_LAYOUT: u64 = 1 << 27;
const F_INDIRECT_DESC: u64 = 1 << 28;
const F_EVENT_IDX: u64 = 1 << 29;
const F_VERSION_1: u64 = 1 << 32;
const F_ACCESS_PLATFORM: u64 = 1 << 33;

/// What QEMU's virtio-net offers, more or less: offloads the driver must decline.
const QEMU_MODERN: u64 = F_VERSION_1
    | F_ACCESS_PLATFORM
    | F_MAC
    | F_STATUS
    | F_CSUM
    | F_GUEST_CSUM
    | F_HOST_TSO4
    | F_MRG_RXBUF
    | F_CTRL_VQ
    | F_INDIRECT_DESC
    | F_EVENT_IDX;
const QEMU_LEGACY: u64 = F_MAC | F_STATUS | F_CSUM | F_MRG_RXBUF | F_ANY_LAYOUT | F_EVENT_IDX | F_INDIRECT_DESC;
/// uhyve 0.10's offer: MAC, STATUS, MTU, GUEST_CSUM, VERSION_1.
const UHYVE: u64 = F_VERSION_1 | F_MAC | F_STATUS | F_MTU | F_GUEST_CSUM;

type MmioNet = VirtioNet<MmioTransport, TestHal>;
type PciNet = VirtioNet<PciTransport, TestHal>;

fn model(legacy: bool, features: u64, queue_max: u16) -> Model {
    Rc::new(RefCell::new(DeviceModel::new(legacy, features, queue_max, MAC)))
}

fn mmio_transport(model: &Model, version: u32) -> MmioTransport {
    let (_fake, base) = FakeMmio::install(model.clone(), version, 1);
    // SAFETY: `base` is the fake's register block (host memory of
    // MMIO_SIZE bytes, alive for the thread), registered on the fake bus.
    unsafe { MmioTransport::new(base, MMIO_SIZE) }.unwrap()
}

fn mmio_net(version: u32, features: u64, queue_max: u16, config: NetConfig) -> (Model, MmioNet) {
    let model = model(version == 1, features, queue_max);
    let net = VirtioNet::with_config(mmio_transport(&model, version), config).unwrap();
    (model, net)
}

fn pci_transport(flavour: PciFlavour, model: &Model) -> (FakePciBus, PciTransport) {
    let fake = FakePciNet::new(flavour, model.clone());
    let mut bus = FakePciBus::default();
    bus.add((0, 0, 0), fake.config);
    if flavour == PciFlavour::Uhyve {
        bus.status_mirror.insert((0, 0, 0), model.clone());
        bus.uhyve_aliasing = true;
    }
    let function = pci::find_net_devices(&bus).next().unwrap();
    // SAFETY: the function is the simulated device, whose BAR decodes the
    // registered fake register window.
    let transport = unsafe { PciTransport::new::<_, TestHal>(&bus, &function) }.unwrap();
    (bus, transport)
}

fn pci_net(flavour: PciFlavour, features: u64, queue_max: u16, config: NetConfig) -> (Model, FakePciBus, PciNet) {
    let model = model(false, features, queue_max);
    let (bus, transport) = pci_transport(flavour, &model);
    let net = VirtioNet::with_config(transport, config).unwrap();
    (model, bus, net)
}

fn small(buffers: u16) -> NetConfig {
    NetConfig { rx_buffers: buffers, tx_buffers: buffers, ..NetConfig::default() }
}

fn assert_no_violations(model: &Model) {
    let violations = &model.borrow().violations;
    assert!(violations.is_empty(), "device saw protocol violations: {violations:#?}");
}

/// Sends `payload` through smoltcp's `Device` API.
fn send<D: Device>(device: &mut D, payload: &[u8]) {
    let token = device.transmit(Instant::ZERO).expect("a transmit token");
    token.consume(payload.len(), |buffer| buffer.copy_from_slice(payload));
}

/// Receives one frame through smoltcp's `Device` API.
fn receive<D: Device>(device: &mut D) -> Option<Vec<u8>> {
    let (rx, _tx) = device.receive(Instant::ZERO)?;
    Some(rx.consume(|frame| frame.to_vec()))
}

fn frame(seed: u32, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seed as usize * 31 + i * 7) as u8).collect()
}

// ---- negotiation and status order ----------------------------------------

#[test]
fn mmio_v2_negotiates_version_1_mac_status_and_follows_the_status_sequence() {
    let (model, net) = mmio_net(2, QEMU_MODERN, 256, NetConfig::default());
    let expected_features = F_VERSION_1 | F_ACCESS_PLATFORM | F_MAC | F_STATUS;
    assert_eq!(
        model.borrow().ops,
        vec![
            Op::StatusWrite(0),
            Op::StatusRead(0),
            Op::StatusWrite(1),
            Op::StatusWrite(3),
            Op::DriverFeatures(expected_features & 0xffff_ffff),
            Op::DriverFeatures(expected_features),
            Op::StatusWrite(11),
            Op::StatusRead(11),
            Op::QueueEnabled(0),
            Op::QueueEnabled(1),
            Op::StatusWrite(15),
            Op::Notify(0),
        ]
    );
    assert_eq!(net.features(), expected_features);
    assert_eq!(net.mac(), MAC);
    assert_eq!(net.header_len(), 12);
    assert_eq!(net.link_up(), Some(true));
    assert_eq!(net.queue_sizes(), (256, 256));
    assert_eq!(net.buffer_counts(), (64, 64));
    assert_eq!(model.borrow().queues[0].available(), 64, "all receive buffers posted");
    assert_no_violations(&model);
}

#[test]
fn mmio_v1_legacy_skips_features_ok_and_uses_the_10_byte_header() {
    let (model, mut net) = mmio_net(1, QEMU_LEGACY, 256, NetConfig::default());
    let expected_features = F_MAC | F_STATUS | F_ANY_LAYOUT;
    assert_eq!(
        model.borrow().ops,
        vec![
            Op::StatusWrite(0),
            Op::StatusRead(0),
            Op::StatusWrite(1),
            Op::StatusWrite(3),
            Op::DriverFeatures(expected_features),
            Op::QueueEnabled(0),
            Op::QueueEnabled(1),
            Op::StatusWrite(7),
            Op::Notify(0),
        ]
    );
    assert_eq!(net.features(), expected_features);
    assert_eq!(net.header_len(), 10);
    assert_eq!(net.mac(), MAC);
    assert_eq!(model.borrow().guest_page_size, 4096);
    // The device derived the rings from the PFN with QEMU's formula; frames
    // crossing in both directions prove the driver laid them out the same.
    send(&mut net, &frame(1, 60));
    assert_eq!(model.borrow().tx_frames, vec![[vec![0; 10], frame(1, 60)].concat()]);
    assert!(model.borrow_mut().inject_rx(&frame(2, 1514)));
    assert_eq!(receive(&mut net), Some(frame(2, 1514)));
    assert_no_violations(&model);
}

#[test]
fn refused_features_ok_fails_without_touching_queues_or_leaking_dma() {
    let model = model(false, QEMU_MODERN, 256);
    model.borrow_mut().reject_features = true;
    let result = VirtioNet::<_, TestHal>::new(mmio_transport(&model, 2));
    assert_eq!(result.err(), Some(VirtioError::FeaturesRejected));
    let ops = &model.borrow().ops;
    assert_eq!(ops.last(), Some(&Op::StatusWrite(0x80 | 3)), "FAILED set after the refusal");
    assert!(!ops.iter().any(|op| matches!(op, Op::QueueEnabled(_))));
    assert_eq!(live_dma_pages(), 0);
}

#[test]
fn modern_device_without_version_1_is_rejected_before_features_ok() {
    let model = model(false, F_MAC | F_STATUS, 256);
    let result = VirtioNet::<_, TestHal>::new(mmio_transport(&model, 2));
    assert_eq!(result.err(), Some(VirtioError::FeaturesRejected));
    let ops = &model.borrow().ops;
    assert!(!ops.contains(&Op::StatusWrite(11)));
    assert_eq!(ops.last(), Some(&Op::StatusWrite(0x80 | 3)));
}

#[test]
fn device_without_mac_feature_gets_the_fallback_address() {
    let config = NetConfig { fallback_mac: [2, 9, 8, 7, 6, 5], ..NetConfig::default() };
    let (model, net) = mmio_net(2, F_VERSION_1, 256, config);
    assert_eq!(net.mac(), [2, 9, 8, 7, 6, 5]);
    assert_eq!(net.link_up(), None, "no STATUS feature, no link state");
    assert_no_violations(&model);
}

#[test]
fn out_of_dma_memory_fails_cleanly_before_the_device_sees_an_address() {
    let model = model(false, QEMU_MODERN, 256);
    set_dma_budget(Some(2));
    let result = VirtioNet::<_, TestHal>::new(mmio_transport(&model, 2));
    set_dma_budget(None);
    assert_eq!(result.err(), Some(VirtioError::OutOfDmaMemory));
    assert_eq!(live_dma_pages(), 0, "partial allocations returned");
    let ops = &model.borrow().ops;
    assert!(!ops.iter().any(|op| matches!(op, Op::QueueEnabled(_))));
    assert_eq!(ops.last(), Some(&Op::StatusWrite(0x80 | 11)));
}

#[test]
fn dropping_the_driver_resets_the_device_then_frees_all_dma() {
    let (model, net) = mmio_net(2, QEMU_MODERN, 256, NetConfig::default());
    assert!(live_dma_pages() > 0);
    let resets = model.borrow().resets;
    drop(net);
    assert_eq!(model.borrow().resets, resets + 1);
    assert_eq!(model.borrow().status, 0);
    assert_eq!(live_dma_pages(), 0);
}

#[test]
fn bad_config_is_rejected() {
    let model = model(false, QEMU_MODERN, 256);
    let config = NetConfig { buffer_size: 1500, ..NetConfig::default() };
    let result = VirtioNet::<_, TestHal>::with_config(mmio_transport(&model, 2), config);
    assert_eq!(result.err(), Some(VirtioError::BadConfig));
}

// ---- MMIO probing and command line ------------------------------------------

#[test]
fn mmio_probe_checks_magic_version_and_device_id() {
    let probe = |magic: u32, version: u32, device_id: u32| {
        let model = model(version == 1, QEMU_MODERN, 256);
        let (fake, base) = FakeMmio::install(model, version, device_id);
        let _ = fake;
        // SAFETY: as in `mmio_transport`.
        unsafe {
            if magic != 0x7472_6976 {
                // Re-install with a broken magic value.
                let model = Rc::new(RefCell::new(DeviceModel::new(false, 0, 8, MAC)));
                let fake = Rc::new(FakeMmio { model, version, device_id, magic, block: Box::new([0; 64]) });
                let base = NonNull::new(fake.block.as_ptr() as *mut u8).unwrap();
                crate::fake::bus::register(base.as_ptr() as usize, MMIO_SIZE, fake.clone());
                return MmioTransport::new(base, MMIO_SIZE).map(|_| ());
            }
            MmioTransport::new(base, MMIO_SIZE).map(|_| ())
        }
    };
    assert_eq!(probe(0x7472_6976, 2, 1), Ok(()));
    assert_eq!(probe(0x7472_6976, 1, 1), Ok(()));
    assert_eq!(probe(0x1234_5678, 2, 1), Err(VirtioError::BadMagic));
    assert_eq!(probe(0x7472_6976, 3, 1), Err(VirtioError::UnsupportedVersion(3)));
    assert_eq!(probe(0x7472_6976, 2, 0), Err(VirtioError::NotFound));
    assert_eq!(probe(0x7472_6976, 2, 2), Err(VirtioError::WrongDeviceType(2)));
    let model = model(false, 0, 8);
    let (_fake, base) = FakeMmio::install(model, 2, 1);
    // SAFETY: as in `mmio_transport`, with a smaller (still valid) size.
    let too_small = unsafe { MmioTransport::new(base, 0x80) };
    assert_eq!(too_small.err(), Some(VirtioError::BadCapability));
}

#[test]
fn cmdline_yields_every_virtio_mmio_device_and_skips_bad_items() {
    let cmdline = "console=ttyS0 virtio_mmio.device=512@0xfeb00e00:12 \
        virtio_mmio.device=4K@0xfeb01000:13:2 virtio_mmio.device=1M@4096:5 \
        virtio_mmio.device=512@0xzz:1 virtio_mmio.device=512@0x1000 virtio_mmio.device=0@0x1000:3 \
        virtio_mmio.device=@0x1000:3 virtio_mmio.device=512@0x1000:-1 xvirtio_mmio.device=512@0x2000:4 \
        virtio_mmio.device=16G@0xffffffffffffffff:4 virtio_mmio.device=2k@0XD0000000:31 quiet";
    let devices: Vec<MmioDeviceInfo> = parse_mmio_devices(cmdline).collect();
    assert_eq!(
        devices,
        vec![
            MmioDeviceInfo { base: 0xfeb0_0e00, size: 512, irq: 12 },
            MmioDeviceInfo { base: 0xfeb0_1000, size: 4096, irq: 13 },
            MmioDeviceInfo { base: 4096, size: 1 << 20, irq: 5 },
            MmioDeviceInfo { base: 0xd000_0000, size: 2048, irq: 31 },
        ]
    );
    assert_eq!(parse_mmio_devices("").count(), 0);
    assert_eq!(parse_mmio_devices("virtio_mmio.device=").count(), 0);
}

#[test]
fn mmio_map_uses_the_hal_mapping_of_the_cmdline_address() {
    let model = model(false, QEMU_MODERN, 256);
    let (_fake, base) = FakeMmio::install(model.clone(), 2, 1);
    crate::fake::add_mmio_window(0xfeb0_0e00, MMIO_SIZE, base.as_ptr() as usize);
    let info = parse_mmio_devices("virtio_mmio.device=512@0xfeb00e00:12").next().unwrap();
    // SAFETY: the window at that address is the simulated device.
    let transport = unsafe { MmioTransport::map::<TestHal>(&info) }.unwrap();
    assert_eq!(transport.version(), crate::MmioVersion::Modern);
    assert_eq!(transport.vendor_id(), 0x554d_4551);
    let unmapped = MmioDeviceInfo { base: 0x1000, size: 512, irq: 1 };
    // SAFETY: nothing is mapped there; `map` must fail before any access.
    let error = unsafe { MmioTransport::map::<TestHal>(&unmapped) }.err();
    assert_eq!(error, Some(VirtioError::MapFailed));
    let net = VirtioNet::<_, TestHal>::new(transport).unwrap();
    assert_eq!(net.mac(), MAC);
    assert_no_violations(&model);
}

// ---- data path -------------------------------------------------------------

#[test]
fn smoltcp_transmit_reaches_the_device_with_header_and_exact_payload() {
    let (model, mut net) = mmio_net(2, QEMU_MODERN, 256, NetConfig::default());
    for (seed, len) in [(1, 60), (2, 1514), (3, 14)] {
        send(&mut net, &frame(seed, len));
    }
    let raw = model.borrow().tx_frames.clone();
    assert_eq!(raw.len(), 3);
    for (raw, (seed, len)) in raw.iter().zip([(1, 60), (2, 1514), (3, 14)]) {
        assert_eq!(&raw[..12], &[0; 12], "virtio_net_hdr: no offloads, GSO_NONE");
        assert_eq!(&raw[12..], &frame(seed, len)[..]);
    }
    let stats = net.stats();
    assert_eq!((stats.tx_packets, stats.tx_bytes, stats.tx_dropped), (3, 60 + 1514 + 14, 0));
    // `transmit` reclaimed the first two already; the last is still out.
    assert_eq!(net.reclaim_transmitted(), 1);
    assert_eq!(net.reclaim_transmitted(), 0);
    assert_no_violations(&model);
}

#[test]
fn injected_frames_come_out_byte_exact_and_buffers_are_reposted() {
    let (model, mut net) = mmio_net(2, QEMU_MODERN, 256, NetConfig::default());
    let frames = [frame(7, 60), frame(8, 1514), frame(9, 1)];
    for frame in &frames {
        assert!(model.borrow_mut().inject_rx(frame));
    }
    assert_eq!(model.borrow().queues[0].available(), 61);
    assert!(net.pending_receive());
    for expected in &frames {
        assert_eq!(receive(&mut net).as_ref(), Some(expected));
    }
    assert_eq!(receive(&mut net), None);
    assert!(!net.pending_receive());
    assert_eq!(model.borrow().queues[0].available(), 64, "every buffer back with the device");
    let stats = net.stats();
    assert_eq!((stats.rx_packets, stats.rx_bytes, stats.rx_errors), (3, 60 + 1514 + 1, 0));
    assert_no_violations(&model);
}

#[test]
fn an_unconsumed_rx_token_still_returns_its_buffer() {
    let (model, mut net) = mmio_net(2, QEMU_MODERN, 8, small(8));
    assert!(model.borrow_mut().inject_rx(&frame(1, 100)));
    let tokens = net.receive(Instant::ZERO);
    assert!(tokens.is_some());
    drop(tokens);
    assert_eq!(model.borrow().queues[0].available(), 8);
    assert_eq!(net.stats().rx_dropped, 1);
    assert_no_violations(&model);
}

#[test]
fn rings_wrap_around_far_beyond_the_queue_size_and_the_u16_index() {
    let (model, mut net) = mmio_net(2, QEMU_MODERN, 8, small(8));
    assert_eq!(net.queue_sizes(), (8, 8));
    // 70 000 > 3 × 8, and past 65 536 so the free-running indices wrap too.
    let rounds = 70_000u32;
    for round in 0..rounds {
        let len = 14 + (round as usize % 1500);
        let outgoing = frame(round, len);
        send(&mut net, &outgoing);
        let incoming = frame(round ^ 0x5a5a, 1514 - (round as usize % 1500));
        assert!(model.borrow_mut().inject_rx(&incoming));
        assert_eq!(receive(&mut net), Some(incoming));
        let sent = model.borrow_mut().take_tx_frames();
        assert_eq!(sent, vec![outgoing], "round {round}");
    }
    let stats = net.stats();
    assert_eq!((stats.tx_packets, stats.rx_packets), (u64::from(rounds), u64::from(rounds)));
    assert_eq!((stats.tx_dropped, stats.rx_errors, stats.tx_errors), (0, 0, 0));
    assert_eq!(model.borrow().queues[0].avail_idx(), (8 + rounds) as u16);
    assert_no_violations(&model);
}

#[test]
fn transmit_pool_exhaustion_and_reclaim() {
    let (model, mut net) = mmio_net(2, QEMU_MODERN, 8, small(4));
    model.borrow_mut().hold_tx = true;
    for seed in 0..4 {
        send(&mut net, &frame(seed, 64));
    }
    assert!(net.transmit(Instant::ZERO).is_none(), "pool of 4 exhausted");
    // A receive still gets a transmit token; with no buffer its frame is dropped.
    assert!(model.borrow_mut().inject_rx(&frame(9, 64)));
    let (rx, tx) = net.receive(Instant::ZERO).unwrap();
    rx.consume(|_| ());
    tx.consume(64, |buffer| buffer.fill(0xee));
    assert_eq!(net.stats().tx_dropped, 1);
    model.borrow_mut().process_tx();
    assert_eq!(net.reclaim_transmitted(), 4);
    assert_eq!(net.reclaim_transmitted(), 0);
    send(&mut net, &frame(5, 64));
    model.borrow_mut().process_tx();
    let sent = model.borrow_mut().take_tx_frames();
    assert_eq!(sent, (0..4).chain([5]).map(|seed| frame(seed, 64)).collect::<Vec<_>>());
    assert_no_violations(&model);
}

#[test]
fn notifications_are_skipped_while_the_device_asks_for_none() {
    let (model, mut net) = mmio_net(2, QEMU_MODERN, 8, small(8));
    model.borrow_mut().queues[1].set_no_notify(true);
    model.borrow_mut().hold_tx = true;
    send(&mut net, &frame(1, 64));
    assert_eq!(model.borrow().notifications[1], 0);
    model.borrow_mut().queues[1].set_no_notify(false);
    send(&mut net, &frame(2, 64));
    assert_eq!(model.borrow().notifications[1], 1);
    assert_no_violations(&model);
}

#[test]
fn batched_notifications_kick_once_per_poll_for_all_its_frames() {
    let (model, mut net) = mmio_net(2, QEMU_MODERN, 16, small(16));
    net.set_batched_notifications(true);
    model.borrow_mut().hold_tx = true;
    // One "poll": the stack sends five frames (the device never asks for
    // no notifications here, so an unbatched driver kicks five times).
    for seed in 0..5 {
        send(&mut net, &frame(seed, 64));
    }
    assert_eq!(model.borrow().notifications[1], 0, "nothing kicked before the flush");
    net.flush_transmit();
    assert_eq!(model.borrow().notifications[1], 1, "one kick for the poll's five frames");
    net.flush_transmit();
    assert_eq!(model.borrow().notifications[1], 1, "a flush with nothing new does not kick");
    assert_eq!(net.stats().tx_notifications, 1);
    model.borrow_mut().process_tx();
    let sent = model.borrow_mut().take_tx_frames();
    assert_eq!(sent, (0..5).map(|seed| frame(seed, 64)).collect::<Vec<_>>(), "nothing lost or reordered");
    // The device asking for no notifications is still honoured at the flush.
    model.borrow_mut().queues[1].set_no_notify(true);
    send(&mut net, &frame(7, 64));
    net.flush_transmit();
    assert_eq!(model.borrow().notifications[1], 1);
    // Turning batching off flushes nothing lost: the next frame kicks itself.
    model.borrow_mut().queues[1].set_no_notify(false);
    net.set_batched_notifications(false);
    send(&mut net, &frame(8, 64));
    assert_eq!(model.borrow().notifications[1], 2);
    assert_no_violations(&model);
}

#[test]
fn transmit_completions_do_not_interrupt_unless_the_pool_is_empty() {
    let (model, mut net) = mmio_net(2, QEMU_MODERN, 8, small(4));
    model.borrow_mut().hold_tx = true;
    assert!(!net.enable_interrupts());
    send(&mut net, &frame(1, 64));
    model.borrow_mut().process_tx();
    assert_eq!(model.borrow().isr, 0, "a completed frame with buffers to spare raises nothing");
    assert!(!net.enable_interrupts(), "nor is it work to poll for");
    // The pool runs dry: now the stack waits for a buffer, and the device
    // must say when one returns.
    for seed in 2..6 {
        send(&mut net, &frame(seed, 64));
    }
    assert!(net.transmit(Instant::ZERO).is_none(), "pool of 4 exhausted");
    assert!(!net.enable_interrupts());
    model.borrow_mut().process_tx();
    assert_eq!(model.borrow().isr, 1, "a buffer came back to an empty pool: interrupt");
    assert!(net.enable_interrupts(), "and the re-check sees it");
    assert_eq!(net.reclaim_transmitted(), 4);
    // Receiving always interrupts once enabled.
    assert!(net.ack_interrupt());
    assert!(!net.enable_interrupts());
    assert!(model.borrow_mut().inject_rx(&frame(9, 64)));
    assert_eq!(model.borrow().isr, 1);
    assert_no_violations(&model);
}

#[test]
fn the_largest_frame_can_be_lowered_for_the_stack() {
    use smoltcp::phy::Device;
    let (_model, mut net) = mmio_net(2, QEMU_MODERN, 8, small(8));
    assert_eq!(net.capabilities().max_transmission_unit, crate::MAX_FRAME_LEN);
    net.set_max_frame(1500);
    assert_eq!(net.capabilities().max_transmission_unit, 1500);
    net.set_max_frame(9000);
    assert_eq!(net.capabilities().max_transmission_unit, crate::MAX_FRAME_LEN);
}

#[test]
fn always_notify_ignores_the_devices_no_notify_hint() {
    let (model, mut net) = mmio_net(2, QEMU_MODERN, 8, small(8));
    net.set_always_notify(true);
    model.borrow_mut().queues[1].set_no_notify(true);
    model.borrow_mut().hold_tx = true;
    send(&mut net, &frame(1, 64));
    send(&mut net, &frame(2, 64));
    assert_eq!(model.borrow().notifications[1], 2);
    assert_no_violations(&model);
}

// ---- interrupts --------------------------------------------------------------

#[test]
fn mmio_interrupt_ack_reads_status_and_acknowledges_it() {
    let (model, mut net) = mmio_net(2, QEMU_MODERN, 8, small(8));
    assert!(!net.ack_interrupt(), "nothing pending after init");
    assert!(model.borrow_mut().inject_rx(&frame(1, 64)));
    assert_eq!(model.borrow().isr, 1);
    assert!(net.ack_interrupt());
    assert_eq!(model.borrow().isr, 0, "InterruptACK written with the pending bits");
    assert!(!net.ack_interrupt(), "a shared line raised by someone else");
    assert_eq!(receive(&mut net), Some(frame(1, 64)));

    // NAPI: interrupts off while polling, back on with a re-check.
    net.disable_interrupts();
    assert!(model.borrow_mut().inject_rx(&frame(2, 64)));
    assert_eq!(model.borrow().isr, 0, "device honoured VIRTQ_AVAIL_F_NO_INTERRUPT");
    assert!(net.pending_receive());
    assert!(net.enable_interrupts(), "work arrived while interrupts were off");
    assert_eq!(receive(&mut net), Some(frame(2, 64)));
    assert!(!net.enable_interrupts());

    model.borrow_mut().set_link(false);
    assert!(net.ack_interrupt());
    assert_eq!(net.link_up(), Some(false));
    let stats = net.stats();
    assert_eq!((stats.interrupts, stats.config_changes), (2, 1));
    assert_no_violations(&model);
}

#[test]
fn detached_interrupt_ack_handles_acknowledge_without_the_driver() {
    let (mmio_model, mmio) = mmio_net(2, QEMU_MODERN, 8, small(8));
    let (pci_model, _bus, pci) = pci_net(PciFlavour::Uhyve, UHYVE, 256, NetConfig::default());
    for (model, ack) in [(&mmio_model, mmio.interrupt_ack()), (&pci_model, pci.interrupt_ack())] {
        assert!(!ack.ack().any());
        assert!(model.borrow_mut().inject_rx(&frame(1, 64)));
        model.borrow_mut().set_link(true);
        let status = ack.ack();
        assert!(status.queue() && status.config(), "{status:?}");
        assert_eq!(model.borrow().isr, 0);
        assert!(!ack.ack().any());
        assert_no_violations(model);
    }
}

#[test]
fn the_driver_can_move_between_cpus() {
    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send::<MmioNet>();
    assert_send::<PciNet>();
    assert_send_sync::<crate::InterruptAck>();
}

#[test]
fn pci_isr_read_is_the_acknowledge() {
    let (model, _bus, mut net) = pci_net(PciFlavour::Qemu, QEMU_MODERN, 256, NetConfig::default());
    assert!(!net.ack_interrupt());
    assert!(model.borrow_mut().inject_rx(&frame(3, 200)));
    assert!(net.ack_interrupt());
    assert!(!net.ack_interrupt(), "the read cleared the ISR");
    assert_eq!(receive(&mut net), Some(frame(3, 200)));
    assert_eq!(net.stats().interrupts, 1);
    assert_no_violations(&model);
}

// ---- a device that lies --------------------------------------------------------

#[test]
fn used_length_beyond_the_buffer_is_counted_and_the_buffer_recycled() {
    let (model, mut net) = mmio_net(2, QEMU_MODERN, 8, small(8));
    for bad_len in [2049, 4096, u32::MAX, 5] {
        model.borrow_mut().return_rx_with_len(bad_len).unwrap();
        assert_eq!(receive(&mut net), None);
    }
    assert_eq!(net.stats().rx_errors, 4);
    // A frame of just the header is dropped, not an error.
    model.borrow_mut().return_rx_with_len(12).unwrap();
    assert_eq!(receive(&mut net), None);
    assert_eq!(net.stats().rx_dropped, 1);
    assert_eq!(model.borrow().queues[0].available(), 8, "all buffers posted again");
    for seed in 0..8 {
        assert!(model.borrow_mut().inject_rx(&frame(seed, 1514)));
    }
    for seed in 0..8 {
        assert_eq!(receive(&mut net), Some(frame(seed, 1514)));
    }
    assert_eq!(net.stats().rx_packets, 8);
    assert_no_violations(&model);
}

#[test]
fn used_ids_out_of_range_or_not_posted_are_rejected() {
    let (model, mut net) = mmio_net(2, QEMU_MODERN, 8, small(4));
    {
        let mut model = model.borrow_mut();
        let queue = &mut model.queues[0];
        queue.push_used(4, 100); // descriptor exists in the ring of 8, but no buffer 4
        queue.push_used(999, 100);
        queue.push_used(u32::MAX, 100);
    }
    assert_eq!(receive(&mut net), None);
    assert_eq!(net.stats().rx_errors, 3);
    assert!(model.borrow_mut().inject_rx(&frame(3, 60)));
    assert_eq!(receive(&mut net), Some(frame(3, 60)));
    // The transmit queue is checked the same way: buffer 0 is free (the
    // driver holds it), 70 000 does not exist, and a real transmission
    // returned twice counts once.
    model.borrow_mut().queues[1].push_used(0, 0);
    model.borrow_mut().queues[1].push_used(70_000, 0);
    assert_eq!(net.reclaim_transmitted(), 0);
    assert_eq!(net.stats().tx_errors, 2);
    model.borrow_mut().hold_tx = true;
    send(&mut net, &frame(2, 64));
    let (head, _) = model.borrow_mut().queues[1].pop_avail(&mut Vec::new()).unwrap();
    model.borrow_mut().queues[1].push_used(u32::from(head), 0);
    model.borrow_mut().queues[1].push_used(u32::from(head), 0);
    assert_eq!(net.reclaim_transmitted(), 1);
    assert_eq!(net.stats().tx_errors, 3);
    model.borrow_mut().hold_tx = false;
    send(&mut net, &frame(1, 64));
    assert_eq!(model.borrow_mut().take_tx_frames(), vec![frame(1, 64)]);
    assert_no_violations(&model);
}

#[test]
fn a_used_index_running_ahead_of_the_ring_is_counted_not_followed() {
    let (model, mut net) = mmio_net(2, QEMU_MODERN, 8, small(8));
    model.borrow_mut().queues[0].jump_used_idx(1000);
    assert_eq!(receive(&mut net), None);
    assert_eq!(net.stats().rx_errors, 1);
    assert!(model.borrow_mut().inject_rx(&frame(4, 64)));
    assert_eq!(receive(&mut net), Some(frame(4, 64)));
    assert_no_violations(&model);
}

// ---- PCI -----------------------------------------------------------------------

#[test]
fn pci_scan_follows_bridges_and_multi_function_devices_only() {
    let mut bus = FakePciBus::default();
    bus.add((0, 0, 0), pci_header(0x8086, 0x29c0, 0x06_00_00, 0)); // host bridge
    let mut bridge = pci_header(0x1b36, 0x000c, 0x06_04_00, 1);
    bridge[0x18..0x1b].copy_from_slice(&[0, 1, 2]);
    bus.add((0, 1, 0), bridge);
    bus.add((0, 2, 0), pci_header(0x1af4, 0x1042, 0x01_00_00, 0x80)); // multi-function block device
    bus.add((0, 2, 5), pci_header(0x1af4, 0x1000, 0x02_00_00, 0));
    bus.add((0, 3, 0), pci_header(0x8086, 0x10d3, 0x02_00_00, 0));
    bus.add((0, 3, 1), pci_header(0x1af4, 0x1041, 0x02_00_00, 0)); // not multi-function: never probed
    let mut unnumbered = pci_header(0x1b36, 0x000c, 0x06_04_00, 1);
    unnumbered[0x18..0x1b].copy_from_slice(&[0, 0, 0]);
    bus.add((0, 4, 0), unnumbered);
    let mut net = pci_header(0x1af4, 0x1041, 0x02_00_00, 0);
    net[0x3c] = 16;
    net[0x3d] = 1;
    bus.add((2, 7, 0), net);
    bus.add((5, 0, 0), pci_header(0x1af4, 0x1041, 0x02_00_00, 0)); // behind no bridge
    let found: Vec<_> = pci::find_net_devices(&bus).collect();
    let addresses: Vec<_> = found.iter().map(|f| (f.address.bus, f.address.device, f.address.function)).collect();
    assert_eq!(addresses, vec![(0, 2, 5), (2, 7, 0)]);
    assert_eq!((found[1].interrupt_line, found[1].interrupt_pin), (16, 1));
    assert_eq!(found[0].device_id, pci::DEVICE_ID_NET_TRANSITIONAL);
    assert!(bus.reads.get() < 3 * 32 * 3 + 64, "scanned {} registers", bus.reads.get());
}

#[test]
fn pci_scan_sees_uhyves_aliased_device_once() {
    let model = model(false, UHYVE, 256);
    let fake = FakePciNet::new(PciFlavour::Uhyve, model);
    let mut bus = FakePciBus { uhyve_aliasing: true, ..FakePciBus::default() };
    bus.add((0, 0, 0), fake.config);
    let found: Vec<_> = pci::find_net_devices(&bus).collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].address, crate::PciAddress { bus: 0, device: 0, function: 0 });
    assert_eq!((found[0].interrupt_line, found[0].interrupt_pin), (11, 1));
}

#[test]
fn pci_uhyve_device_comes_up_with_exact_widths_and_notify_addresses() {
    let (model, bus, mut net) = pci_net(PciFlavour::Uhyve, UHYVE, 256, NetConfig::default());
    assert_eq!(net.features(), F_VERSION_1 | F_MAC | F_STATUS);
    let status_writes: Vec<_> =
        model.borrow().ops.iter().filter_map(|op| if let Op::StatusWrite(s) = op { Some(*s) } else { None }).collect();
    assert_eq!(status_writes, vec![0, 1, 3, 11, 15]);
    assert_eq!(net.mac(), MAC);
    assert_eq!((net.transport().interrupt_line(), net.transport().interrupt_pin()), (11, 1));
    assert_eq!(bus.config_u32((0, 0, 0), 4) & 0b110, 0b110, "memory space and bus master on");
    // Frames both ways; the fake checks that notifications hit 0xd0 and 0xd4
    // with 16-bit writes of the queue index.
    send(&mut net, &frame(1, 1514));
    assert_eq!(model.borrow().tx_frames, vec![[vec![0; 12], frame(1, 1514)].concat()]);
    assert!(model.borrow_mut().inject_rx(&frame(2, 98)));
    assert_eq!(receive(&mut net), Some(frame(2, 98)));
    // Receive: once after DRIVER_OK, once for the reposted buffer (this
    // device never sets VIRTQ_USED_F_NO_NOTIFY). Transmit: once.
    assert_eq!(model.borrow().notifications, [2, 1]);
    assert_no_violations(&model);
}

#[test]
fn pci_qemu_device_with_64_bit_bar_above_4g_and_msix_capability() {
    let (model, bus, mut net) = pci_net(PciFlavour::Qemu, QEMU_MODERN, 1024, NetConfig::default());
    assert_eq!(net.queue_sizes(), (256, 256), "device maximum 1024 capped at 256");
    assert_eq!(net.features(), F_VERSION_1 | F_ACCESS_PLATFORM | F_MAC | F_STATUS);
    assert_eq!((net.transport().interrupt_line(), net.transport().interrupt_pin()), (10, 1));
    assert_eq!(bus.config_u32((0, 0, 0), 4) & 0x406, 0b110, "memory and bus master on, INTx unmasked");
    for seed in 0..300 {
        send(&mut net, &frame(seed, 60 + seed as usize));
        assert!(model.borrow_mut().inject_rx(&frame(seed + 1000, 1514)));
        assert_eq!(receive(&mut net), Some(frame(seed + 1000, 1514)));
    }
    let sent = model.borrow_mut().take_tx_frames();
    assert_eq!(sent, (0..300).map(|seed| frame(seed, 60 + seed as usize)).collect::<Vec<_>>());
    assert_no_violations(&model);
}

#[test]
fn pci_legacy_only_device_is_reported_as_such() {
    let mut config = pci_header(0x1af4, 0x1000, 0x02_00_00, 0);
    config[0x10..0x14].copy_from_slice(&0xc001u32.to_le_bytes()); // I/O BAR
    let mut bus = FakePciBus::default();
    bus.add((0, 3, 0), config);
    let function = pci::find_net_devices(&bus).next().unwrap();
    // SAFETY: the function is simulated; `new` must fail before mapping.
    let error = unsafe { PciTransport::new::<_, TestHal>(&bus, &function) }.err().unwrap();
    assert_eq!(error, VirtioError::LegacyOnly);
    assert!(error.to_string().contains("legacy-only device not supported"));
}

#[test]
fn pci_unassigned_bar_is_reported() {
    let model = model(false, QEMU_MODERN, 256);
    let mut fake = FakePciNet::new(PciFlavour::Qemu, model);
    fake.config[0x20..0x28].fill(0);
    fake.config[0x20] = 0b1100;
    let mut bus = FakePciBus::default();
    bus.add((0, 3, 0), fake.config);
    let function = pci::find_net_devices(&bus).next().unwrap();
    // SAFETY: simulated function; `new` must fail before mapping.
    let error = unsafe { PciTransport::new::<_, TestHal>(&bus, &function) }.err();
    assert_eq!(error, Some(VirtioError::BarUnassigned));
    assert_eq!(bus.config_u32((0, 3, 0), 4) & 0b110, 0, "decoding left off for a BAR at 0");
}

#[test]
fn pci_capability_loop_terminates_and_a_notify_window_too_small_is_refused() {
    let model = model(false, UHYVE, 256);
    let mut fake = FakePciNet::new(PciFlavour::Uhyve, model.clone());
    fake.config[0x79] = 0x40; // last capability points back to the first
    fake.config[0x6c..0x70].copy_from_slice(&2u32.to_le_bytes()); // notify window of 2 bytes
    let mut bus = FakePciBus::default();
    bus.add((0, 0, 0), fake.config);
    bus.status_mirror.insert((0, 0, 0), model.clone());
    let function = pci::find_net_devices(&bus).next().unwrap();
    // SAFETY: simulated function.
    let transport = unsafe { PciTransport::new::<_, TestHal>(&bus, &function) }.unwrap();
    let resets = model.borrow().resets;
    let error = VirtioNet::<_, TestHal>::new(transport).err();
    assert_eq!(error, Some(VirtioError::BadCapability), "queue 1 notifies at offset 4 of a 2-byte window");
    assert_eq!(model.borrow().resets, resets + 2, "reset at start and again before freeing DMA");
    assert_eq!(live_dma_pages(), 0);
}

// ---- end to end: smoltcp over two drivers ------------------------------------

#[test]
fn tcp_echo_between_two_smoltcp_interfaces_over_two_drivers() {
    use smoltcp::iface::{Config, SocketSet, SocketStorage};
    use smoltcp::socket::tcp;
    use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

    // A: uhyve-like PCI (12-byte header); B: legacy MMIO (10-byte header).
    let (model_a, _bus, mut net_a) = pci_net(PciFlavour::Uhyve, UHYVE, 256, NetConfig::default());
    let model_b = Rc::new(RefCell::new(DeviceModel::new(true, QEMU_LEGACY, 256, [0x52, 0x54, 0, 0, 0, 2])));
    let mut net_b = VirtioNet::<_, TestHal>::new(mmio_transport(&model_b, 1)).unwrap();

    let mut now = Instant::from_millis(0);
    let iface = |net: &mut dyn DeviceDyn, ip: [u8; 4]| {
        let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(net.mac())));
        let mut iface = net.make_interface(config);
        iface.update_ip_addrs(|addrs| {
            addrs.push(IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), 24)).unwrap();
        });
        iface
    };
    let mut iface_a = iface(&mut net_a, [10, 0, 0, 1]);
    let mut iface_b = iface(&mut net_b, [10, 0, 0, 2]);

    let (mut rx_a, mut tx_a, mut rx_b, mut tx_b) = (vec![0; 8192], vec![0; 8192], vec![0; 8192], vec![0; 8192]);
    let client = tcp::Socket::new(tcp::SocketBuffer::new(&mut rx_a[..]), tcp::SocketBuffer::new(&mut tx_a[..]));
    let mut server = tcp::Socket::new(tcp::SocketBuffer::new(&mut rx_b[..]), tcp::SocketBuffer::new(&mut tx_b[..]));
    server.listen(7).unwrap();
    let mut storage_a = [SocketStorage::EMPTY; 1];
    let mut storage_b = [SocketStorage::EMPTY; 1];
    let mut sockets_a = SocketSet::new(&mut storage_a[..]);
    let mut sockets_b = SocketSet::new(&mut storage_b[..]);
    let client = sockets_a.add(client);
    let server = sockets_b.add(server);
    sockets_a.get_mut::<tcp::Socket>(client).connect(iface_a.context(), (IpAddress::v4(10, 0, 0, 2), 7), 49_152).unwrap();

    let message: Vec<u8> = (0..50_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let mut sent = 0;
    let mut echoed = Vec::new();
    let mut wire_frames = 0;
    for _ in 0..20_000 {
        iface_a.poll(now, &mut net_a, &mut sockets_a);
        iface_b.poll(now, &mut net_b, &mut sockets_b);
        // The wire: each device's transmitted frames arrive at the other.
        for (from, to) in [(&model_a, &model_b), (&model_b, &model_a)] {
            for frame in from.borrow_mut().take_tx_frames() {
                assert!(to.borrow_mut().inject_rx(&frame), "receiver out of buffers");
                wire_frames += 1;
            }
        }
        net_a.ack_interrupt();
        net_b.ack_interrupt();

        let socket = sockets_b.get_mut::<tcp::Socket>(server);
        while socket.can_recv() && socket.can_send() {
            let mut chunk = [0; 1024];
            let n = socket.recv_slice(&mut chunk).unwrap();
            let written = socket.send_slice(&chunk[..n]).unwrap();
            assert_eq!(written, n, "echo buffer as large as receive buffer");
        }
        let socket = sockets_a.get_mut::<tcp::Socket>(client);
        if socket.may_send() && sent < message.len() {
            sent += socket.send_slice(&message[sent..]).unwrap();
        }
        while socket.can_recv() {
            let mut chunk = [0; 4096];
            let n = socket.recv_slice(&mut chunk).unwrap();
            echoed.extend_from_slice(&chunk[..n]);
        }
        if echoed.len() == message.len() {
            break;
        }
        now += smoltcp::time::Duration::from_millis(1);
    }
    assert_eq!(echoed.len(), message.len(), "echo incomplete after {wire_frames} frames");
    assert!(echoed == message, "echoed bytes differ");
    for (net_stats, model) in [(net_a.stats(), &model_a), (net_b.stats(), &model_b)] {
        assert_eq!((net_stats.rx_errors, net_stats.tx_errors, net_stats.tx_dropped), (0, 0, 0));
        assert!(net_stats.rx_packets > 30, "{net_stats:?}");
        assert_no_violations(model);
    }
}

/// Lets the end-to-end test build interfaces for two driver types.
trait DeviceDyn {
    fn mac(&self) -> [u8; 6];
    fn make_interface(&mut self, config: smoltcp::iface::Config) -> smoltcp::iface::Interface;
}

impl<T: crate::Transport> DeviceDyn for VirtioNet<T, TestHal> {
    fn mac(&self) -> [u8; 6] {
        VirtioNet::mac(self)
    }

    fn make_interface(&mut self, config: smoltcp::iface::Config) -> smoltcp::iface::Interface {
        smoltcp::iface::Interface::new(config, self, Instant::ZERO)
    }
}
