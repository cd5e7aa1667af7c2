//! The kernel command line: whitespace-separated `key=value` pairs (a bare
//! `key` means `key=1`), values optionally double-quoted. Parsing never
//! fails as a whole: each item is reported, so the kernel can log the ones it
//! does not know and still boot.

/// One item of the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item<'a> {
    pub key: &'a str,
    pub value: &'a str,
}

/// Iterates over the items of a command line.
#[derive(Clone, Debug)]
pub struct Items<'a> {
    rest: &'a str,
}

/// Splits `line` into its items.
pub fn items(line: &str) -> Items<'_> {
    Items { rest: line }
}

impl<'a> Iterator for Items<'a> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        let line = self.rest.trim_start();
        if line.is_empty() {
            self.rest = line;
            return None;
        }
        // An item ends at whitespace outside double quotes.
        let mut in_quotes = false;
        let mut end = line.len();
        for (i, c) in line.char_indices() {
            if c == '"' {
                in_quotes = !in_quotes;
            } else if c.is_whitespace() && !in_quotes {
                end = i;
                break;
            }
        }
        let word = &line[..end];
        self.rest = &line[end..];
        let (key, value) = match word.split_once('=') {
            Some((key, value)) => (key, value),
            None => (word, "1"),
        };
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        Some(Item { key, value })
    }
}

/// The value of the last `key=` item, if any (later items override earlier).
pub fn get<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    items(line).filter(|item| item.key == key).last().map(|item| item.value)
}

/// Why a value did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueError {
    NotANumber,
    NotABool,
    OutOfRange,
}

/// Parses an unsigned number (decimal, or hexadecimal with `0x`).
pub fn parse_u64(value: &str) -> Result<u64, ValueError> {
    let parsed = match value.strip_prefix("0x").or_else(|| value.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse::<u64>(),
    };
    parsed.map_err(|_| ValueError::NotANumber)
}

/// Parses a size with an optional K/M/G suffix (binary units), e.g. `4M`.
pub fn parse_size(value: &str) -> Result<u64, ValueError> {
    let (digits, shift) = match value.as_bytes().last() {
        Some(b'k' | b'K') => (&value[..value.len() - 1], 10),
        Some(b'm' | b'M') => (&value[..value.len() - 1], 20),
        Some(b'g' | b'G') => (&value[..value.len() - 1], 30),
        _ => (value, 0),
    };
    let number = parse_u64(digits)?;
    number.checked_mul(1u64 << shift).ok_or(ValueError::OutOfRange)
}

/// Parses a boolean: 1/0, true/false, on/off, yes/no.
pub fn parse_bool(value: &str) -> Result<bool, ValueError> {
    match value {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => Err(ValueError::NotABool),
    }
}

/// Parses a CPU list such as `1`, `1,3` or `0-2,5` into a bit set (CPUs
/// 0..64).
pub fn parse_cpu_list(value: &str) -> Result<u64, ValueError> {
    let mut set = 0u64;
    for part in value.split(',').filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (parse_u64(a)?, parse_u64(b)?),
            None => {
                let cpu = parse_u64(part)?;
                (cpu, cpu)
            }
        };
        if first > last || last >= 64 {
            return Err(ValueError::OutOfRange);
        }
        for cpu in first..=last {
            set |= 1 << cpu;
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pairs_bare_keys_and_quoted_values() {
        let found: Vec<_> = items("  log=debug  quiet name=\"a b\" x= ").collect();
        assert_eq!(
            found,
            vec![
                Item { key: "log", value: "debug" },
                Item { key: "quiet", value: "1" },
                Item { key: "name", value: "a b" },
                Item { key: "x", value: "" },
            ]
        );
    }

    #[test]
    fn empty_line_has_no_items() {
        assert_eq!(items("").count(), 0);
        assert_eq!(items("   \t ").count(), 0);
    }

    #[test]
    fn later_values_override_earlier_ones() {
        assert_eq!(get("log=info log=trace", "log"), Some("trace"));
        assert_eq!(get("log=info", "ip"), None);
    }

    #[test]
    fn unterminated_quote_runs_to_end_of_line() {
        let found: Vec<_> = items("a=\"b c").collect();
        assert_eq!(found, vec![Item { key: "a", value: "\"b c" }]);
    }

    #[test]
    fn numbers_sizes_and_bools() {
        assert_eq!(parse_u64("42"), Ok(42));
        assert_eq!(parse_u64("0x1f"), Ok(31));
        assert_eq!(parse_u64("x"), Err(ValueError::NotANumber));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("16k"), Ok(16 << 10));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("99999999999999G"), Err(ValueError::OutOfRange));
        assert_eq!(parse_bool("on"), Ok(true));
        assert_eq!(parse_bool("no"), Ok(false));
        assert_eq!(parse_bool("maybe"), Err(ValueError::NotABool));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("1"), Ok(0b10));
        assert_eq!(parse_cpu_list("0-2,5"), Ok(0b100111));
        assert_eq!(parse_cpu_list("3-1"), Err(ValueError::OutOfRange));
        assert_eq!(parse_cpu_list("64"), Err(ValueError::OutOfRange));
        assert_eq!(parse_cpu_list("a"), Err(ValueError::NotANumber));
    }
}
