//! A queue of timers ordered by deadline: an indexed binary min-heap with
//! stable handles. Registering a timer may allocate (do it at creation, in
//! process context); arming, cancelling and expiring never allocate, so they
//! are safe from real-time threads and interrupt context.
//!
//! Equal deadlines expire in the order they were armed.

use alloc::vec::Vec;

/// A handle to a registered timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(u32);

impl TimerId {
    /// The handle's index (stable while registered).
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// Rebuilds a handle from [`index`](Self::index) (for callers that pack
    /// handles into atomics). A stale index is harmless: queue operations on
    /// an unregistered slot do nothing.
    pub fn from_index(index: usize) -> TimerId {
        TimerId(index as u32)
    }
}

const NOT_QUEUED: u32 = u32::MAX;

#[derive(Debug)]
struct Slot<T> {
    deadline: u64,
    sequence: u64,
    heap_position: u32,
    data: Option<T>,
}

/// Timers keyed by deadline, each carrying `T`.
#[derive(Debug)]
pub struct TimerQueue<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    heap: Vec<u32>,
    next_sequence: u64,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerQueue<T> {
    pub const fn new() -> Self {
        Self { slots: Vec::new(), free: Vec::new(), heap: Vec::new(), next_sequence: 0 }
    }

    /// Registers a disarmed timer carrying `data`. May allocate.
    pub fn register(&mut self, data: T) -> TimerId {
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index as usize] = Slot { deadline: 0, sequence: 0, heap_position: NOT_QUEUED, data: Some(data) };
                index
            }
            None => {
                self.slots.push(Slot { deadline: 0, sequence: 0, heap_position: NOT_QUEUED, data: Some(data) });
                (self.slots.len() - 1) as u32
            }
        };
        // Keep room so that arming and unregistering never allocate.
        self.heap.reserve(self.slots.len().saturating_sub(self.heap.len()));
        self.free.reserve(self.slots.len().saturating_sub(self.free.len()));
        TimerId(index)
    }

    /// Removes a timer (cancelling it) and returns its data.
    pub fn unregister(&mut self, id: TimerId) -> Option<T> {
        let data = self.slots.get_mut(id.index())?.data.take()?;
        self.remove_from_heap(id.0);
        self.free.push(id.0);
        Some(data)
    }

    fn live(&self, id: TimerId) -> bool {
        self.slots.get(id.index()).is_some_and(|slot| slot.data.is_some())
    }

    /// The data of a registered timer.
    pub fn data(&self, id: TimerId) -> Option<&T> {
        self.slots.get(id.index())?.data.as_ref()
    }

    /// The data of a registered timer, mutably.
    pub fn data_mut(&mut self, id: TimerId) -> Option<&mut T> {
        self.slots.get_mut(id.index())?.data.as_mut()
    }

    /// Arms (or re-arms) `id` for `deadline`. Returns whether it was armed
    /// before, or `None` if `id` is not registered. Never allocates.
    pub fn arm(&mut self, id: TimerId, deadline: u64) -> Option<bool> {
        if !self.live(id) {
            return None;
        }
        let was_armed = self.remove_from_heap(id.0);
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let slot = &mut self.slots[id.index()];
        slot.deadline = deadline;
        slot.sequence = sequence;
        let position = self.heap.len();
        debug_assert!(self.heap.capacity() > position, "arm must not allocate");
        self.heap.push(id.0);
        self.slots[id.index()].heap_position = position as u32;
        self.sift_up(position);
        Some(was_armed)
    }

    /// Disarms `id`. Returns whether it was armed.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        self.live(id) && self.remove_from_heap(id.0)
    }

    /// Whether `id` is armed.
    pub fn is_armed(&self, id: TimerId) -> bool {
        self.slots.get(id.index()).is_some_and(|slot| slot.data.is_some() && slot.heap_position != NOT_QUEUED)
    }

    /// The deadline `id` is armed for.
    pub fn deadline(&self, id: TimerId) -> Option<u64> {
        self.is_armed(id).then(|| self.slots[id.index()].deadline)
    }

    /// The earliest armed deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.heap.first().map(|&index| self.slots[index as usize].deadline)
    }

    /// The earliest armed deadline among the timers whose data passes
    /// `wanted` (a walk over every armed timer).
    pub fn next_deadline_where(&self, mut wanted: impl FnMut(&T) -> bool) -> Option<u64> {
        self.heap
            .iter()
            .filter_map(|&index| {
                let slot = &self.slots[index as usize];
                slot.data.as_ref().filter(|data| wanted(data)).map(|_| slot.deadline)
            })
            .min()
    }

    /// Number of armed timers.
    pub fn armed_count(&self) -> usize {
        self.heap.len()
    }

    /// Number of registered timers.
    pub fn registered_count(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Disarms and returns the earliest timer due at `now`, with its deadline.
    pub fn pop_expired(&mut self, now: u64) -> Option<(TimerId, u64)> {
        let &first = self.heap.first()?;
        let deadline = self.slots[first as usize].deadline;
        if deadline > now {
            return None;
        }
        self.remove_from_heap(first);
        Some((TimerId(first), deadline))
    }

    fn less(&self, a: u32, b: u32) -> bool {
        let (a, b) = (&self.slots[a as usize], &self.slots[b as usize]);
        (a.deadline, a.sequence) < (b.deadline, b.sequence)
    }

    fn place(&mut self, position: usize, index: u32) {
        self.heap[position] = index;
        self.slots[index as usize].heap_position = position as u32;
    }

    fn sift_up(&mut self, mut position: usize) {
        let index = self.heap[position];
        while position > 0 {
            let parent = (position - 1) / 2;
            let parent_index = self.heap[parent];
            if !self.less(index, parent_index) {
                break;
            }
            self.place(position, parent_index);
            position = parent;
        }
        self.place(position, index);
    }

    fn sift_down(&mut self, mut position: usize) {
        let index = self.heap[position];
        let len = self.heap.len();
        loop {
            let left = 2 * position + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let child = if right < len && self.less(self.heap[right], self.heap[left]) { right } else { left };
            if !self.less(self.heap[child], index) {
                break;
            }
            let child_index = self.heap[child];
            self.place(position, child_index);
            position = child;
        }
        self.place(position, index);
    }

    fn remove_from_heap(&mut self, index: u32) -> bool {
        let position = self.slots[index as usize].heap_position;
        if position == NOT_QUEUED {
            return false;
        }
        let position = position as usize;
        self.slots[index as usize].heap_position = NOT_QUEUED;
        let last = self.heap.len() - 1;
        let moved = self.heap[last];
        self.heap.pop();
        if position != last {
            self.place(position, moved);
            self.sift_down(position);
            let now_at = self.slots[moved as usize].heap_position as usize;
            self.sift_up(now_at);
        }
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test scaffolding: a failure is a test failure")]
mod tests {
    use super::*;

    fn drain(queue: &mut TimerQueue<&'static str>, now: u64) -> Vec<(&'static str, u64)> {
        let mut out = Vec::new();
        while let Some((id, deadline)) = queue.pop_expired(now) {
            out.push((*queue.data(id).unwrap(), deadline));
        }
        out
    }

    #[test]
    fn expires_in_deadline_order_then_arm_order() {
        let mut queue = TimerQueue::new();
        let a = queue.register("a");
        let b = queue.register("b");
        let c = queue.register("c");
        let d = queue.register("d");
        queue.arm(c, 30);
        queue.arm(a, 10);
        queue.arm(d, 10);
        queue.arm(b, 20);
        assert_eq!(queue.next_deadline(), Some(10));
        assert_eq!(drain(&mut queue, 25), vec![("a", 10), ("d", 10), ("b", 20)]);
        assert_eq!(queue.next_deadline(), Some(30));
        assert_eq!(drain(&mut queue, 100), vec![("c", 30)]);
        assert_eq!(queue.next_deadline(), None);
    }

    #[test]
    fn rearm_moves_and_cancel_removes() {
        let mut queue = TimerQueue::new();
        let a = queue.register("a");
        let b = queue.register("b");
        assert_eq!(queue.arm(a, 10), Some(false));
        assert_eq!(queue.arm(b, 20), Some(false));
        assert_eq!(queue.arm(a, 30), Some(true));
        assert_eq!(queue.deadline(a), Some(30));
        assert!(queue.cancel(b));
        assert!(!queue.cancel(b));
        assert!(!queue.is_armed(b));
        assert_eq!(drain(&mut queue, 100), vec![("a", 30)]);
    }

    #[test]
    fn the_earliest_wanted_deadline_skips_the_others() {
        let mut queue = TimerQueue::new();
        let low = queue.register("low");
        let high = queue.register("high");
        let idle = queue.register("high, disarmed");
        queue.arm(low, 10);
        queue.arm(high, 30);
        assert_eq!(queue.next_deadline_where(|name| name.starts_with("high")), Some(30));
        assert_eq!(queue.next_deadline_where(|_| true), Some(10));
        queue.cancel(high);
        assert_eq!(queue.next_deadline_where(|name| name.starts_with("high")), None, "{idle:?} is not armed");
    }

    #[test]
    fn nothing_expires_before_its_deadline() {
        let mut queue = TimerQueue::new();
        let a = queue.register("a");
        queue.arm(a, 50);
        assert_eq!(queue.pop_expired(49), None);
        assert_eq!(queue.pop_expired(50), Some((a, 50)));
    }

    #[test]
    fn unregister_frees_the_handle_for_reuse() {
        let mut queue = TimerQueue::new();
        let a = queue.register("a");
        queue.arm(a, 5);
        assert_eq!(queue.unregister(a), Some("a"));
        assert_eq!(queue.registered_count(), 0);
        assert_eq!(queue.next_deadline(), None);
        assert_eq!(queue.arm(a, 7), None);
        let b = queue.register("b");
        assert_eq!(b, a);
        assert_eq!(queue.data(b), Some(&"b"));
    }

    #[test]
    fn heap_stays_ordered_under_random_operations() {
        // Deterministic xorshift so failures reproduce.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut queue = TimerQueue::new();
        let ids: Vec<_> = (0..64).map(|i| queue.register(i)).collect();
        let mut model: Vec<Option<u64>> = vec![None; 64];
        for _ in 0..20_000 {
            let which = (next() % 64) as usize;
            match next() % 3 {
                0 | 1 => {
                    let deadline = next() % 1000;
                    queue.arm(ids[which], deadline);
                    model[which] = Some(deadline);
                }
                _ => {
                    assert_eq!(queue.cancel(ids[which]), model[which].is_some());
                    model[which] = None;
                }
            }
            let expected = model.iter().flatten().min().copied();
            assert_eq!(queue.next_deadline(), expected);
        }
        let mut last = 0;
        while let Some((id, deadline)) = queue.pop_expired(u64::MAX) {
            assert!(deadline >= last);
            assert_eq!(model[*queue.data(id).unwrap()], Some(deadline));
            last = deadline;
        }
    }
}
