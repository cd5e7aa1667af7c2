//! Text for people: durations, sizes, tables, and replies in `redis-cli`'s
//! format.

use comfy_table::presets::NOTHING;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};
use rtedge_proto::Value;

/// A duration in nanoseconds with three significant digits and the unit
/// that keeps it below 1000: `950ns`, `1.23µs`, `12.3ms`, `4s`. Trailing
/// zeros are dropped (`2µs`, not `2.00µs`). Negative values print `-`.
pub fn duration_ns(nanoseconds: i64) -> String {
    if nanoseconds < 0 {
        return "-".into();
    }
    if nanoseconds < 1000 {
        return format!("{nanoseconds}ns");
    }
    const UNITS: [(&str, f64); 3] = [("µs", 1e3), ("ms", 1e6), ("s", 1e9)];
    let value = nanoseconds as f64;
    let mut chosen = ("s", 1e9);
    for (unit, scale) in UNITS {
        // Pick the unit where the value, once rounded, stays below 1000.
        if round3(value / scale) < 1000.0 {
            chosen = (unit, scale);
            break;
        }
    }
    let (unit, scale) = chosen;
    format!("{}{unit}", three_digits(value / scale))
}

/// `x` rounded to three significant digits (or to an integer above 100).
fn round3(x: f64) -> f64 {
    let decimals = decimals_for(x);
    let factor = 10f64.powi(decimals);
    (x * factor).round() / factor
}

fn decimals_for(x: f64) -> i32 {
    if x < 10.0 {
        2
    } else if x < 100.0 {
        1
    } else {
        0
    }
}

/// `x` with three significant digits, trailing zeros removed.
fn three_digits(x: f64) -> String {
    let rounded = round3(x);
    // Rounding can carry into the next decade (9.996 -> 10.0); format with
    // the decimals of the rounded value.
    let decimals = usize::try_from(decimals_for(rounded)).unwrap_or(0);
    let text = format!("{rounded:.decimals$}");
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_owned() } else { text }
}

