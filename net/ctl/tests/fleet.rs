//! `rtctl --fleet`: the real binary against several fake control planes at
//! once (see `support`), one of them down, one silent, one with another
//! token: one row per appliance, every failure in its own row.

mod support;

use std::net::TcpListener;
use std::path::Path;

use support::{Config, FakeServer, TOKEN, TempDir, run, stderr, stdout};

fn assert_code(output: &std::process::Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "stdout:\n{}\nstderr:\n{}", stdout(output), stderr(output));
}

/// A loopback port with nothing listening (bound, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

fn rtctl(directory: &Path, args: &[&str]) -> std::process::Output {
    run(Path::new(env!("CARGO_BIN_EXE_rtctl")), args, Some(directory))
}

/// Writes `inventory` into a fresh directory with the token files the
/// tests use: `alpha.token` (the default token) and `other.token`.
fn fleet_dir(inventory: &str) -> TempDir {
    let directory = TempDir::new("fleet");
    std::fs::write(directory.path().join("fleet.txt"), inventory).expect("write inventory");
    std::fs::write(directory.path().join("alpha.token"), format!("{TOKEN}\n")).expect("write token");
    std::fs::write(directory.path().join("other.token"), "other-token\n").expect("write token");
    directory
}

#[test]
fn status_fans_out_and_one_dead_appliance_does_not_hide_the_others() {
    let alpha = FakeServer::start();
    let beta = FakeServer::with(Config { token: Some("other-token".into()), ..Config::default() });
    let dead = closed_port();
    let directory = fleet_dir(&format!(
        "# the fleet\nalpha 127.0.0.1 {} file:alpha.token\nbeta 127.0.0.1 {} file:other.token\ndead 127.0.0.1 {dead} file:alpha.token\n",
        alpha.port, beta.port
    ));
    let output = rtctl(directory.path(), &["--fleet", "fleet.txt", "status"]);
    assert_code(&output, 6);
    let expected = format!(
        "\
NAME   ADDRESS          VERSION      UPTIME  BOOT                CPUS                       HEAP  THREADS  CLIENTS  ERROR
alpha  127.0.0.1:{a}  0.1.0    1h 02m 03s  pvh (qemu-microvm)     2  1.0 MiB / 16.0 MiB (6.2%)        3        1
beta   127.0.0.1:{b}  0.1.0    1h 02m 03s  pvh (qemu-microvm)     2  1.0 MiB / 16.0 MiB (6.2%)        3        1
dead   127.0.0.1:{dead}  -                 -  -                      -                          -        -        -  cannot connect to 127.0.0.1:{dead}: connection refused
",
        a = alpha.port,
        b = beta.port
    );
    assert_eq!(stdout(&output), expected);
    assert_eq!(stderr(&output), "rtctl: 1 of 3 appliances failed\n");
    // Each live appliance got its own token and one INFO.
    assert_eq!(alpha.requests().first().map(|request| request.join(" ")), Some(format!("HELLO 3 AUTH default {TOKEN}")));
    assert_eq!(beta.requests().first().map(|request| request.join(" ")), Some("HELLO 3 AUTH default other-token".to_owned()));
    assert_eq!(alpha.commands(), ["INFO"]);
    assert_eq!(beta.commands(), ["INFO"]);
}

