//! A simulated virtio-net device for the host tests.
//!
//! - [`bus`]: register accesses that [`crate::io::Registers`] makes to a
//!   registered host address range are handed to a simulated register block
//!   instead of plain memory, so registers get their side effects (selectors,
//!   status handshake, interrupt acknowledge, queue notification).
//! - [`TestHal`]: DMA memory from a per-thread arena whose "physical"
//!   addresses differ from the host addresses (a driver that hands the
//!   device a virtual address fails the test), and MMIO windows.
//! - [`DeviceModel`]: the device side of virtio-net: feature negotiation,
//!   the status state machine, split virtqueues consumed and filled as the
//!   spec says, interrupts, and knobs for misbehaving. It records every
//!   protocol violation by the driver in `violations`.
//! - [`FakeMmio`]: virtio-mmio register semantics, version 1 and 2.
//! - [`FakePciBus`] / [`FakePciBar`]: configuration space with capability
//!   lists (QEMU-like and uhyve-like layouts) and the BAR registers.

#![allow(clippy::unwrap_used, reason = "test fixture: a panic is a test failure")]

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ptr::NonNull;
use std::rc::Rc;

use crate::hal::{Hal, PAGE_SIZE};
use crate::queue::{AVAIL_F_NO_INTERRUPT, DESC_F_NEXT, DESC_F_WRITE};

pub(crate) mod bus {
    //! Thread-local routing of register accesses to simulated devices.
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A simulated register block; `offset` is from the registered start.
    pub(crate) trait RegisterHandler {
        fn read(&self, offset: usize, width: usize) -> u32;
        fn write(&self, offset: usize, width: usize, value: u32);
    }

    type Region = (usize, usize, Rc<dyn RegisterHandler>);

    thread_local! {
        static REGIONS: RefCell<Vec<Region>> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) fn register(start: usize, len: usize, handler: Rc<dyn RegisterHandler>) {
        REGIONS.with(|regions| regions.borrow_mut().push((start, len, handler)));
    }

    fn find(address: usize) -> Option<(usize, Rc<dyn RegisterHandler>)> {
        REGIONS.with(|regions| {
            regions
                .borrow()
                .iter()
                .find(|(start, len, _)| (*start..*start + *len).contains(&address))
                .map(|(start, _, handler)| (address - start, Rc::clone(handler)))
        })
    }

    pub(crate) fn read(address: usize, width: usize) -> Option<u32> {
        let (offset, handler) = find(address)?;
        Some(handler.read(offset, width))
    }

    pub(crate) fn write(address: usize, width: usize, value: u32) -> bool {
        match find(address) {
            Some((offset, handler)) => {
                handler.write(offset, width, value);
                true
            }
            None => false,
        }
    }
}

/// Where the test arena's "physical" addresses start.
const ARENA_PHYS: u64 = 0x4000_0000;
const ARENA_PAGES: usize = 8192;

struct Arena {
    base: *mut u8,
    next_page: usize,
    live: HashMap<u64, usize>,
}

impl Drop for Arena {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(ARENA_PAGES * PAGE_SIZE, PAGE_SIZE).unwrap();
        // SAFETY: allocated in `with_arena` with this layout.
        unsafe { std::alloc::dealloc(self.base, layout) };
    }
}

thread_local! {
    static ARENA: RefCell<Option<Arena>> = const { RefCell::new(None) };
    static ALLOC_BUDGET: Cell<Option<usize>> = const { Cell::new(None) };
    /// (phys, len, host) of simulated device memory windows.
    static MMIO_WINDOWS: RefCell<Vec<(u64, usize, usize)>> = const { RefCell::new(Vec::new()) };
}

fn with_arena<R>(f: impl FnOnce(&mut Arena) -> R) -> R {
    ARENA.with(|arena| {
        let mut arena = arena.borrow_mut();
        let arena = arena.get_or_insert_with(|| {
            let layout = std::alloc::Layout::from_size_align(ARENA_PAGES * PAGE_SIZE, PAGE_SIZE).unwrap();
            // SAFETY: non-zero size.
            let base = unsafe { std::alloc::alloc_zeroed(layout) };
            assert!(!base.is_null());
            Arena { base, next_page: 0, live: HashMap::new() }
        });
        f(arena)
    })
}

/// Pages of DMA memory currently allocated on this thread.
pub(crate) fn live_dma_pages() -> usize {
    with_arena(|arena| arena.live.values().sum())
}

/// Lets only `allocations` more `dma_alloc` calls succeed (None: no limit).
pub(crate) fn set_dma_budget(allocations: Option<usize>) {
    ALLOC_BUDGET.with(|budget| budget.set(allocations));
}

/// The host pointer for `len` bytes of DMA memory at `phys`. Panics (fails
/// the test) if the driver gave the device an address outside DMA memory.
pub(crate) fn phys_to_host(phys: u64, len: usize) -> *mut u8 {
    with_arena(|arena| {
        let end = ARENA_PHYS + (arena.next_page * PAGE_SIZE) as u64;
        assert!(phys >= ARENA_PHYS && phys + len as u64 <= end, "device access to {phys:#x}+{len} outside DMA memory");
        arena.base.wrapping_add((phys - ARENA_PHYS) as usize)
    })
}

