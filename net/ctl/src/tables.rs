//! The table commands: `threads`, `irqs`, `softirqs`, `modules`.

use rtedge_proto::Value;

use crate::convert::{self, Record};
use crate::format::{self, Align};

/// One row of `THREADS`. Fields the server left out are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Thread {
    /// Thread id.
    pub id: Option<i64>,
    /// Name.
    pub name: String,
    /// `rt`, `kernel` or `idle`.
    pub kind: String,
    /// RT priority (-1 for others).
    pub priority: Option<i64>,
    /// Nice value (kernel threads).
    pub nice: Option<i64>,
    /// `running`, `ready`, ...
    pub state: String,
    /// Last CPU.
    pub cpu: Option<i64>,
    /// Allowed CPUs, e.g. `0-3`.
    pub affinity: String,
    /// Time run so far.
    pub runtime_ns: Option<i64>,
    /// Context switches.
    pub switches: Option<i64>,
    /// Release period, 0 if not periodic.
    pub period_ns: Option<i64>,
    /// Periodic releases so far.
    pub releases: Option<i64>,
    /// Deadline misses.
    pub misses: Option<i64>,
    /// Release latency: smallest.
    pub latency_min_ns: Option<i64>,
    /// Release latency: largest.
    pub latency_max_ns: Option<i64>,
    /// Release latency: mean.
    pub latency_mean_ns: Option<i64>,
}

impl Thread {
    /// A thread from one `THREADS` row.
    pub fn from_record(record: &Record<'_>) -> Thread {
        let text = |name: &str| record.text(name).unwrap_or_else(|| "-".into());
        Thread {
            id: record.integer("id"),
            name: text("name"),
            kind: text("kind"),
            priority: record.integer("priority"),
            nice: record.integer("nice"),
            state: text("state"),
            cpu: record.integer("cpu"),
            affinity: text("affinity"),
            runtime_ns: record.integer("runtime_ns"),
            switches: record.integer("switches"),
            period_ns: record.integer("period_ns"),
            releases: record.integer("releases"),
            misses: record.integer("misses"),
            latency_min_ns: record.integer("latency_min_ns"),
            latency_max_ns: record.integer("latency_max_ns"),
            latency_mean_ns: record.integer("latency_mean_ns"),
        }
    }

    /// Whether this is a real-time thread.
    pub fn is_rt(&self) -> bool {
        self.kind == "rt"
    }

    /// Whether release latencies were measured (the thread was released
    /// at least once).
    pub fn has_latency(&self) -> bool {
        self.releases.unwrap_or(0) > 0
    }

    /// `PRIO/NICE`: the priority of an RT thread, `nice N` of a kernel
    /// thread, `-` otherwise.
    pub fn priority_or_nice(&self) -> String {
        match self.kind.as_str() {
            "rt" => number(self.priority),
            "kernel" => self.nice.map_or_else(|| "-".into(), |nice| format!("nice {nice}")),
            _ => "-".into(),
        }
    }

    /// The latency columns, `-` when nothing was measured.
    pub fn latency(&self, value: Option<i64>) -> String {
        if self.has_latency() { duration(value) } else { "-".into() }
    }

    /// `PERIOD`, `-` when not periodic.
    pub fn period(&self) -> String {
        match self.period_ns {
            Some(period) if period > 0 => format::duration_ns(period),
            _ => "-".into(),
        }
    }
}

/// A count, or `-` when absent.
pub fn number(value: Option<i64>) -> String {
    value.map_or_else(|| "-".into(), |value| value.to_string())
}

/// A duration, or `-` when absent.
pub fn duration(value: Option<i64>) -> String {
    value.map_or_else(|| "-".into(), format::duration_ns)
}

/// The `threads` table.
pub fn threads_table(threads: &[Thread]) -> String {
    let header = [
        ("ID", Align::Right),
        ("NAME", Align::Left),
        ("KIND", Align::Left),
        ("PRIO/NICE", Align::Right),
        ("STATE", Align::Left),
        ("CPU", Align::Right),
        ("AFFINITY", Align::Left),
        ("RUNTIME", Align::Right),
        ("SWITCHES", Align::Right),
        ("PERIOD", Align::Right),
        ("MISSES", Align::Right),
        ("LAT-MIN", Align::Right),
        ("LAT-MAX", Align::Right),
        ("LAT-MEAN", Align::Right),
    ];
    let rows: Vec<Vec<String>> = threads
        .iter()
        .map(|thread| {
            vec![
                number(thread.id),
                thread.name.clone(),
                thread.kind.clone(),
                thread.priority_or_nice(),
                thread.state.clone(),
                number(thread.cpu),
                thread.affinity.clone(),
                duration(thread.runtime_ns),
                number(thread.switches),
                thread.period(),
                number(thread.misses),
                thread.latency(thread.latency_min_ns),
                thread.latency(thread.latency_max_ns),
                thread.latency(thread.latency_mean_ns),
            ]
        })
        .collect();
    format::table(&header, &rows)
}

