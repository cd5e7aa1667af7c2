//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Printed at the end of `rtctl --help`.
const AFTER_LONG_HELP: &str = "\
Connection:
  The token is taken from --token, else RTEDGE_TOKEN, else the file
  target/rtedge/dev.token in the nearest ancestor of the current directory
  (or of the rtctl executable) that has one: rtctl reads the token of a
  locally built image without being told. Without a token it connects
  without AUTH. The port defaults to RTEDGE_PORT, else 6380.

Exit codes:
  0  success
  1  the server replied with an error (or a bad reply, or a local failure
     such as an unwritable plot file)
  2  usage error
  3  cannot connect (connection refused, timeout, unreachable), or the
     connection broke
  4  authentication failed (WRONGPASS, NOAUTH)
  5  not found (no such thread, key, tasklet, soft IRQ or module)
  6  --fleet: at least one appliance failed (its row says why)

Fleet:
  --fleet FILE asks every appliance listed in FILE at once and prints one
  table, one row per appliance; a row that failed shows its error and the
  others are still shown. FILE has one appliance per line:
      NAME  HOST  PORT  [TOKEN]
  where TOKEN is file:PATH (relative to FILE), env:NAME, none (no AUTH),
  or left out (the token rtctl would use anyway). `#` starts a comment.
  --fleet virsh:URI (or virsh: for virsh's default connection) lists the
  running libvirt domains written by `rtedge-image domain` instead.
  Commands: status, threads, get, set, ping, modules, raw; --json gives
  one object per appliance (name, address, ok, result or error).";

/// Host client of the rtedge control plane (RESP over TCP).
#[derive(Debug, Parser)]
#[command(name = "rtctl", version, after_long_help = AFTER_LONG_HELP)]
pub struct Cli {
    /// Host of the control plane.
    #[arg(long, global = true, default_value = "127.0.0.1")]
    pub host: String,
    /// TCP port of the control plane [default: RTEDGE_PORT, else the only
    /// running instance's (`rtctl ps`), else 6380].
    #[arg(short = 'p', long, global = true)]
    pub port: Option<u16>,
    /// Talk to the registered instance NAME (its port and token; see `rtctl ps`).
    #[arg(long, global = true, value_name = "NAME", conflicts_with = "port")]
    pub instance: Option<String>,
    /// Authentication token (default: RTEDGE_TOKEN, then target/rtedge/dev.token).
    #[arg(long, global = true, env = "RTEDGE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Ask every appliance listed in FILE (lines `NAME HOST PORT [TOKEN]`)
    /// and print one table, one row per appliance.
    #[arg(long, global = true, value_name = "FILE", conflicts_with_all = ["host", "port"])]
    pub fleet: Option<PathBuf>,
    /// Connect, read and write timeout in milliseconds.
    #[arg(long, global = true, default_value_t = 5000, value_name = "N")]
    pub timeout_ms: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Uptime, version, boot path, CPUs, heap, threads and clients (INFO).
    Status,
    /// Every thread with its state, run time and release latency (THREADS).
    Threads,
    /// Interrupt counts per CPU (IRQS).
    Irqs,
    /// Every soft-interrupt vector: handler, owner and counts per CPU (SOFTIRQS).
    Softirqs,
    /// The named tasklets: state, schedules, runs, owner (TASKLETS).
    Tasklets,
    /// The named timers: armed, expiry, period, fired, owner (TIMERS).
    Timers,
    /// The workqueues and the named work items (WORKQUEUES, WORKQUEUES ITEMS).
    Workqueues,
    /// Read shared statics (GET, or MGET for several).
    Get {
        /// Key names.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Write a shared static (SET).
    Set {
        /// Key name.
        key: String,
        /// New value.
        value: String,
    },
    /// List shared statics matching a glob (KEYS).
    Keys {
        /// Glob pattern.
        #[arg(default_value = "*")]
        pattern: String,
    },
    /// Wake a suspended or sleeping thread (WAKE).
    Wake {
        /// Thread name or numeric id.
        thread: String,
    },
    /// Send a signal to a thread, or to its buddy if it has one (KILL).
    Kill {
        /// Thread name or numeric id.
        thread: String,
        /// Signal to deliver.
        #[arg(long, value_enum, ignore_case = true, default_value_t = Signal::Term)]
        signal: Signal,
    },
    /// Act on a tasklet (TASKLET).
    Tasklet {
        /// What to do.
        #[arg(value_enum)]
        action: TaskletAction,
        /// Tasklet name.
        name: String,
    },
    /// Raise a soft IRQ (SOFTIRQ RAISE).
    Softirq {
        /// What to do.
        #[command(subcommand)]
        action: SoftirqAction,
    },
    /// Modify or delete a kernel timer (TIMER).
    Timer {
        /// What to do.
        #[command(subcommand)]
        action: TimerAction,
    },
    /// Queue, cancel or flush work items (WORK).
    Work {
        /// What to do.
        #[command(subcommand)]
        action: WorkAction,
    },
    /// Latency histograms: list the sources, or show each named one as a
    /// cyclictest-style line (min, avg, p50, p90, p99, p99.9, max in µs,
    /// misses of an RT thread), with the text histogram for a single source
    /// (LATENCY).
    Latency {
        /// Sources to show (e.g. softirq.latency thread:softirq-rt); without
        /// any the sources are listed.
        sources: Vec<String>,
        /// Reset the histograms after reading them.
        #[arg(long, requires = "sources")]
        reset: bool,
        /// Also write a PNG chart of the buckets to FILE (log scales, p99
        /// and max marked, the sources overlaid).
        #[arg(long, value_name = "FILE", requires = "sources")]
        plot: Option<PathBuf>,
    },
    /// The Prometheus text of GET /metrics (METRICS), optionally only the
    /// families whose name starts with PREFIX.
    Metrics {
        /// Metric name prefix, e.g. rtedge_thread.
        prefix: Option<String>,
    },
    /// Print pub/sub messages as they arrive (SUBSCRIBE, or PSUBSCRIBE for
    /// a pattern with * ? or [).
    Watch {
        /// Channel or pattern, e.g. latency.rt0 or 'latency.*'.
        channel: String,
        /// Stop after N messages.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// The appliance's recent log lines (LOGS); with -f, follow the `log`
    /// channel until Ctrl-C.
    Logs {
        /// How many recent lines (1..512).
        #[arg(short = 'n', long = "lines", default_value_t = 50, value_name = "N")]
        count: u32,
        /// Keep following: print new lines as they are logged.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only lines at this level or more severe.
        #[arg(long, value_enum, ignore_case = true, value_name = "L")]
        level: Option<LogLevel>,
    },
    /// Live view of threads, CPU use, soft IRQ rates and RT latency. On a
    /// terminal, full screen: keys c m l n sort (by CPU, misses, latency,
    /// name; again reverses), arrows, PgUp/PgDn, Home/End scroll, space
    /// pauses, v switches threads / deferred work, h or ? shows the keys, q or Ctrl-C quits.
    Top {
        /// Refresh interval in milliseconds.
        #[arg(long, default_value_t = 1000, value_name = "N")]
        interval_ms: u64,
        /// Print a single frame and exit.
        #[arg(long)]
        once: bool,
        /// The threads' order.
        #[arg(long, value_enum, default_value_t = crate::top::SortKey::Cpu)]
        sort: crate::top::SortKey,
        /// Print the full-screen layout at this size as text (e.g. 80x24),
        /// with no terminal needed; with --once, one frame.
        #[arg(long, value_name = "COLUMNSxROWS")]
        size: Option<crate::top::Size>,
        /// The lower section shown first: the thread list, or deferred
        /// work (tasklets, timers, work queues, soft IRQs); key v switches.
        #[arg(long = "view", value_enum, default_value_t = crate::top::Section::Threads)]
        view: crate::top::Section,
    },
    /// Application modules and their state (MODULE LIST).
    Modules,
    /// Load or unload an application module (MODULE LOAD|UNLOAD).
    Module {
        /// What to do.
        #[command(subcommand)]
        action: ModuleAction,
    },
    /// Send any command and print the reply as redis-cli does.
    Raw {
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Round-trip time of a PING, in microseconds.
    Ping,
    /// The running instances (started by `make start` / `make run`).
    Ps,
    /// Stop instances: SHUTDOWN over the control plane, then SIGTERM and
    /// SIGKILL if the guest has not ended within --timeout-s.
    Stop {
        /// Instance names (see `rtctl ps`).
        names: Vec<String>,
        /// Stop every running instance.
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// Seconds to wait for an orderly shutdown before killing.
        #[arg(long, default_value_t = DEFAULT_STOP_TIMEOUT_S, value_name = "N")]
        timeout_s: u64,
    },
    /// Print a detached instance's console log and follow it.
    Console {
        /// Instance name (see `rtctl ps`); default: the only running one.
        name: Option<String>,
        /// Print what is there and exit.
        #[arg(long)]
        no_follow: bool,
    },
    /// Print the host port of an instance (the only running one, or NAME):
    /// `redis-cli -p $(rtctl port)`.
    Port {
        /// Instance name (see `rtctl ps`).
        name: Option<String>,
    },
    /// Print a shell completion script (e.g. `rtctl completions bash > /etc/bash_completion.d/rtctl`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; `rtctl man | man -l -`).
    Man,
}

/// `KILL` signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Signal {
    /// Ask the thread to terminate.
    Term,
    /// Wake the thread.
    Wake,
}

/// Log levels, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// `TASKLET` actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TaskletAction {
    /// Schedule on the TASKLET soft IRQ.
    Schedule,
    /// Schedule on the HI soft IRQ.
    Hi,
    /// Disable (counted).
    Disable,
    /// Enable (counted).
    Enable,
    /// Kill: wait until it is not scheduled and forbid rescheduling.
    Kill,
}

/// `SOFTIRQ` actions.
#[derive(Debug, Subcommand)]
pub enum SoftirqAction {
    /// Raise a soft IRQ by name.
    Raise {
        /// Soft IRQ name (HI, TIMER, ... or a dynamic one).
        name: String,
    },
}

/// `TIMER` actions.
#[derive(Debug, Subcommand)]
pub enum TimerAction {
    /// Set a timer to fire in MS milliseconds.
    Mod {
        /// Timer name.
        name: String,
        /// Milliseconds from now.
        ms: u64,
    },
    /// Delete a pending timer.
    Del {
        /// Timer name.
        name: String,
    },
}

/// `WORK` actions.
#[derive(Debug, Subcommand)]
pub enum WorkAction {
    /// Queue a work item, optionally delayed.
    Queue {
        /// Work queue name.
        queue: String,
        /// Work item name.
        item: String,
        /// Delay in milliseconds.
        delay_ms: Option<u64>,
    },
    /// Cancel a pending work item.
    Cancel {
        /// Work queue name.
        queue: String,
        /// Work item name.
        item: String,
    },
    /// Wait until every item queued so far has run.
    Flush {
        /// Work queue name.
        queue: String,
    },
}

/// `MODULE` actions.
#[derive(Debug, Subcommand)]
pub enum ModuleAction {
    /// Load a module.
    Load {
        /// Module name.
        name: String,
    },
    /// Unload a module.
    Unload {
        /// Module name.
        name: String,
    },
}

/// The port when `--port` is not given.
pub const DEFAULT_PORT: u16 = 6380;

/// How long `rtctl stop` waits for the guest to shut down before killing it.
pub const DEFAULT_STOP_TIMEOUT_S: u64 = 30;

impl TaskletAction {
    /// The word on the wire.
    pub fn wire(self) -> &'static str {
        match self {
            TaskletAction::Schedule => "SCHEDULE",
            TaskletAction::Hi => "HI",
            TaskletAction::Disable => "DISABLE",
            TaskletAction::Enable => "ENABLE",
            TaskletAction::Kill => "KILL",
        }
    }
}

impl Signal {
    /// The word on the wire.
    pub fn wire(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Wake => "WAKE",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
