//! `REBOOT`, the RESP side of the kernel's power management: registered
//! when the machine has an ACPI reset register, it schedules the kernel's
//! orderly reboot. The kernel's module is re-exported here whole, so
//! `crate::power` names both.

use rtedge_control::CommandContext;
pub use rtedge_kernel::power::*;
use rtedge_proto::{CommandFlags, CommandSpec, Reply, Request};

/// `REBOOT`: an orderly shutdown that ends in the ACPI reset register.
const REBOOT_SPEC: CommandSpec = CommandSpec::new(
    "reboot",
    1,
    CommandFlags::ADMIN,
    "kernel",
    "orderly shutdown (modules' exit, goodbye), then reset through the ACPI reset register",
    "REBOOT",
);

fn reboot_command(_context: &mut CommandContext<'_>, _request: &Request) -> Reply {
    match schedule_reboot() {
        Ok(()) => Reply::ok(),
        Err(error) => Reply::Error(alloc::format!("ERR {error}")),
    }
}

/// Registers `REBOOT` if this machine can reset (boot found the FADT's
/// reset register), and says goodbye on the `power` channel at shutdown.
pub(crate) fn start() {
    set_goodbye(|goodbye| crate::net::publish("power", goodbye));
    if can_reset()
        && let Err(error) = crate::commands::register(REBOOT_SPEC, reboot_command)
    {
        log::warn!("acpi: cannot register REBOOT: {error}");
    }
}
