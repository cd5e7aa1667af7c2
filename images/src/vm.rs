//! Starting a hypervisor and watching it: interactive runs with the console
//! on the terminal, and captured runs with a hard timeout, a live prefixed
//! console and a summary of what the guest printed.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::console::{self, ConsoleSummary, LineSplitter};
use crate::exitcode::HostStatus;
use crate::hypervisor::Invocation;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT/SIGTERM set a flag instead of killing the runner, so it can
/// kill the VM it started (a captured VM sits in its own process group and
/// does not see the terminal's Ctrl-C) and report.
pub fn install_interrupt_handler() {
    let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe;
    // children get the default disposition back at exec.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Kills the process group led by `child` (created with `process_group(0)`).
fn kill_group(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) has no memory-safety preconditions; the group is
        // the one we created for this child.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.kill();
}

/// Waits for `child` (started with `process_group(0)`) to end; at `limit`
/// its whole group is killed and the error says so.
pub fn wait_or_kill(child: &mut Child, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            kill_group(child);
            let _ = child.wait();
            anyhow::bail!("did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// uhyve's and QEMU's own chatter (`[WARN  uhyvelib::..]`, `qemu-...: warning:`),
/// shown only with `--verbose`.
pub fn is_hypervisor_noise(line: &str) -> bool {
    let trimmed = line.trim_start();
    (trimmed.starts_with('[') && (trimmed.contains("WARN ") || trimmed.contains("INFO "))) || line.contains(": warning: ")
}

/// Whether stderr text says uhyve could not use KVM or create a VM.
pub fn is_kvm_failure(stderr: &str) -> bool {
    let lower = stderr.to_lowercase();
    lower.contains("kvm") && ["error", "fail", "panicked", "permission denied", "cannot", "unable"].iter().any(|word| lower.contains(word))
}

/// A run with the console on the terminal.
#[derive(Debug)]
pub struct InteractiveRun {
    pub status: HostStatus,
    pub console: ConsoleSummary,
    pub interrupted: bool,
}

/// Boots with stdin from the terminal; the console is copied through
/// unchanged (and scanned for the shutdown line). With `filter_stderr`
/// (uhyve) its stderr is shown without the noise unless `verbose`.
///
/// With `ctrl_c_stops` (uhyve, which has no console input) and a terminal
/// on stdin, the terminal stops turning Ctrl-C into SIGINT for the whole
/// foreground group (`make` included, which would then fail with 130
/// whatever the runner said); the runner reads the Ctrl-C byte itself and
/// stops the hypervisor, as QEMU's raw console does with Ctrl-A X.
pub fn boot_interactive(
    invocation: &Invocation,
    filter_stderr: bool,
    verbose: bool,
    ctrl_c_stops: bool,
    on_start: &mut dyn FnMut(u32),
) -> Result<InteractiveRun> {
    let terminal = if ctrl_c_stops { RawTerminal::enter() } else { None };
    let mut command = Command::new(&invocation.program);
    command.args(&invocation.args).stdin(if terminal.is_some() { Stdio::null() } else { Stdio::inherit() }).stdout(Stdio::piped());
    command.stderr(if filter_stderr { Stdio::piped() } else { Stdio::inherit() });
    let mut child = command.spawn().with_context(|| format!("cannot start {}", invocation.program.display()))?;
    on_start(child.id());
    if terminal.is_some() {
        watch_for_ctrl_c(child.id());
    }

    let stdout = child.stdout.take().context("child stdout")?;
    let pump = thread::spawn(move || copy_and_scan(stdout));
    let stderr_filter = child.stderr.take().map(|stderr| {
        thread::spawn(move || {
            let mut splitter = LineSplitter::new(console::MAX_LINE);
            for_each_chunk(stderr, |chunk| {
                splitter.feed(chunk, |line| {
                    let text = console::line_text(line);
                    if verbose || !is_hypervisor_noise(&text) {
                        eprintln!("{text}");
                    }
                });
            });
        })
    });

    let mut interrupt_seen_at = None;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for the hypervisor")? {
            break status;
        }
        if interrupted() {
            // The child got the same signal from the terminal; give it time to exit.
            let since = *interrupt_seen_at.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(3) {
                let _ = child.kill();
            }
        }
        thread::sleep(Duration::from_millis(50));
    };
    let console = pump.join().unwrap_or_default();
    if let Some(filter) = stderr_filter {
        let _ = filter.join();
    }
    drop(terminal);
    Ok(InteractiveRun { status: HostStatus::from_std(status), console, interrupted: interrupted() })
}

