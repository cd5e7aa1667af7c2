//! Typed handler slots: where a function that interrupt, softirq or timer
//! code calls back is kept, instead of a `usize` turned back into a
//! function pointer.
//!
//! A [`HandlerSlot<H>`] holds one handler of type `H` (a `fn(usize)`, a
//! `fn(u8)`, a function with its data word: any `Copy` value) and a state
//! word: whether the handler is live, which registration (generation) it
//! is, and how many callers are inside it now. Calling is lock-free: enter
//! (one compare-and-swap on the word), read the handler, call it, leave
//! (one subtraction). Hard IRQs and RT threads may call; only install and
//! remove wait.
//!
//! The rules (loom models in `tests/loom_handler.rs`, unit tests below):
//! - `handler::removed_handler_never_runs`: once [`HandlerSlot::remove`]
//!   returns, the handler runs in no caller and none starts it again (Linux's
//!   `free_irq` waiting in `synchronize_irq`), even if another handler is
//!   installed in the slot right after.
//! - `handler::a_call_sees_a_whole_handler`: a caller sees no handler or the
//!   one an install finished writing, never a half-written one; the slot's
//!   memory is written only while no caller can read it.
//!
//! This is the engine's one module with `unsafe` code: the handler lives in
//! an `UnsafeCell` that the state word guards (written only while the slot
//! is claimed for writing with no caller inside, read only by a caller that
//! entered a live slot). Under `--cfg loom` the cell is loom's, which fails
//! a model on any read that overlaps a write.
#![allow(unsafe_code)] // the cell the state word guards; see the module doc

use crate::sync::{AtomicU32, Ordering, spin_loop};

/// Bit 31: the slot holds a handler that may be called.
const LIVE: u32 = 1 << 31;
/// Bit 30: an install is writing the handler (no caller may read it).
const WRITING: u32 = 1 << 30;
/// Bits 16..30: the registration's generation (wraps; a handle kept across
/// 16 384 re-registrations of one slot could alias).
const GENERATION_SHIFT: u32 = 16;
const GENERATION_BITS: u32 = 0x3fff;
const GENERATION_MASK: u32 = GENERATION_BITS << GENERATION_SHIFT;
/// Bits 0..16: callers inside the slot now (CPUs, so far below the limit).
const CALLERS_MASK: u32 = 0xffff;

#[cfg(not(loom))]
#[derive(Debug)]
struct Cell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> Cell<T> {
    const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    fn with<R>(&self, read: impl FnOnce(*const T) -> R) -> R {
        read(self.0.get())
    }

    fn with_mut<R>(&self, write: impl FnOnce(*mut T) -> R) -> R {
        write(self.0.get())
    }
}

#[cfg(loom)]
use loom::cell::UnsafeCell as Cell;

/// Why an install was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// The slot holds a live handler (or another install is writing one).
    Busy,
}

/// One handler of type `H` and the state that guards it (see the module
/// doc). Usable as a `static` (`new` is `const` outside loom).
#[derive(Debug)]
pub struct HandlerSlot<H> {
    word: AtomicU32,
    handler: Cell<Option<H>>,
}

// SAFETY: the handler cell is written only by the one install that set
// WRITING while no caller was inside and the slot was not live, and read
// only by callers that entered while it was live (after that install's
// Release); so reads and writes never overlap, and `H: Send` lets the value
// written on one CPU be used on another.
unsafe impl<H: Copy + Send> Sync for HandlerSlot<H> {}

