//! Hostile-client scenarios (issue 12): each one is a way a client without
//! the token, or a careless one with it, took the control plane away from
//! its operator on the old code. Each asserts what the operator sees
//! afterwards; timings are printed as figures, never judged (but a rate
//! bound is: a slow machine only makes it lower).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::resp::{Conn, expect_error, expect_ok, info_field, items, text};
use super::{Ctx, Scenario, Where};

pub const SCENARIOS: &[Scenario] = &[
    Scenario { name: "hostile::operator_gets_in_past_64_silent_connections", run: lockout, on: Where::Reference },
    Scenario { name: "hostile::trickle_is_closed_at_the_preauth_deadline", run: trickle, on: Where::Reference },
    Scenario {
        name: "hostile::clients_that_leave_without_reading_give_their_slots_back",
        run: leave_without_reading,
        on: Where::Reference,
    },
    Scenario { name: "hostile::arity_and_grammar_are_enforced", run: arity, on: Where::Reference },
    Scenario { name: "hostile::brute_force_over_reconnects_backs_off", run: brute_force, on: Where::Reference },
    Scenario { name: "hostile::the_token_is_never_shown", run: redaction, on: Where::Reference },
    Scenario { name: "hostile::multi_exec_runs_all_or_nothing", run: transactions, on: Where::Reference },
    Scenario { name: "soak::a_million_requests_with_subscribers", run: soak, on: Where::Reference },
    Scenario { name: "faults::every_command_completes_over_a_lossy_link", run: lossy_link, on: Where::Reference },
];

/// `make faults` (`RTEDGE_E2E_APPEND=net_faults=10,10`): the guest's NIC
/// path drops and corrupts 10 % of the packets each way (smoltcp's
/// `FaultInjector`); every command of a few hundred, through raw RESP and
/// `redis-cli`, still completes with the right reply. Without
/// `net_faults=` on the command line it only says how to run it.
fn lossy_link(ctx: &mut Ctx<'_>) -> Result<()> {
    let target = ctx.target();
    let mut conn = Conn::authed(&target, &ctx.token)?;
    let info = text(&conn.call(&["INFO", "server"])?);
    let command_line = info_field(&info, "command_line").unwrap_or_default();
    if !command_line.contains("net_faults=") {
        ctx.figure("faults", "skipped (run `make faults`)".to_string());
        return Ok(());
    }
    let started = Instant::now();
    const COMMANDS: usize = 200;
    for index in 0..COMMANDS {
        let message = format!("lossy-{index}");
        let reply = conn.call(&["ECHO", &message])?;
        ensure!(text(&reply) == message, "ECHO {message} over the lossy link: {reply:?}");
    }
    // Pipelined, then through redis-cli.
    for index in 0..50 {
        conn.send(&["ECHO", &format!("pipelined-{index}")])?;
    }
    for index in 0..50 {
        let reply = conn.read()?;
        ensure!(text(&reply) == format!("pipelined-{index}"), "pipelined reply {index}: {reply:?}");
    }
    let script: String = (0..50).map(|index| format!("ECHO cli-{index}\n")).collect();
    let out = ctx.redis_cli_stdin(&[], script.as_bytes())?;
    for index in 0..50 {
        ensure!(out.lines().any(|line| line.trim() == format!("cli-{index}")), "redis-cli reply cli-{index} missing: {out}");
    }
    ctx.figure(
        "commands completed over 10 % drop + 10 % corruption",
        format!("{} in {} ms", COMMANDS + 100, started.elapsed().as_millis()),
    );
    Ok(())
}

