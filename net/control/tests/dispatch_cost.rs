//! Per-command cost of the command half: `Dispatcher::execute` of one
//! job, looked up, checked, run and encoded, against the fake backend.
//! Prints ns per command; run with `--ignored --nocapture`.

#![allow(clippy::unwrap_used, reason = "a benchmark: a panic is the failure report")]

mod support;

use std::time::Instant;

use rtedge_control::{Config, ConnectionId, Job};
use rtedge_proto::Request;
use support::Harness;

fn measure(harness: &mut Harness, args: &[&str], rounds: usize) -> f64 {
    let request = Request::from_args(args.iter().map(|arg| arg.as_bytes().to_vec()).collect()).unwrap();
    let job = Job { connection: ConnectionId { slot: 1, generation: 1 }, request, peer: None };
    for _ in 0..1000 {
        std::hint::black_box(harness.dispatcher.execute(job.clone()));
    }
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(harness.dispatcher.execute(job.clone()));
    }
    harness.dispatcher.backend_mut().executed.clear();
    started.elapsed().as_nanos() as f64 / rounds as f64
}

#[test]
#[ignore = "a benchmark: prints figures"]
fn dispatch_cost_per_command() {
    let mut harness = Harness::with_token(Config::DEFAULT, b"");
    for args in [&["PING"][..], &["ping"], &["GET", "counter"], &["watch", "x"], &["DEMO.ADD", "1", "2"], &["NOSUCH"]] {
        let mut best = f64::MAX;
        for _ in 0..5 {
            best = best.min(measure(&mut harness, args, 200_000));
        }
        println!("dispatch-cost: {args:?}: {best:.1} ns/command (best of 5 x 200000)");
    }
}