pub(crate) fn add_mmio_window(phys: u64, len: usize, host: usize) {
    MMIO_WINDOWS.with(|windows| windows.borrow_mut().push((phys, len, host)));
}

/// The kernel's services, simulated.
pub(crate) struct TestHal;

// SAFETY: `dma_alloc` hands out disjoint, zeroed, page-aligned pages of one
// live allocation (never reused), `map_mmio` returns host memory backing a
// registered window, and `virt_to_phys` inverts `dma_alloc`'s mapping.
unsafe impl Hal for TestHal {
    fn dma_alloc(pages: usize) -> Option<(u64, NonNull<u8>)> {
        let allowed = ALLOC_BUDGET.with(|budget| match budget.get() {
            Some(0) => false,
            Some(n) => {
                budget.set(Some(n - 1));
                true
            }
            None => true,
        });
        if !allowed || pages == 0 {
            return None;
        }
        with_arena(|arena| {
            if arena.next_page + pages > ARENA_PAGES {
                return None;
            }
            let offset = arena.next_page * PAGE_SIZE;
            arena.next_page += pages;
            let phys = ARENA_PHYS + offset as u64;
            arena.live.insert(phys, pages);
            Some((phys, NonNull::new(arena.base.wrapping_add(offset))?))
        })
    }

    unsafe fn dma_free(phys: u64, virt: NonNull<u8>, pages: usize) {
        with_arena(|arena| {
            assert_eq!(arena.live.remove(&phys), Some(pages), "dma_free of something not allocated");
            assert_eq!(virt.as_ptr(), arena.base.wrapping_add((phys - ARENA_PHYS) as usize));
        });
    }

    fn virt_to_phys(ptr: NonNull<u8>) -> u64 {
        with_arena(|arena| ARENA_PHYS + (ptr.as_ptr() as usize - arena.base as usize) as u64)
    }

    fn map_mmio(phys: u64, size: usize) -> Option<NonNull<u8>> {
        MMIO_WINDOWS.with(|windows| {
            windows.borrow().iter().find_map(|&(base, len, host)| {
                (phys >= base && phys + size as u64 <= base + len as u64)
                    .then(|| NonNull::new((host + (phys - base) as usize) as *mut u8))
                    .flatten()
            })
        })
    }
}

fn dma_read(phys: u64, len: usize) -> Vec<u8> {
    let ptr = phys_to_host(phys, len);
    // SAFETY: `phys_to_host` checked the range lies in the arena.
    (0..len).map(|i| unsafe { ptr.add(i).read_volatile() }).collect()
}

fn dma_write(phys: u64, bytes: &[u8]) {
    let ptr = phys_to_host(phys, bytes.len());
    for (i, byte) in bytes.iter().enumerate() {
        // SAFETY: as in `dma_read`.
        unsafe { ptr.add(i).write_volatile(*byte) };
    }
}

fn dma_u16(phys: u64) -> u16 {
    u16::from_le_bytes(dma_read(phys, 2).try_into().unwrap())
}

fn dma_u32(phys: u64) -> u32 {
    u32::from_le_bytes(dma_read(phys, 4).try_into().unwrap())
}

fn dma_u64(phys: u64) -> u64 {
    u64::from_le_bytes(dma_read(phys, 8).try_into().unwrap())
}

/// One register-level event, in the order the driver caused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    StatusWrite(u8),
    StatusRead(u8),
    DriverFeatures(u64),
    QueueEnabled(u16),
    Notify(u16),
}

/// Device side of one split virtqueue.
#[derive(Clone, Debug, Default)]
pub(crate) struct FakeQueue {
    pub(crate) size: u16,
    pub(crate) desc: u64,
    pub(crate) avail: u64,
    pub(crate) used: u64,
    pub(crate) enabled: bool,
    pub(crate) pfn: u32,
    pub(crate) align: u32,
    last_avail: u16,
    used_idx: u16,
}

/// A descriptor as the device reads it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Descriptor {
    pub(crate) addr: u64,
    pub(crate) len: u32,
    pub(crate) flags: u16,
}

impl FakeQueue {
    /// Takes the next available chain: head id and descriptors.
    pub(crate) fn pop_avail(&mut self, violations: &mut Vec<String>) -> Option<(u16, Vec<Descriptor>)> {
        if !self.enabled || self.size == 0 {
            return None;
        }
        let avail_idx = dma_u16(self.avail + 2);
        if avail_idx == self.last_avail {
            return None;
        }
        if avail_idx.wrapping_sub(self.last_avail) > self.size {
            violations.push(format!("avail idx {avail_idx} ran {} ahead", avail_idx.wrapping_sub(self.last_avail)));
        }
        let slot = u64::from(self.last_avail % self.size);
        let head = dma_u16(self.avail + 4 + 2 * slot);
        self.last_avail = self.last_avail.wrapping_add(1);
        let mut chain = Vec::new();
        let mut id = head;
        loop {
            if id >= self.size {
                violations.push(format!("descriptor id {id} out of range"));
                return None;
            }
            let at = self.desc + 16 * u64::from(id);
            let descriptor = Descriptor { addr: dma_u64(at), len: dma_u32(at + 8), flags: dma_u16(at + 12) };
            chain.push(descriptor);
            if descriptor.flags & DESC_F_NEXT == 0 || chain.len() > usize::from(self.size) {
                break;
            }
            id = dma_u16(at + 14);
        }
        Some((head, chain))
    }

