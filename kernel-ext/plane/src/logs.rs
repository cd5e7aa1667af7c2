//! `LOGS`, the RESP side of the kernel's log history: the reply built from
//! the lines `rtedge_kernel::logs` keeps. The kernel's module is
//! re-exported here whole, so `crate::logs` names both.

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
