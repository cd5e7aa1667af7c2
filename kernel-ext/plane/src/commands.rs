//! The control plane's command table: one [`Registry`] of `{spec,
//! handler}` entries holding the control plane's own commands, the
//! kernel's (bound when the control plane starts) and the commands the
//! application registers, its "system calls". Each has a `CommandSpec`
//! (name, arity, summary, syntax, listed by `COMMAND DOCS` and `HELP`) and
//! a handler that runs in the control-plane kernel thread (it may block).
//! The dispatcher looks a request's name up here once, copies the entry
//! out and runs it with the lock released (a handler such as
//! `MODULE LOAD` may register commands itself).

use rtedge_control::{CommandFn, Registry};
use rtedge_proto::CommandSpec;

use crate::control::KernelBackend;
use crate::sync::IrqSpinLock;

/// A command handler.
pub type Handler = CommandFn;

/// Why a registration was refused (a built-in command has the name, or
/// an application command has it already).
pub use rtedge_control::RegisterError as CommandError;

/// The table. Held only to look up, copy out or change entries, never
/// while a handler runs.
static REGISTRY: IrqSpinLock<Registry<KernelBackend>> = IrqSpinLock::new(Registry::new());

/// Registers an application command. Refused if a built-in command has
/// its name (ASCII case ignored) or an application command has it
/// already. Thread context (may allocate).
pub fn register(spec: CommandSpec, handler: Handler) -> Result<(), CommandError> {
    REGISTRY.lock().register(spec, rtedge_control::Handler::Function(handler))
}

/// Removes an application command (module unload).
pub fn unregister(name: &str) {
    REGISTRY.lock().unregister(name);
}

/// Registered application commands.
pub fn count() -> usize {
    REGISTRY.lock().application_count()
}

/// Binds the built-in commands: the control plane's own and the kernel's
/// `handlers`. Logs a handler whose name has no built-in spec, and any
/// built-in spec left without a handler.
pub(crate) fn register_builtins(handlers: &[(&str, Handler)]) {
    let mut refused = alloc::vec::Vec::new();
    let unbound: alloc::vec::Vec<&'static str> = {
        let mut registry = REGISTRY.lock();
        registry.register_session_commands();
        for &(name, handler) in handlers {
            match registry.register_builtin(name, rtedge_control::Handler::Function(handler)) {
                // Bound already: a second start keeps the first binding.
                Ok(()) | Err(CommandError::Exists) => {}
                Err(error) => refused.push((name, error)),
            }
        }
        registry.unbound_builtins().map(|spec| spec.name).collect()
    };
    for (name, error) in refused {
        log::error!("control plane: cannot bind {name}: {error}");
    }
    for name in unbound {
        log::error!("control plane: built-in command '{name}' has no handler");
    }
}

/// Calls `reader` with the table, under its lock.
pub(crate) fn with_registry<R>(reader: impl FnOnce(&Registry<KernelBackend>) -> R) -> R {
    reader(&REGISTRY.lock())
}