    /// Returns a chain; true if the driver wants an interrupt for it.
    pub(crate) fn push_used(&mut self, id: u32, len: u32) -> bool {
        let slot = u64::from(self.used_idx % self.size);
        dma_write(self.used + 4 + 8 * slot, &id.to_le_bytes());
        dma_write(self.used + 8 + 8 * slot, &len.to_le_bytes());
        self.used_idx = self.used_idx.wrapping_add(1);
        dma_write(self.used + 2, &self.used_idx.to_le_bytes());
        dma_u16(self.avail) & AVAIL_F_NO_INTERRUPT == 0
    }

    /// Moves the used index without writing entries (a broken device).
    pub(crate) fn jump_used_idx(&mut self, by: u16) {
        self.used_idx = self.used_idx.wrapping_add(by);
        dma_write(self.used + 2, &self.used_idx.to_le_bytes());
    }

    /// Sets or clears `VIRTQ_USED_F_NO_NOTIFY`.
    pub(crate) fn set_no_notify(&mut self, no_notify: bool) {
        dma_write(self.used, &u16::from(no_notify).to_le_bytes());
    }

    /// Entries the driver has made available and the device not yet taken.
    pub(crate) fn available(&self) -> u16 {
        dma_u16(self.avail + 2).wrapping_sub(self.last_avail)
    }

    /// The driver's avail.idx.
    pub(crate) fn avail_idx(&self) -> u16 {
        dma_u16(self.avail + 2)
    }
}

pub(crate) const STATUS_ACK: u8 = 1;
pub(crate) const STATUS_DRIVER: u8 = 2;
pub(crate) const STATUS_DRIVER_OK: u8 = 4;
pub(crate) const STATUS_FEATURES_OK: u8 = 8;

/// The device side of virtio-net, shared by the MMIO and PCI front ends.
#[derive(Debug)]
pub(crate) struct DeviceModel {
    pub(crate) legacy: bool,
    pub(crate) device_features: u64,
    pub(crate) driver_features: u64,
    pub(crate) device_features_sel: u32,
    pub(crate) driver_features_sel: u32,
    pub(crate) status: u8,
    pub(crate) ops: Vec<Op>,
    pub(crate) violations: Vec<String>,
    pub(crate) queues: Vec<FakeQueue>,
    pub(crate) queue_sel: u16,
    pub(crate) queue_max: u16,
    pub(crate) isr: u8,
    pub(crate) config: Vec<u8>,
    pub(crate) config_generation: u32,
    /// Frames the driver transmitted, virtio header included.
    pub(crate) tx_frames: Vec<Vec<u8>>,
    pub(crate) notifications: [usize; 2],
    pub(crate) interrupts_raised: usize,
    /// Refuse FEATURES_OK.
    pub(crate) reject_features: bool,
    /// Do not process the transmit queue on notification.
    pub(crate) hold_tx: bool,
    pub(crate) guest_page_size: u32,
    pub(crate) resets: usize,
}

impl DeviceModel {
    pub(crate) fn new(legacy: bool, device_features: u64, queue_max: u16, mac: [u8; 6]) -> Self {
        let mut config = vec![0; 24];
        config[..6].copy_from_slice(&mac);
        config[6] = 1; // link up
        config[10..12].copy_from_slice(&1500u16.to_le_bytes());
        Self {
            legacy,
            device_features,
            driver_features: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            status: 0,
            ops: Vec::new(),
            violations: Vec::new(),
            queues: vec![FakeQueue::default(); 2],
            queue_sel: 0,
            queue_max,
            isr: 0,
            config,
            config_generation: 0,
            tx_frames: Vec::new(),
            notifications: [0; 2],
            interrupts_raised: 0,
            reject_features: false,
            hold_tx: false,
            guest_page_size: 0,
            resets: 0,
        }
    }

    /// The `virtio_net_hdr` length the device expects.
    pub(crate) fn header_len(&self) -> usize {
        if self.driver_features & (1 << 32) != 0 { 12 } else { 10 }
    }

    pub(crate) fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    fn reset(&mut self) {
        self.status = 0;
        self.driver_features = 0;
        self.queues = vec![FakeQueue::default(); 2];
        self.isr = 0;
        self.resets += 1;
    }

    pub(crate) fn read_status(&mut self) -> u8 {
        self.ops.push(Op::StatusRead(self.status));
        self.status
    }

