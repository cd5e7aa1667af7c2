//! The Prometheus exposition the kernel renders (`control::metrics`), read
//! back the way a scraper reads it: every thread appears with its id, a
//! latency source's histogram has ascending `le` bounds, cumulative counts
//! ending at its sample count, and its sum; every sample line has a valid
//! name and a number. The bucket layout is the histogram's own, so nothing
//! here assumes log2 bounds.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use rtedge_engine::histogram::LatencyHistogram;

use crate::control::metrics;
use rtedge_kernel::ktest::{Outcome, Test};
use rtedge_kernel::latency::{self, Source};
use rtedge_kernel::sync::IrqSpinLock;
use rtedge_kernel::{check, check_eq, thread};

pub const TESTS: &[Test] = &[
    Test { name: "metrics::every_thread_appears_with_its_id", run: every_thread },
    Test { name: "metrics::a_latency_source_is_a_cumulative_histogram", run: latency_histogram },
    Test { name: "metrics::every_sample_line_has_a_valid_name_and_a_number", run: sample_lines },
];

fn every_thread() -> Outcome {
    let text = metrics::render();
    for info in thread::list().into_iter().filter(|info| info.state != thread::State::Free) {
        let needle = format!(
            "rtedge_thread_runtime_seconds_total{{thread=\"{}\",id=\"{}\"",
            info.name.replace('\\', "\\\\").replace('"', "\\\""),
            info.id
        );
        check!(text.contains(&needle), "no `{needle}` in the exposition");
    }
    Ok(())
}

static SOURCE: Source = IrqSpinLock::new(LatencyHistogram::new());

fn latency_histogram() -> Outcome {
    SOURCE.lock().reset();
    for value in [100, 1_500, 1_500, 90_000] {
        latency::record(&SOURCE, value);
    }
    latency::register("ktest.metrics", &SOURCE);
    let text = metrics::render();
    latency::unregister("ktest.metrics");
    let prefix = "rtedge_latency_seconds_bucket{source=\"ktest.metrics\",le=\"";
    let mut bounds: Vec<(String, u64)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(prefix) {
            let (bound, count) = rest.split_once("\"} ").ok_or_else(|| format!("bucket line `{line}`"))?;
            bounds.push((String::from(bound), count.parse().map_err(|_| format!("count in `{line}`"))?));
        }
    }
    check!(bounds.len() >= 2, "buckets: {bounds:?}");
    let (last_bound, last_count) = bounds.last().cloned().unwrap_or_default();
    check_eq!(last_bound.as_str(), "+Inf");
    check_eq!(last_count, 4);
    let finite: Vec<(f64, u64)> = bounds
        .iter()
        .filter(|(bound, _)| bound != "+Inf")
        .filter_map(|(bound, count)| Some((bound.parse::<f64>().ok()?, *count)))
        .collect();
    check_eq!(finite.len(), bounds.len() - 1);
    for pair in finite.windows(2) {
        check!(pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1, "not ascending and cumulative: {finite:?}");
    }
    // 100 ns is at or below the first bound; all four are at or below the last.
    check!(finite.first().is_some_and(|(bound, count)| *bound >= 100e-9 && *count >= 1), "{finite:?}");
    check!(finite.last().is_some_and(|(bound, count)| *bound >= 90_000e-9 && *count == 4), "{finite:?}");
    // The mean is 23 275 ns: the sum is mean × count.
    check!(text.contains("rtedge_latency_seconds_sum{source=\"ktest.metrics\"} 0.0000931\n"), "sum line");
    check!(text.contains("rtedge_latency_seconds_count{source=\"ktest.metrics\"} 4\n"), "count line");
    Ok(())
}

fn sample_lines() -> Outcome {
    let text = metrics::render();
    let mut samples = 0;
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let name_end = line.find(['{', ' ']).ok_or_else(|| format!("line `{line}`"))?;
        check!(rtedge_control::metrics::is_metric_name(&line[..name_end]), "name in `{line}`");
        let value = line.rsplit(' ').next().unwrap_or("");
        check!(value == "+Inf" || value.parse::<f64>().is_ok(), "value in `{line}`");
        samples += 1;
    }
    check!(samples > 20, "{samples} samples");
    Ok(())
}
