//! Program 6: shared memory between an RT thread and the outside world.
//!
//! - The seed's shared struct (`some_int` and a `ready` flag) is a plain
//!   static of atomics. A 500 ms periodic RT thread (`shm-rt`) prints it
//!   when the control plane has set it (`SET shm.value 42` stores the value
//!   and then raises `ready`; the thread consumes the flag), and otherwise
//!   at debug level every 10 s. Its cleanup handler reports the thread's end,
//!   as the seed's did on `rmmod`.
//! - The reserved raw region (`reserve=2M` on the command line, carved out
//!   of the memory map at boot, never given to the heap) holds a typed
//!   mailbox (`raw_pod!`, atomics only, so no `unsafe` here): the RT thread
//!   counts its periods in it and `SET raw.value n` writes into it. Its base
//!   and size are the shared statics `raw.base` and `raw.size` (0 when no
//!   region was reserved; `INFO memory` shows them too).
//!
//! Observe: `GET shm.value`, `SET shm.value 42`, `GET shm.ready`,
//! `GET shm.seen`; `GET raw.base`, `GET raw.size`, `GET raw.periods`,
//! `SET raw.value 7`; events `shm-update` on channel `events`.

use alloc::string::String;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use rtedge_kernel::memory::raw::RawRegion;
use rtedge_kernel::modules::Module;
use rtedge_kernel::shared::{self, Access, SharedInt, SharedValue};
use rtedge_kernel::sync::IrqSpinLock;
use rtedge_kernel::{thread, time};
use rtedge_proto::{Scalar, ScalarType};

use super::OwnedThread;

const PERIOD_NS: u64 = 500_000_000;
const PRIORITY: u8 = 1;
/// Without updates, a debug line every this many periods.
const QUIET_PERIODS: u64 = 20;
const THREAD_NAME: &str = "shm-rt";

/// The seed's `struct shared_mem_struct { int some_int; char ready; }`.
struct SharedStruct {
    some_int: AtomicI64,
    ready: AtomicBool,
}

static SHARED: SharedStruct = SharedStruct { some_int: AtomicI64::new(0), ready: AtomicBool::new(false) };

/// `shm.value`: writing it stores the value, then raises `ready` (release
/// order, so whoever sees `ready` sees the value).
struct ShmValue;

impl SharedValue for ShmValue {
    fn name(&self) -> &'static str {
        "shm.value"
    }
    fn scalar_type(&self) -> ScalarType {
        ScalarType::Integer
    }
    fn access(&self) -> Access {
        Access::ReadWrite
    }
    fn get(&self) -> Scalar {
        Scalar::Integer(SHARED.some_int.load(Ordering::Acquire))
    }
    fn store(&self, value: Scalar) {
        if let Scalar::Integer(value) = value {
            SHARED.some_int.store(value, Ordering::Release);
            SHARED.ready.store(true, Ordering::Release);
        }
    }
}

/// `shm.ready`: the flag, read-only from outside (the RT thread clears it).
struct ShmReady;

impl SharedValue for ShmReady {
    fn name(&self) -> &'static str {
        "shm.ready"
    }
    fn scalar_type(&self) -> ScalarType {
        ScalarType::Bool
    }
    fn access(&self) -> Access {
        Access::ReadOnly
    }
    fn get(&self) -> Scalar {
        Scalar::Bool(SHARED.ready.load(Ordering::Acquire))
    }
    fn store(&self, _: Scalar) {}
}

static SHM_VALUE: ShmValue = ShmValue;
static SHM_READY: ShmReady = ShmReady;
/// Updates the RT thread has consumed.
static SEEN: SharedInt = SharedInt::new("shm.seen", Access::ReadOnly, 0);
static RAW_BASE: SharedInt = SharedInt::new("raw.base", Access::ReadOnly, 0);
static RAW_SIZE: SharedInt = SharedInt::new("raw.size", Access::ReadOnly, 0);
static STATICS: [&dyn SharedValue; 5] = [&SHM_VALUE, &SHM_READY, &SEEN, &RAW_BASE, &RAW_SIZE];

rtedge_kernel::raw_pod! {
    /// What this program keeps at offset 0 of the raw region.
    pub struct Mailbox {
        /// [`MAILBOX_MAGIC`] once initialised (the region's RAM starts
        /// with whatever it held).
        pub magic: AtomicU64,
        /// Periods of the RT thread, over every load of the module.
        pub periods: AtomicU64,
        /// Written by `SET raw.value`.
        pub value: AtomicI64,
        /// Writes of `value`.
        pub writes: AtomicU64,
    }
}

/// "rtedgeRW", little-endian.
pub const MAILBOX_MAGIC: u64 = u64::from_le_bytes(*b"rtedgeRW");

/// The mailbox view, once the region is known.
static MAILBOX: IrqSpinLock<Option<&'static Mailbox>> = IrqSpinLock::new(None);

fn mailbox() -> Option<&'static Mailbox> {
    *MAILBOX.lock()
}

/// `raw.value`, stored in the raw region.
struct RawValue;