    /// The status handshake of virtio 1.2, 3.1.1, enforced step by step.
    pub(crate) fn write_status(&mut self, value: u8) {
        self.ops.push(Op::StatusWrite(value));
        if value == 0 {
            self.reset();
            return;
        }
        if value & 0x80 != 0 {
            self.status = value;
            return;
        }
        let expected_next: &[u8] = match self.status {
            0 => &[STATUS_ACK],
            1 => &[STATUS_ACK | STATUS_DRIVER],
            3 if self.legacy => &[3 | STATUS_DRIVER_OK],
            3 => &[3 | STATUS_FEATURES_OK],
            11 => &[11 | STATUS_DRIVER_OK],
            _ => &[],
        };
        if !expected_next.contains(&value) {
            self.violation(format!("status {:#x} -> {value:#x}", self.status));
        }
        if value & STATUS_FEATURES_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
            let required_version = !self.legacy && self.driver_features & (1 << 32) == 0;
            if self.reject_features || required_version {
                self.status = value & !STATUS_FEATURES_OK;
                return;
            }
        }
        self.status = value;
    }

    pub(crate) fn read_device_features(&mut self) -> u32 {
        match self.device_features_sel {
            0 => self.device_features as u32,
            1 if !self.legacy => (self.device_features >> 32) as u32,
            _ => 0,
        }
    }

    pub(crate) fn write_driver_features(&mut self, value: u32) {
        if self.status != STATUS_ACK | STATUS_DRIVER {
            self.violation(format!("driver features written in status {:#x}", self.status));
        }
        let shift = match self.driver_features_sel {
            0 => 0,
            1 if !self.legacy => 32,
            other => {
                self.violation(format!("driver feature select {other}"));
                return;
            }
        };
        self.driver_features = self.driver_features & !(0xffff_ffff << shift) | u64::from(value) << shift;
        if self.driver_features & !self.device_features != 0 {
            self.violation(format!("driver accepted unoffered features {:#x}", self.driver_features));
        }
        self.ops.push(Op::DriverFeatures(self.driver_features));
    }

    pub(crate) fn selected(&mut self) -> Option<&mut FakeQueue> {
        self.queues.get_mut(usize::from(self.queue_sel))
    }

    fn check_queue_setup_allowed(&mut self) {
        let needed = if self.legacy { STATUS_ACK | STATUS_DRIVER } else { STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK };
        if self.status != needed {
            self.violation(format!("queue set up in status {:#x}", self.status));
        }
    }

    pub(crate) fn set_queue_size(&mut self, size: u32) {
        let max = self.queue_max;
        if size == 0 || size > u32::from(max) || !size.is_power_of_two() {
            self.violation(format!("queue size {size} (max {max})"));
        }
        match self.selected() {
            Some(queue) => queue.size = size as u16,
            None => self.violation("queue size on missing queue".into()),
        }
    }

    pub(crate) fn enable_queue(&mut self) {
        self.check_queue_setup_allowed();
        let index = self.queue_sel;
        match self.selected() {
            Some(queue) if queue.size != 0 && queue.desc != 0 && queue.avail != 0 && queue.used != 0 => {
                queue.enabled = true;
                let check = (queue.desc, queue.size);
                self.ops.push(Op::QueueEnabled(index));
                // The rings must lie in DMA memory: fail here, not later.
                let _ = phys_to_host(check.0, 16 * usize::from(check.1));
            }
            _ => self.violation(format!("queue {index} enabled without size/addresses")),
        }
    }

    /// Legacy: the ring addresses follow from the page frame number.
    pub(crate) fn set_queue_pfn(&mut self, pfn: u32) {
        if pfn == 0 {
            if let Some(queue) = self.selected() {
                *queue = FakeQueue::default();
            }
            return;
        }
        self.check_queue_setup_allowed();
        let page_size = self.guest_page_size;
        if page_size != 4096 {
            self.violation(format!("QueuePFN before GuestPageSize ({page_size})"));
        }
        let index = self.queue_sel;
        let Some(queue) = self.selected() else { return };
        if queue.align != 4096 {
            let align = queue.align;
            self.violation(format!("queue align {align}"));
            return;
        }
        let queue = self.selected().unwrap();
        queue.pfn = pfn;
        queue.desc = u64::from(pfn) * u64::from(page_size);
        queue.avail = queue.desc + 16 * u64::from(queue.size);
        // QEMU's formula: used = align(avail + offsetof(avail, ring[num])).
        queue.used = (queue.avail + 4 + 2 * u64::from(queue.size)).next_multiple_of(u64::from(queue.align));
        queue.enabled = true;
        self.ops.push(Op::QueueEnabled(index));
    }

    pub(crate) fn notify(&mut self, queue: u16) {
        self.ops.push(Op::Notify(queue));
        if self.status & STATUS_DRIVER_OK == 0 {
            self.violation(format!("notify of queue {queue} before DRIVER_OK"));
        }
        match queue {
            0 => self.notifications[0] += 1,
            1 => {
                self.notifications[1] += 1;
                if !self.hold_tx {
                    self.process_tx();
                }
            }
            other => self.violation(format!("notify of queue {other}")),
        }
    }

    fn raise(&mut self, bits: u8) {
        self.isr |= bits;
        self.interrupts_raised += 1;
    }

    /// Transmits everything available on queue 1.
    pub(crate) fn process_tx(&mut self) {
        let mut violations = Vec::new();
        let mut interrupt = false;
        while let Some((head, chain)) = self.queues[1].pop_avail(&mut violations) {
            let mut frame = Vec::new();
            for descriptor in &chain {
                if descriptor.flags & DESC_F_WRITE != 0 {
                    violations.push("device-writable descriptor on the transmit queue".into());
                }
                frame.extend(dma_read(descriptor.addr, descriptor.len as usize));
            }
            self.tx_frames.push(frame);
            interrupt |= self.queues[1].push_used(u32::from(head), 0);
        }
        self.violations.extend(violations);
        if interrupt {
            self.raise(1);
        }
    }

    /// Delivers `frame` into the next receive buffer, as a device does: the
    /// `virtio_net_hdr` (zero, `num_buffers` = 1 for modern) then the frame.
    pub(crate) fn inject_rx(&mut self, frame: &[u8]) -> bool {
        let header_len = self.header_len();
        let mut packet = vec![0; header_len];
        if header_len == 12 {
            packet[10] = 1;
        }
        packet.extend_from_slice(frame);
        let mut violations = Vec::new();
        let Some((head, chain)) = self.queues[0].pop_avail(&mut violations) else {
            self.violations.extend(violations);
            return false;
        };
        let mut rest = &packet[..];
        for descriptor in &chain {
            if descriptor.flags & DESC_F_WRITE == 0 {
                violations.push("read-only descriptor on the receive queue".into());
            }
            let take = rest.len().min(descriptor.len as usize);
            dma_write(descriptor.addr, &rest[..take]);
            rest = &rest[take..];
        }
        if !rest.is_empty() {
            violations.push(format!("receive buffer too small for {} bytes", packet.len()));
        }
        self.violations.extend(violations);
        if self.queues[0].push_used(u32::from(head), packet.len() as u32) {
            self.raise(1);
        }
        true
    }

    /// Takes a receive buffer and returns it with a chosen (bad) length.
    pub(crate) fn return_rx_with_len(&mut self, len: u32) -> Option<u16> {
        let mut violations = Vec::new();
        let (head, _) = self.queues[0].pop_avail(&mut violations)?;
        if self.queues[0].push_used(u32::from(head), len) {
            self.raise(1);
        }
        Some(head)
    }

    /// Changes the link state and signals a configuration change.
    pub(crate) fn set_link(&mut self, up: bool) {
        self.config[6] = u8::from(up);
        self.config_generation += 1;
        self.raise(2);
    }

    /// Takes the frames transmitted so far, without their virtio header.
    pub(crate) fn take_tx_frames(&mut self) -> Vec<Vec<u8>> {
        let header_len = self.header_len();
        let frames = std::mem::take(&mut self.tx_frames);
        for frame in &frames {
            if frame.len() < header_len || frame[..header_len].iter().any(|&b| b != 0) {
                self.violations.push(format!("bad transmit header {:?}", &frame[..header_len.min(frame.len())]));
            }
        }
        frames.into_iter().map(|frame| frame[header_len.min(frame.len())..].to_vec()).collect()
    }
}

