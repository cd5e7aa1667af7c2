//! rtedge's policy, apart from hardware: who runs next, when a timer fires,
//! whether a tasklet may run, how the command line reads. Portable state
//! machines tested on the host with a fake clock and exact event traces.
//!
//! This crate must never touch hardware, never block, and never use
//! `unsafe` outside `handler.rs` (the one cell whose every access the
//! slot's state word guards, loom-checked); the kernel crate puts it on
//! the machine.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod acpi;
pub mod clock;
pub mod cmdline;
pub mod eventring;
pub mod handler;
pub mod histogram;
pub mod loghistory;
pub mod logring;
pub mod periodic;
pub mod pi;
pub mod rtpool;
pub mod sched;
pub mod seqlock;
pub mod softirq;
pub mod sync;
pub mod tasklet;
pub mod tickless;
pub mod timerqueue;
pub mod timers;
pub mod value;
pub mod work;