impl<H: Copy> Default for HandlerSlot<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Copy> HandlerSlot<H> {
    /// An empty slot.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self { word: AtomicU32::new(0), handler: Cell::new(None) }
    }

    /// An empty slot.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self { word: AtomicU32::new(0), handler: Cell::new(None) }
    }

    /// Stores `handler` and makes the slot live; returns the new
    /// generation, which handles carry. Refused while a handler is live.
    /// Waits (spins) while callers that came in before a `shut` are still
    /// inside: it never writes under a reader.
    pub fn install(&self, handler: H) -> Result<u32, SlotError> {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            if current & (LIVE | WRITING) != 0 {
                return Err(SlotError::Busy);
            }
            if current & CALLERS_MASK != 0 {
                spin_loop();
                current = self.word.load(Ordering::Acquire);
                continue;
            }
            match self.word.compare_exchange_weak(current, current | WRITING, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        // SAFETY: this call set WRITING on a slot that was neither live nor
        // being written and had no caller inside; callers only read after
        // entering a live slot, and no other install can claim it now.
        self.handler.with_mut(|cell| unsafe { *cell = Some(handler) });
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let generation = ((current & GENERATION_MASK) >> GENERATION_SHIFT).wrapping_add(1) & GENERATION_BITS;
            // Callers that counted themselves meanwhile (`visit`) keep
            // their count; they saw the slot not live and read nothing.
            let next = LIVE | (generation << GENERATION_SHIFT) | (current & CALLERS_MASK);
            match self.word.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(generation),
                Err(actual) => current = actual,
            }
        }
    }

    /// Whether a handler is live.
    pub fn is_live(&self) -> bool {
        self.word.load(Ordering::Acquire) & LIVE != 0
    }

    /// The live generation, if live.
    pub fn live_generation(&self) -> Option<u32> {
        let word = self.word.load(Ordering::Acquire);
        (word & LIVE != 0).then_some((word & GENERATION_MASK) >> GENERATION_SHIFT)
    }

    /// Enters as a caller of registration `generation` (`None`: whichever
    /// is live). `None` (nothing entered) if no handler is live or the
    /// slot was re-registered since the handle was made. The handler
    /// cannot be removed (`remove` waits) until the guard drops.
    #[inline]
    pub fn enter(&self, generation: Option<u32>) -> Option<Entered<'_, H>> {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let live_generation = (current & GENERATION_MASK) >> GENERATION_SHIFT;
            if current & LIVE == 0 || generation.is_some_and(|wanted| wanted != live_generation) {
                return None;
            }
            match self.word.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Entered { slot: self }),
                Err(actual) => current = actual,
            }
        }
    }

    /// Counts a caller in whether or not a handler is live (one atomic
    /// add: the softirq loop's way in, which must be waited for by a
    /// `remove` even when it finds the slot shut). The visit yields the
    /// handler only if it was live at entry.
    #[inline]
    pub fn visit(&self) -> Visit<'_, H> {
        let live = self.word.fetch_add(1, Ordering::AcqRel) & LIVE != 0;
        Visit { slot: self, live }
    }

    /// Calls the live handler through `call`, as one entered caller;
    /// whether there was one.
    #[inline]
    pub fn call(&self, call: impl FnOnce(H)) -> bool {
        match self.enter(None) {
            Some(entered) => {
                call(entered.handler());
                true
            }
            None => false,
        }
    }

    /// Callers inside the slot now.
    pub fn callers(&self) -> u32 {
        self.word.load(Ordering::Acquire) & CALLERS_MASK
    }

    /// Ends registration `generation` (`None`: whichever is live): no
    /// caller enters after this. `false` (nothing changed) if that
    /// registration is not the live one (a second removal through a copied
    /// handle). Callers already inside may still be running: [`remove`]
    /// waits for them.
    ///
    /// [`remove`]: Self::remove
    pub fn shut(&self, generation: Option<u32>) -> bool {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let live_generation = (current & GENERATION_MASK) >> GENERATION_SHIFT;
            if current & LIVE == 0 || generation.is_some_and(|wanted| wanted != live_generation) {
                return false;
            }
            match self.word.compare_exchange_weak(current, current & !LIVE, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Shuts registration `generation` (`None`: the live one) and waits,
    /// calling `wait` between looks, until no caller is inside: on return
    /// the handler runs nowhere and never starts again (the rule
    /// `handler::removed_handler_never_runs`). `false` if that registration
    /// was not live (nothing waited for). Never call it from inside the
    /// handler, or from a context the handler interrupted: it would wait
    /// for itself.
    pub fn remove(&self, generation: Option<u32>, mut wait: impl FnMut()) -> bool {
        if !self.shut(generation) {
            return false;
        }
        while self.callers() != 0 {
            wait();
        }
        true
    }

    fn leave(&self) {
        self.word.fetch_sub(1, Ordering::AcqRel);
    }

    fn read(&self) -> Option<H> {
        // SAFETY: called only by a caller that entered while the slot was
        // live: no install writes until every such caller has left (it
        // needs the slot shut and the caller count at zero), and the
        // install that made it live wrote before its Release, which the
        // caller's entry acquired.
        self.handler.with(|cell| unsafe { *cell })
    }
}

/// A caller inside a live slot: the handler it may call, and the count that
/// keeps `remove` waiting until it drops.
#[derive(Debug)]
pub struct Entered<'a, H: Copy> {
    slot: &'a HandlerSlot<H>,
}

