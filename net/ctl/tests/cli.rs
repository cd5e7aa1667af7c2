//! `rtctl` end to end: the real binary against the fake control plane in
//! `support`, checking stdout, stderr, exit codes and the requests sent.

mod support;

use std::path::Path;

use support::{Config, FakeServer, TOKEN, TempDir, run, stderr, stdout};

/// Asserts the exit code, showing both streams when it differs.
fn assert_code(output: &std::process::Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "stdout:\n{}\nstderr:\n{}", stdout(output), stderr(output));
}

fn json(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

#[test]
fn status_summarises_info() {
    let server = FakeServer::start();
    let output = server.rtctl(&["status"]);
    assert_code(&output, 0);
    assert_eq!(
        stdout(&output),
        "\
version    0.1.0
uptime     1h 02m 03s
boot path  pvh (qemu-microvm)
CPUs       2
heap       1.0 MiB / 16.0 MiB (6.2%)
threads    3
clients    1
"
    );
    assert_eq!(server.commands(), ["INFO"]);
}

#[test]
fn the_handshake_is_hello_3_with_auth() {
    let server = FakeServer::start();
    assert_code(&server.rtctl(&["ping"]), 0);
    assert_eq!(server.requests().first().map(|request| request.join(" ")), Some(format!("HELLO 3 AUTH default {TOKEN}")));
}

#[test]
fn status_json_has_every_info_section() {
    let server = FakeServer::start();
    let output = server.rtctl(&["--json", "status"]);
    assert_code(&output, 0);
    assert_eq!(
        json(&output),
        serde_json::json!({
            "server": {
                "rtedge_version": "0.1.0",
                "uptime_in_seconds": 3723,
                "uptime_ns": 3_723_000_000_000_i64,
                "boot_path": "pvh",
                "hypervisor": "qemu-microvm"
            },
            "clients": {"connected_clients": 1},
            "memory": {"heap_used": 1_048_576, "heap_total": 16_777_216},
            "cpu": {"cpus": 2},
            "threads": {"threads": 3}
        })
    );
}

const THREADS_TABLE: &str = "\
ID  NAME      KIND    PRIO/NICE  STATE     CPU  AFFINITY  RUNTIME  SWITCHES  PERIOD  MISSES  LAT-MIN  LAT-MAX  LAT-MEAN
 0  idle/0    idle            -  running     0  0              5s         7       -       0        -        -         -
 1  rt0       rt             90  sleeping    1  1           1.5ms      1200     1ms       2    900ns   12.3µs     2.1µs
 2  events/0  kernel    nice -5  blocked     0  0-1            2s         7       -       0        -        -         -
";

#[test]
fn threads_prints_a_table_with_humanized_durations() {
    let server = FakeServer::start();
    let output = server.rtctl(&["threads"]);
    assert_code(&output, 0);
    assert_eq!(stdout(&output), THREADS_TABLE);
}

#[test]
fn threads_over_resp2_reads_flat_maps_the_same() {
    let server = FakeServer::with(Config { hello: false, ..Config::default() });
    let output = server.rtctl(&["threads"]);
    assert_code(&output, 0);
    assert_eq!(stdout(&output), THREADS_TABLE);
    // HELLO refused, so the token went by AUTH.
    let requests: Vec<String> = server.requests().iter().map(|request| request.join(" ")).collect();
    assert_eq!(requests, [format!("HELLO 3 AUTH default {TOKEN}"), format!("AUTH {TOKEN}"), "THREADS".into()]);
}

#[test]
fn threads_json_is_the_same_in_resp2_and_resp3() {
    let resp3 = FakeServer::start().rtctl(&["--json", "threads"]);
    let resp2 = FakeServer::with(Config { hello: false, ..Config::default() }).rtctl(&["threads", "--json"]);
    assert_code(&resp3, 0);
    assert_code(&resp2, 0);
    assert_eq!(stdout(&resp3), stdout(&resp2));
    let threads = json(&resp3);
    assert_eq!(
        threads[1],
        serde_json::json!({
            "id": 1, "name": "rt0", "kind": "rt", "priority": 90, "nice": 0,
            "state": "sleeping", "cpu": 1, "affinity": "1", "runtime_ns": 1_500_000,
            "switches": 1200, "period_ns": 1_000_000, "releases": 1000, "misses": 2,
            "latency_min_ns": 900, "latency_max_ns": 12_345, "latency_mean_ns": 2100
        })
    );
    assert_eq!(threads.as_array().map(Vec::len), Some(3));
}

#[test]
fn irqs_and_softirqs_have_a_column_per_cpu_and_a_total() {
    let server = FakeServer::start();
    let irqs = server.rtctl(&["irqs"]);
    assert_code(&irqs, 0);
    assert_eq!(
        stdout(&irqs),
        "\
VECTOR  NAME        CPU0  CPU1  TOTAL
    32  timer       1000   998   1998
    33  virtio-net    12     0     12
"
    );
    let softirqs = server.rtctl(&["softirqs"]);
    assert_code(&softirqs, 0);
    assert_eq!(
        stdout(&softirqs),
        "\
VEC  NAME     HANDLER                  OWNER   CPU0  CPU1  TOTAL
  0  HI       tasklet::action(hi)      kernel     0     0      0
  1  TIMER    timer::run_jiffy_timers  kernel  1000   998   1998
  3  NET_RX   net::net_rx              kernel    12     0     12
  6  TASKLET  tasklet::action          kernel     3     1      4
"
    );
    let json_output = server.rtctl(&["--json", "irqs"]);
    assert_eq!(json(&json_output)[0], serde_json::json!({"vector": 32, "name": "timer", "cpu0": 1000, "cpu1": 998, "total": 1998}));
}

#[test]
fn tasklets_timers_and_workqueues_are_tables_with_their_names() {
    let server = FakeServer::start();
    let tasklets = server.rtctl(&["tasklets"]);
    assert_code(&tasklets, 0);
    assert_eq!(
        stdout(&tasklets),
        "\
NAME     STATE      DISABLED  SCHEDULES  RUNS  OWNER
tasklet  scheduled         0         21    20  tasklet
"
    );
    let timers = server.rtctl(&["timers"]);
    assert_code(&timers, 0);
    assert_eq!(
        stdout(&timers),
        "\
NAME       ARMED  EXPIRES-IN  PERIOD  FIRED  OWNER
heartbeat  yes         250ms      1s     61  -
"
    );
    let workqueues = server.rtctl(&["workqueues"]);
    assert_code(&workqueues, 0);
    assert_eq!(
        stdout(&workqueues),
        "\
NAME  WORKERS  QUEUED  RUNNING  DONE  DELAYED  FLAGS          OWNER
jobs        1       2        1     7        0  single-thread  job

ITEM  KIND   PENDING  RUNNING  RUNS  OWNER
job   plain  yes      no          7  job
"
    );
    assert_eq!(server.commands(), ["TASKLETS", "TIMERS", "WORKQUEUES", "WORKQUEUES ITEMS"]);
}

#[test]
fn the_listings_in_json_are_rows_alike_in_resp2_and_resp3() {
    for command in ["tasklets", "timers", "workqueues", "softirqs"] {
        let resp3 = FakeServer::start().rtctl(&["--json", command]);
        let resp2 = FakeServer::with(Config { hello: false, ..Config::default() }).rtctl(&["--json", command]);
        assert_code(&resp3, 0);
        assert_code(&resp2, 0);
        assert_eq!(stdout(&resp3), stdout(&resp2), "{command}");
    }
    let server = FakeServer::start();
    assert_eq!(
        json(&server.rtctl(&["--json", "timers"]))[0],
        serde_json::json!({
            "name": "heartbeat", "armed": 1, "running": 0, "expires_in_ms": 250,
            "period_ms": 1000, "fired": 61, "owner": "-"
        })
    );
    let workqueues = json(&server.rtctl(&["--json", "workqueues"]));
    assert_eq!(workqueues["queues"][0]["name"], "jobs");
    assert_eq!(workqueues["queues"][0]["flags"], "single-thread");
    assert_eq!(workqueues["items"][0]["name"], "job");
    assert_eq!(workqueues["items"][0]["runs"], 7);
    assert_eq!(json(&server.rtctl(&["--json", "softirqs"]))[1]["handler"], "timer::run_jiffy_timers");
    assert_eq!(json(&server.rtctl(&["--json", "tasklets"]))[0]["schedules"], 21);
}

#[test]
fn get_prints_values_and_uses_mget_for_several_keys() {
    let server = FakeServer::start();
    let one = server.rtctl(&["get", "counter"]);
    assert_code(&one, 0);
    assert_eq!(stdout(&one), "42\n");
    let several = server.rtctl(&["get", "counter", "ratio", "enabled", "banner", "nope"]);
    assert_code(&several, 0);
    assert_eq!(stdout(&several), "counter  42\nratio    0.5\nenabled  true\nbanner   hello rtedge\nnope     (nil)\n");
    let as_json = server.rtctl(&["--json", "get", "counter", "ratio", "enabled", "nope"]);
    assert_eq!(stdout(&as_json), "{\n  \"counter\": 42,\n  \"ratio\": 0.5,\n  \"enabled\": true,\n  \"nope\": null\n}\n");
    assert_eq!(server.commands(), ["GET counter", "MGET counter ratio enabled banner nope", "MGET counter ratio enabled nope"]);
}

#[test]
fn get_of_an_unknown_key_is_not_found() {
    let server = FakeServer::start();
    let output = server.rtctl(&["get", "nope"]);
    assert_code(&output, 5);
    assert_eq!(stdout(&output), "");
    assert_eq!(stderr(&output), "error: no such key 'nope'\n");
}

#[test]
fn set_reports_ok_server_errors_and_unknown_keys() {
    let server = FakeServer::start();
    let ok = server.rtctl(&["set", "counter", "7"]);
    assert_code(&ok, 0);
    assert_eq!(stdout(&ok), "OK\n");
    let read_only = server.rtctl(&["set", "banner", "x"]);
    assert_code(&read_only, 1);
    assert_eq!(stderr(&read_only), "error: ERR key 'banner' is read-only\n");
    let not_integer = server.rtctl(&["set", "counter", "x"]);
    assert_code(&not_integer, 1);
    assert_eq!(stderr(&not_integer), "error: ERR value is not an integer or out of range\n");
    let unknown = server.rtctl(&["set", "nope", "1"]);
    assert_code(&unknown, 5);
    assert_eq!(stderr(&unknown), "error: ERR no such key 'nope'\n");
    let as_json = server.rtctl(&["--json", "set", "counter", "8"]);
    assert_eq!(stdout(&as_json), "\"OK\"\n");
}

#[test]
fn keys_lists_matching_names() {
    let server = FakeServer::start();
    let all = server.rtctl(&["keys"]);
    assert_code(&all, 0);
    assert_eq!(stdout(&all), "banner\ncounter\nenabled\nratio\n");
    let some = server.rtctl(&["--json", "keys", "*e*"]);
    assert_eq!(json(&some), serde_json::json!(["banner", "counter", "enabled"]));
    assert_eq!(server.commands(), ["KEYS *", "KEYS *e*"]);
}

#[test]
fn wake_and_kill_send_the_thread_and_signal() {
    let server = FakeServer::start();
    assert_eq!(stdout(&server.rtctl(&["wake", "rt0"])), "OK\n");
    assert_code(&server.rtctl(&["kill", "rt0"]), 0);
    assert_code(&server.rtctl(&["kill", "1", "--signal", "wake"]), 0);
    let unknown = server.rtctl(&["wake", "ghost"]);
    assert_code(&unknown, 5);
    assert_eq!(stderr(&unknown), "error: ERR no such thread 'ghost'\n");
    assert_eq!(server.commands(), ["WAKE rt0", "KILL rt0 TERM", "KILL 1 WAKE", "WAKE ghost"]);
}

#[test]
fn deferred_work_commands_reach_the_server() {
    let server = FakeServer::start();
    let cases: [(&[&str], i32, &str); 9] = [
        (&["tasklet", "schedule", "net-rx"], 0, "OK\n"),
        (&["tasklet", "hi", "net-rx"], 0, "OK\n"),
        (&["tasklet", "kill", "ghost"], 5, ""),
        (&["softirq", "raise", "TIMER"], 0, "OK\n"),
        (&["timer", "mod", "watchdog", "250"], 0, "timer 'watchdog' set to 250 ms (it was pending)\n"),
        (&["timer", "del", "other"], 0, "timer 'other' was not pending\n"),
        (&["work", "queue", "events", "flush-log", "20"], 0, "'flush-log' queued on 'events'\n"),
        (&["work", "cancel", "events", "flush-log"], 0, "'flush-log' was not pending on 'events'\n"),
        (&["work", "flush", "events"], 0, "OK\n"),
    ];
    for (args, code, expected) in cases {
        let output = server.rtctl(args);
        assert_code(&output, code);
        assert_eq!(stdout(&output), expected, "{args:?}");
    }
    assert_eq!(
        server.commands(),
        [
            "TASKLET SCHEDULE net-rx",
            "TASKLET HI net-rx",
            "TASKLET KILL ghost",
            "SOFTIRQ RAISE TIMER",
            "TIMER MOD watchdog 250",
            "TIMER DEL other",
            "WORK QUEUE events flush-log 20",
            "WORK CANCEL events flush-log",
            "WORK FLUSH events",
        ]
    );
    let as_json = server.rtctl(&["--json", "timer", "mod", "watchdog", "1"]);
    assert_eq!(stdout(&as_json), "1\n");
}

#[test]
fn latency_lists_sources_and_shows_a_histogram() {
    let server = FakeServer::start();
    let list = server.rtctl(&["latency"]);
    assert_code(&list, 0);
    assert_eq!(stdout(&list), "rt0\nsoftirq\n");
    let one = server.rtctl(&["latency", "rt0"]);
    assert_code(&one, 0);
    assert_eq!(
        stdout(&one),
        "\
T: 0 (rt0) I:- C:       7 Min:    0.9 Avg:    2.4 P50:    1.8 P90:    6.0 P99:    7.0 P99.9:    7.0 Max:     7.0 (us)

<1.02µs  1  ██████████
<2.05µs  4  ████████████████████████████████████████
 <4.1µs  0
<8.19µs  2  ████████████████████
"
    );
    let reset = server.rtctl(&["latency", "rt0", "--reset", "--json"]);
    assert_code(&reset, 0);
    let value = json(&reset);
    assert_eq!(value["count"], 7);
    assert_eq!(value["buckets"], serde_json::json!([[1024, 1], [2048, 4], [8192, 2]]));
    let unknown = server.rtctl(&["latency", "ghost"]);
    assert_code(&unknown, 5);
    assert_eq!(server.commands(), ["LATENCY", "LATENCY rt0", "LATENCY rt0 RESET", "LATENCY ghost"]);
}

#[test]
fn latency_of_several_sources_prints_a_cyclictest_line_each() {
    let server = FakeServer::start();
    let both = server.rtctl(&["latency", "softirq-rt", "rt0"]);
    assert_code(&both, 0);
    assert_eq!(
        stdout(&both),
        "\
T: 0 (softirq-rt) I:1000 C:    1000 Min:   12.0 Avg:   30.0 P50:   28.4 P90:   28.4 P99:   89.1 P99.9:  120.0 Max:   120.0 Misses:   2 (us)
T: 1 (rt0) I:- C:       7 Min:    0.9 Avg:    2.4 P50:    1.8 P90:    6.0 P99:    7.0 P99.9:    7.0 Max:     7.0 (us)
"
    );
    let as_json = server.rtctl(&["--json", "latency", "softirq-rt", "rt0"]);
    assert_code(&as_json, 0);
    let value = json(&as_json);
    assert_eq!(value[0]["misses"], 2);
    assert_eq!(value[0]["p999_ns"], 120_000);
    assert_eq!(value[1]["source"], "rt0");
    // Log-linear buckets are summed per power of two in the text view.
    let one = server.rtctl(&["latency", "softirq-rt"]);
    let text = stdout(&one);
    assert!(text.contains("<16.4µs   10"), "{text}");
    assert!(text.contains("<32.8µs  900"), "{text}");
    assert!(text.contains(" <131µs   90"), "{text}");
    let directory = TempDir::new("plot-two");
    let path = directory.path().join("both.png");
    let path_text = path.to_string_lossy().into_owned();
    let plotted = server.rtctl(&["latency", "softirq-rt", "rt0", "--plot", &path_text]);
    assert_code(&plotted, 0);
    let bytes = std::fs::read(&path).expect("the plot was written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
}

#[test]
fn latency_plot_writes_a_png() {
    let server = FakeServer::start();
    let directory = TempDir::new("plot");
    let path = directory.path().join("rt0.png");
    let path_text = path.to_string_lossy().into_owned();
    let output = server.rtctl(&["latency", "rt0", "--plot", &path_text]);
    assert_code(&output, 0);
    let bytes = std::fs::read(&path).expect("the plot was written");
    assert_eq!(bytes.get(..8), Some(&b"\x89PNG\r\n\x1a\n"[..]));
    assert!(bytes.len() > 5_000, "a chart with text, not an empty image: {} bytes", bytes.len());
}

#[test]
fn latency_plot_to_an_unwritable_path_fails_with_1() {
    let server = FakeServer::start();
    let output = server.rtctl(&["latency", "rt0", "--plot", "/nonexistent-dir/x.png"]);
    assert_code(&output, 1);
    assert!(stderr(&output).starts_with("error: cannot write plot /nonexistent-dir/x.png"));
}

/// `HH:MM:SS.mmm ` at the start of a watch line.
fn strip_time(line: &str) -> Option<&str> {
    let (time, rest) = line.split_once(' ')?;
    let shape_ok = time.len() == 12
        && time.char_indices().all(|(index, character)| match index {
            2 | 5 => character == ':',
            8 => character == '.',
            _ => character.is_ascii_digit(),
        });
    shape_ok.then_some(rest)
}

#[test]
fn watch_prints_count_messages_with_timestamps() {
    let server = FakeServer::start();
    let output = server.rtctl(&["watch", "latency.rt0", "--count", "2"]);
    assert_code(&output, 0);
    let text = stdout(&output);
    let lines: Vec<Option<&str>> = text.lines().map(strip_time).collect();
    assert_eq!(
        lines,
        [
            Some(r#"latency.rt0 {"t":1000,"kind":"release","thread":"rt0","latency_ns":1234,"miss":false}"#),
            Some(r#"latency.rt0 {"t":2000,"kind":"release","thread":"rt0","latency_ns":2345,"miss":true}"#),
        ]
    );
    assert_eq!(server.commands(), ["SUBSCRIBE latency.rt0"]);
}

#[test]
fn watch_uses_psubscribe_for_patterns_and_prints_json_lines() {
    let server = FakeServer::with(Config { hello: false, ..Config::default() });
    let output = server.rtctl(&["--json", "watch", "latency.*", "--count", "3"]);
    assert_code(&output, 0);
    let messages: Vec<serde_json::Value> =
        stdout(&output).lines().map(|line| serde_json::from_str(line).expect("one JSON object per line")).collect();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[2]["channel"], "latency.rt0");
    assert_eq!(messages[2]["pattern"], "latency.*");
    assert_eq!(messages[2]["message"]["latency_ns"], 99);
    assert!(messages[2]["time"].as_str().is_some_and(|time| time.contains('T')));
    assert_eq!(server.commands(), ["PSUBSCRIBE latency.*"]);
}

#[test]
fn top_once_prints_one_frame_from_two_samples() {
    let server = FakeServer::start();
    let output = server.rtctl(&["top", "--once", "--interval-ms", "10"]);
    assert_code(&output, 0);
    assert_eq!(
        stdout(&output),
        "\
rtedge 0.1.0  up 1h 02m 04s  CPUs 2  heap 1.0 MiB / 16.0 MiB (6.2%)  threads 3  interval 1s

ID  NAME      KIND    PRIO/NICE  STATE     CPU  CPU%  RUNTIME  SWITCHES  MISSES
 0  idle/0    idle            -  running     0  50.0     5.5s         7       0
 1  rt0       rt             90  sleeping    1  10.0    102ms      1200       2
 2  events/0  kernel    nice -5  blocked     0   2.0    2.02s         7       0

softirqs/s  HI 0  TIMER 2000  NET_RX 10  TASKLET 0

RT latency
NAME  PERIOD  RELEASES  MISSES  LAT-MIN  LAT-MEAN  LAT-P99  LAT-MAX
rt0      1ms      1000       2    900ns     2.1µs      7µs   12.3µs
"
    );
    assert_eq!(
        server.commands(),
        ["INFO", "THREADS", "SOFTIRQS", "LATENCY thread:rt0", "INFO", "THREADS", "SOFTIRQS", "LATENCY thread:rt0"]
    );
}

#[test]
fn top_once_size_prints_the_full_screen_layout_as_text() {
    let server = FakeServer::start();
    let output = server.rtctl(&["top", "--once", "--interval-ms", "10", "--size", "80x24", "--sort", "name"]);
    assert_code(&output, 0);
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 24, "{text}");
    assert!(lines.iter().all(|line| line.chars().count() <= 80), "{text}");
    assert_eq!(
        lines[..6],
        [
            "rtedge 0.1.0  up 1h 02m 04s  2 CPUs  3 threads  heap 1.0 MiB / 16.0 MiB (6.2%)",
            "softirq/s  HI 0  TIMER 2000  NET_RX 10  TASKLET 0",
            "ID  NAME▼     KIND    PRIO/NICE  STATE     CPU  CPU%  RUNTIME  SWITCHES  MISSES",
            " 2  events/0  kernel    nice -5  blocked     0   2.0    2.02s         7       0",
            " 0  idle/0    idle            -  running     0  50.0     5.5s         7       0",
            " 1  rt0       rt             90  sleeping    1  10.0    102ms      1200       2",
        ],
        "{text}"
    );
    assert_eq!(
        lines[6..8],
        [
            "RT THREAD  PRIO  PERIOD  RELEASES  MISSES  LAT-MIN  LAT-MEAN  LAT-P99  LAT-MAX",
            "rt0          90     1ms      1000       2    900ns     2.1µs      7µs   12.3µs",
        ],
        "{text}"
    );
    assert!(lines[23].starts_with("q quit  h help  v deferred  sort:"), "{text}");
    // The deferred-work view of the same screen: the listings' names whole,
    // the RT section still below them.
    let deferred = server.rtctl(&["top", "--once", "--interval-ms", "10", "--size", "80x24", "--view", "deferred"]);
    assert_code(&deferred, 0);
    let text = stdout(&deferred);
    println!("{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 24, "{text}");
    assert!(lines.iter().all(|line| line.chars().count() <= 80), "{text}");
    assert!(lines[2].starts_with("KIND"), "{text}");
    for (kind, name) in [("tasklet", "tasklet"), ("timer", "heartbeat"), ("workqueue", "jobs"), ("softirq", "TIMER")] {
        assert!(lines.iter().any(|line| line.split_whitespace().take(2).eq([kind, name])), "{kind} {name} in\n{text}");
    }
    assert!(lines.iter().any(|line| line.starts_with("RT THREAD")), "{text}");
    assert!(lines[23].starts_with("q quit  h help  v threads"), "{text}");
    let plain = server.rtctl(&["top", "--once", "--view", "deferred"]);
    assert_code(&plain, 2);
    let bad = server.rtctl(&["top", "--once", "--size", "80"]);
    assert_code(&bad, 2);
    let json = server.rtctl(&["--json", "top", "--once", "--interval-ms", "10", "--size", "80x24"]);
    assert_code(&json, 2);
}

#[test]
fn top_once_json_has_cpu_shares_and_rates() {
    let server = FakeServer::start();
    let output = server.rtctl(&["--json", "top", "--once", "--interval-ms", "10"]);
    assert_code(&output, 0);
    let frame = json(&output);
    assert_eq!(frame["interval_ns"], 1_000_000_000);
    assert_eq!(frame["threads"][0]["name"], "idle/0");
    assert_eq!(frame["threads"][0]["cpu_percent"], 50.0);
    assert_eq!(frame["threads"][1]["runtime_delta_ns"], 100_000_000);
    assert_eq!(frame["threads"][1]["latency_max_ns"], 12_345);
    assert_eq!(frame["threads"][1]["latency_p99_ns"], 7000);
    assert_eq!(frame["softirqs_per_second"]["TIMER"], 2000.0);
}

#[test]
fn modules_and_module_commands() {
    let server = FakeServer::start();
    let list = server.rtctl(&["modules"]);
    assert_code(&list, 0);
    assert_eq!(stdout(&list), "NAME    STATE     THREADS  LOADS\ndemo    loaded          2      1\nlogger  unloaded        0      0\n");
    assert_eq!(stdout(&server.rtctl(&["module", "load", "logger"])), "OK\n");
    let loaded = server.rtctl(&["module", "load", "demo"]);
    assert_code(&loaded, 1);
    assert_eq!(stderr(&loaded), "error: ERR module 'demo' is already loaded\n");
    let unknown = server.rtctl(&["module", "unload", "ghost"]);
    assert_code(&unknown, 5);
    assert_eq!(stderr(&unknown), "error: ERR no such module 'ghost'\n");
    let as_json = server.rtctl(&["--json", "modules"]);
    assert_eq!(json(&as_json)[0], serde_json::json!({"name": "demo", "state": "loaded", "threads": 2, "loads": 1}));
}

#[test]
fn raw_prints_replies_as_redis_cli_does() {
    let server = FakeServer::start();
    let integer = server.rtctl(&["raw", "GET", "counter"]);
    assert_eq!(stdout(&integer), "(integer) 42\n");
    let array = server.rtctl(&["raw", "latency"]);
    assert_eq!(stdout(&array), "1) \"rt0\"\n2) \"softirq\"\n");
    let map = server.rtctl(&["raw", "MODULE", "LIST"]);
    assert_eq!(
        stdout(&map).lines().take(3).collect::<Vec<_>>(),
        ["1) 1# \"name\" => \"demo\"", "   2# \"state\" => \"loaded\"", "   3# \"threads\" => (integer) 2"]
    );
    let unknown = server.rtctl(&["raw", "FROB", "-x"]);
    assert_code(&unknown, 1);
    assert_eq!(stderr(&unknown), "error: ERR unknown command 'FROB', with args beginning with: '-x' \n");
}

#[test]
fn raw_json_knows_which_commands_return_maps_even_over_resp2() {
    let server = FakeServer::with(Config { hello: false, ..Config::default() });
    let output = server.rtctl(&["--json", "raw", "MODULE", "LIST"]);
    assert_code(&output, 0);
    assert_eq!(
        json(&output),
        serde_json::json!([
            {"name": "demo", "state": "loaded", "threads": 2, "loads": 1},
            {"name": "logger", "state": "unloaded", "threads": 0, "loads": 0}
        ])
    );
}

#[test]
fn ping_reports_the_round_trip_in_microseconds() {
    let server = FakeServer::start();
    let output = server.rtctl(&["ping"]);
    assert_code(&output, 0);
    let text = stdout(&output);
    let prefix = format!("PONG from 127.0.0.1:{}: ", server.port);
    let rtt = text.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(" µs\n")).and_then(|number| number.parse::<f64>().ok());
    assert!(rtt.is_some_and(|rtt| rtt > 0.0), "{text:?}");
}

#[test]
fn a_closed_port_is_connection_refused() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let output = run(Path::new(env!("CARGO_BIN_EXE_rtctl")), &["--port", &port.to_string(), "--token", TOKEN, "status"], None);
    assert_code(&output, 3);
    assert_eq!(stdout(&output), "");
    assert_eq!(stderr(&output), format!("error: cannot connect to 127.0.0.1:{port}: connection refused\n"));
}

#[test]
fn a_silent_server_times_out() {
    let server = FakeServer::with(Config { answers: false, ..Config::default() });
    let output = server.rtctl(&["--timeout-ms", "200", "status"]);
    assert_code(&output, 3);
    assert_eq!(stderr(&output), format!("error: connection to 127.0.0.1:{}: timed out\n", server.port));
}

#[test]
fn a_wrong_token_is_an_authentication_failure() {
    for hello in [true, false] {
        let server = FakeServer::with(Config { hello, ..Config::default() });
        let port = server.port.to_string();
        let output = run(Path::new(env!("CARGO_BIN_EXE_rtctl")), &["--port", &port, "--token", "wrong", "threads"], None);
        assert_code(&output, 4);
        let text = stderr(&output);
        assert!(
            text.starts_with(&format!(
                "error: WRONGPASS invalid username-password pair or user is disabled: \
                 the token given with --token does not match the appliance on 127.0.0.1:{port}; "
            )),
            "{text}"
        );
        assert!(text.contains("`rtctl ps`"), "{text}");
        assert!(server.commands().is_empty(), "nothing sent after a failed AUTH");
    }
}

/// A copy of rtctl at `relative` under `root`, so that the token search
/// from the executable's directory starts there rather than in this
/// repository (which may hold a real dev.token).
fn copied_binary(root: &Path, relative: &str) -> std::path::PathBuf {
    let path = root.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create binary directory");
    }
    std::fs::copy(env!("CARGO_BIN_EXE_rtctl"), &path).expect("copy rtctl");
    path
}

