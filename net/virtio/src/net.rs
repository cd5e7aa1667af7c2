//! The virtio network device: initialisation, receive and transmit pools,
//! interrupts, counters, and the [`smoltcp::phy::Device`] implementation.

use alloc::boxed::Box;
use alloc::vec;
use core::sync::atomic::{Ordering, fence};

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;

use crate::dma::DmaRegion;
use crate::error::{Result, VirtioError};
use crate::hal::Hal;
use crate::queue::{DESC_F_WRITE, SplitQueue, Used};
use crate::transport::{InterruptAck, Transport, feature, status};

/// Largest Ethernet frame (header included, FCS excluded) the driver sends
/// or accepts: a 1500-byte IP MTU.
pub const MAX_FRAME_LEN: usize = 1514;

/// `virtio_net_hdr` for modern devices: always with `num_buffers`.
const HEADER_LEN_MODERN: usize = 12;
/// `virtio_net_hdr` for legacy devices without `MRG_RXBUF`.
const HEADER_LEN_LEGACY: usize = 10;

const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;

/// Attempts at a consistent read of the configuration space.
const CONFIG_READ_RETRIES: usize = 16;

/// Sizes of the driver's rings and pools, fixed at initialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Receive buffers kept posted to the device (at most the queue size).
    pub rx_buffers: u16,
    /// Transmit buffers (at most the queue size).
    pub tx_buffers: u16,
    /// Bytes per buffer, header included; at least
    /// `MAX_FRAME_LEN + 12`.
    pub buffer_size: usize,
    /// Upper bound on the virtqueue size; the device's maximum is used if
    /// smaller (rounded down to a power of two).
    pub max_queue_size: u16,
    /// MAC address to use if the device offers none.
    pub fallback_mac: [u8; 6],
}

impl Default for NetConfig {
    fn default() -> Self {
        Self { rx_buffers: 64, tx_buffers: 64, buffer_size: 2048, max_queue_size: 256, fallback_mac: [0x02, 0, 0, 0, 0, 0x01] }
    }
}

/// The driver's counters. Device misbehaviour (a used id the driver did not
/// post, a length beyond the buffer, a used index running ahead of the
/// ring) is counted in `rx_errors`/`tx_errors` and otherwise ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames handed to the stack.
    pub rx_packets: u64,
    /// Bytes of those frames (Ethernet header included, virtio header not).
    pub rx_bytes: u64,
    /// Frames received but not delivered (empty, or token dropped unused).
    pub rx_dropped: u64,
    /// Malformed used-ring entries on the receive queue.
    pub rx_errors: u64,
    /// Frames handed to the device.
    pub tx_packets: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames the stack produced that could not be sent (no free buffer,
    /// or longer than a buffer).
    pub tx_dropped: u64,
    /// Malformed used-ring entries on the transmit queue.
    pub tx_errors: u64,
    /// Interrupts that found something pending.
    pub interrupts: u64,
    /// Configuration-change interrupts.
    pub config_changes: u64,
    /// Notifications ("kicks") written to the device for the receive
    /// queue: each is a register write the hypervisor must handle.
    pub rx_notifications: u64,
    /// Notifications written for the transmit queue (one per frame, or
    /// one per [`VirtioNet::flush_transmit`] with batched notifications).
    pub tx_notifications: u64,
}

/// A pool of equal buffers in one DMA region; buffer `i` is always
/// described by descriptor `i`.
struct BufferPool<H: Hal> {
    memory: DmaRegion<H>,
    buffer_size: usize,
    /// `owned_by_device[i]`: buffer `i` is posted and not yet returned.
    owned_by_device: Box<[bool]>,
}

impl<H: Hal> BufferPool<H> {
    fn new(count: u16, buffer_size: usize) -> Result<Self> {
        let bytes = usize::from(count) * buffer_size;
        Ok(Self {
            memory: DmaRegion::new(DmaRegion::<H>::pages_for(bytes))?,
            buffer_size,
            owned_by_device: vec![false; usize::from(count)].into_boxed_slice(),
        })
    }

    fn count(&self) -> u16 {
        self.owned_by_device.len() as u16
    }

