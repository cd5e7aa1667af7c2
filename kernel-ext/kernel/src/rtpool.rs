//! The bounded real-time allocator (the seeds' naive rt-allocator, made
//! safe): an RT thread calling [`rt_alloc`] stores its request,
//! hi-schedules the allocator tasklet and suspends; the tasklet allocates
//! (never blocking, zero-filled) from a pool of at most [`BUFFERS`] buffers
//! of at most [`MAX_SIZE`] bytes each, and wakes the caller, which must check
//! for failure. The call is a cancellation point. Requests above
//! `MAX_SIZE` fail with an error, never a silent truncation. [`free_all`]
//! returns every buffer (module unload, shutdown) and counts them.
//!
//! The RT thread never touches the heap: the tasklet allocates and frees.

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use rtedge_engine::rtpool::{CancelOutcome, Completion, RequestSlots, Ticket};

use crate::sync::IrqSpinLock;
use crate::tasklet::Tasklet;
use crate::thread::{self, ThreadId};
use crate::{context, events};

/// Buffers the pool can hold at once.
pub const BUFFERS: usize = 128;
/// Largest buffer.
pub const MAX_SIZE: usize = 128 * 1024;
const ALIGN: usize = 16;
/// Outstanding requests at once (one per requesting RT thread).
const MAX_REQUESTS: usize = 16;

/// Why an allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtPoolError {
    /// More than [`MAX_SIZE`] bytes were asked for.
    TooLarge,
    /// Size 0.
    Empty,
    /// All [`BUFFERS`] are in use.
    Exhausted,
    /// The heap had no block (the request was valid).
    OutOfMemory,
    /// Too many requests waiting at once.
    Busy,
    /// Called from a context that cannot suspend (not a thread).
    WrongContext,
}

impl core::fmt::Display for RtPoolError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RtPoolError::TooLarge => "request larger than 128 KiB",
            RtPoolError::Empty => "request of 0 bytes",
            RtPoolError::Exhausted => "no more buffers",
            RtPoolError::OutOfMemory => "out of memory",
            RtPoolError::Busy => "too many requests in flight",
            RtPoolError::WrongContext => "rt_alloc must be called from a thread",
        })
    }
}

impl RtPoolError {
    fn code(self) -> i64 {
        match self {
            RtPoolError::TooLarge => 1,
            RtPoolError::Empty => 2,
            RtPoolError::Exhausted => 3,
            RtPoolError::OutOfMemory => 4,
            RtPoolError::Busy => 5,
            RtPoolError::WrongContext => 6,
        }
    }
}

/// A buffer from the pool: its index, address and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtBuffer {
    pub index: usize,
    address: usize,
    pub size: usize,
}

impl RtBuffer {
    /// The buffer's bytes (zero-filled when handed out). Valid until freed.
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.address as *mut u8
    }
}

struct Pool {
    slots: [Option<(usize, usize)>; BUFFERS],
    to_free: [bool; BUFFERS],
}

static POOL: IrqSpinLock<Pool> = IrqSpinLock::new(Pool { slots: [None; BUFFERS], to_free: [false; BUFFERS] });
/// The request slots' state machine (engine code, model-checked by
/// `tests/loom_rtpool.rs`): a result reaches the request it was made for.
static REQUEST_SLOTS: RequestSlots<MAX_REQUESTS> = RequestSlots::new();
/// The thread behind each request slot. Written only by the requester
/// while its slot is reserved and unpublished; read by the server once it
/// has claimed the request (the slot's state word orders the two).
static OWNERS: IrqSpinLock<[Option<ThreadId>; MAX_REQUESTS]> = IrqSpinLock::new([None; MAX_REQUESTS]);
static ALLOCATOR: Tasklet = Tasklet::new("rtpool-allocator", allocator_tasklet, 0);
static REQUESTS: AtomicU64 = AtomicU64::new(0);
static FAILURES: AtomicU64 = AtomicU64::new(0);
static FREED: AtomicU64 = AtomicU64::new(0);
static IN_USE: AtomicU32 = AtomicU32::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);
static REGISTERED: AtomicBool = AtomicBool::new(false);
/// Results the server made for requesters that had left (freed at once).
static ABANDONED: AtomicU64 = AtomicU64::new(0);