/// `make soak` (`RTEDGE_SOAK=1`): at least 1 000 000 requests through
/// `redis-benchmark` while subscribers listen; prints errors, heap, slots
/// and deadline misses before and after. Otherwise it only says how to
/// run it (it takes minutes under TCG).
fn soak(ctx: &mut Ctx<'_>) -> Result<()> {
    if std::env::var("RTEDGE_SOAK").is_err() {
        ctx.figure("soak", "skipped (run `make soak`)".to_string());
        return Ok(());
    }
    let target = ctx.target();
    let mut operator = Conn::authed(&target, &ctx.token)?;
    let snapshot = |conn: &mut Conn| -> Result<(String, String, String, String)> {
        let info = text(&conn.call(&["INFO", "all"])?);
        let field = |key: &str| info_field(&info, key).unwrap_or_default();
        Ok((field("heap_used"), field("slots"), field("deadline_misses"), field("control_memory_used")))
    };
    let before = snapshot(&mut operator)?;
    let mut subscribers = Vec::new();
    for _ in 0..4 {
        let mut conn = Conn::authed(&target, &ctx.token)?;
        conn.send(&["PSUBSCRIBE", "*"])?;
        subscribers.push(conn);
    }
    let requests: u64 = std::env::var("SOAK_REQUESTS").ok().and_then(|text| text.parse().ok()).unwrap_or(1_000_000);
    let started = Instant::now();
    // Rounds of 200 000, PING then GET of a shared static, each well within
    // the host tool's time limit under TCG: `requests` in all.
    const ROUND: u64 = 200_000;
    let mut out = String::new();
    let mut sent = 0u64;
    let mut round = 0;
    while sent < requests {
        let count = ROUND.min(requests - sent);
        let count_text = count.to_string();
        let args: Vec<&str> = if round % 2 == 0 {
            vec!["-n", &count_text, "-c", "4", "-P", "32", "-t", "ping", "-q"]
        } else {
            vec!["-n", &count_text, "-c", "4", "-P", "32", "-q", "GET", "tasklet.runs"]
        };
        let result = ctx.redis_benchmark(&args)?;
        if let Some(line) = result.rsplit('\r').next() {
            out.push_str(line.trim());
            out.push('\n');
        }
        sent += count;
        round += 1;
    }
    let elapsed = started.elapsed();
    let errors = out.lines().filter(|line| line.to_lowercase().contains("error")).count();
    for conn in &mut subscribers {
        // Drain what arrived; they must still be connected.
        let _ = conn.read_within(Duration::from_millis(200))?;
    }
    drop(subscribers);
    std::thread::sleep(Duration::from_secs(2));
    let after = snapshot(&mut operator)?;
    ctx.figure("soak requests", format!("{} in {} ms ({})", requests, elapsed.as_millis(), out.trim().replace('\n', "; ")));
    ctx.figure("soak error lines", errors.to_string());
    ctx.figure("soak heap_used before/after", format!("{} / {}", before.0, after.0));
    ctx.figure("soak slots before/after", format!("{} / {}", before.1, after.1));
    ctx.figure("soak deadline_misses before/after (RT threads)", format!("{} / {}", before.2, after.2));
    ctx.figure("soak control_memory_used before/after", format!("{} / {}", before.3, after.3));
    ensure!(errors == 0, "redis-benchmark reported errors: {out}");
    ensure!(text(&operator.call(&["PING"])?) == "PONG", "the operator is still served after the soak");
    Ok(())
}

/// `INFO net` as text.
fn info_net(conn: &mut Conn) -> Result<String> {
    Ok(text(&conn.call(&["INFO", "net"])?))
}

/// The number after `open=` in `slots:listening=..,open=..`.
fn open_slots(info: &str) -> Option<usize> {
    let slots = info_field(info, "slots")?;
    slots.split(',').find_map(|part| part.strip_prefix("open=")).and_then(|open| open.parse().ok())
}

fn lockout(ctx: &mut Ctx<'_>) -> Result<()> {
    let target = ctx.target();
    let mut silent = Vec::new();
    for index in 0..64 {
        silent.push(target.connect(Duration::from_secs(10)).with_context(|| format!("silent connection {index}"))?);
    }
    // Let the guest accept them all.
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mut operator = Conn::connect(&target)?;
    expect_ok(&operator.call(&["AUTH", &ctx.token])?).context("the operator's AUTH past 64 silent connections")?;
    ensure!(text(&operator.call(&["PING"])?) == "PONG", "the operator's PING");
    ctx.figure("operator AUTH+PING past 64 silent connections", format!("{} ms", started.elapsed().as_millis()));
    let info = info_net(&mut operator)?;
    let evictions = info_field(&info, "preauth_evictions").unwrap_or_default();
    ctx.figure("unauthenticated connections evicted to let the operator in", evictions);
    drop(silent);
    Ok(())
}

