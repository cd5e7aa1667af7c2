//! The work item state machine for workqueues: pure transitions on a state
//! word the kernel applies with compare-and-swap.
//!
//! Queueing a pending item returns false and does not queue it twice; an
//! item being cancelled refuses to be queued, so `cancel_work_sync` can
//! wait for a running handler that re-queues itself and still return with
//! the item idle.

/// Bit: on a worker's queue.
pub const PENDING: u32 = 1 << 0;
/// Bit: the handler runs.
pub const RUNNING: u32 = 1 << 1;
/// Bit: a cancel is in progress; queueing is refused.
pub const CANCELING: u32 = 1 << 2;

/// `queue_work`: the new word, and whether to put it on a queue.
pub fn queue(state: u32) -> (u32, bool) {
    if state & (PENDING | CANCELING) != 0 {
        (state, false)
    } else {
        (state | PENDING, true)
    }
}

/// A worker takes it off the queue to run it.
pub fn begin_run(state: u32) -> u32 {
    (state & !PENDING) | RUNNING
}

/// The handler returned.
pub fn end_run(state: u32) -> u32 {
    state & !RUNNING
}

/// `cancel_work_sync`, first step: block new queueing. Returns the new word
/// and whether the item was pending (the caller takes it off its queue and
/// then calls [`dequeued`]).
pub fn begin_cancel(state: u32) -> (u32, bool) {
    (state | CANCELING, state & PENDING != 0)
}

/// The canceller removed the pending item from its queue.
pub fn dequeued(state: u32) -> u32 {
    state & !PENDING
}

/// `cancel_work_sync`, last step, once not running: idle again.
pub fn end_cancel(state: u32) -> u32 {
    state & !CANCELING
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queueing_a_pending_item_is_refused() {
        let (pending, queued) = queue(0);
        assert!(queued);
        let (same, again) = queue(pending);
        assert!(!again);
        assert_eq!(same, pending);
    }

    #[test]
    fn a_running_item_may_be_queued_again() {
        let running = begin_run(queue(0).0);
        assert_eq!(running, RUNNING);
        let (requeued, queued) = queue(running);
        assert!(queued);
        assert_eq!(end_run(requeued), PENDING);
    }

    #[test]
    fn cancel_of_a_self_requeueing_item_leaves_it_idle() {
        // Handler runs; cancel starts; the handler's re-queue is refused.
        let running = begin_run(queue(0).0);
        let (canceling, was_pending) = begin_cancel(running);
        assert!(!was_pending);
        let (still, queued) = queue(canceling);
        assert!(!queued, "re-queue during cancel is refused");
        let finished = end_run(still);
        assert_eq!(end_cancel(finished), 0);
    }

    #[test]
    fn cancel_of_a_pending_item_dequeues_it() {
        let (pending, _) = queue(0);
        let (canceling, was_pending) = begin_cancel(pending);
        assert!(was_pending);
        assert_eq!(end_cancel(dequeued(canceling)), 0);
    }
}
