//! The kernel's own tests, run by the ktest image under QEMU and uhyve.
//! Each proves one property with an exact outcome; none asserts on elapsed
//! wall-clock time.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use rtedge_arch::cpu;
use rtedge_arch::paging::PAGE_SIZE;

use crate::ktest::{Outcome, Test};
use crate::{check, check_eq, clockevent, cpu_local, memory, time};

mod bottom_half_rules;
mod deferred;
mod handler_rules;
mod log_pool_rules;
mod logs;
mod rt_rules;
mod smp;
mod threads;
mod workqueue_rules;

/// Nanoseconds, for the tests' deadlines and bounds.
const SECOND: u64 = 1_000_000_000;
const MILLISECOND: u64 = 1_000_000;

/// An error of the kernel's APIs as a test failure's message.
fn error(e: impl core::fmt::Display) -> alloc::string::String {
    alloc::format!("{e}")
}

/// Every group of kernel tests that applies to this machine, in order: the
/// SMP group runs only with more than one CPU online, its three-CPU tests
/// with more than two.
pub fn groups() -> alloc::vec::Vec<&'static [Test]> {
    let mut groups: alloc::vec::Vec<&'static [Test]> = alloc::vec![TESTS, threads::TESTS, deferred::TESTS, rt_rules::TESTS];
    groups.push(workqueue_rules::TESTS);
    groups.push(log_pool_rules::tests());
    groups.push(logs::TESTS);
    if crate::thread::online_mask().count_ones() > 1 {
        groups.push(smp::TESTS);
        groups.push(handler_rules::TESTS);
    }
    if crate::thread::online_mask().count_ones() > 2 {
        groups.push(smp::THREE_CPU_TESTS);
    }
    groups.extend(bottom_half_rules::groups());
    groups
}

/// The foundation's tests: memory, time, console, CPU state.
pub const TESTS: &[Test] = &[
    Test { name: "memory::heap_alloc_and_free_return_to_baseline", run: heap_alloc_and_free },
    Test { name: "memory::heap_large_allocation", run: heap_large_allocation },
    Test { name: "memory::kernel_text_is_read_only_and_executable", run: text_rights },
    Test { name: "memory::kernel_data_is_not_executable", run: data_rights },
    Test { name: "memory::page_zero_is_unmapped", run: page_zero_unmapped },
    Test { name: "memory::boot_stack_guard_is_unmapped", run: boot_stack_guard_unmapped },
    Test { name: "memory::window_stacks_have_guards_and_are_reused", run: window_stacks },
    Test { name: "time::clock_is_monotonic", run: clock_monotonic },
    Test { name: "time::jiffies_derive_from_the_clock", run: jiffies_follow_clock },
    Test { name: "time::apic_timer_fires_after_its_deadline", run: timer_fires },
    Test { name: "time::alarms_fire_in_deadline_order", run: alarms_in_order },
    Test { name: "time::timer_is_tickless_when_idle", run: tickless_when_idle },
    Test { name: "console::overlong_line_is_truncated_not_lost", run: long_line },
    Test { name: "cpu::fpu_state_is_enabled_without_traps", run: fpu_state },
];

fn heap_alloc_and_free() -> Outcome {
    let before = memory::heap::statistics();
    {
        let boxed = Box::new([7u8; 1000]);
        let mut vector: Vec<u64> = Vec::with_capacity(100);
        vector.extend(0..100);
        let during = memory::heap::statistics();
        check!(
            during.allocated_bytes >= before.allocated_bytes + 1000 + 800,
            "allocated bytes grew by {}",
            during.allocated_bytes - before.allocated_bytes
        );
        check_eq!(boxed[999], 7);
        check_eq!(vector.iter().sum::<u64>(), 4950);
    }
    let after = memory::heap::statistics();
    check_eq!(after.allocated_bytes, before.allocated_bytes);
    check_eq!(after.allocation_count, before.allocation_count);
    Ok(())
}

fn heap_large_allocation() -> Outcome {
    let size = 8 << 20;
    let mut block: Vec<u8> = Vec::new();
    check!(block.try_reserve_exact(size).is_ok(), "8 MiB allocation failed");
    block.resize(size, 0xa5);
    check_eq!(block[size - 1], 0xa5);
    Ok(())
}

