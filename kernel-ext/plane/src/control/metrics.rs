//! Prometheus metrics: `GET /metrics` on the metrics port and the
//! `METRICS` command return the same text, gathered here from the
//! counters the kernel already keeps (the numbers of `INFO`, `IRQS`,
//! `SOFTIRQS`, `THREADS` and `LATENCY`) and written by
//! `rtedge_control::metrics` (text exposition format 0.0.4).
//!
//! The HTTP half (`crate::net`: the server on `metrics_port=`) runs in
//! NET_RX under the network lock and only parses and writes; gathering
//! takes other subsystems' locks and allocates, so it runs in process
//! context: when a request waits, NET_RX queues a work item on the system
//! workqueue that calls [`render`] (plugged in by the control plane's
//! start) outside the network lock and hands the text back.
//!
//! Names follow Prometheus's conventions: an `rtedge_` prefix, base units
//! (seconds, bytes), `_total` on counters. Threads carry `thread` (name)
//! and `id` labels (names need not be unique); latency sources are one
//! histogram family, `rtedge_latency_seconds{source=...}`, with the
//! histogram's own buckets (whatever their layout).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use rtedge_control::metrics::{Exposition, MetricType, Value};
use rtedge_engine::histogram::LatencyHistogram;

use crate::net;
use rtedge_kernel::{cpu_local, events, latency, memory, rtpool, softirq, thread, time, trap};

/// The whole exposition.
pub fn render() -> String {
    let mut exposition = Exposition::new();
    system(&mut exposition);
    interrupts(&mut exposition);
    threads(&mut exposition);
    latencies(&mut exposition);
    memory_and_pool(&mut exposition);
    control_plane(&mut exposition);
    exposition.finish()
}

fn system(exposition: &mut Exposition) {
    exposition.single("rtedge_uptime_seconds", MetricType::Gauge, "Time since boot.", Value::Nanoseconds(u128::from(time::now_ns())));
    exposition.single("rtedge_cpus", MetricType::Gauge, "CPUs online.", Value::Integer(u64::from(thread::online_mask().count_ones())));
    exposition.family("rtedge_cpu_context_switches_total", MetricType::Counter, "Context switches per CPU.");
    for index in 0..cpu_local::MAX_CPUS {
        if cpu_local::get(index).is_some() {
            let cpu = format!("{index}");
            exposition.sample(&[("cpu", &cpu)], Value::Integer(thread::cpu_switches_on(index as u32)));
        }
    }
}

fn interrupts(exposition: &mut Exposition) {
    exposition.family("rtedge_interrupts_total", MetricType::Counter, "Hard interrupts taken, per vector and CPU.");
    for line in trap::interrupt_lines() {
        let vector = format!("{:#04x}", line.vector);
        for (cpu, &count) in line.per_cpu.iter().enumerate() {
            let cpu = format!("{cpu}");
            exposition.sample(&[("vector", &vector), ("name", line.name), ("cpu", &cpu)], Value::Integer(count));
        }
    }
    exposition.family("rtedge_softirqs_total", MetricType::Counter, "Soft interrupt runs, per vector and CPU.");
    for line in softirq::counts() {
        for (cpu, &count) in line.per_cpu.iter().enumerate() {
            let cpu = format!("{cpu}");
            exposition.sample(&[("softirq", &line.name), ("cpu", &cpu)], Value::Integer(count));
        }
    }
    exposition.single(
        "rtedge_ksoftirqd_handovers_total",
        MetricType::Counter,
        "Times soft interrupt work was handed to ksoftirqd (budget exceeded).",
        Value::Integer(softirq::handovers()),
    );
}

/// One thread's numbers, with its labels' text.
struct ThreadLine {
    name: String,
    id: String,
    kind: &'static str,
    runtime_ns: u64,
    switches: u64,
    periodic: Option<(u64, u64, u64)>,
}

