//! `rtctl latency`: `LATENCY source` histograms as cyclictest-style
//! summary lines, a text histogram and (in plot.rs) a chart.

use rtedge_proto::Value;

use crate::convert::{self, Record};
use crate::error::{CtlError, Result};
use crate::format;

/// Widest bar of the text histogram, in characters.
const BAR_WIDTH: i64 = 40;
/// Most rows of the text histogram when filling the gaps between powers
/// of two; beyond this the rows are shown as they come.
const MAX_FILLED_BUCKETS: usize = 64;

/// One `LATENCY source` reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// The source name.
    pub source: String,
    /// Samples.
    pub count: Option<i64>,
    /// Smallest sample.
    pub min_ns: Option<i64>,
    /// Largest sample.
    pub max_ns: Option<i64>,
    /// Mean (`avg_ns`, or `mean_ns` from an older appliance).
    pub mean_ns: Option<i64>,
    /// Median.
    pub p50_ns: Option<i64>,
    /// 90th percentile.
    pub p90_ns: Option<i64>,
    /// 99th percentile.
    pub p99_ns: Option<i64>,
    /// 99.9th percentile.
    pub p999_ns: Option<i64>,
    /// Release period of an RT thread source.
    pub period_ns: Option<i64>,
    /// Releases of an RT thread source.
    pub releases: Option<i64>,
    /// Deadline misses of an RT thread source.
    pub misses: Option<i64>,
    /// Buckets per power of two (log-linear layout); absent from an older
    /// appliance, whose buckets are powers of two.
    pub sub_buckets: Option<i64>,
    /// `(exclusive upper bound in ns, count)` of each non-empty bucket,
    /// ascending.
    pub buckets: Vec<(i64, i64)>,
}

/// The smallest power of two at or above `value` (`value` itself past the
/// largest).
fn power_of_two_at_least(value: i64) -> i64 {
    u64::try_from(value.max(1)).ok().and_then(u64::checked_next_power_of_two).and_then(|bound| i64::try_from(bound).ok()).unwrap_or(value)
}

/// Microseconds with one decimal, as the summary line prints them.
fn micros(value: Option<i64>) -> String {
    value.map_or_else(|| "-".into(), |ns| format!("{:.1}", ns as f64 / 1000.0))
}