fn trickle(ctx: &mut Ctx<'_>) -> Result<()> {
    let target = ctx.target();
    let mut stream = target.connect(Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let frame = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{}\r\n", ctx.token.len(), ctx.token);
    let started = Instant::now();
    let mut closed = false;
    for byte in frame.bytes().take(30) {
        if stream.write_all(&[byte]).is_err() {
            closed = true;
            break;
        }
        let mut chunk = [0u8; 64];
        match stream.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                closed = true;
                break;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(800));
    }
    ensure!(closed, "a connection trickling one byte a second was still open after {:?}", started.elapsed());
    ctx.figure("trickling connection closed after", format!("{} ms", started.elapsed().as_millis()));
    let mut operator = Conn::authed(&target, &ctx.token)?;
    let info = info_net(&mut operator)?;
    let timeouts: u64 = info_field(&info, "auth_timeouts").and_then(|value| value.parse().ok()).unwrap_or(0);
    ensure!(timeouts >= 1, "INFO net counts the pre-auth timeout: {info}");
    Ok(())
}

fn leave_without_reading(ctx: &mut Ctx<'_>) -> Result<()> {
    let target = ctx.target();
    let mut operator = Conn::authed(&target, &ctx.token)?;
    let before = open_slots(&info_net(&mut operator)?).context("slots in INFO net")?;
    const CLIENTS: usize = 16;
    let mut frame = Vec::new();
    for _ in 0..40 {
        rtedge_proto::request::encode_command(&["INFO", "all"], &mut frame);
    }
    for index in 0..CLIENTS {
        let mut stream: TcpStream = target.connect(Duration::from_secs(10))?;
        let mut auth = Vec::new();
        rtedge_proto::request::encode_command(&["AUTH", &ctx.token], &mut auth);
        stream.write_all(&auth).with_context(|| format!("client {index}"))?;
        // Pipelined requests with large replies, never read.
        let _ = stream.write_all(&frame);
        let _ = stream.shutdown(Shutdown::Write);
        std::thread::sleep(Duration::from_millis(100));
        drop(stream);
    }
    let left = Instant::now();
    // Every slot returns within the send timeout plus the linger (30 s +
    // 5 s by default); allow for TCG.
    let deadline = left + Duration::from_secs(120);
    loop {
        let open = open_slots(&info_net(&mut operator)?).unwrap_or(usize::MAX);
        if open <= before {
            break;
        }
        if Instant::now() > deadline {
            bail!("{open} slots still open {:?} after {CLIENTS} clients left without reading (before: {before})", left.elapsed());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    ctx.figure(&format!("slots back after {CLIENTS} clients left without reading"), format!("{} ms", left.elapsed().as_millis()));
    Ok(())
}

fn arity(ctx: &mut Ctx<'_>) -> Result<()> {
    let mut conn = Conn::authed(&ctx.target(), &ctx.token)?;
    for args in [
        &["SHUTDOWN", "7", "extra"][..],
        &["SHUTDOWN", "0", "NOSAVE"],
        &["SHUTDOWN", "0", "ABORT"],
        &["PING", "a", "b"],
        &["INFO", "net", "x"],
    ] {
        let reply = conn.call(args)?;
        expect_error(&reply, "ERR wrong number of arguments").with_context(|| format!("{args:?}"))?;
    }
    expect_error(&conn.call(&["LATENCY", "thread:main", "NOPE"])?, "ERR syntax error")?;
    // Through the real redis-cli too; the appliance is still up.
    let out = ctx.redis_cli(&["SHUTDOWN", "0", "NOSAVE"])?;
    ensure!(out.contains("wrong number of arguments"), "redis-cli SHUTDOWN 0 NOSAVE: {out:?}");
    ensure!(text(&conn.call(&["PING"])?) == "PONG", "still up after the refused SHUTDOWNs");
    Ok(())
}

fn brute_force(ctx: &mut Ctx<'_>) -> Result<()> {
    let target = ctx.target();
    const GUESSES: usize = 12;
    let started = Instant::now();
    let mut answered = 0;
    for guess in 0..GUESSES {
        let mut conn = Conn::connect(&target)?;
        match conn.call(&["AUTH", &format!("guess-{guess}")]) {
            Ok(reply) if text(&reply).starts_with("WRONGPASS") => answered += 1,
            _ => {}
        }
    }
    let elapsed = started.elapsed();
    let rate = answered as f64 / elapsed.as_secs_f64();
    ctx.figure("wrong guesses answered per second over reconnects", format!("{rate:.2} ({answered} in {} ms)", elapsed.as_millis()));
    ensure!(rate < 5.0, "{rate:.1} guesses/s over reconnects (the old code allowed ~90/s)");
    // The operator still gets in once the back-off has passed.
    std::thread::sleep(Duration::from_secs(3));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut conn = Conn::connect(&target)?;
        if let Ok(reply) = conn.call(&["AUTH", &ctx.token])
            && text(&reply) == "OK"
        {
            break;
        }
        ensure!(Instant::now() < deadline, "the operator could not authenticate after the brute force");
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(())
}

fn redaction(ctx: &mut Ctx<'_>) -> Result<()> {
    let token = ctx.token.clone();
    let mut conn = Conn::authed(&ctx.target(), &token)?;
    let info = text(&conn.call(&["INFO", "all"])?);
    ensure!(!info.contains(&token), "INFO shows the token");
    let command_line = info_field(&info, "command_line").unwrap_or_default();
    ensure!(command_line.contains("auth=<redacted>"), "INFO shows that a token is set: {command_line:?}");
    let clients = text(&conn.call(&["CLIENT", "LIST"])?);
    ensure!(!clients.contains(&token), "CLIENT LIST shows the token");
    let (_, json, _) = ctx.rtctl(&["--json", "status"])?;
    ensure!(!json.contains(&token), "rtctl --json status shows the token");
    ensure!(!ctx.guest.console().contains(&token), "the console shows the token");
    Ok(())
}

fn transactions(ctx: &mut Ctx<'_>) -> Result<()> {
    let mut conn = Conn::authed(&ctx.target(), &ctx.token)?;
    // A writable integer static.
    let keys = conn.call(&["KEYS", "*"])?;
    let mut writable = None;
    for key in items(&keys)?.iter().map(text) {
        let value = text(&conn.call(&["GET", &key])?);
        if value.parse::<i64>().is_ok() && text(&conn.call(&["SET", &key, &value])?) == "OK" {
            writable = Some((key, value));
            break;
        }
    }
    let Some((key, value)) = writable else { bail!("no writable integer static to test MULTI/EXEC with") };
    // A queueing error: EXEC runs nothing.
    expect_ok(&conn.call(&["MULTI"])?)?;
    ensure!(text(&conn.call(&["SET", &key, "4242"])?) == "QUEUED", "SET inside MULTI is queued");
    expect_error(&conn.call(&["NO.SUCH.COMMAND"])?, "ERR unknown command")?;
    expect_error(&conn.call(&["EXEC"])?, "EXECABORT")?;
    ensure!(text(&conn.call(&["GET", &key])?) == value, "the aborted transaction wrote {key}");
    // A good one runs whole.
    expect_ok(&conn.call(&["MULTI"])?)?;
    ensure!(text(&conn.call(&["SET", &key, "4242"])?) == "QUEUED", "queued");
    ensure!(text(&conn.call(&["GET", &key])?) == "QUEUED", "queued");
    let exec = conn.call(&["EXEC"])?;
    let replies = items(&exec)?;
    ensure!(replies.len() == 2 && text(&replies[1]) == "4242", "EXEC replies {exec:?}");
    expect_error(&conn.call(&["WATCH", &key])?, "ERR WATCH is not supported")?;
    // The same through redis-cli's stdin (one connection).
    let out = ctx.redis_cli_stdin(&[], format!("MULTI\nSET {key} {value}\nEXEC\nGET {key}\n").as_bytes())?;
    ensure!(out.contains("QUEUED") && out.trim_end().ends_with(&value), "redis-cli MULTI/EXEC: {out:?}");
    Ok(())
}
