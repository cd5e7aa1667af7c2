//! A per-CPU timer base: armed timers by expiry (an indexed heap, see
//! [`timerqueue`](crate::timerqueue)) plus which timer's callback is running,
//! so that `delete_sync` can wait for it. Used for both the jiffies timers
//! (expiry in jiffies) and the high-resolution timers (expiry in ns).

use crate::timerqueue::{TimerId, TimerQueue};

/// [`TimerBase::try_delete_sync`] found the callback running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerRunning;

/// `del_timer_sync`: calls `try_delete` (one [`TimerBase::try_delete_sync`]
/// under the base's lock) until it succeeds, calling `wait` in between;
/// returns whether the last, successful attempt disarmed a pending timer.
///
/// Rule (`timer::delete_sync_stops_a_self_rearming_timer`): on return the
/// timer is neither armed nor running, even if its callback re-arms it.
/// Checking "running" and disarming in one step under the lock is what
/// makes this hold; disarming first and then waiting for the callback
/// lets the callback re-arm the timer in between.
pub fn delete_sync(mut try_delete: impl FnMut() -> Result<bool, TimerRunning>, mut wait: impl FnMut()) -> bool {
    loop {
        match try_delete() {
            Ok(was_pending) => return was_pending,
            Err(TimerRunning) => wait(),
        }
    }
}

/// Timers of one CPU.
#[derive(Debug)]
pub struct TimerBase<T> {
    queue: TimerQueue<T>,
    running: Option<TimerId>,
    fired: u64,
}

impl<T> Default for TimerBase<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerBase<T> {
    pub const fn new() -> Self {
        Self { queue: TimerQueue::new(), running: None, fired: 0 }
    }

    /// Registers a timer (may allocate; do it at set-up time).
    pub fn register(&mut self, data: T) -> TimerId {
        self.queue.register(data)
    }

    /// Removes a timer for good.
    pub fn unregister(&mut self, id: TimerId) -> Option<T> {
        if self.running == Some(id) {
            self.running = None;
        }
        self.queue.unregister(id)
    }

    /// `mod_timer`: (re-)arms `id` for `expires`. Returns whether it was
    /// pending before, or `None` for an unknown timer.
    pub fn modify(&mut self, id: TimerId, expires: u64) -> Option<bool> {
        self.queue.arm(id, expires)
    }

    /// `del_timer`: disarms; returns whether it was pending.
    pub fn delete(&mut self, id: TimerId) -> bool {
        self.queue.cancel(id)
    }

    pub fn is_pending(&self, id: TimerId) -> bool {
        self.queue.is_armed(id)
    }

    /// `try_to_del_timer_sync`: disarms `id` unless its callback is running
    /// now. `Ok(was pending)` once it is neither armed nor running,
    /// `Err(TimerRunning)` (nothing changed) while the callback runs: it may
    /// re-arm the timer, so deleting now would not last.
    pub fn try_delete_sync(&mut self, id: TimerId) -> Result<bool, TimerRunning> {
        if self.running == Some(id) {
            return Err(TimerRunning);
        }
        Ok(self.queue.cancel(id))
    }

    /// Whether `id`'s callback is running now.
    pub fn is_running(&self, id: TimerId) -> bool {
        self.running == Some(id)
    }

    /// When `id` expires, if it is armed (for listings).
    pub fn expiry(&self, id: TimerId) -> Option<u64> {
        self.queue.deadline(id)
    }

    /// Earliest expiry of an armed timer.
    pub fn next_expiry(&self) -> Option<u64> {
        self.queue.next_deadline()
    }

    /// Takes the earliest timer due at `now` and marks it running; the
    /// caller runs its callback and then calls [`finish`](Self::finish).
    pub fn begin_expired(&mut self, now: u64) -> Option<(TimerId, u64)> {
        let (id, expires) = self.queue.pop_expired(now)?;
        self.running = Some(id);
        self.fired += 1;
        Some((id, expires))
    }

    /// The callback of `id` returned.
    pub fn finish(&mut self, id: TimerId) {
        if self.running == Some(id) {
            self.running = None;
        }
    }

