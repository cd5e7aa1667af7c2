//! The documentation, checked against the running appliance (issue 15):
//! every command `net/CONTROL.md` documents exists, with the documented
//! syntax; every reply example there has the documented fields with the
//! documented types; every command of the README's tour exits 0.
//!
//! What this reads in `net/CONTROL.md` (the conventions are written there
//! too, under "Examples"):
//! - in a table whose first column is headed `command`, a row whose first
//!   cell holds code spans that start with an upper-case word documents
//!   those commands; each span is a syntax line in the grammar of the
//!   "Grammar" section (`\|` is a `|`);
//! - a fenced block whose info string has the word `example`: its `> `
//!   line is one command, the rest the reply: `+OK`, `-ERR prefix`, or
//!   JSON for the RESP3 reply (map: object, array or set: array, integer
//!   or double: number, bulk, simple or verbatim string: string, boolean,
//!   null); for `SUBSCRIBE`/`PSUBSCRIBE` the JSON is the payload of the
//!   first message. An object's key `"..."` admits further keys whose
//!   values have its shape; an array whose elements all have one shape
//!   admits any number of such elements, any other array is a tuple.
//!
//! Only the shape is compared (keys and types, both ways: a field the
//! appliance sends and the example leaves out is drift too), never the
//! values. The syntax of table rows is checked in `## ` sections that have
//! examples; a section without any (others append LOGS, METRICS, ...) is
//! checked for its commands' existence only.
//!
//! The README's tour: the `rtctl ...` and `$R ...` commands of its `sh`
//! blocks and the `$R ...` code spans of its prose, run with bash as
//! written, in a directory that holds `target/rtedge/dev.token`, with the
//! booted guest registered as instance `appliance` in a private registry
//! (`$RTEDGE_INSTANCES`) so `rtctl port` and friends find it. Commands
//! that follow forever get their one-shot flag (`top --once`, `watch
//! --count 1`, `console --no-follow`); `SHUTDOWN` runs last and must end
//! the guest with its code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use rtedge_proto::command::{Token, check_syntax, tokenize};
use rtedge_proto::{CommandFlags, CommandSpec, SyntaxCheck, Value};
use serde_json::Value as Json;

use super::resp::{Conn, field_text, integer, items, text};
use super::{Ctx, Scenario, Where};

/// The documents, as built into the runner (cargo rebuilds it when they change).
const CONTROL_MD: &str = include_str!("../../../net/CONTROL.md");
const README_MD: &str = include_str!("../../../README.md");

pub const SCENARIOS: &[Scenario] =
    &[Scenario { name: "docs::control_md_commands_syntax_and_examples_match_the_appliance", run: control_md, on: Where::Reference }];

/// A boot of its own: the tour kills a thread, unloads a module and ends
/// with `SHUTDOWN 7`.
pub const TOUR: Scenario = Scenario { name: "docs::readme_tour_commands_exit_0", run: readme_tour, on: Where::Reference };

// ------------------------------------------------------------ CONTROL.md

/// One command a table row documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentedCommand {
    /// 1-based line in the document.
    pub line: usize,
    /// The `## ` heading it is under.
    pub section: String,
    /// Lower-case name (the syntax's first word).
    pub name: String,
    /// The syntax lines documented for it (`|` unescaped).
    pub syntax: Vec<String>,
}

/// One reply example.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub line: usize,
    /// The `## ` heading it is under.
    pub section: String,
    /// The command's words (split on whitespace).
    pub command: Vec<String>,
    pub reply: ExpectedReply,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExpectedReply {
    /// `+text`: exactly this simple string.
    Simple(String),
    /// `-text`: an error starting with this text.
    Error(String),
    /// The shape of a RESP3 reply (or of a message's JSON payload).
    Shape(Json),
}

#[derive(Debug, Default)]
pub struct ControlDoc {
    pub commands: Vec<DocumentedCommand>,
    pub examples: Vec<Example>,
}

/// Splits a table row into cells on `|` outside code spans... and not `\|`.
fn table_cells(row: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = row.trim().trim_start_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cell.push('|');
                chars.next();
            }
            '|' => cells.push(std::mem::take(&mut cell)),
            c => cell.push(c),
        }
    }
    if !cell.trim().is_empty() {
        cells.push(cell);
    }
    cells
}

/// The code spans of a line of markdown (single backticks).
fn code_spans(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// Whether `word` is a command name as CONTROL.md writes it (`GET`, `JOB.START`).
fn is_command_word(word: &str) -> bool {
    word.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && word.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '.' || c == '_' || c == '-')
}

