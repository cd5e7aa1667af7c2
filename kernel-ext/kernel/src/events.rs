//! Kernel and application events for the outside world. Any context may
//! emit (real-time threads and interrupt handlers included); the
//! control-plane thread drains them and publishes each as a JSON message
//! on its channel.
//!
//! **Invariant: emitting never waits for non-real-time code.** Each CPU
//! has its own single-producer rings ([`EventRing`], engine code, checked
//! by `tests/loom_eventring.rs`): an emitter pushes into its own CPU's
//! ring with local interrupts off for the push (so nothing else on that
//! CPU pushes meanwhile: one producer), takes no lock, and allocates
//! nothing. A full ring drops the new event and counts it, per channel
//! ([`ChannelTable`]); a slow or absent consumer never blocks or slows an
//! emitter. The release stream of RT threads (`latency`, one event per
//! release) has rings of its own, so it cannot crowd out other channels'
//! events; beyond this layer, the control plane queues messages per
//! channel (`rtedge_control::hub::Backlog`, in the plane).

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rtedge_arch::cpu;
use rtedge_engine::eventring::{ChannelTable, EventRing};

use crate::cpu_local::{self, MAX_CPUS};
use crate::time;

/// Longest text an event carries.
pub const TEXT_CAPACITY: usize = 48;
/// Most numeric fields an event carries.
pub const MAX_FIELDS: usize = 6;
/// The channel of RT threads' per-release samples (rings of its own).
pub const RELEASE_CHANNEL: &str = "latency";

/// Words of an encoded event: time, counts, channel, kind, text key (two
/// words per name), the fields (three words each), the text.
const WORDS: usize = 8 + 3 * MAX_FIELDS + TEXT_CAPACITY / 8;
/// Release samples a CPU's stream ring holds (at 1 kHz, 128 ms of one RT
/// thread's releases between two drains).
const STREAM_CAPACITY: usize = 128;
/// Other events a CPU's ring holds: a burst from one context must fit
/// between two drains (rtalloc's unload frees its 128 buffers in one loop,
/// 128 `free` events; with 64 the 65th and later were dropped). 512, the
/// bound of the one shared ring this replaces, now per CPU (128 KiB of
/// .bss each).
const EVENT_CAPACITY: usize = 512;
/// Channels counted separately (the rest share the `other` counters).
const CHANNELS: usize = 32;

/// One event: a channel, a kind, a few named numbers and one named text.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub time_ns: u64,
    pub channel: &'static str,
    pub kind: &'static str,
    fields: [(&'static str, i64); MAX_FIELDS],
    field_count: u8,
    pub text_key: &'static str,
    text: [u8; TEXT_CAPACITY],
    text_len: u8,
}

impl Event {
    /// The numeric fields.
    pub fn fields(&self) -> &[(&'static str, i64)] {
        &self.fields[..usize::from(self.field_count)]
    }

    /// The text field's value.
    pub fn text(&self) -> &str {
        core::str::from_utf8(&self.text[..usize::from(self.text_len)]).unwrap_or("")
    }

    fn encode(&self) -> [u64; WORDS] {
        let mut words = [0u64; WORDS];
        words[0] = self.time_ns;
        words[1] = u64::from(self.field_count) | (u64::from(self.text_len) << 8);
        put_name(&mut words[2..4], self.channel);
        put_name(&mut words[4..6], self.kind);
        put_name(&mut words[6..8], self.text_key);
        for (index, (key, value)) in self.fields.iter().enumerate() {
            let base = 8 + 3 * index;
            put_name(&mut words[base..base + 2], key);
            words[base + 2] = *value as u64;
        }
        let text_base = 8 + 3 * MAX_FIELDS;
        for (index, chunk) in self.text.chunks(8).enumerate() {
            let mut bytes = [0u8; 8];
            bytes[..chunk.len()].copy_from_slice(chunk);
            words[text_base + index] = u64::from_le_bytes(bytes);
        }
        words
    }

    /// The event `encode` made.
    ///
    /// # Safety
    /// `words` must be exactly what [`Event::encode`] returned (the rings
    /// hand records back unchanged: their loom-checked invariant), so that
    /// every name in it is a `&'static str`'s address and length.
    unsafe fn decode(words: &[u64; WORDS]) -> Event {
        let mut fields = [("", 0i64); MAX_FIELDS];
        for (index, field) in fields.iter_mut().enumerate() {
            let base = 8 + 3 * index;
            // SAFETY: per this function's contract.
            *field = (unsafe { get_name(&words[base..base + 2]) }, words[base + 2] as i64);
        }
        let mut text = [0u8; TEXT_CAPACITY];
        let text_base = 8 + 3 * MAX_FIELDS;
        for (index, chunk) in text.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&words[text_base + index].to_le_bytes()[..chunk.len()]);
        }
        let field_count = (words[1] & 0xff).min(MAX_FIELDS as u64) as u8;
        let text_len = ((words[1] >> 8) & 0xff).min(TEXT_CAPACITY as u64) as u8;
        // SAFETY: per this function's contract.
        let (channel, kind, text_key) = unsafe { (get_name(&words[2..4]), get_name(&words[4..6]), get_name(&words[6..8])) };
        Event { time_ns: words[0], channel, kind, fields, field_count, text_key, text, text_len }
    }
}