    fn phys(&self, id: u16) -> u64 {
        self.memory.phys() + (usize::from(id) * self.buffer_size) as u64
    }

    /// Checks a device-reported id: it must name a buffer the device owns.
    /// On success the buffer belongs to the driver again.
    fn take_back(&mut self, id: u32) -> Option<u16> {
        let id = u16::try_from(id).ok()?;
        let owned = self.owned_by_device.get_mut(usize::from(id))?;
        if !*owned {
            return None;
        }
        *owned = false;
        Some(id)
    }

    fn bytes(&self, id: u16, len: usize) -> &[u8] {
        debug_assert!(len <= self.buffer_size);
        self.memory.slice(usize::from(id) * self.buffer_size, len)
    }

    fn bytes_mut(&mut self, id: u16, len: usize) -> &mut [u8] {
        debug_assert!(len <= self.buffer_size);
        self.memory.slice_mut(usize::from(id) * self.buffer_size, len)
    }
}

/// Receive side: queue 0 and its pre-posted buffers.
struct Receiver<H: Hal> {
    queue: SplitQueue<H>,
    pool: BufferPool<H>,
    header_len: usize,
    packets: u64,
    bytes: u64,
    dropped: u64,
    errors: u64,
    notifications: u64,
}

impl<H: Hal> Receiver<H> {
    /// Gives buffer `id` (owned by the driver) back to the device.
    fn post(&mut self, id: u16) {
        let phys = self.pool.phys(id);
        self.queue.set_descriptor(id, phys, self.pool.buffer_size as u32, DESC_F_WRITE);
        self.pool.owned_by_device[usize::from(id)] = true;
        self.queue.push_available(id);
    }

    fn post_and_notify<T: Transport>(&mut self, id: u16, transport: &T) {
        self.post(id);
        if self.queue.should_notify() {
            transport.notify(RX_QUEUE);
            self.notifications += 1;
        }
    }

    /// The next well-formed received frame: buffer id and total length
    /// (virtio header included). Malformed entries are counted and skipped.
    fn next_frame<T: Transport>(&mut self, transport: &T) -> Option<(u16, usize)> {
        loop {
            match self.queue.pop_used() {
                Used::Empty => return None,
                Used::Corrupt => self.errors += 1,
                Used::Element { id, len } => {
                    let Some(id) = self.pool.take_back(id) else {
                        self.errors += 1;
                        continue;
                    };
                    let len = len as usize;
                    if len > self.pool.buffer_size || len < self.header_len {
                        self.errors += 1;
                        self.post_and_notify(id, transport);
                    } else if len == self.header_len {
                        self.dropped += 1;
                        self.post_and_notify(id, transport);
                    } else {
                        return Some((id, len));
                    }
                }
            }
        }
    }
}

/// Transmit side: queue 1, its buffers and the free list.
struct Transmitter<H: Hal> {
    queue: SplitQueue<H>,
    pool: BufferPool<H>,
    header_len: usize,
    /// Free buffer ids: `free[..free_len]`. Sized for every buffer, so
    /// returning one never allocates.
    free: Box<[u16]>,
    free_len: usize,
    /// Where a frame goes when no buffer is free: the stack must be given
    /// somewhere to write, and the driver must not allocate.
    scratch: Box<[u8]>,
    packets: u64,
    bytes: u64,
    dropped: u64,
    errors: u64,
    notifications: u64,
    /// Batched notifications: [`Self::send`] only publishes the frame and
    /// [`Self::flush`] notifies once for all of them.
    batched: bool,
    /// Frames published since the last notification (batched mode). Invariant:
    /// false whenever the device has been told of every available frame.
    unnotified: bool,
}

impl<H: Hal> Transmitter<H> {
    fn reclaim(&mut self) -> usize {
        let mut reclaimed = 0;
        loop {
            match self.queue.pop_used() {
                Used::Empty => return reclaimed,
                Used::Corrupt => self.errors += 1,
                Used::Element { id, .. } => match self.pool.take_back(id) {
                    Some(id) => {
                        // At most `count` ids are ever outstanding, so there
                        // is always a slot; `get_mut` keeps that unpanicking.
                        if let Some(slot) = self.free.get_mut(self.free_len) {
                            *slot = id;
                            self.free_len += 1;
                            reclaimed += 1;
                        }
                    }
                    None => self.errors += 1,
                },
            }
        }
    }

