//! Kernel and application events for the outside world: a fixed ring any
//! context may push to without allocating (real-time threads and interrupt
//! handlers included); the control-plane thread drains it and publishes
//! each event as a JSON message on its channel.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::sync::IrqSpinLock;
use crate::thread::ThreadId;
use crate::time;

/// Longest text an event carries.
pub const TEXT_CAPACITY: usize = 48;
/// Most numeric fields an event carries.
pub const MAX_FIELDS: usize = 6;
const RING_CAPACITY: usize = 512;

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
}

struct Ring {
    events: [Option<Event>; RING_CAPACITY],
    head: usize,
    len: usize,
}

static RING: IrqSpinLock<Ring> = IrqSpinLock::new(Ring { events: [None; RING_CAPACITY], head: 0, len: 0 });
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Set while someone subscribes: per-release latency samples are emitted
/// only then (recording an event costs a lock and a copy).
static STREAMING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether event streams have listeners.
pub fn streaming() -> bool {
    STREAMING.load(Ordering::Relaxed)
}

/// Set by the control plane when subscribers come and go.
pub fn set_streaming(on: bool) {
    STREAMING.store(on, Ordering::Relaxed);
}
static EMITTED: AtomicU64 = AtomicU64::new(0);

/// Records an event for `channel`. Safe from any context; never allocates.
/// When the ring is full the oldest event is dropped (and counted): a slow
/// reader never blocks a real-time writer.
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
    EMITTED.fetch_add(1, Ordering::Relaxed);
    let mut ring = RING.lock();
    if ring.len == RING_CAPACITY {
        ring.head = (ring.head + 1) % RING_CAPACITY;
        ring.len -= 1;
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
    let tail = (ring.head + ring.len) % RING_CAPACITY;
    ring.events[tail] = Some(event);
    ring.len += 1;
}

/// Takes the oldest event.
pub fn pop() -> Option<Event> {
    let mut ring = RING.lock();
    if ring.len == 0 {
        return None;
    }
    let head = ring.head;
    let event = ring.events[head].take();
    ring.head = (ring.head + 1) % RING_CAPACITY;
    ring.len -= 1;
    event
}

/// Events dropped because the ring was full.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Events emitted since boot.
pub fn emitted() -> u64 {
    EMITTED.load(Ordering::Relaxed)
}

pub(crate) fn thread_exited(id: ThreadId, name: &str, code: i32) {
    emit("threads.exit", "exit", &[("id", i64::from(id.serial())), ("code", i64::from(code))], "thread", name);
}
