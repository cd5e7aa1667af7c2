//! In-image self-checks that need no network, for the test runner:
//! `selftest_modules=N` on the command line runs them instead of the
//! appliance and shuts down with 0 (all passed) or 1.
//!
//! 1. The file API: cpio newc and ustar archives built here are parsed
//!    (kinds, contents, long names, links), and the error texts checked.
//! 2. The raw region (when `reserve=` gave one): typed views, alignment,
//!    bounds, overlap refusal, exclusive claims.
//! 3. Every module is loaded and unloaded N times, with a little traffic
//!    in between (a `SET shm.value`, a job in a thread and one on the
//!    workqueue). Live threads, registered timers, soft IRQ names, live
//!    stacks, IRQ lines, commands, shared statics and latency sources must
//!    be back at their values from before the first cycle; heap bytes and
//!    the tasklet list at their values after the first cycle (which warms
//!    caches: registries' capacity, the file index, the stack cache; two
//!    per-CPU caches are warmed before it, see `warm_per_cpu_caches`).
//!
//! Extra keys: `selftest_dwell_ms=M` (time each cycle runs the modules,
//! default 30), `selftest_heap_slack=B` (bytes of heap growth tolerated,
//! default 0). `tasklet_disable_at=1` makes every cycle exercise the
//! disable / cleanup-handler / pending-run path, which is then checked.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};

use rtedge_kernel::files::{self, ArchiveFormat, FileError, FileKind};
use rtedge_kernel::memory::raw::{RawError, RawRegion};
use rtedge_kernel::memory::{heap, stacks};
use rtedge_kernel::{console_line, irq, latency, modules, shared, softirq, tasklet, thread, timer};
use rtedge_plane::commands;

use crate::programs::{self, buddy, job, kmore, shm, tasklet_disable};

/// Failures collected by the checks.
struct Checks {
    failures: Vec<String>,
    passed: usize,
}

impl Checks {
    fn check(&mut self, what: &str, ok: bool) {
        if ok {
            self.passed += 1;
        } else {
            console_line!("selftest: FAILED: {what}");
            self.failures.push(String::from(what));
        }
    }
}

fn hex8(out: &mut Vec<u8>, value: usize) {
    out.extend_from_slice(format!("{value:08x}").as_bytes());
}

