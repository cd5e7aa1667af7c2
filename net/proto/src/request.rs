//! Server side: parses client requests, RESP multibulk and inline, the way
//! Redis's `processMultibulkBuffer` / `processInlineBuffer` do, with limits
//! checked as soon as a header declares a size.
//!
//! Two interfaces: [`parse_request`], a stateless function over the caller's
//! buffer, and [`RequestParser`], which owns a bounded buffer and remembers
//! how far it got, so feeding one byte at a time costs no rescans.
//!
//! Where we differ from Redis, on purpose:
//! - the `\r\n` after bulk data and after header lines is checked
//!   ([`ProtocolError::MissingCrlf`]); Redis skips those bytes unchecked;
//! - a multibulk argument's `$` is checked as soon as its first byte
//!   arrives, not when its line is complete;
//! - an inline line longer than the inline limit is refused even when its
//!   newline arrived in the same read;
//! - the argument and frame limits ([`Limits`]) are ours.

use alloc::vec::Vec;

pub use crate::error::{ProtocolError, Result};
use crate::util::{DecimalBuffer, parse_i64};

/// Size limits for one request. Every allocation the parser makes is
/// bounded by these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request frame, in bytes, and largest [`RequestParser`]
    /// buffer.
    pub max_frame_bytes: usize,
    /// Most arguments in one request, the command name included.
    pub max_args: usize,
    /// Largest single multibulk argument.
    pub max_bulk_bytes: usize,
    /// Longest inline command line (the bytes before its `\n`); also the
    /// longest `*<count>` / `$<len>` header line, as in Redis.
    pub max_inline_bytes: usize,
}

impl Limits {
    /// 64 KiB frames, 1024 arguments, 32 KiB arguments, 16 KiB inline lines.
    pub const DEFAULT: Limits =
        Limits { max_frame_bytes: 64 * 1024, max_args: 1024, max_bulk_bytes: 32 * 1024, max_inline_bytes: 16 * 1024 };

    /// Redis's caps before `AUTH` (10 arguments of at most 16 KiB); Redis
    /// words those errors "unauthenticated ... length", here they are
    /// [`ProtocolError::TooManyArguments`] and
    /// [`ProtocolError::InvalidBulkLength`].
    pub const UNAUTHENTICATED: Limits =
        Limits { max_frame_bytes: 64 * 1024, max_args: 10, max_bulk_bytes: 16 * 1024, max_inline_bytes: 16 * 1024 };
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::DEFAULT
    }
}

/// One parsed command: its arguments as Redis's `argv`, the command name
/// first. Never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    args: Vec<Vec<u8>>,
}

impl Request {
    /// A request from its arguments; `None` when there are none.
    pub fn from_args(args: Vec<Vec<u8>>) -> Option<Request> {
        if args.is_empty() { None } else { Some(Request { args }) }
    }

    /// The command name as sent.
    pub fn name(&self) -> &[u8] {
        self.args.first().map_or(&[], Vec::as_slice)
    }

    /// Whether the command name is `name`, ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name.as_bytes())
    }

    /// The command name in upper case.
    pub fn name_upper(&self) -> Vec<u8> {
        self.name().to_ascii_uppercase()
    }

    /// Argument `index` counted as Redis's `argv`: 0 is the command name,
    /// 1 the first argument.
    pub fn arg(&self, index: usize) -> Option<&[u8]> {
        self.args.get(index).map(Vec::as_slice)
    }

    /// Number of arguments, the name included (Redis's `argc`).
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// Always false: empty requests are skipped, never returned.
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// All arguments, the name first.
    pub fn args(&self) -> &[Vec<u8>] {
        &self.args
    }

    /// The arguments after the command name, e.g. for
    /// [`Reply::unknown_command`](crate::reply::Reply::unknown_command).
    pub fn args_after_name(&self) -> &[Vec<u8>] {
        self.args.get(1..).unwrap_or(&[])
    }

    /// Takes the arguments.
    pub fn into_args(self) -> Vec<Vec<u8>> {
        self.args
    }

    /// Appends this request as a RESP multibulk, as a client sends it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_command(&self.args, out);
    }
}

