//! The Prometheus text exposition format, version 0.0.4, written from plain
//! numbers: what `GET /metrics` and the `METRICS` command return.
//!
//! [`Exposition`] writes one metric family at a time: a `# HELP` and a
//! `# TYPE` line, then its samples. It checks what Prometheus would
//! refuse: a metric name must match `[a-zA-Z_:][a-zA-Z0-9_:]*`, a label
//! name `[a-zA-Z_][a-zA-Z0-9_]*` and not start with `__` (reserved); a
//! family that breaks the rule is left out whole (and counted in
//! [`Exposition::rejected`]) rather than corrupting the scrape. Label
//! values and help text are escaped (`\\`, `\"`, `\n`), so a thread name
//! or soft IRQ name can hold any character.
//!
//! Times are nanoseconds in the kernel and seconds in Prometheus (its base
//! unit): [`Value::Nanoseconds`] prints a nanosecond count as an exact
//! decimal number of seconds (`1500` ns is `0.0000015`), without floating
//! point. A histogram's buckets come as `(inclusive upper bound, count)`
//! pairs in increasing order of bound, counts per bucket (not cumulative);
//! [`Exposition::histogram`] writes the cumulative `_bucket{le="..."}`
//! series, the `+Inf` bucket, `_sum` and `_count`, whatever the bucket
//! layout (log2, log-linear) of the histogram that produced them.

use alloc::string::String;
use core::fmt::Write as _;

/// The `Content-Type` of a reply in this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type (`# TYPE` line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// Only goes up (reset at boot); names end in `_total` by convention.
    Counter,
    /// Goes up and down.
    Gauge,
    /// `_bucket`, `_sum` and `_count` series.
    Histogram,
}

impl MetricType {
    fn name(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// A sample's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// A plain count or size.
    Integer(u64),
    /// A signed quantity.
    Signed(i64),
    /// Nanoseconds, written as seconds.
    Nanoseconds(u128),
}

/// Label name/value pairs of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// Writes an exposition; see the module doc.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    /// The family whose samples are being written, if its name was valid.
    family: Option<(String, MetricType)>,
    rejected: usize,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family: writes its `# HELP` and `# TYPE` lines. Returns
    /// false (and writes nothing, now or for its samples) if `name` is not
    /// a valid metric name.
    pub fn family(&mut self, name: &str, kind: MetricType, help: &str) -> bool {
        if !is_metric_name(name) {
            self.family = None;
            self.rejected = self.rejected.saturating_add(1);
            return false;
        }
        let _ = write!(self.out, "# HELP {name} ");
        escape_help(&mut self.out, help);
        let _ = write!(self.out, "\n# TYPE {name} {}\n", kind.name());
        self.family = Some((String::from(name), kind));
        true
    }

