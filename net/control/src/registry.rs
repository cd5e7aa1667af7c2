//! The command registry: the one table of `{spec, handler}` entries that
//! every command of the control plane lives in. The dispatcher's own
//! commands (connection, transactions, pub/sub, introspection), the
//! kernel's (`GET`, `THREADS`, `SHUTDOWN`...) and the application's
//! (registered at run time) all register here; a request's name is looked
//! up once, ASCII case-insensitively and without allocating, and the
//! entry found gives both what the checks use (arity, flags, the syntax
//! read as a grammar) and what runs. `COMMAND`, `COMMAND DOCS`,
//! `COMMAND INFO` and `HELP` list the same entries.
//!
//! The built-in commands' specs are the contract written in
//! [`rtedge_proto::command`] (`net/CONTROL.md` documents the same table);
//! a built-in entry binds one of them, by name, to its handler. An
//! application command brings its own spec, and is refused if a built-in
//! command has its name (bound or not) or another application command has
//! it already.
//!
//! Invariant: no two entries have names equal ignoring ASCII case; the
//! built-in entries keep the order of the spec table (which `COMMAND`
//! lists them in) and an index of them sorted by name finds one by binary
//! search.

use alloc::vec::Vec;
use core::cmp::Ordering;
use core::fmt;

use rtedge_proto::command::{self, CommandSpec};
use rtedge_proto::{Reply, Request};

use crate::dispatch::CommandContext;

/// A handler that needs only the command's context: the kernel's
/// built-ins and the application's commands.
pub type CommandFn = fn(&mut CommandContext<'_>, &Request) -> Reply;

/// A handler that needs the backend `B` too.
pub type BackendFn<B> = fn(&mut B, &mut CommandContext<'_>, &Request) -> Reply;

/// The commands the dispatcher answers itself, from the session and its
/// own state (the authentication throttle, the memory budget, the
/// registry): dispatched on this enum, never on the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionCommand {
    /// `AUTH`
    Auth,
    /// `CLIENT` (`CLIENT LIST` asks the backend for the connections)
    Client,
    /// `COMMAND`
    Command,
    /// `CONFIG`
    Config,
    /// `DISCARD`
    Discard,
    /// `ECHO`
    Echo,
    /// `EXEC`
    Exec,
    /// `HELLO`
    Hello,
    /// `HELP`
    Help,
    /// `MULTI`
    Multi,
    /// `PING`
    Ping,
    /// `PSUBSCRIBE`
    PatternSubscribe,
    /// `PUNSUBSCRIBE`
    PatternUnsubscribe,
    /// `QUIT`
    Quit,
    /// `SUBSCRIBE`
    Subscribe,
    /// `UNSUBSCRIBE`
    Unsubscribe,
    /// `UNWATCH`
    Unwatch,
    /// `WATCH`
    Watch,
}

impl SessionCommand {
    /// Every one of them.
    pub const ALL: [SessionCommand; 18] = [
        SessionCommand::Auth,
        SessionCommand::Client,
        SessionCommand::Command,
        SessionCommand::Config,
        SessionCommand::Discard,
        SessionCommand::Echo,
        SessionCommand::Exec,
        SessionCommand::Hello,
        SessionCommand::Help,
        SessionCommand::Multi,
        SessionCommand::Ping,
        SessionCommand::PatternSubscribe,
        SessionCommand::PatternUnsubscribe,
        SessionCommand::Quit,
        SessionCommand::Subscribe,
        SessionCommand::Unsubscribe,
        SessionCommand::Unwatch,
        SessionCommand::Watch,
    ];

    /// The name of its spec in [`rtedge_proto::command`].
    pub const fn name(self) -> &'static str {
        match self {
            SessionCommand::Auth => "auth",
            SessionCommand::Client => "client",
            SessionCommand::Command => "command",
            SessionCommand::Config => "config",
            SessionCommand::Discard => "discard",
            SessionCommand::Echo => "echo",
            SessionCommand::Exec => "exec",
            SessionCommand::Hello => "hello",
            SessionCommand::Help => "help",
            SessionCommand::Multi => "multi",
            SessionCommand::Ping => "ping",
            SessionCommand::PatternSubscribe => "psubscribe",
            SessionCommand::PatternUnsubscribe => "punsubscribe",
            SessionCommand::Quit => "quit",
            SessionCommand::Subscribe => "subscribe",
            SessionCommand::Unsubscribe => "unsubscribe",
            SessionCommand::Unwatch => "unwatch",
            SessionCommand::Watch => "watch",
        }
    }
}

