//! The command half: per-connection sessions and the built-in commands
//! (connection, introspection and pub/sub), with everything else run by
//! the handlers the [`Backend`]'s registry holds. It runs in a kernel
//! thread and may block inside a handler; it shares nothing with the
//! network half but the [`Job`]s and [`Completion`]s passing between them.
//!
//! Every command is an entry of the one [`Registry`] (`{spec, handler}`):
//! the request's name is looked up once there, and the entry found is what
//! the checks below read and what runs (the dispatcher's own commands by
//! their [`SessionCommand`], the kernel's and the application's through
//! their function).
//!
//! Checks, in this order (CONTROL.md): before authentication only commands
//! flagged `no-auth` (`PING`, `HELLO`, `AUTH`, `QUIT`) run, anything else,
//! unknown commands included, gets `-NOAUTH`; then unknown commands get
//! Redis's text; then arity (`ERR wrong number of arguments for 'x'
//! command`); then, on a RESP2 connection with subscriptions, only
//! `(P)(UN)SUBSCRIBE`, `PING` and `QUIT` run. The arity check is the
//! command's whole syntax line read as a grammar
//! ([`command::check_syntax`]): extra arguments are an error before
//! anything runs.
//!
//! Transactions: after `MULTI` every command is checked as above and
//! queued (`+QUEUED`); a check that fails answers its error and marks the
//! transaction, so that `EXEC` then runs nothing (`-EXECABORT`). `EXEC`
//! runs the queue inside one [`Dispatcher::execute`], so no other
//! client's command runs in between (the dispatcher executes one job at a
//! time). `WATCH` is refused.
//!
//! Memory: a session's subscription names and queued transaction are
//! charged to the shared [`MemoryBudget`] and capped per client; a command
//! that would pass either limit gets an error and changes nothing. A
//! session is dropped ([`Dispatcher::reap`]) once its connection ended.
//!
//! Authentication backs off per connection, per source address and
//! globally ([`AuthThrottle`]): reconnecting does not buy more guesses.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write as _;

use crate::registry::{Entry, Handler, Registry, SessionCommand};
use rtedge_proto::command::{self, CommandFlags, CommandSpec, SyntaxCheck};
use rtedge_proto::util::{constant_time_eq, glob_match, parse_i64};
use rtedge_proto::{ProtocolVersion, Reply, Request};
use smoltcp::wire::IpAddress;

use crate::config::Config;
use crate::job::{Completion, ConnectionId, Job, SubscriptionChange};
use crate::memory::MemoryBudget;

/// The first delay after a failed authentication.
pub const AUTH_DELAY_FIRST_MS: u64 = 100;
/// The longest delay after failed authentications.
pub const AUTH_DELAY_MAX_MS: u64 = 2_000;

/// What the application and kernel provide: the command table (with the
/// handlers of every command the dispatcher does not answer itself:
/// `GET`, `SET`, `INFO`, `THREADS`, `SHUTDOWN`, the application's
/// commands...), the token, the connection list and the clock.
pub trait Backend: Sized {
    /// Calls `reader` with the command table (under whatever lock guards
    /// it: the application registers commands from other threads). The
    /// dispatcher copies out what it needs and calls no handler inside.
    /// Handlers run in the control-plane thread and may block.
    fn with_registry<R>(&self, reader: impl FnOnce(&Registry<Self>) -> R) -> R;

    /// The token `AUTH` must present; empty means no authentication.
    fn auth_token(&self) -> &[u8];

    /// `CLIENT LIST`: the open connections, which only the network glue
    /// sees.
    fn client_list(&mut self) -> Reply;

    /// Monotonic milliseconds, the same clock the network half is polled
    /// with (the delay after a failed `AUTH` is measured with it).
    fn now_ms(&self) -> u64;
}

/// The session a backend command runs in.
#[derive(Debug)]
pub struct CommandContext<'a> {
    session: &'a Session,
    shutdown: Option<i64>,
}

impl CommandContext<'_> {
    /// The protocol the reply is encoded for (e.g. booleans in RESP3).
    pub fn protocol(&self) -> ProtocolVersion {
        self.session.protocol
    }

    /// The client id (`CLIENT ID`).
    pub fn client_id(&self) -> u64 {
        self.session.connection.client_id()
    }

    /// The connection.
    pub fn connection(&self) -> ConnectionId {
        self.session.connection
    }

    /// The name set by `CLIENT SETNAME` or `HELLO ... SETNAME`.
    pub fn client_name(&self) -> Option<&[u8]> {
        self.session.name.as_deref()
    }

    /// Asks for the appliance to shut down with `code` once this reply has
    /// been sent (`SHUTDOWN`): the completion carries it and closes the
    /// connection.
    pub fn request_shutdown(&mut self, code: i64) {
        self.shutdown = Some(code);
    }

    /// The code passed to [`CommandContext::request_shutdown`], if any.
    pub fn shutdown_requested(&self) -> Option<i64> {
        self.shutdown
    }

    /// The outcome of a handler that answered `reply` in this context: a
    /// requested shutdown closes the connection after the reply.
    fn outcome(self, reply: Reply) -> Outcome {
        let shutdown = self.shutdown;
        Outcome { close_after: shutdown.is_some(), shutdown, ..Outcome::reply(reply) }
    }
}

/// One connection's state in the command half.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    connection: ConnectionId,
    protocol: ProtocolVersion,
    authenticated: bool,
    name: Option<Vec<u8>>,
    library_name: Option<Vec<u8>>,
    library_version: Option<Vec<u8>>,
    channels: BTreeSet<Vec<u8>>,
    patterns: BTreeSet<Vec<u8>>,
    failed_auth: u32,
    next_auth_ms: u64,
    /// Bytes of the subscribed channel and pattern names.
    subscription_bytes: usize,
    /// Commands queued since `MULTI`.
    transaction: Option<Transaction>,
    /// Bytes charged to the memory budget for this session.
    charged: usize,
}