fn threads(exposition: &mut Exposition) {
    let lines: Vec<ThreadLine> = thread::list()
        .into_iter()
        .filter(|info| info.state != thread::State::Free)
        .map(|info| {
            let id = format!("{}", info.id);
            // Overruns (releases skipped because the job ran past them)
            // live only in the periodic state.
            let periodic = thread::find(&id)
                .and_then(|found| found.realtime_stats().periodic)
                .map(|periodic| (periodic.releases(), periodic.misses(), periodic.skipped()));
            ThreadLine { name: info.name, id, kind: info.kind.name(), runtime_ns: info.runtime_ns, switches: info.switches, periodic }
        })
        .collect();
    exposition.family("rtedge_thread_runtime_seconds_total", MetricType::Counter, "CPU time each thread has run.");
    for line in &lines {
        exposition
            .sample(&[("thread", &line.name), ("id", &line.id), ("kind", line.kind)], Value::Nanoseconds(u128::from(line.runtime_ns)));
    }
    exposition.family("rtedge_thread_switches_total", MetricType::Counter, "Times each thread was switched in.");
    for line in &lines {
        exposition.sample(&[("thread", &line.name), ("id", &line.id), ("kind", line.kind)], Value::Integer(line.switches));
    }
    let periodic: Vec<(&ThreadLine, (u64, u64, u64))> =
        lines.iter().filter_map(|line| line.periodic.map(|numbers| (line, numbers))).collect();
    let families: [(&str, &str); 3] = [
        ("rtedge_thread_releases_total", "Periodic releases of each real-time thread."),
        ("rtedge_thread_deadline_misses_total", "Jobs of each periodic thread that ended after their deadline."),
        ("rtedge_thread_overruns_total", "Releases each periodic thread skipped because a job ran past them."),
    ];
    for (index, (name, help)) in families.into_iter().enumerate() {
        exposition.family(name, MetricType::Counter, help);
        for (line, (releases, misses, skipped)) in &periodic {
            let value = [*releases, *misses, *skipped].get(index).copied().unwrap_or(0);
            exposition.sample(&[("thread", &line.name), ("id", &line.id)], Value::Integer(value));
        }
    }
}

/// Every latency source (registered ones and RT threads) as a histogram.
fn latencies(exposition: &mut Exposition) {
    exposition.family(
        "rtedge_latency_seconds",
        MetricType::Histogram,
        "Latency per source (thread:NAME is an RT thread's release latency); the sum is the mean times the count.",
    );
    for name in latency::names() {
        if let Some(histogram) = latency::snapshot(&name, false) {
            write_histogram(exposition, &name, &histogram);
        }
    }
}

fn write_histogram(exposition: &mut Exposition, source: &str, histogram: &LatencyHistogram) {
    // The accessor gives exclusive upper bounds in integer nanoseconds: a
    // bucket below U holds values up to U - 1 (Prometheus's `le` is
    // inclusive); the last bucket (bound u64::MAX) is the +Inf bucket's.
    let buckets =
        histogram.non_empty_buckets().map(|(upper, count)| (if upper == u64::MAX { upper } else { upper.saturating_sub(1) }, count));
    let count = histogram.count();
    // The exact sum is not exposed; mean × count is within count ns of it.
    let sum = u128::from(histogram.mean().unwrap_or(0)) * u128::from(count);
    exposition.histogram(&[("source", source)], buckets, count, sum, true);
}

