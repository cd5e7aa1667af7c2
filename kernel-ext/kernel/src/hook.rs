//! Hooks: where a crate above the kernel (the appliance plane,
//! `rtedge-plane`) plugs in a function the kernel calls back, so that the
//! kernel never names the crates built on it.
//!
//! A [`Hook`] holds at most one function pointer, set by its owner at start
//! and read by copy under a short interrupt-safe lock; the call itself runs
//! without the lock. An empty hook is a kernel without that plane: the
//! caller does what it does without one (nobody to tell, nothing to track).
//! The kernel's hooks live beside the code that calls them:
//! `modules::set_load_observer`, `latency::set_reset_observer`,
//! `power::set_goodbye`.

use crate::sync::IrqSpinLock;

/// One pluggable function `F` (a `fn` pointer type).
pub struct Hook<F: Copy> {
    function: IrqSpinLock<Option<F>>,
}

impl<F: Copy> Hook<F> {
    /// An empty hook.
    pub const fn new() -> Self {
        Self { function: IrqSpinLock::new(None) }
    }

    /// Plugs in `function` (replacing any earlier one). Any context but a
    /// hard IRQ that holds the lock.
    pub fn set(&self, function: F) {
        *self.function.lock() = Some(function);
    }

    /// The function plugged in, if any.
    pub fn get(&self) -> Option<F> {
        *self.function.lock()
    }
}

impl<F: Copy> Default for Hook<F> {
    fn default() -> Self {
        Self::new()
    }
}
