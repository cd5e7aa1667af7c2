//! The command model: the spec of every built-in control-plane command
//! (the contract `net/CONTROL.md` documents), the grammar their syntax
//! lines are read as, and the `COMMAND DOCS`, `COMMAND INFO` and `HELP`
//! reply builders.
//!
//! The server does not look requests up here: its one command registry
//! (`rtedge_control::Registry`) binds each built-in spec to its handler at
//! start-up and holds the application's commands beside them, described
//! with the same [`CommandSpec`], which anyone can build (`const fn new`);
//! the reply builders take any list of specs.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ops::BitOr;

use crate::reply::Reply;

/// What a command may do and when it may run: a small bit set.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CommandFlags(u32);

impl CommandFlags {
    /// No flag.
    pub const NONE: CommandFlags = CommandFlags(0);
    /// May run before `AUTH` (Redis's `no-auth`).
    pub const ALLOWED_BEFORE_AUTH: CommandFlags = CommandFlags(1 << 0);
    /// Changes state.
    pub const WRITE: CommandFlags = CommandFlags(1 << 1);
    /// Only reads state.
    pub const READONLY: CommandFlags = CommandFlags(1 << 2);
    /// A pub/sub command.
    pub const PUBSUB: CommandFlags = CommandFlags(1 << 3);
    /// Administrative (shutdown, modules, configuration, killing threads).
    pub const ADMIN: CommandFlags = CommandFlags(1 << 4);
    /// Allowed on a RESP2 connection in subscribed mode (Redis allows only
    /// (P)SUBSCRIBE, (P)UNSUBSCRIBE, PING and QUIT there).
    pub const ALLOWED_WHILE_SUBSCRIBED: CommandFlags = CommandFlags(1 << 5);

    /// Flags with their Redis `COMMAND INFO` names, in output order.
    const NAMED: [(CommandFlags, &'static str); 5] = [
        (Self::WRITE, "write"),
        (Self::READONLY, "readonly"),
        (Self::ADMIN, "admin"),
        (Self::PUBSUB, "pubsub"),
        (Self::ALLOWED_BEFORE_AUTH, "no-auth"),
    ];

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Flags from raw bits.
    pub const fn from_bits(bits: u32) -> CommandFlags {
        CommandFlags(bits)
    }

    /// Both sets of flags (usable in `const` tables).
    pub const fn union(self, other: CommandFlags) -> CommandFlags {
        CommandFlags(self.0 | other.0)
    }

    /// Whether every flag in `other` is set.
    pub const fn contains(self, other: CommandFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The Redis names of the set flags that Redis also has (`write`,
    /// `readonly`, `admin`, `pubsub`, `no-auth`).
    pub fn redis_names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMED.into_iter().filter(move |(flag, _)| self.contains(*flag)).map(|(_, name)| name)
    }
}

impl BitOr for CommandFlags {
    type Output = CommandFlags;

    fn bitor(self, other: CommandFlags) -> CommandFlags {
        self.union(other)
    }
}

impl fmt::Debug for CommandFlags {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = formatter.debug_set();
        for name in self.redis_names() {
            list.entry(&name);
        }
        if self.contains(Self::ALLOWED_WHILE_SUBSCRIBED) {
            list.entry(&"allowed-while-subscribed");
        }
        list.finish()
    }
}

/// One command: its name, arity, flags and documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lower-case name, as Redis lists its commands.
    pub name: &'static str,
    /// Redis's convention: positive = exactly this many arguments counting
    /// the name; negative = at least `-arity`.
    pub arity: i32,
    /// What it may do and when it may run.
    pub flags: CommandFlags,
    /// Documentation group, e.g. `connection`, `kernel`.
    pub group: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// Usage, e.g. `GET key`.
    pub syntax: &'static str,
}

impl CommandSpec {
    /// A spec; for the application's own commands too.
    pub const fn new(
        name: &'static str,
        arity: i32,
        flags: CommandFlags,
        group: &'static str,
        summary: &'static str,
        syntax: &'static str,
    ) -> CommandSpec {
        CommandSpec { name, arity, flags, group, summary, syntax }
    }

    /// Whether `argc` arguments (the name included) suit this command.
    pub fn check_arity(&self, argc: usize) -> bool {
        check_arity(self, argc)
    }