/// Test hook (`selftest::log_pool_rules`): while set, the allocator
/// tasklet stops between taking a request and handing its result over,
/// the window in which a cancel used to hand the slot to another thread.
static HOLD_AFTER_CLAIM: AtomicBool = AtomicBool::new(false);
/// Set by the tasklet when it stops at the hook.
static HELD: AtomicBool = AtomicBool::new(false);
/// Test hook: while set, `rt_alloc` files its request without scheduling
/// the allocator tasklet (the test schedules it from another CPU).
static DEFER_KICK: AtomicBool = AtomicBool::new(false);
/// Test hook: while set, a requester woken without its result waits
/// (yielding, bounded) for a cancel before it looks for one, widening the
/// window in which the old logic gave its slot away.
static PAUSE_BEFORE_CANCEL_CHECK: AtomicBool = AtomicBool::new(false);
/// Set by a requester waiting at that hook.
static AT_CANCEL_CHECK: AtomicBool = AtomicBool::new(false);
/// The longest the tasklet stops at the test hook.
const HOLD_LIMIT_NS: u64 = 3_000_000_000;

/// Bit 63 of an encoded result marks an error (its code in the low bits).
const ERROR_BIT: u64 = 1 << 63;

fn encode(result: Result<usize, RtPoolError>) -> u64 {
    match result {
        Ok(index) => index as u64,
        Err(error) => ERROR_BIT | error.code() as u64,
    }
}

fn decode(raw: u64) -> Result<usize, RtPoolError> {
    if raw & ERROR_BIT == 0 {
        return Ok(raw as usize);
    }
    Err(match raw & !ERROR_BIT {
        1 => RtPoolError::TooLarge,
        2 => RtPoolError::Empty,
        3 => RtPoolError::Exhausted,
        5 => RtPoolError::Busy,
        6 => RtPoolError::WrongContext,
        _ => RtPoolError::OutOfMemory,
    })
}

fn layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size, ALIGN).ok()
}

/// The allocator tasklet: serves every waiting request and frees buffers
/// marked by `rt_free`. Softirq context: never blocks.
fn allocator_tasklet(_: usize) {
    // Frees first: they make room for the requests.
    for index in 0..BUFFERS {
        let marked = {
            let mut pool = POOL.lock();
            core::mem::replace(&mut pool.to_free[index], false)
        };
        if marked {
            release(index);
        }
    }
    for slot in 0..MAX_REQUESTS {
        let Some(claim) = REQUEST_SLOTS.claim(slot) else { continue };
        // Read while the request is ours (SERVING): nobody writes it now.
        let owner = OWNERS.lock()[slot];
        let size = claim.size as usize;
        let result = allocate(size);
        if HOLD_AFTER_CLAIM.load(Ordering::Acquire) {
            HELD.store(true, Ordering::Release);
            // Bounded: a forgotten hook costs at most HOLD_LIMIT_NS.
            let until = crate::time::now_ns().saturating_add(HOLD_LIMIT_NS);
            while HOLD_AFTER_CLAIM.load(Ordering::Acquire) && crate::time::now_ns() < until {
                core::hint::spin_loop();
            }
            HELD.store(false, Ordering::Release);
        }
        match REQUEST_SLOTS.complete(claim, encode(result)) {
            Completion::Delivered { .. } => {
                match result {
                    Ok(index) => events::emit(
                        "rtpool",
                        "alloc",
                        &[("size", size as i64), ("buffer", index as i64), ("in_use", i64::from(IN_USE.load(Ordering::Relaxed)))],
                        "",
                        "",
                    ),
                    Err(error) => {
                        FAILURES.fetch_add(1, Ordering::Relaxed);
                        events::emit(
                            "rtpool",
                            "alloc-failed",
                            &[("size", size as i64), ("code", error.code())],
                            "reason",
                            &alloc_reason(error),
                        );
                    }
                }
                if let Some(owner) = owner {
                    let _ = thread::wake_up(owner);
                }
            }
            Completion::Abandoned { result } => {
                // The requester was cancelled while we allocated: the
                // buffer is nobody's; free it now.
                ABANDONED.fetch_add(1, Ordering::Relaxed);
                if let Ok(index) = decode(result) {
                    release(index);
                }
            }
        }
    }
}