fn write_token(root: &Path, token: &str) {
    let directory = root.join("target/rtedge");
    std::fs::create_dir_all(&directory).expect("create target/rtedge");
    std::fs::write(directory.join("dev.token"), format!("{token}\n")).expect("write dev.token");
}

#[test]
fn without_a_token_the_server_asks_for_one_and_rtctl_says_how() {
    let server = FakeServer::start();
    let root = TempDir::new("no-token");
    let binary = copied_binary(root.path(), "bin/rtctl");
    let output = run(&binary, &["--port", &server.port.to_string(), "threads"], Some(root.path()));
    assert_code(&output, 4);
    assert_eq!(
        stderr(&output),
        "error: authentication required: pass --token or build the image locally so target/rtedge/dev.token exists\n"
    );
    // PING is answered before AUTH.
    let ping = run(&binary, &["--port", &server.port.to_string(), "ping"], Some(root.path()));
    assert_code(&ping, 0);
    assert_eq!(server.requests().first().map(|request| request.join(" ")).as_deref(), Some("HELLO 3"));
}

#[test]
fn the_token_is_found_by_walking_up_from_the_current_directory() {
    let server = FakeServer::start();
    let root = TempDir::new("token-cwd");
    let binary = copied_binary(root.path(), "elsewhere/bin/rtctl");
    let repository = root.path().join("repo");
    write_token(&repository, TOKEN);
    let deep = repository.join("net/ctl/src");
    std::fs::create_dir_all(&deep).expect("create nested directory");
    let output = run(&binary, &["--port", &server.port.to_string(), "get", "counter"], Some(&deep));
    assert_code(&output, 0);
    assert_eq!(stdout(&output), "42\n");
}