pub(crate) type Model = Rc<RefCell<DeviceModel>>;

/// The virtio-mmio register block of a simulated device.
pub(crate) struct FakeMmio {
    pub(crate) model: Model,
    pub(crate) version: u32,
    pub(crate) device_id: u32,
    pub(crate) magic: u32,
    /// Host memory the registers "live" in: a real, unique address range.
    pub(crate) block: Box<[u64; 64]>,
}

pub(crate) const MMIO_SIZE: usize = 0x200;

impl FakeMmio {
    /// Creates and registers a device; returns it and the base to give
    /// `MmioTransport::new`.
    pub(crate) fn install(model: Model, version: u32, device_id: u32) -> (Rc<FakeMmio>, NonNull<u8>) {
        let fake = Rc::new(FakeMmio { model, version, device_id, magic: 0x7472_6976, block: Box::new([0; 64]) });
        let base = NonNull::new(fake.block.as_ptr() as *mut u8).unwrap();
        bus::register(base.as_ptr() as usize, MMIO_SIZE, fake.clone());
        (fake, base)
    }
}

impl bus::RegisterHandler for FakeMmio {
    fn read(&self, offset: usize, width: usize) -> u32 {
        let mut model = self.model.borrow_mut();
        if offset >= 0x100 {
            let byte = |i: usize| u32::from(model.config.get(offset - 0x100 + i).copied().unwrap_or(0));
            return (0..width).fold(0, |value, i| value | byte(i) << (8 * i));
        }
        if width != 4 {
            model.violation(format!("mmio read of width {width} at {offset:#x}"));
        }
        let legacy = self.version == 1;
        match offset {
            0x000 => self.magic,
            0x004 => self.version,
            0x008 => self.device_id,
            0x00c => 0x554d_4551,
            0x010 => model.read_device_features(),
            0x034 => {
                if model.queue_sel < 2 {
                    u32::from(model.queue_max)
                } else {
                    0
                }
            }
            0x040 if legacy => model.selected().map_or(0, |q| q.pfn),
            0x044 if !legacy => model.selected().map_or(0, |q| u32::from(q.enabled)),
            0x060 => u32::from(model.isr),
            0x070 => u32::from(model.read_status()),
            0x0fc if !legacy => model.config_generation,
            _ => {
                model.violation(format!("mmio read of {offset:#x} (version {})", self.version));
                0
            }
        }
    }