fn put_name(words: &mut [u64], name: &'static str) {
    words[0] = name.as_ptr() as u64;
    words[1] = name.len() as u64;
}

/// # Safety
/// `words` must come from [`put_name`] of a `&'static str`.
unsafe fn get_name(words: &[u64]) -> &'static str {
    if words[1] == 0 {
        return "";
    }
    // SAFETY: per the contract, address and length are those of a
    // `&'static str`: valid UTF-8 that lives forever.
    unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(words[0] as *const u8, words[1] as usize)) }
}

/// One CPU's rings.
struct CpuRings {
    stream: EventRing<WORDS, STREAM_CAPACITY>,
    events: EventRing<WORDS, EVENT_CAPACITY>,
}

static RINGS: [CpuRings; MAX_CPUS] = [const { CpuRings { stream: EventRing::new(), events: EventRing::new() } }; MAX_CPUS];
/// Emissions and drops per channel.
static CHANNEL_TABLE: ChannelTable<CHANNELS> = ChannelTable::new();
/// Set while the control-plane thread drains (one consumer at a time).
static DRAINING: AtomicBool = AtomicBool::new(false);
/// Where the next drain starts (CPUs take turns).
static CURSOR: AtomicUsize = AtomicUsize::new(0);
/// Set while someone subscribes: per-release latency samples are emitted
/// only then.
static STREAMING: AtomicBool = AtomicBool::new(false);

/// Whether event streams have listeners.
pub fn streaming() -> bool {
    STREAMING.load(Ordering::Relaxed)
}

/// Set by the control plane when subscribers come and go.
pub fn set_streaming(on: bool) {
    STREAMING.store(on, Ordering::Relaxed);
}

/// A channel's key in the table: its name's address (below 2^48 in this
/// kernel's identity-mapped space) and length, packed in one word.
fn channel_key(channel: &'static str) -> u64 {
    let address = channel.as_ptr() as u64;
    let length = channel.len() as u64;
    if address >> 48 != 0 || length >> 16 != 0 || length == 0 {
        return 0;
    }
    (address << 16) | length
}

