//! The appliance plane on the RT kernel: the virtio-net device and the
//! smoltcp interface (`net`), the RESP control plane's kernel thread, its
//! command backend, listings, `INFO` and Prometheus metrics (`control`),
//! and the registry of the application's commands (`commands`).
//!
//! It depends on the kernel (`rtedge-kernel`), never the other way: the
//! kernel runs without a network, and the appliance's `main!` wires the
//! plane in (`services = [rtedge_plane::start]`), which starts it at the
//! point of boot where the kernel's own services are up. What the kernel
//! must tell the plane (a module's objects, a latency reset, the goodbye
//! at shutdown) it tells through hooks that [`start`] installs.
#![no_std]

extern crate alloc;

pub mod commands;
pub mod control;
pub mod logs;
pub mod net;
pub mod power;

#[cfg(feature = "ktest")]
pub mod selftest;

/// Wires the plane into the kernel and starts it (a service of `main!`,
/// run at the end of boot before the `ready` banner): the kernel's hooks
/// (module ownership for the listings, the NET_RX figures' reset with an
/// RT thread's latency, the goodbye on the `power` channel), `REBOOT`, then
/// the network and the control-plane thread if a device is found.
pub fn start() {
    rtedge_kernel::modules::set_load_observer(observe_load);
    rtedge_kernel::latency::set_reset_observer(net::reset_poll_figures);
    power::start();
    let _ = control::start();
}

/// What a module's `init` registers is the module's (the listings' owner).
fn observe_load(module: &'static str, init: &mut dyn FnMut() -> bool) {
    let before = control::listings::registered_now();
    if init() {
        control::listings::claim_new(&before, module);
    }
}