    fn take_free(&mut self) -> Option<u16> {
        if self.free_len == 0 {
            self.reclaim();
        }
        self.free_len = self.free_len.checked_sub(1)?;
        Some(self.free[self.free_len])
    }

    /// Notifies the device of the available frames unless it asked for none.
    fn notify<T: Transport>(&mut self, transport: &T) {
        self.unnotified = false;
        if self.queue.should_notify() {
            transport.notify(TX_QUEUE);
            self.notifications += 1;
        }
    }

    /// Batched mode: one notification for every frame published since the
    /// last one (none if there were none).
    fn flush<T: Transport>(&mut self, transport: &T) {
        if self.unnotified {
            self.notify(transport);
        }
    }

    /// Sends a frame of `len` bytes that `fill` writes.
    fn send<T: Transport, R>(&mut self, transport: &T, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let total = self.header_len + len;
        let id = if total <= self.pool.buffer_size { self.take_free() } else { None };
        let Some(id) = id else {
            self.dropped += 1;
            let len = len.min(self.scratch.len());
            return fill(&mut self.scratch[..len]);
        };
        let buffer = self.pool.bytes_mut(id, total);
        // No offloads: flags 0, GSO_NONE, all other header fields 0.
        buffer[..self.header_len].fill(0);
        let result = fill(&mut buffer[self.header_len..]);
        let phys = self.pool.phys(id);
        self.queue.set_descriptor(id, phys, total as u32, 0);
        self.pool.owned_by_device[usize::from(id)] = true;
        self.queue.push_available(id);
        if self.batched {
            self.unnotified = true;
        } else {
            self.notify(transport);
        }
        self.packets += 1;
        self.bytes += len as u64;
        result
    }
}

/// A virtio network card on transport `T`, with DMA memory from `H`.
///
/// Receive buffers stay posted and are recycled as soon as the stack has
/// read a frame; transmit buffers are reclaimed from the used ring
/// ([`Self::reclaim_transmitted`], and whenever the pool runs dry). Nothing
/// allocates after [`Self::new`].
pub struct VirtioNet<T: Transport, H: Hal> {
    transport: T,
    rx: Receiver<H>,
    tx: Transmitter<H>,
    mac: [u8; 6],
    features: u64,
    interrupts: u64,
    config_changes: u64,
    /// The largest Ethernet frame the stack may assume (header included);
    /// TCP's advertised MSS follows from it.
    max_frame: usize,
}

impl<T: Transport, H: Hal> VirtioNet<T, H> {
    /// Brings the device up with the default [`NetConfig`] (64 + 64 buffers
    /// of 2 KiB, queues of up to 256 descriptors).
    pub fn new(transport: T) -> Result<Self> {
        Self::with_config(transport, NetConfig::default())
    }