/// A transaction being queued.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct Transaction {
    queued: Vec<Request>,
    bytes: usize,
    /// A command failed its checks while queueing: `EXEC` runs nothing.
    failed: bool,
}

/// What one subscription costs in the budget: the name is held three
/// times (the session, the hub's subscriber and its index), plus the
/// nodes.
fn subscription_cost(name: &[u8]) -> usize {
    name.len().saturating_mul(3).saturating_add(96)
}

/// What one queued request costs in the budget.
fn request_cost(request: &Request) -> usize {
    request.args().iter().map(|argument| argument.len().saturating_add(24)).sum::<usize>().saturating_add(64)
}

impl Session {
    fn new(connection: ConnectionId, authenticated: bool) -> Session {
        Session {
            connection,
            protocol: ProtocolVersion::Resp2,
            authenticated,
            name: None,
            library_name: None,
            library_version: None,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            failed_auth: 0,
            next_auth_ms: 0,
            subscription_bytes: 0,
            transaction: None,
            charged: 0,
        }
    }

    /// Whether `MULTI` is open.
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    /// Bytes this session has charged to the memory budget.
    pub fn memory_bytes(&self) -> usize {
        self.charged
    }

    /// The connection.
    pub fn connection(&self) -> ConnectionId {
        self.connection
    }

    /// RESP2 or RESP3.
    pub fn protocol(&self) -> ProtocolVersion {
        self.protocol
    }

    /// Whether `AUTH` (or `HELLO ... AUTH`) succeeded, or none is needed.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The client name.
    pub fn name(&self) -> Option<&[u8]> {
        self.name.as_deref()
    }

    /// Subscribed channels.
    pub fn channels(&self) -> &BTreeSet<Vec<u8>> {
        &self.channels
    }

    /// Subscribed patterns.
    pub fn patterns(&self) -> &BTreeSet<Vec<u8>> {
        &self.patterns
    }

    /// Channels plus patterns.
    pub fn subscription_count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// Failed authentications in a row.
    pub fn failed_auth(&self) -> u32 {
        self.failed_auth
    }

    /// The earliest time the next authentication attempt is evaluated.
    pub fn next_auth_ms(&self) -> u64 {
        self.next_auth_ms
    }

    fn count(&self) -> i64 {
        i64::try_from(self.subscription_count()).unwrap_or(i64::MAX)
    }
}

/// Counters of the command half.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchStats {
    /// Jobs executed.
    pub commands: u64,
    /// Of those, passed to the backend.
    pub backend_commands: u64,
    /// Error replies sent (the first reply of a job being an error).
    pub error_replies: u64,
    /// Token comparisons, each made with [`constant_time_eq`].
    pub token_checks: u64,
    /// Failed authentications.
    pub auth_failures: u64,
    /// Authentication attempts refused unevaluated because the back-off
    /// would answer them only after the pre-auth deadline.
    pub auth_throttled: u64,
    /// Transactions run by `EXEC`.
    pub transactions: u64,
    /// Transactions refused by `EXEC` after a queueing error.
    pub transactions_aborted: u64,
    /// Commands refused because the memory budget or a per-client memory
    /// cap could not hold them.
    pub memory_refusals: u64,
}

/// How long a source's failures are remembered after its last one.
pub const AUTH_SOURCE_MEMORY_MS: u64 = 60_000;
/// Sources remembered at once (the oldest is forgotten first).
pub const AUTH_SOURCES: usize = 256;

#[derive(Clone, Copy, Debug)]
struct SourceRecord {
    failures: u32,
    next_ms: u64,
    last_failure_ms: u64,
}

/// Back-off of failed authentications across connections: per source
/// address (100 ms doubling to 2 s after each failure, forgotten a minute
/// after the last) and globally (failures spaced to at most
/// [`Config::auth_failures_per_second`]). An attempt is evaluated at the
/// latest of now and the times these allow, and its reply (success or
/// not) is held until then, so a client learns nothing sooner.
#[derive(Debug)]
pub struct AuthThrottle {
    sources: BTreeMap<IpAddress, SourceRecord>,
    global_next_ms: u64,
    spacing_ms: u64,
}

impl AuthThrottle {
    /// A throttle allowing `failures_per_second` failures overall.
    pub fn new(failures_per_second: u32) -> AuthThrottle {
        AuthThrottle { sources: BTreeMap::new(), global_next_ms: 0, spacing_ms: 1000 / u64::from(failures_per_second.max(1)) }
    }

    /// The earliest time an attempt from `peer` made at `now_ms` may be
    /// evaluated.
    pub fn earliest(&self, peer: Option<IpAddress>, now_ms: u64) -> u64 {
        let source = peer
            .and_then(|peer| self.sources.get(&peer))
            .filter(|record| now_ms < record.last_failure_ms.saturating_add(AUTH_SOURCE_MEMORY_MS))
            .map_or(0, |record| record.next_ms);
        now_ms.max(source).max(self.global_next_ms)
    }