/// Reads the commands (table rows) and the examples of CONTROL.md.
pub fn parse_control(markdown: &str) -> Result<ControlDoc> {
    let mut doc = ControlDoc::default();
    let mut lines = markdown.lines().enumerate().map(|(index, line)| (index + 1, line));
    let mut section = String::new();
    // Inside a table: whether it documents commands.
    let mut command_table: Option<bool> = None;
    while let Some((number, line)) = lines.next() {
        let trimmed = line.trim();
        if let Some(heading) = trimmed.strip_prefix("## ") {
            section = heading.trim().to_string();
            continue;
        }
        if let Some(info) = trimmed.strip_prefix("```") {
            let is_example = info.split_whitespace().any(|word| word == "example");
            let mut body = Vec::new();
            let mut closed = false;
            for (_, inner) in lines.by_ref() {
                if inner.trim().starts_with("```") {
                    closed = true;
                    break;
                }
                body.push(inner);
            }
            ensure!(closed, "CONTROL.md line {number}: a fenced block is not closed");
            if is_example {
                let mut example = parse_example(number, &body)?;
                example.section = section.clone();
                doc.examples.push(example);
            }
            continue;
        }
        if !trimmed.starts_with('|') {
            command_table = None;
            continue;
        }
        let cells = table_cells(trimmed);
        let Some(first) = cells.first() else { continue };
        // The first row of a table is its header: only tables whose first
        // column is headed `command` document commands.
        let Some(is_command_table) = command_table else {
            command_table = Some(first.trim().eq_ignore_ascii_case("command"));
            continue;
        };
        if !is_command_table {
            continue;
        }
        let mut by_name: Vec<DocumentedCommand> = Vec::new();
        for span in code_spans(first) {
            let syntax = span.replace("\\|", "|");
            let Some(word) = syntax.split_whitespace().next() else { continue };
            if !is_command_word(word) {
                continue;
            }
            let name = word.to_ascii_lowercase();
            match by_name.iter_mut().find(|command| command.name == name) {
                Some(command) => command.syntax.push(syntax.trim().to_string()),
                None => by_name.push(DocumentedCommand {
                    line: number,
                    section: section.clone(),
                    name,
                    syntax: vec![syntax.trim().to_string()],
                }),
            }
        }
        doc.commands.extend(by_name);
    }
    Ok(doc)
}

fn parse_example(line: usize, body: &[&str]) -> Result<Example> {
    let command_line = body
        .iter()
        .find_map(|text| text.trim().strip_prefix("> "))
        .ok_or_else(|| anyhow!("CONTROL.md line {line}: an example without a `> COMMAND` line"))?;
    let command: Vec<String> = command_line.split_whitespace().map(str::to_string).collect();
    ensure!(!command.is_empty(), "CONTROL.md line {line}: an empty example command");
    let reply_text: String = body.iter().filter(|text| !text.trim().starts_with("> ")).copied().collect::<Vec<_>>().join("\n");
    let reply_text = reply_text.trim();
    let reply = if let Some(simple) = reply_text.strip_prefix('+') {
        ExpectedReply::Simple(simple.to_string())
    } else if let Some(error) = reply_text.strip_prefix('-') {
        ExpectedReply::Error(error.to_string())
    } else {
        ExpectedReply::Shape(
            serde_json::from_str(reply_text).with_context(|| format!("CONTROL.md line {line}: the example reply is not JSON"))?,
        )
    };
    Ok(Example { line, section: String::new(), command, reply })
}

/// A RESP3 reply as JSON (the notation of the examples).
pub fn reply_json(value: &Value) -> Json {
    match value {
        Value::Simple(bytes) | Value::Bulk(bytes) | Value::Error(bytes) | Value::BigNumber(bytes) => {
            Json::String(String::from_utf8_lossy(bytes).into_owned())
        }
        Value::Verbatim { text, .. } => Json::String(String::from_utf8_lossy(text).into_owned()),
        Value::Integer(n) => Json::from(*n),
        Value::Double(d) => serde_json::Number::from_f64(*d).map_or(Json::Null, Json::Number),
        Value::Boolean(b) => Json::Bool(*b),
        Value::Null | Value::NullArray => Json::Null,
        Value::Array(values) | Value::Set(values) | Value::Push(values) => Json::Array(values.iter().map(reply_json).collect()),
        Value::Map(pairs) => Json::Object(pairs.iter().map(|(key, value)| (text(key), reply_json(value))).collect()),
        Value::Attributed { value, .. } => reply_json(value),
    }
}

fn type_name(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_f64() => "float",
        Json::Number(_) => "integer",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "map",
    }
}

/// Where `actual` differs in shape from `documented` (empty: none), each
/// difference with its path (`[0].miss`).
pub fn shape_differences(documented: &Json, actual: &Json) -> Vec<String> {
    let mut differences = Vec::new();
    compare(documented, actual, "", &mut differences);
    differences
}