/// Records an event for `channel`. Safe from any context; never
/// allocates, never waits (see the module's invariant). When the CPU's
/// ring is full the new event is dropped and counted for its channel.
pub fn emit(channel: &'static str, kind: &'static str, fields: &[(&'static str, i64)], text_key: &'static str, text: &str) {
    let mut copied = [("", 0i64); MAX_FIELDS];
    let count = fields.len().min(MAX_FIELDS);
    copied[..count].copy_from_slice(&fields[..count]);
    let mut bytes = [0u8; TEXT_CAPACITY];
    let mut len = text.len().min(TEXT_CAPACITY);
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
    let event = Event {
        time_ns: time::now_ns(),
        channel,
        kind,
        fields: copied,
        field_count: count as u8,
        text_key,
        text: bytes,
        text_len: len as u8,
    };
    let record = event.encode();
    // Interrupts off for the push only: this CPU's rings then have one
    // producer, and the CPU index cannot change under us.
    let interrupts_were_enabled = cpu::interrupts_save();
    let index = if cpu_local::is_installed() { cpu_local::current().index() as usize } else { 0 };
    let stored = RINGS
        .get(index)
        .is_some_and(|rings| if channel == RELEASE_CHANNEL { rings.stream.push(&record) } else { rings.events.push(&record) });
    cpu::interrupts_restore(interrupts_were_enabled);
    match CHANNEL_TABLE.number(channel_key(channel)) {
        Some(number) => CHANNEL_TABLE.count(number, !stored),
        None => {
            OTHER_EMITTED.fetch_add(1, Ordering::Relaxed);
            if !stored {
                OTHER_DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

static OTHER_EMITTED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
static OTHER_DROPPED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Takes the next event (thread context: the control-plane thread, the
/// only consumer; a concurrent caller gets `None`). CPUs take turns, and
/// on each CPU other events come before release samples, so the busy
/// release stream cannot delay them.
pub fn pop() -> Option<Event> {
    if DRAINING.swap(true, Ordering::Acquire) {
        return None;
    }
    let start = CURSOR.load(Ordering::Relaxed);
    let mut found = None;
    for offset in 0..MAX_CPUS {
        let index = (start + offset) % MAX_CPUS;
        let rings = &RINGS[index];
        if let Some(words) = rings.events.pop().or_else(|| rings.stream.pop()) {
            CURSOR.store((index + 1) % MAX_CPUS, Ordering::Relaxed);
            found = Some(words);
            break;
        }
    }
    DRAINING.store(false, Ordering::Release);
    // SAFETY: every record in the rings was made by `Event::encode` in
    // `emit`, and the rings return records unchanged.
    found.map(|words| unsafe { Event::decode(&words) })
}

/// Events dropped because a ring was full.
pub fn dropped() -> u64 {
    RINGS.iter().map(|rings| rings.stream.dropped() + rings.events.dropped()).sum()
}

/// Events emitted since boot (stored or dropped).
pub fn emitted() -> u64 {
    RINGS.iter().map(|rings| rings.stream.pushed() + rings.events.pushed()).sum::<u64>() + dropped()
}

/// Events waiting to be drained.
pub fn queued() -> usize {
    RINGS.iter().map(|rings| rings.stream.len() + rings.events.len()).sum()
}

/// Per channel: (name, emitted, dropped), merged by name; `(other)` for
/// channels beyond the table. Thread context (allocates).
pub fn channel_counts() -> Vec<(&'static str, u64, u64)> {
    let mut out: Vec<(&'static str, u64, u64)> = Vec::new();
    for number in 0..CHANNEL_TABLE.capacity() {
        let Some(key) = CHANNEL_TABLE.key(number) else { continue };
        // SAFETY: keys are only made by `channel_key` from a `&'static str`
        // (address and length, both checked to fit).
        let name = unsafe { get_name(&[key >> 16, key & 0xffff]) };
        let (emitted, dropped) = CHANNEL_TABLE.counts(number);
        match out.iter_mut().find(|(existing, _, _)| *existing == name) {
            Some(entry) => {
                entry.1 += emitted;
                entry.2 += dropped;
            }
            None => out.push((name, emitted, dropped)),
        }
    }
    let other = (OTHER_EMITTED.load(Ordering::Relaxed), OTHER_DROPPED.load(Ordering::Relaxed));
    if other.0 > 0 {
        out.push(("(other)", other.0, other.1));
    }
    out
}