    /// Records the outcome of an attempt evaluated at `evaluated_ms`.
    pub fn record(&mut self, peer: Option<IpAddress>, evaluated_ms: u64, success: bool) {
        if success {
            if let Some(peer) = peer {
                self.sources.remove(&peer);
            }
            return;
        }
        self.global_next_ms = self.global_next_ms.max(evaluated_ms).saturating_add(self.spacing_ms);
        let Some(peer) = peer else {
            return;
        };
        if !self.sources.contains_key(&peer) && self.sources.len() >= AUTH_SOURCES {
            let oldest = self.sources.iter().min_by_key(|(_, record)| record.last_failure_ms).map(|(address, _)| *address);
            if let Some(oldest) = oldest {
                self.sources.remove(&oldest);
            }
        }
        let record = self.sources.entry(peer).or_insert(SourceRecord { failures: 0, next_ms: 0, last_failure_ms: evaluated_ms });
        if evaluated_ms >= record.last_failure_ms.saturating_add(AUTH_SOURCE_MEMORY_MS) {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure_ms = evaluated_ms;
        record.next_ms = evaluated_ms.saturating_add(auth_delay_ms(record.failures));
    }

    /// Failures recorded for `peer` (within the memory time).
    pub fn source_failures(&self, peer: IpAddress) -> u32 {
        self.sources.get(&peer).map_or(0, |record| record.failures)
    }
}

/// The command half. See the module documentation.
#[derive(Debug)]
pub struct Dispatcher<B: Backend> {
    backend: B,
    /// Keyed by slot; a job of a new connection in the slot replaces the
    /// session, so there are never more than the server's slots.
    sessions: BTreeMap<u32, Session>,
    config: Config,
    memory: Arc<MemoryBudget>,
    throttle: AuthThrottle,
    stats: DispatchStats,
}

/// Whether a command acts on the transaction itself, or cannot be queued:
/// it runs at once even inside `MULTI`.
fn runs_inside_multi(command: SessionCommand) -> bool {
    matches!(command, SessionCommand::Multi | SessionCommand::Exec | SessionCommand::Discard | SessionCommand::Watch | SessionCommand::Quit)
}

/// The result of one job before encoding.
#[derive(Default)]
struct Outcome {
    replies: Vec<Reply>,
    close_after: bool,
    not_before_ms: Option<u64>,
    changes: Vec<SubscriptionChange>,
    shutdown: Option<i64>,
}

impl Outcome {
    fn reply(reply: Reply) -> Outcome {
        Outcome { replies: alloc::vec![reply], ..Outcome::default() }
    }
}

impl<B: Backend> Dispatcher<B> {
    /// A dispatcher over `backend`, with the subscription limit of
    /// `config`.
    pub fn new(backend: B, config: &Config) -> Dispatcher<B> {
        Dispatcher {
            backend,
            sessions: BTreeMap::new(),
            config: *config,
            memory: Arc::new(MemoryBudget::new(config.memory_limit_bytes, config.max_connections.saturating_add(1))),
            throttle: AuthThrottle::new(config.auth_failures_per_second),
            stats: DispatchStats::default(),
        }
    }

    /// Charges sessions to the server's budget
    /// ([`NetServer::memory`](crate::NetServer::memory)) and learns from
    /// it which connections ended. Call before the first job.
    pub fn set_memory_budget(&mut self, memory: Arc<MemoryBudget>) {
        for session in self.sessions.values_mut() {
            self.memory.release(session.charged);
            session.charged = 0;
        }
        self.memory = memory;
    }

    /// The memory budget.
    pub fn memory(&self) -> &MemoryBudget {
        &self.memory
    }

    /// Drops the sessions of connections that ended, giving their memory
    /// back. Call it whenever the thread wakes (the kernel does every
    /// 50 ms); [`Dispatcher::execute`] calls it too.
    pub fn reap(&mut self) {
        let memory = &self.memory;
        self.sessions.retain(|_, session| {
            let ended = memory.has_ended(session.connection);
            if ended {
                memory.release(session.charged);
                memory.set_session_bytes(session.connection.slot, 0);
            }
            !ended
        });
    }

    /// The configuration the dispatcher enforces.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Executes `job` and returns its completion for
    /// [`NetServer::complete`](crate::NetServer::complete). A job of a
    /// connection not seen before in its slot starts a fresh session.
    pub fn execute(&mut self, job: Job) -> Completion {
        let now_ms = self.backend.now_ms();
        let Job { connection, request, peer } = job;
        self.reap();
        let open_access = self.backend.auth_token().is_empty();
        let session = self.sessions.entry(connection.slot).or_insert_with(|| Session::new(connection, open_access));
        if session.connection != connection {
            self.memory.release(session.charged);
            *session = Session::new(connection, open_access);
        }
        self.stats.commands = self.stats.commands.saturating_add(1);
        let mut parts = Parts {
            backend: &mut self.backend,
            config: &self.config,
            memory: &self.memory,
            throttle: &mut self.throttle,
            stats: &mut self.stats,
            now_ms,
            peer,
        };
        let outcome = run_or_queue(&mut parts, session, &request);
        self.memory.set_session_bytes(connection.slot, session.charged);
        if outcome.replies.first().is_some_and(Reply::is_error) {
            self.stats.error_replies = self.stats.error_replies.saturating_add(1);
        }
        let mut bytes = Vec::new();
        for reply in &outcome.replies {
            reply.encode(session.protocol, &mut bytes);
        }
        Completion {
            connection,
            bytes,
            close_after: outcome.close_after,
            not_before_ms: outcome.not_before_ms,
            protocol: session.protocol,
            authenticated: session.authenticated,
            subscription_changes: outcome.changes,
            shutdown: outcome.shutdown,
        }
    }

    /// The session of `connection`, if it has sent a request.
    pub fn session(&self, connection: ConnectionId) -> Option<&Session> {
        self.sessions.get(&connection.slot).filter(|session| session.connection == connection)
    }