    /// One family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: MetricType, help: &str, value: Value) {
        if self.family(name, kind, help) {
            self.sample(&[], value);
        }
    }

    /// One sample of the current counter or gauge family. Ignored without
    /// a valid family, for a histogram family, or with an invalid label
    /// name.
    pub fn sample(&mut self, labels: Labels<'_>, value: Value) {
        let Some((name, kind)) = &self.family else { return };
        if *kind == MetricType::Histogram || !labels_valid(labels) {
            self.rejected = self.rejected.saturating_add(usize::from(*kind != MetricType::Histogram));
            return;
        }
        let name = name.clone();
        self.line(&name, "", labels, None, value);
    }

    /// One histogram of the current histogram family: `buckets` as
    /// `(inclusive upper bound, count in that bucket)` in increasing order
    /// of bound, in the family's unit (nanoseconds when `nanoseconds`,
    /// written as seconds). `count` is the number of samples (the `+Inf`
    /// bucket and `_count`; raised to the buckets' total if smaller),
    /// `sum` their sum. A bucket whose bound is not above the previous
    /// one's is merged into the previous one; a bound of `u64::MAX` is the
    /// `+Inf` bucket's.
    pub fn histogram(
        &mut self,
        labels: Labels<'_>,
        buckets: impl IntoIterator<Item = (u64, u64)>,
        count: u64,
        sum: u128,
        nanoseconds: bool,
    ) {
        let Some((name, kind)) = &self.family else { return };
        if *kind != MetricType::Histogram || !labels_valid(labels) || labels.iter().any(|(label, _)| *label == "le") {
            self.rejected = self.rejected.saturating_add(1);
            return;
        }
        let name = name.clone();
        let mut cumulative: u64 = 0;
        let mut previous_bound: Option<u64> = None;
        let mut bound_text = String::new();
        let mut pending: Option<u64> = None;
        for (bound, bucket_count) in buckets {
            if bound == u64::MAX {
                if let Some(pending_bound) = pending.take() {
                    self.bucket_line(&name, labels, &mut bound_text, pending_bound, cumulative, nanoseconds);
                }
                cumulative = cumulative.saturating_add(bucket_count);
                previous_bound = Some(u64::MAX);
                continue;
            }
            if previous_bound.is_some_and(|previous| bound <= previous) {
                cumulative = cumulative.saturating_add(bucket_count);
                continue;
            }
            if let Some(pending_bound) = pending.take() {
                self.bucket_line(&name, labels, &mut bound_text, pending_bound, cumulative, nanoseconds);
            }
            cumulative = cumulative.saturating_add(bucket_count);
            previous_bound = Some(bound);
            pending = Some(bound);
        }
        if let Some(pending_bound) = pending {
            self.bucket_line(&name, labels, &mut bound_text, pending_bound, cumulative, nanoseconds);
        }
        let total = count.max(cumulative);
        self.line(&name, "_bucket", labels, Some("+Inf"), Value::Integer(total));
        let sum_value = if nanoseconds { Value::Nanoseconds(sum) } else { Value::Integer(u64::try_from(sum).unwrap_or(u64::MAX)) };
        self.line(&name, "_sum", labels, None, sum_value);
        self.line(&name, "_count", labels, None, Value::Integer(total));
    }

    /// Families and samples left out for an invalid name.
    pub fn rejected(&self) -> usize {
        self.rejected
    }

    /// The text so far.
    pub fn as_str(&self) -> &str {
        &self.out
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }

    fn bucket_line(&mut self, name: &str, labels: Labels<'_>, text: &mut String, bound: u64, cumulative: u64, nanoseconds: bool) {
        text.clear();
        if nanoseconds {
            write_seconds(text, u128::from(bound));
        } else {
            let _ = write!(text, "{bound}");
        }
        let bound_text = core::mem::take(text);
        self.line(name, "_bucket", labels, Some(&bound_text), Value::Integer(cumulative));
        *text = bound_text;
    }

    fn line(&mut self, name: &str, suffix: &str, labels: Labels<'_>, le: Option<&str>, value: Value) {
        let out = &mut self.out;
        out.push_str(name);
        out.push_str(suffix);
        if !labels.is_empty() || le.is_some() {
            out.push('{');
            let mut first = true;
            for (label, text) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(label);
                out.push_str("=\"");
                escape_label_value(out, text);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        match value {
            Value::Integer(value) => {
                let _ = write!(out, "{value}");
            }
            Value::Signed(value) => {
                let _ = write!(out, "{value}");
            }
            Value::Nanoseconds(value) => write_seconds(out, value),
        }
        out.push('\n');
    }
}

/// Whether `name` is a valid metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(first) if first.is_ascii_alphabetic() || first == b'_' || first == b':' => {}
        _ => return false,
    }
    bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b':')
}

/// Whether `name` is a valid label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not
/// starting with `__` (reserved for Prometheus).
pub fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(first) if first.is_ascii_alphabetic() || first == b'_' => {}
        _ => return false,
    }
    !name.starts_with("__") && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

fn labels_valid(labels: Labels<'_>) -> bool {
    labels.iter().all(|(name, _)| is_label_name(name))
        && labels.iter().enumerate().all(|(index, (name, _))| labels.iter().skip(index + 1).all(|(other, _)| other != name))
}

/// Appends `text` as a label value: `\` → `\\`, `"` → `\"`, newline →
/// `\n`.
pub fn escape_label_value(out: &mut String, text: &str) {
    for character in text.chars() {
        match character {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
}

/// Appends `text` as help text: `\` → `\\`, newline → `\n`.
pub fn escape_help(out: &mut String, text: &str) {
    for character in text.chars() {
        match character {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
}

/// Appends `nanoseconds` as an exact decimal number of seconds, without
/// trailing zeros (`0`, `1`, `0.000001023`, `2.5`).
pub fn write_seconds(out: &mut String, nanoseconds: u128) {
    let whole = nanoseconds / 1_000_000_000;
    let fraction = nanoseconds % 1_000_000_000;
    let _ = write!(out, "{whole}");
    if fraction != 0 {
        let mut digits = String::new();
        let _ = write!(digits, "{fraction:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}
