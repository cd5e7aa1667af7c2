//! The tasklet state machine, as pure transitions on one state word that
//! the kernel applies with compare-and-swap loops.
//!
//! The rules (Linux's, which the seeds rely on):
//! - scheduling a tasklet that is already scheduled does nothing: several
//!   schedules before a run give one run;
//! - a tasklet is never run on two CPUs at once (the RUN bit); one that is
//!   running may be scheduled again, also from its own handler, and then
//!   runs again afterwards;
//! - `disable`/`enable` nest as a count; a tasklet scheduled while disabled
//!   keeps its SCHED bit and runs once when the count returns to zero;
//!   `disable` also waits until a handler running now has returned (the
//!   `_nosync` form does not);
//! - `kill` waits until it is neither scheduled nor running.
//!
//! Unlike Linux, a disabled tasklet found in the queue is parked (taken off
//! the queue, SCHED kept) instead of being re-queued in a loop, and `enable`
//! re-queues it: the same observable behaviour without a busy softirq.

use crate::sync::{AtomicU32, Ordering};

/// One tasklet's state word, with the transitions below applied by
/// compare-and-swap: the code the kernel runs and the loom model
/// (`tests/loom_tasklet.rs`) checks.
///
/// Rule (`tasklet::disable_waits_for_a_running_handler`): once
/// [`disable`](Self::disable) returns, the handler is not running anywhere
/// and does not start until the matching [`enable`](Self::enable).
#[derive(Debug)]
pub struct TaskletCell {
    state: AtomicU32,
}

impl TaskletCell {
    /// A cell starting with `disable_count` disables (0: enabled).
    #[cfg(not(loom))]
    pub const fn new(disable_count: u32) -> Self {
        Self { state: AtomicU32::new(disable_count << COUNT_SHIFT) }
    }

    /// A cell starting with `disable_count` disables (0: enabled).
    #[cfg(loom)]
    pub fn new(disable_count: u32) -> Self {
        Self { state: AtomicU32::new(disable_count << COUNT_SHIFT) }
    }

    /// The current word.
    pub fn load(&self) -> TaskletState {
        TaskletState(self.state.load(Ordering::Acquire))
    }

    /// Applies a transition by compare-and-swap; `None` if `step` refused.
    fn transition<R>(&self, mut step: impl FnMut(TaskletState) -> Option<(TaskletState, R)>) -> Option<R> {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let (next, result) = step(TaskletState(current))?;
            match self.state.compare_exchange_weak(current, next.0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(result),
                Err(actual) => current = actual,
            }
        }
    }

    /// `tasklet_schedule`'s state change; see [`schedule`].
    pub fn schedule(&self) -> ScheduleOutcome {
        self.transition(|state| Some(schedule(state))).unwrap_or(ScheduleOutcome::Nothing)
    }

    /// The softirq takes the tasklet off its queue; see [`begin_run`].
    pub fn begin_run(&self) -> RunDecision {
        self.transition(|state| Some(begin_run(state))).unwrap_or(RunDecision::Requeue)
    }

    /// The handler returned.
    pub fn end_run(&self) {
        let _ = self.transition(|state| Some((end_run(state), ())));
    }

    /// `tasklet_disable_nosync`: one more disable level, without waiting for
    /// a handler that runs now. Returns `false` (and changes nothing) if
    /// the count would overflow.
    pub fn disable_nosync(&self) -> bool {
        self.transition(|state| disable(state).map(|next| (next, ()))).is_some()
    }

    /// `tasklet_disable`: one more level, then waits (calling `wait` between
    /// looks) until the handler is not running. No run starts while the
    /// count is above zero, so on return none runs until the last enable.
    pub fn disable(&self, mut wait: impl FnMut()) -> bool {
        if !self.disable_nosync() {
            return false;
        }
        while self.load().is_running() {
            wait();
        }
        true
    }

    /// `tasklet_enable`: one level less. `Some(true)` when a run requested
    /// while disabled must now be queued; `None` if it was not disabled.
    pub fn enable(&self) -> Option<bool> {
        self.transition(enable)
    }

    /// Drops a parked tasklet's pending run (for kill); whether it did.
    pub fn unpark(&self) -> bool {
        self.transition(|state| unpark(state).map(|next| (next, ()))).is_some()
    }

    /// Claims the tasklet for kill; `false` while it is scheduled.
    pub fn begin_kill(&self) -> bool {
        self.transition(|state| begin_kill(state).map(|next| (next, ()))).is_some()
    }

    /// Ends a kill: schedulable again.
    pub fn end_kill(&self) {
        let _ = self.transition(|state| Some((end_kill(state), ())));
    }
}