    /// Drops the session of a connection that ended (optional: a new
    /// connection in the slot replaces it anyway).
    pub fn forget(&mut self, connection: ConnectionId) {
        if self.session(connection).is_some() {
            self.sessions.remove(&connection.slot);
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, to change.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The counters.
    pub fn stats(&self) -> DispatchStats {
        self.stats
    }
}

/// The spec called `name` among `specs` (a copy of the registry's, in its
/// order), ignoring ASCII case.
fn find_spec<'a>(name: &[u8], specs: &'a [CommandSpec]) -> Option<&'a CommandSpec> {
    specs.iter().find(|spec| spec.name.as_bytes().eq_ignore_ascii_case(name))
}

/// A copy of every spec in the registry, in `COMMAND`'s order, taken so
/// that the replies are built outside the registry's lock.
fn registry_specs<B: Backend>(backend: &B) -> Vec<CommandSpec> {
    backend.with_registry(|registry| registry.specs().copied().collect())
}

/// What one job needs besides its session.
struct Parts<'a, B: Backend> {
    backend: &'a mut B,
    config: &'a Config,
    memory: &'a MemoryBudget,
    throttle: &'a mut AuthThrottle,
    stats: &'a mut DispatchStats,
    now_ms: u64,
    peer: Option<IpAddress>,
}

/// The checks every command passes before it runs or is queued: the
/// authentication gate, the command table (the one lookup of the
/// request's name), its grammar, subscribed mode. The entry found is what
/// runs.
fn check<B: Backend>(backend: &B, session: &Session, request: &Request) -> Result<Entry<B>, Reply> {
    let entry = backend.with_registry(|registry| registry.lookup(request.name()).copied());
    if !session.authenticated && !entry.is_some_and(|entry| entry.spec.has(CommandFlags::ALLOWED_BEFORE_AUTH)) {
        return Err(Reply::noauth());
    }
    let Some(entry) = entry else {
        return Err(Reply::unknown_command(request.name(), request.args_after_name()));
    };
    let spec = &entry.spec;
    // HELLO's own option parser already refuses what its grammar would,
    // with Redis's exact messages; for it the grammar is only the arity.
    let syntax = if matches!(entry.handler, Handler::Session(SessionCommand::Hello)) {
        if spec.check_arity(request.len()) { SyntaxCheck::Fits } else { SyntaxCheck::WrongArity }
    } else {
        spec.check_syntax(request.args())
    };
    match syntax {
        SyntaxCheck::Fits => {}
        SyntaxCheck::WrongArity => return Err(Reply::wrong_arity(spec.name)),
        SyntaxCheck::SyntaxError => return Err(Reply::error("ERR syntax error")),
        SyntaxCheck::UnknownSubcommand => {
            return Err(Reply::unknown_subcommand(spec.name, request.arg(1).unwrap_or_default()));
        }
    }
    if session.protocol == ProtocolVersion::Resp2 && session.subscription_count() > 0 && !spec.has(CommandFlags::ALLOWED_WHILE_SUBSCRIBED) {
        return Err(Reply::not_allowed_while_subscribed(spec.name));
    }
    Ok(entry)
}

/// Runs `request`, or queues it when `MULTI` is open.
fn run_or_queue<B: Backend>(parts: &mut Parts<'_, B>, session: &mut Session, request: &Request) -> Outcome {
    let entry = match check(parts.backend, session, request) {
        Ok(entry) => entry,
        Err(reply) => {
            if let Some(transaction) = session.transaction.as_mut() {
                transaction.failed = true;
            }
            return Outcome::reply(reply);
        }
    };
    let Some(transaction) = session.transaction.as_mut() else {
        return run(parts, session, request, entry);
    };
    if let Handler::Session(command) = entry.handler
        && runs_inside_multi(command)
    {
        return run(parts, session, request, entry);
    }
    if entry.spec.has(CommandFlags::PUBSUB) || matches!(entry.handler, Handler::Session(SessionCommand::Auth | SessionCommand::Hello)) {
        transaction.failed = true;
        let mut text = String::from("ERR Command not allowed inside a transaction: '");
        text.push_str(entry.spec.name);
        text.push('\'');
        return Outcome::reply(Reply::Error(text));
    }
    let cost = request_cost(request);
    // The queue's growth is reserved fallibly: a refused allocation is this
    // client's error, never the appliance's.
    if transaction.bytes.saturating_add(cost) > parts.config.max_transaction_bytes
        || transaction.queued.try_reserve(1).is_err()
        || !parts.memory.try_charge(cost)
    {
        transaction.failed = true;
        parts.stats.memory_refusals = parts.stats.memory_refusals.saturating_add(1);
        return Outcome::reply(Reply::error(
            "OOM transaction too large: max_transaction_bytes or the control plane's memory budget reached",
        ));
    }
    transaction.bytes = transaction.bytes.saturating_add(cost);
    transaction.queued.push(request.clone());
    session.charged = session.charged.saturating_add(cost);
    Outcome::reply(Reply::simple("QUEUED"))
}

/// Ends the open transaction, giving its memory back.
fn take_transaction(session: &mut Session, memory: &MemoryBudget) -> Option<Transaction> {
    let transaction = session.transaction.take()?;
    memory.release(transaction.bytes);
    session.charged = session.charged.saturating_sub(transaction.bytes);
    Some(transaction)
}