    fn write(&self, offset: usize, width: usize, value: u32) {
        let mut model = self.model.borrow_mut();
        if width != 4 {
            model.violation(format!("mmio write of width {width} at {offset:#x}"));
        }
        let legacy = self.version == 1;
        let high = |old: u64, value: u32| old & 0xffff_ffff | u64::from(value) << 32;
        let low = |old: u64, value: u32| old & !0xffff_ffff | u64::from(value);
        match offset {
            0x014 => model.device_features_sel = value,
            0x020 => model.write_driver_features(value),
            0x024 => model.driver_features_sel = value,
            0x028 if legacy => model.guest_page_size = value,
            0x030 => model.queue_sel = value as u16,
            0x038 => model.set_queue_size(value),
            0x03c if legacy => {
                if let Some(queue) = model.selected() {
                    queue.align = value;
                }
            }
            0x040 if legacy => model.set_queue_pfn(value),
            0x044 if !legacy => {
                if value == 1 {
                    model.enable_queue();
                }
            }
            0x050 => model.notify(value as u16),
            0x064 => model.isr &= !(value as u8),
            0x070 => model.write_status(value as u8),
            0x080 | 0x084 | 0x090 | 0x094 | 0x0a0 | 0x0a4 if !legacy => {
                if let Some(queue) = model.selected() {
                    let field = match offset & !0xf {
                        0x080 => &mut queue.desc,
                        0x090 => &mut queue.avail,
                        _ => &mut queue.used,
                    };
                    *field = if offset & 4 == 0 { low(*field, value) } else { high(*field, value) };
                }
            }
            _ => model.violation(format!("mmio write of {value:#x} to {offset:#x} (version {})", self.version)),
        }
    }
}

/// PCI configuration space of a bus of simulated functions.
#[derive(Default)]
pub(crate) struct FakePciBus {
    pub(crate) functions: RefCell<HashMap<(u8, u8, u8), [u8; 256]>>,
    /// Functions whose status register mirrors the virtio status (uhyve).
    pub(crate) status_mirror: HashMap<(u8, u8, u8), Model>,
    /// uhyve answers for device 0 function 0 on every bus that is a
    /// multiple of 32 and on every function number.
    pub(crate) uhyve_aliasing: bool,
    pub(crate) reads: Cell<usize>,
}

impl FakePciBus {
    fn key(&self, bus: u8, device: u8, function: u8) -> (u8, u8, u8) {
        if self.uhyve_aliasing && device == 0 && bus.is_multiple_of(32) { (0, 0, 0) } else { (bus, device, function) }
    }

    pub(crate) fn add(&mut self, address: (u8, u8, u8), config: [u8; 256]) {
        self.functions.get_mut().insert(address, config);
    }

    pub(crate) fn config_u32(&self, address: (u8, u8, u8), offset: usize) -> u32 {
        let functions = self.functions.borrow();
        let config = &functions[&address];
        u32::from_le_bytes(config[offset..offset + 4].try_into().unwrap())
    }
}

impl crate::pci::PciConfig for FakePciBus {
    fn read32(&self, bus: u8, device: u8, function: u8, offset: u16) -> u32 {
        self.reads.set(self.reads.get() + 1);
        assert_eq!(offset % 4, 0, "unaligned configuration read");
        let key = self.key(bus, device, function);
        let functions = self.functions.borrow();
        let Some(config) = functions.get(&key) else {
            return u32::MAX;
        };
        let offset = usize::from(offset);
        let mut value = u32::from_le_bytes(config[offset..offset + 4].try_into().unwrap());
        if offset == 4
            && let Some(model) = self.status_mirror.get(&key)
        {
            value = value & 0xffff | u32::from(model.borrow().status) << 16;
        }
        value
    }

    fn write32(&self, bus: u8, device: u8, function: u8, offset: u16, value: u32) {
        let key = self.key(bus, device, function);
        let mut functions = self.functions.borrow_mut();
        let Some(config) = functions.get_mut(&key) else {
            return;
        };
        let offset = usize::from(offset);
        match offset {
            // Command register; status bits are write-one-to-clear.
            4 => config[4..6].copy_from_slice(&(value as u16).to_le_bytes()),
            0x10..=0x27 => config[offset..offset + 4].copy_from_slice(&value.to_le_bytes()),
            _ => {}
        }
    }
}

/// Which hypervisor's virtio-net PCI device to imitate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PciFlavour {
    /// QEMU `virtio-net-pci,disable-legacy=on`: a 64-bit BAR 4 above 4 GiB
    /// with common 0x0, ISR 0x1000, device 0x2000, notify 0x3000
    /// (multiplier 4, notify_off = queue index), an MSI-X capability first
    /// and a PCI_CFG capability last.
    Qemu,
    /// uhyve 0.10: everything in BAR 0 at 0xfe00_0000, capabilities at
    /// 0x40.., structures at 0x88 (common), 0xc8 (ISR), 0xd0 (notify, 8
    /// bytes, multiplier 4), 0xd8 (device); capability-list status bit
    /// clear; queue_size read-only; one queue_enable for all queues;
    /// interrupt line 11, pin 1.
    Uhyve,
}

