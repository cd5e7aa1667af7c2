//! Reading the guest console: splitting the byte stream into bounded lines,
//! recognising the `ktest:`, `bench:` and `rtedge:` markers and the boot
//! banner, and judging the test harness' report.
//!
//! Lines look like `[     123456us] INFO ktest: heap::alloc ... ok`; the
//! markers are matched anywhere in the line, so timestamps and log levels
//! do not matter.

/// A console line longer than this is cut, so a guest that prints memory
/// without newlines cannot make the runner buffer it all.
pub const MAX_LINE: usize = 4096;
/// Characters of one line shown on the terminal in captured runs.
pub const MAX_SHOWN_CHARS: usize = 300;

/// Something the runner understands in a console line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Marker<'a> {
    /// `ktest: running N tests`
    KtestRunning(u32),
    /// `ktest: NAME ... ok` / `ktest: NAME ... FAILED: reason`
    KtestCase { name: &'a str, failure: Option<&'a str> },
    /// `ktest: result: P passed, F failed`
    KtestResult { passed: u32, failed: u32 },
    /// `bench: ...` (the text from `bench:` on)
    Bench(&'a str),
    /// `rtedge: shutdown code=N`
    Shutdown(u8),
    /// `... ready in N us`
    Ready { micros: u64 },
    /// `QEMU: Terminated`, which QEMU prints when the user quits with Ctrl-A X.
    QemuTerminated,
}

/// Parses the leading decimal digits of `text` and returns the rest.
fn leading_number<T: std::str::FromStr>(text: &str) -> Option<(T, &str)> {
    let end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let value = text[..end].parse().ok()?;
    Some((value, &text[end..]))
}

fn parse_ktest(rest: &str) -> Option<Marker<'_>> {
    if let Some(count) = rest.strip_prefix("running ") {
        let (count, tail) = leading_number(count)?;
        return tail.trim_start().starts_with("test").then_some(Marker::KtestRunning(count));
    }
    if let Some(result) = rest.strip_prefix("result: ") {
        let (passed, tail) = leading_number(result)?;
        let tail = tail.strip_prefix(" passed, ")?;
        let (failed, tail) = leading_number(tail)?;
        return tail.starts_with(" failed").then_some(Marker::KtestResult { passed, failed });
    }
    let (name, verdict) = rest.split_once(" ... ")?;
    let verdict = verdict.trim_end();
    if verdict == "ok" {
        return Some(Marker::KtestCase { name, failure: None });
    }
    let reason = verdict.strip_prefix("FAILED")?;
    let reason = reason.strip_prefix(':').unwrap_or(reason).trim();
    Some(Marker::KtestCase { name, failure: Some(reason) })
}

/// The marker in one console line, if any.
pub fn scan_line(line: &str) -> Option<Marker<'_>> {
    if let Some(at) = line.find("ktest: ") {
        return parse_ktest(&line[at + "ktest: ".len()..]);
    }
    if let Some(at) = line.find("bench: ") {
        return Some(Marker::Bench(line[at..].trim_end()));
    }
    if let Some(at) = line.find("rtedge: shutdown code=") {
        let (code, _) = leading_number(&line[at + "rtedge: shutdown code=".len()..])?;
        return Some(Marker::Shutdown(code));
    }
    if let Some(at) = line.find("ready in ") {
        let (micros, tail) = leading_number(&line[at + "ready in ".len()..])?;
        return tail.trim_start().starts_with("us").then_some(Marker::Ready { micros });
    }
    line.contains("QEMU: Terminated").then_some(Marker::QemuTerminated)
}

/// What one boot's console said, accumulated line by line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsoleSummary {
    pub lines: u64,
    pub running: Option<u32>,
    pub passed: Vec<String>,
    /// Failed tests with their reasons.
    pub failed: Vec<(String, String)>,
    pub result: Option<(u32, u32)>,
    /// The last `rtedge: shutdown code=N`.
    pub shutdown: Option<u8>,
    /// The first `ready in N us`.
    pub ready_micros: Option<u64>,
    pub bench: Vec<String>,
    /// The user quit QEMU (Ctrl-A X).
    pub qemu_terminated: bool,
}

impl ConsoleSummary {
    pub fn observe(&mut self, line: &str) {
        self.lines += 1;
        match scan_line(line) {
            Some(Marker::KtestRunning(count)) => self.running = Some(count),
            Some(Marker::KtestCase { name, failure: None }) => self.passed.push(name.to_string()),
            Some(Marker::KtestCase { name, failure: Some(reason) }) => {
                self.failed.push((name.to_string(), reason.to_string()));
            }
            Some(Marker::KtestResult { passed, failed }) => self.result = Some((passed, failed)),
            Some(Marker::Bench(text)) => self.bench.push(text.to_string()),
            Some(Marker::Shutdown(code)) => self.shutdown = Some(code),
            Some(Marker::Ready { micros }) => {
                self.ready_micros.get_or_insert(micros);
            }
            Some(Marker::QemuTerminated) => self.qemu_terminated = true,
            None => {}
        }
    }

