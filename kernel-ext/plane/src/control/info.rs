//! `INFO [section]`: Redis-style text (`# Section` headers, `key:value`
//! lines) for server, memory, cpu, threads, softirqs, interrupts, net and
//! rtpool. Field names follow what `rtctl status` and `top` read. The
//! threads section also counts the deferred work that outlives a call
//! (registered timers and tasklets), so that a test can check that module
//! unloads return them to a baseline.

use alloc::string::String;
use core::fmt::Write;

use rtedge_proto::Reply;

use crate::net;
use rtedge_kernel::{cpu_local, memory, rtpool, smp, softirq, tasklet, thread, time, timer, trap};

const SECTIONS: [&str; 9] = ["server", "memory", "cpu", "threads", "softirqs", "interrupts", "net", "rtpool", "logs"];

/// The INFO reply for `section` (`all`/`everything`/`default` for every one).
pub fn info(section: &str) -> Reply {
    let section = section.to_ascii_lowercase();
    let mut out = String::new();
    let all = matches!(section.as_str(), "all" | "everything" | "default");
    if !all && !SECTIONS.contains(&section.as_str()) {
        return Reply::Error(alloc::format!("ERR unknown INFO section '{section}' (sections: all, {})", SECTIONS.join(", ")));
    }
    for name in SECTIONS {
        if all || name == section {
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            write_section(name, &mut out);
        }
    }
    Reply::Verbatim { format: *b"txt", text: out }
}

fn write_section(name: &str, out: &mut String) {
    let _ = match name {
        "server" => server(out),
        "memory" => memory_section(out),
        "cpu" => cpu(out),
        "threads" => threads(out),
        "softirqs" => softirqs(out),
        "interrupts" => interrupts(out),
        "net" => {
            out.push_str("# Net\r\n");
            net::write_info(out);
            Ok(())
        }
        "rtpool" => rtpool_section(out),
        "logs" => crate::logs::write_info(out),
        _ => Ok(()),
    };
}

fn server(out: &mut String) -> core::fmt::Result {
    let info = rtedge_kernel::boot::info();
    let uptime = time::now_ns();
    out.push_str("# Server\r\n");
    write!(out, "rtedge_version:{}\r\n", env!("CARGO_PKG_VERSION"))?;
    write!(out, "boot_path:{}\r\n", info.path.name())?;
    let hypervisor = match info.path {
        rtedge_arch::boot::BootPath::Hermit => "uhyve",
        rtedge_arch::boot::BootPath::Pvh => "qemu",
        rtedge_arch::boot::BootPath::Multiboot2 => "firmware",
    };
    write!(out, "hypervisor:{hypervisor}\r\n")?;
    write!(out, "uptime_ns:{uptime}\r\nuptime_in_seconds:{}\r\n", uptime / 1_000_000_000)?;
    write!(out, "tsc_hz:{}\r\n", time::tsc_hz())?;
    if let Some(source) = time::tsc_source() {
        write!(out, "tsc_source:{}\r\n", source.name())?;
    }
    if let Some(realtime) = time::realtime_ns() {
        write!(out, "realtime_unix_ns:{realtime}\r\n")?;
    }
    write!(out, "jiffies:{}\r\nhz:{}\r\n", time::jiffies(), time::HZ)?;
    write!(out, "cpus:{}\r\n", thread::online_mask().count_ones())?;
    // Secrets (the control-plane token) are never shown, only that one is set.
    write!(out, "command_line:{}\r\n", rtedge_proto::util::redact_command_line(info.command_line()))?;
    let token_source = if crate::net::device::auth_token(info.command_line()).is_empty() { "none" } else { "kernel command line (auth=)" };
    write!(out, "auth_token:{token_source}\r\n")?;
    Ok(())
}

fn memory_section(out: &mut String) -> core::fmt::Result {
    let heap = memory::heap::statistics();
    let report = memory::report();
    out.push_str("# Memory\r\n");
    write!(out, "usable_bytes:{}\r\n", report.usable_bytes)?;
    write!(out, "heap_total:{}\r\nheap_used:{}\r\nheap_free:{}\r\n", heap.claimed_bytes, heap.allocated_bytes, heap.available_bytes)?;
    write!(out, "heap_allocations:{}\r\nheap_allocations_total:{}\r\n", heap.allocation_count, heap.total_allocations)?;
    write!(out, "heap_failed_allocations:{}\r\nheap_rt_violations:{}\r\n", heap.failed_allocations, heap.realtime_violations)?;
    write!(out, "page_table_frames:{}\r\n", report.page_table_frames)?;
    let (live, slots) = memory::stacks::counts();
    write!(out, "stacks_live:{live}\r\nstack_slots:{slots}\r\n")?;
    match report.reserved_region {
        Some((start, end)) => write!(out, "reserved_region_base:{start:#x}\r\nreserved_region_size:{}\r\n", end - start)?,
        None => out.push_str("reserved_region_base:none\r\nreserved_region_size:0\r\n"),
    }
    Ok(())
}