    /// [`check_syntax`] for this command.
    pub fn check_syntax(&self, args: &[Vec<u8>]) -> SyntaxCheck {
        check_syntax(self, args)
    }

    /// Whether this command carries `flag`.
    pub fn has(&self, flag: CommandFlags) -> bool {
        self.flags.contains(flag)
    }
}

/// Whether `argc` arguments (the name included) suit `spec`, with Redis's
/// rule: `arity > 0` needs exactly `arity`, `arity < 0` at least `-arity`
/// (and, as in Redis, `0` accepts any count).
pub fn check_arity(spec: &CommandSpec, argc: usize) -> bool {
    let argc = i64::try_from(argc).unwrap_or(i64::MAX);
    let arity = i64::from(spec.arity);
    !((arity > 0 && arity != argc) || argc < -arity)
}

/// What a request's arguments make of its command's syntax
/// ([`check_syntax`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyntaxCheck {
    /// The arguments fit the syntax (or the syntax could not be read, and
    /// only the arity applies).
    Fits,
    /// No reading of the syntax takes this many arguments: Redis's
    /// `ERR wrong number of arguments for '<name>' command`.
    WrongArity,
    /// The count could fit, but a keyword is wrong: `ERR syntax error`.
    SyntaxError,
    /// The first argument is a subcommand keyword, and not one the syntax
    /// names: Redis's `ERR unknown subcommand '<x>'. Try <NAME> HELP.`
    UnknownSubcommand,
}

/// Checks `args` (the command name first) against the arity of `spec` and
/// then against its syntax line, read as a grammar:
///
/// - words in upper case (`GET`, `RESET`, `0`) are keywords, matched
///   ignoring ASCII case; a word with a lower-case letter (`key`, `ms`) is
///   a placeholder for any one argument; `A|B` (no spaces) is one word
///   with alternatives;
/// - `[ ... ]` is optional, ` | ` (spaced) separates alternative
///   sequences (at the top level and inside brackets), and `...` repeats
///   the element before it one or more times.
///
/// So `SHUTDOWN [code]` takes at most one argument and `KILL thread
/// [TERM|WAKE]` refuses `KILL t HUP`. The whole syntax line is matched,
/// the command name included (its first word). A syntax that does not
/// parse (unbalanced brackets) constrains nothing beyond the arity.
/// Allocation is bounded by the syntax length and the argument count; no
/// input makes it panic.
pub fn check_syntax(spec: &CommandSpec, args: &[Vec<u8>]) -> SyntaxCheck {
    if !check_arity(spec, args.len()) {
        return SyntaxCheck::WrongArity;
    }
    let Some(grammar) = Grammar::parse(spec.syntax) else {
        return SyntaxCheck::Fits;
    };
    if grammar.accepts(args, Lax::Nothing) {
        SyntaxCheck::Fits
    } else if !grammar.accepts(args, Lax::Everything) {
        SyntaxCheck::WrongArity
    } else if !grammar.accepts(args, Lax::AllBut(1)) {
        SyntaxCheck::UnknownSubcommand
    } else {
        SyntaxCheck::SyntaxError
    }
}

/// Which keywords match any argument while matching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lax {
    /// Keywords must match.
    Nothing,
    /// Every keyword matches anything: a count check.
    Everything,
    /// Only the keyword at this argument index must match.
    AllBut(usize),
}

impl Lax {
    fn excuses(self, index: usize) -> bool {
        match self {
            Lax::Nothing => false,
            Lax::Everything => true,
            Lax::AllBut(strict) => index != strict,
        }
    }
}

/// A syntax line read as a grammar (see [`check_syntax`]).
#[derive(Debug)]
struct Grammar {
    alternatives: Vec<Vec<Node>>,
}