#[test]
fn the_token_is_found_next_to_the_executable() {
    let server = FakeServer::start();
    let root = TempDir::new("token-exe");
    let repository = root.path().join("repo");
    write_token(&repository, TOKEN);
    let binary = copied_binary(&repository, "target/release/rtctl");
    let cwd = root.path().join("somewhere-else");
    std::fs::create_dir_all(&cwd).expect("create directory");
    let output = run(&binary, &["--port", &server.port.to_string(), "get", "counter"], Some(&cwd));
    assert_code(&output, 0);
    assert_eq!(stdout(&output), "42\n");
}

#[test]
fn environment_variables_give_the_token_and_port() {
    let server = FakeServer::start();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rtctl"))
        .args(["get", "counter"])
        .env("RTEDGE_PORT", server.port.to_string())
        .env("RTEDGE_TOKEN", TOKEN)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run rtctl");
    assert_code(&output, 0);
    assert_eq!(stdout(&output), "42\n");
}

#[test]
fn usage_errors_exit_with_2() {
    let server = FakeServer::start();
    assert_code(&server.rtctl(&["frobnicate"]), 2);
    assert_code(&server.rtctl(&["latency", "--reset"]), 2);
    assert_code(&server.rtctl(&["kill", "rt0", "--signal", "HUP"]), 2);
    assert_code(&server.rtctl(&["get"]), 2);
    assert!(server.requests().is_empty(), "usage errors connect to nothing");
}

#[test]
fn help_documents_the_exit_codes() {
    let output = run(Path::new(env!("CARGO_BIN_EXE_rtctl")), &["--help"], None);
    assert_code(&output, 0);
    let text = stdout(&output);
    for line in [
        "Exit codes:",
        "0  success",
        "1  the server replied with an error",
        "2  usage error",
        "3  cannot connect",
        "4  authentication failed",
        "5  not found",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}