/// Appends a command as a RESP multibulk (`*<n>\r\n$<len>\r\n<arg>\r\n...`),
/// the form clients send.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    let mut digits = DecimalBuffer::default();
    out.push(b'*');
    out.extend_from_slice(digits.format_u64(args.len() as u64));
    out.extend_from_slice(b"\r\n");
    for arg in args {
        let arg = arg.as_ref();
        out.push(b'$');
        out.extend_from_slice(digits.format_u64(arg.len() as u64));
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses the first request in `buffer`.
///
/// Returns `Ok(Some((request, consumed)))` when a whole request is there,
/// `Ok(None)` when more bytes are needed, and an error when the bytes can
/// never form a valid request (the connection must then be closed).
///
/// Empty requests (`*0`, `*-1`, blank inline lines) are skipped as Redis
/// skips them; the bytes they take are counted in the `consumed` of the
/// request that follows. A buffer holding only empty requests returns
/// `Ok(None)` and keeps them; [`RequestParser`] drops them as it goes.
pub fn parse_request(buffer: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>> {
    let mut offset = 0usize;
    loop {
        let rest = buffer.get(offset..).unwrap_or(&[]);
        match Decoder::default().step(rest, limits)? {
            Step::Request(request, consumed) => return Ok(Some((request, offset + consumed))),
            Step::Skip(consumed) => offset += consumed,
            Step::NeedMore => return Ok(None),
        }
    }
}

/// A connection's request stream: a receive buffer bounded by
/// [`Limits::max_frame_bytes`] and the parse progress within it.
///
/// Use: read at most [`RequestParser::spare_capacity`] bytes from the
/// socket, [`feed`](RequestParser::feed) them, then call
/// [`next`](RequestParser::next) until it returns `Ok(None)`; pipelined
/// requests come out one by one. After an error every call returns the same
/// error: reply with it and close.
#[derive(Debug)]
pub struct RequestParser {
    buffer: Vec<u8>,
    /// Bytes before this index belong to requests already returned.
    start: usize,
    limits: Limits,
    decoder: Decoder,
    failed: Option<ProtocolError>,
}

impl RequestParser {
    /// An empty parser.
    pub fn new(limits: Limits) -> RequestParser {
        RequestParser { buffer: Vec::new(), start: 0, limits, decoder: Decoder::default(), failed: None }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Changes the limits, e.g. after `AUTH`. A frame already started is
    /// checked against the new limits from here on.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Bytes received and not yet returned as requests.
    pub fn buffered(&self) -> usize {
        self.buffer.len().saturating_sub(self.start)
    }

    /// How many more bytes [`feed`](RequestParser::feed) accepts now.
    pub fn spare_capacity(&self) -> usize {
        self.limits.max_frame_bytes.saturating_sub(self.buffered())
    }

    /// Appends received bytes. Fails with
    /// [`ProtocolError::RequestTooLarge`] when the unreturned bytes would
    /// exceed the frame limit.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        if bytes.len() > self.spare_capacity() {
            return Err(self.fail(ProtocolError::RequestTooLarge));
        }
        if self.start > 0 {
            // The decoder's offsets are relative to `start`, so moving the
            // unreturned bytes to the front keeps them valid.
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        if self.buffer.try_reserve(bytes.len()).is_err() {
            // The heap is exhausted: this connection fails, not the caller.
            return Err(self.fail(ProtocolError::OutOfMemory));
        }
        self.buffer.extend_from_slice(bytes);
        Ok(())
    }

    /// Heap bytes the parser holds (its buffer's capacity).
    pub fn memory_bytes(&self) -> usize {
        self.buffer.capacity()
    }

    /// The next complete request, `Ok(None)` when more bytes are needed.
    #[allow(clippy::should_implement_trait, reason = "fallible, so not an Iterator; `next` is the name the server expects")]
    pub fn next(&mut self) -> Result<Option<Request>> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        loop {
            let rest = self.buffer.get(self.start..).unwrap_or(&[]);
            let step = match self.decoder.step(rest, &self.limits) {
                Ok(step) => step,
                Err(error) => return Err(self.fail(error)),
            };
            match step {
                Step::Request(request, consumed) => {
                    self.advance(consumed);
                    return Ok(Some(request));
                }
                Step::Skip(consumed) => self.advance(consumed),
                Step::NeedMore => return Ok(None),
            }
        }
    }

    fn advance(&mut self, consumed: usize) {
        self.start = self.start.saturating_add(consumed).min(self.buffer.len());
        if self.start == self.buffer.len() {
            if self.buffer.capacity() > SHRINK_BUFFER_BYTES {
                // A large frame is done: give its memory back.
                self.buffer = Vec::new();
            } else {
                self.buffer.clear();
            }
            self.start = 0;
        }
    }

    fn fail(&mut self, error: ProtocolError) -> ProtocolError {
        self.failed = Some(error);
        self.decoder = Decoder::default();
        error
    }
}

/// An emptied request buffer with more capacity than this is freed.
const SHRINK_BUFFER_BYTES: usize = 16 * 1024;

/// The shortest multibulk argument, `$0\r\n\r\n`: what every argument not
/// yet seen will take at least.
const MIN_ARGUMENT_BYTES: usize = 6;

/// Progress through one frame. Offsets are relative to the frame's first
/// byte, so the owner may move the frame within its buffer.
#[derive(Debug, Default)]
struct Decoder {
    state: State,
}

#[derive(Debug, Default)]
enum State {
    /// No byte of the frame examined.
    #[default]
    Start,
    /// Inline line; bytes before `scanned` hold no `\n`.
    Inline { scanned: usize },
    /// `*<count>` line; bytes before `scanned` hold no `\r`.
    Count { scanned: usize },
    /// Reading arguments.
    Multibulk(Multibulk),
}

#[derive(Debug)]
struct Multibulk {
    /// Arguments still to read.
    remaining: usize,
    args: Vec<Vec<u8>>,
    /// Offset of the next unread byte.
    position: usize,
    /// Declared length of the argument whose `$` line was read.
    bulk_length: Option<usize>,
    /// Bytes before this offset hold no `\r` (header line search).
    scanned: usize,
}

enum Step {
    /// A request and the bytes it took.
    Request(Request, usize),
    /// An empty request to drop.
    Skip(usize),
    /// The frame is incomplete.
    NeedMore,
}

impl Decoder {
    /// Advances through `frame` (the buffer from the frame's first byte).
    /// Resets itself after a request, a skip or an error.
    fn step(&mut self, frame: &[u8], limits: &Limits) -> Result<Step> {
        let result = self.step_inner(frame, limits);
        if !matches!(result, Ok(Step::NeedMore)) {
            self.state = State::Start;
        }
        result
    }

    fn step_inner(&mut self, frame: &[u8], limits: &Limits) -> Result<Step> {
        loop {
            match &mut self.state {
                State::Start => match frame.first() {
                    None => return Ok(Step::NeedMore),
                    Some(b'*') => self.state = State::Count { scanned: 1 },
                    Some(_) => self.state = State::Inline { scanned: 0 },
                },
                State::Inline { scanned } => return parse_inline(frame, scanned, limits),
                State::Count { scanned } => {
                    let line_end = match find_line(frame, 1, scanned)? {
                        Line::Complete(line_end) => line_end,
                        Line::AwaitingLineFeed => return Ok(Step::NeedMore),
                        Line::Open if frame.len() > limits.max_inline_bytes => {
                            return Err(ProtocolError::TooBigMultibulkCount);
                        }
                        Line::Open => return Ok(Step::NeedMore),
                    };
                    let digits = frame.get(1..line_end).unwrap_or(&[]);
                    let count = parse_i64(digits).ok_or(ProtocolError::InvalidMultibulkLength)?;
                    if count > i64::from(i32::MAX) {
                        return Err(ProtocolError::InvalidMultibulkLength);
                    }
                    let header_bytes = line_end + 2;
                    // Redis treats any count <= 0 as an empty request.
                    let Ok(count) = usize::try_from(count) else {
                        return Ok(Step::Skip(header_bytes));
                    };
                    if count == 0 {
                        return Ok(Step::Skip(header_bytes));
                    }
                    if count > limits.max_args {
                        return Err(ProtocolError::TooManyArguments);
                    }
                    let smallest_frame = count.checked_mul(MIN_ARGUMENT_BYTES).and_then(|bytes| bytes.checked_add(header_bytes));
                    if smallest_frame.is_none_or(|bytes| bytes > limits.max_frame_bytes) {
                        return Err(ProtocolError::RequestTooLarge);
                    }
                    self.state = State::Multibulk(Multibulk {
                        remaining: count,
                        // Grows as arguments arrive; count is already
                        // bounded by max_args.
                        args: Vec::with_capacity(count.min(16)),
                        position: header_bytes,
                        bulk_length: None,
                        scanned: header_bytes,
                    });
                }
                State::Multibulk(multibulk) => return multibulk.advance(frame, limits),
            }
        }
    }
}

impl Multibulk {
    fn advance(&mut self, frame: &[u8], limits: &Limits) -> Result<Step> {
        loop {
            if self.remaining == 0 {
                let args = core::mem::take(&mut self.args);
                return Ok(match Request::from_args(args) {
                    Some(request) => Step::Request(request, self.position),
                    None => Step::Skip(self.position),
                });
            }
            match self.bulk_length {
                None => {
                    let Some(&first) = frame.get(self.position) else {
                        return Ok(Step::NeedMore);
                    };
                    if first != b'$' {
                        return Err(ProtocolError::expected_dollar(first));
                    }
                    let line_end = match find_line(frame, self.position + 1, &mut self.scanned)? {
                        Line::Complete(line_end) => line_end,
                        Line::AwaitingLineFeed => return Ok(Step::NeedMore),
                        Line::Open if frame.len() - self.position > limits.max_inline_bytes => {
                            return Err(ProtocolError::TooBigBulkCount);
                        }
                        Line::Open => return Ok(Step::NeedMore),
                    };
                    let digits = frame.get(self.position + 1..line_end).unwrap_or(&[]);
                    let length = parse_i64(digits)
                        .and_then(|length| usize::try_from(length).ok())
                        .filter(|&length| length <= limits.max_bulk_bytes)
                        .ok_or(ProtocolError::InvalidBulkLength)?;
                    let data_start = line_end + 2;
                    // This argument and the shortest possible rest must fit.
                    let smallest_frame = data_start
                        .checked_add(length)
                        .and_then(|bytes| bytes.checked_add(2))
                        .and_then(|bytes| (self.remaining - 1).checked_mul(MIN_ARGUMENT_BYTES)?.checked_add(bytes));
                    if smallest_frame.is_none_or(|bytes| bytes > limits.max_frame_bytes) {
                        return Err(ProtocolError::RequestTooLarge);
                    }
                    self.bulk_length = Some(length);
                    self.position = data_start;
                }
                Some(length) => {
                    let data_end = self.position + length;
                    let Some(terminator) = frame.get(data_end..data_end + 2) else {
                        return Ok(Step::NeedMore);
                    };
                    if terminator != b"\r\n" {
                        return Err(ProtocolError::MissingCrlf);
                    }
                    let data = frame.get(self.position..data_end).unwrap_or(&[]);
                    self.args.push(data.to_vec());
                    self.position = data_end + 2;
                    self.scanned = self.position;
                    self.bulk_length = None;
                    self.remaining -= 1;
                }
            }
        }
    }
}

/// Where a header line stands.
enum Line {
    /// Complete; the offset of its `\r`.
    Complete(usize),
    /// Its `\r` arrived, its `\n` not yet.
    AwaitingLineFeed,
    /// No `\r` yet.
    Open,
}

/// Finds the `\r\n` ending a header line that starts at `from`, failing
/// with [`ProtocolError::MissingCrlf`] when the `\r` is followed by another
/// byte. `scanned` remembers how far the search has already looked.
fn find_line(frame: &[u8], from: usize, scanned: &mut usize) -> Result<Line> {
    let search_from = from.max(*scanned);
    let haystack = frame.get(search_from..).unwrap_or(&[]);
    let Some(found) = haystack.iter().position(|&byte| byte == b'\r') else {
        *scanned = frame.len().max(search_from);
        return Ok(Line::Open);
    };
    let carriage_return = search_from + found;
    // Keep the `\r` unscanned so the next call finds it again.
    *scanned = carriage_return;
    match frame.get(carriage_return + 1) {
        None => Ok(Line::AwaitingLineFeed),
        Some(b'\n') => Ok(Line::Complete(carriage_return)),
        Some(_) => Err(ProtocolError::MissingCrlf),
    }
}

/// An inline command: one line ended by `\n` (an `\r` before it is dropped),
/// split like Redis's `sdssplitargs`.
fn parse_inline(frame: &[u8], scanned: &mut usize, limits: &Limits) -> Result<Step> {
    let search_from = (*scanned).min(frame.len());
    let haystack = frame.get(search_from..).unwrap_or(&[]);
    let Some(found) = haystack.iter().position(|&byte| byte == b'\n') else {
        *scanned = frame.len();
        if frame.len() > limits.max_inline_bytes {
            return Err(ProtocolError::TooBigInlineRequest);
        }
        return Ok(Step::NeedMore);
    };
    let newline = search_from + found;
    if newline > limits.max_inline_bytes {
        return Err(ProtocolError::TooBigInlineRequest);
    }
    let mut line = frame.get(..newline).unwrap_or(&[]);
    if let Some(without_cr) = line.strip_suffix(b"\r") {
        line = without_cr;
    }
    let args = split_args(line, limits.max_args)?;
    Ok(match Request::from_args(args) {
        Some(request) => Step::Request(request, newline + 1),
        None => Step::Skip(newline + 1),
    })
}

/// Redis's `sdssplitargs`: arguments separated by blanks; `"..."` with
/// `\n \r \t \b \a \xHH` and `\<any>` escapes; `'...'` with only `\'`; a
/// closing quote must be followed by a blank or the end. A NUL byte ends
/// the line, as the end of the C string Redis splits (inside quotes it is
/// an unbalanced quote).
pub fn split_args(line: &[u8], max_args: usize) -> Result<Vec<Vec<u8>>> {
    // Past the end reads as NUL, like the C string Redis walks.
    let at = |index: usize| line.get(index).copied().unwrap_or(0);
    let mut args = Vec::new();
    let mut index = 0usize;
    loop {
        while at(index) != 0 && is_c_space(at(index)) {
            index += 1;
        }
        if at(index) == 0 {
            return Ok(args);
        }
        if args.len() >= max_args {
            return Err(ProtocolError::TooManyArguments);
        }
        let mut current = Vec::new();
        let mut in_double_quotes = false;
        let mut in_single_quotes = false;
        let mut done = false;
        while !done {
            let byte = at(index);
            if in_double_quotes {
                let hex_pair = if at(index + 1) == b'x' { hex_value(at(index + 2)).zip(hex_value(at(index + 3))) } else { None };
                if byte == b'\\'
                    && let Some((high, low)) = hex_pair
                {
                    current.push(high * 16 + low);
                    index += 3;
                } else if byte == b'\\' && at(index + 1) != 0 {
                    index += 1;
                    current.push(match at(index) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if byte == b'"' {
                    if at(index + 1) != 0 && !is_c_space(at(index + 1)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    done = true;
                } else if byte == 0 {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    current.push(byte);
                }
            } else if in_single_quotes {
                if byte == b'\\' && at(index + 1) == b'\'' {
                    index += 1;
                    current.push(b'\'');
                } else if byte == b'\'' {
                    if at(index + 1) != 0 && !is_c_space(at(index + 1)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    done = true;
                } else if byte == 0 {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    current.push(byte);
                }
            } else {
                match byte {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => in_double_quotes = true,
                    b'\'' => in_single_quotes = true,
                    other => current.push(other),
                }
            }
            if at(index) != 0 {
                index += 1;
            }
        }
        args.push(current);
    }
}

/// C's `isspace` in the "C" locale.
fn is_c_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}