#[derive(Debug)]
enum Node {
    /// One argument: keyword alternatives, or a placeholder.
    Word(&'static str),
    /// Alternative sequences; `optional` for `[ ... ]`.
    Group { alternatives: Vec<Vec<Node>>, optional: bool },
    /// The element, one or more times.
    Repeat(alloc::boxed::Box<Node>),
}

/// One token of a syntax line (`SET key value [EX seconds]`): brackets,
/// `|` between alternatives, `...` after a repeated element, or a word.
/// Also read by the runner's documentation check (`images/src/e2e/docs.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token<'a> {
    Open,
    Close,
    Bar,
    Ellipsis,
    Word(&'a str),
}

/// Deepest bracket nesting read; deeper syntax is left unchecked.
const MAX_GRAMMAR_DEPTH: usize = 8;

/// The tokens of a syntax line, in order.
pub fn tokenize(syntax: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    for mut word in syntax.split_ascii_whitespace() {
        while let Some(rest) = word.strip_prefix('[') {
            tokens.push(Token::Open);
            word = rest;
        }
        let mut closes = 0;
        while let Some(rest) = word.strip_suffix(']') {
            closes += 1;
            word = rest;
        }
        let ellipsis = match word.strip_suffix("...") {
            Some(rest) => {
                word = rest;
                true
            }
            None => false,
        };
        match word {
            "" => {}
            "|" => tokens.push(Token::Bar),
            word => tokens.push(Token::Word(word)),
        }
        if ellipsis {
            tokens.push(Token::Ellipsis);
        }
        for _ in 0..closes {
            tokens.push(Token::Close);
        }
    }
    tokens
}

impl Grammar {
    fn parse(syntax: &'static str) -> Option<Grammar> {
        let tokens = tokenize(syntax);
        let mut position = 0;
        let alternatives = parse_alternatives(&tokens, &mut position, 0)?;
        (position == tokens.len()).then_some(Grammar { alternatives })
    }