fn text_rights() -> Outcome {
    let space = memory::kernel_space().ok_or("no kernel address space")?;
    let address = text_rights as *const () as u64;
    let translation = space.translate(address).ok_or("text not mapped")?;
    check!(translation.executable, "text not executable");
    check!(!translation.writable, "text is writable");
    check_eq!(translation.physical, address);
    let rodata = TESTS.as_ptr() as u64;
    let translation = space.translate(rodata).ok_or("rodata not mapped")?;
    check!(!translation.writable && !translation.executable, "rodata rights wrong: {:?}", translation);
    Ok(())
}

static DATA_PROBE: AtomicU64 = AtomicU64::new(1);

fn data_rights() -> Outcome {
    let space = memory::kernel_space().ok_or("no kernel address space")?;
    let translation = space.translate(&raw const DATA_PROBE as u64).ok_or("data not mapped")?;
    check!(translation.writable && !translation.executable, "data rights wrong: {:?}", translation);
    let heap_block = Box::new(0u64);
    let translation = space.translate(&*heap_block as *const u64 as u64).ok_or("heap not mapped")?;
    check!(translation.writable && !translation.executable, "heap rights wrong: {:?}", translation);
    Ok(())
}

fn page_zero_unmapped() -> Outcome {
    let space = memory::kernel_space().ok_or("no kernel address space")?;
    check!(space.translate(0).is_none(), "page 0 is mapped");
    check!(space.translate(PAGE_SIZE).is_some(), "page 1 is not mapped");
    Ok(())
}

fn boot_stack_guard_unmapped() -> Outcome {
    let space = memory::kernel_space().ok_or("no kernel address space")?;
    let guard = rtedge_arch::boot::boot_stack_guard();
    check!(space.translate(guard).is_none(), "boot stack guard {guard:#x} is mapped");
    check!(space.translate(guard + PAGE_SIZE).is_some(), "boot stack bottom is not mapped");
    Ok(())
}

fn window_stacks() -> Outcome {
    let stack = memory::stacks::allocate(20 * 1024).map_err(|e| alloc::format!("{e}"))?;
    check_eq!(stack.size(), 32 * 1024);
    check!(!memory::stacks::is_mapped(stack.guard_page()), "guard page is mapped");
    check!(memory::stacks::is_mapped(stack.bottom()), "stack bottom not mapped");
    check!(memory::stacks::is_mapped(stack.top() - 8), "stack top not mapped");
    check!(memory::stacks::guard_hit(stack.guard_page() + 100).is_some(), "guard hit not recognised");
    check!(memory::stacks::guard_hit(stack.bottom()).is_none(), "stack bottom taken for guard");
    check_eq!(stack.untouched_bytes(), stack.size());
    let first_bottom = stack.bottom();
    drop(stack);
    let again = memory::stacks::allocate(32 * 1024).map_err(|e| alloc::format!("{e}"))?;
    check_eq!(again.bottom(), first_bottom);
    Ok(())
}

fn clock_monotonic() -> Outcome {
    let mut last = time::now_ns();
    for _ in 0..10_000 {
        let now = time::now_ns();
        check!(now >= last, "clock went back from {last} to {now}");
        last = now;
    }
    check!(time::tsc_hz() > 0, "TSC frequency unknown");
    Ok(())
}

fn jiffies_follow_clock() -> Outcome {
    for _ in 0..1000 {
        let before = time::now_ns();
        let jiffies = time::jiffies();
        let after = time::now_ns();
        check!(before / 1_000_000 <= jiffies && jiffies <= after / 1_000_000, "jiffies {jiffies} outside [{before}, {after}] ns");
    }
    check_eq!(time::HZ, 1000);
    check_eq!(time::msecs_to_jiffies(250), 250);
    Ok(())
}

static FIRED_AT: AtomicU64 = AtomicU64::new(0);
static FIRED_ORDER: AtomicU64 = AtomicU64::new(0);

fn record_fire(_: clockevent::AlarmId, _: u64) {
    FIRED_AT.store(time::now_ns(), Ordering::SeqCst);
}

fn wait_until(condition: impl Fn() -> bool) -> bool {
    // Bounded by iterations of `hlt`, not by time: each timer interrupt or
    // other interrupt wakes the loop once.
    for _ in 0..1_000_000 {
        if condition() {
            return true;
        }
        cpu::enable_and_halt();
    }
    condition()
}

