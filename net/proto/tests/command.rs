//! The command table: lookup, arity, flags, and the COMMAND DOCS / COMMAND
//! INFO / HELP replies.

use rtedge_proto::command::{
    self, CommandFlags, CommandSpec, SyntaxCheck, check_arity, check_syntax, docs_reply, help_reply, info_reply, lookup,
};
use rtedge_proto::reply::{ProtocolVersion, Reply};

const BRIEF_COMMANDS: [&str; 40] = [
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    "ping",
    "echo",
    "hello",
    "auth",
    "quit",
    "info",
    "shutdown",
    "get",
    "set",
    "mget",
    "keys",
    "threads",
    "irqs",
    "softirqs",
    "tasklets",
    "timers",
    "workqueues",
    "wake",
    "kill",
    "tasklet",
    "softirq",
    "timer",
    "work",
    "latency",
    "metrics",
    "subscribe",
    "psubscribe",
    "unsubscribe",
    "punsubscribe",
    "module",
    "command",
    "help",
    "client",
    "config",
    "logs",
];

#[test]
fn the_table_holds_exactly_the_control_plane_commands_once_each() {
    let mut names: Vec<&str> = command::all().iter().map(|spec| spec.name).collect();
    names.sort_unstable();
    let mut expected = BRIEF_COMMANDS.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected);
}

#[test]
fn every_spec_is_lower_case_documented_and_its_syntax_starts_with_its_name() {
    for spec in command::all() {
        assert_eq!(spec.name, spec.name.to_ascii_lowercase());
        assert!(spec.syntax.to_ascii_lowercase().starts_with(spec.name), "{}", spec.syntax);
        assert!(!spec.summary.is_empty() && !spec.summary.contains('\n'), "{}", spec.name);
        assert!(!spec.group.is_empty());
        assert_ne!(spec.arity, 0, "{}", spec.name);
    }
}

#[test]
fn lookup_ignores_ascii_case_and_knows_unknown_names() {
    assert_eq!(lookup(b"GET").map(|spec| spec.name), Some("get"));
    assert_eq!(lookup(b"gEt").map(|spec| spec.arity), Some(2));
    assert_eq!(lookup(b"psubscribe").map(|spec| spec.arity), Some(-2));
    assert!(lookup(b"FLUSHALL").is_none());
    assert!(lookup(b"").is_none());
    assert!(lookup(b"get\0").is_none());
}

#[test]
fn arity_follows_the_redis_convention() {
    let get = lookup(b"get").expect("get exists");
    assert!(!check_arity(get, 1));
    assert!(check_arity(get, 2));
    assert!(!check_arity(get, 3));
    let mget = lookup(b"mget").expect("mget exists");
    assert!(!mget.check_arity(1));
    assert!(mget.check_arity(2));
    assert!(mget.check_arity(1000));
    let ping = lookup(b"ping").expect("ping exists");
    assert!(ping.check_arity(1) && ping.check_arity(2));
    let anything = CommandSpec::new("x", 0, CommandFlags::NONE, "app", "x", "X");
    assert!(anything.check_arity(1) && anything.check_arity(7));
}

#[test]
fn only_ping_hello_auth_and_quit_run_before_auth() {
    let mut allowed: Vec<&str> =
        command::all().iter().filter(|spec| spec.has(CommandFlags::ALLOWED_BEFORE_AUTH)).map(|spec| spec.name).collect();
    allowed.sort_unstable();
    assert_eq!(allowed, ["auth", "hello", "ping", "quit"]);
}

#[test]
fn only_pubsub_commands_ping_and_quit_run_in_resp2_subscribed_mode() {
    let mut allowed: Vec<&str> =
        command::all().iter().filter(|spec| spec.has(CommandFlags::ALLOWED_WHILE_SUBSCRIBED)).map(|spec| spec.name).collect();
    allowed.sort_unstable();
    assert_eq!(allowed, ["ping", "psubscribe", "punsubscribe", "quit", "subscribe", "unsubscribe"]);
    let pubsub = command::all().iter().filter(|spec| spec.has(CommandFlags::PUBSUB)).count();
    assert_eq!(pubsub, 4);
}

#[test]
fn flags_combine_and_name_themselves_like_redis() {
    let flags = CommandFlags::WRITE | CommandFlags::ADMIN;
    assert!(flags.contains(CommandFlags::WRITE));
    assert!(!flags.contains(CommandFlags::READONLY));
    assert!(flags.contains(CommandFlags::NONE));
    assert_eq!(flags.bits(), CommandFlags::from_bits(flags.bits()).bits());
    assert_eq!(flags.redis_names().collect::<Vec<_>>(), ["write", "admin"]);
    assert_eq!(
        format!("{:?}", CommandFlags::PUBSUB | CommandFlags::ALLOWED_WHILE_SUBSCRIBED),
        "{\"pubsub\", \"allowed-while-subscribed\"}"
    );
}

