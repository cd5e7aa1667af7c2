//! The runner's exit codes and messages when its build step ends early
//! (issue 15): Ctrl-C during the build is "interrupted" and 130, as the
//! shell reports a SIGINT, never "cargo's error is above" with 125; a
//! build that fails by itself is 125 with that pointer.
//!
//! The build's cargo is a stand-in (`$CARGO`, which the runner honours):
//! a script that records that it started and then waits, or fails at once.
//! Ctrl-C is sent as a terminal sends it, to the whole process group.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A scratch directory of this test process.
fn scratch(name: &str) -> PathBuf {
    let directory = std::env::temp_dir().join(format!("rtedge-interrupt-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("scratch directory");
    directory
}

/// Writes an executable shell script.
fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write the stand-in cargo");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod the stand-in cargo");
}

fn runner(cargo: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rtedge-image"));
    command
        .args(["build", "ktest"])
        .env("CARGO", cargo)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    command
}

fn finish(child: std::process::Child) -> Output {
    child.wait_with_output().expect("wait for the runner")
}

#[test]
fn ctrl_c_during_the_build_says_interrupted_and_exits_130() {
    let directory = scratch("sigint");
    let started = directory.join("started");
    let cargo = directory.join("cargo");
    script(&cargo, &format!("touch '{}'\nexec sleep 60", started.display()));
    let mut child = runner(&cargo).spawn().expect("start the runner");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        if child.try_wait().expect("poll the runner").is_some() {
            let output = finish(child);
            panic!("the runner ended before its build step: {:?}", String::from_utf8_lossy(&output.stderr));
        }
        assert!(Instant::now() < deadline, "the runner never started its build step");
        std::thread::sleep(Duration::from_millis(20));
    }
    let group = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on the process group created for the runner (process_group(0)).
    let sent = unsafe { libc::kill(-group, libc::SIGINT) };
    assert_eq!(sent, 0, "SIGINT to the runner's group");
    let output = finish(child);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(130), "exit status after Ctrl-C; stdout {stdout:?} stderr {stderr:?}");
    assert!(stderr.contains("interrupted"), "says it was interrupted: {stderr:?}");
    assert!(!stderr.contains("cargo's error is above"), "points at no cargo error: {stderr:?}");
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn a_failed_build_points_at_cargos_error_and_exits_125() {
    let directory = scratch("failed");
    let cargo = directory.join("cargo");
    script(&cargo, "echo 'error[E0000]: stand-in failure' >&2\nexit 101");
    let output = finish(runner(&cargo).spawn().expect("start the runner"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "exit status of a failed build: {stderr:?}");
    assert!(stderr.contains("stand-in failure"), "cargo's own error is passed through: {stderr:?}");
    assert!(stderr.contains("cargo's error is above"), "points at cargo's error: {stderr:?}");
    assert!(!stderr.contains("interrupted"), "not an interruption: {stderr:?}");
    let _ = std::fs::remove_dir_all(&directory);
}
