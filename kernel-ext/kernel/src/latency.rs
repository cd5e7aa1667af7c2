//! Named latency sources for `LATENCY source [RESET]`: every RT thread's
//! release-latency histogram is one automatically (by thread name); other
//! measurements (softirq jitter, tasklet delay) register theirs here.

use alloc::string::String;
use alloc::vec::Vec;

use rtedge_engine::histogram::LatencyHistogram;

use crate::hook::Hook;
use crate::sync::IrqSpinLock;
use crate::thread;

/// A histogram a measurement records into (from any context: recording
/// takes the lock briefly and never allocates).
pub type Source = IrqSpinLock<LatencyHistogram>;

static SOURCES: IrqSpinLock<Vec<(&'static str, &'static Source)>> = IrqSpinLock::new(Vec::new());

/// Called when an RT thread's latency is reset: the plane resets its
/// NET_RX figures, whose measuring window is the thread's (`INFO net`).
static RESET_OBSERVER: Hook<fn()> = Hook::new();

/// Sets what else a reset of an RT thread's latency resets.
pub fn set_reset_observer(observer: fn()) {
    RESET_OBSERVER.set(observer);
}

/// Makes `histogram` available as `name`. Thread context (may allocate).
pub fn register(name: &'static str, histogram: &'static Source) {
    let mut sources = SOURCES.lock();
    sources.retain(|(existing, _)| *existing != name);
    sources.push((name, histogram));
}

/// Removes `name` (module unload).
pub fn unregister(name: &str) {
    SOURCES.lock().retain(|(existing, _)| *existing != name);
}

/// Records one sample into a source.
pub fn record(histogram: &Source, value_ns: u64) {
    histogram.lock().record(value_ns);
}

/// Every source name: registered ones, then RT threads (`latency.` + name).
pub fn names() -> Vec<String> {
    let mut names: Vec<String> = SOURCES.lock().iter().map(|(name, _)| String::from(*name)).collect();
    for info in thread::list() {
        if matches!(info.kind, thread::Kind::Realtime { .. }) && info.latency.count() > 0 {
            names.push(alloc::format!("thread:{}", info.name));
        }
    }
    names
}

/// A periodic RT thread's release counters, next to its histogram (the
/// `I:` and misses of a cyclictest line). Counted since the thread became
/// periodic; `LATENCY ... RESET` clears only the histogram.
#[derive(Clone, Copy, Debug)]
pub struct Releases {
    pub period_ns: u64,
    pub releases: u64,
    pub misses: u64,
}

/// What `LATENCY source` reports: the histogram and, for a periodic RT
/// thread, its release counters.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    pub histogram: LatencyHistogram,
    pub releases: Option<Releases>,
}

/// A copy of source `name`'s histogram; `reset` clears it afterwards.
pub fn snapshot(name: &str, reset: bool) -> Option<LatencyHistogram> {
    snapshot_with_releases(name, reset).map(|snapshot| snapshot.histogram)
}

/// A copy of source `name`'s histogram (and release counters for an RT
/// thread); `reset` clears the histogram afterwards.
pub fn snapshot_with_releases(name: &str, reset: bool) -> Option<Snapshot> {
    if let Some(thread_name) = name.strip_prefix("thread:") {
        let target = thread::find(thread_name)?;
        let stats = target.realtime_stats();
        if reset {
            target.reset_latency();
            // An RT thread's measuring window is that of the interrupts-off
            // and NET_RX figures too (`INFO cpu`, `INFO net`).
            crate::sync::reset_irqs_off();
            thread::reset_poll_stalls();
            if let Some(observer) = RESET_OBSERVER.get() {
                observer();
            }
        }
        let releases = stats.periodic.map(|periodic| Releases {
            period_ns: periodic.period_ns(),
            releases: periodic.releases(),
            misses: periodic.misses(),
        });
        return Some(Snapshot { histogram: stats.latency, releases });
    }
    let source = SOURCES.lock().iter().find(|(existing, _)| *existing == name).map(|(_, source)| *source)?;
    let mut histogram = source.lock();
    let copy = *histogram;
    if reset {
        histogram.reset();
    }
    Some(Snapshot { histogram: copy, releases: None })
}
