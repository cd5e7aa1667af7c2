//! Shared by the test files: a fake backend, a deterministic random
//! generator, and a harness that runs the server and real smoltcp TCP
//! clients in one interface over `smoltcp::phy::Loopback`.
//!
//! Two clocks: the server's `now` (also the backend's, so AUTH delays and
//! the idle timeout are measured on it) moves only when a test calls
//! `advance`; the interface's clock moves 1 ms per step so that TCP's
//! delayed ACKs fire, and never jumps, so TCP timers never expire.

#![allow(dead_code, reason = "each test file uses a different part")]
#![allow(clippy::unwrap_used, reason = "test scaffolding: a failure is a test failure")]

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

use rtedge_control::{Backend, CommandContext, Completion, Config, Dispatcher, Handler, Job, NetServer, Registry};
use rtedge_proto::util::parse_i64;
use rtedge_proto::{CommandFlags, CommandSpec, Reply, Request, Scalar, ToReply, command};
use smoltcp::iface::{Config as InterfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Loopback, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

pub const TOKEN: &[u8] = b"s3cret";

/// Words the fuzzer and the property tests build commands from: every
/// command name the dispatcher or the fake backend knows, keys, numbers,
/// the token, and words that are none of those.
pub const WORDS: &[&str] = &[
    "PING",
    "ECHO",
    "AUTH",
    "HELLO",
    "QUIT",
    "GET",
    "SET",
    "MGET",
    "INFO",
    "SHUTDOWN",
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "UNWATCH",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "UNSUBSCRIBE",
    "CLIENT",
    "COMMAND",
    "CONFIG",
    "HELP",
    "KILL",
    "DEMO.ADD",
    "counter",
    "flag",
    "3",
    "s3cret",
    "default",
    "GETNAME",
    "SETNAME",
    "DOCS",
    "*",
    "x",
];

pub static APP_COMMANDS: [CommandSpec; 1] =
    [CommandSpec::new("demo.add", 3, CommandFlags::WRITE, "app", "Adds two integers (an application command).", "DEMO.ADD a b")];

pub struct Static {
    pub name: &'static str,
    pub value: Scalar,
    pub writable: bool,
}

/// Shared statics with types, a fake THREADS table, SHUTDOWN, INFO and
/// one application command, all in the backend's command registry; the
/// other built-in commands are bound to a handler that answers "not
/// implemented here".
pub struct FakeBackend {
    pub clock: Rc<Cell<u64>>,
    pub token: Vec<u8>,
    pub statics: Vec<Static>,
    pub executed: Vec<Vec<u8>>,
    pub registry: Registry<FakeBackend>,
    /// Calls of `with_registry`: each request's name is looked up once.
    pub registry_reads: Cell<usize>,
}

impl FakeBackend {
    pub fn new(clock: Rc<Cell<u64>>, token: &[u8]) -> FakeBackend {
        let mut registry = Registry::with_session_commands();
        for spec in command::all() {
            // The session commands are bound already.
            let _ = registry.register_builtin(spec.name, Handler::Backend(FakeBackend::execute));
        }
        for spec in &APP_COMMANDS {
            registry.register(*spec, Handler::Backend(FakeBackend::execute)).unwrap();
        }
        FakeBackend {
            clock,
            token: token.to_vec(),
            statics: vec![
                Static { name: "counter", value: Scalar::Integer(0), writable: true },
                Static { name: "flag", value: Scalar::Bool(true), writable: true },
                Static { name: "ratio", value: Scalar::Float(0.5), writable: false },
            ],
            executed: Vec::new(),
            registry,
            registry_reads: Cell::new(0),
        }
    }

    fn execute(&mut self, context: &mut CommandContext<'_>, request: &Request) -> Reply {
        self.executed.push(request.name_upper());
        let arg = |index| request.arg(index).unwrap_or_default();
        match request.name_upper().as_slice() {
            b"GET" => self.statics.iter().find(|entry| entry.name.as_bytes() == arg(1)).map_or(Reply::Null, |entry| entry.value.to_reply()),
            b"SET" => {
                let Some(entry) = self.statics.iter_mut().find(|entry| entry.name.as_bytes() == arg(1)) else {
                    return Reply::Error(format!("ERR no such key '{}'", text(arg(1))));
                };
                if !entry.writable {
                    return Reply::Error(format!("ERR key '{}' is read-only", entry.name));
                }
                match Scalar::parse(entry.value.scalar_type(), arg(2)) {
                    Ok(value) => {
                        entry.value = value;
                        Reply::ok()
                    }
                    Err(error) => error.to_reply(),
                }
            }
            b"THREADS" => Reply::Array(vec![Reply::Map(vec![
                (Reply::bulk_str("id"), Reply::Integer(0)),
                (Reply::bulk_str("name"), Reply::bulk_str("idle")),
                (Reply::bulk_str("kind"), Reply::bulk_str("idle")),
                (Reply::bulk_str("priority"), Reply::Integer(-1)),
                (Reply::bulk_str("state"), Reply::bulk_str("running")),
                (Reply::bulk_str("runtime_ns"), Reply::Integer(1500)),
            ])]),
            b"SHUTDOWN" => {
                let code = request.arg(1).and_then(parse_i64).unwrap_or(0);
                context.request_shutdown(code);
                Reply::ok()
            }
            b"INFO" => Reply::bulk_str("# Server\r\nrtedge_version:0.1.0\r\n"),
            b"DEMO.ADD" => match (parse_i64(arg(1)), parse_i64(arg(2))) {
                (Some(a), Some(b)) => Reply::Integer(a.wrapping_add(b)),
                _ => Reply::error("ERR value is not an integer or out of range"),
            },
            _ => Reply::error("ERR not implemented here"),
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Backend for FakeBackend {
    fn with_registry<R>(&self, reader: impl FnOnce(&Registry<FakeBackend>) -> R) -> R {
        self.registry_reads.set(self.registry_reads.get() + 1);
        reader(&self.registry)
    }

    fn auth_token(&self) -> &[u8] {
        &self.token
    }

    fn client_list(&mut self) -> Reply {
        self.executed.push(b"CLIENT".to_vec());
        Reply::error("ERR not implemented here")
    }

    fn now_ms(&self) -> u64 {
        self.clock.get()
    }
}

/// Marsaglia's xorshift64*.
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Random {
        Random(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }

    pub fn bytes(&mut self, length: usize) -> Vec<u8> {
        (0..length).map(|_| self.next_u64() as u8).collect()
    }

    /// Random bytes, fewer than `bound` of them.
    pub fn bytes_below(&mut self, bound: usize) -> Vec<u8> {
        let length = self.below(bound);
        self.bytes(length)
    }
}

/// A RESP multibulk, as clients send.
pub fn command(args: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    rtedge_proto::request::encode_command(args, &mut out);
    out
}

pub struct Client {
    pub handle: SocketHandle,
    pub received: Vec<u8>,
    pub outgoing: VecDeque<u8>,
    /// A client that stops reading lets its receive window fill.
    pub reading: bool,
}

impl Client {
    /// A client with nothing sent or received yet, reading.
    pub fn new(handle: SocketHandle) -> Client {
        Client { handle, received: Vec::new(), outgoing: VecDeque::new(), reading: true }
    }

    /// Moves what the client has to send into its socket, as far as the
    /// socket takes it, and (while it reads) what arrived out of it.
    pub fn pump(&mut self, sockets: &mut SocketSet<'static>) {
        let socket = sockets.get_mut::<tcp::Socket>(self.handle);
        while !self.outgoing.is_empty() && socket.can_send() {
            let (front, _) = self.outgoing.as_slices();
            let sent = socket.send_slice(front).unwrap_or(0);
            if sent == 0 {
                break;
            }
            self.outgoing.drain(..sent);
        }
        while self.reading && socket.can_recv() {
            let data = socket.recv(|data| (data.len(), data.to_vec())).unwrap_or_default();
            if data.is_empty() {
                break;
            }
            self.received.extend_from_slice(&data);
        }
    }
}

pub type ClientIndex = usize;

pub struct Harness {
    pub clock: Rc<Cell<u64>>,
    net_ms: i64,
    device: Loopback,
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    pub server: NetServer,
    pub dispatcher: Dispatcher<FakeBackend>,
    pub clients: Vec<Client>,
    /// When true, jobs are kept in `held_jobs` instead of being executed.
    pub hold_jobs: bool,
    pub held_jobs: Vec<Job>,
    /// Completions the harness delivered, for tests that inspect them.
    pub completions: Vec<Completion>,
    next_port: u16,
    pub client_rx_bytes: usize,
    pub client_tx_bytes: usize,
    port: u16,
}

impl Harness {
    pub fn new(config: Config) -> Harness {
        Harness::with_token(config, TOKEN)
    }

    pub fn with_token(config: Config, token: &[u8]) -> Harness {
        let clock = Rc::new(Cell::new(0));
        let mut device = Loopback::new(Medium::Ip);
        let mut iface = Interface::new(InterfaceConfig::new(HardwareAddress::Ip), &mut device, Instant::from_millis(0));
        iface.update_ip_addrs(|addresses| {
            addresses.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8)).unwrap();
        });
        let mut sockets = SocketSet::new(Vec::new());
        let mut server = NetServer::new(config, &mut sockets).unwrap();
        server.set_auth_required(!token.is_empty());
        let mut dispatcher = Dispatcher::new(FakeBackend::new(clock.clone(), token), &config);
        dispatcher.set_memory_budget(server.memory());
        Harness {
            clock,
            net_ms: 0,
            device,
            iface,
            sockets,
            server,
            dispatcher,
            clients: Vec::new(),
            hold_jobs: false,
            held_jobs: Vec::new(),
            completions: Vec::new(),
            next_port: 40_000,
            client_rx_bytes: 64 * 1024,
            client_tx_bytes: 64 * 1024,
            port: config.port,
        }
    }

    pub fn now(&self) -> u64 {
        self.clock.get()
    }

    /// Moves the server's clock.
    pub fn advance(&mut self, ms: u64) {
        self.clock.set(self.clock.get() + ms);
    }

    /// Opens a client connection and lets the handshake finish.
    pub fn connect(&mut self) -> ClientIndex {
        let mut socket =
            tcp::Socket::new(tcp::SocketBuffer::new(vec![0; self.client_rx_bytes]), tcp::SocketBuffer::new(vec![0; self.client_tx_bytes]));
        socket.set_nagle_enabled(false);
        let local_port = self.next_port;
        self.next_port = if self.next_port >= 60_000 { 40_000 } else { self.next_port + 1 };
        socket.connect(self.iface.context(), (IpAddress::v4(127, 0, 0, 1), self.port), local_port).unwrap();
        let handle = self.sockets.add(socket);
        self.clients.push(Client::new(handle));
        let index = self.clients.len() - 1;
        self.steps(5);
        index
    }

    /// A connected client that has authenticated.
    pub fn connect_authenticated(&mut self) -> ClientIndex {
        let client = self.connect();
        let reply = self.request(client, &["AUTH", "s3cret"]);
        assert_eq!(reply, b"+OK\r\n");
        client
    }

    pub fn socket(&mut self, client: ClientIndex) -> &mut tcp::Socket<'static> {
        let handle = self.clients[client].handle;
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    pub fn state(&mut self, client: ClientIndex) -> tcp::State {
        self.socket(client).state()
    }

    /// Whether the server closed its side (FIN: CLOSE-WAIT) or reset the
    /// connection (CLOSED).
    pub fn closed_by_server(&mut self, client: ClientIndex) -> bool {
        matches!(self.state(client), tcp::State::CloseWait | tcp::State::Closed | tcp::State::LastAck | tcp::State::TimeWait)
    }

    pub fn send(&mut self, client: ClientIndex, bytes: &[u8]) {
        self.clients[client].outgoing.extend(bytes);
    }

    pub fn send_command(&mut self, client: ClientIndex, args: &[&str]) {
        self.send(client, &command(args));
    }

    /// Sends a command, settles, and returns everything received.
    pub fn request(&mut self, client: ClientIndex, args: &[&str]) -> Vec<u8> {
        self.send_command(client, args);
        self.settle();
        self.take(client)
    }

    pub fn take(&mut self, client: ClientIndex) -> Vec<u8> {
        std::mem::take(&mut self.clients[client].received)
    }

    /// One round: interface, clients, server, dispatch, interface.
    pub fn step(&mut self) {
        self.net_ms += 1;
        let net_now = Instant::from_millis(self.net_ms);
        self.iface.poll(net_now, &mut self.device, &mut self.sockets);
        for client in &mut self.clients {
            client.pump(&mut self.sockets);
        }
        let now = self.now();
        let mut jobs = Vec::new();
        self.server.poll(now, &mut self.sockets, &mut jobs);
        let mut queue: VecDeque<Job> = jobs.into();
        while let Some(job) = queue.pop_front() {
            if self.hold_jobs {
                self.held_jobs.push(job);
                continue;
            }
            let completion = self.dispatcher.execute(job);
            self.completions.push(completion.clone());
            if let Some(next) = self.server.complete(now, completion) {
                queue.push_back(next);
            }
        }
        self.iface.poll(net_now, &mut self.device, &mut self.sockets);
        // The kernel's control thread does this whenever it wakes.
        self.dispatcher.reap();
    }

    pub fn steps(&mut self, count: usize) {
        for _ in 0..count {
            self.step();
        }
    }

    /// Enough steps for every queued byte to cross, delayed ACKs included.
    pub fn settle(&mut self) {
        self.steps(60);
    }

    /// Steps until `client` has received at least `length` bytes (or a
    /// bound is reached).
    pub fn read_at_least(&mut self, client: ClientIndex, length: usize) -> Vec<u8> {
        for _ in 0..100_000 {
            if self.clients[client].received.len() >= length {
                break;
            }
            self.step();
        }
        self.take(client)
    }

    /// Drops a client socket from the interface (after it was closed).
    pub fn forget(&mut self, client: ClientIndex) {
        let handle = self.clients[client].handle;
        self.sockets.remove(handle);
        self.clients[client].reading = false;
    }
}