fn compare(documented: &Json, actual: &Json, path: &str, out: &mut Vec<String>) {
    let at = if path.is_empty() { "the reply" } else { path };
    match (documented, actual) {
        (Json::Object(doc), Json::Object(got)) => {
            let rest = doc.get("...");
            for (key, shape) in doc.iter().filter(|(key, _)| key.as_str() != "...") {
                match got.get(key) {
                    Some(value) => compare(shape, value, &format!("{path}.{key}"), out),
                    None => out.push(format!("{at}: documented field `{key}` is missing")),
                }
            }
            for (key, value) in got.iter().filter(|(key, _)| !doc.contains_key(key.as_str())) {
                match rest {
                    Some(shape) => compare(shape, value, &format!("{path}.{key}"), out),
                    None => out.push(format!("{at}: field `{key}` ({}) is not documented", type_name(value))),
                }
            }
        }
        (Json::Array(doc), Json::Array(got)) => {
            let uniform = doc.windows(2).all(|pair| shape_differences(&pair[0], &pair[1]).is_empty());
            match doc.first() {
                None => {}
                Some(shape) if uniform => {
                    for (index, value) in got.iter().enumerate() {
                        compare(shape, value, &format!("{path}[{index}]"), out);
                    }
                }
                Some(_) if doc.len() != got.len() => {
                    out.push(format!("{at}: documented {} elements, got {}", doc.len(), got.len()));
                }
                Some(_) => {
                    for (index, (shape, value)) in doc.iter().zip(got).enumerate() {
                        compare(shape, value, &format!("{path}[{index}]"), out);
                    }
                }
            }
        }
        // An integral double (`1.0`) still reads as a float: a float field is fine either way.
        (Json::Number(doc), Json::Number(_)) if doc.is_f64() => {}
        (doc, got) if type_name(doc) == type_name(got) => {}
        (doc, got) => out.push(format!("{at}: documented {} ({doc}), got {} ({got})", type_name(doc), type_name(got))),
    }
}

// --------------------------------------------------------------- syntax

/// Argument lists (the name first) a syntax line describes: optional parts
/// in and out, each alternative, `...` once and twice, placeholders as
/// `x`; at most `limit` of them.
pub fn instances(syntax: &str, limit: usize) -> Vec<Vec<String>> {
    let tokens = tokenize(syntax);
    let mut position = 0;
    let alternatives = parse_sequence_alternatives(&tokens, &mut position);
    let mut out = Vec::new();
    for alternative in alternatives {
        for instance in expand(&alternative, limit) {
            if out.len() >= limit {
                return out;
            }
            if !out.contains(&instance) {
                out.push(instance);
            }
        }
    }
    out
}

#[derive(Clone, Debug)]
enum Node {
    /// Keyword alternatives (`A|B`), or a placeholder (`None`).
    Word(Option<Vec<String>>),
    Group {
        alternatives: Vec<Vec<Node>>,
        optional: bool,
    },
    Repeat(Box<Node>),
}

fn parse_sequence_alternatives(tokens: &[Token<'_>], position: &mut usize) -> Vec<Vec<Node>> {
    let mut alternatives = vec![Vec::new()];
    while let Some(token) = tokens.get(*position) {
        match token {
            Token::Close => break,
            Token::Bar => {
                alternatives.push(Vec::new());
                *position += 1;
            }
            Token::Open => {
                *position += 1;
                let inner = parse_sequence_alternatives(tokens, position);
                if tokens.get(*position) == Some(&Token::Close) {
                    *position += 1;
                }
                if let Some(current) = alternatives.last_mut() {
                    current.push(Node::Group { alternatives: inner, optional: true });
                }
            }
            Token::Ellipsis => {
                *position += 1;
                if let Some(current) = alternatives.last_mut()
                    && let Some(last) = current.pop()
                {
                    current.push(Node::Repeat(Box::new(last)));
                }
            }
            Token::Word(word) => {
                *position += 1;
                let node = if word.chars().any(|c| c.is_ascii_lowercase()) {
                    Node::Word(None)
                } else {
                    Node::Word(Some(word.split('|').map(str::to_string).collect()))
                };
                if let Some(current) = alternatives.last_mut() {
                    current.push(node);
                }
            }
        }
    }
    alternatives
}

fn expand(sequence: &[Node], limit: usize) -> Vec<Vec<String>> {
    let mut results: Vec<Vec<String>> = vec![Vec::new()];
    for node in sequence {
        let options = expand_node(node, limit);
        let mut next = Vec::new();
        'outer: for prefix in &results {
            for option in &options {
                if next.len() >= limit {
                    break 'outer;
                }
                let mut joined = prefix.clone();
                joined.extend(option.iter().cloned());
                next.push(joined);
            }
        }
        results = next;
    }
    results
}

fn expand_node(node: &Node, limit: usize) -> Vec<Vec<String>> {
    match node {
        Node::Word(None) => vec![vec!["x".to_string()]],
        Node::Word(Some(keywords)) => keywords.iter().map(|keyword| vec![keyword.clone()]).collect(),
        Node::Group { alternatives, optional } => {
            let mut out = if *optional { vec![Vec::new()] } else { Vec::new() };
            for alternative in alternatives {
                out.extend(expand(alternative, limit));
            }
            out
        }
        Node::Repeat(inner) => {
            let mut out = expand_node(inner, limit);
            out.extend(expand(&[(**inner).clone(), (**inner).clone()], limit));
            out
        }
    }
}