    /// Whether some reading of the grammar takes exactly `args`; `lax`
    /// lets keywords match any argument (a count check).
    fn accepts(&self, args: &[Vec<u8>], lax: Lax) -> bool {
        let mut start = alloc::vec![false; args.len() + 1];
        if let Some(first) = start.first_mut() {
            *first = true;
        }
        let reached = match_alternatives(&self.alternatives, args, &start, lax);
        reached.last().copied().unwrap_or(false)
    }
}

/// Sequences separated by `|` up to a `]` or the end (not consumed).
fn parse_alternatives(tokens: &[Token<'static>], position: &mut usize, depth: usize) -> Option<Vec<Vec<Node>>> {
    if depth > MAX_GRAMMAR_DEPTH {
        return None;
    }
    let mut alternatives = alloc::vec![Vec::new()];
    while let Some(&token) = tokens.get(*position) {
        match token {
            Token::Close => break,
            Token::Bar => {
                *position += 1;
                alternatives.push(Vec::new());
            }
            Token::Ellipsis => {
                *position += 1;
                let sequence = alternatives.last_mut()?;
                let element = sequence.pop()?;
                sequence.push(Node::Repeat(alloc::boxed::Box::new(element)));
            }
            Token::Word(word) => {
                *position += 1;
                alternatives.last_mut()?.push(Node::Word(word));
            }
            Token::Open => {
                *position += 1;
                let inner = parse_alternatives(tokens, position, depth + 1)?;
                if tokens.get(*position) != Some(&Token::Close) {
                    return None;
                }
                *position += 1;
                alternatives.last_mut()?.push(Node::Group { alternatives: inner, optional: true });
            }
        }
    }
    if depth == 0 && tokens.get(*position).is_some() {
        // A `]` without its `[`.
        return None;
    }
    Some(alternatives)
}

/// From every start position marked in `from`, the positions each
/// alternative can end at.
fn match_alternatives(alternatives: &[Vec<Node>], args: &[Vec<u8>], from: &[bool], lax: Lax) -> Vec<bool> {
    let mut reached = alloc::vec![false; from.len()];
    for sequence in alternatives {
        let mut positions = from.to_vec();
        for node in sequence {
            positions = match_node(node, args, &positions, lax);
        }
        for (reached, position) in reached.iter_mut().zip(positions) {
            *reached |= position;
        }
    }
    reached
}

fn match_node(node: &Node, args: &[Vec<u8>], from: &[bool], lax: Lax) -> Vec<bool> {
    match node {
        Node::Word(word) => {
            let mut reached = alloc::vec![false; from.len()];
            for (index, argument) in args.iter().enumerate() {
                let starts_here = from.get(index).copied().unwrap_or(false);
                if starts_here
                    && (lax.excuses(index) || word_matches(word, argument))
                    && let Some(next) = reached.get_mut(index + 1)
                {
                    *next = true;
                }
            }
            reached
        }
        Node::Group { alternatives, optional } => {
            let mut reached = match_alternatives(alternatives, args, from, lax);
            if *optional {
                for (reached, start) in reached.iter_mut().zip(from) {
                    *reached |= *start;
                }
            }
            reached
        }
        Node::Repeat(element) => {
            let mut reached = match_node(element, args, from, lax);
            // Each round reaches further right or stops: at most one round
            // per argument.
            for _ in 0..args.len() {
                let next = match_node(element, args, &reached, lax);
                let mut grew = false;
                for (reached, next) in reached.iter_mut().zip(next) {
                    if next && !*reached {
                        *reached = true;
                        grew = true;
                    }
                }
                if !grew {
                    break;
                }
            }
            reached
        }
    }
}

/// A placeholder (any alternative with a lower-case letter) takes any
/// argument; keywords match ignoring ASCII case.
fn word_matches(word: &str, argument: &[u8]) -> bool {
    word.split('|').any(|alternative| {
        alternative.bytes().any(|byte| byte.is_ascii_lowercase()) || alternative.as_bytes().eq_ignore_ascii_case(argument)
    })
}

const AUTH_FREE: CommandFlags = CommandFlags::ALLOWED_BEFORE_AUTH;
const READ: CommandFlags = CommandFlags::READONLY;
const WRITE: CommandFlags = CommandFlags::WRITE;
const ADMIN: CommandFlags = CommandFlags::ADMIN;
const SUBSCRIBED: CommandFlags = CommandFlags::ALLOWED_WHILE_SUBSCRIBED;
const PUBSUB: CommandFlags = CommandFlags::PUBSUB.union(SUBSCRIBED);

/// Every built-in command, sorted by name.
static COMMANDS: [CommandSpec; 40] = [
    CommandSpec::new("auth", -2, AUTH_FREE, "connection", "Authenticates the connection.", "AUTH [username] token"),
    CommandSpec::new(
        "client",
        -2,
        CommandFlags::NONE,
        "connection",
        "Names, identifies and describes the connection (SETNAME, GETNAME, ID, INFO, SETINFO).",
        "CLIENT subcommand [argument ...]",
    ),
    CommandSpec::new(
        "command",
        -1,
        READ,
        "server",
        "Lists the commands, counts them, or returns their docs or details.",
        "COMMAND [COUNT | LIST | DOCS [name ...] | INFO [name ...] | HELP]",
    ),
    CommandSpec::new(
        "config",
        -3,
        ADMIN.union(READ),
        "server",
        "Returns configuration parameters: save, appendonly and the limits set on the kernel command line.",
        "CONFIG GET parameter [parameter ...]",
    ),
    CommandSpec::new("discard", 1, CommandFlags::NONE, "transactions", "Discards the commands queued since MULTI.", "DISCARD"),
    CommandSpec::new("echo", 2, CommandFlags::NONE, "connection", "Returns the given message.", "ECHO message"),
    CommandSpec::new(
        "exec",
        1,
        CommandFlags::NONE,
        "transactions",
        "Runs the commands queued since MULTI, with no other client's command in between.",
        "EXEC",
    ),
    CommandSpec::new("get", 2, READ, "string", "Returns the value of a shared static.", "GET key"),
    CommandSpec::new(
        "hello",
        -1,
        AUTH_FREE,
        "connection",
        "Chooses the protocol version, optionally authenticates and names the connection.",
        "HELLO [protover [AUTH username password] [SETNAME name]]",
    ),
    CommandSpec::new("help", -1, READ, "server", "Lists the commands with their syntax.", "HELP [command]"),
    CommandSpec::new(
        "info",
        -1,
        READ,
        "server",
        "Returns statistics by section: server, memory, cpu, threads, softirqs, interrupts, net, rtpool, all.",
        "INFO [section]",
    ),
    CommandSpec::new("irqs", 1, READ, "kernel", "Lists interrupt counts per vector and CPU.", "IRQS"),
    CommandSpec::new("keys", 2, READ, "generic", "Lists the shared statics whose names match a glob pattern.", "KEYS pattern"),
    CommandSpec::new(
        "kill",
        -2,
        ADMIN.union(WRITE),
        "kernel",
        "Cancels a thread (runs its cleanup handlers) with TERM, KILL or INT (the default); any other signal name (WAKE, USR1) wakes it, through its buddy if it has one.",
        "KILL thread [signal]",
    ),
    CommandSpec::new(
        "latency",
        -1,
        WRITE,
        "kernel",
        "Lists the latency sources, or returns (and optionally resets) the histogram of one.",
        "LATENCY [source [RESET]]",
    ),
    CommandSpec::new(
        "logs",
        -1,
        READ,
        "kernel",
        "Returns the last n (100) kernel log lines numbered above seq, at level or more severe, oldest first: maps of seq, mono_ns, unix_ms, level, cpu, thread, text.",
        "LOGS [n] [LEVEL level] [SINCE seq]",
    ),
    CommandSpec::new(
        "metrics",
        1,
        READ,
        "server",
        "Returns the Prometheus text (exposition format 0.0.4) that GET /metrics serves on the metrics port.",
        "METRICS",
    ),
    CommandSpec::new("mget", -2, READ, "string", "Returns the values of several shared statics.", "MGET key [key ...]"),
    CommandSpec::new(
        "multi",
        1,
        CommandFlags::NONE,
        "transactions",
        "Starts a transaction: the commands that follow are queued until EXEC or DISCARD.",
        "MULTI",
    ),
    CommandSpec::new(
        "module",
        -2,
        ADMIN,
        "server",
        "Lists, loads or unloads application modules.",
        "MODULE LIST | MODULE LOAD name | MODULE UNLOAD name",
    ),
    CommandSpec::new("ping", -1, AUTH_FREE.union(SUBSCRIBED), "connection", "Returns PONG, or the given message.", "PING [message]"),
    CommandSpec::new(
        "psubscribe",
        -2,
        PUBSUB,
        "pubsub",
        "Listens for messages on channels matching glob patterns.",
        "PSUBSCRIBE pattern [pattern ...]",
    ),
    CommandSpec::new(
        "punsubscribe",
        -1,
        PUBSUB,
        "pubsub",
        "Stops listening on patterns (all of them without arguments).",
        "PUNSUBSCRIBE [pattern ...]",
    ),
    CommandSpec::new("quit", -1, AUTH_FREE.union(SUBSCRIBED), "connection", "Closes the connection.", "QUIT"),
    CommandSpec::new("set", 3, WRITE, "string", "Sets a writable shared static, checked against its type.", "SET key value"),
    CommandSpec::new("shutdown", -1, ADMIN.union(WRITE), "server", "Stops the appliance with an exit code.", "SHUTDOWN [code]"),
    CommandSpec::new("softirq", 3, WRITE, "kernel", "Raises a named soft IRQ.", "SOFTIRQ RAISE name"),
    CommandSpec::new("softirqs", 1, READ, "kernel", "Lists every soft IRQ vector with its handler, owner and counts per CPU.", "SOFTIRQS"),
    CommandSpec::new("subscribe", -2, PUBSUB, "pubsub", "Listens for messages on channels.", "SUBSCRIBE channel [channel ...]"),
    CommandSpec::new(
        "tasklet",
        3,
        WRITE,
        "kernel",
        "Schedules (normal or HI), disables, enables or kills a tasklet.",
        "TASKLET SCHEDULE|HI|DISABLE|ENABLE|KILL name",
    ),
    CommandSpec::new(
        "tasklets",
        1,
        READ,
        "kernel",
        "Lists the named tasklets with their state, schedule and run counts and owner.",
        "TASKLETS",
    ),
    CommandSpec::new("threads", 1, READ, "kernel", "Lists threads with state, priority and run time.", "THREADS"),
    CommandSpec::new(
        "timer",
        -3,
        WRITE,
        "kernel",
        "Re-arms a named timer in milliseconds, or deletes it.",
        "TIMER MOD name ms | TIMER DEL name",
    ),
    CommandSpec::new("timers", 1, READ, "kernel", "Lists the named timers: armed, expiry and period in ms, fired count, owner.", "TIMERS"),
    CommandSpec::new(
        "unsubscribe",
        -1,
        PUBSUB,
        "pubsub",
        "Stops listening on channels (all of them without arguments).",
        "UNSUBSCRIBE [channel ...]",
    ),
    CommandSpec::new(
        "unwatch",
        1,
        CommandFlags::NONE,
        "transactions",
        "Accepted for compatibility: WATCH is not supported, so nothing is watched.",
        "UNWATCH",
    ),
    CommandSpec::new("wake", 2, WRITE, "kernel", "Wakes a suspended thread.", "WAKE thread"),
    CommandSpec::new(
        "watch",
        -2,
        CommandFlags::NONE,
        "transactions",
        "Refused: optimistic locking is not supported (use MULTI/EXEC, which runs atomically).",
        "WATCH key [key ...]",
    ),
    CommandSpec::new(
        "work",
        -3,
        WRITE,
        "kernel",
        "Queues (optionally delayed), cancels or flushes work on a workqueue.",
        "WORK QUEUE queue item [delay_ms] | WORK CANCEL queue item | WORK FLUSH queue",
    ),
    CommandSpec::new(
        "workqueues",
        -1,
        READ,
        "kernel",
        "Lists the workqueues with their workers and counters, or with ITEMS the named work items.",
        "WORKQUEUES [ITEMS]",
    ),
];

/// Every built-in command.
pub fn all() -> &'static [CommandSpec] {
    &COMMANDS
}

/// The built-in spec called `name`, ignoring ASCII case (for binding a
/// handler to it; requests are looked up in the server's registry).
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|spec| spec.name.as_bytes().eq_ignore_ascii_case(name))
}

