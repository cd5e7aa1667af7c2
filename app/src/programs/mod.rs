//! The seeds' programs, one loadable module each (`init` / `exit`, as their
//! `init_module` / `cleanup_module`), and the small helpers they share.
//!
//! Every module's `exit` releases everything its `init` and its running
//! threads took, and tolerates a partial `init` (a failed `init` calls it to
//! undo what was done).

pub mod buddy;
pub mod job;
pub mod kmore;
pub mod rtalloc;
pub mod serial_irq;
pub mod shm;
pub mod softirq_latency;
pub mod tasklet;
pub mod tasklet_disable;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use rtedge_kernel::modules::{self, Module};
use rtedge_kernel::shared::{self, SharedValue};
use rtedge_kernel::sync::IrqSpinLock;
use rtedge_kernel::thread::{self, State, ThreadError, ThreadId};
use rtedge_kernel::{boot, events};
use rtedge_proto::Reply;

use crate::config;

/// How long an unload waits for each thread it ends.
pub const THREAD_EXIT_TIMEOUT_NS: u64 = 1_000_000_000;

/// The channel for everything else the appliance reports.
pub const EVENTS: &str = "events";

/// Every program, in load order (unload goes in reverse).
pub fn all() -> [&'static dyn Module; 9] {
    [
        &tasklet::MODULE,
        &tasklet_disable::MODULE,
        &rtalloc::MODULE,
        &buddy::MODULE,
        &softirq_latency::MODULE,
        &serial_irq::MODULE,
        &shm::MODULE,
        &job::MODULE,
        &kmore::MODULE,
    ]
}

/// Makes every program known to the kernel's module list (none loaded).
pub fn register_all() {
    for module in all() {
        modules::register(module);
    }
}

/// Reports an event on the `events` channel (any context; never allocates).
pub fn event(kind: &'static str, fields: &[(&'static str, i64)], text_key: &'static str, text: &str) {
    events::emit(EVENTS, kind, fields, text_key, text);
}