/// The counts of arguments (the name included) a syntax line takes, as
/// (fewest, most or `None` for no bound).
pub fn arity_range(syntax: &str) -> Option<(usize, Option<usize>)> {
    let unbounded = syntax.contains("...");
    let counts: Vec<usize> = instances(syntax, 512).iter().map(Vec::len).collect();
    let fewest = counts.iter().copied().min()?;
    let most = counts.iter().copied().max()?;
    Some((fewest, (!unbounded).then_some(most)))
}

/// Where the documented syntax lines of one command differ from the
/// appliance's: an argument list the document allows that the appliance
/// refuses, or a different range of argument counts.
pub fn syntax_differences(documented: &[String], appliance_syntax: &str, arity: i32) -> Vec<String> {
    let syntax: &'static str = Box::leak(appliance_syntax.to_string().into_boxed_str());
    let name: &'static str =
        Box::leak(appliance_syntax.split_whitespace().next().unwrap_or_default().to_ascii_lowercase().into_boxed_str());
    let spec = CommandSpec::new(name, arity, CommandFlags::NONE, "", "", syntax);
    let mut differences = Vec::new();
    for line in documented {
        for instance in instances(line, 64) {
            let args: Vec<Vec<u8>> = instance.iter().map(|word| word.as_bytes().to_vec()).collect();
            let verdict = check_syntax(&spec, &args);
            if verdict != SyntaxCheck::Fits {
                differences.push(format!(
                    "documented `{line}` allows `{}`, which the appliance's `{appliance_syntax}` refuses ({verdict:?})",
                    instance.join(" ")
                ));
                break;
            }
        }
    }
    let documented_range = documented
        .iter()
        .filter_map(|line| arity_range(line))
        .reduce(|(low, high), (other_low, other_high)| (low.min(other_low), high.zip(other_high).map(|(a, b)| a.max(b))));
    let appliance_range = arity_range(appliance_syntax);
    if let (Some(doc), Some(app)) = (documented_range, appliance_range)
        && doc != app
    {
        let show = |(low, high): (usize, Option<usize>)| match high {
            Some(high) if high == low => format!("{low}"),
            Some(high) => format!("{low}..={high}"),
            None => format!("{low} or more"),
        };
        differences.push(format!(
            "documented `{}` takes {} words (the name included), the appliance's `{appliance_syntax}` {}",
            documented.join("` / `"),
            show(doc),
            show(app)
        ));
    }
    differences
}

// ------------------------------------------------------------- scenario

/// The appliance's commands: name, syntax (COMMAND DOCS) and arity (COMMAND INFO).
fn appliance_commands(conn: &mut Conn) -> Result<Vec<(String, String, i32)>> {
    let names: Vec<String> = items(&conn.call(&["COMMAND", "LIST"])?)?.iter().map(text).collect();
    ensure!(!names.is_empty(), "COMMAND LIST is empty");
    let docs = conn.call(&["COMMAND", "DOCS"])?;
    let mut commands = Vec::new();
    for name in names {
        let entry = match &docs {
            Value::Map(pairs) => pairs.iter().find(|(key, _)| text(key) == name).map(|(_, value)| value),
            _ => None,
        }
        .with_context(|| format!("COMMAND DOCS has no entry for `{name}`, which COMMAND LIST names"))?;
        let syntax = field_text(entry, "syntax")?;
        let info = conn.call(&["COMMAND", "INFO", &name])?;
        let arity = items(&info)?
            .first()
            .and_then(|row| items(row).ok())
            .and_then(|row| row.get(1))
            .map(integer)
            .transpose()?
            .with_context(|| format!("COMMAND INFO {name}: {info:?}"))?;
        commands.push((name, syntax, i32::try_from(arity).unwrap_or(0)));
    }
    Ok(commands)
}