/// The `COMMAND DOCS` reply for `specs`, in Redis 7's shape: a map from
/// each name to a map with `summary`, `since`, `group`, `syntax` and
/// `arguments`. Keys and values are bulk strings, which `redis-cli`
/// asserts. `arguments` holds one argument whose display text is the
/// syntax after the name, so `redis-cli` shows it as a hint (it is empty
/// for commands without arguments).
pub fn docs_reply<'a>(specs: impl IntoIterator<Item = &'a CommandSpec>) -> Reply {
    Reply::Map(specs.into_iter().map(|spec| (Reply::bulk_str(spec.name), docs_entry(spec))).collect())
}

fn docs_entry(spec: &CommandSpec) -> Reply {
    let parameters = syntax_arguments(spec);
    let mut arguments = Vec::new();
    if !parameters.is_empty() {
        arguments.push(Reply::Map(alloc::vec![
            (Reply::bulk_str("name"), Reply::bulk_str(parameters)),
            (Reply::bulk_str("type"), Reply::bulk_str("string")),
            (Reply::bulk_str("display_text"), Reply::bulk_str(parameters)),
        ]));
    }
    Reply::Map(alloc::vec![
        (Reply::bulk_str("summary"), Reply::bulk_str(spec.summary)),
        (Reply::bulk_str("since"), Reply::bulk_str(env!("CARGO_PKG_VERSION"))),
        (Reply::bulk_str("group"), Reply::bulk_str(spec.group)),
        (Reply::bulk_str("syntax"), Reply::bulk_str(spec.syntax)),
        (Reply::bulk_str("arguments"), Reply::Array(arguments)),
    ])
}