#[test]
fn a_wrong_token_a_missing_token_file_and_a_silent_server_are_row_errors() {
    let good = FakeServer::start();
    let silent = FakeServer::with(Config { answers: false, ..Config::default() });
    let directory = fleet_dir(&format!(
        "good 127.0.0.1 {port}\nwrong 127.0.0.1 {port} file:other.token\nlost 127.0.0.1 {port} file:missing.token\nunset 127.0.0.1 {port} env:RTCTL_FLEET_UNSET_VARIABLE\nsilent 127.0.0.1 {silent}\n",
        port = good.port,
        silent = silent.port
    ));
    let output = rtctl(directory.path(), &["--fleet", "fleet.txt", "--token", TOKEN, "--timeout-ms", "300", "get", "counter", "banner"]);
    assert_code(&output, 6);
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert_eq!(
        lines.first().map(|line| line.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["NAME", "ADDRESS", "counter", "banner", "ERROR"])
    );
    let row = |name: &str| -> String {
        lines
            .iter()
            .find(|line| line.starts_with(&format!("{name} ")))
            .map(|line| line.split_whitespace().skip(2).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| panic!("no row for {name} in\n{text}"))
    };
    assert_eq!(row("good"), "42 hello rtedge");
    assert!(row("wrong").starts_with("- - WRONGPASS"), "{}", row("wrong"));
    assert!(row("lost").starts_with("- - cannot read token file "), "{}", row("lost"));
    assert_eq!(row("unset"), "- - environment variable RTCTL_FLEET_UNSET_VARIABLE is not set");
    assert!(row("silent").ends_with(": timed out"), "{}", row("silent"));
    assert_eq!(stderr(&output), "rtctl: 4 of 5 appliances failed\n");
}

#[test]
fn json_has_one_object_per_appliance_with_its_result_or_error() {
    let alpha = FakeServer::start();
    let dead = closed_port();
    let directory = fleet_dir(&format!("alpha 127.0.0.1 {} file:alpha.token\ndead 127.0.0.1 {dead} none\n", alpha.port));
    let output = rtctl(directory.path(), &["--fleet", "fleet.txt", "--json", "get", "counter"]);
    assert_code(&output, 6);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    let rows = json.as_array().expect("an array");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["name"], "alpha");
    assert_eq!(rows[0]["ok"], true);
    assert_eq!(rows[0]["result"], serde_json::json!({"counter": 42}));
    assert_eq!(rows[1]["name"], "dead");
    assert_eq!(rows[1]["ok"], false);
    assert_eq!(rows[1]["exit_code"], 3);
    assert_eq!(rows[1]["error"], format!("cannot connect to 127.0.0.1:{dead}: connection refused"));
}

#[test]
fn threads_summarise_each_appliance_in_one_row() {
    let alpha = FakeServer::start();
    let beta = FakeServer::start();
    let directory = fleet_dir(&format!("alpha 127.0.0.1 {}\nbeta 127.0.0.1 {}\n", alpha.port, beta.port));
    let output = rtctl(directory.path(), &["--fleet", "fleet.txt", "--token", TOKEN, "threads"]);
    assert_code(&output, 0);
    assert_eq!(
        stdout(&output),
        format!(
            "\
NAME   ADDRESS          THREADS  RT  RUNNING  MISSES  WORST-LAT  ERROR
alpha  127.0.0.1:{a}        3   1        1       2     12.3µs
beta   127.0.0.1:{b}        3   1        1       2     12.3µs
",
            a = alpha.port,
            b = beta.port
        )
    );
    assert_eq!(stderr(&output), "");
}

#[test]
fn commands_that_cannot_fan_out_and_bad_inventories_are_refused_before_connecting() {
    let alpha = FakeServer::start();
    let directory = fleet_dir(&format!("alpha 127.0.0.1 {}\n", alpha.port));
    let output = rtctl(directory.path(), &["--fleet", "fleet.txt", "top", "--once"]);
    assert_code(&output, 1);
    assert!(stderr(&output).contains("with --fleet use one of: status, threads, get"), "{}", stderr(&output));
    std::fs::write(directory.path().join("bad.txt"), "alpha 127.0.0.1\n").expect("write");
    let output = rtctl(directory.path(), &["--fleet", "bad.txt", "status"]);
    assert_code(&output, 1);
    assert_eq!(stderr(&output), "error: inventory bad.txt: line 1: expected `NAME HOST PORT [TOKEN]`, got `alpha 127.0.0.1`\n");
    let output = rtctl(directory.path(), &["--fleet", "fleet.txt", "--port", "1", "status"]);
    assert_code(&output, 2);
    assert!(alpha.requests().is_empty(), "{:?}", alpha.requests());
}
