//! Kernel events for the outside world (thread exits, alarms from the
//! application): a fixed ring any context may push to without allocating;
//! the control plane drains it from thread context and publishes.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::sync::IrqSpinLock;
use crate::thread::ThreadId;
use crate::time;

/// Longest text an event carries.
pub const TEXT_CAPACITY: usize = 48;
const RING_CAPACITY: usize = 256;

/// What happened.
#[derive(Clone, Copy, Debug)]
pub enum EventKind {
    /// A thread ended with a code.
    ThreadExit { id: u32, code: i32 },
    /// Application-defined, with a channel index and a value.
    App { channel: u16, value: i64 },
}

/// One event with its time and a short text (a thread name, a message).
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub time_ns: u64,
    pub kind: EventKind,
    text: [u8; TEXT_CAPACITY],
    text_len: u8,
}

impl Event {
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

/// Records an event. When the ring is full the oldest event is dropped (and
/// counted): a slow reader never blocks a real-time writer.
pub fn push(kind: EventKind, text: &str) {
    let mut bytes = [0u8; TEXT_CAPACITY];
    let mut len = text.len().min(TEXT_CAPACITY);
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
    let event = Event { time_ns: time::now_ns(), kind, text: bytes, text_len: len as u8 };
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

pub(crate) fn thread_exited(id: ThreadId, name: &str, code: i32) {
    push(EventKind::ThreadExit { id: id.serial(), code }, name);
}
