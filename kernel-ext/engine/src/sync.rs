//! The atomics the engine's lock-free state machines are written over.
//!
//! In the kernel and in ordinary host tests these are `core`'s atomics. Built
//! with `RUSTFLAGS="--cfg loom"` (`make loom`), they are `loom`'s, so that the
//! models under `tests/loom_*.rs` explore every interleaving of the same code
//! the kernel runs. Code here must therefore never use `core::sync::atomic`
//! directly, and a type holding atomics offers `new` as a `const fn` only
//! outside loom (loom's atomics cannot be built in a constant).

#[cfg(not(loom))]
pub use core::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(loom)]
pub use loom::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

/// One turn of a spin-wait. Under loom it yields to the model's scheduler, so
/// a model whose thread waits on another's progress terminates.
#[inline]
pub fn spin_loop() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}
