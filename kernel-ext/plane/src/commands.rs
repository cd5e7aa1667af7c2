//! The application's commands, its "system calls": each a `CommandSpec`
//! (name, arity, summary, syntax, listed by `COMMAND DOCS` and `HELP`) and
//! a handler that runs in the control-plane kernel thread (it may block).
//! They go into the one command table (`control::backend`), beside the
//! control plane's own commands and the kernel's, where the dispatcher
//! looks a request's name up once.

use rtedge_control::CommandFn;
use rtedge_proto::CommandSpec;

use crate::control::backend;

/// A command handler.
pub type Handler = CommandFn;

/// Why a registration was refused (a built-in command has the name, or
/// an application command has it already).
pub use rtedge_control::RegisterError as CommandError;

/// Registers an application command. Refused if a built-in command has
/// its name (ASCII case ignored) or an application command has it
/// already. Thread context (may allocate).
pub fn register(spec: CommandSpec, handler: Handler) -> Result<(), CommandError> {
    backend::with_registry_mut(|registry| registry.register(spec, rtedge_control::Handler::Function(handler)))
}

/// Removes an application command (module unload).
pub fn unregister(name: &str) {
    backend::with_registry_mut(|registry| registry.unregister(name));
}

/// Registered application commands.
pub fn count() -> usize {
    backend::with_registry_mut(|registry| registry.application_count())
}
