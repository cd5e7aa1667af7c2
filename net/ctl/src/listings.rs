//! The listings of deferred work, as tables: `tasklets` (TASKLETS),
//! `timers` (TIMERS), `workqueues` (WORKQUEUES and WORKQUEUES ITEMS) and the
//! leading columns of `softirqs` (SOFTIRQS). Each shows the names the action
//! commands (`tasklet`, `timer`, `work`, `softirq raise`) take.

use crate::convert::Record;
use crate::format::{self, Align};
use crate::tables::number;

/// Field `name` as text, `-` when absent.
fn text(record: &Record<'_>, name: &str) -> String {
    record.text(name).unwrap_or_else(|| "-".into())
}

/// A 0/1 field as `yes`/`no`, `-` when absent.
fn yes_no(record: &Record<'_>, name: &str) -> String {
    match record.integer(name) {
        Some(0) => "no".into(),
        Some(_) => "yes".into(),
        None => "-".into(),
    }
}

/// A millisecond field as a duration; negative or absent is `-`.
fn milliseconds(record: &Record<'_>, name: &str) -> String {
    match record.integer(name) {
        Some(ms) if ms >= 0 => format::duration_ns(ms.saturating_mul(1_000_000)),
        _ => "-".into(),
    }
}

fn rows(records: &[Record<'_>], cell: impl Fn(&Record<'_>) -> Vec<String>) -> Vec<Vec<String>> {
    records.iter().map(cell).collect()
}