    /// Brings the device up: reset, `ACKNOWLEDGE`, `DRIVER`, feature
    /// negotiation (`VERSION_1` on modern devices, `MAC`, `STATUS`; no
    /// offloads), `FEATURES_OK` read back (modern), both virtqueues, receive
    /// buffers posted, `DRIVER_OK`.
    pub fn with_config(mut transport: T, config: NetConfig) -> Result<Self> {
        let legacy = transport.is_legacy();
        let header_len = if legacy { HEADER_LEN_LEGACY } else { HEADER_LEN_MODERN };
        if config.rx_buffers == 0
            || config.tx_buffers == 0
            || config.max_queue_size == 0
            || config.buffer_size < MAX_FRAME_LEN + HEADER_LEN_MODERN
            || config.buffer_size > u32::MAX as usize
        {
            return Err(VirtioError::BadConfig);
        }

        transport.reset();
        transport.set_status(status::ACKNOWLEDGE);
        transport.set_status(status::ACKNOWLEDGE | status::DRIVER);

        let offered = transport.device_features();
        let mut wanted = feature::NET_MAC | feature::NET_STATUS;
        if legacy {
            wanted |= feature::ANY_LAYOUT;
        } else {
            if offered & feature::VERSION_1 == 0 {
                return Err(fail(&mut transport, VirtioError::FeaturesRejected));
            }
            wanted |= feature::VERSION_1 | feature::ACCESS_PLATFORM;
        }
        let features = offered & wanted;
        transport.set_driver_features(features);
        let mut driver_status = status::ACKNOWLEDGE | status::DRIVER;
        if !legacy {
            driver_status |= status::FEATURES_OK;
            transport.set_status(driver_status);
            if transport.status() & status::FEATURES_OK == 0 {
                return Err(fail(&mut transport, VirtioError::FeaturesRejected));
            }
        }

        let rx_size = queue_size(&mut transport, RX_QUEUE, config.max_queue_size);
        let tx_size = queue_size(&mut transport, TX_QUEUE, config.max_queue_size);
        let (Some(rx_size), Some(tx_size)) = (rx_size, tx_size) else {
            return Err(fail(&mut transport, VirtioError::QueueUnavailable));
        };
        let rx_count = config.rx_buffers.min(rx_size);
        let tx_count = config.tx_buffers.min(tx_size);

        // Everything is allocated before the device learns any address, so
        // an allocation failure leaves nothing for it to touch.
        let allocated = (|| {
            Ok::<_, VirtioError>((
                SplitQueue::<H>::new(rx_size)?,
                BufferPool::<H>::new(rx_count, config.buffer_size)?,
                SplitQueue::<H>::new(tx_size)?,
                BufferPool::<H>::new(tx_count, config.buffer_size)?,
            ))
        })();
        let (rx_queue, rx_pool, tx_queue, tx_pool) = match allocated {
            Ok(parts) => parts,
            Err(error) => return Err(fail(&mut transport, error)),
        };

        let mac = if features & feature::NET_MAC != 0 { read_mac(&transport) } else { config.fallback_mac };
        let mut net = Self {
            transport,
            rx: Receiver { queue: rx_queue, pool: rx_pool, header_len, packets: 0, bytes: 0, dropped: 0, errors: 0, notifications: 0 },
            tx: Transmitter {
                queue: tx_queue,
                pool: tx_pool,
                header_len,
                free: (0..tx_count).rev().collect(),
                free_len: usize::from(tx_count),
                scratch: vec![0; config.buffer_size].into_boxed_slice(),
                packets: 0,
                bytes: 0,
                dropped: 0,
                errors: 0,
                notifications: 0,
                batched: false,
                unnotified: false,
            },
            mac,
            features,
            interrupts: 0,
            config_changes: 0,
            max_frame: MAX_FRAME_LEN,
        };
        // From here on an early return drops `net`, whose `Drop` resets the
        // device before the DMA memory is freed.
        let rx_layout = net.rx.queue.layout();
        let tx_layout = net.tx.queue.layout();
        if let Err(error) = net.transport.setup_queue(RX_QUEUE, &rx_layout).and_then(|()| net.transport.setup_queue(TX_QUEUE, &tx_layout)) {
            let current = net.transport.status();
            net.transport.set_status(current | status::FAILED);
            return Err(error);
        }
        for id in 0..rx_count {
            net.rx.post(id);
        }
        net.transport.set_status(driver_status | status::DRIVER_OK);
        // Buffers were posted before DRIVER_OK; the device hears of them now.
        net.transport.notify(RX_QUEUE);
        log::debug!("virtio-net up: mac {:02x?} features {features:#x} queues {rx_size}/{tx_size} buffers {rx_count}/{tx_count}", net.mac);
        Ok(net)
    }

    /// The MAC address (from the device, or [`NetConfig::fallback_mac`]).
    /// Notifies the device of every new buffer, ignoring its "no notify"
    /// hint (always allowed). For uhyve 0.10, whose queue threads can miss
    /// a buffer the driver adds while they are re-enabling notifications:
    /// the frame would then wait for the next notification (seconds under
    /// TCP retransmission).
    /// Lowers the largest frame the stack assumes (at most
    /// [`MAX_FRAME_LEN`], at least 576 + 14). uhyve 0.10 receives host frames
    /// into 1512-byte buffers (MTU + virtio header, without the Ethernet
    /// header), so a full 1514-byte frame arrives truncated and is dropped:
    /// with 1500 here the peer's TCP segments fit.
    pub fn set_max_frame(&mut self, bytes: usize) {
        self.max_frame = bytes.clamp(590, MAX_FRAME_LEN);
    }

