//! Who runs next on one CPU: the run queue and the preemption rules.
//!
//! Two classes, strictly ordered:
//! - **Real-time**: fixed priorities 0..=63 (63 most urgent), all above every
//!   fair thread. FIFO among equals; a preempted thread goes back to the head
//!   of its level, a thread that yields or wakes goes to the tail (POSIX
//!   SCHED_FIFO). Never time-sliced.
//! - **Fair** (kernel threads): share the CPU by weighted virtual run time,
//!   weights from the nice value (Linux's table, -20..=19), so a CPU-bound
//!   thread cannot starve the others; time slices come from a latency target
//!   divided by weight.
//!
//! The queue holds thread *slots* (small integers the kernel assigns) and
//! never allocates after `new`: enqueueing, picking and removing are safe in
//! interrupt and real-time context.

use alloc::vec;
use alloc::vec::Vec;

/// Number of real-time priority levels.
pub const RT_PRIORITIES: usize = 64;
/// Highest real-time priority.
pub const RT_PRIORITY_MAX: u8 = (RT_PRIORITIES - 1) as u8;
/// Nice range of fair threads.
pub const NICE_MIN: i8 = -20;
pub const NICE_MAX: i8 = 19;
/// Weight of nice 0.
pub const NICE_0_WEIGHT: u32 = 1024;
/// Period in which every runnable fair thread should run once.
pub const SCHED_LATENCY_NS: u64 = 6_000_000;
/// Shortest slice a fair thread gets.
pub const MIN_GRANULARITY_NS: u64 = 750_000;
/// A waking fair thread preempts the running one only if it is this far
/// behind in virtual time (avoids ping-pong).
pub const WAKEUP_GRANULARITY_NS: u64 = 1_000_000;

/// A thread slot (index into the kernel's thread table).
pub type Slot = u16;
const NIL: Slot = Slot::MAX;

/// Linux's nice-to-weight table: each step is about 10% of CPU.
const WEIGHTS: [u32; 40] = [
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916, 9548, 7620, 6100, 4904, 3906, 3121, 2501, 1991, 1586, 1277, 1024,
    820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87, 70, 56, 45, 36, 29, 23, 18, 15,
];

/// The weight of a fair thread with `nice`.
pub fn weight_for_nice(nice: i8) -> u32 {
    let index = (i32::from(nice.clamp(NICE_MIN, NICE_MAX)) - i32::from(NICE_MIN)) as usize;
    WEIGHTS[index]
}

/// Virtual time a fair thread of `weight` accrues for `ns` of real run time.
pub fn virtual_runtime(ns: u64, weight: u32) -> u64 {
    (u128::from(ns) * u128::from(NICE_0_WEIGHT) / u128::from(weight.max(1))) as u64
}

/// The slice of a fair thread of `weight` when the queue's fair threads
/// (including it) weigh `total_weight` and number `runnable`.
pub fn fair_slice_ns(weight: u32, total_weight: u64, runnable: usize) -> u64 {
    let period = SCHED_LATENCY_NS.max(MIN_GRANULARITY_NS * runnable as u64);
    let slice = (u128::from(period) * u128::from(weight) / u128::from(total_weight.max(1))) as u64;
    slice.max(MIN_GRANULARITY_NS)
}

/// What runs, as far as preemption is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Running {
    Realtime { priority: u8 },
    Fair { vruntime: u64 },
    Idle,
}

/// A thread that became ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Candidate {
    Realtime { priority: u8 },
    Fair { vruntime: u64 },
}

/// Whether `candidate` should preempt `current` at once.
pub fn should_preempt(current: Running, candidate: Candidate) -> bool {
    match (current, candidate) {
        (Running::Idle, _) => true,
        (Running::Fair { .. }, Candidate::Realtime { .. }) => true,
        (Running::Realtime { priority: running }, Candidate::Realtime { priority }) => priority > running,
        (Running::Realtime { .. }, Candidate::Fair { .. }) => false,
        (Running::Fair { vruntime: running }, Candidate::Fair { vruntime }) => vruntime.saturating_add(WAKEUP_GRANULARITY_NS) < running,
    }
}

/// Which class a picked thread belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Picked {
    Realtime { slot: Slot, priority: u8 },
    Fair { slot: Slot, vruntime: u64, weight: u32 },
}