/// Bit: scheduled (on a queue, or parked because disabled).
pub const SCHEDULED: u32 = 1 << 0;
/// Bit: the handler runs on some CPU.
pub const RUNNING: u32 = 1 << 1;
/// Bit: parked off the queue because it was disabled when its turn came.
pub const PARKED: u32 = 1 << 2;
/// Bit: `kill` holds the tasklet: scheduling is refused until it ends.
pub const KILLING: u32 = 1 << 3;
/// Bits 8.. hold the disable count.
const COUNT_SHIFT: u32 = 8;
const COUNT_ONE: u32 = 1 << COUNT_SHIFT;

/// A decoded state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskletState(pub u32);

impl TaskletState {
    pub const IDLE: TaskletState = TaskletState(0);

    pub fn is_scheduled(self) -> bool {
        self.0 & SCHEDULED != 0
    }

    pub fn is_running(self) -> bool {
        self.0 & RUNNING != 0
    }

    pub fn is_parked(self) -> bool {
        self.0 & PARKED != 0
    }

    pub fn is_killing(self) -> bool {
        self.0 & KILLING != 0
    }

    /// The disable count.
    pub fn disable_count(self) -> u32 {
        self.0 >> COUNT_SHIFT
    }
}

/// What scheduling did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleOutcome {
    /// Newly scheduled: put it on a queue and raise the softirq.
    Queue,
    /// Newly scheduled while disabled: it stays parked until enabled.
    Park,
    /// Already scheduled (coalesced), or being killed: nothing to do.
    Nothing,
}

/// `tasklet_schedule`: returns the new word and what to do.
pub fn schedule(state: TaskletState) -> (TaskletState, ScheduleOutcome) {
    if state.is_scheduled() || state.is_killing() {
        return (state, ScheduleOutcome::Nothing);
    }
    if state.disable_count() > 0 {
        return (TaskletState(state.0 | SCHEDULED | PARKED), ScheduleOutcome::Park);
    }
    (TaskletState(state.0 | SCHEDULED), ScheduleOutcome::Queue)
}

/// What the softirq should do with a tasklet it took off the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunDecision {
    /// Run the handler now (SCHED cleared, RUN set).
    Run,
    /// It runs on another CPU: put it back on the queue for later.
    Requeue,
    /// It is disabled: park it until enabled.
    Park,
}

/// Taking a queued tasklet for running.
pub fn begin_run(state: TaskletState) -> (TaskletState, RunDecision) {
    if state.is_running() {
        return (state, RunDecision::Requeue);
    }
    if state.disable_count() > 0 {
        return (TaskletState(state.0 | PARKED), RunDecision::Park);
    }
    (TaskletState((state.0 & !SCHEDULED) | RUNNING), RunDecision::Run)
}

/// After the handler returned.
pub fn end_run(state: TaskletState) -> TaskletState {
    TaskletState(state.0 & !RUNNING)
}

/// `tasklet_disable`: one more level. Returns `None` on overflow.
pub fn disable(state: TaskletState) -> Option<TaskletState> {
    state.0.checked_add(COUNT_ONE).map(TaskletState)
}

/// `tasklet_enable`: one level less. Returns the new word and whether the
/// tasklet must now be queued (it was parked and the count reached zero);
/// `None` if it was not disabled.
pub fn enable(state: TaskletState) -> Option<(TaskletState, bool)> {
    if state.disable_count() == 0 {
        return None;
    }
    let lowered = TaskletState(state.0 - COUNT_ONE);
    if lowered.disable_count() == 0 && lowered.is_parked() {
        return Some((TaskletState(lowered.0 & !PARKED), true));
    }
    Some((lowered, false))
}

/// `tasklet_kill`, first step: claim the tasklet so it cannot be scheduled
/// again. Succeeds only when it is not scheduled (the caller waits for a
/// scheduled one to run first, or takes a parked one off with [`unpark`]).
pub fn begin_kill(state: TaskletState) -> Option<TaskletState> {
    (!state.is_scheduled() && !state.is_killing()).then_some(TaskletState(state.0 | KILLING))
}

