//! The Prometheus text exposition format 0.0.4 as `metrics.rs` writes it:
//! HELP/TYPE lines, valid names only, escaped label values, histograms
//! with cumulative buckets, `+Inf`, `_sum` and `_count`, nanoseconds as
//! exact seconds.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test scaffolding: a failure is a test failure")]

use rtedge_control::metrics::{Exposition, MetricType, Value, is_label_name, is_metric_name, write_seconds};

#[test]
fn counter_and_gauge_families_have_help_and_type_lines() {
    let mut exposition = Exposition::new();
    assert!(exposition.family("rtedge_interrupts_total", MetricType::Counter, "Interrupts taken."));
    exposition.sample(&[("cpu", "0"), ("vector", "0x20")], Value::Integer(12));
    exposition.sample(&[("cpu", "1"), ("vector", "0x20")], Value::Integer(3));
    exposition.single("rtedge_heap_used_bytes", MetricType::Gauge, "Heap bytes in use.", Value::Integer(4096));
    exposition.single("rtedge_offset", MetricType::Gauge, "A signed one.", Value::Signed(-5));
    assert_eq!(
        exposition.finish(),
        "# HELP rtedge_interrupts_total Interrupts taken.\n\
         # TYPE rtedge_interrupts_total counter\n\
         rtedge_interrupts_total{cpu=\"0\",vector=\"0x20\"} 12\n\
         rtedge_interrupts_total{cpu=\"1\",vector=\"0x20\"} 3\n\
         # HELP rtedge_heap_used_bytes Heap bytes in use.\n\
         # TYPE rtedge_heap_used_bytes gauge\n\
         rtedge_heap_used_bytes 4096\n\
         # HELP rtedge_offset A signed one.\n\
         # TYPE rtedge_offset gauge\n\
         rtedge_offset -5\n"
    );
}

#[test]
fn names_are_checked_and_invalid_families_are_left_out_whole() {
    for valid in ["a", "_x", ":y", "rtedge_thread_runtime_seconds_total", "a:b_c9"] {
        assert!(is_metric_name(valid), "{valid}");
    }
    for invalid in ["", "9a", "a-b", "a b", "é", "a.b", "a{b}"] {
        assert!(!is_metric_name(invalid), "{invalid}");
    }
    for valid in ["cpu", "_x", "thread_name", "A9"] {
        assert!(is_label_name(valid), "{valid}");
    }
    for invalid in ["", "__name__", "__x", "9a", "a:b", "a-b"] {
        assert!(!is_label_name(invalid), "{invalid}");
    }
    let mut exposition = Exposition::new();
    assert!(!exposition.family("bad-name", MetricType::Counter, "x"));
    exposition.sample(&[], Value::Integer(1));
    assert!(exposition.family("good", MetricType::Counter, "x"));
    exposition.sample(&[("bad-label", "v")], Value::Integer(1));
    exposition.sample(&[("__name__", "v")], Value::Integer(1));
    exposition.sample(&[("a", "1"), ("a", "2")], Value::Integer(1));
    exposition.sample(&[("ok", "v")], Value::Integer(2));
    assert_eq!(exposition.rejected(), 4);
    assert_eq!(exposition.finish(), "# HELP good x\n# TYPE good counter\ngood{ok=\"v\"} 2\n");
}

#[test]
fn label_values_and_help_are_escaped() {
    let mut exposition = Exposition::new();
    exposition.family("m", MetricType::Gauge, "line one\nback\\slash \"quoted\"");
    exposition.sample(&[("thread", "a\"b\\c\nd}e,f=g")], Value::Integer(1));
    assert_eq!(
        exposition.finish(),
        "# HELP m line one\\nback\\\\slash \"quoted\"\n# TYPE m gauge\nm{thread=\"a\\\"b\\\\c\\nd}e,f=g\"} 1\n"
    );
}

#[test]
fn nanoseconds_are_written_as_exact_seconds() {
    let cases: [(u128, &str); 7] = [
        (0, "0"),
        (1, "0.000000001"),
        (1_023, "0.000001023"),
        (1_500, "0.0000015"),
        (2_500_000_000, "2.5"),
        (3_000_000_000, "3"),
        (u128::from(u64::MAX), "18446744073.709551615"),
    ];
    for (nanoseconds, expected) in cases {
        let mut text = String::new();
        write_seconds(&mut text, nanoseconds);
        assert_eq!(text, expected, "{nanoseconds} ns");
    }
}