fn memory_and_pool(exposition: &mut Exposition) {
    let heap = memory::heap::statistics();
    let gauges: [(&str, &str, u64); 4] = [
        ("rtedge_heap_size_bytes", "Bytes the general heap manages.", heap.claimed_bytes as u64),
        ("rtedge_heap_used_bytes", "Heap bytes allocated now.", heap.allocated_bytes as u64),
        ("rtedge_heap_free_bytes", "Heap bytes available now.", heap.available_bytes as u64),
        ("rtedge_heap_live_allocations", "Heap allocations live now.", heap.allocation_count as u64),
    ];
    for (name, help, value) in gauges {
        exposition.single(name, MetricType::Gauge, help, Value::Integer(value));
    }
    let counters: [(&str, &str, u64); 3] = [
        ("rtedge_heap_allocations_total", "Heap allocations since boot.", heap.total_allocations),
        ("rtedge_heap_failed_allocations_total", "Heap allocations refused.", heap.failed_allocations),
        ("rtedge_heap_realtime_violations_total", "Heap allocations attempted from RT context.", heap.realtime_violations),
    ];
    for (name, help, value) in counters {
        exposition.single(name, MetricType::Counter, help, Value::Integer(value));
    }
    let pool = rtpool::stats();
    exposition.single("rtedge_rtpool_buffers", MetricType::Gauge, "Buffers in the RT pool.", Value::Integer(pool.capacity as u64));
    exposition.single(
        "rtedge_rtpool_buffers_in_use",
        MetricType::Gauge,
        "RT pool buffers taken now.",
        Value::Integer(u64::from(pool.in_use)),
    );
    exposition.single(
        "rtedge_rtpool_buffer_size_bytes",
        MetricType::Gauge,
        "Bytes per RT pool buffer.",
        Value::Integer(pool.max_size as u64),
    );
    exposition.single("rtedge_rtpool_requests_total", MetricType::Counter, "RT pool requests.", Value::Integer(pool.requests));
    exposition.single("rtedge_rtpool_failures_total", MetricType::Counter, "RT pool requests refused.", Value::Integer(pool.failures));
    exposition.single("rtedge_rtpool_freed_total", MetricType::Counter, "RT pool buffers given back.", Value::Integer(pool.freed));
}

fn control_plane(exposition: &mut Exposition) {
    exposition.single(
        "rtedge_events_emitted_total",
        MetricType::Counter,
        "Events emitted into the per-CPU rings.",
        Value::Integer(events::emitted()),
    );
    exposition.single("rtedge_events_dropped_total", MetricType::Counter, "Events dropped (ring full).", Value::Integer(events::dropped()));
    exposition.single(
        "rtedge_pubsub_published_total",
        MetricType::Counter,
        "Messages published on channels.",
        Value::Integer(super::published()),
    );
    let Some((resp, http)) = net::server_stats() else { return };
    let gauges: [(&str, &str, u64); 1] =
        [("rtedge_control_connections", "Control-plane (RESP) connections open now.", resp.connected as u64)];
    for (name, help, value) in gauges {
        exposition.single(name, MetricType::Gauge, help, Value::Integer(value));
    }
    let counters: [(&str, &str, u64); 6] = [
        ("rtedge_control_connections_total", "Control-plane connections accepted.", resp.accepted),
        ("rtedge_control_connections_rejected_total", "Control-plane connections refused at the limit.", resp.rejected),
        ("rtedge_control_commands_total", "Control-plane commands executed.", resp.commands),
        ("rtedge_control_protocol_errors_total", "Control-plane connections closed for a malformed request.", resp.protocol_errors),
        ("rtedge_control_received_bytes_total", "Bytes received from control-plane clients.", resp.bytes_in),
        ("rtedge_control_sent_bytes_total", "Bytes sent to control-plane clients.", resp.bytes_out),
    ];
    for (name, help, value) in counters {
        exposition.single(name, MetricType::Counter, help, Value::Integer(value));
    }
    if let Some(http) = http {
        exposition.family(
            "rtedge_metrics_http_responses_total",
            MetricType::Counter,
            "Replies of the metrics HTTP server, by status code.",
        );
        for (code, count) in http.by_status() {
            let code = format!("{code}");
            exposition.sample(&[("code", &code)], Value::Integer(count));
        }
        exposition.single(
            "rtedge_metrics_http_reply_timeouts_total",
            MetricType::Counter,
            "Metrics connections reset because the reply did not leave in time.",
            Value::Integer(http.reply_timeouts),
        );
    }
}