    pub fn set_always_notify(&mut self, on: bool) {
        self.rx.queue.set_always_notify(on);
        self.tx.queue.set_always_notify(on);
    }

    /// Batched transmit notifications: frames the stack sends are only
    /// published in the available ring, and [`Self::flush_transmit`]
    /// notifies the device once for all of them (one register write, one
    /// hypervisor exit, per poll instead of per frame). The owner must call
    /// `flush_transmit` after every poll of the stack, or frames wait.
    /// Turning it off flushes.
    pub fn set_batched_notifications(&mut self, on: bool) {
        self.tx.batched = on;
        if !on {
            self.tx.flush(&self.transport);
        }
    }

    /// Notifies the device once of every frame sent since the last
    /// notification (batched mode; nothing to do otherwise).
    pub fn flush_transmit(&mut self) {
        self.tx.flush(&self.transport);
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The negotiated feature bits.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Length of the `virtio_net_hdr` in front of every frame: 12 for modern
    /// devices, 10 for legacy ones.
    pub fn header_len(&self) -> usize {
        self.rx.header_len
    }

    /// Link state, if the device reports one (`VIRTIO_NET_F_STATUS`).
    pub fn link_up(&self) -> Option<bool> {
        (self.features & feature::NET_STATUS != 0).then(|| self.transport.read_config_u8(6) & 1 != 0)
    }

    /// The transport, e.g. for [`crate::PciTransport::interrupt_line`].
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Top half: reads and acknowledges the device's interrupt status.
    /// Returns whether anything was pending (false: the shared line was
    /// raised by someone else). Never allocates or blocks.
    pub fn ack_interrupt(&mut self) -> bool {
        let pending = self.transport.ack_interrupt();
        if pending.any() {
            self.interrupts += 1;
        }
        if pending.config() {
            self.config_changes += 1;
        }
        pending.any()
    }

    /// A handle that acknowledges this device's interrupt without the
    /// driver: for a top half that must not take the driver's lock. It does
    /// not count; [`Self::ack_interrupt`] does.
    pub fn interrupt_ack(&self) -> InterruptAck {
        self.transport.interrupt_ack()
    }

    /// Whether a received frame waits in the used ring.
    pub fn pending_receive(&self) -> bool {
        self.rx.queue.has_used()
    }

    /// Returns transmitted buffers to the pool (for a NET_TX bottom half);
    /// how many.
    pub fn reclaim_transmitted(&mut self) -> usize {
        self.tx.reclaim()
    }

    /// Asks the device to interrupt again when it receives a frame, and
    /// when it returns a transmit buffer only if the pool is empty (the
    /// stack then waits for one; otherwise buffers are reclaimed when the
    /// stack next sends, with no interrupt per completed frame). Returns
    /// whether work is already waiting — a received frame, or (pool empty)
    /// a transmitted buffer not yet reclaimed: then the caller must poll
    /// (receive and [`Self::reclaim_transmitted`]) once more, or it may
    /// sleep through it (NAPI's re-check).
    pub fn enable_interrupts(&mut self) -> bool {
        let transmit_waits = self.tx.free_len == 0;
        self.rx.queue.set_interrupts(true);
        self.tx.queue.set_interrupts(transmit_waits);
        fence(Ordering::SeqCst);
        self.rx.queue.has_used() || (transmit_waits && self.tx.queue.has_used())
    }

    /// Asks the device not to interrupt (`VIRTQ_AVAIL_F_NO_INTERRUPT`) while
    /// the kernel polls. Advisory: the device may still interrupt.
    pub fn disable_interrupts(&mut self) {
        self.rx.queue.set_interrupts(false);
        self.tx.queue.set_interrupts(false);
    }

    /// The counters.
    pub fn stats(&self) -> NetStats {
        NetStats {
            rx_packets: self.rx.packets,
            rx_bytes: self.rx.bytes,
            rx_dropped: self.rx.dropped,
            rx_errors: self.rx.errors,
            tx_packets: self.tx.packets,
            tx_bytes: self.tx.bytes,
            tx_dropped: self.tx.dropped,
            tx_errors: self.tx.errors,
            interrupts: self.interrupts,
            config_changes: self.config_changes,
            rx_notifications: self.rx.notifications,
            tx_notifications: self.tx.notifications,
        }
    }

    /// Number of receive and transmit buffers.
    pub fn buffer_counts(&self) -> (u16, u16) {
        (self.rx.pool.count(), self.tx.pool.count())
    }

    /// Sizes of the receive and transmit virtqueues.
    pub fn queue_sizes(&self) -> (u16, u16) {
        (self.rx.queue.size(), self.tx.queue.size())
    }
}

impl<T: Transport, H: Hal> Drop for VirtioNet<T, H> {
    fn drop(&mut self) {
        // The device must stop using the rings and buffers before the fields
        // drop and return their DMA memory.
        self.transport.reset();
    }
}

/// Sets `FAILED` and hands `error` back.
fn fail<T: Transport>(transport: &mut T, error: VirtioError) -> VirtioError {
    let current = transport.status();
    transport.set_status(current | status::FAILED);
    error
}

/// The size to use for `queue`: the device maximum capped at `limit`,
/// rounded down to a power of two; `None` if the queue is unavailable.
fn queue_size<T: Transport>(transport: &mut T, queue: u16, limit: u16) -> Option<u16> {
    let size = transport.max_queue_size(queue).min(limit);
    (size != 0).then(|| 1 << (15 - size.leading_zeros()))
}

/// Reads the MAC, retrying while the configuration generation moves.
fn read_mac<T: Transport>(transport: &T) -> [u8; 6] {
    let mut mac = [0; 6];
    for _ in 0..CONFIG_READ_RETRIES {
        let before = transport.config_generation();
        for (offset, byte) in mac.iter_mut().enumerate() {
            *byte = transport.read_config_u8(offset);
        }
        if transport.config_generation() == before {
            break;
        }
    }
    mac
}

/// A received frame, lent to the stack; its buffer is posted again when the
/// token is consumed or dropped.
pub struct VirtioNetRxToken<'a, T: Transport, H: Hal> {
    rx: &'a mut Receiver<H>,
    transport: &'a T,
    id: u16,
    len: usize,
    consumed: bool,
}

