//! Prometheus metrics (issue 15 item 2), end to end: a real Prometheus
//! server (Debian's `prometheus`) scrapes the appliance's `GET /metrics`
//! through the forwarded metrics port every second, and its HTTP query API
//! shows the series; `promtool check metrics` validates the exposition;
//! `METRICS` (and `rtctl metrics`) return the same families. Then hostile
//! HTTP clients (a trickled request, 64 KiB of headers, clients that never
//! read) each get their bounded answer while the RESP control plane keeps
//! answering PING.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value as Json;

use super::guest::free_port;
use super::resp::{Conn, text};
use super::{Ctx, Scenario, Where};

pub const SCENARIOS: &[Scenario] = &[
    Scenario { name: "metrics::prometheus_scrapes_the_appliance", run: prometheus_scrape, on: Where::Reference },
    Scenario { name: "metrics::hostile_http_clients_leave_the_control_plane_alone", run: hostile_http, on: Where::Reference },
];

fn metrics_address(ctx: &Ctx<'_>) -> Result<SocketAddr> {
    let port = ctx.guest.metrics_port.context("no metrics port forwarded (QEMU only)")?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// One HTTP/1.1 request with `Connection: close`: (status, body). Decodes
/// a chunked body (Prometheus's API sends one for large replies).
fn http_get(address: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, timeout).with_context(|| format!("connect {address}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).with_context(|| format!("GET {path} from {address}"))?;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = reply.split_once("\r\n\r\n").with_context(|| format!("no HTTP head in {reply:?}"))?;
    let status: u16 = head.split(' ').nth(1).and_then(|code| code.parse().ok()).with_context(|| format!("status line of {head:?}"))?;
    let chunked = head
        .lines()
        .any(|line| line.to_ascii_lowercase().starts_with("transfer-encoding:") && line.to_ascii_lowercase().contains("chunked"));
    let body = if chunked { dechunk(body)? } else { body.to_string() };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("chunk size line")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).context("chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("short chunk")?);
        body = rest.get(size + 2..).context("chunk end")?;
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A Prometheus server, killed (its whole process group) on drop.
struct Prometheus {
    child: Child,
    address: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    fn start(scratch: &Path, target: SocketAddr) -> Result<Prometheus> {
        let program = find_program("prometheus")?;
        let directory = scratch.join(format!("prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(directory.join("data"))?;
        let config = directory.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: rtedge\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = directory.join("prometheus.log");
        let log_file = std::fs::File::create(&log)?;
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(program)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", directory.join("data").display()))
                .arg(format!("--web.listen-address={address}"))
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(log_file.try_clone()?)
                .stderr(log_file)
                .process_group(0)
                .spawn()
                .context("cannot start prometheus")?
        };
        Ok(Prometheus { child, address, log })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    fn api(&self, path: &str) -> Result<Json> {
        let (status, body) = http_get(self.address, path, Duration::from_secs(10))?;
        ensure!(status == 200, "prometheus {path}: HTTP {status}: {body}");
        let json: Json = serde_json::from_str(&body).with_context(|| format!("prometheus {path}: {body}"))?;
        ensure!(json["status"] == "success", "prometheus {path}: {body}");
        Ok(json["data"].clone())
    }

    /// An instant query's result vector: (labels, value).
    fn query(&self, promql: &str) -> Result<Vec<(Json, f64)>> {
        let data = self.api(&format!("/api/v1/query?query={}", percent_encode(promql)))?;
        let result = data["result"].as_array().cloned().unwrap_or_default();
        Ok(result
            .into_iter()
            .filter_map(|sample| {
                let value = sample["value"][1].as_str()?.parse::<f64>().ok()?;
                Some((sample["metric"].clone(), value))
            })
            .collect())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group created for this child.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

fn find_program(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| format!("{name} not found in PATH (Debian package prometheus); run `make deps`"))
}

/// Retries `check` until it returns Some or `limit` passes.
fn within<T>(limit: Duration, mut check: impl FnMut() -> Result<Option<T>>) -> Result<Option<T>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check()? {
            return Ok(Some(found));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn prometheus_scrape(ctx: &mut Ctx<'_>) -> Result<()> {
    let address = metrics_address(ctx)?;
    // The exposition itself, straight from the appliance, and promtool's word on it.
    let (status, exposition) = http_get(address, "/metrics", Duration::from_secs(30))?;
    ensure!(status == 200, "GET /metrics: HTTP {status}: {exposition}");
    for family in [
        "# TYPE rtedge_interrupts_total counter",
        "# TYPE rtedge_softirqs_total counter",
        "# TYPE rtedge_thread_runtime_seconds_total counter",
        "# TYPE rtedge_thread_releases_total counter",
        "# TYPE rtedge_thread_deadline_misses_total counter",
        "# TYPE rtedge_thread_overruns_total counter",
        "# TYPE rtedge_latency_seconds histogram",
        "# TYPE rtedge_heap_used_bytes gauge",
        "# TYPE rtedge_rtpool_buffers_in_use gauge",
        "# TYPE rtedge_control_connections gauge",
        "# TYPE rtedge_control_commands_total counter",
    ] {
        ensure!(exposition.contains(family), "GET /metrics lacks `{family}`:\n{exposition}");
    }
    ctx.figure("GET /metrics bytes", exposition.len().to_string());
    let sample: Vec<&str> = exposition
        .lines()
        .filter(|line| {
            line.starts_with("rtedge_thread_releases_total")
                || line.starts_with("rtedge_latency_seconds_count")
                || line.starts_with("rtedge_heap_used_bytes")
        })
        .take(6)
        .collect();
    println!("e2e: GET /metrics (excerpt):\n    {}", sample.join("\n    "));
    let promtool = find_program("promtool")?;
    let mut check =
        Command::new(promtool).args(["check", "metrics"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    check.stdin.take().context("promtool stdin")?.write_all(exposition.as_bytes())?;
    let output = check.wait_with_output()?;
    ensure!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // METRICS over RESP: the same families (values move between the two).
    let mut conn = Conn::authed(&ctx.target(), &ctx.token)?;
    let over_resp = text(&conn.call(&["METRICS"])?);
    let types = |text: &str| text.lines().filter(|line| line.starts_with("# TYPE ")).map(str::to_string).collect::<Vec<_>>();
    ensure!(types(&over_resp) == types(&exposition), "METRICS and GET /metrics differ in their families");
    let (code, out, err) = ctx.rtctl(&["metrics", "rtedge_heap"])?;
    ensure!(
        code == 0 && out.contains("rtedge_heap_used_bytes ") && !out.contains("rtedge_thread"),
        "rtctl metrics rtedge_heap: {code} {out} {err}"
    );

    let prometheus = Prometheus::start(&ctx.scratch, address)?;
    let up = within(Duration::from_secs(90), || {
        let Ok(data) = prometheus.api("/api/v1/targets") else { return Ok(None) };
        let targets = data["activeTargets"].as_array().cloned().unwrap_or_default();
        Ok(targets.iter().find(|target| target["health"] == "up").map(|target| target["scrapeUrl"].as_str().unwrap_or("").to_string()))
    })?;
    let Some(scrape_url) = up else {
        let targets = prometheus.api("/api/v1/targets").map(|data| data.to_string()).unwrap_or_default();
        bail!("the target never came up in Prometheus: {targets}\nlog: {}", prometheus.log_tail());
    };
    println!("e2e: Prometheus {} scrapes {scrape_url} (up)", prometheus.address);

    // A periodic thread's releases counter grows between two queries.
    let first = prometheus.query("topk(1, rtedge_thread_releases_total)")?;
    let (labels, before) = first.first().cloned().context("no rtedge_thread_releases_total series in Prometheus")?;
    let id = labels["id"].as_str().unwrap_or("").to_string();
    let thread = labels["thread"].as_str().unwrap_or("").to_string();
    let series = format!("rtedge_thread_releases_total{{id=\"{id}\"}}");
    let later = within(Duration::from_secs(30), || {
        Ok(prometheus.query(&series)?.first().map(|(_, value)| *value).filter(|value| *value > before))
    })?;
    let Some(after) = later else { bail!("{series} did not grow from {before} in 30 s") };
    println!("e2e: Prometheus: {series} (thread {thread}) {before} -> {after}");
    ctx.figure(&format!("releases of {thread} between two queries"), format!("{before} -> {after}"));

    // Every latency histogram that has samples, the heap, IRQs, commands.
    let latency = prometheus.query("rtedge_latency_seconds_count > 0")?;
    ensure!(!latency.is_empty(), "no latency histogram with samples");
    for (labels, count) in latency.iter().take(4) {
        println!("e2e: Prometheus: rtedge_latency_seconds_count{{source={}}} = {count}", labels["source"]);
    }
    let p99 = prometheus.query("histogram_quantile(0.99, rtedge_latency_seconds_bucket)")?;
    ensure!(p99.iter().any(|(_, value)| value.is_finite() && *value > 0.0), "histogram_quantile over the buckets: {p99:?}");
    if let Some((labels, value)) = p99.first() {
        println!("e2e: Prometheus: histogram_quantile(0.99, rtedge_latency_seconds_bucket{{source={}}}) = {value} s", labels["source"]);
    }
    let checks: [(&str, &str); 5] = [
        ("rtedge_heap_used_bytes", "heap bytes"),
        ("sum(rtedge_interrupts_total)", "interrupts"),
        ("sum(rtedge_softirqs_total)", "soft interrupts"),
        ("rtedge_control_commands_total", "commands"),
        ("sum(rtedge_thread_runtime_seconds_total)", "thread run time"),
    ];
    for (promql, what) in checks {
        let result = prometheus.query(promql)?;
        let value = result.first().map(|(_, value)| *value).with_context(|| format!("no {what} ({promql})"))?;
        ensure!(value > 0.0, "{what} ({promql}) = {value}");
        println!("e2e: Prometheus: {promql} = {value}");
    }
    let scrapes = prometheus.query("rtedge_metrics_http_responses_total{code=\"200\"}")?;
    let scraped = scrapes.first().map(|(_, value)| *value).unwrap_or(0.0);
    ensure!(scraped >= 2.0, "the appliance counted {scraped} metrics replies");
    ctx.figure("scrapes answered (200)", format!("{scraped}"));
    drop(prometheus);
    Ok(())
}

/// Ping over RESP: must answer while the HTTP side is being abused.
fn ping(conn: &mut Conn) -> Result<Duration> {
    let started = Instant::now();
    let reply = conn.call(&["PING"])?;
    ensure!(text(&reply) == "PONG", "PING: {reply:?}");
    Ok(started.elapsed())
}

fn status_line(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply).lines().next().unwrap_or("").to_string()
}

fn hostile_http(ctx: &mut Ctx<'_>) -> Result<()> {
    let address = metrics_address(ctx)?;
    let mut operator = Conn::authed(&ctx.target(), &ctx.token)?;
    let mut slowest = Duration::ZERO;

    // 1. A trickled request: one byte every 250 ms never completes a head;
    //    the appliance answers 408 at its 5 s deadline and closes.
    let mut trickler = TcpStream::connect_timeout(&address, Duration::from_secs(10))?;
    trickler.set_read_timeout(Some(Duration::from_millis(50)))?;
    let started = Instant::now();
    let mut reply = Vec::new();
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: 0123456789012345678901234567890123456789\r\n";
    for byte in request.iter() {
        if trickler.write_all(&[*byte]).is_err() {
            break;
        }
        let mut chunk = [0u8; 512];
        match trickler.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => reply.extend_from_slice(&chunk[..read]),
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        if !reply.is_empty() {
            break;
        }
        slowest = slowest.max(ping(&mut operator)?);
        std::thread::sleep(Duration::from_millis(200));
    }
    if reply.is_empty() {
        trickler.set_read_timeout(Some(Duration::from_secs(15)))?;
        let _ = trickler.read_to_end(&mut reply);
    }
    ensure!(status_line(&reply) == "HTTP/1.1 408 Request Timeout", "trickled request: {:?}", String::from_utf8_lossy(&reply));
    ctx.figure("trickled HTTP request answered 408 after", format!("{} ms", started.elapsed().as_millis()));

    // 2. 64 KiB of headers: 431 after the first 8 KiB; the rest is read
    //    and dropped, so the sender is not stuck either.
    let mut flood = TcpStream::connect_timeout(&address, Duration::from_secs(10))?;
    flood.set_read_timeout(Some(Duration::from_secs(20)))?;
    flood.set_write_timeout(Some(Duration::from_secs(20)))?;
    let mut request = b"GET /metrics HTTP/1.1\r\n".to_vec();
    while request.len() < 64 * 1024 {
        request.extend_from_slice(b"X-Flood: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    request.extend_from_slice(b"\r\n");
    // The server may close before the last bytes arrive: a reset then is fine.
    let _ = flood.write_all(&request);
    slowest = slowest.max(ping(&mut operator)?);
    let mut reply = Vec::new();
    let _ = flood.read_to_end(&mut reply);
    ensure!(
        status_line(&reply) == "HTTP/1.1 431 Request Header Fields Too Large",
        "64 KiB of headers: {:?}",
        String::from_utf8_lossy(&reply)
    );

    // 3. Every metrics slot taken by clients that send a request and never
    //    read nor close: the control plane still answers, and the slots
    //    come back (close linger, then reset) for a normal scrape.
    let mut silent = Vec::new();
    for _ in 0..6 {
        if let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(5)) {
            let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            silent.push(stream);
        }
    }
    for _ in 0..5 {
        slowest = slowest.max(ping(&mut operator)?);
        std::thread::sleep(Duration::from_millis(300));
    }
    let normal = within(Duration::from_secs(30), || {
        Ok(http_get(address, "/metrics", Duration::from_secs(10)).ok().filter(|(status, _)| *status == 200))
    })?;
    ensure!(normal.is_some(), "GET /metrics never succeeded again after {} silent clients", silent.len());
    drop(silent);

    // 4. Wrong path and wrong method.
    let (status, _) = http_get(address, "/", Duration::from_secs(10))?;
    ensure!(status == 404, "GET / answered {status}");
    let mut post = TcpStream::connect_timeout(&address, Duration::from_secs(10))?;
    post.set_read_timeout(Some(Duration::from_secs(10)))?;
    post.write_all(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")?;
    let mut reply = Vec::new();
    let _ = post.read_to_end(&mut reply);
    ensure!(status_line(&reply) == "HTTP/1.1 405 Method Not Allowed", "POST: {:?}", String::from_utf8_lossy(&reply));

    // The appliance counted each kind.
    let (_, exposition) = http_get(address, "/metrics", Duration::from_secs(10))?;
    for code in ["408", "431", "404", "405"] {
        let line = format!("rtedge_metrics_http_responses_total{{code=\"{code}\"}} ");
        let count: u64 = exposition.lines().find_map(|text| text.strip_prefix(&line)).and_then(|value| value.parse().ok()).unwrap_or(0);
        ensure!(count >= 1, "{line} is {count}");
    }
    ping(&mut operator)?;
    ctx.figure("slowest PING during the hostile HTTP clients", format!("{} ms", slowest.as_millis()));
    Ok(())
}