/// A size in bytes: `512 B`, `1.5 KiB`, `16.0 MiB`.
pub fn bytes(count: i64) -> String {
    if count < 1024 {
        return format!("{count} B");
    }
    let mut value = count as f64;
    let mut unit = "B";
    for next in ["KiB", "MiB", "GiB", "TiB"] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

/// An uptime in seconds: `12s`, `5m 06s`, `1h 02m 03s`, `3d 04h 05m`.
pub fn uptime(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let (days, hours, minutes, secs) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    if days > 0 {
        format!("{days}d {hours:02}h {minutes:02}m")
    } else if hours > 0 {
        format!("{hours}h {minutes:02}m {secs:02}s")
    } else if minutes > 0 {
        format!("{minutes}m {secs:02}s")
    } else {
        format!("{secs}s")
    }
}

/// How a column's cells line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A borderless table, like `ps`: a header line, then one line per row,
/// columns two spaces apart, no trailing spaces.
pub fn table(header: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut table = Table::new();
    table
        .load_style(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(|(name, align)| aligned(name, *align)));
    for row in rows {
        table.add_row(
            row.iter()
                .zip(header.iter().map(|(_, align)| *align).chain(std::iter::repeat(Align::Left)))
                .map(|(text, align)| aligned(text, align)),
        );
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn aligned(text: &str, align: Align) -> Cell {
    Cell::new(text).set_alignment(match align {
        Align::Left => CellAlignment::Left,
        Align::Right => CellAlignment::Right,
    })
}

/// A reply as `redis-cli` prints it on a terminal: `(integer) 1`,
/// `"text"`, `(nil)`, numbered arrays, `1# "key" => value` maps.
pub fn redis_cli(value: &Value) -> String {
    let mut out = String::new();
    write_redis_cli(value, "", &mut out);
    out
}

fn write_redis_cli(value: &Value, prefix: &str, out: &mut String) {
    match value {
        Value::Simple(text) => push_line(out, &String::from_utf8_lossy(text)),
        Value::Error(text) => push_line(out, &format!("(error) {}", String::from_utf8_lossy(text))),
        Value::Integer(number) => push_line(out, &format!("(integer) {number}")),
        Value::Bulk(bytes) => push_line(out, &quoted(bytes)),
        Value::Null | Value::NullArray => push_line(out, "(nil)"),
        Value::Double(number) => push_line(out, &format!("(double) {}", rtedge_proto::util::format_double(*number).as_str())),
        Value::Boolean(flag) => push_line(out, if *flag { "(true)" } else { "(false)" }),
        Value::Verbatim { text, .. } => push_line(out, &String::from_utf8_lossy(text)),
        Value::BigNumber(digits) => {
            push_line(out, &format!("(big number) {}", String::from_utf8_lossy(digits)));
        }
        Value::Attributed { value, .. } => write_redis_cli(value, prefix, out),
        Value::Array(elements) | Value::Push(elements) => {
            write_aggregate(elements.iter().map(|element| (element, None)), elements.len(), ')', "(empty array)", prefix, out);
        }
        Value::Set(elements) => {
            write_aggregate(elements.iter().map(|element| (element, None)), elements.len(), '~', "(empty set)", prefix, out);
        }
        Value::Map(entries) => {
            write_aggregate(entries.iter().map(|(key, value)| (key, Some(value))), entries.len(), '#', "(empty hash)", prefix, out);
        }
    }
}

/// redis-cli's `cliFormatReplyTTY` for aggregates: the first element goes
/// on the caller's line, the others get the caller's prefix; nested
/// elements are indented by the index width plus two.
fn write_aggregate<'a>(
    entries: impl Iterator<Item = (&'a Value, Option<&'a Value>)>,
    count: usize,
    separator: char,
    empty: &str,
    prefix: &str,
    out: &mut String,
) {
    if count == 0 {
        push_line(out, empty);
        return;
    }
    let width = count.to_string().len();
    let nested = format!("{prefix}{}", " ".repeat(width + 2));
    for (index, (element, value)) in entries.enumerate() {
        if index > 0 {
            out.push_str(prefix);
        }
        out.push_str(&format!("{:>width$}{separator} ", index + 1));
        write_redis_cli(element, &nested, out);
        if let Some(value) = value {
            // The key's newline gives way to the arrow.
            out.pop();
            out.push_str(" => ");
            write_redis_cli(value, &nested, out);
        }
    }
}

fn push_line(out: &mut String, text: &str) {
    out.push_str(text);
    out.push('\n');
}

/// A string as `redis-cli` quotes it (`sdscatrepr`).
pub fn quoted(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &byte in bytes {
        match byte {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            byte if byte.is_ascii_graphic() || byte == b' ' => out.push(char::from(byte)),
            byte => out.push_str(&format!("\\x{byte:02x}")),
        }
    }
    out.push('"');
    out
}

/// A reply value in plain text, as `get` prints it: strings bare, `(nil)`
/// for null, numbers and booleans as written.
pub fn scalar(value: &Value) -> String {
    match value {
        Value::Integer(number) => number.to_string(),
        Value::Null | Value::NullArray => "(nil)".into(),
        Value::Double(number) => rtedge_proto::util::format_double(*number).as_str().to_owned(),
        Value::Boolean(flag) => flag.to_string(),
        Value::Attributed { value, .. } => scalar(value),
        other => match other.as_bytes() {
            Some(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            None => redis_cli(other).trim_end().to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_keep_three_significant_digits() {
        let cases = [
            (0, "0ns"),
            (999, "999ns"),
            (1000, "1µs"),
            (1024, "1.02µs"),
            (2048, "2.05µs"),
            (12_345, "12.3µs"),
            (123_456, "123µs"),
            (999_499, "999µs"),
            (999_500, "1ms"),
            (1_500_000, "1.5ms"),
            (999_999_999, "1s"),
            (2_000_000_000, "2s"),
            (75_250_000_000, "75.3s"),
            (4_000_000_000_000, "4000s"),
            (-1, "-"),
        ];
        for (nanoseconds, expected) in cases {
            assert_eq!(duration_ns(nanoseconds), expected, "{nanoseconds} ns");
        }
    }

    #[test]
    fn sizes_and_uptimes_read_naturally() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(16 * 1024 * 1024), "16.0 MiB");
        assert_eq!(uptime(12), "12s");
        assert_eq!(uptime(306), "5m 06s");
        assert_eq!(uptime(3723), "1h 02m 03s");
        assert_eq!(uptime(3 * 86_400 + 4 * 3600 + 5 * 60 + 6), "3d 04h 05m");
    }

    #[test]
    fn tables_align_numbers_right_and_text_left() {
        let text = table(
            &[("ID", Align::Right), ("NAME", Align::Left), ("COUNT", Align::Right)],
            &[vec!["1".into(), "idle".into(), "5".into()], vec!["12".into(), "rt-control".into(), "12345".into()]],
        );
        assert_eq!(text, "ID  NAME        COUNT\n 1  idle            5\n12  rt-control  12345\n");
    }

    #[test]
    fn replies_print_as_redis_cli_prints_them() {
        let bulk = |text: &str| Value::Bulk(text.as_bytes().to_vec());
        assert_eq!(redis_cli(&Value::Simple(b"OK".to_vec())), "OK\n");
        assert_eq!(redis_cli(&Value::Integer(7)), "(integer) 7\n");
        assert_eq!(redis_cli(&bulk("a\"b\n")), "\"a\\\"b\\n\"\n");
        assert_eq!(redis_cli(&Value::Null), "(nil)\n");
        assert_eq!(redis_cli(&Value::Array(vec![])), "(empty array)\n");
        assert_eq!(redis_cli(&Value::Double(1.5)), "(double) 1.5\n");
        let nested = Value::Array(vec![bulk("a"), Value::Array(vec![Value::Integer(1), Value::Integer(2)])]);
        assert_eq!(redis_cli(&nested), "1) \"a\"\n2) 1) (integer) 1\n   2) (integer) 2\n");
        let map = Value::Map(vec![(bulk("server"), bulk("rtedge")), (bulk("proto"), Value::Integer(3))]);
        assert_eq!(redis_cli(&map), "1# \"server\" => \"rtedge\"\n2# \"proto\" => (integer) 3\n");
    }
}