#[test]
fn application_commands_are_built_with_the_same_spec() {
    const CUSTOM: CommandSpec =
        CommandSpec::new("motor", -2, CommandFlags::WRITE.union(CommandFlags::ADMIN), "app", "Drives the motor.", "MOTOR speed");
    assert!(CUSTOM.check_arity(2));
    assert!(CUSTOM.has(CommandFlags::ADMIN));
    let docs = docs_reply([&CUSTOM]);
    let Reply::Map(entries) = docs else { panic!("COMMAND DOCS is a map") };
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, Reply::bulk_str("motor"));
}

#[test]
fn command_docs_has_redis_7_shape_with_bulk_keys() {
    let get = lookup(b"get").expect("get exists");
    let expected = Reply::Map(vec![(
        Reply::bulk_str("get"),
        Reply::Map(vec![
            (Reply::bulk_str("summary"), Reply::bulk_str("Returns the value of a shared static.")),
            (Reply::bulk_str("since"), Reply::bulk_str("0.1.0")),
            (Reply::bulk_str("group"), Reply::bulk_str("string")),
            (Reply::bulk_str("syntax"), Reply::bulk_str("GET key")),
            (
                Reply::bulk_str("arguments"),
                Reply::Array(vec![Reply::Map(vec![
                    (Reply::bulk_str("name"), Reply::bulk_str("key")),
                    (Reply::bulk_str("type"), Reply::bulk_str("string")),
                    (Reply::bulk_str("display_text"), Reply::bulk_str("key")),
                ])]),
            ),
        ]),
    )]);
    assert_eq!(docs_reply([get]), expected);
    // Commands without arguments get an empty argument list.
    let threads = docs_reply([lookup(b"threads").expect("threads exists")]);
    let resp2 = threads.to_bytes(ProtocolVersion::Resp2);
    assert!(resp2.ends_with(b"$9\r\narguments\r\n*0\r\n"), "{}", String::from_utf8_lossy(&resp2));
    assert!(resp2.starts_with(b"*2\r\n$7\r\nthreads\r\n*10\r\n"));
}

#[test]
fn command_info_has_redis_7_shape() {
    let set = lookup(b"set").expect("set exists");
    assert_eq!(
        info_reply(set).to_bytes(ProtocolVersion::Resp2),
        b"*10\r\n$3\r\nset\r\n:3\r\n*1\r\n+write\r\n:0\r\n:0\r\n:0\r\n*0\r\n*0\r\n*0\r\n*0\r\n"
    );
    let ping = lookup(b"ping").expect("ping exists");
    assert_eq!(
        info_reply(ping).to_bytes(ProtocolVersion::Resp3),
        b"*10\r\n$4\r\nping\r\n:-1\r\n~1\r\n+no-auth\r\n:0\r\n:0\r\n:0\r\n~0\r\n*0\r\n*0\r\n*0\r\n"
    );
}

#[test]
fn help_lists_a_heading_then_syntax_and_summary_per_command() {
    let specs = [lookup(b"get").expect("get"), lookup(b"quit").expect("quit")];
    assert_eq!(
        help_reply(specs),
        Reply::Array(vec![
            Reply::simple("rtedge control plane. Commands are:"),
            Reply::simple("GET key"),
            Reply::simple("    Returns the value of a shared static."),
            Reply::simple("QUIT"),
            Reply::simple("    Closes the connection."),
        ])
    );
    let Reply::Array(lines) = help_reply(command::all()) else { panic!("HELP is an array") };
    assert_eq!(lines.len(), 1 + 2 * command::all().len());
}

fn words(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|arg| arg.as_bytes().to_vec()).collect()
}

#[test]
fn the_listings_are_read_only_kernel_commands_without_arguments() {
    for name in ["tasklets", "timers", "softirqs"] {
        let spec = lookup(name.as_bytes()).expect("listing exists");
        assert_eq!(spec.arity, 1, "{name}");
        assert_eq!(spec.group, "kernel", "{name}");
        assert!(spec.has(CommandFlags::READONLY), "{name}");
        assert!(!spec.has(CommandFlags::WRITE), "{name}");
        let upper = name.to_ascii_uppercase();
        assert_eq!(check_syntax(spec, &words(&[&upper])), SyntaxCheck::Fits);
        assert_eq!(check_syntax(spec, &words(&[&upper, "extra"])), SyntaxCheck::WrongArity, "{name}");
    }
}

#[test]
fn workqueues_takes_nothing_or_the_items_keyword() {
    let spec = lookup(b"WorkQueues").expect("workqueues exists");
    assert_eq!(spec.arity, -1);
    assert!(spec.has(CommandFlags::READONLY) && !spec.has(CommandFlags::WRITE));
    assert_eq!(check_syntax(spec, &words(&["WORKQUEUES"])), SyntaxCheck::Fits);
    assert_eq!(check_syntax(spec, &words(&["workqueues", "items"])), SyntaxCheck::Fits);
    assert_ne!(check_syntax(spec, &words(&["WORKQUEUES", "jobs"])), SyntaxCheck::Fits);
    assert_eq!(check_syntax(spec, &words(&["WORKQUEUES", "ITEMS", "job"])), SyntaxCheck::WrongArity);
}