/// `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`.
fn transaction_command<B: Backend>(parts: &mut Parts<'_, B>, session: &mut Session, command: SessionCommand) -> Outcome {
    match command {
        SessionCommand::Multi if session.transaction.is_some() => Outcome::reply(Reply::error("ERR MULTI calls can not be nested")),
        SessionCommand::Multi => {
            session.transaction = Some(Transaction::default());
            Outcome::reply(Reply::ok())
        }
        SessionCommand::Discard => match take_transaction(session, parts.memory) {
            Some(_) => Outcome::reply(Reply::ok()),
            None => Outcome::reply(Reply::error("ERR DISCARD without MULTI")),
        },
        SessionCommand::Exec => {
            let Some(transaction) = take_transaction(session, parts.memory) else {
                return Outcome::reply(Reply::error("ERR EXEC without MULTI"));
            };
            if transaction.failed {
                parts.stats.transactions_aborted = parts.stats.transactions_aborted.saturating_add(1);
                return Outcome::reply(Reply::error("EXECABORT Transaction discarded because of previous errors."));
            }
            parts.stats.transactions = parts.stats.transactions.saturating_add(1);
            let mut combined = Outcome::default();
            let mut replies = Vec::with_capacity(transaction.queued.len());
            for request in &transaction.queued {
                // Checked when queued; checked again, as the session may
                // have changed (e.g. an application command went away).
                let outcome = match check(parts.backend, session, request) {
                    Ok(entry) => run(parts, session, request, entry),
                    Err(reply) => Outcome::reply(reply),
                };
                let mut outcome_replies = outcome.replies.into_iter();
                replies.push(outcome_replies.next().unwrap_or(Reply::Null));
                combined.close_after |= outcome.close_after;
                combined.shutdown = combined.shutdown.or(outcome.shutdown);
                combined.changes.extend(outcome.changes);
            }
            combined.replies.push(Reply::Array(replies));
            combined
        }
        SessionCommand::Watch if session.transaction.is_some() => Outcome::reply(Reply::error("ERR WATCH inside MULTI is not allowed")),
        SessionCommand::Watch => {
            Outcome::reply(Reply::error("ERR WATCH is not supported: MULTI/EXEC runs its commands with no other client's in between"))
        }
        _ => Outcome::reply(Reply::ok()),
    }
}

/// Runs the command of `entry`, which passed [`check`].
fn run<B: Backend>(parts: &mut Parts<'_, B>, session: &mut Session, request: &Request, entry: Entry<B>) -> Outcome {
    let backend = &mut *parts.backend;
    let stats = &mut *parts.stats;
    let now_ms = parts.now_ms;
    let command = match entry.handler {
        Handler::Session(command) => command,
        Handler::Backend(handler) => {
            stats.backend_commands = stats.backend_commands.saturating_add(1);
            let mut context = CommandContext { session, shutdown: None };
            let reply = handler(backend, &mut context, request);
            return context.outcome(reply);
        }
        Handler::Function(handler) => {
            stats.backend_commands = stats.backend_commands.saturating_add(1);
            let mut context = CommandContext { session, shutdown: None };
            let reply = handler(&mut context, request);
            return context.outcome(reply);
        }
    };
    // `CLIENT LIST` needs the connections, which only the backend (the
    // network glue) sees; the other CLIENT subcommands are the session's.
    if command == SessionCommand::Client && request.arg(1).is_some_and(|sub| sub.eq_ignore_ascii_case(b"LIST")) {
        stats.backend_commands = stats.backend_commands.saturating_add(1);
        return Outcome::reply(backend.client_list());
    }
    let token = backend.auth_token();
    let mut gate = AuthGate { throttle: &mut *parts.throttle, peer: parts.peer, timeout_ms: parts.config.auth_timeout_ms };
    match command {
        SessionCommand::Ping => Outcome::reply(ping(session, request)),
        SessionCommand::Echo => Outcome::reply(Reply::bulk(request.arg(1).unwrap_or_default())),
        SessionCommand::Auth => auth(session, request, token, now_ms, stats, &mut gate),
        SessionCommand::Hello => hello(session, request, token, now_ms, stats, &mut gate),
        SessionCommand::Multi | SessionCommand::Exec | SessionCommand::Discard | SessionCommand::Watch | SessionCommand::Unwatch => {
            transaction_command(parts, session, command)
        }
        SessionCommand::Quit => Outcome { close_after: true, ..Outcome::reply(Reply::ok()) },
        SessionCommand::Command => Outcome::reply(command_command(request, &registry_specs(backend))),
        SessionCommand::Help => Outcome::reply(help(request, &registry_specs(backend))),
        SessionCommand::Client => Outcome::reply(client(session, request)),
        SessionCommand::Config => Outcome::reply(config(request, parts.config)),
        SessionCommand::Subscribe => subscribe(session, request, Kind::Channel, parts.config, parts.memory, stats),
        SessionCommand::PatternSubscribe => subscribe(session, request, Kind::Pattern, parts.config, parts.memory, stats),
        SessionCommand::Unsubscribe => unsubscribe(session, request, Kind::Channel, parts.memory),
        SessionCommand::PatternUnsubscribe => unsubscribe(session, request, Kind::Pattern, parts.memory),
    }
}

fn ping(session: &Session, request: &Request) -> Reply {
    if request.len() > 2 {
        return Reply::wrong_arity("ping");
    }
    let message = request.arg(1);
    if session.protocol == ProtocolVersion::Resp2 && session.subscription_count() > 0 {
        // Redis's answer in RESP2 subscribed mode: a two-element array.
        return Reply::Array(alloc::vec![Reply::bulk_str("pong"), Reply::bulk(message.unwrap_or_default()),]);
    }
    match message {
        Some(message) => Reply::bulk(message),
        None => Reply::pong(),
    }
}

/// The delay before the attempt after `failures` failed ones: 100 ms,
/// doubling, at most 2 s.
pub fn auth_delay_ms(failures: u32) -> u64 {
    if failures == 0 {
        return 0;
    }
    let shift = (failures - 1).min(16);
    AUTH_DELAY_FIRST_MS.saturating_mul(1u64 << shift).min(AUTH_DELAY_MAX_MS)
}

/// One authentication attempt: evaluated at the later of now and the
/// session's next allowed time, which the reply is held until. The user
/// name and the token are both checked before either decides, and the
/// token with [`constant_time_eq`].
/// The cross-connection back-off an authentication attempt goes through.
struct AuthGate<'a> {
    throttle: &'a mut AuthThrottle,
    peer: Option<IpAddress>,
    /// The pre-auth deadline: an attempt that could only be answered
    /// later is refused unevaluated.
    timeout_ms: u64,
}

