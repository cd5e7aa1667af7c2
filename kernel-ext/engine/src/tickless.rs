//! What a CPU's one-shot timer must be armed for, tickless: the decision
//! behind the kernel's `clockevent::reprogram`, apart from the APIC.
//!
//! Each write to the timer is an exit to the hypervisor (under QEMU's TCG
//! one that waits for its global lock), so the timer is written only when
//! that changes what it will do. On a CPU whose idle loop polls the clock
//! (`rt_idle=poll`) the poll runs the due alarms while the CPU idles; the
//! timer then only has to interrupt a running thread, by the earliest alarm
//! that preempts it ([`Running`], alarm levels).

use crate::timerqueue::TimerQueue;

/// An alarm's level when nothing more urgent was said: it interrupts a
/// kernel thread, never a real-time one.
pub const LEVEL_ORDINARY: u8 = 1;

/// The level of a real-time thread of `priority` (larger is more urgent):
/// running, it is interrupted only by the alarm of a more urgent one;
/// asleep, its alarm interrupts every thread of a lower level.
pub const fn realtime_level(priority: u8) -> u8 {
    priority.saturating_add(2)
}

/// What a polling CPU runs, for its timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Running {
    /// Its idle loop: the poll runs the due alarms, no timer is needed.
    Idle,
    /// A thread of `level` (0 for a kernel thread, [`realtime_level`] for a
    /// real-time one): the timer must come by the earliest alarm of a
    /// higher level, the only ones that preempt it; the others wait for it
    /// to sleep, when the poll finds them due.
    Thread { level: u8 },
}

/// The deadline the timer must come by, from the CPU's alarms: the
/// earliest of all on a CPU that does not poll (`polling` is `None`), the
/// earliest that preempts what runs on one that does. `level` reads an
/// alarm's level.
pub fn needed<T>(alarms: &TimerQueue<T>, polling: Option<Running>, level: impl Fn(&T) -> u8) -> Option<u64> {
    match polling {
        Some(Running::Idle) => None,
        Some(Running::Thread { level: running }) if running > 0 => alarms.next_deadline_where(|alarm| level(alarm) > running),
        Some(Running::Thread { .. }) | None => alarms.next_deadline(),
    }
}

/// What to do with the timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Leave it as it is.
    Nothing,
    /// Arm it for this deadline.
    Arm(u64),
    /// Disarm it.
    Disarm,
}

/// The write, and what the timer is armed for afterwards (0: nothing, or
/// only a deadline that has passed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub write: Write,
    pub armed: u64,
}

/// Decides the write for a timer armed for `armed` (0: disarmed or fired;
/// the interrupt handler says fired by passing 0), given the deadline it
/// must come by (`needed`), at clock time `now`. Deadlines are clock ns;
/// 0 is taken as 1 (0 means "nothing armed").
///
/// - Not polling: armed exactly for `needed`. An unchanged deadline is not
///   written again; with nothing needed, a deadline that has passed is left
///   (its interrupt, if still to come, finds nothing due) and a future one
///   disarmed.
/// - Polling: never disarmed; an armed deadline no later than `needed`
///   serves (an early interrupt finds nothing due and re-arms), so the
///   timer is written only when it would come too late.
pub fn decide(polling: bool, needed: Option<u64>, armed: u64, now: u64) -> Decision {
    let needed = needed.map(|deadline| deadline.max(1));
    if polling {
        return match needed {
            Some(deadline) if armed == 0 || armed > deadline => Decision { write: Write::Arm(deadline), armed: deadline },
            _ => Decision { write: Write::Nothing, armed },
        };
    }
    match needed {
        Some(deadline) if deadline == armed => Decision { write: Write::Nothing, armed },
        Some(deadline) => Decision { write: Write::Arm(deadline), armed: deadline },
        None if armed == 0 || armed <= now => Decision { write: Write::Nothing, armed: 0 },
        None => Decision { write: Write::Disarm, armed: 0 },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test scaffolding: a failure is a test failure")]
mod tests {
    use super::*;

    const fn nothing(armed: u64) -> Decision {
        Decision { write: Write::Nothing, armed }
    }

    const fn arm(deadline: u64) -> Decision {
        Decision { write: Write::Arm(deadline), armed: deadline }
    }

    #[test]
    fn a_cpu_that_halts_is_armed_exactly_for_its_earliest_alarm() {
        assert_eq!(decide(false, Some(500), 0, 100), arm(500), "nothing armed");
        assert_eq!(decide(false, Some(500), 500, 100), nothing(500), "already armed for it: no write");
        assert_eq!(decide(false, Some(400), 500, 100), arm(400), "earlier");
        assert_eq!(decide(false, Some(600), 500, 100), arm(600), "later: an early interrupt would be wasted");
        assert_eq!(decide(false, None, 500, 100), Decision { write: Write::Disarm, armed: 0 }, "nothing left, still to fire");
        assert_eq!(decide(false, None, 50, 100), nothing(0), "nothing left, already fired");
        assert_eq!(decide(false, None, 0, 100), nothing(0));
        assert_eq!(decide(false, Some(0), 0, 100), arm(1), "deadline 0 is 1, not 'nothing'");
    }

    #[test]
    fn after_the_interrupt_the_same_deadline_is_written_again() {
        // The handler passes armed = 0: a one-shot that fired early (before
        // its deadline by the clock) must be re-armed, not taken as armed.
        assert_eq!(decide(false, Some(500), 0, 499), arm(500));
        assert_eq!(decide(true, Some(500), 0, 499), arm(500));
    }

    #[test]
    fn a_polling_cpu_is_written_only_when_the_timer_would_come_too_late() {
        assert_eq!(decide(true, None, 500, 100), nothing(500), "never disarmed");
        assert_eq!(decide(true, Some(600), 500, 100), nothing(500), "an earlier deadline serves");
        assert_eq!(decide(true, Some(500), 500, 100), nothing(500));
        assert_eq!(decide(true, Some(400), 500, 100), arm(400));
        assert_eq!(decide(true, Some(400), 0, 100), arm(400));
    }

    #[test]
    fn a_running_thread_needs_the_timer_only_for_alarms_that_preempt_it() {
        let mut alarms = TimerQueue::new();
        let ordinary = alarms.register(LEVEL_ORDINARY);
        let low = alarms.register(realtime_level(1));
        let high = alarms.register(realtime_level(10));
        alarms.arm(ordinary, 100);
        alarms.arm(low, 200);
        alarms.arm(high, 300);
        let level = |level: &u8| *level;
        assert_eq!(needed(&alarms, None, level), Some(100), "a CPU that halts: every alarm");
        assert_eq!(needed(&alarms, Some(Running::Idle), level), None, "idle: the poll");
        assert_eq!(needed(&alarms, Some(Running::Thread { level: 0 }), level), Some(100), "a kernel thread: every alarm");
        assert_eq!(needed(&alarms, Some(Running::Thread { level: realtime_level(1) }), level), Some(300), "only the more urgent");
        assert_eq!(needed(&alarms, Some(Running::Thread { level: realtime_level(10) }), level), None, "equal priority waits");
        assert_eq!(needed(&alarms, Some(Running::Thread { level: realtime_level(5) }), level), Some(300));
    }
}