impl SharedValue for RawValue {
    fn name(&self) -> &'static str {
        "raw.value"
    }
    fn scalar_type(&self) -> ScalarType {
        ScalarType::Integer
    }
    fn access(&self) -> Access {
        Access::ReadWrite
    }
    fn get(&self) -> Scalar {
        Scalar::Integer(mailbox().map_or(0, |mailbox| mailbox.value.load(Ordering::Acquire)))
    }
    fn store(&self, value: Scalar) {
        if let (Scalar::Integer(value), Some(mailbox)) = (value, mailbox()) {
            mailbox.value.store(value, Ordering::Release);
            mailbox.writes.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// `raw.periods`: the RT thread's counter in the raw region.
struct RawPeriods;

impl SharedValue for RawPeriods {
    fn name(&self) -> &'static str {
        "raw.periods"
    }
    fn scalar_type(&self) -> ScalarType {
        ScalarType::Integer
    }
    fn access(&self) -> Access {
        Access::ReadOnly
    }
    fn get(&self) -> Scalar {
        Scalar::Integer(mailbox().map_or(0, |mailbox| mailbox.periods.load(Ordering::Acquire) as i64))
    }
    fn store(&self, _: Scalar) {}
}

static RAW_VALUE: RawValue = RawValue;
static RAW_PERIODS: RawPeriods = RawPeriods;
static RAW_STATICS: [&dyn SharedValue; 2] = [&RAW_VALUE, &RAW_PERIODS];

static RT_THREAD: OwnedThread = OwnedThread::new();

fn cleanup(_: usize) {
    log::info!("{THREAD_NAME}: cleanup handler called");
}

fn rt_thread(mailbox: Option<&'static Mailbox>) -> i32 {
    if thread::make_periodic(time::now_ns(), PERIOD_NS).is_err() {
        return 1;
    }
    thread::cleanup_push(cleanup, 0);
    let mut period = 0u64;
    loop {
        if thread::wait_next_period().is_err() {
            break;
        }
        period += 1;
        if let Some(mailbox) = mailbox {
            mailbox.periods.fetch_add(1, Ordering::AcqRel);
        }
        if SHARED.ready.swap(false, Ordering::AcqRel) {
            let value = SHARED.some_int.load(Ordering::Acquire);
            let seen = SEEN.add(1);
            log::info!("{THREAD_NAME}: shared mem={value} (ready; update {seen})");
            super::event("shm-update", &[("value", value), ("seen", seen)], "", "");
        } else if period.is_multiple_of(QUIET_PERIODS) {
            log::debug!("{THREAD_NAME}: shared mem={}", SHARED.some_int.load(Ordering::Acquire));
        }
    }
    thread::cleanup_pop(true);
    0
}

/// Finds (or initialises) the mailbox in the raw region, if one is reserved.
fn attach_raw_region() -> Option<&'static Mailbox> {
    let Some(region) = RawRegion::get() else {
        RAW_BASE.set(0);
        RAW_SIZE.set(0);
        log::info!("shm: no raw region reserved (boot with reserve=2M for one); raw.* shows 0");
        return None;
    };
    RAW_BASE.set(region.base() as i64);
    RAW_SIZE.set(region.size() as i64);
    match region.typed::<Mailbox>(0) {
        Ok(mailbox) => {
            let state = if mailbox.magic.load(Ordering::Acquire) == MAILBOX_MAGIC {
                "kept from an earlier load"
            } else {
                mailbox.periods.store(0, Ordering::Relaxed);
                mailbox.value.store(0, Ordering::Relaxed);
                mailbox.writes.store(0, Ordering::Relaxed);
                mailbox.magic.store(MAILBOX_MAGIC, Ordering::Release);
                "initialised"
            };
            log::info!(
                "shm: raw region {:#x}..{:#x} ({} KiB); mailbox at offset 0 {state}",
                region.base(),
                region.base() + region.size(),
                region.size() / 1024
            );
            Some(mailbox)
        }
        Err(error) => {
            log::warn!("shm: no mailbox in the raw region: {error}");
            None
        }
    }
}

pub struct ShmProgram;

pub static MODULE: ShmProgram = ShmProgram;

impl Module for ShmProgram {
    fn name(&self) -> &'static str {
        "shm"
    }

    fn description(&self) -> &'static str {
        "500 ms RT thread prints a shared struct set by SET shm.value; typed mailbox in the reserved raw region"
    }

    fn init(&'static self) -> Result<(), String> {
        SHARED.ready.store(false, Ordering::Release);
        SEEN.set(0);
        super::register_statics(&STATICS);
        let mailbox = attach_raw_region();
        *MAILBOX.lock() = mailbox;
        if mailbox.is_some() {
            super::register_statics(&RAW_STATICS);
        }
        // A failed start undoes what init did so far.
        RT_THREAD.start_realtime(THREAD_NAME, PRIORITY, move || rt_thread(mailbox)).inspect_err(|_| self.exit())
    }

    fn exit(&'static self) {
        RT_THREAD.delete(THREAD_NAME);
        super::unregister_statics(&RAW_STATICS);
        super::unregister_statics(&STATICS);
        *MAILBOX.lock() = None;
        log::info!("shm: unloaded ({} updates seen; shm.value was {})", SEEN.load(), SHARED.some_int.load(Ordering::Acquire));
    }

    fn threads(&self) -> usize {
        RT_THREAD.live_count()
    }
}

/// Writes `shm.value` as `SET` does (the self-check uses it).
pub fn set_value(text: &[u8]) -> bool {
    shared::set("shm.value", text).is_ok()
}