fn attempt_auth(
    session: &mut Session,
    user: Option<&[u8]>,
    password: &[u8],
    token: &[u8],
    now_ms: u64,
    stats: &mut DispatchStats,
    gate: &mut AuthGate<'_>,
) -> Outcome {
    if token.is_empty() {
        // No token configured: the default user needs no password.
        let reply = if user.is_none_or(|user| user == b"default") {
            session.authenticated = true;
            Reply::ok()
        } else {
            Reply::wrongpass()
        };
        return Outcome::reply(reply);
    }
    let evaluated_ms = gate.throttle.earliest(gate.peer, now_ms).max(session.next_auth_ms);
    if !session.authenticated && evaluated_ms.saturating_sub(now_ms) >= gate.timeout_ms {
        // Not a guess: the answer could not arrive before the deadline.
        stats.auth_throttled = stats.auth_throttled.saturating_add(1);
        return Outcome::reply(Reply::error("ERR too many failed authentication attempts; try again later"));
    }
    stats.token_checks = stats.token_checks.saturating_add(1);
    let token_matches = constant_time_eq(token, password);
    let user_matches = user.is_none_or(|user| user == b"default");
    let success = token_matches & user_matches;
    gate.throttle.record(gate.peer, evaluated_ms, success);
    let reply = if success {
        session.authenticated = true;
        session.failed_auth = 0;
        session.next_auth_ms = evaluated_ms;
        Reply::ok()
    } else {
        session.failed_auth = session.failed_auth.saturating_add(1);
        session.next_auth_ms = evaluated_ms.saturating_add(auth_delay_ms(session.failed_auth));
        stats.auth_failures = stats.auth_failures.saturating_add(1);
        Reply::wrongpass()
    };
    Outcome { not_before_ms: (evaluated_ms > now_ms).then_some(evaluated_ms), ..Outcome::reply(reply) }
}

fn auth(
    session: &mut Session,
    request: &Request,
    token: &[u8],
    now_ms: u64,
    stats: &mut DispatchStats,
    gate: &mut AuthGate<'_>,
) -> Outcome {
    let (user, password) = match (request.len(), request.arg(1), request.arg(2)) {
        (2, Some(password), None) => (None, password),
        (3, Some(user), Some(password)) => (Some(user), password),
        _ => return Outcome::reply(Reply::error("ERR syntax error")),
    };
    if token.is_empty() && user.is_none() {
        return Outcome::reply(Reply::error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        ));
    }
    attempt_auth(session, user, password, token, now_ms, stats, gate)
}

fn hello(
    session: &mut Session,
    request: &Request,
    token: &[u8],
    now_ms: u64,
    stats: &mut DispatchStats,
    gate: &mut AuthGate<'_>,
) -> Outcome {
    let mut protocol = None;
    if let Some(version) = request.arg(1) {
        let Some(number) = parse_i64(version) else {
            return Outcome::reply(Reply::error("ERR Protocol version is not an integer or out of range"));
        };
        match ProtocolVersion::from_number(number) {
            Some(version) => protocol = Some(version),
            None => {
                return Outcome::reply(Reply::error("NOPROTO unsupported protocol version"));
            }
        }
    }
    let mut credentials = None;
    let mut name = None;
    let mut index = 2;
    while let Some(option) = request.arg(index) {
        let remaining = request.len() - index - 1;
        if option.eq_ignore_ascii_case(b"AUTH") && remaining >= 2 {
            credentials = request.arg(index + 1).zip(request.arg(index + 2));
            index += 3;
        } else if option.eq_ignore_ascii_case(b"SETNAME") && remaining >= 1 {
            let Some(candidate) = request.arg(index + 1) else {
                break;
            };
            if !valid_name(candidate) {
                return Outcome::reply(invalid_name_reply());
            }
            name = Some(candidate);
            index += 2;
        } else {
            let mut text = String::from("ERR Syntax error in option '");
            text.push_str(&String::from_utf8_lossy(option));
            text.push('\'');
            return Outcome::reply(Reply::Error(text));
        }
    }
    let mut not_before_ms = None;
    if let Some((user, password)) = credentials {
        let outcome = attempt_auth(session, Some(user), password, token, now_ms, stats, gate);
        if outcome.replies.first().is_some_and(Reply::is_error) {
            return outcome;
        }
        not_before_ms = outcome.not_before_ms;
    }
    if !session.authenticated {
        return Outcome::reply(Reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time",
        ));
    }
    if let Some(name) = name {
        session.name = Some(name.to_vec());
    }
    if let Some(protocol) = protocol {
        session.protocol = protocol;
    }
    let client_id = i64::try_from(session.connection.client_id()).unwrap_or(i64::MAX);
    let reply = Reply::Map(alloc::vec![
        (Reply::bulk_str("server"), Reply::bulk_str("rtedge")),
        (Reply::bulk_str("version"), Reply::bulk_str(env!("CARGO_PKG_VERSION"))),
        (Reply::bulk_str("proto"), Reply::Integer(session.protocol.number())),
        (Reply::bulk_str("id"), Reply::Integer(client_id)),
        (Reply::bulk_str("mode"), Reply::bulk_str("appliance")),
        (Reply::bulk_str("role"), Reply::bulk_str("master")),
        (Reply::bulk_str("modules"), Reply::Array(Vec::new())),
    ]);
    Outcome { not_before_ms, ..Outcome::reply(reply) }
}

/// Redis's rule for client names: printable ASCII without spaces.
fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|&byte| (b'!'..=b'~').contains(&byte))
}

fn invalid_name_reply() -> Reply {
    Reply::error("ERR Client names cannot contain spaces, newlines or special characters.")
}

fn subcommand_arity(container: &str, subcommand: &[u8]) -> Reply {
    let mut name = String::from(container);
    name.push('|');
    name.push_str(&String::from_utf8_lossy(subcommand).to_ascii_lowercase());
    Reply::wrong_arity(&name)
}