impl<T: Transport, H: Hal> RxToken for VirtioNetRxToken<'_, T, H> {
    fn consume<R, F>(mut self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let header_len = self.rx.header_len;
        let frame = &self.rx.pool.bytes(self.id, self.len)[header_len..];
        self.rx.packets += 1;
        self.rx.bytes += frame.len() as u64;
        self.consumed = true;
        f(frame)
    }
}

impl<T: Transport, H: Hal> Drop for VirtioNetRxToken<'_, T, H> {
    fn drop(&mut self) {
        if !self.consumed {
            self.rx.dropped += 1;
        }
        self.rx.post_and_notify(self.id, self.transport);
    }
}

/// Permission to send one frame; the buffer is taken when consumed.
pub struct VirtioNetTxToken<'a, T: Transport, H: Hal> {
    tx: &'a mut Transmitter<H>,
    transport: &'a T,
}

impl<T: Transport, H: Hal> TxToken for VirtioNetTxToken<'_, T, H> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        self.tx.send(self.transport, len, f)
    }
}

impl<T: Transport, H: Hal> Device for VirtioNet<T, H> {
    type RxToken<'a>
        = VirtioNetRxToken<'a, T, H>
    where
        Self: 'a;
    type TxToken<'a>
        = VirtioNetTxToken<'a, T, H>
    where
        Self: 'a;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (id, len) = self.rx.next_frame(&self.transport)?;
        let transport = &self.transport;
        Some((VirtioNetRxToken { rx: &mut self.rx, transport, id, len, consumed: false }, VirtioNetTxToken { tx: &mut self.tx, transport }))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        self.tx.reclaim();
        if self.tx.free_len == 0 {
            return None;
        }
        Some(VirtioNetTxToken { tx: &mut self.tx, transport: &self.transport })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ethernet;
        capabilities.max_transmission_unit = self.max_frame;
        capabilities.max_burst_size = Some(usize::from(self.rx.pool.count().min(self.tx.pool.count())));
        capabilities
    }
}
