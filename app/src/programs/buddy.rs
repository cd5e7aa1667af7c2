//! Program 3: buddy threads.
//!
//! An RT thread (`rt-sleeper`) logs "RT-Thread woke up" and suspends
//! itself, over and over. Its buddy, the kernel thread `buddy/rt-sleeper`
//! (nice 19, registered with `thread::set_buddy`), is what the outside
//! world reaches: the control plane delivers `WAKE rt-sleeper` and `KILL
//! rt-sleeper [TERM|WAKE]` to the buddy as signals, and the buddy maps
//! them, as the seed's kernel thread did: anything but TERM wakes the RT
//! thread; TERM deletes the RT thread (cancel + bounded join) and ends the
//! buddy. Unloading sends the buddy TERM and waits at most 1 s for it,
//! reporting if it did not finish.
//!
//! Observe: `buddy.wakeups`, `buddy.signals`, `buddy.active`; the console
//! line on every wake-up; events `buddy-exit` on channel `events`.

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicBool, Ordering};

use rtedge_kernel::modules::Module;
use rtedge_kernel::shared::{Access, SharedBool, SharedInt, SharedValue};
use rtedge_kernel::thread::{self, Signal, ThreadError, ThreadId};

use super::{OwnedThread, THREAD_EXIT_TIMEOUT_NS};

const RT_NAME: &str = "rt-sleeper";
const BUDDY_NAME: &str = "buddy/rt-sleeper";
const PRIORITY: u8 = 1;
/// The buddy only relays signals: it yields to everything else.
const BUDDY_NICE: i8 = 19;

static WAKEUPS: SharedInt = SharedInt::new("buddy.wakeups", Access::ReadOnly, 0);
static SIGNALS: SharedInt = SharedInt::new("buddy.signals", Access::ReadOnly, 0);
static ACTIVE: SharedBool = SharedBool::new("buddy.active", Access::ReadOnly, false);
static STATICS: [&dyn SharedValue; 3] = [&WAKEUPS, &SIGNALS, &ACTIVE];

static RT_THREAD: OwnedThread = OwnedThread::new();
static BUDDY_THREAD: OwnedThread = OwnedThread::new();
/// Whether the last unload found the buddy finished within the bound.
static LAST_EXIT_IN_TIME: AtomicBool = AtomicBool::new(true);

/// After an unload: whether the buddy thread ended within the bounded wait.
pub fn last_exit_in_time() -> bool {
    LAST_EXIT_IN_TIME.load(Ordering::Acquire)
}

fn rt_thread() -> i32 {
    loop {
        log::info!("{RT_NAME}: RT-Thread woke up ({} wake-ups)", WAKEUPS.load());
        // A cancellation point: deletion ends the thread here.
        thread::suspend_self();
        WAKEUPS.add(1);
    }
}

fn buddy_thread(rt: ThreadId) -> i32 {
    ACTIVE.set(true);
    let code = loop {
        let signals = thread::wait_signals();
        if signals == 0 {
            // A stop request (unload's fallback when TERM was not heeded).
            break 1;
        }
        SIGNALS.add(1);
        if signals & Signal::Term as u32 != 0 {
            log::info!("{BUDDY_NAME}: TERM: deleting {RT_NAME}");
            match thread::delete(rt, THREAD_EXIT_TIMEOUT_NS) {
                Ok(_) | Err(ThreadError::NoSuchThread) => {}
                Err(error) => log::warn!("{BUDDY_NAME}: {RT_NAME} did not end: {error}"),
            }
            break 0;
        }
        if let Err(error) = thread::wake_up(rt) {
            log::warn!("{BUDDY_NAME}: cannot wake {RT_NAME}: {error}");
        }
    };
    ACTIVE.set(false);
    log::info!("{BUDDY_NAME}: exit");
    code
}

pub struct BuddyProgram;

pub static MODULE: BuddyProgram = BuddyProgram;

impl BuddyProgram {
    fn start() -> Result<(), String> {
        // The RT thread exists (stopped) before its buddy, so the buddy
        // never has to wait for it, unlike the seed's polling loop.
        let rt = thread::Builder::new(RT_NAME)
            .realtime(PRIORITY)
            .create(rt_thread)
            .map_err(|error| format!("cannot create {RT_NAME}: {error}"))?;
        RT_THREAD.set(rt);
        let buddy = thread::Builder::new(BUDDY_NAME)
            .nice(BUDDY_NICE)
            .spawn(move || buddy_thread(rt))
            .map_err(|error| format!("cannot start {BUDDY_NAME}: {error}"))?;
        BUDDY_THREAD.set(buddy);
        thread::set_buddy(rt, buddy).map_err(|error| format!("cannot pair {RT_NAME} with its buddy: {error}"))?;
        thread::start(rt).map_err(|error| format!("cannot start {RT_NAME}: {error}"))
    }
}

impl Module for BuddyProgram {
    fn name(&self) -> &'static str {
        "buddy"
    }

    fn description(&self) -> &'static str {
        "RT thread rt-sleeper suspends itself; its buddy kernel thread maps WAKE/KILL to wake-up or deletion"
    }

    fn init(&'static self) -> Result<(), String> {
        WAKEUPS.set(0);
        SIGNALS.set(0);
        ACTIVE.set(false);
        super::register_statics(&STATICS);
        Self::start().inspect_err(|_| self.exit())
    }

    fn exit(&'static self) {
        let mut finished = true;
        if let Some(buddy) = BUDDY_THREAD.take() {
            if super::is_live(buddy) {
                let _ = thread::send_signal(buddy, Signal::Term);
            }
            match thread::join(buddy, Some(THREAD_EXIT_TIMEOUT_NS)) {
                Ok(_) | Err(ThreadError::NoSuchThread) => {}
                Err(error) => {
                    finished = false;
                    log::warn!(
                        "buddy: {BUDDY_NAME} did not finish within {} ms ({error}); stopping it",
                        THREAD_EXIT_TIMEOUT_NS / 1_000_000
                    );
                    if let Err(error) = thread::stop(buddy, THREAD_EXIT_TIMEOUT_NS) {
                        log::warn!("buddy: {BUDDY_NAME} still did not end: {error}");
                    }
                }
            }
        }
        // Normally the buddy deleted it; a created-but-unstarted or orphaned
        // RT thread is deleted here.
        if let Some(rt) = RT_THREAD.get() {
            thread::clear_buddy(rt);
        }
        RT_THREAD.delete(RT_NAME);
        LAST_EXIT_IN_TIME.store(finished, Ordering::Release);
        super::event("buddy-exit", &[("finished", i64::from(finished)), ("wakeups", WAKEUPS.load())], "thread", BUDDY_NAME);
        super::unregister_statics(&STATICS);
        log::info!(
            "buddy: unloaded ({} wake-ups, {} signals; buddy {})",
            WAKEUPS.load(),
            SIGNALS.load(),
            if finished { "finished in time" } else { "was late" }
        );
    }

    fn threads(&self) -> usize {
        RT_THREAD.live_count() + BUDDY_THREAD.live_count()
    }
}
