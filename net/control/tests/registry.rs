//! The one command registry: lookup (once per request, ASCII
//! case-insensitive, without allocating), the refusals of application
//! registration, `COMMAND` listing the table's entries, and a built-in and
//! an application command running through the same path.

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use rtedge_control::{CommandContext, Config, Handler, Origin, RegisterError, Registry, SessionCommand};
use rtedge_proto::command;
use rtedge_proto::{CommandFlags, CommandSpec, ProtocolVersion, Reply, Request};
use support::{APP_COMMANDS, FakeBackend, Harness};

/// Counts this thread's allocations, so that a test can see that a lookup
/// makes none (other test threads count on their own).
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a thread-local `Cell` without a destructor.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: `pointer` came from `System` through `alloc`/`realloc` with `layout`.
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const ECHO_SPEC: CommandSpec =
    CommandSpec::new("app.echo", -2, CommandFlags::READONLY, "app", "Echoes its arguments.", "APP.ECHO word [word ...]");

fn app_echo(_: &mut CommandContext<'_>, request: &Request) -> Reply {
    Reply::Array(request.args_after_name().iter().map(|word| Reply::bulk(word)).collect())
}

fn nothing(_: &mut CommandContext<'_>, _: &Request) -> Reply {
    Reply::ok()
}

/// A registry with every built-in bound, as the kernel's.
fn full_registry() -> Registry<()> {
    let mut registry = Registry::with_session_commands();
    for spec in command::all() {
        let _ = registry.register_builtin(spec.name, Handler::Function(nothing));
    }
    registry
}

#[test]
fn lookup_ignores_ascii_case_and_allocates_nothing() {
    let registry = full_registry();
    registry.lookup(b"ping").unwrap();
    let before = allocations();
    let mut found = 0;
    for name in [&b"PING"[..], b"ping", b"PiNg", b"get", b"GET", b"workqueues", b"WorkQueues", b"auth", b"watch"] {
        let entry = registry.lookup(name).unwrap();
        assert!(entry.spec.name.as_bytes().eq_ignore_ascii_case(name));
        found += 1;
    }
    for name in [&b"PINGS"[..], b"pin", b"", b"\xff\xfe", b"get ", b"nosuchcommand"] {
        assert!(registry.lookup(name).is_none(), "{name:?}");
    }
    assert_eq!(allocations(), before, "a lookup allocated");
    assert_eq!(found, 9);
}

#[test]
fn the_counting_allocator_sees_an_allocation() {
    // The previous test's assertion can fail: the counter counts.
    let before = allocations();
    let bytes = std::hint::black_box(vec![1_u8; 16]);
    assert_eq!(allocations(), before + 1);
    drop(bytes);
}

#[test]
fn session_commands_are_dispatched_by_kind_and_the_rest_bound_once() {
    let mut registry: Registry<()> = Registry::with_session_commands();
    assert_eq!(registry.len(), SessionCommand::ALL.len());
    assert!(matches!(registry.lookup(b"MULTI").unwrap().handler, Handler::Session(SessionCommand::Multi)));
    assert!(matches!(registry.lookup(b"psubscribe").unwrap().handler, Handler::Session(SessionCommand::PatternSubscribe)));
    let unbound: Vec<&str> = registry.unbound_builtins().map(|spec| spec.name).collect();
    assert_eq!(unbound.len(), command::all().len() - SessionCommand::ALL.len());
    assert!(unbound.contains(&"get") && !unbound.contains(&"ping"));
    assert_eq!(registry.register_builtin("get", Handler::Function(nothing)), Ok(()));
    assert_eq!(registry.register_builtin("GET", Handler::Function(nothing)), Err(RegisterError::Exists));
    assert_eq!(registry.register_builtin("ping", Handler::Function(nothing)), Err(RegisterError::Exists));
    assert_eq!(registry.register_builtin("app.echo", Handler::Function(nothing)), Err(RegisterError::NotBuiltin));
    // A second pass leaves the bound entries as they are.
    registry.register_session_commands();
    assert_eq!(registry.len(), SessionCommand::ALL.len() + 1);
    assert_eq!(full_registry().unbound_builtins().count(), 0);
}

#[test]
fn application_registration_refuses_built_in_names_and_duplicates() {
    let mut registry: Registry<()> = Registry::with_session_commands();
    let named = |name: &'static str| CommandSpec { name, ..ECHO_SPEC };
    // Bound built-ins, in any case.
    assert_eq!(registry.register(named("ping"), Handler::Function(app_echo)), Err(RegisterError::Builtin));
    assert_eq!(registry.register(named("Ping"), Handler::Function(app_echo)), Err(RegisterError::Builtin));
    // A built-in not bound yet keeps its name too (the kernel binds its
    // commands after the application may have registered its own).
    assert_eq!(registry.register(named("GET"), Handler::Function(app_echo)), Err(RegisterError::Builtin));
    assert_eq!(registry.register(ECHO_SPEC, Handler::Function(app_echo)), Ok(()));
    assert_eq!(registry.register(named("APP.ECHO"), Handler::Function(nothing)), Err(RegisterError::Exists));
    assert_eq!(registry.application_count(), 1);
    assert_eq!(registry.lookup(b"App.Echo").unwrap().origin, Origin::Application);
    assert_eq!(RegisterError::Builtin.to_string(), "a built-in command has that name");
    assert_eq!(RegisterError::Exists.to_string(), "a command with that name is registered already");
    // Unregistering removes application commands only.
    assert!(!registry.unregister("ping"));
    assert!(registry.lookup(b"ping").is_some());
    assert!(registry.unregister("APP.echo"));
    assert!(registry.lookup(b"app.echo").is_none());
    assert_eq!(registry.application_count(), 0);
    assert_eq!(registry.register(ECHO_SPEC, Handler::Function(app_echo)), Ok(()));
}

