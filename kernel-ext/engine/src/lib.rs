//! rtedge's policy, apart from hardware.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