/// Drops a parked (disabled, scheduled) tasklet's pending run, for kill.
pub fn unpark(state: TaskletState) -> Option<TaskletState> {
    state.is_parked().then_some(TaskletState(state.0 & !(PARKED | SCHEDULED)))
}

/// `tasklet_kill`, last step (once not running): schedulable again.
pub fn end_kill(state: TaskletState) -> TaskletState {
    TaskletState(state.0 & !KILLING)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test scaffolding: a failure is a test failure")]
mod tests {
    use super::*;

    /// Applies a sequence of operations, tracing what a kernel would do.
    #[test]
    fn three_schedules_before_a_run_give_one_run() {
        let mut state = TaskletState::IDLE;
        let mut queued = 0;
        for _ in 0..3 {
            let (next, outcome) = schedule(state);
            state = next;
            if outcome == ScheduleOutcome::Queue {
                queued += 1;
            }
        }
        assert_eq!(queued, 1);
        let (running, decision) = begin_run(state);
        assert_eq!(decision, RunDecision::Run);
        assert!(!running.is_scheduled() && running.is_running());
        assert_eq!(end_run(running), TaskletState::IDLE);
    }

    #[test]
    fn a_running_tasklet_can_be_scheduled_again_and_is_not_run_twice_at_once() {
        let (state, _) = schedule(TaskletState::IDLE);
        let (running, _) = begin_run(state);
        // Its handler (or another CPU) schedules it again: queued anew.
        let (rescheduled, outcome) = schedule(running);
        assert_eq!(outcome, ScheduleOutcome::Queue);
        // Another CPU picks it up while the first still runs it: requeue.
        let (same, decision) = begin_run(rescheduled);
        assert_eq!(decision, RunDecision::Requeue);
        assert_eq!(same, rescheduled);
        // After the first run ends it runs again.
        let (second, decision) = begin_run(end_run(rescheduled));
        assert_eq!(decision, RunDecision::Run);
        assert_eq!(end_run(second), TaskletState::IDLE);
    }

    #[test]
    fn disable_nests_and_the_pending_run_happens_once_after_the_last_enable() {
        let disabled_twice = disable(disable(TaskletState::IDLE).unwrap()).unwrap();
        assert_eq!(disabled_twice.disable_count(), 2);
        let (parked, outcome) = schedule(disabled_twice);
        assert_eq!(outcome, ScheduleOutcome::Park);
        let (again, outcome) = schedule(parked);
        assert_eq!(outcome, ScheduleOutcome::Nothing, "coalesced while disabled");
        let (once, queue) = enable(again).unwrap();
        assert!(!queue, "still disabled once");
        let (zero, queue) = enable(once).unwrap();
        assert!(queue, "last enable queues the pending run");
        assert!(zero.is_scheduled() && !zero.is_parked());
        assert_eq!(begin_run(zero).1, RunDecision::Run);
        assert_eq!(enable(TaskletState::IDLE), None, "enable without disable");
    }

    #[test]
    fn queued_tasklet_disabled_before_its_turn_is_parked() {
        let (queued, _) = schedule(TaskletState::IDLE);
        let disabled = disable(queued).unwrap();
        let (parked, decision) = begin_run(disabled);
        assert_eq!(decision, RunDecision::Park);
        let (enabled, queue) = enable(parked).unwrap();
        assert!(queue);
        assert_eq!(begin_run(enabled).1, RunDecision::Run);
    }

    #[test]
    fn kill_refuses_new_schedules_until_done() {
        let (scheduled, _) = schedule(TaskletState::IDLE);
        assert_eq!(begin_kill(scheduled), None, "must wait for the pending run");
        let (running, _) = begin_run(scheduled);
        let killing = begin_kill(running).unwrap();
        assert_eq!(schedule(killing).1, ScheduleOutcome::Nothing);
        let done = end_kill(end_run(killing));
        assert_eq!(done, TaskletState::IDLE);
        assert_eq!(schedule(done).1, ScheduleOutcome::Queue);
        let parked = schedule(disable(TaskletState::IDLE).unwrap()).0;
        let dropped = unpark(parked).unwrap();
        assert!(!dropped.is_scheduled());
        assert!(begin_kill(dropped).is_some());
    }
}