#[test]
fn histogram_buckets_are_cumulative_with_inf_sum_and_count() {
    let mut exposition = Exposition::new();
    assert!(exposition.family("rtedge_latency_seconds", MetricType::Histogram, "Release latency."));
    // Per-bucket counts (1023 ns: 2, 2047 ns: 5, 4095 ns: 1), plus one in
    // the last, unbounded bucket.
    exposition.histogram(&[("source", "thread:rt")], [(1_023, 2), (2_047, 5), (4_095, 1), (u64::MAX, 1)], 9, 20_000, true);
    assert_eq!(
        exposition.finish(),
        "# HELP rtedge_latency_seconds Release latency.\n\
         # TYPE rtedge_latency_seconds histogram\n\
         rtedge_latency_seconds_bucket{source=\"thread:rt\",le=\"0.000001023\"} 2\n\
         rtedge_latency_seconds_bucket{source=\"thread:rt\",le=\"0.000002047\"} 7\n\
         rtedge_latency_seconds_bucket{source=\"thread:rt\",le=\"0.000004095\"} 8\n\
         rtedge_latency_seconds_bucket{source=\"thread:rt\",le=\"+Inf\"} 9\n\
         rtedge_latency_seconds_sum{source=\"thread:rt\"} 0.00002\n\
         rtedge_latency_seconds_count{source=\"thread:rt\"} 9\n"
    );
}

#[test]
fn histogram_edge_cases_keep_the_series_monotonic() {
    let mut exposition = Exposition::new();
    exposition.family("h", MetricType::Histogram, "x");
    // Empty: only +Inf, _sum and _count.
    exposition.histogram(&[], [], 0, 0, false);
    // A count below the buckets' total is raised; a bound out of order is
    // merged into the bucket before it.
    exposition.histogram(&[("s", "b")], [(10, 1), (5, 2), (20, 3)], 1, 7, false);
    // `le` is the histogram's own label.
    exposition.histogram(&[("le", "1")], [(10, 1)], 1, 1, false);
    // Samples are not for histograms.
    exposition.sample(&[], Value::Integer(1));
    assert_eq!(exposition.rejected(), 1);
    assert_eq!(
        exposition.finish(),
        "# HELP h x\n# TYPE h histogram\n\
         h_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n\
         h_bucket{s=\"b\",le=\"10\"} 3\nh_bucket{s=\"b\",le=\"20\"} 6\nh_bucket{s=\"b\",le=\"+Inf\"} 6\nh_sum{s=\"b\"} 7\nh_count{s=\"b\"} 6\n"
    );
}

/// Every line of a generated exposition parses the way Prometheus's text
/// parser reads it: comments, or `name{labels} value` with a valid name, a
/// numeric value and properly quoted labels; every sample belongs to the
/// family announced before it.
#[test]
fn a_generated_exposition_parses_line_by_line() {
    let mut exposition = Exposition::new();
    exposition.family("rtedge_thread_releases_total", MetricType::Counter, "Releases.");
    for (index, name) in ["rt-1", "odd \"name\"", "back\\slash", "new\nline"].iter().enumerate() {
        exposition.sample(&[("thread", name), ("id", &index.to_string())], Value::Integer(index as u64));
    }
    exposition.family("rtedge_latency_seconds", MetricType::Histogram, "Latency.");
    exposition.histogram(&[("source", "softirq")], [(1, 1), (3, 4), (7, 9)], 14, 55, true);
    let text = exposition.finish();
    let mut family = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            family = rest.split(' ').next().unwrap().to_string();
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (name, rest) = line.split_at(line.find(['{', ' ']).unwrap());
        assert!(is_metric_name(name), "{line}");
        assert!(name.starts_with(&family), "{line} outside family {family}");
        let value = if let Some(labels) = rest.strip_prefix('{') {
            // Walk the quoted values, honouring escapes.
            let bytes = labels.as_bytes();
            let mut index = 0;
            loop {
                let equals = labels[index..].find('=').unwrap() + index;
                assert!(is_label_name(&labels[index..equals]), "{line}");
                assert_eq!(bytes[equals + 1], b'"', "{line}");
                index = equals + 2;
                while bytes[index] != b'"' {
                    if bytes[index] == b'\\' {
                        assert!(matches!(bytes[index + 1], b'\\' | b'"' | b'n'), "{line}");
                        index += 1;
                    }
                    index += 1;
                }
                index += 1;
                match bytes[index] {
                    b',' => index += 1,
                    b'}' => break &labels[index + 1..],
                    other => panic!("{line}: unexpected {}", other as char),
                }
            }
        } else {
            rest
        };
        let value = value.strip_prefix(' ').unwrap();
        assert!(value == "+Inf" || value.parse::<f64>().is_ok(), "{line}");
    }
    assert!(text.contains("thread=\"new\\nline\""));
}
