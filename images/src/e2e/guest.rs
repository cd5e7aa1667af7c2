//! A running appliance for end-to-end tests: the hypervisor in its own
//! process group, its console collected in the background (and typed into,
//! under QEMU), the control plane's address, and its exit.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::exitcode::{self, ExitConvention, HostStatus, Outcome};
use crate::hypervisor::{Accel, BootSpec, ConsoleMode, Hypervisor, Invocation, PortForward, Tools};

/// Where the control plane answers, as seen from the host.
#[derive(Clone, Debug)]
pub enum Target {
    /// QEMU user networking: a forwarded port on the host loopback.
    Loopback { port: u16 },
    /// uhyve with a tap device inside a network namespace: the guest's own
    /// address, reachable only from inside that namespace.
    Netns { namespace: String, address: String, port: u16 },
}

impl Target {
    pub fn host(&self) -> &str {
        match self {
            Target::Loopback { .. } => "127.0.0.1",
            Target::Netns { address, .. } => address,
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            Target::Loopback { port } | Target::Netns { port, .. } => *port,
        }
    }

    /// A command that runs `program` where the target is reachable.
    pub fn command(&self, program: &Path) -> Command {
        match self {
            Target::Loopback { .. } => Command::new(program),
            Target::Netns { namespace, .. } => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace]).arg(program);
                command
            }
        }
    }

    /// A TCP connection to the control plane (made inside the namespace
    /// when there is one; the socket keeps working from any thread).
    pub fn connect(&self, timeout: Duration) -> std::io::Result<TcpStream> {
        match self {
            Target::Loopback { port } => TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], *port)), timeout),
            Target::Netns { namespace, address, port } => {
                let namespace = namespace.clone();
                let address: SocketAddr =
                    format!("{address}:{port}").parse().map_err(|_| std::io::Error::other(format!("bad guest address {address}")))?;
                thread::spawn(move || -> std::io::Result<TcpStream> {
                    enter_namespace(&namespace)?;
                    TcpStream::connect_timeout(&address, timeout)
                })
                .join()
                .map_err(|_| std::io::Error::other("namespace thread panicked"))?
            }
        }
    }
}