/// The syntax after the command name: `key` for `GET key`.
fn syntax_arguments(spec: &CommandSpec) -> &'static str {
    match spec.syntax.split_once(' ') {
        Some((_, rest)) => rest.trim(),
        None => "",
    }
}

/// One command's `COMMAND INFO` entry in Redis 7's shape: name, arity,
/// flags (a set of status strings), first key, last key, key step, ACL
/// categories, tips, key specs, subcommands. Key positions are not
/// modelled and are reported as 0.
pub fn info_reply(spec: &CommandSpec) -> Reply {
    Reply::Array(alloc::vec![
        Reply::bulk_str(spec.name),
        Reply::Integer(i64::from(spec.arity)),
        Reply::Set(spec.flags.redis_names().map(Reply::simple).collect()),
        Reply::Integer(0),
        Reply::Integer(0),
        Reply::Integer(0),
        Reply::Set(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

/// The `HELP` reply: an array of status lines, a heading then, for each
/// command, its syntax and an indented summary (the layout of Redis's
/// `... HELP` replies).
pub fn help_reply<'a>(specs: impl IntoIterator<Item = &'a CommandSpec>) -> Reply {
    let mut lines = alloc::vec![Reply::simple("rtedge control plane. Commands are:")];
    for spec in specs {
        lines.push(Reply::simple(spec.syntax));
        let mut summary = String::from("    ");
        summary.push_str(spec.summary);
        lines.push(Reply::Simple(summary));
    }
    Reply::Array(lines)
}
