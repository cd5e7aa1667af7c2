//! `rtctl`, the host command-line client of rtedge's control plane: RESP
//! over TCP, so it speaks to the appliance as `redis-cli` does, and adds
//! tables, live views, histograms and plots on top.
//!
//! It is a std program for the host and never runs inside the appliance.
//! It must never panic on what the server sends: replies are parsed by
//! `rtedge-proto` within fixed limits, and every failure becomes one
//! [`error::CtlError`], turned into an exit code in one place
//! ([`error::CtlError::exit_code`]).

mod cli;
mod client;
mod commands;
mod convert;
mod error;
mod fleet;
mod format;
mod info;
mod latency;
mod plot;
mod tables;
mod token;
mod top;
mod watch;

use std::io;
use std::process::ExitCode;

use clap::Parser;

use crate::error::CtlError;

fn main() -> ExitCode {
    // Usage errors exit with clap's code 2; --help and --version with 0.
    let cli = cli::Cli::parse();
    let port = match cli.port() {
        Ok(port) => port,
        Err(message) => {
            use clap::CommandFactory;
            cli::Cli::command()
                .error(clap::error::ErrorKind::ValueValidation, message)
                .exit();
        }
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if let Some(inventory) = cli.fleet.clone() {
        return match fleet::run(cli, &inventory, &mut out) {
            Ok(code) => ExitCode::from(code),
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(error.exit_code())
            }
        };
    }
    match commands::run(cli, port, &mut out) {
        Ok(()) | Err(CtlError::OutputClosed) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