impl Picked {
    pub fn slot(self) -> Slot {
        match self {
            Picked::Realtime { slot, .. } | Picked::Fair { slot, .. } => slot,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Link {
    previous: Slot,
    next: Slot,
    priority: u8,
    queued: bool,
}

#[derive(Clone, Copy, Debug)]
struct FairEntry {
    slot: Slot,
    vruntime: u64,
    weight: u32,
}

/// Errors of the run queue (all are kernel bugs, reported rather than
/// panicking in interrupt context).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The slot is beyond the queue's capacity.
    BadSlot,
    /// The slot is already queued.
    AlreadyQueued,
    /// The fair queue is full (cannot happen with capacity == thread slots).
    Full,
}

/// One CPU's runnable threads.
#[derive(Debug)]
pub struct RunQueue {
    links: Vec<Link>,
    heads: [Slot; RT_PRIORITIES],
    tails: [Slot; RT_PRIORITIES],
    bitmap: u64,
    realtime_count: usize,
    fair: Vec<FairEntry>,
    fair_weight: u64,
    min_vruntime: u64,
}

impl RunQueue {
    /// A queue able to hold slots `0..capacity`. Allocates; nothing after does.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.min(usize::from(NIL));
        Self {
            links: vec![Link { previous: NIL, next: NIL, priority: 0, queued: false }; capacity],
            heads: [NIL; RT_PRIORITIES],
            tails: [NIL; RT_PRIORITIES],
            bitmap: 0,
            realtime_count: 0,
            fair: Vec::with_capacity(capacity),
            fair_weight: 0,
            min_vruntime: 0,
        }
    }

    fn link(&mut self, slot: Slot) -> Result<&mut Link, QueueError> {
        self.links.get_mut(usize::from(slot)).ok_or(QueueError::BadSlot)
    }

    fn is_queued(&self, slot: Slot) -> bool {
        self.links.get(usize::from(slot)).is_some_and(|link| link.queued) || self.fair.iter().any(|entry| entry.slot == slot)
    }

    /// Queues a real-time thread at `priority`; at the head of its level if
    /// it was preempted, at the tail otherwise.
    pub fn enqueue_realtime(&mut self, slot: Slot, priority: u8, at_head: bool) -> Result<(), QueueError> {
        if self.is_queued(slot) {
            return Err(QueueError::AlreadyQueued);
        }
        let priority = priority.min(RT_PRIORITY_MAX);
        let level = usize::from(priority);
        let (head, tail) = (self.heads[level], self.tails[level]);
        {
            let link = self.link(slot)?;
            link.priority = priority;
            link.queued = true;
            if at_head {
                link.previous = NIL;
                link.next = head;
            } else {
                link.previous = tail;
                link.next = NIL;
            }
        }
        if at_head {
            if head != NIL {
                self.links[usize::from(head)].previous = slot;
            } else {
                self.tails[level] = slot;
            }
            self.heads[level] = slot;
        } else {
            if tail != NIL {
                self.links[usize::from(tail)].next = slot;
            } else {
                self.heads[level] = slot;
            }
            self.tails[level] = slot;
        }
        self.bitmap |= 1 << level;
        self.realtime_count += 1;
        Ok(())
    }

    /// Queues a fair thread. A thread that slept long is placed no further
    /// back than `min_vruntime - SCHED_LATENCY/2`, so sleeping earns a little
    /// credit but never a monopoly. Returns the vruntime it was queued with.
    pub fn enqueue_fair(&mut self, slot: Slot, vruntime: u64, weight: u32, waking: bool) -> Result<u64, QueueError> {
        if self.is_queued(slot) {
            return Err(QueueError::AlreadyQueued);
        }
        if usize::from(slot) >= self.links.len() {
            return Err(QueueError::BadSlot);
        }
        if self.fair.len() == self.fair.capacity() {
            return Err(QueueError::Full);
        }
        let floor = if waking { self.min_vruntime.saturating_sub(SCHED_LATENCY_NS / 2) } else { self.min_vruntime };
        let vruntime = vruntime.max(floor);
        self.fair.push(FairEntry { slot, vruntime, weight });
        self.fair_weight += u64::from(weight);
        Ok(vruntime)
    }

    /// Removes `slot` wherever it is queued. Returns whether it was.
    pub fn remove(&mut self, slot: Slot) -> bool {
        if let Some(position) = self.fair.iter().position(|entry| entry.slot == slot) {
            let entry = self.fair.remove(position);
            self.fair_weight -= u64::from(entry.weight);
            return true;
        }
        let Some(link) = self.links.get(usize::from(slot)).copied() else { return false };
        if !link.queued {
            return false;
        }
        let level = usize::from(link.priority);
        if link.previous != NIL {
            self.links[usize::from(link.previous)].next = link.next;
        } else {
            self.heads[level] = link.next;
        }
        if link.next != NIL {
            self.links[usize::from(link.next)].previous = link.previous;
        } else {
            self.tails[level] = link.previous;
        }
        if self.heads[level] == NIL {
            self.bitmap &= !(1 << level);
        }
        self.links[usize::from(slot)] = Link { previous: NIL, next: NIL, priority: 0, queued: false };
        self.realtime_count -= 1;
        true
    }

    /// The priority of the most urgent queued real-time thread.
    pub fn best_realtime_priority(&self) -> Option<u8> {
        (self.bitmap != 0).then(|| (63 - self.bitmap.leading_zeros()) as u8)
    }

    /// The smallest vruntime among queued fair threads.
    pub fn best_fair_vruntime(&self) -> Option<u64> {
        self.fair.iter().map(|entry| entry.vruntime).min()
    }

    /// The best queued thread as a preemption candidate.
    pub fn best_candidate(&self) -> Option<Candidate> {
        if let Some(priority) = self.best_realtime_priority() {
            return Some(Candidate::Realtime { priority });
        }
        self.best_fair_vruntime().map(|vruntime| Candidate::Fair { vruntime })
    }

    /// Takes the thread that should run next: the head of the highest
    /// real-time level, else the fair thread with the least vruntime (the
    /// earliest queued among equals).
    pub fn pick_next(&mut self) -> Option<Picked> {
        if let Some(priority) = self.best_realtime_priority() {
            let slot = self.heads[usize::from(priority)];
            self.remove(slot);
            return Some(Picked::Realtime { slot, priority });
        }
        let position = self.fair.iter().enumerate().min_by_key(|(index, entry)| (entry.vruntime, *index)).map(|(index, _)| index)?;
        // Keep arrival order among the rest: remove without swapping.
        let entry = self.fair.remove(position);
        self.fair_weight -= u64::from(entry.weight);
        self.min_vruntime = self.min_vruntime.max(entry.vruntime);
        Some(Picked::Fair { slot: entry.slot, vruntime: entry.vruntime, weight: entry.weight })
    }

    /// Advances `min_vruntime` while a fair thread with `running_vruntime` runs.
    pub fn observe_running(&mut self, running_vruntime: u64) {
        let floor = self.best_fair_vruntime().map_or(running_vruntime, |best| best.min(running_vruntime));
        self.min_vruntime = self.min_vruntime.max(floor);
    }

    pub fn min_vruntime(&self) -> u64 {
        self.min_vruntime
    }

    pub fn realtime_len(&self) -> usize {
        self.realtime_count
    }

    pub fn fair_len(&self) -> usize {
        self.fair.len()
    }

    /// Total weight of queued fair threads.
    pub fn fair_weight(&self) -> u64 {
        self.fair_weight
    }

    pub fn is_empty(&self) -> bool {
        self.realtime_count == 0 && self.fair.is_empty()
    }

    /// Queued slots of one real-time level, head first (for tests and lists).
    pub fn realtime_level(&self, priority: u8) -> impl Iterator<Item = Slot> + '_ {
        let mut slot = self.heads[usize::from(priority.min(RT_PRIORITY_MAX))];
        core::iter::from_fn(move || {
            if slot == NIL {
                return None;
            }
            let current = slot;
            slot = self.links[usize::from(slot)].next;
            Some(current)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test scaffolding: a failure is a test failure")]
mod tests {
    use super::*;

    fn picks(queue: &mut RunQueue) -> Vec<Slot> {
        core::iter::from_fn(|| queue.pick_next().map(Picked::slot)).collect()
    }

    #[test]
    fn realtime_runs_by_priority_then_fifo() {
        let mut queue = RunQueue::new(16);
        queue.enqueue_realtime(1, 10, false).unwrap();
        queue.enqueue_realtime(2, 20, false).unwrap();
        queue.enqueue_realtime(3, 10, false).unwrap();
        queue.enqueue_realtime(4, 20, false).unwrap();
        queue.enqueue_fair(5, 0, NICE_0_WEIGHT, false).unwrap();
        assert_eq!(picks(&mut queue), vec![2, 4, 1, 3, 5]);
    }

    #[test]
    fn preempted_thread_goes_back_to_the_head_of_its_level() {
        let mut queue = RunQueue::new(8);
        queue.enqueue_realtime(1, 5, false).unwrap();
        queue.enqueue_realtime(2, 5, true).unwrap();
        assert_eq!(picks(&mut queue), vec![2, 1]);
    }

    #[test]
    fn remove_unlinks_from_the_middle_of_a_level() {
        let mut queue = RunQueue::new(8);
        for slot in 1..=3 {
            queue.enqueue_realtime(slot, 7, false).unwrap();
        }
        assert!(queue.remove(2));
        assert!(!queue.remove(2));
        assert_eq!(queue.realtime_level(7).collect::<Vec<_>>(), vec![1, 3]);
        assert!(queue.remove(1));
        assert!(queue.remove(3));
        assert_eq!(queue.best_realtime_priority(), None);
        assert!(queue.is_empty());
    }

    #[test]
    fn double_enqueue_and_bad_slots_are_refused() {
        let mut queue = RunQueue::new(4);
        queue.enqueue_realtime(1, 1, false).unwrap();
        assert_eq!(queue.enqueue_realtime(1, 1, false), Err(QueueError::AlreadyQueued));
        assert_eq!(queue.enqueue_fair(1, 0, 1024, false), Err(QueueError::AlreadyQueued));
        assert_eq!(queue.enqueue_realtime(9, 1, false), Err(QueueError::BadSlot));
        assert_eq!(queue.enqueue_fair(9, 0, 1024, false), Err(QueueError::BadSlot));
    }

    #[test]
    fn fair_picks_least_vruntime_and_keeps_arrival_order_for_ties() {
        let mut queue = RunQueue::new(8);
        queue.enqueue_fair(1, 300, 1024, false).unwrap();
        queue.enqueue_fair(2, 100, 1024, false).unwrap();
        queue.enqueue_fair(3, 100, 1024, false).unwrap();
        assert_eq!(picks(&mut queue), vec![2, 3, 1]);
    }

    #[test]
    fn waking_thread_is_placed_near_min_vruntime() {
        let mut queue = RunQueue::new(8);
        queue.enqueue_fair(1, 50_000_000, 1024, false).unwrap();
        queue.pick_next();
        assert_eq!(queue.min_vruntime(), 50_000_000);
        let placed = queue.enqueue_fair(2, 0, 1024, true).unwrap();
        assert_eq!(placed, 50_000_000 - SCHED_LATENCY_NS / 2);
    }

    #[test]
    fn preemption_rules() {
        use Candidate as C;
        use Running as R;
        assert!(should_preempt(R::Idle, C::Fair { vruntime: 0 }));
        assert!(should_preempt(R::Fair { vruntime: 0 }, C::Realtime { priority: 0 }));
        assert!(should_preempt(R::Realtime { priority: 3 }, C::Realtime { priority: 4 }));
        assert!(!should_preempt(R::Realtime { priority: 4 }, C::Realtime { priority: 4 }), "FIFO among equals");
        assert!(!should_preempt(R::Realtime { priority: 0 }, C::Fair { vruntime: 0 }));
        assert!(should_preempt(R::Fair { vruntime: 5_000_000 }, C::Fair { vruntime: 1_000_000 }));
        assert!(!should_preempt(R::Fair { vruntime: 1_500_000 }, C::Fair { vruntime: 1_000_000 }));
    }

    #[test]
    fn nice_weights_and_slices() {
        assert_eq!(weight_for_nice(0), 1024);
        assert_eq!(weight_for_nice(-20), 88761);
        assert_eq!(weight_for_nice(19), 15);
        assert_eq!(weight_for_nice(100), 15);
        assert_eq!(virtual_runtime(1000, 1024), 1000);
        assert_eq!(virtual_runtime(1000, 2048), 500);
        assert_eq!(fair_slice_ns(1024, 2048, 2), 3_000_000);
        assert_eq!(fair_slice_ns(15, 88761 + 15, 2), MIN_GRANULARITY_NS);
        assert_eq!(fair_slice_ns(1024, 1024 * 10, 10), 750_000);
    }

    /// A host simulation of one CPU with a fake clock: three fair threads of
    /// different nice values, all CPU-bound, share the CPU in proportion to
    /// their weights, and none starves.
    #[test]
    fn cpu_bound_fair_threads_share_by_weight() {
        let mut queue = RunQueue::new(8);
        let nice = [0i8, 0, 5];
        let mut vruntime = [0u64; 3];
        let mut ran = [0u64; 3];
        for (slot, &n) in nice.iter().enumerate() {
            queue.enqueue_fair(slot as Slot, 0, weight_for_nice(n), false).unwrap();
        }
        let mut now = 0u64;
        while now < 2_000_000_000 {
            let Picked::Fair { slot, vruntime: v, weight } = queue.pick_next().unwrap() else { panic!("only fair threads") };
            let runnable = queue.fair_len() + 1;
            let slice = fair_slice_ns(weight, queue.fair_weight() + u64::from(weight), runnable);
            let index = usize::from(slot);
            ran[index] += slice;
            vruntime[index] = v + virtual_runtime(slice, weight);
            now += slice;
            queue.enqueue_fair(slot, vruntime[index], weight, false).unwrap();
        }
        // nice 0 : nice 0 : nice 5 = 1024 : 1024 : 335
        let total: u64 = ran.iter().sum();
        let share = |i: usize| ran[i] as f64 / total as f64;
        let expected_5 = 335.0 / (1024.0 + 1024.0 + 335.0);
        assert!((share(0) - share(1)).abs() < 0.01, "equal nice must get equal time: {ran:?}");
        assert!((share(2) - expected_5).abs() < 0.02, "nice 5 share {} vs {expected_5}", share(2));
        assert!(ran.iter().all(|&t| t > 0));
    }
}
