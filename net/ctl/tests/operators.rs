//! The operators' side of `rtctl`: the instance registry (`ps`, `stop`,
//! `console`, picking the only instance), `-p`, JSON errors, the wrong-token
//! hint, completions and the manual page. The "hypervisor" of a registered
//! instance here is a `sleep` process; its control plane is the fake server.

mod support;

use std::path::Path;
use std::process::{Child, Command, Output};

use support::{FakeServer, TOKEN, TempDir, stderr, stdout};

fn rtctl(registry: &Path, directory: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rtctl"))
        .args(args)
        .env_remove("RTEDGE_TOKEN")
        .env_remove("RTEDGE_PORT")
        .env("RTEDGE_INSTANCES", registry)
        .current_dir(directory)
        .output()
        .expect("run rtctl")
}

/// A registered instance whose process is `sleep`, with its token file.
fn register(registry: &Path, name: &str, port: u16) -> Child {
    let child = Command::new("sleep").arg("120").spawn().expect("start sleep");
    std::fs::create_dir_all(registry).expect("registry");
    let token_path = registry.join(format!("{name}.token"));
    std::fs::write(&token_path, format!("{TOKEN}\n")).expect("token");
    let console = registry.join(format!("{name}.console"));
    std::fs::write(&console, format!("rtedge: console of {name}\ncontrol plane: guest port 6379\n")).expect("console");
    let entry = serde_json::json!({
        "name": name, "profile": "appliance", "hypervisor": "qemu-microvm",
        "pid": child.id(), "port": port, "guest_port": 6379,
        "token_path": token_path.display().to_string(),
        "console_log": console.display().to_string(),
        "program": "sleep", "started": 0, "detached": true,
    });
    std::fs::write(registry.join(format!("{name}.json")), entry.to_string()).expect("entry");
    child
}

fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

#[test]
fn the_only_instance_is_picked_and_two_are_listed_and_stopped() {
    let scratch = TempDir::new("instances");
    let registry = scratch.path().join("instances");
    let first = FakeServer::start();
    let second = FakeServer::start();
    let mut one = register(&registry, "one", first.port);

    // One instance: rtctl finds its port and token by itself.
    let output = rtctl(&registry, scratch.path(), &["get", "counter"]);
    assert_eq!(code(&output), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "42\n");
    assert_eq!(first.commands(), ["GET counter"]);
    let output = rtctl(&registry, scratch.path(), &["port"]);
    assert_eq!(stdout(&output), format!("{}\n", first.port));

    // Two: rtctl asks which, ps lists both.
    let mut two = register(&registry, "two", second.port);
    let output = rtctl(&registry, scratch.path(), &["get", "counter"]);
    assert_eq!(code(&output), Some(2));
    assert!(stderr(&output).contains("2 instances are running"), "{}", stderr(&output));
    let output = rtctl(&registry, scratch.path(), &["--instance", "two", "get", "counter"]);
    assert_eq!(code(&output), Some(0), "{}", stderr(&output));
    assert_eq!(second.commands(), ["GET counter"]);
    let output = rtctl(&registry, scratch.path(), &["ps"]);
    assert_eq!(code(&output), Some(0));
    let text = stdout(&output);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(text.contains(&format!("one   qemu-microvm  {}", one.id())), "{text}");
    assert!(text.contains(&format!("{}", second.port)), "{text}");
    let output = rtctl(&registry, scratch.path(), &["--json", "ps"]);
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(2));

    // console prints the log (the process is alive, so no --no-follow would wait).
    let output = rtctl(&registry, scratch.path(), &["console", "one", "--no-follow"]);
    assert_eq!(stdout(&output), "rtedge: console of one\ncontrol plane: guest port 6379\n");

    // stop: SHUTDOWN first, then a signal when the "guest" does not end.
    let output = rtctl(&registry, scratch.path(), &["stop", "--all", "--timeout-s", "1"]);
    assert_eq!(code(&output), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "stopped one (SHUTDOWN timed out; SIGTERM)\nstopped two (SHUTDOWN timed out; SIGTERM)\n");
    assert!(first.commands().contains(&"SHUTDOWN".to_string()), "{:?}", first.commands());
    assert!(one.wait().is_ok_and(|status| !status.success()));
    assert!(two.wait().is_ok_and(|status| !status.success()));
    let output = rtctl(&registry, scratch.path(), &["ps"]);
    assert!(stdout(&output).starts_with("no instance is running"), "{}", stdout(&output));
    let left: Vec<_> = std::fs::read_dir(&registry)
        .expect("registry")
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|extension| extension == "json"))
        .collect();
    assert!(left.is_empty(), "the registry is clean: {left:?}");
}

#[test]
fn a_dead_instance_is_not_picked_and_its_entry_goes() {
    let scratch = TempDir::new("stale");
    let registry = scratch.path().join("instances");
    let server = FakeServer::start();
    let mut child = register(&registry, "gone", server.port);
    let _ = child.kill();
    let _ = child.wait();
    let output = rtctl(&registry, scratch.path(), &["ps"]);
    assert!(stdout(&output).starts_with("no instance is running"), "{}", stdout(&output));
    assert!(!registry.join("gone.json").exists());
    let output = rtctl(&registry, scratch.path(), &["stop", "gone"]);
    assert_eq!(code(&output), Some(5), "{}", stderr(&output));
}

#[test]
fn dash_p_is_the_port_as_in_redis_cli() {
    let server = FakeServer::start();
    let scratch = TempDir::new("dash-p");
    let port = server.port.to_string();
    let output = rtctl(&scratch.path().join("i"), scratch.path(), &["-p", &port, "--token", TOKEN, "get", "counter"]);
    assert_eq!(code(&output), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "42\n");
}

#[test]
fn errors_are_json_in_json_mode_and_words_elsewhere() {
    let scratch = TempDir::new("json-errors");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    let output = rtctl(&scratch.path().join("i"), scratch.path(), &["--json", "-p", &port.to_string(), "threads"]);
    assert_eq!(code(&output), Some(3));
    let error: serde_json::Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(error["error"], format!("cannot connect to 127.0.0.1:{port}: connection refused"));
    assert_eq!(error["exit_code"], 3);
    assert_eq!(stderr(&output), "");

    let server = FakeServer::start();
    let missing = scratch.path().join("no-such-directory/plot.png");
    let output = rtctl(
        &scratch.path().join("i"),
        scratch.path(),
        &["-p", &server.port.to_string(), "--token", TOKEN, "latency", "rt0", "--plot", &missing.display().to_string()],
    );
    let text = stderr(&output);
    assert_eq!(code(&output), Some(1), "{text}");
    assert_eq!(text, format!("error: cannot write plot {}: no such file or directory\n", missing.display()));
}

#[test]
fn completions_and_the_manual_page_are_generated() {
    let scratch = TempDir::new("completions");
    let output = rtctl(&scratch.path().join("i"), scratch.path(), &["completions", "bash"]);
    assert_eq!(code(&output), Some(0));
    let script = stdout(&output);
    assert!(script.contains("complete -F _rtctl"), "{script}");
    assert!(script.contains("threads"), "subcommands are completed");
    let output = rtctl(&scratch.path().join("i"), scratch.path(), &["man"]);
    assert_eq!(code(&output), Some(0));
    let page = stdout(&output);
    assert!(page.starts_with(".ie"), "{}", &page[..page.len().min(200)]);
    assert!(page.contains(".TH rtctl"), "roff title");
}