fn control_md(ctx: &mut Ctx<'_>) -> Result<()> {
    let doc = parse_control(CONTROL_MD)?;
    let mut conn = Conn::connect(&ctx.target())?;
    conn.call(&["HELLO", "3", "AUTH", "default", &ctx.token])?;
    let commands = appliance_commands(&mut conn)?;
    let mut drift = Vec::new();
    // Every row of one command together (MODULE has two rows), at its first
    // line. The syntax is checked in sections that have examples (the
    // contract's own); a section without any (appended by others) is
    // checked for its commands' existence only.
    let checked = |section: &str| doc.examples.iter().any(|example| example.section == section);
    let mut grouped: Vec<DocumentedCommand> = Vec::new();
    for documented in &doc.commands {
        let mut documented = documented.clone();
        if !checked(&documented.section) {
            documented.syntax.clear();
        }
        match grouped.iter_mut().find(|group| group.name == documented.name) {
            Some(group) => group.syntax.extend(documented.syntax),
            None => grouped.push(documented),
        }
    }
    for documented in &grouped {
        match commands.iter().find(|(name, _, _)| *name == documented.name) {
            None => drift.push(format!(
                "CONTROL.md line {}: `{}` is not a command of the appliance (COMMAND LIST)",
                documented.line,
                documented.name.to_ascii_uppercase()
            )),
            Some(_) if documented.syntax.is_empty() => {}
            Some((_, syntax, arity)) => {
                for difference in syntax_differences(&documented.syntax, syntax, *arity) {
                    drift.push(format!("CONTROL.md line {}: {difference}", documented.line));
                }
            }
        }
    }
    for example in &doc.examples {
        let words: Vec<&str> = example.command.iter().map(String::as_str).collect();
        let name = words[0].to_ascii_lowercase();
        if !commands.iter().any(|(known, _, _)| *known == name) {
            drift.push(format!(
                "CONTROL.md line {}: example command `{}` is not a command of the appliance",
                example.line,
                words.join(" ")
            ));
            continue;
        }
        let actual =
            if name == "subscribe" || name == "psubscribe" { first_message(ctx, &words)? } else { reply_json(&conn.call(&words)?) };
        let differences = match (&example.reply, &actual) {
            (ExpectedReply::Simple(expected), Json::String(got)) if got == expected => Vec::new(),
            (ExpectedReply::Error(prefix), Json::String(got)) if got.starts_with(prefix.as_str()) => Vec::new(),
            (ExpectedReply::Shape(shape), actual) => shape_differences(shape, actual),
            (expected, got) => vec![format!("documented {expected:?}, got {got}")],
        };
        // One line per difference, not per row: `[3].name` and `[4].name` read `[*].name`.
        let mut seen: Vec<String> = Vec::new();
        for difference in differences.iter().map(|difference| without_indices(difference)) {
            if !seen.contains(&difference) {
                drift.push(format!("CONTROL.md line {} (`{}`): {difference}", example.line, words.join(" ")));
                seen.push(difference);
            }
        }
    }
    let syntax_checked = grouped.iter().filter(|documented| !documented.syntax.is_empty()).count();
    ctx.figure(
        "CONTROL.md checked",
        format!("{} commands ({syntax_checked} with their syntax), {} examples", grouped.len(), doc.examples.len()),
    );
    if !drift.is_empty() {
        bail!("net/CONTROL.md drifted from the appliance:\n  {}", drift.join("\n  "));
    }
    Ok(())
}

/// `[3].name` as `[*].name`.
fn without_indices(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close) if close > 0 && after[..close].bytes().all(|byte| byte.is_ascii_digit()) => {
                out.push_str("[*]");
                rest = &after[close + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The JSON payload of the first message a (P)SUBSCRIBE receives.
fn first_message(ctx: &Ctx<'_>, words: &[&str]) -> Result<Json> {
    let mut conn = Conn::connect(&ctx.target())?;
    conn.call(&["HELLO", "3", "AUTH", "default", &ctx.token])?;
    conn.send(words)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let Some(push) = conn.read_within(Duration::from_secs(1))? else { continue };
        let parts = items(&push).or_else(|_| match &push {
            Value::Push(parts) => Ok(parts.as_slice()),
            other => bail!("not a push: {other:?}"),
        })?;
        let kind = parts.first().map(text).unwrap_or_default();
        if kind == "message" || kind == "pmessage" {
            let payload = parts.last().map(text).unwrap_or_default();
            return serde_json::from_str(&payload).with_context(|| format!("`{}`: the payload is not JSON: {payload}", words.join(" ")));
        }
    }
    bail!("`{}`: no message within 30 s", words.join(" "))
}

// ---------------------------------------------------------------- README

/// One tour command, as the README writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TourCommand {
    pub line: usize,
    pub text: String,
}

/// Splits shell text on `;` and `&&` outside quotes and drops a `#` comment.
fn shell_segments(line: &str) -> Vec<String> {
    let mut segments = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(open), c) if c == open => {
                quote = None;
                current.push(c);
            }
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                current.push(c);
            }
            (None, '#') if current.is_empty() || current.ends_with(' ') => break,
            (None, ';') => segments.push(std::mem::take(&mut current)),
            (None, '&') if chars.peek() == Some(&'&') => {
                chars.next();
                segments.push(std::mem::take(&mut current));
            }
            (None, c) => current.push(c),
        }
    }
    segments.push(current);
    segments.into_iter().map(|segment| segment.trim().to_string()).filter(|segment| !segment.is_empty()).collect()
}

/// Whether a segment is a tour command this checks (`rtctl ...`, `$R ...`, `redis-cli ...`).
fn is_tour_command(segment: &str) -> bool {
    ["rtctl ", "$R ", "redis-cli "].iter().any(|prefix| segment.starts_with(prefix))
}