/// Where each structure sits inside the BAR window the fake registers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BarLayout {
    pub(crate) common: usize,
    pub(crate) isr: usize,
    pub(crate) notify: usize,
    pub(crate) notify_len: usize,
    pub(crate) device: usize,
    pub(crate) multiplier: u32,
}

/// The registers behind the BAR of a simulated virtio PCI function.
pub(crate) struct FakePciBar {
    pub(crate) model: Model,
    pub(crate) flavour: PciFlavour,
    pub(crate) layout: BarLayout,
    pub(crate) msix_config: Cell<u16>,
    /// uhyve keeps one queue_enable value for every queue.
    pub(crate) shared_enable: Cell<u16>,
    pub(crate) memory: Box<[u8]>,
}

impl FakePciBar {
    fn common_width(offset: usize) -> usize {
        match offset {
            0x00..=0x0f | 0x20..=0x37 => 4,
            0x10..=0x13 | 0x16..=0x1f => 2,
            _ => 1,
        }
    }

    fn common_read(&self, model: &mut DeviceModel, offset: usize) -> u32 {
        match offset {
            0x00 => model.device_features_sel,
            0x04 => model.read_device_features(),
            0x08 => model.driver_features_sel,
            0x10 => u32::from(self.msix_config.get()),
            0x12 => 2,
            0x14 => u32::from(model.read_status()),
            0x15 => model.config_generation & 0xff,
            0x16 => u32::from(model.queue_sel),
            0x18 => {
                let max = model.queue_max;
                let uhyve = self.flavour == PciFlavour::Uhyve;
                model.selected().map_or(0, |q| u32::from(if q.size == 0 || uhyve { max } else { q.size }))
            }
            0x1c => match self.flavour {
                PciFlavour::Uhyve => u32::from(self.shared_enable.get()),
                PciFlavour::Qemu => model.selected().map_or(0, |q| u32::from(q.enabled)),
            },
            0x1e => u32::from(model.queue_sel),
            _ => {
                model.violation(format!("common cfg read at {offset:#x}"));
                0
            }
        }
    }

    fn common_write(&self, model: &mut DeviceModel, offset: usize, value: u32) {
        let queue_field = |model: &mut DeviceModel, pick: fn(&mut FakeQueue) -> &mut u64, high: bool| {
            if let Some(queue) = model.selected() {
                let field = pick(queue);
                *field = if high { *field & 0xffff_ffff | u64::from(value) << 32 } else { *field & !0xffff_ffff | u64::from(value) };
            }
        };
        match offset {
            0x00 => model.device_features_sel = value,
            0x08 => model.driver_features_sel = value,
            0x0c => model.write_driver_features(value),
            0x14 => model.write_status(value as u8),
            0x16 => {
                model.queue_sel = value as u16;
                let max = model.queue_max;
                if let Some(queue) = model.selected()
                    && queue.size == 0
                {
                    queue.size = max;
                }
            }
            0x18 => {
                if self.flavour == PciFlavour::Uhyve {
                    model.violation("queue_size written (read-only on uhyve)".into());
                } else {
                    model.set_queue_size(value);
                }
            }
            0x1c => {
                if value == 1 {
                    self.shared_enable.set(1);
                    model.enable_queue();
                }
            }
            0x20 => queue_field(model, |q| &mut q.desc, false),
            0x24 => queue_field(model, |q| &mut q.desc, true),
            0x28 => queue_field(model, |q| &mut q.avail, false),
            0x2c => queue_field(model, |q| &mut q.avail, true),
            0x30 => queue_field(model, |q| &mut q.used, false),
            0x34 => queue_field(model, |q| &mut q.used, true),
            _ => model.violation(format!("common cfg write {value:#x} at {offset:#x}")),
        }
    }
}

impl bus::RegisterHandler for FakePciBar {
    fn read(&self, offset: usize, width: usize) -> u32 {
        let mut model = self.model.borrow_mut();
        let layout = self.layout;
        if (layout.common..layout.common + 0x38).contains(&offset) {
            let field = offset - layout.common;
            if width != Self::common_width(field) {
                model.violation(format!("common cfg read width {width} at {field:#x}"));
            }
            return self.common_read(&mut model, field);
        }
        if offset == layout.isr {
            if width != 1 {
                model.violation(format!("ISR read width {width}"));
            }
            let isr = model.isr;
            model.isr = 0;
            return u32::from(isr);
        }
        if (layout.device..layout.device + 24).contains(&offset) {
            let base = offset - layout.device;
            let byte = |i: usize| u32::from(model.config.get(base + i).copied().unwrap_or(0));
            return (0..width).fold(0, |value, i| value | byte(i) << (8 * i));
        }
        model.violation(format!("BAR read at {offset:#x}"));
        0
    }

    fn write(&self, offset: usize, width: usize, value: u32) {
        let mut model = self.model.borrow_mut();
        let layout = self.layout;
        if (layout.common..layout.common + 0x38).contains(&offset) {
            let field = offset - layout.common;
            if width != Self::common_width(field) {
                model.violation(format!("common cfg write width {width} at {field:#x}"));
            }
            return self.common_write(&mut model, field, value);
        }
        if (layout.notify..layout.notify + layout.notify_len).contains(&offset) {
            let queue = (offset - layout.notify) / layout.multiplier as usize;
            if width != 2 || value as usize != queue {
                model.violation(format!("notify write {value} width {width} at notify+{:#x}", offset - layout.notify));
            }
            return model.notify(queue as u16);
        }
        model.violation(format!("BAR write {value:#x} at {offset:#x}"));
    }
}