/// The terminal on stdin with signals and line editing off (Ctrl-C is a
/// byte); the saved settings come back on drop.
struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    /// `None` when stdin is no terminal (nothing to change).
    fn enter() -> Option<RawTerminal> {
        // SAFETY: isatty/tcgetattr/tcsetattr read and write the termios
        // struct we own; fd 0 is stdin for the whole process.
        unsafe {
            if libc::isatty(libc::STDIN_FILENO) != 1 {
                return None;
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            raw.c_lflag &= !(libc::ICANON | libc::ISIG | libc::ECHO | libc::IEXTEN);
            raw.c_cc[libc::VMIN] = 1;
            raw.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            Some(RawTerminal { saved })
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter` on the same fd.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}

/// Reads stdin until a Ctrl-C byte (0x03), then marks the run interrupted
/// and sends SIGINT to `pid`. The thread is left behind when the run ends
/// otherwise (it blocks in read; the process exits soon after).
fn watch_for_ctrl_c(pid: u32) {
    thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut byte = [0u8; 1];
        while let Ok(1) = stdin.read(&mut byte) {
            if byte[0] == 0x03 {
                INTERRUPTED.store(true, Ordering::SeqCst);
                if let Ok(pid) = libc::pid_t::try_from(pid) {
                    // SAFETY: kill(2) has no memory-safety preconditions;
                    // pid is our child, not yet waited for.
                    unsafe { libc::kill(pid, libc::SIGINT) };
                }
                return;
            }
        }
    });
}

/// Starts the hypervisor in a session of its own (no terminal: Ctrl-C and a
/// closed terminal do not reach it), stdin from /dev/null, stdout and
/// stderr written to `console_log`. The caller may watch the child while it
/// starts; once the runner exits, init reaps it.
pub fn spawn_detached(invocation: &Invocation, console_log: &std::path::Path) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(console_log)
        .with_context(|| format!("cannot create {}", console_log.display()))?;
    let log_for_stderr = log.try_clone().context("duplicating the console log")?;
    let mut command = Command::new(&invocation.program);
    command.args(&invocation.args).stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(log_for_stderr));
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of this
    // process; the closure runs in the child between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().with_context(|| format!("cannot start {}", invocation.program.display()))
}

fn for_each_chunk(mut reader: impl Read, mut chunk: impl FnMut(&[u8])) {
    let mut buffer = [0u8; 8192];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => chunk(&buffer[..count]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
}

fn copy_and_scan(reader: impl Read) -> ConsoleSummary {
    let mut summary = ConsoleSummary::default();
    let mut splitter = LineSplitter::new(console::MAX_LINE);
    let mut out = std::io::stdout();
    for_each_chunk(reader, |chunk| {
        let _ = out.write_all(chunk);
        let _ = out.flush();
        splitter.feed(chunk, |line| summary.observe(&console::line_text(line)));
    });
    splitter.finish(|line| summary.observe(&console::line_text(line)));
    summary
}

/// How a captured run shows the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    /// Every line, prefixed with the run's label.
    Prefixed,
    /// Nothing (failures print the stderr afterwards).
    Quiet,
}

#[derive(Clone, Debug)]
pub struct CaptureOptions {
    /// Shown as `[label] ` before each console line.
    pub label: String,
    pub timeout: Duration,
    pub echo: Echo,
    pub verbose: bool,
    /// Keep the raw console bytes (for logs).
    pub keep_log: bool,
}

/// What happened in a captured run.
#[derive(Debug)]
pub struct CapturedRun {
    /// `None` when the run timed out or was interrupted (the group was killed).
    pub status: Option<HostStatus>,
    pub timed_out: bool,
    pub interrupted: bool,
    pub elapsed: Duration,
    pub console: ConsoleSummary,
    /// Non-empty stderr lines (at most `MAX_STDERR_LINES`).
    pub stderr: Vec<String>,
    /// Stderr said KVM or VM creation failed before any console output.
    pub kvm_failure: Option<String>,
    pub log: Vec<u8>,
}

const MAX_STDERR_LINES: usize = 200;
/// Console bytes echoed per run; a guest printing garbage is cut off here.
const MAX_ECHO_BYTES: usize = 1 << 20;
const MAX_LOG_BYTES: usize = 64 << 20;

enum Event {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Closed,
}

struct Capture<'a> {
    options: &'a CaptureOptions,
    console: ConsoleSummary,
    stderr: Vec<String>,
    stderr_before_console: Vec<String>,
    echoed: usize,
    echo_cut: bool,
    log: Vec<u8>,
}

impl Capture<'_> {
    fn stdout_chunk(&mut self, lines: &mut LineSplitter, chunk: &[u8]) {
        if self.options.keep_log && self.log.len() < MAX_LOG_BYTES {
            self.log.extend_from_slice(chunk);
        }
        lines.feed(chunk, |line| self.console_line(line));
    }

    fn console_line(&mut self, bytes: &[u8]) {
        let text = console::line_text(bytes);
        self.console.observe(&text);
        let show = self.options.echo == Echo::Prefixed || self.options.verbose;
        if !show {
            return;
        }
        if self.echoed >= MAX_ECHO_BYTES {
            if !self.echo_cut {
                self.echo_cut = true;
                println!("[{}] ... console output beyond {} KiB not shown", self.options.label, MAX_ECHO_BYTES >> 10);
            }
            return;
        }
        self.echoed += bytes.len() + 1;
        if let Some(shown) = console::display_line(&text) {
            println!("[{}] {shown}", self.options.label);
        }
    }

    fn stderr_line(&mut self, bytes: &[u8]) {
        let text = console::line_text(bytes);
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        if self.console.lines == 0 {
            self.stderr_before_console.push(text.to_string());
        }
        let noise = is_hypervisor_noise(text);
        if self.options.verbose || (!noise && self.options.echo == Echo::Prefixed) {
            eprintln!("[{} stderr] {text}", self.options.label);
        }
        if self.stderr.len() < MAX_STDERR_LINES {
            self.stderr.push(text.to_string());
        }
    }
}

/// Boots with stdin from /dev/null in a new process group, streams and
/// scans the console, and kills the group at the timeout.
pub fn boot_captured(invocation: &Invocation, options: &CaptureOptions) -> Result<CapturedRun> {
    if options.verbose {
        println!("[{}] $ {invocation}", options.label);
    }
    let started = Instant::now();
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(&invocation.program)
            .args(&invocation.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", invocation.program.display()))?
    };
    let (sender, events) = mpsc::channel();
    let stdout = child.stdout.take().context("child stdout")?;
    let stderr = child.stderr.take().context("child stderr")?;
    let readers = [spawn_reader(stdout, sender.clone(), Event::Stdout), spawn_reader(stderr, sender, Event::Stderr)];

    let mut capture = Capture {
        options,
        console: ConsoleSummary::default(),
        stderr: Vec::new(),
        stderr_before_console: Vec::new(),
        echoed: 0,
        echo_cut: false,
        log: Vec::new(),
    };
    let mut stdout_lines = LineSplitter::new(console::MAX_LINE);
    let mut stderr_lines = LineSplitter::new(console::MAX_LINE);
    let deadline = started + options.timeout;
    let mut open_streams = 2;
    let mut exited_at = None;
    let (mut timed_out, mut was_interrupted) = (false, false);
    while open_streams > 0 {
        if interrupted() {
            was_interrupted = true;
            kill_group(&mut child);
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            kill_group(&mut child);
            break;
        }
        match events.recv_timeout((deadline - now).min(Duration::from_millis(100))) {
            Ok(Event::Stdout(chunk)) => capture.stdout_chunk(&mut stdout_lines, &chunk),
            Ok(Event::Stderr(chunk)) => stderr_lines.feed(&chunk, |line| capture.stderr_line(line)),
            Ok(Event::Closed) => open_streams -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Something else may hold the pipes open after the VM exited.
                if child.try_wait().ok().flatten().is_some()
                    && exited_at.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(1)
                {
                    kill_group(&mut child);
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = wait_until(&mut child, deadline, &mut timed_out)?;
    let elapsed = started.elapsed();
    let was_interrupted = was_interrupted || interrupted();
    // Keep what the killed VM printed last.
    while let Ok(event) = events.recv_timeout(Duration::from_millis(200)) {
        match event {
            Event::Stdout(chunk) => capture.stdout_chunk(&mut stdout_lines, &chunk),
            Event::Stderr(chunk) => stderr_lines.feed(&chunk, |line| capture.stderr_line(line)),
            Event::Closed => {}
        }
    }
    stdout_lines.finish(|line| capture.console_line(line));
    stderr_lines.finish(|line| capture.stderr_line(line));
    for reader in readers {
        let _ = reader.join();
    }
    let before_console = capture.stderr_before_console.join("\n");
    let kvm_failure = if capture.console.lines == 0 && is_kvm_failure(&before_console) {
        let relevant: Vec<&str> =
            capture.stderr_before_console.iter().map(String::as_str).filter(|line| !is_hypervisor_noise(line)).collect();
        Some(if relevant.is_empty() { before_console } else { relevant.join(" / ") })
    } else {
        None
    };
    Ok(CapturedRun {
        status: (!timed_out && !was_interrupted).then(|| HostStatus::from_std(status)),
        timed_out,
        interrupted: was_interrupted,
        elapsed,
        console: capture.console,
        stderr: capture.stderr,
        kvm_failure,
        log: capture.log,
    })
}

/// Waits for the child, killing its group if it outlives `deadline` (a VM
/// that closed its console but kept running).
fn wait_until(child: &mut Child, deadline: Instant, timed_out: &mut bool) -> Result<std::process::ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().context("waiting for the hypervisor")? {
            return Ok(status);
        }
        if Instant::now() >= deadline || interrupted() {
            *timed_out |= !interrupted();
            kill_group(child);
            return child.wait().context("waiting for the hypervisor");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_reader(reader: impl Read + Send + 'static, sender: mpsc::Sender<Event>, wrap: fn(Vec<u8>) -> Event) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for_each_chunk(reader, |chunk| {
            let _ = sender.send(wrap(chunk.to_vec()));
        });
        let _ = sender.send(Event::Closed);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypervisor_noise_is_recognised() {
        assert!(is_hypervisor_noise("[WARN  uhyvelib::linux::x86_64::kvm_cpu] something"));
        assert!(is_hypervisor_noise("qemu-system-x86_64: warning: host doesn't support requested feature"));
        assert!(!is_hypervisor_noise("qemu-system-x86_64: -accel kvm: failed to initialize kvm: Permission denied"));
        assert!(!is_hypervisor_noise("[ERROR uhyvelib] Error 5"));
    }

    #[test]
    fn kvm_failures_are_recognised() {
        assert!(is_kvm_failure("thread 'main' panicked at src/linux/x86_64/kvm_cpu.rs:115:38:\ncalled `Result::unwrap()`"));
        assert!(is_kvm_failure("Could not access KVM kernel module: Permission denied"));
        assert!(!is_kvm_failure("[WARN  uhyvelib] file isolation: landlock unsupported"));
        assert!(!is_kvm_failure("error: image not found"));
    }
}