impl<H: Copy> Entered<'_, H> {
    /// The live handler.
    #[inline]
    pub fn handler(&self) -> H {
        // An entered slot was live at entry, and an install stores before
        // it makes the slot live: never `None`. The match keeps `unwrap`
        // out of the hot path.
        match self.slot.read() {
            Some(handler) => handler,
            None => unreachable!("a live handler slot without a handler"),
        }
    }
}

impl<H: Copy> Drop for Entered<'_, H> {
    fn drop(&mut self) {
        self.slot.leave();
    }
}

/// A counted caller that may have found the slot shut (see
/// [`HandlerSlot::visit`]).
#[derive(Debug)]
pub struct Visit<'a, H: Copy> {
    slot: &'a HandlerSlot<H>,
    live: bool,
}

impl<H: Copy> Visit<'_, H> {
    /// The handler, if the slot was live when this caller came in.
    #[inline]
    pub fn handler(&self) -> Option<H> {
        if self.live { self.slot.read() } else { None }
    }

    /// Whether the slot was live when this caller came in.
    pub fn was_live(&self) -> bool {
        self.live
    }
}

impl<H: Copy> Drop for Visit<'_, H> {
    fn drop(&mut self) {
        self.slot.leave();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn count(amount: usize) {
        CALLS.fetch_add(amount, std::sync::atomic::Ordering::SeqCst);
    }

    fn other(_: usize) {}

    #[test]
    fn an_installed_handler_is_called_with_its_argument_and_a_removed_one_never() {
        let slot: HandlerSlot<fn(usize)> = HandlerSlot::new();
        assert!(!slot.call(|handler| handler(1)), "an empty slot calls nothing");
        let first = slot.install(count).expect("empty slot");
        assert_eq!(slot.install(other), Err(SlotError::Busy), "a live slot refuses a second handler");
        let before = CALLS.load(std::sync::atomic::Ordering::SeqCst);
        assert!(slot.call(|handler| handler(5)));
        assert_eq!(CALLS.load(std::sync::atomic::Ordering::SeqCst), before + 5);
        assert_eq!(slot.callers(), 0, "the guard left");
        assert!(slot.remove(Some(first), || unreachable!("no caller inside")));
        assert!(!slot.remove(Some(first), || unreachable!()), "a second remove does nothing");
        assert!(!slot.call(|handler| handler(7)));
        assert_eq!(CALLS.load(std::sync::atomic::Ordering::SeqCst), before + 5);
    }

    #[test]
    fn a_handle_of_an_old_registration_enters_nothing() {
        let slot: HandlerSlot<(fn(usize), usize)> = HandlerSlot::new();
        let first = slot.install((other, 1)).expect("empty slot");
        assert!(slot.remove(None, || {}));
        let second = slot.install((other, 2)).expect("removed slot");
        assert_ne!(first, second);
        assert!(slot.enter(Some(first)).is_none(), "old handle");
        let entered = slot.enter(Some(second)).expect("live handle");
        assert_eq!(entered.handler().1, 2);
        assert_eq!(slot.callers(), 1);
        assert!(!slot.shut(Some(first)), "the old handle cannot shut the new registration");
        drop(entered);
        assert_eq!(slot.live_generation(), Some(second));
    }

    #[test]
    fn a_visit_is_counted_even_when_shut_and_sees_no_handler() {
        let slot: HandlerSlot<fn(usize)> = HandlerSlot::new();
        let visit = slot.visit();
        assert!(!visit.was_live());
        assert!(visit.handler().is_none());
        assert_eq!(slot.callers(), 1);
        drop(visit);
        slot.install(other).expect("empty slot");
        let visit = slot.visit();
        assert!(visit.handler().is_some());
        drop(visit);
        assert_eq!(slot.callers(), 0);
    }

    #[test]
    fn generations_wrap_within_their_bits() {
        let slot: HandlerSlot<fn(usize)> = HandlerSlot::new();
        let mut last = 0;
        for _ in 0..(GENERATION_BITS + 3) {
            last = slot.install(other).expect("removed slot");
            assert!(last <= GENERATION_BITS);
            assert!(slot.remove(Some(last), || {}));
        }
        assert_eq!(last, (GENERATION_BITS + 3) & GENERATION_BITS, "wrapped past {GENERATION_BITS}");
    }
}