/// The README's tour: the shell variable assignments (`R="..."`) and the
/// commands, in order.
pub fn parse_tour(markdown: &str) -> (Vec<String>, Vec<TourCommand>) {
    let mut assignments = Vec::new();
    let mut commands = Vec::new();
    let mut in_block: Option<bool> = None;
    for (index, line) in markdown.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        if let Some(info) = trimmed.strip_prefix("```") {
            in_block = match in_block {
                Some(_) => None,
                None => Some(info.trim() == "sh"),
            };
            continue;
        }
        match in_block {
            Some(true) => {
                for segment in shell_segments(trimmed) {
                    if is_tour_command(&segment) {
                        commands.push(TourCommand { line: number, text: segment });
                    } else if segment
                        .split_once('=')
                        .is_some_and(|(name, _)| !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
                    {
                        assignments.push(segment);
                    }
                }
            }
            Some(false) => {}
            None => {
                for span in code_spans(line) {
                    if span.starts_with("$R ") {
                        commands.push(TourCommand { line: number, text: span.to_string() });
                    }
                }
            }
        }
    }
    (assignments, commands)
}

/// The command as run: a follow-forever subcommand gets its one-shot flag;
/// `None` for what this cannot run (a placeholder such as `NAME`, or
/// `rtctl stop`, which would end the guest under the other commands).
pub fn runnable(command: &str) -> Option<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    if words.first() != Some(&"rtctl") {
        return Some(command.to_string());
    }
    if words.iter().skip(1).any(|word| word.len() >= 2 && word.chars().all(|c| c.is_ascii_uppercase())) {
        return None;
    }
    let subcommand = words.iter().skip(1).find(|word| !word.starts_with('-')).copied().unwrap_or_default();
    match subcommand {
        "stop" => None,
        "top" if words.contains(&"--once") => Some(command.to_string()),
        "top" => Some(format!("{command} --once")),
        "watch" => Some(format!("{command} --count 1")),
        "console" => Some(format!("{command} --no-follow")),
        _ => Some(command.to_string()),
    }
}

/// What a redis-cli reply line looks like when it is an error.
fn looks_like_error(output: &str) -> bool {
    output.lines().any(|line| {
        let line = line.trim_start_matches("(error) ");
        ["ERR ", "NOAUTH", "WRONGPASS", "WRONGTYPE", "Could not connect", "Error: "].iter().any(|prefix| line.starts_with(prefix))
    })
}

