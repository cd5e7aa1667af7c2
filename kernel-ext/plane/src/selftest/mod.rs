//! The plane's own tests, run by the ktest image beside the kernel's
//! (`rtedge_kernel::selftest`): its listings and its Prometheus exposition.

use rtedge_kernel::ktest::Test;

mod listings;
mod metrics_rules;

/// The plane's groups of tests, in order.
pub fn groups() -> alloc::vec::Vec<&'static [Test]> {
    alloc::vec![listings::TESTS, metrics_rules::TESTS]
}