/// The `cpuN` fields present in any row, in CPU order.
pub fn cpu_columns(records: &[Record<'_>]) -> Vec<String> {
    let mut cpus: Vec<u32> = records.iter().flat_map(|record| record.keys().filter_map(cpu_number).collect::<Vec<_>>()).collect();
    cpus.sort_unstable();
    cpus.dedup();
    cpus.into_iter().map(|cpu| format!("cpu{cpu}")).collect()
}

fn cpu_number(key: &str) -> Option<u32> {
    key.strip_prefix("cpu")
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
}

/// `irqs` (`leading` = vector, name) and `softirqs` (`leading` = name): the
/// leading columns, one column per CPU, then the total.
pub fn per_cpu_table(records: &[Record<'_>], leading: &[(&str, &str, Align)]) -> String {
    let cpus = cpu_columns(records);
    let upper: Vec<String> = cpus.iter().map(|cpu| cpu.to_ascii_uppercase()).collect();
    let mut header: Vec<(&str, Align)> = leading.iter().map(|(title, _, align)| (*title, *align)).collect();
    header.extend(upper.iter().map(|title| (title.as_str(), Align::Right)));
    header.push(("TOTAL", Align::Right));
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|record| {
            let mut row: Vec<String> = leading.iter().map(|(_, field, _)| record.text(field).unwrap_or_else(|| "-".into())).collect();
            row.extend(cpus.iter().map(|cpu| number(record.integer(cpu))));
            let total = record.integer("total").or_else(|| {
                let counts: Vec<i64> = cpus.iter().filter_map(|cpu| record.integer(cpu)).collect();
                (!counts.is_empty()).then(|| counts.iter().sum())
            });
            row.push(number(total));
            row
        })
        .collect();
    format::table(&header, &rows)
}

/// The `modules` table.
pub fn modules_table(records: &[Record<'_>]) -> String {
    let header = [("NAME", Align::Left), ("STATE", Align::Left), ("THREADS", Align::Right), ("LOADS", Align::Right)];
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|record| ["name", "state", "threads", "loads"].iter().map(|field| record.text(field).unwrap_or_else(|| "-".into())).collect())
        .collect();
    format::table(&header, &rows)
}

/// The threads of a `THREADS` reply.
pub fn threads(reply: &Value) -> Vec<Thread> {
    convert::records(reply).iter().map(Thread::from_record).collect()
}

/// `(name, total)` of each `SOFTIRQS` row.
pub fn softirq_totals(reply: &Value) -> Vec<(String, i64)> {
    convert::records(reply)
        .iter()
        .map(|record: &Record<'_>| {
            let name = record.text("name").unwrap_or_else(|| "-".into());
            let total = record
                .integer("total")
                .unwrap_or_else(|| cpu_columns(std::slice::from_ref(record)).iter().filter_map(|cpu| record.integer(cpu)).sum());
            (name, total)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::Bulk(text.as_bytes().to_vec())
    }

    #[test]
    fn a_thread_row_humanizes_durations_and_hides_unmeasured_latency() {
        let rt = Thread {
            id: Some(3),
            name: "rt0".into(),
            kind: "rt".into(),
            priority: Some(90),
            nice: Some(0),
            state: "sleeping".into(),
            cpu: Some(1),
            affinity: "1".into(),
            runtime_ns: Some(1_500_000),
            switches: Some(1200),
            period_ns: Some(1_000_000),
            releases: Some(1000),
            misses: Some(2),
            latency_min_ns: Some(900),
            latency_max_ns: Some(12_345),
            latency_mean_ns: Some(2_100),
        };
        let worker = Thread {
            id: Some(4),
            name: "events/0".into(),
            kind: "kernel".into(),
            priority: Some(-1),
            nice: Some(-5),
            state: "blocked".into(),
            cpu: Some(0),
            affinity: "0-1".into(),
            runtime_ns: Some(2_000_000_000),
            switches: Some(7),
            period_ns: Some(0),
            releases: Some(0),
            misses: Some(0),
            latency_min_ns: Some(0),
            latency_max_ns: Some(0),
            latency_mean_ns: Some(0),
        };
        assert_eq!(
            threads_table(&[rt, worker]),
            "\
ID  NAME      KIND    PRIO/NICE  STATE     CPU  AFFINITY  RUNTIME  SWITCHES  PERIOD  MISSES  LAT-MIN  LAT-MAX  LAT-MEAN
 3  rt0       rt             90  sleeping    1  1           1.5ms      1200     1ms       2    900ns   12.3µs     2.1µs
 4  events/0  kernel    nice -5  blocked     0  0-1            2s         7       -       0        -        -         -
"
        );
    }

    #[test]
    fn per_cpu_tables_find_every_cpu_column_in_order() {
        let rows = [
            Value::Map(vec![
                (bulk("name"), bulk("TIMER")),
                (bulk("cpu0"), Value::Integer(10)),
                (bulk("cpu10"), Value::Integer(1)),
                (bulk("cpu2"), Value::Integer(5)),
                (bulk("total"), Value::Integer(16)),
            ]),
            // RESP2 flat form, no total: summed.
            Value::Array(vec![bulk("name"), bulk("NET_RX"), bulk("cpu0"), Value::Integer(3)]),
        ];
        let records: Vec<Record<'_>> = rows.iter().filter_map(Record::from_value).collect();
        assert_eq!(cpu_columns(&records), ["cpu0", "cpu2", "cpu10"]);
        assert_eq!(
            per_cpu_table(&records, &[("NAME", "name", Align::Left)]),
            "NAME    CPU0  CPU2  CPU10  TOTAL\nTIMER     10     5      1     16\nNET_RX     3     -      -      3\n"
        );
    }
}