/// The `tasklets` table.
pub fn tasklets_table(records: &[Record<'_>]) -> String {
    let header = [
        ("NAME", Align::Left),
        ("STATE", Align::Left),
        ("DISABLED", Align::Right),
        ("SCHEDULES", Align::Right),
        ("RUNS", Align::Right),
        ("OWNER", Align::Left),
    ];
    let rows = rows(records, |record| {
        vec![
            text(record, "name"),
            text(record, "state"),
            number(record.integer("disabled")),
            number(record.integer("schedules")),
            number(record.integer("runs")),
            text(record, "owner"),
        ]
    });
    format::table(&header, &rows)
}

/// The `timers` table. `EXPIRES-IN` is `-` for a timer that is not armed.
pub fn timers_table(records: &[Record<'_>]) -> String {
    let header = [
        ("NAME", Align::Left),
        ("ARMED", Align::Left),
        ("EXPIRES-IN", Align::Right),
        ("PERIOD", Align::Right),
        ("FIRED", Align::Right),
        ("OWNER", Align::Left),
    ];
    let rows = rows(records, |record| {
        let armed = record.integer("armed").unwrap_or(0) != 0;
        vec![
            text(record, "name"),
            yes_no(record, "armed"),
            if armed { milliseconds(record, "expires_in_ms") } else { "-".into() },
            milliseconds(record, "period_ms"),
            number(record.integer("fired")),
            text(record, "owner"),
        ]
    });
    format::table(&header, &rows)
}

/// The `workqueues` table (WORKQUEUES).
pub fn workqueues_table(records: &[Record<'_>]) -> String {
    let header = [
        ("NAME", Align::Left),
        ("WORKERS", Align::Right),
        ("QUEUED", Align::Right),
        ("RUNNING", Align::Right),
        ("DONE", Align::Right),
        ("DELAYED", Align::Right),
        ("FLAGS", Align::Left),
        ("OWNER", Align::Left),
    ];
    let rows = rows(records, |record| {
        vec![
            text(record, "name"),
            number(record.integer("workers")),
            number(record.integer("queued")),
            number(record.integer("running")),
            number(record.integer("done")),
            number(record.integer("delayed_pending")),
            text(record, "flags"),
            text(record, "owner"),
        ]
    });
    format::table(&header, &rows)
}

/// The work items table (WORKQUEUES ITEMS).
pub fn work_items_table(records: &[Record<'_>]) -> String {
    let header = [
        ("ITEM", Align::Left),
        ("KIND", Align::Left),
        ("PENDING", Align::Left),
        ("RUNNING", Align::Left),
        ("RUNS", Align::Right),
        ("OWNER", Align::Left),
    ];
    let rows = rows(records, |record| {
        vec![
            text(record, "name"),
            text(record, "kind"),
            yes_no(record, "pending"),
            yes_no(record, "running"),
            number(record.integer("runs")),
            text(record, "owner"),
        ]
    });
    format::table(&header, &rows)
}

/// The leading columns of the `softirqs` table: `(title, field, align)`.
pub const SOFTIRQ_COLUMNS: [(&str, &str, Align); 4] =
    [("VEC", "vector", Align::Right), ("NAME", "name", Align::Left), ("HANDLER", "handler", Align::Left), ("OWNER", "owner", Align::Left)];

#[cfg(test)]
mod tests {
    use rtedge_proto::Value;

    use super::*;
    use crate::tables::per_cpu_table;

    fn bulk(text: &str) -> Value {
        Value::Bulk(text.as_bytes().to_vec())
    }

    fn row(fields: &[(&str, Value)]) -> Value {
        Value::Map(fields.iter().map(|(key, value)| (bulk(key), value.clone())).collect())
    }

    fn records(rows: &[Value]) -> Vec<Record<'_>> {
        rows.iter().filter_map(Record::from_value).collect()
    }

    #[test]
    fn tasklets_show_state_counts_and_owner() {
        let rows = [
            row(&[
                ("name", bulk("tasklet")),
                ("state", bulk("idle")),
                ("scheduled", Value::Integer(0)),
                ("running", Value::Integer(0)),
                ("disabled", Value::Integer(0)),
                ("schedules", Value::Integer(12)),
                ("runs", Value::Integer(11)),
                ("owner", bulk("tasklet")),
            ]),
            row(&[
                ("name", bulk("rtpool-allocator")),
                ("state", bulk("disabled")),
                ("disabled", Value::Integer(2)),
                ("schedules", Value::Integer(0)),
                ("runs", Value::Integer(0)),
                ("owner", bulk("-")),
            ]),
        ];
        assert_eq!(
            tasklets_table(&records(&rows)),
            "\
NAME              STATE     DISABLED  SCHEDULES  RUNS  OWNER
tasklet           idle             0         12    11  tasklet
rtpool-allocator  disabled         2          0     0  -
"
        );
    }

    #[test]
    fn timers_show_expiry_only_when_armed() {
        // RESP2 flat form for the second row.
        let rows = [
            row(&[
                ("name", bulk("heartbeat")),
                ("armed", Value::Integer(1)),
                ("running", Value::Integer(0)),
                ("expires_in_ms", Value::Integer(812)),
                ("period_ms", Value::Integer(1000)),
                ("fired", Value::Integer(42)),
                ("owner", bulk("-")),
            ]),
            Value::Array(vec![
                bulk("name"),
                bulk("report"),
                bulk("armed"),
                Value::Integer(0),
                bulk("expires_in_ms"),
                Value::Integer(-1),
                bulk("period_ms"),
                Value::Integer(0),
                bulk("fired"),
                Value::Integer(0),
                bulk("owner"),
                bulk("serial-irq"),
            ]),
        ];
        assert_eq!(
            timers_table(&records(&rows)),
            "\
NAME       ARMED  EXPIRES-IN  PERIOD  FIRED  OWNER
heartbeat  yes         812ms      1s     42  -
report     no              -     0ns      0  serial-irq
"
        );
    }

    #[test]
    fn workqueues_and_items_tables() {
        let queues = [row(&[
            ("name", bulk("events")),
            ("workers", Value::Integer(2)),
            ("queued", Value::Integer(0)),
            ("running", Value::Integer(1)),
            ("done", Value::Integer(315)),
            ("delayed_pending", Value::Integer(3)),
            ("flags", bulk("per-cpu,system")),
            ("owner", bulk("-")),
        ])];
        assert_eq!(
            workqueues_table(&records(&queues)),
            "\
NAME    WORKERS  QUEUED  RUNNING  DONE  DELAYED  FLAGS           OWNER
events        2       0        1   315        3  per-cpu,system  -
"
        );
        let items = [row(&[
            ("name", bulk("job")),
            ("kind", bulk("plain")),
            ("pending", Value::Integer(1)),
            ("running", Value::Integer(0)),
            ("timer_pending", Value::Integer(0)),
            ("runs", Value::Integer(4)),
            ("owner", bulk("job")),
        ])];
        assert_eq!(
            work_items_table(&records(&items)),
            "ITEM  KIND   PENDING  RUNNING  RUNS  OWNER\njob   plain  yes      no          4  job\n"
        );
    }

    #[test]
    fn softirqs_lead_with_vector_name_handler_and_owner() {
        let rows = [
            row(&[
                ("name", bulk("TIMER")),
                ("vector", Value::Integer(1)),
                ("kind", bulk("fixed")),
                ("open", Value::Integer(1)),
                ("handler", bulk("timer::run_jiffy_timers")),
                ("owner", bulk("kernel")),
                ("cpu0", Value::Integer(7)),
                ("cpu1", Value::Integer(3)),
                ("total", Value::Integer(10)),
            ]),
            row(&[
                ("name", bulk("jitter")),
                ("vector", Value::Integer(10)),
                ("kind", bulk("dynamic")),
                ("open", Value::Integer(1)),
                ("handler", bulk("jitter")),
                ("owner", bulk("softirq-latency")),
                ("cpu0", Value::Integer(500)),
                ("cpu1", Value::Integer(0)),
                ("total", Value::Integer(500)),
            ]),
        ];
        assert_eq!(
            per_cpu_table(&records(&rows), &SOFTIRQ_COLUMNS),
            "\
VEC  NAME    HANDLER                  OWNER            CPU0  CPU1  TOTAL
  1  TIMER   timer::run_jiffy_timers  kernel              7     3     10
 10  jitter  jitter                   softirq-latency   500     0    500
"
        );
    }
}