    /// Whether the test harness reported every announced test as passed:
    /// `Ok(count)` or the reason it did not.
    pub fn ktest_verdict(&self) -> Result<u32, String> {
        let Some((passed, failed)) = self.result else {
            let seen = match self.running {
                Some(count) => format!(
                    "the harness announced {count} tests and reported {} ok / {} FAILED before stopping",
                    self.passed.len(),
                    self.failed.len()
                ),
                None => "no `ktest: running N tests` line either: the image did not run the test harness".to_string(),
            };
            return Err(format!("no `ktest: result: N passed, 0 failed` line on the console; {seen}"));
        };
        if failed > 0 {
            let names: Vec<String> = self.failed.iter().map(|(name, reason)| format!("{name} ({reason})")).collect();
            return Err(format!("{failed} of {} tests failed: {}", passed + failed, names.join(", ")));
        }
        match self.running {
            Some(count) if count == passed => Ok(passed),
            Some(count) => Err(format!("the harness announced {count} tests but reported {passed} passed")),
            None => Err(format!("`ktest: result: {passed} passed` without a `ktest: running N tests` line")),
        }
    }
}

/// Splits a byte stream into lines of at most `max` bytes (without the
/// newline; a trailing `\r` is dropped).
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        LineSplitter { pending: Vec::new(), max: max.max(1) }
    }

    /// Feeds bytes, calling `line` for every complete (or cut) line.
    pub fn feed(&mut self, mut bytes: &[u8], mut line: impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            let room = self.max - self.pending.len();
            let window = &bytes[..bytes.len().min(room)];
            match window.iter().position(|&byte| byte == b'\n') {
                Some(newline) => {
                    self.pending.extend_from_slice(&window[..newline]);
                    bytes = &bytes[newline + 1..];
                    self.emit(&mut line);
                }
                None => {
                    self.pending.extend_from_slice(window);
                    bytes = &bytes[window.len()..];
                    if self.pending.len() == self.max {
                        self.emit(&mut line);
                    }
                }
            }
        }
    }

    /// Emits what is left when the stream ends.
    pub fn finish(&mut self, mut line: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            self.emit(&mut line);
        }
    }

    fn emit(&mut self, line: &mut impl FnMut(&[u8])) {
        if self.pending.last() == Some(&b'\r') {
            self.pending.pop();
        }
        line(&self.pending);
        self.pending.clear();
    }
}

/// One console line as text for matching: invalid UTF-8 replaced, NULs dropped.
pub fn line_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().filter(|&c| c != '\0').collect()
}