/// Makes shared statics reachable by name (module init).
pub fn register_statics(values: &[&'static dyn SharedValue]) {
    for value in values {
        shared::register(*value);
    }
}

/// Removes shared statics (module exit).
pub fn unregister_statics(values: &[&'static dyn SharedValue]) {
    for value in values {
        shared::unregister(value.name());
    }
}

/// Whether `id` names a thread that has not exited.
pub fn is_live(id: ThreadId) -> bool {
    thread::get(id).is_some_and(|thread| !matches!(thread.state(), State::Exited | State::Free))
}

/// A thread a module owns: remembered at init, ended at exit.
pub struct OwnedThread {
    id: IrqSpinLock<Option<ThreadId>>,
}

impl OwnedThread {
    pub const fn new() -> Self {
        Self { id: IrqSpinLock::new(None) }
    }

    pub fn set(&self, id: ThreadId) {
        *self.id.lock() = Some(id);
    }

    pub fn get(&self) -> Option<ThreadId> {
        *self.id.lock()
    }

    pub fn take(&self) -> Option<ThreadId> {
        self.id.lock().take()
    }

    /// Starts the module's RT thread `name` at `priority` and remembers it.
    pub fn start_realtime<F>(&self, name: &str, priority: u8, body: F) -> Result<(), String>
    where
        F: FnOnce() -> i32 + Send + 'static,
    {
        let id = thread::Builder::new(name).realtime(priority).spawn(body).map_err(|error| format!("cannot start {name}: {error}"))?;
        self.set(id);
        Ok(())
    }

    /// 1 if the thread runs, else 0 (for `MODULE LIST`).
    pub fn live_count(&self) -> usize {
        usize::from(self.get().is_some_and(is_live))
    }

    /// Cancels the thread and waits (bounded) for it to end, running its
    /// cleanup handlers (pthread_delete_np). A thread that already exited
    /// (e.g. `KILL`) is reaped. Returns false if it did not end in time.
    pub fn delete(&self, what: &str) -> bool {
        let Some(id) = self.take() else { return true };
        finish(what, thread::delete(id, THREAD_EXIT_TIMEOUT_NS))
    }
}

fn finish(what: &str, result: Result<i32, ThreadError>) -> bool {
    match result {
        Ok(_) | Err(ThreadError::NoSuchThread) => true,
        Err(error) => {
            log::warn!("{what}: did not end within {} ms: {error}", THREAD_EXIT_TIMEOUT_NS / 1_000_000);
            false
        }
    }
}

/// A few short-lived kernel threads a module starts on request (jobs,
/// file readers): finished ones are joined when a new one starts and at
/// unload, so their slots and stacks are reused.
pub struct ThreadSet<const N: usize> {
    ids: IrqSpinLock<[Option<ThreadId>; N]>,
}

impl<const N: usize> ThreadSet<N> {
    pub const fn new() -> Self {
        Self { ids: IrqSpinLock::new([None; N]) }
    }

    /// Joins the threads that have exited; returns how many still run.
    pub fn reap(&self) -> usize {
        let finished: Vec<ThreadId> = {
            let mut ids = self.ids.lock();
            let mut finished = Vec::new();
            for slot in ids.iter_mut() {
                if let Some(id) = *slot
                    && !is_live(id)
                {
                    finished.push(id);
                    *slot = None;
                }
            }
            finished
        };
        for id in finished {
            let _ = thread::join(id, Some(THREAD_EXIT_TIMEOUT_NS));
        }
        self.running()
    }

    /// Threads that have not exited.
    pub fn running(&self) -> usize {
        self.ids.lock().iter().flatten().filter(|id| is_live(**id)).count()
    }

    /// Whether one more thread fits (finished ones are joined first).
    pub fn has_room(&self) -> bool {
        self.reap() < N && self.ids.lock().iter().any(Option::is_none)
    }

    /// Remembers a started thread. Returns false (and the caller must end
    /// it) if there is no room.
    pub fn add(&self, id: ThreadId) -> bool {
        let mut ids = self.ids.lock();
        match ids.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => {
                *slot = Some(id);
                true
            }
            None => false,
        }
    }

    /// Stops every thread (bounded wait each) and joins them all.
    pub fn stop_all(&self, what: &str) {
        let ids: Vec<ThreadId> = self.ids.lock().iter_mut().filter_map(Option::take).collect();
        for id in ids {
            let result =
                if is_live(id) { thread::stop(id, THREAD_EXIT_TIMEOUT_NS) } else { thread::join(id, Some(THREAD_EXIT_TIMEOUT_NS)) };
            finish(what, result);
        }
    }
}

/// Fixed-capacity text for contexts that may not allocate (RT threads,
/// softirqs): `write!` into it, read it with [`as_str`](Self::as_str).
/// Text that does not fit is cut on a character boundary.
pub struct TextBuffer<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> TextBuffer<N> {
    pub const fn new() -> Self {
        Self { bytes: [0; N], len: 0 }
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> fmt::Write for TextBuffer<N> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut take = text.len().min(N - self.len);
        while !text.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// A setting: the kernel command line first, then the configuration file.
pub fn setting(key: &str) -> Option<String> {
    rtedge_engine::cmdline::get(boot::command_line(), key).map(String::from).or_else(|| config::get(key))
}

/// A numeric setting with a default; a malformed value is reported and
/// the default used.
pub fn setting_u64(key: &str, default: u64) -> u64 {
    match setting(key) {
        Some(text) => match rtedge_engine::cmdline::parse_u64(&text) {
            Ok(value) => value,
            Err(_) => {
                log::warn!("setting {key}={text} is not a number; using {default}");
                default
            }
        },
        None => default,
    }
}

/// Parses argument `index` of a command as an integer in `range`.
pub fn integer_argument(
    request: &rtedge_proto::Request,
    index: usize,
    range: core::ops::RangeInclusive<u64>,
    name: &str,
) -> Result<u64, Reply> {
    let bad = || Reply::error(&alloc::format!("ERR {name} must be an integer between {} and {}", range.start(), range.end()));
    let text = request.arg(index).ok_or_else(bad)?;
    let value = core::str::from_utf8(text).ok().and_then(|text| text.parse::<u64>().ok()).ok_or_else(bad)?;
    if range.contains(&value) { Ok(value) } else { Err(bad()) }
}
