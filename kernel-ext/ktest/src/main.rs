//! The kernel test image: runs every kernel test and the plane's, and exits
//! 0 only if all pass. The plane is wired in as in the appliance (its tests need its hooks).
#![no_std]
#![no_main]

fn run() -> u8 {
    let mut groups = rtedge_kernel::selftest::groups();
    groups.extend(rtedge_plane::selftest::groups());
    rtedge_kernel::ktest::run(&groups)
}

rtedge_kernel::main!(run, services = [rtedge_plane::start]);