/// Frees buffer `index` now (softirq or thread context) and reports it.
fn release(index: usize) {
    let Some((address, size)) = POOL.lock().slots[index].take() else { return };
    if let Some(layout) = layout(size) {
        // SAFETY: the buffer came from `alloc_zeroed` with this layout, and
        // taking it out of its slot made this the only owner.
        unsafe { dealloc(address as *mut u8, layout) };
    }
    FREED.fetch_add(1, Ordering::Relaxed);
    IN_USE.fetch_sub(1, Ordering::Relaxed);
    BYTES.fetch_sub(size, Ordering::Relaxed);
    events::emit("rtpool", "free", &[("buffer", index as i64), ("size", size as i64)], "", "");
}

fn alloc_reason(error: RtPoolError) -> heapless_text::Text {
    heapless_text::Text::from(error)
}

/// A tiny fixed text for event reasons (no allocation in this path).
mod heapless_text {
    use core::fmt::Write;

    pub struct Text {
        bytes: [u8; 48],
        len: usize,
    }

    impl core::ops::Deref for Text {
        type Target = str;
        fn deref(&self) -> &str {
            core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
        }
    }

    impl Write for Text {
        fn write_str(&mut self, text: &str) -> core::fmt::Result {
            let take = text.len().min(self.bytes.len() - self.len);
            self.bytes[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
            self.len += take;
            Ok(())
        }
    }

    impl From<super::RtPoolError> for Text {
        fn from(error: super::RtPoolError) -> Self {
            let mut text = Text { bytes: [0; 48], len: 0 };
            let _ = write!(text, "{error}");
            text
        }
    }
}

fn allocate(size: usize) -> Result<usize, RtPoolError> {
    let index = {
        let pool = POOL.lock();
        pool.slots.iter().position(Option::is_none).ok_or(RtPoolError::Exhausted)?
    };
    let layout = layout(size).ok_or(RtPoolError::TooLarge)?;
    // SAFETY: the layout has a non-zero size (checked by `rt_alloc`).
    let address = unsafe { alloc_zeroed(layout) };
    if address.is_null() {
        return Err(RtPoolError::OutOfMemory);
    }
    POOL.lock().slots[index] = Some((address as usize, size));
    IN_USE.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size, Ordering::Relaxed);
    Ok(index)
}

/// Allocates `size` zero-filled bytes for the calling (RT) thread: the
/// request goes to the allocator tasklet and the caller suspends until it
/// is served. A cancellation point. Never touches the heap itself.
/// Registers the allocator tasklet (by name, for `TASKLET` and the views).
/// Called once at boot, from thread context.
pub fn init() {
    if !REGISTERED.swap(true, Ordering::AcqRel) {
        ALLOCATOR.register();
    }
}

