//! A fake rtedge control plane for the `rtctl` tests: a std TcpListener on
//! 127.0.0.1:0, requests parsed by `rtedge-proto`'s `RequestParser`,
//! canned replies shaped as net/CONTROL.md says (RESP2 or RESP3 per
//! connection, `NOAUTH` before `AUTH`, pub/sub pushes), and a log of every
//! request received so tests can check the bytes rtctl put on the wire.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use rtedge_proto::util::glob_match;
use rtedge_proto::{Limits, ProtocolVersion, Reply, Request, RequestParser};

/// The token the fake server accepts unless told otherwise.
pub const TOKEN: &str = "test-token";

/// How the fake server behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// Token required before commands; `None` for an open server.
    pub token: Option<String>,
    /// Whether `HELLO` is understood (else: a RESP2-only server).
    pub hello: bool,
    /// Whether the server answers at all (else it reads and stays silent).
    pub answers: bool,
    /// Messages published after each (P)SUBSCRIBE: `(channel, payload)`.
    pub messages: Vec<(String, String)>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            token: Some(TOKEN.into()),
            hello: true,
            answers: true,
            messages: vec![
                ("latency.rt0".into(), r#"{"t":1000,"kind":"release","thread":"rt0","latency_ns":1234,"miss":false}"#.into()),
                ("latency.rt0".into(), r#"{"t": 2000, "kind": "release", "thread": "rt0", "latency_ns": 2345, "miss": true}"#.into()),
                ("latency.rt0".into(), r#"{"t":3000,"kind":"release","thread":"rt0","latency_ns":99,"miss":false}"#.into()),
            ],
        }
    }
}

/// A running fake server. It lives until the test process ends.
pub struct FakeServer {
    /// The port it listens on.
    pub port: u16,
    log: Arc<Mutex<Vec<Vec<String>>>>,
}

impl FakeServer {
    /// A server with the default configuration.
    pub fn start() -> FakeServer {
        FakeServer::with(Config::default())
    }

    /// A server with `config`.
    pub fn with(config: Config) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&log);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let config = config.clone();
                let log = Arc::clone(&shared);
                thread::spawn(move || serve(stream, &config, &log));
            }
        });
        FakeServer { port, log }
    }

    /// Every request received so far, across connections, as text.
    pub fn requests(&self) -> Vec<Vec<String>> {
        self.log.lock().map(|log| log.clone()).unwrap_or_default()
    }

    /// The requests other than the handshake (HELLO, AUTH).
    pub fn commands(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|request| !matches!(request.first().map(|name| name.to_ascii_uppercase()).as_deref(), Some("HELLO" | "AUTH")))
            .map(|request| request.join(" "))
            .collect()
    }

    /// `rtctl --port <port> --token <TOKEN> <args>`.
    pub fn rtctl(&self, args: &[&str]) -> Output {
        let port = self.port.to_string();
        let mut full = vec!["--port", port.as_str(), "--token", TOKEN];
        full.extend_from_slice(args);
        run(Path::new(env!("CARGO_BIN_EXE_rtctl")), &full, None)
    }
}

/// Runs an rtctl binary with a clean environment (no RTEDGE_* variables)
/// in `directory` (default: a fresh empty temporary directory).
pub fn run(binary: &Path, args: &[&str], directory: Option<&Path>) -> Output {
    let scratch = TempDir::new("cwd");
    let mut command = Command::new(binary);
    command
        .args(args)
        .env_remove("RTEDGE_TOKEN")
        .env_remove("RTEDGE_PORT")
        // No instance registered by a real `make start` may be picked up.
        .env("RTEDGE_INSTANCES", scratch.path().join("instances"))
        .current_dir(directory.unwrap_or(scratch.path()));
    // A binary copied by one test can still be open for writing in a child
    // that another test's thread forked meanwhile: exec then fails with
    // ETXTBSY ("Text file busy") until that child has exec'd. Retry.
    const ETXTBSY: i32 = 26;
    let mut attempts = 0;
    loop {
        match command.output() {
            Err(error) if error.raw_os_error() == Some(ETXTBSY) && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return result.expect("run rtctl"),
        }
    }
}

/// Standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A temporary directory under the system's, removed on drop. Not under
/// `target/`: that is inside the repository, whose `target/rtedge/dev.token`
/// rtctl would find.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory.
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path =
            std::env::temp_dir().join(format!("rtctl-test-{}-{label}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&path).expect("create temporary directory");
        TempDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Per-connection state.
struct Connection {
    version: ProtocolVersion,
    authenticated: bool,
    info_calls: i64,
    threads_calls: i64,
    softirqs_calls: i64,
}

fn serve(mut stream: TcpStream, config: &Config, log: &Mutex<Vec<Vec<String>>>) {
    let mut parser = RequestParser::new(Limits::DEFAULT);
    let mut connection = Connection {
        version: ProtocolVersion::Resp2,
        authenticated: config.token.is_none(),
        info_calls: 0,
        threads_calls: 0,
        softirqs_calls: 0,
    };
    let mut chunk = [0u8; 4096];
    loop {
        let count = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(count) => count,
        };
        if parser.feed(&chunk[..count]).is_err() {
            return;
        }
        while let Ok(Some(request)) = parser.next() {
            if let Ok(mut log) = log.lock() {
                log.push(request.args().iter().map(|arg| String::from_utf8_lossy(arg).into_owned()).collect());
            }
            if !config.answers {
                continue;
            }
            let mut bytes = Vec::new();
            for reply in respond(&request, &mut connection, config) {
                reply.encode(connection.version, &mut bytes);
            }
            if stream.write_all(&bytes).is_err() {
                return;
            }
        }
    }
}

fn text(request: &Request, index: usize) -> String {
    String::from_utf8_lossy(request.arg(index).unwrap_or_default()).into_owned()
}

fn map(fields: Vec<(&str, Reply)>) -> Reply {
    Reply::Map(fields.into_iter().map(|(key, value)| (Reply::bulk_str(key), value)).collect())
}

fn int(value: i64) -> Reply {
    Reply::Integer(value)
}

fn bulk(text: &str) -> Reply {
    Reply::bulk_str(text)
}

const KEYS: [&str; 4] = ["banner", "counter", "enabled", "ratio"];
const THREAD_NAMES: [&str; 6] = ["idle/0", "rt0", "events/0", "0", "1", "2"];
const SOFTIRQ_NAMES: [&str; 4] = ["HI", "TIMER", "NET_RX", "TASKLET"];

/// The replies to one request, per CONTROL.md.
fn respond(request: &Request, connection: &mut Connection, config: &Config) -> Vec<Reply> {
    let name = String::from_utf8_lossy(&request.name_upper()).into_owned();
    let arg = |index: usize| text(request, index);
    let upper = |index: usize| arg(index).to_ascii_uppercase();
    let token_ok = |given: &str| config.token.as_deref().is_none_or(|token| token == given);
    let allowed_before_auth = matches!(name.as_str(), "PING" | "HELLO" | "AUTH" | "QUIT");
    if !connection.authenticated && !allowed_before_auth {
        return vec![Reply::noauth()];
    }
    let reply = match name.as_str() {
        "HELLO" if !config.hello => Reply::unknown_command(request.name(), request.args_after_name()),
        "HELLO" => {
            if upper(2) == "AUTH" {
                if !token_ok(&arg(4)) {
                    return vec![Reply::wrongpass()];
                }
                connection.authenticated = true;
            }
            if let Ok(number) = arg(1).parse::<i64>()
                && let Some(version) = ProtocolVersion::from_number(number)
            {
                connection.version = version;
            }
            map(vec![
                ("server", bulk("rtedge")),
                ("version", bulk("0.1.0")),
                ("proto", int(connection.version.number())),
                ("id", int(7)),
                ("mode", bulk("appliance")),
                ("role", bulk("master")),
                ("modules", Reply::Array(vec![])),
            ])
        }
        "AUTH" => {
            let given = if request.len() >= 3 { arg(2) } else { arg(1) };
            if token_ok(&given) {
                connection.authenticated = true;
                Reply::ok()
            } else {
                Reply::wrongpass()
            }
        }
        "PING" => Reply::pong(),
        "INFO" => {
            let n = connection.info_calls;
            connection.info_calls += 1;
            Reply::Bulk(info_text(n).into_bytes())
        }
        "THREADS" => {
            let n = connection.threads_calls;
            connection.threads_calls += 1;
            threads(n)
        }
        "IRQS" => Reply::Array(vec![
            map(vec![("vector", int(32)), ("name", bulk("timer")), ("cpu0", int(1000)), ("cpu1", int(998)), ("total", int(1998))]),
            map(vec![("vector", int(33)), ("name", bulk("virtio-net")), ("cpu0", int(12)), ("cpu1", int(0)), ("total", int(12))]),
        ]),
        "SOFTIRQS" => {
            let n = connection.softirqs_calls;
            connection.softirqs_calls += 1;
            softirqs(n)
        }
        "TASKLETS" => Reply::Array(vec![map(vec![
            ("name", bulk("tasklet")),
            ("state", bulk("scheduled")),
            ("scheduled", int(1)),
            ("running", int(0)),
            ("disabled", int(0)),
            ("schedules", int(21)),
            ("runs", int(20)),
            ("owner", bulk("tasklet")),
        ])]),
        "TIMERS" => Reply::Array(vec![map(vec![
            ("name", bulk("heartbeat")),
            ("armed", int(1)),
            ("running", int(0)),
            ("expires_in_ms", int(250)),
            ("period_ms", int(1000)),
            ("fired", int(61)),
            ("owner", bulk("-")),
        ])]),
        "WORKQUEUES" if request.len() == 1 => Reply::Array(vec![map(vec![
            ("name", bulk("jobs")),
            ("workers", int(1)),
            ("queued", int(2)),
            ("running", int(1)),
            ("done", int(7)),
            ("delayed_pending", int(0)),
            ("flags", bulk("single-thread")),
            ("owner", bulk("job")),
        ])]),
        "WORKQUEUES" if upper(1) == "ITEMS" => Reply::Array(vec![map(vec![
            ("name", bulk("job")),
            ("kind", bulk("plain")),
            ("pending", int(1)),
            ("running", int(0)),
            ("timer_pending", int(0)),
            ("runs", int(7)),
            ("owner", bulk("job")),
        ])]),
        "GET" => get(&arg(1)),
        "MGET" => Reply::Array((1..request.len()).map(|index| get(&arg(index))).collect()),
        "SET" => match arg(1).as_str() {
            "counter" if arg(2).parse::<i64>().is_ok() => Reply::ok(),
            "counter" => Reply::error("ERR value is not an integer or out of range"),
            "banner" => Reply::error("ERR key 'banner' is read-only"),
            other => Reply::Error(format!("ERR no such key '{other}'")),
        },
        "KEYS" => {
            Reply::Array(KEYS.iter().filter(|key| glob_match(arg(1).as_bytes(), key.as_bytes(), false)).map(|key| bulk(key)).collect())
        }
        "WAKE" | "KILL" => {
            if name == "KILL" && request.len() > 2 && !matches!(upper(2).as_str(), "TERM" | "WAKE") {
                Reply::error("ERR syntax error")
            } else if THREAD_NAMES.contains(&arg(1).as_str()) {
                Reply::ok()
            } else {
                Reply::Error(format!("ERR no such thread '{}'", arg(1)))
            }
        }
        "TASKLET" => match arg(2).as_str() {
            "net-rx" => Reply::ok(),
            other => Reply::Error(format!("ERR no such tasklet '{other}'")),
        },
        "SOFTIRQ" if upper(1) == "RAISE" => {
            if SOFTIRQ_NAMES.contains(&arg(2).as_str()) {
                Reply::ok()
            } else {
                Reply::Error(format!("ERR no such soft IRQ '{}'", arg(2)))
            }
        }
        "TIMER" => int(i64::from(arg(2) == "watchdog")),
        "WORK" => match upper(1).as_str() {
            "QUEUE" => int(1),
            "CANCEL" => int(0),
            "FLUSH" => Reply::ok(),
            _ => Reply::unknown_subcommand("WORK", request.arg(1).unwrap_or_default()),
        },
        "LATENCY" if request.len() == 1 => Reply::Array(vec![bulk("rt0"), bulk("softirq")]),
        "LATENCY" => match arg(1).as_str() {
            // A thread's histogram is `thread:NAME`, as on the appliance.
            "rt0" | "thread:rt0" => latency(),
            "softirq-rt" => thread_latency(),
            other => Reply::Error(format!("ERR no such latency source '{other}'")),
        },
        "MODULE" => match (upper(1).as_str(), arg(2).as_str()) {
            ("LIST", _) => Reply::Array(vec![
                map(vec![("name", bulk("demo")), ("state", bulk("loaded")), ("threads", int(2)), ("loads", int(1))]),
                map(vec![("name", bulk("logger")), ("state", bulk("unloaded")), ("threads", int(0)), ("loads", int(0))]),
            ]),
            ("LOAD", "demo") => Reply::error("ERR module 'demo' is already loaded"),
            ("LOAD" | "UNLOAD", "demo" | "logger") => Reply::ok(),
            (_, other) => Reply::Error(format!("ERR no such module '{other}'")),
        },
        "SUBSCRIBE" | "PSUBSCRIBE" => {
            let target = arg(1);
            let mut replies = vec![Reply::subscription(&name.to_ascii_lowercase(), target.as_bytes(), 1)];
            for (channel, payload) in &config.messages {
                replies.push(if name == "PSUBSCRIBE" {
                    Reply::pattern_message(target.as_bytes(), channel.as_bytes(), payload.as_bytes())
                } else {
                    Reply::message(target.as_bytes(), payload.as_bytes())
                });
            }
            return replies;
        }
        _ => Reply::unknown_command(request.name(), request.args_after_name()),
    };
    vec![reply]
}

fn get(key: &str) -> Reply {
    match key {
        "counter" => int(42),
        "ratio" => Reply::Double(0.5),
        "enabled" => Reply::Boolean(true),
        "banner" => bulk("hello rtedge"),
        _ => Reply::Null,
    }
}

/// `INFO` for the `n`th call on a connection: one second later each time.
pub fn info_text(n: i64) -> String {
    let uptime = 3723 + n;
    format!(
        "# Server\r\nrtedge_version:0.1.0\r\nuptime_in_seconds:{uptime}\r\nuptime_ns:{}\r\nboot_path:pvh\r\nhypervisor:qemu-microvm\r\n\r\n# Clients\r\nconnected_clients:1\r\n\r\n# Memory\r\nheap_used:1048576\r\nheap_total:16777216\r\n\r\n# CPU\r\ncpus:2\r\n\r\n# Threads\r\nthreads:3\r\n",
        uptime * 1_000_000_000
    )
}

/// `THREADS` for the `n`th call: per second of uptime, idle/0 runs 500 ms,
/// rt0 100 ms and events/0 20 ms.
fn threads(n: i64) -> Reply {
    let thread =
        |id: i64, name: &str, kind: &str, priority: i64, nice: i64, state: &str, cpu: i64, affinity: &str, runtime: i64, periodic: bool| {
            map(vec![
                ("id", int(id)),
                ("name", bulk(name)),
                ("kind", bulk(kind)),
                ("priority", int(priority)),
                ("nice", int(nice)),
                ("state", bulk(state)),
                ("cpu", int(cpu)),
                ("affinity", bulk(affinity)),
                ("runtime_ns", int(runtime)),
                ("switches", int(if periodic { 1200 } else { 7 })),
                ("period_ns", int(if periodic { 1_000_000 } else { 0 })),
                ("releases", int(if periodic { 1000 } else { 0 })),
                ("misses", int(if periodic { 2 } else { 0 })),
                ("latency_min_ns", int(if periodic { 900 } else { 0 })),
                ("latency_max_ns", int(if periodic { 12_345 } else { 0 })),
                ("latency_mean_ns", int(if periodic { 2_100 } else { 0 })),
            ])
        };
    Reply::Array(vec![
        thread(0, "idle/0", "idle", -1, 0, "running", 0, "0", 5_000_000_000 + n * 500_000_000, false),
        thread(1, "rt0", "rt", 90, 0, "sleeping", 1, "1", 1_500_000 + n * 100_000_000, true),
        thread(2, "events/0", "kernel", -1, -5, "blocked", 0, "0-1", 2_000_000_000 + n * 20_000_000, false),
    ])
}

/// `SOFTIRQS` for the `n`th call: TIMER 2000/s, NET_RX 10/s.
fn softirqs(n: i64) -> Reply {
    let row = |name: &str, cpu0: i64, cpu1: i64| {
        let (vector, handler) = match name {
            "HI" => (0, "tasklet::action(hi)"),
            "TIMER" => (1, "timer::run_jiffy_timers"),
            "NET_RX" => (3, "net::net_rx"),
            _ => (6, "tasklet::action"),
        };
        map(vec![
            ("name", bulk(name)),
            ("vector", int(vector)),
            ("kind", bulk("fixed")),
            ("open", int(1)),
            ("handler", bulk(handler)),
            ("owner", bulk("kernel")),
            ("cpu0", int(cpu0)),
            ("cpu1", int(cpu1)),
            ("total", int(cpu0 + cpu1)),
        ])
    };
    Reply::Array(vec![row("HI", 0, 0), row("TIMER", 1000 + n * 1000, 998 + n * 1000), row("NET_RX", 12 + n * 10, 0), row("TASKLET", 3, 1)])
}

/// A current appliance's reply for an RT thread: log-linear buckets (32
/// per power of two), `avg_ns`, period, releases and misses.
fn thread_latency() -> Reply {
    let bucket = |upper: i64, count: i64| Reply::Array(vec![int(upper), int(count)]);
    map(vec![
        ("source", bulk("softirq-rt")),
        ("unit", bulk("ns")),
        ("count", int(1000)),
        ("min_ns", int(12_000)),
        ("max_ns", int(120_000)),
        ("mean_ns", int(30_000)),
        ("avg_ns", int(30_000)),
        ("p50_ns", int(28_416)),
        ("p90_ns", int(28_416)),
        ("p99_ns", int(89_088)),
        ("p999_ns", int(120_000)),
        ("p9999_ns", int(120_000)),
        ("period_ns", int(1_000_000)),
        ("releases", int(1000)),
        ("misses", int(2)),
        ("sub_buckets", int(32)),
        ("buckets", Reply::Array(vec![bucket(12_288, 10), bucket(28_672, 900), bucket(90_112, 80), bucket(122_880, 10)])),
    ])
}

/// An older appliance's reply: log2 buckets, `mean_ns` only.
fn latency() -> Reply {
    map(vec![
        ("source", bulk("rt0")),
        ("unit", bulk("ns")),
        ("count", int(7)),
        ("min_ns", int(900)),
        ("max_ns", int(7000)),
        ("mean_ns", int(2400)),
        ("p50_ns", int(1800)),
        ("p90_ns", int(6000)),
        ("p99_ns", int(7000)),
        ("p999_ns", int(7000)),
        (
            "buckets",
            Reply::Array(vec![
                Reply::Array(vec![int(1024), int(1)]),
                Reply::Array(vec![int(2048), int(4)]),
                Reply::Array(vec![int(8192), int(2)]),
            ]),
        ),
    ])
}
