#![no_std]
#![no_main]
extern crate rtedge_kernel;
