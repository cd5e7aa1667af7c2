//! Typed handler slots in the kernel (issue 14): the rule
//! `handler::removed_handler_never_runs` on real CPUs. An interrupt
//! handler that runs on another CPU when its vector is unregistered has
//! finished when `unregister` returns, and never runs again (engine
//! `handler::HandlerSlot::remove`; loom model `tests/loom_handler.rs`).
//! Needs two CPUs.

use alloc::format;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use rtedge_arch::apic;

use crate::ktest::{Outcome, Test};
use crate::{check, check_eq, cpu_local, thread, time, trap};

pub const TESTS: &[Test] = &[Test { name: "handler::unregister_waits_for_a_handler_running_on_another_cpu", run: unregister_waits }];

/// A vector nothing else uses: between the device pool and the kernel's
/// own vectors (`vectors.rs`).
const TEST_VECTOR: u8 = 0xe8;
/// How long the handler keeps its CPU: far longer than `unregister` takes
/// when it does not wait.
const HANDLER_NS: u64 = 5_000_000;
const SECOND: u64 = 1_000_000_000;

static INSIDE: AtomicBool = AtomicBool::new(false);
static FINISHED: AtomicBool = AtomicBool::new(false);
static RUNS: AtomicU32 = AtomicU32::new(0);

fn slow_handler(_: u8) {
    RUNS.fetch_add(1, Ordering::SeqCst);
    INSIDE.store(true, Ordering::SeqCst);
    time::spin_for_ns(HANDLER_NS);
    FINISHED.store(true, Ordering::SeqCst);
}

fn unregister_waits() -> Outcome {
    let target = 63 - thread::online_mask().leading_zeros();
    let here = crate::context::cpu_index();
    check!(target != here, "the test thread runs on the last cpu {target}");
    let apic_id = cpu_local::get(target as usize).ok_or("no last cpu")?.apic_id();
    INSIDE.store(false, Ordering::SeqCst);
    FINISHED.store(false, Ordering::SeqCst);
    RUNS.store(0, Ordering::SeqCst);
    trap::register(TEST_VECTOR, "test-slow-irq", slow_handler).map_err(|error| format!("{error:?}"))?;
    apic::send_ipi(apic_id, apic::Ipi::Fixed(TEST_VECTOR));
    let give_up = time::now_ns() + SECOND;
    while !INSIDE.load(Ordering::SeqCst) {
        if time::now_ns() >= give_up {
            trap::unregister(TEST_VECTOR);
            return Err(format!("the handler never started on cpu {target}"));
        }
        core::hint::spin_loop();
    }
    trap::unregister(TEST_VECTOR);
    let finished = FINISHED.load(Ordering::SeqCst);
    check!(finished, "unregister returned while the handler still ran on cpu {target}");
    // A later interrupt of the vector finds no handler.
    apic::send_ipi(apic_id, apic::Ipi::Fixed(TEST_VECTOR));
    let _ = thread::sleep_ns(HANDLER_NS);
    check_eq!(RUNS.load(Ordering::SeqCst), 1);
    check!(trap::name(TEST_VECTOR).is_none(), "the vector keeps its name");
    Ok(())
}