const VENDOR_CAP: u8 = 0x09;

/// A virtio vendor capability: type, BAR, offset, length, and the notify
/// multiplier (or PCI_CFG data) for the 20-byte forms.
type CapSpec = (u8, u8, u32, u32, Option<u32>);

/// Writes a virtio vendor capability at `at`, linked to `next`.
fn put_cap(config: &mut [u8; 256], at: usize, next: u8, (kind, bar, offset, length, extra): CapSpec) {
    let len = if extra.is_some() { 20 } else { 16 };
    config[at..at + 4].copy_from_slice(&[VENDOR_CAP, next, len, kind]);
    config[at + 4] = bar;
    config[at + 8..at + 12].copy_from_slice(&offset.to_le_bytes());
    config[at + 12..at + 16].copy_from_slice(&length.to_le_bytes());
    if let Some(extra) = extra {
        config[at + 16..at + 20].copy_from_slice(&extra.to_le_bytes());
    }
}

/// A type 0 header with `vendor`/`device`, and class/header type.
pub(crate) fn pci_header(vendor: u16, device: u16, class: u32, header_type: u8) -> [u8; 256] {
    let mut config = [0; 256];
    config[0..2].copy_from_slice(&vendor.to_le_bytes());
    config[2..4].copy_from_slice(&device.to_le_bytes());
    config[8..12].copy_from_slice(&(class << 8).to_le_bytes());
    config[0x0e] = header_type;
    config
}

/// A simulated virtio-net PCI function: configuration space for the bus and
/// the BAR registers, registered as an MMIO window.
pub(crate) struct FakePciNet {
    pub(crate) config: [u8; 256],
}

impl FakePciNet {
    pub(crate) fn new(flavour: PciFlavour, model: Model) -> Self {
        let (bar_index, bar_phys, layout, bar_len) = match flavour {
            PciFlavour::Qemu => (
                4,
                0x8_0000_0000u64,
                BarLayout { common: 0, isr: 0x1000, notify: 0x3000, notify_len: 0x4000, device: 0x2000, multiplier: 4 },
                0x8000,
            ),
            PciFlavour::Uhyve => {
                (0, 0xfe00_0000u64, BarLayout { common: 0x88, isr: 0xc8, notify: 0xd0, notify_len: 8, device: 0xd8, multiplier: 4 }, 0x100)
            }
        };
        let mut config = pci_header(0x1af4, 0x1041, 0x02_00_00, 0);
        let bar_offset = 0x10 + 4 * bar_index;
        config[bar_offset..bar_offset + 4].copy_from_slice(&((bar_phys as u32) | 0b1100).to_le_bytes());
        config[bar_offset + 4..bar_offset + 8].copy_from_slice(&((bar_phys >> 32) as u32).to_le_bytes());
        let bar = bar_index as u8;
        match flavour {
            PciFlavour::Qemu => {
                config[4] = 0x00;
                config[5] = 0x04; // firmware left INTx masked
                config[6] = 0x10; // capability list
                config[0x34] = 0x98;
                // MSI-X first, as QEMU has it.
                config[0x98..0x9c].copy_from_slice(&[0x11, 0x84, 0x02, 0x00]);
                put_cap(&mut config, 0x84, 0x70, (1, bar, layout.common as u32, 0x1000, None));
                put_cap(&mut config, 0x70, 0x5c, (3, bar, layout.isr as u32, 0x1000, None));
                put_cap(&mut config, 0x5c, 0x48, (4, bar, layout.device as u32, 0x1000, None));
                put_cap(&mut config, 0x48, 0xa0, (2, bar, layout.notify as u32, 0x4000, Some(4)));
                // VIRTIO_PCI_CAP_PCI_CFG, which the driver does not use.
                put_cap(&mut config, 0xa0, 0x00, (5, 0, 0, 4, Some(0)));
                config[0x3c] = 10;
                config[0x3d] = 1;
            }
            PciFlavour::Uhyve => {
                config[0x34] = 0x40;
                put_cap(&mut config, 0x40, 0x50, (1, bar, 0x88, 0x40, None));
                put_cap(&mut config, 0x50, 0x60, (3, bar, 0xc8, 1, None));
                put_cap(&mut config, 0x60, 0x78, (2, bar, 0xd0, 8, Some(4)));
                put_cap(&mut config, 0x78, 0x00, (4, bar, 0xd8, 24, None));
                config[0x3c] = 11;
                config[0x3d] = 1;
            }
        }
        let bar_regs = Rc::new(FakePciBar {
            model,
            flavour,
            layout,
            msix_config: Cell::new(0xffff),
            shared_enable: Cell::new(0),
            memory: vec![0; bar_len].into_boxed_slice(),
        });
        let host = bar_regs.memory.as_ptr() as usize;
        bus::register(host, bar_len, bar_regs);
        add_mmio_window(bar_phys, bar_len, host);
        Self { config }
    }
}
