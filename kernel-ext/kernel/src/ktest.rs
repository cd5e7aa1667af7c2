//! The in-kernel test harness: runs named tests in order, prints each name
//! with `ok` or `FAILED: reason`, then a summary, and shuts down with
//! success only if every test passed. The runner (images/) reads these lines.

use alloc::string::String;

use crate::console_line;
use crate::shutdown::{self, ExitCode};

/// A test's outcome: `Err` carries the reason it failed.
pub type Outcome = Result<(), String>;

/// A named kernel test.
#[derive(Clone, Copy, Debug)]
pub struct Test {
    pub name: &'static str,
    pub run: fn() -> Outcome,
}

/// Fails the current test with a formatted reason unless `condition` holds.
#[macro_export]
macro_rules! check {
    ($condition:expr) => {
        if !$condition {
            return Err(alloc::format!("check failed: {} ({}:{})", stringify!($condition), file!(), line!()));
        }
    };
    ($condition:expr, $($reason:tt)+) => {
        if !$condition {
            return Err(alloc::format!("{} ({}:{})", format_args!($($reason)+), file!(), line!()));
        }
    };
}

/// Fails the current test unless `left == right`, showing both.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            return Err(alloc::format!(
                "{} == {} failed: left {:?}, right {:?} ({}:{})",
                stringify!($left),
                stringify!($right),
                left,
                right,
                file!(),
                line!()
            ));
        }
    }};
}

/// Runs every test of every group and shuts down: success if all passed.
pub fn run(groups: &[&[Test]]) -> ! {
    let total: usize = groups.iter().map(|group| group.len()).sum();
    console_line!("ktest: running {total} tests");
    let mut passed = 0;
    let mut failed = 0;
    for test in groups.iter().flat_map(|group| group.iter()) {
        match (test.run)() {
            Ok(()) => {
                passed += 1;
                console_line!("ktest: {} ... ok", test.name);
            }
            Err(reason) => {
                failed += 1;
                console_line!("ktest: {} ... FAILED: {reason}", test.name);
            }
        }
    }
    console_line!("ktest: result: {passed} passed, {failed} failed");
    shutdown::shutdown_with(if failed == 0 { ExitCode::Success } else { ExitCode::TestsFailed })
}