pub fn rt_alloc(size: usize) -> Result<RtBuffer, RtPoolError> {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    let fail = |error: RtPoolError| {
        FAILURES.fetch_add(1, Ordering::Relaxed);
        events::emit("rtpool", "alloc-failed", &[("size", size as i64), ("code", error.code())], "reason", &alloc_reason(error));
        Err(error)
    };
    if size == 0 {
        return fail(RtPoolError::Empty);
    }
    if size > MAX_SIZE {
        return fail(RtPoolError::TooLarge);
    }
    if context::in_interrupt() || crate::softirq::in_softirq() {
        return fail(RtPoolError::WrongContext);
    }
    thread::test_cancel();
    if !REGISTERED.load(Ordering::Acquire) {
        // Registering grows the tasklet list (the heap): done at boot by
        // `init`, so an RT thread never does it.
        return fail(RtPoolError::WrongContext);
    }
    let me = thread::current_id();
    if POOL.lock().slots.iter().all(Option::is_some) {
        return fail(RtPoolError::Exhausted);
    }
    let Some(reservation) = REQUEST_SLOTS.reserve() else {
        return fail(RtPoolError::Busy);
    };
    OWNERS.lock()[reservation.slot] = Some(me);
    let ticket = REQUEST_SLOTS.publish(reservation, u64::from(me.serial()), size as u64);
    // A cancel ends the thread inside `suspend_self` or `test_cancel`: the
    // cleanup handler then leaves the request properly.
    let pushed = thread::cleanup_push(leave_request, ticket.to_raw() as usize);
    if !DEFER_KICK.load(Ordering::Acquire) {
        ALLOCATOR.hi_schedule();
    }
    let result = loop {
        if let Some(result) = REQUEST_SLOTS.poll(ticket) {
            break decode(result);
        }
        pause_before_cancel_check();
        if thread::current().cancel_requested() {
            if !pushed {
                leave_request(ticket.to_raw() as usize);
            }
            // Ends the thread (running `leave_request` if it was pushed).
            thread::test_cancel();
        }
        thread::suspend_self();
    };
    if pushed {
        thread::cleanup_pop(false);
    }
    if thread::current().cancel_requested() {
        // Cancelled as the result arrived: the buffer goes back.
        if let Ok(index) = result {
            POOL.lock().to_free[index] = true;
            ALLOCATOR.hi_schedule();
        }
        thread::test_cancel();
    }
    let index = result?;
    let (address, size) = POOL.lock().slots[index].ok_or(RtPoolError::OutOfMemory)?;
    Ok(RtBuffer { index, address, size })
}

/// A cancelled requester leaves its request: a result that had arrived is
/// marked for freeing; one still being made is freed by the server.
fn leave_request(raw_ticket: usize) {
    let ticket = Ticket::from_raw(raw_ticket as u64);
    if let CancelOutcome::Completed { result } = REQUEST_SLOTS.cancel(ticket)
        && let Ok(index) = decode(result)
    {
        POOL.lock().to_free[index] = true;
        ALLOCATOR.hi_schedule();
    }
}

/// Returns a buffer: marks it and lets the allocator tasklet free it.
/// Safe from any context.
pub fn rt_free(buffer: RtBuffer) {
    {
        let mut pool = POOL.lock();
        if pool.slots[buffer.index].is_some_and(|(address, _)| address == buffer.address) {
            pool.to_free[buffer.index] = true;
        }
    }
    ALLOCATOR.hi_schedule();
}

/// Frees every buffer now (thread context: unload, shutdown). Returns how
/// many were freed; each is reported on the `rtpool` channel.
pub fn free_all() -> usize {
    let mut freed = 0;
    for index in 0..BUFFERS {
        let buffer = {
            let mut pool = POOL.lock();
            pool.to_free[index] = false;
            pool.slots[index].take()
        };
        if let Some((address, size)) = buffer {
            if let Some(layout) = layout(size) {
                // SAFETY: the buffer came from `alloc_zeroed` with this layout.
                unsafe { dealloc(address as *mut u8, layout) };
            }
            freed += 1;
            FREED.fetch_add(1, Ordering::Relaxed);
            IN_USE.fetch_sub(1, Ordering::Relaxed);
            BYTES.fetch_sub(size, Ordering::Relaxed);
            events::emit("rtpool", "free", &[("buffer", index as i64), ("size", size as i64)], "", "");
            log::info!("rtpool: freeing buffer {index} ({size} bytes)");
        }
    }
    freed
}

