//! `LOGS`, the RESP side of the kernel's log history: the reply built from
//! the lines `rtedge_kernel::logs` keeps. The kernel's module is
//! re-exported here whole, so `crate::logs` names both.

use alloc::string::String;
use core::fmt::Write;

use rtedge_engine::loghistory;
pub use rtedge_kernel::logs::*;
use rtedge_proto::{Reply, Request};

fn entry_reply(entry: &Entry) -> Reply {
    let unix_ms = unix_ms(entry).map_or(Reply::Null, |ms| Reply::Integer(i64::try_from(ms).unwrap_or(i64::MAX)));
    let pairs = [
        ("seq", Reply::Integer(i64::try_from(entry.sequence).unwrap_or(i64::MAX))),
        ("mono_ns", Reply::Integer(i64::try_from(entry.monotonic_ns).unwrap_or(i64::MAX))),
        ("unix_ms", unix_ms),
        ("level", Reply::bulk_str(loghistory::level_name(entry.level))),
        ("cpu", Reply::Integer(i64::from(entry.cpu))),
        ("thread", Reply::bulk_str(entry.thread())),
        ("text", Reply::bulk_str(entry.text())),
    ];
    Reply::Map(pairs.into_iter().map(|(key, value)| (Reply::bulk_str(key), value)).collect())
}

/// `LOGS [n] [LEVEL level] [SINCE seq]`: the last `n` lines (100 by
/// default) numbered above `seq` at `level` or more severe, oldest first,
/// as maps {seq, mono_ns, unix_ms, level, cpu, thread, text}.
pub fn command(request: &Request) -> Reply {
    match parse_query(request.args_after_name()) {
        Ok(query) => Reply::Array(read_last(query.count, query.most_verbose, query.after).iter().map(entry_reply).collect()),
        Err(message) => Reply::Error(alloc::format!("ERR {message}")),
    }
}

/// The `INFO logs` lines.
pub fn write_info(out: &mut String) -> core::fmt::Result {
    let stats = rtedge_kernel::logs::stats();
    let rings = rtedge_kernel::console::ring_stats();
    out.push_str("# Logs\r\n");
    write!(out, "log_history_capacity:{}\r\nlog_lines_kept:{}\r\nlog_lines_held:{}\r\n", HISTORY_LINES, stats.kept, stats.held)?;
    write!(out, "log_first_seq:{}\r\nlog_history_dropped:{}\r\n", stats.first_sequence, stats.dropped)?;
    write!(out, "log_channel_published:{}\r\nlog_channel_lost:{}\r\n", stats.channel_published, stats.channel_lost)?;
    write!(out, "log_ring_deferred:{}\r\nlog_ring_lost:{}\r\n", rings.deferred, rings.lost)?;
    Ok(())
}