#[test]
fn entries_list_the_spec_table_in_order_then_the_application_commands() {
    let mut registry = Registry::<()>::new();
    // Bound in reverse: the listing is still the spec table's order.
    for spec in command::all().iter().rev() {
        registry.register_builtin(spec.name, Handler::Function(nothing)).unwrap();
    }
    registry.register(CommandSpec { name: "zz.last", ..ECHO_SPEC }, Handler::Function(nothing)).unwrap();
    registry.register(CommandSpec { name: "aa.first", ..ECHO_SPEC }, Handler::Function(nothing)).unwrap();
    let listed: Vec<&str> = registry.specs().map(|spec| spec.name).collect();
    let mut expected: Vec<&str> = command::all().iter().map(|spec| spec.name).collect();
    expected.extend(["zz.last", "aa.first"]);
    assert_eq!(listed, expected);
    // Every entry is found by its name.
    for spec in command::all() {
        assert_eq!(registry.lookup(spec.name.to_ascii_uppercase().as_bytes()).unwrap().spec, *spec);
    }
}

#[test]
fn each_request_reads_the_registry_once() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect_authenticated();
    for (args, reply) in [
        (&["PING"][..], &b"+PONG\r\n"[..]),
        (&["get", "counter"], b":0\r\n"),
        (&["DEMO.ADD", "40", "2"], b":42\r\n"),
        (&["DEMO.ADD", "40"], b"-ERR wrong number of arguments for 'demo.add' command\r\n"),
        (&["NOSUCH"], b"-ERR unknown command 'NOSUCH', with args beginning with: \r\n"),
    ] {
        let before = harness.dispatcher.backend().registry_reads.get();
        assert_eq!(harness.request(client, args), reply, "{args:?}");
        assert_eq!(harness.dispatcher.backend().registry_reads.get() - before, 1, "{args:?}");
    }
}

#[test]
fn a_built_in_and_an_application_command_run_through_the_same_table() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect_authenticated();
    let builtin_count = command::all().len() + APP_COMMANDS.len();
    assert_eq!(harness.request(client, &["COMMAND", "COUNT"]), format!(":{builtin_count}\r\n").as_bytes());
    assert_eq!(harness.request(client, &["app.echo", "a"]), b"-ERR unknown command 'app.echo', with args beginning with: 'a' \r\n");
    harness.dispatcher.backend_mut().registry.register(ECHO_SPEC, Handler::Function(app_echo)).unwrap();
    // The application command: its handler, its arity, its docs.
    assert_eq!(harness.request(client, &["APP.ECHO", "a", "b"]), b"*2\r\n$1\r\na\r\n$1\r\nb\r\n");
    assert_eq!(harness.request(client, &["app.echo"]), b"-ERR wrong number of arguments for 'app.echo' command\r\n");
    assert_eq!(harness.request(client, &["COMMAND", "COUNT"]), format!(":{}\r\n", builtin_count + 1).as_bytes());
    assert_eq!(
        harness.request(client, &["COMMAND", "DOCS", "app.echo"]),
        command::docs_reply([&ECHO_SPEC]).to_bytes(ProtocolVersion::Resp2)
    );
    // A built-in command through the same lookup: its spec's grammar.
    assert_eq!(harness.request(client, &["GET", "counter"]), b":0\r\n");
    assert_eq!(harness.request(client, &["GET"]), b"-ERR wrong number of arguments for 'get' command\r\n");
    // COMMAND lists exactly the table.
    let specs: Vec<CommandSpec> = harness.dispatcher.backend().registry.specs().copied().collect();
    let list = Reply::Array(specs.iter().map(|spec| Reply::bulk_str(spec.name)).collect());
    assert_eq!(harness.request(client, &["COMMAND", "LIST"]), list.to_bytes(ProtocolVersion::Resp2));
    let info = Reply::Array(specs.iter().map(command::info_reply).collect());
    assert_eq!(harness.request(client, &["COMMAND"]), info.to_bytes(ProtocolVersion::Resp2));
    assert_eq!(harness.request(client, &["HELP"]), command::help_reply(&specs).to_bytes(ProtocolVersion::Resp2));
    // Module unload: gone from the table, the listing and dispatch.
    assert!(harness.dispatcher.backend_mut().registry.unregister("app.echo"));
    assert_eq!(harness.request(client, &["COMMAND", "COUNT"]), format!(":{builtin_count}\r\n").as_bytes());
    assert_eq!(harness.request(client, &["APP.ECHO", "a"]), b"-ERR unknown command 'APP.ECHO', with args beginning with: 'a' \r\n");
}

#[test]
fn the_fake_backend_binds_every_built_in() {
    let backend = FakeBackend::new(std::rc::Rc::new(Cell::new(0)), b"");
    assert_eq!(backend.registry.unbound_builtins().count(), 0);
    assert_eq!(backend.registry.len(), command::all().len() + APP_COMMANDS.len());
}