impl Histogram {
    /// Reads a `LATENCY source` reply (RESP3 map or RESP2 flat array).
    pub fn from_value(value: &Value, requested: &str) -> Result<Histogram> {
        let record = Record::from_value(value).ok_or_else(|| CtlError::Protocol("LATENCY did not reply with a map".into()))?;
        let mut buckets: Vec<(i64, i64)> = match record.get("buckets") {
            Some(Value::Array(entries)) => entries
                .iter()
                .filter_map(|entry| match entry {
                    Value::Array(pair) => match pair.as_slice() {
                        [bound, count] => Some((convert::integer(bound)?, convert::integer(count)?)),
                        _ => None,
                    },
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        buckets.sort_unstable();
        Ok(Histogram {
            source: record.text("source").unwrap_or_else(|| requested.to_owned()),
            count: record.integer("count"),
            min_ns: record.integer("min_ns"),
            max_ns: record.integer("max_ns"),
            mean_ns: record.integer("avg_ns").or_else(|| record.integer("mean_ns")),
            p50_ns: record.integer("p50_ns"),
            p90_ns: record.integer("p90_ns"),
            p99_ns: record.integer("p99_ns"),
            p999_ns: record.integer("p999_ns"),
            period_ns: record.integer("period_ns"),
            releases: record.integer("releases"),
            misses: record.integer("misses"),
            sub_buckets: record.integer("sub_buckets"),
            buckets,
        })
    }

    /// The inclusive lower bound of the bucket whose exclusive upper bound
    /// is `upper`: from the log-linear layout (`sub_buckets` per power of
    /// two, one bucket per value below `2 * sub_buckets`), or half the
    /// bound for an older appliance's log2 buckets.
    pub fn bucket_lower_bound(&self, upper: i64) -> i64 {
        let Some(sub_buckets) = self.sub_buckets.filter(|&count| count > 0) else {
            return upper / 2;
        };
        if upper <= 2 * sub_buckets {
            return (upper - 1).max(0);
        }
        // The power of two holding the bucket's last value, split into
        // `sub_buckets` parts.
        let exponent = 63 - (upper - 1).leading_zeros() as i64;
        let parts = 63 - sub_buckets.leading_zeros() as i64;
        upper - (1i64 << (exponent - parts).clamp(0, 62))
    }

    /// The buckets summed per power of two (`(bound, count)`: values below
    /// `bound`), with the empty powers between them put back, so that a
    /// row stands for each doubling. Bounds that do not form such a chain
    /// (or too many rows) are returned as they come.
    pub fn filled_buckets(&self) -> Vec<(i64, i64)> {
        let mut rows: Vec<(i64, i64)> = Vec::new();
        for &(upper, count) in &self.buckets {
            let bound = power_of_two_at_least(upper);
            match rows.last_mut() {
                Some((last, total)) if *last == bound => *total += count,
                _ => rows.push((bound, count)),
            }
        }
        let Some(&(first, _)) = rows.first() else {
            return Vec::new();
        };
        let mut filled = Vec::new();
        let mut bound = first;
        let mut given = rows.iter().peekable();
        while let Some(&&(next_bound, count)) = given.peek() {
            if filled.len() >= MAX_FILLED_BUCKETS || bound <= 0 || bound > next_bound {
                return rows;
            }
            if bound == next_bound {
                filled.push((bound, count));
                given.next();
            } else {
                filled.push((bound, 0));
            }
            match bound.checked_mul(2) {
                Some(doubled) => bound = doubled,
                None if given.peek().is_none() => break,
                None => return rows,
            }
        }
        filled
    }

    /// The cyclictest-style line, figures in microseconds: `T:` is the
    /// source's position on the command line, `I:` the release period of
    /// an RT thread (`-` for other sources), `Misses:` its deadline misses.
    pub fn summary_line(&self, index: usize) -> String {
        let interval = self.period_ns.filter(|&period| period > 0).map_or_else(|| "-".into(), |period| (period / 1000).to_string());
        let count = self.count.map_or_else(|| "-".into(), |count| count.to_string());
        let mut line = format!(
            "T:{index:>2} ({}) I:{interval} C: {count:>7} Min: {:>6} Avg: {:>6} P50: {:>6} P90: {:>6} P99: {:>6} P99.9: {:>6} Max: {:>7}",
            self.source,
            micros(self.min_ns),
            micros(self.mean_ns),
            micros(self.p50_ns),
            micros(self.p90_ns),
            micros(self.p99_ns),
            micros(self.p999_ns),
            micros(self.max_ns),
        );
        if let Some(misses) = self.misses {
            line.push_str(&format!(" Misses: {misses:>3}"));
        }
        line.push_str(" (us)");
        line
    }

    /// The text histogram: one row per power of two, bars scaled to the
    /// fullest row.
    pub fn render_bars(&self) -> String {
        let mut out = String::new();
        let buckets = self.filled_buckets();
        if buckets.is_empty() {
            return out;
        }
        let labels: Vec<String> = buckets.iter().map(|(bound, _)| format!("<{}", format::duration_ns(*bound))).collect();
        let label_width = labels.iter().map(|label| label.chars().count()).max().unwrap_or(0);
        let count_width = buckets.iter().map(|(_, count)| count.to_string().len()).max().unwrap_or(1);
        let largest = buckets.iter().map(|(_, count)| *count).max().unwrap_or(0).max(1);
        for ((_, count), label) in buckets.iter().zip(&labels) {
            let mut bar_length = count.saturating_mul(BAR_WIDTH) / largest;
            if *count > 0 && bar_length == 0 {
                bar_length = 1;
            }
            let bar = "█".repeat(usize::try_from(bar_length).unwrap_or(0));
            let line = format!("{label:>label_width$}  {count:>count_width$}  {bar}");
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `rtctl latency a b ...`: a summary line per source, then, for a single
/// source, its text histogram.
pub fn render(histograms: &[Histogram]) -> String {
    let mut out = String::new();
    for (index, histogram) in histograms.iter().enumerate() {
        out.push_str(&histogram.summary_line(index));
        out.push('\n');
    }
    if let [single] = histograms {
        let bars = single.render_bars();
        if !bars.is_empty() {
            out.push('\n');
            out.push_str(&bars);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(buckets: &[(i64, i64)]) -> Histogram {
        Histogram {
            source: "rt0".into(),
            count: Some(buckets.iter().map(|(_, count)| count).sum()),
            buckets: buckets.to_vec(),
            ..Histogram::default()
        }
    }

    #[test]
    fn empty_powers_of_two_between_buckets_are_shown() {
        let filled = histogram(&[(1024, 1), (8192, 2)]).filled_buckets();
        assert_eq!(filled, [(1024, 1), (2048, 0), (4096, 0), (8192, 2)]);
    }

    #[test]
    fn log_linear_buckets_are_summed_per_power_of_two() {
        // [992, 1008) and [1008, 1024) fall below 1024; [1472, 1504) and
        // [2016, 2048) below 2048; [4992, 5120) below 8192.
        let filled = histogram(&[(1008, 1), (1024, 2), (1504, 3), (2048, 4), (5120, 5)]).filled_buckets();
        assert_eq!(filled, [(1024, 3), (2048, 7), (4096, 0), (8192, 5)]);
    }

    #[test]
    fn lower_bounds_follow_the_log_linear_layout() {
        let mut log_linear = histogram(&[]);
        log_linear.sub_buckets = Some(32);
        // One bucket per value below 64, then 1/32 of the power of two.
        assert_eq!(log_linear.bucket_lower_bound(1), 0);
        assert_eq!(log_linear.bucket_lower_bound(64), 63);
        assert_eq!(log_linear.bucket_lower_bound(66), 64);
        assert_eq!(log_linear.bucket_lower_bound(1008), 992);
        assert_eq!(log_linear.bucket_lower_bound(2048), 2016);
        assert_eq!(log_linear.bucket_lower_bound(5120), 4992);
        // An older appliance's log2 buckets.
        assert_eq!(histogram(&[]).bucket_lower_bound(4096), 2048);
    }

    #[test]
    fn the_text_histogram_scales_bars_to_the_largest_bucket() {
        let text = render(&[histogram(&[(1000, 1), (2000, 4), (8000, 2)])]);
        let expected = "\
T: 0 (rt0) I:- C:       7 Min:      - Avg:      - P50:      - P90:      - P99:      - P99.9:      - Max:       - (us)

<1.02µs  1  ██████████
<2.05µs  4  ████████████████████████████████████████
 <4.1µs  0
<8.19µs  2  ████████████████████
";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_summary_line_per_source_like_cyclictest() {
        let thread = Histogram {
            source: "softirq-rt".into(),
            count: Some(8000),
            min_ns: Some(12_000),
            max_ns: Some(120_400),
            mean_ns: Some(30_050),
            p50_ns: Some(28_000),
            p90_ns: Some(41_000),
            p99_ns: Some(90_000),
            p999_ns: Some(110_000),
            period_ns: Some(1_000_000),
            releases: Some(8000),
            misses: Some(3),
            sub_buckets: Some(32),
            buckets: vec![(12_288, 8000)],
        };
        let other = Histogram { source: "tasklet.delay".into(), count: Some(5), min_ns: Some(800), ..Histogram::default() };
        let text = render(&[thread, other]);
        let expected = "\
T: 0 (softirq-rt) I:1000 C:    8000 Min:   12.0 Avg:   30.1 P50:   28.0 P90:   41.0 P99:   90.0 P99.9:  110.0 Max:   120.4 Misses:   3 (us)
T: 1 (tasklet.delay) I:- C:       5 Min:    0.8 Avg:      - P50:      - P90:      - P99:      - P99.9:      - Max:       - (us)
";
        assert_eq!(text, expected);
    }

    #[test]
    fn replies_in_both_protocols_read_the_same() {
        let bulk = |text: &str| Value::Bulk(text.as_bytes().to_vec());
        let buckets = Value::Array(vec![
            Value::Array(vec![Value::Integer(2048), Value::Integer(5)]),
            Value::Array(vec![Value::Integer(1024), Value::Integer(3)]),
        ]);
        let resp2 = Value::Array(vec![bulk("source"), bulk("rt0"), bulk("count"), Value::Integer(8), bulk("buckets"), buckets.clone()]);
        let resp3 = Value::Map(vec![(bulk("source"), bulk("rt0")), (bulk("count"), Value::Integer(8)), (bulk("buckets"), buckets)]);
        let a = Histogram::from_value(&resp2, "rt0").ok();
        let b = Histogram::from_value(&resp3, "rt0").ok();
        assert_eq!(a, b);
        assert_eq!(a.map(|h| h.buckets), Some(vec![(1024, 3), (2048, 5)]));
    }
}