/// Pool figures for `INFO rtpool`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub capacity: usize,
    pub max_size: usize,
    pub in_use: u32,
    pub bytes: usize,
    pub requests: u64,
    pub failures: u64,
    pub freed: u64,
}

pub fn stats() -> PoolStats {
    PoolStats {
        capacity: BUFFERS,
        max_size: MAX_SIZE,
        in_use: IN_USE.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
        requests: REQUESTS.load(Ordering::Relaxed),
        failures: FAILURES.load(Ordering::Relaxed),
        freed: FREED.load(Ordering::Relaxed),
    }
}

fn pause_before_cancel_check() {
    if !PAUSE_BEFORE_CANCEL_CHECK.load(Ordering::Acquire) {
        return;
    }
    AT_CANCEL_CHECK.store(true, Ordering::Release);
    let until = crate::time::now_ns().saturating_add(HOLD_LIMIT_NS);
    while !thread::current().cancel_requested() && crate::time::now_ns() < until {
        thread::yield_cpu();
    }
    AT_CANCEL_CHECK.store(false, Ordering::Release);
}

/// Test hook: see [`PAUSE_BEFORE_CANCEL_CHECK`].
#[cfg_attr(not(feature = "ktest"), allow(dead_code, reason = "a test hook, used by the ktest build only"))]
pub(crate) fn pause_before_cancel_check_hook(pause: bool) {
    PAUSE_BEFORE_CANCEL_CHECK.store(pause, Ordering::Release);
}

/// Whether a requester waits at the cancel-check hook now.
#[cfg_attr(not(feature = "ktest"), allow(dead_code, reason = "a test hook, used by the ktest build only"))]
pub(crate) fn at_cancel_check() -> bool {
    AT_CANCEL_CHECK.load(Ordering::Acquire)
}

/// Results made for requesters that had been cancelled (freed by the
/// allocator tasklet at once).
pub fn abandoned() -> u64 {
    ABANDONED.load(Ordering::Relaxed)
}

/// Test hook: while `hold` is set the allocator tasklet stops (bounded,
/// three seconds at most) between taking a request and handing over its
/// result, widening the window of issue 11's defect 8.
#[cfg_attr(not(feature = "ktest"), allow(dead_code, reason = "a test hook, used by the ktest build only"))]
pub(crate) fn hold_after_claim(hold: bool) {
    HOLD_AFTER_CLAIM.store(hold, Ordering::Release);
}

/// Test hook: `rt_alloc` leaves the scheduling of the allocator tasklet
/// to [`kick`] while `defer` is set.
#[cfg_attr(not(feature = "ktest"), allow(dead_code, reason = "a test hook, used by the ktest build only"))]
pub(crate) fn defer_kick(defer: bool) {
    DEFER_KICK.store(defer, Ordering::Release);
}

/// Schedules the allocator tasklet on this CPU.
#[cfg_attr(not(feature = "ktest"), allow(dead_code, reason = "a test hook, used by the ktest build only"))]
pub(crate) fn kick() {
    ALLOCATOR.hi_schedule();
}

/// The allocator tasklet's (scheduled, running) bits, for test reports.
#[cfg_attr(not(feature = "ktest"), allow(dead_code, reason = "a test hook, used by the ktest build only"))]
pub(crate) fn allocator_state() -> (bool, bool) {
    (ALLOCATOR.is_scheduled(), ALLOCATOR.is_running())
}

/// Whether the allocator tasklet is stopped at the test hook now.
#[cfg_attr(not(feature = "ktest"), allow(dead_code, reason = "a test hook, used by the ktest build only"))]
pub(crate) fn held_after_claim() -> bool {
    HELD.load(Ordering::Acquire)
}
