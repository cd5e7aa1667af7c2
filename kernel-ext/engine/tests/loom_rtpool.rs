//! rt-pool request slots (issue 11, defect 8): "a reused request slot
//! delivers each result to its own requester and wakes that requester".
//!
//! Thread A has filed a request and is cancelled; thread B files a request in
//! the same (only) slot once it is free; the allocator tasklet serves the
//! slot concurrently. A result is an allocation the size of the request it
//! was made for. After the threads end, the tasklet runs once more (B's
//! `hi_schedule` guarantees that run). Then: B holds a result made for its
//! own size and was woken; every result made was delivered to its requester
//! or disposed of exactly once. Built only under `--cfg loom`.
#![cfg(loom)]

use loom::sync::{Arc, Mutex};
use rtedge_engine::rtpool::{CancelOutcome, Completion, RequestSlots};

const THREAD_A: u64 = 1;
const THREAD_B: u64 = 2;
const SIZE_A: u64 = 10;
const SIZE_B: u64 = 20;

/// What the tasklet did: threads it woke, results it disposed of.
#[derive(Default)]
struct Served {
    made: Vec<u64>,
    woken: Vec<u64>,
    disposed: Vec<u64>,
}

/// One run of the allocator tasklet over every slot.
fn serve(slots: &RequestSlots<1>, served: &Mutex<Served>) {
    if let Some(claim) = slots.claim(0) {
        // The "buffer" is named after the size it was made for.
        let result = claim.size;
        served.lock().expect("not poisoned").made.push(result);
        match slots.complete(claim, result) {
            Completion::Delivered { thread } => served.lock().expect("not poisoned").woken.push(thread),
            Completion::Abandoned { result } => served.lock().expect("not poisoned").disposed.push(result),
        }
    }
}

#[test]
fn reused_slot_delivers_to_its_own_requester() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let slots = Arc::new(RequestSlots::<1>::new());
        let served = Arc::new(Mutex::new(Served::default()));

        // A's request is filed before B comes along.
        let ticket = slots.submit(THREAD_A, SIZE_A).expect("the slot starts free");
        let a_slots = slots.clone();
        let a = loom::thread::spawn(move || {
            // Cancelled while waiting.
            match a_slots.cancel(ticket) {
                CancelOutcome::Completed { result } => Some(result),
                CancelOutcome::Withdrawn | CancelOutcome::Abandoned => None,
            }
        });

        let b_slots = slots.clone();
        let b = loom::thread::spawn(move || {
            loop {
                if let Some(ticket) = b_slots.submit(THREAD_B, SIZE_B) {
                    return ticket;
                }
                loom::thread::yield_now();
            }
        });

        let t_slots = slots.clone();
        let t_served = served.clone();
        let tasklet = loom::thread::spawn(move || serve(&t_slots, &t_served));

        let a_disposed = a.join().expect("the thread ends");
        let b_ticket = b.join().expect("the thread ends");
        tasklet.join().expect("the thread ends");
        // The run B's hi_schedule guarantees.
        serve(&slots, &served);

        let b_result = slots.poll(b_ticket);
        let served = served.lock().expect("not poisoned");
        assert_eq!(b_result, Some(SIZE_B), "B must receive the buffer made for its own request");
        assert!(served.woken.contains(&THREAD_B), "B's wake-up was lost (woken: {:?})", served.woken);
        // Conservation: each result made reaches its requester or is
        // disposed of, exactly once.
        let mut accounted: Vec<u64> = served.disposed.clone();
        accounted.extend(a_disposed);
        accounted.extend(b_result);
        accounted.sort_unstable();
        let mut made = served.made.clone();
        made.sort_unstable();
        assert_eq!(accounted, made, "every buffer is delivered or freed exactly once");
    });
}
