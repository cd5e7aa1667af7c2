//! The listings of the control plane (`control::listings`): what they show
//! is what the kernel holds — handler names of the open soft IRQ vectors,
//! owners of a module's objects, which leave with it, and the counters.

use alloc::string::String;
use alloc::vec::Vec;

use rtedge_proto::Reply;

use crate::control::listings;
use rtedge_kernel::ktest::{Outcome, Test};
use rtedge_kernel::modules::{self, Module};
use rtedge_kernel::softirq;
use rtedge_kernel::tasklet::Tasklet;
use rtedge_kernel::timer::Timer;
use rtedge_kernel::{check, check_eq, time};

pub const TESTS: &[Test] = &[
    Test { name: "listings::every_open_fixed_vector_names_its_handler", run: fixed_handlers_named },
    Test { name: "listings::a_modules_objects_are_its_own_and_leave_with_it", run: module_objects_owned },
];

/// The row called `name` of a listing, as (field, value) pairs.
fn row(listing: &Reply, name: &str) -> Option<Vec<(String, Reply)>> {
    let Reply::Array(rows) = listing else { return None };
    rows.iter().find_map(|row| {
        let Reply::Map(entries) = row else { return None };
        let fields: Vec<(String, Reply)> = entries
            .iter()
            .filter_map(|(key, value)| match key {
                Reply::Bulk(bytes) => Some((String::from_utf8_lossy(bytes).into_owned(), value.clone())),
                _ => None,
            })
            .collect();
        let named = fields.iter().any(|(key, value)| key == "name" && *value == Reply::bulk_str(name));
        named.then_some(fields)
    })
}

fn field(row: &[(String, Reply)], key: &str) -> Option<Reply> {
    row.iter().find(|(name, _)| name == key).map(|(_, value)| value.clone())
}

fn integer(row: &[(String, Reply)], key: &str) -> Option<i64> {
    match field(row, key) {
        Some(Reply::Integer(value)) => Some(value),
        _ => None,
    }
}

/// HI, TIMER, TASKLET and HRTIMER are opened at boot, NET_RX with a network;
/// the others never: the table of handler names must say exactly that.
fn fixed_handlers_named() -> Outcome {
    const NET_RX: usize = 3;
    for (vector, handler) in listings::FIXED_HANDLERS.iter().enumerate() {
        if vector == NET_RX {
            check!(!softirq::is_open(vector) || handler.is_some(), "NET_RX is open without a handler name");
            continue;
        }
        check_eq!((vector, softirq::is_open(vector)), (vector, handler.is_some()));
    }
    let listing = listings::softirqs();
    let timer = row(&listing, "TIMER").ok_or("SOFTIRQS lacks TIMER")?;
    check_eq!(field(&timer, "handler"), Some(Reply::bulk_str("timer::run_jiffy_timers")));
    check_eq!(field(&timer, "owner"), Some(Reply::bulk_str("kernel")));
    let block = row(&listing, "BLOCK").ok_or("SOFTIRQS lacks BLOCK")?;
    check_eq!(field(&block, "handler"), Some(Reply::bulk_str("-")));
    check_eq!(integer(&block, "open"), Some(0));
    Ok(())
}

const MODULE_NAME: &str = "listings-test";
const TASKLET_NAME: &str = "listings-test-tasklet";
const TIMER_NAME: &str = "listings-test-timer";

static TEST_TASKLET: Tasklet = Tasklet::new(TASKLET_NAME, |_| {}, 0);
static TEST_TIMER: Timer = Timer::new(TIMER_NAME, |_| {}, 0);

struct ListingsTestModule;

static TEST_MODULE: ListingsTestModule = ListingsTestModule;

impl Module for ListingsTestModule {
    fn name(&self) -> &'static str {
        MODULE_NAME
    }

    fn init(&'static self) -> Result<(), String> {
        TEST_TASKLET.register();
        TEST_TIMER.register();
        Ok(())
    }

    fn exit(&'static self) {
        TEST_TIMER.delete_sync();
        TEST_TIMER.unregister();
        TEST_TASKLET.kill();
        TEST_TASKLET.unregister();
    }
}

fn module_objects_owned() -> Outcome {
    modules::register(&TEST_MODULE);
    modules::load(MODULE_NAME).map_err(|error| alloc::format!("{error}"))?;
    let result = owned_while_loaded();
    modules::unload(MODULE_NAME).map_err(|error| alloc::format!("{error}"))?;
    result?;
    check!(row(&listings::tasklets(), TASKLET_NAME).is_none(), "the tasklet is listed after the unload");
    check!(row(&listings::timers(), TIMER_NAME).is_none(), "the timer is listed after the unload");
    Ok(())
}

fn owned_while_loaded() -> Outcome {
    let tasklet = row(&listings::tasklets(), TASKLET_NAME).ok_or("TASKLETS lacks the module's tasklet")?;
    check_eq!(field(&tasklet, "owner"), Some(Reply::bulk_str(MODULE_NAME)));
    let schedules = integer(&tasklet, "schedules").ok_or("no schedules")?;
    let runs = integer(&tasklet, "runs").ok_or("no runs")?;
    TEST_TASKLET.schedule();
    TEST_TASKLET.schedule();
    softirq::run_pending();
    let deadline = time::now_ns() + 2_000_000_000;
    while TEST_TASKLET.runs() == runs as u64 && time::now_ns() < deadline {
        let _ = rtedge_kernel::thread::sleep_ns(1_000_000);
    }
    let tasklet = row(&listings::tasklets(), TASKLET_NAME).ok_or("TASKLETS lost the tasklet")?;
    check_eq!(integer(&tasklet, "schedules"), Some(schedules + 2));
    check!(integer(&tasklet, "runs").is_some_and(|now| now > runs), "the tasklet's run count did not move");

    let timer = row(&listings::timers(), TIMER_NAME).ok_or("TIMERS lacks the module's timer")?;
    check_eq!(field(&timer, "owner"), Some(Reply::bulk_str(MODULE_NAME)));
    check_eq!(integer(&timer, "armed"), Some(0));
    check_eq!(integer(&timer, "expires_in_ms"), Some(-1));
    TEST_TIMER.modify_in(time::msecs_to_jiffies(60_000)).map_err(|error| alloc::format!("{error}"))?;
    let timer = row(&listings::timers(), TIMER_NAME).ok_or("TIMERS lost the timer")?;
    check_eq!(integer(&timer, "armed"), Some(1));
    check_eq!(integer(&timer, "period_ms"), Some(60_000));
    check!(integer(&timer, "expires_in_ms").is_some_and(|ms| (0..=60_000).contains(&ms)), "expiry {:?}", integer(&timer, "expires_in_ms"));
    Ok(())
}