fn cpu(out: &mut String) -> core::fmt::Result {
    out.push_str("# CPU\r\n");
    let online = thread::online_mask();
    let isolated = thread::isolated_mask();
    write!(out, "cpus:{}\r\nonline:{}\r\n", online.count_ones(), thread::format_cpu_mask(online, u64::MAX))?;
    write!(out, "isolated:{}\r\n", if isolated == 0 { String::from("none") } else { thread::format_cpu_mask(isolated, u64::MAX) })?;
    let report = smp::last_report();
    write!(out, "cpus_offered:{}\r\ncpus_failed:{}\r\n", report.offered, report.failed)?;
    write!(out, "context_switches:{}\r\n", thread::cpu_switches())?;
    // Interrupts-off sections of IrqSpinLocks since the last RT thread
    // LATENCY RESET (the measuring window of an RT phase).
    let irqs_off = rtedge_kernel::sync::irqs_off_report();
    let place = |site: Option<&core::panic::Location<'static>>| {
        site.map_or(String::from("none"), |site| alloc::format!("{}:{}", site.file(), site.line()))
    };
    write!(out, "irqs_off_timing:{}\r\n", if rtedge_kernel::sync::irqs_off_timing() { "on" } else { "off (boot with irqsoff=1)" })?;
    write!(
        out,
        "irqs_off_max_ns:{}\r\nirqs_off_max_site:{}\r\nirqs_off_long:{}\r\nlock_spin_max_ns:{}\r\nlock_spin_max_site:{}\r\n",
        irqs_off.longest_ns,
        place(irqs_off.longest_site),
        irqs_off.long_sections,
        irqs_off.longest_spin_ns,
        place(irqs_off.longest_spin_site)
    )?;
    write!(out, "stack_scan_max_ns:{}\r\n", thread::stack_scan_max_ns())?;
    write!(out, "remote_alarm_changes:{}\r\n", rtedge_kernel::clockevent::remote_changes())?;
    // `rt_idle=poll`: the isolated CPUs poll the clock when idle; a stall
    // is time one went without looking (same window as irqs_off_*).
    let polling = thread::polling_mask();
    let (stall_max_ns, stalls_long) = thread::poll_stalls();
    write!(
        out,
        "idle_polling:{}\r\npoll_stall_max_ns:{stall_max_ns}\r\npoll_stalls_over_{}us:{stalls_long}\r\n",
        if polling == 0 { String::from("none") } else { thread::format_cpu_mask(polling, u64::MAX) },
        thread::POLL_STALL_LONG_NS / 1000
    )?;
    for index in 0..cpu_local::MAX_CPUS {
        if let Some(local) = cpu_local::get(index) {
            let running = match thread::running_class_on(index as u32) {
                Some(thread::RunningClass::Realtime) => "rt",
                Some(thread::RunningClass::Fair) => "kernel",
                _ => "idle",
            };
            write!(
                out,
                "cpu{index}:apic_id={},switches={},running={running},queued={}\r\n",
                local.apic_id(),
                thread::cpu_switches_on(index as u32),
                thread::queued_on(index as u32)
            )?;
        }
    }
    Ok(())
}

fn threads(out: &mut String) -> core::fmt::Result {
    let list = thread::list();
    let realtime = list.iter().filter(|info| matches!(info.kind, thread::Kind::Realtime { .. })).count();
    let live = list.iter().filter(|info| info.state != thread::State::Exited).count();
    out.push_str("# Threads\r\n");
    write!(out, "threads:{live}\r\nrealtime_threads:{realtime}\r\nexited_unjoined:{}\r\n", list.len() - live)?;
    let misses: u64 = list.iter().map(|info| info.misses).sum();
    write!(out, "deadline_misses:{misses}\r\n")?;
    let (slots, slot_bytes) = thread::slot_count();
    write!(out, "thread_slots:{slots}\r\nthread_slot_bytes:{slot_bytes}\r\n")?;
    let (timers, hrtimers) = timer::registered_counts();
    let (timers_pending, hrtimers_pending) = timer::pending_counts();
    write!(out, "timers:{timers}\r\nhrtimers:{hrtimers}\r\ntimers_pending:{timers_pending}\r\nhrtimers_pending:{hrtimers_pending}\r\n")?;
    write!(out, "tasklets:{}\r\n", tasklet::list().len())?;
    Ok(())
}

fn softirqs(out: &mut String) -> core::fmt::Result {
    out.push_str("# Softirqs\r\n");
    for line in softirq::counts() {
        let total: u64 = line.per_cpu.iter().sum();
        write!(out, "{}:{total}\r\n", line.name.replace(' ', "_"))?;
    }
    write!(out, "ksoftirqd_handovers:{}\r\n", softirq::handovers())?;
    Ok(())
}

fn interrupts(out: &mut String) -> core::fmt::Result {
    out.push_str("# Interrupts\r\n");
    for line in trap::interrupt_lines() {
        write!(out, "vector_{:#04x}_{}:{}\r\n", line.vector, line.name, line.total)?;
    }
    Ok(())
}

fn rtpool_section(out: &mut String) -> core::fmt::Result {
    let stats = rtpool::stats();
    out.push_str("# Rtpool\r\n");
    write!(out, "capacity:{}\r\nmax_size:{}\r\nin_use:{}\r\nbytes:{}\r\n", stats.capacity, stats.max_size, stats.in_use, stats.bytes)?;
    write!(out, "requests:{}\r\nfailures:{}\r\nfreed:{}\r\n", stats.requests, stats.failures, stats.freed)?;
    Ok(())
}
