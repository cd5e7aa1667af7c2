//! Remote logs (issue 15): every line written to the console is kept in
//! the history (`crate::logs`) with its facts, whichever path wrote it:
//! at once (thread context) or through a log ring and klogd (an RT
//! thread).

use core::sync::atomic::{AtomicBool, Ordering};

use rtedge_engine::loghistory;

use crate::ktest::{Outcome, Test};
use crate::thread::{self, Builder};
use crate::{check, check_eq, console, logs, time};

const MILLISECOND: u64 = 1_000_000;
const SECOND: u64 = 1_000_000_000;

pub const TESTS: &[Test] = &[
    Test { name: "logs::a_line_written_at_once_is_kept_with_its_thread_and_level", run: synchronous_line_kept },
    Test { name: "logs::an_rt_threads_lines_reach_the_history_through_klogd_in_order", run: rt_lines_kept },
];

fn error(e: impl core::fmt::Display) -> alloc::string::String {
    alloc::format!("{e}")
}

/// The newest line's number.
fn newest() -> u64 {
    logs::stats().kept
}

fn synchronous_line_kept() -> Outcome {
    let before = newest();
    let started = time::now_ns();
    log::warn!("ktest-logs: kept at once");
    let lines = logs::read_after(before, loghistory::LEVEL_TRACE, 8);
    let line = lines.iter().find(|line| line.text() == "ktest-logs: kept at once").ok_or("the line is not in the history")?;
    check_eq!(line.level, loghistory::LEVEL_WARN);
    check_eq!(u32::from(line.cpu), crate::context::cpu_index());
    let name = thread::current().name();
    check_eq!(line.thread(), name.as_str());
    check!(line.monotonic_ns >= started && line.monotonic_ns <= time::now_ns(), "mono_ns {} out of range", line.monotonic_ns);
    check!(line.sequence > before, "seq {} not above {before}", line.sequence);
    // The level filter of LOGS drops it below warn.
    check!(logs::read_after(before, loghistory::LEVEL_ERROR, 8).iter().all(|line| line.level == loghistory::LEVEL_ERROR));
    Ok(())
}

static RT_MAY_EXIT: AtomicBool = AtomicBool::new(false);
const RT_LINES: usize = 5;

fn rt_lines_kept() -> Outcome {
    check!(console::ring_stats().draining, "klogd is not running");
    let cpu = 63 - thread::online_mask().leading_zeros();
    let before = newest();
    RT_MAY_EXIT.store(false, Ordering::SeqCst);
    let rt = Builder::new("t-logs-rt")
        .realtime(30)
        .cpu(cpu)
        .spawn(|| {
            for line in 0..RT_LINES {
                log::warn!("ktest-logs: rt line {line}");
            }
            // Alive until klogd wrote the lines, so that it finds the name.
            while !RT_MAY_EXIT.load(Ordering::SeqCst) {
                let _ = thread::sleep_ns(MILLISECOND);
            }
            0
        })
        .map_err(error)?;
    let deadline = time::now_ns() + 5 * SECOND;
    let mut kept = alloc::vec::Vec::new();
    while kept.len() < RT_LINES && time::now_ns() < deadline {
        kept = logs::read_after(before, loghistory::LEVEL_TRACE, logs::HISTORY_LINES)
            .into_iter()
            .filter(|line| line.text().starts_with("ktest-logs: rt line"))
            .collect();
        let _ = thread::sleep_ns(MILLISECOND);
    }
    RT_MAY_EXIT.store(true, Ordering::SeqCst);
    check_eq!(thread::join(rt, Some(5 * SECOND)).map_err(error)?, 0);
    check_eq!(kept.len(), RT_LINES);
    for (index, line) in kept.iter().enumerate() {
        let expected = alloc::format!("ktest-logs: rt line {index}");
        check_eq!(line.text(), expected.as_str());
        check_eq!(line.thread(), "t-logs-rt");
        check_eq!(u32::from(line.cpu), cpu);
        check_eq!(line.level, loghistory::LEVEL_WARN);
    }
    check!(kept.windows(2).all(|pair| pair[1].sequence > pair[0].sequence && pair[1].monotonic_ns >= pair[0].monotonic_ns), "out of order");
    Ok(())
}
