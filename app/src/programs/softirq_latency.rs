//! Program 4: the soft-interrupt latency test.
//!
//! A 1 ms periodic RT thread (`softirq-rt`) records the time and pends the
//! dynamic soft IRQ "softirq jitter test" (rtl_global_pend_irq); its
//! handler, run at the next switch to non-RT context, measures the delay
//! since that time, keeps the minimum and maximum over 500 samples and
//! publishes each batch on channel `softirq.latency` (the seed's rt-FIFO):
//! `{"kind":"softirq-batch","samples":500,"min_ns":..,"max_ns":..}`.
//!
//! Observe: `rtctl watch softirq.latency`, `redis-cli SUBSCRIBE
//! softirq.latency`, `LATENCY softirq.latency` (every sample),
//! `SOFTIRQS` (the named vector), shared statics `softirq.batches`,
//! `softirq.min_ns`, `softirq.max_ns` (last batch), `softirq.samples`.

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};

use rtedge_engine::histogram::LatencyHistogram;
use rtedge_kernel::events;
use rtedge_kernel::latency;
use rtedge_kernel::modules::Module;
use rtedge_kernel::shared::{Access, SharedInt, SharedValue};
use rtedge_kernel::softirq::{self, SoftIrq};
use rtedge_kernel::sync::IrqSpinLock;
use rtedge_kernel::{thread, time};

use super::OwnedThread;

const PERIOD_NS: u64 = 1_000_000;
/// Above the 500 ms programs: the 1 kHz thread is the one that must be on time.
const PRIORITY: u8 = 10;
/// Samples per batch (the seed's `ntests`).
const SAMPLES: u64 = 500;
/// A console line per this many batches (each batch at debug level).
const LOG_EVERY: i64 = 20;
const THREAD_NAME: &str = "softirq-rt";
const SOFT_IRQ_NAME: &str = "softirq jitter test";
const CHANNEL: &str = "softirq.latency";

static BATCHES: SharedInt = SharedInt::new("softirq.batches", Access::ReadOnly, 0);
static MIN_NS: SharedInt = SharedInt::new("softirq.min_ns", Access::ReadOnly, 0);
static MAX_NS: SharedInt = SharedInt::new("softirq.max_ns", Access::ReadOnly, 0);
static TOTAL_SAMPLES: SharedInt = SharedInt::new("softirq.samples", Access::ReadOnly, 0);
static STATICS: [&dyn SharedValue; 4] = [&BATCHES, &MIN_NS, &MAX_NS, &TOTAL_SAMPLES];

/// Every sample, for `LATENCY softirq.latency`.
static HISTOGRAM: latency::Source = IrqSpinLock::new(LatencyHistogram::new());

/// When the RT thread pended the soft IRQ (the seed's `call_time`).
static CALL_TIME_NS: AtomicU64 = AtomicU64::new(0);

/// The batch being filled.
struct Batch {
    count: u64,
    min_ns: u64,
    max_ns: u64,
}

impl Batch {
    const EMPTY: Batch = Batch { count: 0, min_ns: u64::MAX, max_ns: 0 };
}

static BATCH: IrqSpinLock<Batch> = IrqSpinLock::new(Batch::EMPTY);
static SOFT_IRQ: IrqSpinLock<Option<SoftIrq>> = IrqSpinLock::new(None);
static RT_THREAD: OwnedThread = OwnedThread::new();

/// The soft IRQ handler (softirq context: no blocking, no allocation).
fn handler(_: usize) {
    // The time first: if the RT thread preempts this handler and stores a
    // newer one, the sample comes out long rather than negative.
    let called = CALL_TIME_NS.load(Ordering::Acquire);
    let delay = time::now_ns().saturating_sub(called);
    latency::record(&HISTOGRAM, delay);
    TOTAL_SAMPLES.add(1);
    let finished = {
        let mut batch = BATCH.lock();
        batch.count += 1;
        batch.min_ns = batch.min_ns.min(delay);
        batch.max_ns = batch.max_ns.max(delay);
        if batch.count == SAMPLES {
            let result = (batch.min_ns, batch.max_ns);
            *batch = Batch::EMPTY;
            Some(result)
        } else {
            None
        }
    };
    let Some((min, max)) = finished else { return };
    let batches = BATCHES.add(1);
    MIN_NS.set(min as i64);
    MAX_NS.set(max as i64);
    events::emit(CHANNEL, "softirq-batch", &[("samples", SAMPLES as i64), ("min_ns", min as i64), ("max_ns", max as i64)], "", "");
    if batches == 1 || batches % LOG_EVERY == 0 {
        log::info!("softirq jitter test: batch {batches}: min {min} ns, max {max} ns over {SAMPLES} samples");
    } else {
        log::debug!("softirq jitter test: batch {batches}: min {min} ns, max {max} ns");
    }
}

fn rt_thread(soft_irq: SoftIrq) -> i32 {
    if thread::make_periodic(time::now_ns() + PERIOD_NS, PERIOD_NS).is_err() {
        return 1;
    }
    loop {
        if thread::wait_next_period().is_err() {
            return 0;
        }
        CALL_TIME_NS.store(time::now_ns(), Ordering::Release);
        soft_irq.raise();
    }
}

pub struct SoftirqLatencyProgram;

pub static MODULE: SoftirqLatencyProgram = SoftirqLatencyProgram;

impl Module for SoftirqLatencyProgram {
    fn name(&self) -> &'static str {
        "softirq-latency"
    }

    fn description(&self) -> &'static str {
        "1 ms RT thread pends soft IRQ 'softirq jitter test'; min/max delay per 500 samples on softirq.latency"
    }

    fn init(&'static self) -> Result<(), String> {
        BATCHES.set(0);
        MIN_NS.set(0);
        MAX_NS.set(0);
        TOTAL_SAMPLES.set(0);
        *BATCH.lock() = Batch::EMPTY;
        HISTOGRAM.lock().reset();
        super::register_statics(&STATICS);
        latency::register(CHANNEL, &HISTOGRAM);
        let soft_irq = match softirq::register(SOFT_IRQ_NAME, handler, 0) {
            Ok(soft_irq) => soft_irq,
            Err(error) => {
                self.exit();
                return Err(format!("cannot get soft IRQ '{SOFT_IRQ_NAME}': {error}"));
            }
        };
        *SOFT_IRQ.lock() = Some(soft_irq);
        // A failed start undoes what init did so far.
        RT_THREAD.start_realtime(THREAD_NAME, PRIORITY, move || rt_thread(soft_irq)).inspect_err(|_| self.exit())
    }

    fn exit(&'static self) {
        // The thread first, so nothing pends the soft IRQ once it is freed.
        RT_THREAD.delete(THREAD_NAME);
        let soft_irq = SOFT_IRQ.lock().take();
        if let Some(soft_irq) = soft_irq {
            soft_irq.free();
        }
        latency::unregister(CHANNEL);
        super::unregister_statics(&STATICS);
        log::info!("softirq-latency: unloaded after {} batches ({} samples)", BATCHES.load(), TOTAL_SAMPLES.load());
    }

    fn threads(&self) -> usize {
        RT_THREAD.live_count()
    }
}