/// A console line made safe for a terminal: control characters (including
/// escape sequences) become `.`, long lines are cut. `None` when nothing
/// printable is left (e.g. a run of NUL bytes from a confused guest).
pub fn display_line(text: &str) -> Option<String> {
    if !text.is_empty() && text.chars().all(|c| c.is_control() || c == ' ') {
        return None;
    }
    let mut shown: String = text.chars().take(MAX_SHOWN_CHARS).map(|c| if c.is_control() && c != '\t' { '.' } else { c }).collect();
    let total = text.chars().count();
    if total > MAX_SHOWN_CHARS {
        shown.push_str(&format!(" ... ({} more characters)", total - MAX_SHOWN_CHARS));
    }
    Some(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HARNESS_OK: &str = "\
[       1021us] INFO rtedge 0.1.0 ready in 1234 us
[       1100us] ktest: running 3 tests
[       1200us] ktest: heap::alloc_and_free ... ok
[       1300us] INFO ktest: time::apic_timer_fires ... ok
[       1400us] ktest: engine::softirq_order ... ok
[       1500us] ktest: result: 3 passed, 0 failed
[       1600us] rtedge: shutdown code=0
";

    fn summary_of(text: &str) -> ConsoleSummary {
        let mut summary = ConsoleSummary::default();
        text.lines().for_each(|line| summary.observe(line));
        summary
    }

    #[test]
    fn recognises_each_marker() {
        assert_eq!(scan_line("[ 1us] ktest: running 12 tests"), Some(Marker::KtestRunning(12)));
        assert_eq!(scan_line("[ 1us] ktest: running 1 test"), Some(Marker::KtestRunning(1)));
        assert_eq!(
            scan_line("[     123456us] INFO ktest: heap::alloc_and_free ... ok"),
            Some(Marker::KtestCase { name: "heap::alloc_and_free", failure: None })
        );
        assert_eq!(
            scan_line("ktest: time::apic_timer_fires ... FAILED: no tick within 10 ms"),
            Some(Marker::KtestCase { name: "time::apic_timer_fires", failure: Some("no tick within 10 ms") })
        );
        assert_eq!(scan_line("ktest: time::x ... FAILED"), Some(Marker::KtestCase { name: "time::x", failure: Some("") }));
        assert_eq!(scan_line("[ 9us] ktest: result: 11 passed, 1 failed"), Some(Marker::KtestResult { passed: 11, failed: 1 }));
        assert_eq!(
            scan_line("[ 9us] WARN bench: ctx_switch median 812 ns  p99 1.9 us"),
            Some(Marker::Bench("bench: ctx_switch median 812 ns  p99 1.9 us"))
        );
        assert_eq!(scan_line("[ 9us] rtedge: shutdown code=46"), Some(Marker::Shutdown(46)));
        assert_eq!(scan_line("[ 9us] INFO rtedge 0.1.0 ready in 1234 us"), Some(Marker::Ready { micros: 1234 }));
        assert_eq!(scan_line("rtedge 0.1.0 ready in 77us"), Some(Marker::Ready { micros: 77 }));
        assert_eq!(scan_line("QEMU: Terminated"), Some(Marker::QemuTerminated));
    }

    #[test]
    fn ignores_lines_without_a_well_formed_marker() {
        for line in [
            "hello from rtedge",
            "log=info a=b",
            "ktest: something else",
            "ktest: running many tests",
            "ktest: result: 3 passed",
            "ktest: x ... maybe",
            "rtedge: shutdown code=",
            "rtedge: shutdown code=999",
            "ready in 12 ms",
        ] {
            assert_eq!(scan_line(line), None, "{line}");
        }
    }

    #[test]
    fn passing_harness_gives_its_count() {
        let summary = summary_of(HARNESS_OK);
        assert_eq!(summary.ktest_verdict(), Ok(3));
        assert_eq!(summary.shutdown, Some(0));
        assert_eq!(summary.ready_micros, Some(1234));
        assert_eq!(summary.lines, 7);
        assert_eq!(summary.passed, ["heap::alloc_and_free", "time::apic_timer_fires", "engine::softirq_order"]);
    }

    #[test]
    fn failed_tests_are_named_with_reasons() {
        let text = "ktest: running 2 tests\nktest: a::one ... ok\nktest: b::two ... FAILED: expected 3, got 4\n\
                    ktest: result: 1 passed, 1 failed\nrtedge: shutdown code=1\n";
        assert_eq!(summary_of(text).ktest_verdict(), Err("1 of 2 tests failed: b::two (expected 3, got 4)".to_string()));
    }

    #[test]
    fn count_mismatch_fails() {
        let text = "ktest: running 3 tests\nktest: result: 2 passed, 0 failed\n";
        assert_eq!(summary_of(text).ktest_verdict(), Err("the harness announced 3 tests but reported 2 passed".to_string()));
    }

    #[test]
    fn missing_result_line_says_how_far_the_harness_got() {
        assert_eq!(
            summary_of("hello from rtedge\nlog=info\n").ktest_verdict(),
            Err("no `ktest: result: N passed, 0 failed` line on the console; no `ktest: running N tests` line \
                 either: the image did not run the test harness"
                .to_string())
        );
        assert_eq!(
            summary_of("ktest: running 4 tests\nktest: a ... ok\n").ktest_verdict(),
            Err("no `ktest: result: N passed, 0 failed` line on the console; the harness announced 4 tests and \
                 reported 1 ok / 0 FAILED before stopping"
                .to_string())
        );
    }

    #[test]
    fn bench_lines_are_collected_in_order() {
        let summary = summary_of("bench: a 1 ns\nnoise\n[ 3us] bench: b 2 ns\n");
        assert_eq!(summary.bench, ["bench: a 1 ns", "bench: b 2 ns"]);
    }

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut splitter = LineSplitter::new(max);
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.feed(chunk, |line| lines.push(line.to_vec()));
        }
        splitter.finish(|line| lines.push(line.to_vec()));
        lines
    }

    #[test]
    fn splitter_joins_chunks_and_drops_carriage_returns() {
        assert_eq!(split(64, &[b"hel", b"lo\r\nwor", b"ld\n\nend"]), [&b"hello"[..], b"world", b"", b"end"]);
    }

    #[test]
    fn splitter_cuts_long_lines() {
        assert_eq!(split(4, &[b"abcdefghij\nxy\n"]), [&b"abcd"[..], b"efgh", b"ij", b"xy"]);
        assert_eq!(split(4, &[b"abcd\n"]), [&b"abcd"[..], b""]);
    }

    #[test]
    fn display_hides_control_bytes_and_cuts() {
        assert_eq!(display_line(""), Some(String::new()));
        assert_eq!(display_line("\u{1b}[31mred"), Some(".[31mred".to_string()));
        assert_eq!(display_line("\u{1}\u{2}  "), None);
        let long = "x".repeat(MAX_SHOWN_CHARS + 5);
        assert_eq!(display_line(&long), Some(format!("{} ... (5 more characters)", "x".repeat(MAX_SHOWN_CHARS))));
        assert_eq!(line_text(b"a\0b\xffc"), "ab\u{fffd}c");
    }
}
