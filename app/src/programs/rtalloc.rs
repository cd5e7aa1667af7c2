//! Program 2: the naive rt-allocator, used from a real-time thread.
//!
//! A 500 ms periodic RT thread (`rtalloc-rt`; `rtalloc_period_ms=M` sets
//! another period, e.g. a short one for tests) asks the kernel's rt-pool
//! (`rtpool::rt_alloc`: the request goes to a hi-scheduled allocator
//! tasklet while the thread suspends) for 128, 256, 384 ... bytes. It must
//! check every answer: after 128 buffers the pool is exhausted and the
//! thread reports "No more buffers available" and keeps running; requests
//! above 128 KiB are refused with an error. Unloading frees every buffer
//! (`rtpool::free_all`, each one logged and reported on channel `rtpool`).
//!
//! Observe: `INFO rtpool`; channel `rtpool`; shared statics
//! `rtalloc.requests`, `rtalloc.buffers`, `rtalloc.bytes`,
//! `rtalloc.failures`, `rtalloc.exhausted`, `rtalloc.last_size`,
//! `rtalloc.last_error`.
//!
//! The module is the rt-pool's only user in the appliance, so `free_all`
//! at unload frees exactly what its thread got.

use alloc::string::String;
use core::fmt::Write;

use rtedge_kernel::modules::Module;
use rtedge_kernel::rtpool::{self, RtPoolError};
use rtedge_kernel::shared::{Access, SharedBool, SharedInt, SharedText, SharedValue};
use rtedge_kernel::{thread, time};

use super::{OwnedThread, TextBuffer};

const DEFAULT_PERIOD_MS: u64 = 500;
/// Bounds of `rtalloc_period_ms=` (1 ms .. 1 min).
const PERIOD_MS_RANGE: core::ops::RangeInclusive<u64> = 1..=60_000;
const PRIORITY: u8 = 1;
/// Each request is this many bytes more than the one before.
const BLOCK: usize = 128;
/// A console line per this many buffers (each one at debug level).
const LOG_EVERY: usize = 16;
const THREAD_NAME: &str = "rtalloc-rt";

static REQUESTS: SharedInt = SharedInt::new("rtalloc.requests", Access::ReadOnly, 0);
static BUFFERS: SharedInt = SharedInt::new("rtalloc.buffers", Access::ReadOnly, 0);
static BYTES: SharedInt = SharedInt::new("rtalloc.bytes", Access::ReadOnly, 0);
static FAILURES: SharedInt = SharedInt::new("rtalloc.failures", Access::ReadOnly, 0);
static EXHAUSTED: SharedBool = SharedBool::new("rtalloc.exhausted", Access::ReadOnly, false);
static LAST_SIZE: SharedInt = SharedInt::new("rtalloc.last_size", Access::ReadOnly, 0);
static LAST_ERROR: SharedText = SharedText::new("rtalloc.last_error", Access::ReadOnly);
static STATICS: [&dyn SharedValue; 7] = [&REQUESTS, &BUFFERS, &BYTES, &FAILURES, &EXHAUSTED, &LAST_SIZE, &LAST_ERROR];

static RT_THREAD: OwnedThread = OwnedThread::new();

fn rt_thread(period_ns: u64) -> i32 {
    if thread::make_periodic(time::now_ns(), period_ns).is_err() {
        return 1;
    }
    let mut request = 1usize;
    let mut reported_too_large = false;
    loop {
        if thread::wait_next_period().is_err() {
            return 0;
        }
        let size = BLOCK * request;
        request += 1;
        REQUESTS.add(1);
        LAST_SIZE.set(size as i64);
        log::debug!("{THREAD_NAME}: request {size} bytes");
        // A cancellation point: the thread may end inside; a buffer the
        // tasklet got for it then stays in the pool until free_all.
        match rtpool::rt_alloc(size) {
            Ok(buffer) => {
                let held = BUFFERS.add(1);
                BYTES.add(size as i64);
                if buffer.index % LOG_EVERY == 0 {
                    log::info!("{THREAD_NAME}: allocated buffer {} ({size} bytes; {held} held)", buffer.index);
                } else {
                    log::debug!("{THREAD_NAME}: allocated buffer {} ({size} bytes)", buffer.index);
                }
            }
            Err(error) => {
                FAILURES.add(1);
                let mut text = TextBuffer::<64>::new();
                let _ = write!(text, "{error} ({size} bytes)");
                LAST_ERROR.set(text.as_str());
                match error {
                    RtPoolError::Exhausted if !EXHAUSTED.load() => {
                        EXHAUSTED.set(true);
                        log::info!("{THREAD_NAME}: No more buffers available ({} held); the thread keeps running", BUFFERS.load());
                        super::event("rtalloc-exhausted", &[("buffers", BUFFERS.load()), ("requests", REQUESTS.load())], "", "");
                    }
                    RtPoolError::TooLarge if !reported_too_large => {
                        reported_too_large = true;
                        log::info!("{THREAD_NAME}: request of {size} bytes refused: {error}");
                    }
                    _ => log::debug!("{THREAD_NAME}: no buffer: {error}"),
                }
            }
        }
    }
}

pub struct RtAllocProgram;

pub static MODULE: RtAllocProgram = RtAllocProgram;

impl Module for RtAllocProgram {
    fn name(&self) -> &'static str {
        "rtalloc"
    }

    fn description(&self) -> &'static str {
        "500 ms RT thread requests 128, 256, 384 ... bytes from the rt-pool until it is exhausted"
    }

    fn init(&'static self) -> Result<(), String> {
        REQUESTS.set(0);
        BUFFERS.set(0);
        BYTES.set(0);
        FAILURES.set(0);
        EXHAUSTED.set(false);
        LAST_SIZE.set(0);
        LAST_ERROR.set("");
        super::register_statics(&STATICS);
        let mut period_ms = super::setting_u64("rtalloc_period_ms", DEFAULT_PERIOD_MS);
        if !PERIOD_MS_RANGE.contains(&period_ms) {
            log::warn!("rtalloc_period_ms={period_ms} is outside {PERIOD_MS_RANGE:?}; using {DEFAULT_PERIOD_MS}");
            period_ms = DEFAULT_PERIOD_MS;
        }
        // A failed start undoes what init did so far.
        RT_THREAD.start_realtime(THREAD_NAME, PRIORITY, move || rt_thread(period_ms * 1_000_000)).inspect_err(|_| self.exit())
    }

    fn exit(&'static self) {
        RT_THREAD.delete(THREAD_NAME);
        // The thread is gone: no request is in flight any more.
        let freed = rtpool::free_all();
        log::info!("rtalloc: unloaded; freed {freed} buffers");
        super::event("rtalloc-freed", &[("buffers", freed as i64)], "", "");
        super::unregister_statics(&STATICS);
    }

    fn threads(&self) -> usize {
        RT_THREAD.live_count()
    }
}