fn command_command(request: &Request, specs: &[CommandSpec]) -> Reply {
    let Some(subcommand) = request.arg(1) else {
        return Reply::Array(specs.iter().map(command::info_reply).collect());
    };
    let names = request.args().get(2..).unwrap_or_default();
    let upper = subcommand.to_ascii_uppercase();
    match upper.as_slice() {
        b"COUNT" if names.is_empty() => Reply::Integer(i64::try_from(specs.len()).unwrap_or(i64::MAX)),
        b"COUNT" => subcommand_arity("command", subcommand),
        b"LIST" if names.is_empty() => Reply::Array(specs.iter().map(|spec| Reply::bulk_str(spec.name)).collect()),
        b"LIST" => subcommand_arity("command", subcommand),
        b"DOCS" if names.is_empty() => command::docs_reply(specs),
        // As Redis: unknown names are left out.
        b"DOCS" => command::docs_reply(names.iter().filter_map(|name| find_spec(name, specs))),
        b"INFO" if names.is_empty() => Reply::Array(specs.iter().map(command::info_reply).collect()),
        b"INFO" => Reply::Array(names.iter().map(|name| find_spec(name, specs).map_or(Reply::NullArray, command::info_reply)).collect()),
        b"HELP" => Reply::Array(
            [
                "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "(no subcommand)",
                "    Return details about all commands.",
                "COUNT",
                "    Return the total number of commands.",
                "LIST",
                "    Return the names of all commands.",
                "DOCS [<command-name> ...]",
                "    Return documentation details about multiple commands.",
                "INFO [<command-name> ...]",
                "    Return details about multiple commands.",
                "HELP",
                "    Print this help.",
            ]
            .into_iter()
            .map(Reply::simple)
            .collect(),
        ),
        _ => Reply::unknown_subcommand("command", subcommand),
    }
}

fn help(request: &Request, specs: &[CommandSpec]) -> Reply {
    match request.arg(1) {
        None => command::help_reply(specs),
        Some(_) if request.len() > 2 => Reply::wrong_arity("help"),
        Some(name) => match find_spec(name, specs) {
            Some(spec) => command::help_reply(core::iter::once(spec)),
            None => {
                let mut text = String::from("ERR no such command '");
                text.push_str(&String::from_utf8_lossy(name));
                text.push('\'');
                Reply::Error(text)
            }
        },
    }
}

fn client(session: &mut Session, request: &Request) -> Reply {
    let Some(subcommand) = request.arg(1) else {
        return Reply::wrong_arity("client");
    };
    let argc = request.len();
    let upper = subcommand.to_ascii_uppercase();
    match upper.as_slice() {
        b"SETNAME" if argc == 3 => {
            let name = request.arg(2).unwrap_or_default();
            if !valid_name(name) {
                return invalid_name_reply();
            }
            // As Redis: an empty name clears it.
            session.name = (!name.is_empty()).then(|| name.to_vec());
            Reply::ok()
        }
        b"GETNAME" if argc == 2 => match &session.name {
            Some(name) => Reply::bulk(name),
            None => Reply::Null,
        },
        b"ID" if argc == 2 => Reply::Integer(i64::try_from(session.connection.client_id()).unwrap_or(i64::MAX)),
        b"SETINFO" if argc == 4 => {
            let attribute = request.arg(2).unwrap_or_default();
            let value = request.arg(3).unwrap_or_default();
            let upper = attribute.to_ascii_uppercase();
            let (field, label) = match upper.as_slice() {
                b"LIB-NAME" => (&mut session.library_name, "lib-name"),
                b"LIB-VER" => (&mut session.library_version, "lib-ver"),
                _ => {
                    let mut text = String::from("ERR Unrecognized option '");
                    text.push_str(&String::from_utf8_lossy(attribute));
                    text.push('\'');
                    return Reply::Error(text);
                }
            };
            if !valid_name(value) && !value.is_empty() {
                let mut text = String::from("ERR ");
                text.push_str(label);
                text.push_str(" cannot contain spaces, newlines or special characters.");
                return Reply::Error(text);
            }
            *field = (!value.is_empty()).then(|| value.to_vec());
            Reply::ok()
        }
        b"INFO" if argc == 2 => Reply::Verbatim { format: *b"txt", text: client_info(session) },
        b"HELP" if argc == 2 => Reply::Array(
            [
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GETNAME",
                "    Return the name of the current connection.",
                "ID",
                "    Return the ID of the current connection.",
                "INFO",
                "    Return information about the current client connection.",
                "LIST",
                "    Return information about every open connection.",
                "SETINFO <option> <value>",
                "    Set client meta attr. Options are: LIB-NAME, LIB-VER.",
                "SETNAME <name>",
                "    Assign the name <name> to the current connection.",
                "HELP",
                "    Print this help.",
            ]
            .into_iter()
            .map(Reply::simple)
            .collect(),
        ),
        b"SETNAME" | b"GETNAME" | b"ID" | b"SETINFO" | b"INFO" | b"HELP" => subcommand_arity("client", subcommand),
        _ => Reply::unknown_subcommand("client", subcommand),
    }
}

/// `CLIENT INFO`: Redis's `key=value` line, with the fields this server
/// knows.
fn client_info(session: &Session) -> String {
    let mut flags = String::new();
    if session.subscription_count() > 0 {
        flags.push('P');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    let text = |bytes: &Option<Vec<u8>>| bytes.as_deref().map(|bytes| String::from_utf8_lossy(bytes).into_owned()).unwrap_or_default();
    let mut line = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        line,
        "id={} name={} db=0 sub={} psub={} flags={} user=default resp={} lib-name={} lib-ver={}",
        session.connection.client_id(),
        text(&session.name),
        session.channels.len(),
        session.patterns.len(),
        flags,
        session.protocol.number(),
        text(&session.library_name),
        text(&session.library_version),
    );
    line
}