/// What runs a command.
pub enum Handler<B> {
    /// The dispatcher itself.
    Session(SessionCommand),
    /// A function of the backend and the context.
    Backend(BackendFn<B>),
    /// A function of the context.
    Function(CommandFn),
}

// Derives would ask `B: Clone`; a handler is a tag or a function pointer.
impl<B> Clone for Handler<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B> Copy for Handler<B> {}

impl<B> fmt::Debug for Handler<B> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Handler::Session(command) => formatter.debug_tuple("Session").field(command).finish(),
            Handler::Backend(_) => formatter.write_str("Backend(..)"),
            Handler::Function(_) => formatter.write_str("Function(..)"),
        }
    }
}

/// Where an entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A built-in command: its spec is in [`rtedge_proto::command`].
    Builtin,
    /// Registered by the application at run time.
    Application,
}

/// One command: its spec and what runs it.
pub struct Entry<B> {
    /// Name, arity, flags, syntax, summary.
    pub spec: CommandSpec,
    /// What runs it.
    pub handler: Handler<B>,
    /// Built-in or the application's.
    pub origin: Origin,
}

impl<B> Clone for Entry<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B> Copy for Entry<B> {}

impl<B> fmt::Debug for Entry<B> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Entry")
            .field("name", &self.spec.name)
            .field("handler", &self.handler)
            .field("origin", &self.origin)
            .finish()
    }
}

/// Why a registration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// A built-in command has that name.
    Builtin,
    /// A command with that name is in the table already.
    Exists,
    /// A built-in binding names no spec of [`rtedge_proto::command`].
    NotBuiltin,
}

impl fmt::Display for RegisterError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            RegisterError::Builtin => "a built-in command has that name",
            RegisterError::Exists => "a command with that name is registered already",
            RegisterError::NotBuiltin => "no built-in command has that name",
        })
    }
}

/// Orders names as the lower-case spec names sort, ignoring ASCII case.
fn compare_names(left: &[u8], right: &[u8]) -> Ordering {
    left.iter().map(u8::to_ascii_lowercase).cmp(right.iter().map(u8::to_ascii_lowercase))
}

/// The position of the built-in spec called `name` in the spec table.
fn table_position(name: &str) -> Option<usize> {
    command::all().iter().position(|spec| spec.name.eq_ignore_ascii_case(name))
}

/// The table. See the module documentation.
pub struct Registry<B> {
    /// In the spec table's order.
    builtins: Vec<Entry<B>>,
    /// Indices into `builtins`, sorted by name.
    by_name: Vec<usize>,
    /// In registration order.
    applications: Vec<Entry<B>>,
}

impl<B> fmt::Debug for Registry<B> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Registry").field("builtins", &self.builtins.len()).field("applications", &self.applications).finish()
    }
}

impl<B> Default for Registry<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B> Registry<B> {
    /// An empty table (usable in a `static`).
    pub const fn new() -> Registry<B> {
        Registry { builtins: Vec::new(), by_name: Vec::new(), applications: Vec::new() }
    }

    /// A table holding the dispatcher's own commands.
    pub fn with_session_commands() -> Registry<B> {
        let mut registry = Registry::new();
        registry.register_session_commands();
        registry
    }