fn readme_tour(ctx: &mut Ctx<'_>) -> Result<()> {
    let (assignments, commands) = parse_tour(README_MD);
    ensure!(!commands.is_empty(), "the README has no tour commands");
    // A directory that looks like the checkout: the token where the README reads it.
    let home = ctx.scratch.join("docs-tour");
    let token_dir = home.join("target/rtedge");
    std::fs::create_dir_all(&token_dir)?;
    std::fs::write(token_dir.join("dev.token"), &ctx.token)?;
    let registry = home.join("instances");
    std::fs::create_dir_all(&registry)?;
    let console_log = registry.join("appliance.console");
    std::fs::write(&console_log, ctx.guest.console())?;
    let entry = crate::instances::Instance {
        name: "appliance".into(),
        profile: "appliance".into(),
        hypervisor: ctx.guest.hypervisor.name().into(),
        pid: ctx.guest.pid(),
        port: Some(ctx.target().port()),
        guest_port: None,
        token_path: Some(token_dir.join("dev.token")),
        console_log: Some(console_log),
        program: String::new(),
        started: crate::instances::now_seconds(),
        detached: true,
    };
    crate::instances::write(&crate::instances::Registry { directory: registry.clone() }, &entry)?;
    let rtctl_dir: PathBuf = ctx.tools.rtctl.parent().map(Path::to_path_buf).context("rtctl has no directory")?;
    let path = format!("{}:{}", rtctl_dir.display(), std::env::var("PATH").unwrap_or_default());
    let prelude = assignments.join("\n");

    let (last, first): (Vec<&TourCommand>, Vec<&TourCommand>) = commands.iter().partition(|command| command.text.contains("SHUTDOWN"));
    let mut failures = Vec::new();
    let mut ran = 0;
    let mut skipped = Vec::new();
    for command in first.iter().chain(&last) {
        let Some(runnable) = runnable(&command.text) else {
            skipped.push(command.text.clone());
            continue;
        };
        let mut shell = ctx.target().command(Path::new("bash"));
        shell
            .args(["-c", &format!("{prelude}\n{runnable}")])
            .current_dir(&home)
            .env("PATH", &path)
            .env("RTEDGE_INSTANCES", &registry)
            .env_remove("RTEDGE_TOKEN")
            .env_remove("RTEDGE_PORT");
        let (code, out, err) = ctx.run(shell, None, None)?;
        ran += 1;
        if code != 0 || looks_like_error(&out) {
            failures.push(format!("README line {}: `{runnable}` exited {code}: {}{}", command.line, out.trim(), err.trim()));
        }
        if runnable.contains("SHUTDOWN") {
            let code: u8 = runnable.split_whitespace().last().and_then(|word| word.parse().ok()).unwrap_or(0);
            let outcome = ctx.guest.wait_exit(Duration::from_secs(60))?;
            if outcome.guest_code().map(|guest| guest.0) != Some(code) {
                failures.push(format!("README line {}: `{runnable}` ended the guest with {outcome}", command.line));
            }
        }
    }
    let not_run = if skipped.is_empty() { String::from("none") } else { skipped.join("; ") };
    ctx.figure("README tour commands run", format!("{ran} (not run: {not_run})"));
    if !failures.is_empty() {
        bail!("README tour commands failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_rows_give_commands_with_their_syntax_lines() {
        let markdown = "| command | reply |\n|---|---|\n| `PING [msg]` | `+PONG` |\n\
            | `TIMER MOD name ms` / `TIMER DEL name` | `:1` |\n| `TASKLET SCHEDULE\\|HI name` | ok |\n| `x` not a command | y |\n\
            \n| soft IRQ | meaning |\n|---|---|\n| `HI` | not a command table |\n";
        let doc = parse_control(markdown).expect("parses");
        let names: Vec<&str> = doc.commands.iter().map(|command| command.name.as_str()).collect();
        assert_eq!(names, ["ping", "timer", "tasklet"]);
        assert_eq!(doc.commands[1].syntax, ["TIMER MOD name ms", "TIMER DEL name"]);
        assert_eq!(doc.commands[2].syntax, ["TASKLET SCHEDULE|HI name"]);
        assert_eq!(doc.commands[0].line, 3);
        assert_eq!(doc.commands[0].section, "");
    }

    #[test]
    fn examples_are_fenced_blocks_marked_example() {
        let markdown = "```example\n> MODULE LIST\n[{\"name\": \"a\", \"loads\": 1}]\n```\n```sh\n> not checked\n```\n\
            ```example\n> MODULE LOAD nope\n-ERR no such module\n```\n";
        let doc = parse_control(markdown).expect("parses");
        assert_eq!(doc.examples.len(), 2);
        assert_eq!(doc.examples[0].command, ["MODULE", "LIST"]);
        assert_eq!(doc.examples[0].reply, ExpectedReply::Shape(json!([{"name": "a", "loads": 1}])));
        assert_eq!(doc.examples[1].reply, ExpectedReply::Error("ERR no such module".into()));
        let doc =
            parse_control("## A\n| Command | reply |\n|---|---|\n| `LOGS [n]` | x |\n## B\n### sub\n```example\n> PING\n+PONG\n```\n")
                .expect("parses");
        assert_eq!(doc.commands[0].section, "A");
        assert_eq!(doc.examples[0].section, "B", "a ### heading stays in its ## section");
        assert!(parse_control("```example\n> PING\nnot json\n```\n").is_err(), "a reply that is not JSON is an error");
        assert!(parse_control("```example\n[1]\n```\n").is_err(), "an example needs a command");
    }

    #[test]
    fn the_real_control_md_parses_with_commands_and_examples() {
        let doc = parse_control(CONTROL_MD).expect("CONTROL.md parses");
        for name in ["ping", "threads", "module", "latency", "subscribe", "work", "client"] {
            assert!(doc.commands.iter().any(|command| command.name == name), "CONTROL.md documents {name}");
        }
        assert!(doc.examples.len() >= 4, "CONTROL.md has reply examples: {:?}", doc.examples);
        for example in &doc.examples {
            assert!(is_command_word(&example.command[0]), "example at line {} starts with a command", example.line);
        }
    }

    #[test]
    fn shapes_find_a_wrong_type_a_missing_and_an_undocumented_field() {
        let documented = json!({"t": 1, "kind": "release", "miss": false});
        let actual = json!({"t": 5, "kind": "release", "miss": 0, "skipped": 0});
        let differences = shape_differences(&documented, &actual);
        assert_eq!(differences.len(), 2, "{differences:?}");
        assert!(differences[0].contains(".miss: documented boolean"), "{differences:?}");
        assert!(differences[1].contains("field `skipped` (integer) is not documented"), "{differences:?}");
        let differences = shape_differences(&json!([{"name": "", "description": ""}]), &json!([{"name": "a"}, {"name": "b"}]));
        assert_eq!(differences.len(), 2, "each row lacks the description: {differences:?}");
        assert!(shape_differences(&json!({"name": "", "...": 0}), &json!({"name": "x", "cpu0": 1, "cpu1": 2})).is_empty());
        assert_eq!(shape_differences(&json!({"name": "", "...": 0}), &json!({"cpu0": "1"})).len(), 2);
        assert!(shape_differences(&json!([[1024, 3]]), &json!([[1, 2], [4, 5], [8, 1]])).is_empty());
        assert_eq!(shape_differences(&json!(["", 0]), &json!(["a", 1, 2])).len(), 1, "a tuple has a fixed length");
    }

    #[test]
    fn resp3_replies_become_json_of_the_same_shape() {
        let reply = Value::Map(vec![
            (Value::Bulk(b"name".to_vec()), Value::Bulk(b"rt0".to_vec())),
            (Value::Simple(b"miss".to_vec()), Value::Boolean(false)),
            (Value::Bulk(b"buckets".to_vec()), Value::Array(vec![Value::Array(vec![Value::Integer(1024), Value::Integer(3)])])),
            (Value::Bulk(b"none".to_vec()), Value::Null),
        ]);
        assert_eq!(reply_json(&reply), json!({"name": "rt0", "miss": false, "buckets": [[1024, 3]], "none": null}));
    }

    #[test]
    fn syntax_lines_expand_to_argument_lists() {
        assert_eq!(instances("PING [message]", 10), [vec!["PING"], vec!["PING", "x"]]);
        assert_eq!(instances("TASKLET SCHEDULE|HI name", 10), [vec!["TASKLET", "SCHEDULE", "x"], vec!["TASKLET", "HI", "x"]]);
        assert_eq!(instances("TIMER MOD name ms | TIMER DEL name", 10), [vec!["TIMER", "MOD", "x", "x"], vec!["TIMER", "DEL", "x"]]);
        assert_eq!(arity_range("MGET key [key ...]"), Some((2, None)));
        assert_eq!(arity_range("LATENCY [source [RESET]]"), Some((1, Some(3))));
        assert_eq!(arity_range("WORK QUEUE queue item [delay_ms] | WORK CANCEL queue item | WORK FLUSH queue"), Some((3, Some(5))));
    }

    #[test]
    fn syntax_differences_find_what_the_appliance_refuses_and_a_different_arity() {
        assert!(syntax_differences(&["GET key".into()], "GET key", 2).is_empty());
        assert!(
            syntax_differences(&["TIMER MOD name ms".into(), "TIMER DEL name".into()], "TIMER MOD name ms | TIMER DEL name", -3).is_empty()
        );
        // Names of placeholders do not matter.
        assert!(syntax_differences(&["PING [msg]".into()], "PING [message]", -1).is_empty());
        // The document lacks `LATENCY` alone.
        let differences = syntax_differences(&["LATENCY source [RESET]".into()], "LATENCY [source [RESET]]", -1);
        assert_eq!(differences.len(), 1, "{differences:?}");
        assert!(differences[0].contains("takes 2..=3 words"), "{differences:?}");
        // A keyword the appliance does not know.
        let differences = syntax_differences(&["KILL thread [TERM|HUP]".into()], "KILL thread [TERM|KILL]", -2);
        assert!(differences[0].contains("allows `KILL x HUP`"), "{differences:?}");
    }

    #[test]
    fn the_tour_is_read_from_sh_blocks_and_prose_spans() {
        let markdown = "```sh\nmake start   # x\nR=\"redis-cli -p $(rtctl port)\"\n$R PING; $R INFO server\nrtctl top          # a live view (q quits)\n\
            rtctl watch a.b   # or: $R SUBSCRIBE a.b\n```\n```text\n$ rtctl --fleet f status\n```\nSee `$R KEYS '*'` and `rtctl man`.\n";
        let (assignments, commands) = parse_tour(markdown);
        assert_eq!(assignments, ["R=\"redis-cli -p $(rtctl port)\""]);
        let texts: Vec<&str> = commands.iter().map(|command| command.text.as_str()).collect();
        assert_eq!(texts, ["$R PING", "$R INFO server", "rtctl top", "rtctl watch a.b", "$R KEYS '*'"]);
        assert_eq!(commands[4].line, 11);
    }

    #[test]
    fn follow_commands_run_once_and_placeholders_are_not_run() {
        assert_eq!(runnable("rtctl top").as_deref(), Some("rtctl top --once"));
        assert_eq!(runnable("rtctl watch softirq.latency").as_deref(), Some("rtctl watch softirq.latency --count 1"));
        assert_eq!(runnable("rtctl console appliance").as_deref(), Some("rtctl console appliance --no-follow"));
        assert_eq!(runnable("rtctl --instance NAME status"), None);
        assert_eq!(runnable("rtctl stop appliance"), None);
        assert_eq!(runnable("$R KEYS '*'").as_deref(), Some("$R KEYS '*'"));
    }

    #[test]
    fn the_real_readme_has_a_tour() {
        let (assignments, commands) = parse_tour(README_MD);
        assert!(assignments.iter().any(|assignment| assignment.starts_with("R=")), "{assignments:?}");
        assert!(commands.iter().any(|command| command.text.starts_with("$R PING")), "{commands:?}");
        assert!(commands.iter().any(|command| command.text.starts_with("rtctl status")), "{commands:?}");
    }

    #[test]
    fn row_indices_are_folded() {
        assert_eq!(without_indices("[12].miss and [0][1] but not [] or [a]"), "[*].miss and [*][*] but not [] or [a]");
    }

    #[test]
    fn redis_cli_errors_are_recognised() {
        assert!(looks_like_error("ERR unknown command 'x'"));
        assert!(looks_like_error("(error) NOAUTH Authentication required."));
        assert!(!looks_like_error("PONG"));
    }
}