/// The only parameters `CONFIG GET` knows, for `redis-benchmark`.
const CONFIG_PARAMETERS: [(&str, &str); 2] = [("save", ""), ("appendonly", "no")];

/// `CONFIG GET pattern ...`: `save` and `appendonly` for
/// `redis-benchmark`, then every limit of [`Config::parameters`].
fn config(request: &Request, limits: &Config) -> Reply {
    let subcommand = request.arg(1).unwrap_or_default();
    if !subcommand.eq_ignore_ascii_case(b"GET") {
        return Reply::unknown_subcommand("config", subcommand);
    }
    let patterns = request.args().get(2..).unwrap_or_default();
    let wanted = |name: &str| patterns.iter().any(|pattern| glob_match(pattern, name.as_bytes(), true));
    let mut pairs: Vec<(Reply, Reply)> = CONFIG_PARAMETERS
        .iter()
        .filter(|(name, _)| wanted(name))
        .map(|(name, value)| (Reply::bulk_str(name), Reply::bulk_str(value)))
        .collect();
    let mut number = String::new();
    for (name, value) in limits.parameters() {
        if wanted(name) {
            number.clear();
            let _ = write!(number, "{value}");
            pairs.push((Reply::bulk_str(name), Reply::bulk_str(&number)));
        }
    }
    Reply::Map(pairs)
}

#[derive(Clone, Copy)]
enum Kind {
    Channel,
    Pattern,
}

impl Kind {
    fn set(self, session: &mut Session) -> &mut BTreeSet<Vec<u8>> {
        match self {
            Kind::Channel => &mut session.channels,
            Kind::Pattern => &mut session.patterns,
        }
    }

    fn subscribe_word(self) -> &'static str {
        match self {
            Kind::Channel => "subscribe",
            Kind::Pattern => "psubscribe",
        }
    }

    fn unsubscribe_word(self) -> &'static str {
        match self {
            Kind::Channel => "unsubscribe",
            Kind::Pattern => "punsubscribe",
        }
    }

    fn subscribe_change(self, name: Vec<u8>) -> SubscriptionChange {
        match self {
            Kind::Channel => SubscriptionChange::Subscribe(name),
            Kind::Pattern => SubscriptionChange::PatternSubscribe(name),
        }
    }

    fn unsubscribe_change(self, name: Vec<u8>) -> SubscriptionChange {
        match self {
            Kind::Channel => SubscriptionChange::Unsubscribe(name),
            Kind::Pattern => SubscriptionChange::PatternUnsubscribe(name),
        }
    }
}

fn subscribe(
    session: &mut Session,
    request: &Request,
    kind: Kind,
    config: &Config,
    memory: &MemoryBudget,
    stats: &mut DispatchStats,
) -> Outcome {
    let limit = config.max_subscriptions_per_client;
    let names = request.args_after_name();
    let fresh: BTreeSet<&[u8]> = names.iter().map(Vec::as_slice).filter(|name| !kind.set(session).contains(*name)).collect();
    if session.subscription_count().saturating_add(fresh.len()) > limit {
        let mut text = String::new();
        let _ = write!(text, "ERR maximum number of subscriptions per client ({limit}) reached");
        return Outcome::reply(Reply::Error(text));
    }
    let fresh_bytes: usize = fresh.iter().map(|name| name.len()).sum();
    let cost: usize = fresh.iter().map(|name| subscription_cost(name)).sum();
    let byte_limit = config.max_subscription_bytes_per_client;
    if session.subscription_bytes.saturating_add(fresh_bytes) > byte_limit {
        stats.memory_refusals = stats.memory_refusals.saturating_add(1);
        let mut text = String::new();
        let _ = write!(text, "ERR maximum bytes of subscription names per client ({byte_limit}) reached");
        return Outcome::reply(Reply::Error(text));
    }
    if !memory.try_charge(cost) {
        stats.memory_refusals = stats.memory_refusals.saturating_add(1);
        return Outcome::reply(Reply::error("OOM command not allowed: the control plane's memory budget is exhausted"));
    }
    session.subscription_bytes = session.subscription_bytes.saturating_add(fresh_bytes);
    session.charged = session.charged.saturating_add(cost);
    let mut outcome = Outcome::default();
    for name in names {
        if kind.set(session).insert(name.clone()) {
            outcome.changes.push(kind.subscribe_change(name.clone()));
        }
        outcome.replies.push(Reply::subscription(kind.subscribe_word(), name, session.count()));
    }
    outcome
}

fn unsubscribe(session: &mut Session, request: &Request, kind: Kind, memory: &MemoryBudget) -> Outcome {
    let names: Vec<Vec<u8>> = match request.args_after_name() {
        [] => kind.set(session).iter().cloned().collect(),
        names => names.to_vec(),
    };
    let mut outcome = Outcome::default();
    if names.is_empty() {
        // Redis answers an unsubscribe from nothing with a null name.
        outcome.replies.push(Reply::Push(alloc::vec![
            Reply::bulk_str(kind.unsubscribe_word()),
            Reply::Null,
            Reply::Integer(session.count()),
        ]));
        return outcome;
    }
    for name in names {
        if kind.set(session).remove(&name) {
            let cost = subscription_cost(&name);
            memory.release(cost);
            session.charged = session.charged.saturating_sub(cost);
            session.subscription_bytes = session.subscription_bytes.saturating_sub(name.len());
            outcome.changes.push(kind.unsubscribe_change(name.clone()));
        }
        outcome.replies.push(Reply::subscription(kind.unsubscribe_word(), &name, session.count()));
    }
    outcome
}
