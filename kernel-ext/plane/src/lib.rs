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
//!
//! The kernel modules the plane uses are re-exported at this crate's root
//! (`crate::thread` is `rtedge_kernel::thread`), so code moved out of the
//! kernel names them as it did there.
#![no_std]

extern crate alloc;

pub mod commands;
pub mod control;
pub mod logs;
pub mod net;
pub mod power;

#[cfg(feature = "ktest")]
pub mod selftest;

pub(crate) use rtedge_kernel::{
    boot, clockevent, console, cpu_local, events, firmware, irq, latency, memory, modules, rtpool, shared, shutdown, smp, softirq, sync,
    tasklet, thread, time, timer, trap, workqueue,
};
#[cfg(feature = "ktest")]
pub(crate) use rtedge_kernel::{check, check_eq, ktest};

pub use control::start;