/// One cpio newc member.
fn cpio_member(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
    out.extend_from_slice(b"070701");
    // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
    // rdevmajor, rdevminor, namesize, check
    for value in [1, mode as usize, 0, 0, 1, 0, data.len(), 0, 0, 0, 0, name.len() + 1, 0] {
        hex8(out, value);
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn sample_cpio() -> Vec<u8> {
    let mut out = Vec::new();
    cpio_member(&mut out, ".", 0o040_755, b"");
    cpio_member(&mut out, "etc", 0o040_755, b"");
    cpio_member(&mut out, "etc/rtedge.conf", 0o100_644, b"modules=none\n");
    cpio_member(&mut out, "hello.txt", 0o100_644, b"hello from cpio\n");
    cpio_member(&mut out, "link", 0o120_777, b"hello.txt");
    cpio_member(&mut out, "TRAILER!!!", 0, b"");
    out
}

/// One ustar header block (and the data blocks after it).
fn tar_member(out: &mut Vec<u8>, name: &str, prefix: &str, type_flag: u8, link: &str, data: &[u8]) {
    let mut block = [0u8; 512];
    block[..name.len()].copy_from_slice(name.as_bytes());
    block[100..108].copy_from_slice(b"0000644\0");
    block[108..116].copy_from_slice(b"0000000\0");
    block[116..124].copy_from_slice(b"0000000\0");
    block[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    block[136..148].copy_from_slice(b"00000000000\0");
    block[156] = type_flag;
    block[157..157 + link.len()].copy_from_slice(link.as_bytes());
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    block[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&block);
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
}

fn sample_tar(long_name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    tar_member(&mut out, "./data/", "", b'5', "", b"");
    tar_member(&mut out, "notes.txt", "data/deep", b'0', "", b"in a prefixed directory\n");
    tar_member(&mut out, "././@LongLink", "", b'L', "", long_name.as_bytes());
    tar_member(&mut out, "cut", "", b'0', "", b"long name\n");
    tar_member(&mut out, "data/alias", "", b'2', "deep/notes.txt", b"");
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn check_files(checks: &mut Checks) {
    let cpio = sample_cpio();
    match files::parse_archive(&cpio) {
        Ok((format, entries)) => {
            checks.check("cpio: format detected", format == ArchiveFormat::CpioNewc);
            let names: Vec<&str> = entries.iter().map(|entry| entry.path.as_str()).collect();
            checks.check("cpio: members in order, '.' dropped", names == ["etc", "etc/rtedge.conf", "hello.txt", "link"]);
            checks.check("cpio: directory kind", entries.first().is_some_and(|entry| entry.kind == FileKind::Directory));
            checks.check("cpio: file contents", entries.get(2).is_some_and(|entry| entry.data == b"hello from cpio\n"));
            checks.check(
                "cpio: symlink target",
                entries.get(3).is_some_and(|entry| entry.kind == FileKind::Symlink && entry.link.as_deref() == Some("hello.txt")),
            );
        }
        Err(error) => checks.check(&format!("cpio: parse ({error})"), false),
    }
    let truncated = &cpio[..cpio.len() - 40];
    checks.check("cpio: truncated archive refused", files::parse_archive(truncated).is_err());

    let long_name = "data/a-directory-name-long-enough-to-need-the-gnu-extension/and-a-file-name-that-is-long-as-well.txt";
    let tar = sample_tar(long_name);
    match files::parse_archive(&tar) {
        Ok((format, entries)) => {
            checks.check("tar: format detected", format == ArchiveFormat::Ustar);
            let names: Vec<&str> = entries.iter().map(|entry| entry.path.as_str()).collect();
            checks.check("tar: prefix and GNU long names", names == ["data", "data/deep/notes.txt", long_name, "data/alias"]);
            checks.check("tar: file contents", entries.get(1).is_some_and(|entry| entry.data == b"in a prefixed directory\n"));
            checks.check("tar: symlink", entries.get(3).is_some_and(|entry| entry.kind == FileKind::Symlink));
        }
        Err(error) => checks.check(&format!("tar: parse ({error})"), false),
    }
    let mut corrupt = tar.clone();
    corrupt[10] ^= 0x55;
    checks.check("tar: bad checksum refused", files::parse_archive(&corrupt).is_err());
    checks.check("unknown archive refused", files::parse_archive(b"not an archive at all").is_err());

    checks.check("normalize", files::normalize("/a/./b//c/../d/") == "a/b/d" && files::normalize("../..").is_empty());
    let missing = files::open("/no/such/file.txt").map(|_| ());
    checks.check("missing file: NotFound", matches!(&missing, Err(FileError::NotFound(path)) if path == "/no/such/file.txt"));
    checks.check("missing file: message", missing.err().is_some_and(|error| format!("{error}") == "no such file: /no/such/file.txt"));
    let root = files::open("/").map(|_| ());
    checks.check("root: IsADirectory", root.err().is_some_and(|error| format!("{error}") == "is a directory: /"));
    checks.check("list /", files::list("/").is_ok());
    checks.check("kmore of a directory is an error", kmore::kmore("/").is_err());
    for archive in files::boot_archives() {
        console_line!(
            "selftest: boot module {} ({} bytes): {}",
            archive.module,
            archive.size,
            match archive.format {
                Ok(format) => format!("{}, {} entries", format.name(), archive.entries),
                Err(error) => format!("not used: {error}"),
            }
        );
    }
}

fn check_raw(checks: &mut Checks) {
    let Some(region) = RawRegion::get() else {
        console_line!("selftest: no raw region reserved (add reserve=2M): raw checks skipped");
        return;
    };
    console_line!("selftest: raw region {:#x}, {} KiB", region.base(), region.size() / 1024);
    let base = 64 * 1024;
    let first = region.typed::<AtomicU64>(base);
    let again = region.typed::<AtomicU64>(base);
    checks.check("raw: typed view", first.is_ok());
    checks.check("raw: same view again", matches!((first, again), (Ok(a), Ok(b)) if core::ptr::eq(a, b)));
    if let Ok(counter) = first {
        counter.store(0x1234_5678_9abc_def0, Ordering::Release);
        checks.check("raw: read back", counter.load(Ordering::Acquire) == 0x1234_5678_9abc_def0);
    }
    checks.check("raw: other type over it refused", matches!(region.typed::<AtomicU32>(base + 4), Err(RawError::Overlap { .. })));
    checks.check("raw: misaligned refused", matches!(region.typed::<AtomicI64>(base + 12), Err(RawError::Misaligned { .. })));
    checks.check("raw: out of bounds refused", matches!(region.typed::<AtomicU64>(region.size() - 4), Err(RawError::OutOfBounds { .. })));
    checks.check("raw: array view", region.typed::<[AtomicU32; 16]>(base + 64).is_ok());
    match region.exclusive(base + 4096, 4096) {
        Ok(mut bytes) => {
            bytes.as_mut_slice().fill(0x5a);
            checks.check("raw: exclusive bytes", bytes.as_slice().iter().all(|&b| b == 0x5a));
            checks.check("raw: overlapping exclusive refused", region.exclusive(base + 4096 + 100, 8).is_err());
            checks.check("raw: typed over exclusive refused", region.typed::<AtomicU64>(base + 4096).is_err());
            drop(bytes);
            checks.check("raw: claim released on drop", region.exclusive(base + 4096, 4096).is_ok());
        }
        Err(error) => checks.check(&format!("raw: exclusive claim ({error})"), false),
    }
}

fn check_config(checks: &mut Checks) {
    let (settings, errors) = crate::config::parse("# comment\nmodules = tasklet,shm\n\nfile=\"/hello.txt\"\nbogus=1\nnot a setting\n");
    checks.check(
        "config: settings",
        settings == [(String::from("modules"), String::from("tasklet,shm")), (String::from("file"), String::from("/hello.txt"))],
    );
    checks.check("config: bad lines reported", errors.len() == 2);
}

/// What is compared before and after the cycles. It holds no heap memory
/// of its own (names are kept as a count and a hash), so keeping one alive
/// does not change the heap figures of the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Snapshot {
    live_threads: usize,
    timers: (usize, usize),
    soft_irqs: Names,
    live_stacks: u64,
    irq_lines: usize,
    commands: usize,
    statics: usize,
    latency_sources: Names,
    tasklets: Names,
    heap_bytes: usize,
    heap_allocations: usize,
}

/// A list of names as its length and an FNV-1a hash of the names in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Names {
    count: usize,
    hash: u64,
}

impl Names {
    fn of<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Names {
        let mut count = 0;
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for name in names {
            count += 1;
            for byte in name.as_ref().bytes().chain(core::iter::once(0)) {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        Names { count, hash }
    }
}

impl Snapshot {
    fn take() -> Snapshot {
        // The heap first: the lists below are temporaries freed on return.
        let statistics = heap::statistics();
        Snapshot {
            live_threads: thread::live_count(),
            timers: timer::registered_counts(),
            soft_irqs: Names::of(softirq::counts().into_iter().map(|line| line.name)),
            live_stacks: stacks::counts().0,
            irq_lines: irq::lines().len(),
            commands: commands::count(),
            statics: shared::count(),
            latency_sources: Names::of(latency::names()),
            tasklets: Names::of(tasklet::list().into_iter().map(|(name, ..)| name)),
            heap_bytes: statistics.allocated_bytes,
            heap_allocations: statistics.allocation_count,
        }
    }
}

fn no_op(_: usize) {}

/// Threads per CPU the warm-up keeps alive at once: more than the slots
/// the kernel and every module use together.
const WARM_THREADS: usize = 32;
static WARM_RELEASE: AtomicBool = AtomicBool::new(false);

/// Warms two per-CPU kernel caches that one cycle does not reliably warm,
/// because they depend on which CPU threads land on:
/// - the timer base of each CPU allocates its tables on first use, and a
///   module's timer registers on whichever CPU its loader runs;
/// - each thread slot keeps an alarm on the CPU it last started on; a
///   reused slot that starts on another CPU moves its alarm there, and that
///   CPU's alarm table grows the first time it holds that many.
///
/// So, CPU by CPU, [`WARM_THREADS`] threads pinned there run at once (each
/// arms and drops a jiffies timer), then all are joined. Unwarmed, either
/// shows up in some later cycle as a few hundred bytes that look like a leak.
fn warm_per_cpu_caches() {
    let online = thread::online_mask();
    for cpu in (0..64u32).filter(|cpu| online & (1 << cpu) != 0) {
        WARM_RELEASE.store(false, Ordering::Release);
        let mut started = Vec::new();
        for _ in 0..WARM_THREADS {
            let spawned = thread::Builder::new("selftest-warm").cpu(cpu).stack_size(16 * 1024).spawn(|| {
                let timer = alloc::boxed::Box::pin(timer::Timer::new("selftest-warm", no_op, 0));
                let _ = timer.as_ref().modify_in_pinned(1000);
                drop(timer);
                while !WARM_RELEASE.load(Ordering::Acquire) {
                    let _ = thread::sleep_ns(1_000_000);
                }
                0
            });
            if let Ok(id) = spawned {
                started.push(id);
            }
        }
        WARM_RELEASE.store(true, Ordering::Release);
        for id in started {
            let _ = thread::join(id, Some(programs::THREAD_EXIT_TIMEOUT_NS));
        }
    }
}

/// Lets the system settle (threads reaped, deferred frees done) before a snapshot.
fn settle() {
    let _ = thread::sleep_ns(20_000_000);
}

fn exercise(checks: &mut Checks, cycle: u64) {
    checks.check("SET shm.value", shm::set_value(b"42"));
    let started = job::start_job(1000 + cycle);
    checks.check("JOB.START", started.is_ok());
    checks.check("JOB.QUEUE", job::queue_job(1000 + cycle).is_ok());
}

fn cycle_modules(checks: &mut Checks, cycles: u64, dwell_ms: u64, heap_slack: usize) {
    let names: Vec<&'static str> = modules::list().into_iter().map(|info| info.name).collect();
    warm_per_cpu_caches();
    settle();
    let before = Snapshot::take();
    let mut warm = before;
    let level = log::max_level();
    log::set_max_level(log::LevelFilter::Warn);
    let started = rtedge_kernel::time::now_ns();
    let mut pending_run_errors = 0u64;
    let mut disable_cycles = 0u64;
    let mut late_buddies = 0u64;
    for cycle in 1..=cycles {
        for name in &names {
            if let Err(error) = modules::load(name) {
                checks.check(&format!("cycle {cycle}: load {name}: {error}"), false);
            }
        }
        exercise(checks, cycle);
        let _ = thread::sleep_ns(dwell_ms * 1_000_000);
        for name in names.iter().rev() {
            if let Err(error) = modules::unload(name) {
                checks.check(&format!("cycle {cycle}: unload {name}: {error}"), false);
            }
        }
        if !buddy::last_exit_in_time() {
            late_buddies += 1;
        }
        match tasklet_disable::pending_runs_after_enable() {
            Some(1) => disable_cycles += 1,
            Some(_) => pending_run_errors += 1,
            None => {}
        }
        if cycle == 1 {
            settle();
            warm = Snapshot::take();
        }
        if cycle % (cycles / 10).max(1) == 0 {
            console_line!("selftest: cycle {cycle}/{cycles}: heap {} bytes", heap::statistics().allocated_bytes);
        }
    }
    settle();
    let after = Snapshot::take();
    log::set_max_level(level);
    let elapsed_ms = (rtedge_kernel::time::now_ns() - started) / 1_000_000;
    console_line!("selftest: {cycles} cycles of {} modules in {elapsed_ms} ms ({dwell_ms} ms each)", names.len());
    console_line!("selftest: live threads {} -> {}", before.live_threads, after.live_threads);
    console_line!("selftest: timers (jiffies, hr) {:?} -> {:?}", before.timers, after.timers);
    let soft_irq_names: Vec<String> = softirq::counts().into_iter().map(|line| line.name).collect();
    console_line!("selftest: soft IRQs {} -> {} ({})", before.soft_irqs.count, after.soft_irqs.count, soft_irq_names.join(", "));
    console_line!("selftest: live stacks {} -> {}", before.live_stacks, after.live_stacks);
    console_line!(
        "selftest: IRQ lines {} -> {}, commands {} -> {}, shared statics {} -> {}, latency sources {} -> {}",
        before.irq_lines,
        after.irq_lines,
        before.commands,
        after.commands,
        before.statics,
        after.statics,
        before.latency_sources.count,
        after.latency_sources.count
    );
    console_line!("selftest: registered tasklets {} after cycle 1 -> {}", warm.tasklets.count, after.tasklets.count);
    console_line!(
        "selftest: heap {} bytes in {} blocks before, {} bytes in {} blocks after cycle 1, {} bytes in {} blocks after cycle {cycles} (slack {heap_slack})",
        before.heap_bytes,
        before.heap_allocations,
        warm.heap_bytes,
        warm.heap_allocations,
        after.heap_bytes,
        after.heap_allocations
    );
    console_line!("selftest: pending tasklet run exactly once after re-enable in {disable_cycles} of {cycles} cycles");
    console_line!("selftest: buddy thread late at unload in {late_buddies} of {cycles} cycles");
    checks.check("live threads back to baseline", after.live_threads == before.live_threads);
    checks.check("timers back to baseline", after.timers == before.timers);
    checks.check("soft IRQs back to baseline", after.soft_irqs == before.soft_irqs);
    checks.check("stacks back to baseline", after.live_stacks == before.live_stacks);
    checks.check("IRQ lines back to baseline", after.irq_lines == before.irq_lines);
    checks.check("commands back to baseline", after.commands == before.commands);
    checks.check("shared statics back to baseline", after.statics == before.statics);
    checks.check("latency sources back to baseline", after.latency_sources == before.latency_sources);
    checks.check("tasklets back to the cycle-1 list", after.tasklets == warm.tasklets);
    checks.check("heap back to the cycle-1 figure", after.heap_bytes <= warm.heap_bytes + heap_slack);
    checks.check("pending tasklet run exactly once after every re-enable", pending_run_errors == 0);
    checks.check("buddy thread ended within its bound at every unload", late_buddies == 0);
}

/// Runs every check; returns the exit code (0 all passed, 1 otherwise).
pub fn run(cycles: u64) -> u8 {
    let dwell_ms = programs::setting_u64("selftest_dwell_ms", 30);
    let heap_slack = programs::setting_u64("selftest_heap_slack", 0) as usize;
    console_line!("selftest: files, raw region, config, then {cycles} load/unload cycles of every module");
    let mut checks = Checks { failures: Vec::new(), passed: 0 };
    check_files(&mut checks);
    check_raw(&mut checks);
    check_config(&mut checks);
    if cycles > 0 {
        cycle_modules(&mut checks, cycles, dwell_ms, heap_slack);
    }
    if checks.failures.is_empty() {
        console_line!("selftest: PASS ({} checks)", checks.passed);
        0
    } else {
        console_line!("selftest: FAIL ({} of {} checks failed)", checks.failures.len(), checks.failures.len() + checks.passed);
        1
    }
}
