//! `rtctl latency`: a `LATENCY source` histogram as figures and bars.

use rtedge_proto::Value;

use crate::convert::{self, Record};
use crate::error::{CtlError, Result};
use crate::format;

/// Widest bar of the text histogram, in characters.
const BAR_WIDTH: i64 = 40;
/// Most buckets shown when filling the gaps between log2 buckets; beyond
/// this the buckets are shown as the server sent them.
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
    /// Mean.
    pub mean_ns: Option<i64>,
    /// Percentiles 50, 90, 99, 99.9.
    pub p50_ns: Option<i64>,
    /// 90th percentile.
    pub p90_ns: Option<i64>,
    /// 99th percentile.
    pub p99_ns: Option<i64>,
    /// 99.9th percentile.
    pub p999_ns: Option<i64>,
    /// `(upper bound in ns, count)` of each non-empty bucket, ascending.
    pub buckets: Vec<(i64, i64)>,
}

impl Histogram {
    /// Reads a `LATENCY source` reply (RESP3 map or RESP2 flat array).
    pub fn from_value(value: &Value, requested: &str) -> Result<Histogram> {
        let record = Record::from_value(value)
            .ok_or_else(|| CtlError::Protocol("LATENCY did not reply with a map".into()))?;
        let mut buckets: Vec<(i64, i64)> = match record.get("buckets") {
            Some(Value::Array(entries)) => entries
                .iter()
                .filter_map(|entry| match entry {
                    Value::Array(pair) => match pair.as_slice() {
                        [bound, count] => {
                            Some((convert::integer(bound)?, convert::integer(count)?))
                        }
                        _ => None,
                    },
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        buckets.sort_unstable();
        Ok(Histogram {
            source: record
                .text("source")
                .unwrap_or_else(|| requested.to_owned()),
            count: record.integer("count"),
            min_ns: record.integer("min_ns"),
            max_ns: record.integer("max_ns"),
            mean_ns: record.integer("mean_ns"),
            p50_ns: record.integer("p50_ns"),
            p90_ns: record.integer("p90_ns"),
            p99_ns: record.integer("p99_ns"),
            p999_ns: record.integer("p999_ns"),
            buckets,
        })
    }

    /// The buckets with the empty log2 buckets between them put back, so
    /// that a row or bar stands for each doubling. Bounds that are not a
    /// doubling chain are returned as they are.
    pub fn filled_buckets(&self) -> Vec<(i64, i64)> {
        let Some(&(first, _)) = self.buckets.first() else {
            return Vec::new();
        };
        let mut filled = Vec::new();
        let mut bound = first;
        let mut given = self.buckets.iter().peekable();
        while let Some(&&(next_bound, count)) = given.peek() {
            if filled.len() >= MAX_FILLED_BUCKETS || bound <= 0 || bound > next_bound {
                return self.buckets.clone();
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
                None => return self.buckets.clone(),
            }
        }
        filled
    }

    /// The figures and the text histogram.
    pub fn render(&self) -> String {
        let duration = |value: Option<i64>| value.map_or_else(|| "-".into(), format::duration_ns);
        let figures = [
            ("source", self.source.clone()),
            (
                "count",
                self.count
                    .map_or_else(|| "-".into(), |count| count.to_string()),
            ),
            ("min", duration(self.min_ns)),
            ("p50", duration(self.p50_ns)),
            ("p90", duration(self.p90_ns)),
            ("p99", duration(self.p99_ns)),
            ("p99.9", duration(self.p999_ns)),
            ("max", duration(self.max_ns)),
            ("mean", duration(self.mean_ns)),
        ];
        let mut out = String::new();
        for (label, value) in figures {
            out.push_str(&format!("{label:<8}{value}\n"));
        }
        let buckets = self.filled_buckets();
        if buckets.is_empty() {
            return out;
        }
        out.push('\n');
        let labels: Vec<String> = buckets
            .iter()
            .map(|(bound, _)| format!("≤{}", format::duration_ns(*bound)))
            .collect();
        let label_width = labels
            .iter()
            .map(|label| label.chars().count())
            .max()
            .unwrap_or(0);
        let count_width = buckets
            .iter()
            .map(|(_, count)| count.to_string().len())
            .max()
            .unwrap_or(1);
        let largest = buckets
            .iter()
            .map(|(_, count)| *count)
            .max()
            .unwrap_or(0)
            .max(1);
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
    fn empty_log2_buckets_between_others_are_shown() {
        let filled = histogram(&[(1024, 1), (8192, 2)]).filled_buckets();
        assert_eq!(filled, [(1024, 1), (2048, 0), (4096, 0), (8192, 2)]);
        // Not a doubling chain: left alone.
        let odd = histogram(&[(1000, 1), (3000, 2)]).filled_buckets();
        assert_eq!(odd, [(1000, 1), (3000, 2)]);
    }

    #[test]
    fn the_text_histogram_scales_bars_to_the_largest_bucket() {
        let text = histogram(&[(1000, 1), (2000, 4), (8000, 2)]).render();
        let expected = "\
source  rt0
count   7
min     -
p50     -
p90     -
p99     -
p99.9   -
max     -
mean    -

≤1µs  1  ██████████
≤2µs  4  ████████████████████████████████████████
≤4µs  0
≤8µs  2  ████████████████████
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
        let resp2 = Value::Array(vec![
            bulk("source"),
            bulk("rt0"),
            bulk("count"),
            Value::Integer(8),
            bulk("buckets"),
            buckets.clone(),
        ]);
        let resp3 = Value::Map(vec![
            (bulk("source"), bulk("rt0")),
            (bulk("count"), Value::Integer(8)),
            (bulk("buckets"), buckets),
        ]);
        let a = Histogram::from_value(&resp2, "rt0").ok();
        let b = Histogram::from_value(&resp3, "rt0").ok();
        assert_eq!(a, b);
        assert_eq!(a.map(|h| h.buckets), Some(vec![(1024, 3), (2048, 5)]));
    }
}