    pub fn data(&self, id: TimerId) -> Option<&T> {
        self.queue.data(id)
    }

    pub fn data_mut(&mut self, id: TimerId) -> Option<&mut T> {
        self.queue.data_mut(id)
    }

    /// Callbacks started so far.
    pub fn fired(&self) -> u64 {
        self.fired
    }

    /// Armed timers.
    pub fn pending_count(&self) -> usize {
        self.queue.armed_count()
    }

    /// Registered timers.
    pub fn registered_count(&self) -> usize {
        self.queue.registered_count()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test scaffolding: a failure is a test failure")]
mod tests {
    use super::*;
    use crate::clock::{Clock, FakeClock};

    /// Drives a base the way the TIMER softirq does, recording a trace;
    /// `rearm` lets a callback re-arm its own timer.
    fn run_due(base: &mut TimerBase<&'static str>, now: u64, trace: &mut Vec<(u64, &'static str)>, rearm: Option<(&'static str, u64)>) {
        while let Some((id, _)) = base.begin_expired(now) {
            let name = *base.data(id).unwrap();
            trace.push((now, name));
            assert!(base.is_running(id));
            if let Some((who, expires)) = rearm
                && who == name
            {
                assert_eq!(base.modify(id, expires), Some(false), "not pending while it runs");
            }
            base.finish(id);
            assert!(!base.is_running(id));
        }
    }

    #[test]
    fn timers_fire_in_expiry_order_on_a_fake_clock() {
        let clock = FakeClock::new(0);
        let mut base = TimerBase::new();
        let a = base.register("a");
        let b = base.register("b");
        let c = base.register("c");
        assert_eq!(base.modify(a, 200), Some(false));
        assert_eq!(base.modify(b, 100), Some(false));
        assert_eq!(base.modify(c, 300), Some(false));
        assert_eq!(base.modify(c, 150), Some(true), "mod_timer on a pending timer reports it");
        let mut trace = Vec::new();
        for _ in 0..4 {
            clock.advance(100);
            run_due(&mut base, clock.now_ns(), &mut trace, None);
        }
        assert_eq!(trace, vec![(100, "b"), (200, "c"), (200, "a")]);
        assert_eq!(base.fired(), 3);
        assert_eq!(base.next_expiry(), None);
    }

    #[test]
    fn a_callback_rearming_itself_runs_periodically() {
        let clock = FakeClock::new(0);
        let mut base = TimerBase::new();
        let tick = base.register("tick");
        base.modify(tick, 10);
        let mut trace = Vec::new();
        for step in 1..=5u64 {
            clock.set(step * 10);
            run_due(&mut base, clock.now_ns(), &mut trace, Some(("tick", step * 10 + 10)));
        }
        assert_eq!(trace, vec![(10, "tick"), (20, "tick"), (30, "tick"), (40, "tick"), (50, "tick")]);
        assert!(base.is_pending(tick));
    }

    #[test]
    fn delete_reports_pending_and_running_is_visible_for_delete_sync() {
        let mut base = TimerBase::new();
        let t = base.register("t");
        assert!(!base.delete(t));
        base.modify(t, 5);
        assert!(base.delete(t));
        base.modify(t, 5);
        let (id, _) = base.begin_expired(5).unwrap();
        // del_timer while the callback runs: not pending, but running —
        // del_timer_sync must wait until `finish`.
        assert!(!base.delete(id));
        assert!(base.is_running(id));
        base.finish(id);
        assert!(!base.is_running(id));
    }

    #[test]
    fn try_delete_sync_refuses_while_the_callback_runs() {
        let mut base = TimerBase::new();
        let t = base.register("t");
        base.modify(t, 5);
        let (id, _) = base.begin_expired(5).unwrap();
        assert_eq!(base.try_delete_sync(id), Err(TimerRunning));
        // The callback re-arms itself, then returns.
        base.modify(id, 10);
        base.finish(id);
        assert_eq!(base.try_delete_sync(id), Ok(true));
        assert!(!base.is_pending(id) && !base.is_running(id));
        assert_eq!(base.try_delete_sync(id), Ok(false));
    }
}