fn timer_fires() -> Outcome {
    let interrupts_before = crate::trap::interrupt_count(cpu_local::current_index(), crate::vectors::TIMER);
    FIRED_AT.store(0, Ordering::SeqCst);
    let alarm = clockevent::register(record_fire, 0);
    let deadline = time::now_ns() + 2_000_000;
    // Armed and checked with interrupts off (the alarm is this CPU's): a
    // host stall between the two calls would otherwise let it fire, rightly,
    // before the check.
    let interrupts_were_enabled = cpu::interrupts_save();
    clockevent::arm(alarm, deadline);
    let armed = clockevent::is_armed(alarm);
    cpu::interrupts_restore(interrupts_were_enabled);
    check!(armed, "alarm not armed");
    check!(wait_until(|| FIRED_AT.load(Ordering::SeqCst) != 0), "alarm never fired");
    let fired_at = FIRED_AT.load(Ordering::SeqCst);
    check!(fired_at >= deadline, "fired at {fired_at} before deadline {deadline}");
    check!(!clockevent::is_armed(alarm), "alarm still armed after firing");
    let interrupts_after = crate::trap::interrupt_count(cpu_local::current_index(), crate::vectors::TIMER);
    check!(interrupts_after > interrupts_before, "no timer interrupt counted");
    clockevent::unregister(alarm);
    Ok(())
}

fn record_order(_: clockevent::AlarmId, data: u64) {
    // Appends `data` (a digit) to the order record.
    let previous = FIRED_ORDER.load(Ordering::SeqCst);
    FIRED_ORDER.store(previous * 10 + data, Ordering::SeqCst);
}

fn alarms_in_order() -> Outcome {
    FIRED_ORDER.store(0, Ordering::SeqCst);
    let now = time::now_ns();
    let alarms = [clockevent::register(record_order, 3), clockevent::register(record_order, 1), clockevent::register(record_order, 2)];
    // Armed with interrupts off (the alarms are this CPU's), so all three
    // are armed before any can fire: a host stall of a few ms between two
    // calls would otherwise let the first fire alone, rightly, first.
    let interrupts_were_enabled = cpu::interrupts_save();
    clockevent::arm(alarms[0], now + 3_000_000);
    clockevent::arm(alarms[1], now + 1_000_000);
    clockevent::arm(alarms[2], now + 2_000_000);
    cpu::interrupts_restore(interrupts_were_enabled);
    check!(wait_until(|| FIRED_ORDER.load(Ordering::SeqCst) >= 100), "not all alarms fired");
    check_eq!(FIRED_ORDER.load(Ordering::SeqCst), 123);
    for alarm in alarms {
        clockevent::unregister(alarm);
    }
    Ok(())
}

fn tickless_when_idle() -> Outcome {
    // With no alarm armed, the timer is disarmed: busy-wait for a while and
    // check that not a single timer interrupt arrived.
    let counter = || crate::trap::interrupt_count(cpu_local::current_index(), crate::vectors::TIMER);
    let armed = clockevent::armed_here();
    check_eq!(armed, 0);
    let before = counter();
    time::spin_for_ns(20_000_000);
    let after = counter();
    check_eq!(after, before);
    Ok(())
}

fn long_line() -> Outcome {
    let before = crate::console::truncated_lines();
    let long = [b'x'; 700];
    let text = core::str::from_utf8(&long).map_err(|_| "not utf-8")?;
    crate::console_line!("ktest-probe: {text}");
    check_eq!(crate::console::truncated_lines(), before + 1);
    Ok(())
}

#[target_feature(enable = "sse2")]
fn sse_sum(values: &[u32; 4]) -> u32 {
    use core::arch::x86_64::*;
    // SAFETY: `values` is 16 readable bytes (unaligned loads allowed).
    let vector = unsafe { _mm_loadu_si128(values.as_ptr().cast()) };
    let doubled = _mm_add_epi32(vector, vector);
    let mut out = [0u32; 4];
    // SAFETY: `out` is 16 writable bytes (unaligned stores allowed).
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), doubled) };
    out.iter().sum()
}

fn fpu_state() -> Outcome {
    // CR0.EM/TS clear and CR4.OSFXSR set: SSE runs without #UD or #NM.
    let values = [1, 2, 3, 4];
    // SAFETY: every x86_64 CPU has SSE2.
    let sum = unsafe { sse_sum(&values) };
    check_eq!(sum, 20);
    Ok(())
}