    /// Adds the dispatcher's own commands ([`SessionCommand`]); those
    /// already there are left as they are.
    pub fn register_session_commands(&mut self) {
        for command in SessionCommand::ALL {
            // Only `Exists` can come back (each name is in the spec table,
            // which the tests check), and an existing entry is kept.
            let _ = self.register_builtin(command.name(), Handler::Session(command));
        }
    }

    /// Binds the built-in command `name` (its spec in
    /// [`rtedge_proto::command`]) to `handler`.
    pub fn register_builtin(&mut self, name: &str, handler: Handler<B>) -> Result<(), RegisterError> {
        let position = table_position(name).ok_or(RegisterError::NotBuiltin)?;
        let spec = command::all().get(position).ok_or(RegisterError::NotBuiltin)?;
        if self.find_builtin(spec.name.as_bytes()).is_some() {
            return Err(RegisterError::Exists);
        }
        let at = self.builtins.partition_point(|entry| table_position(entry.spec.name) < Some(position));
        self.builtins.insert(at, Entry { spec: *spec, handler, origin: Origin::Builtin });
        let builtins = &self.builtins;
        self.by_name = (0..builtins.len()).collect();
        self.by_name.sort_unstable_by(|&left, &right| match (builtins.get(left), builtins.get(right)) {
            (Some(left), Some(right)) => compare_names(left.spec.name.as_bytes(), right.spec.name.as_bytes()),
            _ => Ordering::Equal,
        });
        Ok(())
    }

    /// Registers an application command: refused if a built-in command
    /// has its name (whether bound here or not) or another application
    /// command has it already, ignoring ASCII case.
    pub fn register(&mut self, spec: CommandSpec, handler: Handler<B>) -> Result<(), RegisterError> {
        if command::lookup(spec.name.as_bytes()).is_some() || self.find_builtin(spec.name.as_bytes()).is_some() {
            return Err(RegisterError::Builtin);
        }
        if self.find_application(spec.name.as_bytes()).is_some() {
            return Err(RegisterError::Exists);
        }
        self.applications.push(Entry { spec, handler, origin: Origin::Application });
        Ok(())
    }

    /// Removes the application command `name` (module unload); built-in
    /// commands stay. Whether one was removed.
    pub fn unregister(&mut self, name: &str) -> bool {
        let before = self.applications.len();
        self.applications.retain(|entry| !entry.spec.name.eq_ignore_ascii_case(name));
        self.applications.len() != before
    }

    /// The command called `name`, ignoring ASCII case. Allocates nothing.
    pub fn lookup(&self, name: &[u8]) -> Option<&Entry<B>> {
        self.find_builtin(name).or_else(|| self.find_application(name))
    }

    fn find_builtin(&self, name: &[u8]) -> Option<&Entry<B>> {
        let found = self
            .by_name
            .binary_search_by(|&index| {
                self.builtins.get(index).map_or(Ordering::Less, |entry| compare_names(entry.spec.name.as_bytes(), name))
            })
            .ok()?;
        self.builtins.get(*self.by_name.get(found)?)
    }

    fn find_application(&self, name: &[u8]) -> Option<&Entry<B>> {
        self.applications.iter().find(|entry| entry.spec.name.as_bytes().eq_ignore_ascii_case(name))
    }

    /// Every entry as `COMMAND` lists them: the built-in ones in the spec
    /// table's order, then the application's in registration order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry<B>> {
        self.builtins.iter().chain(self.applications.iter())
    }

    /// The specs of [`Registry::entries`].
    pub fn specs(&self) -> impl Iterator<Item = &CommandSpec> {
        self.entries().map(|entry| &entry.spec)
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.builtins.len() + self.applications.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Application commands in the table.
    pub fn application_count(&self) -> usize {
        self.applications.len()
    }

    /// Built-in specs no handler is bound to yet (a start-up check: in a
    /// complete control plane there are none).
    pub fn unbound_builtins(&self) -> impl Iterator<Item = &'static CommandSpec> + '_ {
        command::all().iter().filter(|spec| self.find_builtin(spec.name.as_bytes()).is_none())
    }
}
