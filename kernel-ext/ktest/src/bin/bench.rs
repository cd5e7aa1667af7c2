//! The benchmark image: measures the real-time path and prints figures
//! (`bench:` lines) for the runner to collect. Nothing here asserts on time.
#![no_std]
#![no_main]

fn run() -> u8 {
    rtedge_kernel::bench::run_all();
    0
}

rtedge_kernel::main!(run, keys = ["bench_seconds"]);
