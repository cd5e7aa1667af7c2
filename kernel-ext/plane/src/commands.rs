//! Commands the application registers with the control plane: its
//! "system calls". Each has a `CommandSpec` (name, arity, summary, syntax,
//! listed by `COMMAND DOCS` and `HELP`) and a handler that runs in the
//! control-plane kernel thread (it may block).

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use rtedge_control::CommandContext;
use rtedge_proto::{CommandSpec, Reply, Request};

use crate::sync::IrqSpinLock;

/// A command handler.
pub type Handler = fn(&mut CommandContext<'_>, &Request) -> Reply;

#[derive(Clone, Copy)]
struct Entry {
    spec: CommandSpec,
    handler: Handler,
}

static REGISTRY: IrqSpinLock<Vec<Entry>> = IrqSpinLock::new(Vec::new());
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Why a registration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// A built-in command has that name.
    Builtin,
    /// An application command has that name already.
    Exists,
}

impl core::fmt::Display for CommandError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            CommandError::Builtin => "a built-in command has that name",
            CommandError::Exists => "a command with that name is registered already",
        })
    }
}

/// Registers an application command. Thread context (may allocate).
pub fn register(spec: CommandSpec, handler: Handler) -> Result<(), CommandError> {
    if rtedge_proto::command::lookup(spec.name.as_bytes()).is_some() {
        return Err(CommandError::Builtin);
    }
    let mut registry = REGISTRY.lock();
    if registry.iter().any(|entry| entry.spec.name.eq_ignore_ascii_case(spec.name)) {
        return Err(CommandError::Exists);
    }
    registry.push(Entry { spec, handler });
    GENERATION.fetch_add(1, Ordering::AcqRel);
    Ok(())
}

/// Removes an application command (module unload).
pub fn unregister(name: &str) {
    REGISTRY.lock().retain(|entry| !entry.spec.name.eq_ignore_ascii_case(name));
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// The handler of `name` (ASCII case-insensitive).
pub fn find(name: &[u8]) -> Option<Handler> {
    let registry = REGISTRY.lock();
    registry.iter().find(|entry| entry.spec.name.as_bytes().eq_ignore_ascii_case(name)).map(|entry| entry.handler)
}

/// The registered specs.
pub fn specs() -> Vec<CommandSpec> {
    REGISTRY.lock().iter().map(|entry| entry.spec).collect()
}

/// Changes whenever the set of commands changes.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// Registered commands.
pub fn count() -> usize {
    REGISTRY.lock().len()
}