/// Moves the calling thread (only it) into network namespace `name`.
fn enter_namespace(name: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/var/run/netns/{name}"))?;
    // SAFETY: setns(2) on a valid namespace descriptor affects only this thread.
    let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A free TCP port on the host loopback (bound, then released).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// A network namespace with a tap device for uhyve, removed on drop.
pub struct Namespace {
    pub name: String,
    pub tap: String,
    pub host_address: String,
    pub guest_address: String,
}

impl Namespace {
    /// Creates `rtedge-e2e-<pid>` with `tap0` at 10.0.7.1/24 (the guest is
    /// 10.0.7.2). Needs root (CAP_NET_ADMIN) and the `ip` tool.
    pub fn create() -> Result<Namespace> {
        let name = format!("rtedge-e2e-{}", std::process::id());
        let namespace =
            Namespace { name: name.clone(), tap: "tap0".into(), host_address: "10.0.7.1".into(), guest_address: "10.0.7.2".into() };
        let steps: [&[&str]; 5] = [
            &["netns", "add", &name],
            &["netns", "exec", &name, "ip", "link", "set", "lo", "up"],
            &["netns", "exec", &name, "ip", "tuntap", "add", "dev", "tap0", "mode", "tap"],
            &["netns", "exec", &name, "ip", "addr", "add", "10.0.7.1/24", "dev", "tap0"],
            &["netns", "exec", &name, "ip", "link", "set", "tap0", "up"],
        ];
        for step in steps {
            let output = Command::new("ip").args(step).output().context("cannot run `ip` (package iproute2)")?;
            if !output.status.success() {
                bail!("ip {}: {}", step.join(" "), String::from_utf8_lossy(&output.stderr).trim());
            }
        }
        Ok(namespace)
    }
}

impl Namespace {
    /// `cmdline` with the guest's static address in the namespace.
    fn guest_cmdline(&self, cmdline: &str) -> String {
        format!("{cmdline} ip={}/24 gw={}", self.guest_address, self.host_address)
    }

    /// `program args` run inside the namespace (`ip netns exec`, which
    /// execs it: the process is the hypervisor's).
    fn exec(&self, program: &Path, args: Vec<String>) -> Invocation {
        let mut all = vec!["netns".to_string(), "exec".into(), self.name.clone(), program.display().to_string()];
        all.extend(args);
        Invocation { program: PathBuf::from("ip"), args: all }
    }

    /// Where the guest's `port` answers, from inside the namespace.
    fn target(&self, port: u16) -> Target {
        Target::Netns { namespace: self.name.clone(), address: self.guest_address.clone(), port }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

#[derive(Default)]
struct Console {
    bytes: Vec<u8>,
    closed: bool,
}

/// A booted appliance. Dropping it kills the hypervisor.
pub struct Guest {
    pub label: String,
    pub hypervisor: Hypervisor,
    pub target: Target,
    child: Child,
    stdin: Option<ChildStdin>,
    console: Arc<(Mutex<Console>, Condvar)>,
    readers: Vec<thread::JoinHandle<()>>,
    status: Option<HostStatus>,
    pub booted_at: Instant,
    /// The host loopback port forwarded to the guest's `GET /metrics`
    /// (QEMU only).
    pub metrics_port: Option<u16>,
}

/// What to boot.
pub struct GuestSpec<'a> {
    pub tools: &'a Tools,
    pub hypervisor: Hypervisor,
    pub image: PathBuf,
    pub cmdline: String,
    pub smp: u32,
    pub memory_mib: u32,
    pub guest_port: u16,
    pub namespace: Option<&'a Namespace>,
    pub initrd: Option<PathBuf>,
}

impl Guest {
    pub fn boot(spec: &GuestSpec<'_>) -> Result<Guest> {
        let mut metrics_port = None;
        let (invocation, target) = match (spec.hypervisor, spec.namespace) {
            (Hypervisor::Uhyve, Some(namespace)) => {
                // Under uhyve on an emulated CPU (as on nested KVM) a context
                // switch costs ~0.7 ms, so the 1 kHz soft-interrupt test and
                // the console-IRQ program (no UART there) are left out.
                let cmdline =
                    format!("{} modules=tasklet,tasklet-disable,rtalloc,buddy,shm,job,kmore", namespace.guest_cmdline(&spec.cmdline));
                let boot = BootSpec {
                    image: spec.image.clone(),
                    cmdline,
                    smp: spec.smp,
                    memory_mib: spec.memory_mib,
                    accel: Accel::Kvm,
                    console: ConsoleMode::Captured,
                    net: None,
                };
                let uhyve = spec.tools.invocation(Hypervisor::Uhyve, &boot)?;
                let mut args = vec!["--net".to_string(), format!("tap:{}", namespace.tap)];
                args.extend(uhyve.args);
                (namespace.exec(&uhyve.program, args), namespace.target(spec.guest_port))
            }
            (Hypervisor::Uhyve, None) => bail!("uhyve end-to-end runs need a network namespace"),
            (hypervisor, Some(namespace)) => {
                // QEMU on a tap device in the namespace (`RTEDGE_E2E_NET=tap`):
                // the host kernel carries the clients' TCP, not QEMU's user
                // networking in its main loop.
                let boot = BootSpec {
                    image: spec.image.clone(),
                    cmdline: namespace.guest_cmdline(&spec.cmdline),
                    smp: spec.smp,
                    memory_mib: spec.memory_mib,
                    accel: Accel::Tcg,
                    console: ConsoleMode::Captured,
                    net: None,
                };
                let qemu = spec.tools.invocation(hypervisor, &boot)?;
                let mut args = qemu.args;
                args.extend(crate::hypervisor::qemu_tap_netdev(hypervisor, &namespace.tap));
                if let Some(initrd) = &spec.initrd {
                    args.push("-initrd".into());
                    args.push(initrd.display().to_string());
                }
                (namespace.exec(&qemu.program, args), namespace.target(spec.guest_port))
            }
            (hypervisor, _) => {
                let port = free_port()?;
                let boot = BootSpec {
                    image: spec.image.clone(),
                    cmdline: spec.cmdline.clone(),
                    smp: spec.smp,
                    memory_mib: spec.memory_mib,
                    accel: Accel::Tcg,
                    console: ConsoleMode::Captured,
                    net: Some(PortForward { host: port, guest: spec.guest_port }),
                };
                let mut invocation = spec.tools.invocation(hypervisor, &boot)?;
                if let Some(guest) = crate::hypervisor::guest_metrics_port(&spec.cmdline) {
                    let forward = PortForward { host: free_port()?, guest };
                    if crate::hypervisor::add_qemu_forward(&mut invocation, forward) {
                        metrics_port = Some(forward.host);
                    }
                }
                if let Some(initrd) = &spec.initrd {
                    invocation.args.push("-initrd".into());
                    invocation.args.push(initrd.display().to_string());
                }
                (invocation, Target::Loopback { port })
            }
        };
        let label = spec.hypervisor.name().to_string();
        let mut child = {
            use std::os::unix::process::CommandExt;
            Command::new(&invocation.program)
                .args(&invocation.args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .spawn()
                .with_context(|| format!("cannot start {invocation}"))?
        };
        let console: Arc<(Mutex<Console>, Condvar)> = Arc::default();
        let mut readers = Vec::new();
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let console = Arc::clone(&console);
            readers.push(thread::spawn(move || collect(stream, &console)));
        }
        Ok(Guest {
            label,
            hypervisor: spec.hypervisor,
            target,
            stdin: child.stdin.take(),
            child,
            console,
            readers,
            status: None,
            booted_at: Instant::now(),
            metrics_port,
        })
    }

    /// Everything the console (and the hypervisor's stderr) printed so far.
    pub fn console(&self) -> String {
        let (lock, _) = &*self.console;
        String::from_utf8_lossy(&lock.lock().map(|c| c.bytes.clone()).unwrap_or_default()).into_owned()
    }

    /// Bytes printed so far: a mark for [`Self::console_since`].
    pub fn console_mark(&self) -> usize {
        let (lock, _) = &*self.console;
        lock.lock().map(|c| c.bytes.len()).unwrap_or(0)
    }

    pub fn console_since(&self, mark: usize) -> String {
        let (lock, _) = &*self.console;
        let bytes = lock.lock().map(|c| c.bytes.get(mark..).unwrap_or_default().to_vec()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Waits until the console (after `mark`) contains `needle`; returns the
    /// line that holds it.
    pub fn wait_console_from(&self, mark: usize, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let (lock, condvar) = &*self.console;
        let mut console = lock.lock().map_err(|_| anyhow::anyhow!("console lock poisoned"))?;
        loop {
            let text = String::from_utf8_lossy(console.bytes.get(mark..).unwrap_or_default()).into_owned();
            if let Some(line) = text.lines().find(|line| line.contains(needle)) {
                return Ok(line.to_string());
            }
            let now = Instant::now();
            if console.closed || now >= deadline {
                bail!(
                    "`{needle}` did not appear on the {} console within {:?}{}; last lines:\n{}",
                    self.label,
                    timeout,
                    if console.closed { " (the hypervisor exited)" } else { "" },
                    tail(&text, 15)
                );
            }
            console = condvar
                .wait_timeout(console, (deadline - now).min(Duration::from_millis(200)))
                .map_err(|_| anyhow::anyhow!("console lock poisoned"))?
                .0;
        }
    }

    pub fn wait_console(&self, needle: &str, timeout: Duration) -> Result<String> {
        self.wait_console_from(0, needle, timeout)
    }

    /// Types bytes on the guest's serial console (QEMU only).
    pub fn type_keys(&mut self, bytes: &[u8]) -> Result<()> {
        let stdin = self.stdin.as_mut().context("this guest's console takes no input")?;
        stdin.write_all(bytes)?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits for the hypervisor to exit and decodes the guest's code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Outcome> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let status = HostStatus::from_std(status);
                self.status = Some(status);
                let convention = match self.hypervisor {
                    Hypervisor::Uhyve => ExitConvention::Uhyve,
                    _ => ExitConvention::Qemu,
                };
                return Ok(exitcode::decode(convention, status, announced_code(&self.console())));
            }
            if Instant::now() >= deadline {
                bail!("the {} guest did not exit within {timeout:?}", self.label);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The hypervisor's process id (host CPU time per phase in benchmarks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if self.status.is_none() {
            if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: kill(2) on the process group we created for this child.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

fn collect(mut stream: Box<dyn Read + Send>, console: &(Mutex<Console>, Condvar)) {
    let (lock, condvar) = console;
    let mut buffer = [0u8; 8192];
    loop {
        let read = match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if let Ok(mut console) = lock.lock() {
            // Bounded: a runaway guest cannot exhaust the host.
            if console.bytes.len() < 64 << 20 {
                console.bytes.extend_from_slice(buffer.get(..read).unwrap_or_default());
            }
        }
        condvar.notify_all();
    }
    if let Ok(mut console) = lock.lock() {
        console.closed = true;
    }
    condvar.notify_all();
}

/// The code of the last `rtedge: shutdown code=N` line.
fn announced_code(console: &str) -> Option<u8> {
    console
        .lines()
        .filter_map(|line| line.split("rtedge: shutdown code=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .next_back()
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test scaffolding: a failure is a test failure")]
mod tests {
    use super::*;

    #[test]
    fn announced_code_is_the_last_shutdown_line() {
        assert_eq!(announced_code("x\nrtedge: shutdown code=3\nrtedge: shutdown code=7\n"), Some(7));
        assert_eq!(announced_code("[ 1us] rtedge: shutdown code=0"), Some(0));
        assert_eq!(announced_code("nothing"), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
